//! Feldman verifiable secret sharing (VSS) and Schnorr proofs of knowledge on BLS12-381, the
//! building blocks of the distributed key generation ([`crate::dkg`]).
//!
//! A dealer draws a random polynomial `f(x) = a_0 + a_1 x + … + a_{t−1} x^{t−1}` over Fr
//! ([`Dealing`]), publishes the Feldman commitments `C_k = a_k·G` in G1 ([`Commitments`]) and hands
//! node `i` (1-based) the share `f(i)`. Anyone holding the commitments checks a share with
//! `f(i)·G == Σ_k C_k·i^k` ([`Commitments::verify_share`]), and computes every node's public share
//! `Σ_k C_k·i^k` ([`Commitments::public_share`]) without any secret. Summing the dealings of all
//! nodes (shares in Fr, commitments point-wise in G1) yields a Shamir sharing of `Σ a_0` whose
//! public key `Σ C_0` nobody ever held the secret of.
//!
//! [`Proof`] is a Schnorr proof of knowledge of `a_0` bound to a caller-chosen context (the DKG
//! binds the definition hash, the dealer and the validator), so a dealer cannot copy or cancel
//! another dealer's constant term (rogue-key attack).
//!
//! All arithmetic is blst's (Fr routines, point additions and Pippenger multi-scalar
//! multiplication shared with [`super::tbls`]).

use blst::{blst_p1, blst_p1_affine, blst_scalar};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use super::tbls::{eval_polynomial, g1_msm, Fr, PublicKey, SecretKey, SCALAR_BITS};

/// Size of a compressed G1 point.
pub const G1_BYTES: usize = 48;
/// Size of a serialized scalar.
pub const SCALAR_BYTES: usize = 32;
/// Size of a serialized [`Proof`]: the commitment `R` and the response `z`.
pub const PROOF_BYTES: usize = G1_BYTES + SCALAR_BYTES;

/// Domain of the Schnorr challenge hash.
const POK_DOMAIN: &[u8] = b"dvlab-dkg-pok-v1";

/// Why VSS data was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VssError {
    /// The commitments are not `t` points of 48 bytes.
    #[error("expected {expected} bytes of commitments ({t} points), found {found}")]
    CommitmentLength {
        /// Expected byte length.
        expected: usize,
        /// Threshold (number of points).
        t: usize,
        /// Byte length found.
        found: usize,
    },
    /// A commitment is not a valid G1 point of the prime-order subgroup (or is the identity).
    #[error("commitment {k} is not a valid G1 point ({reason})")]
    InvalidCommitment {
        /// Coefficient index.
        k: usize,
        /// blst's error.
        reason: String,
    },
    /// The proof has the wrong size or an invalid point or scalar.
    #[error("malformed proof of knowledge: {0}")]
    MalformedProof(String),
}

/// A dealer's secret polynomial. Its coefficients are zeroized when it is dropped.
pub struct Dealing {
    coeffs: Vec<Fr>,
}

impl Dealing {
    /// Draws a random polynomial of degree `t − 1` whose shares for nodes `1..=n` are all valid
    /// (non-zero) keys and whose coefficients are all non-zero (redrawn otherwise, which happens
    /// with probability about `n·2^-255`).
    ///
    /// # Panics
    /// If `t` is 0.
    pub fn random<R: RngCore + CryptoRng>(t: usize, n: usize, rng: &mut R) -> Self {
        assert!(t >= 1, "a dealing needs threshold t >= 1");
        loop {
            let coeffs: Vec<Fr> = (0..t).map(|_| Fr::random(rng)).collect();
            let dealing = Dealing { coeffs };
            let nonzero_coeffs = dealing.coeffs.iter().all(|c| c.to_secret_key().is_some());
            if nonzero_coeffs && (1..=n as u64).all(|i| dealing.share(i).is_some()) {
                return dealing;
            }
        }
    }

    /// The threshold `t` (number of coefficients).
    pub fn threshold(&self) -> usize {
        self.coeffs.len()
    }

