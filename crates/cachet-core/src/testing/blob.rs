//! Blob backend conformance suite (being written).
