//! The data layer against real engines: SQLite files in a temp dir and (with TEST_DATABASE_URL)
//! a real PostgreSQL in a throwaway database.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use report_handler::data::{self, ColumnType, DataError, DataSource, QueryParams, Value};
use report_handler::report::{ReportSet, Window};
use secrecy::SecretString;
use sqlx::Connection;

use crate::support::pg::TestDb;

const TIMEOUT: Duration = Duration::from_secs(10);

fn params() -> QueryParams {
    QueryParams {
        start: DateTime::parse_from_rfc3339("2026-11-24T00:00:00Z")
            .unwrap()
            .into(),
        end: DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z")
            .unwrap()
            .into(),
        date: NaiveDate::from_ymd_opt(2026, 11, 24).unwrap(),
    }
}

/// A writable SQLite file prepared with `setup`, plus a read-only DataSource over it.
async fn sqlite_db(dir: &Path, setup: &str, timeout: Duration) -> (DataSource, String) {
    let path = dir.join("t.db");
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup.to_string()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let url = format!("sqlite:{}", path.display());
    let ds = DataSource::from_url(&SecretString::from(url.clone()), timeout).unwrap();
    (ds, url)
}

async fn pg_exec(url: &SecretString, sql: &str) {
    use secrecy::ExposeSecret;
    let opts = sqlx::postgres::PgConnectOptions::from_str(url.expose_secret()).unwrap();
    let mut conn = sqlx::PgConnection::connect_with(&opts).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

async fn count(ds: &DataSource, table: &str) -> i64 {
    let t = ds
        .run_query(&format!("SELECT COUNT(*) AS n FROM {table}"), &params(), 10)
        .await
        .unwrap();
    match t.rows[0][0] {
        Value::Int(n) => n,
        ref other => panic!("count returned {other:?}"),
    }
}

#[tokio::test]
async fn sqlite_maps_types() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, _) = sqlite_db(
        dir.path(),
        "CREATE TABLE t (b BOOLEAN, i INTEGER, f REAL, s TEXT, d DATE, ts DATETIME, n NUMERIC, x BLOB);
         INSERT INTO t VALUES (1, 42, 1.5, 'héllo', '2026-11-24', '2026-11-24 23:59:00', 12.5, x'DEAD');
         INSERT INTO t VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
        TIMEOUT,
    )
    .await;
    assert_eq!(ds.kind(), "sqlite");
    let t = ds
        .run_query(
            "SELECT b, i, f, s, d, ts, n, x, i * 2 AS expr FROM t ORDER BY i IS NULL",
            &params(),
            100,
        )
        .await
        .unwrap();
    let kinds: Vec<ColumnType> = t.columns.iter().map(|c| c.kind).collect();
    assert_eq!(
        &kinds[..6],
        &[
            ColumnType::Bool,
            ColumnType::Integer,
            ColumnType::Float,
            ColumnType::Text,
            ColumnType::Date,
            ColumnType::Timestamp
        ]
    );
    assert_eq!(
        kinds[8],
        ColumnType::Integer,
        "expression columns take their values' type"
    );
    let r = &t.rows[0];
    assert_eq!(r[0], Value::Bool(true));
    assert_eq!(r[1], Value::Int(42));
    assert_eq!(r[2], Value::Float(1.5));
    assert_eq!(r[3], Value::Text("héllo".into()));
    assert_eq!(
        r[4],
        Value::Date(NaiveDate::from_ymd_opt(2026, 11, 24).unwrap())
    );
    assert_eq!(
        r[5],
        Value::Timestamp(
            NaiveDate::from_ymd_opt(2026, 11, 24)
                .unwrap()
                .and_hms_opt(23, 59, 0)
                .unwrap()
        )
    );
    assert_eq!(r[6], Value::Float(12.5));
    assert_eq!(r[7], Value::Text("\\xdead".into()));
    assert_eq!(r[8], Value::Int(84));
    assert!(t.rows[1].iter().all(|v| *v == Value::Null));
    assert!(!t.truncated);
}

