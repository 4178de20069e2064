//! Observability: events a program subscribes to, counters and histograms through the
//! `metrics` facade, and `tracing` spans, all telling the same story as `Cache::stats`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachet_cache::{Cache, CacheEvent, Tier};
use cachet_core::{CacheKey, EntryFilter, Error};
use common::cache_with_clock;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

const HOUR: Duration = Duration::from_secs(3600);

fn key(id: &str) -> CacheKey {
    CacheKey::explicit("", id).unwrap()
}

/// Every event received so far (the sends happened before, on this task).
fn drain(events: &mut Receiver<CacheEvent>) -> Vec<CacheEvent> {
    let mut out = Vec::new();
    loop {
        match events.try_recv() {
            Ok(event) => out.push(event),
            Err(TryRecvError::Empty) => return out,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

async fn memory_cache() -> Cache {
    Cache::builder().in_memory().build().await.unwrap()
}

// ------------------------------------------------------------------------------ events

#[tokio::test]
async fn a_subscriber_sees_hit_miss_put_and_invalidate_in_order() {
    let cache = memory_cache().await;
    let mut events = cache.subscribe();

    assert_eq!(cache.get::<u32>("k").await.unwrap(), None);
    cache.insert("k", &7u32).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(7));
    assert!(cache.invalidate("k").await.unwrap());
    assert!(!cache.invalidate("k").await.unwrap()); // nothing deleted: no event

    let bytes = 1; // 7u32 in MessagePack
    assert_eq!(
        drain(&mut events),
        [
            CacheEvent::Miss { key: key("k") },
            CacheEvent::Put {
                key: key("k"),
                bytes
            },
            CacheEvent::Hit {
                key: key("k"),
                tier: Tier::Durable,
                bytes
            },
            CacheEvent::Invalidated { key: key("k") },
        ]
    );
}

#[tokio::test]
async fn events_before_subscribing_are_not_seen() {
    let cache = memory_cache().await;
    cache.insert("before", &1u8).await.unwrap();
    let mut events = cache.subscribe();
    cache.insert("after", &2u8).await.unwrap();
    let keys: Vec<_> = drain(&mut events)
        .iter()
        .map(|e| e.key().unwrap().clone())
        .collect();
    assert_eq!(keys, [key("after")]);
}

#[tokio::test]
async fn every_view_and_clone_publishes_to_one_channel() {
    let cache = memory_cache().await;
    let mut events = cache.subscribe();
    cache.clone().insert("a", &1u8).await.unwrap();
    cache.namespace("team").insert("b", &2u8).await.unwrap();
    let keys: Vec<String> = drain(&mut events)
        .iter()
        .map(|e| e.key().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["a", "team/b"]);
}

#[tokio::test]
async fn memory_hits_are_reported_with_the_memory_tier() {
    let cache = Cache::builder()
        .in_memory()
        .memory_tier(1 << 20)
        .build()
        .await
        .unwrap();
    cache.insert_bytes("raw", b"0123456789").await.unwrap(); // fills the memory tier
    cache.insert("typed", &"text").await.unwrap(); // does not: the first read backfills
    let mut events = cache.subscribe();

    cache.get_bytes("raw").await.unwrap().unwrap();
    cache.get::<String>("typed").await.unwrap().unwrap();
    cache.get::<String>("typed").await.unwrap().unwrap();
    let many = cache.get_bytes_many(["raw"]).await.unwrap();
    assert!(many[0].is_some());

    let tiers: Vec<(String, Tier)> = drain(&mut events)
        .into_iter()
        .map(|e| match e {
            CacheEvent::Hit { key, tier, .. } => (key.to_string(), tier),
            other => panic!("expected a hit, got {other:?}"),
        })
        .collect();
    assert_eq!(
        tiers,
        [
            ("raw".into(), Tier::Memory),
            ("typed".into(), Tier::Durable),
            ("typed".into(), Tier::Memory),
            ("raw".into(), Tier::Memory),
        ]
    );
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.memory_hits), (4, 3));
}

