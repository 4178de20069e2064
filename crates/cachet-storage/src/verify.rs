//! Verification and repair of a whole store: entries whose blob is missing, values that fail
//! their checks, entries that fail signature verification, expired entries and blobs that no
//! entry references; `repair` removes them. Both stream over the index in pages and over the
//! blob store listing in batches, so memory is bounded by a page plus the problems found.
//! `docs/VERIFY.md` describes the semantics.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use cachet_core::{
    BlobId, BlobInfo, ByteStream, CacheKey, EntryFilter, EntryMeta, EntryRecord, Error, Location,
    Result, Timestamp,
};
use futures_util::StreamExt;

use crate::reader::ValueReader;
use crate::store::Store;

/// Entries listed per index round trip.
const VERIFY_PAGE: usize = 500;
/// Entries whose checks run as one group: their inline data is fetched in one round trip
/// (inline containers are at most 1 MiB, so a group holds at most 64 MiB, usually under 1).
const CHECK_GROUP: usize = 64;
/// Blob ids per reference-count round trip, and blobs claimed per collection round trip.
const BLOB_BATCH: usize = 256;
/// Entries re-read and deleted per round trip by `repair`.
const REPAIR_BATCH: usize = 256;

/// What [`Store::verify`] checks.
///
/// ```
/// use cachet_core::EntryFilter;
/// use cachet_storage::VerifyOptions;
///
/// // Only check that blobs exist with their recorded sizes, in one namespace, without looking
/// // for unreferenced blobs.
/// let quick = VerifyOptions::default()
///     .with_read_values(false)
///     .with_find_orphans(false)
///     .with_filter(EntryFilter::all().namespace("models"));
/// assert!(!quick.read_values);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Read every value in full and apply every check a read applies: frame checksums, the
    /// container structure, the whole-content hash, the recorded size and digest, and (with
    /// signing on) the SHA-256 digest. Default `true`.
    ///
    /// With `false`, a blob entry costs one `head` request: the blob must exist with the
    /// entry's recorded stored size. A blob of another size is then read in full, because it
    /// may be another valid encoding of the same content (two entries with the same content
    /// written with different compression share one blob) rather than damage. Inline values
    /// are not read. Signatures and expiry are checked either way.
    pub read_values: bool,
    /// List the blob store and report blobs that no entry references. Default `true`.
    /// This covers the whole blob store whatever the `filter` (blobs belong to no namespace).
    pub find_orphans: bool,
    /// Which entries to check (default: all).
    pub filter: EntryFilter,
    /// How many values are read at once (default 4). Memory grows by about two frames per
    /// value in flight; more helps with a remote blob store's latency.
    pub concurrency: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            read_values: true,
            find_orphans: true,
            filter: EntryFilter::all(),
            concurrency: 4,
        }
    }
}

impl VerifyOptions {
    /// Whether to read and check every value (see [`read_values`](Self::read_values)).
    pub fn with_read_values(mut self, read: bool) -> Self {
        self.read_values = read;
        self
    }

    /// Whether to look for blobs no entry references.
    pub fn with_find_orphans(mut self, find: bool) -> Self {
        self.find_orphans = find;
        self
    }

    /// Only check entries matching `filter`.
    pub fn with_filter(mut self, filter: EntryFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Reads up to `values` values at once (at least 1).
    pub fn with_concurrency(mut self, values: usize) -> Self {
        self.concurrency = values;
        self
    }

    /// Refuses options that cannot be applied, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::config(
                "concurrency",
                "must be at least 1 (the number of values read at once)",
            ));
        }
        self.filter.validate()
    }
}

/// What [`Store::repair`] does.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RepairOptions {
    /// The scan that finds the problems (the same as [`Store::verify`]'s).
    pub verify: VerifyOptions,
    /// Report what would be removed and change nothing. Default `false`.
    pub dry_run: bool,
}

