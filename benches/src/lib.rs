//! Shared helpers for cachet's benchmarks: the criterion benches (`benches/engine.rs`,
//! `benches/sqlcache.rs`), the peer comparison binary (`src/bin/compare.rs`) and the SQL-cache
//! report (`src/bin/sqlcache.rs`, whose workload is [`sqlcache_workload`]).
//!
//! Everything here is deterministic (seeded generators) so that runs are comparable, and cheap
//! enough not to dominate what is measured: the data generators run at several GiB/s.

pub mod sqlcache_workload;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// One MiB.
pub const MIB: usize = 1 << 20;

/// Chunk size used to feed streaming writers (the engine's default frame size).
pub const STREAM_CHUNK: usize = MIB;

/// A small, fast, seeded pseudo-random generator (SplitMix64). Not cryptographic: it only
/// has to make data incompressible and access orders unpredictable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`; the slight modulo bias does not matter here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// `len` random (incompressible) bytes from `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Overwrites the first 8 bytes of `buf` with `counter`, so that content-addressed stores see
/// distinct content on every write (dedup must not short-circuit a measured put).
pub fn stamp(buf: &mut [u8], counter: u64) {
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&counter.to_le_bytes()[..n]);
}

/// Fills `buf` (a multiple of 8 bytes) with consecutive little-endian `f64`s `start, start + 1,
/// ...`, like `numpy.arange(start, start + n, dtype=float64).tobytes()`. Returns the next value.
pub fn fill_arange(buf: &mut [u8], start: u64) -> u64 {
    let mut next = start;
    for c in buf.chunks_exact_mut(8) {
        c.copy_from_slice(&(next as f64).to_le_bytes());
        next += 1;
    }
    next
}

/// A source of a large value fed chunk by chunk, so that the caller's memory stays bounded:
/// random chunks are taken from a pre-generated pool (re-stamped with a chunk counter so no two
/// chunks of a run are equal), arange chunks are generated on the fly.
#[derive(Debug)]
pub struct ChunkSource {
    kind: Kind,
    buf: Vec<u8>,
    pool: Vec<u8>,
    produced: usize,
    total: usize,
    counter: u64,
    arange_next: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Random,
    Arange,
}

/// Bytes of pre-generated random data that random chunks are taken from.
const RANDOM_POOL: usize = 8 * MIB;

impl ChunkSource {
    /// Random, incompressible data; `tag` makes the content distinct between values.
    pub fn random(total: usize, tag: u64) -> Self {
        ChunkSource {
            kind: Kind::Random,
            buf: vec![0u8; STREAM_CHUNK],
            pool: random_bytes(RANDOM_POOL, 0xC0FFEE),
            produced: 0,
            total,
            counter: tag << 32,
            arange_next: 0,
        }
    }

    /// Consecutive `f64`s starting at `start` (pass a distinct start for distinct content).
    pub fn arange(total: usize, start: u64) -> Self {
        ChunkSource {
            kind: Kind::Arange,
            buf: vec![0u8; STREAM_CHUNK],
            pool: Vec::new(),
            produced: 0,
            total,
            counter: 0,
            arange_next: start,
        }
    }

    /// Starts the same kind of data again with a new tag (random) or start value (arange),
    /// reusing the buffers.
    pub fn restart(&mut self, tag_or_start: u64) {
        self.produced = 0;
        self.counter = tag_or_start << 32;
        self.arange_next = tag_or_start;
    }

    /// The total size of the value.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The next chunk (at most [`STREAM_CHUNK`] bytes), or `None` at the end.
    pub fn next_chunk(&mut self) -> Option<&[u8]> {
        if self.produced >= self.total {
            return None;
        }
        let len = STREAM_CHUNK.min(self.total - self.produced);
        match self.kind {
            Kind::Random => {
                let offset = self.produced % self.pool.len();
                let end = (offset + len).min(self.pool.len());
                let chunk = &mut self.pool[offset..end];
                stamp(chunk, self.counter);
                self.counter += 1;
                self.produced += chunk.len();
                Some(&self.pool[offset..end])
            }
            Kind::Arange => {
                let chunk = &mut self.buf[..len];
                self.arange_next = fill_arange(chunk, self.arange_next);
                self.produced += len;
                Some(&self.buf[..len])
            }
        }
    }
}

/// Resident memory of this process, from `/proc/self/status` (Linux only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rss {
    /// `VmRSS`: resident now, in bytes.
    pub current: u64,
    /// `VmHWM`: the high-water mark since start or the last [`reset_peak_rss`], in bytes.
    pub peak: u64,
}

/// Reads `VmRSS` and `VmHWM`; `None` where `/proc` is unavailable.
pub fn read_rss() -> Option<Rss> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib * 1024)
        })
    };
    Some(Rss {
        current: field("VmRSS")?,
        peak: field("VmHWM")?,
    })
}

