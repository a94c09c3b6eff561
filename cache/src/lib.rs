//! kiln-cache (being written).
