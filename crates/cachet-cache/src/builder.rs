//! `CacheBuilder`: URLs to backends, options to a store, everything validated at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cachet_core::memory::{MemoryBlobs, MemoryMetadata};
use cachet_core::{BlobBackend, Clock, Compression, EntryMeta, Error, MetadataBackend, Result};
use cachet_storage::{SigningKey, Store, StoreConfig};

use crate::cache::Cache;
use crate::events::EvictionReason;
use crate::eviction::{EvictionListener, EvictionPolicy, Evictor};

/// The index file of a cache directory (see [`Cache::open`]).
pub const INDEX_FILE: &str = "index.sqlite";
/// The blob directory of a cache directory (see [`Cache::open`]).
pub const BLOBS_DIR: &str = "blobs";

/// Index URL schemes this build accepts, for messages.
const INDEX_SCHEMES: &str = "sqlite:///abs/path.db, sqlite://relative/path.db, \
     postgres://user@host:port/db (feature meta-postgres), memory://";
/// Blob URL schemes this build accepts, for messages.
const BLOB_SCHEMES: &str =
    "file:///abs/dir, s3://bucket/prefix?endpoint=... (feature blob-s3), memory://";

enum Source<B: ?Sized> {
    Url(String),
    Backend(Arc<B>),
}

enum KeySource {
    Key(SigningKey),
    Env(String),
    File(PathBuf),
}

