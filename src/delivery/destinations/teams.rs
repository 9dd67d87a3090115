//! The Teams payload: one Adaptive Card in the message envelope a Teams Workflows webhook
//! ("Post to a channel when a webhook request is received") accepts:
//! `{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive",
//! "content":{…card…}}]}`.
//!
//! The card (schema version [`CARD_VERSION`]: `Table` needs 1.5, which Teams renders) shows the
//! title, the window in the report's zone, and each section as a `Table` (header row, at most
//! `max_rows_in_body` rows, the "Total" row) or, for a two-column section, a `FactSet`; then an
//! "N more rows" line. Labels and number formats are the email's (`TableView`).
//! Teams refuses messages over about 28 KB, so a card over [`MAX_BYTES`] is rebuilt with fewer
//! rows per section (halving) and says so.

use serde_json::{Value as Json, json};

use super::{TableView, more_rows, window_line};
use crate::render::{RenderContext, SectionResult};

/// The Adaptive Card schema version (≥ 1.4 as the issue asks; `Table` is 1.5).
pub const CARD_VERSION: &str = "1.5";
/// The largest message posted: under Teams' ~28 KB limit with room for the envelope's
/// encoding differences.
pub const MAX_BYTES: usize = 27 * 1024;

/// The serialized message for `sections`, within [`MAX_BYTES`] when cutting rows can get it
/// there (a card with no rows at all that is still larger is posted as it is).
pub fn payload(ctx: &RenderContext, sections: &[SectionResult]) -> Vec<u8> {
    let mut limit = ctx.max_rows_in_body;
    loop {
        let cut = limit < ctx.max_rows_in_body;
        let message = envelope(card(ctx, sections, limit, cut));
        let bytes = serde_json::to_vec(&message).unwrap_or_default();
        if bytes.len() <= MAX_BYTES || limit == 0 {
            return bytes;
        }
        limit /= 2;
    }
}

/// The Workflows webhook envelope around one card.
pub fn envelope(card: Json) -> Json {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }]
    })
}

fn text(s: &str) -> Json {
    json!({ "type": "TextBlock", "text": s, "wrap": true })
}

fn card(ctx: &RenderContext, sections: &[SectionResult], limit: usize, cut: bool) -> Json {
    let f = ctx.formatter();
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": ctx.heading(&f),
        "size": "Large",
        "weight": "Bolder",
        "wrap": true,
        "style": "heading",
    })];
    if let Some(d) = ctx.description {
        body.push(json!({ "type": "TextBlock", "text": d, "wrap": true, "isSubtle": true, "spacing": "None" }));
    }
    body.push(json!({
        "type": "TextBlock",
        "text": format!("Window: {}", window_line(ctx)),
        "wrap": true,
        "isSubtle": true,
        "size": "Small",
        "spacing": "None",
    }));
    if cut {
        body.push(json!({
            "type": "TextBlock",
            "text": format!("Cut to fit Teams' message size: at most {limit} rows per section are shown."),
            "wrap": true,
            "color": "Warning",
            "size": "Small",
        }));
    }
    for s in sections {
        body.push(json!({
            "type": "TextBlock",
            "text": s.title,
            "size": "Medium",
            "weight": "Bolder",
            "wrap": true,
            "separator": true,
            "spacing": "Large",
        }));
        if s.table.rows.is_empty() {
            body.push(text("No rows."));
            continue;
        }
        let view = TableView::new(&f, s, limit);
        if view.headers.len() == 2 {
            body.push(fact_set(&view));
        } else if !view.rows.is_empty() || view.totals.is_some() {
            body.push(table(&view));
        }
        if let Some(more) = more_rows(&f, view.hidden) {
            body.push(json!({ "type": "TextBlock", "text": more, "wrap": true, "isSubtle": true, "size": "Small" }));
        }
        if s.table.truncated {
            body.push(json!({
                "type": "TextBlock",
                "text": format!("The result was cut at {} rows.", f.count(s.table.rows.len())),
                "wrap": true,
                "isSubtle": true,
                "size": "Small",
            }));
        }
    }
    body.push(json!({
        "type": "TextBlock",
        "text": format!(
            "Report {} · generated {} UTC",
            ctx.report_name,
            ctx.generated_at.format("%Y-%m-%d %H:%M:%S")
        ),
        "wrap": true,
        "isSubtle": true,
        "size": "Small",
        "separator": true,
    }));
    json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "msteams": { "width": "Full" },
        "body": body,
    })
}

