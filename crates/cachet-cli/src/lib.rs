//! # cachet-cli
//!
//! The `cachet` command-line tool. This first version answers "what is in this cache?" and
//! shows what cachet does on this machine; the full operator tool (inspect, query, cleanup,
//! verify, migrate, export/import) comes later.
//!
//! ```text
//! cachet demo                    # memoize a computation, round-trip 256 MiB, print stats
//! cachet --cache DIR stats       # entries, sizes, compression, dedup
//! cachet --cache DIR list        # entries with key, type, sizes, age, TTL left
//! cachet --cache DIR get KEY     # a value to stdout (serde values rendered as JSON)
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
//!     cachet_cli::run(cli, &mut out).await.unwrap();
//!     assert_eq!(out, b"hello");
//! });
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod demo;
mod format;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cachet::{Cache, CacheKey, DataType, EntryFilter, ListQuery};
use clap::{Parser, Subcommand};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "cachet", version, about = "Inspect and use cachet caches", long_about = None)]
pub struct Cli {
    /// Cache directory (SQLite index + blob files).
    #[arg(long, global = true, env = "CACHET_CACHE", default_value = "./cache")]
    pub cache: PathBuf,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what cachet does here: memoize a computation (miss vs hit), round-trip a large
    /// value (throughput, peak memory), print statistics. Uses its own directory.
    Demo(demo::DemoArgs),
    /// Totals: entries, raw and stored bytes, compression ratio, deduplicated blobs.
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List entries (key, type, sizes, age, TTL left, reads).
    List {
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only keys starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write one entry's value to stdout or a file. Serde values are rendered as JSON.
    Get {
        /// The key (as shown by `list`).
        key: String,
        /// The entry's namespace.
        #[arg(long, default_value = "")]
        namespace: String,
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Parses arguments, runs the command, maps the outcome to an exit code
/// (0 success, 1 failure, 2 usage error).
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
    match runtime.block_on(run(cli, &mut std::io::stdout().lock())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command, writing its output to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args, out).await,
        Command::Stats { json } => {
            let cache = open_existing(&cli.cache).await?;
            format::stats(&cache, json, out).await
        }
        Command::List {
            namespace,
            prefix,
            limit,
            json,
        } => {
            let cache = open_existing(&cli.cache).await?;
            let mut filter = EntryFilter::all();
            filter.namespace = namespace;
            filter.id_prefix = prefix;
            let query = ListQuery::matching(filter).with_limit(limit);
            format::list(&cache, query, limit, json, out).await
        }
        Command::Get {
            key,
            namespace,
            output,
        } => {
            let cache = open_existing(&cli.cache).await?;
            get(&cache, &namespace, &key, output, out).await
        }
    }
}

async fn open_existing(dir: &std::path::Path) -> Result<Cache> {
    anyhow::ensure!(
        dir.join("index.sqlite").exists(),
        "no cachet cache at {} (expected {}; pass --cache DIR or set CACHET_CACHE)",
        dir.display(),
        dir.join("index.sqlite").display()
    );
    // Strict: an operator asking for an entry must hear that it is damaged, not get a miss.
    Cache::builder()
        .directory(dir)
        .strict_integrity(true)
        .build()
        .await
        .with_context(|| format!("opening the cache at {}", dir.display()))
}

async fn get(
    cache: &Cache,
    namespace: &str,
    id: &str,
    output: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<()> {
    let key = CacheKey::explicit(namespace, id)?;
    // The cache's reader applies expiry and verifies every frame and the digest.
    let mut reader = cache
        .reader(&key)
        .await?
        .with_context(|| format!("no entry with key {key} (or it has expired)"))?;
    let mut sink: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(&mut *out),
    };
    if reader.meta().data_type == DataType::MessagePack {
        let mut raw = Vec::new();
        while let Some(chunk) = reader.next_chunk().await? {
            raw.extend_from_slice(&chunk);
        }
        let value: serde_json::Value = rmp_serde::from_slice(&raw)
            .with_context(|| format!("decoding {key} as MessagePack"))?;
        serde_json::to_writer_pretty(&mut sink, &value)?;
        writeln!(sink)?;
    } else {
        while let Some(chunk) = reader.next_chunk().await? {
            sink.write_all(&chunk)?;
        }
    }
    sink.flush()?;
    Ok(())
}
