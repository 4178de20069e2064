//! Batched access times: reads never write to the index synchronously.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachet_core::{AccessRecord, CacheKey, MetadataBackend, Result, Timestamp};

/// Accumulates reads and hands them to the index in batches.
pub(crate) struct AccessLog {
    pending: Mutex<HashMap<CacheKey, (Timestamp, u64)>>,
    last_flush: AtomicI64,
    interval_ms: i64,
    max_pending: usize,
}

impl AccessLog {
    pub(crate) fn new(interval: Duration, max_pending: usize) -> Self {
        AccessLog {
            pending: Mutex::new(HashMap::new()),
            last_flush: AtomicI64::new(0),
            interval_ms: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX),
            max_pending,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, (Timestamp, u64)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one read; returns a batch to write when one is due.
    ///
    /// While a previous batch is still being written (`busy`), nothing is handed out, so at most
    /// one batch is in flight; if reads of new keys outpace the index meanwhile, keys beyond
    /// four batches' worth are not recorded (access times and counts are statistics for
    /// eviction and humans, and memory must stay bounded). Keys already pending still count.
    pub(crate) fn record(
        &self,
        key: &CacheKey,
        now: Timestamp,
        busy: bool,
    ) -> Option<Vec<AccessRecord>> {
        let mut pending = self.lock();
        let room = pending.len() < self.max_pending.saturating_mul(4);
        match pending.get_mut(key) {
            Some((at, hits)) => {
                *at = (*at).max(now);
                *hits += 1;
            }
            None if room => {
                pending.insert(key.clone(), (now, 1));
            }
            None => {}
        }
        let due = pending.len() >= self.max_pending
            || now.0 - self.last_flush.load(Ordering::Relaxed) >= self.interval_ms;
        if !due || busy {
            return None;
        }
        self.last_flush.store(now.0, Ordering::Relaxed);
        Some(drain(&mut pending))
    }

    /// Takes everything pending.
    pub(crate) fn take_all(&self) -> Vec<AccessRecord> {
        drain(&mut self.lock())
    }
}

fn drain(pending: &mut HashMap<CacheKey, (Timestamp, u64)>) -> Vec<AccessRecord> {
    pending
        .drain()
        .map(|(key, (at, hits))| AccessRecord { key, at, hits })
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
        let log = AccessLog::new(Duration::from_secs(3600), 2);
        for i in 0..100 {
            assert!(
                log.record(&key(i), Timestamp(10), true).is_none(),
                "nothing is handed out while busy"
            );
        }
        let pending = log.take_all();
        assert_eq!(pending.len(), 8, "at most four batches' worth of keys wait");
    }

    #[test]
    fn repeated_reads_of_a_key_are_merged_into_one_record() {
        let log = AccessLog::new(Duration::from_secs(3600), 100);
        log.last_flush.store(5, Ordering::Relaxed);
        for t in [10, 30, 20] {
            assert!(log.record(&key(1), Timestamp(t), false).is_none());
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
        let log = AccessLog::new(Duration::from_millis(100), 100);
        log.last_flush.store(1_000, Ordering::Relaxed);
        assert!(log.record(&key(1), Timestamp(1_050), false).is_none());
        let batch = log.record(&key(2), Timestamp(1_100), false).expect("due");
        assert_eq!(batch.len(), 2);
    }
}
