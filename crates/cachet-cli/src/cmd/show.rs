//! `cachet show KEY`: everything the index knows about one entry.

use anyhow::{Context as _, Result};
use cachet::{EntryMeta, Timestamp};

use super::list::{location_cell, namespace_cell, tags_cell};
use crate::output::{Cell, Record};
use crate::{Context, Outcome};

/// Options of `cachet show`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Shows the entry's metadata (also of an expired entry, marked so), without reading its value: \
key, namespace, data type, sizes, compression, location (inline or blob), content digest, \
times, reads, TTL left, tags, parameters, user metadata, signature.

Examples:
  cachet show 5898b2382767579442f2e72022d20a4b
  cachet show --namespace models latest --format json | jq .metadata")]
pub struct ShowArgs {
    /// The entry's key, as `list` shows it.
    pub key: String,
    /// The entry's namespace (default: the default namespace).
    #[arg(short, long, default_value = "")]
    pub namespace: String,
}

/// Runs `cachet show`.
///
/// # Errors
/// A missing key, an entry whose signature does not verify, an unreadable index.
pub async fn run(args: ShowArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_cache().await?;
    let key = super::entry_key(&args.namespace, &args.key)?;
    let meta = cache
        .store()
        .metadata(&key)
        .await
        .with_context(|| format!("reading the metadata of {key}"))?
        .with_context(|| format!("no entry with key {key}"))?;
    ctx.record(&entry_record(&meta, cache.store().now()))?;
    Ok(Outcome::Success)
}

/// An entry's metadata as a record (shared with `put`).
pub fn entry_record(m: &EntryMeta, now: Timestamp) -> Record {
    let mut r = Record::new();
    r.field("key", "key", Cell::text(m.key.id()));
    r.field("namespace", "namespace", namespace_cell(m.key.namespace()));
    r.field("data_type", "type", Cell::text(m.data_type.as_str()));
    r.field(
        "type_name",
        "rust type",
        Cell::opt_text(m.type_name.clone()),
    );
    r.field("raw_bytes", "raw size", Cell::Size(m.raw_size));
    r.field("stored_bytes", "stored size", Cell::Size(m.stored_size));
    r.field(
        "compression",
        "compression",
        Cell::text(format!("{:?}", m.compression).to_lowercase()),
    );
    r.field("location", "location", location_cell(&m.location));
    r.field("digest", "digest", Cell::text(m.digest.to_string()));
    r.field("created_at", "created", Cell::Time(m.created_at));
    r.field("updated_at", "updated", Cell::Time(m.updated_at));
    r.field("accessed_at", "last read", Cell::Time(m.accessed_at));
    r.field("hits", "reads", Cell::UInt(m.access_count));
    r.field(
        "expires_at",
        "expires",
        m.expires_at.map_or(Cell::Null, Cell::Time),
    );
    r.field(
        "ttl_left_ms",
        "ttl left",
        Cell::Remaining {
            until: m.expires_at,
            now,
        },
    );
    r.field("tags", "tags", tags_cell(&m.tags));
    r.field(
        "params",
        "params",
        Cell::Json(m.params.clone().unwrap_or(serde_json::Value::Null)),
    );
    r.field(
        "metadata",
        "metadata",
        Cell::Json(m.user_metadata.clone().unwrap_or(serde_json::Value::Null)),
    );
    r.field("signed", "signed", Cell::Bool(m.signature.is_some()));
    r
}
