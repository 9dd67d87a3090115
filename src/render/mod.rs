//! Renderers: one report result, four shapes. HTML (the email body), plain text (its
//! multipart alternative), CSV (the attachment and the API's `text/csv`) and JSON (the API).
//!
//! All four render the same [`Table`]s, so an emailed report and an API answer for the same
//! window show the same rows. Display formats (thousands separators, local times) are only used
//! by HTML and text; CSV and JSON keep machine-readable values.

mod csv;
mod html;
mod json;
mod text;

pub use self::csv::{CsvRowWriter, render_csv, write_csv};
pub use self::html::render_html;
pub use self::json::render_json;
pub use self::text::render_text;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::data::{Table, Value};

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
    /// IANA zone the window is shown in (e.g. `Europe/Berlin`).
    pub time_zone: &'a str,
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
}

impl RenderContext<'_> {
    fn tz(&self) -> Tz {
        self.time_zone.parse().unwrap_or(Tz::UTC)
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

/// One section's heading and result.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionResult {
    /// The section heading.
    pub title: String,
    /// The query result.
    pub table: Table,
}

/// Inserts thousands separators into the integer part of a plain number (`-1234567.5` →
/// `-1,234,567.5`); anything else (`NaN`, `Infinity`) is returned unchanged.
pub(crate) fn group_thousands(s: &str) -> String {
    let (sign, rest) = match s.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", s),
    };
    let int_end = rest.find('.').unwrap_or(rest.len());
    let (int, frac) = rest.split_at(int_end);
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + int.len() / 3);
    out.push_str(sign);
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out.push_str(frac);
    out
}

/// The human form of a value for HTML and text: grouped numbers, instants in the report's zone,
/// NULL as empty.
pub(crate) fn display_value(v: &Value, tz: Tz) -> String {
    match v {
        Value::Int(_) | Value::Float(_) | Value::Decimal(_) => group_thousands(&v.to_plain()),
        Value::TimestampTz(t) => t
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string(),
        other => other.to_plain(),
    }
}

/// Neutralises spreadsheet formulas: a text cell starting with `=`, `+`, `-`, `@`, tab or CR is
/// prefixed with `'`, so opening the CSV in Excel never executes it (OWASP "CSV injection").
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
    fn thousands_grouping() {
        assert_eq!(group_thousands("0"), "0");
        assert_eq!(group_thousands("999"), "999");
        assert_eq!(group_thousands("1000"), "1,000");
        assert_eq!(group_thousands("-1234567.125"), "-1,234,567.125");
        assert_eq!(group_thousands("NaN"), "NaN");
        assert_eq!(group_thousands("-Infinity"), "-Infinity");
    }

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(neutralise("=1+2"), "'=1+2");
        assert_eq!(neutralise("-x"), "'-x");
        assert_eq!(neutralise("\tx"), "'\tx");
        assert_eq!(neutralise("plain"), "plain");
    }
}
