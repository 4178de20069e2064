//! The engine's fault promises on the embedded backends: a real SQLite file and a real blob
//! directory, damaged the way disks, crashes and attackers damage them.
//!
//! Multi-process tests re-run this test binary as worker processes: the worker entry point is
//! the ignored test `worker_process`, started with `--ignored --exact worker_process`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cachet_blob_fs::{FsBlobs, FsConfig};
use cachet_core::{
    AccessRecord, BlobId, CacheKey, EntryMeta, EntryRecord, Error, IndexStats, ListQuery, Location,
    ManualClock, MetadataBackend, MetadataCapabilities, Result, Timestamp, params,
};
use cachet_meta_sqlite::{SqliteConfig, SqliteMetadata};
use cachet_storage::{PutOptions, SigningKey, Store, StoreConfig};

fn open(dir: &Path, config: StoreConfig) -> (Store, FsBlobs) {
    let meta =
        SqliteMetadata::open(SqliteConfig::new(dir.join("index.sqlite"))).expect("open index");
    let blobs = FsBlobs::open(FsConfig::new(dir.join("blobs"))).expect("open blobs");
    let store = Store::new(Arc::new(meta), Arc::new(blobs.clone()), config).expect("store");
    (store, blobs)
}

fn key(name: &str) -> CacheKey {
    CacheKey::derive("", &params! { "name" => name })
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    (0..len.div_ceil(8) as u64)
        .flat_map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed).to_le_bytes())
        .take(len)
        .collect()
}

async fn blob_path(store: &Store, blobs: &FsBlobs, k: &CacheKey) -> PathBuf {
    match store.metadata(k).await.unwrap().unwrap().location {
        Location::Blob(id) => blobs.blob_path(&id),
        Location::Inline => panic!("expected a blob entry"),
    }
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32]).unwrap()
}

#[tokio::test]
async fn values_survive_reopening_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3 << 20, 1);
    {
        let (store, _) = open(dir.path(), StoreConfig::default());
        store
            .put_bytes(&key("big"), &data, PutOptions::default())
            .await
            .unwrap();
        store
            .put_value(&key("small"), &("tuple", 7u8), PutOptions::default())
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    let (store, _) = open(dir.path(), StoreConfig::default());
    assert_eq!(
        store.get_bytes(&key("big")).await.unwrap().as_deref(),
        Some(&data[..])
    );
    let small: (String, u8) = store.get_value(&key("small")).await.unwrap().unwrap();
    assert_eq!(small, ("tuple".to_owned(), 7));
}

#[tokio::test]
async fn truncated_blob_file_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (store, blobs) = open(dir.path(), StoreConfig::default());
    store
        .put_bytes(&key("t"), &random_bytes(2 << 20, 2), PutOptions::default())
        .await
        .unwrap();
    let path = blob_path(&store, &blobs, &key("t")).await;
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = store.get_bytes(&key("t")).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn flipped_bit_in_a_blob_file_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (store, blobs) = open(dir.path(), StoreConfig::default());
    store
        .put_bytes(&key("f"), &random_bytes(2 << 20, 3), PutOptions::default())
        .await
        .unwrap();
    let path = blob_path(&store, &blobs, &key("f")).await;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1_500_000] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let err = store.get_bytes(&key("f")).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    // Streaming reads report it too, before signalling the end.
    let mut reader = store.reader(&key("f")).await.unwrap().unwrap();
    let outcome = loop {
        match reader.next_chunk().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(matches!(outcome, Err(Error::Corrupt { .. })), "{outcome:?}");
}

#[tokio::test]
async fn row_pointing_at_a_deleted_blob_file_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (store, blobs) = open(dir.path(), StoreConfig::default());
    store
        .put_bytes(&key("m"), &random_bytes(100_000, 4), PutOptions::default())
        .await
        .unwrap();
    std::fs::remove_file(blob_path(&store, &blobs, &key("m")).await).unwrap();
    let err = store.get_bytes(&key("m")).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

fn sql(dir: &Path, statement: &str) {
    let conn = rusqlite::Connection::open(dir.join("index.sqlite")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let changed = conn.execute(statement, []).unwrap();
    assert!(
        changed > 0,
        "the tampering statement changed nothing: {statement}"
    );
}

#[tokio::test]
async fn row_tampered_in_the_sqlite_file_is_refused_with_signing_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(
        dir.path(),
        StoreConfig::default().with_signing_key(signing_key()),
    );
    store
        .put_value(&key("s"), &"genuine", PutOptions::default())
        .await
        .unwrap();
    sql(dir.path(), "UPDATE entries SET expires_at = 9999999999999");
    let err = store.get_value::<String>(&key("s")).await.unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
}

#[tokio::test]
async fn signature_removed_in_the_sqlite_file_is_refused_with_signing_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(
        dir.path(),
        StoreConfig::default().with_signing_key(signing_key()),
    );
    store
        .put_value(&key("s"), &"genuine", PutOptions::default())
        .await
        .unwrap();
    // The predecessor accepted any tampering once the signature column was set to NULL.
    sql(
        dir.path(),
        "UPDATE entries SET signature = NULL, data_type = 'json'",
    );
    let err = store.get_value::<String>(&key("s")).await.unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
}

