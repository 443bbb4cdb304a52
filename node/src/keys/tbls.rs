//! Threshold BLS signatures over BLS12-381 on top of `blst`.
//!
//! Scheme: Ethereum proof-of-possession BLS (`min_pk`: public keys in G1, signatures in G2, DST
//! [`DST`]). A secret `sk` is split t-of-n with Shamir's scheme over the scalar field Fr: a random
//! polynomial `f` of degree `t - 1` with `f(0) = sk`; node `i` (1-based share index) gets
//! `sk_i = f(i)`. Because BLS signing is linear in the key, partial signatures `σ_i = sk_i·H(m)`
//! from any `t` distinct nodes interpolate at 0 (in G2) to `σ = sk·H(m)`, the ordinary BLS
//! signature of the group key.
//!
//! All field arithmetic uses blst's own Fr routines and all group arithmetic blst's point
//! operations; nothing here re-implements field or curve arithmetic. A combination is one
//! multi-scalar multiplication with small integer scalars and, for some index sets, one scalar
//! multiplication by a field element (see [`SmallLagrange`]); index sets whose integers do not fit
//! take the full-width path (one multi-scalar multiplication with 255-bit Lagrange coefficients).
//! Both give the same point for points of the prime-order subgroups.

use std::collections::HashSet;
use std::ptr;

use blst::{blst_fr, blst_p1, blst_p1_affine, blst_p2, blst_p2_affine, blst_scalar, BLST_ERROR};
use rand::{CryptoRng, RngCore};
use zeroize::Zeroize;

pub use blst::min_pk::{PublicKey, SecretKey, Signature};

/// Domain separation tag of the Ethereum consensus-layer BLS signature scheme (proof-of-possession
/// ciphersuite, hash to G2).
pub const DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// Largest number of shares [`split`] accepts.
pub const MAX_SHARES: usize = 1000;

/// Number of significant bits of a BLS12-381 scalar (r < 2^255).
pub(crate) const SCALAR_BITS: usize = 255;

/// Errors of the threshold BLS operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TblsError {
    /// The threshold is not in `1..=n`.
    #[error("invalid threshold t={t} for n={n} shares: need 1 <= t <= n")]
    InvalidThreshold {
        /// Requested threshold.
        t: usize,
        /// Requested number of shares.
        n: usize,
    },
    /// More shares were requested than [`MAX_SHARES`].
    #[error("too many shares: n={n} exceeds the maximum of {max}")]
    TooManyShares {
        /// Requested number of shares.
        n: usize,
        /// The maximum, [`MAX_SHARES`].
        max: usize,
    },
    /// Fewer than `t` shares or partial signatures were given.
    #[error("not enough shares: got {got}, threshold is {needed}")]
    NotEnoughShares {
        /// Number of distinct entries given.
        got: usize,
        /// The threshold.
        needed: usize,
    },
    /// A share index was 0 (share indices are 1-based; 0 is the secret itself).
    #[error("share index 0 at position {position} (share indices are 1-based)")]
    ZeroIndex {
        /// Position of the offending entry in the input slice.
        position: usize,
    },
    /// The same share index appeared more than once.
    #[error("duplicate share index {index} at position {position}")]
    DuplicateIndex {
        /// The repeated share index.
        index: u64,
        /// Position of the second occurrence in the input slice.
        position: usize,
    },
    /// After excluding partial signatures that failed verification, fewer than `t` remained.
    #[error("only {valid} valid partial signatures, threshold is {needed} (rejected share indices: {rejected:?})")]
    NotEnoughValidPartials {
        /// Number of distinct valid partial signatures.
        valid: usize,
        /// The threshold.
        needed: usize,
        /// Share indices whose partial signature failed verification.
        rejected: Vec<u64>,
    },
    /// Interpolation produced the zero scalar, which is not a valid secret key (the shares are
    /// inconsistent or were chosen adversarially).
    #[error("recovered secret is zero: the shares are inconsistent")]
    ZeroSecret,
}

/// An element of the BLS12-381 scalar field (Montgomery form, blst representation). Zeroized on
/// drop because it frequently holds secret material (polynomial coefficients, shares). Shared
/// with the verifiable secret sharing of the DKG ([`super::vss`]).
pub(crate) struct Fr(blst_fr);

impl Fr {
    pub(crate) fn zero() -> Self {
        Fr(blst_fr::default())
    }

    pub(crate) fn from_u64(x: u64) -> Self {
        let limbs = [x, 0, 0, 0];
        let mut out = blst_fr::default();
        // SAFETY: blst_fr_from_uint64 reads four 64-bit limbs from `limbs` and writes `out`.
        unsafe { blst::blst_fr_from_uint64(&mut out, limbs.as_ptr()) };
        Fr(out)
    }

    pub(crate) fn from_u128(x: u128) -> Self {
        let limbs = [x as u64, (x >> 64) as u64, 0, 0];
        let mut out = blst_fr::default();
        // SAFETY: blst_fr_from_uint64 reads four 64-bit limbs from `limbs` and writes `out`; the
        // value is below 2^128 < r.
        unsafe { blst::blst_fr_from_uint64(&mut out, limbs.as_ptr()) };
        Fr(out)
    }

    pub(crate) fn from_scalar(s: &blst_scalar) -> Self {
        let mut out = blst_fr::default();
        // SAFETY: both pointers reference valid, properly sized blst values.
        unsafe { blst::blst_fr_from_scalar(&mut out, s) };
        Fr(out)
    }

    pub(crate) fn from_secret_key(sk: &SecretKey) -> Self {
        let s: &blst_scalar = sk.into();
        Self::from_scalar(s)
    }

    /// A uniformly random field element (64 random bytes reduced mod r; bias < 2^-250).
    pub(crate) fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut wide = [0u8; 64];
        rng.fill_bytes(&mut wide);
        let mut s = blst_scalar::default();
        // SAFETY: `wide` is 64 readable bytes; `s` is a valid output buffer. The return value
        // only reports whether the result is zero, which is harmless for a coefficient.
        unsafe { blst::blst_scalar_from_le_bytes(&mut s, wide.as_ptr(), wide.len()) };
        wide.zeroize();
        Self::from_scalar(&s)
    }

    pub(crate) fn to_scalar(&self) -> blst_scalar {
        let mut out = blst_scalar::default();
        // SAFETY: both pointers reference valid blst values.
        unsafe { blst::blst_scalar_from_fr(&mut out, &self.0) };
        out
    }

    pub(crate) fn add(&self, other: &Fr) -> Fr {
        let mut out = blst_fr::default();
        // SAFETY: valid pointers to blst_fr values.
        unsafe { blst::blst_fr_add(&mut out, &self.0, &other.0) };
        Fr(out)
    }

    pub(crate) fn sub(&self, other: &Fr) -> Fr {
        let mut out = blst_fr::default();
        // SAFETY: valid pointers to blst_fr values.
        unsafe { blst::blst_fr_sub(&mut out, &self.0, &other.0) };
        Fr(out)
    }

    pub(crate) fn mul(&self, other: &Fr) -> Fr {
        let mut out = blst_fr::default();
        // SAFETY: valid pointers to blst_fr values.
        unsafe { blst::blst_fr_mul(&mut out, &self.0, &other.0) };
        Fr(out)
    }

    /// Multiplicative inverse. Variable time: only ever applied to values derived from public
    /// share indices.
    pub(crate) fn inverse_vartime(&self) -> Fr {
        let mut out = blst_fr::default();
        // SAFETY: valid pointers to blst_fr values.
        unsafe { blst::blst_fr_eucl_inverse(&mut out, &self.0) };
        Fr(out)
    }

    /// Converts to a secret key, failing on zero.
    pub(crate) fn to_secret_key(&self) -> Option<SecretKey> {
        let scalar = self.to_scalar();
        // `blst_scalar` zeroizes itself on drop; the conversion checks 0 < s < r.
        <&SecretKey>::try_from(&scalar).ok().cloned()
    }
}

