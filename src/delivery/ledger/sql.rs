//! The SQL ledger backends: SQLite (a file, by default `data/ledger.db` under the app root) and
//! PostgreSQL, with one set of statements.
//!
//! - The claim is `INSERT … ON CONFLICT DO NOTHING` on the primary key
//!   `(report, occurrence, target)`;
//!   a takeover is a single conditional `UPDATE … WHERE` that the database evaluates under the
//!   row lock.
//! - Both databases accept `$n` placeholders. Timestamps are `TIMESTAMPTZ` on PostgreSQL and
//!   RFC 3339 text in UTC on SQLite, where sqlx's fixed encoding keeps text order equal to time
//!   order. The rejected-recipient list is stored as a JSON array in text.
//! - Migrations are embedded here and tracked in their own table
//!   (`_delivery_ledger_migrations`) so they never collide with other migrations in the same
//!   database; on PostgreSQL sqlx takes an advisory lock, so two processes starting together
//!   migrate once.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, SqlSafeStr};

use super::{
    Claim, DeliveryRow, DeliveryState, HistoryQuery, LedgerStore, Target, lease_end, not_claimed,
    rejected_note, ts,
};

/// How long to wait for a database connection before a tick gives up (and answers 500, so the
/// next tick retries).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The delivery ledger in a SQL state database. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct SqlLedger {
    pool: Pool,
}