impl RepairOptions {
    /// Sets the scan's options.
    pub fn with_verify(mut self, verify: VerifyOptions) -> Self {
        self.verify = verify;
        self
    }

    /// Only report what would be removed.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// One thing wrong with a store. Entry problems carry the entry's metadata as it was when it
/// was checked.
#[derive(Debug)]
#[non_exhaustive]
pub enum Problem {
    /// The entry's blob is not in the blob store.
    MissingBlob {
        /// The entry.
        entry: Box<EntryMeta>,
        /// The blob it points at.
        blob: BlobId,
    },
    /// The entry's stored value fails a check (container structure, frame checksum,
    /// truncation, whole-content hash, or the size or digest recorded in the index): an
    /// `Error::Corrupt`.
    Corrupt {
        /// The entry.
        entry: Box<EntryMeta>,
        /// The check that failed.
        error: Error,
    },
    /// With signing on: the entry is unsigned or its signature does not match, or its content
    /// does not match its signed SHA-256 digest: an `Error::Tampered`.
    Tampered {
        /// The entry.
        entry: Box<EntryMeta>,
        /// Why verification failed.
        error: Error,
    },
    /// The entry expired at or before the time it was checked (its value is not read).
    Expired {
        /// The entry (`expires_at` says when it expired).
        entry: Box<EntryMeta>,
    },
    /// A blob in the blob store that no entry referenced when it was checked: a leftover (a
    /// crash, a deleted entry whose blob was not reclaimed yet) or a blob that a writer has
    /// just published and not yet committed; `repair` removes it only once no writer's lease
    /// protects it (see `docs/GC.md`).
    UnreferencedBlob {
        /// The blob.
        blob: BlobId,
        /// Its size according to the blob store.
        size: u64,
    },
}

/// The kinds of [`Problem`], for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// [`Problem::MissingBlob`].
    MissingBlob,
    /// [`Problem::Corrupt`].
    Corrupt,
    /// [`Problem::Tampered`].
    Tampered,
    /// [`Problem::Expired`].
    Expired,
    /// [`Problem::UnreferencedBlob`].
    UnreferencedBlob,
}

impl Problem {
    /// What kind of problem this is.
    pub fn kind(&self) -> ProblemKind {
        match self {
            Problem::MissingBlob { .. } => ProblemKind::MissingBlob,
            Problem::Corrupt { .. } => ProblemKind::Corrupt,
            Problem::Tampered { .. } => ProblemKind::Tampered,
            Problem::Expired { .. } => ProblemKind::Expired,
            Problem::UnreferencedBlob { .. } => ProblemKind::UnreferencedBlob,
        }
    }

    /// The entry concerned (`None` for a blob problem).
    pub fn entry(&self) -> Option<&EntryMeta> {
        match self {
            Problem::MissingBlob { entry, .. }
            | Problem::Corrupt { entry, .. }
            | Problem::Tampered { entry, .. }
            | Problem::Expired { entry } => Some(entry),
            Problem::UnreferencedBlob { .. } => None,
        }
    }

    /// The key of the entry concerned (`None` for a blob problem).
    pub fn key(&self) -> Option<&CacheKey> {
        self.entry().map(|entry| &entry.key)
    }

    /// The blob concerned: the unreferenced blob, or the entry's blob (`None` for an inline
    /// entry).
    pub fn blob(&self) -> Option<&BlobId> {
        match self {
            Problem::UnreferencedBlob { blob, .. } | Problem::MissingBlob { blob, .. } => {
                Some(blob)
            }
            other => other.entry().and_then(|e| e.location.blob_id()),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingBlob { entry, blob } => write!(
                f,
                "entry {}: its blob {blob} is missing from the blob store",
                entry.key
            ),
            Problem::Corrupt { error, .. } | Problem::Tampered { error, .. } => {
                write!(f, "{error}")
            }
            Problem::Expired { entry } => match entry.expires_at {
                Some(at) => write!(f, "entry {} expired at {at}", entry.key),
                None => write!(f, "entry {} expired", entry.key),
            },
            Problem::UnreferencedBlob { blob, size } => {
                write!(f, "blob {blob} ({size} bytes) is referenced by no entry")
            }
        }
    }
}

