//! Integrity: a tampered or corrupt entry is never returned. It is a miss (counted and logged),
//! or the typed error in strict mode.
#![cfg(all(feature = "meta-sqlite", feature = "blob-fs"))]

mod common;

use std::path::Path;

use cachet_cache::Cache;
use cachet_core::{Error, MetadataBackend, params};
use cachet_meta_sqlite::SqliteMetadata;
use cachet_storage::SigningKey;

fn key_a() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32]).unwrap()
}

async fn signed(dir: &Path, strict: bool) -> Cache {
    Cache::builder()
        .directory(dir)
        .signing_key(key_a())
        .strict_integrity(strict)
        .build()
        .await
        .unwrap()
}

/// Changes an entry's row behind the cache's back, as someone with write access to the index
/// but not the key would: here, extending its expiry.
async fn tamper_with_row(dir: &Path, key: &cachet_core::CacheKey) {
    let index = SqliteMetadata::open_url(&format!(
        "sqlite://{}",
        dir.join(cachet_cache::INDEX_FILE).display()
    ))
    .unwrap();
    let mut record = index.get(key).await.unwrap().expect("the entry exists");
    record.meta.tags.push("forged".into());
    record.meta.expires_at = None;
    index.put(record).await.unwrap();
}

#[tokio::test]
async fn tampered_entry_with_signing_on_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let cache = signed(dir.path(), false).await;
    let params = params! { "model" => "xgb" };
    let meta = cache.insert(&params, &vec![1u32, 2]).await.unwrap();
    tamper_with_row(dir.path(), &meta.key).await;

    assert_eq!(cache.get::<Vec<u32>>(&params).await.unwrap(), None);
    assert_eq!(cache.metadata(&params).await.unwrap(), None);
    assert!(!cache.contains_key(&params).await.unwrap());
    let stats = cache.stats();
    assert_eq!(stats.integrity_failures, 3);
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.hits, 0);

    // get_with recomputes and overwrites the forged row with a signed one.
    let v: Vec<u32> = cache.get_with(&params, || async { vec![3] }).await.unwrap();
    assert_eq!(v, vec![3]);
    assert_eq!(cache.get::<Vec<u32>>(&params).await.unwrap(), Some(vec![3]));
}

#[tokio::test]
async fn tampered_entry_is_an_error_in_strict_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cache = signed(dir.path(), true).await;
    let meta = cache.insert("report", &"numbers").await.unwrap();
    tamper_with_row(dir.path(), &meta.key).await;

    let err = cache.get::<String>("report").await.unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err:?}");
    let err = cache.metadata("report").await.unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err:?}");
    let err = cache
        .get_with("report", || async { String::from("x") })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err:?}");
    assert_eq!(cache.stats().integrity_failures, 3);
}

#[tokio::test]
async fn unsigned_entry_is_a_miss_when_signing_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let unsigned = Cache::open(dir.path()).await.unwrap();
    unsigned.insert("k", &1u8).await.unwrap();
    drop(unsigned);
    let cache = signed(dir.path(), false).await;
    assert_eq!(cache.get::<u8>("k").await.unwrap(), None);
    assert_eq!(cache.stats().integrity_failures, 1);
}

#[tokio::test]
async fn entry_signed_with_another_key_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let other = Cache::builder()
        .directory(dir.path())
        .signing_key(SigningKey::from_bytes(&[9u8; 32]).unwrap())
        .build()
        .await
        .unwrap();
    other.insert("k", &1u8).await.unwrap();
    drop(other);
    let cache = signed(dir.path(), false).await;
    assert_eq!(cache.get::<u8>("k").await.unwrap(), None);
}

fn flip_a_byte_in_blob(dir: &Path, meta: &cachet_core::EntryMeta) {
    let blobs = cachet_blob_fs::FsConfig::new(dir.join(cachet_cache::BLOBS_DIR))
        .build()
        .unwrap();
    let path = blobs.blob_path(meta.location.blob_id().expect("a blob entry"));
    let mut data = std::fs::read(&path).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0x55;
    std::fs::write(&path, data).unwrap();
}

#[tokio::test]
async fn corrupt_blob_is_a_miss_and_an_error_in_strict_mode() {
    for signing in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = Cache::builder().directory(dir.path());
        if signing {
            builder = builder.signing_key(key_a());
        }
        let cache = builder.build().await.unwrap();
        let big = common::large_value(5);
        let meta = cache.insert_bytes("big", &big).await.unwrap();
        flip_a_byte_in_blob(dir.path(), &meta);

        assert_eq!(
            cache.get_bytes("big").await.unwrap(),
            None,
            "signing={signing}"
        );
        assert_eq!(cache.stats().integrity_failures, 1);

        let strict = Cache::builder()
            .directory(dir.path())
            .strict_integrity(true);
        let strict = if signing {
            strict.signing_key(key_a())
        } else {
            strict
        };
        let strict = strict.build().await.unwrap();
        let err = strict.get_bytes("big").await.unwrap_err();
        assert!(err.is_integrity_failure(), "signing={signing}: {err:?}");
    }
}

#[tokio::test]
async fn corrupt_blob_read_through_a_reader_fails_instead_of_ending() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    let meta = cache
        .insert_bytes("big", common::large_value(6))
        .await
        .unwrap();
    flip_a_byte_in_blob(dir.path(), &meta);
    let mut reader = cache
        .reader("big")
        .await
        .unwrap()
        .expect("the entry is there");
    let mut failed = false;
    loop {
        match reader.next_chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                assert!(e.is_integrity_failure(), "{e:?}");
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "a damaged blob never reads as complete");
}

#[tokio::test]
async fn missing_blob_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    let meta = cache
        .insert_bytes("big", common::large_value(7))
        .await
        .unwrap();
    let blobs = cachet_blob_fs::FsConfig::new(dir.path().join("blobs"))
        .build()
        .unwrap();
    std::fs::remove_file(blobs.blob_path(meta.location.blob_id().unwrap())).unwrap();
    assert_eq!(cache.get_bytes("big").await.unwrap(), None);
    assert!(cache.reader("big").await.unwrap().is_none());
    assert_eq!(cache.stats().integrity_failures, 2);
}
