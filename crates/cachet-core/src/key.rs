//! Cache keys: derived from parameters or given explicitly, always within a namespace.

use std::fmt;

use crate::error::{Error, Result};
use crate::params::Params;

/// The version of the key derivation below. Changing the derivation in any way requires a new
/// version; version 1 is fixed forever (golden vectors in the tests pin it).
pub const KEY_FORMAT_VERSION: u8 = 1;

/// Longest accepted explicit key or namespace, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest accepted namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 255;

const KEY_DOMAIN: &[u8] = b"cachet.key";

/// Identifies one entry: a namespace (empty by default) and an id within it.
///
/// A derived id is the xxh3-128 (32 lowercase hex characters) of
/// `"cachet.key" ‖ KEY_FORMAT_VERSION ‖ u64 LE namespace length ‖ namespace ‖ canonical(params)`,
/// so it is stable across processes, platforms and releases. An explicit id is any non-empty
/// string up to [`MAX_KEY_LEN`] bytes without control characters. Keys are never used as paths.
///
/// ```
/// use cachet_core::{CacheKey, params};
/// let k = CacheKey::derive("", &params! { "x" => 1 });
/// assert_eq!(k.id().len(), 32);
/// assert_eq!(k, CacheKey::derive("", &params! { "x" => 1 }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey {
    namespace: String,
    id: String,
}

impl CacheKey {
    /// Derives the key of `params` within `namespace`.
    ///
    /// # Panics
    /// Never for a valid namespace; an invalid one (see [`CacheKey::explicit`]) is hashed as given,
    /// which is still injective, but [`CacheKey::try_derive`] rejects it.
    pub fn derive(namespace: &str, params: &Params) -> Self {
        CacheKey {
            namespace: namespace.to_owned(),
            id: derive_id(namespace, params),
        }
    }

    /// Like [`CacheKey::derive`], but validates the namespace first.
    pub fn try_derive(namespace: &str, params: &Params) -> Result<Self> {
        validate_namespace(namespace)?;
        Ok(Self::derive(namespace, params))
    }

    /// An explicit key chosen by the caller.
    pub fn explicit(namespace: &str, id: impl Into<String>) -> Result<Self> {
        validate_namespace(namespace)?;
        let id = id.into();
        if id.is_empty() {
            return Err(Error::config("key", "an explicit key must not be empty"));
        }
        if id.len() > MAX_KEY_LEN {
            return Err(Error::config(
                "key",
                format!(
                    "an explicit key is at most {MAX_KEY_LEN} bytes, got {}",
                    id.len()
                ),
            ));
        }
        if id.chars().any(char::is_control) {
            return Err(Error::config(
                "key",
                "an explicit key must not contain control characters",
            ));
        }
        Ok(CacheKey {
            namespace: namespace.to_owned(),
            id,
        })
    }

    /// Rebuilds a key read back from an index, without validation.
    pub fn from_parts_unchecked(namespace: String, id: String) -> Self {
        CacheKey { namespace, id }
    }

    /// The namespace ("" by default).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The id within the namespace.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for CacheKey {
    /// `id` in the default namespace, `namespace/id` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.id)
        } else {
            write!(f, "{}/{}", self.namespace, self.id)
        }
    }
}

fn derive_id(namespace: &str, params: &Params) -> String {
    let mut buf = Vec::with_capacity(64 + namespace.len());
    buf.extend_from_slice(KEY_DOMAIN);
    buf.push(KEY_FORMAT_VERSION);
    buf.extend_from_slice(&(namespace.len() as u64).to_le_bytes());
    buf.extend_from_slice(namespace.as_bytes());
    let mut canonical = buf;
    let params_bytes = params.canonical_bytes();
    canonical.extend_from_slice(&params_bytes);
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&canonical))
}

/// Checks a namespace name: at most [`MAX_NAMESPACE_LEN`] bytes, no control characters, no `/`.
pub fn validate_namespace(namespace: &str) -> Result<()> {
    if namespace.len() > MAX_NAMESPACE_LEN {
        return Err(Error::config(
            "namespace",
            format!(
                "a namespace is at most {MAX_NAMESPACE_LEN} bytes, got {}",
                namespace.len()
            ),
        ));
    }
    if namespace.chars().any(|c| c.is_control() || c == '/') {
        return Err(Error::config(
            "namespace",
            "a namespace must not contain '/' or control characters",
        ));
    }
    Ok(())
}