/// Builds a [`Cache`]: where the index and the blobs live, and the cache's policies.
///
/// [`build`](Self::build) validates every option before opening anything, and fails with
/// `Error::Config { field, .. }` naming the option to fix (`index`, `blobs`, `namespace`,
/// `signing_key`, `default_ttl`, `compression`, ...).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use cachet_cache::Cache;
///
/// let cache = Cache::builder()
///     .index("memory://")
///     .blobs("memory://")
///     .default_ttl(Duration::from_secs(24 * 3600))
///     .namespace("reports")
///     .build()
///     .await?;
/// assert_eq!(cache.namespace_name(), "reports");
///
/// let err = Cache::builder().index("mysql://db/cache").blobs("memory://").build().await.unwrap_err();
/// assert!(matches!(err, cachet_core::Error::Config { ref field, .. } if field == "index"));
/// # Ok::<(), cachet_core::Error>(()) }).unwrap();
/// ```
#[must_use = "a builder does nothing until build() is awaited"]
pub struct CacheBuilder {
    directory: Option<PathBuf>,
    index: Option<Source<dyn MetadataBackend>>,
    blobs: Option<Source<dyn BlobBackend>>,
    default_ttl: Option<Duration>,
    compression: Option<Compression>,
    signing_key: Option<KeySource>,
    strict_integrity: bool,
    namespace: String,
    clock: Option<Arc<dyn Clock>>,
    store_config: Option<StoreConfig>,
    allow_local_index_with_remote_blobs: bool,
    memory_tier: Option<u64>,
    memory_tier_ttl: Duration,
    eviction: Option<EvictionPolicy>,
    eviction_listener: Option<EvictionListener>,
    grace: Option<Duration>,
    soft_timeout: Duration,
    event_capacity: usize,
    metrics_label: Option<String>,
    /// The `*_str` options that did not parse, by field, reported by `build`.
    invalid: BTreeMap<&'static str, String>,
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let describe = |url: Option<&String>, backend: bool| match (url, backend) {
            (Some(url), _) => url.clone(),
            (None, true) => "<custom backend>".to_owned(),
            (None, false) => "<default>".to_owned(),
        };
        let index_url = match &self.index {
            Some(Source::Url(u)) => Some(u),
            _ => None,
        };
        let blobs_url = match &self.blobs {
            Some(Source::Url(u)) => Some(u),
            _ => None,
        };
        f.debug_struct("CacheBuilder")
            .field("directory", &self.directory)
            .field(
                "index",
                &describe(index_url, matches!(self.index, Some(Source::Backend(_)))),
            )
            .field(
                "blobs",
                &describe(blobs_url, matches!(self.blobs, Some(Source::Backend(_)))),
            )
            .field("default_ttl", &self.default_ttl)
            .field("compression", &self.compression)
            .field("signing", &self.signing_key.is_some())
            .field("strict_integrity", &self.strict_integrity)
            .field("namespace", &self.namespace)
            .field("memory_tier", &self.memory_tier)
            .field("memory_tier_ttl", &self.memory_tier_ttl)
            .field("eviction", &self.eviction)
            .field("eviction_listener", &self.eviction_listener.is_some())
            .field("grace", &self.grace)
            .field("soft_timeout", &self.soft_timeout)
            .field("event_capacity", &self.event_capacity)
            .field("metrics_label", &self.metrics_label)
            .finish_non_exhaustive()
    }
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheBuilder {
    /// A builder with no location yet: set [`directory`](Self::directory), or
    /// [`index`](Self::index) and [`blobs`](Self::blobs), or [`in_memory`](Self::in_memory).
    pub fn new() -> Self {
        CacheBuilder {
            directory: None,
            index: None,
            blobs: None,
            default_ttl: None,
            compression: None,
            signing_key: None,
            strict_integrity: false,
            namespace: String::new(),
            clock: None,
            store_config: None,
            allow_local_index_with_remote_blobs: false,
            memory_tier: None,
            memory_tier_ttl: crate::memory::DEFAULT_MEMORY_TTL,
            eviction: None,
            eviction_listener: None,
            grace: None,
            soft_timeout: Duration::ZERO,
            event_capacity: crate::observe::DEFAULT_EVENT_CAPACITY,
            metrics_label: None,
            invalid: BTreeMap::new(),
        }
    }

    /// The cache directory (created if missing): the index defaults to
    /// `<dir>/index.sqlite` and the blobs to `<dir>/blobs/` unless [`index`](Self::index) or
    /// [`blobs`](Self::blobs) say otherwise.
    pub fn directory(mut self, dir: impl AsRef<Path>) -> Self {
        self.directory = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The metadata index, by URL: `sqlite:///abs/path.db`, `sqlite://relative/path.db`
    /// (relative to the current directory), `memory://`. Query options of the backend are
    /// passed through (e.g. `sqlite:///x.db?busy_timeout_ms=2000`).
    pub fn index(mut self, url: impl Into<String>) -> Self {
        self.index = Some(Source::Url(url.into()));
        self
    }

    /// The blob store, by URL: `file:///abs/dir`, `memory://`.
    pub fn blobs(mut self, url: impl Into<String>) -> Self {
        self.blobs = Some(Source::Url(url.into()));
        self
    }

    /// A metadata index built by the caller (a custom backend). Capabilities are checked as
    /// for URLs.
    pub fn index_backend(mut self, backend: Arc<dyn MetadataBackend>) -> Self {
        self.index = Some(Source::Backend(backend));
        self
    }

    /// A blob store built by the caller (a custom backend).
    pub fn blob_backend(mut self, backend: Arc<dyn BlobBackend>) -> Self {
        self.blobs = Some(Source::Backend(backend));
        self
    }

    /// Index and blobs in process memory (`memory://`): for tests and throwaway caches.
    pub fn in_memory(self) -> Self {
        self.index("memory://").blobs("memory://")
    }

    /// Adds a memory tier of at most `max_bytes` in front of the index and blobs (default:
    /// none). It holds verified raw values, weighted by their size plus a fixed overhead of
    /// 160 bytes; a value heavier than an eighth of the tier (or half of one of its 8
    /// shards: the same for the default layout) is not held. Reads (`get`, `get_bytes`,
    /// `get_many`, `get_bytes_many`, `get_with`) are served from it when they can and fill it
    /// from the durable tiers when they cannot; `insert_bytes` fills it; every other local
    /// write or delete drops what it changes. See [`Cache`]'s *Memory tier* section for what
    /// other processes' writes mean.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = cachet_cache::Cache::builder().in_memory().memory_tier(64 << 20).build().await?;
    /// cache.insert_bytes("k", b"value").await?;
    /// assert_eq!(cache.get_bytes("k").await?.as_deref(), Some(&b"value"[..]));
    /// assert_eq!(cache.stats().memory_hits, 1);
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub fn memory_tier(mut self, max_bytes: u64) -> Self {
        self.memory_tier = Some(max_bytes);
        self.invalid.remove("memory_tier");
        self
    }

    /// Like [`memory_tier`](Self::memory_tier) with a human size: `"256MiB"`, `"1GB"`,
    /// `"1.5GiB"`, or a plain number of bytes. A string that does not parse fails `build`
    /// with `Error::Config { field: "memory_tier" }`.
    pub fn memory_tier_str(mut self, max_bytes: &str) -> Self {
        if let Some(bytes) = self.parsed("memory_tier", crate::memory::parse_size(max_bytes)) {
            self.memory_tier = Some(bytes);
        }
        self
    }

    /// How long a value is served from the memory tier before the durable tiers are asked
    /// again (default 60 s; never past the entry's own expiry). This bounds how long a write
    /// by another process can go unseen here. `Duration::MAX`: no bound.
    pub fn memory_tier_ttl(mut self, ttl: Duration) -> Self {
        self.memory_tier_ttl = ttl;
        self.invalid.remove("memory_tier_ttl");
        self
    }

    /// [`memory_tier_ttl`](Self::memory_tier_ttl) from a human duration (`"30s"`, `"5m"`); a
    /// bad string makes `build` fail with a `Config` error naming `memory_tier_ttl`.
    pub fn memory_tier_ttl_str(mut self, ttl: &str) -> Self {
        if let Some(ttl) = self.parsed("memory_tier_ttl", parse_duration(ttl)) {
            self.memory_tier_ttl = ttl;
        }
        self
    }

    /// The TTL of entries written without one (default: entries never expire). Must be
    /// longer than zero.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self.invalid.remove("default_ttl");
        self
    }

    /// Like [`default_ttl`](Self::default_ttl) with a human duration: `"30m"`, `"2.5h"`, `"7d"`
    /// (see [`parse_ttl`](crate::parse_ttl)). A string that does not parse fails `build` with
    /// `Error::Config { field: "default_ttl" }`.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = cachet_cache::Cache::builder().in_memory().default_ttl_str("2.5h").build().await?;
    /// assert_eq!(cache.default_ttl(), Some(std::time::Duration::from_secs(9_000)));
    /// let bad = cachet_cache::Cache::builder().in_memory().default_ttl_str("soon").build().await;
    /// assert!(matches!(bad, Err(cachet_core::Error::Config { .. })));
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub fn default_ttl_str(mut self, ttl: &str) -> Self {
        if let Some(ttl) = self.parsed("default_ttl", parse_duration(ttl)) {
            self.default_ttl = Some(ttl);
        }
        self
    }

    /// Evicts entries by this policy: quotas on bytes and entries (global and per namespace),
    /// LRU or LFU order, time-to-idle, expired entries (see [`EvictionPolicy`]). A background
    /// task runs it off the put path; [`Cache::run_eviction`] runs it at once.
    pub fn eviction(mut self, policy: EvictionPolicy) -> Self {
        self.eviction = Some(policy);
        self
    }

    /// Called once per entry an eviction run removes, with its metadata and the reason.
    /// Needs [`eviction`](Self::eviction).
    pub fn eviction_listener(
        mut self,
        listener: impl Fn(&EntryMeta, EvictionReason) + Send + Sync + 'static,
    ) -> Self {
        self.eviction_listener = Some(Arc::new(listener));
        self
    }

    /// Keeps expired entries this much longer (cleanup and eviction leave them) and lets the
    /// `get_with` family serve them as *stale* values: when a recomputation fails, the stale
    /// value is returned instead of the error (stale-if-error), and
    /// [`get_with_refresh`](Cache::get_with_refresh) returns it while refreshing in the
    /// background (stale-while-revalidate). Plain reads (`get`, `get_bytes`, ...) never return
    /// an expired value. The stale value is the durable entry: it survives restarts.
    pub fn grace(mut self, period: Duration) -> Self {
        self.grace = Some(period);
        self.invalid.remove("grace");
        self
    }

    /// [`grace`](Self::grace) from a human duration (`"1h"`, `"7d"`); a bad string makes
    /// `build` fail with a `Config` error naming `grace`.
    pub fn grace_str(mut self, period: &str) -> Self {
        if let Some(period) = self.parsed("grace", parse_duration(period)) {
            self.grace = Some(period);
        }
        self
    }

    /// With a stale value at hand, how long [`get_with_refresh`](Cache::get_with_refresh)
    /// waits for the recomputation before returning the stale value (default zero: at once).
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.soft_timeout = timeout;
        self.invalid.remove("soft_timeout");
        self
    }

    /// [`soft_timeout`](Self::soft_timeout) from a human duration (`"500ms"`, `"2s"`); a bad
    /// string makes `build` fail with a `Config` error naming `soft_timeout`.
    pub fn soft_timeout_str(mut self, timeout: &str) -> Self {
        if let Some(timeout) = self.parsed("soft_timeout", parse_duration(timeout)) {
            self.soft_timeout = timeout;
        }
        self
    }

    /// Records the outcome of a `*_str` option: its value, or why `build` will refuse it.
    fn parsed<T>(
        &mut self,
        field: &'static str,
        parsed: std::result::Result<T, String>,
    ) -> Option<T> {
        match parsed {
            Ok(value) => {
                self.invalid.remove(field);
                Some(value)
            }
            Err(reason) => {
                self.invalid.insert(field, reason);
                None
            }
        }
    }

    /// The compression of new entries (default LZ4).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }

    /// Signs every entry with this key and refuses unsigned or mis-signed ones.
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.signing_key = Some(KeySource::Key(key));
        self
    }

    /// Reads the signing key (64+ hex characters) from environment variable `var` at
    /// [`build`](Self::build).
    pub fn signing_key_from_env(mut self, var: impl Into<String>) -> Self {
        self.signing_key = Some(KeySource::Env(var.into()));
        self
    }

    /// Reads the signing key from a file (raw bytes or hex) at [`build`](Self::build). Keep
    /// it outside the cache directory: whoever can write the cache and read the key can forge
    /// entries (a key inside the directory is logged as a warning).
    pub fn signing_key_file(mut self, path: impl AsRef<Path>) -> Self {
        self.signing_key = Some(KeySource::File(path.as_ref().to_path_buf()));
        self
    }

    /// With `true`, a corrupt or tampered entry is returned as `Error::Corrupt` /
    /// `Error::Tampered` instead of being treated as a miss (default `false`).
    pub fn strict_integrity(mut self, strict: bool) -> Self {
        self.strict_integrity = strict;
        self
    }

    /// The namespace of keys (default `""`): at most 255 bytes, no `/`, no control characters.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_owned();
        self
    }

    /// How many events the channel of [`Cache::subscribe`] holds for a receiver that has not
    /// read them yet (default 1024; from 1 to `usize::MAX / 2`). A receiver further behind
    /// loses the oldest and is told how many (`RecvError::Lagged`); publishers never wait.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Adds the label `cache="<name>"` to every metric this cache records (see
    /// docs/OBSERVABILITY.md), to tell several caches of one process apart. Costs nothing per
    /// operation: the metrics are registered once, with the `metrics` recorder installed when
    /// the cache is built (install it first).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let cache = cachet_cache::Cache::builder().in_memory().metrics_label("thumbnails").build().await?;
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub fn metrics_label(mut self, name: impl Into<String>) -> Self {
        self.metrics_label = Some(name.into());
        self
    }

    /// The source of time (default: the system clock). Inject a
    /// [`ManualClock`](cachet_core::ManualClock) to test TTLs without sleeping.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Engine options (frame size, inline threshold, leases, ...). [`compression`](Self::compression),
    /// [`signing_key`](Self::signing_key) and [`clock`](Self::clock), when set, override the
    /// corresponding fields.
    pub fn store_config(mut self, config: StoreConfig) -> Self {
        self.store_config = Some(config);
        self
    }

    /// Allows an index that only this machine can see (SQLite, memory) over a blob store that
    /// other machines can reach (S3, ...). Refused by default: another machine with its own
    /// index over the same blobs would garbage-collect the blobs this index references, as it
    /// cannot see them. Allow it only when no other index shares the blob store.
    pub fn allow_local_index_with_remote_blobs(mut self, allow: bool) -> Self {
        self.allow_local_index_with_remote_blobs = allow;
        self
    }

    /// Validates every option, opens (creating if needed) the backends and returns the cache.
    ///
    /// # Errors
    /// `Error::Config` naming the field for invalid options, unknown URL schemes and
    /// incompatible backends; `Error::Io` when the directory cannot be created; the backends'
    /// errors when they cannot be opened.
    pub async fn build(self) -> Result<Cache> {
        // 1. Everything that needs no I/O.
        cachet_core::key::validate_namespace(&self.namespace)?;
        if let Some((field, reason)) = self.invalid.iter().next() {
            return Err(Error::config(field, reason));
        }
        if self.memory_tier == Some(0) {
            return Err(Error::config(
                "memory_tier",
                "must be more than zero bytes; leave it unset for no memory tier",
            ));
        }
        if self.memory_tier_ttl.is_zero() {
            return Err(Error::config(
                "memory_tier_ttl",
                "must be longer than zero (nothing would ever be served from memory)",
            ));
        }
        let memory = self
            .memory_tier
            .map(|max_bytes| crate::memory::MemoryTier::new(max_bytes, self.memory_tier_ttl));
        if self.event_capacity == 0 || self.event_capacity > usize::MAX / 2 {
            return Err(Error::config(
                "event_capacity",
                format!(
                    "{} is not a channel capacity: use 1 to usize::MAX / 2 (default 1024)",
                    self.event_capacity
                ),
            ));
        }
        let observer =
            crate::observe::Observer::new(self.event_capacity, self.metrics_label.as_deref());
        if self.default_ttl.is_some_and(|t| t.is_zero()) {
            return Err(Error::config(
                "default_ttl",
                "must be longer than zero (entries would never be readable); leave it unset \
                 for entries that never expire",
            ));
        }
        if self.grace.is_some_and(|g| g.is_zero()) {
            return Err(Error::config(
                "grace",
                "must be longer than zero; leave it unset to never serve expired values",
            ));
        }
        let grace = crate::cache::Grace {
            period: self.grace,
            soft_timeout: self.soft_timeout,
        };
        if let Some(policy) = &self.eviction {
            policy.validate()?;
        } else if self.eviction_listener.is_some() {
            return Err(Error::config(
                "eviction_listener",
                "set an eviction policy too (CacheBuilder::eviction): without one nothing is evicted",
            ));
        }
        let evictor = self
            .eviction
            .map(|policy| Evictor::new(policy, self.eviction_listener));
        let index = plan_index(self.index, self.directory.as_deref())?;
        let blobs = plan_blobs(self.blobs, self.directory.as_deref())?;
        let signing_key = match self.signing_key {
            None => None,
            Some(source) => Some(resolve_key(source, self.directory.as_deref())?),
        };
        let mut config = self.store_config.unwrap_or_default();
        if let Some(compression) = self.compression {
            config.compression = compression;
        }
        if let Some(key) = signing_key {
            config.signing_key = Some(key);
        }
        if let Some(clock) = self.clock {
            config.clock = clock;
        }
        config.validate()?;

        // 2. Open.
        if let Some(dir) = &self.directory {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
        }
        let meta = index.open().await?;
        let blob_store = blobs.open()?;

        // 3. Check that the two fit together.
        let meta_caps = meta.capabilities();
        let blob_caps = blob_store.capabilities();
        if !meta_caps.shared_across_machines
            && !blob_caps.local_only
            && !self.allow_local_index_with_remote_blobs
        {
            return Err(Error::config(
                "blobs",
                format!(
                    "the {} index is visible only on this machine, but the {} blob store can \
                     be reached from other machines: another machine with its own index over \
                     the same blobs would garbage-collect blobs this index references. Use a \
                     shared index (postgres://, feature meta-postgres) or, if no other index \
                     uses these blobs, .allow_local_index_with_remote_blobs(true)",
                    meta.name(),
                    blob_store.name()
                ),
            ));
        }

        let store = Store::new(meta, blob_store, config)?;
        tracing::debug!(?store, namespace = %self.namespace, "cache opened");
        Ok(Cache::from_parts(
            store,
            self.default_ttl,
            self.strict_integrity,
            Arc::from(self.namespace.as_str()),
            memory,
            evictor,
            grace,
            observer,
        ))
    }
}

