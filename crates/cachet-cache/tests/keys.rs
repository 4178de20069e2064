//! Keys: typed params give distinct entries, explicit keys are validated, params are stored,
//! namespaces are isolated, a wrong type is a typed error.

mod common;

use std::collections::HashSet;

use cachet_core::{CacheKey, Error, ParamValue, Params, params};
use common::cache;

#[tokio::test]
async fn wrong_type_requested_is_type_mismatch() {
    let (cache, _dir) = cache().await;
    cache.insert("numbers", &vec![1u64, 2, 3]).await.unwrap();
    cache.insert_bytes("raw", b"\x01\x02").await.unwrap();

    let err = cache.get::<String>("numbers").await.unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err:?}");
    let err = cache.get_bytes("numbers").await.unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err:?}");
    let err = cache.get::<Vec<u64>>("raw").await.unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err:?}");
    let err = cache
        .get_with("numbers", || async { String::from("recomputed") })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err:?}");
    // The right type still reads.
    assert_eq!(
        cache.get::<Vec<u64>>("numbers").await.unwrap(),
        Some(vec![1, 2, 3])
    );
}

#[tokio::test]
async fn params_differing_only_in_value_type_are_different_entries() {
    let (cache, _dir) = cache().await;
    let keys = [
        params! { "x" => 1 },
        params! { "x" => 1.0 },
        params! { "x" => "1" },
        params! { "x" => true },
        params! { "x" => ParamValue::bytes([1u8]) },
        params! { "x" => vec![1] },
    ];
    let ids: HashSet<String> = keys
        .iter()
        .map(|k| CacheKey::derive("", k).id().to_owned())
        .collect();
    assert_eq!(ids.len(), keys.len());
    for (i, key) in keys.iter().enumerate() {
        cache.insert(key, &i).await.unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(cache.get::<usize>(key).await.unwrap(), Some(i));
    }
}

#[tokio::test]
async fn params_differing_only_in_nesting_are_different_entries() {
    let (cache, _dir) = cache().await;
    let int = |i: i64| ParamValue::from(i);
    let a = params! { "x" => ParamValue::List(vec![ParamValue::List(vec![int(1)]), int(2)]) };
    let b = params! { "x" => ParamValue::List(vec![int(1), ParamValue::List(vec![int(2)])]) };
    let c = params! { "x" => ParamValue::List(vec![int(1), int(2)]) };
    cache.insert(&a, "a").await.unwrap();
    cache.insert(&b, "b").await.unwrap();
    cache.insert(&c, "c").await.unwrap();
    assert_eq!(cache.get::<String>(&a).await.unwrap().as_deref(), Some("a"));
    assert_eq!(cache.get::<String>(&b).await.unwrap().as_deref(), Some("b"));
    assert_eq!(cache.get::<String>(&c).await.unwrap().as_deref(), Some("c"));
}

#[tokio::test]
async fn params_order_does_not_matter() {
    let (cache, _dir) = cache().await;
    cache
        .insert(&params! { "a" => 1, "b" => 2 }, &"v")
        .await
        .unwrap();
    let back: Option<String> = cache.get(params! { "b" => 2, "a" => 1 }).await.unwrap();
    assert_eq!(back.as_deref(), Some("v"));
}

#[tokio::test]
async fn params_are_stored_with_the_entry_and_explicit_keys_store_none() {
    let (cache, _dir) = cache().await;
    let key = params! { "dataset" => "sales", "window" => 30 };
    let meta = cache.insert(&key, &1u8).await.unwrap();
    assert_eq!(
        meta.params,
        Some(serde_json::json!({ "dataset": "sales", "window": 30 }))
    );
    let stored = cache.metadata(&key).await.unwrap().unwrap();
    assert_eq!(stored.params, meta.params);
    let meta = cache.insert("explicit", &1u8).await.unwrap();
    assert_eq!(meta.params, None);
}

