//! NightlyReport end to end: the real binary behind the host emulator, a real SMTP relay with
//! STARTTLS and AUTH, the embedded sample SQLite database, and the delivery ledger on SQLite or
//! a real PostgreSQL. Each scenario checks the messages the relay actually received.

use chrono::{DateTime, TimeZone, Utc};
use mail_parser::{MessageParser, MimeHeaders};

use crate::support::host::{self, AppDir, Host, HostOptions, TimerVariant};
use crate::support::pg::TestDb;
use crate::support::smtp::{self, SmtpServer};
use crate::support::vault;
use crate::support::wait::{QUIET, WITHIN};

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn report_toml(name: &str, schedule: &str, tz: &str, extra: &str) -> String {
    format!(
        r#"
[[reports]]
name = "{name}"
title = "Test {name}"
schedule = "{schedule}"
time_zone = "{tz}"
recipients = ["Ops <ops@example.com>", "boss@example.com"]
cc = ["cc@example.com"]
bcc = ["hidden@example.com"]
subject = "{{title}} for {{date}}"
{extra}

[[reports.sections]]
title = "Orders by status"
query = "SELECT status, COUNT(*) AS orders FROM orders WHERE created_at >= :start AND created_at < :end GROUP BY status ORDER BY status"

[[reports.sections]]
title = "Nothing"
query = "SELECT id FROM orders WHERE 1 = 0"
"#
    )
}

async fn start(app: &AppDir, smtp: &SmtpServer, extra: &[(&str, String)]) -> Host {
    let mut opts = HostOptions::new(app.path());
    for (k, v) in smtp.settings() {
        opts = opts.setting(&k, v);
    }
    opts = opts.setting("SMTP_TIMEOUT", "3s");
    for (k, v) in extra {
        opts = opts.setting(k, v.clone());
    }
    Host::start(opts).await
}

async fn tick(host: &Host, at: DateTime<Utc>) -> host::Invocation {
    host.timer("NightlyReport", TimerVariant::Scheduled, at)
        .await
}

#[tokio::test]
async fn one_email_at_the_local_occurrence_and_never_a_second() {
    let app = AppDir::from_repo();
    app.write(
        "reports.toml",
        &report_toml("daily", "0 0 6 * * *", "Europe/Berlin", ""),
    );
    let smtp = SmtpServer::start();
    let host = start(&app, &smtp, &[]).await;
    // 04:55Z is 05:55 in Berlin: not due yet.
    let inv = tick(&host, utc(2026, 11, 26, 4, 55)).await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    assert_eq!(smtp.received().len(), 0);
    // 05:00Z = 06:00 CET: due.
    let inv = tick(&host, utc(2026, 11, 26, 5, 0)).await;
    assert!(inv.succeeded(), "{:?} {:?}", inv.failure, host.stdout());
    assert_eq!(smtp.wait_for(1, WITHIN).await.len(), 1);
    assert!(
        inv.logs.iter().any(|l| l.contains("report sent")),
        "{:?}",
        inv.logs
    );
    // A repeated tick, a later tick, a past-due catch-up, a retry and a manual run: no more mail.
    assert!(tick(&host, utc(2026, 11, 26, 5, 0)).await.succeeded());
    assert!(tick(&host, utc(2026, 11, 26, 5, 5)).await.succeeded());
    let past_due = host
        .timer(
            "NightlyReport",
            TimerVariant::PastDue {
                missed: utc(2026, 11, 26, 5, 0),
            },
            utc(2026, 11, 26, 5, 12),
        )
        .await;
    assert!(past_due.succeeded());
    let retry = host.timer_payload(
        "NightlyReport",
        TimerVariant::MonitorOff,
        utc(2026, 11, 26, 5, 1),
        Some(1),
    );
    assert!(host.invoke("NightlyReport", &retry).await.succeeded());
    let (status, manual) = host
        .admin_run("NightlyReport", utc(2026, 11, 26, 5, 30))
        .await;
    assert_eq!(status, 202);
    assert!(manual.unwrap().succeeded());
    smtp.expect_exactly(1, WITHIN, QUIET).await;
}

