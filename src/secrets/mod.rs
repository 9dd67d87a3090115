//! The secret layer: `DATABASE_URL`, `STATE_DATABASE_URL`, `SMTP_PASSWORD` and `API_KEYS` hold
//! either a plain value (local development) or an App Service Key Vault reference
//! ([`reference`]). On Azure the platform usually resolves references before we start; when it
//! did not, we resolve them ourselves, lazily, with a cache.
//!
//! Why it is shaped like this:
//! - **Lazy and non-blocking.** [`Secrets::from_settings`] does no network work, so the handler
//!   answers the host's readiness ping before any vault call; a request that needs a secret that
//!   cannot be had yet gets an error with a retry hint (the HTTP layer turns it into a 503
//!   problem with `Retry-After`).
//! - **Bounded.** Every vault fetch (token acquisition, retries and all) is cut off after
//!   [`VAULT_BUDGET`]: the SDK default can hang ~80 s on a dead vault.
//! - **Cached** per (vault, name, version) for `SECRET_CACHE_TTL` (default 1 h). In the last
//!   10 % of the TTL a get() returns the cached value and starts one background refresh.
//!   Concurrent callers of the same secret share one vault call (single flight).
//! - **Stale on error.** When the vault fails, the last good value is served (with a warning)
//!   for up to [`MAX_STALENESS`] past its expiry: an outage of the vault should not take the
//!   reports down, but a value that old may have been revoked, so after that we fail closed.
//!   After a failure the vault is not asked again for a short back-off, so a dead vault does not
//!   cost every request the full budget.
//! - **Rotation.** An unpinned reference picks up a new version after the TTL, and at once when
//!   a consumer reports the value was rejected ([`Secrets::report_rejected`]), at most once per
//!   [`REJECTION_INTERVAL`] per setting so a consumer that is wrong for another reason cannot
//!   hammer the vault.
//! - **Never printed.** Values live in [`SecretString`] from the moment they are read; Debug,
//!   Display and errors name settings and vault secret names only.

pub mod credential;
pub mod reference;
pub mod vault;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{ConfigError, Settings};
use reference::VaultRef;
pub use vault::VAULT_BUDGET;
use vault::{FetchError, Vaults};

/// Default cache lifetime of a vault value.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// How long past its expiry a cached value may still be served while the vault fails.
pub const MAX_STALENESS: Duration = Duration::from_secs(24 * 3600);
/// The minimum interval between two rejection-driven refetches of one setting.
pub const REJECTION_INTERVAL: Duration = Duration::from_secs(30);
/// After a failed fetch, how long the vault is left alone unless it named a longer Retry-After.
pub const ERROR_BACKOFF: Duration = Duration::from_secs(10);

/// The secret-bearing settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretSetting {
    /// The report data source.
    DatabaseUrl,
    /// The delivery ledger database.
    StateDatabaseUrl,
    /// The SMTP password.
    SmtpPassword,
    /// The API keys accepted by HttpTrigger (comma-separated).
    ApiKeys,
}

impl SecretSetting {
    /// All settings, in a fixed order.
    pub const ALL: [SecretSetting; 4] = [
        Self::DatabaseUrl,
        Self::StateDatabaseUrl,
        Self::SmtpPassword,
        Self::ApiKeys,
    ];

    /// The app setting / environment variable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::DatabaseUrl => "DATABASE_URL",
            Self::StateDatabaseUrl => "STATE_DATABASE_URL",
            Self::SmtpPassword => "SMTP_PASSWORD",
            Self::ApiKeys => "API_KEYS",
        }
    }
}

impl std::fmt::Display for SecretSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What went wrong, coarsely, so callers can pick a status code or message.
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
/// error code; never a value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct SecretError {
    setting: SecretSetting,
    kind: SecretErrorKind,
    secret_name: Option<String>,
    vault: Option<String>,
    code: Option<String>,
    retry_after: Option<u64>,
}

