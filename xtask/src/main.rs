//! `cargo xtask`: the project's one entry point for checks, tests, benchmarks and services.
//!
//! ```text
//! cargo xtask ci              everything CI runs, in order, stopping at the first failure
//! cargo xtask lint            fmt check, clippy, cargo-deny
//! cargo xtask test            nextest (all tests) + doctests
//! cargo xtask bench           criterion benches, then the peer comparison
//! cargo xtask demo            the CLI's demo
//! cargo xtask services up     start PostgreSQL and an S3 server for the tests; prints `export`
//!                             lines: eval "$(cargo xtask services up)"
//! cargo xtask services down   stop them
//! ```
//!
//! With `CI=true` (or `1`) in the environment, output has no color codes, nextest uses its
//! `ci` profile (`.config/nextest.toml`) and nothing is interactive.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The cargo-deny release installed when the machine has none. Pinned so that every machine
/// reads `deny.toml` the same way; raise it deliberately (and check `deny.toml` still parses).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// The cargo-deny checks `ci` and `lint` run. `advisories` is left out on purpose: it clones
/// the RustSec database from GitHub, which this project's machines cannot reach (see the
/// comment at the top of `deny.toml`). Set `CACHET_DENY_ADVISORIES=1` where the network allows
/// it to run the full `cargo deny check`.
const DENY_CHECKS: &[&str] = &["bans", "licenses", "sources"];

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci               ensure tools, fmt check, clippy, docs, cargo-deny, tests, doctests
  lint             fmt check, clippy (-D warnings), cargo-deny
  test             all tests with cargo-nextest, then doctests
  bench            cargo bench -p cachet-benches, then the peer comparison
  demo             run the CLI demo (release build)
  services up      start PostgreSQL + an S3 server (scripts/services/up.sh) and print their
                   environment: eval \"$(cargo xtask services up)\"
  services down    stop them (scripts/services/down.sh)
  help             this text

environment:
  CI=true                     no color, nextest profile `ci`, no prompts
  CACHET_DENY_ADVISORIES=1    also run cargo-deny's advisories check (needs GitHub access)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[&str]) -> Result<()> {
    let ctx = Ctx::new()?;
    match args {
        ["ci"] => ctx.pipeline_with_services("ci", &ci_steps(&ctx)),
        ["lint"] => ctx.pipeline("lint", &lint_steps(&ctx)),
        ["test"] => ctx.pipeline_with_services("test", &test_steps(&ctx)),
        ["bench"] => ctx.pipeline("bench", &bench_steps()),
        ["demo"] => ctx.pipeline("demo", &demo_steps()),
        ["services", action @ ("up" | "down")] => ctx.services(action),
        [] | ["help" | "-h" | "--help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown command `{}`\n\n{USAGE}", args.join(" ")),
    }
}

/// Where and how commands run.
struct Ctx {
    /// The workspace root (the parent of `xtask/`).
    root: PathBuf,
    /// The cargo that runs us (`$CARGO`), so that every step uses the same toolchain.
    cargo: OsString,
    /// Running under CI: plain output, nextest's `ci` profile.
    ci: bool,
    /// Environment for every later command: what `services up` exported.
    env: std::cell::RefCell<Vec<(String, String)>>,
    /// Whether this run started the services (and so stops them at the end).
    started_services: std::cell::Cell<bool>,
}

impl Ctx {
    fn new() -> Result<Self> {
        // `cargo run` sets CARGO_MANIFEST_DIR at run time too; prefer it to the build-time
        // value, which is stale if the checkout moved since xtask was built.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest_dir
            .parent()
            .context("xtask/ has no parent directory")?
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let ci = env_flag("CI");
        Ok(Ctx {
            root,
            cargo,
            ci,
            env: Default::default(),
            started_services: Default::default(),
        })
    }

    /// A `cargo` command in the workspace root with the environment CI needs.
    fn cargo(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.args(args).current_dir(&self.root);
        cmd.envs(self.env.borrow().iter().map(|(k, v)| (k, v)));
        if self.ci {
            cmd.env("CARGO_TERM_COLOR", "never")
                .env("NO_COLOR", "1")
                .env("CARGO_TERM_PROGRESS_WHEN", "never")
                .stdin(Stdio::null());
        }
        cmd
    }

    /// Runs `cargo <args>` in the workspace root.
    fn run_cargo(&self, args: &[&str]) -> Result<()> {
        run_command(&mut self.cargo(args), &format!("cargo {}", args.join(" ")))
    }

