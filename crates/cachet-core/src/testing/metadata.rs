//! Metadata backend conformance suite (being written).
