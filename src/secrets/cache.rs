//! The cache of vault values: when to serve a cached value, when to fetch, when to serve a
//! stale value and when to fail, kept apart from the vault I/O so that every rule can be tested
//! with a hand-driven clock instead of sleeps.
//!
//! The decisions ([`Policy::decide`], [`Policy::joined`], [`Policy::record`],
//! [`RejectionLimit::allow`]) are pure functions of the slot's state and a `now: Instant`
//! passed in. [`Slot::flight`] adds the single flight around a fetch the caller supplies and
//! reads the time from a [`Clock`], so that the time a fetch takes can be simulated too.
//!
//! The rules:
//! - A value is served for the TTL. In its last 10 % one caller starts a background refresh
//!   (refresh-ahead), so the value rarely expires under load.
//! - After the TTL the value is fetched again. When the vault fails, the last good value is
//!   served for up to [`MAX_STALENESS`] past its expiry (judged at the time the request
//!   arrived, not after the retries); after that we fail closed, because a value that old may
//!   have been revoked.
//! - After a failure the vault is left alone for [`ERROR_BACKOFF`], or for the vault's longer
//!   Retry-After (capped at a minute), so a dead vault does not cost every request a full
//!   fetch budget.
//! - A value reported as rejected is refetched at once, at most once per
//!   [`REJECTION_INTERVAL`] per setting, so a consumer that fails for another reason cannot
//!   hammer the vault.
//! - Concurrent callers share one fetch: each fetch bumps a generation, and a caller that
//!   waited for the flight lock while another fetch finished takes that fetch's outcome.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::SecretString;

use super::SecretErrorKind;
use super::SecretSetting;
use super::vault::{FetchError, Fetched};

/// How long past its expiry a cached value may still be served while the vault fails: long
/// enough to ride out a vault outage, short enough that a revoked value stops being used.
pub const MAX_STALENESS: Duration = Duration::from_secs(24 * 3600);
/// The minimum interval between two rejection-driven refetches of one setting, so that a
/// consumer that keeps failing for another reason cannot turn every request into a vault call.
pub const REJECTION_INTERVAL: Duration = Duration::from_secs(30);
/// After a failed fetch, how long the vault is left alone unless it named a longer
/// Retry-After, so that a dead vault does not cost every request the full fetch budget.
pub const ERROR_BACKOFF: Duration = Duration::from_secs(10);
/// The longest vault Retry-After honoured: a misbehaving vault must not disable refreshes for
/// longer than this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The time source of [`Slot::flight`]: the system clock in production, a hand-driven one in
/// tests (so that a slow fetch can be simulated without waiting).
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The cache's timings (the defaults are overridable for tests through `SecretsOptions`).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// How long a fetched value is served.
    pub ttl: Duration,
    /// How long past its expiry a value may be served while the vault fails.
    pub max_staleness: Duration,
    /// How long the vault is left alone after a failure.
    pub error_backoff: Duration,
}

/// A fetch failed and no stale value may be served.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Why the (last) fetch failed.
    pub error: FetchError,
    /// Seconds until the back-off ends (at least 1), for the caller's `Retry-After`.
    pub retry_after_secs: u64,
}

/// A value, or why none can be had.
pub type Outcome = Result<SecretString, Failure>;

/// What a caller should do, as decided from the slot's state.
#[derive(Debug)]
pub enum Decision {
    /// Serve this value. `refresh` is `Some(generation)` when this caller should start the
    /// background refresh (refresh-ahead); it is then already marked as running.
    Serve {
        /// The value to serve (fresh, or stale while backing off after a failure).
        value: SecretString,
        /// Start a background fetch from this generation.
        refresh: Option<u64>,
    },
    /// Fail without calling the vault (backing off, no usable stale value).
    Fail(Failure),
    /// Fetch from the vault through [`Slot::flight`], having seen `generation`.
    Fetch {
        /// The generation seen when deciding, for the single flight.
        generation: u64,
    },
}

