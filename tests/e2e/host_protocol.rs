//! The foundation: the handler behind the host emulator speaks the Functions custom-handler
//! protocol (`docs/functions-protocol.md`) in every variant the host uses.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;

use crate::support::envelope;
use crate::support::host::{
    self, AppDir, ClientRequest, Host, HostOptions, READY_BUDGET, TimerVariant,
};

const KEY: &str = "protocol-test-key-padded-to-32-chars";

async fn start(app: &AppDir) -> Host {
    Host::start(HostOptions::new(app.path()).setting("API_KEYS", KEY)).await
}

/// A client GET with a valid API key.
fn get(path: &str) -> ClientRequest {
    ClientRequest::get(path).header("X-API-Key", KEY)
}

#[tokio::test]
async fn ready_within_the_host_budget_and_quiet_on_stderr() {
    let app = AppDir::from_repo();
    let mut host = start(&app).await;
    assert!(
        host.ready_after < READY_BUDGET,
        "ready after {:?}",
        host.ready_after
    );
    // Readiness is answered before any database, vault or SMTP work: well under a second.
    assert!(
        host.ready_after < Duration::from_secs(5),
        "ready after {:?}",
        host.ready_after
    );
    let (status, ct, body) = host.post_raw("/", None, vec![], false).await;
    assert_eq!(status, 200, "any method on / is the ping");
    assert!(ct.starts_with("application/json"), "{ct}: {body}");
    assert!(host.is_running());
    assert!(
        host.stderr().is_empty(),
        "stderr is logged as errors: {:?}",
        host.stderr()
    );
}

#[tokio::test]
async fn every_timer_variant_gets_a_json_reply_with_logs() {
    let app = AppDir::from_repo();
    let host = start(&app).await;
    let now = Utc.with_ymd_and_hms(2026, 3, 10, 5, 0, 0).unwrap()
        + chrono::Duration::nanoseconds(15_334_100);
    let variants = [
        TimerVariant::Scheduled,
        TimerVariant::PastDue {
            missed: now - chrono::Duration::minutes(7),
        },
        TimerVariant::FirstRun,
        TimerVariant::MonitorOff,
        TimerVariant::Manual,
    ];
    for v in variants {
        let inv = host.timer("NightlyReport", v, now).await;
        assert!(inv.succeeded(), "{v:?}: {:?} {}", inv.failure, inv.raw_body);
        assert_eq!(inv.status, 200, "{v:?}");
        assert!(inv.content_type.starts_with("application/json"));
        let body: serde_json::Value = serde_json::from_str(&inv.raw_body).unwrap();
        assert!(
            body.get("Outputs").is_some() && body.get("Logs").is_some(),
            "{body}"
        );
        assert!(body["ReturnValue"].is_null());
        // The invocation's own log lines come back in Logs, with the host's tick time.
        assert!(
            inv.logs
                .iter()
                .any(|l| l.contains("NightlyReport tick") && l.contains("2026-03-10T05:00:00")),
            "{v:?}: {:?}",
            inv.logs
        );
        let past_due = matches!(v, TimerVariant::PastDue { .. });
        assert!(
            inv.logs
                .iter()
                .any(|l| l.contains(&format!("past_due={past_due}"))),
            "{:?}",
            inv.logs
        );
    }
    // The same lines went to stdout (the host shows them live), none to stderr.
    assert!(
        host.stdout()
            .iter()
            .any(|l| l.contains("NightlyReport tick"))
    );
    assert!(host.stderr().is_empty(), "{:?}", host.stderr());
}

#[tokio::test]
async fn retry_context_is_read() {
    let app = AppDir::from_repo();
    let host = start(&app).await;
    let now = Utc::now();
    let payload = host.timer_payload("NightlyReport", TimerVariant::MonitorOff, now, Some(2));
    let inv = host.invoke("NightlyReport", &payload).await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    assert!(
        inv.logs.iter().any(|l| l.contains("retry_count=2")),
        "{:?}",
        inv.logs
    );
}

#[tokio::test]
async fn admin_endpoint_runs_the_timer_and_unknown_functions_are_404() {
    let app = AppDir::from_repo();
    let host = start(&app).await;
    let (status, inv) = host.admin_run("NightlyReport", Utc::now()).await;
    assert_eq!(status, 202);
    assert!(inv.unwrap().succeeded());
    assert_eq!(host.admin_run("NoSuchFunction", Utc::now()).await.0, 404);
}

