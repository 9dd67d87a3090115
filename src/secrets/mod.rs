//! The secret layer: `DATABASE_URL`, `STATE_DATABASE_URL`, `SMTP_PASSWORD`, `API_KEYS` and
//! `AzureWebJobsStorage` hold
//! either a plain value (local development) or an App Service Key Vault reference
//! ([`reference`](mod@reference)). On Azure the platform usually resolves references before we
//! start; when it did not, we resolve them ourselves, lazily, with a cache.
//!
//! Why it is shaped like this:
//! - **Settings read once.** [`SecretsSettings::from_settings`] parses and validates everything
//!   the layer reads (references, cache TTL, credential choice, CA bundle) at start-up;
//!   [`Secrets::new`] builds the runtime part from those typed values.
//! - **Lazy and non-blocking.** [`Secrets::new`] does no network work, so the handler answers
//!   the host's readiness ping before any vault call; a request that needs a secret that cannot
//!   be had yet gets an error with a retry hint (the HTTP layer turns it into a 503 problem
//!   with `Retry-After`).
//! - **Bounded.** Every vault fetch (token acquisition, retries and all) is cut off after
//!   [`VAULT_BUDGET`]: the SDK default can hang ~80 s on a dead vault.
//! - **Cached** per (vault, name, version) for `SECRET_CACHE_TTL` (default [`DEFAULT_TTL`]),
//!   with refresh-ahead, single flight, stale-on-error for up to [`MAX_STALENESS`], a back-off
//!   of [`ERROR_BACKOFF`] after a failure, and rejection-driven refetches at most once per
//!   [`REJECTION_INTERVAL`]. The rules live in the `cache` module, apart from the vault I/O.
//! - **Rotation.** An unpinned reference picks up a new version after the TTL, and at once when
//!   a consumer reports the value was rejected ([`Secrets::report_rejected`]).
//! - **Never printed.** Values live in [`SecretString`] from the moment they are read; Debug,
//!   Display and errors name settings and vault secret names only.
//! - **Named settings.** Besides the fixed [`SecretSetting`]s, a reports file names settings of
//!   its own (a destination's `url_setting`, `signing_secret_setting`): [`Secrets::get_named`]
//!   resolves any setting by name with the same reference syntax, cache and rules.

mod cache;
mod credential;
pub mod reference;
mod settings;
mod vault;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use secrecy::SecretString;

use crate::config::ConfigError;
use cache::{Clock, Decision, Failure, Flight, Policy, RejectionLimit, Slot, SystemClock, lock};
use reference::VaultRef;
use settings::{NO_CREDENTIAL, SecretValue};
use vault::Vaults;

pub use cache::{ERROR_BACKOFF, MAX_STALENESS, REJECTION_INTERVAL};
pub use credential::CredentialChoice;
pub use settings::{DEFAULT_TTL, SecretsSettings, identity_connection_credential};
pub use vault::VAULT_BUDGET;

/// Builds the credential `choice` selects, with the same HTTP client rules as the vault's (our
/// timeouts, no proxy, no redirects, `SSL_CERT_FILE`), so that other Azure services (the
/// ledger's storage account) authenticate exactly as Key Vault does. No network.
pub fn build_credential(
    choice: &CredentialChoice,
    ca_bundle: Option<&std::path::Path>,
) -> Result<Arc<dyn TokenCredential>, ConfigError> {
    credential::build(choice, vault::http_client(ca_bundle, &[])?)
}

/// The secret-bearing settings: the only settings that may hold a Key Vault reference, and the
/// only ones whose values the layer hands out (as [`SecretString`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretSetting {
    /// The report data source.
    DatabaseUrl,
    /// The delivery ledger database.
    StateDatabaseUrl,
    /// The SMTP password.
    SmtpPassword,
    /// The API keys accepted by HttpTrigger (comma-separated, or a JSON list of named, scoped
    /// keys: `api::auth`).
    ApiKeys,
    /// The Function app's storage account connection string, where the delivery ledger lives
    /// when `STATE_DATABASE_URL` is not set (it holds the account key, so it is a secret).
    AzureWebJobsStorage,
    /// `APPLICATIONINSIGHTS_CONNECTION_STRING`: where telemetry goes in Application Insights
    /// (its instrumentation key lets anyone write into the resource, so it is a secret).
    ApplicationInsights,
}

