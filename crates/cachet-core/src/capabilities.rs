//! What a backend can do, reported rather than guessed.

/// What a metadata backend offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MetadataCapabilities {
    /// Several processes on one machine may open the same index at once.
    pub shared_across_processes: bool,
    /// Processes on different machines may share the index (a network database).
    pub shared_across_machines: bool,
    /// The index survives the process (not in-memory).
    pub durable: bool,
    /// [`try_lock_key`](crate::MetadataBackend::try_lock_key) is supported: per-key locks that
    /// every user of the index (other processes, other machines where the index is shared)
    /// respects, released when their holder dies.
    pub key_locks: bool,
}

impl MetadataCapabilities {
    /// Capabilities with every flag set to `value` (start from here and adjust).
    pub const fn all(value: bool) -> Self {
        MetadataCapabilities {
            shared_across_processes: value,
            shared_across_machines: value,
            durable: value,
            key_locks: value,
        }
    }
}

/// What a blob backend offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BlobCapabilities {
    /// Publishing a blob is atomic: readers see all of it or none of it.
    pub atomic_publish: bool,
    /// The backend can refuse to overwrite an existing object (put-if-absent).
    pub conditional_put: bool,
    /// Objects can be copied on the server without streaming through the client.
    pub server_side_copy: bool,
    /// Byte ranges of an object can be read without reading the whole object.
    pub range_read: bool,
    /// Blobs are reachable only from this machine (a local disk), not by other machines.
    pub local_only: bool,
    /// The blobs survive the process.
    pub durable: bool,
    /// The largest object the backend accepts, if it has a limit.
    pub max_object_size: Option<u64>,
}

impl BlobCapabilities {
    /// Capabilities of a backend with no optional features (start from here and adjust).
    pub const fn minimal() -> Self {
        BlobCapabilities {
            atomic_publish: false,
            conditional_put: false,
            server_side_copy: false,
            range_read: false,
            local_only: false,
            durable: false,
            max_object_size: None,
        }
    }
}
