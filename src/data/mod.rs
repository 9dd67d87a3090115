//! The data layer: one [`DataSource`] over SQLite or PostgreSQL that runs report queries
//! read-only, with a statement timeout and bound window parameters, and returns typed
//! [`Table`]s that the renderers turn into HTML, text, CSV and JSON.
//!
//! Why native pools and not sqlx's `AnyPool`: `Any` cannot decode numeric, date, timestamptz,
//! uuid or json columns (it has no type mapping for them), which users' report queries return. So there are two
//! small engine paths ([`sqlite`], [`postgres`]) behind one enum, sharing the placeholder
//! tokenizer in [`params`].

pub mod params;
pub mod postgres;
pub mod sample;
pub mod sqlite;
pub mod sqlite_batch;
pub mod value;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use secrecy::{ExposeSecret, SecretString};

pub use value::{Column, ColumnType, Table, Value};

/// The values bound to `:start`, `:end` and `:date`: a report window (start inclusive, end
/// exclusive) and the day it reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryParams {
    /// Bound to `:start` (inclusive).
    pub start: DateTime<Utc>,
    /// Bound to `:end` (exclusive).
    pub end: DateTime<Utc>,
    /// Bound to `:date` (YYYY-MM-DD).
    pub date: NaiveDate,
}

/// The value bound to `:recipient_key` in a per-recipient report's sections: the `key` column
/// of its `recipients_query` (text or integer; the address when the query returns no key). An
/// integer stays an integer, so it compares with integer columns on both engines.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecipientKey {
    /// An integer key (`team_id AS key`).
    Int(i64),
    /// A text key (a region code, or the address itself).
    Text(String),
}

impl std::fmt::Display for RecipientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// Why a query could not run. Messages are safe to show operators and API clients: they never
/// contain the database URL or its password.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// DATABASE_URL is not a `sqlite:` or `postgres://` URL sqlx understands.
    #[error("DATABASE_URL is invalid: {0}")]
    InvalidUrl(String),
    /// The database could not be reached (down, refused, missing file, pool exhausted).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database refused the credentials.
    #[error("the database rejected the credentials: {0}")]
    AuthenticationFailed(String),
    /// The query ran longer than the statement timeout and was cancelled.
    #[error("the query exceeded the statement timeout of {}", humanize(*.0))]
    Timeout(Duration),
    /// The query tried to write; report queries are read-only.
    #[error("report queries are read-only: {0}")]
    ReadOnlyViolation(String),
    /// The database rejected the query (syntax, unknown table, ...), or it is not one statement.
    #[error("the query failed: {0}")]
    Query(String),
    /// A placeholder other than `:start`, `:end`, `:date` and `:recipient_key`.
    #[error("bad placeholder: {0}")]
    BadPlaceholder(String),
}

impl DataError {
    /// True when the database could not be reached: callers retry later or answer 503.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DataError::Unavailable(_))
    }

    /// True when the database refused the credentials: an operator must fix the configuration.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, DataError::AuthenticationFailed(_))
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Maps sqlx errors that are not engine-specific; `db` handles database errors per engine.
pub(crate) fn map_sqlx_error(
    e: sqlx::Error,
    timeout: Duration,
    db: impl FnOnce(&dyn sqlx::error::DatabaseError) -> DataError,
) -> DataError {
    match e {
        sqlx::Error::Database(d) => db(d.as_ref()),
        sqlx::Error::Io(io) => DataError::Unavailable(io.to_string()),
        sqlx::Error::Tls(t) => DataError::Unavailable(format!("TLS: {t}")),
        sqlx::Error::PoolTimedOut => {
            DataError::Unavailable("timed out waiting for a database connection".into())
        }
        sqlx::Error::PoolClosed => DataError::Unavailable("the connection pool is closed".into()),
        sqlx::Error::Configuration(_) => {
            DataError::InvalidUrl("the connection options were rejected".into())
        }
        sqlx::Error::Protocol(p) => DataError::Unavailable(format!("protocol error: {p}")),
        other => {
            let _ = timeout;
            DataError::Query(other.to_string())
        }
    }
}

/// Pool settings shared by both engines. sqlx spawns idle/lifetime maintenance tasks when a
/// pool is built, which panics outside a tokio runtime; `handler check` or a test may build a
/// [`DataSource`] before any runtime exists, so then the pool is built without those tasks.
pub(crate) fn pool_options<DB: sqlx::Database>(
    o: sqlx::pool::PoolOptions<DB>,
) -> sqlx::pool::PoolOptions<DB> {
    if tokio::runtime::Handle::try_current().is_ok() {
        o.idle_timeout(Duration::from_secs(300))
            .max_lifetime(Duration::from_secs(1800))
    } else {
        o.idle_timeout(None).max_lifetime(None).min_connections(0)
    }
}

