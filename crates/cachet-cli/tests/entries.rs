//! `list`, `show`, `get`, `put`, `rm`: the real binary on caches built in the test.

mod support;

use support::{cachet_at, csv_records, json_lines, noise, sample_cache, stdout_of};

fn keys(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["key"].as_str().unwrap().to_owned())
        .collect()
}

fn list(dir: &std::path::Path, args: &[&str]) -> Vec<serde_json::Value> {
    json_lines(&stdout_of(
        cachet_at(dir).args(["--format", "json", "list"]).args(args),
    ))
}

// ------------------------------------------------------------------------------------ list

#[tokio::test]
async fn list_shows_every_entry_with_exact_values_in_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let rows = list(&s.dir, &[]);
    assert_eq!(rows.len(), 6);
    let report = rows
        .iter()
        .find(|r| r["key"] == s.report_id.as_str())
        .unwrap();
    assert_eq!(report["params"]["report"], "q3");
    assert_eq!(report["data_type"], "msgpack");
    assert_eq!(report["namespace"], "");
    assert_eq!(report["tags"], serde_json::json!(["reports"]));
    assert!(report["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(report["ttl_left_ms"], serde_json::Value::Null);
    let blob = rows
        .iter()
        .find(|r| r["key"] == s.blob_id.as_str())
        .unwrap();
    assert_eq!(blob["raw_bytes"], 100_000);
    assert!(blob["location"].as_str().unwrap().starts_with("blob:"));
    let settings = rows.iter().find(|r| r["key"] == "settings").unwrap();
    let ttl = settings["ttl_left_ms"].as_i64().unwrap();
    assert!(ttl > 6 * 86_400_000 && ttl <= 7 * 86_400_000, "{ttl}");
    let expired = rows.iter().find(|r| r["key"] == "short-lived").unwrap();
    assert!(expired["ttl_left_ms"].as_i64().unwrap() <= 0);
    let model = rows.iter().find(|r| r["key"] == "m-good").unwrap();
    assert_eq!(model["namespace"], "models");
    assert_eq!(model["metadata"]["accuracy"], 0.95);
}

#[tokio::test]
async fn list_as_a_table_has_a_header_and_one_line_per_entry() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let table = stdout_of(cachet_at(&s.dir).arg("list"));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 7, "{table}");
    for header in [
        "KEY",
        "NAMESPACE",
        "TYPE",
        "RAW",
        "STORED",
        "CREATED",
        "ACCESSED",
        "TTL",
        "HITS",
    ] {
        assert!(lines[0].contains(header), "{header} missing: {}", lines[0]);
    }
    let blob_line = lines.iter().find(|l| l.starts_with("raw-blob")).unwrap();
    assert!(blob_line.contains("97.7 KiB"), "{blob_line}");
    let expired = lines.iter().find(|l| l.starts_with("short-lived")).unwrap();
    assert!(
        expired.contains("expired") && expired.contains("10d 0h ago"),
        "{expired}"
    );
    let settings = lines.iter().find(|l| l.starts_with("settings")).unwrap();
    assert!(settings.contains("6d 23h"), "{settings}");
    assert!(!table.contains('\u{1b}'), "no colour when not a terminal");
}

#[tokio::test]
async fn list_as_csv_parses_with_a_header_of_column_keys() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let text = stdout_of(cachet_at(&s.dir).args(["list", "--format", "csv"]));
    let records = csv_records(&text);
    assert_eq!(records.len(), 6);
    let model = records.iter().find(|r| r["key"] == "m-good").unwrap();
    assert_eq!(model["namespace"], "models");
    assert!(model["stored_bytes"].parse::<u64>().unwrap() > 5_000);
    let metadata: serde_json::Value = serde_json::from_str(&model["metadata"]).unwrap();
    assert_eq!(metadata["model"], "xgboost");
    let report = records.iter().find(|r| r["key"] == s.report_id).unwrap();
    assert_eq!(report["ttl_left_ms"], "");
}

