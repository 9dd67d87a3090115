//! Choosing and building the credential that authenticates to Key Vault.
//!
//! The choice is made from the app's settings (read once by
//! [`SecretsSettings`](super::SecretsSettings)) rather than from the process environment so that
//! it is testable (tests cannot `set_var`) and so that the start-up log can say exactly which
//! credential was chosen and why. Rules, first match wins:
//! 1. `AZURE_CREDENTIAL` = `managed_identity` | `workload_identity` | `client_secret` |
//!    `developer_tools` overrides everything.
//! 2. `AZURE_FEDERATED_TOKEN_FILE` → workload identity.
//! 3. `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET` → client secret.
//! 4. `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` → managed identity (App Service / Functions);
//!    `AZURE_CLIENT_ID` selects a user-assigned identity.
//! 5. Otherwise developer tools (Azure CLI, then azd) for local work.
//!
//! The IMDS endpoint (169.254.169.254) is used only when `AZURE_CREDENTIAL=managed_identity` is
//! explicit and `IDENTITY_*` are absent: never as a silent fallback, because off Azure it hangs
//! for over a minute and on the wrong host it may hand out a different identity.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::time::OffsetDateTime;
use secrecy::{ExposeSecret, SecretString};

use crate::config::ConfigError;

/// The credential settings as read (trimmed; empty ones are `None`), before the selection
/// rules pick a credential from them. Kept apart from the raw settings so that the rules see
/// only the settings they are about.
#[derive(Default)]
pub struct CredentialVars {
    /// `AZURE_CREDENTIAL`: an explicit choice that overrides the rules.
    pub azure_credential: Option<String>,
    /// `IDENTITY_ENDPOINT`: the App Service managed-identity endpoint.
    pub identity_endpoint: Option<String>,
    /// `IDENTITY_HEADER`: the App Service managed-identity header (a secret).
    pub identity_header: Option<SecretString>,
    /// `AZURE_CLIENT_ID`: a service principal's or user-assigned identity's client id.
    pub client_id: Option<String>,
    /// `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// `AZURE_CLIENT_SECRET`: a service principal's secret.
    pub client_secret: Option<SecretString>,
    /// `AZURE_FEDERATED_TOKEN_FILE`: where workload identity's federated token is written.
    pub federated_token_file: Option<PathBuf>,
}

/// The credential the settings select, with everything needed to build it, so that building
/// it cannot fail for a missing setting. Debug shows the description only: the identity header
/// and the client secret are never printed.
#[derive(Clone)]
pub enum CredentialChoice {
    /// App Service / Functions managed identity via `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`
    /// (our own small client, see [`AppServiceMsiCredential`]).
    AppServiceManagedIdentity {
        /// `IDENTITY_ENDPOINT`, parsed.
        endpoint: reqwest::Url,
        /// `IDENTITY_HEADER`.
        header: SecretString,
        /// A user-assigned identity's client id (`AZURE_CLIENT_ID`), if any.
        client_id: Option<String>,
    },
    /// The SDK's IMDS managed identity (VMs); only when asked for explicitly.
    ImdsManagedIdentity {
        /// A user-assigned identity's client id (`AZURE_CLIENT_ID`), if any.
        client_id: Option<String>,
    },
    /// Workload identity (federated token file, e.g. AKS).
    WorkloadIdentity {
        /// `AZURE_TENANT_ID`.
        tenant_id: String,
        /// `AZURE_CLIENT_ID`.
        client_id: String,
        /// `AZURE_FEDERATED_TOKEN_FILE`.
        token_file: PathBuf,
    },
    /// A service principal with a client secret.
    ClientSecret {
        /// `AZURE_TENANT_ID`.
        tenant_id: String,
        /// `AZURE_CLIENT_ID`.
        client_id: String,
        /// `AZURE_CLIENT_SECRET`.
        secret: SecretString,
    },
    /// Azure CLI / azd login on a developer machine.
    DeveloperTools,
}

impl std::fmt::Debug for CredentialChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description())
    }
}

