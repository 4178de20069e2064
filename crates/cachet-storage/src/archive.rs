//! Export and import of a portable, versioned archive: a tar stream holding a manifest record
//! and the stored container of every entry, specified in `docs/ARCHIVE.md`.
//!
//! The tar framing is written and read here, asynchronously; the `tar` crate only builds and
//! parses the 512-byte headers. Values stream between the blob store and the archive one
//! chunk at a time, so memory stays bounded by a frame or two whatever their size.

use bytes::Bytes;
use cachet_core::{
    ByteStream, CacheKey, Compression, ContentDigest, DataType, EntryFilter, EntryMeta, Error,
    Location, Result, Timestamp, WriteCondition,
};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

use crate::format::{FrameDecoder, TrailerInfo};
use crate::store::{PutOptions, Store, StoredEntry, WritePlan, verify_digest};
use crate::writer::ValueWriter;

/// The archive format version this cachet writes, and the only one it reads.
pub const ARCHIVE_VERSION: u32 = 1;
/// The `format` field of an archive's first member, `cachet-archive.json`.
pub const ARCHIVE_FORMAT: &str = "cachet-archive";
/// The largest JSON member a reader accepts (16 MiB): a manifest record with large parameters
/// or user metadata. A reader refuses a larger one before allocating anything.
pub const MAX_JSON_MEMBER: u64 = 16 << 20;

const HEADER_MEMBER: &str = "cachet-archive.json";
const END_MEMBER: &str = "end.json";
/// The tar block size.
const BLOCK: usize = 512;
/// Entries listed per index round trip while exporting.
const EXPORT_PAGE: usize = 500;
/// Bytes read from the archive per step while importing.
const READ_CHUNK: usize = 256 << 10;
/// Buffer between the archive and the caller's reader or writer (headers are 512 bytes).
const IO_BUFFER: usize = 64 << 10;
/// Zeros for tar padding and for filling a value member whose blob came up short.
static ZEROS: [u8; 16 << 10] = [0; 16 << 10];

/// Options of [`Store::export`].
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Which entries to export (default: all). Evaluated by the index.
    pub filter: EntryFilter,
    /// Also export entries that have expired (default: leave them out).
    pub include_expired: bool,
}

/// What [`Store::export`] wrote.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ExportReport {
    /// Entries written to the archive, verified.
    pub entries: u64,
    /// Raw bytes of their values.
    pub raw_bytes: u64,
    /// Bytes of their stored containers (what the archive's value members hold).
    pub stored_bytes: u64,
    /// Bytes written to the output, tar framing included (known when the export finished).
    pub archive_bytes: u64,
    /// Expired entries left out.
    pub expired: u64,
    /// Entries that failed verification in this store (corrupt, tampered, blob missing), with
    /// the reason. Those found damaged before their value was sent are left out of the
    /// archive; a blob found damaged while it streamed is followed by a damage marker, so
    /// an import rejects it (see `docs/ARCHIVE.md`).
    pub damaged: Vec<(CacheKey, Error)>,
}

/// Options of [`Store::import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Replace entries that exist in this store with other content (default: keep them).
    /// An entry whose content this store already holds is skipped either way.
    pub overwrite: bool,
    /// Also import entries that have expired by now (default: skip them).
    pub include_expired: bool,
}

/// What [`Store::import`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ImportReport {
    /// Entries written into this store.
    pub imported: u64,
    /// Raw bytes of the values imported.
    pub bytes: u64,
    /// Entries this store already held with the same content (a resumed import skips them).
    pub already_present: u64,
    /// Entries this store held with other content, kept because `overwrite` was off.
    pub kept_existing: u64,
    /// Expired entries skipped.
    pub expired: u64,
    /// Archive entries refused, with the reason: a value that fails its checksums, a size or
    /// digest that differs from its manifest record, an invalid record, an entry the exporter
    /// marked damaged. Nothing of a rejected entry is written.
    pub rejected: Vec<(CacheKey, Error)>,
}

// ------------------------------------------------------------------------------ members

fn record_name(n: u64) -> String {
    format!("entries/{n:08}.json")
}

fn value_name(n: u64) -> String {
    format!("entries/{n:08}.value")
}

fn damaged_name(n: u64) -> String {
    format!("entries/{n:08}.damaged.json")
}

/// `cachet-archive.json`, the first member.
#[derive(Serialize)]
struct ArchiveHeader<'a> {
    format: &'a str,
    version: u32,
    created_at: i64,
    producer: String,
}

/// `end.json`, the last member: its absence means the archive was cut.
#[derive(Serialize, Deserialize)]
struct ArchiveEnd {
    entries: u64,
    #[serde(default)]
    damaged: u64,
    #[serde(default)]
    raw_bytes: u64,
}

/// `entries/<n>.damaged.json`: the exporter found the value member before it damaged.
#[derive(Serialize, Deserialize)]
struct DamageMarker {
    error: String,
}

