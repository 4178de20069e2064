//! Conformance behaviors of the management methods of [`MetadataBackend`](crate::MetadataBackend): batches, filters
//! pushed down into the index, conditional writes, moves and blob reference counts.
//!
//! [`metadata::run_all`](super::metadata::run_all) runs every one of them, so a backend added
//! later inherits them. Filters are checked against [`EntryFilter::matches`], the reference
//! semantics, on a corpus of entries built to tell the conditions apart.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::metadata::{
    DynMetadata, T0, claim_ok, get_ok, inline_record, keys_of, list_ok, put_ok, reserve,
    sample_blob_record, sample_record, test_blob_id, test_key,
};
use crate::clock::Timestamp;
use crate::entry::{DataType, EntryMeta, EntryRecord, ListQuery, Location};
use crate::filter::{Comparison, EntryFilter, FieldCondition, FieldValue};
use crate::key::CacheKey;
use crate::metadata::{ExpiryUpdate, MoveOutcome, PutOutcome, WriteCondition};

/// A field name no backend may format into its query language: quotes, dots, `$`, brackets.
pub const NASTY_FIELD: &str = "we\"ird'.$[0] \\name";

/// The corpus the filter behaviors run on: twelve entries in two namespaces whose params,
/// user metadata, tags, data types, times and sizes differ so that every condition kind
/// selects a proper, non-empty subset.
pub fn filter_corpus() -> Vec<EntryRecord> {
    let metadata = [
        json!({"accuracy": 0.95, "model": "xgboost", "done": true, "n": null, NASTY_FIELD: 1}),
        json!({"accuracy": 0.8, "model": "linear", "done": false}),
        json!({"accuracy": "high", "model": "svm", "done": "yes"}),
        json!({"accuracy": 1, "model": "xgboost", "n": 0}),
        json!({"model": "Zeta", NASTY_FIELD: 2}),
        json!({"accuracy": 0.9, "model": "mlp", "done": true}),
    ];
    let tags: [&[&str]; 4] = [&["a"], &["a", "b"], &[], &["b", "c"]];
    let types = [
        DataType::Bytes,
        DataType::MessagePack,
        DataType::Json,
        DataType::Other("arrow-ipc".into()),
    ];
    (0..12u64)
        .map(|i| {
            let namespace = if i % 2 == 0 { "ns1" } else { "ns2" };
            let id = if i % 3 == 0 {
                format!("model-{i:02}")
            } else {
                format!("data-{i:02}")
            };
            let key = test_key(namespace, &id);
            let mut record = inline_record(&key, Bytes::from(vec![i as u8; 10 + i as usize * 7]));
            let meta = &mut record.meta;
            meta.params = (i != 11).then(|| {
                json!({
                    "project": if i < 6 { "x" } else { "y" },
                    "epochs": i * 5,
                    "lr": if i % 4 == 0 { 0.001 } else { 0.1 },
                    "id": id,
                })
            });
            meta.user_metadata = (i < 10).then(|| metadata[i as usize % metadata.len()].clone());
            meta.tags = tags[i as usize % tags.len()]
                .iter()
                .map(|t| t.to_string())
                .collect();
            meta.data_type = types[i as usize % types.len()].clone();
            meta.created_at = Timestamp(T0.0 - (i as i64) * 1_000);
            meta.updated_at = meta.created_at;
            meta.accessed_at = Timestamp(T0.0 + (i as i64 % 5) * 100);
            meta.expires_at = (i % 3 != 1).then(|| Timestamp(T0.0 + (i as i64 - 6) * 60_000));
            record
        })
        .collect()
}

