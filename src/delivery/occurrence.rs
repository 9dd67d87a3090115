//! Delivering one claimed occurrence: running the report and sending it to each of its targets,
//! each target's outcome recorded in the ledger.
//!
//! A report without fan-out has one target, the occurrence itself: its one email goes to the
//! static `recipients`, `cc` and `bcc`, and the occurrence's ledger row records it (as every
//! row did before fan-out existed). A report that fans out (one email per recipient of a
//! `recipients_query`, Teams, Slack and webhook destinations) keeps one ledger row per target
//! besides the occurrence's own: the caller's claim of the occurrence row makes one process at
//! a time work on the occurrence, each target is then claimed on its own (so a target already
//! delivered is never repeated, and one failing target never blocks another), and the
//! occurrence row ends up settled only when every target is.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tracing::Instrument as _;

use super::Delivery;
use super::email::{compose, compose_for_recipient, send_with_password};
use super::ledger::{Claim, DeliveryState, Ledger, Target};
use super::mail::SendOutcome;
use super::recipients::{self, Recipient};
use super::tick::{Delivered, Request};
use crate::render::SectionResult;
use crate::report::definition::Destination;
use crate::report::{Report, Window};

/// What one target of an occurrence receives.
#[derive(Debug, Clone)]
pub enum Job {
    /// The report email to the report's static `recipients`, `cc` and `bcc`.
    Email,
    /// One recipient's email of a per-recipient report (`recipients_query`): the sections run
    /// with their `:recipient_key`, sent to them (plus the static `cc` and `bcc`). A row whose
    /// address is invalid fails for good with the reason, without running anything.
    Recipient(Box<Recipient>),
    /// The report posted to a Teams, Slack or webhook destination (issue 16).
    Destination(Destination),
}

/// How one target's attempt ended, before it is written to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Delivered: the relay (or receiver) accepted it.
    Sent {
        /// The email's Message-ID (or a destination's delivery id).
        message_id: String,
        /// How many recipients accepted it (1 for a destination).
        accepted: u32,
        /// Recipients refused permanently while others received it, with the server's reply.
        rejected: Vec<String>,
    },
    /// Deliberately not sent (every section empty with `skip_if_empty`, …), with the reason.
    Skipped(String),
    /// Not delivered; `retryable` lets a later tick try this target again.
    Failed {
        /// What went wrong, for the ledger and the tick's message (never a secret).
        error: String,
        /// A transient failure (a later tick retries) or a permanent one (settled).
        retryable: bool,
    },
}

/// The targets an occurrence fans out to, each with what it receives; empty when the report
/// does not fan out (the occurrence itself is then the one target).
pub fn fan_out(report: &Report) -> Vec<(Target, Job)> {
    let mut targets = Vec::new();
    targets.extend(destination_targets(report));
    targets
}

/// A report with destinations fans out to its email (`email`, when it has `recipients`) and to
/// each destination (`teams:TEAMS_WEBHOOK_SALES`, named by its setting, never its URL); one
/// without destinations does not fan out.
fn destination_targets(report: &Report) -> Vec<(Target, Job)> {
    if report.destinations.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if !report.recipients.is_empty()
        && let Ok(t) = Target::new("email", "")
    {
        out.push((t, Job::Email));
    }
    for d in &report.destinations {
        // Setting names are checked when the file is loaded, so the target is always valid.
        if let Ok(t) = Target::new(d.kind.as_str(), &d.url_setting) {
            out.push((t, Job::Destination(d.clone())));
        }
    }
    out
}

/// The target `wanted` names among the report's fan-out targets, for a manual send to one of
/// them (`handler report run NAME --send --destination teams`): the whole target text
/// (`teams:TEAMS_WEBHOOK_SALES`, `email`), or a kind (`teams`) when the report has exactly one
/// destination of that kind.
pub fn find_target(report: &Report, wanted: &str) -> Result<(Target, Job), String> {
    let targets = destination_targets(report);
    if targets.is_empty() {
        return Err(format!(
            "the report `{}` has no destinations in reports.toml",
            report.name
        ));
    }
    if let Some(t) = targets.iter().find(|(t, _)| t.as_str() == wanted) {
        return Ok(t.clone());
    }
    let of_kind: Vec<&(Target, Job)> = targets
        .iter()
        .filter(|(t, _)| t.as_str().split(':').next() == Some(wanted))
        .collect();
    let names = targets
        .iter()
        .map(|(t, _)| t.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match of_kind.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!(
            "the report `{}` has no destination `{}`; it has: {names}",
            report.name,
            crate::api::sanitize(wanted)
        )),
        _ => Err(format!(
            "the report `{}` has several `{}` destinations; name one: {names}",
            report.name,
            crate::api::sanitize(wanted)
        )),
    }
}

