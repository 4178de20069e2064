//! `cachet verify`, `cachet repair` and `cachet gc`: consistency checks and their fixes
//! (`Store::verify`, `Store::repair`, `Store::gc`; docs/VERIFY.md says what is checked).

use anyhow::Result;
use cachet::cachet_storage::VerifyPhase;
use cachet::{
    EntryFilter, Problem, ProblemKind, RepairOptions, Store, VerifyOptions, VerifyProgress,
    VerifyReport,
};

use crate::output::{Cell, Column, Record};
use crate::progress::Bar;
use crate::{Context, Outcome};

/// Which entries to check (all by default).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CheckScope {
    /// Only entries of this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only keys (ids) starting with this prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Check that every blob exists with its recorded size instead of reading every value
    /// (one metadata request per blob: much faster, finds missing and truncated blobs but
    /// not flipped bytes).
    #[arg(long)]
    pub quick: bool,
    /// Do not list the blob store for blobs no entry references.
    #[arg(long)]
    pub no_orphans: bool,
    /// Values read at once (more helps with a remote blob store).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: u64,
}

impl CheckScope {
    fn options(&self) -> VerifyOptions {
        let mut filter = EntryFilter::all();
        filter.namespace = self.namespace.clone();
        filter.id_prefix = self.prefix.clone();
        VerifyOptions::default()
            .with_filter(filter)
            .with_read_values(!self.quick)
            .with_find_orphans(!self.no_orphans)
            .with_concurrency(self.concurrency as usize)
    }
}

/// Arguments of `cachet verify`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = VERIFY_HELP)]
pub struct VerifyArgs {
    /// What to check.
    #[command(flatten)]
    pub scope: CheckScope,
}

const VERIFY_HELP: &str = "\
Every entry is checked as a read would check it: its signature (signed caches), its expiry, and
its value read in full (frame checksums, container structure, size, content digest). Then the
blob store is listed for blobs no entry references. Nothing is changed; `cachet repair` removes
what verify finds.

Each problem is printed with the entry's key and the reason:
  missing-blob   the entry's blob is not in the blob store
  corrupt        the stored value fails a check (a flipped byte, a truncated blob...)
  tampered       signature or signed digest mismatch (signed caches)
  expired        the entry has expired (`cachet cleanup` removes it)
  unreferenced   a blob no entry references (a crash leftover, or a write in progress)

Output: one line per problem (kind, key, reason; -v adds the blob); with --format json one
object per line, with --format csv one record each. The summary (entries, bytes read, counts)
goes to stderr, so a sound cache prints no rows.

Exit status: 0 when no entry is damaged, 1 when an entry is missing its blob, corrupt or
tampered (expired entries and unreferenced blobs are housekeeping, listed but not failures),
2 for bad arguments.";

/// Arguments of `cachet repair`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = REPAIR_HELP)]
pub struct RepairArgs {
    /// What to check.
    #[command(flatten)]
    pub scope: CheckScope,
    /// Say what would be removed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

const REPAIR_HELP: &str = "\
Runs verify's scan, then deletes every entry found missing its blob, corrupt, tampered or
expired, and reclaims the blobs no entry references any more through the garbage collector's
protocol (a blob a writer has just published is kept until its lease ends). An entry
rewritten since it was checked is left alone. Run verify again afterwards to see what is left.";

/// Arguments of `cachet gc`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Deletes blobs no entry references once no writer's lease protects them, blobs the index never
registered (crash leftovers) and abandoned temporary uploads. Safe while other processes read
and write the cache (docs/GC.md).")]
pub struct GcArgs {}

/// One problem, for output.
#[derive(Debug)]
pub struct ProblemRow {
    /// `missing-blob`, `corrupt`, `tampered`, `expired`, `unreferenced`.
    pub kind: &'static str,
    /// The entry's key (`namespace/id`, or `id` in the default namespace); empty for a blob.
    pub key: String,
    /// The blob concerned, if any.
    pub blob: Option<String>,
    /// Why.
    pub reason: String,
}

/// The kind's name in output.
pub fn kind_name(kind: ProblemKind) -> &'static str {
    match kind {
        ProblemKind::MissingBlob => "missing-blob",
        ProblemKind::Corrupt => "corrupt",
        ProblemKind::Tampered => "tampered",
        ProblemKind::Expired => "expired",
        ProblemKind::UnreferencedBlob => "unreferenced",
        _ => "other",
    }
}

/// Whether a problem kind is damage (makes `verify` fail) rather than housekeeping.
pub fn is_damage(kind: ProblemKind) -> bool {
    matches!(
        kind,
        ProblemKind::MissingBlob | ProblemKind::Corrupt | ProblemKind::Tampered
    )
}

