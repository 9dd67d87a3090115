//! Exports in every host mode: payload (`POST /HttpTrigger`), forwarding and proxying
//! (`enableProxyingHttpRequest`) answer a report request alike (status, media type, body,
//! ETag, caching headers), for results kept in memory and for results streamed from the
//! database; streamed responses are chunked and keep the `MAX_ROWS` cap. Large workbooks are
//! built from the cursor and streamed too.

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::Value;

use crate::support::host::{AppDir, ClientRequest, ClientResponse, Host, HostOptions};

const KEY: &str = "test-key-0123456789-padded-to-32-chars";
/// Above the API's in-memory budget (`api::cache::MAX_KEPT_ROWS`, 20,000 rows).
const BIG_ROWS: usize = 21_000;
/// The `MAX_ROWS` of these tests: between the budget and the `capped` report's rows.
const MAX_ROWS: usize = 22_000;

/// Reports whose rows come from a recursive CTE, so every host's app root has the same rows.
fn reports_toml() -> String {
    let report = |name: &str, rows: usize| {
        format!(
            r#"
[[reports]]
name = "{name}"
title = "Export {name}"
schedule = "0 0 6 * * *"
time_zone = "UTC"
window = "previous_day"
recipients = ["Sales <sales@example.com>"]

[[reports.sections]]
title = "Rows"
query = """
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT {rows})
SELECT x AS id, 'sku-' || (x % 97) AS sku, x % 7 AS quantity,
       CASE WHEN x % 5 = 0 THEN 'say "hi", ok' ELSE '=x' || x END AS note,
       :date AS day
FROM c
"""

[[reports.sections]]
title = "Second"
query = "SELECT 1 AS one, :start AS since"
"#
        )
    };
    format!(
        "{}{}{}",
        report("small", 3),
        report("big", BIG_ROWS),
        report("capped", 25_000)
    )
}

/// A handler behind an emulated host whose host.json enables proxying. The same process
/// answers all three modes (the emulator decides how a request reaches it), so results kept
/// in memory are shared and even their strong ETags must agree.
async fn host() -> (AppDir, Host) {
    let app = AppDir::from_repo();
    app.write("reports.toml", &reports_toml());
    app.set_proxying(true);
    let host = Host::start(
        HostOptions::new(app.path())
            .setting("API_KEYS", KEY)
            .setting("MAX_ROWS", MAX_ROWS.to_string()),
    )
    .await;
    assert!(host.proxying);
    (app, host)
}

/// The request in each mode: payload, forwarding, proxying.
async fn all_modes(host: &Host, req: &ClientRequest) -> Vec<(&'static str, ClientResponse)> {
    vec![
        ("payload", host.http_payload(req.clone()).await),
        ("forwarding", host.http_forwarded(req.clone()).await),
        // host.json enables proxying, so `http` proxies.
        ("proxying", host.http(req.clone()).await),
    ]
}

fn authed(path: &str) -> ClientRequest {
    ClientRequest::get(path).header("X-API-Key", KEY)
}

/// The body with `generated_at` (when the rows were read) blanked, for comparing runs.
fn without_generated_at(r: &ClientResponse) -> Value {
    let mut v = r.json();
    v["generated_at"] = Value::Null;
    v
}

