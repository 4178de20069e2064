//! The engine: `Store` joins a metadata index and a blob store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cachet_core::{
    BlobBackend, BlobId, BlobWriter, CacheKey, Compression, DataType, EntryMeta, EntryRecord,
    Error, IndexStats, ListQuery, Location, MetadataBackend, PutOutcome, Result, Timestamp,
    WriteCondition,
};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::access::{AccessLog, spawn_batch, write_batch_now};
use crate::config::StoreConfig;
use crate::encode::{ContainerEncoder, Encoded};
use crate::format::{self, TrailerInfo};
use crate::reader::ValueReader;
use crate::writer::ValueWriter;

/// Values larger than this are encoded and written frame by frame rather than in one buffer.
pub(crate) const STREAM_WRITE_THRESHOLD: usize = 8 << 20;
/// Blobs larger than this are read as a stream rather than in one request.
const STREAM_READ_THRESHOLD: u64 = 8 << 20;
/// How long a writer waits for a collector to release a blob before giving up.
const RESERVE_PATIENCE: Duration = Duration::from_secs(30);
/// How many times a commit is retried when the blob was collected underneath it.
pub(crate) const COMMIT_ATTEMPTS: u32 = 5;
/// Blobs claimed per garbage-collection round trip.
const GC_BATCH: usize = 256;

/// Per-entry options for a write.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// When the entry expires (the cache layer decides what that means).
    pub expires_at: Option<Timestamp>,
    /// Expire this long after the entry is committed (for streamed values, after `finish`).
    /// Takes precedence over `expires_at`.
    pub ttl: Option<Duration>,
    /// The parameters the key was derived from, stored for queries.
    pub params: Option<serde_json::Value>,
    /// Tags for bulk invalidation.
    pub tags: Vec<String>,
    /// User metadata (a JSON object).
    pub user_metadata: Option<serde_json::Value>,
    /// Overrides the store's compression for this entry.
    pub compression: Option<Compression>,
    /// The Rust type name, for humans (set automatically by `put_value`).
    pub type_name: Option<String>,
}

impl PutOptions {
    /// The options that write an entry like `meta` again: its expiry, parameters, tags, user
    /// metadata, compression and type name.
    pub fn of_entry(meta: &EntryMeta) -> Self {
        PutOptions {
            expires_at: meta.expires_at,
            ttl: None,
            params: meta.params.clone(),
            tags: meta.tags.clone(),
            user_metadata: meta.user_metadata.clone(),
            compression: Some(meta.compression),
            type_name: meta.type_name.clone(),
        }
    }
}

/// An entry found in the index, with its inline data if it has any. Reading its value is a
/// separate step so that the caller can decide (expired? wrong type?) before any blob I/O.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    /// The entry's metadata (signature already verified when signing is on).
    pub meta: EntryMeta,
    pub(crate) inline: Option<Bytes>,
}

/// What garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Registered blobs no entry referenced any more, deleted.
    pub blobs_deleted: u64,
    /// Bytes those blobs occupied.
    pub bytes_freed: u64,
    /// Blobs found in the blob store without any registration (crash leftovers), deleted.
    pub orphans_deleted: u64,
    /// Abandoned temporary uploads removed.
    pub temporaries_removed: u64,
}

/// What [`Store::delete_expired`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiredReport {
    /// Expired entries deleted.
    pub entries_removed: u64,
    /// Their blobs that no other entry referenced, deleted at once.
    pub blobs_deleted: u64,
    /// Bytes those blobs occupied.
    pub bytes_freed: u64,
    /// The keys of the entries deleted, batch by batch.
    pub keys: Vec<CacheKey>,
}

/// How a commit may apply, beyond the value itself: under which condition on the key, and with
/// which creation time (an update keeps the entry's).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WritePlan {
    pub(crate) condition: WriteCondition,
    pub(crate) created_at: Option<Timestamp>,
}

impl WritePlan {
    /// The error a commit reports when its condition does not hold.
    pub(crate) fn condition_error(&self, key: &CacheKey) -> Error {
        match self.condition {
            WriteCondition::IfPresent => Error::not_found(format_args!(
                "entry {key} (update replaces the value of an existing entry; insert creates one)"
            )),
            _ => Error::AlreadyExists {
                what: format!("entry {key} (pass overwrite to replace it)"),
            },
        }
    }
}

