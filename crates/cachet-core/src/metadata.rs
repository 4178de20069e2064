//! The metadata index contract.

use async_trait::async_trait;

use crate::capabilities::MetadataCapabilities;
use crate::clock::Timestamp;
use crate::entry::{AccessRecord, BlobId, EntryMeta, EntryRecord, IndexStats, ListQuery};
use crate::error::Result;
use crate::key::CacheKey;

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
