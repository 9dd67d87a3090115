//! The mail configuration: where mail goes and how the relay is reached, read and validated
//! once at start-up. This is the only part of the mailer that reads [`Settings`], so every
//! mail setting is checked by `handler check` and nothing later fails on a typo.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::client::Certificate;

use crate::config::{ConfigError, Settings};
use crate::secrets::reference::is_loopback_host;

/// Default SMTP submission port (STARTTLS and plaintext), used when `SMTP_PORT` is unset so
/// the common relay setup needs no port setting.
pub const DEFAULT_SMTP_PORT: u16 = 587;
/// Default port for implicit TLS (SMTPS), used when `SMTP_TLS=tls` and `SMTP_PORT` is unset,
/// since implicit TLS is served on its own port.
pub const DEFAULT_SMTPS_PORT: u16 = 465;
/// Default bound on one whole SMTP exchange, so a relay that stops answering cannot hold a
/// tick for longer than this.
pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default outbox directory when `SMTP_HOST` is unset, so local work sends mail somewhere
/// visible without any setting.
pub const DEFAULT_OUTBOX_DIR: &str = "outbox";
/// Sender used in outbox mode when `MAIL_FROM` is unset, so local work needs no address; only
/// for local work, since SMTP requires `MAIL_FROM`.
pub const DEFAULT_OUTBOX_FROM: &str = "NightlyReport <reports@localhost>";

/// How the connection to the relay is protected (`SMTP_TLS`). An explicit choice, because a
/// relay that silently falls back to plaintext would expose the SMTP password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `starttls` (default): plain connect, then STARTTLS, which must be offered.
    StartTls,
    /// `tls`: TLS from the first byte (SMTPS, usually port 465).
    Implicit,
    /// `none`: plaintext; accepted only for a loopback host (a local test relay).
    None,
}

impl SmtpTls {
    fn label(self) -> &'static str {
        match self {
            Self::StartTls => "STARTTLS",
            Self::Implicit => "TLS",
            Self::None => "plaintext",
        }
    }
}

/// Where the relay is and how to reach it. Holds no password: that comes from the secret
/// layer at send time, so a rotated Key Vault secret needs no new `Mailer`.
#[derive(Clone)]
pub struct SmtpSettings {
    /// `SMTP_HOST`.
    pub host: String,
    /// `SMTP_PORT`; default 587, or 465 with `SMTP_TLS=tls`.
    pub port: u16,
    /// `SMTP_TLS`.
    pub tls: SmtpTls,
    /// `SMTP_USERNAME`; when set, AUTH (PLAIN or LOGIN) is required and a password must be
    /// passed to [`Mailer::send`](super::Mailer::send).
    pub username: Option<String>,
    /// The CA certificates from `SSL_CERT_FILE`, trusted *in addition to* the system roots
    /// (as the Key Vault client does), so one bundle can add a private relay CA without
    /// cutting off relays with public certificates.
    ///
    /// The system roots are those rustls-native-certs finds. Like OpenSSL, it takes an
    /// `SSL_CERT_FILE` (and `SSL_CERT_DIR`) present in the *process environment* as the system
    /// store itself; so when the setting comes from the environment without `SSL_CERT_DIR`,
    /// the bundle is in effect the only trust anchor, for SMTP and Key Vault alike.
    pub roots: Option<(PathBuf, Vec<Certificate>)>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("roots", &self.roots.as_ref().map(|(p, _)| p))
            .finish()
    }
}

/// Where mail goes. Two transports so local work needs no relay, while production uses one.
#[derive(Debug, Clone)]
pub enum MailTransport {
    /// A real relay (`SMTP_HOST` set).
    Smtp(SmtpSettings),
    /// `.eml` files in a directory (`SMTP_HOST` unset): the zero-setup default for local work.
    Outbox(PathBuf),
}

/// The mail configuration, validated at start-up so a typo fails `handler check`, not the
/// 2 a.m. tick.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// Where mail goes.
    pub transport: MailTransport,
    /// `MAIL_FROM` (required with SMTP).
    pub from: Mailbox,
    /// `MAIL_REPLY_TO`, so replies reach people rather than the sending mailbox.
    pub reply_to: Option<Mailbox>,
    /// `SMTP_TIMEOUT` (default 30 s): the bound on one whole SMTP exchange.
    pub timeout: Duration,
    /// Attempts per [`Mailer::send`](super::Mailer::send) for transient failures (default 3).
    pub retry_attempts: u32,
    /// Backoff before the second attempt; doubled for each further one (default 1 s).
    pub retry_backoff: Duration,
}

