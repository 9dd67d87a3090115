//! The security review checklist of the hardening issue, as tests where a test can say it:
//! problem bodies never carry internal errors, size limits hold, the timer path is not reachable
//! from the public route space, and keys are compared in constant time (see `api::auth`, which
//! hashes both sides and compares with `subtle`; its unit tests cover the rotation overlap).

use crate::support::host::{AppDir, ClientRequest, Host, HostOptions};

const KEY: &str = "security-test-key-padded-to-32-chars";

async fn start(app: &AppDir) -> Host {
    Host::start(HostOptions::new(app.path()).setting("API_KEYS", KEY)).await
}

#[tokio::test]
async fn a_failing_query_gives_an_opaque_500_and_logs_the_cause_once() {
    let app = AppDir::from_repo();
    let reports = std::fs::read_to_string(app.path().join("reports.toml")).unwrap();
    app.write(
        "reports.toml",
        &reports.replace("FROM customers c", "FROM secret_internal_table c"),
    );
    let host = start(&app).await;
    let r = host
        .http_payload(
            ClientRequest::get("/api/reports/daily-sales?date=2026-11-01").header("X-API-Key", KEY),
        )
        .await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/problem+json")
    );
    assert!(
        !r.body.contains("secret_internal_table"),
        "internal detail leaked: {}",
        r.body
    );
    assert!(
        !r.body.to_ascii_lowercase().contains("sqlite"),
        "{}",
        r.body
    );
    let logged = host
        .stdout()
        .iter()
        .filter(|l| l.contains("secret_internal_table"))
        .count();
    assert_eq!(logged, 1, "the cause is logged once: {:?}", host.stdout());
}

#[tokio::test]
async fn the_timer_path_is_not_reachable_from_the_public_route_space() {
    let app = AppDir::from_repo();
    let host = start(&app).await;
    // Through the host (both modes): only the function's route is served.
    for path in [
        "/api/NightlyReport",
        "/api/reports/../../NightlyReport",
        "/NightlyReport",
        "/api/reports/x/NightlyReport",
    ] {
        for r in [
            host.http_forwarded(ClientRequest::get(path).header("X-API-Key", KEY))
                .await,
            host.http_payload(ClientRequest::get(path).header("X-API-Key", KEY))
                .await,
        ] {
            assert_eq!(r.status, 404, "{path}");
        }
    }
    // Even sent straight to the handler in the forwarded form, encoded traversal stays a
    // report name (unknown) and other methods are refused.
    for (method, path) in [
        ("GET", "/api/reports/..%2F..%2FNightlyReport"),
        ("POST", "/api/reports/..%2F..%2FNightlyReport"),
        ("POST", "/api/reports"),
    ] {
        let r = host
            .forward_raw(
                &ClientRequest::get(path)
                    .header("X-API-Key", KEY)
                    .method(method),
            )
            .await;
        assert!(
            r.status == 404 || r.status == 405,
            "{method} {path}: {}",
            r.status
        );
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/problem+json")
        );
    }
    // A GET on the invocation path is a JSON 405, never a tick.
    let (status, ct, body) = {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = client
            .get(format!("{}/NightlyReport", host.base_url()))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, r.text().await.unwrap())
    };
    assert_eq!(status, 405, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
    assert!(
        !host
            .stdout()
            .iter()
            .any(|l| l.contains("NightlyReport tick"))
    );
}

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused_and_the_handler_keeps_serving() {
    let app = AppDir::from_repo();
    let mut host = start(&app).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let huge = "x".repeat(512 * 1024);
    let r = client
        .get(format!("{}/api/reports", host.base_url()))
        .header("X-Big", &huge)
        .send()
        .await;
    if let Ok(r) = r {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    // 100 KB of headers: more than the Functions host itself accepts (32 KB), refused with 431.
    let r = client
        .get(format!("{}/api/reports", host.base_url()))
        .header("X-API-Key", KEY)
        .header("X-Big", "x".repeat(100 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    // 16 KB is fine.
    let r = client
        .get(format!("{}/api/reports", host.base_url()))
        .header("X-API-Key", KEY)
        .header("X-Big", "x".repeat(16 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _, _) = host
        .post_raw(
            "/HttpTrigger",
            Some("application/json"),
            vec![b'{'; 3 * 1024 * 1024],
            true,
        )
        .await;
    assert_eq!(status, 413);
    assert!(host.is_running());
    let r = host
        .http_payload(ClientRequest::get("/api/reports").header("X-API-Key", KEY))
        .await;
    assert_eq!(r.status, 200);
}
