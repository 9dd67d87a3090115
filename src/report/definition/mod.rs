//! `reports.toml`: what a report is, and how the file that defines the reports is read.
//!
//! One file per job, so each can be read and tested on its own:
//! - `model`: the validated types ([`ReportSet`], [`Report`], [`Section`]) that delivery, the
//!   API and the CLI read, and [`Report::timing`], the part of a report that windows use;
//! - `subject`: the subject template (`{title}`, `{date}`, `{start}`, `{end}`), checked when
//!   the file is loaded and rendered per window with CR and LF flattened, so a title can never
//!   add an email header line;
//! - `loader`: the validating loader ([`ReportSet::load`], [`ReportSet::parse`]), which walks
//!   the file once and reports *every* problem with its file, line and field
//!   ([`ReportsFileError`], [`ReportsFileProblem`]).
//!
//! The submodules are private and everything public is re-exported here, so callers name
//! `report::definition::X` (or `report::X`) whichever file `X` lives in.

mod loader;
mod model;
mod subject;

pub use loader::{
    DEFAULT_CATCH_UP, DEFAULT_MAX_ROWS_IN_BODY, MAX_NAME_LEN, MAX_ROWS_IN_BODY_LIMIT,
    ReportsFileError, ReportsFileProblem, is_valid_name, parse_duration,
};
pub use model::{AttachmentFormat, Destination, DestinationKind, Report, ReportSet, Section};
pub use subject::{DEFAULT_SUBJECT, RECIPIENT_PLACEHOLDER, SUBJECT_PLACEHOLDERS};
