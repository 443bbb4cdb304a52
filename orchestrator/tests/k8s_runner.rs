//! The Kubernetes runner's API calls against an in-process API (a kube client over a tower
//! service): server-side apply of every rendered object in order at its resource path,
//! waiting for the run's StatefulSets, deleting only a namespace labelled for the run.

use dvlab::k8s::{self, runner, RenderOptions};
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
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(StatusCode::from_u16(code).unwrap())
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&out).unwrap()))
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
