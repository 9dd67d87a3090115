//! The PostgreSQL path: each query runs in its own `BEGIN READ ONLY` transaction with
//! `SET LOCAL statement_timeout`, the window is bound with `set_config(..)` (an ordinary bound
//! parameter) and read back by `current_setting(..)` casts that the tokenizer put in place of
//! `:start`/`:end`/`:date`. The query itself runs over the simple protocol, so every value
//! arrives as PostgreSQL's own text and is parsed per column type: numeric stays exact.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Column as _, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef};

use super::params::{self, Dialect};
use super::{Column, ColumnType, DataError, QueryParams, RecipientKey, RowSink, Streamed, Value};

/// The longest a query waits for a pooled connection (including connecting) before the
/// database counts as unavailable; the pool uses the query timeout when it is shorter.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn lazy_pool(url: &str, query_timeout: Duration) -> Result<PgPool, DataError> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|_| DataError::InvalidUrl("not a valid postgres:// URL".into()))?
        .application_name("report-handler");
    Ok(super::pool_options(PgPoolOptions::new())
        .max_connections(5)
        .acquire_timeout(query_timeout.clamp(Duration::from_secs(1), ACQUIRE_TIMEOUT))
        .connect_lazy_with(opts))
}

fn map_error(e: sqlx::Error, timeout: Duration) -> DataError {
    super::map_sqlx_error(e, timeout, |d| {
        let code = d.code().map(|c| c.to_string()).unwrap_or_default();
        let msg = d.message().to_string();
        match code.as_str() {
            "57014" => DataError::Timeout(timeout),
            "25006" => DataError::ReadOnlyViolation(msg),
            "28P01" | "28000" => DataError::AuthenticationFailed(msg),
            "3D000" | "53300" | "57P01" | "57P02" | "57P03" => DataError::Unavailable(msg),
            c if c.starts_with("08") => DataError::Unavailable(msg),
            "" => DataError::Query(msg),
            c => DataError::Query(format!("{msg} (SQLSTATE {c})")),
        }
    })
}

