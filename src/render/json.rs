//! The API's JSON shape: typed values (numbers as numbers, exact decimals as strings, instants
//! RFC 3339 UTC) so clients never parse display strings.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{RenderContext, SectionResult};
use crate::data::{ColumnType, Value};

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
pub fn render_json(ctx: &RenderContext, sections: &[SectionResult]) -> String {
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
                    .map(|c| {
                        let settings = s.display.column(&c.name);
                        let format = settings.and_then(|st| st.format);
                        ColumnOut {
                            name: &c.name,
                            kind: c.kind,
                            label: s.display.label(&c.name),
                            format: format.map(|f| f.as_str()),
                            currency: settings.and_then(|st| st.currency).map(|c| c.code()),
                            scale: settings.map(|st| st.scale).filter(|sc| *sc != 1.0),
                            decimals: settings
                                .filter(|st| st.format.is_some_and(|f| f.is_numeric()))
                                .map(|st| st.effective_decimals()),
                        }
                    })
                    .collect(),
                rows: &s.table.rows,
                row_count: s.table.rows.len(),
                truncated: s.table.truncated,
            })
            .collect(),
    };
    // Serialising these types cannot fail (string keys, no maps with non-string keys).
    serde_json::to_string(&doc).unwrap_or_else(|_| "{}".into())
}
