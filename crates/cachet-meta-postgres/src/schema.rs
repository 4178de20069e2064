//! The index schema and its embedded, append-only migrations.
//!
//! The schema version lives in the table `cachet_schema_version` (one row) in the configured
//! schema. [`migrate`] runs in one transaction that first takes a transaction-level advisory
//! lock ([`MIGRATION_LOCK`]): when many processes open a fresh schema at once, one creates
//! it and the others, waiting on the lock, find the work done. DDL is transactional in
//! PostgreSQL, so a failed migration leaves nothing behind.

use sqlx::{Connection, PgConnection, Row};

use cachet_core::Error;

use crate::config::quote_ident;
use crate::error::Fail;

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = 1;

/// The `pg_advisory_xact_lock` key that serializes migrations in a database: ASCII `cachetmg`.
pub(crate) const MIGRATION_LOCK: i64 = 0x6361_6368_6574_6d67;

/// One step of the schema history.
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static [&'static str],
}

/// Every migration, in order. Append only: a released step is never edited.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "entries table with JSONB copies and GIN indexes, blob registry",
    sql: V1,
}];

/// Version 1.
///
/// The same columns as the SQLite index, plus `blob_etag` and JSONB copies of the JSON
/// columns. `namespace`, `id` and `blob_id` use the `C` collation so that ordering is byte
/// order. `params` / `user_metadata` keep the exact JSON text that `get` returns (entry
/// signatures cover that text; `jsonb` would normalize numbers, drop `-0.0`'s sign and refuse
/// `\u0000`); `params_jsonb` / `user_metadata_jsonb` are copies for queries (NULL when the
/// text holds `\u0000`), with `jsonb_path_ops` GIN indexes. `tags` is a `text[]` with a GIN
/// index. The GIN indexes are partial (only rows that have params, user metadata or tags), so
/// entries without them cost no GIN maintenance on write: a query using them must imply the
/// predicate (`@>` on a JSONB column does; a tag query adds `cardinality(tags) > 0`). Sizes and counts are BIGINT (refused above `i64::MAX`), timestamps BIGINT ms.
const V1: &[&str] = &[
    "CREATE TABLE entries (
        namespace           TEXT COLLATE \"C\" NOT NULL,
        id                  TEXT COLLATE \"C\" NOT NULL,
        params              TEXT,
        params_jsonb        JSONB,
        blob_id             TEXT COLLATE \"C\",
        blob_etag           TEXT,
        data_type           TEXT    NOT NULL,
        type_name           TEXT,
        compression         TEXT    NOT NULL,
        raw_size            BIGINT  NOT NULL,
        stored_size         BIGINT  NOT NULL,
        digest              TEXT    NOT NULL,
        created_at          BIGINT  NOT NULL,
        updated_at          BIGINT  NOT NULL,
        accessed_at         BIGINT  NOT NULL,
        access_count        BIGINT  NOT NULL,
        expires_at          BIGINT,
        tags                TEXT[]  NOT NULL,
        user_metadata       TEXT,
        user_metadata_jsonb JSONB,
        signature           TEXT,
        inline_data         BYTEA,
        PRIMARY KEY (namespace, id)
    )",
    "CREATE INDEX entries_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL",
    "CREATE INDEX entries_accessed_at ON entries (accessed_at)",
    "CREATE INDEX entries_blob_id ON entries (blob_id) WHERE blob_id IS NOT NULL",
    "CREATE INDEX entries_params_jsonb ON entries USING GIN (params_jsonb jsonb_path_ops) \
     WHERE params_jsonb IS NOT NULL",
    "CREATE INDEX entries_user_metadata_jsonb ON entries \
     USING GIN (user_metadata_jsonb jsonb_path_ops) WHERE user_metadata_jsonb IS NOT NULL",
    "CREATE INDEX entries_tags ON entries USING GIN (tags) WHERE cardinality(tags) > 0",
    "CREATE TABLE blobs (
        id          TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
        size        BIGINT NOT NULL,
        lease_until BIGINT NOT NULL,
        claimed_at  BIGINT
    )",
];

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS cachet_schema_version (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version    BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// Reads the schema version without locking; `None` when the schema has no version table.
async fn read_version(conn: &mut PgConnection) -> Result<Option<i64>, Fail> {
    let exists: bool = sqlx::query("SELECT to_regclass('cachet_schema_version') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(None);
    }
    let row = sqlx::query("SELECT version FROM cachet_schema_version")
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(row) => Some(row.try_get(0)?),
        None => Some(0),
    })
}

fn newer_schema(schema: &str, version: i64) -> Error {
    Error::config(
        "schema",
        format!(
            "the index in schema `{schema}` has schema version {version}, but this build of \
             cachet-meta-postgres understands versions up to {SCHEMA_VERSION}; upgrade cachet \
             to open it"
        ),
    )
}

/// Brings `schema` to [`SCHEMA_VERSION`], creating it if missing. A no-op (and no lock)
/// when it is there already.
pub(crate) async fn migrate(conn: &mut PgConnection, schema: &str) -> Result<(), Fail> {
    match read_version(conn).await? {
        Some(v) if v == SCHEMA_VERSION => return Ok(()),
        Some(v) if v > SCHEMA_VERSION => return Err(newer_schema(schema, v).into()),
        _ => {}
    }
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    // Only when missing: `CREATE SCHEMA IF NOT EXISTS` needs the CREATE privilege on the
    // database even when the schema exists.
    let schema_exists: bool =
        sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
    if !schema_exists {
        let create_schema = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema));
        sqlx::query(sqlx::AssertSqlSafe(create_schema))
            .execute(&mut *tx)
            .await?;
    }
    // Another process may have migrated while we waited for the lock: look again.
    let current = read_version(&mut tx).await?;
    if current.is_none() {
        let foreign: bool = sqlx::query(
            "SELECT to_regclass('entries') IS NOT NULL OR to_regclass('blobs') IS NOT NULL",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if foreign {
            return Err(Error::config(
                "schema",
                format!(
                    "schema `{schema}` already has an `entries` or `blobs` table but no \
                     cachet_schema_version table: it is not a cachet index; choose another \
                     schema (cachet_schema=...)"
                ),
            )
            .into());
        }
        sqlx::query(VERSION_TABLE).execute(&mut *tx).await?;
    }
    let current = current.unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(newer_schema(schema, current).into());
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        tracing::info!(
            schema,
            version = migration.version,
            description = migration.description,
            "migrating the PostgreSQL index"
        );
        for statement in migration.sql {
            sqlx::query(*statement).execute(&mut *tx).await?;
        }
    }
    sqlx::query(
        "INSERT INTO cachet_schema_version (singleton, version) VALUES (TRUE, $1) \
         ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, updated_at = now()",
    )
    .bind(SCHEMA_VERSION)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
