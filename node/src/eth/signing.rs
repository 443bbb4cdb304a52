//! Signature domains, signing roots and the fork schedule of a chain.
//!
//! The functions follow the consensus specs (`compute_domain`, `get_domain`,
//! `compute_signing_root`); the `*_signing_root` helpers produce exactly the message a
//! validator signs for each duty. [`ForkSchedule`] knows which fork version applies at an
//! epoch, built from the beacon node's `/eth/v1/config/spec` and `/eth/v1/beacon/genesis`.

use std::fmt;

use tree_hash::TreeHash;

use super::config::{Genesis, SpecConfig};
use super::types::{
    AttestationData, BeaconBlockAltair, BeaconBlockHeader, Domain, DomainType, Epoch, Fork,
    ForkData, Preset, Root, SigningData, Slot, Version, VoluntaryExit, FAR_FUTURE_EPOCH,
};

impl DomainType {
    /// `DOMAIN_BEACON_PROPOSER`.
    pub const BEACON_PROPOSER: Self = Self([0, 0, 0, 0]);
    /// `DOMAIN_BEACON_ATTESTER`.
    pub const BEACON_ATTESTER: Self = Self([1, 0, 0, 0]);
    /// `DOMAIN_RANDAO`.
    pub const RANDAO: Self = Self([2, 0, 0, 0]);
    /// `DOMAIN_DEPOSIT`.
    pub const DEPOSIT: Self = Self([3, 0, 0, 0]);
    /// `DOMAIN_VOLUNTARY_EXIT`.
    pub const VOLUNTARY_EXIT: Self = Self([4, 0, 0, 0]);
    /// `DOMAIN_SELECTION_PROOF`.
    pub const SELECTION_PROOF: Self = Self([5, 0, 0, 0]);
    /// `DOMAIN_AGGREGATE_AND_PROOF`.
    pub const AGGREGATE_AND_PROOF: Self = Self([6, 0, 0, 0]);
    /// `DOMAIN_SYNC_COMMITTEE` (Altair).
    pub const SYNC_COMMITTEE: Self = Self([7, 0, 0, 0]);
    /// `DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF` (Altair).
    pub const SYNC_COMMITTEE_SELECTION_PROOF: Self = Self([8, 0, 0, 0]);
    /// `DOMAIN_CONTRIBUTION_AND_PROOF` (Altair).
    pub const CONTRIBUTION_AND_PROOF: Self = Self([9, 0, 0, 0]);
    /// `DOMAIN_APPLICATION_MASK` (builder API and other out-of-protocol messages).
    pub const APPLICATION_MASK: Self = Self([0, 0, 0, 1]);
}

/// `compute_fork_data_root(current_version, genesis_validators_root)`.
pub fn compute_fork_data_root(current_version: Version, genesis_validators_root: Root) -> Root {
    Root::of(&ForkData {
        current_version,
        genesis_validators_root,
    })
}

/// `compute_fork_digest(current_version, genesis_validators_root)`: the first four bytes of the
/// fork data root (used in gossip topics and ENRs).
pub fn compute_fork_digest(current_version: Version, genesis_validators_root: Root) -> [u8; 4] {
    let root = compute_fork_data_root(current_version, genesis_validators_root);
    [root.0[0], root.0[1], root.0[2], root.0[3]]
}

/// `compute_domain(domain_type, fork_version, genesis_validators_root)`.
pub fn compute_domain(
    domain_type: DomainType,
    fork_version: Version,
    genesis_validators_root: Root,
) -> Domain {
    let fork_data_root = compute_fork_data_root(fork_version, genesis_validators_root);
    let mut domain = [0u8; 32];
    domain[..4].copy_from_slice(&domain_type.0);
    domain[4..].copy_from_slice(&fork_data_root.0[..28]);
    Domain(domain)
}

