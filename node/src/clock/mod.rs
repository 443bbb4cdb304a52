//! Time: the Unix clock and slot arithmetic — one definition for the node, the lab and the
//! tests.
//!
//! - [`unix_now`]: the wall clock as time since the Unix epoch — the system clock minus the
//!   node's [`correction`], which only the clock follower of `dvnode run` ([`follow`]) sets
//!   (while the local clock is off the beacon node's by more than a bound); zero otherwise, so
//!   the lab and the tests read the plain system clock. Everything in the node that asks for the
//!   time (slot clock, deadlines, tickers, duty-log stamps) goes through it, so all of it
//!   follows together. [`system_now`] is the uncorrected system clock.
//! - [`Clock`] / [`SystemClock`]: the wall clock in milliseconds, behind a trait so tests can
//!   substitute a fake one.
//! - [`SlotClock`]: slots and epochs of a chain, in Unix milliseconds.
//! - [`SlotTicker`]: wakes a loop at every slot start until it is told to stop.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::eth::signing::ForkSchedule;
use crate::eth::types::{Epoch, Slot};

pub mod follow;

/// Milliseconds subtracted from the system clock by [`unix_now`].
static CORRECTION_MS: AtomicI64 = AtomicI64::new(0);

/// The node's correction of the system clock (ms subtracted from it), set by [`follow`].
pub fn correction() -> &'static AtomicI64 {
    &CORRECTION_MS
}

/// Time since the Unix epoch by the system clock, uncorrected (zero before the epoch).
pub fn system_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Time since the Unix epoch: the system clock minus the node's [`correction`] (zero if that
/// is before the epoch).
pub fn unix_now() -> Duration {
    let correction = CORRECTION_MS.load(Ordering::Relaxed);
    let now = system_now();
    if correction >= 0 {
        now.saturating_sub(Duration::from_millis(correction as u64))
    } else {
        now.saturating_add(Duration::from_millis(correction.unsigned_abs()))
    }
}

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// The system clock, with the node's [`correction`] ([`unix_now`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        unix_now().as_millis() as u64
    }
}

/// The system clock without any correction ([`system_now`]): what the clock follower measures.
#[derive(Clone, Copy, Debug, Default)]
pub struct UncorrectedClock;

impl Clock for UncorrectedClock {
    fn now_ms(&self) -> u64 {
        system_now().as_millis() as u64
    }
}

/// Slot arithmetic in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotClock {
    genesis_ms: u64,
    slot_ms: u64,
    slots_per_epoch: u64,
}

impl SlotClock {
    /// A clock for a chain starting at `genesis_time` (Unix seconds).
    pub fn new(genesis_time: u64, seconds_per_slot: u64, slots_per_epoch: u64) -> SlotClock {
        SlotClock {
            genesis_ms: genesis_time.saturating_mul(1000),
            slot_ms: seconds_per_slot.max(1).saturating_mul(1000),
            slots_per_epoch: slots_per_epoch.max(1),
        }
    }

    /// The clock of a chain.
    pub fn of(schedule: &ForkSchedule) -> SlotClock {
        SlotClock::new(
            schedule.genesis_time(),
            schedule.seconds_per_slot(),
            schedule.slots_per_epoch(),
        )
    }

    /// Genesis time (Unix seconds).
    pub fn genesis_time(&self) -> u64 {
        self.genesis_ms / 1000
    }

    /// Seconds per slot.
    pub fn seconds_per_slot(&self) -> u64 {
        self.slot_ms / 1000
    }

    /// Slots per epoch.
    pub fn slots_per_epoch(&self) -> u64 {
        self.slots_per_epoch
    }

    /// Slot duration.
    pub fn slot_duration(&self) -> Duration {
        Duration::from_millis(self.slot_ms)
    }

    /// Start of `slot` (Unix ms).
    pub fn slot_start_ms(&self, slot: Slot) -> u64 {
        self.genesis_ms
            .saturating_add(slot.saturating_mul(self.slot_ms))
    }

    /// The slot at `ms` (Unix ms; slot 0 before genesis).
    pub fn slot_at_ms(&self, ms: u64) -> Slot {
        ms.saturating_sub(self.genesis_ms) / self.slot_ms
    }

