//! Keys of providers and consumers: public keys as the manifest declares
//! them (DER SubjectPublicKeyInfo, RFC 5280 §4.1.2.7), private keys as the
//! CLI reads them, signing and verification.
//!
//! Signature schemes (the same as the Go CLI's, agent-api.md §2.4, so that
//! its legacy role-string signatures verify):
//!
//! | key | scheme | digest | signature bytes |
//! | --- | --- | --- | --- |
//! | RSA | PKCS#1 v1.5 (RFC 8017 §8.2) | SHA-256 | modulus-sized |
//! | ECDSA P-256 | ECDSA (FIPS 186-5) | SHA-256 | DER `Ecdsa-Sig-Value` (RFC 3279 §2.2.3) |
//! | ECDSA P-384 | ECDSA | SHA-384 (SHA-256 for legacy role strings, as Go signs them) | DER `Ecdsa-Sig-Value` |
//! | Ed25519 | Ed25519 (RFC 8032), pure | — | 64 bytes |

use std::fmt;

use pkcs8::der::pem::LineEnding;
use pkcs8::der::{Decode, pem};
use pkcs8::{DecodePrivateKey, EncodePrivateKey, ObjectIdentifier};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::signature::hazmat::PrehashVerifier;
use rsa::signature::{Signer, Verifier};
use sha2::{Digest, Sha256};
use spki::{DecodePublicKey, EncodePublicKey};

/// rsaEncryption (RFC 8017 appendix C).
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-ecPublicKey (RFC 5480 §2.1.1).
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 (RFC 5480 §2.1.1.1).
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1 (RFC 5480 §2.1.1.1).
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// id-Ed25519 (RFC 8410 §3).
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Why a key could not be read or a signature not made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not DER SubjectPublicKeyInfo at all.
    #[error("not a DER SubjectPublicKeyInfo: {0}")]
    NotSpki(String),
    /// A well-formed key of an algorithm or curve we do not accept.
    #[error("unsupported key algorithm {0} (accepted: RSA, ECDSA P-256/P-384, Ed25519)")]
    Unsupported(String),
    /// The algorithm is known but the key bytes are invalid.
    #[error("invalid {kind} key: {reason}")]
    Invalid {
        /// RSA, ECDSA P-256, ...
        kind: &'static str,
        /// The parser's reason.
        reason: String,
    },
    /// PEM armour that could not be decoded.
    #[error("malformed PEM: {0}")]
    Pem(String),
    /// A PEM block with a label that is not a key of the expected kind.
    #[error("PEM label {0:?} is not a {1}")]
    Label(String, &'static str),
    /// Neither PKCS#8, SEC1 nor PKCS#1.
    #[error("not a private key in PKCS#8, SEC1 or PKCS#1 DER")]
    NotPrivateKey,
    /// Key generation or encoding failed.
    #[error("{0}")]
    Other(String),
}

/// The algorithm of a key, as `keys generate --type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA, 4096-bit when generated.
    Rsa,
    /// ECDSA on P-256 when generated; P-384 keys are read as well.
    Ecdsa,
    /// Ed25519.
    Ed25519,
}

