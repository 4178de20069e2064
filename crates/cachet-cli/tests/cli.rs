//! The `cachet` binary as a whole: global options, where the cache comes from, exit codes,
//! help, `inspect`, `stats`, `completions`, `demo`. Run for real against caches built here.

mod support;

use support::{cachet, cachet_at, csv_records, sample_cache, stdout_of};

/// Every command of this part of the tool, with an option its help must name.
const COMMANDS: &[(&str, &str)] = &[
    ("inspect", "--format"),
    ("list", "--older-than"),
    ("stats", "--cache"),
    ("show", "--namespace"),
    ("get", "--output"),
    ("put", "--ttl"),
    ("rm", "--force"),
    ("completions", "fish"),
    ("demo", "--size-mib"),
];

// ------------------------------------------------------------------------------ inspect

#[tokio::test]
async fn inspect_summarises_the_cache_for_people() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let text = stdout_of(cachet_at(&s.dir).arg("inspect"));
    for expected in [
        "index           sqlite at",
        "blobs           fs at",
        "entries         6 (",
        "raw size",
        "stored size",
        "compression",
        "dedup saved",
        "oldest entry    10d 0h ago",
        "expired         1 (",
        "namespaces      2",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[tokio::test]
async fn inspect_as_json_and_csv_carries_exact_values() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let json: serde_json::Value = serde_json::from_str(&stdout_of(
        cachet_at(&s.dir).args(["inspect", "--format", "json"]),
    ))
    .unwrap();
    assert_eq!(json["index"]["backend"], "sqlite");
    assert_eq!(json["blobs"]["backend"], "fs");
    assert_eq!(json["entries"], 6);
    assert_eq!(json["expired"], 1);
    assert_eq!(json["namespaces"], 2);
    assert_eq!(
        json["blob_count"], 1,
        "only the 100,000 incompressible bytes need a blob"
    );
    assert!(json["stored_bytes"].as_u64().unwrap() > 100_000);
    assert!(json["oldest"].as_str().unwrap() < json["newest"].as_str().unwrap());
    assert_eq!(json["dedup_saved_bytes"], 0);
    let csv = csv_records(&stdout_of(
        cachet_at(&s.dir).args(["inspect", "--format", "csv"]),
    ));
    assert_eq!(csv.len(), 1);
    assert_eq!(csv[0]["entries"], "6");
}

#[tokio::test]
async fn inspect_counts_what_deduplication_saves() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cachet::Cache::open(dir.path()).await.unwrap();
    let value = support::noise(200_000, 5);
    cache.insert_bytes("a", value.clone()).await.unwrap();
    cache.insert_bytes("b", value).await.unwrap();
    cache.flush().await.unwrap();
    drop(cache);
    let json: serde_json::Value = serde_json::from_str(&stdout_of(
        cachet_at(dir.path()).args(["--format", "json", "inspect"]),
    ))
    .unwrap();
    assert_eq!(json["blob_count"], 1);
    let saved = json["dedup_saved_bytes"].as_u64().unwrap();
    assert!(saved >= 200_000, "{json}");
}

// -------------------------------------------------------------------------------- stats

#[tokio::test]
async fn stats_breaks_down_by_type_namespace_age_and_size_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let json: serde_json::Value = serde_json::from_str(&stdout_of(
        cachet_at(&s.dir).args(["stats", "--format", "json"]),
    ))
    .unwrap();
    assert_eq!(json["totals"]["entries"], 6);
    assert_eq!(json["totals"]["expired"], 1);
    let bucket = |group: &str, key: &str, label: &str| -> serde_json::Value {
        json[group]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b[key] == label)
            .unwrap_or_else(|| panic!("{group} {label} in {json}"))
            .clone()
    };
    assert_eq!(bucket("by_data_type", "data_type", "bytes")["entries"], 4);
    assert_eq!(bucket("by_data_type", "data_type", "msgpack")["entries"], 1);
    assert_eq!(bucket("by_data_type", "data_type", "json")["entries"], 1);
    assert_eq!(bucket("by_namespace", "namespace", "models")["entries"], 2);
    assert_eq!(bucket("by_namespace", "namespace", "")["entries"], 4);
    assert_eq!(bucket("by_age", "age", "<1h")["entries"], 4);
    assert_eq!(bucket("by_age", "age", "7d-30d")["entries"], 2);
    assert_eq!(bucket("by_age", "age", "7d-30d")["expired"], 1);
    assert_eq!(bucket("by_size", "size", "<1 KiB")["entries"], 4);
    assert_eq!(bucket("by_size", "size", "1 KiB-1 MiB")["entries"], 2);
}

#[tokio::test]
async fn stats_counts_the_reads_the_index_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    for _ in 0..3 {
        cachet_at(&s.dir)
            .args(["get", "raw-blob"])
            .assert()
            .success();
    }
    let csv = csv_records(&stdout_of(
        cachet_at(&s.dir).args(["stats", "--format", "csv"]),
    ));
    let total = csv.iter().find(|r| r["group"] == "total").unwrap();
    assert_eq!(total["entries"], "6");
    assert_eq!(total["hits"], "3", "{csv:?}");
    assert!(
        csv.iter()
            .any(|r| r["group"] == "size" && r["bucket"] == ">=1 GiB")
    );
}

