//! `cachet cleanup`: delete expired entries and, with `--max-size`, evict the least recently
//! accessed entries until the cache fits a quota.
//!
//! Sizes count what the cache really occupies: every inline value's stored size, plus every
//! blob once however many entries share it. Evicting an entry frees its blob only when it was
//! the blob's last entry, and the plan accounts for that.
//!
//! The eviction plan is computed from one walk of the index (page by page) holding, for every
//! live entry, its access time, stored size, blob and key: about 100 bytes plus the key's
//! length per entry (a million entries: about 150 MB). The plan ends at an access time `T`;
//! the deletion is then one filtered delete of the entries last accessed before `T + 1 ms`
//! (atomic batches evaluated by the index), so an entry read after the walk, whose access time
//! moved past `T`, is kept. Entries with the same access time are evicted together.

use std::collections::HashMap;

use anyhow::Result;
use cachet::{EntryFilter, Store, Timestamp};

use crate::output::{Cell, Record};
use crate::progress::Bar;
use crate::{Context, Outcome};

const CLEANUP_HELP: &str = "\
First deletes every expired entry (in every namespace). With --max-size, it then reads the index
once and evicts the entries read least recently (ties go together) until the cache fits: the
size counts each inline value and each blob once, however many entries share it, and evicting
an entry frees its blob only with the blob's last entry. An entry read after that scan is kept.
Finally the garbage collector reclaims what is left of removed entries.

The scan holds about 100 bytes per entry (a million entries: about 150 MB). Access times are
recorded in batches, so a read in the last second may not count yet.

Examples:
  cachet cleanup                           # expired entries only
  cachet cleanup --max-size 10GB --dry-run # what would go, and the size after
  cachet -v cleanup --max-size 500MiB      # lists every key removed (on stderr)";

