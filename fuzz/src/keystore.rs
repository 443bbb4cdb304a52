//! EIP-2335 keystores as a node loads its key shares: [`Keystore::from_json_str`] (every field
//! validated, KDF parameters bounded) and [`Keystore::decrypt`] (password normalisation, KDF,
//! checksum, AES-128-CTR, secret and pubkey checks).
//!
//! Input: `password NUL keystore JSON`.
//!
//! Properties: a keystore that parses never asks scrypt for more than
//! [`MAX_SCRYPT_MEMORY`] bytes or [`MAX_SCRYPT_WORK`] block mixes, nor PBKDF2 for more than
//! [`MAX_PBKDF2_C`] iterations; it re-serialises to JSON that parses to the same keystore; a
//! decrypted secret belongs to the keystore's pubkey and survives re-encryption. Decryption
//! runs only when the parameters are cheap (a fuzzing budget: the accepted maximum takes
//! seconds, which the bounds above are the check for).

use dvnode::keys::keystore::{
    Kdf, KdfChoice, Keystore, MAX_PBKDF2_C, MAX_SCRYPT_MEMORY, MAX_SCRYPT_WORK,
};

/// Work up to which a fuzzed keystore is decrypted (scrypt N·r·p or PBKDF2 c).
const DECRYPT_BUDGET: u64 = 1 << 12;

/// One execution.
pub fn run(data: &[u8]) {
    let [password, json] = crate::parts(data, 2)[..] else {
        unreachable!()
    };
    let (Ok(password), Ok(json)) = (std::str::from_utf8(password), std::str::from_utf8(json))
    else {
        return;
    };
    let ks = match Keystore::from_json_str(json) {
        Ok(ks) => ks,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let work = match ks.kdf() {
        Kdf::Scrypt { n, r, p, .. } => {
            let (n, r, p) = (u64::from(*n), u64::from(*r), u64::from(*p));
            assert!(
                128 * n * r <= MAX_SCRYPT_MEMORY,
                "scrypt memory unbounded: {:?}",
                ks.kdf()
            );
            assert!(
                n * r * p <= MAX_SCRYPT_WORK,
                "scrypt work unbounded: {:?}",
                ks.kdf()
            );
            n * r * p
        }
        Kdf::Pbkdf2 { c, .. } => {
            assert!(*c <= MAX_PBKDF2_C, "PBKDF2 work unbounded: {:?}", ks.kdf());
            u64::from(*c)
        }
    };
    let again = Keystore::from_json_str(&ks.to_json_string()).expect("own JSON parses");
    assert_eq!(again, ks, "JSON round trip changed the keystore");
    if work > DECRYPT_BUDGET {
        return;
    }
    match ks.decrypt(password) {
        Ok(sk) => {
            if let Some(pk) = ks.pubkey() {
                assert_eq!(pk, sk.sk_to_pk(), "decrypted a key of another pubkey");
            }
            let re = Keystore::encrypt(&sk, password, ks.path(), KdfChoice::Insecure)
                .expect("re-encrypt");
            let back = re
                .decrypt(password)
                .expect("re-encrypted keystore decrypts");
            assert_eq!(back.to_bytes(), sk.to_bytes());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Keystores of the fixture's key shares with each KDF (cheap parameters), with their
/// passwords (the EIP-2335 test vectors are committed seeds in `fuzz/seeds/keystore/`).
pub fn seeds() -> Vec<Vec<u8>> {
    let share = &crate::fixture::dvs()[0].shares[0];
    let password = "fuzz-π-password";
    let insecure = Keystore::encrypt(share, password, "", KdfChoice::Insecure).expect("encrypt");
    let json = insecure.to_json_string();
    // The same keystore claiming PBKDF2 with a small c (the checksum then fails: wrong key).
    let pbkdf2 = json
        .replace("\"scrypt\"", "\"pbkdf2\"")
        .replace("\"n\": 16,", "\"c\": 16, \"prf\": \"hmac-sha256\",")
        .replace("\"p\": 1,", "")
        .replace("\"r\": 8,", "");
    vec![
        crate::join(&[password.as_bytes(), json.as_bytes()]),
        crate::join(&[b"wrong", json.as_bytes()]),
        crate::join(&[password.as_bytes(), pbkdf2.as_bytes()]),
    ]
}
