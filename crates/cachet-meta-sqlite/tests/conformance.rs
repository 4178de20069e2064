//! `SqliteMetadata` passes the metadata conformance suite on real files (a fresh file per
//! behavior), with and without reader connections, and in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cachet_core::MetadataBackend;
use cachet_core::testing::metadata::run_all;
use cachet_meta_sqlite::SqliteConfig;

async fn run_on_files(configure: fn(SqliteConfig) -> SqliteConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = AtomicUsize::new(0);
    run_all(|| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let path = dir.path().join(format!("index-{n}.db"));
        async move {
            let index = configure(SqliteConfig::new(path))
                .open()
                .expect("open a fresh index");
            Arc::new(index) as Arc<dyn MetadataBackend>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_passes_metadata_conformance() {
    run_on_files(|config| config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_without_reader_pool_passes_metadata_conformance() {
    run_on_files(|config| config.with_readers(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_in_memory_passes_metadata_conformance() {
    run_all(|| async {
        Arc::new(SqliteConfig::in_memory().open().expect("open in memory"))
            as Arc<dyn MetadataBackend>
    })
    .await;
}
