//! [`SqliteMetadata`]: the [`MetadataBackend`] implementation.

use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior,
    params, params_from_iter,
};

use cachet_core::{
    AccessRecord, BlobId, CacheKey, Compression, ContentDigest, DataType, EntryFilter, EntryMeta,
    EntryRecord, Error, EvictionBatch, ExpiryUpdate, IndexStats, IndexUsage, KeyLock, ListQuery,
    Location, MetadataBackend, MetadataCapabilities, MoveOutcome, PINNED_TAG, PutOutcome, Result,
    Timestamp, WriteCondition,
};

use crate::config::SqliteConfig;
use crate::error::{BACKEND, sqlite_error};
use crate::filter::push_filter;
use crate::schema;

/// Prepared statements cached per connection (`list` alone has 16 shapes).
const STATEMENT_CACHE: usize = 64;
/// `PRAGMA journal_size_limit`: the WAL file is truncated to this after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 64 << 20;

/// The metadata columns, without the key, in the order [`decode_meta`] reads them.
macro_rules! meta_columns {
    () => {
        "params, blob_id, data_type, type_name, compression, raw_size, stored_size, digest, \
         created_at, updated_at, accessed_at, access_count, expires_at, tags, user_metadata, \
         signature, blob_etag"
    };
}

/// The hot path: one primary-key lookup.
const GET_SQL: &str = concat!(
    "SELECT ",
    meta_columns!(),
    ", inline_data FROM entries WHERE namespace = ?1 AND id = ?2"
);
const GET_META_SQL: &str = concat!(
    "SELECT ",
    meta_columns!(),
    " FROM entries WHERE namespace = ?1 AND id = ?2"
);
/// Index of `inline_data` in [`GET_SQL`].
const INLINE_DATA_COLUMN: usize = 17;
const DELETE_SQL: &str = concat!(
    "DELETE FROM entries WHERE namespace = ?1 AND id = ?2 RETURNING ",
    meta_columns!()
);
const UPSERT_SQL: &str = "INSERT INTO entries (namespace, id, params, blob_id, data_type, \
     type_name, compression, raw_size, stored_size, digest, created_at, updated_at, accessed_at, \
     access_count, expires_at, tags, user_metadata, signature, blob_etag, inline_data) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
     ?20) \
     ON CONFLICT (namespace, id) DO UPDATE SET params = excluded.params, \
     blob_id = excluded.blob_id, data_type = excluded.data_type, \
     type_name = excluded.type_name, compression = excluded.compression, \
     raw_size = excluded.raw_size, stored_size = excluded.stored_size, \
     digest = excluded.digest, created_at = excluded.created_at, \
     updated_at = excluded.updated_at, accessed_at = excluded.accessed_at, \
     access_count = excluded.access_count, expires_at = excluded.expires_at, \
     tags = excluded.tags, user_metadata = excluded.user_metadata, \
     signature = excluded.signature, blob_etag = excluded.blob_etag, \
     inline_data = excluded.inline_data";
/// `access_count` saturates at `i64::MAX` instead of overflowing into a float.
const RECORD_ACCESS_SQL: &str = "UPDATE entries SET accessed_at = max(accessed_at, ?3), \
     access_count = CASE WHEN access_count > 9223372036854775807 - ?4 \
     THEN 9223372036854775807 ELSE access_count + ?4 END \
     WHERE namespace = ?1 AND id = ?2";
const UPDATE_EXPIRY_SQL: &str = "UPDATE entries SET expires_at = ?3, updated_at = ?4, \
     signature = ?5 WHERE namespace = ?1 AND id = ?2 AND (?6 IS NULL OR signature = ?6)";
/// Sizes are summed as high and low 32-bit halves so that no sum overflows SQLite's i64.
const STATS_SQL: &str = "SELECT e.n, e.inline_n, e.raw_hi, e.raw_lo, e.stored_hi, \
     e.stored_lo, b.n, b.hi, b.lo FROM \
     (SELECT count(*) AS n, count(*) - count(blob_id) AS inline_n, \
      sum(raw_size >> 32) AS raw_hi, sum(raw_size & 4294967295) AS raw_lo, \
      sum(stored_size >> 32) AS stored_hi, sum(stored_size & 4294967295) AS stored_lo \
      FROM entries) AS e, \
     (SELECT count(*) AS n, sum(size >> 32) AS hi, sum(size & 4294967295) AS lo FROM blobs) AS b";
/// `usage`: entries, inline stored bytes (hi/lo halves), and the bytes of the distinct blobs
/// the entries reference (hi/lo halves; `IN` visits each blob once however many entries share
/// it).
const USAGE_SQL: &str = "SELECT e.n, e.hi, e.lo, b.hi, b.lo FROM \
     (SELECT count(*) AS n, sum(CASE WHEN blob_id IS NULL THEN stored_size >> 32 END) AS hi, \
      sum(CASE WHEN blob_id IS NULL THEN stored_size & 4294967295 END) AS lo FROM entries) AS e, \
     (SELECT sum(size >> 32) AS hi, sum(size & 4294967295) AS lo FROM blobs \
      WHERE id IN (SELECT blob_id FROM entries WHERE blob_id IS NOT NULL)) AS b";
/// `usage` of one namespace (`?1`): as [`USAGE_SQL`], over the primary key's namespace range.
const USAGE_OF_NAMESPACE_SQL: &str = "SELECT e.n, e.hi, e.lo, b.hi, b.lo FROM \
     (SELECT count(*) AS n, sum(CASE WHEN blob_id IS NULL THEN stored_size >> 32 END) AS hi, \
      sum(CASE WHEN blob_id IS NULL THEN stored_size & 4294967295 END) AS lo FROM entries \
      WHERE namespace = ?1) AS e, \
     (SELECT sum(size >> 32) AS hi, sum(size & 4294967295) AS lo FROM blobs \
      WHERE id IN (SELECT blob_id FROM entries WHERE namespace = ?1 AND blob_id IS NOT NULL)) AS b";
const BLOB_CLAIM_SQL: &str = "SELECT claimed_at FROM blobs WHERE id = ?1";
const BLOB_INSERT_SQL: &str =
    "INSERT INTO blobs (id, size, lease_until, claimed_at) VALUES (?1, ?2, ?3, NULL)";
const BLOB_RESERVE_SQL: &str = "UPDATE blobs SET size = ?2, \
     lease_until = max(lease_until, ?3), claimed_at = NULL WHERE id = ?1";
const CLAIM_CANDIDATE_SQL: &str = "UPDATE blobs SET claimed_at = ?2 WHERE id = ?1 \
     AND claimed_at IS NULL AND lease_until <= ?2 \
     AND NOT EXISTS (SELECT 1 FROM entries WHERE entries.blob_id = ?1)";
const CLAIM_ANY_SQL: &str = "UPDATE blobs SET claimed_at = ?1 WHERE id IN \
     (SELECT id FROM blobs WHERE claimed_at IS NULL AND lease_until <= ?1 \
      AND NOT EXISTS (SELECT 1 FROM entries WHERE entries.blob_id = blobs.id) LIMIT ?2) \
     RETURNING id";
const CLAIM_UNREGISTERED_SQL: &str = "INSERT INTO blobs (id, size, lease_until, claimed_at) \
     VALUES (?1, 0, 0, ?2) ON CONFLICT (id) DO NOTHING";
const DELETE_EXPIRED_SQL: &str = concat!(
    "DELETE FROM entries WHERE rowid IN (SELECT rowid FROM entries \
     WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2) RETURNING namespace, id, ",
    meta_columns!()
);
/// `get_many`: the batch is bound as one JSON object `{"<namespace>": ["<id>", ...], ...}`
/// ([`KeyBatch`]); `json_each` walks the namespaces, then each namespace's ids (CROSS JOIN keeps
/// that loop order), and each id is one primary-key search. No JSON is parsed per key (an id
/// is a text element, read as is). Columns 0 and 1 say which key of the batch the row answers:
/// its namespace and its index among that namespace's ids.
const GET_MANY_SQL: &str = concat!(
    "SELECT ns.key, k.key, ",
    meta_columns!(),
    ", inline_data FROM json_each(?1) AS ns CROSS JOIN json_each(ns.value) AS k \
     CROSS JOIN entries ON entries.namespace = ns.key AND entries.id = k.value"
);
/// `get_meta_many`: [`GET_MANY_SQL`] without the inline data.
const GET_META_MANY_SQL: &str = concat!(
    "SELECT ns.key, k.key, ",
    meta_columns!(),
    " FROM json_each(?1) AS ns CROSS JOIN json_each(ns.value) AS k \
     CROSS JOIN entries ON entries.namespace = ns.key AND entries.id = k.value"
);
/// Columns before [`meta_columns!`] in [`GET_MANY_SQL`].
const MANY_OFFSET: usize = 2;
/// What `move_entry` checks and carries over from the source.
const MOVE_SOURCE_SQL: &str =
    "SELECT blob_id, digest, inline_data FROM entries WHERE namespace = ?1 AND id = ?2";
const DELETE_KEY_SQL: &str = "DELETE FROM entries WHERE namespace = ?1 AND id = ?2";
/// One statement (hence one snapshot) for the whole batch of blob ids, bound as a JSON array;
/// each count is a search of the `entries_blob_id` index.
const COUNT_REFERENCES_SQL: &str = "SELECT k.key, (SELECT count(*) FROM entries \
     WHERE entries.blob_id = k.value) FROM json_each(?1) AS k";
const RECLAIM_ABANDONED_SQL: &str = "UPDATE blobs SET claimed_at = ?1 WHERE id IN \
     (SELECT id FROM blobs WHERE claimed_at IS NOT NULL AND claimed_at < ?2 LIMIT ?3) RETURNING id";
const RELEASE_SQL: &str = "DELETE FROM blobs WHERE id = ?1 AND claimed_at IS NOT NULL";

/// A metadata index in a SQLite database file (see the [crate docs](crate)).
///
/// Cheap to clone (the connections are shared). Every call runs its statements on the calling
/// thread: reads on one of the reader connections, writes on the single writer connection,
/// each write in one transaction.
#[derive(Clone)]
pub struct SqliteMetadata {
    inner: Arc<Inner>,
}

struct Inner {
    config: SqliteConfig,
    /// The file path for messages (`:memory:` for an in-memory index).
    path: String,
    writer: Mutex<Connection>,
    /// Empty when reads go through the writer (in-memory index, or `readers = 0`).
    readers: Vec<Mutex<ReaderConn>>,
    next_reader: AtomicUsize,
    /// Bumped after every use of the writer connection: a reader's snapshot taken before a
    /// write of this process is never reused after it (read-your-writes).
    write_generation: AtomicU64,
    /// Per-key locks (an index on disk, on Unix).
    #[cfg(unix)]
    key_locks: Option<crate::lock::KeyLockDir>,
}

