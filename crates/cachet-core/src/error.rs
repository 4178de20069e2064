//! The one error type shared by every cachet crate.

use std::fmt;

/// A boxed error from a backend's own library (rusqlite, std::io, object_store, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout cachet.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in cachet, by meaning rather than by origin.
///
/// Every message names what failed (key, path, field) and, where there is one, what to do.
/// Use [`Error::is_retryable`] to decide whether trying again can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The entry, blob or object does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for (a key, a blob id, a path).
        what: String,
    },
    /// The target already exists and overwriting was not requested.
    #[error("already exists: {what}")]
    AlreadyExists {
        /// What already exists.
        what: String,
    },
    /// Stored data failed a structural or checksum check: it was damaged after it was written.
    #[error("corrupt data in {what}: {detail}; the entry cannot be read (run verify/repair)")]
    Corrupt {
        /// The entry, blob or file that is damaged.
        what: String,
        /// What check failed.
        detail: String,
    },
    /// An entry's signature is missing or does not match: it was not written by a holder of the
    /// signing key, or was modified afterwards.
    #[error("entry {key} failed signature verification: {detail}")]
    Tampered {
        /// The entry's key.
        key: String,
        /// Why verification failed.
        detail: String,
    },
    /// The value exists but is not of the requested type.
    #[error("entry {key} holds {found}, not {expected}")]
    TypeMismatch {
        /// The entry's key.
        key: String,
        /// The type the caller asked for.
        expected: String,
        /// What the entry holds, or why decoding failed.
        found: String,
    },
    /// A service could not be reached or is temporarily unable to answer.
    #[error("{backend} is unavailable: {source}")]
    Unavailable {
        /// Which backend.
        backend: String,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// A concurrent operation holds the resource; the operation may succeed when retried.
    #[error("conflict on {what}: {detail}")]
    Conflict {
        /// The contended resource (a key, a blob id).
        what: String,
        /// What happened.
        detail: String,
    },
    /// The backend does not support this operation (see its `Capabilities`).
    #[error("unsupported: {what}")]
    Unsupported {
        /// The unsupported operation or option.
        what: String,
    },
    /// A configuration value or URL is invalid. `field` names the option to fix.
    #[error("invalid configuration for `{field}`: {message}")]
    Config {
        /// The option, URL component or builder method at fault.
        field: String,
        /// What is wrong with it and what is accepted.
        message: String,
    },
    /// A value could not be encoded for storage.
    #[error("cannot encode value for {key}: {detail}")]
    Encode {
        /// The entry's key.
        key: String,
        /// Why encoding failed.
        detail: String,
    },
    /// A value computation supplied by the caller failed (see `try_get_with`).
    #[error("the computation for {key} failed: {source}")]
    Compute {
        /// The entry's key.
        key: String,
        /// The caller's error.
        #[source]
        source: BoxError,
    },
    /// A local I/O operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Any other failure of a backend's library.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// Which backend.
        backend: String,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// `true` when the same operation may succeed if tried again (a busy or unreachable service,
    /// a conflict with a concurrent writer).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Conflict { .. } => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    /// `true` when the error means stored data is damaged or forged (corrupt or tampered).
    pub fn is_integrity_failure(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::Tampered { .. })
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(what: impl fmt::Display) -> Self {
        Error::NotFound {
            what: what.to_string(),
        }
    }

    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: impl fmt::Display, detail: impl fmt::Display) -> Self {
        Error::Corrupt {
            what: what.to_string(),
            detail: detail.to_string(),
        }
    }

    /// Shorthand for [`Error::Config`].
    pub fn config(field: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Config {
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }

    /// Shorthand for [`Error::Backend`].
    pub fn backend(backend: impl fmt::Display, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            backend: backend.to_string(),
            source: source.into(),
        }
    }
}
