//! NCRONTAB schedules, evaluated in a report's own IANA time zone with explicit DST rules.
//!
//! Azure Functions writes timer schedules in NCRONTAB: six fields
//! `{second} {minute} {hour} {day} {month} {day-of-week}` (or five, without seconds), day of
//! week `0`-`6` with Sunday `0` (`7` is Sunday too). The `cron` crate parses nearly the same
//! language but counts days of week `1`-`7` from Sunday, so [`Schedule::parse`] translates the
//! day-of-week field and lets `cron` parse the result: one parser, well tested, for everything
//! else (names, ranges, steps, lists).
//!
//! Evaluation is ours, not `cron`'s. Checked with `cron` 0.17 and chrono-tz: for `0 30 2 * * *`
//! in Europe/Berlin it skips 2026-03-29 entirely (no 02:30 that day) and fires twice on
//! 2026-10-25 (02:30 CEST and 02:30 CET); New York behaves the same on 2026-03-08 and
//! 2026-11-01. A nightly report must neither vanish nor arrive twice, so we walk *local* dates
//! and times of day and map each local time to an instant with two rules, so that a daily
//! schedule fires exactly once on every local day:
//! - a local time that does not exist (the hour skipped when clocks spring forward) fires at the
//!   first instant after the gap (02:30 Europe/Berlin on 2026-03-29 fires at 03:00 CEST);
//! - a local time that exists twice (the hour repeated when clocks fall back) fires once, at the
//!   first of the two instants.
//!
//! Several local times can map to the same instant (02:30 and 03:00 on a spring-forward day);
//! that instant is one occurrence, not two.

use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Days, Duration as ChronoDuration, LocalResult, NaiveDate, NaiveDateTime,
    NaiveTime, TimeZone, Utc,
};
use chrono_tz::Tz;
use cron::TimeUnitSpec;

/// The most occurrences [`Schedule::occurrences_between`] returns: a tick after a long outage
/// must not turn an every-second schedule into millions of deliveries.
pub const MAX_OCCURRENCES: usize = 10_000;

/// How many local days a search for the next or previous occurrence looks at. Twenty-eight years
/// (plus slack) is one full cycle of weekdays over leap years, so a schedule such as "29 February
/// on a Monday" is still found; days that cannot match cost only a table lookup.
const SEARCH_DAYS: u64 = 366 * 28 + 14;

/// A parsed NCRONTAB schedule.
///
/// It keeps the expression as written, because users recognise their own text in logs, `handler
/// check` output and the API, and the translated `cron`-crate expression for diagnosis.
#[derive(Clone, Debug)]
pub struct Schedule {
    expression: String,
    cron_expression: String,
    seconds: Vec<u32>,
    minutes: Vec<u32>,
    hours: Vec<u32>,
    months: [bool; 13],
    days_of_month: [bool; 32],
    /// Indexed by days since Sunday (Sunday = 0).
    days_of_week: [bool; 7],
}

/// Why an NCRONTAB expression was refused: a sentence for a person editing `reports.toml` or
/// `function.json`, naming the problem and never needing the expression repeated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(String);

