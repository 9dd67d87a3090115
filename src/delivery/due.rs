//! Which occurrences a tick delivers and which it records as missed: a pure function of the
//! schedule, the tick time and what the ledger knows about the report, so the rule is unit-tested
//! without a ledger, a database or a clock.
//!
//! The rule, for one report at tick time `tick`:
//! - **due**: every occurrence in `[tick - catch_up, tick]`, oldest first. The ledger's claim
//!   makes each of them go out at most once however often ticks repeat.
//! - **missed**: the most recent occurrences older than `catch_up` (at most
//!   [`MAX_MISSED_RECORDED`], none older than [`SKIP_HORIZON`] before the catch-up window) and
//!   not before the report was first seen by a tick. They are recorded as skipped so the ledger
//!   shows the gap. Occurrences from before a report first appeared (a new install, a report just
//!   added) are not history and are not recorded at all: an operator can still send one by hand.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::report::Schedule;

/// How far before `catch_up` the tick still looks for missed occurrences to record as skipped.
pub const SKIP_HORIZON: chrono::Duration = chrono::Duration::days(2);

/// At most this many missed occurrences per report are recorded as skipped on one tick.
pub const MAX_MISSED_RECORDED: usize = 24;

/// What one tick should do for one report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DuePlan {
    /// Occurrences to claim and deliver, oldest first.
    pub due: Vec<DateTime<Utc>>,
    /// Occurrences missed by more than `catch_up`, to record as skipped, oldest first.
    pub missed: Vec<DateTime<Utc>>,
}

/// Computes the [`DuePlan`] of one report for a tick at `tick`. `first_seen` is when a tick
/// first saw the report (the ledger keeps it); `catch_up` is the report's setting.
pub fn due_occurrences(
    schedule: &Schedule,
    tz: Tz,
    catch_up: std::time::Duration,
    first_seen: DateTime<Utc>,
    tick: DateTime<Utc>,
) -> DuePlan {
    let catch_up = chrono::Duration::from_std(catch_up).unwrap_or(chrono::Duration::hours(2));
    let oldest_due = tick - catch_up;
    let due = schedule.occurrences_between(tz, oldest_due - chrono::Duration::nanoseconds(1), tick);
    let mut missed = Vec::new();
    let mut cursor = oldest_due;
    while missed.len() < MAX_MISSED_RECORDED {
        match schedule.previous_before(tz, cursor) {
            Some(p) if p > oldest_due - SKIP_HORIZON && p >= first_seen => {
                missed.push(p);
                cursor = p;
            }
            _ => break,
        }
    }
    missed.reverse();
    DuePlan { due, missed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    fn daily_six() -> Schedule {
        Schedule::parse("0 0 6 * * *").unwrap()
    }

    const TWO_HOURS: Duration = Duration::from_secs(2 * 3600);

    #[test]
    fn a_tick_inside_catch_up_delivers_the_occurrence() {
        let plan = due_occurrences(
            &daily_six(),
            chrono_tz::UTC,
            TWO_HOURS,
            at(1, 0, 0),
            at(10, 6, 5),
        );
        assert_eq!(plan.due, vec![at(10, 6, 0)]);
        // 9th and 8th at 06:00 are older than catch_up and after first_seen.
        assert_eq!(plan.missed, vec![at(8, 6, 0), at(9, 6, 0)]);
    }

    #[test]
    fn a_fresh_install_records_nothing_from_before_it_existed() {
        // First seen now: yesterday's and the day before's occurrences are not history.
        let tick = at(10, 12, 0);
        let plan = due_occurrences(&daily_six(), chrono_tz::UTC, TWO_HOURS, tick, tick);
        assert!(plan.due.is_empty());
        assert!(plan.missed.is_empty(), "{:?}", plan.missed);
    }

    #[test]
    fn only_occurrences_since_first_seen_are_missed() {
        let plan = due_occurrences(
            &daily_six(),
            chrono_tz::UTC,
            TWO_HOURS,
            at(9, 0, 0),
            at(10, 12, 0),
        );
        assert_eq!(plan.missed, vec![at(9, 6, 0), at(10, 6, 0)]);
    }

    #[test]
    fn due_is_inclusive_at_both_ends_and_respects_the_zone() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // 06:00 Berlin = 05:00 UTC in November.
        let plan = due_occurrences(&daily_six(), tz, TWO_HOURS, at(1, 0, 0), at(10, 7, 0));
        assert_eq!(plan.due, vec![at(10, 5, 0)]);
        let plan = due_occurrences(&daily_six(), tz, TWO_HOURS, at(1, 0, 0), at(10, 5, 0));
        assert_eq!(plan.due, vec![at(10, 5, 0)]);
        let plan = due_occurrences(&daily_six(), tz, TWO_HOURS, at(1, 0, 0), at(10, 4, 59));
        assert!(plan.due.is_empty());
    }

    #[test]
    fn a_frequent_schedule_is_bounded() {
        let every_minute = Schedule::parse("0 * * * * *").unwrap();
        let plan = due_occurrences(
            &every_minute,
            chrono_tz::UTC,
            Duration::from_secs(600),
            at(1, 0, 0),
            at(10, 12, 0),
        );
        assert_eq!(plan.due.len(), 11, "11:50 to 12:00 inclusive");
        assert_eq!(plan.missed.len(), MAX_MISSED_RECORDED);
        assert!(plan.missed.windows(2).all(|w| w[0] < w[1]), "oldest first");
        assert!(*plan.missed.last().unwrap() < plan.due[0]);
    }

    #[test]
    fn nothing_before_the_skip_horizon() {
        let plan = due_occurrences(
            &daily_six(),
            chrono_tz::UTC,
            TWO_HOURS,
            at(1, 0, 0),
            at(20, 6, 0),
        );
        // catch_up starts at 04:00 on the 20th; the horizon two days before that.
        assert_eq!(plan.missed, vec![at(18, 6, 0), at(19, 6, 0)]);
    }
}
