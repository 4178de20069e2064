//! The peer comparison: the same workloads through cachet and through `cacache`, in one
//! process, each store on its own temporary directory, and a table of the medians with the
//! ratio cachet/cacache and cachet's targets.
//!
//! ```text
//! cargo run --release -p cachet-benches --bin compare            # full run (a few minutes)
//! cargo run --release -p cachet-benches --bin compare -- --quick # smoke run (seconds)
//! ```
//!
//! Options: `--quick` (smaller N, 64 MiB instead of 256 MiB), `--runs N` (default 3: every
//! workload is run N times and the median is printed).
//!
//! Method: cachet runs on a tokio current-thread runtime with its defaults (`Cache::open`:
//! SQLite index, filesystem blobs with fsync, LZ4, no memory tier); cacache 13 through its sync
//! API with its defaults (SHA-256 integrity, no fsync). Each run uses fresh directories, the
//! two stores alternate which goes first, and dirty pages are written back (`sync`) between
//! workloads, untimed. Reads after writes come from the page cache for both stores. Large
//! values are streamed in 1 MiB chunks through both stores (`CacheWriter`/`reader` and
//! `cacache::SyncWriter`/`SyncReader`), from a source whose own memory is allocated before the
//! RSS baseline is taken (and the heap is trimmed first, so freed memory is not reused unseen).
//!
//! cachet writes access times of reads later, in batches, from spawned tasks; on the
//! current-thread runtime they run when the caller yields. They are run and timed right after
//! the hit loop (reported per hit, and as a sustained figure) so that they are never charged to
//! the next workload. Each run also measures the disk itself (plain 1 MiB files without and
//! with fsync), because this VM's disk speed swings several-fold between minutes.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use cachet::{Cache, params};
use cachet_benches::{
    ChunkSource, FloorMode, MIB, Rng, STREAM_CHUNK, dir_size, gib_per_sec, median, ops_per_sec,
    peak_rss_during, publish_files, random_bytes, stamp, sync_disks,
};
use serde::{Deserialize, Serialize};

/// Sizes and counts of one comparison run.
#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    runs: usize,
    small_puts: usize,
    small_gets: usize,
    misses: usize,
    mib_values: usize,
    big: usize,
    memo_hits: usize,
}

impl Config {
    fn from_args() -> Result<Self, String> {
        let mut quick = false;
        let mut runs = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--runs" => {
                    let n = args.next().ok_or("--runs needs a number")?;
                    runs = Some(n.parse().map_err(|_| format!("--runs {n}: not a number"))?);
                }
                "-h" | "--help" => {
                    println!("usage: compare [--quick] [--runs N]");
                    std::process::exit(0);
                }
                // `cargo bench` passes `--bench` to every target; ignore it.
                "--bench" => {}
                other => return Err(format!("unknown argument {other:?}; try --help")),
            }
        }
        let mut config = if quick {
            Config {
                quick,
                runs: 3,
                small_puts: 1_000,
                small_gets: 5_000,
                misses: 5_000,
                mib_values: 20,
                big: 64 * MIB,
                memo_hits: 5_000,
            }
        } else {
            Config {
                quick,
                runs: 3,
                small_puts: 20_000,
                small_gets: 100_000,
                misses: 100_000,
                mib_values: 200,
                big: 256 * MIB,
                memo_hits: 100_000,
            }
        };
        if let Some(runs) = runs {
            if runs == 0 {
                return Err("--runs must be at least 1".into());
            }
            config.runs = runs;
        }
        Ok(config)
    }

    fn big_mib(&self) -> usize {
        self.big / MIB
    }
}

/// What a figure measures, which decides its formatting and which direction is better.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    OpsPerSec,
    GibPerSec,
    /// Bytes stored on disk for the value (lower is better).
    StoredBytes,
    /// Resident memory above the baseline (lower is better).
    RssBytes,
    /// Microseconds per operation (lower is better).
    Micros,
}