#[tokio::test]
async fn postgres_maps_types() {
    let Some(db) = TestDb::create("postgres_maps_types").await else {
        return;
    };
    let ds = DataSource::from_url(&db.secret_url(), TIMEOUT).unwrap();
    assert_eq!(ds.kind(), "postgres");
    let t = ds
        .run_query(
            "SELECT true AS b, 1::int2 AS i2, 2::int4 AS i4, 9007199254740993::int8 AS i8,
                    1.5::float4 AS f4, 0.1::float8 AS f8, 12345678901234567890.125::numeric AS n,
                    'x'::text AS t, 'v'::varchar AS v, 'c'::char(3) AS c,
                    date '2026-11-24' AS d, timestamp '2026-11-24 23:59:00.5' AS ts,
                    timestamptz '2026-11-25 00:59:00+01' AS tz,
                    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u,
                    '{\"k\":1}'::json AS j, '{\"k\": [1, 2]}'::jsonb AS jb,
                    interval '1 day' AS iv, NULL::int4 AS nul",
            &params(),
            10,
        )
        .await
        .unwrap();
    let kinds: Vec<&str> = t.columns.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "bool",
            "integer",
            "integer",
            "integer",
            "float",
            "float",
            "decimal",
            "text",
            "text",
            "text",
            "date",
            "timestamp",
            "timestamptz",
            "uuid",
            "json",
            "json",
            "text",
            "integer"
        ]
    );
    let r = &t.rows[0];
    assert_eq!(r[0], Value::Bool(true));
    assert_eq!(r[1], Value::Int(1));
    assert_eq!(r[3], Value::Int(9_007_199_254_740_993));
    assert_eq!(r[4], Value::Float(1.5));
    assert_eq!(r[5], Value::Float(0.1));
    assert_eq!(
        r[6],
        Value::Decimal("12345678901234567890.125".into()),
        "numeric never goes through f64"
    );
    assert_eq!(r[9], Value::Text("c  ".into()));
    assert_eq!(
        r[10],
        Value::Date(NaiveDate::from_ymd_opt(2026, 11, 24).unwrap())
    );
    assert_eq!(
        r[11],
        Value::Timestamp(
            NaiveDate::from_ymd_opt(2026, 11, 24)
                .unwrap()
                .and_hms_milli_opt(23, 59, 0, 500)
                .unwrap()
        )
    );
    assert_eq!(
        r[12],
        Value::TimestampTz(
            DateTime::parse_from_rfc3339("2026-11-24T23:59:00Z")
                .unwrap()
                .into()
        )
    );
    assert_eq!(
        r[13],
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".parse().unwrap())
    );
    assert_eq!(r[14], Value::Json(serde_json::json!({"k": 1})));
    assert_eq!(r[15], Value::Json(serde_json::json!({"k": [1, 2]})));
    assert_eq!(r[16], Value::Text("1 day".into()));
    assert_eq!(r[17], Value::Null);
    // Empty results still carry their columns.
    let empty = ds
        .run_query(
            "SELECT 1::int4 AS a, 'x'::text AS b WHERE false",
            &params(),
            10,
        )
        .await
        .unwrap();
    assert_eq!(empty.columns.len(), 2);
    assert_eq!(empty.columns[1].kind, ColumnType::Text);
    assert!(empty.rows.is_empty());
}

