//! Times `get_many` / `get_meta_many` of 1,000-key batches against the same 1,000 keys read
//! with single `get`s, on a table of small inline entries (20 000 rows by default).
//!
//! ```text
//! cargo run --release -p cachet-meta-sqlite --example get_many
//! ROWS=1000 ROUNDS=50 cargo run --release -p cachet-meta-sqlite --example get_many
//! ```
//!
//! Single gets and batches alternate round by round, so that load from other processes
//! spreads over both. With `MODE=single|get_many|get_meta_many` the example only runs that
//! operation (after the same setup), for instruction counts that load does not disturb:
//!
//! ```text
//! MODE=get_many ROUNDS=20 valgrind --tool=callgrind \
//!     --toggle-collect='*MetadataBackend>::get_many*' target/release/examples/get_many
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use cachet_core::testing::metadata::inline_record;
use cachet_core::{CacheKey, MetadataBackend, params};
use cachet_meta_sqlite::SqliteConfig;

const BATCH: usize = 1_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn key(i: usize) -> CacheKey {
    CacheKey::derive("", &params! { "dataset" => "prices", "row" => i as i64 })
}

/// A small deterministic pseudo-random sequence (xorshift).
struct Picker(u64);

impl Picker {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

fn per_key(elapsed: Duration, keys: usize) -> f64 {
    elapsed.as_secs_f64() * 1e6 / keys as f64
}

fn main() {
    let rows = env("ROWS", 20_000);
    let rounds = env("ROUNDS", 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let index = SqliteConfig::new(dir.path().join("index.db"))
        .open()
        .expect("open the index");
    println!(
        "SQLite {}, {rows} rows, 200-byte inline values, {rounds} batches of {BATCH} random keys",
        rusqlite::version()
    );
    let keys: Vec<CacheKey> = (0..rows).map(key).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let value = Bytes::from(vec![7u8; 200]);
        for chunk in keys.chunks(1000) {
            let records = chunk
                .iter()
                .map(|k| {
                    let mut record = inline_record(k, value.clone());
                    record.meta.tags = vec!["prices".into()];
                    record
                })
                .collect();
            index
                .put_many(records, Default::default())
                .await
                .expect("put_many");
        }
        // Reads then come from the (memory-mapped) database file, not the WAL.
        index.flush().await.expect("flush");
        let mut picker = Picker(0x2545_f491_4f6c_dd1d);
        let batches: Vec<Vec<CacheKey>> = (0..rounds)
            .map(|_| {
                (0..BATCH)
                    .map(|_| keys[picker.next(rows)].clone())
                    .collect()
            })
            .collect();
        // Warm the page cache and the statement caches.
        for k in &keys {
            index.get(k).await.expect("get");
        }
        index.get_many(&batches[0]).await.expect("get_many");
        index
            .get_meta_many(&batches[0])
            .await
            .expect("get_meta_many");

        if let Ok(mode) = std::env::var("MODE") {
            for batch in &batches {
                match mode.as_str() {
                    "single" => {
                        for k in batch {
                            std::hint::black_box(index.get(k).await.expect("get"));
                        }
                    }
                    "get_many" => {
                        std::hint::black_box(index.get_many(batch).await.expect("get_many"));
                    }
                    "get_meta_many" => {
                        std::hint::black_box(
                            index.get_meta_many(batch).await.expect("get_meta_many"),
                        );
                    }
                    other => panic!("unknown MODE {other}: single, get_many or get_meta_many"),
                }
            }
            return;
        }

        let (mut single, mut many, mut meta_many) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for batch in &batches {
            let started = Instant::now();
            for k in batch {
                std::hint::black_box(index.get(k).await.expect("get").expect("hit"));
            }
            single += started.elapsed();

            let started = Instant::now();
            let got = index.get_many(batch).await.expect("get_many");
            many += started.elapsed();
            assert!(got.iter().all(Option::is_some));
            drop(got);

            let started = Instant::now();
            std::hint::black_box(index.get_meta_many(batch).await.expect("get_meta_many"));
            meta_many += started.elapsed();
        }
        let n = rounds * BATCH;
        let single = per_key(single, n);
        println!("get, one key at a time   {single:7.3} µs/key");
        for (label, total) in [("get_many", many), ("get_meta_many", meta_many)] {
            let per = per_key(total, n);
            println!(
                "{label:<24} {per:7.3} µs/key  ({:.2}x the single gets)",
                single / per
            );
        }

        let missing: Vec<CacheKey> = (rows..rows + BATCH).map(key).collect();
        let started = Instant::now();
        for _ in 0..rounds {
            let got = index.get_many(&missing).await.expect("get_many");
            assert!(got.iter().all(Option::is_none));
        }
        println!(
            "get_many, all missing    {:7.3} µs/key",
            per_key(started.elapsed(), n)
        );
    });
}
