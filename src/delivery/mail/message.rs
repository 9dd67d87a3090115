//! Building the email: one rendered report becomes the exact MIME bytes that are sent (or
//! written to the outbox), with a deterministic Message-ID, cleaned headers, inline chart
//! images and the attachments (CSV, XLSX). Built once per send, so every retry transmits the
//! same bytes.
//!
//! The structure is `multipart/mixed[ multipart/alternative[ text, multipart/related[ html,
//! images ] ], attachments ]`: the images belong to the HTML part, referenced by `cid:`, which
//! is what Outlook, Gmail and Apple Mail show inline.

use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, NaiveTime, Timelike, Utc};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use sha2::{Digest, Sha256};

use super::settings::MailSettings;

/// One rendered report occurrence, ready to mail. The renderers fill it; the mailer only
/// wraps it in MIME and delivers it.
#[derive(Debug, Clone)]
pub struct OutgoingReport {
    /// The report name (for the Message-ID and the outbox file name).
    pub report: String,
    /// The occurrence being delivered (for the Message-ID).
    pub occurrence: DateTime<Utc>,
    /// The day the email reports on (the window's local date): the outbox file is named by it,
    /// like the attachments, so a person finds the email of a day by its name.
    pub date: NaiveDate,
    /// The occurrence's local time when another occurrence of the schedule reports on the same
    /// date (hourly reports), so each email keeps its own outbox file; `None` otherwise.
    pub time_in_name: Option<NaiveTime>,
    /// The rendered subject; control characters are replaced by spaces.
    pub subject: String,
    /// Visible recipients.
    pub to: Vec<Mailbox>,
    /// Visible copies.
    pub cc: Vec<Mailbox>,
    /// Hidden copies: in the SMTP envelope, never in the headers.
    pub bcc: Vec<Mailbox>,
    /// The plain-text alternative.
    pub text: String,
    /// The HTML alternative.
    pub html: String,
    /// The attached files, in order (CSV per section, the workbook).
    pub attachments: Vec<MailAttachment>,
    /// Images the HTML shows inline (charts), referenced as `cid:<content_id>`.
    pub inline_images: Vec<InlineImage>,
    /// For a manual resend of an occurrence already sent: the ledger's attempt number. The
    /// email then gets its own Message-ID (and outbox file), so it is not taken for the first.
    pub resend: Option<u32>,
    /// For one recipient's email of a per-recipient report: the recipient's ledger target
    /// (`email:<address>[ key=<key>]`). Its hash goes into the Message-ID and the outbox file
    /// name, so each recipient's email has its own (and no address appears in either).
    pub recipient: Option<String>,
}

/// A file attached to the report email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAttachment {
    /// The file name the reader sees (cleaned of path and header characters when built).
    pub name: String,
    /// The MIME type, e.g. `text/csv; charset=utf-8`.
    pub content_type: String,
    /// The bytes (text or binary: the builder picks the transfer encoding).
    pub body: Vec<u8>,
}

impl MailAttachment {
    /// A CSV attachment.
    pub fn csv(name: String, text: String) -> Self {
        MailAttachment {
            name,
            content_type: "text/csv; charset=utf-8".into(),
            body: text.into_bytes(),
        }
    }
}

/// An image shown inside the HTML part (`<img src="cid:...">`), not listed as an attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineImage {
    /// The Content-ID without angle brackets; the HTML refers to `cid:<content_id>`.
    pub content_id: String,
    /// A file name for clients that offer to save the image.
    pub name: String,
    /// The PNG bytes.
    pub png: Vec<u8>,
}

/// The same (report, occurrence) always gets the same Message-ID, so a duplicate that slips
/// through (an ambiguous SMTP failure) is recognisable, and the ledger can name the email.
///
/// Shape: `<nightlyreport.{report}.{YYYYMMDDTHHMMSSZ}.{hash}@{domain}>`, where `{report}` keeps
/// only letters, digits, `-` and `_`, and `{hash}` (SHA-256 of the exact name and instant)
/// keeps distinct names distinct after that cleaning. Includes the angle brackets.
pub fn message_id(report: &str, occurrence: DateTime<Utc>, domain: &str) -> String {
    message_id_for(report, occurrence, None, domain)
}

