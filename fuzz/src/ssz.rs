//! SSZ and JSON consensus containers: Altair blocks (signed and unsigned, minimal and mainnet
//! presets), attestations, and the consensus value of a duty ([`DutyValue::from_bytes`]: a
//! kind byte and the SSZ of the attester entries, the proposer's block or the sync root, as
//! peers send it inside QBFT messages); JSON blocks as a beacon node or a VC sends them.
//!
//! Input: `type byte` + bytes.
//!
//! Properties: SSZ that decodes is canonical (re-encodes to the same bytes, so no two
//! encodings of one value exist) and hashes; JSON that decodes re-encodes to JSON that decodes
//! to the same value, and its SSZ round-trips with the same `hash_tree_root`.

use dvnode::consensus::qbft::Value;
use dvnode::eth::types::{
    from_json_slice, from_json_value, Attestation, BeaconBlockAltair, Mainnet, Minimal, Root,
    SignedBeaconBlockAltair,
};
use dvnode::value::DutyValue;
use ssz::{Decode, Encode};

fn canonical<T: Decode + Encode + tree_hash::TreeHash>(bytes: &[u8]) {
    if let Ok(v) = T::from_ssz_bytes(bytes) {
        assert_eq!(v.as_ssz_bytes(), bytes, "non-canonical SSZ accepted");
        let _ = Root::of(&v);
    }
}

fn json_round_trip<T>(bytes: &[u8])
where
    T: serde::Serialize
        + serde::de::DeserializeOwned
        + Encode
        + Decode
        + tree_hash::TreeHash
        + PartialEq
        + std::fmt::Debug,
{
    let Ok(v) = from_json_slice::<T>(bytes) else {
        return;
    };
    let json = serde_json::to_value(&v).expect("decoded values serialise");
    let back: T = from_json_value(json).expect("serialised JSON decodes");
    assert_eq!(back, v, "JSON round trip changed the value");
    let ssz = v.as_ssz_bytes();
    let again = T::from_ssz_bytes(&ssz).expect("own SSZ decodes");
    assert_eq!(
        Root::of(&again),
        Root::of(&v),
        "SSZ round trip changed the root"
    );
}

/// One execution.
pub fn run(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 8 {
        0 => canonical::<SignedBeaconBlockAltair<Minimal>>(bytes),
        1 => canonical::<SignedBeaconBlockAltair<Mainnet>>(bytes),
        2 => canonical::<BeaconBlockAltair<Minimal>>(bytes),
        3 => canonical::<Attestation<Minimal>>(bytes),
        4 => {
            if let Ok(v) = DutyValue::<Minimal>::from_bytes(bytes) {
                assert_eq!(v.to_bytes(), bytes, "non-canonical duty value accepted");
                let _ = (v.value_hash(), v.pubkeys());
            }
        }
        5 => json_round_trip::<SignedBeaconBlockAltair<Minimal>>(bytes),
        6 => json_round_trip::<BeaconBlockAltair<Mainnet>>(bytes),
        _ => json_round_trip::<Attestation<Minimal>>(bytes),
    }
}

/// A real Lodestar block in every form, and the fixture's duty values.
pub fn seeds() -> Vec<Vec<u8>> {
    let signed = crate::fixture::lodestar_signed_block();
    let json = serde_json::to_vec(&signed).expect("JSON");
    let att = signed.message.body.attestations[0].clone();
    let mut out = vec![
        [&[0u8][..], &signed.as_ssz_bytes()].concat(),
        [&[2u8][..], &signed.message.as_ssz_bytes()].concat(),
        [&[3u8][..], &att.as_ssz_bytes()].concat(),
        [&[5u8][..], &json].concat(),
        [&[7u8][..], &serde_json::to_vec(&att).expect("JSON")].concat(),
    ];
    for v in crate::qbft::candidates() {
        out.push([&[4u8][..], &v.to_bytes()].concat());
    }
    out
}
