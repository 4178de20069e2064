//! The memory tier (`CacheBuilder::memory_tier`): hits served without the index, backfill on a
//! durable hit, invalidation by this process's writes and deletes, expiry, the bound on
//! staleness, weighting and admission, typed reads, namespaces.
//!
//! "Without the index" is shown by deleting an entry behind the cache's back (through the
//! store, as another process would): a read that still returns the value did not ask the index.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cachet_cache::Cache;
use cachet_core::{CacheKey, Error, ManualClock};
use serde::{Deserialize, Serialize};

const TIER: u64 = 1 << 20;

async fn tiered(max_bytes: u64) -> (Cache, Arc<ManualClock>) {
    let clock = Arc::new(common::manual_clock());
    let cache = Cache::builder()
        .in_memory()
        .memory_tier(max_bytes)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    (cache, clock)
}

/// Deletes the entry from the index directly, as another process would (the cache's memory
/// tier is not told).
async fn delete_behind(cache: &Cache, key: &str) {
    let key = CacheKey::explicit(cache.namespace_name(), key).unwrap();
    assert!(cache.store().delete(&key).await.unwrap());
}

#[tokio::test]
async fn hit_after_insert_bytes_is_served_without_the_index() {
    let (cache, _) = tiered(TIER).await;
    cache.insert_bytes("k", b"hello").await.unwrap();
    delete_behind(&cache, "k").await;
    assert_eq!(
        cache.get_bytes("k").await.unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.memory_hits), (1, 1));
}

#[tokio::test]
async fn durable_hit_fills_memory_for_the_next_read() {
    let (cache, _) = tiered(TIER).await;
    cache.insert("k", &vec![1u32, 2, 3]).await.unwrap(); // serde inserts do not fill
    assert_eq!(
        cache.get::<Vec<u32>>("k").await.unwrap(),
        Some(vec![1, 2, 3])
    );
    assert_eq!(cache.stats().memory_hits, 0);
    delete_behind(&cache, "k").await;
    assert_eq!(
        cache.get::<Vec<u32>>("k").await.unwrap(),
        Some(vec![1, 2, 3])
    );
    assert_eq!(cache.stats().memory_hits, 1);
}

#[tokio::test]
async fn typed_get_decodes_from_memory_and_reports_type_mismatch() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Row {
        name: String,
        score: f64,
    }
    let (cache, _) = tiered(TIER).await;
    let row = Row {
        name: "north".into(),
        score: 1.5,
    };
    cache.insert("row", &row).as_json().await.unwrap();
    cache.get::<Row>("row").await.unwrap(); // backfill
    delete_behind(&cache, "row").await;
    assert_eq!(cache.get::<Row>("row").await.unwrap(), Some(row));
    assert!(matches!(
        cache.get::<u64>("row").await,
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        cache.get_bytes("row").await,
        Err(Error::TypeMismatch { .. })
    ));
}

#[tokio::test]
async fn get_with_found_value_is_then_served_from_memory() {
    let (cache, _) = tiered(TIER).await;
    let v: u64 = cache.get_with("k", || async { 42 }).await.unwrap();
    let again: u64 = cache.get_with("k", || async { 0 }).await.unwrap(); // durable, backfills
    assert_eq!((v, again), (42, 42));
    delete_behind(&cache, "k").await;
    let from_memory: u64 = cache.get_with("k", || async { 0 }).await.unwrap();
    assert_eq!(from_memory, 42);
    assert_eq!(cache.stats().computations, 1);
}

#[tokio::test]
async fn get_many_serves_held_keys_and_backfills_the_rest() {
    let (cache, _) = tiered(TIER).await;
    cache
        .insert_many([("a", &1u32), ("b", &2u32)], &Default::default())
        .await
        .unwrap();
    let first: Vec<Option<u32>> = cache.get_many(["a", "b", "c"]).await.unwrap();
    assert_eq!(first, [Some(1), Some(2), None]);
    delete_behind(&cache, "a").await;
    delete_behind(&cache, "b").await;
    let second: Vec<Option<u32>> = cache.get_many(["a", "b", "c"]).await.unwrap();
    assert_eq!(second, [Some(1), Some(2), None]);
    assert_eq!(cache.stats().memory_hits, 2);

    cache.insert_bytes("x", b"raw").await.unwrap();
    let bytes = cache.get_bytes_many(["x", "y"]).await.unwrap();
    assert_eq!(bytes[0].as_deref(), Some(&b"raw"[..]));
    assert_eq!((bytes[1].as_ref(), cache.stats().memory_hits), (None, 3));
}

