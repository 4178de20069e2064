//! Configuration and URL parsing: every invalid option is refused with `Error::Config` naming
//! it.

use std::path::Path;
use std::time::Duration;

use cachet_core::Error;
use cachet_meta_sqlite::{SqliteConfig, SqliteMetadata, SynchronousMode};

fn config_field(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::Config { field, message }) => {
            assert!(!message.is_empty(), "a config error must say what is wrong");
            field
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

#[test]
fn url_with_three_slashes_is_an_absolute_path() {
    let config =
        SqliteConfig::from_url("sqlite:///abs/path/index.db?busy_timeout_ms=5000&readers=4")
            .unwrap();
    assert_eq!(config.path(), Some(Path::new("/abs/path/index.db")));
    assert_eq!(config.busy_timeout(), Duration::from_millis(5000));
    assert_eq!(config.readers(), 4);
}

#[test]
fn url_with_two_slashes_is_a_relative_path() {
    let config = SqliteConfig::from_url("sqlite://relative/path/index.db").unwrap();
    assert_eq!(config.path(), Some(Path::new("relative/path/index.db")));
}

#[test]
fn url_defaults_are_five_seconds_four_readers_synchronous_normal() {
    let config = SqliteConfig::from_url("sqlite://index.db").unwrap();
    assert_eq!(config.busy_timeout(), Duration::from_secs(5));
    assert_eq!(config.readers(), 4);
    assert_eq!(config.synchronous(), SynchronousMode::Normal);
}

#[test]
fn url_synchronous_option_accepts_every_mode() {
    for (text, mode) in [
        ("off", SynchronousMode::Off),
        ("normal", SynchronousMode::Normal),
        ("FULL", SynchronousMode::Full),
        ("extra", SynchronousMode::Extra),
    ] {
        let config = SqliteConfig::from_url(&format!("sqlite://i.db?synchronous={text}")).unwrap();
        assert_eq!(config.synchronous(), mode);
    }
}

#[test]
fn url_mmap_size_option_sets_the_mapped_bytes() {
    let config = SqliteConfig::from_url("sqlite://i.db?mmap_size=0").unwrap();
    assert_eq!(config.mmap_size(), 0);
    assert_eq!(
        SqliteConfig::from_url("sqlite://i.db").unwrap().mmap_size(),
        SqliteConfig::DEFAULT_MMAP_SIZE
    );
    assert_eq!(
        config_field(
            SqliteConfig::new("i.db")
                .with_mmap_size(u64::MAX)
                .validate()
        ),
        "mmap_size"
    );
}

#[test]
fn memory_url_opens_a_private_in_memory_index() {
    let config = SqliteConfig::from_url("sqlite://:memory:").unwrap();
    assert_eq!(config.path(), None);
    let index = config.open().unwrap();
    let caps = cachet_core::MetadataBackend::capabilities(&index);
    assert!(!caps.durable && !caps.shared_across_processes);
}

#[test]
fn url_with_another_scheme_is_refused_naming_url() {
    assert_eq!(
        config_field(SqliteConfig::from_url("postgres://db/cache")),
        "url"
    );
    assert_eq!(config_field(SqliteConfig::from_url("/just/a/path")), "url");
}

#[test]
fn url_without_path_is_refused_naming_path() {
    assert_eq!(config_field(SqliteConfig::from_url("sqlite://")), "path");
    assert_eq!(
        config_field(SqliteConfig::from_url("sqlite://?readers=2")),
        "path"
    );
}

#[test]
fn unknown_url_option_is_refused_naming_it() {
    assert_eq!(
        config_field(SqliteConfig::from_url("sqlite://i.db?busy_timeout=5")),
        "busy_timeout"
    );
}

#[test]
fn malformed_url_option_values_are_refused_naming_the_option() {
    for (url, field) in [
        ("sqlite://i.db?busy_timeout_ms=soon", "busy_timeout_ms"),
        ("sqlite://i.db?busy_timeout_ms=-1", "busy_timeout_ms"),
        ("sqlite://i.db?readers=many", "readers"),
        ("sqlite://i.db?synchronous=sometimes", "synchronous"),
        ("sqlite://i.db?readers", "readers"),
        ("sqlite://i.db?readers=1&readers=2", "readers"),
        ("sqlite://i.db?mmap_size=lots", "mmap_size"),
    ] {
        assert_eq!(config_field(SqliteConfig::from_url(url)), field, "{url}");
    }
}

#[test]
fn bad_percent_escape_is_refused_naming_path() {
    assert_eq!(
        config_field(SqliteConfig::from_url("sqlite://a%zz.db")),
        "path"
    );
}

#[test]
fn too_many_readers_are_refused_naming_readers() {
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig::new(dir.path().join("i.db")).with_readers(65);
    assert_eq!(config_field(config.validate()), "readers");
    let config = SqliteConfig::from_url(&format!(
        "sqlite://{}/i.db?readers=1000",
        dir.path().display()
    ))
    .unwrap();
    assert_eq!(config_field(config.open()), "readers");
    assert!(
        !dir.path().join("i.db").exists(),
        "an invalid configuration must not create the file"
    );
}

#[test]
fn busy_timeout_beyond_sqlite_range_is_refused_naming_busy_timeout() {
    let config = SqliteConfig::new("i.db").with_busy_timeout(Duration::from_secs(30 * 86_400));
    assert_eq!(config_field(config.validate()), "busy_timeout");
}

#[test]
fn directory_as_index_path_is_refused_naming_path() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        config_field(SqliteMetadata::open(SqliteConfig::new(dir.path()))),
        "path"
    );
}

#[test]
fn empty_path_is_refused_naming_path() {
    assert_eq!(config_field(SqliteConfig::new("").validate()), "path");
}

#[test]
fn missing_parent_directories_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/index.db");
    SqliteConfig::new(&path).open().unwrap();
    assert!(path.is_file());
}
