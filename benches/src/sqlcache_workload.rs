//! The workload of the SQL pull-through cache benchmark (`benches/sqlcache.rs`, the `sqlcache`
//! binary and `tests/sqlcache_workload.rs`): daily prices of many symbols, loaded once, then
//! read warm and extended by one day at a time.
//!
//! The table is `TableSpec::time_series("prices", "symbol", "day", ColumnType::Date)` with
//! `open`, `high`, `low`, `close` (floats) and `volume` (integer), in an SQLite file in a fresh
//! temporary directory, with the defaults of `SqlCache::open` (no TTL: what was fetched stays
//! fresh). The fetcher is [`FakeMarket`], in process: it answers at once with the trading days
//! (Monday to Friday) of the requested range, with prices derived from the symbol and the day
//! ([`price`]), and records every request in a [`FetchLog`], so that callers can check which
//! ranges were fetched, not only how many times.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cachet::sqlcache::range::{format_date, parse_date};
use cachet::sqlcache::{BoxError, ColumnType, FetchRequest, Fetcher, SqlCache, TableSpec};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

use crate::Rng;

/// One row of the `prices` table: a symbol's prices and volume on one trading day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// The symbol (the filter column).
    pub symbol: String,
    /// The day, `YYYY-MM-DD` (the range column).
    pub day: String,
    /// Opening price.
    pub open: f64,
    /// Highest price of the day.
    pub high: f64,
    /// Lowest price of the day.
    pub low: f64,
    /// Closing price.
    pub close: f64,
    /// Shares traded.
    pub volume: i64,
}

/// The filter of a query: one symbol.
#[derive(Debug, Serialize)]
pub struct BySymbol<'a> {
    /// The symbol.
    pub symbol: &'a str,
}

/// The table: a daily time series keyed by symbol, with OHLC prices and volume.
pub fn spec() -> TableSpec {
    TableSpec::time_series("prices", "symbol", "day", ColumnType::Date)
        .column("open", ColumnType::Float)
        .column("high", ColumnType::Float)
        .column("low", ColumnType::Float)
        .column("close", ColumnType::Float)
        .column("volume", ColumnType::Integer)
}

/// The name of the `i`th symbol (`SYM0000`, `SYM0001`, ...).
pub fn symbol_name(i: usize) -> String {
    format!("SYM{i:04}")
}

/// Whether `day` (days since 1970-01-01, a Thursday) is a trading day: Monday to Friday.
pub fn is_trading_day(day: i64) -> bool {
    (day + 3).rem_euclid(7) < 5
}

/// The number of trading days in `[start, end)`.
pub fn trading_days(start: i64, end: i64) -> usize {
    (start..end).filter(|&d| is_trading_day(d)).count()
}

/// A day given as `YYYY-MM-DD`, in days since 1970-01-01 (panics on a malformed date: the
/// dates here are constants).
pub fn day(text: &str) -> i64 {
    parse_date(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The row of `symbol` on `day`: deterministic, different for every symbol and day.
pub fn price(symbol: &str, day: i64) -> Price {
    // FNV-1a of the symbol, then one SplitMix64 draw per field from (symbol, day).
    let seed = symbol.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut rng = Rng::new(seed ^ (day as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut unit = || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let base = 10.0 + (seed % 490) as f64 + (day.rem_euclid(365) as f64) / 10.0;
    let open = base * (0.98 + 0.04 * unit());
    let close = base * (0.98 + 0.04 * unit());
    let high = open.max(close) * (1.0 + 0.01 * unit());
    let low = open.min(close) * (1.0 - 0.01 * unit());
    let volume = 10_000 + (unit() * 1_000_000.0) as i64;
    Price {
        symbol: symbol.to_owned(),
        day: format_date(day),
        open,
        high,
        low,
        close,
        volume,
    }
}

/// One request the fetcher received: a symbol and a half-open range of days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The symbol asked for.
    pub symbol: String,
    /// The first day asked for (days since 1970-01-01).
    pub start: i64,
    /// The first day after the range.
    pub end: i64,
}

impl Fetched {
    /// The number of days asked for.
    pub fn days(&self) -> i64 {
        self.end - self.start
    }
}

impl std::fmt::Display for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}, {})",
            self.symbol,
            format_date(self.start),
            format_date(self.end)
        )
    }
}

/// Every request [`FakeMarket`] received, in order. Clones share the log.
#[derive(Debug, Clone, Default)]
pub struct FetchLog(Arc<Mutex<Vec<Fetched>>>);

impl FetchLog {
    fn lock(&self) -> MutexGuard<'_, Vec<Fetched>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number of fetcher calls so far (a mark for [`since`](Self::since)).
    pub fn calls(&self) -> usize {
        self.lock().len()
    }

