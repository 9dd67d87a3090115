//! The ledger in Azure Table storage: the Function app's own storage account
//! (`AzureWebJobsStorage`), so a deployment needs no database for delivery state. Azurite
//! locally.
//!
//! - One entity per (report, occurrence, target): partition key = report name, row key = the
//!   occurrence as fixed-width UTC text (`2026-11-25T06:00:00.000000Z`), which sorts as time
//!   does, so a partition reads in occurrence order; a fan-out target (a recipient, a
//!   destination) appends `|` and the target, escaped ([`row_key_for`]), so an occurrence's
//!   rows sit together right after its own. Each report's `first_seen` is one more
//!   entity in its partition, with the row key [`FIRST_SEEN_ROW`], which sorts after every
//!   occurrence and is filtered out of listings.
//! - A claim is an insert ("already exists" = someone else has it); a takeover, and every
//!   later state change, replaces the entity read just before, guarded by its ETag
//!   (`If-Match`): "precondition failed" means another process changed it first, and the
//!   decision is made again on a fresh read (bounded).
//! - Timestamps are `Edm.DateTime` properties with microseconds, like the SQL backends keep.
//!
//! A missing table (first start, or an in-memory Azurite restarted) is created on the spot.

pub mod client;

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use self::client::{Auth, Replaced, TableClient, TableError, quote};
use super::{
    Claim, DeliveryRow, DeliveryState, HistoryQuery, LedgerStore, Origin, Target, lease_end,
    not_claimed, rejected_note, ts,
};

/// The row key of a report's `first_seen` entity; `~` sorts after every occurrence key.
pub const FIRST_SEEN_ROW: &str = "~first-seen";
/// The filter that keeps occurrence rows only.
const OCCURRENCES: &str = "RowKey lt '~'";
/// How often a read-decide-replace is tried again after losing an ETag race.
const MAX_ROUNDS: usize = 8;

/// Where the ledger table is and how to reach it.
pub struct TableLedgerConfig {
    /// The Table service endpoint (`https://<account>.table.core.windows.net`, or Azurite's
    /// `http://127.0.0.1:10002/devstoreaccount1`).
    pub endpoint: reqwest::Url,
    /// The table's name (`LEDGER_TABLE`).
    pub table: String,
    /// Shared Key or a token credential.
    pub auth: Auth,
}

/// The Table storage backend of the ledger.
pub struct TableLedger {
    client: TableClient,
}

impl TableLedger {
    /// Builds the client and creates the table if it is missing, so a fresh deployment needs no
    /// manual setup; a first request that fails (unreachable, refused) fails here.
    pub async fn connect(config: TableLedgerConfig) -> anyhow::Result<TableLedger> {
        let client = TableClient::new(config.endpoint, config.table, config.auth)?;
        client
            .create_table()
            .await
            .with_context(|| format!("cannot create the ledger table {}", client.table()))?;
        Ok(TableLedger { client })
    }

    async fn read(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
    ) -> anyhow::Result<Option<(DeliveryRow, String)>> {
        let found = self
            .client
            .get(&partition_key(report)?, &row_key_for(occurrence, target))
            .await
            .map_err(ledger_error)?;
        found
            .map(|(e, etag)| Ok((from_entity(&e)?, etag)))
            .transpose()
    }

    async fn insert(&self, row: &DeliveryRow) -> anyhow::Result<bool> {
        self.client
            .insert(&to_entity(row)?)
            .await
            .map_err(ledger_error)
    }

    async fn replace(&self, row: &DeliveryRow, etag: &str) -> anyhow::Result<Replaced> {
        self.client
            .replace(&to_entity(row)?, etag)
            .await
            .map_err(ledger_error)
    }

