//! Genesis states for devnets whose validators are not all interop keys, e.g. a cluster whose
//! keys a DKG ceremony generated: no party holds them, so `lodestar dev` (which derives every
//! genesis validator from the interop secret keys) cannot create the state.
//!
//! [`build`] follows the consensus specs' `initialize_beacon_state_from_eth1` the way Lodestar
//! 1.5.1's `lodestar dev` applies it (`initDevState` → `initializeBeaconStateFromEth1`) for a chain
//! with Altair at genesis: every deposit is processed in order (its proof of possession is
//! verified; a bad one is an error here instead of a silently skipped validator), validators with
//! a full deposit are activated at genesis, the genesis validators root is the validators' root,
//! the fork is `(ALTAIR, ALTAIR, 0)` and both sync committees are `get_next_sync_committee` of
//! the state. Given the interop deposits [`interop_deposit`] makes, the result is byte for byte
//! the `genesis.ssz` that `lodestar dev --genesisValidators N --genesisTime T` writes (checked by
//! a test against the real Lodestar); replacing some deposits by the deposit data of a DKG
//! cluster gives a genesis with those validators, which every beacon node then loads with
//! `--genesisStateFile`.
//!
//! The chain identity a dealt (create-cluster) cluster's lock binds to is computed here too,
//! before any beacon node runs: manifests for Kubernetes hold the key material as Secrets made
//! at render time, and the genesis validators root of `lodestar dev --genesisValidators N`
//! ([`interop_genesis_validators_root`]) is a pure function of N, independent of the genesis
//! time. (The Docker backend reads both from the first beacon node instead.)

use crate::shuffle::sample_by_balance;
use anyhow::{bail, ensure, Result};
use dvnode::{
    cluster::deposit::DepositMessage,
    eth::beacon::Validator,
    eth::types::{
        BeaconBlockBodyAltair, BeaconBlockHeader, BlsPubkey, BlsSignature, Checkpoint, DepositData,
        Eth1Data, Fork, Mainnet, Minimal, Preset, Root, SyncAggregate, Version, FAR_FUTURE_EPOCH,
    },
    keys::{interop::interop_secret, tbls},
};
use sha2::{Digest, Sha256};
use ssz::Encode;
use ssz_derive::{Decode, Encode};
use ssz_types::{
    typenum::{self, Unsigned},
    BitVector, FixedVector, VariableList,
};
use tree_hash_derive::TreeHash;

/// `MAX_EFFECTIVE_BALANCE` (gwei).
const MAX_EFFECTIVE_BALANCE: u64 = 32_000_000_000;
/// `EFFECTIVE_BALANCE_INCREMENT` (gwei).
const EFFECTIVE_BALANCE_INCREMENT: u64 = 1_000_000_000;
/// `MIN_SEED_LOOKAHEAD`.
const MIN_SEED_LOOKAHEAD: u64 = 1;
/// `DOMAIN_SYNC_COMMITTEE`.
const DOMAIN_SYNC_COMMITTEE: [u8; 4] = [7, 0, 0, 0];
/// The eth1 block hash `lodestar dev` seeds genesis with unless `--genesisEth1Hash` is given.
pub const LODESTAR_DEV_ETH1_BLOCK_HASH: [u8; 32] = [0x0b; 32];

/// `VALIDATOR_REGISTRY_LIMIT` (2^40).
type ValidatorRegistryLimit = typenum::U1099511627776;
/// `HISTORICAL_ROOTS_LIMIT` (2^24).
type HistoricalRootsLimit = typenum::U16777216;
/// `2^DEPOSIT_CONTRACT_TREE_DEPTH`: the deposit data root list of the deposit contract.
type DepositListLimit = typenum::U4294967296;

/// The preset constants a beacon state needs beyond [`Preset`].
pub trait StatePreset: Preset {
    /// `SLOTS_PER_HISTORICAL_ROOT`.
    type SlotsPerHistoricalRoot: Unsigned + Clone + std::fmt::Debug + PartialEq + Eq + Send + Sync;
    /// `EPOCHS_PER_HISTORICAL_VECTOR`.
    type EpochsPerHistoricalVector: Unsigned
        + Clone
        + std::fmt::Debug
        + PartialEq
        + Eq
        + Send
        + Sync;
    /// `EPOCHS_PER_SLASHINGS_VECTOR`.
    type EpochsPerSlashingsVector: Unsigned + Clone + std::fmt::Debug + PartialEq + Eq + Send + Sync;
    /// `EPOCHS_PER_ETH1_VOTING_PERIOD * SLOTS_PER_EPOCH`.
    type Eth1DataVotesLimit: Unsigned + Clone + std::fmt::Debug + PartialEq + Eq + Send + Sync;
    /// `SHUFFLE_ROUND_COUNT`.
    const SHUFFLE_ROUND_COUNT: u8;
}

