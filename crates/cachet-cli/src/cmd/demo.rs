//! `cachet demo`: the main job on the embedded defaults, measured.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use cachet::{Cache, params};
use xxhash_rust::xxh3::Xxh3Default;

use crate::human::{format_duration_ms as human_duration_ms, format_size as human_bytes};
use crate::{Context, Outcome};

/// Options of `cachet demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the demo cache lives (created; emptied first if it is a cachet cache).
    #[arg(long, default_value = "./cachet-demo")]
    pub dir: PathBuf,
    /// Size of the large value to round-trip, in MiB.
    #[arg(long, default_value_t = 256)]
    pub size_mib: usize,
    /// Upper bound of the memoized prime computation.
    #[arg(long, default_value_t = 20_000_000)]
    pub primes_below: u64,
    /// Keep the demo cache afterwards (for `cachet --cache DIR list`).
    #[arg(long)]
    pub keep: bool,
}

/// The memoized result: small, so a hit is served from the index row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrimeSummary {
    /// How many primes are below the bound.
    pub count: u64,
    /// The largest of them.
    pub largest: u64,
    /// Their sum.
    pub sum: u128,
}

/// Sieve of Eratosthenes: deliberately a few hundred milliseconds of real work.
pub fn primes_below(n: u64) -> PrimeSummary {
    let n = usize::try_from(n).unwrap_or(usize::MAX).max(2);
    let mut composite = vec![false; n];
    let mut summary = PrimeSummary {
        count: 0,
        largest: 0,
        sum: 0,
    };
    for i in 2..n {
        if composite[i] {
            continue;
        }
        summary.count += 1;
        summary.largest = i as u64;
        summary.sum += i as u128;
        let mut j = i.saturating_mul(i);
        while j < n {
            composite[j] = true;
            j += i;
        }
    }
    summary
}

/// Runs `cachet demo`.
///
/// # Errors
/// When the demo directory cannot be prepared or the cache fails.
pub async fn run(args: DemoArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let out = ctx.out();
    prepare_dir(&args.dir)?;
    let cache = Cache::open(&args.dir)
        .await
        .with_context(|| format!("opening {}", args.dir.display()))?;
    writeln!(
        out,
        "cachet demo: SQLite index + filesystem blobs in {}\n",
        args.dir.display()
    )?;

    // 1. Memoization: computed once, then served from the cache.
    let key = params! { "task" => "primes", "below" => args.primes_below };
    let bound = args.primes_below;
    let started = Instant::now();
    let first: PrimeSummary = cache
        .get_with(&key, || async move { primes_below(bound) })
        .await?;
    let miss = started.elapsed();
    let hits = 10_000u32;
    let started = Instant::now();
    for _ in 0..hits {
        let again: PrimeSummary = cache
            .get_with(&key, || async { unreachable_computation() })
            .await?;
        anyhow::ensure!(again == first, "a memoized hit returned a different value");
    }
    let hit = started.elapsed() / hits;
    writeln!(
        out,
        "memoize  primes below {}: {} primes, largest {}",
        bound, first.count, first.largest
    )?;
    writeln!(
        out,
        "         miss (compute + store) {:>10}",
        fmt_duration(miss)
    )?;
    writeln!(
        out,
        "         hit  (average of {hits}) {:>10}   {:.0}x faster",
        fmt_duration(hit),
        miss.as_secs_f64() / hit.as_secs_f64().max(1e-9)
    )?;

    // 2. A large value, streamed both ways with bounded memory.
    let size = args.size_mib;
    for kind in [Payload::Random, Payload::Arange] {
        let key = params! { "demo" => kind.name(), "mib" => size };
        reset_peak_rss();
        let baseline = rss_kib("VmRSS");
        let started = Instant::now();
        let mut writer = cache.writer(&key).await?;
        let mut chunk = vec![0u8; 1 << 20];
        let mut written = Xxh3Default::new();
        for i in 0..size {
            kind.fill(&mut chunk, i as u64);
            written.update(&chunk);
            writer.write(&chunk).await?;
        }
        let meta = writer.finish().await?;
        let put = started.elapsed();
        let started = Instant::now();
        let mut reader = cache
            .reader(&key)
            .await?
            .context("the value just written is missing")?;
        let mut read = Xxh3Default::new();
        while let Some(chunk) = reader.next_chunk().await? {
            read.update(&chunk);
        }
        let get = started.elapsed();
        anyhow::ensure!(
            read.digest128() == written.digest128(),
            "the value read back differs"
        );
        let peak = match (baseline, rss_kib("VmHWM")) {
            (Some(base), Some(peak)) => human_bytes(peak.saturating_sub(base) * 1024),
            _ => "n/a".to_owned(),
        };
        let gib = size as f64 / 1024.0;
        writeln!(
            out,
            "\n{:<8} {} MiB: put {:>6.2} GiB/s, get {:>6.2} GiB/s, stored {} ({:.1}% of raw), peak memory +{}",
            kind.name(),
            size,
            gib / put.as_secs_f64(),
            gib / get.as_secs_f64(),
            human_bytes(meta.stored_size),
            100.0 * meta.stored_size as f64 / meta.raw_size.max(1) as f64,
            peak
        )?;
    }

    // 3. What the cache holds now.
    cache.flush().await?;
    let stats = cache.stats();
    writeln!(
        out,
        "\nsession  hits {}, misses {}, inserts {}",
        stats.hits, stats.misses, stats.inserts
    )?;
    writeln!(out)?;
    let totals = super::stats::totals(&cache).await?;
    out.write_all(totals.to_table().as_bytes())?;
    if args.keep {
        writeln!(out, "\nkept: cachet --cache {} list", args.dir.display())?;
    } else {
        drop(cache);
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("removing {}", args.dir.display()))?;
    }
    Ok(Outcome::Success)
}

