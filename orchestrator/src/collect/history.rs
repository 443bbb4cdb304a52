//! Collection for `dvlab analyze`: an epoch range of any chain, from one beacon node, through
//! the standard beacon API only, into the same [`Collector`] (and so the same raw frames) a
//! devnet run fills.
//!
//! What a beacon node serves of the past decides what can be analysed:
//! - blocks and headers by slot: every canonical slot (finalized ones from the archive);
//! - attester committees (`/eth/v1/beacon/states/{id}/committees`): only while a state of the
//!   epoch or the next is in memory — Lodestar 1.5.1 keeps states from the finalized epoch on,
//!   so roughly the last 2–3 epochs. Older committees are computed from the head state
//!   (`/eth/v2/debug/beacon/states/head`, [`super::shuffling`]) as far back as its RANDAO mixes
//!   reach (`EPOCHS_PER_HISTORICAL_VECTOR`), and compared with the node's wherever it still
//!   answers; without the debug endpoint, older epochs are refused with the reason;
//! - proposer duties: Lodestar 1.5.1 answers only the current and next epoch, so a past
//!   epoch's proposers are computed from the head state (spec `get_beacon_proposer_index`,
//!   with the head state's effective balances) and kept only where every canonical block of
//!   the epoch agrees with them;
//! - sync committees: the head state's current and next period only; those of earlier periods
//!   are computed from the head state (spec `get_next_sync_committee_indices`), used only if
//!   the same computation gives the head's current committee as the node serves it.
//!
//! Requests are bounded ([`CONCURRENCY`] at once) and retried ([`ATTEMPTS`]) on connection
//! errors, timeouts and 5xx answers — except those for committees, proposer duties and sync
//! committees, which nodes refuse for the past with 4xx or 5xx (Lodestar 1.5.1: 500) and which
//! have another source or are reported as not served.

use super::shuffling::{RegistryView, ShufflingParams};
use super::{field, num_at, parse_committees, sync_members, Collector, Shared};
use crate::data::{BeaconNodeMeta, RawData};
use crate::spec::analyze::{EpochRange, ValidatorSpec};
use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Requests in flight at once.
pub const CONCURRENCY: usize = 8;
/// Attempts per request (connection errors, timeouts, 5xx).
pub const ATTEMPTS: u32 = 4;

/// Chain facts read once from the beacon node.
#[derive(Debug, Clone)]
pub struct ChainFacts {
    /// Genesis UNIX time.
    pub genesis_time: u64,
    /// Seconds per slot.
    pub seconds_per_slot: u64,
    /// Committee parameters (slots per epoch among them).
    pub params: ShufflingParams,
}

/// One beacon node and what was collected from it so far.
pub struct History {
    c: Collector,
    url: String,
    /// Chain constants.
    pub facts: ChainFacts,
    view: Option<RegistryView>,
    /// Canonical roots by slot of the collected slots.
    chain: BTreeMap<u64, String>,
    /// Slots fetched (whether or not they had a block).
    fetched: BTreeSet<u64>,
    /// Epochs whose committees came from the node / were computed / were compared equal.
    pub committee_sources: BTreeMap<u64, &'static str>,
    /// Epochs whose proposer duties the node did not serve.
    proposers_wanted: BTreeSet<u64>,
    /// Where each epoch's proposers came from (served, or computed and checked against blocks).
    pub proposer_sources: BTreeMap<u64, String>,
    /// Sync-committee periods computed from the head state.
    pub sync_sources: BTreeMap<u64, String>,
    /// Whether the head state's computed sync committee equals the served one (the period),
    /// or why not: checked once, before any past sync committee is computed.
    sync_check: Option<Result<u64, String>>,
    /// What could not be collected, one line each.
    pub notes: BTreeSet<String>,
}

/// `url` without user or password, for reports and messages.
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => url.to_string(),
    }
}

fn spec_u64(spec: &Value, key: &str) -> Result<u64> {
    num_at(spec, &["data", key]).with_context(|| format!("/eth/v1/config/spec: {key}"))
}

