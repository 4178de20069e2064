//! The engine's promises, on the in-memory reference backends (fast; no I/O). The same
//! fault scenarios on real SQLite files and blob directories live in `embedded.rs`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cachet_core::memory::{MemoryBlobs, MemoryMetadata};
use cachet_core::{
    BlobBackend, CacheKey, Compression, ContentDigest, DataType, EntryRecord, Error, ListQuery,
    Location, ManualClock, MetadataBackend, Timestamp, params,
};
use cachet_storage::{PutOptions, SigningKey, Store, StoreConfig};
use futures_util::StreamExt;

struct Fixture {
    store: Store,
    meta: MemoryMetadata,
    blobs: MemoryBlobs,
    clock: ManualClock,
}

fn fixture_with(config: StoreConfig) -> Fixture {
    let meta = MemoryMetadata::new();
    let blobs = MemoryBlobs::new();
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let store = Store::new(
        Arc::new(meta.clone()),
        Arc::new(blobs.clone()),
        config.with_clock(Arc::new(clock.clone())),
    )
    .expect("valid config");
    Fixture {
        store,
        meta,
        blobs,
        clock,
    }
}

fn fixture() -> Fixture {
    fixture_with(StoreConfig::default())
}

fn key(name: &str) -> CacheKey {
    CacheKey::derive("", &params! { "name" => name })
}

/// Pseudo-random, incompressible bytes.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    (0..len.div_ceil(8) as u64)
        .flat_map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed).to_le_bytes())
        .take(len)
        .collect()
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32]).expect("32 bytes")
}

async fn blob_of(f: &Fixture, k: &CacheKey) -> cachet_core::BlobId {
    match f.store.metadata(k).await.unwrap().unwrap().location {
        Location::Blob(id) => id,
        Location::Inline => panic!("expected a blob entry"),
    }
}

#[tokio::test]
async fn small_values_are_stored_inline_and_round_trip() {
    let f = fixture();
    let meta = f
        .store
        .put_bytes(&key("a"), b"hello", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(meta.location, Location::Inline);
    assert_eq!(meta.raw_size, 5);
    assert_eq!(
        f.store.get_bytes(&key("a")).await.unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(f.store.stats().await.unwrap().blobs, 0);
}

#[tokio::test]
async fn empty_value_round_trips() {
    let f = fixture();
    f.store
        .put_bytes(&key("empty"), b"", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        f.store.get_bytes(&key("empty")).await.unwrap(),
        Some(Bytes::new())
    );
}

#[tokio::test]
async fn large_values_go_to_a_blob_and_round_trip_across_frames() {
    let f = fixture_with(StoreConfig::default().with_frame_size(64 << 10));
    let data = random_bytes(1_000_003, 1);
    let meta = f
        .store
        .put_bytes(&key("big"), &data, PutOptions::default())
        .await
        .unwrap();
    assert!(matches!(meta.location, Location::Blob(_)));
    assert_eq!(
        f.store.get_bytes(&key("big")).await.unwrap().as_deref(),
        Some(&data[..])
    );
}

#[tokio::test]
async fn serde_values_round_trip_with_their_type_recorded() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Row {
        id: u32,
        name: String,
        score: Option<f64>,
    }
    let f = fixture();
    let rows = vec![
        Row {
            id: 1,
            name: "a".into(),
            score: Some(0.5),
        },
        Row {
            id: 2,
            name: "b".into(),
            score: None,
        },
    ];
    let meta = f
        .store
        .put_value(&key("rows"), &rows, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(meta.data_type, DataType::MessagePack);
    assert!(meta.type_name.as_deref().unwrap().contains("Row"));
    let back: Vec<Row> = f.store.get_value(&key("rows")).await.unwrap().unwrap();
    assert_eq!(back, rows);
    f.store
        .put_json(&key("json"), &rows, PutOptions::default())
        .await
        .unwrap();
    let back: Vec<Row> = f.store.get_value(&key("json")).await.unwrap().unwrap();
    assert_eq!(back, rows);
}

#[tokio::test]
async fn wrong_type_requested_is_a_type_mismatch() {
    let f = fixture();
    f.store
        .put_value(&key("n"), &42u32, PutOptions::default())
        .await
        .unwrap();
    let err = f.store.get_value::<String>(&key("n")).await.unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err}");
    let err = f.store.get_bytes(&key("n")).await.unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err}");
    f.store
        .put_bytes(&key("b"), b"raw", PutOptions::default())
        .await
        .unwrap();
    let err = f.store.get_value::<u32>(&key("b")).await.unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err}");
}

