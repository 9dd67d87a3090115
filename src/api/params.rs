//! Query-string and `Accept` parsing for the report endpoint. Every rejection is a 400/406
//! problem that names the parameter; nothing here panics on input.

use chrono::{DateTime, NaiveDate, Utc};

use super::{ApiRequest, Problem};
use axum::http::StatusCode;

/// One end of an explicit range: a local calendar date or an exact instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// A date in the report's time zone; as `from` it means the start of that day, as `to` the
    /// end of it (inclusive), so `from=2026-01-01&to=2026-01-31` is all of January.
    Date(NaiveDate),
    /// An RFC 3339 instant; as `to` it is exclusive.
    Instant(DateTime<Utc>),
}

/// Which window the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowQuery {
    /// No parameters: the most recent completed window.
    Latest,
    /// `?date=YYYY-MM-DD`: the report for that local date.
    Date(NaiveDate),
    /// `?from=…&to=…`.
    Range {
        /// Inclusive start.
        from: Bound,
        /// End (see [`Bound`]).
        to: Bound,
    },
}

/// The representation the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The report as JSON (default).
    Json,
    /// One section as CSV (1-based index).
    Csv {
        /// 1-based section number.
        section: usize,
    },
    /// The email's HTML, as a preview (charts as `data:` URIs).
    Html,
    /// The report as one workbook, one sheet per section.
    Xlsx,
    /// One section's chart as a PNG (1-based index).
    Png {
        /// 1-based section number.
        section: usize,
    },
}

/// The media type of a workbook.
const XLSX_MEDIA: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

fn bad(param: &str, detail: impl Into<String>) -> Problem {
    Problem::bad_parameter(format!("{param}: {}", detail.into()))
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(param: &str, v: &str) -> Result<NaiveDate, Problem> {
    use chrono::Datelike as _;
    let d = NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d")
        .map_err(|_| bad(param, "expected a date as YYYY-MM-DD"))?;
    if !(1..=9999).contains(&d.year()) {
        return Err(bad(param, "the year must be between 1 and 9999"));
    }
    Ok(d)
}

/// A `from` or `to` value: a date (`YYYY-MM-DD`) or an RFC 3339 instant; the error names
/// `param`. Shared by report windows and the delivery history.
pub fn parse_bound(param: &str, v: &str) -> Result<Bound, Problem> {
    let v = v.trim();
    if v.len() == 10 {
        return parse_date(param, v).map(Bound::Date);
    }
    DateTime::parse_from_rfc3339(v)
        .map(|d| Bound::Instant(d.with_timezone(&Utc)))
        .map_err(|_| {
            bad(
                param,
                "expected a date (YYYY-MM-DD) or an RFC 3339 instant (2026-01-02T03:04:05Z)",
            )
        })
}

/// Reads `date`, `from` and `to`.
pub fn window_query(req: &ApiRequest) -> Result<WindowQuery, Problem> {
    let date = req.query_value("date");
    let from = req.query_value("from");
    let to = req.query_value("to");
    match (date, from, to) {
        (None, None, None) => Ok(WindowQuery::Latest),
        (Some(d), None, None) => parse_date("date", d).map(WindowQuery::Date),
        (Some(_), _, _) => Err(bad("date", "use either `date` or `from`/`to`, not both")),
        (None, Some(f), Some(t)) => Ok(WindowQuery::Range {
            from: parse_bound("from", f)?,
            to: parse_bound("to", t)?,
        }),
        (None, Some(_), None) => Err(bad("to", "is required with `from`")),
        (None, None, Some(_)) => Err(bad("from", "is required with `to`")),
    }
}

/// Media types in an `Accept` header, best first (q = 0 dropped).
fn accepted(accept: &str) -> Vec<String> {
    let mut items: Vec<(f32, usize, String)> = accept
        .split(',')
        .enumerate()
        .filter_map(|(i, part)| {
            let mut pieces = part.split(';');
            let media = pieces.next()?.trim().to_ascii_lowercase();
            if media.is_empty() {
                return None;
            }
            let mut q = 1.0f32;
            for p in pieces {
                if let Some(v) = p.trim().strip_prefix("q=") {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            (q > 0.0).then_some((q, i, media))
        })
        .collect();
    items.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    items.into_iter().map(|(_, _, m)| m).collect()
}

fn not_acceptable(offer: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_ACCEPTABLE,
        "not-acceptable",
        "Not acceptable",
        format!("this resource is available as {offer}"),
    )
}

/// Reads `format`, `section` and `Accept` for a report. `format` wins over `Accept`.
pub fn format(req: &ApiRequest) -> Result<Format, Problem> {
    let section = match req.query_value("section") {
        None => 1,
        Some(s) => match s.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(bad("section", "expected a section number starting at 1")),
        },
    };
    if let Some(f) = req.query_value("format") {
        return match f.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv { section }),
            "html" => Ok(Format::Html),
            "xlsx" => Ok(Format::Xlsx),
            "png" => Ok(Format::Png { section }),
            _ => Err(bad("format", "expected json, csv, html, xlsx or png")),
        };
    }
    let Some(accept) = req.headers.get("accept").and_then(|v| v.to_str().ok()) else {
        return Ok(Format::Json);
    };
    for media in accepted(accept) {
        match media.as_str() {
            "application/json" | "application/*" | "*/*" | "application/problem+json" => {
                return Ok(Format::Json);
            }
            "text/csv" | "text/*" => return Ok(Format::Csv { section }),
            "text/html" => return Ok(Format::Html),
            XLSX_MEDIA => return Ok(Format::Xlsx),
            "image/png" => return Ok(Format::Png { section }),
            _ => {}
        }
    }
    Err(not_acceptable(
        "application/json, text/csv (?format=csv), text/html (?format=html), \
         the XLSX workbook (?format=xlsx) or image/png (?format=png&section=N)",
    ))
}

