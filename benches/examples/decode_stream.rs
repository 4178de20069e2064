//! The engine's CPU cost of a streamed read: a 256 MiB random container decoded and verified
//! from 16 KiB chunks (about what an HTTP body delivers), no I/O.
//! `cargo run --release -p cachet-benches --example decode_stream`

use std::sync::Arc;
use std::time::Instant;

use cachet::backends::memory::{MemoryBlobs, MemoryMetadata};
use cachet::cachet_storage::format::FrameDecoder;
use cachet::{BlobBackend, CacheKey, PutOptions, Store, StoreConfig};
use cachet_benches::{MIB, random_bytes};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let blobs = MemoryBlobs::new();
    let store = Store::new(
        Arc::new(MemoryMetadata::new()),
        Arc::new(blobs.clone()),
        StoreConfig::default(),
    )
    .unwrap();
    let key = CacheKey::explicit("", "big").unwrap();
    let meta = store
        .put_bytes(&key, &random_bytes(256 * MIB, 5), PutOptions::default())
        .await
        .unwrap();
    let stored = blobs.get(meta.location.blob_id().unwrap()).await.unwrap();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let mut decoder = FrameDecoder::new("bench");
        let mut total = 0usize;
        for chunk in stored.chunks(16 * 1024) {
            decoder.feed(chunk).unwrap();
            while let Some(frame) = decoder.next_frame().unwrap() {
                total += frame.len();
            }
        }
        decoder.finish().unwrap();
        assert_eq!(total, 256 * MIB);
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "decode 256 MiB from 16 KiB chunks: best {:.1} ms, {:.2} GiB/s",
        best * 1e3,
        0.25 / best
    );
}
