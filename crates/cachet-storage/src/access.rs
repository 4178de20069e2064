//! Batched access times: reads never write to the index synchronously.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachet_core::{AccessRecord, CacheKey, MetadataBackend, Result, Timestamp};

/// One key's reads since its last write to the index.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The latest read.
    at: Timestamp,
    /// Reads not yet written.
    hits: u64,
    /// When the key is due for a write: its indexed `accessed_at` plus the granularity.
    due: Timestamp,
}

/// Accumulates reads and hands them to the index in batches.
///
/// Like a filesystem's `relatime`, a key is written back only when the `accessed_at` the index
/// holds for it is older than the granularity (60 s by default): a key read continuously costs
/// one index write per minute instead of one per batch, and its hits accumulate meanwhile. The
/// periodic batch takes the keys that are due; [`take_all`](Self::take_all) (used by
/// `Store::flush`) takes everything.
pub(crate) struct AccessLog {
    pending: Mutex<HashMap<CacheKey, Pending>>,
    last_flush: AtomicI64,
    interval_ms: i64,
    granularity: Duration,
    max_pending: usize,
}

impl AccessLog {
    pub(crate) fn new(interval: Duration, granularity: Duration, max_pending: usize) -> Self {
        AccessLog {
            pending: Mutex::new(HashMap::new()),
            last_flush: AtomicI64::new(0),
            interval_ms: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX),
            granularity,
            max_pending,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one read of an entry whose index row says it was last read at `indexed_at`;
    /// returns a batch to write when one is due.
    ///
    /// At most once per interval, the keys that are due are handed out (one scan of the pending
    /// keys per interval, never per read). While a previous batch is still being written
    /// (`busy`), nothing is handed out, so at most one batch is in flight. Pending keys are
    /// capped at `max_pending`: at the cap everything pending is handed out, and while a batch
    /// is in flight reads of new keys beyond the cap are not recorded (access times and counts
    /// are statistics for eviction and humans, and memory must stay bounded).
    pub(crate) fn record(
        &self,
        key: &CacheKey,
        now: Timestamp,
        indexed_at: Timestamp,
        busy: bool,
    ) -> Option<Vec<AccessRecord>> {
        let mut pending = self.lock();
        let room = pending.len() < self.max_pending;
        match pending.get_mut(key) {
            Some(p) => {
                p.at = p.at.max(now);
                p.hits += 1;
            }
            None if room => {
                let due = indexed_at.plus(self.granularity);
                pending.insert(
                    key.clone(),
                    Pending {
                        at: now,
                        hits: 1,
                        due,
                    },
                );
            }
            None => {}
        }
        let full = pending.len() >= self.max_pending;
        let periodic = now.0 - self.last_flush.load(Ordering::Relaxed) >= self.interval_ms;
        if busy || !(full || periodic) {
            return None;
        }
        self.last_flush.store(now.0, Ordering::Relaxed);
        // At the cap everything is written (memory first); otherwise only what is due.
        let batch = if full {
            drain(&mut pending, |_| true)
        } else {
            drain(&mut pending, |p| p.due <= now)
        };
        (!batch.is_empty()).then_some(batch)
    }

    /// Takes everything pending.
    pub(crate) fn take_all(&self) -> Vec<AccessRecord> {
        drain(&mut self.lock(), |_| true)
    }
}

fn drain(
    pending: &mut HashMap<CacheKey, Pending>,
    take: impl Fn(&Pending) -> bool,
) -> Vec<AccessRecord> {
    let keys: Vec<CacheKey> = pending
        .iter()
        .filter(|(_, p)| take(p))
        .map(|(k, _)| k.clone())
        .collect();
    keys.into_iter()
        .filter_map(|key| {
            pending.remove(&key).map(|p| AccessRecord {
                key,
                at: p.at,
                hits: p.hits,
            })
        })
        .collect()
}

/// Counts access batches being written in the background, so that `Store::flush` can wait
/// for them. The count rises before the task is spawned, so no batch can slip past a flush.
#[derive(Default)]
pub(crate) struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

impl InFlight {
    fn begin(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// `true` while a batch is being written.
    pub(crate) fn busy(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }

    /// Returns once no batch is being written.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub(crate) type WriteGate = Arc<InFlight>;

struct EndOnDrop(WriteGate);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Writes a batch off the caller's path when a tokio runtime is available. Without one, hands
/// the batch back for the caller to write.
pub(crate) fn spawn_batch(
    meta: &Arc<dyn MetadataBackend>,
    gate: &WriteGate,
    batch: Vec<AccessRecord>,
) -> Option<Vec<AccessRecord>> {
    if batch.is_empty() {
        return None;
    }
    let meta = Arc::clone(meta);
    let gate = Arc::clone(gate);
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            gate.begin();
            let done = EndOnDrop(gate);
            handle.spawn(async move {
                let _done = done; // ends the batch even if the write panics
                if let Err(e) = meta.record_access(&batch).await {
                    tracing::warn!(error = %e, entries = batch.len(), "could not record access times");
                }
            });
            None
        }
        Err(_) => Some(batch),
    }
}

/// Writes a batch and waits for it.
pub(crate) async fn write_batch_now(
    meta: &Arc<dyn MetadataBackend>,
    batch: Vec<AccessRecord>,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    meta.record_access(&batch).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> CacheKey {
        CacheKey::explicit("", format!("k{i}")).unwrap()
    }

    #[test]
    fn pending_reads_stay_bounded_while_a_batch_is_in_flight() {
        let log = AccessLog::new(Duration::from_secs(3600), Duration::ZERO, 2);
        for i in 0..100 {
            assert!(
                log.record(&key(i), Timestamp(10), Timestamp(0), true)
                    .is_none(),
                "nothing is handed out while busy"
            );
        }
        let pending = log.take_all();
        assert_eq!(pending.len(), 2, "at most max_pending keys wait");
    }

    #[test]
    fn repeated_reads_of_a_key_are_merged_into_one_record() {
        let log = AccessLog::new(Duration::from_secs(3600), Duration::ZERO, 100);
        log.last_flush.store(5, Ordering::Relaxed);
        for t in [10, 30, 20] {
            assert!(
                log.record(&key(1), Timestamp(t), Timestamp(0), false)
                    .is_none()
            );
        }
        assert_eq!(
            log.take_all(),
            vec![AccessRecord {
                key: key(1),
                at: Timestamp(30),
                hits: 3
            }]
        );
    }

    #[test]
    fn a_batch_is_due_after_the_interval() {
        let log = AccessLog::new(Duration::from_millis(100), Duration::ZERO, 100);
        log.last_flush.store(1_000, Ordering::Relaxed);
        assert!(
            log.record(&key(1), Timestamp(1_050), Timestamp(0), false)
                .is_none()
        );
        let batch = log
            .record(&key(2), Timestamp(1_100), Timestamp(0), false)
            .expect("due");
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn keys_read_recently_wait_for_their_granularity_and_keep_counting() {
        let log = AccessLog::new(Duration::from_millis(100), Duration::from_secs(60), 100);
        // Key 1 was last read (per the index) just now; key 2 two minutes ago.
        log.last_flush.store(1_000_000, Ordering::Relaxed);
        assert!(
            log.record(&key(1), Timestamp(1_000_010), Timestamp(1_000_000), false)
                .is_none()
        );
        let batch = log
            .record(&key(2), Timestamp(1_000_200), Timestamp(880_000), false)
            .expect("a batch");
        assert_eq!(
            batch,
            vec![AccessRecord {
                key: key(2),
                at: Timestamp(1_000_200),
                hits: 1
            }]
        );
        // Key 1 keeps counting until it is due, a minute after its indexed read.
        assert!(
            log.record(&key(1), Timestamp(1_000_400), Timestamp(1_000_000), false)
                .is_none()
        );
        let batch = log
            .record(&key(1), Timestamp(1_060_000), Timestamp(1_000_000), false)
            .expect("due");
        assert_eq!(
            batch,
            vec![AccessRecord {
                key: key(1),
                at: Timestamp(1_060_000),
                hits: 3
            }]
        );
    }

    #[test]
    fn flush_takes_keys_that_are_not_due_yet() {
        let log = AccessLog::new(Duration::from_secs(3600), Duration::from_secs(60), 100);
        log.last_flush.store(10, Ordering::Relaxed);
        assert!(
            log.record(&key(1), Timestamp(20), Timestamp(15), false)
                .is_none()
        );
        assert_eq!(
            log.take_all(),
            vec![AccessRecord {
                key: key(1),
                at: Timestamp(20),
                hits: 1
            }]
        );
    }
}
