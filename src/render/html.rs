//! The email body: a complete HTML document that survives real mail clients. Inline styles
//! only (Gmail and Outlook drop `<style>` blocks and external CSS), table layout only (no
//! flexbox, grid or SVG: Outlook renders with Word's engine), layout tables marked
//! `role="presentation"`, data tables with `<th scope="col">` headers, every value escaped,
//! and the whole part kept under Gmail's clipping size by showing fewer rows.

use std::fmt::Write;

use super::format::{ColumnFormat, Formatter};
use super::{RenderContext, SectionResult};
use crate::data::Value;

const FONT: &str = "font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;";
const CELL: &str = "padding:4px 10px;border-bottom:1px solid #e1e4e8;font-size:13px;";
const NOTE: &str = "margin:6px 0 0 0;font-size:13px;color:#57606a;";

/// Gmail clips an HTML part larger than about 102 KB behind a "View entire message" link;
/// the body is kept below this many bytes (inline `data:` images not counted: only the API
/// preview has them, and they are not part of an email).
pub const HTML_BUDGET_BYTES: usize = 100_000;

/// Text at most this long without spaces (codes, SKUs, numbers) never wraps on a phone.
const NO_WRAP_MAX_CHARS: usize = 24;

/// Escapes text for element content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Renders the report as an email-ready HTML document: heading with the reported day, one
/// table per section (labels, formats, a totals row, the chart above it) with at most
/// `max_rows_in_body` rows, notes pointing to the attachments for the rest, and the list of
/// attached files. When the document would exceed [`HTML_BUDGET_BYTES`], fewer rows are shown.
pub fn render_html(ctx: &RenderContext, sections: &[SectionResult]) -> String {
    let f = ctx.formatter();
    let inline_images: usize = ctx
        .charts
        .iter()
        .flatten()
        .filter(|c| c.src.starts_with("data:"))
        .map(|c| c.src.len())
        .sum();
    let mut rows = ctx.max_rows_in_body;
    loop {
        let h = render_with_rows(ctx, sections, &f, rows);
        if h.len().saturating_sub(inline_images) <= HTML_BUDGET_BYTES || rows == 0 {
            return h;
        }
        rows /= 2;
    }
}

fn render_with_rows(
    ctx: &RenderContext,
    sections: &[SectionResult],
    f: &Formatter,
    max_rows: usize,
) -> String {
    let mut h = String::with_capacity(8192);
    let heading = escape(&ctx.heading(f));
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n\
         <meta name=\"supported-color-schemes\" content=\"light dark\">\n\
         <title>{heading}</title>\n</head>\n\
         <body style=\"margin:0;padding:0;background:#ffffff;color:#1f2328;{FONT}\">\n\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\">\
         <tr><td style=\"padding:16px;{FONT}\">\n\
         <h1 style=\"margin:0 0 4px 0;font-size:22px;{FONT}\">{heading}</h1>\n",
        lang = ctx.locale.language(),
    );
    if let Some(d) = ctx.description {
        let _ = writeln!(
            h,
            "<p style=\"margin:0 0 4px 0;font-size:14px;color:#57606a;\">{}</p>",
            escape(d)
        );
    }
    if !ctx.single_day {
        let _ = writeln!(
            h,
            "<p style=\"margin:0 0 16px 0;font-size:13px;color:#57606a;\">Window: {} &middot; Time zone: {}</p>",
            escape(&format!(
                "{} – {}",
                ctx.local(ctx.start),
                ctx.local(ctx.end)
            )),
            escape(ctx.time_zone.name())
        );
    }
    for (index, s) in sections.iter().enumerate() {
        section(
            &mut h,
            ctx,
            f,
            s,
            ctx.charts.get(index).and_then(Option::as_ref),
            max_rows,
        );
    }
    if !ctx.attachments.is_empty() {
        let _ = write!(
            h,
            "<p style=\"margin:20px 0 4px 0;font-size:13px;color:#1f2328;font-weight:600;\">Attached</p>\n\
             <table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\">\n"
        );
        for name in ctx.attachments {
            let _ = writeln!(
                h,
                "<tr><td style=\"padding:1px 0;font-size:13px;color:#57606a;\">{}</td></tr>",
                escape(name)
            );
        }
        h.push_str("</table>\n");
    }
    let _ = write!(
        h,
        "<p style=\"margin:24px 0 0 0;font-size:12px;color:#8c959f;\">Report {} &middot; generated {} UTC</p>\n\
         </td></tr></table>\n</body>\n</html>\n",
        escape(ctx.report_name),
        ctx.generated_at.format("%Y-%m-%d %H:%M:%S")
    );
    h
}

