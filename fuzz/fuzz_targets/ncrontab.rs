//! NCRONTAB schedules: arbitrary expression text must parse or give an error; a schedule that
//! parses must evaluate (next, previous, between, by local date) in any zone, at any instant a
//! caller can reach, without panicking or overflowing, and its answers must be consistent.
//!
//! Input layout: byte 0 picks the zone, bytes 1..9 the instant (seconds, clamped to years
//! 1..=9999 or, when the high bit of byte 0 is set, left unclamped to reach chrono's limits),
//! the rest is the expression.
#![no_main]

use chrono::{DateTime, Datelike, Duration, Utc};
use chrono_tz::Tz;
use libfuzzer_sys::fuzz_target;
use report_handler::report::Schedule;
use report_handler::report::schedule::MAX_OCCURRENCES;

/// Zones with awkward rules: DST at midnight, half-hour DST, 30/45-minute offsets, a skipped
/// day (Apia 2011-12-30), southern-hemisphere DST, no DST.
const ZONES: [Tz; 12] = [
    Tz::UTC,
    Tz::Europe__Berlin,
    Tz::America__New_York,
    Tz::Australia__Lord_Howe,
    Tz::Pacific__Apia,
    Tz::Asia__Kathmandu,
    Tz::America__Santiago,
    Tz::America__Havana,
    Tz::Asia__Tehran,
    Tz::Pacific__Chatham,
    Tz::Africa__Casablanca,
    Tz::America__St_Johns,
];

/// 0001-01-01 and 9999-12-31 as Unix seconds.
const MIN_SECS: i64 = -62_135_596_800;
const MAX_SECS: i64 = 253_402_300_799;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let tz = ZONES[usize::from(data[0] & 0x7f) % ZONES.len()];
    let raw = i64::from_le_bytes(data[1..9].try_into().expect("8 bytes"));
    let secs = if data[0] & 0x80 != 0 {
        raw
    } else {
        MIN_SECS + raw.rem_euclid(MAX_SECS - MIN_SECS)
    };
    let Ok(expr) = std::str::from_utf8(&data[9..]) else {
        return;
    };
    let Ok(schedule) = Schedule::parse(expr) else {
        return;
    };
    let _ = schedule.cron_expression();
    let Some(t) = DateTime::<Utc>::from_timestamp(secs, 0) else {
        return;
    };
    let next = schedule.next_after(tz, t);
    if let Some(n) = next {
        assert!(n > t, "{expr:?} next_after({t}) = {n}");
    }
    let prev = schedule.previous_before(tz, t);
    if let Some(p) = prev {
        assert!(p < t, "{expr:?} previous_before({t}) = {p}");
        // Nothing fires strictly between the previous occurrence and `t`.
        if let Some(after_prev) = schedule.next_after(tz, p) {
            assert!(after_prev >= t, "{expr:?}: {p} < {after_prev} < {t}");
        }
    }
    if let Some(until) = t.checked_add_signed(Duration::days(2)) {
        let occ = schedule.occurrences_between(tz, t, until);
        assert!(occ.len() <= MAX_OCCURRENCES);
        assert!(
            occ.windows(2).all(|w| w[0] < w[1]),
            "{expr:?} not increasing"
        );
        assert!(occ.iter().all(|&o| o > t && o <= until));
        if let (Some(first), Some(n)) = (occ.first(), next) {
            assert_eq!(*first, n, "{expr:?}");
        }
    }
    let local = t.with_timezone(&tz).date_naive();
    for d in [Some(local), local.succ_opt(), local.pred_opt()]
        .into_iter()
        .flatten()
    {
        if let Some(o) = schedule.first_on_local_date(tz, d) {
            assert_eq!(o.with_timezone(&tz).date_naive(), d, "{expr:?}");
            assert!(o.year() == d.year() || o.year().abs_diff(d.year()) == 1);
        }
    }
});
