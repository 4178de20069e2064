//! # cachet-meta-postgres
//!
//! The shared metadata index of cachet: [`PostgresMetadata`] implements
//! [`MetadataBackend`](cachet_core::MetadataBackend) on PostgreSQL (sqlx 0.9, tokio), so that
//! many processes on many machines share one cache index, one blob registry and per-key
//! locks.
//!
//! ```no_run
//! use cachet_core::testing::metadata::{sample_record, test_key};
//! use cachet_core::MetadataBackend;
//! use cachet_meta_postgres::PostgresConfig;
//!
//! # async fn demo() -> cachet_core::Result<()> {
//! let url = "postgres://cache:secret@db.internal:5432/cachet?sslmode=require&cachet_schema=reports";
//! let index = PostgresConfig::from_url(url)?.with_max_connections(20).open().await?;
//!
//! let record = sample_record(&test_key("reports", "q3"));
//! assert_eq!(index.put(record.clone()).await?, None);
//! assert_eq!(index.get(&record.meta.key).await?, Some(record));
//!
//! // Stampede protection across machines: compute a key's value once.
//! if let Some(lock) = index.try_lock_key(&test_key("reports", "q4")).await? {
//!     // ... compute and put ...
//!     lock.release().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## URL and options
//!
//! `postgres://user:password@host:port/database?options`. libpq-style options are sqlx's
//! (`sslmode`, `sslrootcert`, `application_name`, ...); cachet's own are prefixed `cachet_`
//! (`cachet_schema`, pool sizes, timeouts, retry budget: see [`PostgresConfig::from_url`])
//! and stripped before the URL reaches sqlx. Every option has a `with_*` builder method too,
//! and [`PostgresConfig::validate`] names the first bad one in `Error::Config`.
//!
//! **TLS**: the `sslmode` URL option (`prefer` by default, which falls back to plain TCP).
//! Encrypted connections need this crate's `tls-rustls` feature (rustls with the `ring`
//! provider and the Mozilla root certificates); without it, `sslmode=require` fails to
//! connect.
//!
//! **Schema**: the tables live in the schema `cachet_schema` (default `public`), created
//! if missing; every connection gets it as its `search_path` in the startup packet (no extra
//! round trip). Several caches can share a database in separate schemas (tests use one
//! schema each); their key locks are independent.
//!
//! ## Connections, statements and concurrency
//!
//! - Every call is truly async and borrows a connection of the main pool
//!   (`max_connections`, default 10) for the duration of its statements; nothing blocks a
//!   runtime thread.
//! - Statements are `sqlx::query` with bind parameters, never interpolated values, and sqlx
//!   prepares each statement once per connection and caches it (persistent prepared
//!   statements, cache size set by the URL option `statement-cache-capacity`, default 100):
//!   a `get` is one `Bind`/`Execute` round trip. The only dynamic SQL is the `WHERE` clause
//!   of `list` and `delete_matching`, built from a fixed set of clauses per filter condition,
//!   every value and field name a bind parameter.
//! - `get`, `get_meta`, `put`, `delete`, `update_expiry`, `record_access`, `reserve_blob`,
//!   `delete_expired`, `reclaim_abandoned_claims`, `release_claimed_blobs`, `get_many`,
//!   `get_meta_many`, `delete_many`, `delete_matching`, `move_entry`,
//!   `count_blob_references`, and `put_many` / `update_expiry_many` of a batch without
//!   repeated keys are one statement each (one round trip, their own transaction).
//!   `claim_unreferenced_blobs` is an explicit `READ COMMITTED` transaction, and so are
//!   `put_many` / `update_expiry_many` of a batch that repeats a key (one statement per run
//!   of distinct keys, so that a later write of a key sees the earlier one).
//! - `put` reads the replaced row (`FOR UPDATE`) and upserts in one statement (a CTE).
//! - Batches are arrays, one per column, expanded with `unnest(...) WITH ORDINALITY` (no
//!   limit on the batch size from bind-parameter counts; the ordinality puts each result in
//!   its input slot). `get_many` joins the keys to the primary key in one statement, hence
//!   one snapshot. `put_many` is `put` for many rows: the registry rows of the batch's blobs
//!   locked `FOR SHARE`, the replaced rows `FOR UPDATE`, then one `INSERT ... SELECT ... ON
//!   CONFLICT` of the records whose condition holds and whose blob is usable; `IfAbsent` is
//!   `ON CONFLICT DO NOTHING`, so a key inserted concurrently is never overwritten.
//! - `list` and `delete_matching` evaluate the whole [`EntryFilter`](cachet_core::EntryFilter)
//!   in SQL, with the answers of `EntryFilter::matches`; tag and field-equality conditions
//!   are GIN-indexed containment (`tags @> ...`, `user_metadata_jsonb @> ...`). One known
//!   difference: an entry whose params or user-metadata JSON holds `\u0000` has no JSONB copy
//!   of it and matches no field condition on it. `delete_matching` is `WITH picked AS
//!   MATERIALIZED (SELECT ... LIMIT n FOR UPDATE) DELETE ... WHERE key IN picked AND
//!   <filter>`: READ COMMITTED re-checks the filter on a row rewritten meanwhile, so a row
//!   that no longer matches is not deleted.
//! - `move_entry` locks the source and the destination rows, checks the source's digest and
//!   location, writes the destination (`ON CONFLICT ... DO UPDATE ... WHERE overwrite`) and
//!   deletes the source only if the write happened, in one statement: a concurrent `delete`
//!   of the source either comes first (`SourceMissing`) or finds it gone.
//! - `record_access` sends the whole batch as four arrays in one `UPDATE ... FROM unnest(...)`
//!   (duplicate keys folded first; `access_count` saturates at `i64::MAX`).
//! - `delete_expired` is one `DELETE ... WHERE (namespace, id) IN (SELECT ... FOR UPDATE
//!   SKIP LOCKED) AND expires_at <= $now RETURNING ...`: the check and the delete are one
//!   step, and concurrent collectors take disjoint rows.
//! - `update_expiry` with `if_signature` is one guarded `UPDATE` (`signature IS NOT DISTINCT
//!   FROM $expected`).
//! - `flush` returns at once: nothing is buffered; every call has committed when it returns.
//! - The statements need PostgreSQL 12 or later (`WITH ... AS MATERIALIZED`, casts from
//!   `jsonb` to numbers); the test suite runs on PostgreSQL 15.
//!
//! ## Schema and migrations
//!
//! Table `entries` (primary key `(namespace, id)`, `C` collation so that `list` is in byte
//! order) has the SQLite index's columns plus `blob_etag`. `params` and `user_metadata` are
//! stored as the exact JSON text `get` returns (entry signatures cover that text; `jsonb`
//! would rewrite numbers, drop the sign of `-0.0` and refuse `\u0000`), **and** as JSONB
//! copies `params_jsonb` / `user_metadata_jsonb` (NULL when the text holds `\u0000`) with
//! `jsonb_path_ops` GIN indexes, for queries. `tags` is a `text[]` with a GIN index. Indexes
//! as in SQLite: `expires_at` (partial), `accessed_at`, `blob_id` (partial). Table `blobs` is
//! the blob registry (`id`, `size`, `lease_until`, `claimed_at`). `u64` sizes and counts are
//! `BIGINT`: a value above `i64::MAX` is refused with `Error::Encode`, never wrapped.
//! Timestamps are `BIGINT` milliseconds.
//!
//! The schema version is the one row of `cachet_schema_version` ([`SCHEMA_VERSION`]).
//! `open()` applies missing migrations (an append-only list) in one transaction that first
//! takes `pg_advisory_xact_lock`: when many processes open a fresh schema at once, one
//! creates it and the others wait, then find it done (DDL is transactional, so a failed
//! migration leaves nothing). A newer schema version, or a schema holding `entries`/`blobs`
//! tables without the version table, is refused with `Error::Config` for field `schema`.
//!
//! ## Garbage-collection safety
//!
//! The promise (docs/GC.md §4, invariant I): an entry that references blob `B` is only
//! committed while `B` is registered and unclaimed, and `B` is only claimed while no
//! committed entry references it. Under PostgreSQL's MVCC, a `put` checking "`B` is not
//! claimed" and a claim checking "no entry references `B`" could each miss the other's
//! uncommitted write and both commit (write skew). The two are serialized on `B`'s row in
//! `blobs`:
//!
//! - **`put`** (blob entry), one autocommit statement (one round trip) in `READ COMMITTED`:
//!   `WITH blob AS (SELECT claimed_at FROM blobs WHERE id = B FOR SHARE) ... INSERT INTO
//!   entries ... WHERE EXISTS (SELECT 1 FROM blob WHERE claimed_at IS NULL)`; the statement
//!   reports whether the row existed and was unclaimed, and the caller returns `Conflict`
//!   when it was not (then nothing was written). The share lock is taken before the insert
//!   runs and held until the statement commits.
//! - **`claim_unreferenced_blobs`**, one `READ COMMITTED` transaction: (1) `SELECT id FROM
//!   blobs WHERE <unclaimed, lease expired, looks unreferenced> ... FOR UPDATE SKIP LOCKED`
//!   locks the candidate rows; (2) a **second statement**, `UPDATE blobs SET claimed_at = now
//!   WHERE id = ANY(locked) AND claimed_at IS NULL AND lease_until <= now AND NOT EXISTS
//!   (SELECT 1 FROM entries WHERE blob_id = blobs.id)`; commit.
//!
//! Why no interleaving breaks the invariant (`FOR SHARE` and `FOR UPDATE` conflict):
//!
//! 1. *The put locks `B` first.* The claim's step 1 skips `B` (`SKIP LOCKED`) while the put's
//!    transaction is open, so `B` is not claimed in this round. If the put committed before
//!    step 1 ran, step 1 may lock `B`; but step 2 is a new statement, and under READ
//!    COMMITTED a new statement takes a new snapshot, taken after the put's commit, so
//!    `NOT EXISTS` sees the entry and `B` is not claimed.
//! 2. *The claim locks `B` first.* The put's `FOR SHARE` waits until the claim's transaction
//!    ends. A locking read that waited re-reads the latest committed version of the row
//!    (READ COMMITTED's re-check): it sees `claimed_at` set (or no row, after a release) and
//!    the put fails with `Conflict`, writing nothing. If the claim did not claim `B` (it was
//!    referenced after all), the put sees it unclaimed and proceeds.
//!
//! The reference check in step 1 uses the statement's older snapshot and is only a filter
//! that keeps referenced blobs from using up `limit`; step 2's check is the one that counts,
//! and it runs after the locks are held. Step 1's snapshot can also miss an entry *deleted*
//! meanwhile, which only delays that blob's collection. Other writers of `blobs`:
//! `reserve_blob` is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE claimed_at IS NULL OR
//! claimed_at < stale` (row-locked, so it serializes with both); `claim_unregistered_blob`
//! only inserts a row that does not exist (`ON CONFLICT DO NOTHING`), and a referenced blob
//! always has a row. Both run in `READ COMMITTED` whatever the server's default: every
//! connection sets `default_transaction_isolation` at startup, and the claim also begins with
//! `BEGIN ISOLATION LEVEL READ COMMITTED`; under `REPEATABLE READ` the claim's second
//! statement would reuse the first snapshot and case 1 would not hold. The
//! conformance test `claim_and_put_never_both_succeed` races the two; this argument is what
//! makes it hold beyond luck.
//!
//! ## Key locks
//!
//! `capabilities().key_locks` is true. [`try_lock_key`](cachet_core::MetadataBackend::try_lock_key)
//! takes a session-level `pg_try_advisory_lock(id)` where `id` is the xxh3-64 of
//! `"cachet.lock"`, the schema, the namespace and the id (length-prefixed), so caches in
//! different schemas do not contend (a 64-bit hash: two keys colliding share a lock, which
//! costs only concurrency). The lock lives as long as its session, so the lock holds its
//! connection, taken from a **separate pool** (`lock_pool_size`, default 16) so that lock
//! holders never starve ordinary calls. `release` runs `pg_advisory_unlock` and returns the
//! connection; dropping the lock without `release` detaches the connection from the pool and
//! closes it, and the server frees the lock when the session ends, so a connection still
//! holding a lock never goes back to a pool. A process that dies closes its sockets, with the
//! same effect. When all `lock_pool_size` connections hold locks, `try_lock_key` waits up to
//! the acquire timeout for one.
//!
//! ## Errors and retries
//!
//! - The server cannot be reached, resets or closes the connection, is shutting down or
//!   starting (`57P01`, `57P02`, `57P03`), is out of connections (`53300`), SQLSTATE class
//!   `08`, an I/O error, or no pooled connection within the acquire timeout: every call
//!   **retries with exponential backoff** (10 ms doubling to 1 s) within `retry_budget`
//!   (default 10 s), then returns `Error::Unavailable { backend: "postgres" }` (retryable).
//!   So a PostgreSQL restart shorter than the budget is invisible to callers: a dead pooled
//!   connection fails its statement, is closed, and the call is repeated on a fresh one.
//!   Retrying is safe because every call is a single statement or a transaction, and each is
//!   idempotent in effect: a `put` whose commit outcome was lost is an upsert, and the retry
//!   then reports the record it wrote itself as the replaced one.
//! - A statement cancelled by `statement_timeout` (`57014`) or a lock timeout (`55P03`):
//!   `Error::Unavailable` at once (not retried inside the call).
//! - Serialization failures and deadlocks (`40001`, `40P01`): retried up to 5 times, then
//!   `Error::Conflict`.
//! - A row that cannot be decoded (unparseable digest or compression, invalid blob id, bad
//!   JSON text, negative size): `Error::Corrupt` naming the key and the column. `put` and
//!   `delete` still replace or remove such a row (reporting no previous entry, with a
//!   warning), so repair can clean it up.
//! - Anything else (authentication, permissions, ...): `Error::Backend { backend: "postgres" }`
//!   naming the operation and the server (never the password).
#![forbid(unsafe_code)]

mod backend;
mod config;
mod error;
mod filter;
mod lock;
mod schema;

pub use backend::PostgresMetadata;
pub use config::PostgresConfig;
pub use schema::SCHEMA_VERSION;
