//! Criterion benchmarks of the cachet engine through its public API.
//!
//! Every bench runs on a fresh temporary directory opened with `Cache::open` (the embedded
//! SQLite index and filesystem blobs with their defaults: LZ4, fsync on publish, no memory
//! tier), on a tokio current-thread runtime: single-threaded, like one caller. Timed loops run
//! inside one `block_on` (`iter_custom`), so the runtime's entry cost is not counted per op;
//! key strings, values and fresh directories are prepared outside the timed region.
//!
//! Reads record access times in memory and cachet writes them to the index later, in batches,
//! from spawned tasks; on a current-thread runtime those run only when the caller yields. The
//! read benches therefore run them after each sample, untimed (the caller's latency), except
//! `small/get_hit_100B_with_access_writes`, which times them (sustained throughput).
//!
//! Groups: `small` (100 B puts, hits, misses), `1MiB` (put, get), `256MiB` (streaming put and
//! get of random and arange data; `CACHET_BENCH_BIG_MIB` overrides the size), `keys` (key
//! derivation from params), `memo` (a `get_with` hit), `batch` (1,000-key batches against
//! 1,000 single calls), `memory_tier` (a 100 B hit and a miss through `Cache::get_bytes` with
//! the memory tier on, a typed `get` hit, and the raw lookups of its two candidate crates,
//! quick_cache and moka, on the same keys and values), `observability` (the same memory-tier
//! hit with nothing observing, with an event subscriber, with a `metrics` recorder installed,
//! and with a `tracing` subscriber at INFO: what each observer costs a hit).
//!
//! ```text
//! cargo bench -p cachet-benches                 # everything (about 1.5 minutes on 2 cores)
//! cargo bench -p cachet-benches -- 'small|1MiB' # a subset
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use cachet::{Cache, CacheKey, params};
use cachet_benches::{ChunkSource, MIB, random_bytes, stamp};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A fresh cache on a fresh temporary directory (the directory is removed on drop).
fn fresh_cache(rt: &Runtime) -> (TempDir, Cache) {
    let dir = tempfile::Builder::new()
        .prefix("cachet-bench-")
        .tempdir()
        .expect("temporary directory");
    let cache = rt.block_on(Cache::open(dir.path())).expect("open cache");
    (dir, cache)
}

/// Lets the tasks cachet spawned run. Reads record access times in memory and write them to
/// the index in batches (every second or 4096 distinct keys) from spawned tasks, which on a
/// current-thread runtime run only when the caller yields.
async fn run_spawned() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// Runs what cachet deferred and writes pending access times, so that no later bench is
/// charged for them.
fn settle(rt: &Runtime, cache: &Cache) {
    rt.block_on(async {
        run_spawned().await;
        cache.flush().await.expect("flush");
    });
}

