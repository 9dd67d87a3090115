//! Per-recipient reports (`recipients_query`, issue #15) end to end: the real binary behind
//! the host emulator, the SMTP relay refusing or greylisting single recipients, the sample
//! SQLite database, and the ledger on SQLite or a shared PostgreSQL. Each recipient's email
//! must carry exactly the rows the section's SQL returns for their key, and each recipient
//! must get it exactly once.
//!
//! The recipients' addresses are in tests/secret-values.txt: the handler's logs name them only
//! masked (`a***@example.org`), so the secret sweep of scripts/test.sh proves none leaks.

use std::collections::BTreeSet;
use std::process::Command;

use chrono::{DateTime, Utc};
use mail_parser::{MessageParser, MimeHeaders};
use secrecy::SecretString;

use report_handler::data::{DataSource, QueryParams, RecipientKey};
use report_handler::delivery::{DeliveryState, Ledger, Target};
use report_handler::report::{ReportSet, Window};

use crate::support::host::{AppDir, Host, HostOptions, TimerVariant};
use crate::support::pg::TestDb;
use crate::support::smtp::SmtpServer;
use crate::support::wait::{QUIET, WITHIN};

const ANN: &str = "ann-lead-4b7e@example.org";
const BOB: &str = "bob-lead-91c2@example.org";
const CID: &str = "cid-lead-0d5a@example.org";

/// The section every recipient gets: the window's orders of customers in their country.
const SECTION: &str = "SELECT o.id, o.status, o.total_cents FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.country = :recipient_key AND o.created_at >= :start AND o.created_at < :end ORDER BY o.id";

/// Three country managers: Ann (DE), Bob (FR, no name: the subject shows his address), Cid (US).
fn three() -> String {
    format!(
        "SELECT '{ANN}' AS email, 'Ann' AS name, 'DE' AS key \
         UNION ALL SELECT '{BOB}', NULL, 'FR' \
         UNION ALL SELECT '{CID}', 'Cid', 'US'"
    )
}

fn toml(recipients_query: &str, extra: &str) -> String {
    format!(
        r#"
[[reports]]
name = "by-country"
title = "Orders"
schedule = "0 0 6 * * *"
window = "30d"
recipients_query = "{recipients_query}"
subject = "{{title}} for {{recipient}}"
{extra}

[[reports.sections]]
title = "Your orders"
query = "{SECTION}"
"#
    )
}

