//! The validated report definitions: the types every other part of the handler reads.
//!
//! Values of these types only come out of the loader, which checks every field, so the rest of
//! the handler (delivery, the API, the CLI) never re-validates a name, a recipient or a
//! schedule.

use std::time::Duration;

use chrono_tz::Tz;
use lettre::message::Mailbox;

use chrono::{DateTime, Utc};

use crate::render::chart::InlineChart;
use crate::render::format::Locale;
use crate::render::{RenderContext, SectionDisplay};
use crate::report::schedule::Schedule;
use crate::report::window::{Timing, Window, WindowKind};

/// All report definitions of one file, validated.
///
/// It exists as one value so that a file is accepted or rejected as a whole: the handler never
/// runs with half of a broken file.
#[derive(Clone, Debug)]
pub struct ReportSet {
    /// The reports in file order, so every listing follows the file a person wrote.
    pub reports: Vec<Report>,
}

/// One report: what to query, when, for which span of time, and who gets it.
///
/// Both triggers work from the same value, so the nightly email and the API answer for the same
/// report and day are built from the same queries over the same window.
#[derive(Clone, Debug)]
pub struct Report {
    /// The slug (`[a-z0-9-]+`) that names the report in URLs, subjects and the delivery ledger;
    /// restricted so it is safe in all three without escaping.
    pub name: String,
    /// The human title, shown in the email and the API, where the slug would be cryptic.
    pub title: String,
    /// An optional longer description, shown under the title in the email and the API so a
    /// reader knows what the figures mean.
    pub description: Option<String>,
    /// When the report runs (NCRONTAB, the syntax Azure Functions timers use), evaluated in
    /// `time_zone` so "06:00" means 06:00 where the readers are.
    pub schedule: Schedule,
    /// The zone of the schedule and of every calendar computation (default UTC): a "day" is a
    /// local calendar day, 23 or 25 hours long across DST changes.
    pub time_zone: Tz,
    /// What span of time each run covers, so consecutive runs report on the intended rows.
    pub window: WindowKind,
    /// `To:` recipients (at least one: a report nobody receives is a configuration mistake);
    /// empty for a per-recipient report, whose recipients come from `recipients_query`.
    pub recipients: Vec<Mailbox>,
    /// A per-recipient report ("bursting"): SQL returning one row per recipient (`email`, and
    /// optionally `name` and `key`), run at delivery time for the occurrence's window. Each
    /// recipient gets one email whose sections ran with `:recipient_key` bound to their key,
    /// so nobody sees another recipient's rows. `None` for a report with static `recipients`.
    pub recipients_query: Option<String>,
    /// `Cc:` recipients, visible to everyone who gets the email.
    pub cc: Vec<Mailbox>,
    /// `Bcc:` recipients, who get the email without being listed in it.
    pub bcc: Vec<Mailbox>,
    /// The subject template with `{title}`, `{date}`, `{start}`, `{end}` (and `{recipient}` in a
    /// per-recipient report), so runs of one report are told apart in an inbox: see
    /// [`Report::render_subject`].
    pub subject: String,
    /// Send nothing when every section returned no rows, for reports that matter only when
    /// something happened.
    pub skip_if_empty: bool,
    /// The email body shows at most this many rows per section, so the email stays readable;
    /// the attached CSV carries every row.
    pub max_rows_in_body: usize,
    /// How old a missed occurrence may be and still be sent, so a handler that was down for a
    /// short while catches up but a stale report is not mailed days later.
    pub catch_up: Duration,
    /// The report's sections, in order (at least one: a report without a query has nothing to
    /// say).
    pub sections: Vec<Section>,
    /// How numbers, money and dates are written for the readers (default `en-US`).
    pub locale: Locale,
    /// The files attached to the email (default: one CSV per non-empty section).
    pub attachments: Vec<AttachmentFormat>,

    // Destinations and alerts (issue 16).
    /// Teams, Slack and webhook destinations besides the email (`[[reports.destinations]]`),
    /// each delivered exactly once per occurrence on its own ledger row. With destinations,
    /// `recipients` may be empty: then there is no email.
    pub destinations: Vec<Destination>,
    /// An alert's condition (`condition = "SELECT …"`): one row, one boolean (or 0/1) column,
    /// run first for the occurrence's window; false or no row records the occurrence as
    /// skipped and nothing is sent anywhere.
    pub condition: Option<String>,
}

