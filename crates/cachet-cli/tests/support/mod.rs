//! Helpers of the end-to-end tests: the real `cachet` binary, run on caches built here.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cachet::{Cache, ManualClock, Timestamp, params};

/// The `cachet` binary, with none of the caller's `CACHET_*` / `NO_COLOR` variables.
pub fn cachet() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_cachet"));
    for var in ["CACHET_CACHE", "CACHET_INDEX", "CACHET_BLOBS", "NO_COLOR"] {
        cmd.env_remove(var);
    }
    cmd
}

/// `cachet --cache DIR`.
pub fn cachet_at(dir: &Path) -> assert_cmd::Command {
    let mut cmd = cachet();
    cmd.arg("--cache").arg(dir);
    cmd
}

/// Runs and returns stdout, failing the test (with stderr) on a non-zero exit.
pub fn stdout_of(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.output().expect("run cachet");
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}\nstdout: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// JSON lines, parsed.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// CSV with a header, parsed into one map per record.
pub fn csv_records(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().expect("a header row").clone();
    reader
        .records()
        .map(|r| {
            let r = r.expect("a CSV record");
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    (0..len.div_ceil(8) as u64)
        .flat_map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed).to_le_bytes())
        .take(len)
        .collect()
}

/// What [`sample_cache`] stored.
#[derive(Debug)]
pub struct Sample {
    /// The cache directory.
    pub dir: PathBuf,
    /// A serde value under params (`report=q3, year=2026`): its 32-hex id.
    pub report_id: String,
    /// 100,000 incompressible bytes under the explicit key `raw-blob` (stored in a blob).
    pub blob_id: String,
}

/// A cache with entries of every kind. Written now: a serde value with params (tag
/// `reports`), 100,000 raw bytes in a blob (`raw-blob`), a JSON value with a 7-day TTL
/// (`settings`), and in namespace `models` a model with typed metadata (`m-good`, accuracy
/// 0.95, tag `prod`, 5,000 bytes). Written 10 days ago (through the cache's clock, no
/// sleeping): `models/m-poor` (accuracy 0.71, 300 bytes) and `short-lived` (1-day TTL, so
/// expired).
pub async fn sample_cache(dir: &Path) -> Sample {
    let cache = Cache::open(dir).await.unwrap();
    let report = cache
        .insert(
            params! { "report" => "q3", "year" => 2026 },
            &vec![("north", 1.5), ("south", 2.5)],
        )
        .with_tag("reports")
        .await
        .unwrap();
    let blob = cache
        .insert_bytes("raw-blob", noise(100_000, 1))
        .await
        .unwrap();
    cache
        .insert("settings", &serde_json::json!({ "threads": 4 }))
        .as_json()
        .with_ttl_str("7d")
        .await
        .unwrap();
    let models = cache.namespace("models");
    models
        .insert_bytes("m-good", noise(5_000, 2))
        .with_meta("accuracy", 0.95)
        .with_meta("model", "xgboost")
        .with_tag("prod")
        .await
        .unwrap();
    cache.flush().await.unwrap();
    drop(cache);

    let ten_days_ago = Timestamp(Timestamp::now().0 - 10 * 86_400_000);
    let past = Cache::builder()
        .directory(dir)
        .clock(Arc::new(ManualClock::new(ten_days_ago)))
        .build()
        .await
        .unwrap();
    past.namespace("models")
        .insert_bytes("m-poor", noise(300, 3))
        .with_meta("accuracy", 0.71)
        .with_meta("model", "linear")
        .await
        .unwrap();
    past.insert_bytes("short-lived", b"soon gone".to_vec())
        .with_ttl_str("1d")
        .await
        .unwrap();
    past.flush().await.unwrap();
    Sample {
        dir: dir.to_owned(),
        report_id: report.key.id().to_owned(),
        blob_id: blob.key.id().to_owned(),
    }
}
