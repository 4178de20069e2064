//! cachet on PostgreSQL + S3 next to the raw calls doing the same I/O, in one process.
//!
//! ```text
//! eval "$(cargo xtask services up)"                                  # PostgreSQL + moto
//! cargo run --release -p cachet-benches --bin shared                 # full run
//! cargo run --release -p cachet-benches --bin shared -- --quick      # smoke run (64 MiB)
//! ```
//!
//! The baseline is what an application would write by hand to keep the same values in the same
//! services: a row per value in a PostgreSQL table through sqlx (the same driver and pool
//! cachet uses), the value itself in the row (small values) or in an S3 object through
//! `object_store` (the same client cachet uses; multipart upload and streamed download for the
//! 256 MiB value). cachet does more per operation (hashing, framing, signing if asked, the blob
//! registry that makes garbage collection safe, deduplication); the ratio is what that costs.
//!
//! Values are random (incompressible), so compression is skipped by both. Each workload runs
//! `--runs` times (default 3) alternating which side goes first; the median is printed.

use std::time::Instant;

use bytes::Bytes;
use cachet::Cache;
use cachet_benches::{
    ChunkSource, MIB, gib_per_sec, median, ops_per_sec, peak_rss_during, random_bytes, stamp,
};
use futures_util::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sqlx::postgres::PgPoolOptions;

struct Config {
    runs: usize,
    small: usize,
    mib_values: usize,
    big: usize,
}

impl Config {
    fn from_args() -> Result<Self, String> {
        let mut quick = false;
        let mut runs = 3;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--runs" => {
                    let n = args.next().ok_or("--runs needs a number")?;
                    runs = n.parse().map_err(|_| format!("--runs {n}: not a number"))?;
                }
                "--bench" => {}
                "-h" | "--help" => {
                    println!(
                        "usage: shared [--quick] [--runs N]  (needs DATABASE_URL, S3_ENDPOINT, S3_BUCKET)"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?}; try --help")),
            }
        }
        Ok(if quick {
            Config {
                runs: runs.min(2),
                small: 300,
                mib_values: 10,
                big: 64 * MIB,
            }
        } else {
            Config {
                runs,
                small: 1_000,
                mib_values: 32,
                big: 256 * MIB,
            }
        })
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("{name} is not set: run `eval \"$(cargo xtask services up)\"` first");
        std::process::exit(2)
    })
}

/// The hand-written baseline: a table and an object store.
struct Raw {
    pool: sqlx::PgPool,
    store: Box<dyn ObjectStore>,
    prefix: String,
}

impl Raw {
    async fn put_small(&self, key: &str, value: &[u8]) {
        sqlx::query(
            "INSERT INTO raw_entries (k, object, v) VALUES ($1, NULL, $2) \
             ON CONFLICT (k) DO UPDATE SET object = NULL, v = excluded.v",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .expect("raw insert");
    }

    async fn get_small(&self, key: &str) -> Vec<u8> {
        sqlx::query_scalar::<_, Vec<u8>>("SELECT v FROM raw_entries WHERE k = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .expect("raw select")
    }

    fn path(&self, key: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{}/{key}", self.prefix))
    }

    async fn record_object(&self, key: &str) {
        sqlx::query(
            "INSERT INTO raw_entries (k, object, v) VALUES ($1, $2, NULL) \
             ON CONFLICT (k) DO UPDATE SET object = excluded.object, v = NULL",
        )
        .bind(key)
        .bind(self.path(key).to_string())
        .execute(&self.pool)
        .await
        .expect("raw insert");
    }

    async fn object_of(&self, key: &str) -> object_store::path::Path {
        let path: String = sqlx::query_scalar("SELECT object FROM raw_entries WHERE k = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .expect("raw select");
        object_store::path::Path::from(path)
    }

    async fn put_object(&self, key: &str, value: Bytes) {
        self.store
            .put(&self.path(key), value.into())
            .await
            .expect("raw object put");
        self.record_object(key).await;
    }

    async fn get_object(&self, key: &str) -> Bytes {
        let path = self.object_of(key).await;
        self.store
            .get(&path)
            .await
            .expect("raw get")
            .bytes()
            .await
            .expect("raw body")
    }

    async fn put_stream(&self, key: &str, source: &mut ChunkSource) {
        let upload = self
            .store
            .put_multipart(&self.path(key))
            .await
            .expect("raw multipart");
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 * MIB);
        while let Some(chunk) = source.next_chunk() {
            writer.wait_for_capacity(2).await.expect("raw upload");
            writer.write(chunk);
        }
        writer.finish().await.expect("raw multipart finish");
        self.record_object(key).await;
    }

    async fn read_stream(&self, key: &str) -> u64 {
        let path = self.object_of(key).await;
        let mut stream = self.store.get(&path).await.expect("raw get").into_stream();
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            total += chunk.expect("raw body").len() as u64;
        }
        total
    }
}

/// One row of the report.
struct Row {
    workload: String,
    unit: &'static str,
    cachet: f64,
    raw: f64,
    note: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let config = Config::from_args().unwrap_or_else(|e| {
        eprintln!("shared: {e}");
        std::process::exit(2)
    });
    let database = env("DATABASE_URL");
    let endpoint = env("S3_ENDPOINT");
    let bucket = env("S3_BUCKET");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("bench_{nanos}");
    let separator = if database.contains('?') { '&' } else { '?' };
    let cache = Cache::builder()
        .index(format!("{database}{separator}cachet_schema={name}"))
        .blobs(format!(
            "s3://{bucket}/{name}/cachet?endpoint={endpoint}&allow_http=true"
        ))
        .build()
        .await
        .expect("open cachet on PostgreSQL + S3");

