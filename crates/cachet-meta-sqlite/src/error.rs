//! Mapping rusqlite failures to `cachet_core::Error`, with the operation as context.

use std::fmt;

use cachet_core::Error;
use rusqlite::ErrorCode;

/// The backend name in errors and messages.
pub(crate) const BACKEND: &str = "sqlite";

/// A rusqlite error plus what cachet was doing, on which index.
#[derive(Debug)]
pub(crate) struct SqliteOpError {
    op: String,
    path: String,
    hint: Option<&'static str>,
    source: rusqlite::Error,
}

impl fmt::Display for SqliteOpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}: {}", self.op, self.path, self.source)?;
        if let Some(hint) = self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SqliteOpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Maps a rusqlite error met while doing `op` on the index at `path`.
///
/// - `SQLITE_BUSY` / `SQLITE_LOCKED` (another connection kept its lock past the busy timeout)
///   become `Error::Unavailable`, which is retryable;
/// - `SQLITE_CORRUPT` / `SQLITE_NOTADB` become `Error::Corrupt` naming the file;
/// - anything else becomes `Error::Backend { backend: "sqlite", .. }`.
pub(crate) fn sqlite_error(op: impl fmt::Display, path: &str, e: rusqlite::Error) -> Error {
    let op = op.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Unavailable {
            backend: BACKEND.into(),
            source: Box::new(SqliteOpError {
                op,
                path: path.to_owned(),
                hint: Some(
                    "another connection held the lock longer than busy_timeout; retry, or raise \
                     busy_timeout",
                ),
                source: e,
            }),
        },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            Error::corrupt(format!("SQLite index {path}"), format!("{op}: {e}"))
        }
        _ => Error::Backend {
            backend: BACKEND.into(),
            source: Box::new(SqliteOpError {
                op,
                path: path.to_owned(),
                hint: None,
                source: e,
            }),
        },
    }
}
