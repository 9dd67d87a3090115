//! The NightlyReport tick: which occurrences are due, and delivering each exactly once.
//!
//! The Functions timer is only a tick (every few minutes, in UTC); each report carries its own
//! NCRONTAB schedule and time zone. On each tick, for each report, every occurrence that is due
//! (≤ the tick time), not older than the report's `catch_up` and not yet in the ledger is
//! delivered, oldest first. Older missed occurrences are recorded as skipped with a warning.
//! `IsPastDue`, retries, manual runs and repeated ticks all reduce to this rule, and the ledger's
//! atomic claim makes a second email impossible, also across handler processes.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::App;
use crate::delivery::ledger::{Claim, DeliveryState};
use crate::delivery::mail::MailTransport;
use crate::delivery::mail::{OutgoingReport, SendOutcome};
use crate::render::{self, RenderContext, SectionResult};
use crate::report::{Report, Window};
use crate::secrets::SecretSetting;

/// The default of `CLAIM_LEASE`: how long a claim protects an occurrence from other processes.
/// Longer than `functionTimeout` (10 min), so a live delivery is never taken over; one whose
/// process crashed is retried by a later tick after it (within `catch_up`).
pub const CLAIM_LEASE: Duration = Duration::from_secs(15 * 60);

/// How far before `catch_up` the tick still looks for missed occurrences to record as skipped.
pub const SKIP_HORIZON: chrono::Duration = chrono::Duration::days(2);

/// At most this many missed occurrences per report are recorded as skipped on one tick.
pub const MAX_MISSED_RECORDED: usize = 24;

/// What one tick did, for the invocation log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickSummary {
    /// Emails sent.
    pub sent: usize,
    /// Occurrences recorded as skipped (empty report, or missed beyond `catch_up`).
    pub skipped: usize,
    /// Occurrences another tick or process already handled.
    pub already_done: usize,
    /// Failures, as `report@occurrence: cause`.
    pub failed: Vec<String>,
}

/// The outcome of one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// The email went out now.
    Sent,
    /// Recorded as skipped (every section empty with `skip_if_empty`).
    Skipped,
    /// An earlier run already finished it (sent, skipped or permanently failed).
    AlreadyDone(DeliveryState),
    /// Another process holds a live claim on it.
    Busy,
}

impl std::fmt::Display for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sent => f.write_str("sent"),
            Self::Skipped => f.write_str("skipped (every section empty)"),
            Self::AlreadyDone(s) => write!(f, "already {s} earlier (see `handler deliveries`)"),
            Self::Busy => f.write_str("being delivered by another process"),
        }
    }
}

/// Claims one occurrence in the ledger and, if the claim is ours, delivers it. The one way any
/// caller (tick, `handler dev`, `handler report run --send`) sends a report.
pub async fn claim_and_deliver(
    app: &App,
    report: &Report,
    occ: DateTime<Utc>,
) -> anyhow::Result<Delivered> {
    let ledger = app
        .ledger()
        .await
        .context("the delivery ledger is unavailable")?;
    match ledger
        .claim(&report.name, occ, Utc::now(), app.claim_lease)
        .await?
    {
        Claim::AlreadyDone(state) => Ok(Delivered::AlreadyDone(state)),
        Claim::Busy => Ok(Delivered::Busy),
        Claim::Claimed { attempt } => {
            tracing::info!(report = %report.name, occurrence = %occ.to_rfc3339(), attempt, "delivering");
            deliver(app, report, occ).await
        }
    }
}

/// Delivers one occurrence now, whatever the tick time: for `handler dev`'s first email and
/// `handler report run --send`. Still exactly once: it goes through the ledger's claim.
pub async fn deliver_now(
    app: &App,
    report: &Report,
    occ: DateTime<Utc>,
) -> anyhow::Result<Delivered> {
    claim_and_deliver(app, report, occ).await
}

/// Runs one tick at the host's time `tick`. Returns an error (→ 500, host retry) when any
/// delivery failed; everything else that could be delivered has been.
pub async fn run_tick(app: &App, tick: DateTime<Utc>) -> anyhow::Result<TickSummary> {
    let reports = app.reports().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut summary = TickSummary::default();
    if reports.reports.is_empty() {
        tracing::info!("no reports are defined; nothing to deliver");
        return Ok(summary);
    }
    let ledger = app
        .ledger()
        .await
        .context("the delivery ledger is unavailable")?;
    for report in &reports.reports {
        let catch_up =
            chrono::Duration::from_std(report.catch_up).unwrap_or(chrono::Duration::hours(2));
        let oldest_due = tick - catch_up;
        // Due: oldest_due <= occurrence <= tick (the range is bounded by catch_up).
        let due = report.schedule.occurrences_between(
            report.time_zone,
            oldest_due - chrono::Duration::nanoseconds(1),
            tick,
        );
        // Missed beyond catch_up: record the most recent ones (once each) so the ledger shows
        // the gap; bounded, so a frequent schedule does not cost thousands of writes per tick.
        let mut missed = Vec::new();
        let mut cursor = oldest_due;
        while missed.len() < MAX_MISSED_RECORDED {
            match report.schedule.previous_before(report.time_zone, cursor) {
                Some(p) if p > oldest_due - SKIP_HORIZON => {
                    missed.push(p);
                    cursor = p;
                }
                _ => break,
            }
        }
        for occ in missed.iter().rev() {
            if ledger
                .record_missed(&report.name, *occ, "missed by more than catch_up", tick)
                .await?
            {
                tracing::warn!(
                    report = %report.name,
                    occurrence = %occ.to_rfc3339(),
                    "occurrence missed by more than catch_up; recorded as skipped, not sent"
                );
                summary.skipped += 1;
            }
        }
        for occ in due {
            match claim_and_deliver(app, report, occ).await {
                Ok(Delivered::Sent) => summary.sent += 1,
                Ok(Delivered::Skipped) => summary.skipped += 1,
                Ok(Delivered::AlreadyDone(_) | Delivered::Busy) => summary.already_done += 1,
                Err(e) => {
                    let msg = format!("{}@{}: {e:#}", report.name, occ.to_rfc3339());
                    tracing::error!(report = %report.name, occurrence = %occ.to_rfc3339(), error.message = %format!("{e:#}"), "delivery failed");
                    summary.failed.push(msg);
                }
            }
        }
    }
    tracing::info!(
        sent = summary.sent,
        skipped = summary.skipped,
        already_done = summary.already_done,
        failed = summary.failed.len(),
        "tick finished"
    );
    if summary.failed.is_empty() {
        Ok(summary)
    } else {
        anyhow::bail!(
            "{} delivery(ies) failed: {}",
            summary.failed.len(),
            summary.failed.join("; ")
        )
    }
}