impl History {
    /// Connects to the beacon node at `url` and reads its genesis and chain constants. An
    /// unreachable node or one that does not speak the beacon API is an error naming it.
    pub async fn connect(url: &str) -> Result<History> {
        let shown = display_url(url);
        reqwest::Url::parse(url).map_err(|e| anyhow!("--beacon-node `{url}` is not a URL: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()?;
        let bn = BeaconNodeMeta {
            name: "bn".into(),
            api_url: url.trim_end_matches('/').to_string(),
        };
        let mut h = History {
            c: Collector {
                http,
                attempts: ATTEMPTS,
                ..Collector::new(vec![bn], 0)?
            },
            url: shown.clone(),
            facts: ChainFacts {
                genesis_time: 0,
                seconds_per_slot: 0,
                params: ShufflingParams {
                    slots_per_epoch: 0,
                    shuffle_round_count: 0,
                    target_committee_size: 0,
                    max_committees_per_slot: 0,
                    epochs_per_historical_vector: 0,
                    min_seed_lookahead: 0,
                    domain_beacon_attester: [0; 4],
                    domain_beacon_proposer: [0; 4],
                    max_effective_balance: 0,
                    domain_sync_committee: [0; 4],
                    sync_committee_size: 0,
                    epochs_per_sync_committee_period: 0,
                    altair_fork_epoch: 0,
                },
            },
            view: None,
            chain: BTreeMap::new(),
            fetched: BTreeSet::new(),
            committee_sources: BTreeMap::new(),
            proposers_wanted: BTreeSet::new(),
            proposer_sources: BTreeMap::new(),
            sync_sources: BTreeMap::new(),
            sync_check: None,
            notes: BTreeSet::new(),
        };
        let genesis = h
            .get("/eth/v1/beacon/genesis")
            .await
            .map_err(|e| anyhow!("beacon node {shown} is unreachable or not a beacon node: {e}"))?
            .ok_or_else(|| anyhow!("beacon node {shown} has no genesis yet"))?;
        let spec = h
            .get("/eth/v1/config/spec")
            .await
            .map_err(|e| anyhow!("beacon node {shown}: /eth/v1/config/spec: {e}"))?
            .ok_or_else(|| anyhow!("beacon node {shown} does not serve /eth/v1/config/spec"))?;
        let domain = |key: &str| {
            field(&spec, &["data", key])?
                .as_str()
                .and_then(|s| hex::decode(s.trim_start_matches("0x")).ok())
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .ok_or_else(|| anyhow!("/eth/v1/config/spec: {key} is not 4 bytes of hex"))
        };
        h.facts = ChainFacts {
            genesis_time: num_at(&genesis, &["data", "genesis_time"])?,
            seconds_per_slot: spec_u64(&spec, "SECONDS_PER_SLOT")?,
            params: ShufflingParams {
                slots_per_epoch: spec_u64(&spec, "SLOTS_PER_EPOCH")?,
                shuffle_round_count: spec_u64(&spec, "SHUFFLE_ROUND_COUNT")?
                    .try_into()
                    .map_err(|_| anyhow!("SHUFFLE_ROUND_COUNT is above 255"))?,
                target_committee_size: spec_u64(&spec, "TARGET_COMMITTEE_SIZE")?,
                max_committees_per_slot: spec_u64(&spec, "MAX_COMMITTEES_PER_SLOT")?,
                epochs_per_historical_vector: spec_u64(&spec, "EPOCHS_PER_HISTORICAL_VECTOR")?,
                min_seed_lookahead: spec_u64(&spec, "MIN_SEED_LOOKAHEAD")?,
                domain_beacon_attester: domain("DOMAIN_BEACON_ATTESTER")?,
                domain_beacon_proposer: domain("DOMAIN_BEACON_PROPOSER")?,
                max_effective_balance: spec_u64(&spec, "MAX_EFFECTIVE_BALANCE")?,
                domain_sync_committee: domain("DOMAIN_SYNC_COMMITTEE")?,
                sync_committee_size: spec_u64(&spec, "SYNC_COMMITTEE_SIZE")?,
                epochs_per_sync_committee_period: spec_u64(
                    &spec,
                    "EPOCHS_PER_SYNC_COMMITTEE_PERIOD",
                )?,
                altair_fork_epoch: spec_u64(&spec, "ALTAIR_FORK_EPOCH")?,
            },
        };
        if h.facts.params.slots_per_epoch == 0 || h.facts.params.target_committee_size == 0 {
            bail!(
                "beacon node {shown}: SLOTS_PER_EPOCH and TARGET_COMMITTEE_SIZE must be positive"
            );
        }
        h.c.slots_per_epoch = h.facts.params.slots_per_epoch;
        Ok(h)
    }

    /// The node's URL without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The beacon node as the report names it.
    pub fn meta(&self) -> BeaconNodeMeta {
        BeaconNodeMeta {
            name: "bn".into(),
            api_url: self.url.clone(),
        }
    }

    async fn get_once(&self, path: &str) -> Result<Option<Value>, super::Failure> {
        self.c.get_once(0, path).await
    }

    /// GET with retries: `None` on 404.
    async fn get(&self, path: &str) -> Result<Option<Value>> {
        self.c.get(0, path).await
    }

    /// Head slot and finalized epoch; also recorded as a head sample for the report.
    pub async fn head(&mut self) -> Result<(u64, u64)> {
        let now = dvnode::clock::unix_now().as_secs();
        let samples = self.c.sample_heads(now).await;
        let s = samples.first().ok_or_else(|| {
            anyhow!(
                "beacon node {}: no head (headers/head, finality_checkpoints)",
                self.url
            )
        })?;
        Ok((s.head_slot, s.finalized_epoch))
    }

    /// The last complete slot as far as this node can tell: the previous slot by the clock
    /// (an empty slot leaves the head block behind it), or the head block's slot while the
    /// node is syncing.
    pub async fn complete_slot(&mut self) -> Result<u64> {
        let (head, _) = self.head().await?;
        let syncing = self
            .get("/eth/v1/node/syncing")
            .await?
            .and_then(|v| v["data"]["is_syncing"].as_bool())
            .unwrap_or(true);
        if syncing || self.facts.seconds_per_slot == 0 {
            return Ok(head);
        }
        let now = dvnode::clock::unix_now().as_secs();
        let clock = now.saturating_sub(self.facts.genesis_time) / self.facts.seconds_per_slot;
        Ok(head.max(clock.saturating_sub(1)))
    }

    /// The indices `spec` names: its indices (checked to exist) and its public keys resolved
    /// through the head state. An unknown key or index is an error naming where it came from.
    pub async fn resolve(&self, spec: &ValidatorSpec) -> Result<BTreeSet<u64>> {
        let mut out = spec.indices.clone();
        if let Some(max) = spec.indices.last() {
            if self
                .get(&format!("/eth/v1/beacon/states/head/validators/{max}"))
                .await?
                .is_none()
            {
                bail!(
                    "validators {}: index {max} is not a validator of this chain (beacon node {})",
                    spec.source,
                    self.url
                );
            }
        }
        // One request per key (`/validators/{pubkey}`): nodes differ in how they read a list
        // in `?id=` (Lodestar 1.5.1 does not split `a,b`).
        let answers: Vec<_> =
            futures::stream::iter(spec.pubkeys.iter().map(|(key, at)| async move {
                let r = self
                    .get(&format!("/eth/v1/beacon/states/head/validators/{key}"))
                    .await;
                (key, at, r)
            }))
            .buffered(CONCURRENCY)
            .collect()
            .await;
        for (key, at, r) in answers {
            let v = r?.ok_or_else(|| {
                anyhow!(
                    "{at}: public key {key} is not a validator of this chain (beacon node {})",
                    self.url
                )
            })?;
            let served = v["data"]["validator"]["pubkey"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if &served != key {
                bail!("{at}: the beacon node answered public key {key} with validator {served}");
            }
            out.insert(num_at(&v, &["data", "index"])?);
        }
        Ok(out)
    }

    /// The head state's registry and RANDAO mixes (debug API), fetched once.
    async fn registry(&mut self, refresh: bool) -> Result<&RegistryView> {
        if refresh || self.view.is_none() {
            let state = self
                .get("/eth/v2/debug/beacon/states/head")
                .await?
                .ok_or_else(|| anyhow!("the node has no head state"))?;
            let data = field(&state, &["data"])?;
            let slot = num_at(data, &["slot"])?;
            let registry = field(data, &["validators"])?
                .as_array()
                .ok_or_else(|| anyhow!("state.validators is not a list"))?;
            let validators = registry
                .iter()
                .map(|v| {
                    Ok((
                        num_at(v, &["activation_epoch"])?,
                        num_at(v, &["exit_epoch"])?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let effective_balances = registry
                .iter()
                .map(|v| num_at(v, &["effective_balance"]))
                .collect::<Result<Vec<_>>>()?;
            let randao_mixes = field(data, &["randao_mixes"])?
                .as_array()
                .ok_or_else(|| anyhow!("state.randao_mixes is not a list"))?
                .iter()
                .map(|m| {
                    m.as_str()
                        .and_then(|s| hex::decode(s.trim_start_matches("0x")).ok())
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or_else(|| anyhow!("state.randao_mixes holds {m}, not 32 bytes of hex"))
                })
                .collect::<Result<Vec<_>>>()?;
            self.view = Some(RegistryView {
                epoch: slot / self.facts.params.slots_per_epoch,
                validators,
                randao_mixes,
                effective_balances,
            });
        }
        Ok(self.view.as_ref().expect("set above"))
    }

    /// Committees of `epoch`: the node's if it serves them (compared with the computed ones
    /// when the head state is at hand), else computed from the head state.
    async fn committees(&mut self, epoch: u64) -> Result<()> {
        if self.committee_sources.contains_key(&epoch) {
            return Ok(());
        }
        let spe = self.facts.params.slots_per_epoch;
        let served = self
            .get_once(&format!(
                "/eth/v1/beacon/states/head/committees?epoch={epoch}"
            ))
            .await;
        let params = self.facts.params;
        let served = match served {
            Ok(Some(body)) => Some(parse_committees(&body, epoch, spe)?),
            Ok(None) | Err(_) => None,
        };
        let computed = match self.registry(false).await {
            Ok(view) => match view.committees(&params, epoch) {
                Ok(c) => Ok(c),
                // A state older than the epoch: fetch the head state again, once.
                Err(_) if epoch > view.epoch => match self.registry(true).await {
                    Ok(v) => v.committees(&params, epoch),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let (committees, source) = match (served, computed) {
            (Some(s), Ok(c)) => {
                if s != c {
                    bail!(
                        "committees of epoch {epoch}: computed from the head state they differ \
                         from what the beacon node serves (a dvlab bug: please report it)"
                    );
                }
                (s, "served = computed")
            }
            (Some(s), Err(_)) => (s, "served"),
            (None, Ok(c)) => (c, "computed"),
            (None, Err(e)) => bail!(
                "committees of epoch {epoch} are unavailable: the beacon node serves them only \
                 for epochs near its head (Lodestar 1.5.1: from about the finalized epoch on), \
                 and computing them from its head state failed: {e:#}. Analyse recent epochs, or \
                 use --follow to collect as the chain grows"
            ),
        };
        self.c.committees.extend(committees);
        self.committee_sources.insert(epoch, source);
        Ok(())
    }

    /// Proposer duties and the sync committee of `epoch`, where the node serves them.
    async fn duties(&mut self, epoch: u64) -> Result<()> {
        if !self.proposer_sources.contains_key(&epoch) {
            match self
                .get_once(&format!("/eth/v1/validator/duties/proposer/{epoch}"))
                .await
            {
                Ok(Some(body)) => {
                    for d in field(&body, &["data"])?.as_array().into_iter().flatten() {
                        self.c
                            .proposers
                            .insert(num_at(d, &["slot"])?, num_at(d, &["validator_index"])?);
                    }
                    self.proposer_sources.insert(epoch, "served".into());
                }
                _ => {
                    self.proposers_wanted.insert(epoch);
                }
            }
        }
        if self.c.sync_committees.contains_key(&epoch) {
            return Ok(());
        }
        match self
            .get_once(&format!(
                "/eth/v1/beacon/states/head/sync_committees?epoch={epoch}"
            ))
            .await
        {
            Ok(Some(body)) => {
                self.c.sync_committees.insert(epoch, sync_members(&body)?);
            }
            _ => match self.past_sync_committee(epoch).await {
                Ok(members) => {
                    self.c.sync_committees.insert(epoch, members);
                }
                Err(e) => {
                    self.notes.insert(format!(
                        "the sync committee of epoch {epoch} is not served by the beacon node \
                         (the head state's periods only) and cannot be computed: {e:#}; its \
                         sync messages are not counted"
                    ));
                }
            },
        }
        Ok(())
    }

    /// The sync committee of a past `epoch`'s period, computed from the head state (spec
    /// `get_next_sync_committee_indices`) — used only if the same computation gives the head
    /// state's current sync committee as the node serves it (checked once).
    async fn past_sync_committee(&mut self, epoch: u64) -> Result<Vec<u64>> {
        let params = self.facts.params;
        let period = epoch / params.epochs_per_sync_committee_period.max(1);
        if self.sync_check.is_none() {
            let served = self
                .get("/eth/v1/beacon/states/head/sync_committees")
                .await?
                .ok_or_else(|| anyhow!("the node serves no current sync committee"))
                .and_then(|b| sync_members(&b));
            let view = self.registry(false).await?;
            let head_period = view.epoch / params.epochs_per_sync_committee_period.max(1);
            let check = match (served, view.sync_committee(&params, head_period)) {
                (Ok(s), Ok(c)) if s == c => Ok(head_period),
                (Ok(_), Ok(_)) => Err(format!(
                    "computed from the head state, the sync committee of the head's period \
                     {head_period} differs from the one the node serves (effective balances \
                     changed since it was chosen)"
                )),
                (Err(e), _) | (_, Err(e)) => Err(format!("{e:#}")),
            };
            self.sync_check = Some(check);
        }
        match self.sync_check.clone().expect("set above") {
            Ok(checked) => {
                let members = self
                    .registry(false)
                    .await?
                    .sync_committee(&params, period)?;
                self.sync_sources.insert(
                    period,
                    format!("computed (period {checked}'s computation equals the node's)"),
                );
                Ok(members)
            }
            Err(e) => bail!("{e}"),
        }
    }

    /// The canonical block at `slot`, if any: (root, block).
    async fn block_at(&self, slot: u64) -> Result<Option<(String, super::BlockInfo)>> {
        Ok(self
            .c
            .fetch_block(&slot.to_string())
            .await?
            // Some nodes answer an empty slot with the block before it.
            .filter(|(_, info)| info.slot == slot))
    }

    /// Collects `epochs`: their committees and duties, and the canonical blocks from one epoch
    /// before them (for head and target votes) to the end of their inclusion window; slots
    /// collected before are not fetched again. `progress` is advanced by one per slot.
    pub async fn collect(
        &mut self,
        epochs: EpochRange,
        progress: &indicatif::ProgressBar,
    ) -> Result<()> {
        let spe = self.facts.params.slots_per_epoch;
        for e in epochs.first..epochs.end {
            self.committees(e).await?;
            self.duties(e).await?;
        }
        // The sync aggregate of a block signs the slot before it.
        self.duties(epochs.end).await?;
        let from = epochs.first_slot(spe).saturating_sub(spe).max(1);
        let to = epochs.last_inclusion_slot(spe);
        let slots: Vec<u64> = (from..=to).filter(|s| !self.fetched.contains(s)).collect();
        progress.set_length(progress.length().unwrap_or(0) + slots.len() as u64);
        let this = &*self;
        let mut answers = futures::stream::iter(
            slots
                .iter()
                .map(|s| async move { (*s, this.block_at(*s).await) }),
        )
        .buffer_unordered(CONCURRENCY);
        let mut got = Vec::new();
        while let Some((slot, r)) = answers.next().await {
            progress.inc(1);
            got.push((slot, r?));
        }
        drop(answers);
        for (slot, b) in got {
            self.fetched.insert(slot);
            if let Some((root, info)) = b {
                self.chain.insert(slot, root.clone());
                self.c.blocks.insert(root, info);
            }
        }
        self.check_links()?;
        for e in epochs.first..epochs.end {
            self.past_proposers(e).await?;
        }
        Ok(())
    }

    /// Proposers of a past `epoch` the node did not serve duties for: computed from the head
    /// state (spec `get_beacon_proposer_index`) and kept only if every canonical block of the
    /// epoch was proposed by the computed proposer of its slot (the head state's effective
    /// balances may differ from the epoch's); otherwise the epoch's proposals are not counted.
    async fn past_proposers(&mut self, epoch: u64) -> Result<()> {
        if !self.proposers_wanted.remove(&epoch) || self.proposer_sources.contains_key(&epoch) {
            return Ok(());
        }
        let params = self.facts.params;
        let computed = match self.registry(false).await {
            Ok(view) => view.proposers(&params, epoch),
            Err(e) => Err(e),
        };
        let computed = match computed {
            Ok(c) => c,
            Err(e) => {
                self.notes.insert(format!(
                    "proposer duties of epoch {epoch} are not served by the beacon node (Lodestar \
                     1.5.1: current and next epoch only) and cannot be computed from its head \
                     state ({e:#}): its proposals are not counted"
                ));
                return Ok(());
            }
        };
        let (mut blocks, mut differ) = (0, Vec::new());
        for (slot, proposer) in &computed {
            if let Some(root) = self.chain.get(slot) {
                blocks += 1;
                let by = self.c.blocks[root].proposer;
                if by != *proposer {
                    differ.push(format!("slot {slot}: block by {by}, computed {proposer}"));
                }
            }
        }
        if !differ.is_empty() {
            self.notes.insert(format!(
                "proposers of epoch {epoch} computed from the head state differ from its blocks \
                 ({}; the effective balances changed since): its proposals are not counted",
                differ.join(", ")
            ));
            self.proposer_sources.insert(
                epoch,
                format!("not counted: {} of {blocks} blocks differ", differ.len()),
            );
            return Ok(());
        }
        self.c.proposers.extend(computed);
        self.proposer_sources
            .insert(epoch, format!("computed, {blocks} blocks agree"));
        Ok(())
    }

    /// Each collected block's parent is the collected block before it (a reorg while
    /// collecting would break this).
    fn check_links(&self) -> Result<()> {
        let mut prev: Option<(&u64, &String)> = None;
        for (slot, root) in &self.chain {
            if let Some((ps, pr)) = prev {
                let parent = &self.c.blocks[root].parent;
                if parent != pr && (ps + 1..*slot).all(|s| self.fetched.contains(&s)) {
                    bail!(
                        "the chain changed while it was collected: block {root} of slot {slot} \
                         has parent {parent}, the canonical block of slot {ps} is {pr}; run again"
                    );
                }
            }
            prev = Some((slot, root));
        }
        Ok(())
    }

    /// Reads dvnode duty logs under `dir` ([`duty_log_files`]). Returns the node names.
    pub fn read_duty_logs(&mut self, dir: &Path) -> Result<Vec<String>> {
        let files = duty_log_files(dir)?;
        for (node, path) in &files {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            self.c.add_duty_log(node, path, &text);
        }
        Ok(files.into_iter().map(|(n, _)| n).collect())
    }

    /// The raw frames of what was collected.
    pub async fn raw(&self) -> Result<RawData> {
        self.c
            .frames(&self.chain, self.c.heads.clone(), &Shared::default())
            .await
    }
}

/// The dvnode duty logs under `dir`, sorted: `DIR/<node>/duty-log.jsonl` (a run's `nodes/`)
/// or `DIR/<node>.jsonl`, each named after its node. None is an error.
pub fn duty_log_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("--duty-log {}: cannot read the directory", dir.display()))?;
    for e in entries {
        let p = e?.path();
        let nested = p.join(crate::plan::DUTY_LOG_FILE);
        let name =
            |n: Option<&std::ffi::OsStr>| n.unwrap_or_default().to_string_lossy().into_owned();
        if p.is_dir() && nested.is_file() {
            files.push((name(p.file_name()), nested));
        } else if p.extension().is_some_and(|x| x == "jsonl") {
            files.push((name(p.file_stem()), p));
        }
    }
    if files.is_empty() {
        bail!(
            "--duty-log {}: no duty log (expected <node>/{} or <node>.jsonl files)",
            dir.display(),
            crate::plan::DUTY_LOG_FILE
        );
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duty_logs_in_either_layout() {
        let dir = std::env::temp_dir().join(format!("dvlab-duty-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("dv0-1")).unwrap();
        std::fs::write(dir.join("dv0-1").join(crate::plan::DUTY_LOG_FILE), "").unwrap();
        std::fs::write(dir.join("dv0-0.jsonl"), "").unwrap();
        std::fs::write(dir.join("notes.txt"), "").unwrap();
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        let files = duty_log_files(&dir).unwrap();
        assert_eq!(
            files,
            [
                ("dv0-0".to_string(), dir.join("dv0-0.jsonl")),
                (
                    "dv0-1".to_string(),
                    dir.join("dv0-1").join(crate::plan::DUTY_LOG_FILE)
                ),
            ]
        );
        let e = duty_log_files(&dir.join("empty")).unwrap_err().to_string();
        assert!(e.contains("no duty log"), "{e}");
        let e = format!("{:#}", duty_log_files(&dir.join("missing")).unwrap_err());
        assert!(e.contains("cannot read the directory"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