impl Unit {
    fn format(self, v: f64) -> String {
        if v.is_nan() {
            return "–".into();
        }
        match self {
            Unit::OpsPerSec => format!("{} ops/s", thousands(v)),
            Unit::GibPerSec => format!("{v:.2} GiB/s"),
            Unit::StoredBytes | Unit::RssBytes => format!("{:.1} MiB", v / MIB as f64),
            Unit::Micros => format!("{v:.2} µs"),
        }
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A target for a cachet figure.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// At least this much.
    Min(f64),
    /// At most this much.
    Max(f64),
    /// At most this fraction of the raw size.
    MaxFractionOfRaw(f64),
}

/// One row of the table.
#[derive(Debug, Clone)]
struct Workload {
    name: String,
    unit: Unit,
    target: Option<Target>,
    /// The store cacache cannot do this (cachet-only row).
    cachet_only: bool,
}

/// Per-workload samples, one per run.
#[derive(Debug, Default)]
struct Samples {
    cachet: BTreeMap<String, Vec<f64>>,
    cacache: BTreeMap<String, Vec<f64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Cachet,
    Cacache,
}

impl Samples {
    fn record(&mut self, store: Store, name: &str, v: f64) {
        let map = match store {
            Store::Cachet => &mut self.cachet,
            Store::Cacache => &mut self.cacache,
        };
        map.entry(name.to_owned()).or_default().push(v);
    }

    fn median(&self, store: Store, name: &str) -> f64 {
        let map = match store {
            Store::Cachet => &self.cachet,
            Store::Cacache => &self.cacache,
        };
        map.get(name).map_or(f64::NAN, |v| median(v))
    }

    fn range(&self, store: Store, name: &str) -> Option<(f64, f64)> {
        let map = match store {
            Store::Cachet => &self.cachet,
            Store::Cacache => &self.cacache,
        };
        let v = map.get(name)?;
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (v.len() > 1).then_some((min, max))
    }
}

/// Row names (stable: the smoke test looks for them).
struct Names {
    put_small: String,
    get_hit: String,
    access_writes: String,
    get_hit_sustained: String,
    get_miss: String,
    put_mib: String,
    get_mib: String,
    put_big: String,
    get_big: String,
    rss_put: String,
    rss_get: String,
    put_arange: String,
    get_arange: String,
    stored_arange: String,
    memo: String,
    floor_nosync: String,
    floor_sync: String,
    floor_sharded: String,
}

impl Names {
    fn new(config: &Config) -> Self {
        let big = config.big_mib();
        Names {
            put_small: "put 100 B".into(),
            get_hit: "get hit 100 B".into(),
            access_writes: "  deferred access-time writes per hit".into(),
            get_hit_sustained: "  get hit 100 B incl. those writes".into(),
            get_miss: "get miss".into(),
            put_mib: "put 1 MiB".into(),
            get_mib: "get 1 MiB".into(),
            put_big: format!("put {big} MiB random (stream)"),
            get_big: format!("get {big} MiB random (stream)"),
            rss_put: format!("peak RSS, put {big} MiB"),
            rss_get: format!("peak RSS, get {big} MiB"),
            put_arange: format!("put {big} MiB arange (stream)"),
            get_arange: format!("get {big} MiB arange (stream)"),
            stored_arange: format!("stored size, {big} MiB arange"),
            memo: "memoized hit (get_with)".into(),
            floor_nosync: "1 MiB files: write + rename".into(),
            floor_sync: "1 MiB files: + fdatasync + dir fsync".into(),
            floor_sharded: "1 MiB files: + 2 new shard dirs, fsynced".into(),
        }
    }

