//! The cache's management operations on the embedded defaults (SQLite + filesystem), with a
//! controllable clock: expiry rules, namespaces, typed metadata queries, batches, copy/move.

use std::sync::Arc;
use std::time::Duration;

use cachet_cache::{Cache, InsertOptions};
use cachet_core::{EntryFilter, Error, FieldCondition, ManualClock, Timestamp, params};

const T0: Timestamp = Timestamp(1_700_000_000_000);

async fn open() -> (Cache, Arc<ManualClock>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let cache = Cache::builder()
        .directory(dir.path())
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    (cache, clock, dir)
}

fn condition(text: &str) -> FieldCondition {
    FieldCondition::parse(text).unwrap()
}

#[tokio::test]
async fn an_expired_entry_reads_as_absent_for_metadata_update_copy_and_rename() {
    let (cache, clock, _dir) = open().await;
    cache.insert("k", &1u8).with_ttl_str("1m").await.unwrap();
    assert!(cache.metadata("k").await.unwrap().is_some());
    clock.advance(Duration::from_secs(61));
    assert!(
        cache.metadata("k").await.unwrap().is_none(),
        "expired metadata is absent"
    );
    for result in [
        cache.update("k", &2u8).await,
        cache.copy("k", "k2", false).await,
        cache.rename("k", "k2", false).await,
    ] {
        assert!(matches!(result, Err(Error::NotFound { .. })), "{result:?}");
    }
    assert_eq!(cache.touch_many(["k"], None).await.unwrap(), [false]);
    assert_eq!(cache.get_many::<u8, _>(["k"]).await.unwrap(), [None]);
}

#[tokio::test]
async fn typed_metadata_is_queryable_and_survives_touch_and_update() {
    let (cache, _clock, _dir) = open().await;
    for (name, accuracy, model) in [
        ("a", 0.95, "xgboost"),
        ("b", 0.8, "linear"),
        ("c", 0.91, "svm"),
    ] {
        cache
            .insert(name, &name)
            .with_meta("accuracy", accuracy)
            .with_meta("model", model)
            .with_meta("epochs", 10)
            .await
            .unwrap();
    }
    cache
        .touch("a", Some(Duration::from_secs(3_600)))
        .await
        .unwrap();
    cache.update("c", &"retrained").await.unwrap();
    let found = cache
        .find(
            &EntryFilter::all().metadata(condition("accuracy >= 0.9")),
            0,
        )
        .await
        .unwrap();
    let names: Vec<&str> = found.iter().map(|m| m.key.id()).collect();
    assert_eq!(names, ["a", "c"], "touch and update keep the metadata");
    assert_eq!(found[1].user_metadata.as_ref().unwrap()["model"], "svm");
    let found = cache
        .find(
            &EntryFilter::all()
                .metadata(condition("model in (linear, svm)"))
                .metadata(condition("epochs = 10")),
            1,
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "the limit applies");
    let err = cache
        .insert("bad", &0)
        .with_meta("score", f64::NAN)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

#[tokio::test]
async fn filters_apply_in_the_cache_namespace_unless_they_name_one() {
    let (cache, _clock, _dir) = open().await;
    let team_a = cache.namespace("team-a");
    let team_b = cache.namespace("team-b");
    for ns in [&team_a, &team_b] {
        ns.insert(params! { "project" => "x" }, &1).await.unwrap();
        ns.insert(params! { "project" => "y" }, &2).await.unwrap();
    }
    let x = EntryFilter::all().param(condition("project = x"));
    assert_eq!(team_a.find(&x, 0).await.unwrap().len(), 1);
    assert_eq!(
        team_a.invalidate_where(&x, false).await.unwrap().entries(),
        1
    );
    assert_eq!(
        team_b.find(&x, 0).await.unwrap().len(),
        1,
        "team-b is untouched"
    );
    let everything_in_b = EntryFilter::all().namespace("team-b");
    assert_eq!(
        team_a
            .invalidate_where(&everything_in_b, false)
            .await
            .unwrap()
            .entries(),
        2,
        "a filter naming a namespace applies there"
    );
    assert_eq!(cache.index_stats().await.unwrap().entries, 1);
}

#[tokio::test]
async fn batches_report_per_key() {
    let (cache, clock, _dir) = open().await;
    let metas = cache
        .insert_many(
            [("a", &1u32), ("b", &2u32), ("c", &3u32)],
            &InsertOptions::new().with_ttl_str("1h"),
        )
        .await
        .unwrap();
    assert_eq!(metas.len(), 3);
    cache
        .insert_bytes_many([("raw", vec![1u8, 2, 3])], &InsertOptions::new())
        .await
        .unwrap();
    assert_eq!(
        cache.get_bytes_many(["raw", "nope"]).await.unwrap(),
        [Some(bytes::Bytes::from_static(&[1, 2, 3])), None]
    );
    let err = cache.get_many::<u32, _>(["a", "raw"]).await.unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err}");

    assert_eq!(
        cache
            .update_many([("a", &10u32), ("zz", &0u32)])
            .await
            .unwrap(),
        [true, false]
    );
    assert_eq!(
        cache
            .touch_many(["b", "zz"], Some(Duration::from_secs(7_200)))
            .await
            .unwrap(),
        [true, false]
    );
    clock.advance(Duration::from_secs(3_601));
    assert_eq!(
        cache.get_many::<u32, _>(["a", "b", "c"]).await.unwrap(),
        [None, Some(2), None],
        "an update keeps the entry's expiry (a expired with c); the touch extended b"
    );
    assert_eq!(
        cache.invalidate_many(["a", "b", "nope"]).await.unwrap(),
        [true, true, false]
    );
}

