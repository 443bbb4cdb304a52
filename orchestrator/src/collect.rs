//! Collection from the beacon nodes' REST APIs while the devnet runs: committees and
//! duties each epoch (Lodestar's head state only serves epochs head−1..head+1), head and
//! finality samples, canonical blocks, and SSE events (gossip attestations, blocks).

pub mod history;
pub mod shuffling;

use crate::data::{synthetic::Builder, BeaconNodeMeta, DutyRow, DvNodeMeta, RawData};
use crate::plan::DUTY_LOG_FILE;
use anyhow::{anyhow, bail, Context, Result};
use dvnode::eth::beacon::{normalize_committees, Committee};
use dvnode::tracker::DutyReport;
use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Committees of one epoch: (slot, committee index) → validator indices.
pub type Committees = BTreeMap<(u64, u64), Vec<u64>>;

fn num(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(p)
            .ok_or_else(|| anyhow!("beacon API answer lacks `{}`", path.join(".")))?;
    }
    Ok(cur)
}

fn num_at(v: &Value, path: &[&str]) -> Result<u64> {
    num(field(v, path)?).ok_or_else(|| anyhow!("`{}` is not a number", path.join(".")))
}

/// Parses a committees answer for `epoch` into spec shape (Lodestar 1.5.1's swapped slot and
/// index are rebuilt by [`normalize_committees`]).
pub fn parse_committees(body: &Value, epoch: u64, slots_per_epoch: u64) -> Result<Committees> {
    let list: Vec<Committee> =
        serde_json::from_value(field(body, &["data"])?.clone()).context("committees answer")?;
    let list = normalize_committees(list, epoch, slots_per_epoch).map_err(|e| anyhow!(e))?;
    Ok(list
        .into_iter()
        .map(|c| ((c.slot, c.index), c.validators))
        .collect())
}

/// The members of a sync committees answer.
fn sync_members(body: &Value) -> Result<Vec<u64>> {
    Ok(field(body, &["data", "validators"])?
        .as_array()
        .ok_or_else(|| anyhow!("sync committee validators is not a list"))?
        .iter()
        .filter_map(num)
        .collect())
}

/// Indices of set bits of an SSZ bitlist given as hex (the highest set bit is the length
/// delimiter and is dropped).
pub fn bitlist_indices(hex_bits: &str) -> Result<Vec<usize>> {
    let bytes = hex::decode(hex_bits.trim_start_matches("0x"))
        .map_err(|e| anyhow!("bad bitlist {hex_bits}: {e}"))?;
    let mut bits: Vec<usize> = (0..bytes.len() * 8)
        .filter(|i| bytes[i / 8] >> (i % 8) & 1 == 1)
        .collect();
    if bits.pop().is_none() {
        bail!("bitlist {hex_bits} has no delimiter bit");
    }
    Ok(bits)
}

/// Indices of set bits of an SSZ bitvector given as hex.
pub fn bitvector_indices(hex_bits: &str) -> Result<Vec<usize>> {
    let bytes = hex::decode(hex_bits.trim_start_matches("0x"))
        .map_err(|e| anyhow!("bad bitvector {hex_bits}: {e}"))?;
    Ok((0..bytes.len() * 8)
        .filter(|i| bytes[i / 8] >> (i % 8) & 1 == 1)
        .collect())
}

