//! Delivery: getting each scheduled report occurrence into inboxes exactly once.
//!
//! - [`ledger`] records one row per (report, occurrence) in the state database
//!   (`STATE_DATABASE_URL`: a SQLite file locally, PostgreSQL in production). Claiming a row is
//!   atomic, so two handler processes ticking at once send one email, and a crashed claim
//!   expires after a lease so a later tick retries it.
//! - [`mail`] builds the report email (text + HTML + CSV attachments, deterministic
//!   Message-ID) and sends it over SMTP with a whole-exchange timeout and bounded retries, or
//!   writes it to an outbox directory for local work.
//!
//! - [`tick`] ties them to schedules and rendering: which occurrences are due on a tick, and
//!   delivering each one exactly once.

pub mod ledger;
pub mod mail;
pub mod tick;

pub use ledger::{Claim, DeliveryRow, DeliveryState, Ledger};
pub use mail::{MailSettings, MailTransport, Mailer, OutgoingReport, SendOutcome, SmtpTls};
