//! The API's JSON shape: typed values (numbers as numbers, exact decimals as strings, instants
//! RFC 3339 UTC) so clients never parse display strings.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{RenderContext, SectionDisplay, SectionResult};
use crate::data::{Column, ColumnType, Value};

#[derive(Serialize)]
struct ColumnOut<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: ColumnType,
    /// What people see as the header: the configured label, else the name.
    label: &'a str,
    /// The configured display format (`currency`, `percent`, ...), or null.
    format: Option<&'static str>,
    /// For `currency`: the ISO 4217 code.
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'static str>,
    /// Shown value = value × scale (omitted when 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    scale: Option<f64>,
    /// Decimal places shown (omitted without a numeric format).
    #[serde(skip_serializing_if = "Option::is_none")]
    decimals: Option<u8>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Renders `{"report","title","window":{"start","end","time_zone","date"},"generated_at",
/// "sections":[{"title","columns":[{"name","type","label","format"}],"rows","row_count",
/// "truncated"}]}`. Values stay raw (SQL names, unscaled numbers); `label` and `format` (with
/// `currency`, `scale`, `decimals` where set) let a client present them as the email does.
/// All rows are included (the `max_rows` cap applied at query time is what `truncated` reports).
///
/// The document is written by [`JsonDocWriter`], the same code that streams a large export
/// row by row, so a streamed answer and a rendered one are byte for byte the same.
pub fn render_json(ctx: &RenderContext, sections: &[SectionResult]) -> String {
    let mut out = Vec::new();
    let mut doc = JsonDocWriter::start(&mut out, ctx);
    for s in sections {
        doc.section_start(&mut out, &s.title, &s.table.columns, &s.display);
        for row in &s.table.rows {
            doc.row(&mut out, row);
        }
        doc.section_end(&mut out, s.table.truncated);
    }
    doc.finish(&mut out);
    // Everything written is UTF-8 (serde_json strings and ASCII punctuation).
    String::from_utf8(out).unwrap_or_default()
}

/// Writes the API's JSON document in pieces, in order: [`JsonDocWriter::start`], then per
/// section `section_start`, `row`s and `section_end`, then `finish`. Each piece appends to a
/// byte buffer the caller owns, so a streamed response can send the buffer on between rows;
/// `row_count` and `truncated` come after the rows, so nothing must be known in advance.
#[derive(Debug, Default)]
pub struct JsonDocWriter {
    sections: usize,
    rows: usize,
}

impl JsonDocWriter {
    /// Writes everything before the first section.
    pub fn start(out: &mut Vec<u8>, ctx: &RenderContext) -> Self {
        out.extend_from_slice(b"{\"report\":");
        push_str(out, ctx.report_name);
        out.extend_from_slice(b",\"title\":");
        push_str(out, ctx.title);
        out.extend_from_slice(b",\"window\":{\"start\":");
        push_str(out, &rfc3339(ctx.start));
        out.extend_from_slice(b",\"end\":");
        push_str(out, &rfc3339(ctx.end));
        out.extend_from_slice(b",\"time_zone\":");
        push_str(out, ctx.time_zone.name());
        out.extend_from_slice(b",\"date\":");
        push_str(out, &ctx.date.format("%Y-%m-%d").to_string());
        out.extend_from_slice(b"},\"generated_at\":");
        push_str(out, &rfc3339(ctx.generated_at));
        out.extend_from_slice(b",\"sections\":[");
        JsonDocWriter::default()
    }

    /// Opens a section: its title and columns (with the display settings), then the rows array.
    pub fn section_start(
        &mut self,
        out: &mut Vec<u8>,
        title: &str,
        columns: &[Column],
        display: &SectionDisplay,
    ) {
        if self.sections > 0 {
            out.push(b',');
        }
        self.sections += 1;
        self.rows = 0;
        out.extend_from_slice(b"{\"title\":");
        push_str(out, title);
        out.extend_from_slice(b",\"columns\":");
        let cols: Vec<ColumnOut> = columns.iter().map(|c| column_out(c, display)).collect();
        // Serialising these types cannot fail (string keys only).
        let _ = serde_json::to_writer(&mut *out, &cols);
        out.extend_from_slice(b",\"rows\":[");
    }

    /// One row as a JSON array of typed values.
    pub fn row(&mut self, out: &mut Vec<u8>, row: &[Value]) {
        if self.rows > 0 {
            out.push(b',');
        }
        self.rows += 1;
        out.push(b'[');
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            v.write_json(out);
        }
        out.push(b']');
    }

    /// Closes the section with its row count and whether rows were cut at `MAX_ROWS`.
    pub fn section_end(&mut self, out: &mut Vec<u8>, truncated: bool) {
        use std::io::Write as _;
        let _ = write!(
            out,
            "],\"row_count\":{},\"truncated\":{}}}",
            self.rows, truncated
        );
    }

    /// Closes the document.
    pub fn finish(self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"]}");
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn column_out<'a>(c: &'a Column, display: &'a SectionDisplay) -> ColumnOut<'a> {
    let settings = display.column(&c.name);
    let format = settings.and_then(|st| st.format);
    ColumnOut {
        name: &c.name,
        kind: c.kind,
        label: display.label(&c.name),
        format: format.map(|f| f.as_str()),
        currency: settings.and_then(|st| st.currency).map(|c| c.code()),
        scale: settings.map(|st| st.scale).filter(|sc| *sc != 1.0),
        decimals: settings
            .filter(|st| st.format.is_some_and(|f| f.is_numeric()))
            .map(|st| st.effective_decimals()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Table;

    /// The serde-derived document this module wrote before it streamed: the reference the
    /// piecewise writer must match byte for byte.
    #[derive(Serialize)]
    struct Doc<'a> {
        report: &'a str,
        title: &'a str,
        window: WindowOut<'a>,
        generated_at: String,
        sections: Vec<SectionOut<'a>>,
    }
    #[derive(Serialize)]
    struct WindowOut<'a> {
        start: String,
        end: String,
        time_zone: &'a str,
        date: String,
    }
    #[derive(Serialize)]
    struct SectionOut<'a> {
        title: &'a str,
        columns: Vec<ColumnOut<'a>>,
        rows: &'a [Vec<Value>],
        row_count: usize,
        truncated: bool,
    }

    fn reference(ctx: &RenderContext, sections: &[SectionResult]) -> String {
        let doc = Doc {
            report: ctx.report_name,
            title: ctx.title,
            window: WindowOut {
                start: rfc3339(ctx.start),
                end: rfc3339(ctx.end),
                time_zone: ctx.time_zone.name(),
                date: ctx.date.format("%Y-%m-%d").to_string(),
            },
            generated_at: rfc3339(ctx.generated_at),
            sections: sections
                .iter()
                .map(|s| SectionOut {
                    title: &s.title,
                    columns: s
                        .table
                        .columns
                        .iter()
                        .map(|c| column_out(c, &s.display))
                        .collect(),
                    rows: &s.table.rows,
                    row_count: s.table.rows.len(),
                    truncated: s.table.truncated,
                })
                .collect(),
        };
        serde_json::to_string(&doc).unwrap()
    }

    #[test]
    fn the_piecewise_writer_matches_the_serde_document() {
        let ts = chrono::NaiveDate::from_ymd_opt(2026, 11, 24)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap();
        let columns = vec![
            Column {
                name: "id".into(),
                kind: ColumnType::Integer,
            },
            Column {
                name: "name \"q\"".into(),
                kind: ColumnType::Text,
            },
            Column {
                name: "at".into(),
                kind: ColumnType::Timestamp,
            },
        ];
        let rows = vec![
            vec![
                Value::Int(1),
                Value::Text("a\nb".into()),
                Value::Timestamp(ts),
            ],
            vec![Value::Null, Value::Float(f64::NAN), Value::Float(0.25)],
        ];
        let full = SectionResult {
            title: "Orders \u{2028}".into(),
            table: Table {
                columns: columns.clone(),
                rows,
                truncated: true,
            },
            display: SectionDisplay::default(),
        };
        let empty = SectionResult {
            title: "Empty".into(),
            table: Table {
                columns,
                rows: vec![],
                truncated: false,
            },
            display: SectionDisplay::default(),
        };
        let start = DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        let ctx = RenderContext {
            report_name: "daily-sales",
            title: "Daily \"sales\"",
            description: None,
            time_zone: chrono_tz::Europe::Berlin,
            start,
            end: start + chrono::Duration::days(1),
            date: start.date_naive(),
            generated_at: start + chrono::Duration::milliseconds(1500),
            max_rows_in_body: 50,
            locale: Default::default(),
            single_day: true,
            attachments: &[],
            charts: &[],
        };
        for sections in [vec![], vec![full.clone()], vec![full, empty]] {
            assert_eq!(render_json(&ctx, &sections), reference(&ctx, &sections));
        }
    }
}
