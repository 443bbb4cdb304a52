//! Wire format of the DKG messages carried on `/dvlab/dkg/1.0.0`.
//!
//! A payload is one tag byte ([`Message::tag`]) followed by the SSZ encoding of the message's
//! container. The p2p envelope around it is signed by the sender and checked against the
//! authenticated connection; the messages whose content another node may have to re-check later
//! (a dealer's commitments and shares, relayed in complaints and echoes) carry the dealer's own
//! signature as well, see [`commit_signing_bytes`] and [`share_signing_bytes`].

use sha2::{Digest, Sha256};
use ssz::{Decode, Encode};
use ssz_derive::{Decode, Encode};

/// Domain of a dealer's signature over its commitments.
pub const COMMIT_DOMAIN: &[u8] = b"dvlab-dkg-commit-v1";
/// Domain of a dealer's signature over the shares it deals one node.
pub const SHARE_DOMAIN: &[u8] = b"dvlab-dkg-share-v1";

/// Longest abort reason sent (bytes of UTF-8).
pub const MAX_REASON: usize = 2048;

/// The rounds of the ceremony, in order. Every node sends one message per round to every other
/// node and moves on once it holds a valid one from every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Round {
    /// Everyone is connected and runs the same definition.
    Hello = 0,
    /// Commitments, proofs of knowledge and each node's shares.
    Deal = 1,
    /// Everyone echoes the hash of every dealer's commitments.
    Echo = 2,
    /// Lock signature and partial deposit signatures.
    Finish = 3,
    /// The lock was written.
    Done = 4,
}

impl Round {
    /// All rounds in order.
    pub const ALL: [Round; 5] = [
        Round::Hello,
        Round::Deal,
        Round::Echo,
        Round::Finish,
        Round::Done,
    ];

    /// The round after this one, if any.
    pub fn next(self) -> Option<Round> {
        Round::ALL.get(self as usize + 1).copied()
    }

    /// Lowercase name, used in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Round::Hello => "hello",
            Round::Deal => "deal",
            Round::Echo => "echo",
            Round::Finish => "finish",
            Round::Done => "done",
        }
    }
}

impl std::fmt::Display for Round {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Round [`Round::Hello`]: the definition the sender runs.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    /// Its definition hash.
    pub definition_hash: [u8; 32],
    /// Its canonical definition content (to name the differing fields on a mismatch).
    pub definition: Vec<u8>,
}

/// Round [`Round::Deal`]: one dealer's dealing for one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Deal {
    /// For every validator `j` in order: the `t` compressed commitments (48 bytes each) followed
    /// by the proof of knowledge of the constant term (80 bytes). The same for every recipient.
    pub commit: Vec<u8>,
    /// The dealer's signature over [`commit_signing_bytes`].
    pub commit_signature: Vec<u8>,
    /// The recipient's share of every validator, 32 bytes big-endian each.
    pub shares: Vec<u8>,
    /// The dealer's signature over [`share_signing_bytes`].
    pub share_signature: Vec<u8>,
}

/// Round [`Round::Echo`]: the hash of every dealer's commitments as the sender received them.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Echo {
    /// `sha256(commit)` of dealer `d`, in node order.
    pub commit_hashes: Vec<[u8; 32]>,
    /// Dealer `d`'s signature over its commitments (proof for an equivocation).
    pub commit_signatures: Vec<Vec<u8>>,
}

/// Round [`Round::Finish`]: the sender's lock signature and partial deposit signatures.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Finish {
    /// Hash of the lock content the sender computed.
    pub lock_hash: [u8; 32],
    /// The sender's signature over it (its `signatures` entry in the lock).
    pub lock_signature: Vec<u8>,
    /// The sender's partial signature of every validator's deposit message, 96 bytes each.
    pub deposit_partials: Vec<u8>,
}

/// Round [`Round::Done`]: the sender wrote its lock.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Done {
    /// The hash of the lock written.
    pub lock_hash: [u8; 32],
}

/// A recipient's proof that a dealer dealt it an invalid share or commitments: the dealer's
/// signed deal as received.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Complaint {
    /// The accused dealer's node index.
    pub dealer: u64,
    /// The SSZ bytes of the [`Deal`] received from it.
    pub deal: Vec<u8>,
}

/// The sender aborts the ceremony.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Abort {
    /// Why (UTF-8).
    pub reason: Vec<u8>,
}

/// Any DKG message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Deal`].
    Deal(Deal),
    /// See [`Echo`].
    Echo(Echo),
    /// See [`Finish`].
    Finish(Finish),
    /// See [`Done`].
    Done(Done),
    /// See [`Complaint`].
    Complaint(Complaint),
    /// See [`Abort`].
    Abort(Abort),
}

impl Message {
    /// The tag byte of the message kind.
    pub fn tag(&self) -> u8 {
        match self {
            Message::Hello(_) => 0,
            Message::Deal(_) => 1,
            Message::Echo(_) => 2,
            Message::Finish(_) => 3,
            Message::Done(_) => 4,
            Message::Complaint(_) => 5,
            Message::Abort(_) => 6,
        }
    }

    /// The round of a round message (`None` for complaints and aborts).
    pub fn round(&self) -> Option<Round> {
        match self {
            Message::Hello(_) => Some(Round::Hello),
            Message::Deal(_) => Some(Round::Deal),
            Message::Echo(_) => Some(Round::Echo),
            Message::Finish(_) => Some(Round::Finish),
            Message::Done(_) => Some(Round::Done),
            Message::Complaint(_) | Message::Abort(_) => None,
        }
    }

