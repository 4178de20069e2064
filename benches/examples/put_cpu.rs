//! The engine's CPU cost of putting a 1 MiB random value (memory index and blobs: no I/O),
//! for profiling: `perf record cargo run --release -p cachet-benches --example put_cpu`.

use std::sync::Arc;
use std::time::Instant;

use cachet::backends::memory::{MemoryBlobs, MemoryMetadata};
use cachet::{CacheKey, PutOptions, Store, StoreConfig};
use cachet_benches::{MIB, random_bytes, stamp};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let store = Store::new(
        Arc::new(MemoryMetadata::new()),
        Arc::new(MemoryBlobs::new()),
        StoreConfig::default(),
    )
    .unwrap();
    let mut value = random_bytes(MIB, 1);
    let started = Instant::now();
    for i in 0..n {
        stamp(&mut value, i as u64);
        let key = CacheKey::explicit("", format!("k{}", i % 64)).unwrap();
        store
            .put_bytes(&key, &value, PutOptions::default())
            .await
            .unwrap();
    }
    let each = started.elapsed() / n as u32;
    println!(
        "{n} puts of 1 MiB: {each:?} each, {:.2} GiB/s",
        1.0 / each.as_secs_f64() / 1024.0
    );
}
