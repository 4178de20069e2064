//! The stored container: a header, checksummed frames, and a trailer with the whole-value hash.
//!
//! ```text
//! header  (8 bytes)  "CACHET" | version u8 = 1 | flags u8 = 0
//! frame   (20 bytes + payload), repeated:
//!         tag u8 = 0x01 | codec u8 | filter u8 | element_size u8 | raw_len u32 LE | stored_len u32 LE
//!         | checksum u64 LE = xxh3-64(the 12 bytes before it ‖ payload) | payload
//! trailer (40 bytes):
//!         tag u8 = 0xFE | reserved [u8; 3] = 0 | frame_count u32 LE | raw_size u64 LE
//!         | content xxh3-128 (16 bytes, big-endian) | checksum u64 LE = xxh3-64(the 32 bytes before it)
//! ```
//! Codecs: 0 = none, 1 = LZ4 block, 2 = Zstandard frame. A frame that would not shrink is stored
//! with codec 0. Filters: 0 = none; 1 = byte shuffle with `element_size` (2..=16) applied before
//! compression (byte `b` of every element grouped together, as blosc does), which makes numeric
//! arrays compress 10–100× better. The encoder picks the filter per frame from a small sample. The full specification, for readers in other languages, is `docs/FORMAT.md` §3.

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
const FILTER_NONE: u8 = 0;
const FILTER_SHUFFLE: u8 = 1;
/// Frames shorter than this are compressed without sampling.
const SAMPLE_MIN_FRAME: usize = 16 << 10;
/// Bytes taken from each of two places in a frame to choose its filter.
const SAMPLE_SLICE: usize = 8 << 10;

/// The header every container starts with.
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..6].copy_from_slice(MAGIC);
    h[6] = FORMAT_VERSION;
    h
}

/// How one frame will be encoded, chosen from a sample of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Compress the bytes as they are.
    Plain,
    /// Byte-shuffle with this element size, then compress.
    Shuffle(u8),
    /// Store uncompressed: the sample showed no gain (random or already-compressed data).
    Store,
}

/// Compresses frames with reusable contexts and buffers.
pub struct FrameCompressor {
    compression: Compression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
    shuffled: Vec<u8>,
    sample: Vec<u8>,
    sample_out: Vec<u8>,
    auto_shuffle: bool,
}

