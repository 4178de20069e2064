//! Key locks across backend instances (separate pools, as separate processes would have).

mod common;

use std::time::{Duration, Instant};

use cachet_core::MetadataBackend;
use cachet_core::testing::metadata::test_key;
use cachet_meta_postgres::PostgresConfig;

async fn pair(
    url: &str,
) -> (
    cachet_meta_postgres::PostgresMetadata,
    cachet_meta_postgres::PostgresMetadata,
) {
    let config = common::fresh_config(url, "locks");
    let a = config.clone().open().await.unwrap();
    let b = config.open().await.unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_held_by_one_instance_is_refused_to_another() {
    let Some(url) = common::database_url() else {
        return;
    };
    let (a, b) = pair(&url).await;
    let key = test_key("ns", "k");
    let held = a.try_lock_key(&key).await.unwrap().expect("granted to a");
    assert!(
        b.try_lock_key(&key).await.unwrap().is_none(),
        "refused to b"
    );
    held.release().await.unwrap();
    let again = b
        .try_lock_key(&key)
        .await
        .unwrap()
        .expect("granted to b after release");
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_is_freed_when_the_holder_drops_it_without_release() {
    let Some(url) = common::database_url() else {
        return;
    };
    let (a, b) = pair(&url).await;
    let key = test_key("ns", "dropped");
    let held = a.try_lock_key(&key).await.unwrap().expect("granted to a");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(lock) = b.try_lock_key(&key).await.unwrap() {
            lock.release().await.unwrap();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped lock was never freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // a's pool is still usable and its lock connections are not stuck holding the lock.
    let lock = a
        .try_lock_key(&test_key("ns", "other"))
        .await
        .unwrap()
        .unwrap();
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_is_freed_when_the_holders_connection_dies() {
    let Some(url) = common::database_url() else {
        return;
    };
    let (a, b) = pair(&url).await;
    let key = test_key("ns", "killed");
    let held = a.try_lock_key(&key).await.unwrap().expect("granted to a");
    let schema = a.config().schema().to_owned();
    // Kill every session that holds an advisory lock in this database with our lock id...
    // simpler: kill sessions whose application_name marks them as a's lock pool is not
    // possible, so kill all advisory-lock holders of this database except ourselves.
    let mut admin = common::admin(&url).await;
    sqlx::query(
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
         WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid() \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
    )
    .bind(lock_id_of(&schema, &key))
    .execute(&mut admin)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(lock) = b.try_lock_key(&key).await.unwrap() {
            lock.release().await.unwrap();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a dead holder's lock was never freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Releasing the dead lock reports the lost connection, without panicking.
    let _ = held.release().await;
}

/// Mirrors the crate's lock id derivation, to find the holder in `pg_locks`.
fn lock_id_of(schema: &str, key: &cachet_core::CacheKey) -> i64 {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"cachet.lock\0");
    for part in [schema, key.namespace(), key.id()] {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part.as_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_in_different_schemas_do_not_contend() {
    let Some(url) = common::database_url() else {
        return;
    };
    let a = common::open_fresh(&url, "lsa").await;
    let b = PostgresConfig::from_url(&url)
        .unwrap()
        .with_schema(common::fresh_schema("lsb"))
        .open()
        .await
        .unwrap();
    let key = test_key("ns", "same");
    let la = a
        .try_lock_key(&key)
        .await
        .unwrap()
        .expect("granted in schema a");
    let lb = b
        .try_lock_key(&key)
        .await
        .unwrap()
        .expect("granted in schema b");
    la.release().await.unwrap();
    lb.release().await.unwrap();
}
