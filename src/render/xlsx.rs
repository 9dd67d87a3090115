//! The Excel workbook: one sheet per section, for staff who keep working on the figures.
//!
//! Unlike CSV, the workbook keeps its presentation: numbers are numeric cells with the
//! column's Excel number format (money, percent, decimals), dates and timestamps are Excel
//! dates in the report's zone, booleans are booleans, text is always text (a value starting
//! with `=` is written as a string, never as a formula), and each sheet has a bold frozen
//! header row with the labels, an autofilter, readable column widths and the totals row.
//!
//! Sheets are written row by row in `rust_xlsxwriter`'s constant-memory mode (rows go to a
//! temporary file as they are written), so a million-row section does not hold a second copy
//! of itself in memory; [`XlsxBuilder`] can be fed straight from a streamed query.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use rust_xlsxwriter::{Format, FormatAlign, Workbook, XlsxError};

use super::format::{ColumnFormat, ColumnSettings, Locale, column_sum};
use super::{RenderContext, SectionDisplay, SectionResult};
use crate::data::{Column, ColumnType, Value};

/// The content type of a workbook, for the API and the email attachment.
pub const XLSX_CONTENT_TYPE: &str =
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Column widths are measured on this many rows: enough to be readable, bounded in cost.
const WIDTH_SAMPLE_ROWS: usize = 200;
/// The widest a column is made, in Excel character units.
const MAX_WIDTH: f64 = 60.0;
/// Excel's last row (1-based 1,048,576); rows past it are left out and noted.
const EXCEL_MAX_ROWS: u32 = 1_048_576;

/// Renders every section as a sheet of one workbook.
pub fn render_xlsx(ctx: &RenderContext, sections: &[SectionResult]) -> Result<Vec<u8>, String> {
    let mut b = XlsxBuilder::new(ctx.locale, ctx.tz());
    for s in sections {
        b.start_sheet(&s.title, &s.table.columns, &s.display)?;
        for row in &s.table.rows {
            b.row(row)?;
        }
        b.finish_sheet()?;
    }
    b.finish()
}

/// A sanitised, unique Excel sheet name: at most 31 characters, none of `[]:*?/\`, no
/// leading or trailing apostrophe, never empty, unique case-insensitively within `used`.
pub fn sheet_name(title: &str, index: usize, used: &mut HashSet<String>) -> String {
    let cleaned: String = title
        .chars()
        .map(|c| {
            if matches!(c, '[' | ']' | ':' | '*' | '?' | '/' | '\\') || c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    let cleaned = cleaned.trim_matches('\'').trim().to_string();
    let base = if cleaned.is_empty() || cleaned.eq_ignore_ascii_case("history") {
        format!("Section {}", index + 1)
    } else {
        cleaned
    };
    let mut n = 1;
    loop {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!(" ({n})")
        };
        let keep = 31 - suffix.chars().count();
        let head: String = base.chars().take(keep).collect();
        let candidate = format!("{}{suffix}", head.trim_end());
        if used.insert(candidate.to_lowercase()) {
            return candidate;
        }
        n += 1;
    }
}

/// The Excel number format of a column's settings (or of its type, without settings).
fn number_format(locale: Locale, settings: Option<&ColumnSettings>, kind: ColumnType) -> String {
    let places = |d: u8| {
        if d == 0 {
            String::new()
        } else {
            format!(".{}", "0".repeat(usize::from(d)))
        }
    };
    let date = match locale {
        Locale::EnUs => "mmm d, yyyy",
        Locale::EnGb => "d mmm yyyy",
        Locale::DeDe => "dd.mm.yyyy",
        Locale::FrFr => "dd/mm/yyyy",
    };
    let time = match locale {
        Locale::EnUs => " h:mm AM/PM",
        _ => " hh:mm",
    };
    match settings.and_then(|s| s.format.map(|f| (s, f))) {
        Some((s, ColumnFormat::Integer)) => {
            let _ = s;
            "#,##0".into()
        }
        Some((s, ColumnFormat::Decimal)) => format!("#,##0{}", places(s.effective_decimals())),
        Some((s, ColumnFormat::Percent)) => format!("0{}%", places(s.effective_decimals())),
        Some((s, ColumnFormat::Currency)) => {
            let sym = s.currency.map_or("", |c| c.symbol(locale)).replace('"', "");
            let num = format!("#,##0{}", places(s.effective_decimals()));
            match locale {
                Locale::EnUs | Locale::EnGb => format!("\"{sym}\"{num}"),
                Locale::DeDe | Locale::FrFr => format!("{num}\\ \"{sym}\""),
            }
        }
        Some((_, ColumnFormat::Date)) => date.into(),
        Some((_, ColumnFormat::DateTime)) => format!("{date}{time}"),
        Some((_, ColumnFormat::Text)) => "@".into(),
        None => match kind {
            ColumnType::Date => date.into(),
            ColumnType::Timestamp | ColumnType::TimestampTz => format!("{date}{time}"),
            _ => "General".into(),
        },
    }
}

struct SheetState {
    index: usize,
    columns: Vec<Column>,
    settings: Vec<Option<ColumnSettings>>,
    formats: Vec<Format>,
    totals: Vec<bool>,
    sums: Vec<Vec<Value>>,
    widths: Vec<f64>,
    next_row: u32,
    dropped: u64,
}

/// Builds a workbook sheet by sheet and row by row (constant memory), so it can be fed from
/// a table in memory or straight from a streamed query.
pub struct XlsxBuilder {
    workbook: Workbook,
    locale: Locale,
    tz: chrono_tz::Tz,
    used_names: HashSet<String>,
    sheets: usize,
    sheet: Option<SheetState>,
    header: Format,
    bold: Format,
}

impl std::fmt::Debug for XlsxBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XlsxBuilder")
            .field("sheets", &self.sheets)
            .finish_non_exhaustive()
    }
}