impl SecretError {
    /// Which setting could not be had.
    pub fn setting(&self) -> SecretSetting {
        self.setting
    }
    /// The coarse kind.
    pub fn kind(&self) -> SecretErrorKind {
        self.kind
    }
    /// Seconds after which trying again may help (for `Retry-After`); `None` when retrying
    /// cannot help (the setting is not configured).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
    }
    /// The vault's error code or our short label (`SecretNotFound (HTTP 404)`, `Timeout …`).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    fn not_configured(setting: SecretSetting) -> Self {
        Self {
            setting,
            kind: SecretErrorKind::NotConfigured,
            secret_name: None,
            vault: None,
            code: None,
            retry_after: None,
        }
    }

    fn from_fetch(
        setting: SecretSetting,
        r: &VaultRef,
        e: &FetchError,
        retry_after: Option<u64>,
    ) -> Self {
        Self {
            setting,
            kind: e.kind,
            secret_name: Some(r.name.clone()),
            vault: Some(r.vault_url.clone()),
            code: Some(e.code.clone()),
            retry_after,
        }
    }

    fn describe(&self) -> String {
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

/// Test and tooling hooks for [`Secrets::with_options`]; production uses
/// [`Secrets::from_settings`], i.e. the defaults.
#[derive(Default)]
pub struct SecretsOptions {
    /// Use this credential instead of choosing one from the settings.
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

enum Value {
    Plain(SecretString),
    Reference(VaultRef),
}

/// The secret layer's handle: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Secrets {
    inner: Arc<Inner>,
}

struct Inner {
    values: HashMap<SecretSetting, Value>,
    credential: String,
    vaults: Option<Vaults>,
    slots: HashMap<VaultRef, Arc<Slot>>,
    calls: AtomicU64,
    ttl: Duration,
    budget: Duration,
    max_staleness: Duration,
    error_backoff: Duration,
    forced: Mutex<HashMap<SecretSetting, Instant>>,
}

/// Cache state of one (vault, name, version).
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    /// Held for the duration of one vault call: the single flight.
    fetch: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SlotState {
    value: Option<Cached>,
    /// Bumped after every fetch (good or bad), so waiters know a fetch finished meanwhile.
    generation: u64,
    last_error: Option<(FetchError, Instant)>,
    force: bool,
    refreshing: bool,
}

struct Cached {
    value: SecretString,
    fetched_at: Instant,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for s in SecretSetting::ALL {
            match self.inner.values.get(&s) {
                None => m.entry(&s.name(), &"not set"),
                Some(Value::Plain(_)) => m.entry(&s.name(), &"plain value (redacted)"),
                Some(Value::Reference(r)) => m.entry(
                    &s.name(),
                    &format!("Key Vault secret '{}' in {}", r.name, r.vault_url),
                ),
            };
        }
        m.entry(&"credential", &self.inner.credential);
        m.finish()
    }
}

enum Decision {
    Serve(SecretString, bool),
    Fail(SecretError),
    Fetch(u64),
}

impl Secrets {
    /// Parses the four settings (plain value or reference) and picks the credential; NO
    /// network. A malformed reference is an error naming the setting, never its value.
    pub fn from_settings(settings: &Settings) -> Result<Secrets, ConfigError> {
        Self::with_options(settings, SecretsOptions::default())
    }

