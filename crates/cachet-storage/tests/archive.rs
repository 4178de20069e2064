//! Export and import of a cachet archive (`docs/ARCHIVE.md`): what round-trips, what is
//! verified, and how damaged, cut and foreign archives are refused.
//!
//! The bounded-memory test re-runs this test binary as a worker process (the ignored test
//! `bounded_memory_worker`), so that the process's peak memory is that test's alone.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cachet_blob_fs::{FsBlobs, FsConfig};
use cachet_core::memory::{MemoryBlobs, MemoryMetadata};
use cachet_core::{
    CacheKey, Compression, EntryFilter, EntryMeta, Error, FieldCondition, ListQuery, Location,
    ManualClock, Timestamp, params,
};
use cachet_meta_sqlite::{SqliteConfig, SqliteMetadata};
use cachet_storage::{
    ExportOptions, ExportReport, ImportOptions, ImportReport, PutOptions, SigningKey, Store,
    StoreConfig,
};
use futures_util::StreamExt;
use serde_json::json;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn sqlite_store(dir: &Path, config: StoreConfig) -> (Store, FsBlobs) {
    let meta = SqliteMetadata::open(SqliteConfig::new(dir.join("index.sqlite"))).unwrap();
    let blobs = FsBlobs::open(FsConfig::new(dir.join("blobs"))).unwrap();
    let store = Store::new(Arc::new(meta), Arc::new(blobs.clone()), config).unwrap();
    (store, blobs)
}

fn memory_store(config: StoreConfig) -> Store {
    Store::new(
        Arc::new(MemoryMetadata::new()),
        Arc::new(MemoryBlobs::new()),
        config,
    )
    .unwrap()
}

fn clocked(clock: &ManualClock) -> StoreConfig {
    StoreConfig::default().with_clock(Arc::new(clock.clone()))
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32]).unwrap()
}

fn key(name: &str) -> CacheKey {
    CacheKey::derive("", &params! { "name" => name })
}

/// Pseudo-random, incompressible bytes.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    (0..len.div_ceil(8) as u64)
        .flat_map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed).to_le_bytes())
        .take(len)
        .collect()
}

async fn export(store: &Store, options: &ExportOptions) -> (Vec<u8>, ExportReport) {
    let mut archive = Vec::new();
    let report = store.export(&mut archive, options, |_| {}).await.unwrap();
    (archive, report)
}

async fn export_all(store: &Store) -> Vec<u8> {
    export(store, &ExportOptions::default()).await.0
}

async fn import(
    store: &Store,
    archive: &[u8],
    options: &ImportOptions,
) -> cachet_core::Result<ImportReport> {
    store.import(archive, options, |_| {}).await
}

async fn all_entries(store: &Store) -> Vec<EntryMeta> {
    store
        .list(&ListQuery::default().with_limit(10_000))
        .await
        .unwrap()
}

/// The verified raw content of an entry.
async fn raw(store: &Store, key: &CacheKey) -> Option<Vec<u8>> {
    let entry = store.lookup(key).await.unwrap()?;
    Some(store.read_raw(&entry).await.unwrap().to_vec())
}

/// Every entry of `target` reads back verified and equal to the same key in `source`.
async fn assert_entries_complete(source: &Store, target: &Store) {
    for meta in all_entries(target).await {
        assert_eq!(
            raw(target, &meta.key).await,
            raw(source, &meta.key).await,
            "entry {} differs from its source",
            meta.key
        );
    }
}

/// Blobs held by the blob store that no entry references (left by a rejected import).
async fn unreferenced_blobs(store: &Store) -> Vec<String> {
    let referenced: Vec<String> = all_entries(store)
        .await
        .iter()
        .filter_map(|m| m.location.blob_id().map(|id| id.to_string()))
        .collect();
    let mut listing = store.blob_backend().list().await.unwrap();
    let mut extra = Vec::new();
    while let Some(info) = listing.next().await {
        let id = info.unwrap().id.to_string();
        if !referenced.contains(&id) {
            extra.push(id);
        }
    }
    extra
}

/// A tar member of an archive: where its header and data start, and its size.
#[derive(Debug, Clone)]
struct MemberAt {
    name: String,
    header: usize,
    data: usize,
    size: usize,
}

