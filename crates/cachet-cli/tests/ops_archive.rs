//! `cachet export` and `cachet import`: a round trip through a file and through a pipe,
//! filters, and archives that are cut or damaged.

mod ops_support;

use cachet::Cache;
use ops_support::*;

/// The size of `sample_cache`'s blob.
const BIG: usize = 300_000;

/// The entry columns compared across caches (where an entry is stored may differ).
const COMPARED: &str = "namespace, id, params, data_type, raw_size, digest, created_at, \
     expires_at, tags, user_metadata";

#[tokio::test]
async fn export_then_import_round_trips_every_entry_into_a_fresh_cache() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_cache(src.path(), None).await;
    let archive = src.path().join("backup.tar");
    let target = dst.path().join("cache");

    let out = cachet(
        src.path(),
        &["--format", "json", "export", archive.to_str().unwrap()],
    );
    expect_code(&out, 0);
    let exported = json_doc(&out);
    assert_eq!(exported["entries"], 4, "{exported}");
    assert_eq!(exported["damaged"], serde_json::json!([]));
    assert_eq!(
        exported["archive_bytes"].as_u64().unwrap(),
        std::fs::metadata(&archive).unwrap().len()
    );
    assert!(!src.path().join("backup.tar.partial").exists());

    let out = cachet(
        &target,
        &["--format", "json", "import", archive.to_str().unwrap()],
    );
    expect_code(&out, 0);
    let imported = json_doc(&out);
    assert_eq!(imported["imported"], 4, "{imported}");
    assert_eq!(imported["rejected"], serde_json::json!([]));

    assert_eq!(entries(&target, COMPARED), entries(src.path(), COMPARED));
    let big = cachet(&target, &["get", "big"]);
    expect_code(&big, 0);
    assert_eq!(big.stdout, noise(BIG, 1));
    expect_code(&cachet(&target, &["verify"]), 0);

    // Again: everything is already there.
    let again = json_doc(&cachet(
        &target,
        &["--format", "json", "import", archive.to_str().unwrap()],
    ));
    assert_eq!(
        (
            again["imported"].as_u64(),
            again["already_present"].as_u64()
        ),
        (Some(0), Some(4))
    );
}

#[tokio::test]
async fn export_to_stdout_pipes_into_import_from_stdin() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_cache(src.path(), None).await;

    let out = cachet(src.path(), &["export", "-"]);
    expect_code(&out, 0);
    assert!(out.stdout.len() > BIG, "stdout is the archive");
    assert!(
        stderr(&out).contains("entries"),
        "the report goes to stderr: {}",
        stderr(&out)
    );

    let imported = cachet_stdin(dst.path(), &["--format", "json", "import", "-"], out.stdout);
    expect_code(&imported, 0);
    assert_eq!(json_doc(&imported)["imported"], 4);
    assert_eq!(entries(dst.path(), COMPARED), entries(src.path(), COMPARED));
}

#[tokio::test]
async fn export_takes_the_list_filters() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_cache(src.path(), None).await;
    let archive = src.path().join("models.tar");

    let out = cachet(
        src.path(),
        &[
            "--format",
            "json",
            "export",
            "--namespace",
            "models",
            archive.to_str().unwrap(),
        ],
    );
    expect_code(&out, 0);
    assert_eq!(json_doc(&out)["entries"], 1);
    let tagged = cachet(
        src.path(),
        &["--format", "json", "export", "--tag", "nightly", "-"],
    );
    expect_code(&tagged, 0);

    expect_code(
        &cachet(dst.path(), &["import", archive.to_str().unwrap()]),
        0,
    );
    assert_eq!(index_keys(dst.path()), ["models/latest"]);
}

#[tokio::test]
async fn export_refuses_to_replace_a_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path(), None).await;
    let archive = dir.path().join("backup.tar");
    std::fs::write(&archive, b"precious").unwrap();

    let out = cachet(dir.path(), &["export", archive.to_str().unwrap()]);
    expect_code(&out, 2);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&archive).unwrap(), b"precious");

    expect_code(
        &cachet(
            dir.path(),
            &["export", "--force", archive.to_str().unwrap()],
        ),
        0,
    );
    assert!(std::fs::metadata(&archive).unwrap().len() > BIG as u64);
}

