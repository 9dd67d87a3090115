//! `reports.toml` loading: arbitrary text must load or give located problems, never panic; for a
//! file that loads, every report's windows (latest, by date, per occurrence) must be computable
//! around a few instants, including the extremes of what a date in the API can name.
#![no_main]

use chrono::{DateTime, NaiveDate, Utc};
use libfuzzer_sys::fuzz_target;
use report_handler::report::{ReportSet, Window, WindowKind};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let set = match ReportSet::parse(text, "reports.toml") {
        Ok(set) => set,
        Err(e) => {
            assert!(!e.problems.is_empty());
            for p in &e.problems {
                assert!(p.line <= text.lines().count().max(1) + 1, "{p}");
            }
            return;
        }
    };
    let instants = [
        1_774_000_000i64, // 2026-03-20
        1_792_800_000,    // 2026-10-24, the eve of the EU fall-back
        946_684_800,      // 2000-01-01
    ];
    let dates = [
        NaiveDate::from_ymd_opt(2026, 3, 29),
        NaiveDate::from_ymd_opt(2026, 10, 25),
        NaiveDate::from_ymd_opt(2024, 2, 29),
        NaiveDate::from_ymd_opt(1, 1, 1),
        NaiveDate::from_ymd_opt(9999, 12, 31),
    ];
    for report in &set.reports {
        assert!(set.get(&report.name).is_some());
        for &secs in &instants {
            let Some(now) = DateTime::<Utc>::from_timestamp(secs, 0) else {
                continue;
            };
            if let Some(w) = Window::latest_completed(&report.timing(), now) {
                assert!(w.start <= w.end, "{} {w:?}", report.name);
                let _ = report.render_subject(&w);
            }
            let day_end = now + chrono::Duration::days(1);
            for occ in report
                .schedule
                .occurrences_between(report.time_zone, now, day_end)
                .into_iter()
                .take(50)
            {
                let w = Window::for_occurrence(&report.timing(), occ);
                assert!(w.start <= w.end, "{} {w:?}", report.name);
                if report.window != WindowKind::PreviousDay {
                    assert_eq!(w.end, occ, "{}", report.name);
                }
            }
        }
        for d in dates.into_iter().flatten() {
            if let Some(w) = Window::for_local_date(&report.timing(), d) {
                assert!(w.start <= w.end, "{} {w:?}", report.name);
                let _ = report.render_subject(&w);
            }
        }
    }
});
