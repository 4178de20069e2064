//! A profiling probe: runs one cachet workload in a tight loop so that `perf record`,
//! `strace -c` or callgrind see only that workload, and prints its own timing.
//!
//! ```text
//! cargo build --release -p cachet-benches --example probe
//! perf record -e cpu-clock -g target/release/examples/probe get_hit 200000
//! strace -f -c target/release/examples/probe put_mib 200
//! ```
//!
//! Workloads: `put_small`, `get_hit`, `get_miss`, `put_mib`, `get_mib`, `get_mib_once` (n fresh
//! values read once each), `put_big`, `get_big`,
//! `memo`, and `steps` (times each step of a small hit and of a memoized hit separately: key
//! derivation, index lookup, inline decode and verification, MessagePack decode). The second argument is the operation count (for `*_big`: the value size in MiB,
//! one put or 5 gets). Setting `PROBE_DIR` keeps the cache in that directory (for example on
//! tmpfs, to separate the disk from the CPU work); `PROBE_PREFILL=N` first writes N 100-byte
//! entries (and `PROBE_SYNC=1` then syncs), to see how the index's size and state matter.

use std::hint::black_box;
use std::time::Instant;

use cachet::{Cache, params};
use cachet_benches::{ChunkSource, MIB, random_bytes, stamp};

