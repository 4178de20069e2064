//! `cachet inspect`: what this cache is, in one screen.

use anyhow::Result;

use super::stats::{Census, dedup_saved, stored_ratio};
use crate::output::{Cell, Record};
use crate::{Context, Outcome};

/// Options of `cachet inspect`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Reads the index's totals and every entry's metadata once (one index query per 1,000 \
entries, bounded memory), never the values; `verify` checks the values.

Fields: the index and blob store (backend and location, passwords hidden); entries (inline in \
the index or in blobs); raw and stored bytes and their ratio; blobs and the bytes \
deduplication saves (entries sharing a blob); the oldest and newest entry; how many entries \
have expired (kept until `cleanup`); namespaces; recorded reads.")]
pub struct InspectArgs {}

/// Runs `cachet inspect`.
///
/// # Errors
/// When the cache cannot be opened or read.
pub async fn run(_args: InspectArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_cache().await?;
    let (index_at, blobs_at) = ctx.describe_location()?;
    let store = cache.store();
    let stats = cache.index_stats().await?;
    let census = Census::take(&cache).await?;
    let now = census.now;
    let ratio = stored_ratio(&stats);
    let mut r = Record::new();
    r.field(
        "index",
        "index",
        Cell::Custom {
            human: format!("{} at {index_at}", store.metadata_backend().name()),
            machine: serde_json::json!({
                "backend": store.metadata_backend().name(),
                "location": index_at,
            }),
        },
    );
    r.field(
        "blobs",
        "blobs",
        Cell::Custom {
            human: format!("{} at {blobs_at}", store.blob_backend().name()),
            machine: serde_json::json!({
                "backend": store.blob_backend().name(),
                "location": blobs_at,
            }),
        },
    );
    r.field(
        "entries",
        "entries",
        Cell::Custom {
            human: format!(
                "{} ({} inline in the index, {} in blobs)",
                stats.entries,
                stats.inline_entries,
                stats.entries.saturating_sub(stats.inline_entries)
            ),
            machine: stats.entries.into(),
        },
    );
    if !ctx.format().eq(&crate::Format::Table) {
        r.field("inline_entries", "inline", Cell::UInt(stats.inline_entries));
    }
    r.field("raw_bytes", "raw size", Cell::Size(stats.raw_bytes));
    r.field(
        "stored_bytes",
        "stored size",
        Cell::Custom {
            human: format!(
                "{} ({:.1}% of raw)",
                crate::human::format_size(stats.stored_bytes),
                ratio * 100.0
            ),
            machine: stats.stored_bytes.into(),
        },
    );
    r.field(
        "compression_ratio",
        "compression",
        Cell::Custom {
            human: if stats.stored_bytes == 0 {
                "-".to_owned()
            } else {
                format!("{:.2}x", 1.0 / ratio)
            },
            machine: serde_json::json!(ratio),
        },
    );
    r.field(
        "blob_count",
        "blobs stored",
        Cell::Custom {
            human: format!(
                "{} holding {}",
                stats.blobs,
                crate::human::format_size(stats.blob_bytes)
            ),
            machine: stats.blobs.into(),
        },
    );
    if !ctx.format().eq(&crate::Format::Table) {
        r.field("blob_bytes", "blob bytes", Cell::Size(stats.blob_bytes));
    }
    r.field(
        "dedup_saved_bytes",
        "dedup saved",
        Cell::Size(dedup_saved(&census, &stats)),
    );
    let age = |t: Option<cachet::Timestamp>| t.map_or(Cell::Null, |at| Cell::Age { at, now });
    r.field("oldest", "oldest entry", age(census.oldest));
    r.field("newest", "newest entry", age(census.newest));
    r.field(
        "expired",
        "expired",
        Cell::Custom {
            human: if census.total.expired == 0 {
                "0".to_owned()
            } else {
                format!(
                    "{} ({}; `cachet cleanup` removes them)",
                    census.total.expired,
                    crate::human::format_size(census.expired_stored_bytes)
                )
            },
            machine: census.total.expired.into(),
        },
    );
    r.field(
        "namespaces",
        "namespaces",
        Cell::UInt(census.by_namespace.len() as u64),
    );
    r.field("hits", "reads recorded", Cell::UInt(census.total.hits));
    ctx.record(&r)?;
    Ok(Outcome::Success)
}
