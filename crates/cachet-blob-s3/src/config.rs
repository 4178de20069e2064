//! Options of the S3 blob store, and `s3://` URL parsing.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cachet_core::{Error, Result};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use crate::backend::S3Blobs;

/// The default multipart part size: 8 MiB.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// The smallest accepted part size: 5 MiB, S3's minimum for every part but the last.
pub const MIN_PART_SIZE: usize = 5 << 20;

/// The largest accepted part size: 1 GiB (a part is held in memory whole).
pub const MAX_PART_SIZE: usize = 1 << 30;

/// The default number of parts uploaded at once by one writer: 2.
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 2;

/// The largest accepted number of parts in flight per writer.
pub const MAX_PARTS_IN_FLIGHT: usize = 32;

/// The largest blob this backend stores: 5 GiB, the limit of one S3 `PutObject` and of the
/// `CopyObject` that publishes a streamed upload.
pub const MAX_OBJECT_SIZE: u64 = 5 << 30;

/// Which object store service a config is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    S3,
    #[cfg(feature = "gcs")]
    Gcs,
    #[cfg(feature = "azure")]
    Azure,
}

impl Service {
    /// (backend name, URL scheme)
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Service::S3 => ("s3", "s3"),
            #[cfg(feature = "gcs")]
            Service::Gcs => ("gcs", "gs"),
            #[cfg(feature = "azure")]
            Service::Azure => ("azure", "az"),
        }
    }
}

/// Options of [`S3Blobs`]: a consuming builder, validated by [`build`](S3Config::build).
///
/// Precedence, from strongest: builder methods called after [`from_url`](S3Config::from_url),
/// options in the URL, then the standard `AWS_*` environment variables (read by
/// [`build`](S3Config::build) through `AmazonS3Builder::from_env`, unless
/// [`with_env(false)`](S3Config::with_env)), then the defaults.
///
/// ```
/// use cachet_blob_s3::S3Config;
///
/// let config = S3Config::new("my-bucket")
///     .with_prefix("cache/blobs")
///     .with_endpoint("http://127.0.0.1:9000")
///     .with_allow_http(true)
///     .with_path_style(true);
/// let from_url = S3Config::from_url(
///     "s3://my-bucket/cache/blobs?endpoint=http://127.0.0.1:9000&allow_http=true&path_style=true",
/// )
/// .unwrap();
/// assert_eq!(config, from_url);
/// ```
#[derive(Clone, PartialEq)]
pub struct S3Config {
    service: Service,
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    region: Option<String>,
    allow_http: Option<bool>,
    path_style: Option<bool>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    conditional_put: Option<bool>,
    part_size: usize,
    parts_in_flight: usize,
    max_retries: usize,
    retry_timeout: Duration,
    init_backoff: Duration,
    max_backoff: Duration,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    use_env: bool,
    #[cfg(feature = "gcs")]
    gcs_service_account_path: Option<String>,
    #[cfg(feature = "azure")]
    azure_account: Option<String>,
    #[cfg(feature = "azure")]
    azure_access_key: Option<String>,
}

impl fmt::Debug for S3Config {
    /// Secrets are printed as `<redacted>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Config")
            .field("service", &self.service)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("conditional_put", &self.conditional_put)
            .field("part_size", &self.part_size)
            .field("parts_in_flight", &self.parts_in_flight)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .field("init_backoff", &self.init_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("use_env", &self.use_env)
            .finish_non_exhaustive()
    }
}

/// How long a request keeps being retried by default: the same order as the PostgreSQL
/// index's retry budget, so an outage of either surfaces as `Error::Unavailable` in seconds.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(15);

/// The options accepted in `s3://` URLs, for error messages.
const URL_OPTIONS: &str = "endpoint, region, allow_http, path_style, access_key_id, \
     secret_access_key, session_token, conditional_put, part_size, parts_in_flight, max_retries, \
     retry_timeout, init_backoff, max_backoff, connect_timeout, timeout, env";

