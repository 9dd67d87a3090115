//! The delivery history over the API: `GET /api/deliveries` and
//! `GET /api/reports/{name}/deliveries`, the ledger's rows newest first, so an operator or a
//! client can see what was sent, to whom, and why something was not.
//!
//! Served like the rest of the API (both host modes, problem+json errors, an ETag). A row
//! shows its report, occurrence (UTC and the report's local time), target (the recipient or
//! destination setting; never a URL), state, attempts, the Message-ID and, for failures and
//! skips, a class and a short text scrubbed of host names, addresses of servers and URLs (a
//! relay's reply can name its hosts). Pages are keyset-paged: `next` is an opaque cursor that
//! stays right while rows are added.

use axum::http::StatusCode;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::params::{Bound, parse_bound};
use super::{ApiRequest, ApiResponse, Problem, sanitize};
use crate::delivery::Delivery;
use crate::delivery::ledger::{DeliveryRow, DeliveryState, HistoryCursor, HistoryQuery, Target};
use crate::report::ReportSet;

/// The default page size.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest page a client may ask for.
pub const MAX_LIMIT: usize = 500;
/// The longest error text shown per row; the ledger and the log keep the whole text.
const MAX_ERROR_CHARS: usize = 160;

/// Which rows a request lists: every report the key may see, or one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope<'a> {
    /// `GET /api/deliveries`: these reports (`None`: all), optionally narrowed by `?report=`.
    Reports(Option<&'a [String]>),
    /// `GET /api/reports/{name}/deliveries`.
    One(&'a str),
}

/// One row as the API shows it.
#[derive(Debug, Serialize)]
struct Item {
    report: String,
    occurrence: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurrence_local: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_zone: Option<String>,
    /// `null` for the occurrence's own row; else `email:…`, `teams:SETTING`, ….
    target: Option<String>,
    /// `email`, `teams`, `slack`, `webhook`, or `occurrence` for the occurrence's own row.
    kind: String,
    /// `sent`, `failed`, `skipped` or `claimed`.
    state: &'static str,
    origin: String,
    attempts: u32,
    /// Recipients the relay accepted (targets delivered, on a fanned-out occurrence's row).
    recipients: u32,
    /// How many recipients (or targets) were refused for good.
    refused: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    claimed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct ErrorItem {
    /// `transient` (retried on a later tick), `permanent`, or `skipped` (the reason).
    class: &'static str,
    text: String,
}

#[derive(Debug, Serialize)]
struct Page {
    deliveries: Vec<Item>,
    /// The cursor of the next page (`?cursor=`), absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Answers one history request; `scope` says which reports the key may see (already
/// checked to include a named report).
pub async fn history(
    delivery: &Delivery,
    req: &ApiRequest,
    reports: &ReportSet,
    scope: Scope<'_>,
) -> ApiResponse {
    let query = match parse(req, reports, &scope) {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    let ledger = match delivery.ledger().await {
        Ok(l) => l,
        Err(e) => return unavailable(&e),
    };
    // One more than asked says whether there is a next page.
    let limit = query.limit;
    let mut rows = match ledger
        .history(&HistoryQuery {
            limit: limit + 1,
            ..query
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let next = (rows.len() > limit).then(|| {
        rows.truncate(limit);
        rows.last().map(|r| encode_cursor(&HistoryCursor::after(r)))
    });
    let page = Page {
        deliveries: rows.iter().map(|r| item(r, reports)).collect(),
        next: next.flatten(),
    };
    let resp = ApiResponse::json(StatusCode::OK, &page);
    let etag = super::cache::etag_of(&resp.body);
    super::with_etag(req, resp, &etag, "no-cache")
}

fn unavailable(e: &anyhow::Error) -> ApiResponse {
    tracing::warn!(error.message = %format!("{e:#}"), "the delivery ledger is unavailable for the history API");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ledger-unavailable",
        "Delivery ledger unavailable",
        "the delivery ledger cannot be read right now; try again shortly",
    )
    .retry_after(30)
    .into_response()
}

/// Reads `report`, `from`, `to`, `state`, `limit` and `cursor`. Dates (`YYYY-MM-DD`) are the
/// named report's local dates (`to` inclusive), or UTC dates when the listing spans reports.
fn parse(
    req: &ApiRequest,
    reports: &ReportSet,
    scope: &Scope<'_>,
) -> Result<HistoryQuery, Problem> {
    let bad = Problem::bad_parameter;
    let named = match scope {
        Scope::One(name) => Some((*name).to_string()),
        Scope::Reports(_) => req.query_value("report").map(|r| r.trim().to_string()),
    };
    let allowed = match scope {
        Scope::Reports(Some(list)) => Some(list.to_vec()),
        _ => None,
    };
    let reports_filter = match (&named, allowed) {
        (Some(n), Some(list)) => Some(if list.contains(n) {
            vec![n.clone()]
        } else {
            vec![]
        }),
        (Some(n), None) => Some(vec![n.clone()]),
        (None, list) => list,
    };
    let tz = named
        .as_deref()
        .and_then(|n| reports.get(n))
        .map_or(chrono_tz::UTC, |r| r.time_zone);
    let instant = |param: &str, end: bool| -> Result<Option<DateTime<Utc>>, Problem> {
        let Some(v) = req.query_value(param) else {
            return Ok(None);
        };
        Ok(Some(match parse_bound(param, v)? {
            Bound::Instant(t) => t,
            Bound::Date(d) => {
                let d = if end { d.succ_opt().unwrap_or(d) } else { d };
                d.and_hms_opt(0, 0, 0)
                    .and_then(|t| crate::report::schedule::local_to_utc(tz, t))
                    .ok_or_else(|| bad(format!("{param}: the date is out of range")))?
            }
        }))
    };
    let from = instant("from", false)?;
    let to = instant("to", true)?;
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(bad("from: must be before `to`".to_string()));
    }
    let state = match req.query_value("state") {
        None => None,
        Some(s) => Some(s.trim().parse::<DeliveryState>().map_err(|_| {
            bad(format!(
                "state: expected sent, failed, skipped or claimed, not `{}`",
                sanitize(s)
            ))
        })?),
    };
    let limit = match req.query_value("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "limit: expected a number from 1 to {MAX_LIMIT}"
                )));
            }
        },
    };
    let after = match req.query_value("cursor") {
        None => None,
        Some(c) => Some(decode_cursor(c.trim()).ok_or_else(|| {
            bad(
                "cursor: not a cursor this API returned (use `next` of the previous page)"
                    .to_string(),
            )
        })?),
    };
    Ok(HistoryQuery {
        reports: reports_filter,
        from,
        to,
        state,
        after,
        limit,
    })
}

