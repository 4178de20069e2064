//! The metadata index contract.

use async_trait::async_trait;

use crate::capabilities::MetadataCapabilities;
use crate::clock::Timestamp;
use crate::entry::{AccessRecord, BlobId, EntryMeta, EntryRecord, IndexStats, ListQuery};
use crate::error::Result;
use crate::eviction::{EvictionBatch, IndexUsage};
use crate::filter::EntryFilter;
use crate::key::CacheKey;

/// When a write in [`MetadataBackend::put_many`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteCondition {
    /// Insert or replace (what [`MetadataBackend::put`] does).
    #[default]
    Always,
    /// Only if no entry has the key (copy without overwrite).
    IfAbsent,
    /// Only if an entry has the key (update).
    IfPresent,
}

/// What happened to one record of [`MetadataBackend::put_many`].
// Not boxed: the replaced entry's metadata is what callers read next (to reclaim its blob),
// and a batch's outcomes are one allocation whatever their size.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum PutOutcome {
    /// The record was written; `replaced` is the entry it replaced, if any.
    Written {
        /// The metadata of the replaced entry.
        replaced: Option<EntryMeta>,
    },
    /// The [`WriteCondition`] did not hold; nothing was written for this record.
    ConditionFailed,
    /// The record's blob is not registered or is claimed by a collector; nothing was written
    /// for this record (reserve the blob again and retry).
    BlobUnavailable,
}

/// One change of [`MetadataBackend::update_expiry_many`] (the fields of
/// [`MetadataBackend::update_expiry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryUpdate {
    /// Which entry.
    pub key: CacheKey,
    /// Apply only while the entry's signature is this one (`None`: unconditionally).
    pub if_signature: Option<String>,
    /// The new expiry.
    pub expires_at: Option<Timestamp>,
    /// The new `updated_at`.
    pub updated_at: Timestamp,
    /// The new signature.
    pub signature: Option<String>,
}

/// What [`MetadataBackend::move_entry`] did.
#[allow(clippy::large_enum_variant)] // as PutOutcome
#[derive(Debug, Clone, PartialEq)]
pub enum MoveOutcome {
    /// The entry now lives at the new key only; `replaced` is the destination entry it
    /// replaced (with `overwrite`).
    Moved {
        /// The metadata of the replaced destination entry.
        replaced: Option<EntryMeta>,
    },
    /// No entry has the source key.
    SourceMissing,
    /// The source entry's content (digest or location) is not the one given: it was rewritten
    /// since it was read. Nothing changed.
    SourceChanged,
    /// An entry has the destination key and `overwrite` was off. Nothing changed.
    DestinationExists,
}

