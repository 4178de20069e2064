//! In-memory reference backends: the simplest correct implementations of the traits, used by
//! `memory://` URLs, by tests of the layers above, and as the model the conformance suites
//! were written against.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::blob::{BlobBackend, BlobInfo, BlobInfoStream, BlobReceipt, BlobWriter, ByteStream};
use crate::capabilities::{BlobCapabilities, MetadataCapabilities};
use crate::clock::Timestamp;
use crate::entry::{AccessRecord, BlobId, EntryMeta, EntryRecord, IndexStats, ListQuery, Location};
use crate::error::{Error, Result};
use crate::eviction::{EvictionBatch, IndexUsage};
use crate::filter::EntryFilter;
use crate::key::CacheKey;
use crate::metadata::{
    ExpiryUpdate, KeyLock, MetadataBackend, MoveOutcome, PutOutcome, WriteCondition,
};

const STREAM_CHUNK: usize = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps half-updated (every mutation is a
    // single insert/remove), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Clone)]
struct BlobRegistration {
    size: u64,
    lease_until: Timestamp,
    claimed_at: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct MemoryIndex {
    entries: BTreeMap<CacheKey, EntryRecord>,
    blobs: HashMap<BlobId, BlobRegistration>,
}

/// A metadata index held in process memory. Not shared with other processes; lost on exit.
///
/// Its key locks ([`MetadataBackend::try_lock_key`]) are shared by every clone of the index.
#[derive(Debug, Default, Clone)]
pub struct MemoryMetadata {
    inner: Arc<Mutex<MemoryIndex>>,
    locked_keys: Arc<Mutex<HashSet<CacheKey>>>,
}

/// A key lock of [`MemoryMetadata`]: released on `release` or drop.
struct MemoryKeyLock {
    locked_keys: Arc<Mutex<HashSet<CacheKey>>>,
    key: CacheKey,
}

impl Drop for MemoryKeyLock {
    fn drop(&mut self) {
        lock(&self.locked_keys).remove(&self.key);
    }
}

#[async_trait]
impl KeyLock for MemoryKeyLock {
    async fn release(self: Box<Self>) -> Result<()> {
        Ok(()) // dropping `self` releases
    }
}

impl MemoryIndex {
    /// Fails with `Error::Conflict` unless `id` is registered and not claimed.
    fn check_blob_usable(&self, id: &BlobId) -> Result<()> {
        match self.blobs.get(id) {
            Some(reg) if reg.claimed_at.is_none() => Ok(()),
            Some(_) => Err(Error::Conflict {
                what: format!("blob {id}"),
                detail: "the blob is being garbage-collected; write it again".into(),
            }),
            None => Err(Error::Conflict {
                what: format!("blob {id}"),
                detail: "the blob is not registered (reserve it before committing an entry)".into(),
            }),
        }
    }

    fn update_expiry(&mut self, update: &ExpiryUpdate) -> bool {
        match self.entries.get_mut(&update.key) {
            Some(record)
                if update
                    .if_signature
                    .as_deref()
                    .is_none_or(|s| record.meta.signature.as_deref() == Some(s)) =>
            {
                record.meta.expires_at = update.expires_at;
                record.meta.updated_at = update.updated_at;
                record.meta.signature = update.signature.clone();
                true
            }
            _ => false,
        }
    }
}

impl MemoryMetadata {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl MetadataBackend for MemoryMetadata {
    fn name(&self) -> &str {
        "memory"
    }

    fn capabilities(&self) -> MetadataCapabilities {
        MetadataCapabilities {
            key_locks: true,
            ..MetadataCapabilities::all(false)
        }
    }

    async fn try_lock_key(&self, key: &CacheKey) -> Result<Option<Box<dyn KeyLock>>> {
        if !lock(&self.locked_keys).insert(key.clone()) {
            return Ok(None);
        }
        Ok(Some(Box::new(MemoryKeyLock {
            locked_keys: self.locked_keys.clone(),
            key: key.clone(),
        })))
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<EntryRecord>> {
        Ok(lock(&self.inner).entries.get(key).cloned())
    }

    async fn get_meta(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        Ok(lock(&self.inner).entries.get(key).map(|r| r.meta.clone()))
    }

    async fn put(&self, record: EntryRecord) -> Result<Option<EntryMeta>> {
        let mut index = lock(&self.inner);
        if let Some(id) = record.meta.location.blob_id() {
            index.check_blob_usable(id)?;
        }
        let key = record.meta.key.clone();
        Ok(index.entries.insert(key, record).map(|old| old.meta))
    }

    async fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryRecord>>> {
        let index = lock(&self.inner);
        Ok(keys.iter().map(|k| index.entries.get(k).cloned()).collect())
    }

    async fn get_meta_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        let index = lock(&self.inner);
        Ok(keys
            .iter()
            .map(|k| index.entries.get(k).map(|r| r.meta.clone()))
            .collect())
    }

    async fn put_many(
        &self,
        records: Vec<EntryRecord>,
        condition: WriteCondition,
    ) -> Result<Vec<PutOutcome>> {
        let mut index = lock(&self.inner);
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            let exists = index.entries.contains_key(&record.meta.key);
            let applies = match condition {
                WriteCondition::Always => true,
                WriteCondition::IfAbsent => !exists,
                WriteCondition::IfPresent => exists,
            };
            let outcome = if !applies {
                PutOutcome::ConditionFailed
            } else if record
                .meta
                .location
                .blob_id()
                .is_some_and(|id| index.check_blob_usable(id).is_err())
            {
                PutOutcome::BlobUnavailable
            } else {
                let key = record.meta.key.clone();
                PutOutcome::Written {
                    replaced: index.entries.insert(key, record).map(|old| old.meta),
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn delete_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        let mut index = lock(&self.inner);
        Ok(keys
            .iter()
            .map(|k| index.entries.remove(k).map(|r| r.meta))
            .collect())
    }

    async fn delete_matching(&self, filter: &EntryFilter, limit: usize) -> Result<Vec<EntryMeta>> {
        filter.validate()?;
        let mut index = lock(&self.inner);
        let matching: Vec<CacheKey> = index
            .entries
            .values()
            .filter(|r| filter.matches(&r.meta))
            .take(limit)
            .map(|r| r.meta.key.clone())
            .collect();
        Ok(matching
            .iter()
            .filter_map(|k| index.entries.remove(k))
            .map(|r| r.meta)
            .collect())
    }

    async fn update_expiry_many(&self, updates: &[ExpiryUpdate]) -> Result<Vec<bool>> {
        let mut index = lock(&self.inner);
        Ok(updates.iter().map(|u| index.update_expiry(u)).collect())
    }

    async fn move_entry(
        &self,
        from: &CacheKey,
        to: EntryMeta,
        overwrite: bool,
    ) -> Result<MoveOutcome> {
        let mut index = lock(&self.inner);
        let Some(source) = index.entries.get(from) else {
            return Ok(MoveOutcome::SourceMissing);
        };
        if source.meta.digest != to.digest || source.meta.location != to.location {
            return Ok(MoveOutcome::SourceChanged);
        }
        if !overwrite && index.entries.contains_key(&to.key) {
            return Ok(MoveOutcome::DestinationExists);
        }
        let source = index
            .entries
            .remove(from)
            .expect("checked above under the same lock");
        let key = to.key.clone();
        let record = EntryRecord {
            meta: to,
            inline_data: source.inline_data,
        };
        Ok(MoveOutcome::Moved {
            replaced: index.entries.insert(key, record).map(|old| old.meta),
        })
    }

    async fn count_blob_references(&self, ids: &[BlobId]) -> Result<Vec<u64>> {
        let index = lock(&self.inner);
        let mut counts: HashMap<&BlobId, u64> = ids.iter().map(|id| (id, 0)).collect();
        for record in index.entries.values() {
            if let Some(count) = record
                .meta
                .location
                .blob_id()
                .and_then(|id| counts.get_mut(id))
            {
                *count += 1;
            }
        }
        Ok(ids.iter().map(|id| counts[id]).collect())
    }

    async fn usage(&self, namespace: Option<&str>) -> Result<IndexUsage> {
        let index = lock(&self.inner);
        let mut usage = IndexUsage::default();
        let mut blobs: HashSet<&BlobId> = HashSet::new();
        for record in index.entries.values() {
            if namespace.is_some_and(|ns| record.meta.key.namespace() != ns) {
                continue;
            }
            usage.entries += 1;
            match record.meta.location.blob_id() {
                None => usage.bytes = usage.bytes.saturating_add(record.meta.stored_size),
                Some(id) => {
                    if blobs.insert(id) {
                        let size = index.blobs.get(id).map_or(0, |reg| reg.size);
                        usage.bytes = usage.bytes.saturating_add(size);
                    }
                }
            }
        }
        Ok(usage)
    }

    async fn evict(&self, batch: &EvictionBatch) -> Result<Vec<EntryMeta>> {
        let mut index = lock(&self.inner);
        let chosen = batch.select(index.entries.values().map(|r| &r.meta))?;
        let keys: Vec<&CacheKey> = index.entries.keys().collect();
        let victims: Vec<CacheKey> = chosen.iter().map(|&i| keys[i].clone()).collect();
        Ok(victims
            .iter()
            .filter_map(|k| index.entries.remove(k).map(|r| r.meta))
            .collect())
    }

    async fn delete(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        Ok(lock(&self.inner).entries.remove(key).map(|r| r.meta))
    }

    async fn delete_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<EntryMeta>> {
        let mut index = lock(&self.inner);
        let expired: Vec<CacheKey> = index
            .entries
            .values()
            .filter(|r| r.meta.expires_at.is_some_and(|t| t <= now))
            .take(limit)
            .map(|r| r.meta.key.clone())
            .collect();
        Ok(expired
            .iter()
            .filter_map(|k| index.entries.remove(k))
            .map(|r| r.meta)
            .collect())
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<EntryMeta>> {
        let limit = query.effective_limit();
        let index = lock(&self.inner);
        query.filter.validate()?;
        let iter: Box<dyn Iterator<Item = &EntryRecord>> = match &query.after {
            Some(after) => Box::new(
                index
                    .entries
                    .range((
                        std::ops::Bound::Excluded(after.clone()),
                        std::ops::Bound::Unbounded,
                    ))
                    .map(|(_, r)| r),
            ),
            None => Box::new(index.entries.values()),
        };
        Ok(iter
            .map(|r| &r.meta)
            .filter(|m| query.filter.matches(m))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn record_access(&self, accesses: &[AccessRecord]) -> Result<()> {
        let mut index = lock(&self.inner);
        for access in accesses {
            if let Some(record) = index.entries.get_mut(&access.key) {
                record.meta.accessed_at = record.meta.accessed_at.max(access.at);
                record.meta.access_count = record.meta.access_count.saturating_add(access.hits);
            }
        }
        Ok(())
    }

    async fn update_expiry(
        &self,
        key: &CacheKey,
        if_signature: Option<&str>,
        expires_at: Option<Timestamp>,
        updated_at: Timestamp,
        signature: Option<String>,
    ) -> Result<bool> {
        let update = ExpiryUpdate {
            key: key.clone(),
            if_signature: if_signature.map(str::to_owned),
            expires_at,
            updated_at,
            signature,
        };
        Ok(lock(&self.inner).update_expiry(&update))
    }

    async fn stats(&self) -> Result<IndexStats> {
        let index = lock(&self.inner);
        let mut stats = IndexStats::default();
        for record in index.entries.values() {
            stats.entries += 1;
            if record.meta.location == Location::Inline {
                stats.inline_entries += 1;
            }
            stats.raw_bytes = stats.raw_bytes.saturating_add(record.meta.raw_size);
            stats.stored_bytes = stats.stored_bytes.saturating_add(record.meta.stored_size);
        }
        for reg in index.blobs.values() {
            stats.blobs += 1;
            stats.blob_bytes = stats.blob_bytes.saturating_add(reg.size);
        }
        Ok(stats)
    }

    async fn reserve_blob(
        &self,
        id: &BlobId,
        size: u64,
        lease_until: Timestamp,
        stale_claim_before: Timestamp,
    ) -> Result<()> {
        let mut index = lock(&self.inner);
        let reg = index.blobs.entry(id.clone()).or_insert(BlobRegistration {
            size,
            lease_until,
            claimed_at: None,
        });
        if let Some(claimed_at) = reg.claimed_at {
            if claimed_at >= stale_claim_before {
                return Err(Error::Conflict {
                    what: format!("blob {id}"),
                    detail: "the blob is being garbage-collected; retry shortly".into(),
                });
            }
            reg.claimed_at = None;
        }
        reg.lease_until = reg.lease_until.max(lease_until);
        reg.size = size;
        Ok(())
    }

    async fn claim_unreferenced_blobs(
        &self,
        candidates: Option<&[BlobId]>,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        let mut index = lock(&self.inner);
        let referenced: std::collections::HashSet<BlobId> = index
            .entries
            .values()
            .filter_map(|r| r.meta.location.blob_id().cloned())
            .collect();
        let eligible = |id: &BlobId, reg: &BlobRegistration| {
            reg.claimed_at.is_none() && reg.lease_until <= now && !referenced.contains(id)
        };
        let mut claimed = Vec::new();
        match candidates {
            Some(ids) => {
                for id in ids {
                    if claimed.len() >= limit {
                        break;
                    }
                    if let Some(reg) = index.blobs.get_mut(id) {
                        if eligible(id, reg) {
                            reg.claimed_at = Some(now);
                            claimed.push(id.clone());
                        }
                    }
                }
            }
            None => {
                for (id, reg) in index.blobs.iter_mut() {
                    if claimed.len() >= limit {
                        break;
                    }
                    if eligible(id, reg) {
                        reg.claimed_at = Some(now);
                        claimed.push(id.clone());
                    }
                }
            }
        }
        Ok(claimed)
    }

    async fn reclaim_abandoned_claims(
        &self,
        now: Timestamp,
        stale_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        let mut index = lock(&self.inner);
        let mut reclaimed = Vec::new();
        for (id, reg) in index.blobs.iter_mut() {
            if reclaimed.len() >= limit {
                break;
            }
            if reg.claimed_at.is_some_and(|at| at < stale_before) {
                reg.claimed_at = Some(now);
                reclaimed.push(id.clone());
            }
        }
        Ok(reclaimed)
    }

    async fn claim_unregistered_blob(&self, id: &BlobId, now: Timestamp) -> Result<bool> {
        let mut index = lock(&self.inner);
        if index.blobs.contains_key(id) {
            return Ok(false);
        }
        index.blobs.insert(
            id.clone(),
            BlobRegistration {
                size: 0,
                lease_until: Timestamp(0),
                claimed_at: Some(now),
            },
        );
        Ok(true)
    }

    async fn release_claimed_blobs(&self, ids: &[BlobId]) -> Result<()> {
        let mut index = lock(&self.inner);
        for id in ids {
            if index
                .blobs
                .get(id)
                .is_some_and(|reg| reg.claimed_at.is_some())
            {
                index.blobs.remove(id);
            }
        }
        Ok(())
    }
}

/// A blob store held in process memory. Its ETags are write generations (`"m-1"`, `"m-2"`...).
#[derive(Debug, Default, Clone)]
pub struct MemoryBlobs {
    inner: Arc<Mutex<HashMap<BlobId, StoredBlob>>>,
    generation: Arc<AtomicU64>,
}

#[derive(Debug)]
struct StoredBlob {
    data: Bytes,
    modified: Timestamp,
    etag: String,
}

impl StoredBlob {
    fn info(&self, id: &BlobId) -> BlobInfo {
        BlobInfo {
            id: id.clone(),
            size: self.data.len() as u64,
            modified: Some(self.modified),
            etag: Some(self.etag.clone()),
        }
    }
}

impl MemoryBlobs {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl BlobBackend for MemoryBlobs {
    fn name(&self) -> &str {
        "memory"
    }

    fn capabilities(&self) -> BlobCapabilities {
        BlobCapabilities {
            atomic_publish: true,
            conditional_put: true,
            server_side_copy: true,
            range_read: true,
            local_only: true,
            durable: false,
            max_object_size: None,
        }
    }

    async fn put(&self, id: &BlobId, data: Bytes) -> Result<BlobReceipt> {
        // Put-if-absent (the `conditional_put` capability): an existing copy is kept. One lock
        // for the check and the insert, so concurrent puts of one id agree on one object.
        let mut blobs = lock(&self.inner);
        let stored = blobs.entry(id.clone()).or_insert_with(|| StoredBlob {
            data,
            modified: Timestamp::now(),
            etag: format!(
                "\"m-{}\"",
                self.generation.fetch_add(1, Ordering::Relaxed) + 1
            ),
        });
        Ok(BlobReceipt {
            etag: Some(stored.etag.clone()),
        })
    }

    async fn writer(&self) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(MemoryBlobWriter {
            store: self.clone(),
            buf: BytesMut::new(),
        }))
    }

    async fn get(&self, id: &BlobId) -> Result<Bytes> {
        lock(&self.inner)
            .get(id)
            .map(|stored| stored.data.clone())
            .ok_or_else(|| Error::not_found(format!("blob {id}")))
    }

    async fn get_stream(&self, id: &BlobId) -> Result<ByteStream> {
        let data = self.get(id).await?;
        let chunks: Vec<Result<Bytes>> = (0..data.len())
            .step_by(STREAM_CHUNK)
            .map(|start| Ok(data.slice(start..(start + STREAM_CHUNK).min(data.len()))))
            .collect();
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }

    async fn head(&self, id: &BlobId) -> Result<Option<BlobInfo>> {
        Ok(lock(&self.inner).get(id).map(|stored| stored.info(id)))
    }

    async fn delete(&self, id: &BlobId) -> Result<bool> {
        Ok(lock(&self.inner).remove(id).is_some())
    }

    async fn list(&self) -> Result<BlobInfoStream> {
        let infos: Vec<Result<BlobInfo>> = lock(&self.inner)
            .iter()
            .map(|(id, stored)| Ok(stored.info(id)))
            .collect();
        Ok(Box::pin(futures_util::stream::iter(infos)))
    }

    async fn cleanup_temporary(&self, _older_than: Timestamp) -> Result<u64> {
        // Unfinished in-memory writes live in their writer and vanish with it.
        Ok(0)
    }
}

struct MemoryBlobWriter {
    store: MemoryBlobs,
    buf: BytesMut,
}

#[async_trait]
impl BlobWriter for MemoryBlobWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }

    async fn finish(self: Box<Self>, id: &BlobId) -> Result<BlobReceipt> {
        let data = self.buf.freeze();
        self.store.put(id, data).await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