impl ProblemRow {
    fn of(problem: &Problem) -> ProblemRow {
        ProblemRow {
            kind: kind_name(problem.kind()),
            key: problem.key().map(ToString::to_string).unwrap_or_default(),
            blob: problem.blob().map(ToString::to_string),
            reason: problem.to_string(),
        }
    }
}

/// What verify found, for output.
#[derive(Debug)]
pub struct VerifyOutcome {
    /// No entry is damaged (expired entries and unreferenced blobs may remain).
    pub ok: bool,
    /// Entries examined.
    pub entries_checked: u64,
    /// Values read in full and found sound.
    pub values_read: u64,
    /// Stored bytes read.
    pub bytes_checked: u64,
    /// Blobs listed.
    pub blobs_listed: u64,
    /// Damaged entries (missing blob, corrupt, tampered).
    pub damaged: u64,
    /// Expired entries.
    pub expired: u64,
    /// Blobs no entry references.
    pub unreferenced_blobs: u64,
    /// Seconds the scan took.
    pub seconds: f64,
    /// Every problem, entries in key order then blobs.
    pub problems: Vec<ProblemRow>,
}

impl VerifyOutcome {
    fn of(report: &VerifyReport, seconds: f64) -> VerifyOutcome {
        let damaged = report
            .problems
            .iter()
            .filter(|p| is_damage(p.kind()))
            .count() as u64;
        VerifyOutcome {
            ok: damaged == 0,
            entries_checked: report.entries_checked,
            values_read: report.values_read,
            bytes_checked: report.bytes_checked,
            blobs_listed: report.blobs_listed,
            damaged,
            expired: report.count(ProblemKind::Expired),
            unreferenced_blobs: report.count(ProblemKind::UnreferencedBlob),
            seconds,
            problems: report.problems.iter().map(ProblemRow::of).collect(),
        }
    }
}

/// What repair did, for output.
#[derive(Debug)]
pub struct RepairOutcome {
    /// Nothing was changed: the counts say what a real run would remove.
    pub dry_run: bool,
    /// Broken or expired entries removed.
    pub entries_removed: u64,
    /// Entries found broken but rewritten or deleted by someone else meanwhile (left alone).
    pub entries_changed: u64,
    /// Blobs deleted (a dry run's count is an upper bound: leases are not known ahead).
    pub blobs_removed: u64,
    /// Bytes those blobs occupied.
    pub bytes_freed: u64,
    /// What the scan found.
    pub found: VerifyOutcome,
}

/// The progress bar of a scan: entries against the index's total, then the other phases.
struct ScanBar {
    bar: Bar,
    phase: Option<VerifyPhase>,
}

impl ScanBar {
    fn new(enabled: bool, total: u64) -> ScanBar {
        ScanBar {
            bar: Bar::new(enabled, Some(total), "entries"),
            phase: None,
        }
    }

    fn update(&mut self, p: &VerifyProgress) {
        if self.phase != Some(p.phase) {
            self.phase = Some(p.phase);
            self.bar.set_prefix(match p.phase {
                VerifyPhase::CheckingEntries => "checking",
                VerifyPhase::ListingBlobs => "listing blobs",
                VerifyPhase::RemovingEntries => "removing entries",
                VerifyPhase::ReclaimingBlobs => "reclaiming blobs",
                _ => "working",
            });
        }
        self.bar.update(p.entries_checked, || {
            format!(
                "{} read, {} problems, {} blobs listed",
                crate::human::format_size(p.bytes_checked),
                p.problems,
                p.blobs_listed
            )
        });
    }
}

/// Runs `verify`.
pub async fn verify(store: &Store, args: &VerifyArgs, progress: bool) -> Result<VerifyOutcome> {
    let options = args.scope.options();
    let total = store.stats().await?.entries;
    let mut bar = ScanBar::new(progress, total);
    let started = std::time::Instant::now();
    let report = store.verify(&options, |p| bar.update(p)).await?;
    bar.bar.finish();
    Ok(VerifyOutcome::of(&report, started.elapsed().as_secs_f64()))
}

/// Runs `repair`.
pub async fn repair(store: &Store, args: &RepairArgs, progress: bool) -> Result<RepairOutcome> {
    let options = RepairOptions::default()
        .with_verify(args.scope.options())
        .with_dry_run(args.dry_run);
    let total = store.stats().await?.entries;
    let mut bar = ScanBar::new(progress, total);
    let started = std::time::Instant::now();
    let report = store.repair(&options, |p| bar.update(p)).await?;
    bar.bar.finish();
    Ok(RepairOutcome {
        dry_run: report.dry_run,
        entries_removed: report.entries_removed,
        entries_changed: report.entries_changed,
        blobs_removed: report.blobs_removed,
        bytes_freed: report.bytes_freed,
        found: VerifyOutcome::of(&report.found, started.elapsed().as_secs_f64()),
    })
}