impl fmt::Debug for SqlLedger {
    // The URL may carry a password: show only the backend.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlLedger")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// Runs `$body` with `$pool` bound to whichever pool the ledger has. Both arms compile the same
/// code against their own driver, so the SQL is written once.
macro_rules! with_pool {
    ($ledger:expr, $pool:ident => $body:expr) => {
        match &$ledger.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS delivery_ledger (
    report      TEXT    NOT NULL,
    occurrence  TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('claimed', 'sent', 'failed', 'skipped')),
    retryable   BOOLEAN NOT NULL DEFAULT FALSE,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    message_id  TEXT,
    recipients  INTEGER NOT NULL DEFAULT 0,
    rejected    TEXT    NOT NULL DEFAULT '[]',
    claimed_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    lease_until TEXT,
    PRIMARY KEY (report, occurrence)
);
CREATE INDEX IF NOT EXISTS delivery_ledger_occurrence ON delivery_ledger (occurrence);
";

const POSTGRES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS delivery_ledger (
    report      TEXT        NOT NULL,
    occurrence  TIMESTAMPTZ NOT NULL,
    state       TEXT        NOT NULL CHECK (state IN ('claimed', 'sent', 'failed', 'skipped')),
    retryable   BOOLEAN     NOT NULL DEFAULT FALSE,
    attempts    BIGINT      NOT NULL DEFAULT 0,
    last_error  TEXT,
    message_id  TEXT,
    recipients  BIGINT      NOT NULL DEFAULT 0,
    rejected    TEXT        NOT NULL DEFAULT '[]',
    claimed_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    lease_until TIMESTAMPTZ,
    PRIMARY KEY (report, occurrence)
);
CREATE INDEX IF NOT EXISTS delivery_ledger_occurrence ON delivery_ledger (occurrence);
";

/// Migration 2: where each row came from (a scheduled tick, a manual send, a manual resend),
/// and when each report was first seen by a tick, so occurrences from before a report existed
/// are never recorded as missed.
const SQLITE_SCHEMA_2: &str = "
ALTER TABLE delivery_ledger ADD COLUMN origin TEXT NOT NULL DEFAULT 'schedule';
CREATE TABLE IF NOT EXISTS report_first_seen (
    report     TEXT NOT NULL PRIMARY KEY,
    first_seen TEXT NOT NULL
);
";

const POSTGRES_SCHEMA_2: &str = "
ALTER TABLE delivery_ledger ADD COLUMN IF NOT EXISTS origin TEXT NOT NULL DEFAULT 'schedule';
CREATE TABLE IF NOT EXISTS report_first_seen (
    report     TEXT        NOT NULL PRIMARY KEY,
    first_seen TIMESTAMPTZ NOT NULL
);
";

/// Migration 3: one row per (report, occurrence, target), so a report that fans out (one email
/// per recipient, Teams/Slack/webhook destinations) keeps each target's delivery on its own
/// row. Existing rows get the empty target: the occurrence itself, which is what they meant.
/// SQLite cannot change a primary key in place, so the table is rebuilt (inside the
/// migration's transaction, rows copied one to one).
const SQLITE_SCHEMA_3: &str = "
CREATE TABLE delivery_ledger_v3 (
    report      TEXT    NOT NULL,
    occurrence  TEXT    NOT NULL,
    target      TEXT    NOT NULL DEFAULT '',
    state       TEXT    NOT NULL CHECK (state IN ('claimed', 'sent', 'failed', 'skipped')),
    retryable   BOOLEAN NOT NULL DEFAULT FALSE,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    message_id  TEXT,
    recipients  INTEGER NOT NULL DEFAULT 0,
    rejected    TEXT    NOT NULL DEFAULT '[]',
    claimed_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    lease_until TEXT,
    origin      TEXT    NOT NULL DEFAULT 'schedule',
    PRIMARY KEY (report, occurrence, target)
);
INSERT INTO delivery_ledger_v3
    (report, occurrence, target, state, retryable, attempts, last_error, message_id,
     recipients, rejected, claimed_at, updated_at, lease_until, origin)
SELECT report, occurrence, '', state, retryable, attempts, last_error, message_id,
       recipients, rejected, claimed_at, updated_at, lease_until, origin
FROM delivery_ledger;
DROP TABLE delivery_ledger;
ALTER TABLE delivery_ledger_v3 RENAME TO delivery_ledger;
CREATE INDEX IF NOT EXISTS delivery_ledger_occurrence ON delivery_ledger (occurrence);
";

const POSTGRES_SCHEMA_3: &str = "
ALTER TABLE delivery_ledger ADD COLUMN IF NOT EXISTS target TEXT NOT NULL DEFAULT '';
ALTER TABLE delivery_ledger DROP CONSTRAINT IF EXISTS delivery_ledger_pkey;
ALTER TABLE delivery_ledger ADD PRIMARY KEY (report, occurrence, target);
";

/// The ledger's migrations up to `up_to` (every one for `i64::MAX`).
fn migrator(schemas: [&'static str; 3], up_to: i64) -> Migrator {
    let [schema, schema_2, schema_3] = schemas;
    let all = vec![
        Migration::new(
            1,
            "create delivery_ledger".into(),
            MigrationType::Simple,
            schema.into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "origin and report_first_seen".into(),
            MigrationType::Simple,
            schema_2.into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "one row per delivery target".into(),
            MigrationType::Simple,
            schema_3.into_sql_str(),
            false,
        ),
    ];
    let mut m = Migrator::with_migrations(all.into_iter().filter(|m| m.version <= up_to).collect());
    m.dangerous_set_table_name("_delivery_ledger_migrations");
    m.set_ignore_missing(true);
    m
}

const COLUMNS: &str = "report, occurrence, target, state, retryable, attempts, last_error, message_id, \
                       recipients, rejected, claimed_at, updated_at, lease_until, origin";

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

fn row_to_delivery<R>(row: &R) -> anyhow::Result<DeliveryRow>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let rejected: String = row.try_get("rejected")?;
    Ok(DeliveryRow {
        report: row.try_get("report")?,
        occurrence: row.try_get("occurrence")?,
        target: Target::parse(&row.try_get::<String, _>("target")?)?,
        state: row.try_get::<String, _>("state")?.parse()?,
        retryable: row.try_get("retryable")?,
        attempts: to_u32(row.try_get("attempts")?),
        last_error: row.try_get("last_error")?,
        message_id: row.try_get("message_id")?,
        recipients: to_u32(row.try_get("recipients")?),
        rejected: serde_json::from_str(&rejected).context("the ledger's rejected column")?,
        claimed_at: row.try_get("claimed_at")?,
        updated_at: row.try_get("updated_at")?,
        lease_until: row.try_get("lease_until")?,
        origin: row.try_get::<String, _>("origin")?.parse()?,
    })
}

impl SqlLedger {
    /// Connects to the state database and runs the ledger's migrations, so a fresh deployment
    /// (or a fresh local checkout) needs no manual setup.
    ///
    /// `url` is `sqlite:path/to/file.db` (the file and its parent directory are created) or
    /// `postgres://…`. Errors never include the URL, which may hold a password.
    pub async fn connect(url: &SecretString) -> anyhow::Result<SqlLedger> {
        Self::connect_migrated_to(url, i64::MAX).await
    }

    /// [`SqlLedger::connect`], applying the migrations up to `up_to` only: a ledger as an
    /// earlier version of the handler left it, for the tests that migrate one in place.
    #[doc(hidden)]
    pub async fn connect_migrated_to(url: &SecretString, up_to: i64) -> anyhow::Result<SqlLedger> {
        let raw = url.expose_secret().trim();
        let ledger = if raw.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(raw)
                .map_err(|_| anyhow!("STATE_DATABASE_URL is not a valid sqlite: URL"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10));
            let file = opts.get_filename().to_path_buf();
            let in_memory = file.as_os_str().is_empty() || file == Path::new(":memory:");
            if !in_memory && let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("cannot create the ledger directory {}", dir.display())
                })?;
            }
            let pool = SqlitePoolOptions::new()
                // An in-memory database exists per connection: keep exactly one.
                .max_connections(if in_memory { 1 } else { 4 })
                .min_connections(u32::from(in_memory))
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(opts)
                .await
                .with_context(|| format!("cannot open the SQLite ledger {}", file.display()))?;
            // Two processes opening a fresh file at once (e.g. `handler dev` and
            // `handler deliveries`) race on the first migration; SQLite has no advisory lock,
            // so the loser retries and then finds the migration applied.
            let mut attempt = 0;
            loop {
                match migrator([SQLITE_SCHEMA, SQLITE_SCHEMA_2, SQLITE_SCHEMA_3], up_to)
                    .run(&pool)
                    .await
                {
                    Ok(()) => break,
                    Err(_) if attempt < 5 => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    }
                    Err(e) => return Err(e).context("cannot migrate the SQLite ledger"),
                }
            }
            SqlLedger {
                pool: Pool::Sqlite(pool),
            }
        } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(raw)
                .map_err(|_| anyhow!("STATE_DATABASE_URL is not a valid postgres:// URL"))?;
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(opts)
                .await
                .context("cannot connect to the PostgreSQL ledger (STATE_DATABASE_URL)")?;
            migrator(
                [POSTGRES_SCHEMA, POSTGRES_SCHEMA_2, POSTGRES_SCHEMA_3],
                up_to,
            )
            .run(&pool)
            .await
            .context("cannot migrate the PostgreSQL ledger")?;
            SqlLedger {
                pool: Pool::Postgres(pool),
            }
        } else {
            bail!("STATE_DATABASE_URL must start with sqlite: or postgres://");
        };
        Ok(ledger)
    }

    /// The one claim: a scheduled one (`manual = None`) takes an occurrence never settled, an
    /// expired lease or a retryable failure; a manual one (`Some(resend)`) also takes skipped
    /// and failed occurrences, and a sent one only with `resend` (recorded as a resend). The
    /// insert wins a race atomically; the take-over is one conditional `UPDATE` under the row
    /// lock, so again only one racer wins.
    async fn claim_as(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
        lease: Duration,
        manual: Option<bool>,
    ) -> anyhow::Result<Claim> {
        let (occurrence, now) = (ts(occurrence), ts(now));
        let until = lease_end(now, lease)?;
        let origin = if manual.is_some() {
            "manual"
        } else {
            "schedule"
        };
        let (is_manual, resend) = (manual.is_some(), manual.unwrap_or(false));
        // Bounded: the row can only disappear between steps if someone deletes it by hand.
        for _ in 0..3 {
            let inserted = with_pool!(self, pool => sqlx::query(
                "INSERT INTO delivery_ledger \
                   (report, occurrence, state, retryable, attempts, recipients, rejected, \
                    claimed_at, updated_at, lease_until, origin, target) \
                 VALUES ($1, $2, 'claimed', FALSE, 1, 0, '[]', $3, $3, $4, $5, $6) \
                 ON CONFLICT (report, occurrence, target) DO NOTHING",
            )
            .bind(report)
            .bind(occurrence)
            .bind(now)
            .bind(until)
            .bind(origin)
            .bind(target.as_str())
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
            .context("cannot claim in the ledger")?;
            if inserted == 1 {
                return Ok(Claim::Claimed { attempt: 1 });
            }
            let taken: Option<i64> = with_pool!(self, pool => sqlx::query_scalar(
                "UPDATE delivery_ledger \
                 SET origin = CASE WHEN NOT $5 THEN origin \
                                   WHEN state = 'sent' THEN 'resend' ELSE 'manual' END, \
                     state = 'claimed', retryable = FALSE, attempts = attempts + 1, \
                     claimed_at = $3, updated_at = $3, lease_until = $4 \
                 WHERE report = $1 AND occurrence = $2 AND target = $7 \
                   AND ((state = 'claimed' AND (lease_until IS NULL OR lease_until <= $3)) \
                        OR (state = 'failed' AND (retryable OR $5)) \
                        OR (state = 'skipped' AND $5) \
                        OR (state = 'sent' AND $5 AND $6)) \
                 RETURNING attempts",
            )
            .bind(report)
            .bind(occurrence)
            .bind(now)
            .bind(until)
            .bind(is_manual)
            .bind(resend)
            .bind(target.as_str())
            .fetch_optional(pool)
            .await)
            .context("cannot take over a ledger row")?;
            if let Some(attempt) = taken {
                return Ok(Claim::Claimed {
                    attempt: to_u32(attempt),
                });
            }
            match self.get(report, target, occurrence).await? {
                Some(row) if row.state == DeliveryState::Claimed => return Ok(Claim::Busy),
                Some(row) => return Ok(Claim::AlreadyDone(row.state)),
                None => continue,
            }
        }
        bail!("the ledger row for {report} kept disappearing while claiming it")
    }
}