fn section(
    h: &mut String,
    ctx: &RenderContext,
    f: &Formatter,
    s: &SectionResult,
    chart: Option<&super::chart::InlineChart>,
    max_rows: usize,
) {
    let _ = writeln!(
        h,
        "<h2 style=\"margin:20px 0 8px 0;font-size:17px;{FONT}\">{}</h2>",
        escape(&s.title)
    );
    let t = &s.table;
    if t.rows.is_empty() {
        h.push_str("<p style=\"margin:0;font-size:13px;color:#57606a;\">No rows.</p>\n");
        return;
    }
    if let Some(c) = chart {
        let _ = writeln!(
            h,
            "<p style=\"margin:0 0 8px 0;\"><img src=\"{}\" width=\"{}\" height=\"{}\" alt=\"{}\" \
             style=\"display:block;border:0;max-width:100%;height:auto;\"></p>",
            escape(&c.src),
            c.width,
            c.height,
            escape(&c.alt)
        );
    }
    let numeric: Vec<bool> = t
        .columns
        .iter()
        .map(|c| {
            s.display
                .column(&c.name)
                .and_then(|cs| cs.format)
                .map_or(c.kind.is_numeric(), |fm| fm.is_numeric())
        })
        .collect();
    let _ = write!(
        h,
        "<table cellpadding=\"0\" cellspacing=\"0\" border=\"0\" summary=\"{}\" \
         style=\"border-collapse:collapse;border:1px solid #d0d7de;\">\n<thead><tr>",
        escape(&s.title)
    );
    for (i, c) in t.columns.iter().enumerate() {
        let align = if numeric[i] { "right" } else { "left" };
        let _ = write!(
            h,
            "<th scope=\"col\" align=\"{align}\" style=\"{CELL}text-align:{align};background:#f6f8fa;font-weight:600;\">{}</th>",
            escape(s.display.label(&c.name))
        );
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in t.rows.iter().take(max_rows) {
        h.push_str("<tr>");
        for (i, v) in row.iter().enumerate() {
            let settings = t.columns.get(i).and_then(|c| s.display.column(&c.name));
            let is_num = numeric.get(i).copied().unwrap_or(false);
            let align = if is_num { "right" } else { "left" };
            let shown = f.value(v, settings);
            let nowrap = is_num
                || settings
                    .and_then(|c| c.format)
                    .is_some_and(|fm| matches!(fm, ColumnFormat::Date | ColumnFormat::DateTime))
                || matches!(
                    v,
                    Value::Date(_) | Value::Timestamp(_) | Value::TimestampTz(_) | Value::Bool(_)
                )
                || (shown.chars().count() <= NO_WRAP_MAX_CHARS
                    && !shown.contains(char::is_whitespace));
            let _ = write!(
                h,
                "<td align=\"{align}\" style=\"{CELL}text-align:{align};{}\">{}</td>",
                if nowrap { "white-space:nowrap;" } else { "" },
                escape(&shown)
            );
        }
        h.push_str("</tr>\n");
    }
    if let Some(totals) = s.totals(f) {
        let label_at = totals.iter().position(Option::is_none);
        h.push_str("<tr>");
        for (i, cell) in totals.iter().enumerate() {
            let is_num = numeric.get(i).copied().unwrap_or(false);
            let align = if is_num && cell.is_some() {
                "right"
            } else {
                "left"
            };
            let text = match cell {
                Some(v) => v.as_str(),
                None if Some(i) == label_at => "Total",
                None => "",
            };
            let _ = write!(
                h,
                "<td align=\"{align}\" style=\"{CELL}text-align:{align};white-space:nowrap;font-weight:600;border-top:2px solid #d0d7de;\">{}</td>",
                escape(text)
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
    let hidden = t.rows.len().saturating_sub(max_rows);
    if hidden > 0 {
        let rows = if hidden == 1 { "row" } else { "rows" };
        let where_ = if ctx.attachments.is_empty() {
            "not shown".to_string()
        } else {
            "in the attachment".to_string()
        };
        let _ = writeln!(
            h,
            "<p style=\"{NOTE}\">{} more {rows} {where_}.</p>",
            f.count(hidden)
        );
    }
    if t.truncated {
        let _ = writeln!(
            h,
            "<p style=\"margin:6px 0 0 0;font-size:13px;color:#9a6700;\">The result was cut at {} rows.</p>",
            f.count(t.rows.len())
        );
    }
}
