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

use std::time::Duration;

/// Chooses how long a node waits in a round before asking for a round change.
pub trait TimerStrategy: Send + Sync + std::fmt::Debug {
    /// Timeout of `round` (rounds start at 1). Must not decrease as `round` grows.
    fn round_timeout(&self, round: u64) -> Duration;
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
