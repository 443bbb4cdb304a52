//! The signed message envelope carried by both request-response protocols, and the
//! `sign_bytes` / `verify_bytes` helpers built on the node's secp256k1 p2p key.
//!
//! See the [module documentation](super) for the wire encoding.

use std::fmt;

use libp2p::identity::{Keypair, PeerId, PublicKey};
use sha2::{Digest, Sha256};
use ssz::{Decode, Encode};
use ssz_derive::{Decode, Encode};

/// Envelope format version understood by this node.
pub const ENVELOPE_VERSION: u8 = 1;

/// Signature domain of envelope signatures.
pub const ENVELOPE_DOMAIN: &[u8] = b"dvlab-p2p-v1";

/// The application protocols spoken between cluster nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// QBFT consensus messages (`/dvlab/qbft/1.0.0`).
    Qbft,
    /// Partial signature exchange (`/dvlab/parsig/1.0.0`).
    Parsig,
}

impl Protocol {
    /// Both protocols, in wire-id order.
    pub const ALL: [Protocol; 2] = [Protocol::Qbft, Protocol::Parsig];

    /// The libp2p protocol name negotiated by multistream-select.
    pub const fn stream_protocol(self) -> &'static str {
        match self {
            Protocol::Qbft => "/dvlab/qbft/1.0.0",
            Protocol::Parsig => "/dvlab/parsig/1.0.0",
        }
    }

    /// The one-byte id used in the envelope and in the signed message.
    pub const fn id(self) -> u8 {
        match self {
            Protocol::Qbft => 1,
            Protocol::Parsig => 2,
        }
    }

    /// The protocol with wire id `id`, if any.
    pub const fn from_id(id: u8) -> Option<Protocol> {
        match id {
            1 => Some(Protocol::Qbft),
            2 => Some(Protocol::Parsig),
            _ => None,
        }
    }

    /// Short name used as metric label and in logs (`qbft`, `parsig`).
    pub const fn label(self) -> &'static str {
        match self {
            Protocol::Qbft => "qbft",
            Protocol::Parsig => "parsig",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The SSZ container sent as the body of every request frame.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Envelope {
    /// Envelope format version, [`ENVELOPE_VERSION`].
    pub version: u8,
    /// [`Protocol::id`] of the protocol the frame is sent on.
    pub protocol: u8,
    /// Sender's node index (position in the cluster peer list).
    pub sender: u64,
    /// Opaque application payload.
    pub payload: Vec<u8>,
    /// Sender's p2p-key signature, see [`Envelope::signed`].
    pub signature: Vec<u8>,
}

/// Why an envelope was rejected; [`EnvelopeError::reason`] is the metric label.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The bytes are not a valid SSZ envelope.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// Unknown envelope version.
    #[error("unsupported envelope version {0}, expected {ENVELOPE_VERSION}")]
    BadVersion(u8),
    /// The envelope names another protocol than the one it arrived on.
    #[error("envelope protocol id {found} does not match stream protocol {expected}")]
    ProtocolMismatch {
        /// Protocol of the stream.
        expected: Protocol,
        /// Protocol id in the envelope.
        found: u8,
    },
    /// The claimed sender index is not the index of the connection's peer.
    #[error("envelope claims sender {claimed} but the connection belongs to node {actual}")]
    SenderMismatch {
        /// Index in the envelope.
        claimed: u64,
        /// Index of the authenticated peer.
        actual: usize,
    },
    /// The signature does not verify under the sender's key.
    #[error("bad envelope signature")]
    BadSignature,
}

impl EnvelopeError {
    /// Metric label of this rejection reason.
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::Malformed(_) => "malformed",
            EnvelopeError::BadVersion(_) => "bad_version",
            EnvelopeError::ProtocolMismatch { .. } => "protocol_mismatch",
            EnvelopeError::SenderMismatch { .. } => "sender_mismatch",
            EnvelopeError::BadSignature => "bad_signature",
        }
    }
}

impl Envelope {
    /// Builds and signs an envelope for `payload` sent by node `sender` on `protocol`.
    pub fn signed(key: &Keypair, protocol: Protocol, sender: u64, payload: Vec<u8>) -> Envelope {
        let signature = sign_digest(key, &envelope_digest(protocol.id(), &payload));
        Envelope {
            version: ENVELOPE_VERSION,
            protocol: protocol.id(),
            sender,
            payload,
            signature,
        }
    }

    /// SSZ encoding of the envelope (the frame body).
    pub fn encode(&self) -> Vec<u8> {
        self.as_ssz_bytes()
    }

    /// Decodes a frame body received on `protocol` from the peer with node index `peer_index`
    /// and public key `peer_key`, checking version, protocol, sender index and signature in
    /// that order.
    pub fn decode_verified(
        bytes: &[u8],
        protocol: Protocol,
        peer_index: usize,
        peer_key: &PublicKey,
    ) -> Result<Envelope, EnvelopeError> {
        let env = Envelope::from_ssz_bytes(bytes)
            .map_err(|e| EnvelopeError::Malformed(format!("{e:?}")))?;
        if env.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::BadVersion(env.version));
        }
        if env.protocol != protocol.id() {
            return Err(EnvelopeError::ProtocolMismatch {
                expected: protocol,
                found: env.protocol,
            });
        }
        if usize::try_from(env.sender).ok() != Some(peer_index) {
            return Err(EnvelopeError::SenderMismatch {
                claimed: env.sender,
                actual: peer_index,
            });
        }
        if !peer_key.verify(&envelope_digest(env.protocol, &env.payload), &env.signature) {
            return Err(EnvelopeError::BadSignature);
        }
        Ok(env)
    }
}

fn envelope_digest(protocol_id: u8, payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ENVELOPE_DOMAIN);
    h.update([protocol_id]);
    h.update(payload);
    h.finalize().into()
}

