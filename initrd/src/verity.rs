//! The dm-verity root: check the hash tree, open `root_verity`.
//!
//! The kernel checks blocks lazily, as they are read, so a wrong
//! `roothash=` would surface as an I/O error at the first read of the root
//! filesystem, indistinguishable from a corrupt block. Before opening the
//! mapping, cocos-init therefore reads the hash partition's superblock
//! (`cocos_measure::verity::Superblock`, the format `veritysetup format`
//! writes) and checks the whole hash tree top-down, as the kernel would:
//! the top hash block against the root hash, then every level against the
//! verified level above. The tree is small (8 MiB for a 1 GiB root) and
//! this names the failure exactly: a root hash that does not match, or the
//! hash block that is corrupt. Data blocks are left to the kernel.
//!
//! The mapping itself is created by libcryptsetup (`crypt_load` of the
//! verity superblock, `crypt_activate_by_volume_key` with the root hash),
//! read-only, with the kernel's default of failing reads of corrupt blocks
//! with `EIO`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cocos_measure::verity::{
    CheckError, GeometryError, HashAlgorithm, HashArea, Mismatch, RootHash, Superblock,
    SuperblockError, TreeParams,
};
use libcryptsetup_rs::consts::flags::{CryptActivate, CryptVerity};
use libcryptsetup_rs::consts::vals::EncryptionFormat;
use libcryptsetup_rs::{CryptInit, CryptParamsVerity, CryptParamsVerityRef, Either, LibcryptErr};
use thiserror::Error;

/// Name of the root mapping (`/dev/mapper/root_verity`).
pub const ROOT_MAPPING: &str = "root_verity";

/// Size of the verity superblock at offset 0 of the hash partition.
const SUPERBLOCK_BYTES: usize = 512;

/// Why the root could not be opened.
#[derive(Debug, Error)]
pub enum RootVerityError {
    /// An I/O error on a partition.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The partition.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The hash partition does not start with a valid superblock.
    #[error("verity partition {} has no valid verity superblock", path.display())]
    Superblock {
        /// The hash partition.
        path: PathBuf,
        /// What is wrong.
        source: SuperblockError,
    },
    /// The superblock describes an impossible tree.
    #[error("verity partition {}: bad tree geometry", path.display())]
    Geometry {
        /// The hash partition.
        path: PathBuf,
        /// What is wrong.
        source: GeometryError,
    },
    /// `roothash=` has the wrong length for the tree's algorithm.
    #[error(
        "roothash= has {given} bytes but the verity partition uses {algorithm} ({expected}-byte digests)"
    )]
    RootHashLength {
        /// Bytes given on the command line.
        given: usize,
        /// The superblock's algorithm.
        algorithm: HashAlgorithm,
        /// Its digest size.
        expected: usize,
    },
    /// The hash partition cannot hold the tree the superblock describes.
    #[error("verity partition {} is {size} bytes, too small for its hash tree ({needed} bytes)", path.display())]
    HashPartitionTooSmall {
        /// The hash partition.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Bytes the superblock and tree need.
        needed: u64,
    },
    /// The root partition is smaller than the data the tree covers.
    #[error("root partition {} is {size} bytes but the verity superblock covers {needed} bytes", path.display())]
    DataPartitionTooSmall {
        /// The root partition.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Bytes covered by the tree.
        needed: u64,
    },
    /// The top hash block does not hash to `roothash=`.
    #[error("root hash does not match the verity partition ({}: top hash block at offset {offset})", path.display())]
    RootHashMismatch {
        /// The hash partition.
        path: PathBuf,
        /// Offset of the top hash block.
        offset: u64,
    },
    /// A hash block does not match its (verified) parent.
    #[error(
        "verity partition {} is corrupt: hash block {index} of level {level} (offset {offset}) does not match level {parent}",
        path.display(), parent = level + 1
    )]
    CorruptHashBlock {
        /// The hash partition.
        path: PathBuf,
        /// Level, 0 hashing the data.
        level: usize,
        /// Index of the block in its level.
        index: u64,
        /// Byte offset in the partition.
        offset: u64,
    },
    /// libcryptsetup refused.
    #[error("libcryptsetup cannot {action} {name}")]
    Cryptsetup {
        /// What was being done.
        action: &'static str,
        /// The mapping name.
        name: String,
        /// Its error.
        source: LibcryptErr,
    },
}

/// What the hash partition describes, after a successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedTree {
    /// Algorithm, block sizes, salt.
    pub params: TreeParams,
    /// Data blocks covered.
    pub data_blocks: u64,
    /// Levels of the tree.
    pub levels: usize,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RootVerityError {
    let path = path.to_path_buf();
    move |source| RootVerityError::Io {
        action,
        path,
        source,
    }
}

fn device_size(file: &File, path: &Path) -> Result<u64, RootVerityError> {
    use std::io::Seek;
    let mut f = file;
    f.seek(io::SeekFrom::End(0))
        .map_err(io_err("find the size of", path))
}