/// A reader connection and the read snapshot it may hold open between lookups.
///
/// Starting and ending a read transaction costs SQLite a handful of `fcntl` calls on the
/// database and its shared-memory file: about half of a primary-key lookup on this project's
/// VM (3.6 µs per lookup, 1.7 µs when lookups share a transaction). So `get` and `get_meta`
/// reuse a snapshot for up to `read_snapshot` (1 ms by default) and 256 lookups, and never
/// after a write of this process. Other processes' writes thus become visible within
/// `read_snapshot`.
struct ReaderConn {
    conn: Connection,
    snapshot: Option<Snapshot>,
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    started: Instant,
    generation: u64,
    reads: u32,
}

/// Lookups served by one snapshot at most.
const SNAPSHOT_MAX_READS: u32 = 256;

impl ReaderConn {
    fn end_snapshot(&mut self) {
        self.snapshot = None;
        if !self.conn.is_autocommit() {
            // A read-only transaction: nothing to write, so ending it cannot lose anything.
            let _ = self.conn.execute_batch("COMMIT");
        }
    }
}

/// A connection lent for reading: a reader, or the writer when there are no readers.
enum ReadConn<'a> {
    Reader(MutexGuard<'a, ReaderConn>),
    Writer(MutexGuard<'a, Connection>),
}

impl Deref for ReadConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            ReadConn::Reader(guard) => &guard.conn,
            ReadConn::Writer(guard) => guard,
        }
    }
}

/// The writer connection; releasing it tells readers that the index may have changed.
struct WriteConn<'a> {
    guard: MutexGuard<'a, Connection>,
    generation: &'a AtomicU64,
}

impl Deref for WriteConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.guard
    }
}

impl DerefMut for WriteConn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.guard
    }
}

impl Drop for WriteConn<'_> {
    fn drop(&mut self) {
        // After the transaction (which borrows this guard) has committed or rolled back.
        self.generation.fetch_add(1, Ordering::Release);
    }
}

impl fmt::Debug for SqliteMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteMetadata")
            .field("path", &self.inner.path)
            .field("readers", &self.inner.readers.len())
            .finish_non_exhaustive()
    }
}

impl SqliteMetadata {
    /// Opens the index described by `config`: validates the options, creates the file (and
    /// its parent directories) if missing, switches it to WAL, applies pending migrations, and
    /// opens the reader connections.
    ///
    /// # Errors
    /// - `Error::Config` naming the bad option for an invalid configuration; with field
    ///   `path` when the file is not a cachet index (another program's database, or not a
    ///   database at all) or was written by a newer cachet (the message names both schema
    ///   versions);
    /// - `Error::Unavailable` when another process holds the write lock past the busy timeout
    ///   during a migration;
    /// - `Error::Io` when the parent directory cannot be created.
    pub fn open(config: SqliteConfig) -> Result<Self> {
        config.validate()?;
        let (path, writer, readers) = match config.path() {
            None => {
                let path = ":memory:".to_owned();
                let mut writer = Connection::open_in_memory()
                    .map_err(|e| sqlite_error("open an in-memory index", &path, e))?;
                configure(&writer, &config, &path)?;
                schema::migrate(&mut writer, &path)?;
                (path, writer, Vec::new())
            }
            Some(file) => {
                let path = file.display().to_string();
                if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent.display(), e))?;
                }
                let mut writer = open_connection(file, &path, &config)?;
                // Refuse foreign files before changing anything in them.
                schema::check(&writer, &path)?;
                enable_wal(&writer, &path, config.busy_timeout())?;
                writer
                    .pragma_update(None, "synchronous", config.synchronous().as_str())
                    .and_then(|()| {
                        writer.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
                    })
                    .map_err(|e| sqlite_error("configure the writer connection", &path, e))?;
                schema::migrate(&mut writer, &path)?;
                let readers = (0..config.readers())
                    .map(|_| {
                        let reader = open_connection(file, &path, &config)?;
                        reader
                            .pragma_update(None, "query_only", true)
                            .map_err(|e| sqlite_error("configure a reader connection", &path, e))?;
                        Ok(Mutex::new(ReaderConn {
                            conn: reader,
                            snapshot: None,
                        }))
                    })
                    .collect::<Result<Vec<_>>>()?;
                (path, writer, readers)
            }
        };
        tracing::debug!(path, readers = readers.len(), "opened the SQLite index");
        #[cfg(unix)]
        let key_locks = config.path().map(crate::lock::KeyLockDir::beside);
        let inner = Arc::new(Inner {
            config,
            path,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            write_generation: AtomicU64::new(0),
            #[cfg(unix)]
            key_locks,
        });
        spawn_snapshot_janitor(&inner);
        Ok(SqliteMetadata { inner })
    }

    /// Opens the index at a `sqlite://` URL (see [`SqliteConfig::from_url`]).
    pub fn open_url(url: &str) -> Result<Self> {
        SqliteConfig::from_url(url)?.open()
    }

    /// A private in-memory index (one connection; not shared, not durable). For tests.
    pub fn open_in_memory() -> Result<Self> {
        SqliteConfig::in_memory().open()
    }

    /// The configuration this index was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }
}

fn open_connection(
    file: &std::path::Path,
    path: &str,
    config: &SqliteConfig,
) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(file, flags).map_err(|e| {
        if e.sqlite_error_code() == Some(ErrorCode::CannotOpen) {
            Error::config(
                "path",
                format!(
                    "cannot open {path} ({e}); check that it is a file in a writable directory"
                ),
            )
        } else {
            sqlite_error("open the index", path, e)
        }
    })?;
    configure(&conn, config, path)?;
    Ok(conn)
}

/// Settings every connection gets.
fn configure(conn: &Connection, config: &SqliteConfig, path: &str) -> Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mmap_size = i64::try_from(config.mmap_size()).unwrap_or(i64::MAX);
    conn.busy_timeout(config.busy_timeout())
        .and_then(|()| conn.pragma_update(None, "temp_store", "memory"))
        .and_then(|()| conn.pragma_update(None, "mmap_size", mmap_size))
        .map_err(|e| sqlite_error("configure a connection", path, e))
}