/// Resets the peak (`VmHWM`) to the current resident size (`echo 5 > /proc/self/clear_refs`).
/// Returns whether the kernel accepted it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Returns freed heap memory to the kernel (glibc `malloc_trim`), so that a baseline taken next
/// does not include free-but-resident memory that a measured operation could reuse unseen.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory of the allocator; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Measures how far resident memory rises above its level at the start while `f` runs.
/// Returns `f`'s result and the rise in bytes (`None` without `/proc`).
///
/// The heap is trimmed first ([`trim_heap`]): memory freed by earlier work and still resident
/// would otherwise be reused without raising the peak, hiding the operation's own footprint.
pub fn peak_rss_during<R>(f: impl FnOnce() -> R) -> (R, Option<u64>) {
    trim_heap();
    let ok = reset_peak_rss();
    let before = read_rss();
    let out = f();
    let after = read_rss();
    let rise = match (ok, before, after) {
        (true, Some(b), Some(a)) => Some(a.peak.saturating_sub(b.current)),
        _ => None,
    };
    (out, rise)
}

/// Sum of the sizes of all regular files under `dir` (apparent sizes, what `du -b` counts),
/// and of their allocated blocks (what `du` counts), in bytes.
pub fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut len, mut allocated) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                len += meta.len();
                allocated += meta.blocks() * 512;
            }
        }
    }
    (len, allocated)
}

/// Writes all dirty pages back (`sync(2)`), so that one store's pending writeback does not
/// slow down the next measurement.
pub fn sync_disks() {
    // SAFETY: `sync` takes no arguments, has no preconditions and cannot fail.
    unsafe { libc::sync() };
}

/// How [`publish_files`] makes each file durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloorMode {
    /// Temp file, write, rename: no fsync at all (what cacache does).
    NoSync,
    /// + `fdatasync` of the file before the rename.
    DataSync,
    /// + `fsync` of the target directory after the rename.
    DataAndDirSync,
    /// Like `DataAndDirSync` into `xx/yy/` shard directories created fresh for each file,
    /// each new directory's parent fsynced (cachet's first blobs with `FsyncPolicy::Always`).
    ShardedFreshDirs,
}

fn sync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

/// The raw filesystem floor under a blob store: publishes `count` files of `size` bytes under
/// `root` (a temp file per file, written from `data` re-stamped per chunk, then renamed), with
/// the durability steps of `mode`. Returns GiB/s.
pub fn publish_files(
    root: &Path,
    mode: FloorMode,
    count: usize,
    size: usize,
    data: &mut [u8],
) -> f64 {
    let tmp = root.join("tmp");
    let objects = root.join("objects");
    fs::create_dir_all(&tmp).expect("tmp dir");
    fs::create_dir_all(&objects).expect("objects dir");
    sync_dir(root);
    let start = Instant::now();
    for i in 0..count {
        let temp = tmp.join(format!("upload-{i}"));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .expect("create");
        let mut written = 0;
        while written < size {
            let n = data.len().min(size - written);
            stamp(&mut data[..n], (i * 1_000_000 + written) as u64);
            f.write_all(&data[..n]).expect("write");
            written += n;
        }
        if mode != FloorMode::NoSync {
            f.sync_data().expect("fdatasync");
        }
        drop(f);
        let target_dir = if mode == FloorMode::ShardedFreshDirs {
            // Like cachet's first blobs: both shard levels are new.
            let l1 = objects.join(format!("{:02x}", i % 256));
            let l2 = l1.join(format!("{:02x}", i / 256));
            if fs::create_dir(&l1).is_ok() {
                sync_dir(&objects);
            }
            fs::create_dir(&l2).expect("shard dir");
            sync_dir(&l1);
            l2
        } else {
            objects.clone()
        };
        fs::rename(&temp, target_dir.join(format!("blob-{i}"))).expect("rename");
        if matches!(
            mode,
            FloorMode::DataAndDirSync | FloorMode::ShardedFreshDirs
        ) {
            sync_dir(&target_dir);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    (count * size) as f64 / secs / (1u64 << 30) as f64
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Bytes per second expressed in GiB/s.
pub fn gib_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / (1u64 << 30) as f64
}

/// Operations per second.
pub fn ops_per_sec(ops: u64, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arange_matches_numpy_layout() {
        let mut buf = vec![0u8; 24];
        assert_eq!(fill_arange(&mut buf, 5), 8);
        assert_eq!(&buf[8..16], &6.0f64.to_le_bytes());
    }

    #[test]
    fn random_chunks_are_distinct_and_sum_to_total() {
        let mut src = ChunkSource::random(20 * MIB + 3, 1);
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        while let Some(c) = src.next_chunk() {
            total += c.len();
            assert!(seen.insert(c.to_vec()), "a chunk repeated");
        }
        assert_eq!(total, 20 * MIB + 3);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
