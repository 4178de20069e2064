//! Opening, reopening and migrating index files; refusing files that are not cachet indexes.

use std::path::Path;
use std::sync::{Arc, Barrier};

use cachet_core::testing::metadata::{
    T0, rich_record, sample_blob_record, sample_record, test_blob_id, test_key,
};
use cachet_core::{Error, MetadataBackend, Timestamp};
use cachet_meta_sqlite::{SCHEMA_VERSION, SqliteConfig, SqliteMetadata};
use rusqlite::Connection;

fn open(path: &Path) -> SqliteMetadata {
    SqliteConfig::new(path).open().expect("open the index")
}

fn header(path: &Path) -> (i64, i64, String) {
    let conn = Connection::open(path).unwrap();
    let app: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    (app, version, mode)
}

fn expect_not_an_index(result: Result<SqliteMetadata, Error>, why: &str) -> String {
    match result {
        Err(Error::Config { field, message }) => {
            assert_eq!(field, "path");
            assert!(
                message.contains("not a cachet index") && message.contains(why),
                "message must say the file is not a cachet index and why ({why}): {message}"
            );
            message
        }
        other => panic!("expected Error::Config for `path`, got {other:?}"),
    }
}

#[tokio::test]
async fn reopening_an_index_keeps_its_entries_and_blob_registry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let rich = rich_record(&test_key("ns", "rich"));
    let blob = test_blob_id(1);
    let in_blob = sample_blob_record(&test_key("", "in-blob"), &blob, 10);
    let stats = {
        let index = open(&path);
        index
            .reserve_blob(&blob, 10, Timestamp(T0.0 + 1000), Timestamp(i64::MIN))
            .await
            .unwrap();
        index.put(rich.clone()).await.unwrap();
        index.put(in_blob.clone()).await.unwrap();
        index.stats().await.unwrap()
    };
    let index = open(&path);
    assert_eq!(index.get(&rich.meta.key).await.unwrap(), Some(rich));
    assert_eq!(index.get(&in_blob.meta.key).await.unwrap(), Some(in_blob));
    assert_eq!(index.stats().await.unwrap(), stats);
    assert_eq!(
        index
            .claim_unreferenced_blobs(None, Timestamp(T0.0 + 999), 10)
            .await
            .unwrap(),
        vec![],
        "the reservation's lease must survive the reopen"
    );
}

#[test]
fn new_index_is_marked_with_schema_version_and_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let _index = open(&path);
    let (app, version, mode) = header(&path);
    assert_eq!(app, 0x6361_6368, "application_id must mark a cachet index");
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn opening_an_index_twice_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let first = open(&path);
    let record = sample_record(&test_key("", "k"));
    first.put(record.clone()).await.unwrap();
    let second = open(&path);
    let third = open(&path);
    assert_eq!(header(&path).1, SCHEMA_VERSION);
    for index in [&first, &second, &third] {
        assert_eq!(
            index.get(&record.meta.key).await.unwrap(),
            Some(record.clone())
        );
    }
}

#[tokio::test]
async fn threads_opening_a_fresh_file_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let index = SqliteConfig::new(&path).open().map_err(|e| e.to_string())?;
                let record = sample_record(&test_key("", &format!("thread-{i}")));
                block_on(index.put(record)).map_err(|e| e.to_string())?;
                Ok::<_, String>(index)
            })
        })
        .collect();
    let indexes: Vec<SqliteMetadata> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap()
                .expect("every concurrent open must succeed")
        })
        .collect();
    assert_eq!(header(&path).1, SCHEMA_VERSION);
    for index in &indexes {
        assert_eq!(index.stats().await.unwrap().entries, 4);
    }
}

/// Drives a future that never waits (this backend runs its statements inline).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn index_from_a_newer_cachet_is_refused_with_an_upgrade_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    drop(open(&path));
    let newer = SCHEMA_VERSION + 1;
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    match SqliteConfig::new(&path).open() {
        Err(Error::Config { field, message }) => {
            assert_eq!(field, "path");
            assert!(
                message.contains(&format!("schema version {newer}"))
                    && message.contains(&format!("up to {SCHEMA_VERSION}"))
                    && message.contains("upgrade cachet"),
                "the message must name both versions and say to upgrade: {message}"
            );
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
    assert_eq!(header(&path).1, newer, "a refused index must be left as is");
}

#[test]
fn garbage_file_is_refused_as_not_a_database_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).unwrap();
    expect_not_an_index(SqliteConfig::new(&path).open(), "not a SQLite database");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file must not be modified"
    );
}

