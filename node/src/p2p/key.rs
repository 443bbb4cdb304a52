//! The node's libp2p identity key (`p2p-key` file).
//!
//! Format: the 32-byte secp256k1 secret key as lowercase hex (64 characters, optional trailing
//! newline), the same convention Charon uses. The file is written with mode 0600.

use std::{fs, path::Path};

use anyhow::{bail, Context, Result};
use libp2p::identity::{secp256k1, Keypair, PeerId};

/// Generates a new random secp256k1 identity.
pub fn generate() -> Keypair {
    Keypair::generate_secp256k1()
}

/// Loads the identity key from `path`.
pub fn load(path: &Path) -> Result<Keypair> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading p2p key file {}", path.display()))?;
    let mut bytes = hex::decode(text.trim().trim_start_matches("0x"))
        .with_context(|| format!("p2p key file {} is not hex", path.display()))?;
    if bytes.len() != 32 {
        bail!(
            "p2p key file {}: expected a 32-byte secp256k1 secret key, found {} bytes",
            path.display(),
            bytes.len()
        );
    }
    let sk = secp256k1::SecretKey::try_from_bytes(&mut bytes).with_context(|| {
        format!(
            "p2p key file {}: invalid secp256k1 secret key",
            path.display()
        )
    })?;
    Ok(secp256k1::Keypair::from(sk).into())
}

/// Writes the identity key to `path` (mode 0600 on Unix).
pub fn save(key: &Keypair, path: &Path) -> Result<()> {
    let kp = key
        .clone()
        .try_into_secp256k1()
        .map_err(|_| anyhow::anyhow!("only secp256k1 p2p keys are supported"))?;
    let hex = hex::encode(kp.secret().to_bytes());
    crate::util::write_secret_file(path, format!("{hex}\n").as_bytes())
}

/// The libp2p peer id of a key.
pub fn peer_id(key: &Keypair) -> PeerId {
    key.public().to_peer_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p2p-key");
        let k = generate();
        save(&k, &p).unwrap();
        let k2 = load(&p).unwrap();
        assert_eq!(peer_id(&k), peer_id(&k2));
    }

    #[test]
    fn bad_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p2p-key");
        std::fs::write(&p, "zz").unwrap();
        let err = format!("{:#}", load(&p).unwrap_err());
        assert!(err.contains("not hex"), "{err}");
        std::fs::write(&p, "00").unwrap();
        let err = format!("{:#}", load(&p).unwrap_err());
        assert!(err.contains("expected a 32-byte"), "{err}");
    }
}