fn err(e: XlsxError) -> String {
    format!("cannot build the workbook: {e}")
}

impl XlsxBuilder {
    /// An empty workbook for `locale`; instants are written in `tz`.
    pub fn new(locale: Locale, tz: chrono_tz::Tz) -> Self {
        XlsxBuilder {
            workbook: Workbook::new(),
            locale,
            tz,
            used_names: HashSet::new(),
            sheets: 0,
            sheet: None,
            header: Format::new().set_bold().set_align(FormatAlign::Top),
            bold: Format::new().set_bold(),
        }
    }

    /// Starts a sheet for a section: the header row (labels, bold, frozen).
    pub fn start_sheet(
        &mut self,
        title: &str,
        columns: &[Column],
        display: &SectionDisplay,
    ) -> Result<(), String> {
        if self.sheet.is_some() {
            self.finish_sheet()?;
        }
        let name = sheet_name(title, self.sheets, &mut self.used_names);
        let index = self.sheets;
        self.sheets += 1;
        let settings: Vec<Option<ColumnSettings>> = columns
            .iter()
            .map(|c| display.column(&c.name).cloned())
            .collect();
        let formats: Vec<Format> = columns
            .iter()
            .zip(&settings)
            .map(|(c, s)| {
                Format::new().set_num_format(number_format(self.locale, s.as_ref(), c.kind))
            })
            .collect();
        let totals = columns
            .iter()
            .map(|c| display.totals.iter().any(|t| t.name == c.name))
            .collect();
        let ws = self
            .workbook
            .add_worksheet_with_constant_memory()
            .map_err(err)?;
        ws.set_name(&name).map_err(err)?;
        let mut widths = Vec::with_capacity(columns.len());
        for (i, c) in columns.iter().enumerate() {
            let label = display.label(&c.name);
            ws.write_string_with_format(0, i as u16, label, &self.header)
                .map_err(err)?;
            widths.push(label.chars().count() as f64 + 3.0);
        }
        if !columns.is_empty() {
            ws.set_freeze_panes(1, 0).map_err(err)?;
        }
        self.sheet = Some(SheetState {
            index,
            sums: vec![Vec::new(); columns.len()],
            columns: columns.to_vec(),
            settings,
            formats,
            totals,
            widths,
            next_row: 1,
            dropped: 0,
        });
        Ok(())
    }

