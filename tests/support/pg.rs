//! A throwaway PostgreSQL database per test, on the server named by TEST_DATABASE_URL.
//! Unset: the caller prints a skip line and returns (CI sets it).

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use secrecy::SecretString;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A uniquely named database; call [`TestDb::drop_db`] at the end of the test.
pub struct TestDb {
    /// URL of the new database.
    pub url: SecretString,
    admin: String,
    name: String,
}

/// Replaces the database name in a `postgres://` URL, keeping any `?query`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// Creates a fresh database, or returns None (after printing why) without TEST_DATABASE_URL.
pub async fn create(test: &str) -> Option<TestDb> {
    let Ok(admin) = std::env::var("TEST_DATABASE_URL") else {
        println!("skipped {test}: TEST_DATABASE_URL is not set");
        return None;
    };
    let name = format!(
        "rh_data_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        chrono::Utc::now().timestamp_micros() % 1_000_000
    );
    let opts = PgConnectOptions::from_str(&admin).expect("TEST_DATABASE_URL is a postgres URL");
    let mut conn = PgConnection::connect_with(&opts)
        .await
        .expect("connect to TEST_DATABASE_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    let _ = conn.close().await;
    Some(TestDb {
        url: SecretString::from(with_database(&admin, &name)),
        admin,
        name,
    })
}

impl TestDb {
    /// Drops the database (best effort: a failure only leaves a stray database behind).
    pub async fn drop_db(self) {
        let Ok(opts) = PgConnectOptions::from_str(&self.admin) else {
            return;
        };
        if let Ok(mut conn) = PgConnection::connect_with(&opts).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
            let _ = conn.close().await;
        }
    }
}