/// A hash of a per-recipient email's recipient target: `r` and 12 hex digits.
fn recipient_tag(recipient: &str) -> String {
    let mut h = Sha256::new();
    h.update(recipient.as_bytes());
    let hex: String = h
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("r{hex}")
}

/// [`message_id`] for one recipient's email of a per-recipient report: the same (report,
/// occurrence, recipient) always gets the same Message-ID, and each recipient their own:
/// `<nightlyreport.{report}.{YYYYMMDDTHHMMSSZ}.r{recipient hash}.{hash}@{domain}>`. The
/// recipient is hashed, so the Message-ID (which logs show) names no address.
pub fn message_id_for(
    report: &str,
    occurrence: DateTime<Utc>,
    recipient: Option<&str>,
    domain: &str,
) -> String {
    let slug: String = report
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let mut h = Sha256::new();
    h.update(report.as_bytes());
    h.update([0]);
    h.update(occurrence.to_rfc3339().as_bytes());
    let hash: String = h
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let domain: String = domain
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        .collect();
    let domain = if domain.is_empty() {
        "localhost".to_string()
    } else {
        domain
    };
    let tag = recipient
        .map(|r| format!("{}.", recipient_tag(r)))
        .unwrap_or_default();
    format!(
        "<nightlyreport.{slug}.{}.{tag}{hash}@{domain}>",
        occurrence.format("%Y%m%dT%H%M%SZ")
    )
}

/// A built message: the exact bytes, sent unchanged on every attempt.
pub(super) struct Built {
    pub(super) bytes: Vec<u8>,
    pub(super) message_id: String,
    pub(super) from: Address,
    pub(super) recipients: Vec<Address>,
}

fn clean_header_text(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn clean_mailbox(m: &Mailbox) -> Mailbox {
    Mailbox::new(m.name.as_deref().map(clean_header_text), m.email.clone())
}

fn clean_filename(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | '"' | ':') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        "section.csv".into()
    } else {
        cleaned
    }
}

/// `daily-sales-2026-11-24.eml` (the report and the reported date, like the attachments), or
/// `hourly-2026-11-24-1400.eml` when the local time is needed to keep occurrences of the same
/// date apart (`-140030` when the occurrence has seconds), with the report name reduced to safe
/// file-name characters.
fn outbox_file_name(report: &str, date: NaiveDate, time: Option<NaiveTime>) -> String {
    let slug: String = report
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let time = match time {
        Some(t) if t.second() != 0 => t.format("-%H%M%S").to_string(),
        Some(t) => t.format("-%H%M").to_string(),
        None => String::new(),
    };
    format!("{slug}-{date}{time}.eml")
}

/// The outbox file name of `msg`: [`outbox_file_name`], with `-resend{n}` before `.eml` for a
/// manual resend, so a resend does not replace the first email's file.
pub(super) fn outbox_name(msg: &OutgoingReport) -> String {
    let mut name = outbox_file_name(&msg.report, msg.date, msg.time_in_name);
    if let Some(r) = &msg.recipient {
        name = name.replace(".eml", &format!("-{}.eml", recipient_tag(r)));
    }
    if let Some(n) = msg.resend {
        name = name.replace(".eml", &format!("-resend{n}.eml"));
    }
    name
}

