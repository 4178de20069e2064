//! The async cache: keys, TTL, integrity policy, single-flight computation, stats.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cachet_core::{
    BlobBackend, BoxError, CacheKey, EntryMeta, Error, IndexStats, KeyLock, MetadataBackend,
    ParamValue, Params, Result, Timestamp,
};
use cachet_storage::{GcReport, Store, StoreConfig, StoredEntry, ValueReader};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use tracing::field::Empty;

use crate::builder::CacheBuilder;
use crate::events::CacheEvent;
use crate::eviction::Evictor;
use crate::flight::{Flights, Outcome};
use crate::key::{IntoCacheKey, ResolvedKey};
use crate::memory::{Forget, MemoryTier};
use crate::observe::{Observer, Served, read_span, record_key};
use crate::options::{Insert, InsertBytes, InsertOptions};
use crate::stats::CacheStats;
use crate::writer::CacheWriter;

/// A cache of computed values over a [`Store`]: keys derived from parameters, TTL, integrity
/// policy, single-flight computation, stats.
///
/// Cheap to clone; clones and [`namespace`](Self::namespace) views share the store, the
/// counters and the in-flight computations.
///
/// # Promises
/// - An expired entry (`expires_at <= now`) is never returned, by any method.
/// - A corrupt or tampered entry is never returned: it is a miss (counted in
///   [`CacheStats::integrity_failures`] and logged with `tracing::warn!`), or with
///   [`strict_integrity`](CacheBuilder::strict_integrity) the `Error::Corrupt` /
///   `Error::Tampered` itself.
/// - A value of another type than the one requested is `Error::TypeMismatch`, never garbage.
/// - [`get_with`](Self::get_with) runs one computation per missing key in this process,
///   however many tasks ask at once.
///
/// # Memory tier
/// With [`memory_tier`](CacheBuilder::memory_tier), verified values of recent reads and of
/// this process's `insert_bytes` calls are also held in process memory, weighted by bytes:
/// a hit there touches neither the index nor the blobs. This process's writes and deletes
/// (through any view of this cache) update or drop the memory entries they concern; writes by
/// **other processes** are seen once the memory entry is evicted or reaches its
/// [`memory_tier_ttl`](CacheBuilder::memory_tier_ttl) (60 s by default), which bounds how
/// stale a memory hit can be. [`reader`](Self::reader), [`metadata`](Self::metadata) and
/// [`contains_key`](Self::contains_key) always ask the index; memory hits do not update the
/// entry's access time in the index.
#[derive(Clone)]
pub struct Cache {
    pub(crate) shared: Arc<Shared>,
    pub(crate) namespace: Arc<str>,
}

pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) default_ttl: Option<Duration>,
    strict_integrity: bool,
    pub(crate) observer: Observer,
    flights: Flights,
    pub(crate) memory: Option<MemoryTier>,
    pub(crate) evictor: Option<Arc<Evictor>>,
    pub(crate) grace: Grace,
}

/// Serving stale values (see [`CacheBuilder::grace`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Grace {
    /// How long after expiry an entry is kept and may be served when a recomputation fails.
    pub(crate) period: Option<Duration>,
    /// With a stale value at hand, how long `get_with_refresh` waits for the recomputation.
    pub(crate) soft_timeout: Duration,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(evictor) = &self.evictor {
            evictor.close();
        }
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.namespace)
            .field("store", &self.shared.store)
            .field("default_ttl", &self.shared.default_ttl)
            .field("strict_integrity", &self.shared.strict_integrity)
            .field("memory", &self.shared.memory)
            .field("eviction", &self.shared.evictor.as_ref().map(|e| &e.policy))
            .finish()
    }
}

/// What [`Cache::cleanup_expired`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanupReport {
    /// Expired entries deleted.
    pub entries_removed: u64,
    /// Blobs of those entries deleted at once (a blob shared with a live entry stays; one
    /// still under a writer's lease is left to `gc`, counted there).
    pub blobs_freed: u64,
    /// Bytes of those blobs.
    pub bytes_freed: u64,
    /// What the garbage collection run after the deletions did (it may also have removed
    /// blobs of earlier deletions and crash leftovers).
    pub gc: GcReport,
}

/// How often a `get_with` waiting for another process's computation looks again: starting
/// here, doubling up to [`KEY_LOCK_POLL_MAX`].
const KEY_LOCK_POLL_MIN: Duration = Duration::from_millis(5);
const KEY_LOCK_POLL_MAX: Duration = Duration::from_millis(200);

/// What waiting for a key's lock in the index ended with.
enum KeyLockOutcome {
    /// We hold the lock (`None`: the index has no locks, or taking one failed).
    Held(Option<Box<dyn KeyLock>>),
    /// Another holder stored the value meanwhile (here, looked up and live).
    ValueAppeared(Box<StoredEntry>),
}

async fn release_key_lock(key: &CacheKey, lock: Box<dyn KeyLock>) {
    if let Err(e) = lock.release().await {
        // The lock is freed anyway when its holder's session ends.
        tracing::warn!(key = %key, error = %e, "could not release the key's lock in the index");
    }
}

/// What one index read found for a key.
enum Lookup {
    Live(Box<StoredEntry>),
    Expired(Box<StoredEntry>),
    Absent,
}

/// What a value read found: the value, the expired entry in its place, or nothing.
pub(crate) enum Read<T> {
    Value(T, Served),
    Expired(Box<StoredEntry>),
    Absent,
}

pub(crate) fn is_live(meta: &EntryMeta, now: Timestamp) -> bool {
    meta.expires_at.is_none_or(|at| at > now)
}

