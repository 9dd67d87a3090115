//! The Slack payload: an incoming-webhook message in Block Kit. A `header` with the title, a
//! `context` with the window in the report's zone, and per section a `section` block whose
//! mrkdwn text is the section's title and its table in a monospace code block (labels and
//! formats as in the email, columns aligned), then an "N more rows" context line.
//!
//! Slack's limits are kept: at most [`MAX_BLOCKS`] blocks and [`MAX_TEXT`] characters per text
//! (150 for the header). A table is cut by rows to fit its text, and sections beyond the block
//! limit are left out, each time with a note. The top-level `text` is the notification's
//! fallback.

use serde_json::{Value as Json, json};

use super::{TableView, more_rows, window_line};
use crate::render::{RenderContext, SectionResult};

/// Slack's limit on blocks per message.
pub const MAX_BLOCKS: usize = 50;
/// Slack's limit on a section block's text (characters).
pub const MAX_TEXT: usize = 3000;
/// Slack's limit on a header's text (characters).
pub const MAX_HEADER: usize = 150;

/// The serialized message for `sections`.
pub fn payload(ctx: &RenderContext, sections: &[SectionResult]) -> Vec<u8> {
    serde_json::to_vec(&message(ctx, sections)).unwrap_or_default()
}

/// `&`, `<` and `>` escaped, as Slack's mrkdwn requires.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn context(text: &str) -> Json {
    json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": truncate(text, MAX_TEXT) }] })
}

fn message(ctx: &RenderContext, sections: &[SectionResult]) -> Json {
    let f = ctx.formatter();
    let heading = ctx.heading(&f);
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": { "type": "plain_text", "text": truncate(&heading, MAX_HEADER), "emoji": false },
        }),
        context(&escape(&format!("Window: {}", window_line(ctx)))),
    ];
    if let Some(d) = ctx.description {
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": truncate(&escape(d), MAX_TEXT) },
        }));
    }
    // Room is kept for the footer and, if needed, the note about left-out sections.
    let budget = MAX_BLOCKS - 2;
    for (i, s) in sections.iter().enumerate() {
        // The section's block, and a context line under a cut or truncated table.
        let needs = 2;
        if blocks.len() + needs > budget {
            let left = sections.len() - i;
            blocks.push(context(&format!(
                "{left} more {} not shown (Slack allows {MAX_BLOCKS} blocks per message).",
                if left == 1 { "section" } else { "sections" }
            )));
            break;
        }
        let title = format!("*{}*", escape(&s.title));
        if s.table.rows.is_empty() {
            blocks.push(json!({
                "type": "section",
                "text": { "type": "mrkdwn", "text": truncate(&format!("{title}\nNo rows."), MAX_TEXT) },
            }));
            continue;
        }
        let view = TableView::new(&f, s, ctx.max_rows_in_body);
        let (text, shown) = code_table(&title, &view);
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } }));
        let hidden = view.hidden + (view.rows.len() - shown);
        let mut notes = Vec::new();
        if let Some(more) = more_rows(&f, hidden) {
            notes.push(if shown < view.rows.len() {
                format!("{more} (cut to fit Slack's 3,000 characters per block)")
            } else {
                more
            });
        }
        if s.table.truncated {
            notes.push(format!(
                "The result was cut at {} rows.",
                f.count(s.table.rows.len())
            ));
        }
        if !notes.is_empty() {
            blocks.push(context(&notes.join(" ")));
        }
    }
    blocks.push(context(&escape(&format!(
        "Report {} · generated {} UTC",
        ctx.report_name,
        ctx.generated_at.format("%Y-%m-%d %H:%M:%S")
    ))));
    blocks.truncate(MAX_BLOCKS);
    json!({ "text": heading, "blocks": blocks })
}

