//! Builder: URLs and options are validated, errors name the field, incompatible backends are
//! refused, the embedded default lays out one directory.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cachet_cache::Cache;
use cachet_core::memory::MemoryMetadata;
use cachet_core::{Compression, Error};
use common::RemoteLikeBlobs;

fn field_of(err: &Error) -> &str {
    match err {
        Error::Config { field, .. } => field,
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

async fn build_err(builder: cachet_cache::CacheBuilder) -> Error {
    builder
        .build()
        .await
        .expect_err("the builder must refuse this")
}

#[tokio::test]
async fn unknown_index_scheme_names_index_and_the_accepted_schemes() {
    let err = build_err(
        Cache::builder()
            .index("mysql://db/cache")
            .blobs("memory://"),
    )
    .await;
    assert_eq!(field_of(&err), "index");
    let msg = err.to_string();
    assert!(
        msg.contains("memory://") && msg.contains("sqlite://"),
        "{msg}"
    );
    assert!(msg.contains("meta-postgres"), "{msg}");
}

#[cfg(not(feature = "meta-postgres"))]
#[tokio::test]
async fn postgres_index_says_which_feature_brings_it() {
    let err = build_err(
        Cache::builder()
            .index("postgres://cache@db/cache")
            .blobs("memory://"),
    )
    .await;
    assert_eq!(field_of(&err), "index");
    assert!(err.to_string().contains("meta-postgres"), "{err}");
}

#[cfg(not(feature = "blob-s3"))]
#[tokio::test]
async fn s3_blobs_say_which_feature_brings_them() {
    let err = build_err(
        Cache::builder()
            .index("memory://")
            .blobs("s3://bucket/prefix"),
    )
    .await;
    assert_eq!(field_of(&err), "blobs");
    assert!(err.to_string().contains("blob-s3"), "{err}");
}

#[cfg(feature = "meta-postgres")]
#[tokio::test]
async fn postgres_url_option_errors_are_reported_under_index() {
    let err = build_err(
        Cache::builder()
            .index("postgres://cache@127.0.0.1:1/cache?cachet_max_connections=lots")
            .blobs("memory://"),
    )
    .await;
    assert_eq!(field_of(&err), "index");
    assert!(err.to_string().contains("cachet_max_connections"), "{err}");
}

#[cfg(feature = "blob-s3")]
#[tokio::test]
async fn s3_url_option_errors_are_reported_under_blobs() {
    let err = build_err(
        Cache::builder()
            .index("memory://")
            .allow_local_index_with_remote_blobs(true)
            .blobs("s3://bucket/prefix?part_size=tiny"),
    )
    .await;
    assert_eq!(field_of(&err), "blobs");
    assert!(err.to_string().contains("part_size"), "{err}");
}

#[cfg(all(feature = "meta-sqlite", feature = "blob-s3"))]
#[tokio::test]
async fn sqlite_index_with_s3_blobs_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let err = build_err(
        Cache::builder()
            .index(format!("sqlite://{}/index.db", dir.path().display()))
            .blobs(
                "s3://bucket/prefix?endpoint=http://127.0.0.1:1&allow_http=true&region=us-east-1",
            ),
    )
    .await;
    assert_eq!(field_of(&err), "blobs");
    let msg = err.to_string();
    assert!(
        msg.contains("sqlite") && msg.contains("s3") && msg.contains("postgres://"),
        "the message names both backends and the fix: {msg}"
    );
}

#[tokio::test]
async fn unknown_blob_scheme_names_blobs_and_the_accepted_schemes() {
    let err = build_err(Cache::builder().index("memory://").blobs("ftp://x")).await;
    assert_eq!(field_of(&err), "blobs");
    assert!(err.to_string().contains("file://"), "{err}");
}

#[tokio::test]
async fn malformed_urls_name_their_field() {
    for (index, blobs, field) in [
        ("not a url", "memory://", "index"),
        ("memory://", "", "blobs"),
        ("memory://somewhere", "memory://", "index"),
        ("memory://", "memory://x", "blobs"),
    ] {
        let err = build_err(Cache::builder().index(index).blobs(blobs)).await;
        assert_eq!(field_of(&err), field, "{index} / {blobs}: {err}");
    }
}

#[cfg(all(feature = "meta-sqlite", feature = "blob-fs"))]
#[tokio::test]
async fn backend_url_option_errors_are_reported_under_the_builder_field() {
    let dir = tempfile::tempdir().unwrap();
    let index = format!("sqlite://{}/i.db?bogus=1", dir.path().display());
    let err = build_err(Cache::builder().index(index).blobs("memory://")).await;
    assert_eq!(field_of(&err), "index");
    assert!(err.to_string().contains("bogus"), "{err}");
    let blobs = format!("file://{}/b?fsync=sometimes", dir.path().display());
    let err = build_err(Cache::builder().index("memory://").blobs(blobs)).await;
    assert_eq!(field_of(&err), "blobs");
    assert!(err.to_string().contains("fsync"), "{err}");
}

#[tokio::test]
async fn missing_locations_name_index_and_blobs() {
    let err = build_err(Cache::builder()).await;
    assert_eq!(field_of(&err), "index");
    let err = build_err(Cache::builder().index("memory://")).await;
    assert_eq!(field_of(&err), "blobs");
}

#[tokio::test]
async fn invalid_options_name_their_field() {
    let memory = || Cache::builder().in_memory();
    let err = build_err(memory().namespace("a/b")).await;
    assert_eq!(field_of(&err), "namespace");
    let err = build_err(memory().default_ttl(Duration::ZERO)).await;
    assert_eq!(field_of(&err), "default_ttl");
    let err = build_err(memory().compression(Compression::Zstd(99))).await;
    assert_eq!(field_of(&err), "compression");
    let err = build_err(memory().signing_key_from_env("CACHET_TEST_SURELY_UNSET_VARIABLE")).await;
    assert_eq!(field_of(&err), "signing_key");
    let err = build_err(memory().signing_key_file("/definitely/not/here.key")).await;
    assert_eq!(field_of(&err), "signing_key");
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, b"too short").unwrap();
    let err = build_err(memory().signing_key_file(&short)).await;
    assert_eq!(field_of(&err), "signing_key");
}

