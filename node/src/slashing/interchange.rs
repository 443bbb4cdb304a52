//! EIP-3076 slashing protection interchange format, version 5.
//!
//! Numbers are decimal strings (plain JSON numbers are accepted on input too), byte strings are
//! `0x`-prefixed hex. Unknown fields are rejected so that a misspelt field cannot silently drop
//! history.

use serde::{Deserialize, Serialize};

use super::error::SlashingError;

/// A complete interchange document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interchange {
    /// Format version and chain binding.
    pub metadata: InterchangeMetadata,
    /// Signing history per validator. A pubkey may appear more than once.
    pub data: Vec<InterchangeData>,
}

/// The `metadata` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterchangeMetadata {
    /// Must be 5.
    #[serde(with = "quoted_u64")]
    pub interchange_format_version: u64,
    /// The genesis validators root of the chain the history belongs to.
    #[serde(with = "hex_bytes")]
    pub genesis_validators_root: [u8; 32],
}

/// The signing history of one validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterchangeData {
    /// The validator's 48-byte BLS public key.
    #[serde(with = "hex_bytes")]
    pub pubkey: [u8; 48],
    /// Signed block proposals.
    pub signed_blocks: Vec<SignedBlock>,
    /// Signed attestations.
    pub signed_attestations: Vec<SignedAttestation>,
}

/// A signed block proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBlock {
    /// The block's slot.
    #[serde(with = "quoted_u64")]
    pub slot: u64,
    /// The signing root, if known.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_hex_bytes"
    )]
    pub signing_root: Option<[u8; 32]>,
}

/// A signed attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAttestation {
    /// The attestation's source epoch.
    #[serde(with = "quoted_u64")]
    pub source_epoch: u64,
    /// The attestation's target epoch.
    #[serde(with = "quoted_u64")]
    pub target_epoch: u64,
    /// The signing root, if known.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_hex_bytes"
    )]
    pub signing_root: Option<[u8; 32]>,
}

impl Interchange {
    /// Parses an interchange JSON document. Errors name the line and column of the problem.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, SlashingError> {
        serde_json::from_slice(bytes).map_err(|e| SlashingError::InvalidInterchange(e.to_string()))
    }

    /// Serialises the document as pretty-printed JSON.
    pub fn to_json_pretty(&self) -> Result<Vec<u8>, SlashingError> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| SlashingError::InvalidInterchange(e.to_string()))
    }
}

/// Parses a (optionally `0x`-prefixed) hex string of exactly `N` bytes.
pub fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let bytes = hex::decode(digits).map_err(|e| format!("invalid hex string {s:?}: {e}"))?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| format!("expected {N} bytes of hex, got {len} in {s:?}"))
}

mod quoted_u64 {
    use serde::{de, Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an unsigned 64-bit integer as a decimal string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(E::custom(format!("invalid decimal integer {s:?}")));
                }
                s.parse()
                    .map_err(|e| E::custom(format!("invalid decimal integer {s:?}: {e}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
        }
        d.deserialize_any(V)
    }
}

mod hex_bytes {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{}", hex::encode(v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse_hex(&s).map_err(de::Error::custom)
    }
}

mod opt_hex_bytes {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::hex_bytes::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        match <Option<std::borrow::Cow<'de, str>>>::deserialize(d)? {
            Some(s) => super::parse_hex(&s).map(Some).map_err(de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_roundtrips() {
        let json = r#"{
          "metadata": {"interchange_format_version": "5",
                       "genesis_validators_root": "0x04700007fabc8282644aed6d1c7c9e21d38a03a0c4ba193f3afe428824b3a673"},
          "data": [{
            "pubkey": "0xb845089a1457f811bfc000588fbb4e713669be8ce060ea6be3c6ece09afc3794106c91ca73acda5e5457122d58723bed",
            "signed_blocks": [{"slot": "81952", "signing_root": "0x4ff6f743a43f3b4f95350831aeaf0a122a1a392922c45d804280284a69eb850b"},
                              {"slot": 81951}],
            "signed_attestations": [{"source_epoch": "2290", "target_epoch": "3007",
                                     "signing_root": "0x587d6a4f59a58fe24f406e0502413e77fe1babddee641fda30034ed37ecc884d"},
                                    {"source_epoch": "2290", "target_epoch": "3008"}]
          }]
        }"#;
        let ic = Interchange::from_json_slice(json.as_bytes()).unwrap();
        assert_eq!(ic.metadata.interchange_format_version, 5);
        assert_eq!(ic.data[0].pubkey[0], 0xb8);
        assert_eq!(
            ic.data[0].signed_blocks[1],
            SignedBlock {
                slot: 81951,
                signing_root: None
            }
        );
        assert_eq!(ic.data[0].signed_attestations[0].target_epoch, 3007);
        let out = ic.to_json_pretty().unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.contains("\"slot\": \"81951\""),
            "numbers must be decimal strings: {text}"
        );
        assert!(
            !text.contains("null"),
            "absent signing roots are omitted: {text}"
        );
        assert_eq!(Interchange::from_json_slice(&out).unwrap(), ic);
    }

    #[test]
    fn rejects_malformed_input_with_location() {
        let bad_pubkey = r#"{"metadata": {"interchange_format_version": "5",
            "genesis_validators_root": "0x0000000000000000000000000000000000000000000000000000000000000000"},
            "data": [{"pubkey": "0x1234", "signed_blocks": [], "signed_attestations": []}]}"#;
        let err = Interchange::from_json_slice(bad_pubkey.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected 48 bytes") && err.contains("line 3"),
            "{err}"
        );

        let bad_number = r#"{"metadata": {"interchange_format_version": "five",
            "genesis_validators_root": "0x00"}, "data": []}"#;
        let err = Interchange::from_json_slice(bad_number.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid decimal integer \"five\""), "{err}");

        let unknown_field = r#"{"metadata": {"interchange_format_version": "5",
            "genesis_validators_root": "0x0000000000000000000000000000000000000000000000000000000000000000"},
            "data": [{"pubkey": "0xb845089a1457f811bfc000588fbb4e713669be8ce060ea6be3c6ece09afc3794106c91ca73acda5e5457122d58723bed",
                      "signed_blocks": [], "signed_attestation": []}]}"#;
        let err = Interchange::from_json_slice(unknown_field.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("signed_attestation"), "{err}");

        assert!(Interchange::from_json_slice(b"{").is_err());
    }
}
