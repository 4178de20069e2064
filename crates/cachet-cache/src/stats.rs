//! Hit, miss and byte counters (updated through [`crate::observe::Observer`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a cache's counters since it was opened (shared by its namespace views).
///
/// Counted by the value reads (`get`, `get_bytes`, `reader`, `get_with`, `memoize`): each call is
/// one hit or one miss. `metadata` and `contains_key` load no data and are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads that found no live, valid entry (absent, expired, or failed an integrity check).
    pub misses: u64,
    /// Entries written (`insert`, `insert_bytes`, finished writers, computed values).
    pub inserts: u64,
    /// Raw (uncompressed) bytes of the values returned by hits.
    pub bytes_read: u64,
    /// Raw (uncompressed) bytes of the values inserted.
    pub bytes_written: u64,
    /// Entries found corrupt or tampered with (each also counted as a miss unless strict).
    pub integrity_failures: u64,
    /// Computations run by `get_with` / `try_get_with` / `memoize` (successful or not).
    pub computations: u64,
    /// Of the hits, those served by the memory tier (see
    /// [`CacheBuilder::memory_tier`](crate::CacheBuilder::memory_tier)).
    pub memory_hits: u64,
    /// Entries deleted by callers (`invalidate`, `invalidate_many`, `invalidate_where`, ...).
    pub invalidations: u64,
    /// Expired entries found by value reads (each such read is also a miss; a key read twice
    /// after its expiry counts twice) or deleted by `cleanup_expired`.
    pub expirations: u64,
    /// Of the misses, reads of the `get_with` family answered with a value that had expired
    /// less than the grace period ago, because the computation failed or was slower than the
    /// soft timeout (see [`CacheBuilder::grace`](crate::CacheBuilder::grace)).
    pub stale_hits: u64,
    /// Entries removed by eviction runs of this cache (expired, idle, or over a limit).
    pub evictions: u64,
    /// Bytes those runs freed (inline values and blobs no entry references any more).
    pub evicted_bytes: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`, or 0 when nothing was read.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    integrity_failures: AtomicU64,
    computations: AtomicU64,
    memory_hits: AtomicU64,
    invalidations: AtomicU64,
    expirations: AtomicU64,
    evictions: AtomicU64,
    evicted_bytes: AtomicU64,
    stale_hits: AtomicU64,
}

impl Counters {
    pub(crate) fn hit(&self, bytes: u64) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn insert(&self, bytes: u64) {
        self.inserts.fetch_add(1, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn stale_hit(&self, bytes: u64) {
        self.stale_hits.fetch_add(1, Ordering::Relaxed);
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn evicted_bytes(&self, bytes: u64) {
        self.evicted_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn memory_hit(&self) {
        self.memory_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn integrity_failure(&self) {
        self.integrity_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn computation(&self) {
        self.computations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn invalidation(&self) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn expiration(&self) {
        self.expirations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn eviction(&self) {
        self.evictions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            integrity_failures: self.integrity_failures.load(Ordering::Relaxed),
            computations: self.computations.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
            stale_hits: self.stale_hits.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            evicted_bytes: self.evicted_bytes.load(Ordering::Relaxed),
        }
    }
}
