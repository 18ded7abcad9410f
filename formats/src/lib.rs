//! The on-disk formats that the image builder writes and the init of the
//! booted VM reads or writes, kept apart from both so that PID 1 builds
//! without the image builder's dependencies.
//!
//! * [`gpt`]: the GUID partition table: partition type GUIDs and labels,
//!   the GUIDs derived from the dm-verity root hash, the layout planner and
//!   the strict reader (`cocos-imgbuild` adds the writer).
//!
//! ```
//! use cocos_formats::gpt;
//! let (root, verity) = gpt::verity_partition_uuids(&[0x11; 32]);
//! assert_eq!(root, verity);
//! ```

#![forbid(unsafe_code)]

pub mod gpt;
