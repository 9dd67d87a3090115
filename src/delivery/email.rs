//! The email destination: the report email for one occurrence (HTML and text parts, chart
//! images inline, a CSV per non-empty section and/or the workbook as `attachments` asks), and
//! sending it with the SMTP password from the secret layer.

use chrono::{DateTime, Utc};

use super::mail::{
    InlineImage, MailAttachment, MailTransport, Mailer, OutgoingReport, SendOutcome,
};
use crate::render::chart::InlineChart;
use crate::render::{self, RenderContext, SectionResult};
use crate::report::definition::AttachmentFormat;
use crate::report::{Report, Window};
use crate::secrets::{SecretSetting, Secrets};

/// Sends with the SMTP password from the secret layer; on an authentication failure the
/// password is refreshed from the vault once and the send retried once.
pub async fn send_with_password(
    mailer: &Mailer,
    secrets: &Secrets,
    msg: &OutgoingReport,
) -> SendOutcome {
    let needs_password = matches!(mailer.settings().transport, MailTransport::Smtp(_))
        && secrets.is_configured(SecretSetting::SmtpPassword);
    if !needs_password {
        return mailer.send(msg, None).await;
    }
    let password = match secrets.get(SecretSetting::SmtpPassword).await {
        Ok(p) => p,
        Err(e) => return SendOutcome::Transient(e.to_string()),
    };
    match mailer.send(msg, Some(&password)).await {
        SendOutcome::AuthRejected(first) => {
            tracing::warn!(
                "SMTP authentication failed; refreshing SMTP_PASSWORD from the vault and retrying once"
            );
            secrets.report_rejected(SecretSetting::SmtpPassword);
            match secrets.refresh(SecretSetting::SmtpPassword).await {
                Ok(p) => mailer.send(msg, Some(&p)).await,
                Err(_) => SendOutcome::AuthRejected(first),
            }
        }
        other => other,
    }
}

/// The names of the files the email for `window` carries, in the order they are attached:
/// one CSV per non-empty section and the workbook, as `attachments` asks. The body lists them.
pub fn attachment_names(
    report: &Report,
    window: &Window,
    sections: &[SectionResult],
) -> Vec<String> {
    let mut names = Vec::new();
    for kind in &report.attachments {
        match kind {
            AttachmentFormat::Csv => names.extend(
                sections
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !s.table.rows.is_empty())
                    .map(|(i, s)| {
                        render::csv_file_name(&report.name, window.date, i + 1, &s.title)
                    }),
            ),
            AttachmentFormat::Xlsx => {
                names.push(render::xlsx_file_name(&report.name, window.date));
            }
        }
    }
    names
}

/// The attached files themselves, as [`attachment_names`] lists them. A workbook that cannot
/// be built is logged and left out rather than failing the delivery: the CSVs and the body
/// still carry the figures.
pub fn render_attachments(
    report: &Report,
    window: &Window,
    sections: &[SectionResult],
    generated_at: DateTime<Utc>,
) -> Vec<MailAttachment> {
    let mut out = Vec::new();
    for kind in &report.attachments {
        match kind {
            AttachmentFormat::Csv => out.extend(
                sections
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !s.table.rows.is_empty())
                    .map(|(i, s)| {
                        let _render = render_span("csv");
                        MailAttachment::csv(
                            render::csv_file_name(&report.name, window.date, i + 1, &s.title),
                            render::render_csv(&s.table),
                        )
                    }),
            ),
            AttachmentFormat::Xlsx => {
                let ctx = report.render_context(window, generated_at, &[], &[]);
                let _render = render_span("xlsx");
                match render::render_xlsx(&ctx, sections) {
                    Ok(body) => out.push(MailAttachment {
                        name: render::xlsx_file_name(&report.name, window.date),
                        content_type: render::xlsx::XLSX_CONTENT_TYPE.into(),
                        body,
                    }),
                    Err(e) => {
                        tracing::error!(report = %report.name, error.message = %e, "the workbook could not be built; the email goes without it");
                    }
                }
            }
        }
    }
    out
}

/// The occurrence's local time when the schedule's previous or next occurrence reports on the
/// same date as this one (an hourly report): the outbox names files by the reported date, and
/// this keeps them apart. A daily report's names carry the date alone.
fn time_in_name(
    report: &Report,
    occurrence: DateTime<Utc>,
    window: &Window,
) -> Option<chrono::NaiveTime> {
    let timing = report.timing();
    let same_date = |other: Option<DateTime<Utc>>| {
        other.is_some_and(|o| Window::for_occurrence(&timing, o).date == window.date)
    };
    let tz = report.time_zone;
    let shared = same_date(report.schedule.previous_before(tz, occurrence))
        || same_date(report.schedule.next_after(tz, occurrence));
    shared.then(|| occurrence.with_timezone(&tz).time())
}

/// One rendering of the report in `format`, entered while it runs (renders are synchronous).
pub fn render_span(format: &'static str) -> tracing::span::EnteredSpan {
    tracing::info_span!("report.render", render.format = format).entered()
}

/// Renders the email for one occurrence.
pub fn compose(
    report: &Report,
    occurrence: DateTime<Utc>,
    window: &Window,
    sections: &[SectionResult],
    generated_at: DateTime<Utc>,
) -> OutgoingReport {
    let attachments = render_attachments(report, window, sections, generated_at);
    let names: Vec<String> = attachments.iter().map(|a| a.name.clone()).collect();
    let mut inline_images = Vec::new();
    let charts: Vec<Option<InlineChart>> = sections
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let chart = {
                let _render = render_span("png");
                render::chart::render_section_png(s, report.locale)?
            };
            let content_id = format!(
                "chart-{}.{}.{}@report-handler",
                i + 1,
                report.name,
                window.date
            );
            let inline = InlineChart {
                src: format!("cid:{content_id}"),
                alt: chart.alt,
                width: chart.width,
                height: chart.height,
            };
            inline_images.push(InlineImage {
                content_id,
                name: format!("{}-{}-{}-chart.png", report.name, window.date, i + 1),
                png: chart.png,
            });
            Some(inline)
        })
        .collect();
    let ctx: RenderContext = report.render_context(window, generated_at, &names, &charts);
    OutgoingReport {
        report: report.name.clone(),
        occurrence,
        date: window.date,
        time_in_name: time_in_name(report, occurrence, window),
        subject: report.render_subject(window),
        to: report.recipients.clone(),
        cc: report.cc.clone(),
        bcc: report.bcc.clone(),
        text: {
            let _render = render_span("text");
            render::render_text(&ctx, sections)
        },
        html: {
            let _render = render_span("html");
            render::render_html(&ctx, sections)
        },
        attachments,
        inline_images,
        resend: None,
        recipient: None,
    }
}

/// One recipient's email of a per-recipient report: [`compose`] over the sections that ran
/// with their key, addressed to them alone (plus the report's static `cc` and `bcc`), with
/// `{recipient}` in the subject and a Message-ID of their own.
pub fn compose_for_recipient(
    report: &Report,
    occurrence: DateTime<Utc>,
    window: &Window,
    sections: &[SectionResult],
    generated_at: DateTime<Utc>,
    recipient: &super::recipients::Recipient,
    mailbox: &lettre::message::Mailbox,
) -> OutgoingReport {
    let mut msg = compose(report, occurrence, window, sections, generated_at);
    msg.subject = report.render_subject_for(window, Some(&recipient.shown()));
    msg.to = vec![mailbox.clone()];
    msg.recipient = Some(recipient.target.as_str().to_string());
    msg
}