#[tokio::test]
async fn sqlite_binds_parameters_and_caps_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, _) = sqlite_db(
        dir.path(),
        "CREATE TABLE e (name TEXT, at TEXT);
         INSERT INTO e VALUES ('before', '2026-11-23 23:59:59'), ('first', '2026-11-24 00:00:00'),
                              ('O''Brien', '2026-11-24 12:00:00'), ('last', '2026-11-24 23:59:59'),
                              ('after', '2026-11-25 00:00:00');",
        TIMEOUT,
    )
    .await;
    let t = ds
        .run_query(
            "SELECT name, ':start' AS lit, :date AS d FROM e -- :nothing here\n WHERE at >= :start AND at < :end ORDER BY at",
            &params(),
            100,
        )
        .await
        .unwrap();
    let names: Vec<&Value> = t.rows.iter().map(|r| &r[0]).collect();
    assert_eq!(
        names,
        [
            &Value::Text("first".into()),
            &Value::Text("O'Brien".into()),
            &Value::Text("last".into())
        ]
    );
    assert_eq!(
        t.rows[0][1],
        Value::Text(":start".into()),
        "placeholders inside literals stay literal"
    );
    assert_eq!(t.rows[0][2], Value::Text("2026-11-24".into()));
    let capped = ds
        .run_query("SELECT name FROM e ORDER BY at", &params(), 2)
        .await
        .unwrap();
    assert_eq!(capped.rows.len(), 2);
    assert!(capped.truncated);
    let err = ds
        .run_query("SELECT :tomorrow", &params(), 2)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DataError::BadPlaceholder(ref m) if m.contains(":tomorrow")),
        "{err}"
    );
    let err = ds
        .run_query("SELECT 1; SELECT 2", &params(), 2)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("single statement"), "{err}");
}

#[tokio::test]
async fn postgres_binds_parameters() {
    let Some(db) = TestDb::create("postgres_binds_parameters").await else {
        return;
    };
    pg_exec(
        &db.secret_url(),
        "CREATE TABLE e (name TEXT, at TIMESTAMPTZ);
         INSERT INTO e VALUES ('before', '2026-11-23 23:59:59Z'), ('first', '2026-11-24 00:00:00Z'),
                              ('O''Brien', '2026-11-24 12:00:00Z'), ('last', '2026-11-24 23:59:59Z'),
                              ('after', '2026-11-25 00:00:00Z');",
    )
    .await;
    let ds = DataSource::from_url(&db.secret_url(), TIMEOUT).unwrap();
    let t = ds
        .run_query(
            "SELECT name, ':start' AS lit, :date AS d, :start::text AS s FROM e WHERE at >= :start AND at < :end ORDER BY at",
            &params(),
            100,
        )
        .await
        .unwrap();
    let names: Vec<&Value> = t.rows.iter().map(|r| &r[0]).collect();
    assert_eq!(
        names,
        [
            &Value::Text("first".into()),
            &Value::Text("O'Brien".into()),
            &Value::Text("last".into())
        ]
    );
    assert_eq!(t.rows[0][1], Value::Text(":start".into()));
    assert_eq!(t.rows[0][2], Value::Date(params().date));
    assert_eq!(t.rows[0][3], Value::Text("2026-11-24 00:00:00+00".into()));
    let capped = ds
        .run_query("SELECT name FROM e ORDER BY at", &params(), 2)
        .await
        .unwrap();
    assert!(capped.truncated && capped.rows.len() == 2);
}

fn assert_read_only(e: &DataError) {
    assert!(
        matches!(e, DataError::ReadOnlyViolation(_)),
        "expected a read-only error, got {e:?}"
    );
    assert!(e.to_string().contains("read-only"), "{e}");
}

#[tokio::test]
async fn sqlite_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, _) = sqlite_db(
        dir.path(),
        "CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1);",
        TIMEOUT,
    )
    .await;
    for sql in [
        "INSERT INTO t VALUES (2)",
        "UPDATE t SET a = 5",
        "DROP TABLE t",
        // Passes the keyword check; the read-only connection itself refuses it.
        "WITH x AS (SELECT 2) INSERT INTO t SELECT * FROM x",
    ] {
        let e = ds.run_query(sql, &params(), 10).await.unwrap_err();
        assert_read_only(&e);
        assert!(
            ds.check_query(sql).await.is_err(),
            "check_query accepted {sql}"
        );
    }
    assert_eq!(count(&ds, "t").await, 1);
    let t = ds
        .run_query("SELECT a FROM t", &params(), 10)
        .await
        .unwrap();
    assert_eq!(t.rows, vec![vec![Value::Int(1)]]);
    ds.check_query("SELECT a FROM t WHERE a > :date")
        .await
        .unwrap();
    let e = ds.check_query("SELECT nope FROM t").await.unwrap_err();
    assert!(
        matches!(e, DataError::Query(ref m) if m.contains("nope")),
        "{e}"
    );
}

