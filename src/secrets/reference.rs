//! Parsing of Key Vault references in the App Service syntax.
//!
//! App Service accepts two spellings, and our settings accept the same ones so that an app
//! setting written for the platform works unchanged when the platform did not resolve it:
//! - `@Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>[/<version>])`
//! - `@Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<version>])`
//!
//! Errors name the setting and what is wrong, never the value (a half-typed reference may
//! contain a pasted secret).

use crate::config::ConfigError;

const PREFIX: &str = "@microsoft.keyvault(";

/// A parsed reference: which vault, which secret, and optionally which version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VaultRef {
    /// The vault's base URL, `https://host[:port]/` (always with a trailing slash).
    pub vault_url: String,
    /// The vault host without port (for the loopback check).
    pub host: String,
    /// The secret's name in the vault.
    pub name: String,
    /// A pinned version, or `None` for "latest" (which picks up rotations).
    pub version: Option<String>,
}

/// Whether the raw setting value looks like a Key Vault reference (so that a malformed one is
/// reported instead of being used as a plain value).
pub fn looks_like_reference(raw: &str) -> bool {
    const MARK: &str = "@microsoft.keyvault";
    raw.trim()
        .get(..MARK.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(MARK))
}

/// Parses a reference. `Ok(None)` means "not a reference: a plain value".
pub fn parse(setting: &str, raw: &str) -> Result<Option<VaultRef>, ConfigError> {
    let raw = raw.trim();
    if !looks_like_reference(raw) {
        return Ok(None);
    }
    let bad = |problem: &str| {
        ConfigError::new(
            setting,
            format!("is a malformed Key Vault reference: {problem}"),
        )
    };
    if !raw
        .get(..PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
    {
        return Err(bad(
            "expected `@Microsoft.KeyVault(` followed by SecretUri=… or VaultName=…;SecretName=…",
        ));
    }
    let Some(inner) = raw[PREFIX.len()..].strip_suffix(')') else {
        return Err(bad("missing the closing parenthesis"));
    };
    let inner = inner.trim();
    let mut secret_uri = None;
    let mut vault_name = None;
    let mut secret_name = None;
    let mut secret_version = None;
    for part in inner.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(bad("each part must be Key=Value"));
        };
        let (k, v) = (k.trim(), v.trim());
        let slot = match k.to_ascii_lowercase().as_str() {
            "secreturi" => &mut secret_uri,
            "vaultname" => &mut vault_name,
            "secretname" => &mut secret_name,
            "secretversion" => &mut secret_version,
            _ => {
                return Err(bad(
                    "unknown key (expected SecretUri, VaultName, SecretName or SecretVersion)",
                ));
            }
        };
        if slot.is_some() {
            return Err(bad("a key appears twice"));
        }
        *slot = Some(v.to_string());
    }
    if let Some(uri) = secret_uri {
        if vault_name.is_some() || secret_name.is_some() || secret_version.is_some() {
            return Err(bad(
                "SecretUri cannot be combined with VaultName/SecretName/SecretVersion",
            ));
        }
        return parse_uri(&uri).map(Some).map_err(bad);
    }
    let vault = vault_name.ok_or_else(|| bad("VaultName is missing"))?;
    let name = secret_name.ok_or_else(|| bad("SecretName is missing"))?;
    if !valid_vault_name(&vault) {
        return Err(bad("VaultName must be 3-24 letters, digits or hyphens"));
    }
    if !valid_secret_name(&name) {
        return Err(bad("SecretName must be 1-127 letters, digits or hyphens"));
    }
    let version = match secret_version.filter(|v| !v.is_empty()) {
        Some(v) if valid_version(&v) => Some(v),
        Some(_) => return Err(bad("SecretVersion must be letters and digits")),
        None => None,
    };
    let host = format!("{}.vault.azure.net", vault.to_ascii_lowercase());
    Ok(Some(VaultRef {
        vault_url: format!("https://{host}/"),
        host,
        name,
        version,
    }))
}

