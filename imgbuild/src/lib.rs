//! Building the disk image a confidential VM boots from.
//!
//! `cocos-imgbuild` turns a root tree, a kernel, an initramfs and a
//! bootloader into a sparse GPT `disk.img` (FAT ESP with GRUB, ext4 root,
//! dm-verity hash partition, blank `cocos` partition) and its side artifacts,
//! reproducibly and without root privileges. [`initramfs`] builds the
//! initramfs itself from an init program, kernel modules and the shared
//! libraries they need.

#![forbid(unsafe_code)]

pub mod build;
pub mod fat;
pub mod gpt;
pub mod grub;
pub mod initramfs;
pub mod inspect;
pub mod seed;
pub mod spec;
pub mod tree;