/// Filters over [`filter_corpus`], each with a name for messages. Every one selects a proper,
/// non-empty subset of the corpus (checked by the behaviors).
pub fn corpus_filters() -> Vec<(&'static str, EntryFilter)> {
    let meta = |text: &str| {
        FieldCondition::parse(text).unwrap_or_else(|e| panic!("filter {text:?} must parse: {e}"))
    };
    let f = EntryFilter::all;
    vec![
        ("namespace", f().namespace("ns1")),
        ("id prefix", f().id_prefix("model-")),
        (
            "id prefix in namespace",
            f().namespace("ns2").id_prefix("data-"),
        ),
        ("tag", f().tag("a")),
        ("every tag", f().tag("a").tag("b")),
        ("param text equality", f().param(meta("project=x"))),
        ("param integer range", f().param(meta("epochs>=30"))),
        ("param float below", f().param(meta("lr<0.01"))),
        (
            "param int vs float equality",
            f().param(meta("epochs=25.0")),
        ),
        ("metadata float range", f().metadata(meta("accuracy>=0.9"))),
        ("metadata below", f().metadata(meta("accuracy<0.9"))),
        (
            "metadata not equal skips other kinds",
            f().metadata(meta("accuracy!=0.95")),
        ),
        ("metadata in", f().metadata(meta("model in (xgboost, svm)"))),
        ("metadata text order", f().metadata(meta("model>=m"))),
        (
            "metadata text order is by byte",
            f().metadata(meta("model<a")),
        ),
        ("metadata boolean", f().metadata(meta("done=true"))),
        (
            "metadata boolean not equal",
            f().metadata(meta("done!=true")),
        ),
        ("metadata exists with null", f().metadata(meta("n?"))),
        (
            "metadata text equality",
            f().metadata(meta("accuracy=\"high\"")),
        ),
        (
            "metadata nasty field name",
            f().metadata(FieldCondition::compare(NASTY_FIELD, Comparison::Ge, 2)),
        ),
        ("data type", f().data_type(DataType::MessagePack)),
        (
            "custom data type",
            f().data_type(DataType::Other("arrow-ipc".into())),
        ),
        (
            "created before",
            f().created_before(Timestamp(T0.0 - 5_000)),
        ),
        (
            "created at or after",
            f().created_at_or_after(Timestamp(T0.0 - 5_000)),
        ),
        (
            "accessed before",
            f().accessed_before(Timestamp(T0.0 + 200)),
        ),
        ("expires at or before", f().expires_at_or_before(T0)),
        ("min stored size", f().min_stored_size(50)),
        ("max stored size", f().max_stored_size(50)),
        (
            "combination",
            f().namespace("ns1")
                .param(meta("project=x"))
                .metadata(meta("accuracy>=0.9"))
                .max_stored_size(1_000),
        ),
        (
            "in with mixed kinds",
            f().metadata(FieldCondition::is_in(
                "accuracy",
                [FieldValue::from("high"), FieldValue::from(1)],
            )),
        ),
    ]
}

async fn put_corpus(backend: &DynMetadata) -> Vec<EntryMeta> {
    let corpus = filter_corpus();
    let metas = corpus.iter().map(|r| r.meta.clone()).collect();
    for record in corpus {
        put_ok(backend, record).await;
    }
    metas
}

fn expected_keys(corpus: &[EntryMeta], filter: &EntryFilter) -> Vec<CacheKey> {
    let mut keys: Vec<CacheKey> = corpus
        .iter()
        .filter(|m| filter.matches(m))
        .map(|m| m.key.clone())
        .collect();
    keys.sort();
    keys
}

/// `list` applies every kind of filter condition exactly as [`EntryFilter::matches`] defines
/// it: typed comparisons on params and user metadata (numbers across integer and float, text
/// in byte order, booleans only for (in)equality, never across kinds), `in`, existence, tags,
/// data type, times and sizes.
pub async fn list_applies_every_filter_like_the_reference(backend: &DynMetadata) {
    let corpus = put_corpus(backend).await;
    for (name, filter) in corpus_filters() {
        let want = expected_keys(&corpus, &filter);
        assert!(
            !want.is_empty() && want.len() < corpus.len(),
            "corpus filter {name:?} must select a proper subset (suite bug)"
        );
        let got = keys_of(&list_ok(backend, &ListQuery::matching(filter.clone())).await);
        assert_eq!(got, want, "list with filter {name:?} ({filter:?})");
    }
}