/// The cursor as URL-safe text: base64 of `micros\nreport\ntarget`.
fn encode_cursor(c: &HistoryCursor) -> String {
    let text = format!(
        "{}\n{}\n{}",
        c.occurrence.timestamp_micros(),
        c.report,
        c.target
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn decode_cursor(s: &str) -> Option<HistoryCursor> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, '\n');
    let micros: i64 = parts.next()?.parse().ok()?;
    let report = parts.next()?.to_string();
    let target = Target::parse(parts.next()?).ok()?;
    Some(HistoryCursor {
        occurrence: DateTime::from_timestamp_micros(micros)?,
        report,
        target,
    })
}

fn item(r: &DeliveryRow, reports: &ReportSet) -> Item {
    let tz = reports.get(&r.report).map(|rep| rep.time_zone);
    let error = r.last_error.as_deref().map(|text| ErrorItem {
        class: match r.state {
            DeliveryState::Skipped => "skipped",
            DeliveryState::Failed if r.retryable => "transient",
            DeliveryState::Failed => "permanent",
            // A sent row notes refused recipients; a claimed one keeps the last failure.
            DeliveryState::Sent => "permanent",
            DeliveryState::Claimed => "transient",
        },
        text: scrub(text),
    });
    Item {
        report: r.report.clone(),
        occurrence: r.occurrence,
        occurrence_local: tz.map(|tz| r.occurrence.with_timezone(&tz).to_rfc3339()),
        time_zone: tz.map(|tz| tz.name().to_string()),
        target: (!r.target.is_occurrence()).then(|| r.target.to_string()),
        kind: if r.target.is_occurrence() {
            "occurrence".into()
        } else {
            r.target.kind().to_string()
        },
        state: r.state.as_str(),
        origin: r.origin.to_string(),
        attempts: r.attempts,
        recipients: r.recipients,
        refused: r.rejected.len(),
        error,
        message_id: r.message_id.clone().filter(|m| !m.is_empty()),
        claimed_at: r.claimed_at,
        updated_at: r.updated_at,
    }
}

