//! The index schema and its embedded migrations.
//!
//! The schema version lives in the database header (`PRAGMA user_version`), next to an
//! `application_id` that marks the file as a cachet index. [`migrate`] brings a database to
//! [`SCHEMA_VERSION`] by applying every later step of [`MIGRATIONS`] in one `BEGIN IMMEDIATE`
//! transaction, so when several processes open a new file at once exactly one applies them and
//! the others, waiting on the write lock, find the work done.

use rusqlite::{Connection, TransactionBehavior};

use cachet_core::{Error, Result};

use crate::error::sqlite_error;

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = 2;

/// `PRAGMA application_id` of a cachet index: ASCII `cach`.
pub(crate) const APPLICATION_ID: i32 = 0x6361_6368;

/// One step of the schema history.
pub(crate) struct Migration {
    /// The version the database has after this step.
    pub version: i64,
    /// What the step does, for logs.
    pub description: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every migration, in order. Append only: a released step is never edited.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "entries table and blob registry",
        sql: V1,
    },
    Migration {
        version: 2,
        description: "entries.blob_etag (the blob store's ETag of the entry's blob)",
        sql: V2,
    },
];

/// Version 1.
///
/// `entries` is keyed by `(namespace, id)`; `blob_id` NULL means the value is inline in
/// `inline_data` (kept as the last column so metadata-only reads never touch its overflow
/// pages). Sizes and counts are `u64` in Rust, stored as INTEGER (checked, never wrapped);
/// timestamps are milliseconds since the Unix epoch; `params` and `user_metadata` are JSON
/// text, `tags` a JSON array. Namespace listing uses the primary key's leading column, so there
/// is no separate namespace index. `blobs` is the blob registry of the GC protocol.
const V1: &str = "
CREATE TABLE entries (
    namespace     TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    params        TEXT,
    blob_id       TEXT,
    data_type     TEXT    NOT NULL,
    type_name     TEXT,
    compression   TEXT    NOT NULL,
    raw_size      INTEGER NOT NULL,
    stored_size   INTEGER NOT NULL,
    digest        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    accessed_at   INTEGER NOT NULL,
    access_count  INTEGER NOT NULL,
    expires_at    INTEGER,
    tags          TEXT    NOT NULL,
    user_metadata TEXT,
    signature     TEXT,
    inline_data   BLOB,
    PRIMARY KEY (namespace, id)
);
CREATE INDEX entries_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX entries_accessed_at ON entries (accessed_at);
CREATE INDEX entries_blob_id ON entries (blob_id) WHERE blob_id IS NOT NULL;
CREATE TABLE blobs (
    id          TEXT    NOT NULL PRIMARY KEY,
    size        INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    claimed_at  INTEGER
) WITHOUT ROWID;
";

/// Version 2: `entries.blob_etag`.
///
/// `ALTER TABLE ... ADD COLUMN` would put the column after `inline_data`, and SQLite reads a
/// row's columns in order: every metadata read of an inline entry would then walk the value's
/// overflow pages to reach it. So the table is rebuilt with the new column before
/// `inline_data` (one copy of the index, inside the migration transaction).
const V2: &str = "
CREATE TABLE entries_v2 (
    namespace     TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    params        TEXT,
    blob_id       TEXT,
    data_type     TEXT    NOT NULL,
    type_name     TEXT,
    compression   TEXT    NOT NULL,
    raw_size      INTEGER NOT NULL,
    stored_size   INTEGER NOT NULL,
    digest        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    accessed_at   INTEGER NOT NULL,
    access_count  INTEGER NOT NULL,
    expires_at    INTEGER,
    tags          TEXT    NOT NULL,
    user_metadata TEXT,
    signature     TEXT,
    blob_etag     TEXT,
    inline_data   BLOB,
    PRIMARY KEY (namespace, id)
);
INSERT INTO entries_v2 (namespace, id, params, blob_id, data_type, type_name, compression,
    raw_size, stored_size, digest, created_at, updated_at, accessed_at, access_count,
    expires_at, tags, user_metadata, signature, blob_etag, inline_data)
SELECT namespace, id, params, blob_id, data_type, type_name, compression, raw_size,
    stored_size, digest, created_at, updated_at, accessed_at, access_count, expires_at, tags,
    user_metadata, signature, NULL, inline_data