/// `entries/<n>.json`: everything the index knows about an entry except its location,
/// signature, blob ETag and access counters (those belong to the store that holds it).
#[derive(Debug, Serialize, Deserialize)]
struct ManifestRecord {
    namespace: String,
    id: String,
    #[serde(default)]
    params: Option<serde_json::Value>,
    data_type: String,
    #[serde(default)]
    type_name: Option<String>,
    compression: String,
    raw_size: u64,
    stored_size: u64,
    digest: String,
    created_at: i64,
    updated_at: i64,
    #[serde(default)]
    expires_at: Option<i64>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    user_metadata: Option<serde_json::Value>,
}

/// A manifest record, checked and typed.
struct Described {
    key: CacheKey,
    digest: ContentDigest,
    raw_size: u64,
    data_type: DataType,
    expires_at: Option<Timestamp>,
    created_at: Timestamp,
    opts: PutOptions,
}

impl ManifestRecord {
    fn from_meta(meta: &EntryMeta) -> Self {
        ManifestRecord {
            namespace: meta.key.namespace().to_owned(),
            id: meta.key.id().to_owned(),
            params: meta.params.clone(),
            data_type: meta.data_type.as_str().to_owned(),
            type_name: meta.type_name.clone(),
            compression: meta.compression.name(),
            raw_size: meta.raw_size,
            stored_size: meta.stored_size,
            digest: meta.digest.to_string(),
            created_at: meta.created_at.as_millis(),
            updated_at: meta.updated_at.as_millis(),
            expires_at: meta.expires_at.map(Timestamp::as_millis),
            tags: meta.tags.clone(),
            user_metadata: meta.user_metadata.clone(),
        }
    }

    /// The key as written, unchecked (to name a rejected entry).
    fn key_as_written(&self) -> CacheKey {
        CacheKey::from_parts_unchecked(self.namespace.clone(), self.id.clone())
    }

    fn describe(&self, n: u64) -> Result<Described> {
        let bad = |detail: String| {
            Error::corrupt(
                format!("archive entry {n} ({})", self.key_as_written()),
                detail,
            )
        };
        let key = CacheKey::explicit(&self.namespace, self.id.clone())
            .map_err(|e| bad(format!("its manifest record holds an invalid key: {e}")))?;
        let digest: ContentDigest = self.digest.parse().map_err(|_| {
            bad(format!(
                "its manifest record's digest `{}` is not a content digest",
                self.digest
            ))
        })?;
        let compression: Compression = self.compression.parse().map_err(|_| {
            bad(format!(
                "its manifest record's compression `{}` is unknown",
                self.compression
            ))
        })?;
        let expires_at = self.expires_at.map(Timestamp);
        Ok(Described {
            key,
            digest,
            raw_size: self.raw_size,
            data_type: DataType::parse(&self.data_type),
            expires_at,
            created_at: Timestamp(self.created_at),
            opts: PutOptions {
                expires_at,
                ttl: None,
                params: self.params.clone(),
                tags: self.tags.clone(),
                user_metadata: self.user_metadata.clone(),
                compression: Some(compression),
                type_name: self.type_name.clone(),
            },
        })
    }
}

fn to_json(what: &str, value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Encode {
        key: what.to_owned(),
        detail: e.to_string(),
    })
}

/// Zero bytes that pad a member of `size` bytes to a whole block.
fn padding(size: u64) -> usize {
    let block = BLOCK as u64;
    ((block - size % block) % block) as usize
}

// ------------------------------------------------------------------------------ content checks

/// Verifies a stored container as it streams: every frame checksum, the trailer, the
/// whole-content xxh3-128 and, when asked, the SHA-256 of the raw content.
///
/// Callers take every frame out with [`next_frame`](Self::next_frame) after each
/// [`feed`](Self::feed), so that the SHA-256 covers them all before [`finish`](Self::finish).
struct ContentCheck {
    decoder: FrameDecoder,
    sha256: Option<ring::digest::Context>,
}

/// What a verified container holds.
struct Checked {
    info: TrailerInfo,
    sha256: Option<ring::digest::Digest>,
}

impl Checked {
    /// Whether the content has this digest (`false` when its SHA-256 was not computed).
    fn has_digest(&self, digest: &ContentDigest) -> bool {
        match digest {
            ContentDigest::Xxh3_128(x) => *x == self.info.content_xxh3,
            ContentDigest::Sha256(s) => self.sha256.as_ref().map(|d| d.as_ref()) == Some(&s[..]),
        }
    }
}

