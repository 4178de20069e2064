//! The source of rows: what a [`SqlCache`](crate::SqlCache) calls for what it does not hold.

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::error::BoxError;

/// One request to a [`Fetcher`]: the filter values and a half-open range of the range column.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FetchRequest {
    /// The table.
    pub table: String,
    /// The filter values by column name (as serde gives them: strings, numbers, ...).
    pub filters: Map<String, Value>,
    /// The first value of the range (a `"YYYY-MM-DD"` string for dates, a number otherwise);
    /// `None` for a table without a range column.
    pub start: Option<Value>,
    /// The first value after the range (exclusive).
    pub end: Option<Value>,
}

impl FetchRequest {
    /// A filter value as a string, if it is one.
    pub fn filter_str(&self, column: &str) -> Option<&str> {
        self.filters.get(column).and_then(Value::as_str)
    }

    /// The range as dates, for a date range column.
    pub fn date_range(&self) -> Option<(&str, &str)> {
        Some((self.start.as_ref()?.as_str()?, self.end.as_ref()?.as_str()?))
    }

    /// The range as integers, for an integer or timestamp range column.
    pub fn int_range(&self) -> Option<(i64, i64)> {
        Some((self.start.as_ref()?.as_i64()?, self.end.as_ref()?.as_i64()?))
    }
}

/// Where rows come from: an API, a database, a file store.
///
/// # Contract
/// - Return every row matching the filter values with its range value in `[start, end)`
///   (an empty `Vec` when there is none: weekends, holidays, gaps in a log are fine and are
///   remembered as covered).
/// - Never return another filter value or a row outside the range: the cache refuses such a
///   batch (`SqlCacheError::FetcherContract`) and stores nothing of it.
/// - Errors are returned to the caller of `get` (as `SqlCacheError::Fetch`), never swallowed.
#[async_trait]
pub trait Fetcher<R>: Send + Sync + 'static {
    /// The rows of one request.
    async fn fetch(&self, request: &FetchRequest) -> Result<Vec<R>, BoxError>;
}
