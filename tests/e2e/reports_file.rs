//! The shipped `reports.toml`: it loads, means what its comments say, and its SQL runs
//! unchanged on SQLite and PostgreSQL with identical results.
//!
//! The PostgreSQL half needs `TEST_DATABASE_URL` and is skipped (with a printed line) when it
//! is unset; it works in its own throwaway database ([`TestDb`]).

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use report_handler::report::{Report, ReportSet, Window, WindowKind};
use sqlx::{AssertSqlSafe, Column, Connection, Row};

use crate::support::pg::TestDb;
use crate::support::shop_rows;

const TIMEOUT: Duration = Duration::from_secs(30);

fn sample() -> ReportSet {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports.toml");
    match ReportSet::load(&path) {
        Ok(set) => set,
        Err(e) => panic!("the sample reports.toml must be valid:\n{e}"),
    }
}

fn daily_sales() -> Report {
    sample()
        .get("daily-sales")
        .expect("the sample defines daily-sales")
        .clone()
}

fn window_for_2026_03_29(report: &Report) -> Window {
    let d = NaiveDate::from_ymd_opt(2026, 3, 29).expect("date");
    Window::for_local_date(&report.timing(), d).expect("previous_day always has a window")
}

#[test]
fn sample_file_defines_the_nightly_daily_sales_report() {
    let set = sample();
    assert_eq!(set.reports.len(), 1);
    let r = daily_sales();
    assert_eq!(r.title, "Daily sales");
    assert_eq!(r.schedule.expression(), "0 0 6 * * *");
    assert_eq!(r.time_zone, chrono_tz::Europe::Berlin);
    assert_eq!(r.window, WindowKind::PreviousDay);
    assert_eq!(r.recipients.len(), 1);
    assert_eq!(r.recipients[0].name.as_deref(), Some("Sales team"));
    assert_eq!(r.recipients[0].email.to_string(), "sales@example.com");
    assert!(r.cc.is_empty() && r.bcc.is_empty());
    assert!(!r.skip_if_empty);
    assert_eq!(r.max_rows_in_body, 50);
    assert_eq!(r.catch_up, Duration::from_secs(2 * 3600));
    let titles: Vec<&str> = r.sections.iter().map(|s| s.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "Orders by status",
            "Top products",
            "Orders by hour",
            "New customers"
        ]
    );
    // It shows every presentation feature: locale, both attachments, labels and formats,
    // money from integer cents, totals, a bar chart and a line chart.
    assert_eq!(r.locale.as_str(), "en-US");
    let kinds: Vec<&str> = r.attachments.iter().map(|a| a.as_str()).collect();
    assert_eq!(kinds, ["csv", "xlsx"]);
    let status = &r.sections[0].display;
    assert_eq!(status.label("revenue_cents"), "Revenue");
    let revenue = status.column("revenue_cents").expect("revenue settings");
    assert_eq!(
        revenue.format,
        Some(report_handler::render::format::ColumnFormat::Currency)
    );
    assert_eq!(revenue.currency.map(|c| c.code()), Some("EUR"));
    assert!((revenue.scale - 0.01).abs() < 1e-12);
    let totals: Vec<&str> = status.totals.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(totals, ["orders", "revenue_cents"]);
    let charts: Vec<Option<(&str, &str)>> = r
        .sections
        .iter()
        .map(|s| {
            s.display
                .chart
                .as_ref()
                .map(|c| (c.kind.as_str(), c.x.name.as_str()))
        })
        .collect();
    assert_eq!(
        charts,
        [Some(("bar", "status")), None, Some(("line", "hour")), None]
    );
    for s in &r.sections {
        assert!(
            s.query.contains(":start") && s.query.contains(":end"),
            "{}",
            s.title
        );
        assert!(
            !s.query.contains("::"),
            "no PostgreSQL-only casts: {}",
            s.title
        );
    }

    // Nightly at 06:00 Berlin time, reporting on the previous local day.
    let after: DateTime<Utc> = "2026-03-29T00:00:00Z".parse().expect("instant");
    let next = r.schedule.next_after(r.time_zone, after).expect("fires");
    assert_eq!(
        next,
        "2026-03-29T04:00:00Z"
            .parse::<DateTime<Utc>>()
            .expect("instant")
    );
    let w = Window::for_occurrence(&r.timing(), next);
    assert_eq!(w.date, NaiveDate::from_ymd_opt(2026, 3, 28).expect("date"));
    assert_eq!(r.render_subject(&w), "Daily sales: 2026-03-28");
}

