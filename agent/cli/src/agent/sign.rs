//! Who signs, for which computation: the private key, the computation id
//! (from `--computation` or the manifest's `id`), and the metadata that
//! carries the signature.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cocos_auth::{
    AUTH_METADATA, CanonicalRequest, LEGACY_SIGNATURE_METADATA, LEGACY_USER_ID_METADATA,
    PrivateKey, Role, Rpc, auth_metadata_value,
};
use cocos_manifest::Manifest;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The signing options of `algo`, `data` and `result`.
#[derive(clap::Args, Debug, Clone)]
pub struct SignArgs {
    /// Private key (PEM or DER: PKCS#8, SEC1, PKCS#1) whose public key the
    /// manifest declares for this role.
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The computation id every signature covers (the manifest's `id`).
    #[arg(long, env = "COCOS_COMPUTATION_ID", value_name = "ID")]
    pub computation: Option<String>,
    /// The manifest JSON: its `id` when --computation is absent; the
    /// upload's SHA3-256 is checked against it before anything is sent.
    #[arg(long, env = "COCOS_MANIFEST", value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Sign the Go CLI's constant role string (metadata `signature` and
    /// `user-id`) instead of a request bound to the computation, call and
    /// payload: only for agents configured for legacy authentication. Such
    /// a signature can be replayed by anyone who sees it.
    #[arg(long)]
    pub legacy_auth: bool,
}

/// A loaded signer.
pub struct Signer {
    key: PrivateKey,
    computation_id: Option<String>,
    /// The manifest, when one was given.
    pub manifest: Option<Manifest>,
    legacy: bool,
}

fn load_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let bytes = std::fs::read(path).with_context(|| format!("--manifest {}", path.display()))?;
    Manifest::from_json(&bytes).with_context(|| format!("--manifest {}", path.display()))
}

impl Signer {
    /// Reads the key and the manifest, and settles the computation id.
    /// Every error is a usage error.
    pub fn load(args: &SignArgs) -> anyhow::Result<Self> {
        let bytes =
            std::fs::read(&args.key).with_context(|| format!("--key {}", args.key.display()))?;
        let key = PrivateKey::from_pem_or_der(&bytes)
            .with_context(|| format!("--key {}", args.key.display()))?;
        let manifest = args.manifest.as_deref().map(load_manifest).transpose()?;
        let computation_id = match (&args.computation, &manifest) {
            (Some(id), Some(m)) if *id != m.id => bail!(
                "--computation {id:?} differs from the manifest's id {:?} (COCOS_COMPUTATION_ID may be set)",
                m.id
            ),
            (Some(id), _) => Some(id.clone()),
            (None, Some(m)) => Some(m.id.clone()),
            (None, None) if args.legacy_auth => None,
            (None, None) => bail!(
                "the computation id is needed: give --computation ID (or COCOS_COMPUTATION_ID) or --manifest FILE"
            ),
        };
        if let Some(id) = &computation_id {
            if id.is_empty() || id.len() > cocos_auth::request::MAX_COMPUTATION_ID {
                bail!("computation id of {} bytes (1 to 1024 expected)", id.len());
            }
        }
        Ok(Self {
            key,
            computation_id,
            manifest,
            legacy: args.legacy_auth,
        })
    }

    /// Adds the signature of one call to `metadata`: a signed canonical
    /// request under `cocos-auth`, or with `--legacy-auth` the role
    /// string's signature under `signature` and `user-id`.
    pub fn sign_into(
        &self,
        metadata: &mut MetadataMap,
        rpc: Rpc,
        resource: &str,
        payload: Option<[u8; 32]>,
        requirements: Option<[u8; 32]>,
    ) -> anyhow::Result<()> {
        if self.legacy {
            let role = match rpc {
                Rpc::Algo => Role::AlgorithmProvider,
                Rpc::Data => Role::DataProvider {
                    dataset: resource.to_string(),
                },
                Rpc::Result => Role::Consumer { index: 0 },
            }
            .legacy_string();
            let signature = STANDARD.encode(legacy_signature(&self.key, role)?);
            metadata.insert(LEGACY_SIGNATURE_METADATA, ascii(&signature)?);
            metadata.insert(LEGACY_USER_ID_METADATA, ascii(role)?);
            return Ok(());
        }
        let Some(id) = &self.computation_id else {
            bail!("the computation id is needed: give --computation ID or --manifest FILE");
        };
        let request = CanonicalRequest::new(rpc, id.as_str(), resource, payload, requirements)
            .context("random nonce")?;
        request
            .check_shape()
            .context("the request cannot be signed")?;
        metadata.insert(
            AUTH_METADATA,
            ascii(&auth_metadata_value(&request, &self.key))?,
        );
        Ok(())
    }
}

/// The Go CLI's role-string signature (agent-api §2.4): the key's scheme
/// over the role string, except that ECDSA always signs its SHA-256, which
/// for P-384 differs from the canonical request's SHA-384.
fn legacy_signature(key: &PrivateKey, role: &str) -> anyhow::Result<Vec<u8>> {
    use p384::ecdsa::signature::hazmat::PrehashSigner;
    use sha2::{Digest, Sha256};
    match key {
        PrivateKey::P384(k) => {
            let sig: p384::ecdsa::Signature = k
                .sign_prehash(&Sha256::digest(role.as_bytes()))
                .map_err(|e| anyhow::anyhow!("ECDSA P-384 signature: {e}"))?;
            Ok(sig.to_der().to_bytes().into_vec())
        }
        other => Ok(other.sign(role.as_bytes())),
    }
}

/// A metadata value: printable ASCII only, as gRPC requires.
pub fn ascii(value: &str) -> anyhow::Result<AsciiMetadataValue> {
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        bail!("{value:?} is not printable ASCII, which gRPC metadata cannot carry");
    }
    AsciiMetadataValue::try_from(value).with_context(|| format!("metadata value {value:?}"))
}
