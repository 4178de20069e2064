//! `cachet export FILE|-` and `cachet import FILE|-`: the portable archive of docs/ARCHIVE.md.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context as _, Result};
use cachet::{CacheKey, EntryFilter, Error, ExportOptions, ImportOptions, Store};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::output::{Cell, Record};
use crate::progress::Bar;
use crate::{Context, Outcome};

const EXPORT_HELP: &str = "\
The archive is a tar stream (docs/ARCHIVE.md): a header, then per entry a JSON manifest record
(key, parameters, tags, user metadata, expiry, content digest) and the value exactly as stored,
then an end record. Every value is verified while it is written; a damaged entry is left out
(or marked damaged, so that an import rejects it) and reported: the exit code is then 1.

A file is written as FILE.partial and renamed when complete, so FILE is never a cut archive.

Examples:
  cachet export backup.tar
  cachet export --namespace models --tag prod - | ssh host cachet import -";

const IMPORT_HELP: &str = "\
Every value is checked (frames, size, content digest) before its entry becomes visible: a
damaged entry is rejected and reported with its key and the reason (exit code 1), the others
are imported. Entries keep their namespaces, keys, parameters, tags, metadata, creation time
and expiry. An entry the cache already holds with the same content is skipped, so importing
the same archive again (after an interruption) completes it. A cut or corrupt archive stops
the import with an error naming the problem; what was imported before stays, each entry
complete.

Examples:
  cachet --cache ./new import backup.tar
  curl -s https://host/backup.tar | cachet import -";

/// Options of `cachet export`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = EXPORT_HELP)]
pub struct ExportArgs {
    /// The archive to write, or `-` for stdout (the report then goes to stderr).
    pub file: PathBuf,
    /// Only entries of this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only keys (ids) starting with this prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only entries carrying this tag (repeat: every tag).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Also export entries that have expired.
    #[arg(long)]
    pub include_expired: bool,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Options of `cachet import`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = IMPORT_HELP)]
pub struct ImportArgs {
    /// The archive to read, or `-` for stdin.
    pub file: PathBuf,
    /// Replace entries that exist with other content (default: keep them).
    #[arg(long)]
    pub overwrite: bool,
    /// Also import entries that have already expired.
    #[arg(long)]
    pub include_expired: bool,
}

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Rejected or damaged entries: the count for people, the list (key, reason) for programs.
pub fn failures_cell(failures: &[(CacheKey, Error)]) -> Cell {
    Cell::Custom {
        human: failures.len().to_string(),
        machine: serde_json::Value::Array(
            failures
                .iter()
                .map(|(key, error)| {
                    serde_json::json!({
                        "namespace": key.namespace(),
                        "id": key.id(),
                        "key": key.to_string(),
                        "reason": error.to_string(),
                    })
                })
                .collect(),
        ),
    }
}

