//! The errors of the SQL cache.

/// A boxed error from a fetcher.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a [`SqlCache`](crate::SqlCache) call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlCacheError {
    /// The table spec is not usable (named field, what is wrong).
    #[error("invalid table spec ({field}): {message}")]
    Spec {
        /// The spec item at fault.
        field: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// The table exists with another schema than the spec declares.
    #[error(
        "table `{table}` exists with another schema: {detail}. Use another table name, or drop \
         the table (and its rows) to recreate it"
    )]
    SchemaMismatch {
        /// The table.
        table: String,
        /// Which column or key differs, and how.
        detail: String,
    },
    /// A value does not fit its column (or a filter/range argument is of the wrong kind).
    #[error("invalid value for column `{column}`: {detail}")]
    InvalidValue {
        /// The column.
        column: String,
        /// What is wrong.
        detail: String,
    },
    /// The fetcher failed for one gap. Rows of the gaps fetched successfully in the same call
    /// were stored and their coverage recorded: a retry fetches only what is still missing.
    #[error("fetching {filters} {range} failed ({fetched} other gaps stored): {source}")]
    Fetch {
        /// The filter values, as JSON.
        filters: String,
        /// The half-open range that failed.
        range: String,
        /// Gaps of the same call that were fetched and stored.
        fetched: usize,
        /// The fetcher's error.
        #[source]
        source: BoxError,
    },
    /// The fetcher returned a row it was not asked for (another filter value, or outside the
    /// range). Nothing of that gap was stored.
    #[error("the fetcher returned a row outside the request {request}: {detail}")]
    FetcherContract {
        /// The request, as filters and range.
        request: String,
        /// What is wrong with the row.
        detail: String,
    },
    /// A row does not convert to or from the declared columns.
    #[error("row of table `{table}`: {detail}")]
    Row {
        /// The table.
        table: String,
        /// What does not convert.
        detail: String,
    },
    /// The SQLite database failed.
    #[error("SQLite {path}: {operation}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What was being done.
        operation: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL server failed (or could not be reached).
    #[cfg(feature = "postgres")]
    #[error("PostgreSQL: {operation}: {source}")]
    Postgres {
        /// What was being done.
        operation: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

impl SqlCacheError {
    pub(crate) fn spec(field: impl Into<String>, message: impl Into<String>) -> Self {
        SqlCacheError::Spec {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn value(column: impl Into<String>, detail: impl Into<String>) -> Self {
        SqlCacheError::InvalidValue {
            column: column.into(),
            detail: detail.into(),
        }
    }
}

/// The result of SQL cache calls.
pub type Result<T, E = SqlCacheError> = std::result::Result<T, E>;
