//! docs/FORMAT.md is complete: `docs/reader/read_cache.py`, written from the spec alone, reads
//! what cachet writes byte for byte, and refuses what cachet refuses.
//!
//! Needs python3 with `xxhash`, `lz4` and `zstandard` (`cargo xtask ci` installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use cachet_blob_fs::{FsBlobs, FsConfig};
use cachet_core::{CacheKey, Compression, params};
use cachet_meta_sqlite::{SqliteConfig, SqliteMetadata};
use cachet_storage::{PutOptions, SigningKey, Store, StoreConfig};

const KEY_HEX: &str = "4242424242424242424242424242424242424242424242424242424242424242";

fn reader_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reader/read_cache.py")
}

fn python_ready() {
    let probe = Command::new("python3")
        .args(["-c", "import xxhash, lz4.block, zstandard"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        other => panic!(
            "python3 with xxhash, lz4 and zstandard is needed to check the format spec \
             (pip install xxhash lz4 zstandard; `cargo xtask ci` does it): {other:?}"
        ),
    }
}

fn open(dir: &Path, config: StoreConfig) -> Store {
    let meta = SqliteMetadata::open(SqliteConfig::new(dir.join("index.sqlite"))).unwrap();
    let blobs = FsBlobs::open(FsConfig::new(dir.join("blobs"))).unwrap();
    Store::new(Arc::new(meta), Arc::new(blobs), config).unwrap()
}

fn python_read(dir: &Path, key: &CacheKey, signing_key: Option<&str>) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(reader_script())
        .arg(dir)
        .arg(key.namespace())
        .arg(key.id());
    if let Some(hex) = signing_key {
        cmd.args(["--signing-key-hex", hex]);
    }
    cmd.output().expect("run python3")
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    (0..len.div_ceil(8) as u64)
        .flat_map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed).to_le_bytes())
        .take(len)
        .collect()
}

#[tokio::test]
async fn python_reader_reads_every_kind_of_entry_byte_for_byte() {
    python_ready();
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        StoreConfig::default().with_frame_size(256 << 10),
    );
    let text: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("line {} of the log\n", i % 977).into_bytes())
        .collect();
    let cases: Vec<(&str, Vec<u8>, Option<Compression>)> = vec![
        ("empty", Vec::new(), None),
        (
            "inline",
            b"a small value stored in the index row".to_vec(),
            None,
        ),
        (
            "random blob, several frames",
            random_bytes(3_000_017, 1),
            None,
        ),
        (
            "arange, byte-shuffled",
            (0..200_000u64)
                .flat_map(|i| (i as f64).to_le_bytes())
                .collect(),
            None,
        ),
        ("text, lz4", text.clone(), Some(Compression::Lz4)),
        ("text, zstd", text, Some(Compression::Zstd(3))),
        (
            "uncompressed",
            random_bytes(70_000, 2),
            Some(Compression::None),
        ),
    ];
    for (i, (name, value, compression)) in cases.iter().enumerate() {
        let key = CacheKey::explicit("team-a", format!("case-{i}")).unwrap();
        let opts = PutOptions {
            compression: *compression,
            ..Default::default()
        };
        store.put_bytes(&key, value, opts).await.unwrap();
        let out = python_read(dir.path(), &key, None);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, *value, "{name}: python read other bytes");
    }
    let missing = CacheKey::explicit("team-a", "nothing").unwrap();
    assert_eq!(
        python_read(dir.path(), &missing, None).status.code(),
        Some(1)
    );
}

#[tokio::test]
async fn python_reader_verifies_signatures_like_cachet() {
    python_ready();
    let dir = tempfile::tempdir().unwrap();
    let key_bytes = hex::decode(KEY_HEX).unwrap();
    let store = open(
        dir.path(),
        StoreConfig::default().with_signing_key(SigningKey::from_bytes(&key_bytes).unwrap()),
    );
    let key = CacheKey::derive("", &params! { "dataset" => "sales-2026", "window" => 30 });
    let opts = PutOptions {
        params: Some(params! { "dataset" => "sales-2026", "window" => 30 }.to_json()),
        tags: vec!["sales".into(), "q3".into()],
        user_metadata: Some(serde_json::json!({ "owner": "team-a", "accuracy": 0.95 })),
        ttl: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    let value = random_bytes(50_000, 3);
    store.put_bytes(&key, &value, opts).await.unwrap();
    let out = python_read(dir.path(), &key, Some(KEY_HEX));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, value);
    // Extending the TTL behind cachet's back is a forgery for both readers.
    sql(
        dir.path(),
        "UPDATE entries SET expires_at = expires_at + 86400000",
    );
    assert_eq!(
        python_read(dir.path(), &key, Some(KEY_HEX)).status.code(),
        Some(3)
    );
    assert!(matches!(
        store.get_bytes(&key).await,
        Err(cachet_core::Error::Tampered { .. })
    ));
}

#[tokio::test]
async fn python_reader_refuses_a_damaged_blob_like_cachet() {
    python_ready();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreConfig::default());
    let key = CacheKey::explicit("", "damaged").unwrap();
    let meta = store
        .put_bytes(&key, &random_bytes(100_000, 4), PutOptions::default())
        .await
        .unwrap();
    let id = meta.location.blob_id().unwrap().clone();
    let path = dir
        .path()
        .join("blobs")
        .join(id.algorithm())
        .join(&id.hex()[..2])
        .join(id.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[50_000] ^= 0x04;
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(python_read(dir.path(), &key, None).status.code(), Some(2));
    assert!(matches!(
        store.get_bytes(&key).await,
        Err(cachet_core::Error::Corrupt { .. })
    ));
}

fn sql(dir: &Path, statement: &str) {
    let conn = rusqlite::Connection::open(dir.join("index.sqlite")).unwrap();
    assert!(conn.execute(statement, []).unwrap() > 0);
}
