//! Helpers of the tests that run on the shared backends (PostgreSQL + S3).

use std::time::{SystemTime, UNIX_EPOCH};

use cachet_core::testing::service_env;

/// The index and blob URLs of a fresh shared cache: its own PostgreSQL schema and S3 prefix,
/// from the test services' environment (`None`, or a panic under CI, when it is missing).
pub fn fresh_cache_urls(test: &str) -> Option<(String, String)> {
    let database = service_env("DATABASE_URL")?;
    let endpoint = service_env("S3_ENDPOINT")?;
    let bucket = service_env("S3_BUCKET")?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("{test}_{}_{nanos}", std::process::id());
    let separator = if database.contains('?') { '&' } else { '?' };
    let index = format!("{database}{separator}cachet_schema={name}");
    let blobs = format!("s3://{bucket}/{name}?endpoint={endpoint}&allow_http=true");
    Some((index, blobs))
}

/// Deterministic pseudo-random (incompressible) bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    (0..len.div_ceil(8) as u64)
        .flat_map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed).to_le_bytes())
        .take(len)
        .collect()
}
