//! Where a table, its coverage records and its leases live: an SQLite file (embedded) or a
//! PostgreSQL database. The cache's logic (gaps, fetching, freshness) is the same for both;
//! a store only runs each step as one transaction of its database.

use async_trait::async_trait;
use serde_json::Value;

use crate::cache::RemovalReport;
use crate::error::{Result, SqlCacheError};
use crate::filters::Filters;
use crate::range::{FIRST_DAY, LAST_DAY, Point, Span, difference, normalize};
use crate::spec::{Column, ColumnType, SqlValue, TableSpec, point_sql};

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod sqlite;

/// The span that stands for "everything" in a table without a range column.
pub(crate) const WHOLE: Span = Span {
    start: Point::Int(0),
    end: Point::Int(1),
};

/// One coverage record: a range fetched for one filter-value combination, and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Coverage {
    pub(crate) span: Span,
    /// Milliseconds since the epoch, on the cache's clock.
    pub(crate) fetched_at: i64,
}

/// Rows as stored, in the spec's column order.
pub(crate) type StoredRows = Vec<Vec<SqlValue>>;

/// Decides, from one combination's coverage records, whether a range is held (fresh).
pub(crate) type CoverageCheck<'a> = &'a (dyn Fn(&[Coverage]) -> bool + Sync);

/// What the cache asks of its database. Each method that writes is one transaction, and the
/// writes of one filter-value combination are serialized, so a reader never sees a coverage
/// record without its rows.
#[async_trait]
pub(crate) trait TableStore: Send + Sync {
    /// Where the tables live, for messages.
    fn location(&self) -> &str;

    /// The coverage records of one combination.
    async fn coverage(&self, spec: &TableSpec, key: &str) -> Result<Vec<Coverage>>;

    /// In one consistent read: the combination's coverage records, and when `held` accepts
    /// them, its rows in `span` ordered by the range column then the primary key (`None`
    /// for `held` reads the rows without looking at the coverage).
    async fn read_if_held(
        &self,
        spec: &TableSpec,
        filters: &Filters,
        span: Span,
        held: Option<CoverageCheck<'_>>,
    ) -> Result<Option<StoredRows>>;

    /// Replaces the combination's rows in `gap` by `rows` and records `gap` as covered at
    /// `fetched_at`, atomically.
    async fn store(
        &self,
        spec: &TableSpec,
        filters: &Filters,
        gap: Span,
        rows: StoredRows,
        fetched_at: i64,
    ) -> Result<()>;

    /// Drops the combination's coverage and rows within `span`, atomically (records reaching
    /// beyond `span` keep their other parts).
    async fn invalidate(
        &self,
        spec: &TableSpec,
        filters: &Filters,
        span: Span,
    ) -> Result<RemovalReport>;

    /// Drops every coverage record and row of the table.
    async fn invalidate_all(&self, spec: &TableSpec) -> Result<RemovalReport>;

    /// The coverage keys of combinations with a record fetched at or before `cutoff`.
    async fn expired_keys(&self, spec: &TableSpec, cutoff: i64) -> Result<Vec<String>>;

    /// Deletes the combination's records fetched at or before `cutoff`, and its rows no
    /// remaining record covers, atomically.
    async fn cleanup(
        &self,
        spec: &TableSpec,
        filters: &Filters,
        cutoff: i64,
    ) -> Result<RemovalReport>;

    /// The table's row count and coverage record count.
    async fn counts(&self, spec: &TableSpec) -> Result<(u64, u64)>;

    /// Takes the lease `name` for `holder` until `until` (ms since the epoch) when it is
    /// free, expired at `now`, or already `holder`'s; tells whether it was taken.
    async fn try_lease(&self, name: &str, holder: &str, now: i64, until: i64) -> Result<bool>;

    /// Extends `holder`'s lease to `until`; false when `holder` no longer holds it.
    async fn renew_lease(&self, name: &str, holder: &str, until: i64) -> Result<bool>;

    /// Gives the lease up (when `holder` still holds it).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
}

