//! Typed result values. Reports are rendered as HTML, text, CSV and JSON from the same table, so
//! every cell keeps its SQL type (numbers stay numbers, exact decimals stay exact) instead of
//! becoming a string at the database boundary.

use chrono::{DateTime, Datelike as _, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde::ser::{Serialize, Serializer};

/// One cell of a result. Kept small (32 bytes) because large results hold millions of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL: rendered empty (HTML, text, CSV) or `null` (JSON).
    Null,
    /// A boolean.
    Bool(bool),
    /// Any integer type (INT2/4/8, SQLite INTEGER).
    Int(i64),
    /// A floating-point number (FLOAT4/8, SQLite REAL).
    Float(f64),
    /// An exact decimal kept as its database text (PostgreSQL `numeric`), never through `f64`.
    Decimal(String),
    /// Text, and anything without a more specific mapping.
    Text(String),
    /// A calendar date.
    Date(NaiveDate),
    /// A timestamp without time zone.
    Timestamp(NaiveDateTime),
    /// An instant (PostgreSQL `timestamptz`), normalised to UTC.
    TimestampTz(DateTime<Utc>),
    /// A UUID.
    Uuid(uuid::Uuid),
    /// A JSON document (PostgreSQL `json`/`jsonb`).
    Json(serde_json::Value),
}

impl Default for Value {
    /// NULL: what a reused row buffer holds before a cell is decoded into it.
    fn default() -> Self {
        Value::Null
    }
}

impl Value {
    /// True for the values that are right-aligned and get thousands separators.
    pub fn is_numeric(&self) -> bool {
        matches!(self, Value::Int(_) | Value::Float(_) | Value::Decimal(_))
    }

    /// The plain, locale-free text of the value (no thousands separators); empty for NULL.
    /// CSV and the text renderer build on it; timestamps with zone are RFC 3339 UTC.
    pub fn to_plain(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format_float(*f),
            Value::Decimal(d) => d.clone(),
            Value::Text(t) => t.clone(),
            Value::Date(d) => d.format("%Y-%m-%d").to_string(),
            Value::Timestamp(t) => format_naive(t),
            Value::TimestampTz(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            Value::Uuid(u) => u.to_string(),
            Value::Json(j) => j.to_string(),
        }
    }
}

impl Value {
    /// Appends [`Value::to_plain`]'s text to `out` without building a `String` for the common
    /// cells (numbers, text, dates, whole-second timestamps): the streaming CSV writer calls
    /// this once per cell.
    pub fn write_plain(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        match self {
            Value::Null => {}
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            Value::Float(f) if f.is_finite() => {
                let _ = write!(out, "{f}");
            }
            Value::Decimal(d) | Value::Text(d) => out.extend_from_slice(d.as_bytes()),
            Value::Date(d) if write_date(out, d) => {}
            Value::Timestamp(t) if write_naive(out, t, b' ') => {}
            Value::Uuid(u) => {
                let _ = write!(out, "{u}");
            }
            Value::Json(j) => {
                let _ = serde_json::to_writer(&mut *out, j);
            }
            other => out.extend_from_slice(other.to_plain().as_bytes()),
        }
    }

    /// Appends the value's JSON (exactly what its `Serialize` gives) to `out`, writing the
    /// common cells directly: the streaming JSON writer calls this once per cell.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            Value::Decimal(t) | Value::Text(t) => {
                let _ = serde_json::to_writer(&mut *out, t.as_str());
            }
            Value::Date(d) if d.year() >= 0 && d.year() <= 9999 => {
                out.push(b'"');
                write_date(out, d);
                out.push(b'"');
            }
            Value::Timestamp(t)
                if t.and_utc().timestamp_subsec_nanos() == 0
                    && t.year() >= 0
                    && t.year() <= 9999 =>
            {
                out.push(b'"');
                write_naive(out, t, b'T');
                out.push(b'"');
            }
            other => {
                let _ = serde_json::to_writer(&mut *out, other);
            }
        }
    }
}

