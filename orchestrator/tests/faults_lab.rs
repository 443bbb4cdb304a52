//! Validation of the fault lab itself: each fault really happens, measured in real
//! containers (dvlab/base:bookworm on a labelled network) through the real executor, so a
//! green chaos run cannot be a no-op. Runs only with DVLAB_E2E=1 (needs Docker; builds the
//! base and `dvlab/netem` images when they are missing or out of date). Every test removes
//! its containers and network, also when it fails. Run with `--nocapture` to see the figures.

use anyhow::{anyhow, bail, Context, Result};
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
use bollard::Docker;
use dvlab::data::{Effect, Scope};
use dvlab::faults::{self, Action, Executor, Fault, FaultContainer, Phase, Timeline, CLOCK_DIR};
use dvlab::images::{self, ImageInputs};
use dvlab::plan::{BN_REST_PORT, ROLE_LABEL, RUN_LABEL};
use dvlab::runtime;
use dvnode::clock::{unix_now, SlotClock};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::OnceCell;

const BASE: &str = images::BASE_IMAGE;
static IMAGES: OnceCell<()> = OnceCell::const_new();

fn enabled(test: &str) -> bool {
    if std::env::var("DVLAB_E2E").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("SKIPPED {test}: set DVLAB_E2E=1 to run it (needs Docker)");
    false
}

fn now() -> f64 {
    unix_now().as_secs_f64()
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds `dvlab-netem` and the base and sidecar images when they are not up to date.
async fn ensure_images(docker: &Docker) -> Result<()> {
    IMAGES
        .get_or_try_init(|| async {
            let status = tokio::process::Command::new(env!("CARGO"))
                .args(["build", "-p", "dvlab-netem"])
                .current_dir(workspace())
                .status()
                .await?;
            if !status.success() {
                bail!("cargo build -p dvlab-netem failed: {status}");
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("target"));
            let inputs = ImageInputs {
                mirror: "http://deb.debian.org/debian".into(),
                shared_dir: workspace().join("../shared"),
                lodestar_dir: PathBuf::from("/var/cache/dvlab/lodestar-1.5.1"),
                dvnode_binary: target.join("release/dvnode"),
                cache_dir: PathBuf::from("/var/cache/dvlab"),
            };
            images::build_base(docker, &inputs).await?;
            images::build_netem(docker, &target.join("debug/dvlab-netem")).await
        })
        .await
        .map(|_| ())
}

/// Containers of one lab run.
struct Lab {
    docker: Docker,
    run: String,
    exec: Executor,
    dir: PathBuf,
}

impl Lab {
    fn name(&self, short: &str) -> String {
        format!("dvlab-{}-{short}", self.run)
    }

    async fn sh(&self, short: &str, script: &str) -> Result<String> {
        runtime::exec(
            &self.docker,
            &self.name(short),
            &["bash".to_string(), "-c".into(), script.into()],
        )
        .await
    }

    async fn ip(&self, short: &str) -> Result<String> {
        let info = self
            .docker
            .inspect_container(&self.name(short), None)
            .await?;
        info.network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.into_values().find_map(|e| e.ip_address))
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| anyhow!("{short} has no IP"))
    }

    /// Pings `to` from `from`: (sent, received, average RTT ms).
    async fn ping(&self, from: &str, to: &str, count: u32, interval: f64) -> Result<Ping> {
        let ip = self.ip(to).await?;
        let out = self
            .sh(
                from,
                // -w: wait for every reply until a deadline, so a slow reply on this busy
                // machine is not counted as lost.
                &format!(
                    "ping -n -q -c {count} -i {interval} -w {} {ip} 2>&1; true",
                    (count as f64 * interval).ceil() as u64 + 3
                ),
            )
            .await?;
        Ping::parse(&out)
    }

    async fn apply(&self, f: &Fault) -> Result<()> {
        self.exec.execute(&action(f, Phase::Start)).await
    }

    async fn heal(&self, f: &Fault) -> Result<()> {
        self.exec.execute(&action(f, Phase::Stop)).await
    }
}

#[derive(Debug)]
struct Ping {
    sent: u32,
    received: u32,
    avg_ms: Option<f64>,
    min_ms: Option<f64>,
    max_ms: Option<f64>,
    mdev_ms: Option<f64>,
}