#[tokio::test]
async fn expired_reads_emit_expired_then_miss() {
    let (cache, clock, _dir) = cache_with_clock(None).await;
    cache.insert("k", &1u8).with_ttl(HOUR).await.unwrap();
    let mut events = cache.subscribe();

    clock.advance(HOUR - Duration::from_millis(1));
    assert_eq!(cache.get::<u8>("k").await.unwrap(), Some(1));
    clock.advance(Duration::from_millis(1));
    assert_eq!(cache.get::<u8>("k").await.unwrap(), None);

    let events = drain(&mut events);
    assert!(matches!(events[0], CacheEvent::Hit { .. }));
    assert_eq!(
        events[1..],
        [
            CacheEvent::Expired { key: key("k") },
            CacheEvent::Miss { key: key("k") }
        ]
    );
    assert_eq!(cache.stats().expirations, 1);
}

#[tokio::test]
async fn cleanup_expired_emits_expired_for_each_removed_entry() {
    let (cache, clock, _dir) = cache_with_clock(None).await;
    cache.insert("short", &1u8).with_ttl(HOUR).await.unwrap();
    cache.insert("long", &2u8).with_ttl(HOUR * 2).await.unwrap();
    cache.insert("forever", &3u8).await.unwrap();
    let mut events = cache.subscribe();

    clock.advance(HOUR);
    assert_eq!(cache.cleanup_expired().await.unwrap().entries_removed, 1);
    clock.advance(HOUR);
    assert_eq!(cache.cleanup_expired().await.unwrap().entries_removed, 1);

    assert_eq!(
        drain(&mut events),
        [
            CacheEvent::Expired { key: key("short") },
            CacheEvent::Expired { key: key("long") }
        ]
    );
    assert_eq!(cache.stats().expirations, 2);
}

#[tokio::test]
async fn deletes_by_filter_emit_one_invalidated_per_deleted_entry() {
    let cache = memory_cache().await;
    cache.insert("q1", &1u8).with_tag("sales").await.unwrap();
    cache.insert("q2", &2u8).with_tag("sales").await.unwrap();
    cache.insert("hr", &3u8).await.unwrap();
    let mut events = cache.subscribe();

    let filter = EntryFilter::all().tag("sales");
    assert_eq!(
        cache
            .invalidate_where(&filter, true)
            .await
            .unwrap()
            .entries(),
        2
    );
    assert!(drain(&mut events).is_empty(), "a dry run deletes nothing");
    cache.invalidate_tag("sales").await.unwrap();
    cache.invalidate_many(["hr", "absent"]).await.unwrap();

    assert_eq!(
        drain(&mut events),
        [
            CacheEvent::Invalidated { key: key("q1") },
            CacheEvent::Invalidated { key: key("q2") },
            CacheEvent::Invalidated { key: key("hr") },
        ]
    );
    assert_eq!(cache.stats().invalidations, 3);
}

#[tokio::test]
async fn failed_computations_emit_a_miss_then_an_error_and_are_not_cached() {
    let cache = memory_cache().await;
    let mut events = cache.subscribe();
    let result = cache
        .try_get_with::<u32, _, _, _>("k", || async { Err("upstream timed out") })
        .await;
    assert!(matches!(result, Err(Error::Compute { .. })));

    let events = drain(&mut events);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], CacheEvent::Miss { key: key("k") });
    match &events[1] {
        CacheEvent::Error {
            key: Some(k),
            operation: "compute",
            error,
        } => {
            assert_eq!(k, &key("k"));
            assert_eq!(error, "upstream timed out");
        }
        other => panic!("expected a compute error, got {other:?}"),
    }
    assert_eq!(cache.stats().computations, 1);
}

#[tokio::test]
async fn get_with_reports_a_computation_as_a_miss_and_a_put() {
    let cache = memory_cache().await;
    let mut events = cache.subscribe();
    let v: u8 = cache.get_with("k", || async { 5 }).await.unwrap();
    let again: u8 = cache
        .get_with("k", || async { unreachable!() })
        .await
        .unwrap();
    assert_eq!((v, again), (5, 5));
    assert_eq!(
        drain(&mut events),
        [
            CacheEvent::Miss { key: key("k") },
            CacheEvent::Put {
                key: key("k"),
                bytes: 1
            },
            CacheEvent::Hit {
                key: key("k"),
                tier: Tier::Durable,
                bytes: 1
            },
        ]
    );
}

