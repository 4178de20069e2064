//! `#[cachet::memoize]`: one test per promise of its docs, on real caches (in memory, and the
//! embedded SQLite + files cache in a temporary directory).
#![cfg(feature = "macros")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use cachet::cachet_core::{
    AccessRecord, EntryRecord, ExpiryUpdate, MoveOutcome, PutOutcome, WriteCondition,
};
use cachet::{
    BlobId, Cache, CacheKey, EntryFilter, EntryMeta, Error, IndexStats, ListQuery, ManualClock,
    MetadataBackend, MetadataCapabilities, Params, Timestamp, blocking, memo_key,
};

/// The key the macro uses for `function` (`module_path!()::name`) called with `args`.
fn key_of<A: serde::Serialize>(function: &str, args: &A) -> Params {
    memo_key(&format!("memoize::{function}"), args).unwrap()
}

async fn in_memory() -> Cache {
    Cache::builder().in_memory().build().await.unwrap()
}

// ------------------------------------------------------------------ async functions

#[tokio::test]
async fn computes_once_then_hits() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cachet::memoize(cache = CACHE.get().unwrap())]
    async fn square(x: u64) -> u64 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        x * x
    }
    CACHE.set(in_memory().await).unwrap();

    assert_eq!(square(12).await, 144);
    assert_eq!(square(12).await, 144);
    assert_eq!(square(12).await, 144);
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(CACHE.get().unwrap().stats().hits, 2);
}

#[tokio::test]
async fn different_arguments_are_different_entries() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cachet::memoize(cache = CACHE.get().unwrap())]
    async fn describe(name: &str, n: u32) -> String {
        CALLS.fetch_add(1, Ordering::SeqCst);
        format!("{name}:{n}")
    }
    CACHE.set(in_memory().await).unwrap();

    assert_eq!(describe("a", 1).await, "a:1");
    assert_eq!(describe("a", 2).await, "a:2");
    assert_eq!(describe("b", 1).await, "b:1");
    assert_eq!(describe("a", 1).await, "a:1");
    assert_eq!(CALLS.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_key_is_memo_key_of_the_path_qualified_name_and_the_arguments() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    #[cachet::memoize(cache = CACHE.get().unwrap())]
    async fn describe(name: &str, n: u32) -> String {
        format!("{name}:{n}")
    }
    let cache = CACHE.get_or_init(Cache::from_store_in_memory);
    describe("a", 1).await;

    let key = key_of("describe", &("a", 1));
    assert_eq!(
        cache.get::<String>(&key).await.unwrap().as_deref(),
        Some("a:1")
    );
    // So `Cache::memoize` with the same name and arguments shares the entry.
    let shared: String = cache
        .memoize("memoize::describe", &("a", 1), || async {
            unreachable!("cached")
        })
        .await
        .unwrap();
    assert_eq!(shared, "a:1");
}

/// `Cache::from_store_in_memory` for `OnceLock::get_or_init` (a synchronous constructor).
trait InMemory {
    fn from_store_in_memory() -> Cache;
}
impl InMemory for Cache {
    fn from_store_in_memory() -> Cache {
        let store = cachet::Store::new(
            Arc::new(cachet::backends::memory::MemoryMetadata::new()),
            Arc::new(cachet::backends::memory::MemoryBlobs::new()),
            cachet::StoreConfig::default(),
        )
        .unwrap();
        Cache::from_store(store)
    }
}

#[tokio::test]
async fn changing_the_version_invalidates() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    CACHE.set(in_memory().await).unwrap();

    // The same function (same module path and name), deployed three times.
    {
        #[cachet::memoize(cache = CACHE.get().unwrap(), version = "v1")]
        async fn price(item: u32) -> u32 {
            CALLS.fetch_add(1, Ordering::SeqCst);
            item * 10
        }
        assert_eq!(price(7).await, 70);
        assert_eq!(price(7).await, 70);
    }
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    {
        #[cachet::memoize(cache = CACHE.get().unwrap(), version = "v2")]
        async fn price(item: u32) -> u32 {
            CALLS.fetch_add(1, Ordering::SeqCst);
            item * 11
        }
        assert_eq!(price(7).await, 77, "v2 does not read v1's result");
        assert_eq!(price(7).await, 77);
    }
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    {
        #[cachet::memoize(cache = CACHE.get().unwrap(), version = "v1")]
        async fn price(item: u32) -> u32 {
            CALLS.fetch_add(1, Ordering::SeqCst);
            item * 10
        }
        assert_eq!(price(7).await, 70, "v1's entry is still there");
    }
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    let v1 = key_of("price", &(7,)).with("version", "v1");
    assert_eq!(
        CACHE.get().unwrap().get::<u32>(&v1).await.unwrap(),
        Some(70)
    );
}

