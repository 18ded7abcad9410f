//! Everything random in an image (UUIDs, salts, hash seeds, volume IDs) is
//! derived from one seed, so the same inputs give the same bytes.
//!
//! A value is `SHA-256("cocos-imgbuild seed v1" ‖ 0 ‖ seed ‖ purpose)`,
//! truncated; UUIDs get the version-4 and RFC 4122 variant bits so tools
//! that validate UUIDs accept them.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The purpose labels of the values an image derives from its seed. Each
/// names one value; changing a label changes that value in every image.
pub mod purpose {
    /// The GPT disk GUID.
    pub const GPT_DISK: &str = "gpt:disk";
    /// The ESP's unique partition GUID.
    pub const GPT_ESP: &str = "gpt:esp";
    /// Placeholder GUIDs of the root and its hash partition while the
    /// root hash is not known yet (never written to a finished image).
    pub const GPT_ROOT_PLACEHOLDER: &str = "gpt:root-placeholder";
    /// See [`GPT_ROOT_PLACEHOLDER`].
    pub const GPT_VERITY_PLACEHOLDER: &str = "gpt:verity-placeholder";
    /// The FAT volume ID of the ESP.
    pub const ESP_VOLUME_ID: &str = "esp:volume-id";
    /// The ext4 filesystem UUID of the root.
    pub const EXT4_UUID: &str = "ext4:uuid";
    /// The ext4 directory hash seed of the root.
    pub const EXT4_HASH_SEED: &str = "ext4:hash-seed";
    /// The dm-verity salt.
    pub const VERITY_SALT: &str = "verity:salt";
    /// The dm-verity superblock UUID.
    pub const VERITY_UUID: &str = "verity:uuid";

    /// The unique partition GUID of a data partition (`gpt:cocos`).
    pub fn gpt_partition(label: &str) -> String {
        format!("gpt:{label}")
    }
}

/// The image seed (`--seed UUID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(Uuid);

impl Seed {
    /// Wraps a seed UUID.
    pub fn new(uuid: Uuid) -> Self {
        Seed(uuid)
    }

    /// The seed itself.
    pub fn uuid(&self) -> Uuid {
        self.0
    }

    fn digest(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"cocos-imgbuild seed v1\0");
        h.update(self.0.as_bytes());
        h.update(purpose.as_bytes());
        h.finalize().into()
    }

    /// A UUID for `purpose` (one of [`purpose`], e.g. `"gpt:disk"`).
    pub fn uuid_for(&self, purpose: &str) -> Uuid {
        let d = self.digest(purpose);
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }

    /// Up to 32 bytes for `purpose` (e.g. the verity salt).
    pub fn bytes_for(&self, purpose: &str, len: usize) -> Vec<u8> {
        self.digest(purpose)[..len.min(32)].to_vec()
    }

    /// A 32-bit value for `purpose` (e.g. the FAT volume ID).
    pub fn u32_for(&self, purpose: &str) -> u32 {
        let d = self.digest(purpose);
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_depend_on_seed_and_purpose_only() {
        let a = Seed::new(Uuid::from_u128(1));
        let b = Seed::new(Uuid::from_u128(2));
        assert_eq!(a.uuid_for("x"), a.uuid_for("x"));
        assert_ne!(a.uuid_for("x"), a.uuid_for("y"));
        assert_ne!(a.uuid_for("x"), b.uuid_for("x"));
        assert_eq!(a.uuid_for("x").get_version_num(), 4);
        assert_eq!(a.bytes_for("salt", 32).len(), 32);
    }
}