/// The next 06:00 UTC: a 30-day window before it always has orders in the sample database.
fn next_occurrence() -> DateTime<Utc> {
    report_handler::report::Schedule::parse("0 0 6 * * *")
        .unwrap()
        .next_after(chrono_tz::UTC, Utc::now())
        .unwrap()
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

async fn tick(host: &Host, at: DateTime<Utc>) -> crate::support::host::Invocation {
    host.timer("NightlyReport", TimerVariant::Scheduled, at)
        .await
}

async fn sqlite_ledger(app: &AppDir) -> Ledger {
    let url = format!("sqlite:{}", app.path().join("data/ledger.db").display());
    Ledger::connect(&SecretString::from(url)).await.unwrap()
}

/// A recipient's ledger row: `email:<address> key=<key>` (the key is not the address).
fn target(address: &str, key: &str) -> Target {
    Target::new("email", &format!("{address} key={key}")).unwrap()
}

/// The CSV the section gives for `key` when run directly on the app's sample database.
async fn expected_csv(app: &AppDir, text: &str, occ: DateTime<Utc>, key: &str) -> String {
    let set = ReportSet::parse(text, "reports.toml").unwrap();
    let report = &set.reports[0];
    let w = Window::for_occurrence(&report.timing(), occ);
    let url = format!("sqlite:{}", app.path().join("data/sample.sqlite").display());
    let ds =
        DataSource::from_url(&SecretString::from(url), std::time::Duration::from_secs(10)).unwrap();
    let params = QueryParams {
        start: w.start,
        end: w.end,
        date: w.date,
    };
    let table = ds
        .run_query_keyed(
            SECTION,
            &params,
            Some(&RecipientKey::Text(key.into())),
            10_000,
        )
        .await
        .unwrap();
    assert!(!table.rows.is_empty(), "the sample has {key} orders");
    report_handler::render::render_csv(&table)
}

/// The one email the relay accepted for `address`: its raw bytes.
fn email_to(smtp: &SmtpServer, address: &str) -> Vec<Vec<u8>> {
    smtp.received()
        .into_iter()
        .filter(|r| r.to.first().map(String::as_str) == Some(address))
        .map(|r| r.data)
        .collect()
}

fn csv_of(data: &[u8]) -> String {
    let msg = MessageParser::default().parse(data).unwrap();
    let csv = msg
        .attachments()
        .find(|a| a.attachment_name().is_some_and(|n| n.ends_with(".csv")))
        .expect("a CSV attachment");
    String::from_utf8_lossy(csv.contents()).into_owned()
}

/// No recipient address appears in what the handler logged (only masked ones).
fn assert_no_address_in(output: &str) {
    for a in [ANN, BOB, CID] {
        assert!(
            !output.contains(a),
            "a recipient's address appears in the handler's logs"
        );
    }
}

#[tokio::test]
async fn three_recipients_get_their_own_rows_once() {
    let app = AppDir::from_repo();
    let text = toml(&three(), "cc = [\"copy@example.com\"]");
    app.write("reports.toml", &text);
    let smtp = SmtpServer::start();
    let host = start(&app, &smtp, &[]).await;
    let occ = next_occurrence();
    let inv = tick(&host, occ).await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    let got = smtp.expect_exactly(3, WITHIN, QUIET).await;
    // Each email to one recipient (plus the static cc), with its own Message-ID.
    let mut ids = BTreeSet::new();
    for r in &got {
        assert_eq!(r.to.len(), 2, "the recipient and the cc");
        assert_eq!(r.to[1], "copy@example.com");
        let msg = MessageParser::default().parse(&r.data).unwrap();
        ids.insert(msg.message_id().unwrap().to_string());
        let to = msg
            .to()
            .unwrap()
            .first()
            .unwrap()
            .address()
            .unwrap()
            .to_string();
        assert_eq!(to, r.to[0], "To: names the one recipient");
    }
    assert_eq!(ids.len(), 3);
    // Each recipient's rows are exactly the SQL's for their key, and nobody else's.
    let mut all_rows = BTreeSet::new();
    for (address, key, subject) in [
        (ANN, "DE", "Orders for Ann".to_string()),
        (BOB, "FR", format!("Orders for {BOB}")),
        (CID, "US", "Orders for Cid".to_string()),
    ] {
        let mails = email_to(&smtp, address);
        assert_eq!(mails.len(), 1);
        let msg = MessageParser::default().parse(&mails[0]).unwrap();
        assert_eq!(msg.subject(), Some(subject.as_str()));
        let csv = csv_of(&mails[0]);
        assert_eq!(csv, expected_csv(&app, &text, occ, key).await);
        for line in csv.lines().skip(1) {
            assert!(all_rows.insert(line.to_string()), "a row in two emails");
        }
    }
    // Every recipient's row and the occurrence's own are sent; later ticks send nothing.
    let ledger = sqlite_ledger(&app).await;
    let rows = ledger.occurrence_rows("by-country", occ).await.unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.state == DeliveryState::Sent));
    assert!(tick(&host, occ).await.succeeded());
    assert!(
        tick(&host, occ + chrono::Duration::minutes(5))
            .await
            .succeeded()
    );
    smtp.expect_exactly(3, WITHIN, QUIET).await;
    assert_no_address_in(&host.output());
}

#[tokio::test]
async fn a_refused_or_invalid_recipient_is_settled_and_the_others_delivered() {
    let app = AppDir::from_repo();
    let query = format!("{} UNION ALL SELECT 'not an address', 'X', 'NL'", three());
    app.write("reports.toml", &toml(&query, ""));
    let smtp = SmtpServer::start();
    smtp.state()
        .knobs
        .reject_rcpt
        .insert(BOB.into(), (550, "5.1.1 no such user".into()));
    let host = start(&app, &smtp, &[]).await;
    let occ = next_occurrence();
    let inv = tick(&host, occ).await;
    // Two targets failed for good: the invocation says so (and the host may retry it).
    assert!(!inv.succeeded());
    smtp.expect_exactly(2, WITHIN, QUIET).await;
    assert_eq!(email_to(&smtp, ANN).len(), 1);
    assert_eq!(email_to(&smtp, CID).len(), 1);
    let ledger = sqlite_ledger(&app).await;
    let bob = ledger
        .get("by-country", &target(BOB, "FR"), occ)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bob.state, DeliveryState::Failed);
    assert!(!bob.retryable);
    let rows = ledger.occurrence_rows("by-country", occ).await.unwrap();
    let invalid = rows
        .iter()
        .find(|r| r.target.as_str().starts_with("email:invalid-"))
        .expect("the invalid row is recorded");
    assert_eq!(invalid.state, DeliveryState::Failed);
    assert!(!invalid.retryable);
    assert!(
        invalid
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("`not an address` is not an email address"),
        "{:?}",
        invalid.last_error
    );
    // The occurrence is settled: a retry of the invocation and later ticks send nothing and
    // ask the relay about nobody again.
    let rcpts_before = smtp.state().rcpt_log.len();
    assert!(tick(&host, occ).await.succeeded());
    assert!(
        tick(&host, occ + chrono::Duration::minutes(5))
            .await
            .succeeded()
    );
    smtp.expect_exactly(2, WITHIN, QUIET).await;
    assert_eq!(smtp.state().rcpt_log.len(), rcpts_before);
    assert_no_address_in(&host.output());
}