#[tokio::test]
async fn unsigned_entries_are_refused_once_signing_is_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path(), StoreConfig::default());
        store
            .put_value(&key("u"), &1u32, PutOptions::default())
            .await
            .unwrap();
    }
    let (store, _) = open(
        dir.path(),
        StoreConfig::default().with_signing_key(signing_key()),
    );
    let err = store.get_value::<u32>(&key("u")).await.unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
}

// ------------------------------------------------------------------ worker processes

/// An index that kills its process instead of committing an entry: the crash window between
/// "blob published" and "row committed".
struct DiesBeforeCommit(SqliteMetadata);

#[async_trait]
impl MetadataBackend for DiesBeforeCommit {
    fn name(&self) -> &str {
        "dies-before-commit"
    }
    fn capabilities(&self) -> MetadataCapabilities {
        self.0.capabilities()
    }
    async fn get(&self, key: &CacheKey) -> Result<Option<EntryRecord>> {
        self.0.get(key).await
    }
    async fn get_meta(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        self.0.get_meta(key).await
    }
    async fn put(&self, _record: EntryRecord) -> Result<Option<EntryMeta>> {
        std::process::abort()
    }
    async fn delete(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        self.0.delete(key).await
    }
    async fn delete_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<EntryMeta>> {
        self.0.delete_expired(now, limit).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Vec<EntryMeta>> {
        self.0.list(query).await
    }
    async fn record_access(&self, accesses: &[AccessRecord]) -> Result<()> {
        self.0.record_access(accesses).await
    }
    async fn update_expiry(
        &self,
        key: &CacheKey,
        if_signature: Option<&str>,
        expires_at: Option<Timestamp>,
        updated_at: Timestamp,
        signature: Option<String>,
    ) -> Result<bool> {
        self.0
            .update_expiry(key, if_signature, expires_at, updated_at, signature)
            .await
    }
    async fn stats(&self) -> Result<IndexStats> {
        self.0.stats().await
    }
    async fn reserve_blob(
        &self,
        id: &BlobId,
        size: u64,
        lease: Timestamp,
        stale: Timestamp,
    ) -> Result<()> {
        self.0.reserve_blob(id, size, lease, stale).await
    }
    async fn claim_unreferenced_blobs(
        &self,
        candidates: Option<&[BlobId]>,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        self.0
            .claim_unreferenced_blobs(candidates, now, limit)
            .await
    }
    async fn reclaim_abandoned_claims(
        &self,
        now: Timestamp,
        stale: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        self.0.reclaim_abandoned_claims(now, stale, limit).await
    }
    async fn claim_unregistered_blob(&self, id: &BlobId, now: Timestamp) -> Result<bool> {
        self.0.claim_unregistered_blob(id, now).await
    }
    async fn release_claimed_blobs(&self, ids: &[BlobId]) -> Result<()> {
        self.0.release_claimed_blobs(ids).await
    }
    async fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryRecord>>> {
        self.0.get_many(keys).await
    }
    async fn get_meta_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        self.0.get_meta_many(keys).await
    }
    async fn put_many(
        &self,
        _records: Vec<EntryRecord>,
        _condition: cachet_core::WriteCondition,
    ) -> Result<Vec<cachet_core::PutOutcome>> {
        std::process::abort()
    }
    async fn delete_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        self.0.delete_many(keys).await
    }
    async fn delete_matching(
        &self,
        filter: &cachet_core::EntryFilter,
        limit: usize,
    ) -> Result<Vec<EntryMeta>> {
        self.0.delete_matching(filter, limit).await
    }
    async fn update_expiry_many(&self, updates: &[cachet_core::ExpiryUpdate]) -> Result<Vec<bool>> {
        self.0.update_expiry_many(updates).await
    }
    async fn move_entry(
        &self,
        _from: &CacheKey,
        _to: EntryMeta,
        _overwrite: bool,
    ) -> Result<cachet_core::MoveOutcome> {
        std::process::abort()
    }
    async fn count_blob_references(&self, ids: &[BlobId]) -> Result<Vec<u64>> {
        self.0.count_blob_references(ids).await
    }
    async fn usage(&self, namespace: Option<&str>) -> Result<cachet_core::IndexUsage> {
        self.0.usage(namespace).await
    }
    async fn evict(&self, batch: &cachet_core::EvictionBatch) -> Result<Vec<EntryMeta>> {
        self.0.evict(batch).await
    }
}

fn spawn_worker(role: &str, dir: &Path, extra: &[(&str, String)]) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        "worker_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("CACHET_WORKER_ROLE", role)
    .env("CACHET_WORKER_DIR", dir);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn worker")
}

