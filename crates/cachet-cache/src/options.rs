//! Per-entry write options, TTL strings, and the `insert` request builders.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use cachet_core::{Compression, EntryMeta, Error, FieldValue, Result};
use cachet_storage::PutOptions;
use serde::Serialize;

use crate::cache::Cache;
use crate::key::ResolvedKey;

/// Parses a TTL such as `"30s"`, `"15m"`, `"2.5h"`, `"7d"` or `"1w"`.
///
/// A number (decimals allowed) followed by one unit: `ms`, `s`, `m`, `h`, `d` (24 h) or `w`
/// (7 d). Whitespace around and between is ignored. Zero, negative and non-finite values are
/// refused with `Error::Config { field: "ttl" }`: an entry that expires at once is never
/// readable.
///
/// ```
/// use std::time::Duration;
/// use cachet_cache::parse_ttl;
/// assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86_400));
/// assert_eq!(parse_ttl("2.5h").unwrap(), Duration::from_secs(9_000));
/// assert!(parse_ttl("7 fortnights").is_err());
/// ```
pub fn parse_ttl(text: &str) -> Result<Duration> {
    let bad = |why: &str| {
        Error::config(
            "ttl",
            format!(
                "`{text}` {why}; write a positive number and a unit: ms, s, m, h, d or w \
                 (e.g. 30s, 2.5h, 7d)"
            ),
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| bad("has no unit"))?;
    let (number, unit) = trimmed.split_at(split);
    let unit_secs = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        _ => return Err(bad("has an unknown unit")),
    };
    let number = number.trim();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad("is not a number followed by a unit"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| bad("is not a number followed by a unit"))?;
    let ttl = Duration::try_from_secs_f64(value * unit_secs).map_err(|_| bad("is out of range"))?;
    if ttl.is_zero() {
        return Err(bad("is zero"));
    }
    Ok(ttl)
}

/// How long an entry lives.
#[derive(Debug, Clone, Default, PartialEq)]
enum Ttl {
    /// The cache's default TTL (which may be none).
    #[default]
    Default,
    /// This long after the write.
    For(Duration),
    /// Never expires, whatever the default.
    Never,
    /// An invalid TTL string, reported when the write runs.
    Invalid(String),
}

/// Options for one write: TTL, tags, user metadata, compression, encoding.
///
/// The same options are set on an [`Insert`] request directly; this type is for
/// [`Cache::get_with_options`], [`Cache::writer_with_options`] and the blocking API.
///
/// ```
/// use std::time::Duration;
/// use cachet_cache::InsertOptions;
/// let options = InsertOptions::new()
///     .with_ttl(Duration::from_secs(3600))
///     .with_tag("sales")
///     .with_metadata(serde_json::json!({ "owner": "forecasting" }));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InsertOptions {
    ttl: Ttl,
    tags: Vec<String>,
    metadata: Option<serde_json::Value>,
    compression: Option<Compression>,
    json: bool,
    /// Why a `with_meta` value was refused (reported by the write).
    invalid_meta: Option<String>,
}

