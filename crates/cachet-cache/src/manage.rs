//! Management operations of the cache: update in place, batches, queries and deletes by filter,
//! copy and move. They follow the cache's rules: keys resolve in the cache's namespace, an
//! expired entry reads as absent, and damaged entries follow the integrity policy.

use std::time::Duration;

use bytes::Bytes;
use cachet_core::{CacheKey, EntryFilter, EntryMeta, Error, Result};
use cachet_storage::{
    BatchItem, DeleteReport, ExportOptions, ExportReport, ImportOptions, ImportReport, PutOptions,
    RepairOptions, RepairReport, StoredEntry, VerifyOptions, VerifyProgress, VerifyReport,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::field::Empty;

use crate::cache::{Cache, is_live};
use crate::key::{IntoCacheKey, ResolvedKey};
use crate::memory::{MemoryEntry, MemoryTier, Ticket, decode_raw};
use crate::observe::Served;
use crate::options::InsertOptions;
use std::sync::Arc;

/// Entries read per index round trip by [`Cache::find`].
const FIND_PAGE: usize = 1_000;

impl Cache {
    /// The filter as the cache applies it: in the cache's namespace unless it names one.
    fn scoped(&self, filter: &EntryFilter) -> EntryFilter {
        let mut filter = filter.clone();
        if filter.namespace.is_none() {
            filter.namespace = Some(self.namespace.to_string());
        }
        filter
    }

    /// A live entry's metadata or `Error::NotFound` naming the key and the operation.
    async fn require_live(&self, key: &CacheKey, op: &str) -> Result<EntryMeta> {
        self.live_meta(key).await?.ok_or_else(|| not_live(key, op))
    }

    /// The metadata of many keys in one round trip: `None` for an entry that is absent,
    /// expired or (unless strict) fails its signature check.
    async fn live_metas(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        let now = self.now();
        let store = &self.shared.store;
        let metas = store.metadata_backend().get_meta_many(keys).await?;
        keys.iter()
            .zip(metas)
            .map(|(key, meta)| match meta {
                None => Ok(None),
                Some(meta) => match store.verify_entry(&meta) {
                    Ok(()) => Ok(is_live(&meta, now).then_some(meta)),
                    Err(e) => self.integrity(key, e),
                },
            })
            .collect()
    }

    // ---------------------------------------------------------------- update

    /// Replaces the value of a live entry, keeping its key, parameters, tags, user metadata,
    /// creation time and expiry; sizes, digest, data type and signature are refreshed.
    ///
    /// # Errors
    /// `Error::NotFound` when there is no live entry (an expired one counts as absent):
    /// `update` never creates an entry, use [`insert`](Self::insert) for that.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// cache.insert("report", &vec![1, 2]).with_tag("daily").await?;
    /// let meta = cache.update("report", &vec![1, 2, 3]).await?;
    /// assert_eq!(meta.tags, ["daily"]);
    /// assert!(matches!(cache.update("nope", &0).await, Err(cachet_core::Error::NotFound { .. })));
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(level = "debug", name = "update", skip_all, fields(key = Empty, bytes = Empty, outcome = Empty))]
    pub async fn update<T: Serialize + ?Sized>(
        &self,
        key: impl IntoCacheKey,
        value: &T,
    ) -> Result<EntryMeta> {
        let _timer = self.shared.observer.timer("update");
        let key = self.key(&key)?;
        let existing = self.require_live(&key, "update").await?;
        let _forget = self.forget_after(|| vec![key.clone()]);
        // A JSON entry stays JSON (human-readable entries are a choice made at insert).
        let item = if existing.data_type == cachet_core::DataType::Json {
            BatchItem::json(key, value, PutOptions::default())?
        } else {
            BatchItem::value(key, value, PutOptions::default())?
        };
        let meta = self
            .shared
            .store
            .update_entry_as_read(&existing, item.data_type, &item.data, item.options)
            .await?;
        self.record_insert(&meta);
        Ok(meta)
    }

    /// Replaces the value of a live entry with raw bytes (see [`update`](Self::update)).
    #[tracing::instrument(level = "debug", name = "update_bytes", skip_all, fields(key = Empty, bytes = Empty, outcome = Empty))]
    pub async fn update_bytes(
        &self,
        key: impl IntoCacheKey,
        data: impl AsRef<[u8]>,
    ) -> Result<EntryMeta> {
        let _timer = self.shared.observer.timer("update_bytes");
        let key = self.key(&key)?;
        let existing = self.require_live(&key, "update").await?;
        let _forget = self.forget_after(|| vec![key.clone()]);
        let meta = self
            .shared
            .store
            .update_entry_as_read(
                &existing,
                cachet_core::DataType::Bytes,
                data.as_ref(),
                PutOptions::default(),
            )
            .await?;
        self.record_insert(&meta);
        Ok(meta)
    }

    // ---------------------------------------------------------------- batches

    /// Reads many serde values with **one index round trip** (values in blobs are then read a
    /// few at a time). One slot per key, in order: `None` for a key that is absent, expired or
    /// (unless strict) damaged. Counts a hit or a miss per key.
    ///
    /// # Errors
    /// The first key whose value is of another type (`Error::TypeMismatch`), an integrity
    /// failure in strict mode, or a backend failure.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// cache.insert_many([("a", &1u32), ("c", &3u32)], &Default::default()).await?;
    /// let got: Vec<Option<u32>> = cache.get_many(["a", "b", "c"]).await?;
    /// assert_eq!(got, [Some(1), None, Some(3)]);
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(level = "debug", name = "get_many", skip_all)]
    pub async fn get_many<T, K>(&self, keys: impl IntoIterator<Item = K>) -> Result<Vec<Option<T>>>
    where
        T: DeserializeOwned,
        K: IntoCacheKey,
    {
        let _timer = self.shared.observer.timer("get_many");
        let keys = self.keys(keys)?;
        if let Some(tier) = &self.shared.memory {
            return self.get_many_tiered(tier, &keys).await;
        }
        let entries = self.live_entries(&keys).await?;
        let mut out = Vec::with_capacity(keys.len());
        for (key, entry) in keys.iter().zip(entries) {
            let found = match entry {
                Some(entry) => match self.shared.store.read_value::<T>(&entry).await {
                    Ok(value) => Some((value, entry.meta.raw_size)),
                    Err(e @ Error::TypeMismatch { .. }) => return Err(e),
                    Err(e) => self.integrity(key, e)?,
                },
                None => None,
            };
            out.push(self.count(key, found));
        }
        Ok(out)
    }

    /// The memory tier's entries for `keys` (in order), and the keys it lacks with their
    /// tickets, looked up in the index in one round trip.
    async fn split_by_tier(
        &self,
        tier: &MemoryTier,
        keys: &[CacheKey],
    ) -> Result<(
        Vec<Option<Arc<MemoryEntry>>>,
        Vec<(Ticket, Option<StoredEntry>)>,
    )> {
        let now = self.now();
        let held: Vec<Option<Arc<MemoryEntry>>> = keys.iter().map(|k| tier.get(k, now)).collect();
        let missing: Vec<CacheKey> = keys
            .iter()
            .zip(&held)
            .filter(|(_, held)| held.is_none())
            .map(|(key, _)| key.clone())
            .collect();
        let tickets: Vec<Ticket> = missing.iter().map(|k| tier.ticket(k)).collect();
        let entries = if missing.is_empty() {
            Vec::new()
        } else {
            self.live_entries(&missing).await?
        };
        Ok((held, tickets.into_iter().zip(entries).collect()))
    }

    async fn get_many_tiered<T: DeserializeOwned>(
        &self,
        tier: &MemoryTier,
        keys: &[CacheKey],
    ) -> Result<Vec<Option<T>>> {
        let (held, looked_up) = self.split_by_tier(tier, keys).await?;
        let mut looked_up = looked_up.into_iter();
        let mut out = Vec::with_capacity(keys.len());
        for (key, held) in keys.iter().zip(held) {
            let found = match held {
                Some(entry) => {
                    let value = entry.decode::<T>(key)?;
                    Some((value, Served::memory(entry.raw_size())))
                }
                None => match looked_up.next().expect("one lookup per key not held") {
                    (_, None) => None,
                    (ticket, Some(entry)) => {
                        if !matches!(
                            entry.meta.data_type,
                            cachet_core::DataType::MessagePack | cachet_core::DataType::Json
                        ) {
                            return Err(decode_raw::<T>(key, &entry.meta.data_type, &[])
                                .err()
                                .expect("not a serde value"));
                        }
                        match self.shared.store.read_raw(&entry).await {
                            Ok(raw) => {
                                let value = decode_raw::<T>(key, &entry.meta.data_type, &raw)?;
                                tier.backfill(ticket, &entry.meta, &raw, self.now());
                                Some((value, entry.meta.raw_size.into()))
                            }
                            Err(e) => self.integrity(key, e)?,
                        }
                    }
                },
            };
            out.push(self.count(key, found));
        }
        Ok(out)
    }

    async fn get_bytes_many_tiered(
        &self,
        tier: &MemoryTier,
        keys: &[CacheKey],
    ) -> Result<Vec<Option<Bytes>>> {
        let (held, looked_up) = self.split_by_tier(tier, keys).await?;
        let found: Vec<&StoredEntry> = looked_up.iter().filter_map(|(_, e)| e.as_ref()).collect();
        let mut values = self.shared.store.read_raw_many(&found).await.into_iter();
        let mut looked_up = looked_up.iter();
        let mut out = Vec::with_capacity(keys.len());
        for (key, held) in keys.iter().zip(held) {
            let found = match held {
                Some(entry) => {
                    let bytes = entry.bytes(key)?;
                    Some((bytes, Served::memory(entry.raw_size())))
                }
                None => match looked_up.next().expect("one lookup per key not held") {
                    (_, None) => None,
                    (ticket, Some(entry)) => {
                        let raw = values.next().expect("one read per live entry");
                        self.batch_bytes(key, &entry.meta, raw)?.map(|bytes| {
                            tier.backfill(*ticket, &entry.meta, &bytes, self.now());
                            (bytes, entry.meta.raw_size.into())
                        })
                    }
                },
            };
            out.push(self.count(key, found));
        }
        Ok(out)
    }

    /// Reads many raw-bytes entries with one index round trip (see [`get_many`](Self::get_many)).
    #[tracing::instrument(level = "debug", name = "get_bytes_many", skip_all)]
    pub async fn get_bytes_many<K: IntoCacheKey>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Bytes>>> {
        let _timer = self.shared.observer.timer("get_bytes_many");
        let keys = self.keys(keys)?;
        if let Some(tier) = &self.shared.memory {
            return self.get_bytes_many_tiered(tier, &keys).await;
        }
        let entries = self.live_entries(&keys).await?;
        let found: Vec<&StoredEntry> = entries.iter().flatten().collect();
        let mut values = self.shared.store.read_raw_many(&found).await.into_iter();
        let mut out = Vec::with_capacity(keys.len());
        for (key, entry) in keys.iter().zip(&entries) {
            let found = match entry {
                Some(entry) => {
                    let raw = values.next().expect("one read per live entry");
                    self.batch_bytes(key, &entry.meta, raw)?
                        .map(|bytes| (bytes, entry.meta.raw_size))
                }
                None => None,
            };
            out.push(self.count(key, found));
        }
        Ok(out)
    }

    /// One value read by a bytes batch: `TypeMismatch` for a serde value, and a damaged one
    /// handled by the integrity rule (a miss unless strict).
    fn batch_bytes(
        &self,
        key: &CacheKey,
        meta: &EntryMeta,
        raw: Result<Bytes>,
    ) -> Result<Option<Bytes>> {
        if meta.data_type != cachet_core::DataType::Bytes {
            return Err(Error::TypeMismatch {
                key: key.to_string(),
                expected: "bytes".into(),
                found: format!("{} data", meta.data_type),
            });
        }
        match raw {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) => self.integrity(key, e),
        }
    }

    fn keys<K: IntoCacheKey>(&self, keys: impl IntoIterator<Item = K>) -> Result<Vec<CacheKey>> {
        // Not through `key`: a batch's span has no `key` field.
        keys.into_iter()
            .map(|k| k.to_cache_key(&self.namespace))
            .collect()
    }

    /// Looks up keys in one round trip; expired entries and (unless strict) entries whose
    /// signature fails are `None`.
    async fn live_entries(&self, keys: &[CacheKey]) -> Result<Vec<Option<StoredEntry>>> {
        let now = self.now();
        let looked_up = self.shared.store.lookup_many(keys).await?;
        keys.iter()
            .zip(looked_up)
            .map(|(key, slot)| match slot {
                Ok(Some(entry)) if is_live(&entry.meta, now) => Ok(Some(entry)),
                Ok(Some(_)) => Ok(self.expired(key)),
                Ok(None) => Ok(None),
                Err(e) => self.integrity(key, e),
            })
            .collect()
    }

    /// Stores many serde values (MessagePack) with the same options, committing every index
    /// row in **one transaction**. Returns the entries' metadata, in order.
    ///
    /// See [`get_many`](Self::get_many) for an example.
    #[tracing::instrument(level = "debug", name = "insert_many", skip_all)]
    pub async fn insert_many<'v, K, T>(
        &self,
        items: impl IntoIterator<Item = (K, &'v T)>,
        options: &InsertOptions,
    ) -> Result<Vec<EntryMeta>>
    where
        K: IntoCacheKey,
        T: Serialize + ?Sized + 'v,
    {
        let _timer = self.shared.observer.timer("insert_many");
        let mut batch = Vec::new();
        for (key, value) in items {
            let key = ResolvedKey::new(&key, &self.namespace)?;
            let put = options.to_put_options(self.shared.default_ttl, key.params)?;
            batch.push(if options.is_json() {
                BatchItem::json(key.key, value, put)?
            } else {
                BatchItem::value(key.key, value, put)?
            });
        }
        let _forget = self.forget_after(|| batch.iter().map(|i| i.key.clone()).collect());
        let metas = (self.shared.store.put_many(batch).await)
            .inspect_err(|e| self.shared.observer.failed(None, "write", e))?;
        metas.iter().for_each(|m| self.record_insert(m));
        Ok(metas)
    }

    /// Stores many raw-bytes values with the same options in one transaction.
    #[tracing::instrument(level = "debug", name = "insert_bytes_many", skip_all)]
    pub async fn insert_bytes_many<K, B>(
        &self,
        items: impl IntoIterator<Item = (K, B)>,
        options: &InsertOptions,
    ) -> Result<Vec<EntryMeta>>
    where
        K: IntoCacheKey,
        B: Into<Bytes>,
    {
        let _timer = self.shared.observer.timer("insert_bytes_many");
        let mut batch = Vec::new();
        for (key, data) in items {
            let key = ResolvedKey::new(&key, &self.namespace)?;
            let put = options.to_put_options(self.shared.default_ttl, key.params)?;
            batch.push(BatchItem::bytes(key.key, data, put));
        }
        let _forget = self.forget_after(|| batch.iter().map(|i| i.key.clone()).collect());
        let metas = (self.shared.store.put_many(batch).await)
            .inspect_err(|e| self.shared.observer.failed(None, "write", e))?;
        metas.iter().for_each(|m| self.record_insert(m));
        Ok(metas)
    }

    /// Replaces the values of many live entries in one transaction (see
    /// [`update`](Self::update) for what is kept). One flag per item, in order: `false` when
    /// there was no live entry (nothing is created for it).
    #[tracing::instrument(level = "debug", name = "update_many", skip_all)]
    pub async fn update_many<'v, K, T>(
        &self,
        items: impl IntoIterator<Item = (K, &'v T)>,
    ) -> Result<Vec<bool>>
    where
        K: IntoCacheKey,
        T: Serialize + ?Sized + 'v,
    {
        let _timer = self.shared.observer.timer("update_many");
        let mut batch = Vec::new();
        for (key, value) in items {
            let key = self.key(&key)?;
            batch.push(BatchItem::value(key, value, PutOptions::default())?);
        }
        let keys: Vec<CacheKey> = batch.iter().map(|i| i.key.clone()).collect();
        let _forget = self.forget_after(|| keys.clone());
        let live = self.live_metas(&keys).await?;
        let (live_items, slots): (Vec<BatchItem>, Vec<usize>) = batch
            .into_iter()
            .zip(&live)
            .enumerate()
            .filter(|(_, (_, meta))| meta.is_some())
            .map(|(slot, (item, _))| (item, slot))
            .unzip();
        let existing = live.into_iter().flatten().collect();
        let mut updated = vec![false; keys.len()];
        for (slot, meta) in slots.into_iter().zip(
            self.shared
                .store
                .update_many_as_read(existing, live_items)
                .await?,
        ) {
            if let Some(meta) = meta {
                self.record_insert(&meta);
                updated[slot] = true;
            }
        }
        Ok(updated)
    }

    /// Deletes many entries in one transaction; one flag per key, in order: whether an entry
    /// (live or expired) existed. Blobs no other entry shares are reclaimed.
    #[tracing::instrument(level = "debug", name = "invalidate_many", skip_all)]
    pub async fn invalidate_many<K: IntoCacheKey>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<bool>> {
        let _timer = self.shared.observer.timer("invalidate_many");
        let keys = self.keys(keys)?;
        let _forget = self.forget_after(|| keys.clone());
        let removed = self.shared.store.delete_many(&keys).await?;
        (keys.iter().zip(&removed))
            .filter(|(_, removed)| **removed)
            .for_each(|(key, _)| self.shared.observer.invalidated(key));
        Ok(removed)
    }

    /// Resets the TTL of many live entries to `ttl` from now (`None`: the cache's default TTL,
    /// or no expiry), reading them with one round trip and changing them in one transaction.
    /// One flag per key, in order: `false` when there was no live entry.
    #[tracing::instrument(level = "debug", name = "touch_many", skip_all)]
    pub async fn touch_many<K: IntoCacheKey>(
        &self,
        keys: impl IntoIterator<Item = K>,
        ttl: Option<Duration>,
    ) -> Result<Vec<bool>> {
        let _timer = self.shared.observer.timer("touch_many");
        let ttl = ttl.or(self.shared.default_ttl);
        if ttl.is_some_and(|t| t.is_zero()) {
            return Err(Error::config("ttl", "a TTL must be longer than zero"));
        }
        let keys = self.keys(keys)?;
        let _forget = self.forget_after(|| keys.clone());
        let live = self.live_metas(&keys).await?;
        let expires_at = ttl.map(|t| self.now().plus(t));
        let changes = live
            .into_iter()
            .map(|meta| meta.map(|meta| (meta, expires_at)))
            .collect();
        self.shared.store.set_expiry_as_read(changes).await
    }

    // ---------------------------------------------------------------- queries and deletes

    /// The live entries matching `filter` (in the cache's namespace unless the filter names
    /// one), with all their metadata, in key order, evaluated by the index itself. Stops after
    /// `limit` entries (0: no limit).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachet_core::{EntryFilter, FieldCondition};
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// cache.insert("m1", &"weights").with_meta("accuracy", 0.95).with_meta("model", "xgboost").await?;
    /// cache.insert("m2", &"weights").with_meta("accuracy", 0.71).with_meta("model", "linear").await?;
    /// let good = cache.find(&EntryFilter::all().metadata(FieldCondition::parse("accuracy >= 0.9")?), 0).await?;
    /// assert_eq!(good.len(), 1);
    /// assert_eq!(good[0].user_metadata.as_ref().unwrap()["model"], "xgboost");
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(level = "debug", name = "find", skip_all)]
    pub async fn find(&self, filter: &EntryFilter, limit: usize) -> Result<Vec<EntryMeta>> {
        let _timer = self.shared.observer.timer("find");
        let now = self.now();
        let mut pages = self.shared.store.pages(self.scoped(filter), FIND_PAGE);
        let mut found = Vec::new();
        while let Some(page) = pages.next_page().await? {
            for meta in page {
                if is_live(&meta, now) {
                    if let Err(e) = self.shared.store.verify_entry(&meta) {
                        self.integrity::<()>(&meta.key, e)?; // strict: an error; else skipped
                        continue;
                    }
                    found.push(meta);
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Deletes every entry matching `filter` (in the cache's namespace unless the filter
    /// names one), expired or not, evaluated by the index in atomic batches; reclaims their
    /// blobs. With `dry_run`, reports what would be deleted and changes nothing.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachet_core::{EntryFilter, FieldCondition};
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// cache.insert(cachet_core::params! { "project" => "x", "day" => 1 }, &1).await?;
    /// cache.insert(cachet_core::params! { "project" => "y", "day" => 1 }, &2).await?;
    /// let filter = EntryFilter::all().param(FieldCondition::eq("project", "x"));
    /// assert_eq!(cache.invalidate_where(&filter, true).await?.entries(), 1); // dry run
    /// assert_eq!(cache.invalidate_where(&filter, false).await?.entries(), 1);
    /// assert_eq!(cache.index_stats().await?.entries, 1);
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(level = "debug", name = "invalidate_where", skip_all, fields(dry_run = dry_run))]
    pub async fn invalidate_where(
        &self,
        filter: &EntryFilter,
        dry_run: bool,
    ) -> Result<DeleteReport> {
        let _timer = self.shared.observer.timer("invalidate_where");
        // Cleared if the deletion fails or is cancelled midway (which keys went is unknown).
        let clear = (!dry_run).then(|| self.clear_after()).flatten();
        let report = self
            .shared
            .store
            .delete_where(&self.scoped(filter), dry_run)
            .await?;
        if let Some(clear) = clear {
            clear.defuse(&report.keys);
        }
        if !dry_run {
            report
                .keys
                .iter()
                .for_each(|k| self.shared.observer.invalidated(k));
        }
        tracing::info!(entries = report.entries(), dry_run, "invalidate_where");
        Ok(report)
    }

    /// Deletes every entry of this cache's namespace that carries `tag`, expired or not, and
    /// reclaims their blobs: each batch of 500 is one index statement, and the deletion is
    /// durable (the entries are gone from the index, not hidden behind an evictable marker).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// cache.insert("q1", &1).with_tag("sales").await?;
    /// cache.insert("q2", &2).with_tag("sales").with_tag("eu").await?;
    /// cache.insert("hr", &3).await?;
    /// assert_eq!(cache.invalidate_tag("sales").await?.entries(), 2);
    /// assert!(cache.contains_key("hr").await?);
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(level = "debug", name = "invalidate_tag", skip_all, fields(tag = %tag))]
    pub async fn invalidate_tag(&self, tag: &str) -> Result<DeleteReport> {
        self.invalidate_where(&EntryFilter::all().tag(tag), false)
            .await
    }

    /// Deletes every entry of this cache's namespace (see [`namespace`](Self::namespace)),
    /// expired or not, in batches of 500 per index statement; other namespaces are untouched.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// let (a, b) = (cache.namespace("team-a"), cache.namespace("team-b"));
    /// a.insert("x", &1).await?;
    /// b.insert("x", &2).await?;
    /// assert_eq!(a.invalidate_namespace().await?.entries(), 1);
    /// assert_eq!(b.get::<i32>("x").await?, Some(2));
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(level = "debug", name = "invalidate_namespace", skip_all)]
    pub async fn invalidate_namespace(&self) -> Result<DeleteReport> {
        self.invalidate_where(&EntryFilter::all(), false).await
    }

    // ---------------------------------------------------------------- copy and move

    /// Copies a live entry to another key of this cache's namespace without copying its value
    /// (both reference the same stored content).
    ///
    /// # Errors
    /// `Error::NotFound` when there is no live source; `Error::AlreadyExists` when the
    /// destination exists and `overwrite` is off.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// let weights: Vec<u32> = (0..100_000).collect();
    /// cache.insert("model-v7", &weights).await?;
    /// cache.copy("model-v7", "model-latest", true).await?;
    /// assert_eq!(cache.index_stats().await?.blobs, 1);
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(level = "debug", name = "copy", skip_all, fields(overwrite = overwrite))]
    pub async fn copy(
        &self,
        from: impl IntoCacheKey,
        to: impl IntoCacheKey,
        overwrite: bool,
    ) -> Result<EntryMeta> {
        let _timer = self.shared.observer.timer("copy");
        let (from, to) = (self.key(&from)?, self.key(&to)?);
        let Some(source) = self.lookup_live(&from).await? else {
            return Err(not_live(&from, "copy"));
        };
        let _forget = self.forget_after(|| vec![to.clone()]);
        if from == to {
            return self.shared.store.copy_entry(&from, &to, overwrite).await;
        }
        self.shared
            .store
            .copy_entry_as_read(source, &to, overwrite)
            .await
    }

    /// Moves a live entry to another key atomically (see `Store::move_entry`): afterwards
    /// exactly one of the keys holds it.
    ///
    /// # Errors
    /// `Error::NotFound` when there is no live source; `Error::AlreadyExists` when the
    /// destination exists and `overwrite` is off (nothing changes).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// cache.insert("draft", &"numbers").await?;
    /// cache.rename("draft", "final", false).await?;
    /// assert_eq!(cache.get::<String>("draft").await?, None);
    /// assert_eq!(cache.get::<String>("final").await?.as_deref(), Some("numbers"));
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(level = "debug", name = "rename", skip_all, fields(overwrite = overwrite))]
    pub async fn rename(
        &self,
        from: impl IntoCacheKey,
        to: impl IntoCacheKey,
        overwrite: bool,
    ) -> Result<EntryMeta> {
        let _timer = self.shared.observer.timer("rename");
        let (from, to) = (self.key(&from)?, self.key(&to)?);
        let source = self.require_live(&from, "rename").await?;
        let _forget = self.forget_after(|| vec![from.clone(), to.clone()]);
        self.shared
            .store
            .move_entry_as_read(source, &to, overwrite)
            .await
    }

    // ---------------------------------------------------------------- archives and checks

    /// Writes the live entries matching `options.filter` (in the cache's namespace unless the
    /// filter names one) to a portable archive (see `Store::export` and docs/ARCHIVE.md).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let (source, target) = (cachet_cache::Cache::builder().in_memory().build().await?,
    /// #     cachet_cache::Cache::builder().in_memory().build().await?);
    /// source.insert("a", &vec![1u8, 2, 3]).with_meta("run", 7).await?;
    /// let mut archive = Vec::new();
    /// let exported = source.export(&mut archive, &Default::default(), |_| {}).await?;
    /// let imported = target.import(archive.as_slice(), &Default::default(), |_| {}).await?;
    /// assert_eq!((exported.entries, imported.imported), (1, 1));
    /// assert_eq!(target.get::<Vec<u8>>("a").await?, Some(vec![1, 2, 3]));
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(level = "debug", name = "export", skip_all)]
    pub async fn export<W: tokio::io::AsyncWrite + Unpin + Send>(
        &self,
        out: W,
        options: &ExportOptions,
        progress: impl FnMut(&ExportReport),
    ) -> Result<ExportReport> {
        let _timer = self.shared.observer.timer("export");
        let mut options = options.clone();
        options.filter = self.scoped(&options.filter);
        self.shared.store.export(out, &options, progress).await
    }

    /// Reads an archive written by [`export`](Self::export) into this cache, verifying every
    /// entry's digest (see `Store::import`): a damaged entry is reported and not imported, the
    /// others are. Entries keep the namespaces they were exported from.
    #[tracing::instrument(level = "debug", name = "import", skip_all)]
    pub async fn import<R: tokio::io::AsyncRead + Unpin + Send>(
        &self,
        input: R,
        options: &ImportOptions,
        progress: impl FnMut(&ImportReport),
    ) -> Result<ImportReport> {
        let _timer = self.shared.observer.timer("import");
        let _clear = self.clear_after(); // the archive's keys are not listed
        self.shared.store.import(input, options, progress).await
    }

    /// Checks every entry (and the blob store) and reports what is broken (see
    /// `Store::verify` and docs/VERIFY.md).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// cache.insert("a", &1).await?;
    /// let report = cache.verify(&Default::default(), |_| {}).await?;
    /// assert!(report.is_clean());
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(level = "debug", name = "verify", skip_all)]
    pub async fn verify(
        &self,
        options: &VerifyOptions,
        progress: impl FnMut(&VerifyProgress),
    ) -> Result<VerifyReport> {
        let _timer = self.shared.observer.timer("verify");
        self.shared.store.verify(options, progress).await
    }

    /// Verifies, then removes what is broken and reclaims unreferenced blobs (with
    /// `dry_run`, only reports what it would remove); see `Store::repair`.
    #[tracing::instrument(level = "debug", name = "repair", skip_all)]
    pub async fn repair(
        &self,
        options: &RepairOptions,
        progress: impl FnMut(&VerifyProgress),
    ) -> Result<RepairReport> {
        let _timer = self.shared.observer.timer("repair");
        let _clear = self.clear_after();
        self.shared.store.repair(options, progress).await
    }
}

/// The error of an operation that needs a live entry.
fn not_live(key: &CacheKey, op: &str) -> Error {
    Error::not_found(format_args!(
        "entry {key} ({op} needs a live entry; an expired one counts as absent)"
    ))
}
