//! Ethereum consensus foundation: containers, signing roots and a beacon-node client.
//!
//! - [`types`]: phase0/Altair containers (SSZ, `hash_tree_root`, beacon-API JSON), generic over
//!   the [`types::Preset`] ([`types::Minimal`], [`types::Mainnet`]).
//! - [`config`]: the chain's genesis and spec constants as a beacon node serves them.
//! - [`signing`]: domains, signing roots and the [`signing::ForkSchedule`] of a chain.
//! - [`beacon`]: an async HTTP client for the standard beacon-node API, SSE events included.
//! - [`heads`]: the beacon node's recent head blocks as its events announced them.
//!
//! Everything here is checked against a real Lodestar v1.5.1 (`tests/lodestar_roots.rs`):
//! blocks fetched from it re-hash to the roots it reports, and their proposer, attestation and
//! sync-aggregate signatures verify with the roots computed here.
//!
//! # Lodestar v1.5.1 quirks met
//! - `GET /eth/v1/beacon/states/{id}/committees` answers `"slot": "0"` on every committee and
//!   numbers `index` across the whole epoch (slot-major). Filtering that endpoint by `slot`
//!   returns nothing. [`beacon::BeaconClient::committees`] rebuilds slot and index from the order.
//! - `GET /eth/v1/validator/duties/proposer/{next epoch}` gives the next epoch's proposers with
//!   the slots of the current epoch; [`beacon::BeaconClient::proposer_duties`] moves them into
//!   the requested epoch.
//! - `GET /eth/v2/validator/blocks/{slot}?graffiti=0x…` takes the graffiti as UTF-8 text, not
//!   as the API's hex `Bytes32`: the block carries the first 32 characters of the `0x…` string.
//!   The client sends the spec (hex) form; whoever needs readable graffiti from Lodestar 1.5.1
//!   must know this.
//! - Lodestar's CLI reads every `LODESTAR_*` environment variable as a flag: a variable such as
//!   `LODESTAR_BIN` makes it exit with "Unknown argument: bin", so it must not reach the child.
//! - `GET /eth/v1/events?topics=a,b` (comma-separated, as the API allows) makes Lodestar throw an
//!   uncaught "Unknown topic a,b" and the stream stays silent; the client sends one `topics=`
//!   per topic, which it accepts.
//! - `GET /eth/v1/beacon/states/{id}/validators?id=a,b` (comma-separated) silently returns an
//!   empty list; the client repeats `id=` per validator instead.
//! - With Altair at genesis, `/eth/v1/beacon/genesis` reports `genesis_fork_version` =
//!   the Altair version (`0x01000001` on minimal) while `/eth/v1/config/spec` has
//!   `GENESIS_FORK_VERSION = 0x00000001`; the head state's fork has
//!   `previous_version == current_version` = Altair, epoch 0. [`signing::ForkSchedule`] takes
//!   versions from the spec and gives a fork active at epoch 0 that same shape.
//! - `Accept: application/octet-stream` is ignored for `GET /eth/v2/beacon/blocks/{id}` (JSON is
//!   returned), so blocks are fetched as JSON and re-encoded to SSZ here.
//! - Attester duties are only served for the current and next epoch (HTTP 500 otherwise), and
//!   errors come as `{"statusCode", "error", "message"}` or, for schema failures, as a JSON array
//!   of validation errors; [`beacon::BeaconError`] keeps a snippet of either.
//! - `lodestar dev` writes `genesis.ssz` into its working directory and its validator client
//!   ignores `--rest.port`: it needs `--beaconNodes http://127.0.0.1:<port>`.

pub mod aggregate;
pub mod beacon;
pub mod config;
pub mod heads;
pub mod signing;
pub mod types;
