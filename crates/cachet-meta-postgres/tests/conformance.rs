//! `PostgresMetadata` passes the metadata conformance suite on a real server (a fresh
//! schema per behavior).

mod common;

use std::sync::Arc;

use cachet_core::MetadataBackend;
use cachet_core::testing::metadata::run_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_metadata_conformance() {
    let Some(url) = common::database_url() else {
        return;
    };
    run_all(|| {
        let url = url.clone();
        async move { Arc::new(common::open_fresh(&url, "conf").await) as Arc<dyn MetadataBackend> }
    })
    .await;
}