/// DER of a PKCS#8 v1 Ed25519 `PrivateKeyInfo` up to the 32-byte seed
/// (RFC 8410 §7): SEQUENCE, version 0, AlgorithmIdentifier id-Ed25519,
/// OCTET STRING { OCTET STRING (32 bytes) }.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A public key of one of the accepted algorithms.
#[derive(Clone)]
pub enum PublicKey {
    /// RSA.
    Rsa(rsa::PublicKey),
    /// ECDSA over NIST P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// ECDSA over NIST P-384.
    P384(p384::ecdsa::VerifyingKey),
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.kind())
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        match (self.to_spki_der(), other.to_spki_der()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

fn invalid(kind: &'static str, e: impl fmt::Display) -> KeyError {
    KeyError::Invalid {
        kind,
        reason: e.to_string(),
    }
}

impl PublicKey {
    /// Parses DER SubjectPublicKeyInfo, the form of the manifest's `userKey`.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| KeyError::NotSpki(e.to_string()))?;
        let oid = spki.algorithm.oid;
        if oid == OID_RSA {
            rsa::PublicKey::from_public_key_der(der)
                .map(Self::Rsa)
                .map_err(|e| invalid("RSA", e))
        } else if oid == OID_EC {
            let curve = spki
                .algorithm
                .parameters_oid()
                .map_err(|e| invalid("ECDSA", e))?;
            if curve == OID_P256 {
                p256::ecdsa::VerifyingKey::from_public_key_der(der)
                    .map(Self::P256)
                    .map_err(|e| invalid("ECDSA P-256", e))
            } else if curve == OID_P384 {
                p384::ecdsa::VerifyingKey::from_public_key_der(der)
                    .map(Self::P384)
                    .map_err(|e| invalid("ECDSA P-384", e))
            } else {
                Err(KeyError::Unsupported(format!("ECDSA on curve {curve}")))
            }
        } else if oid == OID_ED25519 {
            ed25519_dalek::VerifyingKey::from_public_key_der(der)
                .map(Self::Ed25519)
                .map_err(|e| invalid("Ed25519", e))
        } else {
            Err(KeyError::Unsupported(oid.to_string()))
        }
    }

    /// Parses a `PUBLIC KEY` PEM block, or DER SubjectPublicKeyInfo when
    /// `bytes` is not PEM.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, KeyError> {
        if !looks_like_pem(bytes) {
            return Self::from_spki_der(bytes);
        }
        for (label, der) in pem_blocks(bytes)? {
            if label == "PUBLIC KEY" {
                return Self::from_spki_der(&der);
            }
        }
        Err(KeyError::Label(
            first_label(bytes).unwrap_or_default(),
            "public key (PUBLIC KEY)",
        ))
    }

    /// DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Result<Vec<u8>, KeyError> {
        let doc = match self {
            Self::Rsa(k) => k.to_public_key_der(),
            Self::P256(k) => k.to_public_key_der(),
            Self::P384(k) => k.to_public_key_der(),
            Self::Ed25519(k) => k.to_public_key_der(),
        };
        doc.map(|d| d.into_vec())
            .map_err(|e| KeyError::Other(e.to_string()))
    }

    /// PEM `PUBLIC KEY` (RFC 7468 §13), LF line endings.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let der = self.to_spki_der()?;
        pem::encode_string("PUBLIC KEY", LineEnding::LF, &der)
            .map_err(|e| KeyError::Other(e.to_string()))
    }

    /// Human name of the algorithm: "RSA-4096", "ECDSA P-256", "Ed25519".
    pub fn kind(&self) -> String {
        match self {
            Self::Rsa(k) => format!("RSA-{}", rsa::traits::PublicKeyParts::n_bits_precision(k)),
            Self::P256(_) => "ECDSA P-256".into(),
            Self::P384(_) => "ECDSA P-384".into(),
            Self::Ed25519(_) => "Ed25519".into(),
        }
    }

    /// Whether `signature` is this key's signature of `message` under the
    /// scheme of the table in the module documentation.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Rsa(k) => {
                let Ok(sig) = rsa::pkcs1v15::Signature::try_from(signature) else {
                    return false;
                };
                rsa::pkcs1v15::VerifyingKey::<Sha256>::new(k.clone())
                    .verify(message, &sig)
                    .is_ok()
            }
            Self::P256(k) => p256::ecdsa::DerSignature::from_bytes(signature)
                .is_ok_and(|sig| k.verify(message, &sig).is_ok()),
            Self::P384(k) => p384::ecdsa::DerSignature::from_bytes(signature)
                .is_ok_and(|sig| k.verify(message, &sig).is_ok()),
            Self::Ed25519(k) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| k.verify(message, &sig).is_ok()),
        }
    }

    /// Verification as the Go CLI signs role strings (agent-api.md §2.4):
    /// like [`verify`](Self::verify), except that ECDSA on any curve signs
    /// SHA-256 of the message.
    pub fn verify_legacy(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::P384(k) => p384::ecdsa::DerSignature::from_bytes(signature)
                .is_ok_and(|sig| k.verify_prehash(&Sha256::digest(message), &sig).is_ok()),
            _ => self.verify(message, signature),
        }
    }
}

/// A private key, for signing requests.
pub enum PrivateKey {
    /// RSA.
    Rsa(Box<rsa::PrivateKey>),
    /// ECDSA over NIST P-256.
    P256(p256::ecdsa::SigningKey),
    /// ECDSA over NIST P-384.
    P384(p384::ecdsa::SigningKey),
    /// Ed25519.
    Ed25519(ed25519_dalek::SigningKey),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({})", self.public().kind())
    }
}

