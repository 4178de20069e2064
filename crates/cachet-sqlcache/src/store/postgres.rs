//! The shared store: tables in a PostgreSQL database, for many processes on many machines.
//!
//! Writes to one filter-value combination (store, invalidate, cleanup) are serialized by a
//! transaction-scoped advisory lock on the table and the combination, so that a coverage
//! record and its rows always change together; dropping a whole table locks the table.
//! Reads run in one `REPEATABLE READ` transaction: the coverage check and the rows come from
//! one snapshot.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgRow, Postgres};
use sqlx::{AssertSqlSafe, PgConnection, QueryBuilder, Row};

use super::{
    Coverage, CoverageCheck, StoredRows, TableStore, column_list, coverage_bounds, coverage_span,
    cut_coverage, index_columns, row_conditions, row_order, schema_difference, uncovered,
};
use crate::cache::RemovalReport;
use crate::error::{Result, SqlCacheError};
use crate::filters::Filters;
use crate::range::{Point, Span};
use crate::spec::{Column, ColumnType, SqlValue, TableSpec};

const META_SQL: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS _cachet_sqlcache_tables (
        name   TEXT PRIMARY KEY,
        schema TEXT NOT NULL
    )",
    // A table's range column is integer-like or float: its coverage bounds use one pair.
    "CREATE TABLE IF NOT EXISTS _cachet_sqlcache_coverage (
        tbl        TEXT   NOT NULL,
        filter_key TEXT   NOT NULL,
        lo_int     BIGINT,
        hi_int     BIGINT,
        lo_float   DOUBLE PRECISION,
        hi_float   DOUBLE PRECISION,
        fetched_at BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS _cachet_sqlcache_coverage_key
        ON _cachet_sqlcache_coverage (tbl, filter_key)",
    "CREATE TABLE IF NOT EXISTS _cachet_sqlcache_leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT   NOT NULL,
        expires_at BIGINT NOT NULL
    )",
];

/// Serializes schema changes of the sqlcache tables in the current schema (concurrent
/// `CREATE TABLE IF NOT EXISTS` can fail on PostgreSQL's catalog).
const SCHEMA_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('cachet.sqlcache:' || current_schema(), 0))";

/// Serializes the writes of one combination of one table (the argument names both).
const KEY_LOCK: &str = "SELECT pg_advisory_xact_lock(\
     hashtextextended('cachet.sqlcache:' || current_schema() || ':' || $1, 0))";

const COVERAGE_SELECT: &str = "SELECT lo_int, hi_int, lo_float, hi_float, fetched_at \
     FROM _cachet_sqlcache_coverage WHERE tbl = $1 AND filter_key = $2";

/// At most this many rows per `INSERT` (and never more than PostgreSQL's 65,535 arguments).
const ROWS_PER_INSERT: usize = 1000;

/// Tables in one PostgreSQL schema.
pub(crate) struct PostgresStore {
    pool: PgPool,
    /// `database.schema`, for messages.
    location: String,
}