impl SecretSetting {
    /// All settings, in a fixed order, so that logs and `handler check` list them the same way
    /// every time.
    pub const ALL: [SecretSetting; 6] = [
        Self::DatabaseUrl,
        Self::StateDatabaseUrl,
        Self::SmtpPassword,
        Self::ApiKeys,
        Self::AzureWebJobsStorage,
        Self::ApplicationInsights,
    ];

    /// The app setting / environment variable name: what messages show instead of the value.
    pub fn name(self) -> &'static str {
        match self {
            Self::DatabaseUrl => "DATABASE_URL",
            Self::StateDatabaseUrl => "STATE_DATABASE_URL",
            Self::SmtpPassword => "SMTP_PASSWORD",
            Self::ApiKeys => "API_KEYS",
            Self::AzureWebJobsStorage => "AzureWebJobsStorage",
            Self::ApplicationInsights => "APPLICATIONINSIGHTS_CONNECTION_STRING",
        }
    }
}

impl std::fmt::Display for SecretSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which setting a value or an error is about: one of the fixed secret settings, or a setting
/// named by the reports file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Fixed(SecretSetting),
    Named(Arc<str>),
}

impl Key {
    fn name(&self) -> &str {
        match self {
            Key::Fixed(s) => s.name(),
            Key::Named(n) => n,
        }
    }
}

/// What went wrong, coarsely, so callers can pick a status code or message (a missing
/// setting is a configuration problem, an unreachable vault is worth a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretErrorKind {
    /// The setting is not set at all.
    NotConfigured,
    /// The vault could not be reached, timed out, throttled us or failed; try again later.
    Unavailable,
    /// The vault says the secret (or version) does not exist.
    NotFound,
    /// The vault refused our identity access to the secret.
    Forbidden,
    /// No token could be obtained, or the vault refused the token.
    Credential,
}

/// A secret could not be had. Displays the setting, the vault secret's name and the vault's
/// error code, so an operator can act on it from the log alone; never a value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct SecretError {
    setting: Key,
    /// For a named setting that is not a usable value (a malformed reference): what is wrong.
    problem: Option<String>,
    kind: SecretErrorKind,
    secret_name: Option<String>,
    vault: Option<String>,
    code: Option<String>,
    retry_after: Option<u64>,
}

impl SecretError {
    /// Which fixed setting could not be had, so the caller can say which feature is affected;
    /// `None` for a named setting ([`Secrets::get_named`]).
    pub fn setting(&self) -> Option<SecretSetting> {
        match self.setting {
            Key::Fixed(s) => Some(s),
            Key::Named(_) => None,
        }
    }
    /// The name of the setting that could not be had (fixed or named).
    pub fn setting_name(&self) -> &str {
        self.setting.name()
    }
    /// The coarse kind, for choosing a status code.
    pub fn kind(&self) -> SecretErrorKind {
        self.kind
    }
    /// Seconds after which trying again may help (for `Retry-After`); `None` when retrying
    /// cannot help (the setting is not configured).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
    }

    fn not_configured(setting: Key) -> Self {
        Self {
            setting,
            problem: None,
            kind: SecretErrorKind::NotConfigured,
            secret_name: None,
            vault: None,
            code: None,
            retry_after: None,
        }
    }

    fn from_failure(setting: Key, r: &VaultRef, f: &Failure) -> Self {
        Self {
            setting,
            problem: None,
            kind: f.error.kind,
            secret_name: Some(r.name.clone()),
            vault: Some(r.vault_url.clone()),
            code: Some(f.error.code.clone()),
            retry_after: Some(f.retry_after_secs),
        }
    }

    fn describe(&self) -> String {
        if let Some(problem) = &self.problem {
            return format!("{}: {problem}", self.setting.name());
        }
        let (Some(name), Some(vault)) = (&self.secret_name, &self.vault) else {
            return format!("{} is not configured", self.setting.name());
        };
        let what = match self.kind {
            SecretErrorKind::NotConfigured => "is not configured",
            SecretErrorKind::Unavailable => {
                "is unavailable (vault unreachable, slow or throttling)"
            }
            SecretErrorKind::NotFound => "was not found in the vault",
            SecretErrorKind::Forbidden => "is forbidden to this identity",
            SecretErrorKind::Credential => "could not be read: no usable credential token",
        };
        format!(
            "{}: Key Vault secret '{name}' in {vault} {what}: {}",
            self.setting.name(),
            self.code.as_deref().unwrap_or("no error code")
        )
    }
}

