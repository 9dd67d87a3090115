//! Report windows: the `[start, end)` span of time one run of a report covers.
//!
//! The same window feeds the SQL (`:start`, `:end`, `:date`), the email subject and the API, so
//! the timer and the HTTP trigger report on exactly the same rows. All calendar arithmetic
//! happens in the report's own time zone: a "day" is a local calendar day, 23 or 25 hours long on
//! DST days, never a fixed 24 hours.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Days, Duration as ChronoDuration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;

use super::schedule::{Schedule, local_naive, local_to_utc};

/// The largest `N` accepted in `"<N>h"` and `"<N>d"`: ten years is plenty for a report and
/// keeps all date arithmetic far from overflow.
pub const MAX_WINDOW_UNITS: u32 = 3660 * 24;

/// What span of time a report's occurrence covers (`window` in `reports.toml`).
///
/// Reports need different spans: a nightly report covers yesterday, an hourly one the last hour,
/// a report on an irregular schedule everything since its previous run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// `previous_day`: the local calendar day before the occurrence's local date. The usual
    /// nightly report.
    PreviousDay,
    /// `since_previous_occurrence`: from the schedule's previous occurrence up to this one, so
    /// consecutive runs tile time without gaps or overlaps whatever the schedule.
    SincePreviousOccurrence,
    /// `"<N>h"`: exactly N hours ending at the occurrence.
    Hours(u32),
    /// `"<N>d"`: N local calendar days ending at the occurrence (same local time N days back;
    /// 23 or 25 hours per DST day).
    Days(u32),
}

impl FromStr for WindowKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "previous_day" => return Ok(WindowKind::PreviousDay),
            "since_previous_occurrence" => return Ok(WindowKind::SincePreviousOccurrence),
            _ => {}
        }
        let expected = "expected `previous_day`, `since_previous_occurrence`, \
                        `<N>h` or `<N>d` (e.g. `24h`, `7d`)";
        let (number, unit) = s.split_at(s.len().saturating_sub(1));
        if !number.bytes().all(|b| b.is_ascii_digit()) || number.is_empty() {
            return Err(format!("unknown window `{s}`: {expected}"));
        }
        let n: u32 = number
            .parse()
            .ok()
            .filter(|&n| (1..=MAX_WINDOW_UNITS).contains(&n))
            .ok_or_else(|| format!("window `{s}`: N must be between 1 and {MAX_WINDOW_UNITS}"))?;
        match unit {
            "h" => Ok(WindowKind::Hours(n)),
            "d" if n <= MAX_WINDOW_UNITS / 24 => Ok(WindowKind::Days(n)),
            "d" => Err(format!(
                "window `{s}`: N must be between 1 and {}",
                MAX_WINDOW_UNITS / 24
            )),
            _ => Err(format!("unknown window `{s}`: {expected}")),
        }
    }
}

impl fmt::Display for WindowKind {
    /// The `reports.toml` spelling, so the API and logs show what the user wrote.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowKind::PreviousDay => f.write_str("previous_day"),
            WindowKind::SincePreviousOccurrence => f.write_str("since_previous_occurrence"),
            WindowKind::Hours(n) => write!(f, "{n}h"),
            WindowKind::Days(n) => write!(f, "{n}d"),
        }
    }
}

/// Everything about a report that decides its windows: the schedule, the time zone and the
/// window kind, borrowed from a report with `Report::timing`.
///
/// Windows take this rather than a whole report so that this module needs nothing from the
/// report definitions: window arithmetic stays independent of `reports.toml` and the
/// dependency between the two modules runs one way only.
#[derive(Clone, Copy, Debug)]
pub struct Timing<'a> {
    /// When the report runs; `since_previous_occurrence` windows and API dates are found from
    /// it.
    pub schedule: &'a Schedule,
    /// The zone every calendar computation happens in, so a "day" is a local calendar day.
    pub time_zone: Tz,
    /// Which span of time each run covers, so a window knows whether to count back hours,
    /// local days or to the previous run.
    pub window: WindowKind,
}

/// One concrete window: the rows with `start <= created_at < end`.
///
/// `date` is the local date the report is "about" (`:date`, `{date}`): the day reported on for
/// `previous_day`, otherwise the local date of the occurrence (or of `start` for an explicit
/// window).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start (`:start`); with the exclusive end, consecutive windows share a
    /// boundary without counting a row twice.
    pub start: DateTime<Utc>,
    /// Exclusive end (`:end`): the occurrence itself, except for `previous_day`, which ends at
    /// the local midnight that closes the day reported on.
    pub end: DateTime<Utc>,
    /// The report's time zone, kept so renderers can show local times.
    pub time_zone: Tz,
    /// The report's local date (`:date`, `{date}`), the day a reader would say the report is
    /// for.
    pub date: NaiveDate,
}

