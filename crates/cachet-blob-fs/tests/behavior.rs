//! Promises of the filesystem blob store beyond the core conformance suite: its on-disk
//! layout, crash leftovers, foreign files, configuration errors and failure reporting.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cachet_blob_fs::{FsBlobs, FsConfig, FsyncPolicy};
use cachet_core::{BlobBackend, BlobId, BlobInfo, ContentDigest, Error, Timestamp};
use futures_util::TryStreamExt;
use tempfile::TempDir;

fn xxh3_id(n: u128) -> BlobId {
    BlobId::from_digest(&ContentDigest::Xxh3_128(n))
}

fn sha256_id(n: u8) -> BlobId {
    BlobId::from_digest(&ContentDigest::Sha256([n; 32]))
}

/// A store in a fresh temp directory (`<tmp>/blobs`); keep the `TempDir` alive.
fn store() -> (TempDir, FsBlobs) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsConfig::new(dir.path().join("blobs"))
        .with_fsync(FsyncPolicy::Never)
        .build()
        .unwrap();
    (dir, blobs)
}

/// Every regular file and symlink under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let ty = entry.file_type().unwrap();
            if ty.is_dir() {
                walk(base, &entry.path(), out);
            } else {
                let rel = entry.path().strip_prefix(base).unwrap().to_owned();
                out.push(rel.to_str().unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

async fn listed(blobs: &FsBlobs) -> Vec<BlobInfo> {
    let mut infos: Vec<BlobInfo> = blobs.list().await.unwrap().try_collect().await.unwrap();
    infos.sort_by(|a, b| a.id.cmp(&b.id));
    infos
}

fn set_mtime(path: &Path, ago: Duration) {
    let file = File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn blobs_are_stored_at_algorithm_and_one_hex_shard_with_hex_only_names() {
    let (_dir, blobs) = store();
    let a = BlobId::from_digest(&ContentDigest::Xxh3_128(0x0123_4567_89ab_cdef << 64));
    let b = sha256_id(0xfe);
    blobs.put(&a, Bytes::from_static(b"a")).await.unwrap();
    let mut w = blobs.writer().await.unwrap();
    w.write(Bytes::from_static(b"b")).await.unwrap();
    w.finish(&b).await.unwrap();

    let files = files_under(blobs.root());
    assert_eq!(
        files,
        vec![
            format!("sha256/fe/{}", "fe".repeat(32)),
            "xxh3-128/01/0123456789abcdef0000000000000000".to_owned(),
        ]
    );
    for file in &files {
        let name = Path::new(file).file_name().unwrap().to_str().unwrap();
        assert!(
            name.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
    assert_eq!(blobs.blob_path(&a), blobs.root().join(&files[1]));
}

#[test]
fn relative_root_is_made_absolute() {
    let dir = tempfile::tempdir().unwrap();
    // The temp dir as a path relative to the current directory.
    let cwd = std::env::current_dir().unwrap();
    let mut relative: PathBuf = cwd.components().skip(1).map(|_| "..").collect();
    relative.push(dir.path().strip_prefix("/").unwrap());
    relative.push("blobs");
    assert!(relative.is_relative());
    let blobs = FsConfig::new(&relative).build().unwrap();
    assert!(blobs.root().is_absolute());
    assert!(dir.path().join("blobs/tmp").is_dir());
}

#[tokio::test]
async fn blob_file_holds_exactly_the_bytes_written() {
    let (_dir, blobs) = store();
    let id = xxh3_id(1);
    blobs
        .put(&id, Bytes::from_static(b"exact bytes"))
        .await
        .unwrap();
    assert_eq!(fs::read(blobs.blob_path(&id)).unwrap(), b"exact bytes");
}

// ---------------------------------------------------------------------------------------------
// Temporary uploads
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn uploads_in_progress_live_in_tmp_until_finished() {
    let (_dir, blobs) = store();
    let mut w = blobs.writer().await.unwrap();
    w.write(Bytes::from_static(b"partial")).await.unwrap();
    let tmp = files_under(&blobs.tmp_dir());
    assert_eq!(tmp.len(), 1, "one temp file while writing: {tmp:?}");
    assert!(tmp[0].starts_with("upload-"));
    w.finish(&xxh3_id(2)).await.unwrap();
    assert!(files_under(&blobs.tmp_dir()).is_empty());
}

#[tokio::test]
async fn dropped_writer_removes_its_temp_file() {
    let (_dir, blobs) = store();
    let mut w = blobs.writer().await.unwrap();
    w.write(Bytes::from_static(b"partial")).await.unwrap();
    drop(w);
    assert!(files_under(blobs.root()).is_empty());
}

#[tokio::test]
async fn aborted_writer_removes_its_temp_file() {
    let (_dir, blobs) = store();
    let mut w = blobs.writer().await.unwrap();
    w.write(Bytes::from_static(b"partial")).await.unwrap();
    w.abort().await.unwrap();
    assert!(files_under(blobs.root()).is_empty());
}

#[tokio::test]
async fn cleanup_temporary_removes_old_crash_leftovers_and_keeps_young_ones() {
    let (_dir, blobs) = store();
    let tmp = blobs.tmp_dir();
    // Leftovers of a crashed process: one named by us, one with any name.
    let old_ours = tmp.join("upload-1000-4242-0-0000abcd");
    let old_other = tmp.join("something.part");
    // An upload of a live process, written a second ago.
    let young = tmp.join(format!(
        "upload-{}-4243-0-00000001",
        Timestamp::now().as_millis()
    ));
    for path in [&old_ours, &old_other, &young] {
        fs::write(path, b"half a blob").unwrap();
    }
    set_mtime(&old_ours, Duration::from_secs(3 * 3600));
    set_mtime(&old_other, Duration::from_secs(3 * 3600));
    set_mtime(&young, Duration::from_secs(1));
    let published = xxh3_id(3);
    blobs
        .put(&published, Bytes::from_static(b"kept"))
        .await
        .unwrap();

    let one_hour_ago = Timestamp(Timestamp::now().as_millis() - 3_600_000);
    let removed = blobs.cleanup_temporary(one_hour_ago).await.unwrap();

    assert_eq!(removed, 2);
    assert!(!old_ours.exists() && !old_other.exists());
    assert!(young.exists());
    assert_eq!(
        blobs.get(&published).await.unwrap(),
        Bytes::from_static(b"kept")
    );
}

#[tokio::test]
async fn cleanup_temporary_keeps_an_upload_started_after_the_cutoff_even_if_its_mtime_is_old() {
    let (_dir, blobs) = store();
    let cutoff = Timestamp::now();
    let mut w = blobs.writer().await.unwrap();
    w.write(Bytes::from_static(b"in progress")).await.unwrap();
    let temp = blobs.tmp_dir().join(&files_under(&blobs.tmp_dir())[0]);
    set_mtime(&temp, Duration::from_secs(3600)); // as if the clock of the fs lagged
    assert_eq!(blobs.cleanup_temporary(cutoff).await.unwrap(), 0);
    w.finish(&xxh3_id(4)).await.unwrap();
}

#[tokio::test]
async fn cleanup_temporary_keeps_a_long_upload_that_is_still_being_written() {
    let (_dir, blobs) = store();
    let mut w = blobs.writer().await.unwrap();
    w.write(Bytes::from_static(b"started long ago"))
        .await
        .unwrap();
    // Pretend the upload started an hour ago (its name says so) but it is written to now.
    let temp = blobs.tmp_dir().join(&files_under(&blobs.tmp_dir())[0]);
    let renamed = blobs.tmp_dir().join("upload-1000-1-1-00000000");
    fs::rename(&temp, &renamed).unwrap();
    let cutoff = Timestamp(Timestamp::now().as_millis() - 60_000);
    assert_eq!(blobs.cleanup_temporary(cutoff).await.unwrap(), 0);
    assert!(renamed.exists());
}

#[tokio::test]
async fn failed_publish_leaves_no_temp_file() {
    let (_dir, blobs) = store();
    // A regular file where the xxh3-128 algorithm directory belongs.
    fs::write(blobs.root().join("xxh3-128"), b"in the way").unwrap();
    let result = blobs.put(&xxh3_id(5), Bytes::from_static(b"x")).await;
    assert!(result.is_err());
    assert!(files_under(&blobs.tmp_dir()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn list_ignores_foreign_files_anywhere_in_the_tree() {
    let (dir, blobs) = store();
    let root = blobs.root().to_owned();
    let real = xxh3_id(0xabcd << 112);
    let real_sha = sha256_id(0x11);
    blobs.put(&real, Bytes::from_static(b"real")).await.unwrap();
    blobs
        .put(&real_sha, Bytes::from_static(b"real sha"))
        .await
        .unwrap();
    let shard = root.join("xxh3-128/ab");
    let outside = dir.path().join("outside-secret");
    fs::write(&outside, b"secret").unwrap();

    let foreign_files: Vec<PathBuf> = vec![
        root.join("README"),
        root.join("index.sqlite"),
        root.join("xxh3-128/notes.txt"),
        root.join("xxh3-128/ab/cd/abcd0000000000000000000000000008"), // the old two-level path
        shard.join("not-hex"),
        shard.join("abcd0000000000000000000000000000.tmp"),
        shard.join("ABCD0000000000000000000000000001"), // uppercase
        shard.join("abcd00000000000000000000000000"),   // too short
        shard.join("acbd0000000000000000000000000002"), // valid id, wrong shard
        root.join("md5/ab/abcd0000000000000000000000000003"), // unknown algorithm
        root.join("xxh3-128/zz/zzcd0000000000000000000000000004"),
        root.join("sha256/ab/abcd0000000000000000000000000005"), // xxh3 length under sha256
    ];
    for path in &foreign_files {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"foreign").unwrap();
    }
    // A directory with a blob's name, and a symlink with a blob's name pointing outside.
    fs::create_dir_all(shard.join("abcd0000000000000000000000000006")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, shard.join("abcd0000000000000000000000000007")).unwrap();

    let ids: Vec<BlobId> = listed(&blobs).await.into_iter().map(|i| i.id).collect();
    let mut want = vec![real, real_sha];
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn list_reports_sizes_and_modification_times() {
    let (_dir, blobs) = store();
    let before = Timestamp::now().as_millis();
    blobs
        .put(&xxh3_id(6), Bytes::from(vec![1u8; 1234]))
        .await
        .unwrap();
    let infos = listed(&blobs).await;
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].size, 1234);
    let modified = infos[0]
        .modified
        .expect("fs blobs report mtime")
        .as_millis();
    // File times use the kernel's coarse clock: allow it to lag by a few ticks.
    assert!(modified >= before - 50 && modified <= Timestamp::now().as_millis() + 50);
}

// ---------------------------------------------------------------------------------------------
// Reading what is on disk
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn truncated_blob_file_is_returned_as_is_for_the_engine_to_detect() {
    let (_dir, blobs) = store();
    let id = xxh3_id(7);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
    blobs.put(&id, Bytes::from(data.clone())).await.unwrap();
    File::options()
        .write(true)
        .open(blobs.blob_path(&id))
        .unwrap()
        .set_len(1_500_000)
        .unwrap();

    assert_eq!(blobs.get(&id).await.unwrap(), data[..1_500_000]);
    let streamed: Vec<Bytes> = blobs
        .get_stream(&id)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed.concat(), data[..1_500_000]);
    assert_eq!(blobs.head(&id).await.unwrap().unwrap().size, 1_500_000);
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_at_a_blob_path_is_not_followed() {
    let (dir, blobs) = store();
    let id = xxh3_id(8);
    let outside = dir.path().join("outside-secret");
    fs::write(&outside, b"secret").unwrap();
    let path = blobs.blob_path(&id);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&outside, &path).unwrap();

    match blobs.get(&id).await {
        Err(Error::Io { path: p, .. }) => assert!(p.contains(id.hex())),
        other => panic!("expected an Io error naming the blob path, got {other:?}"),
    }
    assert!(blobs.get_stream(&id).await.is_err());
    assert!(blobs.head(&id).await.is_err());
}

#[tokio::test]
async fn get_stream_chunks_are_at_most_chunk_size() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsConfig::new(dir.path())
        .with_chunk_size(64 * 1024)
        .build()
        .unwrap();
    let id = xxh3_id(9);
    blobs
        .put(&id, Bytes::from(vec![9u8; 200_000]))
        .await
        .unwrap();
    let chunks: Vec<Bytes> = blobs
        .get_stream(&id)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let sizes: Vec<usize> = chunks.iter().map(Bytes::len).collect();
    assert_eq!(sizes, vec![65_536, 65_536, 65_536, 3_392]);
}

#[tokio::test]
async fn not_found_error_names_the_blob_id() {
    let (_dir, blobs) = store();
    let id = xxh3_id(10);
    let err = blobs.get(&id).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    assert!(err.to_string().contains(id.as_str()), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Errors: configuration and I/O
// ---------------------------------------------------------------------------------------------

fn config_field(err: Error) -> String {
    match err {
        Error::Config { field, .. } => field,
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

#[test]
fn from_url_accepts_a_file_url_with_options() {
    let config =
        FsConfig::from_url("file:///var/cache/x?fsync=never&chunk_size=2MiB&create_dirs=false")
            .unwrap();
    assert_eq!(config.root(), Path::new("/var/cache/x"));
    assert_eq!(config.fsync(), FsyncPolicy::Never);
    assert_eq!(config.chunk_size(), 2 << 20);
    assert!(!config.create_dirs());
}

#[test]
fn invalid_urls_and_options_name_the_bad_field() {
    let field = |url: &str| config_field(FsConfig::from_url(url).unwrap_err());
    assert_eq!(field("not a url"), "url");
    assert_eq!(field("s3://bucket/prefix"), "url.scheme");
    assert_eq!(field("file://remote-host/x"), "url.path");
    assert_eq!(field("file:///x?fsync=sometimes"), "fsync");
    assert_eq!(field("file:///x?chunk_size=big"), "chunk_size");
    assert_eq!(field("file:///x?create_dirs=maybe"), "create_dirs");
    assert_eq!(field("file:///x?fsynk=never"), "fsynk");
}

#[test]
fn out_of_range_chunk_size_is_rejected_at_build_naming_chunk_size() {
    let dir = tempfile::tempdir().unwrap();
    for size in [0, 1023, (64 << 20) + 1] {
        let err = FsConfig::new(dir.path())
            .with_chunk_size(size)
            .build()
            .unwrap_err();
        assert_eq!(config_field(err), "chunk_size");
    }
    let err = FsConfig::from_url(&format!("file://{}?chunk_size=0", dir.path().display()))
        .unwrap()
        .build()
        .unwrap_err();
    assert_eq!(config_field(err), "chunk_size");
}

#[test]
fn missing_root_without_create_dirs_is_a_config_error_naming_root() {
    let dir = tempfile::tempdir().unwrap();
    let err = FsConfig::new(dir.path().join("absent"))
        .with_create_dirs(false)
        .build()
        .unwrap_err();
    assert_eq!(config_field(err), "root");
}

#[test]
fn missing_root_is_created_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/b/c");
    FsConfig::new(&root).build().unwrap();
    assert!(root.join("tmp").is_dir());
}

#[test]
fn root_that_is_a_regular_file_is_a_config_error_naming_root() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    let err = FsConfig::new(&file).build().unwrap_err();
    let message = err.to_string();
    assert_eq!(config_field(err), "root");
    assert!(
        message.contains("a-file") && message.contains("not a directory"),
        "{message}"
    );
}

#[test]
fn tmp_that_is_not_a_directory_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tmp"), b"x").unwrap();
    match FsConfig::new(dir.path()).build() {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("tmp"), "{path}"),
        other => panic!("expected Error::Io naming tmp, got {other:?}"),
    }
}

#[tokio::test]
async fn publish_into_a_blocked_shard_fails_with_an_io_error_naming_the_path() {
    // Root ignores permissions, so block the shard with a file instead of a read-only dir.
    let (_dir, blobs) = store();
    let blocker = blobs.root().join("xxh3-128");
    fs::write(&blocker, b"in the way").unwrap();
    let id = xxh3_id(11);
    match blobs.put(&id, Bytes::from_static(b"x")).await {
        Err(Error::Io { path, .. }) => {
            assert!(path.contains(&*blocker.to_string_lossy()), "{path}")
        }
        other => panic!("expected Error::Io naming the path, got {other:?}"),
    }
    let mut w = blobs.writer().await.unwrap();
    w.write(Bytes::from_static(b"x")).await.unwrap();
    assert!(matches!(w.finish(&id).await, Err(Error::Io { .. })));
}

#[tokio::test]
async fn removed_tmp_dir_is_recreated_by_the_next_upload() {
    let (_dir, blobs) = store();
    fs::remove_dir(blobs.tmp_dir()).unwrap();
    let id = xxh3_id(12);
    blobs.put(&id, Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(blobs.get(&id).await.unwrap(), Bytes::from_static(b"x"));
}

// ---------------------------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------------------------

#[test]
fn capabilities_report_durable_only_with_fsync_always() {
    let dir = tempfile::tempdir().unwrap();
    let always = FsConfig::new(dir.path()).build().unwrap().capabilities();
    let never = FsConfig::new(dir.path())
        .with_fsync(FsyncPolicy::Never)
        .build()
        .unwrap()
        .capabilities();
    assert!(always.durable && !never.durable);
    for caps in [always, never] {
        assert!(caps.atomic_publish && caps.local_only && caps.range_read);
        assert!(!caps.conditional_put && !caps.server_side_copy);
        assert_eq!(caps.max_object_size, None);
    }
}

#[test]
fn open_url_opens_the_store_at_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blobs =
        FsBlobs::open_url(&format!("file://{}/b?fsync=never", dir.path().display())).unwrap();
    assert_eq!(blobs.root(), dir.path().join("b"));
    assert_eq!(blobs.fsync_policy(), FsyncPolicy::Never);
}
