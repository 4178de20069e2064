//! The memory tier: verified raw values of recent reads and local writes, in process memory,
//! in front of the durable index and blobs (see [`CacheBuilder::memory_tier`]).
//!
//! # Keeping it coherent with this process's writes
//! A fill that races with a local write must not leave the old value in memory. Every key
//! maps to one of [`STRIPES`] epochs. A reader takes a [`Ticket`] (the key's epoch) *before*
//! its durable read and backfills only if the epoch is unchanged; a local mutation, once its
//! durable part is done (or abandoned: errors and cancellation included), removes the key and
//! bumps its epoch under [`MemoryTier::fills`]. So a backfill either lands before the removal
//! (and is removed) or is refused. A write that fills memory itself does so only if no other
//! write of its stripe finished meanwhile; otherwise it removes the key, since the durable
//! order of two concurrent writes is unknown here.
//!
//! [`CacheBuilder::memory_tier`]: crate::CacheBuilder::memory_tier

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use cachet_core::{CacheKey, DataType, EntryMeta, Error, Result, Timestamp};
use serde::de::DeserializeOwned;

/// Epoch stripes (keys of one stripe invalidate each other's concurrent backfills).
const STRIPES: usize = 256;
/// Shards of the underlying cache: each holds `max_bytes / SHARDS`, so the admission limit
/// is kept under half a shard.
const SHARDS: usize = 8;
/// What an entry costs besides its value: key strings, the `Arc`, the cache's slot.
pub(crate) const ENTRY_OVERHEAD: u64 = 160;
/// The default bound on how long a value stays in memory without a durable read
/// ([`CacheBuilder::memory_tier_ttl`](crate::CacheBuilder::memory_tier_ttl)).
pub(crate) const DEFAULT_MEMORY_TTL: Duration = Duration::from_secs(60);

/// One value held in memory, with what a hit needs to follow the cache's rules.
#[derive(Debug)]
pub(crate) struct MemoryEntry {
    /// The verified raw (decoded, uncompressed) content.
    pub(crate) raw: Bytes,
    pub(crate) data_type: DataType,
    /// The earlier of the entry's own expiry and the memory tier's TTL bound.
    live_until: Option<Timestamp>,
    weight: u64,
}

impl MemoryEntry {
    pub(crate) fn raw_size(&self) -> u64 {
        self.raw.len() as u64
    }

    /// The value as `T`, decoded as the durable read does (same `TypeMismatch` errors).
    pub(crate) fn decode<T: DeserializeOwned>(&self, key: &CacheKey) -> Result<T> {
        decode_raw(key, &self.data_type, &self.raw)
    }

    /// The value as `T` if it decodes as one (the fast path; on `None` the caller takes the
    /// long way, which reports the mismatch with the key).
    pub(crate) fn try_decode<T: DeserializeOwned>(&self) -> Option<T> {
        match self.data_type {
            DataType::MessagePack => rmp_serde::from_slice(&self.raw).ok(),
            DataType::Json => serde_json::from_slice(&self.raw).ok(),
            _ => None,
        }
    }

    /// The value as raw bytes, or `TypeMismatch` for a serde value.
    pub(crate) fn bytes(&self, key: &CacheKey) -> Result<Bytes> {
        if self.data_type == DataType::Bytes {
            Ok(self.raw.clone())
        } else {
            Err(Error::TypeMismatch {
                key: key.to_string(),
                expected: "bytes".to_owned(),
                found: format!("{} data", self.data_type),
            })
        }
    }
}

/// A key borrowed from the caller. It hashes exactly like the [`CacheKey`] it names: both
/// derive `Hash` over `(namespace, id)`, and `String` hashes as its `str` (checked by a test).
#[derive(Hash)]
struct KeyRef<'a> {
    namespace: &'a str,
    id: &'a str,
}

impl quick_cache::Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        key.id() == self.id && key.namespace() == self.namespace
    }
}

/// Decodes a serde value from an entry's verified raw content (as `Store::read_value`).
pub(crate) fn decode_raw<T: DeserializeOwned>(
    key: &CacheKey,
    data_type: &DataType,
    raw: &[u8],
) -> Result<T> {
    let mismatch = |found: String| Error::TypeMismatch {
        key: key.to_string(),
        expected: std::any::type_name::<T>().to_owned(),
        found,
    };
    match data_type {
        DataType::MessagePack => rmp_serde::from_slice(raw).map_err(|e| {
            mismatch(format!(
                "a MessagePack value that does not decode as it ({e})"
            ))
        }),
        DataType::Json => serde_json::from_slice(raw)
            .map_err(|e| mismatch(format!("a JSON value that does not decode as it ({e})"))),
        other => Err(mismatch(format!("{other} data"))),
    }
}