/// Delivers one claimed occurrence and records the outcome in the ledger.
async fn deliver(app: &App, report: &Report, occ: DateTime<Utc>) -> anyhow::Result<Delivered> {
    let ledger = app.ledger().await?;
    let window = Window::for_occurrence(report, occ);
    let sections = match app.run_report(report, &window).await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("{e:#}");
            ledger
                .mark_failed(&report.name, occ, &msg, true, Utc::now())
                .await?;
            anyhow::bail!(msg);
        }
    };
    if report.skip_if_empty && sections.iter().all(|s| s.table.rows.is_empty()) {
        ledger
            .mark_skipped(
                &report.name,
                occ,
                "every section was empty (skip_if_empty)",
                Utc::now(),
            )
            .await?;
        tracing::info!(report = %report.name, "every section was empty; skipped");
        return Ok(Delivered::Skipped);
    }
    let msg = compose(report, occ, &window, &sections, Utc::now());
    let outcome = send_with_password(app, &msg).await;
    let now = Utc::now();
    match outcome {
        SendOutcome::Sent {
            message_id,
            accepted,
            rejected,
        } => {
            ledger
                .mark_sent(&report.name, occ, &message_id, accepted, &rejected, now)
                .await?;
            tracing::info!(report = %report.name, email.message_id = %message_id, recipients = accepted, rejected = rejected.len(), "report sent");
            Ok(Delivered::Sent)
        }
        SendOutcome::Transient(e) => {
            ledger.mark_failed(&report.name, occ, &e, true, now).await?;
            anyhow::bail!("transient mail failure, will retry on a later tick: {e}")
        }
        SendOutcome::AuthRejected(e) => {
            ledger.mark_failed(&report.name, occ, &e, true, now).await?;
            anyhow::bail!(
                "the SMTP server rejected the credentials (after one refresh of SMTP_PASSWORD): {e}"
            )
        }
        SendOutcome::Permanent(e) => {
            ledger
                .mark_failed(&report.name, occ, &e, false, now)
                .await?;
            anyhow::bail!("permanent mail failure, not retried: {e}")
        }
    }
}

/// Sends with the SMTP password from the secret layer; on an authentication failure the
/// password is refreshed from the vault once and the send retried once.
async fn send_with_password(app: &App, msg: &OutgoingReport) -> SendOutcome {
    let needs_password = matches!(app.mailer.settings().transport, MailTransport::Smtp(_))
        && app.secrets.is_configured(SecretSetting::SmtpPassword);
    if !needs_password {
        return app.mailer.send(msg, None).await;
    }
    let password = match app.secrets.get(SecretSetting::SmtpPassword).await {
        Ok(p) => p,
        Err(e) => return SendOutcome::Transient(e.to_string()),
    };
    match app.mailer.send(msg, Some(&password)).await {
        SendOutcome::AuthRejected(first) => {
            tracing::warn!(
                "SMTP authentication failed; refreshing SMTP_PASSWORD from the vault and retrying once"
            );
            app.secrets.report_rejected(SecretSetting::SmtpPassword);
            match app.secrets.refresh(SecretSetting::SmtpPassword).await {
                Ok(p) => app.mailer.send(msg, Some(&p)).await,
                Err(_) => SendOutcome::AuthRejected(first),
            }
        }
        other => other,
    }
}

/// Renders the email for one occurrence.
pub fn compose(
    report: &Report,
    occurrence: DateTime<Utc>,
    window: &Window,
    sections: &[SectionResult],
    generated_at: DateTime<Utc>,
) -> OutgoingReport {
    let tz = window.time_zone.name();
    let ctx = RenderContext {
        report_name: &report.name,
        title: &report.title,
        description: report.description.as_deref(),
        time_zone: tz,
        start: window.start,
        end: window.end,
        date: window.date,
        generated_at,
        max_rows_in_body: report.max_rows_in_body,
    };
    let attachments = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.table.rows.is_empty())
        .map(|(i, s)| {
            (
                format!(
                    "{}-{}-{}-{}.csv",
                    report.name,
                    window.date,
                    i + 1,
                    slug(&s.title)
                ),
                render::render_csv(&s.table),
            )
        })
        .collect();
    OutgoingReport {
        report: report.name.clone(),
        occurrence,
        subject: report.render_subject(window),
        to: report.recipients.clone(),
        cc: report.cc.clone(),
        bcc: report.bcc.clone(),
        text: render::render_text(&ctx, sections),
        html: render::render_html(&ctx, sections),
        attachments,
    }
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').chars().take(40).collect()
}