/// `get_domain(state, domain_type, epoch)` for a state whose fork is `fork`.
pub fn get_domain(
    fork: &Fork,
    domain_type: DomainType,
    epoch: Epoch,
    genesis_validators_root: Root,
) -> Domain {
    let version = if epoch < fork.epoch {
        fork.previous_version
    } else {
        fork.current_version
    };
    compute_domain(domain_type, version, genesis_validators_root)
}

/// The deposit domain: `compute_domain(DOMAIN_DEPOSIT, genesis_fork_version, Root::ZERO)`
/// (deposits are valid across forks, so no genesis validators root).
pub fn deposit_domain(genesis_fork_version: Version) -> Domain {
    compute_domain(DomainType::DEPOSIT, genesis_fork_version, Root::ZERO)
}

/// `compute_signing_root(ssz_object, domain)`.
pub fn compute_signing_root<T: TreeHash + ?Sized>(object: &T, domain: Domain) -> Root {
    Root::of(&SigningData {
        object_root: Root::of(object),
        domain,
    })
}

/// Signing root of an attestation (domain `BEACON_ATTESTER` at the target epoch).
pub fn attestation_signing_root(
    data: &AttestationData,
    fork: &Fork,
    genesis_validators_root: Root,
) -> Root {
    let domain = get_domain(
        fork,
        DomainType::BEACON_ATTESTER,
        data.target.epoch,
        genesis_validators_root,
    );
    compute_signing_root(data, domain)
}

/// Signing root of a block (domain `BEACON_PROPOSER` at the block's epoch).
pub fn block_signing_root<P: Preset>(
    block: &BeaconBlockAltair<P>,
    fork: &Fork,
    genesis_validators_root: Root,
) -> Root {
    let epoch = block.slot / P::SLOTS_PER_EPOCH;
    let domain = get_domain(
        fork,
        DomainType::BEACON_PROPOSER,
        epoch,
        genesis_validators_root,
    );
    compute_signing_root(block, domain)
}

/// Signing root of a block header: equal to [`block_signing_root`] of the full block, so a
/// proposer signature can be checked from a header alone.
pub fn block_header_signing_root<P: Preset>(
    header: &BeaconBlockHeader,
    fork: &Fork,
    genesis_validators_root: Root,
) -> Root {
    let epoch = header.slot / P::SLOTS_PER_EPOCH;
    let domain = get_domain(
        fork,
        DomainType::BEACON_PROPOSER,
        epoch,
        genesis_validators_root,
    );
    compute_signing_root(header, domain)
}

/// Signing root of a RANDAO reveal for `epoch` (the object is the epoch as `uint64`).
pub fn randao_signing_root(epoch: Epoch, fork: &Fork, genesis_validators_root: Root) -> Root {
    let domain = get_domain(fork, DomainType::RANDAO, epoch, genesis_validators_root);
    compute_signing_root(&epoch, domain)
}

/// Signing root of a sync committee message: the block root (a `Root` is its own
/// `hash_tree_root`), domain `SYNC_COMMITTEE` at the epoch of `slot`.
pub fn sync_committee_signing_root<P: Preset>(
    block_root: Root,
    slot: Slot,
    fork: &Fork,
    genesis_validators_root: Root,
) -> Root {
    let epoch = slot / P::SLOTS_PER_EPOCH;
    let domain = get_domain(
        fork,
        DomainType::SYNC_COMMITTEE,
        epoch,
        genesis_validators_root,
    );
    compute_signing_root(&block_root, domain)
}

/// Signing root of an aggregator selection proof (the object is the slot as `uint64`).
pub fn selection_proof_signing_root<P: Preset>(
    slot: Slot,
    fork: &Fork,
    genesis_validators_root: Root,
) -> Root {
    let epoch = slot / P::SLOTS_PER_EPOCH;
    let domain = get_domain(
        fork,
        DomainType::SELECTION_PROOF,
        epoch,
        genesis_validators_root,
    );
    compute_signing_root(&slot, domain)
}

