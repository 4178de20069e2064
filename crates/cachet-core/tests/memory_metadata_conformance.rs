//! The in-memory reference index passes the metadata conformance suite.

use std::sync::Arc;

use cachet_core::MetadataBackend;
use cachet_core::memory::MemoryMetadata;
use cachet_core::testing::metadata;

#[tokio::test]
async fn memory_metadata_passes_metadata_conformance() {
    metadata::run_all(|| async { Arc::new(MemoryMetadata::new()) as Arc<dyn MetadataBackend> })
        .await;
}