    /// Runs `steps` in order, stops at the first failure, then prints a summary table.
    fn pipeline(&self, name: &str, steps: &[Step]) -> Result<()> {
        let started = Instant::now();
        let mut results: Vec<(&str, Duration, Outcome)> = Vec::new();
        let mut failure = None;
        for step in steps {
            println!("\n==> [{name}] {}", step.name);
            if let Some(note) = step.note {
                println!("note: {note}");
            }
            let t = Instant::now();
            let result = step.run(self);
            let elapsed = t.elapsed();
            match result {
                Ok(()) => {
                    println!("<== {} ok ({})", step.name, fmt_duration(elapsed));
                    results.push((step.name, elapsed, Outcome::Ok));
                }
                Err(e) => {
                    println!("<== {} FAILED ({})", step.name, fmt_duration(elapsed));
                    results.push((step.name, elapsed, Outcome::Failed));
                    failure = Some((step.name, e));
                    break;
                }
            }
        }
        for step in steps.iter().skip(results.len()) {
            results.push((step.name, Duration::ZERO, Outcome::Skipped));
        }
        print_summary(name, &results, started.elapsed());
        match failure {
            Some((step, e)) => {
                Err(e.context(format!("`cargo xtask {name}` failed at step `{step}`")))
            }
            None => Ok(()),
        }
    }

    /// [`pipeline`](Self::pipeline), then stops the services the pipeline started, whether it
    /// passed or not.
    fn pipeline_with_services(&self, name: &str, steps: &[Step]) -> Result<()> {
        let result = self.pipeline(name, steps);
        if self.started_services.get() {
            println!("\n==> [{name}] services down");
            if let Err(e) = self.services_script("down") {
                eprintln!("xtask: warning: stopping the services failed: {e:#}");
            }
        }
        result
    }

    /// `services up|down` from the command line: `up` prints the services' environment as
    /// `export` lines (and nothing else) on stdout.
    fn services(&self, action: &str) -> Result<()> {
        if action == "up" {
            let exports = self.services_up()?;
            for (key, value) in exports {
                println!("export {key}={value}");
            }
            Ok(())
        } else {
            self.services_script(action)
        }
    }

    /// Starts the services (idempotent) and keeps their environment for later commands.
    fn services_up(&self) -> Result<Vec<(String, String)>> {
        let state_dir =
            std::env::var("CI_SERVICES_DIR").unwrap_or_else(|_| "/tmp/cachet-services".to_owned());
        let already_running = ["postgres.env", "s3.env"]
            .iter()
            .all(|f| std::path::Path::new(&state_dir).join(f).exists());
        let script = self.root.join("scripts/services/up.sh");
        let output = Command::new("bash")
            .arg(&script)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("could not start `bash {}`", script.display()))?;
        if !output.status.success() {
            bail!(
                "`bash {}` failed ({}): the tests need PostgreSQL and an S3 server",
                script.display(),
                output.status
            );
        }
        let exports = parse_exports(&String::from_utf8_lossy(&output.stdout));
        if !exports.iter().any(|(k, _)| k == "DATABASE_URL")
            || !exports.iter().any(|(k, _)| k == "S3_ENDPOINT")
        {
            bail!("scripts/services/up.sh did not export DATABASE_URL and S3_ENDPOINT");
        }
        self.env.borrow_mut().extend(exports.iter().cloned());
        self.started_services.set(!already_running);
        Ok(exports)
    }

    /// Runs `scripts/services/<action>.sh`.
    fn services_script(&self, action: &str) -> Result<()> {
        let script = self
            .root
            .join("scripts/services")
            .join(format!("{action}.sh"));
        let mut cmd = Command::new("bash");
        cmd.arg(&script).current_dir(&self.root);
        if self.ci {
            cmd.stdin(Stdio::null());
        }
        run_command(&mut cmd, &format!("bash {}", script.display()))
    }
}

/// `KEY=VALUE` pairs from `export K1=V1 K2=V2` lines (the service scripts' output; values
/// never contain spaces or quotes).
fn parse_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .flat_map(str::split_whitespace)
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// One named step of a pipeline.
struct Step {
    name: &'static str,
    action: Action,
    /// Printed before the step runs.
    note: Option<&'static str>,
}

/// What a step does.
enum Action {
    /// Install cargo-nextest and cargo-deny if they are missing.
    EnsureTools,
    /// Install the Python packages of the format-spec reader test if they are missing.
    EnsurePython,
    /// Start PostgreSQL and the S3 server; later steps get their environment.
    ServicesUp,
    /// `cargo <args>`.
    Cargo(Vec<&'static str>),
    /// `cargo <args>`, after checking that the cargo subcommand `tool` is installed.
    CargoTool {
        tool: &'static str,
        args: Vec<&'static str>,
    },
}

impl Step {
    fn cargo(name: &'static str, args: &[&'static str]) -> Self {
        Step {
            name,
            action: Action::Cargo(args.to_vec()),
            note: None,
        }
    }

