//! The stored container: a header, checksummed frames, and a trailer with the whole-value hash.
//!
//! ```text
//! header  (8 bytes)  "CACHET" | version u8 = 1 | flags u8 = 0
//! frame   (20 bytes + payload), repeated:
//!         tag u8 = 0x01 | codec u8 | reserved u16 = 0 | raw_len u32 LE | stored_len u32 LE
//!         | checksum u64 LE = xxh3-64(the 12 bytes before it ‖ payload) | payload
//! trailer (40 bytes):
//!         tag u8 = 0xFE | reserved [u8; 3] = 0 | frame_count u32 LE | raw_size u64 LE
//!         | content xxh3-128 (16 bytes, big-endian) | checksum u64 LE = xxh3-64(the 32 bytes before it)
//! ```
//! Codecs: 0 = none, 1 = LZ4 block, 2 = Zstandard frame. A frame that would not shrink is stored
//! with codec 0. The full specification, for readers in other languages, is `docs/FORMAT.md` §3.

use bytes::{Buf, Bytes, BytesMut};
use cachet_core::{Compression, Error, Result};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

/// Container magic.
pub const MAGIC: &[u8; 6] = b"CACHET";
/// Container format version written by this code.
pub const FORMAT_VERSION: u8 = 1;
/// Header length.
pub const HEADER_LEN: usize = 8;
/// Frame header length.
pub const FRAME_HEADER_LEN: usize = 20;
/// Trailer length.
pub const TRAILER_LEN: usize = 40;
/// Largest raw frame a reader accepts: bounds the memory a damaged or hostile header can demand.
pub const MAX_FRAME_LEN: usize = 64 << 20;

const TAG_FRAME: u8 = 0x01;
const TAG_TRAILER: u8 = 0xFE;
const CODEC_NONE: u8 = 0;
const CODEC_LZ4: u8 = 1;
const CODEC_ZSTD: u8 = 2;

/// The header every container starts with.
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..6].copy_from_slice(MAGIC);
    h[6] = FORMAT_VERSION;
    h
}