/// Switches the file to WAL (persistent; a no-op when it already is).
///
/// Changing the journal mode needs an exclusive lock and SQLite answers `SQLITE_BUSY` at once,
/// without its busy handler, when another connection (another process opening the same new
/// file) holds any lock: retry with backoff until the busy timeout.
fn enable_wal(conn: &Connection, path: &str, busy_timeout: Duration) -> Result<()> {
    let map = |e: rusqlite::Error| {
        if schema::is_not_a_database(&e) {
            schema::not_a_cachet_index(path, "the file is not a SQLite database")
        } else {
            sqlite_error("switch the index to WAL", path, e)
        }
    };
    let current: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .map_err(map)?;
    if current.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let deadline = Instant::now() + busy_timeout;
    let mut pause = Duration::from_millis(1);
    let mode: String = loop {
        match conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0)) {
            Ok(mode) => break mode,
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(map(e)),
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            path,
            mode,
            "SQLite refused WAL journaling (is the index on a network filesystem?); readers \
             will block on writers"
        );
    }
    Ok(())
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Ends read snapshots left open by readers that went idle, so that they do not hold back
/// WAL checkpoints (an open snapshot pins the WAL). Exits when the index is dropped.
fn spawn_snapshot_janitor(inner: &Arc<Inner>) {
    let max_age = inner.config.read_snapshot();
    if inner.readers.is_empty() || max_age.is_zero() {
        return;
    }
    let weak = Arc::downgrade(inner);
    let interval = (max_age * 4).max(Duration::from_millis(5));
    let spawned = std::thread::Builder::new()
        .name("cachet-sqlite-snapshots".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                let Some(inner) = weak.upgrade() else { return };
                for reader in &inner.readers {
                    if let Ok(mut guard) = reader.try_lock() {
                        if guard
                            .snapshot
                            .is_some_and(|s| s.started.elapsed() >= max_age)
                        {
                            guard.end_snapshot();
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // Without the janitor an idle reader keeps its snapshot until its next lookup; WAL
        // checkpoints then wait for that lookup. Correctness does not depend on it.
        tracing::warn!(error = %e, "could not start the SQLite snapshot janitor thread");
    }
}

/// Locks a connection, recovering from a panic of a previous holder (rusqlite rolls back an
/// unfinished transaction when its guard is dropped during unwinding; rolled back again here
/// to be sure).
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    match conn.lock() {
        Ok(guard) => guard,
        Err(poisoned) => {
            conn.clear_poison();
            recover(poisoned.into_inner())
        }
    }
}

fn recover(guard: MutexGuard<'_, Connection>) -> MutexGuard<'_, Connection> {
    if !guard.is_autocommit() {
        let _ = guard.execute_batch("ROLLBACK");
    }
    guard
}

impl Inner {
    /// A reader connection: the first free one, else wait for one (round robin).
    fn lock_reader(&self) -> MutexGuard<'_, ReaderConn> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            let reader = &self.readers[(start + i) % n];
            match reader.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(poisoned)) => {
                    reader.clear_poison();
                    let mut guard = poisoned.into_inner();
                    guard.end_snapshot();
                    return guard;
                }
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.readers[start].lock().unwrap_or_else(|poisoned| {
            self.readers[start].clear_poison();
            let mut guard = poisoned.into_inner();
            guard.end_snapshot();
            guard
        })
    }

    /// A connection for a read that must see everything committed so far (list, stats).
    fn reader(&self) -> ReadConn<'_> {
        if self.readers.is_empty() {
            return ReadConn::Writer(lock(&self.writer));
        }
        let mut guard = self.lock_reader();
        guard.end_snapshot();
        ReadConn::Reader(guard)
    }

    /// A connection for a point lookup, possibly inside a recent snapshot (see [`ReaderConn`]).
    fn snapshot_reader(&self) -> Result<ReadConn<'_>> {
        let max_age = self.config.read_snapshot();
        if self.readers.is_empty() || max_age.is_zero() {
            return Ok(self.reader());
        }
        let mut guard = self.lock_reader();
        let generation = self.write_generation.load(Ordering::Acquire);
        let reusable = guard.snapshot.is_some_and(|s| {
            s.generation == generation
                && s.reads < SNAPSHOT_MAX_READS
                && s.started.elapsed() < max_age
        }) && !guard.conn.is_autocommit();
        if !reusable {
            guard.end_snapshot();
            guard
                .conn
                .execute_batch("BEGIN")
                .map_err(self.fail("begin a read snapshot"))?;
            guard.snapshot = Some(Snapshot {
                started: Instant::now(),
                generation,
                reads: 0,
            });
        }
        if let Some(snapshot) = &mut guard.snapshot {
            snapshot.reads += 1;
        }
        Ok(ReadConn::Reader(guard))
    }

    /// The old row of a write that replaces or removes it. A row too damaged to decode does
    /// not block the write (that is how repair removes it): it is logged and reported as `None`.
    fn replaced_row(
        &self,
        read: std::result::Result<Option<EntryMeta>, RowError>,
        key: &CacheKey,
        op: &str,
    ) -> Result<Option<EntryMeta>> {
        match read {
            Ok(old) => Ok(old),
            Err(RowError::Sqlite(e)) => {
                Err(sqlite_error(format_args!("{op} {key}"), &self.path, e))
            }
            Err(RowError::Cachet(e)) => {
                tracing::warn!(key = %key, error = %e, op, "a corrupt index row was replaced or removed");
                Ok(None)
            }
        }
    }

    /// A blob id read back from the `blobs` table.
    fn registry_id(&self, id: &str) -> Result<BlobId> {
        BlobId::parse(id).map_err(|_| {
            Error::corrupt(
                format!("blob registry of {}", self.path),
                format!("`{id}` is not a valid blob id (column `id` of `blobs`)"),
            )
        })
    }

    fn writer(&self) -> WriteConn<'_> {
        WriteConn {
            guard: lock(&self.writer),
            generation: &self.write_generation,
        }
    }

    fn fail<'a, D: fmt::Display + 'a>(
        &'a self,
        op: D,
    ) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
        move |e| sqlite_error(op, &self.path, e)
    }

    fn begin<'c>(&self, conn: &'c mut Connection, op: &str) -> Result<Transaction<'c>> {
        conn.transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.fail(format_args!("begin a transaction to {op}")))
    }

    fn get(&self, key: &CacheKey) -> Result<Option<EntryRecord>> {
        let conn = self.snapshot_reader()?;
        let mut stmt = conn
            .prepare_cached(GET_SQL)
            .map_err(self.fail("prepare get"))?;
        let mut rows = stmt
            .query(params![key.namespace(), key.id()])
            .map_err(self.fail(format_args!("get {key}")))?;
        let Some(row) = rows.next().map_err(self.fail(format_args!("get {key}")))? else {
            return Ok(None);
        };
        let columns = Columns {
            row,
            offset: 0,
            key,
        };
        let meta = decode_meta(&columns, key.clone())?;
        let inline_data = columns
            .opt_blob(INLINE_DATA_COLUMN, "inline_data")?
            .map(Bytes::copy_from_slice);
        Ok(Some(EntryRecord { meta, inline_data }))
    }

    fn get_meta(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        let conn = self.snapshot_reader()?;
        let mut stmt = conn
            .prepare_cached(GET_META_SQL)
            .map_err(self.fail("prepare get_meta"))?;
        read_meta_row(&mut stmt, key).map_err(|e| match e {
            RowError::Sqlite(e) => sqlite_error(format_args!("get_meta {key}"), &self.path, e),
            RowError::Cachet(e) => e,
        })
    }

    fn put(&self, record: &EntryRecord) -> Result<Option<EntryMeta>> {
        let key = &record.meta.key;
        let row = EncodedRow::new(record)?;
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "put")?;
        match self.write_record(&tx, record, &row, WriteCondition::Always)? {
            Ok(replaced) => {
                tx.commit()
                    .map_err(self.fail(format_args!("commit put {key}")))?;
                Ok(replaced)
            }
            // Unreachable with `Always`; refused like a conflict to be safe.
            Err(skip) => Err(skip.conflict(record)),
        }
    }

    /// The per-record part of `put` and `put_many`, inside the caller's transaction: checks
    /// `condition` and the blob registration, then writes the row.
    fn write_record(
        &self,
        tx: &Transaction<'_>,
        record: &EntryRecord,
        row: &EncodedRow<'_>,
        condition: WriteCondition,
    ) -> Result<Written> {
        let key = &record.meta.key;
        let old = {
            let mut stmt = tx
                .prepare_cached(GET_META_SQL)
                .map_err(self.fail("prepare put"))?;
            read_meta_row(&mut stmt, key)
        };
        // A row too damaged to decode still exists.
        let exists = !matches!(old, Ok(None));
        let applies = match condition {
            WriteCondition::Always => true,
            WriteCondition::IfAbsent => !exists,
            WriteCondition::IfPresent => exists,
        };
        if !applies {
            return Ok(Err(Skip::Condition));
        }
        if let Location::Blob(blob) = &record.meta.location {
            let registration: Option<Option<i64>> = tx
                .prepare_cached(BLOB_CLAIM_SQL)
                .and_then(|mut stmt| stmt.query_row([blob.as_str()], |r| r.get(0)).optional())
                .map_err(self.fail(format_args!("check blob {blob} for put {key}")))?;
            match registration {
                Some(None) => {}
                Some(Some(_)) => return Ok(Err(Skip::BlobClaimed)),
                None => return Ok(Err(Skip::BlobUnregistered)),
            }
        }
        let replaced = self.replaced_row(old, key, "put")?;
        self.upsert(tx, key, row)?;
        Ok(Ok(replaced))
    }

    /// Inserts or replaces the row of `key`.
    fn upsert(&self, tx: &Transaction<'_>, key: &CacheKey, row: &EncodedRow<'_>) -> Result<()> {
        tx.prepare_cached(UPSERT_SQL)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    key.namespace(),
                    key.id(),
                    row.params,
                    row.blob_id,
                    row.data_type,
                    row.type_name,
                    row.compression,
                    row.raw_size,
                    row.stored_size,
                    row.digest,
                    row.created_at,
                    row.updated_at,
                    row.accessed_at,
                    row.access_count,
                    row.expires_at,
                    row.tags,
                    row.user_metadata,
                    row.signature,
                    row.blob_etag,
                    row.inline_data,
                ])
            })
            .map_err(self.fail(format_args!("put {key}")))?;
        Ok(())
    }

    fn put_many(
        &self,
        records: &[EntryRecord],
        condition: WriteCondition,
    ) -> Result<Vec<PutOutcome>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // Every record is converted (and checked) before the write lock is taken.
        let rows = records
            .iter()
            .map(EncodedRow::new)
            .collect::<Result<Vec<_>>>()?;
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "put a batch")?;
        let mut outcomes = Vec::with_capacity(records.len());
        for (record, row) in records.iter().zip(&rows) {
            outcomes.push(match self.write_record(&tx, record, row, condition)? {
                Ok(replaced) => PutOutcome::Written { replaced },
                Err(Skip::Condition) => PutOutcome::ConditionFailed,
                Err(Skip::BlobClaimed | Skip::BlobUnregistered) => PutOutcome::BlobUnavailable,
            });
        }
        tx.commit().map_err(self.fail("commit put_many"))?;
        Ok(outcomes)
    }

    fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryRecord>>> {
        let mut out: Vec<Option<EntryRecord>> = keys.iter().map(|_| None).collect();
        self.read_many(
            keys,
            GET_MANY_SQL,
            "get_many",
            |columns, key| {
                let meta = decode_meta(columns, key.clone())?;
                let inline_data = columns
                    .opt_blob(INLINE_DATA_COLUMN, "inline_data")?
                    .map(Bytes::copy_from_slice);
                Ok(EntryRecord { meta, inline_data })
            },
            &mut out,
        )?;
        Ok(out)
    }

    fn get_meta_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        let mut out: Vec<Option<EntryMeta>> = keys.iter().map(|_| None).collect();
        self.read_many(
            keys,
            GET_META_MANY_SQL,
            "get_meta_many",
            |columns, key| decode_meta(columns, key.clone()),
            &mut out,
        )?;
        Ok(out)
    }

    /// Runs a `get_many`-shaped statement over `keys` and fills `out[position]` with each row
    /// found, decoded by `decode` (its columns start at [`MANY_OFFSET`]).
    fn read_many<T>(
        &self,
        keys: &[CacheKey],
        sql: &str,
        op: &str,
        decode: impl Fn(&Columns<'_, '_>, &CacheKey) -> Result<T>,
        out: &mut [Option<T>],
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let batch = KeyBatch::new(keys);
        let conn = self.snapshot_reader()?;
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(self.fail(format_args!("prepare {op}")))?;
        let n = keys.len();
        let fail = || move |e| sqlite_error(format_args!("{op} of {n} keys"), &self.path, e);
        let mut rows = stmt.query([&batch.json]).map_err(fail())?;
        let mut group = 0;
        while let Some(row) = rows.next().map_err(fail())? {
            let position = batch
                .position(&mut group, row)
                .ok_or_else(|| Error::Backend {
                    backend: BACKEND.into(),
                    source: format!("{op}: SQLite answered a key that is not in the batch").into(),
                })?;
            let key = &keys[position];
            let columns = Columns {
                row,
                offset: MANY_OFFSET,
                key,
            };
            out[position] = Some(decode(&columns, key)?);
        }
        Ok(())
    }

    fn delete_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "delete a batch")?;
        let mut removed = Vec::with_capacity(keys.len());
        {
            let mut stmt = tx
                .prepare_cached(DELETE_SQL)
                .map_err(self.fail("prepare delete_many"))?;
            for key in keys {
                removed.push(self.replaced_row(read_meta_row(&mut stmt, key), key, "delete")?);
            }
        }
        tx.commit().map_err(self.fail("commit delete_many"))?;
        Ok(removed)
    }

    fn delete_matching(&self, filter: &EntryFilter, limit: usize) -> Result<Vec<EntryMeta>> {
        let (sql, args) = delete_matching_sql(filter, limit)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "delete matching entries")?;
        let removed = {
            let mut stmt = tx
                .prepare_cached(&sql)
                .map_err(self.fail("prepare delete_matching"))?;
            let rows = stmt
                .query(params_from_iter(args))
                .map_err(self.fail("delete matching entries"))?;
            self.removed_rows(rows, "delete matching entries")?
        };
        tx.commit().map_err(self.fail("commit delete_matching"))?;
        Ok(removed)
    }

    /// Decodes the `namespace, id, <meta columns>` rows of a `DELETE ... RETURNING`; a row too
    /// damaged to decode is still deleted (logged, not returned).
    fn removed_rows(&self, mut rows: rusqlite::Rows<'_>, op: &str) -> Result<Vec<EntryMeta>> {
        let mut removed = Vec::new();
        while let Some(row) = rows.next().map_err(self.fail(op))? {
            let key = match decode_key(row) {
                Ok(key) => key,
                Err(e) => {
                    tracing::warn!(error = %e, op, "deleted an index row with a corrupt key");
                    continue;
                }
            };
            let columns = Columns {
                row,
                offset: 2,
                key: &key,
            };
            match decode_meta(&columns, key.clone()) {
                Ok(meta) => removed.push(meta),
                Err(e) => tracing::warn!(key = %key, error = %e, op, "deleted a corrupt index row"),
            }
        }
        Ok(removed)
    }

    fn update_expiry_many(&self, updates: &[ExpiryUpdate]) -> Result<Vec<bool>> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "update expiries")?;
        let mut applied = Vec::with_capacity(updates.len());
        {
            let mut stmt = tx
                .prepare_cached(UPDATE_EXPIRY_SQL)
                .map_err(self.fail("prepare update_expiry_many"))?;
            for update in updates {
                let changed = stmt
                    .execute(params![
                        update.key.namespace(),
                        update.key.id(),
                        update.expires_at.map(|t| t.0),
                        update.updated_at.0,
                        update.signature,
                        update.if_signature,
                    ])
                    .map_err(self.fail(format_args!("update expiry of {}", update.key)))?;
                applied.push(changed > 0);
            }
        }
        tx.commit()
            .map_err(self.fail("commit update_expiry_many"))?;
        Ok(applied)
    }

    fn move_entry(&self, from: &CacheKey, to: EntryMeta, overwrite: bool) -> Result<MoveOutcome> {
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "move an entry")?;
        let op = format_args!("move {from} to {}", to.key);
        let source: Option<(bool, Option<Bytes>)> = {
            let mut stmt = tx
                .prepare_cached(MOVE_SOURCE_SQL)
                .map_err(self.fail("prepare move_entry"))?;
            let mut rows = stmt
                .query(params![from.namespace(), from.id()])
                .map_err(self.fail(op))?;
            match rows.next().map_err(self.fail(op))? {
                None => None,
                Some(row) => {
                    let columns = Columns {
                        row,
                        offset: 0,
                        key: from,
                    };
                    // A source whose content cannot be read back is not the one given.
                    let location = columns
                        .opt_text(0, "blob_id")
                        .ok()
                        .and_then(|c| Location::from_blob_column(c).ok());
                    let digest = columns
                        .text(1, "digest")
                        .ok()
                        .and_then(|c| ContentDigest::from_column(c).ok());
                    let same = location.as_ref() == Some(&to.location)
                        && digest.as_ref() == Some(&to.digest);
                    let inline = columns
                        .opt_blob(2, "inline_data")?
                        .map(Bytes::copy_from_slice);
                    Some((same, inline))
                }
            }
        };
        let inline_data = match source {
            None => return Ok(MoveOutcome::SourceMissing),
            Some((false, _)) => return Ok(MoveOutcome::SourceChanged),
            Some((true, inline)) => inline,
        };
        let destination = {
            let mut stmt = tx
                .prepare_cached(GET_META_SQL)
                .map_err(self.fail("prepare move_entry"))?;
            read_meta_row(&mut stmt, &to.key)
        };
        if !overwrite && !matches!(destination, Ok(None)) {
            return Ok(MoveOutcome::DestinationExists);
        }
        let replaced = self.replaced_row(destination, &to.key, "move_entry")?;
        tx.prepare_cached(DELETE_KEY_SQL)
            .and_then(|mut stmt| stmt.execute(params![from.namespace(), from.id()]))
            .map_err(self.fail(op))?;
        let record = EntryRecord {
            meta: to,
            inline_data,
        };
        let row = EncodedRow::new(&record)?;
        // The blob, if any, is the source's: referenced until this transaction commits, so no
        // collector can have claimed it; no registration check.
        self.upsert(&tx, &record.meta.key, &row)?;
        tx.commit()
            .map_err(self.fail(format_args!("commit move of {from} to {}", record.meta.key)))?;
        Ok(MoveOutcome::Moved { replaced })
    }

    fn count_blob_references(&self, ids: &[BlobId]) -> Result<Vec<u64>> {
        let mut counts = vec![0; ids.len()];
        if ids.is_empty() {
            return Ok(counts);
        }
        let batch = serde_json::to_string(&ids.iter().map(BlobId::as_str).collect::<Vec<_>>())
            .map_err(|e| Error::Encode {
                key: format!("a batch of {} blob ids", ids.len()),
                detail: e.to_string(),
            })?;
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(COUNT_REFERENCES_SQL)
            .map_err(self.fail("prepare count_blob_references"))?;
        let mut rows = stmt
            .query([batch])
            .map_err(self.fail("count blob references"))?;
        while let Some(row) = rows.next().map_err(self.fail("count blob references"))? {
            let (position, count): (i64, i64) = (
                row.get(0).map_err(self.fail("count blob references"))?,
                row.get(1).map_err(self.fail("count blob references"))?,
            );
            if let Some(slot) = usize::try_from(position)
                .ok()
                .and_then(|p| counts.get_mut(p))
            {
                *slot = u64::try_from(count).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    fn delete(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "delete")?;
        let removed = {
            let mut stmt = tx
                .prepare_cached(DELETE_SQL)
                .map_err(self.fail("prepare delete"))?;
            self.replaced_row(read_meta_row(&mut stmt, key), key, "delete")?
        };
        tx.commit()
            .map_err(self.fail(format_args!("commit delete {key}")))?;
        Ok(removed)
    }

    fn delete_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<EntryMeta>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "delete expired entries")?;
        let removed = {
            let mut stmt = tx
                .prepare_cached(DELETE_EXPIRED_SQL)
                .map_err(self.fail("prepare delete_expired"))?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt
                .query(params![now.0, limit])
                .map_err(self.fail("delete expired entries"))?;
            self.removed_rows(rows, "delete expired entries")?
        };
        tx.commit().map_err(self.fail("commit delete_expired"))?;
        Ok(removed)
    }

    fn reclaim_abandoned_claims(
        &self,
        now: Timestamp,
        stale_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "reclaim abandoned claims")?;
        let ids = {
            let mut stmt = tx
                .prepare_cached(RECLAIM_ABANDONED_SQL)
                .map_err(self.fail("prepare reclaim"))?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            stmt.query_map(params![now.0, stale_before.0, limit], |r| {
                r.get::<_, String>(0)
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(self.fail("reclaim abandoned claims"))?
        };
        tx.commit().map_err(self.fail("commit reclaim"))?;
        ids.iter().map(|id| self.registry_id(id)).collect()
    }

    fn list(&self, query: &ListQuery) -> Result<Vec<EntryMeta>> {
        let (sql, args) = list_sql(query)?;
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(&sql)
            .map_err(self.fail("prepare list"))?;
        let mut rows = stmt
            .query(params_from_iter(args))
            .map_err(self.fail("list"))?;
        let mut out = Vec::with_capacity(query.effective_limit().min(256));
        while let Some(row) = rows.next().map_err(self.fail("list"))? {
            let key = decode_key(row)?;
            let columns = Columns {
                row,
                offset: 2,
                key: &key,
            };
            let meta = decode_meta(&columns, key.clone())?;
            out.push(meta);
        }
        Ok(out)
    }

    fn record_access(&self, accesses: &[AccessRecord]) -> Result<()> {
        if accesses.is_empty() {
            return Ok(());
        }
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "record access")?;
        {
            let mut stmt = tx
                .prepare_cached(RECORD_ACCESS_SQL)
                .map_err(self.fail("prepare record_access"))?;
            for access in accesses {
                let hits = i64::try_from(access.hits).unwrap_or(i64::MAX);
                stmt.execute(params![
                    access.key.namespace(),
                    access.key.id(),
                    access.at.0,
                    hits
                ])
                .map_err(self.fail(format_args!("record access to {}", access.key)))?;
            }
        }
        tx.commit().map_err(self.fail("commit record_access"))
    }

    fn update_expiry(
        &self,
        key: &CacheKey,
        if_signature: Option<&str>,
        expires_at: Option<Timestamp>,
        updated_at: Timestamp,
        signature: Option<&str>,
    ) -> Result<bool> {
        let conn = self.writer();
        let changed = conn
            .prepare_cached(UPDATE_EXPIRY_SQL)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    key.namespace(),
                    key.id(),
                    expires_at.map(|t| t.0),
                    updated_at.0,
                    signature,
                    if_signature,
                ])
            })
            .map_err(self.fail(format_args!("update expiry of {key}")))?;
        Ok(changed > 0)
    }

    /// A size sum computed as its high and low 32-bit halves (so SQLite's 64-bit `sum` cannot
    /// overflow), as `u64` (saturating); a negative sum means a corrupt size column.
    fn size_sum(&self, what: &str, hi: Option<i64>, lo: Option<i64>) -> Result<u64> {
        let sum = (i128::from(hi.unwrap_or(0)) << 32) + i128::from(lo.unwrap_or(0));
        if sum < 0 {
            return Err(Error::corrupt(
                format!("SQLite index {}", self.path),
                format!("the {what} sum is negative: a size column holds a negative value"),
            ));
        }
        Ok(u64::try_from(sum).unwrap_or(u64::MAX))
    }

    fn usage(&self, namespace: Option<&str>) -> Result<IndexUsage> {
        let conn = self.reader();
        let sql = if namespace.is_some() {
            USAGE_OF_NAMESPACE_SQL
        } else {
            USAGE_SQL
        };
        let (entries, inline_hi, inline_lo, blob_hi, blob_lo): (
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        ) = conn
            .prepare_cached(sql)
            .and_then(|mut stmt| {
                let row = |r: &rusqlite::Row<'_>| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                };
                match namespace {
                    Some(ns) => stmt.query_row([ns], row),
                    None => stmt.query_row([], row),
                }
            })
            .map_err(self.fail("compute usage"))?;
        let inline = self.size_sum("inline size", inline_hi, inline_lo)?;
        let blobs = self.size_sum("blob size", blob_hi, blob_lo)?;
        Ok(IndexUsage::new(
            entries.max(0) as u64,
            inline.saturating_add(blobs),
        ))
    }

    fn evict(&self, batch: &EvictionBatch) -> Result<Vec<EntryMeta>> {
        let (sql, args) = evict_sql(batch)?;
        if batch.max_entries == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "evict entries")?;
        let mut removed = {
            let mut stmt = tx
                .prepare_cached(&sql)
                .map_err(self.fail("prepare evict"))?;
            let rows = stmt
                .query(params_from_iter(args))
                .map_err(self.fail("evict entries"))?;
            self.removed_rows(rows, "evict entries")?
        };
        tx.commit().map_err(self.fail("commit evict"))?;
        batch.sort_victims(&mut removed)?;
        Ok(removed)
    }

    fn stats(&self) -> Result<IndexStats> {
        let conn = self.reader();
        type Sums = (
            i64,
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            i64,
            Option<i64>,
            Option<i64>,
        );
        let sums: Sums = conn
            .prepare_cached(STATS_SQL)
            .and_then(|mut stmt| {
                stmt.query_row([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                })
            })
            .map_err(self.fail("compute stats"))?;
        let (entries, inline, raw_hi, raw_lo, stored_hi, stored_lo, blobs, blob_hi, blob_lo) = sums;
        let total = |what, hi, lo| self.size_sum(what, hi, lo);
        Ok(IndexStats {
            entries: entries.max(0) as u64,
            inline_entries: inline.max(0) as u64,
            raw_bytes: total("raw size", raw_hi, raw_lo)?,
            stored_bytes: total("stored size", stored_hi, stored_lo)?,
            blobs: blobs.max(0) as u64,
            blob_bytes: total("blob size", blob_hi, blob_lo)?,
        })
    }

    fn reserve_blob(
        &self,
        id: &BlobId,
        size: u64,
        lease_until: Timestamp,
        stale_claim_before: Timestamp,
    ) -> Result<()> {
        let size = i64::try_from(size).map_err(|_| Error::Encode {
            key: format!("blob {id}"),
            detail: format!("size {size} exceeds i64::MAX, the largest integer SQLite stores"),
        })?;
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "reserve a blob")?;
        let registration: Option<Option<i64>> = tx
            .prepare_cached(BLOB_CLAIM_SQL)
            .and_then(|mut stmt| stmt.query_row([id.as_str()], |r| r.get(0)).optional())
            .map_err(self.fail(format_args!("reserve blob {id}")))?;
        let sql = match registration {
            None => BLOB_INSERT_SQL,
            Some(Some(claimed_at)) if claimed_at >= stale_claim_before.0 => {
                return Err(Error::Conflict {
                    what: format!("blob {id}"),
                    detail: format!(
                        "the blob is being garbage-collected (claimed at {}); retry shortly",
                        Timestamp(claimed_at)
                    ),
                });
            }
            Some(_) => BLOB_RESERVE_SQL,
        };
        tx.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute(params![id.as_str(), size, lease_until.0]))
            .map_err(self.fail(format_args!("reserve blob {id}")))?;
        tx.commit()
            .map_err(self.fail(format_args!("commit reservation of blob {id}")))
    }

    fn claim_unreferenced_blobs(
        &self,
        candidates: Option<&[BlobId]>,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        if limit == 0 || candidates.is_some_and(|c| c.is_empty()) {
            return Ok(Vec::new());
        }
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "claim blobs")?;
        let mut claimed = Vec::new();
        match candidates {
            Some(candidates) => {
                let mut stmt = tx
                    .prepare_cached(CLAIM_CANDIDATE_SQL)
                    .map_err(self.fail("prepare claim"))?;
                for id in candidates {
                    if claimed.len() >= limit {
                        break;
                    }
                    let changed = stmt
                        .execute(params![id.as_str(), now.0])
                        .map_err(self.fail(format_args!("claim blob {id}")))?;
                    if changed > 0 {
                        claimed.push(id.clone());
                    }
                }
            }
            None => {
                let mut stmt = tx
                    .prepare_cached(CLAIM_ANY_SQL)
                    .map_err(self.fail("prepare claim"))?;
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let ids = stmt
                    .query_map(params![now.0, limit], |r| r.get::<_, String>(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                    .map_err(self.fail("claim unreferenced blobs"))?;
                for id in ids {
                    claimed.push(self.registry_id(&id)?);
                }
            }
        }
        tx.commit().map_err(self.fail("commit claim"))?;
        Ok(claimed)
    }

    fn claim_unregistered_blob(&self, id: &BlobId, now: Timestamp) -> Result<bool> {
        let conn = self.writer();
        let changed = conn
            .prepare_cached(CLAIM_UNREGISTERED_SQL)
            .and_then(|mut stmt| stmt.execute(params![id.as_str(), now.0]))
            .map_err(self.fail(format_args!("claim unregistered blob {id}")))?;
        Ok(changed > 0)
    }

    fn release_claimed_blobs(&self, ids: &[BlobId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.writer();
        let tx = self.begin(&mut conn, "release blobs")?;
        {
            let mut stmt = tx
                .prepare_cached(RELEASE_SQL)
                .map_err(self.fail("prepare release"))?;
            for id in ids {
                stmt.execute([id.as_str()])
                    .map_err(self.fail(format_args!("release blob {id}")))?;
            }
        }
        tx.commit().map_err(self.fail("commit release"))
    }

    fn flush(&self) -> Result<()> {
        if self.config.path().is_none() {
            return Ok(());
        }
        let conn = self.writer();
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(self.fail("checkpoint the WAL"))
    }
}

#[async_trait]
impl MetadataBackend for SqliteMetadata {
    fn name(&self) -> &str {
        BACKEND
    }

    fn capabilities(&self) -> MetadataCapabilities {
        let on_disk = self.inner.config.path().is_some();
        let mut capabilities = MetadataCapabilities::all(false);
        capabilities.shared_across_processes = on_disk;
        capabilities.durable = on_disk;
        capabilities.key_locks = cfg!(unix) && on_disk;
        capabilities
    }

    #[cfg(unix)]
    async fn try_lock_key(&self, key: &CacheKey) -> Result<Option<Box<dyn KeyLock>>> {
        match &self.inner.key_locks {
            Some(locks) => locks.try_lock(key),
            None => Err(Error::Unsupported {
                what: format!(
                    "per-key locks on an in-memory SQLite index (nothing to share); key {key}"
                ),
            }),
        }
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<EntryRecord>> {
        self.inner.get(key)
    }

    async fn get_meta(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        self.inner.get_meta(key)
    }

    async fn put(&self, record: EntryRecord) -> Result<Option<EntryMeta>> {
        self.inner.put(&record)
    }

    async fn delete(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        self.inner.delete(key)
    }

    async fn delete_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<EntryMeta>> {
        self.inner.delete_expired(now, limit)
    }

    async fn reclaim_abandoned_claims(
        &self,
        now: Timestamp,
        stale_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        self.inner
            .reclaim_abandoned_claims(now, stale_before, limit)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<EntryMeta>> {
        self.inner.list(query)
    }

    async fn record_access(&self, accesses: &[AccessRecord]) -> Result<()> {
        self.inner.record_access(accesses)
    }

    async fn update_expiry(
        &self,
        key: &CacheKey,
        if_signature: Option<&str>,
        expires_at: Option<Timestamp>,
        updated_at: Timestamp,
        signature: Option<String>,
    ) -> Result<bool> {
        self.inner.update_expiry(
            key,
            if_signature,
            expires_at,
            updated_at,
            signature.as_deref(),
        )
    }

    async fn stats(&self) -> Result<IndexStats> {
        self.inner.stats()
    }

    async fn reserve_blob(
        &self,
        id: &BlobId,
        size: u64,
        lease_until: Timestamp,
        stale_claim_before: Timestamp,
    ) -> Result<()> {
        self.inner
            .reserve_blob(id, size, lease_until, stale_claim_before)
    }

    async fn claim_unreferenced_blobs(
        &self,
        candidates: Option<&[BlobId]>,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        self.inner.claim_unreferenced_blobs(candidates, now, limit)
    }

    async fn claim_unregistered_blob(&self, id: &BlobId, now: Timestamp) -> Result<bool> {
        self.inner.claim_unregistered_blob(id, now)
    }

    async fn release_claimed_blobs(&self, ids: &[BlobId]) -> Result<()> {
        self.inner.release_claimed_blobs(ids)
    }

    /// One statement on a reader connection: the batch is one JSON parameter walked by
    /// `json_each`, each key one primary-key search.
    async fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryRecord>>> {
        self.inner.get_many(keys)
    }

    async fn get_meta_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        self.inner.get_meta_many(keys)
    }

    async fn put_many(
        &self,
        records: Vec<EntryRecord>,
        condition: WriteCondition,
    ) -> Result<Vec<PutOutcome>> {
        self.inner.put_many(&records, condition)
    }

    async fn delete_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        self.inner.delete_many(keys)
    }

    /// One `DELETE ... RETURNING` whose `WHERE` is the filter written in SQL. A row whose
    /// params or user metadata are not valid JSON matches no condition on them.
    async fn delete_matching(&self, filter: &EntryFilter, limit: usize) -> Result<Vec<EntryMeta>> {
        self.inner.delete_matching(filter, limit)
    }

    async fn usage(&self, namespace: Option<&str>) -> Result<IndexUsage> {
        self.inner.usage(namespace)
    }

    /// One `DELETE ... RETURNING` ranking, cutting and deleting in one statement.
    async fn evict(&self, batch: &EvictionBatch) -> Result<Vec<EntryMeta>> {
        self.inner.evict(batch)
    }

    async fn update_expiry_many(&self, updates: &[ExpiryUpdate]) -> Result<Vec<bool>> {
        self.inner.update_expiry_many(updates)
    }

    async fn move_entry(
        &self,
        from: &CacheKey,
        to: EntryMeta,
        overwrite: bool,
    ) -> Result<MoveOutcome> {
        self.inner.move_entry(from, to, overwrite)
    }

    async fn count_blob_references(&self, ids: &[BlobId]) -> Result<Vec<u64>> {
        self.inner.count_blob_references(ids)
    }

    /// Every committed write is already visible to other processes (WAL); this runs a passive
    /// WAL checkpoint, which syncs the WAL and copies what it can into the main file without
    /// waiting for readers. With `synchronous = full` each commit is durable when it returns.
    async fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------------------------------------
// Row encoding and decoding
// ---------------------------------------------------------------------------------------------

/// A record's columns, converted (and checked) before any lock is taken.
struct EncodedRow<'a> {
    params: Option<String>,
    blob_id: Option<&'a str>,
    data_type: &'a str,
    type_name: Option<&'a str>,
    compression: String,
    raw_size: i64,
    stored_size: i64,
    digest: String,
    created_at: i64,
    updated_at: i64,
    accessed_at: i64,
    access_count: i64,
    expires_at: Option<i64>,
    tags: String,
    user_metadata: Option<String>,
    signature: Option<&'a str>,
    blob_etag: Option<&'a str>,
    inline_data: Option<&'a [u8]>,
}

impl<'a> EncodedRow<'a> {
    fn new(record: &'a EntryRecord) -> Result<Self> {
        let meta = &record.meta;
        let encode_error = |detail: String| Error::Encode {
            key: meta.key.to_string(),
            detail,
        };
        let integer = |field: &str, value: u64| {
            i64::try_from(value).map_err(|_| {
                encode_error(format!(
                    "{field} {value} exceeds i64::MAX, the largest integer SQLite stores"
                ))
            })
        };
        let json = |field: &str, value: &serde_json::Value| {
            serde_json::to_string(value)
                .map_err(|e| encode_error(format!("{field} cannot be written as JSON: {e}")))
        };
        Ok(EncodedRow {
            params: meta
                .params
                .as_ref()
                .map(|p| json("params", p))
                .transpose()?,
            blob_id: meta.location.blob_id().map(BlobId::as_str),
            data_type: meta.data_type.as_str(),
            type_name: meta.type_name.as_deref(),
            compression: meta.compression.name(),
            raw_size: integer("raw_size", meta.raw_size)?,
            stored_size: integer("stored_size", meta.stored_size)?,
            digest: meta.digest.to_string(),
            created_at: meta.created_at.0,
            updated_at: meta.updated_at.0,
            accessed_at: meta.accessed_at.0,
            access_count: integer("access_count", meta.access_count)?,
            expires_at: meta.expires_at.map(|t| t.0),
            tags: if meta.tags.is_empty() {
                "[]".to_owned()
            } else {
                serde_json::to_string(&meta.tags)
                    .map_err(|e| encode_error(format!("tags cannot be written as JSON: {e}")))?
            },
            user_metadata: meta
                .user_metadata
                .as_ref()
                .map(|m| json("user_metadata", m))
                .transpose()?,
            signature: meta.signature.as_deref(),
            blob_etag: meta.blob_etag.as_deref(),
            inline_data: record.inline_data.as_deref(),
        })
    }
}

/// A failure reading a row: from SQLite, or a corrupt value.
enum RowError {
    Sqlite(rusqlite::Error),
    Cachet(Error),
}

/// What [`Inner::write_record`] did: the row was written (with the decoded row it replaced,
/// if any), or nothing was written, for a reason.
type Written = std::result::Result<Option<EntryMeta>, Skip>;

/// Why a record was not written.
enum Skip {
    /// The write condition did not hold.
    Condition,
    /// The record's blob is claimed by a collector.
    BlobClaimed,
    /// The record's blob is not registered.
    BlobUnregistered,
}

impl Skip {
    /// The error `put` reports.
    fn conflict(&self, record: &EntryRecord) -> Error {
        let key = &record.meta.key;
        let blob = record
            .meta
            .location
            .blob_id()
            .map_or_else(|| "-".to_owned(), BlobId::to_string);
        match self {
            Skip::Condition => Error::Conflict {
                what: format!("entry {key}"),
                detail: "the write condition did not hold".into(),
            },
            Skip::BlobClaimed => Error::Conflict {
                what: format!("blob {blob}"),
                detail: format!(
                    "entry {key} references a blob being garbage-collected; write the blob again"
                ),
            },
            Skip::BlobUnregistered => Error::Conflict {
                what: format!("blob {blob}"),
                detail: format!(
                    "entry {key} references a blob that is not registered (reserve it before \
                     committing the entry)"
                ),
            },
        }
    }
}

/// A batch of keys as [`GET_MANY_SQL`] reads it: grouped by namespace into one JSON object
/// `{"<namespace>": ["<id>", ...], ...}`, plus each id's position in the batch.
struct KeyBatch<'k> {
    json: String,
    /// Each namespace (in the object's order) and the batch positions of its ids, in order.
    groups: Vec<(&'k str, Vec<usize>)>,
}

impl<'k> KeyBatch<'k> {
    fn new(keys: &'k [CacheKey]) -> Self {
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut by_namespace: HashMap<&str, usize> = HashMap::new();
        for (position, key) in keys.iter().enumerate() {
            let namespace = key.namespace();
            let group = match groups.last() {
                // Batches are mostly one namespace: no hashing then.
                Some((last, _)) if *last == namespace => groups.len() - 1,
                _ => *by_namespace.entry(namespace).or_insert_with(|| {
                    groups.push((namespace, Vec::new()));
                    groups.len() - 1
                }),
            };
            groups[group].1.push(position);
        }
        let mut json = String::with_capacity(keys.len() * (keys[0].id().len() + 3) + 16);
        json.push('{');
        for (i, (namespace, positions)) in groups.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            push_json_string(&mut json, namespace);
            json.push_str(":[");
            for (j, &position) in positions.iter().enumerate() {
                if j > 0 {
                    json.push(',');
                }
                push_json_string(&mut json, keys[position].id());
            }
            json.push(']');
        }
        json.push('}');
        KeyBatch { json, groups }
    }

    /// The batch position of the key a row answers (columns 0 and 1: namespace, index among
    /// the namespace's ids). Rows arrive group by group: `group` follows them.
    fn position(&self, group: &mut usize, row: &Row<'_>) -> Option<usize> {
        let Ok(ValueRef::Text(namespace)) = row.get_ref(0) else {
            return None;
        };
        if self.groups.get(*group)?.0.as_bytes() != namespace {
            *group = self
                .groups
                .iter()
                .position(|(ns, _)| ns.as_bytes() == namespace)?;
        }
        let Ok(ValueRef::Integer(index)) = row.get_ref(1) else {
            return None;
        };
        let positions = &self.groups[*group].1;
        usize::try_from(index)
            .ok()
            .and_then(|i| positions.get(i))
            .copied()
    }
}

