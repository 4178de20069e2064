//! Grace: within the grace period after expiry, the `get_with` family serves the stale value
//! when the recomputation fails (stale-if-error) or, with `get_with_refresh`, while it runs
//! (stale-while-revalidate); the stale value is the durable entry and survives restarts.
//! Time is a manual clock.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cachet_cache::{Cache, EvictionPolicy, InsertOptions};
use cachet_core::{Error, ManualClock};
use common::{embedded, manual_clock};

const HOUR: Duration = Duration::from_secs(3600);
const GRACE: Duration = Duration::from_secs(24 * 3600);

async fn open(dir: &Path, clock: &ManualClock) -> Cache {
    embedded(dir)
        .clock(Arc::new(clock.clone()))
        .grace(GRACE)
        .build()
        .await
        .unwrap()
}

async fn failing() -> Result<u32, std::io::Error> {
    Err(std::io::Error::other("upstream is down"))
}

/// A cache holding `"rate" = 1` with a one-hour TTL, and its clock.
async fn with_expiring_value() -> (Cache, ManualClock, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let cache = open(dir.path(), &clock).await;
    cache.insert("rate", &1u32).with_ttl(HOUR).await.unwrap();
    (cache, clock, dir)
}

#[tokio::test]
async fn a_failed_recomputation_within_grace_returns_the_stale_value() {
    let (cache, clock, _dir) = with_expiring_value().await;
    clock.advance(HOUR + Duration::from_secs(60));
    let value: u32 = cache.try_get_with("rate", failing).await.unwrap();
    assert_eq!(value, 1);
    let stats = cache.stats();
    assert_eq!((stats.stale_hits, stats.computations), (1, 1));
}

#[tokio::test]
async fn after_the_grace_period_a_failure_is_an_error() {
    let (cache, clock, _dir) = with_expiring_value().await;
    clock.advance(HOUR + GRACE);
    let err = cache.try_get_with("rate", failing).await.unwrap_err();
    assert!(matches!(err, Error::Compute { .. }), "{err}");
    assert_eq!(cache.stats().stale_hits, 0);
}

#[tokio::test]
async fn plain_reads_never_return_a_stale_value() {
    let (cache, clock, _dir) = with_expiring_value().await;
    clock.advance(HOUR);
    assert_eq!(cache.get::<u32>("rate").await.unwrap(), None);
    assert!(!cache.contains_key("rate").await.unwrap());
    assert!(cache.metadata("rate").await.unwrap().is_none());
}

#[tokio::test]
async fn a_successful_recomputation_replaces_the_stale_value() {
    let (cache, clock, _dir) = with_expiring_value().await;
    clock.advance(HOUR * 2);
    let value: u32 = cache.get_with("rate", || async { 2 }).await.unwrap();
    assert_eq!(value, 2);
    assert_eq!(cache.get::<u32>("rate").await.unwrap(), Some(2));
    assert_eq!(cache.stats().stale_hits, 0);
}

#[tokio::test]
async fn the_stale_value_survives_a_restart() {
    let (cache, clock, dir) = with_expiring_value().await;
    drop(cache);
    clock.advance(HOUR * 3);
    let reopened = open(dir.path(), &clock).await;
    let value: u32 = reopened.try_get_with("rate", failing).await.unwrap();
    assert_eq!(value, 1);
}

#[tokio::test]
async fn cleanup_and_eviction_keep_entries_within_grace() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let cache = embedded(dir.path())
        .clock(Arc::new(clock.clone()))
        .grace(GRACE)
        .eviction(EvictionPolicy::lru().check_interval(HOUR * 100))
        .build()
        .await
        .unwrap();
    cache.insert("rate", &1u32).with_ttl(HOUR).await.unwrap();
    clock.advance(HOUR * 2);
    assert_eq!(cache.cleanup_expired().await.unwrap().entries_removed, 0);
    assert_eq!(cache.run_eviction().await.unwrap().expired, 0);
    assert_eq!(cache.try_get_with("rate", failing).await.unwrap(), 1);

    clock.advance(GRACE);
    assert_eq!(cache.run_eviction().await.unwrap().expired, 1);
    assert!(cache.try_get_with("rate", failing).await.is_err());
}