/// Signing root of a voluntary exit (domain `VOLUNTARY_EXIT` at the exit epoch; pre-Deneb rules).
pub fn voluntary_exit_signing_root(
    exit: &VoluntaryExit,
    fork: &Fork,
    genesis_validators_root: Root,
) -> Root {
    let domain = get_domain(
        fork,
        DomainType::VOLUNTARY_EXIT,
        exit.epoch,
        genesis_validators_root,
    );
    compute_signing_root(exit, domain)
}

/// A consensus fork.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ForkName {
    /// Phase 0.
    Phase0,
    /// Altair.
    Altair,
    /// Bellatrix (the merge).
    Bellatrix,
    /// Capella.
    Capella,
    /// Deneb.
    Deneb,
}

impl ForkName {
    /// All known forks, oldest first.
    pub const ALL: [ForkName; 5] = [
        ForkName::Phase0,
        ForkName::Altair,
        ForkName::Bellatrix,
        ForkName::Capella,
        ForkName::Deneb,
    ];

    /// The name used in the beacon API's `version` field (`"phase0"`, `"altair"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ForkName::Phase0 => "phase0",
            ForkName::Altair => "altair",
            ForkName::Bellatrix => "bellatrix",
            ForkName::Capella => "capella",
            ForkName::Deneb => "deneb",
        }
    }

    /// Prefix of the fork's keys in `/eth/v1/config/spec` (`None` for phase0, whose version
    /// is `GENESIS_FORK_VERSION` and whose epoch is 0).
    fn spec_prefix(self) -> Option<&'static str> {
        match self {
            ForkName::Phase0 => None,
            ForkName::Altair => Some("ALTAIR"),
            ForkName::Bellatrix => Some("BELLATRIX"),
            ForkName::Capella => Some("CAPELLA"),
            ForkName::Deneb => Some("DENEB"),
        }
    }
}

impl fmt::Display for ForkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ForkName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ForkName::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown fork name {s:?}"))
    }
}

/// One fork of a [`ForkSchedule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduledFork {
    /// Which fork.
    pub name: ForkName,
    /// Its version.
    pub version: Version,
    /// Its activation epoch.
    pub epoch: Epoch,
}

/// Why a [`ForkSchedule`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForkScheduleError {
    /// A required key of `/eth/v1/config/spec` is missing or malformed.
    #[error("config/spec key {key}: {reason}")]
    Config {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The schedule is inconsistent.
    #[error("invalid fork schedule: {0}")]
    Invalid(String),
    /// The beacon node runs another preset than the one this code was built for.
    #[error("beacon node preset mismatch: {0}")]
    PresetMismatch(String),
}

/// The forks of one chain and its genesis: which version signs at which epoch, and when slots
/// start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkSchedule {
    genesis_time: u64,
    genesis_validators_root: Root,
    seconds_per_slot: u64,
    slots_per_epoch: u64,
    preset_base: Option<String>,
    /// Scheduled forks, by increasing epoch; the first one has epoch 0.
    forks: Vec<ScheduledFork>,
}

impl ForkSchedule {
    /// Builds a schedule from explicit values. `forks` must start with a fork at epoch 0 and
    /// have non-decreasing epochs; forks at [`FAR_FUTURE_EPOCH`] are dropped.
    pub fn new(
        genesis_time: u64,
        genesis_validators_root: Root,
        seconds_per_slot: u64,
        slots_per_epoch: u64,
        forks: Vec<ScheduledFork>,
    ) -> Result<Self, ForkScheduleError> {
        if seconds_per_slot == 0 || slots_per_epoch == 0 {
            return Err(ForkScheduleError::Invalid(
                "SECONDS_PER_SLOT and SLOTS_PER_EPOCH must be positive".into(),
            ));
        }
        let forks: Vec<ScheduledFork> = forks
            .into_iter()
            .filter(|f| f.epoch != FAR_FUTURE_EPOCH)
            .collect();
        match forks.first() {
            Some(first) if first.epoch == 0 => {}
            _ => {
                return Err(ForkScheduleError::Invalid(
                    "no fork is active at epoch 0".into(),
                ))
            }
        }
        for pair in forks.windows(2) {
            if pair[1].epoch < pair[0].epoch || pair[1].name <= pair[0].name {
                return Err(ForkScheduleError::Invalid(format!(
                    "{} at epoch {} comes before {} at epoch {}",
                    pair[1].name, pair[1].epoch, pair[0].name, pair[0].epoch
                )));
            }
        }
        Ok(Self {
            genesis_time,
            genesis_validators_root,
            seconds_per_slot,
            slots_per_epoch,
            preset_base: None,
            forks,
        })
    }

