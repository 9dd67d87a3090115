//! The mailer: builds one report email and hands it to an SMTP relay (or an outbox directory).
//!
//! # Why the SMTP dialogue is driven step by step
//!
//! lettre's `AsyncSmtpTransport::send` fails the whole message when any `RCPT TO` is refused,
//! but one bad address among several must not stop the others. So [`Mailer::send`] drives
//! lettre's [`AsyncSmtpConnection`] itself: EHLO, STARTTLS (or implicit TLS), AUTH, `MAIL FROM`,
//! then one `RCPT TO` per envelope recipient:
//!
//! - a **5xx** reply drops that recipient and records it (with the server's reply) in
//!   the `rejected` list of [`SendOutcome::Sent`]; the message goes to the rest in one `DATA`;
//! - a **4xx** reply (e.g. greylisting) aborts the attempt before `DATA`, so nobody gets a copy
//!   yet, and the whole attempt is retried: recipients never receive duplicates because of a
//!   retry, and a temporarily refused recipient is not silently dropped;
//! - if every recipient is refused permanently the outcome is [`SendOutcome::Permanent`].
//!
//! # Bounds
//!
//! Each attempt (connect to the final reply) runs inside `tokio::time::timeout(SMTP_TIMEOUT)`,
//! because lettre's own timeout covers only the TCP connect, not a server that stops answering.
//! Transient failures (4xx, connection loss, timeouts) are retried with exponential backoff,
//! at most [`MailSettings::retry_attempts`] attempts in all; then the caller gets
//! [`SendOutcome::Transient`] and leaves the ledger row retryable for the next tick.
//!
//! A connection lost after the message was transmitted but before the relay's final reply is
//! ambiguous (SMTP cannot tell); it is treated as transient, so in that rare case a recipient
//! may get a second copy, carrying the same Message-ID.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::{Address, Message};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, Settings};

/// Default SMTP submission port (STARTTLS and plaintext).
pub const DEFAULT_SMTP_PORT: u16 = 587;
/// Default port for implicit TLS (SMTPS).
pub const DEFAULT_SMTPS_PORT: u16 = 465;
/// Default bound on one whole SMTP exchange.
pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default outbox directory when `SMTP_HOST` is unset.
pub const DEFAULT_OUTBOX_DIR: &str = "outbox";
/// Sender used in outbox mode when `MAIL_FROM` is unset (local work only).
pub const DEFAULT_OUTBOX_FROM: &str = "NightlyReport <reports@localhost>";

/// How the connection to the relay is protected (`SMTP_TLS`).
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
    /// passed to [`Mailer::send`].
    pub username: Option<String>,
    /// The CA certificates from `SSL_CERT_FILE`, trusted *instead of* the system roots.
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

/// Where mail goes.
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
    /// Attempts per [`Mailer::send`] for transient failures (default 3).
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

/// True for `localhost` and loopback IP literals: the only hosts plaintext SMTP may reach.
fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
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
    /// `MAIL_REPLY_TO`, `SMTP_TIMEOUT`, `SSL_CERT_FILE` and `MAIL_OUTBOX_DIR` (resolved against
    /// `FUNCTIONS_APP_ROOT_PATH` when relative). `SMTP_PASSWORD` is not read here: it is a
    /// secret (maybe a vault reference) that the secret layer resolves and passes at send time.
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
    /// `SMTP smtp.example.com:587 (STARTTLS)` or `outbox ./outbox`. Never includes a password.
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

/// One rendered report occurrence, ready to mail. The renderers fill it; the mailer only
/// wraps it in MIME and delivers it.
#[derive(Debug, Clone)]
pub struct OutgoingReport {
    /// The report name (for the Message-ID and the outbox file name).
    pub report: String,
    /// The occurrence being delivered (for the Message-ID and the outbox file name).
    pub occurrence: DateTime<Utc>,
    /// The rendered subject; control characters are replaced by spaces.
    pub subject: String,
    /// Visible recipients.
    pub to: Vec<Mailbox>,
    /// Visible copies.
    pub cc: Vec<Mailbox>,
    /// Hidden copies: in the SMTP envelope, never in the headers.
    pub bcc: Vec<Mailbox>,
    /// The plain-text alternative.
    pub text: String,
    /// The HTML alternative.
    pub html: String,
    /// `(file name, CSV text)`, one per non-empty section.
    pub attachments: Vec<(String, String)>,
    /// For a manual resend of an occurrence already sent: the ledger's attempt number. The
    /// email then gets its own Message-ID (and outbox file), so it is not taken for the first.
    pub resend: Option<u32>,
}

