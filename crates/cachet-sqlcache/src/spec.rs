//! Table specs: columns, primary key, the range column, filter columns, freshness; presets.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, SqlCacheError};
use crate::range::{Point, format_date, parse_date};

/// The type of a column, and how its values look in rows (serde) and in SQLite (the crate docs
/// give the PostgreSQL types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// `i64` (SQLite INTEGER).
    Integer,
    /// `f64` (REAL).
    Float,
    /// `String` (TEXT).
    Text,
    /// `bool` (INTEGER 0/1).
    Bool,
    /// `Vec<u8>` (BLOB; in serde, a sequence of bytes).
    Bytes,
    /// A date as a `"YYYY-MM-DD"` string (TEXT, which sorts as dates do).
    Date,
    /// Milliseconds since the Unix epoch, `i64` (INTEGER).
    Timestamp,
}

impl ColumnType {
    /// The column's type in SQLite.
    pub(crate) fn sqlite(self) -> &'static str {
        match self {
            ColumnType::Integer | ColumnType::Bool | ColumnType::Timestamp => "INTEGER",
            ColumnType::Float => "REAL",
            ColumnType::Text | ColumnType::Date => "TEXT",
            ColumnType::Bytes => "BLOB",
        }
    }

    /// The column's type in PostgreSQL. Dates stay `"YYYY-MM-DD"` text, compared bytewise
    /// (`COLLATE "C"`) so that ranges compare exactly as in SQLite, whatever the database's
    /// collation.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(self) -> &'static str {
        match self {
            ColumnType::Integer | ColumnType::Timestamp => "BIGINT",
            ColumnType::Bool => "BOOLEAN",
            ColumnType::Float => "DOUBLE PRECISION",
            ColumnType::Text => "TEXT",
            ColumnType::Date => "TEXT COLLATE \"C\"",
            ColumnType::Bytes => "BYTEA",
        }
    }

    fn orders_a_range(self) -> bool {
        matches!(
            self,
            ColumnType::Integer | ColumnType::Float | ColumnType::Date | ColumnType::Timestamp
        )
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Its name (letters, digits and `_`, not starting with a digit), also the serde field name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether rows may leave it null (`Option<_>` fields).
    pub nullable: bool,
}

/// A table of the SQL cache: its columns, primary key, range column, filter columns and how
/// long what was fetched stays fresh.
///
/// ```
/// use std::time::Duration;
/// use cachet_sqlcache::{ColumnType, TableSpec};
///
/// let spec = TableSpec::new("prices")
///     .column("symbol", ColumnType::Text)
///     .column("day", ColumnType::Date)
///     .column("close", ColumnType::Float)
///     .nullable_column("volume", ColumnType::Integer)
///     .primary_key(["symbol", "day"])
///     .range("day")
///     .filter("symbol")
///     .ttl(Duration::from_secs(30 * 24 * 3600));
/// assert!(spec.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub(crate) name: String,
    pub(crate) columns: Vec<Column>,
    pub(crate) primary_key: Vec<String>,
    pub(crate) range: Option<String>,
    pub(crate) filters: Vec<String>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) recent: Option<(Duration, Duration)>,
    pub(crate) merge_distance: f64,
    pub(crate) max_concurrent_fetches: usize,
}

impl TableSpec {
    /// A table named `name`, with no column yet.
    pub fn new(name: &str) -> TableSpec {
        TableSpec {
            name: name.to_owned(),
            columns: Vec::new(),
            primary_key: Vec::new(),
            range: None,
            filters: Vec::new(),
            ttl: None,
            recent: None,
            merge_distance: 0.0,
            max_concurrent_fetches: 4,
        }
    }

    /// Adds a non-null column.
    pub fn column(mut self, name: &str, ty: ColumnType) -> TableSpec {
        self.columns.push(Column {
            name: name.to_owned(),
            ty,
            nullable: false,
        });
        self
    }

    /// Adds a nullable column (an `Option` field).
    pub fn nullable_column(mut self, name: &str, ty: ColumnType) -> TableSpec {
        self.columns.push(Column {
            name: name.to_owned(),
            ty,
            nullable: true,
        });
        self
    }