    /// The Feldman commitments `a_k·G`.
    pub fn commitments(&self) -> Commitments {
        Commitments(
            self.coeffs
                .iter()
                .map(|c| {
                    c.to_secret_key()
                        .expect("coefficients are non-zero by construction")
                        .sk_to_pk()
                })
                .collect(),
        )
    }

    /// Node `index`'s share `f(index)` (1-based), or `None` if it is zero.
    pub fn share(&self, index: u64) -> Option<SecretKey> {
        eval_polynomial(&self.coeffs, index).to_secret_key()
    }

    /// Proves knowledge of the constant term `a_0` in `context`.
    pub fn prove<R: RngCore + CryptoRng>(&self, context: &[u8], rng: &mut R) -> Proof {
        let c0 = self.coeffs[0]
            .to_secret_key()
            .expect("coefficients are non-zero by construction")
            .sk_to_pk();
        loop {
            let k = Fr::random(rng);
            let Some(k_key) = k.to_secret_key() else {
                continue;
            };
            let r = k_key.sk_to_pk();
            let c = challenge(context, &c0, &r);
            let z = k.add(&c.mul(&self.coeffs[0]));
            return Proof {
                r,
                z: z.to_scalar(),
            };
        }
    }
}

/// Feldman commitments `C_0 … C_{t−1}` of one dealing (or a sum of dealings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commitments(Vec<PublicKey>);

