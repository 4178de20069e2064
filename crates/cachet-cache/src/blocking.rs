//! A synchronous wrapper for callers without an async runtime.
//!
//! [`Cache`] owns a small tokio runtime (one worker thread, for background work such as
//! batched access-time writes) and runs each operation to completion on the calling thread.
//! The API mirrors the async [`crate::Cache`]; inserts take their options as an
//! [`InsertOptions`] argument instead of a request builder.
//!
//! **Do not call it from inside an async runtime** (an `async fn`, a tokio task, or
//! `spawn_blocking`): blocking a runtime thread on another runtime would panic inside tokio, so
//! every method checks first and returns `Error::Unsupported` instead. Async code uses
//! [`crate::Cache`], which is the same cache.
//!
//! ```
//! use cachet_cache::blocking::Cache;
//! use cachet_core::params;
//!
//! let cache = Cache::builder().in_memory().build()?;
//! let key = params! { "job" => "nightly", "day" => 7 };
//! let rows: Vec<u32> = cache.get_with(&key, || vec![1, 2, 3])?;
//! assert_eq!(cache.get::<Vec<u32>>(&key)?, Some(rows));
//! # Ok::<(), cachet_core::Error>(())
//! ```

use std::future::Future;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cachet_core::{BlobBackend, BoxError, Clock, Compression, EntryMeta, Error, IndexStats};
use cachet_core::{EntryFilter, MetadataBackend, Result};
use cachet_storage::{
    DeleteReport, ExportOptions, ExportReport, GcReport, ImportOptions, ImportReport,
    RepairOptions, RepairReport, SigningKey, Store, StoreConfig, ValueReader, VerifyOptions,
    VerifyProgress, VerifyReport,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::Runtime;

use crate::cache::CleanupReport;
use crate::key::IntoCacheKey;
use crate::options::InsertOptions;
use crate::stats::CacheStats;

/// Fails when called from inside an async runtime, where blocking would panic in tokio.
fn check_not_in_runtime() -> Result<()> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::Unsupported {
            what: "cachet::blocking::Cache was called from inside an async runtime (an async \
                   fn, a tokio task or spawn_blocking), where blocking would panic; use the \
                   async cachet::Cache there (Cache::inner() gives it)"
                .into(),
        });
    }
    Ok(())
}

/// The runtime, shut down without blocking when the last user goes (dropping a runtime
/// inside another one would panic).
struct OwnedRuntime {
    runtime: Option<Runtime>,
    cache: crate::Cache,
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_err() {
                if let Err(e) = runtime.block_on(self.cache.flush()) {
                    tracing::warn!(error = %e, "could not flush the cache on close");
                }
            }
            runtime.shutdown_background();
        }
    }
}

fn new_runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cachet-blocking")
        .enable_all()
        .build()
        .map_err(|e| Error::io("the cachet blocking runtime", e))
}

/// The synchronous cache (see the [module docs](self)). Cheap to clone; clones and namespace
/// views share the runtime and the store.
#[derive(Clone)]
pub struct Cache {
    inner: crate::Cache,
    runtime: Arc<OwnedRuntime>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("blocking::Cache").field(&self.inner).finish()
    }
}