/// A backend chosen and checked, not yet opened.
enum IndexPlan {
    Memory,
    #[cfg(feature = "meta-sqlite")]
    Sqlite(cachet_meta_sqlite::SqliteConfig),
    #[cfg(feature = "meta-postgres")]
    Postgres(Box<cachet_meta_postgres::PostgresConfig>),
    Backend(Arc<dyn MetadataBackend>),
}

impl IndexPlan {
    async fn open(self) -> Result<Arc<dyn MetadataBackend>> {
        Ok(match self {
            IndexPlan::Memory => Arc::new(MemoryMetadata::new()),
            #[cfg(feature = "meta-sqlite")]
            IndexPlan::Sqlite(config) => Arc::new(config.open().map_err(|e| in_field("index", e))?),
            #[cfg(feature = "meta-postgres")]
            IndexPlan::Postgres(config) => {
                Arc::new(config.open().await.map_err(|e| in_field("index", e))?)
            }
            IndexPlan::Backend(backend) => backend,
        })
    }
}

enum BlobPlan {
    Memory,
    #[cfg(feature = "blob-fs")]
    Fs(cachet_blob_fs::FsConfig),
    #[cfg(feature = "blob-s3")]
    S3(Box<cachet_blob_s3::S3Config>),
    Backend(Arc<dyn BlobBackend>),
}