/// The cache state of one (vault, name, version).
#[derive(Default)]
pub struct SlotState {
    value: Option<Cached>,
    /// Bumped after every fetch (good or bad), so waiters know a fetch finished meanwhile.
    generation: u64,
    last_error: Option<(FetchError, Instant)>,
    /// A consumer reported the value as rejected: refetch instead of serving it.
    force: bool,
    /// A background refresh is running.
    refreshing: bool,
}

struct Cached {
    value: SecretString,
    fetched_at: Instant,
}

impl SlotState {
    /// Marks the cached value as rejected: the next decision fetches (subject to the back-off).
    pub fn request_refetch(&mut self) {
        self.force = true;
    }

    /// The background refresh started by a [`Decision::Serve`] has ended.
    pub fn refresh_finished(&mut self) {
        self.refreshing = false;
    }
}

impl Policy {
    fn within_staleness(&self, c: &Cached, now: Instant) -> bool {
        now < c.fetched_at + self.ttl + self.max_staleness
    }

    /// How long to leave the vault alone after `e`: our back-off, or a longer Retry-After the
    /// vault sent when throttling (capped at [`MAX_RETRY_AFTER`]).
    fn backoff_for(&self, e: &FetchError) -> Duration {
        let hinted = match e.kind {
            SecretErrorKind::Unavailable => {
                Duration::from_secs(e.retry_after.unwrap_or(0)).min(MAX_RETRY_AFTER)
            }
            _ => Duration::ZERO,
        };
        self.error_backoff.max(hinted)
    }

    fn backing_off(&self, st: &SlotState, now: Instant) -> bool {
        st.last_error
            .as_ref()
            .is_some_and(|(e, at)| now < *at + self.backoff_for(e))
    }

    /// The stale value if allowed at `now`, else the failure.
    fn stale_or_error(
        &self,
        value: Option<&Cached>,
        (e, at): &(FetchError, Instant),
        now: Instant,
    ) -> Outcome {
        let remaining = (at.checked_add(self.backoff_for(e)).unwrap_or(now))
            .saturating_duration_since(now)
            .as_secs()
            .max(1);
        match value {
            Some(c) if self.within_staleness(c, now) => Ok(c.value.clone()),
            _ => Err(Failure {
                error: e.clone(),
                retry_after_secs: remaining,
            }),
        }
    }

    /// What a caller arriving at `now` should do. `force` (an explicit refresh that passed the
    /// rejection rate limit) always fetches.
    pub fn decide(&self, st: &mut SlotState, force: bool, now: Instant) -> Decision {
        if force {
            return Decision::Fetch {
                generation: st.generation,
            };
        }
        if !st.force
            && let Some(c) = &st.value
            && now < c.fetched_at + self.ttl
        {
            let value = c.value.clone();
            let in_window = now.duration_since(c.fetched_at) >= self.ttl.mul_f64(0.9);
            let refresh = if in_window && !st.refreshing && !self.backing_off(st, now) {
                st.refreshing = true;
                Some(st.generation)
            } else {
                None
            };
            return Decision::Serve { value, refresh };
        }
        // A pending rejection refetch still respects the back-off after a failure, so a dead
        // vault is not called by every request.
        if let Some(err) = &st.last_error
            && self.backing_off(st, now)
        {
            return match self.stale_or_error(st.value.as_ref(), err, now) {
                Ok(value) => Decision::Serve {
                    value,
                    refresh: None,
                },
                Err(f) => Decision::Fail(f),
            };
        }
        Decision::Fetch {
            generation: st.generation,
        }
    }

    /// For a caller that decided to fetch having seen `seen` and now holds the flight lock:
    /// `Some(outcome)` of a fetch that finished while it waited (so it must not call the vault
    /// again), or `None` when it should fetch itself.
    pub fn joined(&self, st: &SlotState, seen: u64, now: Instant) -> Option<Outcome> {
        if st.generation == seen {
            return None;
        }
        match (&st.last_error, &st.value) {
            (None, Some(c)) => Some(Ok(c.value.clone())),
            (Some(err), v) => Some(self.stale_or_error(v.as_ref(), err, now)),
            (None, None) => None,
        }
    }

