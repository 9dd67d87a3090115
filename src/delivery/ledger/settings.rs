//! Where the delivery ledger lives, read once from the settings snapshot: `STATE_DATABASE_URL`
//! (read by the secret layer), the Function app's own storage account (`AzureWebJobsStorage`
//! as a connection string, or identity-based `AzureWebJobsStorage__accountName` /
//! `__tableServiceUri` with `__credential` / `__clientId`), and `LEDGER_TABLE`.
//!
//! A malformed setting is an error at start-up naming the setting, never its value: the
//! connection string holds the account key. Debug never shows the key or the connection
//! string either.

use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::config::{ConfigError, Settings};
use crate::secrets::reference::{self, is_loopback_host};
use crate::secrets::{CredentialChoice, SecretSetting, identity_connection_credential};

/// The table that holds the ledger when `LEDGER_TABLE` is not set.
pub const DEFAULT_LEDGER_TABLE: &str = "reportdeliveries";

/// The setting that names the app's storage account (the Functions host's own).
pub const STORAGE_SETTING: &str = "AzureWebJobsStorage";

/// Azurite's well-known development account, what `UseDevelopmentStorage=true` means.
const DEV_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development account key (public, documented with the emulator; it
/// opens nothing but a local emulator).
const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite's default Table service endpoint.
const DEV_TABLE_ENDPOINT: &str = "http://127.0.0.1:10002/devstoreaccount1";

/// How the ledger is authorized on the Table service.
#[derive(Clone)]
pub enum TableAuth {
    /// Shared Key: requests are signed with the account key (connection strings).
    SharedKey {
        /// The storage account name, part of every signature.
        account: String,
        /// The decoded account key; never printed.
        key: SecretSlice<u8>,
    },
    /// A bearer token for `https://storage.azure.com/.default` from the credential the
    /// settings choose (the same rules as Key Vault's).
    Identity(CredentialChoice),
}

impl std::fmt::Debug for TableAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description())
    }
}

impl TableAuth {
    /// How the ledger authenticates, for logs and `handler check`; never the key.
    pub fn description(&self) -> String {
        match self {
            Self::SharedKey { .. } => "shared key".into(),
            Self::Identity(c) => c.description(),
        }
    }
}

/// A storage account's Table service endpoint and how to authorize on it.
#[derive(Clone, Debug)]
pub struct StorageAccount {
    /// The Table service base URL (`https://<account>.table.core.windows.net`, or Azurite's
    /// path-style `http://127.0.0.1:10002/devstoreaccount1`).
    pub table_endpoint: reqwest::Url,
    /// How requests are authorized.
    pub auth: TableAuth,
}

impl StorageAccount {
    /// Parses a storage connection string (`DefaultEndpointsProtocol=…;AccountName=…;
    /// AccountKey=…;EndpointSuffix=…`, an explicit `TableEndpoint=`, or
    /// `UseDevelopmentStorage=true` for Azurite's well-known account). `setting` names the
    /// setting in errors; the value is never quoted. Plain HTTP is accepted only to a loopback
    /// host (Azurite).
    pub fn from_connection_string(raw: &str, setting: &str) -> Result<Self, ConfigError> {
        let err = |problem: &str| ConfigError::new(setting, problem);
        let mut fields = std::collections::HashMap::new();
        for part in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(err(
                    "is not a storage connection string (expected Key=Value pairs separated by ;)",
                ));
            };
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let get = |k: &str| fields.get(k).map(String::as_str).filter(|v| !v.is_empty());
        if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            let endpoint = get("tableendpoint").unwrap_or(DEV_TABLE_ENDPOINT);
            return Ok(Self {
                table_endpoint: endpoint_url(endpoint, setting)?,
                auth: TableAuth::SharedKey {
                    account: DEV_ACCOUNT.into(),
                    key: decode_key(DEV_ACCOUNT_KEY, setting)?,
                },
            });
        }
        if get("sharedaccesssignature").is_some() {
            return Err(err(
                "uses a shared access signature, which the ledger does not support: use a connection string with AccountKey, identity-based AzureWebJobsStorage__accountName, or STATE_DATABASE_URL",
            ));
        }
        let account =
            get("accountname").ok_or_else(|| err("is a connection string without AccountName"))?;
        if !account.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(err("has an AccountName that is not a storage account name"));
        }
        let key = get("accountkey").ok_or_else(|| {
            err("is a connection string without AccountKey (for identity-based access set AzureWebJobsStorage__accountName instead)")
        })?;
        let key = decode_key(key, setting)?;
        let endpoint = match get("tableendpoint") {
            Some(e) => e.to_string(),
            None => {
                let protocol = get("defaultendpointsprotocol").unwrap_or("https");
                let suffix = get("endpointsuffix").unwrap_or("core.windows.net");
                format!("{protocol}://{account}.table.{suffix}")
            }
        };
        Ok(Self {
            table_endpoint: endpoint_url(&endpoint, setting)?,
            auth: TableAuth::SharedKey {
                account: account.to_string(),
                key,
            },
        })
    }
}

