//! A simulated beacon node: a real HTTP server speaking the beacon-API subset dvnode and a
//! Lodestar-like validator client use, over a simulated mainnet-preset Altair chain (see
//! [`chain`]) — for scale benchmarks, never as the proof that a feature works.
//!
//! What it does like a real beacon node:
//! - serves genesis, spec, fork, validators, attester/proposer/sync duties, attestation data,
//!   block production (an Altair block with the pooled attestations aggregated per data and the
//!   sync aggregate of the previous slot), headers, blocks, the sync committee and `head` events;
//! - verifies every submitted attestation, sync committee message and block with real blst
//!   (batched: one random-linear-combination check per request, singles only on failure),
//!   refuses what does not verify or does not fit its duty, and imports a valid block as the new
//!   head (announced on the event stream);
//! - serves the aggregate of the received attestations of one data and the contribution of the
//!   received sync committee messages of one subcommittee, and verifies submitted signed
//!   aggregates and contributions like gossip validation ([`aggregation`]);
//! - refuses requests whose URI exceeds 16 KiB (431) and bodies over 10 MiB, as Lodestar's API
//!   (Node.js' default header limit, its 10 MB body limit) does;
//! - records when each object first arrived from each node ([`Record`]), which the benchmark
//!   turns into missed and late duties.
//!
//! One server listens on one port per dvnode, so arrivals are attributed to the node.

pub mod aggregation;
pub mod chain;
pub mod server;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use dvnode::eth::beacon::{
    AttesterDuty, Duties, Genesis, HeadEvent, ProposerDuty, SyncDuty, Validator, ValidatorData,
    ValidatorStatus,
};
use dvnode::eth::signing::{ForkName, ForkSchedule, ScheduledFork};
use dvnode::eth::types::{
    Attestation, AttestationData, BeaconBlockAltair, BeaconBlockBodyAltair, BlsPubkey,
    BlsSignature, Checkpoint, Epoch, Eth1Data, Fork, Graffiti, Mainnet, Root,
    SignedBeaconBlockAltair, Slot, SyncAggregate, SyncCommitteeMessage, ValidatorIndex, Version,
    FAR_FUTURE_EPOCH,
};
use dvnode::keys::tbls::{PublicKey, Signature};
use serde::Serialize;
use sha2::{Digest, Sha256};
use ssz_types::{BitList, BitVector};
use tokio::sync::broadcast;

use chain::{
    dependent_root, epoch_of, start_slot, Chain, SLOTS_PER_EPOCH, SYNC_COMMITTEE_SIZE,
    SYNC_COMMITTEE_SUBNET_COUNT,
};
use verify::{verify_batch, Item};

/// The preset of the simulated chain.
pub type P = Mainnet;

/// Mainnet fork versions.
pub const GENESIS_FORK_VERSION: Version = Version([0, 0, 0, 0]);
/// Altair (active from genesis).
pub const ALTAIR_FORK_VERSION: Version = Version([1, 0, 0, 0]);
/// Longest request URI served (Node.js' default header limit, which Lodestar 1.5.1's API on
/// Node 18 inherits: it answers 431 beyond it).
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// `MAX_ATTESTATIONS`.
const MAX_ATTESTATIONS: usize = 128;
/// Slots an attestation stays includable.
const INCLUSION_WINDOW: u64 = SLOTS_PER_EPOCH;
/// Invalid submissions kept verbatim in the record.
const INVALID_SAMPLES: usize = 20;

/// What the simulated chain is made of.
#[derive(Clone, Debug)]
pub struct SimBnConfig {
    /// Genesis time (Unix seconds).
    pub genesis_time: u64,
    /// Slot duration.
    pub seconds_per_slot: u64,
    /// Genesis validators root.
    pub genesis_validators_root: Root,
    /// The validators that sign (the cluster's DVs): indices `0..signers.len()`.
    pub signers: Vec<PublicKey>,
    /// Further validators of the network, which never sign (`0` for a chain of the cluster
    /// only).
    pub other_validators: u64,
    /// Seed of committees, proposers and sync committees.
    pub seed: [u8; 32],
    /// Listeners (one per dvnode); arrivals are recorded per listener.
    pub nodes: usize,
}

/// Kinds of signed objects a beacon node receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// Unaggregated attestation.
    Attestation,
    /// Block.
    Block,
    /// Sync committee message.
    SyncMessage,
    /// Signed aggregate and proof, keyed by its aggregator (remote-signer mode).
    Aggregate,
    /// Signed contribution and proof, keyed by its aggregator: the first valid one of the slot,
    /// any subcommittee (remote-signer mode).
    Contribution,
}

/// When one validator's object of one slot arrived, first and from each node (Unix ms).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Arrival {
    /// First valid arrival from any node.
    pub first_ms: u64,
    /// First valid arrival from each node.
    pub nodes: Vec<Option<u64>>,
}

/// What arrived: valid objects by (kind, slot, validator), refusals, requests served.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Record {
    /// Valid objects.
    pub arrivals: BTreeMap<(ObjectKind, Slot, ValidatorIndex), Arrival>,
    /// Refused objects by reason.
    pub invalid: BTreeMap<String, u64>,
    /// The first refusals verbatim.
    pub invalid_samples: Vec<String>,
    /// Requests by route.
    pub requests: BTreeMap<String, u64>,
    /// Requests for routes this server does not serve.
    pub unserved: BTreeMap<String, u64>,
}