    fn workloads(&self) -> Vec<Workload> {
        let w = |name: &String, unit, target| Workload {
            name: name.clone(),
            unit,
            target,
            cachet_only: false,
        };
        use Target::*;
        use Unit::*;
        vec![
            w(&self.put_small, OpsPerSec, Some(Min(50_000.0))),
            w(&self.get_hit, OpsPerSec, Some(Min(200_000.0))),
            Workload {
                name: self.access_writes.clone(),
                unit: Micros,
                target: None,
                cachet_only: true,
            },
            Workload {
                name: self.get_hit_sustained.clone(),
                unit: OpsPerSec,
                target: Some(Min(200_000.0)),
                cachet_only: true,
            },
            w(&self.get_miss, OpsPerSec, Some(Min(300_000.0))),
            w(&self.put_mib, GibPerSec, Some(Min(1.5))),
            w(&self.get_mib, GibPerSec, Some(Min(4.0))),
            w(&self.put_big, GibPerSec, Some(Min(1.2))),
            w(&self.get_big, GibPerSec, Some(Min(3.0))),
            w(&self.rss_put, RssBytes, Some(Max(64.0 * MIB as f64))),
            w(&self.rss_get, RssBytes, Some(Max(64.0 * MIB as f64))),
            w(&self.put_arange, GibPerSec, None),
            w(&self.get_arange, GibPerSec, None),
            w(
                &self.stored_arange,
                StoredBytes,
                Some(MaxFractionOfRaw(0.10)),
            ),
            Workload {
                name: self.memo.clone(),
                unit: Micros,
                target: Some(Max(5.0)),
                cachet_only: true,
            },
        ]
    }
}

/// What both stores run on: pre-generated keys, values and access orders.
struct Inputs {
    keys: Vec<String>,
    miss_keys: Vec<String>,
    hit_order: Vec<usize>,
    small_value: Vec<u8>,
    mib_value: Vec<u8>,
    mib_keys: Vec<String>,
}

impl Inputs {
    fn new(config: &Config) -> Self {
        let mut rng = Rng::new(7);
        Inputs {
            keys: (0..config.small_puts).map(|i| format!("k{i:08}")).collect(),
            miss_keys: (0..config.misses).map(|i| format!("miss{i:08}")).collect(),
            hit_order: (0..config.small_gets)
                .map(|_| rng.below(config.small_puts))
                .collect(),
            small_value: random_bytes(100, 1),
            mib_value: random_bytes(MIB, 2),
            mib_keys: (0..config.mib_values)
                .map(|i| format!("mib{i:05}"))
                .collect(),
        }
    }
}

/// A small serde value for the memoization workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Summary {
    name: String,
    mean: f64,
    count: u64,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn tempdir(label: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("cachet-compare-{label}-"))
        .tempdir()
        .expect("temporary directory")
}

// ------------------------------------------------------------------------------------ cachet

/// Runs what cachet deferred: reads record access times in memory and write them to the index
/// in batches (every second or 4096 distinct keys) from spawned tasks. On a current-thread
/// runtime those tasks only run when the caller yields, so without this they would land in
/// whichever workload yields next (a 1 MiB put or get) and be charged to it.
async fn settle(cache: &Cache) {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    cache.flush().await.expect("cachet flush");
}

fn cachet_open(rt: &tokio::runtime::Runtime, dir: &Path) -> Cache {
    rt.block_on(Cache::open(dir)).expect("open cachet cache")
}

/// 100 B puts, hits, misses, 1 MiB puts and gets.
fn cachet_small(inputs: &Inputs, run: u64, names: &Names, out: &mut Samples) {
    let rt = runtime();
    let dir = tempdir("cachet-small");
    let cache = cachet_open(&rt, dir.path());
    rt.block_on(async {
        let mut value = inputs.small_value.clone();
        let start = Instant::now();
        for (i, key) in inputs.keys.iter().enumerate() {
            stamp(&mut value, (run << 32) | i as u64);
            cache
                .insert_bytes(key.as_str(), value.as_slice())
                .await
                .expect("cachet put");
        }
        let put = start.elapsed();
        out.record(
            Store::Cachet,
            &names.put_small,
            ops_per_sec(inputs.keys.len() as u64, put),
        );

        let start = Instant::now();
        for &i in &inputs.hit_order {
            let got = cache
                .get_bytes(inputs.keys[i].as_str())
                .await
                .expect("cachet get")
                .expect("cachet hit");
            assert_eq!(got.len(), 100);
        }
        let get = start.elapsed();
        out.record(
            Store::Cachet,
            &names.get_hit,
            ops_per_sec(inputs.hit_order.len() as u64, get),
        );
        let start = Instant::now();
        settle(&cache).await;
        let deferred = start.elapsed();
        out.record(
            Store::Cachet,
            &names.access_writes,
            deferred.as_secs_f64() * 1e6 / inputs.hit_order.len() as f64,
        );
        out.record(
            Store::Cachet,
            &names.get_hit_sustained,
            ops_per_sec(inputs.hit_order.len() as u64, get + deferred),
        );

        let start = Instant::now();
        for key in &inputs.miss_keys {
            let got = cache.get_bytes(key.as_str()).await.expect("cachet miss");
            assert!(got.is_none());
        }
        let miss = start.elapsed();
        out.record(
            Store::Cachet,
            &names.get_miss,
            ops_per_sec(inputs.miss_keys.len() as u64, miss),
        );
        settle(&cache).await;
    });
    sync_disks();

    rt.block_on(async {
        let mut value = inputs.mib_value.clone();
        let start = Instant::now();
        for (i, key) in inputs.mib_keys.iter().enumerate() {
            stamp(&mut value, (run << 32) | i as u64);
            cache
                .insert_bytes(key.as_str(), value.as_slice())
                .await
                .expect("cachet put 1 MiB");
        }
        let put = start.elapsed();
        let bytes = (inputs.mib_keys.len() * MIB) as u64;
        out.record(Store::Cachet, &names.put_mib, gib_per_sec(bytes, put));

        let start = Instant::now();
        for key in &inputs.mib_keys {
            let got = cache
                .get_bytes(key.as_str())
                .await
                .expect("cachet get 1 MiB")
                .expect("cachet 1 MiB hit");
            assert_eq!(got.len(), MIB);
        }
        let get = start.elapsed();
        out.record(Store::Cachet, &names.get_mib, gib_per_sec(bytes, get));
        settle(&cache).await;
    });
    drop(cache);
    drop(rt);
    drop(dir);
    sync_disks();
}

