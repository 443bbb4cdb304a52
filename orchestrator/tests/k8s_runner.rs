//! The Kubernetes runner's API calls against an in-process API (a kube client over a tower
//! service): server-side apply of every rendered object in order at its resource path,
//! waiting for the run's StatefulSets, deleting only a namespace labelled for the run; the
//! run's liveness checks and output collection; `dvlab run --backend kubernetes` deleting the
//! run on Ctrl-C, on SIGTERM and on errors. Port-forwards and exec are WebSocket upgrades a
//! tower service cannot answer: the collection's data paths run against a fake API server on a
//! real socket (axum + hyper upgrade + tungstenite) speaking the `v4.channel.k8s.io` channel
//! protocol, with kube's own client.

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

/// Resolves once the run asks for its StatefulSets (it waits for them).
async fn waiting(calls: Arc<Mutex<Vec<Call>>>) {
    while !calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.uri.contains("/statefulsets?"))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs devnets/basic.yaml against [`run_api`] until `stop`: interrupted after it applied and
/// waited, and the namespace deleted as the last call.
async fn interrupted_run_deletes_the_namespace(
    calls: Arc<Mutex<Vec<Call>>>,
    stop: impl std::future::Future<Output = ()>,
) {
    let (spec, text) = spec_text();
    let out = tempfile::tempdir().unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        pipeline::run_kubernetes(
            run_api(calls.clone(), None),
            k8s_run(&spec, &text),
            out.path(),
            stop,
        ),
    )
    .await
    .expect("the stop ends the run")
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
async fn ctrl_c_while_waiting_deletes_the_run() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    interrupted_run_deletes_the_namespace(calls.clone(), waiting(calls)).await;
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

// ---------------------------------------------------------------------------------------------
// The collection's data paths: kube's client against a fake API server on a real socket.

/// What the fake API server serves: the "pods" (pod/port → a local server), their files (for
/// `cat` by exec), the fault timer's pod log, and every request it saw.
#[derive(Default)]
struct FakeCluster {
    ports: Mutex<std::collections::HashMap<(String, u16), std::net::SocketAddr>>,
    files: std::collections::HashMap<(String, String), Vec<u8>>,
    timer_log: String,
    seen: Mutex<Vec<String>>,
}

const V4: &str = "v4.channel.k8s.io";

async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

type Ws = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// Answers a WebSocket upgrade as the API server does (101, the accept key, the channel
/// subprotocol) and runs `session` on the upgraded connection.
fn upgrade<F, Fut>(mut req: axum::extract::Request, session: F) -> axum::response::Response
where
    F: FnOnce(Ws) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use http::header;
    let offered = req.headers()[header::SEC_WEBSOCKET_PROTOCOL]
        .to_str()
        .unwrap()
        .to_string();
    assert!(offered.split(", ").any(|p| p == V4), "{offered}");
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
        req.headers()[header::SEC_WEBSOCKET_KEY].as_bytes(),
    );
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = hyper_util::rt::TokioIo::new(on.await.expect("upgraded"));
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        session(ws).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(header::SEC_WEBSOCKET_PROTOCOL, V4)
        .body(axum::body::Body::empty())
        .unwrap()
}

fn frame(channel: u8, data: &[u8]) -> tokio_tungstenite::tungstenite::Message {
    let mut v = vec![channel];
    v.extend_from_slice(data);
    tokio_tungstenite::tungstenite::Message::binary(v)
}

