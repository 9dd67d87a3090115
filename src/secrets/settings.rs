//! The secret layer's settings, read from the raw [`Settings`] snapshot once, parsed and
//! validated, before anything is built from them.
//!
//! This is the only place in the secret layer that looks at [`Settings`]: everything after it
//! (the vault client, the credential, the cache) works on typed values, so a malformed setting
//! is reported at start-up, in one place, and the runtime code cannot read a setting that was
//! not validated. Errors name the setting and what is wrong, never the value; secret-bearing
//! values are kept in [`SecretString`] from the moment they are read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::SecretSetting;
use super::credential::{self, CredentialChoice, CredentialVars};
use super::reference::{self, VaultRef};
use crate::config::{ConfigError, Settings};

/// How long a value read from Key Vault is used before it is read again, when
/// `SECRET_CACHE_TTL` is not set: an hour keeps vault traffic (and throttling risk) negligible
/// while a rotation is still picked up the same hour.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// The identity-related settings whose presence (never their values) the start-up log lists,
/// so that "why was this credential chosen?" can be answered from the log alone.
const IDENTITY_SETTINGS: [&str; 6] = [
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
];

/// What one secret setting holds.
#[derive(Clone)]
pub(super) enum SecretValue {
    /// The value itself (local development, or a reference the platform already resolved).
    Plain(SecretString),
    /// A Key Vault reference we resolve ourselves.
    Reference(VaultRef),
}

impl SecretValue {
    /// How Debug output and diagnostics show the value: never the value itself.
    pub(super) fn describe(value: Option<&SecretValue>) -> String {
        match value {
            None => "not set".into(),
            Some(SecretValue::Plain(_)) => "plain value (redacted)".into(),
            Some(SecretValue::Reference(r)) => {
                format!("Key Vault secret '{}' in {}", r.name, r.vault_url)
            }
        }
    }
}

/// Everything the secret layer reads from the settings, already parsed and validated, so that
/// [`Secrets::new`](super::Secrets::new) builds the runtime part without looking at a raw
/// setting again. Build it with [`SecretsSettings::from_settings`]; no network, no file access.
///
/// Debug shows which settings are plain values or references and which credential was chosen,
/// never a value.
#[derive(Clone)]
pub struct SecretsSettings {
    /// `DATABASE_URL`, `STATE_DATABASE_URL`, `SMTP_PASSWORD`, `API_KEYS`: the ones that are set.
    pub(super) values: HashMap<SecretSetting, SecretValue>,
    /// Every other setting, by name, for the named settings a reports file refers to (a
    /// destination's `url_setting` and `signing_secret_setting`): which ones it names is only
    /// known once the reports file is read, so all are kept, wrapped, each a plain value or a
    /// parsed reference; a malformed reference keeps its problem (naming the setting, never the
    /// value) for whoever asks for it, so an unrelated setting cannot stop the app.
    pub(super) named: HashMap<String, Result<SecretValue, String>>,
    /// `SECRET_CACHE_TTL` (default [`DEFAULT_TTL`]); never zero.
    pub(super) cache_ttl: Duration,
    /// The credential the settings select, with its parameters; `None` when no setting is a
    /// Key Vault reference (then no credential is needed and the credential settings are not
    /// read, so a stray one cannot stop an app that uses plain values).
    pub(super) credential: Option<CredentialChoice>,
    /// `SSL_CERT_FILE`: a PEM bundle trusted in addition to the system roots (read when the
    /// vault client is built).
    pub(super) ca_bundle: Option<PathBuf>,
    /// Which of the identity settings are present (names only), for the start-up log.
    pub(super) identity_settings_present: Vec<&'static str>,
}