impl ContentCheck {
    fn new(what: String, sha256: bool) -> Self {
        ContentCheck {
            decoder: FrameDecoder::new(what),
            sha256: sha256.then(|| ring::digest::Context::new(&ring::digest::SHA256)),
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        self.decoder.feed(chunk)
    }

    fn next_frame(&mut self) -> Result<Option<Bytes>> {
        let frame = self.decoder.next_frame()?;
        if let (Some(frame), Some(sha)) = (&frame, &mut self.sha256) {
            sha.update(frame);
        }
        Ok(frame)
    }

    fn finish(mut self) -> Result<Checked> {
        let info = self.decoder.finish()?;
        Ok(Checked {
            info,
            sha256: self.sha256.map(ring::digest::Context::finish),
        })
    }
}

/// Verifies a container held in memory against its index row.
fn verify_container(meta: &EntryMeta, stored: &[u8]) -> Result<()> {
    let mut check = ContentCheck::new(
        meta.key.to_string(),
        matches!(meta.digest, ContentDigest::Sha256(_)),
    );
    check.feed(stored)?;
    while check.next_frame()?.is_some() {}
    let checked = check.finish()?;
    verify_digest(meta, &checked.info, checked.sha256)
}

// ------------------------------------------------------------------------------ tar output

/// Writes tar members: header, data, zero padding to the block size; two zero blocks at the end.
struct TarOut<W: AsyncWrite + Unpin> {
    out: BufWriter<W>,
    written: u64,
    mtime: u64,
}

impl<W: AsyncWrite + Unpin> TarOut<W> {
    fn new(out: W, created_at: Timestamp) -> Self {
        TarOut {
            out: BufWriter::with_capacity(IO_BUFFER, out),
            written: 0,
            mtime: u64::try_from(created_at.as_millis() / 1000).unwrap_or(0),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .await
            .map_err(|e| Error::io("archive output", e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    async fn zeros(&mut self, mut count: u64) -> Result<()> {
        while count > 0 {
            let n = usize::try_from(count)
                .unwrap_or(usize::MAX)
                .min(ZEROS.len());
            self.write(&ZEROS[..n]).await?;
            count -= n as u64;
        }
        Ok(())
    }

    async fn header(&mut self, name: &str, size: u64) -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header
            .set_path(name)
            .map_err(|e| Error::io(format!("archive member {name}"), e))?;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        self.write(header.as_bytes()).await
    }

    async fn padding(&mut self, size: u64) -> Result<()> {
        self.zeros(padding(size) as u64).await
    }

    async fn member(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.header(name, data.len() as u64).await?;
        self.write(data).await?;
        self.padding(data.len() as u64).await
    }

    /// Writes the end-of-archive marker and flushes; returns the bytes written in all.
    async fn finish(mut self) -> Result<u64> {
        self.zeros(2 * BLOCK as u64).await?;
        self.out
            .flush()
            .await
            .map_err(|e| Error::io("archive output", e))?;
        Ok(self.written)
    }
}

// ------------------------------------------------------------------------------ tar input

/// One member header read from the archive.
struct Member {
    name: String,
    size: u64,
    /// Byte offset of its header in the archive.
    at: u64,
}

/// What follows in the archive.
enum Next {
    Member(Member),
    /// An all-zero block: tar's end-of-archive marker.
    EndMarker,
    /// The input ended at a block boundary.
    Eof,
}

/// Reads tar members: checked headers, then each member's data in chunks.
struct TarIn<R: AsyncRead + Unpin> {
    input: BufReader<R>,
    /// Bytes consumed so far.
    offset: u64,
    /// Entries completely processed (named in truncation errors).
    entries_done: u64,
    /// Data bytes of the current member not read yet.
    remaining: u64,
    /// Padding bytes after the current member's data not read yet.
    pad: usize,
}

fn archive_corrupt(detail: impl std::fmt::Display) -> Error {
    Error::corrupt("archive", detail)
}

impl<R: AsyncRead + Unpin> TarIn<R> {
    fn new(input: R) -> Self {
        TarIn {
            input: BufReader::with_capacity(IO_BUFFER, input),
            offset: 0,
            entries_done: 0,
            remaining: 0,
            pad: 0,
        }
    }

    fn truncated(&self, where_: &str) -> Error {
        archive_corrupt(format!(
            "the archive is truncated: it ends {where_} at byte {}, after {} complete entries, \
             without its end.json (entries before the cut were imported, each complete; \
             import the whole archive again to get the rest)",
            self.offset, self.entries_done
        ))
    }

    /// Reads until `buf` is full or the input ends; returns the bytes read.
    async fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self
                .input
                .read(&mut buf[filled..])
                .await
                .map_err(|e| Error::io("archive input", e))?;
            if n == 0 {
                break;
            }
            filled += n;
            self.offset += n as u64;
        }
        Ok(filled)
    }

    /// Skips what is left of the current member, then reads the next header.
    async fn next(&mut self) -> Result<Next> {
        self.skip().await?;
        let at = self.offset;
        let mut block = [0u8; BLOCK];
        let n = self.fill(&mut block).await?;
        if n == 0 {
            return Ok(Next::Eof);
        }
        if n < BLOCK {
            return Err(self.truncated("inside a member header"));
        }
        if block.iter().all(|&b| b == 0) {
            return Ok(Next::EndMarker);
        }
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(&block);
        // The checksum is the sum of the header's bytes with its own 8-byte field as spaces.
        let computed: u32 = block[..148]
            .iter()
            .chain(&[b' '; 8])
            .chain(&block[156..])
            .map(|&b| u32::from(b))
            .sum();
        if header.cksum().ok() != Some(computed) {
            return Err(archive_corrupt(if at == 0 {
                "the first block is not a tar header (checksum mismatch): not a cachet archive, \
                 or a damaged one"
                    .to_owned()
            } else {
                format!("the member header at byte {at} fails its checksum (damaged archive)")
            }));
        }
        let name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
        if !matches!(block[156], b'0' | 0) {
            return Err(archive_corrupt(format!(
                "member `{name}` at byte {at} is not a regular file (type {:?}); a cachet \
                 archive holds only regular files",
                char::from(block[156])
            )));
        }
        let size = header.entry_size().map_err(|_| {
            archive_corrupt(format!(
                "member `{name}` at byte {at} has an unreadable size field"
            ))
        })?;
        self.remaining = size;
        self.pad = padding(size);
        Ok(Next::Member(Member { name, size, at }))
    }

    /// The next bytes of the current member's data; 0 once it is all read (its padding is
    /// then consumed too).
    async fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 {
            if self.pad > 0 {
                let mut pad = [0u8; BLOCK];
                let want = self.pad;
                if self.fill(&mut pad[..want]).await? < want {
                    return Err(self.truncated("inside a member's padding"));
                }
                self.pad = 0;
            }
            return Ok(0);
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self
            .input
            .read(&mut buf[..want])
            .await
            .map_err(|e| Error::io("archive input", e))?;
        if n == 0 {
            return Err(self.truncated("inside a member's data"));
        }
        self.remaining -= n as u64;
        self.offset += n as u64;
        Ok(n)
    }

    /// Skips the rest of the current member.
    async fn skip(&mut self) -> Result<()> {
        let mut buf = [0u8; 8 << 10];
        while self.read_data(&mut buf).await? > 0 {}
        Ok(())
    }

    /// Reads a whole JSON member (at most [`MAX_JSON_MEMBER`] bytes).
    async fn read_json<T: DeserializeOwned>(&mut self, member: &Member) -> Result<T> {
        if member.size > MAX_JSON_MEMBER {
            return Err(archive_corrupt(format!(
                "member `{}` at byte {} declares {} bytes; JSON members are at most {} bytes",
                member.name, member.at, member.size, MAX_JSON_MEMBER
            )));
        }
        let mut data = vec![0u8; member.size as usize];
        let mut filled = 0;
        // The padding is left for the next header read: nothing need follow `end.json`.
        while filled < data.len() {
            filled += self.read_data(&mut data[filled..]).await?;
        }
        serde_json::from_slice(&data).map_err(|e| {
            archive_corrupt(format!(
                "member `{}` at byte {} is not what its name says: {e}",
                member.name, member.at
            ))
        })
    }
}

fn unexpected(member: &Member, expected: &str) -> Error {
    archive_corrupt(format!(
        "member `{}` at byte {} is out of place: expected {expected}",
        member.name, member.at
    ))
}

// ------------------------------------------------------------------------------ the engine

/// How an archive entry meets this store.
enum Plan {
    /// Skip the value: the entry ends this way (expired, already present, kept).
    Skip(Outcome),
    /// Verify the value without writing it, then tell whether it is the content this store
    /// holds under another digest algorithm (already present) or not (kept).
    Compare(ContentDigest),
    /// Verify and write the value; with `Some`, the existing entry has this digest of another
    /// algorithm, and the same content is not written again.
    Write(Option<ContentDigest>),
}

/// How one entry of an import ended.
enum Outcome {
    Imported(u64),
    Expired,
    AlreadyPresent,
    KeptExisting,
    Rejected(Error),
}

impl Store {
    /// Writes the entries matching `options.filter` to `out` as a cachet archive: a tar stream
    /// with a manifest record and the stored container ("values as stored") of each entry,
    /// specified in `docs/ARCHIVE.md`.
    ///
    /// Values stream from the blob store into the archive chunk by chunk (memory stays bounded
    /// whatever their size) and are verified on the way: frame checksums, the whole-content
    /// hash and the digest of the index row. An entry found damaged before its value is sent
    /// (signature, a missing blob, inline data) is left out; a blob found damaged while it
    /// streams cannot be taken back, so a damage marker follows it and an import rejects it.
    /// Both are reported in [`ExportReport::damaged`]. Any other error (the output or a
    /// service failing) stops the export and is returned; the archive then has no `end.json`
    /// and an import reports it truncated.
    ///
    /// `progress` is called after each entry with the report so far. `out` is flushed but
    /// not shut down.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use cachet_core::memory::{MemoryBlobs, MemoryMetadata};
    /// use cachet_core::{CacheKey, EntryFilter};
    /// use cachet_storage::{ExportOptions, ImportOptions, PutOptions, Store, StoreConfig};
    ///
    /// let open = || Store::new(Arc::new(MemoryMetadata::new()), Arc::new(MemoryBlobs::new()),
    ///     StoreConfig::default());
    /// let (local, other) = (open()?, open()?);
    /// let key = CacheKey::explicit("models", "forecast")?;
    /// local.put_bytes(&key, &[7u8; 100_000], PutOptions::default()).await?;
    ///
    /// let mut archive = Vec::new();
    /// let options = ExportOptions { filter: EntryFilter::all().namespace("models"), ..Default::default() };
    /// let exported = local.export(&mut archive, &options, |_| {}).await?;
    /// assert_eq!(exported.entries, 1);
    ///
    /// let imported = other.import(&archive[..], &ImportOptions::default(), |_| {}).await?;
    /// assert_eq!(imported.imported, 1);
    /// assert_eq!(other.get_bytes(&key).await?.unwrap().len(), 100_000);
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub async fn export<W: AsyncWrite + Unpin + Send>(
        &self,
        out: W,
        options: &ExportOptions,
        mut progress: impl FnMut(&ExportReport),
    ) -> Result<ExportReport> {
        options.filter.validate()?;
        let created_at = self.now();
        let mut tar = TarOut::new(out, created_at);
        let header = ArchiveHeader {
            format: ARCHIVE_FORMAT,
            version: ARCHIVE_VERSION,
            created_at: created_at.as_millis(),
            producer: format!("cachet {}", env!("CARGO_PKG_VERSION")),
        };
        tar.member(HEADER_MEMBER, &to_json(HEADER_MEMBER, &header)?)
            .await?;
        let mut report = ExportReport::default();
        let (mut records, mut marked) = (0u64, 0u64);
        let mut pages = self.pages(options.filter.clone(), EXPORT_PAGE);
        while let Some(page) = pages.next_page().await? {
            let now = self.now();
            for meta in page {
                if !options.include_expired && meta.expires_at.is_some_and(|at| at <= now) {
                    report.expired += 1;
                } else {
                    match self
                        .export_entry(&mut tar, records, &meta.key, &mut report)
                        .await?
                    {
                        Exported::Intact => records += 1,
                        Exported::Marked => {
                            records += 1;
                            marked += 1;
                        }
                        Exported::LeftOut => {}
                    }
                }
                progress(&report);
            }
        }
        let end = ArchiveEnd {
            entries: records,
            damaged: marked,
            raw_bytes: report.raw_bytes,
        };
        tar.member(END_MEMBER, &to_json(END_MEMBER, &end)?).await?;
        report.archive_bytes = tar.finish().await?;
        tracing::info!(
            entries = report.entries,
            damaged = report.damaged.len(),
            bytes = report.archive_bytes,
            "export finished"
        );
        Ok(report)
    }