/// The size of the large-value group, in MiB (256 unless `CACHET_BENCH_BIG_MIB` says so).
fn big_mib() -> usize {
    std::env::var("CACHET_BENCH_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v: &usize| v > 0)
        .unwrap_or(256)
}

fn small(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("small");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let (_dir, cache) = fresh_cache(&rt);
    let mut next = 0u64;
    let mut value = random_bytes(100, 1);
    group.bench_function("put_100B", |b| {
        b.iter_custom(|iters| {
            let keys: Vec<String> = (next..next + iters).map(|i| format!("put{i}")).collect();
            next += iters;
            rt.block_on(async {
                let start = Instant::now();
                for (i, key) in keys.iter().enumerate() {
                    stamp(&mut value, i as u64);
                    cache
                        .insert_bytes(key.as_str(), value.as_slice())
                        .await
                        .expect("put");
                }
                start.elapsed()
            })
        })
    });

    const FILLED: usize = 10_000;
    let keys: Vec<String> = (0..FILLED).map(|i| format!("hit{i}")).collect();
    rt.block_on(async {
        for (i, key) in keys.iter().enumerate() {
            stamp(&mut value, i as u64);
            cache
                .insert_bytes(key.as_str(), value.as_slice())
                .await
                .expect("prefill");
        }
    });
    let mut cursor = 0usize;
    // The caller's latency: the deferred access-time writes are run after each sample, untimed.
    group.bench_function("get_hit_100B", |b| {
        b.iter_custom(|iters| {
            let elapsed = rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    cursor = (cursor + 1) % FILLED;
                    let got = cache.get_bytes(keys[cursor].as_str()).await.expect("get");
                    black_box(got.expect("hit"));
                }
                start.elapsed()
            });
            settle(&rt, &cache);
            elapsed
        })
    });
    // Sustained single-thread throughput: the access-time batches that fell due are timed.
    group.bench_function("get_hit_100B_with_access_writes", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    cursor = (cursor + 1) % FILLED;
                    let got = cache.get_bytes(keys[cursor].as_str()).await.expect("get");
                    black_box(got.expect("hit"));
                }
                run_spawned().await;
                start.elapsed()
            })
        })
    });
    settle(&rt, &cache);

    let mut next_miss = 0u64;
    group.bench_function("get_miss", |b| {
        b.iter_custom(|iters| {
            let misses: Vec<String> = (next_miss..next_miss + iters)
                .map(|i| format!("miss{i}"))
                .collect();
            next_miss += iters;
            rt.block_on(async {
                let start = Instant::now();
                for key in &misses {
                    let got = cache.get_bytes(key.as_str()).await.expect("get");
                    assert!(black_box(got).is_none());
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn one_mib(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("1MiB");
    group
        .throughput(Throughput::Bytes(MIB as u64))
        .sample_size(30)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));

    let mut value = random_bytes(MIB, 2);
    let mut counter = 0u64;
    group.bench_function("put", |b| {
        // A fresh directory per sample keeps disk use bounded; opening and removing it is
        // not timed.
        b.iter_custom(|iters| {
            let (dir, cache) = fresh_cache(&rt);
            let keys: Vec<String> = (0..iters).map(|i| format!("v{i}")).collect();
            let elapsed = rt.block_on(async {
                let start = Instant::now();
                for key in &keys {
                    counter += 1;
                    stamp(&mut value, counter);
                    cache
                        .insert_bytes(key.as_str(), value.as_slice())
                        .await
                        .expect("put");
                }
                start.elapsed()
            });
            drop(cache);
            drop(dir);
            elapsed
        })
    });

    const VALUES: usize = 64;
    let (_dir, cache) = fresh_cache(&rt);
    let keys: Vec<String> = (0..VALUES).map(|i| format!("v{i}")).collect();
    rt.block_on(async {
        for (i, key) in keys.iter().enumerate() {
            stamp(&mut value, i as u64);
            cache
                .insert_bytes(key.as_str(), value.as_slice())
                .await
                .expect("prefill");
        }
    });
    let mut cursor = 0usize;
    group.bench_function("get", |b| {
        b.iter_custom(|iters| {
            let elapsed = rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    cursor = (cursor + 1) % VALUES;
                    let got = cache.get_bytes(keys[cursor].as_str()).await.expect("get");
                    assert_eq!(black_box(got.expect("hit")).len(), MIB);
                }
                start.elapsed()
            });
            settle(&rt, &cache);
            elapsed
        })
    });
    group.finish();
}

/// Streams `source` into `cache` under `key`.
async fn stream_put(cache: &Cache, key: &str, source: &mut ChunkSource) {
    let mut w = cache.writer(key).await.expect("writer");
    while let Some(chunk) = source.next_chunk() {
        w.write(chunk).await.expect("write");
    }
    w.finish().await.expect("finish");
}

/// Streams `key` back out of `cache`; returns the byte count.
async fn stream_get(cache: &Cache, key: &str) -> usize {
    let mut r = cache.reader(key).await.expect("reader").expect("hit");
    let mut n = 0;
    while let Some(chunk) = r.next_chunk().await.expect("read") {
        n += black_box(chunk).len();
    }
    n
}

fn big(c: &mut Criterion) {
    let rt = runtime();
    let size = big_mib() * MIB;
    let mut group = c.benchmark_group(format!("{}MiB", big_mib()));
    group
        .throughput(Throughput::Bytes(size as u64))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));

    let mut random = ChunkSource::random(size, 0);
    let mut arange = ChunkSource::arange(size, 0);
    let mut tag = 1u64;
    for (name, source, step) in [
        ("put_random", &mut random, 1u64),
        ("put_arange", &mut arange, size as u64 / 8),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (dir, cache) = fresh_cache(&rt);
                let mut elapsed = Duration::ZERO;
                for i in 0..iters {
                    // Distinct content every time: random chunks are re-stamped, arange
                    // values continue where the last one stopped.
                    source.restart(tag * step);
                    tag += 1;
                    let key = format!("big{i}");
                    elapsed += rt.block_on(async {
                        let start = Instant::now();
                        stream_put(&cache, &key, source).await;
                        start.elapsed()
                    });
                }
                drop(cache);
                drop(dir);
                elapsed
            })
        });
    }

    let (_dir, cache) = fresh_cache(&rt);
    rt.block_on(async {
        random.restart(0);
        stream_put(&cache, "random", &mut random).await;
        arange.restart(0);
        stream_put(&cache, "arange", &mut arange).await;
    });
    for (name, key) in [("get_random", "random"), ("get_arange", "arange")] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let elapsed = rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        assert_eq!(stream_get(&cache, key).await, size);
                    }
                    start.elapsed()
                });
                settle(&rt, &cache);
                elapsed
            })
        });
    }
    group.finish();
}

