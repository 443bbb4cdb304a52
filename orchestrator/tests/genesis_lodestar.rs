//! `dvlab::genesis` against a real Lodestar v1.5.1 (minimal preset, Altair at genesis):
//!
//! 1. for interop deposits the state built here is byte for byte the `genesis.ssz` that
//!    `lodestar dev --genesisValidators 64 --genesisTime T` writes;
//! 2. a genesis whose last validators are the distributed keys of a real DKG ceremony (four
//!    in-process `dvnode dkg` nodes over loopback libp2p, their `deposit-data.json`) is loaded
//!    by `lodestar dev --genesisStateFile`, which serves our genesis validators root, lists the
//!    DKG keys as active validators and builds a chain on it.
//!
//! Needs `LODESTAR_BIN`; without it the tests are skipped with a loud message, unless `CI` is
//! set, where they fail.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use dvlab::genesis::{self, GenesisParams};
use dvnode::{
    cluster::deposit::DepositDataJson,
    eth::{
        beacon::{BeaconClient, BlockId, StateId, ValidatorId},
        types::{BlsPubkey, DepositData},
    },
};

fn lodestar() -> Option<PathBuf> {
    match std::env::var_os("LODESTAR_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => panic!("CI needs LODESTAR_BIN"),
        None => {
            eprintln!("SKIPPED: LODESTAR_BIN is not set (run through `make test`)");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when dropped (also when a test fails).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `lodestar dev` in `dir` (its working directory and data directory) with `args`.
fn lodestar_dev(bin: &Path, dir: &Path, rest_port: u16, args: &[String]) -> Guard {
    let mut cmd = Command::new(bin);
    // Lodestar reads every LODESTAR_* variable as a flag; keep only the preset.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LODESTAR_") {
            cmd.env_remove(&key);
        }
    }
    let log = std::fs::File::create(dir.join("lodestar.log")).unwrap();
    cmd.env("LODESTAR_PRESET", "minimal")
        .current_dir(dir)
        .arg("dev")
        .arg("--dataDir")
        .arg(dir.join("data"))
        .args([
            "--params.SECONDS_PER_SLOT",
            "2",
            "--params.ALTAIR_FORK_EPOCH",
            "0",
        ])
        .args(["--rest.address", "127.0.0.1", "--rest.port"])
        .arg(rest_port.to_string())
        .args([
            "--rest.namespace",
            "*",
            "--listenAddress",
            "127.0.0.1",
            "--port",
        ])
        .arg(free_port().to_string())
        .args(["--discv5", "false"])
        .args(args)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    Guard(cmd.spawn().expect("start lodestar dev"))
}

async fn wait_for_genesis(bn: &BeaconClient, dir: &Path) -> dvnode::eth::config::Genesis {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(g) = bn.genesis().await {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "Lodestar did not serve its genesis; log:\n{}",
            std::fs::read_to_string(dir.join("lodestar.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn interop_genesis_is_lodestars_byte_for_byte() {
    let Some(bin) = lodestar() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let genesis_time = dvnode::clock::unix_now().as_secs() + 3600;
    let port = free_port();
    let _lodestar = lodestar_dev(
        &bin,
        tmp.path(),
        port,
        &[
            "--genesisValidators".into(),
            "64".into(),
            "--genesisTime".into(),
            genesis_time.to_string(),
        ],
    );
    let bn = BeaconClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    // Once the API is up, `genesis.ssz` (written before the node starts) is complete.
    let served = wait_for_genesis(&bn, tmp.path()).await;
    let theirs = std::fs::read(tmp.path().join("genesis.ssz")).unwrap();

    let params = GenesisParams::lodestar_dev("minimal", genesis_time).unwrap();
    let deposits: Vec<DepositData> = (0..64)
        .map(|i| genesis::interop_deposit(i, params.genesis_fork_version))
        .collect();
    let ours = genesis::build_ssz("minimal", &params, &deposits).unwrap();
    assert_eq!(ours.len(), theirs.len());
    assert!(ours == theirs, "the genesis state differs from Lodestar's");
    let state = genesis::decode::<dvnode::eth::types::Minimal>(&ours).unwrap();
    assert_eq!(
        state.genesis_validators_root,
        served.genesis_validators_root
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lodestar_runs_a_chain_on_a_dkg_genesis() {
    let Some(bin) = lodestar() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // A real ceremony: 4 nodes, 8 validators, deposit data signed by the distributed keys.
    let dkg_dir = tmp.path().join("dkg");
    std::fs::create_dir_all(&dkg_dir).unwrap();
    dvnode::dkg::bench::ceremony(&dkg_dir, 4, 8).await.unwrap();
    let text = std::fs::read_to_string(dkg_dir.join("node0/deposit-data.json")).unwrap();
    let dkg: Vec<DepositDataJson> = serde_json::from_str(&text).unwrap();
    let dkg: Vec<DepositData> = dkg.iter().map(|d| d.verify().unwrap()).collect();

    let genesis_time = dvnode::clock::unix_now().as_secs() + 12;
    let params = GenesisParams::lodestar_dev("minimal", genesis_time).unwrap();
    let mut deposits: Vec<DepositData> = (0..16)
        .map(|i| genesis::interop_deposit(i, params.genesis_fork_version))
        .collect();
    deposits.extend(dkg.iter().copied());
    let ssz = genesis::build_ssz("minimal", &params, &deposits).unwrap();
    let state = genesis::decode::<dvnode::eth::types::Minimal>(&ssz).unwrap();
    let file = tmp.path().join("genesis-dkg.ssz");
    std::fs::write(&file, &ssz).unwrap();

    let port = free_port();
    let node_dir = tmp.path().join("bn");
    std::fs::create_dir_all(&node_dir).unwrap();
    let _lodestar = lodestar_dev(
        &bin,
        &node_dir,
        port,
        &[
            "--genesisStateFile".into(),
            file.display().to_string(),
            // Lodestar's own validator client runs the interop validators.
            "--startValidators".into(),
            "0..15".into(),
            "--beaconNodes".into(),
            format!("http://127.0.0.1:{port}"),
        ],
    );
    let bn = BeaconClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let served = wait_for_genesis(&bn, &node_dir).await;
    assert_eq!(
        served.genesis_validators_root,
        state.genesis_validators_root
    );
    assert_eq!(served.genesis_time, genesis_time);

    let ids: Vec<ValidatorId> = dkg
        .iter()
        .map(|d| ValidatorId::Pubkey(BlsPubkey(d.pubkey.0)))
        .collect();
    let found = bn.state_validators(StateId::Head, &ids).await.unwrap();
    assert_eq!(found.len(), 8, "Lodestar lists the DKG validators");
    for v in &found {
        assert!(v.index >= 16 && v.index < 24, "{v:?}");
        assert!(v.status.is_active(), "{v:?}");
    }

    // The chain advances on this genesis: blocks of the interop validators past slot 3.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let head = bn
            .header(BlockId::Head)
            .await
            .map(|h| h.header.message.slot)
            .unwrap_or(0);
        if head >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no chain on the DKG genesis (head {head}); log:\n{}",
            std::fs::read_to_string(node_dir.join("lodestar.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
