//! The floor the filesystem puts under cachet's blob writes on this machine: publishing a
//! 1 MiB (and a 256 MiB) file the way a content-addressed store does, with each durability
//! step added in turn, and with cachet's two-level shard directories created on the way.
//!
//! ```text
//! cargo run --release -p cachet-benches --example fs_floor
//! ```
//!
//! Variants, per file: (a) temp file + write + rename, no fsync (what cacache does); (b) +
//! `fdatasync` of the file; (c) + `fsync` of the target directory; (d) cachet's layout
//! `xx/yy/<id>` with fresh shard directories, each created directory's parent fsynced, as
//! `FsyncPolicy::Always` does for the first blobs of a cache. Medians of 3 interleaved rounds.

use cachet_benches::{FloorMode as Mode, MIB, median, publish_files as publish, random_bytes};

fn main() {
    let modes = [
        ("(a) write + rename, no fsync", Mode::NoSync),
        ("(b) + fdatasync(file)", Mode::DataSync),
        ("(c) + fsync(dir)", Mode::DataAndDirSync),
        (
            "(d) + 2 fresh shard dirs, parents fsynced",
            Mode::ShardedFreshDirs,
        ),
    ];
    let mut data = random_bytes(MIB, 3);
    for (label, count, size) in [("200 x 1 MiB", 200, MIB), ("2 x 256 MiB", 2, 256 * MIB)] {
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for _round in 0..3 {
            for (m, (_, mode)) in modes.iter().enumerate() {
                let dir = tempfile::tempdir().expect("tempdir");
                results[m].push(publish(dir.path(), *mode, count, size, &mut data));
                drop(dir);
                cachet_benches::sync_disks();
            }
        }
        println!("{label}: GiB/s, median of 3 [min-max]");
        for ((name, _), r) in modes.iter().zip(&results) {
            let min = r.iter().copied().fold(f64::INFINITY, f64::min);
            let max = r.iter().copied().fold(0.0, f64::max);
            let med = median(r);
            let per_file_ms = size as f64 / (med * (1u64 << 30) as f64) * 1e3;
            println!("  {name:<44} {med:>6.2} [{min:.2}-{max:.2}]  = {per_file_ms:.2} ms/file");
        }
    }
}