/// The kubelet's side of a WebSocket port-forward of one port: the port on the data (0) and
/// error (1) channels first, then channel-0 frames both ways to and from `target`; a pod that
/// is down gets an error message and the stream closes.
async fn port_forward(ws: Ws, port: u16, target: Option<std::net::SocketAddr>) {
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut sink, mut from_client) = ws.split();
    sink.send(frame(0, &port.to_le_bytes())).await.unwrap();
    sink.send(frame(1, &port.to_le_bytes())).await.unwrap();
    let Some(target) = target else {
        let _ = sink
            .send(frame(1, b"error forwarding port: container not running"))
            .await;
        let _ = sink.send(Message::Close(None)).await;
        return;
    };
    let (mut r, mut w) = tokio::net::TcpStream::connect(target)
        .await
        .unwrap()
        .into_split();
    let up = async move {
        while let Some(Ok(m)) = from_client.next().await {
            let written = match m {
                Message::Binary(b) if b.len() > 1 && b[0] == 0 => w.write_all(&b[1..]).await,
                Message::Close(_) => break,
                _ => Ok(()),
            };
            if written.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 || sink.send(frame(0, &buf[..n])).await.is_err() {
                break;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    futures::join!(up, down);
}

/// The kubelet's side of `exec cat PATH` (stdout only): the file on channel 1 in 8 KiB frames
/// and a Success status on channel 3, or cat's error on channel 2 and a Failure status with
/// exit code 1.
async fn exec_cat(mut ws: Ws, file: Option<Vec<u8>>, path: String) {
    use futures::SinkExt;
    let status = match file {
        Some(bytes) => {
            for chunk in bytes.chunks(8192) {
                ws.send(frame(1, chunk)).await.unwrap();
            }
            json!({"metadata": {}, "status": "Success"})
        }
        None => {
            let msg = format!("cat: {path}: No such file or directory\n");
            ws.send(frame(2, msg.as_bytes())).await.unwrap();
            json!({"metadata": {}, "status": "Failure",
                   "message": "command terminated with non-zero exit code: exit status 1",
                   "reason": "NonZeroExitCode",
                   "details": {"causes": [{"reason": "ExitCode", "message": "1"}]}})
        }
    };
    ws.send(frame(3, status.to_string().as_bytes()))
        .await
        .unwrap();
    let _ = ws.close(None).await;
}

async fn fake_api(
    axum::extract::State(k): axum::extract::State<Arc<FakeCluster>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let query: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let q = |key: &str| {
        query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    k.seen
        .lock()
        .unwrap()
        .push(format!("{} {}", req.method(), req.uri()));
    let path: Vec<String> = req.uri().path().split('/').map(String::from).collect();
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match path.as_slice() {
        ["", "api", "v1", "namespaces", "ns", "pods", pod, "portforward"] => {
            let port: u16 = q("ports")[0].parse().unwrap();
            let target = k
                .ports
                .lock()
                .unwrap()
                .get(&(pod.to_string(), port))
                .copied();
            upgrade(req, move |ws| port_forward(ws, port, target))
        }
        ["", "api", "v1", "namespaces", "ns", "pods", pod, "exec"] => {
            let command = q("command");
            assert_eq!(command[0], "cat", "{command:?}");
            assert_eq!(q("stdout"), ["true"]);
            assert!(q("stdin") != ["true"] && q("stderr") != ["true"]);
            let file = k.files.get(&(pod.to_string(), command[1].clone())).cloned();
            let path = command[1].clone();
            upgrade(req, move |ws| exec_cat(ws, file, path))
        }
        ["", "api", "v1", "namespaces", "ns", "pods", "dvlab-faults-x1", "log"] => {
            k.timer_log.clone().into_response()
        }
        ["", "api", "v1", "namespaces", "ns", "pods"] => axum::Json(json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [{"metadata": {"name": "dvlab-faults-x1",
                                    "creationTimestamp": "2026-12-07T09:00:00Z"}}]}))
        .into_response(),
        _ => (StatusCode::NOT_FOUND, "not served").into_response(),
    }
}

/// A beacon node's REST API as far as the collector reads it (two epochs of 8 slots, one
/// committee of two per slot, one proposer duty, a head block at slot 5 whose parent is not
/// served), plus a large body and an echo to move bytes both ways.
fn beacon_api() -> axum::Router {
    use axum::extract::{Path as P, Query};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    let committees = |Query(q): Query<std::collections::HashMap<String, String>>| async move {
        let e: u64 = q["epoch"].parse().unwrap();
        let data: Vec<Value> = (e * 8..e * 8 + 8)
            .map(|s| {
                json!({"index": "0", "slot": s.to_string(),
                            "validators": [(s % 4 * 2).to_string(), (s % 4 * 2 + 1).to_string()]})
            })
            .collect();
        axum::Json(json!({"data": data}))
    };
    axum::Router::new()
        .route(
            "/eth/v1/beacon/genesis",
            get(|| async {
                axum::Json(json!({"data": {"genesis_time": "1700000000",
                    "genesis_validators_root": format!("0x{}", "83".repeat(32)),
                    "genesis_fork_version": "0x00000001"}}))
            }),
        )
        .route("/eth/v1/beacon/states/head/committees", get(committees))
        .route(
            "/eth/v1/validator/duties/proposer/{epoch}",
            get(|P(e): P<u64>| async move {
                axum::Json(json!({"data": [{"pubkey": format!("0x{}", "aa".repeat(48)),
                    "validator_index": "3", "slot": (e * 8 + 1).to_string()}]}))
            }),
        )
        .route(
            "/eth/v1/beacon/headers/head",
            get(|| async {
                axum::Json(json!({"data": {"root": format!("0x{}", "11".repeat(32)),
                    "header": {"message": {"slot": "5"}}}}))
            }),
        )
        .route(
            "/eth/v2/beacon/blocks/{root}",
            get(|P(root): P<String>| async move {
                if root != format!("0x{}", "11".repeat(32)) {
                    return (StatusCode::NOT_FOUND, "not served").into_response();
                }
                axum::Json(
                    json!({"data": {"message": {"slot": "5", "proposer_index": "3",
                    "parent_root": format!("0x{}", "22".repeat(32)),
                    "body": {"attestations": []}}}}),
                )
                .into_response()
            }),
        )
        .route(
            "/eth/v1/beacon/states/head/finality_checkpoints",
            get(|| async { axum::Json(json!({"data": {"finalized": {"epoch": "0"}}})) }),
        )
        .route(
            "/eth/v1/node/peer_count",
            get(|| async { axum::Json(json!({"data": {"connected": "3"}})) }),
        )
        .route("/big", get(|| async { big_body() }))
        .route("/echo", post(|body: axum::body::Bytes| async move { body }))
}

/// 3 MiB that are not one repeated byte.
fn big_body() -> Vec<u8> {
    (0..3u32 << 20).map(|i| (i % 251) as u8).collect()
}

fn duty_log(node: usize, lines: usize) -> String {
    (0..lines)
        .map(|i| {
            format!(
                "{{\"ts_ms\":{i},\"duty\":{{\"slot\":\"{i}\",\"kind\":\"attester\"}},\
                 \"validator_index\":\"{node}\",\"outcome\":\"success\",\"stages\":{{\"scheduled\":1}},\
                 \"consensus_round\":1,\"consensus_seconds\":0.25,\"shares\":[1,2,3]}}\n"
            )
        })
        .collect()
}

#[tokio::test]
async fn collection_moves_bytes_through_port_forwards_and_exec() {
    use dvlab::collect::Collector;
    use dvlab::data::{BeaconNodeMeta, DvNodeMeta, RunMeta};
    use dvlab::plan::{BN_REST_PORT, DVNODE_METRICS_PORT};
    let plan = render("chaos-mix").plan;
    let bn = serve(beacon_api()).await;
    let metrics_page = "# TYPE dvnode_duties_total counter\ndvnode_duties_total 42\n";
    let metrics = serve(axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move { metrics_page }),
    ))
    .await;
    let bn_pod = k8s::collect::pod_name(
        plan.containers
            .iter()
            .find(|c| matches!(c.role, Role::BeaconNode { .. }))
            .unwrap(),
    );
    let dvnodes: Vec<_> = plan
        .containers
        .iter()
        .filter(|c| matches!(c.role, Role::DvNode { .. }))
        .collect();
    // 2,000 lines (~330 KB) per node, but the last node has written none.
    let lines = 2000;
    let mut k = FakeCluster {
        timer_log: "{\"time\":12.5,\"fault\":0}\n".into(),
        ..Default::default()
    };
    let mut ports = std::collections::HashMap::new();
    ports.insert((bn_pod.clone(), BN_REST_PORT), bn);
    for (i, d) in dvnodes.iter().enumerate() {
        let pod = k8s::collect::pod_name(d);
        ports.insert((pod.clone(), DVNODE_METRICS_PORT), metrics);
        if i + 1 < dvnodes.len() {
            k.files.insert(
                (pod, "/out/duty-log.jsonl".into()),
                duty_log(i, lines).into_bytes(),
            );
        }
    }
    k.ports = Mutex::new(ports);
    let k = Arc::new(k);
    let api = serve(axum::Router::new().fallback(fake_api).with_state(k.clone())).await;
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{api}").parse().unwrap()))
            .unwrap();

    // The BN's REST port through a port-forward: 3 MiB down, 1 MiB up and back, 20
    // requests at once (one stream each).
    let f = k8s::collect::forward(&client, "ns", &bn_pod, BN_REST_PORT)
        .await
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let big = http.get(format!("{}/big", f.url)).send().await.unwrap();
    assert_eq!(big.bytes().await.unwrap().as_ref(), big_body().as_slice());
    let up: Vec<u8> = big_body()[..1 << 20].iter().rev().copied().collect();
    let echo = http
        .post(format!("{}/echo", f.url))
        .body(up.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(echo.bytes().await.unwrap().as_ref(), up.as_slice());
    let many = (0..20).map(|_| {
        // A client per request: one TCP connection, hence one port-forward stream, each.
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("{}/eth/v1/node/peer_count", f.url);
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    });
    for body in futures::future::join_all(many).await {
        assert_eq!(body, r#"{"data":{"connected":"3"}}"#);
    }

    // The collector reads the forwarded BN and metrics, and the duty logs fetched by exec.
    let mut metrics_forwards = Vec::new();
    let mut metas = Vec::new();
    for d in &dvnodes {
        let m = k8s::collect::forward(
            &client,
            "ns",
            &k8s::collect::pod_name(d),
            DVNODE_METRICS_PORT,
        )
        .await
        .unwrap();
        let Role::DvNode { cluster, node } = &d.role else {
            unreachable!()
        };
        metas.push(DvNodeMeta {
            name: d.name.clone(),
            cluster: cluster.clone(),
            index: *node,
            metrics_url: Some(m.url.clone()),
        });
        metrics_forwards.push(m);
    }
    let bns = vec![BeaconNodeMeta {
        name: "bn0".into(),
        api_url: f.url.clone(),
    }];
    let mut col = Collector::new(bns.clone(), 8).unwrap();
    col.wait_ready(Duration::from_secs(10)).await.unwrap();
    col.record_duties(0).await.unwrap();
    assert_eq!(col.sample_heads(1_700_000_100).await.len(), 1);
    let out = tempfile::tempdir().unwrap();
    Cluster::new(client.clone(), "ns")
        .fetch_outputs(&plan, out.path())
        .await
        .unwrap();
    for (i, d) in dvnodes.iter().enumerate() {
        let file = out
            .path()
            .join("nodes")
            .join(&d.name)
            .join("duty-log.jsonl");
        if i + 1 < dvnodes.len() {
            assert_eq!(std::fs::read_to_string(&file).unwrap(), duty_log(i, lines));
        } else {
            // `cat` failed (exit code 1): a warning, no file.
            assert!(!file.exists());
        }
    }
    assert_eq!(
        std::fs::read_to_string(out.path().join("faults.jsonl")).unwrap(),
        k.timer_log
    );
    col.collect_dvnodes(&metas, out.path()).await;
    let mut raw = col.finish().await.unwrap();
    let meta = RunMeta {
        run: plan.run.clone(),
        genesis_time: 1_700_000_000,
        seconds_per_slot: plan.seconds_per_slot,
        slots_per_epoch: 8,
        first_slot: 0,
        last_slot: 15,
        groups: Vec::new(),
        beacon_nodes: bns,
        assertions: Default::default(),
        dvnodes: metas,
        remote_signer: vec![],
    };
    raw.save(&meta, out.path()).unwrap();
    let csv = |name: &str| {
        std::fs::read_to_string(out.path().join("raw").join(format!("{name}.csv"))).unwrap()
    };
    // Two epochs of committees (16 slots × 2 validators), the proposer duty, the head sample.
    assert_eq!(csv("duties").lines().count(), 1 + 32, "{}", csv("duties"));
    assert!(csv("duties").contains("\n15,0,7"), "{}", csv("duties"));
    assert_eq!(csv("proposer_duties").lines().nth(1), Some("1,3"));
    assert_eq!(
        csv("blocks").lines().nth(1),
        Some(format!("5,3,0x{}", "11".repeat(32)).as_str()),
        "{}",
        csv("blocks")
    );
    assert_eq!(
        csv("heads").lines().nth(1),
        Some(format!("1700000100,bn0,5,0,3,0x{}", "11".repeat(32)).as_str()),
        "{}",
        csv("heads")
    );
    // Every line of every duty log that was there, attributed to its node.
    let duty_csv = csv("duty_log");
    assert_eq!(
        duty_csv.lines().count(),
        1 + lines * (dvnodes.len() - 1),
        "{}",
        duty_csv.lines().take(3).collect::<Vec<_>>().join("\n")
    );
    for d in &dvnodes[..dvnodes.len() - 1] {
        assert!(duty_csv.contains(&format!("\n{},1999,attester", d.name)));
    }
    for d in &dvnodes {
        assert_eq!(
            std::fs::read_to_string(out.path().join("nodes").join(&d.name).join("metrics.txt"))
                .unwrap(),
            metrics_page
        );
    }

    // A crashed pod refuses the stream (the collector sees a closed connection); the
    // replacement pod is reached by the next connection.
    k.ports
        .lock()
        .unwrap()
        .remove(&(bn_pod.clone(), BN_REST_PORT));
    let fresh = || reqwest::Client::builder().no_proxy().build().unwrap();
    let down = fresh()
        .get(format!("{}/eth/v1/beacon/genesis", f.url))
        .send()
        .await;
    assert!(down.is_err(), "{down:?}");
    k.ports
        .lock()
        .unwrap()
        .insert((bn_pod.clone(), BN_REST_PORT), bn);
    let back = fresh()
        .get(format!("{}/eth/v1/beacon/genesis", f.url))
        .send()
        .await
        .unwrap();
    assert!(back.status().is_success());

    // What the API server was asked.
    let seen = k.seen.lock().unwrap().clone();
    // One port-forward stream per connection: at least the 2 + 20 above and the collector's.
    let streams = seen
        .iter()
        .filter(|s| {
            s.starts_with(&format!(
                "GET /api/v1/namespaces/ns/pods/{bn_pod}/portforward?"
            )) && s.ends_with("ports=9596")
        })
        .count();
    assert!(streams >= 23, "{seen:#?}");
    let execs = seen.iter().filter(|s| s.contains("/exec?")).count();
    assert_eq!(execs, dvnodes.len());
}

#[tokio::test]
async fn sigterm_while_waiting_deletes_the_run() {
    // What `dvlab run --backend kubernetes` passes as its stop: Ctrl-C or SIGTERM. The signal
    // is sent once the run waits for its StatefulSets (the handler is installed by then: were
    // it not, SIGTERM would end this test process).
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let kill = tokio::spawn(async move {
        waiting(seen).await;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    });
    interrupted_run_deletes_the_namespace(calls, pipeline::interrupted()).await;
    kill.await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// `keys: dkg`: the in-cluster steps (`dvlab k8s publish`, `dvlab k8s genesis`) and the run's
// wait for the once-Jobs.

type Store = Arc<Mutex<std::collections::BTreeMap<String, Value>>>;

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
           "code": code, "message": format!("{reason}")})
}

