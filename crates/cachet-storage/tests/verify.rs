//! `Store::verify` and `Store::repair` on the embedded backends: a real SQLite index and a real
//! blob directory, damaged the way disks, crashes and attackers damage them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use cachet_blob_fs::{FsBlobs, FsConfig};
use cachet_core::{
    AccessRecord, BlobBackend, BlobCapabilities, BlobId, BlobInfoStream, BlobReceipt, BlobWriter,
    ByteStream, CacheKey, Compression, EntryFilter, EntryMeta, EntryRecord, Error, ExpiryUpdate,
    FieldCondition, IndexStats, KeyLock, ListQuery, Location, ManualClock, MetadataBackend,
    MetadataCapabilities, MoveOutcome, PutOutcome, Result, Timestamp, WriteCondition,
};
use cachet_meta_sqlite::{SqliteConfig, SqliteMetadata};
use cachet_storage::{
    BatchItem, Problem, ProblemKind, PutOptions, RepairOptions, SigningKey, Store, StoreConfig,
    VerifyOptions, VerifyPhase, VerifyProgress,
};

/// Past the default blob lease (60 s): what a writer reserved is no longer protected.
const PAST_LEASE: Duration = Duration::from_secs(61);

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    blobs: FsBlobs,
    clock: ManualClock,
}

fn fixture_with(config: StoreConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let meta = SqliteMetadata::open(SqliteConfig::new(dir.path().join("index.sqlite"))).unwrap();
    let blobs = FsBlobs::open(FsConfig::new(dir.path().join("blobs"))).unwrap();
    let store = Store::new(
        Arc::new(meta),
        Arc::new(blobs.clone()),
        config.with_clock(Arc::new(clock.clone())),
    )
    .unwrap();
    Fixture {
        dir,
        store,
        blobs,
        clock,
    }
}

fn fixture() -> Fixture {
    fixture_with(StoreConfig::default())
}

fn signed_fixture() -> Fixture {
    fixture_with(StoreConfig::default().with_signing_key(SigningKey::from_bytes(&[9; 32]).unwrap()))
}

fn key(name: &str) -> CacheKey {
    CacheKey::explicit("", name).unwrap()
}

/// Pseudo-random, incompressible bytes.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    (0..len.div_ceil(8) as u64)
        .flat_map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed).to_le_bytes())
        .take(len)
        .collect()
}

impl Fixture {
    /// A value stored in a blob (200 KB, incompressible).
    async fn put_blob(&self, name: &str, seed: u64) -> EntryMeta {
        self.put_with(name, &random_bytes(200_000, seed), PutOptions::default())
            .await
    }

    async fn put_with(&self, name: &str, data: &[u8], opts: PutOptions) -> EntryMeta {
        self.store.put_bytes(&key(name), data, opts).await.unwrap()
    }

