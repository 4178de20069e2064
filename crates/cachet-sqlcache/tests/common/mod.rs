//! Where the tests' tables live: every promise is checked on each database the build
//! supports (SQLite always; PostgreSQL with the `postgres` feature and `DATABASE_URL`).

#![allow(dead_code)]

use std::fmt;

use cachet_sqlcache::{Fetcher, Result, SqlCache, SqlCacheOptions, TableSpec};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One database holding tables: opening it twice gives two caches sharing the tables, as two
/// processes would.
pub enum Place {
    /// A fresh SQLite file.
    Sqlite(tempfile::TempDir),
    /// A fresh schema of the PostgreSQL server in `DATABASE_URL`.
    #[cfg(feature = "postgres")]
    Postgres {
        /// The server.
        url: String,
        /// The schema, used by every connection of every cache opened here.
        schema: String,
    },
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Sqlite(dir) => write!(f, "SQLite in {}", dir.path().display()),
            #[cfg(feature = "postgres")]
            Place::Postgres { schema, .. } => write!(f, "PostgreSQL schema {schema}"),
        }
    }
}

/// Every place this build and environment offer, each fresh.
pub async fn places() -> Vec<Place> {
    let sqlite = Place::Sqlite(tempfile::tempdir().expect("a temporary directory"));
    #[cfg(feature = "postgres")]
    if let Some(url) = cachet_core::testing::service_env("DATABASE_URL") {
        return vec![sqlite, postgres_place(url).await];
    }
    vec![sqlite]
}

impl Place {
    /// Opens a cache of `spec` here (a new connection or pool each time).
    pub async fn open<R, F>(
        &self,
        spec: TableSpec,
        fetcher: F,
        options: SqlCacheOptions,
    ) -> Result<SqlCache<R>>
    where
        R: Serialize + DeserializeOwned + Send + 'static,
        F: Fetcher<R>,
    {
        eprintln!("on {self}");
        match self {
            Place::Sqlite(dir) => {
                SqlCache::open_with(dir.path().join("tables.sqlite"), spec, fetcher, options)
            }
            #[cfg(feature = "postgres")]
            Place::Postgres { url, schema } => {
                SqlCache::open_postgres_with(pool(url, schema).await, spec, fetcher, options).await
            }
        }
    }
}

#[cfg(feature = "postgres")]
async fn postgres_place(url: String) -> Place {
    use sqlx::Connection;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let schema = format!(
        "sqlcache_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("connect to DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut admin)
        .await
        .expect("create a test schema");
    Place::Postgres { url, schema }
}

/// A small pool whose connections use `schema`.
#[cfg(feature = "postgres")]
pub async fn pool(url: &str, schema: &str) -> sqlx::PgPool {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .expect("DATABASE_URL parses")
        .options([("search_path", schema)]);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("connect to DATABASE_URL")
}
