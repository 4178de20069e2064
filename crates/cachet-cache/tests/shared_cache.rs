//! Many processes, one cache: separate OS processes share a PostgreSQL index and S3 blobs.
//!
//! The workers are this test binary started again on the ignored test `shared_cache_worker`
//! (real processes with their own connection pools, in-process flights and access batches,
//! not threads). They put, get, overwrite, delete and garbage-collect overlapping keys at
//! the same time; every value they can read is checked against the values some writer wrote
//! for that key. Afterwards the parent checks the whole cache: no entry without its blob,
//! every entry reads back as a value written for its key, and identical content is one object.
//!
//! Needs `DATABASE_URL` and `S3_ENDPOINT` / `S3_BUCKET` (`cargo xtask services up`); under
//! `CI=true` a missing service fails the test instead of skipping it.
#![cfg(all(feature = "meta-postgres", feature = "blob-s3"))]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[path = "support/shared.rs"]
mod shared;
use shared::{fresh_cache_urls, noise};

use cachet_cache::Cache;
use cachet_core::{ListQuery, Location};
use cachet_storage::StoreConfig;
use futures_util::TryStreamExt;

/// Keys the workers fight over.
const KEYS: usize = 12;
/// Operations per workload worker.
const OPERATIONS: usize = 120;
/// Workload workers (OS processes).
const WORKERS: usize = 4;
/// Values a key can hold: small (inline), two blob sizes, and one content shared by every key.
const VARIANTS: u64 = 4;

/// Short blob leases, so that garbage collection really competes with puts during the test
/// (with the default lease a collector would leave every recent blob alone).
fn racy_store_config() -> StoreConfig {
    StoreConfig {
        blob_lease: Duration::from_millis(100),
        ..StoreConfig::default()
    }
}

async fn open(index: &str, blobs: &str) -> Cache {
    Cache::builder()
        .index(index)
        .blobs(blobs)
        .store_config(racy_store_config())
        .build()
        .await
        .unwrap_or_else(|e| panic!("open the shared cache ({index}, {blobs}): {e}"))
}

fn key_name(k: usize) -> String {
    format!("key-{k}")
}

/// The value `variant` of `key`: every writer writes exactly these, so a reader can tell a
/// written value from anything else.
fn value(key: &str, variant: u64) -> Vec<u8> {
    let seed = xxhash_rust::xxh3::xxh3_64(key.as_bytes()) ^ variant;
    match variant {
        0 => small_value(key).into_bytes(),
        1 | 2 => noise(value_len(key, variant), seed),
        // The same content under every key: stored as one object.
        _ => noise(value_len(key, variant), 0x5eed),
    }
}

fn small_value(key: &str) -> String {
    format!("{key}: small value, stored inline in the index")
}

/// The length of [`value`]`(key, variant)`, known without generating it.
fn value_len(key: &str, variant: u64) -> usize {
    match variant {
        0 => small_value(key).len(),
        1 => 40_000,
        2 => 600_000,
        _ => 150_000,
    }
}

/// Whether `got` is one of the values written for `key` (only a variant of the right length
/// is generated and compared).
fn is_written_value(key: &str, got: &[u8]) -> bool {
    (0..VARIANTS).any(|v| value_len(key, v) == got.len() && value(key, v) == got)
}

fn spawn_worker(mode: &str, id: usize, index: &str, blobs: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "shared_cache_worker",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CACHET_WORKER_MODE", mode)
        .env("CACHET_WORKER_ID", id.to_string())
        .env("CACHET_WORKER_INDEX", index)
        .env("CACHET_WORKER_BLOBS", blobs)
        .env("CACHET_WORKER_DIR", dir)
        .spawn()
        .expect("start a worker process")
}

fn wait_all(children: Vec<Child>, what: &str) {
    for (i, mut child) in children.into_iter().enumerate() {
        let status = child.wait().expect("wait for a worker");
        assert!(status.success(), "{what} worker {i} failed: {status}");
    }
}

