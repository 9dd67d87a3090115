//! The soak of the hardening issue (run by `scripts/soak.sh`, not by the default test run):
//! SOAK_SECONDS (default 300) of mixed API traffic — valid keys, invalid keys, bad parameters,
//! conditional requests, both host modes — with a tick every few seconds, against a real
//! PostgreSQL for both the report data and the ledger. Asserts: no status other than the
//! expected ones, bounded RSS and file-descriptor growth, every tick's occurrence delivered
//! exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};

use crate::support::host::{AppDir, ClientRequest, Host, HostOptions, TimerVariant};
use crate::support::pg::TestDb;
use crate::support::smtp;

const KEY: &str = "soak-test-key-padded-to-32-chars";

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "a 5-minute soak; run with scripts/soak.sh"]
async fn soak_mixed_traffic_and_ticks() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let data_db = TestDb::create("soak_data")
        .await
        .expect("scripts/soak.sh sets TEST_DATABASE_URL");
    let state_db = TestDb::create("soak_state")
        .await
        .expect("scripts/soak.sh sets TEST_DATABASE_URL");
    let today = Utc::now().date_naive();
    report_handler::data::sample::load_sample_postgres(&data_db.secret_url(), today)
        .await
        .unwrap();
    let app = AppDir::from_repo();
    let reports = std::fs::read_to_string(app.path().join("reports.toml")).unwrap();
    // Plus a report due every minute of the accelerated tick clock.
    app.write(
        "reports.toml",
        &format!(
            "{reports}\n[[reports]]\nname = \"minutely\"\ntitle = \"Minutely\"\nschedule = \"0 * * * * *\"\nwindow = \"1h\"\ncatch_up = \"30s\"\nrecipients = [\"ops@example.com\"]\n\n[[reports.sections]]\ntitle = \"Orders\"\nquery = \"SELECT status, COUNT(*) AS n FROM orders WHERE created_at >= :start AND created_at < :end GROUP BY status ORDER BY status\"\n"
        ),
    );
    let relay = smtp::SmtpServer::start();
    let mut opts = HostOptions::new(app.path())
        .setting("API_KEYS", KEY)
        .setting("DATABASE_URL", data_db.url())
        .setting("STATE_DATABASE_URL", state_db.url())
        .setting("RUST_LOG", "warn");
    for (k, v) in relay.settings() {
        opts = opts.setting(&k, v);
    }
    let host = Arc::new(Host::start(opts).await);
    let pid = host.pid().unwrap();

    // Warm up, then take the baseline.
    for _ in 0..50 {
        host.http_forwarded(ClientRequest::get("/api/reports").header("X-API-Key", KEY))
            .await;
    }
    let rss_start = proc_status(pid, "VmRSS:");
    let fds_start = fd_count(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for worker in 0..6u32 {
        let host = host.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut statuses: BTreeMap<(String, u16), u64> = BTreeMap::new();
            let mut unexpected = Vec::new();
            let mut i = 0u64;
            let mut etag: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
                    + chrono::Duration::days((i % 20) as i64);
                let (kind, req, ok): (&str, ClientRequest, &[u16]) = match (i + worker as u64) % 6 {
                    0 => (
                        "list",
                        ClientRequest::get("/api/reports").header("X-API-Key", KEY),
                        &[200],
                    ),
                    1 => (
                        "report",
                        ClientRequest::get(&format!("/api/reports/daily-sales?date={day}"))
                            .header("X-API-Key", KEY),
                        &[200],
                    ),
                    2 => (
                        "bad-key",
                        ClientRequest::get("/api/reports").header("X-API-Key", "nope"),
                        &[401],
                    ),
                    3 => (
                        "bad-param",
                        ClientRequest::get("/api/reports/daily-sales?date=2026-13-01")
                            .header("X-API-Key", KEY),
                        &[400],
                    ),
                    4 => {
                        let mut r = ClientRequest::get("/api/reports/daily-sales?date=2026-11-03")
                            .header("X-API-Key", KEY);
                        if let Some(e) = &etag {
                            r = r.header("If-None-Match", e);
                        }
                        ("conditional", r, &[200, 304])
                    }
                    _ => (
                        "csv",
                        ClientRequest::get(&format!(
                            "/api/reports/daily-sales?date={day}&format=csv&section=2"
                        ))
                        .header("X-API-Key", KEY),
                        &[200],
                    ),
                };
                let resp = tokio::time::timeout(Duration::from_secs(30), async {
                    if i.is_multiple_of(2) {
                        host.http_payload(req).await
                    } else {
                        host.http_forwarded(req).await
                    }
                })
                .await;
                match resp {
                    Ok(r) => {
                        if kind == "conditional" && r.status == 200 {
                            etag = r.header("etag").map(str::to_string);
                        }
                        *statuses.entry((kind.to_string(), r.status)).or_default() += 1;
                        if !ok.contains(&r.status) {
                            unexpected.push(format!("{kind}: {} {}", r.status, r.body));
                        }
                    }
                    Err(_) => unexpected.push(format!("{kind}: timed out")),
                }
            }
            (statuses, unexpected)
        }));
    }
    // Ticks every 3 s; the tick clock advances one minute per tick (an accelerated day).
    let mut tick_at = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 30).unwrap();
    let mut ticks = 0u64;
    let mut failed_ticks = 0u64;
    while Instant::now() < deadline {
        tick_at += chrono::Duration::minutes(1);
        let inv = host
            .timer("NightlyReport", TimerVariant::Scheduled, tick_at)
            .await;
        ticks += 1;
        if !inv.succeeded() {
            failed_ticks += 1;
            eprintln!("tick failed: {:?}", inv.failure);
        }
        // Part of the scenario: the tick cadence.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut totals: BTreeMap<(String, u16), u64> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for c in clients {
        let (s, u) = c.await.unwrap();
        for (k, v) in s {
            *totals.entry(k).or_default() += v;
        }
        unexpected.extend(u);
    }
    let rss_end = proc_status(pid, "VmRSS:");
    let rss_peak = proc_status(pid, "VmHWM:");
    let fds_end = fd_count(pid);
    // Each tick made one new occurrence of `minutely` due; daily-sales fires at 05:00Z.
    let expected =
        ticks + u64::from(tick_at >= Utc.with_ymd_and_hms(2026, 11, 26, 5, 0, 0).unwrap());
    let emails = relay
        .wait_for(expected as usize, Duration::from_secs(30))
        .await
        .len() as u64;
    let emails_final = relay
        .settle(
            expected as usize,
            Duration::ZERO,
            Duration::from_millis(500),
        )
        .await
        .len() as u64;
    let requests: u64 = totals.values().sum();
    println!(
        "SOAK seconds={seconds} requests={requests} ticks={ticks} failed_ticks={failed_ticks} emails={emails_final} expected_emails={expected}"
    );
    println!(
        "SOAK rss_kb start={rss_start} end={rss_end} peak={rss_peak} fds start={fds_start} end={fds_end}"
    );
    for ((kind, status), n) in &totals {
        println!("SOAK status {kind} {status} {n}");
    }
    assert!(
        unexpected.is_empty(),
        "unexpected responses: {:?}",
        &unexpected[..unexpected.len().min(10)]
    );
    assert_eq!(failed_ticks, 0);
    assert_eq!(emails, expected);
    assert_eq!(emails_final, expected, "no duplicate email");
    assert!(
        rss_end < rss_start + 40 * 1024,
        "RSS grew from {rss_start} kB to {rss_end} kB"
    );
    assert!(
        fds_end <= fds_start + 16,
        "fds grew from {fds_start} to {fds_end}"
    );
}
