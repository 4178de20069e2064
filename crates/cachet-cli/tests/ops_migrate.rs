//! `cachet migrate` into another local cache: every entry copied and verified, a second run
//! copies nothing, an interrupted run resumes with only the rest, damaged entries reported.

mod ops_support;

use std::path::Path;
use std::time::{Duration, Instant};

use cachet::Cache;
use ops_support::*;

/// The entry columns compared across caches (where and when an entry was stored may differ).
const COMPARED: &str =
    "namespace, id, params, data_type, raw_size, digest, expires_at, tags, user_metadata";

fn migrate(src: &Path, target: &Path) -> std::process::Output {
    cachet(
        src,
        &[
            "--format",
            "json",
            "migrate",
            "--to-cache",
            target.to_str().unwrap(),
        ],
    )
}

#[tokio::test]
async fn migrate_copies_every_entry_into_another_cache_and_verifies_it() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_cache(src.path(), Some(HOUR)).await;
    let target = dst.path().join("cache");

    let out = cachet(
        src.path(),
        &[
            "--format",
            "json",
            "migrate",
            "--to-cache",
            target.to_str().unwrap(),
            "--verify",
        ],
    );
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(report["copied"], 4, "{report}");
    assert_eq!(report["already_present"], 0);
    assert_eq!(report["damaged"], serde_json::json!([]));
    assert_eq!(report["target_verified"], 4);
    assert_eq!(report["target_damaged"], 0);
    assert!(report["raw_bytes"].as_u64().unwrap() >= 350_000, "{report}");

    assert_eq!(entries(&target, COMPARED), entries(src.path(), COMPARED));
    let big = cachet(&target, &["get", "big"]);
    expect_code(&big, 0);
    assert_eq!(big.stdout, noise(300_000, 1));
    expect_code(&cachet(&target, &["verify"]), 0);
}

#[tokio::test]
async fn migrate_again_copies_nothing() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_cache(src.path(), Some(HOUR)).await;
    expect_code(&migrate(src.path(), dst.path()), 0);

    let out = migrate(src.path(), dst.path());
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(
        (
            report["copied"].as_u64(),
            report["already_present"].as_u64()
        ),
        (Some(0), Some(4))
    );
}

#[tokio::test]
async fn migrate_after_a_partial_copy_copies_only_the_rest() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_cache(src.path(), Some(HOUR)).await;
    // A first, partial run: the `models` namespace only (through an archive).
    let part = src.path().join("part.tar");
    expect_code(
        &cachet(
            src.path(),
            &["export", "--namespace", "models", part.to_str().unwrap()],
        ),
        0,
    );
    expect_code(&cachet(dst.path(), &["import", part.to_str().unwrap()]), 0);

    let out = migrate(src.path(), dst.path());
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(report["copied"], 3, "{report}");
    assert_eq!(report["already_present"], 1, "{report}");
    assert_eq!(entries(dst.path(), COMPARED), entries(src.path(), COMPARED));
}

#[tokio::test]
async fn migrate_keeps_a_target_entry_with_other_content_unless_overwrite() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_cache(src.path(), Some(HOUR)).await;
    let target = Cache::open(dst.path()).await.unwrap();
    target
        .insert_bytes("small", b"theirs".to_vec())
        .await
        .unwrap();
    target.flush().await.unwrap();
    drop(target);

    let report = json_doc(&migrate(src.path(), dst.path()));
    assert_eq!(report["kept_existing"], 1, "{report}");
    assert_eq!(cachet(dst.path(), &["get", "small"]).stdout, b"theirs");

    let out = cachet(
        src.path(),
        &[
            "--format",
            "json",
            "migrate",
            "--to-cache",
            dst.path().to_str().unwrap(),
            "--overwrite",
        ],
    );
    expect_code(&out, 0);
    assert_eq!(json_doc(&out)["copied"], 1);
    assert_eq!(cachet(dst.path(), &["get", "small"]).stdout, b"tiny");
}

#[tokio::test]
async fn migrate_reports_a_damaged_source_entry_and_exits_1() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_cache(src.path(), Some(HOUR)).await;
    let cache = Cache::open(src.path()).await.unwrap();
    let meta = cache.metadata("big").await.unwrap().unwrap();
    drop(cache);
    let blob = blob_file(src.path(), meta.location.blob_id().unwrap());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[200_000] ^= 0x10;
    std::fs::write(&blob, bytes).unwrap();

    let out = migrate(src.path(), dst.path());
    expect_code(&out, 1);
    let report = json_doc(&out);
    assert_eq!(report["copied"], 3, "{report}");
    assert_eq!(report["damaged"][0]["key"], "big", "{report}");
    assert!(
        stderr(&out).contains("damaged, not copied: big"),
        "{}",
        stderr(&out)
    );
    assert!(!index_keys(dst.path()).contains(&"big".to_owned()));
}

#[test]
fn migrate_without_a_target_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = cachet(dir.path(), &["migrate"]);
    expect_code(&out, 2);
    assert!(stderr(&out).contains("--to-index"), "{}", stderr(&out));
    let out = cachet(dir.path(), &["migrate", "--to-index", "sqlite:///tmp/x.db"]);
    expect_code(&out, 2);
    assert!(stderr(&out).contains("--to-blobs"), "{}", stderr(&out));
}

/// Entries in the target's index so far (0 while it does not exist yet or is locked).
fn target_count(dir: &Path) -> usize {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        dir.join("index.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0;
    };
    conn.query_row("SELECT count(*) FROM entries", [], |r| r.get::<_, i64>(0))
        .map(|n| n as usize)
        .unwrap_or(0)
}

#[tokio::test]
async fn a_migrate_killed_midway_resumes_and_copies_only_the_rest() {
    const ENTRIES: usize = 400;
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cache = Cache::open(src.path()).await.unwrap();
    for i in 0..ENTRIES {
        cache
            .insert_bytes(format!("part-{i:04}").as_str(), noise(64 << 10, i as u64))
            .await
            .unwrap();
    }
    cache.flush().await.unwrap();
    drop(cache);

    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("cachet"))
        .arg("--cache")
        .arg(src.path())
        .args(["-q", "migrate", "--to-cache"])
        .arg(dst.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while target_count(dst.path()) < 20 && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let copied_before = target_count(dst.path());
    assert!(
        (1..ENTRIES).contains(&copied_before),
        "the kill should land mid-way; {copied_before} of {ENTRIES} were copied"
    );

    let out = migrate(src.path(), dst.path());
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(report["already_present"], copied_before as u64, "{report}");
    assert_eq!(
        report["copied"],
        (ENTRIES - copied_before) as u64,
        "{report}"
    );
    assert_eq!(target_count(dst.path()), ENTRIES);
    let verified = cachet(dst.path(), &["--format", "json", "verify"]);
    expect_code(&verified, 0);
    let damaged: Vec<_> = json_lines(&verified)
        .into_iter()
        .filter(|p| p["kind"] != "unreferenced")
        .collect();
    assert!(damaged.is_empty(), "{damaged:?}");
}
