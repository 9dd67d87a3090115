//! The ledger in the Function app's own storage account, end to end: the real handler behind
//! the host emulator with `AzureWebJobsStorage` pointing at a real Azurite, a real SMTP relay,
//! and the emails the relay received. Also what happens without any writable ledger (a
//! read-only app root): the tick fails with what to do, and `handler check` says so.

use report_handler::delivery::Target;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use report_handler::delivery::{DeliveryState, Ledger, LedgerSettings};
use secrecy::SecretString;

use crate::support::azurite::{self, Azurite};
use crate::support::host::{AppDir, Host, HostOptions, TimerVariant};
use crate::support::smtp::{self, SmtpServer};
use crate::support::wait::{QUIET, WITHIN};

const REPORTS: &str = r#"
[[reports]]
name = "daily"
title = "Daily"
schedule = "0 0 6 * * *"
recipients = ["ops@example.com"]

[[reports.sections]]
title = "Orders"
query = "SELECT status, COUNT(*) AS n FROM orders WHERE created_at >= :start AND created_at < :end GROUP BY status ORDER BY status"
"#;

fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
}

/// The storage settings for the shared Azurite: literally `UseDevelopmentStorage=true` when
/// scripts/test.sh got Azurite's default port, else the same account's explicit connection
/// string on the port it got.
fn storage_settings(port: u16, table: &str) -> Vec<(String, String)> {
    let cs = if port == 10002 {
        "UseDevelopmentStorage=true".to_string()
    } else {
        eprintln!(
            "note: Azurite is not on 10002, so the explicit development connection string is used"
        );
        azurite::connection_string(port)
    };
    vec![
        ("AzureWebJobsStorage".into(), cs),
        ("LEDGER_TABLE".into(), table.into()),
    ]
}

async fn start(app: &AppDir, settings: &[(String, String)]) -> Host {
    let mut opts = HostOptions::new(app.path()).setting("SMTP_TIMEOUT", "3s");
    for (k, v) in settings {
        opts = opts.setting(k, v.clone());
    }
    Host::start(opts).await
}

fn with(mut s: Vec<(String, String)>, more: Vec<(String, String)>) -> Vec<(String, String)> {
    for (k, v) in more {
        s.retain(|(sk, _)| *sk != k);
        s.push((k, v));
    }
    s
}

async fn ledger(port: u16, table: &str) -> Ledger {
    let account =
        LedgerSettings::account_from_secret(&SecretString::from(azurite::connection_string(port)))
            .unwrap();
    Ledger::connect_storage(account, table, None).await.unwrap()
}