    fn cargo_tool(name: &'static str, tool: &'static str, args: Vec<&'static str>) -> Self {
        Step {
            name,
            action: Action::CargoTool { tool, args },
            note: None,
        }
    }

    fn run(&self, ctx: &Ctx) -> Result<()> {
        match &self.action {
            Action::EnsureTools => ensure_tools(ctx),
            Action::EnsurePython => ensure_python_packages(),
            Action::ServicesUp => self_services_up(ctx),
            Action::Cargo(args) => ctx.run_cargo(args),
            Action::CargoTool { tool, args } => {
                require_tool(ctx, tool)?;
                ctx.run_cargo(args)
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    Skipped,
}

fn self_services_up(ctx: &Ctx) -> Result<()> {
    for (key, value) in ctx.services_up()? {
        println!("{key}={value}");
    }
    Ok(())
}

fn ci_steps(ctx: &Ctx) -> Vec<Step> {
    let mut steps = vec![Step {
        name: "ensure tools",
        action: Action::EnsureTools,
        note: None,
    }];
    steps.extend(lint_steps(ctx));
    steps.extend(test_steps(ctx));
    steps
}

fn lint_steps(ctx: &Ctx) -> Vec<Step> {
    let advisories = env_flag("CACHET_DENY_ADVISORIES");
    let mut deny_args = vec!["deny", "check"];
    if !advisories {
        deny_args.extend_from_slice(DENY_CHECKS);
    }
    let mut deny = Step::cargo_tool("cargo deny", "deny", deny_args);
    deny.note = Some(if advisories {
        "CACHET_DENY_ADVISORIES is set: every check, advisories included"
    } else {
        "advisories not checked: the RustSec database is cloned from GitHub, which these \
         machines cannot reach (see deny.toml); CACHET_DENY_ADVISORIES=1 adds it"
    });
    vec![
        // rustfmt colors its diffs even into a pipe unless told not to.
        Step::cargo(
            "fmt --check",
            if ctx.ci {
                &["fmt", "--all", "--", "--check", "--color", "never"]
            } else {
                &["fmt", "--all", "--", "--check"]
            },
        ),
        Step::cargo(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ],
        ),
        // Broken intra-doc links and missing docs fail the build.
        Step::cargo(
            "docs",
            &[
                "doc",
                "--no-deps",
                "--workspace",
                "--all-features",
                "--config",
                "build.rustdocflags=[\"-D\", \"warnings\"]",
            ],
        ),
        deny,
    ]
}

fn test_steps(ctx: &Ctx) -> Vec<Step> {
    let mut nextest = vec![
        "nextest",
        "run",
        "--workspace",
        "--all-features",
        "--no-fail-fast",
    ];
    if ctx.ci {
        nextest.extend_from_slice(&["--profile", "ci"]);
    }
    vec![
        Step {
            name: "python packages",
            action: Action::EnsurePython,
            note: None,
        },
        Step {
            name: "services up",
            action: Action::ServicesUp,
            note: Some("PostgreSQL and an S3 server (moto) on 127.0.0.1; installed when missing"),
        },
        Step::cargo_tool("nextest", "nextest", nextest),
        // nextest does not run doctests.
        Step::cargo(
            "doctests",
            &["test", "--workspace", "--doc", "--all-features"],
        ),
    ]
}

fn bench_steps() -> Vec<Step> {
    vec![
        Step::cargo("criterion benches", &["bench", "-p", "cachet-benches"]),
        Step::cargo(
            "peer comparison",
            &[
                "run",
                "--release",
                "-p",
                "cachet-benches",
                "--bin",
                "compare",
            ],
        ),
    ]
}

fn demo_steps() -> Vec<Step> {
    vec![Step::cargo(
        "demo",
        &["run", "--release", "-p", "cachet-cli", "--", "demo"],
    )]
}

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

/// Installs cargo-nextest and cargo-deny when `cargo <tool> --version` does not answer.
fn ensure_tools(ctx: &Ctx) -> Result<()> {
    ensure_tool(ctx, "nextest", &["cargo-nextest", "--locked"])?;
    ensure_tool(
        ctx,
        "deny",
        &["cargo-deny", "--locked", "--version", CARGO_DENY_VERSION],
    )?;
    Ok(())
}

/// The packages `docs/reader/read_cache.py` needs; the test
/// `crates/cachet-storage/tests/python_reader.rs` runs it to prove docs/FORMAT.md complete.
const PYTHON_PACKAGES: &[&str] = &["xxhash", "lz4", "zstandard"];

fn ensure_python_packages() -> Result<()> {
    let probe = || {
        Command::new("python3")
            .args(["-c", "import xxhash, lz4.block, zstandard"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if probe() {
        println!("found python3 with {}", PYTHON_PACKAGES.join(", "));
        return Ok(());
    }
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(PYTHON_PACKAGES);
    run_command(
        &mut pip,
        &format!("python3 -m pip install {}", PYTHON_PACKAGES.join(" ")),
    )?;
    if !probe() {
        bail!(
            "python3 still cannot import {} after installing them",
            PYTHON_PACKAGES.join(", ")
        );
    }
    Ok(())
}

fn ensure_tool(ctx: &Ctx, subcommand: &str, install: &[&str]) -> Result<()> {
    if let Some(version) = tool_version(ctx, subcommand) {
        println!("found {version}");
        return Ok(());
    }
    println!(
        "cargo {subcommand} is not installed: cargo install {} (this compiles it; minutes on 2 cores)",
        install.join(" ")
    );
    let started = Instant::now();
    let mut args = vec!["install"];
    args.extend_from_slice(install);
    ctx.run_cargo(&args)?;
    println!("installed in {}", fmt_duration(started.elapsed()));
    tool_version(ctx, subcommand)
        .map(|v| println!("found {v}"))
        .with_context(|| format!("`cargo {subcommand} --version` still fails after installing it"))
}

/// A clear error, rather than cargo's "no such command", when a tool is missing.
fn require_tool(ctx: &Ctx, subcommand: &str) -> Result<()> {
    if tool_version(ctx, subcommand).is_none() {
        bail!(
            "`cargo {subcommand}` is not installed; run `cargo xtask ci` (which installs it) or \
             `cargo install cargo-{subcommand} --locked`"
        );
    }
    Ok(())
}

/// The first line of `cargo <subcommand> --version`, or `None` when it fails.
fn tool_version(ctx: &Ctx, subcommand: &str) -> Option<String> {
    let output = ctx
        .cargo(&[subcommand, "--version"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Some(text.lines().next().unwrap_or(subcommand).trim().to_owned())
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs a command with inherited output; an error names the command and its exit status.
fn run_command(cmd: &mut Command, display: &str) -> Result<()> {
    println!("$ {display}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{display}`"))?;
    if !status.success() {
        bail!("`{display}` failed ({status})");
    }
    Ok(())
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 60.0 {
        format!("{}m{:04.1}s", (secs / 60.0).floor(), secs % 60.0)
    } else {
        format!("{secs:.1}s")
    }
}

fn print_summary(name: &str, results: &[(&str, Duration, Outcome)], total: Duration) {
    let width = results
        .iter()
        .map(|(step, ..)| step.len())
        .max()
        .unwrap_or(4)
        .max(5);
    println!("\n{name} summary");
    println!("{:<width$}  {:>9}  result", "step", "time");
    println!("{:-<width$}  {:->9}  ------", "", "");
    for (step, elapsed, outcome) in results {
        let (time, result) = match outcome {
            Outcome::Ok => (fmt_duration(*elapsed), "ok"),
            Outcome::Failed => (fmt_duration(*elapsed), "FAILED"),
            Outcome::Skipped => ("-".to_owned(), "skipped"),
        };
        println!("{step:<width$}  {time:>9}  {result}");
    }
    println!("{:-<width$}  {:->9}  ------", "", "");
    let all_ok = results.iter().all(|(.., o)| *o == Outcome::Ok);
    println!(
        "{:<width$}  {:>9}  {}",
        "total",
        fmt_duration(total),
        if all_ok { "ok" } else { "FAILED" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_under_a_minute_show_seconds() {
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn durations_over_a_minute_show_minutes_and_seconds() {
        assert_eq!(fmt_duration(Duration::from_secs(125)), "2m05.0s");
    }

    #[test]
    fn a_missing_cargo_subcommand_has_no_version() {
        let ctx = Ctx::new().unwrap();
        assert_eq!(
            tool_version(&ctx, "surely-not-an-installed-subcommand"),
            None
        );
        assert!(require_tool(&ctx, "surely-not-an-installed-subcommand").is_err());
    }

    #[test]
    fn service_exports_are_parsed_into_pairs() {
        let text = "export DATABASE_URL=postgres://p@127.0.0.1:5/test\n\
                    export AWS_ALLOW_HTTP=true AWS_BUCKET=b\n\
                    not an export\n";
        assert_eq!(
            parse_exports(text),
            vec![
                (
                    "DATABASE_URL".to_owned(),
                    "postgres://p@127.0.0.1:5/test".to_owned()
                ),
                ("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()),
                ("AWS_BUCKET".to_owned(), "b".to_owned()),
            ]
        );
    }

    #[test]
    fn unknown_command_is_an_error() {
        assert!(run(&["frobnicate"]).is_err());
        assert!(run(&["services", "sideways"]).is_err());
    }
}