impl InsertOptions {
    /// The defaults: the cache's default TTL, no tags, no metadata, the cache's compression.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expires the entry `ttl` after the write (overrides the cache's default TTL).
    /// A zero TTL fails the write with `Error::Config { field: "ttl" }`.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Ttl::For(ttl);
        self
    }

    /// Like [`with_ttl`](Self::with_ttl) with a string such as `"7d"` or `"2.5h"` (see
    /// [`parse_ttl`]). An invalid string fails the write with `Error::Config { field: "ttl" }`.
    pub fn with_ttl_str(mut self, ttl: &str) -> Self {
        self.ttl = match parse_ttl(ttl) {
            Ok(ttl) => Ttl::For(ttl),
            Err(_) => Ttl::Invalid(ttl.to_owned()),
        };
        self
    }

    /// The entry never expires, whatever the cache's default TTL.
    pub fn without_ttl(mut self) -> Self {
        self.ttl = Ttl::Never;
        self
    }

    /// Adds a tag (for bulk invalidation and queries). Tags must be non-empty.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Pins the entry: eviction never removes it (its TTL and explicit invalidation still
    /// apply). A pin is the tag [`PINNED_TAG`](cachet_core::PINNED_TAG), so pinned entries
    /// can be listed and unpinned by rewriting them without it.
    pub fn pinned(self) -> Self {
        if self.tags.iter().any(|t| t == cachet_core::PINNED_TAG) {
            return self;
        }
        self.with_tag(cachet_core::PINNED_TAG)
    }

    /// Attaches user metadata (a JSON object), stored in the index and shown by the CLI.
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets one typed field of the user metadata (`accuracy = 0.95`, `model = "xgboost"`),
    /// keeping the others: fields are what [`EntryFilter`](cachet_core::EntryFilter) queries
    /// find entries by (`accuracy >= 0.9`). A value JSON cannot hold (NaN, infinity) fails the
    /// write with `Error::Config { field: "metadata value" }`.
    ///
    /// ```
    /// # use cachet_cache::InsertOptions;
    /// let options = InsertOptions::new().with_meta("accuracy", 0.95).with_meta("model", "xgboost");
    /// # let _ = options;
    /// ```
    pub fn with_meta(mut self, field: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        let value = value.into();
        if let Err(e) = value.validate() {
            self.invalid_meta.get_or_insert(e.to_string());
        }
        let object = match self.metadata.take() {
            Some(serde_json::Value::Object(map)) => map,
            // Not an object: the write fails on it (to_put_options) unless a field replaces it.
            _ => serde_json::Map::new(),
        };
        let mut object = object;
        object.insert(field.into(), value.to_json());
        self.metadata = Some(serde_json::Value::Object(object));
        self
    }

    /// Overrides the cache's compression for this entry.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }

    /// Stores a serde value as JSON (human-readable in the index and the CLI) instead of
    /// MessagePack. Reading it back is the same. Ignored for raw bytes.
    pub fn as_json(mut self) -> Self {
        self.json = true;
        self
    }

    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// The storage options of a write, checking every option. The TTL counts from the commit
    /// (for streamed values, from `finish`).
    pub(crate) fn to_put_options(
        &self,
        default_ttl: Option<Duration>,
        params: Option<serde_json::Value>,
    ) -> Result<PutOptions> {
        let ttl = match &self.ttl {
            Ttl::Default => default_ttl,
            Ttl::For(ttl) => Some(*ttl),
            Ttl::Never => None,
            Ttl::Invalid(text) => {
                return Err(parse_ttl(text).err().unwrap_or_else(|| {
                    Error::config("ttl", format!("`{text}` is not a valid TTL"))
                }));
            }
        };
        if ttl.is_some_and(|t| t.is_zero()) {
            return Err(Error::config(
                "ttl",
                "a TTL must be longer than zero (the entry would never be readable); use \
                 without_ttl() for entries that never expire",
            ));
        }
        if let Some(tag) = self
            .tags
            .iter()
            .find(|t| t.is_empty() || t.chars().any(char::is_control))
        {
            return Err(Error::config(
                "tag",
                format!(
                    "{tag:?} is not a valid tag: tags are non-empty, without control characters"
                ),
            ));
        }
        if let Some(reason) = &self.invalid_meta {
            return Err(Error::config("metadata value", reason));
        }
        if let Some(meta) = &self.metadata {
            if !meta.is_object() {
                return Err(Error::config(
                    "metadata",
                    "user metadata must be a JSON object, e.g. json!({\"owner\": \"me\"})",
                ));
            }
        }
        Ok(PutOptions {
            expires_at: None,
            ttl,
            params,
            tags: self.tags.clone(),
            user_metadata: self.metadata.clone(),
            compression: self.compression,
            type_name: None,
        })
    }
}