impl BlobPlan {
    fn open(self) -> Result<Arc<dyn BlobBackend>> {
        Ok(match self {
            BlobPlan::Memory => Arc::new(MemoryBlobs::new()),
            #[cfg(feature = "blob-fs")]
            BlobPlan::Fs(config) => Arc::new(config.build().map_err(|e| in_field("blobs", e))?),
            #[cfg(feature = "blob-s3")]
            BlobPlan::S3(config) => Arc::new(config.build().map_err(|e| in_field("blobs", e))?),
            BlobPlan::Backend(backend) => backend,
        })
    }
}

/// Reports a backend's configuration error under the builder's field name.
fn in_field(field: &str, error: Error) -> Error {
    match error {
        Error::Config {
            field: inner,
            message,
        } if inner != field => Error::config(field, format!("{inner}: {message}")),
        other => other,
    }
}

/// The scheme of a URL (lowercase), and what follows `scheme:`.
fn split_scheme<'a>(field: &str, url: &'a str, accepted: &str) -> Result<(String, &'a str)> {
    let (scheme, rest) = url
        .split_once(':')
        .filter(|(s, _)| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
        .ok_or_else(|| {
            Error::config(field, format!("`{url}` is not a URL; accepted: {accepted}"))
        })?;
    Ok((scheme.to_ascii_lowercase(), rest))
}

fn check_memory_url(field: &str, url: &str, rest: &str) -> Result<()> {
    if rest == "//" || rest.is_empty() {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("`{url}`: memory:// takes no path or options"),
        ))
    }
}

