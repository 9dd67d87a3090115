//! The delivery ledger: one row per (report, occurrence, target), so that each scheduled
//! occurrence reaches each of its targets (the email, each recipient of a per-recipient report,
//! each destination) exactly once even when ticks repeat, overlap, or crash half-way. A report
//! without fan-out has one target, the occurrence itself ([`Target::occurrence`]), which is
//! what every row written before targets existed means.
//!
//! # How exactly-once is kept
//!
//! Every backend offers the same contract ([`LedgerStore`]):
//! - [`Ledger::claim`] first tries to *insert* the row for `(report, occurrence, target)`: of two
//!   processes racing on a shared store, exactly one inserts; "already exists" means someone
//!   else has it.
//! - If the row exists, one *conditional* write takes it over only when it is a claim whose
//!   lease has expired (its holder crashed) or a failure marked retryable (a transient SMTP
//!   problem). The store evaluates the condition atomically (a row lock in SQL, the entity's
//!   ETag with `If-Match` in Table storage), so again only one racer wins.
//! - Everything else is reported as [`Claim::AlreadyDone`] or [`Claim::Busy`].
//!
//! # Backends
//!
//! - [`sql`]: SQLite (a file under `data/`, or `STATE_DATABASE_URL=sqlite:`) and PostgreSQL
//!   (`STATE_DATABASE_URL=postgres://`), one set of SQL statements.
//! - [`table`]: Azure Table storage in the Function app's own storage account
//!   (`AzureWebJobsStorage`), Azurite locally; partition key = report, row key = occurrence.
//!
//! Which one a deployment uses is decided once, from [`LedgerSettings`], by
//! [`Delivery`](super::Delivery). The contract is a trait because it is a network boundary with
//! several implementations; callers hold the [`Ledger`] handle and never see a backend.

pub mod settings;
pub mod sql;
pub mod table;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use chrono::{DateTime, SubsecRound, Utc};
use secrecy::SecretString;

pub use settings::{
    DEFAULT_LEDGER_TABLE, LedgerSettings, StorageAccess, StorageAccount, TableAuth,
};
pub use table::TableLedgerConfig;

/// Where one (report, occurrence) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// A process holds the occurrence and is sending it (until `lease_until`).
    Claimed,
    /// The email was accepted by the relay (or written to the outbox).
    Sent,
    /// Sending failed; `retryable` in the row says whether a later tick may try again.
    Failed,
    /// Deliberately not sent: `skip_if_empty`, or an occurrence too old to catch up.
    Skipped,
}

impl DeliveryState {
    /// The word stored in the `state` column and shown by `handler deliveries`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryState {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "claimed" => Ok(Self::Claimed),
            "sent" => Ok(Self::Sent),
            "failed" => Ok(Self::Failed),
            "skipped" => Ok(Self::Skipped),
            _ => Err(anyhow!("unknown delivery state {s:?} in the ledger")),
        }
    }
}

/// What one ledger row delivers for its (report, occurrence): the occurrence as a whole, or one
/// of its fan-out deliveries (a recipient of a `recipients_query` report, a Teams, Slack or
/// webhook destination). Every target is claimed on its own, so one failing destination or
/// recipient never blocks or repeats another.
///
/// The text form is what the ledger stores and `handler deliveries` shows: empty for the
/// occurrence itself (the only target before fan-out existed, so older rows keep their
/// meaning), else `kind:name` such as `email`, `email:ann@example.com` or
/// `teams:TEAMS_WEBHOOK_SALES` (a destination is named by its setting, never its URL).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Target(String);

impl Target {
    /// The longest target text accepted (Table storage row keys are at most 1 KiB, and the
    /// target is part of one).
    pub const MAX_LEN: usize = 512;

    /// The occurrence as a whole: for a report that fans out, the row that says whether every
    /// target is settled; for one that does not, the email itself.
    pub const fn occurrence() -> Self {
        Self(String::new())
    }

