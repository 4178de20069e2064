//! Shared setup: a backend on a fresh, unique prefix of the test bucket.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cachet_blob_s3::{S3Blobs, S3Config};
use cachet_core::testing::service_env;

/// The test server and bucket (`S3_ENDPOINT`, `S3_BUCKET`), or `None` to skip.
pub fn server() -> Option<(String, String)> {
    Some((service_env("S3_ENDPOINT")?, service_env("S3_BUCKET")?))
}

/// A prefix no other test (in this or another process) uses.
pub fn unique_prefix(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "cachet-test/{tag}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A config for the test server on `prefix` (credentials and region from the environment).
pub fn config(endpoint: &str, bucket: &str, prefix: &str) -> S3Config {
    S3Config::new(bucket)
        .with_prefix(prefix)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_path_style(true)
}

/// A backend on a fresh prefix, or `None` to skip.
pub fn fresh(tag: &str) -> Option<S3Blobs> {
    let (endpoint, bucket) = server()?;
    Some(
        config(&endpoint, &bucket, &unique_prefix(tag))
            .build()
            .unwrap(),
    )
}