/// Every entry of the cache, through paged listing.
async fn all_entries(cache: &Cache) -> Vec<cachet_core::EntryMeta> {
    let mut entries = Vec::new();
    let mut after = None;
    loop {
        let page = cache
            .store()
            .list(&ListQuery {
                after: after.clone(),
                limit: 500,
                ..ListQuery::default()
            })
            .await
            .expect("list the index");
        let Some(last) = page.last() else {
            return entries;
        };
        after = Some(last.key.clone());
        entries.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_share_one_postgres_and_s3_cache_without_losing_or_mixing_values() {
    let Some((index, blobs)) = fresh_cache_urls("many_writers") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&index, &blobs).await; // creates the schema before the workers race
    let started = Instant::now();
    let workers = (0..WORKERS)
        .map(|id| spawn_worker("workload", id, &index, &blobs, dir.path()))
        .collect();
    wait_all(workers, "workload");
    eprintln!(
        "{WORKERS} workers x {OPERATIONS} operations in {:.1?}",
        started.elapsed()
    );

    // The whole cache, afterwards.
    let entries = all_entries(&cache).await;
    let blob_store = cache.store().blob_backend().clone();
    let mut referenced: HashMap<cachet_core::BlobId, cachet_core::ContentDigest> = HashMap::new();
    for meta in &entries {
        let key = meta.key.id().to_owned();
        if let Location::Blob(id) = &meta.location {
            let head = blob_store.head(id).await.expect("head a blob");
            assert!(
                head.is_some(),
                "entry {key} references blob {id}, which is missing"
            );
            assert_eq!(
                head.and_then(|h| h.etag),
                meta.blob_etag,
                "entry {key} records the ETag of the object it references"
            );
            if let Some(digest) = referenced.insert(id.clone(), meta.digest) {
                assert_eq!(digest, meta.digest, "one blob id, one content");
            }
        }
        let bytes = cache
            .get_bytes(key.as_str())
            .await
            .expect("read an entry")
            .unwrap_or_else(|| panic!("entry {key} is listed but does not read"));
        assert!(
            is_written_value(&key, &bytes),
            "entry {key} holds {} bytes that no writer wrote for it",
            bytes.len()
        );
    }
    // Identical content is one object: one blob per distinct digest, and the store lists
    // each referenced object exactly once.
    let digests: HashSet<_> = referenced.values().collect();
    assert_eq!(digests.len(), referenced.len(), "each content has one blob");
    let listed: Vec<_> = blob_store
        .list()
        .await
        .expect("list blobs")
        .try_collect()
        .await
        .expect("list blobs");
    for id in referenced.keys() {
        let copies = listed.iter().filter(|info| &info.id == id).count();
        assert_eq!(copies, 1, "blob {id} is stored once, found {copies}");
    }
    eprintln!(
        "{} entries, {} referenced blobs, {} objects in the store",
        entries.len(),
        referenced.len(),
        listed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_computes_once_across_four_processes() {
    let Some((index, blobs)) = fresh_cache_urls("stampede") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&index, &blobs).await;
    let workers: Vec<Child> = (0..WORKERS)
        .map(|id| spawn_worker("stampede", id, &index, &blobs, dir.path()))
        .collect();
    // Release the workers together once they are all running.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(dir.path().join("go"), b"").unwrap();
    wait_all(workers, "stampede");
    let log = std::fs::read_to_string(dir.path().join("computations")).unwrap_or_default();
    assert_eq!(
        log.lines().count(),
        1,
        "the computation ran once across {WORKERS} processes; ran in: {log:?}"
    );
    let value: Option<String> = cache.get("report-2026").await.unwrap();
    assert_eq!(value.as_deref(), Some("expensive report"));
}

/// A worker process (started by the tests above; does nothing when run directly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process of the shared-cache tests, started by them"]
async fn shared_cache_worker() {
    let (Ok(mode), Ok(id), Ok(index), Ok(blobs), Ok(dir)) = (
        std::env::var("CACHET_WORKER_MODE"),
        std::env::var("CACHET_WORKER_ID"),
        std::env::var("CACHET_WORKER_INDEX"),
        std::env::var("CACHET_WORKER_BLOBS"),
        std::env::var("CACHET_WORKER_DIR"),
    ) else {
        return;
    };
    let id: u64 = id.parse().unwrap();
    let cache = open(&index, &blobs).await;
    match mode.as_str() {
        "workload" => workload(&cache, id).await,
        "stampede" => stampede(&cache, id, Path::new(&dir)).await,
        other => panic!("unknown worker mode {other}"),
    }
    cache.flush().await.unwrap();
}

async fn workload(cache: &Cache, id: u64) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ (id + 1).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let mut next = move || {
        state = xxhash_rust::xxh3::xxh3_64(&state.to_le_bytes());
        state
    };
    let (mut hits, mut misses, mut puts, mut deletes, mut collections) = (0, 0, 0, 0, 0);
    for _ in 0..OPERATIONS {
        let key = key_name(next() as usize % KEYS);
        match next() % 100 {
            0..40 => match cache.get_bytes(key.as_str()).await {
                Ok(Some(bytes)) => {
                    assert!(
                        is_written_value(&key, &bytes),
                        "worker {id}: get({key}) returned {} bytes no writer wrote for it",
                        bytes.len()
                    );
                    hits += 1;
                }
                Ok(None) => misses += 1,
                Err(e) => panic!("worker {id}: get({key}) failed: {e}"),
            },
            40..75 => {
                let variant = next() % VARIANTS;
                cache
                    .insert_bytes(key.as_str(), value(&key, variant))
                    .await
                    .unwrap_or_else(|e| panic!("worker {id}: put({key}) failed: {e}"));
                puts += 1;
            }
            75..92 => {
                cache
                    .invalidate(key.as_str())
                    .await
                    .unwrap_or_else(|e| panic!("worker {id}: delete({key}) failed: {e}"));
                deletes += 1;
            }
            _ => {
                cache
                    .gc()
                    .await
                    .unwrap_or_else(|e| panic!("worker {id}: gc failed: {e}"));
                collections += 1;
            }
        }
    }
    eprintln!(
        "worker {id}: {hits} hits, {misses} misses, {puts} puts, {deletes} deletes, \
         {collections} collections"
    );
}

async fn stampede(cache: &Cache, id: u64, dir: &Path) {
    let go = dir.join("go");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !go.exists() {
        assert!(Instant::now() < deadline, "worker {id}: never told to go");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let log = dir.join("computations");
    let value: String = cache
        .get_with("report-2026", || async move {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            writeln!(file, "worker {id}").unwrap();
            // Long enough that every other process asks while this one computes.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "expensive report".to_owned()
        })
        .await
        .unwrap_or_else(|e| panic!("worker {id}: get_with failed: {e}"));
    assert_eq!(value, "expensive report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_cache_migrates_into_the_shared_one() {
    let Some((index, blobs)) = fresh_cache_urls("migrate") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let local = Cache::open(dir.path()).await.unwrap();
    for k in 0..KEYS {
        let key = key_name(k);
        local
            .insert_bytes(key.as_str(), value(&key, k as u64 % VARIANTS))
            .await
            .unwrap();
    }
    local
        .insert(
            &cachet_core::params! { "model" => "xgb" },
            &vec![0.5f64; 10],
        )
        .with_tag("models")
        .await
        .unwrap();
    let shared = open(&index, &blobs).await;
    let options = cachet_storage::CopyOptions::default();
    let report = local
        .store()
        .copy_to(shared.store(), &options, |_| {})
        .await
        .unwrap();
    assert_eq!(report.copied, KEYS as u64 + 1);
    assert!(report.damaged.is_empty());
    for k in 0..KEYS {
        let key = key_name(k);
        let got = shared.get_bytes(key.as_str()).await.unwrap().unwrap();
        assert_eq!(&got[..], &value(&key, k as u64 % VARIANTS)[..], "{key}");
    }
    let model: Vec<f64> = shared
        .get(&cachet_core::params! { "model" => "xgb" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(model, vec![0.5f64; 10]);
    // Run again (as after an interruption): nothing is copied twice.
    let again = local
        .store()
        .copy_to(shared.store(), &options, |_| {})
        .await
        .unwrap();
    assert_eq!((again.copied, again.already_present), (0, KEYS as u64 + 1));
}

/// Counts the calls a cache makes to its index and blob store (each call to the PostgreSQL
/// index is one statement, each call to the S3 store one request, except streamed transfers).
#[derive(Default)]
struct CallCounts {
    index: std::sync::atomic::AtomicUsize,
    blobs: std::sync::atomic::AtomicUsize,
}

struct CountingIndex(
    std::sync::Arc<dyn cachet_core::MetadataBackend>,
    std::sync::Arc<CallCounts>,
);
struct CountingBlobs(
    std::sync::Arc<dyn cachet_core::BlobBackend>,
    std::sync::Arc<CallCounts>,
);

impl CountingIndex {
    fn count(&self) {
        self.1
            .index
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl CountingBlobs {
    fn count(&self) {
        self.1
            .blobs
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl cachet_core::MetadataBackend for CountingIndex {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn capabilities(&self) -> cachet_core::MetadataCapabilities {
        self.0.capabilities()
    }
    async fn get(
        &self,
        key: &cachet_core::CacheKey,
    ) -> cachet_core::Result<Option<cachet_core::EntryRecord>> {
        self.count();
        self.0.get(key).await
    }
    async fn get_meta(
        &self,
        key: &cachet_core::CacheKey,
    ) -> cachet_core::Result<Option<cachet_core::EntryMeta>> {
        self.count();
        self.0.get_meta(key).await
    }
    async fn put(
        &self,
        record: cachet_core::EntryRecord,
    ) -> cachet_core::Result<Option<cachet_core::EntryMeta>> {
        self.count();
        self.0.put(record).await
    }
    async fn delete(
        &self,
        key: &cachet_core::CacheKey,
    ) -> cachet_core::Result<Option<cachet_core::EntryMeta>> {
        self.count();
        self.0.delete(key).await
    }
    async fn delete_expired(
        &self,
        now: cachet_core::Timestamp,
        limit: usize,
    ) -> cachet_core::Result<Vec<cachet_core::EntryMeta>> {
        self.count();
        self.0.delete_expired(now, limit).await
    }
    async fn list(&self, query: &ListQuery) -> cachet_core::Result<Vec<cachet_core::EntryMeta>> {
        self.count();
        self.0.list(query).await
    }
    async fn record_access(
        &self,
        accesses: &[cachet_core::AccessRecord],
    ) -> cachet_core::Result<()> {
        self.count();
        self.0.record_access(accesses).await
    }
    async fn update_expiry(
        &self,
        key: &cachet_core::CacheKey,
        if_signature: Option<&str>,
        expires_at: Option<cachet_core::Timestamp>,
        updated_at: cachet_core::Timestamp,
        signature: Option<String>,
    ) -> cachet_core::Result<bool> {
        self.count();
        self.0
            .update_expiry(key, if_signature, expires_at, updated_at, signature)
            .await
    }
    async fn stats(&self) -> cachet_core::Result<cachet_core::IndexStats> {
        self.count();
        self.0.stats().await
    }
    async fn reserve_blob(
        &self,
        id: &cachet_core::BlobId,
        size: u64,
        lease_until: cachet_core::Timestamp,
        stale_claim_before: cachet_core::Timestamp,
    ) -> cachet_core::Result<()> {
        self.count();
        self.0
            .reserve_blob(id, size, lease_until, stale_claim_before)
            .await
    }
    async fn claim_unreferenced_blobs(
        &self,
        candidates: Option<&[cachet_core::BlobId]>,
        now: cachet_core::Timestamp,
        limit: usize,
    ) -> cachet_core::Result<Vec<cachet_core::BlobId>> {
        self.count();
        self.0
            .claim_unreferenced_blobs(candidates, now, limit)
            .await
    }
    async fn reclaim_abandoned_claims(
        &self,
        now: cachet_core::Timestamp,
        stale_before: cachet_core::Timestamp,
        limit: usize,
    ) -> cachet_core::Result<Vec<cachet_core::BlobId>> {
        self.count();
        self.0
            .reclaim_abandoned_claims(now, stale_before, limit)
            .await
    }
    async fn claim_unregistered_blob(
        &self,
        id: &cachet_core::BlobId,
        now: cachet_core::Timestamp,
    ) -> cachet_core::Result<bool> {
        self.count();
        self.0.claim_unregistered_blob(id, now).await
    }
    async fn release_claimed_blobs(&self, ids: &[cachet_core::BlobId]) -> cachet_core::Result<()> {
        self.count();
        self.0.release_claimed_blobs(ids).await
    }
    async fn try_lock_key(
        &self,
        key: &cachet_core::CacheKey,
    ) -> cachet_core::Result<Option<Box<dyn cachet_core::KeyLock>>> {
        self.count();
        self.0.try_lock_key(key).await
    }
    async fn flush(&self) -> cachet_core::Result<()> {
        self.0.flush().await
    }
    async fn get_many(
        &self,
        keys: &[cachet_core::CacheKey],
    ) -> cachet_core::Result<Vec<Option<cachet_core::EntryRecord>>> {
        self.count();
        self.0.get_many(keys).await
    }
    async fn get_meta_many(
        &self,
        keys: &[cachet_core::CacheKey],
    ) -> cachet_core::Result<Vec<Option<cachet_core::EntryMeta>>> {
        self.count();
        self.0.get_meta_many(keys).await
    }
    async fn put_many(
        &self,
        records: Vec<cachet_core::EntryRecord>,
        condition: cachet_core::WriteCondition,
    ) -> cachet_core::Result<Vec<cachet_core::PutOutcome>> {
        self.count();
        self.0.put_many(records, condition).await
    }
    async fn delete_many(
        &self,
        keys: &[cachet_core::CacheKey],
    ) -> cachet_core::Result<Vec<Option<cachet_core::EntryMeta>>> {
        self.count();
        self.0.delete_many(keys).await
    }
    async fn delete_matching(
        &self,
        filter: &cachet_core::EntryFilter,
        limit: usize,
    ) -> cachet_core::Result<Vec<cachet_core::EntryMeta>> {
        self.count();
        self.0.delete_matching(filter, limit).await
    }
    async fn update_expiry_many(
        &self,
        updates: &[cachet_core::ExpiryUpdate],
    ) -> cachet_core::Result<Vec<bool>> {
        self.count();
        self.0.update_expiry_many(updates).await
    }
    async fn move_entry(
        &self,
        from: &cachet_core::CacheKey,
        to: cachet_core::EntryMeta,
        overwrite: bool,
    ) -> cachet_core::Result<cachet_core::MoveOutcome> {
        self.count();
        self.0.move_entry(from, to, overwrite).await
    }
    async fn count_blob_references(
        &self,
        ids: &[cachet_core::BlobId],
    ) -> cachet_core::Result<Vec<u64>> {
        self.count();
        self.0.count_blob_references(ids).await
    }
    async fn usage(&self, namespace: Option<&str>) -> cachet_core::Result<cachet_core::IndexUsage> {
        self.count();
        self.0.usage(namespace).await
    }
    async fn evict(
        &self,
        batch: &cachet_core::EvictionBatch,
    ) -> cachet_core::Result<Vec<cachet_core::EntryMeta>> {
        self.count();
        self.0.evict(batch).await
    }
}

#[async_trait::async_trait]
impl cachet_core::BlobBackend for CountingBlobs {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn capabilities(&self) -> cachet_core::BlobCapabilities {
        self.0.capabilities()
    }
    async fn put(
        &self,
        id: &cachet_core::BlobId,
        data: bytes::Bytes,
    ) -> cachet_core::Result<cachet_core::BlobReceipt> {
        self.count();
        self.0.put(id, data).await
    }
    async fn writer(&self) -> cachet_core::Result<Box<dyn cachet_core::BlobWriter>> {
        self.count();
        self.0.writer().await
    }
    async fn get(&self, id: &cachet_core::BlobId) -> cachet_core::Result<bytes::Bytes> {
        self.count();
        self.0.get(id).await
    }
    async fn get_stream(
        &self,
        id: &cachet_core::BlobId,
    ) -> cachet_core::Result<cachet_core::ByteStream> {
        self.count();
        self.0.get_stream(id).await
    }
    async fn head(
        &self,
        id: &cachet_core::BlobId,
    ) -> cachet_core::Result<Option<cachet_core::BlobInfo>> {
        self.count();
        self.0.head(id).await
    }
    async fn delete(&self, id: &cachet_core::BlobId) -> cachet_core::Result<bool> {
        self.count();
        self.0.delete(id).await
    }
    async fn list(&self) -> cachet_core::Result<cachet_core::BlobInfoStream> {
        self.count();
        self.0.list().await
    }
    async fn cleanup_temporary(
        &self,
        older_than: cachet_core::Timestamp,
    ) -> cachet_core::Result<u64> {
        self.count();
        self.0.cleanup_temporary(older_than).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_costs_one_index_round_trip_plus_one_object_read_and_a_batch_one_in_all() {
    let Some((index_url, blobs_url)) = fresh_cache_urls("round_trips") else {
        return;
    };
    // The real backends, opened from their URLs, then wrapped to count calls.
    let opened = open(&index_url, &blobs_url).await;
    let index = opened.store().metadata_backend().clone();
    let blobs = opened.store().blob_backend().clone();
    let counts = std::sync::Arc::new(CallCounts::default());
    let cache = Cache::builder()
        .index_backend(std::sync::Arc::new(CountingIndex(index, counts.clone())))
        .blob_backend(std::sync::Arc::new(CountingBlobs(blobs, counts.clone())))
        .build()
        .await
        .unwrap();
    cache
        .insert_bytes("small", b"a small value".to_vec())
        .await
        .unwrap();
    cache
        .insert_bytes("large", noise(1 << 20, 7))
        .await
        .unwrap();
    let snapshot = || {
        (
            counts.index.load(std::sync::atomic::Ordering::SeqCst),
            counts.blobs.load(std::sync::atomic::Ordering::SeqCst),
        )
    };
    let before = snapshot();
    assert!(cache.get_bytes("small").await.unwrap().is_some());
    let after_small = snapshot();
    assert_eq!(
        (after_small.0 - before.0, after_small.1 - before.1),
        (1, 0),
        "an inline value: one index statement, no object request"
    );
    assert_eq!(
        cache.get_bytes("large").await.unwrap().unwrap().len(),
        1 << 20
    );
    let after_large = snapshot();
    assert_eq!(
        (after_large.0 - after_small.0, after_large.1 - after_small.1),
        (1, 1),
        "a blob value: one index statement and one object read"
    );
    assert_eq!(cache.get_bytes("missing").await.unwrap(), None);
    let after_miss = snapshot();
    assert_eq!(
        (after_miss.0 - after_large.0, after_miss.1 - after_large.1),
        (1, 0),
        "a miss: one index statement"
    );

    // Batches: one index call for the whole batch, whatever its size.
    let keys: Vec<String> = (0..500).map(|i| format!("batch-{i}")).collect();
    let items = keys.iter().map(|k| (k.as_str(), k.as_bytes().to_vec()));
    cache
        .insert_bytes_many(items, &Default::default())
        .await
        .unwrap();
    let after_put = snapshot();
    assert_eq!(
        (after_put.0 - after_miss.0, after_put.1 - after_miss.1),
        (1, 0),
        "500 small values: one index transaction, no object request"
    );
    let mut asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    asked.push("missing");
    let got = cache.get_bytes_many(asked).await.unwrap();
    assert!(got[..500].iter().all(Option::is_some) && got[500].is_none());
    let after_get = snapshot();
    assert_eq!(
        (after_get.0 - after_put.0, after_get.1 - after_put.1),
        (1, 0),
        "a batch get of 501 keys: one index statement"
    );
    let removed = cache.invalidate_many(&keys).await.unwrap();
    assert!(removed.iter().all(|r| *r));
    assert_eq!(
        snapshot().0 - after_get.0,
        1,
        "a batch delete: one index transaction"
    );
}

/// The blocking API over the shared backends (its own runtime drives sqlx and object_store).
#[test]
fn the_blocking_cache_works_on_postgres_and_s3() {
    let Some((index, blobs)) = fresh_cache_urls("blocking") else {
        return;
    };
    let cache = cachet_cache::blocking::Cache::builder()
        .index(index)
        .blobs(blobs)
        .build()
        .expect("open the shared cache from sync code");
    let big = noise(300_000, 3);
    cache.insert_bytes("big", big.clone()).unwrap();
    assert_eq!(cache.get_bytes("big").unwrap().unwrap(), big);
    let computed: Vec<u32> = cache.get_with("computed", || vec![1, 2, 3]).unwrap();
    let again: Vec<u32> = cache
        .get_with("computed", || -> Vec<u32> { unreachable!("cached") })
        .unwrap();
    assert_eq!((computed, again), (vec![1, 2, 3], vec![1, 2, 3]));
    assert!(cache.invalidate("big").unwrap());
    assert_eq!(cache.get_bytes("big").unwrap(), None);
}
