//! What can name an entry: parameters, a ready-made key, or an explicit string.

use cachet_core::{CacheKey, Params, Result};

/// Anything that names a cache entry.
///
/// | type | key | params stored with the entry |
/// |---|---|---|
/// | [`Params`] / `&Params` | derived (xxh3-128) in the cache's namespace | yes, as JSON |
/// | [`CacheKey`] / `&CacheKey` | used as is (its own namespace) | no |
/// | `&str` / `String` | explicit id in the cache's namespace | no |
///
/// An invalid explicit key (empty, longer than 1024 bytes, with control characters) fails with
/// `Error::Config { field: "key" }` when the operation runs; an invalid namespace with
/// `Error::Config { field: "namespace" }`.
///
/// ```
/// use cachet_cache::IntoCacheKey;
/// use cachet_core::params;
///
/// let by_params = params! { "dataset" => "sales", "window" => 30 }.to_cache_key("").unwrap();
/// assert_eq!(by_params.id().len(), 32);
/// let explicit = "report/2026-01".to_cache_key("team").unwrap();
/// assert_eq!(explicit.to_string(), "team/report/2026-01");
/// assert!("".to_cache_key("").is_err());
/// ```
pub trait IntoCacheKey {
    /// The key this names within `namespace`.
    fn to_cache_key(&self, namespace: &str) -> Result<CacheKey>;

    /// The parameters to store with the entry, as JSON (only for derived keys).
    fn params_json(&self) -> Option<serde_json::Value> {
        None
    }

    /// The key's `(namespace, id)` borrowed, without allocating or validating, when it can be
    /// named so (explicit string keys and ready keys; derived keys must be hashed first). The
    /// memory tier looks these up directly; a string that is not a valid key simply finds
    /// nothing there and fails in [`to_cache_key`](Self::to_cache_key) as usual.
    #[doc(hidden)]
    fn borrowed_parts<'a>(&'a self, _namespace: &'a str) -> Option<(&'a str, &'a str)> {
        None
    }
}

impl<K: IntoCacheKey + ?Sized> IntoCacheKey for &K {
    fn to_cache_key(&self, namespace: &str) -> Result<CacheKey> {
        (**self).to_cache_key(namespace)
    }

    fn params_json(&self) -> Option<serde_json::Value> {
        (**self).params_json()
    }

    fn borrowed_parts<'a>(&'a self, namespace: &'a str) -> Option<(&'a str, &'a str)> {
        (**self).borrowed_parts(namespace)
    }
}

impl IntoCacheKey for Params {
    fn to_cache_key(&self, namespace: &str) -> Result<CacheKey> {
        CacheKey::try_derive(namespace, self)
    }

    fn params_json(&self) -> Option<serde_json::Value> {
        Some(self.to_json())
    }
}

impl IntoCacheKey for CacheKey {
    /// A ready-made key keeps its own namespace; the cache's namespace is not applied.
    fn to_cache_key(&self, _namespace: &str) -> Result<CacheKey> {
        Ok(self.clone())
    }

    fn borrowed_parts<'a>(&'a self, _namespace: &'a str) -> Option<(&'a str, &'a str)> {
        Some((self.namespace(), self.id()))
    }
}

impl IntoCacheKey for str {
    fn to_cache_key(&self, namespace: &str) -> Result<CacheKey> {
        CacheKey::explicit(namespace, self)
    }

    fn borrowed_parts<'a>(&'a self, namespace: &'a str) -> Option<(&'a str, &'a str)> {
        Some((namespace, self))
    }
}

impl IntoCacheKey for String {
    fn to_cache_key(&self, namespace: &str) -> Result<CacheKey> {
        CacheKey::explicit(namespace, self.as_str())
    }

    fn borrowed_parts<'a>(&'a self, namespace: &'a str) -> Option<(&'a str, &'a str)> {
        Some((namespace, self.as_str()))
    }
}

/// A key resolved for a write: the key and the params JSON to store with it.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedKey {
    pub(crate) key: CacheKey,
    pub(crate) params: Option<serde_json::Value>,
}

impl ResolvedKey {
    pub(crate) fn new(key: &(impl IntoCacheKey + ?Sized), namespace: &str) -> Result<Self> {
        Ok(ResolvedKey {
            key: key.to_cache_key(namespace)?,
            params: key.params_json(),
        })
    }
}

impl IntoCacheKey for ResolvedKey {
    fn to_cache_key(&self, _namespace: &str) -> Result<CacheKey> {
        Ok(self.key.clone())
    }

    fn params_json(&self) -> Option<serde_json::Value> {
        self.params.clone()
    }
}
