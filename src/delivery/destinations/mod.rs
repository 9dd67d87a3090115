//! Destinations besides email (issue 16): a report posted to a Microsoft Teams channel (an
//! Adaptive Card through a Teams Workflows webhook), to Slack (Block Kit through an incoming
//! webhook) or to any HTTPS endpoint (the report API's JSON, optionally signed).
//!
//! Each destination of an occurrence is one fan-out target of
//! [`occurrence`](super::occurrence) (`teams:TEAMS_WEBHOOK_SALES`), so it gets its own ledger
//! row: delivered exactly once, never blocked or repeated by another target. This module only
//! builds and posts one destination's payload and says how it went:
//! - [`http`]: the post itself (timeouts, `Retry-After`, transient vs permanent, errors
//!   scrubbed of the URL);
//! - [`teams`], [`slack`], [`webhook`]: the payloads, pure functions of the report's sections;
//! - here: the URL and signing secret from the secret layer (named settings, Key Vault
//!   references welcome), the URL rule (https, or http on loopback only), the deterministic
//!   delivery id, and the `delivery.attempt` span and metric.
//!
//! A destination's URL is a secret: whoever has it can post into the channel. It is read from
//! the setting the reports file names and used on the line that sends; the ledger, logs,
//! errors and `handler check` name the setting only.

pub mod http;
pub mod slack;
pub mod teams;
pub mod webhook;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use super::occurrence::JobOutcome;
use crate::render::format::Formatter;
use crate::render::{RenderContext, SectionResult};
use crate::report::definition::{Destination, DestinationKind};
use crate::report::{Report, Window};
use crate::secrets::{SecretErrorKind, Secrets};
use http::{Posted, Scrubber};