#[tokio::test]
async fn list_filters_are_evaluated_by_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let d = &s.dir;
    assert_eq!(
        keys(&list(d, &["--namespace", "models"])),
        ["m-good", "m-poor"]
    );
    assert_eq!(keys(&list(d, &["--prefix", "m-"])), ["m-good", "m-poor"]);
    assert_eq!(keys(&list(d, &["--prefix", "raw"])), ["raw-blob"]);
    assert_eq!(keys(&list(d, &["--tag", "prod"])), ["m-good"]);
    assert_eq!(keys(&list(d, &["--meta", "accuracy>=0.9"])), ["m-good"]);
    assert_eq!(
        keys(&list(d, &["--meta", "model in (linear, mlp)"])),
        ["m-poor"]
    );
    assert_eq!(
        keys(&list(d, &["--param", "report=q3"])),
        [s.report_id.as_str()]
    );
    assert_eq!(keys(&list(d, &["--param", "year>2030"])).len(), 0);
    assert_eq!(keys(&list(d, &["--type", "json"])), ["settings"]);
    assert_eq!(
        keys(&list(d, &["--older-than", "7d"])),
        ["short-lived", "m-poor"]
    );
    assert_eq!(
        keys(&list(d, &["--newer-than", "1d", "--namespace", "models"])),
        ["m-good"]
    );
    assert_eq!(keys(&list(d, &["--larger-than", "50kB"])), ["raw-blob"]);
    assert_eq!(
        keys(&list(
            d,
            &["--smaller-than", "1KiB", "--namespace", "models"]
        )),
        ["m-poor"]
    );
    assert_eq!(keys(&list(d, &["--expired"])), ["short-lived"]);
    assert_eq!(
        keys(&list(
            d,
            &[
                "--namespace",
                "models",
                "--meta",
                "accuracy<0.9",
                "--older-than",
                "1d"
            ]
        )),
        ["m-poor"]
    );
}

#[tokio::test]
async fn list_sorts_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let d = &s.dir;
    let largest = list(d, &["--sort", "size", "--desc", "--limit", "2"]);
    assert_eq!(keys(&largest), ["raw-blob", "m-good"]);
    let oldest = list(d, &["--sort", "created", "--limit", "2"]);
    assert_eq!(oldest.len(), 2);
    assert!(
        keys(&oldest)
            .iter()
            .all(|k| k == "m-poor" || k == "short-lived")
    );
    let all = list(d, &["--sort", "key", "--desc", "--limit", "0"]);
    let mut expected = keys(&list(d, &[]));
    expected.reverse();
    assert_eq!(keys(&all), expected);
    let out = cachet_at(d)
        .args(["list", "--limit", "2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        json_lines_or_table_rows(&out.stdout),
        3,
        "a header and two rows"
    );
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("--limit 0"),
        "a note says there is more: {note}"
    );
    let quiet = cachet_at(d)
        .args(["-q", "list", "--limit", "2"])
        .output()
        .unwrap();
    assert!(quiet.stderr.is_empty(), "-q: no note");
}

fn json_lines_or_table_rows(out: &[u8]) -> usize {
    String::from_utf8_lossy(out).lines().count()
}

#[tokio::test]
async fn verbose_tables_show_expiry_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let table = stdout_of(cachet_at(&s.dir).args(["list", "-v", "--tag", "prod"]));
    assert!(table.lines().next().unwrap().contains("TAGS"), "{table}");
    assert!(table.contains("prod"), "{table}");
}

// ------------------------------------------------------------------------------------ show

#[tokio::test]
async fn show_prints_everything_the_index_knows_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let json: serde_json::Value = serde_json::from_str(&stdout_of(cachet_at(&s.dir).args([
        "show",
        "--namespace",
        "models",
        "m-good",
        "--format",
        "json",
    ])))
    .unwrap();
    assert_eq!(json["key"], "m-good");
    assert_eq!(json["namespace"], "models");
    assert_eq!(json["raw_bytes"], 5_000);
    assert_eq!(json["metadata"]["accuracy"], 0.95);
    assert_eq!(json["tags"], serde_json::json!(["prod"]));
    assert!(json["digest"].as_str().unwrap().starts_with("xxh3-128:"));

    let table = stdout_of(cachet_at(&s.dir).args(["show", &s.report_id]));
    assert!(
        table.contains("params") && table.contains("\"report\":\"q3\""),
        "{table}"
    );
    assert!(table.contains("msgpack"), "{table}");

    let csv = csv_records(&stdout_of(cachet_at(&s.dir).args([
        "show",
        "short-lived",
        "--format",
        "csv",
    ])));
    assert_eq!(csv.len(), 1);
    assert!(
        csv[0]["ttl_left_ms"].parse::<i64>().unwrap() <= 0,
        "shown although expired"
    );
}

#[tokio::test]
async fn show_of_a_missing_key_fails_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let out = cachet_at(&s.dir).args(["show", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no entry with key nope"));
}

// ------------------------------------------------------------------------------------- get

#[tokio::test]
async fn get_renders_serde_values_as_json_and_writes_bytes_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let value: serde_json::Value =
        serde_json::from_str(&stdout_of(cachet_at(&s.dir).args(["get", &s.report_id]))).unwrap();
    assert_eq!(value, serde_json::json!([["north", 1.5], ["south", 2.5]]));
    let file = dir.path().join("out.bin");
    cachet_at(&s.dir)
        .args(["get", &s.blob_id, "-o"])
        .arg(&file)
        .assert()
        .success();
    assert_eq!(std::fs::read(&file).unwrap(), noise(100_000, 1));
    let settings: serde_json::Value =
        serde_json::from_str(&stdout_of(cachet_at(&s.dir).args(["get", "settings"]))).unwrap();
    assert_eq!(settings["threads"], 4);
}

