//! The core blob conformance suite against a real S3-compatible server (moto in CI).

mod common;

use std::sync::Arc;

use cachet_core::BlobBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_blobs_pass_blob_conformance() {
    let Some((endpoint, bucket)) = common::server() else {
        return;
    };
    cachet_core::testing::blob::run_all(|| {
        let blobs = common::config(&endpoint, &bucket, &common::unique_prefix("conf"))
            .build()
            .unwrap();
        async move { Arc::new(blobs) as Arc<dyn BlobBackend> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_blobs_without_conditional_put_pass_blob_conformance() {
    let Some((endpoint, bucket)) = common::server() else {
        return;
    };
    cachet_core::testing::blob::run_all(|| {
        let blobs = common::config(&endpoint, &bucket, &common::unique_prefix("conf-nocond"))
            .with_conditional_put(false)
            .build()
            .unwrap();
        async move { Arc::new(blobs) as Arc<dyn BlobBackend> }
    })
    .await;
}