impl Schedule {
    /// Parses an NCRONTAB expression (6 fields with seconds first, or 5 fields without).
    ///
    /// The error is a sentence for a person editing `reports.toml`; it names the problem, not the
    /// expression (the caller knows where the expression came from).
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        Self::parse_fields(expr).map_err(ScheduleError)
    }

    fn parse_fields(expr: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            6 => (fields[0], &fields[1..]),
            5 => ("0", &fields[..]),
            n => {
                return Err(format!(
                    "expected 6 fields `second minute hour day month day-of-week` \
                     (or 5 without the seconds), found {n}"
                ));
            }
        };
        let day_of_week = translate_day_of_week(rest[4])?;
        let cron_expression = format!(
            "{second} {} {} {} {} {day_of_week}",
            rest[0], rest[1], rest[2], rest[3]
        );
        let parsed = cron::Schedule::from_str(&cron_expression)
            .map_err(|e| format!("not a valid NCRONTAB expression: {e}"))?;

        let mut months = [false; 13];
        for m in parsed.months().iter() {
            if let Some(slot) = months.get_mut(m as usize) {
                *slot = true;
            }
        }
        let mut days_of_month = [false; 32];
        for d in parsed.days_of_month().iter() {
            if let Some(slot) = days_of_month.get_mut(d as usize) {
                *slot = true;
            }
        }
        let mut days_of_week = [false; 7];
        for d in parsed.days_of_week().iter() {
            // cron counts 1..=7 from Sunday.
            if let Some(slot) = days_of_week.get_mut((d as usize).wrapping_sub(1)) {
                *slot = true;
            }
        }
        let schedule = Schedule {
            expression: expr.trim().to_string(),
            cron_expression,
            seconds: parsed.seconds().iter().collect(),
            minutes: parsed.minutes().iter().collect(),
            hours: parsed.hours().iter().collect(),
            months,
            days_of_month,
            days_of_week,
        };
        if schedule.seconds.is_empty()
            || schedule.minutes.is_empty()
            || schedule.hours.is_empty()
            || !schedule.fires_on_some_date()
        {
            return Err(
                "this schedule never fires (no calendar date matches its day, month and \
                 day-of-week fields)"
                    .into(),
            );
        }
        Ok(schedule)
    }

    /// The expression as written in `reports.toml` (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The equivalent expression in the `cron` crate's dialect (seconds first, day of week
    /// 1-7 from Sunday). Useful when diagnosing a translation.
    pub fn cron_expression(&self) -> &str {
        &self.cron_expression
    }

    /// Occurrences as UTC instants with `after < t <= until`, in order, at most
    /// [`MAX_OCCURRENCES`]. Delivery uses it to find what is due since the last tick.
    pub fn occurrences_between(
        &self,
        tz: Tz,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < MAX_OCCURRENCES {
            match self.next_after(tz, cursor) {
                Some(next) if next <= until => {
                    out.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        out
    }

    /// The first occurrence strictly after `t`, or `None` if there is none within the search
    /// bound (about 28 years).
    pub fn next_after(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Start two local days early: a time skipped on one day surfaces at the start of the
        // next, and some zones fall back across midnight.
        let start = local_naive(tz, t)?.date().checked_sub_days(Days::new(2))?;
        let mut day = start;
        for _ in 0..SEARCH_DAYS {
            if self.date_matches(day)
                && let Some(found) = self.first_on_day_after(tz, day, t)
            {
                return Some(found);
            }
            day = day.succ_opt()?;
        }
        None
    }

    /// The last occurrence strictly before `t`, or `None` if there is none within the search
    /// bound (about 28 years). The `since_previous_occurrence` window starts here.
    pub fn previous_before(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = local_naive(tz, t)?.date().checked_add_days(Days::new(2))?;
        let mut day = start;
        for _ in 0..SEARCH_DAYS {
            if self.date_matches(day)
                && let Some(found) = self.last_on_day_before(tz, day, t)
            {
                return Some(found);
            }
            day = day.pred_opt()?;
        }
        None
    }

    /// The first occurrence whose local date (in `tz`) is `d`, if the schedule fires that day.
    /// The API uses it to name a report run by its date.
    pub fn first_on_local_date(&self, tz: Tz, d: NaiveDate) -> Option<DateTime<Utc>> {
        let day_start = local_to_utc(tz, d.and_time(NaiveTime::MIN))?;
        let found = self.next_after(
            tz,
            day_start.checked_sub_signed(ChronoDuration::nanoseconds(1))?,
        )?;
        (local_naive(tz, found)?.date() == d).then_some(found)
    }

    fn date_matches(&self, d: NaiveDate) -> bool {
        self.months[d.month() as usize]
            && self.days_of_month[d.day() as usize]
            && self.days_of_week[d.weekday().num_days_from_sunday() as usize]
    }

    fn fires_on_some_date(&self) -> bool {
        let Some(mut day) = NaiveDate::from_ymd_opt(2000, 1, 1) else {
            return false;
        };
        for _ in 0..SEARCH_DAYS {
            if self.date_matches(day) {
                return true;
            }
            match day.succ_opt() {
                Some(next) => day = next,
                None => return false,
            }
        }
        false
    }

    /// The instant local date `d` at `h:m:s` fires at (DST rules in the module doc).
    fn at(&self, tz: Tz, d: NaiveDate, h: u32, m: u32, s: u32) -> Option<DateTime<Utc>> {
        let time = NaiveTime::from_hms_opt(h, m, s)?;
        local_to_utc(tz, d.and_time(time))
    }

    /// The first occurrence generated by local date `d` that is strictly after `t`. Local times
    /// map to instants monotonically, so whole hours and minutes are skipped by looking at their
    /// last time only.
    fn first_on_day_after(&self, tz: Tz, d: NaiveDate, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (&last_h, &last_m, &last_s) = (
            self.hours.last()?,
            self.minutes.last()?,
            self.seconds.last()?,
        );
        if self
            .at(tz, d, last_h, last_m, last_s)
            .is_some_and(|x| x <= t)
        {
            return None;
        }
        for &h in &self.hours {
            if self.at(tz, d, h, last_m, last_s).is_some_and(|x| x <= t) {
                continue;
            }
            for &m in &self.minutes {
                if self.at(tz, d, h, m, last_s).is_some_and(|x| x <= t) {
                    continue;
                }
                for &s in &self.seconds {
                    if let Some(x) = self.at(tz, d, h, m, s)
                        && x > t
                    {
                        return Some(x);
                    }
                }
            }
        }
        None
    }

    /// The last occurrence generated by local date `d` that is strictly before `t`.
    fn last_on_day_before(&self, tz: Tz, d: NaiveDate, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (&first_h, &first_m, &first_s) = (
            self.hours.first()?,
            self.minutes.first()?,
            self.seconds.first()?,
        );
        if self
            .at(tz, d, first_h, first_m, first_s)
            .is_some_and(|x| x >= t)
        {
            return None;
        }
        for &h in self.hours.iter().rev() {
            if self.at(tz, d, h, first_m, first_s).is_some_and(|x| x >= t) {
                continue;
            }
            for &m in self.minutes.iter().rev() {
                if self.at(tz, d, h, m, first_s).is_some_and(|x| x >= t) {
                    continue;
                }
                for &s in self.seconds.iter().rev() {
                    if let Some(x) = self.at(tz, d, h, m, s)
                        && x < t
                    {
                        return Some(x);
                    }
                }
            }
        }
        None
    }
}

/// Maps a local wall-clock time in `tz` to the instant it stands for, with the schedule's DST
/// rules: a time that exists twice means its first instant; a time skipped by a spring-forward
/// gap means the first instant after the gap. Windows use the same rule for local midnights, so
/// the start of a local day is never missing.
///
/// Returns `None` only for a gap longer than two days, which no real zone has.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(x) => Some(x.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => first_instant_after_gap(tz, local),
    }
}

