//! Streaming writes with bounded memory.

use bytes::Bytes;
use cachet_core::{BlobWriter, CacheKey, DataType, EntryMeta, Error, Result};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::encode::ContainerEncoder;
use crate::store::{Container, PutOptions, Store, WritePlan};

/// A value being written in pieces. Memory stays around two frames whatever the total size.
///
/// Nothing is visible to readers until [`finish`](Self::finish) commits the entry; dropping the
/// writer (or [`abort`](Self::abort)) discards everything written.
pub struct ValueWriter {
    store: Store,
    key: CacheKey,
    data_type: DataType,
    opts: PutOptions,
    encoder: ContainerEncoder,
    blob: Option<Box<dyn BlobWriter>>,
    frame_size: usize,
    plan: WritePlan,
}

impl std::fmt::Debug for ValueWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueWriter")
            .field("key", &self.key)
            .finish()
    }
}

impl ValueWriter {
    pub(crate) fn new(
        store: Store,
        key: CacheKey,
        data_type: DataType,
        opts: PutOptions,
    ) -> Result<Self> {
        let encoder = store.new_encoder(&opts)?;
        let frame_size = store.config().frame_size;
        Ok(ValueWriter {
            store,
            key,
            data_type,
            opts,
            encoder,
            blob: None,
            frame_size,
            plan: WritePlan::default(),
        })
    }

    /// Commits under `plan` (a condition on the key, a kept creation time).
    pub(crate) fn with_plan(mut self, plan: WritePlan) -> Self {
        self.plan = plan;
        self
    }

    /// Appends bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.encoder.push(data)?;
        if self.encoder.out_len() >= self.frame_size {
            let out = Bytes::from(self.encoder.take_output());
            let blob = match &mut self.blob {
                Some(blob) => blob,
                None => self.blob.insert(self.store.blob_backend().writer().await?),
            };
            blob.write(out).await?;
        }
        Ok(())
    }

    /// Appends everything `source` yields; returns the byte count.
    pub async fn copy_from<R: AsyncRead + Unpin>(&mut self, source: &mut R) -> Result<u64> {
        let mut buf = vec![0u8; self.frame_size];
        let mut total = 0u64;
        loop {
            let n = source
                .read(&mut buf)
                .await
                .map_err(|e| Error::io("writer input", e))?;
            if n == 0 {
                return Ok(total);
            }
            self.write(&buf[..n]).await?;
            total += n as u64;
        }
    }

    /// Completes the value and commits the entry; returns its metadata.
    pub async fn finish(self) -> Result<EntryMeta> {
        let ValueWriter {
            store,
            key,
            data_type,
            opts,
            encoder,
            blob,
            plan,
            ..
        } = self;
        let (rest, encoded) = encoder.finish()?;
        let container = match blob {
            None => Container::Memory(Bytes::from(rest)),
            Some(mut blob) => {
                if let Err(e) = blob.write(Bytes::from(rest)).await {
                    let _ = blob.abort().await;
                    return Err(e);
                }
                Container::Streamed(blob)
            }
        };
        store
            .commit(&key, data_type, opts, encoded, container, plan)
            .await
    }

    /// Discards everything written.
    pub async fn abort(self) -> Result<()> {
        match self.blob {
            Some(blob) => blob.abort().await,
            None => Ok(()),
        }
    }
}
