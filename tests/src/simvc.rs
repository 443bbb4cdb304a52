//! A simulated validator client that behaves like Lodestar 1.5.1's (read from its sources under
//! `node_modules/@lodestar/validator/lib/services`) against one dvnode's validator API, in one of
//! two modes:
//!
//! - **middleware** ([`SimVc::new`]): it holds that node's real key shares (blst) and signs
//!   with them; dvnode is its beacon node and combines the partial signatures;
//! - **remote** ([`SimVc::new_remote`]): it holds no key at all and knows the DV public keys;
//!   dvnode is its beacon node **and** its Web3Signer (`--externalSigner.url`): every signature
//!   is a `POST /api/v1/eth2/sign/{pubkey}` with `type`, `fork_info`, `signingRoot` and the
//!   object, as Lodestar's `util/externalSignerClient.js` sends it (`fork_info.fork.epoch` is
//!   the signed epoch, `previous_version` the genesis version, as its `getForkInfo` gives).
//!
//! Both modes:
//! - start: the validator indices of its pubkeys, 10 pubkeys per request one after the
//!   other (`indices.js`, `PUBKEYS_PER_REQUEST`); the `head` event stream (`chainHeaderTracker`);
//! - every epoch: attester duties of this and the next epoch and their committee subscriptions
//!   (at most 8,738 per request), sync committee duties of this epoch and the next period and
//!   their subscriptions, `prepare_beacon_proposer` for all its validators;
//! - every slot: proposer duties of the epoch; the proposer signs its RANDAO reveal at the slot
//!   start, asks for the block, signs and publishes it; attesters and sync committee members
//!   wait for the slot's block (`head` event) or 1/3 of the slot, whichever is first, ask for the
//!   attestation data once (first duty's committee), sign one attestation per duty (the data
//!   with the duty's committee index) and publish them all in one request; the sync committee
//!   members sign the head root from the event stream and publish in one request.
//!
//! Remote mode adds what Lodestar does with an external signer (`attestationDuties.js`,
//! `syncCommitteeDuties.js`, `attestation.js`, `syncCommittee.js`):
//! - attestation selection proofs (`AGGREGATION_SLOT`) when an epoch's attester duties are first
//!   downloaded, `is_aggregator` from the returned signature, and `is_aggregator` in the
//!   committee subscriptions;
//! - sync selection proofs (`SYNC_COMMITTEE_SELECTION_PROOF`, one per duty and subcommittee) at
//!   the start of every slot with sync duties (Lodestar's `getDutiesAtSlot`);
//! - at 2/3 of the slot, per committee with an aggregator: `GET aggregate_attestation`, sign
//!   `AGGREGATE_AND_PROOF` per aggregator, `POST aggregate_and_proofs`; per sync subcommittee
//!   with an aggregator: `GET sync_committee_contribution` (over the root its members signed),
//!   sign `SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF`, `POST contribution_and_proofs`.
//!   The attestation and the sync committee services run side by side, as in Lodestar.
//!
//! Concurrency of the sign requests, as in Lodestar 1.5.1: the signatures of one step (the
//! slot's attestations, sync messages, aggregates of a committee, contributions of a
//! subcommittee) are requested **all at once** (Lodestar's `Promise.all` over the duties; its
//! `cross-fetch` agent does not cap sockets, so nothing bounds them: here a `join_all` over one
//! `reqwest` client without a pool limit), while selection proofs are requested **one after the
//! other** (Lodestar awaits each in a `for` loop: `pollBeaconAttestersForEpoch`,
//! `getSelectionProofs`). The committees of a slot aggregate concurrently (`Promise.all` over
//! committees / subcommittees). Every sign request is recorded ([`SignRecord`]: type,
//! latency, error) beside the data requests.
//!
//! Not modelled in middleware mode: aggregation. There dvnode refuses every aggregation request
//! of a VC without DV selections (Lodestar 1.5.1 has none), so a Lodestar VC's selection proofs
//! and aggregation requests do no work a distributed validator could use; the simulated VC
//! skips them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use dvnode::eth::aggregate::{
    is_aggregator, is_sync_committee_aggregator, sync_subcommittees, AggregateAndProof,
    ContributionAndProof, SignedAggregateAndProof, SignedContributionAndProof,
    SyncAggregatorSelectionData,
};
use dvnode::eth::beacon::{
    AttesterDuty, BeaconClient, BeaconEvent, BlockId, EventTopic, PoolKind, ProposerDuty, StateId,
    SyncDuty, ValidatorId,
};
use dvnode::eth::signing::ForkSchedule;
use dvnode::eth::types::{
    Attestation, AttestationData, BlsPubkey, BlsSignature, Epoch, Root, SignedBeaconBlockAltair,
    Slot, SyncCommitteeMessage, ValidatorIndex,
};
use dvnode::keys::keystore::Keystore;
use dvnode::keys::tbls::{self, SecretKey};
use futures::future::join_all;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use ssz_types::BitList;
use tokio::sync::watch;

