//! QBFT wire types and their SSZ encoding.
//!
//! A message on the wire is a [`QbftMsg`]:
//!
//! ```text
//! QbftMsg { msg: SignedMsg, justification: Vec<SignedMsg>, values: Vec<Vec<u8>> }
//! SignedMsg { body: MsgBody, signature: Vec<u8> }
//! MsgBody { kind, instance {slot, duty}, source, round, value_hash,
//!           prepared_round, prepared_value_hash }
//! ```
//!
//! Only the [`MsgBody`] is signed (see [`MsgBody::signing_bytes`]). Justifications are lists of
//! the original signed messages, each verifiable on its own, so they need no outer signature: a
//! relay that swaps them can only make a message unjustified, never forge one. Consensus runs on
//! 32-byte value hashes; the full values referenced by a message (the proposal of a PRE-PREPARE
//! or DECIDED, the prepared value of a ROUND-CHANGE) travel in `values`, encoded by the caller's
//! [`Value`](super::qbft::Value) codec, and the receiver checks that they hash to the claimed
//! hashes.

use ssz::{Decode, Encode};
use ssz_derive::{Decode, Encode};
use thiserror::Error;

/// A 32-byte value hash (the caller's [`Value::value_hash`](super::qbft::Value::value_hash)).
pub type Hash = [u8; 32];

/// The all-zero hash, used for "no value" fields.
pub const ZERO_HASH: Hash = [0u8; 32];

/// Domain separation prefix of every signed QBFT message body.
pub const SIGNING_DOMAIN: &[u8] = b"dvnode/qbft/v1\0";

/// Largest encoded [`QbftMsg`] that [`QbftMsg::decode`] accepts (8 MiB: a full beacon block
/// plus its justification fits comfortably).
pub const MAX_WIRE_BYTES: usize = 8 * 1024 * 1024;

/// Most justification messages a [`QbftMsg`] may carry on the wire. Valid justifications hold at
/// most `2n` messages (a quorum of ROUND-CHANGEs plus a quorum of PREPAREs); the engine applies
/// the tighter per-cluster bound.
pub const MAX_JUSTIFICATIONS: usize = 512;

/// Most full values a [`QbftMsg`] may carry (valid messages carry at most one).
pub const MAX_VALUES: usize = 2;

/// Longest signature accepted (secp256k1 DER signatures are at most 72 bytes, compact 64/65).
pub const MAX_SIGNATURE_BYTES: usize = 128;

/// The QBFT message types. The numeric codes are part of the wire format and never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MsgKind {
    /// Leader proposal for a round (carries the full value).
    PrePrepare = 1,
    /// Vote for the round's proposal.
    Prepare = 2,
    /// Vote to decide the round's prepared value.
    Commit = 3,
    /// Request to move to a round, carrying the sender's prepared certificate if any.
    RoundChange = 4,
    /// Proof of decision: the value plus a quorum of COMMITs.
    Decided = 5,
}

impl MsgKind {
    /// Parses a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::PrePrepare,
            2 => Self::Prepare,
            3 => Self::Commit,
            4 => Self::RoundChange,
            5 => Self::Decided,
            _ => return None,
        })
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for MsgKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::PrePrepare => "PRE-PREPARE",
            Self::Prepare => "PREPARE",
            Self::Commit => "COMMIT",
            Self::RoundChange => "ROUND-CHANGE",
            Self::Decided => "DECIDED",
        })
    }
}

/// Identifies one consensus instance: one duty (slot + duty type) of the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct InstanceId {
    /// Beacon chain slot of the duty.
    pub slot: u64,
    /// Duty type code (caller-defined, e.g. attester = 1, proposer = 2).
    pub duty: u64,
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "slot {} duty {}", self.slot, self.duty)
    }
}

