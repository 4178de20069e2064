//! Several OS processes on one index file. The test binary re-invokes itself: the ignored test
//! `child_process` does the work of one process when the parent sets `CACHET_SQLITE_CHILD`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cachet_core::testing::metadata::{
    T0, inline_record, sample_blob_record, sample_record, test_blob_id, test_key, xxh3_digest,
};
use cachet_core::{
    AccessRecord, CacheKey, EntryRecord, Error, ListQuery, Location, MetadataBackend, Result,
    Timestamp,
};
use cachet_meta_sqlite::{SCHEMA_VERSION, SqliteConfig, SqliteMetadata};
use serde_json::json;

const ENV_MODE: &str = "CACHET_SQLITE_CHILD";
const ENV_PATH: &str = "CACHET_SQLITE_CHILD_PATH";
const ENV_ID: &str = "CACHET_SQLITE_CHILD_ID";
const ENV_START: &str = "CACHET_SQLITE_CHILD_START_MS";

const WRITERS: usize = 3;
const ITERATIONS: u64 = 1000;
const SHARED_KEYS: u64 = 40;
const HOT_KEYS: u64 = 5;
const BLOBS: u64 = 8;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Starts `count` children in `mode`, all released at the same instant; waits for them.
fn run_children(mode: &str, path: &Path, count: usize) -> Vec<Output> {
    let exe = std::env::current_exe().unwrap();
    let start = now_ms() + 400;
    let children: Vec<_> = (0..count)
        .map(|id| {
            Command::new(&exe)
                .args([
                    "child_process",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ENV_MODE, mode)
                .env(ENV_PATH, path)
                .env(ENV_ID, id.to_string())
                .env(ENV_START, start.to_string())
                .output_async()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

trait OutputAsync {
    fn output_async(&mut self) -> std::process::Child;
}

impl OutputAsync for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn a child test process")
    }
}

fn assert_success(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .enumerate()
        .map(|(id, out)| {
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success() && stdout.contains("CHILD DONE"),
                "child {id} failed ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        })
        .collect()
}

/// The value writer `writer` puts at iteration `i`: every field derived from `(writer, i)`, so
/// a record mixing two writes is detectable.
fn written_record(key: &CacheKey, writer: u64, i: u64) -> EntryRecord {
    let data =
        Bytes::from(format!("writer {writer} iteration {i}; ").repeat(1 + (i % 13) as usize));
    let mut record = inline_record(key, data);
    record.meta.tags = vec![format!("writer-{writer}")];
    record.meta.user_metadata = Some(json!({ "writer": writer, "i": i }));
    record.meta.created_at = Timestamp(T0.0 + i as i64);
    record
}

fn check_written(record: &EntryRecord) {
    let meta = &record.meta;
    let um = meta.user_metadata.as_ref().expect("user metadata");
    let (writer, i) = (um["writer"].as_u64().unwrap(), um["i"].as_u64().unwrap());
    let mut want = written_record(&meta.key, writer, i);
    // Expiry may have been changed afterwards by update_expiry.
    want.meta.expires_at = meta.expires_at;
    want.meta.updated_at = meta.updated_at;
    want.meta.signature = meta.signature.clone();
    assert_eq!(record, &want, "entry {} is not exactly one write", meta.key);
    let data = record.inline_data.as_ref().unwrap();
    assert_eq!(meta.digest, xxh3_digest(data));
}

/// Retries retryable errors (counting them); anything else fails the child.
async fn retrying<T, F, Fut>(retries: &mut u64, what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    for _ in 0..1000 {
        match op().await {
            Ok(value) => return value,
            Err(e) if e.is_retryable() && !matches!(e, Error::Conflict { .. }) => {
                *retries += 1;
                eprintln!("retryable error in {what}: {e}");
            }
            Err(e) => panic!("{what} failed with a non-retryable error: {e}"),
        }
    }
    panic!("{what} kept failing");
}

#[tokio::test]
#[ignore = "one process of the multi-process tests; started by them, not on its own"]
async fn child_process() {
    let Ok(mode) = std::env::var(ENV_MODE) else {
        eprintln!("child_process only works when started by the multi-process tests");
        return;
    };
    let path = PathBuf::from(std::env::var(ENV_PATH).unwrap());
    let id: u64 = std::env::var(ENV_ID).unwrap().parse().unwrap();
    let start: u64 = std::env::var(ENV_START).unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(start.saturating_sub(now_ms())));

    let index = SqliteConfig::new(&path).open().expect("open the index");
    let mut retries = 0;
    match mode.as_str() {
        "open" => {
            let record = sample_record(&test_key("", &format!("child-{id}")));
            retrying(&mut retries, "put", || index.put(record.clone())).await;
        }
        "overlap" => overlap_writer(&index, id, &mut retries).await,
        other => panic!("unknown child mode {other}"),
    }
    println!("\nRETRIES {retries}\nCHILD DONE");
}

async fn overlap_writer(index: &SqliteMetadata, id: u64, retries: &mut u64) {
    for i in 0..ITERATIONS {
        let key = test_key("shared", &format!("k{:02}", (i * 7 + id) % SHARED_KEYS));
        let record = written_record(&key, id, i);
        retrying(retries, "put", || index.put(record.clone())).await;

        let hot = AccessRecord {
            key: test_key("hot", &format!("h{}", i % HOT_KEYS)),
            at: Timestamp(T0.0 + i as i64),
            hits: 1,
        };
        retrying(retries, "record_access", || {
            index.record_access(std::slice::from_ref(&hot))
        })
        .await;

        if i % 9 == 0 {
            let doomed = test_key("shared", &format!("k{:02}", (i * 5) % SHARED_KEYS));
            retrying(retries, "delete", || index.delete(&doomed)).await;
        }
        if i % 25 == 0 {
            retrying(retries, "update_expiry", || {
                index.update_expiry(
                    &key,
                    None,
                    Some(Timestamp(T0.0 + 1_000)),
                    Timestamp(T0.0 + i as i64),
                    None,
                )
            })
            .await;
        }
        if i % 10 == 0 {
            let b = (i / 10) % BLOBS;
            let blob = test_blob_id(b);
            let far = Timestamp(i64::MAX);
            retrying(retries, "reserve_blob", || {
                index.reserve_blob(&blob, 100, far, Timestamp(i64::MIN))
            })
            .await;
            let record = sample_blob_record(&test_key("blobs", &format!("w{id}-b{b}")), &blob, 100);
            retrying(retries, "put blob entry", || index.put(record.clone())).await;
        }
        if i % 50 == 0 {
            let everything = ListQuery::default();
            retrying(retries, "list", || index.list(&everything)).await;
            retrying(retries, "stats", || index.stats()).await;
        }
    }
}

fn retries_of(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.split_once("RETRIES ").map(|(_, n)| n))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .expect("the child reports its retries")
}

#[tokio::test]
async fn processes_opening_a_fresh_file_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let outputs = run_children("open", &path, 4);
    let stdouts = assert_success(&outputs);
    let index = SqliteConfig::new(&path).open().unwrap();
    for id in 0..4 {
        assert!(
            index
                .get(&test_key("", &format!("child-{id}")))
                .await
                .unwrap()
                .is_some()
        );
    }
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let retries: u64 = stdouts.iter().map(|s| retries_of(s)).sum();
    assert_eq!(retries, 0, "opening at once must not surface lock errors");
}

#[tokio::test]
async fn processes_writing_overlapping_keys_leave_a_consistent_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    {
        let index = SqliteConfig::new(&path).open().unwrap();
        for h in 0..HOT_KEYS {
            index
                .put(sample_record(&test_key("hot", &format!("h{h}"))))
                .await
                .unwrap();
        }
    }
    let outputs = run_children("overlap", &path, WRITERS);
    let stdouts = assert_success(&outputs);
    // BEGIN IMMEDIATE + a 5 s busy timeout: writers queue on the lock, none should give up.
    let retries: u64 = stdouts.iter().map(|s| retries_of(s)).sum();
    assert_eq!(
        retries, 0,
        "no write may fail with a lock error under this load"
    );

    let index = SqliteConfig::new(&path).open().unwrap();
    let all = index
        .list(&ListQuery {
            limit: 10_000,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    let mut shared = 0;
    for meta in &all {
        let record = index
            .get(&meta.key)
            .await
            .unwrap()
            .expect("listed entry readable");
        match meta.key.namespace() {
            "shared" => {
                check_written(&record);
                shared += 1;
            }
            "hot" => assert_eq!(
                meta.access_count,
                WRITERS as u64 * ITERATIONS / HOT_KEYS,
                "every hit from every process must be counted on {}",
                meta.key
            ),
            "blobs" => assert!(matches!(meta.location, Location::Blob(_))),
            other => panic!("unexpected namespace {other}"),
        }
    }
    assert!(shared > 0, "some shared keys must survive the deletes");
    let stats = index.stats().await.unwrap();
    assert_eq!(stats.entries, all.len() as u64);
    assert_eq!(stats.blobs, BLOBS);
    assert_eq!(
        index
            .claim_unreferenced_blobs(None, Timestamp(i64::MAX), 100)
            .await
            .unwrap(),
        vec![],
        "every blob is referenced and leased"
    );
    let integrity: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}
