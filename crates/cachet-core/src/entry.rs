//! What the index records about an entry, and the identifiers it uses.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::filter::EntryFilter;
use crate::key::CacheKey;

/// The digest of an entry's raw (uncompressed, encoded) content.
///
/// xxh3-128 detects corruption; SHA-256 is used instead when signing is on, because a
/// non-cryptographic hash can be forged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentDigest {
    /// xxh3-128 of the raw content.
    Xxh3_128(u128),
    /// SHA-256 of the raw content.
    Sha256([u8; 32]),
}

impl ContentDigest {
    /// Reads the `algorithm:hex` form an index column holds.
    ///
    /// # Errors
    /// A description (for `Error::Corrupt` naming the column) when it is not a digest.
    pub fn from_column(text: &str) -> std::result::Result<Self, String> {
        text.parse()
            .map_err(|_| format!("`{text}` is not a content digest"))
    }

    /// The algorithm's name as written in the index and in blob paths: `xxh3-128` or `sha256`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            ContentDigest::Xxh3_128(_) => "xxh3-128",
            ContentDigest::Sha256(_) => "sha256",
        }
    }

    /// Lowercase hex of the digest (big-endian for xxh3-128).
    pub fn hex(&self) -> String {
        match self {
            ContentDigest::Xxh3_128(v) => format!("{v:032x}"),
            ContentDigest::Sha256(v) => hex::encode(v),
        }
    }
}

impl fmt::Display for ContentDigest {
    /// `algorithm:hex`, e.g. `xxh3-128:0123...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex())
    }
}

impl FromStr for ContentDigest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::corrupt("content digest", format!("cannot parse `{s}`"));
        let (algo, hex_part) = s.split_once(':').ok_or_else(bad)?;
        // `from_str_radix` would accept a leading `+` and upper case: the index holds exactly
        // lowercase hex, so anything else is damage.
        if !hex_part
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad());
        }
        match algo {
            "xxh3-128" if hex_part.len() == 32 => u128::from_str_radix(hex_part, 16)
                .map(ContentDigest::Xxh3_128)
                .map_err(|_| bad()),
            "sha256" if hex_part.len() == 64 => {
                let mut out = [0u8; 32];
                hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad())?;
                Ok(ContentDigest::Sha256(out))
            }
            _ => Err(bad()),
        }
    }
}

/// The digest algorithms of blob ids, as [`BlobId::algorithm`] names them (also the top-level
/// directories or name prefixes of blob stores).
pub const BLOB_ALGORITHMS: [&str; 2] = ["xxh3-128", "sha256"];

/// The name of a blob: its content digest. Blob names are derived hashes only, never user
/// strings, so they are safe as object names and path components.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(String);

impl BlobId {
    /// The blob id of content with this digest: `algorithm-hex`, e.g. `xxh3-128-00ff...`.
    pub fn from_digest(digest: &ContentDigest) -> Self {
        BlobId(format!("{}-{}", digest.algorithm(), digest.hex()))
    }