fn keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("keys");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    let mut window = 0i64;
    group.bench_function("derive", |b| {
        b.iter(|| {
            window += 1;
            let p = params! {
                "dataset" => black_box("sales-2026"),
                "window" => black_box(window),
                "alpha" => black_box(0.05),
                "model" => black_box("xgb"),
            };
            CacheKey::derive("", &p)
        })
    });
    group.finish();
}

/// A small serde value for the memoization bench.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Summary {
    name: String,
    mean: f64,
    count: u64,
}

fn memo(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("memo");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let (_dir, cache) = fresh_cache(&rt);
    let value = Summary {
        name: "sales".into(),
        mean: 41.5,
        count: 1_000,
    };
    rt.block_on(async {
        let key = params! { "fn" => "summary", "dataset" => "sales" };
        let first: Summary = cache
            .get_with(&key, || async { value.clone() })
            .await
            .expect("compute");
        assert_eq!(first, value);
    });
    group.bench_function("hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    // The key is derived from params on every call, as a memoized caller does.
                    let key = params! { "fn" => "summary", "dataset" => "sales" };
                    let got: Summary = cache
                        .get_with(&key, || async { unreachable!("a hit must not recompute") })
                        .await
                        .expect("get_with");
                    black_box(got);
                }
                start.elapsed()
            })
        })
    });
    settle(&rt, &cache);
    group.finish();
}