#[tokio::test]
async fn signing_key_from_a_file_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.key");
    std::fs::write(&path, "ab".repeat(32)).unwrap();
    let cache = Cache::builder()
        .in_memory()
        .signing_key_file(&path)
        .build()
        .await
        .unwrap();
    let meta = cache.insert("k", &1u8).await.unwrap();
    assert!(meta.signature.is_some());
    assert_eq!(cache.get::<u8>("k").await.unwrap(), Some(1));
}

#[tokio::test]
async fn local_index_with_remote_blobs_is_refused() {
    let err = build_err(
        Cache::builder()
            .index("memory://")
            .blob_backend(Arc::new(RemoteLikeBlobs::default())),
    )
    .await;
    assert_eq!(field_of(&err), "blobs");
    assert!(
        err.to_string()
            .contains("allow_local_index_with_remote_blobs"),
        "the message says how to allow it: {err}"
    );
}

#[tokio::test]
async fn local_index_with_remote_blobs_is_accepted_when_allowed() {
    let cache = Cache::builder()
        .index_backend(Arc::new(MemoryMetadata::new()))
        .blob_backend(Arc::new(RemoteLikeBlobs::default()))
        .allow_local_index_with_remote_blobs(true)
        .build()
        .await
        .unwrap();
    cache
        .insert_bytes("k", common::large_value(3))
        .await
        .unwrap();
    assert_eq!(
        cache.get_bytes("k").await.unwrap().unwrap(),
        common::large_value(3)
    );
}

#[cfg(all(feature = "meta-sqlite", feature = "blob-fs"))]
#[tokio::test]
async fn open_creates_the_directory_with_index_and_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nested").join("cache");
    let cache = Cache::open(&root).await.unwrap();
    cache
        .insert_bytes("big", common::large_value(1))
        .await
        .unwrap();
    assert!(root.join(cachet_cache::INDEX_FILE).is_file());
    assert!(root.join(cachet_cache::BLOBS_DIR).is_dir());
    assert_eq!(cache.store().metadata_backend().name(), "sqlite");
    assert_eq!(cache.store().blob_backend().name(), "fs");
    drop(cache);
    // Reopening finds the entry.
    let cache = Cache::open(&root).await.unwrap();
    assert_eq!(
        cache.get_bytes("big").await.unwrap().unwrap(),
        common::large_value(1)
    );
}

#[cfg(all(feature = "meta-sqlite", feature = "blob-fs"))]
#[tokio::test]
async fn explicit_urls_override_the_directory_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("elsewhere").join("idx.db");
    let cache = Cache::builder()
        .directory(dir.path().join("c"))
        .index(format!("sqlite://{}", index.display()))
        .build()
        .await
        .unwrap();
    cache.insert("k", &1u8).await.unwrap();
    assert!(index.is_file());
    assert!(dir.path().join("c").join("blobs").is_dir());
    assert!(!dir.path().join("c").join("index.sqlite").exists());
}

#[tokio::test]
async fn store_config_and_overrides_apply() {
    let config = cachet_storage::StoreConfig::default().with_inline_threshold(0);
    let cache = Cache::builder()
        .in_memory()
        .store_config(config)
        .compression(Compression::Zstd(5))
        .build()
        .await
        .unwrap();
    assert_eq!(cache.store().config().inline_threshold, 0);
    assert_eq!(cache.store().config().compression, Compression::Zstd(5));
    let meta = cache.insert_bytes("k", b"tiny").await.unwrap();
    assert!(
        meta.location.blob_id().is_some(),
        "inline threshold 0: even tiny values are blobs"
    );
}

#[tokio::test]
async fn every_duration_option_accepts_a_human_duration_and_names_itself_when_bad() {
    let cache = Cache::builder()
        .in_memory()
        .memory_tier(1 << 20)
        .memory_tier_ttl_str("5m")
        .soft_timeout_str("250ms")
        .grace_str("1d")
        .default_ttl_str("2.5h")
        .build()
        .await
        .unwrap();
    assert_eq!(cache.default_ttl(), Some(Duration::from_secs(9_000)));
    let bad = [
        (
            "memory_tier_ttl",
            Cache::builder().in_memory().memory_tier_ttl_str("later"),
        ),
        (
            "soft_timeout",
            Cache::builder()
                .in_memory()
                .soft_timeout_str("2 fortnights"),
        ),
    ];
    for (field, builder) in bad {
        match builder.build().await {
            Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // A later valid value replaces a bad string.
    let fixed = Cache::builder()
        .in_memory()
        .soft_timeout_str("never")
        .soft_timeout(Duration::from_secs(1))
        .build()
        .await;
    assert!(fixed.is_ok());
}
