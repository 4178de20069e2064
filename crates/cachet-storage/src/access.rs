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
    pub(crate) fn record(&self, key: &CacheKey, now: Timestamp) -> Option<Vec<AccessRecord>> {
        let mut pending = self.lock();
        match pending.get_mut(key) {
            Some((at, hits)) => {
                *at = (*at).max(now);
                *hits += 1;
            }
            None => {
                pending.insert(key.clone(), (now, 1));
            }
        }
        let due = pending.len() >= self.max_pending
            || now.0 - self.last_flush.load(Ordering::Relaxed) >= self.interval_ms;
        if !due {
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
