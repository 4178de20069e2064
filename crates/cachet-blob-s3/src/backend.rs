//! [`S3Blobs`]: the `BlobBackend` implementation over object_store.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cachet_core::{
    BlobBackend, BlobCapabilities, BlobId, BlobInfo, BlobInfoStream, BlobReceipt, BlobWriter,
    ByteStream, Error, Result, Timestamp,
};
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};

use crate::config::{MAX_OBJECT_SIZE, S3Config};
use crate::error::map_error;
use crate::layout::{Layout, temp_started_at};

/// What [`S3Config::build`] hands to the backend.
pub(crate) struct Settings {
    /// The backend's name: `s3`, `gcs` or `azure`.
    pub(crate) name: &'static str,
    /// The URL scheme for messages: `s3`, `gs` or `az`.
    pub(crate) scheme: &'static str,
    pub(crate) bucket: String,
    pub(crate) prefix: Path,
    pub(crate) conditional_put: bool,
    pub(crate) part_size: usize,
    pub(crate) parts_in_flight: usize,
}

/// Blobs in an S3 bucket (or an S3-compatible server), under a prefix.
///
/// Cheap to clone (one `Arc`); every clone shares the HTTP connection pool. Build it with
/// [`S3Config`].
#[derive(Clone)]
pub struct S3Blobs {
    inner: Arc<Inner>,
}

struct Inner {
    name: &'static str,
    scheme: &'static str,
    store: Arc<dyn ObjectStore>,
    bucket: String,
    layout: Layout,
    conditional_put: bool,
    part_size: usize,
    parts_in_flight: usize,
}

impl std::fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Blobs")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.layout.prefix().as_ref())
            .field("conditional_put", &self.inner.conditional_put)
            .field("part_size", &self.inner.part_size)
            .field("parts_in_flight", &self.inner.parts_in_flight)
            .finish()
    }
}

impl S3Blobs {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, settings: Settings) -> Self {
        S3Blobs {
            inner: Arc::new(Inner {
                name: settings.name,
                scheme: settings.scheme,
                store,
                bucket: settings.bucket,
                layout: Layout::new(settings.prefix),
                conditional_put: settings.conditional_put,
                part_size: settings.part_size,
                parts_in_flight: settings.parts_in_flight,
            }),
        }
    }

    /// Opens a store from a URL (`s3://bucket/prefix?...`, see [`S3Config::from_url`]).
    pub fn from_url(url: &str) -> Result<Self> {
        S3Config::from_url(url)?.build()
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The object name of blob `id` in the bucket: `<prefix>/<algorithm>/<hex[0..2]>/<hex>`.
    pub fn object_name(&self, id: &BlobId) -> String {
        self.inner.layout.blob_path(id).to_string()
    }

    /// The object name prefix of temporary uploads: `<prefix>/tmp/`.
    pub fn temporary_prefix(&self) -> String {
        format!("{}/", self.inner.layout.tmp_dir())
    }

    /// Whether `put` creates objects only if absent (see [`S3Config::with_conditional_put`]).
    pub fn conditional_put(&self) -> bool {
        self.inner.conditional_put
    }
}

impl Inner {
    /// `s3://bucket/key` (or `gs://`, `az://`), for messages.
    fn url(&self, path: &Path) -> String {
        format!("{}://{}/{}", self.scheme, self.bucket, path)
    }

    fn check_size(&self, size: u64, id: Option<&BlobId>) -> Result<()> {
        if size > MAX_OBJECT_SIZE {
            let what = id.map_or_else(|| "a streamed blob".to_string(), |id| format!("blob {id}"));
            return Err(Error::Unsupported {
                what: format!(
                    "{what} of {size} bytes in bucket {}: this backend stores objects \
                     up to 5 GiB (one S3 PutObject or CopyObject)",
                    self.bucket
                ),
            });
        }
        Ok(())
    }

    /// Publishes `payload` at `path` in one request; with conditional put, an existing object
    /// is kept (same content by construction) and its ETag returned.
    async fn put_object(&self, path: &Path, payload: PutPayload) -> Result<BlobReceipt> {
        if !self.conditional_put {
            let result = self
                .store
                .put(path, payload)
                .await
                .map_err(|e| map_error(self.name, format!("put of {}", self.url(path)), e))?;
            return Ok(BlobReceipt { etag: result.e_tag });
        }
        // A concurrent conditional write of the same key may be answered 409 or 412 while the
        // other write is still completing: look, and try again a few times.
        let mut last_err = None;
        for _ in 0..3 {
            let options = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match self.store.put_opts(path, payload.clone(), options).await {
                Ok(result) => return Ok(BlobReceipt { etag: result.e_tag }),
                Err(
                    e @ (object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }),
                ) => {
                    if let Some(meta) = self.head_object(path).await? {
                        return Ok(BlobReceipt { etag: meta.e_tag });
                    }
                    last_err = Some(e);
                }
                Err(e) => {
                    return Err(map_error(
                        self.name,
                        format!("put of {}", self.url(path)),
                        e,
                    ));
                }
            }
        }
        Err(Error::Conflict {
            what: self.url(path),
            detail: format!(
                "the server reported the object as existing but it cannot be read back ({}); \
                 retry",
                last_err.map(|e| e.to_string()).unwrap_or_default()
            ),
        })
    }

    async fn head_object(&self, path: &Path) -> Result<Option<ObjectMeta>> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_error(
                self.name,
                format!("head of {}", self.url(path)),
                e,
            )),
        }
    }

    async fn delete_object(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_error(
                self.name,
                format!("delete of {}", self.url(path)),
                e,
            )),
        }
    }

    fn info(&self, id: BlobId, meta: ObjectMeta) -> BlobInfo {
        BlobInfo {
            id,
            size: meta.size,
            modified: Some(Timestamp(meta.last_modified.timestamp_millis())),
            etag: meta.e_tag,
        }
    }
}

