//! The SMTP exchange: [`Mailer`] hands a built message to the relay (or to the outbox) and
//! classifies what happened into a [`SendOutcome`] for the ledger.
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
//!
//! # Trust
//!
//! The relay's certificate is verified against the system roots plus the CA certificates of
//! `SSL_CERT_FILE` ([`SmtpSettings::roots`]), the same trust the Key Vault client uses.

use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use secrecy::{ExposeSecret, SecretString};

use super::message::{Built, OutgoingReport, build_message};
use super::outbox::write_outbox;
use super::settings::{MailSettings, MailTransport, SmtpSettings, SmtpTls};

/// Why [`Mailer::verify`] failed: one sentence for `handler check` (the relay's reply, the TLS
/// or connection problem, or the timeout), never the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct VerifyError(String);

/// What happened to one [`Mailer::send`], classified so the caller knows whether to record the
/// email as sent, retry on a later tick, give up, or refresh the password first.
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

    /// The settings this mailer uses, so callers can inspect the transport without keeping a
    /// second copy that could drift.
    pub fn settings(&self) -> &MailSettings {
        &self.settings
    }

    /// One line naming where mail goes, for start-up logs and `handler check`; see
    /// [`MailSettings::describe`].
    pub fn describe(&self) -> String {
        self.settings.describe()
    }

    /// Sends (or writes to the outbox) one report email. `password` is the current
    /// `SMTP_PASSWORD` from the secret layer; it is needed when `SMTP_USERNAME` is set.
    /// Never panics and never returns an error type: every failure is classified for the
    /// ledger. Each attempt is bounded as a whole by [`MailSettings::timeout`], and transient
    /// failures are retried up to [`MailSettings::retry_attempts`] times with a doubling
    /// backoff, so a tick never hangs on a silent relay.
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
                                // The reply names recipients: masked in the log line.
                                error.message = %crate::delivery::recipients::mask_addresses(&e),
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
    pub async fn verify(&self, password: Option<&SecretString>) -> Result<(), VerifyError> {
        self.verify_transport(password).await.map_err(VerifyError)
    }

    async fn verify_transport(&self, password: Option<&SecretString>) -> Result<(), String> {
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

/// TLS for the relay: lettre's default certificate store (the system roots, loaded by
/// rustls-native-certs) plus the `SSL_CERT_FILE` certificates, which `add_root_certificate`
/// adds to that store rather than replacing it: the same meaning `SSL_CERT_FILE` has for the
/// Key Vault client.
fn tls_parameters(smtp: &SmtpSettings) -> Result<TlsParameters, Stop> {
    let mut b = TlsParameters::builder(smtp.host.clone());
    if let Some((_, certs)) = &smtp.roots {
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