    /// Writes entry number `n` (its record, its value, and a damage marker if its value turned
    /// out damaged while it streamed).
    async fn export_entry<W: AsyncWrite + Unpin>(
        &self,
        tar: &mut TarOut<W>,
        n: u64,
        key: &CacheKey,
        report: &mut ExportReport,
    ) -> Result<Exported> {
        let left_out = |report: &mut ExportReport, e: Error| {
            tracing::warn!(key = %key, error = %e, "not exported: the entry is damaged");
            report.damaged.push((key.clone(), e));
            Ok(Exported::LeftOut)
        };
        let entry = match self.lookup(key).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return Ok(Exported::LeftOut), // deleted since it was listed
            Err(e) if e.is_integrity_failure() => return left_out(report, e),
            Err(e) => return Err(e),
        };
        let record = to_json(&key.to_string(), &ManifestRecord::from_meta(&entry.meta))?;
        if record.len() as u64 > MAX_JSON_MEMBER {
            let e = Error::Unsupported {
                what: format!(
                    "exporting {key}: its manifest record is {} bytes, over the archive's limit \
                     of {MAX_JSON_MEMBER} (parameters or user metadata too large)",
                    record.len()
                ),
            };
            return left_out(report, e);
        }
        let StoredEntry { meta, inline } = entry;
        let id = match (&meta.location, inline) {
            (Location::Inline, Some(stored)) => {
                if let Err(e) = verify_container(&meta, &stored) {
                    return left_out(report, e);
                }
                tar.member(&record_name(n), &record).await?;
                tar.member(&value_name(n), &stored).await?;
                report.entries += 1;
                report.raw_bytes += meta.raw_size;
                report.stored_bytes += stored.len() as u64;
                return Ok(Exported::Intact);
            }
            (Location::Inline, None) => {
                return left_out(report, Error::corrupt(key, "inline entry without data"));
            }
            (Location::Blob(id), _) => id,
        };
        let missing =
            || Error::corrupt(key, format!("its blob {id} is missing from the blob store"));
        // The blob's own size, not the entry's `stored_size`: another writer of the same
        // content may have published another encoding of it (docs/FORMAT.md §2.2).
        let size = match self.blob_backend().head(id).await? {
            Some(info) => info.size,
            None => return left_out(report, missing()),
        };
        let stream = match self.blob_backend().get_stream(id).await {
            Ok(stream) => stream,
            Err(Error::NotFound { .. }) => return left_out(report, missing()),
            Err(e) => return Err(e),
        };
        tar.member(&record_name(n), &record).await?;
        tar.header(&value_name(n), size).await?;
        match stream_value(tar, stream, size, &meta).await? {
            Ok(()) => {
                report.entries += 1;
                report.raw_bytes += meta.raw_size;
                report.stored_bytes += size;
                Ok(Exported::Intact)
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "exported with a damage marker: the blob is damaged");
                let marker = DamageMarker {
                    error: e.to_string(),
                };
                let name = damaged_name(n);
                tar.member(&name, &to_json(&name, &marker)?).await?;
                report.damaged.push((key.clone(), e));
                Ok(Exported::Marked)
            }
        }
    }