#[tokio::test]
async fn the_ttl_expires_entries() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    static CLOCK: LazyLock<Arc<ManualClock>> =
        LazyLock::new(|| Arc::new(ManualClock::new(Timestamp(1_000_000))));
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cachet::memoize(cache = CACHE.get().unwrap(), ttl = "1.5h")]
    async fn load(day: u32) -> Vec<u32> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        vec![day; 3]
    }
    let clock: Arc<dyn cachet::Clock> = CLOCK.clone();
    let cache = Cache::builder().in_memory().clock(clock).build().await;
    CACHE.set(cache.unwrap()).unwrap();

    load(1).await;
    let meta = CACHE
        .get()
        .unwrap()
        .metadata(&key_of("load", &(1,)))
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        meta.expires_at,
        Some(meta.created_at.plus(cachet::parse_ttl("1.5h").unwrap()))
    );

    CLOCK.advance(Duration::from_secs(89 * 60));
    load(1).await;
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        1,
        "still live after 89 minutes"
    );
    CLOCK.advance(Duration::from_secs(60));
    load(1).await;
    assert_eq!(CALLS.load(Ordering::SeqCst), 2, "expired after 90 minutes");
}

#[tokio::test]
async fn the_namespace_holds_the_entries() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    #[cachet::memoize(cache = CACHE.get().unwrap(), namespace = "reports")]
    async fn report(year: u16) -> String {
        format!("report {year}")
    }
    let cache = CACHE.get_or_init(Cache::from_store_in_memory);
    report(2026).await;

    let key = key_of("report", &(2026,));
    let in_reports = cache.namespace("reports").get::<String>(&key).await;
    assert_eq!(in_reports.unwrap().as_deref(), Some("report 2026"));
    assert_eq!(cache.get::<String>(&key).await.unwrap(), None);
}

#[tokio::test]
async fn unit_and_none_results_are_cached() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    static UNIT_CALLS: AtomicUsize = AtomicUsize::new(0);
    static NONE_CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cachet::memoize(cache = CACHE.get().unwrap())]
    async fn warm_up(target: &str) {
        let _ = target;
        UNIT_CALLS.fetch_add(1, Ordering::SeqCst);
    }
    #[cachet::memoize(cache = CACHE.get().unwrap())]
    async fn find(id: u32) -> Option<String> {
        NONE_CALLS.fetch_add(1, Ordering::SeqCst);
        (id == 1).then(|| "one".to_owned())
    }
    CACHE.set(in_memory().await).unwrap();

    warm_up("x").await;
    warm_up("x").await;
    assert_eq!(UNIT_CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(find(2).await, None);
    assert_eq!(find(2).await, None);
    assert_eq!(NONE_CALLS.load(Ordering::SeqCst), 1);
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused: {}", self.0)
    }
}

