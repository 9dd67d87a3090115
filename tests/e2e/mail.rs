//! The mailer against a real SMTP relay (mailin-embedded over loopback with STARTTLS + AUTH and
//! the fixture CA trusted through SSL_CERT_FILE), plus the outbox transport.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use lettre::message::Mailbox;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use report_handler::config::Settings;
use report_handler::delivery::mail::{
    MailAttachment, MailSettings, Mailer, OutgoingReport, SendOutcome, message_id,
};
use secrecy::SecretString;

use crate::support::smtp::{self, SmtpServer};

fn mbox(s: &str) -> Mailbox {
    s.parse().expect("test mailbox")
}

fn report() -> OutgoingReport {
    OutgoingReport {
        report: "daily-sales".into(),
        occurrence: Utc.with_ymd_and_hms(2026, 11, 25, 6, 0, 0).unwrap(),
        date: chrono::NaiveDate::from_ymd_opt(2026, 11, 24).unwrap(),
        time_in_name: None,
        subject: "Daily sales 2026-11-24".into(),
        to: vec![mbox("Ops <ops@example.com>"), mbox("boss@example.com")],
        cc: vec![mbox("Finance <finance@example.com>")],
        bcc: vec![mbox("archive@example.com")],
        text: "Sales: 3 rows\n".into(),
        html: "<p>Sales: <b>3</b> rows</p>".into(),
        attachments: vec![
            MailAttachment::csv("orders.csv".into(), "id,amount\n1,12.50\n2,7.00\n".into()),
            MailAttachment::csv("refunds.csv".into(), "id,amount\n9,-3.00\n".into()),
        ],
        inline_images: Vec::new(),
        resend: None,
        recipient: None,
    }
}

/// Mailer settings for `server`, with short retry backoff so tests stay fast.
fn mailer_for(server: &SmtpServer, extra: &[(&str, &str)]) -> Mailer {
    let mut s = Settings::from_pairs(server.settings());
    for (k, v) in extra {
        s.set(k, *v);
    }
    let mut settings = MailSettings::from_settings(&s).expect("valid mail settings");
    settings.retry_backoff = Duration::from_millis(50);
    Mailer::new(settings)
}

fn password() -> SecretString {
    SecretString::from(smtp::PASSWORD.to_string())
}

fn header_block(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn sends_a_multipart_report_over_starttls_with_auth() {
    let server = SmtpServer::start();
    let mailer = mailer_for(&server, &[("MAIL_REPLY_TO", "Team <team@example.com>")]);
    assert_eq!(
        mailer.describe(),
        format!(
            "SMTP localhost:{} (STARTTLS), AUTH, CA bundle {}",
            server.port,
            smtp::ca_path().display()
        )
    );
    let msg = report();
    let outcome = mailer.send(&msg, Some(&password())).await;
    let expected_id = message_id(&msg.report, msg.occurrence, "example.com");
    assert_eq!(
        outcome,
        SendOutcome::Sent {
            message_id: expected_id.clone(),
            accepted: 4,
            rejected: vec![]
        }
    );

    let got = server.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.user.as_deref(), Some(smtp::USERNAME));
    assert_eq!(r.from, "reports@example.com");
    // Bcc is in the envelope...
    assert_eq!(
        r.to,
        vec![
            "ops@example.com",
            "boss@example.com",
            "finance@example.com",
            "archive@example.com"
        ]
    );
    // ...but not in the headers.
    let headers = header_block(&r.data);
    assert!(!headers.to_ascii_lowercase().contains("bcc:"), "{headers}");
    assert!(!headers.contains("archive@example.com"), "{headers}");

    let parsed = MessageParser::default().parse(&r.data).expect("parseable");
    assert_eq!(parsed.subject(), Some("Daily sales 2026-11-24"));
    assert_eq!(
        parsed.message_id(),
        Some(expected_id.trim_matches(['<', '>']))
    );
    assert_eq!(
        parsed.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    assert!(parsed.date().is_some(), "Date header");
    let to: Vec<_> = parsed
        .to()
        .unwrap()
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(to, ["ops@example.com", "boss@example.com"]);
    let cc: Vec<_> = parsed
        .cc()
        .unwrap()
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(cc, ["finance@example.com"]);
    assert_eq!(
        parsed
            .header("Reply-To")
            .and_then(|h| h.as_address())
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("team@example.com")
    );

    // multipart/mixed > [multipart/alternative > (text/plain, text/html), text/csv, text/csv]
    let root = parsed.root_part();
    let ct = root.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("mixed")));
    let PartType::Multipart(children) = &root.body else {
        panic!("root is not multipart")
    };
    assert_eq!(children.len(), 3);
    let alt = parsed.part(children[0]).unwrap();
    let ct = alt.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("alternative"))
    );
    let PartType::Multipart(alts) = &alt.body else {
        panic!("alternative is not multipart")
    };
    let kinds: Vec<_> = alts
        .iter()
        .map(|id| {
            let ct = parsed.part(*id).unwrap().content_type().unwrap();
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
        })
        .collect();
    assert_eq!(kinds, ["text/plain", "text/html"]);
    assert_eq!(parsed.body_text(0).unwrap().trim_end(), "Sales: 3 rows");
    assert_eq!(parsed.body_html(0).unwrap(), "<p>Sales: <b>3</b> rows</p>");

    let attachments: Vec<_> = parsed
        .attachments()
        .map(|a| {
            let ct = a.content_type().unwrap();
            (
                a.attachment_name().unwrap().to_string(),
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")),
                // Text bodies travel with CRLF line ends (also what RFC 4180 asks of CSV).
                String::from_utf8_lossy(a.contents()).replace("\r\n", "\n"),
            )
        })
        .collect();
    assert_eq!(
        attachments,
        [
            (
                "orders.csv".to_string(),
                "text/csv".to_string(),
                "id,amount\n1,12.50\n2,7.00\n".to_string()
            ),
            (
                "refunds.csv".to_string(),
                "text/csv".to_string(),
                "id,amount\n9,-3.00\n".to_string()
            ),
        ]
    );

    // The same occurrence gets the same Message-ID when sent again.
    let again = mailer.send(&msg, Some(&password())).await;
    assert!(
        matches!(again, SendOutcome::Sent { ref message_id, .. } if *message_id == expected_id)
    );
}

