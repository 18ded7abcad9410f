//! The dm-verity superblock (format version 1) that `veritysetup` writes at
//! the start of the hash area.
//!
//! The kernel never reads it: it exists so userspace can find the tree
//! parameters again. Layout from cryptsetup's "DMVerity" notes ("Verity
//! superblock format") and `struct verity_sb` in cryptsetup's
//! `lib/verity/verity.c`; all integers are little-endian.
//!
//! ```text
//! offset size  field
//!      0    8  signature        "verity\0\0"
//!      8    4  version          1
//!     12    4  hash_type        0 = Chrome OS, 1 = normal
//!     16   16  uuid             binary UUID
//!     32   32  algorithm        NUL-padded name, e.g. "sha256"
//!     64    4  data_block_size  bytes
//!     68    4  hash_block_size  bytes
//!     72    8  data_blocks      number of data blocks
//!     80    2  salt_size        bytes used in `salt`
//!     82    6  _pad1            zero
//!     88  256  salt             salt, zero padded
//!    344  168  _pad2            zero
//! ```
//!
//! [`RawSuperblock`] is the byte layout; [`Superblock`] is the validated
//! meaning. Parsing is strict: every byte that `veritysetup` writes as zero
//! must be zero, so a flipped byte anywhere but in the UUID is reported.

#![forbid(unsafe_code)]

use thiserror::Error;
use uuid::Uuid;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::params::{BlockSize, HashAlgorithm, ParamError, Salt, TreeParams};

/// Size of the superblock on disk.
pub const SUPERBLOCK_SIZE: usize = 512;

/// The signature at offset 0.
pub const SIGNATURE: [u8; 8] = *b"verity\0\0";

/// The only superblock version defined.
pub const VERSION: u32 = 1;

/// The superblock exactly as stored: see the module documentation.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawSuperblock {
    /// `"verity\0\0"`.
    pub signature: [u8; 8],
    /// Superblock version, 1.
    pub version: U32,
    /// Hash format: 0 = Chrome OS (salt after the data, unpadded digests),
    /// 1 = normal (salt first, digests padded to a power of two).
    pub hash_type: U32,
    /// UUID of the verity device, binary.
    pub uuid: [u8; 16],
    /// Hash algorithm name, NUL padded.
    pub algorithm: [u8; 32],
    /// Data block size in bytes.
    pub data_block_size: U32,
    /// Hash block size in bytes.
    pub hash_block_size: U32,
    /// Number of data blocks covered by the tree.
    pub data_blocks: U64,
    /// Number of bytes of `salt` in use.
    pub salt_size: U16,
    /// Reserved, zero.
    pub pad1: [u8; 6],
    /// Salt, zero padded.
    pub salt: [u8; 256],
    /// Reserved, zero.
    pub pad2: [u8; 168],
}

const _: () = assert!(size_of::<RawSuperblock>() == SUPERBLOCK_SIZE);

/// Why a superblock was rejected. Offsets are from the superblock's start.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SuperblockError {
    /// Fewer than 512 bytes were available.
    #[error("superblock is truncated: {0} of 512 bytes present")]
    Truncated(usize),
    /// The first 8 bytes are not `verity\0\0`.
    #[error("bad signature {0:02x?} at offset 0 (expected \"verity\\0\\0\")")]
    BadSignature([u8; 8]),
    /// A version other than 1.
    #[error("unsupported superblock version {0} at offset 8 (only 1 is defined)")]
    UnsupportedVersion(u32),
    /// Hash type 0 (Chrome OS) or an undefined one.
    #[error(
        "unsupported hash type {0} at offset 12 (only type 1, the normal format, is supported)"
    )]
    UnsupportedHashType(u32),
    /// The algorithm name is not NUL terminated ASCII or not supported.
    #[error("bad hash algorithm at offset 32")]
    Algorithm(#[source] ParamError),
    /// A block size that is not a power of two in 512..=65536.
    #[error("bad {field} at offset {offset}")]
    BlockSize {
        /// Field name.
        field: &'static str,
        /// Offset of the field.
        offset: usize,
        /// What is wrong with the value.
        source: ParamError,
    },
    /// Zero data blocks.
    #[error("data_blocks at offset 72 is 0")]
    NoDataBlocks,
    /// `salt_size` above 256.
    #[error("salt_size {0} at offset 80 exceeds 256")]
    SaltTooLong(u16),
    /// A byte that must be zero is not.
    #[error("reserved byte at offset {0} is not zero (corrupt superblock)")]
    NonZeroReserved(usize),
}

