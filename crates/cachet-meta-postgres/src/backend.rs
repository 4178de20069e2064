//! [`PostgresMetadata`]: the [`MetadataBackend`] implementation.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// The shortest wait for a pooled connection, whatever the retry budget: time enough to open
/// one to a healthy server.
const MIN_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Row};

use cachet_core::{
    AccessRecord, BlobId, CacheKey, Compression, ContentDigest, DataType, EntryFilter, EntryMeta,
    EntryRecord, Error, EvictionBatch, ExpiryUpdate, IndexStats, IndexUsage, KeyLock, ListQuery,
    Location, MetadataBackend, MetadataCapabilities, MoveOutcome, PINNED_TAG, PutOutcome, Result,
    Timestamp, WriteCondition,
};

use crate::config::PostgresConfig;
use crate::error::{BACKEND, Fail, retrying};
use crate::filter::{self, Arg, Sql};
use crate::lock;
use crate::schema;

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The metadata columns, without the key, in the order [`decode_meta`] reads them.
macro_rules! meta_columns {
    () => {
        "params, blob_id, data_type, type_name, compression, raw_size, stored_size, digest, \
         created_at, updated_at, accessed_at, access_count, expires_at, tags, user_metadata, \
         signature, blob_etag"
    };
}

/// The columns an entry is written with, in the order of [`insert_values!`] (the binds of
/// `PostgresMetadata::upsert`).
macro_rules! insert_columns {
    () => {
        "(namespace, id, params, params_jsonb, blob_id, blob_etag, data_type, type_name, \
         compression, raw_size, stored_size, digest, created_at, updated_at, accessed_at, \
         access_count, expires_at, tags, user_metadata, user_metadata_jsonb, signature, \
         inline_data)"
    };
}

/// The bind parameters of an entry write.
macro_rules! insert_values {
    () => {
        "$1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20::jsonb, $21, $22"
    };
}

/// An upsert replaces every column of an existing entry.
macro_rules! on_conflict_replace {
    () => {
        "ON CONFLICT (namespace, id) DO UPDATE SET params = EXCLUDED.params, \
         params_jsonb = EXCLUDED.params_jsonb, blob_id = EXCLUDED.blob_id, \
         blob_etag = EXCLUDED.blob_etag, data_type = EXCLUDED.data_type, \
         type_name = EXCLUDED.type_name, compression = EXCLUDED.compression, \
         raw_size = EXCLUDED.raw_size, stored_size = EXCLUDED.stored_size, \
         digest = EXCLUDED.digest, created_at = EXCLUDED.created_at, \
         updated_at = EXCLUDED.updated_at, accessed_at = EXCLUDED.accessed_at, \
         access_count = EXCLUDED.access_count, expires_at = EXCLUDED.expires_at, \
         tags = EXCLUDED.tags, user_metadata = EXCLUDED.user_metadata, \
         user_metadata_jsonb = EXCLUDED.user_metadata_jsonb, signature = EXCLUDED.signature, \
         inline_data = EXCLUDED.inline_data"
    };
}

/// Index of `inline_data` in [`GET_SQL`].
const INLINE_DATA_COLUMN: usize = 17;

/// The hot path: one primary-key lookup.
const GET_SQL: &str = concat!(
    "SELECT ",
    meta_columns!(),
    ", inline_data FROM entries WHERE namespace = $1 AND id = $2"
);
const GET_META_SQL: &str = concat!(
    "SELECT ",
    meta_columns!(),
    " FROM entries WHERE namespace = $1 AND id = $2"
);
const DELETE_SQL: &str = concat!(
    "DELETE FROM entries WHERE namespace = $1 AND id = $2 RETURNING ",
    meta_columns!()
);
/// Reads (and locks) the old row, then upserts, in one statement. The main query reads `old`
/// to completion before PostgreSQL runs the data-modifying `upsert` (unreferenced
/// data-modifying CTEs run after the main query), so `old` is the row as it was before.
const UPSERT_SQL: &str = concat!(
    "WITH old AS (SELECT ",
    meta_columns!(),
    " FROM entries WHERE namespace = $1 AND id = $2 FOR UPDATE), \
     upsert AS (INSERT INTO entries ",
    insert_columns!(),
    " VALUES (",
    insert_values!(),
    ") ",
    on_conflict_replace!(),
    " RETURNING 1) SELECT ",
    meta_columns!(),
    " FROM old"
);
/// The `put` of an entry whose value is in blob `$5`, in one statement (one round trip, its
/// own transaction): `blob` locks the blob's registry row `FOR SHARE`, which holds off a
/// concurrent claim (it needs `FOR UPDATE`) until this statement commits (see the crate docs);
/// the upsert writes only if the row exists and is not claimed. The main query reports the
/// registration (`registered`, `usable`) and the old row; it reads `blob` (so the lock is
/// taken) and `old` before the unreferenced `upsert` runs.
const BLOB_UPSERT_SQL: &str = concat!(
    "WITH blob AS (SELECT claimed_at FROM blobs WHERE id = $5 FOR SHARE), \
     old AS (SELECT ",
    meta_columns!(),
    " FROM entries WHERE namespace = $1 AND id = $2 FOR UPDATE), \
     upsert AS (INSERT INTO entries ",
    insert_columns!(),
    " SELECT ",
    insert_values!(),
    " WHERE EXISTS (SELECT 1 FROM blob WHERE claimed_at IS NULL) ",
    on_conflict_replace!(),
    " RETURNING 1), \
     registration AS (SELECT count(*) AS registered, \
     coalesce(bool_and(claimed_at IS NULL), false) AS usable FROM blob) \
     SELECT registration.registered, registration.usable, old.* \
     FROM registration LEFT JOIN old ON TRUE"
);
/// One statement per batch; duplicate keys are folded first (an `UPDATE ... FROM` updates a
/// row once even when several source rows match). `access_count` saturates at `i64::MAX`.
const RECORD_ACCESS_SQL: &str = "UPDATE entries AS e SET \
     accessed_at = GREATEST(e.accessed_at, v.at), \
     access_count = CASE WHEN e.access_count > 9223372036854775807 - v.hits \
     THEN 9223372036854775807 ELSE e.access_count + v.hits END \
     FROM (SELECT ns, id, max(at) AS at, LEAST(sum(hits), 9223372036854775807)::bigint AS hits \
           FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(ns, id, at, hits) \
           GROUP BY ns, id) AS v \
     WHERE e.namespace = v.ns AND e.id = v.id";
/// `$6` is the signature the entry must still carry, or NULL for an unconditional update.
const UPDATE_EXPIRY_SQL: &str = "UPDATE entries SET expires_at = $3, updated_at = $4, \
     signature = $5 WHERE namespace = $1 AND id = $2 AND ($6::text IS NULL OR signature = $6)";
const STATS_SQL: &str = "SELECT e.n, e.inline_n, e.raw, e.stored, b.n, b.bytes FROM \
     (SELECT count(*) AS n, count(*) - count(blob_id) AS inline_n, \
      COALESCE(sum(raw_size), 0)::text AS raw, COALESCE(sum(stored_size), 0)::text AS stored \
      FROM entries) AS e, \
     (SELECT count(*) AS n, COALESCE(sum(size), 0)::text AS bytes FROM blobs) AS b";
/// `usage`: entries, inline stored bytes, and the bytes of the distinct blobs the entries
/// reference (`IN` visits each blob once however many entries share it).
const USAGE_SQL: &str = "SELECT count(*), \
     COALESCE(sum(stored_size) FILTER (WHERE blob_id IS NULL), 0)::text, \
     (SELECT COALESCE(sum(size), 0)::text FROM blobs WHERE id IN \
      (SELECT blob_id FROM entries WHERE blob_id IS NOT NULL)) FROM entries";
/// `usage` of one namespace (`$1`).
const USAGE_OF_NAMESPACE_SQL: &str = "SELECT count(*), \
     COALESCE(sum(stored_size) FILTER (WHERE blob_id IS NULL), 0)::text, \
     (SELECT COALESCE(sum(size), 0)::text FROM blobs WHERE id IN \
      (SELECT blob_id FROM entries WHERE namespace = $1 AND blob_id IS NOT NULL)) \
     FROM entries WHERE namespace = $1";
/// Registers, re-reserves, or takes over a stale claim, atomically; no row back means the
/// blob is claimed by a live collector.
const RESERVE_SQL: &str = "INSERT INTO blobs AS b (id, size, lease_until, claimed_at) \
     VALUES ($1, $2, $3, NULL) ON CONFLICT (id) DO UPDATE SET size = EXCLUDED.size, \
     lease_until = GREATEST(b.lease_until, EXCLUDED.lease_until), claimed_at = NULL \
     WHERE b.claimed_at IS NULL OR b.claimed_at < $4 RETURNING 1";
/// Claim, step 1: lock the candidate rows (skipping rows a `put` holds `FOR SHARE`).
const CLAIM_LOCK_ANY_SQL: &str = "SELECT id FROM blobs WHERE claimed_at IS NULL \
     AND lease_until <= $1 \
     AND NOT EXISTS (SELECT 1 FROM entries WHERE entries.blob_id = blobs.id) \
     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED";