/// Batch operations against one-by-one calls on the embedded SQLite index: 1,000 small
/// (100 B, inline) values read with `get_bytes_many` (one index round trip) versus 1,000
/// `get_bytes` calls, and written with `insert_bytes_many` (one transaction) versus 1,000
/// `insert_bytes` calls. The target: the batch get at least 10x faster.
fn batch(c: &mut Criterion) {
    const BATCH: usize = 1_000;
    let rt = runtime();
    let mut group = c.benchmark_group("batch");
    group
        .throughput(Throughput::Elements(BATCH as u64))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let (_dir, cache) = fresh_cache(&rt);
    const FILLED: usize = 10 * BATCH;
    let keys: Vec<String> = (0..FILLED).map(|i| format!("batch{i}")).collect();
    let mut value = random_bytes(100, 2);
    rt.block_on(async {
        for chunk in keys.chunks(BATCH) {
            let items: Vec<(&str, Vec<u8>)> = chunk
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    stamp(&mut value, i as u64);
                    (k.as_str(), value.clone())
                })
                .collect();
            cache
                .insert_bytes_many(items, &Default::default())
                .await
                .expect("prefill");
        }
    });
    let mut round = 0usize;
    let mut next_batch = || {
        round = (round + 1) % (FILLED / BATCH);
        &keys[round * BATCH..(round + 1) * BATCH]
    };
    group.bench_function("get_1000x100B_single", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let batch = next_batch();
                elapsed += rt.block_on(async {
                    let start = Instant::now();
                    for key in batch {
                        black_box(
                            cache
                                .get_bytes(key.as_str())
                                .await
                                .expect("get")
                                .expect("hit"),
                        );
                    }
                    start.elapsed()
                });
                settle(&rt, &cache);
            }
            elapsed
        })
    });
    group.bench_function("get_1000x100B_batch", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let batch = next_batch();
                elapsed += rt.block_on(async {
                    let start = Instant::now();
                    let got = cache
                        .get_bytes_many(batch.iter().map(String::as_str))
                        .await
                        .expect("get_many");
                    assert!(black_box(got).iter().all(Option::is_some));
                    start.elapsed()
                });
                settle(&rt, &cache);
            }
            elapsed
        })
    });
    let mut next = 0u64;
    let mut fresh_keys = |n: u64| {
        let keys: Vec<String> = (next..next + n).map(|i| format!("new{i}")).collect();
        next += n;
        keys
    };
    group.bench_function("put_1000x100B_single", |b| {
        b.iter_custom(|iters| {
            let keys = fresh_keys(iters * BATCH as u64);
            rt.block_on(async {
                let start = Instant::now();
                for (i, key) in keys.iter().enumerate() {
                    stamp(&mut value, i as u64);
                    cache
                        .insert_bytes(key.as_str(), value.as_slice())
                        .await
                        .expect("put");
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("put_1000x100B_batch", |b| {
        b.iter_custom(|iters| {
            let keys = fresh_keys(iters * BATCH as u64);
            let values: Vec<Vec<u8>> = (0..keys.len())
                .map(|i| {
                    stamp(&mut value, i as u64);
                    value.clone()
                })
                .collect();
            rt.block_on(async {
                let start = Instant::now();
                for (keys, values) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
                    let items = keys.iter().map(String::as_str).zip(values.iter().cloned());
                    black_box(
                        cache
                            .insert_bytes_many(items, &Default::default())
                            .await
                            .expect("put_many"),
                    );
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

/// The memory tier: a hit through the cache, a miss (through to the durable tiers), and the
/// bare crates on the same workload (10,000 keys of `CacheKey`, 100 B `Bytes` values behind
/// an `Arc`, weighted by bytes): what the tier costs on top of the crate.
fn memory_tier(c: &mut Criterion) {
    use std::sync::Arc;
    const FILLED: usize = 10_000;
    let rt = runtime();
    let mut group = c.benchmark_group("memory_tier");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let names: Vec<String> = (0..FILLED).map(|i| format!("hit{i}")).collect();
    let (_dir, cache) = memory_tier_cache(&rt, &names);
    rt.block_on(async {
        for i in 0..FILLED {
            cache
                .insert(
                    format!("typed{i}").as_str(),
                    &Point {
                        x: i as f64,
                        y: 0.5,
                        label: "p".into(),
                    },
                )
                .await
                .expect("prefill");
        }
        for i in 0..FILLED {
            let _: Option<Point> = cache
                .get(format!("typed{i}").as_str())
                .await
                .expect("backfill");
        }
    });
    settle(&rt, &cache);
    let typed: Vec<String> = (0..FILLED).map(|i| format!("typed{i}")).collect();

    let mut cursor = 0usize;
    group.bench_function("cachet_get_bytes_hit_100B", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    cursor = (cursor + 1) % FILLED;
                    let got = cache.get_bytes(names[cursor].as_str()).await.expect("get");
                    black_box(got.expect("hit"));
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("cachet_get_typed_hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    cursor = (cursor + 1) % FILLED;
                    let got: Option<Point> = cache.get(typed[cursor].as_str()).await.expect("get");
                    black_box(got.expect("hit"));
                }
                start.elapsed()
            })
        })
    });
    let mut next_miss = 0u64;
    group.bench_function("cachet_get_bytes_miss", |b| {
        b.iter_custom(|iters| {
            let misses: Vec<String> = (next_miss..next_miss + iters)
                .map(|i| format!("miss{i}"))
                .collect();
            next_miss += iters;
            rt.block_on(async {
                let start = Instant::now();
                for key in &misses {
                    let got = cache.get_bytes(key.as_str()).await.expect("get");
                    assert!(black_box(got).is_none());
                }
                start.elapsed()
            })
        })
    });

    // The bare crates: the same keys (full `CacheKey`s, looked up by reference) and values.
    let keys: Vec<CacheKey> = names
        .iter()
        .map(|n| CacheKey::explicit("", n.as_str()).expect("key"))
        .collect();
    let entry = |i: usize| Arc::new(bytes::Bytes::from(random_bytes(100, i as u64)));
    let quick = quick_cache::sync::Cache::with_weighter(FILLED, 256 << 20, BytesWeight);
    let moka: moka::sync::Cache<CacheKey, Arc<bytes::Bytes>> = moka::sync::Cache::builder()
        .max_capacity(256 << 20)
        .weigher(|_k: &CacheKey, v: &Arc<bytes::Bytes>| v.len() as u32 + 160)
        .build();
    for (i, key) in keys.iter().enumerate() {
        quick.insert(key.clone(), entry(i));
        moka.insert(key.clone(), entry(i));
    }
    moka.run_pending_tasks();
    group.bench_function("quick_cache_get_100B", |b| {
        b.iter(|| {
            cursor = (cursor + 1) % FILLED;
            black_box(quick.get(&keys[cursor]).expect("hit"))
        })
    });
    // What a cache hit adds before the lookup: the key from a `&str`, and the clock.
    group.bench_function("key_and_clock", |b| {
        b.iter(|| {
            cursor = (cursor + 1) % FILLED;
            let key = CacheKey::explicit("", names[cursor].as_str()).expect("key");
            black_box((key, cachet::Timestamp::now()))
        })
    });
    group.bench_function("moka_get_100B", |b| {
        b.iter(|| {
            cursor = (cursor + 1) % FILLED;
            black_box(moka.get(&keys[cursor]).expect("hit"))
        })
    });
    group.finish();
}

#[derive(Clone)]
struct BytesWeight;

impl quick_cache::Weighter<CacheKey, std::sync::Arc<bytes::Bytes>> for BytesWeight {
    fn weight(&self, _key: &CacheKey, value: &std::sync::Arc<bytes::Bytes>) -> u64 {
        value.len() as u64 + 160
    }
}

#[derive(Serialize, Deserialize)]
struct Point {
    x: f64,
    y: f64,
    label: String,
}

/// A memory-tier hit (100 B, `get_bytes`) with each kind of observer: the targets are a hit
/// that costs no more than 5 ns extra with nothing installed, and no clock read on it at all.
/// An embedded cache with a 256 MiB memory tier holding a 100 B value under each of `names`
/// (its directory goes when the returned guard does).
fn memory_tier_cache(rt: &Runtime, names: &[String]) -> (tempfile::TempDir, Cache) {
    let dir = tempfile::Builder::new()
        .prefix("cachet-bench-")
        .tempdir()
        .expect("temporary directory");
    let cache = rt
        .block_on(
            Cache::builder()
                .directory(dir.path())
                .memory_tier(256 << 20)
                .build(),
        )
        .expect("open cache");
    let mut value = random_bytes(100, 1);
    rt.block_on(async {
        for (i, key) in names.iter().enumerate() {
            stamp(&mut value, i as u64);
            cache
                .insert_bytes(key.as_str(), value.as_slice())
                .await
                .expect("prefill");
        }
    });
    settle(rt, &cache);
    (dir, cache)
}

fn observability(c: &mut Criterion) {
    const FILLED: usize = 10_000;
    let rt = runtime();
    let mut group = c.benchmark_group("observability");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let names: Vec<String> = (0..FILLED).map(|i| format!("hit{i}")).collect();
    let (_dir, cache) = memory_tier_cache(&rt, &names);

    let mut cursor = 0usize;
    let mut hits = |rt: &Runtime, cache: &Cache, iters: u64, after_each: &mut dyn FnMut()| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                cursor = (cursor + 1) % FILLED;
                let got = cache.get_bytes(names[cursor].as_str()).await.expect("get");
                black_box(got.expect("hit"));
                after_each();
            }
            start.elapsed()
        })
    };

    group.bench_function("memory_hit_unobserved", |b| {
        b.iter_custom(|iters| hits(&rt, &cache, iters, &mut || {}))
    });
    // Events are built and sent; the receiver takes each one (so it never lags).
    let mut events = cache.subscribe();
    group.bench_function("memory_hit_with_event_subscriber", |b| {
        b.iter_custom(|iters| {
            hits(&rt, &cache, iters, &mut || {
                black_box(events.try_recv().expect("an event per hit"));
            })
        })
    });
    drop(events);
    // The Prometheus exporter's recorder (atomic counters, a histogram bucketer). A cache
    // binds its metric handles to the recorder installed when it is built, so this one is
    // built under it.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let (_recorded_dir, recorded) =
        metrics::with_local_recorder(&recorder, || memory_tier_cache(&rt, &names));
    group.bench_function("memory_hit_with_metrics_recorder", |b| {
        b.iter_custom(|iters| hits(&rt, &recorded, iters, &mut || {}))
    });
    assert!(
        recorder.handle().render().contains("cachet_hits_total"),
        "the hits were recorded"
    );
    // A subscriber at INFO, as in production: the debug spans exist but are disabled.
    let dispatch = tracing::Dispatch::new(InfoSubscriber);
    group.bench_function("memory_hit_with_info_tracing_subscriber", |b| {
        b.iter_custom(|iters| {
            tracing::dispatcher::with_default(&dispatch, || hits(&rt, &cache, iters, &mut || {}))
        })
    });
    group.finish();
}

/// A `tracing` subscriber that enables INFO and above and records nothing.
struct InfoSubscriber;

impl tracing::Subscriber for InfoSubscriber {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if self.enabled(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::INFO
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

criterion_group!(
    benches,
    small,
    one_mib,
    big,
    keys,
    memo,
    batch,
    memory_tier,
    observability
);
criterion_main!(benches);