/// Short identity of attestation data, for the slashing audit.
fn data_root(data: &Value) -> String {
    let mut h = Sha256::new();
    h.update(data.to_string().as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// Parses a dvnode duty log (JSON lines of [`DutyReport`]s, one closed duty each) of container
/// `node` into duty rows. Lines that do not parse are counted in the second value, not fatal
/// (the node may have been killed mid-line).
pub fn parse_duty_log(node: &str, text: &str) -> (Vec<DutyRow>, usize) {
    let mut rows = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(r) = serde_json::from_str::<DutyReport>(line) else {
            bad += 1;
            continue;
        };
        rows.push(DutyRow::from_report(node, &r));
    }
    (rows, bad)
}

/// A canonical or seen block.
#[derive(Debug, Clone)]
pub struct BlockInfo {
    slot: u64,
    proposer: u64,
    parent: String,
    attestations: Vec<Value>,
    sync_bits: Option<String>,
    /// Slashings the block includes: (`proposer` or `attester`, slashed validator).
    slashings: Vec<(&'static str, u64)>,
}

/// Parses a `/eth/v2/beacon/blocks/{root}` answer (`root` names the block in warnings).
/// Malformed slashings are skipped ([`parse_slashings`]); a missing slot, proposer,
/// parent or attestation list is an error.
pub fn parse_block(root: &str, block: &Value) -> Result<BlockInfo> {
    let msg = field(block, &["data", "message"])?;
    Ok(BlockInfo {
        slot: num_at(msg, &["slot"])?,
        proposer: num_at(msg, &["proposer_index"])?,
        parent: field(msg, &["parent_root"])?
            .as_str()
            .unwrap_or_default()
            .to_string(),
        attestations: field(msg, &["body", "attestations"])?
            .as_array()
            .cloned()
            .unwrap_or_default(),
        sync_bits: msg
            .get("body")
            .and_then(|b| b.get("sync_aggregate"))
            .and_then(|s| s.get("sync_committee_bits"))
            .and_then(|s| s.as_str())
            .map(str::to_string),
        slashings: msg
            .get("body")
            .map(|b| parse_slashings(root, b))
            .unwrap_or_default(),
    })
}

/// The validators a block body slashes: (`proposer`, `signed_header_1.message.proposer_index`)
/// per proposer slashing, (`attester`, v) for every v attesting in both `attestation_1` and
/// `attestation_2` of an attester slashing (the chain slashes those not slashed before).
/// Malformed entries are skipped with a warning (stderr, like the run's other warnings)
/// naming the block and the field; an absent list counts as empty.
pub fn parse_slashings(root: &str, body: &Value) -> Vec<(&'static str, u64)> {
    let list = |name: &str| -> &[Value] {
        match body.get(name) {
            None => &[],
            Some(Value::Array(a)) => a,
            Some(_) => {
                eprintln!("warning: block {root}: `body.{name}` is not a list; ignored");
                &[]
            }
        }
    };
    let mut out = Vec::new();
    for (i, s) in list("proposer_slashings").iter().enumerate() {
        match num_at(s, &["signed_header_1", "message", "proposer_index"]) {
            Ok(v) => out.push(("proposer", v)),
            Err(e) => {
                eprintln!("warning: block {root}: skipping `body.proposer_slashings[{i}]`: {e:#}")
            }
        }
    }
    for (i, s) in list("attester_slashings").iter().enumerate() {
        let indices = |att: &str| -> Result<std::collections::BTreeSet<u64>> {
            field(s, &[att, "attesting_indices"])?
                .as_array()
                .ok_or_else(|| anyhow!("`{att}.attesting_indices` is not a list"))?
                .iter()
                .map(|v| {
                    num(v).ok_or_else(|| {
                        anyhow!("bad validator index {v} in `{att}.attesting_indices`")
                    })
                })
                .collect()
        };
        match (indices("attestation_1"), indices("attestation_2")) {
            (Ok(a), Ok(b)) => out.extend(a.intersection(&b).map(|v| ("attester", *v))),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("warning: block {root}: skipping `body.attester_slashings[{i}]`: {e:#}")
            }
        }
    }
    out
}

/// An attestation seen on an SSE stream.
#[derive(Debug, Clone)]
struct SeenAttestation {
    data: Value,
    bits: String,
}

#[derive(Default)]
struct Shared {
    attestations: Vec<SeenAttestation>,
    blocks: Vec<(String, u64, String)>,
}

/// A beacon node's failed answer.
#[derive(Debug)]
enum Failure {
    /// HTTP error status with the node's message.
    Status(u16, String),
    /// No answer (connection refused, timeout, bad body).
    Transport(anyhow::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(s, m) => write!(f, "HTTP {s}: {m}"),
            Failure::Transport(e) => write!(f, "{e:#}"),
        }
    }
}

