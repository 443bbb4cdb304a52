//! The Kubernetes runner's API calls against an in-process API (a kube client over a tower
//! service): server-side apply of every rendered object in order at its resource path,
//! waiting for the run's StatefulSets, deleting only a namespace labelled for the run; the
//! run's liveness checks and output collection; `dvlab run --backend kubernetes` deleting the
//! run on Ctrl-C and on errors. (Port-forwards and exec are WebSocket upgrades a tower service
//! cannot answer: their requests are checked, their streams are not.)

use dvlab::k8s::{self, collect::Cluster, runner, RenderOptions};
use dvlab::pipeline::{self, Outcome};
use dvlab::plan::{Plan, Role};
use dvlab::spec::DevnetSpec;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
struct Call {
    method: String,
    uri: String,
    content_type: String,
    body: Value,
}

type Handler = dyn Fn(&Call, usize) -> (u16, Value) + Send + Sync;

fn client(calls: Arc<Mutex<Vec<Call>>>, handler: Arc<Handler>) -> kube::Client {
    let svc = tower::service_fn(move |req: Request<Body>| {
        let calls = calls.clone();
        let handler = handler.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let call = Call {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let n = calls.lock().unwrap().len();
            let (code, out) = handler(&call, n);
            calls.lock().unwrap().push(call);
            // A string is a text answer (pod logs).
            let body = match out {
                Value::String(text) => text.into_bytes(),
                v => serde_json::to_vec(&v).unwrap(),
            };
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(StatusCode::from_u16(code).unwrap())
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
        }
    });
    kube::Client::new(svc, "default")
}

fn render(name: &str) -> k8s::Rendered {
    let path = format!("{}/../devnets/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let spec = DevnetSpec::parse(&text, name).unwrap();
    k8s::render(&spec, name, &text, 1_700_000_000, &RenderOptions::default()).unwrap()
}

#[tokio::test]
async fn applies_every_object_server_side_in_file_order() {
    let r = render("chaos-mix");
    let calls = Arc::new(Mutex::new(Vec::new()));
    // The API answers an apply with the object.
    let c = client(
        calls.clone(),
        Arc::new(|call: &Call, _| (200, call.body.clone())),
    );
    let n = runner::apply_rendered(&c, &r).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let objects: Vec<&Value> = r.files.iter().flat_map(|(_, o)| o).collect();
    assert_eq!(n, objects.len());
    assert_eq!(calls.len(), objects.len());
    for (call, o) in calls.iter().zip(&objects) {
        assert_eq!(call.method, "PATCH");
        assert_eq!(call.content_type, "application/apply-patch+yaml");
        assert!(
            call.uri.contains("fieldManager=dvlab") && call.uri.contains("force=true"),
            "{}",
            call.uri
        );
        assert_eq!(call.body["metadata"], o["metadata"]);
        assert_eq!(call.body["kind"], o["kind"]);
    }
    let path = |i: usize| calls[i].uri.split('?').next().unwrap().to_string();
    assert_eq!(path(0), "/api/v1/namespaces/dvlab-chaos-mix");
    let find = |needle: &str| calls.iter().any(|c| c.uri.starts_with(needle));
    assert!(find(
        "/api/v1/namespaces/dvlab-chaos-mix/secrets/dvlab-chaos-mix-dv0-0-keys?"
    ));
    assert!(find(
        "/api/v1/namespaces/dvlab-chaos-mix/services/dvlab-chaos-mix-bn0?"
    ));
    assert!(find(
        "/apis/apps/v1/namespaces/dvlab-chaos-mix/statefulsets/dvlab-chaos-mix-dv0-3-vc?"
    ));
    assert!(find(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/dvlab-chaos-mix/roles/dvlab-faults?"
    ));
    assert!(find(
        "/apis/batch/v1/namespaces/dvlab-chaos-mix/jobs/dvlab-faults?"
    ));
    // Chaos Mesh objects are the fault timer's to create, at their start.
    assert!(!calls.iter().any(|c| c.uri.contains("chaos-mesh.org")));
}

fn sts(name: &str, ready: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": name, "namespace": "ns"},
           "spec": {"replicas": 1, "serviceName": name,
                    "selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}},
           "status": {"replicas": 1, "readyReplicas": ready}})
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSetList", "metadata": {}, "items": items})
}

