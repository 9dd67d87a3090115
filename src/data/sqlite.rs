//! The SQLite path: a read-only pool (`SQLITE_OPEN_READONLY`, so no statement can write), `?N`
//! parameters bound as UTC text, a progress handler that interrupts a statement at its
//! deadline, and values mapped from storage classes (plus declared column types for
//! bool/date/timestamp, which SQLite stores as integers and text).

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Column as _, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef};

use super::params::{self, Dialect, Param};
use super::{Column, ColumnType, DataError, QueryParams, RecipientKey, RowSink, Streamed, Value};

/// The text form of `:start`/`:end` on SQLite; matches how the sample data stores `created_at`,
/// so plain string comparison orders correctly.
pub const SQLITE_TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// The longest a query waits for a pooled connection (the query timeout, at least 1 s) before
/// the database counts as unavailable; sqlx retries refused connections until then.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn lazy_pool(url: &str, query_timeout: Duration) -> Result<SqlitePool, DataError> {
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|_| DataError::InvalidUrl("not a valid sqlite: URL".into()))?
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(5));
    Ok(super::pool_options(SqlitePoolOptions::new())
        .max_connections(4)
        .acquire_timeout(query_timeout.clamp(Duration::from_secs(1), ACQUIRE_TIMEOUT))
        .connect_lazy_with(opts))
}

pub(crate) fn map_error(e: sqlx::Error, timeout: Duration) -> DataError {
    super::map_sqlx_error(e, timeout, |d| {
        let code: i64 = d.code().and_then(|c| c.parse().ok()).unwrap_or(-1);
        match code & 0xff {
            8 => DataError::ReadOnlyViolation(format!(
                "the report database is opened read-only ({})",
                d.message()
            )),
            9 => DataError::Timeout(timeout),
            14 => {
                DataError::Unavailable(format!("cannot open the database file ({})", d.message()))
            }
            5 | 6 => DataError::Unavailable(format!("the database is locked ({})", d.message())),
            23 => DataError::AuthenticationFailed(d.message().to_string()),
            _ => DataError::Query(d.message().to_string()),
        }
    })
}

/// One value bound to a `?N`: the window as text, the recipient key as itself.
pub(crate) enum Bind {
    Text(String),
    Int(i64),
    Null,
}

fn bind_value(p: Param, params: &QueryParams, key: Option<&RecipientKey>) -> Bind {
    match p {
        Param::Start => Bind::Text(params.start.format(SQLITE_TIMESTAMP_FORMAT).to_string()),
        Param::End => Bind::Text(params.end.format(SQLITE_TIMESTAMP_FORMAT).to_string()),
        Param::Date => Bind::Text(params.date.format("%Y-%m-%d").to_string()),
        Param::RecipientKey => match key {
            Some(RecipientKey::Int(n)) => Bind::Int(*n),
            Some(RecipientKey::Text(t)) => Bind::Text(t.clone()),
            None => Bind::Null,
        },
    }
}

/// The start of every SQLite query that runs (pooled or batched): obvious writes refused, the
/// named placeholders rewritten to `?N`, and the values bound to them.
pub(crate) fn prepare(
    sql: &str,
    params: &QueryParams,
    key: Option<&RecipientKey>,
) -> Result<(String, Vec<Bind>), DataError> {
    super::refuse_obvious_writes(sql)?;
    let rw = params::rewrite(sql, Dialect::Sqlite)?;
    let binds = rw
        .binds
        .iter()
        .map(|p| bind_value(*p, params, key))
        .collect();
    Ok((rw.sql, binds))
}

/// The declared column type, as far as it changes how a value is read.
pub(crate) fn declared_kind(type_name: &str) -> Option<ColumnType> {
    match type_name {
        "BOOLEAN" => Some(ColumnType::Bool),
        "DATE" => Some(ColumnType::Date),
        "DATETIME" => Some(ColumnType::Timestamp),
        "INTEGER" => Some(ColumnType::Integer),
        "REAL" => Some(ColumnType::Float),
        "TEXT" => Some(ColumnType::Text),
        _ => None, // NULL (expression), NUMERIC, BLOB: decided per value
    }
}