    /// A fan-out target `kind:name` (or just `kind` when `name` is empty). Control characters
    /// are refused, and so is text longer than [`Target::MAX_LEN`].
    pub fn new(kind: &str, name: &str) -> anyhow::Result<Self> {
        let text = if name.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}:{name}")
        };
        Self::parse(&text)
    }

    /// A target read back from a ledger (or typed by an operator).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if text.len() > Self::MAX_LEN || text.chars().any(char::is_control) {
            anyhow::bail!(
                "a delivery target must be at most {} characters without control characters",
                Self::MAX_LEN
            );
        }
        Ok(Self(text.to_string()))
    }

    /// Whether this is the occurrence itself (the empty target).
    pub fn is_occurrence(&self) -> bool {
        self.0.is_empty()
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The kind before the first `:` (`email`, `teams`, …); empty for the occurrence itself.
    pub fn kind(&self) -> &str {
        self.0.split_once(':').map_or(self.0.as_str(), |(k, _)| k)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One ledger row, as `handler deliveries` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// The report name from `reports.toml`.
    pub report: String,
    /// The scheduled occurrence (UTC instant) this row is about.
    pub occurrence: DateTime<Utc>,
    /// What this row delivers: the occurrence itself, or one recipient or destination of it.
    pub target: Target,
    /// Where the delivery stands.
    pub state: DeliveryState,
    /// True when a `Failed` row may be claimed again (transient failure).
    pub retryable: bool,
    /// How many times the occurrence has been claimed (0 for a row only ever skipped).
    pub attempts: u32,
    /// The last error, or the skip reason.
    pub last_error: Option<String>,
    /// The Message-ID of the sent email, for tracing it in the relay's logs.
    pub message_id: Option<String>,
    /// How many recipients the relay accepted.
    pub recipients: u32,
    /// Recipients the relay refused permanently, each with the server's reply.
    pub rejected: Vec<String>,
    /// When the current (or last) claim was taken.
    pub claimed_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// Until when the current claim holds; `None` once the row is settled.
    pub lease_until: Option<DateTime<Utc>>,
    /// Who took the last claim: a scheduled tick, a manual send, or a manual resend.
    pub origin: Origin,
}

/// Who asked for a delivery, kept in the ledger so `handler deliveries` can tell a scheduled
/// email from one an operator sent (or re-sent) by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A tick (the host's timer, or `handler dev`'s loop).
    Schedule,
    /// `handler report run --send` (or `handler dev`'s first delivery) of an occurrence that
    /// was not sent yet, or was skipped or failed.
    Manual,
    /// `handler report run --send --resend` of an occurrence that was already sent.
    Resend,
}

impl Origin {
    /// The word stored in the `origin` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Resend => "resend",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Origin {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "schedule" => Ok(Self::Schedule),
            "manual" => Ok(Self::Manual),
            "resend" => Ok(Self::Resend),
            _ => Err(anyhow!("unknown delivery origin {s:?} in the ledger")),
        }
    }
}

/// A page of the delivery history: which rows, in the listing order (newest occurrence first,
/// then report and target), starting after a cursor. What `GET /api/deliveries` asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only these reports (`None`: every report). An empty list matches nothing: a scoped API
    /// key that may see no report sees no delivery.
    pub reports: Option<Vec<String>>,
    /// Only occurrences at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Only occurrences before this instant.
    pub to: Option<DateTime<Utc>>,
    /// Only rows in this state.
    pub state: Option<DeliveryState>,
    /// Only rows after this one in the listing order (the previous page's last row).
    pub after: Option<HistoryCursor>,
    /// At most this many rows.
    pub limit: usize,
}

/// Where a page of the history ended: the key of its last row. Rows are ordered by
/// occurrence (newest first), then report, then target, so the key says exactly where the
/// next page starts even when rows are added meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryCursor {
    /// The last row's occurrence.
    pub occurrence: DateTime<Utc>,
    /// The last row's report.
    pub report: String,
    /// The last row's target.
    pub target: Target,
}

impl HistoryCursor {
    /// The cursor after `row`.
    pub fn after(row: &DeliveryRow) -> Self {
        Self {
            occurrence: row.occurrence,
            report: row.report.clone(),
            target: row.target.clone(),
        }
    }

    /// Whether `row` comes after this cursor in the listing order.
    pub fn precedes(&self, row: &DeliveryRow) -> bool {
        row.occurrence < self.occurrence
            || (row.occurrence == self.occurrence
                && (row.report.as_str(), &row.target) > (self.report.as_str(), &self.target))
    }
}