impl SecretsSettings {
    /// Reads and validates the secret layer's settings: each secret setting as a plain value or
    /// a parsed Key Vault reference, `SECRET_CACHE_TTL`, the credential (only when a reference
    /// needs one), `SSL_CERT_FILE` and the identity settings present. A malformed reference or
    /// credential setting is an error naming the setting, never its value.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let mut values = HashMap::new();
        for s in SecretSetting::ALL {
            let Some(raw) = settings.get(s.name()) else {
                continue;
            };
            let v = match reference::parse(s.name(), raw)? {
                Some(r) => SecretValue::Reference(r),
                None => SecretValue::Plain(SecretString::from(raw.to_string())),
            };
            values.insert(s, v);
        }
        let mut named = HashMap::new();
        for name in settings.names() {
            if SecretSetting::ALL.iter().any(|s| s.name() == name) {
                continue;
            }
            let Some(raw) = settings.get(name) else {
                continue;
            };
            let v = match reference::parse(name, raw) {
                Ok(Some(r)) => Ok(SecretValue::Reference(r)),
                Ok(None) => Ok(SecretValue::Plain(SecretString::from(raw.to_string()))),
                Err(e) => Err(e.to_string()),
            };
            named.insert(name.to_string(), v);
        }
        let cache_ttl = settings
            .duration("SECRET_CACHE_TTL")?
            .unwrap_or(DEFAULT_TTL);
        if cache_ttl.is_zero() {
            return Err(ConfigError::new(
                "SECRET_CACHE_TTL",
                "must be greater than zero",
            ));
        }
        let any_reference = values
            .values()
            .chain(named.values().filter_map(|v| v.as_ref().ok()))
            .any(|v| matches!(v, SecretValue::Reference(_)));
        let credential = if any_reference {
            Some(credential::choose(&credential_vars(settings))?)
        } else {
            None
        };
        Ok(Self {
            values,
            named,
            cache_ttl,
            credential,
            ca_bundle: settings.get("SSL_CERT_FILE").map(PathBuf::from),
            identity_settings_present: IDENTITY_SETTINGS
                .into_iter()
                .filter(|n| settings.get(n).is_some())
                .collect(),
        })
    }

    /// The value of `setting` when it is a plain value (not a Key Vault reference), so start-up
    /// can validate it (e.g. that API keys are long enough) before any request needs it.
    pub fn plain_value(&self, setting: SecretSetting) -> Option<&SecretString> {
        match self.values.get(&setting) {
            Some(SecretValue::Plain(v)) => Some(v),
            _ => None,
        }
    }

    /// The references among the named settings, in name order.
    pub(super) fn named_references(&self) -> Vec<(String, VaultRef)> {
        let mut out: Vec<(String, VaultRef)> = self
            .named
            .iter()
            .filter_map(|(n, v)| match v {
                Ok(SecretValue::Reference(r)) => Some((n.clone(), r.clone())),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The references to resolve, in [`SecretSetting::ALL`] order.
    pub(super) fn references(&self) -> Vec<(SecretSetting, VaultRef)> {
        SecretSetting::ALL
            .into_iter()
            .filter_map(|s| match self.values.get(&s) {
                Some(SecretValue::Reference(r)) => Some((s, r.clone())),
                _ => None,
            })
            .collect()
    }
}

/// The credential for an identity-based connection named `prefix` (`AzureWebJobsStorage`):
/// the Key Vault credential's rules, except that `<prefix>__credential=managedidentity` asks for
/// the managed identity explicitly, and then `<prefix>__clientId` picks a user-assigned one, as
/// the Functions host reads those settings. Errors name the setting, never a value.
pub fn identity_connection_credential(
    settings: &Settings,
    prefix: &str,
) -> Result<CredentialChoice, ConfigError> {
    let mut vars = credential_vars(settings);
    let credential_setting = format!("{prefix}__credential");
    if let Some(c) = settings.get(&credential_setting) {
        if !c.eq_ignore_ascii_case("managedidentity") {
            return Err(ConfigError::new(
                credential_setting,
                "must be managedidentity, or unset to use the Key Vault credential",
            ));
        }
        vars.azure_credential = Some("managed_identity".into());
        if let Some(id) = settings.get(&format!("{prefix}__clientId")) {
            vars.client_id = Some(id.to_string());
        }
    }
    credential::choose(&vars)
}

/// The credential settings as read (trimmed, empty ones absent); [`credential::choose`] applies
/// the selection rules to them.
fn credential_vars(settings: &Settings) -> CredentialVars {
    let get = |n: &str| settings.get(n).map(str::to_string);
    CredentialVars {
        azure_credential: get("AZURE_CREDENTIAL"),
        identity_endpoint: get("IDENTITY_ENDPOINT"),
        identity_header: settings.secret("IDENTITY_HEADER"),
        client_id: get("AZURE_CLIENT_ID"),
        tenant_id: get("AZURE_TENANT_ID"),
        client_secret: settings.secret("AZURE_CLIENT_SECRET"),
        federated_token_file: settings
            .get("AZURE_FEDERATED_TOKEN_FILE")
            .map(PathBuf::from),
    }
}

impl std::fmt::Debug for SecretsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("SecretsSettings");
        for s in SecretSetting::ALL {
            d.field(s.name(), &SecretValue::describe(self.values.get(&s)));
        }
        d.field("cache_ttl", &self.cache_ttl)
            .field(
                "credential",
                &self
                    .credential
                    .as_ref()
                    .map_or_else(|| NO_CREDENTIAL.to_string(), CredentialChoice::description),
            )
            .field("ca_bundle", &self.ca_bundle)
            .field("identity_settings_present", &self.identity_settings_present)
            .finish()
    }
}

