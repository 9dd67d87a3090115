//! The SQLite read path of streamed exports: the statement is stepped on a blocking thread
//! (`spawn_blocking`) with its own read-only `rusqlite` connection to the same file, and the
//! decoded rows come over in batches of [`BATCH_ROWS`].
//!
//! Why not sqlx here: its SQLite driver steps the statement on a worker thread and hands every
//! row over on its own (a channel message, a mutex, an owned copy of every cell), about half of
//! an export's cost and one thread switch per few rows (BENCHMARKS.md, 2026-12-04). Small
//! queries (cached reports, `run_query`) stay on the sqlx pool: opening a connection per query
//! would cost them more than it saves.
//!
//! The rules are the sqlx path's: the connection is opened `SQLITE_OPEN_READONLY`; a progress
//! handler interrupts the statement at its deadline (and when the reader went away); rows past
//! `max_rows` set `truncated`; the columns' declared types are read the way sqlx reads them and
//! every cell is decoded by the same [`convert_cell`], so the values, and so the CSV and JSON
//! bytes, are the same. An empty result asks sqlx's `describe` for the expression columns' types,
//! as the sqlx path does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{OpenFlags, ffi};
use sqlx::sqlite::SqlitePool;
use tokio::sync::mpsc;

use super::sqlite::{Bind, Cell, convert_cell, declared_kind_of_decltype, prepare};
use super::{Column, ColumnType, DataError, QueryParams, RecipientKey, RowSink, Streamed, Value};

/// Rows decoded on the blocking thread before they are handed over together.
pub const BATCH_ROWS: usize = 512;

/// Batches on their way to the async side before the reader waits.
const BATCHES_IN_FLIGHT: usize = 2;

/// Rows decoded on the reader thread: `rows[..len]` hold values, the rest are buffers kept for
/// reuse (a batch goes back to the reader once its rows were handed on, so text cells keep
/// their allocations).
#[derive(Default)]
struct Batch {
    rows: Vec<Vec<Value>>,
    len: usize,
}

enum Msg {
    /// The columns, with their declared types (expression columns `Unknown`).
    Start(Vec<Column>),
    Rows(Batch),
    /// The statement is done; `true` when rows past `max_rows` were left unread.
    End(bool),
    Err(DataError),
}

/// The database file behind `pool`, when it is one another connection can open (not an
/// in-memory database).
pub(crate) fn file_of(pool: &SqlitePool) -> Option<PathBuf> {
    let opts = pool.connect_options();
    let f = opts.get_filename();
    let s = f.to_string_lossy();
    if s.is_empty() || s == ":memory:" || s.starts_with("file:") || s.contains("mode=memory") {
        return None;
    }
    Some(f.to_path_buf())
}

/// Streams `sql` from `file` into `sink`; see the module docs. `pool` is only used to type an
/// empty result's expression columns.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn stream_query(
    pool: &SqlitePool,
    file: PathBuf,
    sql: &str,
    params: &QueryParams,
    key: Option<&RecipientKey>,
    max_rows: usize,
    timeout: Duration,
    sink: RowSink<'_>,
) -> Result<Streamed, DataError> {
    let (query, binds) = prepare(sql, params, key)?;
    let deadline = Instant::now() + timeout;
    let (tx, mut rx) = mpsc::channel::<Msg>(BATCHES_IN_FLIGHT);
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Batch>();
    let reader_query = query.clone();
    let reader = tokio::task::spawn_blocking(move || {
        if let Err(e) = read(
            &file,
            &reader_query,
            &binds,
            max_rows,
            deadline,
            timeout,
            &tx,
            &back_rx,
        ) {
            let _ = tx.blocking_send(Msg::Err(e));
        }
    });
    let work = async {
        let mut columns = match rx.recv().await {
            Some(Msg::Start(c)) => c,
            Some(Msg::Err(e)) => return Err(e),
            _ => return Err(DataError::Query("the query reader stopped".into())),
        };
        let mut rows = 0usize;
        let truncated = loop {
            match rx.recv().await {
                Some(Msg::Rows(mut batch)) => {
                    for row in &mut batch.rows[..batch.len] {
                        if rows == 0 {
                            // Expression columns have no declared type: the first row's value
                            // decides (run_query refines NULLs later from all rows).
                            for (col, v) in columns.iter_mut().zip(row.iter()) {
                                if col.kind == ColumnType::Unknown {
                                    col.kind = ColumnType::of_value(v);
                                }
                            }
                        }
                        sink.row(&columns, row)?;
                        if let Some(flush) = sink.flush() {
                            flush.await?;
                        }
                        rows += 1;
                    }
                    // The reader may be done; then the batch is simply dropped.
                    let _ = back_tx.send(batch);
                }
                Some(Msg::End(t)) => break t,
                Some(Msg::Err(e)) => return Err(e),
                Some(Msg::Start(_)) | None => {
                    return Err(DataError::Query("the query reader stopped".into()));
                }
            }
        };
        if rows == 0 && columns.iter().any(|c| c.kind == ColumnType::Unknown) {
            let mut conn = pool
                .acquire()
                .await
                .map_err(|e| super::sqlite::map_error(e, timeout))?;
            super::sqlite::describe_unknown(&mut conn, &query, &mut columns).await;
        }
        Ok(Streamed {
            columns,
            rows,
            truncated,
        })
    };
    // The progress handler interrupts a running statement; this outer timeout also covers a
    // statement stuck outside the VM (e.g. waiting on a lock). Returning early drops `rx`,
    // which stops the reader at its next batch or progress check.
    let result = match tokio::time::timeout(timeout + Duration::from_secs(1), work).await {
        Ok(r) => r,
        Err(_) => Err(DataError::Timeout(timeout)),
    };
    drop(rx);
    if result.is_ok() {
        // The reader has sent `End`; wait for it so no blocking work outlives the query.
        let _ = reader.await;
    }
    result
}

