//! QBFT: three honest engines (nodes 0..2 of 4, dvnode's [`Instance`] over attester duty
//! values with the node's real validity predicate, [`DutyPolicy`]) and one byzantine node 3
//! played by the fuzzer, on a network the fuzzer schedules: it starts nodes with inputs,
//! delivers, duplicates and drops messages in any order, fires round timers, and injects
//! messages as node 3 (any kind, round, value and hash, with justifications made of anything
//! seen on the network — honest messages can be relayed with other justifications, since those
//! are not signed), plus raw wire bytes through [`QbftMsg::decode`].
//!
//! Messages are signed with a keyed hash (as in the simulator) instead of secp256k1, so that
//! the fuzzer can sign as node 3 cheaply; honest signatures cannot be forged either way.
//!
//! Properties checked after every step: each node decides at most once, with a quorum of
//! COMMITs that [`verify_decision`] accepts, on a value its predicate accepts; honest nodes
//! never decide different values (agreement with one byzantine node of four).
//! Own messages survive the wire ([`QbftMsg::encode`] then [`QbftMsg::decode`]): checked once
//! per message shape (kind, number of justifications, number of values) and execution.
//!
//! Input: a sequence of operations, one opcode byte each followed by its arguments (see
//! [`run`]); missing argument bytes read as zero.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use dvnode::consensus::msg::{Hash, InstanceId, MsgBody, QbftMsg, SignedMsg, ZERO_HASH};
use dvnode::consensus::qbft::{verify_decision, Config, Instance, Output, Signer, Value};
use dvnode::consensus::sim::{sim_keys, KeyedHashSigner, KeyedHashVerifier};
use dvnode::decide::DutyPolicy;
use dvnode::duty::{Duty, DutyKind};
use dvnode::eth::types::{BlsPubkey, Root};
use dvnode::slashing::SlashingDb;
use dvnode::value::{AttesterEntry, DutyValue, ProposerEntry};

use crate::fixture::{self, P};

type V = DutyValue<P>;

const N: u64 = 4;
const HONEST: u64 = 3;
const BYZ: u64 = 3;
/// Most messages in flight (more are dropped, as a full queue would).
const MAX_PENDING: usize = 512;
/// Most messages remembered for justifications and relays.
const MAX_SEEN: usize = 256;

fn duty() -> Duty {
    Duty::new(fixture::ATT_SLOT, DutyKind::Attester)
}

fn instance() -> InstanceId {
    duty().instance_id()
}

fn keys() -> &'static [[u8; 32]] {
    static K: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    K.get_or_init(|| sim_keys(N as usize, 7))
}

fn config(node: u64) -> Config {
    Config::new(
        N,
        Arc::new(KeyedHashSigner::new(keys()[node as usize])),
        Arc::new(KeyedHashVerifier::new(keys().to_vec())),
    )
}

/// The candidate values: valid attester values that differ in the head vote, and values the
/// predicate refuses (wrong slot, another duty kind, an unknown validator, unsorted entries).
pub fn candidates() -> &'static [V] {
    static C: OnceLock<Vec<V>> = OnceLock::new();
    C.get_or_init(|| {
        let base = fixture::attester_entries();
        let with_head = |h: u8| {
            V::Attester(
                base.iter()
                    .map(|e| {
                        let mut e = *e;
                        e.data.beacon_block_root = Root([h; 32]);
                        e
                    })
                    .collect(),
            )
        };
        let mut wrong_slot = base.clone();
        wrong_slot[0].data.slot += 1;
        let mut unknown = base.clone();
        unknown[0].def.pubkey = BlsPubkey([0xaa; 48]);
        let mut unsorted: Vec<AttesterEntry> = base.clone();
        unsorted.reverse();
        vec![
            with_head(7),
            with_head(8),
            with_head(9),
            V::Attester(base[..1].to_vec()),
            V::Attester(wrong_slot),
            V::SyncMessage(Root([3; 32])),
            V::Proposer(Box::new(ProposerEntry {
                pubkey: fixture::dvs()[0].pubkey,
                block: fixture::block(),
            })),
            V::Attester(unknown),
            V::Attester(unsorted),
        ]
    })
}

fn policy() -> DutyPolicy {
    static DB: OnceLock<Arc<SlashingDb>> = OnceLock::new();
    let db = DB
        .get_or_init(|| Arc::new(SlashingDb::in_memory().expect("in-memory slashing DB")))
        .clone();
    let dvs: HashSet<BlsPubkey> = fixture::dvs().iter().map(|d| d.pubkey).collect();
    DutyPolicy::new(duty(), fixture::schedule(), db, Arc::new(dvs))
}

/// A byte reader that yields zeros when the input runs out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct Node {
    inst: Instance<V>,
    timer: Option<u64>,
    decided: Option<V>,
}

struct Cluster {
    nodes: Vec<Node>,
    pending: Vec<(u64, QbftMsg)>,
    seen: Vec<SignedMsg>,
    byz: KeyedHashSigner,
    policy: DutyPolicy,
    /// Shapes (kind, justifications, values) of own messages whose wire round trip this
    /// execution checked.
    wire_checked: HashSet<(u8, usize, usize)>,
}