/// Sends one target of an occurrence now, for an operator: claims that target's row alone
/// (a sent one only with `resend`), runs the condition and the report, sends, records the
/// outcome on that row. The occurrence's own row is left alone, so the schedule still
/// delivers the other targets, and never this one again once it is sent.
pub async fn deliver_one_target(
    delivery: &Delivery,
    report: &Report,
    occ: DateTime<Utc>,
    target: &Target,
    job: &Job,
    resend: bool,
) -> anyhow::Result<Delivered> {
    let ledger = delivery.ledger().await?;
    let claim = ledger
        .claim_manual(
            &report.name,
            target,
            occ,
            Utc::now(),
            delivery.claim_lease,
            resend,
        )
        .await?;
    let attempt = match claim {
        Claim::Claimed { attempt } => attempt,
        Claim::AlreadyDone(state) => return Ok(Delivered::AlreadyDone(state)),
        Claim::Busy => return Ok(Delivered::Busy),
    };
    let window = Window::for_occurrence(&report.timing(), occ);
    match condition_holds(delivery, report, &window).await {
        Ok(true) => {}
        Ok(false) => {
            ledger
                .mark_skipped(&report.name, target, occ, CONDITION_FALSE, Utc::now())
                .await?;
            return Ok(Delivered::Skipped);
        }
        Err(error) => {
            ledger
                .mark_failed(&report.name, target, occ, &error, true, Utc::now())
                .await?;
            anyhow::bail!(error);
        }
    }
    let mut sections = SharedSections::new(delivery, report, &window);
    let resend = resend.then_some(attempt);
    let outcome = run_job(delivery, report, occ, &window, job, &mut sections, resend).await;
    record(ledger, report, target, occ, &outcome).await?;
    match outcome {
        JobOutcome::Sent { .. } => Ok(Delivered::Sent),
        JobOutcome::Skipped(_) => Ok(Delivered::Skipped),
        JobOutcome::Failed { error, .. } => Err(anyhow::anyhow!(error)),
    }
}

/// The skip reason of an alert whose condition did not hold.
pub const CONDITION_FALSE: &str = "condition false";

/// Runs the report's `condition` (if any) for the window: `Ok(true)` without one. One row
/// whose first column is true (or 1) holds; false, 0, NULL or no row does not; anything else,
/// or a failed query, is an error (a failed delivery, retried like any other, never a skip).
async fn condition_holds(
    delivery: &Delivery,
    report: &Report,
    window: &Window,
) -> Result<bool, String> {
    let Some(sql) = &report.condition else {
        return Ok(true);
    };
    let ds = delivery
        .engine
        .data_source()
        .await
        .map_err(|e| format!("the condition could not run: {e}"))?;
    let params = crate::data::QueryParams {
        start: window.start,
        end: window.end,
        date: window.date,
    };
    let table = ds
        .run_query(sql, &params, 1)
        .await
        .map_err(|e| format!("the condition query failed: {e}"))?;
    let held = condition_value(table.rows.first().and_then(|r| r.first()))?;
    tracing::info!(report = %report.name, condition.held = held, "condition evaluated");
    Ok(held)
}

/// What the condition's first cell says (`None`: no row).
fn condition_value(cell: Option<&crate::data::Value>) -> Result<bool, String> {
    use crate::data::Value;
    match cell {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Int(0)) => Ok(false),
        Some(Value::Int(1)) => Ok(true),
        Some(Value::Decimal(d)) if d.trim() == "0" => Ok(false),
        Some(Value::Decimal(d)) if d.trim() == "1" => Ok(true),
        Some(Value::Int(n)) => Err(format!(
            "the condition returned {n}: it must return one boolean (or 0/1) column"
        )),
        Some(_) => Err(
            "the condition must return one boolean (or 0/1) column; it returned another type"
                .into(),
        ),
    }
}

/// The report's sections for the occurrence's window, run at most once per delivery and shared
/// by every target that receives the whole report.
struct SharedSections<'a> {
    delivery: &'a Delivery,
    report: &'a Report,
    window: &'a Window,
    result: Option<Result<std::sync::Arc<Vec<SectionResult>>, String>>,
}

