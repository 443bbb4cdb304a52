//! `dvnode exit`: this operator's part of a distributed validator's voluntary exit.
//!
//! No node can exit a DV alone. Each operator runs `dvnode exit --validator … --epoch E` next
//! to its running dvnode: the command decrypts the node's key share of the DV, signs the
//! `VoluntaryExit {epoch: E, validator_index}` with it and submits that partial exit to its
//! dvnode's validator API (`POST /eth/v1/beacon/pool/voluntary_exits`), exactly as a validator
//! client holding the share would. The dvnode verifies it against its public share and
//! exchanges it with the peers; once a threshold of operators asked for the same exit, every
//! node combines the partials, verifies the result against the DV key and submits the signed
//! exit to its beacon node. With `--wait` the command then follows the validator on the
//! beacon node until its exit epoch is set.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::clock::unix_now;
use crate::cluster::shares::ShareKeys;
use crate::cluster::ClusterLock;
use crate::eth::beacon::{BeaconClient, StateId, ValidatorId};
use crate::eth::types::{BlsPubkey, SignedVoluntaryExit, VoluntaryExit, FAR_FUTURE_EPOCH};

/// What `dvnode exit` needs.
#[derive(Clone, Debug)]
pub struct ExitParams {
    /// Node directory (`p2p-key`, `validator_keys/`).
    pub node_dir: PathBuf,
    /// Cluster lock file.
    pub lock_file: PathBuf,
    /// The DV: its public key (`0x…`) or validator index.
    pub validator: String,
    /// Exit epoch (default: the current epoch).
    pub epoch: Option<u64>,
    /// The dvnode's validator API.
    pub api_url: String,
    /// Wait this long for the exit epoch to be set on the beacon node (none: do not wait).
    pub wait: Option<Duration>,
}

/// Runs `dvnode exit` (see the [module docs](self)), reporting progress with `say`.
pub async fn run(p: &ExitParams, say: impl Fn(&str)) -> Result<()> {
    let cluster = ClusterLock::load(&p.lock_file)?;
    let key = crate::p2p::key::load(&p.node_dir.join("p2p-key"))
        .with_context(|| format!("loading the p2p key of {}", p.node_dir.display()))?;
    let me = key.public().to_peer_id();
    let own = cluster
        .peers
        .iter()
        .position(|peer| *peer == me)
        .ok_or_else(|| {
            anyhow!("this node's peer id {me} is not an operator of the cluster lock")
        })?;
    let shares = ShareKeys::load(&p.node_dir.join("validator_keys"), &cluster, own as u64 + 1)?;

    let api = BeaconClient::new(&p.api_url)?;
    let schedule = api
        .fork_schedule()
        .await
        .with_context(|| format!("reading the chain configuration from {}", p.api_url))?;
    let id: ValidatorId = p
        .validator
        .parse()
        .map_err(|e| anyhow!("--validator {:?}: {e}", p.validator))?;
    let found = api
        .state_validators(StateId::Head, std::slice::from_ref(&id))
        .await
        .with_context(|| format!("looking up validator {} on the beacon node", p.validator))?;
    let v = found
        .first()
        .ok_or_else(|| anyhow!("the beacon node does not know validator {}", p.validator))?;
    // The answer's pubkey may be rewritten to the share's by a middleware-mode validator API:
    // match the DV by index when a pubkey was not given, else by the given pubkey.
    let dv = match &id {
        ValidatorId::Pubkey(pk) => *pk,
        ValidatorId::Index(_) => cluster
            .validators
            .iter()
            .map(|d| BlsPubkey(d.pubkey.to_bytes()))
            .find(|pk| *pk == v.validator.pubkey)
            .or_else(|| {
                cluster
                    .validators
                    .iter()
                    .find(|d| {
                        d.public_shares
                            .iter()
                            .any(|s| s.to_bytes() == v.validator.pubkey.0)
                    })
                    .map(|d| BlsPubkey(d.pubkey.to_bytes()))
            })
            .ok_or_else(|| anyhow!("validator {} is not a DV of this cluster", v.index))?,
    };
    ensure!(
        shares.contains(&dv),
        "validator {dv} is not a DV of this cluster (no key share in {})",
        p.node_dir.display()
    );
    ensure!(
        v.status.is_active(),
        "validator {} ({dv}) is {:?}, not active: it cannot exit",
        v.index,
        v.status
    );
    let current = schedule
        .slot_at_time(unix_now().as_secs())
        .map(|s| schedule.epoch_at_slot(s))
        .ok_or_else(|| anyhow!("the chain has not started yet"))?;
    let epoch = p.epoch.unwrap_or(current);
    if epoch > current {
        bail!("exit epoch {epoch} is in the future (current epoch {current}); the beacon node would refuse it");
    }
    let exit = VoluntaryExit {
        epoch,
        validator_index: v.index,
    };
    let root = schedule.voluntary_exit_signing_root(&exit);
    let signature = shares
        .sign(&dv, &root)
        .ok_or_else(|| anyhow!("no key share of {dv}"))?;
    api.submit_voluntary_exit(&SignedVoluntaryExit {
        message: exit,
        signature,
    })
    .await
    .with_context(|| format!("submitting the partial exit to the dvnode at {}", p.api_url))?;
    say(&format!(
        "partial exit of validator {} ({dv}) at epoch {epoch} signed with share {} and submitted to {}; \
         it is combined once a threshold of operators submitted theirs",
        v.index,
        own + 1,
        p.api_url
    ));

    let Some(wait) = p.wait else {
        return Ok(());
    };
    let until = tokio::time::Instant::now() + wait;
    loop {
        let now = api
            .state_validators(StateId::Head, &[ValidatorId::Index(v.index)])
            .await;
        if let Ok(Some(state)) = now.map(|v| v.first().copied()) {
            if state.validator.exit_epoch != FAR_FUTURE_EPOCH {
                say(&format!(
                    "validator {} exits at epoch {} (status {:?})",
                    v.index, state.validator.exit_epoch, state.status
                ));
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= until {
            bail!(
                "validator {} has no exit epoch after {wait:?}: fewer than a threshold of operators may have submitted their partial exit, or it is not in a block yet",
                v.index
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
