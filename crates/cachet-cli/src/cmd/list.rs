//! `cachet list`: entries, filtered by the index, streamed page by page.

use std::cmp::Ordering;

use anyhow::Result;
use cachet::{DataType, EntryFilter, EntryMeta, FieldCondition, Location, Timestamp};

use crate::human;
use crate::output::{Cell, Column};
use crate::{Context, Outcome};

/// Which entries: options shared by the commands that select entries. Every condition must
/// hold; the index evaluates them (an SQL `WHERE`), so a selective filter reads few rows.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only this namespace (default: every namespace).
    #[arg(short, long, value_name = "NAME")]
    pub namespace: Option<String>,
    /// Only keys starting with this text (byte-wise, case-sensitive).
    #[arg(long, value_name = "TEXT")]
    pub prefix: Option<String>,
    /// Only entries carrying this tag (repeat: all of them).
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// A condition on the key's parameters: `project=x`, `day<=2`, `model in (a, b)`,
    /// `model?` (repeat: all of them).
    #[arg(long, value_name = "COND", value_parser = parse_condition)]
    pub param: Vec<FieldCondition>,
    /// A condition on the user metadata: `accuracy>=0.9`, `model=xgboost`, `owner?`
    /// (repeat: all of them). Unquoted numbers and true/false are typed; quote to force text.
    #[arg(long, value_name = "COND", value_parser = parse_condition)]
    pub meta: Vec<FieldCondition>,
    /// Only entries of this data type.
    #[arg(long = "type", value_name = "TYPE", value_parser = ["bytes", "msgpack", "json"])]
    pub data_type: Option<String>,
    /// Only entries created more than this long ago (`7d`, `12h`, `30m`).
    #[arg(long, value_name = "AGE", value_parser = human::parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Only entries created less than this long ago.
    #[arg(long, value_name = "AGE", value_parser = human::parse_duration)]
    pub newer_than: Option<std::time::Duration>,
    /// Only entries not read for this long (`30d`).
    #[arg(long, value_name = "AGE", value_parser = human::parse_duration)]
    pub idle_for: Option<std::time::Duration>,
    /// Only entries whose stored size is larger than this (`1GB` = 10^9 bytes, `1GiB` =
    /// 2^30).
    #[arg(long, value_name = "SIZE", value_parser = human::parse_size)]
    pub larger_than: Option<u64>,
    /// Only entries whose stored size is smaller than this.
    #[arg(long, value_name = "SIZE", value_parser = human::parse_size)]
    pub smaller_than: Option<u64>,
    /// Only expired entries (still in the index until `cleanup` removes them).
    #[arg(long)]
    pub expired: bool,
}

/// `FieldCondition::parse` for clap: the message names the condition and the syntax.
pub fn parse_condition(text: &str) -> Result<FieldCondition, String> {
    FieldCondition::parse(text).map_err(|e| match e {
        cachet::Error::Config { message, .. } => message,
        other => other.to_string(),
    })
}

impl FilterArgs {
    /// The filter these options describe, with ages counted back from `now`.
    pub fn to_filter(&self, now: Timestamp) -> EntryFilter {
        let ago = |d: std::time::Duration| {
            Timestamp(
                now.0
                    .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            )
        };
        let mut filter = EntryFilter::all();
        filter.namespace = self.namespace.clone();
        filter.id_prefix = self.prefix.clone();
        filter.tags = self.tag.clone();
        filter.params = self.param.clone();
        filter.metadata = self.meta.clone();
        filter.data_type = self.data_type.as_deref().map(DataType::parse);
        filter.created_before = self.older_than.map(ago);
        filter.created_at_or_after = self.newer_than.map(ago);
        filter.accessed_before = self.idle_for.map(ago);
        filter.min_stored_size = self.larger_than.map(|n| n.saturating_add(1));
        filter.max_stored_size = self.smaller_than.map(|n| n.saturating_sub(1));
        if self.expired {
            filter.expires_at_or_before = Some(now);
        }
        filter
    }
}