/// Streams `source` into a fresh cachet cache and reads it back: throughput and peak RSS.
/// Returns the directory's stored bytes.
fn cachet_big(
    source: &mut ChunkSource,
    put_name: &str,
    get_name: &str,
    rss: Option<(&str, &str)>,
    out: &mut Samples,
) -> u64 {
    let rt = runtime();
    let dir = tempdir("cachet-big");
    let cache = cachet_open(&rt, dir.path());
    let total = source.total();
    let key = "big-value";
    let ((), put_rss) = peak_rss_during(|| {
        rt.block_on(async {
            let start = Instant::now();
            let mut w = cache.writer(key).await.expect("cachet writer");
            while let Some(chunk) = source.next_chunk() {
                w.write(chunk).await.expect("cachet write");
            }
            w.finish().await.expect("cachet finish");
            out.record(
                Store::Cachet,
                put_name,
                gib_per_sec(total as u64, start.elapsed()),
            );
        })
    });
    sync_disks();
    let ((), get_rss) = peak_rss_during(|| {
        rt.block_on(async {
            let start = Instant::now();
            let mut r = cache
                .reader(key)
                .await
                .expect("cachet reader")
                .expect("cachet big hit");
            let mut n = 0usize;
            while let Some(chunk) = r.next_chunk().await.expect("cachet read") {
                n += black_box(chunk).len();
            }
            assert_eq!(n, total);
            out.record(
                Store::Cachet,
                get_name,
                gib_per_sec(total as u64, start.elapsed()),
            );
            settle(&cache).await;
        })
    });
    if let Some((rss_put, rss_get)) = rss {
        record_rss(out, Store::Cachet, rss_put, put_rss);
        record_rss(out, Store::Cachet, rss_get, get_rss);
    }
    drop(cache);
    drop(rt);
    let stored = dir_size(dir.path()).0;
    drop(dir);
    sync_disks();
    stored
}

/// `get_with` on a value that is already cached, with the key derived from params each time.
fn cachet_memo(config: &Config, names: &Names, out: &mut Samples) {
    let rt = runtime();
    let dir = tempdir("cachet-memo");
    let cache = cachet_open(&rt, dir.path());
    let expected = Summary {
        name: "sales".into(),
        mean: 41.5,
        count: 1_000,
    };
    rt.block_on(async {
        let compute = || async { expected.clone() };
        let first: Summary = cache
            .get_with(
                &params! { "fn" => "summary", "dataset" => "sales" },
                compute,
            )
            .await
            .expect("cachet get_with (compute)");
        assert_eq!(first, expected);
        let start = Instant::now();
        for _ in 0..config.memo_hits {
            let got: Summary = cache
                .get_with(
                    &params! { "fn" => "summary", "dataset" => "sales" },
                    || async { panic!("a memoized hit must not recompute") },
                )
                .await
                .expect("cachet get_with (hit)");
            assert_eq!(got.count, 1_000);
        }
        let per_op = start.elapsed().as_secs_f64() * 1e6 / config.memo_hits as f64;
        out.record(Store::Cachet, &names.memo, per_op);
    });
}