    /// Builds the schedule from a beacon node's `/eth/v1/config/spec` and
    /// `/eth/v1/beacon/genesis`. Fork versions come from the spec (`GENESIS_FORK_VERSION`,
    /// `ALTAIR_FORK_VERSION`, ...); forks whose keys are absent or whose epoch is
    /// `FAR_FUTURE_EPOCH` are not scheduled.
    pub fn from_spec(spec: &SpecConfig, genesis: &Genesis) -> Result<Self, ForkScheduleError> {
        let cfg = |key: &str, reason: String| ForkScheduleError::Config {
            key: key.to_string(),
            reason,
        };
        let u64_of = |key: &str| spec.u64(key).map_err(|e| cfg(key, e));
        let version_of = |key: &str| spec.version(key).map_err(|e| cfg(key, e));

        let mut forks = vec![ScheduledFork {
            name: ForkName::Phase0,
            version: version_of("GENESIS_FORK_VERSION")?,
            epoch: 0,
        }];
        for name in ForkName::ALL.into_iter().skip(1) {
            let prefix = name.spec_prefix().expect("non-genesis forks have a prefix");
            let epoch_key = format!("{prefix}_FORK_EPOCH");
            if !spec.contains(&epoch_key) {
                continue;
            }
            let epoch = u64_of(&epoch_key)?;
            let version = version_of(&format!("{prefix}_FORK_VERSION"))?;
            forks.push(ScheduledFork {
                name,
                version,
                epoch,
            });
        }
        // A later fork at epoch 0 replaces the earlier ones: the chain starts on it.
        let forks = {
            let scheduled: Vec<ScheduledFork> = forks
                .into_iter()
                .filter(|f| f.epoch != FAR_FUTURE_EPOCH)
                .collect();
            let last_at_genesis = scheduled.iter().rposition(|f| f.epoch == 0).unwrap_or(0);
            scheduled[last_at_genesis..].to_vec()
        };
        let mut schedule = Self::new(
            genesis.genesis_time,
            genesis.genesis_validators_root,
            u64_of("SECONDS_PER_SLOT")?,
            u64_of("SLOTS_PER_EPOCH")?,
            forks,
        )?;
        schedule.preset_base = spec.string("PRESET_BASE").ok();
        Ok(schedule)
    }

    /// Checks that the beacon node's preset matches `P` (`PRESET_BASE` when the spec had it,
    /// and `SLOTS_PER_EPOCH`).
    pub fn ensure_preset<P: Preset>(&self) -> Result<(), ForkScheduleError> {
        if let Some(base) = &self.preset_base {
            if base != P::NAME {
                return Err(ForkScheduleError::PresetMismatch(format!(
                    "beacon node runs preset {base:?}, expected {:?}",
                    P::NAME
                )));
            }
        }
        if self.slots_per_epoch != P::SLOTS_PER_EPOCH {
            return Err(ForkScheduleError::PresetMismatch(format!(
                "beacon node has SLOTS_PER_EPOCH {}, preset {} has {}",
                self.slots_per_epoch,
                P::NAME,
                P::SLOTS_PER_EPOCH
            )));
        }
        Ok(())
    }

    /// Genesis time (unix seconds).
    pub fn genesis_time(&self) -> u64 {
        self.genesis_time
    }

    /// Genesis validators root.
    pub fn genesis_validators_root(&self) -> Root {
        self.genesis_validators_root
    }

    /// Seconds per slot.
    pub fn seconds_per_slot(&self) -> u64 {
        self.seconds_per_slot
    }