#[tokio::test]
async fn postgres_is_read_only() {
    let Some(db) = TestDb::create("postgres_is_read_only").await else {
        return;
    };
    pg_exec(
        &db.secret_url(),
        "CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1); CREATE SEQUENCE s;",
    )
    .await;
    let ds = DataSource::from_url(&db.secret_url(), TIMEOUT).unwrap();
    for sql in [
        "INSERT INTO t VALUES (2)",
        "UPDATE t SET a = 5",
        "DROP TABLE t",
        "WITH x AS (INSERT INTO t VALUES (3) RETURNING a) SELECT * FROM x",
        "SELECT nextval('s')",
    ] {
        let e = ds.run_query(sql, &params(), 10).await.unwrap_err();
        assert_read_only(&e);
    }
    for sql in [
        "DELETE FROM t",
        "WITH x AS (DELETE FROM t RETURNING a) SELECT * FROM x",
    ] {
        let e = ds.check_query(sql).await.unwrap_err();
        assert_read_only(&e);
    }
    assert_eq!(count(&ds, "t").await, 1);
    ds.check_query("SELECT a FROM t WHERE a > 0 AND now() >= :start")
        .await
        .unwrap();
    let e = ds.check_query("SELECT nope FROM t").await.unwrap_err();
    assert!(
        matches!(e, DataError::Query(ref m) if m.contains("nope")),
        "{e}"
    );
}

#[tokio::test]
async fn sqlite_statement_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, _) = sqlite_db(
        dir.path(),
        "CREATE TABLE t (a INTEGER);",
        Duration::from_millis(300),
    )
    .await;
    let started = Instant::now();
    let e = ds
        .run_query(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c",
            &params(),
            10,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, DataError::Timeout(d) if d == Duration::from_millis(300)),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("exceeded the statement timeout"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The connection is usable afterwards (the progress handler was removed).
    assert_eq!(count(&ds, "t").await, 0);
}

