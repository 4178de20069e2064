//! Shared by the test files: a fresh schema of the server in `DATABASE_URL` per backend.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cachet_meta_postgres::{PostgresConfig, PostgresMetadata};

/// `DATABASE_URL`, or `None` (with a skip notice; a panic under CI) when it is not set.
pub fn database_url() -> Option<String> {
    cachet_core::testing::service_env("DATABASE_URL")
}

/// A schema name no other test (in this or another process) uses.
pub fn fresh_schema(tag: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t_{tag}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A config for a fresh schema, with small pools (many backends run at once).
pub fn fresh_config(url: &str, tag: &str) -> PostgresConfig {
    PostgresConfig::from_url(url)
        .expect("DATABASE_URL parses")
        .with_schema(fresh_schema(tag))
        .with_max_connections(4)
        .with_lock_pool_size(4)
}

/// Opens a backend on a fresh schema.
pub async fn open_fresh(url: &str, tag: &str) -> PostgresMetadata {
    fresh_config(url, tag)
        .open()
        .await
        .expect("open a fresh schema")
}

/// A direct connection for inspecting or tampering with a schema.
pub async fn admin(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.expect("connect")
}