/// Weighs an entry by its bytes.
#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<CacheKey, Arc<MemoryEntry>> for ByBytes {
    fn weight(&self, _key: &CacheKey, entry: &Arc<MemoryEntry>) -> u64 {
        entry.weight
    }
}

/// A key's epoch, taken before a durable read or write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    stripe: usize,
    epoch: u64,
}

pub(crate) struct MemoryTier {
    entries: quick_cache::sync::Cache<CacheKey, Arc<MemoryEntry>, ByBytes>,
    /// The largest value admitted (bytes of its weight).
    max_entry: u64,
    ttl: Duration,
    epochs: Box<[AtomicU64]>,
    /// Serializes fills and removals with the epoch checks and bumps.
    fills: Mutex<()>,
    stripe_hasher: BuildHasherDefault<DefaultHasher>,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("capacity", &self.entries.capacity())
            .field("weight", &self.entries.weight())
            .field("entries", &self.entries.len())
            .field("max_entry", &self.max_entry)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl MemoryTier {
    /// A tier holding at most `max_bytes` (values plus [`ENTRY_OVERHEAD`] each); values whose
    /// weight exceeds an eighth of it (or half a shard) are not admitted.
    pub(crate) fn new(max_bytes: u64, ttl: Duration) -> MemoryTier {
        let estimated_items = usize::try_from(max_bytes / 1024)
            .unwrap_or(usize::MAX)
            .clamp(64, 1 << 20);
        let options = quick_cache::OptionsBuilder::new()
            .shards(SHARDS)
            .estimated_items_capacity(estimated_items)
            .weight_capacity(max_bytes)
            .build()
            .expect("capacity and item estimate are set");
        let entries = quick_cache::sync::Cache::with_options(
            options,
            ByBytes,
            quick_cache::DefaultHashBuilder::default(),
            quick_cache::sync::DefaultLifecycle::default(),
        );
        let max_entry = (max_bytes / 8).min(entries.shard_capacity() / 2);
        MemoryTier {
            entries,
            max_entry,
            ttl,
            epochs: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            fills: Mutex::new(()),
            stripe_hasher: BuildHasherDefault::default(),
        }
    }

    /// Total weight held (values plus overhead), for tests and `Debug`.
    pub(crate) fn weight(&self) -> u64 {
        self.entries.weight()
    }

    /// Whether a value of `raw_size` bytes would be admitted.
    pub(crate) fn admits(&self, raw_size: u64) -> bool {
        raw_size.saturating_add(ENTRY_OVERHEAD) <= self.max_entry
    }

    /// A live entry, or `None`; an entry past its `live_until` is removed.
    #[inline]
    pub(crate) fn get(&self, key: &CacheKey, now: Timestamp) -> Option<Arc<MemoryEntry>> {
        let entry = self.entries.get(key)?;
        if entry.live_until.is_none_or(|at| at > now) {
            return Some(entry);
        }
        // Only this entry: a fresher one filled meanwhile stays.
        self.entries
            .remove_if(key, |held| Arc::ptr_eq(held, &entry));
        None
    }

    /// A live entry looked up by a borrowed `(namespace, id)` (no key is built); an entry past
    /// its `live_until` is left to [`get`](Self::get) to remove.
    #[inline]
    pub(crate) fn get_borrowed(
        &self,
        namespace: &str,
        id: &str,
        now: Timestamp,
    ) -> Option<Arc<MemoryEntry>> {
        let entry = self.entries.get(&KeyRef { namespace, id })?;
        entry.live_until.is_none_or(|at| at > now).then_some(entry)
    }

    pub(crate) fn ticket(&self, key: &CacheKey) -> Ticket {
        let stripe = (self.stripe_hasher.hash_one(key) as usize) % STRIPES;
        Ticket {
            stripe,
            epoch: self.epochs[stripe].load(Ordering::Acquire),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere leaves nothing inconsistent.
        self.fills.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry(&self, meta: &EntryMeta, raw: &Bytes, now: Timestamp) -> Option<Arc<MemoryEntry>> {
        let size = raw.len() as u64;
        if !self.admits(size) {
            return None;
        }
        let bound = now.plus(self.ttl);
        let live_until = Some(meta.expires_at.map_or(bound, |at| at.min(bound)));
        Some(Arc::new(MemoryEntry {
            raw: raw.clone(),
            data_type: meta.data_type.clone(),
            live_until,
            weight: size + ENTRY_OVERHEAD,
        }))
    }

    /// After a durable read: holds the verified value unless a local write of the key's stripe
    /// finished since `ticket` was taken.
    pub(crate) fn backfill(&self, ticket: Ticket, meta: &EntryMeta, raw: &Bytes, now: Timestamp) {
        let Some(entry) = self.entry(meta, raw, now) else {
            return;
        };
        let _fills = self.lock();
        if self.epochs[ticket.stripe].load(Ordering::Acquire) == ticket.epoch {
            self.entries.insert(meta.key.clone(), entry);
        }
    }

    /// After a local write of `meta.key` (ticket taken before it): holds the written value,
    /// or forgets the key when another write of its stripe finished meanwhile.
    /// `raw: None` (a value not held) forgets the key.
    pub(crate) fn written(
        &self,
        ticket: Ticket,
        meta: &EntryMeta,
        raw: Option<&Bytes>,
        now: Timestamp,
    ) {
        let entry = raw.and_then(|raw| self.entry(meta, raw, now));
        let _fills = self.lock();
        let epoch = &self.epochs[ticket.stripe];
        match entry {
            Some(entry) if epoch.load(Ordering::Acquire) == ticket.epoch => {
                self.entries.insert(meta.key.clone(), entry);
            }
            _ => {
                self.entries.remove(&meta.key);
            }
        }
        epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// After a local change to these keys: drops them and refuses backfills begun before.
    pub(crate) fn forget<'k>(&self, keys: impl IntoIterator<Item = &'k CacheKey>) {
        let _fills = self.lock();
        for key in keys {
            self.entries.remove(key);
            let stripe = (self.stripe_hasher.hash_one(key) as usize) % STRIPES;
            self.epochs[stripe].fetch_add(1, Ordering::AcqRel);
        }
    }

    /// After a change whose keys are unknown: drops everything.
    pub(crate) fn clear(&self) {
        let _fills = self.lock();
        self.entries.clear();
        for epoch in self.epochs.iter() {
            epoch.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Forgets keys when dropped: after the durable change, whether it succeeded, failed or was
/// cancelled midway.
pub(crate) struct Forget<'a> {
    pub(crate) tier: &'a MemoryTier,
    pub(crate) keys: Vec<CacheKey>,
}

impl Forget<'_> {
    /// The change is handled otherwise: forget nothing.
    pub(crate) fn defuse(mut self) {
        self.keys.clear();
    }
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if !self.keys.is_empty() {
            self.tier.forget(&self.keys);
        }
    }
}

/// Clears the tier when dropped unless [`defuse`](Self::defuse)d with the keys changed.
pub(crate) struct ClearUnlessDone<'a> {
    pub(crate) tier: &'a MemoryTier,
    pub(crate) done: bool,
}

impl ClearUnlessDone<'_> {
    pub(crate) fn defuse(mut self, changed: &[CacheKey]) {
        self.done = true;
        self.tier.forget(changed);
    }
}

impl Drop for ClearUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.tier.clear();
        }
    }
}

