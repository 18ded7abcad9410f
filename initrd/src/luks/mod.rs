//! The encrypted `/cocos` partition: LUKS2 settings, format and open.
//!
//! Every boot formats the partition afresh with a new random key that only
//! lives in this process's memory (and the kernel's dm-crypt table): the
//! data of the previous boot becomes unreadable, and no key is ever
//! written to a file.
//!
//! Defaults, as the system this replaces (`cryptsetup luksFormat --type
//! luks2 --cipher aes-gcm-random --integrity aead`): authenticated
//! encryption, AES-256-GCM with random IVs stored with the tags by
//! dm-integrity. Deliberate differences, each recorded in
//! docs/decisions.md:
//! - 4096-byte encryption sectors (the ext4 block size; a quarter of the
//!   tags and IVs of 512-byte sectors).
//! - A 4 MiB header instead of 16 MiB ([`KEYSLOTS_BYTES`]).
//! - The keyslot uses PBKDF2-SHA256 with 1000 iterations (libcryptsetup's
//!   minimum) instead of a benchmarked Argon2id: its passphrase is 64
//!   random bytes, so key stretching adds nothing but seconds of boot.
//! - No integrity wipe: the tags are left as they are, and every block the
//!   filesystem will read is written first (`cocosfs`).
//! - The mapping is opened without the dm-integrity journal: the journal
//!   protects data across a crash, and after a crash this partition is
//!   formatted again with a new key anyway.

mod ffi;

use std::path::{Path, PathBuf};

use libcryptsetup_rs::consts::flags::CryptActivate;
use libcryptsetup_rs::consts::vals::{KeyslotsSize, MetadataSize};
use libcryptsetup_rs::{CryptDevice, Either, LibcryptErr};
use thiserror::Error;
use zeroize::Zeroizing;

/// Name of the mapping (`/dev/mapper/cocos_crypt`), as the seed's init.
pub const COCOS_MAPPING: &str = "cocos_crypt";

/// Default cipher (cryptsetup's `--cipher` form).
pub const DEFAULT_CIPHER: &str = "aes-gcm-random";
/// Default integrity with [`DEFAULT_CIPHER`].
pub const DEFAULT_INTEGRITY: &str = "aead";
/// Encryption sector size in bytes.
pub const SECTOR_SIZE: u32 = 4096;
/// PBKDF2 iterations of the keyslot: libcryptsetup's minimum
/// (`lib/crypto_backend/pbkdf_check.c`: 1000, "recommendation in NIST SP
/// 800-132").
pub const PBKDF2_ITERATIONS: u32 = 1000;
/// Size of the LUKS2 keyslots area: 4 MiB less the two 16 KiB metadata
/// copies, so the whole header is 4 MiB. cryptsetup's default is 16 MiB;
/// formatting writes the header area with zeros and the keyslots area with
/// random bytes, so this saves 24 MiB of writes at every boot. One keyslot
/// needs the key times 4000 anti-forensic stripes (at most 512000 bytes
/// for a 128-byte key). 4 MiB is the smallest size libcryptsetup formats
/// without its "keyslots area is very small" warning
/// (`lib/luks2/luks2_json_format.c`, `LUKS2_HDR_OFFSET_MAX`).
pub const KEYSLOTS_BYTES: u64 = (4 << 20) - 2 * 16 * 1024;
/// Size of the dm-integrity journal written at format: 1 MiB whatever the
/// partition's size. The kernel's default is 1/128 of the device, up to
/// 64 MiB (`DEFAULT_JOURNAL_SIZE_FACTOR`, `DEFAULT_MAX_JOURNAL_SECTORS` in
/// `drivers/md/dm-integrity.c`), and the kernel writes the whole journal
/// when it formats: 32 MiB at every boot of a 4 GiB partition. The mapping
/// is opened without the journal ([`Formatted::activate`]), so its size
/// only costs writes.
pub const JOURNAL_BYTES: u64 = 1 << 20;
/// Bytes of the keyslot passphrase.
pub const PASSPHRASE_BYTES: usize = 64;
/// cryptsetup's default key size before the XTS and integrity adjustments
/// (`cryptsetup --help`: "LUKS: aes-xts-plain64, Key: 256 bits").
const DEFAULT_KEY_BITS: usize = 256;

