//! The delivery ledger on all three backends: a real SQLite file; a real PostgreSQL when
//! `TEST_DATABASE_URL` is set (each test in its own freshly created database, [`TestDb`]); and
//! Azure Table storage on a real Azurite when `TEST_AZURITE_TABLE_PORT` is set (each test in
//! its own table). Every scenario runs on each.

use report_handler::delivery::Target as LedgerTarget;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use report_handler::delivery::ledger::{Claim, DeliveryState, Ledger, LedgerSettings};
use secrecy::SecretString;

use crate::support::azurite;
use crate::support::pg::TestDb;

const LEASE: Duration = Duration::from_secs(600);

fn t(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, h, m, 0).unwrap()
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

/// A fresh SQLite ledger file in a nested directory that does not exist yet.
async fn sqlite() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("data/sub/ledger.db").display());
    (dir, url)
}

/// One backend under test: a SQL URL, or a storage connection string and a table.
#[derive(Clone)]
struct Target {
    url: String,
    table: Option<String>,
}

impl Target {
    /// A new handle on the ledger (a second call is a second "process").
    async fn connect(&self) -> Ledger {
        match &self.table {
            None => Ledger::connect(&secret(&self.url)).await.unwrap(),
            Some(table) => {
                let account = LedgerSettings::account_from_secret(&secret(&self.url)).unwrap();
                Ledger::connect_storage(account, table, None).await.unwrap()
            }
        }
    }
}

/// Runs `scenario` against a fresh SQLite file and, if configured, a fresh PostgreSQL database
/// and a fresh table in Azurite.
async fn on_all<F, Fut>(test: &str, scenario: F)
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = ()>,
{
    let (_dir, url) = sqlite().await;
    scenario(Target { url, table: None }).await;
    if let Some(db) = TestDb::create(test).await {
        scenario(Target {
            url: db.url().to_string(),
            table: None,
        })
        .await;
    }
    if let Some(port) = azurite::shared_port(test) {
        scenario(Target {
            url: azurite::connection_string(port),
            table: Some(azurite::unique_table(test)),
        })
        .await;
    }
}

