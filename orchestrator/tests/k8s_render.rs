//! `dvlab k8s render`: golden manifests, one Chaos Mesh object per fault of the Docker timeline,
//! key material that a dvnode and a validator client accept, and errors naming the fault and
//! its line. (Schema validation of every devnet's manifests: `make k8s-validate`.)

use dvlab::data::Effect;
use dvlab::faults;
use dvlab::genesis;
use dvlab::k8s::{self, chaos, keys, RenderOptions, Rendered};
use dvlab::spec::DevnetSpec;
use dvnode::cluster::lock::ClusterLock;
use dvnode::keys::keystore::Keystore;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A fixed clock: renders are deterministic apart from key material.
const NOW: u64 = 1_700_000_000;

fn devnet(name: &str) -> (DevnetSpec, String, String) {
    let path = format!("{}/../devnets/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let spec = DevnetSpec::parse(&text, &format!("devnets/{name}.yaml")).unwrap();
    (spec, format!("devnets/{name}.yaml"), text)
}

fn render(name: &str) -> Rendered {
    let (spec, path, text) = devnet(name);
    k8s::render(&spec, &path, &text, NOW, &RenderOptions::default()).unwrap()
}

fn file<'a>(r: &'a Rendered, name: &str) -> &'a [Value] {
    &r.files.iter().find(|(n, _)| *n == name).unwrap().1
}

/// Compares `text` with `tests/golden/NAME`; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, text: &str) {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        want == text,
        "{} differs from the rendering (UPDATE_GOLDEN=1 rewrites it); first difference at line {}",
        path.display(),
        want.lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .map_or(want.lines().count().min(text.lines().count()) + 1, |i| i
                + 1)
    );
}

#[test]
fn chaos_mix_manifests_match_golden() {
    let r = render("chaos-mix");
    for name in [
        "00-namespace.yaml",
        "20-services.yaml",
        "30-workloads.yaml",
        "40-faults.yaml",
    ] {
        golden(
            &format!("k8s-chaos-mix/{name}"),
            &k8s::to_yaml(file(&r, name)).unwrap(),
        );
    }
}

#[test]
fn one_chaos_object_per_fault_of_the_docker_timeline() {
    let (spec, ..) = devnet("chaos-mix");
    let r = render("chaos-mix");
    // The Docker backend's timeline of the same plan (same seed, same genesis).
    let docker = faults::timeline(&spec, &r.plan).unwrap();
    assert_eq!(r.timeline, docker);
    assert_eq!(r.chaos.len(), docker.faults.len());
    let crashes = docker
        .faults
        .iter()
        .filter(|f| matches!(f.effect, Effect::Crash { .. }))
        .count();
    assert!(crashes >= 2, "chaos-mix draws several crashes: {crashes}");
    for (f, o) in docker.faults.iter().zip(&r.chaos) {
        let a = o.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[chaos::FAULT_ANNOTATION], f.id.to_string());
        assert_eq!(a[chaos::START_ANNOTATION], format!("{:.3}", f.start));
        assert_eq!(
            a.get(chaos::END_ANNOTATION),
            f.end.map(|e| format!("{e:.3}")).as_ref()
        );
        assert!(a[chaos::SOURCE_ANNOTATION].starts_with("devnets/chaos-mix.yaml:"));
        let spec = &o.spec;
        match &f.effect {
            Effect::Crash { target } => {
                assert_eq!(o.kind, "PodChaos");
                assert_eq!(spec["action"], "container-kill");
                assert_eq!(spec["containerNames"][0], "dvnode");
                assert_eq!(
                    spec["selector"]["expressionSelectors"][0]["values"][0],
                    target.as_str()
                );
            }
            Effect::Latency { .. } => {
                assert_eq!(o.kind, "NetworkChaos");
                assert_eq!(spec["action"], "delay");
                assert_eq!(spec["delay"]["latency"], "100ms");
                // A link: both directions between the two ends.
                assert_eq!(spec["direction"], "both");
                assert_eq!(
                    spec["target"]["selector"]["expressionSelectors"][0]["values"][0],
                    "dv0-2"
                );
                assert_eq!(spec["duration"], "96s"); // 3 epochs of 8 slots of 4 s
            }
            Effect::Loss { percent, .. } => {
                assert_eq!(spec["action"], "loss");
                assert_eq!(spec["loss"]["loss"], percent.to_string());
                assert_eq!(spec["direction"], "to");
                assert!(spec.get("target").is_none());
            }
            e => panic!("unexpected fault {e:?}"),
        }
    }
    // The fault timer's ConfigMap carries exactly these objects.
    let cm = file(&r, "40-faults.yaml")
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .unwrap();
    assert_eq!(cm["data"].as_object().unwrap().len(), r.chaos.len());
    for o in &r.chaos {
        let text = cm["data"][k8s::chaos_file(o)].as_str().unwrap();
        let back: Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(back, serde_json::to_value(o).unwrap());
    }
}

