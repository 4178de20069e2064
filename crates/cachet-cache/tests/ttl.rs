//! TTL: expired entries are never returned; TTL counts from the write; touch resets it.

mod common;

use std::time::Duration;

use cachet_cache::parse_ttl;
use cachet_core::{Error, params};
use common::{cache_with_clock, large_value};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn get_after_ttl_returns_miss() {
    let (cache, clock, _dir) = cache_with_clock(None).await;
    let key = params! { "report" => "daily" };
    cache.insert(&key, &42u32).with_ttl(HOUR).await.unwrap();

    clock.advance(HOUR - Duration::from_millis(1));
    assert_eq!(cache.get::<u32>(&key).await.unwrap(), Some(42));
    clock.advance(Duration::from_millis(1)); // expires_at == now: expired
    assert_eq!(cache.get::<u32>(&key).await.unwrap(), None);
}

#[tokio::test]
async fn expired_entry_metadata_is_none() {
    let (cache, clock, _dir) = cache_with_clock(None).await;
    cache.insert_bytes("k", b"v").with_ttl(HOUR).await.unwrap();
    assert!(cache.metadata("k").await.unwrap().is_some());
    clock.advance(HOUR);
    assert!(cache.metadata("k").await.unwrap().is_none());
}

#[tokio::test]
async fn expired_entry_is_not_contained_nor_readable_in_any_way() {
    let (cache, clock, _dir) = cache_with_clock(None).await;
    cache.insert_bytes("k", b"v").with_ttl(HOUR).await.unwrap();
    clock.advance(HOUR * 2);
    assert!(!cache.contains_key("k").await.unwrap());
    assert!(cache.get_bytes("k").await.unwrap().is_none());
    assert!(cache.reader("k").await.unwrap().is_none());
    // Storage still holds it until cleanup.
    let key = cachet_core::CacheKey::explicit("", "k").unwrap();
    assert!(cache.store().exists(&key).await.unwrap());
}

#[tokio::test]
async fn touch_extends_ttl() {
    let (cache, clock, _dir) = cache_with_clock(None).await;
    let key = params! { "x" => 1 };
    cache.insert(&key, "value").with_ttl(HOUR).await.unwrap();
    clock.advance(HOUR / 2);
    assert!(cache.touch(&key, Some(HOUR)).await.unwrap());
    clock.advance(HOUR / 2 + HOUR / 4); // 75 min after the write, 45 min after the touch
    assert_eq!(
        cache.get::<String>(&key).await.unwrap().as_deref(),
        Some("value")
    );
    clock.advance(HOUR / 4); // 60 min after the touch
    assert_eq!(cache.get::<String>(&key).await.unwrap(), None);
}

#[tokio::test]
async fn touch_without_ttl_resets_to_the_default() {
    let (cache, clock, _dir) = cache_with_clock(Some(HOUR)).await;
    cache
        .insert_bytes("k", b"v")
        .with_ttl(Duration::from_secs(60))
        .await
        .unwrap();
    assert!(cache.touch("k", None).await.unwrap());
    clock.advance(Duration::from_secs(59 * 60));
    assert!(cache.get_bytes("k").await.unwrap().is_some());
}

#[tokio::test]
async fn touch_does_not_revive_an_expired_entry() {
    let (cache, clock, _dir) = cache_with_clock(None).await;
    cache.insert_bytes("k", b"v").with_ttl(HOUR).await.unwrap();
    clock.advance(HOUR);
    assert!(!cache.touch("k", Some(HOUR)).await.unwrap());
    assert!(cache.get_bytes("k").await.unwrap().is_none());
    assert!(!cache.touch("missing", None).await.unwrap());
}

#[tokio::test]
async fn default_ttl_applies() {
    let (cache, clock, _dir) = cache_with_clock(Some(HOUR)).await;
    let meta = cache.insert(&params! { "a" => 1 }, &1u8).await.unwrap();
    assert_eq!(meta.expires_at, Some(clock_now(&clock).plus(HOUR)));
    clock.advance(HOUR);
    assert_eq!(cache.get::<u8>(&params! { "a" => 1 }).await.unwrap(), None);
}