impl StatePreset for Minimal {
    type SlotsPerHistoricalRoot = typenum::U64;
    type EpochsPerHistoricalVector = typenum::U64;
    type EpochsPerSlashingsVector = typenum::U64;
    type Eth1DataVotesLimit = typenum::U32;
    const SHUFFLE_ROUND_COUNT: u8 = 10;
}

impl StatePreset for Mainnet {
    type SlotsPerHistoricalRoot = typenum::U8192;
    type EpochsPerHistoricalVector = typenum::U65536;
    type EpochsPerSlashingsVector = typenum::U8192;
    type Eth1DataVotesLimit = typenum::U2048;
    const SHUFFLE_ROUND_COUNT: u8 = 90;
}

/// A sync committee (Altair).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, TreeHash)]
pub struct SyncCommittee<P: StatePreset> {
    /// Members' public keys.
    pub pubkeys: FixedVector<BlsPubkey, P::SyncCommitteeSize>,
    /// Their aggregate.
    pub aggregate_pubkey: BlsPubkey,
}

/// The Altair beacon state.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, TreeHash)]
pub struct BeaconStateAltair<P: StatePreset> {
    /// Genesis time (UNIX seconds).
    pub genesis_time: u64,
    /// `hash_tree_root(validators)` at genesis.
    pub genesis_validators_root: Root,
    /// Slot.
    pub slot: u64,
    /// Fork.
    pub fork: Fork,
    /// Latest block header.
    pub latest_block_header: BeaconBlockHeader,
    /// Block roots.
    pub block_roots: FixedVector<Root, P::SlotsPerHistoricalRoot>,
    /// State roots.
    pub state_roots: FixedVector<Root, P::SlotsPerHistoricalRoot>,
    /// Historical roots.
    pub historical_roots: VariableList<Root, HistoricalRootsLimit>,
    /// Eth1 data.
    pub eth1_data: Eth1Data,
    /// Eth1 data votes.
    pub eth1_data_votes: VariableList<Eth1Data, P::Eth1DataVotesLimit>,
    /// Deposits processed.
    pub eth1_deposit_index: u64,
    /// Validator registry.
    pub validators: VariableList<Validator, ValidatorRegistryLimit>,
    /// Balances (gwei).
    pub balances: VariableList<u64, ValidatorRegistryLimit>,
    /// RANDAO mixes.
    pub randao_mixes: FixedVector<Root, P::EpochsPerHistoricalVector>,
    /// Slashings per epoch.
    pub slashings: FixedVector<u64, P::EpochsPerSlashingsVector>,
    /// Previous epoch participation flags.
    pub previous_epoch_participation: VariableList<u8, ValidatorRegistryLimit>,
    /// Current epoch participation flags.
    pub current_epoch_participation: VariableList<u8, ValidatorRegistryLimit>,
    /// Justification bits.
    pub justification_bits: BitVector<typenum::U4>,
    /// Previous justified checkpoint.
    pub previous_justified_checkpoint: Checkpoint,
    /// Current justified checkpoint.
    pub current_justified_checkpoint: Checkpoint,
    /// Finalized checkpoint.
    pub finalized_checkpoint: Checkpoint,
    /// Inactivity scores.
    pub inactivity_scores: VariableList<u64, ValidatorRegistryLimit>,
    /// Current sync committee.
    pub current_sync_committee: SyncCommittee<P>,
    /// Next sync committee.
    pub next_sync_committee: SyncCommittee<P>,
}

/// The chain parameters of a genesis.
#[derive(Clone, Debug)]
pub struct GenesisParams {
    /// Genesis time (UNIX seconds).
    pub genesis_time: u64,
    /// Eth1 block hash the state is seeded with (RANDAO mixes, eth1 data).
    pub eth1_block_hash: [u8; 32],
    /// `GENESIS_FORK_VERSION`: the deposit signature domain.
    pub genesis_fork_version: Version,
    /// `ALTAIR_FORK_VERSION`: the state's fork (Altair at genesis).
    pub altair_fork_version: Version,
}