#[tokio::test]
async fn a_title_with_crlf_cannot_inject_headers() {
    let server = SmtpServer::start();
    let mailer = mailer_for(&server, &[]);
    let mut msg = report();
    msg.subject = "Sales\r\nBcc: evil@attacker.example\r\nX-Evil: 1".into();
    msg.to = vec![mbox("ops@example.com")];
    msg.cc.clear();
    msg.bcc.clear();
    msg.attachments = vec![MailAttachment::csv(
        "x\r\nContent-Type: text/html\r\n.csv".into(),
        "a\n".into(),
    )];
    let outcome = mailer.send(&msg, Some(&password())).await;
    assert!(
        matches!(outcome, SendOutcome::Sent { accepted: 1, .. }),
        "{outcome:?}"
    );
    let got = server.received();
    assert_eq!(got[0].to, ["ops@example.com"]);
    let headers = header_block(&got[0].data);
    for line in headers.lines() {
        let l = line.to_ascii_lowercase();
        assert!(
            !l.starts_with("bcc:") && !l.starts_with("x-evil:"),
            "{headers}"
        );
    }
    assert!(
        !server
            .state()
            .rcpt_log
            .iter()
            .any(|a| a.contains("attacker"))
    );
    let parsed = MessageParser::default().parse(&got[0].data).unwrap();
    assert_eq!(
        parsed.subject(),
        Some("Sales Bcc: evil@attacker.example X-Evil: 1")
    );
    assert_eq!(parsed.attachments().count(), 1);
}

#[tokio::test]
async fn a_greylisted_recipient_is_retried_and_the_message_sent_once() {
    let server = SmtpServer::start();
    server
        .state()
        .knobs
        .tempfail_rcpt
        .insert("boss@example.com".into(), 1);
    let mailer = mailer_for(&server, &[]);
    let outcome = mailer.send(&report(), Some(&password())).await;
    assert!(
        matches!(outcome, SendOutcome::Sent { accepted: 4, ref rejected, .. } if rejected.is_empty()),
        "{outcome:?}"
    );
    assert_eq!(server.received().len(), 1, "exactly one copy delivered");
    let tries = server
        .state()
        .rcpt_log
        .iter()
        .filter(|a| *a == "boss@example.com")
        .count();
    assert_eq!(tries, 2);
}