/// Appends `text` as a JSON string (quoted, with `"`, `\` and control characters escaped).
fn push_json_string(json: &mut String, text: &str) {
    json.push('"');
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
        json.push_str(&rest[..at]);
        let c = rest[at..].chars().next().unwrap_or_default();
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            c => {
                use std::fmt::Write;
                let _ = write!(json, "\\u{:04x}", u32::from(c));
            }
        }
        rest = &rest[at + c.len_utf8()..];
    }
    json.push_str(rest);
    json.push('"');
}

/// Runs a statement taking `(namespace, id)` and returning [`meta_columns!`]; decodes the row.
fn read_meta_row(
    stmt: &mut rusqlite::CachedStatement<'_>,
    key: &CacheKey,
) -> std::result::Result<Option<EntryMeta>, RowError> {
    let mut rows = stmt
        .query(params![key.namespace(), key.id()])
        .map_err(RowError::Sqlite)?;
    let meta = match rows.next().map_err(RowError::Sqlite)? {
        None => None,
        Some(row) => {
            let columns = Columns {
                row,
                offset: 0,
                key,
            };
            Some(decode_meta(&columns, key.clone()).map_err(RowError::Cachet)?)
        }
    };
    // Step to the end so that a DELETE ... RETURNING completes inside the statement.
    while rows.next().map_err(RowError::Sqlite)?.is_some() {}
    Ok(meta)
}