/// Runs every section of `report` on SQLite with the window bound as UTC text.
async fn run_on_sqlite(report: &Report, window: &Window) -> Vec<Vec<Vec<String>>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("shop.db"))
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("open SQLite");
    sqlx::raw_sql(shop_rows::SQLITE_SCHEMA)
        .execute(&mut conn)
        .await
        .expect("schema");
    sqlx::raw_sql(AssertSqlSafe(shop_rows::inserts("")))
        .execute(&mut conn)
        .await
        .expect("rows");
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let mut out = Vec::new();
    for section in &report.sections {
        // sqlx-sqlite binds only `?NNN`/`$NNN` parameters (it rejects `:name`), so the data
        // layer rewrites the named parameters; the same rewrite here.
        let sql = section.query.replace(":start", "?1").replace(":end", "?2");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(fmt(window.start))
            .bind(fmt(window.end))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{} on SQLite: {e}", section.title));
        out.push(rows.iter().map(sqlite_cells).collect());
    }
    out
}

fn sqlite_cells(row: &sqlx::sqlite::SqliteRow) -> Vec<String> {
    (0..row.columns().len())
        .map(|i| {
            row.try_get::<i64, _>(i)
                .map(|n| n.to_string())
                .or_else(|_| row.try_get::<String, _>(i))
                .unwrap_or_else(|e| panic!("column {}: {e}", row.columns()[i].name()))
        })
        .collect()
}

fn pg_cells(row: &sqlx::postgres::PgRow) -> Vec<String> {
    (0..row.columns().len())
        .map(|i| {
            row.try_get::<i64, _>(i)
                .map(|n| n.to_string())
                .or_else(|_| row.try_get::<String, _>(i))
                .unwrap_or_else(|e| panic!("column {}: {e}", row.columns()[i].name()))
        })
        .collect()
}

#[tokio::test]
async fn sample_queries_run_on_sqlite_with_an_inclusive_start_and_exclusive_end() {
    let r = daily_sales();
    let w = window_for_2026_03_29(&r);
    assert_eq!(
        w.start,
        "2026-03-28T23:00:00Z".parse::<DateTime<Utc>>().expect("t")
    );
    assert_eq!(
        w.end,
        "2026-03-29T22:00:00Z".parse::<DateTime<Utc>>().expect("t")
    );
    let got = tokio::time::timeout(TIMEOUT, run_on_sqlite(&r, &w))
        .await
        .expect("SQLite run timed out");
    assert_eq!(got, shop_rows::expected());
}

#[tokio::test]
async fn sample_queries_give_identical_results_on_postgresql() {
    let Some(db) = TestDb::create("sample_queries_give_identical_results_on_postgresql").await
    else {
        return;
    };
    let r = daily_sales();
    let w = window_for_2026_03_29(&r);
    let sqlite = tokio::time::timeout(TIMEOUT, run_on_sqlite(&r, &w))
        .await
        .expect("SQLite run timed out");

    let pg = tokio::time::timeout(TIMEOUT, async {
        let mut conn = sqlx::PgConnection::connect(db.url())
            .await
            .expect("connect to the test database");
        // As the handler's sessions do (data/postgres.rs): instants as text are UTC.
        sqlx::raw_sql("SET TimeZone = 'UTC'")
            .execute(&mut conn)
            .await
            .expect("time zone");
        sqlx::raw_sql(shop_rows::POSTGRES_SCHEMA)
            .execute(&mut conn)
            .await
            .expect("tables");
        sqlx::raw_sql(AssertSqlSafe(shop_rows::inserts("+00")))
            .execute(&mut conn)
            .await
            .expect("rows");
        let mut out = Vec::new();
        for section in &r.sections {
            // The same SQL, with the named parameters in PostgreSQL's positional spelling.
            let sql = section.query.replace(":start", "$1").replace(":end", "$2");
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(w.start)
                .bind(w.end)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{} on PostgreSQL: {e}", section.title));
            out.push(rows.iter().map(pg_cells).collect::<Vec<_>>());
        }
        let _ = conn.close().await;
        out
    })
    .await
    .expect("PostgreSQL run timed out");

    assert_eq!(pg, sqlite);
    assert_eq!(pg, shop_rows::expected());
}
