//! Choosing and building the credential that authenticates to Key Vault.
//!
//! The choice is made from our [`Settings`] snapshot rather than from the process environment so
//! that it is testable (tests cannot `set_var`) and so that the start-up log can say exactly
//! which credential was chosen and why. Rules, first match wins:
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::time::OffsetDateTime;

use crate::config::{ConfigError, Settings};

/// Which kind of credential the settings select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// App Service / Functions managed identity via `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`
    /// (our own small client, see [`AppServiceMsiCredential`]); `Some(client_id)` for a
    /// user-assigned identity.
    AppServiceManagedIdentity {
        /// The user-assigned identity's client id, if any.
        client_id: Option<String>,
    },
    /// The SDK's IMDS managed identity (VMs); only when asked for explicitly.
    ImdsManagedIdentity {
        /// The user-assigned identity's client id, if any.
        client_id: Option<String>,
    },
    /// Workload identity (federated token file, e.g. AKS).
    WorkloadIdentity,
    /// A service principal with a client secret.
    ClientSecret,
    /// Azure CLI / azd login on a developer machine.
    DeveloperTools,
}

impl CredentialKind {
    /// A human description for the start-up log.
    pub fn description(&self) -> String {
        match self {
            Self::AppServiceManagedIdentity { client_id: None } => {
                "managed identity (App Service)".into()
            }
            Self::AppServiceManagedIdentity { client_id: Some(_) } => {
                "managed identity (App Service, user-assigned via AZURE_CLIENT_ID)".into()
            }
            Self::ImdsManagedIdentity { client_id: None } => {
                "managed identity (IMDS, explicitly requested)".into()
            }
            Self::ImdsManagedIdentity { client_id: Some(_) } => {
                "managed identity (IMDS, explicitly requested, user-assigned via AZURE_CLIENT_ID)"
                    .into()
            }
            Self::WorkloadIdentity => "workload identity (AZURE_FEDERATED_TOKEN_FILE)".into(),
            Self::ClientSecret => "client secret (service principal)".into(),
            Self::DeveloperTools => "developer tools (Azure CLI / azd login)".into(),
        }
    }
}

/// Applies the selection rules (module docs) to `settings`. No network, no file access.
pub fn choose(settings: &Settings) -> Result<CredentialKind, ConfigError> {
    let has = |n: &str| settings.get(n).is_some();
    let client_id = settings.get("AZURE_CLIENT_ID").map(str::to_string);
    let msi = has("IDENTITY_ENDPOINT") && has("IDENTITY_HEADER");
    let need = |names: &[&str], what: &str| -> Result<(), ConfigError> {
        for n in names {
            if !has(n) {
                return Err(ConfigError::new(
                    *n,
                    format!("is required for the {what} credential but not set"),
                ));
            }
        }
        Ok(())
    };
    if let Some(choice) = settings.get("AZURE_CREDENTIAL") {
        return match choice.to_ascii_lowercase().replace('-', "_").as_str() {
            "managed_identity" if msi => {
                Ok(CredentialKind::AppServiceManagedIdentity { client_id })
            }
            "managed_identity" => Ok(CredentialKind::ImdsManagedIdentity { client_id }),
            "workload_identity" => {
                need(
                    &[
                        "AZURE_FEDERATED_TOKEN_FILE",
                        "AZURE_TENANT_ID",
                        "AZURE_CLIENT_ID",
                    ],
                    "workload identity",
                )?;
                Ok(CredentialKind::WorkloadIdentity)
            }
            "client_secret" => {
                need(
                    &["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"],
                    "client secret",
                )?;
                Ok(CredentialKind::ClientSecret)
            }
            "developer_tools" => Ok(CredentialKind::DeveloperTools),
            _ => Err(ConfigError::new(
                "AZURE_CREDENTIAL",
                "must be managed_identity, workload_identity, client_secret or developer_tools",
            )),
        };
    }
    if has("AZURE_FEDERATED_TOKEN_FILE") {
        need(&["AZURE_TENANT_ID", "AZURE_CLIENT_ID"], "workload identity")?;
        return Ok(CredentialKind::WorkloadIdentity);
    }
    if has("AZURE_TENANT_ID") && has("AZURE_CLIENT_ID") && has("AZURE_CLIENT_SECRET") {
        return Ok(CredentialKind::ClientSecret);
    }
    if msi {
        return Ok(CredentialKind::AppServiceManagedIdentity { client_id });
    }
    Ok(CredentialKind::DeveloperTools)
}