impl Ping {
    fn parse(out: &str) -> Result<Ping> {
        let stats = out
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .ok_or_else(|| anyhow!("no ping summary in: {out}"))?;
        let num = |word: &str| -> Result<u32> {
            let i = stats
                .find(word)
                .ok_or_else(|| anyhow!("no `{word}` in {stats}"))?;
            Ok(stats[..i]
                .rsplit(|c: char| !c.is_ascii_digit())
                .find(|s| !s.is_empty())
                .ok_or_else(|| anyhow!("no number before `{word}`"))?
                .parse()?)
        };
        let rtt: Option<Vec<f64>> = out.lines().find(|l| l.starts_with("rtt")).map(|l| {
            // "rtt min/avg/max/mdev = 0.1/0.2/0.3/0.04 ms[, pipe 2]"
            l.split('=')
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or("")
                .split('/')
                .filter_map(|v| v.parse().ok())
                .collect()
        });
        let at = |i: usize| rtt.as_ref().and_then(|v| v.get(i).copied());
        Ok(Ping {
            sent: num(" packets transmitted")?,
            received: num(" received")?,
            min_ms: at(0),
            avg_ms: at(1),
            max_ms: at(2),
            mdev_ms: at(3),
        })
    }
}

fn fault(id: u16, effect: Effect) -> Fault {
    Fault {
        id,
        source: 0,
        name: None,
        effect,
        start: now(),
        end: None,
    }
}

fn action(f: &Fault, phase: Phase) -> Action {
    Action {
        time: now(),
        slot: 0,
        phase,
        fault: f.clone(),
    }
}

/// Creates the network and containers (`sleep infinity`, or `cmd`), runs `body`, and always
/// tears everything down (sidecars included) before reporting the outcome.
async fn with_lab<F, Fut>(run: &str, containers: &[(&str, Option<&str>)], skewed: &[&str], body: F)
where
    F: FnOnce(Lab) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let docker = runtime::connect()
        .await
        .expect("DVLAB_E2E=1 but Docker is not reachable");
    ensure_images(&docker)
        .await
        .expect("building the lab images");
    let _ = runtime::down(&docker, Some(run)).await;
    let dir = tempfile::tempdir().unwrap();
    let setup = setup(&docker, run, containers, skewed, dir.path()).await;
    let outcome = match setup {
        Ok(exec) => {
            let lab = Lab {
                docker: docker.clone(),
                run: run.to_string(),
                exec: exec.clone(),
                dir: dir.path().to_path_buf(),
            };
            let res = tokio::spawn(body(lab)).await;
            let healed = exec.heal_all().await;
            res.map(|r| r.and(healed))
        }
        Err(e) => Ok(Err(e)),
    };
    let down = runtime::down(&docker, Some(run)).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{run}: {e:#}"),
        Err(j) => std::panic::resume_unwind(j.into_panic()),
    }
    down.expect("teardown");
    let left = runtime::list(&docker, Some(run)).await.unwrap();
    assert!(left.is_empty(), "containers left: {left:?}");
}

async fn setup(
    docker: &Docker,
    run: &str,
    containers: &[(&str, Option<&str>)],
    skewed: &[&str],
    dir: &Path,
) -> Result<Executor> {
    let labels = HashMap::from([(RUN_LABEL.to_string(), run.to_string())]);
    let network = format!("dvlab-{run}");
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".into()),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await?;
    let mut fcs = Vec::new();
    for (short, cmd) in containers {
        let name = format!("dvlab-{run}-{short}");
        let mut env = vec![];
        let mut binds = vec![];
        if skewed.contains(short) {
            env = faults::faketime_env();
            let host = dir.join(faults::clock_dir(short));
            faults::write_offset(&host, 0.0)?;
            binds.push(format!("{}:{CLOCK_DIR}:ro", host.display()));
        }
        let mut l = labels.clone();
        l.insert(ROLE_LABEL.into(), "lab".into());
        let body = ContainerCreateBody {
            image: Some(BASE.into()),
            cmd: Some(vec![
                "bash".into(),
                "-c".into(),
                cmd.unwrap_or("exec sleep infinity").into(),
            ]),
            env: Some(env),
            labels: Some(l),
            host_config: Some(HostConfig {
                network_mode: Some(network.clone()),
                binds: Some(binds),
                ..Default::default()
            }),
            ..Default::default()
        };
        runtime::run_container(docker, &name, body).await?;
        fcs.push(FaultContainer {
            short: short.to_string(),
            name,
            beacon_node: false,
        });
    }
    let clock = SlotClock::new(now() as u64, 4, 8);
    Executor::new(docker.clone(), run, fcs, clock, dir)
}