#[tokio::test]
async fn a_transient_failure_is_retried_for_that_recipient_only() {
    let app = AppDir::from_repo();
    app.write("reports.toml", &toml(&three(), ""));
    let smtp = SmtpServer::start();
    // Greylisted through every attempt of the first tick (the mailer tries 3 times).
    smtp.state().knobs.tempfail_rcpt.insert(CID.into(), 3);
    let host = start(&app, &smtp, &[]).await;
    let occ = next_occurrence();
    let inv = tick(&host, occ).await;
    assert!(!inv.succeeded(), "a recipient is still to deliver");
    smtp.expect_exactly(2, WITHIN, QUIET).await;
    let inv = tick(&host, occ + chrono::Duration::minutes(5)).await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    smtp.expect_exactly(3, WITHIN, QUIET).await;
    for a in [ANN, BOB, CID] {
        assert_eq!(email_to(&smtp, a).len(), 1);
    }
    let asked = |a: &str| smtp.state().rcpt_log.iter().filter(|r| *r == a).count();
    assert_eq!(
        (asked(ANN), asked(BOB)),
        (1, 1),
        "the others are not asked again"
    );
    let ledger = sqlite_ledger(&app).await;
    let own = ledger
        .get("by-country", &Target::occurrence(), occ)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.state, DeliveryState::Sent);
    assert_no_address_in(&host.output());
}

#[tokio::test]
async fn no_recipients_is_recorded_as_skipped() {
    let app = AppDir::from_repo();
    let query = format!("SELECT * FROM ({}) WHERE 1 = 0", three());
    app.write("reports.toml", &toml(&query, ""));
    let smtp = SmtpServer::start();
    let host = start(&app, &smtp, &[]).await;
    let occ = next_occurrence();
    let inv = tick(&host, occ).await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    smtp.expect_exactly(0, WITHIN, QUIET).await;
    let ledger = sqlite_ledger(&app).await;
    let own = ledger
        .get("by-country", &Target::occurrence(), occ)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.state, DeliveryState::Skipped);
    assert_eq!(
        own.last_error.as_deref(),
        Some("recipients_query returned no recipients")
    );
}

#[tokio::test]
async fn skip_if_empty_applies_per_recipient() {
    let app = AppDir::from_repo();
    // Nobody lives in country XX: that recipient's sections are empty.
    let query = format!(
        "{} UNION ALL SELECT 'dan@example.com', 'Dan', 'XX'",
        three()
    );
    app.write("reports.toml", &toml(&query, "skip_if_empty = true"));
    let smtp = SmtpServer::start();
    let host = start(&app, &smtp, &[]).await;
    let occ = next_occurrence();
    assert!(tick(&host, occ).await.succeeded());
    smtp.expect_exactly(3, WITHIN, QUIET).await;
    let ledger = sqlite_ledger(&app).await;
    let dan = ledger
        .get("by-country", &target("dan@example.com", "XX"), occ)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dan.state, DeliveryState::Skipped);
}

#[tokio::test]
async fn two_handlers_sharing_a_postgresql_ledger_send_each_recipient_once() {
    let Some(db) =
        TestDb::create("two_handlers_sharing_a_postgresql_ledger_send_each_recipient_once").await
    else {
        return;
    };
    let url = db.url().to_string();
    let app = AppDir::from_repo();
    app.write("reports.toml", &toml(&three(), ""));
    let smtp = SmtpServer::start();
    let a = start(&app, &smtp, &[("STATE_DATABASE_URL", url.clone())]).await;
    let b = start(&app, &smtp, &[("STATE_DATABASE_URL", url.clone())]).await;
    let occ = next_occurrence();
    for round in 0..3 {
        let at = occ + chrono::Duration::minutes(5 * round);
        let (ra, rb) = tokio::join!(tick(&a, at), tick(&b, at));
        assert!(
            ra.succeeded() && rb.succeeded(),
            "{:?} {:?}",
            ra.failure,
            rb.failure
        );
    }
    smtp.expect_exactly(3, WITHIN, QUIET).await;
    for addr in [ANN, BOB, CID] {
        assert_eq!(email_to(&smtp, addr).len(), 1);
    }
    assert_no_address_in(&a.output());
    assert_no_address_in(&b.output());
}

