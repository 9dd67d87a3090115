//! `handler schedule`: when each report will next be sent, in its zone and in UTC, so a
//! schedule and its DST behaviour can be checked before staff rely on it.

use std::process::ExitCode;

use chrono::{DateTime, Utc};

use crate::report::ReportSet;

/// Arguments of `handler schedule`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many occurrences to print per report.
    #[arg(long, default_value_t = 5)]
    pub count: usize,
    /// Start from this instant (RFC 3339) instead of now, e.g. to look at a DST change.
    #[arg(long, value_name = "INSTANT")]
    pub from: Option<DateTime<Utc>>,
    /// Only this report.
    #[arg(long, value_name = "NAME")]
    pub report: Option<String>,
}

/// Runs the command.
pub fn run(args: Args) -> ExitCode {
    let config = match super::cli_config() {
        Ok(c) => c,
        Err(e) => return super::fail(e),
    };
    let reports = match ReportSet::load(&config.app.reports_file) {
        Ok(r) => r,
        Err(e) => {
            return super::fail(format!(
                "{e}\nhint: fix the file above; `handler check` validates everything"
            ));
        }
    };
    let from = args.from.unwrap_or_else(Utc::now);
    let mut shown = 0;
    for r in &reports.reports {
        if args.report.as_deref().is_some_and(|n| n != r.name) {
            continue;
        }
        shown += 1;
        println!(
            "{}  schedule \"{}\"  time zone {}  window {}",
            r.name,
            r.schedule.expression(),
            r.time_zone.name(),
            r.window
        );
        let mut t = from;
        for _ in 0..args.count.min(1000) {
            let Some(next) = r.schedule.next_after(r.time_zone, t) else {
                println!("  (no further occurrence)");
                break;
            };
            let local = next.with_timezone(&r.time_zone);
            println!(
                "  {}   {}",
                local.format("%a %Y-%m-%d %H:%M:%S %Z"),
                next.format("%Y-%m-%dT%H:%M:%SZ")
            );
            t = next;
        }
    }
    if shown == 0 {
        if let Some(name) = args.report {
            return super::fail(format!(
                "there is no report named `{}` in {}\nhint: `handler schedule` lists them all",
                crate::api::sanitize(&name),
                config.app.reports_file.display()
            ));
        }
        println!(
            "no reports are defined in {}",
            config.app.reports_file.display()
        );
    }
    ExitCode::SUCCESS
}