    /// Tag byte followed by the SSZ body.
    pub fn encode(&self) -> Vec<u8> {
        let body = match self {
            Message::Hello(m) => m.as_ssz_bytes(),
            Message::Deal(m) => m.as_ssz_bytes(),
            Message::Echo(m) => m.as_ssz_bytes(),
            Message::Finish(m) => m.as_ssz_bytes(),
            Message::Done(m) => m.as_ssz_bytes(),
            Message::Complaint(m) => m.as_ssz_bytes(),
            Message::Abort(m) => m.as_ssz_bytes(),
        };
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(self.tag());
        out.extend_from_slice(&body);
        out
    }

    /// Parses [`encode`](Self::encode) output.
    pub fn decode(bytes: &[u8]) -> Result<Message, String> {
        let (&tag, body) = bytes.split_first().ok_or("empty message")?;
        let err = |e: ssz::DecodeError| format!("malformed message with tag {tag}: {e:?}");
        Ok(match tag {
            0 => Message::Hello(Hello::from_ssz_bytes(body).map_err(err)?),
            1 => Message::Deal(Deal::from_ssz_bytes(body).map_err(err)?),
            2 => Message::Echo(Echo::from_ssz_bytes(body).map_err(err)?),
            3 => Message::Finish(Finish::from_ssz_bytes(body).map_err(err)?),
            4 => Message::Done(Done::from_ssz_bytes(body).map_err(err)?),
            5 => Message::Complaint(Complaint::from_ssz_bytes(body).map_err(err)?),
            6 => Message::Abort(Abort::from_ssz_bytes(body).map_err(err)?),
            _ => return Err(format!("unknown message tag {tag}")),
        })
    }

    /// An abort message with `reason` truncated to [`MAX_REASON`] bytes (at a character boundary).
    pub fn abort(reason: &str) -> Message {
        let mut end = reason.len().min(MAX_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Message::Abort(Abort {
            reason: reason.as_bytes()[..end].to_vec(),
        })
    }
}

/// What a dealer signs over its commitments:
/// `definition_hash ‖ dealer (u64 LE) ‖ sha256(commit)`.
pub fn commit_signing_bytes(
    definition_hash: &[u8; 32],
    dealer: usize,
    commit_hash: &[u8; 32],
) -> Vec<u8> {
    [
        definition_hash.as_slice(),
        &(dealer as u64).to_le_bytes(),
        commit_hash.as_slice(),
    ]
    .concat()
}

/// What a dealer signs over the shares it deals one recipient:
/// `definition_hash ‖ dealer ‖ recipient (u64 LE) ‖ sha256(commit) ‖ sha256(shares)`.
pub fn share_signing_bytes(
    definition_hash: &[u8; 32],
    dealer: usize,
    recipient: usize,
    commit_hash: &[u8; 32],
    shares: &[u8],
) -> Vec<u8> {
    [
        definition_hash.as_slice(),
        &(dealer as u64).to_le_bytes(),
        &(recipient as u64).to_le_bytes(),
        commit_hash.as_slice(),
        Sha256::digest(shares).as_slice(),
    ]
    .concat()
}

/// `sha256(commit)`.
pub fn commit_hash(commit: &[u8]) -> [u8; 32] {
    Sha256::digest(commit).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_every_kind_and_reject_garbage() {
        let msgs = [
            Message::Hello(Hello {
                definition_hash: [1; 32],
                definition: b"{}".to_vec(),
            }),
            Message::Deal(Deal {
                commit: vec![2; 10],
                commit_signature: vec![3; 70],
                shares: vec![4; 64],
                share_signature: vec![5; 71],
            }),
            Message::Echo(Echo {
                commit_hashes: vec![[6; 32], [7; 32]],
                commit_signatures: vec![vec![8; 3], vec![]],
            }),
            Message::Finish(Finish {
                lock_hash: [9; 32],
                lock_signature: vec![10; 70],
                deposit_partials: vec![11; 96],
            }),
            Message::Done(Done {
                lock_hash: [12; 32],
            }),
            Message::Complaint(Complaint {
                dealer: 3,
                deal: vec![13; 5],
            }),
            Message::abort("stop"),
        ];
        for (i, m) in msgs.iter().enumerate() {
            let bytes = m.encode();
            assert_eq!(bytes[0] as usize, i);
            assert_eq!(&Message::decode(&bytes).unwrap(), m);
            assert!(Message::decode(&bytes[..bytes.len().min(4)]).is_err());
        }
        assert!(Message::decode(&[]).is_err());
        assert!(Message::decode(&[7, 0]).unwrap_err().contains("unknown"));
        assert_eq!(msgs[0].round(), Some(Round::Hello));
        assert_eq!(msgs[6].round(), None);
        assert_eq!(Round::Finish.next(), Some(Round::Done));
        assert_eq!(Round::Done.next(), None);
        let long = "é".repeat(MAX_REASON);
        let Message::Abort(a) = Message::abort(&long) else {
            unreachable!()
        };
        assert!(a.reason.len() <= MAX_REASON);
        assert!(std::str::from_utf8(&a.reason).is_ok());
    }
}