/// Arguments of `cachet cleanup`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = CLEANUP_HELP)]
pub struct CleanupArgs {
    /// After removing expired entries, evict the least recently accessed entries until the
    /// cache occupies at most this much (inline values plus blobs, each blob counted once):
    /// `500MB`, `10GiB`, `1.5TB`.
    #[arg(long, value_name = "SIZE", value_parser = crate::human::parse_size)]
    pub max_size: Option<u64>,
    /// Say what would be removed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What `cleanup` did or, in a dry run, would do.
#[derive(Debug, Default)]
pub struct CleanupOutcome {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Expired entries removed.
    pub expired_entries: u64,
    /// Their stored bytes (shared blobs counted per entry).
    pub expired_stored_bytes: u64,
    /// The keys of the expired entries removed.
    pub expired_keys: Vec<String>,
    /// The quota asked for, if any.
    pub max_size: Option<u64>,
    /// Bytes the live entries occupied before eviction (blobs once, inline values).
    pub size_before: u64,
    /// Entries evicted to fit the quota.
    pub evicted_entries: u64,
    /// Bytes the eviction frees (blobs no remaining entry shares, inline values).
    pub evicted_bytes: u64,
    /// The keys evicted, least recently accessed first.
    pub evicted_keys: Vec<String>,
    /// Bytes the live entries occupy afterwards.
    pub size_after: u64,
    /// Blobs the garbage collector deleted afterwards (0 in a dry run).
    pub gc_blobs_deleted: u64,
    /// Bytes those blobs occupied.
    pub gc_bytes_freed: u64,
}

/// One live entry, as the eviction plan needs it.
struct Candidate {
    accessed_at: i64,
    key: String,
    /// The blob's slot in [`Blobs`], or `None` for an inline value.
    blob: Option<u32>,
    /// Stored size of an inline value.
    inline_size: u64,
}

/// Blobs seen in the walk: size and how many live entries reference each.
#[derive(Default)]
struct Blobs {
    slots: HashMap<String, u32>,
    sizes: Vec<u64>,
    refs: Vec<u32>,
}

impl Blobs {
    fn add(&mut self, id: &str, size: u64) -> u32 {
        let next = self.sizes.len() as u32;
        let slot = *self.slots.entry(id.to_owned()).or_insert(next);
        if slot == next {
            self.sizes.push(size);
            self.refs.push(0);
        }
        self.refs[slot as usize] += 1;
        slot
    }
}

/// Runs cleanup on every namespace of `store`.
pub async fn cleanup(store: &Store, args: &CleanupArgs, progress: bool) -> Result<CleanupOutcome> {
    let mut outcome = CleanupOutcome {
        dry_run: args.dry_run,
        max_size: args.max_size,
        ..CleanupOutcome::default()
    };
    let now = store.now();

    // 1. Expired entries: matched and deleted in one statement per batch by the index.
    let expired = store
        .delete_where(&EntryFilter::all().expires_at_or_before(now), args.dry_run)
        .await?;
    outcome.expired_entries = expired.entries();
    outcome.expired_stored_bytes = expired.stored_bytes;
    outcome.expired_keys = expired.keys.iter().map(ToString::to_string).collect();

    // 2. The quota.
    if let Some(max_size) = args.max_size {
        evict(store, now, max_size, args.dry_run, progress, &mut outcome).await?;
    }

    // 3. Blobs of removed entries still under a writer's lease, crash leftovers.
    if !args.dry_run {
        let gc = store.gc().await?;
        outcome.gc_blobs_deleted = gc.blobs_deleted + gc.orphans_deleted;
        outcome.gc_bytes_freed = gc.bytes_freed;
    }
    Ok(outcome)
}

async fn evict(
    store: &Store,
    now: Timestamp,
    max_size: u64,
    dry_run: bool,
    progress: bool,
    outcome: &mut CleanupOutcome,
) -> Result<()> {
    let total = store.stats().await?.entries;
    let bar = Bar::new(progress, Some(total), "entries");
    bar.set_prefix("reading the index");
    let mut blobs = Blobs::default();
    let mut candidates = Vec::new();
    let mut seen = 0u64;
    let mut pages = store.pages(EntryFilter::all(), 1000);
    while let Some(page) = pages.next_page().await? {
        for meta in page {
            seen += 1;
            // In a dry run expired entries are still there: they do not count.
            if meta.expires_at.is_some_and(|at| at <= now) {
                continue;
            }
            let (blob, inline_size) = match meta.location.blob_id() {
                Some(id) => (Some(blobs.add(id.as_str(), meta.stored_size)), 0),
                None => (None, meta.stored_size),
            };
            candidates.push(Candidate {
                accessed_at: meta.accessed_at.as_millis(),
                key: meta.key.to_string(),
                blob,
                inline_size,
            });
        }
        bar.update(seen, String::new);
    }
    bar.finish();

    let mut used: u64 =
        candidates.iter().map(|c| c.inline_size).sum::<u64>() + blobs.sizes.iter().sum::<u64>();
    outcome.size_before = used;
    candidates.sort_unstable_by(|a, b| (a.accessed_at, &a.key).cmp(&(b.accessed_at, &b.key)));
    let mut cut = None;
    let mut i = 0;
    while used > max_size && i < candidates.len() {
        let at = candidates[i].accessed_at;
        while i < candidates.len() && candidates[i].accessed_at == at {
            let c = &candidates[i];
            let freed = match c.blob {
                None => c.inline_size,
                Some(slot) => {
                    let refs = &mut blobs.refs[slot as usize];
                    *refs -= 1;
                    if *refs == 0 {
                        blobs.sizes[slot as usize]
                    } else {
                        0
                    }
                }
            };
            used -= freed;
            outcome.evicted_bytes += freed;
            outcome.evicted_keys.push(c.key.clone());
            i += 1;
        }
        cut = Some(at);
    }
    outcome.evicted_entries = outcome.evicted_keys.len() as u64;
    outcome.size_after = used;

    if let (Some(at), false) = (cut, dry_run) {
        let filter = EntryFilter::all().accessed_before(Timestamp(at.saturating_add(1)));
        let deleted = store.delete_where(&filter, false).await?;
        // What was really deleted (an entry read since the walk was kept), in the plan's
        // order, then anything deleted that the plan did not name.
        let mut gone: std::collections::HashSet<String> =
            deleted.keys.iter().map(ToString::to_string).collect();
        outcome.evicted_keys.retain(|k| gone.remove(k));
        let mut extra: Vec<String> = gone.into_iter().collect();
        extra.sort();
        outcome.evicted_keys.extend(extra);
        outcome.evicted_entries = deleted.entries();
    }
    Ok(())
}

/// Keys for programs (the list), a count for people (listed on stderr with `-v`).
fn keys_cell(keys: &[String]) -> Cell {
    Cell::Custom {
        human: keys.len().to_string(),
        machine: keys
            .iter()
            .map(|k| serde_json::Value::from(k.as_str()))
            .collect(),
    }
}

/// Runs `cachet cleanup`.
///
/// # Errors
/// When the cache cannot be read or changed.
pub async fn run(args: CleanupArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_cache().await?;
    let outcome = cleanup(cache.store(), &args, !ctx.quiet()).await?;
    let verb = if outcome.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for key in &outcome.expired_keys {
        ctx.detail(format!("{verb} expired {key}"));
    }
    for key in &outcome.evicted_keys {
        ctx.detail(format!("{verb} {key} (least recently accessed)"));
    }
    let mut r = Record::new();
    r.field("dry_run", "dry run", Cell::Bool(outcome.dry_run));
    r.field(
        "expired_entries",
        "expired entries",
        Cell::UInt(outcome.expired_entries),
    );
    r.field(
        "expired_stored_bytes",
        "expired stored size",
        Cell::Size(outcome.expired_stored_bytes),
    );
    r.field(
        "expired_keys",
        "expired keys",
        keys_cell(&outcome.expired_keys),
    );
    if args.max_size.is_some() {
        r.field(
            "max_size",
            "quota",
            outcome.max_size.map_or(Cell::Null, Cell::Size),
        );
        r.field(
            "size_before",
            "size before",
            Cell::Size(outcome.size_before),
        );
        r.field(
            "evicted_entries",
            "evicted entries",
            Cell::UInt(outcome.evicted_entries),
        );
        r.field(
            "evicted_bytes",
            "evicted size",
            Cell::Size(outcome.evicted_bytes),
        );
        r.field(
            "evicted_keys",
            "evicted keys",
            keys_cell(&outcome.evicted_keys),
        );
        r.field("size_after", "size after", Cell::Size(outcome.size_after));
    }
    if !outcome.dry_run {
        r.field(
            "gc_blobs_deleted",
            "gc blobs deleted",
            Cell::UInt(outcome.gc_blobs_deleted),
        );
        r.field(
            "gc_bytes_freed",
            "gc bytes freed",
            Cell::Size(outcome.gc_bytes_freed),
        );
    }
    ctx.record(&r)?;
    // The note comes after the report, on a terminal too.
    ctx.out().flush()?;
    if outcome.dry_run {
        ctx.info("dry run: nothing was changed (-v lists the keys)");
    }
    Ok(Outcome::Success)
}