#[tokio::test]
async fn transient_failures_after_data_are_retried() {
    let server = SmtpServer::start();
    server.state().knobs.tempfail_data = 1;
    server.state().knobs.drop_after_data = 1;
    let mailer = mailer_for(&server, &[]);
    let outcome = mailer.send(&report(), Some(&password())).await;
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn persistent_transient_failures_give_up_within_the_budget() {
    let server = SmtpServer::start();
    server
        .state()
        .knobs
        .tempfail_rcpt
        .insert("ops@example.com".into(), 100);
    let mailer = mailer_for(&server, &[]);
    let outcome = mailer.send(&report(), Some(&password())).await;
    match outcome {
        SendOutcome::Transient(e) => {
            assert!(e.contains("451") && e.contains("3 attempts"), "{e}")
        }
        other => panic!("expected Transient, got {other:?}"),
    }
    assert!(server.received().is_empty());
    assert_eq!(
        server
            .state()
            .rcpt_log
            .iter()
            .filter(|a| *a == "ops@example.com")
            .count(),
        3
    );
}

#[tokio::test]
async fn one_permanently_rejected_recipient_does_not_stop_the_others() {
    let server = SmtpServer::start();
    server.state().knobs.reject_rcpt.insert(
        "boss@example.com".into(),
        (550, "5.1.1 Mailbox unavailable".into()),
    );
    let mailer = mailer_for(&server, &[]);
    let mut msg = report();
    msg.cc.clear();
    msg.bcc.clear();
    let outcome = mailer.send(&msg, Some(&password())).await;
    let SendOutcome::Sent {
        accepted, rejected, ..
    } = outcome
    else {
        panic!("expected Sent, got {outcome:?}")
    };
    assert_eq!(accepted, 1);
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].starts_with("boss@example.com: ") && rejected[0].contains("550"),
        "{rejected:?}"
    );
    let got = server.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, ["ops@example.com"]);
}