/// The blocking half: opens the file read-only, steps the statement and sends batches.
#[allow(clippy::too_many_arguments)]
fn read(
    file: &std::path::Path,
    sql: &str,
    binds: &[Bind],
    max_rows: usize,
    deadline: Instant,
    timeout: Duration,
    tx: &mpsc::Sender<Msg>,
    back: &std::sync::mpsc::Receiver<Batch>,
) -> Result<(), DataError> {
    let err = |e: rusqlite::Error| map_error(e, timeout);
    let conn = rusqlite::Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    let watch = tx.clone();
    conn.progress_handler(
        1000,
        Some(move || Instant::now() >= deadline || watch.is_closed()),
    )
    .map_err(err)?;
    let mut stmt = conn.prepare(sql).map_err(err)?;
    let declared: Vec<Option<ColumnType>> = stmt
        .columns()
        .iter()
        .map(|c| c.decl_type().and_then(declared_kind_of_decltype))
        .collect();
    let columns: Vec<Column> = stmt
        .columns()
        .iter()
        .zip(&declared)
        .map(|(c, d)| Column {
            name: c.name().to_string(),
            kind: d.unwrap_or(ColumnType::Unknown),
        })
        .collect();
    for (i, b) in binds.iter().enumerate() {
        match b {
            Bind::Text(t) => stmt.raw_bind_parameter(i + 1, t.as_str()),
            Bind::Int(n) => stmt.raw_bind_parameter(i + 1, *n),
            Bind::Null => stmt.raw_bind_parameter(i + 1, rusqlite::types::Null),
        }
        .map_err(err)?;
    }
    if tx.blocking_send(Msg::Start(columns)).is_err() {
        return Ok(());
    }
    let mut rows = stmt.raw_query();
    let mut batch = Batch::default();
    let mut count = 0usize;
    let mut truncated = false;
    while let Some(row) = rows.next().map_err(err)? {
        if count >= max_rows {
            truncated = true;
            break;
        }
        if batch.len == batch.rows.len() {
            batch.rows.push(Vec::with_capacity(declared.len()));
        }
        let out = &mut batch.rows[batch.len];
        out.resize(declared.len(), Value::Null);
        for (i, (decl, slot)) in declared.iter().zip(out.iter_mut()).enumerate() {
            let cell = match row.get_ref(i).map_err(err)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(n) => Cell::Int(n),
                ValueRef::Real(f) => Cell::Real(f),
                ValueRef::Text(t) => Cell::Text(t),
                ValueRef::Blob(b) => Cell::Blob(b),
            };
            convert_cell(cell, *decl, slot, i)?;
        }
        batch.len += 1;
        count += 1;
        if batch.len == BATCH_ROWS {
            let next = match back.try_recv() {
                Ok(mut b) => {
                    b.len = 0;
                    b
                }
                Err(_) => Batch::default(),
            };
            if tx
                .blocking_send(Msg::Rows(std::mem::replace(&mut batch, next)))
                .is_err()
            {
                return Ok(()); // the reader's consumer went away
            }
        }
    }
    if batch.len > 0 && tx.blocking_send(Msg::Rows(batch)).is_err() {
        return Ok(());
    }
    let _ = tx.blocking_send(Msg::End(truncated));
    Ok(())
}