#[cfg(all(feature = "meta-sqlite", feature = "blob-fs"))]
#[tokio::test]
async fn integrity_failures_emit_error_events() {
    use cachet_core::MetadataBackend;

    let dir = tempfile::tempdir().unwrap();
    let signing = cachet_storage::SigningKey::from_bytes(&[7u8; 32]).unwrap();
    let cache = Cache::builder()
        .directory(dir.path())
        .signing_key(signing)
        .build()
        .await
        .unwrap();
    let meta = cache.insert("report", &vec![1u32, 2]).await.unwrap();
    // Someone without the signing key changes the row.
    let index = cachet_meta_sqlite::SqliteMetadata::open_url(&format!(
        "sqlite://{}",
        dir.path().join(cachet_cache::INDEX_FILE).display()
    ))
    .unwrap();
    let mut record = index.get(&meta.key).await.unwrap().unwrap();
    record.meta.tags.push("forged".into());
    index.put(record).await.unwrap();

    let mut events = cache.subscribe();
    assert_eq!(cache.get::<Vec<u32>>("report").await.unwrap(), None);
    let events = drain(&mut events);
    assert!(
        matches!(&events[..], [
            CacheEvent::Error { key: Some(k), operation: "integrity", error },
            CacheEvent::Miss { .. },
        ] if *k == meta.key && error.contains("signature")),
        "{events:?}"
    );
    assert_eq!(cache.stats().integrity_failures, 1);
}

#[tokio::test]
async fn a_lagging_subscriber_is_told_how_many_events_it_missed() {
    let cache = Cache::builder()
        .in_memory()
        .event_capacity(2)
        .build()
        .await
        .unwrap();
    let mut events = cache.subscribe();
    for i in 0..5u8 {
        cache.insert(format!("k{i}").as_str(), &i).await.unwrap();
    }
    assert_eq!(events.recv().await, Err(RecvError::Lagged(3)));
    // Then the oldest kept: the last two.
    let rest: Vec<String> = drain(&mut events)
        .iter()
        .map(|e| e.key().unwrap().to_string())
        .collect();
    assert_eq!(rest, ["k3", "k4"]);
}

#[tokio::test]
async fn an_event_capacity_of_zero_fails_build_naming_the_option() {
    let err = Cache::builder()
        .in_memory()
        .event_capacity(0)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config { ref field, .. } if field == "event_capacity"));
}

#[test]
fn the_blocking_cache_publishes_the_same_events() {
    let cache = cachet_cache::blocking::Cache::builder()
        .in_memory()
        .build()
        .unwrap();
    let mut events = cache.subscribe();
    let v: u8 = cache.get_with("k", || 9).unwrap();
    assert_eq!(v, 9);
    assert_eq!(cache.get::<u8>("k").unwrap(), Some(9));
    let kinds: Vec<&str> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| e.kind())
        .collect();
    assert_eq!(kinds, ["miss", "put", "hit"]);
}

// ------------------------------------------------------------------------------ metrics

/// One recorded metric: name, labels, value.
type Recorded = (String, Vec<(String, String)>, DebugValue);

/// The value of one counter (summed over the label sets that contain `labels`), or 0.
fn counter(snapshot: &[Recorded], name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, value)| match value {
            DebugValue::Counter(c) => *c,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn histogram_count(snapshot: &[Recorded], operation: &str) -> usize {
    snapshot
        .iter()
        .filter(|(n, l, _)| {
            n == "cachet_operation_seconds"
                && l.iter().any(|(k, v)| k == "operation" && v == operation)
        })
        .map(|(_, _, value)| match value {
            DebugValue::Histogram(samples) => samples.len(),
            other => panic!("not a histogram: {other:?}"),
        })
        .sum()
}

/// Runs `work` on a current-thread runtime with a local debugging recorder; returns its
/// result and every metric recorded, as (name, labels, value).
fn with_recorder<T>(work: impl AsyncFnOnce() -> T) -> (T, Vec<Recorded>) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The recorder is per thread: a current-thread runtime keeps every task on this one.
    let out = metrics::with_local_recorder(&recorder, || runtime.block_on(work()));
    let snapshot = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (key.name().to_owned(), labels, value)
        })
        .collect();
    (out, snapshot)
}

