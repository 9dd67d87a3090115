//! The plain-text alternative of the email: the same content as the HTML (labels, formats,
//! totals, the attachment list), columns aligned for a monospace font.

use std::fmt::Write;

use super::{RenderContext, SectionResult};

/// Control characters would break the alignment (and could spoof terminal output).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Renders the report as aligned plain text (numbers right-aligned, NULL empty), at most
/// `max_rows_in_body` rows per section.
pub fn render_text(ctx: &RenderContext, sections: &[SectionResult]) -> String {
    let f = ctx.formatter();
    let mut out = String::new();
    let title = clean(&ctx.heading(&f));
    let _ = writeln!(out, "{title}\n{}", "=".repeat(width(&title).max(1)));
    if let Some(d) = ctx.description {
        let _ = writeln!(out, "{}", clean(d));
    }
    if !ctx.single_day {
        let _ = writeln!(out, "Window: {}", clean(&ctx.window_line()));
    }
    for s in sections {
        let heading = clean(&s.title);
        let _ = writeln!(out, "\n{heading}\n{}", "-".repeat(width(&heading).max(1)));
        let t = &s.table;
        if t.rows.is_empty() {
            out.push_str("No rows.\n");
            continue;
        }
        let settings: Vec<_> = t
            .columns
            .iter()
            .map(|c| s.display.column(&c.name))
            .collect();
        let mut shown: Vec<Vec<String>> = t
            .rows
            .iter()
            .take(ctx.max_rows_in_body)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(i, v)| clean(&f.value(v, settings.get(i).copied().flatten())))
                    .collect()
            })
            .collect();
        let totals = s.totals(&f).map(|cells| {
            let label_at = cells.iter().position(Option::is_none);
            cells
                .into_iter()
                .enumerate()
                .map(|(i, c)| match c {
                    Some(v) => clean(&v),
                    None if Some(i) == label_at => "Total".to_string(),
                    None => String::new(),
                })
                .collect::<Vec<_>>()
        });
        let headers: Vec<String> = t
            .columns
            .iter()
            .map(|c| clean(s.display.label(&c.name)))
            .collect();
        let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
        for r in shown.iter().chain(totals.iter()) {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(width(c));
                }
            }
        }
        let right: Vec<bool> = t
            .columns
            .iter()
            .zip(&settings)
            .map(|(c, st)| {
                st.and_then(|st| st.format)
                    .map_or(c.kind.is_numeric(), |fm| fm.is_numeric())
            })
            .collect();
        let line = |cells: &[String], out: &mut String| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                let pad = " ".repeat(w.saturating_sub(width(c)));
                if i > 0 {
                    l.push_str("  ");
                }
                if right.get(i).copied().unwrap_or(false) {
                    l.push_str(&pad);
                    l.push_str(c);
                } else {
                    l.push_str(c);
                    l.push_str(&pad);
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&headers, &mut out);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&rule, &mut out);
        for r in shown.drain(..) {
            line(&r, &mut out);
        }
        if let Some(t) = totals {
            line(&rule, &mut out);
            line(&t, &mut out);
        }
        let hidden = t.rows.len().saturating_sub(ctx.max_rows_in_body);
        if hidden > 0 {
            let _ = writeln!(
                out,
                "{} more {} {}.",
                f.count(hidden),
                if hidden == 1 { "row" } else { "rows" },
                if ctx.attachments.is_empty() {
                    "not shown"
                } else {
                    "in the attachment"
                }
            );
        }
        if t.truncated {
            let _ = writeln!(out, "The result was cut at {} rows.", f.count(t.rows.len()));
        }
    }
    if !ctx.attachments.is_empty() {
        out.push_str("\nAttached:\n");
        for a in ctx.attachments {
            let _ = writeln!(out, "- {}", clean(a));
        }
    }
    let _ = writeln!(
        out,
        "\nReport {} · generated {} UTC",
        clean(ctx.report_name),
        ctx.generated_at.format("%Y-%m-%d %H:%M:%S")
    );
    out
}