impl Cache {
    /// Opens (creating it if needed) the embedded cache in `dir` (see [`crate::Cache::open`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Cache> {
        Cache::builder().directory(dir).build()
    }

    /// A builder (the same options as [`crate::CacheBuilder`]).
    pub fn builder() -> CacheBuilder {
        CacheBuilder {
            inner: crate::CacheBuilder::new(),
        }
    }

    /// Wraps an async cache (which stays usable from async code).
    pub fn from_async(cache: crate::Cache) -> Result<Cache> {
        check_not_in_runtime()?;
        let runtime = new_runtime()?;
        Ok(Cache {
            runtime: Arc::new(OwnedRuntime {
                runtime: Some(runtime),
                cache: cache.clone(),
            }),
            inner: cache,
        })
    }

    /// A cache over an existing store (see [`crate::Cache::from_store`]).
    pub fn from_store(store: Store) -> Result<Cache> {
        Cache::from_async(crate::Cache::from_store(store))
    }

    /// A cache over custom backends (see [`crate::Cache::from_backends`]).
    pub fn from_backends(
        meta: Arc<dyn MetadataBackend>,
        blobs: Arc<dyn BlobBackend>,
        config: StoreConfig,
    ) -> Result<Cache> {
        Cache::from_async(crate::Cache::from_backends(meta, blobs, config)?)
    }

    /// The async cache underneath (for async code: same store, counters and flights).
    pub fn inner(&self) -> &crate::Cache {
        &self.inner
    }

    fn run<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T> {
        check_not_in_runtime()?;
        match &self.runtime.runtime {
            Some(runtime) => runtime.block_on(future),
            None => Err(Error::Unsupported {
                what: "the blocking cache's runtime is shut down".into(),
            }),
        }
    }

    fn wrap(&self, inner: crate::Cache) -> Cache {
        Cache {
            inner,
            runtime: Arc::clone(&self.runtime),
        }
    }

    /// The storage engine underneath.
    pub fn store(&self) -> &Store {
        self.inner.store()
    }

    /// This view's namespace.
    pub fn namespace_name(&self) -> &str {
        self.inner.namespace_name()
    }

    /// The default TTL of new entries, if any.
    pub fn default_ttl(&self) -> Option<Duration> {
        self.inner.default_ttl()
    }

    /// A view in another namespace (see [`crate::Cache::namespace`]).
    pub fn namespace(&self, namespace: &str) -> Cache {
        self.wrap(self.inner.namespace(namespace))
    }

    /// A view in another namespace, checking the name now.
    pub fn try_namespace(&self, namespace: &str) -> Result<Cache> {
        Ok(self.wrap(self.inner.try_namespace(namespace)?))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats()
    }

    /// Subscribes to the cache's events (see [`crate::Cache::subscribe`]); read them with
    /// `try_recv` or `blocking_recv` (outside an async runtime).
    ///
    /// ```
    /// use cachet_cache::{CacheEvent, blocking::Cache};
    /// let cache = Cache::builder().in_memory().build()?;
    /// let mut events = cache.subscribe();
    /// cache.insert("k", &1u8)?;
    /// assert!(matches!(events.try_recv(), Ok(CacheEvent::Put { bytes: 1, .. })));
    /// # Ok::<(), cachet_core::Error>(())
    /// ```
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::CacheEvent> {
        self.inner.subscribe()
    }

    /// Reads a serde value (see [`crate::Cache::get`]).
    pub fn get<T: DeserializeOwned>(&self, key: impl IntoCacheKey) -> Result<Option<T>> {
        self.run(self.inner.get(key))
    }

    /// Reads a raw-bytes entry (see [`crate::Cache::get_bytes`]).
    pub fn get_bytes(&self, key: impl IntoCacheKey) -> Result<Option<Bytes>> {
        self.run(self.inner.get_bytes(key))
    }

    /// Opens a verified reader over an entry's raw content (see [`crate::Cache::reader`]).
    pub fn reader(&self, key: impl IntoCacheKey) -> Result<Option<CacheReader>> {
        let reader = self.run(self.inner.reader(key))?;
        Ok(reader.map(|inner| CacheReader {
            inner,
            pending: Bytes::new(),
            cache: self.clone(),
            done: false,
        }))
    }

    /// An entry's metadata without its data (see [`crate::Cache::metadata`]).
    pub fn metadata(&self, key: impl IntoCacheKey) -> Result<Option<EntryMeta>> {
        self.run(self.inner.metadata(key))
    }

    /// Whether a live entry exists.
    pub fn contains_key(&self, key: impl IntoCacheKey) -> Result<bool> {
        self.run(self.inner.contains_key(key))
    }

    /// Stores a serde value with the default options.
    pub fn insert<T: Serialize + Sync + ?Sized>(
        &self,
        key: impl IntoCacheKey,
        value: &T,
    ) -> Result<EntryMeta> {
        self.insert_with_options(key, value, InsertOptions::default())
    }

    /// Stores a serde value with options (TTL, tags, ...).
    pub fn insert_with_options<T: Serialize + Sync + ?Sized>(
        &self,
        key: impl IntoCacheKey,
        value: &T,
        options: InsertOptions,
    ) -> Result<EntryMeta> {
        self.run(async { self.inner.insert(key, value).with_options(options).await })
    }

    /// Stores raw bytes with the default options.
    pub fn insert_bytes(
        &self,
        key: impl IntoCacheKey,
        data: impl AsRef<[u8]>,
    ) -> Result<EntryMeta> {
        self.insert_bytes_with_options(key, data, InsertOptions::default())
    }

    /// Stores raw bytes with options.
    pub fn insert_bytes_with_options(
        &self,
        key: impl IntoCacheKey,
        data: impl AsRef<[u8]>,
        options: InsertOptions,
    ) -> Result<EntryMeta> {
        self.run(async {
            self.inner
                .insert_bytes(key, data.as_ref())
                .with_options(options)
                .await
        })
    }

    /// Starts a streaming write of raw bytes.
    pub fn writer(&self, key: impl IntoCacheKey) -> Result<CacheWriter> {
        self.writer_with_options(key, InsertOptions::default())
    }

    /// Starts a streaming write with options.
    pub fn writer_with_options(
        &self,
        key: impl IntoCacheKey,
        options: InsertOptions,
    ) -> Result<CacheWriter> {
        let inner = self.run(self.inner.writer_with_options(key, options))?;
        Ok(CacheWriter {
            inner,
            cache: self.clone(),
        })
    }

    /// Returns the cached value, or runs `init` on this thread, stores and returns its value.
    /// Concurrent callers (threads, or async tasks of the same cache) asking for the same
    /// missing key run `init` once (see [`crate::Cache::get_with`]).
    pub fn get_with<T, F>(&self, key: impl IntoCacheKey, init: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> T,
    {
        self.get_with_options(key, InsertOptions::default(), init)
    }

    /// [`get_with`](Self::get_with), storing a computed value with `options`.
    pub fn get_with_options<T, F>(
        &self,
        key: impl IntoCacheKey,
        options: InsertOptions,
        init: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> T,
    {
        self.run(
            self.inner
                .get_with_options(key, options, move || async move { init() }),
        )
    }

    /// Like [`get_with`](Self::get_with) for a fallible computation (see
    /// [`crate::Cache::try_get_with`]).
    pub fn try_get_with<T, E, F>(&self, key: impl IntoCacheKey, init: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        E: Into<BoxError>,
        F: FnOnce() -> Result<T, E>,
    {
        self.run(self.inner.try_get_with(key, move || async move { init() }))
    }

    /// Like [`try_get_with`](Self::try_get_with) with options for the stored entry (see
    /// [`crate::Cache::try_get_with_options`]): only an `Ok` value is stored.
    pub fn try_get_with_options<T, E, F>(
        &self,
        key: impl IntoCacheKey,
        options: InsertOptions,
        init: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        E: Into<BoxError>,
        F: FnOnce() -> Result<T, E>,
    {
        self.run(
            self.inner
                .try_get_with_options(key, options, move || async move { init() }),
        )
    }

    /// Memoizes a function call (see [`crate::Cache::memoize`]).
    pub fn memoize<T, A, F>(&self, function_name: &str, args: &A, init: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        A: Serialize + ?Sized,
        F: FnOnce() -> T,
    {
        self.run(
            self.inner
                .memoize(function_name, args, move || async move { init() }),
        )
    }

    /// Deletes an entry; returns whether one existed.
    pub fn invalidate(&self, key: impl IntoCacheKey) -> Result<bool> {
        self.run(self.inner.invalidate(key))
    }

    /// Resets a live entry's TTL (see [`crate::Cache::touch`]).
    pub fn touch(&self, key: impl IntoCacheKey, ttl: Option<Duration>) -> Result<bool> {
        self.run(self.inner.touch(key, ttl))
    }

    /// Deletes expired entries and collects their blobs (see [`crate::Cache::cleanup_expired`]).
    pub fn cleanup_expired(&self) -> Result<CleanupReport> {
        self.run(self.inner.cleanup_expired())
    }

    /// Runs eviction once, now (see [`crate::Cache::run_eviction`]).
    pub fn run_eviction(&self) -> Result<crate::EvictionReport> {
        self.run(self.inner.run_eviction())
    }

    /// Garbage collection of unreferenced blobs.
    pub fn gc(&self) -> Result<GcReport> {
        self.run(self.inner.gc())
    }

    /// Writes batched access times and flushes the index.
    pub fn flush(&self) -> Result<()> {
        self.run(self.inner.flush())
    }

    /// Totals over the whole index.
    pub fn index_stats(&self) -> Result<IndexStats> {
        self.run(self.inner.index_stats())
    }

    // ---------------------------------------------------------------- management

    /// Replaces the value of a live entry, keeping the rest (see [`crate::Cache::update`]).
    pub fn update<T: Serialize + Sync + ?Sized>(
        &self,
        key: impl IntoCacheKey,
        value: &T,
    ) -> Result<EntryMeta> {
        self.run(self.inner.update(key, value))
    }

    /// Replaces the value of a live entry with raw bytes (see [`crate::Cache::update_bytes`]).
    pub fn update_bytes(
        &self,
        key: impl IntoCacheKey,
        data: impl AsRef<[u8]>,
    ) -> Result<EntryMeta> {
        self.run(self.inner.update_bytes(key, data))
    }

    /// Reads many serde values with one index round trip (see [`crate::Cache::get_many`]).
    ///
    /// ```
    /// let cache = cachet_cache::blocking::Cache::builder().in_memory().build()?;
    /// cache.insert_many([("a", &1u32), ("b", &2u32)], &Default::default())?;
    /// assert_eq!(cache.get_many::<u32, _>(["a", "x", "b"])?, [Some(1), None, Some(2)]);
    /// # Ok::<(), cachet_core::Error>(())
    /// ```
    pub fn get_many<T: DeserializeOwned, K: IntoCacheKey>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<T>>> {
        self.run(self.inner.get_many(keys))
    }

    /// Reads many raw-bytes entries with one index round trip.
    pub fn get_bytes_many<K: IntoCacheKey>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Bytes>>> {
        self.run(self.inner.get_bytes_many(keys))
    }

    /// Stores many serde values in one transaction (see [`crate::Cache::insert_many`]).
    pub fn insert_many<'v, K, T>(
        &self,
        items: impl IntoIterator<Item = (K, &'v T)>,
        options: &InsertOptions,
    ) -> Result<Vec<EntryMeta>>
    where
        K: IntoCacheKey,
        T: Serialize + Sync + ?Sized + 'v,
    {
        self.run(self.inner.insert_many(items, options))
    }

    /// Stores many raw-bytes values in one transaction.
    pub fn insert_bytes_many<K: IntoCacheKey, B: Into<Bytes>>(
        &self,
        items: impl IntoIterator<Item = (K, B)>,
        options: &InsertOptions,
    ) -> Result<Vec<EntryMeta>> {
        self.run(self.inner.insert_bytes_many(items, options))
    }

    /// Replaces the values of many live entries in one transaction.
    pub fn update_many<'v, K, T>(
        &self,
        items: impl IntoIterator<Item = (K, &'v T)>,
    ) -> Result<Vec<bool>>
    where
        K: IntoCacheKey,
        T: Serialize + Sync + ?Sized + 'v,
    {
        self.run(self.inner.update_many(items))
    }

    /// Deletes many entries in one transaction.
    pub fn invalidate_many<K: IntoCacheKey>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<bool>> {
        self.run(self.inner.invalidate_many(keys))
    }

    /// Resets the TTL of many live entries (see [`crate::Cache::touch_many`]).
    pub fn touch_many<K: IntoCacheKey>(
        &self,
        keys: impl IntoIterator<Item = K>,
        ttl: Option<Duration>,
    ) -> Result<Vec<bool>> {
        self.run(self.inner.touch_many(keys, ttl))
    }

    /// The live entries matching a filter (see [`crate::Cache::find`]).
    pub fn find(&self, filter: &EntryFilter, limit: usize) -> Result<Vec<EntryMeta>> {
        self.run(self.inner.find(filter, limit))
    }

    /// Deletes the entries matching a filter (see [`crate::Cache::invalidate_where`]).
    pub fn invalidate_where(&self, filter: &EntryFilter, dry_run: bool) -> Result<DeleteReport> {
        self.run(self.inner.invalidate_where(filter, dry_run))
    }

    /// Deletes the entries of this namespace carrying `tag` (see
    /// [`crate::Cache::invalidate_tag`]).
    pub fn invalidate_tag(&self, tag: &str) -> Result<DeleteReport> {
        self.run(self.inner.invalidate_tag(tag))
    }

    /// Deletes every entry of this namespace (see [`crate::Cache::invalidate_namespace`]).
    pub fn invalidate_namespace(&self) -> Result<DeleteReport> {
        self.run(self.inner.invalidate_namespace())
    }

    /// Copies an entry to another key without copying its value (see [`crate::Cache::copy`]).
    pub fn copy(
        &self,
        from: impl IntoCacheKey,
        to: impl IntoCacheKey,
        overwrite: bool,
    ) -> Result<EntryMeta> {
        self.run(self.inner.copy(from, to, overwrite))
    }

    /// Writes a portable archive of the live entries matching `options.filter` to `out` (a
    /// file, a socket, `Vec<u8>`...); see [`crate::Cache::export`] and docs/ARCHIVE.md.
    ///
    /// ```
    /// use cachet_cache::blocking::Cache;
    /// let (source, target) = (Cache::builder().in_memory().build()?, Cache::builder().in_memory().build()?);
    /// source.insert("a", &[1u8, 2, 3])?;
    /// let mut archive = Vec::new();
    /// source.export(&mut archive, &Default::default(), |_| {})?;
    /// let report = target.import(archive.as_slice(), &Default::default(), |_| {})?;
    /// assert_eq!(report.imported, 1);
    /// assert_eq!(target.get::<Vec<u8>>("a")?, Some(vec![1, 2, 3]));
    /// # Ok::<(), cachet_core::Error>(())
    /// ```
    pub fn export<W: Write + Send + Unpin>(
        &self,
        out: W,
        options: &ExportOptions,
        progress: impl FnMut(&ExportReport),
    ) -> Result<ExportReport> {
        self.run(self.inner.export(SyncIo(out), options, progress))
    }

    /// Reads an archive written by [`export`](Self::export) from `input`, verifying every
    /// entry (see [`crate::Cache::import`]).
    pub fn import<R: Read + Send + Unpin>(
        &self,
        input: R,
        options: &ImportOptions,
        progress: impl FnMut(&ImportReport),
    ) -> Result<ImportReport> {
        self.run(self.inner.import(SyncIo(input), options, progress))
    }

    /// Checks every entry and the blob store (see [`crate::Cache::verify`]).
    pub fn verify(
        &self,
        options: &VerifyOptions,
        progress: impl FnMut(&VerifyProgress),
    ) -> Result<VerifyReport> {
        self.run(self.inner.verify(options, progress))
    }

    /// Removes what verification finds broken (see [`crate::Cache::repair`]).
    pub fn repair(
        &self,
        options: &RepairOptions,
        progress: impl FnMut(&VerifyProgress),
    ) -> Result<RepairReport> {
        self.run(self.inner.repair(options, progress))
    }

    /// Moves an entry to another key atomically (see [`crate::Cache::rename`]).
    pub fn rename(
        &self,
        from: impl IntoCacheKey,
        to: impl IntoCacheKey,
        overwrite: bool,
    ) -> Result<EntryMeta> {
        self.run(self.inner.rename(from, to, overwrite))
    }
}

/// A `std::io` reader or writer used where the async API wants a Tokio one. It blocks the
/// runtime thread while it reads or writes, which is right here: the blocking cache's runtime
/// serves only the caller that is waiting for this very call.
struct SyncIo<T>(T);

impl<W: Write + Unpin> tokio::io::AsyncWrite for SyncIo<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(self.0.write(buf))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(self.0.flush())
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(self.0.flush())
    }
}

impl<R: Read + Unpin> tokio::io::AsyncRead for SyncIo<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let read = self.0.read(buf.initialize_unfilled());
        std::task::Poll::Ready(read.map(|n| buf.advance(n)))
    }
}

