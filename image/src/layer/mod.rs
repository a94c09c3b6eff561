//! Layers: writing a layer directory as a deterministic, compressed tar blob,
//! and unpacking a layer blob back into a layer directory (or onto a flat
//! rootfs), never writing outside the destination.

pub mod chunks;
pub mod compress;
pub mod external;
mod hasher;
mod pgzip;
pub mod remove;
pub mod tarfmt;
pub mod unpack;
mod whiteout;
pub mod write;

pub use chunks::{CHUNK_FORMAT, ChunkReuse, ChunkTable};
pub use compress::{Compression, diff_id_of};
pub use external::{ExternalContent, ExternalFile};
pub use tarfmt::{EntryMeta, TarEntryKind, TarEntryWriter};
pub use unpack::{
    DeviceNode, Owners, UnpackError, UnpackInfo, UnpackOptions, apply_layer, unpack_layer,
};
pub use write::{
    LayerDigests, LayerOptions, LayerWriteError, LayerWriter, write_layer,
    write_layer_adding_devices, write_layer_with,
};
