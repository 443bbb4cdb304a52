//! Validator key material.
//!
//! - [`tbls`]: threshold BLS on BLS12-381 (blst): Shamir splitting of a validator key, partial
//!   signing and verification, Lagrange combination of partial signatures.
//! - [`batch`]: batch verification of many BLS signatures with one random linear combination.
//! - [`keystore`]: EIP-2335 encrypted keystores for (share) secret keys.
//! - [`interop`]: the deterministic insecure "interop" validator keys used by devnets.
//! - [`vss`]: Feldman verifiable secret sharing and Schnorr proofs of knowledge (for the DKG).

pub mod batch;
pub mod interop;
pub mod keystore;
pub mod tbls;
pub mod vss;