/// What [`Store::verify`] found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Entries examined (signature, expiry and value or blob checks).
    pub entries_checked: u64,
    /// Entries whose value was read in full and passed every check.
    pub values_read: u64,
    /// Stored bytes read and verified (inline and blob containers).
    pub bytes_checked: u64,
    /// Blobs listed in the blob store (0 without `find_orphans`).
    pub blobs_listed: u64,
    /// Every problem found: entry problems in key order, then unreferenced blobs.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// How many problems of one kind were found.
    pub fn count(&self, kind: ProblemKind) -> u64 {
        self.problems.iter().filter(|p| p.kind() == kind).count() as u64
    }

    /// The problems of one kind.
    pub fn of_kind(&self, kind: ProblemKind) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(move |p| p.kind() == kind)
    }
}

/// The step a verification or repair is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum VerifyPhase {
    /// Checking the entries of the index, page by page.
    #[default]
    CheckingEntries,
    /// Listing the blob store for unreferenced blobs.
    ListingBlobs,
    /// (repair) Removing broken and expired entries.
    RemovingEntries,
    /// (repair) Deleting unreferenced blobs and the blobs of removed entries.
    ReclaimingBlobs,
}

/// How far a verification or repair has got, passed to its progress callback after every
/// entry checked, every batch of blobs listed and every batch removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct VerifyProgress {
    /// The current step.
    pub phase: VerifyPhase,
    /// Entries examined so far.
    pub entries_checked: u64,
    /// Stored bytes read and verified so far.
    pub bytes_checked: u64,
    /// Blobs listed so far.
    pub blobs_listed: u64,
    /// Problems found so far.
    pub problems: u64,
    /// (repair) Entries removed so far.
    pub entries_removed: u64,
    /// (repair) Blobs deleted so far.
    pub blobs_removed: u64,
}

/// What [`Store::repair`] did (or, in a dry run, would do).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RepairReport {
    /// What the scan found.
    pub found: VerifyReport,
    /// Nothing was changed; the counts below say what a real run would remove.
    pub dry_run: bool,
    /// Broken or expired entries removed.
    pub entries_removed: u64,
    /// Entries found broken that were rewritten or deleted by someone else before repair got
    /// to them, and so were left alone.
    pub entries_changed: u64,
    /// Blobs deleted: unreferenced blobs, and blobs only removed entries referenced. A blob
    /// under a writer's lease is kept (a dry run cannot know that, so its count is an upper
    /// bound).
    pub blobs_removed: u64,
    /// Bytes those blobs occupied.
    pub bytes_freed: u64,
}

/// The outcome of checking one entry.
enum Verdict {
    /// Every check passed; `read` says whether the value was read, `bytes` how many stored
    /// bytes were.
    Healthy {
        read: bool,
        bytes: u64,
    },
    Problem(Problem),
    /// The entry was rewritten or deleted while it was being checked: nothing to report.
    Changed,
}

