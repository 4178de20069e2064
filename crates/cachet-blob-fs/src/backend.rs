//! [`FsBlobs`]: the [`BlobBackend`] implementation.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use cachet_core::{
    BlobBackend, BlobCapabilities, BlobId, BlobInfo, BlobInfoStream, BlobReceipt, BlobWriter,
    ByteStream, Error, Result, Timestamp,
};

use crate::config::{FsConfig, FsyncPolicy};
use crate::layout::{self, Layout};

/// Capacity of a streaming writer's buffer: small writes are gathered up to this size; larger
/// chunks go straight to the file.
const WRITE_BUFFER: usize = 64 * 1024;

/// How many temp-directory entries `cleanup_temporary` handles between yields.
const CLEANUP_BATCH: usize = 256;

/// Blobs stored as files under one root directory (see the [crate docs](crate) for the layout,
/// the durability policy and why calls block their thread for one chunk's I/O).
///
/// Cloning is cheap and clones share the configuration. Several processes may use the same
/// root at once: publishing is an atomic rename, and writes of one id carry the same content.
#[derive(Debug, Clone)]
pub struct FsBlobs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    fsync: FsyncPolicy,
    chunk_size: usize,
}

impl FsBlobs {
    /// Validates `config`, makes the root absolute, creates it (when `create_dirs` is on) and
    /// its `tmp/` directory, and opens the store.
    ///
    /// # Errors
    /// - `Error::Config { field: "root" | "chunk_size", .. }` for invalid options, a root that
    ///   is missing (with `create_dirs` off) or that is not a directory.
    /// - `Error::Io` naming the path when the root or `tmp/` cannot be created or inspected.
    pub fn open(config: FsConfig) -> Result<Self> {
        config.validate()?;
        let root = std::path::absolute(config.root()).map_err(|e| io_err(config.root(), e))?;
        match fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::config(
                    "root",
                    format!(
                        "{} exists but is not a directory; point the blob store at a directory",
                        root.display()
                    ),
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if !config.create_dirs() {
                    return Err(Error::config(
                        "root",
                        format!(
                            "{} does not exist; create it or enable create_dirs",
                            root.display()
                        ),
                    ));
                }
                fs::create_dir_all(&root).map_err(|e| io_err(&root, e))?;
            }
            Err(e) => return Err(io_err(&root, e)),
        }
        let layout = Layout::new(root);
        ensure_tmp_dir(&layout.tmp_dir())?;
        Ok(FsBlobs {
            inner: Arc::new(Inner {
                layout,
                fsync: config.fsync(),
                chunk_size: config.chunk_size(),
            }),
        })
    }

    /// Opens the store named by a `file://` URL (see [`FsConfig::from_url`]).
    pub fn open_url(url: &str) -> Result<Self> {
        FsConfig::from_url(url)?.build()
    }

    /// The (absolute) root directory.
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    /// The fsync policy in force.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.inner.fsync
    }

    /// Where the blob `id` is (or would be) stored:
    /// `<root>/<algorithm>/<hex[0..2]>/<hex>`.
    pub fn blob_path(&self, id: &BlobId) -> PathBuf {
        self.inner.layout.blob_path(id)
    }

    /// The directory of uploads in progress: `<root>/tmp`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.inner.layout.tmp_dir()
    }
}

#[async_trait]
impl BlobBackend for FsBlobs {
    fn name(&self) -> &str {
        "fs"
    }

    fn capabilities(&self) -> BlobCapabilities {
        let mut caps = BlobCapabilities::minimal();
        caps.atomic_publish = true;
        caps.range_read = true;
        caps.local_only = true;
        caps.durable = self.inner.fsync == FsyncPolicy::Always;
        caps
    }

    async fn put(&self, id: &BlobId, data: Bytes) -> Result<BlobReceipt> {
        let mut temp = TempFile::create(self.inner.clone())?;
        temp.write_chunked(&data).await?;
        temp.publish(id)?;
        Ok(BlobReceipt::default()) // files have no entity tag
    }

