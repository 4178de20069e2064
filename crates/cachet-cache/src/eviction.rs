//! Eviction policies over the index: size and entry quotas (global and per namespace), LRU or
//! aged LFU order, time-to-idle, expired entries, pinned entries; run off the put path.
//!
//! Puts only add their stored size to an in-process estimate (a few atomic operations); when
//! the estimate crosses a limit's high watermark, they wake the background task, which
//! measures the real usage in the index and evicts batches until the usage is under the low
//! watermark. The same task also runs every `check_interval`, to see other processes' writes,
//! idle and expired entries. One eviction runs at a time per index (a key lock in the index,
//! where the index has locks).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cachet_core::{
    CacheKey, EntryMeta, Error, EvictionBatch, EvictionOrder, IndexUsage, Result, Timestamp,
};
use cachet_storage::EvictedBatch;

use crate::cache::{Cache, Shared};
use crate::events::EvictionReason;
use crate::memory::parse_size;

/// Called once per evicted entry with its metadata (as it was when evicted) and the reason.
/// It runs on the eviction task: keep it short and never block on the cache itself.
pub type EvictionListener = Arc<dyn Fn(&EntryMeta, EvictionReason) + Send + Sync>;

/// What eviction enforces. Every limit set is enforced on every run (a composite policy);
/// entries are taken in one [`EvictionOrder`].
///
/// ```
/// use std::time::Duration;
/// use cachet_cache::EvictionPolicy;
///
/// let policy = EvictionPolicy::lfu()
///     .max_bytes_str("20GiB")
///     .max_entries(1_000_000)
///     .namespace_quota_str("scratch", "2GiB")
///     .time_to_idle(Duration::from_secs(7 * 24 * 3600))
///     .watermarks(1.0, 0.9);
/// ```
///
/// # Semantics
/// - **Limits** (`max_bytes`, `max_entries`, namespace quotas) count what the index holds:
///   bytes are inline values plus each blob **once**, however many entries share it, so the
///   bytes an eviction frees are those of blobs no entry references any more. A limit is
///   exceeded when usage passes `high × limit`; eviction then removes entries in order until
///   usage is at most `low × limit`.
/// - **Never evicted**: entries written less than [`protect_recent`](Self::protect_recent)
///   ago (by default 100 ms; so the write that triggered an eviction never loses its entry), and
///   pinned entries ([`InsertOptions::pinned`](crate::InsertOptions::pinned)). When only such
///   entries remain, the cache may stay over its limit until they age or are unpinned.
/// - **Time-to-idle**: entries not read for that long are removed. "Read" is the index's
///   access time, which this process writes back in batches (every entry is written back at
///   the start of each run) and which memory-tier hits do not update (a value held in the
///   memory tier is read from the index at least once per `memory_tier_ttl`): keep the
///   time-to-idle well above a minute.
/// - **Expired** entries are removed on every run (unless
///   [`remove_expired(false)`](Self::remove_expired)).
#[derive(Clone, PartialEq)]
pub struct EvictionPolicy {
    pub(crate) order: EvictionOrder,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) max_entries: Option<u64>,
    pub(crate) namespace_quotas: BTreeMap<String, u64>,
    pub(crate) time_to_idle: Option<Duration>,
    pub(crate) remove_expired: bool,
    pub(crate) high_watermark: f64,
    pub(crate) low_watermark: f64,
    pub(crate) protect_recent: Duration,
    pub(crate) batch_size: usize,
    pub(crate) check_interval: Duration,
    /// A `*_str` argument that did not parse: (method, message), reported by `validate`.
    invalid: Option<(&'static str, String)>,
}

impl std::fmt::Debug for EvictionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvictionPolicy")
            .field("order", &self.order)
            .field("max_bytes", &self.max_bytes)
            .field("max_entries", &self.max_entries)
            .field("namespace_quotas", &self.namespace_quotas)
            .field("time_to_idle", &self.time_to_idle)
            .field("remove_expired", &self.remove_expired)
            .field("watermarks", &(self.high_watermark, self.low_watermark))
            .field("protect_recent", &self.protect_recent)
            .field("batch_size", &self.batch_size)
            .field("check_interval", &self.check_interval)
            .finish()
    }
}

impl Default for EvictionPolicy {
    fn default() -> Self {
        EvictionPolicy::lru()
    }
}