fn parse_uri(uri: &str) -> Result<VaultRef, &'static str> {
    let url = reqwest::Url::parse(uri).map_err(|_| "SecretUri is not a valid URL")?;
    if url.scheme() != "https" {
        return Err("SecretUri must use https");
    }
    if url.username() != "" || url.password().is_some() {
        return Err("SecretUri must not contain user information");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("SecretUri must not have a query or fragment");
    }
    let host = url
        .host_str()
        .ok_or("SecretUri has no host")?
        .to_ascii_lowercase();
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let (name, version) = match segments.as_slice() {
        ["secrets", name] => (*name, None),
        ["secrets", name, version] => (*name, Some(*version)),
        _ => return Err("SecretUri path must be /secrets/<name>[/<version>]"),
    };
    if !valid_secret_name(name) {
        return Err("the secret name in SecretUri must be 1-127 letters, digits or hyphens");
    }
    if let Some(v) = version
        && !valid_version(v)
    {
        return Err("the secret version in SecretUri must be letters and digits");
    }
    let authority = match url.port() {
        Some(p) if url.host_str().is_some_and(|h| h.starts_with('[')) => format!("[{host}]:{p}"),
        Some(p) => format!("{host}:{p}"),
        None if url.host_str().is_some_and(|h| h.starts_with('[')) => format!("[{host}]"),
        None => host.clone(),
    };
    Ok(VaultRef {
        vault_url: format!("https://{authority}/"),
        host,
        name: name.to_string(),
        version: version.map(str::to_string),
    })
}

fn valid_vault_name(s: &str) -> bool {
    (3..=24).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn valid_secret_name(s: &str) -> bool {
    (1..=127).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn valid_version(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether a vault host is a loopback address (a local emulator or test fake): only for those
/// is the challenge-resource check relaxed.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> VaultRef {
        parse("DATABASE_URL", raw).unwrap().unwrap()
    }

    #[test]
    fn plain_values_are_not_references() {
        assert_eq!(parse("X", "postgres://u:p@h/db").unwrap(), None);
        assert_eq!(parse("X", "hunter2").unwrap(), None);
    }

    #[test]
    fn secret_uri_forms() {
        let r =
            ok("@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-url/)");
        assert_eq!(r.vault_url, "https://myvault.vault.azure.net/");
        assert_eq!(r.name, "db-url");
        assert_eq!(r.version, None);
        let r = ok(
            " @microsoft.keyvault(SecretUri=https://MyVault.vault.azure.net/secrets/db-url/4387e9f3d6e14c459867679a90fd0f79) ",
        );
        assert_eq!(r.host, "myvault.vault.azure.net");
        assert_eq!(
            r.version.as_deref(),
            Some("4387e9f3d6e14c459867679a90fd0f79")
        );
        let r = ok("@Microsoft.KeyVault(SecretUri=https://127.0.0.1:8443/secrets/x)");
        assert_eq!(r.vault_url, "https://127.0.0.1:8443/");
        assert!(is_loopback_host(&r.host));
    }

    #[test]
    fn vault_name_forms() {
        let r = ok("@Microsoft.KeyVault(VaultName=myvault;SecretName=smtp-password)");
        assert_eq!(r.vault_url, "https://myvault.vault.azure.net/");
        assert_eq!(r.name, "smtp-password");
        assert_eq!(r.version, None);
        let r = ok(
            "@Microsoft.KeyVault(VaultName=myvault; SecretName=smtp-password; SecretVersion=abc123)",
        );
        assert_eq!(r.version.as_deref(), Some("abc123"));
        assert!(!is_loopback_host(&r.host));
    }

    #[test]
    fn malformed_references_name_the_setting_not_the_value() {
        for bad in [
            "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/x",
            "@Microsoft.KeyVault(SecretUri=http://v.vault.azure.net/secrets/x)",
            "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/keys/x)",
            "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/a/b/c)",
            "@Microsoft.KeyVault(SecretUri=not a url hunter2)",
            "@Microsoft.KeyVault(VaultName=myvault)",
            "@Microsoft.KeyVault(SecretName=hunter2)",
            "@Microsoft.KeyVault(VaultName=my_vault!;SecretName=x)",
            "@Microsoft.KeyVault(VaultName=myvault;SecretName=x;Colour=hunter2)",
            "@Microsoft.KeyVault(hunter2)",
            "@Microsoft.KeyVaulthunter2",
            "@Microsoft.KeyVault(VaultName=myvault;SecretName=x;SecretVersion=../hunter2)",
        ] {
            let e = parse("SMTP_PASSWORD", bad).unwrap_err();
            let s = e.to_string();
            assert!(s.contains("SMTP_PASSWORD"), "{s}");
            assert!(!s.contains("hunter2"), "{s}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "127.0.0.1", "[::1]", "::1", "LOCALHOST"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["myvault.vault.azure.net", "10.0.0.1", "localhost.evil.com"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
