//! Fault injection, end to end and bounded: the handler behind the host emulator against SMTP
//! relays that fail in each way staff's relays do, and a SIGKILL in the middle of a delivery.
//! Each case checks the invocation status, the ledger row, and that the next tick after the
//! fault heals sends exactly the emails it should (never a duplicate).

use report_handler::delivery::Target;
use std::io::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use report_handler::delivery::{DeliveryState, Ledger};
use secrecy::SecretString;

use crate::support::host::{AppDir, ClientRequest, Host, HostOptions, TimerVariant};
use crate::support::pg::TestDb;
use crate::support::smtp::{self, SmtpServer};
use crate::support::wait::{QUIET, WITHIN};

const REPORTS: &str = r#"
[[reports]]
name = "daily"
title = "Daily"
schedule = "0 0 6 * * *"
recipients = ["ops@example.com", "boss@example.com"]

[[reports.sections]]
title = "Orders"
query = "SELECT status, COUNT(*) AS n FROM orders WHERE created_at >= :start AND created_at < :end GROUP BY status ORDER BY status"
"#;

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, h, m, 0).unwrap()
}

async fn start(app: &AppDir, settings: Vec<(String, String)>) -> Host {
    let mut opts = HostOptions::new(app.path())
        .setting("SMTP_TIMEOUT", "2s")
        .setting("CLAIM_LEASE", "3s");
    for (k, v) in settings {
        opts = opts.setting(&k, v);
    }
    Host::start(opts).await
}

fn relay_settings(relay: &SmtpServer) -> Vec<(String, String)> {
    relay.settings()
}

fn with(mut s: Vec<(String, String)>, k: &str, v: impl Into<String>) -> Vec<(String, String)> {
    s.retain(|(sk, _)| sk != k);
    s.push((k.to_string(), v.into()));
    s
}

async fn ledger(app: &AppDir) -> Ledger {
    let url = format!("sqlite:{}", app.path().join("data/ledger.db").display());
    Ledger::connect(&SecretString::from(url)).await.unwrap()
}

/// A relay that answers the greeting with 421 and hangs up.
fn greeting_421() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"421 4.3.2 Service not available, closing channel\r\n");
        }
    });
    port
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Refused,
    Greeting421,
    SilentServer,
    AllRecipientsRejected,
    UntrustedCertificate,
    WrongPassword,
}

