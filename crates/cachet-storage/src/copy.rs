//! Copying every entry of one store into another (e.g. a local SQLite + filesystem cache into a
//! shared PostgreSQL + S3 one), streaming each value with bounded memory.

use cachet_core::{CacheKey, EntryFilter, Error, Result};

use crate::store::{PutOptions, Store};
use crate::writer::ValueWriter;

/// Entries listed per index round trip while copying.
const COPY_PAGE: usize = 500;

/// Options of [`Store::copy_to`].
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Replace entries that exist in the target with other content (default: keep them).
    /// An entry whose content the target already holds is skipped either way.
    pub overwrite: bool,
    /// Also copy entries that have expired (default: skip them).
    pub include_expired: bool,
}

/// What [`Store::copy_to`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct CopyReport {
    /// Entries written into the target.
    pub copied: u64,
    /// Raw bytes of the values copied.
    pub bytes: u64,
    /// Entries the target already held with the same content (a resumed copy skips them).
    pub already_present: u64,
    /// Entries the target held with other content, kept because `overwrite` was off.
    pub kept_existing: u64,
    /// Expired entries left behind.
    pub expired: u64,
    /// Entries that failed verification in the source (corrupt, tampered, blob missing),
    /// with the reason; they are not copied.
    pub damaged: Vec<(CacheKey, Error)>,
}

impl Store {
    /// Copies every entry of this store into `target`, keeping each entry's key, parameters,
    /// data type, tags, user metadata, compression and expiry.
    ///
    /// Values stream from a verified reader into a writer of the target, so memory stays
    /// bounded whatever their size; the target re-encodes them with its own settings (its
    /// signing key, if any, signs the copies). The copy is resumable: run it again after an
    /// interruption and entries already copied are recognised by their content digest and
    /// skipped. An entry that fails verification in the source is reported in
    /// [`CopyReport::damaged`] and the copy goes on; any other error (an unreachable service)
    /// stops the copy and is returned, and running it again resumes.
    ///
    /// `progress` is called after each entry with the report so far.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use cachet_core::memory::{MemoryBlobs, MemoryMetadata};
    /// use cachet_core::CacheKey;
    /// use cachet_storage::{CopyOptions, PutOptions, Store, StoreConfig};
    ///
    /// let open = || Store::new(Arc::new(MemoryMetadata::new()), Arc::new(MemoryBlobs::new()),
    ///     StoreConfig::default());
    /// let (local, shared) = (open()?, open()?);
    /// let key = CacheKey::explicit("", "model")?;
    /// local.put_bytes(&key, &[7u8; 100_000], PutOptions::default()).await?;
    /// let report = local.copy_to(&shared, &CopyOptions::default(), |_| {}).await?;
    /// assert_eq!(report.copied, 1);
    /// assert_eq!(shared.get_bytes(&key).await?.unwrap().len(), 100_000);
    /// # Ok::<(), cachet_core::Error>(()) }).unwrap();
    /// ```
    pub async fn copy_to(
        &self,
        target: &Store,
        options: &CopyOptions,
        mut progress: impl FnMut(&CopyReport),
    ) -> Result<CopyReport> {
        let mut report = CopyReport::default();
        let mut pages = self.pages(EntryFilter::all(), COPY_PAGE);
        while let Some(page) = pages.next_page().await? {
            let now = self.now();
            for meta in page {
                if !options.include_expired && meta.expires_at.is_some_and(|at| at <= now) {
                    report.expired += 1;
                } else {
                    match target.metadata(&meta.key).await? {
                        Some(existing) if existing.digest == meta.digest => {
                            report.already_present += 1;
                        }
                        Some(_) if !options.overwrite => report.kept_existing += 1,
                        _ => self.copy_one_to(target, &meta.key, &mut report).await?,
                    }
                }
                progress(&report);
            }
        }
        Ok(report)
    }

    /// Streams one entry into `target`; verification failures go to the report.
    async fn copy_one_to(
        &self,
        target: &Store,
        key: &CacheKey,
        report: &mut CopyReport,
    ) -> Result<()> {
        let result = async {
            let Some(entry) = self.lookup(key).await? else {
                return Ok(None); // deleted since it was listed
            };
            let mut reader = self.open_reader(&entry).await?;
            let meta = entry.meta;
            let opts = PutOptions::of_entry(&meta);
            let mut writer = ValueWriter::new(target.clone(), key.clone(), meta.data_type, opts)?;
            while let Some(chunk) = reader.next_chunk().await? {
                writer.write(&chunk).await?;
            }
            writer.finish().await.map(Some)
        }
        .await;
        match result {
            Ok(Some(written)) => {
                report.copied += 1;
                report.bytes += written.raw_size;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) if e.is_integrity_failure() => {
                tracing::warn!(key = %key, error = %e, "not copied: the source entry is damaged");
                report.damaged.push((key.clone(), e));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
