//! Engine options.

use std::sync::Arc;
use std::time::Duration;

use cachet_core::{Clock, Compression, Error, Result, SystemClock};

use crate::format::MAX_FRAME_LEN;
use crate::signing::SigningKey;

/// How the engine encodes, signs and stores values.
///
/// ```
/// use cachet_storage::StoreConfig;
/// use cachet_core::Compression;
/// let config = StoreConfig::default()
///     .with_compression(Compression::Zstd(3))
///     .with_inline_threshold(8 * 1024);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Compression for new entries (default LZ4). Frames that do not shrink are stored raw.
    pub compression: Compression,
    /// Raw bytes per frame (default 1 MiB; 4 KiB ..= 64 MiB). Bounds streaming memory.
    pub frame_size: usize,
    /// Containers up to this many bytes are stored in the index row (default 16 KiB).
    pub inline_threshold: usize,
    /// When set, entries are signed with HMAC-SHA256, content digests are SHA-256, and unsigned
    /// or mis-signed entries are refused with `Error::Tampered`.
    pub signing_key: Option<SigningKey>,
    /// How long a writer's reservation of a blob protects it from garbage collection before its
    /// entry is committed (default 60 s).
    pub blob_lease: Duration,
    /// A collector's claim older than this is considered abandoned (crashed collector) and may
    /// be taken over by a writer (default 10 min).
    pub stale_claim_after: Duration,
    /// Temporary uploads older than this are removed by garbage collection (default 1 h).
    pub temporary_max_age: Duration,
    /// Access times and counts are written at most this often (default 1 s).
    pub access_flush_interval: Duration,
    /// At most this many entries' reads wait in memory (default 65,536, a few MiB); at the
    /// cap everything pending is written at once.
    pub access_flush_max: usize,
    /// An entry's access time is written back only once the index's copy is older than this
    /// (default 60 s; zero writes every batch): like `relatime`, it bounds the index writes a
    /// hot entry costs to one per period, while its read count keeps accumulating.
    /// [`Store::flush`](crate::Store::flush) writes everything regardless.
    pub access_time_granularity: Duration,
    /// The source of time (injectable for tests).
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            compression: Compression::Lz4,
            frame_size: 1 << 20,
            inline_threshold: 16 << 10,
            signing_key: None,
            blob_lease: Duration::from_secs(60),
            stale_claim_after: Duration::from_secs(600),
            temporary_max_age: Duration::from_secs(3600),
            access_flush_interval: Duration::from_secs(1),
            access_flush_max: 65_536,
            access_time_granularity: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
        }
    }
}

impl StoreConfig {
    /// Sets the compression for new entries.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets the frame size.
    pub fn with_frame_size(mut self, bytes: usize) -> Self {
        self.frame_size = bytes;
        self
    }

    /// Sets the inline threshold.
    pub fn with_inline_threshold(mut self, bytes: usize) -> Self {
        self.inline_threshold = bytes;
        self
    }

    /// Turns signing on with this key.
    pub fn with_signing_key(mut self, key: SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }

    /// Sets the blob reservation lease.
    pub fn with_blob_lease(mut self, lease: Duration) -> Self {
        self.blob_lease = lease;
        self
    }

    /// Sets the clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the access time granularity (see [`StoreConfig::access_time_granularity`]).
    pub fn with_access_time_granularity(mut self, granularity: Duration) -> Self {
        self.access_time_granularity = granularity;
        self
    }

    /// Sets how often batched access times are written.
    pub fn with_access_flush_interval(mut self, interval: Duration) -> Self {
        self.access_flush_interval = interval;
        self
    }

    /// Checks every option; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        if !(4096..=MAX_FRAME_LEN).contains(&self.frame_size) {
            return Err(Error::config(
                "frame_size",
                format!(
                    "must be between 4096 and {MAX_FRAME_LEN} bytes, got {}",
                    self.frame_size
                ),
            ));
        }
        if self.inline_threshold > 1 << 20 {
            return Err(Error::config(
                "inline_threshold",
                format!(
                    "must be at most 1 MiB (index rows stay small), got {}",
                    self.inline_threshold
                ),
            ));
        }
        if let Compression::Zstd(level) = self.compression {
            if !(1..=22).contains(&level) {
                return Err(Error::config(
                    "compression",
                    format!("zstd level must be 1..=22, got {level}"),
                ));
            }
        }
        if self.blob_lease.is_zero() {
            return Err(Error::config("blob_lease", "must be longer than zero"));
        }
        if self.stale_claim_after < self.blob_lease {
            return Err(Error::config(
                "stale_claim_after",
                "must be at least blob_lease",
            ));
        }
        if self.access_flush_max == 0 {
            return Err(Error::config("access_flush_max", "must be at least 1"));
        }
        Ok(())
    }
}
