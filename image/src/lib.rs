//! kiln-image: everything about the bytes of an image, and nothing about how
//! it was built.
//!
//! - [`layer`]: a *layer directory* (what one layer adds or changes, with
//!   overlayfs whiteouts: 0:0 character devices for deletions and
//!   `user.overlay.opaque=y` on opaque directories — an overlayfs upperdir as
//!   it stands) ⇄ a deterministic, streamed, compressed layer blob
//!   ([`write_layer`], [`unpack_layer`], [`apply_layer`]); gzip blobs are compressed
//!   in chunks cut at entry boundaries, and a new blob copies the chunks an earlier one
//!   of the same step already compressed ([`layer::chunks`]).
//! - [`oci`]: image config, manifest, index, descriptor types and
//!   [`canonical_json`] for every byte that is hashed.
//! - [`archive`]: OCI layout directories, OCI archives and docker-archives
//!   (written from and read into a blob store through [`BlobSource`] and
//!   [`BlobSink`], so this crate does not depend on the store).
//! - [`digest`]: sha256 helpers and hashing readers/writers.
//! - [`limits`]: caps on the documents read into memory from untrusted sources.
//! - [`host`]: what the process kiln runs in may do (make device nodes or not).

pub mod archive;
pub mod compare;
pub mod digest;
pub mod host;
pub mod layer;
pub mod limits;
pub mod oci;

pub use archive::{
    ArchiveError, BlobSink, BlobSource, ExportImage, LoadedImage, read_archive,
    write_docker_archive, write_oci_archive, write_oci_layout,
};
pub use digest::{HashingReader, HashingWriter, digest_hex, sha256_digest};
pub use layer::{
    CHUNK_FORMAT, ChunkReuse, ChunkTable, Compression, DeviceNode, EntryMeta, ExternalContent,
    ExternalFile, LayerDigests, LayerOptions, LayerWriteError, LayerWriter, Owners, TarEntryKind,
    UnpackError, UnpackInfo, UnpackOptions, apply_layer, diff_id_of, unpack_layer, write_layer,
    write_layer_adding_devices, write_layer_with,
};
pub use oci::{
    Descriptor, ImageConfig, Index, Manifest, canonical_json, json_blob, parse_config,
    parse_manifest, parse_manifest_or_index,
};