fn parse_mailbox(s: &Settings, name: &str) -> Result<Option<Mailbox>, ConfigError> {
    s.get(name)
        .map(|v| {
            v.parse::<Mailbox>().map_err(|_| {
                ConfigError::new(
                    name,
                    "must be an email address, optionally with a name: Reports <reports@example.com>",
                )
            })
        })
        .transpose()
}

/// Reads every certificate in a PEM bundle.
fn load_roots(s: &Settings) -> Result<Option<(PathBuf, Vec<Certificate>)>, ConfigError> {
    let Some(path) = s.get("SSL_CERT_FILE") else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    let pem = std::fs::read(&path)
        .map_err(|e| ConfigError::new("SSL_CERT_FILE", format!("cannot be read ({e})")))?;
    // lettre's Certificate::from_pem reads every CERTIFICATE block of the bundle.
    let cert = Certificate::from_pem(&pem)
        .map_err(|_| ConfigError::new("SSL_CERT_FILE", "is not a PEM bundle of CA certificates"))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::new(
            "SSL_CERT_FILE",
            "contains no PEM CERTIFICATE block",
        ));
    }
    Ok(Some((path, vec![cert])))
}

impl MailSettings {
    /// Reads `SMTP_HOST`, `SMTP_PORT`, `SMTP_TLS`, `SMTP_USERNAME`, `MAIL_FROM`,
    /// `MAIL_REPLY_TO`, `SMTP_TIMEOUT`, `SSL_CERT_FILE` (CA certificates trusted in addition to
    /// the system roots, the same meaning as for Key Vault) and `MAIL_OUTBOX_DIR` (resolved
    /// against `FUNCTIONS_APP_ROOT_PATH` when relative). `SMTP_PASSWORD` is not read here: it
    /// is a secret (maybe a vault reference) that the secret layer resolves and passes at send
    /// time. Everything is validated now, so a mistake fails start-up and `handler check`
    /// rather than a scheduled send.
    pub fn from_settings(s: &Settings) -> Result<MailSettings, ConfigError> {
        let timeout = s.duration("SMTP_TIMEOUT")?.unwrap_or(DEFAULT_SMTP_TIMEOUT);
        if timeout.is_zero() {
            return Err(ConfigError::new("SMTP_TIMEOUT", "must be more than zero"));
        }
        let reply_to = parse_mailbox(s, "MAIL_REPLY_TO")?;
        let (transport, from) = match s.get("SMTP_HOST") {
            Some(host) => {
                let tls = match s.get("SMTP_TLS").map(str::to_ascii_lowercase).as_deref() {
                    None | Some("starttls") => SmtpTls::StartTls,
                    Some("tls") => SmtpTls::Implicit,
                    Some("none") => SmtpTls::None,
                    Some(_) => {
                        return Err(ConfigError::new(
                            "SMTP_TLS",
                            "must be starttls, tls or none",
                        ));
                    }
                };
                if tls == SmtpTls::None && !is_loopback_host(host) {
                    return Err(ConfigError::new(
                        "SMTP_TLS",
                        "is none (plaintext), which is refused unless SMTP_HOST is a loopback \
                         host; use starttls or tls",
                    ));
                }
                let default_port = if tls == SmtpTls::Implicit {
                    DEFAULT_SMTPS_PORT
                } else {
                    DEFAULT_SMTP_PORT
                };
                let port = s
                    .parsed::<u16>("SMTP_PORT", "a TCP port number (1-65535)")?
                    .unwrap_or(default_port);
                if port == 0 {
                    return Err(ConfigError::new(
                        "SMTP_PORT",
                        "must be a TCP port number (1-65535)",
                    ));
                }
                let from = parse_mailbox(s, "MAIL_FROM")?.ok_or_else(|| {
                    ConfigError::new("MAIL_FROM", "is required when SMTP_HOST is set")
                })?;
                let smtp = SmtpSettings {
                    host: host.to_string(),
                    port,
                    tls,
                    username: s.get("SMTP_USERNAME").map(str::to_string),
                    roots: load_roots(s)?,
                };
                (MailTransport::Smtp(smtp), from)
            }
            None => {
                let dir = s.get("MAIL_OUTBOX_DIR").unwrap_or(DEFAULT_OUTBOX_DIR);
                let dir = match s.get("FUNCTIONS_APP_ROOT_PATH") {
                    Some(root) => crate::config::resolve(Path::new(root), dir),
                    None => PathBuf::from(dir),
                };
                let from = match parse_mailbox(s, "MAIL_FROM")? {
                    Some(f) => f,
                    None => DEFAULT_OUTBOX_FROM
                        .parse()
                        .map_err(|_| ConfigError::new("MAIL_FROM", "has no usable default"))?,
                };
                (MailTransport::Outbox(dir), from)
            }
        };
        Ok(MailSettings {
            transport,
            from,
            reply_to,
            timeout,
            retry_attempts: 3,
            retry_backoff: Duration::from_secs(1),
        })
    }

