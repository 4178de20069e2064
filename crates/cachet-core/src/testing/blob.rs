//! Blob backend conformance suite: one `pub async fn` per behavior promised in the
//! [`BlobBackend`] and [`BlobWriter`](crate::BlobWriter) docs, plus [`run_all`].
//!
//! Every function takes a fresh, empty backend and panics with a message naming the broken
//! promise. A backend crate runs the whole suite against the real service:
//!
//! ```
//! use std::sync::Arc;
//! use cachet_core::{BlobBackend, memory::MemoryBlobs};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In a backend crate: `#[tokio::test(flavor = "multi_thread")] async fn ..._pass_blob_conformance()`.
//! cachet_core::testing::blob::run_all(|| async {
//!     Arc::new(MemoryBlobs::new()) as Arc<dyn BlobBackend> // a fresh, empty backend each time
//! })
//! .await;
//! # }
//! ```
//!
//! Behaviors that depend on a capability (for example [`concurrent_reader_sees_all_or_nothing`]
//! needs `atomic_publish`) are selected by [`run_all`] from the backend's capabilities. Run the
//! suite on a multi-threaded runtime to exercise real parallelism in the concurrency tests.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, TryStreamExt};

use crate::blob::{BlobBackend, BlobInfo, ByteStream};
use crate::clock::Timestamp;
use crate::entry::{BlobId, ContentDigest};
use crate::error::{Error, Result};

/// Size of the "large" blob used by the streaming tests: several MiB, not a multiple of any
/// usual chunk size.
const LARGE: usize = 5 * 1024 * 1024 + 17;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An xxh3-128 blob id for test number `n` (ids are names; backends never check content).
fn xxh3_id(n: u128) -> BlobId {
    BlobId::from_digest(&ContentDigest::Xxh3_128(n))
}

/// A SHA-256 blob id for test number `n`.
fn sha256_id(n: u8) -> BlobId {
    BlobId::from_digest(&ContentDigest::Sha256([n; 32]))
}

/// `len` deterministic pseudo-random bytes (xorshift64*), so that reordered, repeated or
/// dropped chunks change the content.
fn pattern(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// A far-future cut-off: every abandoned upload is older than this.
fn far_future() -> Timestamp {
    Timestamp::now().plus(Duration::from_secs(24 * 3600))
}

/// Unwraps `result` or panics naming the operation and the error.
fn ok<T>(result: Result<T>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("blob conformance: {what} failed: {e}"))
}

/// Panics unless `result` is `Error::NotFound`.
fn assert_not_found<T>(result: Result<T>, what: &str) {
    match result {
        Err(Error::NotFound { .. }) => {}
        Err(e) => panic!("blob conformance: {what} should fail with Error::NotFound, got {e:?}"),
        Ok(_) => panic!("blob conformance: {what} should fail with Error::NotFound, got Ok"),
    }
}

/// Compares two byte strings without printing megabytes on failure.
fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first_diff = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "blob conformance: {what}: content differs (got {} bytes, want {}; first difference at \
         byte {first_diff})",
        got.len(),
        want.len()
    );
}

/// Concatenates a stream's chunks.
async fn collect(stream: ByteStream) -> Result<Vec<u8>> {
    stream
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await
}

/// Reads the blob through `get_stream`, panicking on any error.
async fn read_stream(backend: &dyn BlobBackend, id: &BlobId) -> Vec<u8> {
    let stream = ok(backend.get_stream(id).await, &format!("get_stream({id})"));
    ok(
        collect(stream).await,
        &format!("reading the stream of {id}"),
    )
}

/// Every blob `list` reports, panicking on any error.
async fn list_all(backend: &dyn BlobBackend) -> Vec<BlobInfo> {
    let stream = ok(backend.list().await, "list()");
    ok(stream.try_collect().await, "reading the list() stream")
}

