//! `handler deliveries`: the delivery ledger, newest first, so "was it sent?" has an answer.
//! Rows an operator sent by hand are marked `[manual]` or `[resend]`; the rows of a report that
//! fans out (recipients, destinations) show their target after `->`.

use std::process::ExitCode;

use crate::delivery::Origin;

/// Arguments of `handler deliveries`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this report.
    #[arg(long, value_name = "NAME")]
    pub report: Option<String>,
    /// How many rows.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// Runs the command.
pub fn run(args: Args) -> ExitCode {
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