use crate::simbn::chain::{epoch_of, EPOCHS_PER_SYNC_COMMITTEE_PERIOD};
use crate::simbn::{now_ms, GENESIS_FORK_VERSION, P};

/// Pubkeys per validator lookup (Lodestar's `PUBKEYS_PER_REQUEST`).
const PUBKEYS_PER_REQUEST: usize = 10;
/// Committee subscriptions per request (Lodestar's `SUBSCRIPTIONS_PER_REQUEST`).
const SUBSCRIPTIONS_PER_REQUEST: usize = 8738;
/// Signatures made per blocking task.
const SIGN_CHUNK: usize = 64;

/// Decrypts node `node_dir`'s share keystores `keystore-{j}.json` (password `keystore-{j}.txt`)
/// for DVs `0..count`, in DV order.
pub fn load_share_keys(node_dir: &Path, count: usize) -> Result<Vec<SecretKey>> {
    let dir = node_dir.join("validator_keys");
    (0..count)
        .map(|j| {
            let path = dir.join(format!("keystore-{j}.json"));
            let pw_path = dir.join(format!("keystore-{j}.txt"));
            let password = std::fs::read_to_string(&pw_path)
                .with_context(|| format!("reading {}", pw_path.display()))?;
            Keystore::from_file(&path)
                .and_then(|k| k.decrypt(password.trim_end_matches(['\n', '\r'])))
                .with_context(|| format!("decrypting {}", path.display()))
        })
        .collect()
}

/// One request for data to sign: how long the VC waited for the decided value.
#[derive(Clone, Debug, Serialize)]
pub struct DataRequest {
    /// Slot.
    pub slot: Slot,
    /// `attestation_data` or `block`; in remote mode also `aggregate_attestation` and
    /// `sync_committee_contribution`.
    pub kind: &'static str,
    /// Sent (Unix ms).
    pub sent_ms: u64,
    /// Answer after (ms).
    pub latency_ms: f64,
    /// Error, if the request failed.
    pub error: Option<String>,
}

/// One Web3Signer sign request of a remote-mode VC.
#[derive(Clone, Debug, Serialize)]
pub struct SignRecord {
    /// Slot of the signed object (the epoch's first slot for a RANDAO reveal).
    pub slot: Slot,
    /// Web3Signer `type` (`ATTESTATION`, `AGGREGATION_SLOT`, …).
    pub kind: &'static str,
    /// Sent (Unix ms).
    pub sent_ms: u64,
    /// Answer after (ms).
    pub latency_ms: f64,
    /// Error, if the request failed.
    pub error: Option<String>,
}

/// What a simulated VC did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VcStats {
    /// Requests for data to sign.
    pub data_requests: Vec<DataRequest>,
    /// Sign requests (remote mode only).
    pub sign_requests: Vec<SignRecord>,
    /// Aggregation duties it took (remote mode): `(slot, validator)` elected by their
    /// attestation selection proof.
    pub aggregators: Vec<(Slot, ValidatorIndex)>,
    /// Sync contribution duties it took (remote mode): `(slot, validator, subcommittee)`.
    pub sync_aggregators: Vec<(Slot, ValidatorIndex, u64)>,
    /// Objects published, by kind.
    pub published: BTreeMap<String, u64>,
    /// Failed calls by endpoint.
    pub errors: BTreeMap<String, u64>,
    /// The first failures verbatim.
    pub error_samples: Vec<String>,
    /// Validator indices it resolved.
    pub indices_resolved: usize,
    /// When it had resolved its indices and its first duties (Unix ms).
    pub ready_ms: Option<u64>,
}

/// Who signs.
enum Signer {
    /// The node's key shares, in DV order (middleware mode).
    Local(Arc<Vec<SecretKey>>),
    /// dvnode's Web3Signer API at the validator API URL (remote mode).
    Remote,
}

/// One signature to make: key position, signing root and, in remote mode, the Web3Signer
/// request's `type`, object key and object.
struct SignJob {
    position: usize,
    slot: Slot,
    root: Root,
    remote: Option<(&'static str, &'static str, serde_json::Value)>,
}

/// A simulated validator client for one dvnode.
pub struct SimVc {
    node: usize,
    api: BeaconClient,
    http: reqwest::Client,
    api_url: String,
    schedule: Arc<ForkSchedule>,
    signer: Signer,
    /// Its pubkeys in DV order: share pubkeys (middleware), DV pubkeys (remote).
    share_pubkeys: Vec<BlsPubkey>,
    /// Set when `run` is told to stop: tasks still running send no more sign requests (their
    /// failures against stopped dvnodes would be the harness's, not dvnode's).
    stopped: AtomicBool,
    /// Selection proofs of its aggregators, by `(slot, validator)` (remote mode).
    agg_proofs: Mutex<HashMap<(Slot, ValidatorIndex), BlsSignature>>,
    /// Validator index → DV position.
    positions: Mutex<HashMap<ValidatorIndex, usize>>,
    attesters: Mutex<BTreeMap<Epoch, Vec<AttesterDuty>>>,
    sync: Mutex<BTreeMap<u64, Vec<SyncDuty>>>,
    /// The last `head` event (none before the first).
    head: watch::Sender<Option<(Slot, Root)>>,
    stats: Mutex<VcStats>,
}