/// An API storing what is POSTed (by path/name; a second POST of a name is 409) and answering
/// GETs of stored objects (404 otherwise).
fn store_api(calls: Arc<Mutex<Vec<Call>>>, store: Store) -> kube::Client {
    client(
        calls,
        Arc::new(move |call: &Call, _| {
            let path = call.uri.split('?').next().unwrap().to_string();
            let mut store = store.lock().unwrap();
            match call.method.as_str() {
                "POST" => {
                    let key = format!("{path}/{}", call.body["metadata"]["name"].as_str().unwrap());
                    if store.contains_key(&key) {
                        return (409, status(409, "AlreadyExists"));
                    }
                    store.insert(key, call.body.clone());
                    (201, call.body.clone())
                }
                "GET" => match store.get(&path) {
                    Some(v) => (200, v.clone()),
                    None => (404, status(404, "NotFound")),
                },
                _ => (405, status(405, "MethodNotAllowed")),
            }
        }),
    )
}

/// A Secret's data (base64 in JSON), by key.
fn secret_data(v: &Value) -> std::collections::BTreeMap<String, Vec<u8>> {
    let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(v.clone()).unwrap();
    s.data.unwrap().into_iter().map(|(k, b)| (k, b.0)).collect()
}

fn publish_node(dir: &std::path::Path, ns: &str, n: usize) -> k8s::dkg::Publish {
    let node = dir.join(format!("node{n}"));
    k8s::dkg::Publish {
        namespace: ns.into(),
        run: "dkg".into(),
        role: "dkg".into(),
        secrets: vec![(format!("dv0-{n}-keys"), node.clone())],
        vc_secrets: vec![(format!("dv0-{n}-vc-keys"), node.join("validator_keys"))],
        config_maps: vec![(
            format!("dv0-{n}-dkg-public"),
            k8s::dkg::PUBLIC_FILES
                .iter()
                .map(|f| node.join(f))
                .collect(),
        )],
    }
}