    let raw_schema = format!("{name}_raw");
    let mut setup = <sqlx::PgConnection as sqlx::Connection>::connect(&database)
        .await
        .expect("connect to create the raw table");
    for statement in [
        format!("CREATE SCHEMA {raw_schema}"),
        format!("CREATE TABLE {raw_schema}.raw_entries (k TEXT PRIMARY KEY, object TEXT, v BYTEA)"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut setup)
            .await
            .expect("create the raw table");
    }
    sqlx::Connection::close(setup)
        .await
        .expect("close the setup connection");
    // As cachet's pool: no ping before every acquire (a dead connection fails its statement).
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .test_before_acquire(false)
        .after_connect({
            let schema = raw_schema.clone();
            move |conn, _| {
                let schema = schema.clone();
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO {schema}")))
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            }
        })
        .connect(&database)
        .await
        .expect("connect the raw pool");
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(&bucket)
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .build()
        .expect("raw object store");
    let raw = Raw {
        pool,
        store: Box::new(store),
        prefix: format!("{name}/raw"),
    };

    println!(
        "cachet on PostgreSQL + S3 (loopback: {endpoint}) vs raw sqlx + object_store; {} runs, median",
        config.runs
    );
    let mut rows = Vec::new();

    // Small values: 100 bytes (inline in the index row for cachet, a bytea column raw).
    let mut small_put = (Vec::new(), Vec::new());
    let mut small_get = (Vec::new(), Vec::new());
    let mut value = random_bytes(100, 1);
    for run in 0..config.runs {
        for side in order(run) {
            let started = Instant::now();
            for i in 0..config.small {
                stamp(&mut value, i as u64);
                let key = format!("small-{i}");
                if side == Side::Cachet {
                    cache
                        .insert_bytes(key.as_str(), value.clone())
                        .await
                        .unwrap();
                } else {
                    raw.put_small(&key, &value).await;
                }
            }
            push(
                &mut small_put,
                side,
                ops_per_sec(config.small as u64, started.elapsed()),
            );
            let started = Instant::now();
            for i in 0..config.small {
                let key = format!("small-{i}");
                let got = if side == Side::Cachet {
                    cache.get_bytes(key.as_str()).await.unwrap().unwrap().len()
                } else {
                    raw.get_small(&key).await.len()
                };
                assert_eq!(got, 100);
            }
            push(
                &mut small_get,
                side,
                ops_per_sec(config.small as u64, started.elapsed()),
            );
        }
        cache.flush().await.unwrap();
    }
    rows.push(row(
        "put 100 B",
        "ops/s",
        &small_put,
        "cachet: one index transaction",
    ));
    rows.push(row(
        "get 100 B",
        "ops/s",
        &small_get,
        "one index round trip each",
    ));

    // 1 MiB values, whole.
    let mut mib_put = (Vec::new(), Vec::new());
    let mut mib_get = (Vec::new(), Vec::new());
    let mut buf = random_bytes(MIB, 2);
    for run in 0..config.runs {
        for side in order(run) {
            let started = Instant::now();
            for i in 0..config.mib_values {
                stamp(
                    &mut buf,
                    (run * 1_000 + i) as u64 + if side == Side::Cachet { 0 } else { 1 << 40 },
                );
                let key = format!("mib-{i}");
                if side == Side::Cachet {
                    cache.insert_bytes(key.as_str(), buf.clone()).await.unwrap();
                } else {
                    raw.put_object(&key, Bytes::from(buf.clone())).await;
                }
            }
            push(
                &mut mib_put,
                side,
                gib_per_sec((config.mib_values * MIB) as u64, started.elapsed()),
            );
            let started = Instant::now();
            for i in 0..config.mib_values {
                let key = format!("mib-{i}");
                let got = if side == Side::Cachet {
                    cache.get_bytes(key.as_str()).await.unwrap().unwrap().len()
                } else {
                    raw.get_object(&key).await.len()
                };
                assert_eq!(got, MIB);
            }
            push(
                &mut mib_get,
                side,
                gib_per_sec((config.mib_values * MIB) as u64, started.elapsed()),
            );
        }
        cache.flush().await.unwrap();
    }
    rows.push(row(
        "put 1 MiB",
        "GiB/s",
        &mib_put,
        "target: <= 10% over raw",
    ));
    rows.push(row(
        "get 1 MiB",
        "GiB/s",
        &mib_get,
        "target: <= 10% over raw",
    ));