/// A future a [`RowConsumer`] asks the query loop to await (sending a chunk of output on).
pub type SinkFlush<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DataError>> + Send + 'a>>;

/// Receives the rows of [`DataSource::stream_query`] one at a time.
///
/// Rows are lent, not given: the engine decodes each row into one reused `Vec<Value>` (and
/// reuses the text cells' buffers), so a consumer that only writes the row out (CSV, JSON,
/// a workbook) costs no allocation per row. A consumer that keeps rows takes them with
/// `std::mem::take(row)`. Closures `FnMut(&[Column], &mut Vec<Value>)` are consumers.
pub trait RowConsumer: Send {
    /// One row, with the result's columns (write a header on the first call). An error stops
    /// the query and is returned by `stream_query`.
    fn row(&mut self, columns: &[Column], row: &mut Vec<Value>) -> Result<(), DataError>;

    /// Asked after each row: a consumer that buffers output (a streamed HTTP body) returns the
    /// future that sends the buffer on, and the query loop awaits it before reading more rows,
    /// so a slow client slows the query instead of growing memory.
    fn flush(&mut self) -> Option<SinkFlush<'_>> {
        None
    }
}

impl<F> RowConsumer for F
where
    F: FnMut(&[Column], &mut Vec<Value>) -> Result<(), DataError> + Send,
{
    fn row(&mut self, columns: &[Column], row: &mut Vec<Value>) -> Result<(), DataError> {
        self(columns, row)
    }
}

/// The consumer [`DataSource::stream_query`] hands rows to.
pub type RowSink<'a> = &'a mut dyn RowConsumer;

/// What [`DataSource::stream_query`] reports after the last row.
#[derive(Debug, Clone, PartialEq)]
pub struct Streamed {
    /// The result's columns (known even for an empty result).
    pub columns: Vec<Column>,
    /// How many rows were handed to the sink.
    pub rows: usize,
    /// True when rows past `max_rows` were dropped.
    pub truncated: bool,
}

#[derive(Clone)]
enum Engine {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// A report database. Cheap to clone (pools are shared); built without any network or file
/// access, so the handler answers the host's readiness ping even while the database is down:
/// connection problems surface per query as [`DataError::Unavailable`].
#[derive(Clone)]
pub struct DataSource {
    engine: Engine,
    timeout: Duration,
}

impl std::fmt::Debug for DataSource {
    /// Shows the engine and timeout only: the URL may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSource")
            .field("kind", &self.kind())
            .field("query_timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DataSource {
    /// Parses DATABASE_URL (`sqlite:...` or `postgres://...`) and builds a lazy pool.
    /// `query_timeout` bounds every report query.
    pub fn from_url(url: &SecretString, query_timeout: Duration) -> Result<DataSource, DataError> {
        let raw = url.expose_secret().trim();
        let engine = if raw.starts_with("sqlite:") {
            Engine::Sqlite(sqlite::lazy_pool(raw, query_timeout)?)
        } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Engine::Postgres(postgres::lazy_pool(raw, query_timeout)?)
        } else {
            return Err(DataError::InvalidUrl(
                "expected a URL starting with sqlite: or postgres://".into(),
            ));
        };
        Ok(DataSource {
            engine,
            timeout: query_timeout,
        })
    }

    /// `"sqlite"` or `"postgres"`, for logs and `handler check`.
    pub fn kind(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite(_) => "sqlite",
            Engine::Postgres(_) => "postgres",
        }
    }

    /// The statement timeout applied to every query.
    pub fn query_timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one report query read-only with `params` bound, keeping at most `max_rows` rows
    /// (then `truncated` is set).
    pub async fn run_query(
        &self,
        sql: &str,
        params: &QueryParams,
        max_rows: usize,
    ) -> Result<Table, DataError> {
        self.run_query_keyed(sql, params, None, max_rows).await
    }

    /// [`DataSource::run_query`] with `:recipient_key` bound to `key` (NULL when `None`), for
    /// the sections of a per-recipient report.
    pub async fn run_query_keyed(
        &self,
        sql: &str,
        params: &QueryParams,
        key: Option<&RecipientKey>,
        max_rows: usize,
    ) -> Result<Table, DataError> {
        let mut rows: Vec<Vec<Value>> = Vec::new();
        let mut collect = |_: &[Column], row: &mut Vec<Value>| {
            rows.push(std::mem::take(row));
            Ok(())
        };
        let s = self
            .stream_query_pooled(sql, params, key, max_rows, &mut collect)
            .await?;
        let mut columns = s.columns;
        // Columns the engine could not type (SQLite expressions, NULL in the first row) take the
        // type of their first non-NULL value.
        for (i, col) in columns.iter_mut().enumerate() {
            if col.kind == ColumnType::Unknown {
                col.kind = rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(ColumnType::of_value)
                    .find(|k| *k != ColumnType::Unknown)
                    .unwrap_or(ColumnType::Unknown);
            }
        }
        Ok(Table {
            columns,
            rows,
            truncated: s.truncated,
        })
    }

