//! The API's query-string and header parsing: a query string as forwarding mode receives it
//! (`parse_query`), plus an `Accept` header, go through the same `ApiRequest` the handler builds,
//! then `window_query` / `format` / `list_format`; a parsed date or range is resolved against a
//! real report the way the API does. Everything must be a value or a 400/406 problem.
#![no_main]

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, Method};
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use report_handler::api::ApiRequest;
use report_handler::api::params::{self, Bound, WindowQuery};
use report_handler::functions::parse_query;
use report_handler::report::{ReportSet, Window, schedule::local_to_utc};

/// The sample reports.toml's reports plus one of every window kind, so each resolution path of
/// the API is exercised.
fn reports() -> &'static ReportSet {
    static SET: OnceLock<ReportSet> = OnceLock::new();
    SET.get_or_init(|| {
        let mut text = include_str!("../../reports.toml").to_string();
        for (i, (schedule, tz, window)) in [
            ("0 30 2 * * *", "Europe/Berlin", "since_previous_occurrence"),
            ("0 0 6 * * 1-5", "America/New_York", "7d"),
            ("0 15 * * * *", "Australia/Lord_Howe", "24h"),
            ("0 0 0 29 2 *", "Pacific/Apia", "previous_day"),
            ("0 0 * * * *", "UTC", "2h"),
            ("0 0 8 * * *", "UTC", "since_previous_occurrence"),
        ]
        .into_iter()
        .enumerate()
        {
            text.push_str(&format!(
                "\n[[reports]]\nname = \"extra-{i}\"\ntitle = \"Extra\"\nschedule = \"{schedule}\"\n\
                 time_zone = \"{tz}\"\nwindow = \"{window}\"\nrecipients = [\"a@example.com\"]\n\
                 [[reports.sections]]\ntitle = \"t\"\nquery = \"SELECT 1\"\n"
            ));
        }
        ReportSet::parse(&text, "reports.toml").expect("the seed reports file is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    // First line: the Accept header (may be absent); the rest: the query string.
    let (accept, query) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let mut headers = HeaderMap::new();
    if let Some(a) = accept.and_then(|a| HeaderValue::from_bytes(a).ok()) {
        headers.insert("accept", a);
    }
    let req = ApiRequest {
        method: Method::GET,
        path: "/api/reports/daily-sales".into(),
        query: parse_query(query),
        headers,
        route_name: None,
    };
    if let Ok(params::Format::Csv { section }) = params::format(&req) {
        assert!(section >= 1);
    }
    let _ = params::list_format(&req);
    let Ok(wq) = params::window_query(&req) else {
        return;
    };
    let now = DateTime::<Utc>::from_timestamp(1_774_000_000, 0).expect("a valid instant");
    for report in &reports().reports {
        let tz = report.time_zone;
        match wq {
            WindowQuery::Latest => {
                let _ = Window::latest_completed(&report.timing(), now);
            }
            WindowQuery::Date(d) => {
                if let Some(w) = Window::for_local_date(&report.timing(), d) {
                    assert!(w.start <= w.end, "{w:?}");
                    let _ = report.render_subject(&w);
                }
            }
            WindowQuery::Range { from, to } => {
                let start = match from {
                    Bound::Instant(t) => Some(t),
                    Bound::Date(d) => local_to_utc(tz, d.and_time(chrono::NaiveTime::MIN)),
                };
                let end = match to {
                    Bound::Instant(t) => Some(t),
                    Bound::Date(d) => d
                        .succ_opt()
                        .and_then(|n| local_to_utc(tz, n.and_time(chrono::NaiveTime::MIN))),
                };
                if let (Some(s), Some(e)) = (start, end) {
                    let w = Window::explicit(&report.timing(), s, e);
                    let _ = w.duration();
                    let _ = report.render_subject(&w);
                }
            }
        }
    }
});
