//! Renderers: one report result, several shapes. HTML (the email body), plain text (its
//! multipart alternative), CSV (the attachment and the API's `text/csv`) and JSON (the API).
//!
//! All render the same [`Table`]s, so an emailed report and an API answer for the same
//! window show the same rows. Display formats (labels, locale-aware numbers, money, dates:
//! [`format`]) are used by HTML and text; CSV and JSON keep machine-readable values (JSON adds
//! each column's label and format beside its name).

pub mod chart;
pub mod csv;
pub mod format;
mod html;
pub mod json;
mod text;
pub mod xlsx;

pub use self::csv::{CsvRowWriter, render_csv, write_csv};
pub use self::html::{HTML_BUDGET_BYTES, render_html};
pub use self::json::render_json;
pub use self::text::render_text;
pub use self::xlsx::render_xlsx;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use self::chart::ChartSpec;
use self::format::{ColumnSettings, Formatter, Locale};
use crate::data::Table;

/// A file-name-safe slug of a title: lowercase ASCII letters and digits, other runs of
/// characters as one `-`, at most 40 characters (`Orders by status` → `orders-by-status`).
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').chars().take(40).collect()
}

/// The name of a section's CSV file, the same for the email attachment and the API's
/// download, so a client can tell which report, day and section a file holds:
/// `<report>-<date>-<n>-<section-slug>.csv` (`n` counts sections from 1).
pub fn csv_file_name(report: &str, date: NaiveDate, section: usize, title: &str) -> String {
    format!("{report}-{date}-{section}-{}.csv", slug(title))
}

/// The name of the report's workbook, attached to the email and served by the API:
/// `<report>-<date>.xlsx`.
pub fn xlsx_file_name(report: &str, date: NaiveDate) -> String {
    format!("{report}-{date}.xlsx")
}

/// What every rendering says about the run besides the tables: which report, which window in
/// which time zone, and when it was generated.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    /// The report's slug (`daily-sales`).
    pub report_name: &'a str,
    /// The human title.
    pub title: &'a str,
    /// Optional text under the title.
    pub description: Option<&'a str>,
    /// The report's zone: windows, timestamps and dates are shown in it (parsed once, when the
    /// report was loaded, never per cell).
    pub time_zone: Tz,
    /// Window start (inclusive).
    pub start: DateTime<Utc>,
    /// Window end (exclusive).
    pub end: DateTime<Utc>,
    /// The day reported on.
    pub date: NaiveDate,
    /// When the report was produced.
    pub generated_at: DateTime<Utc>,
    /// Rows per section shown in HTML and text; the rest is only in the CSV attachment.
    pub max_rows_in_body: usize,
    /// How numbers, money and dates are written for the readers.
    pub locale: Locale,
    /// The report's window is one calendar day (`previous_day`), so the heading names that
    /// day and the technical window line is left out.
    pub single_day: bool,
    /// The names of the files attached to the email, listed under the tables so readers know
    /// they are there (empty for renderings without attachments).
    pub attachments: &'a [String],
    /// One entry per section: the chart image to show above its table, if any.
    pub charts: &'a [Option<chart::InlineChart>],
}

impl RenderContext<'_> {
    fn tz(&self) -> Tz {
        self.time_zone
    }

    /// The value formatter for this report's locale and zone.
    pub fn formatter(&self) -> Formatter {
        Formatter::new(self.locale, self.tz())
    }

    /// The heading and `<title>`: `Daily sales · Tuesday, 1 December 2026`.
    pub fn heading(&self, f: &Formatter) -> String {
        format!("{} · {}", self.title, f.long_date(self.date))
    }

    /// `YYYY-MM-DD HH:MM` in the report's zone.
    fn local(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.tz())
            .format("%Y-%m-%d %H:%M")
            .to_string()
    }

    /// The window line shown in HTML and text headers.
    fn window_line(&self) -> String {
        format!(
            "{} – {} ({})",
            self.local(self.start),
            self.local(self.end),
            self.time_zone
        )
    }
}

/// How a section is presented: column labels and formats, totals, chart.
///
/// Kept apart from the SQL so both the report definition and each result carry it, and a
/// result can be rendered without the definition at hand.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SectionDisplay {
    /// Per-column settings, in file order.
    pub columns: Vec<ColumnSettings>,
    /// Columns summed in a "Total" row.
    pub totals: Vec<chart::ColumnRef>,
    /// The section's chart, if any.
    pub chart: Option<ChartSpec>,
}

impl SectionDisplay {
    /// The settings of the column called `name`, if configured.
    pub fn column(&self, name: &str) -> Option<&ColumnSettings> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// What people see as the header of `name`: its label, else the SQL name.
    pub fn label<'a>(&'a self, name: &'a str) -> &'a str {
        self.column(name)
            .and_then(|c| c.label.as_deref())
            .unwrap_or(name)
    }

