//! # cachet
//!
//! Cache large computed artifacts (model fits, feature tables, query results, API responses)
//! under keys derived from their inputs, and get them back fast, verified, from a local
//! directory — or, with other backends, from storage shared by a team.
//!
//! - **fast**: a small hit costs microseconds (one index lookup, no extra round trip);
//!   large values stream at disk bandwidth with bounded memory;
//! - **correct**: never returns expired, truncated, corrupt or tampered data, nor a value of
//!   another type (checksums, content digests, optional HMAC signatures);
//! - **crash-safe**: a killed process never leaves a visible half-entry;
//! - **inspectable**: every entry is a row in the index, with the params it was computed from.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use cachet::{Cache, params};
//!
//! # let dir = std::env::temp_dir().join(format!("cachet-facade-doc-{}", std::process::id()));
//! # #[cfg(all(feature = "meta-sqlite", feature = "blob-fs"))]
//! let cache = Cache::open(&dir).await?; // SQLite index + blobs, one directory
//! # #[cfg(not(all(feature = "meta-sqlite", feature = "blob-fs")))]
//! # let cache = Cache::builder().in_memory().build().await?;
//! let key = params! { "dataset" => "sales-2026", "window" => 30, "model" => "xgb" };
//!
//! // Computed once, even when 50 tasks ask at the same moment.
//! let scores: Vec<f64> = cache.get_with(&key, || async { vec![0.91, 0.87, 0.78] }).await?;
//!
//! // Explicit writes: serde values and raw bytes, with TTL and tags.
//! cache.insert(&key, &scores).with_ttl(Duration::from_secs(3600)).with_tag("sales").await?;
//! cache.insert_bytes("exports/2026-01.csv", b"region,total\nnorth,12\n").with_ttl_str("7d").await?;
//!
//! // Streams for values too large for memory.
//! let mut w = cache.writer("exports/big").await?;
//! w.write(&[0u8; 64 * 1024]).await?;
//! w.finish().await?;
//!
//! let meta = cache.metadata(&key).await?.expect("stored"); // no data loaded
//! assert_eq!(meta.tags, ["sales"]);
//! assert_eq!(cache.get::<Vec<f64>>(&key).await?, Some(scores));
//!
//! // Memoize a function call by name and arguments.
//! let n: u64 = cache.memoize("count_rows", &("sales", 2026), || async { 1_234 }).await?;
//! assert_eq!(n, 1_234);
//! # drop(cache);
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok::<(), cachet::Error>(())
//! # }).unwrap();
//! ```
//!
//! Synchronous code uses [`blocking::Cache`], the same API without `async` (not to be called
//! from inside an async runtime):
//!
//! ```
//! let cache = cachet::blocking::Cache::builder().in_memory().build()?;
//! let rows: Vec<u32> = cache.get_with(&cachet::params! { "day" => 7 }, || vec![1, 2, 3])?;
//! assert_eq!(rows.len(), 3);
//! # Ok::<(), cachet::Error>(())
//! ```
//!
//! ## Where the cache lives
//! [`Cache::open(dir)`](Cache::open) is the embedded default: a SQLite index at
//! `<dir>/index.sqlite` and content-addressed blob files under `<dir>/blobs/`. Anything else
//! goes through [`Cache::builder`]:
//!
//! | option | values |
//! |---|---|
//! | [`index`](CacheBuilder::index) | `sqlite:///abs/path.db`, `sqlite://relative/path.db`, `memory://` |
//! | [`blobs`](CacheBuilder::blobs) | `file:///abs/dir`, `memory://` |
//! | [`default_ttl`](CacheBuilder::default_ttl), [`compression`](CacheBuilder::compression), [`namespace`](CacheBuilder::namespace) | per-cache policies |
//! | [`signing_key`](CacheBuilder::signing_key) (`_from_env`, `_file`), [`strict_integrity`](CacheBuilder::strict_integrity) | HMAC-signed entries; integrity failures as errors instead of misses |
//!
//! `build()` validates everything and names the bad option in `Error::Config { field, .. }`.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `meta-sqlite` | yes | the SQLite index (`sqlite://`, the index of [`Cache::open`]); [`backends::sqlite`] |
//! | `blob-fs` | yes | filesystem blobs (`file://`, the blobs of [`Cache::open`]); [`backends::fs`] |
//! | `macros` | yes | [`#[memoize]`](memoize): cache a function's results by its arguments |
//! | `meta-postgres` | — | a PostgreSQL index shared by many machines (`postgres://`) |
//! | `blob-s3` | — | S3-compatible object storage (`s3://`) |
//! | `sqlcache` | — | [`sqlcache`]: a pull-through cache of tables fetched by range, in SQLite |
//! | `sqlcache-postgres` | — | the same, with tables in PostgreSQL |
//!
//! With `default-features = false` only `memory://` and custom backends
//! ([`CacheBuilder::index_backend`], [`CacheBuilder::blob_backend`]) are available.
//!
//! ## The crates underneath
//! - [`cachet_cache`]: keys, TTL, single flight, stats, events ([`Cache::subscribe`]), metrics
//!   ([`observe`]), the blocking wrapper ([`Cache`]).
//! - [`cachet_storage`]: the engine ([`Store`]): framing, compression, hashing, signing,
//!   content-addressed blobs, garbage collection.
//! - [`cachet_core`]: the backend traits, key derivation ([`Params`], [`CacheKey`]), entry
//!   types, [`Error`], in-memory backends.
#![forbid(unsafe_code)]