#[tokio::test]
async fn postgres_statement_timeout() {
    let Some(db) = TestDb::create("postgres_statement_timeout").await else {
        return;
    };
    let ds = DataSource::from_url(&db.secret_url(), Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    let e = ds
        .run_query("SELECT pg_sleep(10)", &params(), 10)
        .await
        .unwrap_err();
    assert!(matches!(e, DataError::Timeout(_)), "{e:?}");
    assert!(
        e.to_string().contains("exceeded the statement timeout"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let t = ds
        .run_query("SELECT 1 AS one", &params(), 10)
        .await
        .unwrap();
    assert_eq!(t.rows[0][0], Value::Int(1));
}

#[tokio::test]
async fn unreachable_databases_fail_per_request() {
    let url = SecretString::from("postgres://reporter:hunter2@127.0.0.1:1/reports".to_string());
    let ds = DataSource::from_url(&url, Duration::from_secs(2)).unwrap();
    let e = ds.run_query("SELECT 1", &params(), 1).await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let missing = SecretString::from(format!(
        "sqlite:{}",
        dir.path().join("missing.db").display()
    ));
    let ds = DataSource::from_url(&missing, Duration::from_secs(2)).unwrap();
    let e = ds.run_query("SELECT 1", &params(), 1).await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(
        !dir.path().join("missing.db").exists(),
        "a read-only source must not create the file"
    );
    let e =
        DataSource::from_url(&SecretString::from("mysql://x".to_string()), TIMEOUT).unwrap_err();
    assert!(matches!(e, DataError::InvalidUrl(_)));
}

#[tokio::test]
async fn sample_database_is_created_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/sample.db");
    let today = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    data::sample::ensure_sample_database(&path, today)
        .await
        .unwrap();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    data::sample::ensure_sample_database(&path, today)
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified
    );
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary files left behind");
    let ds = DataSource::from_url(
        &SecretString::from(format!("sqlite:{}", path.display())),
        TIMEOUT,
    )
    .unwrap();
    for table in ["customers", "products", "orders", "order_items"] {
        assert!(count(&ds, table).await > 0, "{table}");
    }
    let t = ds
        .run_query(
            "SELECT DISTINCT status FROM orders ORDER BY status",
            &params(),
            10,
        )
        .await
        .unwrap();
    let statuses: Vec<String> = t.rows.iter().map(|r| r[0].to_plain()).collect();
    assert_eq!(statuses, ["paid", "pending", "refunded", "shipped"]);
    let t = ds
        .run_query(
            "SELECT COUNT(*) FROM customers WHERE name LIKE '%<script>%'",
            &params(),
            10,
        )
        .await
        .unwrap();
    assert_ne!(t.rows[0][0], Value::Int(0));
}

/// The acceptance test of issue #4: the sample reports give identical tables on both engines.
#[tokio::test]
async fn sample_report_sections_match_across_engines() {
    let Some(db) = TestDb::create("sample_report_sections_match_across_engines").await else {
        return;
    };
    let now = Utc::now();
    let today = now.date_naive();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.db");
    data::sample::ensure_sample_database(&path, today)
        .await
        .unwrap();
    data::sample::load_sample_postgres(&db.secret_url(), today)
        .await
        .unwrap();
    let lite = DataSource::from_url(
        &SecretString::from(format!("sqlite:{}", path.display())),
        TIMEOUT,
    )
    .unwrap();
    let pg = DataSource::from_url(&db.secret_url(), TIMEOUT).unwrap();

    let set = ReportSet::load(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("reports.toml")
            .as_path(),
    )
    .unwrap();
    let report = set.get("daily-sales").expect("the sample report");
    let yesterday = now
        .with_timezone(&report.time_zone)
        .date_naive()
        .pred_opt()
        .unwrap();
    let w = Window::for_local_date(&report.timing(), yesterday).unwrap();
    let qp = QueryParams {
        start: w.start,
        end: w.end,
        date: w.date,
    };
    assert_eq!(report.sections.len(), 4);
    for s in &report.sections {
        let a = lite.run_query(&s.query, &qp, 1000).await.unwrap();
        let b = pg.run_query(&s.query, &qp, 1000).await.unwrap();
        assert!(!a.rows.is_empty(), "section {} is empty on SQLite", s.title);
        assert_eq!(
            a, b,
            "section {} differs between SQLite and PostgreSQL",
            s.title
        );
    }
}

/// Large exports stream: rows go through the sink one at a time into CSV (200k here to keep
/// debug test time low; the 1M-row RSS benchmark is separate).
#[tokio::test]
async fn sqlite_streams_a_million_rows_to_csv() {
    use report_handler::render::CsvRowWriter;
    struct Counting(usize);
    impl std::io::Write for Counting {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (ds, _) = sqlite_db(
        dir.path(),
        "CREATE TABLE t (a INTEGER);",
        Duration::from_secs(60),
    )
    .await;
    let mut csv = CsvRowWriter::new(Counting(0));
    let mut started = false;
    let mut sink = |cols: &[report_handler::data::Column], row: &mut Vec<Value>| {
        if !started {
            csv.header(cols)
                .map_err(|e| DataError::Query(e.to_string()))?;
            started = true;
        }
        csv.row(row).map_err(|e| DataError::Query(e.to_string()))
    };
    let s = ds
        .stream_query(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 200000) SELECT x, 'row ' || x AS label FROM c",
            &params(),
            2_000_000,
            &mut sink,
        )
        .await
        .unwrap();
    assert_eq!(s.rows, 200_000);
    assert!(!s.truncated);
    assert_eq!(s.columns[0].kind, ColumnType::Integer);
    csv.finish().unwrap();
}