/// [`declared_kind`] for a column's declared type as SQLite gives it (`sqlite3_column_decltype`),
/// parsed the way sqlx-sqlite 0.9 parses it (`DataType::from_str`), so the batched export reader
/// types columns exactly as the sqlx path does. Unknown names (`NUMERIC`, `DECIMAL(10,2)`) are
/// `None` there too: the value decides.
pub(crate) fn declared_kind_of_decltype(decl: &str) -> Option<ColumnType> {
    let s = decl.to_ascii_lowercase();
    match &*s {
        "int4" | "int8" => Some(ColumnType::Integer),
        "boolean" | "bool" => Some(ColumnType::Bool),
        "date" => Some(ColumnType::Date),
        "time" => None,
        "datetime" | "timestamp" => Some(ColumnType::Timestamp),
        _ if s.contains("int") => Some(ColumnType::Integer),
        _ if s.contains("char") || s.contains("clob") || s.contains("text") => {
            Some(ColumnType::Text)
        }
        _ if s.contains("blob") => None,
        _ if s.contains("real") || s.contains("floa") || s.contains("doub") => {
            Some(ColumnType::Float)
        }
        _ => None,
    }
}

/// The type SQLite's planner infers for an expression column (`COUNT(*)` → INTEGER).
fn inferred_kind(type_name: &str) -> Option<ColumnType> {
    match type_name {
        "INTEGER" | "INT" | "BIGINT" => Some(ColumnType::Integer),
        "REAL" | "FLOAT" | "DOUBLE" => Some(ColumnType::Float),
        "TEXT" => Some(ColumnType::Text),
        "BOOLEAN" => Some(ColumnType::Bool),
        "DATE" => Some(ColumnType::Date),
        "DATETIME" => Some(ColumnType::Timestamp),
        _ => None,
    }
}

pub(crate) async fn stream_query(
    pool: &SqlitePool,
    sql: &str,
    params: &QueryParams,
    key: Option<&RecipientKey>,
    max_rows: usize,
    timeout: Duration,
    sink: RowSink<'_>,
) -> Result<Streamed, DataError> {
    let (query, binds) = prepare(sql, params, key)?;
    let work = async {
        let mut conn = pool.acquire().await.map_err(|e| map_error(e, timeout))?;
        let deadline = Instant::now() + timeout;
        conn.lock_handle()
            .await
            .map_err(|e| map_error(e, timeout))?
            .set_progress_handler(1000, move || Instant::now() < deadline);
        let result = fetch(&mut conn, &query, &binds, max_rows, timeout, sink).await;
        if let Ok(mut h) = conn.lock_handle().await {
            h.remove_progress_handler();
        }
        result
    };
    // The progress handler interrupts a running statement; this outer timeout also covers a
    // statement stuck outside the VM (e.g. waiting on a lock).
    match tokio::time::timeout(timeout + Duration::from_secs(1), work).await {
        Ok(r) => r,
        Err(_) => Err(DataError::Timeout(timeout)),
    }
}

async fn fetch(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    binds: &[Bind],
    max_rows: usize,
    timeout: Duration,
    sink: RowSink<'_>,
) -> Result<Streamed, DataError> {
    let stmt = conn
        .prepare(AssertSqlSafe(sql.to_string()).into_sql_str())
        .await
        .map_err(|e| map_error(e, timeout))?;
    let declared: Vec<Option<ColumnType>> = stmt
        .columns()
        .iter()
        .map(|c| declared_kind(c.type_info().name()))
        .collect();
    let mut columns: Vec<Column> = stmt
        .columns()
        .iter()
        .zip(&declared)
        .map(|(c, d)| Column {
            name: c.name().to_string(),
            kind: d.unwrap_or(ColumnType::Unknown),
        })
        .collect();
    let mut q = stmt.query();
    for b in binds {
        q = match b {
            Bind::Text(t) => q.bind(t.as_str()),
            Bind::Int(n) => q.bind(*n),
            Bind::Null => q.bind(None::<String>),
        };
    }
    let mut rows = 0usize;
    let mut truncated = false;
    {
        let mut stream = q.fetch(&mut *conn);
        // One row buffer for the whole result: text cells keep their allocations from row to
        // row unless the sink takes the row.
        let mut values: Vec<Value> = Vec::with_capacity(declared.len());
        while let Some(row) = stream.try_next().await.map_err(|e| map_error(e, timeout))? {
            if rows >= max_rows {
                truncated = true;
                break;
            }
            convert_row(&row, &declared, &mut values)?;
            if rows == 0 {
                // Expression columns have no declared type: the first row's value decides
                // (run_query refines NULLs later from all rows).
                for (col, v) in columns.iter_mut().zip(&values) {
                    if col.kind == ColumnType::Unknown {
                        col.kind = ColumnType::of_value(v);
                    }
                }
            }
            sink.row(&columns, &mut values)?;
            if let Some(flush) = sink.flush() {
                flush.await?;
            }
            rows += 1;
        }
    }
    if rows == 0 {
        describe_unknown(conn, sql, &mut columns).await;
    }
    Ok(Streamed {
        columns,
        rows,
        truncated,
    })
}

