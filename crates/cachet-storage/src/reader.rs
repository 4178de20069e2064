//! Streaming, verified reads.

use bytes::Bytes;
use cachet_core::{ByteStream, ContentDigest, EntryMeta, Error, Result};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::format::FrameDecoder;
use crate::store::verify_digest;

/// A verified stream over an entry's raw content, with memory bounded by about two frames.
///
/// Every chunk handed out has passed its frame checksum. The whole-content hash (and, with
/// signing, the SHA-256 digest) can only be checked at the end: if it fails, the last call
/// returns an error instead of end-of-stream, so a consumer that reads to the end never takes
/// damaged data for complete data.
pub struct ValueReader {
    meta: EntryMeta,
    source: ByteStream,
    decoder: FrameDecoder,
    /// SHA-256 of the content read so far, for entries whose digest is SHA-256.
    sha256: Option<ring::digest::Context>,
    done: bool,
}

impl std::fmt::Debug for ValueReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueReader")
            .field("key", &self.meta.key)
            .field("done", &self.done)
            .finish()
    }
}

impl ValueReader {
    pub(crate) fn new(meta: EntryMeta, source: ByteStream) -> Self {
        let sha256 = matches!(meta.digest, ContentDigest::Sha256(_))
            .then(|| ring::digest::Context::new(&ring::digest::SHA256));
        ValueReader {
            decoder: FrameDecoder::new(meta.key.to_string()),
            sha256,
            meta,
            source,
            done: false,
        }
    }

    /// The entry's metadata.
    pub fn meta(&self) -> &EntryMeta {
        &self.meta
    }

    /// The next chunk of raw content (one frame), or `None` at the verified end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                if let Some(sha256) = &mut self.sha256 {
                    sha256.update(&frame);
                }
                return Ok(Some(frame));
            }
            if self.done {
                return Ok(None);
            }
            match self.source.next().await {
                Some(Ok(chunk)) => self.decoder.feed_bytes(chunk)?,
                Some(Err(e)) => return Err(e),
                None => {
                    let info = self.decoder.finish()?;
                    let sha256 = self.sha256.take().map(ring::digest::Context::finish);
                    verify_digest(&self.meta, &info, sha256)?;
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }

    /// Copies the whole verified content into `out`; returns the byte count.
    pub async fn copy_to<W: AsyncWrite + Unpin>(mut self, out: &mut W) -> Result<u64> {
        let mut total = 0u64;
        while let Some(chunk) = self.next_chunk().await? {
            out.write_all(&chunk)
                .await
                .map_err(|e| Error::io("reader output", e))?;
            total += chunk.len() as u64;
        }
        out.flush()
            .await
            .map_err(|e| Error::io("reader output", e))?;
        Ok(total)
    }

    /// The content as a `Stream` of chunks.
    pub fn into_stream(self) -> impl futures_core::Stream<Item = Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut reader = state?;
            match reader.next_chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(reader))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// The content as a tokio `AsyncRead`. Integrity failures surface as `io::Error`s of kind
    /// `InvalidData` wrapping the cachet error.
    pub fn into_async_read(self) -> impl AsyncRead + Send + Unpin + 'static {
        let stream = self.into_stream().map(|r| {
            r.map_err(|e| {
                let kind = if e.is_integrity_failure() {
                    std::io::ErrorKind::InvalidData
                } else {
                    std::io::ErrorKind::Other
                };
                std::io::Error::new(kind, e)
            })
        });
        tokio_util::io::StreamReader::new(Box::pin(stream))
    }
}