#[test]
fn metrics_counters_match_cache_stats() {
    let (stats, snapshot) = with_recorder(async || {
        let (cache, clock, _dir) = cache_with_clock(None).await;
        let tiered = Cache::builder()
            .in_memory()
            .memory_tier(1 << 20)
            .build()
            .await
            .unwrap();
        cache.insert("a", &vec![1u8; 100]).await.unwrap();
        cache
            .insert_bytes("b", b"raw")
            .with_ttl(HOUR)
            .await
            .unwrap();
        let _: Option<Vec<u8>> = cache.get("a").await.unwrap();
        let _ = cache.get_bytes("b").await.unwrap();
        let _: Option<u8> = cache.get("absent").await.unwrap();
        let _: u8 = cache.get_with("computed", || async { 1 }).await.unwrap();
        clock.advance(HOUR);
        let _ = cache.get_bytes("b").await.unwrap(); // expired
        cache.invalidate("a").await.unwrap();
        tiered.insert_bytes("m", b"memory").await.unwrap();
        let _ = tiered.get_bytes("m").await.unwrap();
        let (one, two) = (cache.stats(), tiered.stats());
        (one, two)
    });
    let (durable, memory) = stats;

    assert_eq!(
        counter(&snapshot, "cachet_hits_total", &[("tier", "durable")]),
        durable.hits + memory.hits - memory.memory_hits
    );
    assert_eq!(
        counter(&snapshot, "cachet_hits_total", &[("tier", "memory")]),
        memory.memory_hits
    );
    assert_eq!(
        counter(&snapshot, "cachet_misses_total", &[]),
        durable.misses + memory.misses
    );
    assert_eq!(
        counter(&snapshot, "cachet_puts_total", &[]),
        durable.inserts + memory.inserts
    );
    assert_eq!(
        counter(&snapshot, "cachet_bytes_read_total", &[]),
        durable.bytes_read + memory.bytes_read
    );
    assert_eq!(
        counter(&snapshot, "cachet_bytes_written_total", &[]),
        durable.bytes_written + memory.bytes_written
    );
    assert_eq!(
        counter(&snapshot, "cachet_computations_total", &[]),
        durable.computations
    );
    assert_eq!(
        counter(&snapshot, "cachet_expirations_total", &[]),
        durable.expirations
    );
    assert_eq!(
        counter(&snapshot, "cachet_invalidations_total", &[]),
        durable.invalidations
    );
    // The values themselves, so that the comparison above is not 0 == 0.
    assert_eq!((durable.hits, durable.misses, durable.inserts), (2, 3, 3));
    assert_eq!((memory.hits, memory.memory_hits), (1, 1));
    assert_eq!(
        (
            durable.expirations,
            durable.invalidations,
            durable.computations
        ),
        (1, 1, 1)
    );
}

#[test]
fn durable_operations_are_timed_and_memory_hits_are_not() {
    let ((), snapshot) = with_recorder(async || {
        let cache = Cache::builder()
            .in_memory()
            .memory_tier(1 << 20)
            .build()
            .await
            .unwrap();
        cache.insert_bytes("m", b"memory").await.unwrap();
        for _ in 0..3 {
            cache.get_bytes("m").await.unwrap(); // memory hits
        }
        cache.get_bytes("absent").await.unwrap(); // reaches the index
        let _: u8 = cache.get_with("c", || async { 1 }).await.unwrap();
    });
    assert_eq!(histogram_count(&snapshot, "insert_bytes"), 1);
    assert_eq!(histogram_count(&snapshot, "get_bytes"), 1);
    assert_eq!(histogram_count(&snapshot, "compute"), 1);
    assert_eq!(
        histogram_count(&snapshot, "insert"),
        1,
        "the computed value's insert"
    );
}