/// Checks the hash partition `hash_path` (superblock at offset 0, as
/// cocos-imgbuild and `veritysetup format` write it) against `root_hash`
/// and the size of the root partition `data_path`.
pub fn check_hash_tree(
    data_path: &Path,
    hash_path: &Path,
    root_hash: &[u8],
) -> Result<CheckedTree, RootVerityError> {
    let hash = File::open(hash_path).map_err(io_err("open", hash_path))?;
    let mut sb_bytes = [0u8; SUPERBLOCK_BYTES];
    hash.read_exact_at(&mut sb_bytes, 0)
        .map_err(io_err("read the superblock of", hash_path))?;
    let sb = Superblock::parse(&sb_bytes).map_err(|source| RootVerityError::Superblock {
        path: hash_path.to_path_buf(),
        source,
    })?;
    let algorithm = sb.params.algorithm;
    let root_hash = RootHash::from_bytes(root_hash, algorithm).map_err(|_| {
        RootVerityError::RootHashLength {
            given: root_hash.len(),
            algorithm,
            expected: algorithm.digest_size(),
        }
    })?;
    let geometry_err = |source| RootVerityError::Geometry {
        path: hash_path.to_path_buf(),
        source,
    };
    let area = HashArea::from_superblock(&sb, 0).map_err(geometry_err)?;
    let end = area.end().map_err(geometry_err)?;
    let hash_size = device_size(&hash, hash_path)?;
    if hash_size < end {
        return Err(RootVerityError::HashPartitionTooSmall {
            path: hash_path.to_path_buf(),
            size: hash_size,
            needed: end,
        });
    }
    let data = File::open(data_path).map_err(io_err("open", data_path))?;
    let data_size = device_size(&data, data_path)?;
    if data_size < area.geometry.data_bytes() {
        return Err(RootVerityError::DataPartitionTooSmall {
            path: data_path.to_path_buf(),
            size: data_size,
            needed: area.geometry.data_bytes(),
        });
    }
    // The tree only: the kernel checks each data block as it is read. (A
    // one-block tree has no hash blocks; its block is left to the kernel,
    // and no image of ours is one block long.)
    area.verify_tree(&hash, &root_hash).map_err(|e| match e {
        CheckError::Read { source, .. } => io_err("read the hash tree of", hash_path)(source),
        CheckError::RootHashLength { given, expected } => RootVerityError::RootHashLength {
            given,
            algorithm,
            expected,
        },
        CheckError::Mismatch(Mismatch::TopBlock { offset }) => RootVerityError::RootHashMismatch {
            path: hash_path.to_path_buf(),
            offset,
        },
        CheckError::Mismatch(Mismatch::HashBlock {
            level,
            index,
            offset,
            ..
        }) => RootVerityError::CorruptHashBlock {
            path: hash_path.to_path_buf(),
            level,
            index,
            offset,
        },
        // verify_tree reads no data blocks.
        CheckError::Mismatch(m @ (Mismatch::DataBlock { .. } | Mismatch::SingleDataBlock)) => {
            RootVerityError::Io {
                action: "check",
                path: data_path.to_path_buf(),
                source: io::Error::other(m.to_string()),
            }
        }
    })?;
    Ok(CheckedTree {
        params: area.params,
        data_blocks: sb.data_blocks,
        levels: area.geometry.levels().len(),
    })
}

