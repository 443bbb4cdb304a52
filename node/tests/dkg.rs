//! End-to-end tests of the distributed key generation through the real binary: `dvnode p2p-key
//! create`, `definition create|sign` and four `dvnode dkg` processes over loopback libp2p.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use dvnode::{
    cluster::deposit::DepositDataJson,
    cluster::ClusterLock,
    keys::{keystore::Keystore, tbls},
};

const N: usize = 4;
const T: usize = 3;
const K: usize = 3;

fn dvnode(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dvnode"))
        .args(args)
        .output()
        .expect("run dvnode")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "dvnode failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Node directories with p2p keys and a definition signed by every operator.
struct Setup {
    _tmp: tempfile::TempDir,
    nodes: Vec<PathBuf>,
    peer_ids: Vec<String>,
    definition: PathBuf,
}

fn setup(validators: usize) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let nodes: Vec<PathBuf> = (0..N)
        .map(|i| tmp.path().join(format!("node{i}")))
        .collect();
    let peer_ids: Vec<String> = nodes
        .iter()
        .map(|d| {
            ok(dvnode(&["p2p-key", "create", "--node-dir", s(d)]))
                .trim()
                .to_string()
        })
        .collect();
    let definition = tmp.path().join("cluster-definition.json");
    ok(dvnode(&[
        "definition",
        "create",
        "--name",
        "dkg-test",
        "--operators",
        &peer_ids.join(","),
        "--threshold",
        &T.to_string(),
        "--validators",
        &validators.to_string(),
        "--fork-version",
        "0x00000001",
        "--withdrawal-address",
        "0x000000000000000000000000000000000000dEaD",
        "--out",
        s(&definition),
    ]));
    for d in &nodes {
        ok(dvnode(&[
            "definition",
            "sign",
            "--definition",
            s(&definition),
            "--node-dir",
            s(d),
        ]));
    }
    Setup {
        _tmp: tmp,
        nodes,
        peer_ids,
        definition,
    }
}

/// `n` free loopback TCP multiaddresses.
fn free_addrs(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| format!("/ip4/127.0.0.1/tcp/{}", l.local_addr().unwrap().port()))
        .collect()
}

/// Starts `dvnode dkg` for every node; `extra[i]` are additional flags for node `i`.
fn start_all(setup: &Setup, extra: &[Vec<&str>]) -> Vec<Child> {
    start_some(setup, extra, N)
}

/// Starts `dvnode dkg` for nodes `0..count` of the `N` operators.
fn start_some(setup: &Setup, extra: &[Vec<&str>], count: usize) -> Vec<Child> {
    let addrs = free_addrs(N);
    let peers = addrs.join(",");
    (0..count)
        .map(|i| {
            let mut args = vec![
                "--log",
                "info",
                "dkg",
                "--definition",
                s(&setup.definition),
                "--node-dir",
                s(&setup.nodes[i]),
                "--p2p-listen",
                &addrs[i],
                "--p2p-peers",
                &peers,
                "--insecure-keys",
                "--connect-timeout",
                "30",
            ];
            args.extend(extra.get(i).cloned().unwrap_or_default());
            Command::new(env!("CARGO_BIN_EXE_dvnode"))
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn dvnode dkg")
        })
        .collect()
}