    /// The requests received after `mark` calls.
    pub fn since(&self, mark: usize) -> Vec<Fetched> {
        self.lock()
            .get(mark..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }
}

/// The fetcher: a market-data API in process, answering at once with the trading days of the
/// requested range, and recording each request.
#[derive(Debug, Clone, Default)]
pub struct FakeMarket {
    log: FetchLog,
}

impl FakeMarket {
    /// A fetcher recording into `log`.
    pub fn new(log: FetchLog) -> FakeMarket {
        FakeMarket { log }
    }
}

#[async_trait]
impl Fetcher<Price> for FakeMarket {
    async fn fetch(&self, request: &FetchRequest) -> Result<Vec<Price>, BoxError> {
        let symbol = request.filter_str("symbol").ok_or("no symbol")?;
        let (start, end) = request.date_range().ok_or("no date range")?;
        let (start, end) = (parse_date(start)?, parse_date(end)?);
        self.log.lock().push(Fetched {
            symbol: symbol.to_owned(),
            start,
            end,
        });
        Ok((start..end)
            .filter(|&d| is_trading_day(d))
            .map(|d| price(symbol, d))
            .collect())
    }
}

/// How much data: how many symbols, over which days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// Number of symbols.
    pub symbols: usize,
    /// First day loaded (days since 1970-01-01).
    pub start: i64,
    /// First day after the loaded range.
    pub end: i64,
}

impl Scale {
    /// The workload: 500 symbols, five years (2021-01-01 to 2026-01-01).
    pub fn full() -> Scale {
        Scale {
            symbols: 500,
            start: day("2021-01-01"),
            end: day("2026-01-01"),
        }
    }

    /// The test's workload: 5 symbols, one year (2025-01-01 to 2026-01-01).
    pub fn small() -> Scale {
        Scale {
            symbols: 5,
            start: day("2025-01-01"),
            end: day("2026-01-01"),
        }
    }
}

/// What loading the table took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Wall time of the loading `get`s.
    pub elapsed: Duration,
    /// Each symbol's `get`, in order.
    pub latencies: Vec<Duration>,
    /// Rows the `get`s returned.
    pub rows: usize,
    /// Fetcher calls they made.
    pub fetch_calls: usize,
}

/// One query that extended a symbol's coverage by one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension {
    /// The symbol's index.
    pub symbol: usize,
    /// The day added (the only day that should have been fetched).
    pub day: i64,
    /// Rows the query returned.
    pub rows: usize,
}

/// The length of the "one year" queries, in days.
pub const YEAR: i64 = 365;
/// The length of the "one month" queries, in days.
pub const MONTH: i64 = 31;

/// The cache, its fetcher's log, the symbols and how far each symbol is covered.
#[derive(Debug)]
pub struct Workload {
    /// The cache under test.
    pub cache: SqlCache<Price>,
    /// The fetcher's requests.
    pub log: FetchLog,
    /// The symbols, by index.
    pub symbols: Vec<String>,
    /// The data loaded.
    pub scale: Scale,
    /// Per symbol, the first day not covered yet (moved by [`extend_by_one_day`](Self::extend_by_one_day)).
    covered_end: Vec<i64>,
    /// Where the next extension goes (round robin over the symbols).
    next_extension: usize,
    _dir: Option<TempDir>,
}

impl Workload {
    /// A fresh, empty cache in a new temporary directory (removed on drop).
    pub fn open(scale: Scale) -> Result<Workload, BoxError> {
        let dir = tempfile::Builder::new()
            .prefix("cachet-sqlcache-bench-")
            .tempdir()?;
        let log = FetchLog::default();
        let cache = SqlCache::open(
            dir.path().join("prices.sqlite"),
            spec(),
            FakeMarket::new(log.clone()),
        )?;
        Ok(Workload::new(cache, log, scale, Some(dir)))
    }

