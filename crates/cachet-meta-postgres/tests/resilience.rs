//! Transient failures are retried: connections killed by the server (as in a restart) are
//! replaced without the caller seeing an error.

mod common;

use std::sync::Arc;

use cachet_core::MetadataBackend;
use cachet_core::testing::metadata::{sample_record, test_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_terminated_by_the_server_are_survived() {
    let Some(url) = common::database_url() else {
        return;
    };
    let app = format!("cachet-kill-{}", std::process::id());
    let index = Arc::new(
        common::fresh_config(&url, "kill")
            .with_application_name(app.clone())
            .open()
            .await
            .unwrap(),
    );
    // Warm the pool, then kill every one of its sessions (SQLSTATE 57P01 / broken sockets).
    let mut tasks = Vec::new();
    for i in 0..4 {
        let index = index.clone();
        tasks.push(tokio::spawn(async move {
            index
                .put(sample_record(&test_key("", &format!("warm{i}"))))
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut admin = common::admin(&url).await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed > 0, "no pooled session was found to kill");
    // Every operation still succeeds: dead connections fail, are dropped, and retried.
    for i in 0..20 {
        let key = test_key("", &format!("after{i}"));
        index
            .put(sample_record(&key))
            .await
            .expect("put after the kill");
        assert!(index.get(&key).await.expect("get after the kill").is_some());
    }
}
