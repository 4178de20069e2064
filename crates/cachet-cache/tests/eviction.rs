//! Eviction policies: quotas on bytes, entries and namespaces, LRU and aged LFU order,
//! time-to-idle, expired entries, pinned and just-written entries, shared blobs, the listener,
//! the background task. Time is a manual clock; nothing sleeps.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachet_cache::{Cache, EvictionPolicy, EvictionReason};
use cachet_core::{CacheKey, Compression, EntryMeta, Error, ManualClock};
use common::{embedded, manual_clock};

const SECOND: Duration = Duration::from_secs(1);
/// Inline values of this many bytes, stored as is (no compression): 1 KB per entry.
const VALUE: usize = 1_000;

type Seen = Arc<Mutex<Vec<(String, EvictionReason)>>>;

struct Harness {
    cache: Cache,
    clock: ManualClock,
    seen: Seen,
    _dir: tempfile::TempDir,
}

async fn harness(policy: EvictionPolicy) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let seen: Seen = Arc::default();
    let listener_seen = seen.clone();
    let cache = embedded(dir.path())
        .clock(Arc::new(clock.clone()))
        .compression(Compression::None)
        // Runs are started by the tests (the background task checks rarely).
        .eviction(policy.check_interval(Duration::from_secs(3600)))
        .eviction_listener(move |meta: &EntryMeta, reason| {
            listener_seen
                .lock()
                .unwrap()
                .push((meta.key.id().to_owned(), reason));
        })
        .build()
        .await
        .unwrap();
    Harness {
        cache,
        clock,
        seen,
        _dir: dir,
    }
}

/// The stored size of one 1 KB value (the value plus its container's framing).
async fn unit() -> u64 {
    let cache = Cache::builder()
        .in_memory()
        .compression(Compression::None)
        .build()
        .await
        .unwrap();
    cache.insert_bytes("probe", value(0)).await.unwrap();
    cache.metadata("probe").await.unwrap().unwrap().stored_size
}