/// `*Title*` and the table in a code block, as many rows as fit in [`MAX_TEXT`]; with how many
/// of the view's rows it shows.
fn code_table(title: &str, view: &TableView) -> (String, usize) {
    // Backticks would close the code block.
    let cell = |s: &str| escape(&s.replace('`', "'"));
    let headers: Vec<String> = view.headers.iter().map(|h| cell(h)).collect();
    let rows: Vec<Vec<String>> = view
        .rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let totals: Option<Vec<String>> = view
        .totals
        .as_ref()
        .map(|t| t.iter().map(|c| cell(c)).collect());
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for r in rows.iter().chain(totals.iter()) {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(width(c));
            }
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let pad = " ".repeat(w.saturating_sub(width(c)));
            if i > 0 {
                l.push_str("  ");
            }
            if view.right.get(i).copied().unwrap_or(false) {
                l.push_str(&pad);
                l.push_str(c);
            } else {
                l.push_str(c);
                l.push_str(&pad);
            }
        }
        let mut l = l.trim_end().to_string();
        l.push('\n');
        l
    };
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let head = format!("{title}\n```\n{}{}", line(&headers), line(&rule));
    let tail = match &totals {
        Some(t) => format!("{}{}```", line(&rule), line(t)),
        None => "```".to_string(),
    };
    let mut body = String::new();
    let mut shown = 0;
    for r in &rows {
        let l = line(r);
        if width(&head) + width(&body) + width(&l) + width(&tail) > MAX_TEXT {
            break;
        }
        body.push_str(&l);
        shown += 1;
    }
    let text = format!("{head}{body}{tail}");
    // A header row alone over the limit (very wide sections): cut the text itself.
    (truncate(&text, MAX_TEXT), shown)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ctx, section};
    use super::*;
    use crate::data::ColumnType::{Integer, Text};

    fn parse(bytes: &[u8]) -> Json {
        serde_json::from_slice(bytes).unwrap()
    }

    fn texts(b: &Json) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(t) = b["text"]["text"].as_str() {
            out.push(t.to_string());
        }
        for e in b["elements"].as_array().into_iter().flatten() {
            if let Some(t) = e["text"].as_str() {
                out.push(t.to_string());
            }
        }
        out
    }

    #[test]
    fn header_context_and_monospace_sections() {
        let sections = vec![
            section("Orders", &[("status", Text), ("n", Integer)], 4),
            section("Empty", &[("k", Text)], 0),
        ];
        let m = parse(&payload(&ctx(3), &sections));
        assert!(m["text"].as_str().unwrap().starts_with("Daily sales"));
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[1]["type"], "context");
        assert_eq!(
            texts(&blocks[1]),
            vec!["Window: 2026-12-01 00:00 – 2026-12-02 00:00 (Europe/Berlin)"]
        );
        let orders = blocks
            .iter()
            .find(|b| texts(b).iter().any(|t| t.starts_with("*Orders*")))
            .unwrap();
        assert_eq!(orders["type"], "section");
        let t = &texts(orders)[0];
        assert!(t.contains("```\nstatus"), "{t}");
        // Escaped for mrkdwn, backticks defused, numbers right-aligned.
        assert!(t.contains("item 0 &lt;&amp;&gt; 'x'"), "{t}");
        assert!(t.contains("2,000"), "{t}");
        assert!(t.ends_with("```"), "{t}");
        let all: Vec<String> = blocks.iter().flat_map(texts).collect();
        assert!(all.iter().any(|t| t == "1 more row not shown."), "{all:?}");
        assert!(all.iter().any(|t| t.contains("No rows.")));
        for b in blocks {
            assert!(
                ["header", "context", "section"].contains(&b["type"].as_str().unwrap()),
                "{b}"
            );
        }
    }

    #[test]
    fn limits_hold_for_long_tables_and_many_sections() {
        let mut sections = vec![section("Long", &[("a", Text), ("b", Text)], 500)];
        for i in 0..80 {
            sections.push(section(&format!("S{i}"), &[("k", Text)], 1));
        }
        let m = parse(&payload(&ctx(500), &sections));
        let blocks = m["blocks"].as_array().unwrap();
        assert!(blocks.len() <= MAX_BLOCKS, "{}", blocks.len());
        for b in blocks {
            for t in texts(b) {
                assert!(t.chars().count() <= MAX_TEXT, "{}", t.chars().count());
            }
        }
        let all: Vec<String> = blocks.iter().flat_map(texts).collect();
        assert!(
            all.iter()
                .any(|t| t.contains("cut to fit Slack's 3,000 characters")),
            "{all:?}"
        );
        assert!(
            all.iter().any(|t| t.contains("more sections not shown")),
            "{all:?}"
        );
        assert!(all.last().unwrap().starts_with("Report daily-sales"));
    }
}
