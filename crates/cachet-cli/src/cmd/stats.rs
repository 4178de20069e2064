//! `cachet stats`: what the cache holds, broken down by data type, namespace, age and size.

use std::collections::BTreeMap;

use anyhow::Result;
use cachet::{Cache, EntryFilter, EntryMeta, IndexStats, Location, Timestamp};

use crate::output::{Cell, Column, Format, Record};
use crate::{Context, Outcome};

const STATS_AFTER_HELP: &str = "\
Totals come from the index's aggregate query; the breakdowns read every entry's metadata \
once (one index query per 1,000 entries, bounded memory), never the values.

Hits are the reads the index has recorded for each entry (its access count), summed: they \
count every process's reads since each entry was written. Misses are not recorded anywhere \
(a miss leaves no entry), and a cachet process's own hit/miss counters end with it, so this \
command has no miss count or hit ratio to show.

Groups: data type; namespace (`-` is the default namespace); age since creation (<1h, 1h-1d, \
1d-7d, 7d-30d, >=30d); raw size (<1 KiB, 1 KiB-1 MiB, 1-100 MiB, 100 MiB-1 GiB, >=1 GiB).

JSON: {\"totals\": {...}, \"by_data_type\": [...], \"by_namespace\": [...], \"by_age\": \
[...], \"by_size\": [...]}. CSV: one row per group and bucket (the totals are group \
`total`).";

/// Options of `cachet stats`.
#[derive(Debug, clap::Args)]
#[command(after_help = STATS_AFTER_HELP)]
pub struct StatsArgs {}

/// Counts of one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Entries.
    pub entries: u64,
    /// Sum of raw sizes.
    pub raw_bytes: u64,
    /// Sum of stored sizes.
    pub stored_bytes: u64,
    /// Sum of recorded reads.
    pub hits: u64,
    /// Entries past their expiry.
    pub expired: u64,
}

impl Bucket {
    fn add(&mut self, m: &EntryMeta, expired: bool) {
        self.entries += 1;
        self.raw_bytes += m.raw_size;
        self.stored_bytes += m.stored_size;
        self.hits += m.access_count;
        self.expired += u64::from(expired);
    }
}

/// Everything one pass over the index's entries learns.
#[derive(Debug, Clone, Default)]
pub struct Census {
    /// All entries.
    pub total: Bucket,
    /// By data type.
    pub by_data_type: BTreeMap<String, Bucket>,
    /// By namespace.
    pub by_namespace: BTreeMap<String, Bucket>,
    /// By age bucket (index into [`AGE_BUCKETS`]).
    pub by_age: [Bucket; AGE_BUCKETS.len()],
    /// By raw size bucket (index into [`SIZE_BUCKETS`]).
    pub by_size: [Bucket; SIZE_BUCKETS.len()],
    /// Earliest creation time.
    pub oldest: Option<Timestamp>,
    /// Latest creation time.
    pub newest: Option<Timestamp>,
    /// Sum of stored sizes of blob-backed entries (each entry counted, shared blobs too).
    pub blob_entry_bytes: u64,
    /// Sum of stored sizes of expired entries.
    pub expired_stored_bytes: u64,
    /// When the census was taken.
    pub now: Timestamp,
}

/// Age buckets: label and upper bound in milliseconds (exclusive).
pub const AGE_BUCKETS: [(&str, i64); 5] = [
    ("<1h", 3_600_000),
    ("1h-1d", 86_400_000),
    ("1d-7d", 7 * 86_400_000),
    ("7d-30d", 30 * 86_400_000),
    (">=30d", i64::MAX),
];

/// Raw size buckets: label and upper bound in bytes (exclusive).
pub const SIZE_BUCKETS: [(&str, u64); 5] = [
    ("<1 KiB", 1 << 10),
    ("1 KiB-1 MiB", 1 << 20),
    ("1-100 MiB", 100 << 20),
    ("100 MiB-1 GiB", 1 << 30),
    (">=1 GiB", u64::MAX),
];

impl Census {
    /// Reads every entry's metadata once, page by page.
    ///
    /// # Errors
    /// When the index cannot be read.
    pub async fn take(cache: &Cache) -> Result<Census> {
        let now = cache.store().now();
        let mut census = Census {
            now,
            ..Census::default()
        };
        let mut pages = cache.store().pages(EntryFilter::all(), 1000);
        while let Some(page) = pages.next_page().await? {
            for m in &page {
                census.add(m);
            }
        }
        Ok(census)
    }

    fn add(&mut self, m: &EntryMeta) {
        let expired = m.expires_at.is_some_and(|t| t <= self.now);
        self.total.add(m, expired);
        self.by_data_type
            .entry(m.data_type.as_str().to_owned())
            .or_default()
            .add(m, expired);
        self.by_namespace
            .entry(m.key.namespace().to_owned())
            .or_default()
            .add(m, expired);
        let age = self.now.0.saturating_sub(m.created_at.0);
        let a = AGE_BUCKETS.iter().position(|(_, bound)| age < *bound);
        self.by_age[a.unwrap_or(AGE_BUCKETS.len() - 1)].add(m, expired);
        let s = SIZE_BUCKETS
            .iter()
            .position(|(_, bound)| m.raw_size < *bound);
        self.by_size[s.unwrap_or(SIZE_BUCKETS.len() - 1)].add(m, expired);
        self.oldest = Some(self.oldest.map_or(m.created_at, |t| t.min(m.created_at)));
        self.newest = Some(self.newest.map_or(m.created_at, |t| t.max(m.created_at)));
        if expired {
            self.expired_stored_bytes += m.stored_size;
        }
        if matches!(m.location, Location::Blob(_)) {
            self.blob_entry_bytes += m.stored_size;
        }
    }

