//! Per-key locks for computing a missing value once across every process that opens the index
//! (`MetadataBackend::try_lock_key`).
//!
//! A key's lock is an exclusive `flock` on its own file, `<index>.locks/<xxh3-128 of the key>`.
//! The operating system releases it when its holder dies (a crashed process never blocks the
//! others), and it is per open file, so two tasks or two index instances of one process exclude
//! each other too. A holder deletes the file before unlocking it, so lock files do not pile up
//! (only a crashed holder's file stays, until the key is locked again); a locker that opened
//! the file just before it was deleted sees, once it holds the lock, that the path no longer
//! names its file, and starts over.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use cachet_core::{CacheKey, Error, KeyLock, Result};

/// The directory of an index's lock files.
#[derive(Debug)]
pub(crate) struct KeyLockDir {
    dir: PathBuf,
}

impl KeyLockDir {
    /// The lock directory of the index file at `index`: `<index>.locks` beside it.
    pub(crate) fn beside(index: &Path) -> Self {
        let mut name = index.as_os_str().to_owned();
        name.push(".locks");
        KeyLockDir {
            dir: PathBuf::from(name),
        }
    }

    /// Takes `key`'s lock if no one holds it; `None` at once if someone does.
    pub(crate) fn try_lock(&self, key: &CacheKey) -> Result<Option<Box<dyn KeyLock>>> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(self.dir.display(), e))?;
        let path = self.dir.join(lock_file_name(key));
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(path.display(), e))?;
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Ok(None),
                Err(e) => return Err(Error::io(path.display(), e.into())),
            }
            let held = file.metadata().map_err(|e| Error::io(path.display(), e))?;
            match std::fs::metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(Box::new(FileKeyLock {
                        file: Some(file),
                        path,
                    })));
                }
                // The previous holder deleted the file after we opened it: our lock guards
                // nothing. Drop it (unlocking) and take the lock of the file now at the path.
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(path.display(), e)),
            }
        }
    }
}

/// The file name of a key's lock: a digest, so any key (any length, any character) maps to a
/// short, safe name.
fn lock_file_name(key: &CacheKey) -> String {
    let mut bytes = Vec::with_capacity(16 + key.namespace().len() + key.id().len());
    // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
    bytes.extend_from_slice(&(key.namespace().len() as u64).to_le_bytes());
    bytes.extend_from_slice(key.namespace().as_bytes());
    bytes.extend_from_slice(key.id().as_bytes());
    format!("{:032x}.lock", xxhash_rust::xxh3::xxh3_128(&bytes))
}

/// A held key lock: released (file deleted, then unlocked) on `release` or drop.
struct FileKeyLock {
    file: Option<File>,
    path: PathBuf,
}

impl Drop for FileKeyLock {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            // Delete while still holding the lock: whoever opens the path next gets a new file.
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::debug!(path = %self.path.display(), error = %e, "could not delete a lock file");
            }
            drop(file); // closing the file releases the lock
        }
    }
}

#[async_trait]
impl KeyLock for FileKeyLock {
    async fn release(self: Box<Self>) -> Result<()> {
        Ok(()) // dropping `self` releases
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_names_are_distinct_for_split_points_and_namespaces() {
        let key = |ns: &str, id: &str| CacheKey::explicit(ns, id).unwrap();
        assert_ne!(
            lock_file_name(&key("ab", "c")),
            lock_file_name(&key("a", "bc"))
        );
        assert_ne!(
            lock_file_name(&key("", "x")),
            lock_file_name(&key("n", "x"))
        );
        assert_eq!(
            lock_file_name(&key("n", "x")),
            lock_file_name(&key("n", "x"))
        );
    }

    #[test]
    fn a_released_lock_leaves_no_file_and_can_be_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let locks = KeyLockDir::beside(&dir.path().join("index.sqlite"));
        let key = CacheKey::explicit("", "k").unwrap();
        let held = locks.try_lock(&key).unwrap().expect("free");
        assert!(locks.try_lock(&key).unwrap().is_none(), "held: refused");
        drop(held);
        let files = std::fs::read_dir(&locks.dir).unwrap().count();
        assert_eq!(files, 0, "the holder deletes its lock file");
        assert!(locks.try_lock(&key).unwrap().is_some(), "free again");
    }
}