pub(crate) enum Container {
    Memory(Bytes),
    Streamed(Box<dyn BlobWriter>),
}

/// The storage engine. Cheap to clone (shared state behind an `Arc`).
///
/// Writes: encode → frame, compress, hash (→ sign) → publish blob (or inline) → commit the
/// index row. Reads: index row → verify signature → inline bytes or streamed blob frames →
/// verify every frame checksum, the whole-content hash and the digest → decode.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    meta: Arc<dyn MetadataBackend>,
    blobs: Arc<dyn BlobBackend>,
    config: StoreConfig,
    access: AccessLog,
    access_gate: crate::access::WriteGate,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("index", &self.inner.meta.name())
            .field("blobs", &self.inner.blobs.name())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Store {
    /// Joins an index and a blob store.
    pub fn new(
        meta: Arc<dyn MetadataBackend>,
        blobs: Arc<dyn BlobBackend>,
        config: StoreConfig,
    ) -> Result<Self> {
        config.validate()?;
        let access = AccessLog::new(
            config.access_flush_interval,
            config.access_time_granularity,
            config.access_flush_max,
        );
        Ok(Store {
            inner: Arc::new(Inner {
                meta,
                blobs,
                config,
                access,
                access_gate: Default::default(),
            }),
        })
    }

    /// The metadata index.
    pub fn metadata_backend(&self) -> &Arc<dyn MetadataBackend> {
        &self.inner.meta
    }

    /// The blob store.
    pub fn blob_backend(&self) -> &Arc<dyn BlobBackend> {
        &self.inner.blobs
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The current time according to the configured clock.
    pub fn now(&self) -> Timestamp {
        self.inner.config.clock.now()
    }

    // ---------------------------------------------------------------- writes

    /// Stores raw bytes.
    pub async fn put_bytes(
        &self,
        key: &CacheKey,
        data: &[u8],
        opts: PutOptions,
    ) -> Result<EntryMeta> {
        self.put_encoded(key, DataType::Bytes, data, opts).await
    }

    /// Stores a serde value as MessagePack (struct fields by name).
    pub async fn put_value<T: Serialize + ?Sized>(
        &self,
        key: &CacheKey,
        value: &T,
        mut opts: PutOptions,
    ) -> Result<EntryMeta> {
        let encoded = encode_msgpack(key, value)?;
        opts.type_name
            .get_or_insert_with(|| std::any::type_name::<T>().to_owned());
        self.put_encoded(key, DataType::MessagePack, &encoded, opts)
            .await
    }

    /// Stores a serde value as JSON (human-readable entries).
    pub async fn put_json<T: Serialize + ?Sized>(
        &self,
        key: &CacheKey,
        value: &T,
        mut opts: PutOptions,
    ) -> Result<EntryMeta> {
        let encoded = encode_json(key, value)?;
        opts.type_name
            .get_or_insert_with(|| std::any::type_name::<T>().to_owned());
        self.put_encoded(key, DataType::Json, &encoded, opts).await
    }

    /// Starts a streaming write of raw bytes: memory stays bounded by about two frames whatever
    /// the value's size. Nothing is visible until [`ValueWriter::finish`].
    pub fn writer(&self, key: &CacheKey, opts: PutOptions) -> Result<ValueWriter> {
        ValueWriter::new(self.clone(), key.clone(), DataType::Bytes, opts)
    }

    pub(crate) fn new_encoder(&self, opts: &PutOptions) -> Result<ContainerEncoder> {
        let config = &self.inner.config;
        ContainerEncoder::new(
            opts.compression.unwrap_or(config.compression),
            config.frame_size,
            config.signing_key.is_some(),
        )
    }

    async fn put_encoded(
        &self,
        key: &CacheKey,
        data_type: DataType,
        data: &[u8],
        opts: PutOptions,
    ) -> Result<EntryMeta> {
        self.put_planned(key, data_type, data, opts, WritePlan::default())
            .await
    }

    /// Encodes and commits a value held in memory under `plan`.
    pub(crate) async fn put_planned(
        &self,
        key: &CacheKey,
        data_type: DataType,
        data: &[u8],
        opts: PutOptions,
        plan: WritePlan,
    ) -> Result<EntryMeta> {
        if data.len() > STREAM_WRITE_THRESHOLD {
            let mut writer =
                ValueWriter::new(self.clone(), key.clone(), data_type, opts)?.with_plan(plan);
            for chunk in data.chunks(self.inner.config.frame_size) {
                writer.write(chunk).await?;
            }
            return writer.finish().await;
        }
        let mut encoder = self.new_encoder(&opts)?;
        encoder.reserve_for(data.len());
        encoder.push(data)?;
        let (container, encoded) = encoder.finish()?;
        self.commit(
            key,
            data_type,
            opts,
            encoded,
            Container::Memory(Bytes::from(container)),
            plan,
        )
        .await
    }

    /// Publishes the container and commits the index row. Used by every write path.
    pub(crate) async fn commit(
        &self,
        key: &CacheKey,
        data_type: DataType,
        opts: PutOptions,
        encoded: Encoded,
        container: Container,
        plan: WritePlan,
    ) -> Result<EntryMeta> {
        check_user_metadata(key, opts.user_metadata.as_ref())?;
        let memory = match &container {
            Container::Memory(bytes) => Some(bytes),
            Container::Streamed(_) => None,
        };
        let mut record = self.build_record(key, data_type, opts, &encoded, memory, plan);
        // Only a container held in memory is small enough to be inline.
        let replaced = match &record.meta.location {
            Location::Inline => self.put_record(record.clone(), plan).await?,
            Location::Blob(id) => {
                let id = id.clone();
                self.commit_blob(&mut record, id, container, plan).await?
            }
        };
        let meta = record.meta;
        if let Some(old) = replaced.as_ref() {
            if let Some(old_blob) = old.location.blob_id() {
                if Some(old_blob) != meta.location.blob_id() {
                    self.reclaim(&[(old_blob.clone(), old.stored_size)]).await;
                }
            }
        }
        tracing::debug!(key = %meta.key, raw = meta.raw_size, stored = meta.stored_size, "put");
        Ok(meta)
    }

    /// The signed index record of an encoded value, written now. It is inline when the
    /// container is held in memory (`memory`) and small enough, else it names its blob.
    pub(crate) fn build_record(
        &self,
        key: &CacheKey,
        data_type: DataType,
        opts: PutOptions,
        encoded: &Encoded,
        memory: Option<&Bytes>,
        plan: WritePlan,
    ) -> EntryRecord {
        let config = &self.inner.config;
        let now = self.now();
        let inline = memory
            .filter(|bytes| bytes.len() <= config.inline_threshold)
            .cloned();
        let location = match inline {
            Some(_) => Location::Inline,
            None => Location::Blob(BlobId::from_digest(&encoded.digest)),
        };
        let mut meta = EntryMeta {
            key: key.clone(),
            params: opts.params,
            location,
            data_type,
            type_name: opts.type_name,
            compression: opts.compression.unwrap_or(config.compression),
            raw_size: encoded.raw_size,
            stored_size: encoded.stored_size,
            digest: encoded.digest,
            created_at: plan.created_at.unwrap_or(now),
            updated_at: now,
            accessed_at: now,
            access_count: 0,
            expires_at: opts.ttl.map(|ttl| now.plus(ttl)).or(opts.expires_at),
            tags: opts.tags,
            user_metadata: opts.user_metadata,
            signature: None,
            blob_etag: None,
        };
        if let Some(signing) = &config.signing_key {
            meta.signature = Some(signing.sign(&meta));
        }
        EntryRecord {
            meta,
            inline_data: inline,
        }
    }

    /// Publishes the blob (unless an identical one exists), records its ETag in `record` and
    /// commits the row; retries when a collector claimed the blob in between.
    async fn commit_blob(
        &self,
        record: &mut EntryRecord,
        id: BlobId,
        container: Container,
        plan: WritePlan,
    ) -> Result<Option<EntryMeta>> {
        let size = record.meta.stored_size;
        let mut container = Some(container);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.reserve(&id, size).await?;
            // Where the store can put-if-absent, the value is published directly: the store
            // keeps an existing copy itself (a streamed upload is then discarded by `finish`),
            // which saves a HEAD request per put of new content (the common case) at the price
            // of sending a duplicate's bytes. An existing copy with another encoding of the
            // same content is kept; it reads back the same (each frame names its codec, the
            // digest checks the result).
            let put_if_absent = self.inner.blobs.capabilities().conditional_put;
            let existing = if put_if_absent {
                None
            } else {
                self.inner.blobs.head(&id).await?
            };
            if let Some(info) = existing.as_ref().filter(|info| info.size == size) {
                record.meta.blob_etag = info.etag.clone();
            } else {
                // Missing, or a different encoding of the same content: publish ours (equally valid).
                let receipt = match container.take() {
                    Some(Container::Memory(bytes)) => {
                        let receipt = self.inner.blobs.put(&id, bytes.clone()).await?;
                        container = Some(Container::Memory(bytes));
                        receipt
                    }
                    Some(Container::Streamed(writer)) => writer.finish(&id).await?,
                    None => {
                        return Err(Error::Conflict {
                            what: format!("blob {id}"),
                            detail: "the blob was garbage-collected while this streamed value was being committed; write the value again".into(),
                        });
                    }
                };
                record.meta.blob_etag = receipt.etag;
            }
            match self.put_record(record.clone(), plan).await {
                Ok(replaced) => {
                    if let Some(Container::Streamed(writer)) = container {
                        // The identical blob already existed: our upload is redundant.
                        writer.abort().await?;
                    }
                    return Ok(replaced);
                }
                Err(Error::Conflict { .. }) if attempt < COMMIT_ATTEMPTS => {
                    tracing::debug!(blob = %id, attempt, "blob collected during commit; retrying");
                }
                Err(e) => {
                    if let Some(Container::Streamed(writer)) = container {
                        let _ = writer.abort().await;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Writes one index record under `plan`'s condition; returns the entry it replaced. A blob
    /// that is not usable is `Error::Conflict` (as with an unconditional put).
    pub(crate) async fn put_record(
        &self,
        record: EntryRecord,
        plan: WritePlan,
    ) -> Result<Option<EntryMeta>> {
        if plan.condition == WriteCondition::Always {
            return self.inner.meta.put(record).await;
        }
        let key = record.meta.key.clone();
        let blob = record.meta.location.blob_id().cloned();
        let outcome = self
            .inner
            .meta
            .put_many(vec![record], plan.condition)
            .await?
            .pop();
        match outcome {
            Some(PutOutcome::Written { replaced }) => Ok(replaced),
            Some(PutOutcome::ConditionFailed) => Err(plan.condition_error(&key)),
            Some(PutOutcome::BlobUnavailable) => Err(Error::Conflict {
                what: format!("blob {}", blob.map(|b| b.to_string()).unwrap_or_default()),
                detail: "the blob was claimed for collection before the entry was committed".into(),
            }),
            None => Err(Error::backend(
                self.inner.meta.name(),
                "put_many answered no outcome for one record",
            )),
        }
    }

    pub(crate) async fn reserve(&self, id: &BlobId, size: u64) -> Result<()> {
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(2);
        loop {
            let now = self.now();
            let config = &self.inner.config;
            let stale_before = now.minus(config.stale_claim_after);
            match self
                .inner
                .meta
                .reserve_blob(id, size, now.plus(config.blob_lease), stale_before)
                .await
            {
                Err(Error::Conflict { .. }) if started.elapsed() < RESERVE_PATIENCE => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(250));
                }
                other => return other,
            }
        }
    }

    /// Deletes blobs that no entry references any more (best effort: a blob still under a
    /// writer's lease is left for the next [`Store::gc`]), given with their stored sizes (from
    /// the entries that referenced them, so no HEAD request is needed to count the bytes).
    /// Returns (blobs deleted, bytes freed).
    pub(crate) async fn reclaim(&self, blobs: &[(BlobId, u64)]) -> (u64, u64) {
        let result = async {
            let ids: Vec<BlobId> = blobs.iter().map(|(id, _)| id.clone()).collect();
            let claimed = self
                .inner
                .meta
                .claim_unreferenced_blobs(Some(&ids), self.now(), ids.len())
                .await?;
            let sizes: HashMap<BlobId, u64> = blobs.iter().cloned().collect();
            self.delete_claimed(&claimed, &sizes).await
        }
        .await;
        result.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not reclaim unreferenced blobs; gc will retry");
            (0, 0)
        })
    }

    /// Deletes claimed blobs and releases their claims; returns (count, bytes). Sizes not in
    /// `sizes` are asked of the blob store.
    async fn delete_claimed(
        &self,
        claimed: &[BlobId],
        sizes: &HashMap<BlobId, u64>,
    ) -> Result<(u64, u64)> {
        let (mut count, mut bytes) = (0, 0);
        for id in claimed {
            let size = match sizes.get(id) {
                Some(size) => *size,
                None => match self.inner.blobs.head(id).await {
                    Ok(Some(info)) => info.size,
                    Ok(None) => continue, // already gone: nothing to delete
                    Err(_) => 0,          // the delete below reports what is wrong
                },
            };
            match self.inner.blobs.delete(id).await {
                Ok(true) => {
                    count += 1;
                    bytes += size;
                }
                Ok(false) => {}
                // Released anyway: the file becomes an unregistered leftover that a later gc
                // scan claims again, and writers are not blocked by a claim meanwhile.
                Err(e) => tracing::warn!(blob = %id, error = %e, "could not delete blob"),
            }
        }
        self.inner.meta.release_claimed_blobs(claimed).await?;
        Ok((count, bytes))
    }

    // ---------------------------------------------------------------- reads

    /// Finds an entry. With signing on, an unsigned or mis-signed entry is `Error::Tampered`.
    pub async fn lookup(&self, key: &CacheKey) -> Result<Option<StoredEntry>> {
        let Some(record) = self.inner.meta.get(key).await? else {
            return Ok(None);
        };
        self.verify_signature(&record.meta)?;
        Ok(Some(StoredEntry {
            meta: record.meta,
            inline: record.inline_data,
        }))
    }

    /// Checks an entry's signature as reads do: `Error::Tampered` when signing is on and the
    /// entry is unsigned or mis-signed; always `Ok` with signing off. (Its data is not read.)
    pub fn verify_entry(&self, meta: &EntryMeta) -> Result<()> {
        self.verify_signature(meta)
    }

    pub(crate) fn verify_signature(&self, meta: &EntryMeta) -> Result<()> {
        match &self.inner.config.signing_key {
            Some(signing) => signing.verify(meta),
            None => Ok(()),
        }
    }

    /// Decodes and verifies an inline entry's content (no I/O; access not recorded); `None`
    /// for an entry whose value lives in a blob.
    pub(crate) fn decode_inline(&self, entry: &StoredEntry) -> Option<Result<Bytes>> {
        if entry.meta.location != Location::Inline {
            return None;
        }
        let what = entry.meta.key.to_string();
        let Some(stored) = &entry.inline else {
            return Some(Err(Error::corrupt(&what, "inline entry without data")));
        };
        Some(
            format::decode_all(&what, stored.clone(), entry.meta.raw_size)
                .and_then(|(raw, info)| verify_content(&entry.meta, &info, &raw).map(|()| raw)),
        )
    }

    /// Reads and verifies an entry's raw (encoded) content, whatever its data type.
    pub async fn read_raw(&self, entry: &StoredEntry) -> Result<Bytes> {
        let what = entry.meta.key.to_string();
        let (raw, info) = match (&entry.meta.location, &entry.inline) {
            (Location::Inline, Some(stored)) => {
                format::decode_all(&what, stored.clone(), entry.meta.raw_size)?
            }
            (Location::Inline, None) => {
                return Err(Error::corrupt(&what, "inline entry without data"));
            }
            (Location::Blob(id), _) if entry.meta.stored_size <= STREAM_READ_THRESHOLD => {
                let stored = self
                    .inner
                    .blobs
                    .get(id)
                    .await
                    .map_err(|e| missing_blob(&what, id, e))?;
                format::decode_all(&what, stored, entry.meta.raw_size)?
            }
            (Location::Blob(_), _) => {
                let mut reader = self.open_reader(entry).await?;
                // Capacity is capped so that a damaged size field cannot demand a huge allocation.
                let cap = usize::try_from(entry.meta.raw_size)
                    .unwrap_or(usize::MAX)
                    .min(1 << 30);
                let mut out = Vec::with_capacity(cap);
                while let Some(chunk) = reader.next_chunk().await? {
                    out.extend_from_slice(&chunk);
                }
                self.record_access(&entry.meta).await;
                return Ok(Bytes::from(out));
            }
        };
        verify_content(&entry.meta, &info, &raw)?;
        self.record_access(&entry.meta).await;
        Ok(raw)
    }

    /// Reads a raw-bytes entry. An entry holding a serde value is `Error::TypeMismatch`.
    pub async fn read_bytes(&self, entry: &StoredEntry) -> Result<Bytes> {
        expect_type(&entry.meta, &DataType::Bytes, "bytes")?;
        self.read_raw(entry).await
    }

    /// Reads and decodes a serde value (MessagePack or JSON entries).
    pub async fn read_value<T: DeserializeOwned>(&self, entry: &StoredEntry) -> Result<T> {
        let expected = std::any::type_name::<T>();
        let mismatch = |found: String| Error::TypeMismatch {
            key: entry.meta.key.to_string(),
            expected: expected.to_owned(),
            found,
        };
        match &entry.meta.data_type {
            DataType::MessagePack => {
                let raw = self.read_raw(entry).await?;
                rmp_serde::from_slice(&raw).map_err(|e| {
                    mismatch(format!(
                        "a MessagePack value that does not decode as it ({e})"
                    ))
                })
            }
            DataType::Json => {
                let raw = self.read_raw(entry).await?;
                serde_json::from_slice(&raw)
                    .map_err(|e| mismatch(format!("a JSON value that does not decode as it ({e})")))
            }
            other => Err(mismatch(format!("{other} data"))),
        }
    }

    /// Opens a verified stream over an entry's raw content (bounded memory).
    pub async fn open_reader(&self, entry: &StoredEntry) -> Result<ValueReader> {
        let what = entry.meta.key.to_string();
        let source = match (&entry.meta.location, &entry.inline) {
            (Location::Inline, Some(stored)) => {
                let stored = stored.clone();
                Box::pin(futures_util::stream::once(async move { Ok(stored) }))
                    as cachet_core::ByteStream
            }
            (Location::Inline, None) => {
                return Err(Error::corrupt(&what, "inline entry without data"));
            }
            (Location::Blob(id), _) => self
                .inner
                .blobs
                .get_stream(id)
                .await
                .map_err(|e| missing_blob(&what, id, e))?,
        };
        Ok(ValueReader::new(entry.meta.clone(), source))
    }

    /// Looks up and reads a raw-bytes entry.
    pub async fn get_bytes(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        match self.lookup(key).await? {
            Some(entry) => self.read_bytes(&entry).await.map(Some),
            None => Ok(None),
        }
    }

    /// Looks up and decodes a serde value.
    pub async fn get_value<T: DeserializeOwned>(&self, key: &CacheKey) -> Result<Option<T>> {
        match self.lookup(key).await? {
            Some(entry) => self.read_value(&entry).await.map(Some),
            None => Ok(None),
        }
    }

    /// Looks up an entry and opens a stream over its content.
    pub async fn reader(&self, key: &CacheKey) -> Result<Option<ValueReader>> {
        match self.lookup(key).await? {
            Some(entry) => {
                let reader = self.open_reader(&entry).await?;
                self.record_access(&entry.meta).await;
                Ok(Some(reader))
            }
            None => Ok(None),
        }
    }

    /// An entry's metadata without its data (signature verified when signing is on).
    pub async fn metadata(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        let meta = self.inner.meta.get_meta(key).await?;
        if let Some(meta) = &meta {
            self.verify_signature(meta)?;
        }
        Ok(meta)
    }

    /// Whether an entry exists (expired or not: storage does not interpret expiry).
    pub async fn exists(&self, key: &CacheKey) -> Result<bool> {
        Ok(self.inner.meta.get_meta(key).await?.is_some())
    }

    pub(crate) async fn record_access(&self, meta: &EntryMeta) {
        let busy = self.inner.access_gate.busy();
        if let Some(batch) = self
            .inner
            .access
            .record(&meta.key, self.now(), meta.accessed_at, busy)
        {
            if let Some(batch) = spawn_batch(&self.inner.meta, &self.inner.access_gate, batch) {
                if let Err(e) = write_batch_now(&self.inner.meta, batch).await {
                    tracing::warn!(error = %e, "could not record access times");
                }
            }
        }
    }

    // ---------------------------------------------------------------- management

    /// Deletes an entry; its blob is reclaimed when no other entry references it.
    /// Returns whether the entry existed.
    pub async fn delete(&self, key: &CacheKey) -> Result<bool> {
        match self.inner.meta.delete(key).await? {
            Some(old) => {
                if let Some(id) = old.location.blob_id() {
                    self.reclaim(&[(id.clone(), old.stored_size)]).await;
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Deletes every entry that expired at or before `now`, in atomic batches (an entry
    /// rewritten meanwhile with a later expiry survives), and reclaims the blobs no entry
    /// references any more (blobs still under a writer's lease wait for the next [`Store::gc`]).
    pub async fn delete_expired(&self, now: Timestamp) -> Result<ExpiredReport> {
        let mut report = ExpiredReport::default();
        loop {
            let batch = self.delete_expired_batch(now, GC_BATCH).await?;
            if batch.entries.is_empty() {
                break;
            }
            report.entries_removed += batch.entries.len() as u64;
            report
                .keys
                .extend(batch.entries.iter().map(|m| m.key.clone()));
            report.blobs_deleted += batch.blobs_deleted;
            report.bytes_freed += batch.blob_bytes_deleted;
        }
        Ok(report)
    }

    /// Lists entries' metadata (see [`ListQuery`]).
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<EntryMeta>> {
        self.inner.meta.list(query).await
    }

    /// Changes an entry's expiry (re-signing it when signing is on). Returns `false` if the key
    /// does not exist.
    ///
    /// With signing on, the new signature covers the entry as read; the index applies it only
    /// while the entry still carries the signature that was read, and a concurrent rewrite makes
    /// this read and sign again (so a race never leaves an entry that fails verification).
    pub async fn set_expiry(&self, key: &CacheKey, expires_at: Option<Timestamp>) -> Result<bool> {
        let read = self.metadata(key).await?.map(|meta| (meta, expires_at));
        Ok(self.set_expiry_as_read(vec![read]).await?[0])
    }

    /// Index totals.
    pub async fn stats(&self) -> Result<IndexStats> {
        self.inner.meta.stats().await
    }

    /// Writes pending access times (waiting for batches already being written) and flushes the
    /// index.
    pub async fn flush(&self) -> Result<()> {
        self.inner.access_gate.wait_idle().await;
        write_batch_now(&self.inner.meta, self.inner.access.take_all()).await?;
        self.inner.meta.flush().await
    }

    /// Garbage collection: deletes blobs no entry references (once no writer's lease protects
    /// them), blobs with no registration at all (crash leftovers) and abandoned temporary uploads.
    ///
    /// Safe to run while other processes read and write: see `docs/GC.md`.
    pub async fn gc(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        let stale_before = self.now().minus(self.inner.config.stale_claim_after);
        loop {
            // Blobs a crashed collector claimed but never deleted.
            let abandoned = self
                .inner
                .meta
                .reclaim_abandoned_claims(self.now(), stale_before, GC_BATCH)
                .await?;
            if abandoned.is_empty() {
                break;
            }
            let (count, bytes) = self.delete_claimed(&abandoned, &HashMap::new()).await?;
            report.blobs_deleted += count;
            report.bytes_freed += bytes;
        }
        loop {
            let claimed = self
                .inner
                .meta
                .claim_unreferenced_blobs(None, self.now(), GC_BATCH)
                .await?;
            if claimed.is_empty() {
                break;
            }
            let (count, bytes) = self.delete_claimed(&claimed, &HashMap::new()).await?;
            report.blobs_deleted += count;
            report.bytes_freed += bytes;
        }
        let mut listing = self.inner.blobs.list().await?;
        while let Some(info) = listing.next().await {
            let info = info?;
            if self
                .inner
                .meta
                .claim_unregistered_blob(&info.id, self.now())
                .await?
            {
                let size = HashMap::from([(info.id.clone(), info.size)]);
                let (count, bytes) = self
                    .delete_claimed(std::slice::from_ref(&info.id), &size)
                    .await?;
                report.orphans_deleted += count;
                report.bytes_freed += bytes;
            }
        }
        let cutoff = self.now().minus(self.inner.config.temporary_max_age);
        report.temporaries_removed = self.inner.blobs.cleanup_temporary(cutoff).await?;
        tracing::info!(?report, "gc finished");
        Ok(report)
    }
}

pub(crate) fn encode_msgpack<T: Serialize + ?Sized>(key: &CacheKey, value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::Encode {
        key: key.to_string(),
        detail: e.to_string(),
    })
}

pub(crate) fn encode_json<T: Serialize + ?Sized>(key: &CacheKey, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Encode {
        key: key.to_string(),
        detail: e.to_string(),
    })
}

/// User metadata is a JSON object (its fields are what filters query).
pub(crate) fn check_user_metadata(
    key: &CacheKey,
    metadata: Option<&serde_json::Value>,
) -> Result<()> {
    match metadata {
        None | Some(serde_json::Value::Object(_)) => Ok(()),
        Some(other) => Err(Error::config(
            "user_metadata",
            format!("the metadata of {key} must be a JSON object of named fields, not `{other}`"),
        )),
    }
}

pub(crate) fn missing_blob(what: &str, id: &BlobId, e: Error) -> Error {
    match e {
        Error::NotFound { .. } => Error::corrupt(
            what,
            format!("its blob {id} is missing from the blob store"),
        ),
        other => other,
    }
}

fn expect_type(meta: &EntryMeta, expected: &DataType, expected_name: &str) -> Result<()> {
    if &meta.data_type == expected {
        Ok(())
    } else {
        Err(Error::TypeMismatch {
            key: meta.key.to_string(),
            expected: expected_name.to_owned(),
            found: format!("{} data", meta.data_type),
        })
    }
}

/// Checks decoded content against what the index row promises.
pub(crate) fn verify_content(meta: &EntryMeta, info: &TrailerInfo, raw: &[u8]) -> Result<()> {
    let sha256 = matches!(meta.digest, cachet_core::ContentDigest::Sha256(_))
        .then(|| ring::digest::digest(&ring::digest::SHA256, raw));
    verify_digest(meta, info, sha256)
}

/// Checks size and digest. The xxh3-128 comes from the verified trailer; `sha256` is the
/// SHA-256 of the raw content, computed only for entries whose digest is SHA-256.
pub(crate) fn verify_digest(
    meta: &EntryMeta,
    info: &TrailerInfo,
    sha256: Option<ring::digest::Digest>,
) -> Result<()> {
    let what = meta.key.to_string();
    if info.raw_size != meta.raw_size {
        return Err(Error::corrupt(
            &what,
            format!(
                "content is {} bytes, the index says {}",
                info.raw_size, meta.raw_size
            ),
        ));
    }
    match meta.digest {
        cachet_core::ContentDigest::Xxh3_128(expected) => {
            if expected != info.content_xxh3 {
                return Err(Error::corrupt(
                    &what,
                    "content does not match the digest recorded in the index",
                ));
            }
        }
        cachet_core::ContentDigest::Sha256(expected) => {
            if sha256.as_ref().map(ring::digest::Digest::as_ref) != Some(&expected[..]) {
                return Err(Error::Tampered {
                    key: what,
                    detail: "content does not match its signed SHA-256 digest".into(),
                });
            }
        }
    }
    Ok(())
}