fn members(archive: &[u8]) -> Vec<MemberAt> {
    let mut tar = tar::Archive::new(archive);
    tar.entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            MemberAt {
                name: String::from_utf8(entry.path_bytes().to_vec()).unwrap(),
                header: entry.raw_header_position() as usize,
                data: entry.raw_file_position() as usize,
                size: entry.size() as usize,
            }
        })
        .collect()
}

fn member(archive: &[u8], name: &str) -> MemberAt {
    members(archive)
        .into_iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no member {name}"))
}

/// The archive entry number of `key` (from the manifest records).
fn entry_number(archive: &[u8], key: &CacheKey) -> usize {
    members(archive)
        .iter()
        .filter(|m| {
            m.name.starts_with("entries/")
                && m.name.ends_with(".json")
                && !m.name.ends_with(".damaged.json")
        })
        .find_map(|m| {
            let record: serde_json::Value =
                serde_json::from_slice(&archive[m.data..m.data + m.size]).unwrap();
            (record["namespace"] == key.namespace() && record["id"] == key.id()).then(|| {
                m.name["entries/".len().."entries/".len() + 8]
                    .parse()
                    .unwrap()
            })
        })
        .unwrap_or_else(|| panic!("{key} is not in the archive"))
}

/// Rewrites a member header with `edit` and a correct checksum.
fn edit_header(archive: &mut [u8], at: usize, edit: impl FnOnce(&mut tar::Header)) {
    let mut header = tar::Header::new_old();
    header
        .as_mut_bytes()
        .copy_from_slice(&archive[at..at + 512]);
    edit(&mut header);
    header.set_cksum();
    archive[at..at + 512].copy_from_slice(header.as_bytes());
}

