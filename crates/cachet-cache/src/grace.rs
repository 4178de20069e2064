//! Grace: serving a recently expired value when its recomputation fails or is slow, and
//! refreshing it in the background.
//!
//! An entry stays in the index after it expires; with a [grace period](crate::CacheBuilder::grace)
//! cleanup and eviction keep it that much longer, and the `get_with` family may return it
//! (a *stale hit*) instead of an error. Because the stale value is the durable entry, it
//! survives restarts.

use std::future::Future;

use cachet_core::{BoxError, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{Cache, Read};
use crate::key::{IntoCacheKey, ResolvedKey};
use crate::options::InsertOptions;

impl Cache {
    /// [`get_with`](Self::get_with) that prefers a stale value to waiting: when the entry
    /// expired less than the [grace period](crate::CacheBuilder::grace) ago, the computation
    /// runs in a background task and this call returns its result if it arrives within the
    /// [soft timeout](crate::CacheBuilder::soft_timeout), else the stale value at once; the
    /// background computation then stores its result when it succeeds (stale-while-revalidate).
    /// Without a stale value it is `get_with`.
    ///
    /// The computation must be `Send + 'static` (it may outlive the call).
    pub async fn get_with_refresh<T, F, Fut>(&self, key: impl IntoCacheKey, init: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.try_get_with_refresh(key, InsertOptions::default(), move || async move {
            Ok::<T, std::convert::Infallible>(init().await)
        })
        .await
    }

    /// [`get_with_refresh`](Self::get_with_refresh) for a fallible computation, storing the
    /// value with `options`. A failed computation with a stale value at hand returns the stale
    /// value; without one, `Error::Compute`.
    pub async fn try_get_with_refresh<T, E, F, Fut>(
        &self,
        key: impl IntoCacheKey,
        options: InsertOptions,
        init: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Into<BoxError> + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let resolved = ResolvedKey::new(&key, &self.namespace)?;
        let cache_key = resolved.key.clone();
        // One index read: a live value is a hit, an expired one within grace the stale value.
        let stale = match self.read_value_or_expired::<T>(&cache_key, true).await? {
            Read::Value(value, served) => {
                self.hit(&cache_key, served, false);
                return Ok(value);
            }
            Read::Expired(entry) => self.decode_stale::<T>(&cache_key, &entry).await?,
            Read::Absent => None,
        };
        let Some((stale, bytes)) = stale else {
            return self.try_get_with_options(resolved, options, init).await;
        };
        // Invalid options fail now, not in the background.
        options.to_put_options(self.shared.default_ttl, None)?;
        let cache = self.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let refreshed = cache.try_get_with_options(resolved, options, init).await;
            if let Err(e) = &refreshed {
                tracing::warn!(error = %e, "background refresh failed; the stale value stays");
            }
            let _ = done.send(refreshed);
        });
        match tokio::time::timeout(self.shared.grace.soft_timeout, result).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => {
                self.stale_hit(&cache_key, bytes, &format!("the computation failed: {e}"));
                Ok(stale)
            }
            Ok(Err(_)) => {
                self.stale_hit(&cache_key, bytes, "the computation was cancelled");
                Ok(stale)
            }
            Err(_) => {
                self.stale_hit(
                    &cache_key,
                    bytes,
                    "the computation is slower than the soft timeout",
                );
                Ok(stale)
            }
        }
    }
}