    /// Writes one row of the current sheet.
    pub fn row(&mut self, row: &[Value]) -> Result<(), String> {
        let Some(st) = self.sheet.as_mut() else {
            return Err("internal: a row before its sheet".into());
        };
        if st.next_row >= EXCEL_MAX_ROWS - 1 {
            st.dropped += 1;
            return Ok(());
        }
        let ws = self.workbook.worksheet_from_index(st.index).map_err(err)?;
        let r = st.next_row;
        let sample = (r as usize) <= WIDTH_SAMPLE_ROWS;
        for (i, v) in row.iter().enumerate().take(st.columns.len()) {
            let col = i as u16;
            let settings = st.settings[i].as_ref();
            let format = &st.formats[i];
            let width = write_cell(ws, r, col, v, settings, format, self.tz)?;
            if sample && let Some(w) = st.widths.get_mut(i) {
                *w = w.max(width + 2.0);
            }
            if st.totals[i] && v.is_numeric() {
                st.sums[i].push(v.clone());
                if st.sums[i].len() >= 4096 {
                    // Fold to one exact value so a long column keeps a bounded list.
                    if let Some(s) = column_sum(st.sums[i].iter()) {
                        st.sums[i] = vec![Value::Decimal(s.to_string())];
                    }
                }
            }
        }
        st.next_row += 1;
        Ok(())
    }

    /// Ends the current sheet: the totals row, the autofilter and the column widths.
    pub fn finish_sheet(&mut self) -> Result<(), String> {
        let Some(st) = self.sheet.take() else {
            return Ok(());
        };
        let ws = self.workbook.worksheet_from_index(st.index).map_err(err)?;
        let last_data_row = st.next_row - 1;
        let ncols = st.columns.len();
        if ncols > 0 {
            ws.autofilter(0, 0, last_data_row, (ncols - 1) as u16)
                .map_err(err)?;
        }
        if st.totals.iter().any(|t| *t) && last_data_row >= 1 {
            let r = st.next_row;
            let label_at = st.totals.iter().position(|t| !t);
            for i in 0..ncols {
                let col = i as u16;
                if st.totals[i] {
                    let settings = st.settings[i].as_ref();
                    let scale = settings.map_or(1.0, |s| s.scale);
                    let sum = column_sum(st.sums[i].iter())
                        .and_then(|d| d.to_string().parse::<f64>().ok())
                        .unwrap_or(0.0);
                    let format = st.formats[i].clone().set_bold();
                    ws.write_number_with_format(r, col, sum * scale, &format)
                        .map_err(err)?;
                } else if Some(i) == label_at {
                    ws.write_string_with_format(r, col, "Total", &self.bold)
                        .map_err(err)?;
                }
            }
        }
        for (i, w) in st.widths.iter().enumerate() {
            ws.set_column_width(i as u16, w.min(MAX_WIDTH))
                .map_err(err)?;
        }
        if st.dropped > 0 {
            tracing::warn!(
                rows = st.dropped,
                "rows past Excel's last row were left out of the workbook"
            );
        }
        Ok(())
    }

    /// The finished workbook's bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, String> {
        self.finish_sheet()?;
        if self.sheets == 0 {
            self.workbook.add_worksheet();
        }
        self.workbook.save_to_buffer().map_err(err)
    }
}

/// SQLite keeps timestamps as text; a date-formatted text column is read back as a date.
fn parse_naive(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
}