/// A synchronous, verified reader over an entry's raw content (`std::io::Read`).
///
/// Integrity failures surface as `io::Error`s of kind `InvalidData` wrapping the cachet
/// error; reading to the end (`Ok(0)`) means the whole-content digest was verified.
pub struct CacheReader {
    inner: ValueReader,
    pending: Bytes,
    cache: Cache,
    done: bool,
}

impl std::fmt::Debug for CacheReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheReader")
            .field("key", &self.inner.meta().key)
            .finish_non_exhaustive()
    }
}

impl CacheReader {
    /// The entry's metadata.
    pub fn meta(&self) -> &EntryMeta {
        self.inner.meta()
    }

    /// The next verified chunk, or `None` at the verified end.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        if self.done {
            return Ok(None);
        }
        let cache = self.cache.clone();
        let chunk = cache.run(self.inner.next_chunk())?;
        self.done = chunk.is_none();
        Ok(chunk)
    }
}

impl Read for CacheReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            match self.next_chunk() {
                Ok(Some(chunk)) => self.pending = chunk,
                Ok(None) => return Ok(0),
                Err(e) => {
                    let kind = if e.is_integrity_failure() {
                        std::io::ErrorKind::InvalidData
                    } else {
                        std::io::ErrorKind::Other
                    };
                    return Err(std::io::Error::new(kind, e));
                }
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

/// A synchronous streaming write (see [`crate::CacheWriter`]); also a `std::io::Write`.
/// Nothing is visible until [`finish`](Self::finish).
pub struct CacheWriter {
    inner: crate::CacheWriter,
    cache: Cache,
}

impl std::fmt::Debug for CacheWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("blocking::CacheWriter")
            .field(&self.inner)
            .finish()
    }
}

