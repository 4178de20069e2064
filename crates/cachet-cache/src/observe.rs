//! Observability: the names of the metrics a cache records through the [`metrics`] facade, in
//! one place (documented in docs/OBSERVABILITY.md), and [`describe_metrics`].
//!
//! Inside the crate, one observer per cache updates the stats counters, the metrics, the
//! current span's fields and the event channel together, so that they never disagree.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use cachet_core::{CacheKey, Error};
use metrics::{Counter, Histogram, Key, Label, Level, Metadata, SharedString, Unit};
use tokio::sync::broadcast;
use tracing::Span;

use crate::events::{CacheEvent, EvictionReason, Tier};
use crate::stats::Counters;

/// Names of the metrics a cache records through the [`metrics`] facade.
///
/// Every metric also carries the label `cache="<name>"` when the cache was built with
/// [`CacheBuilder::metrics_label`](crate::CacheBuilder::metrics_label).
pub mod names {
    /// Counter: reads served, labelled `tier` = `memory` | `durable`.
    pub const HITS: &str = "cachet_hits_total";
    /// Counter: reads that found no live, valid value (a `get_with` that computed included).
    pub const MISSES: &str = "cachet_misses_total";
    /// Counter: entries written.
    pub const PUTS: &str = "cachet_puts_total";
    /// Counter: raw bytes of the values returned by hits.
    pub const BYTES_READ: &str = "cachet_bytes_read_total";
    /// Counter: raw bytes of the values written.
    pub const BYTES_WRITTEN: &str = "cachet_bytes_written_total";
    /// Counter: entries deleted by callers (`invalidate*`).
    pub const INVALIDATIONS: &str = "cachet_invalidations_total";
    /// Counter: entries the cache removed to keep a budget, labelled `reason` = `expired` |
    /// `idle` | `max_bytes` | `max_entries` | `namespace_quota`.
    pub const EVICTIONS: &str = "cachet_evictions_total";
    /// Counter: expired entries found by reads or deleted by `cleanup_expired`.
    pub const EXPIRATIONS: &str = "cachet_expirations_total";
    /// Counter: failures, labelled `operation` = `integrity` | `compute` | `store_computed` |
    /// `read` | `write`.
    pub const ERRORS: &str = "cachet_errors_total";
    /// Counter: computations run by `get_with` / `try_get_with` / `memoize`.
    pub const COMPUTATIONS: &str = "cachet_computations_total";
    /// Histogram (seconds): duration of operations that reach the durable tier, labelled
    /// `operation` (`get`, `get_bytes`, `insert`, `compute`, ...). Memory-tier hits are not
    /// timed (a clock read would cost as much as the hit); they are counted in
    /// `cachet_hits_total{tier="memory"}`.
    pub const OPERATION_SECONDS: &str = "cachet_operation_seconds";
}

/// Describes every metric (help text and unit) to the installed recorder, for exporters that
/// print descriptions, such as Prometheus's `# HELP` lines. Building a cache calls it.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram};
    describe_counter!(names::HITS, Unit::Count, "Cache reads served, by tier");
    describe_counter!(
        names::MISSES,
        Unit::Count,
        "Cache reads that found no live, valid value"
    );
    describe_counter!(names::PUTS, Unit::Count, "Cache entries written");
    describe_counter!(
        names::BYTES_READ,
        Unit::Bytes,
        "Raw bytes of the values returned by cache hits"
    );
    describe_counter!(
        names::BYTES_WRITTEN,
        Unit::Bytes,
        "Raw bytes of the values written to the cache"
    );
    describe_counter!(
        names::INVALIDATIONS,
        Unit::Count,
        "Cache entries deleted by callers"
    );
    describe_counter!(
        names::EVICTIONS,
        Unit::Count,
        "Cache entries evicted to keep a budget, by reason"
    );
    describe_counter!(
        names::EXPIRATIONS,
        Unit::Count,
        "Expired cache entries found by reads or deleted by cleanup"
    );
    describe_counter!(names::ERRORS, Unit::Count, "Cache failures, by operation");
    describe_counter!(
        names::COMPUTATIONS,
        Unit::Count,
        "Values computed by get_with, try_get_with and memoize"
    );
    describe_histogram!(
        names::OPERATION_SECONDS,
        Unit::Seconds,
        "Duration of cache operations that reach the durable tier, by operation"
    );
}