// ----------------------------------------------------------------------------------- cacache

/// The same small workloads through cacache's sync API.
fn cacache_small(inputs: &Inputs, run: u64, names: &Names, out: &mut Samples) {
    let dir = tempdir("cacache-small");
    let path = dir.path();
    let mut value = inputs.small_value.clone();
    let start = Instant::now();
    for (i, key) in inputs.keys.iter().enumerate() {
        stamp(&mut value, (run << 32) | i as u64);
        cacache::write_sync(path, key, &value).expect("cacache put");
    }
    let put = start.elapsed();
    out.record(
        Store::Cacache,
        &names.put_small,
        ops_per_sec(inputs.keys.len() as u64, put),
    );

    let start = Instant::now();
    for &i in &inputs.hit_order {
        let got = cacache::read_sync(path, &inputs.keys[i]).expect("cacache get");
        assert_eq!(got.len(), 100);
    }
    let get = start.elapsed();
    out.record(
        Store::Cacache,
        &names.get_hit,
        ops_per_sec(inputs.hit_order.len() as u64, get),
    );

    let start = Instant::now();
    for key in &inputs.miss_keys {
        match cacache::read_sync(path, key) {
            Err(cacache::Error::EntryNotFound(..)) => {}
            other => panic!("cacache miss returned {other:?}"),
        }
    }
    let miss = start.elapsed();
    out.record(
        Store::Cacache,
        &names.get_miss,
        ops_per_sec(inputs.miss_keys.len() as u64, miss),
    );
    sync_disks();

    let mut value = inputs.mib_value.clone();
    let start = Instant::now();
    for (i, key) in inputs.mib_keys.iter().enumerate() {
        stamp(&mut value, (run << 32) | i as u64);
        cacache::write_sync(path, key, &value).expect("cacache put 1 MiB");
    }
    let put = start.elapsed();
    let bytes = (inputs.mib_keys.len() * MIB) as u64;
    out.record(Store::Cacache, &names.put_mib, gib_per_sec(bytes, put));

    let start = Instant::now();
    for key in &inputs.mib_keys {
        let got = cacache::read_sync(path, key).expect("cacache get 1 MiB");
        assert_eq!(got.len(), MIB);
    }
    let get = start.elapsed();
    out.record(Store::Cacache, &names.get_mib, gib_per_sec(bytes, get));
    drop(dir);
    sync_disks();
}

/// Streams `source` into cacache (`SyncWriter`) and back (`SyncReader` + integrity check).
fn cacache_big(
    source: &mut ChunkSource,
    put_name: &str,
    get_name: &str,
    rss: Option<(&str, &str)>,
    out: &mut Samples,
) -> u64 {
    let dir = tempdir("cacache-big");
    let path = dir.path();
    let total = source.total();
    let key = "big-value";
    let ((), put_rss) = peak_rss_during(|| {
        let start = Instant::now();
        let mut w = cacache::SyncWriter::create(path, key).expect("cacache writer");
        while let Some(chunk) = source.next_chunk() {
            w.write_all(chunk).expect("cacache write");
        }
        w.commit().expect("cacache commit");
        out.record(
            Store::Cacache,
            put_name,
            gib_per_sec(total as u64, start.elapsed()),
        );
    });
    sync_disks();
    let mut buf = vec![0u8; STREAM_CHUNK];
    let ((), get_rss) = peak_rss_during(|| {
        let start = Instant::now();
        let mut r = cacache::SyncReader::open(path, key).expect("cacache reader");
        let mut n = 0usize;
        loop {
            let got = r.read(&mut buf).expect("cacache read");
            if got == 0 {
                break;
            }
            n += black_box(&buf[..got]).len();
        }
        r.check().expect("cacache integrity");
        assert_eq!(n, total);
        out.record(
            Store::Cacache,
            get_name,
            gib_per_sec(total as u64, start.elapsed()),
        );
    });
    if let Some((rss_put, rss_get)) = rss {
        record_rss(out, Store::Cacache, rss_put, put_rss);
        record_rss(out, Store::Cacache, rss_get, get_rss);
    }
    let stored = dir_size(path).0;
    drop(dir);
    sync_disks();
    stored
}

