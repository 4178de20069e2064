//! The engine's management operations on the embedded backends (a real SQLite file and a real
//! blob directory): update in place, batches, deletes by filter, copy and move.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cachet_blob_fs::{FsBlobs, FsConfig};
use cachet_core::{
    CacheKey, DataType, EntryFilter, Error, FieldCondition, Location, ManualClock, Timestamp,
};
use cachet_meta_sqlite::{SqliteConfig, SqliteMetadata};
use cachet_storage::{BatchItem, PutOptions, SigningKey, Store, StoreConfig};
use serde_json::json;

const T0: Timestamp = Timestamp(1_700_000_000_000);
/// Longer than the default blob lease: a blob written before it can be reclaimed.
const LEASE: Duration = Duration::from_secs(61);

struct Fixture {
    store: Store,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn open_with(dir: &Path, config: StoreConfig) -> Store {
    let meta =
        SqliteMetadata::open(SqliteConfig::new(dir.join("index.sqlite"))).expect("open index");
    let blobs = FsBlobs::open(FsConfig::new(dir.join("blobs"))).expect("open blobs");
    Store::new(Arc::new(meta), Arc::new(blobs), config).expect("store")
}

fn fixture_with(signed: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut config = StoreConfig::default().with_clock(clock.clone());
    if signed {
        config = config.with_signing_key(SigningKey::from_bytes(&[7u8; 32]).unwrap());
    }
    Fixture {
        store: open_with(dir.path(), config),
        clock,
        _dir: dir,
    }
}

fn fixture() -> Fixture {
    fixture_with(false)
}

fn key(namespace: &str, id: &str) -> CacheKey {
    CacheKey::explicit(namespace, id).unwrap()
}

/// Content that does not compress and is larger than the inline threshold: lives in a blob.
fn blob_value(seed: u64) -> Vec<u8> {
    (0..40_000u64)
        .map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed) as u8)
        .collect()
}

fn options(tags: &[&str], metadata: serde_json::Value) -> PutOptions {
    PutOptions {
        params: Some(json!({"project": "x"})),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        user_metadata: Some(metadata),
        ttl: Some(Duration::from_secs(3_600)),
        ..PutOptions::default()
    }
}

// ------------------------------------------------------------------------------------ update

#[tokio::test]
async fn update_replaces_the_value_and_keeps_the_entry() {
    for signed in [false, true] {
        let f = fixture_with(signed);
        let k = key("", "model");
        let first = f
            .store
            .put_bytes(
                &k,
                &blob_value(1),
                options(&["nightly"], json!({"accuracy": 0.9})),
            )
            .await
            .unwrap();
        f.clock.advance(Duration::from_secs(60));
        let updated = f.store.update_bytes(&k, &blob_value(2)).await.unwrap();
        assert_eq!(updated.tags, first.tags, "tags are kept");
        assert_eq!(updated.params, first.params, "params are kept");
        assert_eq!(
            updated.user_metadata, first.user_metadata,
            "user metadata is kept"
        );
        assert_eq!(
            updated.created_at, first.created_at,
            "creation time is kept"
        );
        assert_eq!(updated.expires_at, first.expires_at, "expiry is kept");
        assert_eq!(updated.updated_at, T0.plus(Duration::from_secs(60)));
        assert_ne!(updated.digest, first.digest, "derived fields are refreshed");
        assert_eq!(
            f.store.get_bytes(&k).await.unwrap().as_deref(),
            Some(&blob_value(2)[..]),
            "signed = {signed}"
        );
        assert_eq!(
            f.store.stats().await.unwrap().blobs,
            1,
            "the replaced blob is reclaimed"
        );
    }
}

#[tokio::test]
async fn update_of_a_missing_key_is_not_found_and_creates_nothing() {
    let f = fixture();
    let k = key("", "absent");
    let err = f.store.update_value(&k, &42u32).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("absent"),
        "the message names the key: {err}"
    );
    assert!(f.store.metadata(&k).await.unwrap().is_none());
    let err = f.store.update_bytes(&k, &blob_value(3)).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(f.store.metadata(&k).await.unwrap().is_none());
}

#[tokio::test]
async fn update_changes_the_data_type_when_the_value_changes_kind() {
    let f = fixture();
    let k = key("", "v");
    f.store
        .put_bytes(&k, b"raw", PutOptions::default())
        .await
        .unwrap();
    let meta = f
        .store
        .update_json(&k, &json!({"now": "json"}))
        .await
        .unwrap();
    assert_eq!(meta.data_type, DataType::Json);
    let back: serde_json::Value = f.store.get_value(&k).await.unwrap().unwrap();
    assert_eq!(back, json!({"now": "json"}));
}