/// What every metric is registered with.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The default capacity of the event channel
/// ([`CacheBuilder::event_capacity`](crate::CacheBuilder::event_capacity)).
pub(crate) const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// The operations timed in `cachet_operation_seconds` (see [`Observer::timer`]).
const TIMED: &[&str] = &[
    "get",
    "get_bytes",
    "reader",
    "metadata",
    "get_many",
    "get_bytes_many",
    "insert",
    "insert_bytes",
    "insert_many",
    "insert_bytes_many",
    "writer_finish",
    "update",
    "update_bytes",
    "update_many",
    "compute",
    "invalidate",
    "invalidate_many",
    "invalidate_where",
    "touch",
    "touch_many",
    "find",
    "copy",
    "rename",
    "cleanup_expired",
    "gc",
    "export",
    "import",
    "verify",
    "repair",
];

/// The `operation` labels of `cachet_errors_total`.
const FAILING: &[&str] = &["integrity", "compute", "store_computed", "read", "write"];

/// Every metric's handle, registered once with the recorder installed when the cache is built
/// (with the cache's label): recording one is a call through it, or nothing at all with no
/// recorder (no registry look-up, no allocation).
struct Handles {
    hits_memory: Counter,
    hits_durable: Counter,
    misses: Counter,
    puts: Counter,
    bytes_read: Counter,
    bytes_written: Counter,
    invalidations: Counter,
    expirations: Counter,
    computations: Counter,
    evictions: [Counter; EvictionReason::ALL.len()],
    errors: HashMap<&'static str, Counter>,
    durations: HashMap<&'static str, Histogram>,
}

/// A hit's size and where it was served from (a bare size is a durable hit).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Served {
    pub(crate) bytes: u64,
    pub(crate) tier: Tier,
}

impl Served {
    pub(crate) fn memory(bytes: u64) -> Served {
        Served {
            bytes,
            tier: Tier::Memory,
        }
    }
}

impl From<u64> for Served {
    fn from(bytes: u64) -> Served {
        Served {
            bytes,
            tier: Tier::Durable,
        }
    }
}

/// Stats, metrics, span fields and events of one cache (shared by its clones and views).
pub(crate) struct Observer {
    pub(crate) counters: Counters,
    /// Whether anyone may be listening: checked (one relaxed load) before an event is built.
    subscribed: AtomicBool,
    /// Created by the first `subscribe`.
    events: OnceLock<broadcast::Sender<CacheEvent>>,
    capacity: usize,
    /// The `cache` label of every metric.
    label: Option<SharedString>,
    metrics: Handles,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("counters", &self.counters.snapshot())
            .field("subscribed", &self.subscribed.load(Ordering::Relaxed))
            .field("capacity", &self.capacity)
            .field("label", &self.label)
            .finish()
    }
}