impl Store {
    /// Checks every entry of the store (or those matching `options.filter`) and, with
    /// `find_orphans`, every blob, and reports what is wrong: entries whose blob is missing,
    /// values that fail their checks (corrupt), entries that fail signature verification
    /// (tampered), expired entries, and blobs that no entry references. Changes nothing.
    ///
    /// The index is read in pages and values are streamed, so memory stays bounded by a page
    /// (500 entries), the values in flight (`concurrency`, about two frames each) and the
    /// problems found. A failure that is not about the data (an unreachable service, an I/O
    /// error) stops the scan and is returned; run it again. An entry that is rewritten or
    /// deleted while it is checked is not reported.
    ///
    /// `progress` is called after every entry and every batch of blobs listed.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use bytes::Bytes;
    /// use std::time::Duration;
    /// use cachet_core::{BlobBackend, CacheKey, Compression, ManualClock, Timestamp};
    /// use cachet_core::memory::{MemoryBlobs, MemoryMetadata};
    /// use cachet_storage::{ProblemKind, PutOptions, RepairOptions, Store, StoreConfig, VerifyOptions};
    ///
    /// let blobs = MemoryBlobs::new();
    /// let clock = ManualClock::new(Timestamp::now());
    /// // Uncompressed, so that these values are too large to be stored inline.
    /// let config = StoreConfig::default()
    ///     .with_compression(Compression::None)
    ///     .with_clock(Arc::new(clock.clone()));
    /// let store = Store::new(Arc::new(MemoryMetadata::new()), Arc::new(blobs.clone()), config)?;
    /// let (good, bad) = (CacheKey::explicit("", "good")?, CacheKey::explicit("", "bad")?);
    /// store.put_bytes(&good, &[1u8; 100_000], PutOptions::default()).await?;
    /// let meta = store.put_bytes(&bad, &[2u8; 100_000], PutOptions::default()).await?;
    ///
    /// // Damage the second entry's blob.
    /// let blob = meta.location.blob_id().unwrap();
    /// blobs.delete(blob).await?;
    /// blobs.put(blob, Bytes::from_static(b"garbage")).await?;
    ///
    /// let report = store.verify(&VerifyOptions::default(), |_| {}).await?;
    /// assert_eq!(report.count(ProblemKind::Corrupt), 1);
    /// assert_eq!(report.problems[0].key(), Some(&bad));
    ///
    /// // Repair keeps a blob while a writer's lease may protect it (60 s after its write).
    /// clock.advance(Duration::from_secs(61));
    /// let repaired = store.repair(&RepairOptions::default(), |_| {}).await?;
    /// assert_eq!((repaired.entries_removed, repaired.blobs_removed), (1, 1));
    /// assert!(store.verify(&VerifyOptions::default(), |_| {}).await?.is_clean());
    /// assert!(store.get_bytes(&good).await?.is_some());
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub async fn verify(
        &self,
        options: &VerifyOptions,
        mut progress: impl FnMut(&VerifyProgress),
    ) -> Result<VerifyReport> {
        options.validate()?;
        let mut report = VerifyReport::default();
        self.check_entries(options, &mut report, &mut progress)
            .await?;
        if options.find_orphans {
            self.find_unreferenced_blobs(&mut report, &mut progress)
                .await?;
        }
        tracing::info!(
            entries = report.entries_checked,
            bytes = report.bytes_checked,
            blobs = report.blobs_listed,
            problems = report.problems.len(),
            "verify finished"
        );
        Ok(report)
    }