    /// Parses and validates a blob id (as read back from an index or a listing).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::corrupt("blob id", format!("`{s}` is not a valid blob id"));
        let (algo, hex_part) = if let Some(rest) = s.strip_prefix("xxh3-128-") {
            ("xxh3-128", rest)
        } else if let Some(rest) = s.strip_prefix("sha256-") {
            ("sha256", rest)
        } else {
            return Err(bad());
        };
        let want = if algo == "sha256" { 64 } else { 32 };
        if hex_part.len() != want
            || !hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad());
        }
        Ok(BlobId(s.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digest algorithm part (`xxh3-128` or `sha256`).
    pub fn algorithm(&self) -> &str {
        if self.0.starts_with("sha256-") {
            "sha256"
        } else {
            "xxh3-128"
        }
    }

    /// The hex digest part.
    pub fn hex(&self) -> &str {
        &self.0[self.algorithm().len() + 1..]
    }

    /// The shard blob stores file this blob under: the first two hex digits. Every cachet blob
    /// store uses the layout `<algorithm>/<shard>/<hex>` (one level of 256 shards), so a store
    /// copied between a directory and a bucket keeps its names.
    pub fn shard(&self) -> &str {
        &self.hex()[0..2]
    }

    /// The blob named by the components `<algorithm>/<shard>/<name>` of that layout, if they
    /// name a valid id filed in its own shard (anything else is a foreign object).
    pub fn from_sharded_name(algorithm: &str, shard: &str, name: &str) -> Option<BlobId> {
        if !BLOB_ALGORITHMS.contains(&algorithm) {
            return None;
        }
        // With a known algorithm, a valid id's parts are exactly `algorithm` and `name`.
        let id = BlobId::parse(&format!("{algorithm}-{name}")).ok()?;
        (id.shard() == shard).then_some(id)
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an entry's stored bytes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In the index row itself (small values: one round trip).
    Inline,
    /// In the blob store, under this content-derived id.
    Blob(BlobId),
}

impl Location {
    /// Reads the location an index keeps as a nullable blob-id column: `None` is inline.
    ///
    /// # Errors
    /// A description (for `Error::Corrupt` naming the column) when the text is not a blob id.
    pub fn from_blob_column(blob_id: Option<&str>) -> std::result::Result<Self, String> {
        match blob_id {
            None => Ok(Location::Inline),
            Some(text) => BlobId::parse(text)
                .map(Location::Blob)
                .map_err(|_| format!("`{text}` is not a blob id")),
        }
    }

    /// The blob id, if the value lives in a blob.
    pub fn blob_id(&self) -> Option<&BlobId> {
        match self {
            Location::Blob(id) => Some(id),
            Location::Inline => None,
        }
    }
}

/// The compression an entry was written with. Each frame records its own codec, and a frame
/// that does not shrink is stored uncompressed, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4 block compression (fast; the default).
    Lz4,
    /// Zstandard at the given level (1..=22).
    Zstd(i32),
}

impl Compression {
    /// Reads the name an index column holds (see [`name`](Self::name)).
    ///
    /// # Errors
    /// A description (for `Error::Corrupt` naming the column) when it is not a compression.
    pub fn from_column(text: &str) -> std::result::Result<Self, String> {
        text.parse()
            .map_err(|_| format!("`{text}` is not a compression"))
    }

    /// The name written in the index: `none`, `lz4`, `zstd:<level>`.
    pub fn name(&self) -> String {
        match self {
            Compression::None => "none".into(),
            Compression::Lz4 => "lz4".into(),
            Compression::Zstd(level) => format!("zstd:{level}"),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Compression {
    type Err = Error;
    /// Accepts `none`, `lz4`, `zstd` (level 3) and `zstd:<level>`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd(3)),
            _ => {
                let level = s
                    .strip_prefix("zstd:")
                    .and_then(|l| l.parse::<i32>().ok())
                    .filter(|l| (1..=22).contains(l))
                    .ok_or_else(|| {
                        Error::config(
                            "compression",
                            format!("`{s}` is not one of none, lz4, zstd, zstd:<1..=22>"),
                        )
                    })?;
                Ok(Compression::Zstd(level))
            }
        }
    }
}

/// What kind of value an entry holds, so a reader knows without decoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataType {
    /// Raw bytes, stored as given.
    Bytes,
    /// A serde value encoded as MessagePack.
    MessagePack,
    /// A serde value encoded as JSON.
    Json,
    /// A type written by an extension (name recorded as given).
    Other(String),
}

impl DataType {
    /// The name written in the index.
    pub fn as_str(&self) -> &str {
        match self {
            DataType::Bytes => "bytes",
            DataType::MessagePack => "msgpack",
            DataType::Json => "json",
            DataType::Other(s) => s,
        }
    }

    /// Parses an index value; unknown names become [`DataType::Other`].
    pub fn parse(s: &str) -> Self {
        match s {
            "bytes" => DataType::Bytes,
            "msgpack" => DataType::MessagePack,
            "json" => DataType::Json,
            other => DataType::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the index knows about an entry, without its data.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryMeta {
    /// The entry's key.
    pub key: CacheKey,
    /// The parameters the key was derived from, as JSON (absent for explicit keys).
    pub params: Option<serde_json::Value>,
    /// Inline in the index row, or in a blob.
    pub location: Location,
    /// What the value is.
    pub data_type: DataType,
    /// The Rust type name given at write time, for humans (informational; not stable across
    /// compiler versions, never used for decisions).
    pub type_name: Option<String>,
    /// Compression requested at write time.
    pub compression: Compression,
    /// Size of the raw (encoded, uncompressed) value in bytes.
    pub raw_size: u64,
    /// Size of the stored container (frames, headers, compressed payloads) in bytes.
    pub stored_size: u64,
    /// Digest of the raw value.
    pub digest: ContentDigest,
    /// When the entry was first written.
    pub created_at: Timestamp,
    /// When the value or its expiry last changed.
    pub updated_at: Timestamp,
    /// When the entry was last read (batched; may lag by the flush interval).
    pub accessed_at: Timestamp,
    /// How many times it was read (batched).
    pub access_count: u64,
    /// When it expires (interpreted by the cache layer; storage only stores it).
    pub expires_at: Option<Timestamp>,
    /// Tags for bulk invalidation.
    pub tags: Vec<String>,
    /// User metadata (a JSON object).
    pub user_metadata: Option<serde_json::Value>,
    /// HMAC-SHA256 over the entry's identity fields (lowercase hex), when written with signing on.
    pub signature: Option<String>,
    /// The blob store's entity tag of the entry's blob when it was written (S3's `ETag`), if
    /// the store has one. Informational, not signed: the signed content digest is what proves
    /// the value.
    pub blob_etag: Option<String>,
}

/// An entry as the index stores it: metadata plus, for inline entries, the stored container.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryRecord {
    /// The metadata.
    pub meta: EntryMeta,
    /// The stored container bytes when `meta.location` is [`Location::Inline`].
    pub inline_data: Option<Bytes>,
}

/// One batched read: the entry was read `hits` times, the last time at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    /// Which entry.
    pub key: CacheKey,
    /// When it was last read.
    pub at: Timestamp,
    /// How many reads since the last flush.
    pub hits: u64,
}

/// Which entries to list: those matching `filter`, ordered by `(namespace, id)`; page with
/// `after`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// Which entries (default: all).
    pub filter: EntryFilter,
    /// Start strictly after this key (the last key of the previous page).
    pub after: Option<CacheKey>,
    /// At most this many entries (0 means [`ListQuery::DEFAULT_LIMIT`]).
    pub limit: usize,
}

impl ListQuery {
    /// The page size of a query whose `limit` is 0.
    pub const DEFAULT_LIMIT: usize = 1000;

    /// The entries matching `filter`, first page.
    pub fn matching(filter: EntryFilter) -> Self {
        ListQuery {
            filter,
            ..ListQuery::default()
        }
    }

    /// Returns at most `limit` entries per page.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Starts strictly after `key`.
    pub fn after(mut self, key: CacheKey) -> Self {
        self.after = Some(key);
        self
    }

    /// The number of entries this query returns at most: `limit`, or
    /// [`DEFAULT_LIMIT`](Self::DEFAULT_LIMIT) when it is 0.
    pub fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            Self::DEFAULT_LIMIT
        } else {
            self.limit
        }
    }
}