/// What `--sort` orders by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Namespace, then key (the index's order: streams without reading ahead).
    Key,
    /// Raw (uncompressed) size.
    Size,
    /// Stored size.
    Stored,
    /// Creation time.
    Created,
    /// Last read.
    Accessed,
    /// Number of reads.
    Hits,
    /// Expiry (entries that never expire last).
    Expires,
}

const LIST_AFTER_HELP: &str = "\
Output: one row per entry. Table: sizes in binary units, ages, TTL left (`expired` for entries \
waiting for cleanup, `-` for none). JSON: one object per line (JSON lines) with exact values \
(bytes, RFC 3339 times, ttl_left_ms) plus params, tags, metadata, digest. CSV: the same \
fields, nested values as JSON.

Streaming: in key order (the default) rows are printed page by page (1,000 entries per index \
query) with bounded memory, whatever the cache's size. --sort reads the whole selection and \
keeps the best --limit rows (memory grows with --limit; with --limit 0, with the selection).

Examples:
  cachet list --namespace models --meta 'accuracy>=0.9' --sort created --desc
  cachet list --tag nightly --older-than 7d --larger-than 1GB --limit 0
  cachet list --param 'project=x' --format json | jq .key";

/// Options of `cachet list`.
#[derive(Debug, clap::Args)]
#[command(after_help = LIST_AFTER_HELP)]
pub struct ListArgs {
    /// Which entries.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Order of the rows.
    #[arg(long, value_enum, default_value_t = SortBy::Key)]
    pub sort: SortBy,
    /// Reverse the order (largest, newest, most read first).
    #[arg(long)]
    pub desc: bool,
    /// At most this many entries (0: no limit).
    #[arg(long, default_value_t = 100, value_name = "N")]
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
        tags_cell(&m.tags),
        Cell::opt_text(m.type_name.clone()),
        location_cell(&m.location),
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

/// Tags: `a,b` (or `-`) in a table, a JSON array otherwise.
pub fn tags_cell(tags: &[String]) -> Cell {
    Cell::Custom {
        human: if tags.is_empty() {
            "-".to_owned()
        } else {
            tags.join(",")
        },
        machine: serde_json::json!(tags),
    }
}

/// `inline` or `blob:<id>`.
pub fn location_cell(location: &Location) -> Cell {
    Cell::text(match location {
        Location::Inline => "inline".to_owned(),
        Location::Blob(id) => format!("blob:{id}"),
    })
}

/// Runs `cachet list`.
///
/// # Errors
/// When the cache cannot be read or the output written.
pub async fn run(args: ListArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_cache().await?;
    let now = cache.store().now();
    let filter = args.filter.to_filter(now);
    let limit = if args.limit == 0 {
        usize::MAX
    } else {
        args.limit
    };
    let started = std::time::Instant::now();
    let (shown, more) = if args.sort == SortBy::Key && !args.desc {
        stream_in_key_order(&cache, filter, limit, now, ctx).await?
    } else {
        sorted(&cache, filter, &args, limit, now, ctx).await?
    };
    ctx.detail(format_args!("{shown} entries in {:.0?}", started.elapsed()));
    if more {
        ctx.info(format_args!(
            "(first {shown} entries shown; --limit N for more, --limit 0 for all)"
        ));
    }
    Ok(Outcome::Success)
}

/// Key order: the index's own, page by page, printed as it comes.
async fn stream_in_key_order(
    cache: &cachet::Cache,
    filter: EntryFilter,
    limit: usize,
    now: Timestamp,
    ctx: &mut Context<'_>,
) -> Result<(usize, bool)> {
    // One more than the limit tells whether there are more.
    let page_size = limit.saturating_add(1).min(1000);
    let mut pages = cache.store().pages(filter, page_size);
    let mut rows = ctx.rows(ENTRY_COLUMNS);
    let mut shown = 0;
    let mut more = false;
    'pages: while let Some(page) = pages.next_page().await? {
        for meta in &page {
            if shown == limit {
                more = true;
                break 'pages;
            }
            rows.row(entry_cells(meta, now))?;
            shown += 1;
        }
        rows.flush()?;
    }
    rows.finish()?;
    Ok((shown, more))
}

