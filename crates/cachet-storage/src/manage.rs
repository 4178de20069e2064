//! Management operations of the engine: update in place, batches of gets, puts, updates,
//! deletes and expiry changes, deletes by filter, and copy / move between keys.
//!
//! Every batch costs one index round trip (and one transaction) for the whole batch where the
//! backend has them, plus the blob I/O of the values that live in blobs.

use std::collections::HashMap;

use bytes::Bytes;
use cachet_core::{
    BlobId, CacheKey, DataType, EntryFilter, EntryMeta, EntryRecord, Error, ExpiryUpdate,
    ListQuery, Location, MoveOutcome, PutOutcome, Result, Timestamp, WriteCondition,
};
use futures_util::StreamExt;
use serde::Serialize;

use crate::store::{
    Container, PutOptions, Store, StoredEntry, WritePlan, check_user_metadata, encode_json,
    encode_msgpack,
};

/// Entries deleted per index round trip by [`Store::delete_where`].
const DELETE_BATCH: usize = 500;
/// Blob reads in flight at once while reading a batch.
const BATCH_BLOB_READS: usize = 16;
/// How many times a move is retried when the source is rewritten between read and move.
const MOVE_ATTEMPTS: u32 = 5;

/// One value of a batch write ([`Store::put_many`], [`Store::update_many`]): its key, its
/// encoded bytes and how they are to be read back.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// The entry's key.
    pub key: CacheKey,
    /// What the bytes are.
    pub data_type: DataType,
    /// The encoded value (raw bytes, MessagePack or JSON).
    pub data: Bytes,
    /// Per-entry options (ignored by updates except `type_name`, `compression` and `ttl` /
    /// `expires_at`, which replace the entry's when set).
    pub options: PutOptions,
}

impl BatchItem {
    /// Raw bytes.
    pub fn bytes(key: CacheKey, data: impl Into<Bytes>, options: PutOptions) -> Self {
        BatchItem {
            key,
            data_type: DataType::Bytes,
            data: data.into(),
            options,
        }
    }

    /// A serde value, encoded as MessagePack (as [`Store::put_value`] does).
    pub fn value<T: Serialize + ?Sized>(
        key: CacheKey,
        value: &T,
        mut options: PutOptions,
    ) -> Result<Self> {
        let data = encode_msgpack(&key, value)?;
        options
            .type_name
            .get_or_insert_with(|| std::any::type_name::<T>().to_owned());
        Ok(BatchItem {
            key,
            data_type: DataType::MessagePack,
            data: data.into(),
            options,
        })
    }

    /// A serde value, encoded as JSON (as [`Store::put_json`] does).
    pub fn json<T: Serialize + ?Sized>(
        key: CacheKey,
        value: &T,
        mut options: PutOptions,
    ) -> Result<Self> {
        let data = encode_json(&key, value)?;
        options
            .type_name
            .get_or_insert_with(|| std::any::type_name::<T>().to_owned());
        Ok(BatchItem {
            key,
            data_type: DataType::Json,
            data: data.into(),
            options,
        })
    }
}

/// Pages of the entries matching a filter, in key order (see [`Store::pages`]).
#[derive(Debug)]
pub struct EntryPages {
    store: Store,
    query: ListQuery,
    done: bool,
}

