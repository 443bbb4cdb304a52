//! Launch helpers for Lodestar v1.5.1 (`lodestar dev` beacon node, `lodestar validator`).

use std::{
    ops::Range,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use dvnode::{
    eth::beacon::{BeaconClient, Genesis},
    keys::keystore::{reencrypt_dir, KdfChoice},
};

/// Chain parameters every Lodestar process of a run must share (BN and VCs alike).
#[derive(Clone, Debug)]
pub struct ChainParams {
    /// `LODESTAR_PRESET` (`minimal`).
    pub preset: String,
    /// `SECONDS_PER_SLOT`.
    pub seconds_per_slot: u64,
    /// `ALTAIR_FORK_EPOCH`.
    pub altair_fork_epoch: u64,
    /// `SHARD_COMMITTEE_PERIOD` (epochs a validator must be active before it may exit),
    /// if not the preset's.
    pub shard_committee_period: Option<u64>,
}

impl ChainParams {
    /// The `--params.*` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--params.SECONDS_PER_SLOT".into(),
            self.seconds_per_slot.to_string(),
            "--params.ALTAIR_FORK_EPOCH".into(),
            self.altair_fork_epoch.to_string(),
        ];
        if let Some(p) = self.shard_committee_period {
            args.extend(["--params.SHARD_COMMITTEE_PERIOD".into(), p.to_string()]);
        }
        args
    }

    /// A `lodestar` command with the preset in its environment and the params appended later
    /// by the callers.
    ///
    /// Lodestar's yargs reads every `LODESTAR_*` environment variable as an option
    /// (`LODESTAR_BIN` becomes `--bin`, an "Unknown argument"), so all of them except the
    /// preset are removed from the child's environment.
    fn command(&self, bin: &Path, sub: &str) -> Command {
        let mut cmd = Command::new(bin);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LODESTAR_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("LODESTAR_PRESET", &self.preset).arg(sub);
        cmd
    }
}

/// The Lodestar launcher: `$LODESTAR_BIN` (set by `make lodestar`), else `lodestar` on `PATH`.
pub fn lodestar_bin(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let bin = explicit
        .or_else(|| std::env::var_os("LODESTAR_BIN").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("lodestar"));
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "cannot run Lodestar at {} (run `make lodestar` or set LODESTAR_BIN)",
                bin.display()
            )
        })?;
    if !out.status.success() {
        bail!("{} --version failed: {}", bin.display(), out.status);
    }
    Ok(bin)
}

/// A `lodestar dev` beacon node with interop genesis validators, some of them run by its
/// built-in validator client.
#[derive(Clone, Debug)]
pub struct DevBeaconNode {
    /// Data directory (also its working directory: it writes `genesis.ssz` there).
    pub data_dir: PathBuf,
    /// Number of interop genesis validators.
    pub genesis_validators: u64,
    /// Interop validators run inside the node (end exclusive).
    pub start_validators: Range<u64>,
    /// Genesis time (unix seconds).
    pub genesis_time: u64,
    /// REST API port on 127.0.0.1.
    pub rest_port: u16,
    /// libp2p port on 127.0.0.1.
    pub p2p_port: u16,
}

impl DevBeaconNode {
    /// The REST base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest_port)
    }

    /// The command that starts it.
    pub fn command(&self, bin: &Path, params: &ChainParams) -> Command {
        let mut cmd = params.command(bin, "dev");
        let end_inclusive = self.start_validators.end.saturating_sub(1);
        cmd.current_dir(&self.data_dir)
            .arg("--dataDir")
            .arg(&self.data_dir)
            .args(["--reset", "--genesisValidators"])
            .arg(self.genesis_validators.to_string())
            .arg("--startValidators")
            .arg(format!("{}..{end_inclusive}", self.start_validators.start))
            .arg("--genesisTime")
            .arg(self.genesis_time.to_string())
            .args(["--rest.address", "127.0.0.1", "--rest.port"])
            .arg(self.rest_port.to_string())
            .args(["--rest.namespace", "*"])
            .args(["--listenAddress", "127.0.0.1", "--port"])
            .arg(self.p2p_port.to_string())
            .args(["--discv5", "false"])
            // Its built-in validator client ignores --rest.port.
            .arg("--beaconNodes")
            .arg(self.url())
            .args(params.args());
        cmd
    }
}

/// Which keys a `lodestar validator` runs.
#[derive(Clone, Debug)]
pub enum VcKeys {
    /// Interop keys of these indices (end exclusive), Lodestar's hidden `--interopIndexes`.
    Interop(Range<u64>),
    /// EIP-2335 keystores in a directory, all encrypted with the password in a file.
    Keystores {
        /// Directory of `*.json` keystores.
        dir: PathBuf,
        /// Password file.
        password_file: PathBuf,
    },
    /// These public keys, signed for by a Web3Signer at `url` (`--externalSigner.*`).
    Remote {
        /// The signer's base URL.
        url: String,
        /// The keys (`0x…`).
        pubkeys: Vec<String>,
    },
}