impl Cluster {
    fn new() -> Cluster {
        let nodes = (0..HONEST)
            .map(|i| Node {
                inst: Instance::new(config(i), instance(), i, Box::new(policy()))
                    .expect("instance"),
                timer: None,
                decided: None,
            })
            .collect();
        Cluster {
            nodes,
            pending: Vec::new(),
            seen: Vec::new(),
            byz: KeyedHashSigner::new(keys()[BYZ as usize]),
            policy: policy(),
            wire_checked: HashSet::new(),
        }
    }

    fn remember(&mut self, msg: &QbftMsg) {
        for m in std::iter::once(&msg.msg).chain(&msg.justification) {
            if self.seen.len() < MAX_SEEN && !self.seen.contains(m) {
                self.seen.push(m.clone());
            }
        }
    }

    fn send(&mut self, to: u64, msg: QbftMsg) {
        if to < HONEST && self.pending.len() < MAX_PENDING {
            self.pending.push((to, msg));
        }
    }

    fn apply(&mut self, node: u64, outputs: Vec<Output<V>>) {
        for o in outputs {
            match o {
                Output::Broadcast(msg) => {
                    // Once per shape and execution: the round trips of every broadcast were
                    // 28% of this target's CPU time (the same messages again and again).
                    let shape = (msg.msg.body.kind, msg.justification.len(), msg.values.len());
                    if self.wire_checked.insert(shape) {
                        assert_eq!(
                            QbftMsg::decode(&msg.encode()).as_ref(),
                            Ok(&msg),
                            "an own message does not survive the wire"
                        );
                    }
                    self.remember(&msg);
                    for to in (0..HONEST).filter(|&to| to != node) {
                        self.send(to, msg.clone());
                    }
                }
                Output::SendTo { peer, msg } => {
                    self.remember(&msg);
                    self.send(peer, msg);
                }
                Output::ScheduleTimeout { round, .. } => {
                    self.nodes[node as usize].timer = Some(round);
                }
                // The harness fires timers when the input says so: a later expiry changes nothing.
                Output::ExtendTimeout { .. } => {}
                Output::Decided {
                    value,
                    round,
                    commits,
                } => {
                    let n = &mut self.nodes[node as usize];
                    assert!(n.decided.is_none(), "node {node} decided twice");
                    use dvnode::consensus::qbft::ValuePolicy;
                    assert!(
                        self.policy.is_valid(&value),
                        "node {node} decided a value its predicate refuses: {value:?}"
                    );
                    verify_decision(
                        &config(node),
                        instance(),
                        round,
                        value.value_hash(),
                        &commits,
                    )
                    .unwrap_or_else(|e| panic!("node {node} decided without proof: {e}"));
                    n.decided = Some(value);
                }
                Output::Dropped { reason, .. } => {
                    let _ = reason.to_string();
                }
            }
        }
        let decided: Vec<&V> = self
            .nodes
            .iter()
            .filter_map(|n| n.decided.as_ref())
            .collect();
        assert!(
            decided.windows(2).all(|w| w[0] == w[1]),
            "honest nodes decided different values: {decided:?}"
        );
    }

    fn deliver(&mut self, to: u64, msg: QbftMsg) {
        let out = self.nodes[to as usize].inst.handle_message(msg);
        self.apply(to, out);
    }

    /// Node 3's message, built from `r`.
    fn byzantine(&mut self, r: &mut Reader) -> QbftMsg {
        let kind = r.byte() % 7; // 1..=5 are kinds; 0 and 6 are unknown codes
        let round = u64::from(r.byte() % 8);
        let hash = |c: u8| -> Hash {
            match c % 4 {
                0 => ZERO_HASH,
                1 | 2 => candidates()[usize::from(c / 4) % candidates().len()].value_hash(),
                _ => [c; 32],
            }
        };
        let value_hash = hash(r.byte());
        let prepared_round = u64::from(r.byte() % 4);
        let prepared_value_hash = hash(r.byte());
        let flags = r.byte();
        let mut id = instance();
        if flags & 1 != 0 {
            id.slot += 1;
        }
        let body = MsgBody {
            kind,
            instance: id,
            source: if flags & 2 != 0 {
                u64::from(r.byte() % 5)
            } else {
                BYZ
            },
            round,
            value_hash,
            prepared_round,
            prepared_value_hash,
        };
        let signature = self.byz.sign(&body.signing_bytes());
        let mut justification = Vec::new();
        for _ in 0..r.byte() % 8 {
            let i = usize::from(r.byte());
            if let Some(m) = self.seen.get(i % self.seen.len().max(1)) {
                justification.push(m.clone());
            }
        }
        let values = match r.byte() % 4 {
            0 => vec![],
            1 => vec![candidates()[usize::from(r.byte()) % candidates().len()].to_bytes()],
            2 => {
                let len = usize::from(r.byte());
                vec![r.bytes(len).to_vec()]
            }
            _ => vec![candidates()[0].to_bytes(), candidates()[1].to_bytes()],
        };
        let msg = QbftMsg {
            msg: SignedMsg { body, signature },
            justification,
            values,
        };
        self.remember(&msg);
        msg
    }
}