impl Commitments {
    /// Parses `t` concatenated compressed points, each checked to be a non-identity element of
    /// the G1 subgroup.
    pub fn from_bytes(bytes: &[u8], t: usize) -> Result<Self, VssError> {
        if t == 0 || bytes.len() != t * G1_BYTES {
            return Err(VssError::CommitmentLength {
                expected: t * G1_BYTES,
                t,
                found: bytes.len(),
            });
        }
        bytes
            .chunks_exact(G1_BYTES)
            .enumerate()
            .map(|(k, b)| {
                PublicKey::key_validate(b).map_err(|e| VssError::InvalidCommitment {
                    k,
                    reason: format!("{e:?}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Commitments)
    }

    /// The concatenated compressed points.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|p| p.to_bytes()).collect()
    }

    /// The threshold `t` (number of points).
    pub fn threshold(&self) -> usize {
        self.0.len()
    }

    /// `C_0`: the public key of the shared secret.
    pub fn public_key(&self) -> PublicKey {
        self.0[0]
    }

    /// Node `index`'s public share `Σ_k C_k·index^k` (1-based index).
    pub fn public_share(&self, index: u64) -> PublicKey {
        if self.0.len() == 1 {
            return self.0[0];
        }
        let points: Vec<blst_p1_affine> = self.0.iter().map(|p| (*p).into()).collect();
        to_public_key(&g1_msm(
            &points,
            &powers_bytes(index, self.0.len()),
            SCALAR_BITS,
        ))
    }

    /// Whether `share` is node `index`'s share of the committed polynomial.
    pub fn verify_share(&self, index: u64, share: &SecretKey) -> bool {
        share.sk_to_pk() == self.public_share(index)
    }

    /// Point-wise sum of several commitments of the same threshold (the commitments of the sum
    /// of the dealings). `None` if `all` is empty or the thresholds differ.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Commitments>) -> Option<Commitments> {
        let mut iter = all.into_iter();
        let first = iter.next()?;
        let mut acc: Vec<blst_p1> = first
            .0
            .iter()
            .map(|p| {
                let a: blst_p1_affine = (*p).into();
                let mut out = blst_p1::default();
                // SAFETY: valid pointers to blst point values.
                unsafe { blst::blst_p1_from_affine(&mut out, &a) };
                out
            })
            .collect();
        for c in iter {
            if c.0.len() != acc.len() {
                return None;
            }
            for (sum, p) in acc.iter_mut().zip(&c.0) {
                let a: blst_p1_affine = (*p).into();
                let prev = *sum;
                // SAFETY: valid pointers to blst point values; `out` may not alias the inputs
                // in the Rust sense, so the previous sum is copied first.
                unsafe { blst::blst_p1_add_or_double_affine(sum, &prev, &a) };
            }
        }
        Some(Commitments(acc.iter().map(to_public_key).collect()))
    }
}

/// Checks the shares `shares[j]` of node `index` against `commitments[j]` for every `j` at once,
/// with one multi-scalar multiplication over a random linear combination:
/// `Σ_j ρ_j (Σ_k C_jk·index^k − s_j·G) == O` for random 64-bit `ρ_j`. On failure each share is
/// checked on its own and the position of the first bad one is returned.
///
/// # Panics
/// If the slices differ in length.
pub fn verify_shares(
    commitments: &[Commitments],
    index: u64,
    shares: &[SecretKey],
) -> Result<(), usize> {
    assert_eq!(commitments.len(), shares.len());
    if commitments.is_empty() {
        return Ok(());
    }
    let mut rng = rand::thread_rng();
    let mut points: Vec<blst_p1_affine> = Vec::new();
    let mut scalars: Vec<u8> = Vec::new();
    let mut secret_sum = Fr::zero();
    for (c, s) in commitments.iter().zip(shares) {
        let rho = Fr::from_u64(rng.next_u64() | 1);
        let mut power = Fr::from_u64(1);
        let x = Fr::from_u64(index);
        for p in &c.0 {
            points.push((*p).into());
            scalars.extend_from_slice(&rho.mul(&power).to_scalar().b);
            power = power.mul(&x);
        }
        secret_sum = secret_sum.add(&rho.mul(&Fr::from_secret_key(s)));
    }
    // Subtract (Σ ρ_j s_j)·G.
    // SAFETY: blst returns a pointer to its static generator.
    points.push(unsafe { *blst::blst_p1_affine_generator() });
    scalars.extend_from_slice(&Fr::zero().sub(&secret_sum).to_scalar().b);
    let total = g1_msm(&points, &scalars, SCALAR_BITS);
    // SAFETY: valid pointer to a blst point.
    if unsafe { blst::blst_p1_is_inf(&total) } {
        return Ok(());
    }
    match commitments
        .iter()
        .zip(shares)
        .position(|(c, s)| !c.verify_share(index, s))
    {
        Some(bad) => Err(bad),
        // The combination failed but no single share does: impossible for honest arithmetic;
        // report the first share rather than accept.
        None => Err(0),
    }
}

/// Sums shares in Fr (a node's share of the summed dealings). `None` if the sum is zero.
pub fn sum_shares<'a>(shares: impl IntoIterator<Item = &'a SecretKey>) -> Option<SecretKey> {
    let mut acc = Fr::zero();
    for s in shares {
        acc = acc.add(&Fr::from_secret_key(s));
    }
    acc.to_secret_key()
}

/// A Schnorr proof of knowledge of the discrete logarithm of a G1 point in a context:
/// `R = k·G`, `z = k + c·a_0` with `c = H(context, C_0, R)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    r: PublicKey,
    z: blst_scalar,
}

impl Proof {
    /// `R` (48 bytes compressed) followed by `z` (32 bytes big-endian).
    pub fn to_bytes(&self) -> [u8; PROOF_BYTES] {
        let mut out = [0u8; PROOF_BYTES];
        out[..G1_BYTES].copy_from_slice(&self.r.to_bytes());
        let mut be = [0u8; SCALAR_BYTES];
        // SAFETY: valid pointers; 32-byte output buffer.
        unsafe { blst::blst_bendian_from_scalar(be.as_mut_ptr(), &self.z) };
        out[G1_BYTES..].copy_from_slice(&be);
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes) output, checking `R` is a valid non-identity point
    /// and `z` a canonical scalar.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VssError> {
        if bytes.len() != PROOF_BYTES {
            return Err(VssError::MalformedProof(format!(
                "expected {PROOF_BYTES} bytes, found {}",
                bytes.len()
            )));
        }
        let r = PublicKey::key_validate(&bytes[..G1_BYTES])
            .map_err(|e| VssError::MalformedProof(format!("R is not a valid point ({e:?})")))?;
        let mut z = blst_scalar::default();
        // SAFETY: 32 readable bytes; valid output.
        unsafe { blst::blst_scalar_from_bendian(&mut z, bytes[G1_BYTES..].as_ptr()) };
        // SAFETY: valid pointer.
        if !unsafe { blst::blst_scalar_fr_check(&z) } {
            return Err(VssError::MalformedProof(
                "z is not below the group order".into(),
            ));
        }
        Ok(Proof { r, z })
    }