impl Drop for Fr {
    fn drop(&mut self) {
        self.0.l.zeroize();
    }
}

/// Generates a fresh random BLS secret key (IETF KeyGen over 32 bytes from `rng`).
pub fn random_secret<R: RngCore + CryptoRng>(rng: &mut R) -> SecretKey {
    let mut ikm = [0u8; 32];
    rng.fill_bytes(&mut ikm);
    let sk = SecretKey::key_gen(&ikm, &[]).expect("KeyGen accepts 32 bytes of key material");
    ikm.zeroize();
    sk
}

/// Splits `secret` into `n` Shamir shares with threshold `t`.
///
/// Element `i` of the result is the share with share index `i + 1` (held by node `i`). Any `t`
/// shares determine the secret; `t - 1` reveal nothing about it.
pub fn split<R: RngCore + CryptoRng>(
    secret: &SecretKey,
    n: usize,
    t: usize,
    rng: &mut R,
) -> Result<Vec<SecretKey>, TblsError> {
    if n > MAX_SHARES {
        return Err(TblsError::TooManyShares { n, max: MAX_SHARES });
    }
    if t == 0 || t > n {
        return Err(TblsError::InvalidThreshold { t, n });
    }
    'retry: loop {
        // f(x) = secret + a_1 x + ... + a_{t-1} x^{t-1}
        let mut coeffs = Vec::with_capacity(t);
        coeffs.push(Fr::from_secret_key(secret));
        coeffs.extend((1..t).map(|_| Fr::random(rng)));
        let mut shares = Vec::with_capacity(n);
        for i in 1..=n as u64 {
            match eval_polynomial(&coeffs, i).to_secret_key() {
                Some(sk) => shares.push(sk),
                // f(i) = 0 happens with probability ~2^-255; such a share is not a valid key,
                // so draw a fresh polynomial.
                None => continue 'retry,
            }
        }
        return Ok(shares);
    }
}

/// Evaluates the polynomial `Σ coeffs[k] · x^k` at `x` (Horner's rule).
pub(crate) fn eval_polynomial(coeffs: &[Fr], x: u64) -> Fr {
    let x = Fr::from_u64(x);
    let mut acc = Fr::zero();
    for c in coeffs.iter().rev() {
        acc = acc.mul(&x).add(c);
    }
    acc
}

/// Signs `msg` with `sk` under [`DST`] (a share key yields a partial signature).
pub fn sign(sk: &SecretKey, msg: &[u8]) -> Signature {
    sk.sign(msg, DST, &[])
}

/// Verifies `sig` over `msg` under `pk` and [`DST`].
///
/// Rejects the point at infinity (for both key and signature) and points outside the prime-order
/// subgroups.
pub fn verify(pk: &PublicKey, msg: &[u8], sig: &Signature) -> bool {
    let point: &blst_p2_affine = sig.into();
    // SAFETY: `point` references a valid affine point.
    if unsafe { blst::blst_p2_affine_is_inf(point) } {
        return false;
    }
    sig.verify(true, msg, DST, &[], pk, true) == BLST_ERROR::BLST_SUCCESS
}

/// Checks the index rules shared by [`combine`] and [`recover_secret`] (no index 0, no
/// duplicates, at least `t` entries) and returns the first `t` indices.
fn select_indices(indices: impl Iterator<Item = u64>, t: usize) -> Result<Vec<u64>, TblsError> {
    let mut seen = HashSet::new();
    let mut count = 0;
    let mut chosen = Vec::with_capacity(t);
    for (position, index) in indices.enumerate() {
        if index == 0 {
            return Err(TblsError::ZeroIndex { position });
        }
        if !seen.insert(index) {
            return Err(TblsError::DuplicateIndex { index, position });
        }
        if chosen.len() < t {
            chosen.push(index);
        }
        count += 1;
    }
    if t == 0 || count < t {
        return Err(TblsError::NotEnoughShares {
            got: count,
            needed: t.max(1),
        });
    }
    Ok(chosen)
}

/// Lagrange basis coefficients at x = 0 for the distinct, non-zero points `xs`:
/// `λ_i = Π_{j≠i} x_j / (x_j − x_i)`. Uses one field inversion (Montgomery batch inversion).
fn lagrange_at_zero(xs: &[u64]) -> Vec<Fr> {
    let xf: Vec<Fr> = xs.iter().map(|&x| Fr::from_u64(x)).collect();
    let mut nums = Vec::with_capacity(xs.len());
    let mut dens = Vec::with_capacity(xs.len());
    for (i, xi) in xf.iter().enumerate() {
        let mut num = Fr::from_u64(1);
        let mut den = Fr::from_u64(1);
        for (j, xj) in xf.iter().enumerate() {
            if i != j {
                num = num.mul(xj);
                den = den.mul(&xj.sub(xi));
            }
        }
        nums.push(num);
        dens.push(den);
    }
    // Batch inversion: prefix[i] = d_0 · … · d_{i-1}.
    let mut prefix = Vec::with_capacity(dens.len());
    let mut acc = Fr::from_u64(1);
    for d in &dens {
        prefix.push(Fr(acc.0));
        acc = acc.mul(d);
    }
    let mut inv = acc.inverse_vartime();
    let mut coeffs: Vec<Fr> = (0..xs.len()).map(|_| Fr::zero()).collect();
    for i in (0..dens.len()).rev() {
        // inv = (d_0 · … · d_i)^{-1}
        let den_inv = inv.mul(&prefix[i]);
        coeffs[i] = nums[i].mul(&den_inv);
        inv = inv.mul(&dens[i]);
    }
    coeffs
}

