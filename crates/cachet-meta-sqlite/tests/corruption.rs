//! Tampered or damaged rows are reported as `Error::Corrupt` naming the entry and the column,
//! never a panic, and can still be overwritten or deleted.

use std::path::Path;

use cachet_core::testing::metadata::{rich_record, sample_record, test_key};
use cachet_core::{CacheKey, Error, ListQuery, MetadataBackend, Timestamp};
use cachet_meta_sqlite::{SqliteConfig, SqliteMetadata};
use rusqlite::Connection;

fn open(path: &Path) -> SqliteMetadata {
    SqliteConfig::new(path).open().expect("open the index")
}

fn tamper(path: &Path, sql: &str, key: &CacheKey) {
    let conn = Connection::open(path).unwrap();
    let changed = conn
        .execute(
            &format!("{sql} WHERE namespace = ?1 AND id = ?2"),
            [key.namespace(), key.id()],
        )
        .unwrap();
    assert_eq!(changed, 1, "the tampering statement must hit the row");
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, Error>, key: &CacheKey, column: &str) {
    match result {
        Err(Error::Corrupt { what, detail }) => {
            assert!(
                what.contains(&key.to_string()) && what.contains(&format!("`{column}`")),
                "Error::Corrupt must name the key {key} and column {column}: {what}: {detail}"
            );
        }
        other => panic!("expected Error::Corrupt for column {column}, got {other:?}"),
    }
}

/// (column, tampering SQL, whether get_meta / list read the column)
const CASES: &[(&str, &str, bool)] = &[
    (
        "digest",
        "UPDATE entries SET digest = 'sha256:not-hex'",
        true,
    ),
    ("digest", "UPDATE entries SET digest = 'md5:00'", true),
    (
        "blob_id",
        "UPDATE entries SET blob_id = '../../etc/passwd'",
        true,
    ),
    (
        "params",
        "UPDATE entries SET params = '{\"unterminated'",
        true,
    ),
    (
        "user_metadata",
        "UPDATE entries SET user_metadata = '[1,'",
        true,
    ),
    ("tags", "UPDATE entries SET tags = '{\"a\": 1}'", true),
    ("tags", "UPDATE entries SET tags = '[1, 2]'", true),
    (
        "compression",
        "UPDATE entries SET compression = 'brotli'",
        true,
    ),
    ("raw_size", "UPDATE entries SET raw_size = -5", true),
    (
        "stored_size",
        "UPDATE entries SET stored_size = 'big'",
        true,
    ),
    ("access_count", "UPDATE entries SET access_count = -1", true),
    ("created_at", "UPDATE entries SET created_at = 1.5", true),
    (
        "expires_at",
        "UPDATE entries SET expires_at = 'tomorrow'",
        true,
    ),
    ("data_type", "UPDATE entries SET data_type = X'00ff'", true),
    ("type_name", "UPDATE entries SET type_name = X'ff'", true),
    (
        "signature",
        "UPDATE entries SET signature = CAST(X'ff00' AS TEXT)",
        true,
    ),
    (
        "inline_data",
        "UPDATE entries SET inline_data = 'text, not bytes'",
        false,
    ),
];

#[tokio::test]
async fn tampered_columns_yield_corrupt_naming_key_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let index = open(&path);
    for (i, (column, sql, in_meta)) in CASES.iter().enumerate() {
        let key = test_key("tampered", &format!("case-{i}-{column}"));
        index.put(rich_record(&key)).await.unwrap();
        tamper(&path, sql, &key);

        assert_corrupt(index.get(&key).await, &key, column);
        if *in_meta {
            assert_corrupt(index.get_meta(&key).await, &key, column);
            assert_corrupt(
                index
                    .list(&ListQuery::matching(
                        cachet_core::EntryFilter::all().namespace("tampered"),
                    ))
                    .await,
                &key,
                column,
            );
        } else {
            assert!(index.get_meta(&key).await.unwrap().is_some());
        }
        // Repair by overwriting: a row whose metadata is corrupt is replaced and reported as
        // no previous entry (its metadata cannot be returned).
        let fresh = sample_record(&key);
        let replaced = index.put(fresh.clone()).await.unwrap();
        if *in_meta {
            assert_eq!(replaced, None);
        } else {
            assert_eq!(replaced, Some(rich_record(&key).meta));
        }
        assert_eq!(index.get(&key).await.unwrap(), Some(fresh));
    }
}