    /// One line for start-up logs and `handler check`, e.g.
    /// `SMTP smtp.example.com:587 (STARTTLS)` or `outbox ./outbox`, so an operator sees where
    /// mail will go. Never includes a password.
    pub fn describe(&self) -> String {
        match &self.transport {
            MailTransport::Smtp(smtp) => {
                let mut d = format!("SMTP {}:{} ({})", smtp.host, smtp.port, smtp.tls.label());
                if smtp.username.is_some() {
                    d.push_str(", AUTH");
                }
                if let Some((path, _)) = &smtp.roots {
                    d.push_str(&format!(", CA bundle {}", path.display()));
                }
                d
            }
            MailTransport::Outbox(dir) => format!("outbox {}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn plaintext_is_refused_for_remote_hosts() {
        let s = settings(&[
            ("SMTP_HOST", "smtp.example.com"),
            ("SMTP_TLS", "none"),
            ("MAIL_FROM", "r@example.com"),
        ]);
        let err = MailSettings::from_settings(&s).unwrap_err();
        assert_eq!(err.setting, "SMTP_TLS");
        for host in ["localhost", "127.0.0.1", "::1", "[::1]"] {
            let s = settings(&[
                ("SMTP_HOST", host),
                ("SMTP_TLS", "none"),
                ("MAIL_FROM", "r@example.com"),
            ]);
            assert!(MailSettings::from_settings(&s).is_ok(), "{host}");
        }
    }

    #[test]
    fn settings_defaults_and_descriptions() {
        let s = settings(&[
            ("SMTP_HOST", "smtp.example.com"),
            ("MAIL_FROM", "Reports <r@example.com>"),
            ("SMTP_USERNAME", "u"),
            ("SMTP_PASSWORD", "hunter2"),
        ]);
        let m = MailSettings::from_settings(&s).unwrap();
        assert_eq!(m.describe(), "SMTP smtp.example.com:587 (STARTTLS), AUTH");
        assert_eq!(m.timeout, DEFAULT_SMTP_TIMEOUT);
        assert!(!format!("{m:?}").contains("hunter2"));
        let s = settings(&[
            ("SMTP_HOST", "smtp.example.com"),
            ("SMTP_TLS", "tls"),
            ("MAIL_FROM", "r@example.com"),
        ]);
        assert_eq!(
            MailSettings::from_settings(&s).unwrap().describe(),
            "SMTP smtp.example.com:465 (TLS)"
        );
        let m = MailSettings::from_settings(&Settings::default()).unwrap();
        assert_eq!(m.describe(), "outbox outbox");
        let err = MailSettings::from_settings(&settings(&[("SMTP_HOST", "h")])).unwrap_err();
        assert_eq!(err.setting, "MAIL_FROM");
        let err = MailSettings::from_settings(&settings(&[
            ("SMTP_HOST", "h"),
            ("MAIL_FROM", "r@example.com"),
            ("SMTP_TLS", "maybe"),
        ]))
        .unwrap_err();
        assert_eq!(err.setting, "SMTP_TLS");
        let err = MailSettings::from_settings(&settings(&[
            ("SMTP_HOST", "h"),
            ("MAIL_FROM", "r@example.com"),
            ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
        ]))
        .unwrap_err();
        assert_eq!(err.setting, "SSL_CERT_FILE");
        let err =
            MailSettings::from_settings(&settings(&[("MAIL_FROM", "not an address")])).unwrap_err();
        assert_eq!(err.setting, "MAIL_FROM");
    }

    #[test]
    fn a_cert_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = MailSettings::from_settings(&settings(&[
            ("SMTP_HOST", "h"),
            ("MAIL_FROM", "r@example.com"),
            ("SSL_CERT_FILE", path.to_str().unwrap()),
        ]))
        .unwrap_err();
        assert_eq!(err.setting, "SSL_CERT_FILE");
    }
}
