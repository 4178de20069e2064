//! The SQL pull-through cache's measurements (issue 7, part 8): a 5-year daily time series of
//! 500 symbols, then fetch calls and latency of warm queries (target: a warm 1-year query of
//! one symbol in ≤ 1 ms) and of queries that extend the covered range by one day (one fetch of
//! one day each). Prints one table; exits with 1 when a fetch-call expectation fails (the
//! latencies are reported, not asserted).
//!
//! ```text
//! cargo run --release -p cachet-benches --bin sqlcache            # full run (about 5 s)
//! cargo run --release -p cachet-benches --bin sqlcache -- --quick # 5 symbols, 1 year (seconds)
//! ```
//!
//! Options: `--quick`, `--postgres` (the table in the PostgreSQL server of `DATABASE_URL`,
//! in a schema of its own, instead of an SQLite file), `--queries N` (warm queries of each length, default 2,000),
//! `--extensions N` (one-day extensions, default 500: one per symbol).
//!
//! Method: the workload of `cachet_benches::sqlcache_workload` (an SQLite file in a fresh
//! temporary directory, `SqlCache::open` defaults, an in-process fetcher answering at once with
//! Monday-to-Friday rows and recording each request), on a tokio current-thread runtime, one
//! `block_on` for each phase; each query is timed on its own with `Instant`.
//! 1. Load: one `get` per symbol over 2021-01-01..2026-01-01 (one fetch each).
//! 2. Warm: N `get`s of the last 365 days (2025-01-01..2026-01-01, 261 rows), then N of the
//!    last 31 days (23 rows), the symbols in turn; the fetcher must not be called.
//! 3. Extend: N `get`s, the symbols in turn, each of the 365 days ending one day past the
//!    symbol's coverage; each must make exactly one fetch, of exactly that day (a weekend day
//!    is fetched too, and returns no row). The latency includes the lease, the fetch, the
//!    store transaction and reading the year back.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cachet::sqlcache::BoxError;
use cachet::sqlcache::range::format_date;
use cachet_benches::sqlcache_workload::{MONTH, Scale, Workload, YEAR};

/// The warm-query target of the issue.
const TARGET: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    /// The PostgreSQL server to hold the table (`--postgres`: `DATABASE_URL`).
    postgres: Option<String>,
    queries: usize,
    extensions: usize,
}

impl Config {
    fn from_args() -> Result<Config, String> {
        let mut config = Config {
            quick: false,
            postgres: None,
            queries: 2_000,
            extensions: 500,
        };
        let (mut queries, mut extensions) = (None, None);
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> Result<usize, String> {
                let n = args.next().ok_or(format!("{name} needs a number"))?;
                n.parse().map_err(|_| format!("{name} {n}: not a number"))
            };
            match arg.as_str() {
                "--quick" => config.quick = true,
                "--postgres" => {
                    config.postgres = Some(
                        std::env::var("DATABASE_URL")
                            .map_err(|_| "--postgres needs DATABASE_URL".to_owned())?,
                    );
                }
                "--queries" => queries = Some(number("--queries")?),
                "--extensions" => extensions = Some(number("--extensions")?),
                "-h" | "--help" => {
                    println!(
                        "usage: sqlcache [--quick] [--postgres] [--queries N] [--extensions N]"
                    );
                    std::process::exit(0);
                }
                "--bench" => {}
                other => return Err(format!("unknown argument {other:?}; try --help")),
            }
        }
        if config.quick {
            config.queries = 200;
            config.extensions = 20;
        }
        config.queries = queries.unwrap_or(config.queries);
        config.extensions = extensions.unwrap_or(config.extensions);
        Ok(config)
    }
}

/// Latencies of one kind of query, and what they fetched.
struct Row {
    what: String,
    latencies: Vec<Duration>,
    fetch_calls: usize,
    days_per_fetch: String,
    rows_per_query: String,
}

