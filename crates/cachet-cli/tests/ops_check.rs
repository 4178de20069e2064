//! `cachet verify`, `repair` and `gc` on real caches, some of them damaged on disk.

mod ops_support;

use std::path::Path;

use cachet::Cache;
use ops_support::*;

/// A cache with two sound entries (a blob and an inline value), one whose blob has a flipped
/// byte (`flipped`) and one whose blob file is gone (`gone`).
async fn damaged_cache(dir: &Path) {
    let cache = Cache::open(dir).await.unwrap();
    cache.insert_bytes("good", noise(200_000, 1)).await.unwrap();
    cache.insert_bytes("small", b"tiny".to_vec()).await.unwrap();
    let flipped = cache
        .insert_bytes("flipped", noise(200_000, 2))
        .await
        .unwrap();
    let gone = cache.insert_bytes("gone", noise(200_000, 3)).await.unwrap();
    cache.flush().await.unwrap();
    drop(cache);

    let path = blob_file(dir, flipped.location.blob_id().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100_000] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    std::fs::remove_file(blob_file(dir, gone.location.blob_id().unwrap())).unwrap();
}

/// The blob files and the index rows, to show that a command changed nothing (SQLite's own
/// `-shm` bookkeeping may change on open; the rows may not).
fn state(dir: &Path) -> (Vec<(std::path::PathBuf, Vec<u8>)>, Vec<String>) {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("index.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT * FROM entries ORDER BY namespace, id")
        .unwrap();
    let width = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            Ok((0..width)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (snapshot(&dir.join("blobs")), rows)
}

#[tokio::test]
async fn verify_of_a_sound_cache_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    cache.insert_bytes("a", noise(100_000, 1)).await.unwrap();
    cache.insert("b", &vec![1u32, 2, 3]).await.unwrap();
    cache.flush().await.unwrap();
    drop(cache);

    let out = cachet(dir.path(), &["verify"]);
    expect_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "",
        "a clean table run prints only the summary (stderr)"
    );
    assert!(
        stderr(&out).contains("checked 2 entries"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("0 damaged"), "{}", stderr(&out));
}

#[tokio::test]
async fn verify_names_each_damaged_entry_and_the_reason_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    damaged_cache(dir.path()).await;

    let out = cachet(dir.path(), &["verify", "--format", "json"]);
    expect_code(&out, 1);
    let problems = json_lines(&out);
    assert_eq!(problems.len(), 2, "{problems:?}");
    let flipped = problems.iter().find(|p| p["key"] == "flipped").unwrap();
    assert_eq!(flipped["kind"], "corrupt");
    assert!(
        flipped["reason"].as_str().unwrap().contains("flipped"),
        "the reason names the key: {flipped}"
    );
    let gone = problems.iter().find(|p| p["key"] == "gone").unwrap();
    assert_eq!(gone["kind"], "missing-blob");
    assert!(
        gone["reason"].as_str().unwrap().contains("missing"),
        "{gone}"
    );
    assert!(
        stderr(&out).contains("2 damaged entries found"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn verify_table_lists_key_and_reason_per_line() {
    let dir = tempfile::tempdir().unwrap();
    damaged_cache(dir.path()).await;

    let out = cachet(dir.path(), &["verify"]);
    expect_code(&out, 1);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("PROBLEM"), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("corrupt") && l.contains("flipped")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("missing-blob") && l.contains("gone")),
        "{text}"
    );
}

#[tokio::test]
async fn verify_as_csv_parses_with_one_record_per_problem() {
    let dir = tempfile::tempdir().unwrap();
    damaged_cache(dir.path()).await;

    let out = cachet(dir.path(), &["--format", "csv", "verify"]);
    expect_code(&out, 1);
    let (header, rows) = csv_rows(&out);
    assert_eq!(header, ["kind", "key", "blob", "reason"]);
    let mut keys: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["flipped", "gone"]);
}

#[tokio::test]
async fn quick_verify_finds_the_missing_blob_without_reading_values() {
    let dir = tempfile::tempdir().unwrap();
    damaged_cache(dir.path()).await;

    let out = cachet(dir.path(), &["verify", "--quick", "--format", "json"]);
    expect_code(&out, 1);
    let problems = json_lines(&out);
    // A flipped byte keeps the blob's size: only a full read sees it.
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["key"], "gone");
    assert_eq!(problems[0]["kind"], "missing-blob");
}

#[tokio::test]
async fn repair_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    damaged_cache(dir.path()).await;
    let before = state(dir.path());

    let out = cachet(dir.path(), &["repair", "--dry-run", "--format", "json"]);
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["entries_removed"], 2, "{report}");
    assert_eq!(report["problems"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(
        state(dir.path()),
        before,
        "a dry run changes no file and no row"
    );
    expect_code(&cachet(dir.path(), &["verify"]), 1);
}

#[tokio::test]
async fn repair_removes_the_damaged_entries_and_then_verify_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    damaged_cache(dir.path()).await;

    let out = cachet(dir.path(), &["repair", "--format", "json"]);
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["entries_removed"], 2, "{report}");
    assert!(
        stderr(&out).contains("removed corrupt entry"),
        "{}",
        stderr(&out)
    );

    expect_code(&cachet(dir.path(), &["verify"]), 0);
    assert_eq!(index_keys(dir.path()), ["good", "small"]);
    let good = cachet(dir.path(), &["get", "good"]);
    expect_code(&good, 0);
    assert_eq!(good.stdout, noise(200_000, 1));
}

#[tokio::test]
async fn repair_table_reports_what_it_removed() {
    let dir = tempfile::tempdir().unwrap();
    damaged_cache(dir.path()).await;

    let out = cachet(dir.path(), &["repair", "--dry-run"]);
    expect_code(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("entries removed"), "{text}");
    assert!(
        stderr(&out).contains("would remove missing-blob entry"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("dry run: nothing was changed"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn gc_deletes_a_blob_no_entry_references() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    let meta = cache.insert_bytes("a", noise(100_000, 9)).await.unwrap();
    cache.flush().await.unwrap();
    drop(cache);
    // A blob file the index does not know (a crash between publishing and committing).
    let blob = blob_file(dir.path(), meta.location.blob_id().unwrap());
    let name = blob.file_name().unwrap().to_str().unwrap();
    let last = if name.ends_with('0') { '1' } else { '0' };
    let stray = blob.with_file_name(format!("{}{last}", &name[..name.len() - 1]));
    std::fs::copy(&blob, &stray).unwrap();

    let out = cachet(dir.path(), &["gc", "--format", "json"]);
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(report["orphans_deleted"], 1, "{report}");
    assert!(!stray.exists());
    assert!(blob.exists(), "the referenced blob stays");
    let csv = cachet(dir.path(), &["gc", "--format", "csv"]);
    expect_code(&csv, 0);
    let (header, rows) = csv_rows(&csv);
    assert_eq!(
        header,
        [
            "blobs_deleted",
            "orphans_deleted",
            "temporaries_removed",
            "bytes_freed"
        ]
    );
    assert_eq!(rows.len(), 1);
    expect_code(&cachet(dir.path(), &["verify"]), 0);
}

#[tokio::test]
async fn verify_of_a_missing_cache_fails_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = cachet(&dir.path().join("nope"), &["verify"]);
    expect_code(&out, 1);
    assert!(stderr(&out).contains("no cachet cache"), "{}", stderr(&out));
}

#[test]
fn verify_rejects_a_zero_concurrency_as_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = cachet(dir.path(), &["verify", "--concurrency", "0"]);
    expect_code(&out, 2);
}
