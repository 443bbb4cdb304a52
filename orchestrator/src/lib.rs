//! dvlab: turns a devnet YAML into a running Docker devnet of real Ethereum clients,
//! watches it, and turns what happened into a report and an exit code.
//!
//! Phases, one module each: [`spec`] → [`plan`] → [`images`] / [`runtime`] → [`faults`] → [`collect`]
//! → [`analyse`] → [`report`]. Raw data lives in [`data`].

pub mod analyse;
pub mod collect;
pub mod data;
pub mod faults;
pub mod images;
pub mod plan;
pub mod report;
pub mod run;
pub mod runtime;
pub mod spec;
