//! `cachet rm KEY...`: delete entries.

use anyhow::Result;

use super::list::namespace_cell;
use crate::output::{Cell, Column};
use crate::{Context, Outcome};

/// Options of `cachet rm`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Deletes the entries (expired or not) in one transaction; blobs no other entry shares are \
reclaimed. Prints one row per key with whether it was removed. A key with no entry is an \
error (exit code 1, after deleting the others) unless --force.

Examples:
  cachet rm 5898b2382767579442f2e72022d20a4b 7a70841ee8c06e5a176d7c1055d1ff46
  cachet rm --namespace models old-1 old-2 --force")]
pub struct RmArgs {
    /// The keys, as `list` shows them.
    #[arg(required = true, value_name = "KEY")]
    pub keys: Vec<String>,
    /// The entries' namespace (default: the default namespace).
    #[arg(short, long, default_value = "")]
    pub namespace: String,
    /// Missing keys are not an error.
    #[arg(short, long)]
    pub force: bool,
}

const COLUMNS: &[Column] = &[
    Column::left("key", "KEY"),
    Column::left("namespace", "NAMESPACE"),
    Column::left("removed", "REMOVED"),
];

/// Runs `cachet rm`.
///
/// # Errors
/// Missing keys (without `--force`), an invalid key, a failed delete.
pub async fn run(args: RmArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let keys = args
        .keys
        .iter()
        .map(|id| super::entry_key(&args.namespace, id))
        .collect::<Result<Vec<_>>>()?;
    let cache = ctx.open_cache().await?;
    let removed = cache.invalidate_many(keys.iter()).await?;
    let mut rows = ctx.rows(COLUMNS);
    let mut missing = Vec::new();
    for (key, removed) in keys.iter().zip(&removed) {
        rows.row(vec![
            Cell::text(key.id()),
            namespace_cell(key.namespace()),
            Cell::Bool(*removed),
        ])?;
        if !removed {
            missing.push(key.to_string());
        }
    }
    rows.finish()?;
    let count = removed.iter().filter(|r| **r).count();
    ctx.detail(format_args!("removed {count} of {} entries", keys.len()));
    anyhow::ensure!(
        args.force || missing.is_empty(),
        "no entry with key {} (nothing to remove; --force ignores missing keys)",
        missing.join(", ")
    );
    Ok(Outcome::Success)
}