/// Filtered pages visit every matching entry once, in key order.
pub async fn filtered_list_pages_visit_each_match_once(backend: &DynMetadata) {
    let corpus = put_corpus(backend).await;
    let filter = EntryFilter::all().param(FieldCondition::parse("project=x").unwrap());
    let want = expected_keys(&corpus, &filter);
    let mut got = Vec::new();
    let mut query = ListQuery::matching(filter).with_limit(2);
    loop {
        let page = list_ok(backend, &query).await;
        let Some(last) = page.last() else { break };
        query.after = Some(last.key.clone());
        got.extend(keys_of(&page));
    }
    assert_eq!(
        got, want,
        "paging a filtered list must visit each match once"
    );
}

/// A filter that cannot be evaluated (an ordering comparison on a boolean) is refused with
/// `Error::Config`, by `list` and by `delete_matching`, and deletes nothing.
pub async fn invalid_filters_are_refused(backend: &DynMetadata) {
    put_corpus(backend).await;
    let filter = EntryFilter::all().metadata(FieldCondition::compare("done", Comparison::Gt, true));
    assert!(
        matches!(
            backend.list(&ListQuery::matching(filter.clone())).await,
            Err(crate::Error::Config { .. })
        ),
        "list with `done > true` must be Error::Config"
    );
    assert!(
        matches!(
            backend.delete_matching(&filter, 100).await,
            Err(crate::Error::Config { .. })
        ),
        "delete_matching with `done > true` must be Error::Config"
    );
    assert_eq!(list_ok(backend, &ListQuery::default()).await.len(), 12);
}

/// `delete_matching` deletes exactly the matching entries, at most `limit` per call, returns
/// their metadata and leaves every other entry.
pub async fn delete_matching_deletes_exactly_the_matches(backend: &DynMetadata) {
    let corpus = put_corpus(backend).await;
    let filter = EntryFilter::all()
        .tag("b")
        .metadata(FieldCondition::exists("model"));
    let want = expected_keys(&corpus, &filter);
    assert!(
        want.len() >= 3,
        "suite bug: the filter must match several entries"
    );
    let mut deleted = Vec::new();
    for _ in 0..10 {
        let batch = backend
            .delete_matching(&filter, 2)
            .await
            .unwrap_or_else(|e| panic!("delete_matching failed: {e}"));
        assert!(batch.len() <= 2, "delete_matching must respect its limit");
        if batch.is_empty() {
            break;
        }
        for meta in &batch {
            let original = corpus.iter().find(|m| m.key == meta.key);
            assert_eq!(
                Some(meta),
                original,
                "delete_matching must return the deleted entries' metadata"
            );
        }
        deleted.extend(keys_of(&batch));
    }
    deleted.sort();
    assert_eq!(
        deleted, want,
        "delete_matching must delete exactly the matches"
    );
    let left = keys_of(&list_ok(backend, &ListQuery::default()).await);
    let mut want_left: Vec<CacheKey> = corpus
        .iter()
        .map(|m| m.key.clone())
        .filter(|k| !want.contains(k))
        .collect();
    want_left.sort();
    assert_eq!(left, want_left, "entries not matching must survive");
}

/// Every corpus filter deletes what it lists.
pub async fn delete_matching_agrees_with_list_for_every_filter(backend: &DynMetadata) {
    let corpus = filter_corpus();
    for (name, filter) in corpus_filters() {
        for record in &corpus {
            put_ok(backend, record.clone()).await;
        }
        let want = keys_of(&list_ok(backend, &ListQuery::matching(filter.clone())).await);
        let mut deleted = keys_of(
            &backend
                .delete_matching(&filter, 1_000)
                .await
                .unwrap_or_else(|e| panic!("delete_matching {name:?} failed: {e}")),
        );
        deleted.sort();
        assert_eq!(deleted, want, "delete_matching with filter {name:?}");
    }
}