impl EvictionPolicy {
    /// Least recently used first; no limit yet (expired entries are removed).
    pub fn lru() -> Self {
        EvictionPolicy::with_order(EvictionOrder::LeastRecentlyUsed)
    }

    /// Least frequently used first, counts halving every hour without reads.
    pub fn lfu() -> Self {
        EvictionPolicy::with_order(EvictionOrder::LFU)
    }

    /// Least frequently used first, counts halving every `half_life` without reads.
    pub fn lfu_with_half_life(half_life: Duration) -> Self {
        EvictionPolicy::with_order(EvictionOrder::LeastFrequentlyUsed { half_life })
    }

    /// A policy taking entries in `order`.
    pub fn with_order(order: EvictionOrder) -> Self {
        EvictionPolicy {
            order,
            max_bytes: None,
            max_entries: None,
            namespace_quotas: BTreeMap::new(),
            time_to_idle: None,
            remove_expired: true,
            high_watermark: 1.0,
            low_watermark: 0.9,
            protect_recent: Duration::from_millis(100),
            batch_size: 500,
            check_interval: Duration::from_secs(30),
            invalid: None,
        }
    }

    /// At most this many stored bytes in the whole cache (every namespace).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// [`max_bytes`](Self::max_bytes) from a human size: `"20GiB"`, `"500MB"`, `"1.5 TiB"`.
    /// A bad string makes `build` fail with a `Config` error naming `max_bytes`.
    pub fn max_bytes_str(mut self, bytes: &str) -> Self {
        match parse_size(bytes) {
            Ok(bytes) => self.max_bytes = Some(bytes),
            Err(e) => self.invalid = Some(("max_bytes", e)),
        }
        self
    }

    /// At most this many entries in the whole cache.
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = Some(entries);
        self
    }

    /// At most this many stored bytes in one namespace (its inline values plus the blobs its
    /// entries reference, each once).
    pub fn namespace_quota(mut self, namespace: &str, bytes: u64) -> Self {
        self.namespace_quotas.insert(namespace.to_owned(), bytes);
        self
    }

    /// [`namespace_quota`](Self::namespace_quota) from a human size (`"2GiB"`).
    pub fn namespace_quota_str(mut self, namespace: &str, bytes: &str) -> Self {
        match parse_size(bytes) {
            Ok(bytes) => {
                self.namespace_quotas.insert(namespace.to_owned(), bytes);
            }
            Err(e) => self.invalid = Some(("namespace_quota", e)),
        }
        self
    }

    /// Removes entries not read for this long (see the type's docs on what counts as read).
    pub fn time_to_idle(mut self, idle: Duration) -> Self {
        self.time_to_idle = Some(idle);
        self
    }

    /// [`time_to_idle`](Self::time_to_idle) from a human duration (`"7d"`, `"36h"`).
    pub fn time_to_idle_str(mut self, idle: &str) -> Self {
        match crate::options::parse_ttl(idle) {
            Ok(idle) => self.time_to_idle = Some(idle),
            Err(e) => self.invalid = Some(("time_to_idle", e.to_string())),
        }
        self
    }

    /// Whether runs also remove expired entries (default: yes).
    pub fn remove_expired(mut self, remove: bool) -> Self {
        self.remove_expired = remove;
        self
    }

    /// Start evicting when usage passes `high × limit`, stop at `low × limit` (defaults 1.0
    /// and 0.9). `0 < low <= high`; a gap between them makes runs rarer and larger.
    pub fn watermarks(mut self, high: f64, low: f64) -> Self {
        self.high_watermark = high;
        self.low_watermark = low;
        self
    }

    /// Entries written less than this long ago are never evicted (default 100 ms). While
    /// they are protected the cache can exceed its limit by what is written in that time: at
    /// 80 MiB/s of puts, a 1 s protection let a 64 MiB quota reach 1.15–1.29× (measured by
    /// `benches --bin eviction`), 100 ms kept it within 1.003×.
    pub fn protect_recent(mut self, age: Duration) -> Self {
        self.protect_recent = age;
        self
    }

    /// Entries deleted per index transaction (default 500).
    pub fn batch_size(mut self, entries: usize) -> Self {
        self.batch_size = entries;
        self
    }

    /// How often the background task looks at the index even without local writes (default
    /// 30 s): other processes' writes, idle and expired entries.
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// Checks every setting; `Error::Config` names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if let Some((field, message)) = &self.invalid {
            return Err(Error::config(field, message));
        }
        self.order.half_life_ms()?;
        let (high, low) = (self.high_watermark, self.low_watermark);
        if !(low > 0.0 && low <= high && high.is_finite()) {
            return Err(Error::config(
                "watermarks",
                format!("need 0 < low <= high (finite), got high {high}, low {low}"),
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::config("batch_size", "must be at least 1"));
        }
        if self.check_interval.is_zero() {
            return Err(Error::config("check_interval", "must be longer than zero"));
        }
        if self.time_to_idle.is_some_and(|t| t.is_zero()) {
            return Err(Error::config(
                "time_to_idle",
                "must be longer than zero; leave it unset to keep idle entries",
            ));
        }
        for namespace in self.namespace_quotas.keys() {
            cachet_core::key::validate_namespace(namespace)?;
        }
        Ok(())
    }

    fn high(&self, limit: u64) -> u64 {
        scale(limit, self.high_watermark)
    }

    fn low(&self, limit: u64) -> u64 {
        scale(limit, self.low_watermark)
    }
}

