//! Criterion benchmarks of the SQL pull-through cache (`cachet::sqlcache`), on the workload of
//! issue 7 part 8: a 5-year daily time series of 500 symbols.
//!
//! Setup (untimed, printed): the workload of `cachet_benches::sqlcache_workload`, an SQLite file
//! in a fresh temporary directory opened with `SqlCache::open` (defaults: WAL, no TTL) and
//! `TableSpec::time_series("prices", "symbol", "day", ColumnType::Date)` with open, high, low,
//! close and volume columns; its fetcher is in process, answers at once with the Monday-to-Friday
//! rows of the requested range (prices derived from symbol and day) and records each request.
//! 500 symbols are loaded over 2021-01-01..2026-01-01 with one `get` each (652,000 rows, 500
//! fetches). Everything runs on a tokio current-thread runtime, one `block_on` per sample
//! (`iter_custom`).
//!
//! Benchmarks, group `sqlcache`:
//! - `warm_1y_one_symbol`: `get` of one symbol over 2025-01-01..2026-01-01 (261 rows), the
//!   symbols in turn; covered, so no fetch (the issue's target: ≤ 1 ms).
//! - `warm_1mo_one_symbol`: the same over the last 31 days (23 rows).
//! - `extend_by_one_day`: `get` of the 365 days ending one day past a symbol's coverage, the
//!   symbols in turn, so every query extends a coverage by a new day: one fetch of that one day
//!   (lease, fetch, store transaction), then the year read back.
//!
//! After each benchmark, untimed, the fetcher's log is checked: no call during the warm ones
//! (and every result had the window's rows), exactly one call per extension asking for exactly
//! its symbol and day. A failed check panics. The `sqlcache` binary runs the same workload once
//! and prints fetch calls and p50/p99 latencies.
//!
//! ```text
//! cargo bench -p cachet-benches --bench sqlcache   # about a minute, most of it loading
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use cachet::sqlcache::range::format_date;
use cachet_benches::sqlcache_workload::{MONTH, Scale, Workload, YEAR};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

fn sqlcache(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scale = Scale::full();
    let mut workload = Workload::open(scale).expect("open the cache");
    let load = rt.block_on(workload.load()).expect("load");
    println!(
        "sqlcache: loaded {} symbols over {}..{}: {} rows, {} fetch calls, {:.2} s",
        scale.symbols,
        format_date(scale.start),
        format_date(scale.end),
        load.rows,
        load.fetch_calls,
        load.elapsed.as_secs_f64()
    );

    let mut group = c.benchmark_group("sqlcache");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    for (name, days) in [("warm_1y_one_symbol", YEAR), ("warm_1mo_one_symbol", MONTH)] {
        let expected = workload.warm_rows(days);
        let mark = workload.log.calls();
        let mut queries = 0usize;
        let mut wrong_rows = 0usize;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let rows = workload.warm(queries, days).await.expect("warm query");
                        queries += 1;
                        if rows.len() != expected {
                            wrong_rows += 1;
                        }
                        black_box(rows);
                    }
                    start.elapsed()
                })
            })
        });
        if let Err(e) = workload.check_no_fetch(mark) {
            panic!("sqlcache/{name}: {e}");
        }
        assert_eq!(
            wrong_rows, 0,
            "sqlcache/{name}: queries that did not return {expected} rows"
        );
        println!("sqlcache/{name}: {queries} queries of {expected} rows, 0 fetch calls");
    }

    let mark = workload.log.calls();
    let mut extensions = Vec::new();
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("extend_by_one_day", |b| {
        b.iter_custom(|iters| {
            let mut sample = Vec::with_capacity(iters as usize);
            let elapsed = rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    sample.push(workload.extend_by_one_day().await.expect("extension"));
                }
                start.elapsed()
            });
            extensions.extend(sample);
            elapsed
        })
    });
    if let Err(e) = workload.check_extensions(mark, &extensions) {
        panic!("sqlcache/extend_by_one_day: {e}");
    }
    println!(
        "sqlcache/extend_by_one_day: {} queries, {} fetch calls of one day each",
        extensions.len(),
        workload.log.calls() - mark
    );
    group.finish();
}

criterion_group!(benches, sqlcache);
criterion_main!(benches);
