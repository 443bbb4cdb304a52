//! End-to-end test harnesses for dvnode against real, unmodified Ethereum clients.
//!
//! The `e2e-local` binary runs a Lodestar devnet as local processes (a `lodestar dev` beacon
//! node with keeper validators, a baseline `lodestar validator`, and a 4-node dvnode cluster
//! with one Lodestar validator client per node), records the chain, and checks that the
//! distributed validators perform like the baseline and that everything they signed verifies.
//!
//! Reusable parts:
//! - [`supervisor`]: process groups killed on drop/error/signal, logs per process, peak RSS.
//! - [`ports`]: free loopback ports.
//! - [`lodestar`]: Lodestar launch helpers and keystore re-encryption for its VC.
//! - [`chain`]: what is recorded from the beacon node (with the Lodestar v1.5.1 committee
//!   quirk handled).
//! - [`rundir`]: a recorded run as dvlab's run directory, analysed by dvlab's own analyser
//!   (`dvlab report`): inclusion, proposals, sync participation, fault windows, slashings.
//! - [`analysis`]: what dvlab does not compute: signature verification of everything on chain,
//!   the dvnode trackers against the chain.
//! - [`dutylog`]: dvnode duty logs: outcomes, miss reasons, node-added latency.
//! - [`record`]: a recording HTTP proxy (`e2e-local --record`) for the fuzzers' seed corpora.
//! - [`remote`]: remote-signer mode: aggregation and sync contribution duties expected from
//!   the selection proofs, and those the dvnodes performed.
//!
//! The `bench-scale` binary measures how far one 4-node cluster scales: [`simbn`] (a simulated
//! beacon node), [`simvc`] (simulated Lodestar-like validator clients) and [`benchscale`] (the
//! summary figures).

pub mod analysis;
pub mod benchscale;
pub mod chain;
pub mod dutylog;
pub mod lodestar;
pub mod ports;
pub mod record;
pub mod remote;
pub mod rundir;
pub mod simbn;
pub mod simvc;
pub mod supervisor;
