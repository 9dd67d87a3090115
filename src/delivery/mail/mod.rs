//! The mailer: builds one report email and hands it to an SMTP relay (or an outbox directory).
//!
//! One job per file, each private behind the re-exports below, so callers name every item as
//! `crate::delivery::mail::…`:
//!
//! - `settings`: the mail configuration ([`MailSettings`]), read and validated once from
//!   the app settings; the only part of the mailer that reads them.
//! - `message`: the MIME message ([`OutgoingReport`] in, exact bytes out) with its
//!   deterministic [`message_id`], cleaned headers and CSV attachments.
//! - `smtp`: the SMTP exchange ([`Mailer::send`], [`Mailer::verify`]) with its whole-exchange
//!   timeout, retries and classification into a [`SendOutcome`].
//! - `outbox`: the `.eml` files written instead when no relay is configured.

mod message;
mod outbox;
mod settings;
mod smtp;

pub use message::{InlineImage, MailAttachment, OutgoingReport, message_id};
pub use settings::{
    DEFAULT_OUTBOX_DIR, DEFAULT_OUTBOX_FROM, DEFAULT_SMTP_PORT, DEFAULT_SMTP_TIMEOUT,
    DEFAULT_SMTPS_PORT, MailSettings, MailTransport, SmtpSettings, SmtpTls,
};
pub use smtp::{Mailer, SendOutcome, VerifyError};
