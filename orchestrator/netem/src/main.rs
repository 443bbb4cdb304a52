//! `dvlab-netem`: a userspace packet delayer for kernels without `sch_netem`.
//!
//! It binds an NFQUEUE queue and holds every packet iptables sends there for `delay ± jitter`
//! (uniformly drawn per packet), then gives it the ACCEPT verdict. With zero jitter every
//! packet waits the same time and the release order is the arrival order, so flows keep their
//! order; with jitter, packets may be reordered, as with netem. Only packet metadata is copied
//! from the kernel. On SIGTERM/SIGINT all held packets are released before exiting, so healing
//! a latency fault never drops traffic.
//!
//! Typical use, in a container sharing the target's network namespace with `NET_ADMIN`:
//! `dvlab-netem --queue 7 --delay-ms 200 --jitter-ms 20` and then
//! `iptables -A OUTPUT -d PEER -j NFQUEUE --queue-num 7`.
//!
//! With `--http-error-port P` it is instead a beacon node that only fails: an HTTP server on
//! port P answering every request with `--status` (default 503) and a JSON error body in the
//! Beacon API's shape (`{"code", "message"}`). The `bn_errors` fault redirects a dvnode's
//! connections to its beacon node there (iptables `nat` REDIRECT in the dvnode's namespace).

use anyhow::{bail, Context, Result};
use clap::Parser;
use nfq::{Message, Queue, Verdict};
use rand::Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Command line.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// NFQUEUE queue number to bind.
    #[arg(long, required_unless_present = "http_error_port")]
    queue: Option<u16>,
    /// Mean added delay in milliseconds.
    #[arg(long, required_unless_present = "http_error_port")]
    delay_ms: Option<f64>,
    /// Jitter in milliseconds: each packet waits uniformly in [delay - jitter, delay + jitter].
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Kernel queue length (packets beyond it are dropped by the kernel).
    #[arg(long, default_value_t = 65_536)]
    max_len: u32,
    /// Instead of delaying packets: answer every HTTP request on this port with `--status`.
    #[arg(long, conflicts_with_all = ["queue", "delay_ms"])]
    http_error_port: Option<u16>,
    /// Status code of `--http-error-port`'s answers (4xx or 5xx).
    #[arg(long, default_value_t = 503, value_parser = clap::value_parser!(u16).range(400..600))]
    status: u16,
}

/// The `--http-error-port` app: every request, any method and path, gets `status` with a
/// Beacon-API-shaped JSON error body.
fn error_app(status: u16) -> Result<axum::Router> {
    use axum::http::StatusCode;
    let code = StatusCode::from_u16(status).context("status code")?;
    let body = serde_json::json!({
        "code": status,
        "message": format!("dvlab bn_errors fault: {}", code.canonical_reason().unwrap_or("error")),
    });
    Ok(axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { (code, axum::Json(body)) }
    }))
}

/// Serves [`error_app`] on `port` until SIGTERM/SIGINT.
fn serve_errors(port: u16, status: u16) -> Result<()> {
    let app = error_app(status)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .with_context(|| format!("binding port {port}"))?;
        eprintln!("dvlab-netem: http-error port {port} status {status}");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("SIGTERM handler")?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .context("serving")
    })
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// A held packet, ordered by release time then arrival.
struct Held {
    due: Instant,
    seq: u64,
    msg: Message,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

/// Draws a packet's delay.
fn draw(rng: &mut impl Rng, delay: Duration, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return delay;
    }
    let lo = delay.saturating_sub(jitter);
    let hi = delay + jitter;
    rng.gen_range(lo..=hi)
}

