//! The report engine: what a report is (`reports.toml`), when it runs (NCRONTAB schedules in
//! the report's own time zone), which span of time a run covers (windows), and running it
//! against the data source ([`ReportEngine`]).
//!
//! Both triggers build on this module: delivery asks a [`Schedule`] which occurrences are due
//! and turns each into a [`Window`]; the HTTP API turns a date, "latest" or an explicit range
//! into the same [`Window`], so an emailed report and an API answer for the same day are the
//! same rows.
//!
//! The modules depend one way: `engine` uses `definition`; `definition` uses `schedule` and
//! `window`, and `window` uses only `schedule`. A window is computed from a [`Timing`] (schedule, time zone, window kind), which
//! [`Report::timing`] provides, so window arithmetic can be read and tested without a reports
//! file.

pub mod definition;
pub mod engine;
pub mod schedule;
pub mod window;
pub mod workbook;

pub use definition::{Report, ReportSet, ReportsFileError, ReportsFileProblem, Section};
pub use engine::{EngineError, ReportEngine};
pub use schedule::Schedule;
pub use window::{Timing, Window, WindowKind};
