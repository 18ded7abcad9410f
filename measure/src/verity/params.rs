//! The parameters of a dm-verity hash tree, as validated values.
//!
//! Every type here can only hold values that `veritysetup` and the kernel's
//! dm-verity target accept, so the rest of the crate never re-checks them.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use thiserror::Error;

/// A parameter given as text (on the command line or in a superblock) that is
/// not acceptable.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ParamError {
    /// The hash algorithm is not one this implementation supports.
    #[error("unknown hash algorithm {0:?} (supported: sha1, sha256, sha512)")]
    UnknownAlgorithm(String),
    /// A block size outside 512..=65536 or not a power of two.
    #[error("block size {0} is not a power of two between 512 and 65536")]
    BlockSize(u64),
    /// A salt longer than the 256 bytes the superblock can hold.
    #[error("salt is {0} bytes long; at most 256 bytes are allowed")]
    SaltTooLong(usize),
    /// Text that should be hexadecimal is not.
    #[error("{what} is not valid hexadecimal")]
    Hex {
        /// What was being parsed ("salt", "root hash").
        what: &'static str,
        /// The decoder's description of the problem.
        source: hex::FromHexError,
    },
    /// A root hash of the wrong length for the algorithm.
    #[error("root hash is {actual} bytes long but {algorithm} digests are {expected} bytes")]
    RootHashLength {
        /// The algorithm the tree uses.
        algorithm: HashAlgorithm,
        /// The digest size of that algorithm.
        expected: usize,
        /// The length that was given.
        actual: usize,
    },
}

/// The hash algorithm of a tree.
///
/// The kernel accepts any crypto API hash; `veritysetup` accepts whatever its
/// crypto backend offers. We support the three the project needs, each
/// checked byte for byte against `veritysetup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HashAlgorithm {
    /// SHA-1 (20-byte digests, stored in 32-byte slots in format version 1).
    Sha1,
    /// SHA-256, the default of `veritysetup` and of this project.
    #[default]
    Sha256,
    /// SHA-512.
    Sha512,
}

impl HashAlgorithm {
    /// All supported algorithms.
    pub const ALL: [HashAlgorithm; 3] = [Self::Sha1, Self::Sha256, Self::Sha512];

    /// The name as written in the superblock and on the kernel table line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Size of one digest in bytes.
    pub fn digest_size(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    /// Bytes one digest occupies in a hash block of format version 1: the
    /// digest size rounded up to a power of two (cryptsetup's "DMVerity"
    /// notes, "hash block format"), the rest zero.
    pub fn slot_size(self) -> usize {
        self.digest_size().next_power_of_two()
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgorithm {
    type Err = ParamError;

    /// Case-insensitive, as `veritysetup` lower-cases the name before use.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParamError::UnknownAlgorithm(s.to_owned()))
    }
}

impl Serialize for HashAlgorithm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A data or hash block size: a power of two in 512..=65536.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BlockSize(u32);

impl BlockSize {
    /// The default of `veritysetup` for both data and hash blocks.
    pub const DEFAULT: BlockSize = BlockSize(4096);
    /// The smallest block size (one sector).
    pub const MIN: u32 = 512;
    /// The largest block size accepted here.
    pub const MAX: u32 = 65536;

    /// Validates a block size.
    pub fn new(size: u64) -> Result<Self, ParamError> {
        if (Self::MIN as u64..=Self::MAX as u64).contains(&size) && size.is_power_of_two() {
            Ok(BlockSize(size as u32))
        } else {
            Err(ParamError::BlockSize(size))
        }
    }

    /// The size in bytes.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The size in bytes, as `usize` for slicing.
    pub fn bytes(self) -> usize {
        self.0 as usize
    }

    /// The size in bytes, as `u64` for offsets.
    pub fn bytes_u64(self) -> u64 {
        u64::from(self.0)
    }
}

impl Default for BlockSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for BlockSize {
    type Err = ParamError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u64 = s
            .trim()
            .parse()
            .map_err(|_| ParamError::BlockSize(u64::MAX))?;
        Self::new(n)
    }
}

/// The salt mixed into every hash: 0 to 256 bytes.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Salt(Vec<u8>);

impl Salt {
    /// The largest salt the superblock can hold.
    pub const MAX_LEN: usize = 256;
    /// Salt length `veritysetup` generates when none is given.
    pub const DEFAULT_LEN: usize = 32;

    /// Validates a salt.
    pub fn new(bytes: Vec<u8>) -> Result<Self, ParamError> {
        if bytes.len() > Self::MAX_LEN {
            return Err(ParamError::SaltTooLong(bytes.len()));
        }
        Ok(Salt(bytes))
    }

    /// Parses the command-line form: hex digits, or `-` for an empty salt
    /// (as `veritysetup --salt`).
    pub fn from_hex(s: &str) -> Result<Self, ParamError> {
        if s == "-" {
            return Ok(Salt(Vec::new()));
        }
        let bytes = hex::decode(s).map_err(|source| ParamError::Hex {
            what: "salt",
            source,
        })?;
        Self::new(bytes)
    }

    /// A fresh random salt of the default length, as `veritysetup` makes.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = vec![0u8; Self::DEFAULT_LEN];
        getrandom::fill(&mut bytes)?;
        Ok(Salt(bytes))
    }

    /// The salt bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex, or `-` when empty (the form `veritysetup` prints).
    pub fn to_display_hex(&self) -> String {
        if self.0.is_empty() {
            "-".to_owned()
        } else {
            hex::encode(&self.0)
        }
    }
}

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Salt({})", self.to_display_hex())
    }
}

