//! Subject templates: `{title}`, `{date}`, `{start}` and `{end}` in a report's `subject`, and
//! `{recipient}` in a per-recipient report's.
//!
//! The loader checks a template once, so a typo such as `{Title}` is a start-up problem with a
//! line number rather than a literal `{Title}` in every email; rendering then fills it in for
//! one window. Rendering also flattens CR and LF, because the result becomes an email header
//! and a report title must never be able to add a header line.

use super::model::Report;
use crate::report::window::Window;

/// The default `subject` template: the title and the day reported on, enough to tell the runs
/// of one report apart in an inbox.
pub const DEFAULT_SUBJECT: &str = "{title}: {date}";
/// The subject placeholders, in the order the error message lists them, so the message for an
/// unknown placeholder always offers the same list.
pub const SUBJECT_PLACEHOLDERS: [&str; 4] = ["title", "date", "start", "end"];
/// The placeholder a per-recipient report's subject may use besides
/// [`SUBJECT_PLACEHOLDERS`]: the recipient's name, else their address.
pub const RECIPIENT_PLACEHOLDER: &str = "recipient";

impl Report {
    /// The email subject for `window`: the template with `{title}`, `{date}` (YYYY-MM-DD),
    /// `{start}` and `{end}` (local `YYYY-MM-DD HH:MM` and zone abbreviation) filled in, `{{`
    /// and `}}` as literal braces. CR and LF become spaces and runs of spaces collapse to one,
    /// so a title can never inject a header line.
    pub fn render_subject(&self, window: &Window) -> String {
        self.render_subject_for(window, None)
    }

