//! EIP-2335 BLS12-381 keystores (version 4): a secret key encrypted with AES-128-CTR under a key
//! derived from a password by scrypt or PBKDF2-HMAC-SHA256, with a SHA-256 checksum that detects a
//! wrong password.
//!
//! Keystores are validated completely when parsed (function names, parameter ranges, hex fields,
//! pubkey), so a malformed file fails at load time with an error naming the field, not later at
//! decryption. KDF parameters are bounded to keep a hostile file from exhausting memory or CPU.

use std::fmt;
use std::path::{Path, PathBuf};

use aes::cipher::{KeyIvInit, StreamCipher};
use rand::{rngs::OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::tbls::{PublicKey, SecretKey};

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// The keystore format version this module reads and writes.
pub const VERSION: u32 = 4;
/// Default scrypt cost parameter N (2^18), as in EIP-2335 and `staking-deposit-cli`.
pub const SCRYPT_DEFAULT_N: u32 = 262_144;
/// Default PBKDF2 iteration count (2^18).
pub const PBKDF2_DEFAULT_C: u32 = 262_144;
/// scrypt N of [`KdfChoice::Insecure`].
pub const INSECURE_SCRYPT_N: u32 = 16;
/// Length of the derived key; EIP-2335 uses bytes 0..16 as AES key and 16..32 for the checksum.
const DKLEN: u32 = 32;
/// Upper bound on scrypt memory (128·N·r bytes) accepted when reading a keystore: twice the
/// EIP-2335 default (N = 2^18, r = 8: 256 MiB). A keystore asking for gigabytes is refused
/// before anything is allocated.
pub const MAX_SCRYPT_MEMORY: u64 = 512 << 20;
/// Upper bound on scrypt work (N·r·p, in 128-byte block mixes) accepted when reading a
/// keystore: four times the EIP-2335 default, seconds of CPU. Without it a huge p (scrypt
/// allows up to 2^27 at r = 8) would keep a node loading its keys for years.
pub const MAX_SCRYPT_WORK: u64 = 1 << 23;
/// Upper bound on PBKDF2 iterations accepted when reading a keystore (64 times the default
/// c = 2^18, seconds of CPU).
pub const MAX_PBKDF2_C: u32 = 1 << 24;

/// Errors of keystore parsing, encryption and decryption.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// The JSON could not be parsed into the keystore structure.
    #[error("invalid keystore JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A field is present but its value is invalid.
    #[error("invalid keystore field `{field}`: {reason}")]
    Field {
        /// Dotted path of the field, e.g. `crypto.kdf.params.n`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The password does not match the checksum.
    #[error("wrong keystore password (checksum mismatch)")]
    WrongPassword,
    /// The decrypted secret is not a valid BLS12-381 secret key.
    #[error("decrypted secret is not a valid BLS12-381 secret key")]
    InvalidSecret,
    /// The decrypted key does not belong to the keystore's `pubkey`.
    #[error("decrypted key has pubkey {actual}, but the keystore says {expected}")]
    PubkeyMismatch {
        /// The `pubkey` field (hex).
        expected: String,
        /// Pubkey of the decrypted key (hex).
        actual: String,
    },
    /// Reading a keystore file failed.
    #[error("reading keystore {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// Writing a keystore file failed.
    #[error("writing keystore {}: {cause:#}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: anyhow::Error,
    },
    /// A keystore file is malformed.
    #[error("keystore {}: {error}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The parse error.
        error: Box<KeystoreError>,
    },
}

fn field_err(field: &'static str, reason: impl fmt::Display) -> KeystoreError {
    KeystoreError::Field {
        field,
        reason: reason.to_string(),
    }
}

/// Which key-derivation function [`Keystore::encrypt`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KdfChoice {
    /// scrypt with N = 2^18, r = 8, p = 1 (the EIP-2335 default).
    #[default]
    Scrypt,
    /// PBKDF2-HMAC-SHA256 with c = 2^18.
    Pbkdf2,
    /// scrypt with N = 2^4, r = 8, p = 1: decrypts in microseconds. For devnets and tests only.
    Insecure,
}

