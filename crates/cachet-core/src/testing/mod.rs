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
pub mod metadata;
