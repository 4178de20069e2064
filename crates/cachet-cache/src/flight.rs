//! Single-flight: one computation per missing key per process, however many tasks ask.
//!
//! # Design
//! A map from key to a *slot* holds one async mutex per key that is being computed. A task that
//! misses the cache joins the slot (taking a *ticket*: how many computations of the key had
//! completed when it joined) and locks its mutex. The first to get the lock re-checks the
//! cache and, still missing, computes the value with the lock held, inserts it, records the
//! outcome in the slot and releases the lock. Each waiter then gets the lock in turn and looks
//! at the last outcome:
//! - a value was inserted after it joined: it releases the lock at once and reads the cache
//!   (reads of large values are not serialized behind the lock);
//! - the computation failed after it joined: it returns that failure (the computation is not
//!   retried by every waiter in turn, and nothing is cached);
//! - nothing completed (the leader was cancelled or panicked, which releases the lock without
//!   an outcome): it re-checks the cache and computes itself. So a dropped leader never leaves
//!   waiters hanging; the next one takes over.
//!
//! A slot is reference counted under the map's lock and removed by the last task that leaves
//! it, so the map only holds keys that are being computed right now.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cachet_core::CacheKey;

/// The in-flight computations of one cache (shared by its namespace views).
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<CacheKey, Arc<Slot>>>,
}

#[derive(Debug, Default)]
pub(crate) struct Slot {
    state: tokio::sync::Mutex<SlotState>,
    completed: AtomicU64,
}

/// What the last completed computation of a key did.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The value was computed and inserted.
    Inserted,
    /// The computation failed with this message (the error itself went to the leader).
    Failed(Arc<str>),
}

/// Guarded by the slot's async mutex.
#[derive(Debug, Default)]
pub(crate) struct SlotState {
    /// (completion number, outcome) of the last completed computation.
    last: Option<(u64, Outcome)>,
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<CacheKey, Arc<Slot>>> {
        // Every mutation of the map is a single insert or remove: a poisoned lock is still
        // consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins (or opens) the flight of `key`.
    pub(crate) fn join(&self, key: &CacheKey) -> FlightHandle<'_> {
        let slot = Arc::clone(self.lock().entry(key.clone()).or_default());
        let ticket = slot.completed.load(Ordering::Acquire);
        FlightHandle {
            flights: self,
            key: key.clone(),
            slot: Some(slot),
            ticket,
        }
    }

    /// Keys with a computation in flight or waiters (for tests: the map must not grow).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// One task's membership in a key's flight. Leaving (dropping it) removes the slot when this
/// was the last member.
#[derive(Debug)]
pub(crate) struct FlightHandle<'a> {
    flights: &'a Flights,
    key: CacheKey,
    slot: Option<Arc<Slot>>,
    ticket: u64,
}

impl FlightHandle<'_> {
    fn slot(&self) -> &Slot {
        self.slot
            .as_deref()
            .expect("a flight handle holds its slot until dropped")
    }

    /// Waits for the right to compute (or to see what the computation before did).
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, SlotState> {
        self.slot().state.lock().await
    }

    /// The outcome of a computation that completed after this task joined (or last looked).
    pub(crate) fn outcome_since_ticket(&self, state: &SlotState) -> Option<Outcome> {
        match &state.last {
            Some((n, outcome)) if *n > self.ticket => Some(outcome.clone()),
            _ => None,
        }
    }

    /// Forgets outcomes completed so far (after acting on them).
    pub(crate) fn renew_ticket(&mut self) {
        self.ticket = self.slot().completed.load(Ordering::Acquire);
    }

    /// Records the outcome of this task's computation (call with the lock held).
    pub(crate) fn complete(&self, state: &mut SlotState, outcome: Outcome) {
        let n = self.slot().completed.fetch_add(1, Ordering::AcqRel) + 1;
        state.last = Some((n, outcome));
    }
}

impl Drop for FlightHandle<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut map = self.flights.lock();
        // Every clone and drop of a slot's `Arc` happens under the map's lock, so the count
        // seen here is exact: 1 means only the map still holds it.
        drop(slot);
        if map
            .get(&self.key)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            map.remove(&self.key);
        }
    }
}
