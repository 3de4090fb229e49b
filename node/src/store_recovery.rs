//! What the node does when its store fails a write: a full disk, or a disk
//! that fails. redb then refuses every later transaction, reads included,
//! until the file is opened again, so a node that only logged the error
//! would stay up, refuse every command, and never sync again.
//!
//! Instead, the storage thread notes the failure ([`StoreRecovery::note`])
//! and, at the end of the call it happened in, closes the store and opens
//! it again from its file (`Local::reopen`): it comes back as of its last
//! flush, as after a crash. The sync starts over with every peer from what
//! is on disk, after a pause that doubles while failures repeat (a disk
//! that is still full fails again as soon as bytes arrive), so peers are
//! not asked for the same bytes in a tight loop. A failure is the disk's,
//! never the sending peer's: nobody is blamed for it. If the file cannot be
//! opened again (on a full disk, opening writes too), the store stays
//! closed: commands are answered with the reason, connections are turned
//! away, and the file is opened again after the same doubling pause, or at
//! a command once the pause is over.

use std::time::{Duration, Instant};

/// The pause before sessions start again after the first reopen.
pub const FIRST_PAUSE: Duration = Duration::from_secs(2);
/// The longest pause, however often failures repeat.
pub const MAX_PAUSE: Duration = Duration::from_secs(120);
/// A reopen this long after the last one pauses for [`FIRST_PAUSE`] again.
const CALM: Duration = Duration::from_secs(600);

/// The storage thread's record of store failures (see the module doc).
#[derive(Debug)]
pub struct StoreRecovery {
    /// The first storage error of the running call, until its end.
    fault: Option<String>,
    /// The failure (in words) that closed the store, while it could not be
    /// opened again: nothing may use it.
    closed: Option<String>,
    /// Sessions wait until then after a reopen; a closed store is tried
    /// again then.
    paused_until: Option<Instant>,
    /// The pause the next reopen, or failed reopen, starts.
    next_pause: Duration,
    last_reopen: Option<Instant>,
}

impl Default for StoreRecovery {
    fn default() -> Self {
        StoreRecovery {
            fault: None,
            closed: None,
            paused_until: None,
            next_pause: FIRST_PAUSE,
            last_reopen: None,
        }
    }
}

impl StoreRecovery {
    /// Notes a failure that left the store needing a reopen; the first of a
    /// call is the one reported.
    pub fn note(&mut self, error: &dyn std::fmt::Display) {
        if self.fault.is_none() {
            self.fault = Some(error.to_string());
        }
    }

    /// Whether a failure was noted during the running call.
    pub fn has_fault(&self) -> bool {
        self.fault.is_some()
    }

    /// The failure noted during the call, once.
    pub fn take_fault(&mut self) -> Option<String> {
        self.fault.take()
    }

    /// The store was opened again at `now`: how long sessions wait.
    pub fn reopened(&mut self, now: Instant) -> Duration {
        self.closed = None;
        self.pause(now)
    }

    /// The store could not be opened again at `now` after `failure`: it
    /// stays closed, and is tried again after the returned pause.
    pub fn close(&mut self, now: Instant, failure: String) -> Duration {
        self.closed = Some(failure);
        self.pause(now)
    }

    fn pause(&mut self, now: Instant) -> Duration {
        if self
            .last_reopen
            .is_some_and(|t| now.saturating_duration_since(t) > CALM)
        {
            self.next_pause = FIRST_PAUSE;
        }
        let pause = self.next_pause;
        self.next_pause = (pause * 2).min(MAX_PAUSE);
        self.last_reopen = Some(now);
        self.paused_until = Some(now + pause);
        pause
    }

    /// How long new sessions still wait at `now` (`None`: they may start).
    pub fn paused(&self, now: Instant) -> Option<Duration> {
        self.paused_until
            .map(|t| t.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// The failure that closed the store, while it stays closed.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }
}

/// A storage failure in words a person can act on: a full disk is named as
/// such, with what to do.
pub fn describe(error: &str, store: &std::path::Path) -> String {
    let dir = store.parent().unwrap_or(store).display();
    if error.contains("No space left on device") || error.contains("os error 28") {
        format!(
            "the disk holding {dir} is full ({error}). Free some space there; until then nothing more can be stored"
        )
    } else {
        format!(
            "writing to the store in {dir} failed ({error}). Check the disk; if this repeats, stop the node and run `troupe scrub`"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_while_failures_repeat_and_start_small_again_after_a_calm() {
        let mut r = StoreRecovery::default();
        let t = Instant::now();
        assert_eq!(r.reopened(t), FIRST_PAUSE);
        assert!(r.paused(t).is_some());
        assert!(r.paused(t + FIRST_PAUSE).is_none(), "the pause ends");
        let second = r.reopened(t + Duration::from_secs(5));
        assert_eq!(second, FIRST_PAUSE * 2);
        let mut last = second;
        for i in 0..10 {
            last = r.reopened(t + Duration::from_secs(10 + i));
        }
        assert_eq!(last, MAX_PAUSE, "the pause is bounded");
        assert_eq!(r.reopened(t + CALM * 2), FIRST_PAUSE, "a calm resets it");
    }

    #[test]
    fn a_store_that_cannot_be_opened_stays_closed_and_is_tried_again_after_a_pause() {
        let mut r = StoreRecovery::default();
        let t = Instant::now();
        let wait = r.close(t, "the disk is full".into());
        assert_eq!(r.closed(), Some("the disk is full"));
        assert!(r.paused(t).is_some(), "not tried again at once");
        assert!(r.paused(t + wait).is_none(), "tried again after the pause");
        let wait = r.close(t + wait, "the disk is full".into());
        assert_eq!(wait, FIRST_PAUSE * 2, "a second failure waits longer");
        r.reopened(t + Duration::from_secs(10));
        assert_eq!(r.closed(), None, "open again");
    }

    #[test]
    fn the_first_failure_of_a_call_is_the_one_reported() {
        let mut r = StoreRecovery::default();
        r.note(&"No space left on device (os error 28)");
        r.note(&"Previous I/O error occurred");
        let first = r.take_fault().unwrap();
        assert!(first.contains("No space"));
        assert!(r.take_fault().is_none());
        let said = describe(&first, std::path::Path::new("/data/store.redb"));
        assert!(said.contains("the disk holding /data is full"), "{said}");
    }
}