fn main() {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_else(|| "get_hit".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp;
    let dir = match std::env::var_os("PROBE_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().expect("tempdir");
            tmp.path().to_path_buf()
        }
    };
    rt.block_on(async {
        let cache = Cache::open(&dir).await.expect("open");
        let small = random_bytes(100, 1);
        let mut mib = random_bytes(MIB, 2);
        let prefill_small = |count: usize| {
            let cache = &cache;
            let mut v = small.clone();
            async move {
                for i in 0..count {
                    stamp(&mut v, i as u64);
                    cache
                        .insert_bytes(format!("k{i}").as_str(), v.as_slice())
                        .await
                        .expect("prefill");
                }
            }
        };
        if let Some(n) = std::env::var("PROBE_PREFILL")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            let mut v = small.clone();
            for i in 0..n {
                stamp(&mut v, i as u64);
                cache
                    .insert_bytes(format!("pre{i}").as_str(), v.as_slice())
                    .await
                    .expect("prefill");
            }
            if std::env::var_os("PROBE_SYNC").is_some() {
                cachet_benches::sync_disks();
            }
        }
        let (ops, bytes, start) = match workload.as_str() {
            "put_small" => {
                let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
                let mut v = small.clone();
                let start = Instant::now();
                for (i, k) in keys.iter().enumerate() {
                    stamp(&mut v, i as u64);
                    cache.insert_bytes(k.as_str(), v.as_slice()).await.unwrap();
                }
                (n, 100 * n, start)
            }
            "get_hit" => {
                prefill_small(10_000).await;
                let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
                let start = Instant::now();
                for i in 0..n {
                    let got = cache.get_bytes(keys[i % 10_000].as_str()).await.unwrap();
                    black_box(got.unwrap());
                }
                (n, 100 * n, start)
            }
            "get_miss" => {
                prefill_small(10_000).await;
                let keys: Vec<String> = (0..n).map(|i| format!("miss{i}")).collect();
                let start = Instant::now();
                for k in &keys {
                    assert!(cache.get_bytes(k.as_str()).await.unwrap().is_none());
                }
                (n, 0, start)
            }
            "put_mib_after_hits" => {
                // The comparison's order: small puts, random hits, their access-time writes,
                // then the 1 MiB puts.
                prefill_small(20_000).await;
                let mut rng = cachet_benches::Rng::new(3);
                for _ in 0..100_000 {
                    let k = format!("k{}", rng.below(20_000));
                    black_box(cache.get_bytes(k.as_str()).await.unwrap().unwrap());
                }
                cache.flush().await.unwrap();
                cachet_benches::sync_disks();
                let keys: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
                let start = Instant::now();
                for (i, k) in keys.iter().enumerate() {
                    stamp(&mut mib, i as u64);
                    let t = Instant::now();
                    cache
                        .insert_bytes(k.as_str(), mib.as_slice())
                        .await
                        .unwrap();
                    if std::env::var_os("PROBE_VERBOSE").is_some() {
                        println!("put {i}: {:?}", t.elapsed());
                    }
                }
                (n, n * MIB, start)
            }
            "put_mib" => {
                let keys: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
                let start = Instant::now();
                for (i, k) in keys.iter().enumerate() {
                    stamp(&mut mib, i as u64);
                    cache
                        .insert_bytes(k.as_str(), mib.as_slice())
                        .await
                        .unwrap();
                }
                (n, n * MIB, start)
            }
            "get_mib_once" => {
                // Like the comparison: n fresh values, each read once right after the puts.
                let keys: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
                for (i, k) in keys.iter().enumerate() {
                    stamp(&mut mib, i as u64);
                    cache
                        .insert_bytes(k.as_str(), mib.as_slice())
                        .await
                        .unwrap();
                }
                // `PROBE_HITS=N`: N small hits first (their access times are written later).
                if let Some(h) = std::env::var("PROBE_HITS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    prefill_small(20_000).await;
                    let mut rng = cachet_benches::Rng::new(3);
                    for _ in 0..h {
                        let k = format!("k{}", rng.below(20_000));
                        black_box(cache.get_bytes(k.as_str()).await.unwrap().unwrap());
                    }
                    if std::env::var_os("PROBE_DRAIN").is_some() {
                        let t = Instant::now();
                        for _ in 0..4 {
                            tokio::task::yield_now().await;
                        }
                        let drained = t.elapsed();
                        let t = Instant::now();
                        cache.flush().await.unwrap();
                        println!(
                            "drain spawned access writes: {drained:?}, flush: {:?}",
                            t.elapsed()
                        );
                    }
                }
                let start = Instant::now();
                for k in &keys {
                    black_box(cache.get_bytes(k.as_str()).await.unwrap().unwrap());
                }
                (n, n * MIB, start)
            }
            "get_mib" => {
                for i in 0..64 {
                    stamp(&mut mib, i as u64);
                    cache
                        .insert_bytes(format!("m{i}").as_str(), mib.as_slice())
                        .await
                        .unwrap();
                }
                let keys: Vec<String> = (0..64).map(|i| format!("m{i}")).collect();
                let start = Instant::now();
                for i in 0..n {
                    let got = cache.get_bytes(keys[i % 64].as_str()).await.unwrap();
                    black_box(got.unwrap());
                }
                (n, n * MIB, start)
            }
            "put_big" | "get_big" => {
                // Streamed from a pre-generated 8 MiB pool, chunk by chunk (bounded memory).
                let mut src = ChunkSource::random(n * MIB, 1);
                let start = Instant::now();
                let mut w = cache.writer("big").await.unwrap();
                while let Some(c) = src.next_chunk() {
                    w.write(c).await.unwrap();
                }
                w.finish().await.unwrap();
                if workload == "put_big" {
                    (1, n * MIB, start)
                } else {
                    let start = Instant::now();
                    for _ in 0..5 {
                        let mut r = cache.reader("big").await.unwrap().unwrap();
                        while let Some(c) = r.next_chunk().await.unwrap() {
                            black_box(c);
                        }
                    }
                    (5, 5 * n * MIB, start)
                }
            }
            "memo" => {
                let key = params! { "fn" => "summary", "dataset" => "sales" };
                let _: Vec<f64> = cache
                    .get_with(&key, || async { vec![1.5; 4] })
                    .await
                    .unwrap();
                let start = Instant::now();
                for _ in 0..n {
                    let key = params! { "fn" => "summary", "dataset" => "sales" };
                    let v: Vec<f64> = cache
                        .get_with(&key, || async { unreachable!() })
                        .await
                        .unwrap();
                    black_box(v);
                }
                (n, 0, start)
            }
            "steps" => {
                steps(&cache, n).await;
                return;
            }
            other => panic!("unknown workload {other}"),
        };
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{workload}: {ops} ops in {secs:.3} s = {:.2} µs/op, {:.0} ops/s, {:.2} GiB/s",
            secs * 1e6 / ops as f64,
            ops as f64 / secs,
            bytes as f64 / secs / (1u64 << 30) as f64
        );
    });
}