const CLAIM_LOCK_CANDIDATES_SQL: &str = "SELECT id FROM blobs WHERE id = ANY($3) \
     AND claimed_at IS NULL AND lease_until <= $1 \
     AND NOT EXISTS (SELECT 1 FROM entries WHERE entries.blob_id = blobs.id) \
     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED";
/// Claim, step 2, a new statement hence a new snapshot taken after the locks: the reference
/// check sees every `put` that committed before we got the lock.
const CLAIM_SQL: &str = "UPDATE blobs SET claimed_at = $2 WHERE id = ANY($1) \
     AND claimed_at IS NULL AND lease_until <= $2 \
     AND NOT EXISTS (SELECT 1 FROM entries WHERE entries.blob_id = blobs.id) RETURNING id";
const CLAIM_UNREGISTERED_SQL: &str = "INSERT INTO blobs (id, size, lease_until, claimed_at) \
     VALUES ($1, 0, 0, $2) ON CONFLICT (id) DO NOTHING";
const DELETE_EXPIRED_SQL: &str = concat!(
    "DELETE FROM entries WHERE (namespace, id) IN (SELECT namespace, id FROM entries \
     WHERE expires_at IS NOT NULL AND expires_at <= $1 ORDER BY expires_at LIMIT $2 \
     FOR UPDATE SKIP LOCKED) AND expires_at <= $1 RETURNING namespace, id, ",
    meta_columns!()
);
const RECLAIM_ABANDONED_SQL: &str = "UPDATE blobs SET claimed_at = $1 WHERE id IN \
     (SELECT id FROM blobs WHERE claimed_at IS NOT NULL AND claimed_at < $2 \
      ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) AND claimed_at < $2 RETURNING id";
const RELEASE_SQL: &str = "DELETE FROM blobs WHERE id = ANY($1) AND claimed_at IS NOT NULL";
/// `get_many`: the keys as two arrays joined to the primary key, in one statement (one
/// snapshot); `ord` puts each row back in its slot.
const GET_MANY_SQL: &str = concat!(
    "SELECT k.ord, ",
    meta_columns!(),
    ", inline_data FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(key_ns, key_id, ord) \
     JOIN entries ON entries.namespace = k.key_ns AND entries.id = k.key_id"
);
const GET_META_MANY_SQL: &str = concat!(
    "SELECT k.ord, ",
    meta_columns!(),
    " FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(key_ns, key_id, ord) \
     JOIN entries ON entries.namespace = k.key_ns AND entries.id = k.key_id"
);

/// One `put_many` statement over records with distinct keys, given as one array per column
/// (`$18` holds each record's tags as a JSON array). Like [`BLOB_UPSERT_SQL`]: `blob` locks
/// the registry rows of the batch's blobs `FOR SHARE` (holding off a claim until commit), `old`
/// locks and reads the rows being replaced, `ok` keeps the records whose condition holds and
/// whose blob is registered and unclaimed, and `written` writes them. The main query reports,
/// per record in input order: whether it was written, whether its blob was usable, and the
/// old row.
///
/// `ok` counts `old` before it yields a record, so `old` has read (and locked) every row before
/// `written` changes any: a locking read of a row this statement already changed would skip
/// it.
macro_rules! put_many_sql {
    ($condition:expr, $conflict:expr) => {
        concat!(
            "WITH input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], \
             $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
             $10::int8[], $11::int8[], $12::text[], $13::int8[], $14::int8[], $15::int8[], \
             $16::int8[], $17::int8[], $18::text[], $19::text[], $20::text[], $21::text[], \
             $22::bytea[]) WITH ORDINALITY AS i(namespace, id, params, params_jsonb, blob_id, \
             blob_etag, data_type, type_name, compression, raw_size, stored_size, digest, \
             created_at, updated_at, accessed_at, access_count, expires_at, tags, \
             user_metadata, user_metadata_jsonb, signature, inline_data, ord)), \
             blob AS (SELECT id, claimed_at FROM blobs WHERE id = ANY($5::text[]) FOR SHARE), \
             old AS (SELECT namespace, id, ",
            meta_columns!(),
            " FROM entries WHERE (namespace, id) IN (SELECT namespace, id FROM input) \
             FOR UPDATE), \
             ok AS (SELECT i.* FROM input i CROSS JOIN (SELECT count(*) AS n FROM old) AS locked \
             WHERE locked.n >= 0 AND ",
            $condition,
            " AND (i.blob_id IS NULL OR EXISTS (SELECT 1 FROM blob b \
             WHERE b.id = i.blob_id AND b.claimed_at IS NULL))), \
             written AS (INSERT INTO entries ",
            insert_columns!(),
            " SELECT namespace, id, params, params_jsonb::jsonb, blob_id, blob_etag, data_type, \
             type_name, compression, raw_size, stored_size, digest, created_at, updated_at, \
             accessed_at, access_count, expires_at, \
             ARRAY(SELECT t FROM jsonb_array_elements_text(tags::jsonb) WITH ORDINALITY \
             AS x(t, n) ORDER BY n), \
             user_metadata, user_metadata_jsonb::jsonb, signature, inline_data FROM ok ",
            $conflict,
            " RETURNING namespace, id) \
             SELECT i.ord, w.namespace IS NOT NULL, \
             i.blob_id IS NULL OR (b.id IS NOT NULL AND b.claimed_at IS NULL), old.* \
             FROM input i LEFT JOIN blob b ON b.id = i.blob_id \
             LEFT JOIN old ON old.namespace = i.namespace AND old.id = i.id \
             LEFT JOIN written w ON w.namespace = i.namespace AND w.id = i.id ORDER BY i.ord"
        )
    };
}
const PUT_MANY_SQL: &str = put_many_sql!("TRUE", on_conflict_replace!());
const PUT_MANY_IF_PRESENT_SQL: &str = put_many_sql!(
    "EXISTS (SELECT 1 FROM old o WHERE o.namespace = i.namespace AND o.id = i.id)",
    on_conflict_replace!()
);
/// `DO NOTHING`: a row inserted concurrently after the statement's snapshot is not
/// overwritten (the record is reported `ConditionFailed`).
const PUT_MANY_IF_ABSENT_SQL: &str = put_many_sql!(
    "NOT EXISTS (SELECT 1 FROM old o WHERE o.namespace = i.namespace AND o.id = i.id)",
    "ON CONFLICT (namespace, id) DO NOTHING"
);
/// Index of the first `old.*` column (`namespace`) in a `put_many` result row.
const PUT_MANY_OLD_COLUMN: usize = 3;

const DELETE_MANY_SQL: &str = concat!(
    "DELETE FROM entries WHERE (namespace, id) IN \
     (SELECT * FROM unnest($1::text[], $2::text[])) RETURNING namespace, id, ",
    meta_columns!()
);
/// One statement over updates with distinct keys (`$3` NULL: unconditional).
const UPDATE_EXPIRY_MANY_SQL: &str = "UPDATE entries AS e SET expires_at = u.expires_at, \
     updated_at = u.updated_at, signature = u.signature \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[]) \
     WITH ORDINALITY AS u(ns, id, if_signature, expires_at, updated_at, signature, ord) \
     WHERE e.namespace = u.ns AND e.id = u.id \
     AND (u.if_signature IS NULL OR e.signature = u.if_signature) RETURNING u.ord";
/// `move_entry` in one statement (one round trip, its own transaction). `$1`..`$21` are the
/// destination row without its data, `$22`/`$23` the source key, `$24` `overwrite`. `src`
/// locks the source row and `dst` the destination row; `ok` holds the source's data when the
/// source still has the expected digest and location and the destination may be written;
/// `ins` writes the destination (`DO UPDATE ... WHERE $24`: a destination inserted after the
/// snapshot is overwritten only with `overwrite`); `del` deletes the source only if `ins`
/// wrote. The main query reports what happened and the replaced destination. `ok` counts
/// `dst` before it yields, so `dst` has read its row before `ins` changes it (a locking read
/// of a row this statement already changed would skip it).
const MOVE_SQL: &str = concat!(
    "WITH src AS (SELECT digest, blob_id, inline_data FROM entries \
     WHERE namespace = $22 AND id = $23 FOR UPDATE), \
     dst AS (SELECT namespace, id, ",
    meta_columns!(),
    " FROM entries WHERE namespace = $1 AND id = $2 FOR UPDATE), \
     same AS (SELECT inline_data FROM src WHERE digest = $12 AND blob_id IS NOT DISTINCT FROM $5), \
     ok AS (SELECT same.inline_data FROM same CROSS JOIN (SELECT count(*) AS n FROM dst) AS d \
     WHERE $24 OR d.n = 0), \
     ins AS (INSERT INTO entries ",
    insert_columns!(),
    " SELECT $1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19, $20::jsonb, $21, ok.inline_data FROM ok ",
    on_conflict_replace!(),
    " WHERE $24 RETURNING 1), \
     del AS (DELETE FROM entries WHERE namespace = $22 AND id = $23 \
     AND EXISTS (SELECT 1 FROM ins) RETURNING 1) \
     SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM same), (SELECT count(*) FROM del), \
     dst.* FROM (SELECT 1) AS one LEFT JOIN dst ON TRUE"
);
/// Index of the first `dst.*` column (`namespace`) in the `move_entry` result row.
const MOVE_DST_COLUMN: usize = 3;
/// Uses the partial index on `blob_id` once per id.
const COUNT_BLOB_REFERENCES_SQL: &str = "SELECT count(entries.blob_id) \
     FROM unnest($1::text[]) WITH ORDINALITY AS k(blob, ord) \
     LEFT JOIN entries ON entries.blob_id = k.blob GROUP BY k.ord ORDER BY k.ord";
