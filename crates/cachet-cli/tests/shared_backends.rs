//! The CLI on the shared setup: a PostgreSQL index and S3 blobs given by `--index` /
//! `--blobs` (or `CACHET_INDEX` / `CACHET_BLOBS`). Needs the test services
//! (`cargo xtask services up`); skipped without them, except under CI.

#![cfg(all(feature = "postgres", feature = "s3"))]

mod support;

use support::{cachet, csv_records, json_lines, noise, stdout_of};

/// A fresh shared cache (its own PostgreSQL schema and S3 prefix), as the cache crate's
/// shared-backend tests make them.
#[allow(dead_code)] // the module's other helpers
#[path = "../../cachet-cache/tests/support/shared.rs"]
mod shared_urls;
use shared_urls::fresh_cache_urls;

fn shared(index: &str, blobs: &str) -> assert_cmd::Command {
    let mut cmd = cachet();
    cmd.args(["--index", index, "--blobs", blobs]);
    cmd
}

#[test]
fn every_entry_command_works_on_postgres_and_s3() {
    let Some((index, blobs)) = fresh_cache_urls("entries") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weights.bin");
    std::fs::write(&file, noise(400_000, 7)).unwrap();

    shared(&index, &blobs)
        .args(["-q", "put", "--namespace", "models", "w-7"])
        .arg(&file)
        .args(["--ttl", "1d", "--tag", "prod", "--meta", "accuracy=0.97"])
        .assert()
        .success();
    shared(&index, &blobs)
        .args(["-q", "put", "note", "-"])
        .write_stdin("small enough to live in the index")
        .assert()
        .success();

    let rows = json_lines(&stdout_of(shared(&index, &blobs).args([
        "--format",
        "json",
        "list",
        "--meta",
        "accuracy>0.9",
    ])));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["key"], "w-7");
    assert!(rows[0]["location"].as_str().unwrap().starts_with("blob:"));

    let back = dir.path().join("back.bin");
    shared(&index, &blobs)
        .args(["get", "-n", "models", "w-7", "-o"])
        .arg(&back)
        .assert()
        .success();
    assert_eq!(std::fs::read(&back).unwrap(), noise(400_000, 7));

    let shown: serde_json::Value = serde_json::from_str(&stdout_of(
        shared(&index, &blobs).args(["--format", "json", "show", "-n", "models", "w-7"]),
    ))
    .unwrap();
    assert_eq!(shown["tags"], serde_json::json!(["prod"]));

    // The same cache through the environment.
    let inspect: serde_json::Value = serde_json::from_str(&stdout_of(
        cachet()
            .env("CACHET_INDEX", &index)
            .env("CACHET_BLOBS", &blobs)
            .args(["--format", "json", "inspect"]),
    ))
    .unwrap();
    assert_eq!(inspect["index"]["backend"], "postgres");
    assert_eq!(inspect["blobs"]["backend"], "s3");
    assert_eq!(inspect["entries"], 2);

    let stats = csv_records(&stdout_of(
        shared(&index, &blobs).args(["--format", "csv", "stats"]),
    ));
    let total = stats.iter().find(|r| r["group"] == "total").unwrap();
    assert_eq!(total["entries"], "2");
    assert_eq!(total["hits"], "1", "the get above was recorded");

    shared(&index, &blobs)
        .args(["rm", "-n", "models", "w-7"])
        .assert()
        .success();
    let rows = json_lines(&stdout_of(
        shared(&index, &blobs).args(["--format", "json", "list"]),
    ));
    assert_eq!(rows.len(), 1);
}

#[test]
fn a_bad_url_fails_with_a_message_naming_the_option() {
    let out = cachet()
        .args([
            "--index",
            "mysql://db/cache",
            "--blobs",
            "memory://",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("index") && stderr.contains("postgres://"),
        "{stderr}"
    );
}