impl HistoryQuery {
    /// Whether `row` passes every filter (the cursor included): what the Table storage backend
    /// applies after reading, and the SQL backends' `WHERE` says.
    pub fn admits(&self, row: &DeliveryRow) -> bool {
        self.reports
            .as_ref()
            .is_none_or(|r| r.contains(&row.report))
            && self.from.is_none_or(|f| row.occurrence >= f)
            && self.to.is_none_or(|t| row.occurrence < t)
            && self.state.is_none_or(|s| row.state == s)
            && self.after.as_ref().is_none_or(|c| c.precedes(row))
    }
}

/// The listing order of the history and of `handler deliveries`: newest occurrence first, then
/// report, then target (the occurrence's own row before its targets).
pub fn listing_order(a: &DeliveryRow, b: &DeliveryRow) -> std::cmp::Ordering {
    b.occurrence
        .cmp(&a.occurrence)
        .then_with(|| a.report.cmp(&b.report))
        .then_with(|| a.target.cmp(&b.target))
}

/// The answer to [`Ledger::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This caller now owns the occurrence and must send it, then mark the outcome.
    /// `attempt` counts claims including this one (1 the first time).
    Claimed {
        /// Which claim this is, starting at 1.
        attempt: u32,
    },
    /// The occurrence is settled (sent, skipped, or permanently failed): do nothing.
    AlreadyDone(DeliveryState),
    /// Another live claim holds it (another process is sending right now): do nothing.
    Busy,
}

/// The span of one claim: the backend and the kind of claim (the report is on the parent span).
fn claim_span(backend: &'static str, kind: &'static str) -> tracing::Span {
    tracing::info_span!(
        "ledger.claim",
        ledger.backend = backend,
        ledger.claim = kind,
        ledger.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// The claim's outcome on its span; a claim another process holds or already settled is also
/// counted as a conflict (`report_handler.ledger.claim_conflicts`).
fn record_claim(span: &tracing::Span, backend: &'static str, claim: &anyhow::Result<Claim>) {
    let outcome = match claim {
        Ok(Claim::Claimed { .. }) => "claimed",
        Ok(Claim::AlreadyDone(_)) => "already_done",
        Ok(Claim::Busy) => "busy",
        Err(_) => "error",
    };
    span.record("ledger.outcome", outcome);
    match outcome {
        "error" => {
            span.record("otel.status_code", "ERROR");
        }
        "already_done" | "busy" => crate::telemetry::count(
            |m| &m.claim_conflicts,
            &[("backend", backend.into()), ("outcome", outcome.into())],
        ),
        _ => {}
    }
}

/// The claim/lease/state contract every ledger backend keeps; the module docs say why it
/// gives exactly-once delivery. Timestamps are truncated to microseconds by every backend, so
/// what is read back equals what was written.
#[allow(
    clippy::too_many_arguments,
    reason = "the row's key (report, target, occurrence) and what is recorded"
)]
#[async_trait::async_trait]
pub trait LedgerStore: Send + Sync {
    /// A short name of the backend (`sqlite`, `postgres`, `table`), for logs and `handler check`.
    fn backend(&self) -> &'static str;