fn decode_key(key: &str, setting: &str) -> Result<SecretSlice<u8>, ConfigError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .map(SecretSlice::from)
        .map_err(|_| ConfigError::new(setting, "has an AccountKey that is not base64"))
}

/// A Table service endpoint: HTTPS, or plain HTTP to a loopback host only (Azurite), so the
/// key's signatures and the identity's tokens never cross a network in clear text.
fn endpoint_url(raw: &str, setting: &str) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|_| ConfigError::new(setting, "has a Table service endpoint that is not a URL"))?;
    let host = url.host_str().unwrap_or("");
    match url.scheme() {
        "https" if !host.is_empty() => {}
        "http" if is_loopback_host(host) => {}
        "http" => {
            return Err(ConfigError::new(
                setting,
                "uses plain HTTP to a host that is not loopback; use https (plain HTTP is only for Azurite on this machine)",
            ));
        }
        _ => {
            return Err(ConfigError::new(
                setting,
                "has a Table service endpoint that is not an https:// URL",
            ));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            setting,
            "has a Table service endpoint with a query or fragment (a SAS token is not supported)",
        ));
    }
    Ok(url)
}

/// How the app's storage account is configured.
#[derive(Clone, Debug)]
pub enum StorageAccess {
    /// `AzureWebJobsStorage` is a plain connection string, parsed and validated at start.
    ConnectionString(StorageAccount),
    /// `AzureWebJobsStorage` is a Key Vault reference: the secret layer resolves it at first
    /// use, and the connection string is parsed then.
    VaultReference,
    /// Identity-based: `AzureWebJobsStorage__accountName` or `__tableServiceUri`, with the
    /// credential chosen as for Key Vault (or `__credential=managedidentity`).
    Identity(StorageAccount),
}

/// Everything that decides where the ledger lives, parsed once. The order of choice (made by
/// [`Delivery`](crate::delivery::Delivery)): `STATE_DATABASE_URL`; else, when
/// [`LedgerSettings::storage_allowed`], the app's storage account; else the SQLite file
/// under `data/`.
#[derive(Clone, Debug)]
pub struct LedgerSettings {
    /// `LEDGER_TABLE` (default [`DEFAULT_LEDGER_TABLE`]): the table in the storage account.
    pub table: String,
    /// The app's storage account, when one is configured.
    pub storage: Option<StorageAccess>,
    /// Whether the storage account may hold the ledger: true except under `handler dev`,
    /// whose ledger is always the local file (or `STATE_DATABASE_URL`).
    pub storage_allowed: bool,
    /// `SSL_CERT_FILE`, for the identity's token requests.
    pub ca_bundle: Option<std::path::PathBuf>,
}