/// Key-derivation function and its parameters, as stored in `crypto.kdf`.
#[derive(Clone, PartialEq, Eq)]
pub enum Kdf {
    /// scrypt (RFC 7914).
    Scrypt {
        /// CPU/memory cost N (a power of two).
        n: u32,
        /// Block size r.
        r: u32,
        /// Parallelism p.
        p: u32,
        /// Salt.
        salt: Vec<u8>,
    },
    /// PBKDF2 with HMAC-SHA256 (RFC 2898).
    Pbkdf2 {
        /// Iteration count.
        c: u32,
        /// Salt.
        salt: Vec<u8>,
    },
}

impl fmt::Debug for Kdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kdf::Scrypt { n, r, p, .. } => write!(f, "scrypt(n={n}, r={r}, p={p})"),
            Kdf::Pbkdf2 { c, .. } => write!(f, "pbkdf2-hmac-sha256(c={c})"),
        }
    }
}

impl Kdf {
    /// Derives the 32-byte decryption key from the processed password.
    fn derive(&self, password: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
        let mut key = Zeroizing::new([0u8; 32]);
        match self {
            Kdf::Scrypt { n, r, p, salt } => {
                let params = scrypt::Params::new(n.trailing_zeros() as u8, *r, *p, DKLEN as usize)
                    .map_err(|e| field_err("crypto.kdf.params", e))?;
                scrypt::scrypt(password, salt, &params, key.as_mut())
                    .map_err(|e| field_err("crypto.kdf.params.dklen", e))?;
            }
            Kdf::Pbkdf2 { c, salt } => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, *c, key.as_mut())
            }
        }
        Ok(key)
    }

    fn validate(&self) -> Result<(), KeystoreError> {
        match self {
            Kdf::Scrypt { n, r, p, salt } => {
                if *n < 2 || !n.is_power_of_two() {
                    return Err(field_err(
                        "crypto.kdf.params.n",
                        format!("{n} is not a power of two >= 2"),
                    ));
                }
                if *r == 0 {
                    return Err(field_err("crypto.kdf.params.r", "must be positive"));
                }
                if *p == 0 || u64::from(*p) * u64::from(*r) >= 1 << 30 {
                    return Err(field_err(
                        "crypto.kdf.params.p",
                        "must be positive with r*p < 2^30",
                    ));
                }
                let memory = 128 * u64::from(*n) * u64::from(*r);
                if memory > MAX_SCRYPT_MEMORY {
                    return Err(field_err(
                        "crypto.kdf.params.n",
                        format!("scrypt would need {memory} bytes of memory (limit {MAX_SCRYPT_MEMORY})"),
                    ));
                }
                let work = u64::from(*n) * u64::from(*r) * u64::from(*p);
                if work > MAX_SCRYPT_WORK {
                    return Err(field_err(
                        "crypto.kdf.params.p",
                        format!("scrypt work n*r*p = {work} exceeds the limit {MAX_SCRYPT_WORK}"),
                    ));
                }
                scrypt::Params::new(n.trailing_zeros() as u8, *r, *p, DKLEN as usize)
                    .map_err(|e| field_err("crypto.kdf.params", e))?;
                if salt.is_empty() {
                    return Err(field_err("crypto.kdf.params.salt", "empty"));
                }
            }
            Kdf::Pbkdf2 { c, salt } => {
                if *c == 0 || *c > MAX_PBKDF2_C {
                    return Err(field_err(
                        "crypto.kdf.params.c",
                        format!("{c} is not in 1..={MAX_PBKDF2_C}"),
                    ));
                }
                if salt.is_empty() {
                    return Err(field_err("crypto.kdf.params.salt", "empty"));
                }
            }
        }
        Ok(())
    }
}

/// An EIP-2335 keystore holding one encrypted BLS secret key.
///
/// Serializes to and from the EIP-2335 JSON format (also via serde).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "KeystoreJson", into = "KeystoreJson")]
pub struct Keystore {
    kdf: Kdf,
    checksum: [u8; 32],
    iv: [u8; 16],
    ciphertext: Vec<u8>,
    description: String,
    pubkey: Option<[u8; 48]>,
    path: String,
    uuid: Uuid,
}