    /// The primary key (rows with the same key are one row: a refetch updates it).
    pub fn primary_key<'a>(mut self, columns: impl IntoIterator<Item = &'a str>) -> TableSpec {
        self.primary_key = columns.into_iter().map(str::to_owned).collect();
        self
    }

    /// The range column (integer, float, date or timestamp): `get` asks for a half-open range
    /// of it. Without one, each filter-value combination is fetched whole.
    pub fn range(mut self, column: &str) -> TableSpec {
        self.range = Some(column.to_owned());
        self
    }

    /// Adds an equality-filter column (e.g. `symbol`): coverage is kept per combination of
    /// filter values.
    pub fn filter(mut self, column: &str) -> TableSpec {
        self.filters.push(column.to_owned());
        self
    }

    /// What was fetched is fresh for this long (default: forever).
    pub fn ttl(mut self, ttl: Duration) -> TableSpec {
        self.ttl = Some(ttl);
        self
    }

    /// For a date or timestamp range: the part of a range within `span` of now is fresh only
    /// for `ttl` (e.g. today's prices every 5 minutes: `recent(1 day, 5 min)`).
    pub fn recent(mut self, span: Duration, ttl: Duration) -> TableSpec {
        self.recent = Some((span, ttl));
        self
    }

    /// Gaps separated by at most this much of the range column (days for dates, ms for
    /// timestamps) are fetched as one (default 0: only touching gaps merge).
    pub fn merge_gaps_within(mut self, distance: f64) -> TableSpec {
        self.merge_distance = distance;
        self
    }

    /// At most this many fetches of one `get` run at once (default 4).
    pub fn max_concurrent_fetches(mut self, n: usize) -> TableSpec {
        self.max_concurrent_fetches = n;
        self
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The columns, in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Checks the spec; `SqlCacheError::Spec` names the first problem.
    pub fn validate(&self) -> Result<()> {
        check_identifier("name", &self.name)?;
        if self.name.starts_with("_cachet") {
            return Err(SqlCacheError::spec(
                "name",
                "names starting with `_cachet` are reserved",
            ));
        }
        if self.columns.is_empty() {
            return Err(SqlCacheError::spec(
                "columns",
                "a table needs at least one column",
            ));
        }
        for (i, c) in self.columns.iter().enumerate() {
            check_identifier("column", &c.name)?;
            if self.columns[..i]
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&c.name))
            {
                return Err(SqlCacheError::spec(
                    "column",
                    format!("`{}` is declared twice", c.name),
                ));
            }
        }
        if self.primary_key.is_empty() {
            return Err(SqlCacheError::spec(
                "primary_key",
                "a table needs a primary key",
            ));
        }
        for name in self.primary_key.iter().chain(&self.filters) {
            let column = self.column_named(name)?;
            if column.nullable {
                return Err(SqlCacheError::spec(
                    "primary_key/filter",
                    format!("`{name}` is nullable; key and filter columns must not be"),
                ));
            }
        }
        if let Some(filter) = self.filters.iter().find(|f| !self.primary_key.contains(f)) {
            // Otherwise rows of two filter values with the same key would replace each other.
            return Err(SqlCacheError::spec(
                "filter",
                format!(
                    "filter column `{filter}` must be part of the primary key (rows of \
                     different `{filter}` values must not share a key)"
                ),
            ));
        }
        if let Some(range) = &self.range {
            let column = self.column_named(range)?;
            if !column.ty.orders_a_range() || column.nullable {
                return Err(SqlCacheError::spec(
                    "range",
                    format!(
                        "`{range}` must be a non-null integer, float, date or timestamp column"
                    ),
                ));
            }
            if self.filters.contains(range) {
                return Err(SqlCacheError::spec(
                    "filter",
                    format!("`{range}` is the range column"),
                ));
            }
        }
        if self.recent.is_some()
            && !matches!(
                self.range_column().map(|c| c.ty),
                Some(ColumnType::Date | ColumnType::Timestamp)
            )
        {
            return Err(SqlCacheError::spec(
                "recent",
                "a recent-part TTL needs a date or timestamp range column",
            ));
        }
        if self.max_concurrent_fetches == 0 {
            return Err(SqlCacheError::spec(
                "max_concurrent_fetches",
                "must be at least 1",
            ));
        }
        if self.merge_distance.is_nan() || self.merge_distance < 0.0 {
            return Err(SqlCacheError::spec(
                "merge_gaps_within",
                "must be zero or more",
            ));
        }
        Ok(())
    }

    pub(crate) fn column_named(&self, name: &str) -> Result<&Column> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| SqlCacheError::spec("column", format!("no column named `{name}`")))
    }

    pub(crate) fn range_column(&self) -> Option<&Column> {
        self.range
            .as_deref()
            .and_then(|name| self.columns.iter().find(|c| c.name == name))
    }

    /// The `CREATE TABLE` statement, with the database's names of the column types.
    pub(crate) fn create_sql(&self, type_name: fn(ColumnType) -> &'static str) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                format!(
                    "\"{}\" {}{}",
                    c.name,
                    type_name(c.ty),
                    if c.nullable { "" } else { " NOT NULL" }
                )
            })
            .collect();
        let key: Vec<String> = self
            .primary_key
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect();
        format!(
            "CREATE TABLE \"{}\" ({}, PRIMARY KEY ({}))",
            self.name,
            columns.join(", "),
            key.join(", ")
        )
    }

    /// The schema as recorded next to the table, to detect a changed spec on reopen.
    pub(crate) fn schema_json(&self) -> String {
        serde_json::json!({
            "columns": self.columns,
            "primary_key": self.primary_key,
            "range": self.range,
            "filters": self.filters,
        })
        .to_string()
    }

    // ------------------------------------------------------------ presets

    /// A time series: `key` (text, e.g. a symbol) + `time` (a date or timestamp), both the
    /// primary key, `key` the filter and `time` the range; add the value columns.
    pub fn time_series(name: &str, key: &str, time: &str, time_type: ColumnType) -> TableSpec {
        TableSpec::new(name)
            .column(key, ColumnType::Text)
            .column(time, time_type)
            .primary_key([key, time])
            .range(time)
            .filter(key)
    }

    /// A lookup table: one row per `key` (no range); each key is fetched once (per TTL).
    pub fn lookup_table(name: &str, key: &str, key_type: ColumnType) -> TableSpec {
        TableSpec::new(name)
            .column(key, key_type)
            .primary_key([key])
            .filter(key)
    }

    /// An append-only event log: integer `id` as primary key and range; add the columns
    /// (and filters, e.g. a stream name, which must join the primary key:
    /// `.filter("stream").primary_key(["stream", "id"])`).
    pub fn event_log(name: &str, id: &str) -> TableSpec {
        TableSpec::new(name)
            .column(id, ColumnType::Integer)
            .primary_key([id])
            .range(id)
    }
}

