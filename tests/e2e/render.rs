//! The four renderings of one report result: HTML email body, plain text, CSV and JSON.

use chrono::{DateTime, NaiveDate, Utc};
use report_handler::data::{Column, ColumnType, Table, Value};
use report_handler::render::format::Locale;
use report_handler::render::{
    RenderContext, SectionDisplay, SectionResult, render_csv, render_html, render_json,
    render_text, write_csv,
};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().into()
}

fn ctx(max_rows_in_body: usize) -> RenderContext<'static> {
    RenderContext {
        report_name: "daily-sales",
        title: "Daily <sales> & \"more\"",
        description: Some("Orders of the previous day"),
        time_zone: chrono_tz::Europe::Berlin,
        start: utc("2026-11-23T23:00:00Z"),
        end: utc("2026-11-24T23:00:00Z"),
        date: NaiveDate::from_ymd_opt(2026, 11, 24).unwrap(),
        generated_at: utc("2026-11-25T05:00:03Z"),
        max_rows_in_body,
        locale: Locale::EnUs,
        single_day: false,
        attachments: Box::leak(Box::new(vec![
            "daily-sales-2026-11-24-1-top-products.csv".to_string(),
        ])),
        charts: &[],
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
            display: SectionDisplay::default(),
        },
        SectionResult {
            title: "Empty".into(),
            table: Table {
                columns: vec![col("x", ColumnType::Integer)],
                rows: vec![],
                truncated: false,
            },
            display: SectionDisplay::default(),
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
    assert!(
        text.starts_with("Daily <sales> & \"more\" · Tuesday, November 24, 2026\n"),
        "{text}"
    );
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
        serde_json::json!([{"name": "name", "type": "text", "label": "name", "format": null},
                           {"name": "revenue_cents", "type": "integer", "label": "revenue_cents", "format": null},
                           {"name": "share", "type": "decimal", "label": "share", "format": null},
                           {"name": "at", "type": "timestamptz", "label": "at", "format": null}])
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

/// The sample's presentation: labels, currency from cents, totals, in two locales.
fn presented() -> Vec<SectionResult> {
    let text = r#"
[[reports]]
name = "daily-sales"
schedule = "0 0 6 * * *"
recipients = ["a@example.com"]
[[reports.sections]]
title = "Orders by status"
query = "SELECT status, orders, revenue_cents, note FROM t"
totals = ["orders", "revenue_cents"]
[reports.sections.columns.revenue_cents]
label = "Revenue"
format = "currency"
currency = "EUR"
scale = 0.01
decimals = 2
[reports.sections.columns.status]
label = "Status"
[reports.sections.columns.orders]
label = "Orders"
format = "integer"
"#;
    let set = report_handler::report::ReportSet::parse(text, "reports.toml").unwrap();
    let display = set.reports[0].sections[0].display.clone();
    vec![SectionResult {
        title: "Orders by status".into(),
        table: Table {
            columns: vec![
                col("status", ColumnType::Text),
                col("orders", ColumnType::Integer),
                col("revenue_cents", ColumnType::Integer),
                col("note", ColumnType::Text),
            ],
            rows: vec![
                vec![
                    Value::Text("paid".into()),
                    Value::Int(1200),
                    Value::Int(409_127),
                    Value::Text("SKU-1004".into()),
                ],
                vec![
                    Value::Text("refunded".into()),
                    Value::Int(3),
                    Value::Null,
                    Value::Text("a long note that may wrap on a phone screen".into()),
                ],
            ],
            truncated: false,
        },
        display,
    }]
}

#[test]
fn labels_formats_and_totals_in_html_and_text_per_locale() {
    let mut c = ctx(50);
    c.title = "Daily sales";
    c.single_day = true;
    let html = render_html(&c, &presented());
    assert!(
        html.contains("<title>Daily sales · Tuesday, November 24, 2026</title>"),
        "{html}"
    );
    assert!(html.contains("<meta name=\"color-scheme\" content=\"light dark\">"));
    assert!(
        !html.contains("Window:"),
        "one day: no technical window line"
    );
    assert!(html.contains("<th scope=\"col\""));
    assert!(html.contains(">Revenue</th>") && html.contains(">Status</th>"));
    assert!(
        html.contains(">note</th>"),
        "a column without settings keeps its SQL name"
    );
    assert!(html.contains(">€4,091.27</td>"), "{html}");
    assert!(html.contains(">1,200</td>"));
    // Totals: NULL counts as nothing.
    assert!(html.contains(">Total</td>"), "{html}");
    assert!(
        html.contains(">1,203</td>") && html.matches(">€4,091.27</td>").count() == 2,
        "{html}"
    );
    // Short codes stay on one line; long text may wrap.
    assert!(html.contains("white-space:nowrap;\">SKU-1004</td>"));
    assert!(html.contains("left;\">a long note"));
    assert!(role_presentation_only_on_layout(&html));
    assert!(
        !html.contains("display:flex") && !html.contains("display:grid") && !html.contains("<svg")
    );

    c.locale = Locale::DeDe;
    let text = render_text(&c, &presented());
    assert!(
        text.starts_with("Daily sales · Dienstag, 24. November 2026\n"),
        "{text}"
    );
    assert!(text.contains("4.091,27\u{a0}€"), "{text}");
    assert!(text.contains("Total"), "{text}");
    assert!(text.contains("1.203"), "{text}");
    c.locale = Locale::FrFr;
    let html = render_html(&c, &presented());
    assert!(html.contains("<html lang=\"fr\">"));
    assert!(html.contains("mardi 24 novembre 2026"), "{html}");
    assert!(html.contains("4\u{202f}091,27\u{a0}€"), "{html}");
}

fn role_presentation_only_on_layout(html: &str) -> bool {
    // Every table is either a layout table (role="presentation") or a data table with headers.
    html.match_indices("<table").all(|(i, _)| {
        let tag_end = html[i..].find('>').map(|e| i + e).unwrap_or(html.len());
        let tag = &html[i..tag_end];
        tag.contains("role=\"presentation\"")
            || html[tag_end..].trim_start().starts_with(">\n<thead>")
    })
}

#[test]
fn json_names_labels_and_formats_but_keeps_raw_values() {
    let json: serde_json::Value =
        serde_json::from_str(&render_json(&ctx(50), &presented())).unwrap();
    let cols = &json["sections"][0]["columns"];
    assert_eq!(
        cols[2],
        serde_json::json!({"name": "revenue_cents", "type": "integer", "label": "Revenue",
                           "format": "currency", "currency": "EUR", "scale": 0.01, "decimals": 2})
    );
    assert_eq!(cols[0]["label"], "Status");
    assert_eq!(cols[0]["format"], serde_json::Value::Null);
    assert_eq!(json["sections"][0]["rows"][0][2], 409_127);
    // CSV stays a machine format: SQL names, raw values.
    let csv = render_csv(&presented()[0].table);
    assert!(
        csv.starts_with("status,orders,revenue_cents,note\r\npaid,1200,409127,"),
        "{csv}"
    );
}

#[test]
fn xlsx_keeps_types_formats_labels_and_totals() {
    use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
    let mut sections = presented();
    // A second section with a clashing title, a formula-looking text, a date, a bool.
    sections.push(SectionResult {
        title: "Orders by status".into(),
        table: Table {
            columns: vec![
                col("code", ColumnType::Text),
                col("day", ColumnType::Date),
                col("at", ColumnType::TimestampTz),
                col("ok", ColumnType::Bool),
            ],
            rows: vec![vec![
                Value::Text("=1+2".into()),
                Value::Date(NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()),
                Value::TimestampTz(utc("2026-11-24T10:00:00Z")),
                Value::Bool(true),
            ]],
            truncated: false,
        },
        display: SectionDisplay::default(),
    });
    sections.push(SectionResult {
        title: "Bad: [name]*?/\\ that is far longer than thirty-one characters".into(),
        table: Table::default(),
        display: SectionDisplay::default(),
    });
    let bytes = report_handler::render::render_xlsx(&ctx(50), &sections).unwrap();
    let mut wb: Xlsx<_> = open_workbook_from_rs(std::io::Cursor::new(bytes)).unwrap();
    let names = wb.sheet_names();
    assert_eq!(names[0], "Orders by status");
    assert_eq!(names[1], "Orders by status (2)");
    assert!(
        names[2].chars().count() <= 31 && !names[2].contains(['[', ']', '*', '?', '/', '\\']),
        "{names:?}"
    );
    let s1 = wb.worksheet_range(&names[0]).unwrap();
    // Labels in the header, SQL name where none is configured.
    assert_eq!(s1.get_value((0, 0)), Some(&Data::String("Status".into())));
    assert_eq!(s1.get_value((0, 2)), Some(&Data::String("Revenue".into())));
    assert_eq!(s1.get_value((0, 3)), Some(&Data::String("note".into())));
    // Numbers are numbers (money scaled from cents), text is text.
    assert_eq!(s1.get_value((1, 0)), Some(&Data::String("paid".into())));
    assert_eq!(s1.get_value((1, 1)), Some(&Data::Float(1200.0)));
    assert_eq!(s1.get_value((1, 2)), Some(&Data::Float(4091.27)));
    // NULL stays empty; the totals row sums what is there.
    assert!(matches!(s1.get_value((2, 2)), None | Some(Data::Empty)));
    assert_eq!(s1.get_value((3, 0)), Some(&Data::String("Total".into())));
    assert_eq!(s1.get_value((3, 1)), Some(&Data::Float(1203.0)));
    assert_eq!(s1.get_value((3, 2)), Some(&Data::Float(4091.27)));
    let s2 = wb.worksheet_range(&names[1]).unwrap();
    assert_eq!(
        s2.get_value((1, 0)),
        Some(&Data::String("=1+2".into())),
        "text, never a formula"
    );
    match s2.get_value((1, 1)) {
        Some(Data::DateTime(d)) => {
            assert_eq!(
                d.as_datetime().unwrap().date(),
                NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
            )
        }
        other => panic!("a date cell, got {other:?}"),
    }
    match s2.get_value((1, 2)) {
        // 10:00 UTC is 11:00 in Berlin.
        Some(Data::DateTime(d)) => assert_eq!(
            d.as_datetime().unwrap().format("%H:%M").to_string(),
            "11:00"
        ),
        other => panic!("a datetime cell, got {other:?}"),
    }
    assert_eq!(s2.get_value((1, 3)), Some(&Data::Bool(true)));
    let formulas = wb.worksheet_formula(&names[1]).unwrap();
    assert!(
        formulas.used_cells().all(|(_, _, f)| f.is_empty()),
        "no formulas anywhere"
    );
}

/// Gmail clips an HTML part over about 102 KB behind "View entire message": a big section
/// shows fewer rows than `max_rows_in_body`, and the note counts the rest as in the attachment.
#[test]
fn a_big_section_keeps_the_html_part_under_gmails_clipping_size() {
    const ROWS: usize = 5_000;
    let table = Table {
        columns: vec![
            col("product", ColumnType::Text),
            col("units", ColumnType::Integer),
            col("revenue_cents", ColumnType::Integer),
        ],
        rows: (0..ROWS)
            .map(|i| {
                vec![
                    Value::Text(format!("Product number {i} with a longer name")),
                    Value::Int(i as i64),
                    Value::Int(100 * i as i64 + 99),
                ]
            })
            .collect(),
        truncated: false,
    };
    let sections = vec![SectionResult {
        title: "Everything".into(),
        table,
        display: SectionDisplay::default(),
    }];
    // Asked for every row in the body: that would be far over the limit.
    let html = render_html(&ctx(ROWS), &sections);
    assert!(
        html.len() <= report_handler::render::HTML_BUDGET_BYTES && html.len() < 102_000,
        "the HTML part is {} bytes",
        html.len()
    );
    let shown = html.matches("<td align=\"left\"").count();
    assert!(shown > 0 && shown < ROWS, "{shown} rows shown");
    assert!(
        html.contains("Product number 0 with"),
        "the first rows are shown"
    );
    let hidden = ROWS - shown;
    let hidden_text = if hidden >= 1000 {
        format!("{},{:03}", hidden / 1000, hidden % 1000)
    } else {
        hidden.to_string()
    };
    assert!(
        html.contains(&format!("{hidden_text} more rows in the attachment.")),
        "the note counts the {hidden} rows left out"
    );
    // A section that fits is shown in full, as configured.
    let small = render_html(&ctx(50), &sections);
    assert_eq!(small.matches("<td align=\"left\"").count(), 50);
    assert!(small.contains(&format!(
        "{},{:03} more rows in the attachment.",
        (ROWS - 50) / 1000,
        (ROWS - 50) % 1000
    )));
}
