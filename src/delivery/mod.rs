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
//! The tick that ties them to schedules and rendering lives above this module; both parts here
//! take plain inputs so they can be tested against a real database and a real SMTP server.

pub mod ledger;
pub mod mail;

pub use ledger::{Claim, DeliveryRow, DeliveryState, Ledger};
pub use mail::{MailSettings, MailTransport, Mailer, OutgoingReport, SendOutcome, SmtpTls};