/// Defines a single-threaded Pippenger multi-scalar multiplication `Σ k_i · P_i` over blst
/// affine points, with scalars given as concatenated `nbits`-bit little-endian byte strings.
macro_rules! msm_fn {
    ($name:ident, $affine:ty, $proj:ty, $sizeof:path, $pippenger:path) => {
        pub(crate) fn $name(points: &[$affine], scalar_bytes: &[u8], nbits: usize) -> $proj {
            let npoints = points.len();
            assert!(npoints > 0 && scalar_bytes.len() == npoints * nbits.div_ceil(8));
            // SAFETY: pure size query.
            let scratch_bytes = unsafe { $sizeof(npoints) };
            let mut scratch = vec![0u64; scratch_bytes.div_ceil(8)];
            // A pointer array whose second entry is null tells blst that the first entry points
            // to a contiguous array (the convention of blst's own Rust wrapper).
            let point_ptrs: [*const $affine; 2] = [points.as_ptr(), ptr::null()];
            let scalar_ptrs: [*const u8; 2] = [scalar_bytes.as_ptr(), ptr::null()];
            let mut out = <$proj>::default();
            // SAFETY: `points` holds `npoints` affine points, `scalar_bytes` holds `npoints`
            // scalars of `nbits` bits each (checked above), and the scratch buffer has the size
            // blst asked for.
            unsafe {
                $pippenger(
                    &mut out,
                    point_ptrs.as_ptr(),
                    npoints,
                    scalar_ptrs.as_ptr(),
                    nbits,
                    scratch.as_mut_ptr(),
                );
            }
            out
        }
    };
}

msm_fn!(
    g1_msm,
    blst_p1_affine,
    blst_p1,
    blst::blst_p1s_mult_pippenger_scratch_sizeof,
    blst::blst_p1s_mult_pippenger
);
msm_fn!(
    g2_msm,
    blst_p2_affine,
    blst_p2,
    blst::blst_p2s_mult_pippenger_scratch_sizeof,
    blst::blst_p2s_mult_pippenger
);

/// Number of bits of the random weights used by batch verification (soundness error 2^-64).
const BATCH_WEIGHT_BITS: usize = 64;

/// Checks that every `(pk_i, σ_i)` is a valid signature over the same `msg`, with one pairing
/// check on a random linear combination: `e(g1, Σ r_i σ_i) == e(Σ r_i pk_i, H(msg))` for random
/// non-zero 64-bit `r_i`. Every point is first checked to be a non-infinity subgroup element (the
/// combination is only sound for subgroup points). `true` implies that all signatures are valid
/// except with probability 2^-64; `false` means at least one is invalid.
fn batch_verify_same_message(pks: &[PublicKey], sigs: &[Signature], msg: &[u8]) -> bool {
    debug_assert_eq!(pks.len(), sigs.len());
    match (pks, sigs) {
        ([], _) | (_, []) => return true,
        ([pk], [sig]) => return verify(pk, msg, sig),
        _ => {}
    }
    for sig in sigs {
        let point: &blst_p2_affine = sig.into();
        // SAFETY: `point` references a valid affine point.
        if unsafe { blst::blst_p2_affine_is_inf(point) } || !sig.subgroup_check() {
            return false;
        }
    }
    if pks.iter().any(|pk| pk.validate().is_err()) {
        return false;
    }
    let mut rng = rand::thread_rng();
    let weights: Vec<u8> = (0..sigs.len())
        .flat_map(|_| (rng.next_u64() | 1).to_le_bytes())
        .collect();
    let sig_points: Vec<blst_p2_affine> = sigs.iter().map(|s| (*s).into()).collect();
    let pk_points: Vec<blst_p1_affine> = pks.iter().map(|pk| (*pk).into()).collect();
    let agg_sig = g2_msm(&sig_points, &weights, BATCH_WEIGHT_BITS);
    let agg_pk = g1_msm(&pk_points, &weights, BATCH_WEIGHT_BITS);
    let mut sig_affine = blst_p2_affine::default();
    let mut pk_affine = blst_p1_affine::default();
    // SAFETY: valid pointers to blst point values.
    unsafe {
        blst::blst_p2_to_affine(&mut sig_affine, &agg_sig);
        blst::blst_p1_to_affine(&mut pk_affine, &agg_pk);
    }
    // Group membership of the inputs was checked above and is preserved by the combination.
    Signature::from(sig_affine).verify(false, msg, DST, &[], &PublicKey::from(pk_affine), false)
        == BLST_ERROR::BLST_SUCCESS
}

/// Combines partial signatures `(share index, σ_i)` (1-based indices) into the group signature by
/// Lagrange interpolation at 0 in G2.
///
/// Uses exactly the first `t` entries. Errors if any entry has index 0, if any index repeats, or
/// if fewer than `t` entries are given. Partial signatures are not verified here: verify them
/// first (see [`verify_and_combine`]) or verify the result against the group public key.
pub fn combine(partials: &[(u64, Signature)], t: usize) -> Result<Signature, TblsError> {
    let indices = select_indices(partials.iter().map(|(i, _)| *i), t)?;
    Ok(combine_unchecked(&indices, &partials[..t]))
}

/// [`combine`] computed the way it was before the small-integer path: one multi-scalar
/// multiplication with the full 255-bit Lagrange coefficients. Same result as [`combine`]; public
/// only so that the benchmarks can compare both in one run.
#[doc(hidden)]
pub fn combine_full_width(partials: &[(u64, Signature)], t: usize) -> Result<Signature, TblsError> {
    let indices = select_indices(partials.iter().map(|(i, _)| *i), t)?;
    let points: Vec<blst_p2_affine> = partials[..t].iter().map(|(_, s)| (*s).into()).collect();
    let sum = full_lagrange_sum_g2(&indices, &points);
    let mut affine = blst_p2_affine::default();
    // SAFETY: valid pointers to blst point values.
    unsafe { blst::blst_p2_to_affine(&mut affine, &sum) };
    Ok(Signature::from(affine))
}

/// [`combine_public_keys`] the way it was before the small-integer path (see
/// [`combine_full_width`]); public only for the benchmarks.
#[doc(hidden)]
pub fn combine_public_keys_full_width(
    shares: &[(u64, PublicKey)],
    t: usize,
) -> Result<PublicKey, TblsError> {
    let indices = select_indices(shares.iter().map(|(i, _)| *i), t)?;
    let points: Vec<blst_p1_affine> = shares[..t].iter().map(|(_, pk)| (*pk).into()).collect();
    let sum = full_lagrange_sum_g1(&indices, &points);
    let mut affine = blst_p1_affine::default();
    // SAFETY: valid pointers to blst point values.
    unsafe { blst::blst_p1_to_affine(&mut affine, &sum) };
    Ok(PublicKey::from(affine))
}

