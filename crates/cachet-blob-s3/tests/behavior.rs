//! This backend's own promises, against a real S3-compatible server (moto in CI).

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cachet_blob_s3::{MIN_PART_SIZE, S3Config};
use cachet_core::{BlobBackend, BlobId, ContentDigest, Error, Timestamp};
use futures_util::TryStreamExt;

fn id(n: u128) -> BlobId {
    BlobId::from_digest(&ContentDigest::Xxh3_128(n))
}

fn bytes(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<u8>>(),
    )
}

async fn listed(blobs: &dyn BlobBackend) -> Vec<cachet_core::BlobInfo> {
    blobs.list().await.unwrap().try_collect().await.unwrap()
}

fn far_future() -> Timestamp {
    Timestamp(i64::MAX / 2)
}

/// A backend with the smallest part size, so multipart paths run with little data.
fn small_parts(tag: &str) -> Option<cachet_blob_s3::S3Blobs> {
    let (endpoint, bucket) = common::server()?;
    Some(
        common::config(&endpoint, &bucket, &common::unique_prefix(tag))
            .with_part_size(MIN_PART_SIZE)
            .build()
            .unwrap(),
    )
}

#[tokio::test]
async fn aborted_multipart_write_leaves_nothing_visible() {
    let Some(blobs) = small_parts("abort") else {
        return;
    };
    let mut writer = blobs.writer().await.unwrap();
    // Two and a half parts: the multipart upload has started and parts are stored.
    writer.write(bytes(MIN_PART_SIZE * 5 / 2, 1)).await.unwrap();
    writer.abort().await.unwrap();
    assert!(listed(&blobs).await.is_empty());
    assert_eq!(blobs.cleanup_temporary(far_future()).await.unwrap(), 0);
}

#[tokio::test]
async fn dropped_multipart_writer_leaves_nothing_visible() {
    let Some(blobs) = small_parts("drop") else {
        return;
    };
    let mut writer = blobs.writer().await.unwrap();
    writer.write(bytes(MIN_PART_SIZE + 1, 2)).await.unwrap();
    drop(writer);
    assert!(listed(&blobs).await.is_empty());
    assert_eq!(blobs.cleanup_temporary(far_future()).await.unwrap(), 0);
}

#[tokio::test]
async fn multipart_write_publishes_on_finish_and_removes_its_temporary_object() {
    let Some(blobs) = small_parts("multi") else {
        return;
    };
    let data = bytes(MIN_PART_SIZE * 2 + 12345, 3);
    let mut writer = blobs.writer().await.unwrap();
    for chunk in data.chunks(1 << 20) {
        writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert!(blobs.head(&id(3)).await.unwrap().is_none());
    let receipt = writer.finish(&id(3)).await.unwrap();
    assert_eq!(blobs.get(&id(3)).await.unwrap(), data);
    let head = blobs.head(&id(3)).await.unwrap().unwrap();
    assert_eq!(head.size, data.len() as u64);
    assert!(receipt.etag.is_some());
    assert_eq!(head.etag, receipt.etag);
    // finish deleted the temporary object: nothing left to clean.
    assert_eq!(blobs.cleanup_temporary(far_future()).await.unwrap(), 0);
    assert_eq!(listed(&blobs).await.len(), 1);
}

#[tokio::test]
async fn conditional_put_of_an_existing_id_succeeds_without_overwriting() {
    let Some(blobs) = small_parts("cond") else {
        return;
    };
    assert!(blobs.capabilities().conditional_put);
    let first = bytes(1000, 4);
    let r1 = blobs.put(&id(4), first.clone()).await.unwrap();
    // Different bytes under the same id cannot happen in cachet (ids are digests); here they
    // show which copy the store kept.
    let r2 = blobs.put(&id(4), bytes(1000, 5)).await.unwrap();
    assert_eq!(r2.etag, r1.etag, "put returns the existing object's ETag");
    let mut small = blobs.writer().await.unwrap();
    small.write(bytes(2000, 6)).await.unwrap();
    assert_eq!(small.finish(&id(4)).await.unwrap().etag, r1.etag);
    let mut large = blobs.writer().await.unwrap();
    large.write(bytes(MIN_PART_SIZE + 10, 7)).await.unwrap();
    assert_eq!(large.finish(&id(4)).await.unwrap().etag, r1.etag);
    assert_eq!(blobs.get(&id(4)).await.unwrap(), first);
    assert_eq!(blobs.cleanup_temporary(far_future()).await.unwrap(), 0);
}

#[tokio::test]
async fn put_without_conditional_put_overwrites() {
    let Some((endpoint, bucket)) = common::server() else {
        return;
    };
    let blobs = common::config(&endpoint, &bucket, &common::unique_prefix("nocond"))
        .with_conditional_put(false)
        .build()
        .unwrap();
    assert!(!blobs.capabilities().conditional_put);
    blobs.put(&id(8), bytes(100, 8)).await.unwrap();
    blobs.put(&id(8), bytes(100, 9)).await.unwrap();
    assert_eq!(blobs.get(&id(8)).await.unwrap(), bytes(100, 9));
}

#[tokio::test]
async fn etag_is_returned_by_put_and_matches_head_and_list() {
    let Some(blobs) = common::fresh("etag") else {
        return;
    };
    let receipt = blobs.put(&id(10), bytes(4096, 10)).await.unwrap();
    let etag = receipt.etag.expect("S3 returns an ETag");
    assert!(!etag.is_empty());
    let head = blobs.head(&id(10)).await.unwrap().unwrap();
    assert_eq!(head.etag.as_deref(), Some(etag.as_str()));
    assert!(head.modified.is_some());
    let list = listed(&blobs).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].etag.as_deref(), Some(etag.as_str()));
}

