//! The pull-through cache: coverage records, gap computation, fetching, storing, reading.

use std::collections::HashMap;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cachet_core::{Clock, SystemClock, Timestamp};
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Result, SqlCacheError};
use crate::fetcher::{FetchRequest, Fetcher};
use crate::filters::Filters;
use crate::range::{Point, Span, difference, merge_close, normalize};
use crate::spec::{
    Bound, ColumnType, TableSpec, bound_point, from_sql, point_json, to_sql, value_point,
};
use crate::store::sqlite::SqliteStore;
use crate::store::{Coverage, StoredRows, TableStore, WHOLE, lease_name, whole_span};

/// Options of [`SqlCache::open_with`].
#[derive(Clone)]
pub struct SqlCacheOptions {
    /// The clock of coverage times and TTLs (tests use a manual one).
    pub clock: Arc<dyn Clock>,
    /// How long a process may hold the lease of one filter-value combination while it
    /// fetches; a crashed holder's lease expires after this (default 60 s).
    pub lease: Duration,
}

impl Default for SqlCacheOptions {
    fn default() -> Self {
        SqlCacheOptions {
            clock: Arc::new(SystemClock),
            lease: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for SqlCacheOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlCacheOptions")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Counters and sizes of one table ([`SqlCache::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqlCacheStats {
    /// Rows stored.
    pub rows: u64,
    /// Coverage records (fetched ranges, per filter-value combination).
    pub coverage_intervals: u64,
    /// Fetcher calls made by this process.
    pub fetch_calls: u64,
    /// Rows the fetcher returned to this process.
    pub rows_fetched: u64,
    /// Rows `get` returned in this process.
    pub rows_served: u64,
    /// Of those, rows that were already held (not fetched by the same call).
    pub rows_from_cache: u64,
}

impl SqlCacheStats {
    /// `rows_from_cache / rows_served` (0 when nothing was served).
    pub fn hit_ratio(&self) -> f64 {
        if self.rows_served == 0 {
            0.0
        } else {
            self.rows_from_cache as f64 / self.rows_served as f64
        }
    }
}

/// What an invalidation or a cleanup removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemovalReport {
    /// Coverage records removed or cut.
    pub coverage_removed: u64,
    /// Rows deleted.
    pub rows_deleted: u64,
}

/// A pull-through cache of one table: `get(filters, range)` returns every row in range,
/// calling the fetcher only for the parts of the range not held (see the crate docs).
///
/// Cheap to clone; clones share the connection, the counters and the in-process locks.
pub struct SqlCache<R> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for SqlCache<R> {
    fn clone(&self) -> Self {
        SqlCache {
            inner: self.inner.clone(),
        }
    }
}

impl<R> std::fmt::Debug for SqlCache<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlCache")
            .field("table", &self.inner.spec.name)
            .field("location", &self.inner.store.location())
            .finish_non_exhaustive()
    }
}

struct Inner<R> {
    spec: TableSpec,
    store: Arc<dyn TableStore>,
    fetcher: Arc<dyn Fetcher<R>>,
    options: SqlCacheOptions,
    /// One lock per filter-value combination being fetched, in this process.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// This process's name in lease rows.
    holder: String,
    fetch_calls: AtomicU64,
    rows_fetched: AtomicU64,
    rows_served: AtomicU64,
    rows_from_cache: AtomicU64,
    _rows: PhantomData<fn() -> R>,
}

