//! The filter values of one request, checked against the spec.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Result, SqlCacheError};
use crate::spec::{Column, SqlValue, TableSpec, to_sql};

/// The filter values of one request: as JSON (for the fetcher and the coverage key) and as
/// stored values (for queries).
pub(crate) struct Filters {
    pub(crate) map: Map<String, Value>,
    pub(crate) sql: Vec<(String, SqlValue)>,
    /// The coverage key: the values in the spec's filter order, as a JSON array.
    pub(crate) key: String,
}

impl Filters {
    pub(crate) fn new(spec: &TableSpec, filters: &impl Serialize) -> Result<Filters> {
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

    pub(crate) fn from_key(spec: &TableSpec, key: &str) -> Result<Filters> {
        let values: Vec<Value> = serde_json::from_str(key).map_err(|e| SqlCacheError::Row {
            table: "_cachet_sqlcache_coverage".into(),
            detail: format!("a coverage key of `{}` is not JSON: {e}", spec.name),
        })?;
        let map: Map<String, Value> = spec.filters.iter().cloned().zip(values).collect();
        Filters::new(spec, &map)
    }
}