/// Parses a byte size: `"268435456"`, `"256MiB"`, `"1.5GiB"`, `"512KB"`, `"64 MiB"` (units `B`,
/// `KB`/`MB`/`GB`/`TB` in powers of 1000, `KiB`/`MiB`/`GiB`/`TiB` in powers of 1024;
/// case-insensitive).
pub(crate) fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as `256MiB` or `1GB`"))?;
    let bytes = value * factor as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{text}` is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2kb"), Ok(2_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("").is_err());
    }
}

#[cfg(test)]
mod key_ref_tests {
    use super::*;

    #[test]
    fn a_borrowed_key_hashes_like_the_cache_key_it_names() {
        let hasher = quick_cache::DefaultHashBuilder::default();
        for (namespace, id) in [
            ("", "k"),
            ("team-a", "report/2026"),
            ("ns", ""),
            ("a", "bc"),
        ] {
            let Ok(key) = CacheKey::explicit(namespace, id) else {
                continue;
            };
            assert_eq!(
                hasher.hash_one(&key),
                hasher.hash_one(KeyRef { namespace, id }),
                "{namespace:?}/{id:?}"
            );
        }
        // ("a", "bc") and ("ab", "c") differ: the field boundary is part of the hash.
        assert_ne!(
            hasher.hash_one(KeyRef {
                namespace: "a",
                id: "bc"
            }),
            hasher.hash_one(KeyRef {
                namespace: "ab",
                id: "c"
            })
        );
    }

    #[test]
    fn a_borrowed_lookup_finds_what_an_owned_insert_put() {
        let tier = MemoryTier::new(1 << 20, Duration::from_secs(60));
        let key = CacheKey::explicit("ns", "id").unwrap();
        let entry = Arc::new(MemoryEntry {
            raw: Bytes::from_static(b"v"),
            data_type: DataType::Bytes,
            live_until: None,
            weight: 1 + ENTRY_OVERHEAD,
        });
        tier.entries.insert(key, entry);
        assert!(tier.get_borrowed("ns", "id", Timestamp(0)).is_some());
        assert!(tier.get_borrowed("n", "sid", Timestamp(0)).is_none());
    }
}
