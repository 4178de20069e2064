//! `cachet migrate`: copy every entry of this cache into another one (`Store::copy_to`), e.g.
//! from a laptop's SQLite + filesystem cache into a shared PostgreSQL + S3 one.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use cachet::{Cache, CopyOptions, VerifyOptions};

use crate::output::{Cell, Record};
use crate::progress::Bar;
use crate::{Context, Outcome};

const MIGRATE_HELP: &str = "\
Every value streams from a verified reader of this cache (frame checksums, size, content
digest) into a writer of the target, which re-encodes it with its own settings; keys,
parameters, tags, metadata, compression and expiry are kept. An entry damaged here is not
copied and is reported with its key and the reason (exit code 1). The source is only read.

Resumable: an entry the target already holds with the same content digest is skipped, so
after an interruption (Ctrl-C, a lost connection) run the same command again and it copies
only the rest.

Examples:
  cachet --cache ./cache migrate --to-cache /mnt/big/cache
  cachet --cache ./cache migrate --to-index postgres://cachet@db/cache \\
      --to-blobs 's3://team-cache/prod?endpoint=https://s3.example.com' --verify";

/// Options of `cachet migrate`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = MIGRATE_HELP)]
pub struct MigrateArgs {
    /// The target's index URL (`postgres://...`, `sqlite:///path/index.sqlite`), with
    /// --to-blobs.
    #[arg(
        long,
        value_name = "URL",
        requires = "to_blobs",
        required_unless_present = "to_cache"
    )]
    pub to_index: Option<String>,
    /// The target's blob store URL (`s3://bucket/prefix?endpoint=...`, `file:///path`), with
    /// --to-index.
    #[arg(long, value_name = "URL", requires = "to_index")]
    pub to_blobs: Option<String>,
    /// A target cache directory (SQLite index + blob files), created if missing.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["to_index", "to_blobs"])]
    pub to_cache: Option<PathBuf>,
    /// Replace entries the target holds with other content (default: keep them).
    #[arg(long)]
    pub overwrite: bool,
    /// Also copy entries that have expired.
    #[arg(long)]
    pub include_expired: bool,
    /// Afterwards, verify the target (every value read back and checked).
    #[arg(long)]
    pub verify: bool,
}

async fn open_target(args: &MigrateArgs) -> Result<(Cache, String)> {
    match (&args.to_cache, &args.to_index, &args.to_blobs) {
        (Some(dir), _, _) => {
            let cache = Cache::builder()
                .directory(dir)
                .build()
                .await
                .with_context(|| format!("opening the target cache at {}", dir.display()))?;
            Ok((cache, dir.display().to_string()))
        }
        (None, Some(index), Some(blobs)) => {
            let shown = format!(
                "{} + {}",
                crate::context::redact(index),
                crate::context::redact(blobs)
            );
            let cache = Cache::builder()
                .index(index.clone())
                .blobs(blobs.clone())
                .build()
                .await
                .with_context(|| format!("opening the target {shown}"))?;
            Ok((cache, shown))
        }
        _ => Err(crate::usage(
            "give the target: --to-cache DIR, or --to-index URL with --to-blobs URL",
        )),
    }
}

/// Runs `cachet migrate`.
///
/// # Errors
/// When either cache cannot be opened, read or written (run again to resume).
pub async fn run(args: MigrateArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let source = ctx.open_cache().await?;
    let (target, shown) = open_target(&args).await?;
    let total = source.index_stats().await?.entries;
    let options = CopyOptions {
        overwrite: args.overwrite,
        include_expired: args.include_expired,
    };
    let bar = Bar::new(!ctx.quiet(), Some(total), "entries");
    bar.set_prefix("migrating");
    let started = std::time::Instant::now();
    let result = source
        .store()
        .copy_to(target.store(), &options, |r| {
            let done =
                r.copied + r.already_present + r.kept_existing + r.expired + r.damaged.len() as u64;
            bar.update(done, || {
                format!(
                    "{} copied ({}), {} already there",
                    r.copied,
                    crate::human::format_size(r.bytes),
                    r.already_present
                )
            })
        })
        .await;
    bar.finish();
    let report = result.context(
        "migrating (entries copied so far are in the target, complete; run the same command \
         again to copy the rest)",
    )?;
    let seconds = started.elapsed().as_secs_f64();
    target.flush().await?;

    let mut record = Record::new();
    record.field("target", "target", Cell::text(shown));
    record.field("copied", "copied", Cell::UInt(report.copied));
    record.field("raw_bytes", "raw size copied", Cell::Size(report.bytes));
    record.field(
        "already_present",
        "already there",
        Cell::UInt(report.already_present),
    );
    record.field(
        "kept_existing",
        "kept (other content)",
        Cell::UInt(report.kept_existing),
    );
    record.field("expired", "expired (left)", Cell::UInt(report.expired));
    record.field(
        "damaged",
        "damaged (not copied)",
        super::archive::failures_cell(&report.damaged),
    );
    record.field(
        "duration_ms",
        "took",
        Cell::DurationMs((seconds * 1000.0) as i64),
    );
    record.field(
        "bytes_per_second",
        "throughput",
        Cell::Custom {
            human: format!(
                "{}/s",
                crate::human::format_size((report.bytes as f64 / seconds.max(1e-6)) as u64)
            ),
            machine: serde_json::json!((report.bytes as f64 / seconds.max(1e-6)) as u64),
        },
    );
    let mut target_damaged = 0;
    if args.verify {
        let bar = Bar::new(
            !ctx.quiet(),
            Some(report.copied + report.already_present),
            "entries",
        );
        bar.set_prefix("verifying the target");
        let checked = target
            .store()
            .verify(&VerifyOptions::default().with_find_orphans(false), |p| {
                bar.update(p.entries_checked, String::new)
            })
            .await?;
        bar.finish();
        target_damaged = checked
            .problems
            .iter()
            .filter(|p| super::check::is_damage(p.kind()))
            .count();
        for problem in checked
            .problems
            .iter()
            .filter(|p| super::check::is_damage(p.kind()))
        {
            ctx.info(format!("target: {problem}"));
        }
        record.field(
            "target_verified",
            "target verified",
            Cell::UInt(checked.entries_checked),
        );
        record.field(
            "target_damaged",
            "target damaged",
            Cell::UInt(target_damaged as u64),
        );
    }
    for (key, error) in &report.damaged {
        ctx.info(format!("damaged, not copied: {key}: {error}"));
    }
    ctx.record(&record)?;
    Ok(if !report.damaged.is_empty() {
        Outcome::Problems(format!(
            "{} damaged entries were not copied (listed above; `cachet verify` shows them)",
            report.damaged.len()
        ))
    } else if target_damaged > 0 {
        Outcome::Problems(format!(
            "the target has {target_damaged} damaged entries after the copy"
        ))
    } else {
        Outcome::Success
    })
}