/// Where a destination posts the report: a chat channel or any HTTPS endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DestinationKind {
    /// A Microsoft Teams Workflows webhook: an Adaptive Card.
    Teams,
    /// A Slack incoming webhook: Block Kit.
    Slack,
    /// Any endpoint: the report API's JSON, optionally signed (HMAC-SHA256).
    Webhook,
}

impl DestinationKind {
    /// The name used in `reports.toml`, in ledger targets (`teams:SETTING`) and as the
    /// telemetry's `destination.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Teams => "teams",
            DestinationKind::Slack => "slack",
            DestinationKind::Webhook => "webhook",
        }
    }
}

/// One `[[reports.destinations]]`: a kind and the *settings* that hold its URL and signing
/// secret. The URL itself is a secret (whoever has it can post into the channel), so the
/// definition, the ledger, the logs and `handler check` only ever name the setting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Teams, Slack or webhook.
    pub kind: DestinationKind,
    /// The app setting that holds the URL (a plain value or a Key Vault reference).
    pub url_setting: String,
    /// The app setting that holds the HMAC key the webhook body is signed with (webhook only).
    pub signing_secret_setting: Option<String>,
}

impl Destination {
    /// How the ledger and every message name it: `teams:TEAMS_WEBHOOK_SALES`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.url_setting)
    }
}

/// A kind of file attached to the report email (`attachments` in `reports.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachmentFormat {
    /// One CSV per non-empty section: raw values for other tools.
    Csv,
    /// One workbook, one sheet per section, with labels, formats and totals.
    Xlsx,
}

impl AttachmentFormat {
    /// The name used in `reports.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentFormat::Csv => "csv",
            AttachmentFormat::Xlsx => "xlsx",
        }
    }
}

/// One query of a report and the heading its result appears under.
///
/// A report has several so that related figures (orders, top products, new customers) arrive in
/// one email rather than one email per query.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    /// The heading the rows appear under in the email and the API, so a reader knows which
    /// query they are looking at.
    pub title: String,
    /// SQL with the named parameters `:start`, `:end` (and `:date`), bound from the window so
    /// every run queries exactly its own span of time.
    pub query: String,
    /// Labels, formats, totals and chart for people; the SQL result itself is unchanged.
    pub display: SectionDisplay,
}

impl ReportSet {
    /// The report called `name`, as used in URLs and the ledger, where a report is named by its
    /// slug rather than its position in the file.
    pub fn get(&self, name: &str) -> Option<&Report> {
        self.reports.iter().find(|r| r.name == name)
    }
}

impl Report {
    /// The report's timing (schedule, time zone and window kind): everything the window
    /// constructors need, so windows depend on these three values rather than on a whole
    /// report.
    pub fn timing(&self) -> Timing<'_> {
        Timing {
            schedule: &self.schedule,
            time_zone: self.time_zone,
            window: self.window,
        }
    }

    /// What every rendering of this report for `window` needs besides the rows, so the
    /// email, the API preview and `report run --out` present the same heading and formats.
    pub fn render_context<'a>(
        &'a self,
        window: &Window,
        generated_at: DateTime<Utc>,
        attachments: &'a [String],
        charts: &'a [Option<InlineChart>],
    ) -> RenderContext<'a> {
        let tz = window.time_zone;
        let local_start = window.start.with_timezone(&tz);
        let next_midnight = window
            .date
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(|t| t.and_local_timezone(tz).earliest());
        let single_day = local_start.date_naive() == window.date
            && local_start.time() == chrono::NaiveTime::MIN
            && next_midnight.is_some_and(|m| m.with_timezone(&Utc) == window.end);
        RenderContext {
            report_name: &self.name,
            title: &self.title,
            description: self.description.as_deref(),
            time_zone: tz,
            start: window.start,
            end: window.end,
            date: window.date,
            generated_at,
            max_rows_in_body: self.max_rows_in_body,
            locale: self.locale,
            single_day,
            attachments,
            charts,
        }
    }
}
