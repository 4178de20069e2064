//! What the index needs to know to evict: how to rank entries, which ones may go, and how much
//! room they hold.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::entry::EntryMeta;
use crate::error::{Error, Result};
use crate::key::CacheKey;

/// The tag that pins an entry: eviction never selects an entry carrying it (expiry and explicit
/// deletes still apply).
pub const PINNED_TAG: &str = "cachet:pinned";

/// The order in which eviction takes entries: the first in this order go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionOrder {
    /// Least recently used first: ascending `accessed_at`.
    LeastRecentlyUsed,
    /// Least frequently used first, with aging: an entry's `access_count` counts half for every
    /// whole `half_life` since its last access (`access_count >> ((now - accessed_at) /
    /// half_life)`), so a key that was popular long ago does not stay forever. Ties go least
    /// recently used first.
    LeastFrequentlyUsed {
        /// How long an unread entry takes to lose half its weight (at least 1 ms).
        half_life: Duration,
    },
}

impl EvictionOrder {
    /// LFU with a one-hour half-life.
    pub const LFU: EvictionOrder = EvictionOrder::LeastFrequentlyUsed {
        half_life: Duration::from_secs(3600),
    };

    /// The half-life in milliseconds, for the index's query (`None` for LRU).
    ///
    /// # Errors
    /// `Error::Config` for a half-life under 1 ms.
    pub fn half_life_ms(&self) -> Result<Option<i64>> {
        match self {
            EvictionOrder::LeastRecentlyUsed => Ok(None),
            EvictionOrder::LeastFrequentlyUsed { half_life } => {
                let ms = i64::try_from(half_life.as_millis()).unwrap_or(i64::MAX);
                if ms < 1 {
                    return Err(Error::config(
                        "EvictionOrder::LeastFrequentlyUsed::half_life",
                        format!("must be at least 1 ms, not {half_life:?}"),
                    ));
                }
                Ok(Some(ms))
            }
        }
    }

    /// The aged weight of an entry under this order: the access count halved once per whole
    /// half-life since `accessed_at` (the exact integer rule every index implements).
    pub fn aged_count(
        half_life_ms: i64,
        access_count: u64,
        accessed_at: Timestamp,
        now: Timestamp,
    ) -> u64 {
        let periods = (now.0.saturating_sub(accessed_at.0) / half_life_ms).clamp(0, 63);
        access_count >> periods
    }
}

/// One round of eviction asked of the index ([`MetadataBackend::evict`](crate::MetadataBackend::evict)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictionBatch {
    /// Only entries of this namespace (`None`: every namespace).
    pub namespace: Option<String>,
    /// Which entries go first.
    pub order: EvictionOrder,
    /// Only entries last written (`updated_at`) strictly before this are candidates: the entry
    /// whose write triggered an eviction is never its victim.
    pub written_before: Timestamp,
    /// Only entries last read (`accessed_at`) strictly before this (time-to-idle); `None`: any.
    pub accessed_before: Option<Timestamp>,
    /// "Now", for the aging of [`EvictionOrder::LeastFrequentlyUsed`].
    pub now: Timestamp,
    /// At most this many entries.
    pub max_entries: usize,
    /// Stop once the removed entries' stored sizes add up to at least this many bytes
    /// (`u64::MAX`: no byte budget, only `max_entries`).
    pub max_bytes: u64,
}

impl EvictionBatch {
    /// A batch of at most `max_entries` entries in `order`, of entries written before `now`.
    pub fn new(order: EvictionOrder, now: Timestamp, max_entries: usize) -> Self {
        EvictionBatch {
            namespace: None,
            order,
            written_before: now,
            accessed_before: None,
            now,
            max_entries,
            max_bytes: u64::MAX,
        }
    }
}

/// How much room entries take, as eviction counts it ([`MetadataBackend::usage`](crate::MetadataBackend::usage)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexUsage {
    /// Entries.
    pub entries: u64,
    /// Stored bytes: each inline value, plus each blob the entries reference counted **once**
    /// however many of them share it (its registered size). This is what deleting every one of
    /// these entries would free.
    pub bytes: u64,
}

impl IndexUsage {
    /// A usage of `entries` entries taking `bytes` bytes.
    pub fn new(entries: u64, bytes: u64) -> Self {
        IndexUsage { entries, bytes }
    }
}

impl EvictionBatch {
    /// Whether an entry is a candidate of this batch (the reference semantics of
    /// [`MetadataBackend::evict`](crate::MetadataBackend::evict)).
    pub fn is_candidate(&self, meta: &EntryMeta) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| meta.key.namespace() == ns)
            && meta.updated_at < self.written_before
            && self.accessed_before.is_none_or(|at| meta.accessed_at < at)
            && !meta.tags.iter().any(|t| t == PINNED_TAG)
    }

    /// Picks the victims among `entries` (the reference implementation, for indexes held in
    /// memory): the candidates in eviction order, cut at `max_entries` and `max_bytes`.
    /// Returns their positions in `entries`.
    ///
    /// # Errors
    /// `Error::Config` for an invalid order (see [`EvictionOrder::half_life_ms`]).
    pub fn select<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a EntryMeta>,
    ) -> Result<Vec<usize>> {
        let half_life = self.order.half_life_ms()?;
        let mut ranked: Vec<(u64, i64, &CacheKey, usize, u64)> = entries
            .into_iter()
            .enumerate()
            .filter(|(_, meta)| self.is_candidate(meta))
            .map(|(i, meta)| {
                let (weight, accessed_at) = self.rank(half_life, meta);
                (weight, accessed_at, &meta.key, i, meta.stored_size)
            })
            .collect();
        ranked.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        let mut chosen = Vec::new();
        let mut bytes = 0u64;
        for (_, _, _, i, size) in ranked.into_iter().take(self.max_entries) {
            if bytes >= self.max_bytes {
                break;
            }
            bytes = bytes.saturating_add(size);
            chosen.push(i);
        }
        Ok(chosen)
    }
}

impl EvictionBatch {
    /// Sorts victims into eviction order (for indexes whose atomic delete returns rows in
    /// another order): the rank is computed from the deleted rows, which are the rows judged.
    ///
    /// # Errors
    /// `Error::Config` for an invalid order (see [`EvictionOrder::half_life_ms`]).
    pub fn sort_victims(&self, victims: &mut [EntryMeta]) -> Result<()> {
        let half_life = self.order.half_life_ms()?;
        victims.sort_by_cached_key(|meta| (self.rank(half_life, meta), meta.key.clone()));
        Ok(())
    }

    /// An entry's place in eviction order, before the key breaks ties: its aged count (0
    /// under LRU) and its last read.
    fn rank(&self, half_life_ms: Option<i64>, meta: &EntryMeta) -> (u64, i64) {
        let weight = half_life_ms.map_or(0, |h| {
            EvictionOrder::aged_count(h, meta.access_count, meta.accessed_at, self.now)
        });
        (weight, meta.accessed_at.0)
    }
}