    /// Like [`Secrets::from_settings`] with an injected credential (tests, tools).
    pub fn from_settings_with_credential(
        settings: &Settings,
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
        settings: &Settings,
        options: SecretsOptions,
    ) -> Result<Secrets, ConfigError> {
        let mut values = HashMap::new();
        for s in SecretSetting::ALL {
            let Some(raw) = settings.get(s.name()) else {
                continue;
            };
            let v = match reference::parse(s.name(), raw)? {
                Some(r) => Value::Reference(r),
                None => Value::Plain(SecretString::from(raw.to_string())),
            };
            values.insert(s, v);
        }
        let ttl = settings
            .duration("SECRET_CACHE_TTL")?
            .unwrap_or(DEFAULT_TTL);
        if ttl.is_zero() {
            return Err(ConfigError::new(
                "SECRET_CACHE_TTL",
                "must be greater than zero",
            ));
        }
        let refs: Vec<(SecretSetting, VaultRef)> = values
            .iter()
            .filter_map(|(s, v)| match v {
                Value::Reference(r) => Some((*s, r.clone())),
                Value::Plain(_) => None,
            })
            .collect();
        let (credential_desc, vaults) = if refs.is_empty() {
            ("none (no Key Vault references)".to_string(), None)
        } else {
            let http = vault::http_client(settings, &options.resolve)?;
            let (desc, cred) = match options.credential {
                Some(c) => ("injected credential".to_string(), c),
                None => {
                    let kind = credential::choose(settings)?;
                    let cred = credential::build(&kind, settings, http.clone())?;
                    (kind.description(), cred)
                }
            };
            let setting_of = |r: &VaultRef| {
                refs.iter()
                    .find(|(_, x)| x == r)
                    .map(|(s, _)| s.name())
                    .unwrap_or("SECRET")
            };
            let vaults = Vaults::new(refs.iter().map(|(_, r)| r), cred, http, setting_of)?;
            (desc, Some(vaults))
        };
        let slots = refs
            .iter()
            .map(|(_, r)| (r.clone(), Arc::new(Slot::default())))
            .collect();
        let msi_vars: Vec<&str> = [
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
            "MSI_ENDPOINT",
            "MSI_SECRET",
            "IDENTITY_SERVER_THUMBPRINT",
            "IMDS_ENDPOINT",
        ]
        .into_iter()
        .filter(|n| settings.get(n).is_some())
        .collect();
        tracing::info!(
            credential = %credential_desc,
            references = refs.len(),
            identity_settings_present = ?msi_vars,
            ttl_secs = ttl.as_secs(),
            "secret layer configured; Key Vault credential: {credential_desc}"
        );
        Ok(Secrets {
            inner: Arc::new(Inner {
                values,
                credential: credential_desc,
                vaults,
                slots,
                calls: AtomicU64::new(0),
                ttl,
                budget: options.budget.unwrap_or(VAULT_BUDGET),
                max_staleness: options.max_staleness.unwrap_or(MAX_STALENESS),
                error_backoff: options.error_backoff.unwrap_or(ERROR_BACKOFF),
                forced: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Whether the setting is set at all (plain or reference).
    pub fn is_configured(&self, s: SecretSetting) -> bool {
        self.inner.values.contains_key(&s)
    }

    /// Whether the setting is a Key Vault reference we resolve ourselves.
    pub fn is_vault_reference(&self, s: SecretSetting) -> bool {
        matches!(self.inner.values.get(&s), Some(Value::Reference(_)))
    }

    /// The value: plain values at once; references from the cache or the vault (single
    /// flight), bounded by the budget.
    pub async fn get(&self, s: SecretSetting) -> Result<SecretString, SecretError> {
        match self.inner.values.get(&s) {
            None => Err(SecretError::not_configured(s)),
            Some(Value::Plain(v)) => Ok(v.clone()),
            Some(Value::Reference(r)) => Inner::get_ref(&self.inner, s, r, false).await,
        }
    }

    /// A consumer says the value was rejected (SMTP auth failure, database authentication
    /// failure): the next get() refetches, at most once per [`REJECTION_INTERVAL`] per setting.
    pub fn report_rejected(&self, s: SecretSetting) {
        let Some(Value::Reference(r)) = self.inner.values.get(&s) else {
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
            lock(&slot.state).force = true;
        }
    }

    /// Fetch now from the vault, bypassing the cache (rate limited like
    /// [`Secrets::report_rejected`]; when the limit applies, the cached value is returned). For
    /// "refresh once and retry" after an authentication failure.
    pub async fn refresh(&self, s: SecretSetting) -> Result<SecretString, SecretError> {
        match self.inner.values.get(&s) {
            None => Err(SecretError::not_configured(s)),
            Some(Value::Plain(v)) => Ok(v.clone()),
            Some(Value::Reference(r)) => {
                let force = self.inner.take_rejection_slot(s);
                Inner::get_ref(&self.inner, s, r, force).await
            }
        }
    }

    /// Which credential was chosen, for the start-up log and diagnostics.
    pub fn credential_description(&self) -> String {
        self.inner.credential.clone()
    }

    /// How many vault fetches were started (tests and diagnostics).
    pub fn vault_calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }
}

/// Splits an `API_KEYS` value into its comma-separated keys (trimmed, empty ones dropped),
/// keeping each in a [`SecretString`].
pub fn split_keys(value: &SecretString) -> Vec<SecretString> {
    value
        .expose_secret()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| SecretString::from(k.to_string()))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the cache inconsistent in a way that
    // matters more than failing every request afterwards would.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn take_rejection_slot(&self, s: SecretSetting) -> bool {
        let mut forced = lock(&self.forced);
        let now = Instant::now();
        match forced.get(&s) {
            Some(t) if now.duration_since(*t) < REJECTION_INTERVAL => false,
            _ => {
                forced.insert(s, now);
                true
            }
        }
    }

    fn within_staleness(&self, c: &Cached, now: Instant) -> bool {
        now < c.fetched_at + self.ttl + self.max_staleness
    }

    /// How long to leave the vault alone after `e`: our back-off, or a longer Retry-After the
    /// vault sent when throttling (capped at a minute).
    fn backoff_for(&self, e: &FetchError) -> Duration {
        let hinted = match e.kind {
            SecretErrorKind::Unavailable => Duration::from_secs(e.retry_after.unwrap_or(0).min(60)),
            _ => Duration::ZERO,
        };
        self.error_backoff.max(hinted)
    }

    /// The stale value if allowed, else the error.
    fn stale_or_error(
        &self,
        s: SecretSetting,
        r: &VaultRef,
        value: Option<&Cached>,
        (e, at): &(FetchError, Instant),
        now: Instant,
    ) -> Result<SecretString, SecretError> {
        let remaining = (at.checked_add(self.backoff_for(e)).unwrap_or(now))
            .saturating_duration_since(now)
            .as_secs()
            .max(1);
        match value {
            Some(c) if self.within_staleness(c, now) => Ok(c.value.clone()),
            _ => Err(SecretError::from_fetch(s, r, e, Some(remaining))),
        }
    }

    fn decide(
        &self,
        s: SecretSetting,
        r: &VaultRef,
        st: &mut SlotState,
        force: bool,
        now: Instant,
    ) -> Decision {
        if force {
            return Decision::Fetch(st.generation);
        }
        if !st.force
            && let Some(c) = &st.value
            && now < c.fetched_at + self.ttl
        {
            let age = now.duration_since(c.fetched_at);
            let in_window = age >= self.ttl.mul_f64(0.9);
            let backing_off = st
                .last_error
                .as_ref()
                .is_some_and(|(e, at)| now < *at + self.backoff_for(e));
            let spawn = in_window && !st.refreshing && !backing_off;
            if spawn {
                st.refreshing = true;
            }
            return Decision::Serve(c.value.clone(), spawn);
        }
        // A pending rejection refetch still respects the back-off after a failure, so a dead
        // vault is not called by every request.
        if let Some(err) = &st.last_error
            && now < err.1 + self.backoff_for(&err.0)
        {
            return match self.stale_or_error(s, r, st.value.as_ref(), err, now) {
                Ok(v) => Decision::Serve(v, false),
                Err(e) => Decision::Fail(e),
            };
        }
        Decision::Fetch(st.generation)
    }

    async fn get_ref(
        self: &Arc<Self>,
        s: SecretSetting,
        r: &VaultRef,
        force: bool,
    ) -> Result<SecretString, SecretError> {
        let Some(slot) = self.slots.get(r) else {
            return Err(SecretError::not_configured(s));
        };
        let decision = self.decide(s, r, &mut lock(&slot.state), force, Instant::now());
        match decision {
            Decision::Serve(v, spawn) => {
                if spawn {
                    let inner = Arc::clone(self);
                    let slot = Arc::clone(slot);
                    let r = r.clone();
                    let generation = lock(&slot.state).generation;
                    tokio::spawn(async move {
                        let _ = inner.fetch_into(s, &r, &slot, generation).await;
                        lock(&slot.state).refreshing = false;
                    });
                }
                Ok(v)
            }
            Decision::Fail(e) => Err(e),
            Decision::Fetch(generation) => self.fetch_into(s, r, slot, generation).await,
        }
    }

    /// The single flight: the first caller fetches; callers that queued behind it take its
    /// outcome instead of calling the vault again.
    async fn fetch_into(
        &self,
        s: SecretSetting,
        r: &VaultRef,
        slot: &Slot,
        seen_generation: u64,
    ) -> Result<SecretString, SecretError> {
        let _flight = slot.fetch.lock().await;
        {
            let st = lock(&slot.state);
            if st.generation != seen_generation {
                return match (&st.last_error, &st.value) {
                    (None, Some(c)) => Ok(c.value.clone()),
                    (Some(err), v) => self.stale_or_error(s, r, v.as_ref(), err, Instant::now()),
                    (None, None) => Err(SecretError::not_configured(s)),
                };
            }
        }
        let Some(vaults) = &self.vaults else {
            return Err(SecretError::not_configured(s));
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = vaults.fetch(r, self.budget).await;
        let now = Instant::now();
        let mut st = lock(&slot.state);
        st.generation += 1;
        match result {
            Ok(f) => {
                tracing::info!(
                    setting = s.name(),
                    secret = %r.name,
                    version = f.version.as_deref().unwrap_or("?"),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "fetched secret from Key Vault"
                );
                st.value = Some(Cached {
                    value: f.value.clone(),
                    fetched_at: now,
                });
                st.last_error = None;
                st.force = false;
                Ok(f.value)
            }
            Err(e) => {
                // Staleness is judged when the request arrived, not after the retries.
                let stale = st
                    .value
                    .as_ref()
                    .is_some_and(|c| self.within_staleness(c, started));
                tracing::warn!(
                    setting = s.name(),
                    secret = %r.name,
                    vault = %r.vault_url,
                    code = %e.code,
                    cause = %e.detail,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    serving_cached_value = stale,
                    "Key Vault fetch failed{}",
                    if stale { "; serving the last good value" } else { "" }
                );
                let err = (e, now);
                let out = self.stale_or_error(s, r, st.value.as_ref(), &err, started);
                st.last_error = Some(err);
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_and_debug_redaction() {
        let s = Settings::from_pairs([
            ("DATABASE_URL", "postgres://u:hunter2@h/db"),
            ("API_KEYS", "k1hunter2, k2hunter2"),
        ]);
        let secrets = Secrets::from_settings(&s).unwrap();
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
            let keys = split_keys(&secrets.get(SecretSetting::ApiKeys).await.unwrap());
            assert_eq!(keys.len(), 2);
            assert_eq!(keys[1].expose_secret(), "k2hunter2");
            let e = secrets.get(SecretSetting::SmtpPassword).await.unwrap_err();
            assert_eq!(e.kind(), SecretErrorKind::NotConfigured);
            assert_eq!(e.retry_after_secs(), None);
            assert_eq!(e.to_string(), "SMTP_PASSWORD is not configured");
        });
        assert_eq!(secrets.vault_calls(), 0);
    }

    #[test]
    fn malformed_reference_and_ttl_errors() {
        let s =
            Settings::from_pairs([("SMTP_PASSWORD", "@Microsoft.KeyVault(VaultName=v;hunter2)")]);
        let e = Secrets::from_settings(&s).unwrap_err();
        assert_eq!(e.setting, "SMTP_PASSWORD");
        assert!(!e.to_string().contains("hunter2"));
        let s = Settings::from_pairs([("SECRET_CACHE_TTL", "0")]);
        assert_eq!(
            Secrets::from_settings(&s).unwrap_err().setting,
            "SECRET_CACHE_TTL"
        );
        let s = Settings::from_pairs([("SECRET_CACHE_TTL", "15m")]);
        assert!(Secrets::from_settings(&s).is_ok());
    }

    #[test]
    fn references_choose_a_credential_without_network() {
        let s = Settings::from_pairs([
            (
                "DATABASE_URL",
                "@Microsoft.KeyVault(VaultName=myvault;SecretName=db)",
            ),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
            ("IDENTITY_HEADER", "hdr-hunter2"),
        ]);
        let secrets = Secrets::from_settings(&s).unwrap();
        assert!(secrets.is_vault_reference(SecretSetting::DatabaseUrl));
        assert_eq!(
            secrets.credential_description(),
            "managed identity (App Service)"
        );
        assert!(!format!("{secrets:?}").contains("hunter2"));
        assert_eq!(secrets.vault_calls(), 0);
    }
}
