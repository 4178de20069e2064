//! Verification and repair of a whole store (being written).