#[tokio::test]
async fn errors_are_not_cached_by_default() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    // `Refused` is not even a std::error::Error: the function's error comes back as it was.
    #[cachet::memoize(cache = CACHE.get().unwrap())]
    async fn fetch(url: &str) -> Result<u32, Refused> {
        let call = CALLS.fetch_add(1, Ordering::SeqCst);
        if call < 2 {
            return Err(Refused(format!("{url} #{call}")));
        }
        Ok(200)
    }
    CACHE.set(in_memory().await).unwrap();

    assert_eq!(fetch("a").await, Err(Refused("a #0".into())));
    assert_eq!(fetch("a").await, Err(Refused("a #1".into())));
    assert_eq!(fetch("a").await, Ok(200));
    assert_eq!(fetch("a").await, Ok(200));
    assert_eq!(CALLS.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn errors_are_cached_with_cache_errors() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cachet::memoize(cache = CACHE.get().unwrap(), cache_errors = true)]
    async fn fetch(url: &str) -> Result<u32, Refused> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        Err(Refused(url.to_owned()))
    }
    CACHE.set(in_memory().await).unwrap();

    assert_eq!(fetch("a").await, Err(Refused("a".into())));
    assert_eq!(fetch("a").await, Err(Refused("a".into())));
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn question_mark_return_and_argument_patterns_work_in_the_body() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    #[cachet::memoize(cache = CACHE.get().unwrap())]
    async fn parse_sum(
        (a, b): (String, String),
        mut bonus: u32,
    ) -> Result<u32, std::num::ParseIntError> {
        if a.is_empty() {
            return Ok(0);
        }
        bonus += 1;
        Ok(a.parse::<u32>()? + b.parse::<u32>()? + bonus)
    }
    CACHE.set(in_memory().await).unwrap();

    assert_eq!(parse_sum(("1".into(), "2".into()), 0).await, Ok(4));
    assert_eq!(parse_sum((String::new(), "x".into()), 0).await, Ok(0));
    assert!(parse_sum(("1".into(), "x".into()), 0).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_compute_once() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cachet::memoize(cache = CACHE.get().unwrap())]
    async fn slow(x: u32) -> u32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        x + 1
    }
    CACHE.set(in_memory().await).unwrap();

    // tokio::spawn also checks that the memoized future is Send.
    let tasks: Vec<_> = (0..16).map(|_| tokio::spawn(slow(41))).collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 42);
    }
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
}

// ------------------------------------------------------------------ cache failures

/// An index that is down: every operation fails with `Error::Unavailable`.
#[derive(Debug)]
struct DownIndex;

fn down() -> Error {
    Error::Unavailable {
        backend: "down".into(),
        source: "the index is down (test)".into(),
    }
}

#[async_trait]
impl MetadataBackend for DownIndex {
    fn name(&self) -> &str {
        "down"
    }
    fn capabilities(&self) -> MetadataCapabilities {
        MetadataCapabilities::default()
    }
    async fn get(&self, _: &CacheKey) -> cachet::Result<Option<EntryRecord>> {
        Err(down())
    }
    async fn get_meta(&self, _: &CacheKey) -> cachet::Result<Option<EntryMeta>> {
        Err(down())
    }
    async fn put(&self, _: EntryRecord) -> cachet::Result<Option<EntryMeta>> {
        Err(down())
    }
    async fn delete(&self, _: &CacheKey) -> cachet::Result<Option<EntryMeta>> {
        Err(down())
    }
    async fn delete_expired(&self, _: Timestamp, _: usize) -> cachet::Result<Vec<EntryMeta>> {
        Err(down())
    }
    async fn list(&self, _: &ListQuery) -> cachet::Result<Vec<EntryMeta>> {
        Err(down())
    }
    async fn record_access(&self, _: &[AccessRecord]) -> cachet::Result<()> {
        Err(down())
    }
    async fn update_expiry(
        &self,
        _: &CacheKey,
        _: Option<&str>,
        _: Option<Timestamp>,
        _: Timestamp,
        _: Option<String>,
    ) -> cachet::Result<bool> {
        Err(down())
    }
    async fn stats(&self) -> cachet::Result<IndexStats> {
        Err(down())
    }
    async fn reserve_blob(
        &self,
        _: &BlobId,
        _: u64,
        _: Timestamp,
        _: Timestamp,
    ) -> cachet::Result<()> {
        Err(down())
    }
    async fn claim_unreferenced_blobs(
        &self,
        _: Option<&[BlobId]>,
        _: Timestamp,
        _: usize,
    ) -> cachet::Result<Vec<BlobId>> {
        Err(down())
    }
    async fn reclaim_abandoned_claims(
        &self,
        _: Timestamp,
        _: Timestamp,
        _: usize,
    ) -> cachet::Result<Vec<BlobId>> {
        Err(down())
    }
    async fn claim_unregistered_blob(&self, _: &BlobId, _: Timestamp) -> cachet::Result<bool> {
        Err(down())
    }
    async fn release_claimed_blobs(&self, _: &[BlobId]) -> cachet::Result<()> {
        Err(down())
    }
    async fn get_many(&self, _: &[CacheKey]) -> cachet::Result<Vec<Option<EntryRecord>>> {
        Err(down())
    }
    async fn get_meta_many(&self, _: &[CacheKey]) -> cachet::Result<Vec<Option<EntryMeta>>> {
        Err(down())
    }
    async fn put_many(
        &self,
        _: Vec<EntryRecord>,
        _: WriteCondition,
    ) -> cachet::Result<Vec<PutOutcome>> {
        Err(down())
    }
    async fn delete_many(&self, _: &[CacheKey]) -> cachet::Result<Vec<Option<EntryMeta>>> {
        Err(down())
    }
    async fn delete_matching(&self, _: &EntryFilter, _: usize) -> cachet::Result<Vec<EntryMeta>> {
        Err(down())
    }
    async fn update_expiry_many(&self, _: &[ExpiryUpdate]) -> cachet::Result<Vec<bool>> {
        Err(down())
    }
    async fn move_entry(&self, _: &CacheKey, _: EntryMeta, _: bool) -> cachet::Result<MoveOutcome> {
        Err(down())
    }
    async fn count_blob_references(&self, _: &[BlobId]) -> cachet::Result<Vec<u64>> {
        Err(down())
    }
    async fn usage(&self, _: Option<&str>) -> cachet::Result<cachet::IndexUsage> {
        Err(down())
    }
    async fn evict(
        &self,
        _: &cachet::cachet_core::EvictionBatch,
    ) -> cachet::Result<Vec<EntryMeta>> {
        Err(down())
    }
}

