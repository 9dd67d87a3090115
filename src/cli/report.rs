//! `handler report run NAME`: renders one report now, to the terminal, to an HTML file, or as
//! the real email through the configured transport (recorded in the ledger like a tick).

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{NaiveDate, Utc};

use crate::delivery::DeliveryState;
use crate::delivery::tick::{Delivered, Request, claim_and_deliver};
use crate::report::{Window, WindowKind};

/// Arguments of `handler report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do with a report.
    #[command(subcommand)]
    pub action: Action,
}

/// `handler report` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Run one report now.
    ///
    /// Examples:
    ///   handler report run daily-sales                          # yesterday, as text
    ///   handler report run daily-sales --date 2026-11-24 --out report.html   # the email
    ///   handler report run daily-sales --out report.xlsx        # the workbook
    ///   handler report run daily-sales --out chart.png --section 1   # one section's chart
    ///   handler report run daily-sales --send                   # email it (recorded in the ledger)
    ///   handler report run daily-sales --date 2026-11-24 --resend   # again, though it was sent
    ///   handler report run team-tickets --recipient ann@example.com   # one recipient's email
    ///   handler report run daily-sales --send --destination teams   # post to its Teams channel only
    ///
    /// `--send` also sends an occurrence the ledger recorded as skipped or failed; one already
    /// sent needs `--resend`. The command exits 1 when it was asked to send and sent nothing.
    /// `--destination` sends to one target of the occurrence only (its own ledger row); the
    /// schedule still delivers the others, and never this one again once it is sent.
    #[command(verbatim_doc_comment)]
    Run {
        /// The report's name in reports.toml.
        name: String,
        /// The local date reported on (default: the most recent completed window).
        #[arg(long, value_name = "YYYY-MM-DD")]
        date: Option<NaiveDate>,
        /// Send the email through the configured transport (SMTP or the outbox).
        #[arg(long, conflicts_with = "out")]
        send: bool,
        /// Send it even if it was already sent (implies --send; recorded as a manual resend,
        /// with its own Message-ID).
        #[arg(long, conflicts_with = "out")]
        resend: bool,
        /// Write a file instead of printing text: by its extension the email's HTML (charts
        /// embedded, so it opens in a browser), the `.xlsx` workbook or a section's `.png`
        /// chart (with --section).
        #[arg(long, value_name = "FILE.html|FILE.xlsx|FILE.png")]
        out: Option<PathBuf>,
        /// The section (counted from 1) whose chart `--out FILE.png` writes.
        #[arg(long, value_name = "N", requires = "out")]
        section: Option<usize>,
        /// A per-recipient report (`recipients_query`): this recipient's email (their rows,
        /// their subject) instead of the report's; with --send, sent to them alone.
        #[arg(long, value_name = "ADDRESS", conflicts_with = "destination")]
        recipient: Option<String>,
        /// With --send: only this destination, by kind (`teams`, `slack`, `webhook`, `email`)
        /// when the report has one of that kind, or as `handler deliveries` shows it
        /// (`teams:TEAMS_WEBHOOK_SALES`).
        #[arg(long, value_name = "KIND|KIND:SETTING", conflicts_with = "out")]
        destination: Option<String>,
    },
}