impl CredentialChoice {
    /// A human description for the start-up log, so an operator can see which credential is
    /// used without the log showing any of its parameters.
    pub fn description(&self) -> String {
        match self {
            Self::AppServiceManagedIdentity {
                client_id: None, ..
            } => "managed identity (App Service)".into(),
            Self::AppServiceManagedIdentity {
                client_id: Some(_), ..
            } => "managed identity (App Service, user-assigned via AZURE_CLIENT_ID)".into(),
            Self::ImdsManagedIdentity { client_id: None } => {
                "managed identity (IMDS, explicitly requested)".into()
            }
            Self::ImdsManagedIdentity { client_id: Some(_) } => {
                "managed identity (IMDS, explicitly requested, user-assigned via AZURE_CLIENT_ID)"
                    .into()
            }
            Self::WorkloadIdentity { .. } => {
                "workload identity (AZURE_FEDERATED_TOKEN_FILE)".into()
            }
            Self::ClientSecret { .. } => "client secret (service principal)".into(),
            Self::DeveloperTools => "developer tools (Azure CLI / azd login)".into(),
        }
    }
}

/// A value the credential `what` needs: present, or an error naming the setting.
fn need<T: Clone>(v: &Option<T>, name: &str, what: &str) -> Result<T, ConfigError> {
    v.clone().ok_or_else(|| {
        ConfigError::new(
            name,
            format!("is required for the {what} credential but not set"),
        )
    })
}

/// Applies the selection rules (module docs) to `vars`, so that the choice is made, and its
/// settings validated, at start-up rather than at the first vault call. No network, no file
/// access. Errors name the missing or malformed setting, never a value.
pub fn choose(vars: &CredentialVars) -> Result<CredentialChoice, ConfigError> {
    let app_service = |client_id: Option<String>| -> Result<CredentialChoice, ConfigError> {
        let endpoint = vars
            .identity_endpoint
            .as_deref()
            .ok_or_else(|| ConfigError::new("IDENTITY_ENDPOINT", "is required but not set"))?;
        let endpoint = reqwest::Url::parse(endpoint)
            .map_err(|_| ConfigError::new("IDENTITY_ENDPOINT", "is not a valid URL"))?;
        let header = vars
            .identity_header
            .clone()
            .ok_or_else(|| ConfigError::new("IDENTITY_HEADER", "is required but not set"))?;
        Ok(CredentialChoice::AppServiceManagedIdentity {
            endpoint,
            header,
            client_id,
        })
    };
    let workload = || -> Result<CredentialChoice, ConfigError> {
        const WHAT: &str = "workload identity";
        let token_file = need(
            &vars.federated_token_file,
            "AZURE_FEDERATED_TOKEN_FILE",
            WHAT,
        )?;
        let tenant_id = need(&vars.tenant_id, "AZURE_TENANT_ID", WHAT)?;
        let client_id = need(&vars.client_id, "AZURE_CLIENT_ID", WHAT)?;
        Ok(CredentialChoice::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        })
    };
    let client_secret = || -> Result<CredentialChoice, ConfigError> {
        const WHAT: &str = "client secret";
        let tenant_id = need(&vars.tenant_id, "AZURE_TENANT_ID", WHAT)?;
        let client_id = need(&vars.client_id, "AZURE_CLIENT_ID", WHAT)?;
        let secret = need(&vars.client_secret, "AZURE_CLIENT_SECRET", WHAT)?;
        Ok(CredentialChoice::ClientSecret {
            tenant_id,
            client_id,
            secret,
        })
    };
    let client_id = vars.client_id.clone();
    let msi = vars.identity_endpoint.is_some() && vars.identity_header.is_some();
    if let Some(choice) = &vars.azure_credential {
        return match choice.to_ascii_lowercase().replace('-', "_").as_str() {
            "managed_identity" if msi => app_service(client_id),
            "managed_identity" => Ok(CredentialChoice::ImdsManagedIdentity { client_id }),
            "workload_identity" => workload(),
            "client_secret" => client_secret(),
            "developer_tools" => Ok(CredentialChoice::DeveloperTools),
            _ => Err(ConfigError::new(
                "AZURE_CREDENTIAL",
                "must be managed_identity, workload_identity, client_secret or developer_tools",
            )),
        };
    }
    if vars.federated_token_file.is_some() {
        return workload();
    }
    if vars.tenant_id.is_some() && vars.client_id.is_some() && vars.client_secret.is_some() {
        return client_secret();
    }
    if msi {
        return app_service(client_id);
    }
    Ok(CredentialChoice::DeveloperTools)
}