    /// The slot at Unix time `t` (slot 0 before genesis).
    pub fn slot_at(&self, t: Duration) -> Slot {
        self.slot_at_ms(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
    }

    /// The epoch of `slot`.
    pub fn epoch_of(&self, slot: Slot) -> Epoch {
        slot / self.slots_per_epoch
    }

    /// The slots of `epoch`.
    pub fn slots_of(&self, epoch: Epoch) -> std::ops::Range<Slot> {
        let start = epoch.saturating_mul(self.slots_per_epoch);
        start..start.saturating_add(self.slots_per_epoch)
    }

    /// The [`Instant`] at which the slot `slots` slots after `slot` starts (a duty's deadline:
    /// `deadline(slot, 1)` is the end of `slot`), as the wall clock reads now.
    pub fn deadline(&self, slot: Slot, slots: u64) -> Instant {
        let end = self.slot_start_ms(slot.saturating_add(slots));
        Instant::now() + Duration::from_millis(end.saturating_sub(SystemClock.now_ms()))
    }
}

/// Yields the wall-clock slot at once, then once per slot start, until a stop signal.
///
/// Each wait is measured when the previous slot was yielded, to the start of the next slot
/// (at least 1 ms), so a loop body runs about once per slot.
#[derive(Debug)]
pub struct SlotTicker {
    clock: SlotClock,
    stop: watch::Receiver<bool>,
    wait: Option<Duration>,
}

impl SlotTicker {
    /// A ticker on `clock` that ends when `stop` changes (or its sender is gone).
    pub fn new(clock: SlotClock, stop: watch::Receiver<bool>) -> SlotTicker {
        SlotTicker {
            clock,
            stop,
            wait: None,
        }
    }

    /// The current slot, after waiting for its start (not on the first call); `None` once
    /// stopped.
    pub async fn tick(&mut self) -> Option<Slot> {
        if let Some(wait) = self.wait.take() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.changed() => return None,
            }
        }
        let now = SystemClock.now_ms();
        let slot = self.clock.slot_at_ms(now);
        let next = self.clock.slot_start_ms(slot + 1).saturating_sub(now);
        self.wait = Some(Duration::from_millis(next.max(1)));
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeClock(u64);
    impl Clock for FakeClock {
        fn now_ms(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn slots_and_epochs_follow_the_slot_time() {
        let clock = SlotClock::new(1_000, 4, 8);
        assert_eq!(clock.slot_start_ms(0), 1_000_000);
        assert_eq!(clock.slot_start_ms(3), 1_012_000);
        assert_eq!(clock.slot_at_ms(FakeClock(1_013_999).now_ms()), 3);
        assert_eq!(clock.slot_at(Duration::from_millis(1_016_000)), 4);
        assert_eq!(clock.slot_at_ms(999_000), 0, "before genesis");
        assert_eq!(clock.epoch_of(17), 2);
        assert_eq!(clock.slots_of(2), 16..24);
        assert_eq!(
            (
                clock.genesis_time(),
                clock.seconds_per_slot(),
                clock.slots_per_epoch()
            ),
            (1_000, 4, 8)
        );
        let unix = unix_now();
        assert!(unix > Duration::from_secs(1_600_000_000), "{unix:?}");
        assert!(SystemClock.now_ms().abs_diff(unix.as_millis() as u64) < 60_000);
    }

    #[tokio::test]
    async fn the_ticker_yields_each_slot_and_stops() {
        // 1-second slots starting now: a tick at once, the next one a slot later.
        let genesis = unix_now().as_secs();
        let clock = SlotClock::new(genesis, 1, 8);
        let (stop_tx, stop) = watch::channel(false);
        let mut ticker = SlotTicker::new(clock, stop);
        let first = ticker.tick().await.expect("a first tick");
        let second = ticker.tick().await.expect("a second tick");
        assert!(second > first, "the second tick waited for the next slot");
        assert!(
            unix_now().as_millis() as u64 >= clock.slot_start_ms(first + 1),
            "woke before the slot started"
        );
        stop_tx.send(true).unwrap();
        assert_eq!(ticker.tick().await, None);
    }
}
