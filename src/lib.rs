//! # report-handler
//!
//! An Azure Functions custom handler: the Functions host starts this binary, pings `GET /`
//! until it answers, and then POSTs invocations to it (`functions-protocol.md`).
//!
//! Two functions share one report engine, one secret layer and one data source:
//! - **NightlyReport** (timer): each tick, every report whose schedule is due in its own time
//!   zone is run and emailed exactly once.
//! - **HttpTrigger** (HTTP): the same report data as JSON, CSV or HTML for API clients.
//!
//! The [`App`] holds the shared state and [`router`] builds the HTTP surface; `main.rs` only
//! parses the command line, so tests run exactly the code production runs.

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

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use config::{Config, ConfigError};
use data::{DataError, DataSource, QueryParams};
use delivery::{Ledger, MailSettings, Mailer};
use render::SectionResult;
use report::{Report, ReportSet, Window};
use secrets::{SecretError, SecretSetting, Secrets};

/// How long in-flight requests may take to finish after SIGTERM/SIGINT.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Errors of running a report, classified for the HTTP API (503 vs 500) and the timer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A secret (the database URL) cannot be had right now.
    #[error("{0}")]
    Secret(#[from] SecretError),
    /// The database failed: down, too slow, authentication, or the SQL itself.
    #[error("{0}")]
    Data(#[from] DataError),
}

/// The state shared by every request. Building it does no network work, so the handler answers
/// the host's readiness ping before any database, vault or SMTP connection is made.
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// Key Vault references and plain secret settings, resolved lazily and cached.
    pub secrets: Secrets,
    /// The mail transport (SMTP or the outbox).
    pub mailer: Mailer,
    /// Single flight and cache of report runs for the API.
    pub flights: api::cache::Flights,
    /// `MAX_RANGE_DAYS`: the longest explicit window the API accepts.
    pub max_range_days: u32,
    /// `QUERY_TIMEOUT`: the statement timeout of report queries.
    pub query_timeout: Duration,
    /// `MAX_ROWS`: a safety cap on rows per section.
    pub max_rows: usize,
    /// `CLAIM_LEASE`: how long a delivery claim protects an occurrence before another tick may
    /// take it over (default 15 min, longer than `functionTimeout`).
    pub claim_lease: Duration,
    reports: Result<Arc<ReportSet>, String>,
    report_list: Option<api::cache::Rendered>,
    data: tokio::sync::Mutex<Option<([u8; 32], DataSource)>>,
    sample_ready: tokio::sync::OnceCell<()>,
    ledger: tokio::sync::OnceCell<Ledger>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("app_root", &self.config.app_root)
            .field("mailer", &self.mailer.describe())
            .finish_non_exhaustive()
    }
}

/// The delivery ledger's SQLite file when `STATE_DATABASE_URL` is not set.
pub const DEFAULT_LEDGER_FILE: &str = "data/ledger.db";

/// The embedded sample database, used when `DATABASE_URL` is not set.
pub const SAMPLE_DATABASE: &str = "data/sample.sqlite";

