//! # cachet-meta-postgres
//!
//! WIP
#![forbid(unsafe_code)]

mod backend;
mod config;
mod error;
mod lock;
mod schema;

pub use backend::PostgresMetadata;
pub use config::PostgresConfig;
pub use schema::SCHEMA_VERSION;
