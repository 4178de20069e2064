//! TLS through rustls (feature `tls-rustls`): the project's test server has a self-signed
//! certificate (scripts/services/start-postgres.sh), so `sslmode=require` must connect
//! encrypted and the index must work over it.
#![cfg(feature = "tls-rustls")]

mod common;

use cachet_core::MetadataBackend;
use cachet_core::testing::metadata::{sample_record, test_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_works_over_tls_with_sslmode_require() {
    let Some(url) = common::database_url() else {
        return;
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let tls_url = format!("{url}{separator}sslmode=require");
    let app = format!("cachet-tls-test-{}", std::process::id());
    let index = cachet_meta_postgres::PostgresConfig::from_url(&tls_url)
        .unwrap()
        .with_schema(common::fresh_schema("tls"))
        .with_application_name(app.clone())
        .open()
        .await
        .expect("open over TLS (the test server has a certificate: start-postgres.sh)");
    let record = sample_record(&test_key("", "over-tls"));
    index.put(record.clone()).await.unwrap();
    assert_eq!(index.get(&record.meta.key).await.unwrap(), Some(record));

    let mut admin = common::admin(&url).await;
    let encrypted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE ssl AND application_name = $1",
    )
    .bind(&app)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    let plain: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE NOT ssl AND application_name = $1",
    )
    .bind(&app)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(encrypted >= 1, "the index's connections use TLS");
    assert_eq!(plain, 0, "no connection of the index is unencrypted");
}

/// Reports what a TLS connection costs to set up (connections are pooled, so it is paid once
/// per pooled connection), and checks it stays well under the default connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_is_set_up_well_within_the_connect_timeout() {
    use sqlx::Connection;
    let Some(url) = common::database_url() else {
        return;
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let mut median = Vec::new();
    for mode in ["disable", "require"] {
        let mut times = Vec::new();
        for _ in 0..9 {
            let started = std::time::Instant::now();
            let conn = sqlx::PgConnection::connect(&format!("{url}{separator}sslmode={mode}"))
                .await
                .unwrap();
            times.push(started.elapsed());
            conn.close().await.unwrap();
        }
        times.sort();
        median.push(times[times.len() / 2]);
    }
    eprintln!(
        "connection setup, median of 9: plain {:?}, TLS {:?}",
        median[0], median[1]
    );
    assert!(median[1] < std::time::Duration::from_secs(1), "{median:?}");
}
