//! # cachet-cache
//!
//! Cache semantics over the cachet storage engine: keys derived from parameters, TTL,
//! an integrity policy, single-flight computation (`get_with`), stats, events, metrics and
//! spans, and a blocking wrapper.
//! Most users reach it through the `cachet` facade crate.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use cachet_cache::Cache;
//! use cachet_core::params;
//!
//! # let dir = std::env::temp_dir().join(format!("cachet-cache-doc-{}", std::process::id()));
//! # #[cfg(all(feature = "meta-sqlite", feature = "blob-fs"))]
//! let cache = Cache::open(&dir).await?; // SQLite index + blobs, one directory
//! # #[cfg(not(all(feature = "meta-sqlite", feature = "blob-fs")))]
//! # let cache = Cache::builder().in_memory().build().await?;
//! let key = params! { "dataset" => "sales-2026", "window" => 30, "model" => "xgb" };
//!
//! // Computed once, even when many tasks ask at the same moment.
//! let table: Vec<(String, f64)> = cache
//!     .get_with(&key, || async { vec![("north".to_owned(), 1.5), ("south".to_owned(), 2.0)] })
//!     .await?;
//!
//! // Explicit writes, with options.
//! cache.insert(&key, &table).with_ttl(Duration::from_secs(3600)).with_tag("sales").await?;
//! cache.insert_bytes("raw/2026-01", b"\x00\x01\x02").with_ttl_str("7d").await?;
//!
//! let meta = cache.metadata(&key).await?.expect("just inserted"); // no data loaded
//! assert_eq!(meta.tags, ["sales"]);
//! assert_eq!(cache.get::<Vec<(String, f64)>>(&key).await?, Some(table));
//! assert_eq!(cache.stats().computations, 1);
//! # drop(cache);
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok::<(), cachet_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! ## Keys
//! Any [`IntoCacheKey`]: [`Params`](cachet_core::Params) (a key derived in the cache's
//! namespace; the params are stored with the entry as JSON, so entries can be found by any
//! parameter), a ready [`CacheKey`](cachet_core::CacheKey), or an explicit string.
//!
//! ## TTL
//! Every entry may expire: per entry (`with_ttl`, `with_ttl_str("7d")`), else the cache's
//! [`default_ttl`](CacheBuilder::default_ttl), measured from the write; [`Cache::touch`] resets
//! it. An expired entry is never returned by any method (`expires_at <= now` is a miss), and
//! [`Cache::cleanup_expired`] deletes expired entries and reclaims their blobs.
//!
//! ## Integrity
//! The engine verifies checksums, the content digest and (with a signing key) the entry's
//! signature on every read. A failure is treated as a miss, counted in
//! [`CacheStats::integrity_failures`] and logged with `tracing::warn!` — or, with
//! [`strict_integrity`](CacheBuilder::strict_integrity), returned as `Error::Corrupt` /
//! `Error::Tampered`. Wrong data is never returned.
//!
//! ## Single flight
//! [`Cache::get_with`], [`Cache::try_get_with`] and [`Cache::memoize`] run one computation per
//! missing key in this process, however many tasks ask at once; waiters read the stored
//! value. A cancelled computation hands over to a waiter; a failed one is reported to the
//! waiters and not cached. Where the index has per-key locks (SQLite on a local disk,
//! PostgreSQL), one process on any machine sharing the index computes; a crashed holder's lock
//! is released with its process or connection.
//!
//! ## Eviction
//! [`CacheBuilder::eviction`] takes an [`EvictionPolicy`]: `max_bytes`, `max_entries` and
//! per-namespace quotas (bytes count each shared blob once), in LRU or aged-LFU order, plus
//! time-to-idle and expired entries. Puts never evict: they wake a background task that
//! evicts in batches between a high and a low watermark, never touching entries written in the
//! last second or pinned ones ([`InsertOptions::pinned`]). An
//! [eviction listener](CacheBuilder::eviction_listener) hears each removal and its
//! [`EvictionReason`]; [`Cache::run_eviction`] runs a pass at once.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use cachet_cache::{Cache, EvictionPolicy};
//!
//! let cache = Cache::builder()
//!     .in_memory()
//!     .eviction(EvictionPolicy::lru().max_entries(2).watermarks(1.0, 1.0)
//!         .protect_recent(std::time::Duration::ZERO))
//!     .build()
//!     .await?;
//! cache.insert_bytes("model", b"weights").pinned().await?;
//! for id in ["a", "b", "c"] {
//!     cache.insert_bytes(id, b"x").await?;
//!     tokio::time::sleep(std::time::Duration::from_millis(2)).await; // distinct write times
//! }
//! cache.run_eviction().await?;
//! assert!(cache.contains_key("model").await?); // pinned
//! assert!(cache.contains_key("c").await?);     // most recent
//! assert!(!cache.contains_key("a").await?);
//! # Ok::<(), cachet_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! ## Grace
//! With [`CacheBuilder::grace`], an entry that expired less than the grace period ago is kept
//! and served by the `get_with` family when its recomputation fails (stale-if-error);
//! [`Cache::get_with_refresh`] also serves it while the recomputation runs in the background
//! (stale-while-revalidate, bounded by [`CacheBuilder::soft_timeout`]). Plain reads never
//! return an expired value, and the stale value, being the durable entry, survives restarts.
//!
//! ## Observability
//! - **Events**: [`Cache::subscribe`] returns a broadcast receiver of [`CacheEvent`]s (`Hit`
//!   with its [`Tier`], `Miss`, `Put`, `Invalidated`, `Expired`, `Evicted` with its
//!   [`EvictionReason`], `Error`), published by every clone and view of the cache. A receiver
//!   more than [`event_capacity`](CacheBuilder::event_capacity) events behind is told how many
//!   it lost; while nobody subscribes, no event is built.
//! - **Metrics** through the [`metrics`](https://docs.rs/metrics) facade, for any exporter
//!   (Prometheus, StatsD, OpenTelemetry): `cachet_hits_total{tier}`, `cachet_misses_total`,
//!   `cachet_puts_total`, `cachet_bytes_read_total`, `cachet_bytes_written_total`,
//!   `cachet_invalidations_total`, `cachet_evictions_total{reason}`,
//!   `cachet_expirations_total`, `cachet_errors_total{operation}`,
//!   `cachet_computations_total`, and the histogram `cachet_operation_seconds{operation}` of
//!   operations that reach the durable tier (memory hits are not timed). Names in
//!   [`observe::names`]; [`metrics_label`](CacheBuilder::metrics_label) adds `cache="name"`.
//!   The metrics are registered with the recorder installed when the cache is built: install
//!   it first.
//! - **Spans**: every public async operation runs in a `DEBUG` span named after it, with the
//!   fields `key`, `outcome` (`hit`, `miss`, `computed`, `stored`, `removed`), `tier` and
//!   `bytes` recorded as they become known.
//!
//! Stats, metrics and events come from one place and agree: each `Hit` event is one
//! [`CacheStats::hits`] and one `cachet_hits_total`. Details, a Prometheus setup and the
//! measured overhead: docs/OBSERVABILITY.md.
//!
//! ## Blocking
//! [`blocking::Cache`] is the same API for synchronous code; it must not be called from
//! inside an async runtime (it returns `Error::Unsupported` there instead of panicking).
//!
//! ## Features
//! | feature | default | gives |
//! |---|---|---|
//! | `meta-sqlite` | yes | `sqlite://` index URLs; the index of [`Cache::open`] |
//! | `blob-fs` | yes | `file://` blob URLs; the blobs of [`Cache::open`] |
//!
//! Without them only `memory://` (and custom backends) are available.

pub mod blocking;
mod builder;
mod cache;
mod events;
mod eviction;
mod flight;
mod grace;
mod key;
mod manage;
mod memory;
pub mod observe;
mod options;
mod stats;
mod writer;

pub use builder::{BLOBS_DIR, CacheBuilder, INDEX_FILE};
pub use cache::{Cache, CleanupReport, memo_key};
pub use events::{CacheEvent, EvictionReason, Tier};
pub use eviction::{EvictionListener, EvictionPolicy, EvictionReport};
pub use key::IntoCacheKey;
pub use options::{Insert, InsertBytes, InsertFuture, InsertOptions, parse_ttl};
pub use stats::CacheStats;
pub use writer::CacheWriter;