impl App {
    /// Builds the shared state from a validated configuration. Reads the reports file (a
    /// broken file is kept as an error the API and the timer report, not a start-up failure).
    pub fn new(config: Config) -> Result<Arc<Self>, ConfigError> {
        let secrets = Secrets::new(&secrets::SecretsSettings::from_settings(&config.settings)?)?;
        let mailer = Mailer::new(MailSettings::from_settings(&config.settings)?);
        let max_range_days = config
            .settings
            .parsed::<u32>("MAX_RANGE_DAYS", "a whole number of days")?
            .unwrap_or(31);
        let query_timeout = config
            .settings
            .duration("QUERY_TIMEOUT")?
            .unwrap_or(Duration::from_secs(30));
        let max_rows = config
            .settings
            .parsed::<usize>("MAX_ROWS", "a whole number")?
            .unwrap_or(1_000_000);
        let claim_lease = config
            .settings
            .duration("CLAIM_LEASE")?
            .unwrap_or(delivery::tick::CLAIM_LEASE);
        if claim_lease.is_zero() {
            return Err(ConfigError::new("CLAIM_LEASE", "must be more than zero"));
        }
        let reports = ReportSet::load(&config.reports_file)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        if let Err(e) = &reports {
            tracing::error!(error.message = %e, "the reports file is invalid; the API answers 503 and ticks fail until it is fixed");
        }
        if let Some(err) = plain_api_keys_problem(&config, &secrets) {
            tracing::error!(error.message = %err, "API_KEYS is refused; the API answers 503 until it is fixed");
        }
        let report_list = reports.as_ref().ok().map(|r| api::list_body(r));
        Ok(Arc::new(Self {
            config,
            secrets,
            mailer,
            flights: Default::default(),
            max_range_days,
            query_timeout,
            max_rows,
            claim_lease,
            reports,
            report_list,
            data: tokio::sync::Mutex::new(None),
            sample_ready: tokio::sync::OnceCell::new(),
            ledger: tokio::sync::OnceCell::new(),
        }))
    }

    /// The body and ETag of the report list, built once at start (empty when the reports file
    /// is invalid; the API answers 503 before asking).
    pub fn report_list(&self) -> api::cache::Rendered {
        self.report_list
            .clone()
            .unwrap_or_else(|| api::cache::Rendered::new("{\"reports\":[]}".into()))
    }

    /// The report definitions, or why they could not be loaded.
    pub fn reports(&self) -> Result<Arc<ReportSet>, String> {
        self.reports.clone()
    }

    /// The report database. `DATABASE_URL` comes through the secret layer; when its value
    /// changes (a rotation), a new pool is made. Unset: the embedded sample SQLite database.
    pub async fn data_source(&self) -> Result<DataSource, EngineError> {
        let url = if self.secrets.is_configured(SecretSetting::DatabaseUrl) {
            self.secrets.get(SecretSetting::DatabaseUrl).await?
        } else {
            let path = self.config.app_root.join(SAMPLE_DATABASE);
            // Checked (and created) once per process, not on every request.
            self.sample_ready
                .get_or_try_init(|| {
                    crate::data::sample::ensure_sample_database(&path, Utc::now().date_naive())
                })
                .await
                .map_err(|e| {
                    DataError::Unavailable(format!("the sample database cannot be created: {e:#}"))
                })?;
            SecretString::from(format!("sqlite:{}", path.display()))
        };
        let fingerprint: [u8; 32] = Sha256::digest(url.expose_secret().as_bytes()).into();
        let mut guard = self.data.lock().await;
        if let Some((fp, ds)) = guard.as_ref()
            && *fp == fingerprint
        {
            return Ok(ds.clone());
        }
        let ds = DataSource::from_url(&url, self.query_timeout)?;
        *guard = Some((fingerprint, ds.clone()));
        Ok(ds)
    }

    /// Runs every section of `report` for `window`, read-only.
    pub async fn run_report(
        &self,
        report: &Report,
        window: &Window,
    ) -> Result<Vec<SectionResult>, EngineError> {
        let ds = self.data_source().await?;
        let params = QueryParams {
            start: window.start,
            end: window.end,
            date: window.date,
        };
        let started = std::time::Instant::now();
        let mut out = Vec::with_capacity(report.sections.len());
        for section in &report.sections {
            match ds.run_query(&section.query, &params, self.max_rows).await {
                Ok(table) => out.push(SectionResult {
                    title: section.title.clone(),
                    table,
                }),
                Err(e) => {
                    if e.is_auth_failure() {
                        self.secrets.report_rejected(SecretSetting::DatabaseUrl);
                    }
                    return Err(e.into());
                }
            }
        }
        tracing::info!(
            report = %report.name,
            window.start = %window.start.to_rfc3339(),
            window.end = %window.end.to_rfc3339(),
            rows = out.iter().map(|s| s.table.rows.len()).sum::<usize>(),
            duration_ms = started.elapsed().as_millis() as u64,
            "report run"
        );
        Ok(out)
    }

