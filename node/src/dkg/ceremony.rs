//! The DKG ceremony of one node as a state machine without I/O: it consumes the messages of the
//! other nodes and returns the messages to send, until it holds the outcome (lock, own key shares,
//! deposit data) or aborts naming the operator at fault. [`super::run`] drives it over libp2p;
//! tests drive several in memory.
//!
//! See the [module documentation](super) for the protocol.

use std::collections::BTreeMap;

use libp2p::identity::{Keypair, PublicKey as P2pPublicKey};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use super::message::{
    commit_hash, commit_signing_bytes, share_signing_bytes, Complaint, Deal, Done, Echo, Finish,
    Hello, Message, Round, COMMIT_DOMAIN, SHARE_DOMAIN,
};
use crate::{
    cluster::{
        definition::{differing_fields, Definition},
        deposit::{DepositDataJson, DepositMessage},
        lock::{
            parse_hex, to_hex, verify_lock_signature, ClusterLock, DistributedValidator,
            LockContent, Operator, LOCK_VERSION,
        },
    },
    eth::types::{BlsPubkey, BlsSignature, Root, Version},
    keys::{
        tbls,
        vss::{self, Commitments, Dealing, Proof, G1_BYTES, PROOF_BYTES, SCALAR_BYTES},
    },
    p2p::{public_key, sign_bytes, verify_bytes_with_key},
};

/// Deliberate misbehaviour of this node, to test that the others abort naming it
/// (`dvnode dkg --test-fault`). Never used otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Deal the next operator a share of the first validator that does not match the
    /// commitments.
    BadShare,
    /// Send the next operator other (self-consistent) commitments than everybody else.
    Equivocate,
    /// After dealing, go silent: send and process nothing more (tests then kill the process).
    StallAfterDeal,
    /// Complain about the next operator's deal although it is valid.
    FalseComplaint,
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bad-share" => Ok(Fault::BadShare),
            "equivocate" => Ok(Fault::Equivocate),
            "stall-after-deal" => Ok(Fault::StallAfterDeal),
            "false-complaint" => Ok(Fault::FalseComplaint),
            _ => Err(format!(
                "unknown fault {s:?} (bad-share, equivocate, stall-after-deal, false-complaint)"
            )),
        }
    }
}

/// Why the ceremony was aborted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DkgError {
    /// The operators (node indices) found at fault, if any.
    pub culprits: Vec<usize>,
    /// What happened, naming the operators by index and peer id.
    pub message: String,
}

/// A message for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Recipient node index.
    pub to: usize,
    /// DKG payload ([`Message::encode`]).
    pub payload: Vec<u8>,
}

/// An aborted ceremony: the error and what to tell the other nodes (complaint, abort) before
/// leaving.
#[derive(Debug)]
pub struct Aborted {
    /// The error.
    pub error: DkgError,
    /// Messages to send before exiting.
    pub notify: Vec<Outgoing>,
}

/// What a successful ceremony produced on this node.
pub struct Outcome {
    /// The signed lock (identical on every node).
    pub lock: ClusterLock,
    /// This node's key share of every validator, in validator order.
    pub shares: Vec<tbls::SecretKey>,
    /// The deposit data of every validator (identical on every node).
    pub deposits: Vec<DepositDataJson>,
}

/// A verified deal from one dealer.
struct DealView {
    commit_hash: [u8; 32],
    commit_signature: Vec<u8>,
    /// Per validator.
    commitments: Vec<Commitments>,
    /// This node's share per validator (zeroized on drop).
    shares: Vec<tbls::SecretKey>,
}

/// How a deal failed verification.
enum DealFault {
    /// The dealer's signatures do not verify: the deal proves nothing to third parties.
    Unsigned(String),
    /// Signed by the dealer but invalid: proof of the dealer's fault.
    Invalid(String),
}

/// The joint keys, known after the echo round.
struct Keys {
    group: Vec<tbls::PublicKey>,
    /// `public_shares[j][i]`: node `i`'s public share of validator `j`.
    public_shares: Vec<Vec<tbls::PublicKey>>,
    shares: Vec<tbls::SecretKey>,
    deposit_messages: Vec<DepositMessage>,
    signing_roots: Vec<Root>,
    lock_content: LockContent,
    lock_hash: [u8; 32],
}

/// One node's ceremony. See the module docs.
pub struct Ceremony {
    def: Definition,
    own: usize,
    key: Keypair,
    peer_keys: Vec<P2pPublicKey>,
    fault: Option<Fault>,
    round: Round,
    /// Round messages received (own ones included), per round, per sender.
    received: Vec<BTreeMap<usize, Vec<u8>>>,
    /// Which received messages of each round passed their checks.
    checked: Vec<Vec<bool>>,
    /// Own message per round and recipient (deals hold shares: zeroized on drop).
    sent: Vec<Vec<Option<Zeroizing<Vec<u8>>>>>,
    /// Highest round received from each node.
    progress: Vec<Option<Round>>,
    deals: Vec<Option<DealView>>,
    keys: Option<Keys>,
    finishes: Vec<Option<(String, Vec<tbls::Signature>)>>,
    outcome: Option<Outcome>,
    /// Hash of the lock, once assembled.
    lock_hash: Option<[u8; 32]>,
    stalled: bool,
}

impl Ceremony {
    /// Starts the ceremony of node `own` (its p2p key is `key`) on a verified definition.
    /// Returns the ceremony and its hello messages.
    pub fn new(
        def: Definition,
        own: usize,
        key: Keypair,
        fault: Option<Fault>,
    ) -> Result<(Self, Vec<Outgoing>), DkgError> {
        let n = def.nodes();
        let fail = |message: String| DkgError {
            culprits: vec![],
            message,
        };
        if own >= n || key.public().to_peer_id() != def.peers[own] {
            return Err(fail(format!(
                "this node's p2p key {} is not operator {own} of the definition",
                key.public().to_peer_id()
            )));
        }
        let peer_keys = def
            .peers
            .iter()
            .map(|p| public_key(p).ok_or_else(|| fail(format!("peer id {p} inlines no key"))))
            .collect::<Result<Vec<_>, _>>()?;
        let rounds = Round::ALL.len();
        let mut c = Ceremony {
            own,
            key,
            peer_keys,
            fault,
            round: Round::Hello,
            received: vec![BTreeMap::new(); rounds],
            checked: vec![vec![false; n]; rounds],
            sent: (0..rounds)
                .map(|_| (0..n).map(|_| None).collect())
                .collect(),
            progress: vec![None; n],
            deals: (0..n).map(|_| None).collect(),
            keys: None,
            finishes: vec![None; n],
            outcome: None,
            lock_hash: None,
            stalled: false,
            def,
        };
        let hello = Message::Hello(Hello {
            definition_hash: c.def.hash,
            definition: c.def.canonical_bytes(),
        });
        let out = c.send_all(Round::Hello, &hello.encode());
        Ok((c, out))
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.def.nodes()
    }

