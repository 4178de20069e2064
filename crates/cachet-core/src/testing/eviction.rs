//! Conformance behaviors of the eviction methods of [`MetadataBackend`](crate::MetadataBackend):
//! [`usage`](crate::MetadataBackend::usage) and [`evict`](crate::MetadataBackend::evict).
//!
//! [`metadata::run_all`](super::metadata::run_all) runs every one of them. Victims are checked
//! against [`EvictionBatch::select`], the reference semantics.

use std::time::Duration;

use super::metadata::{
    DynMetadata, T0, get_ok, inline_record, keys_of, put_ok, reserve, sample_blob_record,
    test_blob_id, test_key,
};
use crate::clock::Timestamp;
use crate::entry::{AccessRecord, EntryMeta, EntryRecord, ListQuery};
use crate::eviction::{EvictionBatch, EvictionOrder, IndexUsage, PINNED_TAG};
use crate::key::CacheKey;

fn at(ms: i64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

/// An inline entry of `size` bytes written at `written`, last read at `read` with `count`
/// reads.
fn entry(
    namespace: &str,
    id: &str,
    size: usize,
    written: i64,
    read: i64,
    count: u64,
) -> EntryRecord {
    let mut record = inline_record(&test_key(namespace, id), vec![b'x'; size].into());
    record.meta.created_at = at(written);
    record.meta.updated_at = at(written);
    record.meta.accessed_at = at(read);
    record.meta.access_count = count;
    record
}

async fn usage_ok(backend: &DynMetadata, namespace: Option<&str>) -> IndexUsage {
    backend
        .usage(namespace)
        .await
        .unwrap_or_else(|e| panic!("usage({namespace:?}) failed: {e}"))
}

async fn evict_ok(backend: &DynMetadata, batch: &EvictionBatch) -> Vec<EntryMeta> {
    backend
        .evict(batch)
        .await
        .unwrap_or_else(|e| panic!("evict({batch:?}) failed: {e}"))
}

async fn all_entries(backend: &DynMetadata) -> Vec<EntryMeta> {
    let mut all = Vec::new();
    let mut query = ListQuery {
        limit: 500,
        ..ListQuery::default()
    };
    loop {
        let page = backend.list(&query).await.expect("list");
        let Some(last) = page.last() else { break };
        query.after = Some(last.key.clone());
        all.extend(page);
    }
    all
}

/// Evicts with `batch` and checks the victims are exactly (and in the order) the reference's.
async fn evict_like_the_reference(backend: &DynMetadata, batch: &EvictionBatch) -> Vec<CacheKey> {
    let before = all_entries(backend).await;
    let expected: Vec<CacheKey> = batch
        .select(&before)
        .expect("valid batch")
        .into_iter()
        .map(|i| before[i].key.clone())
        .collect();
    let evicted = keys_of(&evict_ok(backend, batch).await);
    assert_eq!(evicted, expected, "victims of {batch:?}");
    for key in &evicted {
        assert!(
            get_ok(backend, key).await.is_none(),
            "{key} was evicted but is still there"
        );
    }
    evicted
}

/// `usage` adds inline values and each referenced blob once, per namespace or in all.
pub async fn usage_counts_inline_values_and_each_blob_once(backend: &DynMetadata) {
    assert_eq!(usage_ok(backend, None).await, IndexUsage::default());
    let (shared, single) = (test_blob_id(40), test_blob_id(41));
    reserve(backend, &shared, 1_000, T0).await;
    reserve(backend, &single, 300, T0).await;
    // A registered blob no entry references is the collector's business, not eviction's.
    reserve(backend, &test_blob_id(42), 7_000, T0).await;
    put_ok(
        backend,
        sample_blob_record(&test_key("a", "1"), &shared, 1_000),
    )
    .await;
    put_ok(
        backend,
        sample_blob_record(&test_key("a", "2"), &shared, 1_000),
    )
    .await;
    put_ok(
        backend,
        sample_blob_record(&test_key("b", "3"), &shared, 1_000),
    )
    .await;
    put_ok(
        backend,
        sample_blob_record(&test_key("b", "4"), &single, 300),
    )
    .await;
    put_ok(backend, entry("a", "5", 10, 0, 0, 0)).await;
    put_ok(backend, entry("b", "6", 20, 0, 0, 0)).await;

    assert_eq!(
        usage_ok(backend, None).await,
        IndexUsage::new(6, 1_000 + 300 + 10 + 20)
    );
    assert_eq!(
        usage_ok(backend, Some("a")).await,
        IndexUsage::new(3, 1_000 + 10)
    );
    assert_eq!(
        usage_ok(backend, Some("b")).await,
        IndexUsage::new(3, 1_000 + 300 + 20)
    );
    assert_eq!(usage_ok(backend, Some("none")).await, IndexUsage::default());
}

/// LRU takes the entries with the oldest `accessed_at` first.
pub async fn evict_lru_takes_the_least_recently_read_first(backend: &DynMetadata) {
    for (id, read) in [("a", 50), ("b", 10), ("c", 30), ("d", 20), ("e", 40)] {
        put_ok(backend, entry("", id, 10, 0, read, 1)).await;
    }
    let batch = EvictionBatch::new(EvictionOrder::LeastRecentlyUsed, at(100), 3);
    let evicted = evict_like_the_reference(backend, &batch).await;
    assert_eq!(
        evicted,
        [test_key("", "b"), test_key("", "d"), test_key("", "c")]
    );
    assert_eq!(usage_ok(backend, None).await.entries, 2);
}

/// LFU ranks by the access count halved once per half-life since the last read.
pub async fn evict_lfu_ages_counts_by_half_life(backend: &DynMetadata) {
    let order = EvictionOrder::LeastFrequentlyUsed {
        half_life: Duration::from_millis(1_000),
    };
    // At now = 10 s: "old" had 64 reads but none for 8 s (64 >> 8 = 0); "steady" 4 reads
    // 1 s ago (2); "fresh" 1 read just now (1); "hot" 100 reads 2 s ago (25).
    for (id, read, count) in [
        ("old", 2_000, 64),
        ("steady", 9_000, 4),
        ("fresh", 10_000, 1),
        ("hot", 8_000, 100),
    ] {
        put_ok(backend, entry("", id, 10, 0, read, count)).await;
    }
    let batch = EvictionBatch::new(order, at(10_000), 4);
    let evicted = evict_like_the_reference(backend, &batch).await;
    assert_eq!(
        evicted,
        [
            test_key("", "old"),
            test_key("", "fresh"),
            test_key("", "steady"),
            test_key("", "hot")
        ]
    );
}

/// Equal ranks go least recently read first, then in key order.
pub async fn evict_breaks_ties_by_last_read_then_key(backend: &DynMetadata) {
    for id in ["c", "a", "b"] {
        put_ok(backend, entry("", id, 10, 0, 5, 3)).await;
    }
    put_ok(backend, entry("", "z", 10, 0, 1, 3)).await;
    for order in [EvictionOrder::LeastRecentlyUsed, EvictionOrder::LFU] {
        let batch = EvictionBatch::new(order, at(100), 2);
        let evicted = evict_like_the_reference(backend, &batch).await;
        let expected = match order {
            EvictionOrder::LeastRecentlyUsed => [test_key("", "z"), test_key("", "a")],
            EvictionOrder::LeastFrequentlyUsed { .. } => [test_key("", "b"), test_key("", "c")],
        };
        assert_eq!(evicted, expected, "{order:?}");
    }
}

/// Entries written at or after `written_before` are never victims.
pub async fn evict_never_takes_entries_written_at_or_after_the_cutoff(backend: &DynMetadata) {
    put_ok(backend, entry("", "older", 10, 10, 10, 0)).await;
    put_ok(backend, entry("", "just-written", 10, 20, 0, 0)).await;
    put_ok(backend, entry("", "later", 10, 30, 0, 0)).await;
    let mut batch = EvictionBatch::new(EvictionOrder::LeastRecentlyUsed, at(100), 10);
    batch.written_before = at(20);
    let evicted = evict_like_the_reference(backend, &batch).await;
    assert_eq!(evicted, [test_key("", "older")]);
    assert!(
        evict_ok(backend, &batch).await.is_empty(),
        "nothing else is a candidate"
    );
}

/// Entries tagged `PINNED_TAG` are never victims (a similar tag is not a pin).
pub async fn evict_never_takes_pinned_entries(backend: &DynMetadata) {
    let mut pinned = entry("", "pinned", 10, 0, 0, 0);
    pinned.meta.tags = vec!["model".into(), PINNED_TAG.into()];
    put_ok(backend, pinned).await;
    let mut tagged = entry("", "tagged", 10, 0, 1, 0);
    tagged.meta.tags = vec!["cachet:pinned-not".into(), "model".into()];
    put_ok(backend, tagged).await;
    put_ok(backend, entry("", "plain", 10, 0, 2, 0)).await;
    let batch = EvictionBatch::new(EvictionOrder::LeastRecentlyUsed, at(100), 10);
    let evicted = evict_like_the_reference(backend, &batch).await;
    assert_eq!(evicted, [test_key("", "tagged"), test_key("", "plain")]);
    assert!(get_ok(backend, &test_key("", "pinned")).await.is_some());
}

/// A namespaced batch takes only that namespace's entries.
pub async fn evict_stays_in_its_namespace(backend: &DynMetadata) {
    put_ok(backend, entry("team-a", "1", 10, 0, 0, 0)).await;
    put_ok(backend, entry("team-b", "2", 10, 0, 1, 0)).await;
    put_ok(backend, entry("team-a", "3", 10, 0, 2, 0)).await;
    let mut batch = EvictionBatch::new(EvictionOrder::LeastRecentlyUsed, at(100), 10);
    batch.namespace = Some("team-a".into());
    let evicted = evict_like_the_reference(backend, &batch).await;
    assert_eq!(evicted, [test_key("team-a", "1"), test_key("team-a", "3")]);
    assert_eq!(usage_ok(backend, Some("team-b")).await.entries, 1);
}

/// With `accessed_before`, only entries unread since then are victims.
pub async fn evict_by_idle_time_takes_only_entries_unread_since(backend: &DynMetadata) {
    for (id, read) in [("idle", 10), ("recent", 60), ("idler", 5)] {
        put_ok(backend, entry("", id, 10, 0, read, 0)).await;
    }
    let mut batch = EvictionBatch::new(EvictionOrder::LeastRecentlyUsed, at(100), 10);
    batch.accessed_before = Some(at(50));
    let evicted = evict_like_the_reference(backend, &batch).await;
    assert_eq!(evicted, [test_key("", "idler"), test_key("", "idle")]);
}

/// A batch stops at `max_entries` and once its sizes reach `max_bytes`.
pub async fn evict_stops_at_the_byte_budget_and_entry_limit(backend: &DynMetadata) {
    for (i, size) in [300usize, 200, 500, 100].into_iter().enumerate() {
        put_ok(backend, entry("", &format!("k{i}"), size, 0, i as i64, 0)).await;
    }
    // 300 < 450, 300 + 200 >= 450: the entry that crosses the budget is taken, no more.
    let mut batch = EvictionBatch::new(EvictionOrder::LeastRecentlyUsed, at(100), 10);
    batch.max_bytes = 450;
    let evicted = evict_like_the_reference(backend, &batch).await;
    assert_eq!(evicted, [test_key("", "k0"), test_key("", "k1")]);
    let mut batch = EvictionBatch::new(EvictionOrder::LeastRecentlyUsed, at(100), 1);
    batch.max_bytes = 10_000;
    assert_eq!(
        evict_like_the_reference(backend, &batch).await,
        [test_key("", "k2")]
    );
    batch.max_bytes = 0;
    assert!(
        evict_ok(backend, &batch).await.is_empty(),
        "a zero budget takes nothing"
    );
}

/// Reads recorded with `record_access` count in the ranking.
pub async fn evict_judges_reads_recorded_since_the_entries_were_written(backend: &DynMetadata) {
    for id in ["a", "b", "c"] {
        put_ok(backend, entry("", id, 10, 0, 0, 0)).await;
    }
    backend
        .record_access(&[AccessRecord {
            key: test_key("", "a"),
            at: at(90),
            hits: 5,
        }])
        .await
        .expect("record_access");
    let batch = EvictionBatch::new(EvictionOrder::LeastRecentlyUsed, at(100), 2);
    assert_eq!(
        evict_like_the_reference(backend, &batch).await,
        [test_key("", "b"), test_key("", "c")]
    );
}

/// A zero LFU half-life is a `Config` error and deletes nothing.
pub async fn evict_refuses_a_zero_half_life(backend: &DynMetadata) {
    put_ok(backend, entry("", "a", 10, 0, 0, 0)).await;
    let order = EvictionOrder::LeastFrequentlyUsed {
        half_life: Duration::ZERO,
    };
    let err = backend
        .evict(&EvictionBatch::new(order, at(100), 10))
        .await
        .expect_err("a zero half-life is refused");
    assert!(matches!(err, crate::Error::Config { .. }), "{err}");
    assert!(get_ok(backend, &test_key("", "a")).await.is_some());
}

/// Many mixed batches take exactly the reference's victims, in order.
pub async fn evict_agrees_with_the_reference_on_a_mixed_corpus(backend: &DynMetadata) {
    // 60 entries over 3 namespaces with varied sizes, times, counts and pins; many batches.
    for i in 0..60i64 {
        let ns = ["", "x", "y"][(i % 3) as usize];
        let mut record = entry(
            ns,
            &format!("e{i:02}"),
            (i as usize * 37) % 200 + 1,
            i % 7,
            (i * 13) % 50,
            (i * 7 % 11) as u64,
        );
        if i % 10 == 0 {
            record.meta.tags = vec![PINNED_TAG.into()];
        }
        put_ok(backend, record).await;
    }
    let lfu = EvictionOrder::LeastFrequentlyUsed {
        half_life: Duration::from_millis(7),
    };
    for round in 0..8i64 {
        let order = if round % 2 == 0 {
            EvictionOrder::LeastRecentlyUsed
        } else {
            lfu
        };
        let mut batch = EvictionBatch::new(order, at(60), 4 + round as usize);
        batch.namespace =
            [None, Some("x".to_owned()), Some("y".to_owned())][(round % 3) as usize].clone();
        batch.written_before = at(3 + round % 4);
        batch.accessed_before = (round % 3 == 2).then(|| at(40));
        batch.max_bytes = if round % 2 == 1 { 300 } else { u64::MAX };
        evict_like_the_reference(backend, &batch).await;
    }
}
