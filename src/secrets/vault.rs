//! The Key Vault side: one HTTP client, one `SecretClient` per vault (reused, so the 401
//! challenge round trip happens once per vault), explicit retry and time budgets, and mapping
//! of SDK errors to our error kinds without ever carrying a value.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use secrecy::SecretString;

use super::SecretErrorKind;
use super::reference::{VaultRef, is_loopback_host};
use crate::config::ConfigError;

/// The most a single vault fetch (including token acquisition and retries) may take. The SDK
/// default can hang for ~80 s on a dead vault; a request must not.
pub const VAULT_BUDGET: Duration = Duration::from_secs(5);
/// TCP connect timeout for vault and identity endpoints, so an unreachable endpoint fails
/// within [`VAULT_BUDGET`] instead of at the operating system's much longer connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Read timeout for vault and identity endpoints, so a connection that stalls mid-answer
/// cannot hold a request either.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// At most two retries with a short back-off: the budget above bounds them anyway, and
/// throttling answers (429 with Retry-After) are better handled by serving the cache.
pub fn retry_options() -> RetryOptions {
    RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(200),
        max_retries: 2,
        max_total_elapsed: azure_core::time::Duration::seconds(5),
        max_delay: azure_core::time::Duration::seconds(2),
    })
}

/// The HTTP client shared by the vault clients and the managed-identity credential:
/// `ca_bundle` (`SSL_CERT_FILE`, when set) is trusted in addition to the system roots, so a
/// vault behind a private CA or a local fake can be reached; no proxy (the vault and the
/// identity endpoint are reached directly), no redirects (a redirected bearer token would
/// leak), and explicit timeouts. `resolve` pins host names to addresses (tests, tools).
pub fn http_client(
    ca_bundle: Option<&Path>,
    resolve: &[(String, SocketAddr)],
) -> Result<reqwest::Client, ConfigError> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT);
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path)
            .map_err(|_| ConfigError::new("SSL_CERT_FILE", "names a file that cannot be read"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
            ConfigError::new("SSL_CERT_FILE", "is not a PEM bundle of certificates")
        })?;
        if certs.is_empty() {
            return Err(ConfigError::new("SSL_CERT_FILE", "contains no certificate"));
        }
        b = b.tls_certs_merge(certs);
    }
    for (host, addr) in resolve {
        b = b.resolve(host, *addr);
    }
    b.build()
        .map_err(|_| ConfigError::new("SSL_CERT_FILE", "could not be used to build a TLS client"))
}

/// A value read from the vault, with the version it came from so the log can say which
/// version is now in use (e.g. after a rotation).
pub struct Fetched {
    /// The secret value.
    pub value: SecretString,
    /// The version the vault returned (from the secret id), for logs.
    pub version: Option<String>,
}

/// Why a fetch failed, in the terms the cache and the HTTP layer need (kind, code,
/// Retry-After); never contains a value.
#[derive(Debug, Clone)]
pub struct FetchError {
    /// The coarse kind, which decides status codes and whether a stale value may be served.
    pub kind: SecretErrorKind,
    /// The vault's error code (`SecretNotFound`, `Forbidden`, `Throttled`, …) or a short label.
    pub code: String,
    /// The vault's Retry-After, or our default hint, in seconds.
    pub retry_after: Option<u64>,
    /// The SDK's cause chain for the log (transport and status text, never a value).
    pub detail: String,
}

/// One `SecretClient` per vault URL, created up front (no network) and reused, so the 401
/// challenge round trip happens once per vault, not once per fetch.
pub struct Vaults {
    clients: HashMap<String, SecretClient>,
}