    /// The claim shared by [`LedgerStore::claim`] and [`LedgerStore::claim_manual`]: insert,
    /// else take the row over when `may_take` says so, guarded by its ETag.
    #[allow(
        clippy::too_many_arguments,
        reason = "the row's key (report, target, occurrence) and what is recorded"
    )]
    async fn claim_with(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
        lease: Duration,
        origin: Origin,
        may_take: impl Fn(&DeliveryRow) -> bool,
    ) -> anyhow::Result<Claim> {
        let (occurrence, now) = (ts(occurrence), ts(now));
        let until = lease_end(now, lease)?;
        for _ in 0..MAX_ROUNDS {
            let fresh = DeliveryRow {
                report: report.to_string(),
                occurrence,
                target: target.clone(),
                state: DeliveryState::Claimed,
                retryable: false,
                attempts: 1,
                last_error: None,
                message_id: None,
                recipients: 0,
                rejected: Vec::new(),
                claimed_at: now,
                updated_at: now,
                lease_until: Some(until),
                origin,
            };
            if self.insert(&fresh).await? {
                return Ok(Claim::Claimed { attempt: 1 });
            }
            let Some((mut row, etag)) = self.read(report, target, occurrence).await? else {
                continue;
            };
            if !may_take(&row) {
                return Ok(match row.state {
                    DeliveryState::Claimed => Claim::Busy,
                    state => Claim::AlreadyDone(state),
                });
            }
            if origin != Origin::Schedule {
                row.origin = if row.state == DeliveryState::Sent {
                    Origin::Resend
                } else {
                    Origin::Manual
                };
            }
            row.state = DeliveryState::Claimed;
            row.retryable = false;
            row.attempts = row.attempts.saturating_add(1);
            row.claimed_at = now;
            row.updated_at = now;
            row.lease_until = Some(until);
            match self.replace(&row, &etag).await? {
                Replaced::Done => {
                    return Ok(Claim::Claimed {
                        attempt: row.attempts,
                    });
                }
                // Lost the race: decide again on what the winner wrote.
                Replaced::Lost | Replaced::Missing => continue,
            }
        }
        bail!("the ledger row for {report} kept changing while claiming it")
    }

    /// Read, change, replace guarded by the ETag; again on a lost race (bounded). `change`
    /// returns false to leave the row as it is.
    async fn update(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        change: impl Fn(&mut DeliveryRow) -> bool,
    ) -> anyhow::Result<()> {
        let occurrence = ts(occurrence);
        for _ in 0..MAX_ROUNDS {
            let Some((mut row, etag)) = self.read(report, target, occurrence).await? else {
                return Err(not_claimed(report, target, occurrence));
            };
            if !change(&mut row) {
                return Ok(());
            }
            match self.replace(&row, &etag).await? {
                Replaced::Done => return Ok(()),
                Replaced::Lost => continue,
                Replaced::Missing => return Err(not_claimed(report, target, occurrence)),
            }
        }
        bail!("the ledger row for {report} kept changing while updating it")
    }

    fn skipped_row(
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> DeliveryRow {
        DeliveryRow {
            report: report.to_string(),
            occurrence: ts(occurrence),
            target: target.clone(),
            state: DeliveryState::Skipped,
            retryable: false,
            attempts: 0,
            last_error: Some(reason.to_string()),
            message_id: None,
            recipients: 0,
            rejected: Vec::new(),
            claimed_at: ts(now),
            updated_at: ts(now),
            lease_until: None,
            origin: Origin::Schedule,
        }
    }
}

