//! Values PostgreSQL could alter or refuse: exact JSON text, u64 above i64::MAX, JSONB copies.

mod common;

use cachet_core::testing::metadata::{rich_record, sample_record, test_key};
use cachet_core::{Error, MetadataBackend};
use serde_json::json;
use sqlx::Row;

#[tokio::test]
async fn json_text_round_trips_exactly_including_nul_and_negative_zero() {
    let Some(url) = common::database_url() else {
        return;
    };
    let index = common::open_fresh(&url, "json").await;
    let mut record = sample_record(&test_key("", "json"));
    record.meta.params = Some(json!({
        "nul": "a\u{0}b",
        "neg_zero": -0.0,
        "big": 1e15,
        "float": 0.1,
        "max": u64::MAX,
    }));
    record.meta.user_metadata = Some(json!({ "z": 1, "a": [-0.0, "\u{0}"] }));
    let params_text = record.meta.params.as_ref().unwrap().to_string();
    index.put(record.clone()).await.unwrap();
    let back = index.get(&record.meta.key).await.unwrap().unwrap();
    assert_eq!(back, record);
    assert_eq!(
        back.meta.params.unwrap().to_string(),
        params_text,
        "the JSON text the engine signs must come back identical"
    );
    let rich = rich_record(&test_key("", "rich"));
    index.put(rich.clone()).await.unwrap();
    assert_eq!(index.get(&rich.meta.key).await.unwrap(), Some(rich));
}

#[tokio::test]
async fn jsonb_copies_exist_for_queries_and_are_null_for_nul_text() {
    let Some(url) = common::database_url() else {
        return;
    };
    let config = common::fresh_config(&url, "jsonb");
    let schema = config.schema().to_owned();
    let index = config.open().await.unwrap();
    let mut plain = sample_record(&test_key("", "plain"));
    plain.meta.params = Some(json!({ "dataset": "sales", "window": 30 }));
    plain.meta.user_metadata = Some(json!({ "owner": "team" }));
    plain.meta.tags = vec!["t1".into(), "t2".into()];
    let mut nul = sample_record(&test_key("", "nul"));
    nul.meta.params = Some(json!({ "text": "\u{0}" }));
    index.put(plain).await.unwrap();
    index.put(nul).await.unwrap();
    let mut admin = common::admin(&url).await;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM \"{schema}\".entries WHERE params_jsonb @> '{{\"dataset\": \"sales\"}}' \
         AND user_metadata_jsonb @> '{{\"owner\": \"team\"}}' AND tags @> ARRAY['t2']"
    )))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<String, _>(0), "plain");
    let nul_copy: Option<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT params_jsonb::text FROM \"{schema}\".entries WHERE id = 'nul'"
    )))
    .fetch_one(&mut admin)
    .await
    .unwrap()
    .get(0);
    assert_eq!(nul_copy, None);
}

#[tokio::test]
async fn sizes_above_i64_max_are_refused_not_wrapped() {
    let Some(url) = common::database_url() else {
        return;
    };
    let index = common::open_fresh(&url, "u64").await;
    for field in ["raw_size", "stored_size", "access_count"] {
        let mut record = sample_record(&test_key("", field));
        match field {
            "raw_size" => record.meta.raw_size = i64::MAX as u64 + 1,
            "stored_size" => record.meta.stored_size = u64::MAX,
            _ => record.meta.access_count = u64::MAX,
        }
        let result = index.put(record.clone()).await;
        assert!(
            matches!(result, Err(Error::Encode { ref detail, .. }) if detail.contains(field)),
            "{field}: {result:?}"
        );
        assert_eq!(index.get(&record.meta.key).await.unwrap(), None);
    }
    let blob = cachet_core::testing::metadata::test_blob_id(1);
    let result = index
        .reserve_blob(
            &blob,
            u64::MAX,
            cachet_core::Timestamp(0),
            cachet_core::Timestamp(0),
        )
        .await;
    assert!(matches!(result, Err(Error::Encode { .. })), "{result:?}");
    assert_eq!(index.stats().await.unwrap().blobs, 0);
}

#[tokio::test]
async fn blob_etag_round_trips() {
    let Some(url) = common::database_url() else {
        return;
    };
    let index = common::open_fresh(&url, "etag").await;
    let mut record = sample_record(&test_key("", "etag"));
    record.meta.blob_etag = Some("\"abc-3\"".into());
    index.put(record.clone()).await.unwrap();
    let meta = index.get_meta(&record.meta.key).await.unwrap().unwrap();
    assert_eq!(meta.blob_etag.as_deref(), Some("\"abc-3\""));
}

#[tokio::test]
async fn corrupt_rows_name_the_key_and_column_and_can_be_deleted() {
    let Some(url) = common::database_url() else {
        return;
    };
    let config = common::fresh_config(&url, "corrupt");
    let schema = config.schema().to_owned();
    let index = config.open().await.unwrap();
    let record = sample_record(&test_key("ns", "bad"));
    index.put(record.clone()).await.unwrap();
    let mut admin = common::admin(&url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE \"{schema}\".entries SET digest = 'nonsense'"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    match index.get(&record.meta.key).await {
        Err(Error::Corrupt { what, .. }) => {
            assert!(
                what.contains("ns") && what.contains("bad") && what.contains("digest"),
                "{what}"
            )
        }
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
    assert_eq!(index.delete(&record.meta.key).await.unwrap(), None);
    assert_eq!(index.get(&record.meta.key).await.unwrap(), None);
}

#[tokio::test]
async fn queries_on_params_metadata_and_tags_use_the_partial_gin_indexes() {
    let Some(url) = common::database_url() else {
        return;
    };
    let config = common::fresh_config(&url, "gin");
    let schema = config.schema().to_owned();
    let index = config.open().await.unwrap();
    let mut tagged = sample_record(&test_key("", "tagged"));
    tagged.meta.params = Some(json!({ "dataset": "sales" }));
    tagged.meta.user_metadata = Some(json!({ "owner": "team" }));
    tagged.meta.tags = vec!["t1".into()];
    index.put(tagged).await.unwrap();
    index
        .put(sample_record(&test_key("", "bare")))
        .await
        .unwrap();
    let mut admin = common::admin(&url).await;
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut admin)
        .await
        .unwrap();
    for (index_name, predicate) in [
        (
            "entries_params_jsonb",
            "params_jsonb @> '{\"dataset\": \"sales\"}'",
        ),
        (
            "entries_user_metadata_jsonb",
            "user_metadata_jsonb @> '{\"owner\": \"team\"}'",
        ),
        (
            "entries_tags",
            "tags @> ARRAY['t1'] AND cardinality(tags) > 0",
        ),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN SELECT id FROM \"{schema}\".entries WHERE {predicate}"
        )))
        .fetch_all(&mut admin)
        .await
        .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains(index_name),
            "{predicate} should use {index_name}:\n{plan}"
        );
    }
}