/// Combination for already validated input: `indices` are the distinct non-zero share indices of
/// `partials` (same order).
fn combine_unchecked(indices: &[u64], partials: &[(u64, Signature)]) -> Signature {
    if let [(_, only)] = partials {
        // t = 1: every share equals the secret, λ = 1.
        return *only;
    }
    let points: Vec<blst_p2_affine> = partials.iter().map(|(_, s)| (*s).into()).collect();
    let sum = match SmallLagrange::new(indices) {
        Some(small) => small.sum_g2(points),
        None => full_lagrange_sum_g2(indices, &points),
    };
    let mut affine = blst_p2_affine::default();
    // SAFETY: valid pointers to blst point values.
    unsafe { blst::blst_p2_to_affine(&mut affine, &sum) };
    Signature::from(affine)
}

/// `Σ λ_i · points[i]` with the full 255-bit Lagrange coefficients of `indices`: the fallback of
/// [`SmallLagrange`] (and the reference it is tested against).
fn full_lagrange_sum_g2(indices: &[u64], points: &[blst_p2_affine]) -> blst_p2 {
    g2_msm(points, &lagrange_scalar_bytes(indices), SCALAR_BITS)
}

/// The G1 twin of [`full_lagrange_sum_g2`].
fn full_lagrange_sum_g1(indices: &[u64], points: &[blst_p1_affine]) -> blst_p1 {
    g1_msm(points, &lagrange_scalar_bytes(indices), SCALAR_BITS)
}

/// The Lagrange coefficients at 0 of `indices` as concatenated 32-byte little-endian scalars (the
/// input format of the multi-scalar multiplications).
fn lagrange_scalar_bytes(indices: &[u64]) -> Vec<u8> {
    let lambdas = lagrange_at_zero(indices);
    let mut scalar_bytes = Vec::with_capacity(32 * lambdas.len());
    for lambda in &lambdas {
        scalar_bytes.extend_from_slice(&lambda.to_scalar().b);
    }
    scalar_bytes
}

/// Largest bit length of the integer coefficients [`SmallLagrange`] accepts: all that fit a
/// `u128`. Measured old vs new (docs/PERFORMANCE.md): 2–10× faster for the subsets of clusters up
/// to 22 nodes (≤ 26 bits), and still not slower at 128 bits (spread indices of a large cluster),
/// where an operation count of blst's multi-scalar multiplication gives ~1.35× for G2.
const SMALL_LAGRANGE_MAX_BITS: usize = 128;

/// Lagrange interpolation at 0 with small integers. For share indices `x_1 … x_t` the
/// coefficient `λ_i = Π_{j≠i} x_j / (x_j − x_i)` is a ratio of integers; with `D` the least
/// common multiple of the reduced denominators, `c_i = λ_i · D` are integers (no common factor
/// with `D` is left) and `Σ λ_i P_i = D⁻¹ · Σ c_i P_i` in a group of prime order r. So a
/// combination is a multi-scalar multiplication with scalars `|c_i|` of a few bits (the point
/// negated where `c_i < 0`) and, only when `D ≠ 1`, one multiplication by `D⁻¹ mod r`.
/// Consecutive indices give `D = 1` (e.g. {1, 2, 3}: c = (3, −3, 1)).
///
/// Outside the prime-order subgroup (torsion points, which no verification accepts) the result
/// differs from the full-width path: there `D⁻¹ · D ≠ 1` and `c_i ≢ λ_i · D` modulo the group
/// order.
struct SmallLagrange {
    /// `|c_i|` as concatenated `nbits.div_ceil(8)`-byte little-endian integers.
    scalar_bytes: Vec<u8>,
    /// Bit length of the largest `|c_i|` (at least 1).
    nbits: usize,
    /// Whether `c_i < 0`.
    negative: Vec<bool>,
    /// `D⁻¹ mod r` as a scalar, `None` when `D = 1`.
    d_inverse: Option<blst_scalar>,
}

impl SmallLagrange {
    /// The small-integer form of the Lagrange coefficients at 0 of `indices` (distinct, non-zero),
    /// or `None` when an intermediate value overflows a `u128` or a `c_i` has more than
    /// [`SMALL_LAGRANGE_MAX_BITS`] bits (then the full-width path is used).
    fn new(indices: &[u64]) -> Option<SmallLagrange> {
        let (coeffs, d) = small_lagrange_integers(indices)?;
        let nbits = coeffs
            .iter()
            .map(|(c, _)| (u128::BITS - c.leading_zeros()) as usize)
            .max()?
            .max(1);
        if nbits > SMALL_LAGRANGE_MAX_BITS {
            return None;
        }
        let nbytes = nbits.div_ceil(8);
        let mut scalar_bytes = Vec::with_capacity(nbytes * coeffs.len());
        for (c, _) in &coeffs {
            scalar_bytes.extend_from_slice(&c.to_le_bytes()[..nbytes]);
        }
        let d_inverse = (d != 1).then(|| Fr::from_u128(d).inverse_vartime().to_scalar());
        Some(SmallLagrange {
            scalar_bytes,
            nbits,
            negative: coeffs.iter().map(|(_, neg)| *neg).collect(),
            d_inverse,
        })
    }

    /// `Σ λ_i · points[i]` in G2.
    fn sum_g2(&self, mut points: Vec<blst_p2_affine>) -> blst_p2 {
        for (point, _) in points
            .iter_mut()
            .zip(&self.negative)
            .filter(|(_, &neg)| neg)
        {
            let y = point.y;
            // SAFETY: valid pointers to blst field elements (negation of the y coordinate, which
            // negates the point; the point at infinity (0, 0) stays itself).
            unsafe { blst::blst_fp2_cneg(&mut point.y, &y, true) };
        }
        let sum = g2_msm(&points, &self.scalar_bytes, self.nbits);
        match &self.d_inverse {
            None => sum,
            Some(d_inverse) => {
                let mut out = blst_p2::default();
                // SAFETY: valid pointers to a blst point and a 32-byte scalar of `SCALAR_BITS`
                // bits.
                unsafe { blst::blst_p2_mult(&mut out, &sum, d_inverse.b.as_ptr(), SCALAR_BITS) };
                out
            }
        }
    }

    /// `Σ λ_i · points[i]` in G1.
    fn sum_g1(&self, mut points: Vec<blst_p1_affine>) -> blst_p1 {
        for (point, _) in points
            .iter_mut()
            .zip(&self.negative)
            .filter(|(_, &neg)| neg)
        {
            let y = point.y;
            // SAFETY: valid pointers to blst field elements (negation of the y coordinate, which
            // negates the point; the point at infinity (0, 0) stays itself).
            unsafe { blst::blst_fp_cneg(&mut point.y, &y, true) };
        }
        let sum = g1_msm(&points, &self.scalar_bytes, self.nbits);
        match &self.d_inverse {
            None => sum,
            Some(d_inverse) => {
                let mut out = blst_p1::default();
                // SAFETY: valid pointers to a blst point and a 32-byte scalar of `SCALAR_BITS`
                // bits.
                unsafe { blst::blst_p1_mult(&mut out, &sum, d_inverse.b.as_ptr(), SCALAR_BITS) };
                out
            }
        }
    }
}

