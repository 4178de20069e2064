//! Batch, filtered-delete and move statements under concurrency on a real server: races
//! between two instances (separate pools, as two processes), and writers that hold a row lock
//! while the statement under test waits for it (READ COMMITTED re-checks).

mod common;

use std::sync::Arc;
use std::time::Duration;

use cachet_core::testing::metadata::{
    T0, sample_blob_record, sample_record, test_blob_id, test_key, xxh3_digest,
};
use cachet_core::{
    EntryFilter, ExpiryUpdate, MetadataBackend, MoveOutcome, PutOutcome, Timestamp, WriteCondition,
};
use sqlx::{Connection, PgConnection};

/// An admin connection on the schema of `config`.
async fn admin_on(url: &str, schema: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET search_path TO \"{schema}\""
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    conn
}

/// Waits until a statement of the schema's backends containing `marker` waits for a lock.
async fn wait_until_blocked(url: &str, marker: &str) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
        )
        .bind(marker)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no statement containing {marker:?} ever waited for a lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_and_delete_from_two_instances_never_both_win() {
    let Some(url) = common::database_url() else {
        return;
    };
    let config = common::fresh_config(&url, "mvrace");
    let mover = Arc::new(config.clone().open().await.unwrap());
    let deleter = Arc::new(config.open().await.unwrap());
    let (mut moves, mut deletes) = (0, 0);
    for round in 0..200 {
        let from = test_key("race", &format!("from-{round}"));
        let to = test_key("race", &format!("to-{round}"));
        let source = sample_record(&from);
        mover.put(source.clone()).await.unwrap();
        let mut meta = source.meta.clone();
        meta.key = to.clone();
        let moving = {
            let mover = mover.clone();
            let from = from.clone();
            tokio::spawn(async move { mover.move_entry(&from, meta, false).await })
        };
        let deleting = {
            let deleter = deleter.clone();
            let from = from.clone();
            tokio::spawn(async move { deleter.delete(&from).await })
        };
        let moved = moving.await.unwrap().unwrap();
        let deleted = deleting.await.unwrap().unwrap();
        assert_eq!(mover.get(&from).await.unwrap(), None, "round {round}");
        let at_destination = mover.get(&to).await.unwrap();
        match moved {
            MoveOutcome::Moved { replaced: None } => {
                assert_eq!(deleted, None, "round {round}: both won");
                let record = at_destination.expect("moved entry at the destination");
                assert_eq!(record.inline_data, source.inline_data, "round {round}");
                moves += 1;
            }
            MoveOutcome::SourceMissing => {
                assert_eq!(deleted, Some(source.meta.clone()), "round {round}");
                assert_eq!(at_destination, None, "round {round}: resurrected");
                deletes += 1;
            }
            other => panic!("round {round}: unexpected {other:?}"),
        }
    }
    eprintln!("200 races: {moves} moves won, {deletes} deletes won");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_many_and_claim_of_one_blob_never_both_succeed() {
    let Some(url) = common::database_url() else {
        return;
    };
    let config = common::fresh_config(&url, "pmrace");
    let writer = Arc::new(config.clone().open().await.unwrap());
    let collector = Arc::new(config.open().await.unwrap());
    let now = Timestamp(T0.0 + 1_000);
    let (mut puts, mut claims) = (0, 0);
    for n in 0..200u64 {
        let blob = test_blob_id(n);
        writer
            .reserve_blob(&blob, 10, T0, Timestamp(i64::MIN))
            .await
            .unwrap();
        let records = vec![
            sample_record(&test_key("race", &format!("inline-{n}"))),
            sample_blob_record(&test_key("race", &format!("blob-{n}")), &blob, 10),
        ];
        let put = {
            let writer = writer.clone();
            tokio::spawn(async move { writer.put_many(records, WriteCondition::Always).await })
        };
        let claim = {
            let collector = collector.clone();
            let blob = blob.clone();
            tokio::spawn(async move {
                collector
                    .claim_unreferenced_blobs(Some(&[blob]), now, 10)
                    .await
            })
        };
        let outcomes = put.await.unwrap().unwrap();
        let claimed = claim.await.unwrap().unwrap().contains(&blob);
        assert_eq!(outcomes[0], PutOutcome::Written { replaced: None });
        match (&outcomes[1], claimed) {
            (PutOutcome::Written { .. }, false) => puts += 1,
            (PutOutcome::BlobUnavailable, true) => claims += 1,
            (outcome, claimed) => panic!("race {n}: put {outcome:?}, claimed {claimed}"),
        }
        if claimed {
            collector.release_claimed_blobs(&[blob]).await.unwrap();
        }
    }
    eprintln!("200 races: {puts} puts won, {claims} claims won");
}

#[tokio::test]
async fn delete_matching_spares_an_entry_rewritten_meanwhile_so_that_it_no_longer_matches() {
    let Some(url) = common::database_url() else {
        return;
    };
    let config = common::fresh_config(&url, "dmrecheck");
    let schema = config.schema().to_owned();
    let index = Arc::new(config.open().await.unwrap());
    for id in ["rewritten", "kept-matching"] {
        let mut record = sample_record(&test_key("", id));
        record.meta.tags = vec!["stale".into()];
        index.put(record).await.unwrap();
    }
    let mut writer = admin_on(&url, &schema).await;
    sqlx::query("BEGIN").execute(&mut writer).await.unwrap();
    sqlx::query("UPDATE entries SET tags = ARRAY['fresh'] WHERE id = 'rewritten'")
        .execute(&mut writer)
        .await
        .unwrap();
    let deleting = {
        let index = index.clone();
        tokio::spawn(async move {
            index
                .delete_matching(&EntryFilter::all().tag("stale"), 10)
                .await
        })
    };
    wait_until_blocked(&url, "picked").await;
    sqlx::query("COMMIT").execute(&mut writer).await.unwrap();
    let deleted = deleting.await.unwrap().unwrap();
    let ids: Vec<&str> = deleted.iter().map(|m| m.key.id()).collect();
    assert_eq!(ids, ["kept-matching"]);
    let survivor = index.get(&test_key("", "rewritten")).await.unwrap();
    assert_eq!(
        survivor.map(|r| r.meta.tags),
        Some(vec!["fresh".to_owned()])
    );
}

#[tokio::test]
async fn move_of_a_source_rewritten_meanwhile_reports_source_changed() {
    let Some(url) = common::database_url() else {
        return;
    };
    let config = common::fresh_config(&url, "mvrecheck");
    let schema = config.schema().to_owned();
    let index = Arc::new(config.open().await.unwrap());
    let from = test_key("", "from");
    let to = test_key("", "to");
    let source = sample_record(&from);
    index.put(source.clone()).await.unwrap();
    let mut writer = admin_on(&url, &schema).await;
    sqlx::query("BEGIN").execute(&mut writer).await.unwrap();
    sqlx::query("UPDATE entries SET digest = $1 WHERE id = 'from'")
        .bind(xxh3_digest(b"rewritten").to_string())
        .execute(&mut writer)
        .await
        .unwrap();
    let moving = {
        let index = index.clone();
        let mut meta = source.meta.clone();
        meta.key = to.clone();
        tokio::spawn(async move { index.move_entry(&test_key("", "from"), meta, false).await })
    };
    wait_until_blocked(&url, "WITH src AS").await;
    sqlx::query("COMMIT").execute(&mut writer).await.unwrap();
    assert_eq!(moving.await.unwrap().unwrap(), MoveOutcome::SourceChanged);
    assert_eq!(
        index.get(&from).await.unwrap().map(|r| r.meta.digest),
        Some(xxh3_digest(b"rewritten"))
    );
    assert_eq!(index.get(&to).await.unwrap(), None);
}

#[tokio::test]
async fn repeated_keys_in_a_batch_see_the_earlier_writes() {
    let Some(url) = common::database_url() else {
        return;
    };
    let index = common::open_fresh(&url, "repeats").await;
    let key = test_key("", "k");
    let first = sample_record(&key);
    let mut second = sample_record(&key);
    second.meta.raw_size += 1;
    let outcomes = index
        .put_many(
            vec![
                first.clone(),
                second.clone(),
                sample_record(&test_key("", "other")),
            ],
            WriteCondition::Always,
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            PutOutcome::Written { replaced: None },
            PutOutcome::Written {
                replaced: Some(first.meta.clone())
            },
            PutOutcome::Written { replaced: None },
        ]
    );
    assert_eq!(index.get(&key).await.unwrap(), Some(second));
    let update = |if_signature: Option<&str>, signature: &str| ExpiryUpdate {
        key: key.clone(),
        if_signature: if_signature.map(str::to_owned),
        expires_at: Some(Timestamp(T0.0 + 1)),
        updated_at: T0,
        signature: Some(signature.to_owned()),
    };
    let applied = index
        .update_expiry_many(&[
            update(None, "a"),
            update(Some("a"), "b"),
            update(Some("a"), "c"),
            update(Some("b\0"), "d"),
            update(Some("b"), "e"),
        ])
        .await
        .unwrap();
    assert_eq!(applied, [true, true, false, false, true]);
    let meta = index.get_meta(&key).await.unwrap().unwrap();
    assert_eq!(meta.signature.as_deref(), Some("e"));
}