/// One execution. Opcodes (byte % 8), arguments in brackets:
/// 0 start node [node, input]; 1 deliver [index]; 2 deliver a copy, keep the original
/// [index]; 3 drop [index]; 4 fire the node's round timer [node]; 5 byzantine message [to,
/// fields…] (see `Cluster::byzantine`); 6 relay a seen honest message with another
/// justification [to, message, count, messages…]; 7 raw wire bytes [to, len, bytes].
pub fn run(data: &[u8]) {
    let mut c = Cluster::new();
    let mut r = Reader(data);
    let mut steps = 0;
    while !r.is_empty() && steps < 4096 {
        steps += 1;
        match r.byte() % 8 {
            0 => {
                let node = u64::from(r.byte()) % HONEST;
                let input = candidates()[usize::from(r.byte()) % candidates().len()].clone();
                let out = c.nodes[node as usize].inst.start(input);
                c.apply(node, out);
            }
            op @ 1..=3 => {
                if c.pending.is_empty() {
                    continue;
                }
                let i = usize::from(r.byte()) % c.pending.len();
                let (to, msg) = match op {
                    2 => c.pending[i].clone(),
                    _ => c.pending.remove(i),
                };
                if op != 3 {
                    c.deliver(to, msg);
                }
            }
            4 => {
                let node = u64::from(r.byte()) % HONEST;
                if let Some(round) = c.nodes[node as usize].timer.take() {
                    let out = c.nodes[node as usize].inst.handle_timeout(round);
                    c.apply(node, out);
                }
            }
            5 => {
                let to = u64::from(r.byte()) % HONEST;
                let msg = c.byzantine(&mut r);
                c.deliver(to, msg);
            }
            6 => {
                let to = u64::from(r.byte()) % HONEST;
                if c.seen.is_empty() {
                    continue;
                }
                let m = c.seen[usize::from(r.byte()) % c.seen.len()].clone();
                let justification = (0..r.byte() % 8)
                    .map(|_| c.seen[usize::from(r.byte()) % c.seen.len()].clone())
                    .collect();
                let values =
                    vec![candidates()[usize::from(r.byte()) % candidates().len()].to_bytes()];
                c.deliver(
                    to,
                    QbftMsg {
                        msg: m,
                        justification,
                        values,
                    },
                );
            }
            _ => {
                let to = u64::from(r.byte()) % HONEST;
                let len = usize::from(u16::from_le_bytes([r.byte(), r.byte()]));
                if let Ok(msg) = QbftMsg::decode(r.bytes(len)) {
                    c.deliver(to, msg);
                }
            }
        }
    }
}

/// Op sequences: all nodes start with the same or different inputs and the network delivers
/// everything in order (a decision in round 1), with a round change, and with node 3 active.
pub fn seeds() -> Vec<Vec<u8>> {
    let deliver_all: Vec<u8> = [1u8, 0].repeat(40);
    let start = |inputs: [u8; 3]| -> Vec<u8> {
        inputs
            .iter()
            .enumerate()
            .flat_map(|(n, &i)| [0, n as u8, i])
            .collect()
    };
    let mut out = vec![
        [start([0, 0, 0]), deliver_all.clone()].concat(),
        [start([0, 1, 2]), deliver_all.clone()].concat(),
        [start([4, 0, 5]), deliver_all.clone()].concat(),
        [
            start([0, 1, 1]),
            vec![4, 0, 4, 1, 4, 2],
            deliver_all.clone(),
            vec![4, 0, 4, 1, 4, 2],
            deliver_all.clone(),
        ]
        .concat(),
        [
            start([1, 1, 0]),
            vec![5, 0, 1, 1, 5, 0, 0, 0, 0, 1, 1],
            vec![5, 1, 2, 1, 5, 0, 0, 0, 0, 1, 1],
            deliver_all.clone(),
            vec![6, 2, 0, 2, 1, 2, 0],
            vec![5, 2, 5, 1, 5, 0, 0, 0, 3, 1, 2, 3, 0],
            deliver_all,
        ]
        .concat(),
    ];
    for p in seeds_payloads().into_iter().take(3) {
        let mut s = start([0, 0, 0]);
        s.extend([7, 1]);
        s.extend((p.len() as u16).to_le_bytes());
        s.extend(p);
        out.push(s);
    }
    out
}

/// Encoded QBFT messages of a round-1 decision of the fixture cluster (for the p2p seeds too).
pub fn seeds_payloads() -> Vec<Vec<u8>> {
    let mut c = Cluster::new();
    for n in 0..HONEST {
        let out = c.nodes[n as usize].inst.start(candidates()[0].clone());
        c.apply(n, out);
    }
    let mut msgs = Vec::new();
    while let Some((to, msg)) = (!c.pending.is_empty()).then(|| c.pending.remove(0)) {
        msgs.push(msg.encode());
        c.deliver(to, msg);
    }
    msgs
}
