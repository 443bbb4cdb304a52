//! A beacon node on loopback that answers every request with the response the current fuzz
//! input chose (status, content type, body in chunks), so that dvnode's real HTTP clients
//! (the beacon-node client, the validator API's proxy) read fuzzed answers over a real socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::serve::ListenerExt;
use dvnode::eth::beacon::BeaconClient;

/// The answer the server gives until changed.
#[derive(Clone, Debug)]
pub struct Canned {
    /// HTTP status.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body chunks, sent as separate writes (a streamed body).
    pub chunks: Vec<Bytes>,
}

impl Default for Canned {
    fn default() -> Self {
        Canned {
            status: StatusCode::OK,
            content_type: "application/json",
            chunks: Vec::new(),
        }
    }
}

impl Canned {
    /// Status chosen by one fuzz byte: mostly 200, sometimes an error status.
    pub fn status_from(b: u8) -> StatusCode {
        match b % 8 {
            0..=4 => StatusCode::OK,
            5 => StatusCode::NOT_FOUND,
            6 => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// `body` cut into `1 + b % 16` pieces of equal length (the last shorter), sent as
    /// separate writes: reads see frame and UTF-8 boundaries anywhere, while an input costs
    /// at most 16 writes (1-byte chunks would make every execution thousands of them).
    pub fn chunked(body: &[u8], b: u8) -> Vec<Bytes> {
        let pieces = 1 + usize::from(b % 16);
        let size = body.len().div_ceil(pieces).max(1);
        if body.is_empty() {
            return vec![Bytes::new()];
        }
        body.chunks(size).map(Bytes::copy_from_slice).collect()
    }
}

/// The running server.
pub struct FakeBn {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    canned: Arc<Mutex<Canned>>,
    answered: Arc<AtomicU64>,
}

impl FakeBn {
    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Sets the answer of the following requests.
    pub fn set(&self, canned: Canned) {
        *self.canned.lock().unwrap_or_else(|e| e.into_inner()) = canned;
    }
}

/// The runtime of the targets that talk HTTP over loopback: current-thread, and the fake beacon
/// node is spawned on it, so client and server take turns on the fuzzer's own thread. (A server
/// on a thread of its own made every request wait for the OS to schedule the other thread: on the
/// shared 2-core machine, ~85% of beacon_client's wall time was spent idle.)
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(crate::runtime)
}

/// The process's fake beacon node, serving while [`runtime`] runs a task (started on first use).
pub fn get() -> &'static FakeBn {
    static BN: OnceLock<FakeBn> = OnceLock::new();
    BN.get_or_init(|| {
        let canned = Arc::new(Mutex::new(Canned::default()));
        let answered = Arc::new(AtomicU64::new(0));
        let (state, count) = (canned.clone(), answered.clone());
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the fake BN");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr: SocketAddr = std_listener.local_addr().expect("local addr");
        let _guard = runtime().enter();
        let listener = tokio::net::TcpListener::from_std(std_listener).expect("fake BN listener");
        let app = axum::Router::new().fallback(move || {
            let c = state.lock().unwrap_or_else(|e| e.into_inner()).clone();
            count.fetch_add(1, Ordering::SeqCst);
            async move { respond(c) }
        });
        // Each chunk is its own write: without TCP_NODELAY, Nagle holds the second one back
        // until the client's delayed ACK (up to 40 ms).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        runtime().spawn(async move { axum::serve(listener, app).await.expect("fake BN server") });
        FakeBn {
            url: format!("http://{addr}"),
            canned,
            answered,
        }
    })
}

/// dvnode's beacon-node client of the fake beacon node (one per process: its connection pool
/// is reused, as a node's is).
pub fn client() -> &'static BeaconClient {
    static C: OnceLock<BeaconClient> = OnceLock::new();
    C.get_or_init(|| {
        BeaconClient::with_timeouts(&get().url, Duration::from_secs(5), Duration::from_secs(5))
            .expect("client")
    })
}

fn respond(c: Canned) -> Response {
    let stream = futures::stream::iter(c.chunks.into_iter().map(Ok::<_, std::io::Error>));
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = c.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(c.content_type),
    );
    resp
}