/// The LUKS2 settings of `/cocos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksSettings {
    /// Cipher name (`aes`).
    pub cipher: String,
    /// Cipher mode (`gcm-random`).
    pub mode: String,
    /// Integrity in libcryptsetup's form (`aead`, `hmac(sha256)`), or none.
    pub integrity: Option<String>,
    /// Volume key size in bytes (cipher key plus integrity key).
    pub key_bytes: usize,
    /// Encryption sector size.
    pub sector_size: u32,
}

/// A cipher or integrity setting that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LuksSettingsError {
    /// Not of the `cipher-mode` form or with unexpected characters.
    #[error("cipher {0:?} is not of the form cipher-mode (such as aes-xts-plain64)")]
    BadCipher(String),
    /// An integrity mode libcryptsetup does not know.
    #[error(
        "integrity {0:?} is not one of aead, poly1305, hmac-sha1, hmac-sha256, hmac-sha512, none"
    )]
    BadIntegrity(String),
}

impl LuksSettings {
    /// The settings for the command line's `cocos.luks.cipher=` and
    /// `cocos.luks.integrity=` (either may be absent).
    ///
    /// - Neither: `aes-gcm-random` with `aead`.
    /// - A cipher only: `aead` integrity for GCM, CCM and AEGIS modes,
    ///   `poly1305` for ChaCha20, none otherwise (so `aes-xts-plain64`
    ///   alone is plain dm-crypt).
    /// - `none` turns integrity off.
    ///
    /// The key size follows cryptsetup 2.6 (`get_adjusted_key_size` in
    /// `src/utils_luks.c`): 256 bits, doubled for XTS modes (two keys), plus
    /// the integrity key (`INTEGRITY_key_size`: 20, 32 or 64 bytes for
    /// HMAC, none for AEAD modes).
    pub fn choose(
        cipher: Option<&str>,
        integrity: Option<&str>,
    ) -> Result<Self, LuksSettingsError> {
        let spec = cipher.unwrap_or(DEFAULT_CIPHER);
        let valid = |c: char| c.is_ascii_alphanumeric() || "-_:()".contains(c);
        let (name, mode) = match spec.split_once('-') {
            Some((n, m))
                if !n.is_empty() && !m.is_empty() && spec.len() < 32 && spec.chars().all(valid) =>
            {
                (n.to_ascii_lowercase(), m.to_ascii_lowercase())
            }
            _ => return Err(LuksSettingsError::BadCipher(spec.to_owned())),
        };
        let integrity = match integrity {
            Some(i) => match i.to_ascii_lowercase().as_str() {
                "none" => None,
                "aead" => Some("aead".to_owned()),
                "poly1305" => Some("poly1305".to_owned()),
                "hmac-sha1" | "hmac(sha1)" => Some("hmac(sha1)".to_owned()),
                "hmac-sha256" | "hmac(sha256)" => Some("hmac(sha256)".to_owned()),
                "hmac-sha512" | "hmac(sha512)" => Some("hmac(sha512)".to_owned()),
                _ => return Err(LuksSettingsError::BadIntegrity(i.to_owned())),
            },
            None if cipher.is_none() => Some(DEFAULT_INTEGRITY.to_owned()),
            None if name == "chacha20" => Some("poly1305".to_owned()),
            None if mode.starts_with("gcm")
                || mode.starts_with("ccm")
                || name.starts_with("aegis") =>
            {
                Some("aead".to_owned())
            }
            None => None,
        };
        let cipher_bits = if mode.starts_with("xts-") {
            2 * DEFAULT_KEY_BITS
        } else {
            DEFAULT_KEY_BITS
        };
        let integrity_key = match integrity.as_deref() {
            Some("hmac(sha1)") => 20,
            Some("hmac(sha256)") => 32,
            Some("hmac(sha512)") => 64,
            _ => 0,
        };
        Ok(LuksSettings {
            cipher: name,
            mode,
            integrity,
            key_bytes: cipher_bits / 8 + integrity_key,
            sector_size: SECTOR_SIZE,
        })
    }