/// Typed, checked access to a row's columns; every failure names the entry and the column.
struct Columns<'r, 's> {
    row: &'r Row<'s>,
    offset: usize,
    key: &'r CacheKey,
}

impl Columns<'_, '_> {
    fn corrupt(&self, column: &str, detail: impl fmt::Display) -> Error {
        Error::corrupt(
            format!("index entry {} (column `{column}`)", self.key),
            detail,
        )
    }

    fn value(&self, index: usize, column: &str) -> Result<ValueRef<'_>> {
        self.row
            .get_ref(self.offset + index)
            .map_err(|e| self.corrupt(column, e))
    }

    fn opt_text(&self, index: usize, column: &str) -> Result<Option<&str>> {
        match self.value(index, column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| self.corrupt(column, "the text is not valid UTF-8")),
            other => Err(self.corrupt(
                column,
                format!("expected text, found {}", other.data_type()),
            )),
        }
    }

    fn text(&self, index: usize, column: &str) -> Result<&str> {
        self.opt_text(index, column)?
            .ok_or_else(|| self.corrupt(column, "unexpected NULL"))
    }

    fn opt_int(&self, index: usize, column: &str) -> Result<Option<i64>> {
        match self.value(index, column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(v) => Ok(Some(v)),
            other => Err(self.corrupt(
                column,
                format!("expected an integer, found {}", other.data_type()),
            )),
        }
    }

    fn int(&self, index: usize, column: &str) -> Result<i64> {
        self.opt_int(index, column)?
            .ok_or_else(|| self.corrupt(column, "unexpected NULL"))
    }

    fn unsigned(&self, index: usize, column: &str) -> Result<u64> {
        let v = self.int(index, column)?;
        u64::try_from(v).map_err(|_| self.corrupt(column, format!("negative value {v}")))
    }

    fn json(&self, index: usize, column: &str) -> Result<Option<serde_json::Value>> {
        self.opt_text(index, column)?
            .map(|text| {
                serde_json::from_str(text)
                    .map_err(|e| self.corrupt(column, format!("invalid JSON: {e}")))
            })
            .transpose()
    }

    fn opt_blob(&self, index: usize, column: &str) -> Result<Option<&[u8]>> {
        match self.value(index, column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Blob(bytes) => Ok(Some(bytes)),
            other => Err(self.corrupt(
                column,
                format!("expected a blob, found {}", other.data_type()),
            )),
        }
    }
}

