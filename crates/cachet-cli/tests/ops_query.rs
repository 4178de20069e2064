//! `cachet query`: read-only SQL on the index, in every format; writes refused.

mod ops_support;

use std::path::Path;

use cachet::{Cache, params};
use ops_support::*;

/// Three entries: a blob, a serde value with params, tags and metadata, an inline value.
async fn sample_cache(dir: &Path) {
    let cache = Cache::open(dir).await.unwrap();
    cache.insert_bytes("big", noise(150_000, 1)).await.unwrap();
    cache
        .insert(&params! { "model" => "xgb", "day" => 3 }, &vec![0.5f64; 10])
        .with_tag("nightly")
        .with_meta("accuracy", 0.93)
        .await
        .unwrap();
    cache.insert_bytes("small", b"tiny".to_vec()).await.unwrap();
    cache.flush().await.unwrap();
}

fn refused(dir: &Path, sql: &str) -> String {
    let out = cachet(dir, &["query", sql]);
    expect_code(&out, 2);
    assert_eq!(stdout(&out), "", "nothing runs");
    stderr(&out)
}

#[tokio::test]
async fn query_answers_a_select_as_json_lines_with_typed_values() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;

    let out = cachet(
        dir.path(),
        &[
            "--format",
            "json",
            "query",
            "SELECT id, raw_size, 2.5 AS ratio, NULL AS empty, x'0aff' AS bytes, \
             inline_data FROM entries WHERE id IN ('big', 'small') ORDER BY id",
        ],
    );
    expect_code(&out, 0);
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], "big");
    assert_eq!(rows[0]["raw_size"], 150_000, "integers stay numbers");
    assert_eq!(rows[0]["ratio"], 2.5);
    assert!(rows[0]["empty"].is_null());
    assert_eq!(rows[0]["bytes"], "x'0aff'", "a short blob as hex");
    assert!(
        rows[0]["inline_data"].is_null(),
        "a blob entry has no inline data"
    );
    let inline = rows[1]["inline_data"].as_str().unwrap();
    assert!(
        inline.starts_with("x'") || inline.starts_with("<blob: "),
        "{inline}"
    );
}

#[tokio::test]
async fn query_answers_a_select_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;

    let out = cachet(
        dir.path(),
        &[
            "--format",
            "csv",
            "query",
            "SELECT data_type, count(*) AS entries, sum(raw_size) AS raw FROM entries \
             GROUP BY data_type ORDER BY data_type",
        ],
    );
    expect_code(&out, 0);
    let (header, rows) = csv_rows(&out);
    assert_eq!(header, ["data_type", "entries", "raw"]);
    assert_eq!(rows[0], ["bytes", "2", "150004"]);
    assert_eq!(rows[1][0], "msgpack");
}

#[tokio::test]
async fn query_prints_a_table_under_the_column_names() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;

    let out = cachet(
        dir.path(),
        &[
            "query",
            "SELECT entries.id, tags FROM entries, json_each(entries.tags) WHERE json_each.value = 'nightly'",
        ],
    );
    expect_code(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("id") && lines[0].contains("tags"),
        "{text}"
    );
    assert!(lines[1].contains("[\"nightly\"]"), "{text}");
}

#[tokio::test]
async fn query_refuses_a_delete_and_the_index_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;

    let message = refused(dir.path(), "DELETE FROM entries");
    assert!(message.contains("refused"), "{message}");
    assert!(message.contains("only reads"), "{message}");
    assert_eq!(index_keys(dir.path()).len(), 3);
}

#[tokio::test]
async fn query_refuses_an_update() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;

    let message = refused(dir.path(), "UPDATE entries SET raw_size = 0");
    assert!(message.contains("writes"), "{message}");
    let out = cachet(
        dir.path(),
        &[
            "--format",
            "csv",
            "query",
            "SELECT min(raw_size) FROM entries",
        ],
    );
    assert_ne!(csv_rows(&out).1[0][0], "0");
}

#[tokio::test]
async fn query_refuses_attach() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;
    let other = dir.path().join("other.db");

    let message = refused(
        dir.path(),
        &format!("ATTACH '{}' AS other", other.display()),
    );
    assert!(message.contains("attaches"), "{message}");
    assert!(!other.exists(), "no database was created");
}

#[tokio::test]
async fn query_refuses_several_statements_even_if_the_first_reads() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;

    let message = refused(dir.path(), "SELECT 1; DELETE FROM entries");
    assert!(message.contains("more than one statement"), "{message}");
    assert_eq!(index_keys(dir.path()).len(), 3);
}

#[tokio::test]
async fn query_refuses_vacuum_into_and_pragma_writes() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;
    let copy = dir.path().join("copy.db");

    refused(dir.path(), &format!("VACUUM INTO '{}'", copy.display()));
    refused(dir.path(), "PRAGMA user_version = 99");
    assert!(!copy.exists());
}

#[tokio::test]
async fn query_with_invalid_sql_fails_with_sqlites_message() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;

    let out = cachet(dir.path(), &["query", "SELECT * FROM no_such_table"]);
    expect_code(&out, 1);
    assert!(stderr(&out).contains("no such table"), "{}", stderr(&out));
}

#[tokio::test]
async fn query_stops_at_max_rows_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;

    let out = cachet(
        dir.path(),
        &[
            "--format",
            "json",
            "query",
            "--max-rows",
            "2",
            "SELECT id FROM entries",
        ],
    );
    expect_code(&out, 0);
    assert_eq!(json_lines(&out).len(), 2);
    assert!(stderr(&out).contains("--max-rows"), "{}", stderr(&out));
}

#[test]
fn query_without_sql_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    expect_code(&cachet(dir.path(), &["query"]), 2);
}

#[test]
fn query_help_explains_the_schema_with_examples() {
    let out = cachet_raw(&["query", "--help"]);
    expect_code(&out, 0);
    let help = stdout(&out);
    for column in [
        "entries",
        "namespace",
        "params",
        "blob_id",
        "raw_size",
        "stored_size",
        "digest",
        "accessed_at",
        "expires_at",
        "tags",
        "user_metadata",
        "blobs",
        "lease_until",
        "claimed_at",
    ] {
        assert!(
            help.contains(column),
            "--help does not mention {column}:\n{help}"
        );
    }
    assert!(help.matches("cachet query \"SELECT").count() >= 2, "{help}");
    assert!(help.contains("read-only"), "{help}");
}

#[tokio::test]
async fn query_reads_the_index_an_index_url_names() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path()).await;
    let index = format!("sqlite://{}", dir.path().join("index.sqlite").display());
    let blobs = format!("file://{}", dir.path().join("blobs").display());

    let out = cachet_raw(&[
        "--index",
        &index,
        "--blobs",
        &blobs,
        "--format",
        "csv",
        "query",
        "SELECT count(*) AS n FROM entries",
    ]);
    expect_code(&out, 0);
    assert_eq!(csv_rows(&out).1, [["3"]]);
}
