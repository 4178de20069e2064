//! The core blob conformance suite, run against real directories.

use std::sync::Arc;

use cachet_blob_fs::{FsConfig, FsyncPolicy};
use cachet_core::BlobBackend;

/// Runs the suite with one fresh temp directory per behavior. The directories live until the
/// end of the run (they are removed when `dirs` drops).
async fn run_suite(fsync: FsyncPolicy, chunk_size: usize) {
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    cachet_core::testing::blob::run_all(|| {
        let dirs = dirs.clone();
        async move {
            let dir = tempfile::tempdir().expect("create a temp dir");
            let blobs = FsConfig::new(dir.path().join("blobs"))
                .with_fsync(fsync)
                .with_chunk_size(chunk_size)
                .build()
                .expect("open FsBlobs");
            dirs.lock().unwrap().push(dir);
            Arc::new(blobs) as Arc<dyn BlobBackend>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_blobs_with_fsync_always_pass_blob_conformance() {
    run_suite(FsyncPolicy::Always, 1 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_blobs_with_fsync_never_pass_blob_conformance() {
    run_suite(FsyncPolicy::Never, 1 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_blobs_with_small_odd_chunks_pass_blob_conformance() {
    run_suite(FsyncPolicy::Never, 4096 + 7).await;
}

#[tokio::test(flavor = "current_thread")]
async fn fs_blobs_pass_blob_conformance_on_a_current_thread_runtime() {
    run_suite(FsyncPolicy::Never, 1 << 20).await;
}