fn assert_corrupt(result: cachet_core::Result<ImportReport>, needle: &str) -> String {
    match result {
        Err(e @ Error::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(text.contains(needle), "`{text}` should mention `{needle}`");
            text
        }
        other => panic!("expected Error::Corrupt mentioning `{needle}`, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------ round trips

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct Model {
    name: String,
    weights: Vec<f64>,
}

/// Entries of every kind: inline and blob, one value streamed over 8 MiB in many frames,
/// bytes / MessagePack / JSON, derived and explicit keys, namespaces, tags, user metadata,
/// compressions, an expiry and an empty value.
async fn populate(store: &Store) -> Vec<CacheKey> {
    let mut keys = Vec::new();
    let tagged = PutOptions {
        tags: vec!["nightly".into(), "team-a".into()],
        user_metadata: Some(json!({"accuracy": 0.93, "owner": "ana"})),
        params: Some(json!({"name": "small", "window": 30})),
        ..PutOptions::default()
    };
    let k = key("small");
    store.put_bytes(&k, b"hello archive", tagged).await.unwrap();
    keys.push(k);

    let k = key("blob");
    let opts = PutOptions {
        compression: Some(Compression::Zstd(5)),
        expires_at: Some(Timestamp::now().plus(Duration::from_secs(3600))),
        ..PutOptions::default()
    };
    store.put_bytes(&k, &[42u8; 300_000], opts).await.unwrap();
    keys.push(k);

    let k = CacheKey::explicit("models", "big-streamed").unwrap();
    let mut writer = store
        .writer(
            &k,
            PutOptions {
                tags: vec!["large".into()],
                ..PutOptions::default()
            },
        )
        .unwrap();
    for i in 0..9 {
        writer.write(&random_bytes(1 << 20, 100 + i)).await.unwrap();
    }
    writer.write(b"tail").await.unwrap();
    writer.finish().await.unwrap();
    keys.push(k);

    let k = CacheKey::explicit("models", "msgpack").unwrap();
    let model = Model {
        name: "xgb".into(),
        weights: vec![0.5, -1.25, 3.0],
    };
    store
        .put_value(&k, &model, PutOptions::default())
        .await
        .unwrap();
    keys.push(k);

    let k = CacheKey::explicit("reports", "json").unwrap();
    store
        .put_json(&k, &json!({"rows": 3, "ok": true}), PutOptions::default())
        .await
        .unwrap();
    keys.push(k);

    let k = key("empty");
    store
        .put_bytes(&k, b"", PutOptions::default())
        .await
        .unwrap();
    keys.push(k);

    let k = key("random-blob");
    store
        .put_bytes(&k, &random_bytes(200_000, 7), PutOptions::default())
        .await
        .unwrap();
    keys.push(k);
    keys
}

/// The fields an archive carries from one store to another.
fn portable(meta: &EntryMeta) -> impl PartialEq + std::fmt::Debug {
    (
        meta.key.clone(),
        meta.params.clone(),
        meta.data_type.clone(),
        meta.type_name.clone(),
        meta.compression,
        meta.raw_size,
        meta.created_at,
        meta.expires_at,
        meta.tags.clone(),
        meta.user_metadata.clone(),
    )
}

#[tokio::test]
async fn round_trip_from_sqlite_and_fs_to_memory_keeps_every_value_and_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = sqlite_store(dir.path(), StoreConfig::default());
    let keys = populate(&source).await;
    let (archive, exported) = export(&source, &ExportOptions::default()).await;
    assert_eq!(exported.entries, keys.len() as u64);
    assert!(exported.damaged.is_empty(), "{:?}", exported.damaged);
    assert_eq!(exported.archive_bytes, archive.len() as u64);
    assert!(exported.raw_bytes > 9 << 20);

    let target = memory_store(StoreConfig::default());
    let mut calls = 0;
    let report = target
        .import(&archive[..], &ImportOptions::default(), |_| calls += 1)
        .await
        .unwrap();
    assert_eq!(report.imported, keys.len() as u64);
    assert_eq!(report.bytes, exported.raw_bytes);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(calls, keys.len());

    for k in &keys {
        let from = source.metadata(k).await.unwrap().unwrap();
        let to = target.metadata(k).await.unwrap().unwrap();
        assert_eq!(portable(&to), portable(&from), "metadata of {k}");
        assert_eq!(to.digest, from.digest, "{k}");
        assert_eq!(raw(&target, k).await, raw(&source, k).await, "value of {k}");
    }
    let model: Model = target
        .get_value(&CacheKey::explicit("models", "msgpack").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(model.weights, vec![0.5, -1.25, 3.0]);
    let report_json: serde_json::Value = target
        .get_value(&CacheKey::explicit("reports", "json").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report_json, json!({"rows": 3, "ok": true}));
    let big = target
        .metadata(&CacheKey::explicit("models", "big-streamed").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(big.location, Location::Blob(_)));
    assert_eq!(big.raw_size, (9 << 20) + 4);
}

#[tokio::test]
async fn an_empty_store_exports_an_archive_that_imports_nothing() {
    let source = memory_store(StoreConfig::default());
    let (archive, exported) = export(&source, &ExportOptions::default()).await;
    assert_eq!(exported.entries, 0);
    let names: Vec<String> = members(&archive).into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["cachet-archive.json", "end.json"]);
    let target = memory_store(StoreConfig::default());
    let report = import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.imported, 0);
}

#[tokio::test]
async fn export_with_a_filter_writes_only_the_matching_entries() {
    let source = memory_store(StoreConfig::default());
    let keys = populate(&source).await;
    let options = ExportOptions {
        filter: EntryFilter::all().namespace("models"),
        ..ExportOptions::default()
    };
    let (archive, exported) = export(&source, &options).await;
    assert_eq!(exported.entries, 2);
    let target = memory_store(StoreConfig::default());
    import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    let mut got: Vec<String> = all_entries(&target)
        .await
        .iter()
        .map(|m| m.key.to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["models/big-streamed", "models/msgpack"]);

    let options = ExportOptions {
        filter: EntryFilter::all()
            .tag("nightly")
            .metadata(FieldCondition::parse("accuracy > 0.9").unwrap()),
        ..ExportOptions::default()
    };
    let (archive, exported) = export(&source, &options).await;
    assert_eq!(exported.entries, 1);
    let target = memory_store(StoreConfig::default());
    import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    let listed = all_entries(&target).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, keys[0]);
}