/// Writes `data` through a streaming writer in chunks of `chunk` bytes, yielding between
/// chunks so that concurrent tasks interleave, and publishes it under `id`.
async fn write_in_chunks(backend: &dyn BlobBackend, id: &BlobId, data: &Bytes, chunk: usize) {
    let mut writer = ok(backend.writer().await, "writer()");
    for start in (0..data.len()).step_by(chunk.max(1)) {
        let end = (start + chunk).min(data.len());
        ok(writer.write(data.slice(start..end)).await, "writer.write()");
        tokio::task::yield_now().await;
    }
    ok(writer.finish(id).await, &format!("writer.finish({id})"));
}

// ---------------------------------------------------------------------------------------------
// put / get
// ---------------------------------------------------------------------------------------------

/// `put` then `get` returns exactly the bytes written.
pub async fn put_then_get_returns_same_bytes(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(1);
    let data = pattern(64 * 1024 + 3, 1);
    ok(backend.put(&id, data.clone()).await, "put");
    let got = ok(backend.get(&id).await, "get after put");
    assert_same_bytes(&got, &data, "get after put");
}

/// An empty blob is a blob: `get` returns zero bytes and `head` reports size 0.
pub async fn empty_blob_round_trips(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(2);
    ok(backend.put(&id, Bytes::new()).await, "put of an empty blob");
    let got = ok(backend.get(&id).await, "get of an empty blob");
    assert!(
        got.is_empty(),
        "blob conformance: get of an empty blob returned {} bytes",
        got.len()
    );
    let info = ok(backend.head(&id).await, "head of an empty blob");
    assert_eq!(
        info.map(|i| i.size),
        Some(0),
        "blob conformance: head of an empty blob should report size 0"
    );
}

/// Ids of both digest algorithms (xxh3-128 and sha256) are stored, read, described and listed.
pub async fn sha256_and_xxh3_ids_are_both_stored(backend: Arc<dyn BlobBackend>) {
    let a = xxh3_id(3);
    let b = sha256_id(3);
    let data_a = pattern(1000, 31);
    let data_b = pattern(2000, 32);
    ok(backend.put(&a, data_a.clone()).await, "put (xxh3-128 id)");
    ok(backend.put(&b, data_b.clone()).await, "put (sha256 id)");
    assert_same_bytes(&ok(backend.get(&a).await, "get"), &data_a, "xxh3-128 blob");
    assert_same_bytes(&ok(backend.get(&b).await, "get"), &data_b, "sha256 blob");
    let mut listed: Vec<BlobId> = list_all(&*backend)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    listed.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(
        listed, want,
        "blob conformance: list should report the xxh3-128 and the sha256 blob"
    );
}

/// `get` of a blob that was never written fails with `Error::NotFound`, and the error names
/// the blob id.
pub async fn get_of_missing_blob_is_not_found(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(4);
    match backend.get(&id).await {
        Err(Error::NotFound { what }) => assert!(
            what.contains(id.as_str()),
            "blob conformance: the NotFound error should name the blob id {id}, got `{what}`"
        ),
        Err(e) => panic!("blob conformance: get of a missing blob should be NotFound, got {e:?}"),
        Ok(b) => panic!(
            "blob conformance: get of a missing blob should be NotFound, got {} bytes",
            b.len()
        ),
    }
}

