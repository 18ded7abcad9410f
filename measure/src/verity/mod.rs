//! dm-verity hash trees, byte-identical to `veritysetup format`.
//!
//! The format (kernel `Documentation/admin-guide/device-mapper/verity.rst`
//! and cryptsetup's "DMVerity" notes): the data is split into data blocks;
//! level 0 of the tree holds `hash(salt || block)` for every data block,
//! each digest in a zero-padded power-of-two slot; every further level
//! hashes the hash blocks of the level below the same way, until one block
//! remains, whose hash is the root hash. The levels are stored top first,
//! optionally after a 512-byte superblock that records the parameters.
//!
//! Layers, lowest first:
//! - [`params`]: validated parameter types ([`HashAlgorithm`], [`BlockSize`],
//!   [`Salt`], [`RootHash`]).
//! - [`superblock`]: the on-disk superblock ([`RawSuperblock`]) and its
//!   validated meaning ([`Superblock`]).
//! - [`geometry`]: where each level and the superblock go.
//! - [`tree`]: [`HashTreeBuilder`], the streaming builder fed data in order
//!   (used while a filesystem image is written), and the [`HashTree`] it
//!   produces.
//! - [`check`]: the one top-down verification of a hash area
//!   ([`HashArea::verify_tree`], [`HashArea::verify_data`]) over any
//!   positional reader ([`ReadAt`]; [`Window`] for a partition of a disk).
//! - [`files`]: `format`, `verify` and `dump` over files, as `veritysetup`.
//!
//! ```no_run
//! use std::path::Path;
//! use cocos_measure::verity::{self, VerityOptions};
//!
//! let opts = VerityOptions::default(); // sha256, 4 KiB blocks, random salt
//! let (report, _tree) =
//!     verity::format(Path::new("rootfs.ext4"), Path::new("rootfs.verity"), &opts, &|_| {})?;
//! let root = report.params.root_hash.expect("format always reports a root hash");
//! verity::verify(
//!     Path::new("rootfs.ext4"),
//!     Path::new("rootfs.verity"),
//!     &VerityOptions::default(),
//!     &root.to_hex(),
//!     &|_| {},
//! )?;
//! # Ok::<(), verity::VerityError>(())
//! ```

pub mod check;
pub mod error;
pub mod files;
pub mod geometry;
mod hasher;
pub mod params;
pub mod superblock;
pub mod tree;

pub use check::{CheckError, HashArea, Mismatch, ReadAt, Window};
pub use error::{Corruption, VerityError};
pub use files::{VerityOptions, VerityReport, dump, format, verify, write_root_hash_file};
pub use geometry::{GeometryError, HashAreaLayout, Level, TreeGeometry};
pub use params::{BlockSize, HashAlgorithm, ParamError, RootHash, Salt, TreeParams, VerityParams};
pub use superblock::{RawSuperblock, Superblock, SuperblockError};
pub use tree::{HashTree, HashTreeBuilder, TreeError};