impl S3Config {
    /// Blobs at the root of `bucket`, with the defaults: settings not given are read from the
    /// environment at [`build`](S3Config::build); conditional put on (unless
    /// `AWS_CONDITIONAL_PUT=disabled`); 8 MiB parts, 2 in flight; 10 retries within
    /// [`DEFAULT_RETRY_TIMEOUT`] (object_store's own default, 3 minutes, is long for a cache:
    /// a caller would rather recompute than wait that long),
    /// backoff from 100 ms up to 15 s.
    pub fn new(bucket: impl Into<String>) -> Self {
        let retry = RetryConfig::default();
        S3Config {
            service: Service::S3,
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            allow_http: None,
            path_style: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            conditional_put: None,
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            max_retries: retry.max_retries,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            init_backoff: retry.backoff.init_backoff,
            max_backoff: retry.backoff.max_backoff,
            connect_timeout: None,
            timeout: None,
            use_env: true,
            #[cfg(feature = "gcs")]
            gcs_service_account_path: None,
            #[cfg(feature = "azure")]
            azure_account: None,
            #[cfg(feature = "azure")]
            azure_access_key: None,
        }
    }

    /// Blobs in Google Cloud Storage bucket `bucket` (feature `gcs`). Credentials come from
    /// `GOOGLE_SERVICE_ACCOUNT` / `GOOGLE_APPLICATION_CREDENTIALS` or
    /// [`with_gcs_service_account_path`](S3Config::with_gcs_service_account_path); the S3-only
    /// options (endpoint, region, path style, access keys) are refused.
    #[cfg(feature = "gcs")]
    pub fn gcs(bucket: impl Into<String>) -> Self {
        S3Config {
            service: Service::Gcs,
            ..S3Config::new(bucket)
        }
    }

    /// Blobs in Azure Blob Storage container `container` of storage account `account`
    /// (feature `azure`; an empty account is read from `AZURE_STORAGE_ACCOUNT_NAME`).
    #[cfg(feature = "azure")]
    pub fn azure(account: impl Into<String>, container: impl Into<String>) -> Self {
        let account = account.into();
        S3Config {
            service: Service::Azure,
            azure_account: (!account.is_empty()).then_some(account),
            ..S3Config::new(container)
        }
    }

    /// The service account JSON file for Google Cloud Storage.
    #[cfg(feature = "gcs")]
    pub fn with_gcs_service_account_path(mut self, path: impl Into<String>) -> Self {
        self.gcs_service_account_path = Some(path.into());
        self
    }

    /// The storage account key for Azure (default: `AZURE_STORAGE_ACCOUNT_KEY`, or other
    /// Azure credentials from the environment).
    #[cfg(feature = "azure")]
    pub fn with_azure_access_key(mut self, key: impl Into<String>) -> Self {
        self.azure_access_key = Some(key.into());
        self
    }