impl GenesisParams {
    /// The fork versions of the `minimal` or `mainnet` preset's default chain configuration
    /// (what `lodestar dev` runs), with Lodestar's dev eth1 block hash.
    pub fn lodestar_dev(preset: &str, genesis_time: u64) -> Result<Self> {
        let preset = match preset {
            "minimal" => crate::spec::Preset::Minimal,
            "mainnet" => crate::spec::Preset::Mainnet,
            other => bail!("no chain configuration for preset {other:?}"),
        };
        let altair = match preset {
            crate::spec::Preset::Minimal => [1, 0, 0, 1],
            crate::spec::Preset::Mainnet => [1, 0, 0, 0],
        };
        Ok(GenesisParams {
            genesis_time,
            eth1_block_hash: LODESTAR_DEV_ETH1_BLOCK_HASH,
            genesis_fork_version: genesis_fork_version(preset),
            altair_fork_version: Version(altair),
        })
    }
}

/// `GENESIS_FORK_VERSION` of Lodestar's `dev` chain for a preset (what `/eth/v1/config/spec`
/// reports; the Docker backend reads it from there): the deposits' signature domain.
pub fn genesis_fork_version(preset: crate::spec::Preset) -> Version {
    match preset {
        crate::spec::Preset::Minimal => Version([0, 0, 0, 1]),
        crate::spec::Preset::Mainnet => Version([0, 0, 0, 0]),
    }
}

/// `0x00` withdrawal credentials of `pubkey`: `0x00 ‖ sha256(pubkey)[1..]`.
fn bls_withdrawal_credentials(pubkey: &[u8; 48]) -> Root {
    let mut wc: [u8; 32] = Sha256::digest(pubkey).into();
    wc[0] = 0; // BLS_WITHDRAWAL_PREFIX
    Root(wc)
}

/// The registry record of a validator deposited with `d` at genesis (active if the deposit is
/// full).
fn genesis_validator(d: &DepositData) -> Validator {
    let effective = (d.amount - d.amount % EFFECTIVE_BALANCE_INCREMENT).min(MAX_EFFECTIVE_BALANCE);
    let active = effective == MAX_EFFECTIVE_BALANCE;
    Validator {
        pubkey: d.pubkey,
        withdrawal_credentials: d.withdrawal_credentials,
        effective_balance: effective,
        slashed: false,
        activation_eligibility_epoch: if active { 0 } else { FAR_FUTURE_EPOCH },
        activation_epoch: if active { 0 } else { FAR_FUTURE_EPOCH },
        exit_epoch: FAR_FUTURE_EPOCH,
        withdrawable_epoch: FAR_FUTURE_EPOCH,
    }
}

/// Genesis validators root of `lodestar dev --genesisValidators count` (the interop
/// validators: pubkey of interop key `i`, `0x00` credentials, 32 ETH, active from epoch 0).
pub fn interop_genesis_validators_root(count: u64) -> Root {
    let validators: Vec<Validator> = (0..count)
        .map(|i| {
            let pubkey = BlsPubkey(interop_secret(i).sk_to_pk().to_bytes());
            genesis_validator(&DepositData {
                pubkey,
                withdrawal_credentials: bls_withdrawal_credentials(&pubkey.0),
                amount: MAX_EFFECTIVE_BALANCE,
                signature: BlsSignature::default(),
            })
        })
        .collect();
    let list: VariableList<Validator, ValidatorRegistryLimit> =
        VariableList::new(validators).expect("validator count within the registry limit");
    Root::of(&list)
}

/// The deposit `lodestar dev` makes for interop validator `index`: 32 ETH, `0x00` withdrawal
/// credentials of the key itself, signed by the interop key for `genesis_fork_version`.
pub fn interop_deposit(index: u64, genesis_fork_version: Version) -> DepositData {
    let sk = interop_secret(index);
    let pubkey = sk.sk_to_pk().to_bytes();
    let message = DepositMessage {
        pubkey: BlsPubkey(pubkey),
        withdrawal_credentials: bls_withdrawal_credentials(&pubkey),
        amount: MAX_EFFECTIVE_BALANCE,
    };
    let sig = tbls::sign(&sk, message.signing_root(genesis_fork_version).as_bytes());
    message.with_signature(BlsSignature(sig.to_bytes()))
}