/// Transactions that depend on READ COMMITTED's fresh snapshot per statement say so, whatever
/// the server's default isolation.
const BEGIN_READ_COMMITTED: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// A metadata index in a PostgreSQL schema (see the [crate docs](crate)).
///
/// Cheap to clone (the pools are shared). Every call is truly async: it borrows a pooled
/// connection for the duration of its statements.
#[derive(Clone)]
pub struct PostgresMetadata {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: PostgresConfig,
    /// `host:port/database` and schema, for messages.
    pub(crate) server: String,
    pool: PgPool,
    /// Connections that hold key locks (session advisory locks), apart from `pool`.
    pub(crate) lock_pool: PgPool,
}

impl fmt::Debug for PostgresMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresMetadata")
            .field("server", &self.inner.server)
            .field("pool_size", &self.inner.pool.size())
            .finish_non_exhaustive()
    }
}

impl PostgresMetadata {
    /// Opens the index described by `config`: validates the options, connects (retrying
    /// within the retry budget while the server is unreachable), creates the schema if
    /// missing, and applies pending migrations under an advisory lock.
    ///
    /// # Errors
    /// - `Error::Config` naming the bad option for an invalid configuration; with field
    ///   `schema` when the schema holds a newer cachet index (the message names both
    ///   versions) or tables that are not a cachet index;
    /// - `Error::Unavailable` when the server cannot be reached within the retry budget;
    /// - `Error::Backend` for anything else (authentication, permissions, ...).
    pub async fn open(config: PostgresConfig) -> Result<Self> {
        config.validate()?;
        let options = config.connect_options();
        let server = format!("{} (schema {})", config.server(), config.schema());
        // sqlx retries refused connections inside `acquire` until the acquire timeout, so the
        // acquire timeout, not our retry loop, bounds a call while the server is down: cap it
        // at the retry budget (with a floor that lets a healthy server hand out a connection).
        let acquire_timeout = config
            .acquire_timeout()
            .min(config.retry_budget().max(MIN_ACQUIRE_TIMEOUT));
        let pool_options = |max: u32, min: u32| {
            PgPoolOptions::new()
                .max_connections(max)
                .min_connections(min)
                .acquire_timeout(acquire_timeout)
                .idle_timeout(config.idle_timeout())
                // A dead connection fails its statement with an I/O error, which is retried
                // on another connection: no ping round trip before every call.
                .test_before_acquire(false)
        };
        let pool = pool_options(config.max_connections(), config.min_connections())
            .connect_lazy_with(options.clone());
        let lock_pool = pool_options(config.lock_pool_size(), 0).connect_lazy_with(options.clone());
        let inner = Inner {
            config,
            server,
            pool,
            lock_pool,
        };
        retrying!(
            &inner,
            "migrate the index schema",
            inner.migrate_once(&options)
        )?;
        tracing::debug!(server = %inner.server, "opened the PostgreSQL index");
        Ok(PostgresMetadata {
            inner: Arc::new(inner),
        })
    }

    /// Opens the index at a `postgres://` URL (see [`PostgresConfig::from_url`]).
    pub async fn open_url(url: &str) -> Result<Self> {
        PostgresConfig::from_url(url)?.open().await
    }

    /// The configuration this index was opened with.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// Closes every pooled connection (held key locks keep theirs until released or
    /// dropped). Later calls fail with `Error::Unavailable`.
    pub async fn close(&self) {
        self.inner.pool.close().await;
        self.inner.lock_pool.close().await;
    }
}

/// Rows are decoded by column index; every failure names the entry and the column.
struct Columns<'r> {
    row: &'r PgRow,
    offset: usize,
    key: &'r CacheKey,
}

impl Columns<'_> {
    fn corrupt(&self, column: &str, detail: impl fmt::Display) -> Error {
        Error::corrupt(
            format!("index entry {} (column `{column}`)", self.key),
            detail,
        )
    }

    fn get<'a, T>(&'a self, index: usize, column: &str) -> Result<T>
    where
        T: sqlx::Decode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row
            .try_get::<T, _>(self.offset + index)
            .map_err(|e| self.corrupt(column, e))
    }

    fn unsigned(&self, index: usize, column: &str) -> Result<u64> {
        let v: i64 = self.get(index, column)?;
        u64::try_from(v).map_err(|_| self.corrupt(column, format!("negative value {v}")))
    }

    fn json(&self, index: usize, column: &str) -> Result<Option<serde_json::Value>> {
        self.get::<Option<&str>>(index, column)?
            .map(|text| {
                serde_json::from_str(text)
                    .map_err(|e| self.corrupt(column, format!("invalid JSON: {e}")))
            })
            .transpose()
    }
}

/// Decodes [`meta_columns!`] starting at `offset`.
fn decode_meta(row: &PgRow, offset: usize, key: CacheKey) -> Result<EntryMeta> {
    let columns = Columns {
        row,
        offset,
        key: &key,
    };
    let location = Location::from_blob_column(columns.get(1, "blob_id")?)
        .map_err(|e| columns.corrupt("blob_id", e))?;
    let compression = Compression::from_column(columns.get(4, "compression")?)
        .map_err(|e| columns.corrupt("compression", e))?;
    let digest = ContentDigest::from_column(columns.get(7, "digest")?)
        .map_err(|e| columns.corrupt("digest", e))?;
    let meta = EntryMeta {
        params: columns.json(0, "params")?,
        location,
        data_type: DataType::parse(columns.get(2, "data_type")?),
        type_name: columns.get(3, "type_name")?,
        compression,
        raw_size: columns.unsigned(5, "raw_size")?,
        stored_size: columns.unsigned(6, "stored_size")?,
        digest,
        created_at: Timestamp(columns.get(8, "created_at")?),
        updated_at: Timestamp(columns.get(9, "updated_at")?),
        accessed_at: Timestamp(columns.get(10, "accessed_at")?),
        access_count: columns.unsigned(11, "access_count")?,
        expires_at: columns.get::<Option<i64>>(12, "expires_at")?.map(Timestamp),
        tags: columns.get(13, "tags")?,
        user_metadata: columns.json(14, "user_metadata")?,
        signature: columns.get(15, "signature")?,
        blob_etag: columns.get(16, "blob_etag")?,
        key: CacheKey::from_parts_unchecked(String::new(), String::new()),
    };
    Ok(EntryMeta { key, ..meta })
}

/// Reads `namespace, id` (columns 0 and 1).
fn decode_key(row: &PgRow) -> Result<CacheKey> {
    let namespace: String = row
        .try_get(0)
        .map_err(|e| Error::corrupt("an index entry's key (column `namespace`)", e))?;
    let id: String = row
        .try_get(1)
        .map_err(|e| Error::corrupt("an index entry's key (column `id`)", e))?;
    Ok(CacheKey::from_parts_unchecked(namespace, id))
}

/// A record's columns, converted (and checked) before any connection is taken.
struct EncodedRow {
    namespace: String,
    id: String,
    params: Option<String>,
    params_jsonb: Option<String>,
    blob_id: Option<String>,
    blob_etag: Option<String>,
    data_type: String,
    type_name: Option<String>,
    compression: String,
    raw_size: i64,
    stored_size: i64,
    digest: String,
    created_at: i64,
    updated_at: i64,
    accessed_at: i64,
    access_count: i64,
    expires_at: Option<i64>,
    tags: Vec<String>,
    user_metadata: Option<String>,
    user_metadata_jsonb: Option<String>,
    signature: Option<String>,
    inline_data: Option<Bytes>,
}

/// JSON text that PostgreSQL's `jsonb` cannot hold (it refuses `\u0000`); the text column
/// keeps it, the JSONB copy is NULL. (An escaped backslash before `u0000` also matches: the
/// copy is then NULL needlessly, never wrong.)
fn jsonb_copy(text: &Option<String>) -> Option<String> {
    text.as_ref().filter(|t| !t.contains("\\u0000")).cloned()
}

