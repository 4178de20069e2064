//! # cachet-sqlcache
//!
//! A pull-through cache for tabular data fetched by range: prices by symbol and day, events
//! by id, rows by key. You declare a table ([`TableSpec`]) and a [`Fetcher`];
//! [`SqlCache::get`] returns every row for some filter values in a half-open range, calling
//! the fetcher only for the parts of the range it does not hold yet.
//!
//! Coverage is recorded explicitly: for each combination of filter values, the ranges fetched
//! and when. The gaps of a request are the interval-set difference between the range and the
//! fresh coverage, so
//! - a range that legitimately has no rows (a weekend, a holiday, a quiet hour in a log) is
//!   remembered as covered and never fetched again;
//! - holes inside the covered span are found and fetched alone;
//! - a second, disjoint range is fetched for itself (never answered with another range's rows);
//! - coverage expires by TTL, and optionally sooner for the most recent part of a time range.
//!
//! Gaps are fetched concurrently (at most [`TableSpec::max_concurrent_fetches`]), each stored
//! with its coverage in one transaction; a failed gap is returned as
//! [`SqlCacheError::Fetch`] while the others stay stored. Two tasks, or two processes, asking
//! for overlapping missing ranges fetch each piece once: fetching takes a per-combination
//! lock in the process and a lease row in the database (renewed while the fetch runs, and
//! expiring if its holder dies).
//!
//! The table lives in its own SQLite database file ([`SqlCache::open`]), or, with the
//! `postgres` feature, in a PostgreSQL schema shared by many machines
//! (`SqlCache::open_postgres(pool, ..)`: `BIGINT`, `DOUBLE PRECISION`, `TEXT`, `BOOLEAN`,
//! `BYTEA` columns, dates as `TEXT COLLATE "C"`); either way not inside the cache index, and
//! created and migrated by cachet. Rows go in and out as serde structs. A warm `get` reads the
//! coverage and the rows in one read transaction.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use cachet_sqlcache::{BoxError, ColumnType, FetchRequest, Fetcher, SqlCache, TableSpec};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize, PartialEq)]
//! struct Price { symbol: String, day: String, close: f64 }
//!
//! struct Quotes;
//! #[async_trait::async_trait]
//! impl Fetcher<Price> for Quotes {
//!     async fn fetch(&self, request: &FetchRequest) -> Result<Vec<Price>, BoxError> {
//!         let symbol = request.filter_str("symbol").unwrap_or_default().to_owned();
//!         let (start, end) = request.date_range().unwrap_or_default();
//!         // A real fetcher calls an API; this one knows two days.
//!         Ok(["2026-01-05", "2026-01-06"]
//!             .into_iter()
//!             .filter(|day| (start..end).contains(day))
//!             .map(|day| Price { symbol: symbol.clone(), day: day.into(), close: 101.5 })
//!             .collect())
//!     }
//! }
//!
//! # let dir = tempfile::tempdir()?;
//! let spec = TableSpec::time_series("prices", "symbol", "day", ColumnType::Date)
//!     .column("close", ColumnType::Float);
//! let prices: SqlCache<Price> = SqlCache::open(dir.path().join("prices.sqlite"), spec, Quotes)?;
//! let week = prices.get(&serde_json::json!({ "symbol": "ACME" }), "2026-01-03".."2026-01-10").await?;
//! assert_eq!(week.len(), 2);
//! let again = prices.get(&serde_json::json!({ "symbol": "ACME" }), "2026-01-04".."2026-01-08").await?;
//! assert_eq!(again.len(), 2);
//! assert_eq!(prices.stats().await?.fetch_calls, 1); // the second range was covered
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod cache;
mod error;
mod fetcher;
mod filters;
pub mod range;
mod spec;
mod store;

pub use cache::{RemovalReport, SqlCache, SqlCacheOptions, SqlCacheStats};
pub use error::{BoxError, Result, SqlCacheError};
pub use fetcher::{FetchRequest, Fetcher};
pub use spec::{Bound, Column, ColumnType, TableSpec};