/// Reads `namespace, id` (columns 0 and 1 of a `list` row).
fn decode_key(row: &Row<'_>) -> Result<CacheKey> {
    let mut parts = [String::new(), String::new()];
    for (index, column) in ["namespace", "id"].into_iter().enumerate() {
        let detail = match row.get_ref(index) {
            Ok(ValueRef::Text(bytes)) => match std::str::from_utf8(bytes) {
                Ok(text) => {
                    parts[index] = text.to_owned();
                    continue;
                }
                Err(_) => format!("`{}` is not valid UTF-8", String::from_utf8_lossy(bytes)),
            },
            Ok(other) => format!("expected text, found {}", other.data_type()),
            Err(e) => e.to_string(),
        };
        return Err(Error::corrupt(
            format!("an index entry's key (column `{column}`)"),
            detail,
        ));
    }
    let [namespace, id] = parts;
    Ok(CacheKey::from_parts_unchecked(namespace, id))
}

/// Reads the `tags` column as written by [`EncodedRow`] when no tag needs a JSON escape
/// (`[]`, `["a"]`, `["a","b"]`) without the JSON parser; `None` for anything else, which the
/// parser then reads (or refuses).
fn simple_tags(text: &str) -> Option<Vec<String>> {
    if text == "[]" {
        return Some(Vec::new());
    }
    let inner = text.strip_prefix("[\"")?.strip_suffix("\"]")?;
    if inner.bytes().any(|b| b == b'\\' || b < 0x20) {
        return None;
    }
    // Without escapes every quote delimits: tags alternate with exactly `,` between them.
    let quotes = inner.bytes().filter(|&b| b == b'"').count();
    if quotes % 2 == 1 {
        return None; // `["a","]`: an unterminated string
    }
    let mut tags = Vec::with_capacity(1 + quotes / 2);
    for (i, part) in inner.split('"').enumerate() {
        if i % 2 == 0 {
            tags.push(part.to_owned());
        } else if part != "," {
            return None;
        }
    }
    Some(tags)
}

/// Decodes [`meta_columns!`] starting at `columns.offset`.
fn decode_meta(columns: &Columns<'_, '_>, key: CacheKey) -> Result<EntryMeta> {
    let location = Location::from_blob_column(columns.opt_text(1, "blob_id")?)
        .map_err(|e| columns.corrupt("blob_id", e))?;
    let compression = Compression::from_column(columns.text(4, "compression")?)
        .map_err(|e| columns.corrupt("compression", e))?;
    let digest = ContentDigest::from_column(columns.text(7, "digest")?)
        .map_err(|e| columns.corrupt("digest", e))?;
    let tags_text = columns.text(13, "tags")?;
    let tags = match simple_tags(tags_text) {
        Some(tags) => tags,
        None => serde_json::from_str(tags_text)
            .map_err(|e| columns.corrupt("tags", format!("not a JSON array of strings: {e}")))?,
    };
    Ok(EntryMeta {
        params: columns.json(0, "params")?,
        location,
        data_type: DataType::parse(columns.text(2, "data_type")?),
        type_name: columns.opt_text(3, "type_name")?.map(str::to_owned),
        compression,
        raw_size: columns.unsigned(5, "raw_size")?,
        stored_size: columns.unsigned(6, "stored_size")?,
        digest,
        created_at: Timestamp(columns.int(8, "created_at")?),
        updated_at: Timestamp(columns.int(9, "updated_at")?),
        accessed_at: Timestamp(columns.int(10, "accessed_at")?),
        access_count: columns.unsigned(11, "access_count")?,
        expires_at: columns.opt_int(12, "expires_at")?.map(Timestamp),
        tags,
        user_metadata: columns.json(14, "user_metadata")?,
        signature: columns.opt_text(15, "signature")?.map(str::to_owned),
        blob_etag: columns.opt_text(16, "blob_etag")?.map(str::to_owned),
        key,
    })
}

