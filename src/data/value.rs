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
            Value::Float(f) if f.is_finite() => write_float_plain(out, *f),
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

/// Appends a finite `f` exactly as `format!("{f}")` writes it: the shortest digits that read
/// back as `f`, in plain positional notation (`1000000000000000000000`, `0.0000001`, `1`,
/// `-0`). The digits come from `zmij` (shortest and closest, like `core`'s Grisu/Dragon) and
/// are laid out here: `core::fmt`'s float path was about 480 of the ~5,600 instructions a SQLite
/// CSV export spent per row of five cells, one of them a float.
fn write_float_plain(out: &mut Vec<u8>, f: f64) {
    let mut buf = zmij::Buffer::new();
    let s = buf.format_finite(f).as_bytes();
    // The common case, `123.45` or `120.0`: already positional; `Display` drops a `.0`.
    if !s.contains(&b'e') {
        let (body, q) = match s.strip_suffix(b".0") {
            Some(int) => (
                int,
                int.iter().rev().take_while(|&&b| b == b'0').count() as i32,
            ),
            None => (
                s,
                -(s.iter().rev().take_while(|&&b| b != b'.').count() as i32),
            ),
        };
        if odd_binary(f).is_none_or(|(_, e)| e != q - 1) {
            out.extend_from_slice(body);
            return;
        }
    }
    let (neg, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    // zmij writes `D[.DDD]e±N` outside its fixed range; split off the exponent.
    let (mantissa, exp) = match s.iter().position(|&b| b == b'e') {
        Some(i) => {
            let e = std::str::from_utf8(&s[i + 1..])
                .ok()
                .and_then(|e| e.parse::<i32>().ok())
                .unwrap_or(0);
            (&s[..i], e)
        }
        None => (s, 0),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|&b| b == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &[][..]),
    };
    // The value is 0.DIGITS × 10^point, with DIGITS free of leading and trailing zeros.
    let mut digits = [0u8; 40];
    let mut n = 0;
    for &d in int_part.iter().chain(frac_part) {
        if let Some(slot) = digits.get_mut(n) {
            *slot = d;
            n += 1;
        }
    }
    let mut point = int_part.len() as i32 + exp;
    let mut first = 0;
    while first < n && digits[first] == b'0' {
        first += 1;
        point -= 1;
    }
    while n > first && digits[n - 1] == b'0' {
        n -= 1;
    }
    let digits = &digits[first..n];
    if is_decimal_tie(f, digits, point) {
        // Exactly halfway between two shortest candidates: `core` rounds up, zmij may not.
        use std::io::Write as _;
        let _ = write!(out, "{f}");
        return;
    }
    if neg {
        out.push(b'-');
    }
    if digits.is_empty() {
        out.push(b'0');
    } else if point <= 0 {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + point.unsigned_abs() as usize, b'0');
        out.extend_from_slice(digits);
    } else if point as usize >= digits.len() {
        out.extend_from_slice(digits);
        out.resize(out.len() + (point as usize - digits.len()), b'0');
    } else {
        out.extend_from_slice(&digits[..point as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits[point as usize..]);
    }
}

/// `|f|` as ODD × 2^E with ODD odd; `None` for zero.
fn odd_binary(f: f64) -> Option<(u64, i32)> {
    let bits = f.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    let (mant, e) = if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1 << 52), exp - 1075)
    };
    if mant == 0 {
        return None;
    }
    let tz = mant.trailing_zeros();
    Some((mant >> tz, e + tz as i32))
}

/// Whether `|f|` lies exactly halfway between DIGITS × 10^q and the next candidate of the
/// same length (q = `point` − the number of digits); only then can two shortest round-trip
/// strings be equally close. The midpoint is (2·DIGITS + 1) × 5^q × 2^(q−1), so `|f|` =
/// ODD × 2^E must have E = q − 1 (which rules out nearly every value at once) and
/// ODD = (2·DIGITS + 1) × 5^q.
fn is_decimal_tie(f: f64, digits: &[u8], point: i32) -> bool {
    let q = point - digits.len() as i32;
    let Some((odd, e)) = odd_binary(f) else {
        return false;
    };
    if e != q - 1 || digits.is_empty() || digits.len() > 19 {
        return false;
    }
    let d = digits.iter().fold(0u64, |acc, &b| {
        acc.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
    });
    let Some(m) = d.checked_mul(2).and_then(|x| x.checked_add(1)) else {
        return false;
    };
    let p5 = |k: u32| 5u64.checked_pow(k);
    if q >= 0 {
        p5(q as u32).and_then(|p| m.checked_mul(p)) == Some(odd)
    } else {
        p5(q.unsigned_abs()).and_then(|p| odd.checked_mul(p)) == Some(m)
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
    fn floats_are_written_as_display_writes_them() {
        let mut cases = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            0.3,
            2.5,
            0.01,
            1e15,
            1e16,
            1e17,
            1e21,
            1e22,
            1e-7,
            1.5e-7,
            123456789012345680.0,
            9007199254740993.0,
            5e-324,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            std::f64::consts::PI,
            1234.5678,
            -0.000123,
            1658206780088562.2,
            0.5,
            2.5e-8,
            4503599627370497.5,
        ];
        // Every binade and a spread of mantissas: a fixed xorshift, so failures reproduce.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(f64::from_bits(x));
            cases.push((x % 1_000_000_000) as f64 / 100.0);
            cases.push((x % 100_000_000_000) as f64 / 4.0);
        }
        for f in cases.into_iter().filter(|f| f.is_finite()) {
            let mut out = Vec::new();
            write_float_plain(&mut out, f);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{f}"), "{:e}", f);
        }
    }

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
