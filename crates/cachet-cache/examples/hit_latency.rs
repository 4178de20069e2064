//! Measures the latency of cache hits on the embedded backends (SQLite index + filesystem
//! blobs): a `get` of a small value, a memoized hit, and the storage engine alone for
//! comparison.
//!
//! ```text
//! cargo run --release -p cachet-cache --example hit_latency [iterations]
//! ```

use std::time::{Duration, Instant};

use cachet_cache::Cache;
use cachet_core::{CacheKey, params};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Row {
    region: String,
    total: f64,
    count: u32,
}

fn report(what: &str, iterations: u32, elapsed: Duration) {
    let per = elapsed.as_secs_f64() * 1e6 / f64::from(iterations);
    println!("{what:<44} {per:>8.2} µs/op  ({:>9.0} ops/s)", 1e6 / per);
}

fn main() -> cachet_core::Result<()> {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().map_err(|e| cachet_core::Error::io("tempdir", e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| cachet_core::Error::io("runtime", e))?;
    runtime.block_on(async {
        let cache = Cache::open(dir.path()).await?;
        let value = vec![
            Row {
                region: "north".into(),
                total: 1234.5,
                count: 17,
            },
            Row {
                region: "south".into(),
                total: 987.25,
                count: 9,
            },
        ];
        let key = params! { "dataset" => "sales-2026", "window" => 30, "model" => "xgb" };
        let meta = cache.insert(&key, &value).await?;
        println!(
            "value: {} raw bytes ({:?}), {iterations} iterations, SQLite + fs in {}",
            meta.raw_size,
            meta.location,
            dir.path().display()
        );
        let warm = iterations / 10;

        // The storage engine alone: lookup + verify + decode, explicit key.
        let store_key = CacheKey::derive("", &key);
        for _ in 0..warm {
            let _: Option<Vec<Row>> = cache.store().get_value(&store_key).await?;
        }
        let start = Instant::now();
        for _ in 0..iterations {
            let v: Option<Vec<Row>> = cache.store().get_value(&store_key).await?;
            assert!(v.is_some());
        }
        report(
            "store.get_value (baseline, key ready)",
            iterations,
            start.elapsed(),
        );

        // cache.get with the params (key derived on every call).
        for _ in 0..warm {
            let _: Option<Vec<Row>> = cache.get(&key).await?;
        }
        let start = Instant::now();
        for _ in 0..iterations {
            let v: Option<Vec<Row>> = cache.get(&key).await?;
            assert!(v.is_some());
        }
        report(
            "cache.get (params key, small value)",
            iterations,
            start.elapsed(),
        );

        // get_with hit.
        let start = Instant::now();
        for _ in 0..iterations {
            let v: Vec<Row> = cache
                .get_with(&key, || async { unreachable!("always a hit") })
                .await?;
            assert_eq!(v.len(), 2);
        }
        report("cache.get_with (hit)", iterations, start.elapsed());

        // Memoized hit.
        let args = ("sales-2026", 30u32, "xgb");
        let _: Vec<Row> = cache
            .memoize("fit_model", &args, || async { value.clone() })
            .await?;
        for _ in 0..warm {
            let _: Vec<Row> = cache
                .memoize("fit_model", &args, || async {
                    unreachable!("always a hit")
                })
                .await?;
        }
        let start = Instant::now();
        for _ in 0..iterations {
            let v: Vec<Row> = cache
                .memoize("fit_model", &args, || async {
                    unreachable!("always a hit")
                })
                .await?;
            assert_eq!(v.len(), 2);
        }
        report("cache.memoize (hit)", iterations, start.elapsed());

        // Where the cache layer's time goes: deriving keys.
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(CacheKey::derive("", std::hint::black_box(&key)));
        }
        report(
            "  of which: derive a key from params",
            iterations,
            start.elapsed(),
        );
        let start = Instant::now();
        for _ in 0..iterations {
            let params = cachet_cache::memo_key("fit_model", std::hint::black_box(&args))?;
            std::hint::black_box(CacheKey::derive("", &params));
        }
        report(
            "  of which: memoize key (serde args + derive)",
            iterations,
            start.elapsed(),
        );

        let stats = cache.stats();
        println!(
            "stats: {} hits, {} misses, {} computations",
            stats.hits, stats.misses, stats.computations
        );
        Ok(())
    })
}
