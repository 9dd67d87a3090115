//! `handler dev`: the whole app on the embedded default, with no Functions host or Core Tools.
//!
//! It serves the same public routes `func start` would (`/api/reports…`), plus the admin route
//! Core Tools offers (`POST /admin/functions/NightlyReport`: a tick now, answered 202 at once),
//! runs the NightlyReport tick itself on the schedule of `NightlyReport/function.json` (in UTC,
//! as the host does), and on start delivers each report's most recent "yesterday" into the
//! outbox so a newcomer sees an email within seconds. All of it goes through the same code as
//! under the host: the router, the tick and the ledger.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use crate::App;
use crate::delivery::Delivery;
use crate::delivery::tick::{Request, claim_and_deliver, run_tick};
use crate::functions::{TIMER_FUNCTION, logs::INVOCATION_SPAN};
use crate::report::Schedule;

/// Arguments of `handler dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The port to serve on (127.0.0.1), like `func start`.
    #[arg(long, default_value_t = 7071)]
    pub port: u16,
    /// Do not deliver yesterday's reports at start.
    #[arg(long)]
    pub no_initial_delivery: bool,
}

/// Reads the tick schedule from `NightlyReport/function.json`.
fn tick_schedule(app_root: &Path) -> Result<Schedule, String> {
    let path = app_root.join("NightlyReport/function.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let expr = json["bindings"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["type"] == "timerTrigger"))
        .and_then(|b| b["schedule"].as_str())
        .ok_or_else(|| format!("{} has no timerTrigger schedule", path.display()))?;
    Schedule::parse(expr).map_err(|e| format!("{}: schedule: {e}", path.display()))
}

/// Runs the command.
pub fn run(args: Args) -> ExitCode {
    let mut settings = match super::cli_settings() {
        Ok(s) => s,
        Err(e) => return super::fail(format!("{e}\nhint: see the settings table in README.md")),
    };
    // The overrides of `handler dev` go through the same typed path as every setting.
    let generated_key = if settings.get("API_KEYS").is_none() {
        let key = format!("dev-{}", uuid::Uuid::new_v4().simple());
        settings.set("API_KEYS", key.clone());
        Some(key)
    } else {
        None
    };
    let mut config = match crate::Configuration::from_settings(&settings) {
        Ok(c) => c,
        Err(e) => return super::fail(format!("{e}\nhint: see the settings table in README.md")),
    };
    // `handler dev` keeps its ledger in data/ledger.db (or STATE_DATABASE_URL), even when
    // local.settings.json points AzureWebJobsStorage at Azurite for `func start`.
    config.ledger = config.ledger.local_only();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return super::fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await {
            Ok(l) => l,
            Err(e) => {
                return super::fail(format!(
                    "cannot listen on 127.0.0.1:{}: {e}\nhint: another `func start` or `handler dev` may be running; use --port",
                    args.port
                ));
            }
        };
        crate::telemetry::init(config.app.log_format);
        let telemetry = config.telemetry.clone();
        let app = match App::new(config) {
            Ok(a) => a,
            Err(e) => return super::fail(format!("{e}\nhint: see the settings table in README.md")),
        };
        crate::telemetry::start(telemetry, app.secrets.clone()).await;
        let schedule = match tick_schedule(&app.config.app_root) {
            Ok(s) => s,
            Err(e) => return super::fail(e),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(args.port);
        print_banner(&app, port, generated_key.as_deref(), &schedule);

        if !args.no_initial_delivery {
            let delivery = app.delivery.clone();
            tokio::spawn(async move { initial_delivery(&delivery).await });
        }
        let ticker = {
            let delivery = app.delivery.clone();
            tokio::spawn(async move { tick_loop(delivery, schedule).await })
        };
        let served = crate::serve(dev_router(&app), listener, crate::shutdown_signal()).await;
        ticker.abort();
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::fail(format!("the server stopped: {e}")),
        }
    })
}

/// The router of `handler dev`: the host's routes plus the admin endpoint `func start` offers
/// (`POST /admin/functions/NightlyReport` runs a tick now and answers 202 at once).
fn dev_router(app: &App) -> axum::Router {
    let admin = axum::Router::new()
        .route("/admin/functions/{name}", axum::routing::post(admin_run))
        .with_state(app.delivery.clone());
    crate::router(app).merge(admin)
}