/// The wall-clock time of `t` in `tz`, or `None` when it falls outside chrono's range (within
/// a day of year ±262143). chrono's own `naive_local` panics there, and an API date or a host
/// clock value can reach those instants.
pub(crate) fn local_naive(tz: Tz, t: DateTime<Utc>) -> Option<NaiveDateTime> {
    use chrono::{Offset, TimeZone as _};
    let offset = tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    t.naive_utc()
        .checked_add_signed(ChronoDuration::seconds(i64::from(offset.local_minus_utc())))
}

/// The first instant whose local time is later than `local`, a time inside a gap.
fn first_instant_after_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    use chrono::Timelike;
    let minute = local.with_second(0)?.with_nanosecond(0)?;
    for i in 1..=(48 * 60) {
        let candidate = minute.checked_add_signed(ChronoDuration::minutes(i))?;
        let first = match tz.from_local_datetime(&candidate) {
            LocalResult::Single(x) => x,
            LocalResult::Ambiguous(a, b) => a.min(b),
            LocalResult::None => continue,
        };
        // The gap may end between whole minutes (old local-mean-time offsets): walk back to the
        // exact end, at most a minute.
        let mut end = first.with_timezone(&Utc);
        for _ in 0..60 {
            let Some(earlier) = end.checked_sub_signed(ChronoDuration::seconds(1)) else {
                break;
            };
            if local_naive(tz, earlier).is_some_and(|l| l > local) {
                end = earlier;
            } else {
                break;
            }
        }
        return Some(end);
    }
    None
}