impl<'a> SharedSections<'a> {
    fn new(delivery: &'a Delivery, report: &'a Report, window: &'a Window) -> Self {
        Self {
            delivery,
            report,
            window,
            result: None,
        }
    }

    /// The sections, or the run's error text (a failed run is not repeated for the next target
    /// of the same delivery).
    async fn get(&mut self) -> Result<std::sync::Arc<Vec<SectionResult>>, String> {
        if self.result.is_none() {
            let run = self
                .delivery
                .engine
                .run_report(self.report, self.window)
                .await
                .map(std::sync::Arc::new)
                .map_err(|e| format!("{e:#}"));
            self.result = Some(run);
        }
        self.result.clone().unwrap_or_else(|| Err(String::new()))
    }
}

/// Delivers one occurrence whose own ledger row the caller has claimed, and records every
/// outcome. `resend` is the attempt number when this is a manual resend of a sent occurrence:
/// emails then get their own Message-ID, so mail clients do not drop them as duplicates.
pub async fn deliver(
    delivery: &Delivery,
    report: &Report,
    occ: DateTime<Utc>,
    request: Request,
    resend: Option<u32>,
) -> anyhow::Result<Delivered> {
    let ledger = delivery.ledger().await?;
    let window = Window::for_occurrence(&report.timing(), occ);
    // An alert's condition runs first, before any target is claimed (issue 16). Once a fanned
    // out occurrence has target rows, an earlier attempt found it true: a retry of the targets
    // still waiting does not ask again (the answer may have changed since, but part of the
    // alert is out, and the rest must follow).
    let decided = report.condition.is_some()
        && (report.recipients_query.is_some() || !fan_out(report).is_empty())
        && ledger
            .occurrence_rows(&report.name, occ)
            .await?
            .iter()
            .any(|r| !r.target.is_occurrence());
    let condition = if decided {
        Ok(true)
    } else {
        condition_holds(delivery, report, &window).await
    };
    match condition {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(report = %report.name, occurrence = %occ.to_rfc3339(), "condition false; nothing sent");
            ledger
                .mark_skipped(
                    &report.name,
                    &Target::occurrence(),
                    occ,
                    CONDITION_FALSE,
                    Utc::now(),
                )
                .await?;
            return Ok(Delivered::Skipped);
        }
        Err(error) => {
            ledger
                .mark_failed(
                    &report.name,
                    &Target::occurrence(),
                    occ,
                    &error,
                    true,
                    Utc::now(),
                )
                .await?;
            anyhow::bail!("transient failure, will retry on a later tick: {error}");
        }
    }
    let mut sections = SharedSections::new(delivery, report, &window);
    if report.recipients_query.is_some() {
        return deliver_recipients(
            delivery,
            ledger,
            report,
            occ,
            request,
            &window,
            &mut sections,
            resend,
        )
        .await;
    }
    let targets = fan_out(report);
    if targets.is_empty() {
        let own = Target::occurrence();
        let outcome = run_job(
            delivery,
            report,
            occ,
            &window,
            &Job::Email,
            &mut sections,
            resend,
        )
        .await;
        record(ledger, report, &own, occ, &outcome).await?;
        return match outcome {
            JobOutcome::Sent { .. } => Ok(Delivered::Sent),
            JobOutcome::Skipped(_) => Ok(Delivered::Skipped),
            JobOutcome::Failed { error, retryable } => Err(anyhow::anyhow!(if retryable {
                format!("transient failure, will retry on a later tick: {error}")
            } else {
                format!("permanent failure, not retried: {error}")
            })),
        };
    }
    deliver_fanned(
        delivery,
        ledger,
        report,
        occ,
        request,
        &window,
        &mut sections,
        targets,
        resend,
    )
    .await
}

/// The text of the occurrence row of a per-recipient report whose `recipients_query` returned
/// no row.
pub const NO_RECIPIENTS: &str = "recipients_query returned no recipients";

