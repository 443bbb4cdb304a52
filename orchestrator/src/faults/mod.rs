//! Faults: the spec's `faults` list turned into a seeded timeline ([`timeline`]), and an
//! executor ([`executor`]) that makes each fault really happen in Docker on this kernel (which
//! has no `sch_netem`); clock skew needs libfaketime in the container from its start
//! ([`skew`]).
//!
//! | kind | how |
//! | --- | --- |
//! | partition / isolate | iptables DROP on INPUT (from) and OUTPUT (to) the other groups' IPs, installed from a `NET_ADMIN` sidecar sharing the container's network namespace |
//! | loss | iptables `-m statistic --mode random --probability p -j DROP` on OUTPUT |
//! | loss with `to` (one-way) | the same, only on what the targets send to those peers that carries data (TCP with PSH or longer than a bare ACK, non-TCP): their ACKs pass, so they still hear the peers |
//! | bn_latency | a latency fault on the dvnode's beacon node's packets to the dvnode |
//! | bn_errors | iptables `nat` REDIRECT of the dvnode's new connections to its BN's REST port to `dvlab-netem --http-error-port` (answers every request with the status) in a sidecar, and a TCP reset of the connections opened before |
//! | latency / jitter | iptables `-j NFQUEUE` on OUTPUT and the `dvlab-netem` delayer in a sidecar, holding each packet for delay ± jitter before ACCEPT |
//! | bandwidth | TBF root qdisc on the container's `eth0` |
//! | crash | SIGKILL, then start again after `restart_after` |
//! | stop | graceful stop (SIGTERM, 10 s), then start again after `restart_after` |
//! | pause | `docker pause` (cgroup freezer), then unpause |
//! | clock skew | libfaketime preloaded at container start ([`skew::prepare_containers`]); the executor rewrites the offset file mid-run |
//!
//! Latency and loss act on the packets a target sends (as netem on one host does); on a
//! `link: [a, b]` they act on both directions between `a` and `b`. A restarted container has
//! a new network namespace (and maybe a new IP): every active network fault involving it is
//! re-applied. After a partition involving beacon nodes heals, and after a beacon node
//! restarts, the executor re-peers them explicitly (`POST /eth/v1/lodestar/connect_peer`),
//! because Lodestar 1.5.1 does not re-peer by itself. Every fault start and stop is logged
//! with wall time, slot, kind and targets to `faults.jsonl` in the run's output directory.

#[cfg(feature = "lab")]
pub mod executor;
pub mod skew;
pub mod timeline;

#[cfg(feature = "lab")]
pub use executor::{Executor, FaultContainer, SIDECAR_ROLE};
pub use skew::{
    clock_dir, faketime_env, prepare_containers, write_offset, CLOCK_DIR, CLOCK_FILE, FAKETIME_LIB,
};
pub use timeline::{
    intended_down, intended_down_between, slot_at, timeline, Action, Fault, Phase, Timeline,
};

#[cfg(test)]
pub(crate) mod test_support {
    use crate::spec::DevnetSpec;

    const BASIC: &str = include_str!("../../../devnets/basic.yaml");

    /// `devnets/basic.yaml` with these `faults:` lines and seed.
    pub fn spec_with(faults: &str, seed: u64) -> DevnetSpec {
        let text = BASIC
            .replace("faults: []", &format!("faults:\n{faults}"))
            .replace("seed: 42", &format!("seed: {seed}"));
        DevnetSpec::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }
}
