//! The private state directory of a run: key material (share keystores and their passwords,
//! the VCs' re-encrypted keystores and password, libp2p keys) lives here, never under the
//! report directory, so `reports/<run>/` is safe to publish. It is created 0700 and removed
//! at teardown ([`super::down`]); `dvlab run --keep` leaves it with the devnet.
//!
//! Location: `$DVLAB_STATE_DIR/<run>`, else `$XDG_STATE_HOME/dvlab/<run>`, else
//! `$HOME/.local/state/dvlab/<run>`.

use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The directory holding every run's state directory.
pub fn state_root() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("DVLAB_STATE_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("dvlab")))
        .or_else(|| env("HOME").map(|h| h.join(".local/state/dvlab")))
        .unwrap_or_else(|| std::env::temp_dir().join("dvlab-state"))
}

/// The state directory of `run`.
pub fn state_dir(run: &str) -> PathBuf {
    state_root().join(run)
}

/// Creates `dir` (and its missing parents) and gives `dir` mode 0700.
pub fn create_private(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// Removes the state directory of `run`, or of every run when `None`. Returns the
/// directories removed.
pub fn remove(run: Option<&str>) -> Result<Vec<PathBuf>> {
    let dirs = match run {
        Some(r) => vec![state_dir(r)],
        None => match std::fs::read_dir(state_root()) {
            Ok(it) => it.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => vec![],
        },
    };
    let mut removed = Vec::new();
    for d in dirs.into_iter().filter(|d| d.is_dir()) {
        std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        removed.push(d);
    }
    Ok(removed)
}

/// A secret found in a state directory: what it is, where it is, its text.
#[derive(Debug, Clone)]
pub struct Secret {
    /// `keystore ciphertext`, `password`, `p2p key`.
    pub kind: &'static str,
    /// File it came from.
    pub file: PathBuf,
    value: String,
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// The `crypto.cipher.message` of an EIP-2335 keystore.
fn keystore_ciphertext(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.pointer("/crypto/cipher/message")?
        .as_str()
        .map(str::to_string)
}

/// Every secret under `dir`: keystore ciphertexts (`*.json` with a `crypto` section), password
/// files (`*.txt` beside keystores, `password.txt`) and libp2p keys (`p2p-key`).
pub fn secrets(dir: &Path) -> Vec<Secret> {
    let mut out = Vec::new();
    for f in files(dir) {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let (kind, value) = if let Some(c) = keystore_ciphertext(&text) {
            ("keystore ciphertext", c)
        } else if name == "p2p-key" {
            ("p2p key", text.trim().to_string())
        } else if name.ends_with(".txt") && !name.ends_with(".log") && is_password(&text) {
            ("password", text.trim().to_string())
        } else {
            continue;
        };
        // Too short to search for without false alarms: never the case for these files.
        if value.len() >= 16 {
            out.push(Secret {
                kind,
                file: f,
                value,
            });
        }
    }
    out
}

/// A one-line file (what dvnode and the runtime write as passwords).
fn is_password(text: &str) -> bool {
    let t = text.trim_end_matches('\n');
    !t.is_empty() && !t.contains('\n')
}

/// Files under `dir` that contain one of `secrets` or are EIP-2335 keystores: one line each
/// naming the file and the kind (never the secret).
pub fn leaks(dir: &Path, secrets: &[Secret]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files(dir) {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        if keystore_ciphertext(&text).is_some() {
            out.push(format!("{}: an EIP-2335 keystore", f.display()));
        }
        for s in secrets.iter().filter(|s| text.contains(&s.value)) {
            out.push(format!(
                "{}: the {} of {}",
                f.display(),
                s.kind,
                s.file.display()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secrets of a state directory are found wherever a report directory holds them.
    #[test]
    fn secrets_are_found_and_leaks_named() {
        let state = tempfile::tempdir().unwrap();
        let report = tempfile::tempdir().unwrap();
        let node = state.path().join("keys/dv0/node0");
        std::fs::create_dir_all(node.join("validator_keys")).unwrap();
        std::fs::write(node.join("p2p-key"), format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::write(
            node.join("validator_keys/keystore-0.json"),
            r#"{"crypto": {"cipher": {"function": "aes-128-ctr", "message": "0123456789abcdef0123"}}, "version": 4}"#,
        )
        .unwrap();
        std::fs::write(
            node.join("validator_keys/keystore-0.txt"),
            "correct horse battery\n",
        )
        .unwrap();
        std::fs::write(node.join("cluster-lock.json"), r#"{"threshold": 3}"#).unwrap();
        std::fs::write(node.join("create-cluster.log"), "created\nok\n").unwrap();
        let s = secrets(state.path());
        let kinds: Vec<_> = s.iter().map(|s| s.kind).collect();
        assert_eq!(kinds.len(), 3, "{s:?}");
        for k in ["p2p key", "keystore ciphertext", "password"] {
            assert!(kinds.contains(&k), "{kinds:?}");
        }
        // A clean report directory.
        std::fs::create_dir_all(report.path().join("nodes/n0")).unwrap();
        std::fs::write(report.path().join("report.json"), r#"{"run": "x"}"#).unwrap();
        std::fs::write(report.path().join("nodes/n0/log.txt"), "peer 16Uiu2 up\n").unwrap();
        assert!(leaks(report.path(), &s).is_empty());
        // A log line with the password, a copied keystore, a key inside a bigger file.
        std::fs::write(
            report.path().join("nodes/n0/log.txt"),
            "starting with password correct horse battery\n",
        )
        .unwrap();
        std::fs::copy(
            node.join("validator_keys/keystore-0.json"),
            report.path().join("k.json"),
        )
        .unwrap();
        std::fs::write(
            report.path().join("plan.json"),
            format!("{{\"key\": \"{}\"}}", "ab".repeat(32)),
        )
        .unwrap();
        let l = leaks(report.path(), &s);
        assert_eq!(l.len(), 4, "{l:#?}");
        assert!(l
            .iter()
            .any(|x| x.contains("log.txt") && x.contains("password")));
        assert!(l
            .iter()
            .any(|x| x.contains("k.json") && x.contains("EIP-2335")));
        assert!(l
            .iter()
            .any(|x| x.contains("plan.json") && x.contains("p2p key")));
        // The message names the file, never the secret.
        assert!(l.iter().all(|x| !x.contains("correct horse")));
    }

    #[test]
    fn private_dir_is_0700() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state/run1");
        create_private(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