#[tokio::test]
async fn the_message_is_well_formed() {
    let app = AppDir::from_repo();
    // A 30-day window over the sample database always has orders.
    app.write(
        "reports.toml",
        &report_toml("daily", "0 0 6 * * *", "Europe/Berlin", "window = \"30d\""),
    );
    let smtp = SmtpServer::start();
    let host = start(&app, &smtp, &[]).await;
    let now = Utc::now();
    let inv = host
        .timer("NightlyReport", TimerVariant::Scheduled, now)
        .await;
    assert!(inv.succeeded(), "{:?} {:?}", inv.failure, host.stdout());
    // Whether today's 06:00 occurrence is within catch_up depends on the clock; force one
    // occurrence by ticking at the next 06:00 Berlin.
    let next = report_handler::report::Schedule::parse("0 0 6 * * *")
        .unwrap()
        .next_after(chrono_tz::Europe::Berlin, now)
        .unwrap();
    assert!(tick(&host, next).await.succeeded());
    let got = smtp.wait_for(1, WITHIN).await;
    let last = got.last().expect("an email");
    let mut envelope = last.to.clone();
    envelope.sort();
    assert_eq!(
        envelope,
        vec![
            "boss@example.com",
            "cc@example.com",
            "hidden@example.com",
            "ops@example.com"
        ]
    );
    let msg = MessageParser::default().parse(&last.data).unwrap();
    let raw = String::from_utf8_lossy(&last.data);
    let date = next.with_timezone(&chrono_tz::Europe::Berlin).date_naive();
    assert_eq!(
        msg.subject(),
        Some(format!("Test daily for {date}").as_str())
    );
    assert!(
        !raw.to_ascii_lowercase().contains("hidden@example.com"),
        "Bcc not in headers"
    );
    assert!(raw.contains("Auto-Submitted: auto-generated"));
    assert!(msg.message_id().is_some());
    assert!(msg.content_type().unwrap().ctype() == "multipart");
    assert_eq!(msg.content_type().unwrap().subtype(), Some("mixed"));
    assert!(msg.body_text(0).unwrap().contains("Orders by status"));
    assert!(msg.body_html(0).unwrap().contains("<table"));
    // One CSV per non-empty section: "Nothing" is empty.
    let names: Vec<String> = msg
        .attachments()
        .map(|a| a.attachment_name().unwrap_or("").to_string())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".csv"));
}

#[tokio::test]
async fn dst_days_in_berlin_send_exactly_one_email_each() {
    let app = AppDir::from_repo();
    // 02:30 does not exist on 2026-03-29 and happens twice on 2026-10-25.
    app.write(
        "reports.toml",
        &report_toml("dst", "0 30 2 * * *", "Europe/Berlin", ""),
    );
    let smtp = SmtpServer::start();
    let host = start(&app, &smtp, &[]).await;
    for (day_start, expect_total) in [(utc(2026, 3, 28, 22, 0), 1), (utc(2026, 10, 24, 22, 0), 2)] {
        // Tick every 5 minutes over 6 hours around the change.
        for i in 0..72 {
            let at = day_start + chrono::Duration::minutes(5 * i);
            let inv = tick(&host, at).await;
            assert!(inv.succeeded(), "{at}: {:?}", inv.failure);
        }
        assert_eq!(
            smtp.wait_for(expect_total, WITHIN).await.len(),
            expect_total
        );
        assert_eq!(
            smtp.settle(expect_total, WITHIN, QUIET).await.len(),
            expect_total,
            "after {day_start}"
        );
    }
}

#[tokio::test]
async fn monday_to_friday_sends_nothing_on_saturday() {
    let app = AppDir::from_repo();
    app.write(
        "reports.toml",
        &report_toml("weekdays", "0 0 6 * * 1-5", "Europe/Berlin", ""),
    );
    let smtp = SmtpServer::start();
    let host = start(&app, &smtp, &[]).await;
    // Saturday 2026-11-28 and Sunday 06:00 CET = 05:00Z.
    assert!(tick(&host, utc(2026, 11, 28, 5, 0)).await.succeeded());
    assert!(tick(&host, utc(2026, 11, 29, 5, 0)).await.succeeded());
    smtp.expect_exactly(0, WITHIN, QUIET).await;
    // Monday.
    assert!(tick(&host, utc(2026, 11, 30, 5, 0)).await.succeeded());
    assert_eq!(smtp.wait_for(1, WITHIN).await.len(), 1);
}

#[tokio::test]
async fn catch_up_after_an_outage_sends_only_what_catch_up_allows() {
    let app = AppDir::from_repo();
    app.write(
        "reports.toml",
        &report_toml(
            "hourly",
            "0 0 * * * *",
            "UTC",
            "catch_up = \"2h\"\nwindow = \"1h\"",
        ),
    );
    let smtp = SmtpServer::start();
    let host = start(&app, &smtp, &[]).await;
    // The first tick on an empty ledger sends what catch_up allows: 07:00, 08:00 and 09:00.
    assert!(tick(&host, utc(2026, 11, 26, 9, 0)).await.succeeded());
    assert_eq!(smtp.wait_for(3, WITHIN).await.len(), 3);
    // Outage: ticks at 10:00, 11:00, 12:00 missed; the next tick is 12:30 (past due).
    let inv = host
        .timer(
            "NightlyReport",
            TimerVariant::PastDue {
                missed: utc(2026, 11, 26, 9, 5),
            },
            utc(2026, 11, 26, 12, 30),
        )
        .await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    // 10:30 is the oldest allowed: 11:00 and 12:00 are sent, 10:00 is skipped.
    smtp.expect_exactly(5, WITHIN, QUIET).await;
    assert!(
        inv.logs.iter().any(|l| l.contains("skipped")),
        "{:?}",
        inv.logs
    );
}