/// Totals over the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Number of entries.
    pub entries: u64,
    /// Entries stored inline in the index.
    pub inline_entries: u64,
    /// Sum of raw sizes over all entries.
    pub raw_bytes: u64,
    /// Sum of stored sizes over all entries (shared blobs counted once per entry).
    pub stored_bytes: u64,
    /// Number of registered blobs (each stored once, however many entries share it).
    pub blobs: u64,
    /// Sum of the registered blobs' sizes (what the blob store really holds).
    pub blob_bytes: u64,
}

/// The smallest string greater than every string that starts with `prefix`, if there is one:
/// `id >= prefix AND id < bound` selects an id prefix as a range of an index in byte order
/// (instead of a `LIKE`, which cannot use the primary key and needs escaping).
///
/// UTF-8 byte order is code point order, so replacing the last character by its successor
/// (dropping trailing `char::MAX`es) bounds the range `[prefix, bound)` exactly. `None` when
/// the prefix is all `char::MAX` (no upper bound).
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod column_tests {
    use super::*;

    #[test]
    fn prefix_upper_bound_is_the_next_string_after_the_prefix_range() {
        assert_eq!(prefix_upper_bound("ab").as_deref(), Some("ac"));
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}").as_deref(),
            Some("a\u{E000}")
        );
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
    }

    #[test]
    fn from_sharded_name_accepts_only_ids_in_their_own_shard() {
        let hex = "abcdef00000000000000000000000000";
        assert!(BlobId::from_sharded_name("xxh3-128", "ab", hex).is_some());
        assert!(BlobId::from_sharded_name("xxh3-128", "ac", hex).is_none());
        assert!(BlobId::from_sharded_name("sha256", "ab", hex).is_none());
        assert!(BlobId::from_sharded_name("xxh3-128", "AB", &hex.to_uppercase()).is_none());
        assert!(BlobId::from_sharded_name("xxh3-128", "ab", "abcd.tmp").is_none());
    }

    #[test]
    fn a_digest_is_exactly_lowercase_hex() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert!(format!("xxh3-128:{hex}").parse::<ContentDigest>().is_ok());
        for bad in [
            format!("xxh3-128:+{}", &hex[1..]),
            format!("xxh3-128:{}", hex.to_uppercase()),
        ] {
            assert!(bad.parse::<ContentDigest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn columns_that_do_not_parse_are_described() {
        assert_eq!(Location::from_blob_column(None), Ok(Location::Inline));
        assert!(
            Location::from_blob_column(Some("nope"))
                .unwrap_err()
                .contains("`nope` is not a blob id")
        );
        assert_eq!(Compression::from_column("zstd:3"), Ok(Compression::Zstd(3)));
        assert!(
            Compression::from_column("gzip")
                .unwrap_err()
                .contains("gzip")
        );
        assert!(
            ContentDigest::from_column("md5:00")
                .unwrap_err()
                .contains("md5:00")
        );
    }
}