#[tokio::test]
async fn every_key_form_names_the_same_entry() {
    let (cache, _dir) = cache().await;
    let params: Params = params! { "p" => 1 };
    cache.insert(params.clone(), &1u8).await.unwrap();
    let derived = CacheKey::derive("", &params);
    assert_eq!(cache.get::<u8>(&derived).await.unwrap(), Some(1));
    assert_eq!(cache.get::<u8>(derived.clone()).await.unwrap(), Some(1));
    assert_eq!(cache.get::<u8>(derived.id()).await.unwrap(), Some(1));
    assert_eq!(
        cache.get::<u8>(derived.id().to_owned()).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        cache.get::<u8>(&derived.id().to_owned()).await.unwrap(),
        Some(1)
    );
}

#[tokio::test]
async fn invalid_explicit_key_is_config_error_naming_key() {
    let (cache, _dir) = cache().await;
    for bad in [String::new(), "a\nb".to_owned(), "x".repeat(2000)] {
        let err = cache.get::<u8>(bad.as_str()).await.unwrap_err();
        assert!(
            matches!(err, Error::Config { ref field, .. } if field == "key"),
            "{err}"
        );
        let err = cache.insert(bad.as_str(), &1u8).await.unwrap_err();
        assert!(
            matches!(err, Error::Config { ref field, .. } if field == "key"),
            "{err}"
        );
        let err = cache.invalidate(bad.as_str()).await.unwrap_err();
        assert!(
            matches!(err, Error::Config { ref field, .. } if field == "key"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn namespace_views_are_isolated() {
    let (cache, _dir) = cache().await;
    let team_a = cache.namespace("team-a");
    let team_b = cache.namespace("team-b");
    let key = params! { "report" => "q3" };
    team_a.insert(&key, "from a").await.unwrap();
    team_a.insert("explicit", "from a").await.unwrap();
    assert_eq!(team_b.get::<String>(&key).await.unwrap(), None);
    assert_eq!(team_b.get::<String>("explicit").await.unwrap(), None);
    assert_eq!(cache.get::<String>(&key).await.unwrap(), None);
    team_b.insert(&key, "from b").await.unwrap();
    assert_eq!(
        team_a.get::<String>(&key).await.unwrap().as_deref(),
        Some("from a")
    );
    assert_eq!(
        team_b.get::<String>(&key).await.unwrap().as_deref(),
        Some("from b")
    );
    assert!(team_b.invalidate(&key).await.unwrap());
    assert_eq!(
        team_a.get::<String>(&key).await.unwrap().as_deref(),
        Some("from a")
    );
    let meta = team_a.metadata("explicit").await.unwrap().unwrap();
    assert_eq!(meta.key.namespace(), "team-a");
}

#[tokio::test]
async fn invalid_namespace_is_config_error_naming_namespace() {
    let (cache, _dir) = cache().await;
    let err = cache.try_namespace("a/b").unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "namespace"),
        "{err}"
    );
    let view = cache.namespace("a/b");
    let err = view.get::<u8>(params! { "x" => 1 }).await.unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "namespace"),
        "{err}"
    );
    let err = view.get::<u8>("explicit").await.unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "namespace"),
        "{err}"
    );
}

#[tokio::test]
async fn invalidate_removes_and_reports_whether_it_existed() {
    let (cache, _dir) = cache().await;
    cache.insert("k", &1u8).await.unwrap();
    assert!(cache.invalidate("k").await.unwrap());
    assert!(!cache.invalidate("k").await.unwrap());
    assert_eq!(cache.get::<u8>("k").await.unwrap(), None);
}

#[tokio::test]
async fn json_entries_read_back_like_messagepack_ones() {
    let (cache, _dir) = cache().await;
    let meta = cache.insert("j", &vec!["a", "b"]).as_json().await.unwrap();
    assert_eq!(meta.data_type, cachet_core::DataType::Json);
    assert_eq!(
        cache.get::<Vec<String>>("j").await.unwrap(),
        Some(vec!["a".to_owned(), "b".to_owned()])
    );
}

#[tokio::test]
async fn user_metadata_must_be_an_object() {
    let (cache, _dir) = cache().await;
    let meta = cache
        .insert("m", &1u8)
        .with_metadata(serde_json::json!({ "owner": "me" }))
        .await
        .unwrap();
    assert_eq!(
        meta.user_metadata,
        Some(serde_json::json!({ "owner": "me" }))
    );
    let err = cache
        .insert("m", &1u8)
        .with_metadata(serde_json::json!([1]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "metadata"),
        "{err}"
    );
}