/// The recipients of a per-recipient report's occurrence: its `recipients_query` run for the
/// window. The error is the occurrence's failure (retryable: a database that is down now may
/// answer on the next tick).
pub async fn expand_recipients(
    delivery: &Delivery,
    report: &Report,
    window: &Window,
) -> Result<Vec<Recipient>, String> {
    let table = match delivery.engine.run_recipients_query(report, window).await {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => return Err(format!("recipients_query failed: {e}")),
    };
    if table.truncated {
        tracing::warn!(report = %report.name, rows = table.rows.len(), "recipients_query returned more rows than MAX_ROWS; only the first are delivered to");
    }
    let list = recipients::from_table(&table)?;
    tracing::info!(report = %report.name, recipients = list.len(), invalid = list.iter().filter(|r| r.mailbox.is_err()).count(), "recipients_query run");
    Ok(list)
}

/// Delivers a per-recipient report's occurrence: each recipient of its `recipients_query` a
/// target of its own (claimed, sent and recorded on its own row); none → the occurrence is
/// recorded skipped; a failing query → the occurrence failed, retryable.
#[allow(clippy::too_many_arguments)]
async fn deliver_recipients(
    delivery: &Delivery,
    ledger: &Ledger,
    report: &Report,
    occ: DateTime<Utc>,
    request: Request,
    window: &Window,
    sections: &mut SharedSections<'_>,
    resend: Option<u32>,
) -> anyhow::Result<Delivered> {
    let own = Target::occurrence();
    let list = match expand_recipients(delivery, report, window).await {
        Ok(list) => list,
        Err(error) => {
            let outcome = JobOutcome::Failed {
                error: error.clone(),
                retryable: true,
            };
            record(ledger, report, &own, occ, &outcome).await?;
            anyhow::bail!("transient failure, will retry on a later tick: {error}");
        }
    };
    if list.is_empty() {
        tracing::info!(report = %report.name, "{NO_RECIPIENTS}; skipped");
        record(
            ledger,
            report,
            &own,
            occ,
            &JobOutcome::Skipped(NO_RECIPIENTS.into()),
        )
        .await?;
        return Ok(Delivered::Skipped);
    }
    let targets = list
        .into_iter()
        .map(|r| (r.target.clone(), Job::Recipient(Box::new(r))))
        .collect();
    deliver_fanned(
        delivery, ledger, report, occ, request, window, sections, targets, resend,
    )
    .await
}

/// What one recipient's manual send came to, for `handler report run --recipient --send` and
/// `handler deliveries resend --recipient`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientSend {
    /// The job ran; how it ended (already recorded in the ledger).
    Done(JobOutcome),
    /// Not claimed: already settled as this state (a sent one needs `resend`).
    AlreadyDone(DeliveryState),
    /// Another process holds a live claim on this recipient's row.
    Busy,
}

/// Sends one occurrence of a per-recipient report to the recipients with `address` only (one
/// email per key the query returns for it), on an operator's request: each recipient's own
/// row is claimed as a manual send (`resend`: even when it was sent already, recorded as a
/// manual resend with its own Message-ID). The other recipients and the occurrence's own row
/// are left as they are. Errs when the query fails or does not return `address`.
pub async fn deliver_to_address(
    delivery: &Delivery,
    report: &Report,
    occ: DateTime<Utc>,
    address: &lettre::Address,
    resend: bool,
) -> anyhow::Result<Vec<(Target, RecipientSend)>> {
    let ledger = delivery.ledger().await?;
    let window = Window::for_occurrence(&report.timing(), occ);
    let list = expand_recipients(delivery, report, &window)
        .await
        .map_err(anyhow::Error::msg)?;
    let mine: Vec<Recipient> = list
        .into_iter()
        .filter(|r| r.has_address(address))
        .collect();
    if mine.is_empty() {
        anyhow::bail!(
            "{address} is not among the recipients that recipients_query returns for the occurrence {}",
            occ.to_rfc3339()
        );
    }
    let mut sections = SharedSections::new(delivery, report, &window);
    let mut out = Vec::new();
    for r in mine {
        let target = r.target.clone();
        let claim = ledger
            .claim_manual(
                &report.name,
                &target,
                occ,
                Utc::now(),
                delivery.claim_lease,
                resend,
            )
            .await?;
        let attempt = match claim {
            Claim::Claimed { attempt } => attempt,
            Claim::AlreadyDone(state) => {
                out.push((target, RecipientSend::AlreadyDone(state)));
                continue;
            }
            Claim::Busy => {
                out.push((target, RecipientSend::Busy));
                continue;
            }
        };
        let again = if resend {
            ledger
                .get(&report.name, &target, occ)
                .await?
                .filter(|row| row.origin == super::ledger::Origin::Resend)
                .map(|_| attempt)
        } else {
            None
        };
        tracing::info!(report = %report.name, occurrence = %occ.to_rfc3339(), delivery.target = %recipients::masked(&target), attempt, "delivering to one recipient on request");
        let job = Job::Recipient(Box::new(r));
        let outcome = run_job(delivery, report, occ, &window, &job, &mut sections, again).await;
        record(ledger, report, &target, occ, &outcome).await?;
        out.push((target, RecipientSend::Done(outcome)));
    }
    Ok(out)
}

