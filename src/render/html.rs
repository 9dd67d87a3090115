//! The email body: a complete HTML document with inline styles only (Gmail and Outlook drop
//! `<style>` blocks and external CSS), table-based layout, and every value escaped.

use std::fmt::Write;

use super::{RenderContext, SectionResult, display_value};
use crate::data::Value;

const FONT: &str = "font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;";
const CELL: &str = "padding:4px 10px;border-bottom:1px solid #e1e4e8;font-size:13px;";

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

/// Renders the report as an email-ready HTML document: header (title, description, window in
/// the report's zone), one table per section with at most `max_rows_in_body` rows, and a note
/// pointing to the attachment for the rest.
pub fn render_html(ctx: &RenderContext, sections: &[SectionResult]) -> String {
    let tz = ctx.tz();
    let mut h = String::with_capacity(4096);
    let title = escape(ctx.title);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n</head>\n\
         <body style=\"margin:0;padding:16px;background:#ffffff;color:#1f2328;{FONT}\">\n\
         <h1 style=\"margin:0 0 4px 0;font-size:22px;{FONT}\">{title}</h1>\n"
    );
    if let Some(d) = ctx.description {
        let _ = writeln!(
            h,
            "<p style=\"margin:0 0 4px 0;font-size:14px;color:#57606a;\">{}</p>",
            escape(d)
        );
    }
    let _ = writeln!(
        h,
        "<p style=\"margin:0 0 16px 0;font-size:13px;color:#57606a;\">Window: {} &middot; Time zone: {}</p>",
        escape(&format!(
            "{} – {}",
            ctx.local(ctx.start),
            ctx.local(ctx.end)
        )),
        escape(ctx.time_zone)
    );
    for s in sections {
        let _ = writeln!(
            h,
            "<h2 style=\"margin:20px 0 8px 0;font-size:17px;{FONT}\">{}</h2>",
            escape(&s.title)
        );
        let t = &s.table;
        if t.rows.is_empty() {
            h.push_str("<p style=\"margin:0;font-size:13px;color:#57606a;\">No rows.</p>\n");
            continue;
        }
        h.push_str(
            "<table cellpadding=\"0\" cellspacing=\"0\" border=\"0\" \
             style=\"border-collapse:collapse;border:1px solid #d0d7de;\">\n<thead><tr>",
        );
        for c in &t.columns {
            let align = if c.kind.is_numeric() { "right" } else { "left" };
            let _ = write!(
                h,
                "<th align=\"{align}\" style=\"{CELL}text-align:{align};background:#f6f8fa;font-weight:600;\">{}</th>",
                escape(&c.name)
            );
        }
        h.push_str("</tr></thead>\n<tbody>\n");
        for row in t.rows.iter().take(ctx.max_rows_in_body) {
            h.push_str("<tr>");
            for (i, v) in row.iter().enumerate() {
                let numeric = v.is_numeric()
                    || (matches!(v, Value::Null)
                        && t.columns.get(i).is_some_and(|c| c.kind.is_numeric()));
                let align = if numeric { "right" } else { "left" };
                let _ = write!(
                    h,
                    "<td align=\"{align}\" style=\"{CELL}text-align:{align};{}\">{}</td>",
                    if numeric { "white-space:nowrap;" } else { "" },
                    escape(&display_value(v, tz))
                );
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody>\n</table>\n");
        let hidden = t.rows.len().saturating_sub(ctx.max_rows_in_body);
        if hidden > 0 {
            let _ = writeln!(
                h,
                "<p style=\"margin:6px 0 0 0;font-size:13px;color:#57606a;\">{} more {} in the attachment.</p>",
                super::group_thousands(&hidden.to_string()),
                if hidden == 1 { "row" } else { "rows" }
            );
        }
        if t.truncated {
            let _ = writeln!(
                h,
                "<p style=\"margin:6px 0 0 0;font-size:13px;color:#9a6700;\">The result was cut at {} rows.</p>",
                super::group_thousands(&t.rows.len().to_string())
            );
        }
    }
    let _ = write!(
        h,
        "<p style=\"margin:24px 0 0 0;font-size:12px;color:#8c959f;\">Report {} &middot; generated {} UTC</p>\n</body>\n</html>\n",
        escape(ctx.report_name),
        ctx.generated_at.format("%Y-%m-%d %H:%M:%S")
    );
    h
}