fn record_rss(out: &mut Samples, store: Store, name: &str, rise: Option<u64>) {
    out.record(store, name, rise.map_or(f64::NAN, |b| b as f64));
}

/// The filesystem's own floor for 1 MiB blobs during this run (the disk's speed swings 2-8x
/// between minutes on this VM): the same count of files, written without fsync, with fsync,
/// and with fsync into fresh `xx/yy/` shard directories (cachet's layout for its first blobs).
fn fs_floor(config: &Config, names: &Names, out: &mut Samples) {
    let mut data = random_bytes(MIB, 9);
    for (mode, name) in [
        (FloorMode::NoSync, &names.floor_nosync),
        (FloorMode::DataAndDirSync, &names.floor_sync),
        (FloorMode::ShardedFreshDirs, &names.floor_sharded),
    ] {
        let dir = tempdir("floor");
        let gib = publish_files(dir.path(), mode, config.mib_values, MIB, &mut data);
        out.record(Store::Cachet, name, gib);
        drop(dir);
        sync_disks();
    }
}

// ------------------------------------------------------------------------------------ report

fn print_table(config: &Config, names: &Names, samples: &Samples) {
    let raw = config.big as f64;
    let header = [
        "workload",
        "cachet",
        "target",
        "met",
        "cacache",
        "cachet/cacache",
    ];
    let mut rows: Vec<[String; 6]> = Vec::new();
    for w in names.workloads() {
        let c = samples.median(Store::Cachet, &w.name);
        let p = samples.median(Store::Cacache, &w.name);
        let mut cachet = w.unit.format(c);
        if w.unit == Unit::StoredBytes && !c.is_nan() {
            cachet.push_str(&format!(" ({:.2}% of raw)", c / raw * 100.0));
        }
        if let Some((lo, hi)) = samples.range(Store::Cachet, &w.name) {
            cachet.push_str(&format!(" [{}–{}]", short(w.unit, lo), short(w.unit, hi)));
        }
        let (target, met) = match w.target {
            None => ("–".to_owned(), "–".to_owned()),
            Some(t) => {
                let (text, ok, ratio) = match t {
                    Target::Min(v) => (format!("≥ {}", w.unit.format(v)), c >= v, c / v),
                    Target::Max(v) => (format!("≤ {}", w.unit.format(v)), c <= v, c / v),
                    Target::MaxFractionOfRaw(f) => (
                        format!("≤ {:.0}% of raw", f * 100.0),
                        c <= f * raw,
                        c / (f * raw),
                    ),
                };
                let met = if c.is_nan() {
                    "n/a".to_owned()
                } else if ok {
                    format!("yes ({ratio:.2}x)")
                } else {
                    format!("NO ({ratio:.2}x)")
                };
                (text, met)
            }
        };
        let (peer, ratio) = if w.cachet_only {
            ("(cachet only)".to_owned(), "–".to_owned())
        } else {
            let mut peer = w.unit.format(p);
            if w.unit == Unit::StoredBytes && !p.is_nan() {
                peer.push_str(&format!(" ({:.0}% of raw)", p / raw * 100.0));
            }
            if let Some((lo, hi)) = samples.range(Store::Cacache, &w.name) {
                peer.push_str(&format!(" [{}–{}]", short(w.unit, lo), short(w.unit, hi)));
            }
            let ratio = if c.is_nan() || p.is_nan() || p == 0.0 {
                "–".to_owned()
            } else {
                format!("{:.2}", c / p)
            };
            (peer, ratio)
        };
        rows.push([w.name, cachet, target, met, peer, ratio]);
    }
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(&header.map(str::to_owned));
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in &rows {
        line(row);
    }
    println!();
    println!("The disk during these runs (plain files, no store; median [min–max]):");
    for name in [&names.floor_nosync, &names.floor_sync, &names.floor_sharded] {
        let m = samples.median(Store::Cachet, name);
        let range = samples
            .range(Store::Cachet, name)
            .map(|(lo, hi)| format!(" [{lo:.2}–{hi:.2}]"))
            .unwrap_or_default();
        println!("  {name:<40} {}{range}", Unit::GibPerSec.format(m));
    }
}