#[tokio::test]
async fn smtp_faults_leave_the_right_ledger_state_and_never_a_duplicate() {
    for fault in [
        Fault::Refused,
        Fault::Greeting421,
        Fault::SilentServer,
        Fault::AllRecipientsRejected,
        Fault::UntrustedCertificate,
        Fault::WrongPassword,
    ] {
        let app = AppDir::from_repo();
        app.write("reports.toml", REPORTS);
        let good = SmtpServer::start();
        let base = relay_settings(&good);
        let (settings, retryable) = match fault {
            Fault::Refused => (
                with(base.clone(), "SMTP_PORT", smtp::closed_port().to_string()),
                true,
            ),
            Fault::Greeting421 => (
                with(base.clone(), "SMTP_PORT", greeting_421().to_string()),
                true,
            ),
            Fault::SilentServer => (
                with(
                    base.clone(),
                    "SMTP_PORT",
                    smtp::silent_server(Duration::from_secs(30)).to_string(),
                ),
                true,
            ),
            Fault::AllRecipientsRejected => {
                let mut st = good.state();
                st.knobs
                    .reject_rcpt
                    .insert("ops@example.com".into(), (550, "5.1.1 no such user".into()));
                st.knobs.reject_rcpt.insert(
                    "boss@example.com".into(),
                    (550, "5.1.1 no such user".into()),
                );
                (base.clone(), false)
            }
            Fault::UntrustedCertificate => {
                // Trust a CA that did not sign the relay's certificate.
                let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
                app.write("other-ca.pem", &other.cert.pem());
                (
                    with(
                        base.clone(),
                        "SSL_CERT_FILE",
                        app.path().join("other-ca.pem").display().to_string(),
                    ),
                    true,
                )
            }
            Fault::WrongPassword => (
                with(base.clone(), "SMTP_PASSWORD", "not-the-password"),
                true,
            ),
        };
        let mut host = start(&app, settings).await;
        let started = Instant::now();
        let inv = host
            .timer("NightlyReport", TimerVariant::Scheduled, at(6, 0))
            .await;
        assert_eq!(inv.status, 500, "{fault:?}: the host must count a failure");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{fault:?}: bounded"
        );
        assert!(host.is_running(), "{fault:?}: the handler survives");
        let row = ledger(&app)
            .await
            .get("daily", &Target::occurrence(), at(6, 0))
            .await
            .unwrap()
            .expect("a ledger row");
        assert_eq!(row.state, DeliveryState::Failed, "{fault:?}");
        assert_eq!(row.retryable, retryable, "{fault:?}: {:?}", row.last_error);
        assert!(row.last_error.is_some(), "{fault:?}");
        assert!(
            !row.last_error.unwrap().contains(smtp::PASSWORD),
            "{fault:?}"
        );
        // The fault heals (the host restarts the handler with the relay back).
        good.state().knobs.reject_rcpt.clear();
        host.kill().await;
        let host = start(&app, base.clone()).await;
        let inv = host
            .timer("NightlyReport", TimerVariant::Scheduled, at(6, 5))
            .await;
        assert!(inv.succeeded(), "{fault:?}: {:?}", inv.failure);
        let inv = host
            .timer("NightlyReport", TimerVariant::Scheduled, at(6, 10))
            .await;
        assert!(inv.succeeded());
        let expected = if retryable { 1 } else { 0 };
        assert_eq!(
            good.settle(expected, WITHIN, QUIET).await.len(),
            expected,
            "{fault:?}"
        );
        let row = ledger(&app)
            .await
            .get("daily", &Target::occurrence(), at(6, 0))
            .await
            .unwrap()
            .unwrap();
        let want = if retryable {
            DeliveryState::Sent
        } else {
            DeliveryState::Failed
        };
        assert_eq!(row.state, want, "{fault:?}");
        assert!(!host.output().contains(smtp::PASSWORD), "{fault:?}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sigkill_after_the_claim_before_the_send_loses_nothing() {
    let app = AppDir::from_repo();
    app.write("reports.toml", REPORTS);
    let good = SmtpServer::start();
    // A relay that never answers keeps the handler inside the send.
    let hung = with(
        relay_settings(&good),
        "SMTP_PORT",
        smtp::silent_server(Duration::from_secs(60)).to_string(),
    );
    let hung = with(hung, "SMTP_TIMEOUT", "30s");
    let mut opts = HostOptions::new(app.path()).setting("CLAIM_LEASE", "3s");
    for (k, v) in hung {
        opts = opts.setting(&k, v);
    }
    let host = std::sync::Arc::new(tokio::sync::Mutex::new(Host::start(opts).await));
    let h = host.clone();
    let pending = tokio::spawn(async move {
        let g = h.lock().await;
        let payload = g.timer_payload("NightlyReport", TimerVariant::Scheduled, at(6, 0), None);
        let fut = g.invoke("NightlyReport", &payload);
        tokio::time::timeout(Duration::from_secs(60), fut).await
    });
    // Wait until the claim is in the ledger, then SIGKILL (what the host does on shutdown).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if app.path().join("data/ledger.db").exists()
            && let Ok(Some(row)) = ledger(&app)
                .await
                .get("daily", &Target::occurrence(), at(6, 0))
                .await
        {
            assert_eq!(row.state, DeliveryState::Claimed);
            break;
        }
        assert!(Instant::now() < deadline, "never claimed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Killing through the emulator's handle: abort the waiting invocation first.
    pending.abort();
    let mut g = host.lock().await;
    g.kill().await;
    assert!(g.wait_exit(Duration::from_secs(5)).await.is_some());
    drop(g);
    // Restart with a healthy relay. Inside the lease the claim still blocks (another process
    // could be alive); after it, the next tick delivers exactly once.
    let h2 = start(&app, relay_settings(&good)).await;
    let inv = h2
        .timer("NightlyReport", TimerVariant::Scheduled, at(6, 5))
        .await;
    assert!(inv.succeeded());
    // Part of the scenario: the crashed process's claim holds until CLAIM_LEASE (3 s) ends.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let inv = h2
        .timer("NightlyReport", TimerVariant::Scheduled, at(6, 10))
        .await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    assert_eq!(good.wait_for(1, WITHIN).await.len(), 1, "{:?}", inv.logs);
    let inv = h2
        .timer("NightlyReport", TimerVariant::Scheduled, at(6, 15))
        .await;
    assert!(inv.succeeded());
    assert_eq!(
        good.settle(1, WITHIN, QUIET).await.len(),
        1,
        "exactly once after the crash"
    );
    let row = ledger(&app)
        .await
        .get("daily", &Target::occurrence(), at(6, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DeliveryState::Sent);
    assert_eq!(row.attempts, 2);
}

/// A report query on PostgreSQL whose backend is terminated mid-query (what a database restart
/// does to running statements): the request gets a 503, and the handler keeps serving.
#[tokio::test]
async fn a_database_connection_dropped_mid_query_gives_503_and_the_handler_keeps_serving() {
    let Some(db) = TestDb::create(
        "a_database_connection_dropped_mid_query_gives_503_and_the_handler_keeps_serving",
    )
    .await
    else {
        return;
    };
    // Watched and terminated from outside the test database.
    let admin = sqlx::PgPool::connect(db.admin_url()).await.unwrap();
    let app = AppDir::from_repo();
    app.write(
        "reports.toml",
        r#"
[[reports]]
name = "slow"
title = "Slow"
schedule = "0 0 6 * * *"
recipients = ["ops@example.com"]

[[reports.sections]]
title = "Sleep"
query = "SELECT 1 AS one, pg_sleep(5) IS NOT NULL AS slept WHERE :start < :end"
"#,
    );
    let host = Host::start(
        HostOptions::new(app.path())
            .setting("API_KEYS", "k-faults-test-key-padded-to-32-chars")
            .setting("DATABASE_URL", db.url()),
    )
    .await;
    let req = ClientRequest::get("/api/reports/slow?date=2026-11-01")
        .header("X-API-Key", "k-faults-test-key-padded-to-32-chars");
    let pending = {
        let r = req.clone();
        let h = &host;
        async move { h.http_forwarded(r).await }
    };
    let killer = async {
        // Wait for the report's backend to be running the sleep, then terminate it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
            )
            .bind(db.name())
            .fetch_one(&admin)
            .await
            .unwrap();
            if n > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the query never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()")
            .bind(db.name())
            .execute(&admin)
            .await
            .unwrap();
    };
    let (resp, ()) = tokio::join!(pending, killer);
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert!(resp.header("retry-after").is_some());
    let list = host
        .http_forwarded(
            ClientRequest::get("/api/reports")
                .header("X-API-Key", "k-faults-test-key-padded-to-32-chars"),
        )
        .await;
    assert_eq!(list.status, 200, "the handler keeps serving");
}