/// Test and tooling hooks for [`Secrets::with_options`], so that the layer can be driven
/// against local fakes and with short timings; production uses [`Secrets::new`], i.e. the
/// defaults.
#[derive(Default)]
pub struct SecretsOptions {
    /// Use this credential instead of the one the settings choose.
    pub credential: Option<Arc<dyn TokenCredential>>,
    /// Map host names to addresses (e.g. `myvault.vault.azure.net` → a loopback fake), so the
    /// `VaultName=` syntax and the full challenge check can be exercised offline.
    pub resolve: Vec<(String, SocketAddr)>,
    /// Override [`VAULT_BUDGET`].
    pub budget: Option<Duration>,
    /// Override [`MAX_STALENESS`].
    pub max_staleness: Option<Duration>,
    /// Override [`ERROR_BACKOFF`].
    pub error_backoff: Option<Duration>,
}

/// The secret layer's handle: cheap to clone, shared by every request, so that the cache and
/// the vault connections are shared too.
#[derive(Clone)]
pub struct Secrets {
    inner: Arc<Inner>,
}

struct Inner {
    values: HashMap<SecretSetting, SecretValue>,
    named: HashMap<String, Result<SecretValue, String>>,
    credential: String,
    vaults: Option<Vaults>,
    slots: HashMap<VaultRef, Arc<Slot>>,
    calls: AtomicU64,
    policy: Policy,
    budget: Duration,
    rejections: Mutex<RejectionLimit>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for s in SecretSetting::ALL {
            m.entry(&s.name(), &SecretValue::describe(self.inner.values.get(&s)));
        }
        m.entry(&"credential", &self.inner.credential);
        m.finish()
    }
}

impl Secrets {
    /// Builds the runtime part (vault clients, credential, cache) from the typed settings; NO
    /// network, so start-up never waits for the vault. Fails only for what could not be checked
    /// when the settings were read: an unreadable `SSL_CERT_FILE`, or a credential the SDK
    /// refuses to build (e.g. an unreadable federated token file).
    pub fn new(settings: &SecretsSettings) -> Result<Secrets, ConfigError> {
        Self::with_options(settings, SecretsOptions::default())
    }