#[tokio::test]
async fn get_of_a_missing_or_expired_key_fails_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    for key in ["no-such-key", "short-lived"] {
        let out = cachet_at(&s.dir).args(["get", key]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{key}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no entry"));
    }
}

#[tokio::test]
async fn get_of_a_damaged_value_fails_instead_of_printing_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let blobs: Vec<_> = walk(&s.dir.join("blobs"));
    assert!(!blobs.is_empty());
    for blob in &blobs {
        let mut bytes = std::fs::read(blob).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(blob, bytes).unwrap();
    }
    let out = cachet_at(&s.dir)
        .args(["get", &s.blob_id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

// ------------------------------------------------------------------------------------- put

#[tokio::test]
async fn put_stores_a_file_with_ttl_tags_and_typed_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("new-cache");
    let file = dir.path().join("model.bin");
    std::fs::write(&file, noise(300_000, 9)).unwrap();
    let printed: serde_json::Value = serde_json::from_str(&stdout_of(
        cachet_at(&cache_dir)
            .args(["--format", "json", "put", "model-v7"])
            .arg(&file)
            .args(["--ttl", "2.5h", "--tag", "models", "--tag", "eu"])
            .args([
                "--meta",
                "accuracy=0.93",
                "--meta",
                "stage=prod",
                "--meta",
                "epochs=12",
            ]),
    ))
    .unwrap();
    assert_eq!(printed["key"], "model-v7");
    assert_eq!(printed["raw_bytes"], 300_000);
    let ttl = printed["ttl_left_ms"].as_i64().unwrap();
    assert!(ttl > 9_000_000 - 60_000 && ttl <= 9_000_000, "{ttl}");

    // Typed: the numbers compare as numbers.
    let rows = list(
        &cache_dir,
        &[
            "--meta",
            "accuracy>0.9",
            "--meta",
            "epochs>=10",
            "--tag",
            "eu",
        ],
    );
    assert_eq!(keys(&rows), ["model-v7"]);
    assert_eq!(rows[0]["metadata"]["stage"], "prod");
    let out = dir.path().join("back.bin");
    cachet_at(&cache_dir)
        .args(["get", "model-v7", "-o"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(std::fs::read(out).unwrap(), noise(300_000, 9));
}

#[tokio::test]
async fn put_reads_stdin_into_a_namespace_and_replaces_an_existing_entry() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    for text in ["first", "second"] {
        cachet_at(&s.dir)
            .args(["-q", "put", "--namespace", "notes", "today", "-"])
            .write_stdin(text)
            .assert()
            .success()
            .stderr("");
    }
    let value = stdout_of(cachet_at(&s.dir).args(["get", "--namespace", "notes", "today"]));
    assert_eq!(value, "second");
    assert_eq!(keys(&list(&s.dir, &["--namespace", "notes"])), ["today"]);
}

#[test]
fn put_of_a_missing_file_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("never");
    let out = cachet_at(&cache_dir)
        .args(["put", "k", "/no/such/file"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file"));
    assert!(!cache_dir.exists());
}

#[test]
fn put_refuses_malformed_options_as_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--ttl", "7 fortnights"][..], "unknown unit"),
        (&["--ttl", "0s"][..], "zero"),
        (&["--meta", "accuracy"][..], "name=value"),
        (&["--meta", "accuracy>=0.9"][..], "name=value"),
    ] {
        let out = cachet_at(dir.path())
            .args(["put", "k", "-"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

// -------------------------------------------------------------------------------------- rm

#[tokio::test]
async fn rm_deletes_several_keys_and_reports_each() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let rows =
        json_lines(&stdout_of(cachet_at(&s.dir).args([
            "--format", "json", "rm", "-n", "models", "m-good", "m-poor",
        ])));
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["removed"] == true && r["namespace"] == "models")
    );
    assert!(list(&s.dir, &["--namespace", "models"]).is_empty());
    assert_eq!(list(&s.dir, &[]).len(), 4);
}

#[tokio::test]
async fn rm_of_a_missing_key_fails_unless_forced_and_still_deletes_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let out = cachet_at(&s.dir)
        .args(["--format", "csv", "rm", "raw-blob", "ghost"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));
    let records = csv_records(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(records[0]["removed"], "true");
    assert_eq!(records[1]["removed"], "false");
    assert!(keys(&list(&s.dir, &[])).iter().all(|k| k != "raw-blob"));
    cachet_at(&s.dir)
        .args(["rm", "--force", "ghost"])
        .assert()
        .success();
}