fn check_identifier(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(SqlCacheError::spec(
            field,
            format!("`{name}` must be 1-63 letters, digits or `_`, not starting with a digit"),
        ))
    }
}

/// A bound of a requested range: a date string, an integer (integers, timestamps) or a float.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// An integer or a timestamp in milliseconds.
    Int(i64),
    /// A float.
    Float(f64),
    /// A date, `"YYYY-MM-DD"`.
    Text(String),
}

impl From<i64> for Bound {
    fn from(v: i64) -> Bound {
        Bound::Int(v)
    }
}

impl From<f64> for Bound {
    fn from(v: f64) -> Bound {
        Bound::Float(v)
    }
}

impl From<&str> for Bound {
    fn from(v: &str) -> Bound {
        Bound::Text(v.to_owned())
    }
}

impl From<String> for Bound {
    fn from(v: String) -> Bound {
        Bound::Text(v)
    }
}

/// Converts a range bound given by a caller into a point of `column`.
pub(crate) fn bound_point(column: &Column, bound: &Bound) -> Result<Point> {
    let wrong = || {
        SqlCacheError::value(
            &column.name,
            format!("{bound:?} is not a bound of a {:?} range", column.ty),
        )
    };
    match (column.ty, bound) {
        (ColumnType::Date, Bound::Text(t)) => parse_date(t).map(Point::Int).map_err(|_| wrong()),
        (ColumnType::Integer | ColumnType::Timestamp, Bound::Int(v)) => Ok(Point::Int(*v)),
        (ColumnType::Float, Bound::Float(v)) if !v.is_nan() => Ok(Point::Float(*v)),
        (ColumnType::Float, Bound::Int(v)) => Ok(Point::Float(*v as f64)),
        _ => Err(wrong()),
    }
}

