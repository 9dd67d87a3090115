//! What the end-to-end tests share: Azurite for the Table storage ledger ([`azurite`]), the
//! Functions host emulator that starts the real `handler`
//! binary ([`host`]) and the envelopes it sends ([`envelope`]), the SMTP relay ([`smtp`]), the
//! Key Vault and managed-identity fakes ([`vault`]), the throwaway PostgreSQL database
//! ([`pg`]), the outbox ([`outbox`]), bounded waits ([`wait`]), the OpenAPI response checker
//! ([`openapi`]), the OTLP/HTTP receiver ([`otlp`]), the webhook receiver ([`receiver`]) and
//! the sample shop rows ([`shop_rows`]).

pub mod azurite;
pub mod envelope;
pub mod host;
pub mod openapi;
pub mod otlp;
pub mod outbox;
pub mod pg;
pub mod receiver;
pub mod shop_rows;
pub mod smtp;
pub mod vault;
pub mod wait;