/// Builds the message once per send: every retry then transmits the same bytes, and the
/// envelope (sender and de-duplicated To/Cc/Bcc recipients) travels with them. Header text is
/// cleaned of control characters so report names and subjects cannot inject headers.
pub(super) fn build_message(
    settings: &MailSettings,
    msg: &OutgoingReport,
) -> Result<Built, String> {
    let from = clean_mailbox(&settings.from);
    let mut message_id = message_id_for(
        &msg.report,
        msg.occurrence,
        msg.recipient.as_deref(),
        from.email.domain(),
    );
    if let Some(n) = msg.resend {
        message_id = message_id.replacen('@', &format!(".resend{n}@"), 1);
    }
    let mut b = Message::builder()
        .from(from.clone())
        .subject(clean_header_text(&msg.subject))
        .message_id(Some(message_id.clone()))
        .date(SystemTime::now())
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
            "All".into(),
        ));
    if let Some(r) = &settings.reply_to {
        b = b.reply_to(clean_mailbox(r));
    }
    let mut recipients: Vec<Address> = Vec::new();
    let mut add = |a: &Address| {
        if !recipients.contains(a) {
            recipients.push(a.clone());
        }
    };
    for m in &msg.to {
        add(&m.email);
        b = b.to(clean_mailbox(m));
    }
    for m in &msg.cc {
        add(&m.email);
        b = b.cc(clean_mailbox(m));
    }
    for m in &msg.bcc {
        add(&m.email);
        // Bcc goes into lettre's envelope; lettre drops the header when formatting.
        b = b.bcc(clean_mailbox(m));
    }
    if recipients.is_empty() {
        return Err(format!("report {} has no recipients", msg.report));
    }
    let alternative = if msg.inline_images.is_empty() {
        MultiPart::alternative_plain_html(msg.text.clone(), msg.html.clone())
    } else {
        let png = ContentType::parse("image/png")
            .map_err(|e| format!("internal: PNG content type ({e})"))?;
        let mut related = MultiPart::related().singlepart(SinglePart::html(msg.html.clone()));
        for image in &msg.inline_images {
            let cid: String = image
                .content_id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
                .collect();
            related = related.singlepart(
                Attachment::new_inline_with_name(cid, clean_filename(&image.name))
                    .body(image.png.clone(), png.clone()),
            );
        }
        MultiPart::alternative()
            .singlepart(SinglePart::plain(msg.text.clone()))
            .multipart(related)
    };
    let mut body = MultiPart::mixed().multipart(alternative);
    for a in &msg.attachments {
        let content_type = ContentType::parse(&a.content_type)
            .map_err(|e| format!("internal: content type {} ({e})", a.content_type))?;
        body = body.singlepart(
            Attachment::new(clean_filename(&a.name)).body(a.body.clone(), content_type),
        );
    }
    let message = b
        .multipart(body)
        .map_err(|e| format!("cannot build the email for report {}: {e}", msg.report))?;
    Ok(Built {
        bytes: message.formatted(),
        message_id,
        from: from.email,
        recipients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn message_ids_are_deterministic_and_distinct() {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap();
        let a = message_id("daily sales", t, "example.com");
        assert_eq!(a, message_id("daily sales", t, "example.com"));
        assert!(a.starts_with("<nightlyreport.daily-sales.20261125T020000Z."));
        assert!(a.ends_with("@example.com>"));
        assert_ne!(a, message_id("daily-sales", t, "example.com"));
        assert_ne!(
            a,
            message_id("daily sales", t + chrono::Duration::days(1), "example.com")
        );
        let odd = message_id("a\r\nb<>@", t, "ex\r\nample.com");
        assert!(
            !odd.contains(['\r', '\n']) && odd.matches('@').count() == 1,
            "{odd}"
        );
    }

    #[test]
    fn each_recipient_has_their_own_deterministic_message_id() {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap();
        let ann = message_id_for("teams", t, Some("email:ann@example.com"), "example.com");
        let bob = message_id_for("teams", t, Some("email:bob@example.com"), "example.com");
        assert_eq!(
            ann,
            message_id_for("teams", t, Some("email:ann@example.com"), "example.com")
        );
        assert_ne!(ann, bob);
        assert_ne!(ann, message_id("teams", t, "example.com"));
        assert!(
            ann.starts_with("<nightlyreport.teams.20261125T020000Z.r"),
            "{ann}"
        );
        assert!(!ann.contains("ann"), "no address in the Message-ID: {ann}");
        assert_eq!(
            message_id_for("teams", t, None, "example.com"),
            message_id("teams", t, "example.com")
        );
    }

    #[test]
    fn header_text_and_file_names_are_cleaned() {
        assert_eq!(
            clean_header_text("Sales\r\nBcc: evil@x"),
            "Sales Bcc: evil@x"
        );
        assert_eq!(clean_filename("../a/b\r\n.csv"), "_a_b__.csv");
        assert_eq!(clean_filename(""), "section.csv");
        let d = chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        assert_eq!(outbox_file_name("a/b c", d, None), "a_b_c-2026-01-02.eml");
        let t = |h, m, s| chrono::NaiveTime::from_hms_opt(h, m, s);
        assert_eq!(
            outbox_file_name("hourly", d, t(14, 0, 0)),
            "hourly-2026-01-02-1400.eml"
        );
        assert_eq!(
            outbox_file_name("hourly", d, t(14, 0, 30)),
            "hourly-2026-01-02-140030.eml"
        );
    }
}
