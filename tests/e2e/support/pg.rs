//! The one throwaway-PostgreSQL helper: a uniquely named database per test on the server named
//! by `TEST_DATABASE_URL` (scripts/test.sh starts a throwaway cluster and sets it), dropped when
//! the [`TestDb`] goes out of scope, also when the test fails.
//!
//! Without `TEST_DATABASE_URL`, [`TestDb::create`] prints a skip line and returns `None`; the
//! test (or its PostgreSQL half) returns early.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use secrecy::SecretString;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh database on the test server, dropped (`WITH (FORCE)`) on drop.
pub struct TestDb {
    url: String,
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

/// `rh_<test>_<pid>_<n>_<random>`: lower-case, within PostgreSQL's 63-byte identifier limit.
fn database_name(test: &str) -> String {
    let slug: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(28)
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "rh_{slug}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        &random[..8]
    )
}

impl TestDb {
    /// Creates a fresh database for `test`, or returns `None` (after printing why) when
    /// `TEST_DATABASE_URL` is not set.
    pub async fn create(test: &str) -> Option<TestDb> {
        let Ok(admin) = std::env::var("TEST_DATABASE_URL") else {
            eprintln!(
                "skipped (PostgreSQL) {test}: TEST_DATABASE_URL is not set; scripts/test.sh sets it"
            );
            return None;
        };
        let name = database_name(test);
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
            url: with_database(&admin, &name),
            admin,
            name,
        })
    }

    /// The new database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The new database's URL as the library takes it.
    pub fn secret_url(&self) -> SecretString {
        SecretString::from(self.url.clone())
    }

    /// The database name (for `pg_stat_activity`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `TEST_DATABASE_URL` itself: for watching the test database from outside it.
    pub fn admin_url(&self) -> &str {
        &self.admin
    }
}

impl Drop for TestDb {
    /// Drops the database (best effort, bounded: a failure only leaves a stray database on the
    /// test server). `Drop` cannot await, so a short-lived thread with its own runtime does it.
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(opts) = PgConnectOptions::from_str(&admin) else {
                    return;
                };
                let drop_it = async {
                    let mut conn = PgConnection::connect_with(&opts).await.ok()?;
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                    conn.close().await.ok()
                };
                let _ = tokio::time::timeout(Duration::from_secs(30), drop_it).await;
            });
        });
        let _ = dropper.join();
    }
}

#[test]
fn database_names_are_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://u@h:5/postgres", "x"),
        "postgres://u@h:5/x"
    );
    assert_eq!(
        with_database("postgres://u@h:5/postgres?sslmode=disable", "x"),
        "postgres://u@h:5/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
}