    /// A fresh, empty cache in the PostgreSQL server at `url`, in a schema of its own
    /// (`sqlcache_bench_<pid>`, replaced if it exists).
    pub async fn open_postgres(scale: Scale, url: &str) -> Result<Workload, BoxError> {
        use sqlx::Connection;
        use std::str::FromStr;
        let schema = format!("sqlcache_bench_{}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(url).await?;
        for statement in [
            format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"),
            format!("CREATE SCHEMA \"{schema}\""),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut admin)
                .await?;
        }
        let options = sqlx::postgres::PgConnectOptions::from_str(url)?
            .options([("search_path", schema.as_str())]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let log = FetchLog::default();
        let cache = SqlCache::open_postgres(pool, spec(), FakeMarket::new(log.clone())).await?;
        Ok(Workload::new(cache, log, scale, None))
    }

    fn new(cache: SqlCache<Price>, log: FetchLog, scale: Scale, dir: Option<TempDir>) -> Workload {
        Workload {
            cache,
            log,
            symbols: (0..scale.symbols).map(symbol_name).collect(),
            scale,
            covered_end: vec![scale.end; scale.symbols],
            next_extension: 0,
            _dir: dir,
        }
    }

    /// Loads every symbol over the whole scale, one `get` per symbol, and checks that each
    /// made one fetch and returned every trading day.
    pub async fn load(&self) -> Result<LoadReport, BoxError> {
        let mark = self.log.calls();
        let expected = trading_days(self.scale.start, self.scale.end);
        let mut rows = 0;
        let mut latencies = Vec::with_capacity(self.symbols.len());
        let start = Instant::now();
        for symbol in &self.symbols {
            let one = Instant::now();
            let got = self
                .cache
                .get(
                    &BySymbol { symbol },
                    format_date(self.scale.start)..format_date(self.scale.end),
                )
                .await?;
            latencies.push(one.elapsed());
            if got.len() != expected {
                return Err(format!(
                    "loading {symbol} returned {} rows, not {expected}",
                    got.len()
                )
                .into());
            }
            rows += got.len();
        }
        let elapsed = start.elapsed();
        let fetch_calls = self.log.calls() - mark;
        if fetch_calls != self.symbols.len() {
            return Err(format!(
                "loading {} symbols made {fetch_calls} fetch calls, not one per symbol",
                self.symbols.len()
            )
            .into());
        }
        Ok(LoadReport {
            elapsed,
            latencies,
            rows,
            fetch_calls,
        })
    }

    /// The last `days` days of the loaded range (always covered).
    pub fn warm_window(&self, days: i64) -> (i64, i64) {
        (self.scale.end - days, self.scale.end)
    }

    /// The rows a warm query of the last `days` days returns.
    pub fn warm_rows(&self, days: i64) -> usize {
        let (start, end) = self.warm_window(days);
        trading_days(start, end)
    }

    /// Symbol `i` (modulo the number of symbols) over the last `days` days of the loaded range:
    /// covered, so it must not fetch.
    pub async fn warm(&self, i: usize, days: i64) -> Result<Vec<Price>, BoxError> {
        let (start, end) = self.warm_window(days);
        let symbol = &self.symbols[i % self.symbols.len()];
        Ok(self
            .cache
            .get(&BySymbol { symbol }, format_date(start)..format_date(end))
            .await?)
    }

    /// The next symbol (round robin) over the year ending one day past its coverage: one
    /// fetch of that one day, which is then covered.
    pub async fn extend_by_one_day(&mut self) -> Result<Extension, BoxError> {
        let symbol = self.next_extension;
        self.next_extension = (symbol + 1) % self.symbols.len();
        let day = self.covered_end[symbol];
        let rows = self
            .cache
            .get(
                &BySymbol {
                    symbol: &self.symbols[symbol],
                },
                format_date(day + 1 - YEAR)..format_date(day + 1),
            )
            .await?
            .len();
        self.covered_end[symbol] = day + 1;
        Ok(Extension { symbol, day, rows })
    }

    /// Checks that the fetcher received nothing since `mark` (the warm queries' promise).
    pub fn check_no_fetch(&self, mark: usize) -> Result<(), String> {
        match self.log.since(mark).as_slice() {
            [] => Ok(()),
            fetched => Err(format!(
                "{} fetch calls where none was expected, the first for {}",
                fetched.len(),
                fetched[0]
            )),
        }
    }

    /// Checks that the fetcher received, since `mark`, exactly one request per extension,
    /// for exactly its symbol and day, and that each extension returned a year of rows.
    pub fn check_extensions(&self, mark: usize, extensions: &[Extension]) -> Result<(), String> {
        let fetched = self.log.since(mark);
        if fetched.len() != extensions.len() {
            return Err(format!(
                "{} extensions by one day made {} fetch calls",
                extensions.len(),
                fetched.len()
            ));
        }
        for (ext, got) in extensions.iter().zip(&fetched) {
            let wanted = Fetched {
                symbol: self.symbols[ext.symbol].clone(),
                start: ext.day,
                end: ext.day + 1,
            };
            if *got != wanted {
                return Err(format!("an extension fetched {got}, not {wanted}"));
            }
            let rows = trading_days(ext.day + 1 - YEAR, ext.day + 1);
            if ext.rows != rows {
                return Err(format!(
                    "the extension to {wanted} returned {} rows, not {rows}",
                    ext.rows
                ));
            }
        }
        Ok(())
    }
}