#[tokio::test]
async fn corrupt_row_can_still_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let index = open(&path);
    let key = test_key("", "doomed");
    index.put(sample_record(&key)).await.unwrap();
    tamper(&path, "UPDATE entries SET digest = 'garbage'", &key);
    assert_eq!(index.delete(&key).await.unwrap(), None);
    assert_eq!(index.get(&key).await.unwrap(), None);
}

#[tokio::test]
async fn corrupt_blob_registry_id_yields_corrupt_from_claim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let index = open(&path);
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO blobs (id, size, lease_until, claimed_at) \
             VALUES ('not/a/blob', 1, 0, NULL)",
            [],
        )
        .unwrap();
    match index
        .claim_unreferenced_blobs(None, Timestamp(10), 10)
        .await
    {
        Err(Error::Corrupt { what, detail }) => {
            assert!(detail.contains("not/a/blob"), "{what}: {detail}")
        }
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn negative_size_in_a_row_makes_stats_corrupt_not_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let index = open(&path);
    let key = test_key("", "negative");
    index.put(sample_record(&key)).await.unwrap();
    tamper(&path, "UPDATE entries SET raw_size = -1000000", &key);
    assert!(matches!(index.stats().await, Err(Error::Corrupt { .. })));
}

#[tokio::test]
async fn damaged_file_pages_are_reported_as_corrupt_or_backend_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let keys: Vec<CacheKey> = (0..300)
        .map(|i| test_key("", &format!("k{i:04}")))
        .collect();
    {
        let index = open(&path);
        for key in &keys {
            index.put(rich_record(key)).await.unwrap();
        }
        index.flush().await.unwrap();
    }
    // Overwrite every page but the header page with garbage.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8192, "the index must span several pages");
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(&path, &bytes).unwrap();
    let Ok(index) = SqliteConfig::new(&path).open() else {
        return; // refusing to open a damaged file is fine too
    };
    for key in &keys {
        match index.get(key).await {
            Ok(_) | Err(Error::Corrupt { .. }) | Err(Error::Backend { .. }) => {}
            Err(other) => panic!("unexpected error class for a damaged file: {other:?}"),
        }
    }
    assert!(
        index.get(&keys[0]).await.is_err() || index.stats().await.is_err(),
        "a file with every data page overwritten cannot read back cleanly"
    );
}

/// A row whose JSON columns are damaged matches no condition on them (rather than failing the
/// statement), so filtered lists and deletes keep working for the rest of the index; a filter
/// that selects the row without reading those columns still deletes it.
#[tokio::test]
async fn damaged_json_matches_no_field_or_tag_condition_and_blocks_no_filtered_delete() {
    use cachet_core::{EntryFilter, FieldCondition};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let index = open(&path);
    let damaged = test_key("fields", "damaged");
    let sound = test_key("fields", "sound");
    for key in [&damaged, &sound] {
        index.put(rich_record(key)).await.unwrap();
    }
    tamper(
        &path,
        "UPDATE entries SET params = '{\"unterminated', user_metadata = '[1,', \
         tags = 'not json'",
        &damaged,
    );
    let in_fields = EntryFilter::all().namespace("fields");
    for filter in [
        in_fields.clone().param(FieldCondition::exists("dataset")),
        in_fields.clone().param(FieldCondition::eq("window", 30)),
        in_fields
            .clone()
            .metadata(FieldCondition::eq("owner", "data-team")),
        in_fields.clone().tag("sales"),
    ] {
        let listed = index
            .list(&ListQuery::matching(filter.clone()))
            .await
            .unwrap();
        assert_eq!(listed, vec![rich_record(&sound).meta], "{filter:?}");
    }
    let deleted = index
        .delete_matching(
            &in_fields.clone().param(FieldCondition::exists("dataset")),
            10,
        )
        .await
        .unwrap();
    assert_eq!(deleted, vec![rich_record(&sound).meta]);
    assert_corrupt(index.get(&damaged).await, &damaged, "tags");
    // Selected by namespace alone, the damaged row is deleted (and not returned: its metadata
    // cannot be decoded).
    assert_eq!(index.delete_matching(&in_fields, 10).await.unwrap(), vec![]);
    assert_eq!(index.get(&damaged).await.unwrap(), None);
}
