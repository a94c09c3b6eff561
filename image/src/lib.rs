//! kiln-image (being written).