/// `get_many` returns one slot per key in input order: records with their inline data, `None`
/// for missing keys, repeats answered each time, namespaces kept apart; an empty batch is
/// an empty answer.
pub async fn get_many_returns_records_in_input_order(backend: &DynMetadata) {
    let a = test_key("", "a");
    let b = test_key("ns", "a");
    let c = test_key("ns", "c");
    let missing = test_key("", "missing");
    put_ok(backend, sample_record(&a)).await;
    put_ok(backend, inline_record(&b, Bytes::from_static(b"bee"))).await;
    let blob = test_blob_id(1);
    reserve(backend, &blob, 100, T0).await;
    put_ok(backend, sample_blob_record(&c, &blob, 100)).await;
    let keys = [c.clone(), missing.clone(), a.clone(), b.clone(), a.clone()];
    let got = backend
        .get_many(&keys)
        .await
        .unwrap_or_else(|e| panic!("get_many failed: {e}"));
    assert_eq!(got.len(), keys.len(), "get_many must answer every key");
    for (key, slot) in keys.iter().zip(&got) {
        assert_eq!(
            slot.as_ref(),
            get_ok(backend, key).await.as_ref(),
            "get_many slot of {key} must be what get returns"
        );
    }
    let metas = backend
        .get_meta_many(&keys)
        .await
        .unwrap_or_else(|e| panic!("get_meta_many failed: {e}"));
    let want: Vec<Option<EntryMeta>> = got
        .iter()
        .map(|r| r.as_ref().map(|r| r.meta.clone()))
        .collect();
    assert_eq!(metas, want, "get_meta_many must return the same metadata");
    assert!(backend.get_many(&[]).await.unwrap().is_empty());
    assert!(backend.get_meta_many(&[]).await.unwrap().is_empty());
}

/// `get_many` answers batches larger than any statement-parameter limit.
pub async fn get_many_answers_large_batches(backend: &DynMetadata) {
    let records: Vec<EntryRecord> = (0..1_500)
        .map(|i| sample_record(&test_key("big", &format!("k{i:05}"))))
        .collect();
    let outcomes = backend
        .put_many(records, WriteCondition::Always)
        .await
        .unwrap_or_else(|e| panic!("put_many of 1500 failed: {e}"));
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PutOutcome::Written { replaced: None }))
    );
    let keys: Vec<CacheKey> = (0..40_000)
        .step_by(13)
        .map(|i| test_key("big", &format!("k{:05}", i % 2_000)))
        .collect();
    let got = backend.get_many(&keys).await.unwrap();
    for (key, slot) in keys.iter().zip(&got) {
        let present = key.id()[1..].parse::<u32>().unwrap() < 1_500;
        assert_eq!(
            slot.as_ref().map(|r| &r.meta.key),
            present.then_some(key),
            "get_many slot of {key}"
        );
    }
}

/// `put_many` writes every record and reports, per record, the entry it replaced.
pub async fn put_many_writes_every_record(backend: &DynMetadata) {
    let a = test_key("", "a");
    let b = test_key("", "b");
    put_ok(backend, sample_record(&a)).await;
    let new_a = inline_record(&a, Bytes::from_static(b"new a"));
    let outcomes = backend
        .put_many(
            vec![new_a.clone(), sample_record(&b)],
            WriteCondition::Always,
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            PutOutcome::Written {
                replaced: Some(sample_record(&a).meta)
            },
            PutOutcome::Written { replaced: None },
        ]
    );
    assert_eq!(get_ok(backend, &a).await, Some(new_a));
    assert_eq!(get_ok(backend, &b).await, Some(sample_record(&b)));
    assert!(
        backend
            .put_many(Vec::new(), WriteCondition::Always)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `WriteCondition::IfAbsent` writes only new keys; `IfPresent` only existing ones; a record
/// whose condition fails changes nothing, and later records in the batch see earlier ones.
pub async fn put_many_conditions_apply_per_record_in_order(backend: &DynMetadata) {
    let old = test_key("", "old");
    let new = test_key("", "new");
    put_ok(backend, sample_record(&old)).await;
    let replacement = |k: &CacheKey| inline_record(k, Bytes::from_static(b"replacement"));
    let outcomes = backend
        .put_many(
            vec![replacement(&old), replacement(&new), sample_record(&new)],
            WriteCondition::IfAbsent,
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            PutOutcome::ConditionFailed,
            PutOutcome::Written { replaced: None },
            PutOutcome::ConditionFailed,
        ],
        "IfAbsent must skip existing keys, including one written earlier in the batch"
    );
    assert_eq!(get_ok(backend, &old).await, Some(sample_record(&old)));
    assert_eq!(get_ok(backend, &new).await, Some(replacement(&new)));

    let gone = test_key("", "gone");
    let outcomes = backend
        .put_many(
            vec![sample_record(&gone), sample_record(&old)],
            WriteCondition::IfPresent,
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            PutOutcome::ConditionFailed,
            PutOutcome::Written {
                replaced: Some(sample_record(&old).meta)
            },
        ],
        "IfPresent must write only existing keys"
    );
    assert_eq!(
        get_ok(backend, &gone).await,
        None,
        "IfPresent must not create"
    );
}

