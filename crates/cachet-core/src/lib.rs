//! # cachet-core
//!
//! The small, stable heart of cachet: the traits every backend implements
//! ([`MetadataBackend`], [`BlobBackend`]), key derivation ([`Params`], [`CacheKey`]), entry
//! types ([`EntryMeta`], [`BlobId`], [`ContentDigest`]), [`Error`], [`Capabilities`](MetadataCapabilities),
//! an injectable [`Clock`], in-memory reference backends ([`memory`]) and, behind the `testing`
//! feature, the conformance suites every backend runs against the real service.
//!
//! No database driver, object-store client or async runtime lives here.
//!
//! ```
//! use cachet_core::{CacheKey, params};
//!
//! let key = CacheKey::derive("", &params! { "dataset" => "sales-2026", "window" => 30 });
//! let same = CacheKey::derive("", &params! { "window" => 30, "dataset" => "sales-2026" });
//! assert_eq!(key, same);
//! assert_ne!(key, CacheKey::derive("", &params! { "dataset" => "sales-2026", "window" => 30.0 }));
//! ```
#![forbid(unsafe_code)]

pub mod blob;
pub mod capabilities;
pub mod clock;
pub mod entry;
pub mod error;
pub mod eviction;
pub mod filter;
pub mod key;
pub mod memory;
pub mod metadata;
pub mod params;
#[cfg(feature = "testing")]
pub mod testing;

pub use blob::{BlobBackend, BlobInfo, BlobInfoStream, BlobReceipt, BlobWriter, ByteStream};
pub use capabilities::{BlobCapabilities, MetadataCapabilities};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use entry::{
    AccessRecord, BlobId, Compression, ContentDigest, DataType, EntryMeta, EntryRecord, IndexStats,
    ListQuery, Location,
};
pub use error::{BoxError, Error, Result};
pub use eviction::{EvictionBatch, EvictionOrder, IndexUsage, PINNED_TAG};
pub use filter::{Comparison, EntryFilter, FieldCondition, FieldValue};
pub use key::{CacheKey, KEY_FORMAT_VERSION};
pub use metadata::{
    ExpiryUpdate, KeyLock, MetadataBackend, MoveOutcome, PutOutcome, WriteCondition,
};
pub use params::{ParamValue, Params};
