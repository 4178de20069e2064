//! A PostgreSQL restart in the middle of a workload is survived (calls retry within the
//! budget). Needs a command that restarts the server in `CACHET_TEST_PG_RESTART`, e.g.
//! `runuser -u postgres -- pg_ctl -D /tmp/ci-services/postgres/data restart -m fast`;
//! skipped (with a notice) without it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cachet_core::MetadataBackend;
use cachet_core::testing::metadata::{sample_record, test_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workload_survives_a_server_restart() {
    let Some(url) = common::database_url() else {
        return;
    };
    let Ok(restart) = std::env::var("CACHET_TEST_PG_RESTART") else {
        eprintln!("skipped: set CACHET_TEST_PG_RESTART to a command that restarts the server");
        return;
    };
    let index = Arc::new(
        common::fresh_config(&url, "restart")
            .with_retry_budget(Duration::from_secs(30))
            .open()
            .await
            .unwrap(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let index = index.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = test_key("", &format!("w{w}-{}", n % 50));
                    index
                        .put(sample_record(&key))
                        .await
                        .expect("put during restart");
                    index.get(&key).await.expect("get during restart");
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let status = std::process::Command::new("sh")
        .args(["-c", &restart])
        .status()
        .unwrap();
    assert!(status.success(), "the restart command failed");
    eprintln!("restart took {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        total += worker.await.expect("a worker saw an error");
    }
    eprintln!("{total} put+get pairs across the restart");
}