impl Record {
    fn arrive(
        &mut self,
        nodes: usize,
        key: (ObjectKind, Slot, ValidatorIndex),
        node: usize,
        t: u64,
    ) {
        let a = self.arrivals.entry(key).or_insert_with(|| Arrival {
            first_ms: t,
            nodes: vec![None; nodes],
        });
        a.first_ms = a.first_ms.min(t);
        if let Some(slot @ None) = a.nodes.get_mut(node) {
            *slot = Some(t);
        }
    }

    /// Records the refused items of a pool submission; the submission's answer.
    fn refuse_items(
        &mut self,
        what: &str,
        node: usize,
        failures: ItemFailures,
    ) -> Result<(), ItemFailures> {
        for (i, m) in &failures {
            self.refuse(what, format!("node {node} item {i}: {m}"));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }

    fn refuse(&mut self, reason: &str, detail: String) {
        *self.invalid.entry(reason.to_string()).or_default() += 1;
        if self.invalid_samples.len() < INVALID_SAMPLES {
            self.invalid_samples.push(format!("{reason}: {detail}"));
        }
    }
}

/// A refused request or item: HTTP status and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// Message.
    pub message: String,
}

impl ApiFailure {
    fn bad(message: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status: 400,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status: 404,
            message: message.into(),
        }
    }
}

/// Per-item failures of a pool submission (index in the request, message).
pub type ItemFailures = Vec<(usize, String)>;

/// Unaggregated attestations of one data, by committee position.
struct AggEntry {
    data: AttestationData,
    committee_len: usize,
    sigs: BTreeMap<u64, Signature>,
    included: BTreeSet<u64>,
}

struct State {
    chain: Chain,
    /// Canonical signed blocks (slot 0 is the genesis block, which has none).
    blocks: BTreeMap<Slot, SignedBeaconBlockAltair<P>>,
    /// Attestations by data root.
    att_pool: HashMap<Root, AggEntry>,
    /// Verified unaggregated attestation signature per (slot, validator).
    seen_att: HashMap<(Slot, ValidatorIndex), BlsSignature>,
    /// Verified sync committee messages per slot and validator.
    sync_pool: BTreeMap<Slot, HashMap<ValidatorIndex, (Root, BlsSignature)>>,
    /// Roots of the accepted signed aggregates, with their slot.
    seen_aggregates: HashMap<Root, Slot>,
    /// Roots of the accepted signed contributions, with their slot.
    seen_contributions: HashMap<Root, Slot>,
}

/// See the [module docs](self).
pub struct SimBn {
    config: SimBnConfig,
    schedule: ForkSchedule,
    genesis_root: Root,
    state: Mutex<State>,
    record: Mutex<Record>,
    heads: broadcast::Sender<HeadEvent>,
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    dvnode::clock::unix_now().as_millis() as u64
}

fn sha(parts: &[&[u8]]) -> Root {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    Root(h.finalize().into())
}

/// The dependent root of attester duties of `epoch` (`R(e - 1)`; epoch 0 depends on genesis).
fn attester_dependent_root(epoch: Epoch, genesis_root: Root) -> Root {
    match epoch.checked_sub(1) {
        Some(e) => dependent_root(e),
        None => genesis_root,
    }
}