fn record_error(stats: &Mutex<VcStats>, endpoint: &str, e: impl std::fmt::Display) {
    let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
    *s.errors.entry(endpoint.to_string()).or_default() += 1;
    if s.error_samples.len() < 20 {
        s.error_samples.push(format!("{endpoint}: {e}"));
    }
}

/// Signs `roots[i]` with `keys[who[i]]` on the blocking pool, in chunks, preserving order.
async fn sign_all(keys: &Arc<Vec<SecretKey>>, jobs: Vec<(usize, Root)>) -> Vec<BlsSignature> {
    let mut tasks = Vec::new();
    for chunk in jobs.chunks(SIGN_CHUNK) {
        let chunk = chunk.to_vec();
        let keys = keys.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            chunk
                .iter()
                .map(|(j, root)| BlsSignature(tbls::sign(&keys[*j], &root.0).to_bytes()))
                .collect::<Vec<_>>()
        }));
    }
    let mut out = Vec::with_capacity(jobs.len());
    for t in tasks {
        out.extend(t.await.expect("signing task panicked"));
    }
    out
}

impl SimVc {
    /// A VC of node `node` talking to the validator API at `api_url`.
    pub fn new(
        node: usize,
        api_url: &str,
        schedule: Arc<ForkSchedule>,
        keys: Vec<SecretKey>,
    ) -> Result<Arc<SimVc>> {
        let share_pubkeys = keys
            .iter()
            .map(|k| BlsPubkey(k.sk_to_pk().to_bytes()))
            .collect();
        SimVc::build(
            node,
            api_url,
            schedule,
            Signer::Local(Arc::new(keys)),
            share_pubkeys,
        )
    }

    /// A VC of node `node` in remote-signer mode: no keys, the DV public keys `dv_pubkeys`
    /// (DV order), dvnode at `api_url` as beacon node and Web3Signer.
    pub fn new_remote(
        node: usize,
        api_url: &str,
        schedule: Arc<ForkSchedule>,
        dv_pubkeys: Vec<BlsPubkey>,
    ) -> Result<Arc<SimVc>> {
        SimVc::build(node, api_url, schedule, Signer::Remote, dv_pubkeys)
    }