/// Builds the Altair genesis state of `deposits` (processed in order; validator `i` comes from
/// deposit `i`). Every deposit's proof of possession must verify.
pub fn build<P: StatePreset>(
    params: &GenesisParams,
    deposits: &[DepositData],
) -> Result<BeaconStateAltair<P>> {
    ensure!(!deposits.is_empty(), "a genesis needs at least one deposit");
    let n = deposits.len();
    let mut validators = Vec::with_capacity(n);
    let mut balances = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    for (i, d) in deposits.iter().enumerate() {
        ensure!(
            seen.insert(d.pubkey),
            "deposit {i}: pubkey {} is deposited twice",
            d.pubkey
        );
        let message = DepositMessage {
            pubkey: d.pubkey,
            withdrawal_credentials: d.withdrawal_credentials,
            amount: d.amount,
        };
        let pk = tbls::PublicKey::key_validate(&d.pubkey.0)
            .map_err(|e| anyhow::anyhow!("deposit {i}: invalid pubkey {} ({e:?})", d.pubkey))?;
        let sig = tbls::Signature::from_bytes(&d.signature.0)
            .map_err(|e| anyhow::anyhow!("deposit {i}: invalid signature ({e:?})"))?;
        ensure!(
            tbls::verify(
                &pk,
                message.signing_root(params.genesis_fork_version).as_bytes(),
                &sig
            ),
            "deposit {i} (pubkey {}): the signature is not a valid deposit signature for fork \
             version {}",
            d.pubkey,
            params.genesis_fork_version
        );
        validators.push(genesis_validator(d));
        balances.push(d.amount);
    }
    let deposit_roots: VariableList<Root, DepositListLimit> =
        VariableList::new(deposits.iter().map(Root::of).collect())
            .map_err(|e| anyhow::anyhow!("deposit list: {e:?}"))?;
    let validators: VariableList<Validator, ValidatorRegistryLimit> =
        VariableList::new(validators).map_err(|e| anyhow::anyhow!("validators: {e:?}"))?;
    let genesis_validators_root = Root::of(&validators);
    let block_hash = Root(params.eth1_block_hash);
    let sync_committee = next_sync_committee::<P>(&validators, &params.eth1_block_hash)?;
    let zeros = |len: usize| VariableList::new(vec![0u8; len]).expect("within the registry limit");
    Ok(BeaconStateAltair {
        genesis_time: params.genesis_time,
        genesis_validators_root,
        slot: 0,
        fork: Fork {
            previous_version: params.altair_fork_version,
            current_version: params.altair_fork_version,
            epoch: 0,
        },
        latest_block_header: BeaconBlockHeader {
            slot: 0,
            proposer_index: 0,
            parent_root: Root::ZERO,
            state_root: Root::ZERO,
            body_root: Root::of(&empty_body::<P>()),
        },
        block_roots: FixedVector::default(),
        state_roots: FixedVector::default(),
        historical_roots: VariableList::default(),
        eth1_data: Eth1Data {
            deposit_root: Root::of(&deposit_roots),
            deposit_count: n as u64,
            block_hash,
        },
        eth1_data_votes: VariableList::default(),
        eth1_deposit_index: n as u64,
        validators,
        balances: VariableList::new(balances).expect("within the registry limit"),
        randao_mixes: FixedVector::from_elem(block_hash),
        slashings: FixedVector::default(),
        previous_epoch_participation: zeros(n),
        current_epoch_participation: zeros(n),
        justification_bits: BitVector::new(),
        previous_justified_checkpoint: Checkpoint::default(),
        current_justified_checkpoint: Checkpoint::default(),
        finalized_checkpoint: Checkpoint::default(),
        inactivity_scores: VariableList::new(vec![0u64; n]).expect("within the registry limit"),
        current_sync_committee: sync_committee.clone(),
        next_sync_committee: sync_committee,
    })
}

/// [`build`] for the preset named `preset`, SSZ-encoded (the `--genesisStateFile` format).
pub fn build_ssz(
    preset: &str,
    params: &GenesisParams,
    deposits: &[DepositData],
) -> Result<Vec<u8>> {
    match preset {
        "minimal" => Ok(build::<Minimal>(params, deposits)?.as_ssz_bytes()),
        "mainnet" => Ok(build::<Mainnet>(params, deposits)?.as_ssz_bytes()),
        other => bail!("no beacon state types for preset {other:?}"),
    }
}