#[tokio::test]
async fn expired_entries_are_left_out_of_an_export_unless_asked_for() {
    let clock = ManualClock::new(T0);
    let source = memory_store(clocked(&clock));
    let soon = PutOptions {
        ttl: Some(Duration::from_secs(10)),
        ..PutOptions::default()
    };
    source
        .put_bytes(&key("lasting"), b"a", PutOptions::default())
        .await
        .unwrap();
    source
        .put_bytes(&key("fleeting"), b"b", soon)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(60));

    let (_, exported) = export(&source, &ExportOptions::default()).await;
    assert_eq!((exported.entries, exported.expired), (1, 1));
    let options = ExportOptions {
        include_expired: true,
        ..ExportOptions::default()
    };
    let (archive, exported) = export(&source, &options).await;
    assert_eq!((exported.entries, exported.expired), (2, 0));

    // The import decides again, by the target's clock.
    let target = memory_store(clocked(&clock));
    let report = import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!((report.imported, report.expired), (1, 1));
    assert!(!target.exists(&key("fleeting")).await.unwrap());
    let target = memory_store(clocked(&clock));
    let options = ImportOptions {
        include_expired: true,
        ..ImportOptions::default()
    };
    let report = import(&target, &archive, &options).await.unwrap();
    assert_eq!(report.imported, 2);
    let kept = target.metadata(&key("fleeting")).await.unwrap().unwrap();
    assert_eq!(kept.expires_at, Some(T0.plus(Duration::from_secs(10))));
}

#[tokio::test]
async fn import_skips_present_content_keeps_other_content_and_overwrites_only_when_asked() {
    let source = memory_store(StoreConfig::default());
    source
        .put_bytes(&key("same"), b"same content", PutOptions::default())
        .await
        .unwrap();
    source
        .put_bytes(&key("other"), &[1u8; 50_000], PutOptions::default())
        .await
        .unwrap();
    source
        .put_bytes(&key("new"), b"new", PutOptions::default())
        .await
        .unwrap();
    let archive = export_all(&source).await;

    let target = memory_store(StoreConfig::default());
    target
        .put_bytes(&key("same"), b"same content", PutOptions::default())
        .await
        .unwrap();
    target
        .put_bytes(&key("other"), b"the target's own", PutOptions::default())
        .await
        .unwrap();

    let report = import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (
            report.imported,
            report.already_present,
            report.kept_existing
        ),
        (1, 1, 1)
    );
    assert_eq!(
        raw(&target, &key("other")).await.unwrap(),
        b"the target's own"
    );

    let overwrite = ImportOptions {
        overwrite: true,
        ..ImportOptions::default()
    };
    let report = import(&target, &archive, &overwrite).await.unwrap();
    assert_eq!(
        (
            report.imported,
            report.already_present,
            report.kept_existing
        ),
        (1, 2, 0)
    );
    assert_eq!(
        raw(&target, &key("other")).await.unwrap(),
        vec![1u8; 50_000]
    );
    assert!(unreferenced_blobs(&target).await.is_empty());
}

// ------------------------------------------------------------------------------ signing

#[tokio::test]
async fn a_signed_source_imports_into_an_unsigned_store() {
    let source = memory_store(StoreConfig::default().with_signing_key(signing_key()));
    let keys = populate(&source).await;
    let archive = export_all(&source).await;
    assert!(String::from_utf8_lossy(&archive).contains("\"digest\":\"sha256:"));

    let target = memory_store(StoreConfig::default());
    let report = import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.imported, keys.len() as u64);
    for k in &keys {
        let meta = target.metadata(k).await.unwrap().unwrap();
        assert_eq!(meta.signature, None);
        assert_eq!(meta.digest.algorithm(), "xxh3-128");
        assert_eq!(raw(&target, k).await, raw(&source, k).await, "{k}");
    }
}

#[tokio::test]
async fn an_unsigned_source_imports_into_a_signed_store_which_signs_every_entry() {
    let source = memory_store(StoreConfig::default());
    let keys = populate(&source).await;
    let archive = export_all(&source).await;

    let target = memory_store(StoreConfig::default().with_signing_key(signing_key()));
    let report = import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.imported, keys.len() as u64);
    for k in &keys {
        // `metadata` and `lookup` verify the signature; `read_raw` the signed SHA-256.
        let meta = target.metadata(k).await.unwrap().unwrap();
        assert!(meta.signature.is_some(), "{k} is unsigned");
        assert_eq!(meta.digest.algorithm(), "sha256");
        assert_eq!(raw(&target, k).await, raw(&source, k).await, "{k}");
    }
}