impl LedgerSettings {
    /// Reads `AzureWebJobsStorage` (plain or a Key Vault reference), the identity-based
    /// `AzureWebJobsStorage__*` settings and `LEDGER_TABLE`. A connection string wins over
    /// the identity-based settings, as it does for the Functions host.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let table = settings
            .get("LEDGER_TABLE")
            .unwrap_or(DEFAULT_LEDGER_TABLE)
            .to_string();
        validate_table_name(&table)?;
        let storage = match settings.get(STORAGE_SETTING) {
            Some(raw) => match reference::parse(STORAGE_SETTING, raw)? {
                Some(_) => Some(StorageAccess::VaultReference),
                None => Some(StorageAccess::ConnectionString(
                    StorageAccount::from_connection_string(raw, STORAGE_SETTING)?,
                )),
            },
            None => identity_based(settings)?.map(StorageAccess::Identity),
        };
        Ok(Self {
            table,
            storage,
            storage_allowed: true,
            ca_bundle: settings.get("SSL_CERT_FILE").map(Into::into),
        })
    }

    /// The same settings with the storage account ignored: `handler dev` keeps its ledger in
    /// the local file even when `local.settings.json` points `AzureWebJobsStorage` at Azurite
    /// for `func start`.
    pub fn local_only(mut self) -> Self {
        self.storage_allowed = false;
        self
    }

    /// The storage account the ledger uses, if it uses one.
    pub fn storage_in_use(&self) -> Option<&StorageAccess> {
        self.storage.as_ref().filter(|_| self.storage_allowed)
    }

    /// Resolves the account from the connection string value the secret layer returned (the
    /// plain value, or the Key Vault secret).
    pub fn account_from_secret(value: &SecretString) -> Result<StorageAccount, ConfigError> {
        StorageAccount::from_connection_string(
            value.expose_secret(),
            SecretSetting::AzureWebJobsStorage.name(),
        )
    }
}

fn identity_based(settings: &Settings) -> Result<Option<StorageAccount>, ConfigError> {
    const URI: &str = "AzureWebJobsStorage__tableServiceUri";
    const ACCOUNT: &str = "AzureWebJobsStorage__accountName";
    let endpoint = if let Some(uri) = settings.get(URI) {
        endpoint_url(uri, URI)?
    } else if let Some(account) = settings.get(ACCOUNT) {
        if account.is_empty() || !account.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ConfigError::new(
                ACCOUNT,
                "must be a storage account name (lower-case letters and digits)",
            ));
        }
        endpoint_url(
            &format!("https://{account}.table.core.windows.net"),
            ACCOUNT,
        )?
    } else {
        return Ok(None);
    };
    let credential = identity_connection_credential(settings, STORAGE_SETTING)?;
    Ok(Some(StorageAccount {
        table_endpoint: endpoint,
        auth: TableAuth::Identity(credential),
    }))
}

