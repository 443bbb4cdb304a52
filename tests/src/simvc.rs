//! A simulated validator client that behaves like Lodestar 1.5.1's (read from its sources under
//! `node_modules/@lodestar/validator/lib/services`) against one dvnode's validator API, signing
//! with that node's real key shares (blst).
//!
//! - start: the validator indices of its share pubkeys, 10 pubkeys per request one after the
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
//! Not modelled: aggregation. In middleware mode dvnode refuses every aggregation request of a VC
//! without DV selections (Lodestar 1.5.1 has none), so a Lodestar VC's selection proofs and
//! aggregation requests do no work a distributed validator could use; the simulated VC skips
//! them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use dvnode::eth::beacon::{
    AttesterDuty, BeaconClient, BeaconEvent, BlockId, EventTopic, ProposerDuty, StateId, SyncDuty,
    ValidatorId,
};
use dvnode::eth::signing::ForkSchedule;
use dvnode::eth::types::{
    Attestation, BlsPubkey, BlsSignature, Epoch, Root, SignedBeaconBlockAltair, Slot,
    SyncCommitteeMessage, ValidatorIndex,
};
use dvnode::keys::keystore::Keystore;
use dvnode::keys::tbls::{self, SecretKey};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use ssz_types::BitList;
use tokio::sync::watch;

use crate::simbn::chain::{epoch_of, EPOCHS_PER_SYNC_COMMITTEE_PERIOD};
use crate::simbn::{now_ms, P};

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
    /// `attestation_data` or `block`.
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

/// A simulated validator client for one dvnode.
pub struct SimVc {
    node: usize,
    api: BeaconClient,
    http: reqwest::Client,
    api_url: String,
    schedule: Arc<ForkSchedule>,
    /// Share secret keys in DV order.
    keys: Arc<Vec<SecretKey>>,
    /// Share pubkeys in DV order.
    share_pubkeys: Vec<BlsPubkey>,
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
            keys: Arc::new(keys),
            share_pubkeys,
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
                    for duty in &d.data {
                        subscriptions.push(json!({
                            "validator_index": duty.validator_index.to_string(),
                            "committee_index": duty.committee_index.to_string(),
                            "committees_at_slot": duty.committees_at_slot.to_string(),
                            "slot": duty.slot.to_string(),
                            "is_aggregator": false,
                        }));
                    }
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
        let reveal = sign_all(
            &self.keys,
            vec![(j, self.schedule.randao_signing_root(epoch))],
        )
        .await[0];
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
        let signature = sign_all(&self.keys, vec![(j, root)]).await[0];
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

    async fn attest(&self, slot: Slot, duties: Vec<AttesterDuty>) {
        let Some(first) = duties.first() else {
            return;
        };
        let sent = now_ms();
        let data = match self.api.attestation_data(slot, first.committee_index).await {
            Ok(d) => {
                self.data_request(slot, "attestation_data", sent, None);
                d
            }
            Err(e) => {
                self.data_request(slot, "attestation_data", sent, Some(e.to_string()));
                self.error("attestation_data", e);
                return;
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
            jobs.push((j, root));
            kept.push(d);
        }
        let sigs = sign_all(&self.keys, jobs).await;
        let mut atts = Vec::with_capacity(kept.len());
        for (d, signature) in kept.iter().zip(sigs) {
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
    }

    async fn sync_messages(&self, slot: Slot, duties: Vec<SyncDuty>) {
        let head = *self.head.borrow();
        let root = if let Some((_, root)) = head.filter(|(s, _)| slot >= *s) {
            root
        } else {
            match self.api.header(BlockId::Head).await {
                Ok(h) => h.root,
                Err(e) => {
                    self.error("block_root", e);
                    return;
                }
            }
        };
        let signing_root = self.schedule.sync_committee_signing_root(root, slot);
        let kept: Vec<(usize, ValidatorIndex)> = duties
            .iter()
            .filter_map(|d| Some((self.position(d.validator_index)?, d.validator_index)))
            .collect();
        let sigs = sign_all(
            &self.keys,
            kept.iter().map(|(j, _)| (*j, signing_root)).collect(),
        )
        .await;
        let msgs: Vec<SyncCommitteeMessage> = kept
            .iter()
            .zip(sigs)
            .map(|((_, v), signature)| SyncCommitteeMessage {
                slot,
                beacon_block_root: root,
                validator_index: *v,
                signature,
            })
            .collect();
        match self.api.submit_sync_committee_messages(&msgs).await {
            Ok(()) => self.published("sync_message", msgs.len()),
            Err(e) => self.error("publish_sync_messages", e),
        }
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
        let others = async {
            if attesters.is_empty() && sync.is_empty() {
                return;
            }
            self.wait_attestation_time(slot).await;
            tokio::join!(
                async {
                    if !attesters.is_empty() {
                        self.attest(slot, attesters).await
                    }
                },
                async {
                    if !sync.is_empty() {
                        self.sync_messages(slot, sync).await
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
                _ = stop.changed() => return,
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