/// Checks a destination URL without sending anything: `https` with a host, or `http` to a
/// loopback host (local work and tests). Errors name `setting`, never the value.
pub fn check_url(setting: &str, value: &SecretString) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(value.expose_secret().trim())
        .map_err(|_| format!("{setting} does not hold a well-formed URL"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("{setting} holds a URL without a host"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if crate::secrets::reference::is_loopback_host(host) => Ok(url),
        "http" => Err(format!(
            "{setting} holds an http URL: only https is allowed (http only to a loopback host, for local work)"
        )),
        _ => Err(format!("{setting} holds a URL that is not https")),
    }
}

/// What `handler check` says about one destination: its setting resolves, the URL is well
/// formed, and a signing secret (if any) resolves and is not empty. No request is sent.
pub async fn check(secrets: &Secrets, d: &Destination) -> Result<String, String> {
    let value = secrets
        .get_named(&d.url_setting)
        .await
        .map_err(|e| e.to_string())?;
    let url = check_url(&d.url_setting, &value)?;
    let via = if secrets.is_named_vault_reference(&d.url_setting) {
        " (a Key Vault reference)"
    } else {
        ""
    };
    let mut detail = format!("{} holds an {} URL{via}", d.url_setting, url.scheme());
    if let Some(s) = &d.signing_secret_setting {
        let secret = secrets.get_named(s).await.map_err(|e| e.to_string())?;
        if secret.expose_secret().is_empty() {
            return Err(format!("{s} is empty"));
        }
        detail.push_str(&format!("; signed with {s}"));
    }
    Ok(detail)
}

/// The id a receiver drops duplicates by (`X-Report-Delivery-Id`): the same for every attempt
/// at one (report, occurrence, destination), a new one for each manual resend. UUID-shaped,
/// from SHA-256, so it says nothing about the URL.
pub fn delivery_id(
    report: &str,
    occurrence: DateTime<Utc>,
    target: &str,
    resend: Option<u32>,
) -> String {
    let mut h = Sha256::new();
    h.update(report.as_bytes());
    h.update([0]);
    h.update(occurrence.to_rfc3339().as_bytes());
    h.update([0]);
    h.update(target.as_bytes());
    if let Some(n) = resend {
        h.update([0]);
        h.update(format!("resend-{n}").as_bytes());
    }
    let d = h.finalize();
    let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Posts the report's `sections` for `window` to destination `d` and says how it went (the
/// caller records it on the destination's ledger row).
#[allow(clippy::too_many_arguments)]
pub async fn deliver(
    secrets: &Secrets,
    report: &Report,
    occurrence: DateTime<Utc>,
    window: &Window,
    d: &Destination,
    target: &str,
    sections: &[SectionResult],
    resend: Option<u32>,
) -> JobOutcome {
    let kind = d.kind.as_str();
    let span = tracing::info_span!(
        "delivery.attempt",
        report.name = %report.name,
        destination.kind = kind,
        destination.setting = %d.url_setting,
        delivery.outcome = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let outcome = attempt(
        secrets, report, occurrence, window, d, target, sections, resend,
    )
    .instrument(span.clone())
    .await;
    let (name, status) = match &outcome {
        Attempt::Posted(Posted::Delivered { status }, _) => ("sent", Some(*status)),
        Attempt::Posted(Posted::Transient { status, .. }, _) => ("transient_failure", *status),
        Attempt::Posted(Posted::Permanent { status, .. }, _) => {
            ("permanent_failure", Some(*status))
        }
        Attempt::NotSent {
            retryable: true, ..
        } => ("transient_failure", None),
        Attempt::NotSent { .. } => ("permanent_failure", None),
    };
    span.record("delivery.outcome", name);
    if let Some(s) = status {
        span.record("http.response.status_code", s);
    }
    if name != "sent" {
        span.record("otel.status_code", "ERROR");
    }
    drop(span);
    crate::telemetry::count(
        |m| &m.deliveries,
        &[
            ("report", report.name.clone()),
            ("destination.kind", kind.into()),
            ("outcome", name.into()),
        ],
    );
    match outcome {
        Attempt::Posted(Posted::Delivered { status }, id) => {
            tracing::info!(report = %report.name, destination = %target, delivery.id = %id, http.response.status_code = status, "report posted to destination");
            JobOutcome::Sent {
                message_id: id,
                accepted: 1,
                rejected: Vec::new(),
            }
        }
        Attempt::Posted(Posted::Transient { error, .. }, _) => JobOutcome::Failed {
            error,
            retryable: true,
        },
        Attempt::Posted(Posted::Permanent { error, .. }, _) => JobOutcome::Failed {
            error,
            retryable: false,
        },
        Attempt::NotSent { error, retryable } => JobOutcome::Failed { error, retryable },
    }
}

enum Attempt {
    /// The request went out; with the delivery id.
    Posted(Posted, String),
    /// Nothing was sent (a setting missing or malformed, the vault unavailable).
    NotSent { error: String, retryable: bool },
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    secrets: &Secrets,
    report: &Report,
    occurrence: DateTime<Utc>,
    window: &Window,
    d: &Destination,
    target: &str,
    sections: &[SectionResult],
    resend: Option<u32>,
) -> Attempt {
    let not_sent = |e: crate::secrets::SecretError| Attempt::NotSent {
        // A setting that is not there does not appear by retrying; a vault that did not answer
        // may answer on the next tick.
        retryable: e.kind() != SecretErrorKind::NotConfigured,
        error: e.to_string(),
    };
    let value = match secrets.get_named(&d.url_setting).await {
        Ok(v) => v,
        Err(e) => return not_sent(e),
    };
    let url = match check_url(&d.url_setting, &value) {
        Ok(u) => u,
        Err(error) => {
            return Attempt::NotSent {
                error,
                retryable: false,
            };
        }
    };
    let mut scrub = Scrubber::for_url(&url);
    let signing = match &d.signing_secret_setting {
        None => None,
        Some(s) => match secrets.get_named(s).await {
            Ok(v) if v.expose_secret().is_empty() => {
                return Attempt::NotSent {
                    error: format!("{s} is empty"),
                    retryable: false,
                };
            }
            Ok(v) => {
                scrub.add(v.expose_secret());
                Some(v)
            }
            Err(e) => return not_sent(e),
        },
    };
    let id = delivery_id(&report.name, occurrence, target, resend);
    let ctx = report.render_context(window, Utc::now(), &[], &[]);
    let body = match d.kind {
        DestinationKind::Teams => teams::payload(&ctx, sections),
        DestinationKind::Slack => slack::payload(&ctx, sections),
        DestinationKind::Webhook => crate::render::render_json(&ctx, sections).into_bytes(),
    };
    let mut headers: Vec<(&'static str, String)> = vec![(webhook::DELIVERY_ID_HEADER, id.clone())];
    if let Some(key) = &signing {
        let ts = Utc::now().timestamp();
        headers.push((webhook::TIMESTAMP_HEADER, ts.to_string()));
        headers.push((
            webhook::SIGNATURE_HEADER,
            webhook::signature(key, ts, &body),
        ));
    }
    let posted = http::post_json(&url, &body, &headers, &scrub).await;
    Attempt::Posted(posted, id)
}

/// One section's cells as people read them (labels, formats, totals), at most `limit` rows:
/// what the Teams and Slack payloads lay out, like the email's tables.
pub(crate) struct TableView {
    /// Column headers (labels).
    pub headers: Vec<String>,
    /// Shown rows, formatted.
    pub rows: Vec<Vec<String>>,
    /// The "Total" row, when the section sums columns.
    pub totals: Option<Vec<String>>,
    /// Per column: right-aligned (numbers).
    pub right: Vec<bool>,
    /// Rows of the result not shown.
    pub hidden: usize,
}

impl TableView {
    pub(crate) fn new(f: &Formatter, s: &SectionResult, limit: usize) -> Self {
        let t = &s.table;
        let settings: Vec<_> = t
            .columns
            .iter()
            .map(|c| s.display.column(&c.name))
            .collect();
        let clean = |v: String| -> String {
            v.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        };
        let rows = t
            .rows
            .iter()
            .take(limit)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(i, v)| clean(f.value(v, settings.get(i).copied().flatten())))
                    .collect()
            })
            .collect();
        let totals = s.totals(f).map(|cells| {
            let label_at = cells.iter().position(Option::is_none);
            cells
                .into_iter()
                .enumerate()
                .map(|(i, c)| match c {
                    Some(v) => clean(v),
                    None if Some(i) == label_at => "Total".to_string(),
                    None => String::new(),
                })
                .collect()
        });
        Self {
            headers: t
                .columns
                .iter()
                .map(|c| clean(s.display.label(&c.name).to_string()))
                .collect(),
            rows,
            totals,
            right: t
                .columns
                .iter()
                .zip(&settings)
                .map(|(c, st)| {
                    st.and_then(|st| st.format)
                        .map_or(c.kind.is_numeric(), |fm| fm.is_numeric())
                })
                .collect(),
            hidden: t.rows.len().saturating_sub(limit),
        }
    }
}

/// `2026-12-01 00:00 – 2026-12-02 00:00 (Europe/Berlin)`: the window in the report's zone.
pub(crate) fn window_line(ctx: &RenderContext) -> String {
    let local = |t: DateTime<Utc>| {
        t.with_timezone(&ctx.time_zone)
            .format("%Y-%m-%d %H:%M")
            .to_string()
    };
    format!(
        "{} – {} ({})",
        local(ctx.start),
        local(ctx.end),
        ctx.time_zone
    )
}

/// `3 more rows not shown.` (with the locale's digits), or `None` when every row is shown.
pub(crate) fn more_rows(f: &Formatter, hidden: usize) -> Option<String> {
    (hidden > 0).then(|| {
        format!(
            "{} more {} not shown.",
            f.count(hidden),
            if hidden == 1 { "row" } else { "rows" }
        )
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A small report result for the payload tests.
    use chrono::{NaiveDate, TimeZone, Utc};

    use crate::data::{Column, ColumnType, Table, Value};
    use crate::render::format::Locale;
    use crate::render::{RenderContext, SectionDisplay, SectionResult};

    pub fn section(title: &str, cols: &[(&str, ColumnType)], rows: usize) -> SectionResult {
        SectionResult {
            title: title.into(),
            table: Table {
                columns: cols
                    .iter()
                    .map(|(n, k)| Column {
                        name: (*n).into(),
                        kind: *k,
                    })
                    .collect(),
                rows: (0..rows)
                    .map(|i| {
                        cols.iter()
                            .map(|(_, k)| match k {
                                ColumnType::Integer => Value::Int(i as i64 * 1000),
                                _ => Value::Text(format!("item {i} <&> `x`")),
                            })
                            .collect()
                    })
                    .collect(),
                truncated: false,
            },
            display: SectionDisplay::default(),
        }
    }

    pub fn ctx(max_rows_in_body: usize) -> RenderContext<'static> {
        RenderContext {
            report_name: "daily-sales",
            title: "Daily sales",
            description: Some("Orders of the day"),
            time_zone: chrono_tz::Europe::Berlin,
            start: Utc.with_ymd_and_hms(2026, 11, 30, 23, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2026, 12, 1, 23, 0, 0).unwrap(),
            date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            generated_at: Utc.with_ymd_and_hms(2026, 12, 2, 5, 0, 0).unwrap(),
            max_rows_in_body,
            locale: Locale::default(),
            single_day: true,
            attachments: &[],
            charts: &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn urls_are_https_or_loopback_http_and_errors_name_the_setting_only() {
        let ok = |v: &str| check_url("HOOK", &SecretString::from(v.to_string()));
        assert!(ok("https://prod.example.test/hook?sig=x").is_ok());
        assert!(ok("http://127.0.0.1:8080/hook").is_ok());
        assert!(ok("http://localhost/hook").is_ok());
        assert!(ok("http://[::1]:9/hook").is_ok());
        for bad in [
            "http://prod.example.test/s3cret",
            "ftp://prod.example.test/s3cret",
            "not a url s3cret",
            "mailto:s3cret@example.test",
            "https://",
            "",
        ] {
            let e = ok(bad).unwrap_err();
            assert!(e.starts_with("HOOK "), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn the_delivery_id_is_deterministic_per_target_and_resend() {
        let occ = Utc.with_ymd_and_hms(2026, 12, 2, 5, 0, 0).unwrap();
        let a = delivery_id("daily", occ, "webhook:A", None);
        assert_eq!(a, delivery_id("daily", occ, "webhook:A", None));
        assert_eq!(a.len(), 36);
        assert_ne!(a, delivery_id("daily", occ, "webhook:B", None));
        assert_ne!(a, delivery_id("other", occ, "webhook:A", None));
        assert_ne!(
            a,
            delivery_id("daily", occ + chrono::Duration::days(1), "webhook:A", None)
        );
        assert_ne!(a, delivery_id("daily", occ, "webhook:A", Some(2)));
    }
}