/// The same (report, occurrence) always gets the same Message-ID, so a duplicate that slips
/// through (an ambiguous SMTP failure) is recognisable, and the ledger can name the email.
///
/// Shape: `<nightlyreport.{report}.{YYYYMMDDTHHMMSSZ}.{hash}@{domain}>`, where `{report}` keeps
/// only letters, digits, `-` and `_`, and `{hash}` (SHA-256 of the exact name and instant)
/// keeps distinct names distinct after that cleaning. Includes the angle brackets.
pub fn message_id(report: &str, occurrence: DateTime<Utc>, domain: &str) -> String {
    let slug: String = report
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let mut h = Sha256::new();
    h.update(report.as_bytes());
    h.update([0]);
    h.update(occurrence.to_rfc3339().as_bytes());
    let hash: String = h
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let domain: String = domain
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        .collect();
    let domain = if domain.is_empty() {
        "localhost".to_string()
    } else {
        domain
    };
    format!(
        "<nightlyreport.{slug}.{}.{hash}@{domain}>",
        occurrence.format("%Y%m%dT%H%M%SZ")
    )
}

/// What happened to one [`Mailer::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The relay accepted the message for `accepted` recipients; `rejected` lists recipients
    /// refused permanently, as `address: server reply`.
    Sent {
        /// The Message-ID header, with angle brackets.
        message_id: String,
        /// How many envelope recipients were accepted.
        accepted: u32,
        /// Recipients refused permanently, with the reply.
        rejected: Vec<String>,
    },
    /// Worth retrying on a later tick: 4xx, connection refused or lost, timeout.
    Transient(String),
    /// Retrying will not help: 5xx, or no usable recipient, or a configuration problem.
    Permanent(String),
    /// The relay refused the credentials (5xx to AUTH). The caller should refresh the password
    /// from the vault once and retry, since the secret may have been rotated.
    AuthRejected(String),
}

/// Sends report emails. Cheap to clone; makes no connection until [`Mailer::send`] or
/// [`Mailer::verify`].
#[derive(Debug, Clone)]
pub struct Mailer {
    settings: MailSettings,
}

/// A built message: the exact bytes, sent unchanged on every attempt.
struct Built {
    bytes: Vec<u8>,
    message_id: String,
    from: Address,
    recipients: Vec<Address>,
}

fn clean_header_text(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn clean_mailbox(m: &Mailbox) -> Mailbox {
    Mailbox::new(m.name.as_deref().map(clean_header_text), m.email.clone())
}

fn clean_filename(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | '"' | ':') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        "section.csv".into()
    } else {
        cleaned
    }
}

/// `report-20261125T020000Z.eml`, with the report name reduced to safe file-name characters.
fn outbox_file_name(report: &str, occurrence: DateTime<Utc>) -> String {
    let slug: String = report
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{slug}-{}.eml", occurrence.format("%Y%m%dT%H%M%SZ"))
}

fn build_message(settings: &MailSettings, msg: &OutgoingReport) -> Result<Built, String> {
    let from = clean_mailbox(&settings.from);
    let mut message_id = message_id(&msg.report, msg.occurrence, from.email.domain());
    if let Some(n) = msg.resend {
        message_id = message_id.replacen('@', &format!(".resend{n}@"), 1);
    }
    let mut b = Message::builder()
        .from(from.clone())
        .subject(clean_header_text(&msg.subject))
        .message_id(Some(message_id.clone()))
        .date(SystemTime::now())
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
            "All".into(),
        ));
    if let Some(r) = &settings.reply_to {
        b = b.reply_to(clean_mailbox(r));
    }
    let mut recipients: Vec<Address> = Vec::new();
    let mut add = |a: &Address| {
        if !recipients.contains(a) {
            recipients.push(a.clone());
        }
    };
    for m in &msg.to {
        add(&m.email);
        b = b.to(clean_mailbox(m));
    }
    for m in &msg.cc {
        add(&m.email);
        b = b.cc(clean_mailbox(m));
    }
    for m in &msg.bcc {
        add(&m.email);
        // Bcc goes into lettre's envelope; lettre drops the header when formatting.
        b = b.bcc(clean_mailbox(m));
    }
    if recipients.is_empty() {
        return Err(format!("report {} has no recipients", msg.report));
    }
    let csv = ContentType::parse("text/csv; charset=utf-8")
        .map_err(|e| format!("internal: CSV content type ({e})"))?;
    let mut body = MultiPart::mixed().multipart(MultiPart::alternative_plain_html(
        msg.text.clone(),
        msg.html.clone(),
    ));
    for (name, content) in &msg.attachments {
        body = body
            .singlepart(Attachment::new(clean_filename(name)).body(content.clone(), csv.clone()));
    }
    let message = b
        .multipart(body)
        .map_err(|e| format!("cannot build the email for report {}: {e}", msg.report))?;
    Ok(Built {
        bytes: message.formatted(),
        message_id,
        from: from.email,
        recipients,
    })
}

