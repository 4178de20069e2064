//! [`PostgresConfig`]: the options of a PostgreSQL index, its URL form, and validation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use cachet_core::{Error, Result};

use crate::backend::PostgresMetadata;

/// URL options that cachet reads itself (and strips before handing the URL to sqlx). Every
/// other query option is sqlx's / libpq's (`sslmode`, `sslrootcert`, `application_name`, ...).
const CACHET_OPTIONS: &[&str] = &[
    "cachet_schema",
    "cachet_max_connections",
    "cachet_min_connections",
    "cachet_lock_pool_size",
    "cachet_connect_timeout_ms",
    "cachet_acquire_timeout_ms",
    "cachet_statement_timeout_ms",
    "cachet_idle_timeout_ms",
    "cachet_retry_budget_ms",
];

/// How to open a PostgreSQL metadata index.
///
/// A consuming builder: start from [`PostgresConfig::from_url`], adjust with the `with_*`
/// methods, then [`open`](PostgresConfig::open), which validates every option (an invalid one
/// fails with `Error::Config` naming it) before connecting.
///
/// ```
/// use std::time::Duration;
/// use cachet_meta_postgres::PostgresConfig;
///
/// let url = "postgres://cache@db.internal/cachet?sslmode=require&cachet_schema=team_a\
///            &cachet_max_connections=20";
/// let config = PostgresConfig::from_url(url)?
///     .with_statement_timeout(Some(Duration::from_secs(10)))
///     .with_application_name("reports-api");
/// assert_eq!(config.schema(), "team_a");
/// assert_eq!(config.max_connections(), 20);
/// config.validate()?;
/// # Ok::<(), cachet_core::Error>(())
/// ```
#[derive(Clone)]
pub struct PostgresConfig {
    /// The URL without cachet's own options, with the password hidden in `Debug`.
    url: String,
    connect: PgConnectOptions,
    schema: String,
    max_connections: u32,
    min_connections: u32,
    lock_pool_size: u32,
    connect_timeout: Duration,
    acquire_timeout: Duration,
    statement_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    retry_budget: Duration,
    application_name: Option<String>,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("lock_pool_size", &self.lock_pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("retry_budget", &self.retry_budget)
            .field("application_name", &self.application_name)
            .finish()
    }
}

impl PostgresConfig {
    /// The schema (PostgreSQL namespace) the tables live in (`public`).
    pub const DEFAULT_SCHEMA: &'static str = "public";
    /// Connections of the main pool at most (10).
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
    /// Connections of the main pool kept open when idle (0).
    pub const DEFAULT_MIN_CONNECTIONS: u32 = 0;
    /// Connections of the key-lock pool at most, hence key locks held at once (16).
    pub const DEFAULT_LOCK_POOL_SIZE: u32 = 16;
    /// How long one attempt to open a connection may take (5 s).
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// How long an operation waits for a free pooled connection (10 s).
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
    /// The server-side `statement_timeout` of every connection (30 s).
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
    /// How long an idle pooled connection is kept (10 min).
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
    /// How long an operation keeps retrying while the server is unreachable (10 s).
    pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(10);
    /// The largest accepted pool size (1000).
    pub const MAX_POOL_SIZE: u32 = 1000;