    /// Verifies the proof for the constant-term commitment `c0` in `context`:
    /// `z·G − c·C_0 == R`.
    pub fn verify(&self, c0: &PublicKey, context: &[u8]) -> bool {
        let c = challenge(context, c0, &self.r);
        // SAFETY: blst returns a pointer to its static generator.
        let g = unsafe { *blst::blst_p1_affine_generator() };
        let points = [g, (*c0).into()];
        let mut scalars = Vec::with_capacity(64);
        scalars.extend_from_slice(&self.z.b);
        scalars.extend_from_slice(&Fr::zero().sub(&c).to_scalar().b);
        to_public_key(&g1_msm(&points, &scalars, SCALAR_BITS)) == self.r
    }
}

/// The Fiat–Shamir challenge `H(domain, context, C_0, R)` reduced into Fr from 64 bytes of
/// SHA-256 output (bias < 2^-250).
fn challenge(context: &[u8], c0: &PublicKey, r: &PublicKey) -> Fr {
    let mut wide = [0u8; 64];
    for (half, out) in wide.chunks_exact_mut(32).enumerate() {
        let mut h = Sha256::new();
        h.update(POK_DOMAIN);
        h.update([half as u8]);
        h.update((context.len() as u64).to_le_bytes());
        h.update(context);
        h.update(c0.to_bytes());
        h.update(r.to_bytes());
        out.copy_from_slice(&h.finalize());
    }
    let mut s = blst_scalar::default();
    // SAFETY: 64 readable bytes; valid output.
    unsafe { blst::blst_scalar_from_le_bytes(&mut s, wide.as_ptr(), wide.len()) };
    Fr::from_scalar(&s)
}

/// `1, x, x², …, x^{count−1}` as concatenated 32-byte little-endian scalars.
fn powers_bytes(x: u64, count: usize) -> Vec<u8> {
    let x = Fr::from_u64(x);
    let mut power = Fr::from_u64(1);
    let mut out = Vec::with_capacity(32 * count);
    for _ in 0..count {
        out.extend_from_slice(&power.to_scalar().b);
        power = power.mul(&x);
    }
    out
}

