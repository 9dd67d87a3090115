//! The delivery history API (issue 15), end to end: the real binary behind the host emulator,
//! real deliveries to the SMTP fake recorded in the ledger by NightlyReport ticks, then
//! `GET /api/deliveries` and `GET /api/reports/{name}/deliveries` in both host modes:
//! identical answers, filters, the cursor, scoped keys (403 without `deliveries`, other reports
//! hidden as unknown), the OpenAPI document.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use crate::support::envelope::ClientRequest;
use crate::support::host::{AppDir, ClientResponse, Host, HostOptions, TimerVariant};
use crate::support::openapi;
use crate::support::smtp::SmtpServer;
use crate::support::wait::WITHIN;

/// Full access with the history (these values are in tests/secret-values.txt).
const OPS_KEY: &str = "history-ops-key-4d1e8b2a7c-padded-32";
/// Sees `daily` only, with the history.
const PARTNER_KEY: &str = "history-partner-key-9a3c5e7b1d-padded";
/// Every report, but not the history.
const VIEWER_KEY: &str = "history-viewer-key-6f2b8d4e0a-padded";

fn keys_doc() -> String {
    json!([
        {"name": "ops", "key": OPS_KEY, "reports": ["*"], "deliveries": true},
        {"name": "partner", "key": PARTNER_KEY, "reports": ["daily"], "deliveries": true},
        {"name": "viewer", "key": VIEWER_KEY, "reports": ["*"]},
    ])
    .to_string()
}

fn reports_toml() -> String {
    let report = |name: &str, schedule: &str| {
        format!(
            r#"
[[reports]]
name = "{name}"
title = "Test {name}"
schedule = "{schedule}"
time_zone = "Europe/Berlin"
recipients = ["ops@example.com"]

[[reports.sections]]
title = "Orders"
query = "SELECT COUNT(*) AS orders FROM orders WHERE created_at >= :start AND created_at < :end"
"#
        )
    };
    format!(
        "{}{}",
        report("daily", "0 0 6 * * *"),
        report("evening", "0 0 18 * * *")
    )
}

fn utc(d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap()
}

fn get(path: &str, key: &str) -> ClientRequest {
    ClientRequest::get(path).header("X-API-Key", key)
}