fn value(seed: u8) -> Vec<u8> {
    (0..VALUE)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

impl Harness {
    /// Writes `ids` two seconds apart (in order), each a 1 KB inline value, and leaves the
    /// clock two seconds after the last (past the default `protect_recent` of 100 ms).
    async fn write(&self, ids: &[&str]) {
        for (i, id) in ids.iter().enumerate() {
            self.cache.insert_bytes(*id, value(i as u8)).await.unwrap();
            self.clock.advance(2 * SECOND);
        }
    }

    async fn present(&self, id: &str) -> bool {
        self.cache.contains_key(id).await.unwrap()
    }

    async fn remaining(&self, ids: &[&str]) -> Vec<String> {
        let mut left = Vec::new();
        for id in ids {
            if self.present(id).await {
                left.push((*id).to_owned());
            }
        }
        left
    }

    fn evicted(&self) -> Vec<(String, EvictionReason)> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

const TEN: [&str; 10] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"];

#[tokio::test]
async fn over_max_bytes_evicts_the_least_recently_read_down_to_the_low_watermark() {
    // 10 values allowed, evict from above 10 down to 8.
    let unit = unit().await;
    let h = harness(
        EvictionPolicy::lru()
            .max_bytes(10 * unit)
            .watermarks(1.0, 0.8),
    )
    .await;
    h.write(&TEN).await;
    // Reading k0 and k1 makes them the most recently used.
    for id in ["k0", "k1"] {
        assert!(h.cache.get_bytes(id).await.unwrap().is_some());
    }
    h.clock.advance(SECOND);
    let report = h.cache.run_eviction().await.unwrap();
    assert_eq!(
        report.entries_removed(),
        0,
        "exactly at the limit is not over it"
    );

    h.write(&["k10", "k11"]).await;
    let report = h.cache.run_eviction().await.unwrap();
    assert_eq!(report.max_bytes, 4, "12 values down to 8");
    assert_eq!(report.bytes_freed, 4 * unit);
    assert_eq!(report.usage.unwrap().bytes, 8 * unit);
    let gone: Vec<String> = h.evicted().into_iter().map(|(id, _)| id).collect();
    assert_eq!(gone, ["k2", "k3", "k4", "k5"], "least recently read first");
    assert!(h.present("k0").await && h.present("k1").await);
    assert_eq!(h.cache.stats().evictions, 4);
}

#[tokio::test]
async fn lfu_keeps_the_frequently_read_entries() {
    let h = harness(EvictionPolicy::lfu().max_entries(5).watermarks(1.0, 1.0)).await;
    h.write(&TEN).await;
    // k9, k8, k7 are the most recent; k1, k3 are read often but long ago.
    for _ in 0..5 {
        for id in ["k1", "k3"] {
            h.cache.get_bytes(id).await.unwrap();
        }
    }
    h.cache.get_bytes("k7").await.unwrap();
    h.clock.advance(SECOND);
    let report = h.cache.run_eviction().await.unwrap();
    assert_eq!(report.max_entries, 5);
    assert_eq!(h.remaining(&TEN).await, ["k1", "k3", "k7", "k8", "k9"]);
}

#[tokio::test]
async fn lfu_counts_age_so_old_favourites_eventually_go() {
    let half_life = Duration::from_secs(60);
    let h = harness(
        EvictionPolicy::lfu_with_half_life(half_life)
            .max_entries(2)
            .watermarks(1.0, 1.0),
    )
    .await;
    h.write(&["old-favourite"]).await;
    for _ in 0..8 {
        h.cache.get_bytes("old-favourite").await.unwrap();
    }
    // Ten half-lives later, two new entries read twice each outrank 8 reads >> 10 = 0.
    h.clock.advance(half_life * 10);
    h.write(&["new-a", "new-b"]).await;
    for id in ["new-a", "new-a", "new-b", "new-b"] {
        h.cache.get_bytes(id).await.unwrap();
    }
    h.clock.advance(SECOND);
    h.cache.run_eviction().await.unwrap();
    assert_eq!(
        h.remaining(&["old-favourite", "new-a", "new-b"]).await,
        ["new-a", "new-b"]
    );
}

#[tokio::test]
async fn max_entries_is_a_limit_on_its_own() {
    let h = harness(EvictionPolicy::lru().max_entries(4).watermarks(1.0, 0.5)).await;
    h.write(&TEN).await;
    let report = h.cache.run_eviction().await.unwrap();
    assert_eq!(report.max_entries, 8, "10 entries down to 2");
    assert_eq!(h.remaining(&TEN).await, ["k8", "k9"]);
}

#[tokio::test]
async fn the_entry_just_written_is_never_evicted() {
    // A 1-entry quota: the newest entry is within protect_recent and must stay.
    let h = harness(
        EvictionPolicy::lru()
            .max_entries(1)
            .protect_recent(5 * SECOND),
    )
    .await;
    h.cache.insert_bytes("older", value(1)).await.unwrap();
    h.clock.advance(10 * SECOND);
    h.cache
        .insert_bytes("just-written", value(2))
        .await
        .unwrap();
    let report = h.cache.run_eviction().await.unwrap();
    assert_eq!(report.max_entries, 1);
    assert!(h.present("just-written").await);
    assert!(!h.present("older").await);

    // Over the quota with only protected entries: nothing is evicted, nothing fails.
    h.cache.insert_bytes("also-new", value(3)).await.unwrap();
    let report = h.cache.run_eviction().await.unwrap();
    assert_eq!(report.entries_removed(), 0);
    assert_eq!(report.usage.unwrap().entries, 2);
}

#[tokio::test]
async fn pinned_entries_are_never_evicted() {
    let h = harness(EvictionPolicy::lru().max_entries(1).watermarks(1.0, 1.0)).await;
    h.cache
        .insert_bytes("model", value(1))
        .pinned()
        .await
        .unwrap();
    h.clock.advance(SECOND);
    h.write(&["a", "b", "c"]).await;
    h.cache.run_eviction().await.unwrap();
    assert_eq!(h.remaining(&["model", "a", "b", "c"]).await, ["model"]);
    let meta = h.cache.metadata("model").await.unwrap().unwrap();
    assert_eq!(meta.tags, [cachet_core::PINNED_TAG]);
}

#[tokio::test]
async fn a_namespace_quota_evicts_only_in_that_namespace() {
    let unit = unit().await;
    let h = harness(
        EvictionPolicy::lru()
            .namespace_quota("scratch", 2 * unit)
            .watermarks(1.0, 1.0),
    )
    .await;
    let scratch = h.cache.namespace("scratch");
    for i in 0..5u8 {
        h.cache
            .insert_bytes(format!("main-{i}").as_str(), value(i))
            .await
            .unwrap();
        scratch
            .insert_bytes(format!("tmp-{i}").as_str(), value(i + 10))
            .await
            .unwrap();
        h.clock.advance(2 * SECOND);
    }
    let report = h.cache.run_eviction().await.unwrap();
    assert_eq!(report.namespace_quota, 3);
    assert!(
        h.evicted()
            .iter()
            .all(|(id, r)| id.starts_with("tmp-") && *r == EvictionReason::NamespaceQuota)
    );
    for i in 0..5 {
        assert!(h.present(&format!("main-{i}")).await);
    }
    assert!(
        scratch.contains_key("tmp-3").await.unwrap()
            && scratch.contains_key("tmp-4").await.unwrap()
    );
}

#[tokio::test]
async fn a_shared_blob_frees_its_bytes_only_when_its_last_entry_goes() {
    // Blob-sized values (over the 16 KiB inline threshold), stored once for two keys.
    let big = common::large_value(7);
    let h = harness(EvictionPolicy::lru().max_entries(1).watermarks(1.0, 1.0)).await;
    h.cache.insert_bytes("copy-1", &big).await.unwrap();
    h.clock.advance(2 * SECOND);
    h.cache.insert_bytes("copy-2", &big).await.unwrap();
    h.clock.advance(2 * SECOND);
    let stored = h
        .cache
        .metadata("copy-1")
        .await
        .unwrap()
        .unwrap()
        .stored_size;
    assert!(
        stored > big.len() as u64,
        "incompressible, stored with its framing"
    );
    let usage = h.cache.store().usage(None).await.unwrap();
    assert_eq!(usage.bytes, stored, "one blob, counted once");

    let report = h.cache.run_eviction().await.unwrap();
    assert_eq!(report.max_entries, 1);
    assert_eq!(report.bytes_freed, 0, "copy-2 still references the blob");
    assert_eq!(report.blobs_deleted, 0);
    assert_eq!(h.cache.get_bytes("copy-2").await.unwrap().unwrap(), big);

    h.cache.insert_bytes("small", value(1)).await.unwrap();
    h.clock.advance(2 * SECOND);
    let report = h.cache.run_eviction().await.unwrap();
    assert_eq!(report.bytes_freed, stored, "its last entry is gone");
    let small = h
        .cache
        .metadata("small")
        .await
        .unwrap()
        .unwrap()
        .stored_size;
    assert_eq!(report.usage.unwrap().bytes, small);
    // Written seconds ago, the blob is still under its writer's lease: gc deletes it later.
    h.clock.advance(Duration::from_secs(24 * 3600));
    let gc = h.cache.gc().await.unwrap();
    assert!(
        report.blobs_deleted + gc.blobs_deleted >= 1,
        "{report:?} {gc:?}"
    );
}

#[tokio::test]
async fn idle_entries_go_after_the_time_to_idle() {
    let idle = Duration::from_secs(3600);
    let h = harness(EvictionPolicy::lru().time_to_idle(idle)).await;
    h.write(&["read", "unread"]).await;
    h.clock.advance(idle / 2);
    h.cache.get_bytes("read").await.unwrap();
    h.clock.advance(idle / 2 + SECOND);
    let report = h.cache.run_eviction().await.unwrap();
    assert_eq!(report.idle, 1);
    assert_eq!(h.evicted(), [("unread".to_owned(), EvictionReason::Idle)]);
    assert!(h.present("read").await);
}

#[tokio::test]
async fn expired_entries_are_removed_by_every_run() {
    let h = harness(EvictionPolicy::lru()).await;
    h.cache
        .insert_bytes("short", value(1))
        .with_ttl(SECOND)
        .await
        .unwrap();
    h.cache.insert_bytes("long", value(2)).await.unwrap();
    h.clock.advance(2 * SECOND);
    let report = h.cache.run_eviction().await.unwrap();
    assert_eq!(report.expired, 1);
    assert_eq!(h.evicted(), [("short".to_owned(), EvictionReason::Expired)]);
    assert_eq!(h.cache.store().usage(None).await.unwrap().entries, 1);
}

#[tokio::test]
async fn evicted_values_leave_the_memory_tier() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let cache = embedded(dir.path())
        .clock(Arc::new(clock.clone()))
        .memory_tier(1 << 20)
        .eviction(EvictionPolicy::lru().max_entries(1).watermarks(1.0, 1.0))
        .build()
        .await
        .unwrap();
    cache.insert_bytes("a", b"first").await.unwrap();
    assert!(cache.get_bytes("a").await.unwrap().is_some());
    clock.advance(SECOND);
    cache.insert_bytes("b", b"second").await.unwrap();
    clock.advance(SECOND);
    cache.run_eviction().await.unwrap();
    assert_eq!(
        cache.get_bytes("a").await.unwrap(),
        None,
        "not served from memory"
    );
}

#[tokio::test]
async fn writes_over_a_limit_wake_the_background_task() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cache = embedded(dir.path())
        .clock(Arc::new(clock.clone()))
        .eviction(
            EvictionPolicy::lru()
                .max_entries(3)
                .watermarks(1.0, 1.0)
                .check_interval(Duration::from_secs(3600)),
        )
        .eviction_listener(move |meta: &EntryMeta, _| {
            let _ = tx.send(meta.key.clone());
        })
        .build()
        .await
        .unwrap();
    for i in 0..4u8 {
        cache
            .insert_bytes(format!("k{i}").as_str(), [i])
            .await
            .unwrap();
        clock.advance(SECOND);
    }
    // No run_eviction here: the fourth write woke the task.
    let evicted = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the background task evicts within 30 s")
        .unwrap();
    assert_eq!(evicted, CacheKey::explicit("", "k0").unwrap());
}