    async fn writer(&self) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(FsBlobWriter {
            temp: TempFile::create(self.inner.clone())?,
        }))
    }

    async fn get(&self, id: &BlobId) -> Result<Bytes> {
        let path = self.blob_path(id);
        let mut file = open_blob(&path, id)?;
        let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        let chunk = self.inner.chunk_size as u64;
        let mut first = true;
        loop {
            if !first {
                yield_now().await;
            }
            first = false;
            let n = (&mut file)
                .take(chunk)
                .read_to_end(&mut buf)
                .map_err(|e| io_err(&path, e))?;
            if n == 0 {
                break;
            }
        }
        Ok(Bytes::from(buf))
    }

    async fn get_stream(&self, id: &BlobId) -> Result<ByteStream> {
        let path = self.blob_path(id);
        let file = open_blob(&path, id)?;
        let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
        let state = ChunkReader {
            file,
            path,
            remaining: len,
            chunk: self.inner.chunk_size,
            started: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            Some(state),
            |state| async move {
                let mut reader = state?;
                match reader.next_chunk().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), Some(reader))),
                    Ok(None) => None,
                    Err(e) => Some((Err(e), None)),
                }
            },
        )))
    }

    async fn head(&self, id: &BlobId) -> Result<Option<BlobInfo>> {
        let path = self.blob_path(id);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(BlobInfo {
                id: id.clone(),
                size: meta.len(),
                modified: meta.modified().ok().map(to_timestamp),
                etag: None,
            })),
            Ok(_) => Err(io_err(&path, not_a_regular_file())),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    async fn delete(&self, id: &BlobId) -> Result<bool> {
        let path = self.blob_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    async fn list(&self) -> Result<BlobInfoStream> {
        let layout = &self.inner.layout;
        let pending = cachet_core::entry::BLOB_ALGORITHMS
            .iter()
            .rev()
            .map(|algorithm| PendingDir {
                path: layout.algorithm_dir(algorithm),
                algorithm,
                shard: None,
            })
            .collect();
        let walk = Walk {
            pending,
            ready: VecDeque::new(),
            scanned_any: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            walk,
            |mut walk| async move {
                let item = walk.next().await?;
                Some((item, walk))
            },
        )))
    }

    async fn cleanup_temporary(&self, older_than: Timestamp) -> Result<u64> {
        let tmp = self.tmp_dir();
        let entries = match fs::read_dir(&tmp) {
            Ok(entries) => entries,
            Err(e) if is_missing(&e) => return Ok(0),
            Err(e) => return Err(io_err(&tmp, e)),
        };
        let mut removed = 0u64;
        let mut first_error = None;
        for (i, entry) in entries.enumerate() {
            if i > 0 && i % CLEANUP_BATCH == 0 {
                yield_now().await;
            }
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    first_error.get_or_insert(io_err(&tmp, e));
                    continue;
                }
            };
            let path = entry.path();
            // `DirEntry::metadata` does not follow symlinks: a link is judged (and removed) as
            // itself, never its target.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if is_missing(&e) => continue,
                Err(e) => {
                    first_error.get_or_insert(io_err(&path, e));
                    continue;
                }
            };
            if meta.is_dir() {
                continue;
            }
            let written_recently = meta
                .modified()
                .map(|t| to_timestamp(t) >= older_than)
                .unwrap_or(true);
            let started_recently = entry
                .file_name()
                .to_str()
                .and_then(layout::temp_started_at)
                .is_some_and(|started| started >= older_than);
            if written_recently || started_recently {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), "removed abandoned upload");
                    removed += 1;
                }
                Err(e) if is_missing(&e) => {}
                Err(e) => {
                    first_error.get_or_insert(io_err(&path, e));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing: temp file, then publish by rename
// ---------------------------------------------------------------------------------------------

/// An upload in `<root>/tmp/`. Removed on drop unless published.
#[derive(Debug)]
struct TempFile {
    inner: Arc<Inner>,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    /// Published or discarded: nothing is left for `Drop` to remove.
    settled: bool,
}

impl TempFile {
    fn create(inner: Arc<Inner>) -> Result<Self> {
        let tmp_dir = inner.layout.tmp_dir();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let path = inner.layout.new_temp_path();
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(TempFile {
                        inner,
                        path,
                        file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
                        settled: false,
                    });
                }
                // Someone removed tmp/ (a manual cleanup): recreate it.
                Err(e) if e.kind() == ErrorKind::NotFound && attempts < 3 => {
                    ensure_tmp_dir(&tmp_dir)?;
                }
                // A name collision with another process: take the next name.
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempts < 8 => {}
                Err(e) => return Err(io_err(&path, e)),
            }
        }
    }

    /// Appends `data`, at most one chunk per blocking write, yielding between chunks.
    async fn write_chunked(&mut self, data: &[u8]) -> Result<()> {
        let chunk = self.inner.chunk_size;
        for (i, piece) in data.chunks(chunk).enumerate() {
            if i > 0 {
                yield_now().await;
            }
            let file = self.file.as_mut().ok_or_else(|| {
                io_err(
                    &self.path,
                    io::Error::other("the upload was already finished"),
                )
            })?;
            file.write_all(piece).map_err(|e| io_err(&self.path, e))?;
        }
        Ok(())
    }

    /// Flushes, fsyncs (per policy) and renames the file to its content address, then fsyncs
    /// the directory (per policy). On failure the temp file is removed (by `Drop`).
    fn publish(mut self, id: &BlobId) -> Result<()> {
        let writer = self.file.take().ok_or_else(|| {
            io_err(
                &self.path,
                io::Error::other("the upload was already finished"),
            )
        })?;
        let file = writer
            .into_inner()
            .map_err(|e| io_err(&self.path, e.into_error()))?;
        let always = self.inner.fsync == FsyncPolicy::Always;
        if always {
            file.sync_data().map_err(|e| io_err(&self.path, e))?;
        }
        drop(file);

        let layout = &self.inner.layout;
        let target = layout.blob_path(id);
        let rename_err = |e: io::Error| {
            Error::io(
                format!("{} -> {}", self.path.display(), target.display()),
                e,
            )
        };
        match fs::rename(&self.path, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // The first blob of this shard: create the shard directories and try again.
                create_shard_dirs(&layout.shard_dirs(id), always)?;
                fs::rename(&self.path, &target).map_err(rename_err)?;
            }
            Err(e) => return Err(rename_err(e)),
        }
        self.settled = true;
        if always {
            if let Some(dir) = target.parent() {
                sync_dir(dir)?;
            }
        }
        Ok(())
    }

    /// Removes the file now, reporting a failure (instead of leaving it to `Drop`).
    fn discard(mut self) -> Result<()> {
        drop(self.file.take());
        self.settled = true; // nothing left for Drop to do
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.path, e)),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        drop(self.file.take());
        if let Err(e) = fs::remove_file(&self.path) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(
                    path = %self.path.display(),
                    error = %e,
                    "could not remove an abandoned upload; cleanup_temporary will retry"
                );
            }
        }
    }
}