/// Types the columns still `Unknown` after an empty result: no row to look at, so SQLite's
/// query planner says what the expressions yield, and an empty window has the same column types
/// (and JSON shape) as a full one.
pub(crate) async fn describe_unknown(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    columns: &mut [Column],
) {
    if !columns.iter().any(|c| c.kind == ColumnType::Unknown) {
        return;
    }
    if let Ok(described) = conn
        .describe(AssertSqlSafe(sql.to_string()).into_sql_str())
        .await
    {
        for (col, d) in columns.iter_mut().zip(described.columns()) {
            if col.kind == ColumnType::Unknown {
                col.kind = inferred_kind(d.type_info().name()).unwrap_or(ColumnType::Text);
            }
        }
    }
}

/// One cell as SQLite stores it (its storage class), borrowed from the row: what both read
/// paths (sqlx rows and the batched export reader) decode through [`convert_cell`], so they give
/// the same values.
pub(crate) enum Cell<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// Decodes `row` into `out`, reusing `out`'s text buffers where a cell was text before.
fn convert_row(
    row: &SqliteRow,
    declared: &[Option<ColumnType>],
    out: &mut Vec<Value>,
) -> Result<(), DataError> {
    out.resize(declared.len(), Value::Null);
    for (i, decl) in declared.iter().enumerate() {
        let raw = row
            .try_get_raw(i)
            .map_err(|e| DataError::Query(e.to_string()))?;
        if raw.is_null() {
            out[i] = Value::Null;
            continue;
        }
        let type_info = raw.type_info();
        let decode_err = |e: sqlx::Error| DataError::Query(format!("cannot read column {i}: {e}"));
        let cell = match type_info.name() {
            "INTEGER" => Cell::Int(row.try_get_unchecked(i).map_err(decode_err)?),
            "REAL" => Cell::Real(row.try_get_unchecked(i).map_err(decode_err)?),
            "BLOB" => Cell::Blob(row.try_get_unchecked(i).map_err(decode_err)?),
            _ => {
                let t: &str = row.try_get_unchecked(i).map_err(decode_err)?;
                Cell::Text(t.as_bytes())
            }
        };
        convert_cell(cell, *decl, &mut out[i], i)?;
    }
    Ok(())
}

/// Decodes one cell into `out` (reusing its text buffer), by its storage class and the
/// column's declared type.
pub(crate) fn convert_cell(
    cell: Cell<'_>,
    decl: Option<ColumnType>,
    out: &mut Value,
    i: usize,
) -> Result<(), DataError> {
    let v = match cell {
        Cell::Null => Value::Null,
        Cell::Int(n) => match decl {
            Some(ColumnType::Bool) if n == 0 || n == 1 => Value::Bool(n == 1),
            _ => Value::Int(n),
        },
        Cell::Real(f) => Value::Float(f),
        Cell::Blob(b) => {
            let mut s = take_text(out);
            s.reserve(2 + 2 * b.len());
            s.push_str("\\x");
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for byte in b {
                s.push(HEX[usize::from(byte >> 4)] as char);
                s.push(HEX[usize::from(byte & 0xf)] as char);
            }
            Value::Text(s)
        }
        Cell::Text(t) => {
            let t = std::str::from_utf8(t).map_err(|e| {
                DataError::Query(format!("cannot read column {i}: invalid UTF-8 text: {e}"))
            })?;
            match decl {
                Some(ColumnType::Date) => match parse_date(t) {
                    Some(d) => Value::Date(d),
                    None => Value::Text(reuse_text(out, t)),
                },
                Some(ColumnType::Timestamp) => match parse_timestamp(t) {
                    Some(v) => v,
                    None => Value::Text(reuse_text(out, t)),
                },
                Some(ColumnType::Bool) => match t {
                    "true" | "TRUE" => Value::Bool(true),
                    "false" | "FALSE" => Value::Bool(false),
                    _ => Value::Text(reuse_text(out, t)),
                },
                _ => Value::Text(reuse_text(out, t)),
            }
        }
    };
    *out = v;
    Ok(())
}

/// The previous cell's text buffer (emptied), or a new one.
fn take_text(old: &mut Value) -> String {
    match std::mem::take(old) {
        Value::Text(mut s) => {
            s.clear();
            s
        }
        _ => String::new(),
    }
}

/// `t` in the previous cell's text buffer when it had one.
fn reuse_text(old: &mut Value, t: &str) -> String {
    let mut s = take_text(old);
    s.push_str(t);
    s
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// SQLite timestamps are text: naive (`YYYY-MM-DD HH:MM:SS[.fff]`, also with `T`) or with an
/// offset/`Z`, which makes them instants.
fn parse_timestamp(s: &str) -> Option<Value> {
    // The common shape (`YYYY-MM-DD HH:MM:SS`, how the sample data and SQLite's own
    // `datetime()` store it) without chrono's format parser: this runs once per cell.
    if let Some(t) = parse_plain_timestamp(s.as_bytes()) {
        return Some(Value::Timestamp(t));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(Value::Timestamp(t));
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(Value::TimestampTz(t.with_timezone(&Utc)));
        }
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| Value::TimestampTz(t.with_timezone(&Utc)))
}

