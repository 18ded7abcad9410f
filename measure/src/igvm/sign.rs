//! Embedding a signed SNP ID block in an IGVM file
//! (`IGVM_VHT_SNP_ID_BLOCK`), as COCONUT-SVSM's `igvmmeasure sign` does,
//! and checking an embedded one.
//!
//! The IGVM encoding (`igvm_defs::IGVM_VHS_SNP_ID_BLOCK`) carries the ID
//! block fields and the ID_AUTH keys and signatures; its public keys have
//! an extra reserved `u32` after `curve`, which the author signature does
//! not cover: the signed message is the ABI's 0x404-byte key structure.
//! The policy of the ID block is the file's SNP guest policy.

use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmRevision};
use igvm_defs::{IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY, IGVM_VHS_SNP_ID_BLOCK_SIGNATURE};
use zerocopy::FromZeros;
use zerocopy::little_endian::U32;

use super::{IgvmError, IgvmIdBlock, IgvmImage, Platform, Semantics};
use crate::idblock::{
    ALGO_ECDSA_P384_SHA384, EcdsaPublicKey, EcdsaSignature, IdAuth, IdBlock, IdBlockError, IdKey,
};
use crate::snp::LaunchDigest;

/// What goes into the ID block besides the digest and the policy.
#[derive(Debug, Clone)]
pub struct SignOptions<'a> {
    /// Key that signs the ID block.
    pub id_key: &'a IdKey,
    /// Key that signs the ID key, if any.
    pub author_key: Option<&'a IdKey>,
    /// Family ID.
    pub family_id: [u8; 16],
    /// Image ID.
    pub image_id: [u8; 16],
    /// Guest SVN.
    pub guest_svn: u32,
    /// How the digest is computed.
    pub semantics: Semantics,
}

/// The signed file and what was embedded.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The new IGVM file (revision 1, as igvmmeasure writes).
    pub file: Vec<u8>,
    /// The ID block.
    pub id_block: IdBlock,
    /// The ID authentication structure (for QEMU's `id-auth=`).
    pub id_auth: Box<IdAuth>,
}

/// Signs `image`: computes its SEV-SNP digest, builds and signs the ID
/// block with the file's guest policy, and appends the ID block directive
/// (replacing an existing one).
pub fn sign(image: &IgvmImage, opts: &SignOptions<'_>) -> Result<Signed, IgvmError> {
    let mask = image.compatibility_mask(Platform::SevSnp)?;
    let policy = image.snp_guest_policy()?.ok_or(IgvmError::NoGuestPolicy)?;
    let ld = image.snp_launch_digest(opts.semantics, false)?;
    let block = IdBlock::new(ld, opts.family_id, opts.image_id, opts.guest_svn, policy);
    let auth = Box::new(IdAuth::sign(&block, opts.id_key, opts.author_key));

    let file = image.file();
    let mut directives: Vec<IgvmDirectiveHeader> = file
        .directives()
        .iter()
        .filter(|d| !matches!(d, IgvmDirectiveHeader::SnpIdBlock { compatibility_mask, .. } if compatibility_mask & mask != 0))
        .cloned()
        .collect();
    directives.push(IgvmDirectiveHeader::SnpIdBlock {
        compatibility_mask: mask,
        author_key_enabled: u8::from(opts.author_key.is_some()),
        reserved: [0; 3],
        ld: block.ld,
        family_id: block.family_id,
        image_id: block.image_id,
        version: block.version.get(),
        guest_svn: block.guest_svn.get(),
        id_key_algorithm: ALGO_ECDSA_P384_SHA384,
        // igvmmeasure writes 1 here even without an author key.
        author_key_algorithm: ALGO_ECDSA_P384_SHA384,
        id_key_signature: Box::new(igvm_signature(&auth.id_block_sig)),
        id_public_key: Box::new(igvm_public_key(&auth.id_key)),
        author_key_signature: Box::new(igvm_signature(&auth.id_key_sig)),
        author_public_key: Box::new(igvm_public_key(&auth.author_key)),
    });
    let signed = IgvmFile::new(
        IgvmRevision::V1,
        file.platforms().to_vec(),
        file.initializations().to_vec(),
        directives,
    )
    .map_err(IgvmError::Serialize)?;
    let mut out = Vec::new();
    signed.serialize(&mut out).map_err(IgvmError::Serialize)?;
    Ok(Signed {
        file: out,
        id_block: block,
        id_auth: auth,
    })
}

fn igvm_signature(sig: &EcdsaSignature) -> IGVM_VHS_SNP_ID_BLOCK_SIGNATURE {
    IGVM_VHS_SNP_ID_BLOCK_SIGNATURE {
        r_comp: sig.r,
        s_comp: sig.s,
    }
}

fn igvm_public_key(key: &EcdsaPublicKey) -> IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
    IGVM_VHS_SNP_ID_BLOCK_PUBLIC_KEY {
        curve: key.curve.get(),
        reserved: 0,
        qx: key.qx,
        qy: key.qy,
    }
}

fn abi_public_key(curve: u32, qx: &[u8; 72], qy: &[u8; 72]) -> EcdsaPublicKey {
    let mut k = EcdsaPublicKey::new_zeroed();
    k.curve = U32::new(curve);
    k.qx = *qx;
    k.qy = *qy;
    k
}

fn abi_signature(r: &[u8; 72], s: &[u8; 72]) -> EcdsaSignature {
    let mut sig = EcdsaSignature::new_zeroed();
    sig.r = *r;
    sig.s = *s;
    sig
}

impl IgvmIdBlock {
    /// The ID block as `SNP_LAUNCH_FINISH` receives it, with `policy`.
    pub fn id_block(&self, policy: u64) -> IdBlock {
        let mut b = IdBlock::new(
            LaunchDigest(self.ld),
            self.family_id,
            self.image_id,
            self.guest_svn,
            policy,
        );
        b.version = U32::new(self.version);
        b
    }

    /// The ID_AUTH structure a loader builds from the directive.
    pub fn id_auth(&self) -> IdAuth {
        let mut auth = IdAuth::new_zeroed();
        auth.id_key_algo = U32::new(self.id_key_algorithm);
        auth.id_block_sig = abi_signature(&self.id_key_signature.0, &self.id_key_signature.1);
        auth.id_key = abi_public_key(
            self.id_public_key.0,
            &self.id_public_key.1,
            &self.id_public_key.2,
        );
        if self.author_key_enabled {
            auth.auth_key_algo = U32::new(self.author_key_algorithm);
            auth.id_key_sig =
                abi_signature(&self.author_key_signature.0, &self.author_key_signature.1);
            auth.author_key = abi_public_key(
                self.author_public_key.0,
                &self.author_public_key.1,
                &self.author_public_key.2,
            );
        }
        auth
    }

    /// Verifies the signatures over the ID block built with `policy`.
    pub fn verify(&self, policy: u64) -> Result<(), IdBlockError> {
        self.id_auth().verify(&self.id_block(policy))
    }
}