/// Talks to the beacon nodes and accumulates everything for [`Collector::finish`].
pub struct Collector {
    http: reqwest::Client,
    /// Attempts per request on connection errors, timeouts and 5xx answers (1: no retry).
    attempts: u32,
    bns: Vec<BeaconNodeMeta>,
    slots_per_epoch: u64,
    committees: Committees,
    proposers: BTreeMap<u64, u64>,
    sync_committees: BTreeMap<u64, Vec<u64>>,
    blocks: HashMap<String, BlockInfo>,
    heads: Builder,
    shared: Arc<Mutex<Shared>>,
    sse_tasks: Vec<tokio::task::JoinHandle<()>>,
    epochs_done: BTreeMap<u64, ()>,
}

/// Head and finality of one beacon node.
#[derive(Debug, Clone)]
pub struct HeadSample {
    /// Beacon node.
    pub bn: String,
    /// Head slot.
    pub head_slot: u64,
    /// Finalized epoch.
    pub finalized_epoch: u64,
    /// Connected peers.
    pub peers: u64,
}

impl Collector {
    /// A collector for these beacon nodes (the first one is used for duties).
    pub fn new(bns: Vec<BeaconNodeMeta>, slots_per_epoch: u64) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()?;
        Ok(Collector {
            http,
            attempts: 1,
            bns,
            slots_per_epoch,
            committees: Committees::new(),
            proposers: BTreeMap::new(),
            sync_committees: BTreeMap::new(),
            blocks: HashMap::new(),
            heads: Builder::default(),
            shared: Arc::new(Mutex::new(Shared::default())),
            sse_tasks: Vec::new(),
            epochs_done: BTreeMap::new(),
        })
    }

    /// One GET of `path` on beacon node `bn`: `None` on 404.
    async fn get_once(&self, bn: usize, path: &str) -> Result<Option<Value>, Failure> {
        let url = format!("{}{path}", self.bns[bn].api_url);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| Failure::Transport(anyhow!(e.without_url())))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(body);
            return Err(Failure::Status(status.as_u16(), message));
        }
        resp.json()
            .await
            .map(Some)
            .map_err(|e| Failure::Transport(anyhow!(e.without_url()).context("bad JSON")))
    }

    /// GET with up to `attempts` tries (backoff from 250 ms) on connection errors, timeouts
    /// and 5xx answers: `None` on 404.
    async fn get_answer(&self, bn: usize, path: &str) -> Result<Option<Value>, Failure> {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match self.get_once(bn, path).await {
                Err(Failure::Status(s, _)) if s >= 500 && attempt < self.attempts => {}
                Err(Failure::Transport(_)) if attempt < self.attempts => {}
                other => return other,
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }

    /// [`Self::get_answer`] with the URL (without credentials) in the error.
    async fn get(&self, bn: usize, path: &str) -> Result<Option<Value>> {
        self.get_answer(bn, path).await.map_err(|e| {
            anyhow!(
                "GET {}{path}: {e}",
                history::display_url(&self.bns[bn].api_url)
            )
        })
    }

    /// Waits until every beacon node answers `/eth/v1/beacon/genesis`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for (i, bn) in self.bns.iter().enumerate() {
            loop {
                match self.get(i, "/eth/v1/beacon/genesis").await {
                    Ok(Some(_)) => break,
                    _ if tokio::time::Instant::now() > deadline => {
                        bail!(
                            "beacon node {} did not serve its REST API within {timeout:?}",
                            bn.name
                        )
                    }
                    _ => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
        Ok(())
    }

    /// Subscribes to the SSE streams of every beacon node.
    pub fn start_events(&mut self) {
        for bn in &self.bns {
            let url = format!(
                "{}/eth/v1/events?topics=attestation&topics=block",
                bn.api_url
            );
            let shared = self.shared.clone();
            let name = bn.name.clone();
            self.sse_tasks.push(tokio::spawn(async move {
                // Reconnect until aborted: a BN restart must not end collection.
                loop {
                    let _ = sse_once(&url, &name, &shared).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }));
        }
    }

    /// Records committees, proposer duties and sync committees available now (the head
    /// state serves epochs head−1..head+1). The next epoch's committees are a look-ahead: while
    /// the head is still an epoch behind (no block yet in `epoch`, e.g. at a slow devnet
    /// start) Lodestar answers 500 for them, and they are asked again at the next epoch, when
    /// they are `epoch`'s — whose failure ends the run, since its duties would be lost.
    pub async fn record_duties(&mut self, epoch: u64) -> Result<()> {
        for e in [epoch, epoch + 1] {
            if self.epochs_done.contains_key(&e) {
                continue;
            }
            let path = format!("/eth/v1/beacon/states/head/committees?epoch={e}");
            let body = match self.get(0, &path).await {
                Err(err) if e > epoch => {
                    eprintln!("warning: committees of epoch {e} not served yet ({err:#}); asked again at epoch {e}");
                    continue;
                }
                other => other?,
            };
            let Some(body) = body else {
                continue;
            };
            self.committees
                .extend(parse_committees(&body, e, self.slots_per_epoch)?);
            self.epochs_done.insert(e, ());
        }
        if let Ok(Some(body)) = self
            .get(0, &format!("/eth/v1/validator/duties/proposer/{epoch}"))
            .await
        {
            for d in field(&body, &["data"])?.as_array().into_iter().flatten() {
                self.proposers
                    .insert(num_at(d, &["slot"])?, num_at(d, &["validator_index"])?);
            }
        }
        if let Ok(Some(body)) = self
            .get(
                0,
                &format!("/eth/v1/beacon/states/head/sync_committees?epoch={epoch}"),
            )
            .await
        {
            self.sync_committees.insert(epoch, sync_members(&body)?);
        }
        Ok(())
    }

    /// Samples head, finality and peers of every beacon node.
    pub async fn sample_heads(&mut self, now: u64) -> Vec<HeadSample> {
        let mut out = Vec::new();
        for i in 0..self.bns.len() {
            let head = self.get(i, "/eth/v1/beacon/headers/head").await;
            let fin = self
                .get(i, "/eth/v1/beacon/states/head/finality_checkpoints")
                .await;
            let peers = self.get(i, "/eth/v1/node/peer_count").await;
            let (Ok(Some(head)), Ok(Some(fin))) = (head, fin) else {
                continue;
            };
            let (Ok(h), Ok(f)) = (
                num_at(&head, &["data", "header", "message", "slot"]),
                num_at(&fin, &["data", "finalized", "epoch"]),
            ) else {
                continue;
            };
            let p = peers
                .ok()
                .flatten()
                .and_then(|p| num_at(&p, &["data", "connected"]).ok())
                .unwrap_or(0);
            let root = head["data"]["root"].as_str().unwrap_or_default();
            self.heads.head_at(now, &self.bns[i].name, h, root, f, p);
            out.push(HeadSample {
                bn: self.bns[i].name.clone(),
                head_slot: h,
                finalized_epoch: f,
                peers: p,
            });
        }
        out
    }

    /// The block `id` names (`head`, a root or a slot) on the first beacon node, if any:
    /// (root, block). A header served without its block is an error.
    async fn fetch_block(&self, id: &str) -> Result<Option<(String, BlockInfo)>> {
        let Some(header) = self.get(0, &format!("/eth/v1/beacon/headers/{id}")).await? else {
            return Ok(None);
        };
        let root = field(&header, &["data", "root"])?
            .as_str()
            .unwrap_or_default()
            .to_string();
        let block = self
            .get(0, &format!("/eth/v2/beacon/blocks/{root}"))
            .await?
            .ok_or_else(|| anyhow!("block {root} ({id}): header served, block not"))?;
        let info = parse_block(&root, &block).with_context(|| format!("block {root}"))?;
        Ok(Some((root, info)))
    }

    /// Walks the canonical chain back from the head, fetching blocks not yet known.
    /// Returns canonical roots by slot.
    pub async fn sync_chain(&mut self) -> Result<BTreeMap<u64, String>> {
        let mut chain = BTreeMap::new();
        let Some((mut root, head)) = self.fetch_block("head").await? else {
            return Ok(chain);
        };
        self.blocks.entry(root.clone()).or_insert(head);
        loop {
            let info = match self.blocks.get(&root) {
                Some(b) => b.clone(),
                None => match self.fetch_block(&root).await? {
                    Some((r, b)) => {
                        self.blocks.insert(r, b.clone());
                        b
                    }
                    None => break,
                },
            };
            chain.insert(info.slot, root.clone());
            if info.slot == 0 {
                break;
            }
            root = info.parent.clone();
        }
        Ok(chain)
    }

    /// Inclusion counts so far per validator range: (included, duties) for the duties in
    /// slots `from..=to`, using the blocks known.
    pub fn live_inclusion(
        &self,
        chain: &BTreeMap<u64, String>,
        range: std::ops::Range<u64>,
        from: u64,
        to: u64,
    ) -> (u64, u64) {
        let mut included = std::collections::HashSet::new();
        for root in chain.range(1..).map(|(_, r)| r) {
            for (v, slot) in self.expand(&self.blocks[root].attestations) {
                if range.contains(&v) && slot >= from && slot <= to {
                    included.insert((v, slot));
                }
            }
        }
        let duties = self
            .committees
            .range((from, 0)..=(to, u64::MAX))
            .flat_map(|(_, vs)| vs.iter())
            .filter(|v| range.contains(v))
            .count() as u64;
        (included.len() as u64, duties)
    }

    /// (validator, attestation slot) of every attester of `attestations`.
    fn expand(&self, attestations: &[Value]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for a in attestations {
            let (Ok(slot), Ok(index), Some(bits)) = (
                num_at(a, &["data", "slot"]),
                num_at(a, &["data", "index"]),
                a.get("aggregation_bits").and_then(|b| b.as_str()),
            ) else {
                continue;
            };
            let (Some(committee), Ok(set)) =
                (self.committees.get(&(slot, index)), bitlist_indices(bits))
            else {
                continue;
            };
            out.extend(
                set.into_iter()
                    .filter_map(|i| committee.get(i).map(|v| (*v, slot))),
            );
        }
        out
    }

    /// Reads every dvnode's duty log from `OUT/nodes/<container>/` into the raw data and saves
    /// its final `/metrics` page beside it. A missing or unreadable log is a warning.
    pub async fn collect_dvnodes(&mut self, dvnodes: &[DvNodeMeta], out: &Path) {
        for n in dvnodes {
            let dir = out.join("nodes").join(&n.name);
            if let Some(url) = &n.metrics_url {
                let metrics = self
                    .http
                    .get(format!("{url}/metrics"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let text = match metrics {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => format!("# unreachable: {e}\n"),
                };
                if let Err(e) = std::fs::write(dir.join("metrics.txt"), text) {
                    eprintln!("warning: saving metrics of {}: {e}", n.name);
                }
            }
            let path = dir.join(DUTY_LOG_FILE);
            match std::fs::read_to_string(&path) {
                Ok(text) => self.add_duty_log(&n.name, &path, &text),
                Err(e) => eprintln!(
                    "warning: no duty log of {} ({}): {e}",
                    n.name,
                    path.display()
                ),
            }
        }
    }

    /// Adds the duty log of dvnode `node` (the text of `path`) to the duty records; lines that
    /// do not parse are skipped with a warning naming the file.
    pub fn add_duty_log(&mut self, node: &str, path: &Path, text: &str) {
        let (rows, bad) = parse_duty_log(node, text);
        if bad > 0 {
            eprintln!(
                "warning: {}: {bad} duty-log line(s) did not parse",
                path.display()
            );
        }
        for r in rows {
            self.heads.duty_record(r);
        }
    }

    /// Stops the SSE streams, fetches the final chain and builds the raw frames.
    pub async fn finish(mut self) -> Result<RawData> {
        for t in &self.sse_tasks {
            t.abort();
        }
        let chain = self.sync_chain().await?;
        let shared = std::mem::take(&mut *self.shared.lock().expect("poisoned"));
        let heads = std::mem::take(&mut self.heads);
        self.frames(&chain, heads, &shared).await
    }

    /// The raw frames of the canonical `chain` (slot → root of known blocks), with the rows
    /// `b` holds and what the SSE streams saw (`shared`).
    async fn frames(
        &self,
        chain: &BTreeMap<u64, String>,
        mut b: Builder,
        shared: &Shared,
    ) -> Result<RawData> {
        for ((slot, index), vs) in &self.committees {
            for v in vs {
                b.duty_in(*slot, *index, *v);
            }
        }
        for (slot, v) in &self.proposers {
            b.proposer(*slot, *v);
        }
        // Canonical root at or before each slot, for head/target correctness.
        let root_at = |slot: u64| chain.range(..=slot).next_back().map(|(_, r)| r.as_str());
        for (slot, root) in chain.range(1..) {
            let blk = &self.blocks[root];
            b.block(*slot, blk.proposer, root);
            for (kind, v) in &blk.slashings {
                b.slashing(*slot, *v, kind);
            }
            for a in &blk.attestations {
                let (Ok(s), Ok(te)) = (
                    num_at(a, &["data", "slot"]),
                    num_at(a, &["data", "target", "epoch"]),
                ) else {
                    continue;
                };
                let head_ok = a["data"]["beacon_block_root"].as_str() == root_at(s);
                let target_ok =
                    a["data"]["target"]["root"].as_str() == root_at(te * self.slots_per_epoch);
                for (v, s) in self.expand(std::slice::from_ref(a)) {
                    b.inclusion(v, s, *slot, head_ok, target_ok);
                }
                self.add_votes(&mut b, a);
            }
            if let Some(bits) = &blk.sync_bits {
                let signed_slot = slot - 1;
                let epoch = signed_slot / self.slots_per_epoch;
                if let Some(members) = self.sync_committees.get(&epoch) {
                    let set: std::collections::HashSet<usize> =
                        bitvector_indices(bits)?.into_iter().collect();
                    for (i, v) in members.iter().enumerate() {
                        b.sync(signed_slot, *v, set.contains(&i));
                    }
                }
            }
        }
        for a in &shared.attestations {
            let v = serde_json::json!({"aggregation_bits": a.bits, "data": a.data});
            self.add_votes(&mut b, &v);
        }
        for (bn, slot, root) in &shared.blocks {
            let known = match self.blocks.get(root) {
                Some(info) => Some((info.proposer, info.parent.clone())),
                None => self
                    .fetch_block(root)
                    .await
                    .ok()
                    .flatten()
                    .map(|(_, i)| (i.proposer, i.parent)),
            };
            if let Some((p, parent)) = known {
                b.block_seen_with_parent(bn, *slot, p, root, &parent);
            }
        }
        Ok(b.build()?)
    }

    fn add_votes(&self, b: &mut Builder, a: &Value) {
        let (Ok(s), Ok(t)) = (
            num_at(a, &["data", "source", "epoch"]),
            num_at(a, &["data", "target", "epoch"]),
        ) else {
            return;
        };
        let root = data_root(&a["data"]);
        for (v, _) in self.expand(std::slice::from_ref(a)) {
            b.vote(v, s, t, &root);
        }
    }
}

async fn sse_once(url: &str, bn: &str, shared: &Arc<Mutex<Shared>>) -> Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let resp = client
        .get(url)
        .header("accept", "text/event-stream")
        .send()
        .await?;
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut event = String::new();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(nl) = buf.find('\n') {
            let line = buf[..nl].trim_end_matches('\r').to_string();
            buf.drain(..=nl);
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                let Ok(v) = serde_json::from_str::<Value>(d.trim()) else {
                    continue;
                };
                let mut s = shared.lock().expect("poisoned");
                match event.as_str() {
                    "attestation" => {
                        if let (Some(data), Some(bits)) = (
                            v.get("data"),
                            v.get("aggregation_bits").and_then(|b| b.as_str()),
                        ) {
                            s.attestations.push(SeenAttestation {
                                data: data.clone(),
                                bits: bits.to_string(),
                            });
                        }
                    }
                    "block" => {
                        if let (Ok(slot), Some(root)) = (
                            num_at(&v, &["slot"]),
                            v.get("block").and_then(|b| b.as_str()),
                        ) {
                            s.blocks.push((bn.to_string(), slot, root.to_string()));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A loopback beacon node whose head state is in epoch 0 (as at a slow devnet start):
    /// committees of epochs 0 and 1 are served, epoch 2's answer 500 until `serve_2` is set.
    async fn head_in_epoch_0(serve_2: Arc<std::sync::atomic::AtomicBool>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let serve_2 = serve_2.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let epoch = req
                        .split_once("epoch=")
                        .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next())
                        .and_then(|e| e.parse::<u64>().ok());
                    let (status, body) = match epoch {
                        Some(e)
                            if req.contains("/committees?")
                                && (e < 2 || serve_2.load(std::sync::atomic::Ordering::SeqCst)) =>
                        {
                            let data: Vec<Value> = (0..8)
                                .map(|k| json!({"slot": (e * 8 + k).to_string(), "index": "0", "validators": [k.to_string()]}))
                                .collect();
                            ("200 OK", json!({ "data": data }).to_string())
                        }
                        Some(_) if req.contains("/committees?") => (
                            "500 Internal Server Error",
                            json!({"code": 500, "message": "epoch out of range"}).to_string(),
                        ),
                        _ => ("404 Not Found", "{}".to_string()),
                    };
                    let resp = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                    let _ = conn.write_all(resp.as_bytes()).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn next_epochs_committees_not_served_yet_are_asked_again_not_fatal() {
        let serve_2 = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let url = head_in_epoch_0(serve_2.clone()).await;
        let bn = BeaconNodeMeta {
            name: "bn0".into(),
            api_url: url,
        };
        let mut c = Collector::new(vec![bn], 8).unwrap();
        c.record_duties(1)
            .await
            .expect("epoch 2's 500 is a look-ahead, not an error");
        assert!(c.epochs_done.contains_key(&1) && !c.epochs_done.contains_key(&2));
        // The current epoch's committees failing would lose its duties: that ends the run.
        let err = c.record_duties(2).await.unwrap_err();
        assert!(format!("{err:#}").contains("HTTP 500"), "{err:#}");
        serve_2.store(true, std::sync::atomic::Ordering::SeqCst);
        c.record_duties(2).await.unwrap();
        assert_eq!(
            c.epochs_done.keys().copied().collect::<Vec<_>>(),
            [1, 2, 3],
            "epoch 2's and now the look-ahead epoch 3's"
        );
        assert_eq!(c.committees.len(), 24, "8 committees per epoch");
    }

    #[test]
    fn lodestar_committee_quirk_is_rebuilt_from_order() {
        // 8 slots × 2 committees as Lodestar 1.5.1 reports them: `index` holds the slot's
        // position in the epoch and `slot` the committee's position in its slot.
        let data: Vec<Value> = (0..16)
            .map(|k| {
                json!({"slot": (k % 2).to_string(), "index": (k / 2).to_string(),
                    "validators": [k.to_string()]})
            })
            .collect();
        let c = parse_committees(&json!({ "data": data }), 3, 8).unwrap();
        assert_eq!(c.len(), 16);
        assert_eq!(c[&(24, 0)], [0]);
        assert_eq!(c[&(24, 1)], [1]);
        assert_eq!(c[&(25, 0)], [2]);
        assert_eq!(c[&(31, 1)], [15]);
    }

    #[test]
    fn well_formed_committees_are_kept() {
        let mut committees = vec![
            json!({"slot": "8", "index": "0", "validators": ["5", "6"]}),
            json!({"slot": "9", "index": "0", "validators": ["7"]}),
        ];
        committees.extend(
            (10..16).map(|s| json!({"slot": s.to_string(), "index": "0", "validators": []})),
        );
        let data = json!({ "data": committees });
        let c = parse_committees(&data, 1, 8).unwrap();
        assert_eq!(c[&(8, 0)], [5, 6]);
        assert_eq!(c[&(9, 0)], [7]);
        let bad = json!({"data": [{"slot": "0", "index": "0", "validators": []}]});
        assert!(parse_committees(&bad, 1, 8).is_err());
    }

    #[test]
    fn duty_logs_parse_leniently() {
        let text = r#"{"ts_ms":5,"duty":{"slot":"12","kind":"attester"},"validator_index":"61","outcome":"success","stages":{"scheduled":1},"consensus_round":2,"consensus_seconds":0.5,"shares":[1,2,4],"new_field":true}
{"ts_ms":6,"duty":{"slot":13,"kind":"proposer"},"outcome":"no_consensus","detail":"round timeout","stages":{},"shares":[]}
{"duty":{"slot":"14","kind":"attes
{"outcome":"success"}
"#;
        let (rows, bad) = parse_duty_log("n0", text);
        assert_eq!(bad, 2);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            DutyRow {
                node: "n0".into(),
                slot: 12,
                kind: "attester".into(),
                validator: Some(61),
                outcome: "success".into(),
                detail: None,
                consensus_round: Some(2),
                consensus_seconds: Some(0.5),
                shares: "1,2,4".into(),
            }
        );
        assert_eq!(rows[1].slot, 13);
        assert_eq!(rows[1].detail.as_deref(), Some("round timeout"));
        assert_eq!(rows[1].shares, "");
        assert_eq!(rows[1].validator, None);
    }

    /// Lodestar's Altair block of slot 20 (node/src/eth/testdata/block20.json) carrying one
    /// proposer slashing of validator 9, one attester slashing whose attestations overlap
    /// on validator 5 only, and malformed entries of each kind.
    #[test]
    fn block_slashings_are_parsed_and_malformed_ones_skipped() {
        let sig = format!("0x{}", "a5".repeat(96));
        let header = |body_root: &str| {
            json!({"message": {"slot": "18", "proposer_index": "9",
                "parent_root": format!("0x{}", "11".repeat(32)),
                "state_root": format!("0x{}", "22".repeat(32)),
                "body_root": body_root}, "signature": sig})
        };
        let attestation = |indices: &[&str], root: &str| {
            json!({"attesting_indices": indices, "data": {"slot": "17", "index": "0",
                "beacon_block_root": root,
                "source": {"epoch": "1", "root": format!("0x{}", "33".repeat(32))},
                "target": {"epoch": "2", "root": format!("0x{}", "44".repeat(32))}},
                "signature": sig})
        };
        let (r1, r2) = (
            format!("0x{}", "55".repeat(32)),
            format!("0x{}", "66".repeat(32)),
        );
        let mut block: Value =
            serde_json::from_str(include_str!("../../node/src/eth/testdata/block20.json")).unwrap();
        let body = &mut block["data"]["message"]["body"];
        body["proposer_slashings"] = json!([
            {"signed_header_1": header(&r1), "signed_header_2": header(&r2)},
            {"signed_header_1": {"message": {"slot": "18"}}, "signed_header_2": header(&r2)},
        ]);
        body["attester_slashings"] = json!([
            {"attestation_1": attestation(&["1", "3", "5"], &r1),
             "attestation_2": attestation(&["5", "6", "7"], &r2)},
            {"attestation_1": attestation(&["2", "x"], &r1),
             "attestation_2": attestation(&["2"], &r2)},
            {"attestation_1": attestation(&["4"], &r1)},
        ]);
        let info = parse_block("0xblock20", &block).unwrap();
        assert_eq!((info.slot, info.proposer), (20, 13));
        assert_eq!(info.attestations.len(), 1);
        assert_eq!(info.slashings, [("proposer", 9), ("attester", 5)]);
        // The unmodified block slashes nobody; a body whose list is not a list is ignored.
        let plain: Value =
            serde_json::from_str(include_str!("../../node/src/eth/testdata/block20.json")).unwrap();
        assert!(parse_block("0xblock20", &plain)
            .unwrap()
            .slashings
            .is_empty());
        assert!(parse_slashings("0xb", &json!({"proposer_slashings": "0x00"})).is_empty());
    }

    #[test]
    fn bitlists_and_bitvectors() {
        // 0b0000_1101: bits 0, 2, delimiter at 3 → length 3, set {0, 2}.
        assert_eq!(bitlist_indices("0x0d").unwrap(), [0, 2]);
        // 9 bits: bit 8 set, delimiter at bit 9.
        assert_eq!(bitlist_indices("0x0003").unwrap(), [8]);
        assert!(bitlist_indices("0x00").is_err());
        assert!(bitlist_indices("zz").is_err());
        assert_eq!(bitvector_indices("0x0180").unwrap(), [0, 15]);
    }
}
