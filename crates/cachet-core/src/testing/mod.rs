//! Conformance suites: one `pub async fn` per promised behavior, plus `run_all`.
//!
//! A backend crate runs them in its own tests against the real service:
//! ```ignore
//! #[tokio::test]
//! async fn sqlite_passes_metadata_conformance() {
//!     cachet_core::testing::metadata::run_all(|| async { make_backend().await }).await;
//! }
//! ```
pub mod blob;
pub mod eviction;
pub mod management;
pub mod metadata;

/// Reads the environment variable that points a test at an external service (for example
/// `DATABASE_URL` for PostgreSQL, `S3_ENDPOINT` for an S3-compatible server).
///
/// - Set: returns its value.
/// - Missing under CI (`CI` is `true`, `1` or `yes`): panics, naming the variable and how to
///   start the service, because a CI run must never pass by silently skipping a backend.
/// - Missing elsewhere: prints a notice to stderr and returns `None`, so `cargo test` on a
///   machine without the service still runs everything else (`cargo xtask services up`
///   starts them).
pub fn service_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            let ci = std::env::var("CI")
                .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
            let hint = format!(
                "{name} is not set: start the test services with `cargo xtask services up` \
                 and source what it prints (or run `cargo xtask test`, which does both)"
            );
            if ci {
                panic!("{hint} (CI=true: tests that need a service never skip)");
            }
            eprintln!("skipped: {hint}");
            None
        }
    }
}