#[tokio::test]
async fn resuming_an_import_across_digest_algorithms_recognises_the_same_content() {
    let source = memory_store(StoreConfig::default().with_signing_key(signing_key()));
    let keys = populate(&source).await;
    source
        .put_bytes(&key("changed"), b"archive version", PutOptions::default())
        .await
        .unwrap();
    let archive = export_all(&source).await;
    let target = memory_store(StoreConfig::default());
    let first = import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(first.imported, keys.len() as u64 + 1);
    target
        .put_bytes(&key("changed"), b"target version", PutOptions::default())
        .await
        .unwrap();

    // sha256 digests in the archive, xxh3-128 in the target: compared by content.
    let again = import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (again.imported, again.already_present, again.kept_existing),
        (0, keys.len() as u64, 1)
    );
    let overwrite = ImportOptions {
        overwrite: true,
        ..ImportOptions::default()
    };
    let again = import(&target, &archive, &overwrite).await.unwrap();
    assert_eq!(
        (again.imported, again.already_present),
        (1, keys.len() as u64)
    );
    assert_eq!(
        raw(&target, &key("changed")).await.unwrap(),
        b"archive version"
    );
    assert!(unreferenced_blobs(&target).await.is_empty());
}

// ------------------------------------------------------------------------------ damaged archives