/// Table names are 3 to 63 letters and digits, starting with a letter.
fn validate_table_name(name: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
        && !name.eq_ignore_ascii_case("tables");
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "LEDGER_TABLE",
            "must be a table name: 3 to 63 letters and digits, starting with a letter",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<LedgerSettings, ConfigError> {
        LedgerSettings::from_settings(&Settings::from_pairs(pairs.iter().copied()))
    }

    fn account(s: &LedgerSettings) -> &StorageAccount {
        match s.storage.as_ref().unwrap() {
            StorageAccess::ConnectionString(a) | StorageAccess::Identity(a) => a,
            StorageAccess::VaultReference => panic!("a reference"),
        }
    }

    #[test]
    fn nothing_configured_means_no_storage_and_the_default_table() {
        let s = parse(&[]).unwrap();
        assert!(s.storage.is_none());
        assert_eq!(s.table, "reportdeliveries");
    }

    #[test]
    fn development_storage_is_azurite_on_its_default_port() {
        let s = parse(&[("AzureWebJobsStorage", "UseDevelopmentStorage=true")]).unwrap();
        let a = account(&s);
        assert_eq!(
            a.table_endpoint.as_str(),
            "http://127.0.0.1:10002/devstoreaccount1"
        );
        assert!(
            matches!(&a.auth, TableAuth::SharedKey { account, .. } if account == "devstoreaccount1")
        );
        assert!(!format!("{s:?}").contains("Eby8"), "{s:?}");
    }

    #[test]
    fn an_account_key_connection_string_targets_the_public_endpoint() {
        let cs = "DefaultEndpointsProtocol=https;AccountName=myacct;AccountKey=aHVudGVyMmh1bnRlcjI=;EndpointSuffix=core.windows.net";
        let s = parse(&[("AzureWebJobsStorage", cs), ("LEDGER_TABLE", "ledger2")]).unwrap();
        assert_eq!(
            account(&s).table_endpoint.as_str(),
            "https://myacct.table.core.windows.net/"
        );
        assert_eq!(s.table, "ledger2");
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("aHVudGVy") && !dbg.contains("hunter2"),
            "{dbg}"
        );
    }

    #[test]
    fn bad_values_name_the_setting_and_never_the_key() {
        for (cs, want) in [
            ("AccountName=a;AccountKey=%%%hunter2", "not base64"),
            ("AccountName=a", "without AccountKey"),
            (
                "DefaultEndpointsProtocol=https;AccountKey=aHVudGVyMg==",
                "without AccountName",
            ),
            (
                "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=aHVudGVyMg==",
                "plain HTTP",
            ),
            (
                "BlobEndpoint=https://x;SharedAccessSignature=sv=hunter2",
                "shared access signature",
            ),
            ("hunter2", "not a storage connection string"),
        ] {
            let e = parse(&[("AzureWebJobsStorage", cs)]).unwrap_err();
            assert_eq!(e.setting, "AzureWebJobsStorage");
            let text = e.to_string();
            assert!(text.contains(want), "{cs}: {text}");
            assert!(
                !text.contains("hunter2") && !text.contains("aHVudGVy"),
                "{text}"
            );
        }
        let e = parse(&[("LEDGER_TABLE", "no-dashes")]).unwrap_err();
        assert_eq!(e.setting, "LEDGER_TABLE");
    }

    #[test]
    fn plain_http_is_fine_to_loopback() {
        let cs = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=aHVudGVyMg==;TableEndpoint=http://127.0.0.1:41234/devstoreaccount1;";
        let s = parse(&[("AzureWebJobsStorage", cs)]).unwrap();
        assert_eq!(
            account(&s).table_endpoint.as_str(),
            "http://127.0.0.1:41234/devstoreaccount1"
        );
    }

    #[test]
    fn a_key_vault_reference_is_resolved_later() {
        let s = parse(&[(
            "AzureWebJobsStorage",
            "@Microsoft.KeyVault(VaultName=myvault;SecretName=storage)",
        )])
        .unwrap();
        assert!(matches!(s.storage, Some(StorageAccess::VaultReference)));
    }

    #[test]
    fn identity_based_settings_use_the_managed_identity() {
        let s = parse(&[
            ("AzureWebJobsStorage__accountName", "myacct"),
            ("AzureWebJobsStorage__credential", "managedidentity"),
            ("AzureWebJobsStorage__clientId", "0000-client"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
            ("IDENTITY_HEADER", "hdr-hunter2"),
        ])
        .unwrap();
        let a = account(&s);
        assert_eq!(
            a.table_endpoint.as_str(),
            "https://myacct.table.core.windows.net/"
        );
        assert_eq!(
            a.auth.description(),
            "managed identity (App Service, user-assigned via AZURE_CLIENT_ID)"
        );
        assert!(!format!("{s:?}").contains("hunter2"));

        let s = parse(&[(
            "AzureWebJobsStorage__tableServiceUri",
            "https://other.table.core.windows.net",
        )])
        .unwrap();
        assert_eq!(
            account(&s).table_endpoint.as_str(),
            "https://other.table.core.windows.net/"
        );
        let e = parse(&[
            ("AzureWebJobsStorage__accountName", "myacct"),
            ("AzureWebJobsStorage__credential", "password"),
        ])
        .unwrap_err();
        assert_eq!(e.setting, "AzureWebJobsStorage__credential");
        let e = parse(&[(
            "AzureWebJobsStorage__tableServiceUri",
            "http://other.example.com",
        )])
        .unwrap_err();
        assert_eq!(e.setting, "AzureWebJobsStorage__tableServiceUri");
    }

    #[test]
    fn handler_dev_ignores_the_storage_account() {
        let s = parse(&[("AzureWebJobsStorage", "UseDevelopmentStorage=true")]).unwrap();
        assert!(s.storage_in_use().is_some());
        assert!(s.local_only().storage_in_use().is_none());
    }
}
