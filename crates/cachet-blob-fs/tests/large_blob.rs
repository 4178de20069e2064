//! A 64 MiB blob streamed in and out with bounded memory. Alone in its test binary so that
//! the process's peak memory measures this test only.

use bytes::Bytes;
use cachet_blob_fs::{FsConfig, FsyncPolicy};
use cachet_core::{BlobBackend, BlobId, ContentDigest};
use futures_util::StreamExt;
use xxhash_rust::xxh3::Xxh3;

const SIZE: usize = 64 << 20;
const WRITE_CHUNK: usize = 1 << 20;
const READ_CHUNK: usize = 1 << 20;

/// Chunk `i` of the test content (deterministic, different in every chunk).
fn chunk(i: usize) -> Bytes {
    let mut state = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(WRITE_CHUNK);
    while out.len() < WRITE_CHUNK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    Bytes::from(out)
}

/// Peak resident memory of this process in bytes (Linux only).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_blob_streams_in_and_out_intact_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsConfig::new(dir.path())
        .with_fsync(FsyncPolicy::Always)
        .with_chunk_size(READ_CHUNK)
        .build()
        .unwrap();
    let id = BlobId::from_digest(&ContentDigest::Xxh3_128(0x64));
    let rss_before = peak_rss();

    let mut written = Xxh3::new();
    let mut writer = blobs.writer().await.unwrap();
    for i in 0..SIZE / WRITE_CHUNK {
        let c = chunk(i);
        written.update(&c);
        writer.write(c).await.unwrap();
    }
    writer.finish(&id).await.unwrap();
    assert_eq!(blobs.head(&id).await.unwrap().unwrap().size, SIZE as u64);

    let mut read = Xxh3::new();
    let mut total = 0usize;
    let mut stream = blobs.get_stream(&id).await.unwrap();
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        assert!(
            !c.is_empty() && c.len() <= READ_CHUNK,
            "chunk of {} bytes",
            c.len()
        );
        total += c.len();
        read.update(&c);
    }
    assert_eq!(total, SIZE);
    assert_eq!(read.digest128(), written.digest128(), "content differs");

    if let (Some(before), Some(after)) = (rss_before, peak_rss()) {
        let grown = after.saturating_sub(before);
        assert!(
            grown < (SIZE as u64) / 4,
            "peak memory grew by {} MiB while moving a {} MiB blob",
            grown >> 20,
            SIZE >> 20
        );
    }
}