#[tokio::test]
async fn a_claim_then_sent_is_done() {
    on_all("a_claim_then_sent_is_done", |target| async move {
        let l = target.connect().await;
        assert_eq!(
            l.claim(
                "sales",
                &LedgerTarget::occurrence(),
                t(6, 0),
                t(6, 1),
                LEASE
            )
            .await
            .unwrap(),
            Claim::Claimed { attempt: 1 }
        );
        let row = l
            .get("sales", &LedgerTarget::occurrence(), t(6, 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.state, DeliveryState::Claimed);
        assert_eq!(row.lease_until, Some(t(6, 11)));
        assert_eq!(row.claimed_at, t(6, 1));

        // A live claim held by someone else.
        assert_eq!(
            l.claim(
                "sales",
                &LedgerTarget::occurrence(),
                t(6, 0),
                t(6, 2),
                LEASE
            )
            .await
            .unwrap(),
            Claim::Busy
        );

        let rejected = vec!["bad@example.com: permanent error (550): no".to_string()];
        l.mark_sent(
            "sales",
            &LedgerTarget::occurrence(),
            t(6, 0),
            "<id@example.com>",
            3,
            &rejected,
            t(6, 3),
        )
        .await
        .unwrap();
        assert_eq!(
            l.claim(
                "sales",
                &LedgerTarget::occurrence(),
                t(6, 0),
                t(7, 0),
                LEASE
            )
            .await
            .unwrap(),
            Claim::AlreadyDone(DeliveryState::Sent)
        );
        let row = l
            .get("sales", &LedgerTarget::occurrence(), t(6, 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.state, DeliveryState::Sent);
        assert_eq!(row.message_id.as_deref(), Some("<id@example.com>"));
        assert_eq!(row.recipients, 3);
        assert_eq!(row.rejected, rejected);
        assert_eq!(row.attempts, 1);
        assert_eq!(row.lease_until, None);
        assert_eq!(row.updated_at, t(6, 3));
        assert!(row.last_error.unwrap().contains("bad@example.com"));

        // Other occurrences and reports are independent.
        assert_eq!(
            l.claim(
                "sales",
                &LedgerTarget::occurrence(),
                t(7, 0),
                t(7, 0),
                LEASE
            )
            .await
            .unwrap(),
            Claim::Claimed { attempt: 1 }
        );
        assert_eq!(
            l.claim(
                "stock",
                &LedgerTarget::occurrence(),
                t(6, 0),
                t(7, 0),
                LEASE
            )
            .await
            .unwrap(),
            Claim::Claimed { attempt: 1 }
        );
        assert!(
            l.get("nope", &LedgerTarget::occurrence(), t(6, 0))
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn an_expired_lease_can_be_taken_over() {
    on_all("an_expired_lease_can_be_taken_over", |target| async move {
        let l = target.connect().await;
        let lease = Duration::from_secs(60);
        assert_eq!(
            l.claim("r", &LedgerTarget::occurrence(), t(2, 0), t(2, 0), lease)
                .await
                .unwrap(),
            Claim::Claimed { attempt: 1 }
        );
        // The holder "crashed": still busy until the lease ends, then retried.
        assert_eq!(
            l.claim(
                "r",
                &LedgerTarget::occurrence(),
                t(2, 0),
                t(2, 0) + chrono::Duration::seconds(59),
                lease
            )
            .await
            .unwrap(),
            Claim::Busy
        );
        assert_eq!(
            l.claim("r", &LedgerTarget::occurrence(), t(2, 0), t(2, 1), lease)
                .await
                .unwrap(),
            Claim::Claimed { attempt: 2 }
        );
        let row = l
            .get("r", &LedgerTarget::occurrence(), t(2, 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((row.state, row.attempts), (DeliveryState::Claimed, 2));
        assert_eq!(row.lease_until, Some(t(2, 2)));
    })
    .await;
}

#[tokio::test]
async fn failures_are_retryable_or_final() {
    on_all("failures_are_retryable_or_final", |target| async move {
        let l = target.connect().await;
        l.claim("r", &LedgerTarget::occurrence(), t(2, 0), t(2, 0), LEASE)
            .await
            .unwrap();
        l.mark_failed(
            "r",
            &LedgerTarget::occurrence(),
            t(2, 0),
            "transient error (451): greylisted",
            true,
            t(2, 1),
        )
        .await
        .unwrap();
        let row = l
            .get("r", &LedgerTarget::occurrence(), t(2, 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((row.state, row.retryable), (DeliveryState::Failed, true));
        assert_eq!(
            row.last_error.as_deref(),
            Some("transient error (451): greylisted")
        );
        assert_eq!(row.lease_until, None);

        // A later tick takes it again at once (no lease to wait for).
        assert_eq!(
            l.claim("r", &LedgerTarget::occurrence(), t(2, 0), t(2, 5), LEASE)
                .await
                .unwrap(),
            Claim::Claimed { attempt: 2 }
        );
        assert!(
            !l.get("r", &LedgerTarget::occurrence(), t(2, 0))
                .await
                .unwrap()
                .unwrap()
                .retryable
        );

        l.mark_failed(
            "r",
            &LedgerTarget::occurrence(),
            t(2, 0),
            "permanent error (554): rejected",
            false,
            t(2, 6),
        )
        .await
        .unwrap();
        assert_eq!(
            l.claim("r", &LedgerTarget::occurrence(), t(2, 0), t(3, 0), LEASE)
                .await
                .unwrap(),
            Claim::AlreadyDone(DeliveryState::Failed)
        );
        let row = l
            .get("r", &LedgerTarget::occurrence(), t(2, 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((row.attempts, row.retryable), (2, false));

        // Marking an unclaimed occurrence is a caller bug, reported as an error.
        let err = l
            .mark_sent(
                "r",
                &LedgerTarget::occurrence(),
                t(9, 0),
                "<x@y>",
                1,
                &[],
                t(9, 0),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("claimed first"), "{err}");
        assert!(
            l.mark_failed(
                "r",
                &LedgerTarget::occurrence(),
                t(9, 0),
                "x",
                true,
                t(9, 0)
            )
            .await
            .is_err()
        );
    })
    .await;
}

#[tokio::test]
async fn skipped_occurrences_are_done_but_never_overwrite_sent() {
    on_all(
        "skipped_occurrences_are_done_but_never_overwrite_sent",
        |target| async move {
            let l = target.connect().await;
            // Skipped without a claim (too old to catch up).
            l.mark_skipped(
                "r",
                &LedgerTarget::occurrence(),
                t(1, 0),
                "missed: older than catch_up",
                t(5, 0),
            )
            .await
            .unwrap();
            assert_eq!(
                l.claim("r", &LedgerTarget::occurrence(), t(1, 0), t(5, 1), LEASE)
                    .await
                    .unwrap(),
                Claim::AlreadyDone(DeliveryState::Skipped)
            );
            let row = l
                .get("r", &LedgerTarget::occurrence(), t(1, 0))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(row.attempts, 0);
            assert_eq!(
                row.last_error.as_deref(),
                Some("missed: older than catch_up")
            );

            // Skipped after a claim (skip_if_empty).
            l.claim("r", &LedgerTarget::occurrence(), t(2, 0), t(2, 0), LEASE)
                .await
                .unwrap();
            l.mark_skipped("r", &LedgerTarget::occurrence(), t(2, 0), "empty", t(2, 1))
                .await
                .unwrap();
            let row = l
                .get("r", &LedgerTarget::occurrence(), t(2, 0))
                .await
                .unwrap()
                .unwrap();
            assert_eq!((row.state, row.attempts), (DeliveryState::Skipped, 1));
            assert_eq!(row.lease_until, None);

            // A sent row stays sent.
            l.claim("r", &LedgerTarget::occurrence(), t(3, 0), t(3, 0), LEASE)
                .await
                .unwrap();
            l.mark_sent(
                "r",
                &LedgerTarget::occurrence(),
                t(3, 0),
                "<m@x>",
                1,
                &[],
                t(3, 1),
            )
            .await
            .unwrap();
            l.mark_skipped(
                "r",
                &LedgerTarget::occurrence(),
                t(3, 0),
                "late skip",
                t(3, 2),
            )
            .await
            .unwrap();
            let row = l
                .get("r", &LedgerTarget::occurrence(), t(3, 0))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(row.state, DeliveryState::Sent);
        },
    )
    .await;
}

#[tokio::test]
async fn recent_lists_newest_first_and_filters_by_report() {
    on_all(
        "recent_lists_newest_first_and_filters_by_report",
        |target| async move {
            let l = target.connect().await;
            for (report, occ) in [
                ("b", t(1, 0)),
                ("a", t(3, 0)),
                ("b", t(3, 0)),
                ("a", t(2, 0)),
            ] {
                l.claim(report, &LedgerTarget::occurrence(), occ, occ, LEASE)
                    .await
                    .unwrap();
            }
            let all: Vec<_> = l
                .recent(None, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.report, r.occurrence))
                .collect();
            assert_eq!(
                all,
                [
                    ("a".to_string(), t(3, 0)),
                    ("b".to_string(), t(3, 0)),
                    ("a".to_string(), t(2, 0)),
                    ("b".to_string(), t(1, 0)),
                ]
            );
            let b: Vec<_> = l
                .recent(Some("b"), 10)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.occurrence)
                .collect();
            assert_eq!(b, [t(3, 0), t(1, 0)]);
            assert_eq!(l.recent(None, 2).await.unwrap().len(), 2);
            assert!(l.recent(Some("zzz"), 10).await.unwrap().is_empty());
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_from_two_pools_yield_exactly_one_owner() {
    on_all(
        "concurrent_claims_from_two_pools_yield_exactly_one_owner",
        |target| async move {
            // Two independent pools, as two handler processes would have.
            let a = target.connect().await;
            let b = target.connect().await;
            for i in 0..10u32 {
                let occ = t(4, i);
                let claims = futures_util::future::join_all((0..6).map(|k| {
                    let l = if k % 2 == 0 { a.clone() } else { b.clone() };
                    tokio::spawn(async move {
                        l.claim("race", &LedgerTarget::occurrence(), occ, occ, LEASE)
                            .await
                            .unwrap()
                    })
                }))
                .await
                .into_iter()
                .map(|j| j.expect("claim task"))
                .collect::<Vec<_>>();
                let owners = claims
                    .iter()
                    .filter(|c| matches!(c, Claim::Claimed { .. }))
                    .count();
                assert_eq!(owners, 1, "occurrence {i}: {claims:?}");
                assert!(
                    claims
                        .iter()
                        .all(|c| matches!(c, Claim::Claimed { attempt: 1 } | Claim::Busy))
                );
            }
            // Racing takeovers of an expired lease: again exactly one winner.
            let occ = t(5, 0);
            a.claim(
                "race",
                &LedgerTarget::occurrence(),
                occ,
                occ,
                Duration::from_secs(1),
            )
            .await
            .unwrap();
            let later = occ + chrono::Duration::seconds(10);
            let claims = futures_util::future::join_all((0..6).map(|k| {
                let l = if k % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    l.claim("race", &LedgerTarget::occurrence(), occ, later, LEASE)
                        .await
                        .unwrap()
                })
            }))
            .await
            .into_iter()
            .map(|j| j.expect("claim task"))
            .collect::<Vec<_>>();
            let owners: Vec<_> = claims
                .iter()
                .filter(|c| matches!(c, Claim::Claimed { .. }))
                .collect();
            assert_eq!(owners, [&Claim::Claimed { attempt: 2 }], "{claims:?}");
        },
    )
    .await;
}

#[tokio::test]
async fn connecting_again_keeps_the_rows_and_runs_no_migration_twice() {
    on_all(
        "connecting_again_keeps_the_rows_and_runs_no_migration_twice",
        |target| async move {
            let l = target.connect().await;
            l.mark_skipped("r", &LedgerTarget::occurrence(), t(1, 0), "x", t(1, 0))
                .await
                .unwrap();
            let again = target.connect().await;
            assert_eq!(
                again
                    .get("r", &LedgerTarget::occurrence(), t(1, 0))
                    .await
                    .unwrap()
                    .unwrap()
                    .state,
                DeliveryState::Skipped
            );
            assert!(!format!("{again:?}").contains(&target.url));
        },
    )
    .await;
}

#[tokio::test]
async fn sub_second_occurrences_round_trip() {
    on_all("sub_second_occurrences_round_trip", |target| async move {
        let l = target.connect().await;
        let occ = t(1, 0) + chrono::Duration::nanoseconds(123_456_789);
        l.claim("r", &LedgerTarget::occurrence(), occ, occ, LEASE)
            .await
            .unwrap();
        assert_eq!(
            l.claim("r", &LedgerTarget::occurrence(), occ, occ, LEASE)
                .await
                .unwrap(),
            Claim::Busy
        );
        let row = l
            .get("r", &LedgerTarget::occurrence(), occ)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.occurrence,
            t(1, 0) + chrono::Duration::microseconds(123_456)
        );
    })
    .await;
}

#[tokio::test]
async fn first_seen_is_recorded_once_and_predates_older_rows() {
    on_all(
        "first_seen_is_recorded_once_and_predates_older_rows",
        |target| async move {
            let l = target.connect().await;
            assert_eq!(l.first_seen("new", t(5, 0)).await.unwrap(), t(5, 0));
            assert_eq!(l.first_seen("new", t(9, 0)).await.unwrap(), t(5, 0));
            // A ledger with rows from before first_seen was kept: the oldest row counts.
            l.mark_skipped("old", &LedgerTarget::occurrence(), t(2, 0), "x", t(2, 0))
                .await
                .unwrap();
            l.claim("old", &LedgerTarget::occurrence(), t(3, 0), t(3, 0), LEASE)
                .await
                .unwrap();
            assert_eq!(l.first_seen("old", t(9, 0)).await.unwrap(), t(2, 0));
            // The record is not a delivery row.
            assert_eq!(l.recent(Some("new"), 10).await.unwrap().len(), 0);
            assert_eq!(l.recent(None, 10).await.unwrap().len(), 2);
        },
    )
    .await;
}

#[tokio::test]
async fn manual_claims_take_skipped_and_failed_and_sent_only_to_resend() {
    on_all(
        "manual_claims_take_skipped_and_failed_and_sent_only_to_resend",
        |target| async move {
            use report_handler::delivery::Origin;
            let l = target.connect().await;
            l.mark_skipped("r", &LedgerTarget::occurrence(), t(1, 0), "empty", t(1, 0))
                .await
                .unwrap();
            assert_eq!(
                l.claim_manual(
                    "r",
                    &LedgerTarget::occurrence(),
                    t(1, 0),
                    t(2, 0),
                    LEASE,
                    false
                )
                .await
                .unwrap(),
                Claim::Claimed { attempt: 1 }
            );
            assert_eq!(
                l.get("r", &LedgerTarget::occurrence(), t(1, 0))
                    .await
                    .unwrap()
                    .unwrap()
                    .origin,
                Origin::Manual
            );
            // A live claim is busy even for an operator.
            assert_eq!(
                l.claim_manual(
                    "r",
                    &LedgerTarget::occurrence(),
                    t(1, 0),
                    t(2, 1),
                    LEASE,
                    true
                )
                .await
                .unwrap(),
                Claim::Busy
            );
            l.mark_sent(
                "r",
                &LedgerTarget::occurrence(),
                t(1, 0),
                "<m@x>",
                1,
                &[],
                t(2, 2),
            )
            .await
            .unwrap();
            assert_eq!(
                l.claim_manual(
                    "r",
                    &LedgerTarget::occurrence(),
                    t(1, 0),
                    t(3, 0),
                    LEASE,
                    false
                )
                .await
                .unwrap(),
                Claim::AlreadyDone(DeliveryState::Sent)
            );
            assert_eq!(
                l.claim_manual(
                    "r",
                    &LedgerTarget::occurrence(),
                    t(1, 0),
                    t(3, 0),
                    LEASE,
                    true
                )
                .await
                .unwrap(),
                Claim::Claimed { attempt: 2 }
            );
            let row = l
                .get("r", &LedgerTarget::occurrence(), t(1, 0))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (row.state, row.origin),
                (DeliveryState::Claimed, Origin::Resend)
            );
            // A fresh occurrence claimed by hand.
            assert_eq!(
                l.claim_manual(
                    "r",
                    &LedgerTarget::occurrence(),
                    t(4, 0),
                    t(4, 0),
                    LEASE,
                    false
                )
                .await
                .unwrap(),
                Claim::Claimed { attempt: 1 }
            );
            assert_eq!(
                l.get("r", &LedgerTarget::occurrence(), t(4, 0))
                    .await
                    .unwrap()
                    .unwrap()
                    .origin,
                Origin::Manual
            );
        },
    )
    .await;
}

/// A loopback proxy in front of Azurite that answers the first `busy` requests itself with
/// `status` (and `Retry-After: 0`, closing the connection), then passes connections through.
/// Returns its port and how many requests it answered as busy.
async fn throttling_proxy(
    target: u16,
    status: u16,
    busy: usize,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                if count.load(Ordering::SeqCst) < busy {
                    // Read the request head (and a body, by Content-Length), bounded.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match client.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if buf.len() > 1 << 20 {
                            return;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match client.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let reply = format!(
                        "HTTP/1.1 {status} Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = client.write_all(reply.as_bytes()).await;
                    let _ = client.shutdown().await;
                    return;
                }
                if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (port, answered)
}

/// Table storage answering 503 or 429 (a busy or throttling account): the ledger retries a
/// bounded number of times with backoff and then succeeds; an account that stays busy gives a
/// clear error after the bounded retries, never a hang and never a false claim.
#[tokio::test]
async fn table_storage_busy_or_throttling_is_retried_a_bounded_number_of_times() {
    let test = "table_storage_busy_or_throttling_is_retried";
    let Some(port) = azurite::shared_port(test) else {
        return;
    };
    for status in [503, 429] {
        let (proxy, answered) = throttling_proxy(port, status, 2).await;
        let account =
            LedgerSettings::account_from_secret(&secret(&azurite::connection_string(proxy)))
                .unwrap();
        let l = Ledger::connect_storage(account, &azurite::unique_table(test), None)
            .await
            .unwrap();
        assert_eq!(
            l.claim(
                "sales",
                &LedgerTarget::occurrence(),
                t(6, 0),
                t(6, 1),
                LEASE
            )
            .await
            .unwrap(),
            Claim::Claimed { attempt: 1 },
            "after {status}"
        );
        assert_eq!(
            answered.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "both busy answers ({status}) were retried"
        );
    }
    // Busy for good: an error after the first attempt and three retries.
    let (proxy, answered) = throttling_proxy(port, 503, usize::MAX).await;
    let account =
        LedgerSettings::account_from_secret(&secret(&azurite::connection_string(proxy))).unwrap();
    let result = match Ledger::connect_storage(account, &azurite::unique_table(test), None).await {
        Ok(l) => l
            .claim(
                "sales",
                &LedgerTarget::occurrence(),
                t(6, 0),
                t(6, 1),
                LEASE,
            )
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    let err = result.expect_err("an account that stays busy is an error");
    assert_eq!(
        answered.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "one attempt and three retries, then the error: {err:#}"
    );
    assert!(!format!("{err:#}").contains(azurite::ACCOUNT_KEY));
}

#[tokio::test]
async fn each_target_of_an_occurrence_is_claimed_and_settled_on_its_own() {
    on_all(
        "each_target_of_an_occurrence_is_claimed_and_settled_on_its_own",
        |target| async move {
            let l = target.connect().await;
            let own = LedgerTarget::occurrence();
            let ann = LedgerTarget::new("email", "ann@example.com").unwrap();
            // A name with characters Table storage refuses in keys must still work.
            let odd = LedgerTarget::new("email", "team/7#b?c").unwrap();
            let teams = LedgerTarget::new("teams", "TEAMS_WEBHOOK_SALES").unwrap();
            for t_ in [&own, &ann, &odd, &teams] {
                assert_eq!(
                    l.claim("sales", t_, t(6, 0), t(6, 1), LEASE).await.unwrap(),
                    Claim::Claimed { attempt: 1 },
                    "{t_}"
                );
            }
            // A second process sees each target held, independently.
            let other = target.connect().await;
            assert_eq!(
                other
                    .claim("sales", &ann, t(6, 0), t(6, 2), LEASE)
                    .await
                    .unwrap(),
                Claim::Busy
            );
            l.mark_sent("sales", &ann, t(6, 0), "<a@x>", 1, &[], t(6, 3))
                .await
                .unwrap();
            l.mark_failed("sales", &teams, t(6, 0), "503", true, t(6, 3))
                .await
                .unwrap();
            l.mark_failed("sales", &odd, t(6, 0), "550", false, t(6, 3))
                .await
                .unwrap();
            // The next tick: the sent and the permanently failed targets are done, the
            // transient one is taken again; the occurrence's own row is untouched by them.
            assert_eq!(
                other
                    .claim("sales", &ann, t(6, 0), t(7, 0), LEASE)
                    .await
                    .unwrap(),
                Claim::AlreadyDone(DeliveryState::Sent)
            );
            assert_eq!(
                other
                    .claim("sales", &odd, t(6, 0), t(7, 0), LEASE)
                    .await
                    .unwrap(),
                Claim::AlreadyDone(DeliveryState::Failed)
            );
            assert_eq!(
                other
                    .claim("sales", &teams, t(6, 0), t(7, 0), LEASE)
                    .await
                    .unwrap(),
                Claim::Claimed { attempt: 2 }
            );
            let own_row = l.get("sales", &own, t(6, 0)).await.unwrap().unwrap();
            assert_eq!(own_row.state, DeliveryState::Claimed);
            assert!(own_row.target.is_occurrence());
            let rows = l.occurrence_rows("sales", t(6, 0)).await.unwrap();
            let targets: Vec<&str> = rows.iter().map(|r| r.target.as_str()).collect();
            assert_eq!(
                targets,
                [
                    "",
                    "email:ann@example.com",
                    "email:team/7#b?c",
                    "teams:TEAMS_WEBHOOK_SALES"
                ]
            );
            // Another occurrence's rows are not mixed in, and listings carry the targets.
            l.mark_skipped("sales", &own, t(7, 0), "x", t(7, 0))
                .await
                .unwrap();
            assert_eq!(l.occurrence_rows("sales", t(6, 0)).await.unwrap().len(), 4);
            assert_eq!(l.recent(Some("sales"), 10).await.unwrap().len(), 5);
        },
    )
    .await;
}

/// A ledger as the previous version left it (migrations 1 and 2, rows without targets) is
/// migrated in place: every row is kept, as the occurrence's own row, and targets can be
/// added beside it.
#[tokio::test]
async fn a_ledger_of_the_previous_version_migrates_in_place() {
    use report_handler::delivery::ledger::sql::SqlLedger;

    async fn check(url: &str) {
        drop(
            SqlLedger::connect_migrated_to(&secret(url), 2)
                .await
                .unwrap(),
        );
        let insert = "INSERT INTO delivery_ledger (report, occurrence, state, retryable, \
                      attempts, last_error, message_id, recipients, rejected, claimed_at, \
                      updated_at, lease_until, origin) \
                      VALUES ($1, $2, 'sent', FALSE, 2, NULL, '<m@x>', 3, '[\"b@x: 550\"]', \
                      $2, $2, NULL, 'resend')";
        if url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(insert)
                .bind("daily")
                .bind(t(6, 0))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(insert)
                .bind("daily")
                .bind(t(6, 0))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        let l = Ledger::connect(&secret(url)).await.unwrap();
        let own = LedgerTarget::occurrence();
        let row = l.get("daily", &own, t(6, 0)).await.unwrap().unwrap();
        assert_eq!(row.state, DeliveryState::Sent);
        assert_eq!(
            (row.attempts, row.recipients, row.message_id.as_deref()),
            (2, 3, Some("<m@x>"))
        );
        assert_eq!(row.rejected, ["b@x: 550"]);
        assert_eq!(
            l.claim("daily", &own, t(6, 0), t(7, 0), LEASE)
                .await
                .unwrap(),
            Claim::AlreadyDone(DeliveryState::Sent)
        );
        let slack = LedgerTarget::new("slack", "SLACK_URL").unwrap();
        assert_eq!(
            l.claim("daily", &slack, t(6, 0), t(7, 0), LEASE)
                .await
                .unwrap(),
            Claim::Claimed { attempt: 1 }
        );
        // Connecting again migrates nothing twice.
        let again = Ledger::connect(&secret(url)).await.unwrap();
        assert_eq!(
            again.occurrence_rows("daily", t(6, 0)).await.unwrap().len(),
            2
        );
    }

    let (_dir, url) = sqlite().await;
    check(&url).await;
    if let Some(db) = TestDb::create("a_ledger_of_the_previous_version_migrates_in_place").await {
        check(db.url()).await;
    }
}

#[tokio::test]
async fn history_pages_newest_first_with_filters_and_a_cursor() {
    use report_handler::delivery::ledger::{HistoryCursor, HistoryQuery};
    on_all(
        "history_pages_newest_first_with_filters_and_a_cursor",
        |target| async move {
            let l = target.connect().await;
            let own = LedgerTarget::occurrence();
            let ann = LedgerTarget::new("email", "ann@example.com").unwrap();
            for (report, at) in [
                ("a", t(6, 0)),
                ("b", t(6, 0)),
                ("a", t(7, 0)),
                ("c", t(8, 0)),
            ] {
                l.claim(report, &own, at, at, LEASE).await.unwrap();
                l.mark_sent(report, &own, at, "<m@x>", 1, &[], at)
                    .await
                    .unwrap();
            }
            l.claim("a", &ann, t(6, 0), t(6, 0), LEASE).await.unwrap();
            l.mark_failed("a", &ann, t(6, 0), "550", false, t(6, 1))
                .await
                .unwrap();
            let key = |r: &report_handler::delivery::DeliveryRow| {
                format!("{}@{}{}", r.report, r.occurrence.format("%H"), r.target)
            };
            // Every row, two per page, in the listing order.
            let mut seen = Vec::new();
            let mut q = HistoryQuery {
                limit: 2,
                ..HistoryQuery::default()
            };
            for _ in 0..10 {
                let page = l.history(&q).await.unwrap();
                seen.extend(page.iter().map(key));
                match page.last() {
                    Some(last) if page.len() == 2 => q.after = Some(HistoryCursor::after(last)),
                    _ => break,
                }
            }
            assert_eq!(
                seen,
                ["c@08", "a@07", "a@06", "a@06email:ann@example.com", "b@06"]
            );
            // Filters: reports, state, the occurrence range.
            let only = |q: HistoryQuery| {
                let l = l.clone();
                async move {
                    l.history(&HistoryQuery { limit: 50, ..q })
                        .await
                        .unwrap()
                        .iter()
                        .map(key)
                        .collect::<Vec<_>>()
                }
            };
            assert_eq!(
                only(HistoryQuery {
                    reports: Some(vec!["a".into(), "b".into()]),
                    from: Some(t(6, 0)),
                    to: Some(t(7, 0)),
                    ..HistoryQuery::default()
                })
                .await,
                ["a@06", "a@06email:ann@example.com", "b@06"]
            );
            assert_eq!(
                only(HistoryQuery {
                    state: Some(DeliveryState::Failed),
                    ..HistoryQuery::default()
                })
                .await,
                ["a@06email:ann@example.com"]
            );
            assert!(
                only(HistoryQuery {
                    reports: Some(vec![]),
                    ..HistoryQuery::default()
                })
                .await
                .is_empty()
            );
        },
    )
    .await;
}
