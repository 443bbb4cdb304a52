//! dvlab: turns a devnet YAML into a running Docker devnet of real Ethereum clients,
//! watches it, and turns what happened into a report and an exit code.
//!
//! Phases, one module each: [`spec`] → [`plan`] → [`images`] / [`runtime`] → [`faults`] → [`collect`]
//! → [`analyse`] → [`report`]; each imports only earlier phases. The run's data formats (raw
//! frames, `meta.json`, the fault log) live in [`data`], beneath the phases that use them;
//! [`pipeline`] wires the phases together for `dvlab up`, `dvlab run` and `dvlab report`.
//! [`genesis`] (the genesis state of a devnet whose cluster keys come from a DKG ceremony) sits
//! beneath [`plan`] and [`runtime`], which use it; [`shuffle`] (the spec's swap-or-not shuffle)
//! beneath [`genesis`] and [`collect`].
//!
//! Without the default `lab` feature only [`spec`], [`plan`], the fault [`faults::timeline`],
//! the [`data`] formats (rows and their CSV files, without polars frames) and the [`analyse`]
//! figures' types are built (no Docker, Kubernetes or polars): the part of dvlab that reads a
//! devnet file, for the fuzzer, and that writes a run directory and reads its report, for
//! harnesses such as `e2e-local`.

pub mod analyse;
#[cfg(feature = "lab")]
pub mod collect;
pub mod data;
pub mod faults;
pub mod genesis;
#[cfg(feature = "lab")]
pub mod images;
#[cfg(feature = "lab")]
pub mod k8s;
#[cfg(feature = "lab")]
pub mod pipeline;
pub mod plan;
#[cfg(feature = "lab")]
pub mod report;
#[cfg(feature = "lab")]
pub mod runtime;
pub mod shuffle;
pub mod spec;
