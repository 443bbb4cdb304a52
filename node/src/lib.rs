//! dvnode — an Ethereum distributed validator node.
//!
//! One validator key is split t-of-n with threshold BLS; n nodes agree on what to sign by QBFT
//! consensus, sign with their key shares, exchange partial signatures and combine them.
//!
//! Modules follow the workflow stages of the design (see `README.md`):
//! - [`keys`]: threshold BLS (blst), EIP-2335 keystores, interop keys.
//! - [`cluster`]: cluster lock file and `create-cluster`.
//! - [`slashing`]: EIP-3076 slashing protection database and interchange.
//! - [`consensus`]: QBFT engine (pure logic, no I/O).
//! - [`p2p`]: libp2p cluster networking.

pub mod broadcast;
pub mod clock;
pub mod cluster;
pub mod consensus;
pub mod decide;
pub mod duty;
pub mod dutydb;
pub mod eth;
pub mod fetcher;
pub mod keys;
pub mod metrics_server;
pub mod node;
pub mod p2p;
pub mod parsig;
pub mod scheduler;
pub mod sigagg;
pub mod slashing;
pub mod tracker;
pub mod util;
pub mod validator_api;
pub mod value;
pub mod vc_backend;
pub mod web3signer;
