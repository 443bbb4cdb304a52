//! `dvnode::eth` against a real Lodestar v1.5.1 beacon node (minimal preset, Altair at genesis).
//!
//! The test starts `lodestar dev` with 16 interop validators, of which Lodestar's own validator
//! client runs 0..=13 and this test acts as validators 14 and 15 through `BeaconClient`: it
//! produces, signs and publishes their blocks, attestations and sync committee messages with the
//! signing roots of `dvnode::eth::signing` (Lodestar checks every signature before it accepts
//! them, and includes them on chain). Keeping 14 and 15 away from Lodestar's validator client
//! means our messages are never refused as "already known" and never equivocate.
//!
//! Afterwards every block of the chain is fetched and checked: JSON round trip, SSZ round trip
//! and `hash_tree_root` equal to the root Lodestar reports, proposer and RANDAO signatures,
//! every attestation's aggregate signature over its committee (committees recorded while the
//! chain ran) and every sync aggregate.
//!
//! Needs `LODESTAR_BIN` (path of the `lodestar` executable). Without it the test is skipped
//! with a loud message, unless `CI` is set, where it fails.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blst::min_pk::{PublicKey, Signature};
use blst::BLST_ERROR;
use futures::StreamExt;
use ssz::{Decode, Encode};
use ssz_types::typenum::Unsigned;
use ssz_types::BitList;

use dvnode::eth::beacon::{
    BeaconClient, BeaconError, BeaconEvent, BlockId, Committee, EventTopic, StateId, ValidatorId,
};
use dvnode::eth::signing::{
    attestation_signing_root, block_signing_root, randao_signing_root, sync_committee_signing_root,
    ForkSchedule,
};
use dvnode::eth::types::{
    Attestation, AttestationData, BlsPubkey, BlsSignature, Fork, Graffiti, Minimal, Preset, Root,
    SignedBeaconBlockAltair, Slot, SyncCommitteeMessage, ValidatorIndex,
};
use dvnode::keys::{interop::interop_secret, tbls, tbls::DST as BLS_DST};

fn interop_public_key(index: u64) -> tbls::PublicKey {
    interop_secret(index).sk_to_pk()
}

fn interop_sign(index: u64, root: &[u8; 32]) -> tbls::Signature {
    tbls::sign(&interop_secret(index), root)
}

const VALIDATORS: u64 = 16;
/// Validators this test runs itself (Lodestar's validator client runs the others).
const OURS: [ValidatorIndex; 2] = [14, 15];
const SECONDS_PER_SLOT: u64 = 2;
/// Duties are run up to at least this slot (three epochs, a few hundred signatures).
const MIN_LAST_SLOT: Slot = 18;
/// ... and at most to this one while waiting for a proposal of ours.
const MAX_LAST_SLOT: Slot = 26;

