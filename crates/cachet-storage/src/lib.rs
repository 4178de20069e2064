//! # cachet-storage
//!
//! The cachet storage engine. A [`Store`] joins a [`MetadataBackend`](cachet_core::MetadataBackend)
//! (the index) and a [`BlobBackend`](cachet_core::BlobBackend) (the bytes) and gives them one
//! promise: what you read is exactly what was written, or a typed error.
//!
//! - **Framed container** ([`format`](mod@format)): values are split into frames (1 MiB by default), each
//!   compressed with LZ4 or Zstandard (skipped when a frame does not shrink) and checksummed
//!   with xxh3-64; a trailer carries the xxh3-128 of the whole value. Specified in
//!   `docs/FORMAT.md` so that other languages can read a cache.
//! - **Inline small values**: containers up to 16 KiB live in the index row (one round trip).
//! - **Content-addressed blobs**: identical content is stored once; a blob is deleted only when no
//!   entry references it, through a reserve/claim protocol that is safe across processes
//!   (`docs/GC.md`).
//! - **Signing**: with a [`SigningKey`], every entry carries an HMAC-SHA256 over its identity
//!   fields and a SHA-256 content digest; unsigned or mis-signed entries are refused.
//! - **Bounded memory**: [`ValueWriter`] and [`ValueReader`] stream values of any size.
//!
//! The engine is TTL-agnostic: it stores `expires_at`; the cache layer interprets it.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use cachet_core::{CacheKey, memory::{MemoryBlobs, MemoryMetadata}, params};
//! use cachet_storage::{PutOptions, Store, StoreConfig};
//!
//! let store = Store::new(Arc::new(MemoryMetadata::new()), Arc::new(MemoryBlobs::new()), StoreConfig::default())?;
//! let key = CacheKey::derive("", &params! { "experiment" => 7 });
//! store.put_value(&key, &vec![1.5f64, 2.5], PutOptions::default()).await?;
//! let back: Option<Vec<f64>> = store.get_value(&key).await?;
//! assert_eq!(back, Some(vec![1.5, 2.5]));
//! # Ok::<(), cachet_core::Error>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]

mod access;
mod archive;
mod config;
mod copy;
mod encode;
mod evict;
pub mod format;
mod manage;
mod reader;
mod signing;
mod store;
mod verify;
mod writer;

pub use archive::{
    ARCHIVE_FORMAT, ARCHIVE_VERSION, ExportOptions, ExportReport, ImportOptions, ImportReport,
    MAX_JSON_MEMBER,
};
pub use config::StoreConfig;
pub use copy::{CopyOptions, CopyReport};
pub use evict::EvictedBatch;
pub use manage::{BatchItem, DeleteReport, EntryPages};
pub use reader::ValueReader;
pub use signing::{SigningKey, signed_message};
pub use store::{ExpiredReport, GcReport, PutOptions, Store, StoredEntry};
pub use verify::{
    Problem, ProblemKind, RepairOptions, RepairReport, VerifyOptions, VerifyPhase, VerifyProgress,
    VerifyReport,
};
pub use writer::ValueWriter;