#[test]
fn text_file_is_refused_as_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "just some notes, certainly more than a header's worth of text. ".repeat(20),
    )
    .unwrap();
    expect_not_an_index(SqliteConfig::new(&path).open(), "not a SQLite database");
}

#[test]
fn another_programs_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('ada');")
            .unwrap();
    }
    expect_not_an_index(SqliteConfig::new(&path).open(), "already holds");
    let (app, version, mode) = header(&path);
    assert_eq!(
        (app, version, mode.as_str()),
        (0, 0, "delete"),
        "nothing may change"
    );

    let marked = dir.path().join("marked.db");
    Connection::open(&marked)
        .unwrap()
        .pragma_update(None, "application_id", 0x1234_5678)
        .unwrap();
    expect_not_an_index(SqliteConfig::new(&marked).open(), "application_id");
}

#[tokio::test]
async fn empty_existing_file_becomes_a_new_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    std::fs::write(&path, b"").unwrap();
    let index = open(&path);
    index.put(sample_record(&test_key("", "k"))).await.unwrap();
    assert_eq!(header(&path).1, SCHEMA_VERSION);
}

/// The schema as version 1 of cachet-meta-sqlite created it (a fixture: released schemas
/// never change).
const RELEASED_V1_SCHEMA: &str = "
CREATE TABLE entries (
    namespace TEXT NOT NULL, id TEXT NOT NULL, params TEXT, blob_id TEXT,
    data_type TEXT NOT NULL, type_name TEXT, compression TEXT NOT NULL,
    raw_size INTEGER NOT NULL, stored_size INTEGER NOT NULL, digest TEXT NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, accessed_at INTEGER NOT NULL,
    access_count INTEGER NOT NULL, expires_at INTEGER, tags TEXT NOT NULL,
    user_metadata TEXT, signature TEXT, inline_data BLOB,
    PRIMARY KEY (namespace, id)
);
CREATE INDEX entries_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX entries_accessed_at ON entries (accessed_at);
CREATE INDEX entries_blob_id ON entries (blob_id) WHERE blob_id IS NOT NULL;
CREATE TABLE blobs (
    id TEXT NOT NULL PRIMARY KEY, size INTEGER NOT NULL, lease_until INTEGER NOT NULL,
    claimed_at INTEGER
) WITHOUT ROWID;
INSERT INTO entries VALUES ('ns', 'old', '{\"a\":1}', NULL, 'bytes', NULL, 'lz4', 3, 3,
    'xxh3-128:000000000000000000000000000000ff', 1, 2, 3, 4, NULL, '[\"t\"]', NULL, NULL,
    x'616263');
INSERT INTO blobs VALUES ('xxh3-128-000000000000000000000000000000ff', 10, 0, NULL);
PRAGMA application_id = 1667326824;
PRAGMA user_version = 1;
";

#[tokio::test]
async fn a_version_1_index_is_migrated_keeping_its_entries_and_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(RELEASED_V1_SCHEMA)
        .unwrap();
    let index = open(&path);
    assert_eq!(header(&path).1, SCHEMA_VERSION);
    let old = index
        .get(&test_key("ns", "old"))
        .await
        .unwrap()
        .expect("the version 1 entry survives the migration");
    assert_eq!(old.inline_data.as_deref(), Some(&b"abc"[..]));
    assert_eq!(old.meta.tags, vec!["t".to_owned()]);
    assert_eq!(old.meta.access_count, 4);
    assert_eq!(
        old.meta.blob_etag, None,
        "entries written before v2 have no ETag"
    );
    assert_eq!(index.stats().await.unwrap().blobs, 1);
    let mut with_etag = sample_blob_record(&test_key("ns", "new"), &test_blob_id(7), 10);
    with_etag.meta.blob_etag = Some("\"etag\"".into());
    index
        .reserve_blob(
            &test_blob_id(7),
            10,
            Timestamp(T0.0 + 1000),
            Timestamp(i64::MIN),
        )
        .await
        .unwrap();
    index.put(with_etag.clone()).await.unwrap();
    let got = index
        .get_meta(&test_key("ns", "new"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.blob_etag, with_etag.meta.blob_etag);
}