    /// Slots per epoch.
    pub fn slots_per_epoch(&self) -> u64 {
        self.slots_per_epoch
    }

    /// The scheduled forks, oldest first (the first is active at genesis).
    pub fn forks(&self) -> &[ScheduledFork] {
        &self.forks
    }

    fn index_at_epoch(&self, epoch: Epoch) -> usize {
        // `forks[0].epoch == 0`, so at least one fork matches.
        self.forks
            .iter()
            .rposition(|f| f.epoch <= epoch)
            .unwrap_or(0)
    }

    /// The fork active at `epoch`.
    pub fn fork_name_at_epoch(&self, epoch: Epoch) -> ForkName {
        self.forks[self.index_at_epoch(epoch)].name
    }

    /// The fork version that signs at `epoch`.
    pub fn version_at_epoch(&self, epoch: Epoch) -> Version {
        self.forks[self.index_at_epoch(epoch)].version
    }

    /// The state `Fork` at `epoch`. For the fork active at genesis, `previous_version` equals
    /// `current_version` (as Lodestar and Lighthouse build genesis states of a later fork).
    pub fn fork_at_epoch(&self, epoch: Epoch) -> Fork {
        let i = self.index_at_epoch(epoch);
        let current = self.forks[i];
        let previous = if i == 0 { current } else { self.forks[i - 1] };
        Fork {
            previous_version: previous.version,
            current_version: current.version,
            epoch: current.epoch,
        }
    }

    /// The epoch containing `slot`.
    pub fn epoch_at_slot(&self, slot: Slot) -> Epoch {
        slot / self.slots_per_epoch
    }

    /// The first slot of `epoch`.
    pub fn epoch_start_slot(&self, epoch: Epoch) -> Slot {
        epoch.saturating_mul(self.slots_per_epoch)
    }

    /// Unix time (seconds) at which `slot` starts.
    pub fn slot_start_time(&self, slot: Slot) -> u64 {
        self.genesis_time
            .saturating_add(slot.saturating_mul(self.seconds_per_slot))
    }

    /// The slot at unix time `unix_secs`, `None` before genesis.
    pub fn slot_at_time(&self, unix_secs: u64) -> Option<Slot> {
        unix_secs
            .checked_sub(self.genesis_time)
            .map(|since| since / self.seconds_per_slot)
    }

    /// The signature domain of `domain_type` at `epoch`.
    pub fn domain(&self, domain_type: DomainType, epoch: Epoch) -> Domain {
        compute_domain(
            domain_type,
            self.version_at_epoch(epoch),
            self.genesis_validators_root,
        )
    }

    /// [`attestation_signing_root`] on this chain.
    pub fn attestation_signing_root(&self, data: &AttestationData) -> Root {
        compute_signing_root(
            data,
            self.domain(DomainType::BEACON_ATTESTER, data.target.epoch),
        )
    }

    /// [`block_signing_root`] on this chain.
    pub fn block_signing_root<P: Preset>(&self, block: &BeaconBlockAltair<P>) -> Root {
        let epoch = self.epoch_at_slot(block.slot);
        compute_signing_root(block, self.domain(DomainType::BEACON_PROPOSER, epoch))
    }

    /// [`block_header_signing_root`] on this chain.
    pub fn block_header_signing_root(&self, header: &BeaconBlockHeader) -> Root {
        let epoch = self.epoch_at_slot(header.slot);
        compute_signing_root(header, self.domain(DomainType::BEACON_PROPOSER, epoch))
    }

    /// [`randao_signing_root`] on this chain.
    pub fn randao_signing_root(&self, epoch: Epoch) -> Root {
        compute_signing_root(&epoch, self.domain(DomainType::RANDAO, epoch))
    }

    /// [`sync_committee_signing_root`] on this chain.
    pub fn sync_committee_signing_root(&self, block_root: Root, slot: Slot) -> Root {
        let epoch = self.epoch_at_slot(slot);
        compute_signing_root(&block_root, self.domain(DomainType::SYNC_COMMITTEE, epoch))
    }

