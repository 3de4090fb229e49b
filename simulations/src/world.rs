//! The simulated clock and the event queue, ordered by (time, sequence): two
//! events at the same millisecond run in the order they were scheduled, so a
//! run never depends on anything but its seed.

use std::collections::BTreeMap;

use troupe_protocol::sync::Millis;

/// Simulated time and the pending events of type `E`.
#[derive(Debug)]
pub struct World<E> {
    now: Millis,
    next_seq: u64,
    queue: BTreeMap<(Millis, u64), E>,
}

impl<E> Default for World<E> {
    fn default() -> Self {
        World {
            now: 0,
            next_seq: 0,
            queue: BTreeMap::new(),
        }
    }
}

impl<E> World<E> {
    /// The current simulated time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Schedules `event` at `at` (never in the past).
    pub fn at(&mut self, at: Millis, event: E) {
        let at = at.max(self.now);
        self.queue.insert((at, self.next_seq), event);
        self.next_seq += 1;
    }

    /// Schedules `event` `after` milliseconds from now.
    pub fn after(&mut self, after: Millis, event: E) {
        self.at(self.now + after, event);
    }

    /// Takes the earliest event and advances the clock to it.
    pub fn pop(&mut self) -> Option<E> {
        let ((t, _), e) = self.queue.pop_first()?;
        self.now = t;
        Some(e)
    }

    /// The time of the earliest event.
    pub fn peek_time(&self) -> Option<Millis> {
        self.queue.first_key_value().map(|((t, _), _)| *t)
    }

    /// Events still queued.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}