fn down_store() -> cachet::Store {
    cachet::Store::new(
        Arc::new(DownIndex),
        Arc::new(cachet::backends::memory::MemoryBlobs::new()),
        cachet::StoreConfig::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_cache_failure_still_returns_the_computed_value() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cachet::memoize(cache = CACHE.get().unwrap())]
    async fn square(x: u64) -> u64 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        x * x
    }
    #[cachet::memoize(cache = CACHE.get().unwrap())]
    async fn checked(x: u64) -> Result<u64, String> {
        if x == 0 { Err("zero".into()) } else { Ok(x) }
    }
    let cache = CACHE.get_or_init(|| Cache::from_store(down_store()));
    assert!(
        cache.get::<u64>("anything").await.is_err(),
        "the cache is down"
    );

    assert_eq!(square(3).await, 9);
    assert_eq!(square(3).await, 9);
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        2,
        "computed each time, uncached"
    );
    assert_eq!(checked(5).await, Ok(5));
    assert_eq!(checked(0).await, Err("zero".to_owned()));
}

#[tokio::test]
async fn arguments_that_cannot_be_keys_are_computed_uncached() {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    // A map with non-string keys has no JSON form, so no key parameter.
    #[cachet::memoize(cache = CACHE.get().unwrap())]
    async fn total(weights: HashMap<Vec<u8>, u32>) -> u32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        weights.values().sum()
    }
    CACHE.set(in_memory().await).unwrap();

    let weights = HashMap::from([(vec![1], 2), (vec![2], 3)]);
    assert_eq!(total(weights.clone()).await, 5);
    assert_eq!(total(weights).await, 5);
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
}

// ------------------------------------------------------------------ sync functions

#[test]
fn sync_functions_use_the_blocking_cache() {
    static CACHE: LazyLock<blocking::Cache> =
        LazyLock::new(|| blocking::Cache::builder().in_memory().build().unwrap());
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cachet::memoize(cache = CACHE, ttl = "1h", namespace = "sync", version = "3")]
    fn rows(day: u32) -> Vec<u32> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        vec![day, day + 1]
    }

    assert_eq!(rows(7), [7, 8]);
    assert_eq!(rows(7), [7, 8]);
    assert_eq!(rows(8), [8, 9]);
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    let key = key_of("rows", &(7,)).with("version", "3");
    assert!(CACHE.namespace("sync").contains_key(&key).unwrap());
}