#[tokio::test]
async fn per_entry_ttl_overrides_default() {
    let (cache, clock, _dir) = cache_with_clock(Some(HOUR)).await;
    cache
        .insert("long", &1u8)
        .with_ttl_str("2.5h")
        .await
        .unwrap();
    cache.insert("forever", &2u8).without_ttl().await.unwrap();
    cache.insert("default", &3u8).await.unwrap();
    clock.advance(HOUR * 2);
    assert_eq!(cache.get::<u8>("long").await.unwrap(), Some(1));
    assert_eq!(cache.get::<u8>("forever").await.unwrap(), Some(2));
    assert_eq!(cache.get::<u8>("default").await.unwrap(), None);
    clock.advance(HOUR / 2);
    assert_eq!(cache.get::<u8>("long").await.unwrap(), None);
    clock.advance(HOUR * 24 * 365);
    assert_eq!(cache.get::<u8>("forever").await.unwrap(), Some(2));
}

#[tokio::test]
async fn get_with_uses_the_default_ttl() {
    let (cache, clock, _dir) = cache_with_clock(Some(HOUR)).await;
    let key = params! { "f" => "x" };
    let _: u32 = cache.get_with(&key, || async { 1 }).await.unwrap();
    clock.advance(HOUR);
    let again: u32 = cache.get_with(&key, || async { 2 }).await.unwrap();
    assert_eq!(again, 2, "an expired value is recomputed");
}

#[test]
fn ttl_strings_parse_units_and_decimals() {
    assert_eq!(parse_ttl("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_ttl("15m").unwrap(), Duration::from_secs(900));
    assert_eq!(parse_ttl("2.5h").unwrap(), Duration::from_secs(9000));
    assert_eq!(parse_ttl(" 7d ").unwrap(), Duration::from_secs(7 * 86_400));
    assert_eq!(parse_ttl("1w").unwrap(), Duration::from_secs(604_800));
    assert_eq!(parse_ttl("250ms").unwrap(), Duration::from_millis(250));
    for bad in [
        "",
        "7",
        "d",
        "7x",
        "-1h",
        "0s",
        "1.2.3h",
        "NaNh",
        "1e3s",
        "7 fortnights",
    ] {
        assert!(
            matches!(parse_ttl(bad), Err(Error::Config { ref field, .. }) if field == "ttl"),
            "{bad:?} must be refused"
        );
    }
}

#[tokio::test]
async fn invalid_ttl_string_fails_the_insert_naming_ttl() {
    let (cache, _clock, _dir) = cache_with_clock(None).await;
    let err = cache
        .insert("k", &1u8)
        .with_ttl_str("soon")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "ttl"),
        "{err}"
    );
    let err = cache
        .insert("k", &1u8)
        .with_ttl(Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "ttl"),
        "{err}"
    );
    assert!(!cache.contains_key("k").await.unwrap());
}

#[tokio::test]
async fn cleanup_expired_reclaims_blobs() {
    let (cache, clock, _dir) = cache_with_clock(None).await;
    let big = large_value(1);
    let meta = cache
        .insert_bytes("big", &big)
        .with_ttl(HOUR)
        .await
        .unwrap();
    let blob = meta
        .location
        .blob_id()
        .cloned()
        .expect("a large value lives in a blob");
    cache
        .insert_bytes("small", b"x")
        .with_ttl(HOUR)
        .await
        .unwrap();
    cache.insert_bytes("live", b"y").await.unwrap();
    assert!(
        cache
            .store()
            .blob_backend()
            .head(&blob)
            .await
            .unwrap()
            .is_some()
    );

    let nothing = cache.cleanup_expired().await.unwrap();
    assert_eq!(nothing.entries_removed, 0);

    clock.advance(HOUR);
    let report = cache.cleanup_expired().await.unwrap();
    assert_eq!(report.entries_removed, 2);
    assert_eq!(report.blobs_freed, 1);
    assert_eq!(report.bytes_freed, meta.stored_size);
    assert!(
        cache
            .store()
            .blob_backend()
            .head(&blob)
            .await
            .unwrap()
            .is_none()
    );
    let stats = cache.index_stats().await.unwrap();
    assert_eq!(stats.entries, 1);
    assert_eq!(stats.blobs, 0);
    assert_eq!(
        cache.get_bytes("live").await.unwrap().as_deref(),
        Some(&b"y"[..])
    );
}

fn clock_now(clock: &cachet_core::ManualClock) -> cachet_core::Timestamp {
    use cachet_core::Clock;
    clock.now()
}
