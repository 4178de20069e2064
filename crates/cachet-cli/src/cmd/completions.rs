//! `cachet completions SHELL`: a completion script for a shell.

use anyhow::Result;
use clap::CommandFactory;

use crate::{Cli, Context, Outcome};

/// Options of `cachet completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Install:
  bash:  cachet completions bash > ~/.local/share/bash-completion/completions/cachet
  zsh:   cachet completions zsh > ~/.zfunc/_cachet   (with fpath+=~/.zfunc in ~/.zshrc)
  fish:  cachet completions fish > ~/.config/fish/completions/cachet.fish")]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Runs `cachet completions`.
///
/// # Errors
/// When the output cannot be written.
pub async fn run(args: CompletionsArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "cachet", ctx.out());
    Ok(Outcome::Success)
}
