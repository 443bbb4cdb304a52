//! Devnet specification: the YAML schema ([`schema`]), its validation ([`validate`]) and the
//! YAML line locator ([`locate`]); and the input of `dvlab analyze` ([`analyze`]).
//!
//! Syntax and shape errors come from `serde_yaml`, which knows the line; semantic errors
//! (an unknown beacon node, `threshold > nodes`, …) are located with [`locate()`], a small
//! scanner that maps a field path such as `clusters[0].threshold` to its line in the source.

pub mod analyze;
pub mod locate;
pub mod schema;
pub mod validate;

pub use locate::locate;
pub use schema::{
    parse_offset, parse_rate, At, BaselineSpec, BeaconNodeSpec, Client, ClusterSpec, CmpOp,
    Comparison, DevnetSpec, DurationSpec, FaultKind, FaultSpec, KeepersSpec, KeySource, Metric,
    NetworkSpec, Preset, Scalar, Signer, Span, DEFAULT_LODESTAR_IMAGE,
};
pub use validate::{SpecError, SpecErrors};