/// A two-column section: one fact per row (first column as the title), the labels above.
fn fact_set(view: &TableView) -> Json {
    let mut facts: Vec<Json> = view
        .rows
        .iter()
        .map(|r| {
            json!({
                "title": r.first().cloned().unwrap_or_default(),
                "value": r.get(1).cloned().unwrap_or_default(),
            })
        })
        .collect();
    if let Some(t) = &view.totals {
        let title = if t.first().is_some_and(|c| !c.is_empty()) {
            t[0].clone()
        } else {
            "Total".to_string()
        };
        facts.push(json!({ "title": title, "value": t.get(1).cloned().unwrap_or_default() }));
    }
    json!({
        "type": "Container",
        "items": [
            {
                "type": "TextBlock",
                "text": view.headers.join(" · "),
                "wrap": true,
                "isSubtle": true,
                "size": "Small",
            },
            { "type": "FactSet", "facts": facts },
        ],
    })
}

/// A `Table`: the header row, the shown rows, the "Total" row; numbers right-aligned.
fn table(view: &TableView) -> Json {
    let cell = |s: &str, bold: bool| {
        let mut t = json!({ "type": "TextBlock", "text": s, "wrap": true });
        if bold {
            t["weight"] = json!("Bolder");
        }
        json!({ "type": "TableCell", "items": [t] })
    };
    let row = |cells: &[String], bold: bool| {
        json!({
            "type": "TableRow",
            "cells": cells.iter().map(|c| cell(c, bold)).collect::<Vec<_>>(),
        })
    };
    let mut rows = vec![row(&view.headers, true)];
    rows.extend(view.rows.iter().map(|r| row(r, false)));
    if let Some(t) = &view.totals {
        rows.push(row(t, true));
    }
    json!({
        "type": "Table",
        "firstRowAsHeader": true,
        "showGridLines": true,
        "gridStyle": "accent",
        "columns": view
            .right
            .iter()
            .map(|r| json!({
                "width": 1,
                "horizontalCellContentAlignment": if *r { "Right" } else { "Left" },
            }))
            .collect::<Vec<_>>(),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ctx, section};
    use super::*;
    use crate::data::ColumnType::{Integer, Text};

    fn parse(bytes: &[u8]) -> Json {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn the_envelope_and_card_have_the_required_fields() {
        let sections = vec![
            section(
                "Orders",
                &[("status", Text), ("n", Integer), ("x", Text)],
                5,
            ),
            section("Two columns", &[("k", Text), ("v", Integer)], 3),
            section("Empty", &[("k", Text)], 0),
        ];
        let m = parse(&payload(&ctx(2), &sections));
        assert_eq!(m["type"], "message");
        let a = &m["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        let card = &a["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], CARD_VERSION);
        assert!(card["$schema"].as_str().unwrap().contains("adaptive-card"));
        let body = card["body"].as_array().unwrap();
        assert!(body[0]["text"].as_str().unwrap().starts_with("Daily sales"));
        let texts: Vec<String> = body
            .iter()
            .filter_map(|b| b["text"].as_str().map(str::to_string))
            .collect();
        assert!(
            texts
                .iter()
                .any(|t| t == "Window: 2026-12-01 00:00 – 2026-12-02 00:00 (Europe/Berlin)"),
            "{texts:?}"
        );
        let table = body.iter().find(|b| b["type"] == "Table").unwrap();
        // Header + 2 rows (max_rows_in_body), 3 columns, numbers right-aligned.
        assert_eq!(table["rows"].as_array().unwrap().len(), 3);
        assert_eq!(
            table["columns"][1]["horizontalCellContentAlignment"],
            "Right"
        );
        assert_eq!(table["rows"][0]["cells"][0]["items"][0]["text"], "status");
        assert_eq!(table["rows"][2]["cells"][1]["items"][0]["text"], "1,000");
        assert!(
            texts.iter().any(|t| t == "3 more rows not shown."),
            "{texts:?}"
        );
        let facts = body.iter().find(|b| b["type"] == "Container").unwrap();
        assert_eq!(facts["items"][1]["type"], "FactSet");
        assert_eq!(facts["items"][1]["facts"].as_array().unwrap().len(), 2);
        assert!(texts.iter().any(|t| t == "No rows."));
    }

    #[test]
    fn a_large_card_is_cut_by_rows_under_the_limit_with_a_note() {
        let sections = vec![section(
            "Big",
            &[("a", Text), ("b", Text), ("c", Integer)],
            2000,
        )];
        let bytes = payload(&ctx(2000), &sections);
        assert!(bytes.len() <= MAX_BYTES, "{}", bytes.len());
        let m = parse(&bytes);
        let body = m["attachments"][0]["content"]["body"].as_array().unwrap();
        assert!(body.iter().any(|b| {
            b["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("Cut to fit Teams' message size"))
        }));
        let rows = body.iter().find(|b| b["type"] == "Table").unwrap()["rows"]
            .as_array()
            .unwrap()
            .len();
        assert!(rows > 10, "{rows}");
    }
}