impl Keystore {
    /// Encrypts `secret` under `password` with a fresh random salt, IV and UUID.
    ///
    /// `path` is the EIP-2334 derivation path, or `""` if the key was not derived (e.g. a share).
    pub fn encrypt(
        secret: &SecretKey,
        password: &str,
        path: &str,
        kdf: KdfChoice,
    ) -> Result<Keystore, KeystoreError> {
        let mut salt = vec![0u8; 32];
        OsRng.fill_bytes(&mut salt);
        let mut iv = [0u8; 16];
        OsRng.fill_bytes(&mut iv);
        let kdf = match kdf {
            KdfChoice::Scrypt => Kdf::Scrypt {
                n: SCRYPT_DEFAULT_N,
                r: 8,
                p: 1,
                salt,
            },
            KdfChoice::Pbkdf2 => Kdf::Pbkdf2 {
                c: PBKDF2_DEFAULT_C,
                salt,
            },
            KdfChoice::Insecure => Kdf::Scrypt {
                n: INSECURE_SCRYPT_N,
                r: 8,
                p: 1,
                salt,
            },
        };
        let key = kdf.derive(&process_password(password))?;
        // Encrypted in place; the buffer holds the plaintext until then, hence Zeroizing.
        let mut ciphertext = Zeroizing::new(secret.to_bytes());
        Aes128Ctr::new(key[..16].into(), iv[..].into()).apply_keystream(ciphertext.as_mut());
        let checksum = checksum(&key, ciphertext.as_ref());
        Ok(Keystore {
            kdf,
            checksum,
            iv,
            ciphertext: ciphertext.to_vec(),
            description: String::new(),
            pubkey: Some(secret.sk_to_pk().to_bytes()),
            path: path.to_owned(),
            uuid: Uuid::new_v4(),
        })
    }

    /// Decrypts the secret key.
    ///
    /// Checks the password against the checksum first ([`KeystoreError::WrongPassword`]), then
    /// that the secret is a valid key and, if the keystore has a `pubkey`, that it matches.
    pub fn decrypt(&self, password: &str) -> Result<SecretKey, KeystoreError> {
        let key = self.kdf.derive(&process_password(password))?;
        let expected = checksum(&key, &self.ciphertext);
        // Constant-time comparison.
        if expected
            .iter()
            .zip(&self.checksum)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
        {
            return Err(KeystoreError::WrongPassword);
        }
        let mut plaintext = Zeroizing::new(self.ciphertext.clone());
        Aes128Ctr::new(key[..16].into(), self.iv[..].into()).apply_keystream(&mut plaintext);
        let secret = SecretKey::from_bytes(&plaintext).map_err(|_| KeystoreError::InvalidSecret)?;
        if let Some(expected) = &self.pubkey {
            let actual = secret.sk_to_pk().to_bytes();
            if &actual != expected {
                return Err(KeystoreError::PubkeyMismatch {
                    expected: hex::encode(expected),
                    actual: hex::encode(actual),
                });
            }
        }
        Ok(secret)
    }

    /// The public key recorded in the keystore (validated when parsed), if any.
    pub fn pubkey(&self) -> Option<PublicKey> {
        // Validity was checked when the keystore was built or parsed.
        self.pubkey
            .and_then(|bytes| PublicKey::from_bytes(&bytes).ok())
    }

    /// The EIP-2334 derivation path (`""` if none).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The keystore UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The free-form description (`""` if none).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Sets the free-form description.
    pub fn set_description(&mut self, description: impl Into<String>) {
        self.description = description.into();
    }

    /// The key-derivation function and its parameters.
    pub fn kdf(&self) -> &Kdf {
        &self.kdf
    }

    /// Parses and validates a keystore from its JSON text.
    pub fn from_json_str(json: &str) -> Result<Keystore, KeystoreError> {
        let raw: KeystoreJson = serde_json::from_str(json)?;
        Keystore::try_from(raw)
    }

    /// The keystore as pretty-printed EIP-2335 JSON.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(&KeystoreJson::from(self.clone()))
            .expect("keystore JSON serialization is infallible")
    }

    /// Reads and validates a keystore file. Errors name the file.
    pub fn from_file(path: &Path) -> Result<Keystore, KeystoreError> {
        let text = std::fs::read_to_string(path).map_err(|cause| KeystoreError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Keystore::from_json_str(&text).map_err(|error| KeystoreError::InFile {
            path: path.to_owned(),
            error: Box::new(error),
        })
    }

    /// Writes the keystore atomically to `path` with mode 0600.
    pub fn to_file(&self, path: &Path) -> Result<(), KeystoreError> {
        crate::util::write_file(path, self.to_json_string().as_bytes(), 0o600).map_err(|cause| {
            KeystoreError::Write {
                path: path.to_owned(),
                cause,
            }
        })
    }
}