#[async_trait::async_trait]
impl LedgerStore for SqlLedger {
    fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    async fn claim(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> anyhow::Result<Claim> {
        self.claim_as(report, target, occurrence, now, lease, None)
            .await
    }

    async fn claim_manual(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
        lease: Duration,
        resend: bool,
    ) -> anyhow::Result<Claim> {
        self.claim_as(report, target, occurrence, now, lease, Some(resend))
            .await
    }

    async fn first_seen(&self, report: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
        let now = ts(now);
        // Every tick asks; after the first, one read answers.
        let known: Option<DateTime<Utc>> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT first_seen FROM report_first_seen WHERE report = $1",
        )
        .bind(report)
        .fetch_optional(pool)
        .await)
        .context("cannot read when the report was first seen")?;
        if let Some(first) = known {
            return Ok(first);
        }
        let oldest: Option<DateTime<Utc>> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT MIN(occurrence) FROM delivery_ledger WHERE report = $1",
        )
        .bind(report)
        .fetch_one(pool)
        .await)
        .context("cannot read the ledger")?;
        let first = oldest.map_or(now, |o| o.min(now));
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO report_first_seen (report, first_seen) VALUES ($1, $2) \
             ON CONFLICT (report) DO NOTHING",
        )
        .bind(report)
        .bind(first)
        .execute(pool)
        .await
        .map(|_| ()))
        .context("cannot record when the report was first seen")?;
        let stored: DateTime<Utc> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT first_seen FROM report_first_seen WHERE report = $1",
        )
        .bind(report)
        .fetch_one(pool)
        .await)
        .context("cannot read when the report was first seen")?;
        Ok(stored)
    }

    async fn mark_sent(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        message_id: &str,
        recipients: u32,
        rejected: &[String],
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let (rejected, last_error) = rejected_note(rejected)?;
        let n = with_pool!(self, pool => sqlx::query(
            "UPDATE delivery_ledger \
             SET state = 'sent', retryable = FALSE, message_id = $3, recipients = $4, \
                 rejected = $5, last_error = $6, updated_at = $7, lease_until = NULL \
             WHERE report = $1 AND occurrence = $2 AND target = $8",
        )
        .bind(report)
        .bind(ts(occurrence))
        .bind(message_id)
        .bind(i64::from(recipients))
        .bind(&rejected)
        .bind(last_error)
        .bind(ts(now))
        .bind(target.as_str())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
        .context("cannot record a sent delivery in the ledger")?;
        ensure_one(n, report, target, occurrence)
    }

    async fn mark_failed(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        error: &str,
        retryable: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let n = with_pool!(self, pool => sqlx::query(
            "UPDATE delivery_ledger \
             SET state = 'failed', retryable = $3, last_error = $4, updated_at = $5, \
                 lease_until = NULL \
             WHERE report = $1 AND occurrence = $2 AND target = $6",
        )
        .bind(report)
        .bind(ts(occurrence))
        .bind(retryable)
        .bind(error)
        .bind(ts(now))
        .bind(target.as_str())
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
        .context("cannot record a failed delivery in the ledger")?;
        ensure_one(n, report, target, occurrence)
    }

    async fn record_missed(
        &self,
        report: &str,
        occurrence: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let inserted = with_pool!(self, pool => sqlx::query(
            "INSERT INTO delivery_ledger \
               (report, occurrence, state, retryable, attempts, last_error, recipients, \
                rejected, claimed_at, updated_at, lease_until) \
             VALUES ($1, $2, 'skipped', FALSE, 0, $3, 0, '[]', $4, $4, NULL) \
             ON CONFLICT (report, occurrence, target) DO NOTHING",
        )
        .bind(report)
        .bind(ts(occurrence))
        .bind(reason)
        .bind(ts(now))
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
        .context("cannot record a missed delivery in the ledger")?;
        Ok(inserted == 1)
    }

    async fn mark_skipped(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        with_pool!(self, pool => sqlx::query(
             "INSERT INTO delivery_ledger \
               (report, occurrence, state, retryable, attempts, last_error, recipients, \
                rejected, claimed_at, updated_at, lease_until, target) \
             VALUES ($1, $2, 'skipped', FALSE, 0, $3, 0, '[]', $4, $4, NULL, $5) \
             ON CONFLICT (report, occurrence, target) DO UPDATE \
             SET state = 'skipped', retryable = FALSE, last_error = excluded.last_error, \
                 updated_at = excluded.updated_at, lease_until = NULL \
             WHERE delivery_ledger.state <> 'sent'",
        )
        .bind(report)
        .bind(ts(occurrence))
        .bind(reason)
        .bind(ts(now))
        .bind(target.as_str())
        .execute(pool)
        .await
        .map(|_| ()))
        .context("cannot record a skipped delivery in the ledger")?;
        Ok(())
    }

    async fn get(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
    ) -> anyhow::Result<Option<DeliveryRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM delivery_ledger WHERE report = $1 AND occurrence = $2 AND target = $3"
        );
        with_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(report)
                .bind(ts(occurrence))
                .bind(target.as_str())
                .fetch_optional(pool)
                .await
                .context("cannot read the ledger")?;
            row.as_ref().map(row_to_delivery).transpose()
        })
    }

    async fn history(&self, query: &HistoryQuery) -> anyhow::Result<Vec<DeliveryRow>> {
        /// A value bound to a placeholder of the built statement.
        enum Bind {
            Text(String),
            Time(DateTime<Utc>),
        }
        let mut binds: Vec<Bind> = Vec::new();
        let mut place = |b: Bind| {
            binds.push(b);
            format!("${}", binds.len())
        };
        let mut clauses: Vec<String> = Vec::new();
        if let Some(names) = &query.reports {
            let list: Vec<String> = names.iter().map(|n| place(Bind::Text(n.clone()))).collect();
            clauses.push(format!("report IN ({})", list.join(", ")));
        }
        if let Some(from) = query.from {
            clauses.push(format!("occurrence >= {}", place(Bind::Time(ts(from)))));
        }
        if let Some(to) = query.to {
            clauses.push(format!("occurrence < {}", place(Bind::Time(ts(to)))));
        }
        if let Some(state) = query.state {
            clauses.push(format!(
                "state = {}",
                place(Bind::Text(state.as_str().into()))
            ));
        }
        if let Some(c) = &query.after {
            let (o1, o2) = (
                place(Bind::Time(ts(c.occurrence))),
                place(Bind::Time(ts(c.occurrence))),
            );
            let (r1, r2) = (
                place(Bind::Text(c.report.clone())),
                place(Bind::Text(c.report.clone())),
            );
            let t = place(Bind::Text(c.target.as_str().into()));
            clauses.push(format!(
                "(occurrence < {o1} OR (occurrence = {o2} AND (report > {r1} OR (report = {r2} AND target > {t}))))"
            ));
        }
        // The limit is bound last, after every filter's value.
        let limit = format!("${}", binds.len() + 1);
        let where_ = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM delivery_ledger {where_} \
             ORDER BY occurrence DESC, report ASC, target ASC LIMIT {limit}"
        );
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        with_pool!(self, pool => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for b in &binds {
                q = match b {
                    Bind::Text(t) => q.bind(t.as_str()),
                    Bind::Time(t) => q.bind(*t),
                };
            }
            let rows = q
                .bind(limit)
                .fetch_all(pool)
                .await
                .context("cannot read the ledger")?;
            rows.iter().map(row_to_delivery).collect()
        })
    }

    async fn occurrence_rows(
        &self,
        report: &str,
        occurrence: DateTime<Utc>,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM delivery_ledger WHERE report = $1 AND occurrence = $2 \
             ORDER BY target ASC"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(report)
                .bind(ts(occurrence))
                .fetch_all(pool)
                .await
                .context("cannot read the ledger")?;
            rows.iter().map(row_to_delivery).collect()
        })
    }

    async fn recent(&self, report: Option<&str>, limit: usize) -> anyhow::Result<Vec<DeliveryRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {COLUMNS} FROM delivery_ledger \
             WHERE ($1 IS NULL OR report = $1) \
             ORDER BY occurrence DESC, report ASC, target ASC LIMIT $2"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(report)
                .bind(limit)
                .fetch_all(pool)
                .await
                .context("cannot read the ledger")?;
            rows.iter().map(row_to_delivery).collect()
        })
    }
}

fn ensure_one(
    n: u64,
    report: &str,
    target: &Target,
    occurrence: DateTime<Utc>,
) -> anyhow::Result<()> {
    if n == 0 {
        return Err(not_claimed(report, target, occurrence));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_urls_are_refused_without_echoing_them() {
        let url = SecretString::from("mysql://user:hunter2@db/x".to_string());
        let err = SqlLedger::connect(&url).await.unwrap_err().to_string();
        assert!(err.contains("STATE_DATABASE_URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn in_memory_sqlite_works_and_debug_hides_the_url() {
        let url = SecretString::from("sqlite::memory:".to_string());
        let ledger = super::super::Ledger::connect(&url).await.unwrap();
        assert_eq!(format!("{ledger:?}"), "Ledger { backend: \"sqlite\", .. }");
        let t = Utc::now();
        let c = ledger
            .claim("r", &Target::occurrence(), t, t, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(c, Claim::Claimed { attempt: 1 });
    }
}
