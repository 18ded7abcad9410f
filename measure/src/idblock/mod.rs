//! SEV-SNP ID blocks: the 96-byte ID block a guest owner passes to
//! `SNP_LAUNCH_FINISH` (QEMU `sev-snp-guest,id-block=`) and the 4096-byte
//! ID authentication structure that signs it (`id-auth=`).
//!
//! Source: AMD SEV-SNP Firmware ABI Specification (publication 56860),
//! section 8.18 `SNP_LAUNCH_FINISH` (tables "ID_BLOCK" and "ID_AUTH") and
//! chapter 10 "Digital Signatures" (the ECDSA P-384 public key and
//! signature formats: little-endian, zero-padded to 72 bytes). Signatures
//! are ECDSA P-384 with SHA-384 and RFC 6979 deterministic nonces, so the
//! output is reproducible.
//!
//! ```no_run
//! use cocos_measure::idblock::{IdBlock, IdKey, IdAuth};
//! use cocos_measure::snp::LaunchDigest;
//!
//! let id_key = IdKey::from_pem(&std::fs::read_to_string("id_key.pem")?)?;
//! let block = IdBlock::new(LaunchDigest([0; 48]), [0; 16], [0; 16], 0, 0x30000);
//! let auth = IdAuth::sign(&block, &id_key, None);
//! assert!(auth.verify(&block).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha384};
use thiserror::Error;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::snp::LaunchDigest;

/// `CURVE` value of P-384 in the ABI's public key format (chapter 10).
pub const CURVE_P384: u32 = 2;
/// `ID_KEY_ALGO`/`AUTH_KEY_ALGO` value of ECDSA P-384 with SHA-384.
pub const ALGO_ECDSA_P384_SHA384: u32 = 1;
/// The ID block version this code writes.
pub const ID_BLOCK_VERSION: u32 = 1;
/// sev-snp-measure's default policy: SMT allowed, bit 17 (reserved, must
/// be one), ABI major/minor 0.
pub const DEFAULT_POLICY: u64 = 0x30000;

/// ID_BLOCK (ABI 8.18, table "ID_BLOCK"): 96 bytes, little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IdBlock {
    /// Expected launch digest.
    pub ld: [u8; 48],
    /// Family ID, chosen by the guest owner.
    pub family_id: [u8; 16],
    /// Image ID, chosen by the guest owner.
    pub image_id: [u8; 16],
    /// Version of the structure: 1.
    pub version: U32,
    /// Guest security version number.
    pub guest_svn: U32,
    /// The guest policy the launch must have.
    pub policy: U64,
}

const _: () = assert!(size_of::<IdBlock>() == 96);

impl IdBlock {
    /// An ID block (version 1).
    pub fn new(
        ld: LaunchDigest,
        family_id: [u8; 16],
        image_id: [u8; 16],
        guest_svn: u32,
        policy: u64,
    ) -> Self {
        IdBlock {
            ld: ld.0,
            family_id,
            image_id,
            version: U32::new(ID_BLOCK_VERSION),
            guest_svn: U32::new(guest_svn),
            policy: U64::new(policy),
        }
    }
}

/// ECDSA signature (ABI chapter 10, table "ECDSA signature"): r and s,
/// little-endian, zero-padded to 72 bytes; 0x200 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EcdsaSignature {
    /// r, little-endian.
    pub r: [u8; 72],
    /// s, little-endian.
    pub s: [u8; 72],
    /// Zero.
    pub reserved: [u8; 368],
}

const _: () = assert!(size_of::<EcdsaSignature>() == 0x200);

/// ECDSA public key (ABI chapter 10, table "ECDSA public key"): curve, Qx
/// and Qy little-endian and zero-padded to 72 bytes; 0x404 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EcdsaPublicKey {
    /// [`CURVE_P384`].
    pub curve: U32,
    /// x coordinate, little-endian.
    pub qx: [u8; 72],
    /// y coordinate, little-endian.
    pub qy: [u8; 72],
    /// Zero.
    pub reserved: [u8; 880],
}