impl Observer {
    /// An observer whose event channel holds `capacity` events (at least 1) and whose metrics
    /// carry `cache="<label>"` when a label is given.
    pub(crate) fn new(capacity: usize, label: Option<&str>) -> Observer {
        let label: Option<SharedString> = label.map(|l| SharedString::from(l.to_owned()));
        let metrics = metrics::with_recorder(|recorder| {
            let key = |name: &'static str, extra: Option<(&'static str, &'static str)>| {
                let mut labels = Vec::new();
                if let Some((k, v)) = extra {
                    labels.push(Label::from_static_parts(k, v));
                }
                if let Some(label) = &label {
                    labels.push(Label::new("cache", label.clone()));
                }
                Key::from_parts(name, labels)
            };
            let counter = |name, extra| recorder.register_counter(&key(name, extra), &METADATA);
            Handles {
                hits_memory: counter(names::HITS, Some(("tier", Tier::Memory.as_str()))),
                hits_durable: counter(names::HITS, Some(("tier", Tier::Durable.as_str()))),
                misses: counter(names::MISSES, None),
                puts: counter(names::PUTS, None),
                bytes_read: counter(names::BYTES_READ, None),
                bytes_written: counter(names::BYTES_WRITTEN, None),
                invalidations: counter(names::INVALIDATIONS, None),
                expirations: counter(names::EXPIRATIONS, None),
                computations: counter(names::COMPUTATIONS, None),
                evictions: EvictionReason::ALL
                    .map(|r| counter(names::EVICTIONS, Some(("reason", r.as_str())))),
                errors: FAILING
                    .iter()
                    .map(|&op| (op, counter(names::ERRORS, Some(("operation", op)))))
                    .collect(),
                durations: TIMED
                    .iter()
                    .map(|&op| {
                        let key = key(names::OPERATION_SECONDS, Some(("operation", op)));
                        (op, recorder.register_histogram(&key, &METADATA))
                    })
                    .collect(),
            }
        });
        describe_metrics();
        Observer {
            counters: Counters::default(),
            subscribed: AtomicBool::new(false),
            events: OnceLock::new(),
            capacity: capacity.max(1),
            label,
            metrics,
        }
    }

    // ------------------------------------------------------------ events

    /// A receiver of every event published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<CacheEvent> {
        let sender = self
            .events
            .get_or_init(|| broadcast::channel(self.capacity).0);
        let receiver = sender.subscribe();
        self.subscribed.store(true, Ordering::SeqCst);
        receiver
    }

    /// Builds and sends an event, only when someone may be listening.
    #[inline]
    fn publish(&self, event: impl FnOnce() -> CacheEvent) {
        if self.subscribed.load(Ordering::Relaxed) {
            self.send(event());
        }
    }

    #[cold]
    fn send(&self, event: CacheEvent) {
        let Some(sender) = self.events.get() else {
            return;
        };
        if sender.send(event).is_err() {
            // Every receiver is gone: stop building events. A `subscribe` racing with this
            // has counted its receiver before setting the flag, so it is seen here and the
            // flag set again.
            self.subscribed.store(false, Ordering::SeqCst);
            if sender.receiver_count() > 0 {
                self.subscribed.store(true, Ordering::SeqCst);
            }
        }
    }

    // ------------------------------------------------------------ what happened

    /// Whether a hit must name its key: an event subscriber may be listening, or debug spans
    /// may be on.
    #[inline]
    pub(crate) fn needs_key(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed) || tracing::level_enabled!(tracing::Level::DEBUG)
    }

    /// A memory hit served without naming its key (only when [`needs_key`](Self::needs_key)
    /// is false: there is no span field or event to fill).
    #[inline]
    pub(crate) fn memory_hit_unnamed(&self, bytes: u64) {
        self.counters.hit(bytes);
        self.counters.memory_hit();
        self.metrics.hits_memory.increment(1);
        self.metrics.bytes_read.increment(bytes);
    }

    /// A value read found a live, valid value.
    #[inline]
    pub(crate) fn hit(&self, key: &CacheKey, served: Served) {
        let Served { bytes, tier } = served;
        self.counters.hit(bytes);
        let hits = match tier {
            Tier::Memory => {
                self.counters.memory_hit();
                &self.metrics.hits_memory
            }
            Tier::Durable => &self.metrics.hits_durable,
        };
        hits.increment(1);
        self.metrics.bytes_read.increment(bytes);
        in_span(|span| {
            span.record("outcome", "hit");
            span.record("tier", tier.as_str());
            span.record("bytes", bytes);
        });
        self.publish(|| CacheEvent::Hit {
            key: key.clone(),
            tier,
            bytes,
        });
    }

    /// A value read found no live, valid value.
    pub(crate) fn miss(&self, key: &CacheKey) {
        self.counters.miss();
        self.metrics.misses.increment(1);
        in_span(|span| {
            span.record("outcome", "miss");
        });
        self.publish(|| CacheEvent::Miss { key: key.clone() });
    }

    /// `get_with` missed and computes the value (a miss and a computation).
    pub(crate) fn computing(&self, key: &CacheKey) {
        self.counters.computation();
        self.counters.miss();
        self.metrics.computations.increment(1);
        self.metrics.misses.increment(1);
        in_span(|span| {
            span.record("outcome", "computed");
        });
        self.publish(|| CacheEvent::Miss { key: key.clone() });
    }

    /// An entry was written.
    pub(crate) fn put(&self, key: &CacheKey, bytes: u64) {
        self.counters.insert(bytes);
        self.metrics.puts.increment(1);
        self.metrics.bytes_written.increment(bytes);
        in_span(|span| {
            span.record("outcome", "stored");
            span.record("bytes", bytes);
        });
        self.publish(|| CacheEvent::Put {
            key: key.clone(),
            bytes,
        });
    }

    /// A caller deleted an entry.
    pub(crate) fn invalidated(&self, key: &CacheKey) {
        self.counters.invalidation();
        self.metrics.invalidations.increment(1);
        in_span(|span| {
            span.record("outcome", "removed");
        });
        self.publish(|| CacheEvent::Invalidated { key: key.clone() });
    }

    /// A read found the entry expired, or `cleanup_expired` deleted it.
    pub(crate) fn expired(&self, key: &CacheKey) {
        self.counters.expiration();
        self.metrics.expirations.increment(1);
        self.publish(|| CacheEvent::Expired { key: key.clone() });
    }

    /// An eviction run removed an entry (over a limit, idle, or expired).
    pub(crate) fn evicted(&self, key: &CacheKey, reason: EvictionReason, bytes: u64) {
        self.counters.eviction();
        self.metrics.evictions[reason.index()].increment(1);
        self.publish(|| CacheEvent::Evicted {
            key: key.clone(),
            reason,
            bytes,
        });
    }

    /// A damaged entry was found (counted in `integrity_failures` as well).
    pub(crate) fn integrity_failure(&self, key: &CacheKey, error: &Error) {
        self.counters.integrity_failure();
        self.error(Some(key), "integrity", error);
    }

    /// An operation failed: counted under `cachet_errors_total{operation}` and published.
    pub(crate) fn error(
        &self,
        key: Option<&CacheKey>,
        operation: &'static str,
        error: &dyn std::fmt::Display,
    ) {
        match self.metrics.errors.get(operation) {
            Some(counter) => counter.increment(1),
            None => self.unlisted(names::ERRORS, operation, |r, k| {
                r.register_counter(k, &METADATA).increment(1);
            }),
        }
        self.publish(|| CacheEvent::Error {
            key: key.cloned(),
            operation,
            error: error.to_string(),
        });
    }

    /// A backend failure during a read or a write (`operation`: `"read"` or `"write"`); other
    /// errors (a caller's mistake, a type mismatch, an absent entry) are not reported.
    pub(crate) fn failed(&self, key: Option<&CacheKey>, operation: &'static str, error: &Error) {
        if matches!(
            error,
            Error::Unavailable { .. }
                | Error::Conflict { .. }
                | Error::Io { .. }
                | Error::Backend { .. }
        ) {
            self.error(key, operation, error);
        }
    }

    /// Times an operation that reaches the durable tier: the duration is recorded in
    /// `cachet_operation_seconds{operation}` when the guard is dropped.
    pub(crate) fn timer(&self, operation: &'static str) -> Timer<'_> {
        Timer {
            observer: self,
            operation,
            start: Instant::now(),
        }
    }

    /// Records into a metric whose label value is not in the lists above (through the
    /// recorder installed now; every name this crate uses is listed, so this is a fallback).
    #[cold]
    fn unlisted(
        &self,
        name: &'static str,
        operation: &'static str,
        record: impl FnOnce(&dyn metrics::Recorder, &Key),
    ) {
        let mut labels = vec![Label::from_static_parts("operation", operation)];
        if let Some(label) = &self.label {
            labels.push(Label::new("cache", label.clone()));
        }
        let key = Key::from_parts(name, labels);
        metrics::with_recorder(|recorder| record(recorder, &key));
    }
}