/// The `list` statement for `query` and its arguments.
fn list_sql(query: &ListQuery) -> Result<(String, Vec<Value>)> {
    let limit = query.effective_limit();
    let mut sql = String::from(concat!(
        "SELECT namespace, id, ",
        meta_columns!(),
        " FROM entries WHERE 1"
    ));
    let mut args: Vec<Value> = Vec::new();
    push_filter(&mut sql, &mut args, &query.filter)?;
    // Written so that the primary key bounds the scan: SQLite uses a row-value range only when
    // no equality on `namespace` is present.
    match (&query.filter.namespace, &query.after) {
        (_, None) => {}
        (None, Some(after)) => {
            sql.push_str(" AND (namespace, id) > (?, ?)");
            args.push(Value::Text(after.namespace().to_owned()));
            args.push(Value::Text(after.id().to_owned()));
        }
        (Some(namespace), Some(after)) => match after.namespace().cmp(namespace.as_str()) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => {
                sql.push_str(" AND id > ?");
                args.push(Value::Text(after.id().to_owned()));
            }
            std::cmp::Ordering::Greater => sql.push_str(" AND 0"),
        },
    }
    sql.push_str(" ORDER BY namespace, id LIMIT ?");
    args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    Ok((sql, args))
}

/// The `evict` statement and its arguments: one `DELETE ... RETURNING` of the rows the
/// innermost query ranks first (at most `max_entries`), cut where the running total of their
/// stored sizes, before each row, reaches `max_bytes` (a window over the few ranked rows).
///
/// LRU orders by `accessed_at` first so SQLite walks `entries_accessed_at` and sorts only the
/// ties; LFU's aged count is computed per row (a scan with a top-N sort). A row is pinned when
/// its tags hold [`PINNED_TAG`]; `instr` rules out most rows before `json_each` is consulted.
fn evict_sql(batch: &EvictionBatch) -> Result<(String, Vec<Value>)> {
    let half_life = batch.order.half_life_ms()?;
    let mut args = vec![Value::Integer(batch.written_before.0)];
    let mut where_ = String::from(
        "updated_at < ? AND (instr(tags, ?) = 0 OR NOT EXISTS \
         (SELECT 1 FROM json_each(entries.tags) WHERE json_each.value = ?))",
    );
    args.push(Value::Text(PINNED_TAG.to_owned()));
    args.push(Value::Text(PINNED_TAG.to_owned()));
    if let Some(namespace) = &batch.namespace {
        where_.push_str(" AND namespace = ?");
        args.push(Value::Text(namespace.clone()));
    }
    if let Some(before) = batch.accessed_before {
        where_.push_str(" AND accessed_at < ?");
        args.push(Value::Integer(before.0));
    }
    let (rank, rank_args) = match half_life {
        None => ("0".to_owned(), Vec::new()),
        Some(half_life) => (
            "(access_count >> min(63, max(0, (? - accessed_at) / ?)))".to_owned(),
            vec![Value::Integer(batch.now.0), Value::Integer(half_life)],
        ),
    };
    // Without statistics the planner prefers a scan and a full sort, which reads every row
    // to evict a few: LRU forces the access-time index (walked in order; only ties are sorted).
    let (order, hint) = if half_life.is_some() {
        ("r, accessed_at, namespace, id", "")
    } else {
        (
            "accessed_at, namespace, id",
            "INDEXED BY entries_accessed_at ",
        )
    };
    // The rank's placeholders come first: it is in the select list, before the WHERE.
    let mut all_args = rank_args;
    all_args.extend(args);
    all_args.push(Value::Integer(
        i64::try_from(batch.max_entries).unwrap_or(i64::MAX),
    ));
    all_args.push(Value::Real(batch.max_bytes as f64));
    let sql = format!(
        "DELETE FROM entries WHERE rowid IN (SELECT rid FROM \
         (SELECT rid, total(stored_size) OVER (ORDER BY {order} ROWS UNBOUNDED PRECEDING) \
          - stored_size AS before FROM \
          (SELECT rowid AS rid, stored_size, {rank} AS r, accessed_at, namespace, id \
           FROM entries {hint}WHERE {where_} ORDER BY {order} LIMIT ?)) \
         WHERE before < ?) RETURNING namespace, id, {}",
        meta_columns!()
    );
    Ok((sql, all_args))
}

