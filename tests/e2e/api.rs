//! HttpTrigger end to end: the real binary behind the host emulator, in payload and forwarding
//! mode, on the embedded sample SQLite database. Every response is also checked against
//! `openapi.yaml`.

use chrono::{Duration as ChronoDuration, NaiveDate, TimeZone, Utc};

use crate::support::host::{AppDir, ClientRequest, ClientResponse, Host, HostOptions};
use crate::support::openapi;

const KEY: &str = "test-key-0123456789-padded-to-32-chars";
const OTHER_KEY: &str = "second-key-abcdef-padded-to-32-chars";

async fn start_with(settings: &[(&str, &str)]) -> (AppDir, Host) {
    let app = AppDir::from_repo();
    let mut opts = HostOptions::new(app.path());
    for (k, v) in settings {
        opts = opts.setting(k, *v);
    }
    let host = Host::start(opts).await;
    (app, host)
}

fn authed(path: &str) -> ClientRequest {
    ClientRequest::get(path).header("Authorization", &format!("Bearer {KEY}"))
}

/// Sends in both modes, asserts they agree, checks the spec, returns the response.
async fn both(host: &Host, spec: &openapi::Spec, req: ClientRequest) -> ClientResponse {
    let payload = host.http_payload(req.clone()).await;
    let forwarded = host.http_forwarded(req.clone()).await;
    assert_eq!(
        payload.status, forwarded.status,
        "{}: {}",
        req.path_and_query, payload.body
    );
    assert_eq!(payload.headers, forwarded.headers, "{}", req.path_and_query);
    assert_eq!(payload.body, forwarded.body, "{}", req.path_and_query);
    let template = if req
        .path_and_query
        .split('?')
        .next()
        .unwrap()
        .trim_end_matches('/')
        == "/api/reports"
    {
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
    assert!(
        errs.is_empty(),
        "{} does not conform: {errs:?}\n{}",
        req.path_and_query,
        payload.body
    );
    payload
}

fn yesterday_berlin() -> NaiveDate {
    Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .date_naive()
        - ChronoDuration::days(1)
}

#[tokio::test]
async fn list_and_auth() {
    let spec = openapi::Spec::load();
    let keys = format!("{KEY},{OTHER_KEY}");
    let (_app, host) = start_with(&[("API_KEYS", &keys)]).await;
    let list = both(&host, &spec, authed("/api/reports")).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let v = list.json();
    let r = &v["reports"][0];
    assert_eq!(r["name"], "daily-sales");
    assert_eq!(r["time_zone"], "Europe/Berlin");
    assert_eq!(r["window"], "previous_day");
    assert_eq!(r["sections"].as_array().unwrap().len(), 4);
    assert_eq!(r["sections"][2], "Orders by hour");
    // The second key of a rotation overlap works too, as X-API-Key.
    let alt = both(
        &host,
        &spec,
        ClientRequest::get("/api/reports").header("X-API-Key", OTHER_KEY),
    )
    .await;
    assert_eq!(alt.status, 200);
    for req in [
        ClientRequest::get("/api/reports"),
        ClientRequest::get("/api/reports").header("Authorization", "Bearer wrong"),
        ClientRequest::get("/api/reports").header("X-API-Key", &KEY[..KEY.len() - 1]),
        ClientRequest::get("/api/reports/daily-sales")
            .header("Authorization", &format!("Basic {KEY}")),
        ClientRequest::get("/api/reports/no-such").header("X-API-Key", "nope"),
    ] {
        let r = both(&host, &spec, req.clone()).await;
        assert_eq!(r.status, 401, "{}", req.path_and_query);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(!r.body.contains("daily-sales"));
    }
    assert!(
        !host.output().contains(KEY),
        "the key never reaches the log"
    );
    assert!(!host.output().contains(OTHER_KEY));
}

#[tokio::test]
async fn unconfigured_keys_fail_closed() {
    let spec = openapi::Spec::load();
    let (_app, host) = start_with(&[]).await;
    for path in ["/api/reports", "/api/reports/daily-sales"] {
        let r = both(&host, &spec, authed(path)).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert!(r.header("retry-after").is_some());
        assert!(r.json()["detail"].as_str().unwrap().contains("API_KEYS"));
    }
}

#[tokio::test]
async fn weak_keys_are_refused_like_no_keys() {
    let spec = openapi::Spec::load();
    const SHORT: &str = "short-key-0a1b2c";
    const PLACEHOLDER: &str = "replace-with-a-long-random-key";
    for weak in [SHORT, PLACEHOLDER] {
        let (_app, host) = start_with(&[("API_KEYS", weak)]).await;
        let mut req = authed("/api/reports");
        req = req.header("Authorization", &format!("Bearer {weak}"));
        let r = both(&host, &spec, req).await;
        assert_eq!(r.status, 503, "{weak}: {}", r.body);
        assert!(r.json()["detail"].as_str().unwrap().contains("API_KEYS"));
        assert!(!r.body.contains(weak), "the key never reaches a body");
        assert!(
            !host.output().contains(weak),
            "the key never reaches the log"
        );
        assert!(host.output().contains("API_KEYS"), "the log says why");
    }
}

#[tokio::test]
async fn report_by_date_range_and_formats() {
    let spec = openapi::Spec::load();
    let (app, host) = start_with(&[("API_KEYS", KEY)]).await;
    let d = yesterday_berlin();
    let r = both(
        &host,
        &spec,
        authed(&format!("/api/reports/daily-sales?date={d}")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["report"], "daily-sales");
    assert_eq!(v["window"]["date"], d.to_string());
    assert_eq!(v["window"]["time_zone"], "Europe/Berlin");
    let start = chrono_tz::Europe::Berlin
        .from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
        .earliest()
        .unwrap()
        .with_timezone(&Utc);
    let got_start: chrono::DateTime<Utc> = v["window"]["start"].as_str().unwrap().parse().unwrap();
    assert_eq!(got_start, start);
    let sections = v["sections"].as_array().unwrap();
    assert_eq!(sections.len(), 4);
    // The data matches the database: total orders in the window, counted independently.
    let db = app.path().join("data/sample.sqlite");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    let fmt = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let end = start + ChronoDuration::hours(24);
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM orders WHERE created_at >= ?1 AND created_at < ?2")
            .bind(fmt(start))
            .bind(fmt(end))
            .fetch_one(&pool)
            .await
            .unwrap();
    let api_total: i64 = sections[0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[1].as_i64().unwrap())
        .sum();
    assert!(count > 0, "the sample database has orders yesterday");
    assert_eq!(api_total, count);

    // The same in CSV (query and Accept), a later section, and the email's HTML.
    let csv = both(
        &host,
        &spec,
        authed(&format!("/api/reports/daily-sales?date={d}&format=csv")),
    )
    .await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(
        csv.body.starts_with("status,orders,revenue_cents\r\n"),
        "{}",
        csv.body
    );
    let csv2 = both(
        &host,
        &spec,
        authed(&format!("/api/reports/daily-sales?date={d}")).header("Accept", "text/csv"),
    )
    .await;
    assert_eq!(csv2.body, csv.body);
    let s2 = both(
        &host,
        &spec,
        authed(&format!(
            "/api/reports/daily-sales?date={d}&format=csv&section=2"
        )),
    )
    .await;
    assert!(
        s2.body.starts_with("sku,name,units,revenue_cents"),
        "{}",
        s2.body
    );
    let html = both(
        &host,
        &spec,
        authed(&format!("/api/reports/daily-sales?date={d}&format=html")),
    )
    .await;
    assert!(
        html.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(html.body.contains("<table"));
    // Ranges: dates (inclusive `to`) and instants.
    let from = d - ChronoDuration::days(6);
    let week = both(
        &host,
        &spec,
        authed(&format!("/api/reports/daily-sales?from={from}&to={d}")),
    )
    .await;
    assert_eq!(week.status, 200, "{}", week.body);
    let wv = week.json();
    let ws: chrono::DateTime<Utc> = wv["window"]["start"].as_str().unwrap().parse().unwrap();
    let we: chrono::DateTime<Utc> = wv["window"]["end"].as_str().unwrap().parse().unwrap();
    assert!(
        we - ws >= ChronoDuration::hours(7 * 24 - 1)
            && we - ws <= ChronoDuration::hours(7 * 24 + 1)
    );
    let inst = both(
        &host,
        &spec,
        authed("/api/reports/daily-sales?from=2026-01-01T00:00:00Z&to=2026-01-01T12:00:00%2B01:00"),
    )
    .await;
    assert_eq!(inst.status, 200, "{}", inst.body);
    // No parameters: the most recent completed window (yesterday for previous_day).
    let latest = both(&host, &spec, authed("/api/reports/daily-sales")).await;
    assert_eq!(latest.status, 200);
    assert_eq!(latest.json()["window"]["date"], d.to_string());
}

#[tokio::test]
async fn etag_and_cache_headers() {
    let spec = openapi::Spec::load();
    let (_app, host) = start_with(&[("API_KEYS", KEY)]).await;
    let d = yesterday_berlin();
    let path = format!("/api/reports/daily-sales?date={d}");
    let first = both(&host, &spec, authed(&path)).await;
    let etag = first.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"));
    assert!(
        first
            .header("cache-control")
            .unwrap()
            .starts_with("private, max-age=")
    );
    let again = both(&host, &spec, authed(&path).header("If-None-Match", &etag)).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let other = both(
        &host,
        &spec,
        authed(&path).header("If-None-Match", "\"nope\""),
    )
    .await;
    assert_eq!(other.status, 200);
    // A window that has not ended is not cached.
    let today = d + ChronoDuration::days(1);
    // (Each run of an open window has its own generated_at, so the modes are not compared.)
    let open = host
        .http_payload(authed(&format!("/api/reports/daily-sales?date={today}")))
        .await;
    assert_eq!(open.status, 200);
    assert_eq!(open.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn every_error_status_has_a_problem_body() {
    let spec = openapi::Spec::load();
    let (_app, host) = start_with(&[("API_KEYS", KEY), ("MAX_RANGE_DAYS", "31")]).await;
    let cases = [
        ("/api/reports/daily-sales?date=2026-02-30", 400),
        ("/api/reports/daily-sales?date=tomorrow", 400),
        (
            "/api/reports/daily-sales?from=2026-03-10&to=2026-03-01",
            400,
        ),
        (
            "/api/reports/daily-sales?from=2026-01-01&to=2026-03-01",
            400,
        ),
        ("/api/reports/daily-sales?from=2026-01-01", 400),
        ("/api/reports/daily-sales?format=xml", 400),
        ("/api/reports/daily-sales?format=csv&section=9", 400),
        ("/api/reports/no-such-report", 404),
    ];
    for (path, status) in cases {
        let r = both(&host, &spec, authed(path)).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/problem+json")
        );
        let v = r.json();
        assert_eq!(v["status"], status);
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let r = both(
        &host,
        &spec,
        authed("/api/reports/daily-sales").header("Accept", "application/xml"),
    )
    .await;
    assert_eq!(r.status, 406);
    // 405: the host only routes GET, so a POST reaches us only when forwarded by hand.
    let r = host
        .forward_raw(&authed("/api/reports/daily-sales").method("POST"))
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
}

#[tokio::test]
async fn a_database_that_is_down_gives_503_and_no_data() {
    let spec = openapi::Spec::load();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://reports:pw-never-shown@127.0.0.1:{port}/reports");
    let (_app, host) = start_with(&[
        ("API_KEYS", KEY),
        ("DATABASE_URL", &url),
        ("QUERY_TIMEOUT", "5s"),
    ])
    .await;
    let started = std::time::Instant::now();
    let r = both(
        &host,
        &spec,
        authed("/api/reports/daily-sales?date=2026-11-01"),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(!r.body.contains("pw-never-shown") && !host.output().contains("pw-never-shown"));
    // The list needs no database.
    assert_eq!(both(&host, &spec, authed("/api/reports")).await.status, 200);
}

#[tokio::test]
async fn identical_concurrent_requests_run_the_sql_once() {
    let (_app, host) = start_with(&[("API_KEYS", KEY)]).await;
    let host = std::sync::Arc::new(host);
    let d = yesterday_berlin() - ChronoDuration::days(3);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let h = host.clone();
        let path = format!("/api/reports/daily-sales?date={d}");
        tasks.push(tokio::spawn(async move {
            h.http_forwarded(authed(&path)).await
        }));
    }
    let mut bodies = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        bodies.insert(r.body);
    }
    // One run: every response carries the same generated_at, hence the same body.
    assert_eq!(bodies.len(), 1);
    let runs = host
        .stdout()
        .iter()
        .filter(|l| l.contains("report run") && l.contains("daily-sales"))
        .count();
    assert_eq!(runs, 1, "{:?}", host.stdout());
}

/// The workbook and the charts are binary: served in forwarding mode (and by `handler dev`)
/// with their content types, file name, ETag and 304; in payload mode, whose `body` is text,
/// the API answers 406 and says how to get them.
#[tokio::test]
async fn xlsx_and_png_in_forwarding_mode_and_406_in_payload_mode() {
    use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
    let spec = openapi::Spec::load();
    let (_app, host) = start_with(&[("API_KEYS", KEY)]).await;
    let d = yesterday_berlin();
    let check = |r: &ClientResponse, body: &str| {
        let errs = spec.check("/reports/{name}", r.status, r.header("content-type"), body);
        assert!(errs.is_empty(), "does not conform: {errs:?}");
    };

    // The workbook: one sheet per section, labels, scaled money, the totals row.
    let path = format!("/api/reports/daily-sales?date={d}&format=xlsx");
    let (r, bytes) = host.forward_bytes(&authed(&path)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&bytes));
    check(&r, "");
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    );
    assert_eq!(
        r.header("content-disposition"),
        Some(format!("attachment; filename=\"daily-sales-{d}.xlsx\"").as_str())
    );
    let json = both(
        &host,
        &spec,
        authed(&format!("/api/reports/daily-sales?date={d}")),
    )
    .await
    .json();
    let mut wb: Xlsx<_> = open_workbook_from_rs(std::io::Cursor::new(bytes.clone())).unwrap();
    assert_eq!(
        wb.sheet_names(),
        [
            "Orders by status",
            "Top products",
            "Orders by hour",
            "New customers"
        ]
    );
    let sheet = wb.worksheet_range("Orders by status").unwrap();
    assert_eq!(
        sheet.get_value((0, 0)),
        Some(&Data::String("Status".into()))
    );
    assert_eq!(
        sheet.get_value((0, 2)),
        Some(&Data::String("Revenue".into()))
    );
    let rows = json["sections"][0]["rows"].as_array().unwrap();
    let (orders, cents) = rows.iter().fold((0i64, 0i64), |(o, c), row| {
        (o + row[1].as_i64().unwrap(), c + row[2].as_i64().unwrap())
    });
    let total_row = (rows.len() + 1) as u32;
    assert_eq!(
        sheet.get_value((total_row, 0)),
        Some(&Data::String("Total".into()))
    );
    assert_eq!(
        sheet.get_value((total_row, 1)),
        Some(&Data::Float(orders as f64))
    );
    match sheet.get_value((total_row, 2)) {
        Some(Data::Float(euros)) => assert!((euros - cents as f64 / 100.0).abs() < 1e-6),
        other => panic!("revenue total in euros, got {other:?}"),
    }
    let etag = r.header("etag").expect("an ETag").to_string();
    let (again, body) = host
        .forward_bytes(&authed(&path).header("If-None-Match", &etag))
        .await;
    assert_eq!(again.status, 304);
    assert!(body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let (same, same_bytes) = host.forward_bytes(&authed(&path)).await;
    assert_eq!(
        (same.header("etag"), same_bytes),
        (Some(etag.as_str()), bytes)
    );

    // Each chart as PNG, drawn at twice the size the HTML states for it.
    let html = both(
        &host,
        &spec,
        authed(&format!("/api/reports/daily-sales?date={d}&format=html")),
    )
    .await
    .body;
    let stated = |attr: &str| -> u32 {
        html.split("<img ")
            .nth(1)
            .and_then(|img| img.split(&format!(" {attr}=\"")).nth(1))
            .and_then(|r| r.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the chart <img> states its {attr}"))
    };
    let (w, h) = (stated("width"), stated("height"));
    for section in [1, 3] {
        let path = format!("/api/reports/daily-sales?date={d}&format=png&section={section}");
        let (r, png) = host.forward_bytes(&authed(&path)).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&png));
        check(&r, "");
        assert_eq!(r.header("content-type"), Some("image/png"));
        let reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .expect("a PNG");
        assert_eq!((reader.info().width, reader.info().height), (2 * w, 2 * h));
        let etag = r.header("etag").expect("an ETag").to_string();
        let (again, _) = host
            .forward_bytes(&authed(&path).header("If-None-Match", &etag))
            .await;
        assert_eq!(again.status, 304);
    }
    // A section without a chart.
    let (r, body) = host
        .forward_bytes(&authed(&format!(
            "/api/reports/daily-sales?date={d}&format=png&section=2"
        )))
        .await;
    assert_eq!(r.status, 404);
    check(&r, &String::from_utf8_lossy(&body));

    // Payload mode cannot carry them: 406, a problem that says what to do instead.
    for path in [
        format!("/api/reports/daily-sales?date={d}&format=xlsx"),
        format!("/api/reports/daily-sales?date={d}&format=png&section=1"),
    ] {
        let r = host.http_payload(authed(&path)).await;
        assert_eq!(r.status, 406, "{path}: {}", r.body);
        check(&r, &r.body);
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("application/problem+json")
        );
        let v = r.json();
        assert!(
            v["type"]
                .as_str()
                .unwrap()
                .ends_with("binary-needs-forwarding"),
            "{v}"
        );
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("enableForwardingHttpRequest"),
            "{v}"
        );
    }
}

