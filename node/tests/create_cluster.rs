//! End-to-end tests of `dvnode create-cluster` through the real binary.

use std::{fs, path::Path, process::Command};

use dvnode::{
    cluster::ClusterLock,
    keys::{interop::interop_secret, keystore::Keystore, tbls},
};

fn dvnode(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dvnode"))
        .args(args)
        .output()
        .expect("run dvnode")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Decrypts node `i`'s keystore `j` and returns the share.
fn share(out: &Path, i: usize, j: usize) -> tbls::SecretKey {
    let dir = out.join(format!("node{i}/validator_keys"));
    let ks = Keystore::from_file(&dir.join(format!("keystore-{j}.json"))).unwrap();
    let pw = fs::read_to_string(dir.join(format!("keystore-{j}.txt"))).unwrap();
    ks.decrypt(pw.trim()).unwrap()
}

#[test]
fn interop_cluster_layout_keys_and_signing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cluster");
    let o = dvnode(&[
        "create-cluster",
        "--nodes",
        "4",
        "--threshold",
        "3",
        "--interop-indices",
        "0..3",
        "--insecure-keys",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "create-cluster failed: {}", stderr(&o));

    let cluster = ClusterLock::load(&out.join("cluster-lock.json")).unwrap();
    assert_eq!(cluster.threshold, 3);
    assert_eq!(cluster.peers.len(), 4);
    assert_eq!(cluster.validators.len(), 3);
    let raw: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("cluster-lock.json")).unwrap()).unwrap();
    for key in [
        "threshold",
        "fork_version",
        "genesis_validators_root",
        "operators",
        "distributed_validators",
        "lock_hash",
    ] {
        assert!(raw.get(key).is_some(), "lock lacks {key}");
    }
    assert!(raw["operators"][0]["peer_id"].is_string());

    let msg = b"dvlab signing root";
    for (j, dv) in cluster.validators.iter().enumerate() {
        // The DV key is the interop key of index j (what `lodestar dev` uses).
        assert_eq!(
            dv.pubkey.to_bytes(),
            interop_secret(j as u64).sk_to_pk().to_bytes()
        );
        let mut partials = Vec::new();
        for i in 0..4 {
            let sk = share(&out, i, j);
            // Node i's keystore j holds the share whose pubkey is public_shares[i].
            assert_eq!(
                sk.sk_to_pk().to_bytes(),
                dv.public_shares[i].to_bytes(),
                "node {i} dv {j}"
            );
            partials.push(((i + 1) as u64, tbls::sign(&sk, msg)));
        }
        // Any 3 of the 4 partials combine to a signature of the DV key.
        for skip in 0..4 {
            let subset: Vec<_> = partials
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != skip)
                .map(|(_, p)| *p)
                .collect();
            let sig = tbls::combine(&subset, 3).unwrap();
            assert!(tbls::verify(&dv.pubkey, msg, &sig));
        }
    }
    for i in 0..4 {
        let node = out.join(format!("node{i}"));
        assert_eq!(
            fs::read(node.join("cluster-lock.json")).unwrap(),
            fs::read(out.join("cluster-lock.json")).unwrap()
        );
        let key = dvnode::p2p::key::load(&node.join("p2p-key")).unwrap();
        assert_eq!(dvnode::p2p::key::peer_id(&key), cluster.peers[i]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(node.join("p2p-key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "p2p-key must not be readable by others");
        }
    }

    // Refuses to overwrite an existing cluster.
    let o = dvnode(&[
        "create-cluster",
        "--nodes",
        "4",
        "--interop-indices",
        "0..1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
}

#[test]
fn split_existing_keystores_and_random_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let secrets: Vec<_> = (10..12).map(interop_secret).collect();
    for (k, sk) in secrets.iter().enumerate() {
        let ks = Keystore::encrypt(
            sk,
            "pässword",
            "m/12381/3600/0/0/0",
            dvnode::keys::keystore::KdfChoice::Insecure,
        )
        .unwrap();
        ks.to_file(&src.join(format!("keystore-{k}.json"))).unwrap();
    }
    fs::write(tmp.path().join("pw"), "pässword\n").unwrap();
    let out = tmp.path().join("c1");
    let o = dvnode(&[
        "create-cluster",
        "--nodes",
        "3",
        "--split-keystores",
        src.to_str().unwrap(),
        "--password-file",
        tmp.path().join("pw").to_str().unwrap(),
        "--insecure-keys",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = ClusterLock::load(&out.join("cluster-lock.json")).unwrap();
    assert_eq!(c.threshold, 2, "default threshold is ceil(2n/3)");
    for (j, sk) in secrets.iter().enumerate() {
        assert_eq!(c.validators[j].pubkey.to_bytes(), sk.sk_to_pk().to_bytes());
    }

    // Wrong password: clear error naming the keystore.
    fs::write(tmp.path().join("bad"), "nope").unwrap();
    let o = dvnode(&[
        "create-cluster",
        "--nodes",
        "3",
        "--split-keystores",
        src.to_str().unwrap(),
        "--password-file",
        tmp.path().join("bad").to_str().unwrap(),
        "--out",
        tmp.path().join("c2").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("keystore-0.json") && e.to_lowercase().contains("password"),
        "{e}"
    );

    let out = tmp.path().join("c3");
    let o = dvnode(&[
        "create-cluster",
        "--nodes",
        "5",
        "--threshold",
        "4",
        "--num-validators",
        "2",
        "--insecure-keys",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = ClusterLock::load(&out.join("cluster-lock.json")).unwrap();
    assert_eq!((c.peers.len(), c.threshold, c.validators.len()), (5, 4, 2));
    let sig = tbls::combine(
        &(0..4)
            .map(|i| ((i + 1) as u64, tbls::sign(&share(&out, i, 1), b"m")))
            .collect::<Vec<_>>(),
        4,
    )
    .unwrap();
    assert!(tbls::verify(&c.validators[1].pubkey, b"m", &sig));
}

#[test]
fn refuses_unsafe_or_malformed_input() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let o = out.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--nodes",
                "4",
                "--threshold",
                "2",
                "--interop-indices",
                "0..2",
            ],
            "unsafe",
        ),
        (
            &[
                "--nodes",
                "4",
                "--threshold",
                "5",
                "--interop-indices",
                "0..2",
            ],
            "exceeds",
        ),
        (
            &[
                "--nodes",
                "2",
                "--threshold",
                "2",
                "--interop-indices",
                "0..2",
            ],
            "at least 3",
        ),
        (&["--nodes", "4", "--interop-indices", "5..2"], "empty"),
        (
            &["--nodes", "4", "--interop-indices", "abc"],
            "invalid index range",
        ),
        (
            &[
                "--nodes",
                "4",
                "--interop-indices",
                "0..2",
                "--fork-version",
                "0x0102",
            ],
            "fork-version",
        ),
        (
            &[
                "--nodes",
                "4",
                "--split-keystores",
                "/nonexistent/dir",
                "--password-file",
                "/nonexistent/pw",
            ],
            "password file",
        ),
    ];
    for (args, want) in cases {
        let mut full = vec!["create-cluster", "--out", o];
        full.extend_from_slice(args);
        let r = dvnode(&full);
        assert!(!r.status.success(), "{args:?} should fail");
        assert!(
            stderr(&r).contains(want),
            "{args:?}: expected {want:?} in {:?}",
            stderr(&r)
        );
        assert!(
            !out.exists() || fs::read_dir(&out).unwrap().next().is_none(),
            "{args:?} left files behind"
        );
    }
}

#[test]
fn tampered_lock_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("c");
    let o = dvnode(&[
        "create-cluster",
        "--nodes",
        "3",
        "--interop-indices",
        "0..1",
        "--insecure-keys",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = fs::read_to_string(out.join("cluster-lock.json")).unwrap();

    // Reformatting does not matter.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    ClusterLock::parse(&serde_json::to_string(&v).unwrap()).unwrap();

    // Changing the threshold (content) breaks the hash.
    let mut bad = v.clone();
    bad["threshold"] = serde_json::json!(3);
    let e = format!("{:#}", ClusterLock::parse(&bad.to_string()).unwrap_err());
    assert!(e.contains("lock_hash mismatch"), "{e}");

    // Recomputing the hash without the operators' keys breaks the signatures.
    let mut lock: ClusterLock = serde_json::from_str(&text).unwrap();
    lock.content.threshold = 3;
    lock.lock_hash = format!("0x{}", hex::encode(lock.content.hash()));
    let e = format!("{:#}", lock.verify().unwrap_err());
    assert!(e.contains("does not verify"), "{e}");

    let e = format!(
        "{:#}",
        ClusterLock::parse("{\"threshold\": 3,").unwrap_err()
    );
    assert!(e.contains("line 1"), "{e}");
}
