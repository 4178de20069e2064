//! The `cachet` binary, run for real against caches built in the test.

use std::path::Path;
use std::process::{Command, Output};

use cachet::{Cache, params};

fn cachet(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cachet"))
        .arg("--cache")
        .arg(cache)
        .args(args)
        .env_remove("CACHET_CACHE")
        .output()
        .expect("run cachet")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// 100,000 incompressible bytes: stored as a blob, not inline.
fn blob_bytes() -> Vec<u8> {
    (0..12_500u64)
        .flat_map(|i| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()).to_le_bytes())
        .collect()
}

async fn sample_cache(dir: &Path) -> (String, String) {
    let cache = Cache::open(dir).await.unwrap();
    let value_key = params! { "report" => "q3", "year" => 2026 };
    let meta = cache
        .insert(&value_key, &vec![("north", 1.5), ("south", 2.5)])
        .await
        .unwrap();
    let bytes_meta = cache.insert_bytes("raw-blob", blob_bytes()).await.unwrap();
    cache.flush().await.unwrap();
    (meta.key.id().to_owned(), bytes_meta.key.id().to_owned())
}

#[tokio::test]
async fn stats_reports_entries_and_sizes_as_json() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;
    let out = cachet(dir.path(), &["stats", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(stats["entries"], 2);
    assert_eq!(stats["blobs"], 1);
    assert!(
        stats["stored_bytes"].as_u64().unwrap() >= stats["raw_bytes"].as_u64().unwrap(),
        "{stats}"
    );
    assert!(
        stats["blob_bytes"].as_u64().unwrap() > 100_000,
        "random bytes do not shrink: {stats}"
    );
    assert_eq!(stats["inline_entries"], 1);
    assert_eq!(stats["dedup_saved_bytes"], 0);
}

#[tokio::test]
async fn stats_text_reads_like_a_human_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;
    let out = cachet(dir.path(), &["stats"]);
    let text = stdout(&out);
    assert!(text.contains("entries         2"), "{text}");
    assert!(text.contains("KiB"), "{text}");
}

#[tokio::test]
async fn list_shows_every_entry_with_its_params() {
    let dir = tempfile::tempdir().unwrap();
    let (value_id, bytes_id) = sample_cache(dir.path()).await;
    let out = cachet(dir.path(), &["list", "--format", "json"]);
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    let value_row = rows
        .iter()
        .find(|r| r["key"] == value_id.as_str())
        .expect("value entry listed");
    assert_eq!(value_row["params"]["report"], "q3");
    assert_eq!(value_row["data_type"], "msgpack");
    let bytes_row = rows
        .iter()
        .find(|r| r["key"] == bytes_id.as_str())
        .expect("bytes entry listed");
    assert_eq!(bytes_row["raw_bytes"], 100_000);
    let table = stdout(&cachet(dir.path(), &["list"]));
    assert!(table.starts_with("KEY"), "{table}");
    assert_eq!(table.lines().count(), 3);
}

#[tokio::test]
async fn get_renders_serde_values_as_json_and_writes_bytes_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (value_id, bytes_id) = sample_cache(dir.path()).await;
    let out = cachet(dir.path(), &["get", &value_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(value, serde_json::json!([["north", 1.5], ["south", 2.5]]));
    let file = dir.path().join("out.bin");
    let out = cachet(
        dir.path(),
        &["get", &bytes_id, "-o", file.to_str().unwrap()],
    );
    assert!(out.status.success());
    assert_eq!(std::fs::read(&file).unwrap(), blob_bytes());
}

#[tokio::test]
async fn get_of_a_missing_key_fails_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;
    let out = cachet(dir.path(), &["get", "no-such-key"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no entry"));
}

#[test]
fn a_directory_that_is_not_a_cache_is_reported_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = cachet(dir.path(), &["stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cachet cache"));
}

#[test]
fn bad_arguments_are_a_usage_error_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = cachet(dir.path(), &["list", "--limit", "many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value"));
}

#[test]
fn demo_runs_end_to_end_on_a_small_size() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_cachet"))
        .args([
            "demo",
            "--size-mib",
            "8",
            "--primes-below",
            "100000",
            "--dir",
        ])
        .arg(&demo_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    for expected in [
        "memoize",
        "9592 primes",
        "miss",
        "hit",
        "random",
        "arange",
        "GiB/s",
        "peak memory",
        "entries",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !demo_dir.exists(),
        "the demo cleans up after itself unless --keep"
    );
}

#[test]
fn demo_refuses_to_empty_a_directory_that_is_not_a_cache() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), b"keep me").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cachet"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(dir.path().join("precious.txt").exists());
}
