//! `cocos-init`: the initramfs PID 1 of a confidential VM.
//!
//! It implements the boot flow in six steps: mount the kernel's
//! filesystems and load the modules the builder listed ([`config`],
//! [`modules`], [`mounts`]); read `roothash=` and the options from the
//! kernel command line ([`cmdline`]); find the root, verity and cocos
//! partitions by the GUIDs derived from the root hash ([`discover`]); check
//! the hash tree and open the root through dm-verity ([`verity`]); format
//! the cocos partition as LUKS2 with a key that lives only in memory
//! ([`luks`]) and write its ext4 ([`cocosfs`]); set up the runtime mounts
//! and `/etc/fstab` ([`mounts`], [`fstab`]); and hand over to `/sbin/init`
//! ([`switchroot`]). Any failure prints one `cocos-init: FATAL: <step>:
//! <cause>` line and powers off ([`report`], [`halt`]).
//!
//! The binary (`src/main.rs`) is the boot as a short list of calls to this
//! library; the decisions (command-line parsing, partition matching, fstab
//! rewriting, LUKS parameters) are pure functions tested without a VM.
//!
//! ```
//! use cocos_init::cmdline;
//! let params = cmdline::parse(
//!     "roothash=1f4f7b353629fa1c793b02c8250121a77e607bb28edf8f192849986d70db97ea \
//!      systemd.verity=0 systemd.gpt_auto=0 console=ttyS0",
//! )?;
//! assert_eq!(params.root_hash.len(), 32);
//! assert!(!params.debug);
//! # Ok::<(), cmdline::CmdlineError>(())
//! ```

/// The kernel command line, parsed by the code `cocos-imgbuild inspect`
/// also uses (it lives in `cocos-measure`, the verifier's crate).
pub use cocos_measure::cmdline;
pub mod cocosfs;
pub mod config;
pub mod devmapper;
pub mod discover;
pub mod fstab;
pub mod halt;
pub mod luks;
pub mod modules;
pub mod mounts;
pub mod report;
pub mod switchroot;
pub mod verity;
