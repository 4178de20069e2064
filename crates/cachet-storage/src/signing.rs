//! Entry signatures: HMAC-SHA256 over an entry's identity fields.

use std::fmt;
use std::path::Path;

use cachet_core::{EntryMeta, Error, Location, Result};
use ring::hmac;

/// Shortest accepted signing key, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// A secret key for HMAC-SHA256 entry signatures.
///
/// Keep it outside the cache directory: whoever can write the cache and read the key can forge
/// entries. The key's bytes are never printed (`Debug` shows only that a key is set).
#[derive(Clone)]
pub struct SigningKey {
    key: hmac::Key,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<secret>)")
    }
}

impl SigningKey {
    /// A key from raw bytes (at least 32).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(Error::config(
                "signing_key",
                format!(
                    "a signing key needs at least {MIN_KEY_LEN} bytes, got {}",
                    bytes.len()
                ),
            ));
        }
        Ok(SigningKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        })
    }

    /// A key from a hex string (at least 64 hex characters).
    pub fn from_hex(text: &str) -> Result<Self> {
        let bytes = hex::decode(text.trim())
            .map_err(|e| Error::config("signing_key", format!("not valid hex: {e}")))?;
        Self::from_bytes(&bytes)
    }

    /// A key from the hex string in environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self> {
        let text = std::env::var(var).map_err(|_| {
            Error::config(
                "signing_key",
                format!("environment variable {var} is not set (expected 64+ hex characters)"),
            )
        })?;
        Self::from_hex(&text)
    }

    /// A key from a file holding either raw bytes (32+) or hex text.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path.display(), e))?;
        match std::str::from_utf8(&bytes) {
            Ok(text)
                if text.trim().len() >= 2 * MIN_KEY_LEN
                    && text.trim().bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Self::from_hex(text)
            }
            _ => Self::from_bytes(&bytes),
        }
    }

    /// The signature of an entry's identity fields, as lowercase hex.
    pub fn sign(&self, meta: &EntryMeta) -> String {
        hex::encode(hmac::sign(&self.key, &signed_message(meta)).as_ref())
    }

    /// Checks an entry's signature in constant time.
    pub fn verify(&self, meta: &EntryMeta) -> Result<()> {
        let tampered = |detail: &str| Error::Tampered {
            key: meta.key.to_string(),
            detail: detail.to_owned(),
        };
        let sig = meta
            .signature
            .as_deref()
            .ok_or_else(|| tampered("the entry is not signed, and signing is on"))?;
        let sig = hex::decode(sig).map_err(|_| tampered("the signature is not valid hex"))?;
        hmac::verify(&self.key, &signed_message(meta), &sig)
            .map_err(|_| tampered("the signature does not match"))
    }
}

/// The exact bytes that are signed (see docs/FORMAT.md §5): every identity field,
/// length-prefixed, in a fixed order. Access time and access count are not signed: they change
/// on reads, in batches.
pub fn signed_message(meta: &EntryMeta) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    fn opt_json(v: &Option<serde_json::Value>) -> String {
        v.as_ref().map(|v| v.to_string()).unwrap_or_default()
    }
    let mut out = Vec::with_capacity(256);
    field(&mut out, b"cachet.entry.v1");
    field(&mut out, meta.key.namespace().as_bytes());
    field(&mut out, meta.key.id().as_bytes());
    field(&mut out, meta.digest.to_string().as_bytes());
    field(&mut out, &meta.raw_size.to_le_bytes());
    field(&mut out, &meta.stored_size.to_le_bytes());
    field(&mut out, meta.data_type.as_str().as_bytes());
    field(&mut out, meta.type_name.as_deref().unwrap_or("").as_bytes());
    field(&mut out, meta.compression.name().as_bytes());
    match &meta.location {
        Location::Inline => field(&mut out, b"inline"),
        Location::Blob(id) => field(&mut out, id.as_str().as_bytes()),
    }
    field(&mut out, &meta.created_at.0.to_le_bytes());
    field(&mut out, &meta.updated_at.0.to_le_bytes());
    match meta.expires_at {
        Some(t) => field(&mut out, &t.0.to_le_bytes()),
        None => field(&mut out, b""),
    }
    field(&mut out, opt_json(&meta.params).as_bytes());
    out.extend_from_slice(&(meta.tags.len() as u64).to_le_bytes());
    for tag in &meta.tags {
        field(&mut out, tag.as_bytes());
    }
    field(&mut out, opt_json(&meta.user_metadata).as_bytes());
    out
}