/// Runs the command.
pub fn run(args: Args) -> ExitCode {
    let Action::Run {
        name,
        date,
        send,
        resend,
        out,
        section,
        recipient,
        destination,
    } = args.action;
    let send = send || resend || destination.is_some();
    super::with_app(|app| async move {
        let (reports, i) = match super::find_report(&app, &name) {
            Ok(found) => found,
            Err(code) => return code,
        };
        let report = &reports.reports[i];
        let now = Utc::now();
        // The occurrence whose window covers the asked date, as the nightly run would.
        let occurrence = match date {
            Some(d) => occurrence_for_date(report, d),
            None => report
                .schedule
                .previous_before(report.time_zone, now + chrono::Duration::seconds(1)),
        };
        let Some(occurrence) = occurrence else {
            return super::fail(
                "the schedule has no occurrence for that date\nhint: `handler schedule` shows when it fires",
            );
        };
        if recipient.is_some() && report.recipients_query.is_none() {
            return super::fail(format!(
                "--recipient applies to a per-recipient report (one with `recipients_query`); {} sends one email to its `recipients`",
                report.name
            ));
        }
        if send && let Some(address) = &recipient {
            return send_to_recipient(&app, report, occurrence, address, resend).await;
        }
        if let Some(wanted) = destination {
            return send_one_target(&app.delivery, report, occurrence, &wanted, resend).await;
        }
        if send {
            let request = Request::Manual { resend };
            return match claim_and_deliver(&app.delivery, report, occurrence, request).await {
                Ok(Delivered::Sent) => {
                    println!(
                        "{}: {} (occurrence {})",
                        report.name,
                        if resend { "sent again" } else { "sent" },
                        occurrence.to_rfc3339()
                    );
                    ExitCode::SUCCESS
                }
                Ok(outcome) => {
                    let why = match outcome {
                        Delivered::AlreadyDone(DeliveryState::Sent) => {
                            "it was already sent earlier (see `handler deliveries`)\nhint: add --resend to send it again".to_string()
                        }
                        Delivered::Skipped if report.condition.is_some() => "the condition was false (or every section is empty with skip_if_empty = true); recorded as skipped".to_string(),
                        Delivered::Skipped => "every section is empty and the report has skip_if_empty = true; recorded as skipped".to_string(),
                        other => other.to_string(),
                    };
                    eprintln!(
                        "error: {}: nothing sent for the occurrence {}: {why}",
                        report.name,
                        occurrence.to_rfc3339()
                    );
                    ExitCode::from(1)
                }
                Err(e) => super::fail(format!(
                    "{e:#}\nhint: `handler check` tests the mail settings"
                )),
            };
        }
        let window = Window::for_occurrence(&report.timing(), occurrence);
        if let Some(address) = &recipient {
            return preview_recipient(&app, report, occurrence, &window, address, out, section)
                .await;
        }
        if report.recipients_query.is_some() {
            eprintln!(
                "note: {} is a per-recipient report: without --recipient ADDRESS its sections run with :recipient_key = NULL",
                report.name
            );
        }
        if let Some(path) = out.as_deref().filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("xlsx"))
        }) {
            // Streamed from the database into the workbook, so its memory does not grow with
            // the rows (a million-row section stays in tens of MB).
            return match write_xlsx_streamed(&app.engine, report, &window, path).await {
                Ok(()) => {
                    println!(
                        "wrote {} ({})",
                        path.display(),
                        report.render_subject(&window)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => super::fail(e),
            };
        }
        let sections = match app.engine.run_report(report, &window).await {
            Ok(s) => s,
            Err(e) => {
                return super::fail(format!("{e}\nhint: `handler check` prepares every query"));
            }
        };
        let msg = crate::delivery::email::compose(report, occurrence, &window, &sections, now);
        write_or_print(out, section, report, &sections, &msg)
    })
}

/// The occurrence whose window reports on the local date `d`, as the nightly run would send
/// it: for a `previous_day` report the next day's occurrence.
pub(super) fn occurrence_for_date(
    report: &crate::report::Report,
    d: NaiveDate,
) -> Option<chrono::DateTime<Utc>> {
    let day = if report.window == WindowKind::PreviousDay {
        d.succ_opt().unwrap_or(d)
    } else {
        d
    };
    report.schedule.first_on_local_date(report.time_zone, day)
}

fn parse_address(address: &str) -> Result<lettre::Address, String> {
    address.trim().parse::<lettre::Address>().map_err(|e| {
        format!(
            "`{}` is not an email address ({e})",
            crate::api::sanitize(address)
        )
    })
}

