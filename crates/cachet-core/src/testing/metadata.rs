//! Metadata backend conformance suite.
//!
//! One `pub async fn` per behavior promised in the [`MetadataBackend`] docs, named after the
//! promise, plus [`run_all`], which runs every one of them on a fresh backend from a factory
//! and reports every failing behavior by name.
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread")]
//! async fn my_backend_passes_metadata_conformance() {
//!     cachet_core::testing::metadata::run_all(|| async {
//!         let backend = MyBackend::open_fresh().await;
//!         std::sync::Arc::new(backend) as std::sync::Arc<dyn MetadataBackend>
//!     })
//!     .await;
//! }
//! ```
//!
//! The functions are test helpers: they panic with a message naming the broken promise.
//! They must run inside a Tokio runtime (a few spawn tasks); a multi-thread runtime exercises
//! real parallelism in the concurrency behaviors.
//!
//! Sizes and counters are `u64` in the API. SQL databases store signed 64-bit integers, so the
//! suite requires values up to `i64::MAX` to round-trip exactly; larger values may be refused
//! with an error (see [`sizes_beyond_i64_max_round_trip_or_are_refused`]) but never wrap.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::FutureExt;
use serde_json::json;

use super::eviction::*;
use super::management::*;
use crate::clock::Timestamp;
use crate::entry::{
    AccessRecord, BlobId, Compression, ContentDigest, DataType, EntryMeta, EntryRecord, IndexStats,
    ListQuery, Location,
};
use crate::error::{Error, Result};
use crate::filter::EntryFilter;
use crate::key::CacheKey;
use crate::metadata::MetadataBackend;

/// A backend under test, as the factory of [`run_all`] returns it.
pub type DynMetadata = Arc<dyn MetadataBackend>;

/// A fixed point in time the suite's records are written at (2023-11-14).
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

/// The page size a backend uses when `ListQuery::limit` is 0.
pub const DEFAULT_PAGE_SIZE: usize = ListQuery::DEFAULT_LIMIT;

/// A "never stale" bound for [`MetadataBackend::reserve_blob`]: no claim is older than this.
const NEVER_STALE: Timestamp = Timestamp(i64::MIN);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An explicit key; panics if `namespace` or `id` is not a valid key part.
pub fn test_key(namespace: &str, id: &str) -> CacheKey {
    CacheKey::explicit(namespace, id)
        .unwrap_or_else(|e| panic!("test key {namespace:?}/{id:?} is invalid: {e}"))
}

/// A valid blob id, distinct for every `n`.
pub fn test_blob_id(n: u64) -> BlobId {
    BlobId::from_digest(&ContentDigest::Xxh3_128(
        0xb10b_0000_0000_0000_0000_0000_0000_0000 | u128::from(n),
    ))
}

/// The xxh3-128 digest of `data`.
pub fn xxh3_digest(data: &[u8]) -> ContentDigest {
    ContentDigest::Xxh3_128(xxhash_rust::xxh3::xxh3_128(data))
}

/// A small inline record for `key`: the value is the key's text, every optional field is
/// `None`, timestamps are [`T0`].
pub fn sample_record(key: &CacheKey) -> EntryRecord {
    inline_record(key, Bytes::from(format!("value of {key}")))
}

/// An inline record for `key` holding `data` (digest and sizes consistent with it).
pub fn inline_record(key: &CacheKey, data: Bytes) -> EntryRecord {
    EntryRecord {
        meta: EntryMeta {
            key: key.clone(),
            params: Some(json!({ "id": key.id() })),
            location: Location::Inline,
            data_type: DataType::Bytes,
            type_name: None,
            compression: Compression::None,
            raw_size: data.len() as u64,
            stored_size: data.len() as u64,
            digest: xxh3_digest(&data),
            created_at: T0,
            updated_at: T0,
            accessed_at: T0,
            access_count: 0,
            expires_at: None,
            tags: Vec::new(),
            user_metadata: None,
            signature: None,
            blob_etag: None,
        },
        inline_data: Some(data),
    }
}

/// A record for `key` whose value lives in blob `blob` of `stored_size` bytes.
pub fn sample_blob_record(key: &CacheKey, blob: &BlobId, stored_size: u64) -> EntryRecord {
    let mut record = sample_record(key);
    record.meta.location = Location::Blob(blob.clone());
    record.meta.raw_size = stored_size * 2;
    record.meta.stored_size = stored_size;
    record.meta.compression = Compression::Lz4;
    record.meta.blob_etag = Some(format!("\"etag of {blob}\""));
    record.inline_data = None;
    record
}

/// An inline record for `key` with every optional field set and unusual (but valid) values
/// everywhere: nested JSON with unicode and extreme numbers, tags in non-sorted order,
/// a SHA-256 digest, zstd compression, a custom data type, a signature.
pub fn rich_record(key: &CacheKey) -> EntryRecord {
    let data = Bytes::from_static(b"\x00\x01rich\xff\xfe\x00");
    EntryRecord {
        meta: EntryMeta {
            key: key.clone(),
            params: Some(json!({
                "dataset": "sales-2026",
                "window": 30,
                "ratio": 0.5,
                "negative": -2.25,
                "big": u64::MAX,
                "small": i64::MIN,
                "flags": [true, false, null],
                "nested": { "z": { "a": [] }, "empty": {} },
                "text": "quote \" backslash \\ newline \n tab \t nul \u{0} emoji \u{1F600} é",
            })),
            location: Location::Inline,
            data_type: DataType::Other("arrow-ipc".into()),
            type_name: Some("alloc::vec::Vec<my_crate::Row<'static>>".into()),
            compression: Compression::Zstd(19),
            raw_size: 123_456,
            stored_size: 7,
            digest: ContentDigest::Sha256([0xab; 32]),
            created_at: Timestamp(T0.0 - 5_000),
            updated_at: Timestamp(T0.0 - 1_000),
            accessed_at: Timestamp(T0.0 + 1),
            access_count: 42,
            expires_at: Some(Timestamp(T0.0 + 86_400_000)),
            tags: vec![
                "sales".into(),
                "Éq, \"quoted\" [tag]".into(),
                "a".into(),
                String::new(),
            ],
            user_metadata: Some(json!({
                "owner": "data-team",
                "notes": ["x", 1, 2.5, null, { "deep": true }],
                "unicode": "日本語",
            })),
            signature: Some("0123456789abcdef".repeat(4)),
            blob_etag: Some("\"9b2cf535f27731c974343645a3985328-13\"".into()),
        },
        inline_data: Some(data),
    }
}

/// Registers `blob` with `size` and a lease until `lease_until` (never taking over a claim).
pub(crate) async fn reserve(
    backend: &DynMetadata,
    blob: &BlobId,
    size: u64,
    lease_until: Timestamp,
) {
    backend
        .reserve_blob(blob, size, lease_until, NEVER_STALE)
        .await
        .unwrap_or_else(|e| panic!("reserve_blob({blob}) failed: {e}"));
}

pub(crate) async fn put_ok(backend: &DynMetadata, record: EntryRecord) -> Option<EntryMeta> {
    let key = record.meta.key.clone();
    backend
        .put(record)
        .await
        .unwrap_or_else(|e| panic!("put({key}) failed: {e}"))
}

pub(crate) async fn get_ok(backend: &DynMetadata, key: &CacheKey) -> Option<EntryRecord> {
    backend
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get({key}) failed: {e}"))
}

async fn stats_ok(backend: &DynMetadata) -> IndexStats {
    backend
        .stats()
        .await
        .unwrap_or_else(|e| panic!("stats() failed: {e}"))
}

pub(crate) async fn list_ok(backend: &DynMetadata, query: &ListQuery) -> Vec<EntryMeta> {
    backend
        .list(query)
        .await
        .unwrap_or_else(|e| panic!("list({query:?}) failed: {e}"))
}

pub(crate) async fn claim_ok(
    backend: &DynMetadata,
    candidates: Option<&[BlobId]>,
    now: Timestamp,
    limit: usize,
) -> Vec<BlobId> {
    let mut claimed = backend
        .claim_unreferenced_blobs(candidates, now, limit)
        .await
        .unwrap_or_else(|e| panic!("claim_unreferenced_blobs(now = {now}) failed: {e}"));
    claimed.sort();
    claimed
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T>, what: &str) {
    match result {
        Err(Error::Conflict { .. }) => {}
        other => panic!("{what}: expected Err(Error::Conflict), got {other:?}"),
    }
}

