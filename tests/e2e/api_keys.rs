//! API keys with names and scopes (issue 15), end to end: the real binary behind the host
//! emulator, with `API_KEYS` as a JSON list of named, scoped entries (plain and from the fake
//! Key Vault). A scoped key sees only its reports, in both host modes: the list is filtered and
//! every other report answers exactly as an unknown report would. Logs, spans and metrics name
//! the key, never the key itself; `handler check` describes the keys.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::support::envelope::{ClientRequest, http_payload_json};
use crate::support::host::{AppDir, ClientResponse, Host, HostOptions};
use crate::support::openapi;
use crate::support::otlp::Receiver;
use crate::support::vault::{self, FakeMsi, FakeVault};
use crate::support::wait::WITHIN;

/// Partner A's key: sees `daily-sales` only. (These values are in tests/secret-values.txt.)
const PARTNER_KEY: &str = "partner-a-key-7c3e91d0b5-padded-to-32";
/// Partner A's next key during a rotation: same name, same scope.
const PARTNER_NEXT_KEY: &str = "partner-a-next-key-2f6a8e14c9-padded";
/// The operations key: every report, deliveries and recipient keys.
const OPS_KEY: &str = "ops-key-5b0d27e3a1-padded-to-32-chars";

/// A second report, so that a scope has something to hide.
const SECOND_REPORT: &str = r#"

[[reports]]
name = "weekly-orders"
title = "Weekly orders"
schedule = "0 0 7 * * 1"
time_zone = "Europe/Berlin"
window = "7d"
recipients = ["Ops <ops@example.com>"]

[[reports.sections]]
title = "Orders by status"
query = "SELECT status, COUNT(*) AS orders FROM orders WHERE created_at >= :start AND created_at < :end GROUP BY status ORDER BY status"

[[reports.sections]]
title = "Orders"
query = "SELECT COUNT(*) AS orders FROM orders WHERE created_at >= :start AND created_at < :end"
"#;

fn keys_doc() -> String {
    json!([
        {"name": "partner-a", "key": PARTNER_KEY, "reports": ["daily-sales"]},
        {"name": "ops", "key": OPS_KEY, "reports": ["*"], "deliveries": true, "recipient_keys": true},
    ])
    .to_string()
}

/// The repository's app root with a second report.
fn app_with_two_reports() -> AppDir {
    let app = AppDir::from_repo();
    let reports = std::fs::read_to_string(app.path().join("reports.toml")).unwrap();
    app.write("reports.toml", &format!("{reports}{SECOND_REPORT}"));
    app
}

fn get(path: &str, key: &str) -> ClientRequest {
    ClientRequest::get(path).header("X-API-Key", key)
}

/// Sends in both modes, asserts they agree, checks the spec, returns the response.
async fn both(host: &Host, spec: &openapi::Spec, req: ClientRequest) -> ClientResponse {
    let payload = host.http_payload(req.clone()).await;
    let forwarded = host.http_forwarded(req.clone()).await;
    assert_eq!(
        payload, forwarded,
        "{}: the modes differ",
        req.path_and_query
    );
    let template = if req.path().trim_end_matches('/') == "/api/reports" {
        "/reports"
    } else {
        "/reports/{name}"
    };
    let errs = spec.check(
        template,
        payload.status,
        payload.header("content-type"),
        &payload.body,
    );
    assert!(errs.is_empty(), "{}: {errs:?}", req.path_and_query);
    payload
}

