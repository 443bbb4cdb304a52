//! Runs one node's [`Ceremony`] over libp2p and writes its outputs.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use libp2p::{identity::Keypair, multiaddr::Protocol as AddrProtocol, Multiaddr, PeerId};
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use super::ceremony::{Ceremony, DkgError, Fault, Outcome, Outgoing};
use super::message::Round;
use crate::{
    cluster::{create::write_share_keystores, definition::Definition, ClusterLock},
    keys::keystore::KdfChoice,
    p2p::{self, LostPeer, NetworkHandle, Protocol},
};

/// File names of the outputs inside the node directory.
pub const LOCK_FILE: &str = "cluster-lock.json";
/// Directory of the share keystores.
pub const KEYS_DIR: &str = "validator_keys";
/// The deposit data file.
pub const DEPOSIT_FILE: &str = "deposit-data.json";

/// How often messages that may have been lost are sent again.
const RESEND_INTERVAL: Duration = Duration::from_secs(1);

/// How long a node leaving the ceremony (done or aborted) waits for its last messages to be
/// acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an operator whose connection closed has to reconnect before the ceremony gives up on
/// it without waiting out the round (a transient close survives: the p2p layer redials at once
/// and then at least every 2 s, each dial bounded by its 3 s timeout). A redial that is refused
/// — nothing listens at its address any more: its process exited — ends the wait at once.
const LOST_GRACE: Duration = Duration::from_secs(10);

/// p2p limits for a ceremony: messages are large (a deal for 100 validators at threshold 7 is
/// ~45 kB) and a round may keep a node's CPU busy for seconds, so requests get longer to be
/// acknowledged and connections longer to answer pings than in a running cluster.
pub fn limits() -> p2p::Limits {
    p2p::Limits {
        request_timeout: Duration::from_secs(30),
        pending_ttl: Duration::from_secs(60),
        ping_interval: Duration::from_secs(2),
        ping_timeout: Duration::from_secs(20),
        ..p2p::Limits::default()
    }
}

/// Settings of one node's ceremony.
#[derive(Clone)]
pub struct DkgConfig {
    /// The verified definition.
    pub definition: Definition,
    /// Node directory: outputs are written here.
    pub node_dir: PathBuf,
    /// The node's p2p identity (an operator of the definition).
    pub key: Keypair,
    /// libp2p listen address.
    pub listen: Multiaddr,
    /// One address per operator in definition order (this node's own entry is not dialed).
    pub peers: Vec<Multiaddr>,
    /// Encrypt the share keystores with a cheap KDF (devnets and tests only).
    pub insecure_keys: bool,
    /// How long to wait for every operator to connect and say hello.
    pub connect_timeout: Duration,
    /// How long each later round may take.
    pub round_timeout: Duration,
    /// After writing the outputs, how long to wait for the others to confirm theirs.
    pub done_timeout: Duration,
    /// Deliberate misbehaviour (tests only).
    pub fault: Option<Fault>,
    /// p2p limits and timings.
    pub limits: p2p::Limits,
}

/// What a completed ceremony reports.
#[derive(Clone, Debug)]
pub struct DkgSummary {
    /// This node's index.
    pub index: usize,
    /// The lock hash (`0x…`).
    pub lock_hash: String,
    /// The distributed validators' public keys.
    pub validators: Vec<String>,
    /// Duration of each round, from its start to its completion on this node.
    pub rounds: Vec<(Round, Duration)>,
    /// Time spent writing the outputs.
    pub write: Duration,
    /// From start to outputs written.
    pub total: Duration,
}

/// Checks that the node directory holds no cluster yet (nothing is ever overwritten).
pub fn check_node_dir(node_dir: &Path) -> Result<()> {
    for f in [LOCK_FILE, DEPOSIT_FILE] {
        let p = node_dir.join(f);
        ensure!(
            !p.exists(),
            "{} exists: refusing to overwrite an existing cluster",
            p.display()
        );
    }
    let keys = node_dir.join(KEYS_DIR);
    if keys.exists() {
        let mut entries =
            fs::read_dir(&keys).with_context(|| format!("reading {}", keys.display()))?;
        ensure!(
            entries.next().is_none(),
            "{} is not empty: refusing to overwrite existing keys",
            keys.display()
        );
    }
    Ok(())
}

