//! The facade exposes a working cache, the `params!` macro and the backends of its features.

use cachet::{Cache, CacheKey, Error, Params, params};

#[test]
fn params_macro_is_reexported_and_builds_params() {
    let p: Params = params! { "dataset" => "sales", "window" => 30 };
    assert_eq!(p.len(), 2);
    assert_eq!(
        CacheKey::derive("", &p),
        CacheKey::derive("", &params! { "window" => 30, "dataset" => "sales" })
    );
    assert!(params! {}.is_empty());
}

#[tokio::test]
async fn in_memory_cache_works_without_backend_features() {
    let cache = Cache::builder().in_memory().build().await.unwrap();
    let key = params! { "x" => 1 };
    let v: u32 = cache.get_with(&key, || async { 5 }).await.unwrap();
    assert_eq!(v, 5);
    assert_eq!(cache.get::<u32>(&key).await.unwrap(), Some(5));
    let err = cache.get::<String>(&key).await.unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }));
    let _memory = cachet::backends::memory::MemoryMetadata::new();
}

#[cfg(all(feature = "meta-sqlite", feature = "blob-fs"))]
#[tokio::test]
async fn open_uses_the_embedded_backends() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).await.unwrap();
    assert_eq!(cache.store().metadata_backend().name(), "sqlite");
    assert_eq!(cache.store().blob_backend().name(), "fs");
    let _: Option<cachet::backends::sqlite::SqliteConfig> = None;
    let _: Option<cachet::backends::fs::FsConfig> = None;
}

#[cfg(not(feature = "meta-sqlite"))]
#[tokio::test]
async fn sqlite_urls_say_which_feature_is_missing() {
    let err = Cache::builder()
        .index("sqlite:///tmp/x.db")
        .blobs("memory://")
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("meta-sqlite"), "{err}");
}
