//! Validator deposits: the `DepositMessage` a validator key signs, and the `deposit-data.json`
//! format written by the staking deposit CLI (and read by the Staking Launchpad).
//!
//! Per the consensus specs a deposit is signed over
//! `compute_signing_root(DepositMessage(pubkey, withdrawal_credentials, amount), domain)` with
//! `domain = compute_domain(DOMAIN_DEPOSIT, GENESIS_FORK_VERSION, Root())` (a zero genesis
//! validators root: deposits are valid before genesis and across forks); the deposit contract
//! then takes `hash_tree_root(DepositData)`.

use anyhow::{anyhow, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use ssz_derive::{Decode, Encode};
use tree_hash_derive::TreeHash;

use crate::{
    eth::{
        signing::{compute_signing_root, deposit_domain},
        types::{BlsPubkey, BlsSignature, DepositData, Gwei, Root, Version},
    },
    keys::tbls,
};

/// The deposit message: what a validator key signs to deposit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode, TreeHash)]
pub struct DepositMessage {
    /// Validator public key.
    pub pubkey: BlsPubkey,
    /// Withdrawal credentials.
    pub withdrawal_credentials: Root,
    /// Amount in Gwei.
    pub amount: Gwei,
}

impl DepositMessage {
    /// The root the validator key signs for this deposit on a chain with `genesis_fork_version`.
    pub fn signing_root(&self, genesis_fork_version: Version) -> Root {
        compute_signing_root(self, deposit_domain(genesis_fork_version))
    }

    /// The deposit data carrying `signature`.
    pub fn with_signature(&self, signature: BlsSignature) -> DepositData {
        DepositData {
            pubkey: self.pubkey,
            withdrawal_credentials: self.withdrawal_credentials,
            amount: self.amount,
            signature,
        }
    }
}

/// The version written in `deposit_cli_version`: the Launchpad refuses files without one or from
/// CLIs older than it knows; 2.7.0 is what Charon's DKG writes for the same reason.
pub const DEPOSIT_CLI_VERSION: &str = "2.7.0";

/// The network name the deposit CLI writes for a known genesis fork version.
pub fn network_name(genesis_fork_version: Version) -> Option<&'static str> {
    match genesis_fork_version.0 {
        [0x00, 0x00, 0x00, 0x00] => Some("mainnet"),
        [0x00, 0x00, 0x10, 0x20] => Some("goerli"),
        [0x90, 0x00, 0x00, 0x69] => Some("sepolia"),
        [0x01, 0x01, 0x70, 0x00] => Some("holesky"),
        [0x10, 0x00, 0x09, 0x10] => Some("hoodi"),
        _ => None,
    }
}

/// One entry of `deposit-data.json` in the staking deposit CLI's format: byte strings as hex
/// without `0x`, the amount as a JSON number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositDataJson {
    /// Validator public key.
    pub pubkey: String,
    /// Withdrawal credentials.
    pub withdrawal_credentials: String,
    /// Amount in Gwei.
    pub amount: u64,
    /// The deposit signature by the validator key.
    pub signature: String,
    /// `hash_tree_root(DepositMessage)`.
    pub deposit_message_root: String,
    /// `hash_tree_root(DepositData)`: what the deposit contract is called with.
    pub deposit_data_root: String,
    /// Genesis fork version of the network.
    pub fork_version: String,
    /// Network name, for known networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_name: Option<String>,
    /// See [`DEPOSIT_CLI_VERSION`].
    #[serde(default)]
    pub deposit_cli_version: String,
}

impl DepositDataJson {
    /// The JSON entry of `data` for a chain with `genesis_fork_version`.
    pub fn new(data: &DepositData, genesis_fork_version: Version) -> Self {
        let message = DepositMessage {
            pubkey: data.pubkey,
            withdrawal_credentials: data.withdrawal_credentials,
            amount: data.amount,
        };
        DepositDataJson {
            pubkey: hex::encode(data.pubkey.0),
            withdrawal_credentials: hex::encode(data.withdrawal_credentials.0),
            amount: data.amount,
            signature: hex::encode(data.signature.0),
            deposit_message_root: hex::encode(Root::of(&message).0),
            deposit_data_root: hex::encode(Root::of(data).0),
            fork_version: hex::encode(genesis_fork_version.0),
            network_name: network_name(genesis_fork_version).map(str::to_string),
            deposit_cli_version: DEPOSIT_CLI_VERSION.to_string(),
        }
    }