    /// Like [`DataSource::run_query`] but hands each row to `sink` as it arrives instead of
    /// collecting a [`Table`], so a million-row CSV export never holds all rows in memory.
    /// `sink` gets the columns with every row (write a header on the first call); the summary
    /// has the columns even when no row arrived. A sink error stops the query and is returned.
    pub async fn stream_query(
        &self,
        sql: &str,
        params: &QueryParams,
        max_rows: usize,
        sink: RowSink<'_>,
    ) -> Result<Streamed, DataError> {
        self.stream_query_keyed(sql, params, None, max_rows, sink)
            .await
    }

    /// [`DataSource::stream_query`] with `:recipient_key` bound to `key` (NULL when `None`).
    /// On a SQLite file the rows are read on a blocking thread of their own and handed over in
    /// batches ([`sqlite_batch`]); otherwise from the pool.
    pub async fn stream_query_keyed(
        &self,
        sql: &str,
        params: &QueryParams,
        key: Option<&RecipientKey>,
        max_rows: usize,
        sink: RowSink<'_>,
    ) -> Result<Streamed, DataError> {
        if let Engine::Sqlite(p) = &self.engine
            && let Some(file) = sqlite_batch::file_of(p)
        {
            return sqlite_batch::stream_query(
                p,
                file,
                sql,
                params,
                key,
                max_rows,
                self.timeout,
                sink,
            )
            .await;
        }
        self.stream_query_pooled(sql, params, key, max_rows, sink)
            .await
    }

    /// [`DataSource::stream_query_keyed`] on the pool's connections (sqlx) on both engines:
    /// what [`DataSource::run_query`] uses (small results, where opening a connection of its own
    /// per query would cost more than the batched SQLite reader saves).
    pub async fn stream_query_pooled(
        &self,
        sql: &str,
        params: &QueryParams,
        key: Option<&RecipientKey>,
        max_rows: usize,
        sink: RowSink<'_>,
    ) -> Result<Streamed, DataError> {
        match &self.engine {
            Engine::Sqlite(p) => {
                sqlite::stream_query(p, sql, params, key, max_rows, self.timeout, sink).await
            }
            Engine::Postgres(p) => {
                postgres::stream_query(p, sql, params, key, max_rows, self.timeout, sink).await
            }
        }
    }

    /// Validates a query without running it (placeholders, single statement, syntax, tables,
    /// and that it does not write), so `handler check` finds broken reports before the night.
    pub async fn check_query(&self, sql: &str) -> Result<(), DataError> {
        match &self.engine {
            Engine::Sqlite(p) => sqlite::check_query(p, sql, self.timeout).await,
            Engine::Postgres(p) => postgres::check_query(p, sql, self.timeout).await,
        }
    }
}

/// Refuses statements whose first keyword can only write, with a clear message. The engines
/// enforce read-only anyway; this only improves the message (and covers `check_query`).
pub(crate) fn refuse_obvious_writes(sql: &str) -> Result<(), DataError> {
    match params::first_keyword(sql).as_deref() {
        Some("SELECT" | "WITH" | "VALUES" | "TABLE" | "EXPLAIN") | None => Ok(()),
        Some(k) => Err(DataError::ReadOnlyViolation(format!(
            "{k} statements are not allowed; a report query must be a SELECT"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_url_is_lazy_and_debug_hides_the_url() {
        let url = SecretString::from("postgres://u:hunter2@127.0.0.1:1/db");
        let ds = DataSource::from_url(&url, Duration::from_secs(5)).unwrap();
        assert_eq!(ds.kind(), "postgres");
        let dbg = format!("{ds:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("127.0.0.1"),
            "{dbg}"
        );
        let bad = SecretString::from("mysql://u:hunter2@h/db");
        let e = DataSource::from_url(&bad, Duration::from_secs(5)).unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn timeout_message_names_the_limit() {
        let e = DataError::Timeout(Duration::from_millis(1500));
        assert_eq!(
            e.to_string(),
            "the query exceeded the statement timeout of 1500ms"
        );
    }
}