/// Re-encrypts every `*.json` keystore of `src` — each decrypted with the password in its
/// sibling `.txt` file, as `dvnode create-cluster` writes a node's `validator_keys/` — into
/// `dst` (created if missing) under the one `password` with `kdf`, keeping the file names. For
/// validator clients that import a directory of keystores under a single password (Lodestar's
/// `--importKeystores` with `--importKeystoresPassword`). Returns the number of keystores; a
/// `src` without any is an error, and every error names the file.
pub fn reencrypt_dir(
    src: &Path,
    dst: &Path,
    password: &str,
    kdf: KdfChoice,
) -> anyhow::Result<usize> {
    use anyhow::{bail, Context};
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", src.display()))?;
    entries.sort();
    let mut n = 0;
    for path in entries {
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let pw_path = path.with_extension("txt");
        let pw = Zeroizing::new(
            std::fs::read_to_string(&pw_path)
                .with_context(|| format!("reading password file {}", pw_path.display()))?,
        );
        let ks = Keystore::from_file(&path)?;
        let sk = ks
            .decrypt(pw.trim_end_matches(['\n', '\r']))
            .with_context(|| format!("decrypting {}", path.display()))?;
        let name = path
            .file_name()
            .with_context(|| format!("{} has no file name", path.display()))?;
        Keystore::encrypt(&sk, password, ks.path(), kdf)?.to_file(&dst.join(name))?;
        n += 1;
    }
    if n == 0 {
        bail!("no keystore-*.json in {}", src.display());
    }
    Ok(n)
}

/// EIP-2335 password processing: NFKD normalization, then removal of the C0 (U+0000–U+001F) and
/// C1 (U+0080–U+009F) control codes and DEL (U+007F), then UTF-8.
fn process_password(password: &str) -> Zeroizing<Vec<u8>> {
    let normalized: Zeroizing<String> = Zeroizing::new(
        password
            .nfkd()
            .filter(|c| !matches!(*c as u32, 0x00..=0x1f | 0x7f | 0x80..=0x9f))
            .collect(),
    );
    Zeroizing::new(normalized.as_bytes().to_vec())
}

/// SHA-256(DK[16..32] ‖ cipher message).
fn checksum(key: &[u8; 32], ciphertext: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(&key[16..32]);
    hasher.update(ciphertext);
    hasher.finalize().into()
}

/// On-disk JSON shape of a keystore.
#[derive(Serialize, Deserialize)]
struct KeystoreJson {
    crypto: CryptoJson,
    #[serde(default)]
    description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pubkey: Option<String>,
    path: String,
    uuid: Uuid,
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct CryptoJson {
    kdf: ModuleJson,
    checksum: ModuleJson,
    cipher: ModuleJson,
}

/// An EIP-2335 module: `function`, `params`, `message`.
#[derive(Serialize, Deserialize)]
struct ModuleJson {
    function: String,
    params: Map<String, Value>,
    message: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScryptParamsJson {
    dklen: u32,
    n: u32,
    r: u32,
    p: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pbkdf2ParamsJson {
    dklen: u32,
    c: u32,
    prf: String,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CipherParamsJson {
    iv: String,
}

fn hex_field(field: &'static str, value: &str) -> Result<Vec<u8>, KeystoreError> {
    hex::decode(value.strip_prefix("0x").unwrap_or(value))
        .map_err(|e| field_err(field, format!("invalid hex: {e}")))
}

fn hex_array<const N: usize>(field: &'static str, value: &str) -> Result<[u8; N], KeystoreError> {
    let bytes = hex_field(field, value)?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| field_err(field, format!("expected {N} bytes, got {len}")))
}

/// The derived key must be 32 bytes (the AES key and the checksum key).
fn check_dklen(dklen: u32) -> Result<(), KeystoreError> {
    if dklen != DKLEN {
        return Err(field_err(
            "crypto.kdf.params.dklen",
            format!("{dklen} is not {DKLEN}"),
        ));
    }
    Ok(())
}

fn params<T: serde::de::DeserializeOwned>(
    field: &'static str,
    map: Map<String, Value>,
) -> Result<T, KeystoreError> {
    serde_json::from_value(Value::Object(map)).map_err(|e| field_err(field, e))
}

fn to_params<T: Serialize>(value: T) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("parameter structs serialize to JSON objects"),
    }
}

impl TryFrom<KeystoreJson> for Keystore {
    type Error = KeystoreError;