/// Every value of the table's range column (`WHOLE` without one).
pub(crate) fn whole_span(spec: &TableSpec) -> Span {
    match spec.range_column().map(|c| c.ty) {
        None => WHOLE,
        Some(ColumnType::Float) => Span::new(Point::Float(f64::MIN), Point::Float(f64::MAX)),
        // Every date with a four-digit year, as text compares them (9999-12-31 excluded).
        Some(ColumnType::Date) => Span::new(Point::Int(FIRST_DAY), Point::Int(LAST_DAY)),
        Some(_) => Span::new(Point::Int(i64::MIN), Point::Int(i64::MAX)),
    }
}

/// The conditions selecting one combination's rows in `span` (the whole combination in a
/// table without a range column): column, operator, value.
pub(crate) fn row_conditions<'s>(
    spec: &'s TableSpec,
    filters: &Filters,
    span: Span,
) -> Result<Vec<(&'s Column, &'static str, SqlValue)>> {
    let mut conditions = Vec::with_capacity(filters.sql.len() + 2);
    for (name, value) in &filters.sql {
        conditions.push((spec.column_named(name)?, "=", value.clone()));
    }
    if let Some(column) = spec.range_column() {
        conditions.push((column, ">=", point_sql(column, &span.start)));
        conditions.push((column, "<", point_sql(column, &span.end)));
    }
    Ok(conditions)
}

/// The quoted column names of the spec, comma-separated, in column order.
pub(crate) fn column_list(spec: &TableSpec) -> String {
    let names: Vec<String> = spec
        .columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    names.join(", ")
}

/// The `ORDER BY` of reads: the range column, then the primary key.
pub(crate) fn row_order(spec: &TableSpec) -> String {
    let mut order: Vec<String> = spec.range.iter().map(|r| format!("\"{r}\"")).collect();
    order.extend(spec.primary_key.iter().map(|k| format!("\"{k}\"")));
    order.join(", ")
}

/// The columns a lookup index on (filters, range) covers, quoted; empty when there are none.
pub(crate) fn index_columns(spec: &TableSpec) -> Vec<String> {
    let mut columns: Vec<String> = spec.filters.iter().map(|f| format!("\"{f}\"")).collect();
    columns.extend(spec.range.iter().map(|r| format!("\"{r}\"")));
    columns
}

/// Coverage without `span`: the records kept (those cut are split around it, keeping their
/// fetch time), and how many were cut.
pub(crate) fn cut_coverage(records: &[Coverage], span: Span) -> (Vec<Coverage>, u64) {
    let mut kept = Vec::with_capacity(records.len());
    let mut cut = 0;
    for record in records {
        if record.span.intersect(&span).is_empty() {
            kept.push(*record);
            continue;
        }
        cut += 1;
        kept.extend(
            difference(record.span, &[span])
                .into_iter()
                .map(|part| Coverage {
                    span: part,
                    fetched_at: record.fetched_at,
                }),
        );
    }
    (kept, cut)
}

/// The parts of the table's range no record covers (where rows must not stay).
pub(crate) fn uncovered(spec: &TableSpec, records: &[Coverage]) -> Vec<Span> {
    let covered = normalize(records.iter().map(|r| r.span).collect());
    difference(whole_span(spec), &covered)
}

/// A coverage record's bounds as stored: `None` for a table without a range column.
pub(crate) fn coverage_bounds(spec: &TableSpec, span: Span) -> Option<(Point, Point)> {
    spec.range.as_ref().map(|_| (span.start, span.end))
}

/// A coverage record's span from its stored bounds.
pub(crate) fn coverage_span(spec: &TableSpec, bounds: Option<(Point, Point)>) -> Result<Span> {
    match (bounds, spec.range.is_some()) {
        (None, false) => Ok(WHOLE),
        (Some((lo, hi)), true) => Ok(Span::new(lo, hi)),
        _ => Err(SqlCacheError::Row {
            table: "_cachet_sqlcache_coverage".into(),
            detail: format!(
                "a coverage record of `{}` has bounds that do not fit its range column",
                spec.name
            ),
        }),
    }
}

/// The name of the lease of one combination.
pub(crate) fn lease_name(spec: &TableSpec, key: &str) -> String {
    format!("{}\u{1f}{key}", spec.name)
}

/// The columns the spec adds to the stored schema (nullable ones only), or the mismatch.
pub(crate) fn schema_difference<'s>(spec: &'s TableSpec, stored: &str) -> Result<Vec<&'s Column>> {
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
