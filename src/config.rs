//! One typed configuration, read once at start-up from the process environment (app settings
//! in Azure, `local.settings.json` `Values` under `func start`) and validated before the handler
//! serves anything that depends on it.
//!
//! Errors name the setting and what is wrong with it, never its value: several settings hold
//! secrets or Key Vault references. Secret-bearing settings are kept as [`SecretString`] from the
//! moment they are read.
//!
//! [`Settings`] is the one raw snapshot (the environment, over `local.settings.json` for the
//! developer commands). It is read once, at start: [`Config`] takes the app's own settings from
//! it, and each part that owns settings parses its typed struct from the same snapshot
//! (`secrets::SecretsSettings`, `delivery::MailSettings`); the crate root's `Configuration`
//! holds them all. Nothing after start-up reads a raw setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

/// A setting that is missing or malformed. Displays as one sentence naming the setting.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("setting {setting}: {problem}")]
pub struct ConfigError {
    /// The environment variable / app setting name.
    pub setting: String,
    /// What is wrong, phrased so that it never includes the value.
    pub problem: String,
}

impl ConfigError {
    /// Builds an error for `setting`.
    pub fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

/// A snapshot of the settings the app reads, so that they are read once and tests can inject
/// them without touching the process environment.
#[derive(Clone, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Settings {
    // Values may be secrets: show names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Settings {
    /// Reads the current process environment.
    pub fn from_env() -> Self {
        Self {
            values: std::env::vars().collect(),
        }
    }

    /// The process environment layered over the `Values` of `local.settings.json` in
    /// `app_root`, as `func start` would provide them; the environment wins. Used by the CLI
    /// commands that run without the host (`dev`, `check`, `schedule`, `report`, `deliveries`).
    pub fn from_env_and_local_settings(app_root: &Path) -> Result<Self, ConfigError> {
        let mut s = Self::from_env();
        let path = app_root.join("local.settings.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                ConfigError::new("local.settings.json", format!("is not valid JSON ({e})"))
            })?;
            if let Some(values) = json.get("Values").and_then(|v| v.as_object()) {
                for (k, v) in values {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => continue,
                        other => other.to_string(),
                    };
                    s.set_default(k, v);
                }
            }
        }
        Ok(s)
    }

    /// Builds settings from pairs (tests, `handler dev`).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Adds a setting unless it is already present (used to layer defaults under real values).
    pub fn set_default(&mut self, name: &str, value: impl Into<String>) {
        self.values
            .entry(name.to_string())
            .or_insert_with(|| value.into());
    }

    /// Sets a setting, replacing any value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.values.insert(name.to_string(), value.into());
    }

    /// A non-empty value, trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// The names of the settings that hold a non-empty value, in name order: for the secret
    /// layer's named settings (a destination's `url_setting` may name any setting).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, _)| k.as_str())
    }

    /// A secret-bearing value, wrapped at once.
    pub fn secret(&self, name: &str) -> Option<SecretString> {
        self.get(name).map(|s| SecretString::from(s.to_string()))
    }

    /// A value parsed with `FromStr`; the error says what was expected, not what was found.
    pub fn parsed<T: std::str::FromStr>(
        &self,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ConfigError::new(name, format!("must be {expected}"))),
        }
    }

    /// A duration: whole seconds, or a number with a unit (`ms`, `s`, `m`, `h`, `d`).
    pub fn duration(&self, name: &str) -> Result<Option<Duration>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse_duration(v).map(Some).ok_or_else(|| {
                ConfigError::new(
                    name,
                    "must be whole seconds or a number with a unit, such as 90s, 15m or 1h",
                )
            }),
        }
    }
}

/// Parses `30`, `90s`, `15m`, `1h`, `2d`, `500ms`. Zero is allowed; negative and fractional are not.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = |m: u64| n.checked_mul(m).map(Duration::from_secs);
    match unit.trim() {
        "" | "s" | "sec" | "secs" => secs(1),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" | "mins" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    }
}

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable single lines (default).
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// What the Functions host tells the handler about where it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSettings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT` (or the legacy `FUNCTIONS_HTTPWORKER_PORT`): the port
    /// the host assigned; required by `handler serve`, unused by the developer commands.
    pub port: Option<u16>,
    /// Whether any setting the host always injects is present (the port, or
    /// `FUNCTIONS_WORKER_RUNTIME`): then this runs for the host, where a deployment must
    /// configure what `handler dev` supplies itself (the API key).
    pub under_host: bool,
}

impl HostSettings {
    /// Reads the host's settings; a port that is not a TCP port is an error naming it.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let port = match settings.get("FUNCTIONS_CUSTOMHANDLER_PORT") {
            Some(v) => Some(("FUNCTIONS_CUSTOMHANDLER_PORT", v)),
            None => settings
                .get("FUNCTIONS_HTTPWORKER_PORT")
                .map(|v| ("FUNCTIONS_HTTPWORKER_PORT", v)),
        };
        let port = match port {
            None => None,
            Some((name, v)) => match v.parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    return Err(ConfigError::new(
                        name,
                        "must be a TCP port number between 1 and 65535",
                    ));
                }
            },
        };
        Ok(Self {
            port,
            under_host: port.is_some() || settings.get("FUNCTIONS_WORKER_RUNTIME").is_some(),
        })
    }
}

/// Settings every mode of the handler needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Functions app root: `FUNCTIONS_APP_ROOT_PATH`, else the working directory.
    pub app_root: PathBuf,
    /// `extensions.http.routePrefix` from `host.json` (default `api`), without slashes.
    pub route_prefix: String,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `REPORTS_FILE`: the report definitions (default `reports.toml` in the app root).
    pub reports_file: PathBuf,
    /// Limits and timings of the report engine, the API and delivery.
    pub limits: Limits,
    /// What the Functions host injected.
    pub host: HostSettings,
}