    /// What is wrong with these settings for a query that returns `columns` (as prepared by
    /// `handler check`): columns it does not return, and totals or chart values on columns
    /// whose declared type is not numeric. Each problem carries where it was written.
    pub fn problems_with(
        &self,
        columns: &[crate::data::Column],
    ) -> Vec<(&format::Located, String)> {
        let mut out = Vec::new();
        let find = |n: &str| columns.iter().find(|c| c.name == n);
        let known = columns
            .iter()
            .map(|c| format!("`{}`", c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let unknown = |n: &str| format!("unknown column `{n}`: the query returns {known}");
        for c in &self.columns {
            if find(&c.name).is_none() {
                out.push((&c.at, unknown(&c.name)));
            }
        }
        let numeric_refs = self
            .totals
            .iter()
            .chain(self.chart.iter().flat_map(|c| c.y.iter()));
        for r in numeric_refs {
            match find(&r.name) {
                None => out.push((&r.at, unknown(&r.name))),
                Some(col)
                    if col.kind != crate::data::ColumnType::Unknown && !col.kind.is_numeric() =>
                {
                    out.push((
                        &r.at,
                        format!(
                            "`{}` is a {} column: only numeric columns can be summed or charted",
                            r.name, col.kind
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(chart) = &self.chart
            && find(&chart.x.name).is_none()
        {
            out.push((&chart.x.at, unknown(&chart.x.name)));
        }
        out
    }

    /// Configured column names that the result does not have: each is shown unformatted and
    /// logged once per rendering by the caller, never failing a delivery.
    pub fn missing_columns<'a>(&'a self, table: &Table) -> Vec<&'a str> {
        let has = |n: &str| table.columns.iter().any(|c| c.name == n);
        let mut out: Vec<&str> = Vec::new();
        let named = self
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .chain(self.totals.iter().map(|t| t.name.as_str()))
            .chain(self.chart.iter().flat_map(|c| {
                std::iter::once(c.x.name.as_str()).chain(c.y.iter().map(|y| y.name.as_str()))
            }));
        for n in named {
            if !has(n) && !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }
}

/// One section's heading and result.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionResult {
    /// The section heading.
    pub title: String,
    /// The query result.
    pub table: Table,
    /// Labels, formats, totals and chart of the section.
    pub display: SectionDisplay,
}

impl SectionResult {
    /// The cells of the "Total" row, one per column (`None` where nothing is summed), or
    /// `None` when the section has no totals or no rows. NULLs count as nothing.
    pub fn totals(&self, f: &Formatter) -> Option<Vec<Option<String>>> {
        if self.display.totals.is_empty() || self.table.rows.is_empty() {
            return None;
        }
        let cells = self
            .table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if !self.display.totals.iter().any(|t| t.name == c.name) {
                    return None;
                }
                let sum = format::column_sum(self.table.rows.iter().filter_map(|r| r.get(i)));
                Some(
                    sum.map(|s| f.total(&s, self.display.column(&c.name)))
                        .unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>();
        cells.iter().any(Option::is_some).then_some(cells)
    }

    /// Logs, once per call, each configured column that the result lacks: the column is
    /// then simply shown without settings.
    pub fn warn_missing_columns(&self, report: &str) {
        for name in self.display.missing_columns(&self.table) {
            tracing::warn!(
                report = %report,
                section = %self.title,
                column = %name,
                "a column configured in reports.toml is not in the query result; it is shown unformatted"
            );
        }
    }
}

/// Neutralises spreadsheet formulas: a text cell starting with `=`, `+`, `-`, `@`, tab or CR is
/// prefixed with `'`, so opening the CSV in Excel never executes it (OWASP "CSV injection").
#[cfg(test)]
pub(crate) fn neutralise(s: &str) -> std::borrow::Cow<'_, str> {
    match s.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{s}").into(),
        _ => s.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_csv_file_names() {
        assert_eq!(slug("Orders by status"), "orders-by-status");
        assert_eq!(slug("  Ümsatz / Tag (EUR) "), "msatz-tag-eur");
        assert_eq!(slug("x".repeat(50).as_str()).len(), 40);
        let d = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        assert_eq!(
            csv_file_name("daily-sales", d, 2, "Top products"),
            "daily-sales-2026-11-24-2-top-products.csv"
        );
    }

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(neutralise("=1+2"), "'=1+2");
        assert_eq!(neutralise("-x"), "'-x");
        assert_eq!(neutralise("\tx"), "'\tx");
        assert_eq!(neutralise("plain"), "plain");
    }
}
