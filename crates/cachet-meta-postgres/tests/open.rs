//! Opening: migrations under concurrency, version checks, foreign schemas, unreachable servers.

mod common;

use std::time::{Duration, Instant};

use cachet_core::{Error, MetadataBackend};
use cachet_meta_postgres::{PostgresConfig, SCHEMA_VERSION};
use sqlx::Row;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_a_fresh_schema_all_succeed_with_one_version_row() {
    let Some(url) = common::database_url() else {
        return;
    };
    let config = common::fresh_config(&url, "race");
    let schema = config.schema().to_owned();
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let config = config.clone();
            tokio::spawn(async move { config.open().await })
        })
        .collect();
    for open in opens {
        let index = open.await.unwrap().expect("every concurrent open succeeds");
        assert_eq!(index.stats().await.unwrap().entries, 0);
    }
    let mut admin = common::admin(&url).await;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM \"{schema}\".cachet_schema_version"
    )))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "exactly one schema version row");
    assert_eq!(rows[0].get::<i64, _>(0), SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_from_many_processes_all_succeed() {
    let Some(url) = common::database_url() else {
        return;
    };
    if let Ok(schema) = std::env::var("CACHET_PG_CHILD_SCHEMA") {
        // Child process: open the shared schema and report.
        let config = PostgresConfig::from_url(&url).unwrap().with_schema(schema);
        config.open().await.expect("child open succeeds");
        return;
    }
    let schema = common::fresh_schema("procs");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..6)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "concurrent_opens_from_many_processes_all_succeed",
                    "--nocapture",
                ])
                .env("CACHET_PG_CHILD_SCHEMA", &schema)
                .env("DATABASE_URL", &url)
                .spawn()
                .expect("spawn a child test process")
        })
        .collect();
    for mut child in children {
        assert!(
            child.wait().unwrap().success(),
            "a child process failed to open"
        );
    }
    let index = PostgresConfig::from_url(&url)
        .unwrap()
        .with_schema(schema)
        .open()
        .await
        .unwrap();
    assert_eq!(index.stats().await.unwrap().entries, 0);
}

#[tokio::test]
async fn newer_schema_version_is_refused_with_a_config_error() {
    let Some(url) = common::database_url() else {
        return;
    };
    let config = common::fresh_config(&url, "newer");
    let schema = config.schema().to_owned();
    config.clone().open().await.unwrap();
    let mut admin = common::admin(&url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE \"{schema}\".cachet_schema_version SET version = {}",
        SCHEMA_VERSION + 1
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    match config.open().await {
        Err(Error::Config { field, message }) => {
            assert_eq!(field, "schema");
            assert!(message.contains("upgrade cachet"), "{message}");
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

#[tokio::test]
async fn schema_with_foreign_tables_is_refused() {
    let Some(url) = common::database_url() else {
        return;
    };
    let schema = common::fresh_schema("foreign");
    let mut admin = common::admin(&url).await;
    for sql in [
        format!("CREATE SCHEMA \"{schema}\""),
        format!("CREATE TABLE \"{schema}\".entries (x int)"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let result = PostgresConfig::from_url(&url)
        .unwrap()
        .with_schema(schema)
        .open()
        .await;
    assert!(
        matches!(result, Err(Error::Config { ref field, .. }) if field == "schema"),
        "{result:?}"
    );
}

#[tokio::test]
async fn unreachable_server_is_unavailable_within_the_retry_budget() {
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let budget = Duration::from_millis(600);
    let started = Instant::now();
    let result = PostgresConfig::from_url(&format!("postgres://nobody@127.0.0.1:{port}/db"))
        .unwrap()
        .with_retry_budget(budget)
        .open()
        .await;
    let elapsed = started.elapsed();
    match result {
        Err(e @ Error::Unavailable { .. }) => assert!(e.is_retryable()),
        other => panic!("expected Error::Unavailable, got {other:?}"),
    }
    assert!(
        elapsed >= budget && elapsed < budget + Duration::from_secs(2),
        "gave up after {elapsed:?} with a budget of {budget:?}"
    );
}

#[tokio::test]
async fn operations_on_a_lost_server_are_unavailable_after_the_budget() {
    let Some(url) = common::database_url() else {
        return;
    };
    let index = common::fresh_config(&url, "lost")
        .with_retry_budget(Duration::from_millis(300))
        .open()
        .await
        .unwrap();
    index.close().await;
    let key = cachet_core::testing::metadata::test_key("", "k");
    let result = index.get(&key).await;
    assert!(
        matches!(result, Err(Error::Unavailable { .. })),
        "{result:?}"
    );
}
