//! Destinations and alerts end to end (issue 16): the real binary behind the host emulator
//! posts to real HTTP receivers on loopback. Each scenario checks what the receivers got
//! (payload shapes, signatures, delivery ids), the ledger rows, and that the next tick sends
//! nothing twice; no receiver URL or signing secret may appear in anything the handler prints.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use report_handler::delivery::{DeliveryState, Ledger, Target};
use secrecy::SecretString;

use crate::support::host::{AppDir, Host, HostOptions, TimerVariant};
use crate::support::outbox;
use crate::support::receiver::{Receiver, Reply, URL_SECRET};
use crate::support::wait::{QUIET, WITHIN};

/// The signing secret the webhook tests use (in tests/secret-values.txt).
const SIGNING_SECRET: &str = "whsec-e2e-5b8d1f93c0";

const SECTIONS: &str = r#"
[[reports.sections]]
title = "Orders by status"
query = "SELECT status, COUNT(*) AS orders, SUM(total_cents) AS revenue FROM orders GROUP BY status ORDER BY status"

[reports.sections.columns.revenue]
label = "Revenue"
format = "currency"
currency = "EUR"
scale = 0.01

[[reports.sections]]
title = "Two columns"
query = "SELECT status, COUNT(*) AS n FROM orders GROUP BY status ORDER BY status"
"#;

fn reports(head: &str, destinations: &str) -> String {
    format!(
        r#"
[[reports]]
name = "daily"
title = "Daily"
schedule = "0 0 6 * * *"
{head}
{destinations}
{SECTIONS}"#
    )
}

fn webhook(setting: &str, signed: bool) -> String {
    let sign = if signed {
        "signing_secret_setting = \"HOOK_SECRET\"\n"
    } else {
        ""
    };
    format!("[[reports.destinations]]\ntype = \"webhook\"\nurl_setting = \"{setting}\"\n{sign}")
}

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, h, m, 0).unwrap()
}

async fn start(app: &AppDir, settings: &[(&str, String)]) -> Host {
    let mut opts = HostOptions::new(app.path())
        .setting(
            "MAIL_OUTBOX_DIR",
            app.path().join("outbox").display().to_string(),
        )
        .setting("HOOK_SECRET", SIGNING_SECRET);
    for (k, v) in settings {
        opts = opts.setting(k, v.clone());
    }
    Host::start(opts).await
}

async fn tick(host: &Host, when: DateTime<Utc>) -> crate::support::host::Invocation {
    host.timer("NightlyReport", TimerVariant::Scheduled, when)
        .await
}

async fn ledger(app: &AppDir) -> Ledger {
    let url = format!("sqlite:{}", app.path().join("data/ledger.db").display());
    Ledger::connect(&SecretString::from(url)).await.unwrap()
}

/// Nothing the handler printed (and no invocation answer) holds a URL's secret part or the
/// signing secret.
fn assert_no_secrets(host: &Host, invocations: &[&crate::support::host::Invocation]) {
    let mut all = host.output();
    for inv in invocations {
        all.push_str(&inv.raw_body);
        all.push_str(&format!("{:?}", inv.failure));
    }
    assert!(!all.contains(URL_SECRET), "a URL leaked:\n{all}");
    assert!(!all.contains(SIGNING_SECRET), "the signing secret leaked");
}

fn verify_signature(r: &crate::support::receiver::Received) {
    let ts = r.header("x-report-timestamp").expect("a timestamp header");
    let sig = r.header("x-report-signature").expect("a signature header");
    let mut signed = ts.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(&r.body);
    let mac = report_handler::delivery::ledger::table::client::hmac_sha256(
        SIGNING_SECRET.as_bytes(),
        &signed,
    );
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(sig, format!("sha256={hex}"));
    let age = Utc::now().timestamp() - ts.parse::<i64>().unwrap();
    assert!((0..300).contains(&age), "{age}");
}

