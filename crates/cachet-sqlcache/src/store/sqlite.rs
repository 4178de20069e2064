//! The embedded store: one SQLite file (WAL), shared by every process that opens it.
//!
//! Calls are short statements on one connection behind a mutex, run inline on the caller's
//! task as the cache index does (a primary-key lookup is a few microseconds). Writes take
//! `BEGIN IMMEDIATE`, which serializes them across processes; reads run in one deferred
//! transaction, one WAL snapshot.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, Value as Sql, ValueRef};
use rusqlite::{
    Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior, params,
    params_from_iter,
};

use super::{
    Coverage, CoverageCheck, StoredRows, TableStore, column_list, coverage_bounds, coverage_span,
    cut_coverage, index_columns, row_conditions, row_order, schema_difference, uncovered,
};
use crate::cache::RemovalReport;
use crate::error::{Result, SqlCacheError};
use crate::filters::Filters;
use crate::range::{Point, Span};
use crate::spec::{ColumnType, SqlValue, TableSpec};

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

const INSERT_COVERAGE: &str = "INSERT INTO _cachet_sqlcache_coverage \
     (tbl, filter_key, lo, hi, fetched_at) VALUES (?1, ?2, ?3, ?4, ?5)";

/// Tables in one SQLite file.
pub(crate) struct SqliteStore {
    path: String,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating) the file, in WAL mode, with its coverage tables.
    pub(crate) fn open(path: &Path) -> Result<SqliteStore> {
        let path_text = path.display().to_string();
        let fail = |operation: &str| sqlite_failure(&path_text, operation);
        let conn = Connection::open(path).map_err(fail("open"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(fail("set busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail("enable WAL"))?;
        // Every table here can be fetched again: a power cut may roll back the last commits
        // (each whole, rows with their coverage), never tear one. That is worth not syncing
        // each of the three commits of a fetch (lease, store, release).
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail("set synchronous"))?;
        conn.execute_batch(META_SQL)
            .map_err(fail("create the coverage tables"))?;
        Ok(SqliteStore {
            path: path_text,
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // Every guarded mutation is one SQLite transaction: a panic elsewhere leaves nothing
        // half-done.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, operation: &str) -> impl FnOnce(rusqlite::Error) -> SqlCacheError + use<> {
        sqlite_failure(&self.path, operation)
    }

    /// Creates `spec`'s table, or checks the existing one against the spec (adding the spec's
    /// new nullable columns).
    pub(crate) fn ensure_table(&self, spec: &TableSpec) -> Result<()> {
        let mut conn = self.conn();
        let tx = self.immediate(&mut conn, "begin the table check")?;
        let stored: Option<String> = tx
            .query_row(
                "SELECT schema FROM _cachet_sqlcache_tables WHERE name = ?1",
                params![spec.name],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.fail("read the table's schema"))?;
        match stored {
            None => {
                tx.execute_batch(&spec.create_sql(ColumnType::sqlite))
                    .map_err(self.fail("create the table"))?;
                let index = index_columns(spec);
                if !index.is_empty() {
                    tx.execute_batch(&format!(
                        "CREATE INDEX \"{0}_by_filters_and_range\" ON \"{0}\" ({1})",
                        spec.name,
                        index.join(", ")
                    ))
                    .map_err(self.fail("index the table"))?;
                }
            }
            Some(stored) if stored == spec.schema_json() => {}
            Some(stored) => {
                for column in schema_difference(spec, &stored)? {
                    tx.execute_batch(&format!(
                        "ALTER TABLE \"{}\" ADD COLUMN \"{}\" {}",
                        spec.name,
                        column.name,
                        column.ty.sqlite()
                    ))
                    .map_err(self.fail("add a column"))?;
                }
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO _cachet_sqlcache_tables (name, schema) VALUES (?1, ?2)",
            params![spec.name, spec.schema_json()],
        )
        .map_err(self.fail("record the table's schema"))?;
        tx.commit().map_err(self.fail("commit the table check"))
    }

    /// One combination's coverage records.
    fn coverage_records(
        &self,
        conn: &Connection,
        spec: &TableSpec,
        key: &str,
    ) -> Result<Vec<Coverage>> {
        let fail = || self.fail("read coverage");
        let mut stmt = conn
            .prepare_cached(
                "SELECT lo, hi, fetched_at FROM _cachet_sqlcache_coverage \
                 WHERE tbl = ?1 AND filter_key = ?2",
            )
            .map_err(fail())?;
        let rows = stmt
            .query_map(params![spec.name, key], |r| {
                Ok((
                    r.get::<_, Sql>(0)?,
                    r.get::<_, Sql>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(fail())?;
        let mut out = Vec::new();
        for row in rows {
            let (lo, hi, fetched_at) = row.map_err(fail())?;
            let bounds = match (point(lo), point(hi)) {
                (Some(lo), Some(hi)) => Some((lo, hi)),
                _ => None,
            };
            out.push(Coverage {
                span: coverage_span(spec, bounds)?,
                fetched_at,
            });
        }
        Ok(out)
    }

    fn insert_coverage(
        &self,
        conn: &Connection,
        spec: &TableSpec,
        key: &str,
        record: &Coverage,
    ) -> Result<()> {
        let stored = |p: Point| match p {
            Point::Int(v) => Sql::Integer(v),
            Point::Float(v) => Sql::Real(v),
        };
        let (lo, hi) = match coverage_bounds(spec, record.span) {
            Some((lo, hi)) => (stored(lo), stored(hi)),
            None => (Sql::Null, Sql::Null),
        };
        conn.prepare_cached(INSERT_COVERAGE)
            .and_then(|mut insert| {
                insert.execute(params![spec.name, key, lo, hi, record.fetched_at])
            })
            .map_err(self.fail("record coverage"))?;
        Ok(())
    }

    /// Deletes one combination's rows in `span`; counts them.
    fn delete_rows(
        &self,
        conn: &Connection,
        spec: &TableSpec,
        filters: &Filters,
        span: Span,
    ) -> Result<u64> {
        let (where_, args) = where_clause(spec, filters, span)?;
        let deleted = conn
            .prepare_cached(&format!("DELETE FROM \"{}\" WHERE {where_}", spec.name))
            .and_then(|mut delete| delete.execute(params_from_iter(args)))
            .map_err(self.fail("delete rows"))?;
        Ok(deleted as u64)
    }

    /// `BEGIN IMMEDIATE`: takes the database's write lock now, so that what the
    /// transaction reads stays true until it commits.
    fn immediate<'c>(&self, conn: &'c mut Connection, operation: &str) -> Result<Transaction<'c>> {
        conn.transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.fail(operation))
    }
}

#[async_trait]
impl TableStore for SqliteStore {
    fn location(&self) -> &str {
        &self.path
    }

    async fn coverage(&self, spec: &TableSpec, key: &str) -> Result<Vec<Coverage>> {
        self.coverage_records(&self.conn(), spec, key)
    }

    async fn read_if_held(
        &self,
        spec: &TableSpec,
        filters: &Filters,
        span: Span,
        held: Option<CoverageCheck<'_>>,
    ) -> Result<Option<StoredRows>> {
        let mut conn = self.conn();
        // A deferred transaction: both reads see one snapshot.
        let tx = conn.transaction().map_err(self.fail("begin a read"))?;
        if let Some(held) = held {
            if !held(&self.coverage_records(&tx, spec, &filters.key)?) {
                return Ok(None);
            }
        }
        let (where_, args) = where_clause(spec, filters, span)?;
        let sql = format!(
            "SELECT {} FROM \"{}\" WHERE {where_} ORDER BY {}",
            column_list(spec),
            spec.name,
            row_order(spec)
        );
        let mut stmt = tx
            .prepare_cached(&sql)
            .map_err(self.fail("prepare the row read"))?;
        let mut rows = stmt
            .query(params_from_iter(args))
            .map_err(self.fail("read rows"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(self.fail("read rows"))? {
            let mut values = Vec::with_capacity(spec.columns.len());
            for i in 0..spec.columns.len() {
                let value: Sql = row.get(i).map_err(self.fail("read a row"))?;
                values.push(from_sqlite(value));
            }
            out.push(values);
        }
        Ok(Some(out))
    }

    async fn store(
        &self,
        spec: &TableSpec,
        filters: &Filters,
        gap: Span,
        rows: StoredRows,
        fetched_at: i64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = self.immediate(&mut conn, "begin a store")?;
        {
            self.delete_rows(&tx, spec, filters, gap)?;
            let marks = vec!["?"; spec.columns.len()].join(", ");
            let mut insert = tx
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO \"{}\" ({}) VALUES ({marks})",
                    spec.name,
                    column_list(spec)
                ))
                .map_err(self.fail("prepare the row insert"))?;
            for row in &rows {
                insert
                    .execute(params_from_iter(row.iter()))
                    .map_err(self.fail("insert a fetched row"))?;
            }
            self.insert_coverage(
                &tx,
                spec,
                &filters.key,
                &Coverage {
                    span: gap,
                    fetched_at,
                },
            )?;
        }
        tx.commit().map_err(self.fail("commit a store"))
    }

    async fn invalidate(
        &self,
        spec: &TableSpec,
        filters: &Filters,
        span: Span,
    ) -> Result<RemovalReport> {
        let mut conn = self.conn();
        let tx = self.immediate(&mut conn, "begin an invalidation")?;
        let records = self.coverage_records(&tx, spec, &filters.key)?;
        let (kept, cut) = cut_coverage(&records, span);
        tx.execute(
            "DELETE FROM _cachet_sqlcache_coverage WHERE tbl = ?1 AND filter_key = ?2",
            params![spec.name, filters.key],
        )
        .map_err(self.fail("delete coverage"))?;
        for record in &kept {
            self.insert_coverage(&tx, spec, &filters.key, record)?;
        }
        let rows_deleted = self.delete_rows(&tx, spec, filters, span)?;
        tx.commit().map_err(self.fail("commit an invalidation"))?;
        Ok(RemovalReport {
            coverage_removed: cut,
            rows_deleted,
        })
    }

    async fn invalidate_all(&self, spec: &TableSpec) -> Result<RemovalReport> {
        let mut conn = self.conn();
        let tx = self.immediate(&mut conn, "begin an invalidation")?;
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

    async fn expired_keys(&self, spec: &TableSpec, cutoff: i64) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT DISTINCT filter_key FROM _cachet_sqlcache_coverage \
                 WHERE tbl = ?1 AND fetched_at <= ?2",
            )
            .map_err(self.fail("find expired coverage"))?;
        stmt.query_map(params![spec.name, cutoff], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(self.fail("find expired coverage"))
    }

    async fn cleanup(
        &self,
        spec: &TableSpec,
        filters: &Filters,
        cutoff: i64,
    ) -> Result<RemovalReport> {
        let mut conn = self.conn();
        let tx = self.immediate(&mut conn, "begin a cleanup")?;
        let coverage_removed = tx
            .execute(
                "DELETE FROM _cachet_sqlcache_coverage \
                 WHERE tbl = ?1 AND filter_key = ?2 AND fetched_at <= ?3",
                params![spec.name, filters.key, cutoff],
            )
            .map_err(self.fail("delete expired coverage"))? as u64;
        let remaining = self.coverage_records(&tx, spec, &filters.key)?;
        let mut rows_deleted = 0;
        for hole in uncovered(spec, &remaining) {
            rows_deleted += self.delete_rows(&tx, spec, filters, hole)?;
        }
        tx.commit().map_err(self.fail("commit a cleanup"))?;
        Ok(RemovalReport {
            coverage_removed,
            rows_deleted,
        })
    }

    async fn counts(&self, spec: &TableSpec) -> Result<(u64, u64)> {
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
        Ok((rows.max(0) as u64, coverage.max(0) as u64))
    }

    async fn try_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> Result<bool> {
        let mut conn = self.conn();
        let tx = self.immediate(&mut conn, "begin a lease")?;
        let taken = tx
            .execute(
                "INSERT INTO _cachet_sqlcache_leases (name, holder, expires_at) \
                 VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                     expires_at = excluded.expires_at \
                 WHERE _cachet_sqlcache_leases.holder = excluded.holder \
                    OR _cachet_sqlcache_leases.expires_at <= ?4",
                params![name, holder, until, now],
            )
            .map_err(self.fail("take a lease"))?;
        tx.commit().map_err(self.fail("commit a lease"))?;
        Ok(taken == 1)
    }

    async fn renew_lease(&self, name: &str, holder: &str, until: i64) -> Result<bool> {
        let renewed = self
            .conn()
            .execute(
                "UPDATE _cachet_sqlcache_leases SET expires_at = ?3 \
                 WHERE name = ?1 AND holder = ?2",
                params![name, holder, until],
            )
            .map_err(self.fail("renew a lease"))?;
        Ok(renewed == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.conn()
            .execute(
                "DELETE FROM _cachet_sqlcache_leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
            .map_err(self.fail("release a lease"))?;
        Ok(())
    }
}

/// Turns an SQLite error into one naming the file and what was being done.
pub(crate) fn sqlite_failure(
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

fn point(value: Sql) -> Option<Point> {
    match value {
        Sql::Integer(v) => Some(Point::Int(v)),
        Sql::Real(v) => Some(Point::Float(v)),
        _ => None,
    }
}

/// `WHERE` of one combination's rows in `span`, with its arguments.
fn where_clause(
    spec: &TableSpec,
    filters: &Filters,
    span: Span,
) -> Result<(String, Vec<SqlValue>)> {
    let mut parts = vec!["1".to_owned()];
    let mut args = Vec::new();
    for (column, op, value) in row_conditions(spec, filters, span)? {
        parts.push(format!("\"{}\" {op} ?", column.name));
        args.push(value);
    }
    Ok((parts.join(" AND "), args))
}

fn from_sqlite(value: Sql) -> SqlValue {
    match value {
        Sql::Null => SqlValue::Null,
        Sql::Integer(v) => SqlValue::Integer(v),
        Sql::Real(v) => SqlValue::Real(v),
        Sql::Text(v) => SqlValue::Text(v),
        Sql::Blob(v) => SqlValue::Blob(v),
    }
}

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(v) => ValueRef::Integer(*v),
            SqlValue::Real(v) => ValueRef::Real(*v),
            SqlValue::Text(v) => ValueRef::Text(v.as_bytes()),
            SqlValue::Blob(v) => ValueRef::Blob(v),
        }))
    }
}
