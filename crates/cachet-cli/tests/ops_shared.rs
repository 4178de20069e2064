//! `migrate` from a local cache into PostgreSQL + S3, and `query`, `verify`, `cleanup`,
//! `export` on that shared cache. Needs the test services (`cargo xtask services up`);
//! skipped without them, except under CI.

#![cfg(all(feature = "postgres", feature = "s3"))]

mod ops_support;

use cachet::{Cache, params};
use ops_support::*;

/// A fresh shared cache (its own PostgreSQL schema and S3 prefix), as the cache crate's
/// shared-backend tests make them.
#[allow(dead_code)] // the module's other helpers
#[path = "../../cachet-cache/tests/support/shared.rs"]
mod shared_urls;
use shared_urls::fresh_cache_urls;

fn shared(index: &str, blobs: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--index", index, "--blobs", blobs];
    all.extend_from_slice(args);
    cachet_raw(&all)
}

async fn local_cache(dir: &std::path::Path) {
    let cache = Cache::open(dir).await.unwrap();
    for i in 0..20u64 {
        cache
            .insert_bytes(format!("blob-{i:02}").as_str(), noise(200_000, i))
            .with_tag(if i % 2 == 0 { "even" } else { "odd" })
            .await
            .unwrap();
    }
    cache
        .insert(&params! { "model" => "xgb" }, &vec![1.5f64; 8])
        .with_meta("accuracy", 0.9)
        .await
        .unwrap();
    cache
        .insert_bytes("inline", b"small".to_vec())
        .await
        .unwrap();
    cache.flush().await.unwrap();
}

#[tokio::test]
async fn migrate_moves_a_local_cache_into_postgres_and_s3_resumably() {
    let Some((index, blobs)) = fresh_cache_urls("migrate") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    local_cache(dir.path()).await;

    let migrate = |extra: &[&str]| {
        let mut args = vec![
            "--format",
            "json",
            "migrate",
            "--to-index",
            &index,
            "--to-blobs",
            &blobs,
        ];
        args.extend_from_slice(extra);
        cachet(dir.path(), &args)
    };
    let out = migrate(&["--verify"]);
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(report["copied"], 22, "{report}");
    assert_eq!(report["target_damaged"], 0, "{report}");
    assert!(
        !report["target"].as_str().unwrap().contains("password"),
        "{report}"
    );

    let again = json_doc(&migrate(&[]));
    assert_eq!(
        (again["copied"].as_u64(), again["already_present"].as_u64()),
        (Some(0), Some(22))
    );

    expect_code(&shared(&index, &blobs, &["verify"]), 0);
    let got = shared(&index, &blobs, &["get", "blob-07"]);
    expect_code(&got, 0);
    assert_eq!(got.stdout, noise(200_000, 7));

    // The same rows on both sides.
    let sql = "SELECT namespace, id, raw_size, digest FROM entries ORDER BY namespace, id";
    let local = json_lines(&cachet(dir.path(), &["--format", "json", "query", sql]));
    let remote = json_lines(&shared(&index, &blobs, &["--format", "json", "query", sql]));
    assert_eq!(local, remote);
}

#[tokio::test]
async fn query_on_postgres_answers_a_select_and_refuses_writes() {
    let Some((index, blobs)) = fresh_cache_urls("query") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    local_cache(dir.path()).await;
    expect_code(
        &cachet(
            dir.path(),
            &["-q", "migrate", "--to-index", &index, "--to-blobs", &blobs],
        ),
        0,
    );

    let out = shared(
        &index,
        &blobs,
        &[
            "--format",
            "csv",
            "query",
            "SELECT count(*) AS n, sum(raw_size) AS raw, max(user_metadata_jsonb->>'accuracy') \
             AS best, bool_or(blob_id IS NULL) AS any_inline FROM entries",
        ],
    );
    expect_code(&out, 0);
    let (header, rows) = csv_rows(&out);
    assert_eq!(header, ["n", "raw", "best", "any_inline"]);
    assert_eq!(rows[0][0], "22");
    assert_eq!(rows[0][2], "0.9");
    assert_eq!(rows[0][3], "true");

    let json = json_lines(&shared(
        &index,
        &blobs,
        &[
            "--format",
            "json",
            "query",
            "SELECT id, raw_size, tags FROM entries WHERE id = 'blob-03'",
        ],
    ));
    assert_eq!(json[0]["raw_size"], 200_000, "integers typed: {json:?}");
    assert_eq!(json[0]["tags"], "{odd}");

    for sql in [
        "DELETE FROM entries",
        "UPDATE entries SET raw_size = 0",
        "SELECT 1; DELETE FROM entries",
        "COMMIT; DELETE FROM entries",
    ] {
        let out = shared(&index, &blobs, &["query", sql]);
        assert_ne!(out.status.code(), Some(0), "{sql} was not refused");
        assert!(stderr(&out).contains("refused"), "{sql}: {}", stderr(&out));
    }
    let count = shared(
        &index,
        &blobs,
        &["--format", "csv", "query", "SELECT count(*) FROM entries"],
    );
    assert_eq!(csv_rows(&count).1[0][0], "22");
}

#[tokio::test]
async fn cleanup_and_export_work_on_postgres_and_s3() {
    let Some((index, blobs)) = fresh_cache_urls("cleanup") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    local_cache(dir.path()).await;
    expect_code(
        &cachet(
            dir.path(),
            &["-q", "migrate", "--to-index", &index, "--to-blobs", &blobs],
        ),
        0,
    );

    let out = shared(
        &index,
        &blobs,
        &["--format", "json", "cleanup", "--max-size", "1MB"],
    );
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert!(
        report["size_after"].as_u64().unwrap() <= 1_000_000,
        "{report}"
    );
    assert!(
        report["evicted_entries"].as_u64().unwrap() >= 15,
        "{report}"
    );

    let archive = dir.path().join("shared.tar");
    let out = shared(
        &index,
        &blobs,
        &["--format", "json", "export", archive.to_str().unwrap()],
    );
    expect_code(&out, 0);
    let left = 22 - report["evicted_entries"].as_u64().unwrap();
    assert_eq!(json_doc(&out)["entries"], left);
    expect_code(&shared(&index, &blobs, &["verify"]), 0);
}