#[tokio::test]
async fn invalidate_drops_the_memory_entry() {
    let (cache, _) = tiered(TIER).await;
    cache.insert_bytes("k", b"v").await.unwrap();
    assert!(cache.invalidate("k").await.unwrap());
    assert_eq!(cache.get_bytes("k").await.unwrap(), None);

    cache.insert_bytes("a", b"1").await.unwrap();
    cache.insert_bytes("b", b"2").await.unwrap();
    cache.invalidate_many(["a", "b"]).await.unwrap();
    assert_eq!(
        cache.get_bytes_many(["a", "b"]).await.unwrap(),
        [None, None]
    );
}

#[tokio::test]
async fn update_replaces_the_memory_entry() {
    let (cache, _) = tiered(TIER).await;
    cache.insert_bytes("k", b"old").await.unwrap();
    cache.update_bytes("k", b"new").await.unwrap();
    assert_eq!(
        cache.get_bytes("k").await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    cache.insert("n", &1u32).await.unwrap();
    cache.get::<u32>("n").await.unwrap();
    cache.update("n", &2u32).await.unwrap();
    assert_eq!(cache.get::<u32>("n").await.unwrap(), Some(2));
}

#[tokio::test]
async fn insert_over_a_held_value_replaces_it() {
    let (cache, _) = tiered(TIER).await;
    cache.insert("k", &1u32).await.unwrap();
    cache.get::<u32>("k").await.unwrap(); // held
    cache.insert("k", &2u32).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(2));
    cache.insert_bytes("b", b"1").await.unwrap();
    cache.insert_bytes("b", b"2").await.unwrap();
    assert_eq!(
        cache.get_bytes("b").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
}

#[tokio::test]
async fn expiry_is_honoured_in_memory() {
    let (cache, clock) = tiered(TIER).await;
    cache
        .insert_bytes("k", b"v")
        .with_ttl(Duration::from_secs(10))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(9));
    assert!(cache.get_bytes("k").await.unwrap().is_some());
    assert_eq!(cache.stats().memory_hits, 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.get_bytes("k").await.unwrap(), None);
}

