//! The standard beacon-node REST API (the subset dvnode needs): an async client, SSE events
//! included, and the API's identifiers and response types.
//!
//! - `api`: request identifiers ([`BlockId`], [`StateId`], [`ValidatorId`]) and response types,
//!   with the Lodestar 1.5.1 answers normalised ([`normalize_committees`],
//!   [`normalize_proposer_duties`]);
//! - `events`: the server-sent events ([`BeaconEvent`]);
//! - `client`: [`BeaconClient`] and its [`BeaconError`];
//! - [`fallback`]: several beacon nodes, failing over per request class ([`Endpoints`]);
//! - [`pool`]: signed objects to the array endpoints, coalesced per endpoint under load, with an
//!   outcome per object ([`PoolLane`]).
//!
//! [`Genesis`] and [`SpecConfig`] are defined beneath the signing rules, in
//! [`eth::config`](crate::eth::config), and re-exported here with the other response types.

mod api;
mod client;
mod events;
pub mod fallback;
pub mod pool;

pub use self::api::*;
pub use self::client::*;
pub use self::events::*;
pub use self::fallback::{Endpoints, RequestClass};
pub use self::pool::{ItemOutcome, PoolKind, PoolLane, PoolMetrics};
pub use crate::eth::config::{Genesis, SpecConfig};