#[tokio::test]
async fn user_metadata_is_kept_by_touch_and_update_and_must_be_an_object() {
    let f = fixture();
    let k = key("", "m");
    f.store
        .put_bytes(&k, b"x", options(&[], json!({"model": "xgboost"})))
        .await
        .unwrap();
    f.store.set_expiry(&k, None).await.unwrap();
    f.store.update_bytes(&k, b"y").await.unwrap();
    assert_eq!(
        f.store.metadata(&k).await.unwrap().unwrap().user_metadata,
        Some(json!({"model": "xgboost"}))
    );
    let err = f
        .store
        .put_bytes(&k, b"x", options(&[], json!(["not", "an", "object"])))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

// ------------------------------------------------------------------------------------ batches

#[tokio::test]
async fn batch_get_reports_hits_misses_and_errors_per_key() {
    let f = fixture();
    let (small, big, json_value, missing) = (
        key("", "small"),
        key("", "big"),
        key("", "json"),
        key("", "missing"),
    );
    f.store
        .put_many(vec![
            BatchItem::bytes(small.clone(), &b"tiny"[..], PutOptions::default()),
            BatchItem::bytes(big.clone(), blob_value(4), PutOptions::default()),
            BatchItem::json(json_value.clone(), &json!([1, 2]), PutOptions::default()).unwrap(),
        ])
        .await
        .unwrap();
    let got = f
        .store
        .get_bytes_many(&[
            big.clone(),
            missing.clone(),
            small.clone(),
            json_value.clone(),
        ])
        .await
        .unwrap();
    assert_eq!(
        got[0].as_ref().unwrap().as_deref(),
        Some(&blob_value(4)[..])
    );
    assert!(got[1].as_ref().unwrap().is_none(), "a miss");
    assert_eq!(got[2].as_ref().unwrap().as_deref(), Some(&b"tiny"[..]));
    assert!(
        matches!(got[3], Err(Error::TypeMismatch { .. })),
        "a JSON entry read as bytes is that key's error, not the batch's"
    );
}

#[tokio::test]
async fn batch_put_replacing_entries_reclaims_their_blobs() {
    let f = fixture();
    let keys: Vec<CacheKey> = (0..10).map(|i| key("batch", &format!("k{i}"))).collect();
    let items = |seed: u64| {
        keys.iter()
            .map(|k| {
                let seed = seed + u64::from(k.id().as_bytes()[1]);
                BatchItem::bytes(k.clone(), blob_value(seed), PutOptions::default())
            })
            .collect::<Vec<_>>()
    };
    let first = f.store.put_many(items(0)).await.unwrap();
    assert_eq!(first.len(), 10);
    assert!(
        first
            .iter()
            .all(|m| matches!(m.location, Location::Blob(_)))
    );
    assert_eq!(f.store.stats().await.unwrap().blobs, 10);
    f.clock.advance(LEASE); // new blobs are protected by a writer's lease until it ends
    f.store.put_many(items(1_000)).await.unwrap();
    let stats = f.store.stats().await.unwrap();
    assert_eq!(
        (stats.entries, stats.blobs),
        (10, 10),
        "old blobs reclaimed"
    );
    for (k, meta) in keys.iter().zip(f.store.lookup_many(&keys).await.unwrap()) {
        let entry = meta.unwrap().unwrap();
        assert_eq!(
            f.store.read_bytes(&entry).await.unwrap().len(),
            40_000,
            "{k} reads back"
        );
    }
}

#[tokio::test]
async fn batch_update_updates_existing_keys_and_reports_missing_ones() {
    let f = fixture();
    let (a, b) = (key("", "a"), key("", "b"));
    f.store
        .put_bytes(&a, b"old", options(&["keep"], json!({"n": 1})))
        .await
        .unwrap();
    let got = f
        .store
        .update_many(vec![
            BatchItem::bytes(a.clone(), &b"new"[..], PutOptions::default()),
            BatchItem::bytes(b.clone(), &b"never"[..], PutOptions::default()),
        ])
        .await
        .unwrap();
    assert_eq!(got[0].as_ref().unwrap().tags, ["keep"]);
    assert!(got[1].is_none(), "a missing key is reported, not created");
    assert!(f.store.metadata(&b).await.unwrap().is_none());
    assert_eq!(
        f.store.get_bytes(&a).await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
}

#[tokio::test]
async fn batch_delete_reports_each_key_and_keeps_shared_blobs() {
    let f = fixture();
    let (a, b, c) = (key("", "a"), key("", "b"), key("", "c"));
    for k in [&a, &b] {
        f.store
            .put_bytes(k, &blob_value(5), PutOptions::default())
            .await
            .unwrap();
    }
    f.store
        .put_bytes(&c, &blob_value(6), PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        f.store.stats().await.unwrap().blobs,
        2,
        "a and b share one blob"
    );
    f.clock.advance(LEASE);
    let removed = f
        .store
        .delete_many(&[a.clone(), key("", "missing"), c.clone()])
        .await
        .unwrap();
    assert_eq!(removed, vec![true, false, true]);
    assert_eq!(
        f.store.stats().await.unwrap().blobs,
        1,
        "c's blob is reclaimed, the shared one kept"
    );
    assert_eq!(
        f.store.get_bytes(&b).await.unwrap().as_deref(),
        Some(&blob_value(5)[..])
    );
}

#[tokio::test]
async fn batch_touch_changes_expiry_and_re_signs() {
    let f = fixture_with(true);
    let (a, b) = (key("", "a"), key("", "b"));
    f.store
        .put_bytes(&a, b"x", options(&[], json!({})))
        .await
        .unwrap();
    let later = T0.plus(Duration::from_secs(86_400));
    let applied = f
        .store
        .set_expiry_many(&[(a.clone(), Some(later)), (b.clone(), None)])
        .await
        .unwrap();
    assert_eq!(applied, vec![true, false]);
    let meta = f.store.metadata(&a).await.unwrap().unwrap();
    assert_eq!(
        meta.expires_at,
        Some(later),
        "the signature verifies (metadata() checks it)"
    );
}

// ------------------------------------------------------------------------- deletes by filter

async fn put_corpus(store: &Store, clock: &ManualClock) {
    let rows: [(&str, &str, &[&str], serde_json::Value, usize); 6] = [
        (
            "models",
            "m1",
            &["prod"],
            json!({"accuracy": 0.95, "model": "xgboost"}),
            100,
        ),
        (
            "models",
            "m2",
            &["dev"],
            json!({"accuracy": 0.7, "model": "linear"}),
            40_000,
        ),
        (
            "models",
            "m3",
            &["prod", "dev"],
            json!({"accuracy": 0.85, "model": "xgboost"}),
            10,
        ),
        ("data", "d1", &["prod"], json!({"rows": 10}), 40_000),
        ("data", "d2", &[], json!({"rows": 20}), 5),
        ("tmp", "t1", &["dev"], json!({}), 1),
    ];
    for (ns, id, tags, metadata, size) in rows {
        let value = if size > 1_000 {
            blob_value(u64::from(id.as_bytes()[0]) * 10 + u64::from(id.as_bytes()[1]))
        } else {
            vec![b'v'; size]
        };
        store
            .put_bytes(
                &key(ns, id),
                &value,
                PutOptions {
                    params: Some(json!({"project": if ns == "data" { "y" } else { "x" }})),
                    tags: tags.iter().map(|t| t.to_string()).collect(),
                    user_metadata: Some(metadata),
                    ..PutOptions::default()
                },
            )
            .await
            .unwrap();
        clock.advance(Duration::from_secs(3_600));
    }
}

fn ids(keys: &[CacheKey]) -> Vec<String> {
    let mut ids: Vec<String> = keys.iter().map(|k| k.id().to_owned()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn delete_where_deletes_by_each_kind_of_filter_and_combinations() {
    let meta = |text: &str| FieldCondition::parse(text).unwrap();
    let cases: Vec<(EntryFilter, Vec<&str>)> = vec![
        (
            EntryFilter::all().namespace("models"),
            vec!["m1", "m2", "m3"],
        ),
        (EntryFilter::all().id_prefix("d"), vec!["d1", "d2"]),
        (EntryFilter::all().tag("dev"), vec!["m2", "m3", "t1"]),
        (
            EntryFilter::all().param(meta("project=y")),
            vec!["d1", "d2"],
        ),
        (
            EntryFilter::all().metadata(meta("accuracy>=0.8")),
            vec!["m1", "m3"],
        ),
        (
            EntryFilter::all().metadata(meta("model in (linear, svm)")),
            vec!["m2"],
        ),
        (
            EntryFilter::all().created_before(T0.plus(Duration::from_secs(2 * 3_600))),
            vec!["m1", "m2"],
        ),
        (EntryFilter::all().min_stored_size(10_000), vec!["d1", "m2"]),
        (EntryFilter::all().data_type(DataType::Json), vec![]),
        (
            EntryFilter::all()
                .namespace("models")
                .tag("prod")
                .metadata(meta("model=xgboost")),
            vec!["m1", "m3"],
        ),
    ];
    for (filter, want) in cases {
        let f = fixture();
        put_corpus(&f.store, &f.clock).await;
        let before = f.store.stats().await.unwrap();
        let preview = f.store.delete_where(&filter, true).await.unwrap();
        assert_eq!(ids(&preview.keys), want, "dry run of {filter:?}");
        assert_eq!(
            f.store.stats().await.unwrap(),
            before,
            "a dry run changes nothing"
        );
        let report = f.store.delete_where(&filter, false).await.unwrap();
        assert_eq!(ids(&report.keys), want, "delete of {filter:?}");
        assert_eq!(report.stored_bytes, preview.stored_bytes);
        let after = f.store.stats().await.unwrap();
        assert_eq!(after.entries, before.entries - want.len() as u64);
        let blob_entries = want.iter().filter(|id| ["m2", "d1"].contains(id)).count() as u64;
        assert_eq!(
            report.blobs_deleted, blob_entries,
            "blobs reclaimed for {filter:?}"
        );
        assert_eq!(after.blobs, before.blobs - blob_entries);
    }
}

#[tokio::test]
async fn delete_where_refuses_a_filter_it_cannot_evaluate() {
    let f = fixture();
    put_corpus(&f.store, &f.clock).await;
    let filter = EntryFilter::all().metadata(FieldCondition::compare(
        "flag",
        cachet_core::Comparison::Lt,
        true,
    ));
    let err = f.store.delete_where(&filter, false).await.unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert_eq!(f.store.stats().await.unwrap().entries, 6);
}

// ------------------------------------------------------------------------- copy and move

#[tokio::test]
async fn copy_shares_the_blob_and_refuses_an_existing_destination() {
    for signed in [false, true] {
        let f = fixture_with(signed);
        let (src, dst) = (key("", "src"), key("other", "dst"));
        f.store
            .put_bytes(&src, &blob_value(7), options(&["t"], json!({"a": 1})))
            .await
            .unwrap();
        let copy = f.store.copy_entry(&src, &dst, false).await.unwrap();
        assert_eq!(copy.tags, ["t"]);
        assert_eq!(f.store.stats().await.unwrap().blobs, 1, "no blob copied");
        assert_eq!(
            f.store.get_bytes(&dst).await.unwrap().as_deref(),
            Some(&blob_value(7)[..])
        );
        let err = f.store.copy_entry(&src, &dst, false).await.unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        f.store
            .put_bytes(&dst, b"other", PutOptions::default())
            .await
            .unwrap();
        f.store.copy_entry(&src, &dst, true).await.unwrap();
        assert_eq!(
            f.store.get_bytes(&dst).await.unwrap().as_deref(),
            Some(&blob_value(7)[..])
        );
        f.store.delete(&src).await.unwrap();
        assert_eq!(
            f.store.get_bytes(&dst).await.unwrap().as_deref(),
            Some(&blob_value(7)[..]),
            "the copy keeps the shared blob alive (signed = {signed})"
        );
    }
}

#[tokio::test]
async fn copy_of_a_missing_key_is_not_found() {
    let f = fixture();
    let err = f
        .store
        .copy_entry(&key("", "nope"), &key("", "dst"), true)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(f.store.metadata(&key("", "dst")).await.unwrap().is_none());
}

#[tokio::test]
async fn move_is_atomic_and_refuses_an_existing_destination() {
    for signed in [false, true] {
        let f = fixture_with(signed);
        let (src, dst) = (key("drafts", "r"), key("final", "r"));
        f.store
            .put_bytes(&src, &blob_value(8), options(&["t"], json!({"a": 1})))
            .await
            .unwrap();
        f.store
            .put_bytes(&dst, b"existing", PutOptions::default())
            .await
            .unwrap();
        let err = f.store.move_entry(&src, &dst, false).await.unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert!(
            f.store.metadata(&src).await.unwrap().is_some(),
            "a refused move changes nothing"
        );
        assert_eq!(
            f.store.get_bytes(&dst).await.unwrap().as_deref(),
            Some(&b"existing"[..])
        );

        let moved = f.store.move_entry(&src, &dst, true).await.unwrap();
        assert_eq!(moved.key, dst);
        assert_eq!(moved.user_metadata, Some(json!({"a": 1})));
        assert!(f.store.metadata(&src).await.unwrap().is_none());
        assert_eq!(
            f.store.get_bytes(&dst).await.unwrap().as_deref(),
            Some(&blob_value(8)[..]),
            "signed = {signed}"
        );
        assert_eq!(f.store.stats().await.unwrap().blobs, 1);
    }
}

#[tokio::test]
async fn move_of_a_missing_key_is_not_found_and_onto_itself_needs_overwrite() {
    let f = fixture();
    let err = f
        .store
        .move_entry(&key("", "nope"), &key("", "x"), true)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let k = key("", "self");
    f.store
        .put_bytes(&k, b"v", PutOptions::default())
        .await
        .unwrap();
    let err = f.store.move_entry(&k, &k, false).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    f.store.move_entry(&k, &k, true).await.unwrap();
    assert_eq!(
        f.store.get_bytes(&k).await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}