/// A source with small inline values around a multi-frame blob, and its archive.
async fn source_and_archive() -> (Store, Vec<u8>) {
    let source = memory_store(StoreConfig::default().with_frame_size(64 << 10));
    for i in 0..3 {
        source
            .put_bytes(
                &key(&format!("inline-{i}")),
                format!("value {i}").as_bytes(),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    source
        .put_bytes(
            &key("big"),
            &random_bytes(3 << 20, 5),
            PutOptions::default(),
        )
        .await
        .unwrap();
    source
        .put_bytes(
            &key("medium"),
            &random_bytes(100_000, 6),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let archive = export_all(&source).await;
    (source, archive)
}

#[tokio::test]
async fn a_truncated_archive_is_reported_and_leaves_no_partial_entry() {
    let (source, archive) = source_and_archive().await;
    let n = entry_number(&archive, &key("big"));
    let value = member(&archive, &format!("entries/{n:08}.value"));
    let record = member(&archive, &format!("entries/{:08}.json", n + 1));
    let end = member(&archive, "end.json");
    let cuts = [
        ("inside the first header", 100),
        ("between two members", record.header),
        ("inside a value header", value.header + 300),
        ("inside a value's data", value.data + value.size / 2),
        ("at the end of a value's data", value.data + value.size),
        ("before end.json", end.header),
    ];
    for (what, at) in cuts {
        let target = memory_store(StoreConfig::default());
        let text = assert_corrupt(
            import(&target, &archive[..at], &ImportOptions::default()).await,
            "truncated",
        );
        assert!(text.contains("complete entries"), "{what}: {text}");
        assert_entries_complete(&source, &target).await;
        assert!(unreferenced_blobs(&target).await.is_empty(), "{what}");
        if at <= value.data + value.size / 2 {
            assert!(!target.exists(&key("big")).await.unwrap(), "{what}");
        }
        // Importing the whole archive afterwards completes the copy.
        let report = import(&target, &archive, &ImportOptions::default())
            .await
            .unwrap();
        assert_eq!(report.imported + report.already_present, 5, "{what}");
        assert_entries_complete(&source, &target).await;
    }
    // What follows end.json (tar's end marker) is not needed.
    let target = memory_store(StoreConfig::default());
    let cut = end.data + end.size;
    let report = import(&target, &archive[..cut], &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.imported, 5);
}

#[tokio::test]
async fn a_damaged_member_header_is_reported_corrupt() {
    let (_, mut archive) = source_and_archive().await;
    let second = &members(&archive)[2];
    archive[second.header + 3] ^= 0x20;
    let target = memory_store(StoreConfig::default());
    assert_corrupt(
        import(&target, &archive, &ImportOptions::default()).await,
        "fails its checksum",
    );
}

#[tokio::test]
async fn input_that_is_not_a_cachet_archive_is_refused() {
    let target = memory_store(StoreConfig::default());
    assert_corrupt(
        import(&target, &random_bytes(4096, 1), &ImportOptions::default()).await,
        "not a tar header",
    );
    let mut foreign = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(5);
    header.set_cksum();
    foreign
        .append_data(&mut header, "README", &b"hello"[..])
        .unwrap();
    let foreign = foreign.into_inner().unwrap();
    match import(&target, &foreign, &ImportOptions::default()).await {
        Err(Error::Unsupported { what }) => {
            assert!(what.contains("not a cachet archive"), "{what}")
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[tokio::test]
async fn an_archive_of_another_format_version_is_unsupported_and_names_both_versions() {
    let (_, mut archive) = source_and_archive().await;
    let head = member(&archive, "cachet-archive.json");
    let text = String::from_utf8(archive[head.data..head.data + head.size].to_vec()).unwrap();
    let edited = text.replace("\"version\":1", "\"version\":7");
    assert_ne!(edited, text);
    archive[head.data..head.data + head.size].copy_from_slice(edited.as_bytes());
    let target = memory_store(StoreConfig::default());
    match import(&target, &archive, &ImportOptions::default()).await {
        Err(Error::Unsupported { what }) => {
            assert!(what.contains("version 7"), "{what}");
            assert!(what.contains("reads version 1"), "{what}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(all_entries(&target).await.is_empty());
}

#[tokio::test]
async fn a_digest_mismatch_rejects_that_entry_and_imports_the_others() {
    let (source, mut archive) = source_and_archive().await;
    for name in ["big", "inline-1"] {
        let n = entry_number(&archive, &key(name));
        let record = member(&archive, &format!("entries/{n:08}.json"));
        let text =
            String::from_utf8(archive[record.data..record.data + record.size].to_vec()).unwrap();
        let at = text.find("\"digest\":\"xxh3-128:").unwrap() + "\"digest\":\"xxh3-128:".len();
        let flipped = if &text[at..at + 1] == "0" { b'1' } else { b'0' };
        archive[record.data + at] = flipped;
    }
    let target = memory_store(StoreConfig::default());
    let report = import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.imported, 3);
    let mut rejected: Vec<CacheKey> = report.rejected.iter().map(|(k, _)| k.clone()).collect();
    rejected.sort();
    let mut expected = vec![key("big"), key("inline-1")];
    expected.sort();
    assert_eq!(rejected, expected);
    for (_, e) in &report.rejected {
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(
            e.to_string().contains("digest in its manifest record"),
            "{e}"
        );
    }
    assert!(!target.exists(&key("big")).await.unwrap());
    assert!(!target.exists(&key("inline-1")).await.unwrap());
    assert_entries_complete(&source, &target).await;
    assert!(unreferenced_blobs(&target).await.is_empty());
}

#[tokio::test]
async fn a_flipped_byte_in_a_value_rejects_that_entry_and_imports_the_others() {
    let (source, mut archive) = source_and_archive().await;
    let n = entry_number(&archive, &key("big"));
    let value = member(&archive, &format!("entries/{n:08}.value"));
    // Inside the payload of a frame in the middle of the value.
    archive[value.data + value.size / 2] ^= 0x01;
    let target = memory_store(StoreConfig::default());
    let report = import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.imported, 4);
    assert_eq!(report.rejected.len(), 1);
    let (k, e) = &report.rejected[0];
    assert_eq!(k, &key("big"));
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    assert!(!target.exists(&key("big")).await.unwrap());
    assert_entries_complete(&source, &target).await;
    assert!(unreferenced_blobs(&target).await.is_empty());
}

#[tokio::test]
async fn a_value_whose_size_differs_from_its_record_is_rejected() {
    let (_, mut archive) = source_and_archive().await;
    let n = entry_number(&archive, &key("medium"));
    let record = member(&archive, &format!("entries/{n:08}.json"));
    let text = String::from_utf8(archive[record.data..record.data + record.size].to_vec()).unwrap();
    let edited = text.replace("\"raw_size\":100000", "\"raw_size\":100001");
    assert_ne!(edited, text);
    archive[record.data..record.data + record.size].copy_from_slice(edited.as_bytes());
    let target = memory_store(StoreConfig::default());
    let report = import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.rejected.len(), 1);
    assert!(
        report.rejected[0].1.to_string().contains("100001"),
        "{}",
        report.rejected[0].1
    );
    assert!(!target.exists(&key("medium")).await.unwrap());
}

#[tokio::test]
async fn members_out_of_order_are_reported_corrupt() {
    let (_, mut archive) = source_and_archive().await;
    let value = member(&archive, "entries/00000001.value");
    edit_header(&mut archive, value.header, |h| {
        h.set_path("entries/00000002.value").unwrap();
    });
    let target = memory_store(StoreConfig::default());
    assert_corrupt(
        import(&target, &archive, &ImportOptions::default()).await,
        "out of place",
    );
}

#[tokio::test]
async fn a_json_member_declaring_a_huge_size_is_refused_before_anything_is_allocated() {
    let (_, mut archive) = source_and_archive().await;
    let record = member(&archive, "entries/00000000.json");
    edit_header(&mut archive, record.header, |h| h.set_size(1 << 40));
    let target = memory_store(StoreConfig::default());
    assert_corrupt(
        import(&target, &archive, &ImportOptions::default()).await,
        "JSON members are at most",
    );
}

#[tokio::test]
async fn an_end_json_that_miscounts_the_entries_is_reported_corrupt() {
    let (_, mut archive) = source_and_archive().await;
    let end = member(&archive, "end.json");
    let text = String::from_utf8(archive[end.data..end.data + end.size].to_vec()).unwrap();
    let edited = text.replace("\"entries\":5", "\"entries\":6");
    assert_ne!(edited, text);
    archive[end.data..end.data + end.size].copy_from_slice(edited.as_bytes());
    let target = memory_store(StoreConfig::default());
    assert_corrupt(
        import(&target, &archive, &ImportOptions::default()).await,
        "end.json counts 6 entries",
    );
}

#[tokio::test]
async fn a_source_blob_damaged_on_disk_is_marked_in_the_archive_and_rejected_on_import() {
    let dir = tempfile::tempdir().unwrap();
    let (source, blobs) = sqlite_store(dir.path(), StoreConfig::default());
    source
        .put_bytes(&key("fine"), b"fine", PutOptions::default())
        .await
        .unwrap();
    source
        .put_bytes(
            &key("damaged"),
            &random_bytes(3 << 20, 11),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let id = source
        .metadata(&key("damaged"))
        .await
        .unwrap()
        .unwrap()
        .location
        .blob_id()
        .unwrap()
        .clone();
    let path = blobs.blob_path(&id);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();

    let (archive, exported) = export(&source, &ExportOptions::default()).await;
    assert_eq!(exported.entries, 1);
    assert_eq!(exported.damaged.len(), 1);
    assert_eq!(exported.damaged[0].0, key("damaged"));
    let n = entry_number(&archive, &key("damaged"));
    member(&archive, &format!("entries/{n:08}.damaged.json"));

    let target = memory_store(StoreConfig::default());
    let report = import(&target, &archive, &ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.imported, 1);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].0, key("damaged"));
    assert!(!target.exists(&key("damaged")).await.unwrap());
    assert!(unreferenced_blobs(&target).await.is_empty());
}

#[tokio::test]
async fn a_source_entry_failing_its_signature_is_left_out_of_the_export() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (unsigned, _) = sqlite_store(dir.path(), StoreConfig::default());
        unsigned
            .put_bytes(&key("unsigned"), b"x", PutOptions::default())
            .await
            .unwrap();
    }
    let (source, _) = sqlite_store(
        dir.path(),
        StoreConfig::default().with_signing_key(signing_key()),
    );
    source
        .put_bytes(&key("signed"), b"y", PutOptions::default())
        .await
        .unwrap();
    let (archive, exported) = export(&source, &ExportOptions::default()).await;
    assert_eq!(exported.entries, 1);
    assert_eq!(exported.damaged.len(), 1);
    assert!(matches!(exported.damaged[0].1, Error::Tampered { .. }));
    assert_eq!(
        members(&archive).len(),
        4,
        "header, one record, one value, end"
    );
}

// ------------------------------------------------------------------------------ interoperability

#[tokio::test]
async fn the_archive_is_a_standard_tar_that_python_tarfile_reads() {
    let (_, archive) = source_and_archive().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.tar");
    std::fs::write(&path, &archive).unwrap();
    let script = r#"
import json, sys, tarfile
with tarfile.open(sys.argv[1], mode="r|") as tar:
    names = []
    for m in tar:
        assert m.isreg(), m.name
        data = tar.extractfile(m).read()
        assert len(data) == m.size
        if m.name.endswith(".json"):
            json.loads(data)
        else:
            assert data[:7] == b"CACHET\x01", m.name
        names.append(m.name)
head = names[0]
assert head == "cachet-archive.json", head
assert names[-1] == "end.json"
print(len(names))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3 is needed (the format tests use it too)");
    assert!(
        out.status.success(),
        "python tarfile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "12");
}

#[test]
fn export_and_import_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let store = memory_store(StoreConfig::default());
    let (export_options, import_options) = (ExportOptions::default(), ImportOptions::default());
    let mut out = Vec::new();
    let export = store.export(&mut out, &export_options, |_| {});
    assert_send(&export);
    drop(export);
    let import = store.import(&b""[..], &import_options, |_| {});
    assert_send(&import);
}

// ------------------------------------------------------------------------------ bounded memory

const BIG: usize = 256 << 20;

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn export_and_import_of_a_256_mib_value_stay_within_bounded_memory() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "bounded_memory_worker",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "worker failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("archive-memory:").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no measurement in:\n{stdout}"));
    eprintln!("{line}");
    let grew: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("grew="))
        .map(|v| v.parse().unwrap())
        .collect();
    // One value of 256 MiB; memory may hold a few 1 MiB frames and I/O buffers.
    for g in grew {
        assert!(g < 64 << 20, "peak memory grew by {} MiB: {line}", g >> 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by export_and_import_of_a_256_mib_value_stay_within_bounded_memory"]
async fn bounded_memory_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = sqlite_store(&dir.path().join("source"), StoreConfig::default());
    let k = key("huge");
    let mut writer = source.writer(&k, PutOptions::default()).unwrap();
    let chunk = random_bytes(1 << 20, 3);
    for i in 0..BIG >> 20 {
        let mut c = chunk.clone();
        c[..8].copy_from_slice(&(i as u64).to_le_bytes());
        writer.write(&c).await.unwrap();
    }
    let written = writer.finish().await.unwrap();
    source.flush().await.unwrap();
    drop(chunk);

    let before = peak_rss();
    let started = std::time::Instant::now();
    let exported = source
        .export(tokio::io::sink(), &ExportOptions::default(), |_| {})
        .await
        .unwrap();
    let export_secs = started.elapsed().as_secs_f64();
    let after_export = peak_rss();
    assert_eq!(exported.entries, 1);

    // Export straight into an import through a 64 KiB pipe: one store to another, streamed.
    let (target, _) = sqlite_store(&dir.path().join("target"), StoreConfig::default());
    let (writer_end, reader_end) = tokio::io::duplex(64 << 10);
    let started = std::time::Instant::now();
    let export_options = ExportOptions::default();
    let import_options = ImportOptions::default();
    let (exported_again, imported) = tokio::join!(
        async {
            let mut writer_end = writer_end;
            source
                .export(&mut writer_end, &export_options, |_| {})
                .await
        },
        target.import(reader_end, &import_options, |_| {})
    );
    let pipe_secs = started.elapsed().as_secs_f64();
    let after_import = peak_rss();
    assert_eq!(exported_again.unwrap().entries, 1);
    let imported = imported.unwrap();
    assert_eq!(imported.imported, 1);
    assert_eq!(
        target.metadata(&k).await.unwrap().unwrap().digest,
        written.digest
    );

    let (Some(before), Some(after_export), Some(after_import)) =
        (before, after_export, after_import)
    else {
        println!("archive-memory: /proc is unavailable");
        return;
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "archive-memory: value {} MiB, archive {:.0} MiB; export to a sink {:.2} s ({:.0} MiB/s) \
         grew={} ; export piped into an import {:.2} s ({:.0} MiB/s) grew={} ; peak before {:.0} MiB",
        BIG >> 20,
        mib(exported.archive_bytes),
        export_secs,
        mib(BIG as u64) / export_secs,
        after_export.saturating_sub(before),
        pipe_secs,
        mib(BIG as u64) / pipe_secs,
        after_import.saturating_sub(before),
        mib(before),
    );
}