/// The `delete_matching` statement and its arguments: one `DELETE ... RETURNING` of at most
/// `limit` rows picked by the filter (by rowid, like [`DELETE_EXPIRED_SQL`]).
fn delete_matching_sql(filter: &EntryFilter, limit: usize) -> Result<(String, Vec<Value>)> {
    let mut sql =
        String::from("DELETE FROM entries WHERE rowid IN (SELECT rowid FROM entries WHERE 1");
    let mut args = Vec::new();
    push_filter(&mut sql, &mut args, filter)?;
    sql.push_str(concat!(
        " LIMIT ?) RETURNING namespace, id, ",
        meta_columns!()
    ));
    args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    Ok((sql, args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cachet_core::testing::metadata::sample_record;
    use cachet_core::{Comparison, FieldCondition, FieldValue};

    fn plan(sql: &str, args: Vec<Value>) -> String {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn, ":memory:").unwrap();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("\n")
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    #[test]
    fn lru_eviction_walks_the_access_time_index() {
        let batch = cachet_core::EvictionBatch::new(
            cachet_core::EvictionOrder::LeastRecentlyUsed,
            Timestamp(1_000),
            100,
        );
        let (sql, args) = evict_sql(&batch).unwrap();
        let plan = plan(&sql, args);
        assert!(plan.contains("entries_accessed_at"), "{plan}");
    }

    #[test]
    fn get_is_a_primary_key_search() {
        for sql in [GET_SQL, GET_META_SQL] {
            let plan = plan(sql, vec![text("ns"), text("id")]);
            assert!(
                plan.contains("SEARCH entries USING") && plan.contains("(namespace=? AND id=?)"),
                "{plan}"
            );
        }
    }

    #[test]
    fn list_pages_walk_the_primary_key_without_sorting() {
        let key = CacheKey::explicit("ns", "k").unwrap();
        for query in [
            ListQuery::default(),
            ListQuery::default().after(key.clone()),
            ListQuery::matching(EntryFilter::all().namespace("ns")).after(key.clone()),
            ListQuery::matching(EntryFilter::all().namespace("ns").id_prefix("ab")).after(key),
        ] {
            let (sql, args) = list_sql(&query).unwrap();
            let plan = plan(&sql, args);
            assert!(!plan.contains("TEMP B-TREE"), "{query:?}: {plan}");
            if query.after.is_some() {
                assert!(
                    plan.contains("id>?") || plan.contains("(namespace,id)>(?,?)"),
                    "{query:?}: paging must seek past `after`, not scan to it: {plan}"
                );
            }
        }
    }

    #[test]
    fn claims_check_references_through_the_blob_id_index() {
        for (sql, args) in [
            (CLAIM_ANY_SQL, vec![Value::Integer(0), Value::Integer(10)]),
            (CLAIM_CANDIDATE_SQL, vec![text("b"), Value::Integer(0)]),
        ] {
            let plan = plan(sql, args);
            assert!(plan.contains("INDEX entries_blob_id (blob_id=?)"), "{plan}");
        }
    }

    #[test]
    fn count_blob_references_searches_the_blob_id_index() {
        let plan = plan(COUNT_REFERENCES_SQL, vec![text(r#"["b1","b2"]"#)]);
        assert!(plan.contains("INDEX entries_blob_id (blob_id=?)"), "{plan}");
        assert!(!plan.contains("SCAN entries"), "{plan}");
    }

    #[test]
    fn get_many_is_one_primary_key_search_per_key() {
        let keys = [
            CacheKey::explicit("a", "1").unwrap(),
            CacheKey::explicit("b", "2").unwrap(),
        ];
        let batch = KeyBatch::new(&keys);
        for sql in [GET_MANY_SQL, GET_META_MANY_SQL] {
            let plan = plan(sql, vec![text(&batch.json)]);
            assert!(
                plan.contains(
                    "SEARCH entries USING INDEX sqlite_autoindex_entries_1 (namespace=? AND id=?)"
                ),
                "{plan}"
            );
            assert!(!plan.contains("SCAN entries"), "{plan}");
        }
    }

    #[test]
    fn delete_matching_by_namespace_and_prefix_walks_the_primary_key() {
        let in_namespace = EntryFilter::all().namespace("ns");
        let cases = [
            (in_namespace.clone(), "(namespace=?)"),
            (
                in_namespace.clone().id_prefix("ab"),
                "(namespace=? AND id>? AND id<?)",
            ),
            (
                in_namespace
                    .id_prefix("ab")
                    .tag("t")
                    .metadata(FieldCondition::parse("accuracy < 0.9").unwrap())
                    .created_before(Timestamp(5)),
                "(namespace=? AND id>? AND id<?)",
            ),
        ];
        for (filter, range) in cases {
            let (sql, args) = delete_matching_sql(&filter, 10).unwrap();
            let plan = plan(&sql, args);
            assert!(
                plan.contains(&format!("INDEX sqlite_autoindex_entries_1 {range}")),
                "{filter:?}: {plan}"
            );
            assert!(!plan.contains("SCAN entries"), "{filter:?}: {plan}");
        }
    }

    #[test]
    fn json_paths_quote_the_whole_field_name() {
        assert_eq!(crate::filter::json_path("a.b"), r#"$."a.b""#);
        assert_eq!(crate::filter::json_path(r#"a"b\c"#), r#"$."a\"b\\c""#);
    }

    #[test]
    fn simple_tags_reads_what_serde_reads_or_defers_to_it() {
        for text in [
            "[]",
            r#"[""]"#,
            r#"["a"]"#,
            r#"["a","b"]"#,
            r#"["a", "b"]"#,
            r#"["a\",\"b"]"#,
            r#"["é✓","x y"]"#,
            r#"["a"],["b"]"#,
            r#"["a","b","]"#,
            r#"["a",""]"#,
            r#"["a"",""b"]"#,
            r#"[",","]"#,
            r#"["]"#,
            r#"["a""#,
            r#"{"a": 1}"#,
            "[1, 2]",
        ] {
            let serde: Option<Vec<String>> = serde_json::from_str(text).ok();
            if let Some(fast) = simple_tags(text) {
                assert_eq!(Some(fast), serde, "{text}");
            }
        }
        // Every text of up to 7 characters over the JSON punctuation involved.
        let alphabet = ['[', ']', '"', ',', 'a', '\\', ' '];
        let mut texts = vec![String::new()];
        for _ in 0..7 {
            let longer: Vec<String> = texts
                .iter()
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            for text in &longer {
                if let Some(fast) = simple_tags(text) {
                    let serde: Option<Vec<String>> = serde_json::from_str(text).ok();
                    assert_eq!(Some(fast), serde, "{text}");
                }
            }
            texts = longer;
        }
        // Tags as written: read back exactly, by the fast path or by serde.
        let fragments = ["a", "", ",", "\"", "\\", "\",\"", "],[", "é"];
        for a in fragments {
            for b in fragments {
                for tags in [vec![a.to_owned()], vec![a.to_owned(), b.to_owned()]] {
                    let text = serde_json::to_string(&tags).unwrap();
                    let fast = simple_tags(&text);
                    assert!(fast.is_none() || fast == Some(tags), "{text}");
                }
            }
        }
        assert_eq!(
            simple_tags(r#"["a","b"]"#),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(simple_tags(r#"["a\",\"b"]"#), None);
    }

    #[test]
    fn json_strings_written_for_batches_read_back_as_the_same_text() {
        for text in [
            "",
            "plain",
            r#"q"uote"#,
            r"back\slash",
            "tab\tnew\nline\u{1}",
            "é✓😀",
            "\0nul",
        ] {
            let mut json = String::new();
            push_json_string(&mut json, text);
            assert_eq!(
                serde_json::from_str::<String>(&json).unwrap(),
                text,
                "{json}"
            );
        }
    }

    fn index() -> SqliteMetadata {
        SqliteMetadata::open_in_memory().unwrap()
    }

    #[test]
    fn get_many_answers_nasty_keys_in_input_order() {
        let index = index();
        let keys = [
            CacheKey::from_parts_unchecked("ns".into(), r#"q"uote"#.into()),
            CacheKey::from_parts_unchecked(r#"n"s\"#.into(), r"back\slash".into()),
            CacheKey::from_parts_unchecked("".into(), "é✓😀".into()),
            CacheKey::from_parts_unchecked("ctl\u{1}".into(), "tab\there".into()),
            CacheKey::from_parts_unchecked("nul\0ns".into(), "nul\0id".into()),
            CacheKey::from_parts_unchecked("a/b".into(), "c".into()),
        ];
        for key in &keys {
            index.inner.put(&sample_record(key)).unwrap();
        }
        let missing = CacheKey::from_parts_unchecked("nul".into(), "nul".into());
        let mut asked: Vec<CacheKey> = keys.iter().rev().cloned().collect();
        asked.insert(2, missing);
        asked.push(keys[0].clone());
        let got = index.inner.get_many(&asked).unwrap();
        let metas = index.inner.get_meta_many(&asked).unwrap();
        assert_eq!(got.len(), asked.len());
        for ((key, record), meta) in asked.iter().zip(&got).zip(&metas) {
            let expected = keys.contains(key).then(|| sample_record(key));
            assert_eq!(record, &expected, "{key:?}");
            assert_eq!(meta, &expected.map(|r| r.meta), "{key:?}");
        }
    }

    fn nasty_names() -> Vec<&'static str> {
        vec![
            "plain",
            "a.b",
            "a",
            "$",
            "$.x",
            r#"a"b"#,
            r#"""#,
            r"a\b",
            r#"\""#,
            " spaced out ",
            "[0]",
            "a[0].b",
            "é✓😀",
            "line\nbreak",
            "nul\0byte",
            "nul",
            "'quote'",
            "%_*",
        ]
    }

    fn mixed_values() -> Vec<serde_json::Value> {
        use serde_json::json;
        vec![
            json!(5),
            json!(5.0),
            json!(0.95),
            json!(-3),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(9_007_199_254_740_993_i64),
            json!(9_007_199_254_740_992.0),
            json!(9_223_372_036_854_775_808_u64),
            json!("5"),
            json!("xgboost"),
            json!(""),
            json!("é"),
            json!(true),
            json!(false),
            json!(null),
            json!([5]),
            json!({ "b": 5 }),
            json!(1e300),
        ]
    }

    fn condition_values() -> Vec<FieldValue> {
        vec![
            FieldValue::Int(5),
            FieldValue::Float(5.0),
            FieldValue::Float(0.9),
            FieldValue::Int(-3),
            FieldValue::Int(i64::MAX),
            FieldValue::Float(9.223_372_036_854_776e18),
            FieldValue::Int(9_007_199_254_740_992),
            FieldValue::Int(9_007_199_254_740_993),
            FieldValue::Float(9_007_199_254_740_992.0),
            FieldValue::Text("5".into()),
            FieldValue::Text("xgboost".into()),
            FieldValue::Text(String::new()),
            FieldValue::Text("é".into()),
        ]
    }

    /// Every condition on every nasty field name, over entries where each name holds values of
    /// every kind: the SQL answers exactly what `EntryFilter::matches` answers.
    #[test]
    fn field_conditions_agree_with_the_reference_on_nasty_names_and_mixed_kinds() {
        let index = index();
        let names = nasty_names();
        let values = mixed_values();
        let mut records = Vec::new();
        for r in 0..=values.len() {
            let key = CacheKey::explicit("fields", format!("r{r:02}")).unwrap();
            let mut record = sample_record(&key);
            let object = |shift: usize| {
                let mut map = serde_json::Map::new();
                for (i, name) in names.iter().enumerate() {
                    map.insert(
                        (*name).to_owned(),
                        values[(i + r + shift) % values.len()].clone(),
                    );
                }
                serde_json::Value::Object(map)
            };
            // The last entry has neither object: it matches no field condition.
            if r < values.len() {
                record.meta.params = Some(object(0));
                record.meta.user_metadata = Some(object(7));
            } else {
                record.meta.params = None;
            }
            index.inner.put(&record).unwrap();
            records.push(record.meta);
        }
        let ops = [
            Comparison::Eq,
            Comparison::Ne,
            Comparison::Lt,
            Comparison::Le,
            Comparison::Gt,
            Comparison::Ge,
        ];
        let mut conditions = Vec::new();
        for name in &names {
            for op in ops {
                for value in condition_values() {
                    conditions.push(FieldCondition::compare(*name, op, value));
                }
            }
            for b in [true, false] {
                conditions.push(FieldCondition::compare(*name, Comparison::Eq, b));
                conditions.push(FieldCondition::compare(*name, Comparison::Ne, b));
            }
            conditions.push(FieldCondition::is_in(
                *name,
                [
                    FieldValue::Int(5),
                    FieldValue::Text("5".into()),
                    FieldValue::Bool(true),
                ],
            ));
            conditions.push(FieldCondition::is_in(*name, Vec::<FieldValue>::new()));
            conditions.push(FieldCondition::exists(*name));
        }
        conditions.push(FieldCondition::exists("absent"));
        conditions.push(FieldCondition::eq("b", 5));
        let mut matched_some = 0;
        for condition in conditions {
            for filter in [
                EntryFilter::all().param(condition.clone()),
                EntryFilter::all().metadata(condition.clone()),
            ] {
                let listed: Vec<CacheKey> = index
                    .inner
                    .list(&ListQuery::matching(filter.clone()))
                    .unwrap()
                    .into_iter()
                    .map(|m| m.key)
                    .collect();
                let expected: Vec<CacheKey> = records
                    .iter()
                    .filter(|m| filter.matches(m))
                    .map(|m| m.key.clone())
                    .collect();
                assert_eq!(listed, expected, "{filter:?}");
                matched_some += usize::from(!expected.is_empty());
            }
        }
        assert!(
            matched_some > 1000,
            "the corpus must exercise matches: {matched_some}"
        );
    }

    #[test]
    fn other_conditions_agree_with_the_reference_at_their_edges() {
        let index = index();
        let mut records = Vec::new();
        let tag_sets: [&[&str]; 5] = [&[], &["a"], &["a", "b"], &[r#"a","b"#], &["b", "é", "x y"]];
        for (i, tags) in tag_sets.iter().enumerate() {
            let key =
                CacheKey::explicit(if i % 2 == 0 { "n1" } else { "n2" }, format!("id{i}")).unwrap();
            let mut record = sample_record(&key);
            record.meta.tags = tags.iter().map(|t| (*t).to_owned()).collect();
            record.meta.stored_size = i as u64 * 10;
            record.meta.created_at = Timestamp(i as i64);
            record.meta.accessed_at = Timestamp(10 - i as i64);
            record.meta.expires_at = (i % 2 == 1).then_some(Timestamp(i as i64 * 100));
            record.meta.data_type = match i {
                0 => DataType::Bytes,
                1 => DataType::Json,
                _ => DataType::Other(format!("custom{i}")),
            };
            index.inner.put(&record).unwrap();
            records.push(record.meta);
        }
        records.sort_by(|a, b| a.key.cmp(&b.key));
        let filters = vec![
            EntryFilter::all(),
            EntryFilter::all().tag("a"),
            EntryFilter::all().tag("a").tag("b"),
            EntryFilter::all().tag(r#"a","b"#),
            EntryFilter::all().tag("é").tag("x y"),
            EntryFilter::all().tag("missing"),
            EntryFilter::all().namespace("n1").id_prefix("id"),
            EntryFilter::all().id_prefix("id3"),
            EntryFilter::all().id_prefix("\u{10FFFF}"),
            EntryFilter::all().data_type(DataType::Bytes),
            EntryFilter::all().data_type(DataType::Other("bytes".into())),
            EntryFilter::all().data_type(DataType::Other("custom3".into())),
            EntryFilter::all().created_before(Timestamp(2)),
            EntryFilter::all().created_at_or_after(Timestamp(2)),
            EntryFilter::all().accessed_before(Timestamp(8)),
            EntryFilter::all().expires_at_or_before(Timestamp(100)),
            EntryFilter::all().min_stored_size(20),
            EntryFilter::all().max_stored_size(20),
            EntryFilter::all().min_stored_size(u64::MAX),
            EntryFilter::all().max_stored_size(u64::MAX),
        ];
        for filter in filters {
            let listed: Vec<EntryMeta> = index
                .inner
                .list(&ListQuery::matching(filter.clone()))
                .unwrap();
            let expected: Vec<EntryMeta> = records
                .iter()
                .filter(|m| filter.matches(m))
                .cloned()
                .collect();
            assert_eq!(listed, expected, "{filter:?}");
        }
    }

    #[test]
    fn invalid_filters_are_refused_before_any_sql() {
        let filter =
            EntryFilter::all().metadata(FieldCondition::compare("done", Comparison::Gt, true));
        assert!(matches!(
            index().inner.delete_matching(&filter, 10),
            Err(Error::Config { .. })
        ));
        assert!(matches!(
            index().inner.list(&ListQuery::matching(filter)),
            Err(Error::Config { .. })
        ));
    }
}
