//! Daily prices through the SQL pull-through cache: the first query fetches, the second is
//! served from the table, a wider one fetches only the days it lacks, and a weekend is never
//! fetched twice.
//!
//! ```text
//! cargo run -p cachet-sqlcache --example prices
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cachet_sqlcache::range::{format_date, parse_date};
use cachet_sqlcache::{BoxError, ColumnType, FetchRequest, Fetcher, SqlCache, TableSpec};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, Deserialize)]
struct Price {
    symbol: String,
    day: String,
    close: f64,
}

/// Stands for a market-data API: trading days only, and it counts its calls.
struct MarketApi {
    calls: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl Fetcher<Price> for MarketApi {
    async fn fetch(&self, request: &FetchRequest) -> Result<Vec<Price>, BoxError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let symbol = request.filter_str("symbol").ok_or("no symbol")?.to_owned();
        let (start, end) = request.date_range().ok_or("no date range")?;
        println!("  fetcher called for {symbol} [{start}, {end})");
        let (start, end) = (parse_date(start)?, parse_date(end)?);
        Ok((start..end)
            .filter(|days| (days + 3).rem_euclid(7) < 5) // Monday to Friday
            .map(|days| Price {
                symbol: symbol.clone(),
                day: format_date(days),
                close: 100.0 + (days % 17) as f64,
            })
            .collect())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let calls = Arc::new(AtomicU64::new(0));
    let spec = TableSpec::time_series("prices", "symbol", "day", ColumnType::Date)
        .column("close", ColumnType::Float)
        .ttl(Duration::from_secs(24 * 3600))
        .recent(Duration::from_secs(24 * 3600), Duration::from_secs(300));
    let prices: SqlCache<Price> = SqlCache::open(
        dir.path().join("prices.sqlite"),
        spec,
        MarketApi {
            calls: calls.clone(),
        },
    )?;
    let acme = json!({ "symbol": "ACME" });

    println!("January:");
    let january = prices.get(&acme, "2026-01-01".."2026-02-01").await?;
    println!("  {} trading days", january.len());

    println!("January again:");
    let again = prices.get(&acme, "2026-01-01".."2026-02-01").await?;
    println!("  {} trading days, no fetch", again.len());

    println!("January to March:");
    let quarter = prices.get(&acme, "2026-01-01".."2026-04-01").await?;
    println!("  {} trading days", quarter.len());

    println!("A weekend, twice:");
    for _ in 0..2 {
        let weekend = prices.get(&acme, "2026-04-04".."2026-04-06").await?;
        println!("  {} rows", weekend.len());
    }

    let stats = prices.stats().await?;
    println!(
        "fetch calls: {}, rows fetched: {}, rows served: {}, hit ratio in rows: {:.2}",
        calls.load(Ordering::Relaxed),
        stats.rows_fetched,
        stats.rows_served,
        stats.hit_ratio()
    );
    Ok(())
}