impl<R> SqlCache<R>
where
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// Opens (creating) the SQLite database at `path` and the table of `spec` in it, with the
    /// system clock.
    ///
    /// # Errors
    /// `Spec` for an invalid spec; `SchemaMismatch` when the table exists with other columns,
    /// key, range or filters (nullable columns added to the spec are added to the table);
    /// `Sqlite` when the file cannot be opened.
    pub fn open(
        path: impl AsRef<Path>,
        spec: TableSpec,
        fetcher: impl Fetcher<R>,
    ) -> Result<SqlCache<R>> {
        SqlCache::open_with(path, spec, fetcher, SqlCacheOptions::default())
    }

    /// [`open`](Self::open) with options (clock, lease).
    pub fn open_with(
        path: impl AsRef<Path>,
        spec: TableSpec,
        fetcher: impl Fetcher<R>,
        options: SqlCacheOptions,
    ) -> Result<SqlCache<R>> {
        spec.validate()?;
        let store = SqliteStore::open(path.as_ref())?;
        store.ensure_table(&spec)?;
        Ok(SqlCache::with_store(
            Arc::new(store),
            spec,
            fetcher,
            options,
        ))
    }

    /// Opens the table of `spec` in the PostgreSQL database of `pool` (creating it and the
    /// coverage tables in the connections' current schema), with the system clock.
    ///
    /// Many processes and machines can share the table: writes to one filter-value
    /// combination are serialized by a transaction-scoped advisory lock, and fetches by lease
    /// rows as in SQLite. Column types: `BIGINT` (integer, timestamp), `DOUBLE PRECISION`,
    /// `TEXT`, `BOOLEAN`, `BYTEA`, and dates as `TEXT COLLATE "C"` (`YYYY-MM-DD`, compared
    /// bytewise as in SQLite).
    ///
    /// # Errors
    /// As [`open`](Self::open), with `Postgres` when the server fails.
    #[cfg(feature = "postgres")]
    pub async fn open_postgres(
        pool: sqlx::PgPool,
        spec: TableSpec,
        fetcher: impl Fetcher<R>,
    ) -> Result<SqlCache<R>> {
        SqlCache::open_postgres_with(pool, spec, fetcher, SqlCacheOptions::default()).await
    }

    /// [`open_postgres`](Self::open_postgres) with options (clock, lease).
    #[cfg(feature = "postgres")]
    pub async fn open_postgres_with(
        pool: sqlx::PgPool,
        spec: TableSpec,
        fetcher: impl Fetcher<R>,
        options: SqlCacheOptions,
    ) -> Result<SqlCache<R>> {
        spec.validate()?;
        let store = crate::store::postgres::PostgresStore::open(pool).await?;
        store.ensure_table(&spec).await?;
        Ok(SqlCache::with_store(
            Arc::new(store),
            spec,
            fetcher,
            options,
        ))
    }

    fn with_store(
        store: Arc<dyn TableStore>,
        spec: TableSpec,
        fetcher: impl Fetcher<R>,
        options: SqlCacheOptions,
    ) -> SqlCache<R> {
        let holder = format!(
            "{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        SqlCache {
            inner: Arc::new(Inner {
                spec,
                store,
                fetcher: Arc::new(fetcher),
                options,
                locks: Mutex::new(HashMap::new()),
                holder,
                fetch_calls: AtomicU64::new(0),
                rows_fetched: AtomicU64::new(0),
                rows_served: AtomicU64::new(0),
                rows_from_cache: AtomicU64::new(0),
                _rows: PhantomData,
            }),
        }
    }

    /// The table's spec.
    pub fn spec(&self) -> &TableSpec {
        &self.inner.spec
    }

    /// Every row for these filter values with its range value in `[range.start, range.end)`,
    /// ordered by the range column (then the primary key), fetching only what is not held.
    ///
    /// `filters` serializes to a map of every filter column (a struct or `json!({..})`);
    /// range bounds are `"YYYY-MM-DD"` for dates, integers for integers and timestamps
    /// (milliseconds), floats for floats.
    ///
    /// # Errors
    /// `InvalidValue` for missing, extra or mistyped filters or bounds; `Fetch` when the
    /// fetcher fails for a gap (gaps fetched successfully in the same call are kept);
    /// `FetcherContract` when it returns rows it was not asked for; `Row` when a row does not
    /// convert; `Sqlite` or `Postgres` when the database fails.
    pub async fn get<B: Into<Bound>>(
        &self,
        filters: &impl Serialize,
        range: Range<B>,
    ) -> Result<Vec<R>> {
        let column = self.inner.spec.range_column().ok_or_else(|| {
            SqlCacheError::value(
                "range",
                format!(
                    "table `{}` has no range column: use get_all",
                    self.inner.spec.name
                ),
            )
        })?;
        let span = Span::new(
            bound_point(column, &range.start.into())?,
            bound_point(column, &range.end.into())?,
        );
        self.get_span(filters, span).await
    }

    /// Every row for these filter values, for a table without a range column (a lookup
    /// table): fetched once per TTL.
    pub async fn get_all(&self, filters: &impl Serialize) -> Result<Vec<R>> {
        if self.inner.spec.range.is_some() {
            return Err(SqlCacheError::value(
                "range",
                format!(
                    "table `{}` has a range column: use get",
                    self.inner.spec.name
                ),
            ));
        }
        self.get_span(filters, WHOLE).await
    }

    async fn get_span(&self, filters: &impl Serialize, span: Span) -> Result<Vec<R>> {
        let filters = Filters::new(&self.inner.spec, filters)?;
        let store = &self.inner.store;
        let spec = &self.inner.spec;
        // The warm path: coverage and rows in one read, when the coverage holds the range.
        let now = self.inner.options.clock.now();
        let held =
            |records: &[Coverage]| span.is_empty() || self.gaps(records, span, now).is_empty();
        let (rows, fetched_rows) = match store
            .read_if_held(spec, &filters, span, Some(&held))
            .await?
        {
            Some(rows) => (rows, 0),
            None => {
                let fetched = self.fill(&filters, span).await?;
                // What was just stored: no coverage check (a TTL shorter than the fetch
                // would otherwise send this call round again).
                let rows = store
                    .read_if_held(spec, &filters, span, None)
                    .await?
                    .unwrap_or_default();
                (rows, fetched)
            }
        };
        let rows = self.decode(rows)?;
        let served = rows.len() as u64;
        self.inner.rows_served.fetch_add(served, Ordering::Relaxed);
        self.inner
            .rows_from_cache
            .fetch_add(served.saturating_sub(fetched_rows), Ordering::Relaxed);
        Ok(rows)
    }

    fn decode(&self, rows: StoredRows) -> Result<Vec<R>> {
        let spec = &self.inner.spec;
        let mut out = Vec::with_capacity(rows.len());
        for values in rows {
            let mut object = Map::with_capacity(spec.columns.len());
            for (c, value) in spec.columns.iter().zip(values) {
                object.insert(c.name.clone(), from_sql(c, value)?);
            }
            let row =
                serde_json::from_value(Value::Object(object)).map_err(|e| SqlCacheError::Row {
                    table: spec.name.clone(),
                    detail: format!("a stored row does not deserialize: {e}"),
                })?;
            out.push(row);
        }
        Ok(out)
    }

    /// Fetches the gaps of `span` holding this combination's locks (in process, then across
    /// processes), computing them again under the locks: what another task or process
    /// fetched meanwhile is not fetched twice. Returns the rows fetched.
    async fn fill(&self, filters: &Filters, span: Span) -> Result<u64> {
        let lock = {
            let mut locks = lock(&self.inner.locks);
            locks.entry(filters.key.clone()).or_default().clone()
        };
        let _in_process = lock.lock().await;
        let lease = self.lease(&filters.key).await?;
        // The lease is renewed while the fetch runs, however long it takes.
        let fetch = std::pin::pin!(self.fetch_gaps(filters, span));
        let renew = std::pin::pin!(self.keep_lease(&lease));
        let result = match select(fetch, renew).await {
            Either::Left((result, _)) => result,
            Either::Right((never, _)) => match never {},
        };
        if let Err(e) = self
            .inner
            .store
            .release_lease(&lease, &self.inner.holder)
            .await
        {
            tracing::warn!(error = %e, "could not release a sqlcache lease (it expires)");
        }
        result
    }

    async fn fetch_gaps(&self, filters: &Filters, span: Span) -> Result<u64> {
        let records = self
            .inner
            .store
            .coverage(&self.inner.spec, &filters.key)
            .await?;
        let gaps = self.gaps(&records, span, self.inner.options.clock.now());
        let limit = self.inner.spec.max_concurrent_fetches;
        let results: Vec<Result<u64>> = futures_util::stream::iter(gaps)
            .map(|gap| self.fetch_gap(filters, gap))
            .buffer_unordered(limit)
            .collect()
            .await;
        let mut fetched = 0;
        let mut stored = 0;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(rows) => {
                    fetched += rows;
                    stored += 1;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(fetched),
            Some(SqlCacheError::Fetch {
                filters,
                range,
                source,
                ..
            }) => Err(SqlCacheError::Fetch {
                filters,
                range,
                fetched: stored,
                source,
            }),
            Some(other) => Err(other),
        }
    }

    /// Fetches one gap and stores its rows and coverage in one transaction.
    async fn fetch_gap(&self, filters: &Filters, gap: Span) -> Result<u64> {
        let spec = &self.inner.spec;
        let column = spec.range_column();
        let request = FetchRequest {
            table: spec.name.clone(),
            filters: filters.map.clone(),
            start: column.map(|c| point_json(c, &gap.start)),
            end: column.map(|c| point_json(c, &gap.end)),
        };
        let describe = || {
            (
                Value::Object(filters.map.clone()).to_string(),
                match column {
                    Some(c) => format!(
                        "[{}, {})",
                        point_json(c, &gap.start),
                        point_json(c, &gap.end)
                    ),
                    None => "(whole)".to_owned(),
                },
            )
        };
        self.inner.fetch_calls.fetch_add(1, Ordering::Relaxed);
        let rows = self.inner.fetcher.fetch(&request).await.map_err(|source| {
            let (filters, range) = describe();
            SqlCacheError::Fetch {
                filters,
                range,
                fetched: 0,
                source,
            }
        })?;
        let count = rows.len() as u64;
        self.inner.rows_fetched.fetch_add(count, Ordering::Relaxed);
        let mut values = Vec::with_capacity(rows.len());
        for row in &rows {
            let object = match serde_json::to_value(row) {
                Ok(Value::Object(object)) => object,
                Ok(other) => {
                    return Err(SqlCacheError::Row {
                        table: spec.name.clone(),
                        detail: format!("a row must serialize to a map of columns, not {other}"),
                    });
                }
                Err(e) => {
                    return Err(SqlCacheError::Row {
                        table: spec.name.clone(),
                        detail: e.to_string(),
                    });
                }
            };
            let contract = |detail: String| {
                let (filters, range) = describe();
                SqlCacheError::FetcherContract {
                    request: format!("{filters} {range}"),
                    detail,
                }
            };
            for (name, wanted) in &filters.map {
                let got = object.get(name).unwrap_or(&Value::Null);
                if got != wanted {
                    return Err(contract(format!("its `{name}` is {got}, not {wanted}")));
                }
            }
            if let Some(column) = column {
                let value = object.get(&column.name).unwrap_or(&Value::Null);
                let point = value_point(column, value)?;
                if !gap.contains(&point) {
                    return Err(contract(format!(
                        "its `{}` {value} is outside the range",
                        column.name
                    )));
                }
            }
            let mut row_values = Vec::with_capacity(spec.columns.len());
            for c in &spec.columns {
                row_values.push(to_sql(c, object.get(&c.name).unwrap_or(&Value::Null))?);
            }
            values.push(row_values);
        }
        let now = self.inner.options.clock.now();
        self.inner
            .store
            .store(spec, filters, gap, values, now.0)
            .await?;
        Ok(count)
    }

    /// The parts of `span` that `records` do not cover with fresh coverage at `now`, merged
    /// per the spec.
    fn gaps(&self, records: &[Coverage], span: Span, now: Timestamp) -> Vec<Span> {
        let covered = self.fresh_coverage(records, now);
        merge_close(difference(span, &covered), self.inner.spec.merge_distance)
    }

    /// The union of the records' spans still fresh at `now`.
    fn fresh_coverage(&self, records: &[Coverage], now: Timestamp) -> Vec<Span> {
        let spec = &self.inner.spec;
        let recent_cut = spec
            .recent
            .map(|(span, ttl)| (self.recent_start(now, span), ttl));
        let mut fresh = Vec::with_capacity(records.len());
        for record in records {
            let mut span = record.span;
            let age = Duration::from_millis(u64::try_from(now.0 - record.fetched_at).unwrap_or(0));
            if spec.ttl.is_some_and(|ttl| age >= ttl) {
                continue;
            }
            if let Some((cut, ttl)) = recent_cut {
                if age >= ttl && span.end > cut {
                    span.end = cut;
                }
            }
            fresh.push(span);
        }
        normalize(fresh)
    }

    /// The first point of the "recent" part of the range column at `now`.
    fn recent_start(&self, now: Timestamp, span: Duration) -> Point {
        let span_ms = i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
        match self.inner.spec.range_column().map(|c| c.ty) {
            Some(ColumnType::Date) => {
                let today = now.0.div_euclid(86_400_000);
                let days = (span_ms + 86_399_999) / 86_400_000;
                Point::Int(today - days + 1)
            }
            _ => Point::Int(now.0.saturating_sub(span_ms)),
        }
    }

    // ------------------------------------------------------------ management

    /// Drops the coverage and rows of these filter values (everything fetched for them).
    pub async fn invalidate(&self, filters: &impl Serialize) -> Result<RemovalReport> {
        let filters = Filters::new(&self.inner.spec, filters)?;
        let whole = whole_span(&self.inner.spec);
        self.inner
            .store
            .invalidate(&self.inner.spec, &filters, whole)
            .await
    }

    /// Drops the coverage and rows of these filter values within `range` (coverage records
    /// that extend beyond it keep their other parts).
    pub async fn invalidate_range<B: Into<Bound>>(
        &self,
        filters: &impl Serialize,
        range: Range<B>,
    ) -> Result<RemovalReport> {
        let spec = &self.inner.spec;
        let filters = Filters::new(spec, filters)?;
        let column = spec
            .range_column()
            .ok_or_else(|| SqlCacheError::value("range", "this table has no range column"))?;
        let span = Span::new(
            bound_point(column, &range.start.into())?,
            bound_point(column, &range.end.into())?,
        );
        self.inner.store.invalidate(spec, &filters, span).await
    }

    /// Drops every coverage record and row of the table.
    pub async fn invalidate_all(&self) -> Result<RemovalReport> {
        self.inner.store.invalidate_all(&self.inner.spec).await
    }

    /// Deletes coverage records past the table's TTL, and the rows no fresh coverage holds
    /// any more.
    pub async fn cleanup_expired(&self) -> Result<RemovalReport> {
        let spec = &self.inner.spec;
        let Some(ttl) = spec.ttl else {
            return Ok(RemovalReport::default());
        };
        let now = self.inner.options.clock.now();
        let cutoff = now
            .0
            .saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let mut report = RemovalReport::default();
        for key in self.inner.store.expired_keys(spec, cutoff).await? {
            let filters = Filters::from_key(spec, &key)?;
            let removed = self.inner.store.cleanup(spec, &filters, cutoff).await?;
            report.coverage_removed += removed.coverage_removed;
            report.rows_deleted += removed.rows_deleted;
        }
        Ok(report)
    }

    /// Rows, coverage records and this process's counters.
    pub async fn stats(&self) -> Result<SqlCacheStats> {
        let (rows, coverage_intervals) = self.inner.store.counts(&self.inner.spec).await?;
        Ok(SqlCacheStats {
            rows,
            coverage_intervals,
            fetch_calls: self.inner.fetch_calls.load(Ordering::Relaxed),
            rows_fetched: self.inner.rows_fetched.load(Ordering::Relaxed),
            rows_served: self.inner.rows_served.load(Ordering::Relaxed),
            rows_from_cache: self.inner.rows_from_cache.load(Ordering::Relaxed),
        })
    }

    // ------------------------------------------------------------ leases

    /// Takes the cross-process lease of one combination (waiting while another process holds
    /// it, up to its expiry).
    async fn lease(&self, key: &str) -> Result<String> {
        let name = lease_name(&self.inner.spec, key);
        let mut delay = Duration::from_millis(5);
        loop {
            // Leases are about real time (a crashed holder), whatever the coverage clock says.
            let now = wall_clock_ms();
            let until = now.saturating_add(self.lease_ms());
            if self
                .inner
                .store
                .try_lease(&name, &self.inner.holder, now, until)
                .await?
            {
                return Ok(name);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// Extends the lease every third of its duration, for as long as it is polled.
    async fn keep_lease(&self, name: &str) -> Infallible {
        let period = self.inner.options.lease / 3;
        loop {
            tokio::time::sleep(period).await;
            let until = wall_clock_ms().saturating_add(self.lease_ms());
            match self
                .inner
                .store
                .renew_lease(name, &self.inner.holder, until)
                .await
            {
                Ok(true) => {}
                // The fetch goes on: its store is atomic, so another holder fetching the
                // same piece costs a fetch, never a wrong row.
                Ok(false) => tracing::warn!(
                    lease = name,
                    "a sqlcache lease expired during a fetch; another process may fetch the same range"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, lease = name, "could not renew a sqlcache lease")
                }
            }
        }
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.inner.options.lease.as_millis()).unwrap_or(i64::MAX / 2)
    }
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every guarded mutation is one map insert: a panic elsewhere leaves nothing half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