/// Records an operation's duration when dropped (see [`Observer::timer`]).
pub(crate) struct Timer<'a> {
    observer: &'a Observer,
    operation: &'static str,
    start: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let seconds = self.start.elapsed().as_secs_f64();
        match self.observer.metrics.durations.get(self.operation) {
            Some(histogram) => histogram.record(seconds),
            None => self
                .observer
                .unlisted(names::OPERATION_SECONDS, self.operation, |r, k| {
                    r.register_histogram(k, &METADATA).record(seconds);
                }),
        }
    }
}

/// The `DEBUG` span of a single-key read (`get`, `get_bytes`, `get_with`), with the fields the
/// observer records. Made by hand rather than by `#[instrument]`, which would move the whole
/// operation's future into its wrapper on every call, a memory hit included.
macro_rules! read_span {
    ($name:literal) => {
        tracing::debug_span!(
            $name,
            key = tracing::field::Empty,
            tier = tracing::field::Empty,
            bytes = tracing::field::Empty,
            outcome = tracing::field::Empty
        )
    };
}
pub(crate) use read_span;

/// Runs `record` on the current span if it is one of this crate's and debug spans may be on
/// (one comparison when they are not).
#[inline(always)]
pub(crate) fn in_span(record: impl FnOnce(&Span)) {
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        let span = Span::current();
        if span
            .metadata()
            .is_some_and(|m| m.target().starts_with("cachet_cache"))
        {
            record(&span);
        }
    }
}

/// Records the key an operation resolved into its span's `key` field.
#[inline(always)]
pub(crate) fn record_key(key: &CacheKey) {
    in_span(|span| {
        span.record("key", tracing::field::display(key));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_receiver_dropped_stops_event_building_and_a_new_one_restarts_it() {
        let observer = Observer::new(4, None);
        let key = CacheKey::explicit("", "k").unwrap();
        assert!(!observer.subscribed.load(Ordering::SeqCst));
        let mut rx = observer.subscribe();
        observer.miss(&key);
        assert_eq!(
            rx.recv().await.unwrap(),
            CacheEvent::Miss { key: key.clone() }
        );
        drop(rx);
        observer.miss(&key); // finds no receiver: the flag goes down
        assert!(!observer.subscribed.load(Ordering::SeqCst));
        let mut rx = observer.subscribe();
        observer.evicted(&key, EvictionReason::MaxBytes, 7);
        assert_eq!(
            rx.recv().await.unwrap(),
            CacheEvent::Evicted {
                key,
                reason: EvictionReason::MaxBytes,
                bytes: 7
            }
        );
        assert_eq!(observer.counters.snapshot().evictions, 1);
    }
}
