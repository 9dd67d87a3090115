//! The report engine's definitions: what a report is (`reports.toml`), when it runs (NCRONTAB
//! schedules in the report's own time zone) and which span of time a run covers (windows).
//!
//! Both triggers build on this module: delivery asks a [`Schedule`] which occurrences are due
//! and turns each into a [`Window`]; the HTTP API turns a date, "latest" or an explicit range
//! into the same [`Window`], so an emailed report and an API answer for the same day are the
//! same rows.

pub mod definition;
pub mod engine;
pub mod schedule;
pub mod window;

pub use definition::{Problem, Report, ReportSet, ReportsFileError, Section};
pub use engine::{EngineError, ReportEngine};
pub use schedule::Schedule;
pub use window::{Window, WindowKind};
