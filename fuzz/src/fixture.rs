//! A small distributed-validator cluster with real keys (threshold BLS on blst) and decided
//! duties, shared by the targets that need a live workflow (partial signatures, validator API).
//!
//! Two DVs split 3-of-4; node 0 (share 1) is "us". The duty DB holds a decided attestation of
//! both DVs at [`ATT_SLOT`], a decided block of DV 0 at [`PROPOSER_SLOT`] (a real Lodestar
//! block) and a decided sync committee root for DV 1 at [`SYNC_SLOT`]. Genesis is long past,
//! so the deadlines of these slots (and of any fuzzed slot below ~10^8) have passed: a request
//! for an undecided duty is refused at once instead of waiting for it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use dvnode::duty::{AttesterDef, Duty, DutyDefs, DutyKind, ProposerDef, SyncDef};
use dvnode::dutydb::DutyDb;
use dvnode::eth::signing::{ForkName, ForkSchedule, ScheduledFork};
use dvnode::eth::types::{
    from_json_value, AttestationData, BeaconBlockAltair, BlsPubkey, BlsSignature, Checkpoint,
    Minimal, Root, SignedBeaconBlockAltair, Slot, Version,
};
use dvnode::keys::tbls;
use dvnode::p2p::SendError;
use dvnode::parsig::{DvShares, ParSig, ParSigMetrics, ParSigTransport, Threshold};
use dvnode::tracker::Tracker;
use dvnode::value::{AttesterEntry, DutyValue, ProposerEntry};
use prometheus_client::registry::Registry;
use rand::SeedableRng;
use tokio::sync::mpsc;

/// The preset of the fixture chain (what `lodestar dev` runs).
pub type P = Minimal;
/// Nodes of the cluster.
pub const NODES: usize = 4;
/// Threshold.
pub const THRESHOLD: usize = 3;
/// Genesis time: long ago, see the module docs.
pub const GENESIS_TIME: u64 = 1_000;
/// Seconds per slot.
pub const SECONDS_PER_SLOT: u64 = 6;
/// Genesis validators root.
pub const GVR: Root = Root([0x42; 32]);
/// Slot of the decided attestation (committee 0).
pub const ATT_SLOT: Slot = 1_000;
/// Slot of the decided block (DV 0 proposes).
pub const PROPOSER_SLOT: Slot = 1_001;
/// Slot of the decided sync committee root (DV 1 is a member).
pub const SYNC_SLOT: Slot = 1_002;
/// Validator index of DV `i`.
pub const fn validator_index(i: usize) -> u64 {
    20 + i as u64
}

/// An Altair-from-genesis minimal chain.
pub fn schedule() -> Arc<ForkSchedule> {
    static S: OnceLock<Arc<ForkSchedule>> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(
            ForkSchedule::new(
                GENESIS_TIME,
                GVR,
                SECONDS_PER_SLOT,
                8,
                vec![ScheduledFork {
                    name: ForkName::Altair,
                    version: Version([1, 0, 0, 1]),
                    epoch: 0,
                }],
            )
            .expect("fixture fork schedule"),
        )
    })
    .clone()
}

/// One distributed validator with its whole key and shares.
pub struct Dv {
    /// Whole secret (only the fixture knows it).
    pub secret: tbls::SecretKey,
    /// Group public key.
    pub pubkey: BlsPubkey,
    /// Secret shares, index i = share i + 1.
    pub shares: Vec<tbls::SecretKey>,
    /// Public shares, index i = share i + 1.
    pub public_shares: Vec<tbls::PublicKey>,
}

/// The fixture's DVs, sorted by pubkey.
pub fn dvs() -> &'static [Dv] {
    static D: OnceLock<Vec<Dv>> = OnceLock::new();
    D.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xd5_1a5);
        let mut dvs: Vec<Dv> = (0..2)
            .map(|_| {
                let secret = tbls::random_secret(&mut rng);
                let shares = tbls::split(&secret, NODES, THRESHOLD, &mut rng).expect("split");
                Dv {
                    pubkey: BlsPubkey(secret.sk_to_pk().to_bytes()),
                    public_shares: shares.iter().map(|s| s.sk_to_pk()).collect(),
                    secret,
                    shares,
                }
            })
            .collect();
        dvs.sort_by_key(|d| d.pubkey);
        dvs
    })
}

/// Share `share_index`'s partial signature of DV `dv` over `root`.
pub fn partial(dv: &Dv, share_index: u64, root: Root) -> BlsSignature {
    BlsSignature(tbls::sign(&dv.shares[share_index as usize - 1], &root.0).to_bytes())
}

/// The public shares the partials are checked against.
pub fn dv_shares() -> DvShares {
    DvShares {
        shares: dvs()
            .iter()
            .map(|d| (d.pubkey, d.public_shares.clone()))
            .collect::<HashMap<_, _>>(),
    }
}

/// The decided attestation data at [`ATT_SLOT`] (committee 0).
pub fn attestation_data() -> AttestationData {
    let epoch = ATT_SLOT / 8;
    AttestationData {
        slot: ATT_SLOT,
        index: 0,
        beacon_block_root: Root([7; 32]),
        source: Checkpoint {
            epoch: epoch - 1,
            root: Root([1; 32]),
        },
        target: Checkpoint {
            epoch,
            root: Root([2; 32]),
        },
    }
}

/// Committee position of DV `i` in the decided attestation.
pub const fn committee_position(i: usize) -> u64 {
    3 + 2 * i as u64
}

/// Length of committee 0.
pub const COMMITTEE_LENGTH: u64 = 16;