/// Sends one occurrence of a per-recipient report to one recipient (`report run --recipient
/// --send`, `deliveries resend --recipient`), each of their keys on its own ledger row, and
/// prints what happened to each. Exit 1 when nothing was sent.
pub(super) async fn send_to_recipient(
    app: &crate::App,
    report: &crate::report::Report,
    occurrence: chrono::DateTime<Utc>,
    address: &str,
    resend: bool,
) -> ExitCode {
    use crate::delivery::occurrence::{JobOutcome, RecipientSend, deliver_to_address};
    let address = match parse_address(address) {
        Ok(a) => a,
        Err(e) => return super::fail(e),
    };
    let results = match deliver_to_address(&app.delivery, report, occurrence, &address, resend)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return super::fail(format!(
                "{e:#}\nhint: `handler report run {} --recipient ADDRESS` previews a recipient's email",
                report.name
            ));
        }
    };
    let mut sent = 0;
    for (target, result) in results {
        let what = match result {
            RecipientSend::Done(JobOutcome::Sent { .. }) => {
                sent += 1;
                if resend { "sent again" } else { "sent" }.to_string()
            }
            RecipientSend::Done(JobOutcome::Skipped(why)) => format!("skipped: {why}"),
            RecipientSend::Done(JobOutcome::Failed { error, .. }) => format!("failed: {error}"),
            RecipientSend::AlreadyDone(DeliveryState::Sent) => {
                "already sent earlier (add --resend, or use `handler deliveries resend`)".into()
            }
            RecipientSend::AlreadyDone(state) => format!("already {state}"),
            RecipientSend::Busy => "being delivered by another process".into(),
        };
        println!(
            "{} -> {target}: {what} (occurrence {})",
            report.name,
            occurrence.to_rfc3339()
        );
    }
    if sent == 0 {
        eprintln!("error: {}: nothing sent", report.name);
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// `report run --recipient ADDRESS` without --send: that recipient's email, printed as text or
/// written as HTML (or a section's chart), nothing sent. With several keys for the address, the
/// first one's.
async fn preview_recipient(
    app: &crate::App,
    report: &crate::report::Report,
    occurrence: chrono::DateTime<Utc>,
    window: &Window,
    address: &str,
    out: Option<PathBuf>,
    section: Option<usize>,
) -> ExitCode {
    let address = match parse_address(address) {
        Ok(a) => a,
        Err(e) => return super::fail(e),
    };
    if out
        .as_deref()
        .and_then(|p| p.extension())
        .is_some_and(|e| e.eq_ignore_ascii_case("xlsx"))
    {
        return super::fail(
            "--out FILE.xlsx writes the report's workbook for no recipient; with --recipient write FILE.html",
        );
    }
    let list =
        match crate::delivery::occurrence::expand_recipients(&app.delivery, report, window).await {
            Ok(l) => l,
            Err(e) => {
                return super::fail(format!("{e}\nhint: `handler check` prepares every query"));
            }
        };
    let mine: Vec<_> = list.iter().filter(|r| r.has_address(&address)).collect();
    let Some(r) = mine.first() else {
        return super::fail(format!(
            "{address} is not among the recipients that recipients_query returns for the occurrence {}",
            occurrence.to_rfc3339()
        ));
    };
    if mine.len() > 1 {
        eprintln!(
            "note: the query returns {address} {} times (one email per key); this is the first, key {}",
            mine.len(),
            r.key
        );
    }
    let Ok(mailbox) = &r.mailbox else {
        return super::fail(format!("{address} is not a valid recipient"));
    };
    let sections = match app
        .engine
        .run_report_keyed(report, window, Some(&r.key))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return super::fail(format!("{e}\nhint: `handler check` prepares every query"));
        }
    };
    let msg = crate::delivery::email::compose_for_recipient(
        report,
        occurrence,
        window,
        &sections,
        Utc::now(),
        r,
        mailbox,
    );
    write_or_print(out, section, report, &sections, &msg)
}