/// Entry point of the worker processes that the multi-process tests start.
#[test]
#[ignore = "entry point for worker processes spawned by other tests in this file"]
fn worker_process() {
    let role = std::env::var("CACHET_WORKER_ROLE").expect("started by a parent test");
    let dir = PathBuf::from(std::env::var("CACHET_WORKER_DIR").unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match role.as_str() {
            "die-before-commit" => {
                let meta =
                    SqliteMetadata::open(SqliteConfig::new(dir.join("index.sqlite"))).unwrap();
                let blobs = FsBlobs::open(FsConfig::new(dir.join("blobs"))).unwrap();
                let store = Store::new(
                    Arc::new(DiesBeforeCommit(meta)),
                    Arc::new(blobs),
                    StoreConfig::default(),
                )
                .unwrap();
                store
                    .put_bytes(
                        &key("half"),
                        &random_bytes(1 << 20, 77),
                        PutOptions::default(),
                    )
                    .await
                    .unwrap();
                unreachable!("the index aborts the process before committing");
            }
            "writer" => {
                let seed: u64 = std::env::var("CACHET_WORKER_SEED")
                    .unwrap()
                    .parse()
                    .unwrap();
                let (store, _) = open(&dir, StoreConfig::default());
                for round in 0..60u64 {
                    // Alternate inline and blob values; every value names its writer and round.
                    let len = if round % 2 == 0 { 64 } else { 40_000 };
                    let mut value = random_bytes(len, seed * 1000 + round);
                    value[..16].copy_from_slice(
                        &[&seed.to_le_bytes()[..], &round.to_le_bytes()[..]].concat(),
                    );
                    store
                        .put_bytes(&key("contended"), &value, PutOptions::default())
                        .await
                        .unwrap();
                    if let Some(read) = store.get_bytes(&key("contended")).await.unwrap() {
                        let writer = u64::from_le_bytes(read[..8].try_into().unwrap());
                        let r = u64::from_le_bytes(read[8..16].try_into().unwrap());
                        let expected_len = if r % 2 == 0 { 64 } else { 40_000 };
                        let mut expected = random_bytes(expected_len, writer * 1000 + r);
                        expected[..16].copy_from_slice(&read[..16]);
                        assert_eq!(
                            &read[..],
                            &expected[..],
                            "a read returned bytes no writer wrote"
                        );
                    }
                }
                store.flush().await.unwrap();
            }
            other => panic!("unknown worker role {other}"),
        }
    });
}

#[tokio::test]
async fn process_killed_between_blob_write_and_index_commit_leaves_no_visible_entry() {
    let dir = tempfile::tempdir().unwrap();
    let status = spawn_worker("die-before-commit", dir.path(), &[])
        .wait()
        .unwrap();
    assert!(!status.success(), "the worker must have died");
    let clock = ManualClock::new(Timestamp::now());
    let (store, blobs) = open(
        dir.path(),
        StoreConfig::default().with_clock(Arc::new(clock.clone())),
    );
    assert!(
        store.get_bytes(&key("half")).await.unwrap().is_none(),
        "no half-written entry is visible"
    );
    assert_eq!(
        store.stats().await.unwrap().blobs,
        1,
        "the dead writer's blob is registered"
    );
    let report = store.gc().await.unwrap();
    assert_eq!(
        report.blobs_deleted, 0,
        "still under the dead writer's lease"
    );
    clock.advance(Duration::from_secs(120));
    let report = store.gc().await.unwrap();
    assert_eq!(
        report.blobs_deleted, 1,
        "the orphan is reclaimed once the lease expires"
    );
    assert_eq!(store.stats().await.unwrap().blobs, 0);
    let mut left = 0;
    for entry in walk(blobs.root()) {
        if !entry.starts_with(blobs.tmp_dir()) {
            left += 1;
        }
    }
    assert_eq!(left, 0, "no blob file is left behind");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path)
            } else {
                files.push(path)
            }
        }
    }
    files
}

#[tokio::test]
async fn two_processes_writing_the_same_key_leave_one_writers_value() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Create the index once so that both workers open an initialised file.
        open(dir.path(), StoreConfig::default());
    }
    let workers: Vec<_> = [1u64, 2]
        .iter()
        .map(|seed| {
            spawn_worker(
                "writer",
                dir.path(),
                &[("CACHET_WORKER_SEED", seed.to_string())],
            )
        })
        .collect();
    for mut w in workers {
        assert!(
            w.wait().unwrap().success(),
            "a writer failed (see its output above)"
        );
    }
    let clock = ManualClock::new(Timestamp::now());
    let (store, _) = open(
        dir.path(),
        StoreConfig::default().with_clock(Arc::new(clock.clone())),
    );
    let value = store
        .get_bytes(&key("contended"))
        .await
        .unwrap()
        .expect("the key holds a value");
    let writer = u64::from_le_bytes(value[..8].try_into().unwrap());
    assert!(
        writer == 1 || writer == 2,
        "the value was written by one of the writers"
    );
    clock.advance(Duration::from_secs(120));
    store.gc().await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.entries, 1);
    assert!(
        stats.blobs <= 1,
        "every superseded blob was reclaimed, {} left",
        stats.blobs
    );
}