fn names(list: &ClientResponse) -> Vec<String> {
    assert_eq!(list.status, 200, "{}", list.body);
    list.json()["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_scoped_key_sees_only_its_reports_in_both_modes() {
    let spec = openapi::Spec::load();
    let app = app_with_two_reports();
    let host = Host::start(HostOptions::new(app.path()).setting("API_KEYS", keys_doc())).await;

    // The list: filtered for the partner, whole for the full-access key.
    let partner_list = both(&host, &spec, get("/api/reports", PARTNER_KEY)).await;
    assert_eq!(names(&partner_list), ["daily-sales"]);
    let ops_list = both(&host, &spec, get("/api/reports", OPS_KEY)).await;
    assert_eq!(names(&ops_list), ["daily-sales", "weekly-orders"]);
    assert_ne!(partner_list.header("etag"), ops_list.header("etag"));
    // The partner's list is the full list's entry for its report, byte for byte.
    assert_eq!(
        partner_list.json()["reports"][0],
        ops_list.json()["reports"][0]
    );
    // The full list's ETag does not make the partner's list a 304.
    let r = both(
        &host,
        &spec,
        get("/api/reports", PARTNER_KEY).header("If-None-Match", ops_list.header("etag").unwrap()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("weekly-orders"));

    // Its own report, in every text format.
    for q in ["", "?format=csv", "?format=csv&section=2", "?format=html"] {
        let r = both(
            &host,
            &spec,
            get(&format!("/api/reports/daily-sales{q}"), PARTNER_KEY),
        )
        .await;
        assert_eq!(r.status, 200, "{q}: {}", r.body);
    }

    // Any other report answers exactly as an unknown report, whatever the route's parameters
    // (format, section, window, conditional request), in both modes.
    for q in [
        "",
        "?format=csv",
        "?format=csv&section=2",
        "?format=html",
        "?format=xlsx",
        "?format=png&section=1",
        "?format=bogus",
        "?date=2026-11-01",
        "?from=2026-11-01&to=2026-11-03",
        "?date=not-a-date",
        "?section=9&format=csv",
    ] {
        let hidden = both(
            &host,
            &spec,
            get(&format!("/api/reports/weekly-orders{q}"), PARTNER_KEY),
        )
        .await;
        let unknown = both(
            &host,
            &spec,
            get(&format!("/api/reports/weekly-orderz{q}"), PARTNER_KEY),
        )
        .await;
        assert_eq!(hidden.status, unknown.status, "{q}");
        assert_eq!(hidden.headers, unknown.headers, "{q}");
        assert_eq!(
            hidden.body.replace("weekly-orders", "NAME"),
            unknown.body.replace("weekly-orderz", "NAME"),
            "{q}"
        );
        if !q.contains("bogus") && !q.contains("not-a-date") {
            assert_eq!(hidden.status, 404, "{q}: {}", hidden.body);
            assert_eq!(hidden.json()["type"], unknown.json()["type"]);
        }
    }
    // The full-access key sees it.
    let r = both(&host, &spec, get("/api/reports/weekly-orders", OPS_KEY)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["report"], "weekly-orders");

    // A wrong key is still 401, a missing one too.
    let r = both(&host, &spec, get("/api/reports/daily-sales", "not-a-key")).await;
    assert_eq!(r.status, 401);

    // The log names the key, never the key: the refusal, in the invocation's Logs (payload
    // mode) and on stdout.
    let inv = host
        .invoke(
            "HttpTrigger",
            &http_payload_json(
                "HttpTrigger",
                "req",
                &Map::from_iter([("name".to_string(), Value::from("weekly-orders"))]),
                &get("/api/reports/weekly-orders", PARTNER_KEY),
            ),
        )
        .await;
    assert!(inv.succeeded(), "{:?}", inv.failure);
    let logs = inv.logs.join("\n");
    assert!(
        logs.contains("api.key_name=partner-a") && logs.contains("weekly-orders"),
        "{logs}"
    );
    let out = host.output();
    assert!(out.contains("partner-a"), "{out}");
    assert!(out.contains("API_KEYS read: 2 named keys"), "{out}");
    for key in [PARTNER_KEY, OPS_KEY] {
        assert!(
            !out.contains(key) && !logs.contains(key),
            "a key reached the log"
        );
    }
}

#[tokio::test]
async fn comma_separated_keys_keep_full_access() {
    let spec = openapi::Spec::load();
    let app = app_with_two_reports();
    let keys = format!("{PARTNER_KEY},{OPS_KEY}");
    let host = Host::start(HostOptions::new(app.path()).setting("API_KEYS", keys)).await;
    for key in [PARTNER_KEY, OPS_KEY] {
        let list = both(&host, &spec, get("/api/reports", key)).await;
        assert_eq!(names(&list), ["daily-sales", "weekly-orders"]);
        let r = both(&host, &spec, get("/api/reports/weekly-orders", key)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let out = host.output();
    assert!(
        out.contains("2 keys, comma-separated, each with full access (key-1, key-2)"),
        "{out}"
    );
}

#[tokio::test]
async fn a_malformed_document_fails_closed_naming_the_entry_never_a_key() {
    let spec = openapi::Spec::load();
    let app = app_with_two_reports();
    let doc = json!([
        {"name": "partner-a", "key": PARTNER_KEY, "reports": ["daily-sales"]},
        {"name": "ops", "key": OPS_KEY, "reports": "*"},
    ])
    .to_string();
    let host = Host::start(HostOptions::new(app.path()).setting("API_KEYS", doc)).await;
    let r = both(&host, &spec, get("/api/reports", PARTNER_KEY)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.json()["detail"].as_str().unwrap().contains("API_KEYS"));
    let out = host.output();
    assert!(
        out.contains("API_KEYS: entry 2: `reports` must be a list"),
        "{out}"
    );
    for key in [PARTNER_KEY, OPS_KEY] {
        assert!(!out.contains(key) && !r.body.contains(key));
    }
}

#[tokio::test]
async fn scoped_keys_from_the_vault_with_a_rotation_under_one_name() {
    let spec = openapi::Spec::load();
    let vault = FakeVault::start().await;
    let msi = FakeMsi::start().await;
    vault.set_secret("api-keys", &keys_doc());
    let app = app_with_two_reports();
    let host = Host::start(
        HostOptions::new(app.path())
            .setting("API_KEYS", vault.reference("api-keys", None))
            .setting("SECRET_CACHE_TTL", "2s")
            .setting("SSL_CERT_FILE", vault.ca_pem_path().display().to_string())
            .setting("IDENTITY_ENDPOINT", msi.endpoint())
            .setting("IDENTITY_HEADER", msi.header()),
    )
    .await;
    let mut seen: Vec<ClientResponse> = Vec::new();
    let list = both(&host, &spec, get("/api/reports", PARTNER_KEY)).await;
    assert_eq!(names(&list), ["daily-sales"]);
    seen.push(list);
    let hidden = both(&host, &spec, get("/api/reports/weekly-orders", PARTNER_KEY)).await;
    assert_eq!(hidden.status, 404);
    seen.push(hidden);
    assert_eq!(
        names(&both(&host, &spec, get("/api/reports", OPS_KEY)).await),
        ["daily-sales", "weekly-orders"]
    );
    // Rotation: the partner's next key joins under the same name and scope, then the old one
    // leaves; the new key sees what the old one saw.
    vault.set_secret(
        "api-keys",
        &json!([
            {"name": "partner-a", "key": PARTNER_KEY, "reports": ["daily-sales"]},
            {"name": "partner-a", "key": PARTNER_NEXT_KEY, "reports": ["daily-sales"]},
            {"name": "ops", "key": OPS_KEY, "reports": ["*"], "deliveries": true},
        ])
        .to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while host
        .http_payload(get("/api/reports", PARTNER_NEXT_KEY))
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "the new key was not picked up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for key in [PARTNER_KEY, PARTNER_NEXT_KEY] {
        let list = both(&host, &spec, get("/api/reports", key)).await;
        assert_eq!(names(&list), ["daily-sales"]);
        seen.push(list);
    }
    vault.set_secret(
        "api-keys",
        &json!([
            {"name": "partner-a", "key": PARTNER_NEXT_KEY, "reports": ["daily-sales"]},
            {"name": "ops", "key": OPS_KEY, "reports": ["*"]},
        ])
        .to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while host
        .http_payload(get("/api/reports", PARTNER_KEY))
        .await
        .status
        != 401
    {
        assert!(Instant::now() < deadline, "the old key still works");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let r = both(
        &host,
        &spec,
        get("/api/reports/weekly-orders", PARTNER_NEXT_KEY),
    )
    .await;
    assert_eq!(r.status, 404);
    seen.push(r);
    // Nothing printed or answered holds a key or the vault token.
    let mut haystack = host.output();
    for r in &seen {
        haystack.push_str(&r.body);
        for (_, v) in &r.headers {
            haystack.push_str(v);
        }
    }
    assert!(haystack.contains("partner-a"), "the log names the key");
    for secret in [PARTNER_KEY, PARTNER_NEXT_KEY, OPS_KEY, vault::TOKEN] {
        assert!(!haystack.contains(secret), "a secret leaked");
    }
}

#[tokio::test]
async fn the_request_span_and_metric_carry_the_key_name() {
    let receiver = Receiver::start();
    let app = app_with_two_reports();
    let host = Host::start(
        HostOptions::new(app.path())
            .setting("API_KEYS", keys_doc())
            .setting("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
    )
    .await;
    for key in [PARTNER_KEY, OPS_KEY] {
        assert_eq!(
            host.http_payload(get("/api/reports", key)).await.status,
            200
        );
    }
    assert_eq!(
        host.http_forwarded(get("/api/reports/weekly-orders", PARTNER_KEY))
            .await
            .status,
        404
    );
    assert_eq!(
        host.http_payload(get("/api/reports", "not-a-key"))
            .await
            .status,
        401
    );
    let key_names = |r: &Receiver| -> Vec<String> {
        r.spans()
            .iter()
            .filter(|s| s.name == "HttpTrigger")
            .filter_map(|s| s.attrs.get("api.key_name").cloned())
            .collect()
    };
    assert!(
        receiver.wait(WITHIN, |r| key_names(r).len() >= 3).await,
        "{:?}",
        receiver.spans()
    );
    let mut names = key_names(&receiver);
    names.sort();
    assert_eq!(names, ["ops", "partner-a", "partner-a"]);
    let by_name = |r: &Receiver| -> BTreeMap<(String, String), f64> {
        let mut m = BTreeMap::new();
        for p in r.points("report_handler.api.requests") {
            let key = (
                p.attrs.get("api.key_name").cloned().unwrap_or_default(),
                p.attrs.get("status").cloned().unwrap_or_default(),
            );
            let v = m.entry(key).or_insert(0.0);
            *v = f64::max(*v, p.value);
        }
        m
    };
    assert!(
        receiver
            .wait(WITHIN, |r| {
                let m = by_name(r);
                m.get(&("partner-a".into(), "404".into())) == Some(&1.0)
                    && m.get(&("partner-a".into(), "200".into())) == Some(&1.0)
                    && m.get(&("ops".into(), "200".into())) == Some(&1.0)
                    && m.get(&(String::new(), "401".into())) == Some(&1.0)
            })
            .await,
        "{:?}",
        by_name(&receiver)
    );
    let dump = receiver.dump();
    for key in [PARTNER_KEY, OPS_KEY] {
        assert!(!dump.contains(key), "a key was exported");
    }
}

#[test]
fn check_describes_the_keys_and_warns_about_unknown_reports() {
    let app = app_with_two_reports();
    // The package layout: host.json starts ./handler.
    std::fs::copy(env!("CARGO_BIN_EXE_handler"), app.path().join("handler")).unwrap();
    let host_json = std::fs::read_to_string(app.path().join("host.json")).unwrap();
    app.write(
        "host.json",
        &host_json.replace("target/release/handler", "handler"),
    );
    let check = |keys: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_handler"))
            .current_dir(app.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("API_KEYS", keys)
            .arg("check")
            .output()
            .unwrap();
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let doc = json!([
        {"name": "partner-a", "key": PARTNER_KEY, "reports": ["daily-sales", "monthly-sales"]},
        {"name": "partner-a", "key": PARTNER_NEXT_KEY, "reports": ["monthly-sales", "daily-sales"]},
        {"name": "ops", "key": OPS_KEY, "reports": ["*"], "deliveries": true},
    ])
    .to_string();
    let (code, out) = check(&doc);
    assert_eq!(
        code,
        Some(0),
        "an unknown report is a warning, not a failure:\n{out}"
    );
    assert!(
        out.contains(
            "OK    secret API_KEYS: a plain value (fine locally; use a Key Vault reference in Azure); 3 named keys: partner-a (2 reports: daily-sales, monthly-sales, 2 keys in rotation); ops (all reports; deliveries)"
        ),
        "{out}"
    );
    assert!(
        out.contains("WARN  secret API_KEYS: key `partner-a` is scoped to report `monthly-sales`, which the reports file does not define"),
        "{out}"
    );
    // A malformed document fails, naming the entry and the field.
    let bad = json!([
        {"name": "partner-a", "key": PARTNER_KEY, "reports": ["daily-sales"]},
        {"name": "partner-a", "key": OPS_KEY, "reports": ["*"]},
    ])
    .to_string();
    let (code, bad_out) = check(&bad);
    assert_eq!(code, Some(1), "{bad_out}");
    assert!(
        bad_out.contains("FAIL  secret API_KEYS: API_KEYS: entries 1 and 2 are both named `partner-a` but grant different permissions"),
        "{bad_out}"
    );
    for key in [PARTNER_KEY, PARTNER_NEXT_KEY, OPS_KEY] {
        assert!(
            !out.contains(key) && !bad_out.contains(key),
            "a key was printed"
        );
    }
}
