//! cachet's metrics in the Prometheus text format.
//!
//! The cache records counters and histograms through the `metrics` facade; any `metrics`
//! recorder collects them. Here it is `metrics-exporter-prometheus`, without its HTTP
//! listener: the example renders the exposition text once and prints it. To serve it instead,
//! enable the exporter's `http-listener` feature and call
//! `PrometheusBuilder::new().with_http_listener(([0, 0, 0, 0], 9000)).install()` inside a
//! tokio runtime, then scrape `http://host:9000/metrics` (docs/OBSERVABILITY.md).
//!
//! ```text
//! cargo run -p cachet --example prometheus
//! ```

use std::time::Duration;

use cachet::{Cache, params};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Install the recorder before the cache is built (building describes the metrics to
    //    it, which gives the `# HELP` lines). Durations as a histogram with these buckets
    //    (the exporter's default is a summary).
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(cachet::observe::names::OPERATION_SECONDS.to_owned()),
            &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0],
        )?
        .install_recorder()?;

    // 2. A cache with a memory tier, labelled so that several caches can be told apart.
    let dir = tempfile::tempdir()?;
    let cache = Cache::builder()
        .directory(dir.path())
        .memory_tier_str("64MiB")
        .metrics_label("example")
        .build()
        .await?;

    // 3. Some traffic: writes, durable and memory hits, misses, a computation, a delete.
    let report = params! { "report" => "sales", "month" => "2026-01" };
    cache
        .insert(&report, &vec![1.5f64, 2.5, 4.0])
        .with_ttl(Duration::from_secs(3600))
        .await?;
    cache.insert_bytes("thumb/1", vec![7u8; 4096]).await?;
    let _: Option<Vec<f64>> = cache.get(&report).await?; // durable hit, fills memory
    let _: Option<Vec<f64>> = cache.get(&report).await?; // memory hit
    cache.get_bytes("thumb/1").await?; // memory hit (insert_bytes filled it)
    cache.get_bytes("thumb/2").await?; // miss
    let total: u64 = cache.get_with("total", || async { 42 }).await?; // computed
    assert_eq!(total, 42);
    cache.invalidate("thumb/1").await?;

    // 4. What a scrape would return.
    print!("{}", handle.render());
    Ok(())
}