fn plan_index(
    source: Option<Source<dyn MetadataBackend>>,
    directory: Option<&Path>,
) -> Result<IndexPlan> {
    let url = match source {
        Some(Source::Backend(backend)) => return Ok(IndexPlan::Backend(backend)),
        Some(Source::Url(url)) => url,
        None => match directory {
            Some(dir) => return sqlite_in_directory(dir),
            None => {
                return Err(Error::config(
                    "index",
                    "no index given: call .directory(dir), .index(url) or .in_memory()",
                ));
            }
        },
    };
    let (scheme, rest) = split_scheme("index", &url, INDEX_SCHEMES)?;
    match scheme.as_str() {
        "memory" => {
            check_memory_url("index", &url, rest)?;
            Ok(IndexPlan::Memory)
        }
        #[cfg(feature = "meta-sqlite")]
        "sqlite" => {
            let config = cachet_meta_sqlite::SqliteConfig::from_url(&url)
                .and_then(|c| c.validate().map(|()| c))
                .map_err(|e| in_field("index", e))?;
            Ok(IndexPlan::Sqlite(config))
        }
        #[cfg(not(feature = "meta-sqlite"))]
        "sqlite" => Err(Error::config(
            "index",
            format!(
                "`{url}`: sqlite:// needs the `meta-sqlite` feature, which this build does \
                 not have; accepted here: {INDEX_SCHEMES}"
            ),
        )),
        #[cfg(feature = "meta-postgres")]
        "postgres" | "postgresql" => {
            let config = cachet_meta_postgres::PostgresConfig::from_url(&url)
                .and_then(|c| c.validate().map(|()| c))
                .map_err(|e| in_field("index", e))?;
            Ok(IndexPlan::Postgres(Box::new(config)))
        }
        #[cfg(not(feature = "meta-postgres"))]
        "postgres" | "postgresql" => Err(Error::config(
            "index",
            format!(
                "`{scheme}://...`: postgres:// needs the `meta-postgres` feature (of `cachet` \
                 or `cachet-cache`), which this build does not have; accepted here: \
                 {INDEX_SCHEMES}"
            ),
        )),
        other => Err(Error::config(
            "index",
            format!("`{other}://` is not an index scheme; accepted: {INDEX_SCHEMES}"),
        )),
    }
}