/// An index of entries plus a registry of blobs.
///
/// The index holds one row per entry ([`EntryRecord`]) and one row per blob in the blob store.
/// The blob registry is what makes deduplication and garbage collection safe when several
/// processes share a cache: a writer *reserves* a blob before publishing it, the entry commit
/// checks that the reservation still stands, and the collector *claims* a blob (a state change
/// committed before any deletion) only when no entry references it and no reservation is live.
/// See `docs/GC.md` for the whole protocol and why it has no window in which an entry can
/// point at a deleted blob.
///
/// Implementations must be safe to call from many tasks at once. Conformance:
/// `cachet_core::testing::metadata::run_all` (feature `testing`).
#[async_trait]
pub trait MetadataBackend: Send + Sync + 'static {
    /// A short name for messages (`"sqlite"`, `"memory"`, ...).
    fn name(&self) -> &str;

    /// What this backend offers.
    fn capabilities(&self) -> MetadataCapabilities;

    /// Reads an entry with its inline data.
    ///
    /// # Behavior
    /// - A missing key returns `Ok(None)`, not an error.
    /// - The record is returned exactly as last written by [`put`](Self::put), except that
    ///   `accessed_at` / `access_count` reflect flushed [`record_access`](Self::record_access) calls
    ///   and `expires_at` / `updated_at` / `signature` reflect [`update_expiry`](Self::update_expiry).
    /// - Keys are exact: the same id in another namespace is another entry.
    async fn get(&self, key: &CacheKey) -> Result<Option<EntryRecord>>;

    /// Reads an entry's metadata without its inline data.
    ///
    /// # Behavior
    /// - Same as [`get`](Self::get) but never loads inline data.
    async fn get_meta(&self, key: &CacheKey) -> Result<Option<EntryMeta>>;

    /// Inserts or replaces an entry atomically.
    ///
    /// # Behavior
    /// - Returns the metadata of the entry it replaced, or `None` if the key was new.
    /// - A record whose location is a blob is accepted only if that blob is registered and not
    ///   claimed for collection (see [`reserve_blob`](Self::reserve_blob)); otherwise it fails with
    ///   `Error::Conflict` and changes nothing. The check and the write are one transaction.
    /// - A replaced entry's `created_at` is overwritten with the new record's (callers decide).
    /// - Readers never observe a partially written record.
    async fn put(&self, record: EntryRecord) -> Result<Option<EntryMeta>>;

    /// Deletes an entry.
    ///
    /// # Behavior
    /// - Returns the removed entry's metadata, or `None` if the key did not exist (not an error).
    /// - A row too damaged to decode is still deleted (that is how repair removes it); `None`
    ///   is returned for it and the backend logs a warning.
    /// - Does not delete blobs: a blob no longer referenced is reclaimed through
    ///   [`claim_unreferenced_blobs`](Self::claim_unreferenced_blobs).
    async fn delete(&self, key: &CacheKey) -> Result<Option<EntryMeta>>;

    /// Deletes entries that have expired, in one atomic step per batch.
    ///
    /// # Behavior
    /// - Deletes at most `limit` entries whose `expires_at` is `<= now` and returns their
    ///   metadata; entries without `expires_at` never expire.
    /// - The expiry check and the delete are one atomic step: an entry rewritten concurrently
    ///   with a later (or no) expiry is not deleted.
    /// - Does not delete blobs (see [`delete`](Self::delete)).
    async fn delete_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<EntryMeta>>;

    /// Lists entries' metadata.
    ///
    /// # Behavior
    /// - Ordered by `(namespace, id)` ascending, byte order.
    /// - Applies every filter in `query`; returns at most `query.limit` entries (default 1000).
    /// - Starting after `query.after` and repeating with the last key returned visits every
    ///   matching entry exactly once if the index does not change meanwhile.
    async fn list(&self, query: &ListQuery) -> Result<Vec<EntryMeta>>;

    /// Applies a batch of reads to `accessed_at` and `access_count`.
    ///
    /// # Behavior
    /// - `accessed_at` becomes the later of its current value and `at`; `access_count` grows by `hits`.
    /// - Keys that no longer exist are ignored.
    /// - Does not change `updated_at` or the signature (access data is not signed).
    async fn record_access(&self, accesses: &[AccessRecord]) -> Result<()>;

    /// Changes an entry's expiry without touching its value.
    ///
    /// # Behavior
    /// - Sets `expires_at`, `updated_at` and `signature` together; returns `false` if the key
    ///   does not exist.
    /// - With `if_signature: Some(s)`, changes the entry only if its current signature is `s`
    ///   (an optimistic check: the caller signed the new fields from the entry it read, so the
    ///   new signature is only valid for that entry); returns `false` and changes nothing
    ///   otherwise. `None` applies unconditionally.
    async fn update_expiry(
        &self,
        key: &CacheKey,
        if_signature: Option<&str>,
        expires_at: Option<Timestamp>,
        updated_at: Timestamp,
        signature: Option<String>,
    ) -> Result<bool>;

    /// Totals over the index.
    ///
    /// # Behavior
    /// - Counts every entry, expired or not; `blobs` / `blob_bytes` count registered blobs once.
    async fn stats(&self) -> Result<IndexStats>;

    /// Registers (or re-reserves) a blob before it is published or reused.
    ///
    /// # Behavior
    /// - Creates the registration if absent, with the given stored `size`; otherwise extends its
    ///   reservation to the later of the current one and `lease_until`.
    /// - While `now < lease_until`, the blob cannot be claimed for collection even if no entry
    ///   references it.
    /// - If the blob is currently claimed for collection, fails with `Error::Conflict` (retry
    ///   after the collector releases it), unless the claim is older than `stale_claim_before`,
    ///   in which case the stale claim is cancelled and the reservation succeeds.
    async fn reserve_blob(
        &self,
        id: &BlobId,
        size: u64,
        lease_until: Timestamp,
        stale_claim_before: Timestamp,
    ) -> Result<()>;

    /// Claims registered blobs that no entry references and whose reservation has expired.
    ///
    /// # Behavior
    /// - Considers only `candidates` when given, else any registered blob; claims at most `limit`.
    /// - A claimed blob is referenced by no entry, its lease is `<= now`, and from the claim on
    ///   [`put`](Self::put) of an entry referencing it fails with `Error::Conflict`.
    /// - Claiming is atomic with the reference check; returns the claimed ids.
    async fn claim_unreferenced_blobs(
        &self,
        candidates: Option<&[BlobId]>,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>>;

    /// Takes over claims abandoned by a collector that stopped (crashed) between claiming
    /// blobs and releasing them.
    ///
    /// # Behavior
    /// - Every blob claimed before `stale_before` (at most `limit`) is claimed again at `now` and
    ///   returned: the caller now owns the claim and must delete the blob and release it.
    /// - Claims at or after `stale_before` and unclaimed blobs are untouched.
    async fn reclaim_abandoned_claims(
        &self,
        now: Timestamp,
        stale_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>>;

    /// Claims a blob found in the blob store that has no registration at all (a leftover).
    ///
    /// # Behavior
    /// - If no registration exists, records a claim for `id` (dated `now`) and returns `true`.
    /// - If a registration exists (live, reserved or claimed), returns `false` and changes nothing.
    async fn claim_unregistered_blob(&self, id: &BlobId, now: Timestamp) -> Result<bool>;

    /// Ends a collection: forgets the registrations of blobs the collector claimed and deleted.
    ///
    /// # Behavior
    /// - Removes only registrations that are still claimed; ids that are not claimed are ignored.
    async fn release_claimed_blobs(&self, ids: &[BlobId]) -> Result<()>;

    /// Reads many entries, with their inline data, in one round trip.
    ///
    /// # Behavior
    /// - Returns one slot per key, in the order of `keys` (a key may repeat): the record as
    ///   [`get`](Self::get) would return it, or `None` when the key does not exist.
    /// - The entries are read from one consistent snapshot where the backend has transactions.
    async fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryRecord>>>;

    /// Reads many entries' metadata, without inline data, in one round trip.
    ///
    /// # Behavior
    /// - Same as [`get_many`](Self::get_many) but never loads inline data.
    async fn get_meta_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>>;

    /// Writes many records in one transaction, each under `condition`.
    ///
    /// # Behavior
    /// - Returns one outcome per record, in order. A record whose condition does not hold, or
    ///   whose blob is not registered or is claimed ([`PutOutcome::BlobUnavailable`]), is not
    ///   written; the others are (one record's outcome never undoes another's).
    /// - Records are applied in order: a later record with the same key sees the earlier one.
    /// - Other readers see all of the batch's writes or none of them (where the backend has
    ///   transactions).
    /// - Otherwise each write behaves as [`put`](Self::put).
    async fn put_many(
        &self,
        records: Vec<EntryRecord>,
        condition: WriteCondition,
    ) -> Result<Vec<PutOutcome>>;

    /// Deletes many entries in one transaction.
    ///
    /// # Behavior
    /// - Returns one slot per key, in order: the removed entry's metadata, or `None` if the key
    ///   did not exist (or was already removed earlier in the same batch).
    /// - Otherwise each delete behaves as [`delete`](Self::delete).
    async fn delete_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>>;

    /// Deletes entries matching a filter, evaluated by the index itself (no entry is read
    /// into the caller to be tested).
    ///
    /// # Behavior
    /// - Deletes at most `limit` entries matching `filter` (see [`EntryFilter::matches`] for
    ///   the exact semantics) and returns their metadata; call again until it returns nothing.
    /// - The match and the delete are one atomic step: an entry rewritten concurrently so that
    ///   it no longer matches is not deleted.
    /// - Does not delete blobs (see [`delete`](Self::delete)).
    async fn delete_matching(&self, filter: &EntryFilter, limit: usize) -> Result<Vec<EntryMeta>>;

    /// Applies many expiry changes in one transaction.
    ///
    /// # Behavior
    /// - Returns one flag per update, in order: whether it applied, exactly as
    ///   [`update_expiry`](Self::update_expiry) would.
    async fn update_expiry_many(&self, updates: &[ExpiryUpdate]) -> Result<Vec<bool>>;

    /// Moves an entry to another key atomically: afterwards exactly one of the two keys holds
    /// it, whatever fails or runs concurrently.
    ///
    /// # Behavior
    /// - `to` is the complete metadata of the destination entry (its key is the destination);
    ///   it is written as given, with the source's inline data.
    /// - The source must exist with the same digest and location as `to`
    ///   ([`MoveOutcome::SourceChanged`] otherwise); the destination must not exist unless
    ///   `overwrite` ([`MoveOutcome::DestinationExists`]). When a check fails nothing changes.
    /// - The source delete and the destination write are one transaction, so a blob the entry
    ///   references stays referenced throughout (no collector can claim it in between).
    /// - `from` and `to.key` must differ (the caller handles a move onto itself).
    async fn move_entry(
        &self,
        from: &CacheKey,
        to: EntryMeta,
        overwrite: bool,
    ) -> Result<MoveOutcome>;

    /// Counts the entries referencing each blob (for verification: a stored blob no entry
    /// references is an orphan).
    ///
    /// # Behavior
    /// - Returns one count per id, in order; an id no entry references counts 0.
    async fn count_blob_references(&self, ids: &[BlobId]) -> Result<Vec<u64>>;

    /// How much room the entries (of one namespace, or all) take, for eviction.
    ///
    /// # Behavior
    /// - `entries` counts the entries (expired ones included); `bytes` adds the stored size
    ///   of each inline value and the registered size of each blob they reference, **once
    ///   per blob** however many entries share it.
    /// - With a namespace, only that namespace's entries and the blobs they reference count
    ///   (a blob shared across namespaces counts in each).
    async fn usage(&self, namespace: Option<&str>) -> Result<IndexUsage>;

    /// Picks and deletes one batch of eviction victims in one atomic step.
    ///
    /// # Behavior
    /// - Candidates are the entries of `batch.namespace` (all when `None`) with
    ///   `updated_at < written_before`, `accessed_at < accessed_before` (when set), and
    ///   without the [`PINNED_TAG`](crate::PINNED_TAG) tag.
    /// - They are taken in `batch.order`, ties broken by older `accessed_at`, then by key;
    ///   under [`LeastFrequentlyUsed`](crate::EvictionOrder::LeastFrequentlyUsed) the rank is
    ///   exactly [`EvictionOrder::aged_count`](crate::EvictionOrder::aged_count).
    /// - At most `max_entries` are taken, and none after the taken entries' stored sizes reach
    ///   `max_bytes` (the entry that crosses it is taken).
    /// - The choice and the delete are one atomic step: an entry rewritten or read meanwhile
    ///   is judged on its new row. Returns the deleted entries' metadata, in order.
    /// - Does not delete blobs (see [`delete`](Self::delete)).
    async fn evict(&self, batch: &EvictionBatch) -> Result<Vec<EntryMeta>>;

    /// Tries to take the lock of one key, for computing its value once across every user of
    /// the index (stampede protection beyond one process).
    ///
    /// # Behavior
    /// - Returns `Some(lock)` when the caller now holds the key's lock, `None` at once when
    ///   another holder has it (never waits).
    /// - A held lock is refused to every other caller (other tasks, other backend instances on
    ///   the same index, other processes) until [`KeyLock::release`] or until the lock is
    ///   dropped; a holder that dies (process crash, lost connection) releases it.
    /// - Locks of different keys are independent.
    /// - Backends without `capabilities().key_locks` return `Error::Unsupported` (the default).
    async fn try_lock_key(&self, key: &CacheKey) -> Result<Option<Box<dyn KeyLock>>> {
        Err(crate::Error::Unsupported {
            what: format!(
                "per-key locks on the {} index (capabilities().key_locks is false); key {key}",
                self.name()
            ),
        })
    }
    /// Writes pending buffered state (if any) and waits until it is durable.
    ///
    /// # Behavior
    /// - After `flush` returns, another process opening the same index sees every completed write.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// A held per-key lock (see [`MetadataBackend::try_lock_key`]).
///
/// Dropping it releases it too, possibly a little later (in the background); call
/// [`release`](Self::release) to release it at once and learn about errors.
#[async_trait]
pub trait KeyLock: Send + Sync {
    /// Releases the lock.
    async fn release(self: Box<Self>) -> Result<()>;
}