/// Writes one cell with its type kept; returns the width its display needs (characters).
fn write_cell(
    ws: &mut rust_xlsxwriter::Worksheet,
    r: u32,
    col: u16,
    v: &Value,
    settings: Option<&ColumnSettings>,
    format: &Format,
    tz: chrono_tz::Tz,
) -> Result<f64, String> {
    let scale = settings.map_or(1.0, |s| s.scale);
    let date_like = settings
        .and_then(|s| s.format)
        .is_some_and(|f| matches!(f, ColumnFormat::Date | ColumnFormat::DateTime));
    let number = |x: f64, ws: &mut rust_xlsxwriter::Worksheet| -> Result<f64, String> {
        let shown = x * scale;
        ws.write_number_with_format(r, col, shown, format)
            .map_err(err)?;
        Ok((format!("{shown:.2}").len() as f64) * 1.2 + 2.0)
    };
    match v {
        Value::Null => Ok(0.0),
        Value::Bool(b) => {
            ws.write_boolean(r, col, *b).map_err(err)?;
            Ok(5.0)
        }
        Value::Int(i) => number(*i as f64, ws),
        Value::Float(f) if f.is_finite() => number(*f, ws),
        Value::Decimal(d) => match d.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => number(x, ws),
            _ => {
                ws.write_string(r, col, d).map_err(err)?;
                Ok(d.chars().count() as f64)
            }
        },
        Value::Date(d) => {
            ws.write_date_with_format(r, col, d, format).map_err(err)?;
            Ok(12.0)
        }
        Value::Timestamp(t) => {
            ws.write_datetime_with_format(r, col, t, format)
                .map_err(err)?;
            Ok(18.0)
        }
        Value::TimestampTz(t) => {
            let local = t.with_timezone(&tz).naive_local();
            ws.write_datetime_with_format(r, col, local, format)
                .map_err(err)?;
            Ok(18.0)
        }
        Value::Text(s) if date_like && parse_naive(s).is_some() => {
            let t = parse_naive(s).unwrap_or_default();
            ws.write_datetime_with_format(r, col, t, format)
                .map_err(err)?;
            Ok(18.0)
        }
        other => {
            // Text (and UUIDs, JSON, non-finite floats) stay strings: never a formula.
            let s = other.to_plain();
            let s: String = s.chars().take(32_767).collect();
            ws.write_string(r, col, &s).map_err(err)?;
            Ok(s.chars().count().min(80) as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheet_names_are_excel_safe_and_unique() {
        let mut used = HashSet::new();
        assert_eq!(
            sheet_name("Orders by status", 0, &mut used),
            "Orders by status"
        );
        assert_eq!(
            sheet_name("Orders by status", 1, &mut used),
            "Orders by status (2)"
        );
        assert_eq!(sheet_name("a[b]:c*d?e/f\\g", 2, &mut used), "a b c d e f g");
        assert_eq!(sheet_name("'''", 3, &mut used), "Section 4");
        let long = sheet_name(&"x".repeat(40), 4, &mut used);
        assert_eq!(long.chars().count(), 31);
        let long2 = sheet_name(&"x".repeat(40), 5, &mut used);
        assert!(
            long2.ends_with(" (2)") && long2.chars().count() == 31,
            "{long2}"
        );
        assert_eq!(
            sheet_name("ORDERS BY STATUS", 6, &mut used),
            "ORDERS BY STATUS (3)"
        );
    }

    #[test]
    fn number_formats_follow_the_settings() {
        let eur = ColumnSettings {
            format: Some(ColumnFormat::Currency),
            currency: Some("EUR".parse().unwrap()),
            decimals: Some(2),
            ..ColumnSettings::plain("x")
        };
        assert_eq!(
            number_format(Locale::EnUs, Some(&eur), ColumnType::Integer),
            "\"€\"#,##0.00"
        );
        assert_eq!(
            number_format(Locale::DeDe, Some(&eur), ColumnType::Integer),
            "#,##0.00\\ \"€\""
        );
        let pct = ColumnSettings {
            format: Some(ColumnFormat::Percent),
            ..ColumnSettings::plain("x")
        };
        assert_eq!(
            number_format(Locale::EnUs, Some(&pct), ColumnType::Float),
            "0.0%"
        );
        assert_eq!(
            number_format(Locale::DeDe, None, ColumnType::Date),
            "dd.mm.yyyy"
        );
        assert_eq!(
            number_format(Locale::EnUs, None, ColumnType::Integer),
            "General"
        );
    }
}