#[tokio::test]
async fn every_recipient_rejected_is_permanent() {
    let server = SmtpServer::start();
    for a in ["ops@example.com", "boss@example.com"] {
        server
            .state()
            .knobs
            .reject_rcpt
            .insert(a.into(), (550, "5.1.1 Mailbox unavailable".into()));
    }
    let mailer = mailer_for(&server, &[]);
    let mut msg = report();
    msg.cc.clear();
    msg.bcc.clear();
    let outcome = mailer.send(&msg, Some(&password())).await;
    assert!(
        matches!(&outcome, SendOutcome::Permanent(e) if e.contains("550") && e.contains("boss@example.com")),
        "{outcome:?}"
    );
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_wrong_password_is_auth_rejected_and_never_echoed() {
    let server = SmtpServer::start();
    let mailer = mailer_for(&server, &[]);
    let wrong = SecretString::from("hunter2-wrong".to_string());
    let outcome = mailer.send(&report(), Some(&wrong)).await;
    match &outcome {
        SendOutcome::AuthRejected(e) => assert!(e.contains("535") && !e.contains("hunter2"), "{e}"),
        other => panic!("expected AuthRejected, got {other:?}"),
    }
    assert_eq!(server.state().auth_failed, 1, "no retry on an auth failure");
    assert!(server.received().is_empty());

    let err = mailer.verify(Some(&wrong)).await.unwrap_err().to_string();
    assert!(err.contains("535") && !err.contains("hunter2"), "{err}");
    mailer
        .verify(Some(&password()))
        .await
        .expect("verify with the right password");
    assert!(server.received().is_empty(), "verify sends no mail");
}

#[tokio::test]
async fn a_missing_password_is_a_permanent_configuration_error() {
    let server = SmtpServer::start();
    let mailer = mailer_for(&server, &[]);
    let outcome = mailer.send(&report(), None).await;
    assert!(
        matches!(&outcome, SendOutcome::Permanent(e) if e.contains("SMTP_PASSWORD")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn the_relay_certificate_must_verify() {
    let server = SmtpServer::start();
    // Without SSL_CERT_FILE the system roots are used, which do not know the fixture CA.
    let mut s = Settings::from_pairs(server.settings());
    s.set("SSL_CERT_FILE", "");
    let mut settings = MailSettings::from_settings(&s).unwrap();
    settings.retry_attempts = 1;
    let mailer = Mailer::new(settings);
    let outcome = mailer.send(&report(), Some(&password())).await;
    assert!(
        matches!(&outcome, SendOutcome::Transient(e) if e.contains("STARTTLS")),
        "{outcome:?}"
    );
    assert!(server.received().is_empty());
    assert_eq!(
        server.state().auth_ok,
        0,
        "no credentials over an unverified channel"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_transient() {
    let port = smtp::silent_server(Duration::from_secs(30));
    let s = Settings::from_pairs([
        ("SMTP_HOST", "127.0.0.1".to_string()),
        ("SMTP_PORT", port.to_string()),
        ("SMTP_TIMEOUT", "500ms".to_string()),
        ("MAIL_FROM", "reports@example.com".to_string()),
        ("SSL_CERT_FILE", smtp::ca_path().display().to_string()),
    ]);
    let mut settings = MailSettings::from_settings(&s).unwrap();
    settings.retry_attempts = 2;
    settings.retry_backoff = Duration::from_millis(50);
    let mailer = Mailer::new(settings);
    let started = Instant::now();
    let outcome = mailer.send(&report(), None).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(&outcome, SendOutcome::Transient(e) if e.contains("did not finish within")),
        "{outcome:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(1000),
        "two attempts of 500 ms: {elapsed:?}"
    );
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let port = smtp::closed_port();
    let s = Settings::from_pairs([
        ("SMTP_HOST", "localhost".to_string()),
        ("SMTP_PORT", port.to_string()),
        ("SMTP_TLS", "none".to_string()),
        ("MAIL_FROM", "reports@example.com".to_string()),
    ]);
    let mut settings = MailSettings::from_settings(&s).unwrap();
    settings.retry_backoff = Duration::from_millis(10);
    let mailer = Mailer::new(settings);
    let outcome = mailer.send(&report(), None).await;
    assert!(
        matches!(&outcome, SendOutcome::Transient(e) if e.contains("cannot connect")),
        "{outcome:?}"
    );
    assert!(mailer.verify(None).await.is_err());
}

#[tokio::test]
async fn the_outbox_gets_a_parseable_eml_written_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("nested/outbox");
    let s = Settings::from_pairs([("MAIL_OUTBOX_DIR", outbox.display().to_string())]);
    let mailer = Mailer::new(MailSettings::from_settings(&s).unwrap());
    assert_eq!(mailer.describe(), format!("outbox {}", outbox.display()));
    mailer.verify(None).await.expect("outbox can be created");
    let msg = report();
    let outcome = mailer.send(&msg, None).await;
    let SendOutcome::Sent {
        message_id: id,
        accepted,
        rejected,
    } = outcome
    else {
        panic!("expected Sent, got {outcome:?}")
    };
    assert_eq!((accepted, rejected.len()), (4, 0));
    assert_eq!(id, message_id(&msg.report, msg.occurrence, "localhost"));

    let names: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["daily-sales-2026-11-24.eml"], "no temp files left");
    let raw = std::fs::read(outbox.join(&names[0])).unwrap();
    let parsed = MessageParser::default()
        .parse(&raw)
        .expect("parseable .eml");
    assert_eq!(parsed.subject(), Some("Daily sales 2026-11-24"));
    assert_eq!(parsed.attachments().count(), 2);
    assert_eq!(
        parsed.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );

    // A second send of the same occurrence replaces the file rather than adding one.
    assert!(matches!(
        mailer.send(&msg, None).await,
        SendOutcome::Sent { .. }
    ));
    assert_eq!(std::fs::read_dir(&outbox).unwrap().count(), 1);
}

#[tokio::test]
async fn a_report_without_recipients_is_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings::from_pairs([("MAIL_OUTBOX_DIR", dir.path().display().to_string())]);
    let mailer = Mailer::new(MailSettings::from_settings(&s).unwrap());
    let mut msg = report();
    msg.to.clear();
    msg.cc.clear();
    msg.bcc.clear();
    assert!(matches!(
        mailer.send(&msg, None).await,
        SendOutcome::Permanent(_)
    ));
}

#[tokio::test]
async fn implicit_tls_reaches_the_relay() {
    let relay = SmtpServer::start_plain();
    let port = smtp::implicit_tls_proxy(relay.port).await;
    let s = Settings::from_pairs([
        ("SMTP_HOST", "localhost".to_string()),
        ("SMTP_PORT", port.to_string()),
        ("SMTP_TLS", "tls".to_string()),
        ("MAIL_FROM", "reports@example.com".to_string()),
        ("SSL_CERT_FILE", smtp::ca_path().display().to_string()),
    ]);
    let mailer = Mailer::new(MailSettings::from_settings(&s).unwrap());
    assert_eq!(
        mailer.describe(),
        format!(
            "SMTP localhost:{port} (TLS), CA bundle {}",
            smtp::ca_path().display()
        )
    );
    mailer.verify(None).await.expect("verify over implicit TLS");
    let outcome = mailer.send(&report(), None).await;
    assert!(
        matches!(outcome, SendOutcome::Sent { accepted: 4, .. }),
        "{outcome:?}"
    );
    assert_eq!(relay.received().len(), 1);
}

#[tokio::test]
async fn plaintext_to_a_loopback_relay_works_and_starttls_is_required_when_configured() {
    let relay = SmtpServer::start_plain();
    let settings = |tls: &str| {
        Settings::from_pairs([
            ("SMTP_HOST", "127.0.0.1".to_string()),
            ("SMTP_PORT", relay.port.to_string()),
            ("SMTP_TLS", tls.to_string()),
            ("MAIL_FROM", "reports@example.com".to_string()),
        ])
    };
    let plain = Mailer::new(MailSettings::from_settings(&settings("none")).unwrap());
    let outcome = plain.send(&report(), None).await;
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    assert_eq!(relay.received().len(), 1);

    // The relay offers no STARTTLS: a starttls mailer refuses to continue in plaintext.
    let strict = Mailer::new(MailSettings::from_settings(&settings("starttls")).unwrap());
    let outcome = strict.send(&report(), None).await;
    assert!(
        matches!(&outcome, SendOutcome::Permanent(e) if e.contains("STARTTLS")),
        "{outcome:?}"
    );
    assert_eq!(relay.received().len(), 1);
}

/// Outbox files are named by report and reported date, like the attachments; occurrences
/// that report on the same date (an hourly report) add their local time, and a resend its
/// number, so no email replaces another's file.
#[tokio::test]
async fn outbox_files_are_named_by_report_and_reported_date() {
    use report_handler::delivery::email::compose;
    use report_handler::report::{ReportSet, Window};
    let set = ReportSet::parse(
        r#"
[[reports]]
name = "daily-sales"
title = "Daily sales"
schedule = "0 0 6 * * *"
time_zone = "Europe/Berlin"
recipients = ["sales@example.com"]
[[reports.sections]]
title = "One"
query = "SELECT 1 AS n WHERE :start < :end"

[[reports]]
name = "hourly"
title = "Hourly"
schedule = "0 0 * * * *"
time_zone = "Europe/Berlin"
window = "1h"
recipients = ["ops@example.com"]
[[reports.sections]]
title = "One"
query = "SELECT 1 AS n WHERE :start < :end"
"#,
        "inline.toml",
    )
    .expect("valid definitions");
    let dir = tempfile::tempdir().unwrap();
    let s = Settings::from_pairs([("MAIL_OUTBOX_DIR", dir.path().display().to_string())]);
    let mailer = Mailer::new(MailSettings::from_settings(&s).unwrap());
    let now = Utc::now();
    let send = |name: &str, occurrence: chrono::DateTime<Utc>, resend: Option<u32>| {
        let report = set.get(name).expect("defined").clone();
        let mailer = &mailer;
        async move {
            let window = Window::for_occurrence(&report.timing(), occurrence);
            let mut msg = compose(&report, occurrence, &window, &[], now);
            msg.resend = resend;
            let outcome = mailer.send(&msg, None).await;
            assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
        }
    };
    // 06:00 Berlin on 25 November reports on 24 November.
    send(
        "daily-sales",
        Utc.with_ymd_and_hms(2026, 11, 25, 5, 0, 0).unwrap(),
        None,
    )
    .await;
    send(
        "daily-sales",
        Utc.with_ymd_and_hms(2026, 11, 25, 5, 0, 0).unwrap(),
        Some(2),
    )
    .await;
    // 14:00 and 15:00 Berlin on 24 November: the same reported date, two files.
    send(
        "hourly",
        Utc.with_ymd_and_hms(2026, 11, 24, 13, 0, 0).unwrap(),
        None,
    )
    .await;
    send(
        "hourly",
        Utc.with_ymd_and_hms(2026, 11, 24, 14, 0, 0).unwrap(),
        None,
    )
    .await;
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "daily-sales-2026-11-24-resend2.eml",
            "daily-sales-2026-11-24.eml",
            "hourly-2026-11-24-1400.eml",
            "hourly-2026-11-24-1500.eml",
        ]
    );
}