#[test]
fn metrics_label_tells_caches_apart() {
    let ((), snapshot) = with_recorder(async || {
        let a = Cache::builder()
            .in_memory()
            .metrics_label("thumbnails")
            .build()
            .await
            .unwrap();
        let b = Cache::builder()
            .in_memory()
            .metrics_label("reports")
            .build()
            .await
            .unwrap();
        a.insert("x", &1u8).await.unwrap();
        a.insert("y", &1u8).await.unwrap();
        b.insert("x", &1u8).await.unwrap();
        let _: Option<u8> = b.get("missing").await.unwrap();
    });
    assert_eq!(
        counter(&snapshot, "cachet_puts_total", &[("cache", "thumbnails")]),
        2
    );
    assert_eq!(
        counter(&snapshot, "cachet_puts_total", &[("cache", "reports")]),
        1
    );
    assert_eq!(
        counter(&snapshot, "cachet_misses_total", &[("cache", "reports")]),
        1
    );
    assert_eq!(
        counter(&snapshot, "cachet_misses_total", &[("cache", "thumbnails")]),
        0
    );
    assert!(histogram_count(&snapshot, "insert") >= 3);
}

#[test]
fn failed_computations_count_under_cachet_errors_total() {
    let ((), snapshot) = with_recorder(async || {
        let cache = memory_cache().await;
        let _ = cache
            .try_get_with::<u8, _, _, _>("k", || async { Err("no") })
            .await;
    });
    assert_eq!(
        counter(
            &snapshot,
            "cachet_errors_total",
            &[("operation", "compute")]
        ),
        1
    );
}

// ------------------------------------------------------------------------------ spans

/// A minimal `tracing` subscriber that keeps every span's name and fields, and the stack of
/// entered spans (so that `Span::current` works).
#[derive(Default, Clone)]
struct SpanRecorder {
    spans: Arc<Mutex<Vec<RecordedSpan>>>,
    stack: Arc<Mutex<Vec<tracing::span::Id>>>,
}

#[derive(Debug, Clone)]
struct RecordedSpan {
    name: &'static str,
    metadata: &'static tracing::Metadata<'static>,
    fields: BTreeMap<String, String>,
}

struct FieldVisitor<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl tracing::Subscriber for SpanRecorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = BTreeMap::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        let mut spans = self.spans.lock().unwrap();
        spans.push(RecordedSpan {
            name: attrs.metadata().name(),
            metadata: attrs.metadata(),
            fields,
        });
        tracing::span::Id::from_u64(spans.len() as u64)
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut spans = self.spans.lock().unwrap();
        let index = span.into_u64() as usize - 1;
        values.record(&mut FieldVisitor(&mut spans[index].fields));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, span: &tracing::span::Id) {
        self.stack.lock().unwrap().push(span.clone());
    }
    fn exit(&self, _: &tracing::span::Id) {
        self.stack.lock().unwrap().pop();
    }
    fn current_span(&self) -> tracing_core::span::Current {
        match self.stack.lock().unwrap().last() {
            Some(id) => {
                let metadata = self.spans.lock().unwrap()[id.into_u64() as usize - 1].metadata;
                tracing_core::span::Current::new(id.clone(), metadata)
            }
            None => tracing_core::span::Current::none(),
        }
    }
}

/// The spans recorded while `work` ran (on a current-thread runtime, this thread only).
fn spans_of(work: impl AsyncFnOnce()) -> Vec<RecordedSpan> {
    let recorder = SpanRecorder::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(recorder.clone(), || runtime.block_on(work()));
    recorder.spans.lock().unwrap().clone()
}