    /// Records the result of a fetch that started at `started` and ended at `now`, and returns
    /// what the caller gets: the new value, or after a failure the stale value (judged at
    /// `started`, when the request arrived) or the failure.
    pub fn record(
        &self,
        st: &mut SlotState,
        result: Result<SecretString, FetchError>,
        started: Instant,
        now: Instant,
    ) -> Outcome {
        st.generation += 1;
        match result {
            Ok(value) => {
                st.value = Some(Cached {
                    value: value.clone(),
                    fetched_at: now,
                });
                st.last_error = None;
                st.force = false;
                Ok(value)
            }
            Err(e) => {
                let err = (e, now);
                let out = self.stale_or_error(st.value.as_ref(), &err, started);
                st.last_error = Some(err);
                out
            }
        }
    }
}

/// One (vault, name, version): its state and its flight lock.
#[derive(Default)]
pub struct Slot {
    state: Mutex<SlotState>,
    /// Held for the duration of one vault call: the single flight.
    flight: tokio::sync::Mutex<()>,
}

/// How a [`Slot::flight`] ended.
pub enum Flight {
    /// Another caller's fetch finished while this one waited: its outcome, no vault call.
    Joined(Outcome),
    /// This caller fetched the value.
    Fetched {
        /// The new value.
        value: SecretString,
        /// The version the vault returned, for the log.
        version: Option<String>,
        /// How long the fetch took.
        elapsed: Duration,
    },
    /// This caller's fetch failed.
    Failed {
        /// The stale value, or the failure.
        outcome: Outcome,
        /// The vault's error, for the log.
        error: FetchError,
        /// How long the fetch took.
        elapsed: Duration,
    },
}

impl Slot {
    /// Locks the state; see [`Policy::decide`].
    pub fn decide(&self, policy: &Policy, force: bool, now: Instant) -> Decision {
        policy.decide(&mut lock(&self.state), force, now)
    }

    /// See [`SlotState::request_refetch`].
    pub fn request_refetch(&self) {
        lock(&self.state).request_refetch();
    }

    /// See [`SlotState::refresh_finished`].
    pub fn refresh_finished(&self) {
        lock(&self.state).refresh_finished();
    }

    /// The single flight: the first caller runs `fetch`; callers that queued behind it (having
    /// seen generation `seen`) take its outcome instead of calling the vault again.
    pub async fn flight<F, Fut>(
        &self,
        policy: &Policy,
        clock: &dyn Clock,
        seen: u64,
        fetch: F,
    ) -> Flight
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fetched, FetchError>>,
    {
        let _flight = self.flight.lock().await;
        let joined = policy.joined(&lock(&self.state), seen, clock.now());
        if let Some(outcome) = joined {
            return Flight::Joined(outcome);
        }
        let started = clock.now();
        let result = fetch().await;
        let now = clock.now();
        let elapsed = now.saturating_duration_since(started);
        let mut st = lock(&self.state);
        match result {
            Ok(f) => {
                let _stored = policy.record(&mut st, Ok(f.value.clone()), started, now);
                Flight::Fetched {
                    value: f.value,
                    version: f.version,
                    elapsed,
                }
            }
            Err(error) => Flight::Failed {
                outcome: policy.record(&mut st, Err(error.clone()), started, now),
                error,
                elapsed,
            },
        }
    }
}

/// The rejection rate limit: at most one rejection-driven refetch per setting per interval.
pub struct RejectionLimit {
    interval: Duration,
    last: HashMap<SecretSetting, Instant>,
}

impl RejectionLimit {
    /// A limit of one refetch per `interval` per setting.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: HashMap::new(),
        }
    }

    /// Whether a rejection of `s` reported at `now` may trigger a refetch; if so, the interval
    /// starts again.
    pub fn allow(&mut self, s: SecretSetting, now: Instant) -> bool {
        match self.last.get(&s) {
            Some(t) if now.duration_since(*t) < self.interval => false,
            _ => {
                self.last.insert(s, now);
                true
            }
        }
    }
}

