//! A new install's first tick blocks nothing: occurrences from before a report first appeared
//! are not recorded as missed, `handler report run --send` sends what a tick skipped, a sent
//! occurrence needs `--resend`, and a command asked to send that sent nothing exits non-zero.
//! The real binary behind the host emulator, the ledger in the app's SQLite file, mail to the
//! outbox, and the real `handler` command line on the same app root.

use std::process::Command;

use chrono::{DateTime, TimeZone, Utc};

use crate::support::host::{AppDir, Host, HostOptions, TimerVariant};

const KEY: &str = "first-tick-test-key-padded-to-32-chars";

const REPORTS: &str = r#"
[[reports]]
name = "daily"
title = "Daily"
schedule = "0 0 6 * * *"
time_zone = "UTC"
recipients = ["ops@example.com"]
catch_up = "2h"

[[reports.sections]]
title = "One"
query = "SELECT 1 AS one WHERE :start < :end"
"#;

fn utc(d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap()
}

fn handler(app: &AppDir, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_handler"))
        .current_dir(app.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn outbox(app: &AppDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(app.path().join("outbox"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".eml"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_fresh_ledger_records_nothing_before_the_first_tick_and_manual_sends_work() {
    let app = AppDir::from_repo();
    app.write("reports.toml", REPORTS);
    let host = Host::start(HostOptions::new(app.path()).setting("API_KEYS", KEY)).await;

    // The first tick ever, at 12:00 on the 10th: the 06:00 occurrences of the days before
    // (and today's, older than catch_up) happened before the report existed here.
    let inv = host
        .timer("NightlyReport", TimerVariant::Scheduled, utc(10, 12))
        .await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    assert!(
        !inv.logs.iter().any(|l| l.contains("missed")),
        "no warning about occurrences from before the install: {:?}",
        inv.logs
    );
    assert!(
        inv.logs
            .iter()
            .any(|l| l.contains("daily: sent 0, skipped 0, failed 0")),
        "one summary line per tick: {:?}",
        inv.logs
    );
    let (code, out, _) = handler(&app, &["deliveries"]);
    assert_eq!(code, 0);
    assert!(out.contains("no deliveries recorded yet"), "{out}");

    // So the report for the 9th (occurrence 06:00 on the 10th) can be sent by hand: once.
    let (code, out, err) = handler(
        &app,
        &["report", "run", "daily", "--date", "2026-11-09", "--send"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("daily: sent"), "{out}");
    assert_eq!(outbox(&app).len(), 1);
    // Asked again: nothing sent, a non-zero exit that says why and how.
    let (code, out, err) = handler(
        &app,
        &["report", "run", "daily", "--date", "2026-11-09", "--send"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("nothing sent") && err.contains("already sent"),
        "{err}"
    );
    assert!(err.contains("--resend"), "{err}");
    assert_eq!(outbox(&app).len(), 1);
    // --resend sends it again, as its own email, recorded as a resend.
    let (code, out, err) = handler(
        &app,
        &["report", "run", "daily", "--date", "2026-11-09", "--resend"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let files = outbox(&app);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().any(|f| f.contains("-resend")), "{files:?}");
    let ids: Vec<String> = files
        .iter()
        .map(|f| {
            let raw = std::fs::read_to_string(app.path().join("outbox").join(f)).unwrap();
            raw.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_ne!(ids[0], ids[1], "a resend has its own Message-ID");
    let (_, out, _) = handler(&app, &["deliveries"]);
    assert!(out.contains("resend"), "{out}");

    // Two days later, a tick after an outage: the 06:00 occurrences of the 11th and the 12th
    // (since the report was first seen) are missed by more than catch_up: recorded as skipped.
    let inv = host
        .timer("NightlyReport", TimerVariant::Scheduled, utc(12, 12))
        .await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    assert!(
        inv.logs
            .iter()
            .any(|l| l.contains("daily: sent 0, skipped 2, failed 0")),
        "{:?}",
        inv.logs
    );
    assert_eq!(outbox(&app).len(), 2);
    // A skipped occurrence is sent by --send, once.
    let (code, out, err) = handler(
        &app,
        &["report", "run", "daily", "--date", "2026-11-10", "--send"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(outbox(&app).len(), 3);
    let (code, _, err) = handler(
        &app,
        &["report", "run", "daily", "--date", "2026-11-10", "--send"],
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(outbox(&app).len(), 3);
    // The next tick does not touch what was sent by hand.
    let inv = host
        .timer("NightlyReport", TimerVariant::Scheduled, utc(12, 12))
        .await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    assert_eq!(outbox(&app).len(), 3);
}

#[test]
fn check_outside_the_app_root_says_what_the_app_root_is() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_handler"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.matches("FAIL").count(),
        1,
        "one FAIL, not a cascade: {stdout}"
    );
    assert!(stdout.contains("has no host.json"), "{stdout}");
    assert!(stdout.contains("FUNCTIONS_APP_ROOT_PATH"), "{stdout}");
}

#[test]
fn check_puts_each_reports_file_problem_on_its_fail_line() {
    let app = AppDir::from_repo();
    app.write(
        "reports.toml",
        &REPORTS.replace("time_zone = \"UTC\"", "time_zone = \"Mars/Olympus\""),
    );
    let (code, out, _) = handler(&app, &["check", "--offline"]);
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("Mars/Olympus") || l.contains("time_zone"))
        .unwrap_or_default();
    assert!(
        line.starts_with("FAIL  reports.toml:6: reports[0].time_zone:"),
        "{out}"
    );
}