/// The point of a row's range value (as serde produced it).
pub(crate) fn value_point(column: &Column, value: &Value) -> Result<Point> {
    let wrong = || {
        SqlCacheError::value(
            &column.name,
            format!("{value} is not a {:?} value", column.ty),
        )
    };
    match column.ty {
        ColumnType::Date => parse_date(value.as_str().ok_or_else(wrong)?)
            .map(Point::Int)
            .map_err(|_| wrong()),
        ColumnType::Integer | ColumnType::Timestamp => {
            value.as_i64().map(Point::Int).ok_or_else(wrong)
        }
        ColumnType::Float => value
            .as_f64()
            .filter(|v| !v.is_nan())
            .map(Point::Float)
            .ok_or_else(wrong),
        _ => Err(wrong()),
    }
}

/// A point of `column` as the JSON value a fetcher sees (a date string, a number).
pub(crate) fn point_json(column: &Column, point: &Point) -> Value {
    match (column.ty, point) {
        (ColumnType::Date, Point::Int(days)) => Value::String(format_date(*days)),
        (_, Point::Int(v)) => Value::from(*v),
        (_, Point::Float(v)) => Value::from(*v),
    }
}

/// A value as stored in a table, in either database: SQLite's storage classes (a bool is an
/// integer 0/1, a date is text).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A point of `column` as a stored value, to compare with the stored column.
pub(crate) fn point_sql(column: &Column, point: &Point) -> SqlValue {
    use SqlValue as Sql;
    match (column.ty, point) {
        (ColumnType::Date, Point::Int(days)) => Sql::Text(format_date(*days)),
        (_, Point::Int(v)) => Sql::Integer(*v),
        (_, Point::Float(v)) => Sql::Real(*v),
    }
}

/// A row field (serde's JSON form) as the stored value of `column`.
pub(crate) fn to_sql(column: &Column, value: &Value) -> Result<SqlValue> {
    use SqlValue as Sql;
    let wrong = || {
        SqlCacheError::value(
            &column.name,
            format!("{value} is not a {:?} value", column.ty),
        )
    };
    if value.is_null() {
        return if column.nullable {
            Ok(Sql::Null)
        } else {
            Err(SqlCacheError::value(
                &column.name,
                "null in a non-null column",
            ))
        };
    }
    Ok(match column.ty {
        ColumnType::Integer | ColumnType::Timestamp => {
            Sql::Integer(value.as_i64().ok_or_else(wrong)?)
        }
        ColumnType::Float => Sql::Real(value.as_f64().ok_or_else(wrong)?),
        ColumnType::Text => Sql::Text(value.as_str().ok_or_else(wrong)?.to_owned()),
        ColumnType::Bool => Sql::Integer(i64::from(value.as_bool().ok_or_else(wrong)?)),
        ColumnType::Date => {
            let text = value.as_str().ok_or_else(wrong)?;
            parse_date(text).map_err(|_| wrong())?;
            Sql::Text(text.to_owned())
        }
        ColumnType::Bytes => {
            let items = value.as_array().ok_or_else(wrong)?;
            let bytes: Option<Vec<u8>> = items
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            Sql::Blob(bytes.ok_or_else(wrong)?)
        }
    })
}

/// A stored value of `column` as serde's JSON form.
pub(crate) fn from_sql(column: &Column, value: SqlValue) -> Result<Value> {
    use SqlValue as Sql;
    Ok(match (column.ty, value) {
        (_, Sql::Null) => Value::Null,
        (ColumnType::Bool, Sql::Integer(v)) => Value::Bool(v != 0),
        (ColumnType::Float, Sql::Integer(v)) => Value::from(v as f64),
        (_, Sql::Integer(v)) => Value::from(v),
        (_, Sql::Real(v)) => Value::from(v),
        (_, Sql::Text(t)) => Value::String(t),
        (_, Sql::Blob(b)) => Value::Array(b.into_iter().map(Value::from).collect()),
    })
}