#[tokio::test]
async fn partition_blocks_both_ways_and_heals() {
    if !enabled("partition_blocks_both_ways_and_heals") {
        return;
    }
    let cs = [("a", None), ("b", None), ("c", None)];
    with_lab("flab-part", &cs, &[], |lab| async move {
        let before = lab.ping("a", "b", 3, 0.2).await?;
        assert_eq!(before.received, 3, "{before:?}");
        let p = fault(
            1,
            Effect::Partition {
                groups: vec![vec!["a".into()], vec!["b".into(), "c".into()]],
            },
        );
        lab.apply(&p).await?;
        let ab = lab.ping("a", "b", 5, 0.2).await?;
        let ba = lab.ping("b", "a", 5, 0.2).await?;
        let ca = lab.ping("c", "a", 5, 0.2).await?;
        let bc = lab.ping("b", "c", 5, 0.2).await?;
        eprintln!(
            "partition a|b,c: a->b {}/{}, b->a {}/{}, c->a {}/{}, b->c {}/{}",
            ab.received, ab.sent, ba.received, ba.sent, ca.received, ca.sent, bc.received, bc.sent
        );
        assert_eq!((ab.received, ba.received, ca.received), (0, 0, 0));
        assert_eq!(bc.received, 5, "same-side traffic must flow");
        lab.heal(&p).await?;
        let ab = lab.ping("a", "b", 5, 0.2).await?;
        let ba = lab.ping("b", "a", 5, 0.2).await?;
        eprintln!("healed: a->b {}/5, b->a {}/5", ab.received, ba.received);
        assert_eq!((ab.received, ba.received), (5, 5));
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn loss_drops_about_the_configured_share() {
    if !enabled("loss_drops_about_the_configured_share") {
        return;
    }
    let cs = [("a", None), ("b", None)];
    with_lab("flab-loss", &cs, &[], |lab| async move {
        let l = fault(
            2,
            Effect::Loss {
                scope: Scope::Egress(vec!["a".into()]),
                percent: 30.0,
            },
        );
        lab.apply(&l).await?;
        let n = 500;
        let p = lab.ping("a", "b", n, 0.01).await?;
        let lost = 1.0 - p.received as f64 / p.sent as f64;
        eprintln!(
            "loss 30%: {} of {} probes answered, measured loss {:.1}%",
            p.received,
            p.sent,
            lost * 100.0
        );
        // The deadline may cut the run short of `n` on a busy machine.
        assert!(p.sent >= 300, "{p:?}");
        // Binomial(300..500, 0.3): sd 2.0-2.6 points; ±8 points is over 3 sd.
        assert!((0.22..=0.38).contains(&lost), "measured loss {lost}");
        lab.heal(&l).await?;
        let p = lab.ping("a", "b", 200, 0.01).await?;
        eprintln!("healed: {} of {} answered", p.received, p.sent);
        assert!(p.received >= 199, "{p:?}");
        Ok(())
    })
    .await;
}

/// The first line `from` gets for `GET /eth/v1/node/health` on `to`'s REST port (bash's
/// `/dev/tcp`; the lab image has no HTTP client), or `refused` when nothing listens. bash's own
/// report of a refused connection goes to stderr, which `Lab::sh` returns with stdout in no fixed
/// order, so the connect runs in a group whose stderr is discarded.
async fn http_status_line(lab: &Lab, from: &str, to: &str) -> Result<String> {
    let ip = lab.ip(to).await?;
    let out = lab
        .sh(
            from,
            &format!(
                "{{ exec 3<>/dev/tcp/{ip}/{BN_REST_PORT}; }} 2>/dev/null || {{ echo refused; exit 0; }}; \
                 printf 'GET /eth/v1/node/health HTTP/1.1\\r\\nHost: bn\\r\\nConnection: close\\r\\n\\r\\n' >&3; \
                 timeout 5 head -n 1 <&3"
            ),
        )
        .await?;
    Ok(out.trim().lines().last().unwrap_or_default().to_string())
}

/// bn_errors: the dvnode's requests to its beacon node's REST port are answered with the
/// status, another client of the same beacon node is not affected, and healing restores the
/// path (here nothing listens on the "beacon node", so the real answer is a refusal).
#[tokio::test]
async fn bn_errors_answers_the_dvnode_only_and_heals() {
    if !enabled("bn_errors_answers_the_dvnode_only_and_heals") {
        return;
    }
    let cs = [("dv", None), ("other", None), ("bn", None)];
    with_lab("flab-bnerr", &cs, &[], |lab| async move {
        assert_eq!(http_status_line(&lab, "dv", "bn").await?, "refused");
        let f = fault(
            7,
            Effect::BnErrors {
                target: "dv".into(),
                beacon_node: "bn".into(),
                status: 503,
            },
        );
        lab.apply(&f).await?;
        let dv = http_status_line(&lab, "dv", "bn").await?;
        let other = http_status_line(&lab, "other", "bn").await?;
        eprintln!("bn_errors: dv gets `{dv}`, other gets `{other}`");
        assert!(dv.starts_with("HTTP/1.1 503"), "{dv}");
        assert_eq!(other, "refused");
        lab.heal(&f).await?;
        let dv = http_status_line(&lab, "dv", "bn").await?;
        eprintln!("healed: dv gets `{dv}`");
        assert_eq!(dv, "refused");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn latency_adds_measured_delay() {
    if !enabled("latency_adds_measured_delay") {
        return;
    }
    let cs = [("a", None), ("b", None), ("c", None)];
    with_lab("flab-lat", &cs, &[], |lab| async move {
        let base = lab.ping("a", "b", 10, 0.2).await?;
        let base_avg = base.avg_ms.ok_or_else(|| anyhow!("{base:?}"))?;
        let lat = fault(
            3,
            Effect::Latency {
                scope: Scope::Egress(vec!["a".into()]),
                delay_ms: 200.0,
                jitter_ms: 0.0,
            },
        );
        lab.apply(&lat).await?;
        let p = lab.ping("a", "b", 20, 0.2).await?;
        let back = lab.ping("b", "a", 10, 0.2).await?;
        let (avg, min) = (p.avg_ms.unwrap_or(0.0), p.min_ms.unwrap_or(0.0));
        eprintln!(
            "latency 200ms on a: base RTT {base_avg:.2} ms; a->b RTT min/avg/max {min:.1}/{avg:.1}/{:.1} ms \
             ({} of 20); b->a (reply delayed) avg {:.1} ms",
            p.max_ms.unwrap_or(0.0),
            p.received,
            back.avg_ms.unwrap_or(0.0)
        );
        assert_eq!(p.received, 20, "a delayer must not drop: {p:?}");
        assert!(
            min >= 199.0 && avg - base_avg >= 195.0 && avg - base_avg <= 230.0,
            "{p:?}"
        );
        assert!((avg - back.avg_ms.unwrap_or(0.0)).abs() < 30.0, "{back:?}");
        lab.heal(&lat).await?;
        let after = lab.ping("a", "b", 10, 0.2).await?;
        eprintln!("healed: RTT avg {:.2} ms", after.avg_ms.unwrap_or(-1.0));
        assert!(after.received == 10 && after.avg_ms.unwrap_or(1e9) < base_avg + 20.0);

        // Jitter spreads the delay; a link delays both directions between its ends only.
        let jit = fault(
            4,
            Effect::Latency {
                scope: Scope::Link("a".into(), "b".into()),
                delay_ms: 100.0,
                jitter_ms: 40.0,
            },
        );
        lab.apply(&jit).await?;
        let ab = lab.ping("a", "b", 30, 0.1).await?;
        let ac = lab.ping("a", "c", 10, 0.1).await?;
        eprintln!(
            "link a-b 100ms ± 40ms: a->b RTT min/avg/max/mdev {:.1}/{:.1}/{:.1}/{:.1} ms; a->c avg {:.2} ms",
            ab.min_ms.unwrap_or(0.0),
            ab.avg_ms.unwrap_or(0.0),
            ab.max_ms.unwrap_or(0.0),
            ab.mdev_ms.unwrap_or(0.0),
            ac.avg_ms.unwrap_or(-1.0)
        );
        let avg = ab.avg_ms.unwrap_or(0.0);
        assert!((170.0..=235.0).contains(&avg), "two legs of 100 ms: {ab:?}");
        assert!(ab.min_ms.unwrap_or(0.0) >= 119.0 && ab.max_ms.unwrap_or(1e9) <= 290.0);
        assert!(ab.mdev_ms.unwrap_or(0.0) > 8.0, "jitter must spread RTTs: {ab:?}");
        assert!(ac.avg_ms.unwrap_or(1e9) < base_avg + 20.0, "{ac:?}");
        lab.heal(&jit).await?;
        Ok(())
    })
    .await;
}

/// A TCP sink on port 5001 that appends `UNIX-second cumulative-bytes` to /tmp/sink whenever
/// the second changes, for one connection; the container then idles (perl-base is in every
/// Debian image; Time::HiRes is not, hence whole seconds).
const SINK: &str = "perl -MIO::Socket::INET -e '$|=1; \
     my $s = IO::Socket::INET->new(LocalPort => 5001, Listen => 1, ReuseAddr => 1) or die $!; \
     my $c = $s->accept; my ($n, $t, $b) = (0, time); \
     while ((my $r = sysread($c, $b, 65536)) > 0) { $n += $r; if (time != $t) { $t = time; \
     open(my $f, \">>\", \"/tmp/sink\"); print $f \"$t $n\\n\"; close $f } }'; \
     exec sleep infinity";

/// Streams zeros from `from` to the sink on `to` for `secs` seconds and returns the receive
/// rate in bits/s over the whole seconds after the first (TCP slow start excluded).
async fn throughput(lab: &Lab, from: &str, to: &str, secs: u64) -> Result<f64> {
    let ip = lab.ip(to).await?;
    lab.sh(
        from,
        &format!("timeout {secs} cat /dev/zero > /dev/tcp/{ip}/5001 2>/dev/null; true"),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = lab.sh(to, "cat /tmp/sink 2>/dev/null; true").await?;
    let samples: Vec<(f64, f64)> = out
        .lines()
        .filter_map(|l| {
            let (t, n) = l.split_once(' ')?;
            Some((t.parse().ok()?, n.parse().ok()?))
        })
        .collect();
    if samples.len() < 4 {
        bail!("too few sink samples: {out:?}");
    }
    // Skip the first second (slow start) and the tail after the sender stopped (buffered bytes).
    let (t0, n0) = samples[1];
    let (t1, n1) = samples[samples.len() - 2];
    if t1 - t0 < 1.0 {
        bail!("sink span too short: {out:?}");
    }
    Ok((n1 - n0) * 8.0 / (t1 - t0))
}

#[tokio::test]
async fn bandwidth_limits_egress_rate() {
    if !enabled("bandwidth_limits_egress_rate") {
        return;
    }
    let cs = [("a", None), ("b", Some(SINK)), ("c", Some(SINK))];
    with_lab("flab-bw", &cs, &[], |lab| async move {
        let limit = 2_000_000u64;
        let bw = fault(
            8,
            Effect::Bandwidth {
                targets: vec!["a".into()],
                bits_per_sec: limit,
            },
        );
        lab.apply(&bw).await?;
        let limited = throughput(&lab, "a", "b", 8).await?;
        lab.heal(&bw).await?;
        let free = throughput(&lab, "a", "c", 5).await?;
        eprintln!(
            "bandwidth 2 mbit on a: a->b {:.2} Mbit/s limited; {:.0} Mbit/s after the heal",
            limited / 1e6,
            free / 1e6
        );
        // TBF shapes the payload plus headers to the rate: goodput just under 2 Mbit/s.
        assert!(
            (0.75 * limit as f64..=1.05 * limit as f64).contains(&limited),
            "limited rate {limited} bit/s"
        );
        assert!(free > 10.0 * limit as f64, "healed rate {free} bit/s");
        Ok(())
    })
    .await;
}

/// A long-running awk writes its own `systime()` (libc `time`, in the same process) every
/// 0.3 s. (bash's builtin `printf %(%s)T` does not go through the preloaded library.)
const CLOCK_LOOP: &str = "exec awk 'BEGIN { while (1) { print systime() > \"/tmp/t.new\"; \
     close(\"/tmp/t.new\"); system(\"mv /tmp/t.new /tmp/t; sleep 0.3\") } }'";

/// (offset seen by `date` in a new process, offset seen by the running loop), in seconds.
async fn offsets(lab: &Lab, c: &str) -> Result<(f64, f64)> {
    let t0 = now();
    let out = lab.sh(c, "date +%s.%N; cat /tmp/t").await?;
    let mut l = out.lines();
    let date: f64 = l.next().unwrap_or("").parse()?;
    let looped: f64 = l.next().unwrap_or("").parse()?;
    Ok((date - t0, looped - t0))
}

/// libfaketime re-reads the offset file once its 1 s cache is more than a second old.
const SKEW_SETTLE: Duration = Duration::from_millis(2500);

#[tokio::test]
async fn clock_skew_moves_the_clock_mid_run() {
    if !enabled("clock_skew_moves_the_clock_mid_run") {
        return;
    }
    let cs = [("s", Some(CLOCK_LOOP)), ("plain", Some(CLOCK_LOOP))];
    with_lab("flab-clock", &cs, &["s"], |lab| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (d0, l0) = offsets(&lab, "s").await?;
        eprintln!("before skew: date {d0:+.2} s, running process {l0:+.2} s");
        assert!(d0.abs() < 1.0 && l0.abs() < 1.5);
        let plus = fault(
            5,
            Effect::ClockSkew {
                target: "s".into(),
                offset_secs: 30.0,
            },
        );
        let minus = fault(
            6,
            Effect::ClockSkew {
                target: "s".into(),
                offset_secs: -12.0,
            },
        );
        lab.apply(&plus).await?;
        tokio::time::sleep(SKEW_SETTLE).await;
        let (d1, l1) = offsets(&lab, "s").await?;
        let (pd, pl) = offsets(&lab, "plain").await?;
        eprintln!("skew +30s: date {d1:+.2} s, running process {l1:+.2} s; unskewed container {pd:+.2}/{pl:+.2} s");
        assert!((d1 - 30.0).abs() < 1.0, "date offset {d1}");
        assert!((l1 - 30.0).abs() < 1.6, "running process offset {l1}");
        assert!(pd.abs() < 1.0 && pl.abs() < 1.6);
        // Overlapping skews add up; healing one leaves the other.
        lab.apply(&minus).await?;
        tokio::time::sleep(SKEW_SETTLE).await;
        let (d2, l2) = offsets(&lab, "s").await?;
        lab.heal(&plus).await?;
        tokio::time::sleep(SKEW_SETTLE).await;
        let (d3, l3) = offsets(&lab, "s").await?;
        lab.heal(&minus).await?;
        tokio::time::sleep(SKEW_SETTLE).await;
        let (d4, l4) = offsets(&lab, "s").await?;
        eprintln!(
            "+30s and -12s: date {d2:+.2} s / loop {l2:+.2} s; -12s only: {d3:+.2} / {l3:+.2} s; healed: {d4:+.2} / {l4:+.2} s"
        );
        assert!((d2 - 18.0).abs() < 1.0 && (l2 - 18.0).abs() < 1.6);
        assert!((d3 + 12.0).abs() < 1.0 && (l3 + 12.0).abs() < 1.6);
        assert!(d4.abs() < 1.0 && l4.abs() < 1.6);
        Ok(())
    })
    .await;
}

/// Counts up every 0.1 s.
/// Counts 10 per second into /tmp/n. Each value is written to a scratch file and renamed over
/// /tmp/n, so a reader sees the previous or the next value, never the empty file that
/// `echo > /tmp/n` leaves between its truncate and its write (a read in that gap once failed
/// CI with "cannot parse integer from empty string").
const COUNTER: &str =
    "i=0; while true; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.1; done";

async fn counter(lab: &Lab, c: &str) -> Result<u64> {
    let out = lab.sh(c, "cat /tmp/n").await?;
    out.trim()
        .parse()
        .with_context(|| format!("{c}: counter file /tmp/n holds {out:?}"))
}

#[tokio::test]
async fn pause_freezes_and_timeline_logs() {
    if !enabled("pause_freezes_and_timeline_logs") {
        return;
    }
    let cs = [("p", Some(COUNTER))];
    with_lab("flab-pause", &cs, &[], |lab| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Through the timeline runner: pause 1 s from now, for 3 s.
        let t = now() + 1.0;
        let mut f = fault(7, Effect::Pause { target: "p".into() });
        f.start = t;
        f.end = Some(t + 3.0);
        let at = |time: f64, phase: Phase| Action {
            time,
            slot: 0,
            phase,
            fault: f.clone(),
        };
        let tl = Timeline {
            faults: vec![f.clone()],
            actions: vec![at(t, Phase::Start), at(t + 3.0, Phase::Stop)],
        };
        let out = lab.dir.join("out");
        let handle = lab.exec.run(tl, &out);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n_before = counter(&lab, "p").await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let paused = lab
            .docker
            .inspect_container(&lab.name("p"), None)
            .await?
            .state
            .and_then(|s| s.paused);
        let exec_while_paused = counter(&lab, "p").await;
        handle.await??;
        let n_after = counter(&lab, "p").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n_later = counter(&lab, "p").await?;
        eprintln!(
            "pause 3 s: docker paused={paused:?}, exec while paused: {}; counter (10/s) {n_before} \
             0.5 s before the pause -> {n_after} right after it -> {n_later} 1 s later",
            match &exec_while_paused {
                Ok(v) => format!("ok ({v})"),
                Err(e) => format!("refused ({e:#})"),
            }
        );
        assert_eq!(paused, Some(true));
        assert!(exec_while_paused.is_err());
        // Unfrozen it would have counted ~35 over those 3.5 s.
        assert!(n_after - n_before < 15, "counter advanced while paused");
        assert!(
            n_later >= n_after + 5,
            "counter must run again after unpause"
        );
        let log = std::fs::read_to_string(out.join("faults.jsonl"))?;
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        eprintln!("faults.jsonl:\n{log}");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["phase"], "start");
        assert_eq!(lines[1]["phase"], "stop");
        assert_eq!(lines[0]["kind"], "pause");
        assert_eq!(lines[0]["targets"][0], "p");
        assert!(lines[0]["error"].is_null() && lines[1]["error"].is_null());
        let late = lines[0]["time"].as_f64().unwrap() - lines[0]["scheduled"].as_f64().unwrap();
        assert!((0.0..0.5).contains(&late), "started {late} s late");
        Ok(())
    })
    .await;
}

/// (running, exit code, StartedAt, pid) of a container.
async fn started(lab: &Lab) -> Result<(Option<bool>, Option<i64>, Option<String>, Option<i64>)> {
    let s = lab
        .docker
        .inspect_container(&lab.name("x"), None)
        .await?
        .state
        .ok_or_else(|| anyhow!("no state"))?;
    Ok((s.running, s.exit_code, s.started_at, s.pid))
}

#[tokio::test]
async fn crash_restarts_and_network_faults_follow() {
    if !enabled("crash_restarts_and_network_faults_follow") {
        return;
    }
    let cs = [("x", Some(COUNTER)), ("y", None)];
    with_lab("flab-crash", &cs, &[], |lab| async move {
        let part = fault(
            8,
            Effect::Partition {
                groups: vec![vec!["x".into()], vec!["y".into()]],
            },
        );
        lab.apply(&part).await?;
        assert_eq!(lab.ping("x", "y", 2, 0.2).await?.received, 0);
        let before = started(&lab).await?;
        let crash = fault(9, Effect::Crash { target: "x".into() });
        lab.apply(&crash).await?;
        let down = started(&lab).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        lab.heal(&crash).await?;
        let after = started(&lab).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let counter = counter(&lab, "x").await?;
        let still = lab.ping("x", "y", 3, 0.2).await?;
        let back = lab.ping("y", "x", 3, 0.2).await?;
        eprintln!(
            "crash: before {before:?}; killed {down:?}; restarted {after:?}, counter {counter} (fresh process); \
             partition re-applied in the new netns: x->y {}/3, y->x {}/3",
            still.received, back.received
        );
        assert_eq!(down.0, Some(false));
        assert_eq!(down.1, Some(137), "SIGKILL exit code");
        assert_eq!(after.0, Some(true));
        assert_ne!(before.2, after.2, "StartedAt must change");
        assert!(counter < 20, "counter restarted from 0: {counter}");
        assert_eq!((still.received, back.received), (0, 0));
        lab.heal(&part).await?;
        let ok = lab.ping("x", "y", 3, 0.2).await?;
        eprintln!("partition healed: x->y {}/3", ok.received);
        assert_eq!(ok.received, 3);
        Ok(())
    })
    .await;
}