/// `handler ...` in the app root with the relay's settings, as an operator runs it.
fn handler(app: &AppDir, smtp: &SmtpServer, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_handler"));
    c.current_dir(app.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(smtp.settings())
        .env("SMTP_TIMEOUT", "3s")
        .args(args);
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn deliveries_resend_sends_one_recipient_again() {
    let app = AppDir::from_repo();
    app.write("reports.toml", &toml(&three(), ""));
    let smtp = SmtpServer::start();
    let occ = next_occurrence();
    {
        let host = start(&app, &smtp, &[]).await;
        assert!(tick(&host, occ).await.succeeded());
        smtp.expect_exactly(3, WITHIN, QUIET).await;
    }
    let when = occ.to_rfc3339();
    let (code, out, err) = handler(
        &app,
        &smtp,
        &[
            "deliveries",
            "resend",
            "by-country",
            &when,
            "--recipient",
            ANN,
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let got = smtp.expect_exactly(4, WITHIN, QUIET).await;
    let to_ann = email_to(&smtp, ANN);
    assert_eq!(to_ann.len(), 2, "Ann, and only Ann, got it again");
    let id = |d: &[u8]| {
        MessageParser::default()
            .parse(d)
            .unwrap()
            .message_id()
            .unwrap()
            .to_string()
    };
    assert_ne!(
        id(&to_ann[0]),
        id(&to_ann[1]),
        "a resend has its own Message-ID"
    );
    assert_eq!(csv_of(&to_ann[0]), csv_of(&to_ann[1]));
    assert_eq!(got.len(), 4);
    // The ledger records it as a manual resend, and `handler deliveries` shows it.
    let ledger = sqlite_ledger(&app).await;
    let ann = ledger
        .get("by-country", &target(ANN, "DE"), occ)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ann.origin, report_handler::delivery::Origin::Resend);
    assert_eq!(ann.attempts, 2);
    let (code, out, _) = handler(&app, &smtp, &["deliveries", "--report", "by-country"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.contains(&format!("-> email:{ANN}")) && l.contains("[resend]")),
        "the resend is listed"
    );
    // The whole occurrence again, by the time `handler deliveries` prints: every recipient.
    let printed = occ.format("%Y-%m-%d %H:%M:%S").to_string();
    let (code, out, err) = handler(
        &app,
        &smtp,
        &["deliveries", "resend", "by-country", &printed],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    smtp.expect_exactly(7, WITHIN, QUIET).await;
    // An address that is not a recipient, and an occurrence never delivered, are refused.
    let (code, _, err) = handler(
        &app,
        &smtp,
        &[
            "deliveries",
            "resend",
            "by-country",
            &when,
            "--recipient",
            "nobody@example.com",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("not among the recipients"), "{err}");
    let earlier = (occ - chrono::Duration::days(1)).to_rfc3339();
    let (code, _, err) = handler(
        &app,
        &smtp,
        &["deliveries", "resend", "by-country", &earlier],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no delivery"), "{err}");
    smtp.expect_exactly(7, WITHIN, QUIET).await;
}

#[tokio::test]
async fn report_run_previews_one_recipient() {
    let app = AppDir::from_repo();
    let text = toml(&three(), "");
    app.write("reports.toml", &text);
    let smtp = SmtpServer::start();
    let (code, out, err) = handler(
        &app,
        &smtp,
        &["report", "run", "by-country", "--recipient", ANN],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("Subject: Orders for Ann\n"), "{out}");
    assert!(out.contains("Your orders"), "{out}");
    // A preview sends nothing.
    smtp.expect_exactly(0, WITHIN, QUIET).await;
    let (code, _, err) = handler(
        &app,
        &smtp,
        &[
            "report",
            "run",
            "by-country",
            "--recipient",
            "nobody@example.com",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("not among the recipients"), "{err}");
    // `handler check` prepares the recipients query like the sections.
    let (_, out, _) = handler(&app, &smtp, &["check"]);
    assert!(
        out.contains("OK    SQL by-country (recipients_query): prepared read-only"),
        "{out}"
    );
    // With --send, only that recipient gets it.
    let (code, out, err) = handler(
        &app,
        &smtp,
        &["report", "run", "by-country", "--recipient", CID, "--send"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    smtp.expect_exactly(1, WITHIN, QUIET).await;
    assert_eq!(email_to(&smtp, CID).len(), 1);
}

/// `:recipient_key` binds on both engines with its type: an integer key compares with an
/// integer column, a text key with a text column, and without a key it is NULL (no rows).
#[tokio::test]
async fn the_recipient_key_binds_on_both_engines() {
    let today = Utc::now().date_naive();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.sqlite");
    report_handler::data::sample::ensure_sample_database(&path, today)
        .await
        .unwrap();
    let timeout = std::time::Duration::from_secs(10);
    let mut sources = vec![(
        "sqlite",
        DataSource::from_url(
            &SecretString::from(format!("sqlite:{}", path.display())),
            timeout,
        )
        .unwrap(),
    )];
    let db = TestDb::create("the_recipient_key_binds_on_both_engines").await;
    if let Some(db) = &db {
        report_handler::data::sample::load_sample_postgres(&db.secret_url(), today)
            .await
            .unwrap();
        sources.push((
            "postgres",
            DataSource::from_url(&db.secret_url(), timeout).unwrap(),
        ));
    }
    let epoch = DateTime::UNIX_EPOCH;
    let params = QueryParams {
        start: epoch,
        end: epoch,
        date: epoch.date_naive(),
    };
    let count = |t: &report_handler::data::Table| t.rows[0][0].to_plain();
    let mut seen = Vec::new();
    for (engine, ds) in &sources {
        let by_id = "SELECT COUNT(*) AS n FROM customers WHERE id = :recipient_key";
        let t = ds
            .run_query_keyed(by_id, &params, Some(&RecipientKey::Int(1)), 10)
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert_eq!(count(&t), "1", "{engine}");
        let by_country = "SELECT COUNT(*) AS n FROM customers WHERE country = :recipient_key";
        let de = ds
            .run_query_keyed(
                by_country,
                &params,
                Some(&RecipientKey::Text("DE".into())),
                10,
            )
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert_ne!(count(&de), "0", "{engine}");
        let none = ds
            .run_query_keyed(by_id, &params, None, 10)
            .await
            .unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert_eq!(count(&none), "0", "{engine}: NULL matches nothing");
        seen.push(count(&de));
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "both engines agree: {seen:?}"
    );
}

/// `?recipient_key=` on the API: a key allowed to use it gets exactly the rows that
/// recipient's email has, in both host modes; a key without `recipient_keys` gets 403, and a
/// malformed key a 400 naming the parameter.
#[tokio::test]
async fn the_api_answers_one_recipients_rows_for_keys_allowed_to_ask() {
    const OPS: &str = "recipient-ops-key-3e8a1c5f72-padded-32";
    const VIEWER: &str = "recipient-viewer-key-b61d0e9a4c-padded";
    let keys = serde_json::json!([
        {"name": "ops", "key": OPS, "reports": ["*"], "recipient_keys": true},
        {"name": "viewer", "key": VIEWER, "reports": ["*"]},
    ])
    .to_string();
    let app = AppDir::from_repo();
    let text = toml(&three(), "");
    app.write("reports.toml", &text);
    let smtp = SmtpServer::start();
    let host = start(&app, &smtp, &[("API_KEYS", keys)]).await;
    let occ = next_occurrence();
    let path = |key: &str| {
        format!(
            "/api/reports/by-country?date={}&format=csv&recipient_key={key}",
            occ.date_naive()
        )
    };
    let get = |path: String, key: &str| {
        crate::support::envelope::ClientRequest::get(&path).header("X-API-Key", key)
    };
    for country in ["DE", "FR"] {
        let req = get(path(country), OPS);
        let payload = host.http_payload(req.clone()).await;
        let forwarded = host.http_forwarded(req).await;
        assert_eq!(payload, forwarded, "the modes differ");
        assert_eq!(payload.status, 200, "{}", payload.body);
        assert_eq!(payload.body, expected_csv(&app, &text, occ, country).await);
    }
    let r = host.http_payload(get(path("DE"), VIEWER)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = host.http_payload(get(path("%20"), OPS)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("recipient_key")
    );
    assert!(smtp.received().is_empty(), "the API sends nothing");
}