    /// Runs [`verify`](Self::verify)'s scan, then removes what it found: entries whose blob is
    /// missing, corrupt and tampered entries, expired entries, and unreferenced blobs (plus
    /// the blobs that only removed entries referenced). With `dry_run`, changes nothing and
    /// reports what it would remove.
    ///
    /// Safe while other processes use the store:
    /// - an entry is removed only if it is still exactly the entry that was found broken
    ///   (re-read in batches just before the delete; access statistics aside), so an entry
    ///   rewritten since the scan survives (counted in
    ///   [`entries_changed`](RepairReport::entries_changed)). The index has no conditional
    ///   delete, so a rewrite landing between that re-read and the delete is lost: a cache
    ///   miss, never wrong data;
    /// - blobs are deleted through the collector's protocol (`docs/GC.md`): a blob is claimed
    ///   only while no entry references it and no writer's lease protects it (a blob a writer
    ///   has published but not yet committed is kept), so no entry is ever left pointing at a
    ///   deleted blob. Healthy entries sharing a blob with a removed entry keep it.
    ///
    /// `progress` is called as for `verify`, then after every batch removed.
    pub async fn repair(
        &self,
        options: &RepairOptions,
        mut progress: impl FnMut(&VerifyProgress),
    ) -> Result<RepairReport> {
        let found = self.verify(&options.verify, &mut progress).await?;
        let mut state = VerifyProgress {
            phase: VerifyPhase::RemovingEntries,
            entries_checked: found.entries_checked,
            bytes_checked: found.bytes_checked,
            blobs_listed: found.blobs_listed,
            problems: found.problems.len() as u64,
            ..VerifyProgress::default()
        };
        let broken: Vec<&EntryMeta> = found.problems.iter().filter_map(Problem::entry).collect();
        let unreferenced: Vec<(BlobId, u64)> = found
            .problems
            .iter()
            .filter_map(|p| match p {
                Problem::UnreferencedBlob { blob, size } => Some((blob.clone(), *size)),
                _ => None,
            })
            .collect();
        let mut report = RepairReport {
            dry_run: options.dry_run,
            ..RepairReport::default()
        };

        if options.dry_run {
            report.entries_removed = broken.len() as u64;
            let missing: HashSet<&BlobId> = found
                .of_kind(ProblemKind::MissingBlob)
                .filter_map(Problem::blob)
                .collect();
            let freed = self.blobs_referenced_only_by(&broken).await?;
            for (_, size) in freed.iter().filter(|(id, _)| !missing.contains(id)) {
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
            report.blobs_removed += unreferenced.len() as u64;
            report.bytes_freed += unreferenced.iter().map(|(_, size)| size).sum::<u64>();
            report.found = found;
            return Ok(report);
        }

        // Remove the broken entries that are still the ones found broken.
        let meta = self.metadata_backend();
        let mut freed: Vec<(BlobId, u64)> = Vec::new();
        for batch in broken.chunks(REPAIR_BATCH) {
            let keys: Vec<CacheKey> = batch.iter().map(|m| m.key.clone()).collect();
            let current = meta.get_meta_many(&keys).await?;
            let doomed: Vec<CacheKey> = batch
                .iter()
                .zip(&current)
                .filter(|(found, now)| now.as_ref().is_some_and(|now| same_version(found, now)))
                .map(|(found, _)| found.key.clone())
                .collect();
            report.entries_changed += (batch.len() - doomed.len()) as u64;
            if doomed.is_empty() {
                continue;
            }
            let removed = meta.delete_many(&doomed).await?;
            for old in removed.into_iter().flatten() {
                report.entries_removed += 1;
                if let Some(id) = old.location.blob_id() {
                    freed.push((id.clone(), old.stored_size));
                }
            }
            state.entries_removed = report.entries_removed;
            progress(&state);
        }

        // Reclaim the blobs only removed entries referenced, then the unreferenced ones.
        state.phase = VerifyPhase::ReclaimingBlobs;
        freed.sort();
        freed.dedup_by(|a, b| a.0 == b.0);
        for batch in freed
            .chunks(BLOB_BATCH)
            .chain(unreferenced.chunks(BLOB_BATCH))
        {
            let (count, bytes) = self.reclaim_candidates(batch).await?;
            report.blobs_removed += count;
            report.bytes_freed += bytes;
            state.blobs_removed = report.blobs_removed;
            progress(&state);
        }
        tracing::info!(
            entries_removed = report.entries_removed,
            entries_changed = report.entries_changed,
            blobs_removed = report.blobs_removed,
            bytes_freed = report.bytes_freed,
            "repair finished"
        );
        report.found = found;
        Ok(report)
    }

    /// Pages through the index and checks every matching entry.
    async fn check_entries(
        &self,
        options: &VerifyOptions,
        report: &mut VerifyReport,
        progress: &mut impl FnMut(&VerifyProgress),
    ) -> Result<()> {
        let mut state = VerifyProgress::default();
        let mut pages = self.pages(options.filter.clone(), VERIFY_PAGE);
        while let Some(page) = pages.next_page().await? {
            let now = self.now();
            let mut page = page.into_iter().peekable();
            while page.peek().is_some() {
                let group: Vec<EntryMeta> = page.by_ref().take(CHECK_GROUP).collect();
                let items = self.with_inline_data(group, options, now).await?;
                let mut verdicts = futures_util::stream::iter(items)
                    .map(|(meta, inline)| self.check_entry(meta, inline, options, now))
                    .buffered(options.concurrency);
                while let Some(verdict) = verdicts.next().await {
                    match verdict? {
                        Verdict::Healthy { read, bytes } => {
                            report.entries_checked += 1;
                            report.values_read += u64::from(read);
                            report.bytes_checked += bytes;
                        }
                        Verdict::Problem(problem) => {
                            report.entries_checked += 1;
                            if problem.kind() == ProblemKind::Expired {
                                tracing::debug!(%problem, "verify found an expired entry");
                            } else {
                                tracing::warn!(%problem, "verify found a problem");
                            }
                            report.problems.push(problem);
                        }
                        Verdict::Changed => continue,
                    }
                    state.entries_checked = report.entries_checked;
                    state.bytes_checked = report.bytes_checked;
                    state.problems = report.problems.len() as u64;
                    progress(&state);
                }
            }
        }
        Ok(())
    }

    /// Pairs each listed entry with its inline data, fetched in one round trip for the inline
    /// entries whose value will be read (their current record: an entry deleted since it was
    /// listed is dropped, one rewritten is checked as it is now).
    async fn with_inline_data(
        &self,
        group: Vec<EntryMeta>,
        options: &VerifyOptions,
        now: Timestamp,
    ) -> Result<Vec<(EntryMeta, Option<Bytes>)>> {
        let wanted = |m: &EntryMeta| {
            options.read_values && m.location == Location::Inline && !is_expired(m, now)
        };
        let keys: Vec<CacheKey> = group
            .iter()
            .filter(|m| wanted(m))
            .map(|m| m.key.clone())
            .collect();
        let mut records: HashMap<CacheKey, Option<EntryRecord>> = if keys.is_empty() {
            HashMap::new()
        } else {
            let found = self.metadata_backend().get_many(&keys).await?;
            keys.into_iter().zip(found).collect()
        };
        Ok(group
            .into_iter()
            .filter_map(|meta| match records.remove(&meta.key) {
                None => Some((meta, None)),
                Some(None) => None,
                Some(Some(record)) => Some((record.meta, record.inline_data)),
            })
            .collect())
    }

    /// Checks one entry: signature, expiry, then its value or blob.
    async fn check_entry(
        &self,
        meta: EntryMeta,
        inline: Option<Bytes>,
        options: &VerifyOptions,
        now: Timestamp,
    ) -> Result<Verdict> {
        if let Some(signing) = &self.config().signing_key {
            if let Err(error) = signing.verify(&meta) {
                return Ok(Verdict::Problem(Problem::Tampered {
                    entry: Box::new(meta),
                    error,
                }));
            }
        }
        if is_expired(&meta, now) {
            return Ok(Verdict::Problem(Problem::Expired {
                entry: Box::new(meta),
            }));
        }
        let verdict = match (&meta.location, options.read_values) {
            (Location::Inline, false) => Verdict::Healthy {
                read: false,
                bytes: 0,
            },
            (Location::Inline, true) => match inline {
                Some(stored) => {
                    let source: ByteStream =
                        Box::pin(futures_util::stream::once(async move { Ok(stored) }));
                    self.read_through(meta, source).await?
                }
                None => Verdict::Problem(Problem::Corrupt {
                    error: Error::corrupt(&meta.key, "inline entry without data"),
                    entry: Box::new(meta),
                }),
            },
            (Location::Blob(id), false) => match self.blob_backend().head(id).await? {
                None => Verdict::Problem(Problem::MissingBlob {
                    blob: id.clone(),
                    entry: Box::new(meta),
                }),
                Some(info) if info.size == meta.stored_size => Verdict::Healthy {
                    read: false,
                    bytes: 0,
                },
                // Damage, or another valid encoding of the same content: reading tells.
                Some(_) => self.read_blob(meta).await?,
            },
            (Location::Blob(_), true) => self.read_blob(meta).await?,
        };
        match verdict {
            Verdict::Problem(problem) => self.unless_changed(problem).await,
            other => Ok(other),
        }
    }

    /// Reads an entry's blob through a verifying reader.
    async fn read_blob(&self, meta: EntryMeta) -> Result<Verdict> {
        let Some(id) = meta.location.blob_id().cloned() else {
            return Err(Error::corrupt(&meta.key, "expected a blob entry"));
        };
        match self.blob_backend().get_stream(&id).await {
            Ok(source) => self.read_through(meta, source).await,
            Err(Error::NotFound { .. }) => Ok(Verdict::Problem(Problem::MissingBlob {
                blob: id,
                entry: Box::new(meta),
            })),
            Err(e) => Err(e),
        }
    }

    /// Reads a container to its verified end, counting its bytes; integrity failures become
    /// problems, any other error is returned.
    async fn read_through(&self, meta: EntryMeta, source: ByteStream) -> Result<Verdict> {
        let bytes = Arc::new(AtomicU64::new(0));
        let counter = bytes.clone();
        let source: ByteStream = Box::pin(source.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }));
        let mut reader = ValueReader::new(meta, source);
        let outcome = loop {
            match reader.next_chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let entry = Box::new(reader.meta().clone());
        match outcome {
            Ok(()) => Ok(Verdict::Healthy {
                read: true,
                bytes: bytes.load(Ordering::Relaxed),
            }),
            Err(error @ Error::Tampered { .. }) => {
                Ok(Verdict::Problem(Problem::Tampered { entry, error }))
            }
            Err(error @ Error::Corrupt { .. }) => {
                Ok(Verdict::Problem(Problem::Corrupt { entry, error }))
            }
            Err(other) => Err(other),
        }
    }

