//! get_with / try_get_with / memoize: one computation per missing key, errors not cached,
//! every value cached (None and () too), cancellation hands over to a waiter.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cachet_core::{Error, params};
use common::cache;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_with_runs_computation_once_for_50_concurrent_tasks() {
    let (cache, _dir) = cache().await;
    let runs = Arc::new(AtomicU32::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(50));
    let key = params! { "dataset" => "sales-2026", "window" => 30 };
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (cache, runs, start, key) =
                (cache.clone(), runs.clone(), start.clone(), key.clone());
            tokio::spawn(async move {
                start.wait().await;
                cache
                    .get_with(&key, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        // A computation that takes a while, so that every task arrives during it.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        vec![1.5f64; 1000]
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), vec![1.5f64; 1000]);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(stats.computations, 1);
    assert_eq!(stats.inserts, 1);
    assert_eq!(stats.hits + stats.misses, 50);
    assert_eq!(stats.misses, 1);
}

#[derive(Debug)]
struct Flaky(&'static str);
impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for Flaky {}

#[tokio::test]
async fn try_get_with_error_is_not_cached() {
    let (cache, _dir) = cache().await;
    let key = params! { "job" => 1 };
    let err = cache
        .try_get_with(&key, || async { Err::<u32, _>(Flaky("upstream down")) })
        .await
        .unwrap_err();
    match &err {
        Error::Compute { key: k, source } => {
            assert!(k.len() == 32, "the error names the key: {k}");
            assert!(
                source.downcast_ref::<Flaky>().is_some(),
                "the leader gets its own error"
            );
        }
        other => panic!("expected Error::Compute, got {other:?}"),
    }
    assert!(!cache.contains_key(&key).await.unwrap());
    let value = cache
        .try_get_with(&key, || async { Ok::<u32, Flaky>(7) })
        .await
        .unwrap();
    assert_eq!(value, 7);
    assert_eq!(cache.get::<u32>(&key).await.unwrap(), Some(7));
    assert_eq!(cache.stats().computations, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn try_get_with_failure_is_shared_with_concurrent_waiters_not_retried_by_each() {
    let (cache, _dir) = cache().await;
    let runs = Arc::new(AtomicU32::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(10));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (cache, runs, start) = (cache.clone(), runs.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                cache
                    .try_get_with("flaky", || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Err::<u32, _>(Flaky("boom"))
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Compute { .. }), "{err:?}");
        assert!(
            format!("{err}").contains("boom")
                || std::error::Error::source(&err).is_some_and(|s| s.to_string().contains("boom"))
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Not cached: the next call computes again.
    let v = cache
        .try_get_with("flaky", || async { Ok::<u32, Flaky>(3) })
        .await
        .unwrap();
    assert_eq!(v, 3);
}

#[tokio::test]
async fn get_with_caches_none_and_unit() {
    let (cache, _dir) = cache().await;
    let runs = AtomicU32::new(0);
    for _ in 0..3 {
        let none: Option<u32> = cache
            .get_with("none", || async {
                runs.fetch_add(1, Ordering::SeqCst);
                None
            })
            .await
            .unwrap();
        assert_eq!(none, None);
        cache
            .get_with("unit", || async {
                runs.fetch_add(1, Ordering::SeqCst);
            })
            .await
            .unwrap();
        let empty: Vec<String> = cache
            .get_with("empty-vec", || async {
                runs.fetch_add(1, Ordering::SeqCst);
                Vec::new()
            })
            .await
            .unwrap();
        assert!(empty.is_empty());
        let empty: String = cache
            .get_with("empty-string", || async {
                runs.fetch_add(1, Ordering::SeqCst);
                String::new()
            })
            .await
            .unwrap();
        assert!(empty.is_empty());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 4, "each computation ran once");
    assert_eq!(cache.get::<Option<u32>>("none").await.unwrap(), Some(None));
    assert_eq!(cache.get::<()>("unit").await.unwrap(), Some(()));
}

#[tokio::test]
async fn memoize_runs_once() {
    let (cache, _dir) = cache().await;
    let runs = AtomicU32::new(0);
    let square = |x: u64| {
        let runs = &runs;
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            x * x
        }
    };
    for _ in 0..3 {
        let y: u64 = cache.memoize("square", &(12,), square(12)).await.unwrap();
        assert_eq!(y, 144);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let y: u64 = cache.memoize("square", &(13,), square(13)).await.unwrap();
    assert_eq!(y, 169);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "other args, other entry");
    let y: u64 = cache.memoize("cube", &(12,), square(12)).await.unwrap();
    assert_eq!(y, 144);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "other function, other entry"
    );
    // The key is documented: function name and args.
    let key = cachet_cache::memo_key("square", &(12,)).unwrap();
    assert_eq!(cache.get::<u64>(&key).await.unwrap(), Some(144));
}

#[tokio::test]
async fn memoize_of_functions_returning_none_or_unit_runs_once() {
    let (cache, _dir) = cache().await;
    let runs = AtomicU32::new(0);
    for _ in 0..3 {
        let found: Option<String> = cache
            .memoize("lookup_user", &("nobody", 7), || async {
                runs.fetch_add(1, Ordering::SeqCst);
                None
            })
            .await
            .unwrap();
        assert_eq!(found, None);
        cache
            .memoize("side_effect_free_unit", &[1, 2, 3], || async {
                runs.fetch_add(1, Ordering::SeqCst);
            })
            .await
            .unwrap();
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_get_with_leader_lets_a_waiter_take_over() {
    let (cache, _dir) = cache().await;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_with("slow", || async move {
                    let _ = started_tx.send(());
                    std::future::pending::<u32>().await
                })
                .await
        })
    };
    started_rx.await.unwrap();
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_with("slow", || async { 7u32 }).await })
    };
    // Let the waiter queue behind the leader, then cancel the leader.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "the waiter waits for the leader");
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    let value = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter took over instead of hanging")
        .unwrap()
        .unwrap();
    assert_eq!(value, 7);
    assert_eq!(cache.get::<u32>("slow").await.unwrap(), Some(7));
    assert_eq!(cache.stats().computations, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_get_with_leader_lets_a_waiter_take_over() {
    let (cache, _dir) = cache().await;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_with("bad", || async move {
                    let _ = started_tx.send(());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let bug = true;
                    if bug {
                        panic!("computation bug");
                    }
                    0u32
                })
                .await
        })
    };
    started_rx.await.unwrap();
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_with("bad", || async { 9u32 }).await })
    };
    assert!(leader.await.unwrap_err().is_panic());
    let value = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter took over")
        .unwrap()
        .unwrap();
    assert_eq!(value, 9);
}

