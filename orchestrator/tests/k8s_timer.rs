//! The fault timer against an in-process Kubernetes API (a kube client over a tower service
//! that records what it is sent): each Chaos Mesh object is created at its start, in its
//! namespace, under its kind's resource path; an object that exists already is left alone and
//! its start logged at its creation time (a restarted timer replays the past); the log is the
//! Docker executor's `faults.jsonl` format; a refused object fails the timer with its name after
//! every other step ran.

use dvlab::data::{fault_windows_from_log, FaultLogLine, LogPhase};
use dvlab::k8s::{self, chaos, RenderOptions};
use dvlab::spec::DevnetSpec;
use dvnode::clock::unix_now;
use dvnode::clock::SlotClock;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use std::sync::{Arc, Mutex};

/// When the API says an existing object was created: 2023-11-14T22:13:20Z.
const CREATED: f64 = 1_700_000_000.0;
const CREATED_RFC3339: &str = "2023-11-14T22:13:20Z";

fn now() -> f64 {
    unix_now().as_secs_f64()
}

#[derive(Debug, Clone)]
struct Seen {
    at: f64,
    method: String,
    path: String,
    name: String,
}

/// A client whose API answers POSTs with 201, or with `refuse[name]` for the named objects, and
/// GETs of an object with one created at [`CREATED`].
fn client(seen: Arc<Mutex<Vec<Seen>>>, refuse: Vec<(&'static str, u16)>) -> kube::Client {
    let svc = tower::service_fn(move |req: Request<Body>| {
        let seen = seen.clone();
        let refuse = refuse.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let obj: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            if parts.method == http::Method::GET {
                name = parts.uri.path().rsplit('/').next().unwrap().to_string();
                seen.lock().unwrap().push(Seen {
                    at: now(),
                    method: "GET".into(),
                    path: parts.uri.path().to_string(),
                    name: name.clone(),
                });
                let existing = serde_json::json!({
                    "apiVersion": "chaos-mesh.org/v1alpha1", "kind": "PodChaos",
                    "metadata": {"name": name, "creationTimestamp": CREATED_RFC3339}});
                return Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&existing).unwrap()))
                    .unwrap());
            }
            seen.lock().unwrap().push(Seen {
                at: now(),
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                name: name.clone(),
            });
            let code = refuse
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(201, |(_, c)| *c);
            let body = if code == 201 {
                bytes.to_vec()
            } else {
                serde_json::to_vec(&serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": format!("{name} refused"), "reason": "Forbidden", "code": code
                }))
                .unwrap()
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

