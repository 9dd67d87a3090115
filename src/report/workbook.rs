//! A report's workbook built while its rows are read: each section is streamed from the
//! database cursor into its sheet of a constant-memory [`XlsxBuilder`], so a million-row
//! report costs tens of MB however many rows it has, instead of the whole table in memory plus
//! the workbook. `handler report run --out FILE.xlsx` and the API's large `?format=xlsx`
//! answers both use it; small API answers render the cached table instead (same workbook).

use crate::data::{Column, DataError, Value};
use crate::render::xlsx::XlsxBuilder;

use super::{EngineError, Report, ReportEngine, Window};

/// Rows between two calls of the caller's `check` (a client that went away stops the query).
const CHECK_EVERY: usize = 4096;

/// A finished workbook and how many rows its sheets hold (for the log line).
#[derive(Debug)]
pub struct StreamedWorkbook {
    /// The `.xlsx` file.
    pub bytes: Vec<u8>,
    /// Data rows over all sheets (before Excel's row limit).
    pub rows: usize,
}

/// Builds the workbook of `report` for `window`, one sheet per section, streamed. `check` is
/// called every few thousand rows; an error from it stops the query and is returned as the
/// run's error (the API uses it to stop when its client has gone). The zip is written on a
/// blocking thread, off the async workers.
pub async fn stream_workbook(
    engine: &ReportEngine,
    report: &Report,
    window: &Window,
    mut check: impl FnMut() -> Result<(), DataError> + Send,
) -> Result<StreamedWorkbook, EngineError> {
    let book_error = |e: String| DataError::Query(format!("the workbook: {e}"));
    let mut book = XlsxBuilder::new(report.locale, report.time_zone);
    let mut total = 0;
    for section in &report.sections {
        let mut started = false;
        let mut rows = 0usize;
        let streamed = {
            let mut sink = |cols: &[Column], row: &mut Vec<Value>| -> Result<(), DataError> {
                if !started {
                    book.start_sheet(&section.title, cols, &section.display)
                        .map_err(book_error)?;
                    started = true;
                }
                rows += 1;
                if rows.is_multiple_of(CHECK_EVERY) {
                    check()?;
                }
                book.row(row).map_err(book_error)
            };
            engine.stream_section(section, window, &mut sink).await?
        };
        if !started {
            book.start_sheet(&section.title, &streamed.columns, &section.display)
                .map_err(book_error)?;
        }
        if streamed.truncated {
            tracing::warn!(report = %report.name, section = %section.title, "the section was cut at MAX_ROWS");
        }
        book.finish_sheet().map_err(book_error)?;
        total += streamed.rows;
    }
    let bytes = tokio::task::spawn_blocking(move || book.finish())
        .await
        .map_err(|e| book_error(format!("the writer stopped: {e}")))?;
    Ok(StreamedWorkbook {
        bytes: bytes.map_err(book_error)?,
        rows: total,
    })
}
