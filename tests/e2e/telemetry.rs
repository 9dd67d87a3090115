//! Telemetry end to end: the real binary behind the host emulator exports OTLP/HTTP to a real
//! receiver on loopback ([`otlp::Receiver`]), which decodes what arrived with the protocol's own
//! types. Spans, metrics and logs are checked for shape and correlation, and for what they must
//! never carry (secrets, addresses, row data); the receiver's dump also goes through the
//! suite's secret sweep.

use std::time::{Duration, Instant};

use chrono::Utc;

use crate::support::appinsights::Ingestion;
use crate::support::host::{AppDir, ClientRequest, Host, HostOptions, TimerVariant};
use crate::support::otlp::{self, Receiver};
use crate::support::smtp::{self, SmtpServer};
use crate::support::vault::{FakeMsi, FakeVault};
use crate::support::wait::WITHIN;

/// Sent with every export; listed in tests/secret-values.txt, so the sweep proves it is never
/// printed or exported.
const OTLP_HEADER_SECRET: &str = "otlp-header-secret-3e5a7c";
const KEY: &str = "test-key-0123456789-padded-to-32-chars";
/// The Application Insights instrumentation key (tests/secret-values.txt): the exporter must
/// send it in every envelope, and nothing else may ever print it.
const IKEY: &str = "7c1d9e4a-2b3f-4e5d-8a6b-0f9e8d7c6b5a";
/// The SMTP relay's password (support::smtp).
const SMTP_PASSWORD: &str = "s3cret-for-tests";

const REPORT: &str = r#"
[[reports]]
name = "telemetry-daily"
title = "Telemetry daily"
schedule = "0 0 6 * * *"
time_zone = "Europe/Berlin"
window = "30d"
recipients = ["Ops <ops@example.com>"]
cc = ["cc-telemetry@example.com"]
subject = "{title} for {date}"

[[reports.sections]]
title = "Orders by status"
query = "SELECT status, COUNT(*) AS orders FROM orders WHERE created_at >= :start AND created_at < :end GROUP BY status ORDER BY status"

[[reports.sections]]
title = "Products and a customer"
query = "SELECT p.name AS product, c.email AS email FROM products p JOIN customers c ON c.id = 1 ORDER BY p.id"
"#;

/// What exported telemetry must never contain: secret values, email addresses (recipients, the
/// sender, customer rows) and row data (product names). The Message-ID (a logged correlation
/// id) ends in the sender's domain, so addresses are checked whole.
const NEVER: &[&str] = &[
    OTLP_HEADER_SECRET,
    IKEY,
    KEY,
    SMTP_PASSWORD,
    "ops@example.com",
    "cc-telemetry@example.com",
    "reports@example.com",
    "customer1@example.com",
    "Field guide to mushrooms",
    "Wooden train",
];

fn settings_for(receiver_endpoint: &str) -> Vec<(String, String)> {
    vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            receiver_endpoint.to_string(),
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS".into(),
            format!("x-otlp-key={OTLP_HEADER_SECRET}"),
        ),
        ("OTEL_SERVICE_NAME".into(), "report-handler-e2e".into()),
        ("WEBSITE_INSTANCE_ID".into(), "instance-e2e-1".into()),
        ("API_KEYS".into(), KEY.into()),
    ]
}

async fn start(app: &AppDir, extra: Vec<(String, String)>) -> Host {
    let mut opts = HostOptions::new(app.path());
    for (k, v) in extra {
        opts = opts.setting(&k, v);
    }
    Host::start(opts).await
}

fn assert_clean(receiver: &Receiver) {
    assert_clean_dump(&receiver.dump());
}

fn assert_clean_dump(dump: &str) {
    for v in NEVER {
        assert!(
            !dump.contains(v),
            "exported telemetry contains a value it must never carry (#{})",
            NEVER.iter().position(|n| n == v).unwrap_or(0)
        );
    }
}