impl Window {
    /// The window a scheduled occurrence reports on: what the timer trigger queries and mails
    /// for that occurrence.
    pub fn for_occurrence(timing: &Timing<'_>, occurrence: DateTime<Utc>) -> Window {
        let tz = timing.time_zone;
        let local_date = local_naive(tz, occurrence)
            .map(|l| l.date())
            .unwrap_or_else(|| occurrence.date_naive());
        // Fallback starts never overflow: at the edge of chrono's range (an API date such as
        // `-262143-01-05`) the window starts at the earliest representable instant instead.
        let back = |d: ChronoDuration| {
            occurrence
                .checked_sub_signed(d)
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        match timing.window {
            WindowKind::PreviousDay => {
                let day = local_date.pred_opt().unwrap_or(local_date);
                calendar_day(tz, day).unwrap_or_else(|| Window {
                    start: back(ChronoDuration::days(1)),
                    end: occurrence,
                    time_zone: tz,
                    date: day,
                })
            }
            WindowKind::SincePreviousOccurrence => {
                // Without a previous occurrence (only for a schedule rarer than the search
                // bound) fall back to one local day rather than an unbounded window.
                let start = timing
                    .schedule
                    .previous_before(tz, occurrence)
                    .or_else(|| days_back(tz, occurrence, 1))
                    .unwrap_or_else(|| back(ChronoDuration::days(1)));
                Window {
                    start,
                    end: occurrence,
                    time_zone: tz,
                    date: local_date,
                }
            }
            WindowKind::Hours(n) => Window {
                start: back(ChronoDuration::hours(i64::from(n))),
                end: occurrence,
                time_zone: tz,
                date: local_date,
            },
            WindowKind::Days(n) => Window {
                start: days_back(tz, occurrence, n)
                    .unwrap_or_else(|| back(ChronoDuration::days(i64::from(n)))),
                end: occurrence,
                time_zone: tz,
                date: local_date,
            },
        }
    }

    /// The window the API means by "the report for local date `d`": the calendar day `d` itself
    /// for `previous_day`; otherwise the window of the first occurrence on `d` (`None` if the
    /// schedule does not fire that day).
    pub fn for_local_date(timing: &Timing<'_>, d: NaiveDate) -> Option<Window> {
        let tz = timing.time_zone;
        match timing.window {
            WindowKind::PreviousDay => calendar_day(tz, d),
            _ => timing
                .schedule
                .first_on_local_date(tz, d)
                .map(|occurrence| Window::for_occurrence(timing, occurrence)),
        }
    }

    /// The most recent window that has ended as of `now`: yesterday (local) for `previous_day`;
    /// otherwise the window of the latest occurrence at or before `now`.
    pub fn latest_completed(timing: &Timing<'_>, now: DateTime<Utc>) -> Option<Window> {
        let tz = timing.time_zone;
        match timing.window {
            WindowKind::PreviousDay => {
                let today = local_naive(tz, now)?.date();
                calendar_day(tz, today.pred_opt()?)
            }
            _ => timing
                .schedule
                .previous_before(
                    tz,
                    now.checked_add_signed(ChronoDuration::nanoseconds(1))
                        .unwrap_or(now),
                )
                .map(|occurrence| Window::for_occurrence(timing, occurrence)),
        }
    }

    /// A window given explicitly (API `from`/`to`); its date is the local date of `start`, so
    /// `:date` and `{date}` still mean a day in the report's zone. Only the time zone of
    /// `timing` is used.
    pub fn explicit(timing: &Timing<'_>, start: DateTime<Utc>, end: DateTime<Utc>) -> Window {
        let tz = timing.time_zone;
        Window {
            start,
            end,
            time_zone: tz,
            date: local_naive(tz, start)
                .map(|l| l.date())
                .unwrap_or_else(|| start.date_naive()),
        }
    }

    /// Whether every row of the window can exist by `now` (its end is not in the future), so
    /// its result is final and may be cached or mailed.
    pub fn has_ended(&self, now: DateTime<Utc>) -> bool {
        self.end <= now
    }

    /// How long the window is. Useful in logs and tests: 23 or 25 hours on DST days.
    pub fn duration(&self) -> ChronoDuration {
        self.end - self.start
    }
}

/// The local calendar day `d` in `tz` as a window (date = `d`).
fn calendar_day(tz: Tz, d: NaiveDate) -> Option<Window> {
    Some(Window {
        start: local_to_utc(tz, d.and_time(NaiveTime::MIN))?,
        end: local_to_utc(tz, d.succ_opt()?.and_time(NaiveTime::MIN))?,
        time_zone: tz,
        date: d,
    })
}

/// The instant `n` local calendar days before `t`, at the same local wall-clock time.
fn days_back(tz: Tz, t: DateTime<Utc>, n: u32) -> Option<DateTime<Utc>> {
    let local = local_naive(tz, t)?;
    local_to_utc(tz, local.checked_sub_days(Days::new(u64::from(n)))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERLIN: Tz = chrono_tz::Europe::Berlin;
    const NEW_YORK: Tz = chrono_tz::America::New_York;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test instant")
            .with_timezone(&Utc)
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("test date")
    }

    /// The timing a report with these `reports.toml` values would have, built without a
    /// reports file. The schedule is leaked so the timing needs no owner: a few bytes per test.
    fn report(schedule: &str, tz: &str, window: &str) -> Timing<'static> {
        Timing {
            schedule: Box::leak(Box::new(
                Schedule::parse(schedule).expect("valid test schedule"),
            )),
            time_zone: tz.parse().expect("valid test time zone"),
            window: window.parse().expect("valid test window"),
        }
    }