#[tokio::test]
async fn waits_until_every_statefulset_of_the_run_is_ready() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = client(
        calls.clone(),
        Arc::new(|_: &Call, n| {
            // Ready from the third poll on.
            (
                200,
                list(vec![sts("bn0", 1), sts("dv0-0", i32::from(n >= 2))]),
            )
        }),
    );
    runner::wait_ready(&c, "ns", "basic", Duration::from_secs(30))
        .await
        .unwrap();
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 3);
    assert!(calls[0]
        .uri
        .starts_with("/apis/apps/v1/namespaces/ns/statefulsets?"));
    assert!(
        calls[0].uri.contains("labelSelector=dvlab.run%3Dbasic"),
        "{}",
        calls[0].uri
    );
}

#[tokio::test]
async fn names_what_is_not_ready_at_the_deadline() {
    let c = client(
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(|_: &Call, _| (200, list(vec![sts("bn0", 1), sts("dv0-1", 0)]))),
    );
    let err = runner::wait_ready(&c, "ns", "basic", Duration::from_millis(10))
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("dv0-1") && !msg.contains("bn0"), "{msg}");
}

fn namespace(label: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": "dvlab-basic", "labels": {"dvlab.run": label}}})
}

#[tokio::test]
async fn deletes_only_the_namespace_labelled_for_the_run() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = client(
        calls.clone(),
        Arc::new(|call: &Call, _| match call.method.as_str() {
            "GET" => (200, namespace("basic")),
            _ => (200, namespace("basic")),
        }),
    );
    assert!(runner::delete_run(&c, "dvlab-basic", "basic")
        .await
        .unwrap());
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].method, "DELETE");
    assert_eq!(
        calls[1].uri.split('?').next().unwrap(),
        "/api/v1/namespaces/dvlab-basic"
    );
    assert_eq!(calls[1].body["propagationPolicy"], "Foreground");

    let other = Arc::new(Mutex::new(Vec::new()));
    let c = client(
        other.clone(),
        Arc::new(|_: &Call, _| (200, namespace("someone-else"))),
    );
    let err = runner::delete_run(&c, "dvlab-basic", "basic")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("not labelled dvlab.run=basic"));
    assert!(other.lock().unwrap().iter().all(|c| c.method == "GET"));

    let gone = Arc::new(Mutex::new(Vec::new()));
    let c = client(
        gone.clone(),
        Arc::new(|_: &Call, _| {
            (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404, "message": "not found"}),
            )
        }),
    );
    assert!(!runner::delete_run(&c, "dvlab-basic", "basic")
        .await
        .unwrap());
}

