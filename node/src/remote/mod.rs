//! Remote-signer mode: dvnode is its validator client's beacon node **and** its Web3Signer.
//!
//! The VC (started with `--externalSigner.url` at dvnode and the DV public keys) fetches the
//! decided values from dvnode's validator API and asks dvnode for every signature; dvnode holds
//! its own key share of each DV ([`crate::cluster::shares`]), signs only what the cluster
//! decided and answers with the **combined** signature ([`signer::DvSigner`]). BLS signatures
//! are unique, so every node answers the same selection proofs and every VC takes the same
//! aggregation decision: aggregation and sync contributions work with any Web3Signer-capable VC,
//! without the DV selection endpoints.
//!
//! What the node does on its own in this mode (scheduler, fetch stage): combine the selection
//! proofs and RANDAO reveals as soon as the duties are known, and run consensus on the
//! aggregates and sync contributions of the slots where a DV aggregates.

pub mod signer;

#[cfg(test)]
mod tests;

pub use signer::{DvSigner, SignerMetrics};