impl Cache {
    /// Opens (creating it if needed) the embedded cache in `dir`: a SQLite index at
    /// `<dir>/index.sqlite` and filesystem blobs under `<dir>/blobs/`, no default TTL.
    ///
    /// Needs the `meta-sqlite` and `blob-fs` features (on by default).
    pub async fn open(dir: impl AsRef<Path>) -> Result<Cache> {
        Cache::builder().directory(dir.as_ref()).build().await
    }

    /// A builder for every other setup (URLs, TTL, signing, namespace, ...).
    pub fn builder() -> CacheBuilder {
        CacheBuilder::new()
    }

    /// A cache over an existing store, with no default TTL, lenient integrity and the default
    /// namespace.
    pub fn from_store(store: Store) -> Cache {
        Cache::from_parts(
            store,
            None,
            false,
            Arc::from(""),
            None,
            None,
            Grace::default(),
            Observer::new(crate::observe::DEFAULT_EVENT_CAPACITY, None),
        )
    }

    /// A cache over custom backends. No capability check is made (see
    /// [`CacheBuilder::index_backend`] for the checked way).
    pub fn from_backends(
        meta: Arc<dyn MetadataBackend>,
        blobs: Arc<dyn BlobBackend>,
        config: StoreConfig,
    ) -> Result<Cache> {
        Ok(Cache::from_store(Store::new(meta, blobs, config)?))
    }