/// A pod of the run per planned workload, each container running with `restarts`, but
/// `down` (pod name) terminated with exit code 137.
fn pods(plan: &Plan, down: Option<&str>, restarts: i32) -> Value {
    let items: Vec<Value> = plan
        .containers
        .iter()
        .filter(|c| c.role != Role::Prometheus)
        .map(|c| {
            let name = k8s::collect::pod_name(c);
            let state = if Some(name.as_str()) == down {
                json!({"terminated": {"exitCode": 137, "reason": "Error"}})
            } else {
                json!({"running": {}})
            };
            json!({"metadata": {"name": name, "labels": {"dvlab.run": plan.run}},
                   "status": {"phase": "Running", "containerStatuses": [{
                       "name": k8s::objects::container_name(c), "image": c.image, "imageID": "",
                       "ready": true, "restartCount": restarts, "state": state}]}})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
}

#[tokio::test]
async fn a_workload_down_or_restarted_fails_the_check_unless_a_fault_intends_it() {
    let plan = render("chaos-mix").plan;
    let dv1 = "dvlab-chaos-mix-dv0-1";
    let answer = |down: Option<&'static str>, restarts: i32| {
        let plan = plan.clone();
        Arc::new(move |call: &Call, _: usize| {
            if call.uri.contains("/log?") {
                (200, json!("line 1\nslot 40: fatal: out of memory\n"))
            } else {
                (200, pods(&plan, down, restarts))
            }
        })
    };
    // All running.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut cl = Cluster::new(client(calls.clone(), answer(None, 0)), "ns");
    cl.check_alive(&plan, &[]).await.unwrap();
    let uri = calls.lock().unwrap()[0].uri.clone();
    assert!(
        uri.starts_with("/api/v1/namespaces/ns/pods?")
            && uri.contains("labelSelector=dvlab.run%3Dchaos-mix"),
        "{uri}"
    );

    // One dvnode's container terminated: named, with its exit code and last log lines.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut cl = Cluster::new(
        client(calls.clone(), answer(Some("dvlab-chaos-mix-dv0-1-0"), 0)),
        "ns",
    );
    let msg = format!("{:#}", cl.check_alive(&plan, &[]).await.unwrap_err());
    assert!(
        msg.contains(
            "container dvnode of pod dvlab-chaos-mix-dv0-1-0 is not running (exit code 137, Error)"
        ) && msg.contains("fatal: out of memory"),
        "{msg}"
    );
    let log = calls.lock().unwrap()[1].uri.clone();
    assert!(
        log.starts_with("/api/v1/namespaces/ns/pods/dvlab-chaos-mix-dv0-1-0/log?")
            && log.contains("container=dvnode")
            && log.contains("tailLines=15"),
        "{log}"
    );
    // ... unless a crash/stop/pause fault intends it down.
    cl.check_alive(&plan, &[dv1.to_string()]).await.unwrap();

    // The kubelet restarted every container since the first check: a failure, naming the
    // first; the previous instance's log is read. Not a failure on the next check.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let restarts = Arc::new(Mutex::new(0));
    let r2 = restarts.clone();
    let p2 = plan.clone();
    let mut cl = Cluster::new(
        client(
            calls.clone(),
            Arc::new(move |call: &Call, _| {
                if call.uri.contains("/log?") {
                    (200, json!("bye\n"))
                } else {
                    (200, pods(&p2, None, *r2.lock().unwrap()))
                }
            }),
        ),
        "ns",
    );
    cl.check_alive(&plan, &[]).await.unwrap();
    *restarts.lock().unwrap() = 1;
    let msg = format!("{:#}", cl.check_alive(&plan, &[]).await.unwrap_err());
    assert!(
        msg.contains("dvlab-chaos-mix-bn0-0 restarted (1 time(s) since the last check)"),
        "{msg}"
    );
    assert!(calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.uri.contains("previous=true")));
    cl.check_alive(&plan, &[]).await.unwrap();
    // Restarts of intended-down containers pass.
    *restarts.lock().unwrap() = 2;
    let all: Vec<String> = plan.containers.iter().map(|c| c.name.clone()).collect();
    cl.check_alive(&plan, &all).await.unwrap();
    cl.check_alive(&plan, &[]).await.unwrap();
}

#[tokio::test]
async fn outputs_are_fetched_into_the_docker_run_layout() {
    let plan = render("chaos-mix").plan;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let timer_log = "{\"time\":1.0}\n";
    let c = client(
        calls.clone(),
        Arc::new(move |call: &Call, _| {
            if call.uri.contains("/log?") {
                (200, json!(timer_log))
            } else if call.uri.contains("/exec?") {
                // No WebSocket upgrade here: the exec fails, the run warns.
                (
                    400,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "code": 400, "message": "upgrade required"}),
                )
            } else {
                let pod = json!({"metadata": {"name": "dvlab-faults-x1", "creationTimestamp": "2026-12-07T09:00:00Z"}});
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod]}),
                )
            }
        }),
    );
    let out = tempfile::tempdir().unwrap();
    Cluster::new(c, "ns")
        .fetch_outputs(&plan, out.path())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(out.path().join("faults.jsonl")).unwrap(),
        timer_log
    );
    let calls = calls.lock().unwrap().clone();
    // One `cat` of the duty log per dvnode, in its dvnode container.
    let execs: Vec<&Call> = calls.iter().filter(|c| c.uri.contains("/exec?")).collect();
    let dvnodes: Vec<_> = plan
        .containers
        .iter()
        .filter(|c| matches!(c.role, Role::DvNode { .. }))
        .collect();
    assert_eq!(execs.len(), dvnodes.len());
    for (e, d) in execs.iter().zip(&dvnodes) {
        assert!(
            e.uri
                .starts_with(&format!("/api/v1/namespaces/ns/pods/{}-0/exec?", d.name))
                && e.uri
                    .contains("command=cat&command=%2Fout%2Fduty-log.jsonl")
                && e.uri.contains("container=dvnode"),
            "{}",
            e.uri
        );
        assert!(out.path().join("nodes").join(&d.name).is_dir());
    }
    let list = calls.iter().find(|c| c.uri.contains("/pods?")).unwrap();
    assert!(
        list.uri.contains("labelSelector=dvlab.role%3Dfault-timer"),
        "{}",
        list.uri
    );
    let log = calls.iter().find(|c| c.uri.contains("/log?")).unwrap();
    assert!(
        log.uri
            .starts_with("/api/v1/namespaces/ns/pods/dvlab-faults-x1/log?")
            && log.uri.contains("container=fault-timer"),
        "{}",
        log.uri
    );
}