/// A compact number for min–max ranges.
fn short(unit: Unit, v: f64) -> String {
    match unit {
        Unit::OpsPerSec if v >= 1e4 => format!("{:.0}k", v / 1e3),
        Unit::OpsPerSec if v >= 1e3 => format!("{:.1}k", v / 1e3),
        Unit::OpsPerSec => format!("{v:.0}"),
        Unit::GibPerSec => format!("{v:.2}"),
        Unit::StoredBytes | Unit::RssBytes => format!("{:.1}", v / MIB as f64),
        Unit::Micros => format!("{v:.2}"),
    }
}

fn main() {
    let config = match Config::from_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("compare: {e}");
            std::process::exit(2);
        }
    };
    let names = Names::new(&config);
    let inputs = Inputs::new(&config);
    let mut samples = Samples::default();
    println!(
        "cachet vs cacache 13.1 (sync API, SHA-256): {} runs{}; N = {} puts / {} hits / {} misses \
         of 100 B, {} x 1 MiB, {} MiB large values",
        config.runs,
        if config.quick { ", quick mode" } else { "" },
        config.small_puts,
        config.small_gets,
        config.misses,
        config.mib_values,
        config.big_mib(),
    );
    let started = Instant::now();
    // Allocated (and touched) before any RSS baseline, reused by every run.
    let mut random = ChunkSource::random(config.big, 0);
    let mut arange = ChunkSource::arange(config.big, 0);
    for run in 0..config.runs as u64 {
        let cachet_first = run % 2 == 0;
        let stores = if cachet_first {
            [Store::Cachet, Store::Cacache]
        } else {
            [Store::Cacache, Store::Cachet]
        };
        fs_floor(&config, &names, &mut samples);
        for store in stores {
            match store {
                Store::Cachet => cachet_small(&inputs, run, &names, &mut samples),
                Store::Cacache => cacache_small(&inputs, run, &names, &mut samples),
            }
        }
        for (i, store) in stores.into_iter().enumerate() {
            random.restart(run * 4 + i as u64 + 1);
            let rss = Some((names.rss_put.as_str(), names.rss_get.as_str()));
            match store {
                Store::Cachet => cachet_big(
                    &mut random,
                    &names.put_big,
                    &names.get_big,
                    rss,
                    &mut samples,
                ),
                Store::Cacache => cacache_big(
                    &mut random,
                    &names.put_big,
                    &names.get_big,
                    rss,
                    &mut samples,
                ),
            };
        }
        for (i, store) in stores.into_iter().enumerate() {
            arange.restart((run * 4 + i as u64) * 1_000_000_000);
            let (put, get) = (&names.put_arange, &names.get_arange);
            let stored = match store {
                Store::Cachet => cachet_big(&mut arange, put, get, None, &mut samples),
                Store::Cacache => cacache_big(&mut arange, put, get, None, &mut samples),
            };
            samples.record(store, &names.stored_arange, stored as f64);
        }
        cachet_memo(&config, &names, &mut samples);
        eprintln!(
            "run {}/{} done after {:.1} s",
            run + 1,
            config.runs,
            started.elapsed().as_secs_f64()
        );
    }
    println!();
    print_table(&config, &names, &samples);
    println!();
    println!(
        "Medians of {} runs, [min–max] when more than one. Ratio = cachet/cacache: above 1 is \
         better for ops/s and GiB/s, below 1 is better for sizes and memory. \"met\" shows the \
         figure as a multiple of its target.",
        config.runs
    );
    println!(
        "cachet fsyncs every blob (FsyncPolicy::Always) and commits each entry in SQLite (WAL, \
         synchronous=normal); cacache never fsyncs. cachet records access times on reads and \
         writes them later in batches from spawned tasks: they are run (and timed) after the \
         hit loop, reported per hit, and never charged to the next workload. Stored size = apparent bytes of all files \
         in the store's directory (index included). Peak RSS = VmHWM above VmRSS at the start \
         (clear_refs), the data source's buffers excluded."
    );
    let total = Duration::from_secs_f64(started.elapsed().as_secs_f64());
    println!("wall time: {:.1} s", total.as_secs_f64());
}
