//! The delivery part: what every delivery needs besides the report engine (the ledger, the
//! mailer, the claim lease, the secret layer for the SMTP password and the ledger's
//! connection). The tick, `handler dev` and `handler report run --send` all deliver through
//! one [`Delivery`].
//!
//! The ledger's backend is chosen here and nowhere else ([`LedgerBackend`]):
//! `STATE_DATABASE_URL` (SQLite or PostgreSQL) when set; else the Function app's storage
//! account (`AzureWebJobsStorage`, Table storage) unless this is `handler dev`; else a SQLite
//! file under `data/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;

use super::ledger::{Ledger, LedgerSettings, StorageAccess, StorageAccount};
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

/// Which ledger backend the settings select, in the order of choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerBackend {
    /// `STATE_DATABASE_URL`: SQLite or PostgreSQL.
    StateDatabase,
    /// The Function app's storage account (`AzureWebJobsStorage`): Table storage.
    TableStorage,
    /// The SQLite file under the app root's `data/`.
    LocalFile,
}

/// The delivery part, shared by every tick and command that sends.
pub struct Delivery {
    /// The report engine the deliveries run reports with.
    pub engine: Arc<ReportEngine>,
    /// The mail transport (SMTP or the outbox).
    pub mailer: Mailer,
    /// `CLAIM_LEASE`.
    pub claim_lease: Duration,
    secrets: Secrets,
    ledger_settings: LedgerSettings,
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
        ledger_settings: LedgerSettings,
        app_root: &Path,
        claim_lease: Duration,
    ) -> Self {
        Self {
            engine,
            mailer,
            claim_lease,
            secrets,
            ledger_settings,
            ledger_file: app_root.join(DEFAULT_LEDGER_FILE),
            ledger: tokio::sync::OnceCell::new(),
        }
    }

    /// The secret layer, for the SMTP password.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// The backend the settings select (see the module docs for the order).
    pub fn ledger_backend(&self) -> LedgerBackend {
        if self.secrets.is_configured(SecretSetting::StateDatabaseUrl) {
            LedgerBackend::StateDatabase
        } else if self.ledger_settings.storage_in_use().is_some() {
            LedgerBackend::TableStorage
        } else {
            LedgerBackend::LocalFile
        }
    }

    /// Where the ledger lives, for start-up output and `handler check` (never the URL or the
    /// connection string itself: they may hold a password or the account key).
    pub fn ledger_description(&self) -> String {
        match self.ledger_backend() {
            LedgerBackend::StateDatabase => {
                if self
                    .secrets
                    .is_vault_reference(SecretSetting::StateDatabaseUrl)
                {
                    "STATE_DATABASE_URL (a Key Vault reference)".into()
                } else {
                    "STATE_DATABASE_URL".into()
                }
            }
            LedgerBackend::TableStorage => {
                let table = &self.ledger_settings.table;
                let via = match self.ledger_settings.storage_in_use() {
                    Some(StorageAccess::ConnectionString(a)) => format!(
                        "AzureWebJobsStorage: {}, {}",
                        a.table_endpoint,
                        a.auth.description()
                    ),
                    Some(StorageAccess::VaultReference) => {
                        "AzureWebJobsStorage: a Key Vault reference, shared key".into()
                    }
                    Some(StorageAccess::Identity(a)) => format!(
                        "AzureWebJobsStorage__*: {}, {}",
                        a.table_endpoint,
                        a.auth.description()
                    ),
                    None => String::new(),
                };
                format!("Azure Table storage, table {table} ({via})")
            }
            LedgerBackend::LocalFile => format!("SQLite file {}", self.ledger_file.display()),
        }
    }

    /// The delivery ledger, connected (and migrated, or its table created) on first use; a
    /// failed connection is tried again by the next caller.
    pub async fn ledger(&self) -> anyhow::Result<&Ledger> {
        self.ledger
            .get_or_try_init(|| async {
                match self.ledger_backend() {
                    LedgerBackend::StateDatabase => {
                        let url = self
                            .secrets
                            .get(SecretSetting::StateDatabaseUrl)
                            .await
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        Ledger::connect(&url).await
                    }
                    LedgerBackend::TableStorage => self.connect_table().await,
                    LedgerBackend::LocalFile => self.connect_local_file().await,
                }
            })
            .await
    }

    async fn connect_table(&self) -> anyhow::Result<Ledger> {
        let account: StorageAccount = match self.ledger_settings.storage_in_use() {
            Some(StorageAccess::ConnectionString(a) | StorageAccess::Identity(a)) => a.clone(),
            Some(StorageAccess::VaultReference) => {
                let value = self
                    .secrets
                    .get(SecretSetting::AzureWebJobsStorage)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                LedgerSettings::account_from_secret(&value)?
            }
            None => anyhow::bail!("no storage account is configured for the ledger"),
        };
        let table = &self.ledger_settings.table;
        Ledger::connect_storage(account, table, self.ledger_settings.ca_bundle.as_deref())
            .await
        .with_context(|| format!("the ledger table {table} in the app's storage account (AzureWebJobsStorage) is unavailable"))
    }

    /// The default SQLite file. Its directory is created and probed for writing first, so a
    /// read-only app root (an app run from a package) fails with what to do instead of a
    /// SQLite error.
    async fn connect_local_file(&self) -> anyhow::Result<Ledger> {
        let file = &self.ledger_file;
        let dir = file.parent().unwrap_or(Path::new("."));
        let probe = dir.join(".ledger-write-test");
        let writable = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&probe, b"ok"))
            .and_then(|()| std::fs::remove_file(&probe));
        if let Err(e) = writable {
            anyhow::bail!(
                "the delivery ledger's SQLite file {} cannot be created or written ({e}); the app root is read-only when the app runs from a package: set STATE_DATABASE_URL (a PostgreSQL or SQLite ledger) or AzureWebJobsStorage (the app's storage account, Table storage) for the ledger",
                file.display()
            );
        }
        let url = SecretString::from(format!("sqlite:{}", file.display()));
        Ledger::connect(&url).await
    }
}