impl CacheWriter {
    fn map(self, f: impl FnOnce(crate::CacheWriter) -> crate::CacheWriter) -> Self {
        CacheWriter {
            inner: f(self.inner),
            cache: self.cache,
        }
    }

    /// Expires the entry `ttl` after the first write (set before writing).
    pub fn with_ttl(self, ttl: Duration) -> Self {
        self.map(|w| w.with_ttl(ttl))
    }

    /// Like [`with_ttl`](Self::with_ttl) with a string such as `"7d"`.
    pub fn with_ttl_str(self, ttl: &str) -> Self {
        self.map(|w| w.with_ttl_str(ttl))
    }

    /// Adds a tag (set before writing).
    pub fn with_tag(self, tag: impl Into<String>) -> Self {
        self.map(|w| w.with_tag(tag))
    }

    /// Appends bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let cache = self.cache.clone();
        cache.run(self.inner.write(data))
    }

    /// Appends everything `source` yields; returns the byte count.
    pub fn copy_from<R: Read>(&mut self, source: &mut R) -> Result<u64> {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("writer input", e)),
            };
            CacheWriter::write(self, &buf[..n])?;
            total += n as u64;
        }
    }

    /// Completes the value and commits the entry.
    pub fn finish(self) -> Result<EntryMeta> {
        self.cache.run(self.inner.finish())
    }

    /// Discards everything written.
    pub fn abort(self) -> Result<()> {
        self.cache.run(self.inner.abort())
    }
}