fn fields(span: &RecordedSpan) -> HashMap<&str, &str> {
    span.fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn spans_carry_key_and_outcome() {
    let spans = spans_of(async || {
        let cache = memory_cache().await;
        let _: Option<u32> = cache.get("k").await.unwrap();
        cache.insert("k", &300u32).await.unwrap();
        let _: Option<u32> = cache.get("k").await.unwrap();
    });
    let ours: Vec<(&str, HashMap<&str, &str>)> = spans
        .iter()
        .filter(|s| s.metadata.target().starts_with("cachet_cache"))
        .map(|s| (s.name, fields(s)))
        .collect();
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert_eq!(ours[0].0, "get");
    assert_eq!(ours[0].1["key"], "k");
    assert_eq!(ours[0].1["outcome"], "miss");
    assert!(!ours[0].1.contains_key("tier"));
    assert_eq!(ours[1].0, "insert");
    assert_eq!(ours[1].1["key"], "k");
    assert_eq!(ours[1].1["outcome"], "stored");
    assert_eq!(ours[1].1["bytes"], "3"); // 300u32 in MessagePack
    assert_eq!(ours[2].0, "get");
    assert_eq!(
        (ours[2].1["outcome"], ours[2].1["tier"], ours[2].1["bytes"]),
        ("hit", "durable", "3")
    );
}

#[test]
fn get_with_spans_say_whether_the_value_was_computed() {
    let spans = spans_of(async || {
        let cache = memory_cache().await;
        let _: u8 = cache.get_with("k", || async { 1 }).await.unwrap();
        let _: u8 = cache.get_with("k", || async { 2 }).await.unwrap();
    });
    let outcomes: Vec<(&str, &str)> = spans
        .iter()
        .filter(|s| s.name == "get_with")
        .map(|s| (s.fields["key"].as_str(), s.fields["outcome"].as_str()))
        .collect();
    assert_eq!(outcomes, [("k", "computed"), ("k", "hit")]);
    // The computed value's insert has its own span, inside get_with's.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "insert" && s.fields["outcome"] == "stored")
    );
}

#[test]
fn batch_operations_get_one_span_without_per_key_fields() {
    let spans = spans_of(async || {
        let cache = memory_cache().await;
        cache
            .insert_many([("a", &1u8), ("b", &2u8)], &Default::default())
            .await
            .unwrap();
        let _: Vec<Option<u8>> = cache.get_many(["a", "b", "c"]).await.unwrap();
    });
    let names: Vec<&str> = spans.iter().map(|s| s.name).collect();
    assert_eq!(names, ["insert_many", "get_many"]);
    assert!(spans.iter().all(|s| s.fields.is_empty()), "{spans:?}");
}

#[tokio::test]
async fn a_get_with_over_an_expired_entry_reports_one_expiry_then_computes() {
    let (cache, clock, _dir) = cache_with_clock(None).await;
    cache.insert("k", &1u8).with_ttl(HOUR).await.unwrap();
    clock.advance(HOUR);
    let mut events = cache.subscribe();
    let v: u8 = cache.get_with("k", || async { 2 }).await.unwrap();
    assert_eq!(v, 2);
    let kinds: Vec<&str> = drain(&mut events).iter().map(CacheEvent::kind).collect();
    assert_eq!(kinds, ["expired", "miss", "put"]);
    assert_eq!(cache.stats().expirations, 1);
}

#[test]
fn metrics_go_to_the_recorder_installed_when_the_cache_was_built() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (at_build, later) = (DebuggingRecorder::new(), DebuggingRecorder::new());
    let (at_build_snapshot, later_snapshot) = (at_build.snapshotter(), later.snapshotter());
    let cache = metrics::with_local_recorder(&at_build, || runtime.block_on(memory_cache()));
    metrics::with_local_recorder(&later, || {
        runtime.block_on(async { cache.insert("k", &1u8).await.unwrap() })
    });
    let puts = |snapshot: metrics_util::debugging::Snapshot| {
        snapshot
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == "cachet_puts_total")
            .map(|(.., value)| value)
            .collect::<Vec<_>>()
    };
    assert_eq!(puts(at_build_snapshot.snapshot()), [DebugValue::Counter(1)]);
    assert!(puts(later_snapshot.snapshot()).is_empty());
}