/// The streaming writer returned by [`FsBlobs::writer`](BlobBackend::writer).
///
/// Each `write` goes through to the temp file (gathered in a 64 KiB buffer when chunks are
/// small), so memory stays bounded whatever the blob size. Dropping it without `finish`
/// removes the temp file.
#[derive(Debug)]
pub struct FsBlobWriter {
    temp: TempFile,
}

#[async_trait]
impl BlobWriter for FsBlobWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.temp.write_chunked(&chunk).await
    }

    async fn finish(self: Box<Self>, id: &BlobId) -> Result<BlobReceipt> {
        self.temp.publish(id)?;
        Ok(BlobReceipt::default())
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.temp.discard()
    }
}

/// Creates the missing directories of a blob's shard path (outermost first), tolerating
/// concurrent creators; with `sync`, fsyncs the parent of each directory it created.
fn create_shard_dirs(dirs: &[PathBuf], sync: bool) -> Result<()> {
    for dir in dirs {
        match fs::create_dir(dir) {
            Ok(()) => {
                if sync {
                    if let Some(parent) = dir.parent() {
                        sync_dir(parent)?;
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(dir, e)),
        }
    }
    Ok(())
}

/// Creates `<root>/tmp` if needed and checks it is a real directory (not a link elsewhere:
/// uploads must stay on the root's filesystem for the rename to be atomic).
fn ensure_tmp_dir(tmp: &Path) -> Result<()> {
    match fs::create_dir(tmp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(tmp).map_err(|e| io_err(tmp, e))?;
            if meta.is_dir() {
                Ok(())
            } else {
                Err(io_err(
                    tmp,
                    io::Error::new(
                        ErrorKind::NotADirectory,
                        "exists but is not a directory (cachet keeps uploads in progress here); \
                         remove it",
                    ),
                ))
            }
        }
        Err(e) => Err(io_err(tmp, e)),
    }
}

/// Makes a directory's entries durable (the rename or creation of a child).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(dir, e))
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened as files here; NTFS journals the rename itself.
        let _ = dir;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Opens a blob file for reading without following a symbolic link in its last component.
fn open_blob(path: &Path, id: &BlobId) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path).map_err(|e| {
        if is_missing(&e) {
            Error::not_found(format!("blob {id} (no file at {})", path.display()))
        } else {
            io_err(path, e)
        }
    })
}

