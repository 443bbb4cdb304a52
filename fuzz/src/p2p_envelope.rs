//! p2p: a request frame as a peer sends it (big-endian length prefix, SSZ envelope) through the
//! frame codec and the envelope checks (version, protocol, sender index, secp256k1 signature),
//! as the network task does for every inbound stream of `/dvlab/qbft/1.0.0` and
//! `/dvlab/parsig/2.0.0`.
//!
//! Input: byte 0 picks the protocol (bit 0) and the mode (bit 1):
//! - raw: the rest is the frame as read from the stream. Whatever is accepted must be the
//!   canonical encoding of an envelope of this protocol from the connection's peer;
//! - tampered: `sender, payload NUL edits`: the peer signs an envelope of `payload` properly,
//!   then `edits` (pairs of a little-endian u16 position and an xor byte) change the frame.
//!   On the parsig protocol (signed envelopes) whatever is accepted must be what the peer
//!   signed: no edit may change the payload or the sender unnoticed.

use std::sync::OnceLock;

use dvnode::p2p::{Envelope, Frame, FrameCodec, Limits, Protocol};
use futures::io::Cursor;
use libp2p::identity::{secp256k1, Keypair, PublicKey};
use libp2p::request_response::Codec;

/// Node index of the peer on the other end of the connection.
const PEER_INDEX: usize = 2;

/// The peer's p2p key (fixed, so that crashes reproduce).
pub fn peer_key() -> &'static Keypair {
    static K: OnceLock<Keypair> = OnceLock::new();
    K.get_or_init(|| {
        let sk = secp256k1::SecretKey::try_from_bytes([0x17; 32]).expect("secp256k1 key");
        secp256k1::Keypair::from(sk).into()
    })
}

fn peer_public() -> &'static PublicKey {
    static K: OnceLock<PublicKey> = OnceLock::new();
    K.get_or_init(|| peer_key().public())
}

fn protocol(b: u8) -> Protocol {
    if b & 1 == 0 {
        Protocol::Qbft
    } else {
        Protocol::Parsig
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Reads `wire` like the network task: codec, then envelope checks.
fn receive(protocol: Protocol, wire: Vec<u8>) -> Option<Envelope> {
    let mut codec = FrameCodec::new(Limits::default().max_frame(protocol));
    let stream = libp2p::StreamProtocol::new(protocol.stream_protocol());
    let frame = futures::executor::block_on(codec.read_request(&stream, &mut Cursor::new(wire)))
        .expect("reading a request never fails: bad frames are Frame::Invalid");
    let Frame::Body(body) = frame else {
        return None;
    };
    match Envelope::decode_verified(&body, protocol, PEER_INDEX, peer_public()) {
        Ok(env) => {
            assert_eq!(
                env.encode(),
                body,
                "accepted a non-canonical envelope encoding"
            );
            assert_eq!(env.protocol, protocol.id());
            assert_eq!(env.sender, PEER_INDEX as u64);
            Some(env)
        }
        Err(e) => {
            let _ = (e.reason(), e.to_string());
            None
        }
    }
}

/// One execution.
pub fn run(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let protocol = protocol(head);
    if head & 2 == 0 {
        receive(protocol, rest.to_vec());
        return;
    }
    let Some((&sender, rest)) = rest.split_first() else {
        return;
    };
    let [payload, edits] = crate::parts(rest, 2)[..] else {
        unreachable!()
    };
    let env = Envelope::signed(peer_key(), protocol, u64::from(sender), payload.to_vec());
    let mut wire = frame(&env.encode());
    for e in edits.chunks_exact(3) {
        let pos = usize::from(u16::from_le_bytes([e[0], e[1]]));
        if let Some(b) = wire.get_mut(pos) {
            *b ^= e[2];
        }
    }
    if let Some(got) = receive(protocol, wire) {
        if protocol.signs_envelope() {
            assert_eq!(
                got.payload, payload,
                "a tampered payload passed the signature check"
            );
            // The sender field is not signed: it is checked against the connection's peer
            // (authenticated by its libp2p key), whose key the signature must verify under. A
            // peer that lies about its own index and has the lie flipped back to the truth is
            // still attributed to itself, never to another node.
            assert_eq!(
                got.sender, PEER_INDEX as u64,
                "an envelope was attributed to a node other than the connection's peer"
            );
        }
    }
}

/// Frames of real envelopes (QBFT and partial-signature payloads of the fixture cluster) in
/// both modes.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let payloads: Vec<Vec<u8>> = crate::qbft::seeds_payloads()
        .into_iter()
        .take(4)
        .chain(crate::parsig::seed_payloads().into_iter().skip(2).take(4))
        .collect();
    for (i, payload) in payloads.iter().enumerate() {
        let p = if i < 4 {
            Protocol::Qbft
        } else {
            Protocol::Parsig
        };
        let bit = u8::from(p == Protocol::Parsig);
        let env = Envelope::signed(peer_key(), p, PEER_INDEX as u64, payload.clone());
        let mut raw = vec![bit];
        raw.extend(frame(&env.encode()));
        out.push(raw);
        let mut tampered = vec![bit | 2, PEER_INDEX as u8];
        tampered.extend(crate::join(&[payload, &[20, 0, 1]]));
        out.push(tampered);
    }
    out
}
