//! The integration tests: one test binary (`cargo test --test e2e`), one module per capability,
//! all sharing [`support`]. Tests that start the handler use the real `handler` binary
//! (`CARGO_BIN_EXE_handler`) behind the host emulator; filter by module path, e.g.
//! `cargo test --test e2e nightly::`.

mod support;

mod api;
mod api_keys;
mod api_vault;
mod cli;
mod data;
mod deliveries_api;
mod destinations;
mod exports;
mod faults;
mod first_tick;
mod health;
mod host_protocol;
mod ledger;
mod mail;
mod nightly;
mod recipients;
mod render;
mod reports_file;
mod secrets;
mod security;
mod soak;
mod table_ledger;
mod telemetry;