const _: () = assert!(size_of::<EcdsaPublicKey>() == 0x404);

impl EcdsaPublicKey {
    /// SHA-384 of the whole 0x404-byte structure: the `ID_KEY_DIGEST` or
    /// `AUTHOR_KEY_DIGEST` of the attestation report.
    pub fn digest(&self) -> [u8; 48] {
        Sha384::digest(self.as_bytes()).into()
    }

    fn verifying_key(&self) -> Result<VerifyingKey, IdBlockError> {
        if self.curve.get() != CURVE_P384 {
            return Err(IdBlockError::Curve(self.curve.get()));
        }
        let mut sec1 = [0u8; 97];
        sec1[0] = 4;
        sec1[1..49].copy_from_slice(&be48(&self.qx)?);
        sec1[49..].copy_from_slice(&be48(&self.qy)?);
        VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| IdBlockError::PublicKey)
    }
}

/// ID_AUTH (ABI 8.18, table "ID_AUTH"): 4096 bytes.
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IdAuth {
    /// Algorithm of the ID key (0x000).
    pub id_key_algo: U32,
    /// Algorithm of the author key (0x004).
    pub auth_key_algo: U32,
    /// Zero (0x008).
    pub reserved1: [u8; 56],
    /// Signature of the ID block by the ID key (0x040).
    pub id_block_sig: EcdsaSignature,
    /// The ID public key (0x240).
    pub id_key: EcdsaPublicKey,
    /// Zero (0x644).
    pub reserved2: [u8; 60],
    /// Signature of `id_key` by the author key (0x680).
    pub id_key_sig: EcdsaSignature,
    /// The author public key (0x880).
    pub author_key: EcdsaPublicKey,
    /// Zero (0xC84).
    pub reserved3: [u8; 892],
}

const _: () = assert!(size_of::<IdAuth>() == 4096);
const _: () = assert!(std::mem::offset_of!(IdAuth, id_block_sig) == 0x40);
const _: () = assert!(std::mem::offset_of!(IdAuth, id_key) == 0x240);
const _: () = assert!(std::mem::offset_of!(IdAuth, id_key_sig) == 0x680);
const _: () = assert!(std::mem::offset_of!(IdAuth, author_key) == 0x880);

/// A P-384 private key used to sign ID blocks.
#[derive(Clone)]
pub struct IdKey {
    key: SigningKey,
}

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdKey")
            .field("public", &hex::encode(self.public_key().qx))
            .finish()
    }
}

/// An ID block or key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdBlockError {
    /// The PEM text is not a P-384 private key.
    #[error("not a P-384 private key in PEM (SEC1 \"EC PRIVATE KEY\" or PKCS#8 \"PRIVATE KEY\")")]
    Pem,
    /// A public key names another curve.
    #[error("public key curve {0}, but SEV-SNP ID keys are P-384 (curve 2)")]
    Curve(u32),
    /// A public key is not a point of P-384.
    #[error("the public key is not a valid P-384 point")]
    PublicKey,
    /// A coordinate or scalar does not fit in 48 bytes.
    #[error("a 72-byte little-endian field has non-zero bytes past 48")]
    Padding,
    /// A signature does not verify.
    #[error("the {0} signature does not verify")]
    Signature(&'static str),
    /// Unknown algorithm.
    #[error("{what} algorithm {value}, but only 1 (ECDSA P-384 with SHA-384) is defined")]
    Algorithm {
        /// Which key.
        what: &'static str,
        /// The value.
        value: u32,
    },
}

