//! `GET /api/health` end to end: the real binary behind the host emulator, in payload and
//! forwarding mode (both must agree), on the embedded default and with a dependency broken.
//! The body names checks, never a value, address or dependency error text.

use serde_json::Value;

use crate::support::host::{AppDir, ClientRequest, ClientResponse, Host, HostOptions};
use crate::support::openapi;

const KEY: &str = "health-key-0123456789-padded-to-32chars";
const DB_PASSWORD: &str = "health-db-password-never-shown";

async fn start(app: &AppDir, forwarding: bool, settings: &[(&str, &str)]) -> Host {
    app.set_forwarding(forwarding);
    let mut opts = HostOptions::new(app.path()).setting("API_KEYS", KEY);
    for (k, v) in settings {
        opts = opts.setting(k, *v);
    }
    Host::start(opts).await
}

/// The health answer in the mode the host runs in; no API key is presented.
async fn health(host: &Host) -> (ClientResponse, Value) {
    let resp = host.http(ClientRequest::get("/api/health")).await;
    let body: Value = serde_json::from_str(&resp.body)
        .unwrap_or_else(|e| panic!("health body is not JSON ({e}): {}", resp.body));
    let errs = openapi::Spec::load().check(
        "/health",
        resp.status,
        resp.header("content-type"),
        &resp.body,
    );
    assert!(
        errs.is_empty(),
        "/health does not conform: {errs:?}\n{}",
        resp.body
    );
    (resp, body)
}

fn assert_reveals_nothing(body: &str) {
    for secret in [KEY, DB_PASSWORD, "127.0.0.1", "postgres", "sqlite"] {
        assert!(
            !body.contains(secret),
            "the health body shows {secret:?}: {body}"
        );
    }
}

#[tokio::test]
async fn healthy_on_the_embedded_default_in_both_modes() {
    for forwarding in [false, true] {
        let app = AppDir::from_repo();
        let host = start(&app, forwarding, &[]).await;
        let (resp, body) = health(&host).await;
        assert_eq!(resp.status, 200, "forwarding={forwarding}: {}", resp.body);
        assert_eq!(body["status"], "ok", "{body}");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        for check in ["reports", "database", "ledger", "mail", "secret.API_KEYS"] {
            assert_eq!(body["checks"][check], "ok", "{check}: {body}");
        }
        assert_eq!(resp.header("cache-control"), Some("no-store"));
        assert_reveals_nothing(&resp.body);
    }
}

#[tokio::test]
async fn a_dead_database_is_a_503_naming_the_database_check_in_both_modes() {
    // A port nothing listens on: the connection is refused at once.
    let url = format!("postgres://reports:{DB_PASSWORD}@127.0.0.1:1/shop");
    for forwarding in [false, true] {
        let app = AppDir::from_repo();
        let host = start(&app, forwarding, &[("DATABASE_URL", &url)]).await;
        let (resp, body) = health(&host).await;
        assert_eq!(resp.status, 503, "forwarding={forwarding}: {}", resp.body);
        assert_eq!(body["status"], "fail", "{body}");
        assert_eq!(body["checks"]["database"], "fail", "{body}");
        assert_eq!(body["checks"]["reports"], "ok", "{body}");
        assert_eq!(body["checks"]["ledger"], "ok", "{body}");
        assert_reveals_nothing(&resp.body);
        // The log has the detail (the check's name), the body does not.
        assert!(
            host.output().contains("health check failed"),
            "{}",
            host.output()
        );
        assert!(!host.output().contains(DB_PASSWORD));
    }
}

#[tokio::test]
async fn a_broken_reports_file_is_a_503_naming_the_reports_check_in_both_modes() {
    for forwarding in [false, true] {
        let app = AppDir::from_repo();
        app.write(
            "reports.toml",
            "[[report]]\nname = \"x\"\nthis is not toml\n",
        );
        let host = start(&app, forwarding, &[]).await;
        let (resp, body) = health(&host).await;
        assert_eq!(resp.status, 503, "forwarding={forwarding}: {}", resp.body);
        assert_eq!(body["checks"]["reports"], "fail", "{body}");
        assert_eq!(body["checks"]["database"], "ok", "{body}");
        assert_reveals_nothing(&resp.body);
    }
}

#[tokio::test]
async fn a_refused_api_key_fails_its_secret_check() {
    let app = AppDir::from_repo();
    let host = start(&app, false, &[("API_KEYS", "short")]).await;
    let (resp, body) = health(&host).await;
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert_eq!(body["checks"]["secret.API_KEYS"], "fail", "{body}");
    assert!(!resp.body.contains("short\""), "{}", resp.body);
}

#[tokio::test]
async fn answers_are_cached_briefly_and_other_methods_are_refused() {
    let app = AppDir::from_repo();
    let host = start(&app, true, &[]).await;
    let (first, _) = health(&host).await;
    let (second, _) = health(&host).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, second.body);
    let post = host
        .forward_raw(&ClientRequest::get("/api/health").method("POST"))
        .await;
    assert_eq!(post.status, 405, "{}", post.body);
}
