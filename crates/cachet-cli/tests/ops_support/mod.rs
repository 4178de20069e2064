//! Fixtures of the `ops*` tests: the real `cachet` binary, caches built for the test.

#![allow(dead_code, reason = "each ops test file uses part of the fixtures")]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use cachet::{BlobId, Cache, ManualClock, Timestamp};

/// `cachet --cache DIR ARGS...`, without the caller's `CACHET_*` environment.
pub fn cachet(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::cargo_bin("cachet").expect("the cachet binary");
    cmd.arg("--cache").arg(dir).args(args);
    clean_env(&mut cmd);
    cmd.output().expect("run cachet")
}

/// `cachet ARGS...` (the caller gives the cache options).
pub fn cachet_raw(args: &[&str]) -> Output {
    let mut cmd = Command::cargo_bin("cachet").expect("the cachet binary");
    cmd.args(args);
    clean_env(&mut cmd);
    cmd.output().expect("run cachet")
}

/// `cachet --cache DIR ARGS...` with `stdin` fed in.
pub fn cachet_stdin(dir: &Path, args: &[&str], stdin: Vec<u8>) -> Output {
    let mut cmd = Command::cargo_bin("cachet").expect("the cachet binary");
    cmd.arg("--cache").arg(dir).args(args).write_stdin(stdin);
    clean_env(&mut cmd);
    cmd.output().expect("run cachet")
}

fn clean_env(cmd: &mut Command) {
    for var in ["CACHET_CACHE", "CACHET_INDEX", "CACHET_BLOBS", "NO_COLOR"] {
        cmd.env_remove(var);
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Panics with the command's stderr unless it exited with `code`.
#[track_caller]
pub fn expect_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit code {code}\n--- stdout\n{}\n--- stderr\n{}",
        stdout(o),
        stderr(o)
    );
}

/// JSON lines (a listing in `--format json`).
#[track_caller]
pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// One JSON document (a record in `--format json`).
#[track_caller]
pub fn json_doc(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// CSV: the header and the records.
#[track_caller]
pub fn csv_rows(o: &Output) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_reader(o.stdout.as_slice());
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

/// Deterministic incompressible bytes: stored as a blob, never inline.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    (0..len.div_ceil(8) as u64)
        .flat_map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed).to_le_bytes())
        .take(len)
        .collect()
}

/// A cache in `dir` whose clock the test moves.
pub async fn cache_with_clock(dir: &Path, start: Timestamp) -> (Cache, ManualClock) {
    let clock = ManualClock::new(start);
    let cache = Cache::builder()
        .directory(dir)
        .clock(Arc::new(clock.clone()))
        .build()
        .await
        .unwrap();
    (cache, clock)
}

/// Where the blob of an entry lives in a cache directory.
pub fn blob_file(dir: &Path, blob: &BlobId) -> PathBuf {
    dir.join("blobs")
        .join(blob.algorithm())
        .join(blob.shard())
        .join(blob.hex())
}

/// Every file under `dir` with its bytes, sorted: to show that a command changed nothing.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

/// The index's rows, read through SQLite directly: (namespace, id) in key order.
pub fn index_keys(dir: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("index.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT namespace, id FROM entries ORDER BY namespace, id")
        .unwrap();
    stmt.query_map([], |r| {
        let ns: String = r.get(0)?;
        let id: String = r.get(1)?;
        Ok(if ns.is_empty() {
            id
        } else {
            format!("{ns}/{id}")
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// One hour.
pub const HOUR: Duration = Duration::from_secs(3600);

/// Fills `dir` with what the archive and migrate tests move: a 300,000-byte blob, a serde
/// value with params, a tag and typed metadata (expiring after `value_ttl`, if given), an
/// inline value, and an entry in another namespace.
pub async fn sample_cache(dir: &Path, value_ttl: Option<Duration>) {
    let cache = Cache::open(dir).await.unwrap();
    cache.insert_bytes("big", noise(300_000, 1)).await.unwrap();
    let scores = vec![0.5f64; 10];
    let value = cache
        .insert(&cachet::params! { "model" => "xgb", "day" => 3 }, &scores)
        .with_tag("nightly")
        .with_meta("accuracy", 0.93);
    match value_ttl {
        Some(ttl) => value.with_ttl(ttl).await.unwrap(),
        None => value.await.unwrap(),
    };
    cache.insert_bytes("small", b"tiny".to_vec()).await.unwrap();
    let models = Cache::builder()
        .directory(dir)
        .namespace("models")
        .build()
        .await
        .unwrap();
    models
        .insert_bytes("latest", noise(50_000, 2))
        .await
        .unwrap();
    cache.flush().await.unwrap();
    models.flush().await.unwrap();
}

/// The `columns` of every entry of `dir`'s index in key order (what is compared across
/// caches).
pub fn entries(dir: &Path, columns: &str) -> Vec<serde_json::Value> {
    json_lines(&cachet(
        dir,
        &[
            "--format",
            "json",
            "query",
            &format!("SELECT {columns} FROM entries ORDER BY namespace, id"),
        ],
    ))
}