    /// The cipher in cryptsetup's `--cipher` form (`aes-gcm-random`).
    pub fn cipher_spec(&self) -> String {
        format!("{}-{}", self.cipher, self.mode)
    }
}

impl std::fmt::Display for LuksSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {}-bit key, integrity {}, {}-byte sectors",
            self.cipher_spec(),
            self.key_bytes * 8,
            self.integrity.as_deref().unwrap_or("none"),
            self.sector_size
        )
    }
}

/// Why the partition could not be formatted or opened.
#[derive(Debug, Error)]
pub enum LuksError {
    /// The kernel's random generator failed.
    #[error("cannot get random bytes for the key")]
    Random(#[source] getrandom::Error),
    /// libcryptsetup refused.
    #[error("libcryptsetup cannot {action} {}", device.display())]
    Cryptsetup {
        /// What was being done.
        action: &'static str,
        /// The partition.
        device: std::path::PathBuf,
        /// Its error.
        source: LibcryptErr,
    },
}

/// The secrets of one boot: the volume key and the keyslot passphrase,
/// both from the kernel's generator, wiped from memory when dropped.
pub struct EphemeralKeys {
    volume_key: Zeroizing<Vec<u8>>,
    passphrase: Zeroizing<[u8; PASSPHRASE_BYTES]>,
}

impl std::fmt::Debug for EphemeralKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EphemeralKeys(..)")
    }
}

impl EphemeralKeys {
    /// Draws `key_bytes` of volume key and a 64-byte passphrase from
    /// `getrandom(2)`, which waits until the kernel's generator is seeded.
    pub fn generate(key_bytes: usize) -> Result<Self, LuksError> {
        let mut volume_key = Zeroizing::new(vec![0u8; key_bytes]);
        let mut passphrase = Zeroizing::new([0u8; PASSPHRASE_BYTES]);
        getrandom::fill(&mut volume_key).map_err(LuksError::Random)?;
        getrandom::fill(passphrase.as_mut()).map_err(LuksError::Random)?;
        Ok(EphemeralKeys {
            volume_key,
            passphrase,
        })
    }
}

/// Maps a libcryptsetup error on `device` while doing `action`.
fn cryptsetup_err(device: &Path, action: &'static str) -> impl FnOnce(LibcryptErr) -> LuksError {
    let device = device.to_path_buf();
    move |source| LuksError::Cryptsetup {
        action,
        device,
        source,
    }
}

/// A device just formatted, with its LUKS2 context still loaded: it is
/// activated from that context, without reading the header back.
pub struct Formatted {
    cd: CryptDevice,
    device: PathBuf,
}

/// Formats `device` as LUKS2 with `settings` and `keys` (one keyslot, for
/// the passphrase), without wiping the integrity tags.
pub fn format(
    device: &Path,
    settings: &LuksSettings,
    keys: &EphemeralKeys,
) -> Result<Formatted, LuksError> {
    let err = |action| cryptsetup_err(device, action);
    let keyslots = KeyslotsSize::try_from(KEYSLOTS_BYTES).map_err(err("size the header of"))?;
    let mut cd = ffi::format_luks2(
        device,
        &ffi::Luks2Format {
            cipher: &settings.cipher,
            mode: &settings.mode,
            volume_key: &keys.volume_key,
            integrity: settings.integrity.as_deref(),
            journal_bytes: JOURNAL_BYTES,
            sector_size: settings.sector_size,
            label: "cocos",
            metadata: MetadataSize::Kb16,
            keyslots,
            pbkdf2_hash: "sha256",
            pbkdf2_iterations: PBKDF2_ITERATIONS,
        },
    )
    .map_err(|(action, source)| err(action)(source))?;
    cd.keyslot_handle()
        .add_by_key(
            None,
            Some(Either::Left(&keys.volume_key)),
            keys.passphrase.as_ref(),
            libcryptsetup_rs::consts::flags::CryptVolumeKey::empty(),
        )
        .map_err(err("add a keyslot to"))?;
    Ok(Formatted {
        cd,
        device: device.to_path_buf(),
    })
}