    /// Reads a cachet archive (written by [`Store::export`], by any cachet backend) and writes
    /// its entries into this store, keeping each entry's key, parameters, data type, tags,
    /// user metadata, compression and expiry. The store re-encodes every value with its own
    /// settings, and its signing key, if any, signs the imported entries.
    ///
    /// Every value is verified before its entry is committed: its frame checksums and
    /// whole-content hash, and its size and digest against its manifest record (SHA-256
    /// computed for SHA-256 digests). An entry that fails is rejected and reported in
    /// [`ImportReport::rejected`], nothing of it written, and the import goes on. An entry
    /// this store already holds with the same content is skipped; one it holds with other
    /// content is kept unless `overwrite` is set. Memory stays bounded by a few frames
    /// whatever the value sizes.
    ///
    /// Archive-level problems stop the import with an error: `Error::Unsupported` for input
    /// that is not a cachet archive or of another format version; `Error::Corrupt` for a
    /// damaged tar header, a malformed JSON member, members out of order, or an archive cut
    /// before its `end.json` (truncated). Entries imported before the problem stay, each
    /// complete, and importing the archive again resumes (they count as already present).
    ///
    /// `progress` is called after each entry with the report so far. An archive carries no
    /// signature: importing into a signed store vouches for its content, so import only
    /// archives from a source you trust.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use cachet_core::memory::{MemoryBlobs, MemoryMetadata};
    /// use cachet_core::{CacheKey, params};
    /// use cachet_storage::{ExportOptions, ImportOptions, PutOptions, Store, StoreConfig};
    ///
    /// let open = || Store::new(Arc::new(MemoryMetadata::new()), Arc::new(MemoryBlobs::new()),
    ///     StoreConfig::default());
    /// let (source, target) = (open()?, open()?);
    /// let key = CacheKey::derive("", &params! { "window" => 30 });
    /// source.put_value(&key, &vec![1.5f64, 2.5], PutOptions::default()).await?;
    /// let mut archive = Vec::new();
    /// source.export(&mut archive, &ExportOptions::default(), |_| {}).await?;
    ///
    /// let first = target.import(&archive[..], &ImportOptions::default(), |_| {}).await?;
    /// assert_eq!(first.imported, 1);
    /// let again = target.import(&archive[..], &ImportOptions::default(), |_| {}).await?;
    /// assert_eq!((again.imported, again.already_present), (0, 1));
    /// assert_eq!(target.get_value::<Vec<f64>>(&key).await?, Some(vec![1.5, 2.5]));
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub async fn import<R: AsyncRead + Unpin + Send>(
        &self,
        input: R,
        options: &ImportOptions,
        mut progress: impl FnMut(&ImportReport),
    ) -> Result<ImportReport> {
        let mut tar = TarIn::new(input);
        read_archive_header(&mut tar).await?;
        let mut report = ImportReport::default();
        let mut buf = vec![0u8; READ_CHUNK];
        let mut pending = None;
        loop {
            let next = match pending.take() {
                Some(next) => next,
                None => tar.next().await?,
            };
            let n = tar.entries_done;
            let member = match next {
                Next::Member(member) => member,
                Next::EndMarker => {
                    return Err(tar.truncated("with the tar end marker but no end.json"));
                }
                Next::Eof => return Err(tar.truncated("between two members")),
            };
            if member.name == END_MEMBER {
                let end: ArchiveEnd = tar.read_json(&member).await?;
                if end.entries != n {
                    return Err(archive_corrupt(format!(
                        "end.json counts {} entries but the archive holds {n} (entries were \
                         removed or spliced)",
                        end.entries
                    )));
                }
                tracing::info!(
                    imported = report.imported,
                    rejected = report.rejected.len(),
                    "import finished"
                );
                return Ok(report);
            }
            if member.name != record_name(n) {
                return Err(unexpected(
                    &member,
                    &format!("`{}` or `{END_MEMBER}`", record_name(n)),
                ));
            }
            let record: ManifestRecord = tar.read_json(&member).await?;
            match tar.next().await? {
                Next::Member(value) if value.name == value_name(n) => {}
                Next::Member(other) => {
                    return Err(unexpected(&other, &format!("`{}`", value_name(n))));
                }
                Next::EndMarker | Next::Eof => {
                    return Err(tar.truncated("after an entry's manifest record"));
                }
            }
            let key = record.key_as_written();
            let (outcome, next) = self
                .import_entry(&mut tar, n, &record, options, &mut buf)
                .await?;
            match outcome {
                Outcome::Imported(bytes) => {
                    report.imported += 1;
                    report.bytes += bytes;
                }
                Outcome::Expired => report.expired += 1,
                Outcome::AlreadyPresent => report.already_present += 1,
                Outcome::KeptExisting => report.kept_existing += 1,
                Outcome::Rejected(e) => {
                    tracing::warn!(key = %key, error = %e, "not imported: the archive entry is damaged");
                    report.rejected.push((key, e));
                }
            }
            tar.entries_done += 1;
            pending = Some(next);
            progress(&report);
        }
    }