/// A `lodestar validator` process.
#[derive(Clone, Debug)]
pub struct ValidatorClient {
    /// Its data directory (slashing protection, caches).
    pub data_dir: PathBuf,
    /// Beacon node URL it talks to (a real BN or a dvnode validator API).
    pub beacon_url: String,
    /// Its keys.
    pub keys: VcKeys,
}

impl ValidatorClient {
    /// The command that starts it.
    pub fn command(&self, bin: &Path, params: &ChainParams) -> Command {
        let mut cmd = params.command(bin, "validator");
        cmd.arg("--dataDir")
            .arg(&self.data_dir)
            .arg("--beaconNodes")
            .arg(&self.beacon_url);
        match &self.keys {
            VcKeys::Interop(r) => {
                cmd.arg("--interopIndexes").arg(format!(
                    "{}..{}",
                    r.start,
                    r.end.saturating_sub(1)
                ));
            }
            VcKeys::Keystores { dir, password_file } => {
                cmd.arg("--importKeystores")
                    .arg(dir)
                    .arg("--importKeystoresPassword")
                    .arg(password_file);
            }
            VcKeys::Remote { url, pubkeys } => {
                cmd.arg("--externalSigner.url")
                    .arg(url)
                    .arg("--externalSigner.pubkeys")
                    .arg(pubkeys.join(","));
            }
        }
        cmd.args(params.args());
        cmd
    }
}

/// Re-encrypts the share keystores of `src` (as `dvnode create-cluster` writes them, each with
/// its password beside it) into `dst` under one `password`, which Lodestar's
/// `--importKeystoresPassword` needs, written to `DST.password.txt` (0600). Returns the number
/// of keystores and the password file.
pub fn reencrypt_keystores(src: &Path, dst: &Path, password: &str) -> Result<(usize, PathBuf)> {
    let n = reencrypt_dir(src, dst, password, KdfChoice::Insecure)?;
    let pw_file = dst.with_extension("password.txt");
    dvnode::util::write_secret_file(&pw_file, password.as_bytes())?;
    Ok((n, pw_file))
}

/// Polls `GET /eth/v1/beacon/genesis` until the node answers or `timeout` passes.
pub async fn wait_for_genesis(bn: &BeaconClient, timeout: Duration) -> Result<Genesis> {
    let deadline = Instant::now() + timeout;
    loop {
        match bn.genesis().await {
            Ok(g) => return Ok(g),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| {
                    format!("beacon node {} not up after {timeout:?}", bn.base_url())
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvnode::keys::keystore::Keystore;

    fn params() -> ChainParams {
        ChainParams {
            preset: "minimal".into(),
            seconds_per_slot: 4,
            altair_fork_epoch: 0,
            shard_committee_period: Some(0),
        }
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn dev_command_has_inclusive_validator_range_and_params() {
        let bn = DevBeaconNode {
            data_dir: "/tmp/bn".into(),
            genesis_validators: 64,
            start_validators: 0..48,
            genesis_time: 1000,
            rest_port: 5052,
            p2p_port: 9000,
        };
        let a = args(&bn.command(Path::new("lodestar"), &params()));
        let after = |flag: &str| a[a.iter().position(|x| x == flag).unwrap() + 1].clone();
        assert_eq!(a[0], "dev");
        assert_eq!(after("--startValidators"), "0..47");
        assert_eq!(after("--genesisValidators"), "64");
        assert_eq!(after("--params.SECONDS_PER_SLOT"), "4");
        assert_eq!(after("--params.SHARD_COMMITTEE_PERIOD"), "0");
        assert_eq!(after("--beaconNodes"), "http://127.0.0.1:5052");
    }

    /// Re-encryption under one password is dvnode's `reencrypt_dir` (tested there); what the
    /// harness adds is the password file Lodestar reads, readable by the owner only.
    #[test]
    fn reencrypted_keystores_come_with_a_private_password_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let sk = dvnode::keys::interop::interop_secret(0);
        Keystore::encrypt(&sk, "pw-0", "", KdfChoice::Insecure)
            .unwrap()
            .to_file(&src.join("keystore-0.json"))
            .unwrap();
        std::fs::write(src.join("keystore-0.txt"), "pw-0").unwrap();
        let (n, pw_file) = reencrypt_keystores(&src, &dir.path().join("vc"), "common").unwrap();
        assert_eq!(n, 1);
        assert_eq!(pw_file, dir.path().join("vc.password.txt"));
        assert_eq!(std::fs::read_to_string(&pw_file).unwrap(), "common");
        let mode = std::fs::metadata(&pw_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            reencrypt_keystores(&dir.path().join("missing"), &dir.path().join("x"), "x").is_err()
        );
    }
}