fn scale(limit: u64, factor: f64) -> u64 {
    let scaled = limit as f64 * factor;
    if scaled >= u64::MAX as f64 {
        u64::MAX
    } else {
        scaled as u64
    }
}

/// What one eviction run ([`Cache::run_eviction`]) removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EvictionReport {
    /// Expired entries removed.
    pub expired: u64,
    /// Idle entries removed.
    pub idle: u64,
    /// Entries removed because a namespace was over its quota.
    pub namespace_quota: u64,
    /// Entries removed because the cache had too many entries.
    pub max_entries: u64,
    /// Entries removed because the cache held too many bytes.
    pub max_bytes: u64,
    /// Blobs deleted because no entry references them any more.
    pub blobs_deleted: u64,
    /// Bytes freed: evicted inline values and deleted blobs (a shared blob frees nothing until
    /// its last entry goes).
    pub bytes_freed: u64,
    /// The whole cache's usage after the run (when the policy has a global limit).
    pub usage: Option<IndexUsage>,
    /// Another process was evicting from this index: this run did nothing.
    pub skipped: bool,
}

impl EvictionReport {
    /// Entries removed, for every reason.
    pub fn entries_removed(&self) -> u64 {
        self.expired + self.idle + self.namespace_quota + self.max_entries + self.max_bytes
    }

    fn count(&mut self, reason: EvictionReason, batch: &EvictedBatch) {
        let n = batch.entries.len() as u64;
        match reason {
            EvictionReason::Expired => self.expired += n,
            EvictionReason::Idle => self.idle += n,
            EvictionReason::MaxBytes => self.max_bytes += n,
            EvictionReason::MaxEntries => self.max_entries += n,
            EvictionReason::NamespaceQuota => self.namespace_quota += n,
        }
        self.blobs_deleted += batch.blobs_deleted;
        self.bytes_freed += batch.bytes_freed;
    }
}

/// The key whose index lock makes one eviction run at a time per index.
fn eviction_lock_key() -> CacheKey {
    CacheKey::explicit("cachet:eviction", "run").expect("a valid explicit key")
}

/// The in-process side of eviction: the policy, the write estimates that wake the task, and
/// the run lock.
pub(crate) struct Evictor {
    pub(crate) policy: EvictionPolicy,
    listener: Option<EvictionListener>,
    /// Estimated usage of the whole cache: measured at the last run, plus local writes since.
    bytes: AtomicU64,
    entries: AtomicU64,
    /// Estimated bytes per namespace with a quota (same order as `policy.namespace_quotas`).
    namespace_bytes: Vec<(String, u64, AtomicU64)>,
    wake: tokio::sync::Notify,
    closed: AtomicBool,
    running: tokio::sync::Mutex<()>,
}