#[tokio::test]
async fn a_signed_webhook_gets_the_api_json_and_the_same_delivery_id_on_a_retry() {
    let hook = Receiver::start(vec![Reply::Status(500)], Reply::Status(200)).await;
    let app = AppDir::from_repo();
    app.write(
        "reports.toml",
        &reports("", &webhook("ORDERS_WEBHOOK_URL", true)),
    );
    let host = start(&app, &[("ORDERS_WEBHOOK_URL", hook.url("hook"))]).await;
    let first = tick(&host, at(6, 0)).await;
    assert!(!first.succeeded(), "a 500 is a failed delivery");
    let second = tick(&host, at(6, 5)).await;
    assert!(
        second.succeeded(),
        "{:?} {:?}",
        second.failure,
        host.stdout()
    );
    let third = tick(&host, at(6, 10)).await;
    assert!(third.succeeded());
    let got = hook.received();
    assert_eq!(got.len(), 2, "one failed post, one retry, nothing after");
    assert_eq!(hook.accepted().len(), 1);
    let id = got[0].header("x-report-delivery-id").unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(got[1].header("x-report-delivery-id"), Some(id));
    for r in &got {
        assert_eq!(r.header("content-type"), Some("application/json"));
        verify_signature(r);
    }
    // The API's JSON for the window.
    let doc = got[1].json();
    assert_eq!(doc["report"], "daily");
    assert_eq!(doc["window"]["start"], "2026-11-25T00:00:00Z");
    assert_eq!(doc["window"]["end"], "2026-11-26T00:00:00Z");
    assert_eq!(doc["sections"][0]["title"], "Orders by status");
    assert_eq!(doc["sections"][0]["columns"][2]["label"], "Revenue");
    // The ledger: the destination's row sent with the delivery id, the occurrence settled.
    let l = ledger(&app).await;
    let target = Target::new("webhook", "ORDERS_WEBHOOK_URL").unwrap();
    let row = l.get("daily", &target, at(6, 0)).await.unwrap().unwrap();
    assert_eq!(row.state, DeliveryState::Sent);
    assert_eq!(row.message_id.as_deref(), Some(id));
    let own = l
        .get("daily", &Target::occurrence(), at(6, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.state, DeliveryState::Sent);
    assert_no_secrets(&host, &[&first, &second, &third]);
}

#[tokio::test]
async fn retry_after_within_the_budget_then_exactly_one_accepted_post() {
    let hook = Receiver::start(vec![Reply::RetryAfter(429, 1)], Reply::Status(200)).await;
    let app = AppDir::from_repo();
    app.write("reports.toml", &reports("", &webhook("HOOK_URL", false)));
    let host = start(&app, &[("HOOK_URL", hook.url("hook"))]).await;
    let inv = tick(&host, at(6, 0)).await;
    assert!(inv.succeeded(), "{:?} {:?}", inv.failure, host.stdout());
    assert!(tick(&host, at(6, 5)).await.succeeded());
    let got = hook.received();
    assert_eq!(got.len(), 2, "the 429 and the one retry after 1 s");
    assert_eq!(hook.accepted().len(), 1);
    assert_eq!(
        got[0].header("x-report-delivery-id"),
        got[1].header("x-report-delivery-id")
    );
    assert!(got[0].header("x-report-signature").is_none(), "unsigned");
    assert_no_secrets(&host, &[&inv]);
}

#[tokio::test]
async fn a_400_is_permanent_scrubbed_and_never_resent() {
    let hook = Receiver::start(vec![], Reply::Status(200)).await;
    // The receiver's error page echoes the URL it was called on.
    hook.set_default(Reply::Body(
        400,
        format!("invalid payload posted to {}", hook.url("hook")),
    ));
    let app = AppDir::from_repo();
    app.write("reports.toml", &reports("", &webhook("HOOK_URL", true)));
    let host = start(&app, &[("HOOK_URL", hook.url("hook"))]).await;
    let first = tick(&host, at(6, 0)).await;
    assert!(!first.succeeded());
    let again = tick(&host, at(6, 5)).await;
    assert!(
        again.succeeded(),
        "a permanent failure is settled, not retried"
    );
    assert_eq!(hook.received().len(), 1, "never resent");
    let l = ledger(&app).await;
    let row = l
        .get(
            "daily",
            &Target::new("webhook", "HOOK_URL").unwrap(),
            at(6, 0),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DeliveryState::Failed);
    assert!(!row.retryable);
    let error = row.last_error.unwrap();
    assert!(error.contains("HTTP 400"), "{error}");
    assert!(error.contains("invalid payload posted to"), "{error}");
    assert!(!error.contains(URL_SECRET), "{error}");
    assert_no_secrets(&host, &[&first, &again]);
}

#[tokio::test]
async fn a_hanging_receiver_is_cut_off_and_retried_on_a_later_tick() {
    let hook = Receiver::start(
        vec![Reply::Hang(Duration::from_secs(40))],
        Reply::Status(200),
    )
    .await;
    let app = AppDir::from_repo();
    app.write("reports.toml", &reports("", &webhook("HOOK_URL", false)));
    let host = start(&app, &[("HOOK_URL", hook.url("hook"))]).await;
    let started = std::time::Instant::now();
    let first = tick(&host, at(6, 0)).await;
    assert!(!first.succeeded());
    // Bounded: the handler's request timeout, far below the receiver's hang (not a timing
    // assertion on the handler's speed, only that it did not wait for the receiver).
    assert!(started.elapsed() < Duration::from_secs(35));
    let l = ledger(&app).await;
    let target = Target::new("webhook", "HOOK_URL").unwrap();
    let row = l.get("daily", &target, at(6, 0)).await.unwrap().unwrap();
    assert_eq!(row.state, DeliveryState::Failed);
    assert!(row.retryable, "a timeout is transient");
    assert!(
        row.last_error
            .as_deref()
            .unwrap_or("")
            .contains("timed out"),
        "{row:?}"
    );
    let second = tick(&host, at(6, 5)).await;
    assert!(second.succeeded(), "{:?}", second.failure);
    assert!(crate::support::wait::until(WITHIN, || hook.received().len() == 2).await);
    assert_eq!(
        hook.received()[1].answered,
        Some(200),
        "the retry was accepted"
    );
    assert_no_secrets(&host, &[&first, &second]);
}

#[tokio::test]
async fn email_and_two_webhooks_one_failing_each_delivered_once() {
    let good = Receiver::start(vec![], Reply::Status(200)).await;
    let flaky = Receiver::start(vec![], Reply::Status(503)).await;
    let app = AppDir::from_repo();
    let destinations = format!(
        "{}{}",
        webhook("GOOD_URL", true),
        webhook("FLAKY_URL", false)
    );
    app.write(
        "reports.toml",
        &reports("recipients = [\"ops@example.com\"]", &destinations),
    );
    let host = start(
        &app,
        &[
            ("GOOD_URL", good.url("good")),
            ("FLAKY_URL", flaky.url("flaky")),
        ],
    )
    .await;
    let outbox_dir = app.path().join("outbox");
    let first = tick(&host, at(6, 0)).await;
    assert!(!first.succeeded(), "one target still waits");
    assert_eq!(outbox::wait_for_eml(&outbox_dir, 1, WITHIN).len(), 1);
    assert_eq!(good.accepted().len(), 1);
    assert_eq!(flaky.received().len(), 1);
    // Still failing: only the flaky target is tried again.
    let second = tick(&host, at(6, 5)).await;
    assert!(!second.succeeded());
    assert_eq!(flaky.received().len(), 2);
    // Healed: delivered once, and nothing else repeated.
    flaky.set_default(Reply::Status(202));
    let third = tick(&host, at(6, 10)).await;
    assert!(third.succeeded(), "{:?}", third.failure);
    let fourth = tick(&host, at(6, 15)).await;
    assert!(fourth.succeeded());
    assert_eq!(flaky.accepted().len(), 1);
    assert_eq!(flaky.received().len(), 3);
    assert_eq!(good.received().len(), 1, "never repeated");
    assert!(
        crate::support::wait::holds_for(QUIET, || outbox::eml_files(&outbox_dir).len() == 1).await
    );
    let l = ledger(&app).await;
    let rows = l.occurrence_rows("daily", at(6, 0)).await.unwrap();
    let mut targets: Vec<(String, DeliveryState)> = rows
        .iter()
        .map(|r| (r.target.to_string(), r.state))
        .collect();
    targets.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        targets,
        vec![
            (String::new(), DeliveryState::Sent),
            ("email".into(), DeliveryState::Sent),
            ("webhook:FLAKY_URL".into(), DeliveryState::Sent),
            ("webhook:GOOD_URL".into(), DeliveryState::Sent),
        ]
    );
    assert_no_secrets(&host, &[&first, &second, &third, &fourth]);
}