    /// Parses a `postgres://` (or `postgresql://`) URL.
    ///
    /// Everything libpq-style is sqlx's: host, port, user, password, database, and query
    /// options such as `sslmode=disable|prefer|require|verify-ca|verify-full`, `sslrootcert`,
    /// `application_name`, `statement-cache-capacity`. cachet's own options are prefixed
    /// `cachet_` and removed before the URL reaches sqlx:
    ///
    /// | option | meaning | default |
    /// |---|---|---|
    /// | `cachet_schema` | schema holding the tables (created if missing) | `public` |
    /// | `cachet_max_connections` | main pool size | 10 |
    /// | `cachet_min_connections` | idle connections kept open | 0 |
    /// | `cachet_lock_pool_size` | connections for key locks | 16 |
    /// | `cachet_connect_timeout_ms` | one connection attempt | 5000 |
    /// | `cachet_acquire_timeout_ms` | wait for a pooled connection | 10000 |
    /// | `cachet_statement_timeout_ms` | server `statement_timeout`, 0 = none | 30000 |
    /// | `cachet_idle_timeout_ms` | idle connection lifetime, 0 = forever | 600000 |
    /// | `cachet_retry_budget_ms` | retrying while unreachable, 0 = never | 10000 |
    ///
    /// While the server is unreachable a call fails with `Error::Unavailable` after about the
    /// retry budget: the wait for a pooled connection is capped at the budget (but never
    /// below 250 ms), because sqlx itself retries refused connections while acquiring.
    ///
    /// An unknown `cachet_*` option, a repeated or malformed one fails with `Error::Config`
    /// naming it; values are range-checked by [`validate`](Self::validate).
    pub fn from_url(url: &str) -> Result<Self> {
        let mut parsed = url::Url::parse(url).map_err(|e| {
            Error::config(
                "url",
                format!(
                    "`{}` is not a URL ({e}); use postgres://user:password@host:port/database",
                    redact(url)
                ),
            )
        })?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(Error::config(
                "url",
                format!(
                    "scheme `{}` is not postgres:// or postgresql://",
                    parsed.scheme()
                ),
            ));
        }
        let mut ours: Vec<(String, String)> = Vec::new();
        let mut theirs: Vec<(String, String)> = Vec::new();
        for (name, value) in parsed.query_pairs() {
            if name.starts_with("cachet_") {
                if ours.iter().any(|(n, _)| *n == name) {
                    return Err(Error::config(name, "the option is given twice in the URL"));
                }
                ours.push((name.into_owned(), value.into_owned()));
            } else {
                theirs.push((name.into_owned(), value.into_owned()));
            }
        }
        if theirs.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(&theirs);
        }
        let stripped = parsed.to_string();
        let connect = PgConnectOptions::from_str(&stripped)
            .map_err(|e| Error::config("url", format!("{} ({e})", redact(&stripped))))?;
        let mut config = PostgresConfig::with_connect_options(stripped, connect);
        for (name, value) in ours {
            let millis = |value: &str| -> Result<Duration> {
                value
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| {
                        Error::config(
                            &name,
                            format!("`{value}` is not a whole number of milliseconds"),
                        )
                    })
            };
            let count = |value: &str| -> Result<u32> {
                value.parse::<u32>().map_err(|_| {
                    Error::config(&name, format!("`{value}` is not a connection count"))
                })
            };
            let optional = |d: Duration| if d.is_zero() { None } else { Some(d) };
            match name.as_str() {
                "cachet_schema" => config.schema = value,
                "cachet_max_connections" => config.max_connections = count(&value)?,
                "cachet_min_connections" => config.min_connections = count(&value)?,
                "cachet_lock_pool_size" => config.lock_pool_size = count(&value)?,
                "cachet_connect_timeout_ms" => config.connect_timeout = millis(&value)?,
                "cachet_acquire_timeout_ms" => config.acquire_timeout = millis(&value)?,
                "cachet_statement_timeout_ms" => {
                    config.statement_timeout = optional(millis(&value)?)
                }
                "cachet_idle_timeout_ms" => config.idle_timeout = optional(millis(&value)?),
                "cachet_retry_budget_ms" => config.retry_budget = millis(&value)?,
                _ => {
                    return Err(Error::config(
                        &name,
                        format!(
                            "unknown cachet URL option; accepted: {}",
                            CACHET_OPTIONS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(config)
    }

    fn with_connect_options(url: String, connect: PgConnectOptions) -> Self {
        PostgresConfig {
            url,
            connect,
            schema: Self::DEFAULT_SCHEMA.to_owned(),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            min_connections: Self::DEFAULT_MIN_CONNECTIONS,
            lock_pool_size: Self::DEFAULT_LOCK_POOL_SIZE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: Some(Self::DEFAULT_STATEMENT_TIMEOUT),
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
            retry_budget: Self::DEFAULT_RETRY_BUDGET,
            application_name: None,
        }
    }

    /// The schema that holds the tables (default `public`); created if missing.
    ///
    /// Lowercase ASCII letters, digits and `_`, starting with a letter or `_`, at most 63
    /// bytes, not starting with `pg_`. Several caches can share one database in separate
    /// schemas; their key locks do not contend.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The main pool's maximum size (default 10; 1 to [`MAX_POOL_SIZE`](Self::MAX_POOL_SIZE)).
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// Connections the main pool keeps open when idle (default 0; at most `max_connections`).
    pub fn with_min_connections(mut self, min: u32) -> Self {
        self.min_connections = min;
        self
    }

    /// The key-lock pool's size (default 16; 1 to [`MAX_POOL_SIZE`](Self::MAX_POOL_SIZE)).
    ///
    /// A held key lock keeps one connection of this separate pool, so lock holders never
    /// starve the main pool; when all are held, `try_lock_key` waits up to the acquire
    /// timeout for one.
    pub fn with_lock_pool_size(mut self, size: u32) -> Self {
        self.lock_pool_size = size;
        self
    }

    /// How long one attempt to open a connection may take (default 5 s; not zero).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an operation waits for a pooled connection, opening one included (default
    /// 10 s; not zero).
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The server-side `statement_timeout` of every connection (default 30 s; `None` for no
    /// limit; whole milliseconds, at most `i32::MAX`).
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept before it is closed (default 10 min;
    /// `None` keeps it forever).
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long an operation keeps retrying, with exponential backoff, while the server
    /// cannot be reached (default 10 s; zero fails at the first error). Bounds `open()` too.
    pub fn with_retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    /// The `application_name` the connections report (`pg_stat_activity`); overrides the
    /// URL's. Default: the URL's, else `cachet`.
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The main pool's maximum size.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The main pool's minimum size.
    pub fn min_connections(&self) -> u32 {
        self.min_connections
    }

    /// The key-lock pool's size.
    pub fn lock_pool_size(&self) -> u32 {
        self.lock_pool_size
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The acquire timeout.
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// The statement timeout (`None`: no limit).
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout
    }

    /// The idle timeout (`None`: forever).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// The retry budget.
    pub fn retry_budget(&self) -> Duration {
        self.retry_budget
    }

    /// The application name the connections report.
    pub fn application_name(&self) -> &str {
        self.application_name
            .as_deref()
            .or(self.connect.get_application_name())
            .unwrap_or("cachet")
    }

    /// The server address, for messages: `host:port/database` (no credentials).
    pub fn server(&self) -> String {
        format!(
            "{}:{}/{}",
            self.connect.get_host(),
            self.connect.get_port(),
            self.connect.get_database().unwrap_or("")
        )
    }

    /// Checks every option; fails with `Error::Config` naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        validate_schema(&self.schema)?;
        for (field, size) in [
            ("max_connections", self.max_connections),
            ("lock_pool_size", self.lock_pool_size),
        ] {
            if size == 0 || size > Self::MAX_POOL_SIZE {
                return Err(Error::config(
                    field,
                    format!(
                        "{size} connections requested; accepted: 1 to {}",
                        Self::MAX_POOL_SIZE
                    ),
                ));
            }
        }
        if self.min_connections > self.max_connections {
            return Err(Error::config(
                "min_connections",
                format!(
                    "{} is more than max_connections ({})",
                    self.min_connections, self.max_connections
                ),
            ));
        }
        for (field, timeout) in [
            ("connect_timeout", self.connect_timeout),
            ("acquire_timeout", self.acquire_timeout),
        ] {
            if timeout.is_zero() {
                return Err(Error::config(field, "a zero timeout would fail every call"));
            }
        }
        if let Some(timeout) = self.statement_timeout {
            if timeout.as_millis() == 0 || timeout.as_millis() > i32::MAX as u128 {
                return Err(Error::config(
                    "statement_timeout",
                    format!(
                        "{timeout:?} is outside 1 ms ..= {} ms (use None for no limit)",
                        i32::MAX
                    ),
                ));
            }
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::config(
                "idle_timeout",
                "zero would close every connection at once; use None to keep them",
            ));
        }
        if self.retry_budget > Duration::from_secs(3600) {
            return Err(Error::config(
                "retry_budget",
                format!("{:?} is longer than an hour", self.retry_budget),
            ));
        }
        let name = self.application_name();
        if name.len() > 63 || name.chars().any(|c| c.is_control() || !c.is_ascii()) {
            return Err(Error::config(
                "application_name",
                format!("`{name}` must be at most 63 printable ASCII characters"),
            ));
        }
        Ok(())
    }

    /// Validates the options, then connects, creates the schema if missing and applies
    /// pending migrations. See [`PostgresMetadata::open`].
    pub async fn open(self) -> Result<PostgresMetadata> {
        PostgresMetadata::open(self).await
    }

    /// sqlx's connection options: the URL's, plus the application name, the statement
    /// timeout and the schema as `search_path`, all sent in the startup packet (no extra
    /// round trip per connection).
    pub(crate) fn connect_options(&self) -> PgConnectOptions {
        let mut startup: Vec<(&str, String)> = vec![("search_path", quote_ident(&self.schema))];
        // The GC argument (crate docs) needs READ COMMITTED whatever the server's default: a
        // blob put is one autocommit statement, so it is set for the session, at no cost.
        startup.push(("default_transaction_isolation", "read committed".to_owned()));
        startup.push((
            "statement_timeout",
            self.statement_timeout
                .map_or(0, |t| t.as_millis())
                .to_string(),
        ));
        self.connect
            .clone()
            .application_name(self.application_name())
            .options(startup)
    }

    /// The URL given to sqlx (without cachet's options), with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

/// Checks a schema name (see [`PostgresConfig::with_schema`]).
fn validate_schema(schema: &str) -> Result<()> {
    let first_ok = schema
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = schema
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !first_ok || !rest_ok || schema.len() > 63 || schema.starts_with("pg_") {
        return Err(Error::config(
            "schema",
            format!(
                "`{schema}` is not accepted: use 1 to 63 lowercase ASCII letters, digits and \
                 `_`, starting with a letter or `_`, not starting with `pg_`"
            ),
        ));
    }
    Ok(())
}

/// A validated schema name as an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The URL with its password replaced by `***`.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cachet_options_are_read_and_stripped() {
        let config = PostgresConfig::from_url(
            "postgres://u:secret@h:5433/db?sslmode=disable&cachet_schema=s1&cachet_retry_budget_ms=250",
        )
        .unwrap();
        assert_eq!(config.schema(), "s1");
        assert_eq!(config.retry_budget(), Duration::from_millis(250));
        assert_eq!(
            config.redacted_url(),
            "postgres://u:***@h:5433/db?sslmode=disable"
        );
        assert_eq!(config.server(), "h:5433/db");
    }

    #[test]
    fn unknown_cachet_option_is_named() {
        let err = PostgresConfig::from_url("postgres://h/db?cachet_scheme=x").unwrap_err();
        assert!(
            matches!(err, Error::Config { ref field, .. } if field == "cachet_scheme"),
            "{err}"
        );
    }

    #[test]
    fn bad_schema_is_refused() {
        for bad in ["", "Upper", "1abc", "pg_x", "a-b", "a\"b"] {
            let err = PostgresConfig::from_url("postgres://h/db")
                .unwrap()
                .with_schema(bad)
                .validate()
                .unwrap_err();
            assert!(
                matches!(err, Error::Config { ref field, .. } if field == "schema"),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_bad_option_is_named() {
        let base = || PostgresConfig::from_url("postgres://h/db").unwrap();
        let cases: Vec<(&str, PostgresConfig)> = vec![
            ("max_connections", base().with_max_connections(0)),
            ("lock_pool_size", base().with_lock_pool_size(0)),
            ("min_connections", base().with_min_connections(11)),
            (
                "connect_timeout",
                base().with_connect_timeout(Duration::ZERO),
            ),
            (
                "acquire_timeout",
                base().with_acquire_timeout(Duration::ZERO),
            ),
            (
                "statement_timeout",
                base().with_statement_timeout(Some(Duration::from_micros(10))),
            ),
            (
                "idle_timeout",
                base().with_idle_timeout(Some(Duration::ZERO)),
            ),
            (
                "retry_budget",
                base().with_retry_budget(Duration::from_secs(7200)),
            ),
            ("application_name", base().with_application_name("a\nb")),
        ];
        for (field, config) in cases {
            let err = config.validate().unwrap_err();
            assert!(
                matches!(err, Error::Config { field: ref f, .. } if f == field),
                "{field}: {err}"
            );
        }
        base().validate().unwrap();
    }

    #[test]
    fn non_postgres_url_is_refused() {
        let err = PostgresConfig::from_url("mysql://h/db").unwrap_err();
        assert!(matches!(err, Error::Config { ref field, .. } if field == "url"));
    }
}
