//! Stats: hits, misses, inserts and bytes are counted.

mod common;

use cachet_core::params;
use common::cache;

#[tokio::test]
async fn stats_count_hits_misses_and_bytes() {
    let (cache, _dir) = cache().await;
    assert_eq!(cache.stats(), cachet_cache::CacheStats::default());

    let meta = cache.insert_bytes("a", vec![0u8; 100]).await.unwrap();
    assert_eq!(meta.raw_size, 100);
    let meta_b = cache.insert(&params! { "b" => 1 }, &"hello").await.unwrap();

    assert!(cache.get_bytes("a").await.unwrap().is_some());
    assert!(cache.get_bytes("a").await.unwrap().is_some());
    assert!(
        cache
            .get::<String>(&params! { "b" => 1 })
            .await
            .unwrap()
            .is_some()
    );
    assert!(cache.get_bytes("missing").await.unwrap().is_none());
    assert!(cache.get::<u8>("missing").await.unwrap().is_none());
    // metadata / contains_key load no data and are not counted.
    assert!(cache.contains_key("a").await.unwrap());

    let stats = cache.stats();
    assert_eq!(stats.hits, 3);
    assert_eq!(stats.misses, 2);
    assert_eq!(stats.inserts, 2);
    assert_eq!(stats.bytes_written, 100 + meta_b.raw_size);
    assert_eq!(stats.bytes_read, 200 + meta_b.raw_size);
    assert_eq!(stats.integrity_failures, 0);
    assert_eq!(stats.computations, 0);
    assert!((stats.hit_ratio() - 0.6).abs() < 1e-9);
}

#[tokio::test]
async fn stats_are_shared_by_namespace_views() {
    let (cache, _dir) = cache().await;
    let view = cache.namespace("other");
    view.insert("k", &1u8).await.unwrap();
    let _ = view.get::<u8>("k").await.unwrap();
    assert_eq!(cache.stats().hits, 1);
    assert_eq!(cache.stats().inserts, 1);
}

#[tokio::test]
async fn index_stats_and_flush_reach_the_store() {
    let (cache, _dir) = cache().await;
    cache.insert_bytes("small", b"x").await.unwrap();
    cache
        .insert_bytes("big", common::large_value(2))
        .await
        .unwrap();
    let _ = cache.get_bytes("small").await.unwrap();
    cache.flush().await.unwrap();
    let stats = cache.index_stats().await.unwrap();
    assert_eq!(stats.entries, 2);
    assert_eq!(stats.inline_entries, 1);
    assert_eq!(stats.blobs, 1);
}
