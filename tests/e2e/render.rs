//! The four renderings of one report result: HTML email body, plain text, CSV and JSON.

use chrono::{DateTime, NaiveDate, Utc};
use report_handler::data::{Column, ColumnType, Table, Value};
use report_handler::render::{
    RenderContext, SectionResult, render_csv, render_html, render_json, render_text, write_csv,
};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().into()
}

fn ctx(max_rows_in_body: usize) -> RenderContext<'static> {
    RenderContext {
        report_name: "daily-sales",
        title: "Daily <sales> & \"more\"",
        description: Some("Orders of the previous day"),
        time_zone: "Europe/Berlin",
        start: utc("2026-11-23T23:00:00Z"),
        end: utc("2026-11-24T23:00:00Z"),
        date: NaiveDate::from_ymd_opt(2026, 11, 24).unwrap(),
        generated_at: utc("2026-11-25T05:00:03Z"),
        max_rows_in_body,
    }
}

fn col(name: &str, kind: ColumnType) -> Column {
    Column {
        name: name.into(),
        kind,
    }
}

fn sections() -> Vec<SectionResult> {
    let table = Table {
        columns: vec![
            col("name", ColumnType::Text),
            col("revenue_cents", ColumnType::Integer),
            col("share", ColumnType::Decimal),
            col("at", ColumnType::TimestampTz),
        ],
        rows: vec![
            vec![
                Value::Text("<script>alert('x')</script>".into()),
                Value::Int(1_234_567),
                Value::Decimal("-9876.50".into()),
                Value::TimestampTz(utc("2026-11-24T10:00:00Z")),
            ],
            vec![
                Value::Text("=HYPERLINK(\"x\")".into()),
                Value::Null,
                Value::Null,
                Value::Null,
            ],
            vec![
                Value::Text("Zoë, \"Zed\"".into()),
                Value::Int(-5),
                Value::Decimal("0.10".into()),
                Value::Null,
            ],
        ],
        truncated: false,
    };
    vec![
        SectionResult {
            title: "Top <b>products</b>".into(),
            table,
        },
        SectionResult {
            title: "Empty".into(),
            table: Table {
                columns: vec![col("x", ColumnType::Integer)],
                rows: vec![],
                truncated: false,
            },
        },
    ]
}

#[test]
fn html_is_a_complete_escaped_document() {
    let html = render_html(&ctx(50), &sections());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert!(html.contains("<meta charset=\"utf-8\">"));
    assert!(
        !html.contains("<style"),
        "mail clients drop <style>: styles must be inline"
    );
    assert!(!html.contains("<script"), "every value is escaped");
    assert!(!html.contains("<b>"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("Daily &lt;sales&gt; &amp; &quot;more&quot;"));
    assert!(html.contains("Top &lt;b&gt;products&lt;/b&gt;"));
    // Window in the report's zone and the zone's name.
    assert!(
        html.contains("2026-11-24 00:00 – 2026-11-25 00:00"),
        "{html}"
    );
    assert!(html.contains("Europe/Berlin"));
    // Numbers right-aligned with thousands separators; instants in the report's zone.
    assert!(
        html.contains("text-align:right;white-space:nowrap;\">1,234,567</td>"),
        "{html}"
    );
    assert!(html.contains(">-9,876.50</td>"));
    assert!(html.contains(">2026-11-24 11:00:00 +01:00</td>"));
    // NULL renders empty.
    assert!(html.contains("\"></td>"));
    assert!(html.contains("No rows."));
    assert!(!html.contains("more rows in the attachment"));
}

#[test]
fn html_and_text_point_to_the_attachment_past_max_rows_in_body() {
    let html = render_html(&ctx(1), &sections());
    assert!(html.contains("2 more rows in the attachment."), "{html}");
    assert!(
        !html.contains("Zed"),
        "rows past the limit are not in the body"
    );
    let text = render_text(&ctx(2), &sections());
    assert!(text.contains("1 more row in the attachment."), "{text}");
}

#[test]
fn text_has_aligned_columns() {
    let text = render_text(&ctx(50), &sections());
    assert!(text.starts_with("Daily <sales> & \"more\"\n"), "{text}");
    assert!(text.contains("Window: 2026-11-24 00:00 – 2026-11-25 00:00 (Europe/Berlin)"));
    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("name"))
        .expect("a header line");
    // Every cell of the numeric column ends at the same character position.
    let end_of = |line: &str, needle: &str| {
        line.find(needle)
            .map(|i| line[..i + needle.len()].chars().count())
    };
    let h = end_of(lines[header], "revenue_cents").unwrap();
    assert_eq!(end_of(lines[header + 2], "1,234,567"), Some(h), "{text}");
    assert_eq!(end_of(lines[header + 4], "-5"), Some(h), "{text}");
    assert!(text.contains("No rows."));
}

#[test]
fn csv_quotes_neutralises_and_uses_crlf() {
    let s = sections();
    let csv = render_csv(&s[0].table);
    let expected = "name,revenue_cents,share,at\r\n\
                    <script>alert('x')</script>,1234567,-9876.50,2026-11-24T10:00:00Z\r\n\
                    \"'=HYPERLINK(\"\"x\"\")\",,,\r\n\
                    \"Zoë, \"\"Zed\"\"\",-5,0.10,\r\n";
    assert_eq!(csv, expected);
    let mut streamed = Vec::new();
    write_csv(&s[0].table, &mut streamed).unwrap();
    assert_eq!(String::from_utf8(streamed).unwrap(), expected);
    // Header only for an empty result.
    assert_eq!(render_csv(&s[1].table), "x\r\n");
}

#[test]
fn json_has_the_documented_shape_and_typed_values() {
    let json: serde_json::Value = serde_json::from_str(&render_json(&ctx(1), &sections())).unwrap();
    assert_eq!(json["report"], "daily-sales");
    assert_eq!(json["title"], "Daily <sales> & \"more\"");
    assert_eq!(
        json["window"],
        serde_json::json!({"start": "2026-11-23T23:00:00Z", "end": "2026-11-24T23:00:00Z",
                           "time_zone": "Europe/Berlin", "date": "2026-11-24"})
    );
    assert_eq!(json["generated_at"], "2026-11-25T05:00:03Z");
    let s0 = &json["sections"][0];
    assert_eq!(s0["title"], "Top <b>products</b>");
    assert_eq!(
        s0["columns"],
        serde_json::json!([{"name": "name", "type": "text"}, {"name": "revenue_cents", "type": "integer"},
                           {"name": "share", "type": "decimal"}, {"name": "at", "type": "timestamptz"}])
    );
    assert_eq!(
        s0["rows"][0],
        serde_json::json!([
            "<script>alert('x')</script>",
            1234567,
            "-9876.50",
            "2026-11-24T10:00:00Z"
        ])
    );
    assert_eq!(
        s0["rows"][1],
        serde_json::json!(["=HYPERLINK(\"x\")", null, null, null])
    );
    assert_eq!(
        s0["row_count"], 3,
        "JSON carries every row, not only max_rows_in_body"
    );
    assert_eq!(s0["truncated"], false);
    assert_eq!(json["sections"][1]["rows"], serde_json::json!([]));
}