/// Builds the credential for `choice`, sending its requests through `http` (our timeouts, no
/// proxy, no redirects, the configured CA bundle). No network: SDK constructors only validate
/// their input (the workload identity one checks that the token file is readable).
pub fn build(
    choice: &CredentialChoice,
    http: reqwest::Client,
) -> Result<Arc<dyn TokenCredential>, ConfigError> {
    use azure_identity::*;
    let sdk_err = |setting: &str, problem: &str| {
        let (setting, problem) = (setting.to_string(), problem.to_string());
        move |e: azure_core::Error| {
            // SDK constructor errors describe the input's shape (e.g. an invalid tenant id);
            // the kind is enough and cannot leak a value.
            ConfigError::new(
                setting.clone(),
                format!("{problem} ({} error from the SDK)", e.kind_label()),
            )
        }
    };
    let client_options = || azure_core::http::ClientOptions {
        transport: Some(azure_core::http::Transport::new(Arc::new(http.clone()))),
        retry: super::vault::retry_options(),
        ..Default::default()
    };
    Ok(match choice {
        CredentialChoice::AppServiceManagedIdentity {
            endpoint,
            header,
            client_id,
        } => Arc::new(AppServiceMsiCredential::new(
            endpoint.clone(),
            header.clone(),
            client_id.clone(),
            http,
        )),
        CredentialChoice::ImdsManagedIdentity { client_id } => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                ..Default::default()
            };
            ManagedIdentityCredential::new(Some(options)).map_err(sdk_err(
                "AZURE_CREDENTIAL",
                "managed_identity: the IMDS managed identity credential could not be built",
            ))?
        }
        CredentialChoice::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => {
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(),
                },
                client_id: Some(client_id.clone()),
                tenant_id: Some(tenant_id.clone()),
                token_file_path: Some(token_file.clone()),
            };
            WorkloadIdentityCredential::new(Some(options)).map_err(sdk_err(
                "AZURE_FEDERATED_TOKEN_FILE",
                "could not be used: the token file must exist and be readable, and AZURE_TENANT_ID must be a tenant id",
            ))?
        }
        CredentialChoice::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => ClientSecretCredential::new(
            tenant_id,
            client_id.clone(),
            Secret::new(secret.expose_secret().to_string()),
            Some(ClientSecretCredentialOptions {
                client_options: client_options(),
            }),
        )
        .map_err(sdk_err(
            "AZURE_TENANT_ID",
            "was rejected by the client secret credential (it must be a tenant id or domain)",
        ))?,
        CredentialChoice::DeveloperTools => {
            DeveloperToolsCredential::new(None).map_err(sdk_err(
                "AZURE_CREDENTIAL",
                "developer_tools: the Azure CLI / azd credential could not be built",
            ))?
        }
    })
}

trait KindLabel {
    fn kind_label(&self) -> &'static str;
}

impl KindLabel for azure_core::Error {
    fn kind_label(&self) -> &'static str {
        match self.kind() {
            ErrorKind::HttpResponse { .. } => "http response",
            ErrorKind::Connection => "connection",
            ErrorKind::Io => "io",
            ErrorKind::DataConversion => "data conversion",
            ErrorKind::Credential => "credential",
            _ => "other",
        }
    }
}

/// The App Service / Functions managed-identity protocol (api-version 2019-08-01), written out
/// instead of using the SDK's `ManagedIdentityCredential` because:
/// - the SDK reads `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` from the *process* environment, which
///   tests cannot set safely; ours come from the app's settings;
/// - the SDK silently falls back to IMDS when they are missing; we never do;
/// - it is small: one GET with `X-IDENTITY-HEADER`, `expires_on` as a string of Unix seconds.
///
/// The token is cached until 5 minutes before it expires.
pub struct AppServiceMsiCredential {
    endpoint: reqwest::Url,
    header: SecretString,
    client_id: Option<String>,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Option<(String, AccessToken)>>,
}