#[tokio::test]
async fn list_skips_foreign_objects_and_temporary_objects() {
    let Some((endpoint, bucket)) = common::server() else {
        return;
    };
    let prefix = common::unique_prefix("foreign");
    let blobs = common::config(&endpoint, &bucket, &prefix).build().unwrap();
    blobs.put(&id(11), bytes(10, 11)).await.unwrap();
    // Plant objects that are not blobs of `blobs`: a blob-shaped object one level too deep,
    // one in the wrong shard's place, and one under tmp/.
    for (sub, n) in [
        ("xxh3-128/zz", 12),
        ("xxh3-128", 13),
        ("tmp", 14),
        ("other", 15),
    ] {
        let foreign = common::config(&endpoint, &bucket, &format!("{prefix}/{sub}"))
            .build()
            .unwrap();
        foreign.put(&id(n), bytes(10, n as u8)).await.unwrap();
    }
    let ids: Vec<BlobId> = listed(&blobs).await.into_iter().map(|i| i.id).collect();
    assert_eq!(ids, vec![id(11)]);
}

#[tokio::test]
async fn cleanup_temporary_removes_abandoned_temporary_objects_only() {
    let Some((endpoint, bucket)) = common::server() else {
        return;
    };
    let prefix = common::unique_prefix("cleanup");
    let blobs = common::config(&endpoint, &bucket, &prefix).build().unwrap();
    blobs.put(&id(16), bytes(10, 16)).await.unwrap();
    // A leftover under tmp/ (as a crash between finish's copy and delete leaves one).
    let tmp = common::config(&endpoint, &bucket, &format!("{prefix}/tmp"))
        .build()
        .unwrap();
    tmp.put(&id(17), bytes(10, 17)).await.unwrap();
    let before = Timestamp(Timestamp::now().0 - 60_000);
    assert_eq!(blobs.cleanup_temporary(before).await.unwrap(), 0);
    assert_eq!(blobs.cleanup_temporary(far_future()).await.unwrap(), 1);
    assert!(tmp.head(&id(17)).await.unwrap().is_none());
    assert_eq!(blobs.get(&id(16)).await.unwrap(), bytes(10, 16));
}

fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable_after_the_retry_budget() {
    let blobs = S3Config::new("bucket")
        .with_env(false)
        .with_endpoint(format!("http://127.0.0.1:{}", closed_port()))
        .with_allow_http(true)
        .with_credentials("key", "secret")
        .with_max_retries(2)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .with_retry_timeout(Duration::from_secs(5))
        .with_connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = Instant::now();
    for result in [
        blobs
            .put(&id(1), Bytes::from_static(b"x"))
            .await
            .map(|_| ()),
        blobs.get(&id(1)).await.map(|_| ()),
        blobs.head(&id(1)).await.map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains("s3://bucket/"), "{err}");
    }
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn https_endpoint_fails_with_an_error_not_a_crypto_provider_panic() {
    // A plain-HTTP server answering a TLS handshake (the test server when there is one, else
    // a closed port): the request must fail with an error, not panic for lack of a rustls
    // crypto provider.
    let endpoint = match common::server() {
        Some((endpoint, _)) => endpoint.replace("http://", "https://"),
        None => format!("https://127.0.0.1:{}", closed_port()),
    };
    let blobs = S3Config::new("bucket")
        .with_env(false)
        .with_endpoint(endpoint)
        .with_credentials("key", "secret")
        .with_max_retries(1)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(10))
        .build()
        .unwrap();
    let err = blobs.head(&id(1)).await.unwrap_err();
    eprintln!("https error: {err:?}");
    assert!(
        matches!(err, Error::Unavailable { .. } | Error::Backend { .. }),
        "{err}"
    );
}