    /// The backend's name: `s3`, or `gcs` / `azure` for configs made with
    /// `S3Config::gcs` / `S3Config::azure` (features `gcs` / `azure`) or `gs://` / `az://` URLs.
    pub fn backend_name(&self) -> &'static str {
        self.service.names().0
    }

    /// The bucket named by `AWS_BUCKET` (or `AWS_BUCKET_NAME`), everything else as
    /// [`new`](S3Config::new).
    pub fn from_env() -> Result<Self> {
        let bucket = ["AWS_BUCKET", "AWS_BUCKET_NAME"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
            .ok_or_else(|| {
                Error::config(
                    "bucket",
                    "no bucket given: set AWS_BUCKET or use S3Config::new(bucket)",
                )
            })?;
        Ok(S3Config::new(bucket))
    }

    /// Parses `s3://bucket/prefix?option=value&...`.
    ///
    /// Options: `endpoint` (URL of an S3-compatible server), `region`, `allow_http`
    /// (`true` to allow `http://` endpoints), `path_style` (`true` for `endpoint/bucket/key`
    /// requests, as MinIO-like servers want), `access_key_id`, `secret_access_key`,
    /// `session_token`, `conditional_put` (`false` for servers that ignore `If-None-Match`),
    /// `part_size` (bytes, or with a `KiB`/`MiB`/`GiB` suffix), `parts_in_flight`,
    /// `max_retries`, `retry_timeout`, `init_backoff`, `max_backoff`, `connect_timeout`,
    /// `timeout` (durations: `500ms`, `30s`, `2m`, or plain seconds), `env` (`false` to
    /// ignore `AWS_*` variables).
    ///
    /// Credentials in a URL work but are **discouraged**: URLs end up in logs, shell history
    /// and process listings. Prefer the environment (`AWS_ACCESS_KEY_ID`, ...) or the builder.
    /// An unknown option is an error naming it, so a typo is not silently ignored; values are
    /// range-checked by [`build`](S3Config::build).
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| {
            Error::config(
                "url",
                format!("`{url}` is not a URL ({e}); expected s3://bucket/prefix"),
            )
        })?;
        let service = match parsed.scheme() {
            "s3" => Service::S3,
            #[cfg(feature = "gcs")]
            "gs" => Service::Gcs,
            #[cfg(feature = "azure")]
            "az" => Service::Azure,
            other => {
                return Err(Error::config(
                    "url.scheme",
                    format!(
                        "`{other}` is not supported by this blob store; use s3://bucket/prefix{}{}",
                        if cfg!(feature = "gcs") {
                            ", gs://bucket/prefix"
                        } else {
                            ""
                        },
                        if cfg!(feature = "azure") {
                            ", az://container/prefix"
                        } else {
                            ""
                        },
                    ),
                ));
            }
        };
        if !parsed.username().is_empty() || parsed.password().is_some() || parsed.port().is_some() {
            return Err(Error::config(
                "url",
                "s3:// URLs take no user, password or port; pass credentials as \
                 access_key_id/secret_access_key options or AWS_* variables, and the server \
                 as endpoint=",
            ));
        }
        let bucket = parsed.host_str().unwrap_or_default();
        if bucket.is_empty() {
            return Err(Error::config(
                "bucket",
                format!("`{url}` names no bucket; use s3://bucket/prefix"),
            ));
        }
        let prefix = percent_decode(parsed.path(), "prefix")?;
        let mut config = S3Config {
            service,
            ..S3Config::new(bucket).with_prefix(prefix)
        };
        for (name, value) in parsed.query_pairs() {
            let value = value.into_owned();
            match &*name {
                #[cfg(feature = "gcs")]
                "service_account_path" if service == Service::Gcs => {
                    config.gcs_service_account_path = Some(value)
                }
                #[cfg(feature = "azure")]
                "account" if service == Service::Azure => config.azure_account = Some(value),
                #[cfg(feature = "azure")]
                "access_key" if service == Service::Azure => config.azure_access_key = Some(value),
                "endpoint" => config.endpoint = Some(value),
                "region" => config.region = Some(value),
                "allow_http" => config.allow_http = Some(parse_bool("allow_http", &value)?),
                "path_style" => config.path_style = Some(parse_bool("path_style", &value)?),
                "access_key_id" => config.access_key_id = Some(value),
                "secret_access_key" => config.secret_access_key = Some(value),
                "session_token" => config.session_token = Some(value),
                "conditional_put" => {
                    config.conditional_put = Some(parse_bool("conditional_put", &value)?)
                }
                "part_size" => config.part_size = parse_size("part_size", &value)?,
                "parts_in_flight" => {
                    config.parts_in_flight = parse_number("parts_in_flight", &value)?
                }
                "max_retries" => config.max_retries = parse_number("max_retries", &value)?,
                "retry_timeout" => config.retry_timeout = parse_duration("retry_timeout", &value)?,
                "init_backoff" => config.init_backoff = parse_duration("init_backoff", &value)?,
                "max_backoff" => config.max_backoff = parse_duration("max_backoff", &value)?,
                "connect_timeout" => {
                    config.connect_timeout = Some(parse_duration("connect_timeout", &value)?)
                }
                "timeout" => config.timeout = Some(parse_duration("timeout", &value)?),
                "env" => config.use_env = parse_bool("env", &value)?,
                other => {
                    return Err(Error::config(
                        other,
                        format!("unknown option for s3:// blob URLs; accepted: {URL_OPTIONS}"),
                    ));
                }
            }
        }
        Ok(config)
    }

    /// Stores blobs under `prefix` in the bucket (`a/b`; leading and trailing `/` are ignored;
    /// default: the bucket root). Give each store its own prefix: `list` reports every blob
    /// under it.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_matches('/').to_string();
        self
    }

    /// The server's URL, for S3-compatible servers (default: AWS, or `AWS_ENDPOINT_URL`).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The region (default `AWS_REGION`, else `us-east-1`).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Allows `http://` endpoints (default `false`, or `AWS_ALLOW_HTTP`).
    pub fn with_allow_http(mut self, allow: bool) -> Self {
        self.allow_http = Some(allow);
        self
    }

    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted style
    /// (`bucket.endpoint/key`); MinIO-like servers want path style. Default: path style, as
    /// object_store does, unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
    pub fn with_path_style(mut self, path_style: bool) -> Self {
        self.path_style = Some(path_style);
        self
    }

    /// Static credentials (default: the environment, then the instance or container role).
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.access_key_id = Some(access_key_id.into());
        self.secret_access_key = Some(secret_access_key.into());
        self
    }

    /// A session token for temporary credentials.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// Whether `put` asks the server to create objects only if absent (`If-None-Match: *`).
    /// Default on (unless `AWS_CONDITIONAL_PUT=disabled`). Turn it off for servers that ignore
    /// the header or reject it.
    pub fn with_conditional_put(mut self, enabled: bool) -> Self {
        self.conditional_put = Some(enabled);
        self
    }

    /// The multipart part size of streamed writes (default 8 MiB; accepted 5 MiB ..= 1 GiB).
    /// Values smaller than one part are buffered and sent with a single `PUT`.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes;
        self
    }

    /// How many parts one writer uploads at once (default 2; accepted 1 ..= 32). A writer
    /// holds at most `(parts_in_flight + 1) × part_size` bytes.
    pub fn with_parts_in_flight(mut self, parts: usize) -> Self {
        self.parts_in_flight = parts;
        self
    }

    /// How many times a failed request is retried (default 10). Retried: connection errors,
    /// timeouts of idempotent requests, 5xx and 429 answers.
    pub fn with_max_retries(mut self, retries: usize) -> Self {
        self.max_retries = retries;
        self
    }

    /// How long a request may keep being retried (default [`DEFAULT_RETRY_TIMEOUT`]).
    pub fn with_retry_timeout(mut self, timeout: Duration) -> Self {
        self.retry_timeout = timeout;
        self
    }

    /// The exponential backoff between retries: first delay and largest delay (default
    /// 100 ms and 15 s, doubling, with jitter).
    pub fn with_backoff(mut self, init: Duration, max: Duration) -> Self {
        self.init_backoff = init;
        self.max_backoff = max;
        self
    }

    /// The time allowed to connect (default: object_store's 5 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The time allowed for one request, including the body (default: object_store's 30 s).
    /// Raise it for large parts over slow links.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether [`build`](S3Config::build) reads the standard `AWS_*` environment variables
    /// for options not set here (default `true`).
    pub fn with_env(mut self, use_env: bool) -> Self {
        self.use_env = use_env;
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix inside the bucket (empty for the root), without leading or trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The endpoint set here or in the URL (the environment is read at build time).
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The region set here or in the URL.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// Whether `http://` is allowed, if set here or in the URL.
    pub fn allow_http(&self) -> Option<bool> {
        self.allow_http
    }

    /// Whether path-style requests are used, if set here or in the URL.
    pub fn path_style(&self) -> Option<bool> {
        self.path_style
    }

    /// The access key id set here or in the URL.
    pub fn access_key_id(&self) -> Option<&str> {
        self.access_key_id.as_deref()
    }

    /// Whether a secret access key is set here or in the URL (the key itself is not exposed).
    pub fn has_secret_access_key(&self) -> bool {
        self.secret_access_key.is_some()
    }

    /// Whether a session token is set here or in the URL.
    pub fn has_session_token(&self) -> bool {
        self.session_token.is_some()
    }

    /// Whether conditional put is requested, if set here or in the URL.
    pub fn conditional_put(&self) -> Option<bool> {
        self.conditional_put
    }

    /// The multipart part size in bytes.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// The number of parts one writer uploads at once.
    pub fn parts_in_flight(&self) -> usize {
        self.parts_in_flight
    }

    /// The retry budget: how many retries, within how long.
    pub fn retry(&self) -> (usize, Duration) {
        (self.max_retries, self.retry_timeout)
    }

    /// The backoff between retries: first and largest delay.
    pub fn backoff(&self) -> (Duration, Duration) {
        (self.init_backoff, self.max_backoff)
    }

    /// The connect timeout, if set.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// The request timeout, if set.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the `AWS_*` environment is read at build time.
    pub fn use_env(&self) -> bool {
        self.use_env
    }

    /// Checks every option set here without touching the network or the environment; the
    /// error names the first bad field. [`build`](S3Config::build) also checks the values the
    /// environment supplies.
    pub fn validate(&self) -> Result<()> {
        validate_bucket(&self.bucket)?;
        if self.service != Service::S3 {
            let s3_only = [
                ("endpoint", self.endpoint.is_some()),
                ("region", self.region.is_some()),
                ("path_style", self.path_style.is_some()),
                ("access_key_id", self.access_key_id.is_some()),
                ("secret_access_key", self.secret_access_key.is_some()),
                ("session_token", self.session_token.is_some()),
            ];
            if let Some((field, _)) = s3_only.iter().find(|(_, set)| *set) {
                return Err(Error::config(
                    field,
                    format!(
                        "applies to S3 only, not to {} (configure {} through its own \
                         options and environment variables)",
                        self.backend_name(),
                        self.backend_name()
                    ),
                ));
            }
        }
        self.prefix_path()?;
        if let Some(endpoint) = &self.endpoint {
            validate_endpoint(endpoint, true)?;
        }
        if let Some(region) = &self.region {
            if region.is_empty()
                || !region
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(Error::config(
                    "region",
                    format!("`{region}` is not a region name (like us-east-1)"),
                ));
            }
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => {
                return Err(Error::config(
                    "secret_access_key",
                    "access_key_id is set but secret_access_key is not; give both or neither",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "access_key_id",
                    "secret_access_key is set but access_key_id is not; give both or neither",
                ));
            }
            (Some(id), Some(_)) if id.is_empty() => {
                return Err(Error::config("access_key_id", "the access key id is empty"));
            }
            _ => {}
        }
        if self.session_token.is_some() && self.access_key_id.is_none() {
            return Err(Error::config(
                "session_token",
                "a session token needs access_key_id and secret_access_key",
            ));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(Error::config(
                "part_size",
                format!(
                    "{} bytes is out of range; use {MIN_PART_SIZE} ..= {MAX_PART_SIZE} bytes \
                     (5 MiB ..= 1 GiB; S3 rejects parts under 5 MiB)",
                    self.part_size
                ),
            ));
        }
        if !(1..=MAX_PARTS_IN_FLIGHT).contains(&self.parts_in_flight) {
            return Err(Error::config(
                "parts_in_flight",
                format!(
                    "{} is out of range; use 1 ..= {MAX_PARTS_IN_FLIGHT}",
                    self.parts_in_flight
                ),
            ));
        }
        if self.retry_timeout.is_zero() {
            return Err(Error::config(
                "retry_timeout",
                "must be positive (use max_retries=0 to disable retries)",
            ));
        }
        if self.init_backoff.is_zero() {
            return Err(Error::config("init_backoff", "must be positive"));
        }
        if self.max_backoff < self.init_backoff {
            return Err(Error::config(
                "max_backoff",
                format!(
                    "{:?} is less than init_backoff ({:?})",
                    self.max_backoff, self.init_backoff
                ),
            ));
        }
        if self.connect_timeout.is_some_and(|d| d.is_zero()) {
            return Err(Error::config("connect_timeout", "must be positive"));
        }
        if self.timeout.is_some_and(|d| d.is_zero()) {
            return Err(Error::config("timeout", "must be positive"));
        }
        Ok(())
    }

    /// Validates the options (with the environment's values), and creates the client. Does
    /// not contact the server: a wrong endpoint or bucket shows on the first request.
    pub fn build(self) -> Result<S3Blobs> {
        self.validate()?;
        crate::tls::ensure_crypto_provider();
        let prefix = self.prefix_path()?;
        let (store, conditional_put) = match self.service {
            Service::S3 => self.build_s3()?,
            #[cfg(feature = "gcs")]
            Service::Gcs => self.build_gcs()?,
            #[cfg(feature = "azure")]
            Service::Azure => self.build_azure()?,
        };
        let (name, scheme) = self.service.names();
        Ok(S3Blobs::new(
            store,
            crate::backend::Settings {
                name,
                scheme,
                bucket: self.bucket,
                prefix,
                conditional_put,
                part_size: self.part_size,
                parts_in_flight: self.parts_in_flight,
            },
        ))
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.init_backoff,
                max_backoff: self.max_backoff,
                base: BackoffConfig::default().base,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }

    /// The client options set here, as (key, value) pairs for any builder's `with_config`.
    fn client_settings(&self) -> Vec<(ClientConfigKey, String)> {
        let mut settings = Vec::new();
        if let Some(t) = self.connect_timeout {
            settings.push((
                ClientConfigKey::ConnectTimeout,
                format!("{}ms", t.as_millis()),
            ));
        }
        if let Some(t) = self.timeout {
            settings.push((ClientConfigKey::Timeout, format!("{}ms", t.as_millis())));
        }
        if let Some(allow) = self.allow_http {
            settings.push((ClientConfigKey::AllowHttp, allow.to_string()));
        }
        settings
    }

    fn build_error(&self, e: object_store::Error) -> Error {
        let (name, scheme) = self.service.names();
        Error::config(
            name,
            format!(
                "cannot configure the {name} client for {scheme}://{}: {e}",
                self.bucket
            ),
        )
    }

    #[cfg(feature = "gcs")]
    fn build_gcs(&self) -> Result<(Arc<dyn ObjectStore>, bool)> {
        use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
        let mut builder = if self.use_env {
            GoogleCloudStorageBuilder::from_env()
        } else {
            GoogleCloudStorageBuilder::new()
        };
        builder = builder
            .with_bucket_name(&self.bucket)
            .with_retry(self.retry_config());
        if let Some(path) = &self.gcs_service_account_path {
            builder = builder.with_service_account_path(path);
        }
        for (key, value) in self.client_settings() {
            builder = builder.with_config(GoogleConfigKey::Client(key), value);
        }
        let store = builder.build().map_err(|e| self.build_error(e))?;
        Ok((Arc::new(store), self.conditional_put.unwrap_or(true)))
    }

    #[cfg(feature = "azure")]
    fn build_azure(&self) -> Result<(Arc<dyn ObjectStore>, bool)> {
        use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
        let mut builder = if self.use_env {
            MicrosoftAzureBuilder::from_env()
        } else {
            MicrosoftAzureBuilder::new()
        };
        builder = builder
            .with_container_name(&self.bucket)
            .with_retry(self.retry_config());
        if let Some(account) = &self.azure_account {
            builder = builder.with_account(account);
        }
        if let Some(key) = &self.azure_access_key {
            builder = builder.with_access_key(key);
        }
        for (key, value) in self.client_settings() {
            builder = builder.with_config(AzureConfigKey::Client(key), value);
        }
        let store = builder.build().map_err(|e| self.build_error(e))?;
        Ok((Arc::new(store), self.conditional_put.unwrap_or(true)))
    }

    fn build_s3(&self) -> Result<(Arc<dyn ObjectStore>, bool)> {
        let mut builder = if self.use_env {
            AmazonS3Builder::from_env()
        } else {
            AmazonS3Builder::new()
        };
        builder = builder.with_bucket_name(&self.bucket);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(path_style) = self.path_style {
            builder = builder.with_virtual_hosted_style_request(!path_style);
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            // A provider of our own, so a token from the environment is never paired with
            // these keys.
            let credential = object_store::aws::AwsCredential {
                key_id: id.clone(),
                secret_key: secret.clone(),
                token: self.session_token.clone(),
            };
            builder = builder.with_credentials(Arc::new(
                object_store::StaticCredentialProvider::new(credential),
            ));
        }
        for (key, value) in self.client_settings() {
            builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
        }
        builder = builder.with_retry(self.retry_config());

        // The effective values, wherever they came from.
        let from_env = |key: AmazonS3ConfigKey| builder.get_config_value(&key);
        let conditional_put = match self.conditional_put {
            Some(enabled) => enabled,
            None => from_env(AmazonS3ConfigKey::ConditionalPut).as_deref() != Some("disabled"),
        };
        let allow_http = from_env(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
        if let Some(endpoint) = from_env(AmazonS3ConfigKey::Endpoint).filter(|e| !e.is_empty()) {
            validate_endpoint(&endpoint, allow_http)?;
        }
        builder = builder.with_config(
            AmazonS3ConfigKey::ConditionalPut,
            if conditional_put { "etag" } else { "disabled" },
        );
        let store = builder.build().map_err(|e| self.build_error(e))?;
        Ok((Arc::new(store), conditional_put))
    }

    fn prefix_path(&self) -> Result<Path> {
        if self.prefix.is_empty() {
            return Ok(Path::default());
        }
        for segment in self.prefix.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(Error::config(
                    "prefix",
                    format!(
                        "`{}` has an empty, `.` or `..` component; use names separated by \
                         single `/`",
                        self.prefix
                    ),
                ));
            }
        }
        Path::parse(&self.prefix).map_err(|e| {
            Error::config(
                "prefix",
                format!("`{}` is not a valid object name prefix: {e}", self.prefix),
            )
        })
    }
}