#[tokio::test]
async fn invalid_policies_are_refused_naming_the_setting() {
    let cases = [
        (EvictionPolicy::lru().watermarks(0.8, 0.9), "watermarks"),
        (EvictionPolicy::lru().watermarks(1.0, 0.0), "watermarks"),
        (EvictionPolicy::lru().batch_size(0), "batch_size"),
        (EvictionPolicy::lru().max_bytes_str("ten gigs"), "max_bytes"),
        (
            EvictionPolicy::lru().time_to_idle(Duration::ZERO),
            "time_to_idle",
        ),
        (
            EvictionPolicy::lfu_with_half_life(Duration::ZERO),
            "half_life",
        ),
    ];
    for (policy, field) in cases {
        let err = Cache::builder()
            .in_memory()
            .eviction(policy.clone())
            .build()
            .await
            .expect_err("refused");
        match err {
            Error::Config { field: f, .. } => assert!(f.contains(field), "{policy:?}: {f}"),
            other => panic!("{policy:?}: {other}"),
        }
    }
    let err = Cache::builder()
        .in_memory()
        .eviction_listener(|_: &EntryMeta, _| {})
        .build()
        .await
        .expect_err("a listener without a policy");
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

#[tokio::test]
async fn human_sizes_and_durations_are_accepted() {
    let policy = EvictionPolicy::lru()
        .max_bytes_str("1.5GiB")
        .namespace_quota_str("scratch", "200MB")
        .time_to_idle_str("7d");
    let cache = Cache::builder()
        .in_memory()
        .eviction(policy)
        .build()
        .await
        .unwrap();
    let debug = format!("{cache:?}");
    assert!(debug.contains("1610612736"), "{debug}");
    assert!(debug.contains("200000000"), "{debug}");
    assert!(debug.contains("604800s"), "{debug}");
}

#[tokio::test]
async fn run_eviction_without_a_policy_is_a_config_error() {
    let cache = Cache::builder().in_memory().build().await.unwrap();
    assert!(matches!(
        cache.run_eviction().await,
        Err(Error::Config { .. })
    ));
}

#[tokio::test]
async fn subscribers_see_each_eviction_with_its_reason() {
    let h = harness(EvictionPolicy::lru().max_entries(1).watermarks(1.0, 1.0)).await;
    let mut events = h.cache.subscribe();
    h.write(&["old", "new"]).await;
    h.cache.run_eviction().await.unwrap();
    let mut evicted = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let cachet_cache::CacheEvent::Evicted { key, reason, .. } = event {
            evicted.push((key.id().to_owned(), reason));
        }
    }
    assert_eq!(evicted, [("old".to_owned(), EvictionReason::MaxEntries)]);
    assert_eq!(h.cache.stats().evictions, 1);
}
