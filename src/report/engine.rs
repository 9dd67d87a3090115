//! The report engine: the report definitions, the data source behind them, and running a
//! report for a window. The timer's deliveries, the API and `handler report run` all run
//! reports through this one part, so an emailed report and an API answer for the same window
//! are the same rows.
//!
//! The data source follows `DATABASE_URL` through the secret layer: when the value changes (a
//! rotation in Key Vault), the next run opens a new pool. Without `DATABASE_URL` the engine uses
//! the embedded sample SQLite database, created on first use under the app root.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use super::{Report, ReportSet, ReportsFileError, Section, Window};
use crate::data::{DataError, DataSource, QueryParams, RowSink, Streamed};
use crate::render::SectionResult;
use crate::secrets::{SecretError, SecretSetting, Secrets};

/// The embedded sample database, relative to the app root, used when `DATABASE_URL` is not set.
pub const SAMPLE_DATABASE: &str = "data/sample.sqlite";

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

/// The engine's settings, read once at start.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The reports file (`REPORTS_FILE`).
    pub reports_file: PathBuf,
    /// The app root: where the sample database lives.
    pub app_root: PathBuf,
    /// `QUERY_TIMEOUT`: the statement timeout of report queries.
    pub query_timeout: Duration,
    /// `MAX_ROWS`: a safety cap on rows per section.
    pub max_rows: usize,
}

/// The report engine. Building it does no network work (the handler must answer the host's
/// readiness ping first); the data source is connected on the first run.
pub struct ReportEngine {
    reports: Result<Arc<ReportSet>, ReportsFileError>,
    secrets: Secrets,
    sample_path: PathBuf,
    query_timeout: Duration,
    max_rows: usize,
    data: tokio::sync::Mutex<Option<([u8; 32], DataSource)>>,
    sample_ready: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for ReportEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportEngine")
            .field("reports", &self.reports.as_ref().map(|r| r.reports.len()))
            .field("database", &self.database_description())
            .finish_non_exhaustive()
    }
}

impl ReportEngine {
    /// Reads the reports file. A broken file is kept as an error that the API (503) and the
    /// tick report, not a start-up failure: the host must still get its readiness answer.
    pub fn new(settings: &EngineSettings, secrets: Secrets) -> Self {
        let reports = ReportSet::load(&settings.reports_file).map(Arc::new);
        if let Err(e) = &reports {
            tracing::error!(error.message = %e, "the reports file is invalid; the API answers 503 and ticks fail until it is fixed");
        }
        Self {
            reports,
            secrets,
            sample_path: settings.app_root.join(SAMPLE_DATABASE),
            query_timeout: settings.query_timeout,
            max_rows: settings.max_rows,
            data: tokio::sync::Mutex::new(None),
            sample_ready: tokio::sync::OnceCell::new(),
        }
    }

    /// The report definitions, or every problem of the reports file.
    pub fn reports(&self) -> Result<Arc<ReportSet>, &ReportsFileError> {
        self.reports.as_ref().map(Arc::clone)
    }

    /// Where report data comes from, for start-up output (never the URL: it may hold a
    /// password).
    pub fn database_description(&self) -> String {
        if self.secrets.is_configured(SecretSetting::DatabaseUrl) {
            if self.secrets.is_vault_reference(SecretSetting::DatabaseUrl) {
                "DATABASE_URL (a Key Vault reference)".into()
            } else {
                "DATABASE_URL".into()
            }
        } else {
            format!(
                "the embedded sample SQLite database ({})",
                self.sample_path.display()
            )
        }
    }

