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
    /// Partial signature exchange (`/dvlab/parsig/2.0.0`).
    Parsig,
    /// Distributed key generation ceremony (`/dvlab/dkg/1.0.0`, `dvnode dkg`).
    Dkg,
}

impl Protocol {
    /// Every protocol, in wire-id order.
    pub const ALL: [Protocol; 3] = [Protocol::Qbft, Protocol::Parsig, Protocol::Dkg];

    /// The libp2p protocol name negotiated by multistream-select.
    pub const fn stream_protocol(self) -> &'static str {
        match self {
            Protocol::Qbft => "/dvlab/qbft/1.0.0",
            Protocol::Parsig => "/dvlab/parsig/2.0.0",
            Protocol::Dkg => "/dvlab/dkg/1.0.0",
        }
    }

    /// The one-byte id used in the envelope and in the signed message.
    pub const fn id(self) -> u8 {
        match self {
            Protocol::Qbft => 1,
            Protocol::Parsig => 2,
            Protocol::Dkg => 3,
        }
    }

    /// The protocol with wire id `id`, if any.
    pub const fn from_id(id: u8) -> Option<Protocol> {
        match id {
            1 => Some(Protocol::Qbft),
            2 => Some(Protocol::Parsig),
            3 => Some(Protocol::Dkg),
            _ => None,
        }
    }

    /// Whether envelopes on this protocol carry the sender's signature. QBFT payloads sign each
    /// message body themselves (see the module docs), so their envelopes are not signed again.
    pub const fn signs_envelope(self) -> bool {
        match self {
            Protocol::Qbft => false,
            Protocol::Parsig | Protocol::Dkg => true,
        }
    }

    /// Short name used as metric label and in logs (`qbft`, `parsig`, `dkg`).
    pub const fn label(self) -> &'static str {
        match self {
            Protocol::Qbft => "qbft",
            Protocol::Parsig => "parsig",
            Protocol::Dkg => "dkg",
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
    /// Builds an envelope for `payload` sent by node `sender` on `protocol`, signed when the
    /// protocol [signs envelopes](Protocol::signs_envelope).
    pub fn signed(key: &Keypair, protocol: Protocol, sender: u64, payload: Vec<u8>) -> Envelope {
        let signature = if protocol.signs_envelope() {
            sign_digest(key, &envelope_digest(protocol.id(), &payload))
        } else {
            Vec::new()
        };
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
        let signature_ok = if protocol.signs_envelope() {
            verify_digest(
                peer_key,
                &envelope_digest(env.protocol, &env.payload),
                &env.signature,
            )
        } else {
            env.signature.is_empty()
        };
        if !signature_ok {
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

/// Signs like `Keypair::sign` (DER ECDSA over `sha256(digest)` for secp256k1) but with
/// libsecp256k1, which is several times faster than libp2p's pure-Rust implementation; the
/// signatures are byte-for-byte the same (RFC 6979 nonces, low-S).
fn sign_digest(key: &Keypair, digest: &[u8; 32]) -> Vec<u8> {
    if let Ok(kp) = key.clone().try_into_secp256k1() {
        if let Ok(sk) = secp256k1::SecretKey::from_slice(&kp.secret().to_bytes()) {
            let msg = secp256k1::Message::from_digest(Sha256::digest(digest).into());
            return secp256k1::SECP256K1
                .sign_ecdsa(&msg, &sk)
                .serialize_der()
                .to_vec();
        }
    }
    // Signing only fails for RSA keys, which this build does not support; an empty signature
    // would simply fail verification.
    key.sign(digest).unwrap_or_default()
}

/// Verifies like `PublicKey::verify` (DER ECDSA over `sha256(digest)`, low-S only), with
/// libsecp256k1 for secp256k1 keys.
fn verify_digest(key: &PublicKey, digest: &[u8; 32], sig: &[u8]) -> bool {
    match key.clone().try_into_secp256k1() {
        Ok(pk) => {
            let (Ok(pk), Ok(sig)) = (
                secp256k1::PublicKey::from_slice(&pk.to_bytes()),
                secp256k1::ecdsa::Signature::from_der(sig),
            ) else {
                return false;
            };
            let msg = secp256k1::Message::from_digest(Sha256::digest(digest).into());
            secp256k1::SECP256K1.verify_ecdsa(&msg, &sig, &pk).is_ok()
        }
        Err(_) => key.verify(digest, sig),
    }
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
    verify_digest(key, &domain_digest(domain, msg), sig)
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
        let env = Envelope::signed(&key, Protocol::Parsig, 2, b"hello".to_vec());
        let bytes = env.encode();
        // Fixed part: version, protocol, sender (8), two 4-byte offsets.
        assert_eq!(bytes[0], ENVELOPE_VERSION);
        assert_eq!(bytes[1], Protocol::Parsig.id());
        assert_eq!(&bytes[2..10], &2u64.to_le_bytes());
        assert_eq!(&bytes[10..14], &18u32.to_le_bytes());
        assert_eq!(&bytes[18..23], b"hello");

        let got = Envelope::decode_verified(&bytes, Protocol::Parsig, 2, &pk).unwrap();
        assert_eq!(got, env);

        assert_eq!(
            Envelope::decode_verified(&bytes, Protocol::Qbft, 2, &pk)
                .unwrap_err()
                .reason(),
            "protocol_mismatch"
        );
        assert_eq!(
            Envelope::decode_verified(&bytes, Protocol::Parsig, 1, &pk)
                .unwrap_err()
                .reason(),
            "sender_mismatch"
        );
        let other = Keypair::generate_secp256k1().public();
        assert_eq!(
            Envelope::decode_verified(&bytes, Protocol::Parsig, 2, &other)
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
        let mut tampered = env.clone();
        tampered.payload = b"hellO".to_vec();
        assert_eq!(
            Envelope::decode_verified(&tampered.encode(), Protocol::Parsig, 2, &pk)
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
        let mut v2 = env;
        v2.version = 2;
        assert_eq!(
            Envelope::decode_verified(&v2.encode(), Protocol::Parsig, 2, &pk)
                .unwrap_err()
                .reason(),
            "bad_version"
        );
        // A cut signature is still well-formed SSZ: it fails as a signature.
        assert_eq!(
            Envelope::decode_verified(&bytes[..bytes.len() - 3], Protocol::Parsig, 2, &pk)
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
        for garbage in [&b""[..], &[0xff; 7], &bytes[..15], &[0xff; 37]] {
            let err = Envelope::decode_verified(garbage, Protocol::Parsig, 2, &pk).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{garbage:?}");
        }

        // QBFT envelopes are unsigned (their bodies are signed) and must stay so.
        let q = Envelope::signed(&key, Protocol::Qbft, 2, b"vote".to_vec());
        assert!(q.signature.is_empty());
        assert_eq!(
            Envelope::decode_verified(&q.encode(), Protocol::Qbft, 2, &other).unwrap(),
            q
        );
        let mut q_signed = q;
        q_signed.signature = vec![1, 2, 3];
        assert_eq!(
            Envelope::decode_verified(&q_signed.encode(), Protocol::Qbft, 2, &pk)
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
    }

    #[test]
    fn libsecp256k1_signatures_match_libp2p() {
        let key = Keypair::generate_secp256k1();
        let digest = [7u8; 32];
        let fast = sign_digest(&key, &digest);
        assert_eq!(fast, key.sign(&digest).unwrap(), "same RFC 6979 signature");
        assert!(key.public().verify(&digest, &fast));
        assert!(verify_digest(&key.public(), &digest, &fast));
        assert!(!verify_digest(&key.public(), &[8u8; 32], &fast));
        let ed = Keypair::generate_ed25519();
        assert!(verify_digest(
            &ed.public(),
            &digest,
            &sign_digest(&ed, &digest)
        ));
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
        assert_eq!(Protocol::from_id(4), None);
    }
}
