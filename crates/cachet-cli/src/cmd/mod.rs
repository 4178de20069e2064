//! One module per command: its `Args` (the `--help` text) and its `run`.

pub mod archive;
pub mod check;
pub mod cleanup;
pub mod completions;
pub mod demo;
pub mod get;
pub mod inspect;
pub mod list;
pub mod migrate;
pub mod put;
pub mod query;
pub mod rm;
pub mod show;
pub mod stats;

use anyhow::Result;
use cachet::CacheKey;

/// The key an operator typed: an id as `list` shows it (a 32-hex derived id or an explicit
/// key) in a namespace (`""`: the default one).
///
/// # Errors
/// A usage error for an empty or too long id or an invalid namespace.
pub fn entry_key(namespace: &str, id: &str) -> Result<CacheKey> {
    CacheKey::explicit(namespace, id).map_err(|e| crate::usage(e.to_string()))
}