    /// A problem found by reading is reported only if the entry is still the one that was
    /// read: a concurrent rewrite or delete (whose old blob a collector may have taken) is not
    /// damage.
    async fn unless_changed(&self, problem: Problem) -> Result<Verdict> {
        let Some(found) = problem.entry() else {
            return Ok(Verdict::Problem(problem));
        };
        match self.metadata_backend().get_meta(&found.key).await? {
            Some(now) if same_version(found, &now) => Ok(Verdict::Problem(problem)),
            _ => Ok(Verdict::Changed),
        }
    }

    /// Lists the blob store and reports blobs no entry references.
    async fn find_unreferenced_blobs(
        &self,
        report: &mut VerifyReport,
        progress: &mut impl FnMut(&VerifyProgress),
    ) -> Result<()> {
        let mut state = VerifyProgress {
            phase: VerifyPhase::ListingBlobs,
            entries_checked: report.entries_checked,
            bytes_checked: report.bytes_checked,
            problems: report.problems.len() as u64,
            ..VerifyProgress::default()
        };
        progress(&state);
        let mut listing = self.blob_backend().list().await?;
        let mut batch: Vec<BlobInfo> = Vec::with_capacity(BLOB_BATCH);
        loop {
            let next = listing.next().await;
            let finished = next.is_none();
            if let Some(info) = next {
                batch.push(info?);
            }
            if batch.len() >= BLOB_BATCH || (finished && !batch.is_empty()) {
                self.report_unreferenced(&mut batch, report).await?;
                state.blobs_listed = report.blobs_listed;
                state.problems = report.problems.len() as u64;
                progress(&state);
            }
            if finished {
                return Ok(());
            }
        }
    }

