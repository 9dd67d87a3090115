//! Bounded waits instead of fixed sleeps: poll a condition until it holds (never longer than a
//! deadline), or watch that it keeps holding for a quiet period. Sleeps that are part of a
//! scenario (a lease or a cache TTL running out) stay plain sleeps at their call sites.

use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(10);
/// How long something that happens within one invocation may take to be seen (an email the
/// relay accepted, a file in the outbox).
pub const WITHIN: Duration = Duration::from_secs(5);
/// How long to watch that nothing more happens (no second email) after what was expected.
pub const QUIET: Duration = Duration::from_millis(200);

/// Polls `cond` until it holds or `within` has passed (it is checked once more at the
/// deadline); true if it held.
pub async fn until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`until`] for synchronous tests.
pub fn until_blocking(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `cond` for `quiet`; false as soon as it stops holding, true if it held throughout.
pub async fn holds_for(quiet: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + quiet;
    loop {
        if !cond() {
            return false;
        }
        if Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
}
