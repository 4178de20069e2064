//! A 64 MiB streamed write with bounded memory (alone in its test binary, so the process's
//! peak memory is this test's).

mod common;

use bytes::Bytes;
use cachet_core::{BlobBackend, BlobId, ContentDigest};
use futures_util::TryStreamExt;

const SIZE: usize = 64 << 20;
const CHUNK: usize = 1 << 20;

fn byte_at(i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ ((i >> 20) as u8)
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_64_mib_write_completes_with_bounded_memory_and_reads_back_byte_equal() {
    let Some(blobs) = common::fresh("large") else {
        return;
    };
    let id = BlobId::from_digest(&ContentDigest::Xxh3_128(0x64));
    let before = peak_rss();
    let mut writer = blobs.writer().await.unwrap();
    for start in (0..SIZE).step_by(CHUNK) {
        let chunk: Vec<u8> = (start..start + CHUNK).map(byte_at).collect();
        writer.write(Bytes::from(chunk)).await.unwrap();
    }
    writer.finish(&id).await.unwrap();
    let after_write = peak_rss();

    assert_eq!(blobs.head(&id).await.unwrap().unwrap().size, SIZE as u64);
    let mut stream = blobs.get_stream(&id).await.unwrap();
    let mut offset = 0usize;
    while let Some(chunk) = stream.try_next().await.unwrap() {
        for (k, b) in chunk.iter().enumerate() {
            assert_eq!(*b, byte_at(offset + k), "byte {} differs", offset + k);
        }
        offset += chunk.len();
    }
    assert_eq!(offset, SIZE);
    let after_read = peak_rss();
    eprintln!(
        "peak rss: before {before:?}, after write {after_write:?}, after read {after_read:?}"
    );

    // Default: 8 MiB parts, 2 in flight, so the writer holds ~24 MiB; allow for the HTTP
    // stack, far below the 64 MiB blob.
    if let (Some(before), Some(after_write), Some(after_read)) = (before, after_write, after_read) {
        let grew = after_write.saturating_sub(before);
        assert!(
            grew < 48 << 20,
            "writing grew peak memory by {} MiB",
            grew >> 20
        );
        let grew = after_read.saturating_sub(before);
        assert!(
            grew < 48 << 20,
            "reading grew peak memory by {} MiB",
            grew >> 20
        );
    }
    assert_eq!(
        blobs
            .cleanup_temporary(cachet_core::Timestamp(i64::MAX / 2))
            .await
            .unwrap(),
        0
    );
}