#[tokio::test]
async fn teams_gets_an_adaptive_card_and_slack_block_kit() {
    let teams = Receiver::start(vec![], Reply::Status(202)).await;
    let slack = Receiver::start(vec![], Reply::Status(200)).await;
    let app = AppDir::from_repo();
    let destinations = "[[reports.destinations]]\ntype = \"teams\"\nurl_setting = \"TEAMS_WEBHOOK_SALES\"\n\
                        [[reports.destinations]]\ntype = \"slack\"\nurl_setting = \"SLACK_WEBHOOK\"\n";
    app.write(
        "reports.toml",
        &reports(
            "time_zone = \"Europe/Berlin\"\nmax_rows_in_body = 2",
            destinations,
        ),
    );
    let host = start(
        &app,
        &[
            ("TEAMS_WEBHOOK_SALES", teams.url("teams")),
            ("SLACK_WEBHOOK", slack.url("slack")),
        ],
    )
    .await;
    // 06:00 Berlin = 05:00Z.
    let inv = tick(&host, at(5, 0)).await;
    assert!(inv.succeeded(), "{:?} {:?}", inv.failure, host.stdout());
    assert_eq!(teams.received().len(), 1);
    assert_eq!(slack.received().len(), 1);

    assert!(teams.received()[0].path.starts_with("/teams/"));
    let m = teams.received()[0].json();
    assert_eq!(m["type"], "message");
    let a = &m["attachments"][0];
    assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &a["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    let version: f64 = card["version"].as_str().unwrap().parse().unwrap();
    assert!(version >= 1.4, "{version}");
    let body = card["body"].as_array().unwrap();
    assert!(body[0]["text"].as_str().unwrap().starts_with("Daily"));
    let texts: Vec<&str> = body.iter().filter_map(|b| b["text"].as_str()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Window: 2026-11-25 00:00 – 2026-11-26 00:00 (Europe/Berlin)")),
        "{texts:?}"
    );
    let table = body.iter().find(|b| b["type"] == "Table").expect("a Table");
    // Header row plus at most max_rows_in_body rows (plus totals, none here).
    assert!(table["rows"].as_array().unwrap().len() <= 3);
    assert_eq!(table["rows"][0]["cells"][2]["items"][0]["text"], "Revenue");
    assert!(
        body.iter().any(|b| b["items"][1]["type"] == "FactSet"),
        "the two-column section is a FactSet"
    );
    assert!(
        texts.iter().any(|t| t.contains("more rows not shown")),
        "{texts:?}"
    );

    let m = slack.received()[0].json();
    let blocks = m["blocks"].as_array().unwrap();
    assert!(blocks.len() <= 50);
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[1]["type"], "context");
    for b in blocks {
        let kind = b["type"].as_str().unwrap();
        assert!(["header", "context", "section"].contains(&kind), "{b}");
        if let Some(t) = b["text"]["text"].as_str() {
            assert!(t.chars().count() <= 3000);
        }
    }
    assert!(blocks.iter().any(|b| {
        b["text"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("*Orders by status*\n```"))
    }));

    let l = ledger(&app).await;
    let rows = l.occurrence_rows("daily", at(5, 0)).await.unwrap();
    let targets: Vec<String> = rows.iter().map(|r| r.target.to_string()).collect();
    assert!(
        targets.contains(&"teams:TEAMS_WEBHOOK_SALES".to_string()),
        "{targets:?}"
    );
    assert!(
        targets.contains(&"slack:SLACK_WEBHOOK".to_string()),
        "{targets:?}"
    );
    assert!(
        !targets.contains(&"email".to_string()),
        "no recipients, no email"
    );
    assert_no_secrets(&host, &[&inv]);
}

