//! Property: for random sequences of queries (and clock moves) against a deterministic fake
//! source, every `get` returns exactly the source's rows in range, and the fetcher is never
//! asked for an interval that is covered and unexpired.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachet_core::{ManualClock, Timestamp};
use cachet_sqlcache::{
    BoxError, ColumnType, FetchRequest, Fetcher, SqlCache, SqlCacheOptions, TableSpec,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

mod common;
use common::places;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Event {
    stream: String,
    id: i64,
    payload: String,
}

/// Events exist at ids that are multiples of 3 or 5 (sparse, with empty stretches).
fn source_rows(stream: &str, start: i64, end: i64) -> Vec<Event> {
    (start..end)
        .filter(|id| id % 3 == 0 || id % 5 == 0)
        .map(|id| Event {
            stream: stream.to_owned(),
            id,
            payload: format!("{stream}#{id}"),
        })
        .collect()
}

const TTL_MS: i64 = 1_000;

/// One request: stream, start, end, and the clock time it was made at.
type Request = (String, i64, i64, i64);

/// Records each request.
struct Log {
    clock: ManualClock,
    requests: Arc<Mutex<Vec<Request>>>,
}

#[async_trait::async_trait]
impl Fetcher<Event> for Log {
    async fn fetch(&self, request: &FetchRequest) -> Result<Vec<Event>, BoxError> {
        let stream = request.filter_str("stream").unwrap().to_owned();
        let (start, end) = request.int_range().unwrap();
        let now = cachet_core::Clock::now(&self.clock).0;
        self.requests
            .lock()
            .unwrap()
            .push((stream.clone(), start, end, now));
        Ok(source_rows(&stream, start, end))
    }
}

#[derive(Debug, Clone)]
enum Step {
    Get { stream: u8, start: i64, len: i64 },
    Wait { ms: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..2, 0i64..200, 0i64..60).prop_map(|(stream, start, len)| Step::Get { stream, start, len }),
        1 => (1i64..700).prop_map(|ms| Step::Wait { ms }),
    ]
}

fn run(steps: &[Step]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for place in places().await {
            check(&place, steps).await;
        }
    });
}

async fn check(place: &common::Place, steps: &[Step]) {
    let clock = ManualClock::new(Timestamp(1_000_000));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let spec = TableSpec::event_log("events", "id")
        .column("stream", ColumnType::Text)
        .column("payload", ColumnType::Text)
        .filter("stream")
        .primary_key(["stream", "id"])
        .ttl(Duration::from_millis(TTL_MS as u64));
    let cache: SqlCache<Event> = place
        .open(
            spec,
            Log {
                clock: clock.clone(),
                requests: requests.clone(),
            },
            SqlCacheOptions {
                clock: Arc::new(clock.clone()),
                ..SqlCacheOptions::default()
            },
        )
        .await
        .unwrap();
    for step in steps {
        match step {
            Step::Wait { ms } => clock.advance(Duration::from_millis(*ms as u64)),
            Step::Get { stream, start, len } => {
                let stream = format!("s{stream}");
                let before = requests.lock().unwrap().len();
                let got = cache
                    .get(&json!({ "stream": stream }), *start..start + len)
                    .await
                    .unwrap();
                assert_eq!(got, source_rows(&stream, *start, start + len));
                // Every new request avoids what earlier requests of the stream covered
                // and is still fresh.
                let all = requests.lock().unwrap().clone();
                for (s, a, b, at) in &all[before..] {
                    for (s2, a2, b2, at2) in &all[..before] {
                        let fresh = at - at2 < TTL_MS;
                        let overlap = a < b2 && a2 < b;
                        assert!(
                            !(s == s2 && fresh && overlap),
                            "asked again for [{a}, {b}) of {s}, covered by [{a2}, {b2}) \
                             fetched {} ms earlier",
                            at - at2
                        );
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_get_returns_the_source_rows_and_never_refetches_fresh_coverage(
        steps in proptest::collection::vec(step(), 1..25)
    ) {
        run(&steps);
    }
}