    /// See [`Ledger::claim`].
    async fn claim(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> anyhow::Result<Claim>;

    /// See [`Ledger::claim_manual`].
    async fn claim_manual(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
        lease: Duration,
        resend: bool,
    ) -> anyhow::Result<Claim>;

    /// See [`Ledger::first_seen`].
    async fn first_seen(&self, report: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>>;

    /// See [`Ledger::mark_sent`].
    async fn mark_sent(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        message_id: &str,
        recipients: u32,
        rejected: &[String],
        now: DateTime<Utc>,
    ) -> anyhow::Result<()>;

    /// See [`Ledger::mark_failed`].
    async fn mark_failed(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        error: &str,
        retryable: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()>;

    /// See [`Ledger::record_missed`].
    async fn record_missed(
        &self,
        report: &str,
        occurrence: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool>;

    /// See [`Ledger::mark_skipped`].
    async fn mark_skipped(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()>;

    /// See [`Ledger::get`].
    async fn get(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
    ) -> anyhow::Result<Option<DeliveryRow>>;

    /// See [`Ledger::history`].
    async fn history(&self, query: &HistoryQuery) -> anyhow::Result<Vec<DeliveryRow>>;

    /// See [`Ledger::occurrence_rows`].
    async fn occurrence_rows(
        &self,
        report: &str,
        occurrence: DateTime<Utc>,
    ) -> anyhow::Result<Vec<DeliveryRow>>;

    /// See [`Ledger::recent`].
    async fn recent(&self, report: Option<&str>, limit: usize) -> anyhow::Result<Vec<DeliveryRow>>;
}

/// The delivery ledger the rest of the app holds, whichever backend is behind it. Cheap to
/// clone (a shared handle).
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
}

impl fmt::Debug for Ledger {
    // Connection URLs and account keys may be secrets: show only the backend.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Connects to a SQL state database and runs the ledger's migrations, so a fresh
    /// deployment (or a fresh local checkout) needs no manual setup.
    ///
    /// `url` is `sqlite:path/to/file.db` (the file and its parent directory are created) or
    /// `postgres://…`. Errors never include the URL, which may hold a password.
    pub async fn connect(url: &SecretString) -> anyhow::Result<Ledger> {
        Ok(Self::from_store(sql::SqlLedger::connect(url).await?))
    }

    /// Connects to the ledger table `table` in a storage account's Table service (Azurite
    /// locally), creating the table when it is missing. An identity's credential is built here
    /// (`ca_bundle` is `SSL_CERT_FILE`, for its token requests).
    pub async fn connect_storage(
        account: StorageAccount,
        table: &str,
        ca_bundle: Option<&std::path::Path>,
    ) -> anyhow::Result<Ledger> {
        let auth = match account.auth {
            TableAuth::SharedKey { account, key } => {
                table::client::Auth::SharedKey { account, key }
            }
            TableAuth::Identity(choice) => {
                table::client::Auth::Token(crate::secrets::build_credential(&choice, ca_bundle)?)
            }
        };
        let config = TableLedgerConfig {
            endpoint: account.table_endpoint,
            table: table.to_string(),
            auth,
        };
        Ok(Self::from_store(table::TableLedger::connect(config).await?))
    }

    fn from_store(store: impl LedgerStore + 'static) -> Ledger {
        Ledger {
            store: Arc::new(store),
        }
    }

    /// `"sqlite"`, `"postgres"` or `"table"`, for start-up logs and `handler check`.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Tries to take (report, occurrence, target) for sending. See the module docs for why this is
    /// atomic across processes. A claim holds until `now + lease`; after that a later tick may
    /// take it over (the holder is presumed crashed), so `lease` must exceed the longest send.
    pub async fn claim(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> anyhow::Result<Claim> {
        let span = claim_span(self.backend(), "scheduled");
        let claim = tracing::Instrument::instrument(
            self.store.claim(report, target, occurrence, now, lease),
            span.clone(),
        )
        .await;
        record_claim(&span, self.backend(), &claim);
        claim
    }

    /// Takes (report, occurrence, target) for a send an operator asked for. Unlike [`Ledger::claim`],
    /// an occurrence recorded as skipped (empty, missed) or failed (even permanently) is taken
    /// and sent; one already sent is taken only with `resend` (recorded with origin
    /// [`Origin::Resend`]). A live claim of another process is still [`Claim::Busy`]: two
    /// sends of the same occurrence never run at once.
    pub async fn claim_manual(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
        lease: Duration,
        resend: bool,
    ) -> anyhow::Result<Claim> {
        let span = claim_span(self.backend(), "manual");
        let claim = tracing::Instrument::instrument(
            self.store
                .claim_manual(report, target, occurrence, now, lease, resend),
            span.clone(),
        )
        .await;
        record_claim(&span, self.backend(), &claim);
        claim
    }

    /// When a tick first saw `report`: recorded as `now` the first time (or, for a ledger that
    /// already holds rows of the report from before this was kept, its oldest occurrence), and
    /// returned unchanged afterwards. Occurrences before it are not history: a tick never
    /// records them as missed.
    pub async fn first_seen(
        &self,
        report: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<DateTime<Utc>> {
        self.store.first_seen(report, now).await
    }

    /// Records that the relay accepted the email. `rejected` lists recipients refused
    /// permanently (with the server's reply) while the others received it.
    #[allow(
        clippy::too_many_arguments,
        reason = "the row's key (report, target, occurrence) and what is recorded"
    )]
    pub async fn mark_sent(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        message_id: &str,
        recipients: u32,
        rejected: &[String],
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.store
            .mark_sent(
                report, target, occurrence, message_id, recipients, rejected, now,
            )
            .await
    }

    /// Records a failed send. `retryable = true` (a transient failure) lets a later claim take
    /// the occurrence again; `false` (the server refused for good) settles it.
    pub async fn mark_failed(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        error: &str,
        retryable: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.store
            .mark_failed(report, target, occurrence, error, retryable, now)
            .await
    }

    /// Records an occurrence that was missed by more than `catch_up` as skipped, unless the
    /// ledger already has a row for it (in any state: a live claim or a failure is left as it
    /// is). Returns whether a row was added, so the caller warns once per occurrence.
    pub async fn record_missed(
        &self,
        report: &str,
        occurrence: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        self.store
            .record_missed(report, occurrence, reason, now)
            .await
    }

    /// Records that an occurrence is deliberately not sent (`skip_if_empty`, or too old to
    /// catch up). Works with or without a prior claim, but never overwrites a `sent` row.
    pub async fn mark_skipped(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.store
            .mark_skipped(report, target, occurrence, reason, now)
            .await
    }

    /// The row for (report, occurrence, target), if any.
    pub async fn get(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
    ) -> anyhow::Result<Option<DeliveryRow>> {
        self.store.get(report, target, occurrence).await
    }

    /// One page of the delivery history, in the listing order ([`listing_order`]): what the
    /// history API serves. Filters and the cursor are applied by the store, so a page is never
    /// short because of them.
    pub async fn history(&self, query: &HistoryQuery) -> anyhow::Result<Vec<DeliveryRow>> {
        if query.limit == 0 || query.reports.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        self.store.history(query).await
    }

    /// Every row of one occurrence: the occurrence's own row and each of its targets, ordered
    /// by target (the occurrence's own row first).
    pub async fn occurrence_rows(
        &self,
        report: &str,
        occurrence: DateTime<Utc>,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        self.store.occurrence_rows(report, occurrence).await
    }

    /// The most recent rows, newest occurrence first (then by report name and target), optionally for one
    /// report: what `handler deliveries [--report NAME]` prints.
    pub async fn recent(
        &self,
        report: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        self.store.recent(report, limit).await
    }
}

/// Every backend stores microseconds at most; truncating first makes equality exact.
pub(crate) fn ts(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// The end of a lease taken at `now`.
pub(crate) fn lease_end(now: DateTime<Utc>, lease: Duration) -> anyhow::Result<DateTime<Utc>> {
    let lease = chrono::Duration::from_std(lease).context("the claim lease is too long")?;
    now.checked_add_signed(lease)
        .map(ts)
        .ok_or_else(|| anyhow!("the claim lease is too long"))
}

/// The `last_error` a sent row carries when some recipients were refused.
pub(crate) fn rejected_note(rejected: &[String]) -> anyhow::Result<(String, Option<String>)> {
    let json = serde_json::to_string(rejected)?;
    let note = (!rejected.is_empty()).then(|| format!("some recipients were rejected: {json}"));
    Ok((json, note))
}

/// The error for marking an occurrence nobody claimed (a caller bug).
pub(crate) fn not_claimed(
    report: &str,
    target: &Target,
    occurrence: DateTime<Utc>,
) -> anyhow::Error {
    let target = if target.is_occurrence() {
        String::new()
    } else {
        format!(" ({target})")
    };
    anyhow!(
        "the ledger has no row for report {report}{target} at {}: it must be claimed first",
        occurrence.to_rfc3339()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in [
            DeliveryState::Claimed,
            DeliveryState::Sent,
            DeliveryState::Failed,
            DeliveryState::Skipped,
        ] {
            assert_eq!(s.as_str().parse::<DeliveryState>().unwrap(), s);
        }
        assert!("done".parse::<DeliveryState>().is_err());
        assert!(Target::occurrence().is_occurrence());
        let t = Target::new("teams", "TEAMS_WEBHOOK_SALES").unwrap();
        assert_eq!(
            (t.as_str(), t.kind()),
            ("teams:TEAMS_WEBHOOK_SALES", "teams")
        );
        assert_eq!(Target::new("email", "").unwrap().kind(), "email");
        assert!(Target::parse("a\nb").is_err());
        assert!(Target::parse(&"x".repeat(513)).is_err());
        for o in [Origin::Schedule, Origin::Manual, Origin::Resend] {
            assert_eq!(o.as_str().parse::<Origin>().unwrap(), o);
        }
    }
}