impl Vaults {
    /// Builds a client for each distinct vault among `refs`; `setting_of` names the setting in
    /// the error when a vault URL is refused, since the URL itself comes from that setting.
    pub fn new<'a>(
        refs: impl IntoIterator<Item = &'a VaultRef>,
        credential: Arc<dyn TokenCredential>,
        http: reqwest::Client,
        setting_of: impl Fn(&VaultRef) -> String,
    ) -> Result<Self, ConfigError> {
        let mut clients = HashMap::new();
        for r in refs {
            if clients.contains_key(&r.vault_url) {
                continue;
            }
            let options = SecretClientOptions {
                client_options: ClientOptions {
                    transport: Some(Transport::new(Arc::new(http.clone()))),
                    retry: retry_options(),
                    ..Default::default()
                },
                // Relaxed only for a local emulator / test fake on loopback: the check exists
                // so that a token for vault.azure.net is not sent to a look-alike host.
                verify_challenge_resource: Some(!is_loopback_host(&r.host)),
                ..Default::default()
            };
            let client = SecretClient::new(&r.vault_url, credential.clone(), Some(options))
                .map_err(|_| {
                    ConfigError::new(setting_of(r), "names a vault URL the client rejects")
                })?;
            clients.insert(r.vault_url.clone(), client);
        }
        Ok(Self { clients })
    }

    /// Fetches one secret, cut off after `budget` (normally [`VAULT_BUDGET`]) so that a dead or
    /// hung vault cannot hold a request; errors are mapped to [`FetchError`].
    pub async fn fetch(&self, r: &VaultRef, budget: Duration) -> Result<Fetched, FetchError> {
        let Some(client) = self.clients.get(&r.vault_url) else {
            return Err(FetchError {
                kind: SecretErrorKind::Unavailable,
                code: "NoClient".into(),
                retry_after: None,
                detail: String::new(),
            });
        };
        let options = SecretClientGetSecretOptions {
            secret_version: r.version.clone(),
            ..Default::default()
        };
        let call = async {
            let resp = client.get_secret(&r.name, Some(options)).await?;
            resp.into_model()
        };
        let secret = match tokio::time::timeout(budget, call).await {
            Err(_) => {
                return Err(FetchError {
                    kind: SecretErrorKind::Unavailable,
                    code: format!("Timeout ({} ms budget)", budget.as_millis()),
                    retry_after: Some(5),
                    detail: "the vault did not answer within the budget".into(),
                });
            }
            Ok(Err(e)) => {
                let mut fe = map_error(&e);
                fe.detail = cause_chain(&e);
                return Err(fe);
            }
            Ok(Ok(s)) => s,
        };
        let version = secret.id.as_deref().and_then(|id| {
            id.trim_end_matches('/')
                .rsplit('/')
                .next()
                .map(str::to_string)
        });
        match secret.value {
            Some(v) => Ok(Fetched {
                value: SecretString::from(v),
                version,
            }),
            None => Err(FetchError {
                kind: SecretErrorKind::NotFound,
                code: "NoValue".into(),
                retry_after: Some(60),
                detail: "the vault returned the secret without a value".into(),
            }),
        }
    }
}

fn map_error(e: &azure_core::Error) -> FetchError {
    match e.kind() {
        ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let status = u16::from(*status);
            let code = error_code
                .clone()
                .filter(|c| {
                    c.len() <= 64
                        && c.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                })
                .unwrap_or_else(|| format!("HTTP{status}"));
            let kind = match status {
                404 => SecretErrorKind::NotFound,
                403 => SecretErrorKind::Forbidden,
                401 => SecretErrorKind::Credential,
                _ => SecretErrorKind::Unavailable,
            };
            let retry_after = raw_response
                .as_ref()
                .and_then(|r| {
                    r.headers()
                        .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
                .or(match kind {
                    SecretErrorKind::Unavailable => Some(5),
                    _ => Some(60),
                });
            FetchError {
                kind,
                code: format!("{code} (HTTP {status})"),
                retry_after,
                detail: String::new(),
            }
        }
        ErrorKind::Credential => FetchError {
            kind: SecretErrorKind::Credential,
            code: "CredentialUnavailable".into(),
            retry_after: Some(30),
            detail: String::new(),
        },
        ErrorKind::Connection | ErrorKind::Io => FetchError {
            kind: SecretErrorKind::Unavailable,
            code: "VaultUnreachable".into(),
            retry_after: Some(5),
            detail: String::new(),
        },
        ErrorKind::DataConversion => FetchError {
            kind: SecretErrorKind::Unavailable,
            code: "UnreadableResponse".into(),
            retry_after: Some(5),
            detail: String::new(),
        },
        _ => FetchError {
            kind: SecretErrorKind::Unavailable,
            code: "VaultRequestFailed".into(),
            retry_after: Some(5),
            detail: String::new(),
        },
    }
}

/// The causes of an SDK error, for the log (one line, bounded). SDK messages describe
/// transports and statuses; they never contain a secret value (bodies of successful answers
/// are never turned into errors).
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    let mut n = 0;
    while let Some(c) = cur {
        out.push_str(" <- ");
        out.push_str(&c.to_string());
        cur = c.source();
        n += 1;
        if n > 8 {
            break;
        }
    }
    out.chars().take(400).collect()
}