/// A validated superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// UUID of the verity device.
    pub uuid: Uuid,
    /// Algorithm, block sizes and salt.
    pub params: TreeParams,
    /// Number of data blocks covered.
    pub data_blocks: u64,
}

impl Superblock {
    /// Parses and validates the first 512 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, SuperblockError> {
        let (raw, _) = RawSuperblock::read_from_prefix(bytes)
            .map_err(|_| SuperblockError::Truncated(bytes.len()))?;
        Self::from_raw(&raw)
    }

    /// Validates a raw superblock.
    pub fn from_raw(raw: &RawSuperblock) -> Result<Self, SuperblockError> {
        if raw.signature != SIGNATURE {
            return Err(SuperblockError::BadSignature(raw.signature));
        }
        if raw.version.get() != VERSION {
            return Err(SuperblockError::UnsupportedVersion(raw.version.get()));
        }
        if raw.hash_type.get() != 1 {
            return Err(SuperblockError::UnsupportedHashType(raw.hash_type.get()));
        }
        let algorithm = parse_algorithm(&raw.algorithm)?;
        let block_size = |field, offset, value: U32| {
            BlockSize::new(u64::from(value.get())).map_err(|source| SuperblockError::BlockSize {
                field,
                offset,
                source,
            })
        };
        let data_block_size = block_size("data_block_size", 64, raw.data_block_size)?;
        let hash_block_size = block_size("hash_block_size", 68, raw.hash_block_size)?;
        let data_blocks = raw.data_blocks.get();
        if data_blocks == 0 {
            return Err(SuperblockError::NoDataBlocks);
        }
        let salt_size = raw.salt_size.get();
        if usize::from(salt_size) > Salt::MAX_LEN {
            return Err(SuperblockError::SaltTooLong(salt_size));
        }
        let salt_size = usize::from(salt_size);
        check_zero(&raw.pad1, 82)?;
        check_zero(&raw.salt[salt_size..], 88 + salt_size)?;
        check_zero(&raw.pad2, 344)?;
        let salt = Salt::new(raw.salt[..salt_size].to_vec())
            .map_err(|_| SuperblockError::SaltTooLong(0))?;
        Ok(Superblock {
            uuid: Uuid::from_bytes(raw.uuid),
            params: TreeParams {
                algorithm,
                data_block_size,
                hash_block_size,
                salt,
            },
            data_blocks,
        })
    }

    /// The on-disk form, as `veritysetup format` writes it.
    pub fn to_raw(&self) -> RawSuperblock {
        let mut raw = RawSuperblock::new_zeroed();
        raw.signature = SIGNATURE;
        raw.version = U32::new(VERSION);
        raw.hash_type = U32::new(1);
        raw.uuid = *self.uuid.as_bytes();
        let name = self.params.algorithm.name().as_bytes();
        raw.algorithm[..name.len()].copy_from_slice(name);
        raw.data_block_size = U32::new(self.params.data_block_size.get());
        raw.hash_block_size = U32::new(self.params.hash_block_size.get());
        raw.data_blocks = U64::new(self.data_blocks);
        let salt = self.params.salt.as_bytes();
        // Salt::new guarantees at most 256 bytes, so this fits in u16.
        raw.salt_size = U16::new(salt.len() as u16);
        raw.salt[..salt.len()].copy_from_slice(salt);
        raw
    }

    /// The 512 bytes to write.
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut out = [0u8; SUPERBLOCK_SIZE];
        out.copy_from_slice(self.to_raw().as_bytes());
        out
    }
}