    /// The groups in output order: (group, bucket label, counts).
    pub fn groups(&self) -> Vec<(&'static str, String, Bucket)> {
        let mut rows = Vec::new();
        for (t, b) in &self.by_data_type {
            rows.push(("data_type", t.clone(), *b));
        }
        for (ns, b) in &self.by_namespace {
            rows.push(("namespace", ns.clone(), *b));
        }
        for ((label, _), b) in AGE_BUCKETS.iter().zip(&self.by_age) {
            rows.push(("age", (*label).to_owned(), *b));
        }
        for ((label, _), b) in SIZE_BUCKETS.iter().zip(&self.by_size) {
            rows.push(("size", (*label).to_owned(), *b));
        }
        rows
    }
}

/// Bytes that deduplication saves: what the blob-backed entries would occupy stored one by
/// one, minus what the blob store holds.
pub fn dedup_saved(census: &Census, stats: &IndexStats) -> u64 {
    census.blob_entry_bytes.saturating_sub(stats.blob_bytes)
}

/// `stored / raw` as a fraction (1.0 for an empty cache).
pub fn stored_ratio(stats: &IndexStats) -> f64 {
    if stats.raw_bytes == 0 {
        1.0
    } else {
        stats.stored_bytes as f64 / stats.raw_bytes as f64
    }
}

const GROUP_COLUMNS: &[Column] = &[
    Column::left("group", "GROUP"),
    Column::left("bucket", "BUCKET"),
    Column::right("entries", "ENTRIES"),
    Column::right("raw_bytes", "RAW"),
    Column::right("stored_bytes", "STORED"),
    Column::right("hits", "HITS"),
    Column::right("expired", "EXPIRED"),
];

fn group_cells(group: &str, bucket: &str, b: &Bucket) -> Vec<Cell> {
    vec![
        Cell::text(group),
        if group == "namespace" {
            super::list::namespace_cell(bucket)
        } else {
            Cell::text(bucket)
        },
        Cell::UInt(b.entries),
        Cell::Size(b.raw_bytes),
        Cell::Size(b.stored_bytes),
        Cell::UInt(b.hits),
        Cell::UInt(b.expired),
    ]
}

fn bucket_json(key: &str, label: &str, b: &Bucket) -> serde_json::Value {
    serde_json::json!({
        key: label,
        "entries": b.entries,
        "raw_bytes": b.raw_bytes,
        "stored_bytes": b.stored_bytes,
        "hits": b.hits,
        "expired": b.expired,
    })
}

/// Runs `cachet stats`.
///
/// # Errors
/// When the cache cannot be read or the output written.
pub async fn run(_args: StatsArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_cache().await?;
    let started = std::time::Instant::now();
    let stats = cache.index_stats().await?;
    let census = Census::take(&cache).await?;
    ctx.detail(format_args!(
        "read {} entries' metadata in {:.0?}",
        census.total.entries,
        started.elapsed()
    ));
    match ctx.format() {
        Format::Json => {
            let list = |key: &str, group: &str| -> Vec<serde_json::Value> {
                census
                    .groups()
                    .iter()
                    .filter(|(g, _, _)| *g == group)
                    .map(|(_, label, b)| bucket_json(key, label, b))
                    .collect()
            };
            let mut totals = totals_record(&stats, &census).to_json();
            totals["hits"] = census.total.hits.into();
            totals["expired"] = census.total.expired.into();
            let doc = serde_json::json!({
                "totals": totals,
                "by_data_type": list("data_type", "data_type"),
                "by_namespace": list("namespace", "namespace"),
                "by_age": list("age", "age"),
                "by_size": list("size", "size"),
            });
            crate::output::write_json(ctx.out(), &doc)?;
        }
        Format::Csv => {
            let mut rows = ctx.rows(GROUP_COLUMNS);
            rows.row(group_cells("total", "all", &census.total))?;
            for (group, label, b) in census.groups() {
                rows.row(group_cells(group, &label, &b))?;
            }
            rows.finish()?;
        }
        Format::Table => {
            let mut totals = totals_record(&stats, &census);
            totals.field("hits", "hits (recorded)", Cell::UInt(census.total.hits));
            totals.field("expired", "expired", Cell::UInt(census.total.expired));
            ctx.record(&totals)?;
            writeln!(ctx.out())?;
            let mut rows = ctx.rows(GROUP_COLUMNS);
            for (group, label, b) in census.groups() {
                rows.row(group_cells(group, &label, &b))?;
            }
            rows.finish()?;
        }
    }
    Ok(Outcome::Success)
}

/// Entries, sizes, compression and deduplication, as one record.
pub fn totals_record(s: &IndexStats, census: &Census) -> Record {
    let ratio = stored_ratio(s);
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
    r.field(
        "dedup_saved_bytes",
        "dedup saved",
        Cell::Size(dedup_saved(census, s)),
    );
    r
}

/// The totals of `cache` (for `demo`).
///
/// # Errors
/// When the index cannot be read.
pub async fn totals(cache: &Cache) -> Result<Record> {
    let stats = cache.index_stats().await?;
    let census = Census::take(cache).await?;
    Ok(totals_record(&stats, &census))
}
