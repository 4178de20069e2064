//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cachet_cache::{Cache, CacheBuilder};
use cachet_core::memory::MemoryBlobs;
use cachet_core::{
    BlobBackend, BlobCapabilities, BlobId, BlobInfo, BlobInfoStream, BlobWriter, ByteStream,
    ManualClock, Result, Timestamp,
};

/// A clock stopped at a fixed, realistic time.
pub fn manual_clock() -> ManualClock {
    ManualClock::new(Timestamp(1_767_225_600_000)) // 2026-01-01
}

/// A builder over the embedded backends (SQLite index + filesystem blobs) in `dir`, when
/// they are compiled in; `memory://` otherwise.
pub fn embedded(dir: &std::path::Path) -> CacheBuilder {
    if cfg!(all(feature = "meta-sqlite", feature = "blob-fs")) {
        Cache::builder().directory(dir)
    } else {
        Cache::builder().in_memory()
    }
}

/// An embedded cache in a fresh temporary directory with a manual clock.
pub async fn cache_with_clock(
    default_ttl: Option<Duration>,
) -> (Cache, ManualClock, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let mut builder = embedded(dir.path()).clock(Arc::new(clock.clone()));
    if let Some(ttl) = default_ttl {
        builder = builder.default_ttl(ttl);
    }
    (builder.build().await.unwrap(), clock, dir)
}

/// An embedded cache in a fresh temporary directory.
pub async fn cache() -> (Cache, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (embedded(dir.path()).build().await.unwrap(), dir)
}

/// Memory blobs that claim to be reachable from other machines (like S3).
#[derive(Debug, Default, Clone)]
pub struct RemoteLikeBlobs(pub MemoryBlobs);

#[async_trait]
impl BlobBackend for RemoteLikeBlobs {
    fn name(&self) -> &str {
        "remote-like"
    }
    fn capabilities(&self) -> BlobCapabilities {
        let mut caps = self.0.capabilities();
        caps.local_only = false;
        caps
    }
    async fn put(&self, id: &BlobId, data: Bytes) -> Result<cachet_core::BlobReceipt> {
        self.0.put(id, data).await
    }
    async fn writer(&self) -> Result<Box<dyn BlobWriter>> {
        self.0.writer().await
    }
    async fn get(&self, id: &BlobId) -> Result<Bytes> {
        self.0.get(id).await
    }
    async fn get_stream(&self, id: &BlobId) -> Result<ByteStream> {
        self.0.get_stream(id).await
    }
    async fn head(&self, id: &BlobId) -> Result<Option<BlobInfo>> {
        self.0.head(id).await
    }
    async fn delete(&self, id: &BlobId) -> Result<bool> {
        self.0.delete(id).await
    }
    async fn list(&self) -> Result<BlobInfoStream> {
        self.0.list().await
    }
    async fn cleanup_temporary(&self, older_than: Timestamp) -> Result<u64> {
        self.0.cleanup_temporary(older_than).await
    }
}

/// A value large enough (> 16 KiB stored, incompressible) to live in a blob.
pub fn large_value(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