    /// [`Report::render_subject`] for one recipient of a per-recipient report: `{recipient}`
    /// becomes `recipient` (their name, else their address), flattened like the rest. Without
    /// a recipient (a preview) the placeholder is left as written.
    pub fn render_subject_for(&self, window: &Window, recipient: Option<&str>) -> String {
        let tz = window.time_zone;
        let fmt_instant = |t: chrono::DateTime<chrono::Utc>| {
            t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
        };
        let mut out = String::new();
        for piece in template_pieces(&self.subject) {
            match piece {
                Piece::Text(t) => out.push_str(&t),
                Piece::Placeholder(name) => match name.as_str() {
                    "title" => out.push_str(&self.title),
                    "date" => out.push_str(&window.date.format("%Y-%m-%d").to_string()),
                    "start" => out.push_str(&fmt_instant(window.start)),
                    "end" => out.push_str(&fmt_instant(window.end)),
                    RECIPIENT_PLACEHOLDER if recipient.is_some() => {
                        out.push_str(recipient.unwrap_or_default());
                    }
                    other => {
                        out.push('{');
                        out.push_str(other);
                        out.push('}');
                    }
                },
                Piece::Unclosed(t) => out.push_str(&t),
            }
        }
        let flat: String = out
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        flat.split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

enum Piece {
    Text(String),
    Placeholder(String),
    /// A `{` with no closing `}`: kept as text when rendering, an error when validating.
    Unclosed(String),
}

fn template_pieces(template: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for n in chars.by_ref() {
                    if n == '}' {
                        closed = true;
                        break;
                    }
                    name.push(n);
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                if closed {
                    pieces.push(Piece::Placeholder(name));
                } else {
                    pieces.push(Piece::Unclosed(format!("{{{name}")));
                }
            }
            other => text.push(other),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// Checks a subject template; the error lists the allowed placeholders.
#[cfg(test)]
pub(super) fn check_subject(template: &str) -> Result<(), String> {
    check_subject_for(template, false)
}

/// Checks a subject template of a report that is (`per_recipient`) or is not per-recipient:
/// `{recipient}` is allowed only in the former, where every email has one recipient.
pub(super) fn check_subject_for(template: &str, per_recipient: bool) -> Result<(), String> {
    let allowed = SUBJECT_PLACEHOLDERS
        .iter()
        .map(|p| format!("{{{p}}}"))
        .collect::<Vec<_>>()
        .join(" ");
    for piece in template_pieces(template) {
        match piece {
            Piece::Placeholder(name) if name == RECIPIENT_PLACEHOLDER && !per_recipient => {
                return Err(format!(
                    "`{{{name}}}` names the one recipient of a per-recipient email: it needs \
                     `recipients_query` (with static `recipients` use {allowed})"
                ));
            }
            Piece::Placeholder(name) if name == RECIPIENT_PLACEHOLDER => {}
            Piece::Placeholder(name) if !SUBJECT_PLACEHOLDERS.contains(&name.as_str()) => {
                return Err(format!(
                    "unknown placeholder `{{{name}}}`: use {allowed} (write `{{{{` for a literal brace)"
                ));
            }
            Piece::Unclosed(t) => {
                return Err(format!(
                    "`{t}` has no closing `}}` (write `{{{{` for a literal brace)"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::definition::ReportSet;
    use chrono::{DateTime, NaiveDate, Utc};

    /// The first report of the loader tests' sample, reduced to what a subject reads: title,
    /// time zone, the default `previous_day` window and the subject template.
    const DAILY: &str = r#"
[[reports]]
name = "daily-sales"
title = "Daily sales"
schedule = "0 0 6 * * *"
time_zone = "Europe/Berlin"
window = "previous_day"
recipients = ["Sales team <sales@example.com>"]
subject = "{title}: {date}"

[[reports.sections]]
title = "Orders by status"
query = "SELECT 1"
"#;

    #[test]
    fn subject_placeholders_render_and_cr_lf_is_stripped() {
        let mut set = ReportSet::parse(DAILY, "reports.toml").unwrap();
        let mut r = set.reports.remove(0);
        let d = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let w = Window::for_local_date(&r.timing(), d).unwrap();
        assert_eq!(r.render_subject(&w), "Daily sales: 2026-03-29");
        r.subject = "{{{title}}} {start} .. {end}".into();
        assert_eq!(
            r.render_subject(&w),
            "{Daily sales} 2026-03-29 00:00 CET .. 2026-03-30 00:00 CEST"
        );
        r.title = "Evil\r\nBcc: x@example.com".into();
        r.subject = "{title}\n{date}".into();
        let s = r.render_subject(&w);
        assert!(!s.contains('\r') && !s.contains('\n'));
        assert_eq!(s, "Evil Bcc: x@example.com 2026-03-29");
        let _: DateTime<Utc> = w.start;
    }

    #[test]
    fn subject_check_rejects_unknown_and_unclosed() {
        assert!(check_subject("{title}: {date} {start}-{end} {{literal}}").is_ok());
        assert!(
            check_subject("{Title}")
                .unwrap_err()
                .contains("{title} {date} {start} {end}")
        );
        assert!(check_subject("{title").unwrap_err().contains("no closing"));
    }

    #[test]
    fn the_recipient_placeholder_needs_a_per_recipient_report() {
        assert!(check_subject_for("{title} for {recipient}", true).is_ok());
        let e = check_subject_for("{title} for {recipient}", false).unwrap_err();
        assert!(e.contains("recipients_query"), "{e}");
        assert!(check_subject_for("{recipients}", true).is_err());
        let mut set = ReportSet::parse(DAILY, "reports.toml").unwrap();
        let mut r = set.reports.remove(0);
        r.subject = "{title} for {recipient}".into();
        let d = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        let w = Window::for_local_date(&r.timing(), d).unwrap();
        assert_eq!(
            r.render_subject_for(&w, Some("Ann\r\nBcc: x@example.com")),
            "Daily sales for Ann Bcc: x@example.com"
        );
        assert_eq!(
            r.render_subject_for(&w, Some("ann@example.com")),
            "Daily sales for ann@example.com"
        );
        // A preview without a recipient shows the placeholder.
        assert_eq!(r.render_subject(&w), "Daily sales for {recipient}");
    }
}