#[cfg(feature = "meta-sqlite")]
fn sqlite_in_directory(dir: &Path) -> Result<IndexPlan> {
    let config = cachet_meta_sqlite::SqliteConfig::new(dir.join(INDEX_FILE));
    config.validate().map_err(|e| in_field("index", e))?;
    Ok(IndexPlan::Sqlite(config))
}

#[cfg(not(feature = "meta-sqlite"))]
fn sqlite_in_directory(_dir: &Path) -> Result<IndexPlan> {
    Err(Error::config(
        "index",
        "a cache directory's default index is SQLite, which needs the `meta-sqlite` feature; \
         enable it or give .index(\"memory://\")",
    ))
}

fn plan_blobs(
    source: Option<Source<dyn BlobBackend>>,
    directory: Option<&Path>,
) -> Result<BlobPlan> {
    let url = match source {
        Some(Source::Backend(backend)) => return Ok(BlobPlan::Backend(backend)),
        Some(Source::Url(url)) => url,
        None => match directory {
            Some(dir) => return fs_in_directory(dir),
            None => {
                return Err(Error::config(
                    "blobs",
                    "no blob store given: call .directory(dir), .blobs(url) or .in_memory()",
                ));
            }
        },
    };
    let (scheme, rest) = split_scheme("blobs", &url, BLOB_SCHEMES)?;
    match scheme.as_str() {
        "memory" => {
            check_memory_url("blobs", &url, rest)?;
            Ok(BlobPlan::Memory)
        }
        #[cfg(feature = "blob-fs")]
        "file" => {
            let config = cachet_blob_fs::FsConfig::from_url(&url)
                .and_then(|c| c.validate().map(|()| c))
                .map_err(|e| in_field("blobs", e))?;
            Ok(BlobPlan::Fs(config))
        }
        #[cfg(not(feature = "blob-fs"))]
        "file" => Err(Error::config(
            "blobs",
            format!(
                "`{url}`: file:// needs the `blob-fs` feature, which this build does not \
                 have; accepted here: {BLOB_SCHEMES}"
            ),
        )),
        #[cfg(feature = "blob-s3")]
        "s3" => {
            let config = cachet_blob_s3::S3Config::from_url(&url)
                .and_then(|c| c.validate().map(|()| c))
                .map_err(|e| in_field("blobs", e))?;
            Ok(BlobPlan::S3(Box::new(config)))
        }
        #[cfg(not(feature = "blob-s3"))]
        "s3" => Err(Error::config(
            "blobs",
            format!(
                "`s3://...`: S3-compatible object storage needs the `blob-s3` feature (of \
                 `cachet` or `cachet-cache`), which this build does not have; accepted here: \
                 {BLOB_SCHEMES}"
            ),
        )),
        other => Err(Error::config(
            "blobs",
            format!("`{other}://` is not a blob store scheme; accepted: {BLOB_SCHEMES}"),
        )),
    }
}