    fn try_from(raw: KeystoreJson) -> Result<Self, Self::Error> {
        if raw.version != VERSION {
            return Err(field_err(
                "version",
                format!("unsupported version {}, expected {VERSION}", raw.version),
            ));
        }
        let crypto = raw.crypto;
        let kdf = match crypto.kdf.function.as_str() {
            "scrypt" => {
                let p: ScryptParamsJson = params("crypto.kdf.params", crypto.kdf.params)?;
                check_dklen(p.dklen)?;
                let salt = hex_field("crypto.kdf.params.salt", &p.salt)?;
                Kdf::Scrypt {
                    n: p.n,
                    r: p.r,
                    p: p.p,
                    salt,
                }
            }
            "pbkdf2" => {
                let p: Pbkdf2ParamsJson = params("crypto.kdf.params", crypto.kdf.params)?;
                check_dklen(p.dklen)?;
                if p.prf != "hmac-sha256" {
                    return Err(field_err(
                        "crypto.kdf.params.prf",
                        format!("unsupported PRF {:?}", p.prf),
                    ));
                }
                let salt = hex_field("crypto.kdf.params.salt", &p.salt)?;
                Kdf::Pbkdf2 { c: p.c, salt }
            }
            other => {
                return Err(field_err(
                    "crypto.kdf.function",
                    format!("unsupported KDF {other:?}"),
                ))
            }
        };
        kdf.validate()?;
        if !crypto.kdf.message.is_empty() {
            return Err(field_err("crypto.kdf.message", "must be empty"));
        }
        if crypto.checksum.function != "sha256" {
            return Err(field_err(
                "crypto.checksum.function",
                format!("unsupported checksum {:?}", crypto.checksum.function),
            ));
        }
        let checksum = hex_array("crypto.checksum.message", &crypto.checksum.message)?;
        if crypto.cipher.function != "aes-128-ctr" {
            return Err(field_err(
                "crypto.cipher.function",
                format!("unsupported cipher {:?}", crypto.cipher.function),
            ));
        }
        let cp: CipherParamsJson = params("crypto.cipher.params", crypto.cipher.params)?;
        let iv = hex_array("crypto.cipher.params.iv", &cp.iv)?;
        let ciphertext = hex_field("crypto.cipher.message", &crypto.cipher.message)?;
        if ciphertext.len() != 32 {
            return Err(field_err(
                "crypto.cipher.message",
                format!(
                    "expected a 32-byte encrypted secret key, got {} bytes",
                    ciphertext.len()
                ),
            ));
        }
        let pubkey = match raw.pubkey.as_deref() {
            None | Some("") => None,
            Some(hex) => {
                let bytes: [u8; 48] = hex_array("pubkey", hex)?;
                PublicKey::key_validate(&bytes).map_err(|e| {
                    field_err("pubkey", format!("not a valid BLS public key ({e:?})"))
                })?;
                Some(bytes)
            }
        };
        Ok(Keystore {
            kdf,
            checksum,
            iv,
            ciphertext,
            description: raw.description,
            pubkey,
            path: raw.path,
            uuid: raw.uuid,
        })
    }
}

impl From<Keystore> for KeystoreJson {
    fn from(ks: Keystore) -> Self {
        let kdf = match ks.kdf {
            Kdf::Scrypt { n, r, p, salt } => ModuleJson {
                function: "scrypt".into(),
                params: to_params(ScryptParamsJson {
                    dklen: DKLEN,
                    n,
                    r,
                    p,
                    salt: hex::encode(salt),
                }),
                message: String::new(),
            },
            Kdf::Pbkdf2 { c, salt } => ModuleJson {
                function: "pbkdf2".into(),
                params: to_params(Pbkdf2ParamsJson {
                    dklen: DKLEN,
                    c,
                    prf: "hmac-sha256".into(),
                    salt: hex::encode(salt),
                }),
                message: String::new(),
            },
        };
        KeystoreJson {
            crypto: CryptoJson {
                kdf,
                checksum: ModuleJson {
                    function: "sha256".into(),
                    params: Map::new(),
                    message: hex::encode(ks.checksum),
                },
                cipher: ModuleJson {
                    function: "aes-128-ctr".into(),
                    params: to_params(CipherParamsJson {
                        iv: hex::encode(ks.iv),
                    }),
                    message: hex::encode(&ks.ciphertext),
                },
            },
            description: ks.description,
            pubkey: ks.pubkey.map(hex::encode),
            path: ks.path,
            uuid: ks.uuid,
            version: VERSION,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EIP_PASSWORD: &str = "𝔱𝔢𝔰𝔱𝔭𝔞𝔰𝔰𝔴𝔬𝔯𝔡🔑";
    const EIP_SECRET: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
    const EIP_PUBKEY: &str =
        "9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07";

    const SCRYPT_VECTOR: &str = r#"{
    "crypto": {
        "kdf": {
            "function": "scrypt",
            "params": {
                "dklen": 32,
                "n": 262144,
                "p": 1,
                "r": 8,
                "salt": "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"
            },
            "message": ""
        },
        "checksum": {
            "function": "sha256",
            "params": {},
            "message": "d2217fe5f3e9a1e34581ef8a78f7c9928e436d36dacc5e846690a5581e8ea484"
        },
        "cipher": {
            "function": "aes-128-ctr",
            "params": {
                "iv": "264daa3f303d7259501c93d997d84fe6"
            },
            "message": "06ae90d55fe0a6e9c5c3bc5b170827b2e5cce3929ed3f116c2811e6366dfe20f"
        }
    },
    "description": "This is a test keystore that uses scrypt to secure the secret.",
    "pubkey": "9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07",
    "path": "m/12381/60/3141592653/589793238",
    "uuid": "1d85ae20-35c5-4611-98e8-aa14a633906f",
    "version": 4
}"#;

    const PBKDF2_VECTOR: &str = r#"{
    "crypto": {
        "kdf": {
            "function": "pbkdf2",
            "params": {
                "dklen": 32,
                "c": 262144,
                "prf": "hmac-sha256",
                "salt": "d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3"
            },
            "message": ""
        },
        "checksum": {
            "function": "sha256",
            "params": {},
            "message": "8a9f5d9912ed7e75ea794bc5a89bca5f193721d30868ade6f73043c6ea6febf1"
        },
        "cipher": {
            "function": "aes-128-ctr",
            "params": {
                "iv": "264daa3f303d7259501c93d997d84fe6"
            },
            "message": "cee03fde2af33149775b7223e7845e4fb2c8ae1792e5f99fe9ecf474cc8c16ad"
        }
    },
    "description": "This is a test keystore that uses PBKDF2 to secure the secret.",
    "pubkey": "9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07",
    "path": "m/12381/60/0/0",
    "uuid": "64625def-3331-4eea-ab6f-782f3ed16a83",
    "version": 4
}"#;