/// The addresses to dial: `peers` holds one per operator in definition order; an address
/// naming a peer (`…/p2p/ID`) must name that operator.
fn dial_addrs(
    def: &Definition,
    own: usize,
    peers: &[Multiaddr],
) -> Result<Vec<(PeerId, Multiaddr)>> {
    let n = def.nodes();
    ensure!(
        peers.len() == n,
        "--p2p-peers needs one address per operator in definition order ({n}), got {}",
        peers.len()
    );
    let mut out = Vec::new();
    for (i, addr) in peers.iter().enumerate() {
        if let Some(AddrProtocol::P2p(id)) = addr.iter().last() {
            ensure!(
                id == def.peers[i],
                "--p2p-peers entry {i} ({addr}) names peer {id}, but operator {i} is {}",
                def.peers[i]
            );
        }
        if i != own {
            out.push((def.peers[i], addr.clone()));
        }
    }
    Ok(out)
}

/// Runs the ceremony to its end: the outputs are written and the summary returned, or nothing is
/// written and the error names what went wrong (and the operator at fault, if one is).
pub async fn run(cfg: DkgConfig) -> Result<DkgSummary> {
    let def = &cfg.definition;
    let me = cfg.key.public().to_peer_id();
    let own =
        def.peers.iter().position(|p| *p == me).ok_or_else(|| {
            anyhow!("this node's peer id {me} is not an operator of the definition")
        })?;
    check_node_dir(&cfg.node_dir)?;
    let dial = dial_addrs(def, own, &cfg.peers)?;
    let (network, mut inbound) = p2p::Network::start(p2p::Config {
        key: cfg.key.clone(),
        peers: def.peers.clone(),
        listen_addrs: vec![cfg.listen.clone()],
        dial_addrs: dial,
        metrics: p2p::Metrics::default(),
        limits: cfg.limits.clone(),
    })
    .await?;
    info!(
        operator = own,
        peer = %me,
        nodes = def.nodes(),
        threshold = def.threshold,
        validators = def.num_validators,
        definition_hash = %def.file.definition_hash,
        "DKG started; waiting for every operator"
    );
    let result = drive(&cfg, own, &network, &mut inbound).await;
    network.shutdown().await;
    result
}