/// A `lodestar dev` process group, killed on drop (also when the test panics).
struct Lodestar {
    child: Child,
    rest_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Lodestar {
    fn drop(&mut self) {
        // The child leads its own process group (`process_group(0)`): kill the whole group,
        // Lodestar's worker processes included.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Lodestar {
    fn start(bin: &Path, genesis_time: u64) -> Lodestar {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let rest_port = free_port();
        let p2p_port = free_port();
        let log = dir.path().join("lodestar.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .current_dir(dir.path()) // `lodestar dev` writes genesis.ssz into its cwd
            .env("LODESTAR_PRESET", "minimal")
            // Lodestar's CLI reads every `LODESTAR_*` variable as a flag (`--bin`: "Unknown
            // argument: bin").
            .env_remove("LODESTAR_BIN")
            .args(["dev", "--genesisValidators", &VALIDATORS.to_string()])
            .args(["--startValidators", &format!("0..{}", OURS[0] - 1)])
            .args(["--params.ALTAIR_FORK_EPOCH", "0"])
            .args(["--params.SECONDS_PER_SLOT", &SECONDS_PER_SLOT.to_string()])
            .args(["--genesisTime", &genesis_time.to_string()])
            .args(["--rest", "--rest.address", "127.0.0.1"])
            .args(["--rest.port", &rest_port.to_string()])
            // The dev validator client ignores --rest.port: point it at the node explicitly.
            .args(["--beaconNodes", &format!("http://127.0.0.1:{rest_port}")])
            .args([
                "--listenAddress",
                "127.0.0.1",
                "--port",
                &p2p_port.to_string(),
            ])
            .args(["--discv5", "false", "--mdns", "false"])
            .args(["--dataDir", &dir.path().join("data").to_string_lossy()])
            .arg("--reset")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Lodestar {
            child,
            rest_port,
            log,
            _dir: dir,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn now_secs_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

async fn sleep_until(unix_secs: f64) {
    let wait = unix_secs - now_secs_f64();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
}

fn lodestar_bin() -> Option<PathBuf> {
    match std::env::var_os("LODESTAR_BIN") {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("CI").is_some() => {
            panic!("LODESTAR_BIN is not set: CI must run the Lodestar root tests")
        }
        None => {
            // Written to the stderr handle directly: libtest captures `eprintln!` of passing
            // tests, and this skip must be seen.
            use std::io::Write;
            let _ = std::io::stderr().write_all(
                b"\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                  !! SKIPPED lodestar_roots: LODESTAR_BIN is not set (path of `lodestar`). !!\n\
                  !! The signing roots were NOT checked against a real beacon node.       !!\n\
                  !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
            );
            None
        }
    }
}

fn pubkey(index: ValidatorIndex) -> PublicKey {
    interop_public_key(index)
}

fn sign(index: ValidatorIndex, root: Root) -> BlsSignature {
    BlsSignature(interop_sign(index, &root.0).compress())
}

fn verify_aggregate(sig: &BlsSignature, root: Root, signers: &[ValidatorIndex]) -> BLST_ERROR {
    let sig = match Signature::from_bytes(&sig.0) {
        Ok(sig) => sig,
        Err(e) => return e,
    };
    let pks: Vec<PublicKey> = signers.iter().map(|&i| pubkey(i)).collect();
    let refs: Vec<&PublicKey> = pks.iter().collect();
    sig.fast_aggregate_verify(true, &root.0, BLS_DST, &refs)
}

/// Events received (or stream errors), shared with the task reading the stream.
type EventLog = Arc<Mutex<Vec<Result<BeaconEvent<Minimal>, String>>>>;

/// What the duty loop did and saw.
#[derive(Default)]
struct Record {
    /// Committees by (slot, index), recorded while their epoch was servable.
    committees: HashMap<(Slot, u64), Vec<ValidatorIndex>>,
    /// Sync committee: position → validator.
    sync_committee: Vec<ValidatorIndex>,
    /// Our attestations: (validator, data).
    attestations: Vec<(ValidatorIndex, AttestationData)>,
    /// Our sync committee messages: slot → root voted for.
    sync_messages: BTreeMap<Slot, Root>,
    /// Our published blocks: slot → root.
    proposals: BTreeMap<Slot, Root>,
    /// Attestation data produced through the client, checked against the head.
    attestation_data_checked: usize,
    /// Proposer duties requested one epoch ahead.
    predicted_proposers: HashMap<u64, Vec<dvnode::eth::beacon::ProposerDuty>>,
    /// Epochs whose predicted proposers were compared with the actual ones.
    predictions_checked: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lodestar_roots_signatures_and_duties() {
    let Some(bin) = lodestar_bin() else { return };
    let genesis_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 5;
    let node = Lodestar::start(&bin, genesis_time);
    let client = BeaconClient::new(&format!("http://127.0.0.1:{}", node.rest_port)).unwrap();

    // REST comes up once the genesis state is built.
    let version = loop {
        match client.node_version().await {
            Ok(v) => break v,
            Err(_) if now_secs_f64() < genesis_time as f64 + 25.0 => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("Lodestar REST never came up: {e}\n{}", node.log_tail()),
        }
    };
    assert!(version.starts_with("Lodestar/v1.5.1"), "{version}");

    let schedule = client.fork_schedule().await.unwrap();
    schedule.ensure_preset::<Minimal>().unwrap();
    assert_eq!(schedule.genesis_time(), genesis_time);
    assert_eq!(schedule.seconds_per_slot(), SECONDS_PER_SLOT);
    let head_fork = client.fork(StateId::Head).await.unwrap();
    assert_eq!(
        head_fork,
        schedule.fork_at_epoch(0),
        "fork of the head state"
    );
    let syncing = client.node_syncing().await.unwrap();
    assert!(!syncing.is_syncing || syncing.head_slot == 0, "{syncing:?}");

    // Our validators, looked up by index and by pubkey (one `id=` each).
    let ids = [
        ValidatorId::Index(OURS[0]),
        ValidatorId::Pubkey(BlsPubkey(pubkey(OURS[1]).compress())),
    ];
    let vals = client.state_validators(StateId::Head, &ids).await.unwrap();
    assert_eq!(vals.len(), 2, "{vals:?}");
    for (v, &index) in vals.iter().zip(OURS.iter()) {
        assert_eq!(v.index, index);
        assert_eq!(v.validator.pubkey.0, pubkey(index).compress());
        assert!(v.status.is_active());
    }

    // Errors name the endpoint and status.
    let err = client.header(BlockId::Slot(999_999)).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("GET /eth/v1/beacon/headers/999999") && msg.contains("404"),
        "{msg}"
    );
    let err = client.attester_duties(99, &OURS).await.unwrap_err();
    assert!(
        matches!(err, BeaconError::Status { .. })
            && err
                .to_string()
                .contains("POST /eth/v1/validator/duties/attester/99"),
        "{err}"
    );

    // Record the event stream while the chain runs.
    let events: EventLog = Arc::default();
    let mut stream = client
        .events::<Minimal>(&[EventTopic::Head, EventTopic::Block, EventTopic::Attestation])
        .await
        .unwrap();
    let sink = events.clone();
    let event_task = tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            sink.lock().unwrap().push(ev.map_err(|e| e.to_string()));
        }
    });

    let record = run_duties(&client, &schedule, &node).await;
    // Let the last messages be included.
    let last_slot = record
        .sync_messages
        .keys()
        .next_back()
        .copied()
        .unwrap_or(0);
    sleep_until(schedule.slot_start_time(last_slot + 3) as f64 + 0.5).await;
    event_task.abort();

    let events: Vec<BeaconEvent<Minimal>> = std::mem::take(&mut *events.lock().unwrap())
        .into_iter()
        .map(|e| e.unwrap_or_else(|e| panic!("event stream: {e}")))
        .collect();
    verify_chain(&client, &schedule, &record, &events).await;
}

/// Acts as validators [`OURS`] from the first slot after genesis until [`MIN_LAST_SLOT`] (and
/// until one of them proposed, at most [`MAX_LAST_SLOT`]).
async fn run_duties(client: &BeaconClient, schedule: &ForkSchedule, node: &Lodestar) -> Record {
    let mut record = Record::default();
    let mut attester: HashMap<Slot, Vec<(ValidatorIndex, u64, u64, u64)>> = HashMap::new();
    let mut proposer: HashMap<Slot, ValidatorIndex> = HashMap::new();
    let mut sync_positions: HashSet<ValidatorIndex> = HashSet::new();
    let mut epoch_loaded = None;

    let first = schedule
        .slot_at_time(now_secs_f64() as u64)
        .map_or(1, |s| s + 1)
        .max(1);
    for slot in first..=MAX_LAST_SLOT {
        if slot > MIN_LAST_SLOT && !record.proposals.is_empty() {
            break;
        }
        let start = schedule.slot_start_time(slot) as f64;
        let epoch = schedule.epoch_at_slot(slot);
        sleep_until(start + 0.05).await;

        if epoch_loaded != Some(epoch) {
            load_epoch(
                client,
                schedule,
                epoch,
                &mut record,
                &mut attester,
                &mut proposer,
            )
            .await
            .unwrap_or_else(|e| panic!("epoch {epoch} duties: {e}\n{}", node.log_tail()));
            if record.sync_committee.is_empty() {
                let all: Vec<u64> = (0..VALIDATORS).collect();
                let duties = client.sync_duties(epoch, &all).await.unwrap();
                let size = <Minimal as Preset>::SyncCommitteeSize::to_usize();
                let mut members = vec![u64::MAX; size];
                for d in &duties.data {
                    for &pos in &d.validator_sync_committee_indices {
                        members[pos as usize] = d.validator_index;
                    }
                }
                assert!(members.iter().all(|&m| m < VALIDATORS), "{members:?}");
                sync_positions = OURS
                    .iter()
                    .copied()
                    .filter(|v| members.contains(v))
                    .collect();
                record.sync_committee = members;
            }
            epoch_loaded = Some(epoch);
        }

        if let Some(&v) = proposer.get(&slot) {
            let root = propose(client, schedule, slot, v).await;
            record.proposals.insert(slot, root);
        }

        // Attest and vote at a third of the slot, like a validator client.
        sleep_until(start + SECONDS_PER_SLOT as f64 / 3.0).await;
        let head = client.header(BlockId::Head).await.unwrap();
        let messages: Vec<SyncCommitteeMessage> = sync_positions
            .iter()
            .map(|&v| SyncCommitteeMessage {
                slot,
                beacon_block_root: head.root,
                validator_index: v,
                signature: sign(v, schedule.sync_committee_signing_root(head.root, slot)),
            })
            .collect();
        client
            .submit_sync_committee_messages(&messages)
            .await
            .unwrap_or_else(|e| panic!("sync committee messages of slot {slot}: {e}"));
        record.sync_messages.insert(slot, head.root);

        for &(v, committee_index, committee_length, position) in
            attester.get(&slot).map(Vec::as_slice).unwrap_or_default()
        {
            let data = client
                .attestation_data(slot, committee_index)
                .await
                .unwrap();
            assert_eq!((data.slot, data.index), (slot, committee_index));
            assert_eq!(data.target.epoch, epoch);
            if data.beacon_block_root == head.root {
                record.attestation_data_checked += 1;
            }
            let mut bits = BitList::with_capacity(committee_length as usize).unwrap();
            bits.set(position as usize, true).unwrap();
            let attestation = Attestation::<Minimal> {
                aggregation_bits: bits,
                data,
                signature: sign(v, schedule.attestation_signing_root(&data)),
            };
            client
                .submit_attestations(&[attestation])
                .await
                .unwrap_or_else(|e| panic!("attestation of {v} at slot {slot}: {e}"));
            record.attestations.push((v, data));
        }
    }
    record
}

type AttesterDuties = HashMap<Slot, Vec<(ValidatorIndex, u64, u64, u64)>>;

/// Loads duties and committees of `epoch` (served by the head state during the epoch).
async fn load_epoch(
    client: &BeaconClient,
    schedule: &ForkSchedule,
    epoch: u64,
    record: &mut Record,
    attester: &mut AttesterDuties,
    proposer: &mut HashMap<Slot, ValidatorIndex>,
) -> Result<(), BeaconError> {
    let committees: Vec<Committee> = client.committees::<Minimal>(StateId::Head, epoch).await?;
    assert!(!committees.is_empty());
    for c in committees {
        assert_eq!(schedule.epoch_at_slot(c.slot), epoch, "{c:?}");
        record.committees.insert((c.slot, c.index), c.validators);
    }
    for d in client.attester_duties(epoch, &OURS).await?.data {
        // The duty agrees with the committee listing.
        let members = &record.committees[&(d.slot, d.committee_index)];
        assert_eq!(members.len() as u64, d.committee_length);
        assert_eq!(
            members[d.validator_committee_index as usize],
            d.validator_index
        );
        attester.entry(d.slot).or_default().push((
            d.validator_index,
            d.committee_index,
            d.committee_length,
            d.validator_committee_index,
        ));
    }
    let duties = client.proposer_duties::<Minimal>(epoch).await?;
    assert!(duties.dependent_root.is_some());
    for d in &duties.data {
        assert_eq!(schedule.epoch_at_slot(d.slot), epoch, "{d:?}");
        assert_eq!(d.pubkey.0, pubkey(d.validator_index).compress());
        if OURS.contains(&d.validator_index) && d.slot > 0 {
            proposer.insert(d.slot, d.validator_index);
        }
    }
    // Duties predicted one epoch ahead (which Lodestar labels with the current epoch's slots)
    // must be what the node says once the epoch has come.
    if let Some(predicted) = record.predicted_proposers.get(&epoch) {
        assert_eq!(
            predicted, &duties.data,
            "next-epoch proposer duties of epoch {epoch}"
        );
        record.predictions_checked += 1;
    }
    let next = client.proposer_duties::<Minimal>(epoch + 1).await?;
    record.predicted_proposers.insert(epoch + 1, next.data);
    Ok(())
}

/// Produces, signs and publishes the block of `slot` as validator `v`; returns its root.
async fn propose(client: &BeaconClient, schedule: &ForkSchedule, slot: Slot, v: u64) -> Root {
    let epoch = schedule.epoch_at_slot(slot);
    let randao = sign(v, schedule.randao_signing_root(epoch));
    let mut graffiti = Graffiti::ZERO;
    graffiti.0[..13].copy_from_slice(b"dvnode-eth-rs");
    let block = client
        .produce_block::<Minimal>(slot, &randao, Some(&graffiti))
        .await
        .unwrap_or_else(|e| panic!("produce block at slot {slot}: {e}"));
    assert_eq!(block.slot, slot);
    assert_eq!(block.proposer_index, v);
    assert_eq!(block.body.randao_reveal, randao);
    // Lodestar v1.5.1 reads the `graffiti` query parameter as UTF-8 text, not as the API's
    // hex Bytes32: it stores the first 32 characters of our "0x…" string.
    let mut as_text = Graffiti::ZERO;
    as_text
        .0
        .copy_from_slice(&graffiti.to_string().as_bytes()[..32]);
    assert!(
        block.body.graffiti == graffiti || block.body.graffiti == as_text,
        "graffiti {}",
        block.body.graffiti
    );
    let fork = schedule.fork_at_epoch(epoch);
    let signing_root = block_signing_root(&block, &fork, schedule.genesis_validators_root());
    assert_eq!(signing_root, schedule.block_signing_root(&block));
    let signed = SignedBeaconBlockAltair {
        signature: sign(v, signing_root),
        message: block,
        extra: Default::default(),
    };
    client
        .submit_block(&signed)
        .await
        .unwrap_or_else(|e| panic!("publish block at slot {slot}: {e}"));
    signed.block_root()
}

async fn verify_chain(
    client: &BeaconClient,
    schedule: &ForkSchedule,
    record: &Record,
    events: &[BeaconEvent<Minimal>],
) {
    let gvr = schedule.genesis_validators_root();
    let head = client.header(BlockId::Head).await.unwrap();
    let head_slot = head.header.message.slot;
    assert!(
        head_slot >= MIN_LAST_SLOT,
        "chain stalled at slot {head_slot}"
    );

    let mut blocks: BTreeMap<Slot, SignedBeaconBlockAltair<Minimal>> = BTreeMap::new();
    let mut roots: HashSet<Root> = HashSet::new();
    let (mut attestations_checked, mut sync_aggregates_checked) = (0, 0);
    let mut ours_included: HashSet<(ValidatorIndex, Slot)> = HashSet::new();
    let mut our_sync_votes_included = 0;

    for slot in 1..=head_slot {
        let raw = match client.block_raw(BlockId::Slot(slot)).await {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => continue, // skipped slot
            Err(e) => panic!("block {slot}: {e}"),
        };
        assert_eq!(raw.version, "altair");
        let block = client.block::<Minimal>(BlockId::Slot(slot)).await.unwrap();
        // JSON round trip: the typed block writes back exactly what Lodestar sent.
        assert_eq!(
            serde_json::to_value(&block).unwrap(),
            raw.data,
            "slot {slot}"
        );
        // SSZ round trip and hash_tree_root against the root Lodestar reports.
        let bytes = block.as_ssz_bytes();
        let decoded = SignedBeaconBlockAltair::<Minimal>::from_ssz_bytes(&bytes).unwrap();
        assert_eq!(decoded, block);
        let header = client.header(BlockId::Slot(slot)).await.unwrap();
        assert_eq!(decoded.block_root(), header.root, "slot {slot}");
        assert_eq!(block.signed_header(), header.header);
        assert!(header.canonical);

        let msg = &block.message;
        let fork: Fork = schedule.fork_at_epoch(schedule.epoch_at_slot(slot));
        // Proposer and RANDAO signatures.
        let proposer_root = block_signing_root(msg, &fork, gvr);
        assert_eq!(
            verify_aggregate(&block.signature, proposer_root, &[msg.proposer_index]),
            BLST_ERROR::BLST_SUCCESS,
            "proposer signature of slot {slot}"
        );
        let randao_root = randao_signing_root(schedule.epoch_at_slot(slot), &fork, gvr);
        assert_eq!(
            verify_aggregate(&msg.body.randao_reveal, randao_root, &[msg.proposer_index]),
            BLST_ERROR::BLST_SUCCESS,
            "randao reveal of slot {slot}"
        );

        // Attestations over their committees.
        for att in msg.body.attestations.iter() {
            let key = (att.data.slot, att.data.index);
            let committee = record
                .committees
                .get(&key)
                .unwrap_or_else(|| panic!("no committee recorded for {key:?}"));
            assert_eq!(att.aggregation_bits.len(), committee.len());
            let signers: Vec<ValidatorIndex> = committee
                .iter()
                .enumerate()
                .filter(|(i, _)| att.aggregation_bits.get(*i).unwrap())
                .map(|(_, &v)| v)
                .collect();
            let att_fork = schedule.fork_at_epoch(att.data.target.epoch);
            let root = attestation_signing_root(&att.data, &att_fork, gvr);
            assert_eq!(
                verify_aggregate(&att.signature, root, &signers),
                BLST_ERROR::BLST_SUCCESS,
                "attestation {:?} in block {slot}",
                att.data
            );
            attestations_checked += 1;
            for &(v, data) in &record.attestations {
                if data == att.data && signers.contains(&v) {
                    ours_included.insert((v, data.slot));
                }
            }
        }

        // Sync aggregate: the committee's vote on the previous slot's block root.
        let agg = &msg.body.sync_aggregate;
        let participants: Vec<ValidatorIndex> = record
            .sync_committee
            .iter()
            .enumerate()
            .filter(|(i, _)| agg.sync_committee_bits.get(*i).unwrap())
            .map(|(_, &v)| v)
            .collect();
        if participants.is_empty() {
            assert_eq!(agg.sync_committee_signature, BlsSignature::infinity());
        } else {
            let root =
                sync_committee_signing_root::<Minimal>(msg.parent_root, slot - 1, &fork, gvr);
            assert_eq!(
                verify_aggregate(&agg.sync_committee_signature, root, &participants),
                BLST_ERROR::BLST_SUCCESS,
                "sync aggregate of slot {slot}"
            );
            sync_aggregates_checked += 1;
            if record.sync_messages.get(&(slot - 1)) == Some(&msg.parent_root)
                && OURS.iter().all(|v| participants.contains(v))
            {
                our_sync_votes_included += 1;
            }
        }
        roots.insert(header.root);
        blocks.insert(slot, block);
    }

    eprintln!(
        "lodestar_roots: {} blocks, {attestations_checked} attestations, \
         {sync_aggregates_checked} sync aggregates verified; ours: {} proposals, {}/{} \
         attestations and {our_sync_votes_included}/{} sync votes included; {} attestation \
         data matched the head",
        blocks.len(),
        record.proposals.len(),
        ours_included.len(),
        record.attestations.len(),
        record.sync_messages.len(),
        record.attestation_data_checked,
    );
    assert!(
        record.predictions_checked >= 2,
        "next-epoch proposer duties never compared"
    );
    assert!(
        blocks.len() as u64 >= head_slot / 2,
        "too many skipped slots"
    );
    assert!(attestations_checked >= blocks.len() / 2);
    assert!(sync_aggregates_checked >= blocks.len() / 2);

    // Our own messages were accepted and made it on chain.
    assert!(
        !record.proposals.is_empty(),
        "validators {OURS:?} had no proposal duty"
    );
    for (slot, root) in &record.proposals {
        let ours = blocks.get(slot).map(|b| b.block_root());
        assert_eq!(
            ours,
            Some(*root),
            "our block of slot {slot} is not canonical"
        );
    }
    assert!(
        !record.attestations.is_empty(),
        "no attester duty for {OURS:?}"
    );
    assert!(
        ours_included.len() * 2 >= record.attestations.len(),
        "only {}/{} of our attestations were included",
        ours_included.len(),
        record.attestations.len()
    );
    assert!(
        our_sync_votes_included * 2 >= record.sync_messages.len(),
        "only {our_sync_votes_included}/{} of our sync votes were included",
        record.sync_messages.len()
    );

    // The event stream saw the chain.
    let heads: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            BeaconEvent::Head(h) => Some(h),
            _ => None,
        })
        .collect();
    assert!(heads.len() >= 5, "{} head events", heads.len());
    assert!(
        heads
            .iter()
            .all(|h| roots.contains(&h.block) || h.slot > head_slot),
        "a head event names a block that is not canonical"
    );
    let block_events: HashSet<Root> = events
        .iter()
        .filter_map(|e| match e {
            BeaconEvent::Block(b) => Some(b.block),
            _ => None,
        })
        .collect();
    for root in record.proposals.values() {
        assert!(
            block_events.contains(root),
            "no block event for our block {root}"
        );
    }
    assert!(events
        .iter()
        .any(|e| matches!(e, BeaconEvent::Attestation(_))));
}