impl Serialize for Salt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

/// The digest at the top of the tree: what the kernel command line carries
/// and what a verifier pins.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RootHash(Vec<u8>);

impl RootHash {
    /// Wraps a digest computed by this crate.
    pub(crate) fn from_digest(bytes: &[u8]) -> Self {
        RootHash(bytes.to_vec())
    }

    /// Parses a hex root hash for a tree using `algorithm`. Surrounding
    /// whitespace (a trailing newline in a root hash file) is ignored.
    pub fn from_hex(s: &str, algorithm: HashAlgorithm) -> Result<Self, ParamError> {
        let bytes = hex::decode(s.trim()).map_err(|source| ParamError::Hex {
            what: "root hash",
            source,
        })?;
        if bytes.len() != algorithm.digest_size() {
            return Err(ParamError::RootHashLength {
                algorithm,
                expected: algorithm.digest_size(),
                actual: bytes.len(),
            });
        }
        Ok(RootHash(bytes))
    }

    /// Takes a root hash given as bytes (e.g. parsed from a kernel command
    /// line) for a tree using `algorithm`.
    pub fn from_bytes(bytes: &[u8], algorithm: HashAlgorithm) -> Result<Self, ParamError> {
        if bytes.len() != algorithm.digest_size() {
            return Err(ParamError::RootHashLength {
                algorithm,
                expected: algorithm.digest_size(),
                actual: bytes.len(),
            });
        }
        Ok(RootHash(bytes.to_vec()))
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Display for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootHash({})", self.to_hex())
    }
}

impl Serialize for RootHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// Everything that determines the hash of each block: the inputs of the tree
/// apart from the data itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TreeParams {
    /// Hash algorithm.
    pub algorithm: HashAlgorithm,
    /// Size of the data blocks hashed into level 0.
    pub data_block_size: BlockSize,
    /// Size of the hash blocks of every level.
    pub hash_block_size: BlockSize,
    /// Salt prepended to every hashed block (format version 1).
    pub salt: Salt,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_follow_the_veritysetup_range() {
        for ok in [512u64, 1024, 4096, 65536] {
            assert_eq!(BlockSize::new(ok).map(BlockSize::bytes_u64), Ok(ok));
        }
        for bad in [0u64, 256, 511, 513, 3000, 131072, u64::MAX] {
            assert!(BlockSize::new(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn salt_dash_is_empty_and_256_bytes_is_the_limit() {
        assert!(Salt::from_hex("-").map(|s| s.as_bytes().is_empty()) == Ok(true));
        assert!(Salt::from_hex(&"ab".repeat(256)).is_ok());
        assert_eq!(
            Salt::from_hex(&"ab".repeat(257)),
            Err(ParamError::SaltTooLong(257))
        );
        assert!(matches!(Salt::from_hex("abc"), Err(ParamError::Hex { .. })));
        assert!(matches!(Salt::from_hex("zz"), Err(ParamError::Hex { .. })));
    }

    #[test]
    fn digest_slots_are_padded_to_a_power_of_two() {
        // cryptsetup DMVerity notes: sha1's 20-byte digests take 32 bytes.
        assert_eq!(HashAlgorithm::Sha1.slot_size(), 32);
        assert_eq!(HashAlgorithm::Sha256.slot_size(), 32);
        assert_eq!(HashAlgorithm::Sha512.slot_size(), 64);
    }

    #[test]
    fn algorithm_names_are_case_insensitive() {
        assert_eq!("SHA256".parse(), Ok(HashAlgorithm::Sha256));
        assert!("md5".parse::<HashAlgorithm>().is_err());
    }

    #[test]
    fn root_hash_length_must_match_the_algorithm() {
        let hex64 = "00".repeat(32);
        assert!(RootHash::from_hex(&format!("{hex64}\n"), HashAlgorithm::Sha256).is_ok());
        assert!(matches!(
            RootHash::from_hex(&hex64, HashAlgorithm::Sha512),
            Err(ParamError::RootHashLength { actual: 32, .. })
        ));
    }
}

/// The parameters of a dm-verity hash area, as `manifest.json`, `cocos-imgbuild
/// inspect --json` and `cocos-measure verity --json` all report them (one
/// type, one set of key names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerityParams {
    /// Hash algorithm.
    pub algorithm: HashAlgorithm,
    /// Data block size.
    pub data_block_size: BlockSize,
    /// Hash block size.
    pub hash_block_size: BlockSize,
    /// Data blocks covered.
    pub data_blocks: u64,
    /// Salt (hex).
    pub salt: Salt,
    /// Superblock UUID (none without a superblock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<uuid::Uuid>,
    /// Root hash, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<RootHash>,
    /// Format version (hash type): 1, the normal format.
    pub hash_type: u32,
}

impl VerityParams {
    /// The parameters of a tree of `data_blocks` blocks.
    pub fn new(params: &TreeParams, data_blocks: u64) -> Self {
        VerityParams {
            algorithm: params.algorithm,
            data_block_size: params.data_block_size,
            hash_block_size: params.hash_block_size,
            data_blocks,
            salt: params.salt.clone(),
            uuid: None,
            root_hash: None,
            hash_type: 1,
        }
    }

    /// With the superblock UUID.
    pub fn with_uuid(mut self, uuid: Option<uuid::Uuid>) -> Self {
        self.uuid = uuid;
        self
    }

    /// With the root hash.
    pub fn with_root_hash(mut self, root_hash: Option<RootHash>) -> Self {
        self.root_hash = root_hash;
        self
    }
}