/// A record whose blob is unregistered or claimed is reported `BlobUnavailable` and not
/// written; the batch's other records are.
pub async fn put_many_reports_unavailable_blobs_and_writes_the_rest(backend: &DynMetadata) {
    let unregistered = test_blob_id(10);
    let claimed = test_blob_id(11);
    let fine = test_blob_id(12);
    reserve(backend, &claimed, 5, Timestamp(T0.0 - 1)).await;
    assert_eq!(
        claim_ok(backend, Some(std::slice::from_ref(&claimed)), T0, 10).await,
        vec![claimed.clone()]
    );
    reserve(backend, &fine, 5, T0).await;
    let keys: Vec<CacheKey> = ["u", "c", "f", "i"]
        .iter()
        .map(|id| test_key("", id))
        .collect();
    let outcomes = backend
        .put_many(
            vec![
                sample_blob_record(&keys[0], &unregistered, 5),
                sample_blob_record(&keys[1], &claimed, 5),
                sample_blob_record(&keys[2], &fine, 5),
                sample_record(&keys[3]),
            ],
            WriteCondition::Always,
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            PutOutcome::BlobUnavailable,
            PutOutcome::BlobUnavailable,
            PutOutcome::Written { replaced: None },
            PutOutcome::Written { replaced: None },
        ]
    );
    assert_eq!(get_ok(backend, &keys[0]).await, None);
    assert_eq!(get_ok(backend, &keys[1]).await, None);
    assert!(get_ok(backend, &keys[2]).await.is_some());
    assert!(get_ok(backend, &keys[3]).await.is_some());
}

/// `delete_many` removes every key and reports each one: its metadata, or `None` for a missing
/// key or a repeat.
pub async fn delete_many_reports_each_key(backend: &DynMetadata) {
    let a = test_key("", "a");
    let b = test_key("x", "b");
    put_ok(backend, sample_record(&a)).await;
    put_ok(backend, sample_record(&b)).await;
    let got = backend
        .delete_many(&[a.clone(), test_key("", "missing"), b.clone(), a.clone()])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            Some(sample_record(&a).meta),
            None,
            Some(sample_record(&b).meta),
            None
        ]
    );
    assert!(list_ok(backend, &ListQuery::default()).await.is_empty());
    assert!(backend.delete_many(&[]).await.unwrap().is_empty());
}

