//! The command line. With no subcommand the binary runs as the Functions custom handler, which is
//! what `host.json` starts. The other commands are for developers and deployments; each prints
//! errors as one sentence with a hint, never a backtrace.

mod check;
mod deliveries;
mod dev;
mod report;
mod schedule;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::Configuration;
use crate::config::{ConfigError, Settings};

/// report-handler: nightly SQL reports by email and a report API, as an Azure Functions custom handler.
#[derive(Debug, Parser)]
#[command(
    name = "handler",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  handler dev                                      # the whole app on the embedded default, http://127.0.0.1:7071\n  handler check                                    # everything a deployment needs, one OK/FAIL line each\n  handler report run daily-sales --out mail.html   # preview a report's email\n  handler deliveries --report daily-sales          # was it sent?\n\nRun it in the app root (the folder with host.json), or set FUNCTIONS_APP_ROOT_PATH."
)]
pub struct Cli {
    /// What to do; without a subcommand the handler serves the Functions host.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Functions host on 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT (what host.json runs).
    ///
    /// Example: FUNCTIONS_CUSTOMHANDLER_PORT=7072 handler serve
    Serve,

    /// Run the whole app without the Functions host: the API on 127.0.0.1:7071, the tick on the
    /// NightlyReport schedule, email to outbox/ unless SMTP_HOST is set.
    ///
    /// Example: handler dev --port 7071
    Dev(dev::Args),

    /// Check everything a deployment needs; one OK/FAIL line each, exit 1 on any FAIL.
    ///
    /// Example: handler check
    Check(check::Args),

    /// Run a report now.
    ///
    /// Example: handler report run daily-sales --date 2026-11-24 --out report.html
    Report(report::Args),

    /// List recent deliveries from the ledger.
    ///
    /// Example: handler deliveries --report daily-sales
    Deliveries(deliveries::Args),

    /// Print each report's next occurrences, in its own time zone and in UTC.
    ///
    /// Example: handler schedule --count 3
    Schedule(schedule::Args),
}

/// Parses the command line and runs it; the process exit code comes from here.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => run_serve(),
        Command::Schedule(args) => schedule::run(args),
        Command::Dev(args) => dev::run(args),
        Command::Check(args) => check::run(args),
        Command::Report(args) => report::run(args),
        Command::Deliveries(args) => deliveries::run(args),
    }
}

/// The one snapshot of the settings a developer command reads: the environment over
/// `local.settings.json`, as `func start` would provide them.
pub(crate) fn cli_settings() -> Result<Settings, String> {
    let root = std::env::var("FUNCTIONS_APP_ROOT_PATH")
        .map(std::path::PathBuf::from)
        .or_else(|_| std::env::current_dir())
        .map_err(|e| format!("cannot read the working directory: {e}"))?;
    let mut settings = Settings::from_env_and_local_settings(&root).map_err(|e| e.to_string())?;
    settings.set_default("FUNCTIONS_APP_ROOT_PATH", root.display().to_string());
    Ok(settings)
}

/// Reads the configuration for a developer command from [`cli_settings`].
pub(crate) fn cli_config() -> Result<Configuration, String> {
    Configuration::from_settings(&cli_settings()?).map_err(|e| e.to_string())
}

/// Runs a developer command that needs the app: reads the configuration, starts a runtime,
/// composes the [`crate::App`] and hands it to `body`; any failure before that is one line.
pub(crate) fn with_app<F, Fut>(body: F) -> ExitCode
where
    F: FnOnce(crate::App) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let config = match cli_config() {
        Ok(c) => c,
        Err(e) => return fail(format!("{e}\nhint: see the settings table in README.md")),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        match crate::App::new(config) {
            Ok(app) => body(app).await,
            Err(e) => fail(format!("{e}\nhint: see the settings table in README.md")),
        }
    })
}

/// The reports file and the position of report `name` in it, or the failure already printed
/// (an invalid file, an unknown name), for the commands that act on one report.
pub(crate) fn find_report(
    app: &crate::App,
    name: &str,
) -> Result<(std::sync::Arc<crate::report::ReportSet>, usize), ExitCode> {
    let reports = app.engine.reports().map_err(|e| {
        fail(format!(
            "the reports file is invalid:\n{e}\nhint: `handler check` validates the file"
        ))
    })?;
    let Some(i) = reports.reports.iter().position(|r| r.name == name) else {
        return Err(fail(format!(
            "there is no report named `{}`\nhint: `handler schedule` lists the reports",
            crate::api::sanitize(name)
        )));
    };
    Ok((reports, i))
}

pub(crate) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn run_serve() -> ExitCode {
    // The host passes every setting in the environment: one snapshot, parsed once.
    let config = match Configuration::from_settings(&Settings::from_env()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let Some(port) = config.app.host.port else {
        return fail(ConfigError::new(
            "FUNCTIONS_CUSTOMHANDLER_PORT",
            "is not set; the Functions host sets it when it starts the handler (to run without the host, use `handler dev`)",
        ));
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        // Bind first: the host starts pinging GET / at once.
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(e) => return fail(format!("cannot listen on 127.0.0.1:{port}: {e}")),
        };
        crate::telemetry::init(config.app.log_format);
        let telemetry = config.telemetry.clone();
        tracing::info!(port, app_root = %config.app.app_root.display(), "handler listening");
        let app = match crate::App::new(config) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        crate::telemetry::start(telemetry, app.secrets.clone()).await;
        tracing::info!(
            mail = %app.delivery.mailer.describe(),
            credential = %app.secrets.credential_description(),
            ledger = %app.delivery.ledger_description(),
            "configuration read"
        );
        match crate::serve(crate::router(&app), listener, crate::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // Never exit 0 while the host relies on us: a server error is a failure.
                fail(format!("the server stopped: {e}"))
            }
        }
    })
}