/// Why one SMTP attempt stopped early.
enum Stop {
    Transient(String),
    Permanent(String),
    Auth(String),
}

impl Stop {
    /// 5xx replies are permanent; 4xx, network, TLS and timeouts are transient, since a relay
    /// outage or an expiring certificate can be fixed before the next tick.
    fn from_smtp(context: &str, e: &lettre::transport::smtp::Error) -> Stop {
        if e.is_permanent() {
            Stop::Permanent(format!("{context}: {e}"))
        } else {
            Stop::Transient(format!("{context}: {e}"))
        }
    }
}

impl Mailer {
    /// Builds a mailer. Makes no connection, so start-up never waits on the relay.
    pub fn new(settings: MailSettings) -> Mailer {
        Mailer { settings }
    }

    /// The settings this mailer uses.
    pub fn settings(&self) -> &MailSettings {
        &self.settings
    }

    /// See [`MailSettings::describe`].
    pub fn describe(&self) -> String {
        self.settings.describe()
    }

    /// Sends (or writes to the outbox) one report email. `password` is the current
    /// `SMTP_PASSWORD` from the secret layer; it is needed when `SMTP_USERNAME` is set.
    /// Never panics and never returns an error type: every failure is classified for the
    /// ledger (see the module docs for timeouts and retries).
    pub async fn send(&self, msg: &OutgoingReport, password: Option<&SecretString>) -> SendOutcome {
        let built = match build_message(&self.settings, msg) {
            Ok(b) => b,
            Err(e) => return SendOutcome::Permanent(e),
        };
        match &self.settings.transport {
            MailTransport::Outbox(dir) => write_outbox(dir, msg, &built).await,
            MailTransport::Smtp(smtp) => {
                let creds = match credentials(smtp, password) {
                    Ok(c) => c,
                    Err(e) => return SendOutcome::Permanent(e),
                };
                let attempts = self.settings.retry_attempts.max(1);
                let mut backoff = self.settings.retry_backoff;
                let mut attempt = 1;
                loop {
                    let stop = match tokio::time::timeout(
                        self.settings.timeout,
                        smtp_send(smtp, self.settings.timeout, creds.as_ref(), &built),
                    )
                    .await
                    {
                        Ok(Ok((accepted, rejected))) => {
                            return SendOutcome::Sent {
                                message_id: built.message_id,
                                accepted,
                                rejected,
                            };
                        }
                        Ok(Err(stop)) => stop,
                        Err(_) => Stop::Transient(format!(
                            "the SMTP exchange with {}:{} did not finish within {:?}",
                            smtp.host, smtp.port, self.settings.timeout
                        )),
                    };
                    match stop {
                        Stop::Transient(e) if attempt < attempts => {
                            tracing::warn!(
                                email.attempt = attempt,
                                error.message = %e,
                                backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                                "transient SMTP failure; retrying"
                            );
                            tokio::time::sleep(backoff).await;
                            backoff = backoff.saturating_mul(2);
                            attempt += 1;
                        }
                        Stop::Transient(e) => {
                            return SendOutcome::Transient(format!(
                                "{e} (after {attempt} attempt{})",
                                if attempt == 1 { "" } else { "s" }
                            ));
                        }
                        Stop::Permanent(e) => return SendOutcome::Permanent(e),
                        Stop::Auth(e) => return SendOutcome::AuthRejected(e),
                    }
                }
            }
        }
    }