impl IdKey {
    /// Reads a P-384 private key from PEM: SEC1 (`EC PRIVATE KEY`, what
    /// `openssl ecparam -genkey` writes) or PKCS#8 (`PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, IdBlockError> {
        use p384::pkcs8::DecodePrivateKey;
        let secret = p384::SecretKey::from_sec1_pem(pem)
            .or_else(|_| p384::SecretKey::from_pkcs8_pem(pem))
            .map_err(|_| IdBlockError::Pem)?;
        Ok(IdKey {
            key: SigningKey::from(&secret),
        })
    }

    /// The public key in the ABI format.
    pub fn public_key(&self) -> EcdsaPublicKey {
        let point = self.key.verifying_key().to_sec1_point(false);
        let mut out = EcdsaPublicKey::new_zeroed();
        out.curve = U32::new(CURVE_P384);
        // An uncompressed SEC1 point is 0x04 ‖ X ‖ Y, big-endian.
        let bytes = point.as_bytes();
        out.qx[..48].copy_from_slice(&le(&bytes[1..49]));
        out.qy[..48].copy_from_slice(&le(&bytes[49..97]));
        out
    }

    /// Signs `message` with ECDSA P-384, SHA-384, RFC 6979 nonce.
    pub fn sign(&self, message: &[u8]) -> EcdsaSignature {
        let sig: Signature = self.key.sign(message);
        let (r, s) = sig.split_bytes();
        let mut out = EcdsaSignature::new_zeroed();
        out.r[..48].copy_from_slice(&le(&r));
        out.s[..48].copy_from_slice(&le(&s));
        out
    }
}

fn le(be: &[u8]) -> Vec<u8> {
    be.iter().rev().copied().collect()
}

/// The 48-byte big-endian value of a 72-byte little-endian field.
fn be48(field: &[u8; 72]) -> Result<[u8; 48], IdBlockError> {
    if field[48..].iter().any(|b| *b != 0) {
        return Err(IdBlockError::Padding);
    }
    let mut out = [0u8; 48];
    for (o, b) in out.iter_mut().zip(field[..48].iter().rev()) {
        *o = *b;
    }
    Ok(out)
}

/// Verifies an ABI-format signature of `message` by `key`.
pub fn verify(
    key: &EcdsaPublicKey,
    message: &[u8],
    sig: &EcdsaSignature,
    what: &'static str,
) -> Result<(), IdBlockError> {
    let vk = key.verifying_key()?;
    let r = be48(&sig.r)?;
    let s = be48(&sig.s)?;
    let sig = Signature::from_scalars(r, s).map_err(|_| IdBlockError::Signature(what))?;
    vk.verify(message, &sig)
        .map_err(|_| IdBlockError::Signature(what))
}

impl IdAuth {
    /// Signs `block` with `id_key`, and `id_key` with `author_key` if given.
    /// Without an author key, the author fields stay zero (QEMU's
    /// `author-key-enabled=off`).
    pub fn sign(block: &IdBlock, id_key: &IdKey, author_key: Option<&IdKey>) -> Self {
        let mut auth = IdAuth::new_zeroed();
        auth.id_key_algo = U32::new(ALGO_ECDSA_P384_SHA384);
        auth.id_key = id_key.public_key();
        auth.id_block_sig = id_key.sign(block.as_bytes());
        if let Some(author) = author_key {
            auth.auth_key_algo = U32::new(ALGO_ECDSA_P384_SHA384);
            auth.author_key = author.public_key();
            auth.id_key_sig = author.sign(auth.id_key.as_bytes());
        }
        auth
    }

    /// Whether an author key is present.
    pub fn has_author_key(&self) -> bool {
        self.author_key.curve.get() != 0
    }

    /// Checks the algorithms and both signatures (the author signature
    /// only when an author key is present).
    pub fn verify(&self, block: &IdBlock) -> Result<(), IdBlockError> {
        if self.id_key_algo.get() != ALGO_ECDSA_P384_SHA384 {
            return Err(IdBlockError::Algorithm {
                what: "ID key",
                value: self.id_key_algo.get(),
            });
        }
        verify(
            &self.id_key,
            block.as_bytes(),
            &self.id_block_sig,
            "ID block",
        )?;
        if self.has_author_key() {
            if self.auth_key_algo.get() != ALGO_ECDSA_P384_SHA384 {
                return Err(IdBlockError::Algorithm {
                    what: "author key",
                    value: self.auth_key_algo.get(),
                });
            }
            verify(
                &self.author_key,
                self.id_key.as_bytes(),
                &self.id_key_sig,
                "ID key",
            )?;
        }
        Ok(())
    }
}