/// Opens the read-only dm-verity mapping `name` over `data_path` with the
/// tree in `hash_path` and `root_hash`, through libcryptsetup.
pub fn open_verity(
    data_path: &Path,
    hash_path: &Path,
    name: &str,
    root_hash: &[u8],
) -> Result<(), RootVerityError> {
    let err = |action| {
        let name = name.to_owned();
        move |source| RootVerityError::Cryptsetup {
            action,
            name,
            source,
        }
    };
    let mut device = CryptInit::init_with_data_device(Either::Right((hash_path, data_path)))
        .map_err(err("initialise"))?;
    // Only hash_area_offset, flags and the devices matter to crypt_load of a
    // verity superblock (lib/setup.c, _crypt_load_verity); the rest comes
    // from the superblock.
    let params = CryptParamsVerity {
        hash_name: String::new(),
        data_device: data_path.to_path_buf(),
        hash_device: None,
        fec_device: None,
        salt: Vec::new(),
        hash_type: 1,
        data_block_size: 0,
        hash_block_size: 0,
        data_size: 0,
        hash_area_offset: 0,
        fec_area_offset: 0,
        fec_roots: 0,
        flags: CryptVerity::empty(),
    };
    let mut params_ref: CryptParamsVerityRef<'_> = (&params).try_into().map_err(err("describe"))?;
    device
        .context_handle()
        .load(Some(EncryptionFormat::Verity), Some(&mut params_ref))
        .map_err(err("load the verity superblock for"))?;
    device
        .activate_handle()
        .activate_by_volume_key(Some(name), Some(root_hash), CryptActivate::READONLY)
        .map_err(err("activate"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A data file of `blocks` 4 KiB blocks and its hash file, written by
    /// `veritysetup format` (the reference tool); returns the root hash.
    fn veritysetup(dir: &Path, blocks: usize, extra: &[&str]) -> (PathBuf, PathBuf, Vec<u8>) {
        let data = dir.join("data");
        let hash = dir.join("hash");
        let bytes: Vec<u8> = (0..blocks * 4096).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&data, bytes).unwrap();
        let out = Command::new("veritysetup")
            .arg("format")
            .args(extra)
            .arg(&data)
            .arg(&hash)
            .output()
            .expect("veritysetup not found: install cryptsetup-bin (scripts/setup-host.sh)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let root = text
            .lines()
            .find_map(|l| l.strip_prefix("Root hash:"))
            .unwrap()
            .trim();
        (data, hash, hex::decode(root).unwrap())
    }

    fn flip(path: &Path, offset: u64) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, offset).unwrap();
        f.write_all_at(&[b[0] ^ 0x01], offset).unwrap();
    }

    #[test]
    fn a_veritysetup_tree_checks_against_its_root_hash() {
        let t = tempfile::tempdir().unwrap();
        // 300 data blocks: 3 level-0 hash blocks under one top block.
        let (data, hash, root) = veritysetup(t.path(), 300, &[]);
        let checked = check_hash_tree(&data, &hash, &root).unwrap();
        assert_eq!(checked.levels, 2);
        assert_eq!(checked.data_blocks, 300);
        assert_eq!(checked.params.algorithm, HashAlgorithm::Sha256);
    }

    #[test]
    fn sha512_and_sha1_trees_check_too() {
        for alg in ["sha512", "sha1"] {
            let t = tempfile::tempdir().unwrap();
            let (data, hash, root) = veritysetup(t.path(), 70, &["--hash", alg]);
            check_hash_tree(&data, &hash, &root).unwrap();
        }
    }

    #[test]
    fn a_wrong_root_hash_is_named() {
        let t = tempfile::tempdir().unwrap();
        let (data, hash, mut root) = veritysetup(t.path(), 300, &[]);
        root[31] ^= 0x80;
        let e = check_hash_tree(&data, &hash, &root).unwrap_err();
        assert!(
            matches!(e, RootVerityError::RootHashMismatch { offset: 4096, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("root hash does not match the verity partition")
        );
    }

    #[test]
    fn a_flipped_byte_in_a_lower_hash_block_is_located() {
        let t = tempfile::tempdir().unwrap();
        let (data, hash, root) = veritysetup(t.path(), 300, &[]);
        // Superblock page, top block at 4096, level 0 at 8192.. (3 blocks).
        flip(&hash, 8192 + 4096 + 100);
        let e = check_hash_tree(&data, &hash, &root).unwrap_err();
        assert!(
            matches!(
                e,
                RootVerityError::CorruptHashBlock {
                    level: 0,
                    index: 1,
                    offset: 12288,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_flipped_byte_in_the_top_block_or_salt_is_a_root_hash_mismatch() {
        for offset in [4096 + 5, 88] {
            let t = tempfile::tempdir().unwrap();
            let (data, hash, root) = veritysetup(t.path(), 300, &[]);
            flip(&hash, offset);
            let e = check_hash_tree(&data, &hash, &root).unwrap_err();
            assert!(
                matches!(e, RootVerityError::RootHashMismatch { .. }),
                "{offset}: {e:?}"
            );
        }
    }

    #[test]
    fn a_damaged_superblock_is_reported() {
        let t = tempfile::tempdir().unwrap();
        let (data, hash, root) = veritysetup(t.path(), 10, &[]);
        flip(&hash, 0);
        let e = check_hash_tree(&data, &hash, &root).unwrap_err();
        assert!(matches!(e, RootVerityError::Superblock { .. }), "{e:?}");
    }

    #[test]
    fn a_root_hash_of_the_wrong_length_is_reported() {
        let t = tempfile::tempdir().unwrap();
        let (data, hash, root) = veritysetup(t.path(), 10, &[]);
        let e = check_hash_tree(&data, &hash, &root[..20]).unwrap_err();
        assert!(
            matches!(
                e,
                RootVerityError::RootHashLength {
                    given: 20,
                    expected: 32,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn truncated_partitions_are_reported() {
        let t = tempfile::tempdir().unwrap();
        let (data, hash, root) = veritysetup(t.path(), 300, &[]);
        let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
        f.set_len(299 * 4096).unwrap();
        let e = check_hash_tree(&data, &hash, &root).unwrap_err();
        assert!(
            matches!(
                e,
                RootVerityError::DataPartitionTooSmall {
                    needed: 1_228_800,
                    ..
                }
            ),
            "{e:?}"
        );
        let f = std::fs::OpenOptions::new().write(true).open(&hash).unwrap();
        f.set_len(4096 * 2).unwrap();
        let e = check_hash_tree(&data, &hash, &root).unwrap_err();
        assert!(
            matches!(
                e,
                RootVerityError::HashPartitionTooSmall { needed: 20480, .. }
            ),
            "{e:?}"
        );
    }
}