#[test]
fn every_kind_maps_and_a_partition_of_three_groups_takes_two_objects() {
    let (_, path, _) = devnet("basic");
    let faults = "faults:
  - {at: epoch 2, kind: partition, groups: [[dv0-0], [dv0-1], [dv0-2, dv0-3]], for: 1 epoch}
  - {at: epoch 2, kind: partition, isolate: bn1, for: 1 epoch}
  - {at: epoch 3, kind: bandwidth, targets: [dv0-1], rate: 1mbit, for: 1 epoch}
  - {at: epoch 3, kind: stop, target: dv0-2, restart_after: 2 slots}
  - {at: epoch 3, kind: pause, target: dv0-3, for: 2 slots}
  - {at: epoch 4, kind: clock_skew, target: dv0-0, offset: -1500ms, for: 1 epoch}
  - {at: epoch 4, kind: random_stop, targets: [dv0-1, dv0-2], rate: 1, restart_after: 1 slot, for: 2 epochs}
";
    let text = std::fs::read_to_string(format!(
        "{}/../devnets/basic.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace("faults: []\n", faults);
    let spec = DevnetSpec::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    let r = k8s::render(&spec, &path, &text, NOW, &RenderOptions::default()).unwrap();
    let kinds: Vec<(String, &str, String)> = r
        .chaos
        .iter()
        .map(|o| {
            (
                o.metadata.annotations.as_ref().unwrap()[chaos::FAULT_ANNOTATION].clone(),
                o.kind,
                o.spec
                    .get("action")
                    .and_then(Value::as_str)
                    .unwrap_or("time")
                    .to_string(),
            )
        })
        .collect();
    // Fault 1: three groups → the two smaller ones are cut from all others.
    assert_eq!(kinds[0], ("1".into(), "NetworkChaos", "partition".into()));
    assert_eq!(kinds[1], ("1".into(), "NetworkChaos", "partition".into()));
    assert_eq!(kinds[2], ("2".into(), "NetworkChaos", "partition".into()));
    assert_eq!(kinds[3], ("3".into(), "NetworkChaos", "bandwidth".into()));
    assert_eq!(kinds[4], ("4".into(), "PodChaos", "pod-failure".into()));
    assert_eq!(kinds[5], ("5".into(), "PodChaos", "pod-failure".into()));
    assert_eq!(kinds[6], ("6".into(), "TimeChaos", "time".into()));
    assert!(kinds[7..].iter().all(|k| k.2 == "pod-failure"));
    assert_eq!(kinds.len() - 7, r.timeline.faults.len() - 6);
    let isolate = &r.chaos[2].spec;
    assert_eq!(
        isolate["selector"]["expressionSelectors"][0]["values"],
        serde_json::json!(["bn1"])
    );
    assert_eq!(
        isolate["target"]["selector"]["expressionSelectors"][0]["values"]
            .as_array()
            .unwrap()
            .len(),
        spec.container_names().len() - 1
    );
    assert_eq!(r.chaos[3].spec["bandwidth"]["rate"], "1000000bit");
    assert_eq!(r.chaos[4].spec["duration"], "8s");
    assert_eq!(r.chaos[6].spec["timeOffset"], "-1500ms");
    assert_eq!(r.chaos[6].spec["clockIds"][0], "CLOCK_REALTIME");
}

#[test]
fn a_fault_chaos_mesh_cannot_express_names_the_fault_and_line() {
    let (_, path, text) = devnet("basic");
    let text = text.replace(
        "faults: []\n",
        "faults:\n  - {at: epoch 3, kind: latency, targets: [dv0-1], delay: 50ms, for: 1 epoch}\n  - {at: epoch 4, kind: crash, target: dv0-2}\n",
    );
    let spec = DevnetSpec::parse(&text, &path).unwrap();
    let err = match k8s::render(&spec, &path, &text, NOW, &RenderOptions::default()) {
        Ok(_) => panic!("a crash without restart_after rendered"),
        Err(e) => format!("{e:#}"),
    };
    let line = text
        .lines()
        .position(|l| l.contains("kind: crash"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("devnets/basic.yaml:{line}: faults[1]")),
        "{err}"
    );
    assert!(err.contains("crash without `restart_after`"), "{err}");
}

fn secret_files(r: &Rendered, name: &str) -> Vec<(String, Vec<u8>)> {
    let s = file(r, "10-secrets.yaml")
        .iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Secret {name}"));
    assert_eq!(s["metadata"]["labels"]["dvlab.run"], "basic");
    // The typed Secret decodes `data` (base64).
    let secret: Secret = serde_json::from_value(s.clone()).unwrap();
    secret
        .data
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

#[test]
fn key_secrets_hold_a_lock_with_dns_addresses_and_shares_the_vc_can_decrypt() {
    let r = render("basic");
    let node = secret_files(&r, "dvlab-basic-dv0-2-keys");
    let get = |files: &[(String, Vec<u8>)], k: &str| {
        files
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| {
                panic!(
                    "no {k} in {:?}",
                    files.iter().map(|f| &f.0).collect::<Vec<_>>()
                )
            })
            .1
            .clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("cluster-lock.json");
    std::fs::write(&lock_path, get(&node, "cluster-lock.json")).unwrap();
    let cluster = ClusterLock::load(&lock_path).unwrap();
    let lock = &cluster.lock;
    let addrs: Vec<_> = lock
        .content
        .operators
        .iter()
        .map(|o| o.address.clone().unwrap())
        .collect();
    assert_eq!(
        addrs,
        (0..4)
            .map(|i| format!("/dns4/dvlab-basic-dv0-{i}/tcp/3610"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        lock.content.genesis_validators_root,
        genesis::interop_genesis_validators_root(64).to_string()
    );
    assert_eq!(lock.content.fork_version, "0x00000001");
    assert!(node.iter().any(|(k, _)| k == "p2p-key"));
    // The validator client's keystores decrypt with its password to node 2's shares.
    let vc = secret_files(&r, "dvlab-basic-dv0-2-vc-keys");
    let password = String::from_utf8(get(&vc, "password.txt")).unwrap();
    let mut shares = 0;
    for (k, bytes) in &vc {
        if !k.starts_with("keystores.") {
            continue;
        }
        let p = dir.path().join(k);
        std::fs::write(&p, bytes).unwrap();
        let sk = Keystore::from_file(&p).unwrap().decrypt(&password).unwrap();
        let pk = format!("0x{}", hex::encode(sk.sk_to_pk().to_bytes()));
        assert!(
            lock.content
                .distributed_validators
                .iter()
                .any(|dv| dv.public_shares[2] == pk),
            "keystore {k} is not a share of node 2"
        );
        shares += 1;
    }
    assert_eq!(shares, 8);
    // The pods mount them where the plan's commands expect them.
    let sts = file(&r, "30-workloads.yaml");
    let dvnode = sts
        .iter()
        .find(|o| o["metadata"]["name"] == "dvlab-basic-dv0-2")
        .unwrap();
    let items = &dvnode["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "keys")
        .unwrap()["secret"];
    assert_eq!(items["secretName"], "dvlab-basic-dv0-2-keys");
    assert!(items["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["path"] == "validator_keys/keystore-0.json"));
    assert_eq!(keys::dns_address("dvlab-basic-dv0-1"), addrs[1]);
}

#[test]
fn written_directory_has_owner_only_secrets_and_one_file_per_stage() {
    let r = render("chaos-mix");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stale.yaml"), "old").unwrap();
    k8s::write(&r, dir.path()).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "00-namespace.yaml",
            "10-secrets.yaml",
            "20-services.yaml",
            "30-workloads.yaml",
            "40-faults.yaml"
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("10-secrets.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Every object carries the run label.
    for (_, objects) in &r.files {
        for o in objects {
            assert_eq!(o["metadata"]["labels"]["dvlab.run"], "chaos-mix", "{o}");
        }
    }
}

#[test]
fn remote_signer_validator_clients_get_no_key_material() {
    let r = render("remote-signer");
    let secrets: Vec<&str> = file(&r, "10-secrets.yaml")
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    // One Secret per dvnode (its node directory), none for the VCs.
    assert_eq!(secrets.len(), 4, "{secrets:?}");
    assert!(
        secrets.iter().all(|n| !n.ends_with("-vc-keys")),
        "{secrets:?}"
    );
    let vcs: Vec<&Value> = file(&r, "30-workloads.yaml")
        .iter()
        .filter(|o| o["metadata"]["labels"]["dvlab.role"] == "dv-vc")
        .collect();
    assert_eq!(vcs.len(), 4);
    for vc in vcs {
        let pod = &vc["spec"]["template"]["spec"];
        assert!(
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v.get("secret").is_none()),
            "{pod}"
        );
        let init: Vec<&str> = pod["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(init, ["wait-for-dvnode"]);
        let args = pod["containers"][0]["args"].to_string();
        assert!(args.contains("--externalSigner.fetch"), "{args}");
    }
}

#[test]
fn library_scenarios_chaos_mesh_cannot_express_are_refused_naming_fault_and_line() {
    // `make k8s-validate` checks that these renders fail; here, that the error says why and where.
    for (name, why) in [
        ("one-way-loss", "a loss with `to` is one-way"),
        ("bn-errors", "bn_errors answers errors to `dv0-3` only"),
    ] {
        let (spec, path, text) = devnet(name);
        let err = match k8s::render(&spec, &path, &text, NOW, &RenderOptions::default()) {
            Ok(_) => panic!("{name} rendered"),
            Err(e) => format!("{e:#}"),
        };
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with("- {at:"))
            .unwrap()
            + 1;
        assert!(
            err.contains(&format!("devnets/{name}.yaml:{line}: faults[0]")),
            "{err}"
        );
        assert!(
            err.contains(why) && err.contains("Chaos Mesh cannot"),
            "{err}"
        );
    }
}

#[test]
fn namespace_and_image_registry_reach_every_object() {
    let (spec, path, text) = devnet("chaos-mix");
    let options = RenderOptions {
        namespace: Some("lab-7".into()),
        image_registry: Some("registry.example:5000".into()),
        genesis_delay: None,
    };
    let r = k8s::render(&spec, &path, &text, NOW, &options).unwrap();
    assert_eq!(r.namespace, "lab-7");
    // Every `image` and `namespace` field anywhere, the Chaos Mesh selectors' `namespaces`
    // included (also inside the fault timer's ConfigMap).
    fn walk(v: &Value, images: &mut Vec<String>, namespaces: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("image", Value::String(s)) => images.push(s.clone()),
                        ("namespace", Value::String(s)) => namespaces.push(s.clone()),
                        ("namespaces", Value::Array(a)) => {
                            namespaces.extend(a.iter().map(|s| s.as_str().unwrap().to_string()))
                        }
                        _ => walk(x, images, namespaces),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, images, namespaces)),
            Value::String(s) if s.contains("apiVersion: chaos-mesh.org") => {
                walk(&serde_yaml::from_str(s).unwrap(), images, namespaces)
            }
            _ => {}
        }
    }
    let (mut images, mut namespaces) = (Vec::new(), Vec::new());
    let mut objects = 0;
    for (file, objs) in &r.files {
        for o in objs {
            objects += 1;
            if o["kind"] == "Namespace" {
                assert_eq!(o["metadata"]["name"], "lab-7");
            } else {
                assert_eq!(o["metadata"]["namespace"], "lab-7", "{file}: {o}");
            }
            assert_eq!(o["metadata"]["labels"]["dvlab.run"], "chaos-mix", "{o}");
            // Key material only in Secrets: the one ConfigMap is the fault timer's.
            if o["kind"] == "ConfigMap" {
                assert_eq!(o["metadata"]["name"], "dvlab-faults");
                let text = o["data"].to_string();
                assert!(
                    !["keystore", "crypto", "password", "p2p-key"]
                        .iter()
                        .any(|k| text.contains(k)),
                    "{text}"
                );
            }
            walk(o, &mut images, &mut namespaces);
        }
    }
    assert!(objects > 20);
    // Containers, init containers and the fault timer: dvnode, Lodestar and dvlab images.
    for image in ["/dvlab/dvnode:", "/dvlab/lodestar:", "/dvlab/dvlab:"] {
        assert!(
            images.iter().any(|i| i.contains(image)),
            "{image}: {images:?}"
        );
    }
    assert!(
        images
            .iter()
            .all(|i| i.starts_with("registry.example:5000/dvlab/")),
        "{images:?}"
    );
    assert!(namespaces.iter().all(|n| n == "lab-7"), "{namespaces:?}");
    assert!(namespaces.len() > objects, "selectors were walked");
}

#[test]
fn bn_latency_delays_what_the_dvnodes_beacon_node_sends_it() {
    let r = render("bn-latency");
    assert_eq!(r.chaos.len(), 1);
    let o = &r.chaos[0];
    assert_eq!(
        (o.kind, &o.spec["action"]),
        ("NetworkChaos", &"delay".into())
    );
    assert_eq!(o.spec["delay"]["latency"], "5s");
    assert_eq!(o.spec["direction"], "to");
    assert_eq!(
        o.spec["target"]["selector"]["expressionSelectors"][0]["values"],
        serde_json::json!(["dv0-3"])
    );
    // The selected pod is the beacon node dv0-3 talks to.
    let bn = o.spec["selector"]["expressionSelectors"][0]["values"][0]
        .as_str()
        .unwrap();
    let dv = r
        .plan
        .containers
        .iter()
        .find(|c| c.name == "dvlab-bn-latency-dv0-3")
        .unwrap();
    assert!(
        dv.cmd
            .iter()
            .any(|a| a.contains(&format!("http://dvlab-bn-latency-{bn}:9596"))),
        "{bn}: {:?}",
        dv.cmd
    );
}

/// The pod spec of a Job or StatefulSet.
fn pod_spec(o: &Value) -> &Value {
    &o["spec"]["template"]["spec"]
}

fn by_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Names of the Secrets a pod spec mounts.
fn mounted_secrets(pod: &Value) -> Vec<String> {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str().map(String::from))
        .collect()
}

#[test]
fn dkg_manifests_match_golden() {
    let r = render("dkg");
    golden(
        "k8s-dkg/15-dkg.yaml",
        &k8s::to_yaml(file(&r, "15-dkg.yaml")).unwrap(),
    );
}

/// devnets/dkg.yaml: the ceremony as once-Jobs running the plan's command lines, each
/// operator's keys only in its own pods and Secrets (none rendered: the ceremony writes them),
/// the genesis Job reading the public outputs, beacon nodes unpacking its state, least RBAC.
#[test]
fn a_dkg_cluster_renders_its_ceremony_as_once_jobs_from_the_plan() {
    let r = render("dkg");
    let names: Vec<&str> = r.files.iter().map(|(n, _)| *n).collect();
    // No Secret at render time: no key material exists before the ceremony.
    assert_eq!(
        names,
        [
            "00-namespace.yaml",
            "15-dkg.yaml",
            "20-services.yaml",
            "30-workloads.yaml"
        ]
    );
    let all: Vec<Value> = r.files.iter().flat_map(|(_, o)| o.clone()).collect();
    assert!(by_kind(&all, "Secret").is_empty() && by_kind(&all, "ConfigMap").is_empty());
    for o in &all {
        assert_eq!(o["metadata"]["labels"]["dvlab.run"], "dkg", "{o}");
        assert_eq!(
            o["metadata"]["namespace"].as_str().unwrap_or("dvlab-dkg"),
            "dvlab-dkg"
        );
    }
    let cluster = &r.plan.clusters[0];
    let dkg = cluster.dkg.as_ref().unwrap();
    let objects = file(&r, "15-dkg.yaml");
    let jobs = by_kind(objects, "Job");
    assert_eq!(jobs.len(), 6, "setup, 4 ceremonies, genesis");
    // The setup Job runs the plan's setup script, then publishes each operator's input.
    let setup = pod_spec(named(objects, "Job", "dvlab-dkg-dkg-setup-dv0"));
    assert_eq!(
        setup["initContainers"][0]["command"][2],
        dkg.setup_script.as_str()
    );
    assert_eq!(setup["initContainers"][0]["image"], "dvlab/dvnode:latest");
    let args: Vec<&str> = setup["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for n in 0..4 {
        assert!(args.contains(&format!("dvlab-dkg-dv0-{n}-dkg-input=/keys/dv0/node{n}").as_str()));
    }
    for (n, cer) in dkg.ceremony.iter().enumerate() {
        let job = named(objects, "Job", &cer.name);
        assert_eq!(job["spec"]["backoffLimit"], 0);
        let pod = pod_spec(job);
        assert_eq!(pod["restartPolicy"], "Never");
        // The plan's `dvnode dkg` command line, in the dvnode image.
        let dkg_c = &pod["initContainers"][1];
        assert_eq!(dkg_c["name"], "dkg");
        assert_eq!(dkg_c["args"], serde_json::to_value(&cer.cmd).unwrap());
        // Its own input only; its outputs into its own Secrets and ConfigMap.
        assert_eq!(mounted_secrets(pod), [format!("{}-input", cer.name)]);
        let publish = serde_json::to_string(&pod["containers"][0]["args"]).unwrap();
        assert!(
            publish.contains(&format!("dvlab-dkg-dv0-{n}-keys=/node")),
            "{publish}"
        );
        assert!(publish.contains(&format!("dvlab-dkg-dv0-{n}-vc-keys=/node/validator_keys")));
        assert!(publish.contains(&format!("{}-public=/node/cluster-lock.json,", cer.name)));
        for other in (0..4).filter(|m| *m != n) {
            assert!(!publish.contains(&format!("dv0-{other}")), "{publish}");
        }
        // The API token only in the publishing container, not in `dvnode dkg`'s.
        assert_eq!(pod["automountServiceAccountToken"], false);
        let token = |c: &Value| {
            c["volumeMounts"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["name"] == "api-token"))
        };
        assert!(token(&pod["containers"][0]));
        assert!(pod["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| !token(c)));
        // Its headless Service gives the peers' `/dns4/<ceremony>` address.
        let svc = named(objects, "Service", &cer.name);
        assert_eq!(svc["spec"]["clusterIP"], "None");
        assert_eq!(svc["spec"]["ports"][0]["port"], 3610);
        let sel = svc["spec"]["selector"].as_object().unwrap();
        for (k, v) in sel {
            assert_eq!(&job["spec"]["template"]["metadata"]["labels"][k], v);
        }
        assert!(dkg_c["args"]
            .to_string()
            .contains(&format!("/dns4/{}/tcp/3610", cer.name)));
    }
    // The dvnode and its VC mount exactly that node's Secrets, with the files dvnode dkg and
    // the re-encryption write.
    let workloads = file(&r, "30-workloads.yaml");
    for n in 0..4 {
        let dv = pod_spec(named(
            workloads,
            "StatefulSet",
            &format!("dvlab-dkg-dv0-{n}"),
        ));
        assert_eq!(mounted_secrets(dv), [format!("dvlab-dkg-dv0-{n}-keys")]);
        let items: Vec<&str> = dv["volumes"][1]["secret"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["path"].as_str().unwrap())
            .collect();
        assert_eq!(items, k8s::dkg::node_files(8));
        let vc = pod_spec(named(
            workloads,
            "StatefulSet",
            &format!("dvlab-dkg-dv0-{n}-vc"),
        ));
        assert_eq!(mounted_secrets(vc), [format!("dvlab-dkg-dv0-{n}-vc-keys")]);
    }
    // Beacon nodes start from the genesis Job's state.
    for bn in ["dvlab-dkg-bn0", "dvlab-dkg-bn1"] {
        let pod = pod_spec(named(workloads, "StatefulSet", bn));
        assert_eq!(pod["initContainers"][0]["name"], "unpack-genesis");
        let vols = pod["volumes"].to_string();
        assert!(
            vols.contains("\"configMap\":{\"name\":\"dvlab-genesis\"}"),
            "{vols}"
        );
        let args = pod["containers"][0]["args"].to_string();
        assert!(
            args.contains("\"--genesisStateFile\",\"/genesis/genesis.ssz\""),
            "{args}"
        );
    }
    // The genesis Job: the ceremony's public outputs of the plan's indices.
    let genesis = pod_spec(named(objects, "Job", "dvlab-genesis"));
    let args: Vec<String> =
        serde_json::from_value(genesis["containers"][0]["args"].clone()).unwrap();
    let at = args.iter().position(|a| a == "--cluster").unwrap();
    let outputs: k8s::dkg::CeremonyOutputs = args[at + 1].parse().unwrap();
    assert_eq!(outputs.indices, cluster.indices);
    assert_eq!(outputs.config_maps.len(), 4);
    assert!(args.contains(&r.plan.genesis_time.to_string()));
    // RBAC: create Secrets/ConfigMaps for the ceremony's publishers; the genesis Job reads
    // ConfigMaps by name only; nobody may read, list or change a Secret.
    let roles = by_kind(objects, "Role");
    assert_eq!(roles.len(), 2);
    for role in &roles {
        for rule in role["rules"].as_array().unwrap() {
            let verbs = rule["verbs"].to_string();
            let secrets = rule["resources"].to_string().contains("secrets");
            assert!(!secrets || verbs == "[\"create\"]", "{rule}");
            if verbs.contains("get") {
                assert_eq!(rule["resourceNames"].as_array().unwrap().len(), 5, "{rule}");
            }
            assert!(!verbs.contains("list") && !verbs.contains("*") && !verbs.contains("delete"));
        }
    }
    assert_eq!(
        r.once_jobs
            .iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>(),
        jobs.iter()
            .map(|j| j["metadata"]["name"].as_str().unwrap())
            .collect::<Vec<_>>()
    );
}
