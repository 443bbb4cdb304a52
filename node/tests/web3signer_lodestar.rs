//! A real Lodestar v1.5.1 validator client against dvnode's Web3Signer API.
//!
//! Starts `lodestar dev` (16 interop validators, Altair at genesis; its own validator client runs
//! 0..=13) and a `lodestar validator` for 14 and 15 with `--externalSigner.url` at an in-process
//! [`dvnode::web3signer::Web3Signer`] whose signer holds the two whole interop keys. Every request
//! is parsed and checked exactly as in a dvnode (fork info, genesis validators root, the client's
//! `signingRoot` against the root recomputed from the object); a mismatch is refused and fails
//! the test. It runs until every request type the VC sends has been signed at least once
//! (`BLOCK_V2`, `RANDAO_REVEAL`, `ATTESTATION`, `AGGREGATION_SLOT`, `AGGREGATE_AND_PROOF`,
//! `SYNC_COMMITTEE_MESSAGE`, `SYNC_COMMITTEE_SELECTION_PROOF`,
//! `SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF`).
//!
//! With `WEB3SIGNER_RECORD=<file>` it writes the first request body of each type, with the
//! chain's genesis and spec, to `<file>`: that is how `src/web3signer/testdata/lodestar.json`
//! (the fixture of the unit tests) was recorded.
//!
//! Ignored by default (it holds the machine for a minute or two and the e2e remote-signer run
//! covers the same requests): `LODESTAR_BIN=… cargo test -p dvnode --test web3signer_lodestar --
//! --ignored`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use dvnode::eth::beacon::BeaconClient;
use dvnode::eth::types::{BlsPubkey, BlsSignature, Minimal, Root};
use dvnode::keys::{interop::interop_secret, tbls};
use dvnode::web3signer::{Metrics, SignError, SignRequest, SignType, Signer, Web3Signer};
use serde_json::{json, Value};

const VALIDATORS: u64 = 16;
const OURS: [u64; 2] = [14, 15];
const SECONDS_PER_SLOT: u64 = 2;
/// Give up after this many slots.
const MAX_SLOTS: u64 = 64;

struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(mut cmd: Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .env("LODESTAR_PRESET", "minimal")
            .env_remove("LODESTAR_BIN")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc { child, log }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn pubkey(i: u64) -> BlsPubkey {
    BlsPubkey(interop_secret(i).sk_to_pk().to_bytes())
}

/// Signs with the whole interop keys.
struct Recorder {
    keys: Vec<(BlsPubkey, u64)>,
}

#[async_trait]
impl Signer<Minimal> for Recorder {
    fn pubkeys(&self) -> Vec<BlsPubkey> {
        self.keys.iter().map(|(k, _)| *k).collect()
    }

    async fn sign(
        &self,
        pubkey: BlsPubkey,
        req: SignRequest<Minimal>,
        signing_root: Root,
    ) -> Result<BlsSignature, SignError> {
        let index = self
            .keys
            .iter()
            .find(|(k, _)| *k == pubkey)
            .map(|(_, i)| *i)
            .ok_or_else(|| SignError::unknown_key("not ours"))?;
        let _ = req;
        Ok(BlsSignature(
            tbls::sign(&interop_secret(index), &signing_root.0).to_bytes(),
        ))
    }
}

fn lodestar_bin() -> PathBuf {
    PathBuf::from(std::env::var_os("LODESTAR_BIN").expect("LODESTAR_BIN must be set"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real Lodestar for a minute or two; the e2e remote-signer run covers it"]
async fn lodestar_vc_signs_every_type_through_the_web3signer_api() {
    let bin = lodestar_bin();
    let dir = tempfile::tempdir().unwrap();
    let genesis_time = now() + 12;
    let rest = free_port();
    let bn_url = format!("http://127.0.0.1:{rest}");
    let mut bn_cmd = Command::new(&bin);
    bn_cmd
        .current_dir(dir.path())
        .args(["dev", "--genesisValidators", &VALIDATORS.to_string()])
        .args(["--startValidators", &format!("0..{}", OURS[0] - 1)])
        .args(["--params.ALTAIR_FORK_EPOCH", "0"])
        .args(["--params.SECONDS_PER_SLOT", &SECONDS_PER_SLOT.to_string()])
        .args(["--params.SHARD_COMMITTEE_PERIOD", "0"])
        .args(["--genesisTime", &genesis_time.to_string()])
        .args(["--rest", "--rest.address", "127.0.0.1"])
        .args(["--rest.port", &rest.to_string()])
        .args(["--beaconNodes", &bn_url])
        .args(["--listenAddress", "127.0.0.1", "--port"])
        .arg(free_port().to_string())
        .args(["--discv5", "false", "--mdns", "false"])
        .args(["--dataDir", &dir.path().join("bn").to_string_lossy()])
        .arg("--reset");
    let bn = Proc::start(bn_cmd, dir.path().join("bn.log"));
    let client = BeaconClient::new(&bn_url).unwrap();
    let schedule = loop {
        match client.fork_schedule().await {
            Ok(s) => break s,
            Err(_) if now() < genesis_time + 30 => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(e) => panic!("beacon node never came up: {e}\n{}", bn.tail()),
        }
    };
    let genesis = client.genesis().await.unwrap();
    let spec = client.spec().await.unwrap();

    // The Web3Signer API; the first signed body of each type is kept.
    let recorder = Arc::new(Recorder {
        keys: OURS.iter().map(|&i| (pubkey(i), i)).collect(),
    });
    let api = Web3Signer::<Minimal>::new(Arc::new(schedule), recorder, Metrics::default());
    let seen = Arc::new(Mutex::new(BTreeMap::<String, Value>::new()));
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let app = {
        let seen = seen.clone();
        let refused = refused.clone();
        api.router::<()>().layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let seen = seen.clone();
                let refused = refused.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let bytes = axum::body::to_bytes(body, 8 << 20).await.unwrap();
                    let value = serde_json::from_slice::<Value>(&bytes).ok();
                    let path = parts.uri.path().to_owned();
                    let resp = next
                        .run(axum::extract::Request::from_parts(
                            parts,
                            axum::body::Body::from(bytes),
                        ))
                        .await;
                    if !resp.status().is_success() {
                        refused
                            .lock()
                            .unwrap()
                            .push(format!("{path}: {} {value:?}", resp.status()));
                    } else if let Some(v) = value {
                        if let Some(t) = v.get("type").and_then(Value::as_str) {
                            seen.lock().unwrap().entry(t.to_owned()).or_insert(v);
                        }
                    }
                    resp
                }
            },
        ))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let signer_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let keys: Vec<String> = OURS.iter().map(|&i| pubkey(i).to_string()).collect();
    let mut vc_cmd = Command::new(&bin);
    vc_cmd
        .args(["validator", "--beaconNodes", &bn_url])
        .args(["--dataDir", &dir.path().join("vc").to_string_lossy()])
        .args(["--externalSigner.url", &signer_url])
        .args(["--externalSigner.pubkeys", &keys.join(",")])
        .args(["--params.ALTAIR_FORK_EPOCH", "0"])
        .args(["--params.SECONDS_PER_SLOT", &SECONDS_PER_SLOT.to_string()])
        .args(["--params.SHARD_COMMITTEE_PERIOD", "0"]);
    let vc = Proc::start(vc_cmd, dir.path().join("vc.log"));

    let wanted = [
        SignType::AggregationSlot,
        SignType::AggregateAndProof,
        SignType::Attestation,
        SignType::BlockV2,
        SignType::RandaoReveal,
        SignType::SyncCommitteeMessage,
        SignType::SyncCommitteeSelectionProof,
        SignType::SyncCommitteeContributionAndProof,
    ];
    let deadline = genesis_time + MAX_SLOTS * SECONDS_PER_SLOT;
    loop {
        let missing: Vec<SignType> = {
            let seen = seen.lock().unwrap();
            wanted
                .iter()
                .filter(|t| !seen.contains_key(t.as_str()))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            now() < deadline,
            "types never signed: {missing:?}\nrefused: {:?}\nVC log:\n{}",
            refused.lock().unwrap(),
            vc.tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let refused = refused.lock().unwrap().clone();
    assert!(
        refused.is_empty(),
        "requests refused: {refused:?}\n{}",
        vc.tail()
    );

    if let Some(path) = std::env::var_os("WEB3SIGNER_RECORD") {
        let seen = seen.lock().unwrap();
        let requests: Vec<Value> = seen.values().cloned().collect();
        let fixture = json!({
            "recorded_with": "node/tests/web3signer_lodestar.rs (Lodestar v1.5.1 validator client, minimal preset, Altair at genesis)",
            "genesis": genesis,
            "spec": spec,
            "pubkeys": keys,
            "requests": requests,
        });
        std::fs::write(
            Path::new(&path),
            serde_json::to_vec_pretty(&fixture).unwrap(),
        )
        .unwrap();
    }
    drop(vc);
    drop(bn);
}