/// The list endpoint is JSON only.
pub fn list_format(req: &ApiRequest) -> Result<(), Problem> {
    let Some(accept) = req.headers.get("accept").and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    if accepted(accept).iter().any(|m| {
        matches!(
            m.as_str(),
            "application/json" | "application/*" | "*/*" | "application/problem+json"
        )
    }) {
        Ok(())
    } else {
        Err(not_acceptable("application/json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, Method};

    fn req(query: &[(&str, &str)], accept: Option<&'static str>) -> ApiRequest {
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert("accept", HeaderValue::from_static(a));
        }
        ApiRequest {
            method: Method::GET,
            path: "/api/reports/x".into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers,
            route_name: None,
        }
    }

    #[test]
    fn windows() {
        assert_eq!(window_query(&req(&[], None)).unwrap(), WindowQuery::Latest);
        assert_eq!(
            window_query(&req(&[("date", "2026-03-29")], None)).unwrap(),
            WindowQuery::Date(NaiveDate::from_ymd_opt(2026, 3, 29).unwrap())
        );
        assert!(matches!(
            window_query(&req(
                &[("from", "2026-03-01"), ("to", "2026-03-02T10:00:00+01:00")],
                None
            ))
            .unwrap(),
            WindowQuery::Range {
                from: Bound::Date(_),
                to: Bound::Instant(_)
            }
        ));
        for bad in [
            vec![("date", "-262143-01-05")],
            vec![("date", "+10000-01-01")],
            vec![("date", "2026-02-30")],
            vec![("date", "yesterday")],
            vec![("date", "2026-01-01"), ("from", "2026-01-01")],
            vec![("from", "2026-01-01")],
            vec![("to", "2026-01-01")],
            vec![("from", "2026-01-01"), ("to", "soon")],
        ] {
            let p = window_query(&req(&bad, None)).unwrap_err();
            assert_eq!(p.status, 400, "{bad:?}");
        }
    }

    #[test]
    fn formats_and_negotiation() {
        assert_eq!(format(&req(&[], None)).unwrap(), Format::Json);
        assert_eq!(
            format(&req(&[("format", "csv"), ("section", "2")], None)).unwrap(),
            Format::Csv { section: 2 }
        );
        assert_eq!(
            format(&req(&[], Some("text/csv"))).unwrap(),
            Format::Csv { section: 1 }
        );
        assert_eq!(
            format(&req(&[], Some("text/html;q=0.9, application/json"))).unwrap(),
            Format::Json
        );
        assert_eq!(format(&req(&[], Some("text/html"))).unwrap(), Format::Html);
        assert_eq!(
            format(&req(&[("format", "xlsx")], None)).unwrap(),
            Format::Xlsx
        );
        assert_eq!(
            format(&req(&[("format", "png"), ("section", "2")], None)).unwrap(),
            Format::Png { section: 2 }
        );
        assert_eq!(format(&req(&[], Some(XLSX_MEDIA))).unwrap(), Format::Xlsx);
        assert_eq!(format(&req(&[], Some("*/*"))).unwrap(), Format::Json);
        assert_eq!(
            format(&req(&[], Some("application/xml")))
                .unwrap_err()
                .status,
            406
        );
        assert_eq!(
            format(&req(&[], Some("application/json;q=0")))
                .unwrap_err()
                .status,
            406
        );
        assert_eq!(
            format(&req(&[("format", "xml")], None)).unwrap_err().status,
            400
        );
        assert_eq!(
            format(&req(&[("section", "0")], None)).unwrap_err().status,
            400
        );
        assert!(list_format(&req(&[], Some("text/csv"))).is_err());
        assert!(list_format(&req(&[], Some("application/json"))).is_ok());
    }
}
