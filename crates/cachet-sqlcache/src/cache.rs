//! The pull-through cache: coverage records, gap computation, fetching, storing, reading.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cachet_core::{Clock, SystemClock, Timestamp};
use futures_util::StreamExt;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Result, SqlCacheError};
use crate::fetcher::{FetchRequest, Fetcher};
use crate::range::{FIRST_DAY, LAST_DAY, Point, Span, difference, merge_close, normalize};
use crate::spec::{
    Bound, Column, ColumnType, TableSpec, bound_point, from_sql, point_json, point_sql, to_sql,
    value_point,
};

const META_SQL: &str = "
CREATE TABLE IF NOT EXISTS _cachet_sqlcache_tables (
    name   TEXT PRIMARY KEY,
    schema TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _cachet_sqlcache_coverage (
    tbl        TEXT    NOT NULL,
    filter_key TEXT    NOT NULL,
    lo,
    hi,
    fetched_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS _cachet_sqlcache_coverage_key
    ON _cachet_sqlcache_coverage (tbl, filter_key);
CREATE TABLE IF NOT EXISTS _cachet_sqlcache_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
";

/// The span that stands for "everything" in a table without a range column.
const WHOLE: Span = Span {
    start: Point::Int(0),
    end: Point::Int(1),
};

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
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner<R> {
    spec: TableSpec,
    path: String,
    conn: Mutex<Connection>,
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
        let path_text = path.as_ref().display().to_string();
        let fail = |operation: &str| sqlite_failure(&path_text, operation);
        let mut conn = Connection::open(path.as_ref()).map_err(fail("open"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(fail("set busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail("enable WAL"))?;
        conn.execute_batch(META_SQL)
            .map_err(fail("create the coverage tables"))?;
        ensure_table(&mut conn, &spec, &path_text)?;
        let holder = format!(
            "{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        Ok(SqlCache {
            inner: Arc::new(Inner {
                spec,
                path: path_text,
                conn: Mutex::new(conn),
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
        })
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
    /// convert; `Sqlite`.
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
        let mut fetched_rows = 0u64;
        if !span.is_empty() && !self.gaps(&filters, span)?.is_empty() {
            fetched_rows = self.fill(&filters, span).await?;
        }
        let rows = self.read_rows(&filters, span)?;
        let served = rows.len() as u64;
        self.inner.rows_served.fetch_add(served, Ordering::Relaxed);
        self.inner
            .rows_from_cache
            .fetch_add(served.saturating_sub(fetched_rows), Ordering::Relaxed);
        Ok(rows)
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
        let result = self.fetch_gaps(filters, span).await;
        if let Err(e) = self.release_lease(&lease) {
            tracing::warn!(error = %e, "could not release a sqlcache lease (it expires)");
        }
        result
    }

    async fn fetch_gaps(&self, filters: &Filters, span: Span) -> Result<u64> {
        let gaps = self.gaps(filters, span)?;
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
        self.store(filters, gap, &values, now)?;
        Ok(count)
    }

    /// Replaces the rows of `gap` by `rows` and records the coverage, atomically.
    fn store(&self, filters: &Filters, gap: Span, rows: &[Vec<Sql>], now: Timestamp) -> Result<()> {
        let spec = &self.inner.spec;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.fail("begin a store"))?;
        {
            let (where_, args) = self.where_clause(filters, gap);
            tx.execute(
                &format!("DELETE FROM \"{}\" WHERE {where_}", spec.name),
                params_from_iter(args),
            )
            .map_err(self.fail("delete the rows being replaced"))?;
            let names: Vec<String> = spec
                .columns
                .iter()
                .map(|c| format!("\"{}\"", c.name))
                .collect();
            let marks = vec!["?"; names.len()].join(", ");
            let mut insert = tx
                .prepare(&format!(
                    "INSERT OR REPLACE INTO \"{}\" ({}) VALUES ({marks})",
                    spec.name,
                    names.join(", ")
                ))
                .map_err(self.fail("prepare the row insert"))?;
            for row in rows {
                insert
                    .execute(params_from_iter(row.iter()))
                    .map_err(self.fail("insert a fetched row"))?;
            }
            let (lo, hi) = self.coverage_bounds(gap);
            tx.execute(
                "INSERT INTO _cachet_sqlcache_coverage (tbl, filter_key, lo, hi, fetched_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![spec.name, filters.key, lo, hi, now.0],
            )
            .map_err(self.fail("record coverage"))?;
        }
        tx.commit().map_err(self.fail("commit a store"))
    }

    /// The parts of `span` not covered by fresh coverage, merged per the spec.
    fn gaps(&self, filters: &Filters, span: Span) -> Result<Vec<Span>> {
        let covered = self.fresh_coverage(&filters.key)?;
        let gaps = difference(span, &covered);
        Ok(merge_close(gaps, self.inner.spec.merge_distance))
    }

    /// The union of this combination's coverage that is still fresh now.
    fn fresh_coverage(&self, key: &str) -> Result<Vec<Span>> {
        let now = self.inner.options.clock.now();
        let records = self.coverage_records(key)?;
        let spec = &self.inner.spec;
        let recent_cut = spec
            .recent
            .map(|(span, ttl)| (self.recent_start(now, span), ttl));
        let mut fresh = Vec::new();
        for (mut span, fetched_at) in records {
            let age = Duration::from_millis(u64::try_from(now.0 - fetched_at).unwrap_or(0));
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
        Ok(normalize(fresh))
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

    fn coverage_records(&self, key: &str) -> Result<Vec<(Span, i64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT lo, hi, fetched_at FROM _cachet_sqlcache_coverage \
                 WHERE tbl = ?1 AND filter_key = ?2",
            )
            .map_err(self.fail("prepare the coverage read"))?;
        let rows = stmt
            .query_map(params![self.inner.spec.name, key], |r| {
                Ok((
                    r.get::<_, Sql>(0)?,
                    r.get::<_, Sql>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(self.fail("read coverage"))?;
        let mut out = Vec::new();
        for row in rows {
            let (lo, hi, at) = row.map_err(self.fail("read coverage"))?;
            out.push((self.coverage_span(lo, hi)?, at));
        }
        Ok(out)
    }

    fn coverage_bounds(&self, span: Span) -> (Sql, Sql) {
        let point = |p: Point| match p {
            Point::Int(v) => Sql::Integer(v),
            Point::Float(v) => Sql::Real(v),
        };
        if self.inner.spec.range.is_none() {
            return (Sql::Null, Sql::Null);
        }
        (point(span.start), point(span.end))
    }

    fn coverage_span(&self, lo: Sql, hi: Sql) -> Result<Span> {
        let point = |v: Sql| match v {
            Sql::Integer(v) => Ok(Point::Int(v)),
            Sql::Real(v) => Ok(Point::Float(v)),
            other => Err(other),
        };
        match (lo, hi) {
            (Sql::Null, Sql::Null) => Ok(WHOLE),
            (lo, hi) => match (point(lo), point(hi)) {
                (Ok(lo), Ok(hi)) => Ok(Span::new(lo, hi)),
                _ => Err(SqlCacheError::Row {
                    table: "_cachet_sqlcache_coverage".into(),
                    detail: format!(
                        "a coverage record of `{}` has bounds that are not numbers",
                        self.inner.spec.name
                    ),
                }),
            },
        }
    }

    /// `WHERE` of one combination's rows in `span` (the whole combination without a range).
    fn where_clause(&self, filters: &Filters, span: Span) -> (String, Vec<Sql>) {
        let spec = &self.inner.spec;
        let mut parts = vec!["1".to_owned()];
        let mut args = Vec::new();
        for (name, value) in &filters.sql {
            parts.push(format!("\"{name}\" = ?"));
            args.push(value.clone());
        }
        if let Some(column) = spec.range_column() {
            parts.push(format!("\"{0}\" >= ? AND \"{0}\" < ?", column.name));
            args.push(point_sql(column, &span.start));
            args.push(point_sql(column, &span.end));
        }
        (parts.join(" AND "), args)
    }

    fn read_rows(&self, filters: &Filters, span: Span) -> Result<Vec<R>> {
        let spec = &self.inner.spec;
        let (where_, args) = self.where_clause(filters, span);
        let names: Vec<String> = spec
            .columns
            .iter()
            .map(|c| format!("\"{}\"", c.name))
            .collect();
        let mut order: Vec<String> = spec.range.iter().map(|r| format!("\"{r}\"")).collect();
        order.extend(spec.primary_key.iter().map(|k| format!("\"{k}\"")));
        let sql = format!(
            "SELECT {} FROM \"{}\" WHERE {where_} ORDER BY {}",
            names.join(", "),
            spec.name,
            order.join(", ")
        );
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&sql)
            .map_err(self.fail("prepare the row read"))?;
        let mut rows = stmt
            .query(params_from_iter(args))
            .map_err(self.fail("read rows"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(self.fail("read rows"))? {
            let mut object = Map::with_capacity(spec.columns.len());
            for (i, c) in spec.columns.iter().enumerate() {
                let value: Sql = row.get(i).map_err(self.fail("read a row"))?;
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

    // ------------------------------------------------------------ management

    /// Drops the coverage and rows of these filter values (everything fetched for them).
    pub fn invalidate(&self, filters: &impl Serialize) -> Result<RemovalReport> {
        let filters = Filters::new(&self.inner.spec, filters)?;
        let whole = self.whole_span();
        self.invalidate_span(&filters, whole)
    }

    /// Drops the coverage and rows of these filter values within `range` (coverage records
    /// that extend beyond it keep their other parts).
    pub fn invalidate_range<B: Into<Bound>>(
        &self,
        filters: &impl Serialize,
        range: Range<B>,
    ) -> Result<RemovalReport> {
        let filters = Filters::new(&self.inner.spec, filters)?;
        let column = self
            .inner
            .spec
            .range_column()
            .ok_or_else(|| SqlCacheError::value("range", "this table has no range column"))?;
        let span = Span::new(
            bound_point(column, &range.start.into())?,
            bound_point(column, &range.end.into())?,
        );
        self.invalidate_span(&filters, span)
    }

    /// Drops every coverage record and row of the table.
    pub fn invalidate_all(&self) -> Result<RemovalReport> {
        let spec = &self.inner.spec;
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.fail("begin an invalidation"))?;
        let coverage_removed = tx
            .execute(
                "DELETE FROM _cachet_sqlcache_coverage WHERE tbl = ?1",
                params![spec.name],
            )
            .map_err(self.fail("delete coverage"))? as u64;
        let rows_deleted = tx
            .execute(&format!("DELETE FROM \"{}\"", spec.name), [])
            .map_err(self.fail("delete rows"))? as u64;
        tx.commit().map_err(self.fail("commit an invalidation"))?;
        Ok(RemovalReport {
            coverage_removed,
            rows_deleted,
        })
    }

    fn whole_span(&self) -> Span {
        match self.inner.spec.range_column().map(|c| c.ty) {
            None => WHOLE,
            Some(ColumnType::Float) => Span::new(Point::Float(f64::MIN), Point::Float(f64::MAX)),
            // Every date with a four-digit year, as text compares them (9999-12-31 excluded).
            Some(ColumnType::Date) => Span::new(Point::Int(FIRST_DAY), Point::Int(LAST_DAY)),
            Some(_) => Span::new(Point::Int(i64::MIN), Point::Int(i64::MAX)),
        }
    }

    fn invalidate_span(&self, filters: &Filters, span: Span) -> Result<RemovalReport> {
        let spec = &self.inner.spec;
        let records = self.coverage_records(&filters.key)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.fail("begin an invalidation"))?;
        let mut report = RemovalReport::default();
        // Rewrite this combination's coverage without `span`.
        tx.execute(
            "DELETE FROM _cachet_sqlcache_coverage WHERE tbl = ?1 AND filter_key = ?2",
            params![spec.name, filters.key],
        )
        .map_err(self.fail("delete coverage"))?;
        for (record, fetched_at) in records {
            let cut = !record.intersect(&span).is_empty();
            if cut {
                report.coverage_removed += 1;
            }
            let kept = if cut {
                difference(record, &[span])
            } else {
                vec![record]
            };
            for part in kept {
                let (lo, hi) = self.coverage_bounds(part);
                tx.execute(
                    "INSERT INTO _cachet_sqlcache_coverage (tbl, filter_key, lo, hi, fetched_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![spec.name, filters.key, lo, hi, fetched_at],
                )
                .map_err(self.fail("record coverage"))?;
            }
        }
        let (where_, args) = self.where_clause(filters, span);
        report.rows_deleted = tx
            .execute(
                &format!("DELETE FROM \"{}\" WHERE {where_}", spec.name),
                params_from_iter(args),
            )
            .map_err(self.fail("delete rows"))? as u64;
        tx.commit().map_err(self.fail("commit an invalidation"))?;
        Ok(report)
    }

    /// Deletes coverage records past the table's TTL, and the rows no fresh coverage holds
    /// any more.
    pub fn cleanup_expired(&self) -> Result<RemovalReport> {
        let spec = &self.inner.spec;
        let Some(ttl) = spec.ttl else {
            return Ok(RemovalReport::default());
        };
        let now = self.inner.options.clock.now();
        let cutoff = now
            .0
            .saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let keys: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare(
                    "SELECT DISTINCT filter_key FROM _cachet_sqlcache_coverage \
                     WHERE tbl = ?1 AND fetched_at <= ?2",
                )
                .map_err(self.fail("find expired coverage"))?;
            stmt.query_map(params![spec.name, cutoff], |r| r.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                .map_err(self.fail("find expired coverage"))?
        };
        let mut report = RemovalReport::default();
        for key in keys {
            let filters = Filters::from_key(spec, &key)?;
            report.coverage_removed +=
                self.conn()
                    .execute(
                        "DELETE FROM _cachet_sqlcache_coverage \
                     WHERE tbl = ?1 AND filter_key = ?2 AND fetched_at <= ?3",
                        params![spec.name, key, cutoff],
                    )
                    .map_err(self.fail("delete expired coverage"))? as u64;
            // Rows outside every remaining record go.
            let kept = normalize(
                self.coverage_records(&key)?
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect(),
            );
            for hole in difference(self.whole_span(), &kept) {
                let (where_, args) = self.where_clause(&filters, hole);
                report.rows_deleted +=
                    self.conn()
                        .execute(
                            &format!("DELETE FROM \"{}\" WHERE {where_}", spec.name),
                            params_from_iter(args),
                        )
                        .map_err(self.fail("delete uncovered rows"))? as u64;
            }
        }
        Ok(report)
    }

    /// Rows, coverage records and this process's counters.
    pub fn stats(&self) -> Result<SqlCacheStats> {
        let spec = &self.inner.spec;
        let conn = self.conn();
        let rows: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM \"{}\"", spec.name),
                [],
                |r| r.get(0),
            )
            .map_err(self.fail("count rows"))?;
        let coverage: i64 = conn
            .query_row(
                "SELECT count(*) FROM _cachet_sqlcache_coverage WHERE tbl = ?1",
                params![spec.name],
                |r| r.get(0),
            )
            .map_err(self.fail("count coverage"))?;
        Ok(SqlCacheStats {
            rows: rows.max(0) as u64,
            coverage_intervals: coverage.max(0) as u64,
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
        let name = format!("{}\u{1f}{key}", self.inner.spec.name);
        let mut delay = Duration::from_millis(5);
        loop {
            if self.try_lease(&name)? {
                return Ok(name);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    fn try_lease(&self, name: &str) -> Result<bool> {
        // Leases are about real time (a crashed holder), whatever the coverage clock says.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let until =
            now + i64::try_from(self.inner.options.lease.as_millis()).unwrap_or(i64::MAX / 2);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.fail("begin a lease"))?;
        let current: Option<(String, i64)> = tx
            .query_row(
                "SELECT holder, expires_at FROM _cachet_sqlcache_leases WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.fail("read a lease"))?;
        let free = match &current {
            None => true,
            Some((holder, expires_at)) => *holder == self.inner.holder || *expires_at <= now,
        };
        if free {
            tx.execute(
                "INSERT OR REPLACE INTO _cachet_sqlcache_leases (name, holder, expires_at) \
                 VALUES (?1, ?2, ?3)",
                params![name, self.inner.holder, until],
            )
            .map_err(self.fail("take a lease"))?;
        }
        tx.commit().map_err(self.fail("commit a lease"))?;
        Ok(free)
    }

    fn release_lease(&self, name: &str) -> Result<()> {
        self.conn()
            .execute(
                "DELETE FROM _cachet_sqlcache_leases WHERE name = ?1 AND holder = ?2",
                params![name, self.inner.holder],
            )
            .map_err(self.fail("release a lease"))?;
        Ok(())
    }

    // ------------------------------------------------------------ helpers

    fn conn(&self) -> MutexGuard<'_, Connection> {
        lock(&self.inner.conn)
    }

    fn fail(&self, operation: &str) -> impl FnOnce(rusqlite::Error) -> SqlCacheError + use<R> {
        sqlite_failure(&self.inner.path, operation)
    }
}

/// Turns an SQLite error into one naming the file and what was being done.
fn sqlite_failure(
    path: &str,
    operation: &str,
) -> impl FnOnce(rusqlite::Error) -> SqlCacheError + use<> {
    let path = path.to_owned();
    let operation = operation.to_owned();
    move |source| SqlCacheError::Sqlite {
        path,
        operation,
        source,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every guarded mutation is one SQLite statement or one map insert: a panic elsewhere
    // leaves nothing half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The filter values of one request: as JSON (for the fetcher and the coverage key) and as
/// SQLite values (for queries).
struct Filters {
    map: Map<String, Value>,
    sql: Vec<(String, Sql)>,
    /// The coverage key: the values in the spec's filter order, as a JSON array.
    key: String,
}

impl Filters {
    fn new(spec: &TableSpec, filters: &impl Serialize) -> Result<Filters> {
        let value = serde_json::to_value(filters)
            .map_err(|e| SqlCacheError::value("filters", e.to_string()))?;
        let map = match value {
            Value::Object(map) => map,
            Value::Null if spec.filters.is_empty() => Map::new(),
            other => {
                return Err(SqlCacheError::value(
                    "filters",
                    format!("filters must serialize to a map of filter columns, not {other}"),
                ));
            }
        };
        if let Some(extra) = map.keys().find(|k| !spec.filters.contains(k)) {
            return Err(SqlCacheError::value(
                extra,
                format!(
                    "not a filter column of `{}` (filters: {:?})",
                    spec.name, spec.filters
                ),
            ));
        }
        let mut ordered = Vec::with_capacity(spec.filters.len());
        let mut sql = Vec::with_capacity(spec.filters.len());
        for name in &spec.filters {
            let value = map.get(name).ok_or_else(|| {
                SqlCacheError::value(name, "missing: every filter column needs a value")
            })?;
            let column: &Column = spec.column_named(name)?;
            sql.push((name.clone(), to_sql(column, value)?));
            ordered.push(value.clone());
        }
        let key = Value::Array(ordered).to_string();
        Ok(Filters { map, sql, key })
    }

    fn from_key(spec: &TableSpec, key: &str) -> Result<Filters> {
        let values: Vec<Value> = serde_json::from_str(key).map_err(|e| SqlCacheError::Row {
            table: "_cachet_sqlcache_coverage".into(),
            detail: format!("a coverage key of `{}` is not JSON: {e}", spec.name),
        })?;
        let map: Map<String, Value> = spec.filters.iter().cloned().zip(values).collect();
        Filters::new(spec, &map)
    }
}

/// Creates the table, or checks that the existing one has the spec's schema (adding the
/// spec's new nullable columns).
fn ensure_table(conn: &mut Connection, spec: &TableSpec, path: &str) -> Result<()> {
    let fail = |operation: &str| sqlite_failure(path, operation);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail("begin the table check"))?;
    let stored: Option<String> = tx
        .query_row(
            "SELECT schema FROM _cachet_sqlcache_tables WHERE name = ?1",
            params![spec.name],
            |r| r.get(0),
        )
        .optional()
        .map_err(fail("read the table's schema"))?;
    match stored {
        None => {
            tx.execute_batch(&spec.create_sql())
                .map_err(fail("create the table"))?;
            let mut index_columns: Vec<String> =
                spec.filters.iter().map(|f| format!("\"{f}\"")).collect();
            index_columns.extend(spec.range.iter().map(|r| format!("\"{r}\"")));
            if !index_columns.is_empty() {
                tx.execute_batch(&format!(
                    "CREATE INDEX \"{0}_by_filters_and_range\" ON \"{0}\" ({1})",
                    spec.name,
                    index_columns.join(", ")
                ))
                .map_err(fail("index the table"))?;
            }
        }
        Some(stored) if stored == spec.schema_json() => {}
        Some(stored) => {
            let added = schema_difference(spec, &stored)?;
            for column in added {
                tx.execute_batch(&format!(
                    "ALTER TABLE \"{}\" ADD COLUMN \"{}\" {}",
                    spec.name,
                    column.name,
                    column.ty.sql()
                ))
                .map_err(fail("add a column"))?;
            }
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO _cachet_sqlcache_tables (name, schema) VALUES (?1, ?2)",
        params![spec.name, spec.schema_json()],
    )
    .map_err(fail("record the table's schema"))?;
    tx.commit().map_err(fail("commit the table check"))
}

/// The columns the spec adds to the stored schema (nullable ones only), or the mismatch.
fn schema_difference<'s>(spec: &'s TableSpec, stored: &str) -> Result<Vec<&'s Column>> {
    let mismatch = |detail: String| SqlCacheError::SchemaMismatch {
        table: spec.name.clone(),
        detail,
    };
    let stored: Value = serde_json::from_str(stored)
        .map_err(|e| mismatch(format!("its recorded schema is not readable ({e})")))?;
    let old_columns: Vec<Column> = serde_json::from_value(stored["columns"].clone())
        .map_err(|e| mismatch(format!("its recorded columns are not readable ({e})")))?;
    for (what, old, new) in [
        (
            "primary key",
            &stored["primary_key"],
            &serde_json::json!(spec.primary_key),
        ),
        (
            "range column",
            &stored["range"],
            &serde_json::json!(spec.range),
        ),
        (
            "filter columns",
            &stored["filters"],
            &serde_json::json!(spec.filters),
        ),
    ] {
        if old != new {
            return Err(mismatch(format!(
                "its {what} is {old}, the spec says {new}"
            )));
        }
    }
    for old in &old_columns {
        match spec.columns.iter().find(|c| c.name == old.name) {
            None => {
                return Err(mismatch(format!(
                    "it has column `{}` ({:?}), which the spec lacks",
                    old.name, old.ty
                )));
            }
            Some(new) if new != old => {
                return Err(mismatch(format!(
                    "column `{}` is {:?}{}, the spec says {:?}{}",
                    old.name,
                    old.ty,
                    if old.nullable { " (nullable)" } else { "" },
                    new.ty,
                    if new.nullable { " (nullable)" } else { "" }
                )));
            }
            Some(_) => {}
        }
    }
    let mut added = Vec::new();
    for new in &spec.columns {
        if !old_columns.iter().any(|c| c.name == new.name) {
            if !new.nullable {
                return Err(mismatch(format!(
                    "the spec adds column `{}`, which is not nullable (existing rows have no \
                     value for it)",
                    new.name
                )));
            }
            added.push(new);
        }
    }
    Ok(added)
}