/// Locks a std mutex, ignoring poisoning: a panic while holding the lock cannot leave the cache
/// inconsistent in a way that matters more than failing every request afterwards would.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::sync::atomic::{AtomicU64, Ordering};

    const TTL: Duration = Duration::from_secs(100);

    fn policy() -> Policy {
        Policy {
            ttl: TTL,
            max_staleness: Duration::from_secs(1000),
            error_backoff: Duration::from_secs(10),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn v(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    fn unavailable(retry_after: Option<u64>) -> FetchError {
        FetchError {
            kind: SecretErrorKind::Unavailable,
            code: "VaultUnreachable".into(),
            retry_after,
            detail: String::new(),
        }
    }

    /// A state holding `value` fetched at `at` (generation 1).
    fn warm(p: &Policy, value: &str, at: Instant) -> SlotState {
        let mut st = SlotState::default();
        p.record(&mut st, Ok(v(value)), at, at).unwrap();
        st
    }

    #[track_caller]
    fn served(d: Decision) -> (String, Option<u64>) {
        match d {
            Decision::Serve { value, refresh } => (value.expose_secret().to_string(), refresh),
            Decision::Fail(f) => panic!("expected a value, got a failure: {}", f.error.code),
            Decision::Fetch { .. } => panic!("expected a value, got a fetch"),
        }
    }

    #[track_caller]
    fn fetches(d: Decision) -> u64 {
        match d {
            Decision::Fetch { generation } => generation,
            Decision::Serve { .. } => panic!("expected a fetch, got a value"),
            Decision::Fail(f) => panic!("expected a fetch, got a failure: {}", f.error.code),
        }
    }

    #[track_caller]
    fn fails(d: Decision) -> Failure {
        match d {
            Decision::Fail(f) => f,
            Decision::Serve { .. } => panic!("expected a failure, got a value"),
            Decision::Fetch { .. } => panic!("expected a failure, got a fetch"),
        }
    }

    #[test]
    fn empty_slot_fetches() {
        let (p, t0) = (policy(), Instant::now());
        assert_eq!(fetches(p.decide(&mut SlotState::default(), false, t0)), 0);
    }

    #[test]
    fn fresh_value_is_served_without_a_fetch() {
        let (p, t0) = (policy(), Instant::now());
        let mut st = warm(&p, "v1", t0);
        for at in [t0, t0 + secs(1), t0 + secs(89)] {
            assert_eq!(served(p.decide(&mut st, false, at)), ("v1".into(), None));
        }
    }

    #[test]
    fn refresh_ahead_window_starts_one_background_refresh() {
        let (p, t0) = (policy(), Instant::now());
        let mut st = warm(&p, "v1", t0);
        assert_eq!(
            served(p.decide(&mut st, false, t0 + secs(89))),
            ("v1".into(), None)
        );
        // The last 10 % of the TTL: served at once, and exactly one caller refreshes.
        assert_eq!(
            served(p.decide(&mut st, false, t0 + secs(91))),
            ("v1".into(), Some(1))
        );
        for at in [t0 + secs(92), t0 + secs(99)] {
            assert_eq!(served(p.decide(&mut st, false, at)), ("v1".into(), None));
        }
        // The refresh lands: the new value is fresh, with a new window.
        let out = p.record(&mut st, Ok(v("v2")), t0 + secs(91), t0 + secs(92));
        st.refresh_finished();
        assert_eq!(out.unwrap().expose_secret(), "v2");
        assert_eq!(
            served(p.decide(&mut st, false, t0 + secs(95))),
            ("v2".into(), None)
        );
        assert_eq!(
            served(p.decide(&mut st, false, t0 + secs(183))),
            ("v2".into(), Some(2))
        );
    }

    #[test]
    fn refresh_ahead_waits_for_the_back_off_after_a_failed_refresh() {
        let (p, t0) = (policy(), Instant::now());
        let mut st = warm(&p, "v1", t0);
        assert!(served(p.decide(&mut st, false, t0 + secs(91))).1.is_some());
        let out = p.record(
            &mut st,
            Err(unavailable(None)),
            t0 + secs(91),
            t0 + secs(92),
        );
        st.refresh_finished();
        assert_eq!(out.unwrap().expose_secret(), "v1", "stale on error");
        // Still fresh, but backing off: served, no new refresh until the back-off ends.
        assert_eq!(
            served(p.decide(&mut st, false, t0 + secs(95))),
            ("v1".into(), None)
        );
        assert_eq!(
            served(p.decide(&mut st, false, t0 + secs(99))),
            ("v1".into(), None)
        );
        // A failure that ended before the window: the back-off is over when the window opens.
        let mut st = warm(&p, "v1", t0);
        let at = t0 + secs(80);
        let stale = p.record(&mut st, Err(unavailable(None)), at, at);
        assert_eq!(stale.unwrap().expose_secret(), "v1");
        assert_eq!(
            served(p.decide(&mut st, false, t0 + secs(91))),
            ("v1".into(), Some(2))
        );
    }

    #[test]
    fn expired_value_is_refetched() {
        let (p, t0) = (policy(), Instant::now());
        let mut st = warm(&p, "v1", t0);
        assert_eq!(fetches(p.decide(&mut st, false, t0 + TTL)), 1);
        assert_eq!(fetches(p.decide(&mut st, false, t0 + secs(500))), 1);
        let out = p.record(&mut st, Ok(v("v2")), t0 + TTL, t0 + TTL + secs(1));
        assert_eq!(out.unwrap().expose_secret(), "v2");
        assert_eq!(
            served(p.decide(&mut st, false, t0 + TTL + secs(2))),
            ("v2".into(), None)
        );
    }

    #[test]
    fn vault_failure_serves_the_stale_value_until_max_staleness_then_fails_closed() {
        let (p, t0) = (policy(), Instant::now());
        let mut st = warm(&p, "v1", t0);
        let limit = t0 + TTL + p.max_staleness;
        // Expired, the vault fails: the last good value is served.
        let at = t0 + TTL;
        let out = p.record(&mut st, Err(unavailable(None)), at, at + secs(1));
        assert_eq!(out.unwrap().expose_secret(), "v1");
        // Within the back-off: served stale without a fetch.
        assert_eq!(
            served(p.decide(&mut st, false, at + secs(5))),
            ("v1".into(), None)
        );
        // Failing again and again, up to the last instant of the staleness window.
        let at = limit - secs(1);
        assert_eq!(fetches(p.decide(&mut st, false, at)), 2);
        let out = p.record(&mut st, Err(unavailable(None)), at, at);
        assert_eq!(out.unwrap().expose_secret(), "v1");
        assert_eq!(served(p.decide(&mut st, false, at)).0, "v1");
        // Past MAX_STALENESS: fail closed, both within the back-off and on the next fetch.
        let f = fails(p.decide(&mut st, false, limit));
        assert_eq!(f.error.kind, SecretErrorKind::Unavailable);
        assert_eq!(f.retry_after_secs, 9);
        let at = limit + secs(20);
        assert_eq!(fetches(p.decide(&mut st, false, at)), 3);
        let f = p
            .record(&mut st, Err(unavailable(None)), at, at)
            .unwrap_err();
        assert_eq!(f.error.code, "VaultUnreachable");
        assert_eq!(f.retry_after_secs, 10);
        // A good fetch ends it.
        p.record(&mut st, Ok(v("v2")), at + secs(30), at + secs(30))
            .unwrap();
        assert_eq!(served(p.decide(&mut st, false, at + secs(31))).0, "v2");
    }

    #[test]
    fn error_back_off_leaves_the_vault_alone() {
        let (p, t0) = (policy(), Instant::now());
        let mut st = SlotState::default();
        let f = p
            .record(&mut st, Err(unavailable(None)), t0, t0 + secs(2))
            .unwrap_err();
        // Judged from when the request arrived: the back-off plus the fetch's own time.
        assert_eq!(f.retry_after_secs, 12);
        let f = fails(p.decide(&mut st, false, t0 + secs(5)));
        assert_eq!(f.retry_after_secs, 7);
        assert_eq!(
            fails(p.decide(&mut st, false, t0 + secs(12) - Duration::from_millis(1)))
                .retry_after_secs,
            1,
            "never less than a second"
        );
        assert_eq!(fetches(p.decide(&mut st, false, t0 + secs(12))), 1);
    }

    #[test]
    fn a_longer_retry_after_is_honoured_and_capped() {
        let (p, t0) = (policy(), Instant::now());
        let throttled = |after| {
            let mut st = SlotState::default();
            p.record(&mut st, Err(unavailable(Some(after))), t0, t0)
                .unwrap_err();
            st
        };
        // Shorter than our back-off: ours applies.
        let mut st = throttled(3);
        assert!(matches!(
            p.decide(&mut st, false, t0 + secs(9)),
            Decision::Fail(_)
        ));
        assert_eq!(fetches(p.decide(&mut st, false, t0 + secs(10))), 1);
        // Longer: the vault's.
        let mut st = throttled(30);
        assert_eq!(
            fails(p.decide(&mut st, false, t0 + secs(10))).retry_after_secs,
            20
        );
        assert_eq!(fetches(p.decide(&mut st, false, t0 + secs(30))), 1);
        // Capped at a minute.
        let mut st = throttled(3600);
        assert!(matches!(
            p.decide(&mut st, false, t0 + secs(59)),
            Decision::Fail(_)
        ));
        assert_eq!(fetches(p.decide(&mut st, false, t0 + secs(60))), 1);
        // Only throttling/unavailability hints count: a 404's Retry-After does not.
        let mut st = SlotState::default();
        let not_found = FetchError {
            kind: SecretErrorKind::NotFound,
            code: "SecretNotFound (HTTP 404)".into(),
            retry_after: Some(60),
            detail: String::new(),
        };
        p.record(&mut st, Err(not_found), t0, t0).unwrap_err();
        assert_eq!(fetches(p.decide(&mut st, false, t0 + secs(10))), 1);
    }

    #[test]
    fn rejection_driven_refetch_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut limit = RejectionLimit::new(REJECTION_INTERVAL);
        assert!(limit.allow(SecretSetting::SmtpPassword, t0));
        assert!(!limit.allow(SecretSetting::SmtpPassword, t0 + secs(29)));
        // Per setting.
        assert!(limit.allow(SecretSetting::DatabaseUrl, t0 + secs(29)));
        assert!(limit.allow(SecretSetting::SmtpPassword, t0 + REJECTION_INTERVAL));
        assert!(!limit.allow(
            SecretSetting::SmtpPassword,
            t0 + REJECTION_INTERVAL + secs(1)
        ));
    }

    #[test]
    fn a_rejected_value_is_refetched_unless_backing_off() {
        let (p, t0) = (policy(), Instant::now());
        let mut st = warm(&p, "v1", t0);
        st.request_refetch();
        assert_eq!(fetches(p.decide(&mut st, false, t0 + secs(1))), 1);
        p.record(&mut st, Ok(v("v2")), t0 + secs(1), t0 + secs(1))
            .unwrap();
        assert_eq!(served(p.decide(&mut st, false, t0 + secs(2))).0, "v2");
        // Rejected while the vault is failing: the stale value until the back-off ends.
        p.record(&mut st, Err(unavailable(None)), t0 + secs(3), t0 + secs(3))
            .unwrap();
        st.request_refetch();
        assert_eq!(served(p.decide(&mut st, false, t0 + secs(4))).0, "v2");
        assert_eq!(fetches(p.decide(&mut st, false, t0 + secs(13))), 3);
        // An explicit refresh that passed the rate limit fetches even a fresh value.
        let mut st = warm(&p, "v1", t0);
        assert_eq!(fetches(p.decide(&mut st, true, t0)), 1);
    }

    #[test]
    fn single_flight_a_waiter_takes_the_finished_fetch() {
        let (p, t0) = (policy(), Instant::now());
        let mut st = SlotState::default();
        // Two callers decide to fetch, both having seen generation 0.
        let a = fetches(p.decide(&mut st, false, t0));
        let b = fetches(p.decide(&mut st, false, t0));
        assert_eq!((a, b), (0, 0));
        // The first takes the flight lock: nothing happened meanwhile, it fetches.
        assert!(p.joined(&st, a, t0).is_none());
        p.record(&mut st, Ok(v("v1")), t0, t0 + secs(1)).unwrap();
        // The second gets the lock after: it takes that outcome instead of fetching.
        let out = p.joined(&st, b, t0 + secs(1)).expect("joined");
        assert_eq!(out.unwrap().expose_secret(), "v1");
        // A failed fetch is shared the same way (no stale value: the failure).
        let mut st = SlotState::default();
        p.record(&mut st, Err(unavailable(None)), t0, t0)
            .unwrap_err();
        let f = p.joined(&st, 0, t0).expect("joined").unwrap_err();
        assert_eq!(f.error.code, "VaultUnreachable");
        assert!(p.joined(&st, 1, t0).is_none(), "a later caller fetches");
    }

    /// A clock the test moves by hand.
    struct ManualClock(Mutex<Instant>);

    impl ManualClock {
        fn advance(&self, d: Duration) {
            *lock(&self.0) += d;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *lock(&self.0)
        }
    }

    fn fetched(value: &str) -> Fetched {
        Fetched {
            value: v(value),
            version: Some("v".into()),
        }
    }

    #[test]
    fn single_flight_two_waiters_one_fetch() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (p, clock) = (policy(), SystemClock);
        let slot = Slot::default();
        let calls = AtomicU64::new(0);
        let counter = &calls;
        let (open, gate) = tokio::sync::oneshot::channel::<()>();
        let fetch = move || async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, FetchError>(fetched("v1"))
        };
        let (a, b) = rt.block_on(async {
            let first = slot.flight(&p, &clock, 0, move || async move {
                // Hold the flight until the second caller is queued behind it.
                gate.await.unwrap();
                fetch().await
            });
            let second = async {
                tokio::task::yield_now().await;
                let queued = slot.flight(&p, &clock, 0, fetch);
                let _ = open.send(());
                queued.await
            };
            tokio::join!(first, second)
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(a, Flight::Fetched { ref value, .. } if value.expose_secret() == "v1"));
        assert!(matches!(b, Flight::Joined(Ok(ref value)) if value.expose_secret() == "v1"));
    }

    #[test]
    fn a_slow_failed_fetch_judges_staleness_when_the_request_arrived() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let p = policy();
        let t0 = Instant::now();
        let clock = ManualClock(Mutex::new(t0));
        let slot = Slot::default();
        rt.block_on(slot.flight(&p, &clock, 0, || async {
            Ok::<_, FetchError>(fetched("v1"))
        }));
        // The request arrives one second before the staleness limit; the fetch takes 3 s.
        clock.advance(TTL + p.max_staleness - secs(1));
        let seen = fetches(slot.decide(&p, false, clock.now()));
        let hand = &clock;
        let flight = rt.block_on(slot.flight(&p, &clock, seen, move || async move {
            hand.advance(secs(3));
            Err::<Fetched, _>(unavailable(None))
        }));
        let Flight::Failed {
            outcome, elapsed, ..
        } = flight
        else {
            panic!("expected a failed fetch");
        };
        assert_eq!(elapsed, secs(3));
        assert_eq!(outcome.unwrap().expose_secret(), "v1");
        // Anyone arriving now is past the limit: fail closed, even within the back-off.
        let f = fails(slot.decide(&p, false, clock.now()));
        assert_eq!(f.retry_after_secs, 10);
    }
}