#[tokio::test]
async fn every_mode_answers_alike_kept_or_streamed() {
    let (_app, host) = host().await;
    let day = (Utc::now() - ChronoDuration::days(2)).date_naive();
    for (report, rows, truncated) in [
        ("small", 3, false),
        ("big", BIG_ROWS, false),
        ("capped", MAX_ROWS, true),
    ] {
        let streamed = rows > 20_000;
        for format in ["json", "csv"] {
            let path = format!("/api/reports/{report}?date={day}&format={format}");
            let answers = all_modes(&host, &authed(&path)).await;
            for (mode, r) in &answers {
                assert_eq!(r.status, 200, "{mode} {path}: {}", r.body);
            }
            let (_, first) = &answers[0];
            let etag = first.header("etag").expect("an ended window has an ETag");
            assert_eq!(etag.starts_with("W/"), streamed, "{path}: {etag}");
            assert_eq!(first.header("cache-control"), Some("private, max-age=3600"));
            for (mode, r) in &answers[1..] {
                if format == "csv" {
                    // No generated_at in CSV: the whole answer is the same bytes.
                    assert_eq!(r, first, "{mode} {path}");
                } else if streamed {
                    // Each streamed answer reads the rows anew: only generated_at differs.
                    assert_eq!(r.headers, first.headers, "{mode} {path}");
                    assert_eq!(without_generated_at(r), without_generated_at(first));
                } else {
                    assert_eq!(r, first, "{mode} {path}");
                }
            }
            if format == "csv" {
                let lines = first.body.split("\r\n").filter(|l| !l.is_empty()).count();
                assert_eq!(lines, rows + 1, "{path}: header + rows");
                assert!(first.body.starts_with("id,sku,quantity,note,day\r\n"));
                if rows >= 5 {
                    assert!(first.body.contains(",\"say \"\"hi\"\", ok\","));
                }
                assert!(first.body.contains(",'=x1,"), "formulas are neutralised");
                assert_eq!(
                    first.header("content-type"),
                    Some("text/csv; charset=utf-8")
                );
            } else {
                let v = first.json();
                assert_eq!(v["sections"][0]["row_count"], rows, "{path}");
                assert_eq!(v["sections"][0]["rows"].as_array().unwrap().len(), rows);
                assert_eq!(v["sections"][0]["truncated"], truncated, "{path}");
                assert_eq!(v["sections"][1]["rows"][0][0], 1);
                assert_eq!(v["sections"][0]["columns"][0]["type"], "integer");
            }
            // The ETag works the same way in every mode.
            let req = authed(&path).header("If-None-Match", etag);
            for (mode, again) in all_modes(&host, &req).await {
                assert_eq!(again.status, 304, "{mode} {path}");
                assert_eq!(again.header("etag"), Some(etag));
            }
        }
    }
}

#[tokio::test]
async fn large_exports_stream_in_chunks_when_proxied_or_forwarded() {
    let (_app, host) = host().await;
    let day = (Utc::now() - ChronoDuration::days(2)).date_naive();
    // Forwarding and proxying both reach the handler as a plain HTTP request; the difference
    // is what the host does with the answer (proxying streams it on, forwarding buffers it).
    for mode in ["forwarding", "proxying"] {
        for (report, chunked) in [("big", true), ("small", false)] {
            let req = authed(&format!("/api/reports/{report}?date={day}&format=csv"));
            let mut resp = host.proxy_stream(&req).await;
            assert_eq!(resp.status(), 200);
            assert_eq!(
                resp.headers().get("transfer-encoding").is_some(),
                chunked,
                "{mode} {report}: {:?}",
                resp.headers()
            );
            assert_eq!(resp.content_length().is_none(), chunked, "{mode} {report}");
            let mut chunks = 0usize;
            let mut bytes = 0usize;
            while let Some(c) = resp.chunk().await.unwrap() {
                chunks += 1;
                bytes += c.len();
            }
            if chunked {
                assert!(chunks > 1, "{mode}: one chunk of {bytes} bytes");
            }
        }
    }
    // An open window streams too, without an ETag (its rows may still change).
    let today = Utc::now().date_naive();
    let r = host
        .http(authed(&format!("/api/reports/big?date={today}&format=csv")))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("etag"), None);
}