/// The integers of [`SmallLagrange`]: `(|c_i|, c_i < 0)` for every index and `D`, computed
/// exactly; `None` on overflow of a `u128`.
fn small_lagrange_integers(xs: &[u64]) -> Option<(Vec<(u128, bool)>, u128)> {
    // λ_i = num_i / den_i in lowest terms, sign apart.
    let mut fractions = Vec::with_capacity(xs.len());
    for (i, &xi) in xs.iter().enumerate() {
        let (mut num, mut den, mut negative) = (1u128, 1u128, false);
        for (j, &xj) in xs.iter().enumerate() {
            if i == j {
                continue;
            }
            // Multiply by xj / (xj − xi), each factor and the product kept in lowest terms
            // (cross-cancelling two reduced fractions leaves a reduced fraction).
            negative ^= xj < xi;
            let (a, b) = (u128::from(xj), u128::from(xj.abs_diff(xi)));
            let g = gcd(a, b);
            let (a, b) = (a / g, b / g);
            let (g1, g2) = (gcd(num, b), gcd(a, den));
            num = (num / g1).checked_mul(a / g2)?;
            den = (den / g2).checked_mul(b / g1)?;
        }
        fractions.push((num, den, negative));
    }
    let mut d = 1u128;
    for &(_, den, _) in &fractions {
        d = (d / gcd(d, den)).checked_mul(den)?;
    }
    let coeffs = fractions
        .into_iter()
        .map(|(num, den, negative)| Some((num.checked_mul(d / den)?, negative)))
        .collect::<Option<Vec<_>>>()?;
    Some((coeffs, d))
}

/// Greatest common divisor (binary algorithm: no 128-bit divisions); `gcd(0, b) = b`.
fn gcd(mut a: u128, mut b: u128) -> u128 {
    if a == 0 || b == 0 {
        return a | b;
    }
    let shift = (a | b).trailing_zeros();
    a >>= a.trailing_zeros();
    loop {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
        if b == 0 {
            return a << shift;
        }
    }
}

/// Combines public key shares `(share index, pk_i)` into the group public key by Lagrange
/// interpolation at 0 in G1: the public-key counterpart of [`combine`], with the same input rules
/// (the first `t` entries are used). Lets anyone check that a set of public shares belongs to a
/// group key without any secret.
pub fn combine_public_keys(shares: &[(u64, PublicKey)], t: usize) -> Result<PublicKey, TblsError> {
    let indices = select_indices(shares.iter().map(|(i, _)| *i), t)?;
    let points: Vec<blst_p1_affine> = shares[..t].iter().map(|(_, pk)| (*pk).into()).collect();
    let sum = match SmallLagrange::new(&indices) {
        Some(small) => small.sum_g1(points),
        None => full_lagrange_sum_g1(&indices, &points),
    };
    let mut affine = blst_p1_affine::default();
    // SAFETY: valid pointers to blst point values.
    unsafe { blst::blst_p1_to_affine(&mut affine, &sum) };
    Ok(PublicKey::from(affine))
}

/// Whether the public shares `shares` (`shares[i]` of share index `i + 1`) lie on one polynomial
/// of degree `t − 1` whose value at 0 is `group`: then every `t` of them interpolate to `group`,
/// and the combination of any `t` partial signatures each verified against its public share is
/// a valid signature of `group` (the signature is linear in the key). Checks the `n − t + 1`
/// subsets `{1, …, t − 1, j}` (two polynomials of degree `t − 1` that agree in `t` points are
/// equal). `false` when fewer than `t` shares are given.
pub fn shares_interpolate_to(group: &PublicKey, shares: &[PublicKey], t: usize) -> bool {
    if t == 0 || shares.len() < t {
        return false;
    }
    let indexed: Vec<(u64, PublicKey)> = (1u64..).zip(shares.iter().copied()).collect();
    (t - 1..shares.len()).all(|j| {
        let mut subset: Vec<(u64, PublicKey)> = indexed[..t - 1].to_vec();
        subset.push(indexed[j]);
        combine_public_keys(&subset, t).ok().as_ref() == Some(group)
    })
}

/// Verifies every partial signature against its public share and combines the valid ones.
///
/// `public_shares[i - 1]` is the public share of share index `i`. An entry is rejected if its
/// index is 0 or has no public share, or if its signature does not verify over `msg`. An entry
/// repeating an earlier `(index, signature)` pair is ignored. The first `t` valid entries (in input
/// order, one per index) are combined.
///
/// Fast path: all candidates are checked with one batched pairing check; only if that fails is
/// each verified on its own to find the culprits.
///
/// Returns the combined signature and the share indices that had an invalid entry (in input
/// order, each once), or [`TblsError::NotEnoughValidPartials`] if fewer than `t` distinct valid
/// partials remain.
pub fn verify_and_combine(
    partials: &[(u64, Signature)],
    public_shares: &[PublicKey],
    msg: &[u8],
    t: usize,
) -> Result<(Signature, Vec<u64>), TblsError> {
    if t == 0 {
        return Err(TblsError::NotEnoughShares {
            got: partials.len(),
            needed: 1,
        });
    }
    let public_share = |index: u64| {
        index
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| public_shares.get(i))
    };
    // Distinct (index, signature) pairs that have a public share, and for every input entry the
    // candidate it maps to (None: no public share for its index).
    let mut candidates: Vec<(u64, Signature, PublicKey)> = Vec::with_capacity(partials.len());
    let entry_candidate: Vec<Option<usize>> = partials
        .iter()
        .map(|&(index, sig)| {
            let pk = public_share(index)?;
            let pos = candidates
                .iter()
                .position(|(i, s, _)| *i == index && *s == sig);
            Some(pos.unwrap_or_else(|| {
                candidates.push((index, sig, *pk));
                candidates.len() - 1
            }))
        })
        .collect();
    let pks: Vec<PublicKey> = candidates.iter().map(|(_, _, pk)| *pk).collect();
    let sigs: Vec<Signature> = candidates.iter().map(|(_, s, _)| *s).collect();
    // BLS signatures are unique, so conflicting entries for one index make the batch fail and
    // are then sorted out individually.
    let candidate_valid: Vec<bool> = if batch_verify_same_message(&pks, &sigs, msg) {
        vec![true; candidates.len()]
    } else {
        pks.iter()
            .zip(&sigs)
            .map(|(pk, sig)| verify(pk, msg, sig))
            .collect()
    };
    let mut accepted: Vec<(u64, Signature)> = Vec::with_capacity(candidates.len());
    let mut rejected: Vec<u64> = Vec::new();
    for (&(index, sig), candidate) in partials.iter().zip(&entry_candidate) {
        if candidate.is_some_and(|c| candidate_valid[c]) {
            if !accepted.iter().any(|(i, _)| *i == index) {
                accepted.push((index, sig));
            }
        } else if !rejected.contains(&index) {
            rejected.push(index);
        }
    }
    if accepted.len() < t {
        return Err(TblsError::NotEnoughValidPartials {
            valid: accepted.len(),
            needed: t,
            rejected,
        });
    }
    accepted.truncate(t);
    let indices: Vec<u64> = accepted.iter().map(|(i, _)| *i).collect();
    Ok((combine_unchecked(&indices, &accepted), rejected))
}

