//! The delivery part: what every delivery needs besides the report engine (the ledger, the
//! mailer, the claim lease, the secret layer for the SMTP password and the ledger URL). The
//! tick, `handler dev` and `handler report run --send` all deliver through one [`Delivery`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::ledger::Ledger;
use super::mail::Mailer;
use crate::report::ReportEngine;
use crate::secrets::{SecretSetting, Secrets};

/// The delivery ledger's SQLite file, relative to the app root, when `STATE_DATABASE_URL` is
/// not set.
pub const DEFAULT_LEDGER_FILE: &str = "data/ledger.db";

/// The default of `CLAIM_LEASE`: how long a claim protects an occurrence from other processes.
/// Longer than `functionTimeout` (10 min), so a live delivery is never taken over; one whose
/// process crashed is retried by a later tick after it (within `catch_up`).
pub const CLAIM_LEASE: Duration = Duration::from_secs(15 * 60);

/// The delivery part, shared by every tick and command that sends.
pub struct Delivery {
    /// The report engine the deliveries run reports with.
    pub engine: Arc<ReportEngine>,
    /// The mail transport (SMTP or the outbox).
    pub mailer: Mailer,
    /// `CLAIM_LEASE`.
    pub claim_lease: Duration,
    secrets: Secrets,
    ledger_file: PathBuf,
    ledger: tokio::sync::OnceCell<Ledger>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("mailer", &self.mailer.describe())
            .field("ledger", &self.ledger_description())
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Builds the part; no network work (the ledger connects on first use).
    pub fn new(
        engine: Arc<ReportEngine>,
        mailer: Mailer,
        secrets: Secrets,
        app_root: &Path,
        claim_lease: Duration,
    ) -> Self {
        Self {
            engine,
            mailer,
            claim_lease,
            secrets,
            ledger_file: app_root.join(DEFAULT_LEDGER_FILE),
            ledger: tokio::sync::OnceCell::new(),
        }
    }

    /// The secret layer, for the SMTP password.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Where the ledger lives, for start-up output (never the URL itself: it may hold a
    /// password).
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
            format!("SQLite file {}", self.ledger_file.display())
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
                    SecretString::from(format!("sqlite:{}", self.ledger_file.display()))
                };
                Ledger::connect(&url).await
            })
            .await
    }
}