#[cfg(feature = "blob-fs")]
fn fs_in_directory(dir: &Path) -> Result<BlobPlan> {
    let config = cachet_blob_fs::FsConfig::new(dir.join(BLOBS_DIR));
    config.validate().map_err(|e| in_field("blobs", e))?;
    Ok(BlobPlan::Fs(config))
}

#[cfg(not(feature = "blob-fs"))]
fn fs_in_directory(_dir: &Path) -> Result<BlobPlan> {
    Err(Error::config(
        "blobs",
        "a cache directory's default blob store is the filesystem, which needs the `blob-fs` \
         feature; enable it or give .blobs(\"memory://\")",
    ))
}

fn resolve_key(source: KeySource, directory: Option<&Path>) -> Result<SigningKey> {
    match source {
        KeySource::Key(key) => Ok(key),
        KeySource::Env(var) => SigningKey::from_env(&var).map_err(|e| in_field("signing_key", e)),
        KeySource::File(path) => {
            if let Some(dir) = directory {
                let inside = match (std::path::absolute(&path), std::path::absolute(dir)) {
                    (Ok(p), Ok(d)) => p.starts_with(d),
                    _ => false,
                };
                if inside {
                    tracing::warn!(path = %path.display(),
                        "the signing key file is inside the cache directory: whoever can write \
                         the cache can read the key and forge entries; keep it elsewhere");
                }
            }
            SigningKey::from_file(&path).map_err(|e| match e {
                Error::Io { path, source } => Error::config(
                    "signing_key",
                    format!("cannot read the key file {path}: {source}"),
                ),
                other => in_field("signing_key", other),
            })
        }
    }
}

/// [`parse_ttl`](crate::parse_ttl)'s grammar, with its message (the builder names the field).
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    crate::parse_ttl(text).map_err(|e| match e {
        Error::Config { message, .. } => message,
        other => other.to_string(),
    })
}