pub(crate) fn keys_of(metas: &[EntryMeta]) -> Vec<CacheKey> {
    metas.iter().map(|m| m.key.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------------

/// `name()` is a non-empty short name for messages.
pub async fn name_is_not_empty(backend: &DynMetadata) {
    assert!(
        !backend.name().is_empty(),
        "name() must be a short non-empty name"
    );
}

// ---------------------------------------------------------------------------------------------
// get / get_meta
// ---------------------------------------------------------------------------------------------

/// `get` and `get_meta` of a key that was never written return `Ok(None)`, not an error.
pub async fn get_of_missing_key_returns_none(backend: &DynMetadata) {
    put_ok(backend, sample_record(&test_key("", "present"))).await;
    let missing = test_key("", "missing");
    assert_eq!(
        get_ok(backend, &missing).await,
        None,
        "get of a missing key must return Ok(None)"
    );
    assert_eq!(
        backend.get_meta(&missing).await.expect("get_meta failed"),
        None,
        "get_meta of a missing key must return Ok(None)"
    );
}

/// `get` returns the record exactly as written by `put`.
pub async fn get_returns_record_as_put(backend: &DynMetadata) {
    let record = sample_record(&test_key("", "k1"));
    put_ok(backend, record.clone()).await;
    assert_eq!(
        get_ok(backend, &record.meta.key).await,
        Some(record),
        "get must return the record exactly as put"
    );
}

/// `get_meta` returns the same metadata as `get`, for inline and blob entries alike.
pub async fn get_meta_returns_meta_without_inline_data(backend: &DynMetadata) {
    let inline = rich_record(&test_key("ns", "inline"));
    let blob = test_blob_id(1);
    reserve(backend, &blob, 10, T0).await;
    let in_blob = sample_blob_record(&test_key("ns", "blob"), &blob, 10);
    for record in [inline, in_blob] {
        put_ok(backend, record.clone()).await;
        let meta = backend
            .get_meta(&record.meta.key)
            .await
            .expect("get_meta failed");
        assert_eq!(
            meta,
            Some(record.meta.clone()),
            "get_meta must return the metadata as put"
        );
    }
}

/// The same id in two namespaces names two independent entries.
pub async fn keys_in_different_namespaces_are_different_entries(backend: &DynMetadata) {
    let in_a = test_key("a", "same-id");
    let in_b = test_key("b", "same-id");
    let in_default = test_key("", "same-id");
    let record_a = inline_record(&in_a, Bytes::from_static(b"value in a"));
    let record_b = inline_record(&in_b, Bytes::from_static(b"value in b"));
    assert_eq!(put_ok(backend, record_a.clone()).await, None);
    assert_eq!(
        put_ok(backend, record_b.clone()).await,
        None,
        "putting b/same-id must not replace a/same-id"
    );
    assert_eq!(get_ok(backend, &in_a).await, Some(record_a.clone()));
    assert_eq!(get_ok(backend, &in_b).await, Some(record_b));
    assert_eq!(
        get_ok(backend, &in_default).await,
        None,
        "the default namespace must not see a/same-id or b/same-id"
    );
    let removed = backend.delete(&in_b).await.expect("delete failed");
    assert!(removed.is_some(), "delete(b/same-id) must remove it");
    assert_eq!(
        get_ok(backend, &in_a).await,
        Some(record_a),
        "deleting b/same-id must leave a/same-id"
    );
}

/// Inline data comes back byte for byte: empty, every byte value, NULs, large values, and an
/// inline location without data (`None`, distinct from empty).
pub async fn inline_data_round_trips_byte_exact(backend: &DynMetadata) {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let mut pseudo_random = Vec::with_capacity(64 * 1024);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    while pseudo_random.len() < 64 * 1024 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        pseudo_random.extend_from_slice(&state.to_le_bytes());
    }
    let values: Vec<(&str, Bytes)> = vec![
        ("empty", Bytes::new()),
        ("all-bytes", Bytes::from(all_bytes)),
        ("nuls", Bytes::from_static(&[0, 0, 0, 1, 0])),
        ("invalid-utf8", Bytes::from_static(b"\xc3\x28\xa0\xa1\xff")),
        ("64KiB", Bytes::from(pseudo_random)),
    ];
    for (id, data) in values {
        let record = inline_record(&test_key("", id), data);
        put_ok(backend, record.clone()).await;
        let got = get_ok(backend, &record.meta.key).await;
        assert_eq!(
            got.as_ref().and_then(|r| r.inline_data.as_ref()),
            record.inline_data.as_ref(),
            "inline data `{id}` must round-trip byte-exact"
        );
        assert_eq!(got, Some(record), "record `{id}` must round-trip");
    }
    let mut no_data = sample_record(&test_key("", "inline-without-data"));
    no_data.inline_data = None;
    put_ok(backend, no_data.clone()).await;
    assert_eq!(
        get_ok(backend, &no_data.meta.key).await,
        Some(no_data),
        "inline_data None must come back as None, not as empty bytes"
    );
}

/// Every `EntryMeta` field round-trips exactly: JSON params and user metadata (nested,
/// unicode, extreme numbers), tags in their order, signature, type name, every data type and
/// compression, both digest algorithms, and `None` vs `Some` for each optional field.
pub async fn all_entry_meta_fields_round_trip_exactly(backend: &DynMetadata) {
    let rich = rich_record(&test_key("fields", "rich"));
    put_ok(backend, rich.clone()).await;
    assert_eq!(
        get_ok(backend, &rich.meta.key).await,
        Some(rich.clone()),
        "a record with every optional field set must round-trip exactly"
    );

    let mut bare = sample_record(&test_key("fields", "bare"));
    bare.meta.params = None;
    put_ok(backend, bare.clone()).await;
    assert_eq!(
        get_ok(backend, &bare.meta.key).await,
        Some(bare),
        "a record with every optional field None must round-trip exactly"
    );

    let mut empty_json = sample_record(&test_key("fields", "empty-json"));
    empty_json.meta.params = Some(json!({}));
    empty_json.meta.user_metadata = Some(json!({}));
    empty_json.meta.tags = vec!["only".into()];
    empty_json.meta.signature = Some(String::new());
    empty_json.meta.type_name = Some(String::new());
    put_ok(backend, empty_json.clone()).await;
    assert_eq!(
        get_ok(backend, &empty_json.meta.key).await,
        Some(empty_json),
        "empty JSON objects and empty strings must come back as Some, not None"
    );

    let data_types = [
        DataType::Bytes,
        DataType::MessagePack,
        DataType::Json,
        DataType::Other("npy".into()),
    ];
    let compressions = [
        Compression::None,
        Compression::Lz4,
        Compression::Zstd(1),
        Compression::Zstd(22),
    ];
    let digests = [
        ContentDigest::Xxh3_128(0),
        ContentDigest::Xxh3_128(u128::MAX),
        ContentDigest::Sha256([0; 32]),
        ContentDigest::Sha256([0xff; 32]),
    ];
    for (i, ((data_type, compression), digest)) in data_types
        .into_iter()
        .zip(compressions)
        .zip(digests)
        .enumerate()
    {
        let mut record = sample_record(&test_key("variants", &format!("v{i}")));
        record.meta.data_type = data_type;
        record.meta.compression = compression;
        record.meta.digest = digest;
        put_ok(backend, record.clone()).await;
        assert_eq!(
            get_ok(backend, &record.meta.key).await,
            Some(record.clone()),
            "data type {}, compression {}, digest {} must round-trip",
            record.meta.data_type,
            record.meta.compression,
            record.meta.digest
        );
    }
}

/// Sizes and counts up to `i64::MAX` and timestamps anywhere in `i64` (negative, zero,
/// extremes) round-trip exactly.
pub async fn large_sizes_and_extreme_timestamps_round_trip(backend: &DynMetadata) {
    let mut record = sample_record(&test_key("", "extremes"));
    record.meta.raw_size = i64::MAX as u64;
    record.meta.stored_size = (1u64 << 53) + 1;
    record.meta.access_count = i64::MAX as u64;
    record.meta.created_at = Timestamp(i64::MIN);
    record.meta.updated_at = Timestamp(0);
    record.meta.accessed_at = Timestamp(-1);
    record.meta.expires_at = Some(Timestamp(i64::MAX));
    put_ok(backend, record.clone()).await;
    assert_eq!(
        get_ok(backend, &record.meta.key).await,
        Some(record),
        "sizes up to i64::MAX and timestamps i64::MIN, -1, 0, i64::MAX must round-trip"
    );

    let mut zeros = sample_record(&test_key("", "zeros"));
    zeros.meta.raw_size = 0;
    zeros.meta.stored_size = 0;
    zeros.meta.created_at = Timestamp(0);
    zeros.meta.accessed_at = Timestamp(0);
    zeros.meta.expires_at = Some(Timestamp(0));
    put_ok(backend, zeros.clone()).await;
    assert_eq!(
        get_ok(backend, &zeros.meta.key).await,
        Some(zeros),
        "zero sizes and zero timestamps must round-trip (Some(0) is not None)"
    );
}

/// A size or count above `i64::MAX` either round-trips exactly or is refused with an error
/// that leaves the index unchanged; it is never stored wrapped or truncated.
pub async fn sizes_beyond_i64_max_round_trip_or_are_refused(backend: &DynMetadata) {
    type Mutation = (&'static str, fn(&mut EntryMeta));
    let mutations: [Mutation; 3] = [
        ("raw_size", |m| m.raw_size = u64::MAX),
        ("stored_size", |m| m.stored_size = i64::MAX as u64 + 1),
        ("access_count", |m| m.access_count = u64::MAX),
    ];
    for (field, mutate) in mutations {
        let mut record = sample_record(&test_key("", field));
        mutate(&mut record.meta);
        match backend.put(record.clone()).await {
            Ok(_) => assert_eq!(
                get_ok(backend, &record.meta.key).await,
                Some(record),
                "an accepted {field} above i64::MAX must round-trip exactly"
            ),
            Err(_) => assert_eq!(
                get_ok(backend, &record.meta.key).await,
                None,
                "a refused put ({field} above i64::MAX) must store nothing"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// put
// ---------------------------------------------------------------------------------------------

/// `put` returns `None` for a new key and the replaced entry's metadata otherwise.
pub async fn put_returns_replaced_entry(backend: &DynMetadata) {
    let key = test_key("", "replaced");
    let first = rich_record(&key);
    let second = inline_record(&key, Bytes::from_static(b"second value"));
    assert_eq!(
        put_ok(backend, first.clone()).await,
        None,
        "put of a new key must return None"
    );
    assert_eq!(
        put_ok(backend, second.clone()).await,
        Some(first.meta),
        "put over an existing key must return the replaced entry's metadata"
    );
    assert_eq!(
        get_ok(backend, &key).await,
        Some(second),
        "get after a replacing put must return the new record"
    );
}

/// A replacing `put` writes the whole new record: nothing of the old one survives, including
/// `created_at`, access data, inline data (when moving to a blob) and optional fields.
pub async fn put_replaces_the_whole_record(backend: &DynMetadata) {
    let key = test_key("", "whole");
    let old = rich_record(&key);
    put_ok(backend, old.clone()).await;

    let blob = test_blob_id(7);
    reserve(backend, &blob, 99, T0).await;
    let mut in_blob = sample_blob_record(&key, &blob, 99);
    in_blob.meta.params = None;
    in_blob.meta.created_at = Timestamp(old.meta.created_at.0 + 10_000);
    in_blob.meta.accessed_at = Timestamp(3);
    in_blob.meta.access_count = 1;
    put_ok(backend, in_blob.clone()).await;
    assert_eq!(
        get_ok(backend, &key).await,
        Some(in_blob),
        "after replacing an inline entry by a blob entry, get must return exactly the new \
         record (created_at overwritten, no inline data, no old tags/metadata/signature)"
    );

    let mut back_inline = sample_record(&key);
    back_inline.meta.created_at = Timestamp(1);
    put_ok(backend, back_inline.clone()).await;
    assert_eq!(
        get_ok(backend, &key).await,
        Some(back_inline),
        "after replacing a blob entry by an inline one, get must return exactly the new record"
    );
}

/// `put` of an entry whose blob is not registered fails with `Error::Conflict` and changes
/// nothing.
pub async fn put_with_unregistered_blob_is_a_conflict(backend: &DynMetadata) {
    let blob = test_blob_id(1);
    let new_key = test_key("", "new");
    assert_conflict(
        backend.put(sample_blob_record(&new_key, &blob, 10)).await,
        "put of a new entry referencing an unregistered blob",
    );
    assert_eq!(
        get_ok(backend, &new_key).await,
        None,
        "a refused put must not create the entry"
    );

    let existing = sample_record(&test_key("", "existing"));
    put_ok(backend, existing.clone()).await;
    assert_conflict(
        backend
            .put(sample_blob_record(&existing.meta.key, &blob, 10))
            .await,
        "put replacing an entry by one referencing an unregistered blob",
    );
    assert_eq!(
        get_ok(backend, &existing.meta.key).await,
        Some(existing),
        "a refused put must leave the existing entry unchanged"
    );
    let stats = stats_ok(backend).await;
    assert_eq!(
        (stats.entries, stats.blobs),
        (1, 0),
        "a refused put must not register the blob nor add an entry"
    );
}

/// `put` of an entry whose blob is claimed for collection fails with `Error::Conflict` and
/// changes nothing.
pub async fn put_with_claimed_blob_is_a_conflict(backend: &DynMetadata) {
    let blob = test_blob_id(2);
    reserve(backend, &blob, 10, T0).await;
    assert_eq!(claim_ok(backend, None, T0, 10).await, vec![blob.clone()]);

    let key = test_key("", "on-claimed");
    assert_conflict(
        backend.put(sample_blob_record(&key, &blob, 10)).await,
        "put of an entry referencing a claimed blob",
    );
    assert_eq!(
        get_ok(backend, &key).await,
        None,
        "a refused put must not create the entry"
    );

    let existing = sample_record(&test_key("", "existing"));
    put_ok(backend, existing.clone()).await;
    assert_conflict(
        backend
            .put(sample_blob_record(&existing.meta.key, &blob, 10))
            .await,
        "put replacing an entry by one referencing a claimed blob",
    );
    assert_eq!(
        get_ok(backend, &existing.meta.key).await,
        Some(existing),
        "a refused put must leave the existing entry unchanged"
    );
}

/// `put` of an entry whose blob is registered and not claimed succeeds, whether its lease is
/// live or has expired.
pub async fn put_with_registered_unclaimed_blob_succeeds(backend: &DynMetadata) {
    let live = test_blob_id(3);
    let expired = test_blob_id(4);
    reserve(backend, &live, 10, Timestamp(T0.0 + 60_000)).await;
    reserve(backend, &expired, 20, Timestamp(T0.0 - 60_000)).await;
    for (id, blob, size) in [("live", &live, 10), ("expired", &expired, 20)] {
        let record = sample_blob_record(&test_key("", id), blob, size);
        put_ok(backend, record.clone()).await;
        assert_eq!(
            get_ok(backend, &record.meta.key).await,
            Some(record),
            "put referencing a registered blob with a {id} lease must succeed"
        );
    }
}

/// Concurrent readers never see a record mixing fields of two writes.
pub async fn readers_never_observe_partial_records(backend: &DynMetadata) {
    fn version(key: &CacheKey, v: u64) -> EntryRecord {
        let data = Bytes::from(vec![v as u8; 100 + (v as usize % 7) * 1000]);
        let mut record = inline_record(key, data);
        record.meta.tags = vec![format!("v{v}")];
        record.meta.user_metadata = Some(json!({ "v": v }));
        record.meta.created_at = Timestamp(v as i64);
        record.meta.access_count = v;
        record
    }
    fn check(record: &EntryRecord) {
        let v = record.meta.access_count;
        let data = record.inline_data.as_ref().expect("inline data missing");
        assert_eq!(
            record,
            &version(&record.meta.key, v),
            "a reader observed a record that is not exactly one written version (v = {v}, \
             {} data bytes)",
            data.len()
        );
    }

    let key = test_key("", "contended");
    put_ok(backend, version(&key, 0)).await;
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let backend = Arc::clone(backend);
        let key = key.clone();
        let done = Arc::clone(&done);
        readers.push(tokio::spawn(async move {
            let mut seen = 0u64;
            while !done.load(Ordering::Acquire) {
                let record = backend.get(&key).await.expect("get failed");
                check(&record.expect("the contended entry disappeared"));
                seen += 1;
                tokio::task::yield_now().await;
            }
            seen
        }));
    }
    for v in 1..=200 {
        put_ok(backend, version(&key, v)).await;
        if v % 8 == 0 {
            tokio::task::yield_now().await;
        }
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        reader.await.expect("a reader task panicked");
    }
    check(&get_ok(backend, &key).await.expect("entry missing"));
    assert_eq!(
        get_ok(backend, &key).await,
        Some(version(&key, 200)),
        "the last write must win"
    );
}

/// Concurrent `put`s of distinct keys all land.
pub async fn concurrent_puts_of_distinct_keys_all_land(backend: &DynMetadata) {
    let mut tasks = Vec::new();
    for t in 0..8 {
        let backend = Arc::clone(backend);
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let record = sample_record(&test_key(&format!("t{t}"), &format!("k{i:02}")));
                backend.put(record).await.expect("concurrent put failed");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a writer task panicked");
    }
    let listed = list_ok(backend, &ListQuery::default()).await;
    assert_eq!(listed.len(), 200, "every concurrent put must land");
    for meta in listed {
        assert_eq!(
            get_ok(backend, &meta.key).await,
            Some(sample_record(&meta.key)),
            "entry {} must be exactly as put",
            meta.key
        );
    }
}

// ---------------------------------------------------------------------------------------------
// delete
// ---------------------------------------------------------------------------------------------

/// `delete` removes the entry and returns its metadata.
pub async fn delete_returns_removed_entry(backend: &DynMetadata) {
    let record = rich_record(&test_key("", "doomed"));
    put_ok(backend, record.clone()).await;
    let removed = backend
        .delete(&record.meta.key)
        .await
        .expect("delete failed");
    assert_eq!(
        removed,
        Some(record.meta.clone()),
        "delete must return the removed entry's metadata"
    );
    assert_eq!(
        get_ok(backend, &record.meta.key).await,
        None,
        "a deleted entry must be gone"
    );
}

/// `delete` of a missing key succeeds and returns `None`.
pub async fn delete_of_missing_key_returns_none(backend: &DynMetadata) {
    let key = test_key("", "never-written");
    assert_eq!(
        backend.delete(&key).await.expect("delete failed"),
        None,
        "delete of a missing key must return Ok(None)"
    );
    let record = sample_record(&test_key("", "once"));
    put_ok(backend, record.clone()).await;
    backend
        .delete(&record.meta.key)
        .await
        .expect("delete failed");
    assert_eq!(
        backend
            .delete(&record.meta.key)
            .await
            .expect("second delete failed"),
        None,
        "deleting twice must return None the second time"
    );
}

/// `delete` leaves the blob registered; the blob becomes claimable instead.
pub async fn delete_does_not_unregister_blob(backend: &DynMetadata) {
    let blob = test_blob_id(5);
    reserve(backend, &blob, 77, T0).await;
    let record = sample_blob_record(&test_key("", "in-blob"), &blob, 77);
    put_ok(backend, record.clone()).await;
    backend
        .delete(&record.meta.key)
        .await
        .expect("delete failed");
    let stats = stats_ok(backend).await;
    assert_eq!(
        (stats.blobs, stats.blob_bytes),
        (1, 77),
        "delete must not remove the blob registration"
    );
    assert_eq!(
        claim_ok(backend, None, T0, 10).await,
        vec![blob],
        "after its only entry is deleted, the blob must be claimable"
    );
}

// ---------------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------------

/// `list` is ordered by `(namespace, id)` ascending in byte order (not by the concatenated
/// text, not case-insensitive, not UTF-16 order).
pub async fn list_is_ordered_by_namespace_then_id(backend: &DynMetadata) {
    let expected = [
        ("", "B"),
        ("", "a"),
        ("", "a0"),
        ("", "b"),
        ("", "\u{ff}"),
        ("", "\u{fffd}"),
        ("", "\u{1f600}"),
        ("a", "z"),
        ("a-", "a"),
        ("b", "0"),
    ];
    // Insert in a scrambled order.
    for i in [7, 2, 9, 0, 5, 3, 8, 1, 6, 4] {
        let (ns, id) = expected[i];
        put_ok(backend, sample_record(&test_key(ns, id))).await;
    }
    let listed = list_ok(backend, &ListQuery::default()).await;
    let got: Vec<(String, String)> = listed
        .iter()
        .map(|m| (m.key.namespace().to_owned(), m.key.id().to_owned()))
        .collect();
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(ns, id)| ((*ns).to_owned(), (*id).to_owned()))
        .collect();
    assert_eq!(
        got, want,
        "list must be ordered by namespace, then id, in byte order"
    );
}

/// `list` returns the same metadata as `get_meta`.
pub async fn list_returns_entry_metadata(backend: &DynMetadata) {
    let records = [
        rich_record(&test_key("", "rich")),
        sample_record(&test_key("", "sample")),
    ];
    for record in &records {
        put_ok(backend, record.clone()).await;
    }
    let listed = list_ok(backend, &ListQuery::default()).await;
    let want: Vec<EntryMeta> = records.iter().map(|r| r.meta.clone()).collect();
    assert_eq!(
        listed, want,
        "list must return each entry's metadata as put"
    );
}

/// `list` returns at most `limit` entries, the first ones in order.
pub async fn list_applies_limit(backend: &DynMetadata) {
    for i in 0..5 {
        put_ok(backend, sample_record(&test_key("", &format!("k{i}")))).await;
    }
    let query = ListQuery {
        limit: 2,
        ..ListQuery::default()
    };
    assert_eq!(
        keys_of(&list_ok(backend, &query).await),
        vec![test_key("", "k0"), test_key("", "k1")],
        "list with limit 2 must return the first two entries"
    );
    let query = ListQuery {
        limit: 50,
        ..ListQuery::default()
    };
    assert_eq!(
        list_ok(backend, &query).await.len(),
        5,
        "a limit above the number of entries must return them all"
    );
}

/// `list` with `limit` 0 returns at most the default page size, 1000 entries.
pub async fn list_with_zero_limit_returns_default_page(backend: &DynMetadata) {
    let total = DEFAULT_PAGE_SIZE + 1;
    for i in 0..total {
        put_ok(backend, sample_record(&test_key("", &format!("k{i:05}")))).await;
    }
    let page = list_ok(backend, &ListQuery::default()).await;
    assert_eq!(
        page.len(),
        DEFAULT_PAGE_SIZE,
        "limit 0 must mean the default page size of {DEFAULT_PAGE_SIZE}"
    );
    assert_eq!(page[0].key, test_key("", "k00000"));
    let query = ListQuery {
        limit: total + 10,
        ..ListQuery::default()
    };
    assert_eq!(
        list_ok(backend, &query).await.len(),
        total,
        "an explicit limit above the default page size must be honoured"
    );
}

/// `list` with a namespace returns only that namespace's entries (exact match, not prefix).
pub async fn list_filters_by_namespace(backend: &DynMetadata) {
    for (ns, id) in [("", "x"), ("a", "x"), ("a", "y"), ("ab", "x"), ("a-", "x")] {
        put_ok(backend, sample_record(&test_key(ns, id))).await;
    }
    let query = ListQuery::matching(EntryFilter::all().namespace("a"));
    assert_eq!(
        keys_of(&list_ok(backend, &query).await),
        vec![test_key("a", "x"), test_key("a", "y")],
        "namespace filter must match the namespace exactly"
    );
    let query = ListQuery::matching(EntryFilter::all().namespace(""));
    assert_eq!(
        keys_of(&list_ok(backend, &query).await),
        vec![test_key("", "x")],
        "Some(\"\") must select the default namespace only"
    );
}

/// `list` with an id prefix returns only ids starting with it: case-sensitive, with `%`, `_`
/// and `*` taken literally, across namespaces when no namespace is given.
pub async fn list_filters_by_id_prefix(backend: &DynMetadata) {
    let ids = [
        "A", "a", "a%c", "a*c", "aB", "a_c", "ab", "abc", "ac", "b", "é", "éa",
    ];
    for id in ids {
        put_ok(backend, sample_record(&test_key("", id))).await;
    }
    put_ok(backend, sample_record(&test_key("other", "ab-other"))).await;
    let cases: [(&str, Vec<CacheKey>); 6] = [
        (
            "a",
            ["a", "a%c", "a*c", "aB", "a_c", "ab", "abc", "ac"]
                .iter()
                .map(|id| test_key("", id))
                .chain([test_key("other", "ab-other")])
                .collect(),
        ),
        (
            "ab",
            vec![
                test_key("", "ab"),
                test_key("", "abc"),
                test_key("other", "ab-other"),
            ],
        ),
        ("a%", vec![test_key("", "a%c")]),
        ("a_", vec![test_key("", "a_c")]),
        ("a*", vec![test_key("", "a*c")]),
        ("é", vec![test_key("", "é"), test_key("", "éa")]),
    ];
    for (prefix, want) in cases {
        let query = ListQuery::matching(EntryFilter::all().id_prefix(prefix));
        assert_eq!(
            keys_of(&list_ok(backend, &query).await),
            want,
            "id prefix {prefix:?} must match ids starting with it, literally and case-sensitively"
        );
    }
    let query = ListQuery::matching(EntryFilter::all().id_prefix(""));
    assert_eq!(
        list_ok(backend, &query).await.len(),
        ids.len() + 1,
        "an empty id prefix must match every id"
    );
}

/// `list` with `expires_at_or_before` returns only entries with an expiry at or before it;
/// entries that never expire are not returned.
pub async fn list_filters_by_expiry(backend: &DynMetadata) {
    for (id, expires) in [
        ("early", Some(T0.0 - 1)),
        ("exact", Some(T0.0)),
        ("late", Some(T0.0 + 1)),
        ("never", None),
    ] {
        let mut record = sample_record(&test_key("", id));
        record.meta.expires_at = expires.map(Timestamp);
        put_ok(backend, record).await;
    }
    let query = ListQuery::matching(EntryFilter::all().expires_at_or_before(T0));
    assert_eq!(
        keys_of(&list_ok(backend, &query).await),
        vec![test_key("", "early"), test_key("", "exact")],
        "expiry filter must include entries expiring at or before the bound, and no \
         entry without expiry"
    );
}

/// Namespace, id prefix, expiry, `after` and `limit` all apply together.
pub async fn list_filters_by_namespace_prefix_and_expiry(backend: &DynMetadata) {
    for ns in ["", "n", "n2"] {
        for id in ["p1", "p2", "p3", "p4", "q1"] {
            let mut record = sample_record(&test_key(ns, id));
            if id != "p3" {
                record.meta.expires_at = Some(Timestamp(T0.0 - 10));
            }
            put_ok(backend, record).await;
        }
    }
    let query = ListQuery {
        filter: EntryFilter::all()
            .namespace("n")
            .id_prefix("p")
            .expires_at_or_before(T0),
        after: Some(test_key("n", "p1")),
        limit: 2,
    };
    assert_eq!(
        keys_of(&list_ok(backend, &query).await),
        vec![test_key("n", "p2"), test_key("n", "p4")],
        "every filter must apply: namespace n, prefix p, expired, after n/p1, at most 2"
    );
}

/// Paging with `after` = the last key of the previous page visits every matching entry exactly
/// once, in order.
pub async fn list_pages_visit_each_entry_once(backend: &DynMetadata) {
    let mut all = Vec::new();
    for ns in ["", "a", "b"] {
        for i in 0..9 {
            let key = test_key(ns, &format!("k{i}"));
            put_ok(backend, sample_record(&key)).await;
            all.push(key);
        }
    }
    all.sort();
    for (filter, want) in [
        (None, all.clone()),
        (
            Some("a".to_owned()),
            all.iter()
                .filter(|k| k.namespace() == "a")
                .cloned()
                .collect::<Vec<_>>(),
        ),
    ] {
        let mut seen = Vec::new();
        let mut after = None;
        for _ in 0..100 {
            let page = list_ok(
                backend,
                &ListQuery {
                    filter: EntryFilter {
                        namespace: filter.clone(),
                        ..EntryFilter::default()
                    },
                    after: after.clone(),
                    limit: 4,
                },
            )
            .await;
            assert!(page.len() <= 4, "a page must hold at most `limit` entries");
            match page.last() {
                None => break,
                Some(last) => after = Some(last.key.clone()),
            }
            seen.extend(keys_of(&page));
        }
        assert_eq!(
            seen, want,
            "paging (namespace filter {filter:?}) must visit every entry exactly once, in order"
        );
    }
}

/// `after` need not be an existing key: listing starts strictly after it.
pub async fn list_after_a_missing_key_starts_after_it(backend: &DynMetadata) {
    for (ns, id) in [("", "a"), ("", "c"), ("m", "a"), ("z", "a")] {
        put_ok(backend, sample_record(&test_key(ns, id))).await;
    }
    let query = ListQuery {
        after: Some(test_key("", "b")),
        ..ListQuery::default()
    };
    assert_eq!(
        keys_of(&list_ok(backend, &query).await),
        vec![test_key("", "c"), test_key("m", "a"), test_key("z", "a")],
        "after a missing key, list must start at the next key in order"
    );
    let query = ListQuery {
        after: Some(test_key("k", "zzz")),
        ..ListQuery::default()
    };
    assert_eq!(
        keys_of(&list_ok(backend, &query).await),
        vec![test_key("m", "a"), test_key("z", "a")],
        "after a key in a missing namespace, list must continue with the next namespace"
    );
}

// ---------------------------------------------------------------------------------------------
// record_access
// ---------------------------------------------------------------------------------------------

/// `accessed_at` becomes the later of its value and the batch's times; `access_count` grows
/// by every `hits`, including several records for one key in one batch.
pub async fn record_access_keeps_latest_time_and_sums_hits(backend: &DynMetadata) {
    let key = test_key("", "read");
    let mut record = sample_record(&key);
    record.meta.accessed_at = T0;
    record.meta.access_count = 2;
    put_ok(backend, record).await;
    let at = |ms: i64| Timestamp(T0.0 + ms);
    backend
        .record_access(&[
            AccessRecord {
                key: key.clone(),
                at: at(10),
                hits: 3,
            },
            AccessRecord {
                key: key.clone(),
                at: at(5),
                hits: 4,
            },
        ])
        .await
        .expect("record_access failed");
    let meta = get_ok(backend, &key).await.expect("entry missing").meta;
    assert_eq!(
        (meta.accessed_at, meta.access_count),
        (at(10), 9),
        "accessed_at must be the latest time and access_count the sum of hits"
    );
    backend
        .record_access(&[AccessRecord {
            key: key.clone(),
            at: at(-100),
            hits: 1,
        }])
        .await
        .expect("record_access failed");
    let meta = get_ok(backend, &key).await.expect("entry missing").meta;
    assert_eq!(
        (meta.accessed_at, meta.access_count),
        (at(10), 10),
        "an older access time must not move accessed_at back, but its hits still count"
    );
}

/// Accesses to keys that do not exist are ignored (no error, no entry created); the rest of
/// the batch still applies. An empty batch is accepted.
pub async fn record_access_ignores_missing_keys(backend: &DynMetadata) {
    let present = test_key("", "present");
    let missing = test_key("", "missing");
    put_ok(backend, sample_record(&present)).await;
    backend
        .record_access(&[
            AccessRecord {
                key: missing.clone(),
                at: Timestamp(T0.0 + 1),
                hits: 5,
            },
            AccessRecord {
                key: present.clone(),
                at: Timestamp(T0.0 + 2),
                hits: 1,
            },
        ])
        .await
        .expect("record_access with a missing key must succeed");
    assert_eq!(
        get_ok(backend, &missing).await,
        None,
        "record_access must not create entries"
    );
    let meta = get_ok(backend, &present).await.expect("entry missing").meta;
    assert_eq!(
        (meta.accessed_at, meta.access_count),
        (Timestamp(T0.0 + 2), 1),
        "the existing key in the same batch must be updated"
    );
    backend
        .record_access(&[])
        .await
        .expect("an empty batch must be accepted");
    assert_eq!(stats_ok(backend).await.entries, 1);
}

/// `record_access` changes nothing but `accessed_at` and `access_count`: not `updated_at`,
/// not the signature, not the data.
pub async fn record_access_changes_only_access_fields(backend: &DynMetadata) {
    let record = rich_record(&test_key("", "signed"));
    put_ok(backend, record.clone()).await;
    let later = Timestamp(record.meta.accessed_at.0 + 1_000);
    backend
        .record_access(&[AccessRecord {
            key: record.meta.key.clone(),
            at: later,
            hits: 2,
        }])
        .await
        .expect("record_access failed");
    let mut want = record.clone();
    want.meta.accessed_at = later;
    want.meta.access_count += 2;
    assert_eq!(
        get_ok(backend, &record.meta.key).await,
        Some(want),
        "record_access must change only accessed_at and access_count"
    );
}

/// Concurrent `record_access` batches lose no hits.
pub async fn concurrent_record_access_sums_every_hit(backend: &DynMetadata) {
    let keys = [test_key("", "hot-a"), test_key("", "hot-b")];
    for key in &keys {
        put_ok(backend, sample_record(key)).await;
    }
    let mut tasks = Vec::new();
    for t in 0..8i64 {
        let backend = Arc::clone(backend);
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25i64 {
                let batch: Vec<AccessRecord> = keys
                    .iter()
                    .map(|key| AccessRecord {
                        key: key.clone(),
                        at: Timestamp(T0.0 + t * 100 + i),
                        hits: 1,
                    })
                    .collect();
                backend
                    .record_access(&batch)
                    .await
                    .expect("concurrent record_access failed");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a task panicked");
    }
    for key in &keys {
        let meta = get_ok(backend, key).await.expect("entry missing").meta;
        assert_eq!(
            (meta.access_count, meta.accessed_at),
            (200, Timestamp(T0.0 + 7 * 100 + 24)),
            "8 tasks x 25 batches of 1 hit must give 200 hits on {key} and the latest time"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// update_expiry
// ---------------------------------------------------------------------------------------------

/// `update_expiry` sets `expires_at`, `updated_at` and `signature` together and nothing else;
/// `None` clears expiry and signature.
pub async fn update_expiry_changes_only_expiry_fields(backend: &DynMetadata) {
    let record = rich_record(&test_key("", "ttl"));
    put_ok(backend, record.clone()).await;
    let expires = Some(Timestamp(T0.0 + 1_000_000));
    let updated = Timestamp(T0.0 + 5);
    let signature = Some("f".repeat(64));
    let found = backend
        .update_expiry(&record.meta.key, None, expires, updated, signature.clone())
        .await
        .expect("update_expiry failed");
    assert!(found, "update_expiry of an existing key must return true");
    let mut want = record.clone();
    want.meta.expires_at = expires;
    want.meta.updated_at = updated;
    want.meta.signature = signature;
    assert_eq!(
        get_ok(backend, &record.meta.key).await,
        Some(want.clone()),
        "update_expiry must set expires_at, updated_at and signature and nothing else"
    );

    let updated_again = Timestamp(T0.0 + 6);
    assert!(
        backend
            .update_expiry(&record.meta.key, None, None, updated_again, None)
            .await
            .expect("update_expiry failed")
    );
    want.meta.expires_at = None;
    want.meta.updated_at = updated_again;
    want.meta.signature = None;
    assert_eq!(
        get_ok(backend, &record.meta.key).await,
        Some(want),
        "update_expiry with None must clear expires_at and signature"
    );
}

/// With `if_signature`, `update_expiry` applies only while the entry still carries that
/// signature: a touch that raced with a rewrite changes nothing and reports `false`.
pub async fn update_expiry_applies_only_to_the_signature_it_expects(backend: &DynMetadata) {
    let mut record = sample_record(&test_key("", "signed"));
    record.meta.signature = Some("aa".repeat(32));
    put_ok(backend, record.clone()).await;
    let stale = "bb".repeat(32);
    let changed = backend
        .update_expiry(
            &record.meta.key,
            Some(&stale),
            Some(T0),
            T0,
            Some("cc".repeat(32)),
        )
        .await
        .expect("update_expiry failed");
    assert!(
        !changed,
        "an update expecting another signature must report false"
    );
    let meta = backend
        .get_meta(&record.meta.key)
        .await
        .expect("get_meta failed")
        .expect("entry");
    assert_eq!(
        meta, record.meta,
        "an update expecting another signature must change nothing"
    );
    let current = "aa".repeat(32);
    let changed = backend
        .update_expiry(
            &record.meta.key,
            Some(&current),
            Some(T0),
            T0,
            Some("dd".repeat(32)),
        )
        .await
        .expect("update_expiry failed");
    assert!(changed, "an update expecting the current signature applies");
    let meta = backend
        .get_meta(&record.meta.key)
        .await
        .expect("get_meta failed")
        .expect("entry");
    assert_eq!(meta.signature.as_deref(), Some("dd".repeat(32).as_str()));
    assert_eq!(meta.expires_at, Some(T0));
}

/// `update_expiry` of a missing key returns `false` and creates nothing.
pub async fn update_expiry_of_missing_key_returns_false(backend: &DynMetadata) {
    let key = test_key("", "absent");
    let found = backend
        .update_expiry(&key, None, Some(T0), T0, None)
        .await
        .expect("update_expiry failed");
    assert!(!found, "update_expiry of a missing key must return false");
    assert_eq!(
        get_ok(backend, &key).await,
        None,
        "update_expiry must not create an entry"
    );
}

// ---------------------------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------------------------

/// An empty index has all-zero totals.
pub async fn stats_of_empty_index_are_zero(backend: &DynMetadata) {
    assert_eq!(
        stats_ok(backend).await,
        IndexStats::default(),
        "an empty index must report zero everywhere"
    );
}

/// `stats` counts every entry (expired or not), inline entries, raw and stored bytes per entry
/// (a shared blob once per entry), and each registered blob once with its size.
pub async fn stats_count_entries_and_blobs_once(backend: &DynMetadata) {
    let shared = test_blob_id(10);
    let single = test_blob_id(11);
    let unreferenced = test_blob_id(12);
    reserve(backend, &shared, 1_000, T0).await;
    reserve(backend, &single, 300, T0).await;
    reserve(backend, &unreferenced, 50, T0).await;
    // Reserving again must not count the blob twice.
    reserve(backend, &shared, 1_000, Timestamp(T0.0 + 1)).await;

    let inline = sample_record(&test_key("", "inline"));
    let mut expired = sample_record(&test_key("", "expired"));
    expired.meta.expires_at = Some(Timestamp(1));
    let shared_1 = sample_blob_record(&test_key("", "shared-1"), &shared, 1_000);
    let shared_2 = sample_blob_record(&test_key("x", "shared-2"), &shared, 1_000);
    let on_single = sample_blob_record(&test_key("", "single"), &single, 300);
    let records = [inline, expired, shared_1, shared_2, on_single];
    for record in &records {
        put_ok(backend, record.clone()).await;
    }
    let want = IndexStats {
        entries: 5,
        inline_entries: 2,
        raw_bytes: records.iter().map(|r| r.meta.raw_size).sum(),
        stored_bytes: records.iter().map(|r| r.meta.stored_size).sum(),
        blobs: 3,
        blob_bytes: 1_350,
    };
    assert_eq!(
        stats_ok(backend).await,
        want,
        "stats must count every entry and each registered blob once"
    );
}

// ---------------------------------------------------------------------------------------------
// Blob registry
// ---------------------------------------------------------------------------------------------

/// `reserve_blob` registers the blob with its size, so an entry may reference it.
pub async fn reserve_blob_registers_the_blob(backend: &DynMetadata) {
    let blob = test_blob_id(20);
    reserve(backend, &blob, 4_096, Timestamp(T0.0 + 1_000)).await;
    let stats = stats_ok(backend).await;
    assert_eq!(
        (stats.blobs, stats.blob_bytes),
        (1, 4_096),
        "a reserved blob must be registered with its size"
    );
    put_ok(
        backend,
        sample_blob_record(&test_key("", "uses"), &blob, 4_096),
    )
    .await;
}

/// While `now < lease_until`, an unreferenced blob is not claimed; from `now == lease_until`
/// it is.
pub async fn reserved_blob_is_not_claimed_until_lease_expires(backend: &DynMetadata) {
    let blob = test_blob_id(21);
    let lease = Timestamp(T0.0 + 100);
    reserve(backend, &blob, 1, lease).await;
    assert_eq!(
        claim_ok(backend, None, Timestamp(lease.0 - 1), 10).await,
        Vec::<BlobId>::new(),
        "a blob must not be claimed while its lease is live"
    );
    assert_eq!(
        claim_ok(
            backend,
            Some(std::slice::from_ref(&blob)),
            Timestamp(lease.0 - 1),
            10
        )
        .await,
        Vec::<BlobId>::new(),
        "a blob named as candidate must not be claimed while its lease is live"
    );
    assert_eq!(
        claim_ok(backend, None, lease, 10).await,
        vec![blob],
        "a blob must be claimable once lease_until <= now"
    );
}

/// Reserving again keeps the later of the current and the new lease.
pub async fn reserve_blob_keeps_the_later_lease(backend: &DynMetadata) {
    let blob = test_blob_id(22);
    reserve(backend, &blob, 1, Timestamp(T0.0 + 100)).await;
    reserve(backend, &blob, 1, Timestamp(T0.0 + 50)).await;
    assert_eq!(
        claim_ok(backend, None, Timestamp(T0.0 + 60), 10).await,
        Vec::<BlobId>::new(),
        "a shorter re-reservation must not shorten the lease"
    );
    reserve(backend, &blob, 1, Timestamp(T0.0 + 200)).await;
    assert_eq!(
        claim_ok(backend, None, Timestamp(T0.0 + 150), 10).await,
        Vec::<BlobId>::new(),
        "a longer re-reservation must extend the lease"
    );
    assert_eq!(
        claim_ok(backend, None, Timestamp(T0.0 + 200), 10).await,
        vec![blob]
    );
}

/// A blob referenced by an entry is never claimed, whatever its lease, with or without
/// candidates, whichever namespace the entry is in.
pub async fn referenced_blob_is_never_claimed(backend: &DynMetadata) {
    let blob = test_blob_id(23);
    let other_ns_blob = test_blob_id(24);
    reserve(backend, &blob, 1, Timestamp(i64::MIN)).await;
    reserve(backend, &other_ns_blob, 1, Timestamp(i64::MIN)).await;
    put_ok(backend, sample_blob_record(&test_key("", "ref"), &blob, 1)).await;
    put_ok(
        backend,
        sample_blob_record(&test_key("elsewhere", "ref"), &other_ns_blob, 1),
    )
    .await;
    let far_future = Timestamp(i64::MAX);
    assert_eq!(
        claim_ok(backend, None, far_future, 100).await,
        Vec::<BlobId>::new(),
        "referenced blobs must never be claimed"
    );
    let both = [blob.clone(), other_ns_blob.clone()];
    assert_eq!(
        claim_ok(backend, Some(&both), far_future, 100).await,
        Vec::<BlobId>::new(),
        "referenced blobs named as candidates must never be claimed"
    );
    put_ok(
        backend,
        sample_blob_record(&test_key("", "ref-2"), &blob, 1),
    )
    .await;
}

/// Once the last entry referencing a blob is deleted or moved to another blob, the blob is
/// claimable (and the blob still referenced is not).
pub async fn blob_of_deleted_or_replaced_entry_becomes_claimable(backend: &DynMetadata) {
    let old = test_blob_id(25);
    let new = test_blob_id(26);
    let deleted = test_blob_id(27);
    for blob in [&old, &new, &deleted] {
        reserve(backend, blob, 1, T0).await;
    }
    let moved_key = test_key("", "moved");
    put_ok(backend, sample_blob_record(&moved_key, &old, 1)).await;
    put_ok(backend, sample_blob_record(&moved_key, &new, 1)).await;
    let deleted_key = test_key("", "deleted");
    put_ok(backend, sample_blob_record(&deleted_key, &deleted, 1)).await;
    backend.delete(&deleted_key).await.expect("delete failed");
    let mut want = vec![old, deleted];
    want.sort();
    assert_eq!(
        claim_ok(backend, None, T0, 10).await,
        want,
        "blobs no longer referenced must be claimable, the still-referenced one not"
    );
}

/// `claim_unreferenced_blobs` with candidates considers only those (unregistered candidates
/// are ignored); without, it considers every registered blob.
pub async fn claim_considers_only_candidates(backend: &DynMetadata) {
    let [a, b, c, unregistered] = [30, 31, 32, 33].map(test_blob_id);
    for blob in [&a, &b, &c] {
        reserve(backend, blob, 1, T0).await;
    }
    assert_eq!(
        claim_ok(backend, Some(&[a.clone(), unregistered.clone()]), T0, 10).await,
        vec![a],
        "only eligible candidates must be claimed; unregistered candidates are ignored"
    );
    put_ok(backend, sample_blob_record(&test_key("", "b"), &b, 1)).await;
    assert_eq!(
        claim_ok(backend, Some(&[]), T0, 10).await,
        Vec::<BlobId>::new(),
        "an empty candidate list must claim nothing"
    );
    assert_eq!(
        claim_ok(backend, None, T0, 10).await,
        vec![c],
        "without candidates every eligible registered blob must be considered"
    );
    assert!(
        backend
            .claim_unregistered_blob(&unregistered, T0)
            .await
            .expect("claim_unregistered_blob failed"),
        "an unregistered candidate must stay unregistered"
    );
}

/// `claim_unreferenced_blobs` claims at most `limit` blobs (none for 0); the rest stay
/// claimable.
pub async fn claim_respects_limit(backend: &DynMetadata) {
    let blobs: Vec<BlobId> = (40..45).map(test_blob_id).collect();
    for blob in &blobs {
        reserve(backend, blob, 1, T0).await;
    }
    assert_eq!(
        claim_ok(backend, None, T0, 0).await,
        Vec::<BlobId>::new(),
        "limit 0 must claim nothing"
    );
    let first = claim_ok(backend, None, T0, 2).await;
    assert_eq!(first.len(), 2, "limit 2 must claim exactly 2 of 5 eligible");
    let from_candidates = claim_ok(backend, Some(&blobs), T0, 1).await;
    assert_eq!(
        from_candidates.len(),
        1,
        "limit 1 with candidates must claim exactly 1"
    );
    let rest = claim_ok(backend, None, T0, 100).await;
    assert_eq!(rest.len(), 2, "the remaining 2 must still be claimable");
    let mut all: Vec<BlobId> = first
        .into_iter()
        .chain(from_candidates)
        .chain(rest)
        .collect();
    all.sort();
    assert_eq!(all, blobs, "over the three calls each blob is claimed once");
}

/// A claimed blob is not claimed again by a later collection.
pub async fn claimed_blob_is_not_claimed_twice(backend: &DynMetadata) {
    let blob = test_blob_id(50);
    reserve(backend, &blob, 1, T0).await;
    assert_eq!(claim_ok(backend, None, T0, 10).await, vec![blob.clone()]);
    assert_eq!(
        claim_ok(backend, None, Timestamp(T0.0 + 1), 10).await,
        Vec::<BlobId>::new(),
        "an already claimed blob must not be returned again"
    );
    assert_eq!(
        claim_ok(backend, Some(&[blob]), Timestamp(T0.0 + 1), 10).await,
        Vec::<BlobId>::new(),
        "an already claimed candidate must not be returned again"
    );
}

/// Racing `put` (referencing a blob) against `claim_unreferenced_blobs` (of that blob):
/// exactly one wins; never an entry on a claimed blob.
pub async fn claim_and_put_never_both_succeed(backend: &DynMetadata) {
    let rounds = 40u64;
    let mut tasks = Vec::new();
    for i in 0..rounds {
        let blob = test_blob_id(1_000 + i);
        reserve(backend, &blob, 1, T0).await;
        let key = test_key("race", &format!("k{i}"));
        let putter = {
            let backend = Arc::clone(backend);
            let record = sample_blob_record(&key, &blob, 1);
            tokio::spawn(async move { backend.put(record).await })
        };
        let claimer = {
            let backend = Arc::clone(backend);
            let blob = blob.clone();
            tokio::spawn(
                async move { backend.claim_unreferenced_blobs(Some(&[blob]), T0, 1).await },
            )
        };
        tasks.push((key, blob, putter, claimer));
    }
    for (key, blob, putter, claimer) in tasks {
        let put = putter.await.expect("put task panicked");
        let claimed = claimer
            .await
            .expect("claim task panicked")
            .expect("claim_unreferenced_blobs failed");
        let put_won = match put {
            Ok(_) => true,
            Err(Error::Conflict { .. }) => false,
            Err(e) => panic!("put racing a claim must succeed or be a Conflict, got {e}"),
        };
        let claim_won = claimed == vec![blob.clone()];
        assert!(
            put_won != claim_won,
            "exactly one of put and claim must win for {blob} (put won: {put_won}, claim won: \
             {claim_won})"
        );
        assert_eq!(
            get_ok(backend, &key).await.is_some(),
            put_won,
            "the entry must exist exactly when put won"
        );
    }
}

/// A claimed blob refuses `reserve_blob` with `Error::Conflict` (changing nothing) until the
/// collector releases it; after the release it can be registered and used again.
pub async fn claimed_blob_blocks_reserve_until_released(backend: &DynMetadata) {
    let blob = test_blob_id(60);
    reserve(backend, &blob, 8, T0).await;
    assert_eq!(claim_ok(backend, None, T0, 10).await, vec![blob.clone()]);
    assert_conflict(
        backend
            .reserve_blob(&blob, 8, Timestamp(T0.0 + 1_000), Timestamp(T0.0 - 1))
            .await,
        "reserve of a blob with a fresh claim",
    );
    assert_conflict(
        backend
            .put(sample_blob_record(&test_key("", "k"), &blob, 8))
            .await,
        "put after a refused reserve (the claim must still stand)",
    );
    backend
        .release_claimed_blobs(std::slice::from_ref(&blob))
        .await
        .expect("release_claimed_blobs failed");
    assert_eq!(
        stats_ok(backend).await.blobs,
        0,
        "release must forget the claimed blob"
    );
    reserve(backend, &blob, 8, Timestamp(T0.0 + 1_000)).await;
    put_ok(backend, sample_blob_record(&test_key("", "k"), &blob, 8)).await;
}

/// `reserve_blob` takes over a claim older than `stale_claim_before` (strictly): the claim is
/// cancelled, the reservation stands, and a release no longer removes the blob.
pub async fn stale_claim_is_taken_over_by_reserve(backend: &DynMetadata) {
    let blob = test_blob_id(61);
    reserve(backend, &blob, 8, T0).await;
    assert_eq!(claim_ok(backend, None, T0, 10).await, vec![blob.clone()]);
    assert_conflict(
        backend
            .reserve_blob(&blob, 8, Timestamp(T0.0 + 1_000), T0)
            .await,
        "reserve with stale_claim_before equal to the claim time (not older)",
    );
    let lease = Timestamp(T0.0 + 1_000);
    backend
        .reserve_blob(&blob, 8, lease, Timestamp(T0.0 + 1))
        .await
        .expect("reserve must take over a claim older than stale_claim_before");
    let record = sample_blob_record(&test_key("", "k"), &blob, 8);
    put_ok(backend, record.clone()).await;
    backend
        .release_claimed_blobs(std::slice::from_ref(&blob))
        .await
        .expect("release_claimed_blobs failed");
    assert_eq!(
        stats_ok(backend).await.blobs,
        1,
        "a release after the takeover must not remove the (no longer claimed) blob"
    );
    backend
        .delete(&record.meta.key)
        .await
        .expect("delete failed");
    assert_eq!(
        claim_ok(backend, None, Timestamp(lease.0 - 1), 10).await,
        Vec::<BlobId>::new(),
        "the takeover's lease must protect the blob"
    );
}

/// `delete_expired` removes exactly the entries whose `expires_at <= now` (up to `limit`),
/// returns their metadata, keeps entries without expiry or expiring later, and keeps blobs.
pub async fn delete_expired_removes_only_expired_entries(backend: &DynMetadata) {
    let mut expired = Vec::new();
    for (i, expires) in [
        Some(T0.0 - 5),
        Some(T0.0),
        None,
        Some(T0.0 + 1),
        Some(T0.0 - 1),
    ]
    .into_iter()
    .enumerate()
    {
        let mut record = sample_record(&test_key("", &format!("e{i}")));
        record.meta.expires_at = expires.map(Timestamp);
        put_ok(backend, record).await;
        if expires.is_some_and(|t| t <= T0.0) {
            expired.push(format!("e{i}"));
        }
    }
    let blob = test_blob_id(90);
    reserve(backend, &blob, 8, T0).await;
    let mut with_blob = sample_blob_record(&test_key("", "eb"), &blob, 8);
    with_blob.meta.expires_at = Some(Timestamp(T0.0 - 10));
    put_ok(backend, with_blob).await;
    expired.push("eb".into());
    let removed = backend
        .delete_expired(T0, 2)
        .await
        .expect("delete_expired failed");
    assert_eq!(removed.len(), 2, "delete_expired must respect its limit");
    let mut all: Vec<String> = removed.iter().map(|m| m.key.id().to_owned()).collect();
    loop {
        let more = backend
            .delete_expired(T0, 2)
            .await
            .expect("delete_expired failed");
        if more.is_empty() {
            break;
        }
        all.extend(more.iter().map(|m| m.key.id().to_owned()));
    }
    all.sort();
    expired.sort();
    assert_eq!(
        all, expired,
        "exactly the entries expiring at or before now are deleted"
    );
    for kept in ["e2", "e3"] {
        assert!(
            backend
                .get_meta(&test_key("", kept))
                .await
                .expect("get_meta failed")
                .is_some(),
            "{kept} (no or later expiry) must survive"
        );
    }
    assert_eq!(
        stats_ok(backend).await.blobs,
        1,
        "delete_expired does not unregister blobs"
    );
}

/// A claim older than `stale_before` is taken over (claimed again at `now`) by
/// `reclaim_abandoned_claims`; younger claims and unclaimed blobs are left alone.
pub async fn reclaim_abandoned_claims_takes_over_only_stale_claims(backend: &DynMetadata) {
    let (old, young, live) = (test_blob_id(91), test_blob_id(92), test_blob_id(93));
    for blob in [&old, &young, &live] {
        reserve(backend, blob, 8, T0).await;
    }
    assert_eq!(
        claim_ok(backend, Some(std::slice::from_ref(&old)), T0, 10).await,
        vec![old.clone()]
    );
    let later = Timestamp(T0.0 + 5_000);
    assert_eq!(
        claim_ok(backend, Some(std::slice::from_ref(&young)), later, 10).await,
        vec![young.clone()]
    );
    let reclaimed = backend
        .reclaim_abandoned_claims(Timestamp(T0.0 + 10_000), Timestamp(T0.0 + 1_000), 10)
        .await
        .expect("reclaim_abandoned_claims failed");
    assert_eq!(
        reclaimed,
        vec![old.clone()],
        "only the claim older than stale_before is taken over"
    );
    let again = backend
        .reclaim_abandoned_claims(Timestamp(T0.0 + 10_001), Timestamp(T0.0 + 1_000), 10)
        .await
        .expect("reclaim_abandoned_claims failed");
    assert!(
        again.is_empty(),
        "a reclaimed claim is fresh again (dated now), not stale"
    );
    backend
        .release_claimed_blobs(&[old])
        .await
        .expect("release failed");
    assert_eq!(
        stats_ok(backend).await.blobs,
        2,
        "the reclaimed blob is released like any claim"
    );
}

/// `claim_unregistered_blob` records a claim only when no registration exists; a registered
/// blob (reserved or claimed) is left unchanged and `false` is returned.
pub async fn claim_unregistered_blob_only_when_absent(backend: &DynMetadata) {
    let leftover = test_blob_id(70);
    assert!(
        backend
            .claim_unregistered_blob(&leftover, T0)
            .await
            .expect("claim_unregistered_blob failed"),
        "an unregistered blob must be claimed (true)"
    );
    assert!(
        !backend
            .claim_unregistered_blob(&leftover, T0)
            .await
            .expect("claim_unregistered_blob failed"),
        "a second claim of the same blob must return false"
    );
    assert_conflict(
        backend
            .put(sample_blob_record(&test_key("", "k"), &leftover, 1))
            .await,
        "put on a blob claimed as a leftover",
    );
    assert_conflict(
        backend
            .reserve_blob(&leftover, 1, Timestamp(T0.0 + 1_000), Timestamp(T0.0 - 1))
            .await,
        "reserve of a blob freshly claimed as a leftover",
    );

    let reserved = test_blob_id(71);
    reserve(backend, &reserved, 5, Timestamp(T0.0 + 1_000)).await;
    assert!(
        !backend
            .claim_unregistered_blob(&reserved, T0)
            .await
            .expect("claim_unregistered_blob failed"),
        "a reserved blob is registered: claim_unregistered_blob must return false"
    );
    put_ok(
        backend,
        sample_blob_record(&test_key("", "on-reserved"), &reserved, 5),
    )
    .await;
    assert_eq!(
        stats_ok(backend).await.blobs,
        2,
        "the leftover claim and the reservation must each be one registration"
    );
}

/// A leftover claimed by `claim_unregistered_blob` is forgotten by `release_claimed_blobs`
/// like any claim.
pub async fn unregistered_claim_is_released_like_any_claim(backend: &DynMetadata) {
    let leftover = test_blob_id(72);
    assert!(
        backend
            .claim_unregistered_blob(&leftover, T0)
            .await
            .expect("claim_unregistered_blob failed")
    );
    backend
        .release_claimed_blobs(std::slice::from_ref(&leftover))
        .await
        .expect("release_claimed_blobs failed");
    assert_eq!(stats_ok(backend).await.blobs, 0, "the claim must be gone");
    assert!(
        backend
            .claim_unregistered_blob(&leftover, T0)
            .await
            .expect("claim_unregistered_blob failed"),
        "after the release the blob is unregistered again"
    );
}

/// `release_claimed_blobs` removes claimed registrations only; reserved blobs and unknown
/// ids are ignored.
pub async fn release_removes_only_claimed(backend: &DynMetadata) {
    let reserved = test_blob_id(80);
    let claimed = test_blob_id(81);
    let unknown = test_blob_id(82);
    reserve(backend, &reserved, 3, T0).await;
    reserve(backend, &claimed, 4, T0).await;
    assert_eq!(
        claim_ok(backend, Some(std::slice::from_ref(&claimed)), T0, 10).await,
        vec![claimed.clone()]
    );
    backend
        .release_claimed_blobs(&[reserved.clone(), claimed.clone(), unknown.clone()])
        .await
        .expect("release_claimed_blobs failed");
    let stats = stats_ok(backend).await;
    assert_eq!(
        (stats.blobs, stats.blob_bytes),
        (1, 3),
        "only the claimed registration must be removed"
    );
    put_ok(
        backend,
        sample_blob_record(&test_key("", "on-reserved"), &reserved, 3),
    )
    .await;
    assert_conflict(
        backend
            .put(sample_blob_record(
                &test_key("", "on-released"),
                &claimed,
                4,
            ))
            .await,
        "put on a released (unregistered) blob",
    );
    assert!(
        backend
            .claim_unregistered_blob(&unknown, T0)
            .await
            .expect("claim_unregistered_blob failed"),
        "releasing an unknown id must not register it"
    );
    backend
        .release_claimed_blobs(&[])
        .await
        .expect("releasing nothing must succeed");
}

// ---------------------------------------------------------------------------------------------
// flush
// ---------------------------------------------------------------------------------------------

/// `flush` succeeds and keeps every completed write visible.
pub async fn flush_keeps_completed_writes(backend: &DynMetadata) {
    let record = sample_record(&test_key("", "flushed"));
    put_ok(backend, record.clone()).await;
    backend
        .record_access(&[AccessRecord {
            key: record.meta.key.clone(),
            at: Timestamp(T0.0 + 1),
            hits: 1,
        }])
        .await
        .expect("record_access failed");
    backend.flush().await.expect("flush failed");
    let meta = get_ok(backend, &record.meta.key)
        .await
        .expect("entry missing after flush")
        .meta;
    assert_eq!(
        (meta.accessed_at, meta.access_count),
        (Timestamp(T0.0 + 1), 1),
        "flush must keep every completed write"
    );
    backend.flush().await.expect("a second flush failed");
}

// ---------------------------------------------------------------------------------------------
// run_all
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Key locks
// ---------------------------------------------------------------------------------------------

async fn lock_key(backend: &DynMetadata, key: &CacheKey) -> Option<Box<dyn crate::KeyLock>> {
    backend
        .try_lock_key(key)
        .await
        .unwrap_or_else(|e| panic!("try_lock_key({key}) failed: {e}"))
}

/// A held key lock is refused to everyone else until it is released, then granted again.
pub async fn key_lock_is_exclusive_until_released(backend: &DynMetadata) {
    if !backend.capabilities().key_locks {
        return;
    }
    let key = test_key("locks", "exclusive");
    let held = lock_key(backend, &key)
        .await
        .expect("a free key's lock is granted");
    assert!(
        lock_key(backend, &key).await.is_none(),
        "a held lock must be refused to another caller"
    );
    held.release().await.expect("release succeeds");
    let again = lock_key(backend, &key)
        .await
        .expect("a released lock is granted again");
    again.release().await.expect("release succeeds");
}

/// Holding one key's lock does not block another key's.
pub async fn key_locks_of_different_keys_are_independent(backend: &DynMetadata) {
    if !backend.capabilities().key_locks {
        return;
    }
    let a = lock_key(backend, &test_key("locks", "a"))
        .await
        .expect("lock a granted");
    let b = lock_key(backend, &test_key("locks", "b"))
        .await
        .expect("lock b granted while a is held");
    let other_ns = lock_key(backend, &test_key("locks-other", "a"))
        .await
        .expect("the same id in another namespace is another key");
    for lock in [a, b, other_ns] {
        lock.release().await.expect("release succeeds");
    }
}

/// A lock dropped without `release` is freed (possibly shortly after the drop).
pub async fn dropped_key_lock_is_released(backend: &DynMetadata) {
    if !backend.capabilities().key_locks {
        return;
    }
    let key = test_key("locks", "dropped");
    drop(lock_key(backend, &key).await.expect("lock granted"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(lock) = lock_key(backend, &key).await {
            lock.release().await.expect("release succeeds");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a dropped lock must be released within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `try_lock_key` fails with `Error::Unsupported` exactly when the capability is off.
pub async fn key_locks_are_unsupported_only_without_the_capability(backend: &DynMetadata) {
    let result = backend.try_lock_key(&test_key("locks", "cap")).await;
    match (backend.capabilities().key_locks, result) {
        (true, Ok(Some(lock))) => lock.release().await.expect("release succeeds"),
        (true, other) => panic!(
            "key_locks is advertised, so a free key's lock must be granted, got {:?}",
            other.map(|l| l.is_some())
        ),
        (false, Err(Error::Unsupported { .. })) => {}
        (false, other) => panic!(
            "key_locks is not advertised, so try_lock_key must fail with Unsupported, got {:?}",
            other.map(|l| l.is_some())
        ),
    }
}

/// Runs every behavior of the suite, each on a fresh backend from `factory`.
///
/// Every behavior runs even when an earlier one fails; at the end, panics listing every
/// failing behavior by name (each failure's own message is printed by the panic hook).
/// Must be called within a Tokio runtime.
pub async fn run_all<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn MetadataBackend>>,
{
    let mut failures: Vec<&'static str> = Vec::new();
    let mut ran = 0usize;
    macro_rules! run {
        ($($behavior:ident),* $(,)?) => {$(
            let backend: DynMetadata = factory().await;
            eprintln!(
                "metadata conformance [{}]: {}",
                backend.name(),
                stringify!($behavior)
            );
            ran += 1;
            if AssertUnwindSafe($behavior(&backend)).catch_unwind().await.is_err() {
                failures.push(stringify!($behavior));
            }
        )*};
    }
    run!(
        name_is_not_empty,
        get_of_missing_key_returns_none,
        get_returns_record_as_put,
        get_meta_returns_meta_without_inline_data,
        keys_in_different_namespaces_are_different_entries,
        inline_data_round_trips_byte_exact,
        all_entry_meta_fields_round_trip_exactly,
        large_sizes_and_extreme_timestamps_round_trip,
        sizes_beyond_i64_max_round_trip_or_are_refused,
        put_returns_replaced_entry,
        put_replaces_the_whole_record,
        put_with_unregistered_blob_is_a_conflict,
        put_with_claimed_blob_is_a_conflict,
        put_with_registered_unclaimed_blob_succeeds,
        readers_never_observe_partial_records,
        concurrent_puts_of_distinct_keys_all_land,
        delete_returns_removed_entry,
        delete_of_missing_key_returns_none,
        delete_does_not_unregister_blob,
        list_is_ordered_by_namespace_then_id,
        list_returns_entry_metadata,
        list_applies_limit,
        list_with_zero_limit_returns_default_page,
        list_filters_by_namespace,
        list_filters_by_id_prefix,
        list_filters_by_expiry,
        list_filters_by_namespace_prefix_and_expiry,
        list_pages_visit_each_entry_once,
        list_after_a_missing_key_starts_after_it,
        record_access_keeps_latest_time_and_sums_hits,
        record_access_ignores_missing_keys,
        record_access_changes_only_access_fields,
        concurrent_record_access_sums_every_hit,
        update_expiry_changes_only_expiry_fields,
        update_expiry_of_missing_key_returns_false,
        update_expiry_applies_only_to_the_signature_it_expects,
        stats_of_empty_index_are_zero,
        stats_count_entries_and_blobs_once,
        reserve_blob_registers_the_blob,
        reserved_blob_is_not_claimed_until_lease_expires,
        reserve_blob_keeps_the_later_lease,
        referenced_blob_is_never_claimed,
        blob_of_deleted_or_replaced_entry_becomes_claimable,
        claim_considers_only_candidates,
        claim_respects_limit,
        claimed_blob_is_not_claimed_twice,
        claim_and_put_never_both_succeed,
        claimed_blob_blocks_reserve_until_released,
        stale_claim_is_taken_over_by_reserve,
        reclaim_abandoned_claims_takes_over_only_stale_claims,
        delete_expired_removes_only_expired_entries,
        claim_unregistered_blob_only_when_absent,
        unregistered_claim_is_released_like_any_claim,
        release_removes_only_claimed,
        flush_keeps_completed_writes,
        key_lock_is_exclusive_until_released,
        key_locks_of_different_keys_are_independent,
        dropped_key_lock_is_released,
        key_locks_are_unsupported_only_without_the_capability,
        list_applies_every_filter_like_the_reference,
        filtered_list_pages_visit_each_match_once,
        invalid_filters_are_refused,
        delete_matching_deletes_exactly_the_matches,
        delete_matching_agrees_with_list_for_every_filter,
        get_many_returns_records_in_input_order,
        get_many_answers_large_batches,
        put_many_writes_every_record,
        put_many_conditions_apply_per_record_in_order,
        put_many_reports_unavailable_blobs_and_writes_the_rest,
        delete_many_reports_each_key,
        update_expiry_many_applies_each_update,
        move_entry_moves_metadata_and_inline_data,
        move_entry_refuses_an_existing_destination_unless_asked,
        move_entry_reports_a_missing_or_changed_source,
        move_entry_keeps_its_blob_referenced,
        concurrent_move_and_delete_leave_one_entry_or_none,
        count_blob_references_counts_entries_per_blob,
        usage_counts_inline_values_and_each_blob_once,
        evict_lru_takes_the_least_recently_read_first,
        evict_lfu_ages_counts_by_half_life,
        evict_breaks_ties_by_last_read_then_key,
        evict_never_takes_entries_written_at_or_after_the_cutoff,
        evict_never_takes_pinned_entries,
        evict_stays_in_its_namespace,
        evict_by_idle_time_takes_only_entries_unread_since,
        evict_stops_at_the_byte_budget_and_entry_limit,
        evict_judges_reads_recorded_since_the_entries_were_written,
        evict_refuses_a_zero_half_life,
        evict_agrees_with_the_reference_on_a_mixed_corpus,
    );
    assert!(
        failures.is_empty(),
        "metadata conformance: {} of {ran} behaviors failed: {}",
        failures.len(),
        failures.join(", ")
    );
}