    /// The round whose messages the node is collecting.
    pub fn round(&self) -> Round {
        self.round
    }

    /// The outcome, once the finish round completed.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Takes the outcome out (its secret shares are zeroized when dropped).
    pub fn take_outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    /// Whether the outcome exists and every node reported its lock written.
    pub fn all_done(&self) -> bool {
        self.round == Round::Done && self.missing().is_empty()
    }

    /// Nodes whose message of the current round has not arrived.
    pub fn missing(&self) -> Vec<usize> {
        (0..self.nodes())
            .filter(|i| !self.received[self.round as usize].contains_key(i))
            .collect()
    }

    /// `operator i (peer id)`.
    pub fn name(&self, i: usize) -> String {
        format!("operator {i} ({})", self.def.peers[i])
    }

    /// `operator i (peer id) [connected]` or `[not connected]`, after `connected` (the nodes with
    /// an open connection).
    fn name_with_link(&self, i: usize, connected: &[usize]) -> String {
        let state = if connected.contains(&i) {
            "connected"
        } else {
            "not connected"
        };
        format!("{} [{state}]", self.name(i))
    }

    /// The error for a round that timed out after `secs` seconds, naming the silent operators;
    /// `connected` lists the nodes with an open connection.
    pub fn timeout_error(&self, secs: u64, connected: &[usize]) -> DkgError {
        let missing = self.missing();
        let names: Vec<String> = missing
            .iter()
            .map(|&i| self.name_with_link(i, connected))
            .collect();
        DkgError {
            culprits: missing,
            message: format!(
                "timed out after {secs} s in round `{}` waiting for {}",
                self.round,
                names.join(", ")
            ),
        }
    }

    /// The error for a round given up before its timeout (`timeout`, `waited` so far) because
    /// operators it waits for left the ceremony (`gone`: node index and how it is known). They are
    /// the culprits; `connected` lists the nodes with an open connection (for the others still
    /// missing).
    pub fn gone_error(
        &self,
        gone: &[(usize, String)],
        waited: std::time::Duration,
        timeout: std::time::Duration,
        connected: &[usize],
    ) -> DkgError {
        let left: Vec<String> = gone
            .iter()
            .map(|(i, why)| format!("{} left the ceremony ({why})", self.name(*i)))
            .collect();
        let others: Vec<String> = self
            .missing()
            .into_iter()
            .filter(|i| *i != self.own && !gone.iter().any(|(g, _)| g == i))
            .map(|i| self.name_with_link(i, connected))
            .collect();
        let mut message = format!(
            "timed out early in round `{}`, after {:.1} s of {} s: {}",
            self.round,
            waited.as_secs_f64(),
            timeout.as_secs(),
            left.join("; ")
        );
        if !others.is_empty() {
            message.push_str(&format!("; also waiting for {}", others.join(", ")));
        }
        DkgError {
            culprits: gone.iter().map(|(i, _)| *i).collect(),
            message,
        }
    }

    /// This node's messages that the other nodes may still miss: for every node, those of the
    /// rounds it has not shown to have passed (a node's round-`r` message proves it received
    /// everybody's round `r − 1`).
    pub fn resend(&self) -> Vec<Outgoing> {
        if self.stalled {
            return Vec::new();
        }
        let mut out = Vec::new();
        for to in (0..self.nodes()).filter(|&p| p != self.own) {
            let from = self.progress[to].unwrap_or(Round::Hello) as usize;
            for round in &self.sent[from..] {
                if let Some(payload) = &round[to] {
                    out.push(Outgoing {
                        to,
                        payload: payload.to_vec(),
                    });
                }
            }
        }
        out
    }

    /// Handles a message from node `from`; returns what to send, or the abort.
    pub fn on_message(&mut self, from: usize, payload: &[u8]) -> Result<Vec<Outgoing>, Aborted> {
        if from >= self.nodes() || from == self.own || self.stalled {
            return Ok(Vec::new());
        }
        let msg = Message::decode(payload)
            .map_err(|e| self.abort(vec![from], format!("sent a malformed message: {e}")))?;
        let round = match &msg {
            Message::Abort(a) => {
                return Err(Aborted {
                    error: DkgError {
                        culprits: Vec::new(),
                        message: format!(
                            "{} aborted the ceremony: {}",
                            self.name(from),
                            String::from_utf8_lossy(&a.reason)
                        ),
                    },
                    notify: Vec::new(),
                })
            }
            Message::Complaint(c) => return Err(self.judge_complaint(from, c)),
            other => other.round().expect("round messages have a round"),
        };
        let slot = &mut self.received[round as usize];
        match slot.get(&from) {
            Some(prev) if prev == payload => return Ok(Vec::new()),
            Some(_) => {
                return Err(self.abort(
                    vec![from],
                    format!("sent two different messages for round `{round}`"),
                ))
            }
            None => {
                slot.insert(from, payload.to_vec());
            }
        }
        if self.progress[from].is_none_or(|r| r < round) {
            self.progress[from] = Some(round);
        }
        self.advance()
    }