/// The chaos-mix objects, moved to start `0.3 s × k` from now (ends 0.2 s after their start).
fn objects() -> (Vec<kube::api::DynamicObject>, String) {
    let path = format!("{}/../devnets/chaos-mix.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let spec = DevnetSpec::parse(&text, "chaos-mix.yaml").unwrap();
    let r = k8s::render(
        &spec,
        "chaos-mix.yaml",
        &text,
        1_700_000_000,
        &RenderOptions::default(),
    )
    .unwrap();
    let mut objs = k8s::timer::dynamic(&r.chaos).unwrap();
    let t0 = now();
    for (k, o) in objs.iter_mut().enumerate() {
        let a = o.metadata.annotations.as_mut().unwrap();
        let start = t0 + 0.3 * (k + 1) as f64;
        a.insert(chaos::START_ANNOTATION.into(), format!("{start:.3}"));
        if a.contains_key(chaos::END_ANNOTATION) {
            a.insert(chaos::END_ANNOTATION.into(), format!("{:.3}", start + 0.2));
        }
    }
    (objs, r.namespace)
}

fn clock() -> SlotClock {
    SlotClock::new(now() as u64, 1, 8)
}

/// Runs the timer over `objs` against the API of [`client`] (refusing `refuse`); its result and
/// log text.
async fn run_timer(
    seen: &Arc<Mutex<Vec<Seen>>>,
    refuse: Vec<(&'static str, u16)>,
    ns: &str,
    objs: &[kube::api::DynamicObject],
) -> (anyhow::Result<()>, String) {
    let mut log = Vec::new();
    let result = k8s::timer::run(
        client(seen.clone(), refuse),
        ns,
        clock(),
        objs.to_vec(),
        &mut log,
    )
    .await;
    (result, String::from_utf8(log).unwrap())
}

#[tokio::test]
async fn creates_each_object_at_its_start_and_logs_windows() {
    let (objs, ns) = objects();
    let starts: Vec<f64> = objs
        .iter()
        .map(|o| {
            o.metadata.annotations.as_ref().unwrap()[chaos::START_ANNOTATION]
                .parse()
                .unwrap()
        })
        .collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    // The first object exists already (a restarted timer): 409 is success.
    let first = objs[0].metadata.name.clone().unwrap();
    let leaked: &'static str = Box::leak(first.into_boxed_str());
    let (result, text) = run_timer(&seen, vec![(leaked, 409)], &ns, &objs).await;
    result.unwrap();
    let seen = seen.lock().unwrap().clone();
    // The existing object is read back for its creation time.
    assert_eq!(seen[1].method, "GET");
    assert_eq!(seen[1].name, objs[0].metadata.name.clone().unwrap());
    let seen: Vec<Seen> = seen.into_iter().filter(|s| s.method == "POST").collect();
    assert_eq!(seen.len(), objs.len());
    for ((s, o), start) in seen.iter().zip(&objs).zip(&starts) {
        assert_eq!(s.method, "POST");
        assert_eq!(s.name, o.metadata.name.clone().unwrap());
        let kind = o.types.as_ref().unwrap().kind.to_lowercase();
        assert_eq!(
            s.path,
            format!("/apis/chaos-mesh.org/v1alpha1/namespaces/{ns}/{kind}")
        );
        assert!(
            s.at >= *start - 0.01 && s.at < start + 0.25,
            "{} created at {:.3}, due at {start:.3}",
            s.name,
            s.at
        );
    }
    let lines: Vec<FaultLogLine> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let starts_logged: Vec<&FaultLogLine> = lines
        .iter()
        .filter(|l| l.phase == LogPhase::Start)
        .collect();
    assert_eq!(starts_logged.len(), objs.len());
    // The existing object's start is when the earlier timer created it.
    assert_eq!(starts_logged[0].time, CREATED);
    assert!(starts_logged[1..].iter().all(|l| l.time > CREATED + 1000.0));
    assert!(lines.iter().all(|l| l.error.is_none()));
    let (windows, bad) = fault_windows_from_log(&text);
    assert_eq!(bad, 0);
    assert_eq!(windows.len(), objs.len());
    assert!(windows.iter().all(|w| w.end_time.is_some()), "{windows:?}");
    assert!(windows.iter().any(|w| w.kind == "crash"));
    assert!(windows
        .iter()
        .any(|w| w.kind == "latency" && w.targets == "dv0-0,dv0-2"));
}

#[tokio::test]
async fn a_refused_object_fails_the_timer_naming_it_after_the_rest_ran() {
    let (objs, ns) = objects();
    let second = objs[1].metadata.name.clone().unwrap();
    let leaked: &'static str = Box::leak(second.clone().into_boxed_str());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (result, text) = run_timer(&seen, vec![(leaked, 403)], &ns, &objs).await;
    let err = result.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&second) && msg.contains("1 fault object"),
        "{msg}"
    );
    assert_eq!(seen.lock().unwrap().len(), objs.len());
    let errors: Vec<FaultLogLine> = text
        .lines()
        .map(|l| serde_json::from_str::<FaultLogLine>(l).unwrap())
        .filter(|l| l.error.is_some())
        .collect();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].error.as_ref().unwrap().contains("refused"));
}

#[tokio::test]
async fn a_restarted_timer_logs_every_past_step_at_its_time() {
    // The whole timeline is 100 s past, every object exists: the new instance's log alone has
    // every start (at the creation time the API gives) and end (at its scheduled time).
    let (mut objs, ns) = objects();
    let t0 = now() - 100.0;
    let mut ends = Vec::new();
    for (k, o) in objs.iter_mut().enumerate() {
        let a = o.metadata.annotations.as_mut().unwrap();
        let start = t0 + k as f64;
        a.insert(chaos::START_ANNOTATION.into(), format!("{start:.3}"));
        if a.contains_key(chaos::END_ANNOTATION) {
            let end = format!("{:.3}", start + 0.5);
            ends.push(end.parse::<f64>().unwrap());
            a.insert(chaos::END_ANNOTATION.into(), end);
        }
    }
    let names: Vec<&'static str> = objs
        .iter()
        .map(|o| &*Box::leak(o.metadata.name.clone().unwrap().into_boxed_str()))
        .collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let t = now();
    let refuse = names.iter().map(|n| (*n, 409)).collect();
    let (result, text) = run_timer(&seen, refuse, &ns, &objs).await;
    result.unwrap();
    assert!(now() - t < 5.0, "no waiting for past steps");
    let lines: Vec<FaultLogLine> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let starts: Vec<f64> = lines
        .iter()
        .filter(|l| l.phase == LogPhase::Start)
        .map(|l| l.time)
        .collect();
    assert_eq!(starts, vec![CREATED; objs.len()]);
    let mut logged_ends: Vec<f64> = lines
        .iter()
        .filter(|l| l.phase == LogPhase::Stop)
        .map(|l| l.time)
        .collect();
    logged_ends.sort_by(f64::total_cmp);
    assert_eq!(logged_ends, ends);
    assert!(lines.iter().all(|l| l.error.is_none()));
    let gets = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "GET")
        .count();
    assert_eq!(gets, objs.len());
}
