//! Hybrid logical clock: wall time plus a counter, so causally later bundles
//! always order later even when device clocks disagree. Wall time is passed in.

use serde::{Deserialize, Serialize};

/// A timestamp: milliseconds since the Unix epoch and a tie counter.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Wall-clock milliseconds (as best the writer knew).
    pub wall_ms: u64,
    /// Breaks ties within one millisecond and across clock skew.
    pub counter: u32,
}

/// Remote timestamps further than this ahead of our wall clock are not adopted
/// in full: one device with a clock set years ahead must not drag every
/// node's clock with it. (One day.)
pub const MAX_FORWARD_SKEW_MS: u64 = 24 * 60 * 60 * 1000;

/// A node's clock. Feed it wall time on every tick.
#[derive(Clone, Debug, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// Starts after `last` (e.g. the newest hlc in the store), so a restarted
    /// node never issues a smaller timestamp than before.
    pub fn starting_after(last: Hlc) -> Self {
        HlcClock { last }
    }

    /// A fresh timestamp for a local bundle, greater than every one issued or observed.
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        self.last = if wall_ms > self.last.wall_ms {
            Hlc {
                wall_ms,
                counter: 0,
            }
        } else {
            Hlc {
                wall_ms: self.last.wall_ms,
                counter: self.last.counter.saturating_add(1),
            }
        };
        self.last
    }

    /// Merges a received timestamp so later local bundles order after it.
    pub fn observe(&mut self, remote: Hlc, wall_ms: u64) {
        let bound = Hlc {
            wall_ms: wall_ms.saturating_add(MAX_FORWARD_SKEW_MS),
            counter: u32::MAX,
        };
        let remote = remote.min(bound);
        if remote > self.last {
            self.last = remote;
        }
    }

    /// The latest timestamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_monotonic_even_when_wall_time_goes_back() {
        let mut c = HlcClock::default();
        let a = c.tick(1000);
        let b = c.tick(900);
        let d = c.tick(1000);
        assert!(a < b && b < d);
        c.observe(
            Hlc {
                wall_ms: 5000,
                counter: 7,
            },
            1000,
        );
        assert!(
            c.tick(1000)
                > Hlc {
                    wall_ms: 5000,
                    counter: 7
                }
        );
    }

    #[test]
    fn a_clock_far_ahead_is_capped() {
        let mut c = HlcClock::default();
        c.observe(
            Hlc {
                wall_ms: u64::MAX,
                counter: 0,
            },
            1000,
        );
        assert!(c.last().wall_ms <= 1000 + MAX_FORWARD_SKEW_MS);
    }
}