    /// Decides what to do with an archive entry, before its value is read.
    async fn plan_import(&self, entry: &Described, options: &ImportOptions) -> Result<Plan> {
        if !options.include_expired && entry.expires_at.is_some_and(|at| at <= self.now()) {
            return Ok(Plan::Skip(Outcome::Expired));
        }
        let existing = match self.metadata(&entry.key).await {
            Ok(existing) => existing.map(|m| Some(m.digest)),
            // An existing entry that fails verification is other content, never the same.
            Err(e) if e.is_integrity_failure() => Some(None),
            Err(e) => return Err(e),
        };
        Ok(match existing {
            None => Plan::Write(None),
            Some(Some(digest)) if digest == entry.digest => Plan::Skip(Outcome::AlreadyPresent),
            Some(Some(digest)) if digest.algorithm() != entry.digest.algorithm() => {
                // The same content has another digest in a store that signs (SHA-256) than in
                // one that does not (xxh3-128): compare the content itself.
                if options.overwrite {
                    Plan::Write(Some(digest))
                } else {
                    Plan::Compare(digest)
                }
            }
            Some(_) if options.overwrite => Plan::Write(None),
            Some(_) => Plan::Skip(Outcome::KeptExisting),
        })
    }

    /// Imports archive entry `n` (its value member is the current one); returns how it ended
    /// and what follows it in the archive.
    async fn import_entry<R: AsyncRead + Unpin>(
        &self,
        tar: &mut TarIn<R>,
        n: u64,
        record: &ManifestRecord,
        options: &ImportOptions,
        buf: &mut [u8],
    ) -> Result<(Outcome, Next)> {
        let entry = match record.describe(n) {
            Ok(entry) => entry,
            Err(e) => {
                let (next, _) = after_value(tar, n).await?;
                return Ok((Outcome::Rejected(e), next));
            }
        };
        let (compare, write) = match self.plan_import(&entry, options).await? {
            Plan::Compare(digest) => (Some(digest), false),
            Plan::Write(digest) => (digest, true),
            Plan::Skip(outcome) => {
                let (next, _) = after_value(tar, n).await?;
                return Ok((outcome, next));
            }
        };
        let what = format!("archive entry {n} ({})", entry.key);
        let sha256 = matches!(entry.digest, ContentDigest::Sha256(_))
            || matches!(compare, Some(ContentDigest::Sha256(_)));
        let mut check = ContentCheck::new(what.clone(), sha256);
        let mut writer = if write {
            // The entry keeps its creation time; without overwrite the commit is conditional
            // on the key still being absent, so an entry written concurrently is kept.
            let plan = WritePlan {
                condition: if options.overwrite {
                    WriteCondition::Always
                } else {
                    WriteCondition::IfAbsent
                },
                created_at: Some(entry.created_at),
            };
            Some(
                ValueWriter::new(
                    self.clone(),
                    entry.key.clone(),
                    entry.data_type.clone(),
                    entry.opts.clone(),
                )?
                .with_plan(plan),
            )
        } else {
            None
        };
        let failure = match copy_value(tar, &mut check, writer.as_mut(), buf).await {
            Ok(failure) => failure,
            Err(e) => {
                abort(writer).await;
                return Err(e);
            }
        };
        let checked = match failure {
            Some(e) => Err(e),
            None => check
                .finish()
                .and_then(|checked| check_record(&what, &entry, checked)),
        };
        let (next, marker) = match after_value(tar, n).await {
            Ok(after) => after,
            Err(e) => {
                abort(writer).await;
                return Err(e);
            }
        };
        let checked = match (checked, marker) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(error)) => Err(Error::corrupt(
                &what,
                format!("the exporting store found it damaged: {error}"),
            )),
            (Ok(checked), None) => Ok(checked),
        };
        let outcome = match (checked, writer) {
            (Err(e), writer) => {
                abort(writer).await;
                Outcome::Rejected(e)
            }
            (Ok(checked), writer) if compare.is_some_and(|d| checked.has_digest(&d)) => {
                abort(writer).await;
                Outcome::AlreadyPresent
            }
            (Ok(_), None) => Outcome::KeptExisting,
            (Ok(_), Some(writer)) => match writer.finish().await {
                Ok(meta) => Outcome::Imported(meta.raw_size),
                // Written by someone else since this entry was planned (without overwrite).
                Err(Error::AlreadyExists { .. }) => Outcome::KeptExisting,
                Err(e) => return Err(e),
            },
        };
        Ok((outcome, next))
    }
}