#[tokio::test]
async fn an_alert_sends_only_when_its_condition_holds() {
    for (condition, holds) in [
        (
            "SELECT COUNT(*) > 1000000000 FROM orders WHERE created_at >= :start AND created_at < :end",
            false,
        ),
        (
            "SELECT COUNT(*) >= 0 FROM orders WHERE created_at >= :start AND created_at < :end",
            true,
        ),
    ] {
        let hook = Receiver::start(vec![], Reply::Status(200)).await;
        let app = AppDir::from_repo();
        app.write(
            "reports.toml",
            &reports(
                &format!("recipients = [\"ops@example.com\"]\ncondition = \"{condition}\""),
                &webhook("HOOK_URL", false),
            ),
        );
        let host = start(&app, &[("HOOK_URL", hook.url("hook"))]).await;
        let inv = tick(&host, at(6, 0)).await;
        assert!(inv.succeeded(), "{:?} {:?}", inv.failure, host.stdout());
        assert!(tick(&host, at(6, 5)).await.succeeded());
        let outbox_dir = app.path().join("outbox");
        let l = ledger(&app).await;
        let rows = l.occurrence_rows("daily", at(6, 0)).await.unwrap();
        if holds {
            assert_eq!(hook.accepted().len(), 1);
            assert_eq!(outbox::wait_for_eml(&outbox_dir, 1, WITHIN).len(), 1);
            assert_eq!(rows.len(), 3, "{rows:?}");
        } else {
            assert!(hook.received().is_empty());
            assert!(outbox::eml_files(&outbox_dir).is_empty());
            assert_eq!(rows.len(), 1, "no target rows: {rows:?}");
            assert_eq!(rows[0].state, DeliveryState::Skipped);
            assert_eq!(rows[0].last_error.as_deref(), Some("condition false"));
        }
        assert_no_secrets(&host, &[&inv]);
    }
}