impl Evictor {
    pub(crate) fn new(policy: EvictionPolicy, listener: Option<EvictionListener>) -> Evictor {
        let namespace_bytes = policy
            .namespace_quotas
            .iter()
            .map(|(ns, quota)| (ns.clone(), *quota, AtomicU64::new(0)))
            .collect();
        Evictor {
            policy,
            listener,
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            namespace_bytes,
            wake: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// After a local write: adds it to the estimates and wakes the task when a limit's high
    /// watermark is crossed. Never waits.
    pub(crate) fn note_write(&self, key: &CacheKey, stored_size: u64) {
        let policy = &self.policy;
        let bytes = self.bytes.fetch_add(stored_size, Ordering::Relaxed) + stored_size;
        let entries = self.entries.fetch_add(1, Ordering::Relaxed) + 1;
        let mut over = policy.max_bytes.is_some_and(|max| bytes > policy.high(max))
            || policy
                .max_entries
                .is_some_and(|max| entries > policy.high(max));
        for (namespace, quota, estimate) in &self.namespace_bytes {
            if namespace == key.namespace() {
                let used = estimate.fetch_add(stored_size, Ordering::Relaxed) + stored_size;
                over |= used > policy.high(*quota);
            }
        }
        if over {
            self.wake.notify_one();
        }
    }

    /// Stops the background task (when the cache is dropped).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// Starts the background task of `shared`'s evictor. It holds the evictor and only a weak
/// reference to the cache, and ends when the cache is dropped ([`Evictor::close`]).
pub(crate) fn spawn_background(shared: &Arc<Shared>) {
    let Some(evictor) = shared.evictor.clone() else {
        return;
    };
    let weak: Weak<Shared> = Arc::downgrade(shared);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = evictor.wake.notified() => {}
                () = tokio::time::sleep(evictor.policy.check_interval) => {}
            }
            if evictor.closed.load(Ordering::Acquire) {
                return;
            }
            let Some(shared) = weak.upgrade() else { return };
            let cache = Cache {
                shared,
                namespace: Arc::from(""),
            };
            if let Err(e) = cache.run_eviction().await {
                tracing::warn!(error = %e, "eviction run failed; retrying at the next check");
            }
        }
    });
}

impl Cache {
    /// Runs eviction once, now, with the cache's [`EvictionPolicy`] (the background task
    /// does the same after local writes cross a limit and every `check_interval`): writes
    /// back this process's pending access times, removes expired and idle entries, then
    /// evicts down to the low watermark of each namespace quota, `max_entries` and
    /// `max_bytes`, in that order.
    ///
    /// `Error::Config` when the cache was built without [`eviction`](crate::CacheBuilder::eviction).
    pub async fn run_eviction(&self) -> Result<EvictionReport> {
        let Some(evictor) = &self.shared.evictor else {
            return Err(Error::config(
                "eviction",
                "this cache has no eviction policy; set one with CacheBuilder::eviction",
            ));
        };
        let _one_at_a_time = evictor.running.lock().await;
        let store = &self.shared.store;
        let meta = store.metadata_backend();
        let lock = if meta.capabilities().key_locks {
            match meta.try_lock_key(&eviction_lock_key()).await? {
                Some(lock) => Some(lock),
                None => {
                    tracing::debug!("another process is evicting from this index; skipped");
                    return Ok(EvictionReport {
                        skipped: true,
                        ..EvictionReport::default()
                    });
                }
            }
        } else {
            None
        };
        let result = self.evict_under_lock(evictor).await;
        if let Some(lock) = lock {
            if let Err(e) = lock.release().await {
                tracing::warn!(error = %e, "could not release the eviction lock (freed when the session ends)");
            }
        }
        let report = result?;
        if report.entries_removed() > 0 {
            tracing::info!(?report, "eviction run finished");
        }
        Ok(report)
    }

    async fn evict_under_lock(&self, evictor: &Evictor) -> Result<EvictionReport> {
        let policy = &evictor.policy;
        let store = &self.shared.store;
        let mut report = EvictionReport::default();
        // LRU and LFU rank by what the index knows: this process's reads first.
        store.flush().await?;
        let now = self.now();
        let protect_before = Timestamp(now.0.saturating_sub(duration_ms(policy.protect_recent)));

        if policy.remove_expired {
            loop {
                let batch = store
                    .delete_expired_batch(self.expired_before(), policy.batch_size)
                    .await?;
                if batch.entries.is_empty() {
                    break;
                }
                self.evicted(evictor, EvictionReason::Expired, &batch, &mut report);
            }
        }
        if let Some(idle) = policy.time_to_idle {
            let mut batch = EvictionBatch::new(policy.order, now, policy.batch_size);
            batch.written_before = protect_before;
            batch.accessed_before = Some(Timestamp(now.0.saturating_sub(duration_ms(idle))));
            loop {
                let evicted = store.evict(&batch).await?;
                if evicted.entries.is_empty() {
                    break;
                }
                self.evicted(evictor, EvictionReason::Idle, &evicted, &mut report);
            }
        }
        for (namespace, quota, estimate) in &evictor.namespace_bytes {
            let usage = self
                .evict_down_to(
                    evictor,
                    Some(namespace),
                    Limit::Bytes(*quota),
                    EvictionReason::NamespaceQuota,
                    now,
                    protect_before,
                    &mut report,
                )
                .await?;
            estimate.store(usage.bytes, Ordering::Relaxed);
        }
        let mut usage = None;
        let global = [
            policy
                .max_entries
                .map(|max| (Limit::Entries(max), EvictionReason::MaxEntries)),
            policy
                .max_bytes
                .map(|max| (Limit::Bytes(max), EvictionReason::MaxBytes)),
        ];
        for (limit, reason) in global.into_iter().flatten() {
            let after = self
                .evict_down_to(
                    evictor,
                    None,
                    limit,
                    reason,
                    now,
                    protect_before,
                    &mut report,
                )
                .await?;
            usage = Some(after);
        }
        if let Some(usage) = usage {
            evictor.bytes.store(usage.bytes, Ordering::Relaxed);
            evictor.entries.store(usage.entries, Ordering::Relaxed);
        }
        report.usage = usage;
        Ok(report)
    }

