//! The chain identity a DV cluster's lock binds to, computed before any beacon node runs.
//!
//! The Docker backend creates key material after the first beacon node serves its genesis and
//! reads the genesis validators root from it. Manifests for Kubernetes hold the key material as
//! Secrets, so it is created at render time: the root of `lodestar dev --genesisValidators N`
//! is a pure function of N (the interop validators: pubkey of interop key `i`, withdrawal
//! credentials `0x00 ‖ sha256(pubkey)[1..]`, 32 ETH, active from epoch 0), independent of the
//! genesis time. The `k8s_genesis` test checks it against a real Lodestar.

use crate::spec::Preset;
use sha2::{Digest, Sha256};
use ssz_types::typenum::{U1099511627776, U48};
use ssz_types::{FixedVector, VariableList};
use tree_hash::TreeHash;
use tree_hash_derive::TreeHash;

/// `MAX_EFFECTIVE_BALANCE` (Gwei) of both presets.
const MAX_EFFECTIVE_BALANCE: u64 = 32_000_000_000;
/// `FAR_FUTURE_EPOCH`.
const FAR_FUTURE_EPOCH: u64 = u64::MAX;

/// The registry record of a validator (phase 0 `Validator` container).
#[derive(TreeHash)]
struct Validator {
    pubkey: FixedVector<u8, U48>,
    withdrawal_credentials: tree_hash::Hash256,
    effective_balance: u64,
    slashed: bool,
    activation_eligibility_epoch: u64,
    activation_epoch: u64,
    exit_epoch: u64,
    withdrawable_epoch: u64,
}

/// Genesis validators root of `lodestar dev --genesisValidators count`.
pub fn interop_genesis_validators_root(count: u64) -> [u8; 32] {
    let validators: Vec<Validator> = (0..count)
        .map(|i| {
            let pubkey = dvnode::keys::interop::interop_secret(i)
                .sk_to_pk()
                .to_bytes();
            let mut withdrawal_credentials: [u8; 32] = Sha256::digest(pubkey).into();
            withdrawal_credentials[0] = 0; // BLS_WITHDRAWAL_PREFIX
            Validator {
                pubkey: FixedVector::new(pubkey.to_vec()).expect("48-byte public key"),
                withdrawal_credentials: withdrawal_credentials.into(),
                effective_balance: MAX_EFFECTIVE_BALANCE,
                slashed: false,
                activation_eligibility_epoch: 0,
                activation_epoch: 0,
                exit_epoch: FAR_FUTURE_EPOCH,
                withdrawable_epoch: FAR_FUTURE_EPOCH,
            }
        })
        .collect();
    let list: VariableList<Validator, U1099511627776> =
        VariableList::new(validators).expect("validator count within the registry limit");
    list.tree_hash_root().0
}

/// `GENESIS_FORK_VERSION` Lodestar's `dev` chain has for a preset (what `/eth/v1/config/spec`
/// reports; the Docker backend reads it from there).
pub fn genesis_fork_version(preset: Preset) -> [u8; 4] {
    match preset {
        Preset::Minimal => [0, 0, 0, 1],
        Preset::Mainnet => [0, 0, 0, 0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Measured from Lodestar 1.5.1: `LODESTAR_PRESET=minimal lodestar dev --genesisValidators 64
    /// --params.ALTAIR_FORK_EPOCH 0` serves this root at `/eth/v1/beacon/genesis` and
    /// `GENESIS_FORK_VERSION = 0x00000001` at `/eth/v1/config/spec` (the `basic` devnet's chain).
    #[test]
    fn matches_lodestar_dev() {
        assert_eq!(
            hex::encode(interop_genesis_validators_root(64)),
            "83431ec7fcf92cfc44947fc0418e831c25e1d0806590231c439830db7ad54fda"
        );
        assert_eq!(genesis_fork_version(Preset::Minimal), [0, 0, 0, 1]);
    }

    #[test]
    fn depends_on_the_count() {
        assert_ne!(
            interop_genesis_validators_root(64),
            interop_genesis_validators_root(65)
        );
    }
}