    fn check_vector(json: &str, path: &str) {
        let ks = Keystore::from_json_str(json).unwrap();
        assert_eq!(ks.path(), path);
        assert_eq!(hex::encode(ks.pubkey().unwrap().to_bytes()), EIP_PUBKEY);
        let sk = ks.decrypt(EIP_PASSWORD).unwrap();
        assert_eq!(hex::encode(sk.to_bytes()), EIP_SECRET);
        assert!(matches!(
            ks.decrypt("testpassword"),
            Err(KeystoreError::WrongPassword)
        ));
        // Serialization round trip preserves the content exactly.
        let again = Keystore::from_json_str(&ks.to_json_string()).unwrap();
        assert_eq!(again, ks);
        let orig: Value = serde_json::from_str(json).unwrap();
        let ours: Value = serde_json::from_str(&ks.to_json_string()).unwrap();
        assert_eq!(orig, ours);
    }

    #[test]
    fn eip2335_scrypt_vector() {
        check_vector(SCRYPT_VECTOR, "m/12381/60/3141592653/589793238");
    }

    #[test]
    fn eip2335_pbkdf2_vector() {
        check_vector(PBKDF2_VECTOR, "m/12381/60/0/0");
    }

    #[test]
    fn password_processing() {
        // The EIP's encoded password.
        assert_eq!(
            hex::encode(&*process_password(EIP_PASSWORD)),
            "7465737470617373776f7264f09f9491"
        );
        // Control codes (C0, DEL, C1) are stripped; space is kept.
        assert_eq!(
            &*process_password("a\u{0}b\u{1f}c\u{7f}d\u{85}e f"),
            b"abcde f"
        );
    }