fn wait_all(children: Vec<Child>) -> Vec<Output> {
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn share(node: &Path, j: usize) -> tbls::SecretKey {
    let dir = node.join("validator_keys");
    let ks = Keystore::from_file(&dir.join(format!("keystore-{j}.json"))).unwrap();
    let pw = fs::read_to_string(dir.join(format!("keystore-{j}.txt"))).unwrap();
    ks.decrypt(pw.trim()).unwrap()
}

/// All `size`-element subsets of `0..n`.
fn subsets(n: usize, size: usize) -> Vec<Vec<usize>> {
    (0u32..1 << n)
        .filter(|m| m.count_ones() as usize == size)
        .map(|m| (0..n).filter(|i| m & (1 << i) != 0).collect())
        .collect()
}

#[test]
fn four_processes_generate_one_cluster() {
    let setup = setup(K);
    let outputs = wait_all(start_all(&setup, &[]));
    for (i, o) in outputs.iter().enumerate() {
        assert!(o.status.success(), "node {i} failed: {}", stderr(o));
    }

    // Identical locks (byte for byte) and deposit data on every node.
    let lock_bytes = fs::read(setup.nodes[0].join("cluster-lock.json")).unwrap();
    let deposit_bytes = fs::read(setup.nodes[0].join("deposit-data.json")).unwrap();
    for node in &setup.nodes[1..] {
        assert_eq!(
            fs::read(node.join("cluster-lock.json")).unwrap(),
            lock_bytes
        );
        assert_eq!(
            fs::read(node.join("deposit-data.json")).unwrap(),
            deposit_bytes
        );
    }
    // The lock is what `dvnode run` and dvlab load: same format and checks as create-cluster's.
    let cluster = ClusterLock::load(&setup.nodes[0].join("cluster-lock.json")).unwrap();
    assert_eq!(cluster.threshold, T);
    assert_eq!(cluster.validators.len(), K);
    let peers: Vec<String> = cluster.peers.iter().map(|p| p.to_string()).collect();
    assert_eq!(peers, setup.peer_ids);
    let definition: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&setup.definition).unwrap()).unwrap();
    assert_eq!(
        cluster.lock.content.definition_hash.as_deref(),
        definition["definition_hash"].as_str()
    );

    let deposits: Vec<DepositDataJson> = serde_json::from_slice(&deposit_bytes).unwrap();
    assert_eq!(deposits.len(), K);
    let msg = b"a signing root";
    for (j, dv) in cluster.validators.iter().enumerate() {
        let shares: Vec<tbls::SecretKey> = setup.nodes.iter().map(|n| share(n, j)).collect();
        for (i, sk) in shares.iter().enumerate() {
            assert_eq!(sk.sk_to_pk(), dv.public_shares[i], "validator {j} node {i}");
        }
        // The distributed public key is the Lagrange combination of any t public shares, and
        // any t decrypted shares sign for it; t − 1 do not.
        for subset in subsets(N, T) {
            let pubs: Vec<(u64, tbls::PublicKey)> = subset
                .iter()
                .map(|&i| (i as u64 + 1, dv.public_shares[i]))
                .collect();
            assert_eq!(tbls::combine_public_keys(&pubs, T).unwrap(), dv.pubkey);
            let partials: Vec<(u64, tbls::Signature)> = subset
                .iter()
                .map(|&i| (i as u64 + 1, tbls::sign(&shares[i], msg)))
                .collect();
            let sig = tbls::combine(&partials, T).unwrap();
            assert!(
                tbls::verify(&dv.pubkey, msg, &sig),
                "validator {j} {subset:?}"
            );
        }
        for subset in subsets(N, T - 1) {
            let partials: Vec<(u64, tbls::Signature)> = subset
                .iter()
                .map(|&i| (i as u64 + 1, tbls::sign(&shares[i], msg)))
                .collect();
            let sig = tbls::combine(&partials, T - 1).unwrap();
            assert!(
                !tbls::verify(&dv.pubkey, msg, &sig),
                "{subset:?} signed alone"
            );
        }
        // Each deposit signature verifies (and its roots match), for this validator's key and
        // the definition's withdrawal address and amount.
        let data = deposits[j].verify().unwrap();
        assert_eq!(data.pubkey.0, dv.pubkey.to_bytes());
        assert_eq!(
            hex::encode(data.withdrawal_credentials.0),
            "010000000000000000000000000000000000000000000000000000000000dead"
        );
        assert_eq!(data.amount, 32_000_000_000);
        assert_eq!(deposits[j].fork_version, "00000001");
    }
    // Rerunning on a directory with a cluster is refused.
    let again = wait_all(start_all(&setup, &[]));
    for o in &again {
        assert!(!o.status.success());
        assert!(stderr(o).contains("refusing to overwrite"), "{}", stderr(o));
    }
}

fn assert_no_outputs(setup: &Setup) {
    for (i, node) in setup.nodes.iter().enumerate() {
        for f in ["cluster-lock.json", "deposit-data.json", "validator_keys"] {
            assert!(!node.join(f).exists(), "node {i} has {f}");
        }
        let leftovers: Vec<_> = fs::read_dir(node)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|f| f != "p2p-key")
            .collect();
        assert!(leftovers.is_empty(), "node {i} left {leftovers:?}");
    }
}

#[test]
fn an_inconsistent_share_aborts_every_node_naming_its_dealer() {
    let setup = setup(2);
    let faulty = 1;
    let mut extra = vec![vec![]; N];
    extra[faulty] = vec!["--test-fault", "bad-share"];
    let outputs = wait_all(start_all(&setup, &extra));
    let culprit = format!("operator {faulty} ({})", setup.peer_ids[faulty]);
    for (i, o) in outputs.iter().enumerate() {
        let err = stderr(o);
        assert!(!o.status.success(), "node {i} succeeded");
        assert!(
            err.contains("DKG aborted, nothing was written"),
            "node {i}: {err}"
        );
        if i != faulty {
            assert!(
                err.contains(&culprit),
                "node {i} does not name {culprit}: {err}"
            );
        }
    }
    // The dealer's victim (the next node) proved it with the signed deal.
    let victim = stderr(&outputs[faulty + 1]);
    assert!(
        victim.contains("does not match the commitments"),
        "{victim}"
    );
    assert_no_outputs(&setup);
}