impl PrivateKey {
    /// Reads a private key from PEM or DER. PEM labels: `PRIVATE KEY`
    /// (PKCS#8 of any accepted algorithm, or PKCS#1 RSA as the Go CLI
    /// writes it under that label), `EC PRIVATE KEY` (SEC1, RFC 5915) and
    /// `RSA PRIVATE KEY` (PKCS#1, RFC 8017 appendix A.1.2). Other blocks,
    /// such as the `EC PARAMETERS` that `openssl ecparam -genkey` writes
    /// first, are skipped. DER is tried as PKCS#8, SEC1, then PKCS#1.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, KeyError> {
        if !looks_like_pem(bytes) {
            return Self::from_der(bytes);
        }
        for (label, der) in pem_blocks(bytes)? {
            match label.as_str() {
                "PRIVATE KEY" => {
                    return Self::from_pkcs8_der(&der).or_else(|e| {
                        // The Go CLI's RSA keys: PKCS#1 under a PKCS#8 label.
                        rsa::PrivateKey::from_pkcs1_der(&der)
                            .map(|k| Self::Rsa(Box::new(k)))
                            .map_err(|_| e)
                    });
                }
                "EC PRIVATE KEY" => return Self::from_sec1_der(&der),
                "RSA PRIVATE KEY" => {
                    return rsa::PrivateKey::from_pkcs1_der(&der)
                        .map(|k| Self::Rsa(Box::new(k)))
                        .map_err(|e| invalid("RSA", e));
                }
                _ => continue,
            }
        }
        Err(KeyError::Label(
            first_label(bytes).unwrap_or_default(),
            "private key (PRIVATE KEY, EC PRIVATE KEY, RSA PRIVATE KEY)",
        ))
    }

    fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        if pkcs8::PrivateKeyInfoRef::from_der(der).is_ok() {
            return Self::from_pkcs8_der(der);
        }
        if sec1::EcPrivateKey::from_der(der).is_ok() {
            return Self::from_sec1_der(der);
        }
        rsa::PrivateKey::from_pkcs1_der(der)
            .map(|k| Self::Rsa(Box::new(k)))
            .map_err(|_| KeyError::NotPrivateKey)
    }

    /// PKCS#8 `PrivateKeyInfo` (RFC 5208) DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = pkcs8::PrivateKeyInfoRef::from_der(der).map_err(|_| KeyError::NotPrivateKey)?;
        let oid = info.algorithm.oid;
        if oid == OID_RSA {
            rsa::PrivateKey::from_pkcs8_der(der)
                .map(|k| Self::Rsa(Box::new(k)))
                .map_err(|e| invalid("RSA", e))
        } else if oid == OID_EC {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|e| invalid("ECDSA", e))?;
            if curve == OID_P256 {
                p256::ecdsa::SigningKey::from_pkcs8_der(der)
                    .map(Self::P256)
                    .map_err(|e| invalid("ECDSA P-256", e))
            } else if curve == OID_P384 {
                p384::ecdsa::SigningKey::from_pkcs8_der(der)
                    .map(Self::P384)
                    .map_err(|e| invalid("ECDSA P-384", e))
            } else {
                Err(KeyError::Unsupported(format!("ECDSA on curve {curve}")))
            }
        } else if oid == OID_ED25519 {
            ed25519_dalek::SigningKey::from_pkcs8_der(der)
                .map(Self::Ed25519)
                .map_err(|e| invalid("Ed25519", e))
        } else {
            Err(KeyError::Unsupported(oid.to_string()))
        }
    }

    /// SEC1 `ECPrivateKey` (RFC 5915) DER. The curve comes from the
    /// parameters, or from the key length when they are absent.
    pub fn from_sec1_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = sec1::EcPrivateKey::from_der(der).map_err(|e| invalid("ECDSA", e))?;
        let curve = key.parameters.and_then(|p| p.named_curve());
        let p256 = curve == Some(OID_P256) || (curve.is_none() && key.private_key.len() == 32);
        let p384 = curve == Some(OID_P384) || (curve.is_none() && key.private_key.len() == 48);
        if p256 {
            p256::ecdsa::SigningKey::from_slice(key.private_key)
                .map(Self::P256)
                .map_err(|e| invalid("ECDSA P-256", e))
        } else if p384 {
            p384::ecdsa::SigningKey::from_slice(key.private_key)
                .map(Self::P384)
                .map_err(|e| invalid("ECDSA P-384", e))
        } else {
            Err(KeyError::Unsupported(match curve {
                Some(c) => format!("ECDSA on curve {c}"),
                None => "ECDSA on an unnamed curve".into(),
            }))
        }
    }

    /// A fresh key from the operating system's generator: RSA 4096,
    /// ECDSA P-256 or Ed25519 (the sizes of the Go CLI's `keys`).
    pub fn generate(kind: KeyType) -> Result<Self, KeyError> {
        let rng_err = |e: getrandom::Error| KeyError::Other(format!("random generator: {e}"));
        match kind {
            KeyType::Ed25519 => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(rng_err)?;
                Ok(Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed)))
            }
            KeyType::Ecdsa => loop {
                // A uniformly random scalar: retry the (2^-32 likely) value
                // outside [1, n).
                let mut scalar = [0u8; 32];
                getrandom::fill(&mut scalar).map_err(rng_err)?;
                if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&scalar) {
                    return Ok(Self::P256(k));
                }
            },
            KeyType::Rsa => rsa::PrivateKey::new(&mut getrandom::SysRng, 4096)
                .map(|k| Self::Rsa(Box::new(k)))
                .map_err(|e| KeyError::Other(format!("RSA key generation: {e}"))),
        }
    }

    /// PKCS#8 PEM (`PRIVATE KEY`, RFC 7468 §10) for every algorithm, LF
    /// line endings. OpenSSL and the Go CLI both read it.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let pem = match self {
            Self::Rsa(k) => k.to_pkcs8_pem(LineEnding::LF),
            Self::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
            Self::P384(k) => k.to_pkcs8_pem(LineEnding::LF),
            Self::Ed25519(k) => {
                // PKCS#8 v1 (RFC 8410 §7): OpenSSL 3.0 cannot read the v2
                // form with the public key that ed25519-dalek writes.
                let mut der = ED25519_PKCS8_V1_PREFIX.to_vec();
                der.extend_from_slice(k.as_bytes());
                let pem = pem::encode_string("PRIVATE KEY", LineEnding::LF, &der);
                der.fill(0);
                return pem.map_err(|e| KeyError::Other(e.to_string()));
            }
        };
        pem.map(|s| s.to_string())
            .map_err(|e| KeyError::Other(e.to_string()))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        match self {
            Self::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            Self::P256(k) => PublicKey::P256(*k.verifying_key()),
            Self::P384(k) => PublicKey::P384(*k.verifying_key()),
            Self::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
        }
    }

    /// Signs `message` under the scheme of the module documentation's table.
    /// Deterministic: RSA PKCS#1 v1.5 has no randomness and ECDSA uses
    /// RFC 6979 nonces.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Rsa(k) => {
                let key = rsa::pkcs1v15::SigningKey::<Sha256>::new((**k).clone());
                let sig: rsa::pkcs1v15::Signature = key.sign(message);
                Box::<[u8]>::from(sig).into_vec()
            }
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_der().to_bytes().into_vec()
            }
            Self::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign(message);
                sig.to_der().to_bytes().into_vec()
            }
            Self::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
        }
    }
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

fn first_label(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let end = text[start..].find("-----")?;
    Some(text[start..start + end].to_string())
}

/// Every PEM block in `bytes`, in order, with its label; text between the
/// blocks (as `openssl` writes before them) is ignored.
fn pem_blocks(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, KeyError> {
    let text = std::str::from_utf8(bytes).map_err(|_| KeyError::Pem("not UTF-8 text".into()))?;
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(begin) = rest.find("-----BEGIN ") {
        let block = &rest[begin..];
        let label_end = block["-----BEGIN ".len()..]
            .find("-----")
            .ok_or_else(|| KeyError::Pem("unterminated BEGIN line".into()))?;
        let label = &block["-----BEGIN ".len().."-----BEGIN ".len() + label_end];
        let end_line = format!("-----END {label}-----");
        let end = block
            .find(&end_line)
            .ok_or_else(|| KeyError::Pem(format!("no {end_line:?}")))?
            + end_line.len();
        let (label, der) =
            pem::decode_vec(&block.as_bytes()[..end]).map_err(|e| KeyError::Pem(e.to_string()))?;
        blocks.push((label.to_string(), der));
        rest = &block[end..];
    }
    Ok(blocks)
}