async fn admin_run(
    State(delivery): State<Arc<Delivery>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    if name != TIMER_FUNCTION {
        return (StatusCode::NOT_FOUND, "no such function").into_response();
    }
    tokio::spawn(async move {
        let id = uuid::Uuid::new_v4().to_string();
        let span =
            tracing::info_span!(INVOCATION_SPAN, invocation_id = %id, function = TIMER_FUNCTION);
        tracing::Instrument::instrument(
            async move {
                let now = Utc::now();
                tracing::info!(tick = %now.to_rfc3339(), "NightlyReport tick (manual)");
                if let Err(e) = run_tick(&delivery, now).await {
                    tracing::error!(error.message = %format!("{e:#}"), "NightlyReport failed");
                }
            },
            span,
        )
        .await;
    });
    StatusCode::ACCEPTED.into_response()
}

fn print_banner(app: &App, port: u16, key: Option<&str>, schedule: &Schedule) {
    println!("report-handler dev: http://127.0.0.1:{port}/api/reports");
    println!("  database:    {}", app.engine.database_description());
    println!("  mail:        {}", app.delivery.mailer.describe());
    println!("  ledger:      {}", app.delivery.ledger_description());
    println!("  credential:  {}", app.secrets.credential_description());
    println!("  reports:     {}", app.config.reports_file.display());
    println!(
        "  tick:        \"{}\" (UTC, from NightlyReport/function.json)",
        schedule.expression()
    );
    match key {
        Some(k) => {
            println!("  API key:     {k}   (made for this run; set API_KEYS to choose your own)");
            println!();
            println!(
                "  curl -H 'Authorization: Bearer {k}' http://127.0.0.1:{port}/api/reports/daily-sales"
            );
        }
        None => {
            println!("  API key:     from API_KEYS");
            println!();
            println!(
                "  curl -H \"Authorization: Bearer $YOUR_KEY\" http://127.0.0.1:{port}/api/reports"
            );
        }
    }
    println!(
        "  curl -X POST http://127.0.0.1:{port}/admin/functions/NightlyReport   # run a tick now"
    );
    println!();
}

/// Delivers, for each report, the occurrence that covers "yesterday" (for a `previous_day`
/// report: today's occurrence), through the ledger like any run.
async fn initial_delivery(delivery: &Delivery) {
    let reports = match delivery.engine.reports() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error.message = %e, "the reports file is invalid; nothing delivered");
            return;
        }
    };
    for report in &reports.reports {
        let today = Utc::now().with_timezone(&report.time_zone).date_naive();
        let Some(occ) = report
            .schedule
            .first_on_local_date(report.time_zone, today)
            .or_else(|| {
                report
                    .schedule
                    .previous_before(report.time_zone, Utc::now())
            })
        else {
            continue;
        };
        match claim_and_deliver(delivery, report, occ, Request::Manual { resend: false }).await {
            Ok(outcome) => {
                tracing::info!(report = %report.name, occurrence = %occ.to_rfc3339(), outcome = %outcome, "initial delivery")
            }
            Err(e) => {
                tracing::error!(report = %report.name, error.message = %format!("{e:#}"), "initial delivery failed")
            }
        }
    }
}

/// Runs a tick at each occurrence of the host's timer schedule (UTC).
async fn tick_loop(delivery: Arc<Delivery>, schedule: Schedule) {
    loop {
        let now = Utc::now();
        let Some(next) = schedule.next_after(chrono_tz::UTC, now) else {
            return;
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        let id = uuid::Uuid::new_v4().to_string();
        let span =
            tracing::info_span!(INVOCATION_SPAN, invocation_id = %id, function = TIMER_FUNCTION);
        let _ = tracing::Instrument::instrument(
            async {
                tracing::info!(tick = %next.to_rfc3339(), "NightlyReport tick (dev)");
                if let Err(e) = run_tick(&delivery, next).await {
                    tracing::error!(error.message = %format!("{e:#}"), "NightlyReport failed");
                }
            },
            span,
        )
        .await;
    }
}
