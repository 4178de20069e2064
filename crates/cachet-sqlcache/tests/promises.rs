//! The SQL cache's promises, each named after what it guarantees, against a deterministic
//! fake source that records every request. Time is a manual clock.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachet_core::{ManualClock, Timestamp};
use cachet_sqlcache::range::parse_date;
use cachet_sqlcache::{
    BoxError, ColumnType, FetchRequest, Fetcher, SqlCache, SqlCacheError, SqlCacheOptions,
    TableSpec,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

mod common;
use common::{Place, places};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Price {
    symbol: String,
    day: String,
    close: f64,
}

/// Trading days only (Monday to Friday); `close` is a function of symbol and day.
#[derive(Clone, Default)]
struct Exchange {
    requests: Arc<Mutex<Vec<(String, String, String)>>>,
    fail_from: Arc<Mutex<Option<String>>>,
    delay: Duration,
}

fn weekday(days: i64) -> i64 {
    (days + 3).rem_euclid(7) // 0 = Monday (1970-01-01 was a Thursday)
}

fn day_text(days: i64) -> String {
    cachet_sqlcache::range::format_date(days)
}

impl Exchange {
    fn rows(symbol: &str, start: &str, end: &str) -> Vec<Price> {
        let (a, b) = (parse_date(start).unwrap(), parse_date(end).unwrap());
        (a..b)
            .filter(|d| weekday(*d) < 5)
            .map(|d| Price {
                symbol: symbol.to_owned(),
                day: day_text(d),
                close: (d % 97) as f64 + symbol.len() as f64,
            })
            .collect()
    }

    fn requests(&self) -> Vec<(String, String, String)> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Fetcher<Price> for Exchange {
    async fn fetch(&self, request: &FetchRequest) -> Result<Vec<Price>, BoxError> {
        let symbol = request.filter_str("symbol").unwrap().to_owned();
        let (start, end) = request.date_range().unwrap();
        self.requests
            .lock()
            .unwrap()
            .push((symbol.clone(), start.to_owned(), end.to_owned()));
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Some(from) = self.fail_from.lock().unwrap().as_deref() {
            if start >= from {
                return Err(format!("upstream refused {symbol} from {start}").into());
            }
        }
        Ok(Exchange::rows(&symbol, start, end))
    }
}

fn spec() -> TableSpec {
    TableSpec::time_series("prices", "symbol", "day", ColumnType::Date)
        .column("close", ColumnType::Float)
        .ttl(Duration::from_secs(30 * 24 * 3600))
}

fn clock() -> ManualClock {
    ManualClock::new(Timestamp(1_767_225_600_000)) // 2026-01-01
}

fn on(clock: &ManualClock) -> SqlCacheOptions {
    SqlCacheOptions {
        clock: Arc::new(clock.clone()),
        ..SqlCacheOptions::default()
    }
}

impl Place {
    /// The prices table here, on `clock`.
    async fn prices(&self, source: Exchange, clock: &ManualClock) -> SqlCache<Price> {
        self.open(spec(), source, on(clock)).await.unwrap()
    }
}

fn acme() -> serde_json::Value {
    json!({ "symbol": "ACME" })
}

#[tokio::test]
async fn a_weekend_gap_is_not_refetched() {
    for place in places().await {
        let source = Exchange::default();
        let cache = place.prices(source.clone(), &clock()).await;
        // 2026-01-03 and 04 are a Saturday and a Sunday: no rows, but covered.
        let weekend = cache
            .get(&acme(), "2026-01-03".."2026-01-05")
            .await
            .unwrap();
        assert!(weekend.is_empty());
        let again = cache
            .get(&acme(), "2026-01-03".."2026-01-05")
            .await
            .unwrap();
        assert!(again.is_empty());
        assert_eq!(
            source.requests().len(),
            1,
            "the empty range counts as covered"
        );
    }
}

#[tokio::test]
async fn an_inner_hole_is_found_and_filled_alone() {
    for place in places().await {
        let source = Exchange::default();
        let cache = place.prices(source.clone(), &clock()).await;
        cache
            .get(&acme(), "2026-01-01".."2026-01-10")
            .await
            .unwrap();
        cache
            .get(&acme(), "2026-01-20".."2026-01-31")
            .await
            .unwrap();
        let month = cache
            .get(&acme(), "2026-01-01".."2026-01-31")
            .await
            .unwrap();
        assert_eq!(month, Exchange::rows("ACME", "2026-01-01", "2026-01-31"));
        assert_eq!(
            source.requests().last().unwrap(),
            &("ACME".into(), "2026-01-10".into(), "2026-01-20".into()),
            "only the hole"
        );
        assert_eq!(source.requests().len(), 3);
    }
}

#[tokio::test]
async fn a_second_disjoint_range_is_fetched_not_answered_with_the_first() {
    for place in places().await {
        let source = Exchange::default();
        let cache = place.prices(source.clone(), &clock()).await;
        let january = cache
            .get(&acme(), "2026-01-01".."2026-02-01")
            .await
            .unwrap();
        let march = cache
            .get(&acme(), "2026-03-01".."2026-04-01")
            .await
            .unwrap();
        assert_eq!(january, Exchange::rows("ACME", "2026-01-01", "2026-02-01"));
        assert_eq!(march, Exchange::rows("ACME", "2026-03-01", "2026-04-01"));
        assert!(march.iter().all(|p| p.day.starts_with("2026-03")));
        assert_eq!(source.requests().len(), 2);
    }
}

#[tokio::test]
async fn other_filter_values_have_their_own_coverage() {
    for place in places().await {
        let source = Exchange::default();
        let cache = place.prices(source.clone(), &clock()).await;
        cache
            .get(&acme(), "2026-01-01".."2026-02-01")
            .await
            .unwrap();
        let other = cache
            .get(&json!({ "symbol": "INITECH" }), "2026-01-01".."2026-02-01")
            .await
            .unwrap();
        assert_eq!(other, Exchange::rows("INITECH", "2026-01-01", "2026-02-01"));
        assert_eq!(source.requests().len(), 2);
    }
}

#[tokio::test]
async fn a_fetch_error_is_surfaced_and_the_other_gaps_are_kept() {
    for place in places().await {
        let source = Exchange::default();
        let cache = place.prices(source.clone(), &clock()).await;
        cache
            .get(&acme(), "2026-01-10".."2026-01-20")
            .await
            .unwrap();
        *source.fail_from.lock().unwrap() = Some("2026-01-20".into());
        // Two gaps: [01-01, 01-10) succeeds, [01-20, 02-01) fails.
        let err = cache
            .get(&acme(), "2026-01-01".."2026-02-01")
            .await
            .unwrap_err();
        match &err {
            SqlCacheError::Fetch { range, fetched, .. } => {
                assert!(range.contains("2026-01-20"), "{err}");
                assert_eq!(*fetched, 1, "{err}");
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("upstream refused ACME"), "{err}");
        *source.fail_from.lock().unwrap() = None;
        let before = source.requests().len();
        let month = cache
            .get(&acme(), "2026-01-01".."2026-02-01")
            .await
            .unwrap();
        assert_eq!(month, Exchange::rows("ACME", "2026-01-01", "2026-02-01"));
        assert_eq!(
            source.requests()[before..],
            [("ACME".into(), "2026-01-20".into(), "2026-02-01".into())],
            "only the failed gap is fetched again"
        );
    }
}

#[tokio::test]
async fn expiry_refetches_only_the_expired_part() {
    for place in places().await {
        let source = Exchange::default();
        let clock = clock();
        let cache = place.prices(source.clone(), &clock).await;
        cache
            .get(&acme(), "2026-01-01".."2026-01-15")
            .await
            .unwrap();
        clock.advance(Duration::from_secs(20 * 24 * 3600));
        cache
            .get(&acme(), "2026-01-15".."2026-02-01")
            .await
            .unwrap();
        clock.advance(Duration::from_secs(15 * 24 * 3600)); // the first fetch is 35 days old
        let before = source.requests().len();
        cache
            .get(&acme(), "2026-01-01".."2026-02-01")
            .await
            .unwrap();
        assert_eq!(
            source.requests()[before..],
            [("ACME".into(), "2026-01-01".into(), "2026-01-15".into())]
        );
    }
}

#[tokio::test]
async fn the_recent_part_expires_sooner() {
    for place in places().await {
        let source = Exchange::default();
        let clock = clock(); // 2026-01-01
        let cache: SqlCache<Price> = place
            .open(
                spec().recent(Duration::from_secs(24 * 3600), Duration::from_secs(300)),
                source.clone(),
                on(&clock),
            )
            .await
            .unwrap();
        cache
            .get(&acme(), "2025-12-01".."2026-01-02")
            .await
            .unwrap();
        clock.advance(Duration::from_secs(600)); // today's part is stale, the rest is not
        cache
            .get(&acme(), "2025-12-01".."2026-01-02")
            .await
            .unwrap();
        assert_eq!(
            source.requests()[1..],
            [("ACME".into(), "2026-01-01".into(), "2026-01-02".into())]
        );
    }
}

#[tokio::test]
async fn concurrent_overlapping_queries_fetch_each_piece_once() {
    for place in places().await {
        let source = Exchange {
            delay: Duration::from_millis(50),
            ..Exchange::default()
        };
        let cache = place.prices(source.clone(), &clock()).await;
        let ranges = [
            ("2026-01-01", "2026-02-01"),
            ("2026-01-15", "2026-02-15"),
            ("2026-01-01", "2026-02-15"),
            ("2026-01-20", "2026-01-25"),
        ];
        let tasks: Vec<_> = ranges
            .iter()
            .map(|(a, b)| {
                let cache = cache.clone();
                let (a, b) = (a.to_string(), b.to_string());
                tokio::spawn(async move { cache.get(&acme(), a.as_str()..b.as_str()).await })
            })
            .collect();
        for (task, (a, b)) in tasks.into_iter().zip(ranges) {
            assert_eq!(task.await.unwrap().unwrap(), Exchange::rows("ACME", a, b));
        }
        // Every day was requested at most once.
        let mut seen = BTreeSet::new();
        for (_, start, end) in source.requests() {
            for d in parse_date(&start).unwrap()..parse_date(&end).unwrap() {
                assert!(seen.insert(d), "{} fetched twice", day_text(d));
            }
        }
    }
}

#[tokio::test]
async fn two_caches_on_one_file_fetch_each_piece_once() {
    for place in places().await {
        // Two caches stand for two processes: separate connections, locks and holders.
        let source = Exchange {
            delay: Duration::from_millis(50),
            ..Exchange::default()
        };
        let clock = clock();
        let a = place.prices(source.clone(), &clock).await;
        let b = place.prices(source.clone(), &clock).await;
        let filters = acme();
        let (ra, rb) = tokio::join!(
            a.get(&filters, "2026-01-01".."2026-02-01"),
            b.get(&filters, "2026-01-01".."2026-02-01")
        );
        assert_eq!(ra.unwrap(), rb.unwrap());
        assert_eq!(source.requests().len(), 1);
    }
}

#[tokio::test]
async fn a_schema_mismatch_on_reopen_gives_a_clear_error() {
    for place in places().await {
        let default = SqlCacheOptions::default;
        drop(place.prices(Exchange::default(), &clock()).await);
        let changed = TableSpec::time_series("prices", "symbol", "day", ColumnType::Date)
            .column("close", ColumnType::Text);
        let err = place
            .open::<Price, _>(changed, Exchange::default(), default())
            .await
            .unwrap_err();
        match &err {
            SqlCacheError::SchemaMismatch { table, detail } => {
                assert_eq!(table, "prices");
                assert!(
                    detail.contains("`close`") && detail.contains("Float"),
                    "{err}"
                );
            }
            other => panic!("{other}"),
        }
        // Adding a nullable column migrates the table instead.
        let extended = spec().nullable_column("volume", ColumnType::Integer);
        place
            .open::<Price, _>(extended, Exchange::default(), default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_fetcher_returning_rows_it_was_not_asked_for_is_refused() {
    for place in places().await {
        struct Sloppy;
        #[async_trait::async_trait]
        impl Fetcher<Price> for Sloppy {
            async fn fetch(&self, _: &FetchRequest) -> Result<Vec<Price>, BoxError> {
                Ok(Exchange::rows("ACME", "2025-06-01", "2025-06-10"))
            }
        }
        let cache = place
            .open(spec(), Sloppy, SqlCacheOptions::default())
            .await
            .unwrap();
        let err = cache
            .get(&acme(), "2026-01-01".."2026-01-10")
            .await
            .unwrap_err();
        assert!(
            matches!(err, SqlCacheError::FetcherContract { .. }),
            "{err}"
        );
        assert_eq!(
            cache.stats().await.unwrap().rows,
            0,
            "nothing of that gap was stored"
        );
    }
}

#[tokio::test]
async fn invalidation_drops_coverage_and_rows_of_the_range_only() {
    for place in places().await {
        let source = Exchange::default();
        let cache = place.prices(source.clone(), &clock()).await;
        cache
            .get(&acme(), "2026-01-01".."2026-02-01")
            .await
            .unwrap();
        let report = cache
            .invalidate_range(&acme(), "2026-01-10".."2026-01-20")
            .await
            .unwrap();
        assert_eq!(report.coverage_removed, 1);
        assert!(report.rows_deleted > 0);
        cache
            .get(&acme(), "2026-01-01".."2026-02-01")
            .await
            .unwrap();
        assert_eq!(
            source.requests()[1..],
            [("ACME".into(), "2026-01-10".into(), "2026-01-20".into())]
        );
        cache.invalidate(&acme()).await.unwrap();
        assert_eq!(cache.stats().await.unwrap().rows, 0);
    }
}

#[tokio::test]
async fn stats_count_fetches_rows_and_the_hit_ratio_in_rows() {
    for place in places().await {
        let cache = place.prices(Exchange::default(), &clock()).await;
        let first = cache
            .get(&acme(), "2026-01-01".."2026-02-01")
            .await
            .unwrap();
        cache
            .get(&acme(), "2026-01-01".."2026-02-01")
            .await
            .unwrap();
        let stats = cache.stats().await.unwrap();
        assert_eq!(stats.fetch_calls, 1);
        assert_eq!(stats.rows, first.len() as u64);
        assert_eq!(stats.rows_served, 2 * first.len() as u64);
        assert!((stats.hit_ratio() - 0.5).abs() < 1e-9);
        assert_eq!(stats.coverage_intervals, 1);
    }
}

#[tokio::test]
async fn cleanup_removes_expired_coverage_and_its_rows() {
    for place in places().await {
        let clock = clock();
        let cache = place.prices(Exchange::default(), &clock).await;
        cache
            .get(&acme(), "2026-01-01".."2026-02-01")
            .await
            .unwrap();
        clock.advance(Duration::from_secs(31 * 24 * 3600));
        let report = cache.cleanup_expired().await.unwrap();
        assert_eq!(report.coverage_removed, 1);
        assert_eq!(cache.stats().await.unwrap().rows, 0);
    }
}

#[tokio::test]
async fn wrong_filters_and_bounds_are_refused_with_the_column_named() {
    for place in places().await {
        let cache = place.prices(Exchange::default(), &clock()).await;
        for (filters, bad) in [(json!({}), "symbol"), (json!({"symbol": "A", "x": 1}), "x")] {
            match cache.get(&filters, "2026-01-01".."2026-01-02").await {
                Err(SqlCacheError::InvalidValue { column, .. }) => assert_eq!(column, bad),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            cache.get(&acme(), "2026-02-30".."2026-03-01").await,
            Err(SqlCacheError::InvalidValue { .. })
        ));
        assert!(matches!(
            cache.get(&acme(), 1i64..2i64).await,
            Err(SqlCacheError::InvalidValue { .. })
        ));
    }
}

#[test]
fn a_filter_outside_the_primary_key_is_refused() {
    let spec = TableSpec::event_log("events", "id")
        .column("stream", ColumnType::Text)
        .filter("stream");
    match spec.validate() {
        Err(SqlCacheError::Spec { field, message }) => {
            assert_eq!(field, "filter");
            assert!(message.contains("`stream`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(spec.primary_key(["stream", "id"]).validate().is_ok());
}

/// A row with a column of every type, in an integer-ranged table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    id: i64,
    ok: bool,
    value: f64,
    raw: Vec<u8>,
    day: String,
    at: i64,
    note: Option<String>,
}

struct Sensors;

impl Sensors {
    fn readings(sensor: &str, start: i64, end: i64) -> Vec<Reading> {
        (start..end)
            .map(|id| Reading {
                sensor: sensor.to_owned(),
                id,
                ok: id % 2 == 0,
                value: id as f64 / 3.0,
                raw: vec![0, 255, id as u8],
                day: day_text(20_000 + id),
                at: 1_767_225_600_123 + id,
                note: (id % 3 == 0).then(|| format!("note {id}")),
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Fetcher<Reading> for Sensors {
    async fn fetch(&self, request: &FetchRequest) -> Result<Vec<Reading>, BoxError> {
        let (start, end) = request.int_range().unwrap();
        Ok(Sensors::readings(
            request.filter_str("sensor").unwrap(),
            start,
            end,
        ))
    }
}

#[tokio::test]
async fn every_column_type_round_trips() {
    for place in places().await {
        let spec = TableSpec::event_log("readings", "id")
            .column("sensor", ColumnType::Text)
            .column("ok", ColumnType::Bool)
            .column("value", ColumnType::Float)
            .column("raw", ColumnType::Bytes)
            .column("day", ColumnType::Date)
            .column("at", ColumnType::Timestamp)
            .nullable_column("note", ColumnType::Text)
            .filter("sensor")
            .primary_key(["sensor", "id"]);
        let cache: SqlCache<Reading> = place
            .open(spec, Sensors, SqlCacheOptions::default())
            .await
            .unwrap();
        let filters = json!({ "sensor": "north" });
        let fetched = cache.get(&filters, -2i64..7i64).await.unwrap();
        let expected = Sensors::readings("north", -2, 7);
        assert_eq!(fetched, expected);
        let held = cache.get(&filters, -2i64..7i64).await.unwrap();
        assert_eq!(held, expected, "read back from the table");
        assert_eq!(cache.stats().await.unwrap().fetch_calls, 1);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Country {
    code: String,
    name: String,
}

/// Knows two countries; counts its calls.
#[derive(Clone, Default)]
struct Registry {
    calls: Arc<Mutex<u32>>,
}

#[async_trait::async_trait]
impl Fetcher<Country> for Registry {
    async fn fetch(&self, request: &FetchRequest) -> Result<Vec<Country>, BoxError> {
        *self.calls.lock().unwrap() += 1;
        let code = request.filter_str("code").unwrap();
        let name = match code {
            "FR" => "France",
            "JP" => "Japan",
            _ => return Ok(Vec::new()),
        };
        Ok(vec![Country {
            code: code.into(),
            name: name.into(),
        }])
    }
}

#[tokio::test]
async fn a_lookup_table_fetches_each_key_once_per_ttl() {
    for place in places().await {
        let clock = clock();
        let registry = Registry::default();
        let spec = TableSpec::lookup_table("countries", "code", ColumnType::Text)
            .column("name", ColumnType::Text)
            .ttl(Duration::from_secs(3600));
        let cache: SqlCache<Country> = place
            .open(spec, registry.clone(), on(&clock))
            .await
            .unwrap();
        let france = json!({ "code": "FR" });
        let unknown = json!({ "code": "XX" });
        for _ in 0..3 {
            assert_eq!(cache.get_all(&france).await.unwrap()[0].name, "France");
            assert!(cache.get_all(&unknown).await.unwrap().is_empty());
        }
        assert_eq!(
            *registry.calls.lock().unwrap(),
            2,
            "an unknown key is a covered key"
        );
        clock.advance(Duration::from_secs(3600));
        cache.get_all(&france).await.unwrap();
        assert_eq!(
            *registry.calls.lock().unwrap(),
            3,
            "refetched after its TTL"
        );
    }
}

#[tokio::test]
async fn a_fetch_longer_than_the_lease_is_not_repeated_by_another_process() {
    // The lease is renewed while the fetch runs: the other cache waits instead of taking an
    // expired lease and fetching the same range again.
    for place in places().await {
        let source = Exchange {
            delay: Duration::from_millis(900),
            ..Exchange::default()
        };
        let short_lease = SqlCacheOptions {
            lease: Duration::from_millis(200),
            ..on(&clock())
        };
        let a: SqlCache<Price> = place
            .open(spec(), source.clone(), short_lease.clone())
            .await
            .unwrap();
        let b: SqlCache<Price> = place
            .open(spec(), source.clone(), short_lease)
            .await
            .unwrap();
        let filters = acme();
        let late_b = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.get(&filters, "2026-01-01".."2026-02-01").await
        };
        let (ra, rb) = tokio::join!(a.get(&filters, "2026-01-01".."2026-02-01"), late_b);
        assert_eq!(ra.unwrap(), rb.unwrap());
        assert_eq!(source.requests().len(), 1, "fetched once, by one holder");
    }
}

/// Returns every row twice, the second time with another close.
struct Stutter;

#[async_trait::async_trait]
impl Fetcher<Price> for Stutter {
    async fn fetch(&self, request: &FetchRequest) -> Result<Vec<Price>, BoxError> {
        let (start, end) = request.date_range().unwrap();
        let rows = Exchange::rows("ACME", start, end);
        let corrected = rows.iter().cloned().map(|mut p| {
            p.close += 1000.0;
            p
        });
        Ok(rows.clone().into_iter().chain(corrected).collect())
    }
}

#[tokio::test]
async fn a_key_returned_twice_by_the_fetcher_keeps_its_last_row() {
    for place in places().await {
        let cache: SqlCache<Price> = place
            .open(spec(), Stutter, SqlCacheOptions::default())
            .await
            .unwrap();
        let week = cache
            .get(&acme(), "2026-01-05".."2026-01-10")
            .await
            .unwrap();
        assert_eq!(week.len(), 5);
        assert!(week.iter().all(|p| p.close >= 1000.0), "{week:?}");
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn an_unreachable_postgres_server_is_a_typed_error() {
    use std::str::FromStr;
    // Nothing listens on port 1; the pool gives up after its acquire timeout.
    let options =
        sqlx::postgres::PgConnectOptions::from_str("postgres://nobody@127.0.0.1:1/none").unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(options);
    let err = SqlCache::<Price>::open_postgres(pool, spec(), Exchange::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SqlCacheError::Postgres { .. }), "{err}");
    assert!(err.to_string().contains("PostgreSQL"), "{err}");
}