    /// Evicts from the namespace (or everything) while usage is over `limit`'s high watermark,
    /// down to its low watermark; returns the usage afterwards.
    #[allow(clippy::too_many_arguments)] // one private step of a run, called three times
    async fn evict_down_to(
        &self,
        evictor: &Evictor,
        namespace: Option<&str>,
        limit: Limit,
        reason: EvictionReason,
        now: Timestamp,
        protect_before: Timestamp,
        report: &mut EvictionReport,
    ) -> Result<IndexUsage> {
        let policy = &evictor.policy;
        let store = &self.shared.store;
        let mut usage = store.usage(namespace).await?;
        if limit.used(&usage) <= policy.high(limit.max()) {
            return Ok(usage);
        }
        let target = policy.low(limit.max());
        // Freed amounts are subtracted locally; the index is measured again only when the
        // estimate says the target is reached (concurrent writers may have added meanwhile).
        loop {
            while limit.used(&usage) > target {
                let excess = limit.used(&usage) - target;
                let mut batch = EvictionBatch::new(policy.order, now, policy.batch_size);
                batch.namespace = namespace.map(str::to_owned);
                batch.written_before = protect_before;
                match limit {
                    Limit::Bytes(_) => batch.max_bytes = excess,
                    Limit::Entries(_) => {
                        batch.max_entries = policy
                            .batch_size
                            .min(usize::try_from(excess).unwrap_or(usize::MAX));
                    }
                }
                let evicted = store.evict(&batch).await?;
                if evicted.entries.is_empty() {
                    // Only protected (recent or pinned) entries are left.
                    return store.usage(namespace).await;
                }
                usage.entries = usage.entries.saturating_sub(evicted.entries.len() as u64);
                usage.bytes = usage.bytes.saturating_sub(evicted.bytes_freed);
                self.evicted(evictor, reason, &evicted, report);
            }
            usage = store.usage(namespace).await?;
            if limit.used(&usage) <= target {
                return Ok(usage);
            }
        }
    }

    /// Tells the memory tier and the listener about one evicted batch.
    fn evicted(
        &self,
        evictor: &Evictor,
        reason: EvictionReason,
        batch: &EvictedBatch,
        report: &mut EvictionReport,
    ) {
        report.count(reason, batch);
        if let Some(tier) = &self.shared.memory {
            tier.forget(batch.entries.iter().map(|m| &m.key));
        }
        self.shared
            .observer
            .counters
            .evicted_bytes(batch.bytes_freed);
        for meta in &batch.entries {
            self.shared
                .observer
                .evicted(&meta.key, reason, meta.stored_size);
            tracing::debug!(key = %meta.key, reason = reason.as_str(), stored = meta.stored_size, "evicted");
            if let Some(listener) = &evictor.listener {
                listener(meta, reason);
            }
        }
    }
}

/// The limit an eviction step enforces.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Bytes(u64),
    Entries(u64),
}

impl Limit {
    fn max(self) -> u64 {
        match self {
            Limit::Bytes(max) | Limit::Entries(max) => max,
        }
    }

    fn used(self, usage: &IndexUsage) -> u64 {
        match self {
            Limit::Bytes(_) => usage.bytes,
            Limit::Entries(_) => usage.entries,
        }
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