/// Opens the read-only transaction, applies the timeout and output settings, binds the window.
async fn begin(
    pool: &PgPool,
    params: &QueryParams,
    key: Option<&RecipientKey>,
    timeout: Duration,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, DataError> {
    let me = |e| map_error(e, timeout);
    let mut tx = pool.begin_with("BEGIN READ ONLY").await.map_err(me)?;
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
    // Only an integer is formatted into this statement.
    let setup = format!(
        "SET LOCAL statement_timeout = {ms}; SET LOCAL TimeZone = 'UTC'; \
         SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL extra_float_digits = 1"
    );
    sqlx::raw_sql(AssertSqlSafe(setup))
        .execute(&mut *tx)
        .await
        .map_err(me)?;
    sqlx::query(
        "SELECT set_config('report.start', $1, true), set_config('report.end', $2, true), \
         set_config('report.date', $3, true)",
    )
    .bind(params.start.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    .bind(params.end.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    .bind(params.date.format("%Y-%m-%d").to_string())
    .execute(&mut *tx)
    .await
    .map_err(me)?;
    if let Some(key) = key {
        sqlx::query("SELECT set_config('report.recipient_key', $1, true)")
            .bind(key.to_string())
            .execute(&mut *tx)
            .await
            .map_err(me)?;
    }
    Ok(tx)
}

fn kind_of(type_name: &str) -> ColumnType {
    match type_name {
        "BOOL" => ColumnType::Bool,
        "INT2" | "INT4" | "INT8" | "OID" => ColumnType::Integer,
        "FLOAT4" | "FLOAT8" => ColumnType::Float,
        "NUMERIC" => ColumnType::Decimal,
        "DATE" => ColumnType::Date,
        "TIMESTAMP" => ColumnType::Timestamp,
        "TIMESTAMPTZ" => ColumnType::TimestampTz,
        "UUID" => ColumnType::Uuid,
        "JSON" | "JSONB" => ColumnType::Json,
        _ => ColumnType::Text, // TEXT, VARCHAR, BPCHAR, NAME and anything else: its text form
    }
}

/// Parses PostgreSQL's text output for a column of `kind`; text that does not parse (e.g. a
/// date of `infinity`) is kept as text rather than failing the report.
fn parse_text(kind: ColumnType, s: &str) -> Value {
    let parsed = match kind {
        ColumnType::Bool => match s {
            "t" => Some(Value::Bool(true)),
            "f" => Some(Value::Bool(false)),
            _ => None,
        },
        ColumnType::Integer => s.parse().ok().map(Value::Int),
        ColumnType::Float => s.parse().ok().map(Value::Float),
        ColumnType::Decimal => Some(Value::Decimal(s.to_string())),
        ColumnType::Date => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .map(Value::Date),
        ColumnType::Timestamp => NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(Value::Timestamp),
        ColumnType::TimestampTz => DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z")
            .ok()
            .map(|t| Value::TimestampTz(t.with_timezone(&Utc))),
        ColumnType::Uuid => uuid::Uuid::parse_str(s).ok().map(Value::Uuid),
        ColumnType::Json => serde_json::from_str(s).ok().map(Value::Json),
        ColumnType::Text | ColumnType::Unknown => None,
    };
    parsed.unwrap_or_else(|| Value::Text(s.to_string()))
}

fn columns_of(cols: &[sqlx::postgres::PgColumn]) -> Vec<Column> {
    cols.iter()
        .map(|c| Column {
            name: c.name().to_string(),
            kind: kind_of(c.type_info().name()),
        })
        .collect()
}

/// Decodes `row` into `out` (the reused row buffer).
fn convert_row(row: &PgRow, columns: &[Column], out: &mut Vec<Value>) -> Result<(), DataError> {
    out.clear();
    for (i, col) in columns.iter().enumerate() {
        let raw = row
            .try_get_raw(i)
            .map_err(|e| DataError::Query(e.to_string()))?;
        if raw.is_null() {
            out.push(Value::Null);
            continue;
        }
        let s = raw
            .as_str()
            .map_err(|e| DataError::Query(format!("cannot read column {}: {e}", col.name)))?;
        out.push(parse_text(col.kind, s));
    }
    Ok(())
}

pub(crate) async fn stream_query(
    pool: &PgPool,
    sql: &str,
    params: &QueryParams,
    key: Option<&RecipientKey>,
    max_rows: usize,
    timeout: Duration,
    sink: RowSink<'_>,
) -> Result<Streamed, DataError> {
    super::refuse_obvious_writes(sql)?;
    let rw = params::rewrite_keyed(sql, Dialect::Postgres, key)?;
    let work = async {
        let mut tx = begin(pool, params, key, timeout).await?;
        let mut columns: Option<Vec<Column>> = None;
        let mut rows = 0usize;
        let mut truncated = false;
        {
            let mut values: Vec<Value> = Vec::new();
            let mut stream = sqlx::raw_sql(AssertSqlSafe(rw.sql.clone())).fetch(&mut *tx);
            while let Some(row) = stream.try_next().await.map_err(|e| map_error(e, timeout))? {
                let cols = columns.get_or_insert_with(|| columns_of(row.columns()));
                if rows >= max_rows {
                    truncated = true;
                    break;
                }
                convert_row(&row, cols, &mut values)?;
                sink.row(cols, &mut values)?;
                if let Some(flush) = sink.flush() {
                    flush.await?;
                }
                rows += 1;
            }
        }
        let columns = match columns {
            Some(c) => c,
            // No rows, so no row description reached us: describe the statement instead.
            None => {
                let stmt = (&mut *tx)
                    .prepare(AssertSqlSafe(rw.sql.clone()).into_sql_str())
                    .await
                    .map_err(|e| map_error(e, timeout))?;
                columns_of(stmt.columns())
            }
        };
        // Dropping the transaction rolls back; nothing a report does survives.
        let _ = tx.rollback().await;
        Ok(Streamed {
            columns,
            rows,
            truncated,
        })
    };
    // statement_timeout cancels on the server; this bounds connecting and a stuck network too.
    match tokio::time::timeout(timeout + ACQUIRE_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(DataError::Timeout(timeout)),
    }
}

/// EXPLAINs the query (syntax, tables, types; the plan shows whether it would modify data)
/// inside a read-only transaction, without running it.
pub(crate) async fn check_query(
    pool: &PgPool,
    sql: &str,
    timeout: Duration,
) -> Result<(), DataError> {
    super::refuse_obvious_writes(sql)?;
    let rw = params::rewrite(sql, Dialect::Postgres)?;
    let dummy = QueryParams {
        start: DateTime::UNIX_EPOCH,
        end: DateTime::UNIX_EPOCH,
        date: DateTime::UNIX_EPOCH.date_naive(),
    };
    let work = async {
        let mut tx = begin(pool, &dummy, None, timeout).await?;
        let plan = sqlx::raw_sql(AssertSqlSafe(format!("EXPLAIN {}", rw.sql)))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| map_error(e, timeout))?;
        let _ = tx.rollback().await;
        for line in &plan {
            let text = line
                .try_get_raw(0)
                .ok()
                .and_then(|v| v.as_str().ok())
                .unwrap_or("");
            let node = text.trim_start().trim_start_matches("->").trim_start();
            if ["Insert on", "Update on", "Delete on", "Merge on"]
                .iter()
                .any(|p| node.starts_with(p))
            {
                return Err(DataError::ReadOnlyViolation(
                    "the query would modify data".into(),
                ));
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout + ACQUIRE_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(DataError::Timeout(timeout)),
    }
}

/// A URL-free description of a connection error, for the sample loader's messages.
pub(crate) fn describe(e: sqlx::Error) -> String {
    map_error(e, Duration::ZERO).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_parse_per_type() {
        assert_eq!(
            parse_text(ColumnType::Decimal, "1234.50"),
            Value::Decimal("1234.50".into())
        );
        assert_eq!(parse_text(ColumnType::Bool, "t"), Value::Bool(true));
        assert_eq!(
            parse_text(ColumnType::TimestampTz, "2026-11-24 23:59:00+00"),
            Value::TimestampTz(
                DateTime::parse_from_rfc3339("2026-11-24T23:59:00Z")
                    .unwrap()
                    .into()
            )
        );
        assert_eq!(
            parse_text(ColumnType::Date, "infinity"),
            Value::Text("infinity".into())
        );
        assert_eq!(
            parse_text(ColumnType::Float, "-Infinity"),
            Value::Float(f64::NEG_INFINITY)
        );
    }
}