/// Builds the credential for `kind`. No network: SDK constructors only validate their input.
pub fn build(
    kind: &CredentialKind,
    settings: &Settings,
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
    let get = |n: &str| settings.get(n).map(str::to_string);
    Ok(match kind {
        CredentialKind::AppServiceManagedIdentity { client_id } => {
            let endpoint = settings.required("IDENTITY_ENDPOINT")?;
            let endpoint = reqwest::Url::parse(endpoint)
                .map_err(|_| ConfigError::new("IDENTITY_ENDPOINT", "is not a valid URL"))?;
            Arc::new(AppServiceMsiCredential::new(
                endpoint,
                settings.secret("IDENTITY_HEADER").ok_or_else(|| {
                    ConfigError::new("IDENTITY_HEADER", "is required but not set")
                })?,
                client_id.clone(),
                http,
            ))
        }
        CredentialKind::ImdsManagedIdentity { client_id } => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                ..Default::default()
            };
            ManagedIdentityCredential::new(Some(options)).map_err(sdk_err(
                "AZURE_CREDENTIAL",
                "managed_identity: the IMDS managed identity credential could not be built",
            ))?
        }
        CredentialKind::WorkloadIdentity => {
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(),
                },
                client_id: get("AZURE_CLIENT_ID"),
                tenant_id: get("AZURE_TENANT_ID"),
                token_file_path: get("AZURE_FEDERATED_TOKEN_FILE").map(Into::into),
            };
            WorkloadIdentityCredential::new(Some(options)).map_err(sdk_err(
                "AZURE_FEDERATED_TOKEN_FILE",
                "could not be used: the token file must exist and be readable, and AZURE_TENANT_ID must be a tenant id",
            ))?
        }
        CredentialKind::ClientSecret => {
            let tenant = settings.required("AZURE_TENANT_ID")?;
            let client = settings.required("AZURE_CLIENT_ID")?.to_string();
            let secret = settings.required("AZURE_CLIENT_SECRET")?.to_string();
            ClientSecretCredential::new(
                tenant,
                client,
                Secret::new(secret),
                Some(ClientSecretCredentialOptions {
                    client_options: client_options(),
                }),
            )
            .map_err(sdk_err(
                "AZURE_TENANT_ID",
                "was rejected by the client secret credential (it must be a tenant id or domain)",
            ))?
        }
        CredentialKind::DeveloperTools => DeveloperToolsCredential::new(None).map_err(sdk_err(
            "AZURE_CREDENTIAL",
            "developer_tools: the Azure CLI / azd credential could not be built",
        ))?,
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
///   tests cannot set safely; we read them from [`Settings`];
/// - the SDK silently falls back to IMDS when they are missing; we never do;
/// - it is small: one GET with `X-IDENTITY-HEADER`, `expires_on` as a string of Unix seconds.
///
/// The token is cached until 5 minutes before it expires.
pub struct AppServiceMsiCredential {
    endpoint: reqwest::Url,
    header: secrecy::SecretString,
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
        header: secrecy::SecretString,
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
        use secrecy::ExposeSecret;
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

    fn kind(pairs: &[(&str, &str)]) -> Result<CredentialKind, ConfigError> {
        choose(&Settings::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn selection_rules() {
        use CredentialKind::*;
        assert_eq!(kind(&[]).unwrap(), DeveloperTools);
        let msi = [
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi"),
            ("IDENTITY_HEADER", "h"),
        ];
        assert_eq!(
            kind(&msi).unwrap(),
            AppServiceManagedIdentity { client_id: None }
        );
        let mut ua = msi.to_vec();
        ua.push(("AZURE_CLIENT_ID", "cid"));
        assert_eq!(
            kind(&ua).unwrap(),
            AppServiceManagedIdentity {
                client_id: Some("cid".into())
            }
        );
        // Only one of the two MSI variables: not managed identity, and never IMDS.
        assert_eq!(
            kind(&[("IDENTITY_ENDPOINT", "http://x")]).unwrap(),
            DeveloperTools
        );
        let sp = [
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
        ];
        assert_eq!(kind(&sp).unwrap(), ClientSecret);
        let mut sp_msi = sp.to_vec();
        sp_msi.extend(msi);
        assert_eq!(kind(&sp_msi).unwrap(), ClientSecret);
        let mut wi = sp_msi.clone();
        wi.push(("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"));
        assert_eq!(kind(&wi).unwrap(), WorkloadIdentity);
        let e = kind(&[("AZURE_FEDERATED_TOKEN_FILE", "/t")]).unwrap_err();
        assert_eq!(e.setting, "AZURE_TENANT_ID");
    }

    #[test]
    fn explicit_override() {
        use CredentialKind::*;
        let mut s = vec![
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_CREDENTIAL", "developer_tools"),
        ];
        assert_eq!(kind(&s).unwrap(), DeveloperTools);
        s[3].1 = "managed_identity";
        // No IDENTITY_*: IMDS, but only because it was asked for.
        assert_eq!(
            kind(&s).unwrap(),
            ImdsManagedIdentity {
                client_id: Some("c".into())
            }
        );
        s.push(("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi"));
        s.push(("IDENTITY_HEADER", "h"));
        assert_eq!(
            kind(&s).unwrap(),
            AppServiceManagedIdentity {
                client_id: Some("c".into())
            }
        );
        assert_eq!(
            kind(&[("AZURE_CREDENTIAL", "Client-Secret")])
                .unwrap_err()
                .setting,
            "AZURE_TENANT_ID"
        );
        assert_eq!(
            kind(&[("AZURE_CREDENTIAL", "workload_identity")])
                .unwrap_err()
                .setting,
            "AZURE_FEDERATED_TOKEN_FILE"
        );
        let e = kind(&[("AZURE_CREDENTIAL", "hunter2")]).unwrap_err();
        assert_eq!(e.setting, "AZURE_CREDENTIAL");
        assert!(!e.to_string().contains("hunter2"));
    }
}