#[tokio::test]
async fn a_failing_condition_is_a_retryable_failure_never_a_skip() {
    let hook = Receiver::start(vec![], Reply::Status(200)).await;
    let app = AppDir::from_repo();
    app.write(
        "reports.toml",
        &reports(
            "condition = \"SELECT COUNT(*) > 1 FROM no_such_table\"",
            &webhook("HOOK_URL", false),
        ),
    );
    let host = start(&app, &[("HOOK_URL", hook.url("hook"))]).await;
    let inv = tick(&host, at(6, 0)).await;
    assert!(!inv.succeeded());
    let l = ledger(&app).await;
    let own = l
        .get("daily", &Target::occurrence(), at(6, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.state, DeliveryState::Failed);
    assert!(own.retryable);
    assert!(hook.received().is_empty());
}

#[tokio::test]
async fn check_and_a_manual_send_to_one_destination() {
    let teams = Receiver::start(vec![], Reply::Status(202)).await;
    let hook = Receiver::start(vec![], Reply::Status(200)).await;
    let app = AppDir::from_repo();
    let destinations = format!(
        "[[reports.destinations]]\ntype = \"teams\"\nurl_setting = \"TEAMS_WEBHOOK_SALES\"\n{}",
        webhook("HOOK_URL", true)
    );
    app.write(
        "reports.toml",
        &reports("recipients = [\"ops@example.com\"]", &destinations),
    );
    // The receivers run on this test's runtime: the command is awaited, never blocked on.
    let run = async |args: &[&str], extra: &[(&str, String)]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_handler"));
        c.current_dir(app.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MAIL_OUTBOX_DIR", app.path().join("outbox"))
            .env("HOOK_SECRET", SIGNING_SECRET)
            .env("TEAMS_WEBHOOK_SALES", teams.url("teams"))
            .env("HOOK_URL", hook.url("hook"))
            .args(args);
        for (k, v) in extra {
            c.env(k, v);
        }
        let out = c.output().await.unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(URL_SECRET), "{text}");
        assert!(!text.contains(SIGNING_SECRET), "{text}");
        (out.status.code(), text)
    };
    // check: both destinations resolve and are well formed; no request is sent.
    let (_, text) = run(&["check"], &[]).await;
    assert!(
        text.contains("OK    destination daily teams:TEAMS_WEBHOOK_SALES: TEAMS_WEBHOOK_SALES holds an http URL"),
        "{text}"
    );
    assert!(text.contains("signed with HOOK_SECRET"), "{text}");
    assert!(teams.received().is_empty() && hook.received().is_empty());
    // A non-loopback http URL and a missing setting fail, naming the setting only.
    let (_, text) = run(
        &["check"],
        &[(
            "TEAMS_WEBHOOK_SALES",
            format!("http://teams.example.test/{URL_SECRET}"),
        )],
    )
    .await;
    assert!(
        text.contains("FAIL  destination daily teams:TEAMS_WEBHOOK_SALES: TEAMS_WEBHOOK_SALES holds an http URL: only https"),
        "{text}"
    );
    // One destination now: only Teams is posted to, and the Teams row is sent.
    let (code, text) = run(
        &[
            "report",
            "run",
            "daily",
            "--date",
            "2026-11-25",
            "--send",
            "--destination",
            "teams",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("sent to teams:TEAMS_WEBHOOK_SALES"), "{text}");
    assert_eq!(teams.accepted().len(), 1);
    assert!(hook.received().is_empty());
    assert!(outbox::eml_files(&app.path().join("outbox")).is_empty());
    // Again: already sent.
    let (code, text) = run(
        &[
            "report",
            "run",
            "daily",
            "--date",
            "2026-11-25",
            "--send",
            "--destination",
            "teams",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("already sent"), "{text}");
    assert_eq!(teams.received().len(), 1);
    // A kind the report does not have.
    let (code, text) = run(
        &["report", "run", "daily", "--send", "--destination", "slack"],
        &[],
    )
    .await;
    assert_eq!(code, Some(2), "a usage error");
    assert!(text.contains("has no destination `slack`"), "{text}");
}

#[tokio::test]
async fn a_retry_of_a_partly_sent_alert_does_not_ask_the_condition_again() {
    use sqlx::ConnectOptions as _;
    let good = Receiver::start(vec![], Reply::Status(200)).await;
    let flaky = Receiver::start(vec![Reply::Status(503)], Reply::Status(200)).await;
    let app = AppDir::from_repo();
    let db = app.path().join("alerts.db");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE flags (v INTEGER NOT NULL); INSERT INTO flags VALUES (1);")
        .execute(&mut conn)
        .await
        .unwrap();
    app.write(
        "reports.toml",
        &format!(
            r#"
[[reports]]
name = "daily"
schedule = "0 0 6 * * *"
condition = "SELECT v FROM flags WHERE :start < :end"
{}{}
[[reports.sections]]
title = "Flags"
query = "SELECT v FROM flags"
"#,
            webhook("GOOD_URL", false),
            webhook("FLAKY_URL", false)
        ),
    );
    let host = start(
        &app,
        &[
            ("DATABASE_URL", format!("sqlite:{}", db.display())),
            ("GOOD_URL", good.url("good")),
            ("FLAKY_URL", flaky.url("flaky")),
        ],
    )
    .await;
    let first = tick(&host, at(6, 0)).await;
    assert!(!first.succeeded(), "the flaky target waits");
    assert_eq!(good.accepted().len(), 1);
    // The condition no longer holds, but half of the alert is out: the rest follows.
    sqlx::query("UPDATE flags SET v = 0")
        .execute(&mut conn)
        .await
        .unwrap();
    let second = tick(&host, at(6, 5)).await;
    assert!(
        second.succeeded(),
        "{:?} {:?}",
        second.failure,
        host.stdout()
    );
    assert_eq!(flaky.accepted().len(), 1);
    assert_eq!(good.received().len(), 1);
    // A new occurrence asks again, and now it is false.
    let next = tick(&host, at(6, 0) + chrono::Duration::days(1)).await;
    assert!(next.succeeded());
    assert_eq!(good.received().len(), 1);
    assert_eq!(flaky.received().len(), 2);
    assert_no_secrets(&host, &[&first, &second, &next]);
}

#[tokio::test]
async fn destination_settings_resolve_from_key_vault_and_are_cached() {
    use crate::support::vault::{FakeVault, StaticCredential};
    use report_handler::config::Settings;
    use report_handler::report::definition::{Destination, DestinationKind};
    use report_handler::secrets::{Secrets, SecretsSettings};
    use secrecy::ExposeSecret as _;

    let kv = FakeVault::start().await;
    let url = format!("https://teams.example.test/workflows/{URL_SECRET}");
    kv.set_secret("teams-url", &url);
    kv.set_secret("hook-key", SIGNING_SECRET);
    let mut s = Settings::from_pairs([
        (
            "TEAMS_WEBHOOK_SALES".to_string(),
            kv.reference("teams-url", None),
        ),
        ("HOOK_SECRET".to_string(), kv.reference("hook-key", None)),
        ("MISSING_IN_VAULT".to_string(), kv.reference("nope", None)),
    ]);
    s.set(
        "SSL_CERT_FILE",
        kv.ca_pem_path().to_string_lossy().to_string(),
    );
    let typed = SecretsSettings::from_settings(&s).unwrap();
    let secrets =
        Secrets::from_settings_with_credential(&typed, std::sync::Arc::new(StaticCredential))
            .unwrap();
    assert!(secrets.is_named_vault_reference("TEAMS_WEBHOOK_SALES"));
    let v = secrets.get_named("TEAMS_WEBHOOK_SALES").await.unwrap();
    assert_eq!(v.expose_secret(), url);
    let calls = secrets.vault_calls();
    assert_eq!(calls, 1);
    let _ = secrets.get_named("TEAMS_WEBHOOK_SALES").await.unwrap();
    assert_eq!(secrets.vault_calls(), calls, "served from the cache");
    // What `handler check` says: the setting, never the URL.
    let teams = Destination {
        kind: DestinationKind::Teams,
        url_setting: "TEAMS_WEBHOOK_SALES".into(),
        signing_secret_setting: None,
    };
    let ok = report_handler::delivery::destinations::check(&secrets, &teams)
        .await
        .unwrap();
    assert_eq!(
        ok,
        "TEAMS_WEBHOOK_SALES holds an https URL (a Key Vault reference)"
    );
    let hook = Destination {
        kind: DestinationKind::Webhook,
        url_setting: "MISSING_IN_VAULT".into(),
        signing_secret_setting: Some("HOOK_SECRET".into()),
    };
    let e = report_handler::delivery::destinations::check(&secrets, &hook)
        .await
        .unwrap_err();
    assert!(
        e.starts_with("MISSING_IN_VAULT: Key Vault secret 'nope'"),
        "{e}"
    );
    assert!(
        !e.contains(URL_SECRET) && !e.contains(SIGNING_SECRET),
        "{e}"
    );
}
