//! Turning raw bytes into a container, frame by frame, while hashing them.

use cachet_core::{Compression, ContentDigest, Result};
use ring::digest;
use xxhash_rust::xxh3::Xxh3Default;

use crate::format::{FrameCompressor, header, trailer};

/// Hashes raw content: always xxh3-128 (the container trailer), plus SHA-256 when signing.
pub(crate) struct ContentHasher {
    xxh3: Xxh3Default,
    sha256: Option<digest::Context>,
}

impl ContentHasher {
    pub(crate) fn new(sha256: bool) -> Self {
        ContentHasher {
            xxh3: Xxh3Default::new(),
            sha256: sha256.then(|| digest::Context::new(&digest::SHA256)),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.xxh3.update(data);
        if let Some(sha) = &mut self.sha256 {
            sha.update(data);
        }
    }

    /// (xxh3-128, the entry digest: SHA-256 when signing, else the xxh3-128).
    pub(crate) fn finish(self) -> (u128, ContentDigest) {
        let x = self.xxh3.digest128();
        let digest = match self.sha256 {
            Some(sha) => {
                let mut out = [0u8; 32];
                out.copy_from_slice(sha.finish().as_ref());
                ContentDigest::Sha256(out)
            }
            None => ContentDigest::Xxh3_128(x),
        };
        (x, digest)
    }
}

/// What an encoder produced.
pub(crate) struct Encoded {
    pub raw_size: u64,
    pub stored_size: u64,
    pub digest: ContentDigest,
}

/// Builds a container incrementally; encoded bytes accumulate in `out` until taken.
pub(crate) struct ContainerEncoder {
    compressor: FrameCompressor,
    frame_size: usize,
    pending: Vec<u8>,
    out: Vec<u8>,
    frames: u32,
    raw_size: u64,
    stored_size: u64,
    hasher: ContentHasher,
}

impl ContainerEncoder {
    pub(crate) fn new(compression: Compression, frame_size: usize, sha256: bool) -> Result<Self> {
        let out = header().to_vec();
        Ok(ContainerEncoder {
            compressor: FrameCompressor::new(compression)?,
            frame_size,
            pending: Vec::new(),
            stored_size: out.len() as u64,
            out,
            frames: 0,
            raw_size: 0,
            hasher: ContentHasher::new(sha256),
        })
    }

    fn emit(&mut self, raw: &[u8]) -> Result<()> {
        self.hasher.update(raw);
        let before = self.out.len();
        self.compressor.encode_frame(raw, &mut self.out)?;
        self.stored_size += (self.out.len() - before) as u64;
        self.raw_size += raw.len() as u64;
        self.frames += 1;
        Ok(())
    }

    /// Sizes the output for `raw_len` more bytes stored uncompressed (the most a frame takes),
    /// so that a value encoded in one piece is never copied by the buffer growing, not even
    /// by the trailer. Compressed values simply use less of it.
    pub(crate) fn reserve_for(&mut self, raw_len: usize) {
        let frames = raw_len.div_ceil(self.frame_size.max(1)).max(1);
        self.out.reserve(
            raw_len + frames * crate::format::FRAME_HEADER_LEN + crate::format::TRAILER_LEN,
        );
    }

    /// Adds raw bytes; whole frames are encoded as soon as they are complete.
    pub(crate) fn push(&mut self, mut data: &[u8]) -> Result<()> {
        if !self.pending.is_empty() {
            let take = (self.frame_size - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == self.frame_size {
                let frame = std::mem::take(&mut self.pending);
                self.emit(&frame)?;
                self.pending = frame;
                self.pending.clear();
            }
        }
        while data.len() >= self.frame_size {
            let (frame, rest) = data.split_at(self.frame_size);
            self.emit(frame)?;
            data = rest;
        }
        if !data.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending.reserve(self.frame_size);
            }
            self.pending.extend_from_slice(data);
        }
        Ok(())
    }

    /// Encoded bytes produced so far and not yet taken.
    pub(crate) fn out_len(&self) -> usize {
        self.out.len()
    }

    /// Takes the encoded bytes produced so far.
    pub(crate) fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Encodes what is pending and the trailer; returns the remaining output and the summary.
    pub(crate) fn finish(mut self) -> Result<(Vec<u8>, Encoded)> {
        if !self.pending.is_empty() {
            let frame = std::mem::take(&mut self.pending);
            self.emit(&frame)?;
        }
        let (x, digest) = self.hasher.finish();
        self.out
            .extend_from_slice(&trailer(self.frames, self.raw_size, x));
        self.stored_size += crate::format::TRAILER_LEN as u64;
        Ok((
            self.out,
            Encoded {
                raw_size: self.raw_size,
                stored_size: self.stored_size,
                digest,
            },
        ))
    }
}