#[async_trait::async_trait]
impl LedgerStore for TableLedger {
    fn backend(&self) -> &'static str {
        "table"
    }

    async fn claim(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> anyhow::Result<Claim> {
        let now_ts = ts(now);
        self.claim_with(
            report,
            target,
            occurrence,
            now,
            lease,
            Origin::Schedule,
            |row| match row.state {
                DeliveryState::Claimed => row.lease_until.is_none_or(|l| l <= now_ts),
                DeliveryState::Failed => row.retryable,
                _ => false,
            },
        )
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
        let now_ts = ts(now);
        self.claim_with(
            report,
            target,
            occurrence,
            now,
            lease,
            Origin::Manual,
            |row| match row.state {
                DeliveryState::Claimed => row.lease_until.is_none_or(|l| l <= now_ts),
                DeliveryState::Failed | DeliveryState::Skipped => true,
                DeliveryState::Sent => resend,
            },
        )
        .await
    }

    async fn first_seen(&self, report: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
        let pk = partition_key(report)?;
        let stored = |e: &Map<String, Value>| -> anyhow::Result<DateTime<Utc>> {
            time(e, "first_seen")?
                .ok_or_else(|| anyhow!("the ledger's first_seen entity has no time"))
        };
        if let Some((e, _)) = self
            .client
            .get(&pk, FIRST_SEEN_ROW)
            .await
            .map_err(ledger_error)?
        {
            return stored(&e);
        }
        let filter = format!("PartitionKey eq '{}' and {OCCURRENCES}", quote(&pk));
        let oldest = self
            .client
            .query(&filter, Some(1))
            .await
            .map_err(ledger_error)?
            .first()
            .map(|e| time(e, "occurrence"))
            .transpose()?
            .flatten();
        let now = ts(now);
        let first = oldest.map_or(now, |o| o.min(now));
        let mut entity = Map::new();
        entity.insert("PartitionKey".into(), json!(pk));
        entity.insert("RowKey".into(), json!(FIRST_SEEN_ROW));
        put_time(&mut entity, "first_seen", first);
        if self.client.insert(&entity).await.map_err(ledger_error)? {
            return Ok(first);
        }
        // Another process recorded it first: theirs stands.
        match self
            .client
            .get(&pk, FIRST_SEEN_ROW)
            .await
            .map_err(ledger_error)?
        {
            Some((e, _)) => stored(&e),
            None => Ok(first),
        }
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
        let (_, last_error) = rejected_note(rejected)?;
        self.update(report, target, occurrence, |row| {
            row.state = DeliveryState::Sent;
            row.retryable = false;
            row.message_id = Some(message_id.to_string());
            row.recipients = recipients;
            row.rejected = rejected.to_vec();
            row.last_error = last_error.clone();
            row.updated_at = ts(now);
            row.lease_until = None;
            true
        })
        .await
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
        self.update(report, target, occurrence, |row| {
            row.state = DeliveryState::Failed;
            row.retryable = retryable;
            row.last_error = Some(error.to_string());
            row.updated_at = ts(now);
            row.lease_until = None;
            true
        })
        .await
    }

    async fn record_missed(
        &self,
        report: &str,
        occurrence: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        self.insert(&Self::skipped_row(
            report,
            &Target::occurrence(),
            occurrence,
            reason,
            now,
        ))
        .await
        .context("cannot record a missed delivery in the ledger")
    }

    async fn mark_skipped(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if self
            .insert(&Self::skipped_row(report, target, occurrence, reason, now))
            .await?
        {
            return Ok(());
        }
        self.update(report, target, occurrence, |row| {
            if row.state == DeliveryState::Sent {
                return false;
            }
            row.state = DeliveryState::Skipped;
            row.retryable = false;
            row.last_error = Some(reason.to_string());
            row.updated_at = ts(now);
            row.lease_until = None;
            true
        })
        .await
    }

    async fn get(
        &self,
        report: &str,
        target: &Target,
        occurrence: DateTime<Utc>,
    ) -> anyhow::Result<Option<DeliveryRow>> {
        Ok(self
            .read(report, target, ts(occurrence))
            .await?
            .map(|(row, _)| row))
    }

    async fn occurrence_rows(
        &self,
        report: &str,
        occurrence: DateTime<Utc>,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        // The occurrence's own key, then its targets (`key|…`); `}` sorts right after `|`.
        let key = row_key(occurrence);
        let filter = format!(
            "PartitionKey eq '{}' and RowKey ge '{key}' and RowKey lt '{key}}}'",
            quote(&partition_key(report)?)
        );
        let entities = self
            .client
            .query(&filter, None)
            .await
            .map_err(ledger_error)?;
        let mut rows = entities
            .iter()
            .map(from_entity)
            .collect::<anyhow::Result<Vec<_>>>()?;
        rows.sort_by(|a, b| a.target.cmp(&b.target));
        Ok(rows)
    }

    async fn recent(&self, report: Option<&str>, limit: usize) -> anyhow::Result<Vec<DeliveryRow>> {
        let filter = match report {
            Some(r) => format!(
                "PartitionKey eq '{}' and {OCCURRENCES}",
                quote(&partition_key(r)?)
            ),
            None => OCCURRENCES.to_string(),
        };
        let entities = self
            .client
            .query(&filter, None)
            .await
            .map_err(ledger_error)?;
        let mut rows = entities
            .iter()
            .map(from_entity)
            .collect::<anyhow::Result<Vec<_>>>()?;
        rows.sort_by(super::listing_order);
        rows.truncate(limit);
        Ok(rows)
    }

    /// Reads the partitions asked for (every one when no report is named), narrowed by row key
    /// to the occurrences between `from` and `to`; the state and the cursor are applied after
    /// reading, as Table storage cannot sort newest first. A deployment's history is small
    /// (a row per report, occurrence and target), but a long unfiltered listing reads it all:
    /// the SQL backends page in the database.
    async fn history(&self, query: &HistoryQuery) -> anyhow::Result<Vec<DeliveryRow>> {
        let mut range = vec![OCCURRENCES.to_string()];
        if let Some(from) = query.from {
            range.push(format!("RowKey ge '{}'", row_key(from)));
        }
        if let Some(to) = query.to {
            range.push(format!("RowKey lt '{}'", row_key(to)));
        }
        let range = range.join(" and ");
        let filters: Vec<String> = match &query.reports {
            None => vec![range],
            Some(names) => names
                .iter()
                .map(|n| {
                    Ok(format!(
                        "PartitionKey eq '{}' and {range}",
                        quote(&partition_key(n)?)
                    ))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let mut rows = Vec::new();
        for filter in filters {
            for e in self
                .client
                .query(&filter, None)
                .await
                .map_err(ledger_error)?
            {
                let row = from_entity(&e)?;
                if query.admits(&row) {
                    rows.push(row);
                }
            }
        }
        rows.sort_by(super::listing_order);
        rows.truncate(query.limit);
        Ok(rows)
    }
}

/// Wraps a client error for the tick's message: what failed, and the cause with its hint.
fn ledger_error(e: TableError) -> anyhow::Error {
    anyhow::Error::new(e).context("the Table storage ledger failed")
}

/// A report name as a partition key: the characters the Table service refuses in keys are
/// refused here with a clear error (report slugs never contain them).
fn partition_key(report: &str) -> anyhow::Result<String> {
    let bad = |c: char| matches!(c, '/' | '\\' | '#' | '?') || c.is_control();
    if report.is_empty() || report.len() > 512 || report.chars().any(bad) {
        bail!("the report name {report:?} cannot be a Table storage key");
    }
    Ok(report.to_string())
}

/// The occurrence as a row key: fixed-width UTC text with microseconds, sorting as time does.
pub fn row_key(occurrence: DateTime<Utc>) -> String {
    ts(occurrence).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The row key of one target of an occurrence: the occurrence's key alone for the occurrence
/// itself (what every row written before targets existed has), else `key|target` with every
/// byte outside `A-Z a-z 0-9 @ . _ + : = -` written as `%XX`, so no character the Table
/// service refuses in keys (`/ \ # ?`, control characters) can reach it.
pub fn row_key_for(occurrence: DateTime<Utc>, target: &Target) -> String {
    let mut key = row_key(occurrence);
    if !target.is_occurrence() {
        key.push('|');
        for b in target.as_str().bytes() {
            if b.is_ascii_alphanumeric() || b"@._+:=-".contains(&b) {
                key.push(char::from(b));
            } else {
                key.push_str(&format!("%{b:02X}"));
            }
        }
    }
    key
}

fn put_time(e: &mut Map<String, Value>, name: &str, t: DateTime<Utc>) {
    e.insert(name.into(), json!(row_key(t)));
    e.insert(format!("{name}@odata.type"), json!("Edm.DateTime"));
}

fn time(e: &Map<String, Value>, name: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    match e.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(ts(t.with_timezone(&Utc))))
            .map_err(|_| anyhow!("the ledger entity's {name} is not a time")),
        Some(_) => bail!("the ledger entity's {name} is not a time"),
    }
}

fn to_entity(row: &DeliveryRow) -> anyhow::Result<Map<String, Value>> {
    let mut e = Map::new();
    e.insert("PartitionKey".into(), json!(partition_key(&row.report)?));
    e.insert(
        "RowKey".into(),
        json!(row_key_for(row.occurrence, &row.target)),
    );
    if !row.target.is_occurrence() {
        e.insert("target".into(), json!(row.target.as_str()));
    }
    put_time(&mut e, "occurrence", row.occurrence);
    e.insert("state".into(), json!(row.state.as_str()));
    e.insert("retryable".into(), json!(row.retryable));
    e.insert("attempts".into(), json!(row.attempts.min(i32::MAX as u32)));
    if let Some(err) = &row.last_error {
        e.insert("last_error".into(), json!(err));
    }
    if let Some(id) = &row.message_id {
        e.insert("message_id".into(), json!(id));
    }
    e.insert(
        "recipients".into(),
        json!(row.recipients.min(i32::MAX as u32)),
    );
    e.insert(
        "rejected".into(),
        json!(serde_json::to_string(&row.rejected)?),
    );
    put_time(&mut e, "claimed_at", row.claimed_at);
    put_time(&mut e, "updated_at", row.updated_at);
    if let Some(l) = row.lease_until {
        put_time(&mut e, "lease_until", l);
    }
    e.insert("origin".into(), json!(row.origin.as_str()));
    Ok(e)
}

fn from_entity(e: &Map<String, Value>) -> anyhow::Result<DeliveryRow> {
    let text = |n: &str| e.get(n).and_then(Value::as_str).map(str::to_string);
    let required = |n: &str| text(n).ok_or_else(|| anyhow!("the ledger entity has no {n}"));
    let number = |n: &str| {
        e.get(n)
            .and_then(Value::as_u64)
            .map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX))
    };
    let rejected = text("rejected").unwrap_or_else(|| "[]".into());
    Ok(DeliveryRow {
        report: required("PartitionKey")?,
        occurrence: time(e, "occurrence")?
            .ok_or_else(|| anyhow!("the ledger entity has no occurrence"))?,
        target: Target::parse(text("target").as_deref().unwrap_or(""))?,
        state: required("state")?.parse()?,
        retryable: e.get("retryable").and_then(Value::as_bool).unwrap_or(false),
        attempts: number("attempts"),
        last_error: text("last_error"),
        message_id: text("message_id"),
        recipients: number("recipients"),
        rejected: serde_json::from_str(&rejected).context("the ledger's rejected property")?,
        claimed_at: time(e, "claimed_at")?
            .ok_or_else(|| anyhow!("the ledger entity has no claimed_at"))?,
        updated_at: time(e, "updated_at")?
            .ok_or_else(|| anyhow!("the ledger entity has no updated_at"))?,
        lease_until: time(e, "lease_until")?,
        origin: text("origin").as_deref().unwrap_or("schedule").parse()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn row_keys_sort_as_time_does_and_round_trip() {
        let a = Utc.with_ymd_and_hms(2026, 11, 25, 6, 0, 0).unwrap();
        let b = a + chrono::Duration::microseconds(1);
        let c = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(row_key(a), "2026-11-25T06:00:00.000000Z");
        assert!(row_key(a) < row_key(b) && row_key(b) < row_key(c));
        assert!(row_key(c).as_str() < FIRST_SEEN_ROW);
        let row = DeliveryRow {
            report: "daily".into(),
            occurrence: b,
            target: Target::occurrence(),
            state: DeliveryState::Sent,
            retryable: false,
            attempts: 2,
            last_error: Some("x".into()),
            message_id: Some("<m@x>".into()),
            recipients: 3,
            rejected: vec!["a@b: 550".into()],
            claimed_at: a,
            updated_at: c,
            lease_until: None,
            origin: Origin::Resend,
        };
        assert_eq!(from_entity(&to_entity(&row).unwrap()).unwrap(), row);
        let fanned = DeliveryRow {
            target: Target::new("email", "Ann/B#x?y@example.com").unwrap(),
            ..row
        };
        assert_eq!(from_entity(&to_entity(&fanned).unwrap()).unwrap(), fanned);
        let key = row_key_for(b, &fanned.target);
        assert_eq!(
            key,
            format!("{}|email:Ann%2FB%23x%3Fy@example.com", row_key(b))
        );
        assert!(row_key(b) < key && key < format!("{}}}", row_key(b)));
        assert!(key.as_str() < row_key(c).as_str());
    }

    #[test]
    fn unusable_report_names_are_refused() {
        assert!(partition_key("a/b").is_err());
        assert!(partition_key("").is_err());
        assert!(partition_key("daily-sales").is_ok());
    }
}