    /// Checks that the relay is reachable, TLS verifies and the credentials are accepted,
    /// without sending mail: for `handler check`. In outbox mode, checks that the directory
    /// can be created.
    pub async fn verify(&self, password: Option<&SecretString>) -> Result<(), String> {
        match &self.settings.transport {
            MailTransport::Outbox(dir) => tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| format!("cannot create the outbox {}: {e}", dir.display())),
            MailTransport::Smtp(smtp) => {
                let creds = credentials(smtp, password)?;
                let timeout = self.settings.timeout;
                let check = async {
                    let mut conn = open(smtp, timeout, creds.as_ref()).await?;
                    let r = conn
                        .command(lettre::transport::smtp::commands::Noop)
                        .await
                        .map_err(|e| Stop::from_smtp("NOOP", &e));
                    let _ = conn.quit().await;
                    r.map(|_| ())
                };
                match tokio::time::timeout(timeout, check).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(Stop::Transient(e) | Stop::Permanent(e))) => Err(e),
                    Ok(Err(Stop::Auth(e))) => {
                        Err(format!("the relay refused the credentials: {e}"))
                    }
                    Err(_) => Err(format!(
                        "the SMTP exchange with {}:{} did not finish within {timeout:?}",
                        smtp.host, smtp.port
                    )),
                }
            }
        }
    }
}

/// Builds lettre credentials only here, at send time, from the secret layer's current value.
fn credentials(
    smtp: &SmtpSettings,
    password: Option<&SecretString>,
) -> Result<Option<Credentials>, String> {
    match (&smtp.username, password) {
        (Some(user), Some(pw)) => Ok(Some(Credentials::new(
            user.clone(),
            pw.expose_secret().to_string(),
        ))),
        (Some(_), None) => Err("SMTP_USERNAME is set but no SMTP_PASSWORD was provided".into()),
        (None, _) => Ok(None),
    }
}

fn tls_parameters(smtp: &SmtpSettings) -> Result<TlsParameters, Stop> {
    let mut b = TlsParameters::builder(smtp.host.clone());
    if let Some((_, certs)) = &smtp.roots {
        b = b.certificate_store(CertificateStore::None);
        for c in certs {
            b = b.add_root_certificate(c.clone());
        }
    }
    b.build_rustls()
        .map_err(|e| Stop::Permanent(format!("cannot set up TLS for {}: {e}", smtp.host)))
}

/// Connects, secures the connection as configured, and authenticates.
async fn open(
    smtp: &SmtpSettings,
    timeout: Duration,
    creds: Option<&Credentials>,
) -> Result<AsyncSmtpConnection, Stop> {
    let hello = ClientId::default();
    let implicit = match smtp.tls {
        SmtpTls::Implicit => Some(tls_parameters(smtp)?),
        _ => None,
    };
    let server = (smtp.host.as_str(), smtp.port);
    let mut conn =
        AsyncSmtpConnection::connect_tokio1(server, Some(timeout), &hello, implicit, None)
            .await
            .map_err(|e| {
                Stop::from_smtp(
                    &format!("cannot connect to {}:{}", smtp.host, smtp.port),
                    &e,
                )
            })?;
    if smtp.tls == SmtpTls::StartTls {
        if !conn.can_starttls() {
            conn.abort().await;
            return Err(Stop::Permanent(format!(
                "{}:{} does not offer STARTTLS, which SMTP_TLS=starttls requires",
                smtp.host, smtp.port
            )));
        }
        let params = tls_parameters(smtp)?;
        if let Err(e) = conn.starttls(params, &hello).await {
            // Do not touch `conn` again: when the TLS handshake fails, lettre 0.11 leaves the
            // stream empty and any later write (even the QUIT in `abort`) panics. Dropping it
            // closes the socket.
            drop(conn);
            return Err(Stop::from_smtp("STARTTLS", &e));
        }
    }
    if let Some(creds) = creds {
        match conn
            .auth(&[Mechanism::Plain, Mechanism::Login], creds)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                conn.abort().await;
                return Err(if e.is_permanent() {
                    Stop::Auth(format!("AUTH: {e}"))
                } else if e.is_client() {
                    Stop::Permanent(format!("AUTH: {e}"))
                } else {
                    Stop::Transient(format!("AUTH: {e}"))
                });
            }
        }
    }
    Ok(conn)
}

