//! `cachet list` on a large cache starts printing at once and holds bounded memory.
//!
//! The cache has `CACHET_CLI_STREAM_ENTRIES` entries (default 50,000; the README's figure
//! is from 1,000,000 with `--release`):
//!
//! ```text
//! CACHET_CLI_STREAM_ENTRIES=1000000 cargo test --release -p cachet-cli --test streaming -- --nocapture
//! ```

mod support;

use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cachet::{Cache, InsertOptions};

fn entries() -> usize {
    std::env::var("CACHET_CLI_STREAM_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

/// A real cachet index of `n` small inline entries, written in batches of 10,000 (one
/// transaction each).
async fn large_cache(dir: &std::path::Path, n: usize) {
    let cache = Cache::open(dir).await.unwrap();
    let options = InsertOptions::new().with_tag("bulk");
    for start in (0..n).step_by(10_000) {
        let batch = (start..(start + 10_000).min(n)).map(|i| {
            (
                format!("entry-{i:08}"),
                format!("value number {i}").into_bytes(),
            )
        });
        cache.insert_bytes_many(batch, &options).await.unwrap();
    }
    cache.flush().await.unwrap();
}

/// A field of a running process's /proc status (Linux), in KiB: `VmHWM` (peak resident),
/// `RssAnon` (resident heap and stacks), `RssFile` (resident file pages: SQLite's memory map).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Run {
    first_line: Duration,
    total: Duration,
    lines: usize,
    /// Peak resident memory (VmHWM), file pages included.
    peak_rss_kib: u64,
    /// Largest anonymous resident memory seen (heap, stacks): what the process allocates.
    peak_anon_kib: u64,
    /// Largest resident file memory seen (the index read through SQLite's memory map).
    peak_file_kib: u64,
}

fn list_everything(dir: &std::path::Path, format: &str) -> Run {
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cachet"))
        .arg("--cache")
        .arg(dir)
        .args(["--format", format, "list", "--limit", "0"])
        .env_remove("CACHET_CACHE")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut lines = 0;
    let mut first_line = None;
    let (mut peak, mut anon, mut file) = (0, 0, 0);
    while reader.read_line(&mut line).unwrap() > 0 {
        first_line.get_or_insert_with(|| started.elapsed());
        lines += 1;
        if lines % 1000 == 0 {
            peak = peak.max(status_kib(pid, "VmHWM").unwrap_or(0));
            anon = anon.max(status_kib(pid, "RssAnon").unwrap_or(0));
            file = file.max(status_kib(pid, "RssFile").unwrap_or(0));
        }
        line.clear();
    }
    assert!(child.wait().unwrap().success());
    Run {
        first_line: first_line.expect("some output"),
        total: started.elapsed(),
        lines,
        peak_rss_kib: peak,
        peak_anon_kib: anon,
        peak_file_kib: file,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_streams_a_large_cache_with_bounded_memory() {
    let n = entries();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    large_cache(dir.path(), n).await;
    eprintln!(
        "wrote {n} entries in {:.1?}; index file {:.1} MiB",
        started.elapsed(),
        std::fs::metadata(dir.path().join("index.sqlite"))
            .unwrap()
            .len() as f64
            / 1048576.0
    );

    for format in ["table", "json"] {
        let run = list_everything(dir.path(), format);
        eprintln!(
            "list --limit 0 --format {format}: {n} entries, first line after {:.0?}, all after \
             {:.2?}; peak RSS {:.1} MiB, of which heap (anonymous) at most {:.1} MiB and \
             memory-mapped index pages at most {:.1} MiB",
            run.first_line,
            run.total,
            run.peak_rss_kib as f64 / 1024.0,
            run.peak_anon_kib as f64 / 1024.0,
            run.peak_file_kib as f64 / 1024.0,
        );
        let header = usize::from(format == "table");
        assert_eq!(run.lines, n + header, "{format}: every entry, once");
        // Printing starts after the first page, not after the whole index was read (a
        // listing that collected first would print its first line at the very end; the
        // margin is wide because process start-up is slow on a loaded machine).
        assert!(
            run.first_line * 3 < run.total,
            "{format}: first line after {:?} of {:?}",
            run.first_line,
            run.total
        );
        // One page of rows on the heap, whatever the cache's size. Resident file pages are
        // SQLite's memory map of the index (at most its mmap_size, 256 MiB): page cache the
        // kernel reclaims, not memory the process allocates.
        if run.peak_anon_kib > 0 {
            assert!(
                run.peak_anon_kib < 48 * 1024,
                "{format}: heap {} KiB",
                run.peak_anon_kib
            );
        }
    }
}