/// Memory blobs that can be switched off: every call then fails as an unreachable service.
#[derive(Debug, Default, Clone)]
struct SwitchableBlobs {
    inner: cachet_core::memory::MemoryBlobs,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl SwitchableBlobs {
    fn check(&self) -> cachet_core::Result<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Unavailable {
                backend: "switchable".into(),
                source: "switched off".into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl cachet_core::BlobBackend for SwitchableBlobs {
    fn name(&self) -> &str {
        "switchable"
    }
    fn capabilities(&self) -> cachet_core::BlobCapabilities {
        self.inner.capabilities()
    }
    async fn put(
        &self,
        id: &cachet_core::BlobId,
        data: bytes::Bytes,
    ) -> cachet_core::Result<cachet_core::BlobReceipt> {
        self.check()?;
        self.inner.put(id, data).await
    }
    async fn writer(&self) -> cachet_core::Result<Box<dyn cachet_core::BlobWriter>> {
        self.check()?;
        self.inner.writer().await
    }
    async fn get(&self, id: &cachet_core::BlobId) -> cachet_core::Result<bytes::Bytes> {
        self.check()?;
        self.inner.get(id).await
    }
    async fn get_stream(
        &self,
        id: &cachet_core::BlobId,
    ) -> cachet_core::Result<cachet_core::ByteStream> {
        self.check()?;
        self.inner.get_stream(id).await
    }
    async fn head(
        &self,
        id: &cachet_core::BlobId,
    ) -> cachet_core::Result<Option<cachet_core::BlobInfo>> {
        self.check()?;
        self.inner.head(id).await
    }
    async fn delete(&self, id: &cachet_core::BlobId) -> cachet_core::Result<bool> {
        self.check()?;
        self.inner.delete(id).await
    }
    async fn list(&self) -> cachet_core::Result<cachet_core::BlobInfoStream> {
        self.check()?;
        self.inner.list().await
    }
    async fn cleanup_temporary(
        &self,
        older_than: cachet_core::Timestamp,
    ) -> cachet_core::Result<u64> {
        self.check()?;
        self.inner.cleanup_temporary(older_than).await
    }
}

#[tokio::test]
async fn backend_failures_during_reads_and_writes_emit_error_events() {
    let blobs = SwitchableBlobs::default();
    let cache = Cache::builder()
        .index("memory://")
        .blob_backend(Arc::new(blobs.clone()))
        .build()
        .await
        .unwrap();
    cache
        .insert_bytes("big", common::large_value(1))
        .await
        .unwrap(); // in a blob
    blobs.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut events = cache.subscribe();

    let read = cache.get_bytes("big").await;
    assert!(matches!(read, Err(Error::Unavailable { .. })), "{read:?}");
    let write = cache.insert_bytes("other", common::large_value(2)).await;
    assert!(matches!(write, Err(Error::Unavailable { .. })), "{write:?}");

    let failures: Vec<(Option<String>, &str)> = drain(&mut events)
        .into_iter()
        .map(|e| match e {
            CacheEvent::Error {
                key,
                operation,
                error,
            } => {
                assert!(error.contains("switched off"), "{error}");
                (key.map(|k| k.to_string()), operation)
            }
            other => panic!("expected an error event, got {other:?}"),
        })
        .collect();
    assert_eq!(
        failures,
        [
            (Some("big".to_owned()), "read"),
            (Some("other".to_owned()), "write")
        ]
    );
}

#[tokio::test]
async fn writers_updates_and_readers_report_like_inserts_and_gets() {
    let cache = memory_cache().await;
    let mut events = cache.subscribe();
    let mut writer = cache.writer("streamed").await.unwrap();
    writer.write(b"0123456789").await.unwrap();
    writer.finish().await.unwrap();
    cache.update_bytes("streamed", b"abc").await.unwrap();
    let reader = cache.reader("streamed").await.unwrap();
    assert!(reader.is_some());
    assert!(cache.reader("absent").await.unwrap().is_none());

    assert_eq!(
        drain(&mut events),
        [
            CacheEvent::Put {
                key: key("streamed"),
                bytes: 10
            },
            CacheEvent::Put {
                key: key("streamed"),
                bytes: 3
            },
            CacheEvent::Hit {
                key: key("streamed"),
                tier: Tier::Durable,
                bytes: 3
            },
            CacheEvent::Miss { key: key("absent") },
        ]
    );
    let stats = cache.stats();
    assert_eq!((stats.inserts, stats.hits, stats.misses), (2, 1, 1));
}