    /// A small value stored inline in the index row.
    async fn put_inline(&self, name: &str) -> EntryMeta {
        let meta = self
            .store
            .put_value(
                &key(name),
                &format!("value of {name}"),
                PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(meta.location, Location::Inline);
        meta
    }

    fn path_of(&self, meta: &EntryMeta) -> PathBuf {
        self.blobs
            .blob_path(meta.location.blob_id().expect("a blob entry"))
    }

    fn sql(&self, statement: &str) {
        let conn = rusqlite::Connection::open(self.dir.path().join("index.sqlite")).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let changed = conn.execute(statement, []).unwrap();
        assert!(changed > 0, "the statement changed nothing: {statement}");
    }

    /// Writes a blob file no entry references, directly into the blob directory.
    fn plant_orphan(&self, data: &[u8]) -> BlobId {
        let id = BlobId::parse(&format!(
            "xxh3-128-{:032x}",
            xxhash_rust::xxh3::xxh3_128(data)
        ))
        .unwrap();
        let path = self.blobs.blob_path(&id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        id
    }

    /// Every published blob file with its content.
    fn blob_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path == skip {
                    continue;
                }
                if path.is_dir() {
                    walk(&path, skip, out);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.blobs.root(), &self.blobs.tmp_dir(), &mut out);
        out
    }

    /// The whole index (entries with their inline data, and the blob registry) as rows.
    fn index_rows(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.dir.path().join("index.sqlite")).unwrap();
        let mut rows = Vec::new();
        for table in ["entries", "blobs"] {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
                .unwrap();
            let columns = stmt.column_count();
            let mut query = stmt.query([]).unwrap();
            while let Some(row) = query.next().unwrap() {
                let values: Vec<String> = (0..columns)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect();
                rows.push(format!("{table}: {}", values.join(" | ")));
            }
        }
        rows
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

async fn verify(store: &Store, options: &VerifyOptions) -> cachet_storage::VerifyReport {
    store.verify(options, |_| {}).await.unwrap()
}

fn keys_of(report: &cachet_storage::VerifyReport, kind: ProblemKind) -> Vec<CacheKey> {
    report
        .of_kind(kind)
        .filter_map(|p| p.key().cloned())
        .collect()
}

// ------------------------------------------------------------------ verify: what it finds

#[tokio::test]
async fn a_clean_store_verifies_clean() {
    let fx = fixture();
    fx.put_blob("a", 1).await;
    fx.put_blob("b", 2).await;
    fx.put_blob("shares-a", 1).await;
    fx.put_inline("small").await;
    // Several frames, streamed.
    let big = random_bytes(3 << 20, 3);
    fx.put_with("big", &big, PutOptions::default()).await;

    let report = verify(&fx.store, &VerifyOptions::default()).await;
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.entries_checked, 5);
    assert_eq!(report.values_read, 5);
    assert!(report.bytes_checked > 3 << 20, "{}", report.bytes_checked);
    assert_eq!(report.blobs_listed, 3, "a, b (shared) and big");
}

#[tokio::test]
async fn a_missing_blob_file_is_reported_with_its_key_and_blob() {
    let fx = fixture();
    fx.put_blob("healthy", 1).await;
    let lost = fx.put_blob("lost", 2).await;
    std::fs::remove_file(fx.path_of(&lost)).unwrap();

    let report = verify(&fx.store, &VerifyOptions::default()).await;
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    match &report.problems[0] {
        Problem::MissingBlob { entry, blob } => {
            assert_eq!(entry.key, key("lost"));
            assert_eq!(Some(blob), lost.location.blob_id());
        }
        other => panic!("expected a missing blob, got {other:?}"),
    }
    assert!(report.problems[0].to_string().contains("missing"));
}

#[tokio::test]
async fn a_flipped_byte_in_a_blob_is_reported_corrupt() {
    let fx = fixture();
    fx.put_blob("healthy", 1).await;
    let hit = fx.put_blob("hit", 2).await;
    flip_byte(&fx.path_of(&hit), 100_000);

    let report = verify(&fx.store, &VerifyOptions::default()).await;
    assert_eq!(keys_of(&report, ProblemKind::Corrupt), vec![key("hit")]);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let Problem::Corrupt { error, .. } = &report.problems[0] else {
        unreachable!()
    };
    assert!(error.is_integrity_failure(), "{error}");
}

#[tokio::test]
async fn a_truncated_blob_is_reported_corrupt() {
    let fx = fixture();
    fx.put_blob("healthy", 1).await;
    let cut = fx.put_blob("cut", 2).await;
    truncate(&fx.path_of(&cut));

    let report = verify(&fx.store, &VerifyOptions::default()).await;
    assert_eq!(keys_of(&report, ProblemKind::Corrupt), vec![key("cut")]);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
}

#[tokio::test]
async fn damaged_inline_data_is_reported_corrupt() {
    let fx = fixture();
    fx.put_inline("healthy").await;
    fx.put_inline("hit").await;
    fx.sql("UPDATE entries SET inline_data = X'00112233' WHERE id = 'hit'");

    let report = verify(&fx.store, &VerifyOptions::default()).await;
    assert_eq!(keys_of(&report, ProblemKind::Corrupt), vec![key("hit")]);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
}

#[tokio::test]
async fn a_row_rewritten_in_the_sqlite_file_is_reported_tampered_on_a_signed_store() {
    let fx = signed_fixture();
    fx.put_blob("healthy", 1).await;
    fx.put_inline("forged").await;
    fx.sql(r#"UPDATE entries SET user_metadata = '{"owner":"mallory"}' WHERE id = 'forged'"#);

    let report = verify(&fx.store, &VerifyOptions::default()).await;
    assert_eq!(keys_of(&report, ProblemKind::Tampered), vec![key("forged")]);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let Problem::Tampered { error, .. } = &report.problems[0] else {
        unreachable!()
    };
    assert!(matches!(error, Error::Tampered { .. }), "{error}");
}

#[tokio::test]
async fn a_blob_replaced_by_another_valid_value_is_reported_tampered_on_a_signed_store() {
    let fx = signed_fixture();
    let genuine = fx.put_blob("genuine", 1).await;
    let other = fx.put_blob("other", 2).await;
    // A well-formed container of the same size, with other content.
    std::fs::copy(fx.path_of(&other), fx.path_of(&genuine)).unwrap();

    let report = verify(&fx.store, &VerifyOptions::default()).await;
    assert_eq!(
        keys_of(&report, ProblemKind::Tampered),
        vec![key("genuine")]
    );
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
}

#[tokio::test]
async fn unsigned_entries_are_reported_tampered_once_signing_is_on() {
    let fx = fixture();
    fx.put_inline("unsigned").await;
    let signed = Store::new(
        fx.store.metadata_backend().clone(),
        fx.store.blob_backend().clone(),
        StoreConfig::default().with_signing_key(SigningKey::from_bytes(&[9; 32]).unwrap()),
    )
    .unwrap();

    let report = verify(&signed, &VerifyOptions::default()).await;
    assert_eq!(
        keys_of(&report, ProblemKind::Tampered),
        vec![key("unsigned")]
    );
}

#[tokio::test]
async fn expired_entries_are_reported_with_their_expiry_and_not_read() {
    let fx = fixture();
    fx.put_blob("lasting", 1).await;
    let ttl = PutOptions {
        ttl: Some(Duration::from_secs(10)),
        ..PutOptions::default()
    };
    let brief = fx.put_with("brief", &random_bytes(200_000, 2), ttl).await;
    fx.clock.advance(Duration::from_secs(11));

    let report = verify(&fx.store, &VerifyOptions::default()).await;
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    match &report.problems[0] {
        Problem::Expired { entry } => {
            assert_eq!(entry.key, key("brief"));
            assert_eq!(entry.expires_at, brief.expires_at);
        }
        other => panic!("expected an expired entry, got {other:?}"),
    }
    assert_eq!((report.entries_checked, report.values_read), (2, 1));
}

#[tokio::test]
async fn a_blob_file_no_entry_references_is_reported_unreferenced() {
    let fx = fixture();
    fx.put_blob("healthy", 1).await;
    let orphan = fx.plant_orphan(b"left behind by a crash");

    let report = verify(&fx.store, &VerifyOptions::default()).await;
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    match &report.problems[0] {
        Problem::UnreferencedBlob { blob, size } => {
            assert_eq!(blob, &orphan);
            assert_eq!(*size, 22);
        }
        other => panic!("expected an unreferenced blob, got {other:?}"),
    }
    assert_eq!(report.blobs_listed, 2);

    let without = verify(
        &fx.store,
        &VerifyOptions::default().with_find_orphans(false),
    )
    .await;
    assert!(without.is_clean());
    assert_eq!(without.blobs_listed, 0);
}

#[tokio::test]
async fn quick_verify_finds_missing_and_resized_blobs_reading_only_the_resized_ones() {
    let fx = fixture();
    for (i, name) in ["h1", "h2", "h3"].iter().enumerate() {
        fx.put_blob(name, 10 + i as u64).await;
    }
    fx.put_inline("small").await;
    let lost = fx.put_blob("lost", 1).await;
    let cut = fx.put_blob("cut", 2).await;
    std::fs::remove_file(fx.path_of(&lost)).unwrap();
    truncate(&fx.path_of(&cut));

    let quick = VerifyOptions::default().with_read_values(false);
    let report = verify(&fx.store, &quick).await;
    assert_eq!(
        keys_of(&report, ProblemKind::MissingBlob),
        vec![key("lost")]
    );
    assert_eq!(keys_of(&report, ProblemKind::Corrupt), vec![key("cut")]);
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert_eq!(report.entries_checked, 6);
    // Only the blob whose size differs from the recorded one was read (it could have been
    // another valid encoding of the same content); it failed, so nothing counts as read.
    assert_eq!((report.values_read, report.bytes_checked), (0, 0));
}

#[tokio::test]
async fn quick_verify_does_not_read_blobs_of_the_recorded_size() {
    let fx = fixture();
    let hit = fx.put_blob("hit", 1).await;
    flip_byte(&fx.path_of(&hit), 100_000);

    let quick = VerifyOptions::default().with_read_values(false);
    let report = verify(&fx.store, &quick).await;
    assert!(report.is_clean(), "a same-size bit flip needs a full read");
    assert_eq!(report.values_read, 0);
    let full = verify(&fx.store, &VerifyOptions::default()).await;
    assert_eq!(keys_of(&full, ProblemKind::Corrupt), vec![key("hit")]);
}

#[tokio::test]
async fn a_shared_blob_holding_another_encoding_of_the_same_content_is_healthy() {
    let fx = fixture();
    // Half incompressible, half zeros, in 1 KiB stripes: LZ4 halves it.
    let data: Vec<u8> = random_bytes(128 << 10, 5)
        .chunks(1024)
        .flat_map(|stripe| stripe.iter().copied().chain([0u8; 1024]))
        .collect();
    let lz4 = fx.put_with("lz4", &data, PutOptions::default()).await;
    let raw = PutOptions {
        compression: Some(Compression::None),
        ..PutOptions::default()
    };
    let plain = fx.put_with("plain", &data, raw).await;
    assert_eq!(lz4.location, plain.location, "one blob");
    assert_ne!(lz4.stored_size, plain.stored_size, "two encodings");
    // The blob directory holds the later encoding; the first entry still reads.
    assert_eq!(
        std::fs::metadata(fx.path_of(&lz4)).unwrap().len(),
        plain.stored_size
    );

    let quick = verify(&fx.store, &VerifyOptions::default().with_read_values(false)).await;
    assert!(quick.is_clean(), "{:?}", quick.problems);
    assert_eq!(quick.values_read, 1, "the entry whose size differs is read");
    assert!(
        verify(&fx.store, &VerifyOptions::default())
            .await
            .is_clean()
    );
}

#[tokio::test]
async fn verify_with_a_filter_checks_only_matching_entries() {
    let fx = fixture();
    let models = |name: &str| CacheKey::explicit("models", name).unwrap();
    let data = random_bytes(200_000, 1);
    fx.store
        .put_bytes(&models("m"), &data, PutOptions::default())
        .await
        .unwrap();
    let hit = fx.put_blob("elsewhere", 2).await;
    flip_byte(&fx.path_of(&hit), 100_000);

    let scoped = VerifyOptions::default()
        .with_filter(EntryFilter::all().namespace("models"))
        .with_find_orphans(false);
    let report = verify(&fx.store, &scoped).await;
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.entries_checked, 1);
    let everything = verify(&fx.store, &VerifyOptions::default()).await;
    assert_eq!(
        keys_of(&everything, ProblemKind::Corrupt),
        vec![key("elsewhere")]
    );
}

// ------------------------------------------------------------------ repair

/// A signed store with one entry of every kind of damage, two healthy entries and an
/// orphan; the clock is past every writer's lease.
async fn damaged_store() -> Fixture {
    let fx = signed_fixture();
    fx.put_blob("healthy", 1).await;
    fx.put_inline("healthy-inline").await;
    let lost = fx.put_blob("lost", 2).await;
    std::fs::remove_file(fx.path_of(&lost)).unwrap();
    let hit = fx.put_blob("hit", 3).await;
    flip_byte(&fx.path_of(&hit), 100_000);
    let cut = fx.put_blob("cut", 4).await;
    truncate(&fx.path_of(&cut));
    fx.put_blob("forged", 5).await;
    fx.sql("UPDATE entries SET tags = '[\"forged\"]' WHERE id = 'forged'");
    let ttl = PutOptions {
        ttl: Some(Duration::from_secs(10)),
        ..PutOptions::default()
    };
    fx.put_with("brief", &random_bytes(200_000, 6), ttl).await;
    fx.plant_orphan(b"left behind by a crash");
    fx.clock.advance(PAST_LEASE);
    fx
}

fn broken_keys() -> Vec<CacheKey> {
    ["brief", "cut", "forged", "hit", "lost"]
        .into_iter()
        .map(key)
        .collect()
}

#[tokio::test]
async fn repair_dry_run_reports_what_it_would_remove_and_changes_nothing() {
    let fx = damaged_store().await;
    let (rows, files) = (fx.index_rows(), fx.blob_files());

    let dry = fx
        .store
        .repair(&RepairOptions::default().with_dry_run(true), |_| {})
        .await
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!(fx.index_rows(), rows, "the index is unchanged");
    assert_eq!(fx.blob_files(), files, "the blob directory is unchanged");

    let real = fx
        .store
        .repair(&RepairOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(!real.dry_run);
    assert_eq!(
        (dry.entries_removed, dry.blobs_removed, dry.bytes_freed),
        (real.entries_removed, real.blobs_removed, real.bytes_freed),
        "the dry run predicted the real run"
    );
}

#[tokio::test]
async fn repair_removes_exactly_the_broken_entries_and_unreferenced_blobs() {
    let fx = damaged_store().await;
    let healthy_blob = fx.path_of(&fx.store.metadata(&key("healthy")).await.unwrap().unwrap());

    let report = fx
        .store
        .repair(&RepairOptions::default(), |_| {})
        .await
        .unwrap();
    let mut found: Vec<CacheKey> = report
        .found
        .problems
        .iter()
        .filter_map(|p| p.key().cloned())
        .collect();
    found.sort();
    assert_eq!(found, broken_keys());
    assert_eq!(report.found.count(ProblemKind::UnreferencedBlob), 1);
    assert_eq!(report.entries_removed, 5);
    assert_eq!(report.entries_changed, 0);
    // hit, cut, forged, brief and the orphan; the lost blob had no file.
    assert_eq!(report.blobs_removed, 5);

    for k in broken_keys() {
        assert!(!fx.store.exists(&k).await.unwrap(), "{k} removed");
    }
    assert!(fx.store.get_bytes(&key("healthy")).await.unwrap().is_some());
    let inline: Option<String> = fx.store.get_value(&key("healthy-inline")).await.unwrap();
    assert_eq!(inline.as_deref(), Some("value of healthy-inline"));
    assert_eq!(
        fx.blob_files().into_keys().collect::<Vec<_>>(),
        vec![healthy_blob],
        "only the healthy entry's blob is left"
    );
    assert_eq!(fx.store.stats().await.unwrap().blobs, 1, "registry cleaned");
    assert!(
        verify(&fx.store, &VerifyOptions::default())
            .await
            .is_clean()
    );
}

#[tokio::test]
async fn healthy_entries_sharing_a_blob_with_a_removed_entry_keep_working() {
    let fx = signed_fixture();
    let data = random_bytes(200_000, 7);
    fx.put_with("forged", &data, PutOptions::default()).await;
    let kept = fx.put_with("kept", &data, PutOptions::default()).await;
    fx.sql(r#"UPDATE entries SET user_metadata = '{"x":1}' WHERE id = 'forged'"#);
    fx.clock.advance(PAST_LEASE);

    let report = fx
        .store
        .repair(&RepairOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!((report.entries_removed, report.blobs_removed), (1, 0));
    assert!(fx.path_of(&kept).exists());
    assert_eq!(
        fx.store.get_bytes(&key("kept")).await.unwrap().as_deref(),
        Some(&data[..])
    );
    assert!(
        verify(&fx.store, &VerifyOptions::default())
            .await
            .is_clean()
    );
}

#[tokio::test]
async fn repair_keeps_an_unreferenced_blob_while_a_writer_lease_protects_it() {
    let fx = fixture();
    // A writer reserved and published this blob and has not committed its entry yet.
    let data = Bytes::from_static(b"published, not yet committed");
    let id = BlobId::parse(&format!(
        "xxh3-128-{:032x}",
        xxhash_rust::xxh3::xxh3_128(&data)
    ))
    .unwrap();
    let now = fx.store.now();
    fx.store
        .metadata_backend()
        .reserve_blob(
            &id,
            data.len() as u64,
            now.plus(Duration::from_secs(60)),
            now,
        )
        .await
        .unwrap();
    fx.blobs.put(&id, data).await.unwrap();

    let report = fx
        .store
        .repair(&RepairOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.found.count(ProblemKind::UnreferencedBlob), 1);
    assert_eq!(report.blobs_removed, 0, "the lease protects it");
    assert!(fx.blobs.blob_path(&id).exists());

    fx.clock.advance(PAST_LEASE);
    let later = fx
        .store
        .repair(&RepairOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(later.blobs_removed, 1, "an abandoned write is reclaimed");
    assert!(!fx.blobs.blob_path(&id).exists());
}

#[tokio::test]
async fn repair_leaves_an_entry_rewritten_after_the_scan_alone() {
    let fx = fixture();
    let lost = fx.put_blob("lost", 1).await;
    std::fs::remove_file(fx.path_of(&lost)).unwrap();
    fx.clock.advance(PAST_LEASE);

    let mut rewritten = false;
    let report = fx
        .store
        .repair(&RepairOptions::default(), |p| {
            // Between the scan and the removal, another process rewrites the entry.
            if p.phase == VerifyPhase::ListingBlobs && !rewritten {
                fx.sql("UPDATE entries SET updated_at = updated_at + 1 WHERE id = 'lost'");
                rewritten = true;
            }
        })
        .await
        .unwrap();
    assert_eq!(report.found.count(ProblemKind::MissingBlob), 1);
    assert_eq!((report.entries_removed, report.entries_changed), (0, 1));
    assert!(fx.store.exists(&key("lost")).await.unwrap());
}

// ------------------------------------------------------------------ progress and scale

#[tokio::test]
async fn progress_is_reported_with_increasing_counts_through_every_phase() {
    let fx = damaged_store().await;
    for i in 0..20 {
        fx.put_blob(&format!("more-{i:02}"), 100 + i).await;
    }
    let mut seen: Vec<VerifyProgress> = Vec::new();
    let report = fx
        .store
        .repair(&RepairOptions::default(), |p| seen.push(*p))
        .await
        .unwrap();

    assert!(seen.len() >= 27, "{} calls", seen.len());
    for pair in seen.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(b.entries_checked >= a.entries_checked, "{a:?} then {b:?}");
        assert!(b.bytes_checked >= a.bytes_checked, "{a:?} then {b:?}");
        assert!(b.blobs_listed >= a.blobs_listed, "{a:?} then {b:?}");
        assert!(b.problems >= a.problems, "{a:?} then {b:?}");
        assert!(b.entries_removed >= a.entries_removed, "{a:?} then {b:?}");
        assert!(b.blobs_removed >= a.blobs_removed, "{a:?} then {b:?}");
    }
    let phases: Vec<VerifyPhase> = seen.iter().map(|p| p.phase).fold(Vec::new(), |mut v, p| {
        if v.last() != Some(&p) {
            v.push(p);
        }
        v
    });
    assert_eq!(
        phases,
        vec![
            VerifyPhase::CheckingEntries,
            VerifyPhase::ListingBlobs,
            VerifyPhase::RemovingEntries,
            VerifyPhase::ReclaimingBlobs
        ]
    );
    let last = seen.last().unwrap();
    assert_eq!(last.entries_checked, report.found.entries_checked);
    assert_eq!(last.entries_checked, 27);
    assert_eq!(last.bytes_checked, report.found.bytes_checked);
    assert_eq!(last.blobs_listed, report.found.blobs_listed);
    assert_eq!(last.problems, 6);
    assert_eq!(last.entries_removed, report.entries_removed);
    assert_eq!(last.blobs_removed, report.blobs_removed);
}

/// An index that records the page sizes `list` is asked for and returns.
struct CountingIndex {
    inner: SqliteMetadata,
    pages: Mutex<Vec<(usize, usize)>>,
}

#[async_trait]
impl MetadataBackend for CountingIndex {
    fn name(&self) -> &str {
        "counting"
    }
    fn capabilities(&self) -> MetadataCapabilities {
        self.inner.capabilities()
    }
    async fn get(&self, key: &CacheKey) -> Result<Option<EntryRecord>> {
        self.inner.get(key).await
    }
    async fn get_meta(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        self.inner.get_meta(key).await
    }
    async fn put(&self, record: EntryRecord) -> Result<Option<EntryMeta>> {
        self.inner.put(record).await
    }
    async fn delete(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        self.inner.delete(key).await
    }
    async fn delete_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<EntryMeta>> {
        self.inner.delete_expired(now, limit).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Vec<EntryMeta>> {
        let page = self.inner.list(query).await?;
        self.pages
            .lock()
            .unwrap()
            .push((query.effective_limit(), page.len()));
        Ok(page)
    }
    async fn record_access(&self, accesses: &[AccessRecord]) -> Result<()> {
        self.inner.record_access(accesses).await
    }
    async fn update_expiry(
        &self,
        key: &CacheKey,
        if_signature: Option<&str>,
        expires_at: Option<Timestamp>,
        updated_at: Timestamp,
        signature: Option<String>,
    ) -> Result<bool> {
        self.inner
            .update_expiry(key, if_signature, expires_at, updated_at, signature)
            .await
    }
    async fn stats(&self) -> Result<IndexStats> {
        self.inner.stats().await
    }
    async fn reserve_blob(
        &self,
        id: &BlobId,
        size: u64,
        lease_until: Timestamp,
        stale: Timestamp,
    ) -> Result<()> {
        self.inner.reserve_blob(id, size, lease_until, stale).await
    }
    async fn claim_unreferenced_blobs(
        &self,
        candidates: Option<&[BlobId]>,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        self.inner
            .claim_unreferenced_blobs(candidates, now, limit)
            .await
    }
    async fn reclaim_abandoned_claims(
        &self,
        now: Timestamp,
        stale: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        self.inner.reclaim_abandoned_claims(now, stale, limit).await
    }
    async fn claim_unregistered_blob(&self, id: &BlobId, now: Timestamp) -> Result<bool> {
        self.inner.claim_unregistered_blob(id, now).await
    }
    async fn release_claimed_blobs(&self, ids: &[BlobId]) -> Result<()> {
        self.inner.release_claimed_blobs(ids).await
    }
    async fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryRecord>>> {
        self.inner.get_many(keys).await
    }
    async fn get_meta_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        self.inner.get_meta_many(keys).await
    }
    async fn put_many(
        &self,
        records: Vec<EntryRecord>,
        condition: WriteCondition,
    ) -> Result<Vec<PutOutcome>> {
        self.inner.put_many(records, condition).await
    }
    async fn delete_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        self.inner.delete_many(keys).await
    }
    async fn delete_matching(&self, filter: &EntryFilter, limit: usize) -> Result<Vec<EntryMeta>> {
        self.inner.delete_matching(filter, limit).await
    }
    async fn update_expiry_many(&self, updates: &[ExpiryUpdate]) -> Result<Vec<bool>> {
        self.inner.update_expiry_many(updates).await
    }
    async fn move_entry(
        &self,
        from: &CacheKey,
        to: EntryMeta,
        overwrite: bool,
    ) -> Result<MoveOutcome> {
        self.inner.move_entry(from, to, overwrite).await
    }
    async fn count_blob_references(&self, ids: &[BlobId]) -> Result<Vec<u64>> {
        self.inner.count_blob_references(ids).await
    }
    async fn usage(&self, namespace: Option<&str>) -> Result<cachet_core::IndexUsage> {
        self.inner.usage(namespace).await
    }
    async fn evict(&self, batch: &cachet_core::EvictionBatch) -> Result<Vec<EntryMeta>> {
        self.inner.evict(batch).await
    }
    async fn try_lock_key(&self, key: &CacheKey) -> Result<Option<Box<dyn KeyLock>>> {
        self.inner.try_lock_key(key).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
}

#[tokio::test]
async fn verify_pages_through_5000_entries_500_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(CountingIndex {
        inner: SqliteMetadata::open(SqliteConfig::new(dir.path().join("index.sqlite"))).unwrap(),
        pages: Mutex::new(Vec::new()),
    });
    let blobs = FsBlobs::open(FsConfig::new(dir.path().join("blobs"))).unwrap();
    let store = Store::new(index.clone(), Arc::new(blobs), StoreConfig::default()).unwrap();
    let started = Instant::now();
    for batch in 0..10 {
        let items = (0..500)
            .map(|i| {
                let n = batch * 500 + i;
                // Every 100th value is large enough for a blob.
                let data = if n % 100 == 0 {
                    random_bytes(64 << 10, n)
                } else {
                    format!("value {n}").into_bytes()
                };
                BatchItem::bytes(key(&format!("e{n:05}")), data, PutOptions::default())
            })
            .collect();
        store.put_many(items).await.unwrap();
    }
    let filled = started.elapsed();

    let started = Instant::now();
    let full = verify(&store, &VerifyOptions::default()).await;
    let full_time = started.elapsed();
    let started = Instant::now();
    let quick = verify(&store, &VerifyOptions::default().with_read_values(false)).await;
    let quick_time = started.elapsed();
    eprintln!(
        "5,000 entries (50 in blobs): filled in {filled:?}; full verify {full_time:?} \
         ({} bytes read), quick verify {quick_time:?}",
        full.bytes_checked
    );

    assert!(full.is_clean() && quick.is_clean());
    assert_eq!((full.entries_checked, full.values_read), (5000, 5000));
    assert_eq!(full.blobs_listed, 50);
    assert_eq!((quick.entries_checked, quick.values_read), (5000, 0));
    let pages = index.pages.lock().unwrap().clone();
    // Two scans, each 10 full pages and one empty page that ends it.
    assert_eq!(pages.len(), 22, "{pages:?}");
    assert!(
        pages.iter().all(|&(asked, got)| asked == 500 && got <= 500),
        "{pages:?}"
    );
}

// ------------------------------------------------------------------ errors

#[tokio::test]
async fn zero_concurrency_is_refused_naming_the_field() {
    let fx = fixture();
    let err = fx
        .store
        .verify(&VerifyOptions::default().with_concurrency(0), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "concurrency"),
        "{err}"
    );
}

#[tokio::test]
async fn a_filter_that_cannot_be_evaluated_is_refused() {
    let fx = fixture();
    let nan = EntryFilter::all().metadata(FieldCondition::eq("score", f64::NAN));
    let err = fx
        .store
        .repair(
            &RepairOptions::default().with_verify(VerifyOptions::default().with_filter(nan)),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

/// A blob store that becomes unreachable on demand.
#[derive(Clone)]
struct Flaky {
    inner: FsBlobs,
    down: Arc<AtomicBool>,
}

impl Flaky {
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::Unavailable {
                backend: "flaky".into(),
                source: "connection refused".into(),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl BlobBackend for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn capabilities(&self) -> BlobCapabilities {
        self.inner.capabilities()
    }
    async fn put(&self, id: &BlobId, data: Bytes) -> Result<BlobReceipt> {
        self.check()?;
        self.inner.put(id, data).await
    }
    async fn writer(&self) -> Result<Box<dyn BlobWriter>> {
        self.check()?;
        self.inner.writer().await
    }
    async fn get(&self, id: &BlobId) -> Result<Bytes> {
        self.check()?;
        self.inner.get(id).await
    }
    async fn get_stream(&self, id: &BlobId) -> Result<ByteStream> {
        self.check()?;
        self.inner.get_stream(id).await
    }
    async fn head(&self, id: &BlobId) -> Result<Option<cachet_core::BlobInfo>> {
        self.check()?;
        self.inner.head(id).await
    }
    async fn delete(&self, id: &BlobId) -> Result<bool> {
        self.check()?;
        self.inner.delete(id).await
    }
    async fn list(&self) -> Result<BlobInfoStream> {
        self.check()?;
        self.inner.list().await
    }
    async fn cleanup_temporary(&self, older_than: Timestamp) -> Result<u64> {
        self.check()?;
        self.inner.cleanup_temporary(older_than).await
    }
}

#[tokio::test]
async fn an_unreachable_blob_store_stops_verify_and_repair_with_its_error_changing_nothing() {
    let fx = fixture();
    let flaky = Flaky {
        inner: fx.blobs.clone(),
        down: Arc::new(AtomicBool::new(false)),
    };
    let store = Store::new(
        fx.store.metadata_backend().clone(),
        Arc::new(flaky.clone()),
        StoreConfig::default(),
    )
    .unwrap();
    store
        .put_bytes(&key("a"), &random_bytes(200_000, 1), PutOptions::default())
        .await
        .unwrap();
    let lost = store
        .put_bytes(
            &key("lost"),
            &random_bytes(200_000, 2),
            PutOptions::default(),
        )
        .await
        .unwrap();
    std::fs::remove_file(fx.path_of(&lost)).unwrap();
    let rows = fx.index_rows();
    flaky.down.store(true, Ordering::SeqCst);

    for read_values in [true, false] {
        let options = VerifyOptions::default().with_read_values(read_values);
        let err = store.verify(&options, |_| {}).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert!(err.is_retryable());
    }
    let err = store
        .repair(&RepairOptions::default(), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert_eq!(fx.index_rows(), rows, "nothing removed");
}

#[tokio::test]
async fn an_index_row_that_cannot_be_decoded_stops_verify_with_an_error_naming_it() {
    let fx = fixture();
    fx.put_inline("fine").await;
    fx.put_inline("mangled").await;
    fx.sql("UPDATE entries SET digest = 'not a digest' WHERE id = 'mangled'");

    let err = fx
        .store
        .verify(&VerifyOptions::default(), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("mangled"), "{err}");
    // Such a row is removed by key (the index's delete accepts it), after which verify runs.
    fx.store.delete(&key("mangled")).await.unwrap();
    assert!(
        verify(&fx.store, &VerifyOptions::default())
            .await
            .is_clean()
    );
}