async fn drive(
    cfg: &DkgConfig,
    own: usize,
    network: &NetworkHandle,
    inbound: &mut tokio::sync::mpsc::Receiver<p2p::Inbound>,
) -> Result<DkgSummary> {
    let start = Instant::now();
    let (mut ceremony, hello) =
        Ceremony::new(cfg.definition.clone(), own, cfg.key.clone(), cfg.fault)
            .map_err(|e| anyhow!(e))?;
    send(network, hello);
    let mut resend = tokio::time::interval(RESEND_INTERVAL);
    resend.set_missed_tick_behavior(MissedTickBehavior::Delay);
    resend.tick().await;
    let mut round = ceremony.round();
    let mut round_start = Instant::now();
    let mut rounds = Vec::new();
    let mut written: Option<(DkgSummary, Instant)> = None;
    loop {
        let timeout = match round {
            Round::Hello => cfg.connect_timeout,
            Round::Done => cfg.done_timeout,
            _ => cfg.round_timeout,
        };
        let deadline = tokio::time::Instant::from_std(round_start + timeout);
        tokio::select! {
            msg = inbound.recv() => {
                let Some(msg) = msg else { bail!("the p2p network stopped") };
                if msg.protocol != Protocol::Dkg {
                    continue;
                }
                // Verifying a round's messages is CPU-bound (pairings, multi-scalar
                // multiplications): keep it off the async workers so the swarm stays responsive.
                let result = compute(|| ceremony.on_message(msg.from, &msg.payload));
                match result {
                    Ok(out) => {
                        if ceremony.outcome().is_some() && written.is_none() {
                            let t = Instant::now();
                            let outcome = ceremony.take_outcome().expect("checked");
                            // Keystore encryption (scrypt) is CPU-bound as well.
                            let written_ok = compute(|| write_outputs(&cfg.node_dir, &outcome, cfg.insecure_keys));
                            if let Err(e) = written_ok {
                                let err = DkgError { culprits: vec![], message: format!("writing the outputs failed: {e:#}") };
                                let notify = ceremony.abort_messages(&err);
                                return Err(abort(network, err, notify).await);
                            }
                            rounds.push((round, round_start.elapsed()));
                            let summary = DkgSummary {
                                index: own,
                                lock_hash: outcome.lock.lock_hash.clone(),
                                validators: outcome.lock.content.distributed_validators.iter().map(|v| v.distributed_public_key.clone()).collect(),
                                rounds: std::mem::take(&mut rounds),
                                write: t.elapsed(),
                                total: start.elapsed(),
                            };
                            info!(lock_hash = %summary.lock_hash, validators = summary.validators.len(), dir = %cfg.node_dir.display(), "DKG complete: lock, key shares and deposit data written");
                            written = Some((summary, Instant::now()));
                        }
                        send(network, out);
                    }
                    Err(aborted) => {
                        if let Some((summary, _)) = written {
                            warn!(error = %aborted.error, "a peer aborted after this node completed; the outputs stand");
                            return Ok(summary);
                        }
                        return Err(abort(network, aborted.error, aborted.notify).await);
                    }
                }
                if ceremony.round() != round {
                    if written.is_none() {
                        rounds.push((round, round_start.elapsed()));
                    }
                    info!(round = %ceremony.round(), after = ?round_start.elapsed(), "DKG round");
                    round = ceremony.round();
                    round_start = Instant::now();
                }
                if ceremony.all_done() {
                    let (summary, _) = written.expect("done implies written");
                    // Our own done messages are the others' signal to leave.
                    network.flush(FLUSH_TIMEOUT).await;
                    return Ok(summary);
                }
            }
            _ = resend.tick() => {
                send(network, ceremony.resend());
                // An operator that left: give up now rather than at the round's timeout. Only
                // once every message already received is handled (its abort, or the message the
                // round was waiting for, may be among them).
                if !inbound.is_empty() {
                    continue;
                }
                // Every round before the outputs are written needs a message from every
                // operator (one that already sent this round's still owes the next ones); after
                // that, only the confirmations still missing matter.
                let needed: Vec<usize> = if written.is_some() {
                    ceremony.missing()
                } else {
                    (0..ceremony.nodes()).filter(|&i| i != own).collect()
                };
                let gone = gone(&needed, &network.lost_peers(), Instant::now());
                if gone.is_empty() {
                    continue;
                }
                if let Some((summary, _)) = written {
                    let names: Vec<String> = gone.iter().map(|(i, _)| ceremony.name(*i)).collect();
                    warn!(left = ?names, "DKG complete here, but an operator left before confirming it wrote its outputs");
                    return Ok(summary);
                }
                let err = ceremony.gone_error(&gone, round_start.elapsed(), timeout, &network.connected_peers());
                let notify = ceremony.abort_messages(&err);
                return Err(abort(network, err, notify).await);
            }
            () = tokio::time::sleep_until(deadline) => {
                if let Some((summary, _)) = written {
                    let names: Vec<String> = ceremony.missing().iter().map(|&i| ceremony.name(i)).collect();
                    warn!(missing = ?names, "DKG complete here, but not every operator confirmed writing its outputs");
                    return Ok(summary);
                }
                let err = ceremony.timeout_error(timeout.as_secs(), &network.connected_peers());
                let notify = ceremony.abort_messages(&err);
                return Err(abort(network, err, notify).await);
            }
        }
    }
}

