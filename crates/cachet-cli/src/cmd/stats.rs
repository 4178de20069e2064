//! `cachet stats`: what the cache holds, in totals.

use anyhow::Result;
use cachet::{Cache, Location};

use crate::output::{Cell, Record};
use crate::{Context, Outcome};

/// Options of `cachet stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {}

/// Runs `cachet stats`.
///
/// # Errors
/// When the cache cannot be read or the output written.
pub async fn run(_args: StatsArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_cache().await?;
    let record = totals(&cache).await?;
    ctx.record(&record)?;
    Ok(Outcome::Success)
}

/// Entries, sizes, compression and deduplication, as one record.
///
/// # Errors
/// When the index cannot be read.
pub async fn totals(cache: &Cache) -> Result<Record> {
    let s = cache.index_stats().await?;
    let ratio = if s.raw_bytes == 0 {
        1.0
    } else {
        s.stored_bytes as f64 / s.raw_bytes as f64
    };
    let blob_entry_bytes = stored_bytes_in_blobs(cache).await?;
    let dedup_saved = blob_entry_bytes.saturating_sub(s.blob_bytes);
    let mut r = Record::new();
    r.field("entries", "entries", Cell::UInt(s.entries));
    r.field(
        "inline_entries",
        "inline entries",
        Cell::UInt(s.inline_entries),
    );
    r.field("raw_bytes", "raw size", Cell::Size(s.raw_bytes));
    r.field("stored_bytes", "stored size", Cell::Size(s.stored_bytes));
    r.field(
        "compression_ratio",
        "stored / raw",
        Cell::Custom {
            human: format!("{:.1}%", ratio * 100.0),
            machine: serde_json::json!(ratio),
        },
    );
    r.field("blobs", "blobs", Cell::UInt(s.blobs));
    r.field("blob_bytes", "blob bytes", Cell::Size(s.blob_bytes));
    r.field("dedup_saved_bytes", "dedup saved", Cell::Size(dedup_saved));
    Ok(r)
}

/// Sum of stored sizes of blob-backed entries (each entry counted), to compare with what the
/// blob store really holds (each blob once).
async fn stored_bytes_in_blobs(cache: &Cache) -> Result<u64> {
    let mut total = 0;
    let mut pages = cache.store().pages(cachet::EntryFilter::all(), 1000);
    while let Some(page) = pages.next_page().await? {
        total += page
            .iter()
            .filter(|m| matches!(m.location, Location::Blob(_)))
            .map(|m| m.stored_size)
            .sum::<u64>();
    }
    Ok(total)
}
