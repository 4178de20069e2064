//! `s3://` URL parsing and option validation (no server needed).

use std::time::Duration;

use cachet_blob_s3::S3Config;
use cachet_core::Error;

fn config_field(err: Error) -> String {
    match err {
        Error::Config { field, .. } => field,
        other => panic!("expected Error::Config, got {other}"),
    }
}

#[test]
fn from_url_reads_every_option() {
    let c = S3Config::from_url(
        "s3://my-bucket/a/b%20c/?endpoint=http://127.0.0.1:9000&region=eu-west-1&allow_http=true\
         &path_style=true&access_key_id=AKID&secret_access_key=SECRET&session_token=TOKEN\
         &conditional_put=false&part_size=16MiB&parts_in_flight=4&max_retries=3\
         &retry_timeout=20s&init_backoff=50ms&max_backoff=2s&connect_timeout=1s&timeout=2m\
         &env=false",
    )
    .unwrap();
    assert_eq!(c.bucket(), "my-bucket");
    assert_eq!(c.prefix(), "a/b c");
    assert_eq!(c.endpoint(), Some("http://127.0.0.1:9000"));
    assert_eq!(c.region(), Some("eu-west-1"));
    assert_eq!(c.allow_http(), Some(true));
    assert_eq!(c.path_style(), Some(true));
    assert_eq!(c.access_key_id(), Some("AKID"));
    assert!(c.has_secret_access_key());
    assert!(c.has_session_token());
    assert_eq!(c.conditional_put(), Some(false));
    assert_eq!(c.part_size(), 16 << 20);
    assert_eq!(c.parts_in_flight(), 4);
    assert_eq!(c.retry(), (3, Duration::from_secs(20)));
    assert_eq!(
        c.backoff(),
        (Duration::from_millis(50), Duration::from_secs(2))
    );
    assert_eq!(c.connect_timeout(), Some(Duration::from_secs(1)));
    assert_eq!(c.timeout(), Some(Duration::from_secs(120)));
    assert!(!c.use_env());
    c.validate().unwrap();
}

#[test]
fn url_without_prefix_is_the_bucket_root() {
    let c = S3Config::from_url("s3://bucket").unwrap();
    assert_eq!(c.prefix(), "");
    assert_eq!(c, S3Config::new("bucket"));
}

#[test]
fn builder_calls_after_from_url_win() {
    let c = S3Config::from_url("s3://b/p?region=eu-west-1&part_size=16MiB")
        .unwrap()
        .with_region("us-east-2")
        .with_part_size(32 << 20);
    assert_eq!(c.region(), Some("us-east-2"));
    assert_eq!(c.part_size(), 32 << 20);
}

#[test]
fn bad_url_options_name_the_field() {
    for (url, field) in [
        ("s3://b/p?allow_http=maybe", "allow_http"),
        ("s3://b/p?path_style=2", "path_style"),
        ("s3://b/p?conditional_put=on", "conditional_put"),
        ("s3://b/p?part_size=8MB", "part_size"),
        ("s3://b/p?parts_in_flight=-1", "parts_in_flight"),
        ("s3://b/p?max_retries=x", "max_retries"),
        ("s3://b/p?retry_timeout=1h", "retry_timeout"),
        ("s3://b/p?init_backoff=fast", "init_backoff"),
        ("s3://b/p?max_backoff=", "max_backoff"),
        ("s3://b/p?connect_timeout=1d", "connect_timeout"),
        ("s3://b/p?timeout=soon", "timeout"),
        ("s3://b/p?env=perhaps", "env"),
        ("s3://b/p?regoin=us-east-1", "regoin"),
        ("ftp://b/p", "url.scheme"),
        ("s3:///p", "bucket"),
        ("s3://user:pw@b/p", "url"),
        ("not a url", "url"),
    ] {
        let err = S3Config::from_url(url).expect_err(url);
        assert_eq!(config_field(err), field, "{url}");
    }
}