fn unreachable_computation() -> PrimeSummary {
    // A hit never runs the computation; if it did, the equality check above reports it.
    PrimeSummary {
        count: 0,
        largest: 0,
        sum: 0,
    }
}

fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.2} µs")
    } else {
        human_duration_ms(d.as_millis() as i64)
    }
}

/// Refuses to empty a directory that is not a cachet cache.
fn prepare_dir(dir: &std::path::Path) -> Result<()> {
    if dir.exists() {
        let is_cache = dir.join("index.sqlite").exists();
        let is_empty = std::fs::read_dir(dir)?.next().is_none();
        anyhow::ensure!(
            is_cache || is_empty,
            "{} exists and is not a cachet cache; choose another --dir",
            dir.display()
        );
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Payload {
    /// Incompressible bytes.
    Random,
    /// Consecutive f64 values, like `numpy.arange`: very compressible after byte-shuffling.
    Arange,
}

impl Payload {
    fn name(self) -> &'static str {
        match self {
            Payload::Random => "random",
            Payload::Arange => "arange",
        }
    }

    fn fill(self, chunk: &mut [u8], index: u64) {
        match self {
            Payload::Random => {
                if index == 0 {
                    for (i, word) in chunk.chunks_exact_mut(8).enumerate() {
                        word.copy_from_slice(
                            &xxhash_rust::xxh3::xxh3_64(&(i as u64).to_le_bytes()).to_le_bytes(),
                        );
                    }
                }
                // Make every MiB differ without regenerating it: cheap and still incompressible.
                chunk[..8].copy_from_slice(&index.to_le_bytes());
            }
            Payload::Arange => {
                let per_chunk = (chunk.len() / 8) as u64;
                for (i, word) in chunk.chunks_exact_mut(8).enumerate() {
                    word.copy_from_slice(&((index * per_chunk + i as u64) as f64).to_le_bytes());
                }
            }
        }
    }
}

/// Resets the kernel's peak-RSS counter (Linux), so VmHWM measures this step only.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A field of /proc/self/status in KiB (Linux), e.g. `VmRSS` or `VmHWM`.
fn rss_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prime_sieve_counts_correctly() {
        let s = primes_below(100);
        assert_eq!((s.count, s.largest, s.sum), (25, 97, 1060));
    }
}