#[tokio::test]
async fn copy_and_rename_refuse_an_existing_destination_unless_asked() {
    let (cache, _clock, _dir) = open().await;
    cache.insert("src", &"value").await.unwrap();
    cache.insert("dst", &"other").await.unwrap();
    let err = cache.copy("src", "dst", false).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let err = cache.rename("src", "dst", false).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert_eq!(
        cache.get::<String>("dst").await.unwrap().as_deref(),
        Some("other")
    );
    cache.rename("src", "dst", true).await.unwrap();
    assert_eq!(cache.get::<String>("src").await.unwrap(), None);
    assert_eq!(
        cache.get::<String>("dst").await.unwrap().as_deref(),
        Some("value")
    );
}

#[test]
fn the_blocking_cache_exports_to_a_file_and_reports_a_truncated_one() {
    let dir = tempfile::tempdir().unwrap();
    let source = cachet_cache::blocking::Cache::open(dir.path().join("source")).unwrap();
    let big: Vec<u8> = (0..300_000u32)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    source.insert_bytes("big", big.clone()).unwrap();
    source.insert("small", &"value").unwrap();
    let path = dir.path().join("cache.tar");
    let file = std::fs::File::create(&path).unwrap();
    let exported = source.export(file, &Default::default(), |_| {}).unwrap();
    assert_eq!(exported.entries, 2);

    let target = cachet_cache::blocking::Cache::open(dir.path().join("target")).unwrap();
    let report = target
        .import(
            std::fs::File::open(&path).unwrap(),
            &Default::default(),
            |_| {},
        )
        .unwrap();
    assert_eq!(report.imported, 2);
    assert_eq!(target.get_bytes("big").unwrap().unwrap(), big);

    let whole = std::fs::read(&path).unwrap();
    let fresh = cachet_cache::blocking::Cache::open(dir.path().join("fresh")).unwrap();
    let err = fresh
        .import(&whole[..whole.len() / 2], &Default::default(), |_| {})
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_eq!(
        fresh.index_stats().unwrap().entries,
        0,
        "nothing partial is visible"
    );
}

#[tokio::test]
async fn invalidation_by_tag_and_namespace_is_durable_and_stays_in_its_namespace() {
    let (cache, _clock, dir) = open().await;
    let team = cache.namespace("team");
    team.insert("a", &1).with_tag("nightly").await.unwrap();
    team.insert("b", &2)
        .with_tag("nightly")
        .with_tag("eu")
        .await
        .unwrap();
    team.insert("c", &3).await.unwrap();
    cache.insert("a", &10).with_tag("nightly").await.unwrap();
    assert_eq!(team.invalidate_tag("nightly").await.unwrap().entries(), 2);
    assert_eq!(
        cache.get::<i32>("a").await.unwrap(),
        Some(10),
        "other namespace untouched"
    );
    drop((team, cache));

    // Durable: a cache opened afterwards (another process, say) does not see them either.
    let reopened = Cache::open(dir.path()).await.unwrap();
    let team = reopened.namespace("team");
    assert_eq!(team.get::<i32>("a").await.unwrap(), None);
    assert_eq!(team.get::<i32>("c").await.unwrap(), Some(3));
    assert_eq!(team.invalidate_namespace().await.unwrap().entries(), 1);
    assert_eq!(
        reopened.index_stats().await.unwrap().entries,
        1,
        "only the root entry is left"
    );
}