fn domain_digest(domain: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(msg);
    h.finalize().into()
}

fn sign_digest(key: &Keypair, digest: &[u8; 32]) -> Vec<u8> {
    // Signing only fails for RSA keys, which this build does not support; an empty signature
    // would simply fail verification.
    key.sign(digest).unwrap_or_default()
}

/// Signs `sha256(domain || msg)` with the node's p2p key (for secp256k1: DER-encoded ECDSA,
/// which itself hashes the 32-byte digest with SHA-256 again).
///
/// `domain` must be a fixed constant per message type, and no domain may be a prefix of
/// another, so that signatures cannot be replayed across message types.
pub fn sign_bytes(key: &Keypair, domain: &[u8], msg: &[u8]) -> Vec<u8> {
    sign_digest(key, &domain_digest(domain, msg))
}

/// Verifies a [`sign_bytes`] signature against the key inlined in `peer`. Returns false for
/// peer ids that do not inline their public key (only hashed RSA ids do not).
pub fn verify_bytes(peer: &PeerId, domain: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    public_key(peer).is_some_and(|pk| verify_bytes_with_key(&pk, domain, msg, sig))
}

/// Verifies a [`sign_bytes`] signature against `key` (e.g. a key taken once from a peer id
/// with [`public_key`], which saves decoding it on every call).
pub fn verify_bytes_with_key(key: &PublicKey, domain: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    key.verify(&domain_digest(domain, msg), sig)
}

/// The public key inlined in a peer id (identity multihash), if it is inlined.
pub fn public_key(peer: &PeerId) -> Option<PublicKey> {
    let mh = peer.as_ref();
    // Multihash code 0x00 = identity: the digest is the protobuf-encoded public key.
    if mh.code() != 0 {
        return None;
    }
    let pk = PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    (pk.to_peer_id() == *peer).then_some(pk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_roundtrip_and_checks() {
        let key = Keypair::generate_secp256k1();
        let pk = key.public();
        let env = Envelope::signed(&key, Protocol::Qbft, 2, b"hello".to_vec());
        let bytes = env.encode();
        // Fixed part: version, protocol, sender (8), two 4-byte offsets.
        assert_eq!(bytes[0], ENVELOPE_VERSION);
        assert_eq!(bytes[1], Protocol::Qbft.id());
        assert_eq!(&bytes[2..10], &2u64.to_le_bytes());
        assert_eq!(&bytes[10..14], &18u32.to_le_bytes());
        assert_eq!(&bytes[18..23], b"hello");

        let got = Envelope::decode_verified(&bytes, Protocol::Qbft, 2, &pk).unwrap();
        assert_eq!(got, env);

        assert_eq!(
            Envelope::decode_verified(&bytes, Protocol::Parsig, 2, &pk)
                .unwrap_err()
                .reason(),
            "protocol_mismatch"
        );
        assert_eq!(
            Envelope::decode_verified(&bytes, Protocol::Qbft, 1, &pk)
                .unwrap_err()
                .reason(),
            "sender_mismatch"
        );
        let other = Keypair::generate_secp256k1().public();
        assert_eq!(
            Envelope::decode_verified(&bytes, Protocol::Qbft, 2, &other)
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
        let mut tampered = env.clone();
        tampered.payload = b"hellO".to_vec();
        assert_eq!(
            Envelope::decode_verified(&tampered.encode(), Protocol::Qbft, 2, &pk)
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
        let mut v2 = env;
        v2.version = 2;
        assert_eq!(
            Envelope::decode_verified(&v2.encode(), Protocol::Qbft, 2, &pk)
                .unwrap_err()
                .reason(),
            "bad_version"
        );
        // A cut signature is still well-formed SSZ: it fails as a signature.
        assert_eq!(
            Envelope::decode_verified(&bytes[..bytes.len() - 3], Protocol::Qbft, 2, &pk)
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
        for garbage in [&b""[..], &[0xff; 7], &bytes[..15], &[0xff; 37]] {
            let err = Envelope::decode_verified(garbage, Protocol::Qbft, 2, &pk).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{garbage:?}");
        }
    }

    #[test]
    fn sign_and_verify_bytes() {
        let key = Keypair::generate_secp256k1();
        let peer = key.public().to_peer_id();
        let sig = sign_bytes(&key, b"dvlab-qbft-v1", b"msg");
        assert!(verify_bytes(&peer, b"dvlab-qbft-v1", b"msg", &sig));
        assert!(!verify_bytes(&peer, b"dvlab-qbft-v2", b"msg", &sig));
        assert!(!verify_bytes(&peer, b"dvlab-qbft-v1", b"msG", &sig));
        assert!(!verify_bytes(&peer, b"dvlab-qbft-v1", b"msg", &sig[1..]));
        let other = Keypair::generate_secp256k1().public().to_peer_id();
        assert!(!verify_bytes(&other, b"dvlab-qbft-v1", b"msg", &sig));
        let pk = public_key(&peer).unwrap();
        assert!(verify_bytes_with_key(&pk, b"dvlab-qbft-v1", b"msg", &sig));
        assert!(!verify_bytes_with_key(&pk, b"dvlab-qbft-v1", b"msG", &sig));
        // ed25519 ids inline their key as well.
        let ed = Keypair::generate_ed25519();
        let sig = sign_bytes(&ed, b"d", b"m");
        assert!(verify_bytes(&ed.public().to_peer_id(), b"d", b"m", &sig));
    }

    #[test]
    fn protocol_ids_roundtrip() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_id(p.id()), Some(p));
        }
        assert_eq!(Protocol::from_id(0), None);
        assert_eq!(Protocol::from_id(3), None);
    }
}
