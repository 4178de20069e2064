//! `cachet get KEY [-o FILE]`: one entry's value, verified as it streams.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use cachet::DataType;

use crate::{Context, Outcome};

/// Options of `cachet get`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Raw bytes are written as they are; serde values (MessagePack) are rendered as pretty JSON; \
JSON values as stored. Every frame and the whole-value digest are checked while streaming: a \
damaged entry is an error (exit code 1), never wrong bytes.

Examples:
  cachet get 5898b2382767579442f2e72022d20a4b -o value.bin
  cachet get --namespace models latest | jq .")]
pub struct GetArgs {
    /// The entry's key, as `list` shows it.
    pub key: String,
    /// The entry's namespace (default: the default namespace).
    #[arg(short, long, default_value = "")]
    pub namespace: String,
    /// Write the value to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Runs `cachet get`.
///
/// # Errors
/// A missing or expired key, a damaged value, an unwritable output.
pub async fn run(args: GetArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let cache = ctx.open_cache().await?;
    let key = super::entry_key(&args.namespace, &args.key)?;
    // The cache's reader applies expiry and verifies every frame and the digest.
    let mut reader = cache
        .reader(&key)
        .await?
        .with_context(|| format!("no entry with key {key} (or it has expired)"))?;
    let mut file;
    let sink: &mut dyn Write = match &args.output {
        Some(path) => {
            file = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            &mut file
        }
        None => ctx.out(),
    };
    let mut written = 0u64;
    if reader.meta().data_type == DataType::MessagePack {
        let mut raw = Vec::new();
        while let Some(chunk) = reader.next_chunk().await? {
            raw.extend_from_slice(&chunk);
        }
        let value: serde_json::Value = rmp_serde::from_slice(&raw)
            .with_context(|| format!("decoding {key} as MessagePack"))?;
        let text = serde_json::to_string_pretty(&value)?;
        sink.write_all(text.as_bytes())?;
        sink.write_all(b"\n")?;
        written += text.len() as u64 + 1;
    } else {
        while let Some(chunk) = reader.next_chunk().await? {
            sink.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
    }
    sink.flush()?;
    // Reads are recorded in batches: write this one before the process ends.
    cache.flush().await?;
    if let Some(path) = &args.output {
        ctx.info(format_args!(
            "wrote {} to {}",
            crate::human::format_size(written),
            path.display()
        ));
    }
    Ok(Outcome::Success)
}