impl EncodedRow {
    fn new(record: &EntryRecord) -> Result<Self> {
        let meta = &record.meta;
        let encode_error = |detail: String| Error::Encode {
            key: meta.key.to_string(),
            detail,
        };
        let integer = |field: &str, value: u64| {
            i64::try_from(value).map_err(|_| {
                encode_error(format!(
                    "{field} {value} exceeds i64::MAX, the largest integer PostgreSQL's BIGINT \
                     stores"
                ))
            })
        };
        let text = |field: &str, value: &str| {
            if value.contains('\0') {
                Err(encode_error(format!(
                    "{field} contains a NUL character, which PostgreSQL text cannot store"
                )))
            } else {
                Ok(value.to_owned())
            }
        };
        let opt_text = |field: &str, value: &Option<String>| {
            value.as_deref().map(|v| text(field, v)).transpose()
        };
        let json = |field: &str, value: &serde_json::Value| {
            serde_json::to_string(value)
                .map_err(|e| encode_error(format!("{field} cannot be written as JSON: {e}")))
        };
        let params = meta
            .params
            .as_ref()
            .map(|p| json("params", p))
            .transpose()?;
        let user_metadata = meta
            .user_metadata
            .as_ref()
            .map(|m| json("user_metadata", m))
            .transpose()?;
        Ok(EncodedRow {
            namespace: text("namespace", meta.key.namespace())?,
            id: text("id", meta.key.id())?,
            params_jsonb: jsonb_copy(&params),
            params,
            blob_id: meta.location.blob_id().map(|b| b.as_str().to_owned()),
            blob_etag: opt_text("blob_etag", &meta.blob_etag)?,
            data_type: text("data_type", meta.data_type.as_str())?,
            type_name: opt_text("type_name", &meta.type_name)?,
            compression: meta.compression.name(),
            raw_size: integer("raw_size", meta.raw_size)?,
            stored_size: integer("stored_size", meta.stored_size)?,
            digest: meta.digest.to_string(),
            created_at: meta.created_at.0,
            updated_at: meta.updated_at.0,
            accessed_at: meta.accessed_at.0,
            access_count: integer("access_count", meta.access_count)?,
            expires_at: meta.expires_at.map(|t| t.0),
            tags: meta
                .tags
                .iter()
                .map(|t| text("tags", t))
                .collect::<Result<_>>()?,
            user_metadata_jsonb: jsonb_copy(&user_metadata),
            user_metadata,
            signature: opt_text("signature", &meta.signature)?,
            inline_data: record.inline_data.clone(),
        })
    }
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Splits a batch into consecutive runs in which no key repeats: one statement per run, in
/// order, so that a later write of a key sees the earlier one.
fn distinct_key_runs<'a>(keys: impl Iterator<Item = &'a CacheKey>) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut seen: HashSet<&CacheKey> = HashSet::new();
    let mut start = 0;
    let mut end = 0;
    for key in keys {
        if !seen.insert(key) {
            runs.push(start..end);
            seen.clear();
            seen.insert(key);
            start = end;
        }
        end += 1;
    }
    if end > start {
        runs.push(start..end);
    }
    runs
}

/// The namespaces and ids of `keys`, as the two arrays batch statements take.
fn key_arrays(keys: &[CacheKey]) -> (Vec<&str>, Vec<&str>) {
    keys.iter().map(|k| (k.namespace(), k.id())).unzip()
}

/// Reads a row-ordinal column (`WITH ORDINALITY`, 1-based) as an index into a batch of `len`.
fn ordinal(row: &PgRow, len: usize) -> Result<usize, Fail> {
    let ord: i64 = row.try_get(0)?;
    usize::try_from(ord)
        .ok()
        .and_then(|o| o.checked_sub(1))
        .filter(|&o| o < len)
        .ok_or_else(|| {
            Fail::Done(Error::corrupt(
                "a batch statement's result",
                format!("ordinal {ord} is outside the batch of {len}"),
            ))
        })
}

/// The `list` statement for `query`.
fn list_sql(query: &ListQuery) -> Result<Sql> {
    let mut sql = Sql::new(concat!(
        "SELECT namespace, id, ",
        meta_columns!(),
        " FROM entries WHERE TRUE"
    ));
    filter::push_filter(&mut sql, &query.filter)?;
    if let Some(after) = &query.after {
        sql.push_arg(
            " AND (namespace, id) > (",
            Arg::Text(after.namespace().to_owned()),
            "",
        );
        sql.push_arg(", ", Arg::Text(after.id().to_owned()), ")");
    }
    sql.push_arg(
        " ORDER BY namespace, id LIMIT ",
        Arg::Int(limit_param(query.effective_limit())),
        "",
    );
    Ok(sql)
}

/// The `delete_matching` statement. `picked` chooses and locks at most `limit` matching rows
/// (in key order, so concurrent deleters lock in the same order); its locking read re-checks
/// the filter on the newest version of a row that changed meanwhile. The `DELETE` repeats the
/// filter for the same reason (READ COMMITTED re-evaluates it on the row version it deletes),
/// so a row rewritten concurrently so that it no longer matches is not deleted. `picked` is a
/// materialized CTE, run once: as a subquery, the planner may rescan it once per candidate
/// row, and a rescan skips the rows this statement already deleted and picks others, past
/// `limit`.
fn delete_matching_sql(filter: &EntryFilter, limit: usize) -> Result<Sql> {
    let mut conditions = Sql::new("");
    filter::push_filter(&mut conditions, filter)?;
    let Sql { text: where_, args } = conditions;
    let mut sql = Sql {
        text: String::new(),
        args,
    };
    sql.push("WITH picked AS MATERIALIZED (SELECT namespace, id FROM entries WHERE TRUE");
    sql.push(&where_);
    sql.push_arg(
        " ORDER BY namespace, id LIMIT ",
        Arg::Int(limit_param(limit)),
        " FOR UPDATE) DELETE FROM entries WHERE (namespace, id) IN \
         (SELECT namespace, id FROM picked)",
    );
    sql.push(&where_);
    sql.push(concat!(" RETURNING namespace, id, ", meta_columns!()));
    Ok(sql)
}

/// The `evict` statement: the candidates ranked and locked (`SKIP LOCKED`: a row a writer
/// holds is judged next time), cut where the running total of their stored sizes, before each
/// row, reaches `max_bytes`, then deleted with their rows returned.
fn evict_sql(batch: &EvictionBatch) -> Result<Sql> {
    let half_life = batch.order.half_life_ms()?;
    let mut sql = Sql::new("");
    sql.push("WITH ranked AS MATERIALIZED (SELECT namespace, id, stored_size, accessed_at, ");
    match half_life {
        None => sql.push("0"),
        Some(half_life) => {
            sql.push_arg(
                "(access_count >> LEAST(63, GREATEST(0, (",
                Arg::Int(batch.now.0),
                "",
            );
            sql.push_arg(" - accessed_at) / ", Arg::Int(half_life), "))::int)");
        }
    }
    sql.push_arg(
        " AS r FROM entries WHERE updated_at < ",
        Arg::Int(batch.written_before.0),
        "",
    );
    sql.push_arg(
        " AND NOT (tags @> ARRAY[",
        Arg::Text(PINNED_TAG.to_owned()),
        "::text])",
    );
    if let Some(namespace) = &batch.namespace {
        sql.push_arg(" AND namespace = ", Arg::Text(namespace.clone()), "");
    }
    if let Some(before) = batch.accessed_before {
        sql.push_arg(" AND accessed_at < ", Arg::Int(before.0), "");
    }
    sql.push_arg(
        " ORDER BY r, accessed_at, namespace, id LIMIT ",
        Arg::Int(limit_param(batch.max_entries)),
        " FOR UPDATE SKIP LOCKED), \
         chosen AS (SELECT namespace, id FROM (SELECT namespace, id, \
          sum(stored_size) OVER (ORDER BY r, accessed_at, namespace, id \
          ROWS UNBOUNDED PRECEDING) - stored_size AS before FROM ranked) AS w WHERE before < ",
    );
    sql.push_arg(
        "",
        Arg::Int(i64::try_from(batch.max_bytes).unwrap_or(i64::MAX)),
        ") DELETE FROM entries WHERE (namespace, id) IN (SELECT namespace, id FROM chosen)",
    );
    sql.push(concat!(" RETURNING namespace, id, ", meta_columns!()));
    Ok(sql)
}

/// `sum(...)::text` of a stats query as `u64` (saturating; negative means corrupt sizes).
fn parse_sum(text: &str, what: &str, server: &str) -> Result<u64> {
    if text.starts_with('-') {
        return Err(Error::corrupt(
            format!("PostgreSQL index {server}"),
            format!("the {what} sum is negative: a size column holds a negative value"),
        ));
    }
    text.parse::<u128>()
        .map(|v| u64::try_from(v).unwrap_or(u64::MAX))
        .map_err(|_| {
            Error::corrupt(
                format!("PostgreSQL index {server}"),
                format!("the {what} sum `{text}` is not a number"),
            )
        })
}