/// Writing an id that exists replaces it (same content by construction): both writes succeed
/// and the blob is stored once.
pub async fn put_same_id_twice_is_idempotent(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(5);
    let data = pattern(10_000, 5);
    ok(backend.put(&id, data.clone()).await, "first put");
    ok(
        backend.put(&id, data.clone()).await,
        "second put of the same id",
    );
    assert_same_bytes(
        &ok(backend.get(&id).await, "get"),
        &data,
        "get after two puts",
    );
    let listed = list_all(&*backend).await;
    assert_eq!(
        listed.len(),
        1,
        "blob conformance: after two puts of one id, list should report one blob, got {listed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// get_stream
// ---------------------------------------------------------------------------------------------

/// `get_stream` of a missing blob fails with `Error::NotFound` from the call itself, not from
/// the stream.
pub async fn get_stream_of_missing_blob_is_not_found(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(6);
    match backend.get_stream(&id).await {
        Err(Error::NotFound { .. }) => {}
        Err(e) => {
            panic!("blob conformance: get_stream of a missing blob should be NotFound, got {e:?}")
        }
        Ok(_) => panic!(
            "blob conformance: get_stream of a missing blob should fail from the call, \
             but returned a stream"
        ),
    }
}

/// The concatenated chunks of `get_stream` equal what was written, for a multi-MiB blob and
/// for an empty one.
pub async fn stream_concatenation_equals_content(backend: Arc<dyn BlobBackend>) {
    let large = xxh3_id(7);
    let empty = xxh3_id(8);
    let data = pattern(LARGE, 7);
    ok(
        backend.put(&large, data.clone()).await,
        "put of a large blob",
    );
    ok(
        backend.put(&empty, Bytes::new()).await,
        "put of an empty blob",
    );
    assert_same_bytes(
        &read_stream(&*backend, &large).await,
        &data,
        "get_stream of a multi-MiB blob",
    );
    assert_same_bytes(
        &read_stream(&*backend, &empty).await,
        &[],
        "get_stream of an empty blob",
    );
}

// ---------------------------------------------------------------------------------------------
// head / delete
// ---------------------------------------------------------------------------------------------

/// `head` of a stored blob reports its id and size.
pub async fn head_reports_size(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(9);
    ok(backend.put(&id, pattern(12_345, 9)).await, "put");
    let info = ok(backend.head(&id).await, "head")
        .unwrap_or_else(|| panic!("blob conformance: head of a stored blob returned None"));
    assert_eq!(info.id, id, "blob conformance: head reported another id");
    assert_eq!(
        info.size, 12_345,
        "blob conformance: head reported the wrong size"
    );
}

/// The ETag a put or a finished writer reports is the one `head` and `list` report.
pub async fn receipt_etag_matches_head_and_list(backend: Arc<dyn BlobBackend>) {
    let put_id = xxh3_id(31);
    let receipt = ok(backend.put(&put_id, pattern(2_000, 31)).await, "put");
    let written_id = xxh3_id(32);
    let mut writer = ok(backend.writer().await, "writer()");
    ok(writer.write(pattern(3_000, 32)).await, "writer.write()");
    let written = ok(writer.finish(&written_id).await, "writer.finish()");
    let listed = list_all(&*backend).await;
    for (id, receipt) in [(put_id, receipt), (written_id, written)] {
        let head = ok(backend.head(&id).await, "head")
            .unwrap_or_else(|| panic!("blob conformance: head of {id} returned None"));
        assert_eq!(
            head.etag, receipt.etag,
            "blob conformance: head of {id} reports another ETag than its receipt"
        );
        let in_list = listed
            .iter()
            .find(|info| info.id == id)
            .unwrap_or_else(|| panic!("blob conformance: list() misses {id}"));
        if in_list.etag.is_some() {
            assert_eq!(
                in_list.etag, receipt.etag,
                "blob conformance: list reports another ETag for {id} than its receipt"
            );
        }
    }
}

/// With `conditional_put`, putting an existing id keeps the stored object: same ETag, same
/// modification, and the call still succeeds.
pub async fn conditional_put_keeps_the_existing_object(backend: Arc<dyn BlobBackend>) {
    if !backend.capabilities().conditional_put {
        return;
    }
    let id = xxh3_id(33);
    let first = ok(backend.put(&id, pattern(5_000, 33)).await, "first put");
    let head = ok(backend.head(&id).await, "head").expect("stored");
    let second = ok(backend.put(&id, pattern(5_000, 33)).await, "second put");
    assert_eq!(
        second.etag, first.etag,
        "blob conformance: a put-if-absent store must return the existing object's receipt"
    );
    let again = ok(backend.head(&id).await, "head").expect("stored");
    assert_eq!(
        (again.etag, again.modified),
        (head.etag, head.modified),
        "blob conformance: a put-if-absent store must not rewrite the existing object"
    );
}

/// `head` of a missing blob returns `Ok(None)`, not an error.
pub async fn head_of_missing_is_none(backend: Arc<dyn BlobBackend>) {
    let info = ok(backend.head(&xxh3_id(10)).await, "head of a missing blob");
    assert_eq!(
        info, None,
        "blob conformance: head of a missing blob should be None"
    );
}

/// `delete` returns `true` when the blob existed and `false` when it did not (not an error).
pub async fn delete_returns_whether_it_existed(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(11);
    ok(backend.put(&id, pattern(100, 11)).await, "put");
    assert!(
        ok(backend.delete(&id).await, "delete of a stored blob"),
        "blob conformance: delete of a stored blob should return true"
    );
    assert!(
        !ok(backend.delete(&id).await, "second delete"),
        "blob conformance: delete of an already deleted blob should return false"
    );
    assert!(
        !ok(
            backend.delete(&xxh3_id(12)).await,
            "delete of a never-written blob"
        ),
        "blob conformance: delete of a never-written blob should return false"
    );
}

/// After `delete`, the blob is gone for `get`, `get_stream`, `head` and `list`; other blobs stay.
pub async fn deleted_blob_is_gone(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(13);
    let other = xxh3_id(14);
    ok(backend.put(&id, pattern(100, 13)).await, "put");
    ok(backend.put(&other, pattern(100, 14)).await, "put");
    ok(backend.delete(&id).await, "delete");
    assert_not_found(backend.get(&id).await, "get after delete");
    assert_not_found(
        backend.get_stream(&id).await.map(|_| ()),
        "get_stream after delete",
    );
    assert_eq!(
        ok(backend.head(&id).await, "head after delete"),
        None,
        "blob conformance: head after delete should be None"
    );
    let listed: Vec<BlobId> = list_all(&*backend)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(
        listed,
        vec![other],
        "blob conformance: list after delete should report only the remaining blob"
    );
}

/// A deleted blob can be written again.
pub async fn blob_can_be_written_again_after_delete(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(15);
    let data = pattern(4096, 15);
    ok(backend.put(&id, data.clone()).await, "put");
    ok(backend.delete(&id).await, "delete");
    ok(backend.put(&id, data.clone()).await, "put after delete");
    assert_same_bytes(
        &ok(backend.get(&id).await, "get"),
        &data,
        "get after delete and put",
    );
}

// ---------------------------------------------------------------------------------------------
// Streaming writer
// ---------------------------------------------------------------------------------------------

/// Nothing written through a writer is visible (to `get`, `head` or `list`) until `finish`;
/// after `finish` the blob holds the written bytes.
pub async fn writer_publishes_only_on_finish(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(16);
    let data = pattern(300_000, 16);
    let mut writer = ok(backend.writer().await, "writer()");
    ok(writer.write(data.slice(..100_000)).await, "write");
    ok(writer.write(data.slice(100_000..)).await, "write");
    assert_not_found(backend.get(&id).await, "get before finish");
    assert_eq!(
        ok(backend.head(&id).await, "head before finish"),
        None,
        "blob conformance: a blob must not be visible to head before finish"
    );
    let listed = list_all(&*backend).await;
    assert!(
        listed.is_empty(),
        "blob conformance: list before finish should be empty, got {listed:?}"
    );
    ok(writer.finish(&id).await, "finish");
    assert_same_bytes(
        &ok(backend.get(&id).await, "get after finish"),
        &data,
        "get after finish",
    );
}

/// The published blob is the concatenation of the written chunks, in order, whatever their
/// sizes (including empty chunks and chunks larger than 1 MiB).
pub async fn writer_concatenates_chunks_in_order(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(17);
    let data = pattern(3 * 1024 * 1024 + 100, 17);
    let cuts = [
        0,
        1,
        1,
        7,
        4096,
        4097,
        1_500_000,
        3 * 1024 * 1024,
        data.len(),
    ];
    let mut writer = ok(backend.writer().await, "writer()");
    for pair in cuts.windows(2) {
        ok(writer.write(data.slice(pair[0]..pair[1])).await, "write");
    }
    ok(writer.finish(&id).await, "finish");
    assert_same_bytes(
        &ok(backend.get(&id).await, "get"),
        &data,
        "blob written in chunks",
    );
}

/// A writer finished without any chunk publishes an empty blob.
pub async fn writer_without_chunks_publishes_empty_blob(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(18);
    let writer = ok(backend.writer().await, "writer()");
    ok(writer.finish(&id).await, "finish without writes");
    let info = ok(backend.head(&id).await, "head");
    assert_eq!(
        info.map(|i| i.size),
        Some(0),
        "blob conformance: a writer finished without writes should publish an empty blob"
    );
}

/// An aborted writer leaves no visible blob and no temporary data (`abort` removes it, so a
/// later `cleanup_temporary` finds nothing to remove).
pub async fn aborted_writer_leaves_nothing(backend: Arc<dyn BlobBackend>) {
    let mut writer = ok(backend.writer().await, "writer()");
    ok(writer.write(pattern(200_000, 19)).await, "write");
    ok(writer.abort().await, "abort");
    let listed = list_all(&*backend).await;
    assert!(
        listed.is_empty(),
        "blob conformance: list after abort should be empty, got {listed:?}"
    );
    let removed = ok(
        backend.cleanup_temporary(far_future()).await,
        "cleanup_temporary after abort",
    );
    assert_eq!(
        removed, 0,
        "blob conformance: abort should remove its temporary data itself, but \
         cleanup_temporary still found {removed} temporary object(s)"
    );
}

/// A writer dropped without `finish` or `abort` leaves no visible blob, and whatever temporary
/// data it left is removed by `cleanup_temporary`.
pub async fn dropped_writer_leaves_no_visible_blob(backend: Arc<dyn BlobBackend>) {
    {
        let mut writer = ok(backend.writer().await, "writer()");
        ok(writer.write(pattern(200_000, 20)).await, "write");
        drop(writer);
    }
    let listed = list_all(&*backend).await;
    assert!(
        listed.is_empty(),
        "blob conformance: list after dropping a writer should be empty, got {listed:?}"
    );
    ok(
        backend.cleanup_temporary(far_future()).await,
        "cleanup_temporary after a dropped writer",
    );
    let again = ok(
        backend.cleanup_temporary(far_future()).await,
        "second cleanup_temporary",
    );
    assert_eq!(
        again, 0,
        "blob conformance: cleanup_temporary should remove all abandoned temporary data at once, \
         but a second pass removed {again} more"
    );
    assert!(
        list_all(&*backend).await.is_empty(),
        "blob conformance: cleanup_temporary must not make a dropped upload visible"
    );
}

// ---------------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------------

/// `list` of an empty store reports nothing.
pub async fn list_of_empty_store_is_empty(backend: Arc<dyn BlobBackend>) {
    let listed = list_all(&*backend).await;
    assert!(
        listed.is_empty(),
        "blob conformance: list of a fresh store should be empty, got {listed:?}"
    );
}

/// `list` reports each published blob exactly once, with its size.
pub async fn list_reports_each_blob_once(backend: Arc<dyn BlobBackend>) {
    let mut want: Vec<(BlobId, u64)> = Vec::new();
    for n in 0..40u128 {
        // Spread ids over several shards and several sharing one shard.
        let id = xxh3_id(((n % 5) << 120) | n);
        let size = (n as usize * 37) % 1000;
        ok(backend.put(&id, pattern(size, n as u64)).await, "put");
        want.push((id, size as u64));
    }
    let sha = sha256_id(21);
    ok(backend.put(&sha, pattern(77, 21)).await, "put");
    want.push((sha, 77));
    want.sort();
    let mut got: Vec<(BlobId, u64)> = list_all(&*backend)
        .await
        .into_iter()
        .map(|i| (i.id, i.size))
        .collect();
    got.sort();
    assert_eq!(
        got, want,
        "blob conformance: list should report each blob once with its size"
    );
}

/// `list` does not report uploads in progress (temporary data).
pub async fn list_skips_temporary_uploads(backend: Arc<dyn BlobBackend>) {
    let published = xxh3_id(22);
    ok(backend.put(&published, pattern(500, 22)).await, "put");
    let mut writer = ok(backend.writer().await, "writer()");
    ok(writer.write(pattern(100_000, 23)).await, "write");
    let listed: Vec<BlobId> = list_all(&*backend)
        .await
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(
        listed,
        vec![published],
        "blob conformance: list should report only the published blob, not the upload in progress"
    );
    ok(writer.abort().await, "abort");
}

// ---------------------------------------------------------------------------------------------
// cleanup_temporary
// ---------------------------------------------------------------------------------------------

/// `cleanup_temporary` never touches published blobs, whatever the cut-off.
pub async fn cleanup_temporary_never_touches_published_blobs(backend: Arc<dyn BlobBackend>) {
    let a = xxh3_id(24);
    let b = sha256_id(24);
    let data_a = pattern(5000, 24);
    let data_b = pattern(6000, 25);
    ok(backend.put(&a, data_a.clone()).await, "put");
    write_in_chunks(&*backend, &b, &data_b, 1000).await;
    ok(
        backend.cleanup_temporary(far_future()).await,
        "cleanup_temporary",
    );
    assert_same_bytes(
        &ok(backend.get(&a).await, "get after cleanup_temporary"),
        &data_a,
        "put blob after cleanup_temporary",
    );
    assert_same_bytes(
        &ok(backend.get(&b).await, "get after cleanup_temporary"),
        &data_b,
        "streamed blob after cleanup_temporary",
    );
}

/// `cleanup_temporary(t)` never touches an upload started at or after `t`: the writer can
/// still finish and publish all of its bytes.
pub async fn cleanup_temporary_keeps_uploads_started_after_cutoff(backend: Arc<dyn BlobBackend>) {
    let cutoff = Timestamp::now();
    let id = xxh3_id(26);
    let data = pattern(150_000, 26);
    let mut writer = ok(backend.writer().await, "writer()");
    ok(writer.write(data.slice(..50_000)).await, "write");
    let removed = ok(
        backend.cleanup_temporary(cutoff).await,
        "cleanup_temporary with a cut-off before the upload started",
    );
    assert_eq!(
        removed, 0,
        "blob conformance: cleanup_temporary removed {removed} temporary object(s) of an upload \
         started after the cut-off"
    );
    ok(
        writer.write(data.slice(50_000..)).await,
        "write after cleanup",
    );
    ok(writer.finish(&id).await, "finish after cleanup");
    assert_same_bytes(
        &ok(backend.get(&id).await, "get"),
        &data,
        "upload that survived cleanup_temporary",
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

/// Several concurrent writers of the same id (whole `put`s and streaming writers) all
/// succeed, and the blob holds the content intact.
pub async fn concurrent_writers_of_same_id_all_succeed(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(27);
    let data = pattern(2 * 1024 * 1024 + 5, 27);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (backend, id, data) = (backend.clone(), id.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                ok(backend.put(&id, data).await, "concurrent put");
            } else {
                write_in_chunks(&*backend, &id, &data, 256 * 1024).await;
            }
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            panic!("blob conformance: a concurrent writer failed: {e}");
        }
    }
    assert_same_bytes(
        &ok(backend.get(&id).await, "get"),
        &data,
        "blob written by concurrent writers",
    );
    assert_eq!(
        list_all(&*backend).await.len(),
        1,
        "blob conformance: concurrent writers of one id should leave one blob"
    );
}

/// Concurrent `put`s of different ids (sharing any internal grouping such as a directory
/// shard) all succeed and are all kept.
pub async fn concurrent_puts_of_different_ids_are_all_kept(backend: Arc<dyn BlobBackend>) {
    let mut tasks = Vec::new();
    for n in 0..24u128 {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            let id = xxh3_id((0xabcd << 112) | n);
            ok(
                backend.put(&id, pattern(1000 + n as usize, n as u64)).await,
                "put",
            );
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            panic!("blob conformance: a concurrent put failed: {e}");
        }
    }
    for n in 0..24u128 {
        let id = xxh3_id((0xabcd << 112) | n);
        assert_same_bytes(
            &ok(backend.get(&id).await, "get"),
            &pattern(1000 + n as usize, n as u64),
            &format!("blob {id} written concurrently with others"),
        );
    }
    assert_eq!(
        list_all(&*backend).await.len(),
        24,
        "blob conformance: list should report all 24 concurrently written blobs"
    );
}

/// With `atomic_publish`, a reader racing a publish sees either no blob or all of it, never a
/// prefix (through `get`, `head` and `get_stream`). Requires `atomic_publish`.
pub async fn concurrent_reader_sees_all_or_nothing(backend: Arc<dyn BlobBackend>) {
    let id = xxh3_id(28);
    let data = pattern(4 * 1024 * 1024 + 1, 28);
    let writer = {
        let (backend, id, data) = (backend.clone(), id.clone(), data.clone());
        tokio::spawn(async move {
            // Stream it in small chunks so the publish takes a while.
            write_in_chunks(&*backend, &id, &data, 64 * 1024).await;
        })
    };
    loop {
        let done = writer.is_finished();
        match backend.get(&id).await {
            Ok(got) => {
                assert_same_bytes(&got, &data, "get racing a publish");
                break;
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => panic!("blob conformance: get racing a publish failed: {e}"),
        }
        if let Some(info) = ok(backend.head(&id).await, "head racing a publish") {
            assert_eq!(
                info.size,
                data.len() as u64,
                "blob conformance: head racing a publish reported a partial size"
            );
        }
        assert!(
            !done,
            "blob conformance: the writer finished but the blob is not visible"
        );
        tokio::task::yield_now().await;
    }
    if let Err(e) = writer.await {
        panic!("blob conformance: the racing writer failed: {e}");
    }
    assert_same_bytes(
        &read_stream(&*backend, &id).await,
        &data,
        "get_stream after the race",
    );
}

// ---------------------------------------------------------------------------------------------
// run_all
// ---------------------------------------------------------------------------------------------

/// Runs every behavior above on a fresh backend from `factory`, selecting capability-dependent
/// ones from the backend's [`capabilities`](BlobBackend::capabilities). Every behavior runs even
/// if an earlier one fails; then this panics listing the failed behaviors (each failure's own
/// panic message, printed as it happens, says what went wrong).
pub async fn run_all<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn BlobBackend>>,
{
    let mut failed: Vec<&'static str> = Vec::new();
    let mut ran = 0usize;
    macro_rules! run {
        ($($name:ident),* $(,)?) => {$(
            ran += 1;
            let backend = factory().await;
            if AssertUnwindSafe($name(backend)).catch_unwind().await.is_err() {
                failed.push(stringify!($name));
            }
        )*};
    }
    run!(
        put_then_get_returns_same_bytes,
        empty_blob_round_trips,
        sha256_and_xxh3_ids_are_both_stored,
        get_of_missing_blob_is_not_found,
        put_same_id_twice_is_idempotent,
        get_stream_of_missing_blob_is_not_found,
        stream_concatenation_equals_content,
        head_reports_size,
        receipt_etag_matches_head_and_list,
        conditional_put_keeps_the_existing_object,
        head_of_missing_is_none,
        delete_returns_whether_it_existed,
        deleted_blob_is_gone,
        blob_can_be_written_again_after_delete,
        writer_publishes_only_on_finish,
        writer_concatenates_chunks_in_order,
        writer_without_chunks_publishes_empty_blob,
        aborted_writer_leaves_nothing,
        dropped_writer_leaves_no_visible_blob,
        list_of_empty_store_is_empty,
        list_reports_each_blob_once,
        list_skips_temporary_uploads,
        cleanup_temporary_never_touches_published_blobs,
        cleanup_temporary_keeps_uploads_started_after_cutoff,
        concurrent_writers_of_same_id_all_succeed,
        concurrent_puts_of_different_ids_are_all_kept,
    );
    let probe = factory().await;
    if probe.capabilities().atomic_publish {
        run!(concurrent_reader_sees_all_or_nothing);
    }
    drop(probe);
    assert!(
        failed.is_empty(),
        "blob conformance: {} of {ran} behaviors failed: {}",
        failed.len(),
        failed.join(", ")
    );
}