impl Config {
    /// Reads and validates the app's own settings from the snapshot.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let app_root = match settings.get("FUNCTIONS_APP_ROOT_PATH") {
            Some(p) => PathBuf::from(p),
            None => std::env::current_dir().map_err(|_| {
                ConfigError::new(
                    "FUNCTIONS_APP_ROOT_PATH",
                    "is not set and the working directory cannot be read",
                )
            })?,
        };
        let log_format = match settings.get("LOG_FORMAT").map(str::to_ascii_lowercase) {
            None => LogFormat::Text,
            Some(v) if v == "text" => LogFormat::Text,
            Some(v) if v == "json" => LogFormat::Json,
            Some(_) => return Err(ConfigError::new("LOG_FORMAT", "must be `text` or `json`")),
        };
        let reports_file = resolve(
            &app_root,
            settings.get("REPORTS_FILE").unwrap_or("reports.toml"),
        );
        let route_prefix = read_route_prefix(&app_root)?;
        Ok(Self {
            app_root,
            route_prefix,
            log_format,
            reports_file,
            limits: Limits::from_settings(settings)?,
            host: HostSettings::from_settings(settings)?,
        })
    }

    /// The public path of the health check, e.g. `/api/health` (the `Health` function's route).
    pub fn health_path(&self) -> String {
        if self.route_prefix.is_empty() {
            "/health".into()
        } else {
            format!("/{}/health", self.route_prefix)
        }
    }

    /// The public path of the reports collection, e.g. `/api/reports`.
    pub fn reports_path(&self) -> String {
        if self.route_prefix.is_empty() {
            "/reports".into()
        } else {
            format!("/{}/reports", self.route_prefix)
        }
    }
}

/// The limits and timings the parts read, parsed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `MAX_RANGE_DAYS`: the longest explicit window the API accepts (default 31).
    pub max_range_days: u32,
    /// `QUERY_TIMEOUT`: the statement timeout of report queries (default 30 s).
    pub query_timeout: Duration,
    /// `MAX_ROWS`: a safety cap on rows per section (default 1,000,000).
    pub max_rows: usize,
    /// `CLAIM_LEASE`: how long a delivery claim protects an occurrence before another tick may
    /// take it over (default 15 min, longer than `functionTimeout`).
    pub claim_lease: Duration,
}

impl Limits {
    /// Reads the limits; errors name the setting.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let claim_lease = settings
            .duration("CLAIM_LEASE")?
            .unwrap_or(Duration::from_secs(15 * 60));
        if claim_lease.is_zero() {
            return Err(ConfigError::new("CLAIM_LEASE", "must be more than zero"));
        }
        Ok(Self {
            max_range_days: settings
                .parsed::<u32>("MAX_RANGE_DAYS", "a whole number of days")?
                .unwrap_or(31),
            query_timeout: settings
                .duration("QUERY_TIMEOUT")?
                .unwrap_or(Duration::from_secs(30)),
            max_rows: settings
                .parsed::<usize>("MAX_ROWS", "a whole number")?
                .unwrap_or(1_000_000),
            claim_lease,
        })
    }
}

/// Resolves a path setting against the app root.
pub fn resolve(root: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// Reads `extensions.http.routePrefix` from `host.json`; a missing file or key means `api`.
pub fn read_route_prefix(app_root: &Path) -> Result<String, ConfigError> {
    let path = app_root.join("host.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok("api".into());
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ConfigError::new("host.json", format!("is not valid JSON ({e})")))?;
    let prefix = json
        .pointer("/extensions/http/routePrefix")
        .and_then(|v| v.as_str())
        .unwrap_or("api");
    Ok(prefix.trim_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "h", "-1", "1.5h", "10 parsecs", "99999999999999999999"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn errors_name_the_setting_not_the_value() {
        let s = Settings::from_pairs([("LOG_FORMAT", "hunter2")]);
        let err = Config::from_settings(&s).unwrap_err().to_string();
        assert!(err.contains("LOG_FORMAT"));
        assert!(!err.contains("hunter2"));
        let s = Settings::from_pairs([("SECRET_CACHE_TTL", "hunter2")]);
        let err = s.duration("SECRET_CACHE_TTL").unwrap_err().to_string();
        assert!(err.contains("SECRET_CACHE_TTL") && !err.contains("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
        let s = Settings::from_pairs([("FUNCTIONS_CUSTOMHANDLER_PORT", "hunter2")]);
        let err = HostSettings::from_settings(&s).unwrap_err().to_string();
        assert!(err.contains("FUNCTIONS_CUSTOMHANDLER_PORT") && !err.contains("hunter2"));
    }

    #[test]
    fn the_host_context_comes_from_the_settings_it_injects() {
        let dev = HostSettings::from_settings(&Settings::default()).unwrap();
        assert_eq!(
            dev,
            HostSettings {
                port: None,
                under_host: false
            }
        );
        let s = Settings::from_pairs([("FUNCTIONS_HTTPWORKER_PORT", "7072")]);
        let host = HostSettings::from_settings(&s).unwrap();
        assert_eq!(
            host,
            HostSettings {
                port: Some(7072),
                under_host: true
            }
        );
        let s = Settings::from_pairs([("FUNCTIONS_WORKER_RUNTIME", "custom")]);
        assert!(HostSettings::from_settings(&s).unwrap().under_host);
    }
}
