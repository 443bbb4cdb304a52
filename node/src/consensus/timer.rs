//! Round timer strategies.
//!
//! QBFT's liveness argument needs round timeouts that grow with the round: after GST, message
//! delay is bounded by some unknown Δ, and once the timeout of a round exceeds the time honest
//! nodes need to enter the round together and exchange PRE-PREPARE, PREPAREs and COMMITs
//! (a few Δ), a round with an honest leader decides.
//!
//! The default is [`LinearTimer`]: `base + (round − 1) · increment`. Linear growth (rather than
//! exponential) is deliberate: Ethereum duties have hard deadlines of a few seconds, so after a
//! burst of failed rounds (crashed leaders, a partition) the cluster must not be left waiting on
//! a timer that doubled past the duty deadline, yet every round still waits longer than the last,
//! which is all the liveness proof needs. With the defaults (750 ms + 250 ms per round, the
//! values Charon uses for its "increasing" timer) round 1 gives a healthy LAN/WAN cluster ample
//! time, and rounds 2–5 together still fit within an attestation's 4-second window.
//!
//! Round 1, once this node accepted its proposal, is extended by
//! [`TimerStrategy::proposal_extension`] (by default its own timeout, so 750 ms becomes
//! 1.5 s). Measured why (docs/PERFORMANCE.md, latency-200ms): with 200 ms per hop a round
//! needs PRE-PREPARE + PREPARE + COMMIT ≈ 0.65–0.8 s after the leader's input, so the plain
//! 750 ms round 1 timed out 22–31 times per node in a run (0–4 without the latency), and a
//! round 2 (ROUND-CHANGE, justified PRE-PREPARE, PREPARE, COMMIT: four hops in 1 s) failed as
//! well when the epoch start added load — the first slot of an epoch was decided in round 3,
//! after the aggregation deadline.

use std::time::Duration;

/// Chooses how long a node waits in a round before asking for a round change.
pub trait TimerStrategy: Send + Sync + std::fmt::Debug {
    /// Timeout of `round` (rounds start at 1). Must not decrease as `round` grows.
    fn round_timeout(&self, round: u64) -> Duration;

    /// How much longer `round` lasts once this node accepted the round's proposal
    /// ([`super::qbft::Output::ExtendTimeout`]; zero: not at all). By default round 1 doubles
    /// (Charon's "eager double linear" timer doubles a round on its proposal too): a round
    /// whose leader proposed needs only PREPAREs and COMMITs more, and giving up on it costs a
    /// round change plus a new proposal — more hops than the round had left. A round 1
    /// without a proposal (crashed or partitioned leader) keeps its plain timeout.
    ///
    /// Later rounds are not extended: nodes enter round 1 together (at the duty's start) but
    /// later rounds at their own timeouts, and with relative timers a longer round at some
    /// nodes lets the others run rounds ahead — the increasing timeouts that make laggards
    /// catch up then take longer than the simulation's 60 s bound after GST (measured:
    /// `tests/qbft_sim.rs` failed termination on 2–12 of 1,000 seeds in five of its tests
    /// when every accepted round doubled). Charon avoids that with round deadlines on one
    /// absolute clock. Timers bear on liveness only, never on safety.
    fn proposal_extension(&self, round: u64) -> Duration {
        if round == 1 {
            self.round_timeout(1)
        } else {
            Duration::ZERO
        }
    }
}

/// Linearly increasing timeouts: `base + (round − 1) · increment` (saturating).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearTimer {
    /// Timeout of round 1.
    pub base: Duration,
    /// Added per further round.
    pub increment: Duration,
}

impl LinearTimer {
    /// A timer with the given round-1 timeout and per-round increment.
    pub const fn new(base: Duration, increment: Duration) -> Self {
        Self { base, increment }
    }
}

impl Default for LinearTimer {
    /// 750 ms for round 1, plus 250 ms per further round.
    fn default() -> Self {
        Self::new(Duration::from_millis(750), Duration::from_millis(250))
    }
}

impl TimerStrategy for LinearTimer {
    fn round_timeout(&self, round: u64) -> Duration {
        let steps = u32::try_from(round.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base
            .saturating_add(self.increment.saturating_mul(steps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_growth_and_saturation() {
        let t = LinearTimer::default();
        assert_eq!(t.round_timeout(1), Duration::from_millis(750));
        assert_eq!(t.round_timeout(2), Duration::from_millis(1000));
        assert_eq!(t.round_timeout(5), Duration::from_millis(1750));
        // Round 0 is never used, but must not underflow.
        assert_eq!(t.round_timeout(0), Duration::from_millis(750));
        let big = LinearTimer::new(Duration::MAX, Duration::from_secs(1));
        assert_eq!(big.round_timeout(u64::MAX), Duration::MAX);
        assert!(t.round_timeout(u64::MAX) >= t.round_timeout(1_000_000));
    }
}
