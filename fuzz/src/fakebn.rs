//! A beacon node on loopback that answers every request with the response the current fuzz
//! input chose (status, content type, body in chunks), so that dvnode's real HTTP clients
//! (the beacon-node client, the validator API's proxy) read fuzzed answers over a real socket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

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
}

impl FakeBn {
    /// Sets the answer of the following requests.
    pub fn set(&self, canned: Canned) {
        *self.canned.lock().unwrap_or_else(|e| e.into_inner()) = canned;
    }
}

/// The process's fake beacon node (started on first use, on its own thread and runtime).
pub fn get() -> &'static FakeBn {
    static BN: OnceLock<FakeBn> = OnceLock::new();
    BN.get_or_init(|| {
        let canned = Arc::new(Mutex::new(Canned::default()));
        let state = canned.clone();
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        std::thread::Builder::new()
            .name("fake-bn".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake BN runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("binding the fake BN");
                    tx.send(listener.local_addr().expect("local addr"))
                        .expect("reporting the fake BN address");
                    let app = axum::Router::new().fallback(move || {
                        let c = state.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        async move { respond(c) }
                    });
                    axum::serve(listener, app).await.expect("fake BN server");
                });
            })
            .expect("spawning the fake BN");
        let addr = rx.recv().expect("fake BN address");
        FakeBn {
            url: format!("http://{addr}"),
            canned,
        }
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