/// The operators of `waiting_for` that left the ceremony, with why they are taken for gone:
/// their connection closed and a redial was refused, or they stayed away for [`LOST_GRACE`].
fn gone(
    waiting_for: &[usize],
    lost: &BTreeMap<usize, LostPeer>,
    now: Instant,
) -> Vec<(usize, String)> {
    waiting_for
        .iter()
        .filter_map(|i| {
            let l = lost.get(i)?;
            let away = now.saturating_duration_since(l.since.into_std());
            let why = if l.refused {
                format!(
                    "its connection closed {:.1} s ago and redialing it was refused: nothing \
                     listens at its address any more",
                    away.as_secs_f64()
                )
            } else if away >= LOST_GRACE {
                format!(
                    "its connection closed {} s ago and it did not reconnect",
                    away.as_secs()
                )
            } else {
                return None;
            };
            Some((*i, why))
        })
        .collect()
}

fn send(network: &NetworkHandle, out: Vec<Outgoing>) {
    for o in out {
        if let Err(e) = network.send(o.to, Protocol::Dkg, o.payload) {
            warn!(to = o.to, error = %e, "DKG message not sent");
        }
    }
}

/// Sends `notify` (complaint, abort), waits (briefly) until it is delivered, and returns the
/// error.
async fn abort(network: &NetworkHandle, error: DkgError, notify: Vec<Outgoing>) -> anyhow::Error {
    send(network, notify);
    // Peers that already left hold their messages until the timeout: keep it short.
    network.flush(FLUSH_TIMEOUT / 2).await;
    anyhow!("DKG aborted, nothing was written: {error}")
}

/// Runs CPU-bound `f` outside the async worker (on a multi-threaded runtime), so that other
/// tasks (the p2p swarm) keep running.
fn compute<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Writes the outputs: keystores and deposit data into a temporary directory first, moved into
/// place, the lock last (so a lock exists only if everything else does).
pub fn write_outputs(node_dir: &Path, outcome: &Outcome, insecure_keys: bool) -> Result<()> {
    check_node_dir(node_dir)?;
    let tmp = node_dir.join(format!(".dkg-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let tmp_keys = tmp.join(KEYS_DIR);
    fs::create_dir_all(&tmp_keys).with_context(|| format!("creating {}", tmp_keys.display()))?;
    let kdf = if insecure_keys {
        KdfChoice::Insecure
    } else {
        KdfChoice::Scrypt
    };
    let written = write_share_keystores(&tmp_keys, &outcome.shares, kdf)?;
    crate::util::sync_files(&written)?;
    let mut deposits = serde_json::to_vec_pretty(&outcome.deposits)?;
    deposits.push(b'\n');
    crate::util::write_file(&tmp.join(DEPOSIT_FILE), &deposits, 0o644)?;
    let keys = node_dir.join(KEYS_DIR);
    if keys.exists() {
        // Checked empty above.
        fs::remove_dir(&keys).with_context(|| format!("removing empty {}", keys.display()))?;
    }
    fs::rename(&tmp_keys, &keys)
        .with_context(|| format!("moving the keystores to {}", keys.display()))?;
    fs::rename(tmp.join(DEPOSIT_FILE), node_dir.join(DEPOSIT_FILE))
        .with_context(|| format!("moving {DEPOSIT_FILE} into {}", node_dir.display()))?;
    fs::remove_dir(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    let lock_path = node_dir.join(LOCK_FILE);
    outcome.lock.save(&lock_path)?;
    ClusterLock::load(&lock_path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_is_gone_once_refused_or_away_for_the_grace() {
        let now = Instant::now();
        let lost = |ago: Duration, refused: bool| LostPeer {
            since: tokio::time::Instant::from_std(now - ago),
            refused,
        };
        let lost = BTreeMap::from([
            // Refused: gone at once.
            (1, lost(Duration::from_millis(300), true)),
            // Closed, not refused (e.g. the dial timed out): gone only after the grace.
            (2, lost(Duration::from_secs(3), false)),
            (3, lost(LOST_GRACE, false)),
            // Gone, but the round has its message: not waited for.
            (4, lost(LOST_GRACE * 2, true)),
        ]);
        let gone = gone(&[0, 1, 2, 3], &lost, now);
        let ids: Vec<usize> = gone.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, [1, 3]);
        assert!(gone[0].1.contains("redialing it was refused"), "{gone:?}");
        assert!(gone[1].1.contains("did not reconnect"), "{gone:?}");
        assert!(super::gone(&[0, 2], &lost, now).is_empty());
    }
}
