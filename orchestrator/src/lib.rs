//! dvlab: turns a devnet YAML into a running Docker devnet of real Ethereum clients,
//! watches it, and turns what happened into a report and an exit code.
//!
//! Phases, one module each: [`spec`] → [`plan`] → [`images`] / [`runtime`] → [`faults`] → [`collect`]
//! → [`analyse`] → [`report`]; each imports only earlier phases. The run's data formats (raw
//! frames, `meta.json`, the fault log) live in [`data`], beneath the phases that use them;
//! [`pipeline`] wires the phases together for `dvlab up`, `dvlab run` and `dvlab report`.

pub mod analyse;
pub mod collect;
pub mod data;
pub mod faults;
pub mod images;
pub mod k8s;
pub mod pipeline;
pub mod plan;
pub mod report;
pub mod runtime;
pub mod spec;