#[tokio::test]
async fn http_trigger_answers_the_same_in_payload_and_forwarding_mode() {
    let app = AppDir::from_repo();
    let host = start(&app).await;
    let requests = [
        get("/api/reports"),
        get("/api/reports/"),
        get("/api/reports?tag=a&tag=b&x=%22q%22"),
        get("/api/reports/no-such-report?date=2026-01-02"),
        get("/api/reports/daily-sales?format=csv").header("Accept", "text/csv"),
    ];
    for req in requests {
        let payload = host.http_payload(req.clone()).await;
        let forwarded = host.http_forwarded(req.clone()).await;
        assert_eq!(payload.status, forwarded.status, "{}", req.path_and_query);
        assert_eq!(payload.body, forwarded.body, "{}", req.path_and_query);
        assert_eq!(payload.headers, forwarded.headers, "{}", req.path_and_query);
        assert!(payload.header("content-type").is_some());
    }
    let list = host.http_payload(get("/api/reports")).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(
        list.json()["reports"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{}",
        list.body
    );
    let missing = host.http_payload(get("/api/reports/no-such-report")).await;
    assert_eq!(missing.status, 404);
    assert!(
        missing
            .header("content-type")
            .unwrap()
            .starts_with("application/problem+json")
    );
    assert_eq!(missing.json()["status"], 404);
    // Routes outside the function's route never reach the handler.
    assert_eq!(host.http_payload(get("/api/other")).await.status, 404);
}

#[tokio::test]
async fn http_payload_variants_are_accepted() {
    let app = AppDir::from_repo();
    let host = start(&app).await;
    let def = host.functions["HttpTrigger"].clone();
    // POST bodies (JSON, text, octet-stream) and route params, sent straight as envelopes:
    // the host would only do this for methods in function.json, but the parser must cope.
    for (ct, body) in [
        (
            "application/json",
            br#"{"name":"Azure","count":3,"tags":["x"]}"#.to_vec(),
        ),
        ("text/plain", b"hello world".to_vec()),
        ("application/octet-stream", vec![0, 1, 2, 3, 255]),
    ] {
        let req = get("/api/reports/daily-sales?x=1")
            .method("POST")
            .body(ct, &body);
        let params = host::match_route("reports/{name?}", "/reports/daily-sales").unwrap();
        let payload = envelope::http_payload_json(&def.name, &def.trigger_name(), &params, &req);
        let inv = host.invoke("HttpTrigger", &payload).await;
        assert!(inv.succeeded(), "{ct}: {:?}", inv.failure);
        let res = host::http_output_to_response(&inv.outputs, "res").unwrap();
        assert_eq!(res.status, 405, "{ct}: {}", res.body);
        assert_eq!(res.header("allow"), Some("GET"));
    }
}

#[tokio::test]
async fn malformed_invocations_get_4xx_json_and_the_handler_keeps_serving() {
    let app = AppDir::from_repo();
    let mut host = start(&app).await;
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        ("/NightlyReport", Some("application/json"), b"not json".to_vec(), 400),
        ("/NightlyReport", Some("application/json"), b"[1,2]".to_vec(), 400),
        ("/NightlyReport", Some("application/json"), b"{}".to_vec(), 400),
        ("/NightlyReport", Some("application/json"), br#"{"Data":{},"Metadata":{}}"#.to_vec(), 400),
        ("/NightlyReport", Some("application/json"),
            br#"{"Data":{"timer":{"ScheduleStatus":{"Next":"soon"},"IsPastDue":false}},"Metadata":{}}"#.to_vec(), 400),
        ("/NightlyReport", Some("text/plain"), br#"{"Data":{},"Metadata":{}}"#.to_vec(), 415),
        ("/NightlyReport", None, br#"{"Data":{},"Metadata":{}}"#.to_vec(), 415),
        ("/HttpTrigger", Some("application/json"), br#"{"Data":{"req":{"Method":7}},"Metadata":{}}"#.to_vec(), 400),
        ("/HttpTrigger", Some("application/json"), br#"{"Data":{"req":"nope"},"Metadata":{}}"#.to_vec(), 400),
        ("/HttpTrigger", Some("application/json"), br#"{"Data":{"req":{"Method":"G E T"}},"Metadata":{}}"#.to_vec(), 400),
        ("/NoSuchFunction", Some("application/json"), br#"{"Data":{},"Metadata":{}}"#.to_vec(), 404),
        ("/NightlyReport", Some("application/json"), vec![b' '; 2 * 1024 * 1024], 413),
    ];
    for chunked in [false, true] {
        for (path, ct, body, want) in &cases {
            let (status, rct, text) = host.post_raw(path, *ct, body.clone(), chunked).await;
            assert_eq!(status, *want, "{path} {ct:?} chunked={chunked}: {text}");
            assert!(rct.starts_with("application/json"), "{path}: {rct}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(
                v["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{text}"
            );
        }
    }
    assert!(host.is_running());
    let inv = host
        .timer("NightlyReport", TimerVariant::Scheduled, Utc::now())
        .await;
    assert!(inv.succeeded());
}

#[tokio::test]
async fn concurrent_invocations_on_pooled_connections() {
    let app = AppDir::from_repo();
    let host = std::sync::Arc::new(start(&app).await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let h = host.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                h.timer("NightlyReport", TimerVariant::Scheduled, Utc::now())
                    .await
                    .succeeded()
            } else {
                h.http_payload(get("/api/reports")).await.status == 200
            }
        }));
    }
    for t in tasks {
        assert!(
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .unwrap()
                .unwrap()
        );
    }
}

#[tokio::test]
async fn missing_or_bad_port_exits_non_zero_with_one_line() {
    let exe = env!("CARGO_BIN_EXE_handler");
    for port in [None, Some("not-a-port"), Some("0"), Some("70000")] {
        let mut cmd = std::process::Command::new(exe);
        cmd.env_clear();
        if let Some(p) = port {
            cmd.env("FUNCTIONS_CUSTOMHANDLER_PORT", p);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{port:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("FUNCTIONS_CUSTOMHANDLER_PORT"), "{err}");
        if let Some(p) = port {
            assert!(
                !err.contains(&format!("`{p}`")),
                "the value is not echoed: {err}"
            );
        }
    }
}

#[tokio::test]
async fn bad_settings_exit_non_zero_naming_the_setting() {
    let app = AppDir::from_repo();
    let err = Host::try_start(HostOptions::new(app.path()).setting("LOG_FORMAT", "yaml-please"))
        .await
        .err()
        .expect("must not start");
    assert!(err.contains("LOG_FORMAT"), "{err}");
    assert!(!err.contains("yaml-please"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_shuts_down_gracefully_within_the_bound() {
    let app = AppDir::from_repo();
    let mut host = start(&app).await;
    let pid = host.pid().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = host
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits within the grace bound");
    assert_eq!(code, Some(0));
    assert!(
        host.wait_for_stdout("shutdown signal received", Duration::from_secs(1))
            .await
    );
}

#[tokio::test]
async fn route_prefix_comes_from_host_json() {
    let app = AppDir::from_repo();
    let p = app.path().join("host.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["extensions"]["http"]["routePrefix"] = json!("v1");
    std::fs::write(&p, v.to_string()).unwrap();
    let host = start(&app).await;
    assert_eq!(host.route_prefix, "v1");
    let r = host.http_forwarded(get("/v1/reports")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = host.http_payload(get("/v1/reports")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The old prefix is not served by the handler either.
    let r = host.forward_raw(&get("/api/reports")).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn forwarding_mode_from_host_json() {
    let app = AppDir::from_repo();
    app.set_forwarding(true);
    let host = start(&app).await;
    assert!(host.forwarding);
    let r = host.http(get("/api/reports")).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn a_broken_reports_file_keeps_the_handler_up_and_says_what_is_wrong() {
    let app = AppDir::from_repo();
    app.write(
        "reports.toml",
        "[[reports]]\nname = \"x\"\nschedule = \"every day\"\nrecipients = []\n",
    );
    let mut host = start(&app).await;
    let r = host.http_payload(get("/api/reports")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    let inv = host
        .timer("NightlyReport", TimerVariant::Scheduled, Utc::now())
        .await;
    assert_eq!(inv.status, 500, "the host records a failed invocation");
    assert!(host.is_running());
    // The log says which line and field.
    assert!(
        host.stdout().iter().any(|l| l.contains("reports.toml:3")),
        "{:?}",
        host.stdout()
    );
}
