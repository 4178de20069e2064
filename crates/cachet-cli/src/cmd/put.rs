//! `cachet put KEY FILE|-`: store a file or stdin, streamed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use cachet::{FieldCondition, FieldValue, InsertOptions};

use crate::{Context, Outcome, human};

/// Options of `cachet put`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The value is streamed (bounded memory whatever its size), compressed, checksummed and stored \
as raw bytes (`get` returns exactly these bytes); it replaces an entry with the same key. \
A cache directory that does not exist yet is created. Prints the stored entry (as `show`).

Examples:
  cachet put model-v7 ./model.bin --ttl 30d --tag models --meta accuracy=0.93 --meta stage=prod
  tar c data/ | cachet put --namespace backups nightly - --ttl 1w")]
pub struct PutArgs {
    /// The key to store under (any text up to 1,024 bytes).
    pub key: String,
    /// The file to store, or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
    /// The namespace (default: the default namespace).
    #[arg(short, long, default_value = "")]
    pub namespace: String,
    /// Expire the entry this long after the write (`30s`, `2.5h`, `7d`, `1w`; default: never).
    #[arg(long, value_name = "DURATION", value_parser = human::parse_duration)]
    pub ttl: Option<Duration>,
    /// A tag (repeat for several).
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// A user-metadata field, `name=value` (repeat for several). Numbers and true/false are
    /// stored typed (`accuracy=0.93` is a number); quote to force text (`build='"0042"'`).
    #[arg(long, value_name = "NAME=VALUE", value_parser = parse_meta)]
    pub meta: Vec<(String, FieldValue)>,
}

/// `name=value` as a typed metadata field (the typing of `--meta` conditions).
pub fn parse_meta(text: &str) -> Result<(String, FieldValue), String> {
    match FieldCondition::parse(text) {
        Ok(FieldCondition::Compare {
            field,
            op: cachet::Comparison::Eq,
            value,
        }) if !text.contains("==") => Ok((field, value)),
        _ => Err(format!(
            "`{text}` is not a field: write name=value (e.g. accuracy=0.93, stage=prod)"
        )),
    }
}

/// Runs `cachet put`.
///
/// # Errors
/// An unreadable file, an invalid key or option, a failed write.
pub async fn run(args: PutArgs, ctx: &mut Context<'_>) -> Result<Outcome> {
    let key = super::entry_key(&args.namespace, &args.key)?;
    // Open the input first: a missing file must not create a cache directory.
    let mut input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if args.file.as_os_str() == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(
            tokio::fs::File::open(&args.file)
                .await
                .with_context(|| format!("opening {}", args.file.display()))?,
        )
    };
    let cache = ctx.open_or_create_cache().await?;
    let mut options = InsertOptions::new();
    if let Some(ttl) = args.ttl {
        options = options.with_ttl(ttl);
    }
    for tag in &args.tag {
        options = options.with_tag(tag.clone());
    }
    for (field, value) in &args.meta {
        options = options.with_meta(field.clone(), value.clone());
    }
    let started = std::time::Instant::now();
    let mut writer = cache.writer_with_options(&key, options).await?;
    let copied = writer.copy_from(&mut input).await;
    if let Err(e) = copied {
        writer.abort().await.ok();
        return Err(anyhow::Error::from(e).context(format!("reading {}", args.file.display())));
    }
    let meta = writer
        .finish()
        .await
        .with_context(|| format!("storing {key}"))?;
    cache.flush().await?;
    ctx.info(format_args!(
        "stored {key}: {} ({} stored) in {:.1?}",
        human::format_size(meta.raw_size),
        human::format_size(meta.stored_size),
        started.elapsed()
    ));
    ctx.record(&super::show::entry_record(&meta, cache.store().now()))?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_fields_are_typed_like_conditions() {
        assert_eq!(
            parse_meta("accuracy=0.93").unwrap(),
            ("accuracy".into(), FieldValue::Float(0.93))
        );
        assert_eq!(parse_meta("epochs=12").unwrap().1, FieldValue::Int(12));
        assert_eq!(
            parse_meta("stage=prod").unwrap().1,
            FieldValue::Text("prod".into())
        );
        assert_eq!(
            parse_meta("id=\"0042\"").unwrap().1,
            FieldValue::Text("0042".into())
        );
        assert_eq!(parse_meta("done=true").unwrap().1, FieldValue::Bool(true));
    }

    #[test]
    fn anything_but_name_equals_value_is_refused() {
        for bad in ["accuracy", "accuracy>=0.9", "a==1", "=1", "m in (a, b)"] {
            assert!(parse_meta(bad).unwrap_err().contains("name=value"), "{bad}");
        }
    }
}