fn parse_algorithm(field: &[u8; 32]) -> Result<HashAlgorithm, SuperblockError> {
    let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    check_zero(&field[len..], 32 + len)?;
    let name = std::str::from_utf8(&field[..len]).map_err(|_| {
        SuperblockError::Algorithm(ParamError::UnknownAlgorithm(
            String::from_utf8_lossy(&field[..len]).into_owned(),
        ))
    })?;
    name.parse().map_err(SuperblockError::Algorithm)
}

fn check_zero(bytes: &[u8], offset: usize) -> Result<(), SuperblockError> {
    match bytes.iter().position(|&b| b != 0) {
        Some(i) => Err(SuperblockError::NonZeroReserved(offset + i)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            uuid: Uuid::from_bytes([0x11; 16]),
            params: TreeParams {
                algorithm: HashAlgorithm::Sha256,
                data_block_size: BlockSize::DEFAULT,
                hash_block_size: BlockSize::new(1024).unwrap(),
                salt: Salt::from_hex("00ff").unwrap(),
            },
            data_blocks: 300,
        }
    }

    #[test]
    fn field_offsets_match_the_documented_layout() {
        let raw = sample().to_raw();
        let b = raw.as_bytes();
        assert_eq!(&b[0..8], b"verity\0\0");
        assert_eq!(&b[8..12], &1u32.to_le_bytes());
        assert_eq!(&b[12..16], &1u32.to_le_bytes());
        assert_eq!(&b[16..32], &[0x11; 16]);
        assert_eq!(&b[32..38], b"sha256");
        assert_eq!(&b[64..68], &4096u32.to_le_bytes());
        assert_eq!(&b[68..72], &1024u32.to_le_bytes());
        assert_eq!(&b[72..80], &300u64.to_le_bytes());
        assert_eq!(&b[80..82], &2u16.to_le_bytes());
        assert_eq!(&b[88..90], &[0x00, 0xff]);
    }

    #[test]
    fn round_trips() {
        let sb = sample();
        assert_eq!(Superblock::parse(&sb.to_bytes()), Ok(sb));
    }

    #[test]
    fn every_byte_outside_the_uuid_is_checked() {
        let good = sample().to_bytes();
        for offset in (0..SUPERBLOCK_SIZE).filter(|o| !(16..32).contains(o)) {
            let mut bad = good;
            bad[offset] ^= 0x01;
            let parsed = Superblock::parse(&bad);
            // A flip in the salt or a size field may still parse, but then
            // it must change what the superblock says.
            if let Ok(sb) = parsed {
                assert_ne!(sb, sample(), "flip at {offset} went unnoticed");
            }
        }
    }

    proptest::proptest! {
        /// The fuzz target's property (fuzz/fuzz_targets/superblock.rs), run
        /// on mutations of a valid superblock: never panic, and accept only
        /// the canonical encoding.
        #[test]
        fn accepts_only_canonical_superblocks(
            flips in proptest::collection::vec((0usize..SUPERBLOCK_SIZE, 1u8..=255), 0..4),
            len in 0usize..600,
        ) {
            let mut bytes = sample().to_bytes().to_vec();
            bytes.resize(len.max(1), 0);
            for (at, mask) in flips {
                if at < bytes.len() {
                    bytes[at] ^= mask;
                }
            }
            if let Ok(sb) = Superblock::parse(&bytes) {
                proptest::prop_assert_eq!(&sb.to_bytes()[..], &bytes[..SUPERBLOCK_SIZE]);
            }
        }
    }

    #[test]
    fn truncated_input_is_rejected() {
        assert_eq!(
            Superblock::parse(&[0u8; 100]),
            Err(SuperblockError::Truncated(100))
        );
    }
}
