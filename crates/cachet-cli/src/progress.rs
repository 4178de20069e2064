//! Progress bars for long operations (verify, repair, migrate, export, import, cleanup).
//!
//! A bar is drawn on stderr only when stderr is a terminal and `-q` was not given; otherwise
//! every call is a no-op, so piped or redirected output never carries escape codes. The
//! library operations report progress through `FnMut(&Report)` callbacks; a command turns
//! each report into [`Bar::update`]. The bar is cleared when the operation ends, so that only
//! the command's result stays on the screen.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr, or nothing.
#[derive(Debug)]
pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    /// A bar counting `unit`s up to `total` (a spinner with a count when the total is unknown).
    /// Drawn only if `enabled` and stderr is a terminal.
    pub fn new(enabled: bool, total: Option<u64>, unit: &str) -> Bar {
        if !enabled || !std::io::stderr().is_terminal() {
            return Bar::hidden();
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(10));
        let template = match total {
            Some(_) => format!(
                "{{spinner}} {{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{eta}} left) {{msg}}"
            ),
            None => format!("{{spinner}} {{prefix}} {{pos}} {unit} {{msg}}"),
        };
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(120));
        Bar { bar: Some(bar) }
    }

    /// A bar that draws nothing.
    pub fn hidden() -> Bar {
        Bar { bar: None }
    }

    /// Sets the step shown before the bar (`checking`, `listing blobs`...).
    pub fn set_prefix(&self, prefix: &'static str) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(prefix);
        }
    }

    /// Moves the bar to `position` and shows `message` after it.
    pub fn update(&self, position: u64, message: impl FnOnce() -> String) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            bar.set_message(message());
        }
    }

    /// Removes the bar from the screen.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // An error path leaves the screen clean too.
        self.finish();
    }
}