/// `update_expiry_many` applies each update as `update_expiry` would: missing keys and
/// signature mismatches report `false` and change nothing.
pub async fn update_expiry_many_applies_each_update(backend: &DynMetadata) {
    let signed = test_key("", "signed");
    let plain = test_key("", "plain");
    let mut record = sample_record(&signed);
    record.meta.signature = Some("old-signature".into());
    put_ok(backend, record).await;
    put_ok(backend, sample_record(&plain)).await;
    let update = |key: &CacheKey, if_signature: Option<&str>, at: i64| ExpiryUpdate {
        key: key.clone(),
        if_signature: if_signature.map(str::to_owned),
        expires_at: Some(Timestamp(at)),
        updated_at: Timestamp(T0.0 + 5),
        signature: Some(format!("sig-{at}")),
    };
    let applied = backend
        .update_expiry_many(&[
            update(&signed, Some("wrong"), 1),
            update(&plain, None, 2),
            update(&test_key("", "missing"), None, 3),
            update(&signed, Some("old-signature"), 4),
        ])
        .await
        .unwrap();
    assert_eq!(applied, vec![false, true, false, true]);
    let meta = get_ok(backend, &signed).await.unwrap().meta;
    assert_eq!(meta.expires_at, Some(Timestamp(4)));
    assert_eq!(meta.signature.as_deref(), Some("sig-4"));
    let meta = get_ok(backend, &plain).await.unwrap().meta;
    assert_eq!(meta.expires_at, Some(Timestamp(2)));
    assert_eq!(meta.updated_at, Timestamp(T0.0 + 5));
}

fn moved_meta(source: &EntryMeta, to: &CacheKey) -> EntryMeta {
    let mut meta = source.clone();
    meta.key = to.clone();
    meta.updated_at = Timestamp(T0.0 + 7);
    meta.signature = Some("moved".into());
    meta
}

/// `move_entry` leaves the entry at the destination only, written as given, with the
/// source's inline data.
pub async fn move_entry_moves_metadata_and_inline_data(backend: &DynMetadata) {
    let from = test_key("a", "from");
    let to = test_key("b", "to");
    let source = inline_record(&from, Bytes::from_static(b"payload \x00\xff"));
    put_ok(backend, source.clone()).await;
    let meta = moved_meta(&source.meta, &to);
    let outcome = backend
        .move_entry(&from, meta.clone(), false)
        .await
        .unwrap();
    assert_eq!(outcome, MoveOutcome::Moved { replaced: None });
    assert_eq!(
        get_ok(backend, &from).await,
        None,
        "the source must be gone"
    );
    assert_eq!(
        get_ok(backend, &to).await,
        Some(EntryRecord {
            meta,
            inline_data: source.inline_data
        })
    );
}

/// `move_entry` refuses an existing destination unless `overwrite`, and then reports the
/// entry it replaced; a refused move changes nothing.
pub async fn move_entry_refuses_an_existing_destination_unless_asked(backend: &DynMetadata) {
    let from = test_key("", "from");
    let to = test_key("", "to");
    let source = sample_record(&from);
    let existing = inline_record(&to, Bytes::from_static(b"existing"));
    put_ok(backend, source.clone()).await;
    put_ok(backend, existing.clone()).await;
    let meta = moved_meta(&source.meta, &to);
    assert_eq!(
        backend
            .move_entry(&from, meta.clone(), false)
            .await
            .unwrap(),
        MoveOutcome::DestinationExists
    );
    assert_eq!(get_ok(backend, &from).await, Some(source.clone()));
    assert_eq!(get_ok(backend, &to).await, Some(existing.clone()));
    assert_eq!(
        backend.move_entry(&from, meta.clone(), true).await.unwrap(),
        MoveOutcome::Moved {
            replaced: Some(existing.meta)
        }
    );
    assert_eq!(get_ok(backend, &from).await, None);
    assert_eq!(get_ok(backend, &to).await.map(|r| r.meta), Some(meta));
}

/// `move_entry` reports a missing source, or one whose content changed since it was read,
/// and changes nothing.
pub async fn move_entry_reports_a_missing_or_changed_source(backend: &DynMetadata) {
    let from = test_key("", "from");
    let to = test_key("", "to");
    let source = sample_record(&from);
    let meta = moved_meta(&source.meta, &to);
    assert_eq!(
        backend
            .move_entry(&from, meta.clone(), false)
            .await
            .unwrap(),
        MoveOutcome::SourceMissing
    );
    let rewritten = inline_record(&from, Bytes::from_static(b"rewritten since"));
    put_ok(backend, rewritten.clone()).await;
    assert_eq!(
        backend.move_entry(&from, meta, false).await.unwrap(),
        MoveOutcome::SourceChanged
    );
    assert_eq!(get_ok(backend, &from).await, Some(rewritten));
    assert_eq!(get_ok(backend, &to).await, None);
}