    /// Asks the index how many entries reference each listed blob; reports those with none.
    async fn report_unreferenced(
        &self,
        batch: &mut Vec<BlobInfo>,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let ids: Vec<BlobId> = batch.iter().map(|info| info.id.clone()).collect();
        let counts = self.metadata_backend().count_blob_references(&ids).await?;
        if counts.len() != ids.len() {
            return Err(Error::backend(
                self.metadata_backend().name(),
                format!(
                    "count_blob_references returned {} counts for {} blobs",
                    counts.len(),
                    ids.len()
                ),
            ));
        }
        report.blobs_listed += batch.len() as u64;
        for (info, count) in batch.drain(..).zip(counts) {
            if count == 0 {
                let problem = Problem::UnreferencedBlob {
                    blob: info.id,
                    size: info.size,
                };
                tracing::warn!(%problem, "verify found a problem");
                report.problems.push(problem);
            }
        }
        Ok(())
    }

    /// The blobs of `entries` that no other entry references (what removing them frees), with
    /// their stored sizes.
    async fn blobs_referenced_only_by(&self, entries: &[&EntryMeta]) -> Result<Vec<(BlobId, u64)>> {
        let mut per_blob: HashMap<&BlobId, (u64, u64)> = HashMap::new();
        for entry in entries {
            if let Some(id) = entry.location.blob_id() {
                let slot = per_blob.entry(id).or_insert((0, entry.stored_size));
                slot.0 += 1;
            }
        }
        let per_blob: Vec<(&BlobId, (u64, u64))> = per_blob.into_iter().collect();
        let mut freed = Vec::new();
        for batch in per_blob.chunks(BLOB_BATCH) {
            let ids: Vec<BlobId> = batch.iter().map(|(id, _)| (*id).clone()).collect();
            let counts = self.metadata_backend().count_blob_references(&ids).await?;
            for ((id, (broken, size)), count) in batch.iter().zip(counts) {
                if count <= *broken {
                    freed.push(((*id).clone(), *size));
                }
            }
        }
        Ok(freed)
    }