#[tokio::test]
async fn get_with_refresh_returns_the_stale_value_at_once_and_refreshes_in_the_background() {
    let (cache, clock, _dir) = with_expiring_value().await;
    clock.advance(HOUR * 2);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (finished_tx, finished) = tokio::sync::oneshot::channel::<()>();
    let value: u32 = cache
        .get_with_refresh("rate", move || async move {
            released.await.unwrap();
            let _ = finished_tx.send(());
            2u32
        })
        .await
        .unwrap();
    assert_eq!(
        value, 1,
        "the default soft timeout is zero: the stale value at once"
    );
    assert_eq!(cache.stats().stale_hits, 1);

    // The computation is still running; once it completes, the fresh value is stored.
    release.send(()).unwrap();
    finished.await.unwrap();
    let mut fresh = None;
    for _ in 0..1_000 {
        fresh = cache.get::<u32>("rate").await.unwrap();
        if fresh.is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(fresh, Some(2), "refreshed in the background");
}

#[tokio::test]
async fn get_with_refresh_returns_a_fresh_value_that_arrives_within_the_soft_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let cache = embedded(dir.path())
        .clock(Arc::new(clock.clone()))
        .grace(GRACE)
        .soft_timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    cache.insert("rate", &1u32).with_ttl(HOUR).await.unwrap();
    clock.advance(HOUR * 2);
    let value: u32 = cache
        .get_with_refresh("rate", || async { 2u32 })
        .await
        .unwrap();
    assert_eq!(value, 2);
    assert_eq!(cache.stats().stale_hits, 0);
}

#[tokio::test]
async fn get_with_refresh_serves_stale_when_the_refresh_fails() {
    let (cache, clock, _dir) = with_expiring_value().await;
    clock.advance(HOUR * 2);
    let cache = Cache::clone(&cache);
    let value: u32 = cache
        .try_get_with_refresh("rate", InsertOptions::default(), failing)
        .await
        .unwrap();
    assert_eq!(value, 1);
}

#[tokio::test]
async fn without_a_stale_value_get_with_refresh_computes_like_get_with() {
    let (cache, _clock, _dir) = with_expiring_value().await;
    let value: u32 = cache
        .get_with_refresh("fresh-key", || async { 7u32 })
        .await
        .unwrap();
    assert_eq!(value, 7);
    let err = cache
        .try_get_with_refresh("other-key", InsertOptions::default(), failing)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Compute { .. }), "{err}");
}

#[tokio::test]
async fn waiters_of_a_failed_computation_get_the_stale_value_too() {
    let (cache, clock, _dir) = with_expiring_value().await;
    clock.advance(HOUR * 2);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .try_get_with("rate", move || async move {
                    released.await.unwrap();
                    Err::<u32, _>(std::io::Error::other("down"))
                })
                .await
        })
    };
    // Let the leader start, then queue a waiter behind it.
    tokio::task::yield_now().await;
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.try_get_with("rate", failing).await })
    };
    tokio::task::yield_now().await;
    release.send(()).unwrap();
    assert_eq!(leader.await.unwrap().unwrap(), 1);
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
}

#[tokio::test]
async fn a_bad_grace_setting_is_refused_naming_grace() {
    for builder in [
        Cache::builder().in_memory().grace(Duration::ZERO),
        Cache::builder().in_memory().grace_str("a while"),
    ] {
        match builder.build().await {
            Err(Error::Config { field, .. }) => assert_eq!(field, "grace"),
            other => panic!("{other:?}"),
        }
    }
    let cache = Cache::builder()
        .in_memory()
        .grace_str("2.5h")
        .build()
        .await
        .unwrap();
    assert!(format!("{cache:?}").contains("Cache"));
}