#[tokio::test]
async fn identical_content_is_stored_once() {
    let f = fixture();
    let data = random_bytes(100_000, 2);
    f.store
        .put_bytes(&key("x"), &data, PutOptions::default())
        .await
        .unwrap();
    f.store
        .put_bytes(&key("y"), &data, PutOptions::default())
        .await
        .unwrap();
    let stats = f.store.stats().await.unwrap();
    assert_eq!(stats.entries, 2);
    assert_eq!(stats.blobs, 1, "the same content must be stored once");
    assert_eq!(blob_of(&f, &key("x")).await, blob_of(&f, &key("y")).await);
}

#[tokio::test]
async fn the_blob_stores_etag_is_recorded_in_the_entry_also_when_deduplicated() {
    let f = fixture();
    let data = random_bytes(100_000, 4);
    let first = f
        .store
        .put_bytes(&key("x"), &data, PutOptions::default())
        .await
        .unwrap();
    let id = blob_of(&f, &key("x")).await;
    let head = f.blobs.head(&id).await.unwrap().expect("blob stored");
    assert!(head.etag.is_some(), "the memory store reports ETags");
    assert_eq!(
        first.blob_etag, head.etag,
        "put returns the ETag it recorded"
    );
    let second = f
        .store
        .put_bytes(&key("y"), &data, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        second.blob_etag, head.etag,
        "a deduplicated put records the existing object's ETag"
    );
    let stored = f.meta.get_meta(&key("y")).await.unwrap().unwrap();
    assert_eq!(stored.blob_etag, head.etag, "the index holds the ETag");
    let inline = f
        .store
        .put_bytes(&key("small"), b"tiny", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(inline.blob_etag, None, "inline values have no blob");
}

#[tokio::test]
async fn a_shared_blob_is_removed_only_when_no_entry_references_it() {
    let f = fixture();
    let data = random_bytes(100_000, 3);
    f.store
        .put_bytes(&key("x"), &data, PutOptions::default())
        .await
        .unwrap();
    f.store
        .put_bytes(&key("y"), &data, PutOptions::default())
        .await
        .unwrap();
    let id = blob_of(&f, &key("x")).await;
    f.clock.advance(Duration::from_secs(3600));
    assert!(f.store.delete(&key("x")).await.unwrap());
    assert!(
        f.blobs.head(&id).await.unwrap().is_some(),
        "still referenced by y"
    );
    assert_eq!(
        f.store.get_bytes(&key("y")).await.unwrap().as_deref(),
        Some(&data[..])
    );
    assert!(f.store.delete(&key("y")).await.unwrap());
    assert!(
        f.blobs.head(&id).await.unwrap().is_none(),
        "unreferenced blob reclaimed on delete"
    );
    assert_eq!(f.store.stats().await.unwrap().blobs, 0);
}

#[tokio::test]
async fn overwriting_a_key_reclaims_the_old_blob() {
    let f = fixture();
    f.store
        .put_bytes(&key("k"), &random_bytes(50_000, 4), PutOptions::default())
        .await
        .unwrap();
    let old = blob_of(&f, &key("k")).await;
    f.clock.advance(Duration::from_secs(3600));
    f.store
        .put_bytes(&key("k"), &random_bytes(50_000, 5), PutOptions::default())
        .await
        .unwrap();
    assert!(f.blobs.head(&old).await.unwrap().is_none());
    assert_eq!(f.store.stats().await.unwrap().blobs, 1);
}

#[tokio::test]
async fn delete_of_missing_key_returns_false() {
    let f = fixture();
    assert!(!f.store.delete(&key("nothing")).await.unwrap());
}

#[tokio::test]
async fn blob_under_a_writers_lease_survives_gc_and_is_collected_after() {
    // A writer crashed after reserving and publishing the blob but before committing its entry.
    let f = fixture();
    let data = random_bytes(40_000, 6);
    let meta = f
        .store
        .put_bytes(&key("tmp"), &data, PutOptions::default())
        .await
        .unwrap();
    let id = blob_of(&f, &key("tmp")).await;
    // Simulate the crash: the entry row never made it.
    f.meta.delete(&meta.key).await.unwrap();
    let report = f.store.gc().await.unwrap();
    assert_eq!(
        report.blobs_deleted, 0,
        "the lease protects a blob whose writer may still commit"
    );
    assert!(f.blobs.head(&id).await.unwrap().is_some());
    f.clock.advance(Duration::from_secs(61));
    let report = f.store.gc().await.unwrap();
    assert_eq!(report.blobs_deleted, 1);
    assert!(f.blobs.head(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn gc_deletes_unregistered_blobs_left_by_a_crash() {
    let f = fixture();
    let stray = cachet_core::BlobId::from_digest(&ContentDigest::Xxh3_128(99));
    f.blobs
        .put(&stray, Bytes::from_static(b"leftover"))
        .await
        .unwrap();
    f.store
        .put_bytes(
            &key("keep"),
            &random_bytes(30_000, 7),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let kept = blob_of(&f, &key("keep")).await;
    let report = f.store.gc().await.unwrap();
    assert_eq!(report.orphans_deleted, 1);
    assert!(f.blobs.head(&stray).await.unwrap().is_none());
    assert!(
        f.blobs.head(&kept).await.unwrap().is_some(),
        "a referenced blob is never collected"
    );
}

#[tokio::test]
async fn gc_never_deletes_a_blob_a_concurrent_put_is_about_to_reference() {
    // Interleaving: the writer reserves, the collector runs, then the writer commits.
    let f = fixture();
    let data = random_bytes(30_000, 8);
    f.store
        .put_bytes(&key("a"), &data, PutOptions::default())
        .await
        .unwrap();
    let id = blob_of(&f, &key("a")).await;
    f.clock.advance(Duration::from_secs(3600));
    // Writer B reserves the same content (it found the blob and will reuse it).
    let now = f.store.now();
    f.meta
        .reserve_blob(&id, 1, now.plus(Duration::from_secs(60)), Timestamp(0))
        .await
        .unwrap();
    // Entry a goes away and a collector runs meanwhile.
    f.meta.delete(&key("a")).await.unwrap();
    let report = f.store.gc().await.unwrap();
    assert_eq!(report.blobs_deleted, 0);
    // B commits: its entry must be readable.
    f.store
        .put_bytes(&key("b"), &data, PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        f.store.get_bytes(&key("b")).await.unwrap().as_deref(),
        Some(&data[..])
    );
}

#[tokio::test]
async fn commit_against_a_claimed_blob_is_refused_by_the_index() {
    let f = fixture();
    let data = random_bytes(30_000, 9);
    f.store
        .put_bytes(&key("a"), &data, PutOptions::default())
        .await
        .unwrap();
    let record = f.meta.get(&key("a")).await.unwrap().unwrap();
    let id = blob_of(&f, &key("a")).await;
    f.meta.delete(&key("a")).await.unwrap();
    f.clock.advance(Duration::from_secs(3600));
    let claimed = f
        .meta
        .claim_unreferenced_blobs(None, f.store.now(), 10)
        .await
        .unwrap();
    assert_eq!(claimed, vec![id]);
    let err = f
        .meta
        .put(EntryRecord {
            meta: record.meta,
            inline_data: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
}

#[tokio::test]
async fn truncated_blob_is_reported_corrupt() {
    let f = fixture();
    let data = random_bytes(100_000, 10);
    f.store
        .put_bytes(&key("t"), &data, PutOptions::default())
        .await
        .unwrap();
    let id = blob_of(&f, &key("t")).await;
    let stored = f.blobs.get(&id).await.unwrap();
    f.blobs.delete(&id).await.unwrap(); // the memory store keeps existing objects on put
    f.blobs
        .put(&id, stored.slice(..stored.len() - 100))
        .await
        .unwrap();
    let err = f.store.get_bytes(&key("t")).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn flipped_bit_in_a_frame_is_reported_corrupt() {
    let f = fixture();
    let data = random_bytes(100_000, 11);
    f.store
        .put_bytes(&key("f"), &data, PutOptions::default())
        .await
        .unwrap();
    let id = blob_of(&f, &key("f")).await;
    let mut stored = f.blobs.get(&id).await.unwrap().to_vec();
    stored[5000] ^= 0x10;
    // Damage behind the store's back (the memory store keeps existing objects on put).
    f.blobs.delete(&id).await.unwrap();
    f.blobs.put(&id, Bytes::from(stored)).await.unwrap();
    let err = f.store.get_bytes(&key("f")).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn row_pointing_at_a_missing_blob_is_reported_corrupt() {
    let f = fixture();
    f.store
        .put_bytes(&key("m"), &random_bytes(100_000, 12), PutOptions::default())
        .await
        .unwrap();
    let id = blob_of(&f, &key("m")).await;
    f.blobs.delete(&id).await.unwrap();
    let err = f.store.get_bytes(&key("m")).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test]
async fn row_pointing_at_another_blob_is_reported_corrupt() {
    let f = fixture();
    f.store
        .put_bytes(&key("a"), &random_bytes(50_000, 13), PutOptions::default())
        .await
        .unwrap();
    f.store
        .put_bytes(&key("b"), &random_bytes(50_000, 14), PutOptions::default())
        .await
        .unwrap();
    let b_blob = blob_of(&f, &key("b")).await;
    let mut record = f.meta.get(&key("a")).await.unwrap().unwrap();
    record.meta.location = Location::Blob(b_blob);
    f.meta.put(record).await.unwrap();
    let err = f.store.get_bytes(&key("a")).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn tampered_row_with_signing_on_is_refused() {
    let f = fixture_with(StoreConfig::default().with_signing_key(signing_key()));
    f.store
        .put_value(&key("s"), &"genuine", PutOptions::default())
        .await
        .unwrap();
    let mut record = f.meta.get(&key("s")).await.unwrap().unwrap();
    record.meta.expires_at = Some(Timestamp(i64::MAX)); // try to extend the TTL
    f.meta.put(record).await.unwrap();
    let err = f.store.get_value::<String>(&key("s")).await.unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
}

#[tokio::test]
async fn tampered_inline_content_with_signing_on_is_refused() {
    let f = fixture_with(StoreConfig::default().with_signing_key(signing_key()));
    f.store
        .put_value(&key("s"), &"genuine", PutOptions::default())
        .await
        .unwrap();
    // Forge a well-formed container for other content with the same length.
    let forged = fixture();
    forged
        .store
        .put_value(&key("s"), &"forgery", PutOptions::default())
        .await
        .unwrap();
    let forged_record = forged.meta.get(&key("s")).await.unwrap().unwrap();
    let mut record = f.meta.get(&key("s")).await.unwrap().unwrap();
    record.inline_data = forged_record.inline_data;
    f.meta.put(record).await.unwrap();
    let err = f.store.get_value::<String>(&key("s")).await.unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
}

#[tokio::test]
async fn unsigned_row_with_signing_on_is_refused() {
    let unsigned = fixture();
    unsigned
        .store
        .put_value(&key("u"), &1u8, PutOptions::default())
        .await
        .unwrap();
    let signed_store = Store::new(
        Arc::new(unsigned.meta.clone()),
        Arc::new(unsigned.blobs.clone()),
        StoreConfig::default().with_signing_key(signing_key()),
    )
    .unwrap();
    let err = signed_store.get_value::<u8>(&key("u")).await.unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
    let err = signed_store.metadata(&key("u")).await.unwrap_err();
    assert!(matches!(err, Error::Tampered { .. }), "{err}");
}

#[tokio::test]
async fn entry_signed_with_another_key_is_refused() {
    let f = fixture_with(StoreConfig::default().with_signing_key(signing_key()));
    f.store
        .put_value(&key("k"), &1u8, PutOptions::default())
        .await
        .unwrap();
    let other = Store::new(
        Arc::new(f.meta.clone()),
        Arc::new(f.blobs.clone()),
        StoreConfig::default().with_signing_key(SigningKey::from_bytes(&[8u8; 32]).unwrap()),
    )
    .unwrap();
    assert!(matches!(
        other.get_value::<u8>(&key("k")).await,
        Err(Error::Tampered { .. })
    ));
}

#[tokio::test]
async fn signing_uses_sha256_digests_and_survives_expiry_changes() {
    let f = fixture_with(StoreConfig::default().with_signing_key(signing_key()));
    let data = random_bytes(200_000, 15);
    let meta = f
        .store
        .put_bytes(&key("sig"), &data, PutOptions::default())
        .await
        .unwrap();
    assert!(matches!(meta.digest, ContentDigest::Sha256(_)));
    assert!(
        blob_of(&f, &key("sig"))
            .await
            .as_str()
            .starts_with("sha256-")
    );
    assert!(
        f.store
            .set_expiry(&key("sig"), Some(Timestamp(1)))
            .await
            .unwrap()
    );
    assert_eq!(
        f.store.get_bytes(&key("sig")).await.unwrap().as_deref(),
        Some(&data[..])
    );
}

#[tokio::test]
async fn short_signing_key_is_rejected_naming_the_field() {
    let err = SigningKey::from_bytes(&[1u8; 8]).unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "signing_key"),
        "{err}"
    );
}

#[tokio::test]
async fn invalid_store_options_name_the_field() {
    let meta: Arc<dyn MetadataBackend> = Arc::new(MemoryMetadata::new());
    let blobs: Arc<dyn BlobBackend> = Arc::new(MemoryBlobs::new());
    for (config, field) in [
        (StoreConfig::default().with_frame_size(10), "frame_size"),
        (
            StoreConfig::default().with_inline_threshold(64 << 20),
            "inline_threshold",
        ),
        (
            StoreConfig::default().with_compression(Compression::Zstd(99)),
            "compression",
        ),
    ] {
        let err = Store::new(meta.clone(), blobs.clone(), config).unwrap_err();
        assert!(
            matches!(err, Error::Config { field: ref f, .. } if f == field),
            "{err}"
        );
    }
}

#[tokio::test]
async fn streamed_value_round_trips_with_bounded_chunks() {
    let f = fixture();
    let mut writer = f
        .store
        .writer(&key("stream"), PutOptions::default())
        .unwrap();
    let mut expected = xxhash_rust::xxh3::Xxh3Default::new();
    for i in 0..24u64 {
        let chunk = random_bytes(700_001, i);
        expected.update(&chunk);
        writer.write(&chunk).await.unwrap();
    }
    let meta = writer.finish().await.unwrap();
    assert_eq!(meta.raw_size, 24 * 700_001);
    let mut reader = f.store.reader(&key("stream")).await.unwrap().unwrap();
    let mut actual = xxhash_rust::xxh3::Xxh3Default::new();
    let mut largest = 0;
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        largest = largest.max(chunk.len());
        actual.update(&chunk);
    }
    assert_eq!(actual.digest128(), expected.digest128());
    assert!(largest <= 1 << 20, "chunks are at most one frame");
}

#[tokio::test]
async fn streamed_read_of_a_damaged_blob_ends_in_an_error_not_in_eof() {
    let f = fixture_with(StoreConfig::default().with_frame_size(64 << 10));
    let data = random_bytes(500_000, 16);
    f.store
        .put_bytes(&key("d"), &data, PutOptions::default())
        .await
        .unwrap();
    let id = blob_of(&f, &key("d")).await;
    let stored = f.blobs.get(&id).await.unwrap();
    f.blobs.delete(&id).await.unwrap(); // the memory store keeps existing objects on put
    f.blobs
        .put(&id, stored.slice(..stored.len() - 40))
        .await
        .unwrap(); // trailer gone
    let reader = f.store.reader(&key("d")).await.unwrap().unwrap();
    let results: Vec<_> = reader.into_stream().collect().await;
    assert!(
        results.last().unwrap().is_err(),
        "the stream must end with an error"
    );
    assert!(results.iter().filter(|r| r.is_ok()).count() <= data.len() / (64 << 10) + 1);
}

#[tokio::test]
async fn small_streamed_value_is_stored_inline() {
    let f = fixture();
    let mut writer = f.store.writer(&key("tiny"), PutOptions::default()).unwrap();
    writer.write(b"a few").await.unwrap();
    writer.write(b" bytes").await.unwrap();
    let meta = writer.finish().await.unwrap();
    assert_eq!(meta.location, Location::Inline);
    assert_eq!(
        f.store.get_bytes(&key("tiny")).await.unwrap().as_deref(),
        Some(&b"a few bytes"[..])
    );
}

#[tokio::test]
async fn aborted_writer_leaves_no_entry() {
    let f = fixture();
    let mut writer = f.store.writer(&key("gone"), PutOptions::default()).unwrap();
    writer.write(&random_bytes(3 << 20, 17)).await.unwrap();
    writer.abort().await.unwrap();
    assert!(!f.store.exists(&key("gone")).await.unwrap());
    assert_eq!(f.store.stats().await.unwrap().blobs, 0);
}

#[tokio::test]
async fn compressible_arrays_are_stored_at_under_ten_percent() {
    let f = fixture();
    let data: Vec<u8> = (0..1_000_000u64)
        .flat_map(|i| (i as f64).to_le_bytes())
        .collect();
    let meta = f
        .store
        .put_bytes(&key("arange"), &data, PutOptions::default())
        .await
        .unwrap();
    assert!(
        meta.stored_size * 10 < meta.raw_size,
        "stored {} of {}",
        meta.stored_size,
        meta.raw_size
    );
    assert_eq!(
        f.store.get_bytes(&key("arange")).await.unwrap().as_deref(),
        Some(&data[..])
    );
}

#[tokio::test]
async fn access_times_are_batched_and_reach_the_index_on_flush() {
    let f =
        fixture_with(StoreConfig::default().with_access_flush_interval(Duration::from_secs(3600)));
    f.store
        .put_bytes(&key("hot"), b"v", PutOptions::default())
        .await
        .unwrap();
    // The first read flushes (nothing was ever flushed); the next ones accumulate in memory.
    for _ in 0..5 {
        f.clock.advance(Duration::from_millis(10));
        f.store.get_bytes(&key("hot")).await.unwrap();
    }
    tokio::task::yield_now().await;
    let before = f
        .meta
        .get_meta(&key("hot"))
        .await
        .unwrap()
        .unwrap()
        .access_count;
    assert!(before < 5, "reads must not each write to the index");
    f.store.flush().await.unwrap();
    let after = f.meta.get_meta(&key("hot")).await.unwrap().unwrap();
    assert_eq!(after.access_count, 5);
    assert_eq!(after.accessed_at, f.store.now());
}

#[tokio::test]
async fn list_pages_through_entries_in_key_order() {
    let f = fixture();
    for i in 0..25 {
        let k = CacheKey::explicit("ns", format!("k{i:02}")).unwrap();
        f.store
            .put_bytes(&k, b"x", PutOptions::default())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut query =
        ListQuery::matching(cachet_core::EntryFilter::all().namespace("ns")).with_limit(10);
    loop {
        let page = f.store.list(&query).await.unwrap();
        if page.is_empty() {
            break;
        }
        query.after = Some(page.last().unwrap().key.clone());
        seen.extend(page.into_iter().map(|m| m.key.id().to_owned()));
    }
    let expected: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
    assert_eq!(seen, expected);
}

#[test]
fn signed_message_matches_the_documented_example() {
    // docs/FORMAT.md §5.2, checked there against an independent Python implementation.
    let sha = "1".repeat(64);
    let meta = cachet_core::EntryMeta {
        key: CacheKey::derive("", &params! { "x" => 1 }),
        params: Some(serde_json::json!({ "x": 1 })),
        location: Location::Blob(cachet_core::BlobId::parse(&format!("sha256-{sha}")).unwrap()),
        data_type: DataType::Bytes,
        type_name: None,
        compression: Compression::Lz4,
        raw_size: 100,
        stored_size: 80,
        digest: format!("sha256:{sha}").parse().unwrap(),
        created_at: Timestamp(1_700_000_000_000),
        updated_at: Timestamp(1_700_000_000_000),
        accessed_at: Timestamp(0),
        access_count: 0,
        expires_at: Some(Timestamp(1_700_000_060_000)),
        tags: vec!["b".into(), "a".into()],
        user_metadata: None,
        signature: None,
        // Not signed: the store assigns it after the signature is made.
        blob_etag: Some("\"any etag\"".into()),
    };
    assert_eq!(cachet_storage::signed_message(&meta).len(), 390);
    let signature = SigningKey::from_bytes(&[0x42; 32]).unwrap().sign(&meta);
    assert_eq!(
        signature,
        "3a4749d81f301d90dd5df0501c827aedb538830f456b3942f4bcf5e68b7a2fba"
    );
}

#[tokio::test]
async fn streamed_value_ttl_counts_from_finish_not_from_the_first_write() {
    let f = fixture();
    let opts = PutOptions {
        ttl: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let mut writer = f.store.writer(&key("slow"), opts).unwrap();
    writer.write(b"part one").await.unwrap();
    f.clock.advance(Duration::from_secs(600)); // a slow producer
    writer.write(b"part two").await.unwrap();
    let meta = writer.finish().await.unwrap();
    assert_eq!(
        meta.expires_at,
        Some(f.store.now().plus(Duration::from_secs(60)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_access_batches_already_being_written() {
    let f = fixture_with(StoreConfig::default().with_access_flush_interval(Duration::ZERO));
    f.store
        .put_bytes(&key("hot"), b"v", PutOptions::default())
        .await
        .unwrap();
    for _ in 0..50 {
        f.store.get_bytes(&key("hot")).await.unwrap(); // a batch is spawned whenever none is in flight
    }
    f.store.flush().await.unwrap();
    assert_eq!(
        f.meta
            .get_meta(&key("hot"))
            .await
            .unwrap()
            .unwrap()
            .access_count,
        50
    );
}

#[tokio::test]
async fn gc_finishes_the_work_of_a_collector_that_crashed_after_claiming() {
    let f = fixture();
    f.store
        .put_bytes(&key("c"), &random_bytes(30_000, 21), PutOptions::default())
        .await
        .unwrap();
    let id = blob_of(&f, &key("c")).await;
    f.meta.delete(&key("c")).await.unwrap();
    f.clock.advance(Duration::from_secs(3600));
    // A collector claims the blob and dies before deleting it.
    assert_eq!(
        f.meta
            .claim_unreferenced_blobs(None, f.store.now(), 10)
            .await
            .unwrap(),
        vec![id.clone()]
    );
    let report = f.store.gc().await.unwrap();
    assert_eq!(
        report.blobs_deleted, 0,
        "a recent claim may belong to a collector still running"
    );
    f.clock.advance(Duration::from_secs(601));
    let report = f.store.gc().await.unwrap();
    assert_eq!(report.blobs_deleted, 1);
    assert!(f.blobs.head(&id).await.unwrap().is_none());
    assert_eq!(f.store.stats().await.unwrap().blobs, 0);
}

#[tokio::test]
async fn delete_expired_keeps_entries_rewritten_with_a_later_expiry() {
    let f = fixture();
    let now = f.store.now();
    let expired = PutOptions {
        expires_at: Some(now),
        ..Default::default()
    };
    let later = PutOptions {
        expires_at: Some(now.plus(Duration::from_secs(60))),
        ..Default::default()
    };
    f.store
        .put_bytes(&key("old"), &random_bytes(30_000, 22), expired.clone())
        .await
        .unwrap();
    f.store
        .put_bytes(&key("renewed"), b"v1", expired)
        .await
        .unwrap();
    f.store
        .put_bytes(&key("renewed"), b"v2", later)
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(120)); // past the blob lease too
    let report = f.store.delete_expired(now).await.unwrap();
    assert_eq!(report.entries_removed, 1);
    assert_eq!(report.blobs_deleted, 1);
    assert!(report.bytes_freed > 30_000);
    assert!(f.store.exists(&key("renewed")).await.unwrap());
}

// ------------------------------------------------------------------------------- copy_to

#[tokio::test]
async fn copy_to_moves_every_live_entry_with_its_metadata_and_resumes() {
    let (source, target) = (fixture(), fixture());
    let big = random_bytes(300_000, 21);
    let options = || PutOptions {
        params: Some(serde_json::json!({ "model": "xgb" })),
        tags: vec!["team-a".into()],
        user_metadata: Some(serde_json::json!({ "accuracy": 0.95 })),
        expires_at: Some(Timestamp(1_800_000_000_000)),
        ..PutOptions::default()
    };
    source
        .store
        .put_bytes(&key("big"), &big, options())
        .await
        .unwrap();
    source
        .store
        .put_bytes(&key("small"), b"tiny", options())
        .await
        .unwrap();
    source
        .store
        .put_json(&key("json"), &vec![1, 2, 3], PutOptions::default())
        .await
        .unwrap();
    let expired = PutOptions {
        expires_at: Some(Timestamp(1)),
        ..PutOptions::default()
    };
    source
        .store
        .put_bytes(&key("old"), b"gone", expired)
        .await
        .unwrap();

    let mut calls = 0;
    let report = source
        .store
        .copy_to(
            &target.store,
            &cachet_storage::CopyOptions::default(),
            |_| calls += 1,
        )
        .await
        .unwrap();
    assert_eq!((report.copied, report.expired, calls), (3, 1, 4));
    assert_eq!(report.bytes, 300_000 + 4 + 7);
    assert_eq!(
        target.store.get_bytes(&key("big")).await.unwrap().unwrap(),
        big
    );
    let copied = target.store.metadata(&key("big")).await.unwrap().unwrap();
    let original = source.store.metadata(&key("big")).await.unwrap().unwrap();
    assert_eq!(
        (
            &copied.params,
            &copied.tags,
            &copied.user_metadata,
            copied.expires_at
        ),
        (
            &original.params,
            &original.tags,
            &original.user_metadata,
            original.expires_at
        )
    );
    let json: Vec<u32> = target.store.get_value(&key("json")).await.unwrap().unwrap();
    assert_eq!(json, vec![1, 2, 3], "the data type is kept");
    assert_eq!(target.store.get_bytes(&key("old")).await.unwrap(), None);

    let again = source
        .store
        .copy_to(
            &target.store,
            &cachet_storage::CopyOptions::default(),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(
        (again.copied, again.already_present),
        (0, 3),
        "a second run resumes"
    );
}

#[tokio::test]
async fn copy_to_reports_damaged_entries_and_copies_the_rest() {
    let (source, target) = (fixture(), fixture());
    source
        .store
        .put_bytes(
            &key("good"),
            &random_bytes(50_000, 22),
            PutOptions::default(),
        )
        .await
        .unwrap();
    source
        .store
        .put_bytes(
            &key("bad"),
            &random_bytes(50_000, 23),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let bad_blob = blob_of(&source, &key("bad")).await;
    source.blobs.delete(&bad_blob).await.unwrap();
    let report = source
        .store
        .copy_to(
            &target.store,
            &cachet_storage::CopyOptions::default(),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(report.copied, 1);
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].0, key("bad"));
    assert!(matches!(report.damaged[0].1, Error::Corrupt { .. }));
    assert_eq!(target.store.get_bytes(&key("bad")).await.unwrap(), None);
    assert_eq!(
        target.store.stats().await.unwrap().entries,
        1,
        "nothing half-copied"
    );
}

#[tokio::test]
async fn copy_to_keeps_different_target_entries_unless_asked_to_overwrite() {
    let (source, target) = (fixture(), fixture());
    source
        .store
        .put_bytes(&key("k"), b"source", PutOptions::default())
        .await
        .unwrap();
    target
        .store
        .put_bytes(&key("k"), b"target", PutOptions::default())
        .await
        .unwrap();
    let keep = source
        .store
        .copy_to(
            &target.store,
            &cachet_storage::CopyOptions::default(),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!((keep.copied, keep.kept_existing), (0, 1));
    assert_eq!(
        &target.store.get_bytes(&key("k")).await.unwrap().unwrap()[..],
        b"target"
    );
    let overwrite = cachet_storage::CopyOptions {
        overwrite: true,
        ..Default::default()
    };
    let replaced = source
        .store
        .copy_to(&target.store, &overwrite, |_| {})
        .await
        .unwrap();
    assert_eq!(replaced.copied, 1);
    assert_eq!(
        &target.store.get_bytes(&key("k")).await.unwrap().unwrap()[..],
        b"source"
    );
}