fn to_public_key(p: &blst_p1) -> PublicKey {
    let mut affine = blst_p1_affine::default();
    // SAFETY: valid pointers to blst point values.
    unsafe { blst::blst_p1_to_affine(&mut affine, p) };
    PublicKey::from(affine)
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;
    use crate::keys::tbls;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(11)
    }

    #[test]
    fn shares_verify_and_interpolate_to_the_committed_secret() {
        let mut rng = rng();
        let (n, t) = (5, 3);
        let d = Dealing::random(t, n, &mut rng);
        let c = d.commitments();
        assert_eq!(c.threshold(), t);
        let shares: Vec<SecretKey> = (1..=n as u64).map(|i| d.share(i).unwrap()).collect();
        for (i, s) in shares.iter().enumerate() {
            let index = i as u64 + 1;
            assert!(c.verify_share(index, s));
            assert_eq!(c.public_share(index), s.sk_to_pk());
            assert!(
                !c.verify_share(index + 1, s),
                "share {index} checked as another index"
            );
        }
        let indexed: Vec<(u64, SecretKey)> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, s.clone()))
            .collect();
        let secret = tbls::recover_secret(&indexed[1..4], t).unwrap();
        assert_eq!(secret.sk_to_pk(), c.public_key());
        let parsed = Commitments::from_bytes(&c.to_bytes(), t).unwrap();
        assert_eq!(parsed, c);
    }

    #[test]
    fn batch_share_check_finds_the_bad_share() {
        let mut rng = rng();
        let dealings: Vec<Dealing> = (0..6).map(|_| Dealing::random(3, 4, &mut rng)).collect();
        let commitments: Vec<Commitments> = dealings.iter().map(Dealing::commitments).collect();
        let mut shares: Vec<SecretKey> = dealings.iter().map(|d| d.share(2).unwrap()).collect();
        assert_eq!(verify_shares(&commitments, 2, &shares), Ok(()));
        assert!(verify_shares(&commitments, 3, &shares).is_err());
        shares[4] = dealings[4].share(3).unwrap();
        assert_eq!(verify_shares(&commitments, 2, &shares), Err(4));
        assert_eq!(verify_shares(&[], 2, &[]), Ok(()));
    }

    #[test]
    fn sum_of_dealings_is_a_sharing_of_the_sum() {
        let mut rng = rng();
        let (n, t) = (4, 3);
        let dealings: Vec<Dealing> = (0..n).map(|_| Dealing::random(t, n, &mut rng)).collect();
        let commitments: Vec<Commitments> = dealings.iter().map(Dealing::commitments).collect();
        let total = Commitments::sum(&commitments).unwrap();
        let shares: Vec<(u64, SecretKey)> = (1..=n as u64)
            .map(|i| {
                let mine: Vec<SecretKey> = dealings.iter().map(|d| d.share(i).unwrap()).collect();
                (i, sum_shares(&mine).unwrap())
            })
            .collect();
        for (i, s) in &shares {
            assert!(total.verify_share(*i, s));
        }
        let group = total.public_key();
        let msg = b"deposit";
        let partials: Vec<(u64, tbls::Signature)> = shares
            .iter()
            .map(|(i, s)| (*i, tbls::sign(s, msg)))
            .collect();
        assert!(tbls::verify(
            &group,
            msg,
            &tbls::combine(&partials[1..], t).unwrap()
        ));
        assert!(!tbls::verify(
            &group,
            msg,
            &tbls::combine(&partials[..2], 2).unwrap()
        ));
        assert!(Commitments::sum([]).is_none());
        let other_t = Dealing::random(2, n, &mut rng).commitments();
        assert!(Commitments::sum([&total, &other_t]).is_none());
    }

    #[test]
    fn proof_of_knowledge_is_bound_to_key_and_context() {
        let mut rng = rng();
        let d = Dealing::random(2, 3, &mut rng);
        let c0 = d.commitments().public_key();
        let proof = d.prove(b"ctx", &mut rng);
        assert!(proof.verify(&c0, b"ctx"));
        assert!(!proof.verify(&c0, b"ctx2"));
        let other = Dealing::random(2, 3, &mut rng).commitments().public_key();
        assert!(!proof.verify(&other, b"ctx"));
        let parsed = Proof::from_bytes(&proof.to_bytes()).unwrap();
        assert!(parsed.verify(&c0, b"ctx"));
        let mut bad = proof.to_bytes();
        bad[PROOF_BYTES - 1] ^= 1;
        assert!(!Proof::from_bytes(&bad).unwrap().verify(&c0, b"ctx"));
        assert!(Proof::from_bytes(&bad[1..]).is_err());
        let mut big_z = proof.to_bytes();
        big_z[G1_BYTES..].fill(0xff);
        assert!(Proof::from_bytes(&big_z).is_err());
    }

    #[test]
    fn malformed_commitments_are_refused() {
        let mut rng = rng();
        let c = Dealing::random(2, 3, &mut rng).commitments().to_bytes();
        assert!(matches!(
            Commitments::from_bytes(&c[1..], 2),
            Err(VssError::CommitmentLength { .. })
        ));
        let mut inf = c.clone();
        inf[G1_BYTES..].fill(0);
        inf[G1_BYTES] = 0xc0;
        assert!(matches!(
            Commitments::from_bytes(&inf, 2),
            Err(VssError::InvalidCommitment { k: 1, .. })
        ));
        let mut garbage = c;
        garbage[..G1_BYTES].fill(0xab);
        assert!(matches!(
            Commitments::from_bytes(&garbage, 2),
            Err(VssError::InvalidCommitment { k: 0, .. })
        ));
    }
}