/// The signed part of a QBFT message.
///
/// Field use by kind (unused fields must be zero, otherwise the message is ill-formed):
///
/// | kind         | `value_hash`   | `prepared_round` / `prepared_value_hash` |
/// |--------------|----------------|------------------------------------------|
/// | PRE-PREPARE  | proposal       | 0 / zero                                 |
/// | PREPARE      | proposal       | 0 / zero                                 |
/// | COMMIT       | proposal       | 0 / zero                                 |
/// | ROUND-CHANGE | zero           | sender's prepared round/value or 0/zero  |
/// | DECIDED      | decided value  | 0 / zero                                 |
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct MsgBody {
    /// [`MsgKind`] wire code.
    pub kind: u8,
    /// Consensus instance.
    pub instance: InstanceId,
    /// Sender's node index (0-based position in the cluster's operator list).
    pub source: u64,
    /// Round (starts at 1).
    pub round: u64,
    /// Value hash (see table).
    pub value_hash: Hash,
    /// Prepared round of a ROUND-CHANGE (0 = not prepared).
    pub prepared_round: u64,
    /// Prepared value hash of a ROUND-CHANGE.
    pub prepared_value_hash: Hash,
}

impl MsgBody {
    /// The message kind, if the code is known.
    pub fn msg_kind(&self) -> Option<MsgKind> {
        MsgKind::from_code(self.kind)
    }

    /// The bytes that are signed: [`SIGNING_DOMAIN`] followed by the SSZ encoding of the body.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIGNING_DOMAIN.len() + self.ssz_bytes_len());
        out.extend_from_slice(SIGNING_DOMAIN);
        self.ssz_append(&mut out);
        out
    }
}

/// A message body with its sender's signature over [`MsgBody::signing_bytes`].
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SignedMsg {
    /// The signed body.
    pub body: MsgBody,
    /// Signature by node `body.source`.
    pub signature: Vec<u8>,
}

/// A complete QBFT message as sent between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct QbftMsg {
    /// The message itself.
    pub msg: SignedMsg,
    /// Original signed messages justifying it: ROUND-CHANGEs (+ PREPAREs) for a PRE-PREPARE of
    /// round > 1, PREPAREs for a prepared ROUND-CHANGE, COMMITs for a DECIDED.
    pub justification: Vec<SignedMsg>,
    /// Encoded full values referenced by hash in `msg` (see [`MsgBody`]).
    pub values: Vec<Vec<u8>>,
}

