//! `cachet list`: entries, streamed page by page.

use anyhow::Result;
use cachet::{EntryFilter, EntryMeta, Location, Timestamp};

use crate::output::{Cell, Column};
use crate::{Context, Outcome};

/// Options of `cachet list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this namespace.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Only keys starting with this prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// At most this many entries (0: no limit).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// The columns of an entry listing (shared by `list` and other listings of entries).
pub const ENTRY_COLUMNS: &[Column] = &[
    Column::left("key", "KEY"),
    Column::left("namespace", "NAMESPACE"),
    Column::left("data_type", "TYPE"),
    Column::right("raw_bytes", "RAW"),
    Column::right("stored_bytes", "STORED"),
    Column::right("created_at", "CREATED"),
    Column::right("accessed_at", "ACCESSED"),
    Column::right("ttl_left_ms", "TTL"),
    Column::right("hits", "HITS"),
    Column::left("expires_at", "EXPIRES").verbose(),
    Column::left("tags", "TAGS").verbose(),
    Column::left("type_name", "RUST TYPE").machine(),
    Column::left("location", "LOCATION").machine(),
    Column::left("digest", "DIGEST").machine(),
    Column::left("params", "PARAMS").machine(),
    Column::left("metadata", "METADATA").machine(),
];

/// One row of [`ENTRY_COLUMNS`].
pub fn entry_cells(m: &EntryMeta, now: Timestamp) -> Vec<Cell> {
    vec![
        Cell::text(m.key.id()),
        namespace_cell(m.key.namespace()),
        Cell::text(m.data_type.as_str()),
        Cell::Size(m.raw_size),
        Cell::Size(m.stored_size),
        Cell::Age {
            at: m.created_at,
            now,
        },
        Cell::Age {
            at: m.accessed_at,
            now,
        },
        Cell::Remaining {
            until: m.expires_at,
            now,
        },
        Cell::UInt(m.access_count),
        m.expires_at.map_or(Cell::Null, Cell::Time),
        if m.tags.is_empty() {
            Cell::Custom {
                human: "-".into(),
                machine: serde_json::json!([]),
            }
        } else {
            Cell::Custom {
                human: m.tags.join(","),
                machine: serde_json::json!(m.tags),
            }
        },
        Cell::opt_text(m.type_name.clone()),
        Cell::text(match &m.location {
            Location::Inline => "inline".to_owned(),
            Location::Blob(id) => format!("blob:{id}"),
        }),
        Cell::text(m.digest.to_string()),
        Cell::Json(m.params.clone().unwrap_or(serde_json::Value::Null)),
        Cell::Json(m.user_metadata.clone().unwrap_or(serde_json::Value::Null)),
    ]
}

/// A namespace: `-` in a table for the default (empty) namespace, so columns stay columns.
pub fn namespace_cell(namespace: &str) -> Cell {
    Cell::Custom {
        human: if namespace.is_empty() { "-" } else { namespace }.to_owned(),
        machine: namespace.into(),
    }
}

/// Runs `cachet list`.
///
/// # Errors
/// When the cache cannot be read or the output written.
pub async fn run(args: ListArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_cache().await?;
    let mut filter = EntryFilter::all();
    filter.namespace = args.namespace;
    filter.id_prefix = args.prefix;
    let now = cache.store().now();
    let limit = if args.limit == 0 {
        u64::MAX
    } else {
        args.limit as u64
    };
    let page = usize::try_from(limit.min(1000)).unwrap_or(1000);
    let mut pages = cache.store().pages(filter, page);
    let mut rows = ctx.rows(ENTRY_COLUMNS);
    'pages: while let Some(page) = pages.next_page().await? {
        for meta in &page {
            if rows.count() >= limit {
                break 'pages;
            }
            rows.row(entry_cells(meta, now))?;
        }
        rows.flush()?;
    }
    rows.finish()?;
    Ok(Outcome::Success)
}