/// What gc did, for output.
#[derive(Debug)]
pub struct GcOutcome {
    /// Registered blobs no entry referenced, deleted.
    pub blobs_deleted: u64,
    /// Blobs without any registration (crash leftovers), deleted.
    pub orphans_deleted: u64,
    /// Abandoned temporary uploads removed.
    pub temporaries_removed: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
}

/// Runs `gc`.
pub async fn gc(store: &Store) -> Result<GcOutcome> {
    let report = store.gc().await?;
    Ok(GcOutcome {
        blobs_deleted: report.blobs_deleted,
        orphans_deleted: report.orphans_deleted,
        temporaries_removed: report.temporaries_removed,
        bytes_freed: report.bytes_freed,
    })
}

const PROBLEM_COLUMNS: &[Column] = &[
    Column::left("kind", "PROBLEM"),
    Column::left("key", "KEY"),
    Column::left("blob", "BLOB").verbose(),
    Column::left("reason", "REASON"),
];

fn summary(found: &VerifyOutcome) -> String {
    format!(
        "checked {} entries ({} values, {} read) and {} blobs in {}: {} damaged, {} expired, {} \
         unreferenced blobs",
        found.entries_checked,
        found.values_read,
        crate::human::format_size(found.bytes_checked),
        found.blobs_listed,
        crate::human::format_duration_ms((found.seconds * 1000.0) as i64),
        found.damaged,
        found.expired,
        found.unreferenced_blobs
    )
}

/// Runs `cachet verify`.
///
/// # Errors
/// When the cache cannot be read (a failure that is not about the data).
pub async fn run_verify(args: VerifyArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_cache().await?;
    let found = verify(cache.store(), &args, !ctx.quiet()).await?;
    // A table of nothing is noise: people read the summary.
    if !found.problems.is_empty() || ctx.format() != crate::Format::Table {
        let mut rows = ctx.rows(PROBLEM_COLUMNS);
        for p in &found.problems {
            rows.row(vec![
                Cell::text(p.kind),
                Cell::text(p.key.clone()),
                Cell::opt_text(p.blob.clone()),
                Cell::text(p.reason.clone()),
            ])?;
        }
        rows.finish()?;
    }
    ctx.info(summary(&found));
    Ok(if found.ok {
        Outcome::Success
    } else {
        Outcome::Problems(format!(
            "{} damaged entries found (`cachet repair` removes them)",
            found.damaged
        ))
    })
}

/// Runs `cachet repair`.
///
/// # Errors
/// When the cache cannot be read or changed.
pub async fn run_repair(args: RepairArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_cache().await?;
    let done = repair(cache.store(), &args, !ctx.quiet()).await?;
    let verb = if done.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for p in &done.found.problems {
        let what = if p.key.is_empty() { "blob" } else { "entry" };
        ctx.info(format!("{verb} {} {what}: {}", p.kind, p.reason));
    }
    ctx.detail(summary(&done.found));
    let problems = Cell::Custom {
        human: done.found.problems.len().to_string(),
        machine: done
            .found
            .problems
            .iter()
            .map(|p| {
                serde_json::json!({
                    "kind": p.kind, "key": p.key, "blob": p.blob, "reason": p.reason,
                })
            })
            .collect(),
    };
    let mut r = Record::new();
    r.field("dry_run", "dry run", Cell::Bool(done.dry_run));
    r.field(
        "entries_checked",
        "entries checked",
        Cell::UInt(done.found.entries_checked),
    );
    r.field("problems", "problems found", problems);
    r.field(
        "entries_removed",
        "entries removed",
        Cell::UInt(done.entries_removed),
    );
    r.field(
        "entries_changed",
        "entries changed meanwhile (kept)",
        Cell::UInt(done.entries_changed),
    );
    r.field(
        "blobs_removed",
        "blobs removed",
        Cell::UInt(done.blobs_removed),
    );
    r.field("bytes_freed", "bytes freed", Cell::Size(done.bytes_freed));
    ctx.record(&r)?;
    // The note comes after the report, on a terminal too.
    ctx.out().flush()?;
    if done.dry_run {
        ctx.info("dry run: nothing was changed");
    }
    Ok(Outcome::Success)
}

/// Runs `cachet gc`.
///
/// # Errors
/// When the cache cannot be read or changed.
pub async fn run_gc(_args: GcArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_cache().await?;
    let done = gc(cache.store()).await?;
    let mut r = Record::new();
    r.field(
        "blobs_deleted",
        "unreferenced blobs deleted",
        Cell::UInt(done.blobs_deleted),
    );
    r.field(
        "orphans_deleted",
        "unregistered blobs deleted",
        Cell::UInt(done.orphans_deleted),
    );
    r.field(
        "temporaries_removed",
        "temporary uploads removed",
        Cell::UInt(done.temporaries_removed),
    );
    r.field("bytes_freed", "bytes freed", Cell::Size(done.bytes_freed));
    ctx.record(&r)?;
    Ok(Outcome::Success)
}