/// The email of a preview: written to `--out` (as the file's extension asks), else its subject
/// and text part printed.
fn write_or_print(
    out: Option<PathBuf>,
    section: Option<usize>,
    report: &crate::report::Report,
    sections: &[crate::render::SectionResult],
    msg: &crate::delivery::OutgoingReport,
) -> ExitCode {
    match out {
        Some(path) => {
            let bytes = match out_file(&path, section, report, sections, msg) {
                Ok(b) => b,
                Err(e) => return super::fail(e),
            };
            match std::fs::write(&path, bytes) {
                Ok(()) => {
                    println!("wrote {} ({})", path.display(), msg.subject);
                    ExitCode::SUCCESS
                }
                Err(e) => super::fail(format!("cannot write {}: {e}", path.display())),
            }
        }
        None => {
            println!("Subject: {}\n", msg.subject);
            print!("{}", msg.text);
            ExitCode::SUCCESS
        }
    }
}

/// `--send --destination X`: one target of the occurrence, now (see `Action::Run`).
async fn send_one_target(
    delivery: &crate::delivery::Delivery,
    report: &crate::report::Report,
    occurrence: chrono::DateTime<Utc>,
    wanted: &str,
    resend: bool,
) -> ExitCode {
    use crate::delivery::occurrence::{deliver_one_target, find_target};
    let (target, job) = match find_target(report, wanted) {
        Ok(t) => t,
        Err(e) => return super::fail(e),
    };
    match deliver_one_target(delivery, report, occurrence, &target, &job, resend).await {
        Ok(Delivered::Sent) => {
            println!(
                "{}: {} to {target} (occurrence {})",
                report.name,
                if resend { "sent again" } else { "sent" },
                occurrence.to_rfc3339()
            );
            ExitCode::SUCCESS
        }
        Ok(outcome) => {
            let why = match outcome {
                Delivered::AlreadyDone(DeliveryState::Sent) => {
                    "it was already sent earlier (see `handler deliveries`)\nhint: add --resend to send it again".to_string()
                }
                Delivered::Skipped => "the condition was false or every section is empty (skip_if_empty); recorded as skipped".to_string(),
                other => other.to_string(),
            };
            eprintln!(
                "error: {}: nothing sent to {target} for the occurrence {}: {why}",
                report.name,
                occurrence.to_rfc3339()
            );
            ExitCode::from(1)
        }
        Err(e) => super::fail(format!(
            "{target}: {e:#}\nhint: `handler check` checks each destination's setting"
        )),
    }
}

/// Writes the report's workbook to `path`, streamed from the database into the builder
/// ([`crate::report::workbook::stream_workbook`], constant memory), then renamed into place so
/// a failure leaves no half-written file.
async fn write_xlsx_streamed(
    engine: &crate::report::ReportEngine,
    report: &crate::report::Report,
    window: &Window,
    path: &std::path::Path,
) -> Result<(), String> {
    let bytes = crate::report::workbook::stream_workbook(engine, report, window, || Ok(()))
        .await
        .map_err(|e| format!("{e}\nhint: `handler check` prepares every query"))?
        .bytes;
    let tmp = path.with_extension("xlsx.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The bytes `--out FILE.html|FILE.png` writes, chosen by the file's extension (`.xlsx` is
/// streamed by [`write_xlsx_streamed`]).
fn out_file(
    path: &std::path::Path,
    section: Option<usize>,
    report: &crate::report::Report,
    sections: &[crate::render::SectionResult],
    msg: &crate::delivery::OutgoingReport,
) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "png" => {
            let n = section.ok_or("--out FILE.png needs --section N (counted from 1)")?;
            let s = n
                .checked_sub(1)
                .and_then(|i| sections.get(i))
                .ok_or_else(|| {
                    format!("--section: the report has {} section(s)", sections.len())
                })?;
            if s.display.chart.is_none() {
                return Err(format!("section {n} has no chart in reports.toml"));
            }
            crate::render::chart::render_section_png(s, report.locale)
                .map(|c| c.png)
                .ok_or_else(|| format!("section {n} has no rows in this window, so no chart"))
        }
        _ => {
            // The email's HTML, with each `cid:` image embedded so the file shows it.
            let mut html = msg.html.clone();
            for image in &msg.inline_images {
                let uri = format!(
                    "data:image/png;base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(&image.png)
                );
                html = html.replace(&format!("cid:{}", image.content_id), &uri);
            }
            Ok(html.into_bytes())
        }
    }
}