/// A moved entry's blob stays referenced: a collector never finds it unreferenced.
pub async fn move_entry_keeps_its_blob_referenced(backend: &DynMetadata) {
    let blob = test_blob_id(20);
    reserve(backend, &blob, 9, Timestamp(T0.0 - 1)).await;
    let from = test_key("", "from");
    let to = test_key("", "to");
    let source = sample_blob_record(&from, &blob, 9);
    put_ok(backend, source.clone()).await;
    backend
        .move_entry(&from, moved_meta(&source.meta, &to), false)
        .await
        .unwrap();
    assert!(
        claim_ok(backend, Some(std::slice::from_ref(&blob)), T0, 10)
            .await
            .is_empty(),
        "the moved entry still references its blob"
    );
    assert_eq!(
        get_ok(backend, &to).await.map(|r| r.meta.location),
        Some(Location::Blob(blob))
    );
}

/// Concurrent moves and deletes of one entry never duplicate or resurrect it: afterwards the
/// source is gone and the destination exists exactly when the move reported `Moved`.
pub async fn concurrent_move_and_delete_leave_one_entry_or_none(backend: &DynMetadata) {
    for round in 0..20 {
        let from = test_key("race", &format!("from-{round}"));
        let to = test_key("race", &format!("to-{round}"));
        let source = sample_record(&from);
        put_ok(backend, source.clone()).await;
        let meta = moved_meta(&source.meta, &to);
        let (mover, deleter) = (Arc::clone(backend), Arc::clone(backend));
        let (f1, f2) = (from.clone(), from.clone());
        let moving = tokio::spawn(async move { mover.move_entry(&f1, meta, false).await });
        let deleting = tokio::spawn(async move { deleter.delete(&f2).await });
        let moved = moving.await.expect("move task").expect("move_entry");
        let deleted = deleting.await.expect("delete task").expect("delete");
        assert_eq!(
            get_ok(backend, &from).await,
            None,
            "round {round}: source left behind"
        );
        let at_destination = get_ok(backend, &to).await.is_some();
        match moved {
            MoveOutcome::Moved { .. } => {
                assert!(at_destination, "round {round}: moved but destination empty");
                assert!(
                    deleted.is_none(),
                    "round {round}: deleted and moved both succeeded"
                );
            }
            MoveOutcome::SourceMissing => {
                assert!(!at_destination, "round {round}: resurrected at destination");
                assert!(deleted.is_some(), "round {round}: the entry vanished");
            }
            other => panic!("round {round}: unexpected {other:?}"),
        }
    }
}

/// `count_blob_references` counts the entries referencing each blob, 0 for unreferenced or
/// unknown blobs, in input order.
pub async fn count_blob_references_counts_entries_per_blob(backend: &DynMetadata) {
    let (shared, single, unused) = (test_blob_id(30), test_blob_id(31), test_blob_id(32));
    for blob in [&shared, &single, &unused] {
        reserve(backend, blob, 4, T0).await;
    }
    for (id, blob) in [("a", &shared), ("b", &shared), ("c", &single)] {
        put_ok(backend, sample_blob_record(&test_key("", id), blob, 4)).await;
    }
    put_ok(
        backend,
        sample_blob_record(&test_key("other", "d"), &shared, 4),
    )
    .await;
    let counts = backend
        .count_blob_references(&[
            unused.clone(),
            shared.clone(),
            single.clone(),
            test_blob_id(33),
        ])
        .await
        .unwrap();
    assert_eq!(counts, vec![0, 3, 1, 0]);
    assert!(backend.count_blob_references(&[]).await.unwrap().is_empty());
}