impl PostgresStore {
    /// Creates the coverage tables in the pool's current schema when missing.
    pub(crate) async fn open(pool: PgPool) -> Result<PostgresStore> {
        let mut tx = pool
            .begin()
            .await
            .map_err(fail("begin creating the coverage tables"))?;
        sqlx::query(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(fail("lock the schema"))?;
        for statement in META_SQL {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(fail("create the coverage tables"))?;
        }
        let location: String = sqlx::query_scalar(
            "SELECT current_database() || '.' || coalesce(current_schema(), '(no schema)')",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(fail("name the schema"))?;
        tx.commit()
            .await
            .map_err(fail("commit creating the coverage tables"))?;
        Ok(PostgresStore { pool, location })
    }

    /// Creates `spec`'s table, or checks the existing one against the spec (adding the spec's
    /// new nullable columns).
    pub(crate) async fn ensure_table(&self, spec: &TableSpec) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(fail("begin the table check"))?;
        sqlx::query(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(fail("lock the schema"))?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT schema FROM _cachet_sqlcache_tables WHERE name = $1")
                .bind(&spec.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(fail("read the table's schema"))?;
        let mut ddl = Vec::new();
        match stored {
            None => {
                ddl.push(spec.create_sql(ColumnType::postgres));
                let index = index_columns(spec);
                if !index.is_empty() {
                    ddl.push(format!(
                        "CREATE INDEX \"{0}_by_filters_and_range\" ON \"{0}\" ({1})",
                        spec.name,
                        index.join(", ")
                    ));
                }
            }
            Some(stored) if stored == spec.schema_json() => {}
            Some(stored) => {
                for column in schema_difference(spec, &stored)? {
                    ddl.push(format!(
                        "ALTER TABLE \"{}\" ADD COLUMN \"{}\" {}",
                        spec.name,
                        column.name,
                        column.ty.postgres()
                    ));
                }
            }
        }
        for statement in ddl {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .map_err(fail("create or migrate the table"))?;
        }
        sqlx::query(
            "INSERT INTO _cachet_sqlcache_tables (name, schema) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET schema = EXCLUDED.schema",
        )
        .bind(&spec.name)
        .bind(spec.schema_json())
        .execute(&mut *tx)
        .await
        .map_err(fail("record the table's schema"))?;
        tx.commit().await.map_err(fail("commit the table check"))
    }
}

#[async_trait]
impl TableStore for PostgresStore {
    fn location(&self) -> &str {
        &self.location
    }

    async fn coverage(&self, spec: &TableSpec, key: &str) -> Result<Vec<Coverage>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(fail("connect to read coverage"))?;
        coverage_records(&mut conn, spec, key).await
    }

    async fn read_if_held(
        &self,
        spec: &TableSpec,
        filters: &Filters,
        span: Span,
        held: Option<CoverageCheck<'_>>,
    ) -> Result<Option<StoredRows>> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(fail("begin a read"))?;
        if let Some(held) = held {
            if !held(&coverage_records(&mut tx, spec, &filters.key).await?) {
                return Ok(None);
            }
        }
        let mut query = QueryBuilder::<Postgres>::new(format!(
            "SELECT {} FROM \"{}\" WHERE ",
            column_list(spec),
            spec.name
        ));
        push_conditions(&mut query, spec, filters, span)?;
        query.push(format!(" ORDER BY {}", row_order(spec)));
        let rows = query
            .build()
            .fetch_all(&mut *tx)
            .await
            .map_err(fail("read rows"))?;
        tx.commit().await.map_err(fail("end a read"))?;
        rows.iter()
            .map(|row| decode_row(spec, row))
            .collect::<Result<_>>()
            .map(Some)
    }

    async fn store(
        &self,
        spec: &TableSpec,
        filters: &Filters,
        gap: Span,
        rows: StoredRows,
        fetched_at: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(fail("begin a store"))?;
        lock_key(&mut tx, spec, &filters.key).await?;
        delete_rows(&mut tx, spec, filters, gap).await?;
        let rows = last_row_per_key(spec, rows);
        let per_insert = ROWS_PER_INSERT.min(65_535 / spec.columns.len().max(1));
        for chunk in rows.chunks(per_insert) {
            insert_rows(&mut tx, spec, chunk).await?;
        }
        insert_coverage(
            &mut tx,
            spec,
            &filters.key,
            &Coverage {
                span: gap,
                fetched_at,
            },
        )
        .await?;
        tx.commit().await.map_err(fail("commit a store"))
    }

    async fn invalidate(
        &self,
        spec: &TableSpec,
        filters: &Filters,
        span: Span,
    ) -> Result<RemovalReport> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(fail("begin an invalidation"))?;
        lock_key(&mut tx, spec, &filters.key).await?;
        let records = coverage_records(&mut tx, spec, &filters.key).await?;
        let (kept, cut) = cut_coverage(&records, span);
        sqlx::query("DELETE FROM _cachet_sqlcache_coverage WHERE tbl = $1 AND filter_key = $2")
            .bind(&spec.name)
            .bind(&filters.key)
            .execute(&mut *tx)
            .await
            .map_err(fail("delete coverage"))?;
        for record in &kept {
            insert_coverage(&mut tx, spec, &filters.key, record).await?;
        }
        let rows_deleted = delete_rows(&mut tx, spec, filters, span).await?;
        tx.commit().await.map_err(fail("commit an invalidation"))?;
        Ok(RemovalReport {
            coverage_removed: cut,
            rows_deleted,
        })
    }

