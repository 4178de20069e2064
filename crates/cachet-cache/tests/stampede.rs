//! `get_with` computes a missing value once across OS processes sharing the embedded cache
//! (SQLite index + blob directory), through the index's per-key file locks; a process that
//! dies while computing does not block the others.
//!
//! Worker processes re-run this test binary: the entry point is the ignored test
//! `stampede_worker`.

#![cfg(unix)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cachet_cache::Cache;

const WORKERS: usize = 4;

fn spawn_worker(mode: &str, id: usize, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "stampede_worker",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CACHET_STAMPEDE_MODE", mode)
        .env("CACHET_STAMPEDE_ID", id.to_string())
        .env("CACHET_STAMPEDE_DIR", dir)
        .spawn()
        .expect("start a worker process")
}

fn computations(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("computations"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn get_with_computes_once_across_four_processes_on_the_embedded_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("cache")).await.unwrap();
    let workers: Vec<Child> = (0..WORKERS)
        .map(|id| spawn_worker("compute", id, dir.path()))
        .collect();
    // Release the workers together once they are all running.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(dir.path().join("go"), b"").unwrap();
    for (i, mut worker) in workers.into_iter().enumerate() {
        let status = worker.wait().unwrap();
        assert!(status.success(), "worker {i} failed: {status}");
    }
    let ran = computations(dir.path());
    assert_eq!(
        ran.len(),
        1,
        "the computation ran once across {WORKERS} processes: {ran:?}"
    );
    let value: Option<String> = cache.get("report").await.unwrap();
    assert_eq!(value.as_deref(), Some("expensive report"));
}

#[tokio::test]
async fn a_process_killed_while_computing_does_not_block_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path().join("cache")).await.unwrap();
    std::fs::write(dir.path().join("go"), b"").unwrap();
    let mut stuck = spawn_worker("hang", 0, dir.path());
    // Wait until it holds the key's lock (it logs, then computes forever).
    let deadline = Instant::now() + Duration::from_secs(30);
    while computations(dir.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the hanging worker never started computing"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    stuck.kill().unwrap();
    stuck.wait().unwrap();
    let started = Instant::now();
    let value: String = cache
        .get_with("report", || async { "computed after the crash".to_owned() })
        .await
        .unwrap();
    assert_eq!(value, "computed after the crash");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the dead holder's lock was released by the operating system ({:?})",
        started.elapsed()
    );
}

#[tokio::test]
#[ignore = "entry point for worker processes spawned by other tests in this file"]
async fn stampede_worker() {
    let (Ok(mode), Ok(id), Ok(dir)) = (
        std::env::var("CACHET_STAMPEDE_MODE"),
        std::env::var("CACHET_STAMPEDE_ID"),
        std::env::var("CACHET_STAMPEDE_DIR"),
    ) else {
        return;
    };
    let dir = Path::new(&dir);
    let cache = Cache::open(dir.join("cache")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("go").exists() {
        assert!(Instant::now() < deadline, "worker {id}: never told to go");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let log = dir.join("computations");
    let hang = mode == "hang";
    let worker = id.clone();
    let value: String = cache
        .get_with("report", || async move {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            writeln!(file, "worker {worker}").unwrap();
            if hang {
                std::future::pending::<()>().await;
            }
            // Long enough that every other process asks while this one computes.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "expensive report".to_owned()
        })
        .await
        .unwrap_or_else(|e| panic!("worker {id}: get_with failed: {e}"));
    assert_eq!(value, "expensive report");
    cache.flush().await.unwrap();
}