/// How the start-up log and diagnostics describe "no credential needed".
pub(super) const NO_CREDENTIAL: &str = "none (no Key Vault references)";

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::path::Path;

    const REFERENCE: &str = "@Microsoft.KeyVault(VaultName=myvault;SecretName=x)";

    /// The credential chosen for `pairs` plus one reference (so that a credential is needed).
    fn choice(pairs: &[(&str, &str)]) -> Result<CredentialChoice, ConfigError> {
        let mut all = vec![("DATABASE_URL", REFERENCE)];
        all.extend_from_slice(pairs);
        SecretsSettings::from_settings(&Settings::from_pairs(all)).map(|t| t.credential.unwrap())
    }

    #[test]
    fn plain_values_and_references_are_parsed_once() {
        let s = Settings::from_pairs([
            ("DATABASE_URL", " postgres://u:hunter2@h/db "),
            ("SMTP_PASSWORD", REFERENCE),
            ("SSL_CERT_FILE", "/etc/ca.pem"),
            ("IDENTITY_HEADER", "hdr-hunter2"),
            ("MSI_SECRET", "msi-hunter2"),
        ]);
        let t = SecretsSettings::from_settings(&s).unwrap();
        match t.values.get(&SecretSetting::DatabaseUrl) {
            Some(SecretValue::Plain(v)) => {
                assert_eq!(v.expose_secret(), "postgres://u:hunter2@h/db")
            }
            _ => panic!("DATABASE_URL is a plain value"),
        }
        match t.values.get(&SecretSetting::SmtpPassword) {
            Some(SecretValue::Reference(r)) => assert_eq!(r.name, "x"),
            _ => panic!("SMTP_PASSWORD is a reference"),
        }
        assert!(!t.values.contains_key(&SecretSetting::ApiKeys));
        assert_eq!(
            t.references()
                .into_iter()
                .map(|(s, _)| s)
                .collect::<Vec<_>>(),
            [SecretSetting::SmtpPassword]
        );
        assert_eq!(t.cache_ttl, DEFAULT_TTL);
        assert_eq!(t.ca_bundle.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(
            t.identity_settings_present,
            ["IDENTITY_HEADER", "MSI_SECRET"]
        );
        assert!(matches!(
            t.credential,
            Some(CredentialChoice::DeveloperTools)
        ));
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("plain value (redacted)"), "{dbg}");
        assert!(dbg.contains("Key Vault secret 'x'"), "{dbg}");
    }

    #[test]
    fn errors_name_the_setting_not_the_value() {
        let s =
            Settings::from_pairs([("SMTP_PASSWORD", "@Microsoft.KeyVault(VaultName=v;hunter2)")]);
        let e = SecretsSettings::from_settings(&s).unwrap_err();
        assert_eq!(e.setting, "SMTP_PASSWORD");
        assert!(!e.to_string().contains("hunter2"));
        for bad in ["0", "0s", "hunter2"] {
            let s = Settings::from_pairs([("SECRET_CACHE_TTL", bad)]);
            let e = SecretsSettings::from_settings(&s).unwrap_err();
            assert_eq!(e.setting, "SECRET_CACHE_TTL");
            assert!(!e.to_string().contains("hunter2"));
        }
        let s = Settings::from_pairs([("SECRET_CACHE_TTL", "15m")]);
        assert_eq!(
            SecretsSettings::from_settings(&s).unwrap().cache_ttl,
            Duration::from_secs(900)
        );
    }

    #[test]
    fn without_references_no_credential_is_chosen() {
        // A credential setting that would be refused does not matter when nothing needs it.
        let s = Settings::from_pairs([
            ("DATABASE_URL", "sqlite://x"),
            ("AZURE_CREDENTIAL", "magic"),
        ]);
        let t = SecretsSettings::from_settings(&s).unwrap();
        assert!(t.credential.is_none());
        assert!(format!("{t:?}").contains(NO_CREDENTIAL));
    }

    #[test]
    fn selection_rules() {
        use CredentialChoice::*;
        assert!(matches!(choice(&[]).unwrap(), DeveloperTools));
        let msi = [
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi"),
            ("IDENTITY_HEADER", "hdr-hunter2"),
        ];
        match choice(&msi).unwrap() {
            AppServiceManagedIdentity {
                endpoint,
                header,
                client_id: None,
            } => {
                assert_eq!(endpoint.as_str(), "http://127.0.0.1:1/msi");
                assert_eq!(header.expose_secret(), "hdr-hunter2");
            }
            other => panic!("{other:?}"),
        }
        let mut ua = msi.to_vec();
        ua.push(("AZURE_CLIENT_ID", "cid"));
        assert!(matches!(
            choice(&ua).unwrap(),
            AppServiceManagedIdentity { client_id: Some(id), .. } if id == "cid"
        ));
        // Only one of the two MSI variables: not managed identity, and never IMDS.
        assert!(matches!(
            choice(&[("IDENTITY_ENDPOINT", "http://x")]).unwrap(),
            DeveloperTools
        ));
        let sp = [
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s-hunter2"),
        ];
        match choice(&sp).unwrap() {
            ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => {
                assert_eq!((tenant_id.as_str(), client_id.as_str()), ("t", "c"));
                assert_eq!(secret.expose_secret(), "s-hunter2");
            }
            other => panic!("{other:?}"),
        }
        let mut sp_msi = sp.to_vec();
        sp_msi.extend(msi);
        assert!(matches!(choice(&sp_msi).unwrap(), ClientSecret { .. }));
        let mut wi = sp_msi.clone();
        wi.push(("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"));
        match choice(&wi).unwrap() {
            WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => {
                assert_eq!((tenant_id.as_str(), client_id.as_str()), ("t", "c"));
                assert_eq!(token_file, Path::new("/var/run/token"));
            }
            other => panic!("{other:?}"),
        }
        let e = choice(&[("AZURE_FEDERATED_TOKEN_FILE", "/t")]).unwrap_err();
        assert_eq!(e.setting, "AZURE_TENANT_ID");
        let e = choice(&[
            ("IDENTITY_ENDPOINT", "not a url hunter2"),
            ("IDENTITY_HEADER", "h"),
        ])
        .unwrap_err();
        assert_eq!(e.setting, "IDENTITY_ENDPOINT");
        assert!(!e.to_string().contains("hunter2"));
        // Debug of a choice never shows the header or the client secret.
        for pairs in [&msi[..], &sp[..]] {
            let dbg = format!("{:?}", choice(pairs).unwrap());
            assert!(!dbg.contains("hunter2"), "{dbg}");
        }
    }

    #[test]
    fn explicit_override() {
        use CredentialChoice::*;
        let mut s = vec![
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_CREDENTIAL", "developer_tools"),
        ];
        assert!(matches!(choice(&s).unwrap(), DeveloperTools));
        s[3].1 = "managed_identity";
        // No IDENTITY_*: IMDS, but only because it was asked for.
        assert!(matches!(
            choice(&s).unwrap(),
            ImdsManagedIdentity { client_id: Some(id) } if id == "c"
        ));
        s.push(("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi"));
        s.push(("IDENTITY_HEADER", "h"));
        assert!(matches!(
            choice(&s).unwrap(),
            AppServiceManagedIdentity { client_id: Some(id), .. } if id == "c"
        ));
        assert_eq!(
            choice(&[("AZURE_CREDENTIAL", "Client-Secret")])
                .unwrap_err()
                .setting,
            "AZURE_TENANT_ID"
        );
        assert_eq!(
            choice(&[("AZURE_CREDENTIAL", "workload_identity")])
                .unwrap_err()
                .setting,
            "AZURE_FEDERATED_TOKEN_FILE"
        );
        let e = choice(&[("AZURE_CREDENTIAL", "hunter2")]).unwrap_err();
        assert_eq!(e.setting, "AZURE_CREDENTIAL");
        assert!(!e.to_string().contains("hunter2"));
    }
}