    /// [`selection_proof_signing_root`] on this chain.
    pub fn selection_proof_signing_root(&self, slot: Slot) -> Root {
        let epoch = self.epoch_at_slot(slot);
        compute_signing_root(&slot, self.domain(DomainType::SELECTION_PROOF, epoch))
    }

    /// [`voluntary_exit_signing_root`] on this chain.
    pub fn voluntary_exit_signing_root(&self, exit: &VoluntaryExit) -> Root {
        compute_signing_root(exit, self.domain(DomainType::VOLUNTARY_EXIT, exit.epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::config::{Genesis, SpecConfig};
    use crate::keys::tbls::DST as BLS_DST;

    fn interop_public_key(index: u64) -> blst::min_pk::PublicKey {
        crate::keys::interop::interop_secret(index).sk_to_pk()
    }
    use crate::eth::types::{from_json_str, Mainnet, Minimal, SignedBeaconBlockAltair};
    use blst::min_pk::Signature;
    use blst::BLST_ERROR;
    use serde_json::Value;

    fn root(s: &str) -> Root {
        s.parse().unwrap()
    }

    fn version(s: &str) -> Version {
        s.parse().unwrap()
    }

    const MAINNET_GVR: &str = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";
    /// Genesis validators root of `lodestar dev --genesisValidators 16` (interop keys).
    const DEV16_GVR: &str = "0x05d79a31a8e69ecd78114c50ce73116be33027d8431b82fff6c0b3cd9c2cbb1f";

    #[test]
    fn mainnet_fork_digests() {
        // Published mainnet fork digests (p2p ENR `eth2` field).
        let gvr = root(MAINNET_GVR);
        for (v, digest) in [
            ("0x00000000", "b5303f2a"),
            ("0x01000000", "afcaaba0"),
            ("0x02000000", "4a26c58b"),
            ("0x03000000", "bba4da96"),
        ] {
            assert_eq!(
                hex::encode(compute_fork_digest(version(v), gvr)),
                digest,
                "{v}"
            );
        }
    }

    #[test]
    fn mainnet_deposit_domain() {
        // The domain every mainnet deposit is signed with (as in staking-deposit-cli).
        assert_eq!(
            deposit_domain(version("0x00000000")).to_string(),
            "0x03000000f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a9"
        );
    }

    #[test]
    fn domain_layout() {
        let d = compute_domain(DomainType::RANDAO, version("0x01000001"), root(DEV16_GVR));
        assert_eq!(&d.0[..4], &[2, 0, 0, 0]);
        let fdr = compute_fork_data_root(version("0x01000001"), root(DEV16_GVR));
        assert_eq!(&d.0[4..], &fdr.0[..28]);
    }

    #[test]
    fn get_domain_picks_previous_version_before_the_fork_epoch() {
        let fork = Fork {
            previous_version: version("0x00000001"),
            current_version: version("0x01000001"),
            epoch: 5,
        };
        let gvr = root(DEV16_GVR);
        assert_eq!(
            get_domain(&fork, DomainType::BEACON_ATTESTER, 4, gvr),
            compute_domain(DomainType::BEACON_ATTESTER, fork.previous_version, gvr)
        );
        assert_eq!(
            get_domain(&fork, DomainType::BEACON_ATTESTER, 5, gvr),
            compute_domain(DomainType::BEACON_ATTESTER, fork.current_version, gvr)
        );
    }

    fn verify(
        pk_index: u64,
        signing_root: Root,
        sig: &crate::eth::types::BlsSignature,
    ) -> BLST_ERROR {
        let sig = Signature::from_bytes(&sig.0).unwrap();
        sig.verify(
            true,
            &signing_root.0,
            BLS_DST,
            &[],
            &interop_public_key(pk_index),
            true,
        )
    }

    fn lodestar_schedule() -> ForkSchedule {
        let spec: Value = serde_json::from_str(include_str!("testdata/spec.json")).unwrap();
        let spec: SpecConfig = serde_json::from_value(spec["data"].clone()).unwrap();
        let genesis = Genesis {
            genesis_time: 1_795_701_979,
            genesis_validators_root: root(DEV16_GVR),
            genesis_fork_version: version("0x01000001"),
        };
        ForkSchedule::from_spec(&spec, &genesis).unwrap()
    }

    #[test]
    fn lodestar_block_signatures_verify() {
        let v: Value = serde_json::from_str(include_str!("testdata/block20.json")).unwrap();
        let block: SignedBeaconBlockAltair<Minimal> =
            from_json_str(&v["data"].to_string()).unwrap();
        let fork = Fork {
            previous_version: version("0x01000001"),
            current_version: version("0x01000001"),
            epoch: 0,
        };
        let gvr = root(DEV16_GVR);
        let proposer = block.message.proposer_index;
        let signing_root = block_signing_root(&block.message, &fork, gvr);
        assert_eq!(
            verify(proposer, signing_root, &block.signature),
            BLST_ERROR::BLST_SUCCESS
        );
        assert_eq!(
            block_header_signing_root::<Minimal>(&block.message.header(), &fork, gvr),
            signing_root
        );
        let epoch = block.message.slot / 8;
        assert_eq!(
            verify(
                proposer,
                randao_signing_root(epoch, &fork, gvr),
                &block.message.body.randao_reveal
            ),
            BLST_ERROR::BLST_SUCCESS
        );
        // Another validator's key or another domain does not verify.
        assert_ne!(
            verify(proposer + 1, signing_root, &block.signature),
            BLST_ERROR::BLST_SUCCESS
        );
        assert_ne!(
            verify(
                proposer,
                randao_signing_root(epoch + 1, &fork, gvr),
                &block.message.body.randao_reveal
            ),
            BLST_ERROR::BLST_SUCCESS
        );
        // The schedule built from Lodestar's config/spec gives the same roots.
        let schedule = lodestar_schedule();
        assert_eq!(schedule.block_signing_root(&block.message), signing_root);
        assert_eq!(
            schedule.randao_signing_root(epoch),
            randao_signing_root(epoch, &fork, gvr)
        );
    }

    #[test]
    fn schedule_from_lodestar_spec_with_altair_at_genesis() {
        let s = lodestar_schedule();
        assert_eq!(s.seconds_per_slot(), 2);
        assert_eq!(s.slots_per_epoch(), 8);
        assert_eq!(
            s.forks().len(),
            1,
            "bellatrix and later are at FAR_FUTURE_EPOCH"
        );
        let altair = Fork {
            previous_version: version("0x01000001"),
            current_version: version("0x01000001"),
            epoch: 0,
        };
        assert_eq!(s.fork_at_epoch(0), altair);
        assert_eq!(s.fork_at_epoch(1_000_000), altair);
        assert_eq!(s.fork_name_at_epoch(3), ForkName::Altair);
        assert!(s.ensure_preset::<Minimal>().is_ok());
        assert!(matches!(
            s.ensure_preset::<Mainnet>(),
            Err(ForkScheduleError::PresetMismatch(_))
        ));
        assert_eq!(s.slot_start_time(3), 1_795_701_985);
        assert_eq!(s.slot_at_time(1_795_701_985), Some(3));
        assert_eq!(s.slot_at_time(1_795_701_978), None);
    }

    #[test]
    fn schedule_with_later_forks() {
        let mut spec: Value = serde_json::from_str(include_str!("testdata/spec.json")).unwrap();
        spec["data"]["ALTAIR_FORK_EPOCH"] = "2".into();
        spec["data"]["BELLATRIX_FORK_EPOCH"] = "4".into();
        let spec: SpecConfig = serde_json::from_value(spec["data"].clone()).unwrap();
        let genesis = Genesis {
            genesis_time: 0,
            genesis_validators_root: root(DEV16_GVR),
            genesis_fork_version: version("0x00000001"),
        };
        let s = ForkSchedule::from_spec(&spec, &genesis).unwrap();
        assert_eq!(s.version_at_epoch(1), version("0x00000001"));
        assert_eq!(
            s.fork_at_epoch(3),
            Fork {
                previous_version: version("0x00000001"),
                current_version: version("0x01000001"),
                epoch: 2
            }
        );
        assert_eq!(s.fork_name_at_epoch(4), ForkName::Bellatrix);
        assert_eq!(
            s.sync_committee_signing_root(Root::ZERO, 17),
            sync_committee_signing_root::<Minimal>(
                Root::ZERO,
                17,
                &s.fork_at_epoch(2),
                root(DEV16_GVR)
            )
        );
        assert_eq!(
            s.domain(DomainType::BEACON_PROPOSER, 1),
            compute_domain(
                DomainType::BEACON_PROPOSER,
                version("0x00000001"),
                root(DEV16_GVR)
            )
        );
    }

    #[test]
    fn schedule_errors_name_the_key() {
        let mut spec: Value = serde_json::from_str(include_str!("testdata/spec.json")).unwrap();
        spec["data"]["ALTAIR_FORK_VERSION"] = "0x0100".into();
        let spec: SpecConfig = serde_json::from_value(spec["data"].clone()).unwrap();
        let genesis = Genesis {
            genesis_time: 0,
            genesis_validators_root: Root::ZERO,
            genesis_fork_version: Version::ZERO,
        };
        let err = ForkSchedule::from_spec(&spec, &genesis).unwrap_err();
        assert!(
            matches!(&err, ForkScheduleError::Config { key, .. } if key == "ALTAIR_FORK_VERSION"),
            "{err}"
        );

        let mut empty = SpecConfig::default();
        let err = ForkSchedule::from_spec(&empty, &genesis).unwrap_err();
        assert!(err.to_string().contains("GENESIS_FORK_VERSION"), "{err}");
        empty
            .0
            .insert("GENESIS_FORK_VERSION".into(), "0x00000001".into());
        empty.0.insert("SLOTS_PER_EPOCH".into(), "8".into());
        empty.0.insert("SECONDS_PER_SLOT".into(), "zero".into());
        let err = ForkSchedule::from_spec(&empty, &genesis).unwrap_err();
        assert!(err.to_string().contains("SECONDS_PER_SLOT"), "{err}");

        let forks = vec![
            ScheduledFork {
                name: ForkName::Phase0,
                version: Version::ZERO,
                epoch: 0,
            },
            ScheduledFork {
                name: ForkName::Bellatrix,
                version: Version::ZERO,
                epoch: 9,
            },
            ScheduledFork {
                name: ForkName::Altair,
                version: Version::ZERO,
                epoch: 10,
            },
        ];
        assert!(ForkSchedule::new(0, Root::ZERO, 2, 8, forks).is_err());
        assert!(ForkSchedule::new(0, Root::ZERO, 2, 8, vec![]).is_err());
    }

    #[test]
    fn interop_keys_are_lodestars() {
        let interop_sign = |index: u64, root: &[u8; 32]| {
            crate::keys::tbls::sign(&crate::keys::interop::interop_secret(index), root)
        };
        // Public keys of validators 1 and 7 as Lodestar's `states/head/validators` listed them.
        for (index, pk) in [
            (1, "0xb89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0b"),
            (7, "0xa8d4c7c27795a725961317ef5953a7032ed6d83739db8b0e8a72353d1b8b4439427f7efa2c89caa03cc9f28f8cbab8ac"),
        ] {
            assert_eq!(format!("0x{}", hex::encode(interop_public_key(index).compress())), pk);
        }
        let msg = randao_signing_root(3, &lodestar_schedule().fork_at_epoch(3), root(DEV16_GVR));
        let sig = crate::eth::types::BlsSignature(interop_sign(7, &msg.0).compress());
        assert_eq!(verify(7, msg, &sig), BLST_ERROR::BLST_SUCCESS);
    }

    #[test]
    fn fork_names_parse() {
        assert_eq!("altair".parse::<ForkName>(), Ok(ForkName::Altair));
        assert!("electra-x".parse::<ForkName>().is_err());
    }
}