/// Sends in both modes, asserts they agree and that the answer is as documented.
async fn both(host: &Host, spec: &openapi::Spec, req: ClientRequest) -> ClientResponse {
    let payload = host.http_payload(req.clone()).await;
    let forwarded = host.http_forwarded(req.clone()).await;
    assert_eq!(
        payload, forwarded,
        "{}: the modes differ",
        req.path_and_query
    );
    let template = if req.path().starts_with("/api/deliveries") {
        "/deliveries"
    } else {
        "/reports/{name}/deliveries"
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

fn rows(resp: &ClientResponse) -> Vec<Value> {
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()["deliveries"].as_array().unwrap().clone()
}

fn keys_of(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            format!(
                "{}@{}",
                r["report"].as_str().unwrap(),
                r["occurrence"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn the_history_lists_pages_filters_and_respects_scopes_in_both_modes() {
    let spec = openapi::Spec::load();
    let app = AppDir::from_repo();
    app.write("reports.toml", &reports_toml());
    let smtp = SmtpServer::start();
    let mut opts = HostOptions::new(app.path()).setting("API_KEYS", keys_doc());
    for (k, v) in smtp.settings() {
        opts = opts.setting(&k, v);
    }
    let host = Host::start(opts).await;
    // Three days of `daily` (06:00 Berlin = 05:00Z) and one `evening` (18:00 = 17:00Z); the
    // 24th's evening is missed by more than catch_up at the tick of the 25th, 05:00Z, and
    // recorded as skipped.
    for at in [utc(24, 5), utc(25, 5), utc(25, 17), utc(26, 5)] {
        let inv = host
            .timer("NightlyReport", TimerVariant::Scheduled, at)
            .await;
        assert!(inv.succeeded(), "{:?}", inv.failure);
    }
    assert_eq!(smtp.wait_for(4, WITHIN).await.len(), 4);

    // Everything, newest first, with the local time and the Message-ID.
    let all = rows(&both(&host, &spec, get("/api/deliveries", OPS_KEY)).await);
    assert_eq!(
        keys_of(&all),
        [
            "daily@2026-11-26T05:00:00Z",
            "evening@2026-11-25T17:00:00Z",
            "daily@2026-11-25T05:00:00Z",
            "evening@2026-11-24T17:00:00Z",
            "daily@2026-11-24T05:00:00Z",
        ]
    );
    let first = &all[0];
    assert_eq!(first["state"], "sent");
    assert_eq!(first["kind"], "occurrence");
    assert_eq!(first["target"], Value::Null);
    assert_eq!(first["occurrence_local"], "2026-11-26T06:00:00+01:00");
    assert_eq!(first["time_zone"], "Europe/Berlin");
    assert_eq!(first["recipients"], 1);
    assert!(first["message_id"].as_str().unwrap().contains("daily"));

    let missed = &all[3];
    assert_eq!(missed["state"], "skipped");
    assert_eq!(missed["error"]["class"], "skipped");
    assert!(
        missed["error"]["text"]
            .as_str()
            .unwrap()
            .contains("catch_up")
    );
    assert!(missed.get("message_id").is_none());

    // Pages of one, following `next`, give the same rows; the last page has no `next`.
    let mut paged = Vec::new();
    let mut path = "/api/deliveries?limit=1".to_string();
    for _ in 0..10 {
        let page = both(&host, &spec, get(&path, OPS_KEY)).await;
        paged.extend(rows(&page));
        match page.json()["next"].as_str() {
            Some(c) => path = format!("/api/deliveries?limit=1&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(keys_of(&paged), keys_of(&all));

    // Filters: report, dates (UTC here), state; one report's own route (its local dates).
    let r = both(&host, &spec, get("/api/deliveries?report=evening", OPS_KEY)).await;
    assert_eq!(
        keys_of(&rows(&r)),
        [
            "evening@2026-11-25T17:00:00Z",
            "evening@2026-11-24T17:00:00Z"
        ]
    );
    let r = both(
        &host,
        &spec,
        get("/api/deliveries?from=2026-11-25&to=2026-11-25", OPS_KEY),
    )
    .await;
    assert_eq!(
        keys_of(&rows(&r)),
        ["evening@2026-11-25T17:00:00Z", "daily@2026-11-25T05:00:00Z"]
    );
    let r = both(&host, &spec, get("/api/deliveries?state=failed", OPS_KEY)).await;
    assert!(rows(&r).is_empty());
    let r = both(
        &host,
        &spec,
        get(
            "/api/reports/daily/deliveries?from=2026-11-25T00:00:00Z",
            OPS_KEY,
        ),
    )
    .await;
    assert_eq!(
        keys_of(&rows(&r)),
        ["daily@2026-11-26T05:00:00Z", "daily@2026-11-25T05:00:00Z"]
    );

    // The ETag answers a repeat with 304.
    let etag = r.header("etag").unwrap().to_string();
    let again = both(
        &host,
        &spec,
        get(
            "/api/reports/daily/deliveries?from=2026-11-25T00:00:00Z",
            OPS_KEY,
        )
        .header("If-None-Match", &etag),
    )
    .await;
    assert_eq!(again.status, 304);

    // Bad parameters are 400 problems naming the parameter.
    for (q, param) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("state=done", "state"),
        ("cursor=not-a-cursor", "cursor"),
        ("from=2026-13-01", "from"),
        ("from=2026-11-26&to=2026-11-24", "from"),
    ] {
        let r = both(&host, &spec, get(&format!("/api/deliveries?{q}"), OPS_KEY)).await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(
            r.json()["detail"].as_str().unwrap().starts_with(param),
            "{q}: {}",
            r.body
        );
    }

    // The partner sees its report's rows only; the other report is an unknown report.
    let partner = rows(&both(&host, &spec, get("/api/deliveries", PARTNER_KEY)).await);
    assert_eq!(partner.len(), 3);
    assert!(partner.iter().all(|r| r["report"] == "daily"));
    let r = rows(
        &both(
            &host,
            &spec,
            get("/api/deliveries?report=evening", PARTNER_KEY),
        )
        .await,
    );
    assert!(r.is_empty());
    let hidden = both(
        &host,
        &spec,
        get("/api/reports/evening/deliveries", PARTNER_KEY),
    )
    .await;
    let unknown = both(
        &host,
        &spec,
        get("/api/reports/nope/deliveries", PARTNER_KEY),
    )
    .await;
    assert_eq!(hidden.status, 404);
    assert_eq!(hidden.json()["type"], unknown.json()["type"]);
    assert_eq!(
        hidden.body.replace("evening", "X"),
        unknown.body.replace("nope", "X")
    );

    // A key without the history: 403, for the list and for one report.
    for path in ["/api/deliveries", "/api/reports/daily/deliveries"] {
        let r = both(&host, &spec, get(path, VIEWER_KEY)).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
    }
    // No key: 401.
    let r = both(&host, &spec, ClientRequest::get("/api/deliveries")).await;
    assert_eq!(r.status, 401);
}
