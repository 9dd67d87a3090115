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
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Renders `{"report","title","window":{"start","end","time_zone","date"},"generated_at",
/// "sections":[{"title","columns":[{"name","type"}],"rows","row_count","truncated"}]}`.
/// All rows are included (the `max_rows` cap applied at query time is what `truncated` reports).
pub fn render_json(ctx: &RenderContext, sections: &[SectionResult]) -> String {
    let doc = Doc {
        report: ctx.report_name,
        title: ctx.title,
        window: WindowOut {
            start: rfc3339(ctx.start),
            end: rfc3339(ctx.end),
            time_zone: ctx.time_zone,
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
                    .map(|c| ColumnOut {
                        name: &c.name,
                        kind: c.kind,
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
