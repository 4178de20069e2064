//! Eviction at the engine level: one batch of victims chosen and deleted by the index, then
//! the blobs no remaining entry references reclaimed.

use cachet_core::{BlobId, EntryMeta, EvictionBatch, IndexUsage, Location, Result, Timestamp};

use crate::store::Store;

/// What [`Store::evict`] removed.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct EvictedBatch {
    /// The evicted entries, in eviction order.
    pub entries: Vec<EntryMeta>,
    /// Bytes freed: the evicted inline values plus every blob no entry references any more
    /// (a blob another entry still shares stays, and so do its bytes). This is what the
    /// index's [`usage`](Store::usage) dropped by.
    pub bytes_freed: u64,
    /// Blobs deleted from the blob store now. An unreferenced blob still under a writer's
    /// lease (written in the last minutes) is left to `gc`, but already counts as freed.
    pub blobs_deleted: u64,
    /// The bytes of `blobs_deleted`.
    pub blob_bytes_deleted: u64,
}

impl Store {
    /// How much room the entries (of one namespace, or all) take: inline values plus each
    /// referenced blob once. See [`MetadataBackend::usage`](cachet_core::MetadataBackend::usage).
    pub async fn usage(&self, namespace: Option<&str>) -> Result<IndexUsage> {
        self.metadata_backend().usage(namespace).await
    }

    /// Evicts one batch: the index picks and deletes the victims atomically
    /// ([`MetadataBackend::evict`](cachet_core::MetadataBackend::evict)), then the blobs they
    /// alone referenced are reclaimed through the collector's claim protocol.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use cachet_core::memory::{MemoryBlobs, MemoryMetadata};
    /// use cachet_core::{CacheKey, EvictionBatch, EvictionOrder};
    /// use cachet_storage::{PutOptions, Store, StoreConfig};
    ///
    /// let store = Store::new(Arc::new(MemoryMetadata::new()), Arc::new(MemoryBlobs::new()),
    ///     StoreConfig::default())?;
    /// for id in ["a", "b", "c"] {
    ///     store.put_bytes(&CacheKey::explicit("", id)?, b"0123456789", PutOptions::default()).await?;
    /// }
    /// let after_the_writes = store.now().plus(Duration::from_millis(1));
    /// let batch = EvictionBatch::new(EvictionOrder::LeastRecentlyUsed, after_the_writes, 2);
    /// let evicted = store.evict(&batch).await?;
    /// assert_eq!(evicted.entries.len(), 2);
    /// assert_eq!(store.usage(None).await?.entries, 1);
    /// # Ok::<(), cachet_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn evict(&self, batch: &EvictionBatch) -> Result<EvictedBatch> {
        let entries = self.metadata_backend().evict(batch).await?;
        self.reclaim_removed(entries).await
    }

    /// Deletes at most `limit` entries that expired at or before `now` (atomically: an entry
    /// rewritten meanwhile with a later expiry survives) and reclaims their blobs; empty when
    /// none is left.
    pub async fn delete_expired_batch(&self, now: Timestamp, limit: usize) -> Result<EvictedBatch> {
        let entries = self.metadata_backend().delete_expired(now, limit).await?;
        self.reclaim_removed(entries).await
    }

    /// Reclaims the blobs that entries just deleted from the index alone referenced, and
    /// counts what that freed.
    async fn reclaim_removed(&self, entries: Vec<EntryMeta>) -> Result<EvictedBatch> {
        let inline_bytes: u64 = entries
            .iter()
            .filter(|m| m.location == Location::Inline)
            .map(|m| m.stored_size)
            .sum();
        let mut blobs: Vec<(BlobId, u64)> = entries
            .iter()
            .filter_map(|m| Some((m.location.blob_id()?.clone(), m.stored_size)))
            .collect();
        blobs.sort();
        blobs.dedup_by(|a, b| a.0 == b.0);
        let mut batch = EvictedBatch {
            entries,
            bytes_freed: inline_bytes,
            blobs_deleted: 0,
            blob_bytes_deleted: 0,
        };
        if blobs.is_empty() {
            return Ok(batch);
        }
        let ids: Vec<BlobId> = blobs.iter().map(|(id, _)| id.clone()).collect();
        let references = self.metadata_backend().count_blob_references(&ids).await?;
        let released: u64 = blobs
            .iter()
            .zip(&references)
            .filter(|(_, refs)| **refs == 0)
            .map(|((_, size), _)| *size)
            .sum();
        batch.bytes_freed = batch.bytes_freed.saturating_add(released);
        (batch.blobs_deleted, batch.blob_bytes_deleted) = self.reclaim(&blobs).await;
        Ok(batch)
    }
}