/// Streams the current value member through `check` into `writer` (if any). The outer error
/// stops the import (the archive or this store failing); the inner one says the value is
/// damaged (the rest of the member is then skipped).
async fn copy_value<R: AsyncRead + Unpin>(
    tar: &mut TarIn<R>,
    check: &mut ContentCheck,
    mut writer: Option<&mut ValueWriter>,
    buf: &mut [u8],
) -> Result<Option<Error>> {
    let mut failure = None;
    loop {
        let n = tar.read_data(buf).await?;
        if n == 0 {
            return Ok(failure);
        }
        if failure.is_some() {
            continue;
        }
        if let Err(e) = check.feed(&buf[..n]) {
            failure = Some(e);
            continue;
        }
        loop {
            match check.next_frame() {
                Ok(Some(frame)) => {
                    if let Some(writer) = writer.as_mut() {
                        writer.write(&frame).await?;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
    }
}

/// Checks a verified value against its manifest record.
fn check_record(what: &str, entry: &Described, checked: Checked) -> Result<Checked> {
    if checked.info.raw_size != entry.raw_size {
        return Err(Error::corrupt(
            what,
            format!(
                "its value holds {} bytes, its manifest record says {}",
                checked.info.raw_size, entry.raw_size
            ),
        ));
    }
    if !checked.has_digest(&entry.digest) {
        return Err(Error::corrupt(
            what,
            format!(
                "its value does not match the digest in its manifest record ({})",
                entry.digest
            ),
        ));
    }
    Ok(checked)
}

/// Discards a value being written, if any.
async fn abort(writer: Option<ValueWriter>) {
    if let Some(writer) = writer {
        if let Err(e) = writer.abort().await {
            tracing::warn!(error = %e, "could not discard a rejected value; gc will remove it");
        }
    }
}

/// How [`Store::export_entry`] ended.
enum Exported {
    /// Record and verified value written.
    Intact,
    /// Record, value and a damage marker written.
    Marked,
    /// Nothing written (damaged before anything was sent, or deleted meanwhile).
    LeftOut,
}

/// Streams a blob of `size` bytes into the current value member while verifying it; pads the
/// member. The outer error stops the export; the inner one says the value is damaged.
async fn stream_value<W: AsyncWrite + Unpin>(
    tar: &mut TarOut<W>,
    mut stream: ByteStream,
    size: u64,
    meta: &EntryMeta,
) -> Result<Result<()>> {
    let key = &meta.key;
    let mut check = ContentCheck::new(
        key.to_string(),
        matches!(meta.digest, ContentDigest::Sha256(_)),
    );
    let mut sent = 0u64;
    let mut failure = None;
    while sent < size {
        let chunk = match stream.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) if e.is_integrity_failure() => {
                failure = Some(e);
                break;
            }
            Some(Err(e)) => return Err(e),
            None => {
                failure = Some(Error::corrupt(
                    key,
                    format!("its blob ended after {sent} of {size} bytes"),
                ));
                break;
            }
        };
        let take = usize::try_from(size - sent)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        tar.write(&chunk[..take]).await?;
        sent += take as u64;
        if take < chunk.len() {
            failure = Some(blob_changed(key));
            break;
        }
        if let Err(e) = feed_and_drain(&mut check, &chunk) {
            failure = Some(e);
            break;
        }
    }
    if failure.is_none() {
        // More bytes than the blob store said: it was replaced while we read it.
        loop {
            match stream.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(_)) => failure = Some(blob_changed(key)),
                Some(Err(e)) if e.is_integrity_failure() => failure = Some(e),
                Some(Err(e)) => return Err(e),
                None => {}
            }
            break;
        }
    }
    drop(stream);
    tar.zeros(size - sent).await?;
    tar.padding(size).await?;
    Ok(match failure {
        Some(e) => Err(e),
        None => check
            .finish()
            .and_then(|checked| verify_digest(meta, &checked.info, checked.sha256)),
    })
}

