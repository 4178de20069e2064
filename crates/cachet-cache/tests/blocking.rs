//! The blocking wrapper: the same cache for synchronous code, refusing to run inside a runtime.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cachet_cache::InsertOptions;
use cachet_cache::blocking::Cache;
use cachet_core::{Error, params};

fn open() -> (Cache, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cache = if cfg!(all(feature = "meta-sqlite", feature = "blob-fs")) {
        Cache::open(dir.path()).unwrap()
    } else {
        Cache::builder().in_memory().build().unwrap()
    };
    (cache, dir)
}

#[test]
fn blocking_cache_round_trips_values_bytes_and_streams() {
    let (cache, _dir) = open();
    let key = params! { "job" => "nightly" };
    let meta = cache
        .insert_with_options(
            &key,
            &vec![1u32, 2, 3],
            InsertOptions::new().with_tag("jobs"),
        )
        .unwrap();
    assert_eq!(meta.tags, ["jobs"]);
    assert_eq!(cache.get::<Vec<u32>>(&key).unwrap(), Some(vec![1, 2, 3]));
    assert!(cache.contains_key(&key).unwrap());
    assert!(cache.metadata(&key).unwrap().is_some());

    let big = common::large_value(4);
    cache.insert_bytes("big", &big).unwrap();
    assert_eq!(cache.get_bytes("big").unwrap().unwrap(), big);
    let mut back = Vec::new();
    cache
        .reader("big")
        .unwrap()
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, big);

    let mut w = cache.writer("streamed").unwrap();
    w.write_all(&big[..1000]).unwrap();
    w.copy_from(&mut &big[1000..]).unwrap();
    w.finish().unwrap();
    assert_eq!(cache.get_bytes("streamed").unwrap().unwrap(), big);

    assert!(cache.touch(&key, Some(Duration::from_secs(60))).unwrap());
    assert!(cache.invalidate(&key).unwrap());
    assert_eq!(cache.get::<Vec<u32>>(&key).unwrap(), None);
    cache.flush().unwrap();
    assert_eq!(cache.index_stats().unwrap().entries, 2);
    cache.cleanup_expired().unwrap();
    cache.gc().unwrap();
}

#[test]
fn blocking_get_with_and_memoize_compute_once() {
    let (cache, _dir) = open();
    let runs = AtomicU32::new(0);
    for _ in 0..3 {
        let v: Option<u8> = cache
            .get_with("none", || {
                runs.fetch_add(1, Ordering::SeqCst);
                None
            })
            .unwrap();
        assert_eq!(v, None);
        let v: u64 = cache
            .memoize("add", &(2, 3), || {
                runs.fetch_add(1, Ordering::SeqCst);
                5
            })
            .unwrap();
        assert_eq!(v, 5);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let err = cache
        .try_get_with("fails", || Err::<u8, _>("nope"))
        .unwrap_err();
    assert!(matches!(err, Error::Compute { .. }));
}

#[test]
fn blocking_get_with_runs_once_across_threads() {
    let (cache, _dir) = open();
    let runs = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (cache, runs) = (cache.clone(), runs.clone());
            std::thread::spawn(move || {
                cache
                    .get_with("shared", || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                        42u32
                    })
                    .unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 42);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn blocking_cache_refuses_to_run_inside_a_runtime() {
    let (cache, _dir) = open();
    cache.insert("k", &1u8).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let err = cache.get::<u8>("k").unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        assert!(err.to_string().contains("async"), "{err}");
        let err = Cache::builder().in_memory().build().unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        // The async cache underneath is the way from async code.
        assert_eq!(cache.inner().get::<u8>("k").await.unwrap(), Some(1));
    });
    // Dropping the last handle of a blocking cache inside a runtime does not panic either.
    let other = Cache::builder().in_memory().build().unwrap();
    runtime.block_on(async move { drop(other) });
    assert_eq!(cache.get::<u8>("k").unwrap(), Some(1));
}

#[test]
fn blocking_namespace_views_share_the_runtime_and_are_isolated() {
    let (cache, _dir) = open();
    let a = cache.namespace("a");
    a.insert("k", &1u8).unwrap();
    assert_eq!(cache.get::<u8>("k").unwrap(), None);
    drop(cache);
    assert_eq!(a.get::<u8>("k").unwrap(), Some(1));
    assert!(a.try_namespace("bad/name").is_err());
}

#[test]
fn blocking_cache_evicts_by_its_policy() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::builder()
        .directory(dir.path())
        .eviction(
            cachet_cache::EvictionPolicy::lru()
                .max_entries(2)
                .watermarks(1.0, 1.0)
                .protect_recent(Duration::ZERO),
        )
        .build()
        .unwrap();
    for i in 0..5u8 {
        cache.insert_bytes(format!("k{i}"), [i]).unwrap();
    }
    let report = cache.run_eviction().unwrap();
    // The background task may have evicted some already; together, three went.
    assert!(report.max_entries <= 3, "{report:?}");
    assert_eq!(cache.stats().evictions, 3);
    assert!(cache.contains_key("k4").unwrap());
}
