//! When received asset bytes are flushed to disk.
//!
//! Asset chunks are written in commits that are not durable on their own:
//! asking a peer for the next chunks promises it nothing, and after a crash
//! a fetch resumes from what is on disk. So they need a flush only to bound
//! what a crash can cost, and before their "asset received" events go out.
//!
//! Each flush writes every B-tree page the chunks touched since the last one,
//! and chunk rows are keyed by their (random) blob hash: a stream of small
//! assets touches a new page for nearly every asset, and flushing it every
//! few milliseconds writes the same pages again and again. So while bytes
//! keep arriving, they are flushed only every [`MAX_DELAY`] or every
//! [`MAX_BYTES`], and once the stream pauses for [`QUIET`], at once.
//!
//! When no asset is left to fetch, no more bytes are coming: the flush is
//! due at once. Waiting out [`QUIET`] then only held back the last asset's
//! "received" event (25 ms at the end of a 0.43 s transfer of 200 MiB).

use std::time::{Duration, Instant};

/// A pause in arriving asset bytes this long ends a stream: flush now.
pub const QUIET: Duration = Duration::from_millis(25);
/// Longest that arriving asset bytes wait for a flush while they keep
/// coming (and so the longest an "asset received" event waits).
pub const MAX_DELAY: Duration = Duration::from_millis(250);
/// Unflushed asset bytes that make a flush due at once: what a crash can
/// make a peer send again. The store's flush stops its thread until the
/// disk has the bytes, and the store's early writeback (its helper thread
/// syncing as chunks arrive) has most of them on disk before that: at 16
/// MiB a large asset's receive waited for a flush every 40 ms, at 64 MiB
/// it moved 8 % more (alternated runs of the bench's 200 MiB asset: medians
/// 385 / 398 / 392 against 436 / 430 / 397 MB/s; 128 MiB gained nothing
/// more).
pub const MAX_BYTES: u64 = 64 << 20;

/// Asset bytes written since the last flush.
#[derive(Debug, Default)]
pub struct BlobFlush {
    first: Option<Instant>,
    last: Option<Instant>,
    bytes: u64,
}

impl BlobFlush {
    /// `bytes` of asset chunks were just committed without a flush.
    pub fn wrote(&mut self, now: Instant, bytes: u64) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// Whether asset bytes wait for a flush.
    pub fn pending(&self) -> bool {
        self.first.is_some()
    }

    /// Whether the waiting bytes should be flushed now; `more_coming` says
    /// whether any asset is still being fetched.
    pub fn due(&self, now: Instant, more_coming: bool) -> bool {
        match (self.first, self.last) {
            (Some(first), Some(last)) => {
                !more_coming
                    || now.saturating_duration_since(last) >= QUIET
                    || now.saturating_duration_since(first) >= MAX_DELAY
                    || self.bytes >= MAX_BYTES
            }
            _ => false,
        }
    }

    /// When the waiting bytes become due if nothing more arrives.
    pub fn next_due(&self) -> Option<Instant> {
        Some((self.last? + QUIET).min(self.first? + MAX_DELAY))
    }

    /// Everything written so far is on disk.
    pub fn flushed(&mut self) {
        *self = BlobFlush::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_steady_stream_is_flushed_at_the_longest_delay() {
        let t0 = Instant::now();
        let mut f = BlobFlush::default();
        assert!(!f.pending() && !f.due(t0, true) && f.next_due().is_none());
        let mut t = t0;
        while t < t0 + MAX_DELAY - 5 * MS {
            f.wrote(t, 1024);
            assert!(!f.due(t, true), "due after {:?} of steady arrivals", t - t0);
            t += 5 * MS;
        }
        assert!(f.due(t0 + MAX_DELAY, true));
        assert_eq!(f.next_due(), Some(t0 + MAX_DELAY));
    }

    #[test]
    fn a_pause_or_a_full_measure_of_bytes_makes_it_due_at_once() {
        let t0 = Instant::now();
        let mut f = BlobFlush::default();
        f.wrote(t0, 1024);
        assert!(!f.due(t0 + QUIET - MS, true));
        assert!(f.due(t0 + QUIET, true));
        assert_eq!(f.next_due(), Some(t0 + QUIET));
        f.flushed();
        assert!(!f.pending());
        f.wrote(t0, MAX_BYTES);
        assert!(
            f.due(t0, true),
            "a full measure of bytes is due without waiting"
        );
    }

    #[test]
    fn bytes_with_nothing_more_to_fetch_are_due_at_once() {
        let t0 = Instant::now();
        let mut f = BlobFlush::default();
        assert!(!f.due(t0, false), "nothing written, nothing to flush");
        f.wrote(t0, 1024);
        assert!(!f.due(t0, true), "more is coming: wait for a pause");
        assert!(f.due(t0, false), "the last asset's bytes wait for nothing");
    }
}