    // One big value, streamed both ways.
    let mut big_put = (Vec::new(), Vec::new());
    let mut big_get = (Vec::new(), Vec::new());
    let mut rss = (0u64, 0u64);
    let mut source = ChunkSource::random(config.big, 3);
    let label = format!("{} MiB", config.big / MIB);
    for run in 0..config.runs {
        for side in order(run) {
            source.restart((run as u64) << 8 | side as u64);
            let key = format!("big-{run}");
            let handle = tokio::runtime::Handle::current();
            let (elapsed, peak) = peak_rss_during(|| {
                tokio::task::block_in_place(|| {
                    handle.block_on(async {
                        let started = Instant::now();
                        if side == Side::Cachet {
                            let mut w = cache.writer(key.as_str()).await.unwrap();
                            while let Some(chunk) = source.next_chunk() {
                                w.write(chunk).await.unwrap();
                            }
                            w.finish().await.unwrap();
                        } else {
                            raw.put_stream(&key, &mut source).await;
                        }
                        started.elapsed()
                    })
                })
            });
            push(&mut big_put, side, gib_per_sec(config.big as u64, elapsed));
            let (elapsed, read_peak) = peak_rss_during(|| {
                tokio::task::block_in_place(|| {
                    handle.block_on(async {
                        let started = Instant::now();
                        let total = if side == Side::Cachet {
                            let mut r = cache.reader(key.as_str()).await.unwrap().unwrap();
                            let mut total = 0u64;
                            while let Some(chunk) = r.next_chunk().await.unwrap() {
                                total += chunk.len() as u64;
                            }
                            total
                        } else {
                            raw.read_stream(&key).await
                        };
                        assert_eq!(total, config.big as u64);
                        started.elapsed()
                    })
                })
            });
            push(&mut big_get, side, gib_per_sec(config.big as u64, elapsed));
            let peak = peak.unwrap_or(0).max(read_peak.unwrap_or(0));
            if side == Side::Cachet {
                rss.0 = rss.0.max(peak);
            } else {
                rss.1 = rss.1.max(peak);
            }
        }
    }
    rows.push(row(
        &format!("put {label} (stream)"),
        "GiB/s",
        &big_put,
        "target: <= 10% over raw",
    ));
    rows.push(row(
        &format!("get {label} (stream)"),
        "GiB/s",
        &big_get,
        "target: <= 10% over raw",
    ));

    println!(
        "\n{:<24} {:>6} {:>12} {:>12} {:>10}  note",
        "workload", "unit", "cachet", "raw", "raw/cachet"
    );
    for r in &rows {
        println!(
            "{:<24} {:>6} {:>12.3} {:>12.3} {:>10.3}  {}",
            r.workload,
            r.unit,
            r.cachet,
            r.raw,
            r.raw / r.cachet,
            r.note
        );
    }
    println!(
        "peak RSS rise while streaming {label}: cachet {:.1} MiB, raw {:.1} MiB",
        rss.0 as f64 / MIB as f64,
        rss.1 as f64 / MIB as f64
    );
    println!("(raw/cachet > 1 means cachet is slower by that factor; 1.10 is the 10% target)");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Cachet = 0,
    Raw = 1,
}

/// Alternate which side runs first, so warm-up and server state favour neither.
fn order(run: usize) -> [Side; 2] {
    if run % 2 == 0 {
        [Side::Cachet, Side::Raw]
    } else {
        [Side::Raw, Side::Cachet]
    }
}

fn push(samples: &mut (Vec<f64>, Vec<f64>), side: Side, value: f64) {
    match side {
        Side::Cachet => samples.0.push(value),
        Side::Raw => samples.1.push(value),
    }
}

fn row(workload: &str, unit: &'static str, samples: &(Vec<f64>, Vec<f64>), note: &str) -> Row {
    Row {
        workload: workload.to_owned(),
        unit,
        cachet: median(&samples.0),
        raw: median(&samples.1),
        note: note.to_owned(),
    }
}