fn blob_changed(key: &CacheKey) -> Error {
    Error::Conflict {
        what: format!("entry {key}"),
        detail: "its blob was replaced while it was being exported; export it again".into(),
    }
}

/// Feeds a chunk to the check and discards the verified frames.
fn feed_and_drain(check: &mut ContentCheck, chunk: &[u8]) -> Result<()> {
    check.feed(chunk)?;
    while check.next_frame()?.is_some() {}
    Ok(())
}

/// Reads the archive's first member and refuses anything but a cachet archive of this version.
async fn read_archive_header<R: AsyncRead + Unpin>(tar: &mut TarIn<R>) -> Result<()> {
    let member = match tar.next().await? {
        Next::Member(member) => member,
        Next::EndMarker | Next::Eof => return Err(tar.truncated("before its first member")),
    };
    if member.name != HEADER_MEMBER {
        return Err(Error::Unsupported {
            what: format!(
                "reading a tar archive whose first member is `{}`: not a cachet archive \
                 (which starts with `{HEADER_MEMBER}`)",
                member.name
            ),
        });
    }
    let header: serde_json::Value = tar.read_json(&member).await?;
    let format = header.get("format").and_then(|f| f.as_str());
    if format != Some(ARCHIVE_FORMAT) {
        return Err(Error::Unsupported {
            what: format!(
                "reading an archive of format {}: not a cachet archive (format `{ARCHIVE_FORMAT}`)",
                header
                    .get("format")
                    .map_or_else(|| "(none)".to_owned(), ToString::to_string)
            ),
        });
    }
    match header.get("version") {
        Some(v) if v.as_u64() == Some(u64::from(ARCHIVE_VERSION)) => Ok(()),
        found => Err(Error::Unsupported {
            what: format!(
                "cachet archive format version {}: this cachet reads version {ARCHIVE_VERSION} \
                 only; import it with the cachet release that wrote it or a newer one",
                found.map_or_else(|| "(none)".to_owned(), ToString::to_string)
            ),
        }),
    }
}

/// Reads what follows a value member: a damage marker for entry `n` (its error is returned),
/// then the next member.
async fn after_value<R: AsyncRead + Unpin>(
    tar: &mut TarIn<R>,
    n: u64,
) -> Result<(Next, Option<String>)> {
    match tar.next().await? {
        Next::Member(member) if member.name == damaged_name(n) => {
            let marker: DamageMarker = tar.read_json(&member).await?;
            Ok((tar.next().await?, Some(marker.error)))
        }
        next => Ok((next, None)),
    }
}