fn k8s_run<'a>(spec: &'a DevnetSpec, text: &'a str) -> pipeline::KubernetesRun<'a> {
    pipeline::KubernetesRun {
        spec,
        path: "devnets/basic.yaml",
        text,
        options: RenderOptions::default(),
        keep: false,
    }
}

/// The in-process API of a run: applies echo, StatefulSets never get ready (or `apply_error`
/// answers every apply), the namespace is the run's.
fn run_api(calls: Arc<Mutex<Vec<Call>>>, apply_error: Option<u16>) -> kube::Client {
    client(
        calls,
        Arc::new(move |call: &Call, _| match call.method.as_str() {
            "PATCH" => match apply_error {
                Some(code) => (
                    code,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                            "code": code, "message": "forbidden"}),
                ),
                None => (200, call.body.clone()),
            },
            "GET" if call.uri.contains("/statefulsets") => (200, list(vec![sts("bn0", 0)])),
            _ => (
                200,
                json!({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": "dvlab-basic", "labels": {"dvlab.run": "basic"}}}),
            ),
        }),
    )
}

fn spec_text() -> (DevnetSpec, String) {
    let path = format!("{}/../devnets/basic.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    (DevnetSpec::parse(&text, "basic").unwrap(), text)
}

fn deleted(calls: &[Call]) -> bool {
    calls.iter().any(|c| {
        c.method == "DELETE" && c.uri.split('?').next() == Some("/api/v1/namespaces/dvlab-basic")
    })
}

#[tokio::test]
async fn ctrl_c_while_waiting_deletes_the_run() {
    let (spec, text) = spec_text();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let out = tempfile::tempdir().unwrap();
    // Ctrl-C once the run waits for its StatefulSets.
    let seen = calls.clone();
    let stop = async move {
        while !seen
            .lock()
            .unwrap()
            .iter()
            .any(|c: &Call| c.uri.contains("/statefulsets?"))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let outcome = pipeline::run_kubernetes(
        run_api(calls.clone(), None),
        k8s_run(&spec, &text),
        out.path(),
        stop,
    )
    .await
    .unwrap();
    assert!(matches!(outcome, Outcome::Interrupted));
    let calls = calls.lock().unwrap().clone();
    assert!(calls.iter().any(|c| c.method == "PATCH"));
    assert!(
        calls.iter().any(|c| c.uri.contains("/statefulsets?")),
        "it waited"
    );
    assert!(deleted(&calls), "{calls:#?}");
    // After the deletion, nothing more.
    assert_eq!(calls.last().unwrap().method, "DELETE");
}

#[tokio::test]
async fn a_failed_apply_deletes_what_was_applied() {
    let (spec, text) = spec_text();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let out = tempfile::tempdir().unwrap();
    let err = pipeline::run_kubernetes(
        run_api(calls.clone(), Some(403)),
        k8s_run(&spec, &text),
        out.path(),
        std::future::pending(),
    )
    .await
    .err()
    .expect("the apply fails");
    assert!(
        format!("{err:#}").contains("applying Namespace dvlab-basic"),
        "{err:#}"
    );
    assert!(deleted(&calls.lock().unwrap()));
}