/// Any other order: the whole selection is read, the best `limit` rows kept.
async fn sorted(
    cache: &cachet::Cache,
    filter: EntryFilter,
    args: &ListArgs,
    limit: usize,
    now: Timestamp,
    ctx: &mut Context<'_>,
) -> Result<(usize, bool)> {
    let order = |a: &EntryMeta, b: &EntryMeta| {
        let by = compare(args.sort, a, b).then_with(|| compare(SortBy::Key, a, b));
        if args.desc { by.reverse() } else { by }
    };
    let mut best: Vec<EntryMeta> = Vec::new();
    let mut matched = 0usize;
    let mut pages = cache.store().pages(filter, 1000);
    while let Some(page) = pages.next_page().await? {
        matched += page.len();
        best.extend(page);
        // Keep memory at about twice the limit: drop what can no longer be shown.
        if best.len() > limit.saturating_mul(2).max(4096) {
            best.select_nth_unstable_by(limit - 1, order);
            best.truncate(limit);
        }
    }
    best.sort_unstable_by(order);
    best.truncate(limit);
    let mut rows = ctx.rows(ENTRY_COLUMNS);
    for meta in &best {
        rows.row(entry_cells(meta, now))?;
    }
    rows.finish()?;
    Ok((best.len(), matched > best.len()))
}

fn compare(by: SortBy, a: &EntryMeta, b: &EntryMeta) -> Ordering {
    match by {
        SortBy::Key => (a.key.namespace(), a.key.id()).cmp(&(b.key.namespace(), b.key.id())),
        SortBy::Size => a.raw_size.cmp(&b.raw_size),
        SortBy::Stored => a.stored_size.cmp(&b.stored_size),
        SortBy::Created => a.created_at.cmp(&b.created_at),
        SortBy::Accessed => a.accessed_at.cmp(&b.accessed_at),
        SortBy::Hits => a.access_count.cmp(&b.access_count),
        // `None` (never expires) after every time.
        SortBy::Expires => match (a.expires_at, b.expires_at) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        filter: FilterArgs,
    }

    fn filter(args: &[&str]) -> EntryFilter {
        let probe =
            Probe::try_parse_from(std::iter::once("probe").chain(args.iter().copied())).unwrap();
        probe.filter.to_filter(Timestamp(1_000_000_000))
    }

    #[test]
    fn every_option_becomes_a_condition_the_index_evaluates() {
        let f = filter(&[
            "--namespace",
            "models",
            "--prefix",
            "run-",
            "--tag",
            "prod",
            "--tag",
            "eu",
            "--param",
            "project=x",
            "--meta",
            "accuracy>=0.9",
            "--type",
            "json",
            "--older-than",
            "1s",
            "--newer-than",
            "1m",
            "--idle-for",
            "2s",
            "--larger-than",
            "1kB",
            "--smaller-than",
            "1KiB",
            "--expired",
        ]);
        assert_eq!(f.namespace.as_deref(), Some("models"));
        assert_eq!(f.id_prefix.as_deref(), Some("run-"));
        assert_eq!(f.tags, ["prod", "eu"]);
        assert_eq!(f.params, [FieldCondition::eq("project", "x")]);
        assert_eq!(
            f.metadata,
            [FieldCondition::parse("accuracy >= 0.9").unwrap()]
        );
        assert_eq!(f.data_type, Some(DataType::Json));
        assert_eq!(f.created_before, Some(Timestamp(1_000_000_000 - 1_000)));
        assert_eq!(
            f.created_at_or_after,
            Some(Timestamp(1_000_000_000 - 60_000))
        );
        assert_eq!(f.accessed_before, Some(Timestamp(1_000_000_000 - 2_000)));
        assert_eq!(
            (f.min_stored_size, f.max_stored_size),
            (Some(1_001), Some(1_023))
        );
        assert_eq!(f.expires_at_or_before, Some(Timestamp(1_000_000_000)));
    }

    #[test]
    fn no_option_selects_everything() {
        assert!(filter(&[]).is_everything());
    }

    #[test]
    fn a_condition_without_an_operator_is_refused_with_the_syntax() {
        let err = Probe::try_parse_from(["probe", "--meta", "accuracy"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("accuracy") && text.contains("field>=value"),
            "{text}"
        );
    }
}