#[tokio::test]
async fn a_truncated_archive_fails_with_a_clear_message_and_keeps_complete_entries() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_cache(src.path(), None).await;
    let archive = src.path().join("backup.tar");
    expect_code(
        &cachet(src.path(), &["export", archive.to_str().unwrap()]),
        0,
    );
    let bytes = std::fs::read(&archive).unwrap();
    // Cut inside the value of `models/latest`, the last entry in key order.
    let cut = src.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() - 30_000]).unwrap();

    let out = cachet(dst.path(), &["import", cut.to_str().unwrap()]);
    expect_code(&out, 1);
    let message = stderr(&out);
    assert!(message.contains("truncated"), "{message}");
    assert!(
        message.contains("import again"),
        "says what to do: {message}"
    );
    assert_eq!(index_keys(dst.path()).len(), 3, "the complete entries stay");
    assert!(!index_keys(dst.path()).contains(&"models/latest".to_owned()));
    expect_code(&cachet(dst.path(), &["verify"]), 0);

    // The whole archive completes the import.
    let out = cachet(
        dst.path(),
        &["--format", "json", "import", archive.to_str().unwrap()],
    );
    expect_code(&out, 0);
    let report = json_doc(&out);
    assert_eq!(
        (
            report["imported"].as_u64(),
            report["already_present"].as_u64()
        ),
        (Some(1), Some(3))
    );
}

#[tokio::test]
async fn a_file_that_is_not_an_archive_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();

    let out = cachet(
        &dir.path().join("cache"),
        &["import", junk.to_str().unwrap()],
    );
    expect_code(&out, 1);
    assert!(stderr(&out).contains("not a"), "{}", stderr(&out));
}

#[tokio::test]
async fn import_rejects_a_damaged_entry_by_key_and_imports_the_others() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_cache(src.path(), None).await;
    let archive = src.path().join("backup.tar");
    expect_code(
        &cachet(src.path(), &["export", archive.to_str().unwrap()]),
        0,
    );
    let mut bytes = std::fs::read(&archive).unwrap();
    // Flip one byte of `big`'s value (incompressible: stored as it is).
    let needle = &noise(BIG, 1)[150_000..150_064];
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the value is in the archive");
    bytes[at + 10] ^= 0x01;
    std::fs::write(&archive, bytes).unwrap();

    let out = cachet(
        dst.path(),
        &["--format", "json", "import", archive.to_str().unwrap()],
    );
    expect_code(&out, 1);
    let report = json_doc(&out);
    assert_eq!(report["imported"], 3, "{report}");
    let rejected = report["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{report}");
    assert_eq!(rejected[0]["key"], "big");
    assert!(!rejected[0]["reason"].as_str().unwrap().is_empty());
    assert!(stderr(&out).contains("rejected big"), "{}", stderr(&out));
    assert!(!index_keys(dst.path()).contains(&"big".to_owned()));
}

#[tokio::test]
async fn export_of_a_damaged_cache_reports_the_entry_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    sample_cache(dir.path(), None).await;
    let cache = Cache::open(dir.path()).await.unwrap();
    let meta = cache.metadata("big").await.unwrap().unwrap();
    drop(cache);
    std::fs::remove_file(blob_file(dir.path(), meta.location.blob_id().unwrap())).unwrap();

    let archive = dir.path().join("backup.tar");
    let out = cachet(
        dir.path(),
        &["--format", "json", "export", archive.to_str().unwrap()],
    );
    expect_code(&out, 1);
    let report = json_doc(&out);
    assert_eq!(report["entries"], 3, "{report}");
    assert_eq!(report["damaged"][0]["key"], "big", "{report}");
    assert!(archive.exists(), "the sound entries are exported");
}

#[tokio::test]
async fn import_and_export_print_readable_tables() {
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sample_cache(src.path(), None).await;
    let archive = src.path().join("backup.tar");

    let out = cachet(src.path(), &["export", archive.to_str().unwrap()]);
    expect_code(&out, 0);
    assert!(stdout(&out).contains("archive size"), "{}", stdout(&out));
    let out = cachet(
        dst.path(),
        &["--format", "csv", "import", archive.to_str().unwrap()],
    );
    expect_code(&out, 0);
    let (header, rows) = csv_rows(&out);
    assert_eq!(
        rows[0][header.iter().position(|h| h == "imported").unwrap()],
        "4"
    );
}