impl std::fmt::Debug for AppServiceMsiCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppServiceMsiCredential")
            .field("endpoint", &self.endpoint.as_str())
            .field("user_assigned", &self.client_id.is_some())
            .finish_non_exhaustive()
    }
}

/// Refresh a token when less than this remains (the SDK's own window).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(serde::Deserialize)]
struct MsiResponse {
    access_token: String,
    expires_on: String,
}

impl AppServiceMsiCredential {
    /// Builds the credential; no network until the first token is asked for.
    pub fn new(
        endpoint: reqwest::Url,
        header: SecretString,
        client_id: Option<String>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            endpoint,
            header,
            client_id,
            http,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    async fn fetch(&self, resource: &str) -> azure_core::Result<AccessToken> {
        let cred_err = |m: String| azure_core::Error::with_message(ErrorKind::Credential, m);
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("api-version", "2019-08-01")
            .append_pair("resource", resource);
        if let Some(id) = &self.client_id {
            url.query_pairs_mut().append_pair("client_id", id);
        }
        let started = Instant::now();
        let resp = self
            .http
            .get(url)
            .header("X-IDENTITY-HEADER", self.header.expose_secret())
            .header("Metadata", "true")
            .send()
            .await
            .map_err(|e| {
                cred_err(format!(
                    "managed identity endpoint unreachable after {} ms ({})",
                    started.elapsed().as_millis(),
                    if e.is_timeout() {
                        "timeout"
                    } else if e.is_connect() {
                        "connect"
                    } else {
                        "request"
                    }
                ))
            })?;
        let status = resp.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                400 => "the requested identity is not assigned to this app",
                401 | 403 => "the identity header was refused",
                502 | 504 => "gateway error",
                _ => "unexpected status",
            };
            return Err(cred_err(format!(
                "managed identity endpoint answered HTTP {}: {hint}",
                status.as_u16()
            )));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|_| cred_err("managed identity endpoint response could not be read".into()))?;
        // serde's message could quote the token; say only that the shape was wrong.
        let body: MsiResponse = serde_json::from_slice(&bytes).map_err(|_| {
            cred_err(
                "managed identity endpoint sent an unreadable token response (expires_on must be a string)"
                    .into(),
            )
        })?;
        let secs: i64 =
            body.expires_on.trim().parse().map_err(|_| {
                cred_err("managed identity token has a malformed expires_on".into())
            })?;
        let expires_on = OffsetDateTime::from_unix_timestamp(secs).map_err(|_| {
            cred_err("managed identity token has an out-of-range expires_on".into())
        })?;
        Ok(AccessToken::new(body.access_token, expires_on))
    }
}

#[async_trait::async_trait]
impl TokenCredential for AppServiceMsiCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let [scope] = scopes else {
            return Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                "managed identity accepts exactly one scope",
            ));
        };
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        let mut cache = self.cache.lock().await;
        if let Some((cached_resource, token)) = cache.as_ref()
            && cached_resource == resource
            && token.expires_on - OffsetDateTime::now_utc() > TOKEN_REFRESH_MARGIN
        {
            return Ok(token.clone());
        }
        let token = self.fetch(resource).await?;
        *cache = Some((resource.to_string(), token.clone()));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_identity_endpoint_names_the_setting() {
        let vars = CredentialVars {
            identity_endpoint: Some("not a url hunter2".into()),
            identity_header: Some(SecretString::from("h")),
            ..Default::default()
        };
        let e = choose(&vars).unwrap_err();
        assert_eq!(e.setting, "IDENTITY_ENDPOINT");
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn app_service_credential_is_built_without_network() {
        let vars = CredentialVars {
            identity_endpoint: Some("http://127.0.0.1:9/msi/token".into()),
            identity_header: Some(SecretString::from("hdr-hunter2")),
            ..Default::default()
        };
        let choice = choose(&vars).unwrap();
        assert!(!format!("{choice:?}").contains("hunter2"));
        build(&choice, reqwest::Client::new()).unwrap();
    }
}
