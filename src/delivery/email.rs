//! The email destination: the report email for one occurrence (HTML and text parts, one CSV
//! attachment per non-empty section), and sending it with the SMTP password from the secret
//! layer.

use chrono::{DateTime, Utc};

use super::mail::{MailTransport, Mailer, OutgoingReport, SendOutcome};
use crate::render::{self, RenderContext, SectionResult};
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

/// Renders the email for one occurrence.
pub fn compose(
    report: &Report,
    occurrence: DateTime<Utc>,
    window: &Window,
    sections: &[SectionResult],
    generated_at: DateTime<Utc>,
) -> OutgoingReport {
    let tz = window.time_zone.name();
    let ctx = RenderContext {
        report_name: &report.name,
        title: &report.title,
        description: report.description.as_deref(),
        time_zone: tz,
        start: window.start,
        end: window.end,
        date: window.date,
        generated_at,
        max_rows_in_body: report.max_rows_in_body,
    };
    let attachments = sections
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.table.rows.is_empty())
        .map(|(i, s)| {
            (
                render::csv_file_name(&report.name, window.date, i + 1, &s.title),
                render::render_csv(&s.table),
            )
        })
        .collect();
    OutgoingReport {
        report: report.name.clone(),
        occurrence,
        subject: report.render_subject(window),
        to: report.recipients.clone(),
        cc: report.cc.clone(),
        bcc: report.bcc.clone(),
        text: render::render_text(&ctx, sections),
        html: render::render_html(&ctx, sections),
        attachments,
        resend: None,
    }
}