    /// Deletes the candidates that the collector's protocol lets go: registered blobs no entry
    /// references and no lease protects, and blobs without any registration. Returns (blobs
    /// deleted, bytes freed).
    async fn reclaim_candidates(&self, candidates: &[(BlobId, u64)]) -> Result<(u64, u64)> {
        let meta = self.metadata_backend();
        let now = self.now();
        let ids: Vec<BlobId> = candidates.iter().map(|(id, _)| id.clone()).collect();
        let mut claimed = meta
            .claim_unreferenced_blobs(Some(&ids), now, ids.len())
            .await?;
        let taken: HashSet<BlobId> = claimed.iter().cloned().collect();
        for id in ids.iter().filter(|id| !taken.contains(*id)) {
            if meta.claim_unregistered_blob(id, now).await? {
                claimed.push(id.clone());
            }
        }
        let sizes: HashMap<&BlobId, u64> =
            candidates.iter().map(|(id, size)| (id, *size)).collect();
        let (mut count, mut bytes) = (0, 0);
        for id in &claimed {
            match self.blob_backend().delete(id).await {
                Ok(true) => {
                    count += 1;
                    bytes += sizes.get(id).copied().unwrap_or(0);
                }
                Ok(false) => {}
                // Released below anyway: the file becomes an unregistered leftover that the
                // next repair or gc claims again.
                Err(e) => tracing::warn!(blob = %id, error = %e, "could not delete blob"),
            }
        }
        meta.release_claimed_blobs(&claimed).await?;
        Ok((count, bytes))
    }
}

fn is_expired(meta: &EntryMeta, now: Timestamp) -> bool {
    meta.expires_at.is_some_and(|at| at <= now)
}

/// Whether `now` is still the entry `found` was (every field but the access statistics, which
/// reads change).
fn same_version(found: &EntryMeta, now: &EntryMeta) -> bool {
    let mut now = now.clone();
    now.accessed_at = found.accessed_at;
    now.access_count = found.access_count;
    *found == now
}