/// An invalid reports file (here: values the presentation contract refuses) does not stop the
/// handler, which keeps answering: 503 with a problem pointing to the log and `handler check`.
#[tokio::test]
async fn an_invalid_reports_file_answers_503() {
    let spec = openapi::Spec::load();
    let sample = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reports.toml"),
    )
    .unwrap();
    for (from, to) in [
        ("locale = \"en-US\"", "locale = \"xx-XX\""),
        ("format = \"integer\"   #", "format = \"integr\"   #"),
        ("currency = \"EUR\"     #", "currency = \"EUX\"     #"),
        ("type = \"bar\"", "type = \"pie\""),
    ] {
        assert!(sample.contains(from), "{from}");
        let app = AppDir::from_repo();
        app.write("reports.toml", &sample.replacen(from, to, 1));
        let host = Host::start(HostOptions::new(app.path()).setting("API_KEYS", KEY)).await;
        let r = both(&host, &spec, authed("/api/reports/daily-sales")).await;
        assert_eq!(r.status, 503, "{to}: {}", r.body);
        assert!(r.header("retry-after").is_some());
        assert!(
            r.json()["detail"]
                .as_str()
                .unwrap()
                .contains("handler check"),
            "{}",
            r.body
        );
        assert!(
            host.output().contains("reports.toml:"),
            "{to}: the log names the line"
        );
    }
}