    async fn invalidate_all(&self, spec: &TableSpec) -> Result<RemovalReport> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(fail("begin an invalidation"))?;
        // Conflicts with the row locks of every store, invalidation and cleanup of the table.
        sqlx::query(AssertSqlSafe(format!(
            "LOCK TABLE \"{}\" IN SHARE ROW EXCLUSIVE MODE",
            spec.name
        )))
        .execute(&mut *tx)
        .await
        .map_err(fail("lock the table"))?;
        let coverage_removed = sqlx::query("DELETE FROM _cachet_sqlcache_coverage WHERE tbl = $1")
            .bind(&spec.name)
            .execute(&mut *tx)
            .await
            .map_err(fail("delete coverage"))?
            .rows_affected();
        let rows_deleted = sqlx::query(AssertSqlSafe(format!("DELETE FROM \"{}\"", spec.name)))
            .execute(&mut *tx)
            .await
            .map_err(fail("delete rows"))?
            .rows_affected();
        tx.commit().await.map_err(fail("commit an invalidation"))?;
        Ok(RemovalReport {
            coverage_removed,
            rows_deleted,
        })
    }

    async fn expired_keys(&self, spec: &TableSpec, cutoff: i64) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT filter_key FROM _cachet_sqlcache_coverage \
             WHERE tbl = $1 AND fetched_at <= $2",
        )
        .bind(&spec.name)
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await
        .map_err(fail("find expired coverage"))
    }

    async fn cleanup(
        &self,
        spec: &TableSpec,
        filters: &Filters,
        cutoff: i64,
    ) -> Result<RemovalReport> {
        let mut tx = self.pool.begin().await.map_err(fail("begin a cleanup"))?;
        lock_key(&mut tx, spec, &filters.key).await?;
        let coverage_removed = sqlx::query(
            "DELETE FROM _cachet_sqlcache_coverage \
             WHERE tbl = $1 AND filter_key = $2 AND fetched_at <= $3",
        )
        .bind(&spec.name)
        .bind(&filters.key)
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .map_err(fail("delete expired coverage"))?
        .rows_affected();
        let remaining = coverage_records(&mut tx, spec, &filters.key).await?;
        let mut rows_deleted = 0;
        for hole in uncovered(spec, &remaining) {
            rows_deleted += delete_rows(&mut tx, spec, filters, hole).await?;
        }
        tx.commit().await.map_err(fail("commit a cleanup"))?;
        Ok(RemovalReport {
            coverage_removed,
            rows_deleted,
        })
    }

    async fn counts(&self, spec: &TableSpec) -> Result<(u64, u64)> {
        let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{}\"",
            spec.name
        )))
        .fetch_one(&self.pool)
        .await
        .map_err(fail("count rows"))?;
        let coverage: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _cachet_sqlcache_coverage WHERE tbl = $1")
                .bind(&spec.name)
                .fetch_one(&self.pool)
                .await
                .map_err(fail("count coverage"))?;
        Ok((rows.max(0) as u64, coverage.max(0) as u64))
    }

    async fn try_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> Result<bool> {
        let taken = sqlx::query(
            "INSERT INTO _cachet_sqlcache_leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
                 expires_at = EXCLUDED.expires_at \
             WHERE _cachet_sqlcache_leases.holder = EXCLUDED.holder \
                OR _cachet_sqlcache_leases.expires_at <= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(fail("take a lease"))?
        .rows_affected();
        Ok(taken == 1)
    }

    async fn renew_lease(&self, name: &str, holder: &str, until: i64) -> Result<bool> {
        let renewed = sqlx::query(
            "UPDATE _cachet_sqlcache_leases SET expires_at = $3 WHERE name = $1 AND holder = $2",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .execute(&self.pool)
        .await
        .map_err(fail("renew a lease"))?
        .rows_affected();
        Ok(renewed == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM _cachet_sqlcache_leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(fail("release a lease"))?;
        Ok(())
    }
}

/// Turns a server error into one naming what was being done.
fn fail(operation: &str) -> impl FnOnce(sqlx::Error) -> SqlCacheError + use<> {
    let operation = operation.to_owned();
    move |source| SqlCacheError::Postgres { operation, source }
}

async fn lock_key(conn: &mut PgConnection, spec: &TableSpec, key: &str) -> Result<()> {
    sqlx::query(KEY_LOCK)
        .bind(super::lease_name(spec, key))
        .execute(conn)
        .await
        .map_err(fail("lock the filter values"))?;
    Ok(())
}

async fn coverage_records(
    conn: &mut PgConnection,
    spec: &TableSpec,
    key: &str,
) -> Result<Vec<Coverage>> {
    let rows = sqlx::query(COVERAGE_SELECT)
        .bind(&spec.name)
        .bind(key)
        .fetch_all(conn)
        .await
        .map_err(fail("read coverage"))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let read = |row: &PgRow| -> std::result::Result<_, sqlx::Error> {
            Ok((
                row.try_get::<Option<i64>, _>(0)?,
                row.try_get::<Option<i64>, _>(1)?,
                row.try_get::<Option<f64>, _>(2)?,
                row.try_get::<Option<f64>, _>(3)?,
                row.try_get::<i64, _>(4)?,
            ))
        };
        let (lo_int, hi_int, lo_float, hi_float, fetched_at) =
            read(&row).map_err(fail("read coverage"))?;
        let bounds = match (lo_int, hi_int, lo_float, hi_float) {
            (Some(lo), Some(hi), None, None) => Some((Point::Int(lo), Point::Int(hi))),
            (None, None, Some(lo), Some(hi)) => Some((Point::Float(lo), Point::Float(hi))),
            _ => None,
        };
        out.push(Coverage {
            span: coverage_span(spec, bounds)?,
            fetched_at,
        });
    }
    Ok(out)
}

async fn insert_coverage(
    conn: &mut PgConnection,
    spec: &TableSpec,
    key: &str,
    record: &Coverage,
) -> Result<()> {
    let (mut lo_int, mut hi_int, mut lo_float, mut hi_float) = (None, None, None, None);
    match coverage_bounds(spec, record.span) {
        Some((Point::Int(lo), Point::Int(hi))) => (lo_int, hi_int) = (Some(lo), Some(hi)),
        Some((lo, hi)) => (lo_float, hi_float) = (Some(lo.as_f64()), Some(hi.as_f64())),
        None => {}
    }
    sqlx::query(
        "INSERT INTO _cachet_sqlcache_coverage \
         (tbl, filter_key, lo_int, hi_int, lo_float, hi_float, fetched_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&spec.name)
    .bind(key)
    .bind(lo_int)
    .bind(hi_int)
    .bind(lo_float)
    .bind(hi_float)
    .bind(record.fetched_at)
    .execute(conn)
    .await
    .map_err(fail("record coverage"))?;
    Ok(())
}

/// Appends `TRUE AND "c" = $n ...`: one combination's rows in `span`.
fn push_conditions(
    query: &mut QueryBuilder<Postgres>,
    spec: &TableSpec,
    filters: &Filters,
    span: Span,
) -> Result<()> {
    query.push("TRUE");
    for (column, op, value) in row_conditions(spec, filters, span)? {
        query.push(format!(" AND \"{}\" {op} ", column.name));
        push_value(query, column, value)?;
    }
    Ok(())
}

async fn delete_rows(
    conn: &mut PgConnection,
    spec: &TableSpec,
    filters: &Filters,
    span: Span,
) -> Result<u64> {
    let mut query = QueryBuilder::<Postgres>::new(format!("DELETE FROM \"{}\" WHERE ", spec.name));
    push_conditions(&mut query, spec, filters, span)?;
    Ok(query
        .build()
        .execute(conn)
        .await
        .map_err(fail("delete rows"))?
        .rows_affected())
}

/// One multi-row upsert (a row with the key of a stored row replaces it, as in SQLite).
async fn insert_rows(
    conn: &mut PgConnection,
    spec: &TableSpec,
    rows: &[Vec<SqlValue>],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut query = QueryBuilder::<Postgres>::new(format!(
        "INSERT INTO \"{}\" ({}) VALUES ",
        spec.name,
        column_list(spec)
    ));
    for (i, row) in rows.iter().enumerate() {
        query.push(if i == 0 { "(" } else { ", (" });
        for (j, (column, value)) in spec.columns.iter().zip(row).enumerate() {
            if j > 0 {
                query.push(", ");
            }
            push_value(&mut query, column, value.clone())?;
        }
        query.push(")");
    }
    let key: Vec<String> = spec
        .primary_key
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect();
    let updates: Vec<String> = spec
        .columns
        .iter()
        .filter(|c| !spec.primary_key.contains(&c.name))
        .map(|c| format!("\"{0}\" = EXCLUDED.\"{0}\"", c.name))
        .collect();
    query.push(format!(" ON CONFLICT ({}) DO ", key.join(", ")));
    if updates.is_empty() {
        query.push("NOTHING");
    } else {
        query.push(format!("UPDATE SET {}", updates.join(", ")));
    }
    query
        .build()
        .execute(conn)
        .await
        .map_err(fail("insert fetched rows"))?;
    Ok(())
}

/// The rows with the last of any repeated primary key, in order: one upsert statement may not
/// touch a row twice, and in SQLite the last of them wins.
fn last_row_per_key(spec: &TableSpec, rows: StoredRows) -> StoredRows {
    let key_positions: Vec<usize> = spec
        .primary_key
        .iter()
        .filter_map(|k| spec.columns.iter().position(|c| &c.name == k))
        .collect();
    let key_of = |row: &Vec<SqlValue>| -> String {
        let parts: Vec<&SqlValue> = key_positions.iter().map(|&i| &row[i]).collect();
        format!("{parts:?}")
    };
    let mut last: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        last.insert(key_of(row), i);
    }
    if last.len() == rows.len() {
        return rows;
    }
    rows.into_iter()
        .enumerate()
        .filter(|(i, row)| last.get(&key_of(row)) == Some(i))
        .map(|(_, row)| row)
        .collect()
}

/// Binds a stored value with the PostgreSQL type of its column.
fn push_value(query: &mut QueryBuilder<Postgres>, column: &Column, value: SqlValue) -> Result<()> {
    let wrong = |value: &SqlValue| {
        SqlCacheError::value(
            &column.name,
            format!("{value:?} is not a {:?} value", column.ty),
        )
    };
    match (column.ty, value) {
        (ColumnType::Integer | ColumnType::Timestamp, SqlValue::Integer(v)) => {
            query.push_bind(v);
        }
        (ColumnType::Integer | ColumnType::Timestamp, SqlValue::Null) => {
            query.push_bind(None::<i64>);
        }
        (ColumnType::Bool, SqlValue::Integer(v)) => {
            query.push_bind(v != 0);
        }
        (ColumnType::Bool, SqlValue::Null) => {
            query.push_bind(None::<bool>);
        }
        (ColumnType::Float, SqlValue::Real(v)) => {
            query.push_bind(v);
        }
        (ColumnType::Float, SqlValue::Integer(v)) => {
            query.push_bind(v as f64);
        }
        (ColumnType::Float, SqlValue::Null) => {
            query.push_bind(None::<f64>);
        }
        (ColumnType::Text | ColumnType::Date, SqlValue::Text(v)) => {
            query.push_bind(v);
        }
        (ColumnType::Text | ColumnType::Date, SqlValue::Null) => {
            query.push_bind(None::<String>);
        }
        (ColumnType::Bytes, SqlValue::Blob(v)) => {
            query.push_bind(v);
        }
        (ColumnType::Bytes, SqlValue::Null) => {
            query.push_bind(None::<Vec<u8>>);
        }
        (_, other) => return Err(wrong(&other)),
    }
    Ok(())
}

/// A row read with the spec's column list, as stored values.
fn decode_row(spec: &TableSpec, row: &PgRow) -> Result<Vec<SqlValue>> {
    let mut values = Vec::with_capacity(spec.columns.len());
    for (i, column) in spec.columns.iter().enumerate() {
        let value = match column.ty {
            ColumnType::Integer | ColumnType::Timestamp => row
                .try_get::<Option<i64>, _>(i)
                .map(|v| v.map_or(SqlValue::Null, SqlValue::Integer)),
            ColumnType::Bool => row
                .try_get::<Option<bool>, _>(i)
                .map(|v| v.map_or(SqlValue::Null, |b| SqlValue::Integer(i64::from(b)))),
            ColumnType::Float => row
                .try_get::<Option<f64>, _>(i)
                .map(|v| v.map_or(SqlValue::Null, SqlValue::Real)),
            ColumnType::Text | ColumnType::Date => row
                .try_get::<Option<String>, _>(i)
                .map(|v| v.map_or(SqlValue::Null, SqlValue::Text)),
            ColumnType::Bytes => row
                .try_get::<Option<Vec<u8>>, _>(i)
                .map(|v| v.map_or(SqlValue::Null, SqlValue::Blob)),
        };
        values.push(value.map_err(fail("read a row"))?);
    }
    Ok(values)
}
