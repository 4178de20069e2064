//! The blob store contract.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;

use crate::capabilities::BlobCapabilities;
use crate::clock::Timestamp;
use crate::entry::BlobId;
use crate::error::Result;

/// A stream of byte chunks read from a blob.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// A stream of blob descriptions, from [`BlobBackend::list`].
pub type BlobInfoStream = Pin<Box<dyn Stream<Item = Result<BlobInfo>> + Send + 'static>>;

/// What the store knows about one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob's id.
    pub id: BlobId,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, if the backend knows.
    pub modified: Option<Timestamp>,
    /// The store's entity tag for the object (S3's `ETag`), if the backend has one.
    pub etag: Option<String>,
}

/// What a backend reports about a blob it has just published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobReceipt {
    /// The store's entity tag for the published object (S3's `ETag`), if it has one. The
    /// engine records it in the entry (`EntryMeta::blob_etag`), so a later check can tell the
    /// object it wrote from one replaced behind its back without reading it.
    pub etag: Option<String>,
}

/// Stores immutable objects under content-derived ids.
///
/// A blob's content is fixed by its id (the id is a digest), so writing an id twice writes the
/// same content and either copy is correct. The engine never gives a backend a user string as a
/// name: ids are validated [`BlobId`]s.
///
/// Conformance: `cachet_core::testing::blob::run_all` (feature `testing`).
#[async_trait]
pub trait BlobBackend: Send + Sync + 'static {
    /// A short name for messages (`"fs"`, `"memory"`, `"s3"`).
    fn name(&self) -> &str;

    /// What this backend offers.
    fn capabilities(&self) -> BlobCapabilities;

    /// Stores a whole blob.
    ///
    /// # Behavior
    /// - When `put` returns, the blob is durable (per the backend's durability policy) and
    ///   [`get`](Self::get) returns exactly `data`.
    /// - With `atomic_publish`, a concurrent reader sees either no blob or all of it, never a prefix.
    /// - Writing an id that exists replaces it, or keeps the existing object (the content is
    ///   the same by construction); either way the call succeeds. A backend with the
    ///   `conditional_put` capability keeps the existing object (put-if-absent) and returns
    ///   its receipt, so the engine may put without looking first.
    /// - Returns the published object's [`BlobReceipt`].
    async fn put(&self, id: &BlobId, data: Bytes) -> Result<BlobReceipt>;

    /// Starts a streaming write; nothing is visible under any id until
    /// [`BlobWriter::finish`].
    ///
    /// # Behavior
    /// - A writer dropped or aborted without `finish` leaves no visible blob; its temporary
    ///   data is removed by `abort`, or by [`cleanup_temporary`](Self::cleanup_temporary) after a crash.
    /// - Memory use is bounded by the backend's buffer size, not by the blob size.
    async fn writer(&self) -> Result<Box<dyn BlobWriter>>;

    /// Reads a whole blob.
    ///
    /// # Behavior
    /// - A missing blob fails with `Error::NotFound`.
    async fn get(&self, id: &BlobId) -> Result<Bytes>;

    /// Reads a blob as a stream of chunks, with bounded memory.
    ///
    /// # Behavior
    /// - A missing blob fails with `Error::NotFound` (from this call, not from the stream).
    /// - The concatenated chunks equal what was written.
    async fn get_stream(&self, id: &BlobId) -> Result<ByteStream>;

    /// Describes a blob.
    ///
    /// # Behavior
    /// - A missing blob returns `Ok(None)`.
    async fn head(&self, id: &BlobId) -> Result<Option<BlobInfo>>;

    /// Deletes a blob.
    ///
    /// # Behavior
    /// - Returns `true` if it existed, `false` if not (not an error).
    async fn delete(&self, id: &BlobId) -> Result<bool>;

    /// Lists every published blob (not temporary uploads), in no particular order.
    ///
    /// # Behavior
    /// - Each published blob appears exactly once if none is written or deleted meanwhile.
    /// - Objects that are not cachet blobs (foreign files) are skipped, never reported as blobs.
    async fn list(&self) -> Result<BlobInfoStream>;

    /// Removes temporary data of writes abandoned before `older_than` (crash leftovers).
    ///
    /// # Behavior
    /// - Returns how many temporary objects were removed; never touches published blobs or
    ///   uploads started at or after `older_than`.
    async fn cleanup_temporary(&self, older_than: Timestamp) -> Result<u64>;
}

/// A streaming write in progress (see [`BlobBackend::writer`]).
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends a chunk.
    async fn write(&mut self, chunk: Bytes) -> Result<()>;

    /// Makes everything written so far durable and visible under `id`, atomically where the
    /// backend has `atomic_publish`, and returns the published object's [`BlobReceipt`].
    async fn finish(self: Box<Self>, id: &BlobId) -> Result<BlobReceipt>;

    /// Discards the write; nothing becomes visible.
    async fn abort(self: Box<Self>) -> Result<()>;
}