#[test]
fn a_node_killed_mid_ceremony_is_named_by_every_other_node() {
    let setup = setup(2);
    let victim = 2;
    let mut extra = vec![vec!["--round-timeout", "4"]; N];
    extra[victim].extend(["--test-fault", "stall-after-deal"]);
    let mut children = start_all(&setup, &extra);
    // Kill the victim once it has dealt (its log says it entered the deal round): it dies
    // mid-ceremony, after the others received its shares.
    let log = wait_for_line(&mut children[victim], "round=deal", Duration::from_secs(30));
    assert!(log.is_some(), "node {victim} never reached the deal round");
    // Let its deals reach the others, then SIGKILL it.
    std::thread::sleep(Duration::from_millis(500));
    children[victim].kill().unwrap();
    let outputs = wait_all(children);
    let culprit = format!("operator {victim} ({})", setup.peer_ids[victim]);
    for (i, o) in outputs.iter().enumerate().filter(|(i, _)| *i != victim) {
        let err = stderr(o);
        assert!(!o.status.success(), "node {i} succeeded");
        assert!(
            err.contains(&culprit),
            "node {i} does not name {culprit}: {err}"
        );
        assert!(err.contains("timed out"), "node {i}: {err}");
    }
    assert_no_outputs(&setup);
}

/// A node that dies while the ceremony still waits for an operator that never started (the
/// hello round, whose `--connect-timeout` is long): the others do not wait it out, they name
/// the dead node at once (its port refuses their redials) and abort.
#[test]
fn a_node_that_dies_while_waiting_for_operators_is_named_at_once() {
    let setup = setup(1);
    let victim = 2;
    // Operator 3 never starts: the ceremony cannot pass the hello round (30 s connect timeout).
    let mut children = start_some(&setup, &[], N - 1);
    // The victim reached both others (its p2p layer logs each connection) …
    let log = wait_for_lines(
        &mut children[victim],
        "peer connected",
        2,
        Duration::from_secs(30),
    );
    assert!(
        log.is_some(),
        "node {victim} never connected to both others"
    );
    // … then dies.
    let killed = Instant::now();
    children[victim].kill().unwrap();
    let outputs = wait_all(children);
    let waited = killed.elapsed();
    let culprit = format!("operator {victim} ({})", setup.peer_ids[victim]);
    let absent = format!("operator 3 ({}) [not connected]", setup.peer_ids[3]);
    for (i, o) in outputs.iter().enumerate().filter(|(i, _)| *i != victim) {
        let err = stderr(o);
        assert!(!o.status.success(), "node {i} succeeded");
        assert!(
            err.contains(&format!("{culprit} left the ceremony"))
                && err.contains("redialing it was refused"),
            "node {i} does not name {culprit} as gone: {err}"
        );
        assert!(err.contains(&absent), "node {i}: {err}");
        assert!(
            err.contains("DKG aborted, nothing was written"),
            "node {i}: {err}"
        );
    }
    // Detection ≤ 1 s after the refused redial, plus ≤ 2.5 s flushing the abort, not the 30 s
    // connect timeout (the messages above already show which path ended the wait).
    assert!(
        waited < Duration::from_secs(25),
        "the others took {waited:?} to abort"
    );
    assert_no_outputs(&setup);
}

/// Reads the child's stderr until a line contains `needle`; the rest of stderr is drained in a
/// thread so the child never blocks.
fn wait_for_line(child: &mut Child, needle: &str, timeout: Duration) -> Option<String> {
    wait_for_lines(child, needle, 1, timeout)
}

/// Reads the child's stderr until `count` lines contain `needle` (returns the last); the rest of
/// stderr is drained in a thread so the child never blocks.
fn wait_for_lines(
    child: &mut Child,
    needle: &str,
    count: usize,
    timeout: Duration,
) -> Option<String> {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        let mut found = 0;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if found < count && strip_ansi(&line).contains(&needle) {
                found += 1;
                if found == count {
                    let _ = tx.send(line);
                }
            }
        }
    });
    let deadline = Instant::now() + timeout;
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn unsigned_or_altered_definitions_are_refused() {
    let setup = setup(1);
    let addrs = free_addrs(N).join(",");
    let run = |def: &Path| {
        dvnode(&[
            "dkg",
            "--definition",
            s(def),
            "--node-dir",
            s(&setup.nodes[0]),
            "--p2p-peers",
            &addrs,
        ])
    };
    let text = fs::read_to_string(&setup.definition).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();

    let mut unsigned = json.clone();
    unsigned["operators"][2]
        .as_object_mut()
        .unwrap()
        .remove("signature");
    let path = setup.definition.with_file_name("unsigned.json");
    fs::write(&path, serde_json::to_string(&unsigned).unwrap()).unwrap();
    let err = stderr(&run(&path));
    assert!(
        err.contains("operators[2]")
            && err.contains(&setup.peer_ids[2])
            && err.contains("has not signed"),
        "{err}"
    );

    json["num_validators"] = 2.into();
    let path = setup.definition.with_file_name("altered.json");
    fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    let err = stderr(&run(&path));
    assert!(
        err.contains("definition_hash") && err.contains("altered"),
        "{err}"
    );
    assert_no_outputs(&setup);
}