fn genesis_job(ns: &str, genesis_time: u64) -> k8s::dkg::GenesisJob {
    k8s::dkg::GenesisJob {
        namespace: ns.into(),
        run: "dkg".into(),
        preset: "minimal".into(),
        genesis_time,
        genesis_validators: 64,
        clusters: vec![
            "dv0=56..64=dv0-0-dkg-public,dv0-1-dkg-public,dv0-2-dkg-public,dv0-3-dkg-public"
                .parse()
                .unwrap(),
        ],
        poll: Duration::from_millis(50),
    }
}

/// A real 4-node ceremony (in-process `dvnode dkg` over loopback libp2p), each operator's
/// outputs published by `dvlab k8s publish` into the API, and `dvlab k8s genesis` building the
/// genesis state from them once the last operator's outputs exist.
#[tokio::test]
async fn each_operator_publishes_its_own_keys_and_genesis_is_built_from_the_ceremony() {
    use dvnode::keys::keystore::Keystore;
    let tmp = tempfile::tempdir().unwrap();
    dvnode::dkg::bench::ceremony(tmp.path(), 4, 8)
        .await
        .unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let store: Store = Default::default();
    let api = store_api(calls.clone(), store.clone());
    let genesis_time = unix_now() + 60;
    let job = genesis_job("ns", genesis_time);
    let genesis = tokio::spawn({
        let api = api.clone();
        async move { k8s::dkg::genesis(&api, &job).await }
    });
    for n in 0..3 {
        let written = k8s::dkg::publish(&api, &publish_node(tmp.path(), "ns", n))
            .await
            .unwrap();
        assert_eq!(written.len(), 3, "{written:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!genesis.is_finished(), "genesis waits for node 3's outputs");
    k8s::dkg::publish(&api, &publish_node(tmp.path(), "ns", 3))
        .await
        .unwrap();
    let size = tokio::time::timeout(Duration::from_secs(30), genesis)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let store = store.lock().unwrap().clone();
    let get = |path: &str| {
        store
            .get(path)
            .unwrap_or_else(|| panic!("{path} not created"))
    };
    let lock = std::fs::read_to_string(tmp.path().join("node0/cluster-lock.json")).unwrap();
    let lock = dvnode::cluster::lock::ClusterLock::parse(&lock).unwrap();
    for n in 0..4 {
        let node = tmp.path().join(format!("node{n}"));
        // The dvnode's Secret: its own node directory, every file the StatefulSet mounts.
        let s = get(&format!("/api/v1/namespaces/ns/secrets/dv0-{n}-keys"));
        assert_eq!(s["metadata"]["labels"]["dvlab.run"], "dkg");
        let data = secret_data(s);
        for f in k8s::dkg::node_files(8) {
            let key = f.replace('/', ".");
            assert_eq!(
                data[&key],
                std::fs::read(node.join(&f)).unwrap(),
                "node {n} {f}"
            );
        }
        // Its validator client's Secret: exactly what it mounts, decrypting to node n's shares.
        let vc = secret_data(get(&format!(
            "/api/v1/namespaces/ns/secrets/dv0-{n}-vc-keys"
        )));
        let mut keys: Vec<String> = vc.keys().cloned().collect();
        let mut want: Vec<String> = k8s::dkg::vc_files(8)
            .iter()
            .map(|f| f.replace('/', "."))
            .collect();
        keys.sort();
        want.sort();
        assert_eq!(keys, want);
        let password = String::from_utf8(vc["password.txt"].clone()).unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("k.json"), &vc["keystores.keystore-3.json"]).unwrap();
        let share = Keystore::from_file(&d.path().join("k.json"))
            .unwrap()
            .decrypt(&password)
            .unwrap();
        let own_password =
            std::fs::read_to_string(node.join("validator_keys/keystore-3.txt")).unwrap();
        let own = Keystore::from_file(&node.join("validator_keys/keystore-3.json"))
            .unwrap()
            .decrypt(own_password.trim())
            .unwrap();
        assert_eq!(share.to_bytes(), own.to_bytes(), "node {n}'s share of DV 3");
        // The public outputs.
        let cm = get(&format!(
            "/api/v1/namespaces/ns/configmaps/dv0-{n}-dkg-public"
        ));
        let mut keys: Vec<&String> = cm["data"].as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["cluster-lock.json", "deposit-data.json"]);
    }
    // Nothing read a Secret.
    let calls = calls.lock().unwrap().clone();
    assert!(!calls
        .iter()
        .any(|c| c.method == "GET" && c.uri.contains("/secrets")));
    // The genesis state: interop keys but validators 56..63, the ceremony's keys.
    let cm = serde_json::from_value(get("/api/v1/namespaces/ns/configmaps/dvlab-genesis").clone())
        .unwrap();
    let ssz = k8s::dkg::genesis_state(&cm).unwrap();
    assert_eq!(ssz.len(), size);
    let state = dvlab::genesis::decode::<dvnode::eth::types::Minimal>(&ssz).unwrap();
    assert_eq!(state.genesis_time, genesis_time);
    assert_eq!(state.validators.len(), 64);
    let fork = dvlab::genesis::genesis_fork_version(dvlab::spec::Preset::Minimal);
    for i in 0..64u64 {
        let want = if i >= 56 {
            lock.validators[(i - 56) as usize].pubkey.to_bytes()
        } else {
            dvlab::genesis::interop_deposit(i, fork).pubkey.0
        };
        assert_eq!(state.validators[i as usize].pubkey.0, want, "validator {i}");
    }
    // Written once: a second genesis finds its ConfigMap taken.
    let again = k8s::dkg::genesis(&api, &genesis_job("ns", genesis_time)).await;
    fails_with(again, "creating ConfigMap dvlab-genesis");

    // A tampered lock is refused naming the node; missing outputs name the operators.
    let tampered = tempfile::tempdir().unwrap();
    for n in 0..4 {
        let from = tmp.path().join(format!("node{n}"));
        let to = tampered.path().join(format!("node{n}"));
        std::fs::create_dir_all(&to).unwrap();
        for f in k8s::dkg::PUBLIC_FILES {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
    let l = tampered.path().join("node2/cluster-lock.json");
    let text = std::fs::read_to_string(&l).unwrap();
    std::fs::write(&l, text.replacen("\"threshold\": 3", "\"threshold\": 2", 1)).unwrap();
    for n in 0..4 {
        let mut p = publish_node(tampered.path(), "ns2", n);
        p.secrets.clear();
        p.vc_secrets.clear();
        k8s::dkg::publish(&api, &p).await.unwrap();
    }
    let err = k8s::dkg::genesis(&api, &genesis_job("ns2", genesis_time)).await;
    fails_with(err, "cluster dv0 node 2's cluster-lock.json");
    let mut p = publish_node(tmp.path(), "ns3", 0);
    p.secrets.clear();
    p.vc_secrets.clear();
    k8s::dkg::publish(&api, &p).await.unwrap();
    let err = k8s::dkg::genesis(&api, &genesis_job("ns3", unix_now() + 11))
        .await
        .unwrap_err();
    let err = format!("{err:#}");
    for n in 1..4 {
        assert!(
            err.contains(&format!(
                "cluster dv0 node {n} (ConfigMap dv0-{n}-dkg-public)"
            )),
            "{err}"
        );
    }
    assert!(!err.contains("node 0"), "{err}");
}

/// Asserts that `r` failed with a message containing `needle`.
fn fails_with<T: std::fmt::Debug>(r: anyhow::Result<T>, needle: &str) {
    let err = format!("{:#}", r.unwrap_err());
    assert!(err.contains(needle), "{err}");
}

fn unix_now() -> u64 {
    dvnode::clock::unix_now().as_secs()
}

fn job(name: &str, state: &str) -> Value {
    let status = match state {
        "succeeded" => json!({"succeeded": 1}),
        "failed" => json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}),
        _ => json!({"active": 1}),
    };
    json!({"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": name, "namespace": "dvlab-dkg"}, "status": status})
}