/// The checked outputs of a `keys: dkg` cluster's ceremony (every operator's `cluster-lock.json`
/// in node order, one operator's `deposit-data.json`): every lock the same, one deposit per
/// validator, each verifying and for the lock's validator `j`. Returns the deposits in
/// validator order. Both backends check the ceremony with this.
pub fn ceremony_deposits(
    cluster: &str,
    validators: u64,
    locks: &[dvnode::cluster::lock::Cluster],
    deposit_data_json: &str,
) -> Result<Vec<DepositData>> {
    let first = locks
        .first()
        .ok_or_else(|| anyhow::anyhow!("cluster {cluster}: no lock after the DKG"))?;
    for (n, lock) in locks.iter().enumerate().skip(1) {
        ensure!(
            lock.lock.lock_hash == first.lock.lock_hash,
            "cluster {cluster}: node {n}'s lock differs from node 0's after the DKG"
        );
    }
    let deposits: Vec<dvnode::cluster::deposit::DepositDataJson> =
        serde_json::from_str(deposit_data_json)
            .map_err(|e| anyhow::anyhow!("cluster {cluster}: node 0's deposit-data.json: {e}"))?;
    let deposits = deposits
        .iter()
        .enumerate()
        .map(|(j, d)| {
            d.verify()
                .map_err(|e| anyhow::anyhow!("cluster {cluster}: deposit of validator {j}: {e:#}"))
        })
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        deposits.len() as u64 == validators,
        "cluster {cluster}: the DKG made {} deposits, expected {validators}",
        deposits.len()
    );
    for (j, (d, v)) in deposits.iter().zip(&first.validators).enumerate() {
        ensure!(
            d.pubkey.0 == v.pubkey.to_bytes(),
            "cluster {cluster}: deposit {j} is not for the lock's validator {j}"
        );
    }
    Ok(deposits)
}

/// The genesis state (SSZ) of a devnet with `keys: dkg` clusters: `lodestar dev`'s chain
/// under `preset` at `genesis_time`, with `genesis_validators` validators, each interop key `i`
/// except those in a range of `dkg`, which are that cluster's ceremony deposits.
pub fn state_with_ceremonies(
    preset: &str,
    genesis_time: u64,
    genesis_validators: u64,
    dkg: &[(std::ops::Range<u64>, Vec<DepositData>)],
) -> Result<Vec<u8>> {
    let params = GenesisParams::lodestar_dev(preset, genesis_time)?;
    let deposits: Vec<DepositData> = (0..genesis_validators)
        .map(|i| {
            dkg.iter()
                .find(|(range, _)| range.contains(&i))
                .map_or_else(
                    || interop_deposit(i, params.genesis_fork_version),
                    |(range, d)| d[(i - range.start) as usize],
                )
        })
        .collect();
    build_ssz(preset, &params, &deposits)
}

