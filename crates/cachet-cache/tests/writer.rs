//! Streaming writes and reads through the cache.

mod common;

use std::time::Duration;

use cachet_core::{Error, params};
use common::{cache, cache_with_clock, large_value};

#[tokio::test]
async fn writer_streams_a_value_that_reads_back_identically() {
    let (cache, _dir) = cache().await;
    let data: Vec<u8> = (0..5u32).flat_map(|i| large_value(u64::from(i))).collect();
    let key = params! { "export" => "all" };
    let mut w = cache.writer(&key).await.unwrap().with_tag("exports");
    for chunk in data.chunks(10_000) {
        w.write(chunk).await.unwrap();
    }
    assert!(
        !cache.contains_key(&key).await.unwrap(),
        "nothing visible before finish"
    );
    let meta = w.finish().await.unwrap();
    assert_eq!(meta.raw_size, data.len() as u64);
    assert_eq!(meta.tags, ["exports"]);
    assert!(meta.params.is_some());
    assert_eq!(cache.get_bytes(&key).await.unwrap().unwrap(), data);

    let mut reader = cache.reader(&key).await.unwrap().unwrap();
    let mut back = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        back.extend_from_slice(&chunk);
    }
    assert_eq!(back, data);
    assert_eq!(cache.stats().inserts, 1);
}

#[tokio::test]
async fn writer_copies_from_an_async_reader() {
    let (cache, _dir) = cache().await;
    let data = large_value(9);
    let mut w = cache.writer("copied").await.unwrap();
    let n = w.copy_from(&mut &data[..]).await.unwrap();
    assert_eq!(n, data.len() as u64);
    w.finish().await.unwrap();
    assert_eq!(cache.get_bytes("copied").await.unwrap().unwrap(), data);
}

#[tokio::test]
async fn writer_applies_the_default_ttl() {
    let (cache, clock, _dir) = cache_with_clock(Some(Duration::from_secs(60))).await;
    let mut w = cache.writer("k").await.unwrap();
    w.write(b"abc").await.unwrap();
    let meta = w.finish().await.unwrap();
    assert!(meta.expires_at.is_some());
    clock.advance(Duration::from_secs(60));
    assert!(cache.get_bytes("k").await.unwrap().is_none());
}

#[tokio::test]
async fn writer_option_after_first_write_fails_finish_and_discards() {
    let (cache, _dir) = cache().await;
    let mut w = cache.writer("k").await.unwrap();
    w.write(b"abc").await.unwrap();
    let w = w.with_ttl(Duration::from_secs(5));
    let err = w.finish().await.unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "ttl"),
        "{err}"
    );
    assert!(!cache.contains_key("k").await.unwrap());
}

#[tokio::test]
async fn aborted_or_dropped_writer_leaves_nothing() {
    let (cache, _dir) = cache().await;
    let mut w = cache.writer("a").await.unwrap();
    w.write(&large_value(1)).await.unwrap();
    w.abort().await.unwrap();
    let mut w = cache.writer("b").await.unwrap();
    w.write(&large_value(2)).await.unwrap();
    drop(w);
    assert!(!cache.contains_key("a").await.unwrap());
    assert!(!cache.contains_key("b").await.unwrap());
}

#[tokio::test]
async fn empty_writer_stores_an_empty_value() {
    let (cache, _dir) = cache().await;
    let w = cache.writer("empty").await.unwrap();
    w.finish().await.unwrap();
    assert_eq!(cache.get_bytes("empty").await.unwrap().unwrap().len(), 0);
}