/// Compresses frames with a reusable context.
pub struct FrameCompressor {
    compression: Compression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl FrameCompressor {
    /// A compressor for `compression`.
    pub fn new(compression: Compression) -> Result<Self> {
        let zstd = match compression {
            Compression::Zstd(level) => {
                Some(zstd::bulk::Compressor::new(level).map_err(|e| {
                    Error::config("compression", format!("zstd level {level}: {e}"))
                })?)
            }
            _ => None,
        };
        Ok(FrameCompressor {
            compression,
            zstd,
            scratch: Vec::new(),
        })
    }

    /// Appends one frame (header and payload) holding `raw` to `out`.
    pub fn encode_frame(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<()> {
        debug_assert!(raw.len() <= MAX_FRAME_LEN);
        let compressed = match self.compression {
            Compression::None => None,
            Compression::Lz4 => {
                self.scratch
                    .resize(lz4_flex::block::get_maximum_output_size(raw.len()), 0);
                let n = lz4_flex::block::compress_into(raw, &mut self.scratch)
                    .map_err(|e| Error::backend("lz4", e))?;
                Some((CODEC_LZ4, n))
            }
            Compression::Zstd(_) => {
                let ctx = self
                    .zstd
                    .as_mut()
                    .ok_or_else(|| Error::config("compression", "zstd context missing"))?;
                self.scratch
                    .resize(zstd::zstd_safe::compress_bound(raw.len()), 0);
                let n = ctx
                    .compress_to_buffer(raw, &mut self.scratch[..])
                    .map_err(|e| Error::backend("zstd", e))?;
                Some((CODEC_ZSTD, n))
            }
        };
        let (codec, payload): (u8, &[u8]) = match compressed {
            Some((codec, n)) if n < raw.len() => (codec, &self.scratch[..n]),
            _ => (CODEC_NONE, raw),
        };
        let mut head = [0u8; FRAME_HEADER_LEN];
        head[0] = TAG_FRAME;
        head[1] = codec;
        head[4..8].copy_from_slice(&(raw.len() as u32).to_le_bytes());
        head[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let checksum = frame_checksum(&head[..12], payload);
        head[12..20].copy_from_slice(&checksum.to_le_bytes());
        out.reserve(FRAME_HEADER_LEN + payload.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(payload);
        Ok(())
    }
}

fn frame_checksum(head: &[u8], payload: &[u8]) -> u64 {
    // Hashing the 12 header bytes and the payload separately avoids copying the payload.
    let mut h = Xxh3Default::new();
    h.update(head);
    h.update(payload);
    h.digest()
}

/// The trailer closing a container.
pub fn trailer(frame_count: u32, raw_size: u64, content_xxh3: u128) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[0] = TAG_TRAILER;
    t[4..8].copy_from_slice(&frame_count.to_le_bytes());
    t[8..16].copy_from_slice(&raw_size.to_le_bytes());
    t[16..32].copy_from_slice(&content_xxh3.to_be_bytes());
    let checksum = xxh3_64(&t[..32]);
    t[32..40].copy_from_slice(&checksum.to_le_bytes());
    t
}

/// What a fully decoded container declared in its trailer (already checked against the frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailerInfo {
    /// Number of frames.
    pub frame_count: u32,
    /// Total raw bytes.
    pub raw_size: u64,
    /// xxh3-128 of the raw content.
    pub content_xxh3: u128,
}

/// Incremental decoder: feed it stored bytes in chunks of any size, take out verified raw frames.
///
/// Every frame's checksum and length are checked before its bytes are handed out; the trailer's
/// frame count, size and content hash are checked when it arrives. Anything after the trailer,
/// or input that ends before it, is reported as corruption.
pub struct FrameDecoder {
    what: String,
    buf: BytesMut,
    header_seen: bool,
    frames: u32,
    raw_size: u64,
    hasher: Xxh3Default,
    trailer: Option<TrailerInfo>,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl FrameDecoder {
    /// A decoder; `what` names the entry or blob in error messages.
    pub fn new(what: impl Into<String>) -> Self {
        FrameDecoder {
            what: what.into(),
            buf: BytesMut::new(),
            header_seen: false,
            frames: 0,
            raw_size: 0,
            hasher: Xxh3Default::new(),
            trailer: None,
            zstd: None,
        }
    }

    fn corrupt(&self, detail: impl std::fmt::Display) -> Error {
        Error::corrupt(&self.what, detail)
    }

    /// Adds stored bytes.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        if self.trailer.is_some() && !chunk.is_empty() {
            return Err(self.corrupt("unexpected bytes after the container trailer"));
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// Takes ownership of a whole stored container at once (no copy when it is the only input).
    pub fn feed_bytes(&mut self, chunk: Bytes) -> Result<()> {
        if self.buf.is_empty() && self.trailer.is_none() {
            // `BytesMut::from(Bytes)` reuses the allocation when uniquely owned; otherwise copies.
            self.buf = BytesMut::from(chunk);
            Ok(())
        } else {
            self.feed(&chunk)
        }
    }

    /// The next verified raw frame, or `None` when more input is needed or the trailer was read.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>> {
        if !self.header_seen {
            if self.buf.len() < HEADER_LEN {
                return Ok(None);
            }
            if &self.buf[..6] != MAGIC {
                return Err(self.corrupt("not a cachet container (bad magic)"));
            }
            if self.buf[6] != FORMAT_VERSION {
                return Err(self.corrupt(format!(
                    "container format version {} is not supported by this cachet (knows {FORMAT_VERSION}); upgrade cachet",
                    self.buf[6]
                )));
            }
            if self.buf[7] != 0 {
                return Err(self.corrupt(format!("unknown container flags {:#04x}", self.buf[7])));
            }
            self.buf.advance(HEADER_LEN);
            self.header_seen = true;
        }
        if self.trailer.is_some() || self.buf.is_empty() {
            return Ok(None);
        }
        match self.buf[0] {
            TAG_FRAME => self.take_frame(),
            TAG_TRAILER => {
                self.take_trailer()?;
                Ok(None)
            }
            other => Err(self.corrupt(format!("unknown record tag {other:#04x}"))),
        }
    }

    fn take_frame(&mut self) -> Result<Option<Bytes>> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let head = &self.buf[..FRAME_HEADER_LEN];
        let codec = head[1];
        let raw_len = u32::from_le_bytes(head[4..8].try_into().unwrap_or_default()) as usize;
        let stored_len = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default()) as usize;
        let checksum = u64::from_le_bytes(head[12..20].try_into().unwrap_or_default());
        if raw_len > MAX_FRAME_LEN || stored_len > MAX_FRAME_LEN + MAX_FRAME_LEN / 8 {
            return Err(self.corrupt(format!(
                "frame {} declares an impossible length",
                self.frames
            )));
        }
        if self.buf.len() < FRAME_HEADER_LEN + stored_len {
            return Ok(None);
        }
        let payload = &self.buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + stored_len];
        if frame_checksum(&self.buf[..12], payload) != checksum {
            return Err(self.corrupt(format!("frame {} checksum mismatch", self.frames)));
        }
        let mut record = self.buf.split_to(FRAME_HEADER_LEN + stored_len);
        record.advance(FRAME_HEADER_LEN);
        let raw: Bytes = match codec {
            CODEC_NONE => {
                if stored_len != raw_len {
                    return Err(self.corrupt(format!("frame {} length mismatch", self.frames)));
                }
                record.freeze()
            }
            CODEC_LZ4 => {
                let mut out = vec![0u8; raw_len];
                let n = lz4_flex::block::decompress_into(&record, &mut out)
                    .map_err(|e| self.corrupt(format!("frame {}: lz4: {e}", self.frames)))?;
                if n != raw_len {
                    return Err(self.corrupt(format!(
                        "frame {} decompressed to the wrong length",
                        self.frames
                    )));
                }
                Bytes::from(out)
            }
            CODEC_ZSTD => {
                let ctx = match &mut self.zstd {
                    Some(ctx) => ctx,
                    None => self.zstd.insert(
                        zstd::bulk::Decompressor::new().map_err(|e| Error::backend("zstd", e))?,
                    ),
                };
                let mut out = vec![0u8; raw_len];
                let n = ctx.decompress_to_buffer(&record[..], &mut out[..]);
                match n {
                    Ok(n) if n == raw_len => Bytes::from(out),
                    Ok(_) => {
                        return Err(self.corrupt(format!(
                            "frame {} decompressed to the wrong length",
                            self.frames
                        )));
                    }
                    Err(e) => return Err(self.corrupt(format!("frame {}: zstd: {e}", self.frames))),
                }
            }
            other => {
                return Err(
                    self.corrupt(format!("frame {} uses unknown codec {other}", self.frames))
                );
            }
        };
        self.hasher.update(&raw);
        self.frames += 1;
        self.raw_size += raw.len() as u64;
        Ok(Some(raw))
    }

    fn take_trailer(&mut self) -> Result<()> {
        if self.buf.len() < TRAILER_LEN {
            return Ok(());
        }
        let t = self.buf.split_to(TRAILER_LEN);
        if xxh3_64(&t[..32]) != u64::from_le_bytes(t[32..40].try_into().unwrap_or_default()) {
            return Err(self.corrupt("trailer checksum mismatch"));
        }
        let info = TrailerInfo {
            frame_count: u32::from_le_bytes(t[4..8].try_into().unwrap_or_default()),
            raw_size: u64::from_le_bytes(t[8..16].try_into().unwrap_or_default()),
            content_xxh3: u128::from_be_bytes(t[16..32].try_into().unwrap_or_default()),
        };
        if info.frame_count != self.frames || info.raw_size != self.raw_size {
            return Err(self.corrupt(format!(
                "trailer declares {} frames / {} bytes, found {} / {} (truncated or spliced)",
                info.frame_count, info.raw_size, self.frames, self.raw_size
            )));
        }
        if info.content_xxh3 != self.hasher.digest128() {
            return Err(self.corrupt("content hash mismatch"));
        }
        if !self.buf.is_empty() {
            return Err(self.corrupt("unexpected bytes after the container trailer"));
        }
        self.trailer = Some(info);
        Ok(())
    }

    /// Call when the input has ended: returns the verified trailer, or reports truncation.
    pub fn finish(&mut self) -> Result<TrailerInfo> {
        while self.trailer.is_none() {
            if self.next_frame()?.is_none() {
                break;
            }
        }
        match self.trailer {
            Some(info) if self.buf.is_empty() => Ok(info),
            Some(_) => Err(self.corrupt("unexpected bytes after the container trailer")),
            None => Err(self.corrupt(format!(
                "container ends after {} frames without its trailer (truncated)",
                self.frames
            ))),
        }
    }
}

