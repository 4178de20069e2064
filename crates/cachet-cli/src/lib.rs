//! # cachet-cli
//!
//! The `cachet` command-line tool: look into a cache, read and write entries, keep it healthy.
//!
//! ```text
//! cachet [--cache DIR | --index URL --blobs URL] [--format table|json|csv] [-q|-v] COMMAND
//! ```
//!
//! `main.rs` only calls [`main_with_args`]; everything is testable from here:
//!
//! ```
//! use clap::Parser;
//!
//! let dir = std::env::temp_dir().join(format!("cachet-cli-doc-{}", std::process::id()));
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! rt.block_on(async {
//!     let cache = cachet::Cache::open(&dir).await.unwrap();
//!     cache.insert_bytes("greeting", b"hello").await.unwrap();
//!     let cli = cachet_cli::Cli::try_parse_from([
//!         "cachet", "--cache", dir.to_str().unwrap(), "get", "greeting",
//!     ])
//!     .unwrap();
//!     let mut out = Vec::new();
//!     let outcome = cachet_cli::run(cli, &mut out).await.unwrap();
//!     assert_eq!(outcome, cachet_cli::Outcome::Success);
//!     assert_eq!(out, b"hello");
//! });
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! ## Structure (for adding a command)
//!
//! * One module per command in `src/cmd/<name>.rs`, with a `clap::Args` struct
//!   (`<Name>Args`) whose doc comments are the `--help` text, and
//!   `pub async fn run(args, ctx: &mut Context<'_>) -> anyhow::Result<Outcome>`.
//! * One variant of [`Command`] wrapping the `Args`, one arm in [`run`]'s `match`.
//! * [`Context`] carries the global options, the output ([`Context::rows`] for listings,
//!   [`Context::record`] for one record, [`Context::out`] for raw bytes), notes on stderr
//!   ([`Context::info`], [`Context::detail`]) and opens the cache ([`Context::open_cache`]).
//! * Exit codes: see [`Outcome`] (0 ok, 1 failure or problems found, 2 usage).
//! * Sizes and durations: [`human`] (`--max-size 500MB`, `--ttl 2.5h`).

pub mod cmd;
pub mod context;
pub mod human;
pub mod output;
pub mod progress;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use context::{CacheLocation, Context, GlobalArgs, Outcome, UsageError, usage};
pub use output::Format;

const AFTER_HELP: &str = "\
Examples:
  cachet --cache ./cache inspect
  cachet list --namespace models --meta 'accuracy>=0.9' --older-than 7d
  cachet get 5898b2382767579442f2e72022d20a4b -o value.bin
  cachet --index postgres://cachet@db/cache --blobs s3://bucket/cache?endpoint=... stats

Exit codes: 0 success, 1 failure (or problems found), 2 usage error.";

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "cachet",
    version,
    about = "Inspect, query and maintain cachet caches",
    long_about = None,
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// Options of every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// What this cache is: backends, entries, sizes, compression, dedup, oldest/newest,
    /// expired.
    Inspect(cmd::inspect::InspectArgs),
    /// List entries (key, namespace, type, sizes, age, TTL left, hits), filtered and sorted.
    List(cmd::list::ListArgs),
    /// Breakdowns by data type, namespace, age and size; recorded reads.
    Stats(cmd::stats::StatsArgs),
    /// One entry's metadata: sizes, digest, times, TTL, tags, params, user metadata.
    Show(cmd::show::ShowArgs),
    /// Write one entry's value to stdout or a file. Serde values are rendered as JSON.
    Get(cmd::get::GetArgs),
    /// Store a file or stdin under a key (streamed), with --ttl, --tag, --meta.
    Put(cmd::put::PutArgs),
    /// Delete entries by key.
    Rm(cmd::rm::RmArgs),
    /// Run one read-only SQL statement on the index (`--help` describes the tables).
    Query(cmd::query::QueryArgs),
    /// Delete expired entries; with --max-size, evict the least recently used down to a quota.
    Cleanup(cmd::cleanup::CleanupArgs),
    /// Check every entry and blob; list damaged entries with their key and the reason
    /// (exit code 1 when any).
    Verify(cmd::check::VerifyArgs),
    /// Remove what verify finds broken (damaged, expired, unreferenced blobs); --dry-run.
    Repair(cmd::check::RepairArgs),
    /// Delete blobs no entry references and crash leftovers.
    Gc(cmd::check::GcArgs),
    /// Write entries to a portable archive (a file or `-` for stdout).
    Export(cmd::archive::ExportArgs),
    /// Read an archive written by export into the cache, verifying every value.
    Import(cmd::archive::ImportArgs),
    /// Copy every entry into another cache (e.g. SQLite + files to PostgreSQL + S3);
    /// resumable.
    Migrate(cmd::migrate::MigrateArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::CompletionsArgs),
    /// Show what cachet does here: memoize a computation (miss vs hit), round-trip a large
    /// value (throughput, peak memory), print statistics. Uses its own directory.
    Demo(cmd::demo::DemoArgs),
}

/// Parses arguments, runs the command, maps the outcome to an exit code
/// (0 success, 1 failure or problems found, 2 usage error).
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let quiet = cli.global.quiet;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = std::io::stdout();
    // Buffered: row writers flush per page, so pipes still see output at once.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let result = runtime.block_on(run_with(cli, &mut out, true));
    let result = result.and_then(|outcome| {
        out.flush()?;
        Ok(outcome)
    });
    exit_code(result, quiet)
}

