//! The `reports.toml` loader: the report definitions, parsed and validated in one pass.
//!
//! The file is walked as a spanned TOML tree rather than deserialised with serde, so that one
//! pass finds *every* problem (unknown keys, bad values, missing fields) and each problem names
//! the file, the line and the field. A person fixing a file at start-up or with `handler check`
//! then sees the whole list at once instead of one error per attempt.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use chrono_tz::Tz;
use lettre::message::Mailbox;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::model::{AttachmentFormat, Destination, DestinationKind, Report, ReportSet, Section};
use super::subject::{DEFAULT_SUBJECT, check_subject_for};
use crate::render::SectionDisplay;
use crate::render::chart::{ChartKind, ChartSpec, ColumnRef};
use crate::render::format::{ColumnFormat, ColumnSettings, Currency, Locale, Located};
use crate::report::schedule::Schedule;
use crate::report::window::WindowKind;

/// The default `max_rows_in_body`: a screenful or two of rows per section, enough to read the
/// figures in the email; the attached CSV carries the rest.
pub const DEFAULT_MAX_ROWS_IN_BODY: usize = 50;
/// The default `catch_up`: a tick up to two hours late still sends the missed occurrence.
pub const DEFAULT_CATCH_UP: Duration = Duration::from_secs(2 * 3600);
/// The largest `max_rows_in_body`: an email body is for reading; the CSV carries the rest.
pub const MAX_ROWS_IN_BODY_LIMIT: usize = 10_000;
/// The longest accepted report name: names appear in URLs, subjects and ledger keys.
pub const MAX_NAME_LEN: usize = 64;

const REPORT_KEYS: [&str; 19] = [
    "name",
    "title",
    "description",
    "schedule",
    "time_zone",
    "window",
    "recipients",
    "cc",
    "bcc",
    "subject",
    "skip_if_empty",
    "max_rows_in_body",
    "catch_up",
    "sections",
    "locale",
    "attachments",
    "recipients_query",
    // Destinations and alerts (issue 16).
    "destinations",
    "condition",
];
const DESTINATION_KEYS: [&str; 3] = ["type", "url_setting", "signing_secret_setting"];
/// The longest accepted setting name in a destination (App Service setting names are short).
const MAX_SETTING_NAME_LEN: usize = 128;
const SECTION_KEYS: [&str; 5] = ["title", "query", "totals", "chart", "columns"];
const COLUMN_KEYS: [&str; 5] = ["label", "format", "currency", "scale", "decimals"];
const CHART_KEYS: [&str; 4] = ["type", "x", "y", "title"];
/// The most decimal places a column may show.
const MAX_DECIMALS: i64 = 10;

/// One thing wrong with a reports file, located so a person can jump to it.
///
/// Named for the reports file to keep it apart from the API's problem+json response type: this
/// one is for the person editing `reports.toml`, that one for an HTTP client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportsFileProblem {
    /// The file label given to [`ReportSet::parse`] (the path for [`ReportSet::load`]).
    pub file: String,
    /// 1-based line; 0 when the problem concerns the whole file (e.g. it cannot be read).
    pub line: usize,
    /// The field path, e.g. `reports[0].schedule`; empty for file-level problems.
    pub field: String,
    /// What is wrong and, where possible, what would be right.
    pub message: String,
}

impl fmt::Display for ReportsFileProblem {
    /// `file:line: field: message`, the shape editors and terminals turn into a jump to the
    /// line; the line and the field are left out when the problem concerns the whole file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a reports file. Its `Display` is one line per problem, in file
/// order, ready for a terminal or a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportsFileError {
    /// The problems, sorted by line, so they read top to bottom like the file.
    pub problems: Vec<ReportsFileProblem>,
}

impl fmt::Display for ReportsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ReportsFileError {}

impl ReportSet {
    /// Reads and validates a reports file; problems are labelled with `path` as given, so they
    /// name the file the way the person configured it. An unreadable file is a problem like any
    /// other, not a separate error type.
    pub fn load(path: &Path) -> Result<ReportSet, ReportsFileError> {
        let label = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &label),
            Err(e) => Err(ReportsFileError {
                problems: vec![ReportsFileProblem {
                    file: label,
                    line: 0,
                    field: String::new(),
                    message: format!("cannot read the reports file: {e}"),
                }],
            }),
        }
    }

    /// Parses and validates reports-file text; `file_label` names the file in problems. The
    /// whole set is rejected if any report has a problem, so the handler never runs with half
    /// of a broken file.
    pub fn parse(text: &str, file_label: &str) -> Result<ReportSet, ReportsFileError> {
        let mut cx = Checker {
            text,
            file: file_label,
            problems: Vec::new(),
        };
        let (root, syntax_errors) = DeTable::parse_recoverable(text);
        if !syntax_errors.is_empty() {
            for e in syntax_errors {
                let at = e.span().map(|s| s.start).unwrap_or(0);
                cx.problem_at(at, "", format!("TOML syntax: {}", e.message().trim()));
            }
            return Err(cx.finish());
        }
        let reports = cx.root(root.get_ref());
        if cx.problems.is_empty() {
            Ok(ReportSet { reports })
        } else {
            Err(cx.finish())
        }
    }
}