#[tokio::test]
async fn a_tick_exports_its_trace_metrics_and_logs() {
    let receiver = Receiver::expecting_header("x-otlp-key", OTLP_HEADER_SECRET);
    let smtp = SmtpServer::start();
    let app = AppDir::from_repo();
    app.write("reports.toml", REPORT);
    let mut settings = settings_for(&receiver.endpoint());
    settings.extend(smtp.settings());
    let host = start(&app, settings).await;
    // The first tick on an empty ledger at an occurrence sends that occurrence.
    let next = report_handler::report::Schedule::parse("0 0 6 * * *")
        .unwrap()
        .next_after(chrono_tz::Europe::Berlin, Utc::now())
        .unwrap();
    let inv = host
        .timer("NightlyReport", TimerVariant::Scheduled, next)
        .await;
    assert!(inv.succeeded(), "{:?} {:?}", inv.failure, host.stdout());
    assert_eq!(smtp.wait_for(1, WITHIN).await.len(), 1);

    // The invocation's trace: the server span and its children, in one trace.
    let arrived = receiver
        .wait(WITHIN, |r| {
            let spans = r.spans();
            [
                "NightlyReport",
                "report.run",
                "report.section",
                "report.render",
                "ledger.claim",
                "delivery.attempt",
            ]
            .iter()
            .all(|n| spans.iter().any(|s| s.name == *n))
        })
        .await;
    let spans = receiver.spans();
    assert!(
        arrived,
        "spans: {:?}; rejected: {:?}; stdout: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>(),
        receiver.state().rejected,
        host.stdout()
    );
    let root = spans.iter().find(|s| s.name == "NightlyReport").unwrap();
    assert_eq!(root.kind, 2, "a server span");
    assert_eq!(root.parent_span_id, "", "a tick starts a trace");
    assert_eq!(root.attrs["faas.trigger"], "timer");
    assert_eq!(root.attrs["faas.name"], "NightlyReport");
    assert_eq!(root.attrs["faas.invocation_id"], inv.invocation_id);
    let run = spans.iter().find(|s| s.name == "report.run").unwrap();
    assert_eq!(run.trace_id, root.trace_id);
    assert_eq!(run.attrs["report.name"], "telemetry-daily");
    let sections: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "report.section")
        .collect();
    assert_eq!(sections.len(), 2, "{sections:?}");
    for s in &sections {
        assert_eq!(s.trace_id, root.trace_id);
        assert_eq!(s.parent_span_id, run.span_id);
        assert_eq!(s.attrs["db.system.name"], "sqlite");
    }
    // 20 products joined with one customer.
    assert!(
        sections
            .iter()
            .any(|s| s.attrs.get("db.response.returned_rows").map(String::as_str) == Some("20")),
        "{sections:?}"
    );
    // The email's renders, the ledger claim and the delivery attempt, in the same trace.
    let formats: Vec<&str> = spans
        .iter()
        .filter(|s| s.name == "report.render" && s.trace_id == root.trace_id)
        .map(|s| s.attrs["render.format"].as_str())
        .collect();
    for f in ["text", "html", "csv"] {
        assert!(formats.contains(&f), "{formats:?}");
    }
    let claim = spans.iter().find(|s| s.name == "ledger.claim").unwrap();
    assert_eq!(claim.trace_id, root.trace_id);
    assert_eq!(claim.attrs["ledger.backend"], "sqlite");
    assert_eq!(claim.attrs["ledger.claim"], "scheduled");
    assert_eq!(claim.attrs["ledger.outcome"], "claimed");
    let attempt = spans.iter().find(|s| s.name == "delivery.attempt").unwrap();
    assert_eq!(attempt.trace_id, root.trace_id);
    assert_eq!(attempt.attrs["destination.kind"], "email");
    assert_eq!(attempt.attrs["delivery.outcome"], "sent");
    assert_eq!(attempt.attrs["smtp.reply_class"], "2xx");
    assert_eq!(attempt.attrs["report.name"], "telemetry-daily");
    let resources = receiver.span_resources();
    assert!(
        resources.iter().all(|r| {
            r.get("service.name").map(String::as_str) == Some("report-handler-e2e")
                && r.get("faas.instance").map(String::as_str) == Some("instance-e2e-1")
        }),
        "{resources:?}"
    );

    // The report run's duration, by report.
    assert!(
        receiver
            .wait(WITHIN, |r| r
                .points("report_handler.report.duration")
                .iter()
                .any(|p| p.attrs.get("report").map(String::as_str)
                    == Some("telemetry-daily")
                    && p.value >= 1.0))
            .await,
        "metrics: {:?}",
        receiver.state().metrics
    );

    // The delivery, by report, destination kind and outcome.
    assert!(
        receiver
            .wait(WITHIN, |r| r
                .points("report_handler.deliveries")
                .iter()
                .any(|p| {
                    p.attrs.get("report").map(String::as_str) == Some("telemetry-daily")
                        && p.attrs.get("destination.kind").map(String::as_str) == Some("email")
                        && p.attrs.get("outcome").map(String::as_str) == Some("sent")
                        && p.value == 1.0
                }))
            .await,
        "{:?}",
        receiver.points("report_handler.deliveries")
    );
    // The same occurrence again: the claim finds it settled, a conflict, and no second email.
    let again = host
        .timer("NightlyReport", TimerVariant::Scheduled, next)
        .await;
    assert!(again.succeeded(), "{:?}", again.failure);
    assert!(
        receiver
            .wait(WITHIN, |r| r
                .points("report_handler.ledger.claim_conflicts")
                .iter()
                .any(|p| p.attrs.get("outcome").map(String::as_str)
                    == Some("already_done")
                    && p.attrs.get("backend").map(String::as_str)
                        == Some("sqlite")))
            .await,
        "{:?}",
        receiver.points("report_handler.ledger.claim_conflicts")
    );
    assert!(receiver.spans().iter().any(|s| s.name == "ledger.claim"
        && s.attrs.get("ledger.outcome").map(String::as_str) == Some("already_done")));
    assert_eq!(smtp.received().len(), 1);

    // Log records with a severity, in the invocation's trace.
    assert!(
        receiver
            .wait(WITHIN, |r| r
                .logs()
                .iter()
                .any(|l| l.body == "NightlyReport tick"))
            .await,
        "logs: {:?}",
        receiver.logs()
    );
    let logs = receiver.logs();
    let tick = logs
        .iter()
        .find(|l| l.body == "NightlyReport tick")
        .unwrap();
    assert_eq!(tick.severity_number, 9, "INFO: {tick:?}");
    assert_eq!(tick.severity_text, "INFO");
    assert_eq!(tick.trace_id, root.trace_id);
    assert_eq!(tick.span_id, root.span_id);
    let run_log = logs.iter().find(|l| l.body == "report run").unwrap();
    assert_eq!(run_log.trace_id, root.trace_id);
    assert_eq!(
        run_log.attrs.get("report").map(String::as_str),
        Some("telemetry-daily"),
        "the event's fields are the record's attributes: {run_log:?}"
    );

    // Every export carried the configured header; nothing was refused.
    {
        let st = receiver.state();
        assert!(st.rejected.is_empty(), "{:?}", st.rejected);
        assert!(!st.header_matched.is_empty());
        assert!(st.header_matched.iter().all(|m| *m));
    }
    assert_clean(&receiver);
}