fn exit_code(result: Result<Outcome>, quiet: bool) -> ExitCode {
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Problems(summary)) => {
            if !quiet {
                eprintln!("cachet: {summary}");
            }
            ExitCode::FAILURE
        }
        Err(e) if e.is::<UsageError>() => {
            eprintln!("error: {e}\n\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
        // `cachet list | head`: the reader has what it wanted.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<csv::Error>()
                .is_some_and(|c| matches!(c.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe))
    })
}

/// Runs one command, writing its output to `out`.
///
/// # Errors
/// What the command fails with (see [`Outcome`] for how errors map to exit codes).
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<Outcome> {
    run_with(cli, out, false).await
}

async fn run_with(cli: Cli, out: &mut dyn Write, out_is_stdout: bool) -> Result<Outcome> {
    let mut ctx = Context::new(cli.global, out, out_is_stdout);
    let ctx = &mut ctx;
    match cli.command {
        Command::Demo(args) => cmd::demo::run(args, ctx).await,
        Command::Stats(args) => cmd::stats::run(args, ctx).await,
        Command::List(args) => cmd::list::run(args, ctx).await,
        Command::Get(args) => cmd::get::run(args, ctx).await,
        Command::Inspect(args) => cmd::inspect::run(args, ctx).await,
        Command::Show(args) => cmd::show::run(args, ctx).await,
        Command::Put(args) => cmd::put::run(args, ctx).await,
        Command::Rm(args) => cmd::rm::run(args, ctx).await,
        Command::Completions(args) => cmd::completions::run(args, ctx).await,
        Command::Query(args) => cmd::query::run(args, ctx).await,
        Command::Cleanup(args) => cmd::cleanup::run(args, ctx).await,
        Command::Verify(args) => cmd::check::run_verify(args, ctx).await,
        Command::Repair(args) => cmd::check::run_repair(args, ctx).await,
        Command::Gc(args) => cmd::check::run_gc(args, ctx).await,
        Command::Export(args) => cmd::archive::run_export(args, ctx).await,
        Command::Import(args) => cmd::archive::run_import(args, ctx).await,
        Command::Migrate(args) => cmd::migrate::run(args, ctx).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_model_is_consistent() {
        Cli::command().debug_assert();
    }
}
