//! Where blobs and temporary uploads live under the bucket prefix.
//!
//! ```text
//! <prefix>/<algorithm>/<hex[0..2]>/<hex>           published blobs
//! <prefix>/tmp/upload-<start_ms>-<random>          completed multipart uploads being published
//! ```
//!
//! The same names as `cachet-blob-fs` (one level of 256 shards): a store copied between a
//! directory and a bucket keeps its layout. Every name component below the prefix comes from a
//! validated [`BlobId`] or from this module's own temp names, never from a user string. A
//! listing turns names back into ids only through [`BlobId::parse`] and checks that the object
//! sits in the shard its id names.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cachet_core::{BlobId, Timestamp};
use object_store::path::Path;

/// The name prefix of temporary uploads, below the store's prefix.
pub(crate) const TMP_DIR: &str = "tmp";

/// The start of every temporary upload's last name component.
const TMP_PREFIX: &str = "upload-";

/// Name derivation for one bucket prefix.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: Path,
}

impl Layout {
    /// A layout under `prefix` (already validated; empty for the bucket root).
    pub(crate) fn new(prefix: Path) -> Self {
        Layout { prefix }
    }

    /// The store's prefix.
    pub(crate) fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// `<prefix>/<algorithm>`.
    pub(crate) fn algorithm_dir(&self, algorithm: &str) -> Path {
        self.prefix.clone().join(algorithm)
    }

    /// `<prefix>/<algorithm>/<hex[0..2]>/<hex>`.
    pub(crate) fn blob_path(&self, id: &BlobId) -> Path {
        let hex = id.hex();
        self.algorithm_dir(id.algorithm())
            .join(id.shard())
            .join(hex)
    }

    /// `<prefix>/tmp`.
    pub(crate) fn tmp_dir(&self) -> Path {
        self.prefix.clone().join(TMP_DIR)
    }

    /// A fresh temporary object name in `<prefix>/tmp`, starting with the upload's start time
    /// (so [`cleanup_temporary`](cachet_core::BlobBackend::cleanup_temporary) can tell when it
    /// began) and ending in 128 bits from a per-process random key, the process id, a counter
    /// and the clock: unique across processes and machines for all practical purposes.
    pub(crate) fn new_temp_path(&self, started: Timestamp) -> Path {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut a = RandomState::new().build_hasher();
        a.write_u64(counter);
        a.write_u128(nanos);
        let mut b = RandomState::new().build_hasher();
        b.write_u32(std::process::id());
        b.write_u64(a.finish());
        let name = format!(
            "{TMP_PREFIX}{}-{:016x}{:016x}",
            started.0,
            a.finish(),
            b.finish()
        );
        self.tmp_dir().join(name.as_str())
    }

    /// The id of the object at `location` if it is a blob of this store, in the shard its id
    /// names; `None` for anything else (temporary uploads, foreign objects).
    pub(crate) fn parse_blob_path(&self, location: &Path) -> Option<BlobId> {
        let parts: Vec<_> = location.prefix_match(&self.prefix)?.collect();
        let [algorithm, shard, name] = parts.as_slice() else {
            return None;
        };
        BlobId::from_sharded_name(algorithm.as_ref(), shard.as_ref(), name.as_ref())
    }
}

/// The start time recorded in a temp object's last name component, if it is one of ours.
pub(crate) fn temp_started_at(name: &str) -> Option<Timestamp> {
    let rest = name.strip_prefix(TMP_PREFIX)?;
    let ms = rest.split('-').next()?.parse::<i64>().ok()?;
    Some(Timestamp(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cachet_core::ContentDigest;

    #[test]
    fn blob_path_is_sharded_by_algorithm_and_hex_prefix() {
        let layout = Layout::new(Path::from("p/q"));
        let id = BlobId::from_digest(&ContentDigest::Xxh3_128(0xabcd_ef00 << 96));
        assert_eq!(
            layout.blob_path(&id).as_ref(),
            "p/q/xxh3-128/ab/abcdef00000000000000000000000000"
        );
        assert_eq!(layout.parse_blob_path(&layout.blob_path(&id)), Some(id));
    }

    #[test]
    fn empty_prefix_is_the_bucket_root() {
        let layout = Layout::new(Path::default());
        let id = BlobId::from_digest(&ContentDigest::Xxh3_128(1));
        assert_eq!(
            layout.blob_path(&id).as_ref(),
            "xxh3-128/00/00000000000000000000000000000001"
        );
        assert_eq!(layout.parse_blob_path(&layout.blob_path(&id)), Some(id));
    }

    #[test]
    fn foreign_and_temporary_names_are_not_blobs() {
        let layout = Layout::new(Path::from("p"));
        let hex = "abcdef00000000000000000000000000";
        for name in [
            format!("p/xxh3-128/ac/{hex}"),
            format!("p/sha256/ab/{hex}"),
            format!("p/xxh3-128/ab/{hex}/x"),
            format!("q/xxh3-128/ab/{hex}"),
            format!("p/xxh3-128/{hex}"),
            "p/tmp/upload-1-2".to_string(),
            "p/xxh3-128/ab/abcd.tmp".to_string(),
        ] {
            assert_eq!(
                layout.parse_blob_path(&Path::from(name.as_str())),
                None,
                "{name}"
            );
        }
    }

    #[test]
    fn temp_names_record_their_start_time_and_are_unique() {
        let layout = Layout::new(Path::from("p"));
        let now = Timestamp::now();
        let a = layout.new_temp_path(now);
        let b = layout.new_temp_path(now);
        assert_ne!(a, b);
        assert!(a.as_ref().starts_with("p/tmp/upload-"));
        assert_eq!(temp_started_at(a.filename().unwrap()), Some(now));
        assert_eq!(temp_started_at("foreign"), None);
    }
}