/// The pod of a once-Job whose `container` ended with `code`.
fn job_pod(target: &str, container: &str, code: i32) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("{target}-x7k2p"), "namespace": "dvlab-dkg"},
           "status": {"phase": "Failed",
               "initContainerStatuses": [
                   {"name": "copy-input", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                    "state": {"terminated": {"exitCode": 0}}},
                   {"name": container, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                    "state": {"terminated": {"exitCode": code, "reason": "Error"}}}]}})
}

#[tokio::test]
async fn the_run_waits_for_the_once_jobs_in_order() {
    let r = render("dkg");
    let names: Vec<&str> = r.once_jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dvlab-dkg-dkg-setup-dv0",
            "dvlab-dkg-dv0-0-dkg",
            "dvlab-dkg-dv0-1-dkg",
            "dvlab-dkg-dv0-2-dkg",
            "dvlab-dkg-dv0-3-dkg",
            "dvlab-genesis"
        ]
    );
    let calls = Arc::new(Mutex::new(Vec::new()));
    // Every Job succeeds on the third round of polls.
    let c = client(
        calls.clone(),
        Arc::new(|call: &Call, n| {
            let name = call
                .uri
                .split('?')
                .next()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap();
            (
                200,
                job(name, if n >= 12 { "succeeded" } else { "running" }),
            )
        }),
    );
    k8s::dkg::wait_once_jobs(
        &c,
        "dvlab-dkg",
        "dkg",
        &r.once_jobs,
        unix_now() + 60,
        Duration::from_millis(10),
    )
    .await
    .unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 18);
    assert!(calls[..6].iter().zip(&names).all(|(c, n)| c
        .uri
        .starts_with(&format!("/apis/batch/v1/namespaces/dvlab-dkg/jobs/{n}"))));
}