/// Rewrites an NCRONTAB day-of-week field (0-6 from Sunday, 7 also Sunday) into the `cron`
/// crate's numbering (1-7 from Sunday). Numeric items are expanded into explicit lists, which
/// sidesteps ranges such as `5-7` that have no contiguous equivalent; `*`, `?` and names mean the
/// same days in both dialects and pass through unchanged.
fn translate_day_of_week(field: &str) -> Result<String, String> {
    let mut out: Vec<String> = Vec::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        if base == "*" || base == "?" || base.chars().any(|c| c.is_ascii_alphabetic()) {
            out.push(item.to_string());
            continue;
        }
        let step = match step {
            None => 1,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|&s| s > 0)
                .ok_or_else(|| format!("day of week: `{item}` has an invalid step"))?,
        };
        let day = |s: &str| -> Result<u32, String> {
            s.parse::<u32>().ok().filter(|&d| d <= 7).ok_or_else(|| {
                format!("day of week: `{item}` is not a day 0-7 (Sunday is 0 or 7) or a name")
            })
        };
        let (lo, hi) = match base.split_once('-') {
            Some((a, b)) => (day(a)?, day(b)?),
            None if item.contains('/') => (day(base)?, 6),
            None => {
                let d = day(base)?;
                (d, d)
            }
        };
        if lo > hi {
            return Err(format!(
                "day of week: range `{item}` runs backwards (write e.g. `5-6,0` instead)"
            ));
        }
        for d in (lo..=hi).step_by(step) {
            let cron_day = (d % 7 + 1).to_string();
            if !out.contains(&cron_day) {
                out.push(cron_day);
            }
        }
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, Weekday};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test instant")
            .with_timezone(&Utc)
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("test date")
    }

    fn local(tz: Tz, t: DateTime<Utc>) -> String {
        t.with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;
    const NEW_YORK: Tz = chrono_tz::America::New_York;

    #[test]
    fn six_and_five_fields_parse_and_keep_the_text() {
        let six = Schedule::parse("0 0 6 * * *").unwrap();
        assert_eq!(six.expression(), "0 0 6 * * *");
        let five = Schedule::parse("30 6 * * *").unwrap();
        assert_eq!(five.cron_expression(), "0 30 6 * * *");
        let t = utc("2026-05-01T00:00:00Z");
        assert_eq!(
            five.next_after(chrono_tz::UTC, t),
            Some(utc("2026-05-01T06:30:00Z"))
        );
    }

    #[test]
    fn bad_expressions_are_rejected_with_a_reason() {
        for bad in [
            "",
            "* * * *",
            "0 0 0 6 * * * 2026",
            "0 61 * * * *",
            "0 0 25 * * *",
            "0 0 6 * * 8",
            "0 0 6 * * 3-1",
            "0 0 6 * * 1/0",
            "0 0 6 * * Funday",
            "0 0 6 31 Feb *",
            "@daily",
        ] {
            let err = Schedule::parse(bad).expect_err(bad);
            assert!(!err.to_string().is_empty(), "{bad}");
        }
        assert!(
            Schedule::parse("0 0 6 30 2 *")
                .unwrap_err()
                .to_string()
                .contains("never fires")
        );
    }

    #[test]
    fn junk_never_panics() {
        for junk in [
            "*/0 * * * * *",
            "0 0/0 * * * *",
            "0 0 0 0 * *",
            "0 0 0 * 0 *",
            "0 0 0 * 13 *",
            "0 5-1 * * * *",
            "0 0 0 * * Mon/0",
            "0 0 0 * * 1-",
            "0 0 0 * * -",
            "0 0 0 * * ,",
            "0 0 0 * * 1,,2",
            "0 0 0 * * 99999999999",
            "0 0 99999999999 * * *",
            "0 0 0 * * Mon-5",
            "0 0 0 L * *",
            "0 0 0 * * 5#3",
            "\u{0} \u{0} \u{0} \u{0} \u{0} \u{0}",
            "ä ö ü ß é ç",
        ] {
            let _ = Schedule::parse(junk);
        }
        // A step larger than the range is legal and simply yields one value.
        assert!(Schedule::parse("0 0 0 * * 0/9").is_ok());
    }

    #[test]
    fn day_of_week_follows_ncrontab_numbering() {
        // 1-5 is Monday to Friday in NCRONTAB (Sunday = 0), not Sunday to Thursday.
        let s = Schedule::parse("0 0 9 * * 1-5").unwrap();
        let tz = chrono_tz::UTC;
        let found = s.occurrences_between(
            tz,
            utc("2026-06-06T00:00:00Z"), // a Saturday
            utc("2026-06-14T00:00:00Z"),
        );
        let days: Vec<Weekday> = found.iter().map(|t| t.weekday()).collect();
        assert_eq!(
            days,
            [
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri
            ]
        );
        for (expr, want) in [
            ("0 0 9 * * 0", vec![Weekday::Sun]),
            ("0 0 9 * * 7", vec![Weekday::Sun]),
            (
                "0 0 9 * * 5-7",
                vec![Weekday::Sun, Weekday::Fri, Weekday::Sat],
            ),
            (
                "0 0 9 * * Mon-Fri",
                vec![
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                ],
            ),
            ("0 0 9 * * sat,SUN", vec![Weekday::Sun, Weekday::Sat]),
            (
                "0 0 9 * * */2",
                vec![Weekday::Sun, Weekday::Tue, Weekday::Thu, Weekday::Sat],
            ),
            (
                "0 0 9 * * 1-5/2",
                vec![Weekday::Mon, Weekday::Wed, Weekday::Fri],
            ),
            (
                "0 0 9 * * 1/2",
                vec![Weekday::Mon, Weekday::Wed, Weekday::Fri],
            ),
            ("0 0 9 * * 0,3", vec![Weekday::Sun, Weekday::Wed]),
        ] {
            let s = Schedule::parse(expr).unwrap();
            let mut got: Vec<Weekday> = s
                .occurrences_between(tz, utc("2026-06-06T23:00:00Z"), utc("2026-06-13T23:00:00Z"))
                .iter()
                .map(|t| t.weekday())
                .collect();
            // The window runs Sunday..Saturday, so order is by days from Sunday already.
            got.sort_by_key(|d| d.num_days_from_sunday());
            assert_eq!(got, want, "{expr}");
        }
    }

    #[test]
    fn month_names_ranges_steps_and_lists() {
        let s = Schedule::parse("0 15,45 8-10/2 1 Jan,Jul *").unwrap();
        let got = s.occurrences_between(
            chrono_tz::UTC,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-12-31T00:00:00Z"),
        );
        let want: Vec<DateTime<Utc>> = [
            "2026-01-01T08:15:00Z",
            "2026-01-01T08:45:00Z",
            "2026-01-01T10:15:00Z",
            "2026-01-01T10:45:00Z",
            "2026-07-01T08:15:00Z",
            "2026-07-01T08:45:00Z",
            "2026-07-01T10:15:00Z",
            "2026-07-01T10:45:00Z",
        ]
        .into_iter()
        .map(utc)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn day_and_weekday_must_both_match() {
        // NCRONTAB (and cron) require both: the 13th that is a Friday.
        let s = Schedule::parse("0 0 12 13 * 5").unwrap();
        let next = s
            .next_after(chrono_tz::UTC, utc("2026-01-01T00:00:00Z"))
            .unwrap();
        assert_eq!(next, utc("2026-02-13T12:00:00Z"));
        let after = s.next_after(chrono_tz::UTC, next).unwrap();
        assert_eq!(after, utc("2026-03-13T12:00:00Z"));
    }

    #[test]
    fn daily_schedule_fires_once_every_local_day_across_dst() {
        for (tz, days) in [
            (BERLIN, [date(2026, 3, 29), date(2026, 10, 25)]),
            (NEW_YORK, [date(2026, 3, 8), date(2026, 11, 1)]),
        ] {
            for hour in 0..24 {
                for minute in [0, 30] {
                    let s = Schedule::parse(&format!("0 {minute} {hour} * * *")).unwrap();
                    for day in days {
                        // Six local days, day-3 ..= day+2, as `(from, until]`.
                        let midnight = |d: NaiveDate| {
                            local_to_utc(tz, d.and_time(NaiveTime::MIN)).unwrap()
                                - ChronoDuration::nanoseconds(1)
                        };
                        let from = midnight(day - Days::new(3));
                        let until = midnight(day + Days::new(3));
                        let got = s.occurrences_between(tz, from, until);
                        let dates: Vec<NaiveDate> = got
                            .iter()
                            .map(|t| t.with_timezone(&tz).date_naive())
                            .collect();
                        let want: Vec<NaiveDate> =
                            (0..6).map(|i| day - Days::new(3) + Days::new(i)).collect();
                        assert_eq!(dates, want, "{tz} {hour}:{minute} around {day}");
                    }
                }
            }
        }
    }

    #[test]
    fn skipped_local_time_fires_at_the_end_of_the_gap() {
        let s = Schedule::parse("0 30 2 * * *").unwrap();
        // Berlin springs forward 2026-03-29 02:00 CET -> 03:00 CEST.
        let got = s.next_after(BERLIN, utc("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(local(BERLIN, got), "2026-03-29 03:00:00 CEST");
        assert_eq!(got, utc("2026-03-29T01:00:00Z"));
        let next = s.next_after(BERLIN, got).unwrap();
        assert_eq!(local(BERLIN, next), "2026-03-30 02:30:00 CEST");
        assert_eq!(s.previous_before(BERLIN, next), Some(got));

        // New York springs forward 2026-03-08 02:00 EST -> 03:00 EDT.
        let got = s.next_after(NEW_YORK, utc("2026-03-07T12:00:00Z")).unwrap();
        assert_eq!(local(NEW_YORK, got), "2026-03-08 03:00:00 EDT");
    }

    #[test]
    fn gap_times_and_the_gap_end_are_one_occurrence() {
        // 02:00, 02:30 and 03:00 on the spring-forward day all land on 03:00 CEST: fire once.
        let s = Schedule::parse("0 0,30 2,3 * * *").unwrap();
        let got = s.occurrences_between(
            BERLIN,
            utc("2026-03-28T23:00:00Z"),
            utc("2026-03-29T06:00:00Z"),
        );
        let shown: Vec<String> = got.iter().map(|t| local(BERLIN, *t)).collect();
        assert_eq!(
            shown,
            ["2026-03-29 03:00:00 CEST", "2026-03-29 03:30:00 CEST"]
        );
    }

    #[test]
    fn repeated_local_time_fires_once_at_the_first_instance() {
        let s = Schedule::parse("0 30 2 * * *").unwrap();
        // Berlin falls back 2026-10-25 03:00 CEST -> 02:00 CET.
        let got = s.occurrences_between(
            BERLIN,
            utc("2026-10-24T12:00:00Z"),
            utc("2026-10-26T12:00:00Z"),
        );
        let shown: Vec<String> = got.iter().map(|t| local(BERLIN, *t)).collect();
        assert_eq!(
            shown,
            ["2026-10-25 02:30:00 CEST", "2026-10-26 02:30:00 CET"]
        );
        // New York falls back 2026-11-01 02:00 EDT -> 01:00 EST.
        let s = Schedule::parse("0 30 1 * * *").unwrap();
        let got = s.occurrences_between(
            NEW_YORK,
            utc("2026-10-31T12:00:00Z"),
            utc("2026-11-02T12:00:00Z"),
        );
        let shown: Vec<String> = got.iter().map(|t| local(NEW_YORK, *t)).collect();
        assert_eq!(
            shown,
            ["2026-11-01 01:30:00 EDT", "2026-11-02 01:30:00 EST"]
        );
        // Asking from inside the repeated hour (after the first 01:30) finds the next day.
        let second_instance = utc("2026-11-01T06:30:00Z"); // 01:30 EST
        assert_eq!(
            s.next_after(NEW_YORK, second_instance - ChronoDuration::minutes(1)),
            Some(utc("2026-11-02T06:30:00Z"))
        );
    }

    #[test]
    fn hourly_schedule_across_dst_has_23_and_25_distinct_instants() {
        let s = Schedule::parse("0 0 * * * *").unwrap();
        let day = |d: NaiveDate| {
            let from = local_to_utc(BERLIN, d.and_time(NaiveTime::MIN)).unwrap();
            let until = local_to_utc(BERLIN, (d + Days::new(1)).and_time(NaiveTime::MIN)).unwrap();
            // [from, until): shift by a nanosecond to make `after < t <= until` half-open.
            s.occurrences_between(
                BERLIN,
                from - ChronoDuration::nanoseconds(1),
                until - ChronoDuration::nanoseconds(1),
            )
        };
        assert_eq!(day(date(2026, 3, 29)).len(), 23);
        // The repeated hour fires once only: 24 local hours, 24 instants, on a 25-hour day.
        assert_eq!(day(date(2026, 10, 25)).len(), 24);
        assert_eq!(day(date(2026, 6, 1)).len(), 24);
    }

    #[test]
    fn previous_before_is_strict_and_mirrors_next_after() {
        let s = Schedule::parse("0 0 6 * * *").unwrap();
        let six = utc("2026-06-10T04:00:00Z"); // 06:00 CEST
        assert_eq!(
            s.previous_before(BERLIN, six),
            Some(utc("2026-06-09T04:00:00Z"))
        );
        assert_eq!(
            s.previous_before(BERLIN, six + ChronoDuration::seconds(1)),
            Some(six)
        );
        assert_eq!(s.next_after(BERLIN, six), Some(utc("2026-06-11T04:00:00Z")));
        assert_eq!(
            s.next_after(BERLIN, six - ChronoDuration::seconds(1)),
            Some(six)
        );
        // A rare schedule is still found: 29 February on a Sunday (2032).
        let rare = Schedule::parse("0 0 0 29 Feb Sun").unwrap();
        let next = rare
            .next_after(BERLIN, utc("2026-01-01T00:00:00Z"))
            .unwrap();
        assert_eq!(next.with_timezone(&BERLIN).date_naive(), date(2032, 2, 29));
        assert_eq!(
            rare.previous_before(BERLIN, next + ChronoDuration::days(1)),
            Some(next)
        );
    }

    #[test]
    fn occurrences_between_is_half_open_and_capped() {
        let s = Schedule::parse("0 0 6 * * *").unwrap();
        let a = utc("2026-06-09T04:00:00Z");
        let b = utc("2026-06-11T04:00:00Z");
        assert_eq!(
            s.occurrences_between(BERLIN, a, b),
            vec![utc("2026-06-10T04:00:00Z"), b]
        );
        let every_second = Schedule::parse("* * * * * *").unwrap();
        let many = every_second.occurrences_between(
            chrono_tz::UTC,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-02-01T00:00:00Z"),
        );
        assert_eq!(many.len(), MAX_OCCURRENCES);
        assert!(many.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn first_on_local_date_uses_the_local_calendar() {
        let s = Schedule::parse("0 0 1,23 * * *").unwrap();
        // 01:00 New York on 2026-11-01 is ambiguous: the first instance (EDT).
        let got = s.first_on_local_date(NEW_YORK, date(2026, 11, 1)).unwrap();
        assert_eq!(local(NEW_YORK, got), "2026-11-01 01:00:00 EDT");
        let weekdays = Schedule::parse("0 0 6 * * 1-5").unwrap();
        assert_eq!(
            weekdays.first_on_local_date(BERLIN, date(2026, 6, 13)),
            None
        ); // Saturday
        assert_eq!(
            weekdays.first_on_local_date(BERLIN, date(2026, 6, 15)),
            Some(utc("2026-06-15T04:00:00Z"))
        );
    }

    #[test]
    fn local_midnight_in_a_gap_maps_to_the_gap_end() {
        // America/Santiago springs forward at 24:00 on 2026-09-05 (00:00 -> 01:00).
        let tz: Tz = "America/Santiago".parse().unwrap();
        let d = date(2026, 9, 6);
        let midnight = NaiveDateTime::new(d, NaiveTime::MIN);
        assert!(matches!(
            tz.from_local_datetime(&midnight),
            LocalResult::None
        ));
        let start = local_to_utc(tz, midnight).unwrap();
        assert_eq!(local(tz, start), "2026-09-06 01:00:00 -03");
    }

    /// Found by `fuzz/fuzz_targets/ncrontab.rs` / `forwarded_query.rs`: evaluating a schedule
    /// within a day of chrono's range limits panicked in `naive_local` or in `DateTime -
    /// TimeDelta`; it must answer `None` (or an occurrence) instead.
    #[test]
    fn evaluation_at_the_edge_of_time_does_not_panic() {
        let zones = [
            Tz::UTC,
            BERLIN,
            NEW_YORK,
            chrono_tz::Pacific::Apia,
            chrono_tz::Pacific::Kiritimati,
        ];
        let s = Schedule::parse("0 30 2 * * *").unwrap();
        let every = Schedule::parse("* * * * * *").unwrap();
        for tz in zones {
            for t in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
                for s in [&s, &every] {
                    if let Some(n) = s.next_after(tz, t) {
                        assert!(n > t);
                    }
                    if let Some(p) = s.previous_before(tz, t) {
                        assert!(p < t);
                    }
                    let _ = s.occurrences_between(tz, t, t);
                }
            }
            for d in [NaiveDate::MIN, NaiveDate::MAX] {
                let _ = s.first_on_local_date(tz, d);
                let _ = every.first_on_local_date(tz, d);
                let _ = local_to_utc(tz, d.and_time(NaiveTime::MIN));
            }
        }
    }
}
