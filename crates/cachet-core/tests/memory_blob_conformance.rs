//! The blob conformance suite run against the in-memory reference backend.

use std::sync::Arc;

use cachet_core::BlobBackend;
use cachet_core::memory::MemoryBlobs;

#[tokio::test]
async fn memory_blobs_pass_blob_conformance() {
    cachet_core::testing::blob::run_all(|| async {
        Arc::new(MemoryBlobs::new()) as Arc<dyn BlobBackend>
    })
    .await;
}
