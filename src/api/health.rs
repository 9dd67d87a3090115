//! `GET /api/health`: is this deployment able to do its work? The `Health` function (anonymous,
//! no API key) answers 200 when every check passes and 503 naming the checks that failed, so
//! a deployment pipeline or the platform's health probe can tell a broken release at once.
//!
//! The body holds only check names and `ok`/`fail`, plus the version: no value, address, host
//! name or error text of a dependency (the probe is unauthenticated); the log line of a failed
//! check has the detail. Answers are cached for [`CACHE_FOR`] and computed by one caller at a
//! time (single flight), so a probe every few seconds costs one database round trip, not one
//! per request; each check is bounded by [`CHECK_TIMEOUT`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde::Serialize;

use super::ApiResponse;
use crate::delivery::Delivery;
use crate::delivery::mail::MailTransport;
use crate::secrets::SecretSetting;

/// How long an answer is reused: short enough that a fixed dependency shows within seconds,
/// long enough that a tight probe loop does not load the database.
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// The bound on one check (a database that does not answer is a failed check, not a hung probe).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The health checks over the app's parts; cheap to share.
#[derive(Debug)]
pub struct Health {
    delivery: Arc<Delivery>,
    last: tokio::sync::Mutex<Option<(Instant, Arc<HealthReport>)>>,
}

/// One evaluation of every check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HealthReport {
    /// `ok` when every check passed, else `fail`.
    pub status: &'static str,
    /// The handler's version (`Cargo.toml`), so a probe shows which release answers.
    pub version: &'static str,
    /// Each check by name: `ok` or `fail`.
    pub checks: BTreeMap<String, &'static str>,
}

impl HealthReport {
    /// Whether every check passed.
    pub fn healthy(&self) -> bool {
        self.status == "ok"
    }
}

impl Health {
    /// The checks over the delivery part (which holds the engine, the secrets and the mailer).
    pub fn new(delivery: Arc<Delivery>) -> Self {
        Self {
            delivery,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Answers a health request (any method but GET and HEAD is refused).
    pub async fn handle(&self, method: &Method) -> ApiResponse {
        if method != Method::GET && method != Method::HEAD {
            return super::Problem::method_not_allowed(method.as_str()).into_response();
        }
        let report = self.report().await;
        let status = if report.healthy() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut resp = ApiResponse::json(status, &*report);
        resp.headers
            .push(("cache-control".into(), "no-store".into()));
        resp
    }

    /// The cached report, or a fresh one (one caller computes it; the others wait for it).
    pub async fn report(&self) -> Arc<HealthReport> {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return report.clone();
        }
        let report = Arc::new(self.evaluate().await);
        *last = Some((Instant::now(), report.clone()));
        report
    }

    async fn evaluate(&self) -> HealthReport {
        let secrets = self.delivery.secrets();
        let configured: Vec<SecretSetting> = SecretSetting::ALL
            .into_iter()
            .filter(|s| secrets.is_configured(*s))
            .collect();
        let secret_checks = futures_util::future::join_all(
            configured
                .iter()
                .map(|s| bounded(format!("secret.{}", s.name()), self.check_secret(*s))),
        );
        let (secret_results, reports, database, ledger, mail) = tokio::join!(
            secret_checks,
            bounded("reports".to_string(), async { self.check_reports() }),
            bounded("database".to_string(), self.check_database()),
            bounded("ledger".to_string(), self.check_ledger()),
            bounded("mail".to_string(), async { self.check_mail() }),
        );
        let mut checks = BTreeMap::new();
        for (name, ok) in secret_results
            .into_iter()
            .chain([reports, database, ledger, mail])
        {
            checks.insert(name, if ok { "ok" } else { "fail" });
        }
        let healthy = checks.values().all(|v| *v == "ok");
        if !healthy {
            let failed: Vec<&str> = checks
                .iter()
                .filter(|(_, v)| **v != "ok")
                .map(|(k, _)| k.as_str())
                .collect();
            tracing::warn!(health.failed = %failed.join(","), "health check failed");
        }
        HealthReport {
            status: if healthy { "ok" } else { "fail" },
            version: env!("CARGO_PKG_VERSION"),
            checks,
        }
    }

    fn check_reports(&self) -> Result<(), String> {
        self.delivery
            .engine
            .reports()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn check_secret(&self, s: SecretSetting) -> Result<(), String> {
        let value = self
            .delivery
            .secrets()
            .get(s)
            .await
            .map_err(|e| e.to_string())?;
        if s == SecretSetting::ApiKeys {
            super::auth::validate_keys(&value).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn check_database(&self) -> Result<(), String> {
        let ds = self
            .delivery
            .engine
            .data_source()
            .await
            .map_err(|e| e.to_string())?;
        ds.check_query("SELECT 1").await.map_err(|e| e.to_string())
    }

    async fn check_ledger(&self) -> Result<(), String> {
        let ledger = self.delivery.ledger().await.map_err(|e| format!("{e:#}"))?;
        ledger
            .recent(None, 1)
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    }

    fn check_mail(&self) -> Result<(), String> {
        let settings = self.delivery.mailer.settings();
        match &settings.transport {
            MailTransport::Smtp(smtp) => {
                // A relay that asks for AUTH needs the password setting.
                if smtp.username.is_some()
                    && !self
                        .delivery
                        .secrets()
                        .is_configured(SecretSetting::SmtpPassword)
                {
                    return Err("SMTP_USERNAME is set but SMTP_PASSWORD is not".into());
                }
                Ok(())
            }
            MailTransport::Outbox(dir) => std::fs::create_dir_all(dir)
                .map_err(|e| format!("the outbox directory cannot be created: {e}")),
        }
    }
}

/// Runs one check within [`CHECK_TIMEOUT`]; the failure's text goes to the log only.
async fn bounded(name: String, check: impl Future<Output = Result<(), String>>) -> (String, bool) {
    let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    };
    match outcome {
        Ok(()) => (name, true),
        Err(detail) => {
            tracing::warn!(health.check = %name, error.message = %detail, "health check failed");
            (name, false)
        }
    }
}