/// The sqlx path's error classes for rusqlite's errors (same SQLite result codes).
fn map_error(e: rusqlite::Error, timeout: Duration) -> DataError {
    match e {
        rusqlite::Error::SqliteFailure(f, msg) => {
            let m = msg.unwrap_or_else(|| f.to_string());
            match f.extended_code & 0xff {
                ffi::SQLITE_READONLY => DataError::ReadOnlyViolation(format!(
                    "the report database is opened read-only ({m})"
                )),
                ffi::SQLITE_INTERRUPT => DataError::Timeout(timeout),
                ffi::SQLITE_CANTOPEN => {
                    DataError::Unavailable(format!("cannot open the database file ({m})"))
                }
                ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => {
                    DataError::Unavailable(format!("the database is locked ({m})"))
                }
                ffi::SQLITE_AUTH => DataError::AuthenticationFailed(m),
                _ => DataError::Query(m),
            }
        }
        rusqlite::Error::MultipleStatement => {
            DataError::Query("a report query must be one statement".into())
        }
        other => DataError::Query(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use chrono::{NaiveDate, TimeZone as _, Utc};
    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;
    use crate::render::SectionDisplay;
    use crate::render::json::JsonDocWriter;

    /// A file with every column type SQLite reports carry (declared and expression columns),
    /// NULLs, unicode, formula-looking and quoted text, blobs, text in typed columns and more
    /// than one batch of rows.
    async fn fixture() -> (tempfile::TempDir, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("t.sqlite").display());
        let rw = SqlitePool::connect_with(
            SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE t (i INTEGER, r REAL, s TEXT, v VARCHAR(20), b BOOLEAN, d DATE, \
                ts DATETIME, ts2 TIMESTAMP, n NUMERIC, bl BLOB, big BIGINT, dbl DOUBLE, k TEXT);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1300)
             INSERT INTO t SELECT
                CASE WHEN x % 11 = 0 THEN NULL ELSE x * 7919 - 4000000 END,
                CASE x % 6 WHEN 0 THEN NULL WHEN 1 THEN x / 3.0 WHEN 2 THEN 1e300 * x
                    WHEN 3 THEN -0.0 WHEN 4 THEN 0.1 + 0.2 ELSE 1e-7 END,
                CASE x % 9 WHEN 0 THEN NULL WHEN 1 THEN 'é ü 漢字 🙂' WHEN 2 THEN '=SUM(A1)'
                    WHEN 3 THEN 'say \"hi\", ok' WHEN 4 THEN 'line' || char(10) || 'break'
                    WHEN 5 THEN '' WHEN 6 THEN '-' || x WHEN 7 THEN char(8232) || 'tab' || char(9)
                    ELSE 'plain ' || x END,
                CASE WHEN x % 4 = 0 THEN NULL ELSE 'v' || x END,
                CASE x % 5 WHEN 0 THEN NULL WHEN 1 THEN 1 WHEN 2 THEN 0 WHEN 3 THEN 'true'
                    ELSE 2 END,
                CASE x % 4 WHEN 0 THEN NULL WHEN 1 THEN date('2026-01-01', '+' || x || ' days')
                    WHEN 2 THEN 'not a date' ELSE 20260101 END,
                CASE x % 5 WHEN 0 THEN NULL WHEN 1 THEN datetime(1764000000 + x * 3607, 'unixepoch')
                    WHEN 2 THEN '2026-11-24T10:00:00.250' WHEN 3 THEN '2026-11-24 10:00:00+01:00'
                    ELSE 'soon' END,
                CASE WHEN x % 3 = 0 THEN '2026-11-24T23:59:00Z' ELSE NULL END,
                CASE x % 3 WHEN 0 THEN 12.50 WHEN 1 THEN '1,5' ELSE x END,
                CASE WHEN x % 2 = 0 THEN x'00ff10' ELSE NULL END,
                x * 1000000007,
                x * 1.5,
                CASE WHEN x % 2 = 0 THEN 'a' ELSE 'b' END
             FROM c;
             CREATE TABLE e (id INTEGER, note TEXT);",
        )
        .execute(&rw)
        .await
        .unwrap();
        rw.close().await;
        let pool = super::super::sqlite::lazy_pool(&url, Duration::from_secs(10)).unwrap();
        (dir, pool)
    }

    /// The CSV and the JSON document of one query, and its summary.
    #[derive(Debug, PartialEq)]
    struct Out {
        csv: Vec<u8>,
        json: Vec<u8>,
        summary: Streamed,
    }

    async fn export(
        pool: &SqlitePool,
        batched: bool,
        sql: &str,
        key: Option<&RecipientKey>,
        max_rows: usize,
    ) -> Out {
        let params = QueryParams {
            start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
            date: NaiveDate::from_ymd_opt(2026, 11, 24).unwrap(),
        };
        let timeout = Duration::from_secs(10);
        let (mut csv, mut json) = (Vec::new(), Vec::new());
        let mut doc = JsonDocWriter::default();
        let display = SectionDisplay::default();
        let mut started = false;
        let mut sink = |columns: &[Column], row: &mut Vec<Value>| {
            if !started {
                crate::render::csv::write_header(&mut csv, columns);
                doc.section_start(&mut json, "T", columns, &display);
                started = true;
            }
            crate::render::csv::write_row(&mut csv, row);
            doc.row(&mut json, row);
            Ok(())
        };
        let summary = if batched {
            let file = file_of(pool).unwrap();
            stream_query(pool, file, sql, &params, key, max_rows, timeout, &mut sink).await
        } else {
            super::super::sqlite::stream_query(
                pool, sql, &params, key, max_rows, timeout, &mut sink,
            )
            .await
        }
        .unwrap();
        if !started {
            crate::render::csv::write_header(&mut csv, &summary.columns);
            doc.section_start(&mut json, "T", &summary.columns, &display);
        }
        doc.section_end(&mut json, summary.truncated);
        Out { csv, json, summary }
    }

    #[tokio::test]
    async fn the_batched_reader_writes_the_same_bytes_as_the_sqlx_path() {
        let (_dir, pool) = fixture().await;
        let queries = [
            "SELECT * FROM t",
            "SELECT i + 1 AS expr_int, r * 2 AS expr_real, s || '!' AS expr_text, \
             NULL AS nil, COUNT(*) OVER () AS total, :date AS day, :start AS from_ts \
             FROM t WHERE ts IS NULL OR ts >= :start",
            "SELECT * FROM t WHERE k = :recipient_key",
            "SELECT id, note, COUNT(*) AS n, MAX(id) AS top FROM e GROUP BY note",
            "SELECT * FROM e",
        ];
        let key = RecipientKey::Text("a".into());
        for sql in queries {
            // Uncut, cut inside the first batch, cut exactly at a batch, and at 0 rows.
            for max_rows in [usize::MAX, 7, BATCH_ROWS, 0] {
                let old = export(&pool, false, sql, Some(&key), max_rows).await;
                let new = export(&pool, true, sql, Some(&key), max_rows).await;
                assert_eq!(old.summary, new.summary, "{sql} / {max_rows}");
                assert_eq!(
                    String::from_utf8_lossy(&old.csv),
                    String::from_utf8_lossy(&new.csv),
                    "{sql} / {max_rows}"
                );
                assert_eq!(
                    String::from_utf8_lossy(&old.json),
                    String::from_utf8_lossy(&new.json),
                    "{sql} / {max_rows}"
                );
            }
        }
        let all = export(&pool, true, queries[0], None, usize::MAX).await;
        assert_eq!(all.summary.rows, 1300);
        assert!(!all.summary.truncated);
        let cut = export(&pool, true, queries[0], None, 7).await;
        assert_eq!((cut.summary.rows, cut.summary.truncated), (7, true));
        let keyed = export(&pool, true, queries[2], Some(&key), usize::MAX).await;
        assert_eq!(keyed.summary.rows, 650);
        let csv = String::from_utf8(all.csv).unwrap();
        assert!(
            csv.contains("é ü 漢字 🙂") && csv.contains("'=SUM(A1)"),
            "{csv}"
        );
        let empty = export(&pool, true, queries[3], None, usize::MAX).await;
        assert!(
            empty
                .summary
                .columns
                .iter()
                .all(|c| c.kind != ColumnType::Unknown),
            "{:?}",
            empty.summary.columns
        );
    }

    #[tokio::test]
    async fn the_batched_reader_is_read_only_and_reports_bad_sql() {
        let (_dir, pool) = fixture().await;
        let file = file_of(&pool).unwrap();
        let params = QueryParams {
            start: Utc::now(),
            end: Utc::now(),
            date: Utc::now().date_naive(),
        };
        let t = Duration::from_secs(5);
        let mut sink = |_: &[Column], _: &mut Vec<Value>| Ok(());
        for (sql, want) in [
            ("WITH x AS (SELECT 1) DELETE FROM t", "read-only"),
            ("SELECT * FROM missing", "no such table"),
        ] {
            let e = stream_query(&pool, file.clone(), sql, &params, None, 10, t, &mut sink)
                .await
                .unwrap_err();
            assert!(e.to_string().contains(want), "{sql}: {e}");
        }
        // A query longer than its timeout is interrupted.
        let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                    SELECT COUNT(*) FROM c";
        let e = stream_query(
            &pool,
            file,
            slow,
            &params,
            None,
            10,
            Duration::from_millis(200),
            &mut sink,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, DataError::Timeout(_)), "{e}");
    }
}