    /// Parses the entry and checks everything a depositor relies on: both roots match the
    /// fields, and the signature is a valid deposit signature of `pubkey` for the entry's fork
    /// version. Returns the deposit data.
    pub fn verify(&self) -> Result<DepositData> {
        fn bytes<const N: usize>(s: &str, field: &str) -> Result<[u8; N]> {
            let v = hex::decode(s.strip_prefix("0x").unwrap_or(s))
                .with_context(|| format!("{field}: not hex"))?;
            let len = v.len();
            v.try_into()
                .map_err(|_| anyhow!("{field}: expected {N} bytes, found {len}"))
        }
        let fork_version = Version(bytes(&self.fork_version, "fork_version")?);
        let data = DepositData {
            pubkey: BlsPubkey(bytes(&self.pubkey, "pubkey")?),
            withdrawal_credentials: Root(bytes(
                &self.withdrawal_credentials,
                "withdrawal_credentials",
            )?),
            amount: self.amount,
            signature: BlsSignature(bytes(&self.signature, "signature")?),
        };
        let message = DepositMessage {
            pubkey: data.pubkey,
            withdrawal_credentials: data.withdrawal_credentials,
            amount: data.amount,
        };
        ensure!(
            Root(bytes(&self.deposit_message_root, "deposit_message_root")?) == Root::of(&message),
            "deposit_message_root does not match pubkey, withdrawal_credentials and amount"
        );
        ensure!(
            Root(bytes(&self.deposit_data_root, "deposit_data_root")?) == Root::of(&data),
            "deposit_data_root does not match the deposit data"
        );
        let pk = tbls::PublicKey::key_validate(&data.pubkey.0)
            .map_err(|e| anyhow!("pubkey: not a valid BLS public key ({e:?})"))?;
        let sig = tbls::Signature::from_bytes(&data.signature.0)
            .map_err(|e| anyhow!("signature: not a valid BLS signature ({e:?})"))?;
        ensure!(
            tbls::verify(&pk, message.signing_root(fork_version).as_bytes(), &sig),
            "signature: not a valid deposit signature of pubkey {} for fork version {}",
            data.pubkey,
            fork_version
        );
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::interop::interop_secret;

    #[test]
    fn deposit_signed_by_the_key_verifies_and_tampering_is_caught() {
        let sk = interop_secret(0);
        let fork = Version([0, 0, 0, 1]);
        let message = DepositMessage {
            pubkey: BlsPubkey(sk.sk_to_pk().to_bytes()),
            withdrawal_credentials: Root([0x11; 32]),
            amount: 32_000_000_000,
        };
        let sig = tbls::sign(&sk, message.signing_root(fork).as_bytes());
        let data = message.with_signature(BlsSignature(sig.to_bytes()));
        let json = DepositDataJson::new(&data, fork);
        assert_eq!(json.verify().unwrap(), data);
        assert!(!json.pubkey.starts_with("0x"));
        assert_eq!(json.fork_version, "00000001");
        assert_eq!(json.network_name, None);
        let text = serde_json::to_string(&json).unwrap();
        assert!(text.contains(r#""amount":32000000000"#), "{text}");

        let mut other_fork = json.clone();
        other_fork.fork_version = "00000000".into();
        assert!(format!("{:#}", other_fork.verify().unwrap_err()).contains("signature"));
        let mut more = json.clone();
        more.amount += 1;
        assert!(format!("{:#}", more.verify().unwrap_err()).contains("deposit_message_root"));
        let mut root = json;
        root.deposit_data_root = hex::encode([0u8; 32]);
        assert!(format!("{:#}", root.verify().unwrap_err()).contains("deposit_data_root"));
        assert_eq!(network_name(Version([0; 4])), Some("mainnet"));
    }
}
