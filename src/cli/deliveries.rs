//! `handler deliveries`: the delivery ledger, newest first, so "was it sent?" has an answer.
//! Rows an operator sent by hand are marked `[manual]` or `[resend]`; the rows of a report that
//! fans out (recipients, destinations) show their target after `->`. `handler deliveries
//! resend` sends a recorded occurrence again on purpose (one recipient with `--recipient`).

use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::delivery::Origin;
use crate::delivery::tick::{Delivered, Request, claim_and_deliver};

/// Arguments of `handler deliveries`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// `resend`; without one, the list.
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Only this report.
    #[arg(long, value_name = "NAME")]
    pub report: Option<String>,
    /// How many rows.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// `handler deliveries` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Deliberately send an occurrence again: a new attempt, recorded as a manual resend (with
    /// its own Message-ID).
    ///
    /// OCCURRENCE is the UTC time `handler deliveries` prints ("2026-11-26 06:00:00", quoted),
    /// an RFC 3339 instant (2026-11-26T06:00:00Z), or the local date reported on (YYYY-MM-DD,
    /// as `handler report run --date`). Only an occurrence the ledger has recorded is re-sent.
    ///
    /// Examples:
    ///   handler deliveries resend daily-sales "2026-11-26 06:00:00"
    ///   handler deliveries resend team-tickets 2026-11-26T06:00:00Z --recipient ann@example.com
    #[command(verbatim_doc_comment)]
    Resend {
        /// The report's name in reports.toml.
        report: String,
        /// The occurrence, as above.
        occurrence: String,
        /// For a per-recipient report (`recipients_query`): only this recipient's email is sent
        /// again (each of their keys, if the query returns the address more than once).
        #[arg(long, value_name = "ADDRESS")]
        recipient: Option<String>,
    },
}

/// Runs the command.
pub fn run(args: Args) -> ExitCode {
    if let Some(Action::Resend {
        report,
        occurrence,
        recipient,
    }) = args.action
    {
        return resend(report, occurrence, recipient);
    }
    super::with_app(|app| async move {
        let ledger = match app.delivery.ledger().await {
            Ok(l) => l,
            Err(e) => {
                return super::fail(format!(
                    "{}: {e:#}\nhint: check STATE_DATABASE_URL or AzureWebJobsStorage (`handler check` tells which the ledger uses)",
                    app.delivery.ledger_description()
                ));
            }
        };
        let rows = match ledger
            .recent(args.report.as_deref(), args.limit.clamp(1, 10_000))
            .await
        {
            Ok(r) => r,
            Err(e) => return super::fail(format!("{e:#}")),
        };
        if rows.is_empty() {
            println!("no deliveries recorded yet");
            return ExitCode::SUCCESS;
        }
        println!(
            "{:<20} {:<21} {:<8} {:>3} {:>4}  DETAIL",
            "REPORT", "OCCURRENCE (UTC)", "STATE", "TRY", "RCPT"
        );
        for r in rows {
            let detail = match (&r.message_id, &r.last_error) {
                (_, Some(e)) => e.clone(),
                (Some(m), None) => m.clone(),
                (None, None) => String::new(),
            };
            let detail: String = detail.chars().take(100).collect();
            let detail = match r.origin {
                Origin::Schedule => detail,
                other => format!("[{other}] {detail}"),
            };
            // A fanned-out occurrence's targets follow its own row, named by kind and
            // recipient or setting (never a URL).
            let detail = if r.target.is_occurrence() {
                detail
            } else {
                format!("-> {} {detail}", r.target)
            };
            println!(
                "{:<20} {:<21} {:<8} {:>3} {:>4}  {}{}",
                r.report,
                r.occurrence.format("%Y-%m-%d %H:%M:%S"),
                r.state.as_str(),
                r.attempts,
                r.recipients,
                detail,
                if r.rejected.is_empty() {
                    String::new()
                } else {
                    format!(" (rejected: {})", r.rejected.len())
                }
            );
        }
        ExitCode::SUCCESS
    })
}