/// A W3C `traceparent` with the caller's trace and span id.
fn traceparent(trace: &str, span: &str) -> String {
    format!("00-{trace}-{span}-01")
}

#[tokio::test]
async fn api_calls_continue_the_callers_trace_in_both_modes() {
    let receiver = Receiver::start();
    // The API key comes from (fake) Key Vault, so the fetch span and the cache counters show.
    let vault = FakeVault::start().await;
    let msi = FakeMsi::start().await;
    vault.set_secret("api-keys", KEY);
    let app = AppDir::from_repo();
    let mut settings: Vec<(String, String)> = settings_for(&receiver.endpoint())
        .into_iter()
        .filter(|(k, _)| k != "API_KEYS")
        .collect();
    settings.extend([
        ("API_KEYS".to_string(), vault.reference("api-keys", None)),
        (
            "SSL_CERT_FILE".to_string(),
            vault.ca_pem_path().display().to_string(),
        ),
        ("IDENTITY_ENDPOINT".to_string(), msi.endpoint()),
        ("IDENTITY_HEADER".to_string(), msi.header().to_string()),
    ]);
    let host = start(&app, settings).await;
    let (trace_p, span_p) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let resp = host
        .http_payload(
            ClientRequest::get("/api/reports")
                .header("Authorization", &format!("Bearer {KEY}"))
                .header("traceparent", &traceparent(trace_p, span_p)),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let (trace_f, span_f) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let resp = host
        .http_forwarded(
            ClientRequest::get("/api/reports")
                .header("Authorization", &format!("Bearer {KEY}"))
                .header("traceparent", &traceparent(trace_f, span_f)),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let arrived = receiver
        .wait(WITHIN, |r| {
            r.spans().iter().filter(|s| s.name == "HttpTrigger").count() >= 2
        })
        .await;
    let spans = receiver.spans();
    assert!(arrived, "{spans:?}");
    for (trace, parent) in [(trace_p, span_p), (trace_f, span_f)] {
        let span = spans
            .iter()
            .find(|s| s.name == "HttpTrigger" && s.trace_id == trace)
            .unwrap_or_else(|| panic!("no HttpTrigger span in trace {trace}: {spans:?}"));
        assert_eq!(span.parent_span_id, parent);
        assert_eq!(span.kind, 2);
        assert_eq!(span.attrs["faas.trigger"], "http");
        assert_eq!(span.attrs["http.response.status_code"], "200");
    }
    // One vault fetch (setting name only), then cache hits.
    let fetch = spans
        .iter()
        .find(|s| s.name == "secret.fetch")
        .unwrap_or_else(|| panic!("no secret.fetch span: {spans:?}"));
    assert_eq!(fetch.attrs["secret.setting"], "API_KEYS");
    assert_eq!(fetch.attrs["secret.outcome"], "fetched");
    let cache = |result: &str| {
        receiver
            .points("report_handler.secret.cache")
            .iter()
            .filter(|p| {
                p.attrs.get("setting").map(String::as_str) == Some("API_KEYS")
                    && p.attrs.get("result").map(String::as_str) == Some(result)
            })
            .map(|p| p.value)
            .fold(0.0, f64::max)
    };
    assert!(
        receiver
            .wait(WITHIN, |_| cache("miss") >= 1.0 && cache("hit") >= 1.0)
            .await,
        "{:?}",
        receiver.points("report_handler.secret.cache")
    );
    assert_clean(&receiver);
}

#[tokio::test]
async fn a_collector_that_never_answers_delays_a_reply_by_at_most_the_bound() {
    let silent = otlp::silent();
    let app = AppDir::from_repo();
    let mut settings = settings_for(&silent.endpoint());
    // The export's own timeout stays long: only the flush bound protects the reply.
    settings.push(("OTEL_EXPORTER_OTLP_TIMEOUT".into(), "30000".into()));
    let host = start(&app, settings).await;
    let bound = Duration::from_secs(5);
    for i in 0..3 {
        let started = Instant::now();
        let resp = host
            .http_payload(
                ClientRequest::get("/api/reports")
                    .header("Authorization", &format!("Bearer {KEY}")),
            )
            .await;
        let took = started.elapsed();
        eprintln!("reply {i} with a silent collector took {took:?}");
        assert_eq!(resp.status, 200, "{}", resp.body);
        assert!(took < bound, "reply {i} took {took:?}");
    }
    // The handler keeps serving: the health check still answers, within the same bound.
    let started = Instant::now();
    let health = host.http_payload(ClientRequest::get("/api/health")).await;
    eprintln!(
        "health check with a silent collector took {:?}",
        started.elapsed()
    );
    assert!(health.status < 600, "{}", health.body);
    assert!(started.elapsed() < bound);
    assert!(
        *silent.accepted.lock().unwrap() >= 1,
        "the exporter did connect"
    );
}

/// The next occurrence of the test report (06:00 Berlin): the first tick on an empty ledger at
/// an occurrence sends it.
fn next_occurrence() -> chrono::DateTime<Utc> {
    report_handler::report::Schedule::parse("0 0 6 * * *")
        .unwrap()
        .next_after(chrono_tz::Europe::Berlin, Utc::now())
        .unwrap()
}

#[tokio::test]
async fn a_tick_reaches_application_insights_as_requests_and_dependencies() {
    let smtp = SmtpServer::start();
    // The exporter insists on HTTPS: the fake's CA, plus the SMTP relay's, is the trust bundle.
    let ingestion = Ingestion::start(IKEY, Some(&smtp::ca_path()));
    let app = AppDir::from_repo();
    app.write("reports.toml", REPORT);
    let mut settings: Vec<(String, String)> = smtp
        .settings()
        .into_iter()
        .filter(|(k, _)| k != "SSL_CERT_FILE")
        .collect();
    settings.extend([
        (
            "APPLICATIONINSIGHTS_CONNECTION_STRING".to_string(),
            ingestion.connection_string(IKEY),
        ),
        (
            "SSL_CERT_FILE".to_string(),
            ingestion.ca_bundle().display().to_string(),
        ),
        ("API_KEYS".to_string(), KEY.to_string()),
        (
            "WEBSITE_INSTANCE_ID".to_string(),
            "instance-e2e-ai".to_string(),
        ),
    ]);
    let host = start(&app, settings).await;
    let inv = host
        .timer("NightlyReport", TimerVariant::Scheduled, next_occurrence())
        .await;
    assert!(inv.succeeded(), "{:?} {:?}", inv.failure, host.stdout());
    assert_eq!(smtp.wait_for(1, WITHIN).await.len(), 1);

    // The invocation span is a request; the spans inside it are (in-process) dependencies.
    let expected_deps = [
        "report.run",
        "report.section",
        "report.render",
        "ledger.claim",
        "delivery.attempt",
    ];
    let arrived = ingestion
        .wait(WITHIN, |i| {
            let items = i.items();
            items
                .iter()
                .any(|x| x.kind == "Request" && x.name == "NightlyReport")
                && expected_deps.iter().all(|n| {
                    items
                        .iter()
                        .any(|x| x.kind == "RemoteDependency" && x.name == *n)
                })
        })
        .await;
    let items = ingestion.items();
    assert!(
        arrived,
        "items: {:?}; rejected: {:?}; stdout: {:?}",
        items.iter().map(|x| (&x.kind, &x.name)).collect::<Vec<_>>(),
        ingestion.state().rejected,
        host.stdout()
    );
    let request = items
        .iter()
        .find(|x| x.kind == "Request" && x.name == "NightlyReport")
        .unwrap();
    assert_eq!(request.parent_id, "", "a tick starts a trace: {request:?}");
    assert_eq!(
        request.properties.get("faas.invocation_id"),
        Some(&serde_json::Value::String(inv.invocation_id.clone())),
        "{request:?}"
    );
    let run = items
        .iter()
        .find(|x| x.kind == "RemoteDependency" && x.name == "report.run")
        .unwrap();
    assert_eq!(run.operation_id, request.operation_id);
    assert_eq!(run.parent_id, request.id);
    let sections: Vec<_> = items
        .iter()
        .filter(|x| x.kind == "RemoteDependency" && x.name == "report.section")
        .collect();
    assert_eq!(sections.len(), 2, "{sections:?}");
    assert!(
        sections
            .iter()
            .all(|s| s.parent_id == run.id && s.operation_id == request.operation_id)
    );
    let attempt = items
        .iter()
        .find(|x| x.kind == "RemoteDependency" && x.name == "delivery.attempt")
        .unwrap();
    assert_eq!(attempt.operation_id, request.operation_id);
    assert_eq!(
        attempt
            .properties
            .get("delivery.outcome")
            .and_then(|v| v.as_str()),
        Some("sent"),
        "{attempt:?}"
    );
    // The log events as traces (messages) in the same operation, and the metrics.
    assert!(
        ingestion
            .wait(WITHIN, |i| i.items().iter().any(|x| x.kind == "Message"
                && x.name == "NightlyReport tick"
                && x.operation_id == request.operation_id))
            .await,
        "{:?}",
        ingestion
            .items()
            .iter()
            .filter(|x| x.kind == "Message")
            .map(|x| &x.name)
            .collect::<Vec<_>>()
    );
    assert!(
        ingestion
            .wait(WITHIN, |i| i.items().iter().any(
                |x| x.kind == "Metric" && x.name == "report_handler.deliveries"
            ))
            .await,
        "{:?}",
        ingestion
            .items()
            .iter()
            .filter(|x| x.kind == "Metric")
            .map(|x| &x.name)
            .collect::<Vec<_>>()
    );
    {
        let st = ingestion.state();
        assert!(st.rejected.is_empty(), "{:?}", st.rejected);
        assert!(
            st.ikey_matched.iter().all(|m| *m),
            "every envelope carries the key"
        );
    }
    assert_clean_dump(&ingestion.dump());
}

/// A report of many trivial sections: one uncached API call makes a span per section.
fn many_sections(n: usize) -> String {
    let mut s = String::from(
        r#"
[[reports]]
name = "many-sections"
title = "Many sections"
schedule = "0 0 6 * * *"
time_zone = "Europe/Berlin"
window = "previous_day"
recipients = ["ops@example.com"]
subject = "{title} for {date}"
"#,
    );
    for i in 0..n {
        s.push_str(&format!(
            "\n[[reports.sections]]\ntitle = \"Section {i}\"\nquery = \"SELECT {i} AS n\"\n"
        ));
    }
    s
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_full_span_queue_drops_and_reports_the_episode_and_its_count_once() {
    const SECTIONS: usize = 40;
    const CALLS: usize = 6;
    const QUEUE: usize = 8;
    const FULL: &str = "the span export queue is full";
    const ROOM: &str = "the span export queue has room again";
    let receiver = Receiver::held();
    let app = AppDir::from_repo();
    app.write("reports.toml", &many_sections(SECTIONS));
    let mut settings = settings_for(&receiver.endpoint());
    settings.extend([
        ("OTEL_BSP_MAX_QUEUE_SIZE".to_string(), QUEUE.to_string()),
        // The export never times out while the test runs: only the receiver ends it.
        (
            "OTEL_EXPORTER_OTLP_TIMEOUT".to_string(),
            "120000".to_string(),
        ),
    ]);
    let host = start(&app, settings).await;
    let pid = host.pid().expect("the handler runs");
    let call = |day: chrono::NaiveDate| {
        ClientRequest::get(&format!("/api/reports/many-sections?date={day}"))
            .header("Authorization", &format!("Bearer {KEY}"))
    };
    let today = Utc::now().date_naive();
    let rss_before = proc_kib(pid, "VmRSS:");
    // A report run per call (a new date each time, so nothing is cached): more than
    // SECTIONS spans each, against a queue of QUEUE that nothing drains.
    for i in 0..CALLS {
        let resp = host
            .http_forwarded(call(today - chrono::Days::new(2 + i as u64)))
            .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    let count = |needle: &str| host.stdout().iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count(FULL), 1, "{:?}", host.stdout());
    assert_eq!(count(ROOM), 0, "nothing drained yet: {:?}", host.stdout());
    let rss_after = proc_kib(pid, "VmRSS:");
    eprintln!("handler RSS {rss_before} KiB before, {rss_after} KiB after the drops");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    // The collector answers again: the export in flight lands, and the next span that finds
    // room ends the episode with its count, once.
    receiver.release();
    let mut reported = false;
    for i in 0..20 {
        let resp = host
            .http_forwarded(call(today - chrono::Days::new(40 + i)))
            .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        if host.wait_for_stdout(ROOM, Duration::from_secs(1)).await {
            reported = true;
            break;
        }
    }
    assert!(reported, "{:?}", host.stdout());
    assert_eq!(count(FULL), 1, "{:?}", host.stdout());
    assert_eq!(count(ROOM), 1, "{:?}", host.stdout());
    // The count: every span of the first calls beyond the QUEUE held for export was dropped,
    // not buffered (each call made at least SECTIONS + 2 spans).
    let line = host
        .stdout()
        .into_iter()
        .find(|l| l.contains(ROOM))
        .unwrap();
    let dropped: usize = line
        .split(ROOM)
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .find(|w| !w.is_empty())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    assert!(
        dropped >= CALLS * (SECTIONS + 2) - QUEUE,
        "{dropped} dropped: {line}"
    );
    assert_clean(&receiver);
}

#[tokio::test]
async fn a_tick_with_a_collector_that_never_answers_is_delayed_by_at_most_the_bound() {
    // The same ticks against a collector that answers (the baseline) and one that never does;
    // a tick on a schedule with nothing due still ends with the flush of its own spans.
    let live = Receiver::start();
    let silent = otlp::silent();
    let mut took = Vec::new();
    for endpoint in [live.endpoint(), silent.endpoint()] {
        let app = AppDir::from_repo();
        app.write("reports.toml", REPORT);
        let mut settings = settings_for(&endpoint);
        settings.push(("OTEL_EXPORTER_OTLP_TIMEOUT".into(), "30000".into()));
        let host = start(&app, settings).await;
        let mut times = Vec::new();
        for i in 0..3 {
            // Noon UTC, days ago: never 06:00 Berlin, so nothing is due and no mail is needed.
            let tick = (Utc::now() - chrono::Days::new(1 + i))
                .date_naive()
                .and_hms_opt(12, 0, 0)
                .unwrap()
                .and_utc();
            let started = Instant::now();
            let inv = host
                .timer("NightlyReport", TimerVariant::Scheduled, tick)
                .await;
            let t = started.elapsed();
            assert!(inv.succeeded(), "{:?} {:?}", inv.failure, host.stdout());
            assert!((200..300).contains(&inv.status), "{}", inv.status);
            times.push(t);
        }
        // The handler keeps serving.
        let health = host.http_payload(ClientRequest::get("/api/health")).await;
        assert_eq!(health.status, 200, "{}", health.body);
        took.push(times);
    }
    eprintln!(
        "ticks with a live collector {:?}, with a silent one {:?}",
        took[0], took[1]
    );
    // The flush bound is 1 s; the issue allows about 1.5 s. Each tick's own time varies with the
    // machine's load, so the delay is measured between the fastest tick of each kind (load only
    // ever adds time), and each single silent tick is held to the same bound over the slowest
    // baseline tick plus 2 s for a loaded 2-core machine.
    let fastest = |v: &Vec<Duration>| v.iter().min().copied().unwrap();
    let slowest = |v: &Vec<Duration>| v.iter().max().copied().unwrap();
    let delay = fastest(&took[1]).saturating_sub(fastest(&took[0]));
    assert!(delay <= Duration::from_millis(1500), "delayed by {delay:?}");
    for t in &took[1] {
        assert!(
            *t <= slowest(&took[0]) + Duration::from_millis(3500),
            "a tick took {t:?}; the baseline's slowest {:?}",
            slowest(&took[0])
        );
    }
    assert!(
        *silent.accepted.lock().unwrap() >= 1,
        "the exporter did connect"
    );
}

#[tokio::test]
async fn every_span_is_exported_before_the_last_reply_of_concurrent_calls() {
    // Most of these replies hand their telemetry over instead of waiting for an export; the
    // guarantee is that once every reply is out (when the host could freeze the instance),
    // every invocation's span has reached the collector. So no wait here: look right away.
    const CALLS: usize = 24;
    let receiver = Receiver::start();
    let app = AppDir::from_repo();
    let host = start(&app, settings_for(&receiver.endpoint())).await;
    let replies = futures_util::future::join_all((0..CALLS).map(|i| {
        let req = ClientRequest::get("/api/reports")
            .header("Authorization", &format!("Bearer {KEY}"))
            .header(
                "traceparent",
                &traceparent(&format!("{:032x}", 0xabc0_0000 + i), "00f067aa0ba902b7"),
            );
        let host = &host;
        async move {
            if i % 2 == 0 {
                host.http_forwarded(req).await
            } else {
                host.http_payload(req).await
            }
        }
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == 200));
    let spans = receiver.spans();
    let missing: Vec<usize> = (0..CALLS)
        .filter(|i| {
            let trace = format!("{:032x}", 0xabc0_0000 + i);
            !spans
                .iter()
                .any(|s| s.name == "HttpTrigger" && s.trace_id == trace)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "calls whose span had not been exported when every reply was out: {missing:?}"
    );
}
