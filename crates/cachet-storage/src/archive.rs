//! Export and import of a portable archive (being written).