    fn hours(w: &Window) -> i64 {
        w.duration().num_minutes() / 60
    }

    #[test]
    fn window_kind_round_trips_and_rejects_junk() {
        for s in [
            "previous_day",
            "since_previous_occurrence",
            "24h",
            "7d",
            "1h",
        ] {
            let kind: WindowKind = s.parse().unwrap();
            assert_eq!(kind.to_string(), s);
        }
        for bad in [
            "",
            "h",
            "0h",
            "-1d",
            "1w",
            "1.5h",
            "24 h",
            "PreviousDay",
            "99999999d",
        ] {
            assert!(bad.parse::<WindowKind>().is_err(), "{bad}");
        }
    }

    #[test]
    fn previous_day_is_the_local_day_before_with_dst_lengths() {
        let r = report("0 0 6 * * *", "Europe/Berlin", "previous_day");
        // Runs 2026-03-30 06:00 CEST: reports on 2026-03-29, a 23-hour day.
        let occ = r
            .schedule
            .first_on_local_date(BERLIN, date(2026, 3, 30))
            .unwrap();
        let w = Window::for_occurrence(&r, occ);
        assert_eq!(w.date, date(2026, 3, 29));
        assert_eq!(w.start, utc("2026-03-28T23:00:00Z"));
        assert_eq!(w.end, utc("2026-03-29T22:00:00Z"));
        assert_eq!(hours(&w), 23);
        // Runs 2026-10-26: reports on 2026-10-25, a 25-hour day.
        let occ = r
            .schedule
            .first_on_local_date(BERLIN, date(2026, 10, 26))
            .unwrap();
        let w = Window::for_occurrence(&r, occ);
        assert_eq!(w.date, date(2026, 10, 25));
        assert_eq!(hours(&w), 25);
        assert_eq!(w.start, utc("2026-10-24T22:00:00Z"));

        let ny = report("0 0 6 * * *", "America/New_York", "previous_day");
        for (run_day, day, len) in [
            (date(2026, 3, 9), date(2026, 3, 8), 23),
            (date(2026, 11, 2), date(2026, 11, 1), 25),
            (date(2026, 6, 2), date(2026, 6, 1), 24),
        ] {
            let occ = ny.schedule.first_on_local_date(NEW_YORK, run_day).unwrap();
            let w = Window::for_occurrence(&ny, occ);
            assert_eq!((w.date, hours(&w)), (day, len));
            // The API's "report for date D" is the same window.
            assert_eq!(Window::for_local_date(&ny, day), Some(w));
        }
    }

    #[test]
    fn days_window_uses_local_calendar_days_and_hours_are_exact() {
        let days = report("0 0 6 * * *", "Europe/Berlin", "1d");
        let occ = utc("2026-03-29T04:00:00Z"); // 06:00 CEST on the spring-forward day
        let w = Window::for_occurrence(&days, occ);
        assert_eq!(w.start, utc("2026-03-28T05:00:00Z")); // 06:00 CET the day before
        assert_eq!(hours(&w), 23);
        assert_eq!(w.date, date(2026, 3, 29));
        let occ = utc("2026-10-25T05:00:00Z"); // 06:00 CET on the fall-back day
        assert_eq!(hours(&Window::for_occurrence(&days, occ)), 25);

        let week = report("0 0 6 * * 1", "America/New_York", "7d");
        let occ = week
            .schedule
            .first_on_local_date(NEW_YORK, date(2026, 3, 9))
            .unwrap();
        let w = Window::for_occurrence(&week, occ);
        assert_eq!(hours(&w), 7 * 24 - 1);
        assert_eq!(
            w.start.with_timezone(&NEW_YORK).naive_local(),
            date(2026, 3, 2).and_hms_opt(6, 0, 0).unwrap()
        );

        let h = report("0 0 6 * * *", "Europe/Berlin", "24h");
        let w = Window::for_occurrence(&h, utc("2026-03-29T04:00:00Z"));
        assert_eq!(w.start, utc("2026-03-28T04:00:00Z"));
        assert_eq!(hours(&w), 24);
    }