    /// Like [`Secrets::new`] with an injected credential, so tests and tools can reach a vault
    /// (or a fake) without a real identity.
    pub fn from_settings_with_credential(
        settings: &SecretsSettings,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Secrets, ConfigError> {
        Self::with_options(
            settings,
            SecretsOptions {
                credential: Some(credential),
                ..Default::default()
            },
        )
    }

    /// Full control for tests: see [`SecretsOptions`].
    pub fn with_options(
        settings: &SecretsSettings,
        options: SecretsOptions,
    ) -> Result<Secrets, ConfigError> {
        let refs = settings.references();
        let named_refs = settings.named_references();
        let (credential_desc, vaults) = if refs.is_empty() && named_refs.is_empty() {
            (NO_CREDENTIAL.to_string(), None)
        } else {
            let http = vault::http_client(settings.ca_bundle.as_deref(), &options.resolve)?;
            let (desc, cred) = match (options.credential, &settings.credential) {
                (Some(c), _) => ("injected credential".to_string(), c),
                (None, Some(choice)) => (
                    choice.description(),
                    credential::build(choice, http.clone())?,
                ),
                // SecretsSettings chooses a credential whenever a setting is a reference.
                (None, None) => {
                    return Err(ConfigError::new(
                        "AZURE_CREDENTIAL",
                        "no credential was chosen for the Key Vault references",
                    ));
                }
            };
            let setting_of = |r: &VaultRef| {
                refs.iter()
                    .find(|(_, x)| x == r)
                    .map(|(s, _)| s.name().to_string())
                    .or_else(|| {
                        named_refs
                            .iter()
                            .find(|(_, x)| x == r)
                            .map(|(n, _)| n.clone())
                    })
                    .unwrap_or_else(|| "SECRET".into())
            };
            let all = refs
                .iter()
                .map(|(_, r)| r)
                .chain(named_refs.iter().map(|(_, r)| r));
            let vaults = Vaults::new(all, cred, http, setting_of)?;
            (desc, Some(vaults))
        };
        let slots = refs
            .iter()
            .map(|(_, r)| r)
            .chain(named_refs.iter().map(|(_, r)| r))
            .map(|r| (r.clone(), Arc::new(Slot::default())))
            .collect();
        let ttl = settings.cache_ttl;
        tracing::info!(
            credential = %credential_desc,
            references = refs.len(),
            identity_settings_present = ?settings.identity_settings_present,
            ttl_secs = ttl.as_secs(),
            "secret layer configured; Key Vault credential: {credential_desc}"
        );
        Ok(Secrets {
            inner: Arc::new(Inner {
                values: settings.values.clone(),
                named: settings.named.clone(),
                credential: credential_desc,
                vaults,
                slots,
                calls: AtomicU64::new(0),
                policy: Policy {
                    ttl,
                    max_staleness: options.max_staleness.unwrap_or(MAX_STALENESS),
                    error_backoff: options.error_backoff.unwrap_or(ERROR_BACKOFF),
                },
                budget: options.budget.unwrap_or(VAULT_BUDGET),
                rejections: Mutex::new(RejectionLimit::new(REJECTION_INTERVAL)),
            }),
        })
    }

    /// Whether the setting is set at all (plain or reference), so callers can fall back to a
    /// default (e.g. the sample database) instead of failing.
    pub fn is_configured(&self, s: SecretSetting) -> bool {
        self.inner.values.contains_key(&s)
    }

    /// Whether the setting is a Key Vault reference we resolve ourselves, i.e. whether its
    /// value can only be checked once it has been fetched.
    pub fn is_vault_reference(&self, s: SecretSetting) -> bool {
        matches!(self.inner.values.get(&s), Some(SecretValue::Reference(_)))
    }

    /// The value: plain values at once; references from the cache or the vault (single
    /// flight), bounded by the budget.
    pub async fn get(&self, s: SecretSetting) -> Result<SecretString, SecretError> {
        match self.inner.values.get(&s) {
            None => Err(SecretError::not_configured(Key::Fixed(s))),
            Some(SecretValue::Plain(v)) => Ok(v.clone()),
            Some(SecretValue::Reference(r)) => {
                Inner::get_ref(&self.inner, Key::Fixed(s), r, false).await
            }
        }
    }

    /// Whether the setting called `name` is set at all (plain or reference). For the fixed
    /// settings' names this answers like [`Secrets::is_configured`].
    pub fn is_named_configured(&self, name: &str) -> bool {
        match SecretSetting::ALL.into_iter().find(|s| s.name() == name) {
            Some(s) => self.is_configured(s),
            None => self.inner.named.contains_key(name),
        }
    }

    /// Whether the setting called `name` is a Key Vault reference we resolve ourselves.
    pub fn is_named_vault_reference(&self, name: &str) -> bool {
        match SecretSetting::ALL.into_iter().find(|s| s.name() == name) {
            Some(s) => self.is_vault_reference(s),
            None => matches!(
                self.inner.named.get(name),
                Some(Ok(SecretValue::Reference(_)))
            ),
        }
    }

    /// The value of the setting called `name`, which the reports file names (a destination's
    /// URL or signing secret): a plain value at once, a Key Vault reference from the cache or
    /// the vault, exactly like [`Secrets::get`]. A fixed setting's name resolves that setting.
    pub async fn get_named(&self, name: &str) -> Result<SecretString, SecretError> {
        if let Some(s) = SecretSetting::ALL.into_iter().find(|s| s.name() == name) {
            return self.get(s).await;
        }
        let key = Key::Named(Arc::from(name));
        match self.inner.named.get(name) {
            None => Err(SecretError::not_configured(key)),
            Some(Err(problem)) => Err(SecretError {
                problem: Some(problem.clone()),
                ..SecretError::not_configured(key)
            }),
            Some(Ok(SecretValue::Plain(v))) => Ok(v.clone()),
            Some(Ok(SecretValue::Reference(r))) => Inner::get_ref(&self.inner, key, r, false).await,
        }
    }

    /// A consumer says the value was rejected (SMTP auth failure, database authentication
    /// failure), so a rotated secret is picked up at once: the next get() refetches, at most
    /// once per [`REJECTION_INTERVAL`] per setting.
    pub fn report_rejected(&self, s: SecretSetting) {
        let Some(SecretValue::Reference(r)) = self.inner.values.get(&s) else {
            return;
        };
        if !self.inner.take_rejection_slot(s) {
            tracing::debug!(
                setting = s.name(),
                "rejection reported again within the rate limit; not refetching yet"
            );
            return;
        }
        tracing::info!(setting = s.name(), secret = %r.name, "value reported as rejected; the next use refetches it from Key Vault");
        if let Some(slot) = self.inner.slots.get(r) {
            slot.request_refetch();
        }
    }

    /// Fetch now from the vault, bypassing the cache (rate limited like
    /// [`Secrets::report_rejected`]; when the limit applies, the cached value is returned). For
    /// "refresh once and retry" after an authentication failure.
    pub async fn refresh(&self, s: SecretSetting) -> Result<SecretString, SecretError> {
        match self.inner.values.get(&s) {
            None => Err(SecretError::not_configured(Key::Fixed(s))),
            Some(SecretValue::Plain(v)) => Ok(v.clone()),
            Some(SecretValue::Reference(r)) => {
                let force = self.inner.take_rejection_slot(s);
                Inner::get_ref(&self.inner, Key::Fixed(s), r, force).await
            }
        }
    }

    /// Which credential was chosen, for the start-up log and `handler check`.
    pub fn credential_description(&self) -> String {
        self.inner.credential.clone()
    }

    /// How many vault fetches were started, so tests and diagnostics can tell cache hits from
    /// vault calls.
    pub fn vault_calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn take_rejection_slot(&self, s: SecretSetting) -> bool {
        lock(&self.rejections).allow(s, SystemClock.now())
    }

    async fn get_ref(
        self: &Arc<Self>,
        s: Key,
        r: &VaultRef,
        force: bool,
    ) -> Result<SecretString, SecretError> {
        let Some(slot) = self.slots.get(r) else {
            return Err(SecretError::not_configured(s));
        };
        let decision = slot.decide(&self.policy, force, SystemClock.now());
        let result = match &decision {
            Decision::Serve { .. } => "hit",
            Decision::Fetch { .. } | Decision::Fail(_) => "miss",
        };
        crate::telemetry::count(
            |m| &m.secret_cache,
            &[("setting", s.name().to_string()), ("result", result.into())],
        );
        match decision {
            Decision::Serve { value, refresh } => {
                if let Some(generation) = refresh {
                    let inner = Arc::clone(self);
                    let slot = Arc::clone(slot);
                    let r = r.clone();
                    let s = s.clone();
                    tokio::spawn(async move {
                        let _ = inner.fetch_into(&s, &r, &slot, generation).await;
                        slot.refresh_finished();
                    });
                }
                Ok(value)
            }
            Decision::Fail(f) => Err(SecretError::from_failure(s, r, &f)),
            Decision::Fetch { generation } => self.fetch_into(&s, r, slot, generation).await,
        }
    }

    /// One fetch through the slot's single flight, with its log line.
    async fn fetch_into(
        &self,
        s: &Key,
        r: &VaultRef,
        slot: &Slot,
        seen_generation: u64,
    ) -> Result<SecretString, SecretError> {
        let Some(vaults) = &self.vaults else {
            return Err(SecretError::not_configured(s.clone()));
        };
        // The setting's name only: the value (and the vault's answer) never goes on a span.
        let span = tracing::info_span!(
            "secret.fetch",
            secret.setting = s.name(),
            secret.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let flight = slot
            .flight(&self.policy, &SystemClock, seen_generation, || {
                self.calls.fetch_add(1, Ordering::Relaxed);
                tracing::Instrument::instrument(vaults.fetch(r, self.budget), span.clone())
            })
            .await;
        span.record(
            "secret.outcome",
            match &flight {
                Flight::Joined(_) => "joined",
                Flight::Fetched { .. } => "fetched",
                Flight::Failed { .. } => "failed",
            },
        );
        if let Flight::Failed { .. } = &flight {
            span.record("otel.status_code", "ERROR");
            crate::telemetry::count(
                |m| &m.secret_cache,
                &[
                    ("setting", s.name().to_string()),
                    ("result", "refresh_failure".into()),
                ],
            );
        }
        drop(span);
        let outcome = match flight {
            Flight::Joined(outcome) => outcome,
            Flight::Fetched {
                value,
                version,
                elapsed,
            } => {
                tracing::info!(
                    setting = s.name(),
                    secret = %r.name,
                    version = version.as_deref().unwrap_or("?"),
                    elapsed_ms = elapsed.as_millis() as u64,
                    "fetched secret from Key Vault"
                );
                Ok(value)
            }
            Flight::Failed {
                outcome,
                error,
                elapsed,
            } => {
                let stale = outcome.is_ok();
                tracing::warn!(
                    setting = s.name(),
                    secret = %r.name,
                    vault = %r.vault_url,
                    code = %error.code,
                    cause = %error.detail,
                    elapsed_ms = elapsed.as_millis() as u64,
                    serving_cached_value = stale,
                    "Key Vault fetch failed{}",
                    if stale { "; serving the last good value" } else { "" }
                );
                outcome
            }
        };
        outcome.map_err(|f| SecretError::from_failure(s.clone(), r, &f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use secrecy::ExposeSecret;

    fn secrets(pairs: &[(&str, &str)]) -> Result<Secrets, ConfigError> {
        SecretsSettings::from_settings(&Settings::from_pairs(pairs.iter().copied()))
            .and_then(|t| Secrets::new(&t))
    }

    #[test]
    fn plain_values_and_debug_redaction() {
        let secrets = secrets(&[
            ("DATABASE_URL", "postgres://u:hunter2@h/db"),
            ("API_KEYS", "k1hunter2, k2hunter2"),
        ])
        .unwrap();
        assert!(secrets.is_configured(SecretSetting::DatabaseUrl));
        assert!(!secrets.is_vault_reference(SecretSetting::DatabaseUrl));
        assert!(!secrets.is_configured(SecretSetting::SmtpPassword));
        assert_eq!(
            secrets.credential_description(),
            "none (no Key Vault references)"
        );
        let dbg = format!("{secrets:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let v = secrets.get(SecretSetting::DatabaseUrl).await.unwrap();
            assert_eq!(v.expose_secret(), "postgres://u:hunter2@h/db");
            let keys = secrets.get(SecretSetting::ApiKeys).await.unwrap();
            assert_eq!(keys.expose_secret(), "k1hunter2, k2hunter2");
            let e = secrets.get(SecretSetting::SmtpPassword).await.unwrap_err();
            assert_eq!(e.kind(), SecretErrorKind::NotConfigured);
            assert_eq!(e.retry_after_secs(), None);
            assert_eq!(e.to_string(), "SMTP_PASSWORD is not configured");
        });
        assert_eq!(secrets.vault_calls(), 0);
    }

    #[test]
    fn named_settings_resolve_like_the_fixed_ones() {
        let secrets = secrets(&[
            ("TEAMS_WEBHOOK_SALES", "https://example.test/hook/hunter2"),
            ("BROKEN_REF", "@Microsoft.KeyVault(SecretUri=hunter2)"),
            ("SMTP_PASSWORD", "pw-hunter2"),
        ])
        .unwrap();
        assert!(secrets.is_named_configured("TEAMS_WEBHOOK_SALES"));
        assert!(!secrets.is_named_vault_reference("TEAMS_WEBHOOK_SALES"));
        assert!(secrets.is_named_configured("SMTP_PASSWORD"));
        assert!(!secrets.is_named_configured("NOT_SET"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let v = secrets.get_named("TEAMS_WEBHOOK_SALES").await.unwrap();
            assert_eq!(v.expose_secret(), "https://example.test/hook/hunter2");
            let pw = secrets.get_named("SMTP_PASSWORD").await.unwrap();
            assert_eq!(pw.expose_secret(), "pw-hunter2");
            let e = secrets.get_named("NOT_SET").await.unwrap_err();
            assert_eq!(e.kind(), SecretErrorKind::NotConfigured);
            assert_eq!(e.setting(), None);
            assert_eq!(e.setting_name(), "NOT_SET");
            assert_eq!(e.to_string(), "NOT_SET is not configured");
            // A malformed reference in a setting nobody asked for does not stop the app; the
            // one who asks gets the problem, never the value.
            let e = secrets.get_named("BROKEN_REF").await.unwrap_err();
            assert!(e.to_string().starts_with("BROKEN_REF: "), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        });
        assert!(!format!("{secrets:?}").contains("hunter2"));
    }

    #[test]
    fn a_named_reference_chooses_a_credential_and_gets_a_slot() {
        let secrets = secrets(&[
            (
                "ORDERS_WEBHOOK_SECRET",
                "@Microsoft.KeyVault(VaultName=myvault;SecretName=orders-hook)",
            ),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
            ("IDENTITY_HEADER", "hdr-hunter2"),
        ])
        .unwrap();
        assert!(secrets.is_named_vault_reference("ORDERS_WEBHOOK_SECRET"));
        assert_eq!(
            secrets.credential_description(),
            "managed identity (App Service)"
        );
        assert_eq!(secrets.vault_calls(), 0);
    }

    #[test]
    fn unreadable_ca_bundle_is_reported_when_building() {
        let e = secrets(&[
            (
                "DATABASE_URL",
                "@Microsoft.KeyVault(VaultName=myvault;SecretName=db)",
            ),
            ("SSL_CERT_FILE", "/nonexistent/hunter2.pem"),
        ])
        .unwrap_err();
        assert_eq!(e.setting, "SSL_CERT_FILE");
        assert!(!e.to_string().contains("hunter2"));
        // Without references the bundle is not needed, so not read.
        assert!(
            secrets(&[
                ("DATABASE_URL", "sqlite://x"),
                ("SSL_CERT_FILE", "/nonexistent/hunter2.pem"),
            ])
            .is_ok()
        );
    }

    #[test]
    fn references_choose_a_credential_without_network() {
        let secrets = secrets(&[
            (
                "DATABASE_URL",
                "@Microsoft.KeyVault(VaultName=myvault;SecretName=db)",
            ),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
            ("IDENTITY_HEADER", "hdr-hunter2"),
        ])
        .unwrap();
        assert!(secrets.is_vault_reference(SecretSetting::DatabaseUrl));
        assert_eq!(
            secrets.credential_description(),
            "managed identity (App Service)"
        );
        assert!(!format!("{secrets:?}").contains("hunter2"));
        assert_eq!(secrets.vault_calls(), 0);
    }
}