impl Write for CacheWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CacheWriter::write(self, buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The synchronous counterpart of [`crate::CacheBuilder`]: the same options, and a `build`
/// that needs no runtime.
#[must_use = "a builder does nothing until build() is called"]
#[derive(Debug, Default)]
pub struct CacheBuilder {
    inner: crate::CacheBuilder,
}

macro_rules! forward {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        $(#[$doc])*
        pub fn $name(self, $($arg: $ty),*) -> Self {
            CacheBuilder { inner: self.inner.$name($($arg),*) }
        }
    )*};
}

impl CacheBuilder {
    forward! {
        /// See [`crate::CacheBuilder::directory`].
        fn directory(dir: impl AsRef<Path>);
        /// See [`crate::CacheBuilder::index`].
        fn index(url: impl Into<String>);
        /// See [`crate::CacheBuilder::blobs`].
        fn blobs(url: impl Into<String>);
        /// See [`crate::CacheBuilder::index_backend`].
        fn index_backend(backend: Arc<dyn MetadataBackend>);
        /// See [`crate::CacheBuilder::blob_backend`].
        fn blob_backend(backend: Arc<dyn BlobBackend>);
        /// See [`crate::CacheBuilder::in_memory`].
        fn in_memory();
        /// See [`crate::CacheBuilder::default_ttl`].
        fn default_ttl(ttl: Duration);
        /// See [`crate::CacheBuilder::default_ttl_str`].
        fn default_ttl_str(ttl: &str);
        /// See [`crate::CacheBuilder::memory_tier`].
        fn memory_tier(max_bytes: u64);
        /// See [`crate::CacheBuilder::memory_tier_str`].
        fn memory_tier_str(max_bytes: &str);
        /// See [`crate::CacheBuilder::memory_tier_ttl`].
        fn memory_tier_ttl(ttl: Duration);
        /// See [`crate::CacheBuilder::memory_tier_ttl_str`].
        fn memory_tier_ttl_str(ttl: &str);
        /// See [`crate::CacheBuilder::compression`].
        fn compression(compression: Compression);
        /// See [`crate::CacheBuilder::signing_key`].
        fn signing_key(key: SigningKey);
        /// See [`crate::CacheBuilder::signing_key_from_env`].
        fn signing_key_from_env(var: impl Into<String>);
        /// See [`crate::CacheBuilder::signing_key_file`].
        fn signing_key_file(path: impl AsRef<Path>);
        /// See [`crate::CacheBuilder::strict_integrity`].
        fn strict_integrity(strict: bool);
        /// See [`crate::CacheBuilder::namespace`].
        fn namespace(namespace: &str);
        /// See [`crate::CacheBuilder::clock`].
        fn clock(clock: Arc<dyn Clock>);
        /// See [`crate::CacheBuilder::store_config`].
        fn store_config(config: StoreConfig);
        /// See [`crate::CacheBuilder::allow_local_index_with_remote_blobs`].
        fn allow_local_index_with_remote_blobs(allow: bool);
        /// See [`crate::CacheBuilder::event_capacity`].
        fn event_capacity(capacity: usize);
        /// See [`crate::CacheBuilder::metrics_label`].
        fn metrics_label(name: impl Into<String>);
        /// See [`crate::CacheBuilder::eviction`].
        fn eviction(policy: crate::EvictionPolicy);
        /// See [`crate::CacheBuilder::grace`].
        fn grace(period: Duration);
        /// See [`crate::CacheBuilder::grace_str`].
        fn grace_str(period: &str);
    }

    /// See [`crate::CacheBuilder::eviction_listener`].
    pub fn eviction_listener(
        self,
        listener: impl Fn(&cachet_core::EntryMeta, crate::EvictionReason) + Send + Sync + 'static,
    ) -> Self {
        CacheBuilder {
            inner: self.inner.eviction_listener(listener),
        }
    }

    /// Validates every option, opens the backends and starts the cache's runtime.
    ///
    /// # Errors
    /// As [`crate::CacheBuilder::build`]; `Error::Unsupported` when called inside an async
    /// runtime.
    pub fn build(self) -> Result<Cache> {
        check_not_in_runtime()?;
        let runtime = new_runtime()?;
        let inner = runtime.block_on(self.inner.build());
        let inner = match inner {
            Ok(inner) => inner,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        Ok(Cache {
            runtime: Arc::new(OwnedRuntime {
                runtime: Some(runtime),
                cache: inner.clone(),
            }),
            inner,
        })
    }
}
