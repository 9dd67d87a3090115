//! Delivery: getting each scheduled report occurrence into inboxes exactly once.
//!
//! - [`ledger`] records one row per (report, occurrence, target): in the Function app's own storage
//!   account (Azure Table storage), in `STATE_DATABASE_URL` (SQLite or PostgreSQL), or in a
//!   local SQLite file. Claiming a row is atomic, so two handler processes ticking at once
//!   send one email, and a crashed claim expires after a lease so a later tick retries it.
//! - [`mail`] builds the report email (text + HTML + CSV attachments, deterministic
//!   Message-ID) and sends it over SMTP with a whole-exchange timeout and bounded retries, or
//!   writes it to an outbox directory for local work.
//! - [`service`] is the part the rest of the app holds: [`Delivery`] (the report engine, the
//!   ledger, the mailer, the claim lease).
//! - [`email`] renders a report occurrence as an email and sends it with the SMTP password
//!   from the secret layer.
//! - [`due`] is the rule, as a pure function: which occurrences a tick delivers and which it
//!   records as missed.
//! - [`tick`] applies it with the ledger: claiming each due occurrence exactly once.
//! - [`occurrence`] delivers a claimed occurrence: the report run once, sent to each of its
//!   targets (the email; per-recipient emails and destinations when the report fans out), each
//!   target's outcome on its own ledger row.
//! - [`recipients`] turns a `recipients_query`'s rows into recipients, each a ledger target of
//!   its own, and masks their addresses for logs.
//! - [`destinations`] posts a report to a Teams, Slack or webhook destination (an Adaptive
//!   Card, Block Kit, or the API's JSON signed with HMAC-SHA256), bounded, with the URL read by
//!   setting name from the secret layer and never printed.

pub mod destinations;
pub mod due;
pub mod email;
pub mod ledger;
pub mod mail;
pub mod occurrence;
pub mod recipients;
pub mod service;
pub mod tick;

pub use ledger::{Claim, DeliveryRow, DeliveryState, Ledger, LedgerSettings, Origin, Target};
pub use mail::{MailSettings, MailTransport, Mailer, OutgoingReport, SendOutcome, SmtpTls};
pub use service::{CLAIM_LEASE, DEFAULT_LEDGER_FILE, Delivery, LedgerBackend};
