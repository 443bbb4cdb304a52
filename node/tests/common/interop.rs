//! Interop validator keys, as `lodestar dev` uses them (test helper shared by the unit tests of
//! `dvnode::eth` and `tests/lodestar_roots.rs`).
//!
//! `sk_i = int.from_bytes(sha256(i as 32-byte little endian), 'little') mod r`.

use blst::min_pk::{PublicKey, SecretKey, Signature};
use sha2::{Digest, Sha256};

/// The Ethereum proof-of-possession BLS ciphersuite.
pub const BLS_DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// The interop secret key of validator `index`.
pub fn interop_secret_key(index: u64) -> SecretKey {
    let mut preimage = [0u8; 32];
    preimage[..8].copy_from_slice(&index.to_le_bytes());
    let digest = Sha256::digest(preimage);
    let mut scalar = blst::blst_scalar::default();
    let mut big_endian = [0u8; 32];
    // SAFETY: `scalar` and `big_endian` are valid, exclusively borrowed outputs of the sizes
    // blst expects; `digest` is 32 readable bytes. `blst_scalar_from_le_bytes` reduces mod r.
    unsafe {
        blst::blst_scalar_from_le_bytes(&mut scalar, digest.as_ptr(), digest.len());
        blst::blst_bendian_from_scalar(big_endian.as_mut_ptr(), &scalar);
    }
    SecretKey::from_bytes(&big_endian).expect("interop secret keys are non-zero and below r")
}

/// The interop public key of validator `index`.
pub fn interop_public_key(index: u64) -> PublicKey {
    interop_secret_key(index).sk_to_pk()
}

/// Signs a signing root with the interop key of validator `index`.
pub fn interop_sign(index: u64, signing_root: &[u8; 32]) -> Signature {
    interop_secret_key(index).sign(signing_root, BLS_DST, &[])
}
