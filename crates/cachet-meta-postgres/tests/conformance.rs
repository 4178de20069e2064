//! `PostgresMetadata` passes the metadata conformance suite on a real server (a fresh
//! schema per behavior).

mod common;

use std::sync::{Arc, Mutex};

use cachet_core::MetadataBackend;
use cachet_core::testing::metadata::run_all;
use cachet_meta_postgres::PostgresMetadata;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_metadata_conformance() {
    let Some(url) = common::database_url() else {
        return;
    };
    // Each behavior gets a fresh schema and pool; the previous behavior's pool is closed
    // first, so ~90 behaviors never hold more than a few server connections at once.
    let previous: Arc<Mutex<Option<Arc<PostgresMetadata>>>> = Arc::default();
    run_all(|| {
        let url = url.clone();
        let previous = previous.clone();
        async move {
            let last = previous.lock().unwrap().take();
            if let Some(last) = last {
                last.close().await;
            }
            let backend = Arc::new(common::open_fresh(&url, "conf").await);
            *previous.lock().unwrap() = Some(backend.clone());
            backend as Arc<dyn MetadataBackend>
        }
    })
    .await;
}