impl Row {
    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let i = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
        sorted.get(i).copied().unwrap_or_default()
    }

    fn mean(&self) -> Duration {
        let n = u32::try_from(self.latencies.len().max(1)).unwrap_or(u32::MAX);
        self.latencies.iter().sum::<Duration>() / n
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the workload; `Err` for an error of the cache, failed expectations in `failures`.
fn run(config: Config, failures: &mut Vec<String>) -> Result<Vec<Row>, BoxError> {
    let scale = if config.quick {
        Scale::small()
    } else {
        Scale::full()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut workload = match &config.postgres {
        Some(url) => rt.block_on(Workload::open_postgres(scale, url))?,
        None => Workload::open(scale)?,
    };
    println!(
        "cachet sqlcache: {} symbols, daily rows Monday to Friday from {} to {} (exclusive), \
         {} warm queries of each length, {} one-day extensions",
        scale.symbols,
        format_date(scale.start),
        format_date(scale.end),
        config.queries,
        config.extensions
    );
    let mut rows = Vec::new();

    // 1. Load (the workload's `load` checks rows and calls).
    let load = rt.block_on(workload.load())?;
    rows.push(Row {
        what: format!(
            "load {} days, one get per symbol ({:.2} s in all, {} rows)",
            scale.end - scale.start,
            load.elapsed.as_secs_f64(),
            load.rows
        ),
        latencies: load.latencies,
        fetch_calls: load.fetch_calls,
        days_per_fetch: (scale.end - scale.start).to_string(),
        rows_per_query: (load.rows / scale.symbols.max(1)).to_string(),
    });

    // 2. Warm queries: no fetch, every trading day of the window.
    for (label, days) in [("1 year", YEAR), ("1 month", MONTH)] {
        let expected = workload.warm_rows(days);
        let mark = workload.log.calls();
        let mut latencies = Vec::with_capacity(config.queries);
        let mut wrong_rows = 0;
        rt.block_on(async {
            for i in 0..config.queries {
                let start = Instant::now();
                let got = workload.warm(i, days).await?;
                latencies.push(start.elapsed());
                if got.len() != expected {
                    wrong_rows += 1;
                }
            }
            Ok::<_, BoxError>(())
        })?;
        let fetch_calls = workload.log.calls() - mark;
        if let Err(e) = workload.check_no_fetch(mark) {
            failures.push(format!("warm {label}: {e}"));
        }
        if wrong_rows > 0 {
            failures.push(format!(
                "warm {label}: {wrong_rows} queries did not return {expected} rows"
            ));
        }
        let (start, end) = workload.warm_window(days);
        rows.push(Row {
            what: format!(
                "warm {label}, one symbol ({}..{})",
                format_date(start),
                format_date(end)
            ),
            latencies,
            fetch_calls,
            days_per_fetch: "–".into(),
            rows_per_query: expected.to_string(),
        });
    }

    // 3. Extensions by one day: one fetch of that day each.
    let mark = workload.log.calls();
    let mut extensions = Vec::with_capacity(config.extensions);
    let mut latencies = Vec::with_capacity(config.extensions);
    rt.block_on(async {
        for _ in 0..config.extensions {
            let start = Instant::now();
            let extension = workload.extend_by_one_day().await?;
            latencies.push(start.elapsed());
            extensions.push(extension);
        }
        Ok::<_, BoxError>(())
    })?;
    let fetched = workload.log.since(mark);
    if let Err(e) = workload.check_extensions(mark, &extensions) {
        failures.push(format!("extend by one day: {e}"));
    }
    let days: Vec<i64> = fetched.iter().map(|f| f.days()).collect();
    let (min_days, max_days) = (
        days.iter().min().copied().unwrap_or(0),
        days.iter().max().copied().unwrap_or(0),
    );
    let mean_rows =
        extensions.iter().map(|e| e.rows).sum::<usize>() as f64 / extensions.len().max(1) as f64;
    rows.push(Row {
        what: "extend by one day (the year ending one day past coverage)".into(),
        latencies,
        fetch_calls: fetched.len(),
        days_per_fetch: if min_days == max_days {
            min_days.to_string()
        } else {
            format!("{min_days}–{max_days}")
        },
        rows_per_query: format!("{mean_rows:.1}"),
    });

    // The cache's own counter agrees with the fetcher's log.
    let stats = rt.block_on(workload.cache.stats())?;
    if stats.fetch_calls != workload.log.calls() as u64 {
        failures.push(format!(
            "SqlCacheStats::fetch_calls is {}, the fetcher was called {} times",
            stats.fetch_calls,
            workload.log.calls()
        ));
    }
    println!(
        "table: {} rows, {} coverage records; {} fetch calls, {} rows fetched, {} served",
        stats.rows,
        stats.coverage_intervals,
        stats.fetch_calls,
        stats.rows_fetched,
        stats.rows_served
    );
    Ok(rows)
}

fn main() -> ExitCode {
    let config = match Config::from_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sqlcache: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failures = Vec::new();
    let rows = match run(config, &mut failures) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("sqlcache: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!();
    println!(
        "| query | queries | fetch calls | days per fetch | rows per query | p50 | p99 | mean |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.3} ms | {:.3} ms | {:.3} ms |",
            r.what,
            r.latencies.len(),
            r.fetch_calls,
            r.days_per_fetch,
            r.rows_per_query,
            ms(r.quantile(0.5)),
            ms(r.quantile(0.99)),
            ms(r.mean())
        );
    }
    if let Some(year) = rows.iter().find(|r| r.what.starts_with("warm 1 year")) {
        let p50 = year.quantile(0.5);
        println!();
        println!(
            "warm 1-year query: p50 {:.3} ms, {} the {:.0} ms target",
            ms(p50),
            if p50 <= TARGET { "within" } else { "above" },
            ms(TARGET)
        );
    }
    if failures.is_empty() {
        println!("fetch-call expectations: all met");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            println!("FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}
