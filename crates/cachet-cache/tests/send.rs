//! Every future of the async API is `Send` (usable with `tokio::spawn`), and the cache is
//! `Send + Sync + Clone`.

use std::sync::Arc;

use cachet_cache::{Cache, IntoCacheKey};
use cachet_core::memory::{MemoryBlobs, MemoryMetadata};
use cachet_core::params;
use cachet_storage::StoreConfig;

fn assert_send<T: Send>(_: &T) {}
fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

#[test]
fn cache_and_its_futures_are_send() {
    assert_send_sync_clone::<Cache>();
    assert_send_sync_clone::<cachet_cache::blocking::Cache>();
    let cache = Cache::from_backends(
        Arc::new(MemoryMetadata::new()),
        Arc::new(MemoryBlobs::new()),
        StoreConfig::default(),
    )
    .unwrap();
    let key = params! { "x" => 1 };
    assert_send(&cache.get::<Vec<u8>>(&key));
    assert_send(&cache.get_bytes(&key));
    assert_send(&cache.reader(&key));
    assert_send(&cache.metadata(&key));
    assert_send(&cache.contains_key("k"));
    assert_send(&std::future::IntoFuture::into_future(
        cache.insert(&key, &1u8),
    ));
    assert_send(&std::future::IntoFuture::into_future(
        cache.insert_bytes(&key, vec![1u8]),
    ));
    assert_send(&cache.writer(&key));
    assert_send(&cache.get_with(&key, || async { 1u8 }));
    assert_send(&cache.try_get_with(&key, || async { Ok::<u8, std::io::Error>(1) }));
    assert_send(&cache.memoize("f", &(1, 2), || async { 1u8 }));
    assert_send(&cache.invalidate(&key));
    assert_send(&cache.touch(&key, None));
    assert_send(&cache.cleanup_expired());
    assert_send(&cache.gc());
    assert_send(&cache.flush());
    assert_send(&cache.index_stats());
    assert!(key.to_cache_key("").is_ok());
}