/// Times the sub-steps of a 100 B hit and of a memoized hit, `n` times each.
async fn steps(cache: &Cache, n: usize) {
    use cachet::IntoCacheKey;
    const FILLED: usize = 10_000;
    let value = random_bytes(100, 1);
    for i in 0..FILLED {
        cache
            .insert_bytes(format!("k{i}").as_str(), value.as_slice())
            .await
            .unwrap();
    }
    let ns = cache.namespace_name().to_owned();
    let keys: Vec<cachet::CacheKey> = (0..FILLED)
        .map(|i| format!("k{i}").to_cache_key(&ns).unwrap())
        .collect();
    let misses: Vec<cachet::CacheKey> = (0..FILLED)
        .map(|i| format!("miss{i}").to_cache_key(&ns).unwrap())
        .collect();
    let store = cache.store();
    let index = store.metadata_backend();
    let report = |what: &str, start: Instant| {
        let ns_per_op = start.elapsed().as_secs_f64() * 1e9 / n as f64;
        println!("{what:<58} {ns_per_op:>8.0} ns/op");
    };

    let start = Instant::now();
    for i in 0..n {
        black_box(format!("k{}", i % FILLED).to_cache_key(&ns).unwrap());
    }
    report("explicit key (format + CacheKey::explicit)", start);

    let start = Instant::now();
    for i in 0..n {
        black_box(index.get(&keys[i % FILLED]).await.unwrap().unwrap());
    }
    report("index get (SQLite PK lookup + row decode), hit", start);

    let start = Instant::now();
    for i in 0..n {
        assert!(index.get(&misses[i % FILLED]).await.unwrap().is_none());
    }
    report("index get, miss", start);

    let start = Instant::now();
    for i in 0..n {
        black_box(index.get_meta(&keys[i % FILLED]).await.unwrap().unwrap());
    }
    report("index get_meta (no inline column), hit", start);

    let entries: Vec<cachet::StoredEntry> = {
        let mut v = Vec::with_capacity(FILLED);
        for k in &keys {
            v.push(store.lookup(k).await.unwrap().unwrap());
        }
        v
    };
    let start = Instant::now();
    for i in 0..n {
        black_box(store.read_raw(&entries[i % FILLED]).await.unwrap());
    }
    report(
        "store read_raw (inline decode + verify + access record)",
        start,
    );

    let start = Instant::now();
    for i in 0..n {
        black_box(store.get_bytes(&keys[i % FILLED]).await.unwrap().unwrap());
    }
    report("store get_bytes (engine, no cache layer)", start);

    let start = Instant::now();
    for i in 0..n {
        black_box(cache.get_bytes(&keys[i % FILLED]).await.unwrap().unwrap());
    }
    report("cache get_bytes (CacheKey given)", start);

    let start = Instant::now();
    for i in 0..n {
        black_box(
            cache
                .get_bytes(format!("k{}", i % FILLED).as_str())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    report("cache get_bytes (&str key formatted per call)", start);

    // Memoized hit.
    let summary = vec![1.5f64; 4];
    let p = params! { "fn" => "summary", "dataset" => "sales" };
    let _: Vec<f64> = cache
        .get_with(&p, || async { summary.clone() })
        .await
        .unwrap();
    let start = Instant::now();
    for _ in 0..n {
        let p = params! { "fn" => "summary", "dataset" => "sales" };
        black_box(p.to_cache_key(&ns).unwrap());
    }
    report("memo: params! + key derivation", start);
    let start = Instant::now();
    for _ in 0..n {
        let p = params! { "fn" => "summary", "dataset" => "sales" };
        black_box(p);
    }
    report("memo: params! alone", start);
    let mkey = p.to_cache_key(&ns).unwrap();
    let start = Instant::now();
    for _ in 0..n {
        let v: Vec<f64> = cache.get(&mkey).await.unwrap().unwrap();
        black_box(v);
    }
    report("memo: cache get::<Vec<f64>> (CacheKey given)", start);
    let start = Instant::now();
    for _ in 0..n {
        let v: Vec<f64> = cache
            .get_with(&mkey, || async { unreachable!() })
            .await
            .unwrap();
        black_box(v);
    }
    report("memo: get_with (CacheKey given)", start);
    let start = Instant::now();
    for _ in 0..n {
        let p = params! { "fn" => "summary", "dataset" => "sales" };
        let v: Vec<f64> = cache
            .get_with(&p, || async { unreachable!() })
            .await
            .unwrap();
        black_box(v);
    }
    report("memo: get_with (params! per call)", start);
}