#[tokio::test]
async fn touch_drops_the_memory_entry_so_the_new_expiry_applies() {
    let (cache, clock) = tiered(TIER).await;
    cache
        .insert_bytes("k", b"v")
        .with_ttl(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        cache
            .touch("k", Some(Duration::from_secs(3600)))
            .await
            .unwrap()
    );
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        cache.get_bytes("k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

#[tokio::test]
async fn other_writers_are_seen_after_the_memory_tier_ttl() {
    let clock = Arc::new(common::manual_clock());
    let cache = Cache::builder()
        .in_memory()
        .memory_tier(TIER)
        .memory_tier_ttl(Duration::from_secs(30))
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    cache.insert_bytes("k", b"v").await.unwrap();
    delete_behind(&cache, "k").await;
    clock.advance(Duration::from_secs(29));
    assert!(cache.get_bytes("k").await.unwrap().is_some()); // stale, within the bound
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.get_bytes("k").await.unwrap(), None);
}

#[tokio::test]
async fn rename_and_copy_drop_the_keys_they_change() {
    let (cache, _) = tiered(TIER).await;
    cache.insert_bytes("a", b"A").await.unwrap();
    cache.insert_bytes("b", b"B").await.unwrap();
    cache.rename("a", "b", true).await.unwrap();
    assert_eq!(cache.get_bytes("a").await.unwrap(), None);
    assert_eq!(
        cache.get_bytes("b").await.unwrap().as_deref(),
        Some(&b"A"[..])
    );

    cache.insert_bytes("c", b"C").await.unwrap();
    cache.copy("b", "c", true).await.unwrap();
    assert_eq!(
        cache.get_bytes("c").await.unwrap().as_deref(),
        Some(&b"A"[..])
    );
}

#[tokio::test]
async fn invalidate_where_tag_and_namespace_drop_deleted_entries() {
    use cachet_core::{EntryFilter, FieldCondition};
    let (cache, _) = tiered(TIER).await;
    cache
        .insert_bytes("t", b"1")
        .with_tag("sales")
        .await
        .unwrap();
    cache.insert_bytes("keep", b"2").await.unwrap();
    assert_eq!(cache.invalidate_tag("sales").await.unwrap().entries(), 1);
    assert_eq!(cache.get_bytes("t").await.unwrap(), None);
    assert!(cache.get_bytes("keep").await.unwrap().is_some());

    cache
        .insert_bytes("m", b"3")
        .with_meta("run", 7)
        .await
        .unwrap();
    let filter = EntryFilter::all().metadata(FieldCondition::parse("run = 7").unwrap());
    assert_eq!(
        cache
            .invalidate_where(&filter, true)
            .await
            .unwrap()
            .entries(),
        1
    );
    assert!(cache.get_bytes("m").await.unwrap().is_some()); // a dry run changes nothing
    assert_eq!(
        cache
            .invalidate_where(&filter, false)
            .await
            .unwrap()
            .entries(),
        1
    );
    assert_eq!(cache.get_bytes("m").await.unwrap(), None);

    let team = cache.namespace("team");
    team.insert_bytes("x", b"4").await.unwrap();
    team.invalidate_namespace().await.unwrap();
    assert_eq!(team.get_bytes("x").await.unwrap(), None);
    assert!(cache.get_bytes("keep").await.unwrap().is_some());
}

#[tokio::test]
async fn namespace_views_share_the_tier_with_separate_keys() {
    let (cache, _) = tiered(TIER).await;
    cache.namespace("a").insert_bytes("k", b"A").await.unwrap();
    delete_behind(&cache.namespace("a"), "k").await;
    let view = cache.namespace("a"); // another view, same tier
    assert_eq!(
        view.get_bytes("k").await.unwrap().as_deref(),
        Some(&b"A"[..])
    );
    assert_eq!(cache.namespace("b").get_bytes("k").await.unwrap(), None);
    assert_eq!(cache.get_bytes("k").await.unwrap(), None);
}

#[tokio::test]
async fn weighted_eviction_keeps_the_tier_under_its_size() {
    let max = 64 * 1024;
    let (cache, _) = tiered(max).await;
    let value = vec![7u8; 1000];
    for i in 0..500 {
        cache
            .insert_bytes(format!("k{i}").as_str(), &value)
            .await
            .unwrap();
        assert!(cache.memory_tier_bytes().unwrap() <= max);
    }
    assert!(cache.memory_tier_bytes().unwrap() > max / 2);
}

#[tokio::test]
async fn a_value_over_the_admission_limit_is_not_held() {
    let max = 64 * 1024;
    let (cache, _) = tiered(max).await;
    let big = vec![1u8; (max / 8) as usize]; // plus the per-entry overhead: over an eighth
    cache.insert_bytes("big", &big).await.unwrap();
    cache.get_bytes("big").await.unwrap();
    assert_eq!(cache.memory_tier_bytes(), Some(0));
    assert_eq!(cache.stats().memory_hits, 0);
    cache.insert_bytes("small", &big[..1000]).await.unwrap();
    assert!(cache.memory_tier_bytes().unwrap() > 1000);
}

#[tokio::test]
async fn memory_tier_size_is_validated_by_build() {
    let bad = Cache::builder()
        .in_memory()
        .memory_tier_str("lots")
        .build()
        .await;
    assert!(matches!(bad, Err(Error::Config { ref field, .. }) if field == "memory_tier"));
    let zero = Cache::builder().in_memory().memory_tier(0).build().await;
    assert!(matches!(zero, Err(Error::Config { ref field, .. }) if field == "memory_tier"));
    let ok = Cache::builder()
        .in_memory()
        .memory_tier_str("256MiB")
        .build()
        .await
        .unwrap();
    assert_eq!(ok.memory_tier_bytes(), Some(0));
    assert_eq!(
        Cache::builder()
            .in_memory()
            .build()
            .await
            .unwrap()
            .memory_tier_bytes(),
        None
    );
}