impl Inner {
    async fn migrate_once(&self, options: &PgConnectOptions) -> Result<(), Fail> {
        let connect = PgConnection::connect_with(options);
        let mut conn = match tokio::time::timeout(self.config.connect_timeout(), connect).await {
            Ok(conn) => conn?,
            Err(_) => {
                return Err(Fail::Sql(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "connecting took longer than connect_timeout ({:?})",
                        self.config.connect_timeout()
                    ),
                ))));
            }
        };
        let result = schema::migrate(&mut conn, self.config.schema()).await;
        let _ = conn.close().await;
        result
    }

    fn blob_id(&self, id: &str) -> Result<BlobId> {
        BlobId::parse(id).map_err(|_| {
            Error::corrupt(
                format!("blob registry of {}", self.server),
                format!("`{id}` is not a valid blob id (column `id` of `blobs`)"),
            )
        })
    }

    /// The old row of a write that replaces or removes it. A row too damaged to decode does
    /// not block the write (that is how repair removes it): it is logged and reported as `None`.
    fn replaced_row(&self, row: Option<PgRow>, key: &CacheKey, op: &str) -> Option<EntryMeta> {
        self.replaced_row_at(row, 0, key, op)
    }

    /// [`replaced_row`](Self::replaced_row) with the metadata columns starting at `offset`.
    fn replaced_row_at(
        &self,
        row: Option<PgRow>,
        offset: usize,
        key: &CacheKey,
        op: &str,
    ) -> Option<EntryMeta> {
        let row = row?;
        match decode_meta(&row, offset, key.clone()) {
            Ok(meta) => Some(meta),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, op, "a corrupt index row was replaced or removed");
                None
            }
        }
    }

    async fn get_once(&self, key: &CacheKey) -> Result<Option<EntryRecord>, Fail> {
        let Some(row) = sqlx::query(GET_SQL)
            .bind(key.namespace())
            .bind(key.id())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let meta = decode_meta(&row, 0, key.clone())?;
        let inline_data: Option<Vec<u8>> = row
            .try_get(INLINE_DATA_COLUMN)
            .map_err(|e| Error::corrupt(format!("index entry {key} (column `inline_data`)"), e))?;
        Ok(Some(EntryRecord {
            meta,
            inline_data: inline_data.map(Bytes::from),
        }))
    }

    async fn get_meta_once(&self, key: &CacheKey) -> Result<Option<EntryMeta>, Fail> {
        let row = sqlx::query(GET_META_SQL)
            .bind(key.namespace())
            .bind(key.id())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|row| decode_meta(&row, 0, key.clone()))
            .transpose()?)
    }

    fn upsert<'r>(sql: &'static str, row: &'r EncodedRow) -> PgQuery<'r> {
        Self::bind_row(sqlx::query(sql), row).bind(row.inline_data.as_deref())
    }

    /// Binds a row's columns but `inline_data` as `$1` to `$21` ([`insert_values!`] order).
    fn bind_row<'r>(query: PgQuery<'r>, row: &'r EncodedRow) -> PgQuery<'r> {
        query
            .bind(&row.namespace)
            .bind(&row.id)
            .bind(&row.params)
            .bind(&row.params_jsonb)
            .bind(&row.blob_id)
            .bind(&row.blob_etag)
            .bind(&row.data_type)
            .bind(&row.type_name)
            .bind(&row.compression)
            .bind(row.raw_size)
            .bind(row.stored_size)
            .bind(&row.digest)
            .bind(row.created_at)
            .bind(row.updated_at)
            .bind(row.accessed_at)
            .bind(row.access_count)
            .bind(row.expires_at)
            .bind(&row.tags)
            .bind(&row.user_metadata)
            .bind(&row.user_metadata_jsonb)
            .bind(&row.signature)
    }

    async fn put_once(&self, key: &CacheKey, row: &EncodedRow) -> Result<Option<EntryMeta>, Fail> {
        let Some(blob) = &row.blob_id else {
            // Inline: one statement, its own transaction.
            let old = Self::upsert(UPSERT_SQL, row)
                .fetch_optional(&self.pool)
                .await?;
            return Ok(self.replaced_row(old, key, "put"));
        };
        // One autocommit statement, in READ COMMITTED (the sessions' default, set at connect):
        // a locking read that waited re-reads the newest row version.
        let result = Self::upsert(BLOB_UPSERT_SQL, row)
            .fetch_one(&self.pool)
            .await?;
        let registered: i64 = result.try_get(0)?;
        let usable: bool = result.try_get(1)?;
        if !usable {
            let detail = if registered == 0 {
                format!(
                    "entry {key} references a blob that is not registered (reserve it before \
                     committing the entry)"
                )
            } else {
                format!(
                    "entry {key} references a blob being garbage-collected; write the blob again"
                )
            };
            return Err(Error::Conflict {
                what: format!("blob {blob}"),
                detail,
            }
            .into());
        }
        let old = match result.try_get::<Option<String>, _>(2 + 2) {
            // `old.*` is NULL when there was no old row: its `data_type` column (never NULL in a
            // real row) tells.
            Ok(Some(_)) => Some(result),
            _ => None,
        };
        Ok(old.and_then(|row| self.replaced_row_at(Some(row), 2, key, "put")))
    }

    async fn delete_once(&self, key: &CacheKey) -> Result<Option<EntryMeta>, Fail> {
        let old = sqlx::query(DELETE_SQL)
            .bind(key.namespace())
            .bind(key.id())
            .fetch_optional(&self.pool)
            .await?;
        Ok(self.replaced_row(old, key, "delete"))
    }

    async fn delete_expired_once(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<EntryMeta>, Fail> {
        let rows = sqlx::query(DELETE_EXPIRED_SQL)
            .bind(now.0)
            .bind(limit_param(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut removed = Vec::with_capacity(rows.len());
        for row in rows {
            let key = decode_key(&row)?;
            match decode_meta(&row, 2, key.clone()) {
                Ok(meta) => removed.push(meta),
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "deleted a corrupt expired index row")
                }
            }
        }
        Ok(removed)
    }

    async fn list_once(&self, sql: &Sql) -> Result<Vec<EntryMeta>, Fail> {
        let rows = sql.query().fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key = decode_key(&row)?;
            out.push(decode_meta(&row, 2, key)?);
        }
        Ok(out)
    }

    async fn record_access_once(&self, batch: &AccessBatch) -> Result<(), Fail> {
        sqlx::query(RECORD_ACCESS_SQL)
            .bind(&batch.namespaces)
            .bind(&batch.ids)
            .bind(&batch.ats)
            .bind(&batch.hits)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn update_expiry_once(
        &self,
        key: &CacheKey,
        if_signature: Option<&str>,
        expires_at: Option<Timestamp>,
        updated_at: Timestamp,
        signature: Option<&str>,
    ) -> Result<bool, Fail> {
        let updated = sqlx::query(UPDATE_EXPIRY_SQL)
            .bind(key.namespace())
            .bind(key.id())
            .bind(expires_at.map(|t| t.0))
            .bind(updated_at.0)
            .bind(signature)
            .bind(if_signature)
            .execute(&self.pool)
            .await?;
        Ok(updated.rows_affected() > 0)
    }

    async fn stats_once(&self) -> Result<IndexStats, Fail> {
        let row = sqlx::query(STATS_SQL).fetch_one(&self.pool).await?;
        let entries: i64 = row.try_get(0)?;
        let inline: i64 = row.try_get(1)?;
        let raw: String = row.try_get(2)?;
        let stored: String = row.try_get(3)?;
        let blobs: i64 = row.try_get(4)?;
        let blob_bytes: String = row.try_get(5)?;
        Ok(IndexStats {
            entries: entries.max(0) as u64,
            inline_entries: inline.max(0) as u64,
            raw_bytes: parse_sum(&raw, "raw size", &self.server)?,
            stored_bytes: parse_sum(&stored, "stored size", &self.server)?,
            blobs: blobs.max(0) as u64,
            blob_bytes: parse_sum(&blob_bytes, "blob size", &self.server)?,
        })
    }

    async fn usage_once(&self, namespace: Option<&str>) -> Result<IndexUsage, Fail> {
        let row = match namespace {
            Some(ns) => {
                sqlx::query(USAGE_OF_NAMESPACE_SQL)
                    .bind(ns)
                    .fetch_one(&self.pool)
                    .await?
            }
            None => sqlx::query(USAGE_SQL).fetch_one(&self.pool).await?,
        };
        let entries: i64 = row.try_get(0)?;
        let inline: String = row.try_get(1)?;
        let blobs: String = row.try_get(2)?;
        let inline = parse_sum(&inline, "inline size", &self.server)?;
        let blobs = parse_sum(&blobs, "blob size", &self.server)?;
        Ok(IndexUsage::new(
            entries.max(0) as u64,
            inline.saturating_add(blobs),
        ))
    }

    async fn reserve_blob_once(
        &self,
        id: &BlobId,
        size: i64,
        lease_until: Timestamp,
        stale_claim_before: Timestamp,
    ) -> Result<(), Fail> {
        let row = sqlx::query(RESERVE_SQL)
            .bind(id.as_str())
            .bind(size)
            .bind(lease_until.0)
            .bind(stale_claim_before.0)
            .fetch_optional(&self.pool)
            .await?;
        if row.is_none() {
            return Err(Error::Conflict {
                what: format!("blob {id}"),
                detail: "the blob is being garbage-collected; retry shortly".into(),
            }
            .into());
        }
        Ok(())
    }

    async fn claim_once(
        &self,
        candidates: Option<&[String]>,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>, Fail> {
        let mut tx = self.pool.begin_with(BEGIN_READ_COMMITTED).await?;
        let lock = match candidates {
            None => sqlx::query(CLAIM_LOCK_ANY_SQL)
                .bind(now.0)
                .bind(limit_param(limit)),
            Some(ids) => sqlx::query(CLAIM_LOCK_CANDIDATES_SQL)
                .bind(now.0)
                .bind(limit_param(limit))
                .bind(ids),
        };
        let locked: Vec<String> = lock
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?;
        if locked.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let claimed: Vec<String> = sqlx::query(CLAIM_SQL)
            .bind(&locked)
            .bind(now.0)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(claimed
            .iter()
            .map(|id| self.blob_id(id))
            .collect::<Result<_>>()?)
    }

    async fn reclaim_once(
        &self,
        now: Timestamp,
        stale_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>, Fail> {
        let rows = sqlx::query(RECLAIM_ABANDONED_SQL)
            .bind(now.0)
            .bind(stale_before.0)
            .bind(limit_param(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            ids.push(self.blob_id(row.try_get::<&str, _>(0)?)?);
        }
        Ok(ids)
    }

    async fn claim_unregistered_once(&self, id: &BlobId, now: Timestamp) -> Result<bool, Fail> {
        let done = sqlx::query(CLAIM_UNREGISTERED_SQL)
            .bind(id.as_str())
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_once(&self, ids: &[String]) -> Result<(), Fail> {
        sqlx::query(RELEASE_SQL)
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_many_once(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryRecord>>, Fail> {
        let (namespaces, ids) = key_arrays(keys);
        let rows = sqlx::query(GET_MANY_SQL)
            .bind(&namespaces)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        let mut out = vec![None; keys.len()];
        for row in rows {
            let slot = ordinal(&row, keys.len())?;
            let key = &keys[slot];
            let meta = decode_meta(&row, 1, key.clone())?;
            let inline_data: Option<Vec<u8>> =
                row.try_get(1 + INLINE_DATA_COLUMN).map_err(|e| {
                    Error::corrupt(format!("index entry {key} (column `inline_data`)"), e)
                })?;
            out[slot] = Some(EntryRecord {
                meta,
                inline_data: inline_data.map(Bytes::from),
            });
        }
        Ok(out)
    }

    async fn get_meta_many_once(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>, Fail> {
        let (namespaces, ids) = key_arrays(keys);
        let rows = sqlx::query(GET_META_MANY_SQL)
            .bind(&namespaces)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        let mut out = vec![None; keys.len()];
        for row in rows {
            let slot = ordinal(&row, keys.len())?;
            out[slot] = Some(decode_meta(&row, 1, keys[slot].clone())?);
        }
        Ok(out)
    }

    /// Every run of distinct keys is one statement; one run is an autocommit statement (one
    /// round trip), several share a `READ COMMITTED` transaction.
    async fn put_many_once(
        &self,
        rows: &[EncodedRow],
        keys: &[&CacheKey],
        runs: &[Range<usize>],
        condition: WriteCondition,
    ) -> Result<Vec<PutOutcome>, Fail> {
        if let [run] = runs {
            return self
                .put_run(
                    &self.pool,
                    &rows[run.clone()],
                    &keys[run.clone()],
                    condition,
                )
                .await;
        }
        let mut tx = self.pool.begin_with(BEGIN_READ_COMMITTED).await?;
        let mut outcomes = Vec::with_capacity(rows.len());
        for run in runs {
            outcomes.extend(
                self.put_run(&mut *tx, &rows[run.clone()], &keys[run.clone()], condition)
                    .await?,
            );
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// One `put_many` statement over records with distinct keys.
    async fn put_run<'e, E>(
        &self,
        executor: E,
        rows: &[EncodedRow],
        keys: &[&CacheKey],
        condition: WriteCondition,
    ) -> Result<Vec<PutOutcome>, Fail>
    where
        E: sqlx::Executor<'e, Database = sqlx::Postgres>,
    {
        let sql = match condition {
            WriteCondition::Always => PUT_MANY_SQL,
            WriteCondition::IfPresent => PUT_MANY_IF_PRESENT_SQL,
            WriteCondition::IfAbsent => PUT_MANY_IF_ABSENT_SQL,
        };
        let column = |f: fn(&EncodedRow) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
        let int = |f: fn(&EncodedRow) -> i64| rows.iter().map(f).collect::<Vec<_>>();
        let tags = rows
            .iter()
            .map(|r| serde_json::to_string(&r.tags))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Encode {
                key: "a put_many batch".into(),
                detail: format!("tags cannot be written as JSON: {e}"),
            })?;
        let result = sqlx::query(sql)
            .bind(column(|r| Some(&r.namespace)))
            .bind(column(|r| Some(&r.id)))
            .bind(column(|r| r.params.as_deref()))
            .bind(column(|r| r.params_jsonb.as_deref()))
            .bind(column(|r| r.blob_id.as_deref()))
            .bind(column(|r| r.blob_etag.as_deref()))
            .bind(column(|r| Some(&r.data_type)))
            .bind(column(|r| r.type_name.as_deref()))
            .bind(column(|r| Some(&r.compression)))
            .bind(int(|r| r.raw_size))
            .bind(int(|r| r.stored_size))
            .bind(column(|r| Some(&r.digest)))
            .bind(int(|r| r.created_at))
            .bind(int(|r| r.updated_at))
            .bind(int(|r| r.accessed_at))
            .bind(int(|r| r.access_count))
            .bind(rows.iter().map(|r| r.expires_at).collect::<Vec<_>>())
            .bind(&tags)
            .bind(column(|r| r.user_metadata.as_deref()))
            .bind(column(|r| r.user_metadata_jsonb.as_deref()))
            .bind(column(|r| r.signature.as_deref()))
            .bind(
                rows.iter()
                    .map(|r| r.inline_data.as_deref())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(executor)
            .await?;
        let mut outcomes = vec![PutOutcome::ConditionFailed; rows.len()];
        for row in result {
            let slot = ordinal(&row, rows.len())?;
            let written: bool = row.try_get(1)?;
            let usable: bool = row.try_get(2)?;
            // `old.namespace` is NULL when no row had the key.
            let existed = row
                .try_get::<Option<&str>, _>(PUT_MANY_OLD_COLUMN)?
                .is_some();
            let holds = match condition {
                WriteCondition::Always => true,
                WriteCondition::IfPresent => existed,
                WriteCondition::IfAbsent => !existed,
            };
            outcomes[slot] = if !holds {
                PutOutcome::ConditionFailed
            } else if !usable {
                PutOutcome::BlobUnavailable
            } else if written {
                let old = existed.then_some(row);
                PutOutcome::Written {
                    replaced: self.replaced_row_at(
                        old,
                        PUT_MANY_OLD_COLUMN + 2,
                        keys[slot],
                        "put_many",
                    ),
                }
            } else {
                // `IfAbsent`: another transaction inserted the key after this statement's
                // snapshot (`DO NOTHING` left its row).
                PutOutcome::ConditionFailed
            };
        }
        Ok(outcomes)
    }

    async fn delete_many_once(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>, Fail> {
        let (namespaces, ids) = key_arrays(keys);
        let rows = sqlx::query(DELETE_MANY_SQL)
            .bind(&namespaces)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        let mut removed: HashMap<CacheKey, Option<EntryMeta>> = HashMap::with_capacity(rows.len());
        for row in rows {
            let key = decode_key(&row)?;
            let meta = self.replaced_row_at(Some(row), 2, &key, "delete_many");
            removed.insert(key, meta);
        }
        // The first occurrence of a key reports the removed entry; repeats report None.
        Ok(keys
            .iter()
            .map(|key| removed.remove(key).flatten())
            .collect())
    }

    async fn delete_matching_once(&self, sql: &Sql) -> Result<Vec<EntryMeta>, Fail> {
        let rows = sql.query().fetch_all(&self.pool).await?;
        let mut removed = Vec::with_capacity(rows.len());
        for row in rows {
            let key = decode_key(&row)?;
            match decode_meta(&row, 2, key.clone()) {
                Ok(meta) => removed.push(meta),
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "deleted a corrupt matching index row")
                }
            }
        }
        Ok(removed)
    }

    /// Every run of distinct keys is one statement, in one transaction when there are several.
    async fn update_expiry_many_once(
        &self,
        updates: &[ExpiryUpdate],
        runs: &[Range<usize>],
    ) -> Result<Vec<bool>, Fail> {
        if let [run] = runs {
            return self
                .update_expiry_run(&self.pool, &updates[run.clone()])
                .await;
        }
        let mut tx = self.pool.begin_with(BEGIN_READ_COMMITTED).await?;
        let mut applied = Vec::with_capacity(updates.len());
        for run in runs {
            applied.extend(
                self.update_expiry_run(&mut *tx, &updates[run.clone()])
                    .await?,
            );
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn update_expiry_run<'e, E>(
        &self,
        executor: E,
        updates: &[ExpiryUpdate],
    ) -> Result<Vec<bool>, Fail>
    where
        E: sqlx::Executor<'e, Database = sqlx::Postgres>,
    {
        let texts =
            |f: fn(&ExpiryUpdate) -> Option<&str>| updates.iter().map(f).collect::<Vec<_>>();
        let rows = sqlx::query(UPDATE_EXPIRY_MANY_SQL)
            .bind(texts(|u| Some(u.key.namespace())))
            .bind(texts(|u| Some(u.key.id())))
            .bind(texts(|u| u.if_signature.as_deref()))
            .bind(
                updates
                    .iter()
                    .map(|u| u.expires_at.map(|t| t.0))
                    .collect::<Vec<_>>(),
            )
            .bind(updates.iter().map(|u| u.updated_at.0).collect::<Vec<_>>())
            .bind(texts(|u| u.signature.as_deref()))
            .fetch_all(executor)
            .await?;
        let mut applied = vec![false; updates.len()];
        for row in rows {
            applied[ordinal(&row, updates.len())?] = true;
        }
        Ok(applied)
    }

    async fn move_once(
        &self,
        from: &CacheKey,
        to: &CacheKey,
        row: &EncodedRow,
        overwrite: bool,
    ) -> Result<MoveOutcome, Fail> {
        let result = Self::bind_row(sqlx::query(MOVE_SQL), row)
            .bind(from.namespace())
            .bind(from.id())
            .bind(overwrite)
            .fetch_one(&self.pool)
            .await?;
        let source: i64 = result.try_get(0)?;
        let same: i64 = result.try_get(1)?;
        let deleted: i64 = result.try_get(2)?;
        Ok(if source == 0 {
            MoveOutcome::SourceMissing
        } else if same == 0 {
            MoveOutcome::SourceChanged
        } else if deleted == 0 {
            MoveOutcome::DestinationExists
        } else {
            let existed = result
                .try_get::<Option<&str>, _>(MOVE_DST_COLUMN)?
                .is_some();
            MoveOutcome::Moved {
                replaced: self.replaced_row_at(
                    existed.then_some(result),
                    MOVE_DST_COLUMN + 2,
                    to,
                    "move_entry",
                ),
            }
        })
    }

    async fn count_blob_references_once(&self, ids: &[&str]) -> Result<Vec<u64>, Fail> {
        let rows = sqlx::query(COUNT_BLOB_REFERENCES_SQL)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<i64, _>(0).map(|n| n.max(0) as u64))
            .collect::<Result<_, _>>()?)
    }
}

/// A `record_access` batch as column arrays, sorted by key so that concurrent batches lock
/// rows in the same order.
struct AccessBatch {
    namespaces: Vec<String>,
    ids: Vec<String>,
    ats: Vec<i64>,
    hits: Vec<i64>,
}

impl AccessBatch {
    fn new(accesses: &[AccessRecord]) -> Self {
        let mut sorted: Vec<&AccessRecord> = accesses.iter().collect();
        sorted
            .sort_by(|a, b| (a.key.namespace(), a.key.id()).cmp(&(b.key.namespace(), b.key.id())));
        AccessBatch {
            namespaces: sorted
                .iter()
                .map(|a| a.key.namespace().to_owned())
                .collect(),
            ids: sorted.iter().map(|a| a.key.id().to_owned()).collect(),
            ats: sorted.iter().map(|a| a.at.0).collect(),
            hits: sorted
                .iter()
                .map(|a| i64::try_from(a.hits).unwrap_or(i64::MAX))
                .collect(),
        }
    }
}

#[async_trait]
impl MetadataBackend for PostgresMetadata {
    fn name(&self) -> &str {
        BACKEND
    }

    fn capabilities(&self) -> MetadataCapabilities {
        let mut capabilities = MetadataCapabilities::all(false);
        capabilities.shared_across_processes = true;
        capabilities.shared_across_machines = true;
        capabilities.durable = true;
        capabilities.key_locks = true;
        capabilities
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<EntryRecord>> {
        let inner = &*self.inner;
        retrying!(inner, format_args!("get {key}"), inner.get_once(key))
    }

    async fn get_meta(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        let inner = &*self.inner;
        retrying!(
            inner,
            format_args!("get_meta {key}"),
            inner.get_meta_once(key)
        )
    }

    /// An upsert, so retrying after a commit whose outcome was lost (connection cut) is
    /// safe; the retried call then reports the record it wrote itself as the replaced one.
    async fn put(&self, record: EntryRecord) -> Result<Option<EntryMeta>> {
        let row = EncodedRow::new(&record)?;
        let key = &record.meta.key;
        let inner = &*self.inner;
        retrying!(inner, format_args!("put {key}"), inner.put_once(key, &row))
    }

    async fn delete(&self, key: &CacheKey) -> Result<Option<EntryMeta>> {
        let inner = &*self.inner;
        retrying!(inner, format_args!("delete {key}"), inner.delete_once(key))
    }

    async fn delete_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<EntryMeta>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        retrying!(
            inner,
            "delete expired entries",
            inner.delete_expired_once(now, limit)
        )
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<EntryMeta>> {
        let sql = list_sql(query)?;
        let inner = &*self.inner;
        retrying!(inner, "list", inner.list_once(&sql))
    }

    async fn record_access(&self, accesses: &[AccessRecord]) -> Result<()> {
        if accesses.is_empty() {
            return Ok(());
        }
        let batch = AccessBatch::new(accesses);
        let inner = &*self.inner;
        retrying!(inner, "record access", inner.record_access_once(&batch))
    }

    async fn update_expiry(
        &self,
        key: &CacheKey,
        if_signature: Option<&str>,
        expires_at: Option<Timestamp>,
        updated_at: Timestamp,
        signature: Option<String>,
    ) -> Result<bool> {
        let inner = &*self.inner;
        retrying!(
            inner,
            format_args!("update expiry of {key}"),
            inner.update_expiry_once(
                key,
                if_signature,
                expires_at,
                updated_at,
                signature.as_deref()
            )
        )
    }

    async fn stats(&self) -> Result<IndexStats> {
        let inner = &*self.inner;
        retrying!(inner, "compute stats", inner.stats_once())
    }

    async fn reserve_blob(
        &self,
        id: &BlobId,
        size: u64,
        lease_until: Timestamp,
        stale_claim_before: Timestamp,
    ) -> Result<()> {
        let size = i64::try_from(size).map_err(|_| Error::Encode {
            key: format!("blob {id}"),
            detail: format!(
                "size {size} exceeds i64::MAX, the largest integer PostgreSQL's BIGINT stores"
            ),
        })?;
        let inner = &*self.inner;
        retrying!(
            inner,
            format_args!("reserve blob {id}"),
            inner.reserve_blob_once(id, size, lease_until, stale_claim_before)
        )
    }

    async fn claim_unreferenced_blobs(
        &self,
        candidates: Option<&[BlobId]>,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        if limit == 0 || candidates.is_some_and(|c| c.is_empty()) {
            return Ok(Vec::new());
        }
        let candidates: Option<Vec<String>> =
            candidates.map(|c| c.iter().map(|id| id.as_str().to_owned()).collect());
        let inner = &*self.inner;
        retrying!(
            inner,
            "claim unreferenced blobs",
            inner.claim_once(candidates.as_deref(), now, limit)
        )
    }

    async fn reclaim_abandoned_claims(
        &self,
        now: Timestamp,
        stale_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<BlobId>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        retrying!(
            inner,
            "reclaim abandoned claims",
            inner.reclaim_once(now, stale_before, limit)
        )
    }

    async fn claim_unregistered_blob(&self, id: &BlobId, now: Timestamp) -> Result<bool> {
        let inner = &*self.inner;
        retrying!(
            inner,
            format_args!("claim unregistered blob {id}"),
            inner.claim_unregistered_once(id, now)
        )
    }

    async fn release_claimed_blobs(&self, ids: &[BlobId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        let inner = &*self.inner;
        retrying!(inner, "release claimed blobs", inner.release_once(&ids))
    }

    async fn get_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryRecord>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        retrying!(
            inner,
            format_args!("get_many of {} keys", keys.len()),
            inner.get_many_once(keys)
        )
    }

    async fn get_meta_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        retrying!(
            inner,
            format_args!("get_meta_many of {} keys", keys.len()),
            inner.get_meta_many_once(keys)
        )
    }

    /// One statement per run of distinct keys (one round trip for a batch without repeated
    /// keys), all in one transaction. Retrying after a commit whose outcome was lost is safe
    /// for `Always` and `IfPresent` (upserts); an `IfAbsent` retry then reports the records it
    /// wrote itself as `ConditionFailed`.
    async fn put_many(
        &self,
        records: Vec<EntryRecord>,
        condition: WriteCondition,
    ) -> Result<Vec<PutOutcome>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let rows = records
            .iter()
            .map(EncodedRow::new)
            .collect::<Result<Vec<_>>>()?;
        let keys: Vec<&CacheKey> = records.iter().map(|r| &r.meta.key).collect();
        let runs = distinct_key_runs(keys.iter().copied());
        let inner = &*self.inner;
        retrying!(
            inner,
            format_args!("put_many of {} records", records.len()),
            inner.put_many_once(&rows, &keys, &runs, condition)
        )
    }

    async fn delete_many(&self, keys: &[CacheKey]) -> Result<Vec<Option<EntryMeta>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        retrying!(
            inner,
            format_args!("delete_many of {} keys", keys.len()),
            inner.delete_many_once(keys)
        )
    }

    async fn delete_matching(&self, filter: &EntryFilter, limit: usize) -> Result<Vec<EntryMeta>> {
        let sql = delete_matching_sql(filter, limit)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        retrying!(
            inner,
            "delete matching entries",
            inner.delete_matching_once(&sql)
        )
    }

    async fn update_expiry_many(&self, updates: &[ExpiryUpdate]) -> Result<Vec<bool>> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        for update in updates {
            if update
                .signature
                .as_deref()
                .is_some_and(|s| s.contains('\0'))
            {
                return Err(Error::Encode {
                    key: update.key.to_string(),
                    detail: "signature contains a NUL character, which PostgreSQL text cannot \
                             store"
                        .into(),
                });
            }
        }
        // An expected signature holding NUL matches no stored one: such an update never
        // applies (and PostgreSQL text could not carry it).
        let (slots, live): (Vec<usize>, Vec<&ExpiryUpdate>) = updates
            .iter()
            .enumerate()
            .filter(|(_, u)| !u.if_signature.as_deref().is_some_and(|s| s.contains('\0')))
            .unzip();
        let live: Vec<ExpiryUpdate> = live.into_iter().cloned().collect();
        let runs = distinct_key_runs(live.iter().map(|u| &u.key));
        let inner = &*self.inner;
        let live_applied = if live.is_empty() {
            Vec::new()
        } else {
            retrying!(
                inner,
                format_args!("update_expiry_many of {} entries", updates.len()),
                inner.update_expiry_many_once(&live, &runs)
            )?
        };
        let mut applied = vec![false; updates.len()];
        for (slot, done) in slots.into_iter().zip(live_applied) {
            applied[slot] = done;
        }
        Ok(applied)
    }

    /// One statement (see the crate docs).
    async fn move_entry(
        &self,
        from: &CacheKey,
        to: EntryMeta,
        overwrite: bool,
    ) -> Result<MoveOutcome> {
        if from == &to.key {
            return Err(Error::config(
                "move_entry",
                format!("the source and the destination are the same key {from}"),
            ));
        }
        let to_key = to.key.clone();
        let row = EncodedRow::new(&EntryRecord {
            meta: to,
            inline_data: None,
        })?;
        let inner = &*self.inner;
        retrying!(
            inner,
            format_args!("move {from} to {to_key}"),
            inner.move_once(from, &to_key, &row, overwrite)
        )
    }

    async fn usage(&self, namespace: Option<&str>) -> Result<IndexUsage> {
        let inner = &*self.inner;
        retrying!(inner, "compute usage", inner.usage_once(namespace))
    }

    /// One statement: candidates ranked and locked (`FOR UPDATE SKIP LOCKED`), cut by a
    /// running sum, deleted.
    async fn evict(&self, batch: &EvictionBatch) -> Result<Vec<EntryMeta>> {
        let sql = evict_sql(batch)?;
        if batch.max_entries == 0 {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        let mut removed = retrying!(inner, "evict entries", inner.delete_matching_once(&sql))?;
        batch.sort_victims(&mut removed)?;
        Ok(removed)
    }

    async fn count_blob_references(&self, ids: &[BlobId]) -> Result<Vec<u64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(BlobId::as_str).collect();
        let inner = &*self.inner;
        retrying!(
            inner,
            "count blob references",
            inner.count_blob_references_once(&ids)
        )
    }

    /// See [`lock`](crate#key-locks): a session-level advisory lock on a connection of the
    /// separate key-lock pool.
    async fn try_lock_key(&self, key: &CacheKey) -> Result<Option<Box<dyn KeyLock>>> {
        let inner = &*self.inner;
        let lock_id = lock::lock_id(inner.config.schema(), key);
        let lock = retrying!(
            inner,
            format_args!("lock key {key}"),
            lock::try_lock_once(&inner.lock_pool, lock_id, key)
        )?;
        Ok(lock.map(|l| Box::new(l) as Box<dyn KeyLock>))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cachet_core::FieldCondition;
    use cachet_core::testing::metadata::{sample_record, test_key};
    use serde_json::json;

    #[test]
    fn runs_split_where_a_key_repeats() {
        let keys: Vec<CacheKey> = ["a", "b", "a", "c", "c", "d"]
            .iter()
            .map(|id| test_key("", id))
            .collect();
        assert_eq!(distinct_key_runs(keys.iter()), vec![0..2, 2..4, 4..6]);
        assert_eq!(distinct_key_runs(keys[..2].iter()), vec![0..2]);
        assert!(distinct_key_runs(std::iter::empty()).is_empty());
    }

    /// The plan of `sql` on the schema `schema`, with sequential scans off when `no_seqscan`.
    async fn explain(url: &str, schema: &str, sql: &Sql, no_seqscan: bool) -> String {
        let mut conn = PgConnection::connect(url).await.unwrap();
        if no_seqscan {
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut conn)
                .await
                .unwrap();
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET search_path TO {}",
            crate::config::quote_ident(schema)
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let explain = Sql {
            text: format!("EXPLAIN {}", sql.text),
            args: sql.args.clone(),
        };
        let lines: Vec<String> = explain
            .query()
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        lines.join("\n")
    }

    /// On an index of 3 000 entries that all have tags, params and user metadata (so the partial
    /// GIN indexes hold every row), the SQL `list` and `delete_matching` send for a tag or a
    /// field equality is answered by the GIN indexes. An `in` list is a disjunction of
    /// containments, which the planner answers with a `BitmapOr` of GIN scans once the table is
    /// large enough to beat a sequential scan; here that is checked with sequential scans off.
    #[tokio::test]
    async fn tag_and_field_equality_filters_use_the_gin_indexes() {
        let Some(url) = cachet_core::testing::service_env("DATABASE_URL") else {
            return;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let schema = format!("t_unit_gin_{}_{nanos}", std::process::id());
        let index = PostgresConfig::from_url(&url)
            .unwrap()
            .with_schema(schema.clone())
            .with_max_connections(2)
            .open()
            .await
            .unwrap();
        let records: Vec<EntryRecord> = (0..3_000)
            .map(|i| {
                let mut record = sample_record(&test_key("ns", &format!("k{i:05}")));
                let kind = if i % 100 == 0 { "rare" } else { "common" };
                record.meta.tags = vec![kind.into(), "all".into()];
                record.meta.user_metadata =
                    Some(json!({ "model": kind, "score": i, "done": i % 100 == 0 }));
                record
            })
            .collect();
        index
            .put_many(records, WriteCondition::Always)
            .await
            .unwrap();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ANALYZE {}.entries",
            crate::config::quote_ident(&schema)
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let meta = |text: &str| FieldCondition::parse(text).unwrap();
        let (tags, metadata, params) = (
            "entries_tags",
            "entries_user_metadata_jsonb",
            "entries_params_jsonb",
        );
        // (index, sequential scans off, filter)
        let cases = [
            (tags, false, EntryFilter::all().tag("rare")),
            (
                tags,
                false,
                EntryFilter::all().namespace("ns").tag("rare").tag("all"),
            ),
            (
                metadata,
                false,
                EntryFilter::all().metadata(meta("model=rare")),
            ),
            (
                metadata,
                false,
                EntryFilter::all().metadata(meta("score=1500")),
            ),
            (
                metadata,
                false,
                EntryFilter::all().metadata(meta("score=1500.0")),
            ),
            (
                metadata,
                false,
                EntryFilter::all().metadata(meta("done=true")),
            ),
            (
                metadata,
                false,
                EntryFilter::all().metadata(meta("done!=false")),
            ),
            (
                metadata,
                false,
                EntryFilter::all()
                    .metadata(meta("model=rare"))
                    .metadata(meta("score>=100")),
            ),
            (params, false, EntryFilter::all().param(meta("id=k00042"))),
            (
                metadata,
                true,
                EntryFilter::all().metadata(meta("score in (7, 8, 9)")),
            ),
        ];
        for (index_name, no_seqscan, filter) in cases {
            let list = list_sql(&ListQuery::matching(filter.clone())).unwrap();
            let delete = delete_matching_sql(&filter, 100).unwrap();
            for (what, sql) in [("list", &list), ("delete_matching", &delete)] {
                let plan = explain(&url, &schema, sql, no_seqscan).await;
                assert!(
                    plan.contains(index_name),
                    "{what} with {filter:?} should use {index_name}:\n{}\n{plan}",
                    sql.text
                );
            }
        }
        index.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            crate::config::quote_ident(&schema)
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}
