//! At most one report an interval for something that can come far faster
//! than anyone reads it: log lines for what a stranger can repeat at will
//! (refused connections, peers on another version), and sync progress
//! events. The first is told at once, the ones after it within the
//! interval only counted, and the count given with the next.

use std::time::{Duration, Instant};

/// When the next report is due, and how many were not reported since the
/// last.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    unreported: u64,
}

impl Throttle {
    /// Reports at most once every `every`.
    pub(crate) const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            unreported: 0,
        }
    }

    /// Counts one occurrence at `now`: `Some(n)` when it is to be reported,
    /// `n` being those counted since the last report and not reported.
    pub(crate) fn due(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            self.unreported += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}