#[tokio::test]
async fn skip_if_empty_sends_nothing() {
    let app = AppDir::from_repo();
    let toml = r#"
[[reports]]
name = "empty"
title = "Empty"
schedule = "0 0 6 * * *"
recipients = ["ops@example.com"]
skip_if_empty = true

[[reports.sections]]
title = "Nothing"
query = "SELECT id FROM orders WHERE 1 = 0 AND created_at >= :start AND created_at < :end"
"#;
    app.write("reports.toml", toml);
    let smtp = SmtpServer::start();
    let host = start(&app, &smtp, &[]).await;
    let inv = tick(&host, utc(2026, 11, 26, 6, 0)).await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    assert!(
        inv.logs.iter().any(|l| l.contains("empty")),
        "{:?}",
        inv.logs
    );
    smtp.expect_exactly(0, WITHIN, QUIET).await;
}

#[tokio::test]
async fn a_451_then_success_sends_once() {
    let app = AppDir::from_repo();
    app.write(
        "reports.toml",
        &report_toml("daily", "0 0 6 * * *", "UTC", ""),
    );
    let smtp = SmtpServer::start();
    smtp.state()
        .knobs
        .tempfail_rcpt
        .insert("ops@example.com".into(), 1);
    let host = start(&app, &smtp, &[]).await;
    let inv = tick(&host, utc(2026, 11, 26, 6, 0)).await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    assert_eq!(smtp.wait_for(1, WITHIN).await.len(), 1);
    assert!(tick(&host, utc(2026, 11, 26, 6, 5)).await.succeeded());
    smtp.expect_exactly(1, WITHIN, QUIET).await;
}

#[tokio::test]
async fn a_dead_server_fails_the_invocation_and_a_later_tick_delivers() {
    let app = AppDir::from_repo();
    app.write(
        "reports.toml",
        &report_toml("daily", "0 0 6 * * *", "UTC", ""),
    );
    let live = SmtpServer::start();
    let dead_port = smtp::closed_port();
    let mut host = start(&app, &live, &[("SMTP_PORT", dead_port.to_string())]).await;
    let inv = tick(&host, utc(2026, 11, 26, 6, 0)).await;
    assert!(!inv.succeeded(), "a dead relay must fail the invocation");
    assert_eq!(inv.status, 500);
    assert!(
        host.stdout().iter().any(|l| l.contains("delivery failed")),
        "{:?}",
        host.stdout()
    );
    // The host restarts the handler (same app, ledger kept); the relay is back.
    host.kill().await;
    let host = start(&app, &live, &[]).await;
    let inv = tick(&host, utc(2026, 11, 26, 6, 5)).await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    assert_eq!(live.wait_for(1, WITHIN).await.len(), 1);
    assert!(tick(&host, utc(2026, 11, 26, 6, 10)).await.succeeded());
    live.expect_exactly(1, WITHIN, QUIET).await;
}

#[tokio::test]
async fn two_handlers_sharing_a_postgresql_ledger_send_once() {
    // A fresh database for this test's ledger.
    let Some(db) = TestDb::create("two_handlers_sharing_a_postgresql_ledger_send_once").await
    else {
        return;
    };
    let url = db.url().to_string();
    let app = AppDir::from_repo();
    app.write(
        "reports.toml",
        &report_toml("daily", "0 0 6 * * *", "UTC", ""),
    );
    let smtp = SmtpServer::start();
    let a = start(&app, &smtp, &[("STATE_DATABASE_URL", url.clone())]).await;
    let b = start(&app, &smtp, &[("STATE_DATABASE_URL", url.clone())]).await;
    for round in 0..3 {
        let at = utc(2026, 11, 26, 6, round * 5);
        let (ra, rb) = tokio::join!(tick(&a, at), tick(&b, at));
        assert!(
            ra.succeeded() && rb.succeeded(),
            "{:?} {:?}",
            ra.failure,
            rb.failure
        );
    }
    smtp.expect_exactly(1, WITHIN, QUIET).await;
}