/// One SMTP attempt: returns `(accepted, rejected)` or why it stopped.
async fn smtp_send(
    smtp: &SmtpSettings,
    timeout: Duration,
    creds: Option<&Credentials>,
    built: &Built,
) -> Result<(u32, Vec<String>), Stop> {
    let mut conn = open(smtp, timeout, creds).await?;
    let result = dialogue(&mut conn, built).await;
    match &result {
        Ok(_) => {
            let _ = conn.quit().await;
        }
        Err(_) => conn.abort().await,
    }
    result
}

async fn dialogue(
    conn: &mut AsyncSmtpConnection,
    built: &Built,
) -> Result<(u32, Vec<String>), Stop> {
    let info = conn.server_info().clone();
    let mut params = Vec::new();
    let non_ascii = !built.from.to_string().is_ascii()
        || built.recipients.iter().any(|a| !a.to_string().is_ascii());
    if non_ascii {
        if !info.supports_feature(Extension::SmtpUtfEight) {
            return Err(Stop::Permanent(
                "an address is not ASCII and the relay does not support SMTPUTF8".into(),
            ));
        }
        params.push(MailParameter::SmtpUtfEight);
    }
    if !built.bytes.is_ascii() && info.supports_feature(Extension::EightBitMime) {
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(Some(built.from.clone()), params))
        .await
        .map_err(|e| Stop::from_smtp("MAIL FROM", &e))?;

    let mut accepted = 0u32;
    let mut rejected = Vec::new();
    for rcpt in &built.recipients {
        match conn.command(Rcpt::new(rcpt.clone(), vec![])).await {
            Ok(_) => accepted += 1,
            Err(e) if e.is_permanent() => rejected.push(format!("{rcpt}: {e}")),
            // A 4xx for one recipient: stop before DATA so nobody gets a copy yet, and retry
            // the whole message later.
            Err(e) => return Err(Stop::Transient(format!("RCPT TO {rcpt}: {e}"))),
        }
    }
    if accepted == 0 {
        return Err(Stop::Permanent(format!(
            "every recipient was rejected: {}",
            rejected.join("; ")
        )));
    }
    conn.command(Data)
        .await
        .map_err(|e| Stop::from_smtp("DATA", &e))?;
    conn.message(&built.bytes)
        .await
        .map_err(|e| Stop::from_smtp("end of DATA", &e))?;
    Ok((accepted, rejected))
}

/// Writes `<report>-<occurrence>.eml` atomically (temp file + rename), so a reader never sees
/// half a message and a retried occurrence replaces its own file.
async fn write_outbox(dir: &Path, msg: &OutgoingReport, built: &Built) -> SendOutcome {
    let mut name = outbox_file_name(&msg.report, msg.occurrence);
    if let Some(n) = msg.resend {
        name = name.replace(".eml", &format!("-resend{n}.eml"));
    }
    let target = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let write = async {
        tokio::fs::create_dir_all(dir).await?;
        tokio::fs::write(&tmp, &built.bytes).await?;
        tokio::fs::rename(&tmp, &target).await
    };
    match write.await {
        Ok(()) => SendOutcome::Sent {
            message_id: built.message_id.clone(),
            accepted: u32::try_from(built.recipients.len()).unwrap_or(u32::MAX),
            rejected: Vec::new(),
        },
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            SendOutcome::Transient(format!("cannot write {}: {e}", target.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn message_ids_are_deterministic_and_distinct() {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap();
        let a = message_id("daily sales", t, "example.com");
        assert_eq!(a, message_id("daily sales", t, "example.com"));
        assert!(a.starts_with("<nightlyreport.daily-sales.20261125T020000Z."));
        assert!(a.ends_with("@example.com>"));
        assert_ne!(a, message_id("daily-sales", t, "example.com"));
        assert_ne!(
            a,
            message_id("daily sales", t + chrono::Duration::days(1), "example.com")
        );
        let odd = message_id("a\r\nb<>@", t, "ex\r\nample.com");
        assert!(
            !odd.contains(['\r', '\n']) && odd.matches('@').count() == 1,
            "{odd}"
        );
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

    #[test]
    fn header_text_and_file_names_are_cleaned() {
        assert_eq!(
            clean_header_text("Sales\r\nBcc: evil@x"),
            "Sales Bcc: evil@x"
        );
        assert_eq!(clean_filename("../a/b\r\n.csv"), "_a_b__.csv");
        assert_eq!(clean_filename(""), "section.csv");
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(outbox_file_name("a/b c", t), "a_b_c-20260102T030405Z.eml");
    }
}