    /// The report database. `DATABASE_URL` comes through the secret layer; when its value
    /// changes (a rotation), a new pool is made. Unset: the embedded sample SQLite database.
    pub async fn data_source(&self) -> Result<DataSource, EngineError> {
        let url = if self.secrets.is_configured(SecretSetting::DatabaseUrl) {
            self.secrets.get(SecretSetting::DatabaseUrl).await?
        } else {
            let path = &self.sample_path;
            // Checked (and created) once per process, not on every request.
            self.sample_ready
                .get_or_try_init(|| {
                    crate::data::sample::ensure_sample_database(path, Utc::now().date_naive())
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

    /// Runs one section for `window`, read-only, handing each row to `sink` as it arrives
    /// instead of keeping the table: for outputs that stream (a million-row workbook written
    /// by `handler report run --out FILE.xlsx`). The summary carries the columns even when no
    /// row arrived.
    pub async fn stream_section(
        &self,
        section: &Section,
        window: &Window,
        sink: RowSink<'_>,
    ) -> Result<Streamed, EngineError> {
        let ds = self.data_source().await?;
        let params = QueryParams {
            start: window.start,
            end: window.end,
            date: window.date,
        };
        match ds
            .stream_query(&section.query, &params, self.max_rows, sink)
            .await
        {
            Ok(s) => Ok(s),
            Err(e) => {
                if e.is_auth_failure() {
                    self.secrets.report_rejected(SecretSetting::DatabaseUrl);
                }
                Err(e.into())
            }
        }
    }

    /// Runs every section of `report` for `window`, read-only. A database that refuses the
    /// credentials is reported to the secret layer, so a rotated password is fetched again.
    pub async fn run_report(
        &self,
        report: &Report,
        window: &Window,
    ) -> Result<Vec<SectionResult>, EngineError> {
        self.run_report_keyed(report, window, None).await
    }

    /// Runs a per-recipient report's `recipients_query` for `window` (`:start`, `:end`,
    /// `:date` bound like the sections'): one row per recipient. `Ok(None)` for a report
    /// without one.
    pub async fn run_recipients_query(
        &self,
        report: &Report,
        window: &Window,
    ) -> Result<Option<crate::data::Table>, EngineError> {
        let Some(sql) = report.recipients_query.as_deref() else {
            return Ok(None);
        };
        let ds = self.data_source().await?;
        let params = QueryParams {
            start: window.start,
            end: window.end,
            date: window.date,
        };
        match ds.run_query(sql, &params, self.max_rows).await {
            Ok(t) => Ok(Some(t)),
            Err(e) => {
                if e.is_auth_failure() {
                    self.secrets.report_rejected(SecretSetting::DatabaseUrl);
                }
                Err(e.into())
            }
        }
    }

    /// [`ReportEngine::run_report`] with `:recipient_key` bound to `key` (one recipient's rows
    /// of a per-recipient report; NULL when `None`).
    #[tracing::instrument(name = "report.run", skip_all, fields(report.name = %report.name, report.sections = report.sections.len()))]
    pub async fn run_report_keyed(
        &self,
        report: &Report,
        window: &Window,
        key: Option<&crate::data::RecipientKey>,
    ) -> Result<Vec<SectionResult>, EngineError> {
        // Without a budget every section runs to its end (or MAX_ROWS).
        Ok(self
            .run_sections(report, window, usize::MAX, key)
            .await?
            .unwrap_or_default())
    }

    /// Like [`ReportEngine::run_report`], but gives up (`Ok(None)`) as soon as the report's
    /// sections together hold more than `budget` rows: the API keeps small results in memory
    /// (cached, with a strong ETag) and streams the others from the database instead, so
    /// memory never grows with the rows. Rows cut at `MAX_ROWS` are not "over budget" when
    /// `MAX_ROWS` is the smaller limit: that result is complete as far as the report goes.
    #[tracing::instrument(name = "report.run", skip_all, fields(report.name = %report.name, report.sections = report.sections.len(), report.budget = budget))]
    pub async fn run_report_within(
        &self,
        report: &Report,
        window: &Window,
        budget: usize,
    ) -> Result<Option<Vec<SectionResult>>, EngineError> {
        self.run_sections(report, window, budget, None).await
    }

    /// The max-rows cap of report queries (`MAX_ROWS`).
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    async fn run_sections(
        &self,
        report: &Report,
        window: &Window,
        budget: usize,
        key: Option<&crate::data::RecipientKey>,
    ) -> Result<Option<Vec<SectionResult>>, EngineError> {
        let ds = self.data_source().await?;
        let mut remaining = budget;
        let params = QueryParams {
            start: window.start,
            end: window.end,
            date: window.date,
        };
        let started = std::time::Instant::now();
        let mut out = Vec::with_capacity(report.sections.len());
        for (n, section) in report.sections.iter().enumerate() {
            // Rows and timing only: never parameter values or result data.
            let span = tracing::info_span!(
                "report.section",
                report.section = n + 1,
                db.system.name = ds.kind(),
                db.response.returned_rows = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                otel.status_description = tracing::field::Empty
            );
            let limit = self.max_rows.min(remaining);
            let ran = ds
                .run_query_keyed(&section.query, &params, key, limit)
                .instrument(span.clone())
                .await;
            match &ran {
                Ok(t) => {
                    span.record("db.response.returned_rows", t.rows.len());
                }
                Err(e) => {
                    span.record("otel.status_code", "ERROR");
                    span.record("otel.status_description", e.to_string());
                }
            }
            match ran {
                Ok(table) if table.truncated && limit < self.max_rows => {
                    // More rows than the budget allows: the caller streams instead.
                    tracing::debug!(report = %report.name, budget, "the report is over the in-memory budget");
                    return Ok(None);
                }
                Ok(table) => {
                    remaining = remaining.saturating_sub(table.rows.len());
                    let result = SectionResult {
                        title: section.title.clone(),
                        table,
                        display: section.display.clone(),
                    };
                    result.warn_missing_columns(&report.name);
                    out.push(result);
                }
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
        if let Some(m) = crate::telemetry::metrics() {
            m.report_duration.record(
                started.elapsed().as_secs_f64(),
                &[opentelemetry::KeyValue::new("report", report.name.clone())],
            );
        }
        Ok(Some(out))
    }
}
