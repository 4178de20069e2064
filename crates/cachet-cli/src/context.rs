//! What every command gets: the global options, the output, the cache, and how it reports
//! its outcome.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use cachet::Cache;

use crate::output::{Column, Format, Record, RowWriter};

/// The help heading of the options every command accepts.
const GLOBAL: &str = "Global options";

/// The options every command accepts (before or after the command name).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// Cache directory: SQLite index + blob files (the embedded setup). Default: `./cache`.
    /// [env: CACHET_CACHE]
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "DIR", conflicts_with_all = ["index", "blobs"])]
    pub cache: Option<PathBuf>,
    /// Index URL (`sqlite:///path/index.db`, `postgres://user@host/db`), with --blobs.
    /// [env: CACHET_INDEX]
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "URL", requires = "blobs")]
    pub index: Option<String>,
    /// Blob store URL (`file:///path/blobs`, `s3://bucket/prefix?endpoint=...`), with --index.
    /// [env: CACHET_BLOBS]
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "URL", requires = "index")]
    pub blobs: Option<String>,
    /// Output format: `table` for people; `json` and `csv` for programs (exact values).
    #[arg(long, global = true, help_heading = GLOBAL, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Print only the requested data: no notes or summaries on stderr.
    #[arg(short, long, global = true, help_heading = GLOBAL, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail: extra table columns, notes on stderr (repeat for more).
    #[arg(short, long, global = true, help_heading = GLOBAL, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No colour (also when the NO_COLOR environment variable is set, or output is not a
    /// terminal).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_color: bool,
}

/// Where the cache is, resolved from the options and the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// A cache directory (`index.sqlite` + `blobs/`).
    Directory(PathBuf),
    /// An index and a blob store given by URL.
    Urls {
        /// The index URL.
        index: String,
        /// The blob store URL.
        blobs: String,
    },
}

impl GlobalArgs {
    /// Resolves where the cache is: options on the command line first (`--cache`, or
    /// `--index` with `--blobs`; clap refuses mixing them), then the environment
    /// (`CACHET_CACHE`, or `CACHET_INDEX` with `CACHET_BLOBS`), then `./cache`. `env` looks a
    /// variable up (`std::env::var` in the binary); empty values count as unset.
    ///
    /// # Errors
    /// A [`UsageError`] when the environment sets only one of `CACHET_INDEX` and
    /// `CACHET_BLOBS`, or sets them together with `CACHET_CACHE`.
    pub fn location(&self, env: impl Fn(&str) -> Option<String>) -> Result<CacheLocation> {
        if let Some(dir) = &self.cache {
            return Ok(CacheLocation::Directory(dir.clone()));
        }
        if let (Some(index), Some(blobs)) = (&self.index, &self.blobs) {
            return Ok(CacheLocation::Urls {
                index: index.clone(),
                blobs: blobs.clone(),
            });
        }
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        match (
            var("CACHET_CACHE"),
            var("CACHET_INDEX"),
            var("CACHET_BLOBS"),
        ) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(usage(
                "the environment sets CACHET_CACHE and CACHET_INDEX/CACHET_BLOBS: unset one, or \
                 choose on the command line with --cache DIR or --index URL --blobs URL",
            )),
            (None, Some(index), Some(blobs)) => Ok(CacheLocation::Urls { index, blobs }),
            (None, Some(_), None) => Err(usage(
                "CACHET_INDEX is set but CACHET_BLOBS is not: an index URL needs a blob store URL",
            )),
            (None, None, Some(_)) => Err(usage(
                "CACHET_BLOBS is set but CACHET_INDEX is not: a blob store URL needs an index URL",
            )),
            (Some(dir), None, None) => Ok(CacheLocation::Directory(dir.into())),
            (None, None, None) => Ok(CacheLocation::Directory(PathBuf::from("./cache"))),
        }
    }
}