/// `YYYY-MM-DD HH:MM:SS` exactly, or `None` (the general parser then decides).
fn parse_plain_timestamp(b: &[u8]) -> Option<NaiveDateTime> {
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(num(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, num(5..7)?, num(8..10)?)?.and_hms_opt(
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    )
}

/// Prepares the query (syntax, tables, columns) and inspects its bytecode for writes, without
/// running it.
pub(crate) async fn check_query(
    pool: &SqlitePool,
    sql: &str,
    timeout: Duration,
) -> Result<(), DataError> {
    super::refuse_obvious_writes(sql)?;
    let rw = params::rewrite(sql, Dialect::Sqlite)?;
    let work = async {
        let mut conn = pool.acquire().await.map_err(|e| map_error(e, timeout))?;
        let mut q = sqlx::query(AssertSqlSafe(format!("EXPLAIN {}", rw.sql)));
        for _ in &rw.binds {
            q = q.bind("1970-01-01 00:00:00");
        }
        let ops = q
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| map_error(e, timeout))?;
        for op in ops {
            let name: String = op.try_get("opcode").unwrap_or_default();
            if matches!(
                name.as_str(),
                "OpenWrite" | "CreateBtree" | "Destroy" | "Clear" | "VUpdate"
            ) {
                return Err(DataError::ReadOnlyViolation(
                    "the query would write to the database".into(),
                ));
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(DataError::Timeout(timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_result_has_the_same_column_types_as_a_full_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let url = format!("sqlite:{}", path.display());
        let rw = SqlitePool::connect_with(
            SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE orders (status TEXT, total_cents INTEGER, placed DATETIME); \
             INSERT INTO orders VALUES ('paid', 1250, '2026-11-24 10:00:00');",
        )
        .execute(&rw)
        .await
        .unwrap();
        rw.close().await;
        let pool = lazy_pool(&url, Duration::from_secs(5)).unwrap();
        let sql = "SELECT status, COUNT(*) AS orders, SUM(total_cents) AS revenue, \
                   AVG(total_cents) AS avg_cents, MAX(placed) AS last \
                   FROM orders WHERE status = :date GROUP BY status";
        let kinds = |date: &str| {
            let pool = pool.clone();
            let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
            async move {
                let params = QueryParams {
                    start: Utc::now(),
                    end: Utc::now(),
                    date,
                };
                let mut sink = |_: &[Column], _: &mut Vec<Value>| Ok(());
                let s = stream_query(
                    &pool,
                    sql,
                    &params,
                    None,
                    10,
                    Duration::from_secs(5),
                    &mut sink,
                )
                .await
                .unwrap();
                (
                    s.rows,
                    s.columns
                        .iter()
                        .map(|c| c.kind.as_str())
                        .collect::<Vec<_>>(),
                )
            }
        };
        let (rows, empty) = kinds("2026-11-24").await;
        assert_eq!(rows, 0);
        assert!(!empty.contains(&"unknown"), "{empty:?}");
        assert_eq!(&empty[..3], &["text", "integer", "integer"]);
    }

    #[test]
    fn the_fast_timestamp_path_agrees_with_chrono() {
        for s in [
            "2026-11-24 23:59:00",
            "0001-01-01 00:00:00",
            "2026-02-30 10:00:00",
            "2026-11-24 24:00:00",
            "2016-12-31 23:59:60",
            "2026-1-24 23:59:000",
            "+026-11-24 23:59:00",
        ] {
            let fast = parse_plain_timestamp(s.as_bytes());
            let chrono = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok();
            if fast.is_some() {
                assert_eq!(fast, chrono, "{s}");
            }
        }
        assert!(parse_plain_timestamp(b"2026-11-24 23:59:00").is_some());
    }

    #[test]
    fn timestamps_parse_naive_and_with_offset() {
        assert!(matches!(
            parse_timestamp("2026-11-24 23:59:00"),
            Some(Value::Timestamp(_))
        ));
        assert!(matches!(
            parse_timestamp("2026-11-24T23:59:00Z"),
            Some(Value::TimestampTz(_))
        ));
        assert!(matches!(
            parse_timestamp("2026-11-24 23:59:00+01:00"),
            Some(Value::TimestampTz(_))
        ));
        assert!(parse_timestamp("yesterday").is_none());
    }
}