fn push2(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// `YYYY-MM-DD` for years 0..=9999 (what chrono's `%Y-%m-%d` prints there); false otherwise,
/// with nothing written.
fn write_date(out: &mut Vec<u8>, d: &NaiveDate) -> bool {
    use chrono::Datelike as _;
    let y = d.year();
    if !(0..=9999).contains(&y) {
        return false;
    }
    let y = y as u32;
    push2(out, y / 100);
    push2(out, y % 100);
    out.push(b'-');
    push2(out, d.month());
    out.push(b'-');
    push2(out, d.day());
    true
}

/// `YYYY-MM-DD<sep>HH:MM:SS` for whole seconds in years 0..=9999 (what `%Y-%m-%d %H:%M:%S%.f`
/// prints there); false otherwise, with nothing written.
fn write_naive(out: &mut Vec<u8>, t: &NaiveDateTime, sep: u8) -> bool {
    use chrono::Timelike as _;
    if t.and_utc().timestamp_subsec_nanos() != 0 || !(0..=9999).contains(&t.year()) {
        return false;
    }
    write_date(out, &t.date());
    out.push(sep);
    push2(out, t.hour());
    out.push(b':');
    push2(out, t.minute());
    out.push(b':');
    push2(out, t.second());
    true
}

/// Formats a float the same way on every engine: shortest round-trip text, `NaN`, `Infinity`.
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        f.to_string()
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`: the form both engines print.
pub(crate) fn format_naive(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.f").to_string()
}

impl Serialize for Value {
    /// Typed JSON: numbers as numbers, exact decimals as strings (JSON numbers lose precision in
    /// most clients), non-finite floats as strings, dates ISO 8601, instants RFC 3339 UTC.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(f) => s.serialize_str(&format_float(*f)),
            Value::Decimal(d) => s.serialize_str(d),
            Value::Text(t) => s.serialize_str(t),
            Value::Date(d) => s.collect_str(&d.format("%Y-%m-%d")),
            Value::Timestamp(t) => s.collect_str(&t.format("%Y-%m-%dT%H:%M:%S%.f")),
            Value::TimestampTz(t) => {
                s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            Value::Uuid(u) => s.collect_str(u),
            Value::Json(j) => j.serialize(s),
        }
    }
}

/// The type of a result column, as far as the engine tells it. Renderers use it for alignment
/// and the JSON output names it, so API clients can parse cells without guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// Boolean.
    Bool,
    /// Integer of any width.
    Integer,
    /// Floating point.
    Float,
    /// Exact decimal (text in JSON).
    Decimal,
    /// Text.
    Text,
    /// Date.
    Date,
    /// Timestamp without zone.
    Timestamp,
    /// Timestamp with zone (an instant).
    TimestampTz,
    /// UUID.
    Uuid,
    /// JSON.
    Json,
    /// Not known (e.g. an SQLite expression column with only NULLs).
    Unknown,
}

impl ColumnType {
    /// The lower-case name used as `"type"` in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Bool => "bool",
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Decimal => "decimal",
            ColumnType::Text => "text",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
            ColumnType::TimestampTz => "timestamptz",
            ColumnType::Uuid => "uuid",
            ColumnType::Json => "json",
            ColumnType::Unknown => "unknown",
        }
    }

    /// True for the column types that renderers right-align.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnType::Integer | ColumnType::Float | ColumnType::Decimal
        )
    }

    /// The column type a value of this kind implies (used where the engine gives no type).
    pub fn of_value(v: &Value) -> ColumnType {
        match v {
            Value::Null => ColumnType::Unknown,
            Value::Bool(_) => ColumnType::Bool,
            Value::Int(_) => ColumnType::Integer,
            Value::Float(_) => ColumnType::Float,
            Value::Decimal(_) => ColumnType::Decimal,
            Value::Text(_) => ColumnType::Text,
            Value::Date(_) => ColumnType::Date,
            Value::Timestamp(_) => ColumnType::Timestamp,
            Value::TimestampTz(_) => ColumnType::TimestampTz,
            Value::Uuid(_) => ColumnType::Uuid,
            Value::Json(_) => ColumnType::Json,
        }
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ColumnType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A result column: its name as the query spelled it and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column name (the query's alias).
    pub name: String,
    /// The column type.
    pub kind: ColumnType,
}

/// A query result. `truncated` says rows were dropped at the `max_rows` cap, so renderers and
/// API clients can tell "all rows" from "the first N".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// The columns, in query order.
    pub columns: Vec<Column>,
    /// The rows; each has one value per column.
    pub rows: Vec<Vec<Value>>,
    /// True when the query returned more than `max_rows` rows and the rest were dropped.
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_stays_compact() {
        assert!(
            std::mem::size_of::<Value>() <= 32,
            "{}",
            std::mem::size_of::<Value>()
        );
    }

    fn samples() -> Vec<Value> {
        let ts = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        vec![
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(i64::MIN),
            Value::Int(0),
            Value::Float(1.0),
            Value::Float(-0.1),
            Value::Float(1e300),
            Value::Float(f64::NAN),
            Value::Float(f64::NEG_INFINITY),
            Value::Decimal("-1234.50".into()),
            Value::Text("a \"b\"\n\u{1}é".into()),
            Value::Date(NaiveDate::from_ymd_opt(2026, 1, 2).unwrap()),
            Value::Date(NaiveDate::from_ymd_opt(12345, 1, 2).unwrap()),
            Value::Date(NaiveDate::from_ymd_opt(-5, 1, 2).unwrap()),
            Value::Date(NaiveDate::from_ymd_opt(7, 1, 2).unwrap()),
            Value::Timestamp(ts("2026-11-24 23:59:07")),
            Value::Timestamp(ts("2026-11-24 23:59:07.5")),
            Value::Timestamp(ts("0009-11-24 03:04:05")),
            Value::Timestamp(
                NaiveDate::from_ymd_opt(2016, 12, 31)
                    .unwrap()
                    .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                    .unwrap(),
            ),
            Value::TimestampTz(DateTime::from_timestamp(1, 5).unwrap()),
            Value::Uuid(uuid::Uuid::from_u128(0x1234)),
            Value::Json(serde_json::json!({"a": [1, "x"]})),
        ]
    }

    #[test]
    fn direct_writers_match_to_plain_and_serialize() {
        for v in samples() {
            let mut plain = Vec::new();
            v.write_plain(&mut plain);
            assert_eq!(String::from_utf8(plain).unwrap(), v.to_plain(), "{v:?}");
            let mut json = Vec::new();
            v.write_json(&mut json);
            assert_eq!(
                String::from_utf8(json).unwrap(),
                serde_json::to_string(&v).unwrap(),
                "{v:?}"
            );
        }
    }

    #[test]
    fn json_serialisation_is_typed() {
        let row = vec![
            Value::Null,
            Value::Int(3),
            Value::Decimal("1234.50".into()),
            Value::Float(f64::NAN),
            Value::TimestampTz(DateTime::from_timestamp(0, 0).unwrap()),
        ];
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            r#"[null,3,"1234.50","NaN","1970-01-01T00:00:00Z"]"#
        );
    }
}