/// A failure text fit for an API client: the first line, at most [`MAX_ERROR_CHARS`]
/// characters, with URLs, IP addresses and host names (a relay's banner, a database host)
/// replaced by `[host]`. E-mail addresses stay: the history shows recipients anyway.
pub fn scrub(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut out = Vec::new();
    for word in line.split(' ') {
        out.push(scrub_word(word));
    }
    let joined = out.join(" ");
    let mut short: String = joined.chars().take(MAX_ERROR_CHARS).collect();
    if short.len() < joined.len() {
        short.push('…');
    }
    short
}

fn scrub_word(word: &str) -> String {
    let core = word
        .trim_matches(|c: char| "()<>[]{},;\"'".contains(c))
        .trim_end_matches([':', '.']);
    if core.is_empty() || core.contains('@') {
        return word.to_string();
    }
    let lower = core.to_ascii_lowercase();
    let url = lower.contains("://");
    // host.name, host.name:port, 10.0.0.1, 10.0.0.1:25, [::1]:25
    let host_part = lower.rsplit_once(':').map_or(lower.as_str(), |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() {
            h
        } else {
            lower.as_str()
        }
    });
    let labels: Vec<&str> = host_part.split('.').collect();
    let hostlike = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        // "5.1.1" and "1.5" are SMTP status codes and numbers, not hosts (an IPv4 has 4 parts).
        && (labels.iter().any(|l| l.chars().any(|c| c.is_ascii_alphabetic())) || labels.len() == 4);
    let port_only = lower.starts_with(':') && lower[1..].chars().all(|c| c.is_ascii_digit());
    if url || hostlike || port_only || lower.contains("::") {
        word.replace(core, "[host]")
    } else {
        word.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_urls_and_ips_are_scrubbed_but_codes_and_addresses_stay() {
        assert_eq!(
            scrub(
                "RCPT TO: permanent error (550): 5.1.1 <bob@example.com>: no such user at mx1.corp.example.com"
            ),
            "RCPT TO: permanent error (550): 5.1.1 <bob@example.com>: no such user at [host]"
        );
        assert_eq!(
            scrub("cannot connect to smtp.example.net:587: Connection refused"),
            "cannot connect to [host]: Connection refused"
        );
        assert_eq!(
            scrub("error sending request for url (https://hooks.example.com/x?sig=abc)"),
            "error sending request for url ([host])"
        );
        assert_eq!(
            scrub("connect 10.1.2.3:5432 refused"),
            "connect [host] refused"
        );
        assert_eq!(
            scrub("timed out after 1.5 s\nsecond line"),
            "timed out after 1.5 s"
        );
        let long = scrub(&"x ".repeat(200));
        assert!(long.chars().count() <= MAX_ERROR_CHARS + 1 && long.ends_with('…'));
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = HistoryCursor {
            occurrence: DateTime::from_timestamp_micros(1_764_050_400_123_456).unwrap(),
            report: "daily-sales".into(),
            target: Target::new("email", "ann@example.com").unwrap(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&c)), Some(c));
        assert_eq!(decode_cursor("not a cursor!"), None);
        assert_eq!(decode_cursor(""), None);
        let no_target = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("1\nx");
        assert_eq!(decode_cursor(&no_target), None);
    }
}
