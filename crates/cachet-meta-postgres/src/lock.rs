//! Cross-process key locks: PostgreSQL session-level advisory locks.

use std::fmt;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row};

use cachet_core::{CacheKey, KeyLock, Result};

use crate::error::{Fail, pg_error};

/// The advisory lock id of `key` in `schema`: xxh3-64 of a domain tag, the schema and the key
/// parts (length-prefixed, so no two different triples collide by concatenation).
pub(crate) fn lock_id(schema: &str, key: &CacheKey) -> i64 {
    let mut bytes = Vec::with_capacity(32 + schema.len() + key.namespace().len() + key.id().len());
    bytes.extend_from_slice(b"cachet.lock\0");
    for part in [schema, key.namespace(), key.id()] {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part.as_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes) as i64
}

/// One attempt: a connection of the lock pool, then `pg_try_advisory_lock`. The connection
/// goes back to the pool at once when the lock is refused.
pub(crate) async fn try_lock_once(
    pool: &PgPool,
    lock_id: i64,
    key: &CacheKey,
) -> Result<Option<PgKeyLock>, Fail> {
    // Until we know the answer, the session may hold the lock: if the query fails or this
    // future is dropped mid-way, the guard closes the connection instead of pooling it.
    let mut conn = DetachOnDrop(Some(pool.acquire().await?));
    let granted: bool = sqlx::query("SELECT pg_try_advisory_lock($1)")
        .bind(lock_id)
        .fetch_one(&mut **conn.get())
        .await?
        .try_get(0)?;
    let conn = conn.disarm();
    if !granted {
        // Refused: the session holds nothing; back to the pool.
        drop(conn);
        return Ok(None);
    }
    Ok(Some(PgKeyLock {
        conn: Some(conn),
        lock_id,
        key: key.to_string(),
    }))
}

/// A lock connection whose session may hold an advisory lock: dropped, it is detached from
/// the pool and closed (the server then frees its locks), never returned to the pool.
struct DetachOnDrop(Option<PoolConnection<Postgres>>);

impl DetachOnDrop {
    fn get(&mut self) -> &mut PoolConnection<Postgres> {
        self.0.as_mut().expect("connection present until disarmed")
    }

    /// The connection, to be pooled normally again.
    fn disarm(mut self) -> PoolConnection<Postgres> {
        self.0.take().expect("connection present until disarmed")
    }
}

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

/// A held key lock: a session advisory lock, held by the pooled connection it keeps.
///
/// [`release`](KeyLock::release) unlocks and returns the connection to the lock pool.
/// Dropping it without `release` detaches the connection from the pool and closes it, and
/// the server frees the lock when the session ends, so a locked connection never goes back
/// to the pool. A process that dies closes its sockets, with the same effect.
pub(crate) struct PgKeyLock {
    conn: Option<PoolConnection<Postgres>>,
    lock_id: i64,
    key: String,
}

impl fmt::Debug for PgKeyLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgKeyLock")
            .field("key", &self.key)
            .field("lock_id", &self.lock_id)
            .finish()
    }
}

#[async_trait]
impl KeyLock for PgKeyLock {
    async fn release(mut self: Box<Self>) -> Result<()> {
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        // Cancelled or failed before the unlock is confirmed: the guard closes the session.
        let mut conn = DetachOnDrop(Some(conn));
        let result = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.lock_id)
            .fetch_one(&mut **conn.get())
            .await
            .and_then(|row| row.try_get::<bool, _>(0));
        match result {
            Ok(true) => {
                drop(conn.disarm());
                Ok(())
            }
            Ok(false) => {
                // Not held any more (cannot happen while we own the session): do not reuse
                // the session; the guard closes it.
                tracing::warn!(key = %self.key, "a key lock was no longer held at release");
                Ok(())
            }
            Err(e) => {
                // The session may still hold the lock: the guard closes it so the server
                // frees it.
                drop(conn);
                Err(pg_error(
                    format_args!("release the lock of key {}", self.key),
                    "the key-lock pool",
                    e,
                ))
            }
        }
    }
}

impl Drop for PgKeyLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Detached and dropped: the socket closes and the server ends the session, which
            // frees its advisory locks. It never returns to the pool still locked.
            drop(conn.detach());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_differ_by_schema_namespace_and_id() {
        let key = |ns: &str, id: &str| CacheKey::explicit(ns, id).unwrap();
        let a = lock_id("s1", &key("ns", "id"));
        assert_eq!(a, lock_id("s1", &key("ns", "id")));
        assert_ne!(a, lock_id("s2", &key("ns", "id")));
        assert_ne!(a, lock_id("s1", &key("ns2", "id")));
        assert_ne!(
            lock_id("s1", &key("a", "bc")),
            lock_id("s1", &key("ab", "c"))
        );
    }
}