/// The occurrence an operator names: the UTC time `handler deliveries` prints, an RFC 3339
/// instant, or the local date reported on (the occurrence `handler report run --date` means).
pub(super) fn parse_occurrence(
    text: &str,
    report: &crate::report::Report,
) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(naive.and_utc());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return super::report::occurrence_for_date(report, date).ok_or_else(|| {
            format!(
                "the schedule of {} has no occurrence for {date}",
                report.name
            )
        });
    }
    Err(format!(
        "`{}` is not an occurrence: write the UTC time `handler deliveries` prints \
         (\"2026-11-26 06:00:00\"), an RFC 3339 instant (2026-11-26T06:00:00Z) or the date \
         reported on (2026-11-25)",
        crate::api::sanitize(t)
    ))
}

fn resend(name: String, occurrence: String, recipient: Option<String>) -> ExitCode {
    super::with_app(|app| async move {
        let (reports, i) = match super::find_report(&app, &name) {
            Ok(found) => found,
            Err(code) => return code,
        };
        let report = &reports.reports[i];
        let occ = match parse_occurrence(&occurrence, report) {
            Ok(o) => o,
            Err(e) => return super::fail(e),
        };
        let ledger = match app.delivery.ledger().await {
            Ok(l) => l,
            Err(e) => return super::fail(format!("{e:#}")),
        };
        match ledger.occurrence_rows(&report.name, occ).await {
            Ok(rows) if rows.is_empty() => {
                return super::fail(format!(
                    "no delivery of {} at {} is recorded, so there is nothing to send again\nhint: `handler deliveries --report {}` lists the occurrences; `handler report run --send` sends one",
                    report.name,
                    occ.to_rfc3339(),
                    report.name
                ));
            }
            Ok(_) => {}
            Err(e) => return super::fail(format!("{e:#}")),
        }
        match recipient {
            Some(address) => {
                super::report::send_to_recipient(&app, report, occ, &address, true).await
            }
            None => {
                let request = Request::Manual { resend: true };
                match claim_and_deliver(&app.delivery, report, occ, request).await {
                    Ok(Delivered::Sent) => {
                        println!(
                            "{}: sent again (occurrence {})",
                            report.name,
                            occ.to_rfc3339()
                        );
                        ExitCode::SUCCESS
                    }
                    Ok(other) => {
                        eprintln!(
                            "error: {}: nothing sent for the occurrence {}: {other}",
                            report.name,
                            occ.to_rfc3339()
                        );
                        ExitCode::from(1)
                    }
                    Err(e) => super::fail(format!(
                        "{e:#}\nhint: `handler deliveries --report {}` shows each target",
                        report.name
                    )),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_occurrence;
    use chrono::{TimeZone, Utc};

    #[test]
    fn an_occurrence_is_written_as_printed_as_rfc3339_or_as_the_reported_date() {
        let set = crate::report::ReportSet::parse(
            "[[reports]]\nname = \"d\"\nschedule = \"0 0 6 * * *\"\ntime_zone = \"Europe/Berlin\"\nrecipients = [\"a@example.com\"]\n[[reports.sections]]\ntitle = \"S\"\nquery = \"SELECT 1\"\n",
            "reports.toml",
        )
        .unwrap();
        let r = &set.reports[0];
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 5, 0, 0).unwrap();
        for text in [
            "2026-11-26 05:00:00",
            " 2026-11-26 05:00 ",
            "2026-11-26T05:00:00Z",
            "2026-11-26T06:00:00+01:00",
            // The day reported on: the previous day's window is sent at 06:00 Berlin next day.
            "2026-11-25",
        ] {
            assert_eq!(parse_occurrence(text, r), Ok(at), "{text}");
        }
        let e = parse_occurrence("yesterday\n", r).unwrap_err();
        assert!(
            e.contains("is not an occurrence") && !e.contains('\n'),
            "{e}"
        );
    }
}