/// Decodes a whole container held in memory into its raw content.
///
/// A single uncompressed frame is returned without copying.
pub fn decode_all(what: &str, stored: Bytes, raw_size_hint: u64) -> Result<(Bytes, TrailerInfo)> {
    let mut decoder = FrameDecoder::new(what);
    decoder.feed_bytes(stored)?;
    let mut first: Option<Bytes> = None;
    let mut joined: Option<Vec<u8>> = None;
    while let Some(frame) = decoder.next_frame()? {
        match (&mut first, &mut joined) {
            (None, None) => first = Some(frame),
            (Some(f), None) => {
                let cap = usize::try_from(raw_size_hint)
                    .unwrap_or(0)
                    .min(MAX_FRAME_LEN * 4)
                    .max(f.len() + frame.len());
                let mut v = Vec::with_capacity(cap);
                v.extend_from_slice(f);
                v.extend_from_slice(&frame);
                joined = Some(v);
                first = None;
            }
            (_, Some(v)) => v.extend_from_slice(&frame),
        }
    }
    let info = decoder.finish()?;
    let raw = match (first, joined) {
        (_, Some(v)) => Bytes::from(v),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    };
    Ok((raw, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(raw: &[u8], compression: Compression, frame: usize) -> Vec<u8> {
        let mut c = FrameCompressor::new(compression).unwrap();
        let mut out = header().to_vec();
        let mut n = 0u32;
        for chunk in raw.chunks(frame) {
            c.encode_frame(chunk, &mut out).unwrap();
            n += 1;
        }
        out.extend_from_slice(&trailer(
            n,
            raw.len() as u64,
            xxhash_rust::xxh3::xxh3_128(raw),
        ));
        out
    }

    #[test]
    fn every_codec_round_trips() {
        let raw: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [Compression::None, Compression::Lz4, Compression::Zstd(3)] {
            let stored = encode(&raw, c, 64 << 10);
            let (back, info) = decode_all("t", Bytes::from(stored), raw.len() as u64).unwrap();
            assert_eq!(&back[..], &raw[..], "{c}");
            assert_eq!(info.raw_size, raw.len() as u64);
        }
    }

    #[test]
    fn incompressible_frames_are_stored_raw() {
        let raw: Vec<u8> = (0..512u64)
            .flat_map(|i| xxh3_64(&i.to_le_bytes()).to_le_bytes())
            .collect();
        let stored = encode(&raw, Compression::Lz4, 1 << 20);
        assert_eq!(stored[HEADER_LEN + 1], CODEC_NONE);
        assert_eq!(
            stored.len(),
            HEADER_LEN + FRAME_HEADER_LEN + raw.len() + TRAILER_LEN
        );
    }

    #[test]
    fn empty_value_round_trips() {
        let stored = encode(&[], Compression::Lz4, 1024);
        let (back, info) = decode_all("t", Bytes::from(stored), 0).unwrap();
        assert!(back.is_empty());
        assert_eq!(info.frame_count, 0);
    }

    #[test]
    fn every_truncation_is_detected() {
        let raw = vec![7u8; 5000];
        let stored = encode(&raw, Compression::Lz4, 1000);
        for cut in 0..stored.len() {
            let result = decode_all("t", Bytes::copy_from_slice(&stored[..cut]), 0);
            assert!(
                matches!(result, Err(Error::Corrupt { .. })),
                "cut at {cut} not detected"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let raw: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
        let stored = encode(&raw, Compression::Lz4, 1000);
        for byte in 0..stored.len() {
            for bit in 0..8 {
                let mut damaged = stored.clone();
                damaged[byte] ^= 1 << bit;
                let result = decode_all("t", Bytes::from(damaged), 0);
                assert!(
                    result.is_err(),
                    "flip of bit {bit} in byte {byte} not detected"
                );
            }
        }
    }

    #[test]
    fn trailing_garbage_is_detected() {
        let mut stored = encode(b"hello", Compression::None, 1024);
        stored.push(0);
        assert!(matches!(
            decode_all("t", Bytes::from(stored), 0),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn chunked_feeding_matches_whole_decoding() {
        let raw: Vec<u8> = (0..50_000u32).map(|i| (i % 13) as u8).collect();
        let stored = encode(&raw, Compression::Zstd(1), 4096);
        for chunk_size in [1usize, 7, 4096, 100_000] {
            let mut d = FrameDecoder::new("t");
            let mut out = Vec::new();
            for chunk in stored.chunks(chunk_size) {
                d.feed(chunk).unwrap();
                while let Some(f) = d.next_frame().unwrap() {
                    out.extend_from_slice(&f);
                }
            }
            d.finish().unwrap();
            assert_eq!(out, raw);
        }
    }

    #[test]
    fn huge_declared_frame_is_rejected_without_allocating() {
        let mut stored = header().to_vec();
        let mut head = [0u8; FRAME_HEADER_LEN];
        head[0] = TAG_FRAME;
        head[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        head[8..12].copy_from_slice(&16u32.to_le_bytes());
        stored.extend_from_slice(&head);
        assert!(matches!(
            decode_all("t", Bytes::from(stored), 0),
            Err(Error::Corrupt { .. })
        ));
    }
}
