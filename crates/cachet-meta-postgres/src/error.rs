//! Mapping sqlx failures to `cachet_core::Error` by meaning, and the retry policy.

use std::fmt;
use std::time::{Duration, Instant};

use cachet_core::Error;

/// The backend name in errors and messages.
pub(crate) const BACKEND: &str = "postgres";

/// Serialization failures / deadlocks retried inside one call before `Error::Conflict`.
const MAX_CONFLICT_RETRIES: u32 = 5;

/// A failure inside one attempt of an operation: from sqlx (classified by [`Retry`]), or
/// already a cachet error (never retried).
#[derive(Debug)]
pub(crate) enum Fail {
    Sql(sqlx::Error),
    Done(Error),
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Done(e)
    }
}

/// What a sqlx error means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The server cannot be reached, is restarting, or is out of connections: retry with
    /// backoff within the budget, then `Error::Unavailable`.
    Transient,
    /// Unavailable, but retrying inside the call would not help (the pool was closed, a
    /// statement timed out): `Error::Unavailable` at once.
    UnavailableNow,
    /// A serialization failure or deadlock: retry a few times, then `Error::Conflict`.
    Serialization,
    /// Anything else: `Error::Backend`.
    Other,
}

pub(crate) fn classify(e: &sqlx::Error) -> Class {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => {
            Class::Transient
        }
        sqlx::Error::PoolClosed => Class::UnavailableNow,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("40001" | "40P01") => Class::Serialization,
            // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections,
            // configuration_limit_exceeded
            Some("57P01" | "57P02" | "57P03" | "53300" | "53400") => Class::Transient,
            Some(code) if code.starts_with("08") => Class::Transient,
            // query_canceled (statement_timeout), lock_not_available
            Some("57014" | "55P03") => Class::UnavailableNow,
            _ => Class::Other,
        },
        // A connection cut mid-message surfaces as a protocol error.
        sqlx::Error::Protocol(msg) if msg.contains("unexpected end") || msg.contains("closed") => {
            Class::Transient
        }
        _ => Class::Other,
    }
}

/// A sqlx error plus what cachet was doing, on which server.
#[derive(Debug)]
pub(crate) struct PgOpError {
    pub op: String,
    pub server: String,
    pub hint: Option<&'static str>,
    pub source: sqlx::Error,
}

impl fmt::Display for PgOpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}: {}", self.op, self.server, self.source)?;
        if let Some(hint) = self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PgOpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Maps a sqlx error met while doing `op` on `server`, by meaning.
pub(crate) fn pg_error(op: impl fmt::Display, server: &str, e: sqlx::Error) -> Error {
    let class = classify(&e);
    let wrap = |hint| {
        Box::new(PgOpError {
            op: op.to_string(),
            server: server.to_owned(),
            hint,
            source: e,
        })
    };
    match class {
        Class::Transient | Class::UnavailableNow => Error::Unavailable {
            backend: BACKEND.into(),
            source: wrap(Some(
                "the server could not be reached or is busy; retry later, or raise retry_budget",
            )),
        },
        Class::Serialization => Error::Conflict {
            what: format!("{op} on {server}"),
            detail: format!(
                "a concurrent transaction kept conflicting ({}); retry",
                wrap(None)
            ),
        },
        Class::Other => Error::Backend {
            backend: BACKEND.into(),
            source: wrap(None),
        },
    }
}

/// The retry state of one call: a deadline for transient failures, a count for conflicts.
pub(crate) struct Retry {
    deadline: Instant,
    pause: Duration,
    conflicts: u32,
}

impl Retry {
    pub fn new(budget: Duration) -> Self {
        Retry {
            deadline: Instant::now() + budget,
            pause: Duration::from_millis(10),
            conflicts: 0,
        }
    }

    /// Decides what to do after a failed attempt: `Ok(pause)` when the attempt should be
    /// repeated after `pause`, else the error to return (mapped by the caller with
    /// [`pg_error`], which names the operation).
    pub fn next(&mut self, fail: Fail) -> Result<Duration, Fail> {
        let e = match fail {
            Fail::Done(e) => return Err(Fail::Done(e)),
            Fail::Sql(e) => e,
        };
        match classify(&e) {
            Class::Transient => {
                let now = Instant::now();
                if now >= self.deadline {
                    return Err(Fail::Sql(e));
                }
                let pause = self.pause.min(self.deadline - now);
                self.pause = (self.pause * 2).min(Duration::from_secs(1));
                tracing::debug!(error = %e, ?pause, "retrying after a transient failure");
                Ok(pause)
            }
            Class::Serialization if self.conflicts < MAX_CONFLICT_RETRIES => {
                self.conflicts += 1;
                Ok(Duration::from_millis(2u64 << self.conflicts))
            }
            _ => Err(Fail::Sql(e)),
        }
    }
}

/// The error a failed operation returns.
pub(crate) fn finish(fail: Fail, op: &dyn fmt::Display, server: &str) -> Error {
    match fail {
        Fail::Done(e) => e,
        Fail::Sql(e) => pg_error(op, server, e),
    }
}

/// Runs `$attempt` (an expression producing a future of `Result<T, Fail>`) until it succeeds
/// or [`Retry`] gives up; evaluates to `cachet_core::Result<T>`.
macro_rules! retrying {
    ($inner:expr, $op:expr, $attempt:expr) => {{
        let inner = $inner;
        let mut retry = $crate::error::Retry::new(inner.config.retry_budget());
        loop {
            let fail = match $attempt.await {
                Ok(value) => break Ok(value),
                Err(fail) => fail,
            };
            match retry.next(fail) {
                Ok(pause) => tokio::time::sleep(pause).await,
                Err(fail) => break Err($crate::error::finish(fail, &$op, &inner.server)),
            }
        }
    }};
}
pub(crate) use retrying;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_and_pool_timeouts_are_transient() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&io), Class::Transient);
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Class::Transient);
        assert!(matches!(
            pg_error("get", "h", sqlx::Error::PoolTimedOut),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            pg_error("get", "h", sqlx::Error::RowNotFound),
            Error::Backend { .. }
        ));
    }
}