pub use cachet_cache::{
    BLOBS_DIR, Cache, CacheBuilder, CacheEvent, CacheStats, CacheWriter, CleanupReport,
    EvictionListener, EvictionPolicy, EvictionReason, EvictionReport, INDEX_FILE, Insert,
    InsertBytes, InsertFuture, InsertOptions, IntoCacheKey, Tier, blocking, memo_key, observe,
    parse_ttl,
};
pub use cachet_core::{
    BlobBackend, BlobCapabilities, BlobId, BoxError, CacheKey, Clock, Comparison, Compression,
    ContentDigest, DataType, EntryFilter, EntryMeta, Error, EvictionOrder, FieldCondition,
    FieldValue, IndexStats, IndexUsage, ListQuery, Location, ManualClock, MetadataBackend,
    MetadataCapabilities, PINNED_TAG, ParamValue, Params, Result, SystemClock, Timestamp, params,
};
pub use cachet_storage::{
    BatchItem, CopyOptions, CopyReport, DeleteReport, ExportOptions, ExportReport, GcReport,
    ImportOptions, ImportReport, Problem, ProblemKind, PutOptions, RepairOptions, RepairReport,
    SigningKey, Store, StoreConfig, StoredEntry, ValueReader, ValueWriter, VerifyOptions,
    VerifyProgress, VerifyReport,
};

/// The crates underneath, for what the facade does not re-export.
pub use {cachet_cache, cachet_core, cachet_storage};

#[cfg(feature = "macros")]
pub use cachet_macros::memoize;

/// Run-time support of [`memoize`]; not a public API.
#[cfg(feature = "macros")]
#[doc(hidden)]
#[path = "memoize.rs"]
pub mod __private;

/// The pull-through cache for tabular data fetched by range (feature `sqlcache`).
#[cfg(feature = "sqlcache")]
pub use cachet_sqlcache as sqlcache;

/// Storage backends, one module per backend feature.
pub mod backends {
    /// In-process index and blob store (`memory://`), always available.
    pub use cachet_core::memory;

    /// The SQLite metadata index (`sqlite://`; feature `meta-sqlite`).
    #[cfg(feature = "meta-sqlite")]
    pub use cachet_meta_sqlite as sqlite;

    /// The filesystem blob store (`file://`; feature `blob-fs`).
    #[cfg(feature = "blob-fs")]
    pub use cachet_blob_fs as fs;

    /// The PostgreSQL metadata index (`postgres://`; feature `meta-postgres`).
    #[cfg(feature = "meta-postgres")]
    pub use cachet_meta_postgres as postgres;

    /// S3-compatible object storage (`s3://`; feature `blob-s3`).
    #[cfg(feature = "blob-s3")]
    pub use cachet_blob_s3 as s3;
}

/// The code of docs/DEPLOYMENT.md, compiled as doctests so that it cannot drift from the API.
#[cfg(all(doctest, feature = "meta-postgres", feature = "blob-s3"))]
#[doc = include_str!("../../../docs/DEPLOYMENT.md")]
pub struct DeploymentDoctests;

/// The code of docs/MANAGEMENT.md, compiled as doctests so that it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/MANAGEMENT.md")]
pub struct ManagementDoctests;

/// The README's code, compiled as doctests so that it cannot drift from the API.
#[cfg(all(doctest, feature = "meta-sqlite", feature = "blob-fs"))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
