//! Mapping object_store errors to `cachet_core::Error` by meaning.

use std::fmt;

use cachet_core::Error;
use object_store::client::{HttpError, HttpErrorKind};

/// An object_store failure with the operation and the object it was about.
#[derive(Debug)]
pub(crate) struct S3Failure {
    /// What was being done, e.g. `put of s3://bucket/key`.
    what: String,
    source: object_store::Error,
}

impl fmt::Display for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.what, self.source)
    }
}

impl std::error::Error for S3Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Maps `err`, raised by `backend` (`"s3"`, `"gcs"`, `"azure"`) while doing `what` (an operation and an `s3://bucket/key` location).
///
/// - `NotFound` → [`Error::NotFound`];
/// - `Precondition`, `AlreadyExists` → [`Error::Conflict`] (callers that expect them handle
///   them before mapping);
/// - `PermissionDenied` (403), `Unauthenticated` (401) → [`Error::Config`] on `credentials`;
/// - connection failures, timeouts, 5xx and 429 answers left after the retry budget →
///   [`Error::Unavailable`] (retryable);
/// - anything else → [`Error::Backend`].
pub(crate) fn map_error(backend: &str, what: impl Into<String>, err: object_store::Error) -> Error {
    let what = what.into();
    match err {
        object_store::Error::NotFound { .. } => Error::not_found(what),
        object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. } => {
            Error::Conflict {
                detail: format!("a concurrent write changed the object: {err}"),
                what,
            }
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Error::config(
            "credentials",
            format!(
                "{what} was refused ({err}); check the credentials (access_key_id, \
                 secret_access_key, session_token or the AWS_* variables), the region, and the \
                 bucket policy"
            ),
        ),
        other if is_transient(&other) => Error::Unavailable {
            backend: backend.to_string(),
            source: Box::new(S3Failure {
                what,
                source: other,
            }),
        },
        other => Error::backend(
            backend,
            S3Failure {
                what,
                source: other,
            },
        ),
    }
}

/// `true` when the failure says the service could not be reached or was busy: a transport
/// error (connect, request, timeout, interrupted), a 5xx or 429 status, or S3's
/// `InternalError`/`SlowDown` in a 200 answer.
///
/// object_store's retry error type is not public, so statuses are recognized from its
/// message ("Server returned non-2xx status code: 503 ...").
fn is_transient(err: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return !matches!(http.kind(), HttpErrorKind::Decode);
        }
        let text = e.to_string();
        if let Some(rest) = text.split("non-2xx status code: ").nth(1) {
            let code: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(code) = code.parse::<u16>() {
                return code >= 500 || code == 429;
            }
        }
        if text.contains("Server returned error response")
            && (text.contains("InternalError") || text.contains("SlowDown"))
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_and_precondition_map_by_meaning() {
        let nf = object_store::Error::NotFound {
            path: "p".into(),
            source: "gone".into(),
        };
        assert!(matches!(
            map_error("s3", "get of s3://b/p", nf),
            Error::NotFound { what } if what == "get of s3://b/p"
        ));
        let pre = object_store::Error::Precondition {
            path: "p".into(),
            source: "412".into(),
        };
        assert!(map_error("s3", "put", pre).is_retryable());
        let denied = object_store::Error::PermissionDenied {
            path: "p".into(),
            source: "403".into(),
        };
        assert!(matches!(
            map_error("s3", "put of s3://b/p", denied),
            Error::Config { field, message } if field == "credentials" && message.contains("s3://b/p")
        ));
    }

    #[test]
    fn status_5xx_in_a_generic_error_is_unavailable() {
        let e = object_store::Error::Generic {
            store: "S3",
            source: "Error performing GET http://x in 1s - Server returned non-2xx status code: \
                     503 Service Unavailable: busy"
                .into(),
        };
        assert!(matches!(
            map_error("s3", "get", e),
            Error::Unavailable { .. }
        ));
        let e = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 400 Bad Request: no".into(),
        };
        assert!(matches!(map_error("s3", "get", e), Error::Backend { .. }));
    }
}