/// Recovers the secret from Shamir shares `(share index, sk_i)` by Lagrange interpolation at 0
/// in Fr. Same input rules as [`combine`]: uses the first `t` entries, rejects index 0, duplicate
/// indices and fewer than `t` entries.
pub fn recover_secret(shares: &[(u64, SecretKey)], t: usize) -> Result<SecretKey, TblsError> {
    let indices = select_indices(shares.iter().map(|(i, _)| *i), t)?;
    let lambdas = lagrange_at_zero(&indices);
    let mut acc = Fr::zero();
    for (lambda, (_, share)) in lambdas.iter().zip(shares) {
        acc = acc.add(&lambda.mul(&Fr::from_secret_key(share)));
    }
    acc.to_secret_key().ok_or(TblsError::ZeroSecret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn sign_verify_roundtrip_and_wrong_message() {
        let sk = random_secret(&mut rng());
        let pk = sk.sk_to_pk();
        let sig = sign(&sk, b"hello");
        assert!(verify(&pk, b"hello", &sig));
        assert!(!verify(&pk, b"hellO", &sig));
        let other = random_secret(&mut StdRng::seed_from_u64(8)).sk_to_pk();
        assert!(!verify(&other, b"hello", &sig));
    }

    #[test]
    fn verify_rejects_infinity() {
        // Compressed encodings of the points at infinity.
        let mut inf_sig = [0u8; 96];
        inf_sig[0] = 0xc0;
        let mut inf_pk = [0u8; 48];
        inf_pk[0] = 0xc0;
        let sig = Signature::from_bytes(&inf_sig).expect("infinity decodes");
        let pk = PublicKey::from_bytes(&inf_pk).expect("infinity decodes");
        assert!(!verify(&pk, b"m", &sig));
        let real_pk = random_secret(&mut rng()).sk_to_pk();
        assert!(!verify(&real_pk, b"m", &sig));
    }

    #[test]
    fn known_signature_vector() {
        // ethereum/bls12-381-tests sign/verify case: privkey 0x3283…, message 0xabab….
        let sk = SecretKey::from_bytes(
            &hex::decode("328388aff0d4a5b7dc9205abd374e7e98f3cd9f3418edb4eafda5fb16473d216")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            hex::encode(sk.sk_to_pk().to_bytes()),
            "b53d21a4cfd562c469cc81514d4ce5a6b577d8403d32a394dc265dd190b47fa9f829fdd7963afdf972e5e77854051f6f"
        );
        let msg = hex::decode("abababababababababababababababababababababababababababababababab")
            .unwrap();
        let sig = sign(&sk, &msg);
        assert_eq!(
            hex::encode(sig.to_bytes()),
            "ae82747ddeefe4fd64cf9cedb9b04ae3e8a43420cd255e3c7cd06a8d88b7c7f8638543719981c5d16fa3527c468c25f0026704a6951bde891360c7e8d12ddee0559004ccdbe6046b55bae1b257ee97f7cdb955773d7cf29adf3ccbb9975e4eb9"
        );
    }

    #[test]
    fn split_combine_recover() {
        let mut rng = rng();
        let sk = random_secret(&mut rng);
        let pk = sk.sk_to_pk();
        let shares = split(&sk, 4, 3, &mut rng).unwrap();
        assert_eq!(shares.len(), 4);
        let msg = b"signing root";
        let partials: Vec<(u64, Signature)> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, sign(s, msg)))
            .collect();
        let direct = sign(&sk, msg);
        for subset in [[0, 1, 2], [1, 2, 3], [3, 0, 2], [2, 3, 1]] {
            let chosen: Vec<_> = subset.iter().map(|&i| partials[i]).collect();
            let combined = combine(&chosen, 3).unwrap();
            assert!(verify(&pk, msg, &combined));
            assert_eq!(combined, direct);
            let secret_shares: Vec<_> = subset
                .iter()
                .map(|&i| (i as u64 + 1, shares[i].clone()))
                .collect();
            assert_eq!(
                recover_secret(&secret_shares, 3).unwrap().to_bytes(),
                sk.to_bytes()
            );
        }
        // Two partials of a 3-of-4 scheme interpolate to something else.
        let wrong = combine(&partials[..2], 2).unwrap();
        assert!(!verify(&pk, msg, &wrong));
        // The public shares interpolate to the group key the same way.
        let pubs: Vec<(u64, PublicKey)> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, s.sk_to_pk()))
            .collect();
        for subset in [[0, 1, 2], [3, 1, 0]] {
            let chosen: Vec<_> = subset.iter().map(|&i| pubs[i]).collect();
            assert_eq!(combine_public_keys(&chosen, 3).unwrap(), pk);
        }
        assert_ne!(combine_public_keys(&pubs[..2], 2).unwrap(), pk);
    }

    #[test]
    fn shares_interpolate_to_their_group_key_only_when_all_lie_on_one_polynomial() {
        let mut rng = rng();
        let sk = random_secret(&mut rng);
        let group = sk.sk_to_pk();
        for (n, t) in [(4, 3), (7, 5), (3, 1), (4, 4)] {
            let pks: Vec<PublicKey> = split(&sk, n, t, &mut rng)
                .unwrap()
                .iter()
                .map(|s| s.sk_to_pk())
                .collect();
            assert!(shares_interpolate_to(&group, &pks, t), "{t}-of-{n}");
            // Any one share replaced (one of the first t - 1 or a later one) breaks it.
            for bad in 0..n {
                let mut wrong = pks.clone();
                wrong[bad] = random_secret(&mut rng).sk_to_pk();
                assert!(
                    !shares_interpolate_to(&group, &wrong, t),
                    "{t}-of-{n}, share {bad}"
                );
            }
            let other = random_secret(&mut rng).sk_to_pk();
            assert!(
                !shares_interpolate_to(&other, &pks, t),
                "{t}-of-{n}, other key"
            );
            assert!(!shares_interpolate_to(&group, &pks[..t - 1], t), "too few");
        }
        assert!(!shares_interpolate_to(&group, &[group], 0));
    }

    #[test]
    fn threshold_one_shares_equal_secret() {
        let mut rng = rng();
        let sk = random_secret(&mut rng);
        let shares = split(&sk, 3, 1, &mut rng).unwrap();
        assert!(shares.iter().all(|s| s.to_bytes() == sk.to_bytes()));
        let sig = combine(&[(2, sign(&shares[1], b"m"))], 1).unwrap();
        assert_eq!(sig, sign(&sk, b"m"));
    }

    #[test]
    fn split_rejects_bad_parameters() {
        let mut rng = rng();
        let sk = random_secret(&mut rng);
        assert_eq!(
            split(&sk, 4, 0, &mut rng).unwrap_err(),
            TblsError::InvalidThreshold { t: 0, n: 4 }
        );
        assert_eq!(
            split(&sk, 4, 5, &mut rng).unwrap_err(),
            TblsError::InvalidThreshold { t: 5, n: 4 }
        );
        assert_eq!(
            split(&sk, MAX_SHARES + 1, 3, &mut rng).unwrap_err(),
            TblsError::TooManyShares {
                n: MAX_SHARES + 1,
                max: MAX_SHARES
            }
        );
    }

    #[test]
    fn combine_rejects_bad_input() {
        let mut rng = rng();
        let sk = random_secret(&mut rng);
        let shares = split(&sk, 4, 3, &mut rng).unwrap();
        let p = |i: usize| (i as u64 + 1, sign(&shares[i], b"m"));
        assert_eq!(
            combine(&[p(0), p(1)], 3).unwrap_err(),
            TblsError::NotEnoughShares { got: 2, needed: 3 }
        );
        assert_eq!(
            combine(&[p(0), (0, p(1).1), p(2)], 3).unwrap_err(),
            TblsError::ZeroIndex { position: 1 }
        );
        assert_eq!(
            combine(&[p(0), p(1), p(0)], 3).unwrap_err(),
            TblsError::DuplicateIndex {
                index: 1,
                position: 2
            }
        );
        assert_eq!(
            combine(&[p(0), p(1)], 0).unwrap_err(),
            TblsError::NotEnoughShares { got: 2, needed: 1 }
        );
        // Extra entries beyond t are ignored, but still validated.
        assert_eq!(
            combine(&[p(0), p(1), p(2), p(3)], 3).unwrap(),
            sign(&sk, b"m")
        );
    }

    #[test]
    fn verify_and_combine_excludes_corrupted() {
        let mut rng = rng();
        let sk = random_secret(&mut rng);
        let shares = split(&sk, 4, 3, &mut rng).unwrap();
        let pubs: Vec<PublicKey> = shares.iter().map(SecretKey::sk_to_pk).collect();
        let msg = b"duty";
        let mut partials: Vec<(u64, Signature)> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, sign(s, msg)))
            .collect();
        // Node 2 signs the wrong message.
        partials[1].1 = sign(&shares[1], b"other");
        let (sig, rejected) = verify_and_combine(&partials, &pubs, msg, 3).unwrap();
        assert_eq!(rejected, vec![2]);
        assert_eq!(sig, sign(&sk, msg));

        // Index without public share, and a conflicting duplicate.
        let extra = vec![
            partials[0],
            (9, partials[2].1),
            (1, partials[3].1),
            partials[2],
        ];
        let err = verify_and_combine(&extra, &pubs, msg, 3).unwrap_err();
        assert_eq!(
            err,
            TblsError::NotEnoughValidPartials {
                valid: 2,
                needed: 3,
                rejected: vec![9, 1]
            }
        );
    }

    #[test]
    fn batch_verification_detects_any_bad_signature() {
        let mut rng = rng();
        let keys: Vec<SecretKey> = (0..5).map(|_| random_secret(&mut rng)).collect();
        let pks: Vec<PublicKey> = keys.iter().map(SecretKey::sk_to_pk).collect();
        let mut sigs: Vec<Signature> = keys.iter().map(|k| sign(k, b"m")).collect();
        assert!(batch_verify_same_message(&pks, &sigs, b"m"));
        assert!(!batch_verify_same_message(&pks, &sigs, b"n"));
        for bad in 0..sigs.len() {
            let good = sigs[bad];
            sigs[bad] = sign(&keys[bad], b"other");
            assert!(
                !batch_verify_same_message(&pks, &sigs, b"m"),
                "bad signature {bad}"
            );
            sigs[bad] = good;
        }
        // Swapping two signatures between keys is caught too.
        sigs.swap(0, 1);
        assert!(!batch_verify_same_message(&pks, &sigs, b"m"));
        sigs.swap(0, 1);
        // Points at infinity are rejected.
        let mut inf = [0u8; 96];
        inf[0] = 0xc0;
        sigs[2] = Signature::from_bytes(&inf).unwrap();
        assert!(!batch_verify_same_message(&pks, &sigs, b"m"));
    }

    #[test]
    fn verify_and_combine_accepts_valid_entry_after_invalid_duplicate() {
        let mut rng = rng();
        let sk = random_secret(&mut rng);
        let shares = split(&sk, 3, 2, &mut rng).unwrap();
        let pubs: Vec<PublicKey> = shares.iter().map(SecretKey::sk_to_pk).collect();
        let good = |i: usize| (i as u64 + 1, sign(&shares[i], b"m"));
        let forged = (1, sign(&shares[0], b"x"));
        let input = [forged, good(1), good(0), good(1)];
        let (sig, rejected) = verify_and_combine(&input, &pubs, b"m", 2).unwrap();
        assert_eq!(rejected, vec![1]);
        assert_eq!(sig, sign(&sk, b"m"));
    }

    /// Every `t`-subset of `indices`, in lexicographic order of positions.
    fn subsets(indices: &[u64], t: usize) -> Vec<Vec<u64>> {
        if t == 0 {
            return vec![vec![]];
        }
        (0..indices.len())
            .flat_map(|first| {
                subsets(&indices[first + 1..], t - 1)
                    .into_iter()
                    .map(move |mut rest| {
                        rest.insert(0, indices[first]);
                        rest
                    })
            })
            .collect()
    }

    /// A secret split `t`-of-`n`, with the group key, the group signature over `msg` and the
    /// partial signatures and public shares of some share indices.
    struct Signed {
        group: PublicKey,
        signature: Signature,
        msg: &'static [u8],
        partials: std::collections::HashMap<u64, (Signature, PublicKey)>,
    }

    impl Signed {
        fn new(seed: u64, n: usize, t: usize, indices: &[u64], msg: &'static [u8]) -> Signed {
            let mut rng = StdRng::seed_from_u64(seed);
            let sk = random_secret(&mut rng);
            let shares = split(&sk, n, t, &mut rng).unwrap();
            let partials = indices
                .iter()
                .map(|&i| {
                    let share = &shares[i as usize - 1];
                    (i, (sign(share, msg), share.sk_to_pk()))
                })
                .collect();
            Signed {
                group: sk.sk_to_pk(),
                signature: sign(&sk, msg),
                msg,
                partials,
            }
        }

        /// Combines the partial signatures and public shares of `indices` (rotated by `rotate`,
        /// so that indices also come unsorted) with the current and the full-width
        /// implementation and checks that both agree bit for bit and give the group signature
        /// (verified with blst) and key. Returns the small-integer form the current one used,
        /// if any.
        fn check_both_paths(&self, indices: &[u64], rotate: usize) -> Option<SmallLagrange> {
            let t = indices.len();
            let mut indices = indices.to_vec();
            indices.rotate_left(rotate % t);
            let parts: Vec<(u64, Signature)> =
                indices.iter().map(|&i| (i, self.partials[&i].0)).collect();
            let pubs: Vec<(u64, PublicKey)> =
                indices.iter().map(|&i| (i, self.partials[&i].1)).collect();

            let sig = combine(&parts, t).unwrap();
            let reference = combine_full_width(&parts, t).unwrap();
            assert_eq!(sig.serialize(), reference.serialize(), "{indices:?}");
            assert_eq!(sig.to_bytes(), reference.to_bytes(), "{indices:?}");
            assert!(verify(&self.group, self.msg, &sig), "{indices:?}");
            assert_eq!(sig, self.signature, "{indices:?}");

            let pk = combine_public_keys(&pubs, t).unwrap();
            let reference = combine_public_keys_full_width(&pubs, t).unwrap();
            assert_eq!(pk.serialize(), reference.serialize(), "{indices:?}");
            assert_eq!(pk, self.group, "{indices:?}");
            SmallLagrange::new(&indices)
        }
    }

    #[test]
    fn small_lagrange_integers_known_values() {
        let coeffs = |xs: &[u64]| {
            let (c, d) = small_lagrange_integers(xs).unwrap();
            let signed: Vec<i128> = c
                .iter()
                .map(|&(c, neg)| if neg { -(c as i128) } else { c as i128 })
                .collect();
            (signed, d)
        };
        assert_eq!(coeffs(&[1, 2, 3]), (vec![3, -3, 1], 1));
        assert_eq!(coeffs(&[1, 2, 4]), (vec![8, -6, 1], 3));
        assert_eq!(coeffs(&[1, 3, 4]), (vec![2, -2, 1], 1));
        assert_eq!(coeffs(&[2, 3, 4]), (vec![6, -8, 3], 1));
        assert_eq!(coeffs(&[4, 2, 3]), (vec![3, 6, -8], 1));
        assert_eq!(coeffs(&[7]), (vec![1], 1));
        assert_eq!(
            coeffs(&[1, 2, 4, 5, 6, 7, 10]),
            (vec![560, -945, 2100, -3024, 1890, -480, 7], 108)
        );
        // λ = (1 / (1 − m), m / (m − 1)) for m = 2^64 − 1.
        assert_eq!(
            coeffs(&[u64::MAX, 1]),
            (vec![-1, u64::MAX.into()], (u64::MAX - 1).into())
        );
        // Spread indices of a large cluster overflow 128 bits: the full-width path is taken.
        assert!(small_lagrange_integers(&[183, 301, 349, 666, 734, 969, 980]).is_none());
        assert!(SmallLagrange::new(&[183, 301, 349, 666, 734, 969, 980]).is_none());
        assert_eq!(
            SmallLagrange::new(&[188, 286, 589, 827, 857, 859, 885])
                .unwrap()
                .nbits,
            128
        );
        assert_eq!(gcd(0, 0), 0);
        assert_eq!(gcd(0, 12), 12);
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(1 << 100, 3 << 90), 1 << 90);
        assert_eq!(gcd(u128::MAX, u128::MAX - 1), 1);
    }

    #[test]
    fn small_lagrange_integers_are_the_lagrange_coefficients_times_d() {
        let all: Vec<u64> = (1..=13).collect();
        for t in 1..=all.len() {
            for indices in subsets(&all, t) {
                let (coeffs, d) = small_lagrange_integers(&indices).unwrap();
                let d_inverse = Fr::from_u128(d).inverse_vartime();
                // No factor common to D and every c_i is left.
                assert_eq!(
                    coeffs.iter().fold(d, |g, (c, _)| gcd(g, *c)),
                    1,
                    "{indices:?}"
                );
                for ((c, negative), lambda) in coeffs.iter().zip(lagrange_at_zero(&indices)) {
                    let c = Fr::from_u128(*c);
                    let c = if *negative { Fr::zero().sub(&c) } else { c };
                    assert_eq!(
                        c.mul(&d_inverse).to_scalar().b,
                        lambda.to_scalar().b,
                        "{indices:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn combine_matches_full_width_on_every_subset() {
        for (t, n, secrets) in [
            (1, 1, 3),
            (2, 3, 3),
            (3, 4, 3),
            (5, 7, 2),
            (7, 10, 2),
            (10, 13, 1),
            (13, 16, 1),
            (20, 22, 1),
        ] {
            let (mut with_d, mut without_d) = (0, 0);
            let all: Vec<u64> = (1..=n as u64).collect();
            for seed in 0..secrets {
                let signed = Signed::new(100 + seed, n, t, &all, b"combine every subset");
                for (k, indices) in subsets(&all, t).iter().enumerate() {
                    let small = signed
                        .check_both_paths(indices, k)
                        .unwrap_or_else(|| panic!("{t}-of-{n} {indices:?}: full-width path"));
                    if small.d_inverse.is_some() {
                        with_d += 1;
                    } else {
                        without_d += 1;
                    }
                }
            }
            assert!(without_d > 0, "{t}-of-{n}: no subset with D = 1");
            assert!(with_d > 0 || t == 1, "{t}-of-{n}: no subset with D != 1");
        }
    }

    #[test]
    fn combine_matches_full_width_where_integers_overflow() {
        // Every 14-subset of these 15 indices of a 1000-share split: two fit 128 bits (95 and 108
        // bits), the other 13 overflow and take the full-width path.
        let spread: Vec<u64> = (1..=13).chain([500, 1000]).collect();
        let signed = Signed::new(200, MAX_SHARES, 14, &spread, b"overflow");
        let (mut small, mut full) = (0, 0);
        for (k, indices) in subsets(&spread, 14).iter().enumerate() {
            match signed.check_both_paths(indices, k) {
                Some(_) => small += 1,
                None => full += 1,
            }
        }
        assert_eq!((small, full), (2, 13));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Random index sets of a 1000-share split (any order): both paths agree.
        #[test]
        fn combine_matches_full_width_on_random_indices(
            indices in proptest::collection::hash_set(1u64..=MAX_SHARES as u64, 1..=10),
            seed: u64,
        ) {
            let indices: Vec<u64> = indices.into_iter().collect();
            let signed = Signed::new(seed, MAX_SHARES, indices.len(), &indices, b"random indices");
            signed.check_both_paths(&indices, 0);
        }
    }
}