#[test]
fn sync_errors_are_not_cached_by_default_and_are_with_cache_errors() {
    static CACHE: LazyLock<blocking::Cache> =
        LazyLock::new(|| blocking::Cache::builder().in_memory().build().unwrap());
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    static CACHED_CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cachet::memoize(cache = CACHE, ttl = "10m")]
    fn parse(text: &str) -> Result<u32, Refused> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        text.parse().map_err(|_| Refused(text.to_owned()))
    }
    #[cachet::memoize(cache = CACHE, cache_errors = true)]
    fn parse_cached(text: &str) -> Result<u32, Refused> {
        CACHED_CALLS.fetch_add(1, Ordering::SeqCst);
        text.parse().map_err(|_| Refused(text.to_owned()))
    }

    assert_eq!(parse("x"), Err(Refused("x".into())));
    assert_eq!(parse("x"), Err(Refused("x".into())));
    assert_eq!(CALLS.load(Ordering::SeqCst), 2, "errors are computed again");
    assert_eq!(parse("5"), Ok(5));
    assert_eq!(parse("5"), Ok(5));
    assert_eq!(CALLS.load(Ordering::SeqCst), 3, "Ok values are cached");
    // Stored as the plain `u32`: readable as such.
    assert_eq!(
        CACHE.get::<u32>(&key_of("parse", &("5",))).unwrap(),
        Some(5)
    );

    assert_eq!(parse_cached("x"), Err(Refused("x".into())));
    assert_eq!(parse_cached("x"), Err(Refused("x".into())));
    assert_eq!(CACHED_CALLS.load(Ordering::SeqCst), 1);
}

#[test]
fn sync_unit_and_none_results_are_cached() {
    static CACHE: LazyLock<blocking::Cache> =
        LazyLock::new(|| blocking::Cache::builder().in_memory().build().unwrap());
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cachet::memoize(cache = CACHE)]
    fn touch_file() {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }
    #[cachet::memoize(cache = CACHE)]
    fn lookup(id: u8) -> Option<u8> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        id.checked_sub(200)
    }

    touch_file();
    touch_file();
    assert_eq!(lookup(1), None);
    assert_eq!(lookup(1), None);
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
}

#[test]
fn sync_cache_failure_still_returns_the_computed_value() {
    static CACHE: LazyLock<blocking::Cache> =
        LazyLock::new(|| blocking::Cache::from_store(down_store()).unwrap());
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cachet::memoize(cache = CACHE)]
    fn double(x: u32) -> u32 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        x * 2
    }
    #[cachet::memoize(cache = CACHE)]
    fn checked(x: u32) -> Result<u32, String> {
        if x == 0 { Err("zero".into()) } else { Ok(x) }
    }

    assert_eq!(double(4), 8);
    assert_eq!(double(4), 8);
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    assert_eq!(checked(3), Ok(3));
    assert_eq!(checked(0), Err("zero".to_owned()));
}

/// The embedded cache in a directory: results outlive the process's cache handle.
static EMBEDDED: Mutex<Option<blocking::Cache>> = Mutex::new(None);

fn embedded() -> blocking::Cache {
    EMBEDDED.lock().unwrap().clone().expect("opened")
}

#[test]
fn results_persist_in_the_embedded_cache() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cachet::memoize(cache = embedded(), ttl = "7d")]
    fn fit(dataset: &str, window: u32) -> Vec<f64> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        vec![dataset.len() as f64; window as usize]
    }
    let dir = tempfile::tempdir().unwrap();

    *EMBEDDED.lock().unwrap() = Some(blocking::Cache::open(dir.path()).unwrap());
    assert_eq!(fit("sales", 2), [5.0, 5.0]);
    *EMBEDDED.lock().unwrap() = None; // closed

    *EMBEDDED.lock().unwrap() = Some(blocking::Cache::open(dir.path()).unwrap());
    assert_eq!(fit("sales", 2), [5.0, 5.0]);
    assert_eq!(CALLS.load(Ordering::SeqCst), 1, "read back after reopening");
    *EMBEDDED.lock().unwrap() = None;
}