#[tokio::test]
async fn stats_text_reads_like_a_human_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let text = stdout_of(cachet_at(&s.dir).arg("stats"));
    assert!(text.contains("entries          6"), "{text}");
    assert!(text.contains("KiB"), "{text}");
    assert!(
        text.contains("GROUP") && text.contains("namespace  models"),
        "{text}"
    );
}

// ---------------------------------------------------------------- where the cache comes from

#[tokio::test]
async fn the_cache_directory_can_come_from_cachet_cache() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let rows = stdout_of(
        cachet()
            .env("CACHET_CACHE", &s.dir)
            .args(["list", "--format", "csv"]),
    );
    assert_eq!(csv_records(&rows).len(), 6);
}

#[tokio::test]
async fn index_and_blob_urls_open_the_same_cache() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_cache(dir.path()).await;
    let index = format!("sqlite://{}", s.dir.join("index.sqlite").display());
    let blobs = format!("file://{}", s.dir.join("blobs").display());
    let by_flags = stdout_of(cachet().args([
        "--index", &index, "--blobs", &blobs, "--format", "csv", "list",
    ]));
    assert_eq!(csv_records(&by_flags).len(), 6);
    let by_env = stdout_of(
        cachet()
            .env("CACHET_INDEX", &index)
            .env("CACHET_BLOBS", &blobs)
            .args(["--format", "json", "inspect"]),
    );
    let json: serde_json::Value = serde_json::from_str(&by_env).unwrap();
    assert_eq!(json["entries"], 6);
    assert!(
        json["index"]["location"]
            .as_str()
            .unwrap()
            .starts_with("sqlite://")
    );
}

#[test]
fn half_a_url_pair_or_a_mix_is_a_usage_error() {
    let out = cachet()
        .args(["--index", "sqlite:///tmp/x.db", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--blobs"));
    let out = cachet()
        .args([
            "--cache",
            "/tmp",
            "--index",
            "sqlite:///x",
            "--blobs",
            "file:///y",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    let out = cachet()
        .env("CACHET_BLOBS", "file:///y")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CACHET_INDEX"));
}

#[test]
fn a_directory_that_is_not_a_cache_is_reported_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["inspect", "stats", "list"] {
        let out = cachet_at(dir.path()).arg(command).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{command}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no cachet cache"));
    }
    assert!(!dir.path().join("index.sqlite").exists(), "nothing created");
}

// ------------------------------------------------------------------- bad arguments, help

#[test]
fn bad_arguments_are_usage_errors_with_a_helpful_message() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["list", "--limit", "many"][..], "invalid value 'many'"),
        (&["list", "--larger-than", "12 parsecs"][..], "KiB"),
        (&["list", "--older-than", "7 fortnights"][..], "2.5h"),
        (&["list", "--meta", "accuracy"][..], "field>=value"),
        (&["list", "--sort", "colour"][..], "possible values"),
        (&["list", "--type", "xml"][..], "possible values"),
        (
            &["--format", "yaml", "list"][..],
            "possible values: table, json, csv",
        ),
        (&["show"][..], "<KEY>"),
        (&["rm"][..], "<KEY>"),
        (&["completions", "tcsh"][..], "possible values"),
        (&["frobnicate"][..], "unrecognized subcommand"),
        (&["-q", "-v", "list"][..], "cannot be used with"),
    ] {
        let out = cachet_at(dir.path()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--help"),
            "{args:?} points at --help: {stderr}"
        );
    }
}

#[test]
fn every_command_has_help_that_names_its_options() {
    for (command, option) in COMMANDS {
        let out = cachet().args([command, "--help"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{command}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains(&format!("Usage: cachet {command}")), "{help}");
        assert!(
            help.contains(option),
            "{command} --help lacks {option}:\n{help}"
        );
        assert!(
            help.contains("--format"),
            "global options are listed: {help}"
        );
    }
}

#[test]
fn top_level_help_lists_every_command_and_the_exit_codes() {
    let help = stdout_of(cachet().arg("--help"));
    for (command, _) in COMMANDS {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing:\n{help}"
        );
    }
    assert!(help.contains("Exit codes: 0 success, 1 failure"), "{help}");
    assert!(help.contains("CACHET_CACHE"), "{help}");
    let version = stdout_of(cachet().arg("--version"));
    assert!(version.starts_with("cachet "), "{version}");
}

// ---------------------------------------------------------------------------- completions

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cachet"),
        ("fish", "complete -c cachet"),
    ] {
        let script = stdout_of(cachet().args(["completions", shell]));
        assert!(script.contains(marker), "{shell}: {script:.200}");
        assert!(
            script.contains("inspect") && script.contains("older-than"),
            "{shell}"
        );
    }
}

// ----------------------------------------------------------------------------------- demo

#[test]
fn demo_runs_end_to_end_on_a_small_size() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let text = stdout_of(
        cachet()
            .args([
                "demo",
                "--size-mib",
                "8",
                "--primes-below",
                "100000",
                "--dir",
            ])
            .arg(&demo_dir),
    );
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
    let out = cachet()
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(dir.path().join("precious.txt").exists());
}