/// What the targets of one fanned-out occurrence came to, for settling its own row.
#[derive(Debug, Default)]
struct FanTally {
    targets: usize,
    sent_now: usize,
    sent_before: usize,
    skipped: usize,
    /// Targets still to deliver: failed transiently now or earlier, or held by a live claim.
    pending: Vec<String>,
    /// Targets failed for good, now or earlier.
    failed: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
async fn deliver_fanned(
    delivery: &Delivery,
    ledger: &Ledger,
    report: &Report,
    occ: DateTime<Utc>,
    request: Request,
    window: &Window,
    sections: &mut SharedSections<'_>,
    targets: Vec<(Target, Job)>,
    resend: Option<u32>,
) -> anyhow::Result<Delivered> {
    let mut tally = FanTally {
        targets: targets.len(),
        ..FanTally::default()
    };
    for (target, job) in targets {
        let claim = match request {
            Request::Scheduled => {
                ledger
                    .claim(&report.name, &target, occ, Utc::now(), delivery.claim_lease)
                    .await?
            }
            Request::Manual { resend: again } => {
                ledger
                    .claim_manual(
                        &report.name,
                        &target,
                        occ,
                        Utc::now(),
                        delivery.claim_lease,
                        again,
                    )
                    .await?
            }
        };
        match claim {
            Claim::Claimed { .. } => {}
            Claim::AlreadyDone(DeliveryState::Sent) => {
                tally.sent_before += 1;
                continue;
            }
            Claim::AlreadyDone(DeliveryState::Skipped) => {
                tally.skipped += 1;
                continue;
            }
            Claim::AlreadyDone(_) => {
                tally
                    .failed
                    .push(format!("{}: failed earlier", recipients::masked(&target)));
                continue;
            }
            Claim::Busy => {
                tally
                    .pending
                    .push(format!("{}: being delivered", recipients::masked(&target)));
                continue;
            }
        }
        // Recipients' addresses are masked in logs and in the tick's failure text: the ledger
        // (`handler deliveries`) names them.
        let shown = recipients::masked(&target);
        tracing::info!(report = %report.name, occurrence = %occ.to_rfc3339(), delivery.target = %shown, "delivering to target");
        let outcome = run_job(delivery, report, occ, window, &job, sections, resend).await;
        record(ledger, report, &target, occ, &outcome).await?;
        match outcome {
            JobOutcome::Sent { .. } => tally.sent_now += 1,
            JobOutcome::Skipped(_) => tally.skipped += 1,
            JobOutcome::Failed {
                error,
                retryable: true,
            } => tally
                .pending
                .push(format!("{shown}: {}", recipients::mask_addresses(&error))),
            JobOutcome::Failed {
                error,
                retryable: false,
            } => tally
                .failed
                .push(format!("{shown}: {}", recipients::mask_addresses(&error))),
        }
    }
    settle_fanned(ledger, report, occ, tally).await
}

/// Settles the occurrence's own row from its targets: retryable while any target still waits;
/// else sent when any target was delivered (the permanently failed ones listed as refused),
/// skipped when every target was skipped, failed for good otherwise.
async fn settle_fanned(
    ledger: &Ledger,
    report: &Report,
    occ: DateTime<Utc>,
    tally: FanTally,
) -> anyhow::Result<Delivered> {
    let own = Target::occurrence();
    let now = Utc::now();
    let delivered = tally.sent_now + tally.sent_before;
    if !tally.pending.is_empty() {
        let msg = format!(
            "{} of {} targets not delivered yet, retried on a later tick: {}",
            tally.pending.len(),
            tally.targets,
            tally.pending.join("; ")
        );
        ledger
            .mark_failed(&report.name, &own, occ, &msg, true, now)
            .await?;
        anyhow::bail!(msg);
    }
    if delivered > 0 {
        let accepted = u32::try_from(delivered).unwrap_or(u32::MAX);
        ledger
            .mark_sent(&report.name, &own, occ, "", accepted, &tally.failed, now)
            .await?;
        if !tally.failed.is_empty() {
            anyhow::bail!(
                "{} of {} targets failed permanently, not retried: {}",
                tally.failed.len(),
                tally.targets,
                tally.failed.join("; ")
            );
        }
        return Ok(if tally.sent_now > 0 {
            Delivered::Sent
        } else {
            Delivered::AlreadyDone(DeliveryState::Sent)
        });
    }
    if tally.failed.is_empty() {
        ledger
            .mark_skipped(&report.name, &own, occ, "every target was skipped", now)
            .await?;
        return Ok(Delivered::Skipped);
    }
    let msg = format!(
        "every target failed permanently, not retried: {}",
        tally.failed.join("; ")
    );
    ledger
        .mark_failed(&report.name, &own, occ, &msg, false, now)
        .await?;
    anyhow::bail!(msg)
}

/// Writes one target's outcome to its ledger row.
async fn record(
    ledger: &Ledger,
    report: &Report,
    target: &Target,
    occ: DateTime<Utc>,
    outcome: &JobOutcome,
) -> anyhow::Result<()> {
    let now = Utc::now();
    match outcome {
        JobOutcome::Sent {
            message_id,
            accepted,
            rejected,
        } => {
            ledger
                .mark_sent(
                    &report.name,
                    target,
                    occ,
                    message_id,
                    *accepted,
                    rejected,
                    now,
                )
                .await
        }
        JobOutcome::Skipped(reason) => {
            ledger
                .mark_skipped(&report.name, target, occ, reason, now)
                .await
        }
        JobOutcome::Failed { error, retryable } => {
            ledger
                .mark_failed(&report.name, target, occ, error, *retryable, now)
                .await
        }
    }
    .context("cannot record the delivery in the ledger")
}

/// Runs one target's job: what it receives, built and sent.
async fn run_job(
    delivery: &Delivery,
    report: &Report,
    occ: DateTime<Utc>,
    window: &Window,
    job: &Job,
    sections: &mut SharedSections<'_>,
    resend: Option<u32>,
) -> JobOutcome {
    match job {
        Job::Email => {
            let sections = match sections.get().await {
                Ok(s) => s,
                Err(error) => {
                    return JobOutcome::Failed {
                        error,
                        retryable: true,
                    };
                }
            };
            send_email(delivery, report, occ, window, &sections, resend).await
        }
        Job::Recipient(r) => send_to_recipient(delivery, report, occ, window, r, resend).await,
        Job::Destination(d) => {
            let sections = match sections.get().await {
                Ok(s) => s,
                Err(error) => {
                    return JobOutcome::Failed {
                        error,
                        retryable: true,
                    };
                }
            };
            if report.skip_if_empty && sections.iter().all(|s| s.table.rows.is_empty()) {
                return JobOutcome::Skipped("every section was empty (skip_if_empty)".into());
            }
            let target = format!("{}:{}", d.kind.as_str(), d.url_setting);
            super::destinations::deliver(
                delivery.secrets(),
                report,
                occ,
                window,
                d,
                &target,
                &sections,
                resend,
            )
            .await
        }
    }
}

/// One recipient's email: their sections (run with their key), skipped when every one is
/// empty and the report says `skip_if_empty`, else composed for them and sent.
async fn send_to_recipient(
    delivery: &Delivery,
    report: &Report,
    occ: DateTime<Utc>,
    window: &Window,
    recipient: &Recipient,
    resend: Option<u32>,
) -> JobOutcome {
    let mailbox = match &recipient.mailbox {
        Ok(m) => m,
        Err(why) => {
            return JobOutcome::Failed {
                error: format!("not an email address, not sent: {why}"),
                retryable: false,
            };
        }
    };
    let sections = match delivery
        .engine
        .run_report_keyed(report, window, Some(&recipient.key))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return JobOutcome::Failed {
                error: format!("{e:#}"),
                retryable: true,
            };
        }
    };
    if report.skip_if_empty && sections.iter().all(|s| s.table.rows.is_empty()) {
        return JobOutcome::Skipped(
            "every section was empty for this recipient (skip_if_empty)".into(),
        );
    }
    let mut msg = compose_for_recipient(
        report,
        occ,
        window,
        &sections,
        Utc::now(),
        recipient,
        mailbox,
    );
    msg.resend = resend;
    send_message(delivery, report, &msg).await
}