/// `dvlab run --backend kubernetes` of devnets/dkg.yaml whose ceremony fails on every node
/// (node 1 dealt an inconsistent share): the run fails naming each operator with its exit code
/// and last log lines, and deletes the namespace.
#[tokio::test]
async fn a_failed_ceremony_fails_the_run_naming_each_operator_and_deletes_it() {
    let path = format!("{}/../devnets/dkg.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let spec = DevnetSpec::parse(&text, "dkg").unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = client(
        calls.clone(),
        Arc::new(|call: &Call, _| {
            let path = call.uri.split('?').next().unwrap();
            let last = path.rsplit('/').next().unwrap();
            match call.method.as_str() {
                "PATCH" => (200, call.body.clone()),
                "GET" if path.contains("/jobs/") => (
                    200,
                    job(
                        last,
                        match last {
                            "dvlab-dkg-dkg-setup-dv0" => "succeeded",
                            "dvlab-genesis" => "running",
                            _ => "failed",
                        },
                    ),
                ),
                "GET" if last == "pods" => {
                    let query = call.uri.split_once('?').unwrap().1;
                    let selector = form_urlencoded::parse(query.as_bytes())
                        .find(|(k, _)| k == "labelSelector")
                        .unwrap()
                        .1
                        .into_owned();
                    assert!(selector.starts_with("dvlab.run=dkg,"), "{selector}");
                    let target = selector.split("dvlab.target=").nth(1).unwrap().to_string();
                    let target = target.as_str();
                    (
                        200,
                        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
                        "items": [if target == "dvlab-genesis" {
                            json!({"apiVersion": "v1", "kind": "Pod",
                                   "metadata": {"name": "dvlab-genesis-q8z4m"},
                                   "status": {"phase": "Running"}})
                        } else {
                            job_pod(&format!("dvlab-dkg-{target}"), "dkg", 1)
                        }]}),
                    )
                }
                "GET" if last == "log" => {
                    let Some(node) = path.split("dv0-").nth(1).and_then(|p| p.chars().next())
                    else {
                        return (200, Value::String("waiting for the ceremony\n".into()));
                    };
                    (
                        200,
                        Value::String(format!(
                            "INFO dkg: connected to 3 peers\nERROR node {node}: ceremony aborted: \
                             operator 1 (16Uiu2HAm) dealt a share inconsistent with its \
                             commitments\n"
                        )),
                    )
                }
                _ => (
                    200,
                    json!({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": "dvlab-dkg", "labels": {"dvlab.run": "dkg"}}}),
                ),
            }
        }),
    );
    let out = tempfile::tempdir().unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        pipeline::run_kubernetes(
            c,
            pipeline::KubernetesRun {
                spec: &spec,
                path: "devnets/dkg.yaml",
                text: &text,
                options: RenderOptions::default(),
                keep: false,
            },
            out.path(),
            std::future::pending(),
        ),
    )
    .await
    .expect("a failed ceremony ends the run at once")
    .err()
    .expect("the run fails");
    let err = format!("{err:#}");
    assert!(
        err.contains("cluster dv0 setup (Job dvlab-dkg-dkg-setup-dv0): succeeded"),
        "{err}"
    );
    for n in 0..4 {
        assert!(
            err.contains(&format!(
                "cluster dv0 node {n} (Job dvlab-dkg-dv0-{n}-dkg, pod dvlab-dkg-dv0-{n}-dkg-x7k2p): \
                 failed, container dkg exit code 1; last lines of dkg:"
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "ERROR node {n}: ceremony aborted: operator 1 (16Uiu2HAm)"
            )),
            "{err}"
        );
    }
    assert!(
        err.contains(
            "genesis (Job dvlab-genesis, pod dvlab-genesis-q8z4m): not done; last lines \
             of genesis:\n    waiting for the ceremony"
        ),
        "{err}"
    );
    let calls = calls.lock().unwrap().clone();
    // The log of each failed container, by name; then the namespace deleted, last.
    assert!(calls
        .iter()
        .any(|c| c.uri.contains("/pods/dvlab-dkg-dv0-2-dkg-x7k2p/log?")
            && c.uri.contains("container=dkg")));
    assert!(
        !calls.iter().any(|c| c.uri.contains("/statefulsets?")),
        "never waited for them"
    );
    let last = calls.last().unwrap();
    assert_eq!(last.method, "DELETE");
    assert_eq!(
        last.uri.split('?').next(),
        Some("/api/v1/namespaces/dvlab-dkg")
    );
}