/// How a command that ran to its end went; `main` turns it into the exit code.
///
/// Commands return `anyhow::Result<Outcome>`:
///
/// * `Ok(Outcome::Success)`: exit code 0.
/// * `Ok(Outcome::Problems(summary))`: the command did its job and printed its report, but
///   what it checked is not healthy (`verify` found damaged entries): `summary` goes to stderr
///   (`cachet: 3 problems found`) and the exit code is 1. Use it for "completed, found
///   problems"; use an error for "could not complete".
/// * `Err(e)` where `e` is a [`UsageError`] (make one with [`usage`]): the arguments are
///   wrong in a way clap could not see; exit code 2, like clap's own errors.
/// * any other `Err(e)`: the command failed; `error: {e:#}` on stderr, exit code 1.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// Done, nothing to report: exit code 0.
    Success,
    /// Done, and found problems (the summary is printed on stderr): exit code 1.
    Problems(String),
}

/// Arguments that are wrong in a way the parser could not tell (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A usage error (exit code 2) with this message.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// What a command runs with: the global options, where its output goes, the cache.
pub struct Context<'a> {
    global: GlobalArgs,
    out: &'a mut dyn Write,
    color: bool,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("global", &self.global)
            .field("color", &self.color)
            .finish_non_exhaustive()
    }
}

impl<'a> Context<'a> {
    /// A context writing the command's output to `out`. Colour is on only when `out` is the
    /// terminal's stdout, `--no-color` is not given and `NO_COLOR` is unset or empty.
    pub fn new(global: GlobalArgs, out: &'a mut dyn Write, out_is_stdout: bool) -> Self {
        let color = out_is_stdout
            && !global.no_color
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::io::stdout().is_terminal();
        Context { global, out, color }
    }

    /// The global options.
    pub fn global(&self) -> &GlobalArgs {
        &self.global
    }

    /// `--format`.
    pub fn format(&self) -> Format {
        self.global.format
    }

    /// `-q`: print only the requested data.
    pub fn quiet(&self) -> bool {
        self.global.quiet
    }

    /// How many `-v`.
    pub fn verbose(&self) -> u8 {
        self.global.verbose
    }

    /// Whether output may use ANSI colours.
    pub fn color(&self) -> bool {
        self.color
    }

    /// Where the command's data goes (stdout in the binary).
    pub fn out(&mut self) -> &mut dyn Write {
        &mut *self.out
    }

    /// A note for people on stderr (`stored KEY (1.2 GiB)`), unless `-q`.
    pub fn info(&self, message: impl std::fmt::Display) {
        if !self.global.quiet {
            eprintln!("{message}");
        }
    }

    /// A detail on stderr, only with `-v`.
    pub fn detail(&self, message: impl std::fmt::Display) {
        if self.global.verbose > 0 {
            eprintln!("{message}");
        }
    }