    fn sample_secret() -> SecretKey {
        SecretKey::from_bytes(&hex::decode(EIP_SECRET).unwrap()).unwrap()
    }

    #[test]
    fn roundtrip_each_kdf() {
        let sk = sample_secret();
        for choice in [KdfChoice::Insecure, KdfChoice::Pbkdf2, KdfChoice::Scrypt] {
            let ks = Keystore::encrypt(&sk, "correct horse", "m/12381/3600/0/0/0", choice).unwrap();
            let parsed = Keystore::from_json_str(&ks.to_json_string()).unwrap();
            assert_eq!(
                parsed.decrypt("correct horse").unwrap().to_bytes(),
                sk.to_bytes(),
                "{choice:?}"
            );
            assert!(
                matches!(
                    parsed.decrypt("wrong horse"),
                    Err(KeystoreError::WrongPassword)
                ),
                "{choice:?}"
            );
            assert_eq!(parsed.pubkey().unwrap(), sk.sk_to_pk());
        }
    }

    #[test]
    fn insecure_params_and_fresh_randomness() {
        let sk = sample_secret();
        let a = Keystore::encrypt(&sk, "pw", "", KdfChoice::Insecure).unwrap();
        let b = Keystore::encrypt(&sk, "pw", "", KdfChoice::Insecure).unwrap();
        assert!(matches!(
            a.kdf(),
            Kdf::Scrypt {
                n: INSECURE_SCRYPT_N,
                r: 8,
                p: 1,
                ..
            }
        ));
        assert_ne!(a.uuid(), b.uuid());
        assert_ne!(a.to_json_string(), b.to_json_string());
    }

    #[test]
    fn file_roundtrip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keystore-0.json");
        let ks = Keystore::encrypt(&sample_secret(), "pw", "", KdfChoice::Insecure).unwrap();
        ks.to_file(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let loaded = Keystore::from_file(&path).unwrap();
        assert_eq!(loaded, ks);
        assert_eq!(
            loaded.decrypt("pw").unwrap().to_bytes(),
            sample_secret().to_bytes()
        );
    }

    fn error_of(json: &str) -> String {
        Keystore::from_json_str(json).unwrap_err().to_string()
    }

