//! Where blobs and temporary uploads live under the root directory.
//!
//! ```text
//! <root>/<algorithm>/<hex[0..2]>/<hex>                published blobs
//! <root>/tmp/upload-<start_ms>-<pid>-<counter>-<nanos>  uploads in progress
//! ```
//!
//! `algorithm` is [`BlobId::algorithm`] (`xxh3-128` or `sha256`) and `hex` is [`BlobId::hex`]
//! (lowercase, 32 or 64 characters).
//!
//! One level of 256 shard directories, as git stores loose objects: a million blobs make about
//! 4,000 entries per directory, which ext4 and xfs index, and after the first few hundred blobs
//! a write never creates a directory. With a second level (cacache's `ab/cd/`), durable 1 MiB
//! puts through the engine were 1.3–1.9× slower in interleaved runs here (0.23–0.31 against
//! 0.30–0.48 GiB/s, 1000 puts each): with 65,536 possible shards nearly every early write
//! created one, paying a `mkdir` and an extra directory fsync. Every component below the root comes from a validated
//! [`BlobId`] or from this module's own temp names, never from a user string, so no path can
//! leave the root. A listing turns paths back into ids only through [`BlobId::parse`] and
//! checks that the file sits in the shard its id names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cachet_core::{BlobId, Timestamp};

/// The directory of uploads in progress.
pub(crate) const TMP_DIR: &str = "tmp";

/// The prefix of every temporary upload's file name.
const TMP_PREFIX: &str = "upload-";

/// Path derivation for one root directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout under `root` (an absolute path).
    pub(crate) fn new(root: PathBuf) -> Self {
        Layout { root }
    }

    /// The root directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<algorithm>`.
    pub(crate) fn algorithm_dir(&self, algorithm: &str) -> PathBuf {
        self.root.join(algorithm)
    }

    /// The directories from the algorithm directory down to the blob's shard, outermost first:
    /// `<root>/<algo>`, `<root>/<algo>/<hex[0..2]>`.
    pub(crate) fn shard_dirs(&self, id: &BlobId) -> [PathBuf; 2] {
        let algo = self.algorithm_dir(id.algorithm());
        let shard = algo.join(id.shard());
        [algo, shard]
    }

    /// `<root>/<algorithm>/<hex[0..2]>/<hex>`.
    pub(crate) fn blob_path(&self, id: &BlobId) -> PathBuf {
        let [_, shard] = self.shard_dirs(id);
        shard.join(id.hex())
    }

    /// `<root>/tmp`.
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    /// A fresh temp file path in `<root>/tmp`, unique within this process (a counter) and very
    /// likely across processes (pid and the clock's nanoseconds); files are created with
    /// `create_new`, so a collision is detected, never clobbered. The name starts with the
    /// upload's start time so that [`cleanup_temporary`](cachet_core::BlobBackend::cleanup_temporary)
    /// can tell when an upload began.
    pub(crate) fn new_temp_path(&self) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let start_ms = now.as_millis();
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{TMP_PREFIX}{start_ms}-{}-{counter}-{:08x}",
            std::process::id(),
            now.subsec_nanos()
        );
        self.tmp_dir().join(name)
    }
}

/// The start time recorded in a temp file's name, if it is one of ours.
pub(crate) fn temp_started_at(name: &str) -> Option<Timestamp> {
    let rest = name.strip_prefix(TMP_PREFIX)?;
    let ms = rest.split('-').next()?.parse::<i64>().ok()?;
    Some(Timestamp(ms))
}

/// `true` for a two-character lowercase hex shard directory name.
pub(crate) fn is_shard_name(name: &str) -> bool {
    name.len() == 2 && is_lower_hex(name)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cachet_core::ContentDigest;

    #[test]
    fn blob_path_is_sharded_by_algorithm_and_hex_prefix() {
        let layout = Layout::new(PathBuf::from("/r"));
        let id = BlobId::from_digest(&ContentDigest::Xxh3_128(0xabcd_ef00 << 96));
        assert_eq!(
            layout.blob_path(&id),
            PathBuf::from("/r/xxh3-128/ab/abcdef00000000000000000000000000")
        );
    }

    #[test]
    fn temp_names_record_their_start_time() {
        let layout = Layout::new(PathBuf::from("/r"));
        let before = Timestamp::now();
        let path = layout.new_temp_path();
        let name = path.file_name().unwrap().to_str().unwrap();
        let started = temp_started_at(name).unwrap();
        assert!(started >= before && started <= Timestamp::now());
        assert_ne!(path, layout.new_temp_path());
        assert_eq!(temp_started_at("foreign"), None);
    }
}