#[tokio::test]
async fn a_rotated_smtp_password_is_refreshed_from_the_vault_once_and_retried() {
    let kv = vault::FakeVault::start().await;
    let msi = vault::FakeMsi::start().await;
    kv.set_secret("smtp-password", smtp::PASSWORD);
    let app = AppDir::from_repo();
    app.write(
        "reports.toml",
        &report_toml("daily", "0 0 6 * * *", "UTC", ""),
    );
    let relay = SmtpServer::start();
    // The vault's CA and the relay's fixture CA in one bundle for SSL_CERT_FILE.
    let bundle = app.path().join("ca-bundle.pem");
    std::fs::write(
        &bundle,
        format!(
            "{}\n{}",
            kv.ca_pem(),
            std::fs::read_to_string(smtp::ca_path()).unwrap()
        ),
    )
    .unwrap();
    let host = start(
        &app,
        &relay,
        &[
            ("SMTP_PASSWORD", kv.reference("smtp-password", None)),
            ("SSL_CERT_FILE", bundle.display().to_string()),
            ("IDENTITY_ENDPOINT", msi.endpoint()),
            ("IDENTITY_HEADER", msi.header().to_string()),
        ],
    )
    .await;
    assert!(tick(&host, utc(2026, 11, 26, 6, 0)).await.succeeded());
    assert_eq!(relay.wait_for(1, WITHIN).await.len(), 1);
    let calls_before = kv.calls();
    // The password is rotated at the relay and in the vault; the handler still caches the old one.
    relay.state().knobs.password = Some("rotated-password-9c1e".into());
    kv.set_secret("smtp-password", "rotated-password-9c1e");
    let inv = tick(&host, utc(2026, 11, 27, 6, 0)).await;
    assert!(inv.succeeded(), "{:?} {:?}", inv.failure, host.stdout());
    assert_eq!(relay.wait_for(2, WITHIN).await.len(), 2);
    assert_eq!(kv.calls(), calls_before + 1, "exactly one refresh");
    assert_eq!(
        relay.state().auth_failed,
        1,
        "one rejected attempt, then success"
    );
    assert!(!host.output().contains("rotated-password-9c1e"));
    assert!(!host.output().contains(smtp::PASSWORD));
}

#[tokio::test]
async fn the_email_carries_its_chart_inline_and_the_workbook() {
    use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
    let app = AppDir::from_repo();
    let mut toml = report_toml(
        "charted",
        "0 0 6 * * *",
        "Europe/Berlin",
        "window = \"30d\"\nlocale = \"de-DE\"\nattachments = [\"csv\", \"xlsx\"]",
    );
    toml = toml.replace(
        "GROUP BY status ORDER BY status\"\n",
        "GROUP BY status ORDER BY status\"\n\
         chart = { type = \"bar\", x = \"status\", y = [\"orders\"], title = \"Orders by status\" }\n\
         totals = [\"orders\"]\n\
         [reports.sections.columns.orders]\nlabel = \"Bestellungen\"\nformat = \"integer\"\n",
    );
    app.write("reports.toml", &toml);
    let smtp = SmtpServer::start();
    let host = start(&app, &smtp, &[]).await;
    let next = report_handler::report::Schedule::parse("0 0 6 * * *")
        .unwrap()
        .next_after(chrono_tz::Europe::Berlin, Utc::now())
        .unwrap();
    assert!(tick(&host, next).await.succeeded());
    let got = smtp.wait_for(1, WITHIN).await;
    let msg = MessageParser::default().parse(&got[0].data).unwrap();
    let html = msg.body_html(0).unwrap().to_string();
    // The <img> refers to a cid: that an image part carries.
    let cid = html
        .split("src=\"cid:")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("an inline chart")
        .to_string();
    assert!(
        html.contains("alt=\"Chart: Orders by status. Highest:"),
        "{html}"
    );
    assert!(html.contains(">Bestellungen</th>") && html.contains(">Total</td>"));
    let image = msg
        .parts
        .iter()
        .find(|p| p.content_id() == Some(cid.as_str()))
        .expect("the image part named by the cid");
    assert_eq!(image.content_type().unwrap().ctype(), "image");
    let decoder = png::Decoder::new(std::io::Cursor::new(image.contents().to_vec()));
    let reader = decoder.read_info().expect("a PNG");
    let info = reader.info();
    assert!(info.width >= 600, "{}", info.width);
    assert_eq!(
        (info.width, info.height),
        (1280, 720),
        "drawn at 2x of 640x360"
    );
    assert!(html.contains("width=\"640\" height=\"360\""));
    // The workbook is attached and reads back.
    let xlsx = msg
        .attachments()
        .find(|a| a.attachment_name().is_some_and(|n| n.ends_with(".xlsx")))
        .expect("the workbook");
    let mut wb: Xlsx<_> =
        open_workbook_from_rs(std::io::Cursor::new(xlsx.contents().to_vec())).unwrap();
    let sheet = wb.worksheet_range("Orders by status").unwrap();
    assert_eq!(
        sheet.get_value((0, 1)),
        Some(&Data::String("Bestellungen".into()))
    );
    assert!(matches!(sheet.get_value((1, 1)), Some(Data::Float(_))));
    // The body lists what is attached.
    assert!(
        html.contains("charted-") && html.contains(".xlsx</td>"),
        "{html}"
    );
}