impl Formatted {
    /// Opens the device as the mapping `name` with the volume key (no key
    /// derivation), without the dm-integrity journal, from the context
    /// `format` left (the header it wrote is not loaded again).
    pub fn activate(
        mut self,
        name: &str,
        settings: &LuksSettings,
        keys: &EphemeralKeys,
    ) -> Result<(), LuksError> {
        let device = self.device.clone();
        let err = |action| cryptsetup_err(&device, action);
        let cd = &mut self.cd;
        let flags = if settings.integrity.is_some() {
            CryptActivate::NO_JOURNAL
        } else {
            CryptActivate::empty()
        };
        cd.activate_handle()
            .activate_by_volume_key(Some(name), Some(&keys.volume_key), flags)
            .map_err(err("activate"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn defaults_are_the_seeds_authenticated_encryption() {
        let s = LuksSettings::choose(None, None).unwrap();
        assert_eq!(s.cipher_spec(), "aes-gcm-random");
        assert_eq!(s.integrity.as_deref(), Some("aead"));
        assert_eq!(s.sector_size, 4096);
        // `cryptsetup luksFormat --cipher aes-gcm-random --integrity aead`
        // 2.6.1 on a device without dm-integrity: "Cipher aes-gcm-random
        // (key size 256 bits) is not available." (see also the test below).
        assert_eq!(s.key_bytes, 32);
    }

    #[test]
    fn overrides_pick_the_integrity_that_fits() {
        let c = |cipher, integrity| LuksSettings::choose(cipher, integrity).unwrap();
        let xts = c(Some("aes-xts-plain64"), None);
        assert_eq!((xts.integrity, xts.key_bytes), (None, 64));
        let ccm = c(Some("aes-ccm-random"), None);
        assert_eq!(ccm.integrity.as_deref(), Some("aead"));
        let chacha = c(Some("chacha20-random"), None);
        assert_eq!(chacha.integrity.as_deref(), Some("poly1305"));
        let hmac = c(Some("aes-xts-random"), Some("hmac-sha256"));
        assert_eq!(
            (hmac.integrity.as_deref(), hmac.key_bytes),
            (Some("hmac(sha256)"), 96)
        );
        let plain = c(None, Some("none"));
        assert_eq!(
            (plain.cipher_spec().as_str(), plain.integrity),
            ("aes-gcm-random", None)
        );
    }

    #[test]
    fn malformed_overrides_are_rejected() {
        for bad in [
            "aes",
            "-xts",
            "aes-",
            "aes-xts-plain64;rm",
            "aes-xts plain",
            &"a-".repeat(20),
        ] {
            assert!(
                matches!(
                    LuksSettings::choose(Some(bad), None),
                    Err(LuksSettingsError::BadCipher(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            LuksSettings::choose(None, Some("crc32")),
            Err(LuksSettingsError::BadIntegrity("crc32".into()))
        );
    }

    /// The key size cryptsetup 2.6.1 chooses for `--cipher C --integrity I`
    /// without `--key-size`: from `luksDump` of a file it formats, or, when
    /// formatting needs the kernel's dm-integrity (not on a build machine),
    /// from the "key size N bits" of its refusal. (HMAC integrity fails
    /// before saying a size, so those sizes rest on the source citation in
    /// [`LuksSettings::choose`].)
    fn cryptsetup_key_bits(dir: &Path, cipher: &str, integrity: Option<&str>) -> usize {
        let img = dir.join(format!("{cipher}.img"));
        let key = dir.join("key");
        std::fs::write(&key, [7u8; 64]).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        let mut cmd = Command::new("cryptsetup");
        cmd.args([
            "luksFormat",
            "--type",
            "luks2",
            "--batch-mode",
            "--cipher",
            cipher,
        ])
        .args([
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
        ])
        .arg(&key)
        .arg(&img);
        if let Some(i) = integrity {
            cmd.args(["--integrity", i, "--integrity-no-wipe"]);
        }
        let out = cmd
            .output()
            .expect("cryptsetup not found: install cryptsetup-bin (scripts/setup-host.sh)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let bits = stderr
                .split("key size ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .unwrap_or_else(|| panic!("cryptsetup {cipher}: {stderr}"));
            return bits.parse().unwrap();
        }
        let dump = Command::new("cryptsetup")
            .arg("luksDump")
            .arg(&img)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&dump.stdout);
        text.lines()
            .find_map(|l| l.trim().strip_prefix("Cipher key:"))
            .and_then(|s| s.trim().strip_suffix(" bits"))
            .unwrap_or_else(|| panic!("{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn key_sizes_match_cryptsetup() {
        let t = tempfile::tempdir().unwrap();
        for (cipher, integrity) in [
            ("aes-gcm-random", Some("aead")),
            ("aes-xts-plain64", None),
            ("aes-cbc-essiv:sha256", None),
            ("aes-ccm-random", Some("aead")),
        ] {
            let ours = LuksSettings::choose(Some(cipher), integrity).unwrap();
            assert_eq!(
                ours.key_bytes * 8,
                cryptsetup_key_bits(t.path(), cipher, integrity),
                "{cipher} {integrity:?}"
            );
        }
    }

    #[test]
    fn format_writes_the_header_cryptsetup_reads() {
        // Plain dm-crypt settings: formatting them needs no kernel target,
        // so libcryptsetup can format a file here. The AEAD default needs
        // dm-integrity and is exercised by the boot tests.
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("cocos.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let settings = LuksSettings::choose(Some("aes-xts-plain64"), None).unwrap();
        let keys = EphemeralKeys::generate(settings.key_bytes).unwrap();
        format(&img, &settings, &keys).unwrap();

        let out = Command::new("cryptsetup")
            .arg("luksDump")
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success());
        let dump = String::from_utf8_lossy(&out.stdout);
        let has = |needle: &str| {
            assert!(
                dump.lines()
                    .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == needle),
                "no {needle:?} in\n{dump}"
            )
        };
        has("Version: 2");
        has("Label: cocos");
        has("cipher: aes-xts-plain64");
        has("sector: 4096 [bytes]");
        has("Cipher key: 512 bits");
        has("PBKDF: pbkdf2");
        has("Hash: sha256");
        has("Iterations: 1000");
        has("0: luks2");
        has("Metadata area: 16384 [bytes]");
        has("Keyslots area: 4161536 [bytes]");
        has("offset: 4194304 [bytes]");

        // The passphrase opens the keyslot (cryptsetup's own check).
        let keyfile = t.path().join("pass");
        std::fs::write(&keyfile, keys.passphrase.as_ref()).unwrap();
        let st = Command::new("cryptsetup")
            .args(["open", "--test-passphrase", "--key-file"])
            .arg(&keyfile)
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success());
    }

    #[test]
    fn keys_are_fresh_each_time() {
        let a = EphemeralKeys::generate(32).unwrap();
        let b = EphemeralKeys::generate(32).unwrap();
        assert_ne!(*a.volume_key, *b.volume_key);
        assert_ne!(*a.passphrase, *b.passphrase);
        assert_eq!(format!("{a:?}"), "EphemeralKeys(..)");
    }
}