#[test]
fn out_of_range_values_are_refused_by_validate_naming_the_field() {
    let base = || S3Config::new("bucket");
    for (config, field) in [
        (S3Config::new(""), "bucket"),
        (S3Config::new("a/b"), "bucket"),
        (base().with_prefix("a//b"), "prefix"),
        (base().with_prefix("a/../b"), "prefix"),
        (base().with_endpoint("ftp://x"), "endpoint"),
        (base().with_endpoint("not a url"), "endpoint"),
        (base().with_region("us east"), "region"),
        (base().with_part_size(1 << 20), "part_size"),
        (base().with_part_size(2 << 30), "part_size"),
        (base().with_parts_in_flight(0), "parts_in_flight"),
        (base().with_parts_in_flight(100), "parts_in_flight"),
        (base().with_retry_timeout(Duration::ZERO), "retry_timeout"),
        (
            base().with_backoff(Duration::ZERO, Duration::from_secs(1)),
            "init_backoff",
        ),
        (
            base().with_backoff(Duration::from_secs(2), Duration::from_secs(1)),
            "max_backoff",
        ),
        (
            base().with_connect_timeout(Duration::ZERO),
            "connect_timeout",
        ),
        (base().with_timeout(Duration::ZERO), "timeout"),
        (base().with_session_token("t"), "session_token"),
        (
            S3Config::from_url("s3://b/p?access_key_id=AKID").unwrap(),
            "secret_access_key",
        ),
        (
            S3Config::from_url("s3://b/p?secret_access_key=S").unwrap(),
            "access_key_id",
        ),
    ] {
        let shown = format!("{config:?}");
        let err = config.validate().expect_err(&shown);
        assert_eq!(config_field(err), field, "{shown}");
    }
}

#[test]
fn plain_http_endpoint_needs_allow_http() {
    let err = S3Config::new("bucket")
        .with_env(false)
        .with_endpoint("http://127.0.0.1:9000")
        .build()
        .unwrap_err();
    assert_eq!(config_field(err), "allow_http");
    S3Config::new("bucket")
        .with_env(false)
        .with_endpoint("http://127.0.0.1:9000")
        .with_allow_http(true)
        .build()
        .unwrap();
}

#[test]
fn conditional_put_capability_follows_the_config() {
    use cachet_core::BlobBackend;
    let on = S3Config::new("b").with_env(false).build().unwrap();
    let off = S3Config::new("b")
        .with_env(false)
        .with_conditional_put(false)
        .build()
        .unwrap();
    assert!(on.capabilities().conditional_put);
    assert!(!off.capabilities().conditional_put);
    let caps = on.capabilities();
    assert!(caps.atomic_publish && caps.server_side_copy && caps.range_read && caps.durable);
    assert!(!caps.local_only);
    assert_eq!(caps.max_object_size, Some(cachet_blob_s3::MAX_OBJECT_SIZE));
}

#[cfg(feature = "gcs")]
#[test]
fn gs_urls_build_a_gcs_backend_and_refuse_s3_only_options() {
    use cachet_core::BlobBackend;
    let c =
        S3Config::from_url("gs://bucket/cache?part_size=16MiB&max_retries=3&env=false").unwrap();
    assert_eq!(c.backend_name(), "gcs");
    assert_eq!(c.prefix(), "cache");
    let blobs = c.build().unwrap();
    assert_eq!(blobs.name(), "gcs");
    assert!(blobs.capabilities().conditional_put);
    assert_eq!(
        config_field(
            S3Config::from_url("gs://b/p?region=x")
                .unwrap()
                .validate()
                .unwrap_err()
        ),
        "region"
    );
    assert_eq!(
        config_field(S3Config::from_url("s3://b/p?service_account_path=/x").unwrap_err()),
        "service_account_path"
    );
    assert_eq!(
        S3Config::from_url("gs://b/p?service_account_path=/k.json").unwrap(),
        S3Config::gcs("b")
            .with_prefix("p")
            .with_gcs_service_account_path("/k.json")
    );
}

#[cfg(feature = "azure")]
#[test]
fn az_urls_build_an_azure_backend_and_refuse_s3_only_options() {
    use cachet_core::BlobBackend;
    let c = S3Config::from_url("az://container/cache?account=myaccount&access_key=a2V5&env=false")
        .unwrap();
    assert_eq!(c.backend_name(), "azure");
    assert_eq!(
        c,
        S3Config::azure("myaccount", "container")
            .with_prefix("cache")
            .with_azure_access_key("a2V5")
            .with_env(false)
    );
    let blobs = c.build().unwrap();
    assert_eq!(blobs.name(), "azure");
    assert_eq!(
        config_field(
            S3Config::from_url("az://c/p?path_style=true")
                .unwrap()
                .validate()
                .unwrap_err()
        ),
        "path_style"
    );
    // No account anywhere: the builder's error names the service.
    let err = S3Config::from_url("az://c/p?env=false")
        .unwrap()
        .build()
        .unwrap_err();
    assert_eq!(config_field(err), "azure");
}
