//! Streaming writes through the cache (default TTL, params, stats).

use std::time::Duration;

use cachet_core::{Compression, EntryMeta, Error, Result};
use cachet_storage::ValueWriter;
use tokio::io::AsyncRead;

use crate::cache::Cache;
use crate::key::ResolvedKey;
use crate::options::InsertOptions;

/// A raw-bytes value written in pieces, with memory bounded by about two frames whatever its
/// size. Nothing is visible until [`finish`](Self::finish); dropping the writer or calling
/// [`abort`](Self::abort) discards everything written.
///
/// Options (`with_ttl`, `with_tag`, ...) must be set before the first write; set later, they
/// make [`finish`](Self::finish) fail with `Error::Config` (and discard the value) rather than
/// be silently ignored. The TTL is counted from the first write.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// # let cache = cachet_cache::Cache::builder().in_memory().build().await?;
/// let mut w = cache.writer("big-export").await?.with_tag("exports");
/// for part in [&b"part one, "[..], b"part two"] {
///     w.write(part).await?;
/// }
/// let meta = w.finish().await?;
/// assert_eq!(meta.raw_size, 18);
/// # Ok::<(), cachet_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug)]
pub struct CacheWriter {
    cache: Cache,
    key: ResolvedKey,
    options: InsertOptions,
    inner: Option<ValueWriter>,
    late_option: Option<&'static str>,
}

impl CacheWriter {
    pub(crate) fn new(cache: Cache, key: ResolvedKey, options: InsertOptions) -> Self {
        CacheWriter {
            cache,
            key,
            options,
            inner: None,
            late_option: None,
        }
    }

    fn set(mut self, field: &'static str, f: impl FnOnce(InsertOptions) -> InsertOptions) -> Self {
        if self.inner.is_some() {
            self.late_option.get_or_insert(field);
        } else {
            self.options = f(self.options);
        }
        self
    }

    /// Expires the entry `ttl` after the first write.
    pub fn with_ttl(self, ttl: Duration) -> Self {
        self.set("ttl", |o| o.with_ttl(ttl))
    }

    /// Like [`with_ttl`](Self::with_ttl) with a string such as `"7d"`.
    pub fn with_ttl_str(self, ttl: &str) -> Self {
        self.set("ttl", |o| o.with_ttl_str(ttl))
    }

    /// The entry never expires.
    pub fn without_ttl(self) -> Self {
        self.set("ttl", InsertOptions::without_ttl)
    }

    /// Adds a tag.
    pub fn with_tag(self, tag: impl Into<String>) -> Self {
        let tag = tag.into();
        self.set("tag", |o| o.with_tag(tag))
    }

    /// Attaches user metadata (a JSON object).
    pub fn with_metadata(self, metadata: serde_json::Value) -> Self {
        self.set("metadata", |o| o.with_metadata(metadata))
    }

    /// Overrides the cache's compression for this entry.
    pub fn with_compression(self, compression: Compression) -> Self {
        self.set("compression", |o| o.with_compression(compression))
    }

    fn started(&mut self) -> Result<&mut ValueWriter> {
        match &mut self.inner {
            Some(inner) => Ok(inner),
            slot @ None => {
                let store = self.cache.store();
                let put = self
                    .options
                    .to_put_options(self.cache.default_ttl(), self.key.params.clone())?;
                Ok(slot.insert(store.writer(&self.key.key, put)?))
            }
        }
    }

    /// Appends bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.started()?.write(data).await
    }

    /// Appends everything `source` yields; returns the byte count.
    pub async fn copy_from<R: AsyncRead + Unpin>(&mut self, source: &mut R) -> Result<u64> {
        self.started()?.copy_from(source).await
    }

    /// Completes the value and commits the entry; returns its metadata.
    #[tracing::instrument(level = "debug", name = "writer_finish", skip_all,
        fields(key = %self.key.key, bytes = tracing::field::Empty, outcome = tracing::field::Empty))]
    pub async fn finish(mut self) -> Result<EntryMeta> {
        if let Some(field) = self.late_option {
            if let Some(inner) = self.inner.take() {
                inner.abort().await?;
            }
            return Err(Error::config(
                field,
                "writer options must be set before the first write; the value was discarded",
            ));
        }
        self.started()?;
        let inner = self
            .inner
            .take()
            .ok_or_else(|| Error::config("writer", "the writer was not started"))?;
        let _forget = self.cache.forget_after(|| vec![self.key.key.clone()]);
        let _timer = self.cache.shared.observer.timer("writer_finish");
        let meta = (inner.finish().await).inspect_err(|e| {
            (self.cache.shared.observer).failed(Some(&self.key.key), "write", e)
        })?;
        self.cache.record_insert(&meta);
        Ok(meta)
    }

    /// Discards everything written.
    pub async fn abort(mut self) -> Result<()> {
        match self.inner.take() {
            Some(inner) => inner.abort().await,
            None => Ok(()),
        }
    }
}