#[tokio::test]
async fn get_with_returns_cached_value_without_computing() {
    let (cache, _dir) = cache().await;
    let key = params! { "k" => 1 };
    cache.insert(&key, &5u32).await.unwrap();
    let v: u32 = cache
        .get_with(&key, || async { panic!("must not compute on a hit") })
        .await
        .unwrap();
    assert_eq!(v, 5);
    assert_eq!(cache.stats().computations, 0);
    assert_eq!(cache.stats().hits, 1);
}

#[tokio::test]
async fn get_with_options_applies_tags_and_ttl() {
    let (cache, _dir) = cache().await;
    let options = cachet_cache::InsertOptions::new()
        .with_tag("models")
        .with_ttl(Duration::from_secs(60));
    let _: u8 = cache
        .get_with_options("m", options, || async { 1 })
        .await
        .unwrap();
    let meta = cache.metadata("m").await.unwrap().unwrap();
    assert_eq!(meta.tags, ["models"]);
    assert!(meta.expires_at.is_some());
}

#[tokio::test]
async fn get_with_invalid_options_fail_before_computing() {
    let (cache, _dir) = cache().await;
    let options = cachet_cache::InsertOptions::new().with_ttl_str("forever-ish");
    let err = cache
        .get_with_options::<u8, _, _>("m", options, || async { panic!("must not compute") })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "ttl"),
        "{err}"
    );
}

/// Caches that share one index with per-key locks (as processes share PostgreSQL) but not
/// their in-process flights: the index's key lock makes one of them compute.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_with_computes_once_across_caches_sharing_an_index_with_key_locks() {
    let index = Arc::new(cachet_core::memory::MemoryMetadata::new());
    let blobs = Arc::new(cachet_core::memory::MemoryBlobs::new());
    let mut caches = Vec::new();
    for _ in 0..4 {
        caches.push(
            cachet_cache::Cache::builder()
                .index_backend(index.clone())
                .blob_backend(blobs.clone())
                .build()
                .await
                .unwrap(),
        );
    }
    let runs = Arc::new(AtomicU32::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(caches.len() * 5));
    let key = params! { "report" => "q3" };
    let mut tasks = Vec::new();
    for cache in &caches {
        for _ in 0..5 {
            let (cache, runs, start, key) =
                (cache.clone(), runs.clone(), start.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                cache
                    .get_with(&key, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        "computed once".to_owned()
                    })
                    .await
            }));
        }
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "computed once");
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one computation across every cache sharing the index"
    );
    // The lock was released: a later miss of another key computes at once.
    let other = caches[1]
        .get_with(&params! { "report" => "q4" }, || async { 4u8 })
        .await
        .unwrap();
    assert_eq!(other, 4);
}
