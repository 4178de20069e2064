#![cfg(all(feature = "meta-postgres", feature = "blob-s3"))]
//! Fault injection against the real services: PostgreSQL restarted or its connections reset,
//! S3 stopped, refusing requests (503) or resetting connections.
//!
//! The promises checked: an outage surfaces as a retryable error (`Error::Unavailable`) or is
//! retried away; no read returns a value that was not written for its key; nothing
//! acknowledged is lost and nothing half-written is visible; after the outage everything
//! works again. Tests that stop or restart a server start their own instance with the
//! project's scripts (in a fresh `CI_SERVICES_DIR`); the others use the shared services and
//! their own schema or bucket prefix.

#[path = "support/proxy.rs"]
mod proxy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cachet_cache::Cache;
use cachet_core::Error;
use cachet_core::testing::service_env;

use proxy::{Mode, Proxy};

// ------------------------------------------------------------------ services

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services")
}

/// A name no other test run uses (schemas, bucket prefixes).
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Parses the `export K=V K2=V2` lines a start script prints.
fn parse_exports(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Service {
    Postgres,
    S3,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::S3 => "s3",
        }
    }
}

/// A server of this test's own, under its own `CI_SERVICES_DIR`; stopped when dropped (also
/// on panic).
struct OwnServer {
    service: Service,
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl OwnServer {
    async fn start(service: Service) -> OwnServer {
        // The PostgreSQL OS user must get through the directory: 0755 under /tmp, not a
        // 0700 tempdir.
        let dir = tempfile::Builder::new()
            .prefix("cachet-fault-")
            .tempdir_in("/tmp")
            .unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut server = OwnServer {
            service,
            dir,
            env: HashMap::new(),
        };
        server.env = server.run_start(&[]).await;
        server
    }

    async fn run_script(&self, script: &str, args: &[&str], env: &[(&str, String)]) -> String {
        let out = tokio::process::Command::new("bash")
            .arg(scripts_dir().join(script))
            .args(args)
            .env("CI_SERVICES_DIR", self.dir.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn run_start(&self, env: &[(&str, String)]) -> HashMap<String, String> {
        let script = format!("start-{}.sh", self.service.name());
        parse_exports(&self.run_script(&script, &[], env).await)
    }

    async fn stop(&self) {
        let script = format!("stop-{}.sh", self.service.name());
        self.run_script(&script, &[], &[]).await;
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("the start script printed no {name}: {:?}", self.env))
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let script = scripts_dir().join(format!("stop-{}.sh", self.service.name()));
        let _ = std::process::Command::new("bash")
            .arg(script)
            .env("CI_SERVICES_DIR", self.dir.path())
            .output();
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL.
fn pg_host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap().to_owned()
}

/// `host:port` of an `http://host:port` endpoint.
fn http_host_port(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.split('/').next().unwrap().to_owned()
}

async fn resolve(host_port: &str) -> SocketAddr {
    tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// The index URL: `db_url` in a fresh schema, with cachet options appended.
fn index_url(db_url: &str, options: &str) -> String {
    let sep = if db_url.contains('?') { '&' } else { '?' };
    format!(
        "{db_url}{sep}cachet_schema={}&{options}",
        unique("fault").to_ascii_lowercase()
    )
}

/// The blob URL: a fresh prefix of `bucket` at `endpoint`, with object_store options.
fn blob_url(endpoint: &str, bucket: &str, options: &str) -> String {
    format!(
        "s3://{bucket}/{}?endpoint={endpoint}&allow_http=true&region=us-east-1\
         &access_key_id=test&secret_access_key=test&env=false&{options}",
        unique("fault")
    )
}

fn shared_bucket() -> String {
    std::env::var("S3_BUCKET").unwrap_or_else(|_| "test-bucket".to_owned())
}

async fn open(index: String, blobs: String) -> Cache {
    Cache::builder()
        .index(index.clone())
        .blobs(blobs.clone())
        .build()
        .await
        .unwrap_or_else(|e| panic!("opening the cache on {index} + {blobs}: {e}"))
}

// ------------------------------------------------------------------ values

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Whether version `version` of `key` is stored in a blob (> 16 KiB) or inline.
fn is_large(key: &str, version: u32) -> bool {
    (fnv(&[key.as_bytes()]) + u64::from(version)) % 2 == 0
}

/// The content of version `version` of `key`: a readable header, then incompressible bytes
/// (40 KiB in all for blob values, 200 bytes for inline ones).
fn value(key: &str, version: u32) -> Vec<u8> {
    let len = if is_large(key, version) {
        40 * 1024
    } else {
        200
    };
    let mut out = format!("{key}#{version}#").into_bytes();
    let mut x = fnv(&[key.as_bytes(), &version.to_le_bytes()]) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out
}

/// The version a read value claims to be, if it is exactly what [`value`] makes for `key`.
fn version_of(key: &str, bytes: &[u8]) -> Result<u32, String> {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    let mut fields = text.splitn(3, '#');
    let (Some(k), Some(v)) = (fields.next(), fields.next()) else {
        return Err(format!(
            "{key}: read {} bytes without a header",
            bytes.len()
        ));
    };
    if k != key {
        return Err(format!("{key}: read a value written for key {k}"));
    }
    let v: u32 = v
        .parse()
        .map_err(|_| format!("{key}: read a value with a bad version `{v}`"))?;
    if bytes != value(key, v).as_slice() {
        return Err(format!(
            "{key}: read version {v} with wrong content ({} bytes)",
            bytes.len()
        ));
    }
    Ok(v)
}

// ------------------------------------------------------------------ workload

/// What happened to one key.
#[derive(Debug, Default, Clone, Copy)]
struct KeyLedger {
    /// The last version whose put returned Ok.
    acked: Option<u32>,
    /// The last version a put was attempted for (it may have committed even if it failed).
    attempted: u32,
}

#[derive(Debug, Default)]
struct Report {
    keys: HashMap<String, KeyLedger>,
    ok_ops: u64,
    /// Operations that finished Ok after the fault was over.
    ok_ops_after: u64,
    /// Failures with a retryable error: (operation, how long it took, error).
    retryable: Vec<(String, Duration, String)>,
    /// Failures with any other error, and data-check violations: each one is a bug.
    violations: Vec<String>,
    /// The slowest successful operation.
    slowest_ok: Duration,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.keys.extend(other.keys);
        self.ok_ops += other.ok_ops;
        self.ok_ops_after += other.ok_ops_after;
        self.retryable.extend(other.retryable);
        self.violations.extend(other.violations);
        self.slowest_ok = self.slowest_ok.max(other.slowest_ok);
    }

    fn failed(&mut self, op: String, took: Duration, e: &Error) {
        if e.is_retryable() {
            self.retryable.push((op, took, e.to_string()));
        } else {
            self.violations
                .push(format!("{op}: non-retryable error after {took:?}: {e:?}"));
        }
    }

    /// Checks a read of `key` against what was written: a version in
    /// `[last acknowledged, last attempted]`, exact content, and no miss once acknowledged.
    fn check_read(&mut self, key: &str, read: Option<&[u8]>) {
        let ledger = self.keys.get(key).copied().unwrap_or_default();
        match (read, ledger.acked) {
            (None, Some(acked)) => self.violations.push(format!(
                "{key}: read a miss after version {acked} was acknowledged"
            )),
            (None, None) => {}
            (Some(bytes), _) => match version_of(key, bytes) {
                Err(e) => self.violations.push(e),
                Ok(v) if v > ledger.attempted || ledger.attempted == 0 => self.violations.push(
                    format!("{key}: read version {v}, never written ({ledger:?})"),
                ),
                Ok(v) if ledger.acked.is_some_and(|a| v < a) => self.violations.push(format!(
                    "{key}: read version {v}, older than the acknowledged {ledger:?}"
                )),
                Ok(_) => {}
            },
        }
    }
}

/// Writes and reads `keys` keys in a loop until `stop`, checking every read. Sequential, so
/// the ledger of each key is exact.
async fn workload(
    cache: Cache,
    name: String,
    keys: u32,
    stop: Arc<AtomicBool>,
    fault_over: Arc<AtomicBool>,
) -> Report {
    let mut report = Report::default();
    let keys: Vec<String> = (0..keys).map(|i| format!("{name}-k{i}")).collect();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let key = &keys[i % keys.len()];
        // Put the next version.
        let version = report.keys.get(key).map_or(1, |l| l.attempted + 1);
        report.keys.entry(key.clone()).or_default().attempted = version;
        let data = value(key, version);
        let after = fault_over.load(Ordering::Relaxed);
        let started = Instant::now();
        match cache.insert_bytes(key.as_str(), &data).await {
            Ok(_) => {
                report.keys.get_mut(key).unwrap().acked = Some(version);
                report.ok_ops += 1;
                report.ok_ops_after += u64::from(after);
                report.slowest_ok = report.slowest_ok.max(started.elapsed());
            }
            Err(e) => report.failed(format!("put {key} v{version}"), started.elapsed(), &e),
        }
        // Read it back, and another key.
        let other = &keys[(i * 7 + 3) % keys.len()];
        for read_key in [key, other] {
            let after = fault_over.load(Ordering::Relaxed);
            let started = Instant::now();
            match cache.get_bytes(read_key.as_str()).await {
                Ok(read) => {
                    report.ok_ops += 1;
                    report.ok_ops_after += u64::from(after);
                    report.slowest_ok = report.slowest_ok.max(started.elapsed());
                    report.check_read(read_key, read.as_deref());
                }
                Err(e) => report.failed(format!("get {read_key}"), started.elapsed(), &e),
            }
        }
        i += 1;
    }
    report
}

/// Runs one workload per cache while `fault` runs, then `settle` more; returns their reports
/// (in the order of `caches`).
async fn under_fault<F: std::future::Future<Output = ()>>(
    caches: &[&Cache],
    fault: F,
    settle: Duration,
) -> Vec<Report> {
    let stop = Arc::new(AtomicBool::new(false));
    let fault_over = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = caches
        .iter()
        .enumerate()
        .map(|(t, cache)| {
            tokio::spawn(workload(
                (*cache).clone(),
                format!("w{t}"),
                12,
                Arc::clone(&stop),
                Arc::clone(&fault_over),
            ))
        })
        .collect();
    fault.await;
    fault_over.store(true, Ordering::Relaxed);
    tokio::time::sleep(settle).await;
    stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    for h in handles {
        reports.push(h.await.expect("a workload task panicked"));
    }
    reports
}

/// After the fault: every key reads back its last acknowledged version (or a later attempted
/// one), every operation succeeds, and fresh writes read back.
async fn check_final_state(cache: &Cache, report: &mut Report) {
    let keys: Vec<String> = report.keys.keys().cloned().collect();
    for key in &keys {
        match cache.get_bytes(key.as_str()).await {
            Ok(read) => report.check_read(key, read.as_deref()),
            Err(e) => report
                .violations
                .push(format!("final get {key} after the fault: {e:?}")),
        }
        // And the key can be written again.
        let version = report.keys[key].attempted + 1;
        report.keys.get_mut(key).unwrap().attempted = version;
        match cache.insert_bytes(key.as_str(), value(key, version)).await {
            Ok(_) => report.keys.get_mut(key).unwrap().acked = Some(version),
            Err(e) => report
                .violations
                .push(format!("final put {key} after the fault: {e:?}")),
        }
        match cache.get_bytes(key.as_str()).await {
            Ok(read) => {
                if read.as_deref() != Some(value(key, version).as_slice()) {
                    report.violations.push(format!(
                        "final get {key}: not the version {version} just written"
                    ));
                }
            }
            Err(e) => report
                .violations
                .push(format!("final get {key} after rewrite: {e:?}")),
        }
    }
}

fn summarize(report: &Report) -> String {
    let slowest_failure = report.retryable.iter().map(|(_, d, _)| *d).max();
    format!(
        "{} ok ops ({} after the fault), {} retryable failures (slowest {:?}), slowest ok op \
         {:?}, {} keys, {} acknowledged",
        report.ok_ops,
        report.ok_ops_after,
        report.retryable.len(),
        slowest_failure,
        report.slowest_ok,
        report.keys.len(),
        report.keys.values().filter(|l| l.acked.is_some()).count()
    )
}

fn assert_no_violations(report: &Report) {
    assert!(
        report.violations.is_empty(),
        "{} violations (first 10): {:#?}\nretryable failures (first 5): {:#?}",
        report.violations.len(),
        &report.violations[..report.violations.len().min(10)],
        &report.retryable[..report.retryable.len().min(5)]
    );
}

fn assert_retryable<E: std::borrow::Borrow<Error>>(
    what: &str,
    result: Result<impl std::fmt::Debug, E>,
) -> E {
    match result {
        Ok(v) => panic!("{what}: succeeded ({v:?}) while the service was down"),
        Err(e) => {
            assert!(
                e.borrow().is_retryable(),
                "{what}: non-retryable error {:?}",
                e.borrow()
            );
            e
        }
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_workload_is_survived_and_loses_nothing() {
    if service_env("DATABASE_URL").is_none() {
        return;
    }
    let Some(s3) = service_env("S3_ENDPOINT") else {
        return;
    };
    let pg = OwnServer::start(Service::Postgres).await;
    // A retry budget that outlasts the outage: callers must not notice it.
    let budget = Duration::from_secs(10);
    let cache = open(
        index_url(
            pg.var("DATABASE_URL"),
            &format!(
                "cachet_retry_budget_ms={}&cachet_connect_timeout_ms=1000",
                budget.as_millis()
            ),
        ),
        blob_url(&s3, &shared_bucket(), ""),
    )
    .await;

    let restart_took = std::sync::Mutex::new(Duration::ZERO);
    let fault = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let started = Instant::now();
        pg.run_script("restart-postgres.sh", &["2"], &[]).await;
        *restart_took.lock().unwrap() = started.elapsed();
    };
    let mut report = under_fault(&[&cache, &cache], fault, Duration::from_millis(1500))
        .await
        .into_iter()
        .fold(Report::default(), |mut all, r| {
            all.merge(r);
            all
        });
    let restart_took = *restart_took.lock().unwrap();
    eprintln!(
        "postgres restart, {restart_took:?} from stop to up, budget {budget:?}: {}",
        summarize(&report)
    );
    // Within the budget the restart is invisible: every operation succeeded, some waited.
    assert!(
        report.retryable.is_empty(),
        "a restart of {restart_took:?} failed operations despite a {budget:?} budget: {:#?}",
        &report.retryable[..report.retryable.len().min(5)]
    );
    assert!(
        report.slowest_ok >= Duration::from_secs(1),
        "no operation met the outage (slowest {:?})",
        report.slowest_ok
    );
    assert!(
        report.ok_ops_after > 0,
        "no operation succeeded after the restart"
    );
    check_final_state(&cache, &mut report).await;
    assert_no_violations(&report);
}

/// Waits until nothing accepts connections at `addr` (the server is down).
async fn wait_until_refused(addr: &str, within: Duration) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            started.elapsed() < within,
            "{addr} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_longer_than_the_retry_budget_fails_retryably_within_it() {
    if service_env("DATABASE_URL").is_none() {
        return;
    }
    let Some(s3) = service_env("S3_ENDPOINT") else {
        return;
    };
    let pg = OwnServer::start(Service::Postgres).await;
    let budget = Duration::from_millis(500);
    let connect_timeout = Duration::from_secs(1);
    let cache = open(
        index_url(
            pg.var("DATABASE_URL"),
            &format!(
                "cachet_retry_budget_ms={}&cachet_connect_timeout_ms={}",
                budget.as_millis(),
                connect_timeout.as_millis()
            ),
        ),
        blob_url(&s3, &shared_bucket(), ""),
    )
    .await;
    let small = tiny("outage", 1);
    let large = big("outage-large", 1);
    cache.insert_bytes("outage", &small).await.unwrap();
    cache.insert_bytes("outage-large", &large).await.unwrap();

    // Down for 4 s: far longer than the budget.
    let down = Duration::from_secs(4);
    let addr = pg_host_port(pg.var("DATABASE_URL"));
    let restart = pg.run_script("restart-postgres.sh", &["4"], &[]);
    let probe = async {
        wait_until_refused(&addr, Duration::from_secs(10)).await;
        let down_since = Instant::now();
        let mut outcomes = Vec::new();
        for op in ["get", "put", "get large", "put large"] {
            let started = Instant::now();
            let result = match op {
                "get" => cache.get_bytes("outage").await.map(|_| ()),
                "put" => cache
                    .insert_bytes("outage", tiny("outage", 2))
                    .await
                    .map(|_| ()),
                "get large" => cache.get_bytes("outage-large").await.map(|_| ()),
                _ => cache
                    .insert_bytes("outage-large", big("outage-large", 2))
                    .await
                    .map(|_| ()),
            };
            outcomes.push((op, started.elapsed(), result));
        }
        (down_since.elapsed(), outcomes)
    };
    let (_, (probed_for, outcomes)) = tokio::join!(restart, probe);
    eprintln!("postgres down {down:?}, budget {budget:?}: {outcomes:#?}");
    for (op, took, result) in &outcomes {
        assert!(
            *took < budget + connect_timeout + Duration::from_millis(500),
            "{op} while PostgreSQL was down took {took:?} and returned {result:?}, with a \
             {budget:?} retry budget: it should fail retryably within about the budget"
        );
        assert_retryable(&format!("{op} while PostgreSQL is down"), result.as_ref());
    }
    assert!(
        probed_for < down,
        "the probes outlasted the outage ({probed_for:?}): {outcomes:#?}"
    );

    // Back up: everything works, and the failed writes changed nothing.
    let read = cache.get_bytes("outage").await.unwrap().unwrap();
    assert!(read == small || read == tiny("outage", 2));
    let read = cache.get_bytes("outage-large").await.unwrap().unwrap();
    assert!(read == large || read == big("outage-large", 2));
    cache
        .insert_bytes("outage", tiny("outage", 3))
        .await
        .unwrap();
    assert_eq!(
        cache.get_bytes("outage").await.unwrap().unwrap(),
        tiny("outage", 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_stopped_then_restarted_fails_retryably_then_works_again() {
    let Some(db) = service_env("DATABASE_URL") else {
        return;
    };
    if service_env("S3_ENDPOINT").is_none() {
        return;
    }
    let s3 = OwnServer::start(Service::S3).await;
    let endpoint = s3.var("S3_ENDPOINT").to_owned();
    let port = http_host_port(&endpoint)
        .rsplit_once(':')
        .unwrap()
        .1
        .to_owned();
    // A short retry budget: 2 retries within 2 s.
    let budget = Duration::from_secs(2);
    let cache = open(
        index_url(&db, "cachet_retry_budget_ms=2000"),
        blob_url(
            &endpoint,
            s3.var("S3_BUCKET"),
            "max_retries=2&retry_timeout=2s&init_backoff=50ms&max_backoff=500ms\
             &connect_timeout=1s&timeout=5s",
        ),
    )
    .await;
    let (large, small) = ("large", "small");
    let large_v = |v: u32| big(large, v);
    let small_v = |v: u32| tiny(small, v);

    // Up: both kinds work.
    cache.insert_bytes(large, large_v(1)).await.unwrap();
    cache.insert_bytes(small, small_v(1)).await.unwrap();
    assert_eq!(cache.get_bytes(large).await.unwrap().unwrap(), large_v(1));
    assert_eq!(cache.get_bytes(small).await.unwrap().unwrap(), small_v(1));

    // Down.
    s3.stop().await;
    let started = Instant::now();
    let e = assert_retryable(
        "put of a new blob value",
        cache.insert_bytes("new-large", big("new-large", 1)).await,
    );
    let put_failed_after = started.elapsed();
    let started = Instant::now();
    assert_retryable(
        "overwrite of a blob value",
        cache.insert_bytes(large, large_v(2)).await,
    );
    let overwrite_failed_after = started.elapsed();
    let started = Instant::now();
    assert_retryable(
        "get of a blob value",
        cache.get_bytes(large).await.map(|b| b.map(|b| b.len())),
    );
    let get_failed_after = started.elapsed();
    eprintln!(
        "S3 down: put failed after {put_failed_after:?} ({e}), overwrite after \
         {overwrite_failed_after:?}, get after {get_failed_after:?}"
    );
    for took in [put_failed_after, overwrite_failed_after, get_failed_after] {
        assert!(
            took < budget + Duration::from_secs(4),
            "an operation took {took:?} to fail with a {budget:?} retry budget"
        );
    }
    // The failed put left nothing: a miss, answered by the index alone.
    assert_eq!(cache.get_bytes("new-large").await.unwrap(), None);
    assert!(!cache.contains_key("new-large").await.unwrap());
    // The failed overwrite left the previous entry (whose blob cannot be read now).
    let meta = cache
        .metadata(large)
        .await
        .unwrap()
        .expect("large is still indexed");
    assert_eq!(meta.raw_size, large_v(1).len() as u64);
    // Inline values live in the index: they still work.
    cache.insert_bytes(small, small_v(2)).await.unwrap();
    assert_eq!(cache.get_bytes(small).await.unwrap().unwrap(), small_v(2));
    cache
        .insert_bytes("small-new", tiny("small-new", 1))
        .await
        .unwrap();
    assert_eq!(
        cache.get_bytes("small-new").await.unwrap().unwrap(),
        tiny("small-new", 1)
    );

    // Up again, on the same port, empty (moto keeps its data in memory).
    s3.run_start(&[("S3_PORT", port)]).await;
    // New puts and gets work.
    cache
        .insert_bytes("after-large", big("after-large", 1))
        .await
        .unwrap();
    assert_eq!(
        cache.get_bytes("after-large").await.unwrap().unwrap(),
        big("after-large", 1)
    );
    // The entry whose blob was lost reads as a miss (non-strict), counted as an integrity
    // failure: never as wrong data.
    let failures_before = cache.stats().integrity_failures;
    assert_eq!(cache.get_bytes(large).await.unwrap(), None);
    assert_eq!(cache.stats().integrity_failures, failures_before + 1);
    // The failed put is still a miss; inline entries survived.
    assert_eq!(cache.get_bytes("new-large").await.unwrap(), None);
    assert_eq!(cache.get_bytes(small).await.unwrap().unwrap(), small_v(2));
    // The lost entry can be written again.
    cache.insert_bytes(large, large_v(3)).await.unwrap();
    assert_eq!(cache.get_bytes(large).await.unwrap().unwrap(), large_v(3));
}

/// The `n`-th distinct value of `key` stored in a blob (one of versions `2n`, `2n + 1` is).
fn big(key: &str, n: u32) -> Vec<u8> {
    let v = if is_large(key, 2 * n) {
        2 * n
    } else {
        2 * n + 1
    };
    value(key, v)
}

/// The `n`-th distinct value of `key` stored inline.
fn tiny(key: &str, n: u32) -> Vec<u8> {
    let v = if is_large(key, 2 * n) {
        2 * n + 1
    } else {
        2 * n
    };
    value(key, v)
}

/// An S3 cache on the shared PostgreSQL whose blobs go through an HTTP proxy in front of the
/// shared S3 server.
async fn cache_behind_s3_proxy(db: &str, s3: &str, s3_options: &str) -> (Cache, Proxy) {
    let proxy = Proxy::http(resolve(&http_host_port(s3)).await).await;
    let endpoint = format!("http://{}", proxy.addr());
    let cache = open(
        index_url(db, "cachet_retry_budget_ms=5000"),
        blob_url(&endpoint, &shared_bucket(), s3_options),
    )
    .await;
    (cache, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_5xx_responses_are_retried_transparently() {
    let Some(db) = service_env("DATABASE_URL") else {
        return;
    };
    let Some(s3) = service_env("S3_ENDPOINT") else {
        return;
    };
    let (cache, proxy) = cache_behind_s3_proxy(
        &db,
        &s3,
        "max_retries=3&retry_timeout=5s&init_backoff=20ms&max_backoff=200ms",
    )
    .await;
    let data = big("five-oh-three", 1);

    proxy.set_mode(Mode::Http503 { remaining: 2 });
    let started = Instant::now();
    cache
        .insert_bytes("five-oh-three", &data)
        .await
        .expect("a put through two 503s");
    let put_took = started.elapsed();
    assert_eq!(proxy.counts().answered_503, 2, "{:?}", proxy.counts());
    assert_eq!(proxy.mode(), Mode::Pass);

    proxy.set_mode(Mode::Http503 { remaining: 2 });
    let started = Instant::now();
    let read = cache
        .get_bytes("five-oh-three")
        .await
        .expect("a get through two 503s");
    let get_took = started.elapsed();
    assert_eq!(read.as_deref(), Some(data.as_slice()));
    let counts = proxy.counts();
    assert_eq!(counts.answered_503, 4, "{counts:?}");
    // At least the put's PUT (no HEAD first: the store is put-if-absent) and the get's GET.
    assert!(counts.forwarded_requests >= 2, "{counts:?}");
    eprintln!("S3 503s: put took {put_took:?}, get took {get_took:?}; proxy {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_reset_connections_fail_retryably_within_budget_then_recover() {
    let Some(db) = service_env("DATABASE_URL") else {
        return;
    };
    let Some(s3) = service_env("S3_ENDPOINT") else {
        return;
    };
    let budget = Duration::from_secs(2);
    let (cache, proxy) = cache_behind_s3_proxy(
        &db,
        &s3,
        "max_retries=2&retry_timeout=2s&init_backoff=50ms&max_backoff=500ms\
         &connect_timeout=1s&timeout=5s",
    )
    .await;
    let failed = big("reset-failed", 1);

    proxy.set_mode(Mode::Reset);
    proxy.reset_established();
    let started = Instant::now();
    let e = assert_retryable(
        "put through resetting connections",
        cache.insert_bytes("reset-failed", &failed).await,
    );
    let took = started.elapsed();
    let counts = proxy.counts();
    eprintln!("S3 resets: put failed after {took:?} ({e}); proxy {counts:?}");
    assert!(
        took < budget + Duration::from_secs(3),
        "the put took {took:?} to fail with a {budget:?} retry budget"
    );
    assert!(counts.reset_on_accept >= 1, "{counts:?}");

    proxy.set_mode(Mode::Pass);
    // The failed put left nothing visible.
    assert_eq!(cache.get_bytes("reset-failed").await.unwrap(), None);
    // Everything works again.
    let data = big("reset-after", 1);
    cache.insert_bytes("reset-after", &data).await.unwrap();
    assert_eq!(
        cache.get_bytes("reset-after").await.unwrap().as_deref(),
        Some(data.as_slice())
    );
    cache.insert_bytes("reset-failed", &failed).await.unwrap();
    assert_eq!(
        cache.get_bytes("reset-failed").await.unwrap().as_deref(),
        Some(failed.as_slice())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_reset_mid_workload_are_retried() {
    let Some(db) = service_env("DATABASE_URL") else {
        return;
    };
    let Some(s3) = service_env("S3_ENDPOINT") else {
        return;
    };
    let proxy = Proxy::tcp(resolve(&pg_host_port(&db)).await).await;
    let through_proxy = db.replacen(&pg_host_port(&db), &proxy.addr().to_string(), 1);
    let cache = open(
        index_url(&through_proxy, "cachet_retry_budget_ms=5000"),
        blob_url(&s3, &shared_bucket(), ""),
    )
    .await;

    let fault = async {
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            proxy.reset_established();
        }
    };
    let mut report = under_fault(&[&cache, &cache], fault, Duration::from_millis(800))
        .await
        .into_iter()
        .fold(Report::default(), |mut all, r| {
            all.merge(r);
            all
        });
    let counts = proxy.counts();
    eprintln!("postgres resets: {}; proxy {counts:?}", summarize(&report));
    assert!(
        counts.reset_established >= 4,
        "the resets hit no live connection: {counts:?}"
    );
    assert!(
        report.ok_ops_after > 0,
        "no operation succeeded after the resets"
    );
    check_final_state(&cache, &mut report).await;
    assert_no_violations(&report);
}

/// `mib` MiB of incompressible bytes derived from `seed`.
fn huge(seed: u64, mib: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_connection_reset_mid_read_is_retried_or_fails_retryably() {
    let Some(db) = service_env("DATABASE_URL") else {
        return;
    };
    let Some(s3) = service_env("S3_ENDPOINT") else {
        return;
    };
    let (cache, proxy) = cache_behind_s3_proxy(
        &db,
        &s3,
        "max_retries=2&retry_timeout=5s&init_backoff=20ms&max_backoff=200ms",
    )
    .await;
    // Larger than the streamed-read threshold (8 MiB): read frame by frame.
    let data = huge(7, 24);
    cache.insert_bytes("huge", &data).await.unwrap();

    let failures_before = cache.stats().integrity_failures;
    let sent_before = proxy.counts().bytes_to_clients;
    let read = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get_bytes("huge").await }
    });
    // Cut the connection once a few MiB of the body went through.
    let started = Instant::now();
    while proxy.counts().bytes_to_clients < sent_before + (4 << 20) {
        assert!(
            started.elapsed() < Duration::from_secs(10) && !read.is_finished(),
            "the read did not get going: {:?}",
            proxy.counts()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    proxy.reset_established();
    let cut_at = proxy.counts().bytes_to_clients - sent_before;
    let result = read.await.unwrap();
    let counts = proxy.counts();
    eprintln!(
        "S3 reset mid-read after {cut_at} bytes: {:?}; proxy {counts:?}",
        result.as_ref().map(|r| r.as_ref().map(|b| b.len()))
    );
    assert!(counts.reset_established >= 1, "{counts:?}");
    match result {
        Ok(Some(read)) => assert!(read == data, "the read returned other bytes"),
        Ok(None) => panic!(
            "a connection cut mid-read was reported as a miss (integrity failures {} -> {}): \
             the entry is intact, only the transfer failed",
            failures_before,
            cache.stats().integrity_failures
        ),
        Err(e) => assert!(
            e.is_retryable(),
            "non-retryable error for a cut read: {e:?}"
        ),
    }
    // The entry is intact and reads back whole.
    assert_eq!(cache.stats().integrity_failures, failures_before);
    let read = cache
        .get_bytes("huge")
        .await
        .unwrap()
        .expect("huge is intact");
    assert!(read == data, "the read after the cut returned other bytes");
}
