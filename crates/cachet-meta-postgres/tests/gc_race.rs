//! The two halves of the GC protocol never both succeed on one blob, raced many times on a
//! real server (the crate docs argue why; this checks the argument's implementation).

mod common;

use std::sync::Arc;

use cachet_core::testing::metadata::{T0, sample_blob_record, test_blob_id, test_key};
use cachet_core::{Error, MetadataBackend, Timestamp};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_and_claim_of_one_blob_never_both_succeed_over_many_races() {
    let Some(url) = common::database_url() else {
        return;
    };
    let config = common::fresh_config(&url, "gcrace");
    // Two instances: separate pools, as two processes would have.
    let writer = Arc::new(config.clone().open().await.unwrap());
    let collector = Arc::new(config.open().await.unwrap());
    let now = Timestamp(T0.0 + 1_000);
    let (mut puts, mut claims) = (0, 0);
    for n in 0..200u64 {
        let blob = test_blob_id(n);
        // Registered, lease already expired: claimable until an entry references it.
        writer
            .reserve_blob(&blob, 10, T0, Timestamp(i64::MIN))
            .await
            .unwrap();
        let key = test_key("race", &format!("k{n}"));
        let record = sample_blob_record(&key, &blob, 10);
        let put = {
            let writer = writer.clone();
            tokio::spawn(async move { writer.put(record).await })
        };
        let claim = {
            let collector = collector.clone();
            let blob = blob.clone();
            tokio::spawn(async move {
                if n % 2 == 0 {
                    collector
                        .claim_unreferenced_blobs(Some(&[blob]), now, 10)
                        .await
                } else {
                    collector.claim_unreferenced_blobs(None, now, 10).await
                }
            })
        };
        let put = put.await.unwrap();
        let claimed = claim.await.unwrap().unwrap().contains(&blob);
        match (put, claimed) {
            (Ok(_), true) => panic!("race {n}: the put committed and the claim took the blob"),
            (Ok(_), false) => puts += 1,
            (Err(Error::Conflict { .. }), true) => claims += 1,
            (Err(Error::Conflict { .. }), false) => {
                panic!("race {n}: the put was refused but nothing claimed the blob")
            }
            (Err(e), _) => panic!("race {n}: unexpected error {e}"),
        }
        if claimed {
            collector.release_claimed_blobs(&[blob]).await.unwrap();
        }
    }
    eprintln!("200 races: {puts} puts won, {claims} claims won");
}
