//! # report-handler
//!
//! An Azure Functions custom handler: the Functions host starts this binary, pings `GET /`
//! until it answers, and then POSTs invocations to it.
//!
//! Two functions share one report engine, one secret layer and one data source:
//! - **NightlyReport** (timer): each tick, every report whose schedule is due in its own time
//!   zone is run and emailed exactly once.
//! - **HttpTrigger** (HTTP): the same report data as JSON, CSV or HTML for API clients.
//!
//! The crate root only composes the parts each module owns ([`App`]: the secret layer, the
//! report engine, delivery, the API state) and serves a router; `main.rs` only parses the
//! command line, so tests run exactly the code production runs. Dependencies point one way:
//! `functions`, `api` and `cli` use `delivery` and `report`; `delivery` uses `report`, `render`
//! and the ledger; `report` uses `data`; whatever needs a secret asks `secrets`; nothing below
//! uses the crate root.

pub mod api;
pub mod cli;
pub mod config;
pub mod data;
pub mod delivery;
pub mod functions;
pub mod render;
pub mod report;
pub mod secrets;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use api::ApiState;
use api::health::Health;
use config::{Config, ConfigError, Settings};
use delivery::{Delivery, LedgerSettings, MailSettings, Mailer};
use functions::HostState;
use report::engine::{EngineSettings, ReportEngine};
use secrets::{SecretSetting, Secrets, SecretsSettings};

/// How long in-flight requests may take to finish after SIGTERM/SIGINT.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Every setting, parsed once at start from one snapshot into typed values: the app's own
/// ([`Config`]) and those of the parts that own settings. Errors name the setting, never its
/// value. `handler dev`'s overrides (its generated API key) are made on the snapshot, so they
/// take this same path.
#[derive(Debug, Clone)]
pub struct Configuration {
    /// App root, route prefix, reports file, log format, limits, host context.
    pub app: Config,
    /// The secret settings (plain values or parsed Key Vault references), cache TTL,
    /// credential, CA bundle.
    pub secrets: SecretsSettings,
    /// The mail transport and sender.
    pub mail: MailSettings,
    /// Where the delivery ledger lives besides `STATE_DATABASE_URL`: the app's storage
    /// account (`AzureWebJobsStorage`, `LEDGER_TABLE`).
    pub ledger: LedgerSettings,
    /// The telemetry exporters (`OTEL_*`; the Application Insights connection string is a
    /// secret setting and lives with the others).
    pub telemetry: telemetry::TelemetrySettings,
}

impl Configuration {
    /// Parses and validates everything; nothing reads `settings` afterwards.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self {
            app: Config::from_settings(settings)?,
            secrets: SecretsSettings::from_settings(settings)?,
            mail: MailSettings::from_settings(settings)?,
            ledger: LedgerSettings::from_settings(settings)?,
            telemetry: telemetry::TelemetrySettings::from_settings(settings)?,
        })
    }

    /// Why a plain (not Key Vault) `API_KEYS` value would be refused, if it would: a weak key,
    /// or a malformed JSON document (either form, `api::auth::ApiKeys::parse`). Key Vault
    /// values are checked when they are resolved.
    pub fn api_keys_problem(&self) -> Option<api::auth::KeysError> {
        let value = self.secrets.plain_value(SecretSetting::ApiKeys)?;
        api::auth::validate_keys(value).err()
    }
}

/// The parts of the app, composed once at start. Building them does no network work, so the
/// handler answers the host's readiness ping before any database, vault or SMTP connection.
#[derive(Debug)]
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// Key Vault references and plain secret settings, resolved lazily and cached.
    pub secrets: Secrets,
    /// The report definitions, the data source, running a report.
    pub engine: Arc<ReportEngine>,
    /// The ledger, the mailer and the claim lease.
    pub delivery: Arc<Delivery>,
    /// The report API's state.
    pub api: ApiState,
    /// `GET /api/health`: the deployment's checks, cached briefly.
    pub health: Arc<Health>,
}

impl App {
    /// Composes the parts from a validated configuration. Reads the reports file (a broken
    /// file is kept as an error the API and the timer report, not a start-up failure).
    pub fn new(configuration: Configuration) -> Result<Self, ConfigError> {
        let secrets = Secrets::new(&configuration.secrets)?;
        let mailer = Mailer::new(configuration.mail.clone());
        if let Some(err) = configuration.api_keys_problem() {
            tracing::error!(error.message = %err, "API_KEYS is refused; the API answers 503 until it is fixed");
        }
        let config = configuration.app;
        let limits = config.limits;
        let engine = Arc::new(ReportEngine::new(
            &EngineSettings {
                reports_file: config.reports_file.clone(),
                app_root: config.app_root.clone(),
                query_timeout: limits.query_timeout,
                max_rows: limits.max_rows,
            },
            secrets.clone(),
        ));
        let delivery = Arc::new(Delivery::new(
            engine.clone(),
            mailer,
            secrets.clone(),
            configuration.ledger,
            &config.app_root,
            limits.claim_lease,
        ));
        let api = ApiState::new(
            engine.clone(),
            secrets.clone(),
            limits.max_range_days,
            config.reports_path(),
            Some(delivery.clone()),
        );
        let health = Arc::new(Health::new(delivery.clone()));
        Ok(Self {
            config,
            secrets,
            engine,
            delivery,
            api,
            health,
        })
    }

    /// The state of the host's routes.
    pub fn host_state(&self) -> HostState {
        HostState {
            api: self.api.clone(),
            delivery: self.delivery.clone(),
            health: self.health.clone(),
            health_path: self.config.health_path(),
        }
    }
}

/// The router the host talks to.
pub fn router(app: &App) -> axum::Router {
    functions::router(app.host_state())
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    router: axum::Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => return res.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        _ = rx => {}
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
        Ok(res) => res.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        Err(_) => {
            tracing::warn!("in-flight requests did not finish within the shutdown grace period");
            server.abort();
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