FROM entries;
DROP TABLE entries;
ALTER TABLE entries_v2 RENAME TO entries;
CREATE INDEX entries_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX entries_accessed_at ON entries (accessed_at);
CREATE INDEX entries_blob_id ON entries (blob_id) WHERE blob_id IS NOT NULL;
";

/// What the database header and schema say, read in one snapshot.
struct Header {
    application_id: i32,
    user_version: i64,
    /// Tables, indexes, views and triggers in the schema.
    objects: i64,
}

/// One statement, hence one read snapshot: a header and a schema read separately could
/// straddle another process's migration and look like a foreign database.
const HEADER_SQL: &str = "SELECT (SELECT application_id FROM pragma_application_id), \
     (SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_schema)";

fn read_header(conn: &Connection, path: &str) -> Result<Header> {
    let result = conn.query_row(HEADER_SQL, [], |row| {
        Ok(Header {
            application_id: row.get::<_, i64>(0)? as i32,
            user_version: row.get(1)?,
            objects: row.get(2)?,
        })
    });
    match result {
        Ok(header) => Ok(header),
        Err(e) if is_not_a_database(&e) => Err(not_a_cachet_index(
            path,
            "the file is not a SQLite database",
        )),
        Err(e) => Err(sqlite_error("read the index header", path, e)),
    }
}

pub(crate) fn is_not_a_database(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase)
    )
}

pub(crate) fn not_a_cachet_index(path: &str, why: &str) -> Error {
    Error::config(
        "path",
        format!(
            "{path} is not a cachet index ({why}); point the index at a cachet index file or \
             at a new file"
        ),
    )
}

/// Refuses a database that is not ours, or that a newer cachet wrote.
fn check_header(header: &Header, path: &str) -> Result<()> {
    if header.application_id == APPLICATION_ID {
        if header.user_version > SCHEMA_VERSION {
            return Err(Error::config(
                "path",
                format!(
                    "the index at {path} has schema version {}, but this build of \
                     cachet-meta-sqlite understands versions up to {SCHEMA_VERSION}; upgrade \
                     cachet to open it",
                    header.user_version
                ),
            ));
        }
        return Ok(());
    }
    if header.application_id != 0 {
        return Err(not_a_cachet_index(
            path,
            &format!(
                "its application_id is {:#010x}, another program's",
                header.application_id
            ),
        ));
    }
    if header.user_version != 0 {
        return Err(not_a_cachet_index(
            path,
            &format!(
                "it has user_version {} but no cachet marker",
                header.user_version
            ),
        ));
    }
    if header.objects > 0 {
        return Err(not_a_cachet_index(
            path,
            &format!(
                "it already holds {} tables or indexes and no cachet marker",
                header.objects
            ),
        ));
    }
    Ok(())
}

/// Checks that the database is a cachet index (or empty) without changing it.
pub(crate) fn check(conn: &Connection, path: &str) -> Result<()> {
    let header = read_header(conn, path)?;
    check_header(&header, path)
}

/// Brings the database to [`SCHEMA_VERSION`]; a no-op (and no write lock) when it is there.
pub(crate) fn migrate(conn: &mut Connection, path: &str) -> Result<()> {
    let header = read_header(conn, path)?;
    check_header(&header, path)?;
    if header.application_id == APPLICATION_ID && header.user_version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sqlite_error("lock the index to migrate it", path, e))?;
    // Another process may have migrated while we waited for the lock: look again.
    let header = read_header(&tx, path)?;
    check_header(&header, path)?;
    let from = if header.application_id == APPLICATION_ID {
        header.user_version
    } else {
        0
    };
    for step in MIGRATIONS.iter().filter(|m| m.version > from) {
        tracing::info!(
            path,
            version = step.version,
            "migrating the cachet index: {}",
            step.description
        );
        tx.execute_batch(step.sql).map_err(|e| {
            sqlite_error(
                format!("apply migration {} ({})", step.version, step.description),
                path,
                e,
            )
        })?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
        .map_err(|e| sqlite_error("record the schema version", path, e))?;
    tx.commit()
        .map_err(|e| sqlite_error("commit the migration", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_consecutively_up_to_schema_version() {
        for (i, step) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                step.version,
                i as i64 + 1,
                "migration {i} has the wrong version"
            );
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }
}