/// The option setters shared by the request builders.
macro_rules! option_setters {
    () => {
        /// Expires the entry `ttl` after the write (overrides the cache's default TTL).
        pub fn with_ttl(mut self, ttl: Duration) -> Self {
            self.options = self.options.with_ttl(ttl);
            self
        }

        /// Like `with_ttl` with a string: `"30s"`, `"15m"`, `"2.5h"`, `"7d"`, `"1w"`. An invalid
        /// string fails the write with `Error::Config { field: "ttl" }`.
        pub fn with_ttl_str(mut self, ttl: &str) -> Self {
            self.options = self.options.with_ttl_str(ttl);
            self
        }

        /// The entry never expires, whatever the cache's default TTL.
        pub fn without_ttl(mut self) -> Self {
            self.options = self.options.without_ttl();
            self
        }

        /// Adds a tag.
        pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
            self.options = self.options.with_tag(tag);
            self
        }

        /// Attaches user metadata (a JSON object).
        pub fn with_metadata(mut self, metadata: serde_json::Value) -> Self {
            self.options = self.options.with_metadata(metadata);
            self
        }

        /// Pins the entry: eviction never removes it (see [`InsertOptions::pinned`]).
        pub fn pinned(mut self) -> Self {
            self.options = self.options.pinned();
            self
        }

        /// Sets one typed field of the user metadata (see [`InsertOptions::with_meta`]).
        pub fn with_meta(mut self, field: impl Into<String>, value: impl Into<FieldValue>) -> Self {
            self.options = self.options.with_meta(field, value);
            self
        }

        /// Overrides the cache's compression for this entry.
        pub fn with_compression(mut self, compression: Compression) -> Self {
            self.options = self.options.with_compression(compression);
            self
        }

        /// Replaces all options at once.
        pub fn with_options(mut self, options: InsertOptions) -> Self {
            self.options = options;
            self
        }
    };
}

/// The future an insert request turns into.
pub type InsertFuture<'a> = Pin<Box<dyn Future<Output = Result<EntryMeta>> + Send + 'a>>;

/// A pending [`Cache::insert`] of a serde value: set options, then `.await` it.
///
/// ```
/// # use std::time::Duration;
/// # use cachet_cache::Cache;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// # let cache = Cache::builder().in_memory().build().await?;
/// let key = cachet_core::params! { "report" => "sales" };
/// let meta = cache
///     .insert(&key, &vec![1u32, 2, 3])
///     .with_ttl(Duration::from_secs(3600))
///     .with_tag("sales")
///     .await?;
/// assert_eq!(meta.tags, ["sales"]);
/// # Ok::<(), cachet_core::Error>(()) }).unwrap();
/// ```
#[must_use = "an insert does nothing until it is awaited"]
#[derive(Debug)]
pub struct Insert<'a, T: ?Sized> {
    cache: &'a Cache,
    key: Result<ResolvedKey>,
    value: &'a T,
    options: InsertOptions,
}

impl<'a, T: ?Sized> Insert<'a, T> {
    pub(crate) fn new(cache: &'a Cache, key: Result<ResolvedKey>, value: &'a T) -> Self {
        Insert {
            cache,
            key,
            value,
            options: InsertOptions::default(),
        }
    }

    option_setters!();

    /// Stores the value as JSON instead of MessagePack (see [`InsertOptions::as_json`]).
    pub fn as_json(mut self) -> Self {
        self.options = self.options.as_json();
        self
    }
}

impl<'a, T: Serialize + Sync + ?Sized> IntoFuture for Insert<'a, T> {
    type Output = Result<EntryMeta>;
    type IntoFuture = InsertFuture<'a>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let key = self.key?;
            let reported = key.key.clone();
            self.cache
                .insert_resolved(key, self.value, &self.options)
                .await
                .inspect_err(|e| (self.cache.shared.observer).failed(Some(&reported), "write", e))
        })
    }
}

/// A pending [`Cache::insert_bytes`]: set options, then `.await` it.
#[must_use = "an insert does nothing until it is awaited"]
#[derive(Debug)]
pub struct InsertBytes<'a, B> {
    cache: &'a Cache,
    key: Result<ResolvedKey>,
    data: B,
    options: InsertOptions,
}

impl<'a, B> InsertBytes<'a, B> {
    pub(crate) fn new(cache: &'a Cache, key: Result<ResolvedKey>, data: B) -> Self {
        InsertBytes {
            cache,
            key,
            data,
            options: InsertOptions::default(),
        }
    }

    option_setters!();
}

impl<'a, B: AsRef<[u8]> + Send + Sync + 'a> IntoFuture for InsertBytes<'a, B> {
    type Output = Result<EntryMeta>;
    type IntoFuture = InsertFuture<'a>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let key = self.key?;
            let reported = key.key.clone();
            self.cache
                .insert_bytes_resolved(key, self.data.as_ref(), &self.options)
                .await
                .inspect_err(|e| (self.cache.shared.observer).failed(Some(&reported), "write", e))
        })
    }
}
