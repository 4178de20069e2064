//! Options of the filesystem blob store, and `file://` URL parsing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cachet_core::{Error, Result};

use crate::backend::FsBlobs;

/// The default read chunk size of [`get_stream`](cachet_core::BlobBackend::get_stream):
/// 1 MiB.
pub const DEFAULT_CHUNK_SIZE: usize = 1 << 20;

/// The smallest accepted chunk size (1 KiB).
pub const MIN_CHUNK_SIZE: usize = 1 << 10;

/// The largest accepted chunk size (64 MiB): a chunk is held in memory whole.
pub const MAX_CHUNK_SIZE: usize = 64 << 20;

/// When data is forced from the page cache to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FsyncPolicy {
    /// On publish, fsync the blob file and then its directory (and any shard directory just
    /// created), so a published blob survives a power loss or kernel crash. The default.
    #[default]
    Always,
    /// Never fsync: the fastest, and blobs survive a crash of the *process*, but a power loss
    /// or kernel crash can lose recently published blobs or leave them empty or truncated
    /// (the engine's checksums then report them as corrupt). Not crash-durable.
    Never,
}

impl FsyncPolicy {
    /// The name used in URLs: `always` or `never`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Never => "never",
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FsyncPolicy {
    type Err = Error;

    /// Accepts `always` and `never`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(Error::config(
                "fsync",
                format!("`{other}` is not a fsync policy; use `always` or `never`"),
            )),
        }
    }
}

/// Options of [`FsBlobs`]: a consuming builder, validated by [`build`](FsConfig::build).
///
/// ```
/// use cachet_blob_fs::{FsConfig, FsyncPolicy};
///
/// let config = FsConfig::new("/var/cache/cachet/blobs")
///     .with_fsync(FsyncPolicy::Never)
///     .with_chunk_size(4 << 20);
/// assert_eq!(config, FsConfig::from_url("file:///var/cache/cachet/blobs?fsync=never&chunk_size=4MiB").unwrap());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    root: PathBuf,
    fsync: FsyncPolicy,
    chunk_size: usize,
    create_dirs: bool,
}

impl FsConfig {
    /// Blobs under `root`, with the defaults: [`FsyncPolicy::Always`], 1 MiB read chunks, and
    /// the root created if missing.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsConfig {
            root: root.into(),
            fsync: FsyncPolicy::default(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            create_dirs: true,
        }
    }

    /// Parses `file:///abs/path?fsync=always|never&chunk_size=N&create_dirs=true|false`.
    ///
    /// `chunk_size` is a number of bytes, optionally with a `KiB` or `MiB` suffix. The path is
    /// percent-decoded; the host must be empty or `localhost`. An unknown option is an error
    /// naming it, so a typo is not silently ignored. Values are range-checked by
    /// [`build`](FsConfig::build), like those set with the builder.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| {
            Error::config(
                "url",
                format!("`{url}` is not a URL ({e}); expected file:///absolute/path"),
            )
        })?;
        if parsed.scheme() != "file" {
            return Err(Error::config(
                "url.scheme",
                format!(
                    "`{}` is not supported by the filesystem blob store; use file:///absolute/path",
                    parsed.scheme()
                ),
            ));
        }
        let root = parsed.to_file_path().map_err(|()| {
            Error::config(
                "url.path",
                format!(
                    "`{url}` does not name a local absolute path; use file:///absolute/path \
                     (the host must be empty or localhost)"
                ),
            )
        })?;
        let mut config = FsConfig::new(root);
        for (name, value) in parsed.query_pairs() {
            match &*name {
                "fsync" => config.fsync = value.parse()?,
                "chunk_size" => config.chunk_size = parse_size("chunk_size", &value)?,
                "create_dirs" => config.create_dirs = parse_bool("create_dirs", &value)?,
                other => {
                    return Err(Error::config(
                        other,
                        "unknown option for file:// blob URLs; accepted: fsync, chunk_size, \
                         create_dirs",
                    ));
                }
            }
        }
        Ok(config)
    }

    /// Sets the fsync policy (default [`FsyncPolicy::Always`]).
    pub fn with_fsync(mut self, fsync: FsyncPolicy) -> Self {
        self.fsync = fsync;
        self
    }

    /// Sets the read chunk size of `get_stream` and the largest piece written or read per
    /// blocking call (default 1 MiB; accepted 1 KiB ..= 64 MiB).
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// Whether [`build`](FsConfig::build) creates a missing root directory (default `true`).
    pub fn with_create_dirs(mut self, create: bool) -> Self {
        self.create_dirs = create;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The fsync policy.
    pub fn fsync(&self) -> FsyncPolicy {
        self.fsync
    }

    /// The read chunk size in bytes.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Whether a missing root is created.
    pub fn create_dirs(&self) -> bool {
        self.create_dirs
    }

    /// Checks every option without touching the filesystem; the error names the first bad
    /// field.
    pub fn validate(&self) -> Result<()> {
        if self.root.as_os_str().is_empty() {
            return Err(Error::config("root", "the root directory path is empty"));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(Error::config(
                "chunk_size",
                format!(
                    "{} bytes is out of range; use {MIN_CHUNK_SIZE} ..= {MAX_CHUNK_SIZE} bytes \
                     (1 KiB ..= 64 MiB)",
                    self.chunk_size
                ),
            ));
        }
        Ok(())
    }

    /// Validates the options, creates the root (if allowed) and its `tmp/` directory, and
    /// opens the store. See [`FsBlobs::open`].
    pub fn build(self) -> Result<FsBlobs> {
        FsBlobs::open(self)
    }
}

fn parse_size(field: &str, value: &str) -> Result<usize> {
    let bad = || {
        Error::config(
            field,
            format!("`{value}` is not a size; use a number of bytes, optionally with KiB or MiB"),
        )
    };
    let (digits, unit) = if let Some(n) = value.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = value.strip_suffix("KiB") {
        (n, 1 << 10)
    } else {
        (value, 1)
    };
    digits
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(bad)
}

fn parse_bool(field: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(Error::config(
            field,
            format!("`{other}` is not a boolean; use true or false"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_fsync_always_1_mib_chunks_and_create_dirs() {
        let c = FsConfig::new("/x");
        assert_eq!(c.fsync(), FsyncPolicy::Always);
        assert_eq!(c.chunk_size(), 1 << 20);
        assert!(c.create_dirs());
    }

    #[test]
    fn from_url_reads_every_option() {
        let c =
            FsConfig::from_url("file:///a%20b/c?fsync=never&chunk_size=64KiB&create_dirs=false")
                .unwrap();
        assert_eq!(c.root(), Path::new("/a b/c"));
        assert_eq!(c.fsync(), FsyncPolicy::Never);
        assert_eq!(c.chunk_size(), 64 << 10);
        assert!(!c.create_dirs());
    }

    #[test]
    fn sizes_accept_plain_bytes_and_binary_suffixes() {
        assert_eq!(parse_size("f", "4096").unwrap(), 4096);
        assert_eq!(parse_size("f", "2MiB").unwrap(), 2 << 20);
        assert!(parse_size("f", "2MB").is_err());
        assert!(parse_size("f", "-1").is_err());
    }
}
