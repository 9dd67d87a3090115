//! The NightlyReport tick: delivering each due occurrence exactly once.
//!
//! The Functions timer is only a tick (every few minutes, in UTC); each report carries its own
//! NCRONTAB schedule and time zone. [`super::due`] says which occurrences a tick delivers and
//! which it records as missed; this module applies that plan through the ledger. `IsPastDue`,
//! retries, manual runs and repeated ticks all reduce to this rule, and the ledger's atomic
//! claim makes a second email impossible, also across handler processes. The tick ends with one
//! log line that counts what each report sent, skipped and failed.

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::Delivery;
use super::due::due_occurrences;
use super::ledger::{Claim, DeliveryState, Origin, Target};
use super::occurrence::deliver;
use crate::report::Report;

/// What one tick did for one report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReportTally {
    /// The report's name.
    pub report: String,
    /// Emails sent.
    pub sent: usize,
    /// Occurrences recorded as skipped (empty report, or missed beyond `catch_up`).
    pub skipped: usize,
    /// Occurrences another tick or process already handled.
    pub already_done: usize,
    /// Failed deliveries.
    pub failed: usize,
}

/// What one tick did, for the invocation log and `handler dev`'s summary line.
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
    /// The same counts per report, in the order of the reports file.
    pub reports: Vec<ReportTally>,
}

impl TickSummary {
    /// One line for a person: `daily-sales: sent 1, skipped 0, failed 0; weekly: ...`.
    pub fn per_report_line(&self) -> String {
        if self.reports.is_empty() {
            return "no reports are defined".into();
        }
        self.reports
            .iter()
            .map(|r| {
                let mut s = format!(
                    "{}: sent {}, skipped {}, failed {}",
                    r.report, r.sent, r.skipped, r.failed
                );
                if r.already_done > 0 {
                    s.push_str(&format!(", already done {}", r.already_done));
                }
                s
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
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

impl Delivered {
    /// Whether an email went out.
    pub fn sent(self) -> bool {
        self == Self::Sent
    }
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

/// Who asks for a delivery; decides which ledger rows may be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A tick: only occurrences never settled (or failed transiently) are taken.
    Scheduled,
    /// An operator (`handler report run --send`, `handler dev`'s first email): skipped and
    /// failed occurrences are sent too; a sent one only with `resend`.
    Manual {
        /// Send again an occurrence that was already sent.
        resend: bool,
    },
}

/// Claims one occurrence in the ledger and, if the claim is ours, delivers it. The one way any
/// caller (tick, `handler dev`, `handler report run --send`) sends a report.
pub async fn claim_and_deliver(
    delivery: &Delivery,
    report: &Report,
    occ: DateTime<Utc>,
    request: Request,
) -> anyhow::Result<Delivered> {
    let ledger = delivery
        .ledger()
        .await
        .context("the delivery ledger is unavailable")?;
    let now = Utc::now();
    let own = Target::occurrence();
    let claim = match request {
        Request::Scheduled => {
            ledger
                .claim(&report.name, &own, occ, now, delivery.claim_lease)
                .await?
        }
        Request::Manual { resend } => {
            ledger
                .claim_manual(&report.name, &own, occ, now, delivery.claim_lease, resend)
                .await?
        }
    };
    match claim {
        Claim::AlreadyDone(state) => Ok(Delivered::AlreadyDone(state)),
        Claim::Busy => Ok(Delivered::Busy),
        Claim::Claimed { attempt } => {
            // Only a manual `--resend` can have taken a sent row; then the row says so.
            let resend = match request {
                Request::Manual { resend: true } => ledger
                    .get(&report.name, &own, occ)
                    .await?
                    .filter(|r| r.origin == Origin::Resend)
                    .map(|_| attempt),
                _ => None,
            };
            tracing::info!(report = %report.name, occurrence = %occ.to_rfc3339(), attempt, "delivering");
            deliver(delivery, report, occ, request, resend).await
        }
    }
}

/// Runs one tick at the host's time `tick`. Returns an error (→ 500, host retry) when any
/// delivery failed; everything else that could be delivered has been.
pub async fn run_tick(delivery: &Delivery, tick: DateTime<Utc>) -> anyhow::Result<TickSummary> {
    let reports = delivery
        .engine
        .reports()
        .map_err(|e| anyhow::anyhow!("the reports file is invalid:\n{e}"))?;
    let mut summary = TickSummary::default();
    if reports.reports.is_empty() {
        tracing::info!("no reports are defined; nothing to deliver");
        return Ok(summary);
    }
    let ledger = delivery
        .ledger()
        .await
        .context("the delivery ledger is unavailable")?;
    for report in &reports.reports {
        let mut tally = ReportTally {
            report: report.name.clone(),
            ..Default::default()
        };
        let first_seen = ledger.first_seen(&report.name, tick).await?;
        let plan = due_occurrences(
            &report.schedule,
            report.time_zone,
            report.catch_up,
            first_seen,
            tick,
        );
        // Missed beyond catch_up since the report was first seen: recorded once each, so the
        // ledger shows the gap.
        for occ in &plan.missed {
            if ledger
                .record_missed(&report.name, *occ, "missed by more than catch_up", tick)
                .await?
            {
                tracing::warn!(
                    report = %report.name,
                    occurrence = %occ.to_rfc3339(),
                    "occurrence missed by more than catch_up; recorded as skipped, not sent"
                );
                tally.skipped += 1;
            }
        }
        for occ in plan.due {
            match claim_and_deliver(delivery, report, occ, Request::Scheduled).await {
                Ok(Delivered::Sent) => tally.sent += 1,
                Ok(Delivered::Skipped) => tally.skipped += 1,
                Ok(Delivered::AlreadyDone(_) | Delivered::Busy) => tally.already_done += 1,
                Err(e) => {
                    let msg = format!("{}@{}: {e:#}", report.name, occ.to_rfc3339());
                    tracing::error!(report = %report.name, occurrence = %occ.to_rfc3339(), error.message = %format!("{e:#}"), "delivery failed");
                    summary.failed.push(msg);
                    tally.failed += 1;
                }
            }
        }
        summary.sent += tally.sent;
        summary.skipped += tally.skipped;
        summary.already_done += tally.already_done;
        summary.reports.push(tally);
    }
    tracing::info!(
        sent = summary.sent,
        skipped = summary.skipped,
        already_done = summary.already_done,
        failed = summary.failed.len(),
        reports = %summary.per_report_line(),
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