    /// Where the ledger lives, for start-up output (never the URL itself: it may hold a password).
    pub fn ledger_description(&self) -> String {
        if self.secrets.is_configured(SecretSetting::StateDatabaseUrl) {
            if self
                .secrets
                .is_vault_reference(SecretSetting::StateDatabaseUrl)
            {
                "STATE_DATABASE_URL (a Key Vault reference)".into()
            } else {
                "STATE_DATABASE_URL".into()
            }
        } else {
            format!(
                "SQLite file {}",
                self.config.app_root.join(DEFAULT_LEDGER_FILE).display()
            )
        }
    }

    /// The delivery ledger (`STATE_DATABASE_URL`, default a SQLite file under `data/`),
    /// connected and migrated on first use.
    pub async fn ledger(&self) -> anyhow::Result<&Ledger> {
        self.ledger
            .get_or_try_init(|| async {
                let url = if self.secrets.is_configured(SecretSetting::StateDatabaseUrl) {
                    self.secrets
                        .get(SecretSetting::StateDatabaseUrl)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                } else {
                    let path = self.config.app_root.join(DEFAULT_LEDGER_FILE);
                    SecretString::from(format!("sqlite:{}", path.display()))
                };
                Ledger::connect(&url).await
            })
            .await
    }

    /// Handles one NightlyReport tick at the host's time `tick`.
    pub async fn tick(&self, tick: DateTime<Utc>) -> anyhow::Result<()> {
        delivery::tick::run_tick(self, tick).await.map(|_| ())
    }
}

/// Why a plain (not Key Vault) `API_KEYS` value would be refused, if it would. Key Vault values
/// are checked when they are resolved.
pub fn plain_api_keys_problem(config: &Config, secrets: &Secrets) -> Option<api::auth::KeysError> {
    if !secrets.is_configured(SecretSetting::ApiKeys)
        || secrets.is_vault_reference(SecretSetting::ApiKeys)
    {
        return None;
    }
    let value = SecretString::from(config.settings.get("API_KEYS")?.to_string());
    api::auth::validate_keys(&value).err()
}

/// The router the host talks to.
pub fn router(app: Arc<App>) -> axum::Router {
    functions::router(app)
}

/// The router of `handler dev`: the host's routes plus the admin endpoint `func start` offers
/// (`POST /admin/functions/NightlyReport` runs a tick now and answers 202 at once).
pub fn dev_router(app: Arc<App>) -> axum::Router {
    use axum::routing::post;
    let admin = axum::Router::new()
        .route("/admin/functions/{name}", post(admin_run))
        .with_state(app.clone());
    functions::router(app).merge(admin)
}

async fn admin_run(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    if name != functions::TIMER_FUNCTION {
        return (StatusCode::NOT_FOUND, "no such function").into_response();
    }
    tokio::spawn(async move {
        let id = uuid::Uuid::new_v4().to_string();
        let span = tracing::info_span!(functions::logs::INVOCATION_SPAN, invocation_id = %id, function = functions::TIMER_FUNCTION);
        tracing::Instrument::instrument(
            async move {
                let now = Utc::now();
                tracing::info!(tick = %now.to_rfc3339(), "NightlyReport tick (manual)");
                if let Err(e) = app.tick(now).await {
                    tracing::error!(error.message = %format!("{e:#}"), "NightlyReport failed");
                }
            },
            span,
        )
        .await;
    });
    StatusCode::ACCEPTED.into_response()
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// for at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(router(app), listener, shutdown).await
}

/// Like [`serve`], with the routes of `handler dev`.
pub async fn serve_dev(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(dev_router(app), listener, shutdown).await
}

async fn serve_router(
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
