//! Measures `put` and `get_stream` throughput of the filesystem blob store for 1 MiB and
//! 256 MiB blobs (and the per-operation latency of 4 KiB ones), with `FsyncPolicy::Always` and `FsyncPolicy::Never`.
//!
//! ```text
//! cargo run --release -p cachet-blob-fs --example throughput [-- --dir PATH] [--cold]
//! ```
//! `--dir` picks the directory to measure (default: a temp dir under the system temp dir);
//! `--cold` drops the page cache before each read pass (Linux, needs root), otherwise reads
//! come from a warm page cache.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cachet_blob_fs::{FsBlobs, FsConfig, FsyncPolicy};
use cachet_core::{BlobBackend, BlobId, ContentDigest};
use futures_util::StreamExt;

const MIB: usize = 1 << 20;

struct Args {
    dir: Option<PathBuf>,
    cold: bool,
}

fn args() -> Args {
    let mut args = Args {
        dir: None,
        cold: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dir" => args.dir = it.next().map(PathBuf::from),
            "--cold" => args.cold = true,
            other => {
                eprintln!("unknown argument {other}; accepted: --dir PATH, --cold");
                std::process::exit(2);
            }
        }
    }
    args
}

fn content(len: usize) -> Bytes {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Writes dirty pages back (`sync`), then drops the clean page cache.
fn drop_page_cache() -> bool {
    let synced = std::process::Command::new("sync")
        .status()
        .is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn report(what: &str, bytes: usize, ops: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{what:<44} {:>9.0} MiB/s  {:>10.1} µs/op  ({ops} ops, {:.2} s)",
        bytes as f64 / MIB as f64 / secs,
        secs * 1e6 / ops as f64,
        secs
    );
}

async fn run(blobs: &FsBlobs, policy: FsyncPolicy, size: usize, ops: usize, cold: bool) {
    let data = content(size);
    let ids: Vec<BlobId> = (0..ops)
        .map(|i| BlobId::from_digest(&ContentDigest::Xxh3_128(((size as u128) << 64) | i as u128)))
        .collect();
    let label = if size >= MIB {
        format!("{} MiB, fsync={policy}", size / MIB)
    } else {
        format!("{} KiB, fsync={policy}", size / 1024)
    };

    let start = Instant::now();
    for id in &ids {
        blobs.put(id, data.clone()).await.expect("put");
    }
    report(
        &format!("put        {label}"),
        size * ops,
        ops,
        start.elapsed(),
    );

    let cache = if cold {
        if drop_page_cache() {
            "cold"
        } else {
            "warm (drop failed)"
        }
    } else {
        "warm"
    };
    let start = Instant::now();
    let mut total = 0usize;
    for id in &ids {
        let mut stream = blobs.get_stream(id).await.expect("get_stream");
        while let Some(chunk) = stream.next().await {
            total += chunk.expect("read").len();
        }
    }
    assert_eq!(total, size * ops);
    report(
        &format!("get_stream {label} ({cache})"),
        size * ops,
        ops,
        start.elapsed(),
    );

    for id in &ids {
        blobs.delete(id).await.expect("delete");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = args();
    let temp;
    let dir = match args.dir {
        Some(dir) => dir,
        None => {
            temp = tempfile::tempdir().expect("temp dir");
            temp.path().to_owned()
        }
    };
    println!("blob store under {}", dir.display());
    for policy in [FsyncPolicy::Always, FsyncPolicy::Never] {
        let blobs = FsConfig::new(dir.join("blobs"))
            .with_fsync(policy)
            .build()
            .expect("open the blob store");
        run(&blobs, policy, 4 * 1024, 2000, args.cold).await;
        run(&blobs, policy, MIB, 200, args.cold).await;
        run(&blobs, policy, 256 * MIB, 3, args.cold).await;
    }
}