#[tokio::test]
async fn the_handler_keeps_its_ledger_in_table_storage_and_sends_once_per_occurrence() {
    let test = "the_handler_keeps_its_ledger_in_table_storage";
    let Some(port) = azurite::shared_port(test) else {
        return;
    };
    let table = azurite::unique_table(test);
    let app = AppDir::from_repo();
    app.write("reports.toml", REPORTS);
    let relay = SmtpServer::start();
    let settings = with(relay.settings(), storage_settings(port, &table));
    let host = start(&app, &settings).await;
    for (i, tick) in [
        at(26, 6, 0),
        at(26, 6, 5),
        at(26, 6, 10),
        at(27, 6, 0),
        at(27, 6, 5),
    ]
    .into_iter()
    .enumerate()
    {
        let inv = host
            .timer("NightlyReport", TimerVariant::Scheduled, tick)
            .await;
        assert!(inv.succeeded(), "tick {i}: {:?}", inv.failure);
    }
    assert_eq!(
        relay.settle(2, WITHIN, QUIET).await.len(),
        2,
        "one per occurrence"
    );
    let l = ledger(port, &table).await;
    for day in [26, 27] {
        let row = l
            .get("daily", &Target::occurrence(), at(day, 6, 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((row.state, row.attempts), (DeliveryState::Sent, 1));
        assert!(row.message_id.is_some());
    }
    assert!(
        !app.path().join("data/ledger.db").exists(),
        "no SQLite file under the app root"
    );
    let out = host.output();
    assert!(out.contains("Azure Table storage"), "{out}");
    assert!(!out.contains(azurite::ACCOUNT_KEY));

    // `handler deliveries` and `handler check` read the same settings and the same table.
    let run = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_handler"));
        c.current_dir(app.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("FUNCTIONS_WORKER_RUNTIME", "custom")
            .envs(settings.iter().map(|(k, v)| (k, v)))
            .args(args);
        let out = c.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        keep_for_sweep(&format!("cli-{}", args[0]), &text);
        (out.status.code(), text)
    };
    let (code, text) = run(&["deliveries"]);
    assert_eq!(code, Some(0), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("daily")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("2026-11-27 06:00:00") && lines[0].contains("sent"),
        "{text}"
    );
    let (_, text) = run(&["check"]);
    let line = text
        .lines()
        .find(|l| l.contains("ledger:"))
        .unwrap_or_else(|| panic!("no ledger line:\n{text}"));
    assert!(
        line.starts_with("OK") && line.contains("Azure Table storage") && line.contains(&table),
        "{text}"
    );
    assert!(!text.contains(azurite::ACCOUNT_KEY));
}

#[tokio::test]
async fn two_handlers_sharing_table_storage_send_once() {
    let test = "two_handlers_sharing_table_storage_send_once";
    let Some(port) = azurite::shared_port(test) else {
        return;
    };
    let table = azurite::unique_table(test);
    let app = AppDir::from_repo();
    app.write("reports.toml", REPORTS);
    let relay = SmtpServer::start();
    let settings = with(relay.settings(), storage_settings(port, &table));
    let a = start(&app, &settings).await;
    let b = start(&app, &settings).await;
    for round in 0..3 {
        let tick = at(26, 6, round * 5);
        let (ra, rb) = tokio::join!(
            a.timer("NightlyReport", TimerVariant::Scheduled, tick),
            b.timer("NightlyReport", TimerVariant::Scheduled, tick)
        );
        assert!(
            ra.succeeded() && rb.succeeded(),
            "{:?} {:?}",
            ra.failure,
            rb.failure
        );
    }
    relay.expect_exactly(1, WITHIN, QUIET).await;
}

#[cfg(unix)]
#[tokio::test]
async fn sigkill_after_the_claim_then_a_tick_after_the_lease_delivers_once() {
    let test = "sigkill_after_the_claim_table";
    let Some(port) = azurite::shared_port(test) else {
        return;
    };
    let table = azurite::unique_table(test);
    let app = AppDir::from_repo();
    app.write("reports.toml", REPORTS);
    let good = SmtpServer::start();
    let storage = storage_settings(port, &table);
    // A relay that never answers keeps the handler inside the send.
    let hung = with(
        with(good.settings(), storage.clone()),
        vec![
            (
                "SMTP_PORT".into(),
                smtp::silent_server(Duration::from_secs(60)).to_string(),
            ),
            ("SMTP_TIMEOUT".into(), "30s".into()),
            ("CLAIM_LEASE".into(), "3s".into()),
        ],
    );
    let host = std::sync::Arc::new(tokio::sync::Mutex::new(start(&app, &hung).await));
    let h = host.clone();
    let pending = tokio::spawn(async move {
        let g = h.lock().await;
        let payload = g.timer_payload("NightlyReport", TimerVariant::Scheduled, at(26, 6, 0), None);
        let fut = g.invoke("NightlyReport", &payload);
        tokio::time::timeout(Duration::from_secs(60), fut).await
    });
    let l = ledger(port, &table).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(row)) = l.get("daily", &Target::occurrence(), at(26, 6, 0)).await {
            assert_eq!(row.state, DeliveryState::Claimed);
            break;
        }
        assert!(Instant::now() < deadline, "never claimed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pending.abort();
    let mut g = host.lock().await;
    g.kill().await;
    assert!(g.wait_exit(Duration::from_secs(5)).await.is_some());
    drop(g);
    let healthy = with(
        with(good.settings(), storage),
        vec![("CLAIM_LEASE".into(), "3s".into())],
    );
    let h2 = start(&app, &healthy).await;
    let inv = h2
        .timer("NightlyReport", TimerVariant::Scheduled, at(26, 6, 5))
        .await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    // Part of the scenario: the crashed process's claim holds until CLAIM_LEASE (3 s) ends.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let inv = h2
        .timer("NightlyReport", TimerVariant::Scheduled, at(26, 6, 10))
        .await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    let inv = h2
        .timer("NightlyReport", TimerVariant::Scheduled, at(26, 6, 15))
        .await;
    assert!(inv.succeeded());
    assert_eq!(
        good.settle(1, WITHIN, QUIET).await.len(),
        1,
        "exactly once after the crash"
    );
    let row = l
        .get("daily", &Target::occurrence(), at(26, 6, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.state, row.attempts), (DeliveryState::Sent, 2));
}

#[tokio::test]
async fn storage_down_fails_the_tick_and_after_a_restart_it_delivers_once() {
    let test = "storage_down_fails_the_tick";
    let Some(mut emulator) = Azurite::start(test).await else {
        return;
    };
    let table = azurite::unique_table(test);
    let app = AppDir::from_repo();
    app.write("reports.toml", REPORTS);
    let relay = SmtpServer::start();
    let settings = with(
        relay.settings(),
        vec![
            (
                "AzureWebJobsStorage".into(),
                azurite::connection_string(emulator.port),
            ),
            ("LEDGER_TABLE".into(), table.clone()),
        ],
    );
    let host = start(&app, &settings).await;
    // A first tick with the storage up: the ledger is connected, nothing is due yet.
    let inv = host
        .timer("NightlyReport", TimerVariant::Scheduled, at(26, 5, 0))
        .await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    emulator.stop().await;
    let started = Instant::now();
    let inv = host
        .timer("NightlyReport", TimerVariant::Scheduled, at(26, 6, 0))
        .await;
    assert_eq!(inv.status, 500, "the host must retry: {:?}", inv.raw_body);
    assert!(started.elapsed() < Duration::from_secs(30), "bounded");
    assert!(
        relay
            .settle(0, Duration::from_millis(10), QUIET)
            .await
            .is_empty(),
        "nothing sent while the ledger is down"
    );
    let out = host.output();
    assert!(out.contains("unreachable"), "{out}");
    emulator.resume().await;
    for tick in [at(26, 6, 5), at(26, 6, 10)] {
        let inv = host
            .timer("NightlyReport", TimerVariant::Scheduled, tick)
            .await;
        assert!(inv.succeeded(), "{:?}", inv.failure);
    }
    relay.expect_exactly(1, WITHIN, QUIET).await;
    let row = ledger(emulator.port, &table)
        .await
        .get("daily", &Target::occurrence(), at(26, 6, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.state, row.attempts), (DeliveryState::Sent, 1));
}

#[tokio::test]
async fn a_read_only_app_root_fails_the_tick_and_check_names_both_ways_out() {
    let app = AppDir::from_repo();
    app.write("reports.toml", REPORTS);
    // `data` is a file, so the ledger's folder cannot be created: what a read-only app root
    // (a package) does to the default SQLite file. (Tests run as root, which ignores modes.)
    app.write("data", "not a folder");
    let relay = SmtpServer::start();
    let host = start(&app, &relay.settings()).await;
    let inv = host
        .timer("NightlyReport", TimerVariant::Scheduled, at(26, 6, 0))
        .await;
    assert_eq!(inv.status, 500);
    let out = host.output();
    assert!(
        out.contains("STATE_DATABASE_URL") && out.contains("AzureWebJobsStorage"),
        "{out}"
    );
    assert!(
        relay
            .settle(0, Duration::from_millis(10), QUIET)
            .await
            .is_empty()
    );

    let mut c = Command::new(env!("CARGO_BIN_EXE_handler"));
    c.current_dir(app.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FUNCTIONS_WORKER_RUNTIME", "custom")
        .arg("check");
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let at_ledger: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("ledger:"))
        .take(2)
        .collect();
    assert!(at_ledger[0].starts_with("FAIL"), "{text}");
    let both = at_ledger.join("\n");
    assert!(
        both.contains("STATE_DATABASE_URL") && both.contains("AzureWebJobsStorage"),
        "{text}"
    );
}

/// Keeps a command's output where the secret sweep (scripts/test.sh) looks.
fn keep_for_sweep(name: &str, text: &str) {
    if let Ok(dir) = std::env::var("REPORT_HANDLER_SWEEP_DIR") {
        let file = format!("{name}-{}.log", uuid::Uuid::new_v4().simple());
        let _ = std::fs::write(std::path::Path::new(&dir).join(file), text);
    }
}