fn validate_bucket(bucket: &str) -> Result<()> {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
    if bucket.is_empty() || bucket.len() > 255 || !bucket.bytes().all(ok_char) {
        return Err(Error::config(
            "bucket",
            format!(
                "`{bucket}` is not a bucket name; use letters, digits, `.`, `-` and `_` \
                 (AWS: 3 to 63 lowercase characters)"
            ),
        ));
    }
    Ok(())
}

/// Checks an endpoint URL; `allow_http` says whether `http://` is acceptable.
fn validate_endpoint(endpoint: &str, allow_http: bool) -> Result<()> {
    let url = url::Url::parse(endpoint).map_err(|e| {
        Error::config(
            "endpoint",
            format!("`{endpoint}` is not a URL ({e}); use like https://s3.example.com:9000"),
        )
    })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http => Ok(()),
        "http" => Err(Error::config(
            "allow_http",
            format!(
                "the endpoint `{endpoint}` is plain http, which is refused unless allowed: set \
                 allow_http=true (or AWS_ALLOW_HTTP=true), or use https"
            ),
        )),
        other => Err(Error::config(
            "endpoint",
            format!("`{endpoint}` has scheme `{other}`; use http:// or https://"),
        )),
    }
}

fn percent_decode(s: &str, field: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(b) = hex else {
                return Err(Error::config(
                    field,
                    format!("`{s}` has a bad percent escape"),
                ));
            };
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::config(field, format!("`{s}` is not UTF-8 once decoded")))
}

