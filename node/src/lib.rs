//! dvnode — an Ethereum distributed validator node.
//!
//! One validator key is split t-of-n with threshold BLS; n nodes agree on what to sign by QBFT
//! consensus, sign with their key shares, exchange partial signatures and combine them.
//!
//! Modules follow the workflow stages of the design (see `README.md`), in layers whose imports
//! point one way (checked by `tests/layering.rs`), bottom up:
//! - foundations: [`util`]; [`eth`] (types, chain config, signing, beacon API), [`keys`]
//!   (threshold BLS, keystores), [`slashing`] (EIP-3076), [`p2p`] (libp2p);
//! - [`clock`] (Unix time, slots), [`cluster`] (lock file, cluster definition, deposit data),
//!   [`consensus`] (QBFT engine, simulator, driver);
//! - [`dkg`]: distributed key generation (`dvnode dkg`);
//! - the workflow's data: [`duty`], then [`value`] (decided values, signed objects);
//! - [`tracker`] and [`dutydb`], which every stage reports to or reads from;
//! - the stages: [`scheduler`], [`decide`], [`parsig`], [`broadcast`]; the VC-facing
//!   [`validator_api`] and [`web3signer`]; then the stages that drive the next one —
//!   [`fetcher`] (→ decide), [`sigagg`] (→ broadcast) — and [`vc_backend`], [`metrics_server`];
//! - [`node`]: `dvnode run`, the wiring.

pub mod broadcast;
pub mod clock;
pub mod cluster;
pub mod consensus;
pub mod decide;
pub mod dkg;
pub mod duty;
pub mod dutydb;
pub mod eth;
pub mod exit;
pub mod fetcher;
pub mod keys;
pub mod metrics_server;
pub mod node;
pub mod p2p;
pub mod parsig;
pub mod remote;
pub mod scheduler;
pub mod sigagg;
pub mod slashing;
pub mod tracker;
pub mod util;
pub mod validator_api;
pub mod value;
pub mod vc_backend;
pub mod web3signer;
