//! # cachet-blob-s3
//!
//! Blob storage in an S3 bucket, or on any S3-compatible server (MinIO, Ceph, Garage, moto,
//! ...), through [`object_store`]. [`S3Blobs`] implements
//! [`BlobBackend`](cachet_core::BlobBackend) and passes the core conformance suite.
//!
//! ```no_run
//! use bytes::Bytes;
//! use cachet_blob_s3::S3Config;
//! use cachet_core::{BlobBackend, BlobId, ContentDigest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cachet_core::Result<()> {
//! let blobs = S3Config::from_url(
//!     "s3://my-bucket/cachet/blobs?endpoint=http://127.0.0.1:9000&allow_http=true&path_style=true",
//! )?
//! .build()?;
//! let id = BlobId::from_digest(&ContentDigest::Xxh3_128(0x1234));
//! let receipt = blobs.put(&id, Bytes::from_static(b"hello")).await?;
//! assert_eq!(blobs.head(&id).await?.unwrap().etag, receipt.etag);
//!
//! // Large blobs: stream in (multipart, bounded memory), stream out.
//! let mut writer = blobs.writer().await?;
//! writer.write(Bytes::from(vec![7u8; 20 << 20])).await?;
//! writer.finish(&BlobId::from_digest(&ContentDigest::Xxh3_128(0x5678))).await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//! ```text
//! s3://<bucket>/<prefix>/<algorithm>/<hex[0..2]>/<hex>          published blobs
//! s3://<bucket>/<prefix>/tmp/upload-<start_ms>-<random>         streamed uploads being published
//! ```
//! The same names as `cachet-blob-fs`. `algorithm` is `xxh3-128` or `sha256` and `hex` the
//! lowercase digest, both from a validated [`BlobId`](cachet_core::BlobId): no key or user
//! string becomes an object name. An object holds exactly the blob's bytes.
//!
//! `list` lists `<prefix>/xxh3-128/` and `<prefix>/sha256/` and reports an object only if its
//! name parses as a blob id in the shard its id names; temporary uploads and foreign objects
//! are skipped, never reported and never an error. Give every store its own prefix.
//!
//! ## Writes
//! - `put` is one `PutObject`. With conditional put (the default) it sends
//!   `If-None-Match: *`: an id that already exists is kept, not rewritten (the content is the
//!   same by construction), and its ETag is returned. Turn it off
//!   ([`S3Config::with_conditional_put`], `conditional_put=false`, or
//!   `AWS_CONDITIONAL_PUT=disabled`) for servers that reject the header; then `put`
//!   overwrites, which is equally correct. Servers that *ignore* the header (s3rver) overwrite
//!   silently: harmless for content-addressed blobs.
//! - A [writer](S3BlobWriter) buffers up to one part (8 MiB by default). A shorter blob is
//!   sent with one `PutObject` at `finish`. A longer one streams as a multipart upload to a
//!   temporary object, at most `parts_in_flight` (2) parts at once, so a writer holds at most
//!   `(parts_in_flight + 1) × part_size` bytes (24 MiB by default). The blob's id (its digest)
//!   is known only at `finish`, so `finish` completes the upload, copies the temporary object
//!   to its final name on the server (`CopyObject`; skipped when conditional put is on and the
//!   id already exists), and deletes the temporary object.
//! - Publishing is atomic: S3 objects (single PUT, completed multipart upload, copy) appear
//!   whole or not at all. Objects are durable once the server acknowledges them.
//! - Size limit: 5 GiB per blob (one `PutObject`, and one `CopyObject` for streamed blobs);
//!   larger blobs fail with `Error::Unsupported` as soon as they pass the limit.
//!
//! ## Temporary data and the bucket lifecycle rule
//! An incomplete multipart upload is invisible (not listed, not readable) but its parts are
//! stored, and billed, until it is completed or aborted. `abort` and dropping a writer (inside
//! a Tokio runtime) abort it. A crashed process leaves it behind, and object_store cannot list
//! incomplete multipart uploads, so **configure the bucket with a lifecycle rule
//! `AbortIncompleteMultipartUpload`** (for example after 1 day) on the store's prefix.
//! `cleanup_temporary(older_than)` removes the completed temporary objects under
//! `<prefix>/tmp/` left by a crash between `finish`'s copy and delete: those whose name
//! records a start before `older_than` and that were last modified before it.
//!
//! ## Errors
//! Failed requests are retried by object_store with exponential backoff (connection errors,
//! timeouts of idempotent requests, 5xx and 429 answers), within the budget of
//! [`S3Config::with_max_retries`] and [`S3Config::with_retry_timeout`]. What is left maps to
//! `cachet_core::Error` by meaning: missing object → `NotFound`; unreachable server, timeout,
//! 5xx → `Unavailable` (retryable); 401/403 → `Config` on `credentials`; 409/412 → `Conflict`;
//! anything else → `Backend`. Messages name the operation and the `s3://bucket/key`.
//!
//! ## Concurrency and I/O
//! Fully async (hyper/reqwest); no blocking calls. [`S3Blobs`] is cheap to clone and safe to
//! use from many tasks; clones share one connection pool. `delete` looks before it deletes
//! (S3 reports success for missing keys), so two concurrent deletes of one blob may both
//! return `true`.
//!
//! ## Configuration
//! [`S3Config`] is a consuming builder, or a URL:
//! `s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&allow_http=true&path_style=true`
//! (every option in [`S3Config::from_url`]). Options not given are read from the standard
//! variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, ...), then the instance or container role. Builder
//! calls win over the URL, and the URL over the environment. Credentials in a URL are accepted
//! but discouraged (URLs end up in logs).
//!
//! ## Features: Google Cloud Storage and Azure
//! The same backend runs on object_store's other clouds, sharing everything above (layout,
//! writer, conditional put, retries, errors):
//!
//! | feature | URL | constructor | backend name |
//! |---|---|---|---|
//! | `gcs` | `gs://bucket/prefix?service_account_path=/key.json` | `S3Config::gcs` | `gcs` |
//! | `azure` | `az://container/prefix?account=NAME&access_key=KEY` | `S3Config::azure` | `azure` |
//!
//! Shared options (`part_size`, `parts_in_flight`, `conditional_put`, retries, timeouts,
//! `env`, and `allow_http` for Azure emulators) work for both; S3-only options (`endpoint`,
//! `region`, `path_style`, access keys) are refused with `Error::Config` naming them. Other
//! settings come from each service's standard environment variables (`GOOGLE_*`,
//! `AZURE_STORAGE_*`). Neither feature adds a crate to the build (both use object_store's
//! `*-base` features over the same reqwest/ring stack). They are checked by unit tests
//! (URL parsing, client construction) only: no GCS or Azure server runs in CI.
//!
//! ## TLS
//! HTTPS uses rustls with the *ring* crypto provider (no aws-lc, no OpenSSL). When the
//! application has not installed a rustls process-default provider, [`S3Config::build`]
//! installs ring's.
#![forbid(unsafe_code)]

mod backend;
mod config;
mod error;
mod layout;
mod tls;

pub use backend::{S3BlobWriter, S3Blobs};
pub use config::{
    DEFAULT_PART_SIZE, DEFAULT_PARTS_IN_FLIGHT, DEFAULT_RETRY_TIMEOUT, MAX_OBJECT_SIZE,
    MAX_PART_SIZE, MAX_PARTS_IN_FLIGHT, MIN_PART_SIZE, S3Config,
};