impl SimBn {
    /// A simulated beacon node for `config`.
    pub fn new(config: SimBnConfig) -> anyhow::Result<Arc<SimBn>> {
        let genesis_root = sha(&[b"dvlab simulated genesis block", &config.seed]);
        let mut pubkeys: Vec<BlsPubkey> = config
            .signers
            .iter()
            .map(|pk| BlsPubkey(pk.to_bytes()))
            .collect();
        // Validators that never sign get distinct placeholder keys (never verified against).
        for i in 0..config.other_validators {
            let mut b = [0u8; 48];
            b[0] = 0xee;
            b[1..9].copy_from_slice(&i.to_le_bytes());
            pubkeys.push(BlsPubkey(b));
        }
        let schedule = ForkSchedule::new(
            config.genesis_time,
            config.genesis_validators_root,
            config.seconds_per_slot,
            SLOTS_PER_EPOCH,
            vec![ScheduledFork {
                name: ForkName::Altair,
                version: ALTAIR_FORK_VERSION,
                epoch: 0,
            }],
        )?;
        let (heads, _) = broadcast::channel(64);
        Ok(Arc::new(SimBn {
            state: Mutex::new(State {
                chain: Chain::new(config.seed, pubkeys, genesis_root),
                blocks: BTreeMap::new(),
                att_pool: HashMap::new(),
                seen_att: HashMap::new(),
                sync_pool: BTreeMap::new(),
                seen_aggregates: HashMap::new(),
                seen_contributions: HashMap::new(),
            }),
            config,
            schedule,
            genesis_root,
            record: Mutex::new(Record::default()),
            heads,
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record_mut(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The chain's fork schedule (signing domains).
    pub fn schedule(&self) -> &ForkSchedule {
        &self.schedule
    }

    /// The configuration.
    pub fn config(&self) -> &SimBnConfig {
        &self.config
    }

    /// A copy of what arrived so far.
    pub fn record(&self) -> Record {
        self.record_mut().clone()
    }

    /// Counts a request on `route`.
    pub fn count_request(&self, route: &str, served: bool) {
        let mut r = self.record_mut();
        let map = if served {
            &mut r.requests
        } else {
            &mut r.unserved
        };
        *map.entry(route.to_string()).or_default() += 1;
    }

    /// Subscribes to head events.
    pub fn subscribe_heads(&self) -> broadcast::Receiver<HeadEvent> {
        self.heads.subscribe()
    }

    /// Start of `slot` (Unix ms).
    pub fn slot_start_ms(&self, slot: Slot) -> u64 {
        (self.config.genesis_time + slot * self.config.seconds_per_slot) * 1000
    }

    /// The wall-clock slot (0 before genesis).
    pub fn current_slot(&self) -> Slot {
        (now_ms() / 1000).saturating_sub(self.config.genesis_time) / self.config.seconds_per_slot
    }

    /// Whether `slot` has started, with half a second of tolerated clock disparity.
    fn slot_started(&self, slot: Slot) -> bool {
        now_ms() + 500 >= self.slot_start_ms(slot)
    }

    // -----------------------------------------------------------------------------------------
    // Chain information

    /// `GET /eth/v1/beacon/genesis`.
    pub fn genesis(&self) -> Genesis {
        Genesis {
            genesis_time: self.config.genesis_time,
            genesis_validators_root: self.config.genesis_validators_root,
            genesis_fork_version: GENESIS_FORK_VERSION,
        }
    }

    /// `GET /eth/v1/config/spec` (the keys clients read, mainnet values).
    pub fn spec(&self) -> serde_json::Value {
        let far = FAR_FUTURE_EPOCH.to_string();
        serde_json::json!({
            "CONFIG_NAME": "dvlab-bench-scale",
            "PRESET_BASE": "mainnet",
            "SECONDS_PER_SLOT": self.config.seconds_per_slot.to_string(),
            "SLOTS_PER_EPOCH": SLOTS_PER_EPOCH.to_string(),
            "GENESIS_FORK_VERSION": GENESIS_FORK_VERSION.to_string(),
            "ALTAIR_FORK_VERSION": ALTAIR_FORK_VERSION.to_string(),
            "ALTAIR_FORK_EPOCH": "0",
            "BELLATRIX_FORK_VERSION": "0x02000000",
            "BELLATRIX_FORK_EPOCH": far,
            "CAPELLA_FORK_VERSION": "0x03000000",
            "CAPELLA_FORK_EPOCH": far,
            "TARGET_COMMITTEE_SIZE": chain::TARGET_COMMITTEE_SIZE.to_string(),
            "MAX_COMMITTEES_PER_SLOT": chain::MAX_COMMITTEES_PER_SLOT.to_string(),
            "MAX_VALIDATORS_PER_COMMITTEE": "2048",
            "SYNC_COMMITTEE_SIZE": SYNC_COMMITTEE_SIZE.to_string(),
            "SYNC_COMMITTEE_SUBNET_COUNT": SYNC_COMMITTEE_SUBNET_COUNT.to_string(),
            "EPOCHS_PER_SYNC_COMMITTEE_PERIOD": chain::EPOCHS_PER_SYNC_COMMITTEE_PERIOD.to_string(),
            "TARGET_AGGREGATORS_PER_COMMITTEE": "16",
            "TARGET_AGGREGATORS_PER_SYNC_SUBCOMMITTEE": "16",
            "MAX_ATTESTATIONS": MAX_ATTESTATIONS.to_string(),
            "DOMAIN_BEACON_PROPOSER": "0x00000000",
            "DOMAIN_BEACON_ATTESTER": "0x01000000",
            "DOMAIN_RANDAO": "0x02000000",
            "DOMAIN_SELECTION_PROOF": "0x05000000",
            "DOMAIN_AGGREGATE_AND_PROOF": "0x06000000",
            "DOMAIN_SYNC_COMMITTEE": "0x07000000",
            "DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF": "0x08000000",
            "DOMAIN_CONTRIBUTION_AND_PROOF": "0x09000000",
        })
    }

    /// `GET /eth/v1/beacon/states/{id}/fork`.
    pub fn fork(&self) -> Fork {
        Fork {
            previous_version: ALTAIR_FORK_VERSION,
            current_version: ALTAIR_FORK_VERSION,
            epoch: 0,
        }
    }

    fn validator_data(index: ValidatorIndex, pubkey: BlsPubkey) -> ValidatorData {
        ValidatorData {
            index,
            balance: 32_000_000_000,
            status: ValidatorStatus::ActiveOngoing,
            validator: Validator {
                pubkey,
                withdrawal_credentials: sha(&[&pubkey.0]),
                effective_balance: 32_000_000_000,
                slashed: false,
                activation_eligibility_epoch: 0,
                activation_epoch: 0,
                exit_epoch: FAR_FUTURE_EPOCH,
                withdrawable_epoch: FAR_FUTURE_EPOCH,
            },
        }
    }

    /// `GET /eth/v1/beacon/states/{id}/validators?id=…`: the validators named by index or
    /// pubkey (unknown ones are left out, as beacon nodes do); all of them without ids.
    pub fn validators(&self, ids: &[String]) -> Result<Vec<ValidatorData>, ApiFailure> {
        let st = self.state();
        let c = &st.chain;
        if ids.is_empty() {
            return Ok((0..c.validator_count())
                .map(|i| Self::validator_data(i, c.pubkey(i).expect("in range")))
                .collect());
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let index = if id.starts_with("0x") {
                let pk: BlsPubkey = id
                    .parse()
                    .map_err(|e| ApiFailure::bad(format!("invalid validator id {id:?}: {e}")))?;
                c.index_of(&pk)
            } else {
                let i: u64 = id
                    .parse()
                    .map_err(|_| ApiFailure::bad(format!("invalid validator id {id:?}")))?;
                (i < c.validator_count()).then_some(i)
            };
            if let Some(i) = index {
                out.push(Self::validator_data(i, c.pubkey(i).expect("in range")));
            }
        }
        Ok(out)
    }

    fn check_duty_epoch(&self, epoch: Epoch) -> Result<(), ApiFailure> {
        let current = epoch_of(self.current_slot());
        if epoch > current + 1 {
            return Err(ApiFailure::bad(format!(
                "duties of epoch {epoch} requested in epoch {current}: at most one epoch ahead"
            )));
        }
        Ok(())
    }

    fn parse_indices(&self, ids: &[String]) -> Result<Vec<ValidatorIndex>, ApiFailure> {
        ids.iter()
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| ApiFailure::bad(format!("invalid validator index {s:?}")))
            })
            .collect()
    }

    /// `POST /eth/v1/validator/duties/attester/{epoch}`.
    pub fn attester_duties(
        &self,
        epoch: Epoch,
        ids: &[String],
    ) -> Result<Duties<AttesterDuty>, ApiFailure> {
        self.check_duty_epoch(epoch)?;
        let indices = self.parse_indices(ids)?;
        let mut st = self.state();
        let shuffling = st.chain.shuffling(epoch);
        let mut data = Vec::with_capacity(indices.len());
        for v in indices {
            let (Some(pubkey), Some(a)) = (st.chain.pubkey(v), shuffling.assignment(v)) else {
                continue;
            };
            data.push(AttesterDuty {
                pubkey,
                validator_index: v,
                committee_index: a.committee_index,
                committee_length: a.committee_length,
                committees_at_slot: a.committees_at_slot,
                validator_committee_index: a.position,
                slot: a.slot,
            });
        }
        Ok(Duties {
            dependent_root: Some(attester_dependent_root(epoch, self.genesis_root)),
            execution_optimistic: Some(false),
            data,
        })
    }

    /// `GET /eth/v1/validator/duties/proposer/{epoch}` (no duty at slot 0, the genesis block).
    pub fn proposer_duties(&self, epoch: Epoch) -> Result<Duties<ProposerDuty>, ApiFailure> {
        self.check_duty_epoch(epoch)?;
        let st = self.state();
        let data = (start_slot(epoch)..start_slot(epoch + 1))
            .filter_map(|slot| {
                let v = st.chain.proposer(slot)?;
                Some(ProposerDuty {
                    pubkey: st.chain.pubkey(v)?,
                    validator_index: v,
                    slot,
                })
            })
            .collect();
        Ok(Duties {
            dependent_root: Some(dependent_root(epoch)),
            execution_optimistic: Some(false),
            data,
        })
    }

    /// `POST /eth/v1/validator/duties/sync/{epoch}`.
    pub fn sync_duties(
        &self,
        epoch: Epoch,
        ids: &[String],
    ) -> Result<Duties<SyncDuty>, ApiFailure> {
        let indices = self.parse_indices(ids)?;
        let mut st = self.state();
        let committee = st.chain.sync_committee(epoch);
        let mut positions: BTreeMap<ValidatorIndex, Vec<u64>> = BTreeMap::new();
        for (p, v) in committee.iter().enumerate() {
            positions.entry(*v).or_default().push(p as u64);
        }
        let data = indices
            .into_iter()
            .filter_map(|v| {
                Some(SyncDuty {
                    pubkey: st.chain.pubkey(v)?,
                    validator_index: v,
                    validator_sync_committee_indices: positions.get(&v)?.clone(),
                })
            })
            .collect();
        Ok(Duties {
            dependent_root: None,
            execution_optimistic: Some(false),
            data,
        })
    }

    /// `GET /eth/v1/beacon/states/{id}/sync_committees?epoch=`.
    pub fn sync_committee_json(&self, epoch: Epoch) -> serde_json::Value {
        let committee = self.state().chain.sync_committee(epoch);
        let all: Vec<String> = committee.iter().map(u64::to_string).collect();
        let per = SYNC_COMMITTEE_SIZE / SYNC_COMMITTEE_SUBNET_COUNT;
        let aggregates: Vec<Vec<String>> = all.chunks(per).map(<[String]>::to_vec).collect();
        serde_json::json!({"validators": all, "validator_aggregates": aggregates})
    }

    /// Which validators of `0..signers` have which duties at `slot`: attesters, the proposer (if a
    /// signer) and sync committee members (distinct validators).
    pub fn duties_at(
        &self,
        slot: Slot,
    ) -> (
        Vec<ValidatorIndex>,
        Option<ValidatorIndex>,
        Vec<ValidatorIndex>,
    ) {
        let signers = self.config.signers.len() as u64;
        let mut st = self.state();
        let shuffling = st.chain.shuffling(epoch_of(slot));
        let mut attesters = Vec::new();
        for ci in 0..shuffling.committees_per_slot {
            attesters.extend(
                shuffling
                    .committee(slot, ci)
                    .iter()
                    .filter(|v| **v < signers),
            );
        }
        attesters.sort_unstable();
        let proposer = st.chain.proposer(slot).filter(|v| *v < signers);
        let mut sync: Vec<ValidatorIndex> = st
            .chain
            .sync_committee(epoch_of(slot))
            .iter()
            .copied()
            .filter(|v| *v < signers)
            .collect();
        sync.sort_unstable();
        sync.dedup();
        (attesters, proposer, sync)
    }

    // -----------------------------------------------------------------------------------------
    // Blocks and head

    fn head_event(&self, slot: Slot, root: Root, state_root: Root) -> HeadEvent {
        let epoch = epoch_of(slot);
        HeadEvent {
            slot,
            block: root,
            state: state_root,
            epoch_transition: slot % SLOTS_PER_EPOCH == 0,
            previous_duty_dependent_root: attester_dependent_root(epoch, self.genesis_root),
            current_duty_dependent_root: dependent_root(epoch),
            execution_optimistic: Some(false),
        }
    }

    /// The current head as a `head` event (for a new event-stream subscriber's first look).
    pub fn head(&self) -> HeadEvent {
        let st = self.state();
        let head = st.chain.head();
        let state_root = st
            .blocks
            .get(&head.slot)
            .map(|b| b.message.state_root)
            .unwrap_or_default();
        drop(st);
        self.head_event(head.slot, head.root, state_root)
    }

    /// Resolves a block id (`head`, `genesis`, `finalized`, a slot or a root) to a canonical
    /// slot.
    pub fn resolve_block_id(&self, id: &str) -> Result<Slot, ApiFailure> {
        let st = self.state();
        match id {
            "head" => Ok(st.chain.head().slot),
            "genesis" | "finalized" | "justified" => Ok(0),
            _ if id.starts_with("0x") => {
                let root: Root = id
                    .parse()
                    .map_err(|e| ApiFailure::bad(format!("invalid block id {id:?}: {e}")))?;
                st.chain
                    .block_by_root(&root)
                    .map(|b| b.slot)
                    .ok_or_else(|| ApiFailure::not_found(format!("block {id} not found")))
            }
            _ => {
                let slot: Slot = id
                    .parse()
                    .map_err(|_| ApiFailure::bad(format!("invalid block id {id:?}")))?;
                st.chain
                    .block_at(slot)
                    .map(|b| b.slot)
                    .ok_or_else(|| ApiFailure::not_found(format!("no block at slot {slot}")))
            }
        }
    }

    /// The root of the canonical block at `slot`.
    pub fn block_root(&self, slot: Slot) -> Option<Root> {
        self.state().chain.block_at(slot).map(|b| b.root)
    }

    /// `GET /eth/v1/beacon/headers/{id}` data for the canonical block at `slot`.
    pub fn header_json(&self, slot: Slot) -> Option<serde_json::Value> {
        let st = self.state();
        let root = st.chain.block_at(slot)?.root;
        let header = match st.blocks.get(&slot) {
            Some(b) => b.signed_header(),
            None => dvnode::eth::types::SignedBeaconBlockHeader {
                message: Default::default(),
                signature: BlsSignature::infinity(),
            },
        };
        Some(serde_json::json!({"root": root, "canonical": true, "header": header}))
    }

    /// The canonical signed block at `slot` (none for the genesis block).
    pub fn signed_block(&self, slot: Slot) -> Option<SignedBeaconBlockAltair<P>> {
        self.state().blocks.get(&slot).cloned()
    }

    /// `GET /eth/v1/validator/attestation_data`.
    pub fn attestation_data(
        &self,
        slot: Slot,
        committee_index: u64,
    ) -> Result<AttestationData, ApiFailure> {
        if !self.slot_started(slot) {
            return Err(ApiFailure::bad(format!(
                "attestation data for slot {slot}, which has not started"
            )));
        }
        if slot + INCLUSION_WINDOW < self.current_slot() {
            return Err(ApiFailure::bad(format!("slot {slot} is too old")));
        }
        let mut st = self.state();
        let cps = st.chain.shuffling(epoch_of(slot)).committees_per_slot;
        if committee_index >= cps {
            return Err(ApiFailure::bad(format!(
                "committee index {committee_index} at slot {slot}: {cps} committees per slot"
            )));
        }
        let epoch = epoch_of(slot);
        let head = st.chain.block_at_or_before(slot);
        let target = st.chain.block_at_or_before(start_slot(epoch));
        let source = match epoch.checked_sub(1) {
            None => Checkpoint {
                epoch: 0,
                root: self.genesis_root,
            },
            Some(e) => Checkpoint {
                epoch: e,
                root: st.chain.block_at_or_before(start_slot(e)).root,
            },
        };
        Ok(AttestationData {
            slot,
            index: committee_index,
            beacon_block_root: head.root,
            source,
            target: Checkpoint {
                epoch,
                root: target.root,
            },
        })
    }

    fn signer_key(&self, v: ValidatorIndex) -> Option<PublicKey> {
        self.config.signers.get(v as usize).copied()
    }

    /// `GET /eth/v2/validator/blocks/{slot}`: a block on the head with the pooled attestations
    /// and the previous slot's sync aggregate. The RANDAO reveal must verify.
    pub fn produce_block(
        &self,
        slot: Slot,
        randao_reveal: BlsSignature,
        graffiti: Graffiti,
    ) -> Result<BeaconBlockAltair<P>, ApiFailure> {
        if !self.slot_started(slot) {
            return Err(ApiFailure::bad(format!(
                "block for slot {slot}, which has not started"
            )));
        }
        let proposer = self
            .state()
            .chain
            .proposer(slot)
            .ok_or_else(|| ApiFailure::bad("no block at the genesis slot"))?;
        let key = self
            .signer_key(proposer)
            .ok_or_else(|| ApiFailure::bad(format!("proposer {proposer} is not simulated")))?;
        let reveal = Signature::from_bytes(&randao_reveal.0)
            .map_err(|e| ApiFailure::bad(format!("randao_reveal is not a signature: {e:?}")))?;
        let root = self.schedule.randao_signing_root(epoch_of(slot));
        if !dvnode::keys::tbls::verify(&key, &root.0, &reveal) {
            return Err(ApiFailure::bad(format!(
                "randao_reveal does not verify for proposer {proposer}"
            )));
        }
        let mut st = self.state();
        let parent = st.chain.head();
        if parent.slot >= slot {
            return Err(ApiFailure::bad(format!(
                "slot {slot} already has a block or a later one exists (head {})",
                parent.slot
            )));
        }
        let attestations = Self::select_attestations(&st.att_pool, slot);
        let sync_aggregate = Self::sync_aggregate(&mut st, slot, parent.root);
        Ok(BeaconBlockAltair {
            slot,
            proposer_index: proposer,
            parent_root: parent.root,
            state_root: sha(&[b"state", &parent.root.0, &slot.to_le_bytes()]),
            body: BeaconBlockBodyAltair {
                randao_reveal,
                eth1_data: Eth1Data::default(),
                graffiti,
                proposer_slashings: Default::default(),
                attester_slashings: Default::default(),
                attestations: ssz_types::VariableList::new(attestations)
                    .expect("at most MAX_ATTESTATIONS are selected"),
                deposits: Default::default(),
                voluntary_exits: Default::default(),
                sync_aggregate,
                extra: Default::default(),
            },
            extra: Default::default(),
        })
    }

    fn select_attestations(pool: &HashMap<Root, AggEntry>, slot: Slot) -> Vec<Attestation<P>> {
        let mut candidates: Vec<&AggEntry> = pool
            .values()
            .filter(|e| e.data.slot < slot && e.data.slot + INCLUSION_WINDOW >= slot)
            .filter(|e| e.sigs.keys().any(|p| !e.included.contains(p)))
            .collect();
        candidates.sort_by_key(|e| (std::cmp::Reverse(e.data.slot), e.data.index));
        candidates
            .into_iter()
            .take(MAX_ATTESTATIONS)
            .filter_map(|e| {
                let mut bits = BitList::with_capacity(e.committee_len).ok()?;
                let mut sigs = Vec::new();
                for (p, s) in &e.sigs {
                    if !e.included.contains(p) {
                        bits.set(*p as usize, true).ok()?;
                        sigs.push(s);
                    }
                }
                let agg = blst::min_pk::AggregateSignature::aggregate(&sigs, false).ok()?;
                Some(Attestation {
                    aggregation_bits: bits,
                    data: e.data,
                    signature: BlsSignature(agg.to_signature().to_bytes()),
                })
            })
            .collect()
    }

    fn sync_aggregate(st: &mut State, slot: Slot, parent_root: Root) -> SyncAggregate<P> {
        let mut bits = BitVector::new();
        let mut sigs = Vec::new();
        let prev = slot - 1;
        let committee = st.chain.sync_committee(epoch_of(prev));
        if let Some(messages) = st.sync_pool.get(&prev) {
            for (pos, v) in committee.iter().enumerate() {
                if let Some((root, sig)) = messages.get(v) {
                    if *root == parent_root {
                        if let Ok(s) = Signature::from_bytes(&sig.0) {
                            let _ = bits.set(pos, true);
                            sigs.push(s);
                        }
                    }
                }
            }
        }
        let signature = if sigs.is_empty() {
            BlsSignature::infinity()
        } else {
            let refs: Vec<&Signature> = sigs.iter().collect();
            match blst::min_pk::AggregateSignature::aggregate(&refs, false) {
                Ok(a) => BlsSignature(a.to_signature().to_bytes()),
                Err(_) => BlsSignature::infinity(),
            }
        };
        SyncAggregate {
            sync_committee_bits: bits,
            sync_committee_signature: signature,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Submissions

    /// `POST /eth/v1/beacon/pool/attestations` from node `node`, received at `t` (Unix ms).
    pub fn submit_attestations(
        &self,
        node: usize,
        t: u64,
        atts: Vec<Attestation<P>>,
    ) -> Result<(), ItemFailures> {
        let mut failures: ItemFailures = Vec::new();
        let mut duplicates = Vec::new();
        // (request position, validator, committee length, position, data, signature, root)
        let mut fresh = Vec::new();
        {
            let mut st = self.state();
            for (i, a) in atts.iter().enumerate() {
                let mut set = a.aggregation_bits.iter().enumerate().filter(|(_, b)| *b);
                let bit = match (set.next(), set.next()) {
                    (Some((b, _)), None) => b,
                    _ => {
                        failures.push((i, "not exactly one aggregation bit".into()));
                        continue;
                    }
                };
                let slot = a.data.slot;
                let shuffling = st.chain.shuffling(epoch_of(slot));
                let committee = shuffling.committee(slot, a.data.index);
                if committee.is_empty() || a.aggregation_bits.len() != committee.len() {
                    failures.push((
                        i,
                        format!(
                            "aggregation bits of length {} for committee {} of slot {slot} (size {})",
                            a.aggregation_bits.len(),
                            a.data.index,
                            committee.len()
                        ),
                    ));
                    continue;
                }
                if a.data.target.epoch != epoch_of(slot) {
                    failures.push((
                        i,
                        format!("target epoch {} for slot {slot}", a.data.target.epoch),
                    ));
                    continue;
                }
                let v = committee[bit];
                match st.seen_att.get(&(slot, v)) {
                    Some(sig) if *sig == a.signature => duplicates.push((slot, v)),
                    _ => fresh.push((i, v, committee.len(), bit as u64, a.data, a.signature)),
                }
            }
        }
        let mut items = Vec::with_capacity(fresh.len());
        let mut kept = Vec::with_capacity(fresh.len());
        for (i, v, len, pos, data, sig) in fresh {
            let Some(pubkey) = self.signer_key(v) else {
                failures.push((i, format!("validator {v} is not simulated")));
                continue;
            };
            let Ok(signature) = Signature::from_bytes(&sig.0) else {
                failures.push((i, "signature is not a G2 point".into()));
                continue;
            };
            items.push(Item {
                pubkey,
                message: self.schedule.attestation_signing_root(&data).0,
                signature,
            });
            kept.push((i, v, len, pos, data, sig, signature));
        }
        let valid = verify_batch(&items);
        let mut st = self.state();
        let mut rec = self.record_mut();
        for (slot, v) in duplicates {
            rec.arrive(
                self.config.nodes,
                (ObjectKind::Attestation, slot, v),
                node,
                t,
            );
        }
        for ((i, v, len, pos, data, sig, signature), ok) in kept.into_iter().zip(valid) {
            let slot = data.slot;
            if !ok {
                failures.push((
                    i,
                    format!("invalid signature of validator {v} at slot {slot}"),
                ));
                continue;
            }
            if let Some(prev) = st.seen_att.get(&(slot, v)) {
                if *prev != sig {
                    failures.push((
                        i,
                        format!("validator {v} signed a second attestation at slot {slot}"),
                    ));
                    continue;
                }
            }
            st.seen_att.insert((slot, v), sig);
            let entry = st
                .att_pool
                .entry(Root::of(&data))
                .or_insert_with(|| AggEntry {
                    data,
                    committee_len: len,
                    sigs: BTreeMap::new(),
                    included: BTreeSet::new(),
                });
            entry.sigs.insert(pos, signature);
            rec.arrive(
                self.config.nodes,
                (ObjectKind::Attestation, slot, v),
                node,
                t,
            );
        }
        rec.refuse_items("attestation", node, failures)
    }

    /// `POST /eth/v1/beacon/pool/sync_committees` from node `node`, received at `t`.
    pub fn submit_sync_messages(
        &self,
        node: usize,
        t: u64,
        msgs: Vec<SyncCommitteeMessage>,
    ) -> Result<(), ItemFailures> {
        let mut failures: ItemFailures = Vec::new();
        let mut duplicates = Vec::new();
        let mut kept = Vec::new();
        let mut items = Vec::new();
        {
            let mut st = self.state();
            for (i, m) in msgs.iter().enumerate() {
                let committee = st.chain.sync_committee(epoch_of(m.slot));
                if !committee.contains(&m.validator_index) {
                    failures.push((
                        i,
                        format!(
                            "validator {} is not in the sync committee of slot {}",
                            m.validator_index, m.slot
                        ),
                    ));
                    continue;
                }
                if let Some((root, sig)) = st
                    .sync_pool
                    .get(&m.slot)
                    .and_then(|p| p.get(&m.validator_index))
                {
                    if *root == m.beacon_block_root && *sig == m.signature {
                        duplicates.push((m.slot, m.validator_index));
                        continue;
                    }
                }
                let (Some(pubkey), Ok(signature)) = (
                    self.signer_key(m.validator_index),
                    Signature::from_bytes(&m.signature.0),
                ) else {
                    failures.push((
                        i,
                        format!(
                            "validator {} or its signature is unknown",
                            m.validator_index
                        ),
                    ));
                    continue;
                };
                items.push(Item {
                    pubkey,
                    message: self
                        .schedule
                        .sync_committee_signing_root(m.beacon_block_root, m.slot)
                        .0,
                    signature,
                });
                kept.push((i, *m));
            }
        }
        let valid = verify_batch(&items);
        let mut st = self.state();
        let mut rec = self.record_mut();
        for (slot, v) in duplicates {
            rec.arrive(
                self.config.nodes,
                (ObjectKind::SyncMessage, slot, v),
                node,
                t,
            );
        }
        for ((i, m), ok) in kept.into_iter().zip(valid) {
            if !ok {
                failures.push((
                    i,
                    format!(
                        "invalid signature of validator {} at slot {}",
                        m.validator_index, m.slot
                    ),
                ));
                continue;
            }
            st.sync_pool
                .entry(m.slot)
                .or_default()
                .insert(m.validator_index, (m.beacon_block_root, m.signature));
            rec.arrive(
                self.config.nodes,
                (ObjectKind::SyncMessage, m.slot, m.validator_index),
                node,
                t,
            );
        }
        let oldest = self.current_slot().saturating_sub(2 * SLOTS_PER_EPOCH);
        st.sync_pool.retain(|s, _| *s >= oldest);
        rec.refuse_items("sync_message", node, failures)
    }

    /// `POST /eth/v1/beacon/blocks` from node `node`, received at `t`: verified and imported as
    /// the new head.
    pub fn submit_block(
        &self,
        node: usize,
        t: u64,
        block: SignedBeaconBlockAltair<P>,
    ) -> Result<(), ApiFailure> {
        let result = self.import_block(node, t, block);
        if let Err(e) = &result {
            self.record_mut()
                .refuse("block", format!("node {node}: {}", e.message));
        }
        result
    }

    fn import_block(
        &self,
        node: usize,
        t: u64,
        block: SignedBeaconBlockAltair<P>,
    ) -> Result<(), ApiFailure> {
        let m = &block.message;
        let slot = m.slot;
        let root = block.block_root();
        let expected = self.state().chain.proposer(slot);
        if expected != Some(m.proposer_index) {
            return Err(ApiFailure::bad(format!(
                "block at slot {slot} by {} but the proposer is {expected:?}",
                m.proposer_index
            )));
        }
        let key = self
            .signer_key(m.proposer_index)
            .ok_or_else(|| ApiFailure::bad("proposer is not simulated"))?;
        if let Some(known) = self.block_root(slot) {
            if known == root {
                self.record_mut().arrive(
                    self.config.nodes,
                    (ObjectKind::Block, slot, m.proposer_index),
                    node,
                    t,
                );
                return Ok(());
            }
            return Err(ApiFailure::bad(format!(
                "a different block of slot {slot} is already imported (equivocation)"
            )));
        }
        let sig = Signature::from_bytes(&block.signature.0)
            .map_err(|e| ApiFailure::bad(format!("block signature is not a G2 point: {e:?}")))?;
        let reveal = Signature::from_bytes(&m.body.randao_reveal.0)
            .map_err(|e| ApiFailure::bad(format!("randao reveal is not a G2 point: {e:?}")))?;
        let valid = verify_batch(&[
            Item {
                pubkey: key,
                message: self.schedule.block_signing_root(m).0,
                signature: sig,
            },
            Item {
                pubkey: key,
                message: self.schedule.randao_signing_root(epoch_of(slot)).0,
                signature: reveal,
            },
        ]);
        if !valid[0] {
            return Err(ApiFailure::bad(format!(
                "invalid block signature at slot {slot}"
            )));
        }
        if !valid[1] {
            return Err(ApiFailure::bad(format!(
                "invalid randao reveal at slot {slot}"
            )));
        }
        let mut st = self.state();
        // Another node's copy may have been imported while this one was verified.
        if st.chain.block_at(slot).map(|b| b.root) == Some(root) {
            drop(st);
            self.record_mut().arrive(
                self.config.nodes,
                (ObjectKind::Block, slot, m.proposer_index),
                node,
                t,
            );
            return Ok(());
        }
        let head = st.chain.head();
        if m.parent_root != head.root {
            return Err(ApiFailure::bad(format!(
                "block at slot {slot} has parent {} but the head is {} (slot {})",
                m.parent_root, head.root, head.slot
            )));
        }
        st.chain.append(slot, root).map_err(ApiFailure::bad)?;
        for a in m.body.attestations.iter() {
            if let Some(e) = st.att_pool.get_mut(&Root::of(&a.data)) {
                for (p, set) in a.aggregation_bits.iter().enumerate() {
                    if set {
                        e.included.insert(p as u64);
                    }
                }
            }
        }
        let oldest = slot.saturating_sub(INCLUSION_WINDOW + 1);
        st.att_pool.retain(|_, e| e.data.slot >= oldest);
        st.seen_att.retain(|(s, _), _| *s >= oldest);
        let state_root = m.state_root;
        st.blocks.insert(slot, block);
        let keep_from = slot.saturating_sub(4 * SLOTS_PER_EPOCH);
        st.blocks.retain(|s, _| *s >= keep_from);
        drop(st);
        self.record_mut().arrive(
            self.config.nodes,
            (ObjectKind::Block, slot, expected.unwrap_or_default()),
            node,
            t,
        );
        let _ = self.heads.send(self.head_event(slot, root, state_root));
        Ok(())
    }
}