/// The default (all-zero) Altair block body.
fn empty_body<P: Preset>() -> BeaconBlockBodyAltair<P> {
    BeaconBlockBodyAltair {
        randao_reveal: BlsSignature::default(),
        eth1_data: Eth1Data::default(),
        graffiti: Default::default(),
        proposer_slashings: VariableList::default(),
        attester_slashings: VariableList::default(),
        attestations: VariableList::default(),
        deposits: VariableList::default(),
        voluntary_exits: VariableList::default(),
        sync_aggregate: SyncAggregate {
            sync_committee_bits: BitVector::new(),
            sync_committee_signature: BlsSignature::default(),
        },
        extra: Default::default(),
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `get_next_sync_committee` of a genesis state (epoch 0, every RANDAO mix = the eth1 block
/// hash).
fn next_sync_committee<P: StatePreset>(
    validators: &[Validator],
    eth1_block_hash: &[u8; 32],
) -> Result<SyncCommittee<P>> {
    let epoch: u64 = 1;
    let active: Vec<usize> = validators
        .iter()
        .enumerate()
        .filter(|(_, v)| v.activation_epoch <= epoch && epoch < v.exit_epoch)
        .map(|(i, _)| i)
        .collect();
    ensure!(!active.is_empty(), "no validator is active at genesis");
    // get_seed(state, epoch, DOMAIN_SYNC_COMMITTEE); every mix is the eth1 block hash, so the
    // lookahead index (epoch + EPOCHS_PER_HISTORICAL_VECTOR − MIN_SEED_LOOKAHEAD − 1) does not
    // matter beyond being in range.
    let _ = MIN_SEED_LOOKAHEAD;
    let seed = sha256(&[
        &DOMAIN_SYNC_COMMITTEE,
        &epoch.to_le_bytes(),
        eth1_block_hash,
    ]);
    let size = P::SyncCommitteeSize::to_usize();
    let balances: Vec<u64> = active
        .iter()
        .map(|i| validators[*i].effective_balance)
        .collect();
    let members: Vec<_> = sample_by_balance(
        &balances,
        MAX_EFFECTIVE_BALANCE,
        &seed,
        P::SHUFFLE_ROUND_COUNT,
        size,
    )
    .into_iter()
    .map(|p| validators[active[p]].pubkey)
    .collect();
    let keys = members
        .iter()
        .map(|p| tbls::PublicKey::from_bytes(&p.0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("sync committee member key: {e:?}"))?;
    let refs: Vec<&tbls::PublicKey> = keys.iter().collect();
    let aggregate = blst::min_pk::AggregatePublicKey::aggregate(&refs, false)
        .map_err(|e| anyhow::anyhow!("aggregating the sync committee: {e:?}"))?
        .to_public_key();
    Ok(SyncCommittee {
        pubkeys: FixedVector::new(members).map_err(|e| anyhow::anyhow!("{e:?}"))?,
        aggregate_pubkey: BlsPubkey(aggregate.to_bytes()),
    })
}

/// Decodes an SSZ Altair state of preset `P`.
pub fn decode<P: StatePreset>(ssz_bytes: &[u8]) -> Result<BeaconStateAltair<P>> {
    <BeaconStateAltair<P> as ssz::Decode>::from_ssz_bytes(ssz_bytes).map_err(|e| {
        anyhow::anyhow!(
            "not an Altair beacon state of the {} preset: {e:?}",
            P::NAME
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Measured from Lodestar 1.5.1: `LODESTAR_PRESET=minimal lodestar dev --genesisValidators 64
    /// --params.ALTAIR_FORK_EPOCH 0` serves this root at `/eth/v1/beacon/genesis` and
    /// `GENESIS_FORK_VERSION = 0x00000001` at `/eth/v1/config/spec` (the `basic` devnet's chain).
    #[test]
    fn interop_root_matches_lodestar_dev() {
        assert_eq!(
            interop_genesis_validators_root(64).to_string(),
            "0x83431ec7fcf92cfc44947fc0418e831c25e1d0806590231c439830db7ad54fda"
        );
        assert_ne!(
            interop_genesis_validators_root(64),
            interop_genesis_validators_root(65)
        );
        assert_eq!(
            genesis_fork_version(crate::spec::Preset::Minimal),
            Version([0, 0, 0, 1])
        );
        // The root of the state built from interop deposits is the same.
        let params = GenesisParams::lodestar_dev("minimal", 1_700_000_000).unwrap();
        let deposits: Vec<DepositData> = (0..64)
            .map(|i| interop_deposit(i, params.genesis_fork_version))
            .collect();
        let state = build::<Minimal>(&params, &deposits).unwrap();
        assert_eq!(
            state.genesis_validators_root,
            interop_genesis_validators_root(64)
        );
    }

    #[test]
    fn interop_genesis_is_deterministic_and_rejects_bad_deposits() {
        let params = GenesisParams::lodestar_dev("minimal", 1_700_000_000).unwrap();
        let deposits: Vec<DepositData> = (0..16)
            .map(|i| interop_deposit(i, params.genesis_fork_version))
            .collect();
        let a = build_ssz("minimal", &params, &deposits).unwrap();
        assert_eq!(a, build_ssz("minimal", &params, &deposits).unwrap());
        let state = decode::<Minimal>(&a).unwrap();
        assert_eq!(state.validators.len(), 16);
        assert_eq!(state.validators[3].pubkey, deposits[3].pubkey);
        assert_eq!(state.genesis_validators_root, Root::of(&state.validators));

        let mut bad = deposits.clone();
        bad[5].amount += 1;
        let e = format!("{:#}", build_ssz("minimal", &params, &bad).unwrap_err());
        assert!(e.contains("deposit 5") && e.contains("signature"), "{e}");
        let mut twice = deposits.clone();
        twice[7] = twice[2];
        let e = format!("{:#}", build_ssz("minimal", &params, &twice).unwrap_err());
        assert!(e.contains("deposited twice"), "{e}");
        // Another fork version's deposits do not verify.
        let other = GenesisParams::lodestar_dev("mainnet", 1).unwrap();
        assert!(build_ssz("minimal", &other, &deposits).is_err());
    }
}