/// The state of a `get_stream`: the open file and how much of it is left.
struct ChunkReader {
    file: File,
    path: PathBuf,
    remaining: u64,
    chunk: usize,
    started: bool,
}

impl ChunkReader {
    /// Reads the next chunk (at most `chunk` bytes), or `None` at the end. Stops early if the
    /// file turns out shorter than it was when opened (it is returned as-is: integrity is the
    /// engine's job).
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        if self.started {
            yield_now().await;
        }
        self.started = true;
        let want = self.remaining.min(self.chunk as u64);
        let mut buf = Vec::with_capacity(want as usize);
        let n = (&mut self.file)
            .take(want)
            .read_to_end(&mut buf)
            .map_err(|e| io_err(&self.path, e))?;
        if n == 0 {
            self.remaining = 0;
            return Ok(None);
        }
        self.remaining -= n as u64;
        Ok(Some(Bytes::from(buf)))
    }
}

// ---------------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------------

/// A directory still to scan, and the path components that lead to it.
struct PendingDir {
    path: PathBuf,
    algorithm: &'static str,
    /// `None` for an algorithm directory, the shard name for a shard directory.
    shard: Option<String>,
}

/// A depth-first walk of the shard directories, one directory read per step: memory holds at
/// most one directory's entries plus the stack of directories still to visit.
struct Walk {
    pending: Vec<PendingDir>,
    ready: VecDeque<Result<BlobInfo>>,
    scanned_any: bool,
}

impl Walk {
    async fn next(&mut self) -> Option<Result<BlobInfo>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            let dir = self.pending.pop()?;
            if self.scanned_any {
                yield_now().await;
            }
            self.scanned_any = true;
            self.scan(dir);
        }
    }

    fn scan(&mut self, dir: PendingDir) {
        let entries = match fs::read_dir(&dir.path) {
            Ok(entries) => entries,
            // A shard removed meanwhile, or an algorithm directory not created yet.
            Err(e) if is_missing(&e) => return,
            Err(e) => {
                self.ready.push_back(Err(io_err(&dir.path, e)));
                return;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    self.ready.push_back(Err(io_err(&dir.path, e)));
                    continue;
                }
            };
            // Neither follows symbolic links: a link is foreign, whatever it points to.
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue; // not UTF-8: not ours
            };
            match &dir.shard {
                None if file_type.is_dir() && layout::is_shard_name(name) => {
                    self.pending.push(PendingDir {
                        path: entry.path(),
                        algorithm: dir.algorithm,
                        shard: Some(name.to_owned()),
                    });
                }
                Some(shard) if file_type.is_file() => {
                    let Some(id) = BlobId::from_sharded_name(dir.algorithm, shard, name) else {
                        continue;
                    };
                    match entry.metadata() {
                        Ok(meta) => self.ready.push_back(Ok(BlobInfo {
                            id,
                            size: meta.len(),
                            modified: meta.modified().ok().map(to_timestamp),
                            etag: None,
                        })),
                        Err(e) if is_missing(&e) => {} // deleted meanwhile
                        Err(e) => self.ready.push_back(Err(io_err(entry.path(), e))),
                    }
                }
                _ => {} // a foreign file or directory
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn io_err(path: impl AsRef<Path>, e: io::Error) -> Error {
    Error::io(path.as_ref().display(), e)
}

/// `NotFound`, or `NotADirectory` (a path component is a file, so the path cannot exist).
fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

fn not_a_regular_file() -> io::Error {
    io::Error::other("not a regular file (a foreign object where a blob belongs)")
}

fn to_timestamp(t: SystemTime) -> Timestamp {
    let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp(millis(d)),
        Err(before) => Timestamp(-millis(before.duration())),
    }
}

/// Lets other tasks run: wakes itself and returns `Pending` once. Runtime-agnostic (no tokio
/// dependency); called between chunks of a long transfer.
fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}