/// Runs `cachet export`.
///
/// # Errors
/// When the cache cannot be read or the archive written.
pub async fn run_export(args: ExportArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_cache().await?;
    let store = cache.store().clone();
    let mut filter = EntryFilter::all();
    filter.namespace = args.namespace.clone();
    filter.id_prefix = args.prefix.clone();
    for tag in &args.tags {
        filter = filter.tag(tag.clone());
    }
    let options = ExportOptions {
        filter,
        include_expired: args.include_expired,
    };
    let to_stdout = is_stdio(&args.file);
    let unfiltered = args.namespace.is_none() && args.prefix.is_none() && args.tags.is_empty();
    let total = if unfiltered {
        Some(store.stats().await?.entries)
    } else {
        None
    };
    let bar = Bar::new(!ctx.quiet(), total, "entries");
    bar.set_prefix("exporting");
    let update = |r: &cachet::ExportReport| {
        bar.update(r.entries + r.expired + r.damaged.len() as u64, || {
            crate::human::format_size(r.stored_bytes)
        })
    };
    let started = std::time::Instant::now();
    let report = if to_stdout {
        // The output is a synchronous writer (stdout, locked by main): the export runs as a
        // task writing into a pipe, and this task copies the pipe to the output.
        let (mut reader, writer) = tokio::io::duplex(256 << 10);
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            store
                .export(writer, &options, |r| {
                    let _ = sender.send((
                        r.entries + r.expired + r.damaged.len() as u64,
                        r.stored_bytes,
                    ));
                })
                .await
        });
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            ctx.out().write_all(&buf[..n])?;
            while let Ok((done, bytes)) = receiver.try_recv() {
                bar.update(done, || crate::human::format_size(bytes));
            }
        }
        ctx.out().flush()?;
        task.await.context("the export task failed")??
    } else {
        let partial = partial_path(&args.file);
        if args.file.exists() && !args.force {
            return Err(crate::usage(format!(
                "{} exists: pass --force to replace it",
                args.file.display()
            )));
        }
        let file = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut file = tokio::io::BufWriter::with_capacity(256 << 10, file);
        let result = store.export(&mut file, &options, update).await;
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e.into());
            }
        };
        use tokio::io::AsyncWriteExt;
        file.flush().await?;
        file.get_ref().sync_all().await?;
        drop(file);
        tokio::fs::rename(&partial, &args.file)
            .await
            .with_context(|| {
                format!("renaming {} to {}", partial.display(), args.file.display())
            })?;
        report
    };
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();

    let mut record = Record::new();
    record.field(
        "file",
        "archive",
        Cell::text(if to_stdout {
            "-".to_owned()
        } else {
            args.file.display().to_string()
        }),
    );
    record.field("entries", "entries", Cell::UInt(report.entries));
    record.field("raw_bytes", "raw size", Cell::Size(report.raw_bytes));
    record.field(
        "stored_bytes",
        "stored size",
        Cell::Size(report.stored_bytes),
    );
    record.field(
        "archive_bytes",
        "archive size",
        Cell::Size(report.archive_bytes),
    );
    record.field("expired", "expired (left out)", Cell::UInt(report.expired));
    record.field(
        "damaged",
        "damaged (left out)",
        failures_cell(&report.damaged),
    );
    record.field(
        "duration_ms",
        "took",
        Cell::DurationMs((seconds * 1000.0) as i64),
    );
    for (key, error) in &report.damaged {
        ctx.info(format!("damaged, not exported: {key}: {error}"));
    }
    if to_stdout {
        // stdout holds the archive: the report goes to stderr.
        if !ctx.quiet() {
            let mut text = Vec::new();
            record.write(&mut text, ctx.format())?;
            std::io::stderr().write_all(&text)?;
        }
    } else {
        ctx.record(&record)?;
    }
    Ok(if report.damaged.is_empty() {
        Outcome::Success
    } else {
        Outcome::Problems(format!(
            "{} damaged entries were not exported (run `cachet verify`)",
            report.damaged.len()
        ))
    })
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    file.with_file_name(name)
}

/// Counts the bytes read through it (the import's progress against the file's size).
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        poll
    }
}

/// Runs `cachet import`.
///
/// # Errors
/// When the archive cannot be read, is not an archive, is corrupt or cut, or the cache cannot
/// be written.
pub async fn run_import(args: ImportArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_or_create_cache().await?;
    let store: &Store = cache.store();
    let options = ImportOptions {
        overwrite: args.overwrite,
        include_expired: args.include_expired,
    };
    let read = Arc::new(AtomicU64::new(0));
    let (input, size): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = if is_stdio(&args.file) {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let file = tokio::fs::File::open(&args.file)
            .await
            .with_context(|| format!("opening {}", args.file.display()))?;
        let size = file.metadata().await.ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let input = Counting {
        inner: input,
        read: read.clone(),
    };
    let bar = Bar::new(!ctx.quiet(), size, "bytes");
    bar.set_prefix("importing");
    let started = std::time::Instant::now();
    let result = store
        .import(input, &options, |r| {
            bar.update(read.load(Ordering::Relaxed), || {
                format!(
                    "{} entries imported, {} skipped, {} rejected",
                    r.imported,
                    r.already_present + r.kept_existing + r.expired,
                    r.rejected.len()
                )
            })
        })
        .await;
    bar.finish();
    let report = result.with_context(|| {
        format!(
            "importing {} (entries imported before the error stay; fix the archive and import \
             again to complete: entries already present are skipped)",
            if is_stdio(&args.file) {
                "stdin".to_owned()
            } else {
                args.file.display().to_string()
            }
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let mut record = Record::new();
    record.field("imported", "imported", Cell::UInt(report.imported));
    record.field("raw_bytes", "raw size", Cell::Size(report.bytes));
    record.field(
        "already_present",
        "already present",
        Cell::UInt(report.already_present),
    );
    record.field(
        "kept_existing",
        "kept (other content)",
        Cell::UInt(report.kept_existing),
    );
    record.field("expired", "expired (skipped)", Cell::UInt(report.expired));
    record.field("rejected", "rejected", failures_cell(&report.rejected));
    record.field(
        "duration_ms",
        "took",
        Cell::DurationMs((seconds * 1000.0) as i64),
    );
    for (key, error) in &report.rejected {
        ctx.info(format!("rejected {key}: {error}"));
    }
    ctx.record(&record)?;
    Ok(if report.rejected.is_empty() {
        Outcome::Success
    } else {
        Outcome::Problems(format!(
            "{} entries were rejected (listed above) and not imported",
            report.rejected.len()
        ))
    })
}
