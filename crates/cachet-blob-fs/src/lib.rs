//! # cachet-blob-fs
//!
//! Blob storage in a local directory: the embedded default of cachet (`file:///path`).
//! [`FsBlobs`] implements [`BlobBackend`](cachet_core::BlobBackend) and passes the core
//! conformance suite.
//!
//! ```
//! use bytes::Bytes;
//! use cachet_blob_fs::{FsBlobs, FsConfig, FsyncPolicy};
//! use cachet_core::{BlobBackend, BlobId, ContentDigest};
//! use futures_util::TryStreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cachet_core::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let root = dir.path().join("blobs");
//! let blobs = FsConfig::new(&root).with_fsync(FsyncPolicy::Always).build()?;
//! let id = BlobId::from_digest(&ContentDigest::Xxh3_128(0x1234));
//!
//! blobs.put(&id, Bytes::from_static(b"hello")).await?;
//! assert_eq!(blobs.get(&id).await?, Bytes::from_static(b"hello"));
//!
//! // Large blobs: stream in, stream out, with bounded memory.
//! let mut writer = blobs.writer().await?;
//! writer.write(Bytes::from(vec![7u8; 3 << 20])).await?;
//! let big = BlobId::from_digest(&ContentDigest::Xxh3_128(0x5678));
//! writer.finish(&big).await?;
//! let chunks: Vec<Bytes> = blobs.get_stream(&big).await?.try_collect().await?;
//! assert_eq!(chunks.len(), 3); // 1 MiB chunks by default
//!
//! assert_eq!(
//!     blobs.blob_path(&id),
//!     root.join("xxh3-128/00/00000000000000000000000000001234")
//! );
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//! ```text
//! <root>/<algorithm>/<hex[0..2]>/<hex>                published blobs (immutable files)
//! <root>/tmp/upload-<start_ms>-<pid>-<counter>-<nanos>  uploads in progress
//! ```
//! `algorithm` is `xxh3-128` or `sha256` and `hex` the lowercase digest, both from a validated
//! [`BlobId`](cachet_core::BlobId): no key or user string ever becomes a path, so no path
//! leaves the root. Two levels of 256 shards keep directories small (as cacache does). A blob
//! file holds exactly the bytes given to `put` or the writer; no header.
//!
//! `list` walks only the algorithm directories, one directory at a time, and reports a file
//! only if its name parses as a [`BlobId`](cachet_core::BlobId) *and* it sits in the shard its
//! id names. Anything else in the tree (foreign files, symbolic links, editor backups, the
//! `tmp/` directory, other files next to the store such as an index database) is skipped,
//! never reported and never an error. Blob files are opened with `O_NOFOLLOW`, so a symbolic
//! link planted at a blob path is an error, not a way out of the root.
//!
//! ## Writes and durability
//! Every write goes to a fresh temp file in `<root>/tmp/` and is published by an atomic
//! `rename` to its content address, so a reader (or a process that crashes) never sees a
//! partial blob. Concurrent writers of one id are fine: each renames its own complete copy,
//! and the content is the same by construction. With [`FsyncPolicy::Always`] (the default)
//! `finish`/`put` fsync the file before the rename and the directory after it (plus the parent
//! of any shard directory just created), so a published blob survives power loss.
//! [`FsyncPolicy::Never`] skips both: fastest, survives a process crash but not a kernel crash
//! or power loss. Deletes are not fsynced: a deleted blob that reappears after a crash is
//! harmless (it is content-addressed) and garbage collection finds it again.
//!
//! Temp files of a dropped or aborted writer are removed at once; those of a crashed process
//! are removed by `cleanup_temporary(older_than)`, which removes a temp file only if it was
//! last written before `older_than` **and** (for names it wrote itself) started before it, so
//! an upload that is still being written is not pulled from under its writer.
//!
//! ## Integrity
//! This crate stores and returns bytes; it does not check them. A truncated or damaged blob
//! file is returned as it is, and the engine (cachet-storage) detects it with its frame
//! checksums and content digest.
//!
//! ## Blocking I/O, on purpose
//! Operations run `std::fs` calls directly on the calling task instead of going through
//! `tokio::fs` or `spawn_blocking`. Measured on this project's machines, a thread hand-off
//! (a `spawn_blocking` round trip) costs 21–31 µs and waking an idle vCPU about 25 µs: more than
//! a small file operation itself, which dominates the "small hit in microseconds" path. Large
//! transfers are chunked instead: every `read` or `write` system call moves at most
//! `chunk_size` bytes (1 MiB by default) and the task yields between chunks, so other tasks
//! on the same thread get to run. Plainly: **each call blocks its thread for one chunk's
//! I/O** (and for the fsyncs of a publish under [`FsyncPolicy::Always`], which can take
//! milliseconds on slow disks). On a current-thread runtime that latency is seen by every task
//! on the thread; callers that cannot afford it can wrap calls in `spawn_blocking` themselves.
//!
//! ## Configuration
//! [`FsConfig`] is a consuming builder, or a URL:
//! `file:///var/cache/cachet/blobs?fsync=always|never&chunk_size=1MiB&create_dirs=true`.
#![forbid(unsafe_code)]

mod backend;
mod config;
mod layout;

pub use backend::{FsBlobWriter, FsBlobs};
pub use config::{DEFAULT_CHUNK_SIZE, FsConfig, FsyncPolicy, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
