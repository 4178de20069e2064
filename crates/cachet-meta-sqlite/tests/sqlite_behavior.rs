//! Behaviour specific to the SQLite index: locking, visibility across connections, batching,
//! integer limits, flush.

use std::path::Path;
use std::time::{Duration, Instant};

use cachet_core::testing::metadata::{T0, sample_record, test_blob_id, test_key};
use cachet_core::{AccessRecord, Error, ListQuery, MetadataBackend, Timestamp};
use cachet_meta_sqlite::{SqliteConfig, SqliteMetadata};
use rusqlite::Connection;

fn open(path: &Path) -> SqliteMetadata {
    SqliteConfig::new(path).open().expect("open the index")
}

#[tokio::test]
async fn file_index_is_durable_and_shared_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let caps = open(&dir.path().join("index.db")).capabilities();
    assert!(caps.durable && caps.shared_across_processes && !caps.shared_across_machines);
}

#[tokio::test]
async fn write_lock_held_past_busy_timeout_is_unavailable_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let index = SqliteConfig::new(&path)
        .with_busy_timeout(Duration::from_millis(150))
        .open()
        .unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let record = sample_record(&test_key("", "blocked"));
    let started = Instant::now();
    let err = index.put(record.clone()).await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { .. }) && err.is_retryable(),
        "a lock held past busy_timeout must be Error::Unavailable: {err:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(140),
        "put must wait for the busy timeout before giving up ({:?})",
        started.elapsed()
    );
    assert!(
        err.to_string().contains("put"),
        "the message names the operation: {err}"
    );
    assert!(matches!(
        index
            .record_access(&[AccessRecord {
                key: record.meta.key.clone(),
                at: T0,
                hits: 1
            }])
            .await,
        Err(Error::Unavailable { .. })
    ));

    other.execute_batch("COMMIT").unwrap();
    index
        .put(record.clone())
        .await
        .expect("put must succeed once the lock is released");
    assert_eq!(index.get(&record.meta.key).await.unwrap(), Some(record));
}

#[tokio::test]
async fn reads_proceed_while_another_connection_holds_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let index = SqliteConfig::new(&path)
        .with_busy_timeout(Duration::from_millis(50))
        .open()
        .unwrap();
    let record = sample_record(&test_key("", "k"));
    index.put(record.clone()).await.unwrap();
    let other = Connection::open(&path).unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE; DELETE FROM entries;")
        .unwrap();
    assert_eq!(
        index.get(&record.meta.key).await.unwrap(),
        Some(record.clone()),
        "readers must see the last committed state while a writer works"
    );
    assert_eq!(index.list(&ListQuery::default()).await.unwrap().len(), 1);
    assert_eq!(index.stats().await.unwrap().entries, 1);
    other.execute_batch("ROLLBACK").unwrap();
}

#[tokio::test]
async fn reads_never_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let index = open(&path);
    let key = test_key("", "k");
    index.put(sample_record(&key)).await.unwrap();
    let observer = Connection::open(&path).unwrap();
    let version = || -> i64 {
        observer
            .pragma_query_value(None, "data_version", |r| r.get(0))
            .unwrap()
    };
    let before = version();
    for _ in 0..100 {
        index.get(&key).await.unwrap().unwrap();
        index.get(&test_key("", "missing")).await.unwrap();
        index.get_meta(&key).await.unwrap().unwrap();
    }
    index.list(&ListQuery::default()).await.unwrap();
    index.stats().await.unwrap();
    assert_eq!(
        version(),
        before,
        "get, get_meta, list and stats must not commit anything"
    );
    index.put(sample_record(&test_key("", "k2"))).await.unwrap();
    assert_ne!(version(), before, "sanity: a write is observed");
}

#[tokio::test]
async fn record_access_applies_a_batch_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let index = open(&path);
    let keys: Vec<_> = (0..200)
        .map(|i| test_key("", &format!("k{i:03}")))
        .collect();
    for key in &keys {
        index.put(sample_record(key)).await.unwrap();
    }
    let observer = Connection::open(&path).unwrap();
    let checkpoint = |mode: &str| -> (i64, i64, i64) {
        observer
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap()
    };
    assert_eq!(checkpoint("TRUNCATE").0, 0, "the WAL must be reset");
    let batch: Vec<AccessRecord> = keys
        .iter()
        .map(|key| AccessRecord {
            key: key.clone(),
            at: Timestamp(T0.0 + 1),
            hits: 1,
        })
        .collect();
    index.record_access(&batch).await.unwrap();
    let (_, wal_frames, _) = checkpoint("PASSIVE");
    assert!(
        wal_frames > 0 && wal_frames < 50,
        "one transaction rewrites each touched page once ({wal_frames} WAL frames); one \
         transaction per record would write at least 200"
    );
    for key in &keys {
        assert_eq!(index.get_meta(key).await.unwrap().unwrap().access_count, 1);
    }
}