impl EntryPages {
    /// The next page (at most the page size), or `None` after the last matching entry.
    /// Each page is one index round trip; memory holds one page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<EntryMeta>>> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.list(&self.query).await?;
        match page.last() {
            Some(last) => {
                self.query.after = Some(last.key.clone());
                Ok(Some(page))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// What [`Store::delete_where`] deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeleteReport {
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// The keys of the entries deleted (or that would be), in key order for a dry run.
    pub keys: Vec<CacheKey>,
    /// Sum of their raw sizes.
    pub raw_bytes: u64,
    /// Sum of their stored sizes.
    pub stored_bytes: u64,
    /// Blobs no entry referenced any more, deleted (0 in a dry run).
    pub blobs_deleted: u64,
    /// Bytes those blobs occupied (0 in a dry run).
    pub bytes_freed: u64,
}

impl DeleteReport {
    fn count(&mut self, meta: &EntryMeta) {
        self.keys.push(meta.key.clone());
        self.raw_bytes += meta.raw_size;
        self.stored_bytes += meta.stored_size;
    }

    /// How many entries were (or would be) deleted.
    pub fn entries(&self) -> u64 {
        self.keys.len() as u64
    }
}

impl Store {
    /// Walks the entries matching `filter` page by page (`page_size` per index round trip,
    /// 0 for the default), so that any number of entries is visited with bounded memory.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachet_core::{memory::{MemoryBlobs, MemoryMetadata}, CacheKey, EntryFilter};
    /// # use cachet_storage::{PutOptions, Store, StoreConfig};
    /// # let store = Store::new(Arc::new(MemoryMetadata::new()), Arc::new(MemoryBlobs::new()),
    /// #     StoreConfig::default())?;
    /// for i in 0..5 {
    ///     store.put_bytes(&CacheKey::explicit("", format!("k{i}"))?, b"v", PutOptions::default()).await?;
    /// }
    /// let mut pages = store.pages(EntryFilter::all(), 2);
    /// let mut sizes = Vec::new();
    /// while let Some(page) = pages.next_page().await? {
    ///     sizes.push(page.len());
    /// }
    /// assert_eq!(sizes, [2, 2, 1]);
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub fn pages(&self, filter: EntryFilter, page_size: usize) -> EntryPages {
        EntryPages {
            store: self.clone(),
            query: ListQuery::matching(filter).with_limit(page_size),
            done: false,
        }
    }

    // ---------------------------------------------------------------- update

    /// Replaces the value of an existing entry with raw bytes, keeping the entry: its key,
    /// parameters, tags, user metadata, creation time and expiry. Derived fields (sizes,
    /// digest, data type, `updated_at`, signature) are refreshed; the old blob is reclaimed when
    /// no other entry shares it.
    ///
    /// # Errors
    /// `Error::NotFound` when no entry has the key (also when it is deleted concurrently: the
    /// update never creates an entry).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachet_core::{memory::{MemoryBlobs, MemoryMetadata}, CacheKey, Error};
    /// # use cachet_storage::{PutOptions, Store, StoreConfig};
    /// # let store = Store::new(Arc::new(MemoryMetadata::new()), Arc::new(MemoryBlobs::new()),
    /// #     StoreConfig::default())?;
    /// let key = CacheKey::explicit("", "report")?;
    /// let opts = PutOptions { tags: vec!["daily".into()], ..PutOptions::default() };
    /// store.put_bytes(&key, b"v1", opts).await?;
    /// let meta = store.update_bytes(&key, b"version 2").await?;
    /// assert_eq!(meta.tags, ["daily"]); // kept
    /// assert_eq!(store.get_bytes(&key).await?.unwrap(), &b"version 2"[..]);
    ///
    /// let missing = CacheKey::explicit("", "nope")?;
    /// assert!(matches!(store.update_bytes(&missing, b"x").await, Err(Error::NotFound { .. })));
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub async fn update_bytes(&self, key: &CacheKey, data: &[u8]) -> Result<EntryMeta> {
        self.update_encoded(key, DataType::Bytes, data, PutOptions::default())
            .await
    }

    /// Replaces the value of an existing entry with a serde value (MessagePack); see
    /// [`update_bytes`](Self::update_bytes).
    pub async fn update_value<T: Serialize + ?Sized>(
        &self,
        key: &CacheKey,
        value: &T,
    ) -> Result<EntryMeta> {
        let item = BatchItem::value(key.clone(), value, PutOptions::default())?;
        self.update_encoded(key, item.data_type, &item.data, item.options)
            .await
    }

    /// Replaces the value of an existing entry with a serde value (JSON); see
    /// [`update_bytes`](Self::update_bytes).
    pub async fn update_json<T: Serialize + ?Sized>(
        &self,
        key: &CacheKey,
        value: &T,
    ) -> Result<EntryMeta> {
        let item = BatchItem::json(key.clone(), value, PutOptions::default())?;
        self.update_encoded(key, item.data_type, &item.data, item.options)
            .await
    }

    async fn update_encoded(
        &self,
        key: &CacheKey,
        data_type: DataType,
        data: &[u8],
        options: PutOptions,
    ) -> Result<EntryMeta> {
        let Some(existing) = self.metadata(key).await? else {
            return Err(update_plan(None).condition_error(key));
        };
        self.update_entry_as_read(&existing, data_type, data, options)
            .await
    }

    /// Replaces the value of the entry `existing` describes, as the caller read it (for example
    /// after checking that it is live), with encoded `data` of `data_type`, without reading the
    /// entry again: otherwise the same as [`update_bytes`](Self::update_bytes) and its
    /// siblings (the write still fails with `Error::NotFound` if the entry is gone). Of
    /// `options`, only `type_name`, `compression` and `ttl` / `expires_at` apply.
    pub async fn update_entry_as_read(
        &self,
        existing: &EntryMeta,
        data_type: DataType,
        data: &[u8],
        options: PutOptions,
    ) -> Result<EntryMeta> {
        let options = kept_options(existing, options);
        self.put_planned(
            &existing.key,
            data_type,
            data,
            options,
            update_plan(Some(existing)),
        )
        .await
    }

    // ---------------------------------------------------------------- batches

    /// Looks up many entries with one index round trip; one slot per key, in order: the
    /// verified entry, `None` when absent, or the key's own error (a signature that does not
    /// verify). Storage does not interpret expiry.
    pub async fn lookup_many(&self, keys: &[CacheKey]) -> Result<Vec<Result<Option<StoredEntry>>>> {
        let records = self.metadata_backend().get_many(keys).await?;
        Ok(records
            .into_iter()
            .map(|record| match record {
                None => Ok(None),
                Some(record) => {
                    self.verify_signature(&record.meta)?;
                    Ok(Some(StoredEntry {
                        meta: record.meta,
                        inline: record.inline_data,
                    }))
                }
            })
            .collect())
    }

    /// Reads the raw content of many looked-up entries: values held inline cost no I/O, values
    /// in blobs are fetched a few at a time. One result per entry, in order.
    pub async fn read_raw_many(&self, entries: &[&StoredEntry]) -> Vec<Result<Bytes>> {
        // Inline values are decoded here, without a future each; blobs are fetched concurrently.
        let mut out: Vec<Option<Result<Bytes>>> = entries
            .iter()
            .map(|entry| self.decode_inline(entry))
            .collect();
        let blob_reads: Vec<(usize, Result<Bytes>)> = futures_util::stream::iter(
            entries
                .iter()
                .enumerate()
                .filter(|(slot, _)| out[*slot].is_none())
                .map(|(slot, entry)| async move { (slot, self.read_raw(entry).await) }),
        )
        .buffer_unordered(BATCH_BLOB_READS)
        .collect()
        .await;
        for (slot, read) in blob_reads {
            out[slot] = Some(read);
        }
        for (entry, read) in entries.iter().zip(&out) {
            if matches!(read, Some(Ok(_))) && entry.meta.location == Location::Inline {
                self.record_access(&entry.meta).await;
            }
        }
        out.into_iter()
            .map(|r| r.expect("every entry read"))
            .collect()
    }

    /// Reads many raw-bytes entries: one index round trip for the batch. One slot per key, in
    /// order: the value, `None` when absent, or that key's error (damaged, wrong type).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachet_core::{memory::{MemoryBlobs, MemoryMetadata}, CacheKey};
    /// # use cachet_storage::{BatchItem, PutOptions, Store, StoreConfig};
    /// # let store = Store::new(Arc::new(MemoryMetadata::new()), Arc::new(MemoryBlobs::new()),
    /// #     StoreConfig::default())?;
    /// let keys: Vec<CacheKey> = (0..3).map(|i| CacheKey::explicit("", format!("k{i}")))
    ///     .collect::<Result<_, _>>()?;
    /// store.put_many(vec![
    ///     BatchItem::bytes(keys[0].clone(), &b"zero"[..], PutOptions::default()),
    ///     BatchItem::bytes(keys[2].clone(), &b"two"[..], PutOptions::default()),
    /// ]).await?;
    /// let got = store.get_bytes_many(&keys).await?;
    /// assert_eq!(got[0].as_ref().unwrap().as_deref(), Some(&b"zero"[..]));
    /// assert!(got[1].as_ref().unwrap().is_none()); // a miss
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub async fn get_bytes_many(&self, keys: &[CacheKey]) -> Result<Vec<Result<Option<Bytes>>>> {
        let looked_up = self.lookup_many(keys).await?;
        let found: Vec<&StoredEntry> = looked_up
            .iter()
            .filter_map(|slot| slot.as_ref().ok().and_then(Option::as_ref))
            .collect();
        let mut values = self.read_raw_many(&found).await.into_iter();
        Ok(looked_up
            .into_iter()
            .map(|slot| {
                let Some(entry) = slot? else {
                    return Ok(None);
                };
                let raw = values.next().expect("one read per entry found")?;
                if entry.meta.data_type != DataType::Bytes {
                    return Err(Error::TypeMismatch {
                        key: entry.meta.key.to_string(),
                        expected: "bytes".into(),
                        found: format!("{} data", entry.meta.data_type),
                    });
                }
                Ok(Some(raw))
            })
            .collect())
    }

    /// Writes many entries: each value is encoded (and its blob published) first, then every
    /// index row is committed in **one transaction**. Returns the written entries' metadata,
    /// in order. Blobs of replaced entries are reclaimed.
    ///
    /// Values larger than the streaming threshold (8 MiB) are written one by one instead,
    /// each in its own transaction.
    ///
    /// See [`get_bytes_many`](Self::get_bytes_many) for an example.
    pub async fn put_many(&self, items: Vec<BatchItem>) -> Result<Vec<EntryMeta>> {
        let results = self
            .write_many(items, WriteCondition::Always, |_| Ok(None))
            .await?;
        results
            .into_iter()
            .map(|r| r.map(|m| m.expect("an unconditional write lands")))
            .collect()
    }

    /// Replaces the values of many existing entries in one transaction (see
    /// [`update_bytes`](Self::update_bytes) for what is kept). One slot per item, in order:
    /// the new metadata, or `None` when no entry has the key (nothing is created).
    pub async fn update_many(&self, items: Vec<BatchItem>) -> Result<Vec<Option<EntryMeta>>> {
        let keys: Vec<CacheKey> = items.iter().map(|i| i.key.clone()).collect();
        let existing: Vec<EntryMeta> = self
            .metadata_backend()
            .get_meta_many(&keys)
            .await?
            .into_iter()
            .flatten()
            .collect();
        for meta in &existing {
            self.verify_signature(meta)?;
        }
        self.update_many_as_read(existing, items).await
    }

    /// [`update_many`](Self::update_many) for entries the caller has read already (`existing`:
    /// the entries to update, verified, for example the live ones): items whose key is not
    /// among them are reported `None` without a write, and nothing is read again.
    pub async fn update_many_as_read(
        &self,
        existing: Vec<EntryMeta>,
        items: Vec<BatchItem>,
    ) -> Result<Vec<Option<EntryMeta>>> {
        let mut existing: HashMap<CacheKey, EntryMeta> = existing
            .into_iter()
            .map(|meta| (meta.key.clone(), meta))
            .collect();
        let results = self
            .write_many(items, WriteCondition::IfPresent, |item| {
                Ok(existing.remove(&item.key))
            })
            .await?;
        results
            .into_iter()
            .map(|r| match r {
                Ok(meta) => Ok(meta),
                Err(Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// Encodes every item, publishes blobs, commits all rows in one `put_many`. `keep` gives,
    /// per item, the existing entry whose fields an update keeps (`Ok(None)`: a plain write;
    /// an update of a missing entry is reported per item as `Error::NotFound`).
    async fn write_many(
        &self,
        items: Vec<BatchItem>,
        condition: WriteCondition,
        mut keep: impl FnMut(&BatchItem) -> Result<Option<EntryMeta>>,
    ) -> Result<Vec<Result<Option<EntryMeta>>>> {
        let mut results: Vec<Option<Result<Option<EntryMeta>>>> = Vec::new();
        let mut records = Vec::new();
        let mut slots = Vec::new();
        let mut plans = Vec::new();
        let mut containers = Vec::new();
        for (slot, item) in items.into_iter().enumerate() {
            results.push(None);
            let kept = keep(&item)?;
            if condition == WriteCondition::IfPresent && kept.is_none() {
                results[slot] = Some(Err(update_plan(None).condition_error(&item.key)));
                continue;
            }
            let plan = match condition {
                WriteCondition::IfPresent => update_plan(kept.as_ref()),
                _ => WritePlan {
                    condition,
                    created_at: None,
                },
            };
            let options = match &kept {
                Some(existing) => kept_options(existing, item.options),
                None => item.options,
            };
            check_user_metadata(&item.key, options.user_metadata.as_ref())?;
            if item.data.len() > crate::store::STREAM_WRITE_THRESHOLD {
                let written = self
                    .put_planned(&item.key, item.data_type, &item.data, options, plan)
                    .await;
                results[slot] = Some(written.map(Some));
                continue;
            }
            let (record, container) =
                self.prepare_record(&item.key, item.data_type, &item.data, options, plan)?;
            if let Some(id) = record.meta.location.blob_id() {
                self.publish_blob(id, record.meta.stored_size, &container)
                    .await?;
            }
            containers.push(container);
            records.push(record);
            slots.push(slot);
            plans.push(plan);
        }
        if !records.is_empty() {
            let metas: Vec<EntryMeta> = records.iter().map(|r| r.meta.clone()).collect();
            let outcomes = self.metadata_backend().put_many(records, condition).await?;
            let mut freed = Vec::new();
            for (((outcome, meta), slot), (container, plan)) in outcomes
                .into_iter()
                .zip(metas)
                .zip(slots)
                .zip(containers.into_iter().zip(plans))
            {
                results[slot] = Some(match outcome {
                    PutOutcome::Written { replaced } => {
                        if let Some(old) = replaced {
                            push_freed(&mut freed, &old, &meta);
                        }
                        Ok(Some(meta))
                    }
                    PutOutcome::ConditionFailed => Err(plan.condition_error(&meta.key)),
                    // A collector claimed the blob between publish and commit: do it again alone.
                    PutOutcome::BlobUnavailable => {
                        self.retry_record(meta, container, plan).await.map(Some)
                    }
                });
            }
            if !freed.is_empty() {
                freed.sort();
                freed.dedup_by(|a, b| a.0 == b.0);
                self.reclaim(&freed).await;
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every slot answered"))
            .collect())
    }

    /// Builds the index record of a value held in memory (encoded, signed), without writing.
    fn prepare_record(
        &self,
        key: &CacheKey,
        data_type: DataType,
        data: &[u8],
        options: PutOptions,
        plan: WritePlan,
    ) -> Result<(EntryRecord, Bytes)> {
        let mut encoder = self.new_encoder(&options)?;
        encoder.reserve_for(data.len());
        encoder.push(data)?;
        let (container, encoded) = encoder.finish()?;
        let container = Bytes::from(container);
        let record = self.build_record(key, data_type, options, &encoded, Some(&container), plan);
        Ok((record, container))
    }

    /// Reserves and publishes a blob of a batch (unless an identical copy exists).
    async fn publish_blob(&self, id: &BlobId, size: u64, container: &Bytes) -> Result<()> {
        self.reserve(id, size).await?;
        let put_if_absent = self.blob_backend().capabilities().conditional_put;
        let exists = !put_if_absent
            && self
                .blob_backend()
                .head(id)
                .await?
                .is_some_and(|info| info.size == size);
        if !exists {
            self.blob_backend().put(id, container.clone()).await?;
        }
        Ok(())
    }

    /// Commits one record of a batch again on its own (its blob was claimed meanwhile).
    async fn retry_record(
        &self,
        meta: EntryMeta,
        container: Bytes,
        plan: WritePlan,
    ) -> Result<EntryMeta> {
        let options = PutOptions::of_entry(&meta);
        let encoded = crate::encode::Encoded {
            raw_size: meta.raw_size,
            stored_size: meta.stored_size,
            digest: meta.digest,
        };
        self.commit(
            &meta.key,
            meta.data_type,
            options,
            encoded,
            Container::Memory(container),
            plan,
        )
        .await
    }

    /// Deletes many entries in one transaction; one flag per key, in order: whether it
    /// existed. Blobs no other entry references are reclaimed.
    pub async fn delete_many(&self, keys: &[CacheKey]) -> Result<Vec<bool>> {
        let removed = self.metadata_backend().delete_many(keys).await?;
        let mut blobs: Vec<(BlobId, u64)> = removed
            .iter()
            .flatten()
            .filter_map(|m| Some((m.location.blob_id()?.clone(), m.stored_size)))
            .collect();
        if !blobs.is_empty() {
            blobs.sort();
            blobs.dedup_by(|a, b| a.0 == b.0);
            self.reclaim(&blobs).await;
        }
        Ok(removed.iter().map(Option::is_some).collect())
    }

    /// Changes the expiry of many entries: one index round trip to read them and one
    /// transaction to change them (re-signing each when signing is on). One flag per change,
    /// in order: `false` when the key does not exist.
    pub async fn set_expiry_many(
        &self,
        changes: &[(CacheKey, Option<Timestamp>)],
    ) -> Result<Vec<bool>> {
        let keys: Vec<CacheKey> = changes.iter().map(|(key, _)| key.clone()).collect();
        let metas = self.metadata_backend().get_meta_many(&keys).await?;
        let read = metas
            .into_iter()
            .zip(changes)
            .map(|(meta, (_, at))| meta.map(|meta| (meta, *at)))
            .collect();
        self.set_expiry_as_read(read).await
    }

    /// [`set_expiry_many`](Self::set_expiry_many) for entries the caller has read already:
    /// one slot per change, `None` for an entry that does not exist (reported `false`). The
    /// first attempt writes at once (one transaction); entries rewritten since they were read
    /// are read again and retried.
    pub async fn set_expiry_as_read(
        &self,
        read: Vec<Option<(EntryMeta, Option<Timestamp>)>>,
    ) -> Result<Vec<bool>> {
        let mut applied = vec![false; read.len()];
        let mut pending: Vec<(usize, EntryMeta, Option<Timestamp>)> = read
            .into_iter()
            .enumerate()
            .filter_map(|(slot, change)| change.map(|(meta, at)| (slot, meta, at)))
            .collect();
        for attempt in 0..crate::store::COMMIT_ATTEMPTS {
            if attempt > 0 {
                // Rewritten (or deleted) since they were read: read them again.
                let keys: Vec<CacheKey> = pending.iter().map(|(_, m, _)| m.key.clone()).collect();
                let metas = self.metadata_backend().get_meta_many(&keys).await?;
                pending = pending
                    .into_iter()
                    .zip(metas)
                    .filter_map(|((slot, _, at), meta)| Some((slot, meta?, at)))
                    .collect();
            }
            if pending.is_empty() {
                return Ok(applied);
            }
            let mut updates = Vec::with_capacity(pending.len());
            for (_, meta, at) in &pending {
                self.verify_signature(meta)?;
                let mut meta = meta.clone();
                let expected = meta.signature.clone();
                meta.expires_at = *at;
                meta.updated_at = self.now().max(meta.updated_at);
                let signature = self.config().signing_key.as_ref().map(|k| k.sign(&meta));
                updates.push(ExpiryUpdate {
                    key: meta.key,
                    if_signature: expected.filter(|_| signature.is_some()),
                    expires_at: meta.expires_at,
                    updated_at: meta.updated_at,
                    signature,
                });
            }
            let done = self.metadata_backend().update_expiry_many(&updates).await?;
            pending = pending
                .into_iter()
                .zip(done)
                .filter_map(|(change, ok)| {
                    if ok {
                        applied[change.0] = true;
                        None
                    } else {
                        Some(change)
                    }
                })
                .collect();
            if pending.is_empty() {
                return Ok(applied);
            }
        }
        let what = match pending.as_slice() {
            [(_, meta, _)] => format!("entry {}", meta.key),
            _ => format!("{} entries", pending.len()),
        };
        Err(Error::Conflict {
            what,
            detail: "rewritten concurrently during every attempt to change the expiry; retry"
                .into(),
        })
    }

    // ---------------------------------------------------------------- deletes by filter

    /// Deletes every entry matching `filter`, evaluated inside the index (an SQL `WHERE`), in
    /// atomic batches; reclaims the blobs no entry references any more. With `dry_run`, lists
    /// what would be deleted and changes nothing.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachet_core::{memory::{MemoryBlobs, MemoryMetadata}, CacheKey, EntryFilter, FieldCondition};
    /// # use cachet_storage::{PutOptions, Store, StoreConfig};
    /// # let store = Store::new(Arc::new(MemoryMetadata::new()), Arc::new(MemoryBlobs::new()),
    /// #     StoreConfig::default())?;
    /// for (id, project) in [("a", "x"), ("b", "y"), ("c", "x")] {
    ///     let opts = PutOptions { params: Some(serde_json::json!({"project": project})),
    ///         ..PutOptions::default() };
    ///     store.put_bytes(&CacheKey::explicit("", id)?, b"v", opts).await?;
    /// }
    /// let filter = EntryFilter::all().param(FieldCondition::eq("project", "x"));
    /// let preview = store.delete_where(&filter, true).await?;
    /// assert_eq!(preview.entries(), 2);
    /// assert_eq!(store.list(&Default::default()).await?.len(), 3); // dry run: nothing gone
    /// let done = store.delete_where(&filter, false).await?;
    /// assert_eq!(done.entries(), 2);
    /// assert_eq!(store.list(&Default::default()).await?.len(), 1);
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub async fn delete_where(&self, filter: &EntryFilter, dry_run: bool) -> Result<DeleteReport> {
        filter.validate()?;
        let mut report = DeleteReport {
            dry_run,
            ..DeleteReport::default()
        };
        if dry_run {
            let mut pages = self.pages(filter.clone(), DELETE_BATCH);
            while let Some(page) = pages.next_page().await? {
                page.iter().for_each(|m| report.count(m));
            }
            return Ok(report);
        }
        loop {
            let removed = self
                .metadata_backend()
                .delete_matching(filter, DELETE_BATCH)
                .await?;
            if removed.is_empty() {
                break;
            }
            removed.iter().for_each(|m| report.count(m));
            let mut blobs: Vec<(BlobId, u64)> = removed
                .iter()
                .filter_map(|m| Some((m.location.blob_id()?.clone(), m.stored_size)))
                .collect();
            if !blobs.is_empty() {
                blobs.sort();
                blobs.dedup_by(|a, b| a.0 == b.0);
                let (count, bytes) = self.reclaim(&blobs).await;
                report.blobs_deleted += count;
                report.bytes_freed += bytes;
            }
        }
        tracing::info!(
            entries = report.keys.len(),
            bytes_freed = report.bytes_freed,
            "delete_where"
        );
        Ok(report)
    }

    // ---------------------------------------------------------------- copy and move

    /// Copies an entry to another key without copying its value: the copy references the same
    /// blob (content addressing) or carries the same inline bytes. The copy keeps the source's
    /// parameters, tags, user metadata, data type and expiry; it is created now.
    ///
    /// # Errors
    /// `Error::NotFound` when the source does not exist; `Error::AlreadyExists` when the
    /// destination exists and `overwrite` is off (nothing changes).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachet_core::{memory::{MemoryBlobs, MemoryMetadata}, CacheKey, Error};
    /// # use cachet_storage::{PutOptions, Store, StoreConfig};
    /// # let store = Store::new(Arc::new(MemoryMetadata::new()), Arc::new(MemoryBlobs::new()),
    /// #     StoreConfig::default())?;
    /// let (model, latest) = (CacheKey::explicit("", "model-v7")?, CacheKey::explicit("", "latest")?);
    /// let weights: Vec<u8> = (0..100_000u32).flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()).collect();
    /// store.put_bytes(&model, &weights, PutOptions::default()).await?; // large: a blob
    /// store.copy_entry(&model, &latest, false).await?;
    /// assert_eq!(store.stats().await?.blobs, 1); // one blob, two entries
    /// let again = store.copy_entry(&model, &latest, false).await;
    /// assert!(matches!(again, Err(Error::AlreadyExists { .. })));
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub async fn copy_entry(
        &self,
        from: &CacheKey,
        to: &CacheKey,
        overwrite: bool,
    ) -> Result<EntryMeta> {
        let plan = copy_plan(overwrite);
        if from == to {
            return match self.metadata(from).await? {
                None => Err(Error::not_found(format_args!("entry {from} (copy source)"))),
                Some(_) if !overwrite => Err(plan.condition_error(to)),
                Some(meta) => Ok(meta),
            };
        }
        let source = self.lookup(from).await?;
        self.copy_loop(from, source, to, plan).await
    }

    /// [`copy_entry`](Self::copy_entry) from an entry the caller has looked up already (for
    /// example after checking that it is live): the first attempt does not read it again.
    /// `source.meta.key` must differ from `to`.
    pub async fn copy_entry_as_read(
        &self,
        source: StoredEntry,
        to: &CacheKey,
        overwrite: bool,
    ) -> Result<EntryMeta> {
        let from = source.meta.key.clone();
        self.copy_loop(&from, Some(source), to, copy_plan(overwrite))
            .await
    }

    async fn copy_loop(
        &self,
        from: &CacheKey,
        mut source: Option<StoredEntry>,
        to: &CacheKey,
        plan: WritePlan,
    ) -> Result<EntryMeta> {
        for attempt in 0..crate::store::COMMIT_ATTEMPTS {
            if attempt > 0 {
                source = self.lookup(from).await?;
            }
            let Some(source) = source.take() else {
                return Err(Error::not_found(format_args!("entry {from} (copy source)")));
            };
            let now = self.now();
            let mut meta = source.meta;
            meta.key = to.clone();
            meta.created_at = now;
            meta.updated_at = now;
            meta.accessed_at = now;
            meta.access_count = 0;
            meta.signature = None;
            if let Some(signing) = &self.config().signing_key {
                meta.signature = Some(signing.sign(&meta));
            }
            if let Location::Blob(id) = &meta.location {
                // A lease keeps the blob from being collected should the source go meanwhile.
                self.reserve(id, meta.stored_size).await?;
            }
            let record = EntryRecord {
                meta: meta.clone(),
                inline_data: source.inline,
            };
            match self.put_record(record, plan).await {
                Ok(replaced) => {
                    self.reclaim_replaced(replaced, &meta).await;
                    tracing::debug!(from = %from, to = %to, "copy");
                    return Ok(meta);
                }
                Err(Error::Conflict { .. }) => continue, // blob claimed meanwhile: look again
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            what: format!("entry {from}"),
            detail: "its blob was collected during every attempt to copy it; retry".into(),
        })
    }

    /// Moves an entry to another key atomically (one index transaction): afterwards exactly
    /// one of the two keys holds it, whatever fails or runs concurrently. The value is not
    /// copied; the entry keeps everything but its key (and is re-signed for it).
    ///
    /// # Errors
    /// `Error::NotFound` when the source does not exist; `Error::AlreadyExists` when the
    /// destination exists and `overwrite` is off (nothing changes).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachet_core::{memory::{MemoryBlobs, MemoryMetadata}, CacheKey};
    /// # use cachet_storage::{PutOptions, Store, StoreConfig};
    /// # let store = Store::new(Arc::new(MemoryMetadata::new()), Arc::new(MemoryBlobs::new()),
    /// #     StoreConfig::default())?;
    /// let (draft, published) = (CacheKey::explicit("drafts", "r1")?, CacheKey::explicit("reports", "r1")?);
    /// store.put_bytes(&draft, b"final numbers", PutOptions::default()).await?;
    /// store.move_entry(&draft, &published, false).await?;
    /// assert!(store.get_bytes(&draft).await?.is_none());
    /// assert_eq!(store.get_bytes(&published).await?.unwrap(), &b"final numbers"[..]);
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub async fn move_entry(
        &self,
        from: &CacheKey,
        to: &CacheKey,
        overwrite: bool,
    ) -> Result<EntryMeta> {
        let source = self.metadata(from).await?;
        self.move_loop(from, source, to, overwrite).await
    }

    /// [`move_entry`](Self::move_entry) from an entry the caller has read already (for example
    /// after checking that it is live): the first attempt does not read it again.
    pub async fn move_entry_as_read(
        &self,
        source: EntryMeta,
        to: &CacheKey,
        overwrite: bool,
    ) -> Result<EntryMeta> {
        let from = source.key.clone();
        self.move_loop(&from, Some(source), to, overwrite).await
    }

    async fn move_loop(
        &self,
        from: &CacheKey,
        mut source: Option<EntryMeta>,
        to: &CacheKey,
        overwrite: bool,
    ) -> Result<EntryMeta> {
        for attempt in 0..MOVE_ATTEMPTS {
            if attempt > 0 {
                source = self.metadata(from).await?;
            }
            let Some(mut meta) = source.take() else {
                return Err(Error::not_found(format_args!("entry {from} (move source)")));
            };
            if from == to {
                return if overwrite {
                    Ok(meta)
                } else {
                    Err(Error::AlreadyExists {
                        what: format!("entry {to} (the move's source and destination are one key)"),
                    })
                };
            }
            meta.key = to.clone();
            meta.updated_at = self.now().max(meta.updated_at);
            meta.signature = None;
            if let Some(signing) = &self.config().signing_key {
                meta.signature = Some(signing.sign(&meta));
            }
            match self
                .metadata_backend()
                .move_entry(from, meta.clone(), overwrite)
                .await?
            {
                MoveOutcome::Moved { replaced } => {
                    self.reclaim_replaced(replaced, &meta).await;
                    tracing::debug!(from = %from, to = %to, "move");
                    return Ok(meta);
                }
                MoveOutcome::SourceMissing => {
                    return Err(Error::not_found(format_args!("entry {from} (move source)")));
                }
                MoveOutcome::DestinationExists => {
                    return Err(Error::AlreadyExists {
                        what: format!("entry {to} (pass overwrite to replace it)"),
                    });
                }
                MoveOutcome::SourceChanged => continue, // rewritten meanwhile: read it again
            }
        }
        Err(Error::Conflict {
            what: format!("entry {from}"),
            detail: "rewritten concurrently during every attempt to move it; retry".into(),
        })
    }

    /// Reclaims the blob of an entry a write replaced, unless the new entry uses it too.
    async fn reclaim_replaced(&self, replaced: Option<EntryMeta>, new: &EntryMeta) {
        if let Some(old) = replaced {
            let mut freed = Vec::new();
            push_freed(&mut freed, &old, new);
            if !freed.is_empty() {
                self.reclaim(&freed).await;
            }
        }
    }
}

/// The plan of a copy: onto an absent key unless overwriting.
fn copy_plan(overwrite: bool) -> WritePlan {
    WritePlan {
        condition: if overwrite {
            WriteCondition::Always
        } else {
            WriteCondition::IfAbsent
        },
        created_at: None,
    }
}

/// The plan of an update: only an existing entry, keeping its creation time.
fn update_plan(existing: Option<&EntryMeta>) -> WritePlan {
    WritePlan {
        condition: WriteCondition::IfPresent,
        created_at: existing.map(|m| m.created_at),
    }
}

/// The options of an update: the entry's own fields, except what the caller sets.
fn kept_options(existing: &EntryMeta, given: PutOptions) -> PutOptions {
    let expiry_given = given.ttl.is_some() || given.expires_at.is_some();
    PutOptions {
        expires_at: if expiry_given {
            given.expires_at
        } else {
            existing.expires_at
        },
        ttl: given.ttl,
        params: existing.params.clone(),
        tags: existing.tags.clone(),
        user_metadata: existing.user_metadata.clone(),
        compression: given.compression.or(Some(existing.compression)),
        type_name: given.type_name,
    }
}

/// Adds the blob of a replaced entry to `freed` unless the new entry uses it too.
fn push_freed(freed: &mut Vec<(BlobId, u64)>, old: &EntryMeta, new: &EntryMeta) {
    if let Some(old_blob) = old.location.blob_id() {
        if Some(old_blob) != new.location.blob_id() {
            freed.push((old_blob.clone(), old.stored_size));
        }
    }
}