/// The report email for `sections`: skipped when every section is empty and the report says
/// `skip_if_empty`, else composed and sent.
async fn send_email(
    delivery: &Delivery,
    report: &Report,
    occ: DateTime<Utc>,
    window: &Window,
    sections: &[SectionResult],
    resend: Option<u32>,
) -> JobOutcome {
    if report.skip_if_empty && sections.iter().all(|s| s.table.rows.is_empty()) {
        tracing::info!(report = %report.name, "every section was empty; skipped");
        return JobOutcome::Skipped("every section was empty (skip_if_empty)".into());
    }
    let mut msg = compose(report, occ, window, sections, Utc::now());
    msg.resend = resend;
    send_message(delivery, report, &msg).await
}

/// Sends one composed email and classifies the outcome for the ledger.
async fn send_message(
    delivery: &Delivery,
    report: &Report,
    msg: &super::mail::OutgoingReport,
) -> JobOutcome {
    let span = tracing::info_span!(
        "delivery.attempt",
        report.name = %report.name,
        destination.kind = "email",
        delivery.outcome = tracing::field::Empty,
        smtp.reply_class = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let outcome = send_with_password(&delivery.mailer, delivery.secrets(), msg)
        .instrument(span.clone())
        .await;
    record_attempt(&span, &report.name, &outcome);
    drop(span);
    match outcome {
        SendOutcome::Sent {
            message_id,
            accepted,
            rejected,
        } => {
            tracing::info!(report = %report.name, email.message_id = %message_id, recipients = accepted, rejected = rejected.len(), "report sent");
            JobOutcome::Sent {
                message_id,
                accepted,
                rejected,
            }
        }
        SendOutcome::Transient(error) => JobOutcome::Failed {
            error,
            retryable: true,
        },
        SendOutcome::AuthRejected(e) => JobOutcome::Failed {
            error: format!(
                "the SMTP server rejected the credentials (after one refresh of SMTP_PASSWORD): {e}"
            ),
            retryable: true,
        },
        SendOutcome::Permanent(error) => JobOutcome::Failed {
            error,
            retryable: false,
        },
    }
}

/// The attempt's outcome and SMTP reply class on its span, and the delivery counted by report,
/// destination kind and outcome. Only classes and kinds: the server's reply text names
/// recipients, so it never goes on a span or a metric.
fn record_attempt(span: &tracing::Span, report: &str, outcome: &SendOutcome) {
    let (name, class) = match outcome {
        SendOutcome::Sent { .. } => ("sent", "2xx"),
        SendOutcome::Transient(e) => ("transient_failure", reply_class(e)),
        SendOutcome::Permanent(e) => ("permanent_failure", reply_class(e)),
        SendOutcome::AuthRejected(_) => ("auth_rejected", "5xx"),
    };
    span.record("delivery.outcome", name);
    span.record("smtp.reply_class", class);
    if !matches!(outcome, SendOutcome::Sent { .. }) {
        span.record("otel.status_code", "ERROR");
    }
    crate::telemetry::count(
        |m| &m.deliveries,
        &[
            ("report", report.to_string()),
            ("destination.kind", "email".into()),
            ("outcome", name.into()),
        ],
    );
}

/// The class of the SMTP reply a failure text quotes (the mail errors carry the server's code
/// in parentheses, `permanent error (550): …`), or `none` when the server never replied
/// (refused, timed out, TLS). Bare numbers are not codes: a port (`:587`) is not a reply.
fn reply_class(text: &str) -> &'static str {
    let b = text.as_bytes();
    for w in b.windows(5) {
        if w[0] == b'(' && w[4] == b')' && w[1..4].iter().all(u8::is_ascii_digit) {
            match w[1] {
                b'4' => return "4xx",
                b'5' => return "5xx",
                _ => {}
            }
        }
    }
    "none"
}

#[cfg(test)]
mod tests {
    use super::reply_class;

    #[test]
    fn the_reply_class_comes_from_a_quoted_code_only() {
        assert_eq!(
            reply_class("RCPT TO: permanent error (550): no such user"),
            "5xx"
        );
        assert_eq!(reply_class("DATA: transient error (451): try later"), "4xx");
        assert_eq!(
            reply_class("cannot connect to localhost:587: Connection refused"),
            "none"
        );
        assert_eq!(reply_class("timed out after 30 s"), "none");
        assert_eq!(reply_class(""), "none");
    }
}