#[tokio::test]
async fn writes_are_visible_to_another_index_at_once_without_snapshot_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let a = open(&path);
    let b =
        SqliteMetadata::open(SqliteConfig::new(&path).with_read_snapshot(Duration::ZERO)).unwrap();
    let record = sample_record(&test_key("", "shared"));
    a.put(record.clone()).await.unwrap();
    assert_eq!(b.get(&record.meta.key).await.unwrap(), Some(record.clone()));
    a.record_access(&[AccessRecord {
        key: record.meta.key.clone(),
        at: Timestamp(T0.0 + 9),
        hits: 4,
    }])
    .await
    .unwrap();
    let meta = b.get_meta(&record.meta.key).await.unwrap().unwrap();
    assert_eq!(
        (meta.accessed_at, meta.access_count),
        (Timestamp(T0.0 + 9), 4)
    );
    b.delete(&record.meta.key).await.unwrap();
    assert_eq!(a.get(&record.meta.key).await.unwrap(), None);
}

#[tokio::test]
async fn sizes_above_i64_max_are_refused_with_encode_error_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let index = open(&dir.path().join("index.db"));
    let mut record = sample_record(&test_key("", "huge"));
    record.meta.raw_size = u64::MAX;
    match index.put(record.clone()).await {
        Err(Error::Encode { key, detail }) => {
            assert_eq!(key, "huge");
            assert!(detail.contains("raw_size"), "{detail}");
        }
        other => panic!("expected Error::Encode, got {other:?}"),
    }
    assert_eq!(index.get(&record.meta.key).await.unwrap(), None);
    assert!(matches!(
        index
            .reserve_blob(&test_blob_id(1), u64::MAX, T0, Timestamp(i64::MIN))
            .await,
        Err(Error::Encode { .. })
    ));
    assert_eq!(index.stats().await.unwrap().blobs, 0);
}

#[tokio::test]
async fn access_count_saturates_at_i64_max_instead_of_overflowing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let index = open(&path);
    let mut record = sample_record(&test_key("", "popular"));
    record.meta.access_count = i64::MAX as u64 - 1;
    index.put(record.clone()).await.unwrap();
    for hits in [10, u64::MAX] {
        index
            .record_access(&[AccessRecord {
                key: record.meta.key.clone(),
                at: T0,
                hits,
            }])
            .await
            .unwrap();
        let meta = index.get_meta(&record.meta.key).await.unwrap().unwrap();
        assert_eq!(meta.access_count, i64::MAX as u64);
    }
    let stored_type: String = Connection::open(&path)
        .unwrap()
        .query_row("SELECT typeof(access_count) FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        stored_type, "integer",
        "the count must never turn into a float"
    );
}

#[tokio::test]
async fn flush_leaves_every_write_in_the_database_file_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let index = open(&path);
    for i in 0..50 {
        index
            .put(sample_record(&test_key("", &format!("k{i}"))))
            .await
            .unwrap();
    }
    index.flush().await.unwrap();
    // Copy the main file alone (no WAL): after a full checkpoint it holds everything.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    let count: i64 = Connection::open(&copy)
        .unwrap()
        .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 50);
}

#[tokio::test]
async fn own_writes_are_visible_to_the_next_read_despite_snapshot_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let index =
        SqliteMetadata::open(SqliteConfig::new(dir.path().join("index.db")).with_readers(1))
            .unwrap();
    let key = test_key("", "mine");
    for round in 0..200u64 {
        // The read opens (or reuses) a snapshot; the write must invalidate it.
        let before = index.get_meta(&key).await.unwrap();
        assert_eq!(
            before.map(|m| m.raw_size),
            round.checked_sub(1),
            "round {round}"
        );
        let mut record = sample_record(&key);
        record.meta.raw_size = round;
        index.put(record).await.unwrap();
        assert_eq!(
            index.get_meta(&key).await.unwrap().map(|m| m.raw_size),
            Some(round)
        );
    }
    index.delete(&key).await.unwrap();
    assert_eq!(
        index.get(&key).await.unwrap(),
        None,
        "a delete is visible at once too"
    );
}

#[tokio::test]
async fn another_index_sees_a_write_within_the_read_snapshot_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let writer = open(&path);
    let snapshot = Duration::from_millis(20);
    let reader = SqliteMetadata::open(
        SqliteConfig::new(&path)
            .with_readers(1)
            .with_read_snapshot(snapshot),
    )
    .unwrap();
    let key = test_key("", "theirs");
    assert_eq!(reader.get(&key).await.unwrap(), None); // opens a snapshot
    writer.put(sample_record(&key)).await.unwrap();
    let written = Instant::now();
    loop {
        if reader.get(&key).await.unwrap().is_some() {
            break;
        }
        assert!(
            written.elapsed() < snapshot * 3,
            "the write stayed invisible for {:?}, longer than the snapshot time {snapshot:?}",
            written.elapsed()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test]
async fn an_idle_reader_does_not_hold_back_wal_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let reader = SqliteMetadata::open(SqliteConfig::new(&path).with_readers(1)).unwrap();
    let key = test_key("", "k");
    assert_eq!(reader.get(&key).await.unwrap(), None); // leaves a snapshot open, then idles
    let other = open(&path);
    other.put(sample_record(&key)).await.unwrap();
    std::thread::sleep(Duration::from_millis(50)); // the janitor runs every 5 ms
    let conn = Connection::open(&path).unwrap();
    let (busy, log, checkpointed): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(
        busy, 0,
        "a reader still pins the WAL (log {log}, checkpointed {checkpointed})"
    );
}