    fn build(
        node: usize,
        api_url: &str,
        schedule: Arc<ForkSchedule>,
        signer: Signer,
        share_pubkeys: Vec<BlsPubkey>,
    ) -> Result<Arc<SimVc>> {
        Ok(Arc::new(SimVc {
            node,
            api: BeaconClient::with_timeouts(
                api_url,
                Duration::from_secs(12),
                Duration::from_secs(3),
            )?,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(12))
                .build()?,
            api_url: api_url.trim_end_matches('/').to_string(),
            schedule,
            signer,
            share_pubkeys,
            stopped: AtomicBool::new(false),
            agg_proofs: Mutex::new(HashMap::new()),
            positions: Mutex::new(HashMap::new()),
            attesters: Mutex::new(BTreeMap::new()),
            sync: Mutex::new(BTreeMap::new()),
            head: watch::channel(None).0,
            stats: Mutex::new(VcStats::default()),
        }))
    }

    /// What it did so far.
    pub fn stats(&self) -> VcStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn error(&self, endpoint: &str, e: impl std::fmt::Display) {
        record_error(&self.stats, endpoint, e);
    }

    fn published(&self, kind: &str, n: usize) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        *s.published.entry(kind.to_string()).or_default() += n as u64;
    }

    fn data_request(&self, slot: Slot, kind: &'static str, sent_ms: u64, error: Option<String>) {
        let latency_ms = now_ms().saturating_sub(sent_ms) as f64;
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .data_requests
            .push(DataRequest {
                slot,
                kind,
                sent_ms,
                latency_ms,
                error,
            });
    }

    fn is_remote(&self) -> bool {
        matches!(self.signer, Signer::Remote)
    }

    /// `Some(object())` in remote mode (the Web3Signer request needs the object), else `None`.
    fn remote_object(
        &self,
        sign_type: &'static str,
        key: &'static str,
        object: impl FnOnce() -> serde_json::Value,
    ) -> Option<(&'static str, &'static str, serde_json::Value)> {
        self.is_remote().then(|| (sign_type, key, object()))
    }

    /// One Web3Signer request (Lodestar's `externalSignerPostSignature`), recorded.
    async fn remote_sign(
        &self,
        position: usize,
        slot: Slot,
        root: Root,
        (sign_type, key, object): (&'static str, &'static str, serde_json::Value),
    ) -> Option<BlsSignature> {
        let epoch = epoch_of(slot);
        let pubkey = self.share_pubkeys[position];
        let body = json!({
            "type": sign_type,
            "signingRoot": root,
            "fork_info": {
                "fork": {
                    "previous_version": GENESIS_FORK_VERSION,
                    "current_version": self.schedule.version_at_epoch(epoch),
                    "epoch": epoch.to_string(),
                },
                "genesis_validators_root": self.schedule.genesis_validators_root(),
            },
            key: object,
        });
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        let url = format!("{}/api/v1/eth2/sign/{pubkey}", self.api_url);
        let sent_ms = now_ms();
        let result: Result<BlsSignature, String> = async {
            let r = self
                .http
                .post(&url)
                .json(&body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let text = r.text().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!(
                    "HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                ));
            }
            #[derive(serde::Deserialize)]
            struct Answer {
                signature: BlsSignature,
            }
            serde_json::from_str::<Answer>(&text)
                .map(|a| a.signature)
                .map_err(|e| format!("answer {text:?}: {e}"))
        }
        .await;
        let latency_ms = now_ms().saturating_sub(sent_ms) as f64;
        let error = result.as_ref().err().cloned();
        if error.is_some() && self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(e) = &error {
            self.error(&format!("sign/{sign_type}"), e);
        }
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sign_requests
            .push(SignRecord {
                slot,
                kind: sign_type,
                sent_ms,
                latency_ms,
                error,
            });
        result.ok()
    }

    /// Signs every job: with the key shares on the blocking pool (middleware), or with one
    /// Web3Signer request per job, all at once (remote; Lodestar's `Promise.all`). `None` where
    /// a sign request failed.
    /// Signs `messages` (one job each, in order), wraps each signed one with `wrap` and posts
    /// them in one array to `pool`'s endpoint; counts them as `published` or the failure under
    /// `endpoint`. Messages whose signature failed are dropped; nothing is posted if none is left.
    async fn sign_and_publish<M, S: Serialize>(
        &self,
        messages: Vec<M>,
        jobs: Vec<SignJob>,
        wrap: impl Fn(M, BlsSignature) -> S,
        pool: PoolKind,
        published: &str,
        endpoint: &str,
    ) {
        let signed: Vec<S> = messages
            .into_iter()
            .zip(self.sign_each(jobs).await)
            .filter_map(|(message, sig)| Some(wrap(message, sig?)))
            .collect();
        if signed.is_empty() {
            return;
        }
        let refs: Vec<&S> = signed.iter().collect();
        match self.api.submit_array(pool.path(), &refs).await {
            Ok(()) => self.published(published, signed.len()),
            Err(e) => self.error(endpoint, e),
        }
    }

    async fn sign_each(&self, jobs: Vec<SignJob>) -> Vec<Option<BlsSignature>> {
        match &self.signer {
            Signer::Local(keys) => {
                sign_all(keys, jobs.iter().map(|j| (j.position, j.root)).collect())
                    .await
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            Signer::Remote => {
                join_all(jobs.into_iter().map(|j| async move {
                    let req = j.remote?;
                    self.remote_sign(j.position, j.slot, j.root, req).await
                }))
                .await
            }
        }
    }

    async fn sign_one(&self, job: SignJob) -> Option<BlsSignature> {
        self.sign_each(vec![job]).await.pop().flatten()
    }

    fn indices(&self) -> Vec<ValidatorIndex> {
        let mut v: Vec<_> = self
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        v.sort_unstable();
        v
    }

    fn position(&self, index: ValidatorIndex) -> Option<usize> {
        self.positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&index)
            .copied()
    }

    fn two_thirds_ms(&self) -> u64 {
        self.schedule.seconds_per_slot() * 1000 * 2 / 3
    }

    fn slot_start_ms(&self, slot: Slot) -> u64 {
        self.schedule.slot_start_time(slot) * 1000
    }

    async fn sleep_until_ms(&self, t: u64) {
        let now = now_ms();
        if t > now {
            tokio::time::sleep(Duration::from_millis(t - now)).await;
        }
    }

    /// Resolves the validator indices of its share pubkeys, 10 per request, retrying until
    /// dvnode answers.
    async fn resolve_indices(&self, stop: &watch::Receiver<bool>) {
        let by_pk: HashMap<BlsPubkey, usize> = self
            .share_pubkeys
            .iter()
            .enumerate()
            .map(|(j, pk)| (*pk, j))
            .collect();
        for batch in self.share_pubkeys.chunks(PUBKEYS_PER_REQUEST) {
            let ids: Vec<ValidatorId> = batch.iter().map(|pk| ValidatorId::Pubkey(*pk)).collect();
            loop {
                if *stop.borrow() {
                    return;
                }
                match self.api.state_validators(StateId::Head, &ids).await {
                    Ok(found) => {
                        let mut pos = self.positions.lock().unwrap_or_else(|p| p.into_inner());
                        for v in found {
                            if let Some(j) = by_pk.get(&v.validator.pubkey) {
                                pos.insert(v.index, *j);
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        self.error("validators", e);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        let n = self
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .indices_resolved = n;
    }

    /// Follows `head` events through the validator API (reconnecting).
    async fn follow_head(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            match self.api.events::<P>(&[EventTopic::Head]).await {
                Ok(mut stream) => loop {
                    let item = tokio::select! {
                        item = stream.next() => item,
                        _ = stop.changed() => return,
                    };
                    match item {
                        Some(Ok(BeaconEvent::Head(h))) => {
                            self.head.send_replace(Some((h.slot, h.block)));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => self.error("events", e),
                        None => break,
                    }
                },
                Err(e) => self.error("events", e),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn post_json(&self, endpoint: &str, body: &serde_json::Value) {
        let url = format!("{}{endpoint}", self.api_url);
        let res = self.http.post(&url).json(body).send().await;
        match res {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                self.error(
                    endpoint,
                    format!(
                        "HTTP {status}: {}",
                        text.chars().take(200).collect::<String>()
                    ),
                );
            }
            Err(e) => self.error(endpoint, e),
        }
    }

    /// The epoch's duty polls (Lodestar's `runEveryEpoch` services).
    async fn epoch_tasks(self: Arc<Self>, epoch: Epoch) {
        let indices = self.indices();
        if indices.is_empty() {
            return;
        }
        let mut subscriptions = Vec::new();
        for e in [epoch, epoch + 1] {
            let known = self
                .attesters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&e);
            match self.api.attester_duties(e, &indices).await {
                Ok(d) => {
                    if !known && self.is_remote() {
                        self.attestation_selection_proofs(&d.data).await;
                    }
                    let proofs = self.agg_proofs.lock().unwrap_or_else(|p| p.into_inner());
                    for duty in &d.data {
                        subscriptions.push(json!({
                            "validator_index": duty.validator_index.to_string(),
                            "committee_index": duty.committee_index.to_string(),
                            "committees_at_slot": duty.committees_at_slot.to_string(),
                            "slot": duty.slot.to_string(),
                            "is_aggregator": proofs.contains_key(&(duty.slot, duty.validator_index)),
                        }));
                    }
                    drop(proofs);
                    if !known {
                        self.attesters
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(e, d.data);
                    }
                }
                Err(err) => self.error("duties/attester", err),
            }
        }
        for chunk in subscriptions.chunks(SUBSCRIPTIONS_PER_REQUEST) {
            self.post_json(
                "/eth/v1/validator/beacon_committee_subscriptions",
                &json!(chunk),
            )
            .await;
        }
        let mut sync_subs = Vec::new();
        for e in [epoch, epoch + EPOCHS_PER_SYNC_COMMITTEE_PERIOD] {
            match self.api.sync_duties(e, &indices).await {
                Ok(d) => {
                    let period = e / EPOCHS_PER_SYNC_COMMITTEE_PERIOD;
                    for duty in &d.data {
                        sync_subs.push(json!({
                            "validator_index": duty.validator_index.to_string(),
                            "sync_committee_indices": duty.validator_sync_committee_indices.iter().map(u64::to_string).collect::<Vec<_>>(),
                            "until_epoch": ((period + 1) * EPOCHS_PER_SYNC_COMMITTEE_PERIOD).to_string(),
                        }));
                    }
                    self.sync
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(period, d.data);
                }
                Err(err) => self.error("duties/sync", err),
            }
        }
        if !sync_subs.is_empty() {
            self.post_json(
                "/eth/v1/validator/sync_committee_subscriptions",
                &json!(sync_subs),
            )
            .await;
        }
        let proposers: Vec<serde_json::Value> = indices
            .iter()
            .map(|i| json!({"validator_index": i.to_string(), "fee_recipient": "0x000000000000000000000000000000000000dead"}))
            .collect();
        self.post_json(
            "/eth/v1/validator/prepare_beacon_proposer",
            &json!(proposers),
        )
        .await;
        // Forget old epochs (Lodestar keeps two historical epochs).
        self.attesters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|e, _| *e + 2 >= epoch);
    }

    /// The attestation selection proofs of newly downloaded duties, one request after the other
    /// (Lodestar's `pollBeaconAttestersForEpoch` → `getDutyAndProof`); keeps those that elect
    /// their validator.
    async fn attestation_selection_proofs(&self, duties: &[AttesterDuty]) {
        for d in duties {
            let Some(j) = self.position(d.validator_index) else {
                continue;
            };
            let slot = d.slot;
            let job = SignJob {
                position: j,
                slot,
                root: self.schedule.selection_proof_signing_root(slot),
                remote: self.remote_object(
                    "AGGREGATION_SLOT",
                    "aggregation_slot",
                    || json!({"slot": slot.to_string()}),
                ),
            };
            if let Some(proof) = self.sign_one(job).await {
                if is_aggregator(d.committee_length, &proof) {
                    self.agg_proofs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((slot, d.validator_index), proof);
                    self.stats
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .aggregators
                        .push((slot, d.validator_index));
                }
            }
        }
    }

    /// Waits for the slot's block (head event) or 1/3 of the slot, whichever comes first.
    async fn wait_attestation_time(&self, slot: Slot) {
        let third = self.slot_start_ms(slot) + self.schedule.seconds_per_slot() * 1000 / 3;
        let mut head = self.head.subscribe();
        let block_seen = async {
            let _ = head.wait_for(|h| h.is_some_and(|(s, _)| s >= slot)).await;
        };
        tokio::select! {
            _ = self.sleep_until_ms(third) => {}
            _ = block_seen => {}
        }
    }

    async fn propose(&self, slot: Slot, duty: ProposerDuty) {
        let Some(j) = self.position(duty.validator_index) else {
            return;
        };
        let epoch = epoch_of(slot);
        let Some(reveal) = self
            .sign_one(SignJob {
                position: j,
                slot,
                root: self.schedule.randao_signing_root(epoch),
                remote: self.remote_object(
                    "RANDAO_REVEAL",
                    "randao_reveal",
                    || json!({"epoch": epoch.to_string()}),
                ),
            })
            .await
        else {
            return;
        };
        let sent = now_ms();
        let block = match self.api.produce_block::<P>(slot, &reveal, None).await {
            Ok(b) => {
                self.data_request(slot, "block", sent, None);
                b
            }
            Err(e) => {
                self.data_request(slot, "block", sent, Some(e.to_string()));
                self.error("produce_block", e);
                return;
            }
        };
        let root = self.schedule.block_signing_root(&block);
        let Some(signature) = self
            .sign_one(SignJob {
                position: j,
                slot,
                root,
                remote: self.remote_object(
                    "BLOCK_V2",
                    "beacon_block",
                    || json!({"version": "ALTAIR", "block": block}),
                ),
            })
            .await
        else {
            return;
        };
        let signed = SignedBeaconBlockAltair {
            message: block,
            signature,
            extra: Default::default(),
        };
        match self.api.submit_block(&signed).await {
            Ok(()) => self.published("block", 1),
            Err(e) => self.error("publish_block", e),
        }
    }

    /// Asks for the attestation data, signs and publishes the duties' attestations; returns the
    /// data (committee index of the first duty) for the aggregation step.
    async fn attest(&self, slot: Slot, duties: Vec<AttesterDuty>) -> Option<AttestationData> {
        let first = duties.first()?;
        let sent = now_ms();
        let data = match self.api.attestation_data(slot, first.committee_index).await {
            Ok(d) => {
                self.data_request(slot, "attestation_data", sent, None);
                d
            }
            Err(e) => {
                self.data_request(slot, "attestation_data", sent, Some(e.to_string()));
                self.error("attestation_data", e);
                return None;
            }
        };
        let mut roots: HashMap<u64, Root> = HashMap::new();
        let mut jobs = Vec::with_capacity(duties.len());
        let mut kept = Vec::with_capacity(duties.len());
        for d in duties {
            let Some(j) = self.position(d.validator_index) else {
                continue;
            };
            let root = *roots.entry(d.committee_index).or_insert_with(|| {
                let mut x = data;
                x.index = d.committee_index;
                self.schedule.attestation_signing_root(&x)
            });
            jobs.push(SignJob {
                position: j,
                slot,
                root,
                remote: self.remote_object("ATTESTATION", "attestation", || {
                    let mut x = data;
                    x.index = d.committee_index;
                    json!(x)
                }),
            });
            kept.push(d);
        }
        let sigs = self.sign_each(jobs).await;
        let mut atts = Vec::with_capacity(kept.len());
        for (d, signature) in kept.iter().zip(sigs) {
            let Some(signature) = signature else {
                continue;
            };
            let Ok(mut bits) = BitList::with_capacity(d.committee_length as usize) else {
                continue;
            };
            if bits
                .set(d.validator_committee_index as usize, true)
                .is_err()
            {
                continue;
            }
            let mut x = data;
            x.index = d.committee_index;
            atts.push(Attestation::<P> {
                aggregation_bits: bits,
                data: x,
                signature,
            });
        }
        match self.api.submit_attestations(&atts).await {
            Ok(()) => self.published("attestation", atts.len()),
            Err(e) => self.error("publish_attestations", e),
        }
        Some(data)
    }

    /// Lodestar's `produceAndPublishAggregates` for every committee of the slot with one of its
    /// aggregators (remote mode), the committees concurrently.
    async fn aggregate(&self, slot: Slot, data: AttestationData, duties: &[AttesterDuty]) {
        let mut by_committee: BTreeMap<u64, Vec<(AttesterDuty, BlsSignature)>> = BTreeMap::new();
        {
            let proofs = self.agg_proofs.lock().unwrap_or_else(|p| p.into_inner());
            for d in duties {
                if let Some(proof) = proofs.get(&(slot, d.validator_index)) {
                    by_committee
                        .entry(d.committee_index)
                        .or_default()
                        .push((*d, *proof));
                }
            }
        }
        join_all(
            by_committee
                .into_iter()
                .map(|(index, aggregators)| async move {
                    let mut x = data;
                    x.index = index;
                    let sent = now_ms();
                    let aggregate = match self
                        .api
                        .aggregate_attestation::<P>(slot, Root::of(&x))
                        .await
                    {
                        Ok(a) => {
                            self.data_request(slot, "aggregate_attestation", sent, None);
                            a
                        }
                        Err(e) => {
                            self.data_request(
                                slot,
                                "aggregate_attestation",
                                sent,
                                Some(e.to_string()),
                            );
                            self.error("aggregate_attestation", e);
                            return;
                        }
                    };
                    let mut messages = Vec::new();
                    let mut jobs = Vec::new();
                    for (d, proof) in aggregators {
                        let Some(j) = self.position(d.validator_index) else {
                            continue;
                        };
                        let message = AggregateAndProof::<P> {
                            aggregator_index: d.validator_index,
                            aggregate: aggregate.clone(),
                            selection_proof: proof,
                        };
                        jobs.push(SignJob {
                            position: j,
                            slot,
                            root: self.schedule.aggregate_and_proof_signing_root(&message),
                            remote: self.remote_object(
                                "AGGREGATE_AND_PROOF",
                                "aggregate_and_proof",
                                || json!(message),
                            ),
                        });
                        messages.push(message);
                    }
                    self.sign_and_publish(
                        messages,
                        jobs,
                        |message, signature| SignedAggregateAndProof { message, signature },
                        PoolKind::Aggregates,
                        "aggregate",
                        "publish_aggregate_and_proofs",
                    )
                    .await;
                }),
        )
        .await;
    }

    /// Signs and publishes the slot's sync committee messages; returns the root they sign.
    async fn sync_messages(&self, slot: Slot, duties: Vec<SyncDuty>) -> Option<Root> {
        let head = *self.head.borrow();
        let root = if let Some((_, root)) = head.filter(|(s, _)| slot >= *s) {
            root
        } else {
            match self.api.header(BlockId::Head).await {
                Ok(h) => h.root,
                Err(e) => {
                    self.error("block_root", e);
                    return None;
                }
            }
        };
        let signing_root = self.schedule.sync_committee_signing_root(root, slot);
        let kept: Vec<(usize, ValidatorIndex)> = duties
            .iter()
            .filter_map(|d| Some((self.position(d.validator_index)?, d.validator_index)))
            .collect();
        let jobs = kept
            .iter()
            .map(|(j, _)| SignJob {
                position: *j,
                slot,
                root: signing_root,
                remote: self.remote_object(
                    "SYNC_COMMITTEE_MESSAGE",
                    "sync_committee_message",
                    || json!({"beacon_block_root": root, "slot": slot.to_string()}),
                ),
            })
            .collect();
        let sigs = self.sign_each(jobs).await;
        let msgs: Vec<SyncCommitteeMessage> = kept
            .iter()
            .zip(sigs)
            .filter_map(|((_, v), signature)| {
                Some(SyncCommitteeMessage {
                    slot,
                    beacon_block_root: root,
                    validator_index: *v,
                    signature: signature?,
                })
            })
            .collect();
        match self.api.submit_sync_committee_messages(&msgs).await {
            Ok(()) => self.published("sync_message", msgs.len()),
            Err(e) => self.error("publish_sync_messages", e),
        }
        Some(root)
    }

    /// The sync selection proofs of the slot's duties, one request after the other (Lodestar's
    /// `getSelectionProofs` in `getDutiesAtSlot`): `(validator, subcommittee, proof)` of those
    /// that elect their validator.
    async fn sync_selection_proofs(
        &self,
        slot: Slot,
        duties: &[SyncDuty],
    ) -> Vec<(ValidatorIndex, u64, BlsSignature)> {
        let mut out = Vec::new();
        for d in duties {
            let Some(j) = self.position(d.validator_index) else {
                continue;
            };
            if self.stopped.load(Ordering::Relaxed) {
                break;
            }
            for sub in sync_subcommittees::<P>(&d.validator_sync_committee_indices) {
                let data = SyncAggregatorSelectionData {
                    slot,
                    subcommittee_index: sub,
                };
                let job = SignJob {
                    position: j,
                    slot,
                    root: self.schedule.sync_selection_proof_signing_root(&data),
                    remote: self.remote_object(
                        "SYNC_COMMITTEE_SELECTION_PROOF",
                        "sync_aggregator_selection_data",
                        || json!(data),
                    ),
                };
                if let Some(proof) = self.sign_one(job).await {
                    if is_sync_committee_aggregator::<P>(&proof) {
                        out.push((d.validator_index, sub, proof));
                    }
                }
            }
        }
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        s.sync_aggregators
            .extend(out.iter().map(|(v, sub, _)| (slot, *v, *sub)));
        out
    }

    /// Lodestar's sync `produceAndPublishAggregates` for every subcommittee with one of its
    /// aggregators (remote mode), the subcommittees concurrently.
    async fn contribute(
        &self,
        slot: Slot,
        root: Root,
        aggregators: Vec<(ValidatorIndex, u64, BlsSignature)>,
    ) {
        let mut by_sub: BTreeMap<u64, Vec<(ValidatorIndex, BlsSignature)>> = BTreeMap::new();
        for (v, sub, proof) in aggregators {
            by_sub.entry(sub).or_default().push((v, proof));
        }
        join_all(by_sub.into_iter().map(|(sub, members)| async move {
            let sent = now_ms();
            let contribution = match self
                .api
                .sync_committee_contribution::<P>(slot, sub, root)
                .await
            {
                Ok(c) => {
                    self.data_request(slot, "sync_committee_contribution", sent, None);
                    c
                }
                Err(e) => {
                    self.data_request(
                        slot,
                        "sync_committee_contribution",
                        sent,
                        Some(e.to_string()),
                    );
                    self.error("sync_committee_contribution", e);
                    return;
                }
            };
            let mut messages = Vec::new();
            let mut jobs = Vec::new();
            for (v, proof) in members {
                let Some(j) = self.position(v) else {
                    continue;
                };
                let message = ContributionAndProof::<P> {
                    aggregator_index: v,
                    contribution: contribution.clone(),
                    selection_proof: proof,
                };
                jobs.push(SignJob {
                    position: j,
                    slot,
                    root: self.schedule.contribution_and_proof_signing_root(&message),
                    remote: self.remote_object(
                        "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
                        "contribution_and_proof",
                        || json!(message),
                    ),
                });
                messages.push(message);
            }
            self.sign_and_publish(
                messages,
                jobs,
                |message, signature| SignedContributionAndProof { message, signature },
                PoolKind::Contributions,
                "contribution",
                "publish_contribution_and_proofs",
            )
            .await;
        }))
        .await;
    }

    /// The slot's duties (Lodestar's `runEverySlot` services).
    async fn slot_tasks(self: Arc<Self>, slot: Slot) {
        let epoch = epoch_of(slot);
        let proposal = async {
            match self.api.proposer_duties::<P>(epoch).await {
                Ok(d) => {
                    if let Some(duty) = d.data.into_iter().find(|d| d.slot == slot && slot > 0) {
                        if self.position(duty.validator_index).is_some() {
                            self.propose(slot, duty).await;
                        }
                    }
                }
                Err(e) => self.error("duties/proposer", e),
            }
        };
        let attesters: Vec<AttesterDuty> = self
            .attesters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&epoch)
            .map(|d| d.iter().filter(|d| d.slot == slot).copied().collect())
            .unwrap_or_default();
        // Sync duties of the slot use the period of slot + 1 (Lodestar's offset).
        let sync: Vec<SyncDuty> = self
            .sync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(epoch_of(slot + 1) / EPOCHS_PER_SYNC_COMMITTEE_PERIOD))
            .cloned()
            .unwrap_or_default();
        if self.is_remote() {
            // Lodestar's attestation and sync committee services, side by side.
            let attestation = async {
                if attesters.is_empty() {
                    return;
                }
                self.wait_attestation_time(slot).await;
                let Some(data) = self.attest(slot, attesters.clone()).await else {
                    return;
                };
                self.sleep_until_ms(self.slot_start_ms(slot) + self.two_thirds_ms())
                    .await;
                self.aggregate(slot, data, &attesters).await;
            };
            let sync_committee = async {
                if sync.is_empty() {
                    return;
                }
                let aggregators = self.sync_selection_proofs(slot, &sync).await;
                self.wait_attestation_time(slot).await;
                let Some(root) = self.sync_messages(slot, sync).await else {
                    return;
                };
                self.sleep_until_ms(self.slot_start_ms(slot) + self.two_thirds_ms())
                    .await;
                if !aggregators.is_empty() {
                    self.contribute(slot, root, aggregators).await;
                }
            };
            tokio::join!(proposal, attestation, sync_committee);
            return;
        }
        let others = async {
            if attesters.is_empty() && sync.is_empty() {
                return;
            }
            self.wait_attestation_time(slot).await;
            tokio::join!(
                async {
                    if !attesters.is_empty() {
                        self.attest(slot, attesters).await;
                    }
                },
                async {
                    if !sync.is_empty() {
                        self.sync_messages(slot, sync).await;
                    }
                }
            );
        };
        tokio::join!(proposal, others);
    }

    /// Runs until `stop` turns true: start-up, then the epoch and slot services.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            match self.api.genesis().await {
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(node = self.node, error = %e, "validator API not up yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        tokio::spawn(self.clone().follow_head(stop.clone()));
        self.resolve_indices(&stop).await;
        let genesis_ms = self.slot_start_ms(0);
        let slot_ms = self.schedule.seconds_per_slot() * 1000;
        let mut slot = now_ms().saturating_sub(genesis_ms) / slot_ms;
        let mut polled = epoch_of(slot);
        self.clone().epoch_tasks(polled).await;
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ready_ms = Some(now_ms());
        // Slots that began while starting up are skipped, as a VC started late does.
        while self.slot_start_ms(slot) < now_ms() {
            slot += 1;
        }
        loop {
            tokio::select! {
                _ = self.sleep_until_ms(self.slot_start_ms(slot)) => {}
                _ = stop.changed() => {
                    self.stopped.store(true, Ordering::Relaxed);
                    return;
                }
            }
            if epoch_of(slot) > polled {
                polled = epoch_of(slot);
                tokio::spawn(self.clone().epoch_tasks(polled));
            }
            tokio::spawn(self.clone().slot_tasks(slot));
            slot += 1;
        }
    }
}