/// Whether `name` is a valid report slug: 1 to [`MAX_NAME_LEN`] characters from `a-z`, `0-9`
/// and `-`, so the name is safe in URLs, subjects and ledger keys without escaping.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parses a `catch_up` duration: `<N>s`, `<N>m`, `<N>h` or `<N>d`, at most 366 days, so a slip
/// such as an extra digit is reported rather than accepted. The error is a sentence for the
/// person editing `reports.toml`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let expected = "expected a duration such as `90m`, `2h` or `1d` (units s, m, h, d)";
    let (number, unit) = s.split_at(s.len().saturating_sub(1));
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}`: {expected}"));
    }
    let n: u64 = number.parse().map_err(|_| format!("`{s}`: {expected}"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: {expected}")),
    };
    let secs = n
        .checked_mul(unit_secs)
        .filter(|&s| s <= 366 * 86_400)
        .ok_or_else(|| format!("`{s}`: at most 366 days"))?;
    Ok(Duration::from_secs(secs))
}

/// Collects problems while walking the spanned tree.
struct Checker<'a> {
    text: &'a str,
    file: &'a str,
    problems: Vec<ReportsFileProblem>,
}

type Value<'i> = Spanned<DeValue<'i>>;

impl Checker<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn problem_at(&mut self, offset: usize, field: &str, message: String) {
        let line = self.line_of(offset);
        self.problems.push(ReportsFileProblem {
            file: self.file.to_string(),
            line,
            field: field.to_string(),
            message,
        });
    }

    fn finish(mut self) -> ReportsFileError {
        // Stable: problems on one line keep the order they were found in.
        self.problems.sort_by_key(|p| p.line);
        ReportsFileError {
            problems: self.problems,
        }
    }

    fn unknown_keys(&mut self, table: &DeTable<'_>, allowed: &[&str], prefix: &str) {
        for (key, _) in table.iter() {
            let k: &str = key.get_ref();
            if !allowed.contains(&k) {
                let hint = closest(k, allowed)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                self.problem_at(
                    key.span().start,
                    &join(prefix, k),
                    format!("unknown key `{k}`{hint}"),
                );
            }
        }
    }

    fn root(&mut self, root: &DeTable<'_>) -> Vec<Report> {
        self.unknown_keys(root, &["reports"], "");
        let Some(reports) = root.get("reports") else {
            self.problem_at(
                0,
                "reports",
                "no reports defined: add at least one `[[reports]]` table".into(),
            );
            return Vec::new();
        };
        let Some(items) = self.array_of_tables(reports, "reports") else {
            return Vec::new();
        };
        if items.is_empty() {
            self.problem_at(
                reports.span().start,
                "reports",
                "no reports defined: add at least one `[[reports]]` table".into(),
            );
        }
        let mut out = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let prefix = format!("reports[{i}]");
            let Some(table) = self.table(item, &prefix) else {
                continue;
            };
            // Type errors in `name` are reported by `report`; here only duplicates matter.
            if let Some(value) = table.get("name")
                && let DeValue::String(name) = value.get_ref()
                && is_valid_name(name)
            {
                let (name, span) = (name.to_string(), value.span());
                let line = self.line_of(span.start);
                if let Some(first) = seen.get(&name) {
                    let message =
                        format!("duplicate report name `{name}` (first defined on line {first})");
                    self.problem_at(span.start, &join(&prefix, "name"), message);
                } else {
                    seen.insert(name, line);
                }
            }
            if let Some(report) = self.report(table, item.span(), &prefix) {
                out.push(report);
            }
        }
        out
    }

    /// Validates one `[[reports]]` table; `None` if it has any problem.
    fn report(&mut self, t: &DeTable<'_>, span: Range<usize>, prefix: &str) -> Option<Report> {
        let before = self.problems.len();
        self.unknown_keys(t, &REPORT_KEYS, prefix);
        let f = |k: &str| join(prefix, k);

        let name = match self.string(t, "name", prefix) {
            Some((name, s)) => {
                if !is_valid_name(&name) {
                    self.problem_at(
                        s.start,
                        &f("name"),
                        format!(
                            "`{name}` is not a valid name: use 1-{MAX_NAME_LEN} characters \
                             from a-z, 0-9 and `-` (it appears in URLs)"
                        ),
                    );
                }
                Some(name)
            }
            None => {
                self.missing(span.clone(), "name", prefix);
                None
            }
        };
        let title = match self.string(t, "title", prefix) {
            Some((title, s)) if title.trim().is_empty() => {
                self.problem_at(s.start, &f("title"), "the title must not be empty".into());
                None
            }
            Some((title, _)) => Some(title),
            None => name.clone(),
        };
        let description = self.string(t, "description", prefix).map(|(d, _)| d);

        let schedule = match self.string(t, "schedule", prefix) {
            Some((expr, s)) => match Schedule::parse(&expr) {
                Ok(schedule) => Some(schedule),
                Err(e) => {
                    self.problem_at(s.start, &f("schedule"), format!("`{expr}`: {e}"));
                    None
                }
            },
            None => {
                self.missing(span.clone(), "schedule", prefix);
                None
            }
        };
        let time_zone = match self.string(t, "time_zone", prefix) {
            Some((name, s)) => match name.parse::<Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    self.problem_at(
                        s.start,
                        &f("time_zone"),
                        format!(
                            "unknown time zone `{name}`: use an IANA name such as \
                             `Europe/Berlin`, `America/New_York` or `UTC`"
                        ),
                    );
                    None
                }
            },
            None => Some(chrono_tz::UTC),
        };
        let window = match self.string(t, "window", prefix) {
            Some((w, s)) => match w.parse::<WindowKind>() {
                Ok(kind) => Some(kind),
                Err(e) => {
                    self.problem_at(s.start, &f("window"), e);
                    None
                }
            },
            None => Some(WindowKind::PreviousDay),
        };
        let (destinations, condition) = self.destinations_and_condition(t, prefix);
        let recipients = self.mailboxes(t, "recipients", prefix);
        match &recipients {
            // A report with destinations may have no email at all (a Teams-only report).
            _ if !destinations.is_empty() => {}
            Some(list) if list.is_empty() => {
                let at = t
                    .get("recipients")
                    .map(|v| v.span().start)
                    .unwrap_or(span.start);
                self.problem_at(
                    at,
                    &f("recipients"),
                    "at least one recipient is required".into(),
                );
            }
            None if t.get("recipients").is_none() && t.get("recipients_query").is_none() => {
                self.missing(span.clone(), "recipients", prefix);
            }
            _ => {}
        }
        let cc = self.mailboxes(t, "cc", prefix);
        let bcc = self.mailboxes(t, "bcc", prefix);
        let subject = match self.string(t, "subject", prefix) {
            Some((subject, s)) => {
                if let Err(e) = check_subject_for(&subject, t.get("recipients_query").is_some()) {
                    self.problem_at(s.start, &f("subject"), e);
                }
                subject
            }
            None => DEFAULT_SUBJECT.to_string(),
        };
        let skip_if_empty = self.boolean(t, "skip_if_empty", prefix).unwrap_or(false);
        let max_rows_in_body = match t.get("max_rows_in_body") {
            None => DEFAULT_MAX_ROWS_IN_BODY,
            Some(v) => self
                .integer(v, &f("max_rows_in_body"), 0, MAX_ROWS_IN_BODY_LIMIT as i64)
                .map(|n| n as usize)
                .unwrap_or(DEFAULT_MAX_ROWS_IN_BODY),
        };
        let catch_up = match self.string(t, "catch_up", prefix) {
            Some((d, s)) => match parse_duration(&d) {
                Ok(d) => d,
                Err(e) => {
                    self.problem_at(s.start, &f("catch_up"), e);
                    DEFAULT_CATCH_UP
                }
            },
            None => DEFAULT_CATCH_UP,
        };
        let sections = self.sections(t, span.clone(), prefix);
        let locale = match self.string(t, "locale", prefix) {
            Some((l, s)) => match l.parse::<Locale>() {
                Ok(l) => l,
                Err(e) => {
                    self.problem_at(s.start, &f("locale"), e);
                    Locale::default()
                }
            },
            None => Locale::default(),
        };
        let attachments = self.attachments(t, prefix);
        let recipients_query = self.recipients_query(t, prefix);

        if self.problems.len() != before {
            return None;
        }
        Some(Report {
            name: name?,
            title: title?,
            description,
            schedule: schedule?,
            time_zone: time_zone?,
            window: window?,
            // Absent only for a per-recipient report, or when destinations stand in for the
            // email (checked above).
            recipients: recipients.unwrap_or_default(),
            recipients_query,
            cc: cc.unwrap_or_default(),
            bcc: bcc.unwrap_or_default(),
            subject,
            skip_if_empty,
            max_rows_in_body,
            catch_up,
            sections,
            locale,
            attachments,
            destinations,
            condition,
        })
    }

    /// `recipients_query` (a per-recipient report) and what it implies for the rest of the
    /// report: not together with `recipients`; SQL that returns an `email` column and binds no
    /// `:recipient_key` itself; and `:recipient_key` in a section only when there is one.
    fn recipients_query(&mut self, t: &DeTable<'_>, prefix: &str) -> Option<String> {
        let field = join(prefix, "recipients_query");
        let query = match self.string(t, "recipients_query", prefix) {
            Some((q, s)) => {
                // A channel or webhook has no recipient key, so it would get the report with
                // `:recipient_key` unbound (no rows): refused rather than silently empty.
                if let Some(d) = t.get("destinations") {
                    let first = self.line_of(s.start);
                    self.problem_at(
                        d.span().start,
                        &join(prefix, "destinations"),
                        format!(
                            "a per-recipient report (`recipients_query`, line {first}) cannot \
                             have destinations: they have no recipient key; define a second \
                             report for the channel"
                        ),
                    );
                }
                if let Some(r) = t.get("recipients") {
                    let first = self.line_of(s.start);
                    self.problem_at(
                        r.span().start,
                        &join(prefix, "recipients"),
                        format!(
                            "a report has either `recipients` or `recipients_query` (line \
                             {first}), not both: remove one"
                        ),
                    );
                }
                if q.trim().is_empty() {
                    self.problem_at(s.start, &field, "the query must not be empty".into());
                } else if !selects_star(&q) && !mentions(&q, "email") {
                    self.problem_at(
                        s.start,
                        &field,
                        "the query must return an `email` column (and may return `name` and \
                         `key`), e.g. `SELECT email, name, team_id AS key FROM team_leads`"
                            .into(),
                    );
                } else if binds_recipient_key(&q) {
                    self.problem_at(
                        s.start,
                        &field,
                        "`:recipient_key` is bound in the sections, not in `recipients_query` \
                         (which binds :start, :end and :date)"
                            .into(),
                    );
                }
                Some(q)
            }
            None => None,
        };
        if query.is_none()
            && let Some(sections) = t.get("sections")
            && let DeValue::Array(items) = sections.get_ref()
        {
            for (i, item) in items.iter().enumerate() {
                if let DeValue::Table(st) = item.get_ref()
                    && let Some(q) = st.get("query")
                    && let DeValue::String(sql) = q.get_ref()
                    && binds_recipient_key(sql)
                {
                    self.problem_at(
                        q.span().start,
                        &format!("{prefix}.sections[{i}].query"),
                        "`:recipient_key` is bound only in a per-recipient report: add \
                         `recipients_query` to the report"
                            .into(),
                    );
                }
            }
        }
        query
    }

    /// `[[reports.destinations]]` and `condition` (issue 16): each destination's `type`,
    /// `url_setting` (a setting name, never a URL) and, for webhooks, `signing_secret_setting`;
    /// no destination twice; `cc`/`bcc` only with `recipients`; a non-empty condition.
    fn destinations_and_condition(
        &mut self,
        t: &DeTable<'_>,
        prefix: &str,
    ) -> (Vec<Destination>, Option<String>) {
        let condition = match self.string(t, "condition", prefix) {
            Some((q, s)) if q.trim().is_empty() => {
                self.problem_at(
                    s.start,
                    &join(prefix, "condition"),
                    "the condition must be a query returning one boolean (or 0/1) column".into(),
                );
                None
            }
            Some((q, _)) => Some(q),
            None => None,
        };
        let field = join(prefix, "destinations");
        let Some(value) = t.get("destinations") else {
            return (Vec::new(), condition);
        };
        let Some(items) = self.array_of_tables(value, &field) else {
            return (Vec::new(), condition);
        };
        let mut out: Vec<Destination> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let dprefix = format!("{field}[{i}]");
            let Some(dt) = self.table(item, &dprefix) else {
                continue;
            };
            let before = self.problems.len();
            self.unknown_keys(dt, &DESTINATION_KEYS, &dprefix);
            let kind = match self.string(dt, "type", &dprefix) {
                Some((k, s)) => match k.as_str() {
                    "teams" => Some(DestinationKind::Teams),
                    "slack" => Some(DestinationKind::Slack),
                    "webhook" => Some(DestinationKind::Webhook),
                    other => {
                        self.problem_at(
                            s.start,
                            &join(&dprefix, "type"),
                            format!(
                                "unknown destination type `{other}`: use \"teams\", \"slack\" or \"webhook\""
                            ),
                        );
                        None
                    }
                },
                None => {
                    if dt.get("type").is_none() {
                        self.missing(item.span(), "type", &dprefix);
                    }
                    None
                }
            };
            let url_setting = match self.setting_name(dt, "url_setting", &dprefix) {
                Some(n) => Some(n),
                None => {
                    if dt.get("url_setting").is_none() {
                        self.missing(item.span(), "url_setting", &dprefix);
                    }
                    None
                }
            };
            let signing = self.setting_name(dt, "signing_secret_setting", &dprefix);
            if let (Some(k), Some(v)) = (kind, dt.get("signing_secret_setting"))
                && k != DestinationKind::Webhook
            {
                self.problem_at(
                    v.span().start,
                    &join(&dprefix, "signing_secret_setting"),
                    format!(
                        "only a webhook destination is signed; a {} destination takes no signing secret",
                        k.as_str()
                    ),
                );
            }
            if self.problems.len() != before {
                continue;
            }
            let (Some(kind), Some(url_setting)) = (kind, url_setting) else {
                continue;
            };
            let d = Destination {
                kind,
                url_setting,
                signing_secret_setting: signing,
            };
            if out
                .iter()
                .any(|o| o.kind == d.kind && o.url_setting == d.url_setting)
            {
                self.problem_at(
                    item.span().start,
                    &dprefix,
                    format!("the destination `{}` is listed twice", d.label()),
                );
                continue;
            }
            out.push(d);
        }
        if out.is_empty() && !items.is_empty() {
            // Every destination had a problem (already reported).
            return (Vec::new(), condition);
        }
        if !out.is_empty() {
            let has_recipients = matches!(
                t.get("recipients").map(|v| v.get_ref()),
                Some(DeValue::Array(a)) if !a.is_empty()
            );
            for key in ["cc", "bcc"] {
                if let Some(v) = t.get(key)
                    && !has_recipients
                    && matches!(v.get_ref(), DeValue::Array(a) if !a.is_empty())
                {
                    self.problem_at(
                        v.span().start,
                        &join(prefix, key),
                        format!(
                            "`{key}` needs `recipients`: without recipients the report sends no email, only to its destinations"
                        ),
                    );
                }
            }
        }
        (out, condition)
    }

    /// A setting name at `key` (`url_setting`, `signing_secret_setting`): letters, digits, `_`,
    /// `.` and `-`, as App Service setting names are; a URL here is refused, since the point
    /// is to keep the URL out of the file.
    fn setting_name(&mut self, t: &DeTable<'_>, key: &str, prefix: &str) -> Option<String> {
        let (name, s) = self.string(t, key, prefix)?;
        let ok = !name.is_empty()
            && name.len() <= MAX_SETTING_NAME_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if ok {
            return Some(name);
        }
        let message = if name.contains("://") {
            format!(
                "`{key}` names the app setting that holds the URL, not the URL itself: put the URL in a setting (or a Key Vault reference) and name that setting here"
            )
        } else {
            format!(
                "`{key}` must be an app setting name: 1-{MAX_SETTING_NAME_LEN} characters from A-Z, a-z, 0-9, `_`, `.` and `-`"
            )
        };
        self.problem_at(s.start, &join(prefix, key), message);
        None
    }

    /// `attachments = ["csv", "xlsx"]`: default `["csv"]`, each kind once.
    fn attachments(&mut self, t: &DeTable<'_>, prefix: &str) -> Vec<AttachmentFormat> {
        let field = join(prefix, "attachments");
        let Some(value) = t.get("attachments") else {
            return vec![AttachmentFormat::Csv];
        };
        let Some(items) = self.string_list(value, &field) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, (name, at)) in items.into_iter().enumerate() {
            let kind = match name.as_str() {
                "csv" => AttachmentFormat::Csv,
                "xlsx" => AttachmentFormat::Xlsx,
                other => {
                    self.problem_at(
                        at,
                        &format!("{field}[{i}]"),
                        format!("unknown attachment `{other}`: use \"csv\" or \"xlsx\""),
                    );
                    continue;
                }
            };
            if out.contains(&kind) {
                self.problem_at(
                    at,
                    &format!("{field}[{i}]"),
                    format!("`{name}` is listed twice"),
                );
            } else {
                out.push(kind);
            }
        }
        out
    }

    /// A string or an array of strings, each with its offset.
    fn string_list(&mut self, value: &Value<'_>, field: &str) -> Option<Vec<(String, usize)>> {
        match value.get_ref() {
            DeValue::String(s) => Some(vec![(s.to_string(), value.span().start)]),
            DeValue::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push((s.to_string(), item.span().start)),
                        other => {
                            ok = false;
                            self.problem_at(
                                item.span().start,
                                &format!("{field}[{i}]"),
                                format!("expected a string, found {}", other.type_str()),
                            );
                        }
                    }
                }
                ok.then_some(out)
            }
            other => {
                self.problem_at(
                    value.span().start,
                    field,
                    format!(
                        "expected an array of strings such as [\"a\", \"b\"], found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    fn located(&self, offset: usize, field: &str) -> Located {
        Located {
            line: self.line_of(offset),
            field: field.to_string(),
        }
    }

    /// A column named in `columns`, `totals` or `chart` must be one the query can return: its
    /// name must appear in the SQL (a query with `*` may return any name). `handler check`
    /// compares with the prepared query's real columns too.
    fn check_column_named(&mut self, name: &str, query: Option<&str>, offset: usize, field: &str) {
        if let Some(q) = query
            && !selects_star(q)
            && !mentions(q, name)
        {
            self.problem_at(
                offset,
                field,
                format!("unknown column `{name}`: the query returns no column of that name"),
            );
        }
    }

    /// The presentation keys of one section: `columns`, `totals`, `chart`.
    fn display(&mut self, st: &DeTable<'_>, prefix: &str, query: Option<&str>) -> SectionDisplay {
        let mut display = SectionDisplay::default();
        if let Some(value) = st.get("columns") {
            let field = join(prefix, "columns");
            if let Some(table) = self.table(value, &field) {
                for (key, v) in table.iter() {
                    let name: &str = key.get_ref();
                    let cfield = join(&field, name);
                    self.check_column_named(name, query, key.span().start, &cfield);
                    if let Some(c) = self.column_settings(name, v, &cfield) {
                        display.columns.push(c);
                    }
                }
            }
        }
        if let Some(value) = st.get("totals") {
            let field = join(prefix, "totals");
            for (i, (name, at)) in self
                .string_list(value, &field)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                let tfield = format!("{field}[{i}]");
                self.check_column_named(&name, query, at, &tfield);
                self.check_summable(&display, &name, at, &tfield);
                display.totals.push(ColumnRef {
                    at: self.located(at, &tfield),
                    name,
                });
            }
        }
        if let Some(value) = st.get("chart") {
            display.chart = self.chart(value, &join(prefix, "chart"), query, &display);
        }
        display
    }

    /// A column summed or charted must not be formatted as text or a date.
    fn check_summable(&mut self, display: &SectionDisplay, name: &str, at: usize, field: &str) {
        if let Some(fmt) = display.column(name).and_then(|c| c.format)
            && !fmt.is_numeric()
        {
            self.problem_at(
                at,
                field,
                format!(
                    "`{name}` is formatted as {}, not as a number: only numeric columns can be summed or charted",
                    fmt.as_str()
                ),
            );
        }
    }

    fn column_settings(
        &mut self,
        name: &str,
        value: &Value<'_>,
        field: &str,
    ) -> Option<ColumnSettings> {
        let t = self.table(value, field)?;
        let before = self.problems.len();
        self.unknown_keys(t, &COLUMN_KEYS, field);
        let label = self.string(t, "label", field).map(|(l, _)| l);
        let format =
            self.string(t, "format", field)
                .and_then(|(f, s)| match f.parse::<ColumnFormat>() {
                    Ok(f) => Some(f),
                    Err(e) => {
                        self.problem_at(s.start, &join(field, "format"), e);
                        None
                    }
                });
        let currency = self.string(t, "currency", field).and_then(|(c, s)| {
            let parsed = match c.parse::<Currency>() {
                Ok(c) => Some(c),
                Err(e) => {
                    self.problem_at(s.start, &join(field, "currency"), e);
                    None
                }
            };
            if format.is_some() && format != Some(ColumnFormat::Currency) {
                self.problem_at(
                    s.start,
                    &join(field, "currency"),
                    "`currency` applies only to `format = \"currency\"`".into(),
                );
            }
            parsed
        });
        if format == Some(ColumnFormat::Currency) && t.get("currency").is_none() {
            self.problem_at(
                value.span().start,
                &join(field, "currency"),
                "a `currency` column needs `currency = \"EUR\"` (an ISO 4217 code)".into(),
            );
        }
        let scale = match t.get("scale") {
            None => 1.0,
            Some(v) => {
                let n = match v.get_ref() {
                    DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
                    DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                        .ok()
                        .map(|i| i as f64),
                    _ => None,
                };
                match n {
                    Some(n) if n.is_finite() && n != 0.0 => n,
                    _ => {
                        self.problem_at(
                            v.span().start,
                            &join(field, "scale"),
                            "expected a non-zero number such as 0.01 (shown value = stored value × scale)".into(),
                        );
                        1.0
                    }
                }
            }
        };
        let decimals = t
            .get("decimals")
            .and_then(|v| self.integer(v, &join(field, "decimals"), 0, MAX_DECIMALS))
            .map(|d| d as u8);
        if self.problems.len() != before {
            return None;
        }
        Some(ColumnSettings {
            name: name.to_string(),
            label,
            format,
            currency,
            scale,
            decimals,
            at: self.located(value.span().start, field),
        })
    }

    fn chart(
        &mut self,
        value: &Value<'_>,
        field: &str,
        query: Option<&str>,
        display: &SectionDisplay,
    ) -> Option<ChartSpec> {
        let t = self.table(value, field)?;
        let before = self.problems.len();
        self.unknown_keys(t, &CHART_KEYS, field);
        let kind = match self.string(t, "type", field) {
            Some((k, s)) => match k.parse::<ChartKind>() {
                Ok(k) => Some(k),
                Err(e) => {
                    self.problem_at(s.start, &join(field, "type"), e);
                    None
                }
            },
            None => {
                self.missing(value.span(), "type", field);
                None
            }
        };
        let x = match self.string(t, "x", field) {
            Some((x, s)) => {
                self.check_column_named(&x, query, s.start, &join(field, "x"));
                Some(ColumnRef {
                    at: self.located(s.start, &join(field, "x")),
                    name: x,
                })
            }
            None => {
                self.missing(value.span(), "x", field);
                None
            }
        };
        let mut y = Vec::new();
        match t.get("y") {
            Some(v) => {
                let yfield = join(field, "y");
                let list = self.string_list(v, &yfield).unwrap_or_default();
                if list.is_empty() {
                    self.problem_at(
                        v.span().start,
                        &yfield,
                        "name at least one numeric column".into(),
                    );
                }
                for (i, (name, at)) in list.into_iter().enumerate() {
                    let f = format!("{yfield}[{i}]");
                    self.check_column_named(&name, query, at, &f);
                    self.check_summable(display, &name, at, &f);
                    y.push(ColumnRef {
                        at: self.located(at, &f),
                        name,
                    });
                }
            }
            None => self.missing(value.span(), "y", field),
        }
        let title = self.string(t, "title", field).map(|(t, _)| t);
        if self.problems.len() != before {
            return None;
        }
        Some(ChartSpec {
            kind: kind?,
            x: x?,
            y,
            title,
            at: self.located(value.span().start, field),
        })
    }

    fn sections(&mut self, t: &DeTable<'_>, span: Range<usize>, prefix: &str) -> Vec<Section> {
        let field = join(prefix, "sections");
        let Some(value) = t.get("sections") else {
            self.problem_at(
                span.start,
                &field,
                "a report needs at least one `[[reports.sections]]` with a title and a query"
                    .into(),
            );
            return Vec::new();
        };
        let Some(items) = self.array_of_tables(value, &field) else {
            return Vec::new();
        };
        if items.is_empty() {
            self.problem_at(
                value.span().start,
                &field,
                "a report needs at least one `[[reports.sections]]` with a title and a query"
                    .into(),
            );
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let prefix = format!("{field}[{i}]");
            let Some(st) = self.table(item, &prefix) else {
                continue;
            };
            self.unknown_keys(st, &SECTION_KEYS, &prefix);
            let title = match self.string(st, "title", &prefix) {
                Some((title, s)) if title.trim().is_empty() => {
                    self.problem_at(
                        s.start,
                        &join(&prefix, "title"),
                        "the section title must not be empty".into(),
                    );
                    None
                }
                Some((title, _)) => Some(title),
                None => {
                    self.missing(item.span(), "title", &prefix);
                    None
                }
            };
            let query = match self.string(st, "query", &prefix) {
                Some((query, s)) if query.trim().is_empty() => {
                    self.problem_at(
                        s.start,
                        &join(&prefix, "query"),
                        "the query must not be empty".into(),
                    );
                    None
                }
                Some((query, _)) => Some(query),
                None => {
                    self.missing(item.span(), "query", &prefix);
                    None
                }
            };
            let display = self.display(st, &prefix, query.as_deref());
            if let (Some(title), Some(query)) = (title, query) {
                out.push(Section {
                    title,
                    query,
                    display,
                });
            }
        }
        out
    }

    fn missing(&mut self, span: Range<usize>, key: &str, prefix: &str) {
        self.problem_at(
            span.start,
            &join(prefix, key),
            format!("missing required key `{key}`"),
        );
    }

    fn array_of_tables<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        field: &str,
    ) -> Option<&'v DeArray<'i>> {
        match value.get_ref() {
            DeValue::Array(items) => Some(items),
            other => {
                self.problem_at(
                    value.span().start,
                    field,
                    format!(
                        "expected an array of tables (`[[{}]]`), found {}",
                        field_tail(field),
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    fn table<'v, 'i>(&mut self, value: &'v Value<'i>, field: &str) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.problem_at(
                    value.span().start,
                    field,
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// The string at `key`, with its span; a wrong type is a problem, absence is not.
    fn string(
        &mut self,
        t: &DeTable<'_>,
        key: &str,
        prefix: &str,
    ) -> Option<(String, Range<usize>)> {
        let value = t.get(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some((s.to_string(), value.span())),
            other => {
                self.problem_at(
                    value.span().start,
                    &join(prefix, key),
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, t: &DeTable<'_>, key: &str, prefix: &str) -> Option<bool> {
        let value = t.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.problem_at(
                    value.span().start,
                    &join(prefix, key),
                    format!("expected `true` or `false`, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn integer(&mut self, value: &Value<'_>, field: &str, min: i64, max: i64) -> Option<i64> {
        let n = match value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            other => {
                self.problem_at(
                    value.span().start,
                    field,
                    format!("expected an integer, found {}", other.type_str()),
                );
                return None;
            }
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem_at(
                    value.span().start,
                    field,
                    format!("expected an integer from {min} to {max}"),
                );
                None
            }
        }
    }

    /// An optional array of addresses; each element is parsed as a `Mailbox` so
    /// `"Name <a@b>"` works. `None` if absent or if any element is bad.
    fn mailboxes(&mut self, t: &DeTable<'_>, key: &str, prefix: &str) -> Option<Vec<Mailbox>> {
        let value = t.get(key)?;
        let field = join(prefix, key);
        let DeValue::Array(items) = value.get_ref() else {
            self.problem_at(
                value.span().start,
                &field,
                format!(
                    "expected an array of addresses such as [\"Sales <sales@example.com>\"], found {}",
                    value.get_ref().type_str()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_field = format!("{field}[{i}]");
            match item.get_ref() {
                DeValue::String(s) => match s.trim().parse::<Mailbox>() {
                    Ok(mailbox) => out.push(mailbox),
                    Err(e) => {
                        ok = false;
                        self.problem_at(
                            item.span().start,
                            &item_field,
                            format!(
                                "`{s}` is not an email address ({e}); write `a@example.com` \
                                 or `Name <a@example.com>`"
                            ),
                        );
                    }
                },
                other => {
                    ok = false;
                    self.problem_at(
                        item.span().start,
                        &item_field,
                        format!("expected a string, found {}", other.type_str()),
                    );
                }
            }
        }
        ok.then_some(out)
    }
}

/// Whether `sql` uses the `:recipient_key` placeholder (outside literals and comments). SQL
/// the tokenizer refuses is left to the run (and `handler check`) to report.
fn binds_recipient_key(sql: &str) -> bool {
    use crate::data::params::{Dialect, Param, rewrite};
    rewrite(sql, Dialect::Sqlite).is_ok_and(|r| r.binds.contains(&Param::RecipientKey))
}

/// Whether `sql` selects `*` or `t.*` (any column name may come back), as opposed to a `*` in
/// `COUNT(*)` or a multiplication.
fn selects_star(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.match_indices('*').any(|(i, _)| {
        let before = lower[..i].trim_end();
        before.ends_with(',')
            || before.ends_with('.')
            || before.ends_with("select")
            || before.ends_with("distinct")
            || before.ends_with("all")
    })
}

/// Whether `sql` mentions `name` as a whole word (case-insensitive), as a column alias or name
/// must be for the query to return it.
fn mentions(sql: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let hay = sql.to_ascii_lowercase();
    let needle = name.to_ascii_lowercase();
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    hay.match_indices(&needle).any(|(i, _)| {
        !ident(hay[..i].chars().next_back()) && !ident(hay[i + needle.len()..].chars().next())
    })
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `reports[0].sections` -> `reports.sections` for the table-header hint.
fn field_tail(field: &str) -> String {
    field
        .split('.')
        .map(|part| part.split('[').next().unwrap_or(part))
        .collect::<Vec<_>>()
        .join(".")
}

/// The allowed key closest to a misspelt one, if it is close enough to be a likely typo.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(key, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[reports]]
name = "daily-sales"
title = "Daily sales"
description = "Orders and revenue of the previous day"
schedule = "0 0 6 * * *"
time_zone = "Europe/Berlin"
window = "previous_day"
recipients = ["Sales team <sales@example.com>", "boss@example.com"]
cc = ["cc@example.com"]
subject = "{title}: {date}"
skip_if_empty = true
max_rows_in_body = 20
catch_up = "90m"

[[reports.sections]]
title = "Orders by status"
query = "SELECT 1"

[[reports]]
name = "hourly"
schedule = "0 * * * *"
window = "1h"
recipients = ["ops@example.com"]

[[reports.sections]]
title = "Errors"
query = "SELECT 2"
"#;

    fn problems(text: &str) -> Vec<ReportsFileProblem> {
        ReportSet::parse(text, "reports.toml")
            .expect_err("should be invalid")
            .problems
    }

    const PER_RECIPIENT: &str = r#"
[[reports]]
name = "team-tickets"
schedule = "0 0 6 * * *"
recipients_query = "SELECT email, name, team_id AS key FROM team_leads WHERE active"
cc = ["cc@example.com"]
subject = "{title} for {recipient}"

[[reports.sections]]
title = "Tickets"
query = "SELECT id FROM tickets WHERE team_id = :recipient_key AND created_at >= :start"
"#;

    #[test]
    fn a_per_recipient_report_parses() {
        let set = ReportSet::parse(PER_RECIPIENT, "reports.toml").unwrap();
        let r = &set.reports[0];
        assert!(r.recipients.is_empty());
        assert_eq!(
            r.recipients_query.as_deref(),
            Some("SELECT email, name, team_id AS key FROM team_leads WHERE active")
        );
        assert_eq!(r.cc.len(), 1);
        // A static report has none.
        let plain = ReportSet::parse(GOOD, "reports.toml").unwrap();
        assert!(plain.reports[0].recipients_query.is_none());
    }

    #[test]
    fn recipients_query_problems_name_line_and_field() {
        let lines = |text: &str| {
            problems(text)
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        // Both: the error is on `recipients` and names the other line.
        let both = PER_RECIPIENT.replace("cc = [", "recipients = [\"a@example.com\"]\ncc = [");
        let all = lines(&both);
        assert!(
            all.contains("reports.toml:6: reports[0].recipients: a report has either `recipients` or `recipients_query` (line 5), not both"),
            "{all}"
        );
        // No `email` column.
        let all = lines(&PER_RECIPIENT.replace("SELECT email, name,", "SELECT address, name,"));
        assert!(
            all.contains("reports.toml:5: reports[0].recipients_query: the query must return an `email` column"),
            "{all}"
        );
        // :recipient_key in the recipients query itself.
        let all = lines(&PER_RECIPIENT.replace("WHERE active", "WHERE team_id = :recipient_key"));
        assert!(
            all.contains("reports[0].recipients_query: `:recipient_key` is bound in the sections"),
            "{all}"
        );
        // Empty, or not a string.
        let all = lines(&PER_RECIPIENT.replace(
            "\"SELECT email, name, team_id AS key FROM team_leads WHERE active\"",
            "\" \"",
        ));
        assert!(
            all.contains("recipients_query: the query must not be empty"),
            "{all}"
        );
        let all = lines(&PER_RECIPIENT.replace(
            "\"SELECT email, name, team_id AS key FROM team_leads WHERE active\"",
            "[\"x\"]",
        ));
        assert!(
            all.contains("reports[0].recipients_query: expected a string"),
            "{all}"
        );
        // :recipient_key in a static report's section; {recipient} in its subject.
        let all = lines(&PER_RECIPIENT.replace(
            "recipients_query = \"SELECT email, name, team_id AS key FROM team_leads WHERE active\"",
            "recipients = [\"a@example.com\"]",
        ));
        assert!(
            all.contains("reports.toml:11: reports[0].sections[0].query: `:recipient_key` is bound only in a per-recipient report"),
            "{all}"
        );
        assert!(
            all.contains("reports.toml:7: reports[0].subject: `{recipient}`"),
            "{all}"
        );
        // Neither: recipients are still required.
        let all = lines(&PER_RECIPIENT.replace(
            "recipients_query = \"SELECT email, name, team_id AS key FROM team_leads WHERE active\"\n",
            "",
        ));
        assert!(
            all.contains("reports[0].recipients: missing required key"),
            "{all}"
        );
    }

    #[test]
    fn a_valid_file_parses_with_defaults() {
        let set = ReportSet::parse(GOOD, "reports.toml").unwrap();
        assert_eq!(set.reports.len(), 2);
        let daily = set.get("daily-sales").unwrap();
        assert_eq!(daily.title, "Daily sales");
        assert_eq!(daily.time_zone, chrono_tz::Europe::Berlin);
        assert_eq!(daily.window, WindowKind::PreviousDay);
        assert_eq!(daily.recipients.len(), 2);
        assert_eq!(daily.recipients[0].name.as_deref(), Some("Sales team"));
        assert_eq!(daily.recipients[0].email.to_string(), "sales@example.com");
        assert_eq!(daily.cc.len(), 1);
        assert!(daily.bcc.is_empty());
        assert!(daily.skip_if_empty);
        assert_eq!(daily.max_rows_in_body, 20);
        assert_eq!(daily.catch_up, Duration::from_secs(90 * 60));
        assert_eq!(daily.schedule.expression(), "0 0 6 * * *");
        assert_eq!(daily.sections[0].title, "Orders by status");

        let hourly = set.get("hourly").unwrap();
        assert_eq!(hourly.title, "hourly");
        assert_eq!(hourly.time_zone, chrono_tz::UTC);
        assert_eq!(hourly.window, WindowKind::Hours(1));
        assert_eq!(hourly.subject, DEFAULT_SUBJECT);
        assert!(!hourly.skip_if_empty);
        assert_eq!(hourly.max_rows_in_body, DEFAULT_MAX_ROWS_IN_BODY);
        assert_eq!(hourly.catch_up, DEFAULT_CATCH_UP);
        assert!(set.get("nope").is_none());
    }

    const WITH_DESTINATIONS: &str = r#"
[[reports]]
name = "errors-alert"
schedule = "0 */5 * * * *"
condition = "SELECT COUNT(*) > 10 FROM orders WHERE created_at >= :start AND created_at < :end"

[[reports.destinations]]
type = "teams"
url_setting = "TEAMS_WEBHOOK_SALES"

[[reports.destinations]]
type = "webhook"
url_setting = "ORDERS_WEBHOOK_URL"
signing_secret_setting = "ORDERS_WEBHOOK_SECRET"

[[reports.sections]]
title = "Orders"
query = "SELECT id FROM orders"
"#;

    #[test]
    fn destinations_and_condition_parse_and_recipients_become_optional() {
        use super::super::model::{Destination, DestinationKind};
        let set = ReportSet::parse(WITH_DESTINATIONS, "reports.toml").unwrap();
        let r = &set.reports[0];
        assert!(r.recipients.is_empty());
        assert!(r.condition.as_deref().unwrap().contains("COUNT(*) > 10"));
        assert_eq!(
            r.destinations,
            vec![
                Destination {
                    kind: DestinationKind::Teams,
                    url_setting: "TEAMS_WEBHOOK_SALES".into(),
                    signing_secret_setting: None,
                },
                Destination {
                    kind: DestinationKind::Webhook,
                    url_setting: "ORDERS_WEBHOOK_URL".into(),
                    signing_secret_setting: Some("ORDERS_WEBHOOK_SECRET".into()),
                },
            ]
        );
        assert_eq!(r.destinations[0].label(), "teams:TEAMS_WEBHOOK_SALES");
        // Without destinations, recipients stay required.
        let plain = WITH_DESTINATIONS
            .split("[[reports.destinations]]")
            .next()
            .unwrap()
            .to_string()
            + "[[reports.sections]]\ntitle = \"x\"\nquery = \"SELECT 1\"\n";
        let p = problems(&plain);
        assert!(
            p.iter().any(|p| p.field == "reports[0].recipients"),
            "{p:?}"
        );
    }

    #[test]
    fn bad_destinations_name_line_and_field_never_a_url() {
        let text = r#"
[[reports]]
name = "x"
schedule = "0 0 6 * * *"
cc = ["c@example.com"]
condition = "  "

[[reports.destinations]]
type = "email"
url_setting = "A"

[[reports.destinations]]
type = "teams"
url_setting = "https://prod.example/webhook/s3cret-path"

[[reports.destinations]]
type = "slack"
url_setting = "SLACK_URL"
signing_secret_setting = "SLACK_SECRET"

[[reports.destinations]]
type = "webhook"
url = "X"

[[reports.destinations]]
type = "teams"
url_setting = "T"

[[reports.destinations]]
type = "teams"
url_setting = "T"

[[reports.sections]]
title = "s"
query = "SELECT 1"
"#;
        let p = problems(text);
        let at = |field: &str| {
            p.iter()
                .find(|p| p.field == field)
                .unwrap_or_else(|| panic!("no problem at {field}: {p:?}"))
        };
        assert_eq!(at("reports[0].condition").line, 6);
        assert_eq!(at("reports[0].destinations[0].type").line, 9);
        let url = at("reports[0].destinations[1].url_setting");
        assert_eq!(url.line, 14);
        assert!(url.message.contains("not the URL itself"), "{url:?}");
        assert_eq!(
            at("reports[0].destinations[2].signing_secret_setting").line,
            19
        );
        assert!(
            at("reports[0].destinations[3].url")
                .message
                .contains("unknown key")
        );
        assert!(
            at("reports[0].destinations[3].url_setting")
                .message
                .contains("missing")
        );
        assert!(
            at("reports[0].destinations[5]")
                .message
                .contains("listed twice")
        );
        assert_eq!(at("reports[0].cc").line, 5);
        let all = p
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!all.contains("s3cret-path"), "{all}");
        assert!(all.starts_with("reports.toml:"), "{all}");
    }

    const PRESENTED: &str = r#"
[[reports]]
name = "daily-sales"
schedule = "0 0 6 * * *"
recipients = ["a@example.com"]
locale = "de-DE"
attachments = ["csv", "xlsx"]

[[reports.sections]]
title = "Orders by status"
query = "SELECT status, COUNT(*) AS orders, SUM(total_cents) AS revenue_cents FROM orders"
totals = ["orders", "revenue_cents"]
chart = { type = "bar", x = "status", y = ["revenue_cents"], title = "Revenue by status" }

[reports.sections.columns.revenue_cents]
label = "Revenue"
format = "currency"
currency = "EUR"
scale = 0.01
decimals = 2

[reports.sections.columns.status]
label = "Status"
"#;

    #[test]
    fn presentation_settings_parse() {
        use crate::render::chart::ChartKind;
        use crate::render::format::{ColumnFormat, Locale};
        let set = ReportSet::parse(PRESENTED, "reports.toml").unwrap();
        let r = &set.reports[0];
        assert_eq!(r.locale, Locale::DeDe);
        assert_eq!(
            r.attachments,
            vec![AttachmentFormat::Csv, AttachmentFormat::Xlsx]
        );
        let d = &r.sections[0].display;
        let rev = d.column("revenue_cents").unwrap();
        assert_eq!(rev.label.as_deref(), Some("Revenue"));
        assert_eq!(rev.format, Some(ColumnFormat::Currency));
        assert_eq!(rev.currency.unwrap().code(), "EUR");
        assert_eq!(rev.scale, 0.01);
        assert_eq!(rev.decimals, Some(2));
        assert_eq!(rev.at.line, 15);
        assert_eq!(d.label("status"), "Status");
        assert_eq!(d.label("orders"), "orders");
        let totals: Vec<&str> = d.totals.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(totals, ["orders", "revenue_cents"]);
        assert_eq!(d.totals[1].at.field, "reports[0].sections[0].totals[1]");
        let chart = d.chart.as_ref().unwrap();
        assert_eq!(chart.kind, ChartKind::Bar);
        assert_eq!(chart.x.name, "status");
        assert_eq!(chart.y[0].name, "revenue_cents");
        assert_eq!(chart.title.as_deref(), Some("Revenue by status"));
        // Defaults: en-US, CSV only, no settings.
        let plain = ReportSet::parse(GOOD, "reports.toml").unwrap();
        assert_eq!(plain.reports[0].locale, Locale::EnUs);
        assert_eq!(plain.reports[0].attachments, vec![AttachmentFormat::Csv]);
        assert_eq!(plain.reports[0].sections[0].display, Default::default());
    }

    #[test]
    fn bad_presentation_settings_name_line_and_field() {
        let bad = PRESENTED
            .replace("locale = \"de-DE\"", "locale = \"de\"")
            .replace("[\"csv\", \"xlsx\"]", "[\"csv\", \"pdf\"]")
            .replace("totals = [\"orders\", \"revenue_cents\"]", "totals = [\"orders\", \"revenue\", \"status\"]")
            .replace("type = \"bar\", x = \"status\"", "type = \"pie\", x = \"state\"")
            .replace("format = \"currency\"", "format = \"money\"")
            .replace("currency = \"EUR\"", "currency = \"EUE\"")
            .replace("decimals = 2", "decimals = 20\ncolour = 1")
            .replace("[reports.sections.columns.status]\nlabel = \"Status\"", "[reports.sections.columns.status]\nformat = \"text\"\n\n[reports.sections.columns.nope]\nlabel = \"x\"");
        let p = problems(&bad);
        let all = p
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        for want in [
            "reports.toml:6: reports[0].locale: unknown locale `de`",
            "reports.toml:7: reports[0].attachments[1]: unknown attachment `pdf`",
            "reports.toml:12: reports[0].sections[0].totals[1]: unknown column `revenue`",
            "reports.toml:12: reports[0].sections[0].totals[2]: `status` is formatted as text",
            "reports.toml:13: reports[0].sections[0].chart.type: unknown chart type `pie`",
            "reports.toml:13: reports[0].sections[0].chart.x: unknown column `state`",
            "reports.toml:17: reports[0].sections[0].columns.revenue_cents.format: unknown format `money`",
            "reports.toml:18: reports[0].sections[0].columns.revenue_cents.currency: unknown currency `EUE`",
            "reports.toml:20: reports[0].sections[0].columns.revenue_cents.decimals: expected an integer from 0 to 10",
            "reports.toml:21: reports[0].sections[0].columns.revenue_cents.colour: unknown key",
            "reports.toml:26: reports[0].sections[0].columns.nope: unknown column `nope`",
        ] {
            assert!(
                all.lines().any(|l| l.starts_with(want)),
                "missing {want:?} in\n{all}"
            );
        }
        // A currency column needs its currency; a currency needs the currency format.
        let p = problems(&PRESENTED.replace("currency = \"EUR\"\n", ""));
        assert!(p.iter().any(|p| p.field.ends_with("revenue_cents.currency") && p.message.contains("needs")), "{p:?}");
        let p = problems(&PRESENTED.replace("format = \"currency\"", "format = \"decimal\""));
        assert!(
            p.iter().any(|p| p.message.contains("applies only")),
            "{p:?}"
        );
        let p = problems(&PRESENTED.replace("scale = 0.01", "scale = 0"));
        assert!(p.iter().any(|p| p.field.ends_with("scale")), "{p:?}");
        let p = problems(&PRESENTED.replace(", y = [\"revenue_cents\"]", ""));
        assert!(
            p.iter()
                .any(|p| p.field.ends_with("chart.y") && p.message.contains("missing")),
            "{p:?}"
        );
        // `SELECT *` may return any column: no load-time complaint.
        let star = PRESENTED.replace(
            "SELECT status, COUNT(*) AS orders, SUM(total_cents) AS revenue_cents FROM orders",
            "SELECT * FROM summary",
        );
        assert!(ReportSet::parse(&star, "x").is_ok());
    }

    #[test]
    fn column_mentions_are_whole_words() {
        assert!(mentions("SELECT a AS revenue_cents", "revenue_cents"));
        assert!(mentions("SELECT \"Status\" FROM t", "status"));
        assert!(!mentions("SELECT revenue_cents FROM t", "revenue"));
        assert!(!mentions("SELECT x FROM t", ""));
        assert!(selects_star("SELECT * FROM t"));
        assert!(selects_star("select o.*, 1 from o"));
        assert!(!selects_star("SELECT COUNT(*) AS n, a * b AS c FROM t"));
    }

    #[test]
    fn every_problem_is_reported_with_line_and_field() {
        let text = r#"
[[reports]]
name = "Bad Name"
schedule = "0 0 6 * *  * * *"
time_zone = "Mars/Olympus"
window = "weekly"
recipients = ["not an address", "ok@example.com"]
bcc = "x@example.com"
subject = "{title} {when}"
max_rows_in_body = -1
catch_up = "2 hours"
colour = "red"

[[reports.sections]]
title = "S"
qeury = "SELECT 1"
"#;
        let p = problems(text);
        let lines: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        let expect = [
            "reports.toml:3: reports[0].name: `Bad Name` is not a valid name",
            "reports.toml:4: reports[0].schedule: `0 0 6 * *  * * *`: expected 6 fields",
            "reports.toml:5: reports[0].time_zone: unknown time zone `Mars/Olympus`",
            "reports.toml:6: reports[0].window: unknown window `weekly`",
            "reports.toml:7: reports[0].recipients[0]: `not an address` is not an email address",
            "reports.toml:8: reports[0].bcc: expected an array of addresses",
            "reports.toml:9: reports[0].subject: unknown placeholder `{when}`",
            "reports.toml:10: reports[0].max_rows_in_body: expected an integer from 0 to 10000",
            "reports.toml:11: reports[0].catch_up: `2 hours`: expected a duration",
            "reports.toml:12: reports[0].colour: unknown key `colour`",
            "reports.toml:16: reports[0].sections[0].qeury: unknown key `qeury` (did you mean `query`?)",
        ];
        for want in expect {
            assert!(
                lines.iter().any(|l| l.starts_with(want)),
                "missing {want:?} in\n{}",
                lines.join("\n")
            );
        }
        // The missing query is reported too, at the section.
        assert!(
            p.iter()
                .any(|p| p.field == "reports[0].sections[0].query" && p.message.contains("missing")),
            "{lines:?}"
        );
        // Sorted by line.
        assert!(p.windows(2).all(|w| w[0].line <= w[1].line));
    }

    #[test]
    fn duplicates_missing_keys_and_empty_lists() {
        let text = r#"
[[reports]]
name = "a"
schedule = "0 0 6 * * *"
recipients = ["a@example.com"]
[[reports.sections]]
title = "S"
query = "SELECT 1"

[[reports]]
name = "a"
recipients = []
sections = []

[[reports]]
title = "no name"
schedule = "0 0 6 * * *"
recipients = ["a@example.com"]
[[reports.sections]]
query = "  "
"#;
        let p = problems(text);
        let has = |line: usize, field: &str, needle: &str| {
            p.iter()
                .any(|x| x.line == line && x.field == field && x.message.contains(needle))
        };
        let all = p
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            has(
                11,
                "reports[1].name",
                "duplicate report name `a` (first defined on line 3)"
            ),
            "{all}"
        );
        assert!(
            has(12, "reports[1].recipients", "at least one recipient"),
            "{all}"
        );
        assert!(
            has(
                13,
                "reports[1].sections",
                "at least one `[[reports.sections]]`"
            ),
            "{all}"
        );
        assert!(
            p.iter()
                .any(|x| x.field == "reports[1].schedule" && x.message.contains("missing")),
            "{all}"
        );
        assert!(
            p.iter()
                .any(|x| x.field == "reports[2].name" && x.message.contains("missing")),
            "{all}"
        );
        assert!(
            has(20, "reports[2].sections[0].query", "must not be empty"),
            "{all}"
        );
        assert!(p.iter().any(|x| x.field == "reports[2].sections[0].title" && x.message.contains("missing")), "{all}");
    }

    #[test]
    fn syntax_errors_and_empty_files_are_located() {
        let p = problems("[[reports]]\nname = \"a\"\nschedule = 0 0 6\n");
        assert_eq!(p[0].line, 3, "{p:?}");
        assert!(p[0].message.starts_with("TOML syntax"));
        let p = problems("# nothing here\n");
        assert!(p[0].message.contains("no reports defined"));
        let p = problems("reports = 3\n");
        assert_eq!(p[0].field, "reports");
        assert!(p[0].message.contains("array of tables"));
        let p = problems("[[reports]]\nname = \"a\"\nreports_extra = 1\n[other]\n");
        assert!(p.iter().any(|p| p.field == "other" && p.line == 4));
    }

    #[test]
    fn odd_shapes_are_problems_not_panics() {
        let cases: [(&str, &str); 10] = [
            ("reports = [1, 2]", "reports[0]"),
            ("[reports]\nname = \"a\"", "reports"),
            ("[[reports]]\nsections = 3", "reports[0].sections"),
            ("[[reports]]\nsections = [1]", "reports[0].sections[0]"),
            ("[[reports]]\nrecipients = [1]", "reports[0].recipients[0]"),
            (
                "[[reports]]\nmax_rows_in_body = 1.5",
                "reports[0].max_rows_in_body",
            ),
            (
                "[[reports]]\nmax_rows_in_body = 9223372036854775807",
                "reports[0].max_rows_in_body",
            ),
            (
                "[[reports]]\nskip_if_empty = \"yes\"",
                "reports[0].skip_if_empty",
            ),
            ("[[reports]]\nname = 7", "reports[0].name"),
            (
                "[[reports]]\nschedule = \"0 0 6 * * 9\"",
                "reports[0].schedule",
            ),
        ];
        for (text, field) in cases {
            let p = problems(text);
            assert!(
                p.iter().any(|p| p.field == field && p.line >= 1),
                "{text:?}: {p:?}"
            );
        }
        // Inline tables are the same structure as [[...]] headers.
        let inline = r#"reports = [{ name = "a", schedule = "0 0 6 * * *", recipients = ["a@example.com"], sections = [{ title = "S", query = "SELECT 1" }] }]"#;
        assert_eq!(ReportSet::parse(inline, "x").unwrap().reports[0].name, "a");
        // Hex integers are integers too.
        let hex = GOOD.replace("max_rows_in_body = 20", "max_rows_in_body = 0x10");
        assert_eq!(
            ReportSet::parse(&hex, "x").unwrap().reports[0].max_rows_in_body,
            16
        );
    }

    #[test]
    fn load_names_the_path_and_reports_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.toml");
        let err = ReportSet::load(&path).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.to_string().contains("cannot read the reports file"));
        std::fs::write(&path, "[[reports]]\nname = \"x\"\n").unwrap();
        let err = ReportSet::load(&path).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("{}:2: reports[0]", path.display()))
                || shown.starts_with(&format!("{}:1: reports[0]", path.display())),
            "{shown}"
        );
        std::fs::write(&path, GOOD).unwrap();
        assert_eq!(ReportSet::load(&path).unwrap().reports.len(), 2);
    }

    #[test]
    fn names_and_durations() {
        for good in ["a", "daily-sales", "x1-2", &"a".repeat(MAX_NAME_LEN)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "",
            "A",
            "a_b",
            "a b",
            "é",
            "a/b",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "h",
            "2",
            "2w",
            "-1h",
            "1.5h",
            "367d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