    #[test]
    fn malformed_json_names_the_problem() {
        assert!(error_of("{").contains("EOF"), "{}", error_of("{"));
        let missing_crypto =
            r#"{"path": "", "uuid": "1d85ae20-35c5-4611-98e8-aa14a633906f", "version": 4}"#;
        assert!(error_of(missing_crypto).contains("missing field `crypto`"));
        let cases = [
            (r#""n": 262144"#, r#""n": 1000"#, "crypto.kdf.params.n"),
            (
                r#""n": 262144"#,
                r#""n": 1073741824"#,
                "crypto.kdf.params.n",
            ),
            (r#""dklen": 32,"#, "", "missing field `dklen`"),
            (
                r#""function": "scrypt""#,
                r#""function": "argon2""#,
                "crypto.kdf.function",
            ),
            (
                r#""salt": "d4e5"#,
                r#""salt": "zz"#,
                "crypto.kdf.params.salt",
            ),
            (
                r#""iv": "264daa3f303d7259501c93d997d84fe6""#,
                r#""iv": "264d""#,
                "crypto.cipher.params.iv",
            ),
            (
                r#""function": "aes-128-ctr""#,
                r#""function": "aes-256-gcm""#,
                "crypto.cipher.function",
            ),
            (
                r#""function": "sha256""#,
                r#""function": "keccak256""#,
                "crypto.checksum.function",
            ),
            (r#""version": 4"#, r#""version": 3"#, "version"),
            (r#""pubkey": "9612"#, r#""pubkey": "0012"#, "pubkey"),
        ];
        for (from, to, expected) in cases {
            assert!(SCRYPT_VECTOR.contains(from), "{from}");
            let err = error_of(&SCRYPT_VECTOR.replacen(from, to, 1));
            assert!(err.contains(expected), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn kdf_parameters_costing_gigabytes_or_hours_are_refused() {
        // The EIP-2335 default (256 MiB, N·r·p = 2^21) and twice its memory are accepted.
        assert!(Keystore::from_json_str(SCRYPT_VECTOR).is_ok());
        let doubled = SCRYPT_VECTOR.replacen(r#""n": 262144"#, r#""n": 524288"#, 1);
        assert!(Keystore::from_json_str(&doubled).is_ok());
        let cases = [
            // 1 GiB of memory.
            (
                SCRYPT_VECTOR,
                r#""n": 262144"#,
                r#""n": 1048576"#,
                "crypto.kdf.params.n",
            ),
            (
                SCRYPT_VECTOR,
                r#""r": 8"#,
                r#""r": 64"#,
                "crypto.kdf.params.n",
            ),
            // Tiny memory (n = 2): cheap with p = 1; with p = 2^20 the work is 8 times the default.
            (SCRYPT_VECTOR, r#""n": 262144"#, r#""n": 2"#, ""),
            (
                SCRYPT_VECTOR,
                r#""p": 1"#,
                r#""p": 64"#,
                "crypto.kdf.params.p",
            ),
            (
                PBKDF2_VECTOR,
                r#""c": 262144"#,
                r#""c": 33554432"#,
                "crypto.kdf.params.c",
            ),
        ];
        for (vector, from, to, expected) in cases {
            assert!(vector.contains(from), "{from}");
            let json = vector.replacen(from, to, 1);
            if expected.is_empty() {
                // n = 2 with p = 1 is cheap and fine; with a huge p it is not.
                assert!(Keystore::from_json_str(&json).is_ok());
                let json = json.replacen(r#""p": 1"#, r#""p": 1048576"#, 1);
                let err = error_of(&json);
                assert!(err.contains("crypto.kdf.params.p"), "{err}");
                continue;
            }
            let err = error_of(&json);
            assert!(err.contains(expected), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(
            &path,
            SCRYPT_VECTOR.replace(r#""version": 4"#, r#""version": 5"#),
        )
        .unwrap();
        let err = Keystore::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("bad.json") && err.contains("version"), "{err}");
        let missing = dir.path().join("missing.json");
        let err = Keystore::from_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.json"), "{err}");
    }

    #[test]
    fn pubkey_mismatch_detected() {
        let ks = Keystore::encrypt(&sample_secret(), "pw", "", KdfChoice::Insecure).unwrap();
        let other = super::super::interop::interop_secret(0).sk_to_pk();
        let json = ks.to_json_string().replace(
            &hex::encode(sample_secret().sk_to_pk().to_bytes()),
            &hex::encode(other.to_bytes()),
        );
        let tampered = Keystore::from_json_str(&json).unwrap();
        assert!(matches!(
            tampered.decrypt("pw"),
            Err(KeystoreError::PubkeyMismatch { .. })
        ));
    }

    #[test]
    fn reencrypted_keystores_share_one_password() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let keys: Vec<_> = (0..2u64)
            .map(crate::keys::interop::interop_secret)
            .collect();
        for (i, sk) in keys.iter().enumerate() {
            let pw = format!("pw-{i}");
            Keystore::encrypt(sk, &pw, "", KdfChoice::Insecure)
                .unwrap()
                .to_file(&src.join(format!("keystore-{i}.json")))
                .unwrap();
            std::fs::write(src.join(format!("keystore-{i}.txt")), &pw).unwrap();
        }
        let dst = dir.path().join("vc");
        let n = reencrypt_dir(&src, &dst, "common", KdfChoice::Insecure).unwrap();
        assert_eq!(n, 2);
        for (i, sk) in keys.iter().enumerate() {
            let ks = Keystore::from_file(&dst.join(format!("keystore-{i}.json"))).unwrap();
            assert_eq!(ks.decrypt("common").unwrap().to_bytes(), sk.to_bytes());
        }
        assert!(reencrypt_dir(
            &dir.path().join("empty-missing"),
            &dst,
            "x",
            KdfChoice::Insecure
        )
        .is_err());
    }
}