    // Private, called twice (builder, from_store): one argument per part of the cache.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        store: Store,
        default_ttl: Option<Duration>,
        strict_integrity: bool,
        namespace: Arc<str>,
        memory: Option<MemoryTier>,
        evictor: Option<Evictor>,
        grace: Grace,
        observer: Observer,
    ) -> Cache {
        let shared = Arc::new(Shared {
            store,
            default_ttl,
            strict_integrity,
            observer,
            flights: Flights::default(),
            memory,
            evictor: evictor.map(Arc::new),
            grace,
        });
        crate::eviction::spawn_background(&shared);
        Cache { shared, namespace }
    }

    /// The storage engine underneath (for management operations the cache does not wrap).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// This view's namespace (`""` by default).
    pub fn namespace_name(&self) -> &str {
        &self.namespace
    }

    /// The default TTL of new entries, if any.
    pub fn default_ttl(&self) -> Option<Duration> {
        self.shared.default_ttl
    }

    /// A view of the same store in another namespace: the same params give other keys, and
    /// explicit keys live apart. Counters and in-flight computations are shared.
    ///
    /// The name is checked when a key is used: an invalid one (longer than 255 bytes, with
    /// `/` or control characters) makes keyed operations fail with
    /// `Error::Config { field: "namespace" }`. Use [`try_namespace`](Self::try_namespace) to
    /// check it now.
    pub fn namespace(&self, namespace: &str) -> Cache {
        Cache {
            shared: Arc::clone(&self.shared),
            namespace: Arc::from(namespace),
        }
    }

    /// Like [`namespace`](Self::namespace), but checks the name first.
    pub fn try_namespace(&self, namespace: &str) -> Result<Cache> {
        cachet_core::key::validate_namespace(namespace)?;
        Ok(self.namespace(namespace))
    }

    /// Bytes the memory tier holds (values plus a fixed overhead per entry; never more than
    /// its [`memory_tier`](CacheBuilder::memory_tier) size), or `None` without one.
    pub fn memory_tier_bytes(&self) -> Option<u64> {
        self.shared.memory.as_ref().map(MemoryTier::weight)
    }

    /// A snapshot of the counters (shared by every view of this cache).
    pub fn stats(&self) -> CacheStats {
        self.shared.observer.counters.snapshot()
    }

    /// Subscribes to this cache's [events](CacheEvent) (of every view and clone, in this
    /// process), from now on.
    ///
    /// Events go through a `tokio::sync::broadcast` channel of
    /// [`event_capacity`](CacheBuilder::event_capacity) events (1024 by default): publishing
    /// never blocks nor fails, and a receiver that falls more than that many events behind gets
    /// `RecvError::Lagged(n)` (the `n` oldest were dropped for it) and then goes on with the
    /// oldest it still has. While no receiver exists, no event is built (one atomic load per
    /// operation). `recv` is async; sync code uses `try_recv` or `blocking_recv`.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachet_cache::{CacheEvent, Tier};
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// let mut events = cache.subscribe();
    /// cache.insert("k", &1u8).await?;
    /// let _: Option<u8> = cache.get("k").await?;
    /// assert!(matches!(events.recv().await, Ok(CacheEvent::Put { .. })));
    /// assert!(matches!(events.recv().await, Ok(CacheEvent::Hit { tier: Tier::Durable, .. })));
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<CacheEvent> {
        self.shared.observer.subscribe()
    }

    #[inline(always)]
    pub(crate) fn key(&self, key: &(impl IntoCacheKey + ?Sized)) -> Result<CacheKey> {
        let key = key.to_cache_key(&self.namespace);
        if let Ok(key) = &key {
            record_key(key);
        }
        key
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.shared.store.now()
    }

    /// Entries that expired at or before this are past their grace period (cleanup and
    /// eviction remove them; without a grace period, every expired entry).
    pub(crate) fn expired_before(&self) -> Timestamp {
        let now = self.now();
        match self.shared.grace.period {
            Some(grace) => now.minus(grace),
            None => now,
        }
    }

    // ---------------------------------------------------------------- integrity policy

    /// Applies the integrity policy to an error: an integrity failure becomes a miss (counted
    /// and logged) unless strict; any other error is returned.
    pub(crate) fn integrity<T>(&self, key: &CacheKey, error: Error) -> Result<Option<T>> {
        if !error.is_integrity_failure() {
            self.shared.observer.failed(Some(key), "read", &error);
            return Err(error);
        }
        self.shared.observer.integrity_failure(key, &error);
        tracing::warn!(key = %key, reason = %error, strict = self.shared.strict_integrity,
            "entry failed its integrity check; treated as a miss unless strict");
        if self.shared.strict_integrity {
            Err(error)
        } else {
            Ok(None)
        }
    }

    /// A live, verified entry, or `None` (absent, expired, or failed the integrity policy).
    pub(crate) async fn lookup_live(&self, key: &CacheKey) -> Result<Option<StoredEntry>> {
        self.lookup_live_as(key, true).await
    }

    /// [`lookup_live`](Self::lookup_live) for another look within one operation: an expired
    /// entry was reported at the first.
    async fn lookup_live_again(&self, key: &CacheKey) -> Result<Option<StoredEntry>> {
        self.lookup_live_as(key, false).await
    }

    async fn lookup_live_as(
        &self,
        key: &CacheKey,
        report_expired: bool,
    ) -> Result<Option<StoredEntry>> {
        Ok(match self.lookup_as(key, report_expired).await? {
            Lookup::Live(entry) => Some(*entry),
            Lookup::Expired(_) | Lookup::Absent => None,
        })
    }

    /// One index read, telling a live entry from an expired one (for grace) and none.
    async fn lookup_as(&self, key: &CacheKey, report_expired: bool) -> Result<Lookup> {
        match self.shared.store.lookup(key).await {
            Ok(Some(entry)) if is_live(&entry.meta, self.now()) => {
                Ok(Lookup::Live(Box::new(entry)))
            }
            Ok(Some(entry)) => {
                if report_expired {
                    self.shared.observer.expired(key);
                }
                Ok(Lookup::Expired(Box::new(entry)))
            }
            Ok(None) => Ok(Lookup::Absent),
            Err(e) => Ok(self.integrity::<Lookup>(key, e)?.unwrap_or(Lookup::Absent)),
        }
    }

    /// Reports an expired entry a read found; `None`, what the read returns for it.
    pub(crate) fn expired<T>(&self, key: &CacheKey) -> Option<T> {
        self.shared.observer.expired(key);
        None
    }

    /// Reads a live value without counting a hit or miss; returns it with its raw size and
    /// the tier that served it.
    pub(crate) async fn read_value<T: DeserializeOwned>(
        &self,
        key: &CacheKey,
    ) -> Result<Option<(T, Served)>> {
        self.read_value_as(key, true).await
    }

    /// [`read_value`](Self::read_value) for another look within one operation.
    async fn read_value_again<T: DeserializeOwned>(
        &self,
        key: &CacheKey,
    ) -> Result<Option<(T, Served)>> {
        self.read_value_as(key, false).await
    }

    async fn read_value_as<T: DeserializeOwned>(
        &self,
        key: &CacheKey,
        report_expired: bool,
    ) -> Result<Option<(T, Served)>> {
        Ok(
            match self.read_value_or_expired(key, report_expired).await? {
                Read::Value(value, served) => Some((value, served)),
                Read::Expired(_) | Read::Absent => None,
            },
        )
    }

    /// Reads a live value as [`read_value`](Self::read_value) does, or hands back the
    /// expired entry it found instead (so grace needs no second index read).
    pub(crate) async fn read_value_or_expired<T: DeserializeOwned>(
        &self,
        key: &CacheKey,
        report_expired: bool,
    ) -> Result<Read<T>> {
        let found = |decoded: Option<(T, Served)>| match decoded {
            Some((value, served)) => Read::Value(value, served),
            None => Read::Absent,
        };
        let Some(tier) = &self.shared.memory else {
            let _timer = self.shared.observer.timer("get");
            return Ok(match self.lookup_as(key, report_expired).await? {
                Lookup::Live(entry) => found(self.decode_entry(key, &entry).await?),
                Lookup::Expired(entry) => Read::Expired(entry),
                Lookup::Absent => Read::Absent,
            });
        };
        if let Some(entry) = tier.get(key, self.now()) {
            let value = entry.decode(key)?;
            return Ok(Read::Value(value, Served::memory(entry.raw_size())));
        }
        let _timer = self.shared.observer.timer("get");
        let ticket = tier.ticket(key);
        let entry = match self.lookup_as(key, report_expired).await? {
            Lookup::Live(entry) => entry,
            Lookup::Expired(entry) => return Ok(Read::Expired(entry)),
            Lookup::Absent => return Ok(Read::Absent),
        };
        if !matches!(
            entry.meta.data_type,
            cachet_core::DataType::MessagePack | cachet_core::DataType::Json
        ) {
            // The durable read's own `TypeMismatch`.
            return Ok(found(self.decode_entry(key, &entry).await?));
        }
        let raw = match self.shared.store.read_raw(&entry).await {
            Ok(raw) => raw,
            Err(e) => return Ok(found(self.integrity(key, e)?)),
        };
        let value = crate::memory::decode_raw(key, &entry.meta.data_type, &raw)?;
        tier.backfill(ticket, &entry.meta, &raw, self.now());
        Ok(Read::Value(value, entry.meta.raw_size.into()))
    }

    /// Drops `keys` from the memory tier when the returned guard goes (after the durable
    /// change, whatever its outcome); `None` without a memory tier.
    pub(crate) fn forget_after(&self, keys: impl FnOnce() -> Vec<CacheKey>) -> Option<Forget<'_>> {
        self.shared
            .memory
            .as_ref()
            .map(|tier| Forget { tier, keys: keys() })
    }

    /// Clears the memory tier when the returned guard goes.
    pub(crate) fn clear_after(&self) -> Option<crate::memory::ClearUnlessDone<'_>> {
        self.shared
            .memory
            .as_ref()
            .map(|tier| crate::memory::ClearUnlessDone { tier, done: false })
    }

    /// Decodes a looked-up entry's value (the integrity policy applies), with its raw size.
    async fn decode_entry<T: DeserializeOwned>(
        &self,
        key: &CacheKey,
        entry: &StoredEntry,
    ) -> Result<Option<(T, Served)>> {
        match self.shared.store.read_value::<T>(entry).await {
            Ok(value) => Ok(Some((value, entry.meta.raw_size.into()))),
            Err(e) => self.integrity(key, e),
        }
    }

    /// The value of an entry that expired less than the grace period ago (never a live one:
    /// that is a hit, not a stale value). Damaged entries are never stale values.
    pub(crate) async fn read_stale<T: DeserializeOwned>(
        &self,
        key: &CacheKey,
    ) -> Result<Option<(T, u64)>> {
        if self.shared.grace.period.is_none() {
            return Ok(None);
        }
        match self.lookup_as(key, false).await? {
            Lookup::Expired(entry) => self.decode_stale(key, &entry).await,
            Lookup::Live(_) | Lookup::Absent => Ok(None),
        }
    }

    /// The value of an expired entry if it is still within the grace period.
    pub(crate) async fn decode_stale<T: DeserializeOwned>(
        &self,
        key: &CacheKey,
        entry: &StoredEntry,
    ) -> Result<Option<(T, u64)>> {
        let within_grace = match (self.shared.grace.period, entry.meta.expires_at) {
            (Some(grace), Some(at)) => self.now() < at.plus(grace),
            _ => false,
        };
        if !within_grace {
            return Ok(None);
        }
        Ok(self
            .decode_entry(key, entry)
            .await?
            .map(|(value, served)| (value, served.bytes)))
    }

    /// A stale value served in place of a failed or slow computation.
    pub(crate) fn stale_hit(&self, key: &CacheKey, bytes: u64, why: &str) {
        self.shared.observer.counters.stale_hit(bytes);
        tracing::warn!(key = %key, bytes, why, "serving a stale value within its grace period");
    }

    pub(crate) fn hit(&self, key: &CacheKey, served: Served, waited: bool) {
        self.shared.observer.hit(key, served);
        tracing::debug!(key = %key, waited, "get_with: served from the cache");
    }

    /// Reports a value read as a hit or a miss; returns the value.
    pub(crate) fn count<T>(
        &self,
        key: &CacheKey,
        found: Option<(T, impl Into<Served>)>,
    ) -> Option<T> {
        match found {
            Some((value, served)) => {
                self.shared.observer.hit(key, served.into());
                Some(value)
            }
            None => {
                self.shared.observer.miss(key);
                None
            }
        }
    }

    // ---------------------------------------------------------------- reads

    /// Reads a serde value; `None` when absent, expired, or (unless strict) damaged.
    ///
    /// # Errors
    /// `Error::TypeMismatch` when the entry holds raw bytes or a value that does not decode
    /// as `T`; `Error::Config { field: "key" }` for an invalid explicit key; backend errors.
    pub async fn get<T: DeserializeOwned>(&self, key: impl IntoCacheKey) -> Result<Option<T>> {
        if let Some(value) = self.memory_get_unnamed(&key, |entry| entry.try_decode::<T>()) {
            return Ok(Some(value));
        }
        let span = read_span!("get");
        let key = {
            let _in = (!span.is_disabled()).then(|| span.enter());
            let key = self.key(&key)?;
            if let Some(entry) = self.memory_get(&key) {
                let found = Some((entry.decode(&key)?, Served::memory(entry.raw_size())));
                return Ok(self.count(&key, found));
            }
            key
        };
        let durable = async {
            let found = self.read_value(&key).await?;
            Ok(self.count(&key, found))
        };
        Box::pin(durable.instrument(span)).await
    }

    /// The memory tier's fastest path: a hit looked up by the borrowed key (none is built),
    /// taken only when nobody needs the key named (no event subscriber, debug spans off) and
    /// `take` accepts the entry (a type mismatch goes the long way, which reports it).
    #[inline]
    fn memory_get_unnamed<V>(
        &self,
        key: &(impl IntoCacheKey + ?Sized),
        take: impl FnOnce(&crate::memory::MemoryEntry) -> Option<V>,
    ) -> Option<V> {
        let tier = self.shared.memory.as_ref()?;
        let observer = &self.shared.observer;
        if observer.needs_key() {
            return None;
        }
        let (namespace, id) = key.borrowed_parts(&self.namespace)?;
        let entry = tier.get_borrowed(namespace, id, self.now())?;
        let value = take(&entry)?;
        observer.memory_hit_unnamed(entry.raw_size());
        Some(value)
    }

    /// A live memory-tier entry (no clock read without a memory tier).
    #[inline]
    fn memory_get(&self, key: &CacheKey) -> Option<Arc<crate::memory::MemoryEntry>> {
        self.shared.memory.as_ref()?.get(key, self.now())
    }

    /// Reads a raw-bytes entry; `None` when absent, expired, or (unless strict) damaged.
    ///
    /// # Errors
    /// `Error::TypeMismatch` when the entry holds a serde value (use [`get`](Self::get) or
    /// [`reader`](Self::reader)).
    pub async fn get_bytes(&self, key: impl IntoCacheKey) -> Result<Option<Bytes>> {
        let raw = |entry: &crate::memory::MemoryEntry| {
            (entry.data_type == cachet_core::DataType::Bytes).then(|| entry.raw.clone())
        };
        if let Some(bytes) = self.memory_get_unnamed(&key, raw) {
            return Ok(Some(bytes));
        }
        // A memory hit runs in the span without entering the durable path's future (boxed, so
        // that this future stays small: moving it is part of every hit's cost).
        let span = read_span!("get_bytes");
        let key = {
            let _in = (!span.is_disabled()).then(|| span.enter());
            let key = self.key(&key)?;
            if let Some(entry) = self.memory_get(&key) {
                let found = Some((entry.bytes(&key)?, Served::memory(entry.raw_size())));
                return Ok(self.count(&key, found));
            }
            key
        };
        Box::pin(self.get_bytes_durable(key).instrument(span)).await
    }

    async fn get_bytes_durable(&self, key: CacheKey) -> Result<Option<Bytes>> {
        let _timer = self.shared.observer.timer("get_bytes");
        let tier = self.shared.memory.as_ref();
        let ticket = tier.map(|tier| tier.ticket(&key));
        let found = match self.lookup_live(&key).await? {
            Some(entry) => match self.shared.store.read_bytes(&entry).await {
                Ok(bytes) => {
                    if let (Some(tier), Some(ticket)) = (tier, ticket) {
                        tier.backfill(ticket, &entry.meta, &bytes, self.now());
                    }
                    Some((bytes, entry.meta.raw_size))
                }
                Err(e) => self.integrity(&key, e)?,
            },
            None => None,
        };
        Ok(self.count(&key, found))
    }

    /// Opens a verified stream over an entry's raw content (any data type), with bounded
    /// memory. Frame checksums are checked as it is read and the whole-content digest at its
    /// end: a damaged blob makes a later `next_chunk` fail, never return wrong bytes.
    #[tracing::instrument(level = "debug", name = "reader", skip_all, fields(key = Empty, tier = Empty, bytes = Empty, outcome = Empty))]
    pub async fn reader(&self, key: impl IntoCacheKey) -> Result<Option<ValueReader>> {
        let _timer = self.shared.observer.timer("reader");
        let key = self.key(&key)?;
        let found = match self.shared.store.reader(&key).await {
            Ok(Some(reader)) if is_live(reader.meta(), self.now()) => {
                let bytes = reader.meta().raw_size;
                Some((reader, bytes))
            }
            Ok(Some(_)) => self.expired(&key),
            Ok(None) => None,
            Err(e) => self.integrity(&key, e)?,
        };
        Ok(self.count(&key, found))
    }

    /// An entry's metadata without loading its data; `None` when absent or expired (or, unless
    /// strict, when its signature does not verify). The data itself is not checked.
    #[doc(alias = "get_metadata")]
    #[tracing::instrument(level = "debug", name = "metadata", skip_all, fields(key = Empty))]
    pub async fn metadata(&self, key: impl IntoCacheKey) -> Result<Option<EntryMeta>> {
        let _timer = self.shared.observer.timer("metadata");
        let key = self.key(&key)?;
        self.live_meta(&key).await
    }

    pub(crate) async fn live_meta(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        match self.shared.store.metadata(key).await {
            Ok(Some(meta)) if is_live(&meta, self.now()) => Ok(Some(meta)),
            Ok(_) => Ok(None),
            Err(e) => self.integrity(key, e),
        }
    }

    /// Whether a live entry exists (same rules as [`metadata`](Self::metadata)).
    #[tracing::instrument(level = "debug", name = "contains_key", skip_all)]
    pub async fn contains_key(&self, key: impl IntoCacheKey) -> Result<bool> {
        Ok(self.metadata(key).await?.is_some())
    }

    // ---------------------------------------------------------------- writes

    /// Stores a serde value (MessagePack). Returns a request: set options, then `.await` it.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// let key = cachet_core::params! { "model" => "xgb", "depth" => 6 };
    /// cache.insert(&key, &[0.25f64, 0.75]).with_ttl_str("7d").with_tag("models").await?;
    /// let back: Option<Vec<f64>> = cache.get(&key).await?;
    /// assert_eq!(back, Some(vec![0.25, 0.75]));
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub fn insert<'a, T: Serialize + Sync + ?Sized>(
        &'a self,
        key: impl IntoCacheKey,
        value: &'a T,
    ) -> Insert<'a, T> {
        Insert::new(self, ResolvedKey::new(&key, &self.namespace), value)
    }

    /// Stores raw bytes as they are. Returns a request: set options, then `.await` it.
    pub fn insert_bytes<B: AsRef<[u8]>>(
        &self,
        key: impl IntoCacheKey,
        data: B,
    ) -> InsertBytes<'_, B> {
        InsertBytes::new(self, ResolvedKey::new(&key, &self.namespace), data)
    }

    #[tracing::instrument(level = "debug", name = "insert", skip_all,
        fields(key = %key.key, bytes = Empty, outcome = Empty))]
    pub(crate) async fn insert_resolved<T: Serialize + ?Sized>(
        &self,
        key: ResolvedKey,
        value: &T,
        options: &InsertOptions,
    ) -> Result<EntryMeta> {
        let _timer = self.shared.observer.timer("insert");
        let store = &self.shared.store;
        let put = options.to_put_options(self.shared.default_ttl, key.params)?;
        // Not filled (the encoded bytes stay inside the store): the next read backfills.
        let _forget = self.forget_after(|| vec![key.key.clone()]);
        let meta = if options.is_json() {
            store.put_json(&key.key, value, put).await?
        } else {
            store.put_value(&key.key, value, put).await?
        };
        self.record_insert(&meta);
        Ok(meta)
    }

    #[tracing::instrument(level = "debug", name = "insert_bytes", skip_all,
        fields(key = %key.key, bytes = Empty, outcome = Empty))]
    pub(crate) async fn insert_bytes_resolved(
        &self,
        key: ResolvedKey,
        data: &[u8],
        options: &InsertOptions,
    ) -> Result<EntryMeta> {
        let _timer = self.shared.observer.timer("insert_bytes");
        let store = &self.shared.store;
        let put = options.to_put_options(self.shared.default_ttl, key.params)?;
        let Some(tier) = &self.shared.memory else {
            let meta = store.put_bytes(&key.key, data, put).await?;
            self.record_insert(&meta);
            return Ok(meta);
        };
        let ticket = tier.ticket(&key.key);
        // Dropped without being defused (an error, or cancellation): the key is forgotten.
        let forget = Forget {
            tier,
            keys: vec![key.key.clone()],
        };
        let meta = store.put_bytes(&key.key, data, put).await?;
        forget.defuse();
        let raw = tier
            .admits(data.len() as u64)
            .then(|| Bytes::copy_from_slice(data));
        tier.written(ticket, &meta, raw.as_ref(), self.now());
        self.record_insert(&meta);
        Ok(meta)
    }

    pub(crate) fn record_insert(&self, meta: &EntryMeta) {
        self.shared.observer.put(&meta.key, meta.raw_size);
        if let Some(evictor) = &self.shared.evictor {
            evictor.note_write(&meta.key, meta.stored_size);
        }
        tracing::debug!(key = %meta.key, bytes = meta.raw_size, stored = meta.stored_size, "insert");
    }

    /// Starts a streaming write of raw bytes (see [`CacheWriter`]).
    pub async fn writer(&self, key: impl IntoCacheKey) -> Result<CacheWriter> {
        self.writer_with_options(key, InsertOptions::default())
            .await
    }

    /// Starts a streaming write with options.
    pub async fn writer_with_options(
        &self,
        key: impl IntoCacheKey,
        options: InsertOptions,
    ) -> Result<CacheWriter> {
        let key = ResolvedKey::new(&key, &self.namespace)?;
        Ok(CacheWriter::new(self.clone(), key, options))
    }

    // ---------------------------------------------------------------- computed values

    /// Returns the cached value, or computes, stores and returns it.
    ///
    /// When many tasks of this process ask for the same missing key at once, `init` runs
    /// once: the others wait and then read the stored value. If the computing task is
    /// cancelled (dropped) or panics, a waiting task takes over. Every value is cached,
    /// including `None`, `()` and empty collections. The entry gets the default TTL.
    ///
    /// A value that was computed but could not be stored is still returned (the failure is
    /// logged with `tracing::warn!`).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// let key = cachet_core::params! { "dataset" => "sales-2026", "window" => 30 };
    /// let total: u64 = cache.get_with(&key, || async { (1..=30).sum() }).await?;
    /// let again: u64 = cache.get_with(&key, || async { unreachable!("cached") }).await?;
    /// assert_eq!(total, again);
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub async fn get_with<T, F, Fut>(&self, key: impl IntoCacheKey, init: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.get_with_options(key, InsertOptions::default(), init)
            .await
    }

    /// [`get_with`](Self::get_with), storing a computed value with `options` (TTL, tags, ...).
    pub async fn get_with_options<T, F, Fut>(
        &self,
        key: impl IntoCacheKey,
        options: InsertOptions,
        init: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.try_get_with_options(key, options, move || async move {
            Ok::<T, Infallible>(init().await)
        })
        .await
    }

    /// Like [`get_with`](Self::get_with) for a fallible computation. An error is returned as
    /// `Error::Compute { key, source }` (the leader gets its own error as `source`; tasks that
    /// were waiting for it get its message) and is not cached: the next call computes again.
    pub async fn try_get_with<T, E, F, Fut>(&self, key: impl IntoCacheKey, init: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        E: Into<BoxError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.try_get_with_options(key, InsertOptions::default(), init)
            .await
    }

    /// [`try_get_with`](Self::try_get_with), storing a computed value with `options`.
    pub async fn try_get_with_options<T, E, F, Fut>(
        &self,
        key: impl IntoCacheKey,
        options: InsertOptions,
        init: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        E: Into<BoxError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // As in `get_bytes`: a memory hit in the span, the rest boxed.
        let span = read_span!("get_with");
        let cache_key = {
            let _in = (!span.is_disabled()).then(|| span.enter());
            let cache_key = self.key(&key)?;
            if let Some(entry) = self.memory_get(&cache_key) {
                let value = entry.decode::<T>(&cache_key)?;
                self.hit(&cache_key, Served::memory(entry.raw_size()), false);
                return Ok(value);
            }
            cache_key
        };
        let durable = self.get_with_durable(key, cache_key, options, init);
        Box::pin(durable.instrument(span)).await
    }

    async fn get_with_durable<T, E, F, Fut>(
        &self,
        key: impl IntoCacheKey,
        cache_key: CacheKey,
        options: InsertOptions,
        init: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        E: Into<BoxError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some((value, bytes)) = self.read_value::<T>(&cache_key).await? {
            self.hit(&cache_key, bytes, false);
            return Ok(value);
        }

        // Invalid options fail now, not after an expensive computation.
        options.to_put_options(self.shared.default_ttl, None)?;

        // Missed: join the key's flight (see `flight.rs` for the protocol).
        let mut flight = self.shared.flights.join(&cache_key);
        let mut state = loop {
            let state = flight.lock().await;
            match flight.outcome_since_ticket(&state) {
                Some(Outcome::Failed(message)) => {
                    drop(state);
                    if let Some((value, bytes)) = self.read_stale::<T>(&cache_key).await? {
                        self.stale_hit(&cache_key, bytes, "a concurrent computation failed");
                        return Ok(value);
                    }
                    self.shared.observer.miss(&cache_key);
                    return Err(Error::Compute {
                        key: cache_key.to_string(),
                        source: format!("a concurrent computation of this key failed: {message}")
                            .into(),
                    });
                }
                Some(Outcome::Inserted) => {
                    // Read without holding the lock, so large reads are not serialized.
                    drop(state);
                    flight.renew_ticket();
                    if let Some((value, bytes)) = self.read_value_again::<T>(&cache_key).await? {
                        self.hit(&cache_key, bytes, true);
                        return Ok(value);
                    }
                }
                None => {
                    // Nothing completed since we joined: someone may still have inserted
                    // (before we joined, or another process). With per-key locks in the
                    // index, the look taken with the key's lock (below) covers this.
                    if !self.index_has_key_locks() {
                        if let Some((value, bytes)) = self.read_value_again::<T>(&cache_key).await?
                        {
                            drop(state);
                            self.hit(&cache_key, bytes, true);
                            return Ok(value);
                        }
                    }
                    break state;
                }
            }
        };

        // We lead in this process. Where the index offers per-key locks, also take the key's
        // lock there, so that one process (on any machine sharing the index) computes; the
        // value may show up while we wait for it.
        let key_lock = match self.lock_key_across_processes(&cache_key).await? {
            KeyLockOutcome::Held(lock) => lock,
            KeyLockOutcome::ValueAppeared(entry) => {
                if let Some((value, bytes)) = self.decode_entry::<T>(&cache_key, &entry).await? {
                    drop(state);
                    self.hit(&cache_key, bytes, true);
                    return Ok(value);
                }
                None // gone again at once: compute without the lock
            }
        };
        let result = self
            .compute_as_leader(key, &cache_key, &options, init, &flight, &mut state)
            .await;
        if let Some(lock) = key_lock {
            release_key_lock(&cache_key, lock).await;
        }
        result
    }

    /// Takes the key's lock in the index (other processes and machines), waiting while another
    /// holder computes the value; returns early if the value shows up meanwhile.
    async fn lock_key_across_processes(&self, key: &CacheKey) -> Result<KeyLockOutcome> {
        if !self.index_has_key_locks() {
            return Ok(KeyLockOutcome::Held(None));
        }
        let index = self.shared.store.metadata_backend();
        let mut delay = KEY_LOCK_POLL_MIN;
        loop {
            match index.try_lock_key(key).await {
                Ok(Some(lock)) => {
                    // The holder before us may have stored the value just before releasing.
                    if let Some(entry) = self.lookup_live_again(key).await? {
                        release_key_lock(key, lock).await;
                        return Ok(KeyLockOutcome::ValueAppeared(Box::new(entry)));
                    }
                    return Ok(KeyLockOutcome::Held(Some(lock)));
                }
                Ok(None) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(KEY_LOCK_POLL_MAX);
                    if let Some(entry) = self.lookup_live_again(key).await? {
                        return Ok(KeyLockOutcome::ValueAppeared(Box::new(entry)));
                    }
                }
                Err(e) => {
                    // Computing twice is better than failing a read: go on without the lock
                    // (after the look the caller skipped, counting on the lock).
                    tracing::warn!(key = %key, error = %e,
                        "could not take the key's lock in the index; computing without it");
                    return Ok(match self.lookup_live_again(key).await? {
                        Some(entry) => KeyLockOutcome::ValueAppeared(Box::new(entry)),
                        None => KeyLockOutcome::Held(None),
                    });
                }
            }
        }
    }

    fn index_has_key_locks(&self) -> bool {
        self.shared
            .store
            .metadata_backend()
            .capabilities()
            .key_locks
    }

    /// Computes the value as the leader (holding the flight's lock), stores it and records the
    /// outcome for the waiters.
    async fn compute_as_leader<T, E, F, Fut>(
        &self,
        key: impl IntoCacheKey,
        cache_key: &CacheKey,
        options: &InsertOptions,
        init: F,
        flight: &crate::flight::FlightHandle<'_>,
        state: &mut crate::flight::SlotState,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        E: Into<BoxError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let cache_key = cache_key.clone();
        self.shared.observer.computing(&cache_key);
        tracing::debug!(key = %cache_key, "get_with: computing");
        let _timer = self.shared.observer.timer("compute");
        match init().await {
            Ok(value) => {
                let resolved = ResolvedKey {
                    key: cache_key.clone(),
                    params: key.params_json(),
                };
                match self.insert_resolved(resolved, &value, options).await {
                    Ok(_) => flight.complete(state, Outcome::Inserted),
                    // No outcome recorded: a waiter computes again rather than miss forever.
                    Err(e) => {
                        self.shared
                            .observer
                            .error(Some(&cache_key), "store_computed", &e);
                        tracing::warn!(key = %cache_key, error = %e,
                            "computed value could not be stored; returning it uncached");
                    }
                }
                Ok(value)
            }
            Err(e) => {
                let source: BoxError = e.into();
                self.shared
                    .observer
                    .error(Some(&cache_key), "compute", &source);
                flight.complete(state, Outcome::Failed(Arc::from(source.to_string())));
                tracing::debug!(key = %cache_key, error = %source, "get_with: computation failed");
                if let Some((value, bytes)) = self.read_stale::<T>(&cache_key).await? {
                    self.stale_hit(
                        &cache_key,
                        bytes,
                        &format!("the computation failed: {source}"),
                    );
                    return Ok(value);
                }
                Err(Error::Compute {
                    key: cache_key.to_string(),
                    source,
                })
            }
        }
    }

    /// Memoizes a function call: the key is
    /// `Params { "function": function_name, "args": args }` (args through
    /// [`ParamValue::from_serialize`]), and the value comes from [`get_with`](Self::get_with).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
    /// async fn slow_square(x: u64) -> u64 { x * x }
    /// let y: u64 = cache.memoize("slow_square", &(12,), || slow_square(12)).await?;
    /// assert_eq!(y, 144);
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    #[tracing::instrument(level = "debug", name = "memoize", skip_all, fields(function = %function_name))]
    pub async fn memoize<T, A, F, Fut>(&self, function_name: &str, args: &A, init: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        A: Serialize + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let key = memo_key(function_name, args)?;
        self.get_with(key, init).await
    }

    // ---------------------------------------------------------------- management

    /// Deletes an entry (expired or not); returns whether one existed. Its blob is reclaimed
    /// when no other entry shares it.
    #[tracing::instrument(level = "debug", name = "invalidate", skip_all, fields(key = Empty, outcome = Empty))]
    pub async fn invalidate(&self, key: impl IntoCacheKey) -> Result<bool> {
        let _timer = self.shared.observer.timer("invalidate");
        let key = self.key(&key)?;
        let _forget = self.forget_after(|| vec![key.clone()]);
        let removed = self.shared.store.delete(&key).await?;
        if removed {
            self.shared.observer.invalidated(&key);
        }
        tracing::debug!(key = %key, removed, "invalidate");
        Ok(removed)
    }

    /// Resets a live entry's TTL to `ttl` from now (`None`: the cache's default TTL, or no
    /// expiry when there is none). Returns `false` when there is no live entry (an expired
    /// entry is not brought back).
    #[tracing::instrument(level = "debug", name = "touch", skip_all, fields(key = Empty))]
    pub async fn touch(&self, key: impl IntoCacheKey, ttl: Option<Duration>) -> Result<bool> {
        let _timer = self.shared.observer.timer("touch");
        let key = self.key(&key)?;
        let ttl = ttl.or(self.shared.default_ttl);
        if ttl.is_some_and(|t| t.is_zero()) {
            return Err(Error::config("ttl", "a TTL must be longer than zero"));
        }
        let Some(meta) = self.live_meta(&key).await? else {
            return Ok(false);
        };
        let expires_at = ttl.map(|t| self.now().plus(t));
        let _forget = self.forget_after(|| vec![key.clone()]);
        let changed = self
            .shared
            .store
            .set_expiry_as_read(vec![Some((meta, expires_at))])
            .await;
        let touched = match changed.map(|flags| flags[0]) {
            Ok(touched) => touched,
            Err(e) => self.integrity::<()>(&key, e)?.is_some(),
        };
        tracing::debug!(key = %key, touched, ?expires_at, "touch");
        Ok(touched)
    }

    /// Deletes every expired entry (in all namespaces), then runs garbage collection.
    ///
    /// (The memory tier needs no change: its entries expire no later than their durable
    /// entries.) Each batch checks expiry and deletes in one atomic step, so an entry that another writer
    /// re-inserted meanwhile with a later expiry is kept.
    #[tracing::instrument(level = "debug", name = "cleanup_expired", skip_all)]
    pub async fn cleanup_expired(&self) -> Result<CleanupReport> {
        let _timer = self.shared.observer.timer("cleanup_expired");
        let store = &self.shared.store;
        let expired = store.delete_expired(self.expired_before()).await?;
        expired
            .keys
            .iter()
            .for_each(|k| self.shared.observer.expired(k));
        let report = CleanupReport {
            entries_removed: expired.entries_removed,
            blobs_freed: expired.blobs_deleted,
            bytes_freed: expired.bytes_freed,
            gc: store.gc().await?,
        };
        tracing::info!(?report, "cleanup_expired finished");
        Ok(report)
    }

    /// Garbage collection of unreferenced blobs (see [`Store::gc`]).
    #[tracing::instrument(level = "debug", name = "gc", skip_all)]
    pub async fn gc(&self) -> Result<GcReport> {
        let _timer = self.shared.observer.timer("gc");
        self.shared.store.gc().await
    }

    /// Writes batched access times and flushes the index.
    #[tracing::instrument(level = "debug", name = "flush", skip_all)]
    pub async fn flush(&self) -> Result<()> {
        self.shared.store.flush().await
    }

    /// Totals over the whole index (all namespaces, expired entries included).
    #[tracing::instrument(level = "debug", name = "index_stats", skip_all)]
    pub async fn index_stats(&self) -> Result<IndexStats> {
        self.shared.store.stats().await
    }
}

/// The key [`Cache::memoize`] uses for a call.
pub fn memo_key<A: Serialize + ?Sized>(function_name: &str, args: &A) -> Result<Params> {
    Ok(Params::new()
        .with("function", function_name)
        .with("args", ParamValue::from_serialize(args)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_flight_map_is_empty_after_computations_end() {
        let cache = Cache::builder().in_memory().build().await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..20u32 {
            let cache = cache.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("k{}", i % 4);
                if i % 3 == 0 {
                    cache
                        .try_get_with(key.as_str(), || async { Err::<u32, _>("failed") })
                        .await
                        .ok()
                } else {
                    cache.get_with(key.as_str(), || async move { i }).await.ok()
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(cache.shared.flights.len(), 0);
        // A cancelled waiter and leader leave nothing behind either.
        let leader = {
            let cache = cache.clone();
            tokio::spawn(
                async move { cache.get_with("pending", std::future::pending::<u32>).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(cache.shared.flights.len(), 1);
        leader.abort();
        let _ = leader.await;
        assert_eq!(cache.shared.flights.len(), 0);
    }
}