    /// Checks the arrived messages of the current round and completes rounds while possible.
    fn advance(&mut self) -> Result<Vec<Outgoing>, Aborted> {
        let mut out = Vec::new();
        loop {
            if self.stalled {
                return Ok(out);
            }
            let r = self.round as usize;
            let pending: Vec<(usize, Vec<u8>)> = self.received[r]
                .iter()
                .filter(|(i, _)| !self.checked[r][**i])
                .map(|(i, m)| (*i, m.clone()))
                .collect();
            for (from, payload) in pending {
                let msg = Message::decode(&payload).map_err(|e| {
                    self.abort(vec![from], format!("sent a malformed message: {e}"))
                })?;
                match msg {
                    Message::Hello(m) => self.check_hello(from, &m)?,
                    Message::Deal(m) => self.check_deal(from, &payload, &m)?,
                    Message::Echo(m) => self.check_echo(from, &m)?,
                    Message::Finish(m) => self.check_finish(from, &m)?,
                    Message::Done(m) => self.check_done(from, &m)?,
                    Message::Complaint(_) | Message::Abort(_) => {
                        unreachable!("only round messages are stored")
                    }
                }
                self.checked[r][from] = true;
            }
            if self.checked[r].iter().any(|c| !c) {
                return Ok(out);
            }
            let Some(next) = self.round.next() else {
                return Ok(out);
            };
            let sends = match self.round {
                Round::Hello => self.deal(),
                Round::Deal => self.echo(),
                Round::Echo => self.finish()?,
                Round::Finish => self.complete()?,
                Round::Done => unreachable!("done is the last round"),
            };
            out.extend(sends);
            self.round = next;
            if self.round == Round::Deal && self.fault == Some(Fault::StallAfterDeal) {
                self.stalled = true;
            }
        }
    }

    /// Records `payload` as own message of `round` to every other node (and as received from
    /// itself) and returns the messages.
    fn send_all(&mut self, round: Round, payload: &[u8]) -> Vec<Outgoing> {
        let out: Vec<Outgoing> = (0..self.nodes())
            .filter(|&to| to != self.own)
            .map(|to| Outgoing {
                to,
                payload: payload.to_vec(),
            })
            .collect();
        for o in &out {
            self.sent[round as usize][o.to] = Some(Zeroizing::new(o.payload.clone()));
        }
        self.received[round as usize].insert(self.own, payload.to_vec());
        out
    }

    fn abort(&self, culprits: Vec<usize>, what: String) -> Aborted {
        let names: Vec<String> = culprits.iter().map(|&i| self.name(i)).collect();
        let message = if names.is_empty() {
            what
        } else {
            format!("{} {what}", names.join(" and "))
        };
        self.abort_with(DkgError { culprits, message }, Vec::new())
    }

    /// An abort that first sends `first` (e.g. a complaint) and then an abort message to every
    /// other node.
    fn abort_with(&self, error: DkgError, first: Vec<Outgoing>) -> Aborted {
        let mut notify = first;
        notify.extend(self.abort_messages(&error));
        Aborted { error, notify }
    }

    /// The abort message carrying `error` for every other node (for aborts decided outside the
    /// state machine: timeouts, failed writes).
    pub fn abort_messages(&self, error: &DkgError) -> Vec<Outgoing> {
        let abort = Message::abort(&error.message).encode();
        (0..self.nodes())
            .filter(|&to| to != self.own)
            .map(|to| Outgoing {
                to,
                payload: abort.clone(),
            })
            .collect()
    }

    fn check_hello(&self, from: usize, m: &Hello) -> Result<(), Aborted> {
        if m.definition_hash == self.def.hash {
            return Ok(());
        }
        let fields = differing_fields(&self.def.canonical_bytes(), &m.definition);
        Err(self.abort(
            vec![from],
            format!(
                "runs another cluster definition (definition_hash {}, ours {}); differing fields: {}",
                to_hex(&m.definition_hash),
                to_hex(&self.def.hash),
                fields.join("; ")
            ),
        ))
    }

    /// The context a dealer's proof of knowledge for validator `j` is bound to.
    fn pok_context(&self, dealer: usize, j: usize) -> Vec<u8> {
        [
            self.def.hash.as_slice(),
            &(dealer as u64).to_le_bytes(),
            &(j as u64).to_le_bytes(),
        ]
        .concat()
    }

    fn commit_len(&self) -> usize {
        self.def.num_validators * (self.def.threshold * G1_BYTES + PROOF_BYTES)
    }

    /// Round `hello` complete: deal every validator's polynomial.
    fn deal(&mut self) -> Vec<Outgoing> {
        let (n, t, k) = (self.nodes(), self.def.threshold, self.def.num_validators);
        let dealings: Vec<Dealing> = (0..k).map(|_| Dealing::random(t, n, &mut OsRng)).collect();
        let build_commit = |c: &Ceremony, dealings: &[Dealing]| -> Vec<u8> {
            let mut commit = Vec::with_capacity(c.commit_len());
            for (j, d) in dealings.iter().enumerate() {
                commit.extend_from_slice(&d.commitments().to_bytes());
                commit.extend_from_slice(&d.prove(&c.pok_context(c.own, j), &mut OsRng).to_bytes());
            }
            commit
        };
        let commit = build_commit(self, &dealings);
        let next = (self.own + 1) % n;
        // Equivocation (test fault): other, self-consistent commitments for the next node.
        let other_dealings: Option<Vec<Dealing>> = (self.fault == Some(Fault::Equivocate))
            .then(|| (0..k).map(|_| Dealing::random(t, n, &mut OsRng)).collect());
        let other_commit = other_dealings.as_ref().map(|d| build_commit(self, d));
        let mut out = Vec::with_capacity(n - 1);
        for to in 0..n {
            let (commit, dealings) = match (&other_commit, &other_dealings) {
                (Some(c), Some(d)) if to == next => (c, d.as_slice()),
                _ => (&commit, dealings.as_slice()),
            };
            let mut shares = Zeroizing::new(Vec::with_capacity(k * SCALAR_BYTES));
            for (j, d) in dealings.iter().enumerate() {
                let mut index = to as u64 + 1;
                if self.fault == Some(Fault::BadShare) && to == next && j == 0 {
                    index += 1;
                }
                let share = d.share(index).expect("dealings have non-zero shares");
                shares.extend_from_slice(&share.to_bytes());
            }
            let hash = commit_hash(commit);
            let deal = Deal {
                commit: commit.clone(),
                commit_signature: sign_bytes(
                    &self.key,
                    COMMIT_DOMAIN,
                    &commit_signing_bytes(&self.def.hash, self.own, &hash),
                ),
                share_signature: sign_bytes(
                    &self.key,
                    SHARE_DOMAIN,
                    &share_signing_bytes(&self.def.hash, self.own, to, &hash, &shares),
                ),
                shares: shares.to_vec(),
            };
            let payload = Zeroizing::new(Message::Deal(deal).encode());
            if to == self.own {
                self.received[Round::Deal as usize].insert(to, payload.to_vec());
            } else {
                out.push(Outgoing {
                    to,
                    payload: payload.to_vec(),
                });
                self.sent[Round::Deal as usize][to] = Some(payload);
            }
        }
        out
    }

