//! Waiting on conditions with deadlines instead of sleeping.
//!
//! A multi-node test asserts that something *eventually* becomes true (a peer
//! appears, a value converges). `wait_for` polls a condition until it holds or
//! a deadline passes, and on failure says what it was waiting for and what it
//! last saw. The deadline is a safety net, never the thing under test.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is re-checked.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `check` until it returns `Some`, or fails after `deadline` with
/// `what` and the last observation.
///
/// # Errors
/// When the deadline passes first.
pub async fn wait_for<T, O, F, Fut>(
    what: &str,
    deadline: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    O: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, O>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return Ok(v),
            Err(observed) => observed,
        };
        if start.elapsed() >= deadline {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}; last saw: {last:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let n = AtomicU32::new(0);
        let v = wait_for("three polls", Duration::from_secs(10), || async {
            let seen = n.fetch_add(1, Ordering::SeqCst);
            if seen >= 2 { Ok(seen) } else { Err(seen) }
        })
        .await
        .unwrap();
        assert_eq!(v, 2);
    }

    #[tokio::test]
    async fn fails_with_the_last_observation() {
        let err = wait_for("never", Duration::from_millis(1), || async {
            Err::<(), _>("still no")
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("never") && err.to_string().contains("still no"));
    }
}
