//! The on-disk formats that the image builder writes and the init of the
//! booted VM reads or writes, kept apart from both so that PID 1 builds
//! without the image builder's dependencies.
//!
//! * [`gpt`]: the GUID partition table: partition type GUIDs and labels,
//!   the GUIDs derived from the dm-verity root hash, the layout planner and
//!   the strict reader (`cocos-imgbuild` adds the writer).
//! * [`ext4`]: the ext4 writer (read-only images, and the `/cocos`
//!   filesystem cocos-init writes at boot) and the tree model it consumes.
//! * [`init_config`]: `/etc/cocos-init.toml`, written by the initramfs
//!   builder and read by cocos-init, one type for both.
//! * [`sparse`]: the data and holes of a file range, which the writer
//!   reads around (and the image builder uses too).
//!
//! ```
//! use cocos_formats::gpt;
//! let (root, verity) = gpt::verity_partition_uuids(&[0x11; 32]);
//! assert_eq!(root, verity);
//! ```

#![forbid(unsafe_code)]

pub mod ext4;
pub mod gpt;
pub mod init_config;
pub mod sparse;