/// Why bytes could not be decoded into a [`QbftMsg`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The input exceeds the size limit.
    #[error("qbft message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Input length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The SSZ decoding failed.
    #[error("qbft message is not valid SSZ: {0}")]
    Ssz(String),
    /// Unknown message kind code.
    #[error("qbft message has unknown kind code {0}")]
    UnknownKind(u8),
    /// Too many justification messages.
    #[error("qbft message carries {count} justification messages, more than the limit of {max}")]
    TooManyJustifications {
        /// Count found.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// A justification message has an unknown kind code.
    #[error("qbft justification message {index} has unknown kind code {code}")]
    UnknownJustificationKind {
        /// Position in the justification list.
        index: usize,
        /// The code.
        code: u8,
    },
    /// Too many full values.
    #[error("qbft message carries {count} values, more than the limit of {max}")]
    TooManyValues {
        /// Count found.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// A signature is longer than any supported scheme produces.
    #[error("qbft message signature of {len} bytes exceeds {max} bytes")]
    SignatureTooLong {
        /// Signature length.
        len: usize,
        /// Limit.
        max: usize,
    },
}

impl QbftMsg {
    /// The SSZ encoding of the message.
    pub fn encode(&self) -> Vec<u8> {
        self.as_ssz_bytes()
    }

    /// Decodes a message, enforcing [`MAX_WIRE_BYTES`] and the structural limits.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        Self::decode_with_limit(bytes, MAX_WIRE_BYTES)
    }

    /// Decodes a message of at most `max_bytes`, enforcing the structural limits
    /// ([`MAX_JUSTIFICATIONS`], [`MAX_VALUES`], [`MAX_SIGNATURE_BYTES`], known kinds).
    pub fn decode_with_limit(bytes: &[u8], max_bytes: usize) -> Result<Self, WireError> {
        if bytes.len() > max_bytes {
            return Err(WireError::TooLarge {
                len: bytes.len(),
                max: max_bytes,
            });
        }
        let msg = <Self as Decode>::from_ssz_bytes(bytes)
            .map_err(|e| WireError::Ssz(format!("{e:?}")))?;
        if msg.msg.body.msg_kind().is_none() {
            return Err(WireError::UnknownKind(msg.msg.body.kind));
        }
        if msg.justification.len() > MAX_JUSTIFICATIONS {
            return Err(WireError::TooManyJustifications {
                count: msg.justification.len(),
                max: MAX_JUSTIFICATIONS,
            });
        }
        if msg.values.len() > MAX_VALUES {
            return Err(WireError::TooManyValues {
                count: msg.values.len(),
                max: MAX_VALUES,
            });
        }
        for (index, j) in msg.justification.iter().enumerate() {
            if j.body.msg_kind().is_none() {
                return Err(WireError::UnknownJustificationKind {
                    index,
                    code: j.body.kind,
                });
            }
        }
        for sig in std::iter::once(&msg.msg.signature)
            .chain(msg.justification.iter().map(|j| &j.signature))
        {
            if sig.len() > MAX_SIGNATURE_BYTES {
                return Err(WireError::SignatureTooLong {
                    len: sig.len(),
                    max: MAX_SIGNATURE_BYTES,
                });
            }
        }
        Ok(msg)
    }

    /// Kind of the outer message (`None` for an unknown code, which `decode` never returns).
    pub fn kind(&self) -> Option<MsgKind> {
        self.msg.body.msg_kind()
    }

    /// Sender of the outer message.
    pub fn source(&self) -> u64 {
        self.msg.body.source
    }

    /// Round of the outer message.
    pub fn round(&self) -> u64 {
        self.msg.body.round
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> QbftMsg {
        let body = |kind: MsgKind, source| MsgBody {
            kind: kind.code(),
            instance: InstanceId { slot: 7, duty: 1 },
            source,
            round: 2,
            value_hash: [source as u8; 32],
            prepared_round: 0,
            prepared_value_hash: ZERO_HASH,
        };
        QbftMsg {
            msg: SignedMsg {
                body: body(MsgKind::PrePrepare, 1),
                signature: vec![1, 2, 3],
            },
            justification: vec![
                SignedMsg {
                    body: body(MsgKind::RoundChange, 2),
                    signature: vec![4; 64],
                },
                SignedMsg {
                    body: body(MsgKind::Prepare, 3),
                    signature: vec![],
                },
            ],
            values: vec![b"value".to_vec()],
        }
    }

    #[test]
    fn roundtrip() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(QbftMsg::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn rejects_oversized_input() {
        let bytes = sample().encode();
        let err = QbftMsg::decode_with_limit(&bytes, bytes.len() - 1).unwrap_err();
        assert!(matches!(err, WireError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn rejects_unknown_kinds_and_limits() {
        let mut m = sample();
        m.msg.body.kind = 9;
        assert_eq!(
            QbftMsg::decode(&m.encode()).unwrap_err(),
            WireError::UnknownKind(9)
        );

        let mut m = sample();
        m.justification[1].body.kind = 0;
        assert_eq!(
            QbftMsg::decode(&m.encode()).unwrap_err(),
            WireError::UnknownJustificationKind { index: 1, code: 0 }
        );

        let mut m = sample();
        m.values = vec![vec![]; 3];
        assert!(matches!(
            QbftMsg::decode(&m.encode()).unwrap_err(),
            WireError::TooManyValues { count: 3, .. }
        ));

        let mut m = sample();
        m.msg.signature = vec![0; MAX_SIGNATURE_BYTES + 1];
        assert!(matches!(
            QbftMsg::decode(&m.encode()).unwrap_err(),
            WireError::SignatureTooLong { .. }
        ));

        let mut m = sample();
        m.justification = vec![m.justification[0].clone(); MAX_JUSTIFICATIONS + 1];
        assert!(matches!(
            QbftMsg::decode(&m.encode()).unwrap_err(),
            WireError::TooManyJustifications { .. }
        ));
    }

    #[test]
    fn garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let good = sample().encode();
        for _ in 0..5000 {
            let mut bytes = good.clone();
            match rng.gen_range(0..3) {
                0 => bytes.truncate(rng.gen_range(0..good.len())),
                1 => {
                    for _ in 0..rng.gen_range(1..8) {
                        let i = rng.gen_range(0..bytes.len());
                        bytes[i] = rng.gen();
                    }
                }
                _ => bytes = (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect(),
            }
            let _ = QbftMsg::decode(&bytes);
        }
    }

    #[test]
    fn signing_bytes_are_domain_separated() {
        let b = sample().msg.body;
        let s = b.signing_bytes();
        assert!(s.starts_with(SIGNING_DOMAIN));
        assert_eq!(&s[SIGNING_DOMAIN.len()..], b.as_ssz_bytes().as_slice());
    }
}