    #[test]
    fn since_previous_occurrence_tiles_time() {
        let r = report(
            "0 0 6,18 * * 1-5",
            "Europe/Berlin",
            "since_previous_occurrence",
        );
        let occurrences = r.schedule.occurrences_between(
            BERLIN,
            utc("2026-03-25T00:00:00Z"),
            utc("2026-04-03T00:00:00Z"),
        );
        assert!(occurrences.len() > 10);
        let windows: Vec<Window> = occurrences
            .iter()
            .map(|o| Window::for_occurrence(&r, *o))
            .collect();
        for pair in windows.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        // Monday 06:00 covers the weekend back to Friday 18:00.
        let monday = r
            .schedule
            .first_on_local_date(BERLIN, date(2026, 3, 30))
            .unwrap();
        let w = Window::for_occurrence(&r, monday);
        assert_eq!(
            w.start.with_timezone(&BERLIN).naive_local(),
            date(2026, 3, 27).and_hms_opt(18, 0, 0).unwrap()
        );
        assert_eq!(w.date, date(2026, 3, 30));
    }

    #[test]
    fn for_local_date_and_latest_completed() {
        let r = report("0 0 6 * * *", "Europe/Berlin", "previous_day");
        // 2026-06-10 00:30 CEST is still 06-09 in UTC: "yesterday" is local, 06-09.
        let now = utc("2026-06-09T22:30:00Z");
        let w = Window::latest_completed(&r, now).unwrap();
        assert_eq!(w.date, date(2026, 6, 9));
        assert!(w.has_ended(now));
        assert_eq!(Window::for_local_date(&r, date(2026, 6, 9)), Some(w));

        let weekdays = report(
            "0 0 6 * * 1-5",
            "Europe/Berlin",
            "since_previous_occurrence",
        );
        assert_eq!(Window::for_local_date(&weekdays, date(2026, 6, 13)), None);
        let monday = Window::for_local_date(&weekdays, date(2026, 6, 15)).unwrap();
        assert_eq!(monday.end, utc("2026-06-15T04:00:00Z"));
        assert_eq!(monday.start, utc("2026-06-12T04:00:00Z"));
        // As of exactly Monday 06:00 the Monday window is complete; a second before it is not.
        let at = utc("2026-06-15T04:00:00Z");
        assert_eq!(
            Window::latest_completed(&weekdays, at),
            Some(monday.clone())
        );
        let before = Window::latest_completed(&weekdays, at - ChronoDuration::seconds(1)).unwrap();
        assert_eq!(before.end, utc("2026-06-12T04:00:00Z"));
        assert!(monday.has_ended(at));
        assert!(!monday.has_ended(at - ChronoDuration::seconds(1)));
    }

    #[test]
    fn explicit_window_takes_the_local_date_of_its_start() {
        let r = report("0 0 6 * * *", "America/New_York", "previous_day");
        let w = Window::explicit(&r, utc("2026-06-10T02:00:00Z"), utc("2026-06-11T02:00:00Z"));
        assert_eq!(w.date, date(2026, 6, 9));
        assert_eq!(w.time_zone, NEW_YORK);
    }

    /// Found by `fuzz/fuzz_targets/forwarded_query.rs`: `?date=-262143-01-05` (a date the API
    /// accepts) put a window start or a DST-gap walk before chrono's earliest instant, and the
    /// `DateTime - TimeDelta` overflow panicked the request.
    #[test]
    fn api_dates_at_the_edge_of_time_do_not_panic() {
        let windows = ["2h", "7d", "since_previous_occurrence", "previous_day"];
        for (schedule, tz) in [
            ("0 0 * * * *", "UTC"),
            ("0 0 6 * * 1-5", "America/New_York"),
            ("0 0 8 * * *", "UTC"),
        ] {
            for window in windows {
                let r = report(schedule, tz, window);
                for day in 1..=10 {
                    for year in [-262_143, 262_142] {
                        let month = if year < 0 { 1 } else { 12 };
                        let d = if year < 0 { day } else { 32 - day };
                        let Some(d) = NaiveDate::from_ymd_opt(year, month, d) else {
                            continue;
                        };
                        if let Some(w) = Window::for_local_date(&r, d) {
                            assert!(w.start <= w.end, "{schedule} {tz} {window} {d}: {w:?}");
                        }
                    }
                }
                for t in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
                    let _ = Window::latest_completed(&r, t);
                    let _ = Window::for_occurrence(&r, t);
                    let _ = Window::explicit(&r, t, t);
                }
            }
        }
    }
}
