//! An archive moves a cache between backends: exported from the embedded SQLite + filesystem
//! cache, imported into a shared PostgreSQL + S3 one (and back), every value verified.
//!
//! Needs `DATABASE_URL` and `S3_ENDPOINT` / `S3_BUCKET` (`cargo xtask services up`); under
//! `CI=true` a missing service fails the test instead of skipping it.
#![cfg(all(feature = "meta-postgres", feature = "blob-s3"))]

use std::time::Duration;

#[path = "support/shared.rs"]
mod shared;
use shared::{fresh_cache_urls, noise};

use cachet_cache::Cache;
use cachet_core::{CacheKey, EntryMeta, ListQuery, params};
use cachet_storage::{ExportOptions, ImportOptions, Store};
use futures_util::StreamExt;
use serde_json::json;

async fn open_shared(index: &str, blobs: &str) -> Cache {
    Cache::builder()
        .index(index)
        .blobs(blobs)
        .build()
        .await
        .unwrap_or_else(|e| panic!("open the shared cache ({index}, {blobs}): {e}"))
}

/// A local cache holding an inline value, blobs, a 20 MiB streamed value (a multipart upload
/// on S3) and a serde value with parameters, tags, user metadata and a TTL.
async fn local_cache(dir: &std::path::Path) -> Cache {
    let local = Cache::open(dir).await.unwrap();
    local.insert_bytes("small", b"inline value").await.unwrap();
    local
        .insert_bytes("blob", noise(600_000, 1))
        .with_tag("blobs")
        .await
        .unwrap();
    local
        .insert_bytes("shared-content", noise(150_000, 2))
        .await
        .unwrap();
    local
        .insert_bytes("same-content", noise(150_000, 2))
        .await
        .unwrap();
    let mut writer = local.writer("large").await.unwrap();
    for i in 0..20 {
        writer.write(&noise(1 << 20, 100 + i)).await.unwrap();
    }
    writer.finish().await.unwrap();
    local
        .insert(
            &params! { "model" => "xgb", "depth" => 6 },
            &vec![0.25f64; 1000],
        )
        .with_tag("models")
        .with_metadata(json!({"accuracy": 0.91}))
        .with_ttl(Duration::from_secs(3600))
        .await
        .unwrap();
    local
}

async fn all_entries(store: &Store) -> Vec<EntryMeta> {
    store
        .list(&ListQuery::default().with_limit(10_000))
        .await
        .unwrap()
}

async fn raw(store: &Store, key: &CacheKey) -> Vec<u8> {
    let entry = store.lookup(key).await.unwrap().unwrap();
    store.read_raw(&entry).await.unwrap().to_vec()
}

/// Every entry of `from` is in `to` with the same value, parameters, tags, metadata and expiry.
async fn assert_same_entries(from: &Store, to: &Store) {
    let expected = all_entries(from).await;
    let got = all_entries(to).await;
    assert_eq!(got.len(), expected.len());
    for (want, have) in expected.iter().zip(&got) {
        assert_eq!(have.key, want.key);
        assert_eq!(have.params, want.params, "{}", want.key);
        assert_eq!(have.tags, want.tags, "{}", want.key);
        assert_eq!(have.user_metadata, want.user_metadata, "{}", want.key);
        assert_eq!(have.expires_at, want.expires_at, "{}", want.key);
        assert_eq!(have.data_type, want.data_type, "{}", want.key);
        assert_eq!(have.digest, want.digest, "{}", want.key);
        assert_eq!(
            raw(to, &have.key).await,
            raw(from, &want.key).await,
            "{}",
            want.key
        );
    }
}

/// Blob objects no entry references.
async fn unreferenced_blobs(store: &Store) -> usize {
    let referenced: Vec<String> = all_entries(store)
        .await
        .iter()
        .filter_map(|m| m.location.blob_id().map(ToString::to_string))
        .collect();
    let mut listing = store.blob_backend().list().await.unwrap();
    let mut extra = 0;
    while let Some(info) = listing.next().await {
        if !referenced.contains(&info.unwrap().id.to_string()) {
            extra += 1;
        }
    }
    extra
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_of_a_sqlite_and_fs_cache_imports_into_postgres_and_s3_and_back() {
    let Some((index, blobs)) = fresh_cache_urls("archive_round_trip") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let local = local_cache(&dir.path().join("local")).await;
    let mut archive = Vec::new();
    let exported = local
        .store()
        .export(&mut archive, &ExportOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(exported.entries, 6);
    assert!(exported.damaged.is_empty(), "{:?}", exported.damaged);

    let shared = open_shared(&index, &blobs).await;
    let imported = shared
        .store()
        .import(&archive[..], &ImportOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(imported.imported, 6);
    assert!(imported.rejected.is_empty(), "{:?}", imported.rejected);
    assert_same_entries(local.store(), shared.store()).await;
    let model: Vec<f64> = shared
        .get(&params! { "model" => "xgb", "depth" => 6 })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(model, vec![0.25f64; 1000]);
    // Identical content under two keys is one object in S3 too.
    assert_eq!(
        shared.store().stats().await.unwrap().blobs,
        local.store().stats().await.unwrap().blobs
    );

    // Importing again (a resumed import) writes nothing.
    let again = shared
        .store()
        .import(&archive[..], &ImportOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!((again.imported, again.already_present), (0, 6));

    // And back: PostgreSQL + S3 exported into a fresh SQLite + filesystem cache.
    let mut back = Vec::new();
    shared
        .store()
        .export(&mut back, &ExportOptions::default(), |_| {})
        .await
        .unwrap();
    let restored = Cache::open(dir.path().join("restored")).await.unwrap();
    let report = restored
        .store()
        .import(&back[..], &ImportOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.imported, 6);
    assert_same_entries(local.store(), restored.store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_large_value_leaves_nothing_behind_in_postgres_or_s3() {
    let Some((index, blobs)) = fresh_cache_urls("archive_damaged") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let local = local_cache(&dir.path().join("local")).await;
    let mut archive = Vec::new();
    local
        .store()
        .export(&mut archive, &ExportOptions::default(), |_| {})
        .await
        .unwrap();
    // Flip a byte in the 16th MiB of the 20 MiB value (random, so stored verbatim): it is
    // uploaded to S3 in parts before its damage shows.
    let needle = &noise(1 << 20, 115)[..64];
    let at = archive
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the large value's bytes are in the archive");
    archive[at + 1000] ^= 0x40;

    let shared = open_shared(&index, &blobs).await;
    let report = shared
        .store()
        .import(&archive[..], &ImportOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.imported, 5);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].0.id(), "large");
    assert!(shared.get_bytes("large").await.unwrap().is_none());
    assert_eq!(unreferenced_blobs(shared.store()).await, 0);
}
