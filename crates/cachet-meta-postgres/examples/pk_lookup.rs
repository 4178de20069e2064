//! Latency of the hot calls over a real server: `DATABASE_URL=postgres://... cargo run
//! --release -p cachet-meta-postgres --example pk_lookup`. Uses a fresh schema, dropped at
//! the end.

use std::time::Instant;

use bytes::Bytes;
use cachet_core::testing::metadata::{inline_record, test_key};
use cachet_core::{AccessRecord, MetadataBackend, Timestamp};
use cachet_meta_postgres::PostgresConfig;

const ROWS: usize = 2_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("set DATABASE_URL");
        return;
    };
    let schema = format!("bench_{}", std::process::id());
    let index = PostgresConfig::from_url(&url)
        .unwrap()
        .with_schema(schema.clone())
        .open()
        .await
        .unwrap();
    let keys: Vec<_> = (0..ROWS)
        .map(|i| {
            test_key(
                "bench",
                &format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
            )
        })
        .collect();
    let value = Bytes::from(vec![7u8; 200]);

    let started = Instant::now();
    for key in &keys {
        index.put(inline_record(key, value.clone())).await.unwrap();
    }
    report("put, new key", started, ROWS);

    let started = Instant::now();
    for key in &keys {
        index.put(inline_record(key, value.clone())).await.unwrap();
    }
    report("put, replacing", started, ROWS);

    for _ in 0..2 {
        let started = Instant::now();
        for key in &keys {
            assert!(index.get(key).await.unwrap().is_some());
        }
        report("get, hit, inline 200 B", started, ROWS);
    }

    let started = Instant::now();
    for key in &keys {
        assert!(index.get_meta(key).await.unwrap().is_some());
    }
    report("get_meta, hit", started, ROWS);

    let miss = test_key("bench", "missing");
    let started = Instant::now();
    for _ in 0..ROWS {
        assert!(index.get(&miss).await.unwrap().is_none());
    }
    report("get, miss", started, ROWS);

    let started = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let index = index.clone();
            let keys = keys.clone();
            tokio::spawn(async move {
                for key in keys.iter().skip(t).step_by(4) {
                    index.get(key).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    report("get, hit, 4 tasks (aggregate)", started, ROWS);

    let batch: Vec<AccessRecord> = keys
        .iter()
        .take(1000)
        .map(|key| AccessRecord {
            key: key.clone(),
            at: Timestamp(1),
            hits: 1,
        })
        .collect();
    let started = Instant::now();
    for _ in 0..5 {
        index.record_access(&batch).await.unwrap();
    }
    report("record_access, batch of 1000, per record", started, 5_000);

    let mut admin = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&url).await.unwrap()
    };
    // The floor: one prepared round trip on a dedicated connection, no pool, no decoding.
    let started = Instant::now();
    for _ in 0..ROWS {
        sqlx::query("SELECT 1").execute(&mut admin).await.unwrap();
    }
    report("floor: SELECT 1 on one connection", started, ROWS);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await
        .unwrap();
}

fn report(what: &str, started: Instant, ops: usize) {
    let us = started.elapsed().as_secs_f64() * 1e6 / ops as f64;
    println!("{what:<45} {us:8.1} µs/op");
}
