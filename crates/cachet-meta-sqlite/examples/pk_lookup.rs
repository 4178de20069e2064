//! Times the SQLite index's hot paths on a 20 000-row table: `get` of a small inline entry by
//! primary key (hit and miss), `get_meta`, `get` from two threads, `record_access` batches, and
//! `put`.
//!
//! ```text
//! cargo run --release -p cachet-meta-sqlite --example pk_lookup
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use cachet_core::testing::metadata::inline_record;
use cachet_core::{AccessRecord, CacheKey, MetadataBackend, Timestamp, params};
use cachet_meta_sqlite::{SqliteConfig, SqliteMetadata};

const ROWS: u64 = 20_000;
const LOOKUPS: u64 = 200_000;

fn key(i: u64) -> CacheKey {
    CacheKey::derive("", &params! { "dataset" => "prices", "row" => i as i64 })
}

/// A small deterministic pseudo-random sequence (xorshift) over the row numbers.
struct Picker(u64);

impl Picker {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % ROWS
    }
}

fn per_op(elapsed: Duration, ops: u64) -> String {
    let us = elapsed.as_secs_f64() * 1e6 / ops as f64;
    format!(
        "{us:8.2} µs/op  {:>10.0} ops/s",
        ops as f64 / elapsed.as_secs_f64()
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    // CACHET_READ_SNAPSHOT_US=0 measures without read snapshot reuse.
    let snapshot_us: u64 = std::env::var("CACHET_READ_SNAPSHOT_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let index = SqliteConfig::new(dir.path().join("index.db"))
        .with_read_snapshot(std::time::Duration::from_micros(snapshot_us))
        .open()
        .expect("open the index");
    println!("read snapshot reuse: {snapshot_us} µs");
    let keys: Vec<CacheKey> = (0..ROWS).map(key).collect();
    let sqlite_version = rusqlite::version();
    println!("SQLite {sqlite_version}, {ROWS} rows, 200-byte inline values");

    block_on(async {
        let value = Bytes::from(vec![7u8; 200]);
        let started = Instant::now();
        for k in &keys {
            let mut record = inline_record(k, value.clone());
            record.meta.tags = vec!["prices".into()];
            index.put(record).await.expect("put");
        }
        println!(
            "put (new rows)           {}",
            per_op(started.elapsed(), ROWS)
        );

        let started = Instant::now();
        for k in keys.iter().take(5_000) {
            index
                .put(inline_record(k, value.clone()))
                .await
                .expect("put");
        }
        println!(
            "put (replace)            {}",
            per_op(started.elapsed(), 5_000)
        );

        // Warm the page cache and the statement caches of every reader.
        for k in &keys {
            index.get(k).await.expect("get");
        }

        let mut picker = Picker(0x2545_f491_4f6c_dd1d);
        let started = Instant::now();
        for _ in 0..LOOKUPS {
            let got = index.get(&keys[picker.next() as usize]).await.expect("get");
            std::hint::black_box(got.expect("hit"));
        }
        println!(
            "get (hit, inline)        {}",
            per_op(started.elapsed(), LOOKUPS)
        );

        let started = Instant::now();
        for _ in 0..LOOKUPS {
            let got = index
                .get_meta(&keys[picker.next() as usize])
                .await
                .expect("get_meta");
            std::hint::black_box(got.expect("hit"));
        }
        println!(
            "get_meta (hit)           {}",
            per_op(started.elapsed(), LOOKUPS)
        );

        let missing: Vec<CacheKey> = (ROWS..ROWS + 1000).map(key).collect();
        let started = Instant::now();
        for i in 0..LOOKUPS {
            let got = index.get(&missing[(i % 1000) as usize]).await.expect("get");
            assert!(got.is_none());
        }
        println!(
            "get (miss)               {}",
            per_op(started.elapsed(), LOOKUPS)
        );
    });

    let threads = 2;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let index: &SqliteMetadata = &index;
            let keys = &keys;
            scope.spawn(move || {
                block_on(async move {
                    let mut picker = Picker(0x9e37_79b9_7f4a_7c15 ^ t);
                    for _ in 0..LOOKUPS {
                        let got = index.get(&keys[picker.next() as usize]).await.expect("get");
                        std::hint::black_box(got);
                    }
                })
            });
        }
    });
    println!(
        "get (hit, {threads} threads)    {}  (aggregate)",
        per_op(started.elapsed(), LOOKUPS * threads)
    );

    block_on(async {
        let mut picker = Picker(0x1234_5678_9abc_def1);
        for batch in [1u64, 100, 1000] {
            let rounds = (20_000 / batch).max(20);
            let started = Instant::now();
            for round in 0..rounds {
                let accesses: Vec<AccessRecord> = (0..batch)
                    .map(|_| AccessRecord {
                        key: keys[picker.next() as usize].clone(),
                        at: Timestamp(1_700_000_000_000 + round as i64),
                        hits: 1,
                    })
                    .collect();
                index.record_access(&accesses).await.expect("record_access");
            }
            let elapsed = started.elapsed();
            println!(
                "record_access batch {batch:>4}  {:8.1} µs/batch  {:6.2} µs/record",
                elapsed.as_secs_f64() * 1e6 / rounds as f64,
                elapsed.as_secs_f64() * 1e6 / (rounds * batch) as f64
            );
        }
        let started = Instant::now();
        let stats = index.stats().await.expect("stats");
        println!(
            "stats ({} entries)     {:8.1} µs",
            stats.entries,
            started.elapsed().as_secs_f64() * 1e6
        );
    });
}