fn release(queue: &mut Queue, mut msg: Message) -> Result<()> {
    msg.set_verdict(Verdict::Accept);
    queue.verdict(msg).context("sending a verdict")
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(port) = args.http_error_port {
        return serve_errors(port, args.status);
    }
    let (Some(queue_num), Some(delay_ms)) = (args.queue, args.delay_ms) else {
        bail!("--queue and --delay-ms are required without --http-error-port");
    };
    let ms = |v: f64, what: &str| -> Result<Duration> {
        if !v.is_finite() || !(0.0..=60_000.0).contains(&v) {
            bail!("--{what} {v} must be between 0 and 60000 ms");
        }
        Ok(Duration::from_secs_f64(v / 1000.0))
    };
    let delay = ms(delay_ms, "delay-ms")?;
    let jitter = ms(args.jitter_ms, "jitter-ms")?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let mut queue = Queue::open().context("opening the netfilter queue socket (NET_ADMIN?)")?;
    queue
        .bind(queue_num)
        .with_context(|| format!("binding NFQUEUE {queue_num}"))?;
    queue.set_copy_range(queue_num, 0)?;
    queue.set_queue_max_len(queue_num, args.max_len)?;
    queue.set_nonblocking(true);
    eprintln!(
        "dvlab-netem: queue {} delay {:?} jitter {:?}",
        queue_num, delay, jitter
    );
    let mut rng = rand::thread_rng();
    let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut seq = 0u64;
    while !STOP.load(Ordering::SeqCst) {
        loop {
            match queue.recv() {
                Ok(msg) => {
                    seq += 1;
                    held.push(Reverse(Held {
                        due: Instant::now() + draw(&mut rng, delay, jitter),
                        seq,
                        msg,
                    }));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => break,
                Err(e) => return Err(e).context("receiving from NFQUEUE"),
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|h| h.0.due <= now) {
            let Reverse(h) = held.pop().expect("peeked");
            release(&mut queue, h.msg)?;
        }
        // New packets are picked up within a millisecond; due packets are released on time.
        let nap = held
            .peek()
            .map_or(Duration::from_millis(1), |h| {
                h.0.due.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(1));
        std::thread::sleep(nap);
    }
    let n = held.len();
    while let Some(Reverse(h)) = held.pop() {
        release(&mut queue, h.msg)?;
    }
    eprintln!("dvlab-netem: stopping, released {n} held packets");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A request of any method and path gets the status and a Beacon API error body.
    #[test]
    fn error_server_answers_every_request_with_the_status() {
        use std::io::{Read, Write};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = error_app(500).unwrap();
        std::thread::spawn(move || rt.block_on(async { axum::serve(listener, app).await }));
        for req in [
            "GET /eth/v1/node/syncing HTTP/1.1\r\nHost: bn\r\nConnection: close\r\n\r\n",
            "POST /eth/v1/validator/duties/attester/3 HTTP/1.1\r\nHost: bn\r\nContent-Length: 5\r\nConnection: close\r\n\r\n[\"1\"]",
        ] {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            assert!(out.starts_with("HTTP/1.1 500 Internal Server Error"), "{out}");
            let body = out.split("\r\n\r\n").nth(1).unwrap();
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["code"], 500, "{out}");
        }
    }

    #[test]
    fn delay_without_jitter_is_exact() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let d = Duration::from_millis(200);
        assert_eq!(draw(&mut rng, d, Duration::ZERO), d);
    }

    #[test]
    fn jitter_stays_in_bounds_and_varies() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (d, j) = (Duration::from_millis(100), Duration::from_millis(30));
        let draws: Vec<_> = (0..1000).map(|_| draw(&mut rng, d, j)).collect();
        assert!(draws
            .iter()
            .all(|x| *x >= Duration::from_millis(70) && *x <= Duration::from_millis(130)));
        let mean = draws.iter().sum::<Duration>() / 1000;
        assert!(
            mean > Duration::from_millis(95) && mean < Duration::from_millis(105),
            "{mean:?}"
        );
        // Jitter larger than the delay clamps at zero instead of underflowing.
        assert!(
            draw(
                &mut rng,
                Duration::from_millis(5),
                Duration::from_millis(50)
            ) <= d
        );
    }
}