    /// A writer of rows under `columns` in the chosen format (see [`crate::output`]).
    pub fn rows(&mut self, columns: &[Column]) -> RowWriter<'_> {
        let (format, verbose, color) = (self.format(), self.verbose() > 0, self.color);
        RowWriter::new(&mut *self.out, format, columns, verbose, color)
    }

    /// Writes one record in the chosen format.
    ///
    /// # Errors
    /// When the output cannot be written.
    pub fn record(&mut self, record: &Record) -> Result<()> {
        let format = self.format();
        record.write(&mut *self.out, format)
    }

    /// Where the cache is (see [`GlobalArgs::location`]).
    ///
    /// # Errors
    /// A [`UsageError`] for contradictory environment variables.
    pub fn location(&self) -> Result<CacheLocation> {
        self.global.location(|name| std::env::var(name).ok())
    }

    /// Opens the existing cache the options name, with strict integrity (an operator asking
    /// for an entry hears that it is damaged instead of getting a miss). A directory without
    /// an index is refused, so that a typo does not create an empty cache.
    ///
    /// # Errors
    /// When there is no cache there, or it cannot be opened.
    pub async fn open_cache(&self) -> Result<Cache> {
        self.open(false).await
    }

    /// Like [`open_cache`](Self::open_cache), but creates a cache directory that does not
    /// exist yet (for commands that write, such as `put`).
    ///
    /// # Errors
    /// When the cache cannot be created or opened.
    pub async fn open_or_create_cache(&self) -> Result<Cache> {
        self.open(true).await
    }

    async fn open(&self, create: bool) -> Result<Cache> {
        match self.location()? {
            CacheLocation::Directory(dir) => {
                let index = dir.join(cachet::INDEX_FILE);
                anyhow::ensure!(
                    create || index.exists(),
                    "no cachet cache at {} (expected {}; pass --cache DIR, or --index URL \
                     --blobs URL, or set CACHET_CACHE)",
                    dir.display(),
                    index.display()
                );
                Cache::builder()
                    .directory(&dir)
                    .strict_integrity(true)
                    .build()
                    .await
                    .with_context(|| format!("opening the cache at {}", dir.display()))
            }
            CacheLocation::Urls { index, blobs } => Cache::builder()
                .index(index.clone())
                .blobs(blobs.clone())
                .strict_integrity(true)
                .build()
                .await
                .with_context(|| {
                    format!(
                        "opening the cache with index {} and blobs {}",
                        redact(&index),
                        redact(&blobs)
                    )
                }),
        }
    }

    /// A description of where the cache is, passwords hidden (for `inspect` and messages).
    ///
    /// # Errors
    /// As [`location`](Self::location).
    pub fn describe_location(&self) -> Result<(String, String)> {
        Ok(match self.location()? {
            CacheLocation::Directory(dir) => (
                dir.join(cachet::INDEX_FILE).display().to_string(),
                dir.join(cachet::BLOBS_DIR).display().to_string(),
            ),
            CacheLocation::Urls { index, blobs } => (redact(&index), redact(&blobs)),
        })
    }
}

/// A URL with its password (and S3 secrets in the query) replaced by `***`.
pub fn redact(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    let secret = |k: &str| {
        let k = k.to_ascii_lowercase();
        k.contains("secret") || k.contains("password") || k.contains("token")
    };
    if parsed.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_command_line_wins_over_the_environment() {
        let args = GlobalArgs {
            cache: Some("here".into()),
            ..Default::default()
        };
        let found = args
            .location(env(&[
                ("CACHET_INDEX", "sqlite:///x"),
                ("CACHET_BLOBS", "file:///y"),
            ]))
            .unwrap();
        assert_eq!(found, CacheLocation::Directory("here".into()));
    }

    #[test]
    fn the_environment_gives_a_directory_or_both_urls() {
        let args = GlobalArgs::default();
        assert_eq!(
            args.location(env(&[("CACHET_CACHE", "/c")])).unwrap(),
            CacheLocation::Directory("/c".into())
        );
        assert_eq!(
            args.location(env(&[("CACHET_INDEX", "i://"), ("CACHET_BLOBS", "b://")]))
                .unwrap(),
            CacheLocation::Urls {
                index: "i://".into(),
                blobs: "b://".into()
            }
        );
        assert_eq!(
            args.location(env(&[])).unwrap(),
            CacheLocation::Directory("./cache".into())
        );
    }

    #[test]
    fn half_a_url_pair_in_the_environment_is_a_usage_error() {
        let err = GlobalArgs::default()
            .location(env(&[("CACHET_INDEX", "sqlite:///x")]))
            .unwrap_err();
        assert!(err.is::<UsageError>());
        assert!(err.to_string().contains("CACHET_BLOBS"), "{err}");
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://app:hunter2@db:5432/cache"),
            "postgres://app:***@db:5432/cache"
        );
        assert_eq!(
            redact("s3://bucket/p?endpoint=http://x&secret_access_key=abc"),
            "s3://bucket/p?endpoint=http%3A%2F%2Fx&secret_access_key=***"
        );
        assert_eq!(redact("not a url"), "not a url");
    }
}