fn parse_bool(field: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(Error::config(
            field,
            format!("`{other}` is not a boolean; use true or false"),
        )),
    }
}

fn parse_number(field: &str, value: &str) -> Result<usize> {
    value.parse::<usize>().map_err(|_| {
        Error::config(
            field,
            format!("`{value}` is not a non-negative whole number"),
        )
    })
}

fn parse_size(field: &str, value: &str) -> Result<usize> {
    let (digits, unit) = if let Some(n) = value.strip_suffix("GiB") {
        (n, 1 << 30)
    } else if let Some(n) = value.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = value.strip_suffix("KiB") {
        (n, 1 << 10)
    } else {
        (value, 1)
    };
    digits
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| {
            Error::config(
                field,
                format!(
                    "`{value}` is not a size; use a number of bytes, optionally with KiB, MiB \
                     or GiB"
                ),
            )
        })
}

fn parse_duration(field: &str, value: &str) -> Result<Duration> {
    let (digits, unit_ms) = if let Some(n) = value.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = value.strip_suffix('m') {
        (n, 60_000)
    } else {
        (value, 1000)
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .map(Duration::from_millis)
        .ok_or_else(|| {
            Error::config(
                field,
                format!(
                    "`{value}` is not a duration; use a whole number with ms, s or m (plain \
                     numbers are seconds)"
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_accept_their_suffixes() {
        assert_eq!(parse_size("f", "4096").unwrap(), 4096);
        assert_eq!(parse_size("f", "8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("f", "1GiB").unwrap(), 1 << 30);
        assert!(parse_size("f", "8MB").is_err());
        assert_eq!(
            parse_duration("f", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("f", "30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("f", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("f", "7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("f", "1h").is_err());
        assert!(parse_duration("f", "-1s").is_err());
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = S3Config::new("b")
            .with_credentials("AKID", "very-secret")
            .with_session_token("tok-secret");
        let printed = format!("{c:?}");
        assert!(printed.contains("AKID"));
        assert!(!printed.contains("very-secret") && !printed.contains("tok-secret"));
    }
}