impl FrameCompressor {
    /// A compressor for `compression`, choosing the byte-shuffle filter automatically.
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
            shuffled: Vec::new(),
            sample: Vec::new(),
            sample_out: Vec::new(),
            auto_shuffle: true,
        })
    }

    /// Turns the automatic byte-shuffle filter on or off.
    pub fn with_auto_shuffle(mut self, on: bool) -> Self {
        self.auto_shuffle = on;
        self
    }

    fn lz4_len(&mut self, input_is_shuffled: Option<usize>) -> usize {
        let input: &[u8] = match input_is_shuffled {
            Some(elem) => {
                shuffle(&self.sample, elem, &mut self.shuffled);
                &self.shuffled
            }
            None => &self.sample,
        };
        self.sample_out
            .resize(lz4_flex::block::get_maximum_output_size(input.len()), 0);
        lz4_flex::block::compress_into(input, &mut self.sample_out).unwrap_or(input.len())
    }

    /// Picks plain, shuffled or stored by compressing two small slices of the frame with LZ4
    /// (cheap even when the frame will use zstd: it is only an estimate of what helps).
    fn plan(&mut self, raw: &[u8]) -> Plan {
        if raw.len() < SAMPLE_MIN_FRAME {
            return Plan::Plain;
        }
        self.sample.clear();
        // Slices start on a multiple of 16 so that element boundaries line up for the shuffle.
        let mid = (raw.len() / 2) & !15;
        self.sample.extend_from_slice(&raw[..SAMPLE_SLICE]);
        self.sample.extend_from_slice(&raw[mid..mid + SAMPLE_SLICE]);
        let n = self.sample.len();
        let plain = self.lz4_len(None);
        if !self.auto_shuffle {
            return if plain * 100 >= n * 97 {
                Plan::Store
            } else {
                Plan::Plain
            };
        }
        let (mut best, mut best_len) = (Plan::Plain, plain);
        for elem in [8u8, 4] {
            let len = self.lz4_len(Some(usize::from(elem)));
            if len * 10 < best_len * 7 {
                best = Plan::Shuffle(elem);
                best_len = len;
            }
        }
        if best_len * 100 >= n * 97 {
            Plan::Store
        } else {
            best
        }
    }

    /// Appends one frame (header and payload) holding `raw` to `out`.
    pub fn encode_frame(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<()> {
        debug_assert!(raw.len() <= MAX_FRAME_LEN);
        let plan = match self.compression {
            Compression::None => Plan::Store,
            _ => self.plan(raw),
        };
        let (filter, elem) = match plan {
            Plan::Shuffle(elem) => {
                shuffle(raw, usize::from(elem), &mut self.shuffled);
                (FILTER_SHUFFLE, elem)
            }
            _ => (FILTER_NONE, 0),
        };
        let compressed = {
            let input: &[u8] = if filter == FILTER_SHUFFLE {
                &self.shuffled
            } else {
                raw
            };
            match (plan, self.compression) {
                (Plan::Store, _) | (_, Compression::None) => None,
                (_, Compression::Lz4) => {
                    self.scratch
                        .resize(lz4_flex::block::get_maximum_output_size(input.len()), 0);
                    let n = lz4_flex::block::compress_into(input, &mut self.scratch)
                        .map_err(|e| Error::backend("lz4", e))?;
                    Some((CODEC_LZ4, n))
                }
                (_, Compression::Zstd(_)) => {
                    let ctx = self
                        .zstd
                        .as_mut()
                        .ok_or_else(|| Error::config("compression", "zstd context missing"))?;
                    self.scratch
                        .resize(zstd::zstd_safe::compress_bound(input.len()), 0);
                    let n = ctx
                        .compress_to_buffer(input, &mut self.scratch[..])
                        .map_err(|e| Error::backend("zstd", e))?;
                    Some((CODEC_ZSTD, n))
                }
            }
        };
        let (codec, filter, elem, payload): (u8, u8, u8, &[u8]) = match compressed {
            Some((codec, n)) if n < raw.len() => (codec, filter, elem, &self.scratch[..n]),
            _ => (CODEC_NONE, FILTER_NONE, 0, raw),
        };
        let mut head = [0u8; FRAME_HEADER_LEN];
        head[0] = TAG_FRAME;
        head[1] = codec;
        head[2] = filter;
        head[3] = elem;
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

/// Byte shuffle: byte `b` of element `i` goes to `b * n + i` (`n` whole elements); a tail
/// shorter than one element is copied as is.
pub fn shuffle(src: &[u8], elem: usize, dst: &mut Vec<u8>) {
    dst.clear();
    dst.resize(src.len(), 0);
    let n = src.len() / elem;
    match elem {
        4 => shuffle_fixed::<4>(&src[..n * 4], &mut dst[..n * 4]),
        8 => shuffle_fixed::<8>(&src[..n * 8], &mut dst[..n * 8]),
        _ => {
            for (i, chunk) in src.chunks_exact(elem).enumerate() {
                for (b, &byte) in chunk.iter().enumerate() {
                    dst[b * n + i] = byte;
                }
            }
        }
    }
    dst[n * elem..].copy_from_slice(&src[n * elem..]);
}

/// The inverse of [`shuffle`].
pub fn unshuffle(src: &[u8], elem: usize, dst: &mut [u8]) {
    let n = src.len() / elem;
    match elem {
        4 => unshuffle_fixed::<4>(&src[..n * 4], &mut dst[..n * 4]),
        8 => unshuffle_fixed::<8>(&src[..n * 8], &mut dst[..n * 8]),
        _ => {
            for (i, chunk) in dst.chunks_exact_mut(elem).enumerate() {
                for (b, byte) in chunk.iter_mut().enumerate() {
                    *byte = src[b * n + i];
                }
            }
        }
    }
    dst[n * elem..].copy_from_slice(&src[n * elem..]);
}

/// Blocks of this many elements keep the `E` streams of a block in L1 cache.
const SHUFFLE_BLOCK: usize = 1024;

fn shuffle_fixed<const E: usize>(src: &[u8], dst: &mut [u8]) {
    let n = src.len() / E;
    let mut start = 0;
    while start < n {
        let len = SHUFFLE_BLOCK.min(n - start);
        let block = &src[start * E..(start + len) * E];
        for b in 0..E {
            let out = &mut dst[b * n + start..b * n + start + len];
            for (o, element) in out.iter_mut().zip(block.chunks_exact(E)) {
                *o = element[b];
            }
        }
        start += len;
    }
}

fn unshuffle_fixed<const E: usize>(src: &[u8], dst: &mut [u8]) {
    let n = dst.len() / E;
    let mut start = 0;
    while start < n {
        let len = SHUFFLE_BLOCK.min(n - start);
        let block = &mut dst[start * E..(start + len) * E];
        for b in 0..E {
            let stream = &src[b * n + start..b * n + start + len];
            for (element, &byte) in block.chunks_exact_mut(E).zip(stream) {
                element[b] = byte;
            }
        }
        start += len;
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

/// The decoder's unread input: bytes fed in chunks (appended), or one whole container taken
/// as it is (sliced, never copied, unless more input is appended to it).
enum Input {
    Owned(BytesMut),
    Whole(Bytes),
}

impl std::ops::Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Input::Owned(b) => b,
            Input::Whole(b) => b,
        }
    }
}

impl Input {
    fn extend_from_slice(&mut self, chunk: &[u8]) {
        if let Input::Whole(whole) = self {
            *self = Input::Owned(BytesMut::from(&whole[..]));
        }
        if let Input::Owned(b) = self {
            b.extend_from_slice(chunk);
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Input::Owned(b) => b.advance(n),
            Input::Whole(b) => b.advance(n),
        }
    }

    fn split_to(&mut self, n: usize) -> Bytes {
        match self {
            Input::Owned(b) => b.split_to(n).freeze(),
            Input::Whole(b) => b.split_to(n),
        }
    }
}

/// Incremental decoder: feed it stored bytes in chunks of any size, take out verified raw frames.
///
/// Every frame's checksum and length are checked before its bytes are handed out; the trailer's
/// frame count, size and content hash are checked when it arrives. Anything after the trailer,
/// or input that ends before it, is reported as corruption.
pub struct FrameDecoder {
    what: String,
    buf: Input,
    header_seen: bool,
    frames: u32,
    raw_size: u64,
    hasher: Xxh3Default,
    trailer: Option<TrailerInfo>,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    /// Reused buffer for shuffled frames (decompressed here, unshuffled into the output).
    scratch: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder; `what` names the entry or blob in error messages.
    pub fn new(what: impl Into<String>) -> Self {
        FrameDecoder {
            what: what.into(),
            buf: Input::Owned(BytesMut::new()),
            header_seen: false,
            frames: 0,
            raw_size: 0,
            hasher: Xxh3Default::new(),
            trailer: None,
            zstd: None,
            scratch: Vec::new(),
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

    /// Takes ownership of a whole stored container at once: when it is the only input, frames
    /// stored uncompressed are handed out as slices of it, without a copy.
    pub fn feed_bytes(&mut self, chunk: Bytes) -> Result<()> {
        if self.buf.is_empty() && self.trailer.is_none() {
            self.buf = Input::Whole(chunk);
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
        let (filter, elem) = (head[2], usize::from(head[3]));
        let raw_len = u32::from_le_bytes(head[4..8].try_into().unwrap_or_default()) as usize;
        let stored_len = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default()) as usize;
        let checksum = u64::from_le_bytes(head[12..20].try_into().unwrap_or_default());
        if raw_len > MAX_FRAME_LEN || stored_len > MAX_FRAME_LEN + MAX_FRAME_LEN / 8 {
            return Err(self.corrupt(format!(
                "frame {} declares an impossible length",
                self.frames
            )));
        }
        match (filter, codec) {
            (FILTER_NONE, _) if elem == 0 => {}
            (FILTER_SHUFFLE, CODEC_LZ4 | CODEC_ZSTD) if (2..=16).contains(&elem) => {}
            _ => {
                return Err(self.corrupt(format!(
                    "frame {} has an invalid filter {filter}/{elem} for codec {codec}",
                    self.frames
                )));
            }
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
        let frame_no = self.frames;
        let mut fresh = Vec::new();
        // A shuffled frame decompresses into the reused scratch buffer and is unshuffled into a
        // fresh output; a plain one decompresses straight into its output; a stored one is
        // handed out as it is (no output buffer at all).
        let out: &mut Vec<u8> = if filter == FILTER_SHUFFLE {
            &mut self.scratch
        } else {
            &mut fresh
        };
        if codec != CODEC_NONE {
            out.clear();
            out.resize(raw_len, 0);
        }
        match codec {
            CODEC_NONE => {
                if stored_len != raw_len {
                    return Err(self.corrupt(format!("frame {frame_no} length mismatch")));
                }
            }
            CODEC_LZ4 => {
                let n = lz4_flex::block::decompress_into(&record, out).map_err(|e| {
                    Error::corrupt(&self.what, format!("frame {frame_no}: lz4: {e}"))
                })?;
                if n != raw_len {
                    return Err(
                        self.corrupt(format!("frame {frame_no} decompressed to the wrong length"))
                    );
                }
            }
            CODEC_ZSTD => {
                let ctx = match &mut self.zstd {
                    Some(ctx) => ctx,
                    None => self.zstd.insert(
                        zstd::bulk::Decompressor::new().map_err(|e| Error::backend("zstd", e))?,
                    ),
                };
                match ctx.decompress_to_buffer(&record[..], &mut out[..]) {
                    Ok(n) if n == raw_len => {}
                    Ok(_) => {
                        return Err(Error::corrupt(
                            &self.what,
                            format!("frame {frame_no} decompressed to the wrong length"),
                        ));
                    }
                    Err(e) => {
                        return Err(Error::corrupt(
                            &self.what,
                            format!("frame {frame_no}: zstd: {e}"),
                        ));
                    }
                }
            }
            other => {
                return Err(self.corrupt(format!("frame {frame_no} uses unknown codec {other}")));
            }
        }
        let raw = match (codec, filter) {
            (CODEC_NONE, _) => record,
            (_, FILTER_SHUFFLE) => {
                let mut unshuffled = vec![0u8; raw_len];
                unshuffle(&self.scratch, elem, &mut unshuffled);
                Bytes::from(unshuffled)
            }
            _ => Bytes::from(fresh),
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
    fn numeric_arrays_are_shuffled_and_round_trip() {
        let raw: Vec<u8> = (0..300_001u64)
            .flat_map(|i| (i as f64).to_le_bytes())
            .chain([1, 2, 3])
            .collect();
        for c in [Compression::Lz4, Compression::Zstd(1)] {
            let stored = encode(&raw, c, 1 << 20);
            assert_eq!(
                stored[HEADER_LEN + 2],
                FILTER_SHUFFLE,
                "{c}: first frame not shuffled"
            );
            assert!(
                stored.len() * 10 < raw.len(),
                "{c}: {} of {} bytes",
                stored.len(),
                raw.len()
            );
            let (back, _) = decode_all("t", Bytes::from(stored), raw.len() as u64).unwrap();
            assert_eq!(&back[..], &raw[..], "{c}");
        }
    }

    #[test]
    fn shuffle_inverts_for_every_element_size_and_tail() {
        let src: Vec<u8> = (0..1003u32).map(|i| (i * 7 % 256) as u8).collect();
        for elem in 2..=16 {
            let mut shuffled = Vec::new();
            shuffle(&src, elem, &mut shuffled);
            let mut back = vec![0u8; src.len()];
            unshuffle(&shuffled, elem, &mut back);
            assert_eq!(back, src, "element size {elem}");
        }
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