/// The decided attester entries, one per DV.
pub fn attester_entries() -> Vec<AttesterEntry> {
    dvs()
        .iter()
        .enumerate()
        .map(|(i, d)| AttesterEntry {
            def: AttesterDef {
                pubkey: d.pubkey,
                validator_index: validator_index(i),
                committee_index: 0,
                committee_length: COMMITTEE_LENGTH,
                committees_at_slot: 1,
                validator_committee_index: committee_position(i),
            },
            data: attestation_data(),
        })
        .collect()
}

/// A real block (`GET /eth/v2/beacon/blocks/20` of a Lodestar 1.5.1 minimal devnet).
/// Parsed once per process: the fixture's duty DB is rebuilt for every execution, and parsing
/// this block each time was a quarter of a parsig execution's own time.
pub fn lodestar_signed_block() -> SignedBeaconBlockAltair<P> {
    static B: OnceLock<SignedBeaconBlockAltair<P>> = OnceLock::new();
    B.get_or_init(|| {
        let text = include_str!("../../node/src/eth/testdata/block20.json");
        let v: serde_json::Value = serde_json::from_str(text).expect("block20.json");
        from_json_value(v["data"].clone()).expect("block20.json decodes")
    })
    .clone()
}

/// The decided block at [`PROPOSER_SLOT`]: the Lodestar block moved to that slot, proposed by
/// DV 0.
pub fn block() -> BeaconBlockAltair<P> {
    let mut b = lodestar_signed_block().message;
    b.slot = PROPOSER_SLOT;
    b.proposer_index = validator_index(0);
    b
}

/// The decided sync committee root at [`SYNC_SLOT`].
pub const SYNC_ROOT: Root = Root([0x5c; 32]);

/// A duty DB holding the fixture's decided duties.
pub fn dutydb() -> Arc<DutyDb<P>> {
    let db = DutyDb::<P>::new();
    let dv = dvs();
    let att = Duty::new(ATT_SLOT, DutyKind::Attester);
    let entries = attester_entries();
    db.store_defs(
        att,
        DutyDefs::Attester(entries.iter().map(|e| e.def).collect()),
    );
    db.store(att, &DutyValue::Attester(entries))
        .expect("store attester");
    let prop = Duty::new(PROPOSER_SLOT, DutyKind::Proposer);
    db.store_defs(
        prop,
        DutyDefs::Proposer(ProposerDef {
            pubkey: dv[0].pubkey,
            validator_index: validator_index(0),
        }),
    );
    db.store(
        prop,
        &DutyValue::Proposer(Box::new(ProposerEntry {
            pubkey: dv[0].pubkey,
            block: block(),
        })),
    )
    .expect("store block");
    let sync = Duty::new(SYNC_SLOT, DutyKind::SyncMessage);
    db.store_defs(
        sync,
        DutyDefs::SyncMessage(vec![SyncDef {
            pubkey: dv[1].pubkey,
            validator_index: validator_index(1),
        }]),
    );
    db.store(sync, &DutyValue::SyncMessage(SYNC_ROOT))
        .expect("store sync root");
    Arc::new(db)
}

/// A transport that drops what it is given (the targets look at the stage's outputs).
pub struct NoTransport;

impl ParSigTransport for NoTransport {
    fn broadcast(&self, _payload: Vec<u8>) -> Result<(), SendError> {
        Ok(())
    }

    fn send(&self, _to: usize, _payload: Vec<u8>) -> Result<(), SendError> {
        Ok(())
    }
}

/// The partial-signature stage of node `own_share` over the fixture's duty DB.
pub struct Workflow {
    /// The duty DB.
    pub dutydb: Arc<DutyDb<P>>,
    /// The partial signature stage.
    pub parsig: Arc<ParSig<P>>,
    /// Thresholds it emitted.
    pub out: mpsc::Receiver<Threshold>,
    /// The tracker it reports to.
    pub tracker: Tracker,
}

/// A fresh workflow for node `own_share` (fresh state for every execution).
pub fn workflow(own_share: u64) -> Workflow {
    let mut registry = Registry::default();
    let tracker = Tracker::new(&mut registry, None).expect("tracker");
    let dutydb = dutydb();
    let (tx, out) = mpsc::channel(64);
    let parsig = Arc::new(ParSig::new(
        own_share,
        THRESHOLD,
        dv_shares(),
        schedule(),
        dutydb.clone(),
        Arc::new(NoTransport),
        tx,
        ParSigMetrics::new(&mut registry),
        tracker.clone(),
    ));
    Workflow {
        dutydb,
        parsig,
        out,
        tracker,
    }
}

/// Checks an emitted threshold end to end: exactly `THRESHOLD` partials from distinct shares,
/// each valid for its share, combining into the DV's valid signature over the signing root.
pub fn check_threshold(t: &Threshold) {
    let dv = dvs()
        .iter()
        .find(|d| d.pubkey == t.pubkey)
        .expect("threshold for a DV of the cluster");
    assert_eq!(t.partials.len(), THRESHOLD, "{t:?}");
    let mut partials = Vec::new();
    for p in &t.partials {
        let pk = &dv.public_shares[p.share_index as usize - 1];
        let sig = tbls::Signature::from_bytes(&p.signature.0).expect("stored partial decodes");
        assert_eq!(sig, p.point, "a point that is not its signature in {t:?}");
        assert!(
            tbls::verify(pk, &t.signing_root.0, &sig),
            "invalid partial in {t:?}"
        );
        partials.push((p.share_index, sig));
    }
    let combined = tbls::combine(&partials, THRESHOLD).expect("combine");
    let group = tbls::PublicKey::from_bytes(&dv.pubkey.0).expect("DV pubkey");
    assert!(
        tbls::verify(&group, &t.signing_root.0, &combined),
        "threshold does not combine into a valid DV signature: {t:?}"
    );
}
