//! The renderers on arbitrary values: a table built from the fuzzer's bytes (every `Value`
//! variant, any text, NaN and infinities, extreme dates) is rendered as CSV, HTML, text and JSON.
//! Invariants: CSV reads back (with the `csv` crate) as the same number of rows and columns; the
//! HTML never contains a `<script` tag (all text is escaped and the template has none); the JSON
//! parses and has one row per table row.
#![no_main]

use chrono::{DateTime, NaiveDate, Utc};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use report_handler::data::{Column, ColumnType, Table, Value};
use report_handler::render::{
    RenderContext, SectionResult, render_csv, render_html, render_json, render_text,
};

const KINDS: [ColumnType; 11] = [
    ColumnType::Bool,
    ColumnType::Integer,
    ColumnType::Float,
    ColumnType::Decimal,
    ColumnType::Text,
    ColumnType::Date,
    ColumnType::Timestamp,
    ColumnType::TimestampTz,
    ColumnType::Uuid,
    ColumnType::Json,
    ColumnType::Unknown,
];

/// The render context holds a parsed zone (a report's zone is validated when the file loads):
/// zones with odd offsets and DST rules.
const ZONES: [chrono_tz::Tz; 5] = [
    chrono_tz::UTC,
    chrono_tz::Europe::Berlin,
    chrono_tz::Pacific::Chatham,
    chrono_tz::America::St_Johns,
    chrono_tz::Australia::Lord_Howe,
];

fn text(u: &mut Unstructured) -> Result<String> {
    // Mostly short, sometimes a nasty fixed fragment, so invariants meet their edge cases.
    const NASTY: [&str; 8] = [
        "<script>alert(1)</script>",
        "<SCRIPT src=x>",
        "=HYPERLINK(\"http://x\")",
        "a,b\r\n\"c\"",
        "\u{feff}é\u{2028}",
        "-1234567.5",
        "",
        "\"",
    ];
    if u.ratio(1, 4)? {
        Ok(NASTY[u.choose_index(NASTY.len())?].to_string())
    } else {
        u.arbitrary()
    }
}

fn instant(u: &mut Unstructured) -> Result<DateTime<Utc>> {
    let secs: i64 = u.arbitrary()?;
    let nanos: u32 = u.int_in_range(0..=1_999_999_999)?;
    Ok(DateTime::from_timestamp(secs % 400_000_000_000, nanos).unwrap_or_default())
}

fn value(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=10)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Int(u.arbitrary()?),
        3 => Value::Float(f64::from_bits(u.arbitrary()?)),
        4 => Value::Decimal(text(u)?),
        5 => Value::Text(text(u)?),
        6 => Value::Date(NaiveDate::from_num_days_from_ce_opt(u.arbitrary()?).unwrap_or_default()),
        7 => Value::Timestamp(instant(u)?.naive_utc()),
        8 => Value::TimestampTz(instant(u)?),
        9 => Value::Uuid(uuid::Uuid::from_u128(u.arbitrary()?)),
        _ => {
            let s = text(u)?;
            Value::Json(serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)))
        }
    })
}

fn table(u: &mut Unstructured) -> Result<Table> {
    let ncols = u.int_in_range(1..=6)?;
    let columns = (0..ncols)
        .map(|_| {
            Ok(Column {
                name: text(u)?,
                kind: KINDS[u.choose_index(KINDS.len())?],
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let nrows = u.int_in_range(0..=12)?;
    let mut rows = Vec::with_capacity(nrows);
    for _ in 0..nrows {
        rows.push((0..ncols).map(|_| value(u)).collect::<Result<Vec<_>>>()?);
    }
    Ok(Table {
        columns,
        rows,
        truncated: u.arbitrary()?,
    })
}

fn check(u: &mut Unstructured) -> Result<()> {
    let title = text(u)?;
    let description: Option<String> = if u.arbitrary()? { Some(text(u)?) } else { None };
    let name = text(u)?;
    let zone = ZONES[u.choose_index(ZONES.len())?];
    let nsections = u.int_in_range(1..=3)?;
    let mut sections = Vec::new();
    for _ in 0..nsections {
        sections.push(SectionResult {
            title: text(u)?,
            table: table(u)?,
            display: Default::default(),
        });
    }
    let ctx = RenderContext {
        report_name: &name,
        title: &title,
        description: description.as_deref(),
        time_zone: zone,
        start: instant(u)?,
        end: instant(u)?,
        date: NaiveDate::from_num_days_from_ce_opt(u.arbitrary()?).unwrap_or_default(),
        generated_at: instant(u)?,
        max_rows_in_body: u.int_in_range(0..=20)?,
        locale: Default::default(),
        single_day: u.arbitrary()?,
        attachments: &[],
        charts: &[],
    };

    for s in &sections {
        let csv_text = render_csv(&s.table);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(csv_text.as_bytes());
        let records: Vec<csv::StringRecord> = reader
            .records()
            .collect::<std::result::Result<_, _>>()
            .expect("our CSV reads back");
        assert_eq!(records.len(), s.table.rows.len() + 1, "{csv_text:?}");
        for r in &records {
            assert_eq!(r.len(), s.table.columns.len(), "{csv_text:?}");
        }
    }

    let html = render_html(&ctx, &sections);
    assert!(
        !html.to_ascii_lowercase().contains("<script"),
        "unescaped <script in the HTML"
    );
    let _ = render_text(&ctx, &sections);

    let json = render_json(&ctx, &sections);
    let doc: serde_json::Value = serde_json::from_str(&json).expect("our JSON parses");
    let out = doc["sections"].as_array().expect("sections is an array");
    assert_eq!(out.len(), sections.len());
    for (o, s) in out.iter().zip(&sections) {
        assert_eq!(o["rows"].as_array().map(Vec::len), Some(s.table.rows.len()));
        assert_eq!(o["row_count"].as_u64(), Some(s.table.rows.len() as u64));
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = check(&mut u);
});