    /// Verifies a deal from `dealer` to `recipient`.
    fn verify_deal(
        &self,
        dealer: usize,
        recipient: usize,
        deal: &Deal,
    ) -> Result<DealView, DealFault> {
        let (t, k) = (self.def.threshold, self.def.num_validators);
        let key = &self.peer_keys[dealer];
        let hash = commit_hash(&deal.commit);
        if !verify_bytes_with_key(
            key,
            COMMIT_DOMAIN,
            &commit_signing_bytes(&self.def.hash, dealer, &hash),
            &deal.commit_signature,
        ) {
            return Err(DealFault::Unsigned(
                "its signature over the commitments does not verify".into(),
            ));
        }
        if !verify_bytes_with_key(
            key,
            SHARE_DOMAIN,
            &share_signing_bytes(&self.def.hash, dealer, recipient, &hash, &deal.shares),
            &deal.share_signature,
        ) {
            return Err(DealFault::Unsigned(
                "its signature over the shares does not verify".into(),
            ));
        }
        if deal.commit.len() != self.commit_len() {
            return Err(DealFault::Invalid(format!(
                "commitments of {} bytes, expected {} ({k} validators, threshold {t})",
                deal.commit.len(),
                self.commit_len()
            )));
        }
        if deal.shares.len() != k * SCALAR_BYTES {
            return Err(DealFault::Invalid(format!(
                "{} bytes of shares, expected {}",
                deal.shares.len(),
                k * SCALAR_BYTES
            )));
        }
        let per = t * G1_BYTES + PROOF_BYTES;
        let mut commitments = Vec::with_capacity(k);
        for (j, chunk) in deal.commit.chunks_exact(per).enumerate() {
            let c = Commitments::from_bytes(&chunk[..t * G1_BYTES], t).map_err(|e| {
                DealFault::Invalid(format!("validator {j}: invalid commitments: {e}"))
            })?;
            let proof = Proof::from_bytes(&chunk[t * G1_BYTES..])
                .map_err(|e| DealFault::Invalid(format!("validator {j}: {e}")))?;
            if !proof.verify(&c.public_key(), &self.pok_context(dealer, j)) {
                return Err(DealFault::Invalid(format!(
                    "validator {j}: the proof of knowledge of its secret does not verify"
                )));
            }
            commitments.push(c);
        }
        let shares = deal
            .shares
            .chunks_exact(SCALAR_BYTES)
            .enumerate()
            .map(|(j, b)| {
                tbls::SecretKey::from_bytes(b).map_err(|_| {
                    DealFault::Invalid(format!("validator {j}: the share is not a valid scalar"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Err(j) = vss::verify_shares(&commitments, recipient as u64 + 1, &shares) {
            return Err(DealFault::Invalid(format!(
                "the share of validator {j} for {} does not match the commitments",
                self.name(recipient)
            )));
        }
        Ok(DealView {
            commit_hash: hash,
            commit_signature: deal.commit_signature.clone(),
            commitments,
            shares,
        })
    }

    fn check_deal(&mut self, from: usize, payload: &[u8], deal: &Deal) -> Result<(), Aborted> {
        let next = (self.own + 1) % self.nodes();
        match self.verify_deal(from, self.own, deal) {
            Ok(_) if self.fault == Some(Fault::FalseComplaint) && from == next => {
                let complaint = self.complaint(from, payload);
                Err(self.abort_with(
                    DkgError {
                        culprits: vec![from],
                        message: format!("test fault: false complaint about {}", self.name(from)),
                    },
                    complaint,
                ))
            }
            Ok(view) => {
                self.deals[from] = Some(view);
                Ok(())
            }
            Err(DealFault::Unsigned(reason)) => Err(self.abort(
                vec![from],
                format!(
                    "sent {} a deal that is not validly signed: {reason}",
                    self.name(self.own)
                ),
            )),
            Err(DealFault::Invalid(reason)) => {
                let complaint = self.complaint(from, payload);
                Err(self.abort_with(
                    DkgError {
                        culprits: vec![from],
                        message: format!(
                            "{} dealt {} an invalid deal: {reason}",
                            self.name(from),
                            self.name(self.own)
                        ),
                    },
                    complaint,
                ))
            }
        }
    }

    /// A complaint about `dealer` carrying its deal (the payload received from it) to every
    /// other node.
    fn complaint(&self, dealer: usize, payload: &[u8]) -> Vec<Outgoing> {
        let Ok(Message::Deal(deal)) = Message::decode(payload) else {
            return Vec::new();
        };
        let msg = Message::Complaint(Complaint {
            dealer: dealer as u64,
            deal: ssz::Encode::as_ssz_bytes(&deal),
        })
        .encode();
        (0..self.nodes())
            .filter(|&to| to != self.own)
            .map(|to| Outgoing {
                to,
                payload: msg.clone(),
            })
            .collect()
    }

    /// Judges `from`'s complaint: whoever it proves faulty is named.
    fn judge_complaint(&self, from: usize, c: &Complaint) -> Aborted {
        let n = self.nodes();
        let dealer = match usize::try_from(c.dealer) {
            Ok(d) if d < n && d != from => d,
            _ => {
                return self.abort(
                    vec![from],
                    format!(
                        "sent a complaint about an invalid dealer index {}",
                        c.dealer
                    ),
                )
            }
        };
        let deal = match <Deal as ssz::Decode>::from_ssz_bytes(&c.deal) {
            Ok(d) => d,
            Err(e) => {
                return self.abort(
                    vec![from],
                    format!("sent a complaint with a malformed deal: {e:?}"),
                )
            }
        };
        match self.verify_deal(dealer, from, &deal) {
            Err(DealFault::Invalid(reason)) => self.abort(
                vec![dealer],
                format!(
                    "dealt {} an invalid deal (proven by the dealer's signed deal in its \
                     complaint): {reason}",
                    self.name(from)
                ),
            ),
            Err(DealFault::Unsigned(reason)) => self.abort(
                vec![from, dealer],
                format!(
                    "disagree: the first complains that the second dealt it an invalid deal, \
                     but the deal does not prove it ({reason})"
                ),
            ),
            Ok(_) => self.abort(
                vec![from],
                format!(
                    "complained about a valid deal from {}: the complaint is false",
                    self.name(dealer)
                ),
            ),
        }
    }

    /// Round `deal` complete: echo the hash of every dealer's commitments.
    fn echo(&mut self) -> Vec<Outgoing> {
        let views: Vec<&DealView> = self.deals.iter().flatten().collect();
        let echo = Message::Echo(Echo {
            commit_hashes: views.iter().map(|v| v.commit_hash).collect(),
            commit_signatures: views.iter().map(|v| v.commit_signature.clone()).collect(),
        });
        self.send_all(Round::Echo, &echo.encode())
    }

    fn check_echo(&self, from: usize, m: &Echo) -> Result<(), Aborted> {
        let n = self.nodes();
        if m.commit_hashes.len() != n || m.commit_signatures.len() != n {
            return Err(self.abort(
                vec![from],
                format!(
                    "sent an echo of {} hashes and {} signatures for {n} dealers",
                    m.commit_hashes.len(),
                    m.commit_signatures.len()
                ),
            ));
        }
        for d in 0..n {
            let mine = self.deals[d]
                .as_ref()
                .expect("deal round complete")
                .commit_hash;
            let theirs = m.commit_hashes[d];
            if theirs == mine {
                continue;
            }
            let signed = verify_bytes_with_key(
                &self.peer_keys[d],
                COMMIT_DOMAIN,
                &commit_signing_bytes(&self.def.hash, d, &theirs),
                &m.commit_signatures[d],
            );
            return Err(if signed {
                self.abort(
                    vec![d],
                    format!(
                        "sent different commitments to {} and {} (both signed by it)",
                        self.name(self.own),
                        self.name(from)
                    ),
                )
            } else {
                self.abort(
                    vec![from],
                    format!(
                        "echoed commitments of {} that it did not sign",
                        self.name(d)
                    ),
                )
            });
        }
        Ok(())
    }

    /// Round `echo` complete (everybody holds the same commitments): compute the joint keys,
    /// sign the lock and the deposit messages.
    fn finish(&mut self) -> Result<Vec<Outgoing>, Aborted> {
        let (n, k) = (self.nodes(), self.def.num_validators);
        let internal = |c: &Ceremony, what: String| c.abort(Vec::new(), what);
        let views: Vec<DealView> = self
            .deals
            .iter_mut()
            .map(|d| d.take().expect("deal round complete"))
            .collect();
        let fork = Version(self.def.fork_version);
        let mut group = Vec::with_capacity(k);
        let mut public_shares = Vec::with_capacity(k);
        let mut shares = Vec::with_capacity(k);
        let mut deposit_messages = Vec::with_capacity(k);
        let mut signing_roots = Vec::with_capacity(k);
        let mut validators = Vec::with_capacity(k);
        for j in 0..k {
            let sum = Commitments::sum(views.iter().map(|v| &v.commitments[j]))
                .expect("n >= 1 commitments of one threshold");
            let pk = sum.public_key();
            let pk_bytes = pk.to_bytes();
            if tbls::PublicKey::key_validate(&pk_bytes).is_err() {
                return Err(internal(
                    self,
                    format!("validator {j}: the joint public key is invalid"),
                ));
            }
            let pubs: Vec<tbls::PublicKey> = (1..=n as u64).map(|i| sum.public_share(i)).collect();
            let Some(share) = vss::sum_shares(views.iter().map(|v| &v.shares[j])) else {
                return Err(internal(
                    self,
                    format!("validator {j}: this node's share is zero"),
                ));
            };
            if share.sk_to_pk() != pubs[self.own] {
                return Err(internal(
                    self,
                    format!("validator {j}: own share does not match its public share"),
                ));
            }
            let message = DepositMessage {
                pubkey: BlsPubkey(pk_bytes),
                withdrawal_credentials: Root(self.def.withdrawal_credentials(&pk_bytes)),
                amount: self.def.deposit_amount_gwei,
            };
            validators.push(DistributedValidator {
                distributed_public_key: to_hex(&pk_bytes),
                public_shares: pubs.iter().map(|p| to_hex(&p.to_bytes())).collect(),
            });
            signing_roots.push(message.signing_root(fork));
            deposit_messages.push(message);
            group.push(pk);
            public_shares.push(pubs);
            shares.push(share);
        }
        drop(views);
        let lock_content = LockContent {
            version: LOCK_VERSION.to_string(),
            name: self.def.file.name.clone(),
            uuid: self.def.file.uuid.clone(),
            threshold: self.def.threshold,
            fork_version: to_hex(&self.def.fork_version),
            genesis_validators_root: to_hex(&self.def.genesis_validators_root),
            operators: self
                .def
                .peers
                .iter()
                .map(|p| Operator {
                    peer_id: p.to_string(),
                    address: None,
                })
                .collect(),
            distributed_validators: validators,
            definition_hash: Some(to_hex(&self.def.hash)),
        };
        let lock_hash = lock_content.hash();
        let lock_signature = lock_content
            .sign(&self.key)
            .and_then(|s| parse_hex(&s, "lock signature"))
            .map_err(|e| internal(self, format!("signing the lock: {e:#}")))?;
        let mut deposit_partials = Vec::with_capacity(k * 96);
        for (share, root) in shares.iter().zip(&signing_roots) {
            deposit_partials.extend_from_slice(&tbls::sign(share, root.as_bytes()).to_bytes());
        }
        self.keys = Some(Keys {
            group,
            public_shares,
            shares,
            deposit_messages,
            signing_roots,
            lock_content,
            lock_hash,
        });
        let finish = Message::Finish(Finish {
            lock_hash,
            lock_signature,
            deposit_partials,
        });
        Ok(self.send_all(Round::Finish, &finish.encode()))
    }

    fn check_finish(&mut self, from: usize, m: &Finish) -> Result<(), Aborted> {
        let keys = self.keys.as_ref().expect("echo round complete");
        if m.lock_hash != keys.lock_hash {
            return Err(self.abort(
                vec![from],
                format!(
                    "computed another lock (lock_hash {}, ours {})",
                    to_hex(&m.lock_hash),
                    to_hex(&keys.lock_hash)
                ),
            ));
        }
        if !verify_lock_signature(&keys.lock_hash, &self.def.peers[from], &m.lock_signature) {
            return Err(self.abort(
                vec![from],
                "sent a lock signature that does not verify".into(),
            ));
        }
        let k = self.def.num_validators;
        if m.deposit_partials.len() != k * 96 {
            return Err(self.abort(
                vec![from],
                format!(
                    "sent {} bytes of deposit signatures, expected {}",
                    m.deposit_partials.len(),
                    k * 96
                ),
            ));
        }
        let partials = m
            .deposit_partials
            .chunks_exact(96)
            .enumerate()
            .map(|(j, b)| {
                tbls::Signature::from_bytes(b).map_err(|e| {
                    self.abort(
                        vec![from],
                        format!("sent a malformed deposit signature for validator {j} ({e:?})"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.finishes[from] = Some((to_hex(&m.lock_signature), partials));
        Ok(())
    }

    /// Round `finish` complete: combine and verify the deposit signatures, assemble and verify
    /// the lock.
    fn complete(&mut self) -> Result<Vec<Outgoing>, Aborted> {
        let keys = self.keys.as_ref().expect("echo round complete");
        let (n, t) = (self.nodes(), self.def.threshold);
        let fork = Version(self.def.fork_version);
        let finishes: Vec<&(String, Vec<tbls::Signature>)> = self
            .finishes
            .iter()
            .map(|f| f.as_ref().expect("finish round complete"))
            .collect();
        let mut deposits = Vec::with_capacity(keys.group.len());
        for (j, root) in keys.signing_roots.iter().enumerate() {
            let partials: Vec<(u64, tbls::Signature)> =
                (0..n).map(|i| (i as u64 + 1, finishes[i].1[j])).collect();
            let combined =
                tbls::verify_and_combine(&partials, &keys.public_shares[j], root.as_bytes(), t);
            let rejected = match &combined {
                Ok((_, rejected)) => rejected.clone(),
                Err(tbls::TblsError::NotEnoughValidPartials { rejected, .. }) => rejected.clone(),
                Err(e) => return Err(self.abort(Vec::new(), format!("validator {j}: {e}"))),
            };
            if !rejected.is_empty() {
                let culprits = rejected.iter().map(|&i| i as usize - 1).collect();
                return Err(self.abort(
                    culprits,
                    format!("sent an invalid partial deposit signature for validator {j}"),
                ));
            }
            let (sig, _) = combined.expect("no rejections");
            if !tbls::verify(&keys.group[j], root.as_bytes(), &sig) {
                return Err(self.abort(
                    Vec::new(),
                    format!("validator {j}: the combined deposit signature does not verify"),
                ));
            }
            // Any t public shares interpolate to the joint key (checked on the first t).
            let first: Vec<(u64, tbls::PublicKey)> = (0..t)
                .map(|i| (i as u64 + 1, keys.public_shares[j][i]))
                .collect();
            if tbls::combine_public_keys(&first, t).ok() != Some(keys.group[j]) {
                return Err(self.abort(
                    Vec::new(),
                    format!("validator {j}: the public shares do not interpolate to the joint key"),
                ));
            }
            let data = keys.deposit_messages[j].with_signature(BlsSignature(sig.to_bytes()));
            deposits.push(DepositDataJson::new(&data, fork));
        }
        let lock = ClusterLock::from_signatures(
            keys.lock_content.clone(),
            finishes.iter().map(|f| f.0.clone()).collect(),
        );
        if let Err(e) = lock.clone().verify() {
            return Err(self.abort(
                Vec::new(),
                format!("the assembled lock does not verify: {e:#}"),
            ));
        }
        let lock_hash = keys.lock_hash;
        let keys = self.keys.take().expect("present");
        self.lock_hash = Some(lock_hash);
        self.outcome = Some(Outcome {
            lock,
            shares: keys.shares,
            deposits,
        });
        let done = Message::Done(Done { lock_hash });
        Ok(self.send_all(Round::Done, &done.encode()))
    }

    fn check_done(&self, from: usize, m: &Done) -> Result<(), Aborted> {
        if self.lock_hash != Some(m.lock_hash) {
            return Err(self.abort(
                vec![from],
                format!(
                    "reports another lock written (lock_hash {})",
                    to_hex(&m.lock_hash)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;
    use crate::{
        cluster::definition::{ClusterDefinition, CreateDefinition, FULL_DEPOSIT_GWEI},
        p2p::key as p2p_key,
    };

    fn definition(n: usize, t: usize, k: usize) -> (Vec<Keypair>, Definition) {
        let keys: Vec<Keypair> = (0..n).map(|_| p2p_key::generate()).collect();
        let mut def = ClusterDefinition::create(&CreateDefinition {
            name: "unit".into(),
            operators: keys
                .iter()
                .map(|k| p2p_key::peer_id(k).to_string())
                .collect(),
            threshold: t,
            num_validators: k,
            fork_version: "0x00000001".into(),
            genesis_validators_root: to_hex(&[0; 32]),
            withdrawal_address: None,
            deposit_amount_gwei: FULL_DEPOSIT_GWEI,
        })
        .unwrap();
        for key in &keys {
            def.sign(key).unwrap();
        }
        (keys, def.verify().unwrap())
    }

    /// Tampers with a message in flight: `(from, to, payload) -> payload`.
    type Tamper = Box<dyn FnMut(usize, usize, Vec<u8>) -> Vec<u8>>;

    /// Runs the ceremonies of every node in memory, delivering queued messages in a random
    /// order (seeded); `drop_first` loses each node's first message to node 0 once and then
    /// relies on [`Ceremony::resend`]. Returns each node's result.
    fn run_all(
        def: &Definition,
        keys: &[Keypair],
        faults: &[(usize, Fault)],
        seed: u64,
        mut tamper: Option<Tamper>,
        drop_first: bool,
    ) -> Vec<Result<Outcome, DkgError>> {
        let n = keys.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut queue: VecDeque<(usize, Outgoing)> = VecDeque::new();
        let mut nodes = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let fault = faults.iter().find(|(f, _)| *f == i).map(|(_, f)| *f);
            let (c, out) = Ceremony::new(def.clone(), i, key.clone(), fault).unwrap();
            queue.extend(out.into_iter().map(|o| (i, o)));
            nodes.push(c);
        }
        let mut errors: Vec<Option<DkgError>> = vec![None; n];
        let mut dropped = vec![false; n];
        let mut idle_rounds = 0;
        let mut last_state = Vec::new();
        loop {
            if queue.is_empty() {
                // Nothing in flight: let every live node re-send what may be missing, until
                // re-sending changes nothing any more.
                let state: Vec<(Round, bool)> = nodes
                    .iter()
                    .zip(&errors)
                    .map(|(c, e)| (c.round(), e.is_some()))
                    .collect();
                if state == last_state {
                    idle_rounds += 1;
                } else {
                    idle_rounds = 0;
                    last_state = state;
                }
                if idle_rounds > 2 {
                    break;
                }
                for (i, c) in nodes.iter().enumerate() {
                    if errors[i].is_none() && !c.all_done() {
                        queue.extend(c.resend().into_iter().map(|o| (i, o)));
                    }
                }
                continue;
            }
            let pick = rng.gen_range(0..queue.len());
            let (from, msg) = queue.remove(pick).unwrap();
            if errors[msg.to].is_some() {
                continue;
            }
            if drop_first && msg.to == 0 && !dropped[from] {
                dropped[from] = true;
                continue;
            }
            let payload = match tamper.as_mut() {
                Some(t) => t(from, msg.to, msg.payload),
                None => msg.payload,
            };
            match nodes[msg.to].on_message(from, &payload) {
                Ok(out) => queue.extend(out.into_iter().map(|o| (msg.to, o))),
                Err(a) => {
                    queue.extend(a.notify.into_iter().map(|o| (msg.to, o)));
                    errors[msg.to] = Some(a.error);
                }
            }
        }
        nodes
            .iter_mut()
            .zip(errors)
            .map(|(c, e)| match e {
                Some(e) => Err(e),
                None => c.take_outcome().ok_or_else(|| c.timeout_error(0, &[])),
            })
            .collect()
    }

    fn outcomes(results: Vec<Result<Outcome, DkgError>>) -> Vec<Outcome> {
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.unwrap_or_else(|e| panic!("node {i}: {e}")))
            .collect()
    }

    #[test]
    fn ceremony_produces_one_joint_key_per_validator() {
        let (n, t, k) = (4, 3, 3);
        let (keys, def) = definition(n, t, k);
        let outs = outcomes(run_all(&def, &keys, &[], 1, None, false));
        let lock = &outs[0].lock;
        for o in &outs {
            assert_eq!(o.lock, *lock);
            assert_eq!(o.deposits, outs[0].deposits);
        }
        let cluster = lock.clone().verify().unwrap();
        assert_eq!(
            lock.content.definition_hash.as_deref(),
            Some(to_hex(&def.hash).as_str())
        );
        assert_eq!(cluster.validators.len(), k);
        let msg = b"any message";
        for (j, v) in cluster.validators.iter().enumerate() {
            for (i, o) in outs.iter().enumerate() {
                assert_eq!(o.shares[j].sk_to_pk(), v.public_shares[i]);
            }
            // Every t-subset of public shares interpolates to the joint key and every t-subset
            // of shares signs for it; t − 1 shares do not.
            for skip in 0..n {
                let subset: Vec<usize> = (0..n).filter(|&i| i != skip).collect();
                let pubs: Vec<(u64, tbls::PublicKey)> = subset
                    .iter()
                    .map(|&i| (i as u64 + 1, v.public_shares[i]))
                    .collect();
                assert_eq!(tbls::combine_public_keys(&pubs, t).unwrap(), v.pubkey);
                let partials: Vec<(u64, tbls::Signature)> = subset
                    .iter()
                    .map(|&i| (i as u64 + 1, tbls::sign(&outs[i].shares[j], msg)))
                    .collect();
                assert!(tbls::verify(
                    &v.pubkey,
                    msg,
                    &tbls::combine(&partials, t).unwrap()
                ));
                let short = tbls::combine(&partials[..t - 1], t - 1).unwrap();
                assert!(!tbls::verify(&v.pubkey, msg, &short));
            }
            let data = outs[0].deposits[j].verify().unwrap();
            assert_eq!(data.pubkey.0, v.pubkey.to_bytes());
            assert_eq!(data.withdrawal_credentials.0[0], 0);
            assert_eq!(data.amount, FULL_DEPOSIT_GWEI);
        }
        // Fresh randomness: a second ceremony gives other keys.
        let again = outcomes(run_all(&def, &keys, &[], 2, None, false));
        assert_ne!(
            again[0].lock.content.distributed_validators,
            lock.content.distributed_validators
        );
    }

    #[test]
    fn lost_messages_are_resent() {
        let (keys, def) = definition(4, 3, 2);
        let outs = outcomes(run_all(&def, &keys, &[], 3, None, true));
        assert!(outs.iter().all(|o| o.lock == outs[0].lock));
    }

    /// Every other node's result is an error blaming `culprit` (by index and peer id),
    /// including from nodes that learnt of it from another node's abort.
    fn assert_all_blame(results: &[Result<Outcome, DkgError>], def: &Definition, culprit: usize) {
        let peer = def.peers[culprit].to_string();
        for (i, r) in results.iter().enumerate().filter(|(i, _)| *i != culprit) {
            let Err(e) = r else {
                panic!("node {i} completed")
            };
            assert!(
                e.message.contains(&format!("operator {culprit} ({peer})")),
                "node {i}: {e}"
            );
        }
    }

    #[test]
    fn a_bad_share_is_proven_and_its_dealer_named() {
        let (keys, def) = definition(4, 3, 2);
        let results = run_all(&def, &keys, &[(1, Fault::BadShare)], 4, None, false);
        assert_all_blame(&results, &def, 1);
        // The victim (node 2) and those who judged its complaint blame the dealer directly.
        let direct = results
            .iter()
            .filter(|r| matches!(r, Err(e) if e.culprits == vec![1]))
            .count();
        assert!(
            direct >= 2,
            "{results:?}",
            results = results.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn equivocating_commitments_are_caught_by_the_echo() {
        let (keys, def) = definition(4, 3, 1);
        let results = run_all(&def, &keys, &[(3, Fault::Equivocate)], 5, None, false);
        assert_all_blame(&results, &def, 3);
        for r in &results {
            let e = r.as_ref().err().unwrap();
            assert!(
                e.message.contains("different commitments") || e.message.contains("aborted"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_false_complaint_names_the_complainer() {
        let (keys, def) = definition(4, 3, 1);
        let results = run_all(&def, &keys, &[(0, Fault::FalseComplaint)], 6, None, false);
        assert_all_blame(&results, &def, 0);
        let judged = results
            .iter()
            .filter(|r| matches!(r, Err(e) if e.message.contains("complaint is false")))
            .count();
        assert!(judged >= 2);
    }

    #[test]
    fn a_silent_node_is_named_on_timeout() {
        let (keys, def) = definition(4, 3, 1);
        let results = run_all(&def, &keys, &[(2, Fault::StallAfterDeal)], 7, None, false);
        for (i, r) in results.iter().enumerate().filter(|(i, _)| *i != 2) {
            let e = r
                .as_ref()
                .err()
                .unwrap_or_else(|| panic!("node {i} completed"));
            assert_eq!(e.culprits, vec![2], "node {i}: {e}");
            assert!(
                e.message.contains("round `echo`") && e.message.contains("operator 2"),
                "{e}"
            );
        }
    }

    #[test]
    fn tampered_partial_signatures_and_locks_are_named() {
        let (keys, def) = definition(4, 3, 2);
        // Node 1 sends node 0 a partial deposit signature of another message (well-formed,
        // invalid).
        let tamper: Tamper = Box::new(|from, to, payload| {
            let Ok(Message::Finish(mut f)) = Message::decode(&payload) else {
                return payload;
            };
            if from == 1 && to == 0 {
                let sk = tbls::random_secret(&mut StdRng::seed_from_u64(9));
                f.deposit_partials[96..192].copy_from_slice(&tbls::sign(&sk, b"x").to_bytes());
            }
            Message::Finish(f).encode()
        });
        let results = run_all(&def, &keys, &[], 8, Some(tamper), false);
        let e = results[0].as_ref().err().expect("node 0 aborts");
        assert_eq!(e.culprits, vec![1]);
        assert!(
            e.message
                .contains("invalid partial deposit signature for validator 1"),
            "{e}"
        );
        assert_all_blame(&results, &def, 1);

        let tamper: Tamper = Box::new(|from, to, payload| {
            let Ok(Message::Finish(mut f)) = Message::decode(&payload) else {
                return payload;
            };
            if from == 3 && to == 2 {
                f.lock_hash[0] ^= 1;
            }
            Message::Finish(f).encode()
        });
        let results = run_all(&def, &keys, &[], 9, Some(tamper), false);
        let e = results[2].as_ref().err().unwrap();
        assert!(
            e.message.contains("operator 3") && e.message.contains("another lock"),
            "{e}"
        );
    }

    #[test]
    fn garbage_unsigned_deals_and_other_definitions_are_named() {
        let (keys, def) = definition(4, 3, 1);
        let garbage: Tamper = Box::new(|from, to, payload| {
            if from == 2 && to == 1 {
                vec![0xff, 1, 2]
            } else {
                payload
            }
        });
        let results = run_all(&def, &keys, &[], 10, Some(garbage), false);
        let e = results[1].as_ref().err().unwrap();
        assert!(
            e.message.contains("operator 2") && e.message.contains("malformed"),
            "{e}"
        );
        assert_all_blame(&results, &def, 2);

        // A deal whose shares were altered in flight no longer carries the dealer's signature:
        // the recipient names the sender without a (worthless) complaint.
        let unsigned: Tamper = Box::new(|from, to, payload| {
            let Ok(Message::Deal(mut d)) = Message::decode(&payload) else {
                return payload;
            };
            if from == 3 && to == 0 {
                d.shares[5] ^= 1;
            }
            Message::Deal(d).encode()
        });
        let results = run_all(&def, &keys, &[], 11, Some(unsigned), false);
        let e = results[0].as_ref().err().unwrap();
        assert!(
            e.message.contains("operator 3") && e.message.contains("not validly signed"),
            "{e}"
        );

        // A node running another definition (here: other num_validators) is named with the
        // differing field.
        let (_, other) = {
            let mut file = def.file.clone();
            file.num_validators = 2;
            for o in &mut file.operators {
                o.signature = None;
            }
            file.definition_hash = to_hex(&file.content().hash());
            for k in &keys {
                file.sign(k).unwrap();
            }
            ((), file.verify().unwrap())
        };
        let (mut c0, _) = Ceremony::new(def.clone(), 0, keys[0].clone(), None).unwrap();
        let (_, hello3) = Ceremony::new(other, 3, keys[3].clone(), None).unwrap();
        let err = c0.on_message(3, &hello3[0].payload).unwrap_err().error;
        assert_eq!(err.culprits, vec![3]);
        assert!(
            err.message.contains("num_validators (ours 1, theirs 2)"),
            "{err}"
        );
    }
}
