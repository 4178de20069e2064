//! Cache events a program can subscribe to (see [`Cache::subscribe`](crate::Cache::subscribe)).

use std::fmt;

use cachet_core::CacheKey;

/// Where a hit was served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The in-process memory tier (see
    /// [`CacheBuilder::memory_tier`](crate::CacheBuilder::memory_tier)).
    Memory,
    /// The durable index and blob store.
    Durable,
}

impl Tier {
    /// `"memory"` or `"durable"`: the value of the `tier` label and span field.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Durable => "durable",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an entry was evicted (removed by the cache itself, not by a caller's delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvictionReason {
    /// Its time to live had passed.
    Expired,
    /// It was not read for longer than its time to idle.
    Idle,
    /// The cache was over its byte budget.
    MaxBytes,
    /// The cache was over its entry count budget.
    MaxEntries,
    /// Its namespace was over its quota.
    NamespaceQuota,
}

impl EvictionReason {
    /// `"expired"`, `"idle"`, `"max_bytes"`, `"max_entries"` or `"namespace_quota"`: the value
    /// of the `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionReason::Expired => "expired",
            EvictionReason::Idle => "idle",
            EvictionReason::MaxBytes => "max_bytes",
            EvictionReason::MaxEntries => "max_entries",
            EvictionReason::NamespaceQuota => "namespace_quota",
        }
    }

    /// Every reason, in declaration order.
    pub(crate) const ALL: [EvictionReason; 5] = [
        EvictionReason::Expired,
        EvictionReason::Idle,
        EvictionReason::MaxBytes,
        EvictionReason::MaxEntries,
        EvictionReason::NamespaceQuota,
    ];

    pub(crate) fn index(self) -> usize {
        match self {
            EvictionReason::Expired => 0,
            EvictionReason::Idle => 1,
            EvictionReason::MaxBytes => 2,
            EvictionReason::MaxEntries => 3,
            EvictionReason::NamespaceQuota => 4,
        }
    }
}

impl fmt::Display for EvictionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened in a cache, as seen by [`Cache::subscribe`](crate::Cache::subscribe).
///
/// Events are published by the operation itself, after the fact they report, and in this
/// process only (another process sharing the index has its own). They agree with
/// [`CacheStats`](crate::CacheStats) and the `metrics` counters: each `Hit` is one hit counted,
/// each `Miss` one miss, each `Put` one insert.
///
/// | event | when |
/// |---|---|
/// | `Hit` | a value read (`get`, `get_bytes`, `reader`, `get_many`, `get_with`, ...) found a live, valid entry |
/// | `Miss` | such a read found none (absent, expired, damaged), or `get_with` computed the value |
/// | `Put` | an entry was written (`insert*`, `update*`, a finished writer, a computed value) |
/// | `Invalidated` | a caller deleted an entry (`invalidate*`, `invalidate_where`, `invalidate_tag`, `invalidate_namespace`) |
/// | `Expired` | a read found the entry expired (before its `Miss`), or `cleanup_expired` deleted it |
/// | `Evicted` | the cache removed an entry to stay within its budgets |
/// | `Error` | an entry failed its integrity check, a computation failed, a computed value could not be stored, or a backend failed during a read or a write |
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheEvent {
    /// A read found a live, verified value.
    Hit {
        /// The entry's key.
        key: CacheKey,
        /// Where the value came from.
        tier: Tier,
        /// Raw (uncompressed) size of the value.
        bytes: u64,
    },
    /// A read found no live, valid value.
    Miss {
        /// The key asked for.
        key: CacheKey,
    },
    /// An entry was written.
    Put {
        /// The entry's key.
        key: CacheKey,
        /// Raw (uncompressed) size of the value.
        bytes: u64,
    },
    /// A caller deleted the entry.
    Invalidated {
        /// The deleted entry's key.
        key: CacheKey,
    },
    /// The entry was found expired by a read (which then misses; the entry stays in the index
    /// until [`cleanup_expired`](crate::Cache::cleanup_expired)), or deleted by
    /// `cleanup_expired`. A key read several times after its expiry is reported each time.
    Expired {
        /// The expired entry's key.
        key: CacheKey,
    },
    /// The cache removed the entry to keep within a budget.
    Evicted {
        /// The evicted entry's key.
        key: CacheKey,
        /// Which budget.
        reason: EvictionReason,
        /// Raw (uncompressed) size of its value.
        bytes: u64,
    },
    /// An operation failed, or found a damaged entry.
    Error {
        /// The key concerned, when there is one.
        key: Option<CacheKey>,
        /// The operation: `"integrity"` (a damaged entry, whatever the integrity policy),
        /// `"compute"` (a `get_with` computation failed), `"store_computed"` (a computed value
        /// could not be stored), `"read"` or `"write"` (a backend failed).
        operation: &'static str,
        /// The error's message.
        error: String,
    },
}

impl CacheEvent {
    /// The key the event is about (`None` only for an `Error` without one).
    pub fn key(&self) -> Option<&CacheKey> {
        match self {
            CacheEvent::Hit { key, .. }
            | CacheEvent::Miss { key }
            | CacheEvent::Put { key, .. }
            | CacheEvent::Invalidated { key }
            | CacheEvent::Expired { key }
            | CacheEvent::Evicted { key, .. } => Some(key),
            CacheEvent::Error { key, .. } => key.as_ref(),
        }
    }

    /// `"hit"`, `"miss"`, `"put"`, `"invalidated"`, `"expired"`, `"evicted"` or `"error"`.
    pub fn kind(&self) -> &'static str {
        match self {
            CacheEvent::Hit { .. } => "hit",
            CacheEvent::Miss { .. } => "miss",
            CacheEvent::Put { .. } => "put",
            CacheEvent::Invalidated { .. } => "invalidated",
            CacheEvent::Expired { .. } => "expired",
            CacheEvent::Evicted { .. } => "evicted",
            CacheEvent::Error { .. } => "error",
        }
    }
}