/// A workbook over the in-memory budget is built from the database cursor (constant-memory
/// sheets) and sent in chunks: every row, typed, the same in forwarding and proxying mode, with
/// the file name, a weak ETag that answers 304, and the `MAX_ROWS` cap. Payload mode cannot
/// carry a binary body and says so.
#[tokio::test]
async fn large_workbooks_stream_from_the_cursor() {
    use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
    let (_app, host) = host().await;
    let day = (Utc::now() - ChronoDuration::days(2)).date_naive();
    for (report, rows) in [("big", BIG_ROWS), ("capped", MAX_ROWS), ("small", 3)] {
        let path = format!("/api/reports/{report}?date={day}&format=xlsx");
        let (forwarded, bytes) = host.forward_bytes(&authed(&path)).await;
        assert_eq!(
            forwarded.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let mut proxied = host.proxy_stream(&authed(&path)).await;
        assert_eq!(proxied.status(), 200);
        let chunked = proxied.headers().get("transfer-encoding").is_some();
        assert_eq!(chunked, rows > 20_000, "{path}: {:?}", proxied.headers());
        let mut chunks = 0;
        let mut proxied_bytes = Vec::new();
        while let Some(c) = proxied.chunk().await.unwrap() {
            chunks += 1;
            proxied_bytes.extend_from_slice(&c);
        }
        if chunked {
            assert!(
                chunks > 1,
                "{path}: one chunk of {} bytes",
                proxied_bytes.len()
            );
        }
        assert_eq!(
            forwarded.header("content-type"),
            Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        );
        assert_eq!(
            forwarded.header("content-disposition"),
            Some(format!("attachment; filename=\"{report}-{day}.xlsx\"").as_str())
        );
        assert_eq!(
            forwarded.header("cache-control"),
            Some("private, max-age=3600")
        );
        let etag = forwarded
            .header("etag")
            .expect("an ended window has an ETag");
        assert_eq!(etag.starts_with("W/"), rows > 20_000, "{path}: {etag}");

        for (mode, bytes) in [("forwarding", &bytes), ("proxying", &proxied_bytes)] {
            let mut wb: Xlsx<_> =
                open_workbook_from_rs(std::io::Cursor::new(bytes.clone())).expect("a workbook");
            assert_eq!(wb.sheet_names(), ["Rows", "Second"], "{mode} {path}");
            let sheet = wb.worksheet_range("Rows").unwrap();
            assert_eq!(sheet.height(), rows + 1, "{mode} {path}: header + rows");
            assert_eq!(sheet.get_value((0, 0)), Some(&Data::String("id".into())));
            for x in [1usize, 5, 97, rows / 2, rows]
                .into_iter()
                .filter(|x| *x <= rows)
            {
                let r = x as u32;
                assert_eq!(
                    sheet.get_value((r, 0)),
                    Some(&Data::Float(x as f64)),
                    "{mode} row {x}"
                );
                assert_eq!(
                    sheet.get_value((r, 1)),
                    Some(&Data::String(format!("sku-{}", x % 97)))
                );
                assert_eq!(sheet.get_value((r, 2)), Some(&Data::Float((x % 7) as f64)));
                let note = if x % 5 == 0 {
                    "say \"hi\", ok".to_string()
                } else {
                    format!("=x{x}")
                };
                // A formula-looking text stays text, never a formula.
                assert_eq!(
                    sheet.get_value((r, 3)),
                    Some(&Data::String(note)),
                    "{mode} row {x}"
                );
            }
            let second = wb.worksheet_range("Second").unwrap();
            assert_eq!(second.get_value((1, 0)), Some(&Data::Float(1.0)));
        }
        let (again, body) = host
            .forward_bytes(&authed(&path).header("If-None-Match", etag))
            .await;
        assert_eq!(again.status, 304, "{path}");
        assert!(body.is_empty());

        let r = host.http_payload(authed(&path)).await;
        assert_eq!(r.status, 406, "{path}: {}", r.body);
        assert!(r.body.contains("binary-needs-forwarding"), "{}", r.body);
    }
}

#[tokio::test]
async fn proxying_passes_the_raw_query_and_headers() {
    let (_app, host) = host().await;
    // Repeated keys arrive repeated (the proxy does not rebuild the query); the handler joins
    // them as the forwarding host would, so `format=json&format=csv` is refused alike.
    let day = (Utc::now() - ChronoDuration::days(2)).date_naive();
    let proxied = host
        .http(authed(&format!(
            "/api/reports/small?date={day}&format=json&format=csv"
        )))
        .await;
    let forwarded = host
        .http_forwarded(authed(&format!(
            "/api/reports/small?date={day}&format=json&format=csv"
        )))
        .await;
    assert_eq!(proxied.status, forwarded.status, "{}", proxied.body);
    assert_eq!(proxied.body, forwarded.body);
    // No key, wrong method: the same problems as in the other modes.
    let anon = host.http(ClientRequest::get("/api/reports/small")).await;
    assert_eq!(anon.status, 401);
    assert_eq!(anon.header("www-authenticate"), Some("Bearer"));
}
