//! `cachet cleanup`: expired entries, `--max-size` eviction (least recently accessed first,
//! shared blobs counted once) and `--dry-run`.

mod ops_support;

use std::path::Path;
use std::time::Duration;

use cachet::Timestamp;
use ops_support::*;

const SIZE: usize = 100_000;

/// Four 100 kB blob entries whose last accesses are, oldest first: b, c, a, d.
async fn lru_cache(dir: &Path) {
    let (cache, clock) = cache_with_clock(dir, Timestamp::now().minus(HOUR)).await;
    for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
        cache
            .insert_bytes(key, noise(SIZE, i as u64))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(1));
    }
    for key in ["c", "a", "d"] {
        clock.advance(Duration::from_secs(60));
        assert!(cache.get_bytes(key).await.unwrap().is_some());
        cache.flush().await.unwrap();
    }
}

#[tokio::test]
async fn max_size_evicts_the_least_recently_accessed_entries_down_to_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    lru_cache(dir.path()).await;

    // Four blobs of a little over 100 kB: two must go.
    let out = cachet(
        dir.path(),
        &["--format", "json", "cleanup", "--max-size", "250kB"],
    );
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(
        report["evicted_keys"],
        serde_json::json!(["b", "c"]),
        "{report}"
    );
    assert_eq!(report["evicted_entries"], 2);
    assert!(
        report["size_before"].as_u64().unwrap() > 4 * SIZE as u64,
        "{report}"
    );
    assert!(
        report["size_after"].as_u64().unwrap() <= 250_000,
        "{report}"
    );
    assert_eq!(
        report["size_before"].as_u64().unwrap() - report["evicted_bytes"].as_u64().unwrap(),
        report["size_after"].as_u64().unwrap()
    );
    assert_eq!(index_keys(dir.path()), ["a", "d"]);
    // Their blob files are gone too.
    let blob_files = snapshot(&dir.path().join("blobs")).len();
    assert_eq!(blob_files, 2);
}

#[tokio::test]
async fn max_size_dry_run_names_what_would_go_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    lru_cache(dir.path()).await;
    let blobs_before = snapshot(&dir.path().join("blobs"));

    let out = cachet(
        dir.path(),
        &[
            "--format",
            "json",
            "cleanup",
            "--max-size",
            "250kB",
            "--dry-run",
        ],
    );
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(report["dry_run"], true);
    assert_eq!(
        report["evicted_keys"],
        serde_json::json!(["b", "c"]),
        "{report}"
    );
    assert_eq!(index_keys(dir.path()), ["a", "b", "c", "d"]);
    assert_eq!(snapshot(&dir.path().join("blobs")), blobs_before);
}

#[tokio::test]
async fn a_quota_the_cache_already_fits_evicts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    lru_cache(dir.path()).await;

    let out = cachet(
        dir.path(),
        &["--format", "json", "cleanup", "--max-size", "1GiB"],
    );
    expect_code(&out, 0);
    assert_eq!(json_doc(&out)["evicted_entries"], 0);
    assert_eq!(index_keys(dir.path()).len(), 4);
}

#[tokio::test]
async fn a_blob_shared_by_two_entries_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = cache_with_clock(dir.path(), Timestamp::now().minus(HOUR)).await;
    cache.insert_bytes("copy-1", noise(SIZE, 7)).await.unwrap();
    clock.advance(Duration::from_secs(1));
    cache.insert_bytes("copy-2", noise(SIZE, 7)).await.unwrap();
    clock.advance(Duration::from_secs(1));
    cache.insert_bytes("other", noise(SIZE, 8)).await.unwrap();
    cache.flush().await.unwrap();
    drop(cache);

    // Two blobs (~200 kB), not three entries' worth (~300 kB): a 250 kB quota already fits.
    let out = cachet(
        dir.path(),
        &["--format", "json", "cleanup", "--max-size", "250kB"],
    );
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert!(
        report["size_before"].as_u64().unwrap() < 250_000,
        "{report}"
    );
    assert_eq!(report["evicted_entries"], 0);

    // At 150 kB one blob must go: evicting copy-1 alone frees nothing (copy-2 still holds the
    // blob), so both copies go.
    let out = cachet(
        dir.path(),
        &["--format", "json", "cleanup", "--max-size", "150kB"],
    );
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(
        report["evicted_keys"],
        serde_json::json!(["copy-1", "copy-2"]),
        "{report}"
    );
    assert_eq!(index_keys(dir.path()), ["other"]);
}

/// An entry that expired an hour ago (by the real clock) and one that never expires.
async fn expiring_cache(dir: &Path) {
    let (cache, _clock) = cache_with_clock(dir, Timestamp::now().minus(2 * HOUR)).await;
    cache
        .insert_bytes("old", noise(SIZE, 1))
        .with_ttl(HOUR)
        .await
        .unwrap();
    cache
        .insert_bytes("fresh", b"keep me".to_vec())
        .await
        .unwrap();
    cache.flush().await.unwrap();
}

#[tokio::test]
async fn cleanup_deletes_expired_entries() {
    let dir = tempfile::tempdir().unwrap();
    expiring_cache(dir.path()).await;

    let out = cachet(dir.path(), &["--format", "json", "cleanup"]);
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(report["expired_entries"], 1, "{report}");
    assert_eq!(report["expired_keys"], serde_json::json!(["old"]));
    assert!(
        report.get("evicted_entries").is_none(),
        "no quota, no eviction fields"
    );
    assert_eq!(index_keys(dir.path()), ["fresh"]);
    assert!(
        snapshot(&dir.path().join("blobs")).is_empty(),
        "the blob went with it"
    );
}

#[tokio::test]
async fn cleanup_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    expiring_cache(dir.path()).await;
    let blobs_before = snapshot(&dir.path().join("blobs"));

    let out = cachet(dir.path(), &["--format", "json", "cleanup", "--dry-run"]);
    expect_code(&out, 0);
    assert_eq!(json_doc(&out)["expired_keys"], serde_json::json!(["old"]));
    assert_eq!(index_keys(dir.path()), ["fresh", "old"]);
    assert_eq!(snapshot(&dir.path().join("blobs")), blobs_before);
}

#[tokio::test]
async fn cleanup_prints_a_readable_summary_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    lru_cache(dir.path()).await;

    let out = cachet(dir.path(), &["cleanup", "--max-size", "250kB", "--dry-run"]);
    expect_code(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("evicted entries"), "{text}");
    assert!(text.contains("KiB"), "sizes for people: {text}");
    assert!(stderr(&out).contains("dry run"), "{}", stderr(&out));

    let csv = cachet(
        dir.path(),
        &[
            "--format",
            "csv",
            "cleanup",
            "--max-size",
            "250kB",
            "--dry-run",
        ],
    );
    expect_code(&csv, 0);
    let (header, rows) = csv_rows(&csv);
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows[0][column("evicted_entries")], "2");
    assert_eq!(rows[0][column("max_size")], "250000");
}

#[test]
fn a_size_that_does_not_parse_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = cachet(dir.path(), &["cleanup", "--max-size", "10 parsecs"]);
    expect_code(&out, 2);
    assert!(stderr(&out).contains("10 parsecs"), "{}", stderr(&out));
}