#[async_trait]
impl BlobBackend for S3Blobs {
    fn name(&self) -> &str {
        self.inner.name
    }

    fn capabilities(&self) -> BlobCapabilities {
        let mut caps = BlobCapabilities::minimal();
        caps.atomic_publish = true;
        caps.conditional_put = self.inner.conditional_put;
        caps.server_side_copy = true;
        caps.range_read = true;
        caps.local_only = false;
        caps.durable = true;
        caps.max_object_size = Some(MAX_OBJECT_SIZE);
        caps
    }

    async fn put(&self, id: &BlobId, data: Bytes) -> Result<BlobReceipt> {
        self.inner.check_size(data.len() as u64, Some(id))?;
        let path = self.inner.layout.blob_path(id);
        self.inner.put_object(&path, PutPayload::from(data)).await
    }

    async fn writer(&self) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(S3BlobWriter {
            inner: self.inner.clone(),
            started: Timestamp::now(),
            pending: Vec::new(),
            pending_len: 0,
            written: 0,
            upload: None,
        }))
    }

    async fn get(&self, id: &BlobId) -> Result<Bytes> {
        let path = self.inner.layout.blob_path(id);
        let what = || format!("get of blob {id} at {}", self.inner.url(&path));
        let result = self
            .inner
            .store
            .get(&path)
            .await
            .map_err(|e| map_error(self.inner.name, what(), e))?;
        result
            .bytes()
            .await
            .map_err(|e| map_error(self.inner.name, what(), e))
    }

    async fn get_stream(&self, id: &BlobId) -> Result<ByteStream> {
        let path = self.inner.layout.blob_path(id);
        let name = self.inner.name;
        let what = format!("get of blob {id} at {}", self.inner.url(&path));
        let result = self
            .inner
            .store
            .get(&path)
            .await
            .map_err(|e| map_error(self.inner.name, what.clone(), e))?;
        Ok(result
            .into_stream()
            .map_err(move |e| map_error(name, what.clone(), e))
            .boxed())
    }

    async fn head(&self, id: &BlobId) -> Result<Option<BlobInfo>> {
        let path = self.inner.layout.blob_path(id);
        Ok(self
            .inner
            .head_object(&path)
            .await?
            .map(|meta| self.inner.info(id.clone(), meta)))
    }

    async fn delete(&self, id: &BlobId) -> Result<bool> {
        // S3 answers a DELETE of a missing key with success, so look first.
        let path = self.inner.layout.blob_path(id);
        if self.inner.head_object(&path).await?.is_none() {
            return Ok(false);
        }
        self.inner.delete_object(&path).await?;
        Ok(true)
    }

    async fn list(&self) -> Result<BlobInfoStream> {
        let inner = self.inner.clone();
        let name = inner.name;
        let streams = cachet_core::entry::BLOB_ALGORITHMS.map(|algorithm| {
            let dir = inner.layout.algorithm_dir(algorithm);
            let what = format!("list of {}/", inner.url(&dir));
            inner
                .store
                .list(Some(&dir))
                .map_err(move |e| map_error(name, what.clone(), e))
        });
        let stream = futures_util::stream::iter(streams)
            .flatten()
            .try_filter_map(move |meta| {
                let info = inner
                    .layout
                    .parse_blob_path(&meta.location)
                    .map(|id| inner.info(id, meta));
                futures_util::future::ready(Ok(info))
            });
        Ok(stream.boxed())
    }

    async fn cleanup_temporary(&self, older_than: Timestamp) -> Result<u64> {
        let tmp = self.inner.layout.tmp_dir();
        let what = format!("list of {}/", self.inner.url(&tmp));
        let candidates: Vec<Path> = self
            .inner
            .store
            .list(Some(&tmp))
            .map_err(|e| map_error(self.inner.name, what.clone(), e))
            .try_filter_map(|meta| {
                let modified = Timestamp(meta.last_modified.timestamp_millis());
                let started = meta.location.filename().and_then(temp_started_at);
                let abandoned =
                    modified < older_than && started.is_none_or(|started| started < older_than);
                futures_util::future::ready(Ok(abandoned.then_some(meta.location)))
            })
            .try_collect()
            .await?;
        let mut removed = 0;
        for path in candidates {
            self.inner.delete_object(&path).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// A streaming write to S3 (see [`BlobBackend::writer`]).
///
/// Chunks are buffered until one part is full (`part_size`, 8 MiB by default). A blob that
/// ends before that is published with a single `PUT` at [`finish`](BlobWriter::finish). A
/// longer one is streamed as an S3 multipart upload to a temporary object
/// `<prefix>/tmp/upload-<start_ms>-<random>`, with at most `parts_in_flight` parts uploading
/// at once; `finish` completes the upload, copies the object on the server to its final name
/// and deletes the temporary object. A multipart upload is invisible until completed, so an
/// aborted or dropped writer leaves nothing visible: `abort` (or dropping the writer inside a
/// Tokio runtime) aborts the upload.
pub struct S3BlobWriter {
    inner: Arc<Inner>,
    started: Timestamp,
    /// Chunks buffered before the first part is full.
    pending: Vec<Bytes>,
    pending_len: usize,
    written: u64,
    upload: Option<Upload>,
}

struct Upload {
    tmp: Path,
    multipart: WriteMultipart,
}

impl S3BlobWriter {
    async fn start_upload(&mut self) -> Result<()> {
        let tmp = self.inner.layout.new_temp_path(self.started);
        let upload = self.inner.store.put_multipart(&tmp).await.map_err(|e| {
            map_error(
                self.inner.name,
                format!("multipart upload to {}", self.inner.url(&tmp)),
                e,
            )
        })?;
        let mut multipart = WriteMultipart::new_with_chunk_size(upload, self.inner.part_size);
        for chunk in self.pending.drain(..) {
            multipart.put(chunk);
        }
        self.pending_len = 0;
        self.upload = Some(Upload { tmp, multipart });
        self.wait_for_capacity().await
    }

    async fn wait_for_capacity(&mut self) -> Result<()> {
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        if let Err(e) = upload
            .multipart
            .wait_for_capacity(self.inner.parts_in_flight)
            .await
        {
            let what = format!("part upload to {}", self.inner.url(&upload.tmp));
            if let Some(upload) = self.upload.take() {
                let _ = upload.multipart.abort().await;
            }
            return Err(map_error(self.inner.name, what, e));
        }
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for S3BlobWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.written += chunk.len() as u64;
        self.inner.check_size(self.written, None)?;
        if chunk.is_empty() {
            return Ok(());
        }
        match self.upload.as_mut() {
            Some(upload) => {
                upload.multipart.put(chunk);
                self.wait_for_capacity().await
            }
            None => {
                self.pending_len += chunk.len();
                self.pending.push(chunk);
                if self.pending_len >= self.inner.part_size {
                    self.start_upload().await?;
                }
                Ok(())
            }
        }
    }

    async fn finish(mut self: Box<Self>, id: &BlobId) -> Result<BlobReceipt> {
        let inner = self.inner.clone();
        let path = inner.layout.blob_path(id);
        let Some(Upload { tmp, multipart }) = self.upload.take() else {
            let payload: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
            return inner.put_object(&path, payload).await;
        };
        multipart.finish().await.map_err(|e| {
            map_error(
                inner.name,
                format!("multipart upload to {}", inner.url(&tmp)),
                e,
            )
        })?;
        let published = async {
            if inner.conditional_put {
                if let Some(existing) = inner.head_object(&path).await? {
                    return Ok(existing);
                }
            }
            inner.store.copy(&tmp, &path).await.map_err(|e| {
                map_error(
                    inner.name,
                    format!("copy of {} to {}", inner.url(&tmp), inner.url(&path)),
                    e,
                )
            })?;
            inner
                .head_object(&path)
                .await?
                .ok_or_else(|| Error::Conflict {
                    what: inner.url(&path),
                    detail: "the object was deleted right after it was published".to_string(),
                })
        }
        .await;
        if let Err(e) = inner.delete_object(&tmp).await {
            tracing::warn!(
                error = %e,
                "cachet-blob-s3: could not delete the temporary object {}; cleanup_temporary \
                 will remove it",
                inner.url(&tmp)
            );
        }
        Ok(BlobReceipt {
            etag: published?.e_tag,
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.pending.clear();
        if let Some(upload) = self.upload.take() {
            upload.multipart.abort().await.map_err(|e| {
                map_error(
                    self.inner.name,
                    format!(
                        "abort of the multipart upload to {}",
                        self.inner.url(&upload.tmp)
                    ),
                    e,
                )
            })?;
        }
        Ok(())
    }
}

impl Drop for S3BlobWriter {
    fn drop(&mut self) {
        let Some(upload) = self.upload.take() else {
            return;
        };
        // Nothing is visible either way; aborting frees the parts stored so far. Outside a
        // runtime the parts stay until the bucket's lifecycle rule removes them.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = upload.multipart.abort().await;
            });
        }
    }
}
