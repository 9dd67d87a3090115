//! The API key check. `API_KEYS` (normally a Key Vault reference) holds the keys in one of two
//! forms, told apart by the first character of the value:
//!
//! - **Comma-separated** (`key1,key2`): every key has full access (all reports, deliveries,
//!   recipient keys). Keys have no names in the value, so logs call them `key-1`, `key-2`, …
//!   by position (a rotation that drops the first key renumbers the rest; use the JSON form for
//!   names that stay put).
//! - **JSON** (the value starts with `[`): a list of entries
//!   `{"name": "partner-a", "key": "…", "reports": ["daily-sales"], "deliveries": false,
//!   "recipient_keys": false}`. `name`, `key` and `reports` are required (`["*"]` is every
//!   report; omitting `reports` is an error, so a forgotten scope never grants everything);
//!   `deliveries` and `recipient_keys` default to `false`; other fields are errors. Names are
//!   1–64 characters from `A-Z a-z 0-9 . _ -` (they appear in logs and metrics). A name may
//!   appear more than once only for a rotation: the entries must then grant the same
//!   permissions. No two entries share a key.
//!
//! Every key has at least [`MIN_KEY_LEN`] characters and is not [`EXAMPLE_PLACEHOLDER`];
//! a value that breaks a rule is refused as a whole ([`KeysError`], naming `API_KEYS`, the
//! entry's position and the field, never a key), and the API then answers 503 as with no keys.
//!
//! Comparison is constant time: the presented key is hashed once with SHA-256 (so lengths do
//! not leak) and its digest compared with `subtle` against every configured key's digest, with
//! no early exit; only then is the matched entry picked. The presented key is never logged;
//! the matched key's [`KeyGrant`] (its name and permissions) is what handlers see.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::scope::{KeyGrant, ReportScope};
use crate::report::ReportSet;
use crate::report::definition::is_valid_name;

/// The key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<SecretString> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            return Some(SecretString::from(v.to_string()));
        }
    }
    let auth = headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, rest) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let key = rest.trim();
    (!key.is_empty()).then(|| SecretString::from(key.to_string()))
}

/// The shortest API key accepted: 32 characters, what `openssl rand -base64 32` gives and more.
/// Shorter keys can be guessed or brute-forced over the API; they are configuration errors.
pub const MIN_KEY_LEN: usize = 32;

/// The placeholder of `local.settings.json.example`. Copying the example without replacing it
/// must not leave a key that anyone who read the repository knows.
pub const EXAMPLE_PLACEHOLDER: &str = "replace-with-a-long-random-key";

/// The longest key name: names appear in every log line and metric about the key's requests.
pub const MAX_KEY_NAME_LEN: usize = 64;

/// The fields of a JSON entry, for the message about an unknown one.
const FIELDS: &str = "name, key, reports, deliveries, recipient_keys";

/// Why an `API_KEYS` value is refused. The text names the setting, the entry's position and
/// the field, never a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// No non-empty entry at all.
    #[error("API_KEYS holds no key")]
    Empty,
    /// A key of the comma-separated form is shorter than [`MIN_KEY_LEN`].
    #[error(
        "API_KEYS: key {position} is shorter than {MIN_KEY_LEN} characters (make one with `openssl rand -base64 32`)"
    )]
    TooShort {
        /// 1-based position among the comma-separated keys.
        position: usize,
    },
    /// A key of the comma-separated form is the example file's placeholder.
    #[error(
        "API_KEYS: key {position} is the placeholder of local.settings.json.example; replace it with a key of your own (`openssl rand -base64 32`)"
    )]
    Placeholder {
        /// 1-based position among the comma-separated keys.
        position: usize,
    },
    /// The value starts like JSON but is not JSON. Only the position is given: the parser's
    /// own message could quote the text around it, which may be a key.
    #[error("API_KEYS is not valid JSON (line {line}, column {column})")]
    NotJson {
        /// 1-based line of the first syntax error.
        line: usize,
        /// 1-based column of the first syntax error.
        column: usize,
    },
    /// JSON, but not a list of entries.
    #[error(
        "API_KEYS: the JSON form is a list of entries, [{{\"name\": …, \"key\": …, \"reports\": […]}}, …]"
    )]
    NotAList,
    /// One entry of the JSON form is wrong.
    #[error("API_KEYS: entry {position}: {problem}")]
    Entry {
        /// 1-based position of the entry in the list.
        position: usize,
        /// What is wrong with it.
        problem: EntryProblem,
    },
    /// Two entries of the JSON form have the same key: the grant would be ambiguous.
    #[error("API_KEYS: entries {first} and {position} have the same key; give each entry its own")]
    DuplicateKey {
        /// 1-based position of the first entry with the key.
        first: usize,
        /// 1-based position of the repeat.
        position: usize,
    },
    /// Two entries share a name but not their permissions.
    #[error(
        "API_KEYS: entries {first} and {position} are both named `{name}` but grant different permissions; a name may repeat only during a rotation, with the same reports, deliveries and recipient_keys"
    )]
    NameConflict {
        /// The shared name (names are not secret, and are checked to be plain before this).
        name: String,
        /// 1-based position of the first entry with the name.
        first: usize,
        /// 1-based position of the conflicting entry.
        position: usize,
    },
}

/// What is wrong with one entry of the JSON form. Each message is fixed text plus field
/// names, so none can carry a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    /// The entry is not a JSON object.
    #[error("not an object with name, key and reports")]
    NotAnObject,
    /// A required field is absent.
    #[error("`{0}` is missing")]
    Missing(&'static str),
    /// A field has the wrong JSON type.
    #[error("`{field}` must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A field that the form does not have (a typo would otherwise be silently ignored). Its
    /// name is shown only when it looks like a field name, never a value.
    #[error("unknown field{} (the fields are {FIELDS})", .0.as_ref().map(|f| format!(" `{f}`")).unwrap_or_default())]
    UnknownField(Option<String>),
    /// `name` has characters outside `A-Z a-z 0-9 . _ -` or is too long.
    #[error(
        "`name` must be 1 to {MAX_KEY_NAME_LEN} characters from A-Z, a-z, 0-9, `.`, `_` and `-`"
    )]
    BadName,
    /// `key` is shorter than [`MIN_KEY_LEN`].
    #[error(
        "`key` is shorter than {MIN_KEY_LEN} characters (make one with `openssl rand -base64 32`)"
    )]
    KeyTooShort,
    /// `key` is the example file's placeholder.
    #[error(
        "`key` is the placeholder of local.settings.json.example; replace it with a key of your own (`openssl rand -base64 32`)"
    )]
    KeyPlaceholder,
    /// `reports` is an empty list.
    #[error("`reports` is empty; list report names, or [\"*\"] for every report")]
    NoReports,
    /// An element of `reports` is not a report name.
    #[error("`reports[{index}]` is not a report name (a-z, 0-9 and `-`) or \"*\"")]
    BadReportName {
        /// 0-based index in the `reports` list.
        index: usize,
    },
    /// `"*"` together with report names: ambiguous, probably a leftover.
    #[error("`reports`: \"*\" (every report) must be the only element")]
    WildcardNotAlone,
    /// A name or report name is one of the keys: a key pasted into the wrong field, which
    /// would then be printed wherever names are.
    #[error("`{0}` holds a key; keys belong in `key` only")]
    KeyInField(&'static str),
}

/// Which form an `API_KEYS` value was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysForm {
    /// `key1,key2`: unnamed keys with full access, named `key-N` by position.
    CommaSeparated,
    /// A JSON list of named, scoped entries.
    Json,
}

/// One configured key: the digest it is compared by, and what it grants.
struct KeyEntry {
    digest: [u8; 32],
    grant: Arc<KeyGrant>,
}

/// The parsed, validated `API_KEYS` value: each key's SHA-256 digest and grant. Parsed once
/// per value (see [`KeyCache`]), so a request costs one hash of the presented key and one
/// comparison per configured key. `Debug` shows names only.
pub struct ApiKeys {
    form: KeysForm,
    entries: Vec<KeyEntry>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("form", &self.form)
            .field("names", &self.names())
            .finish()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether a key name is safe to print everywhere: 1 to [`MAX_KEY_NAME_LEN`] characters from
/// `A-Z a-z 0-9 . _ -`.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_KEY_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ApiKeys {
    /// Parses and validates an `API_KEYS` value in either form (see the module doc). Run at
    /// start-up on plain values, by `handler check`, and on every new value resolved from Key
    /// Vault, so a weak key or a malformed scope is never honoured, wherever it came from.
    pub fn parse(value: &SecretString) -> Result<Self, KeysError> {
        // A byte order mark (a JSON file uploaded to Key Vault as is) must not turn a JSON
        // document into comma-separated "keys".
        let text = value
            .expose_secret()
            .trim_start()
            .trim_start_matches('\u{feff}')
            .trim_start();
        if text.starts_with('[') || text.starts_with('{') {
            Self::parse_json(text)
        } else {
            Self::parse_list(text)
        }
    }

    fn parse_list(text: &str) -> Result<Self, KeysError> {
        let mut entries = Vec::new();
        for (i, key) in text
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
        {
            let position = i + 1;
            if key == EXAMPLE_PLACEHOLDER {
                return Err(KeysError::Placeholder { position });
            }
            if key.chars().count() < MIN_KEY_LEN {
                return Err(KeysError::TooShort { position });
            }
            entries.push(KeyEntry {
                digest: digest(key),
                grant: Arc::new(KeyGrant::full_access(format!("key-{position}"))),
            });
        }
        if entries.is_empty() {
            return Err(KeysError::Empty);
        }
        Ok(Self {
            form: KeysForm::CommaSeparated,
            entries,
        })
    }

    fn parse_json(text: &str) -> Result<Self, KeysError> {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| KeysError::NotJson {
                line: e.line(),
                column: e.column(),
            })?;
        let serde_json::Value::Array(items) = doc else {
            return Err(KeysError::NotAList);
        };
        if items.is_empty() {
            return Err(KeysError::Empty);
        }
        // Every key first, so that a key pasted into a name or a report list is caught before
        // any message could print it.
        let keys: Vec<Option<&str>> = items
            .iter()
            .map(|item| item.get("key").and_then(|k| k.as_str()).map(str::trim))
            .collect();
        let is_a_key = |s: &str| keys.iter().flatten().any(|k| *k == s);
        let mut entries: Vec<KeyEntry> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let position = i + 1;
            let err = |problem| KeysError::Entry { position, problem };
            let entry = parse_entry(item, &is_a_key).map_err(err)?;
            let (key, grant) = entry;
            let d = digest(key);
            for (j, other) in entries.iter().enumerate() {
                // Configuration time, not request time: no need for constant time here.
                if other.digest == d {
                    return Err(KeysError::DuplicateKey {
                        first: j + 1,
                        position,
                    });
                }
                if other.grant.name() == grant.name() && !other.grant.same_permissions(&grant) {
                    return Err(KeysError::NameConflict {
                        name: grant.name().to_string(),
                        first: j + 1,
                        position,
                    });
                }
            }
            entries.push(KeyEntry {
                digest: d,
                grant: Arc::new(grant),
            });
        }
        Ok(Self {
            form: KeysForm::Json,
            entries,
        })
    }

    /// The grant of the presented key, or `None` when it is none of the configured keys.
    /// Constant time over all keys: one hash, then a comparison with every digest, no early
    /// exit; the match is picked after the loop.
    pub fn authenticate(&self, presented: &SecretString) -> Option<Arc<KeyGrant>> {
        let p: [u8; 32] = digest(presented.expose_secret());
        let mut found = Choice::from(0u8);
        let mut index = 0u64;
        for (i, entry) in self.entries.iter().enumerate() {
            let hit = p.ct_eq(&entry.digest);
            index.conditional_assign(&(i as u64), hit & !found);
            found |= hit;
        }
        if bool::from(found) {
            usize::try_from(index)
                .ok()
                .and_then(|i| self.entries.get(i))
                .map(|e| e.grant.clone())
        } else {
            None
        }
    }

    /// The form the value was written in.
    pub fn form(&self) -> KeysForm {
        self.form
    }

    /// How many keys are configured (both keys of a rotation count).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is configured (never true for a parsed value; for completeness).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The distinct key names, in the order of the value.
    pub fn names(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.entries
            .iter()
            .map(|e| e.grant.name())
            .filter(|n| seen.insert(*n))
            .collect()
    }

    /// The distinct grants, in the order of the value, with how many keys each has (2 during
    /// a rotation).
    pub fn grants(&self) -> Vec<(Arc<KeyGrant>, usize)> {
        let mut out: Vec<(Arc<KeyGrant>, usize)> = Vec::new();
        for e in &self.entries {
            match out.iter_mut().find(|(g, _)| g.name() == e.grant.name()) {
                Some((_, n)) => *n += 1,
                None => out.push((e.grant.clone(), 1)),
            }
        }
        out
    }

    /// One line for `handler check` and the log: the form, the names and what each may see;
    /// never a key.
    pub fn describe(&self) -> String {
        let n = self.entries.len();
        let keys = if n == 1 { "key" } else { "keys" };
        match self.form {
            KeysForm::CommaSeparated => format!(
                "{n} {keys}, comma-separated, each with full access ({})",
                self.names().join(", ")
            ),
            KeysForm::Json => {
                let parts: Vec<String> = self
                    .grants()
                    .iter()
                    .map(|(g, count)| {
                        let rotation = if *count > 1 {
                            format!(", {count} keys in rotation")
                        } else {
                            String::new()
                        };
                        format!("{} ({}{rotation})", g.name(), g.describe())
                    })
                    .collect();
                format!("{n} named {keys}: {}", parts.join("; "))
            }
        }
    }

    /// `(key name, report name)` for each scoped report name that `reports` does not define:
    /// such a scope grants nothing (yet), which is worth a warning but not a failure, so that
    /// removing a report never takes the API down.
    pub fn unknown_reports(&self, reports: &ReportSet) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (g, _) in self.grants() {
            if let ReportScope::Only(names) = g.reports() {
                for r in names {
                    if reports.get(r).is_none() {
                        out.push((g.name().to_string(), r.clone()));
                    }
                }
            }
        }
        out
    }
}

/// One JSON entry: its key (trimmed) and grant, or what is wrong with it.
fn parse_entry<'a>(
    item: &'a serde_json::Value,
    is_a_key: &dyn Fn(&str) -> bool,
) -> Result<(&'a str, KeyGrant), EntryProblem> {
    let serde_json::Value::Object(fields) = item else {
        return Err(EntryProblem::NotAnObject);
    };
    for field in fields.keys() {
        if !matches!(
            field.as_str(),
            "name" | "key" | "reports" | "deliveries" | "recipient_keys"
        ) {
            // Shown only if it is short and plain: a key is at least 32 characters.
            let shown = (field.len() <= 24
                && field.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_'))
            .then(|| field.clone());
            return Err(EntryProblem::UnknownField(shown));
        }
    }
    let string = |field: &'static str| -> Result<&'a str, EntryProblem> {
        match fields.get(field) {
            None => Err(EntryProblem::Missing(field)),
            Some(serde_json::Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(EntryProblem::WrongType {
                field,
                expected: "a string",
            }),
        }
    };
    let flag = |field: &'static str| -> Result<bool, EntryProblem> {
        match fields.get(field) {
            None => Ok(false),
            Some(serde_json::Value::Bool(b)) => Ok(*b),
            Some(_) => Err(EntryProblem::WrongType {
                field,
                expected: "true or false",
            }),
        }
    };
    let key = string("key")?.trim();
    let name = string("name")?;
    if is_a_key(name) {
        return Err(EntryProblem::KeyInField("name"));
    }
    if !is_valid_key_name(name) {
        return Err(EntryProblem::BadName);
    }
    if key == EXAMPLE_PLACEHOLDER {
        return Err(EntryProblem::KeyPlaceholder);
    }
    if key.chars().count() < MIN_KEY_LEN {
        return Err(EntryProblem::KeyTooShort);
    }
    let list = match fields.get("reports") {
        None => return Err(EntryProblem::Missing("reports")),
        Some(serde_json::Value::Array(list)) => list,
        Some(_) => {
            return Err(EntryProblem::WrongType {
                field: "reports",
                expected: "a list of report names, or [\"*\"]",
            });
        }
    };
    if list.is_empty() {
        return Err(EntryProblem::NoReports);
    }
    let mut names = BTreeSet::new();
    let mut wildcard = false;
    for (index, r) in list.iter().enumerate() {
        let Some(r) = r.as_str() else {
            return Err(EntryProblem::BadReportName { index });
        };
        if is_a_key(r) {
            return Err(EntryProblem::KeyInField("reports"));
        }
        if r == "*" {
            wildcard = true;
        } else if is_valid_name(r) {
            names.insert(r.to_string());
        } else {
            return Err(EntryProblem::BadReportName { index });
        }
    }
    let reports = match (wildcard, names.is_empty()) {
        (true, true) => ReportScope::All,
        (true, false) => return Err(EntryProblem::WildcardNotAlone),
        (false, _) => ReportScope::Only(names),
    };
    let grant = KeyGrant::new(name, reports, flag("deliveries")?, flag("recipient_keys")?);
    Ok((key, grant))
}

/// Checks an `API_KEYS` value without keeping it: [`ApiKeys::parse`] for callers that only
/// need the verdict (`handler check`, start-up, the health check).
pub fn validate_keys(valid: &SecretString) -> Result<(), KeysError> {
    ApiKeys::parse(valid).map(|_| ())
}

/// The parse of the last `API_KEYS` value seen, so that requests do not re-parse the value
/// (JSON, one hash per key) on every call: the value is resolved from the secret layer per
/// request (which caches and rotates it), and only a changed value is parsed again. The
/// comparison is by SHA-256 of the whole value; nothing of the value itself is kept.
#[derive(Default)]
pub struct KeyCache {
    last: Mutex<Option<([u8; 32], ParsedKeys)>>,
}

/// The verdict on one `API_KEYS` value, shared by the requests that see that value.
pub type ParsedKeys = Arc<Result<ApiKeys, KeysError>>;

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCache")
    }
}

impl KeyCache {
    /// The parsed keys of `value`, and whether they were parsed just now (the first request,
    /// or the first after a rotation), so the caller can log the new key names once.
    pub fn get(&self, value: &SecretString) -> (ParsedKeys, bool) {
        let d = digest(value.expose_secret());
        // Parsed under the lock (microseconds), so a new value is reported fresh exactly once
        // even when many requests see it at the same moment.
        let Ok(mut last) = self.last.lock() else {
            return (Arc::new(ApiKeys::parse(value)), false);
        };
        if let Some((seen, parsed)) = last.as_ref()
            && *seen == d
        {
            return (parsed.clone(), false);
        }
        let parsed = Arc::new(ApiKeys::parse(value));
        *last = Some((d, parsed.clone()));
        (parsed, true)
    }
}

/// Logs a newly read `API_KEYS` value (at the first request, and after each rotation): the
/// key names and their permissions, never a key, and a warning for each scoped report that the
/// reports file does not define (such a scope grants nothing until the report exists).
pub fn log_new_keys(keys: &ApiKeys, reports: Option<&ReportSet>) {
    tracing::info!(api.keys = keys.len(), "API_KEYS read: {}", keys.describe());
    for (name, report) in reports.map(|r| keys.unknown_reports(r)).unwrap_or_default() {
        tracing::warn!(
            api.key_name = %name,
            report = %report,
            "API_KEYS: key `{name}` is scoped to report `{report}`, which the reports file does not define"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_string())
    }

    const A: &str = "partner-a-key-0123456789abcdef-0123";
    const B: &str = "partner-b-key-0123456789abcdef-4567";
    const C: &str = "operations-key-0123456789abcdef-89ab";

    fn json(v: serde_json::Value) -> SecretString {
        s(&v.to_string())
    }

    /// Parses, expecting an error, and checks that no key of the document is in its text.
    fn refused(v: serde_json::Value) -> KeysError {
        let text = v.to_string();
        let e = ApiKeys::parse(&s(&text)).expect_err("refused");
        let msg = e.to_string();
        assert!(msg.starts_with("API_KEYS"), "{msg}");
        for k in [A, B, C, EXAMPLE_PLACEHOLDER, "short-secret-value"] {
            assert!(!msg.contains(k), "a key in `{msg}`");
        }
        e
    }

    #[test]
    fn both_header_forms() {
        let mut h = HeaderMap::new();
        assert!(presented_key(&h).is_none());
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(presented_key(&h).unwrap().expose_secret(), "abc");
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert!(presented_key(&h).is_none());
        h.insert("x-api-key", HeaderValue::from_static(" k2 "));
        assert_eq!(presented_key(&h).unwrap().expose_secret(), "k2");
    }

    #[test]
    fn weak_keys_are_refused_without_echoing_them() {
        let long = "k".repeat(MIN_KEY_LEN);
        assert_eq!(validate_keys(&s(&long)), Ok(()));
        assert_eq!(validate_keys(&s(&format!("{long}, {long}x,"))), Ok(()));
        assert_eq!(validate_keys(&s(" , ")), Err(KeysError::Empty));
        assert_eq!(validate_keys(&s("")), Err(KeysError::Empty));
        let short = "short-secret-value";
        let e = validate_keys(&s(&format!("{long},{short}"))).unwrap_err();
        assert_eq!(e, KeysError::TooShort { position: 2 });
        assert!(e.to_string().contains("API_KEYS"));
        assert!(!e.to_string().contains(short));
        let e = validate_keys(&s(EXAMPLE_PLACEHOLDER)).unwrap_err();
        assert_eq!(e, KeysError::Placeholder { position: 1 });
        assert!(!e.to_string().contains(EXAMPLE_PLACEHOLDER));
        // 31 characters is one too few, also for multi-byte characters.
        assert!(validate_keys(&s(&"é".repeat(MIN_KEY_LEN - 1))).is_err());
        assert!(validate_keys(&s(&"é".repeat(MIN_KEY_LEN))).is_ok());
    }

    #[test]
    fn the_comma_form_is_full_access_named_by_position() {
        let keys = ApiKeys::parse(&s(&format!(" {A}, {B},"))).unwrap();
        assert_eq!(keys.form(), KeysForm::CommaSeparated);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.names(), ["key-1", "key-2"]);
        let g = keys.authenticate(&s(B)).unwrap();
        assert_eq!(g.name(), "key-2");
        assert_eq!(*g, KeyGrant::full_access("key-2"));
        assert_eq!(keys.authenticate(&s(A)).unwrap().name(), "key-1");
        assert_eq!(
            keys.describe(),
            "2 keys, comma-separated, each with full access (key-1, key-2)"
        );
        assert!(!format!("{keys:?}").contains(A));
    }

    #[test]
    fn rotation_overlap_and_no_empty_match() {
        let keys = ApiKeys::parse(&s(&format!("{A}, {B},"))).unwrap();
        assert!(keys.authenticate(&s(A)).is_some());
        assert!(keys.authenticate(&s(B)).is_some());
        assert!(keys.authenticate(&s(&A[..A.len() - 1])).is_none());
        assert!(keys.authenticate(&s(&format!("{A}x"))).is_none());
        assert!(keys.authenticate(&s("")).is_none());
        assert!(keys.authenticate(&s(&format!("{A}, {B}"))).is_none());
        assert!(keys.authenticate(&s(&format!("{A},{B}"))).is_none());
    }

    #[test]
    fn the_json_form_names_and_scopes_each_key() {
        let keys = ApiKeys::parse(&json(serde_json::json!([
            {"name": "partner-a", "key": A, "reports": ["daily-sales"]},
            {"name": "partner-b", "key": B, "reports": ["daily-sales", "weekly-sales"],
             "deliveries": true, "recipient_keys": false},
            {"name": "ops", "key": format!("  {C} "), "reports": ["*"], "deliveries": true,
             "recipient_keys": true},
        ])))
        .unwrap();
        assert_eq!(keys.form(), KeysForm::Json);
        assert_eq!(keys.names(), ["partner-a", "partner-b", "ops"]);
        let a = keys.authenticate(&s(A)).unwrap();
        assert_eq!(a.name(), "partner-a");
        assert!(a.can_see_report("daily-sales") && !a.can_see_report("weekly-sales"));
        // Omitted flags are false.
        assert!(!a.can_list_deliveries() && !a.can_use_recipient_key());
        let b = keys.authenticate(&s(B)).unwrap();
        assert!(b.can_see_report("weekly-sales") && b.can_list_deliveries());
        assert!(!b.can_use_recipient_key());
        // The key is trimmed, as in the comma form; "*" is every report.
        let c = keys.authenticate(&s(C)).unwrap();
        assert_eq!(c.name(), "ops");
        assert!(c.sees_all_reports() && c.can_list_deliveries() && c.can_use_recipient_key());
        assert!(keys.authenticate(&s("partner-a")).is_none());
        let d = keys.describe();
        assert_eq!(
            d,
            "3 named keys: partner-a (1 report: daily-sales); partner-b (2 reports: daily-sales, weekly-sales; deliveries); ops (all reports; deliveries; recipient keys)"
        );
        for k in [A, B, C] {
            assert!(!d.contains(k) && !format!("{keys:?}").contains(k));
        }
    }

    #[test]
    fn a_name_repeats_only_for_a_rotation_with_equal_permissions() {
        let keys = ApiKeys::parse(&json(serde_json::json!([
            {"name": "partner-a", "key": A, "reports": ["daily-sales"]},
            {"name": "partner-a", "key": B, "reports": ["daily-sales"], "deliveries": false},
        ])))
        .unwrap();
        assert_eq!(keys.authenticate(&s(A)).unwrap().name(), "partner-a");
        assert_eq!(keys.authenticate(&s(B)).unwrap().name(), "partner-a");
        assert_eq!(keys.names(), ["partner-a"]);
        assert_eq!(
            keys.describe(),
            "2 named keys: partner-a (1 report: daily-sales, 2 keys in rotation)"
        );
        let e = refused(serde_json::json!([
            {"name": "partner-a", "key": A, "reports": ["daily-sales"]},
            {"name": "ops", "key": C, "reports": ["*"]},
            {"name": "partner-a", "key": B, "reports": ["daily-sales"], "deliveries": true},
        ]));
        assert_eq!(
            e,
            KeysError::NameConflict {
                name: "partner-a".into(),
                first: 1,
                position: 3
            }
        );
        assert!(e.to_string().contains("`partner-a`"), "{e}");
        // The same key twice is ambiguous, whatever the names.
        let e = refused(serde_json::json!([
            {"name": "a", "key": A, "reports": ["*"]},
            {"name": "b", "key": format!("{A} "), "reports": ["*"]},
        ]));
        assert_eq!(
            e,
            KeysError::DuplicateKey {
                first: 1,
                position: 2
            }
        );
    }

    #[test]
    fn malformed_documents_name_the_entry_and_field_never_a_key() {
        use EntryProblem as P;
        let entry = |position, problem| KeysError::Entry { position, problem };
        let ok = serde_json::json!({"name": "ok", "key": C, "reports": ["*"]});
        let cases: Vec<(serde_json::Value, KeysError)> = vec![
            (serde_json::json!([]), KeysError::Empty),
            (
                serde_json::json!({"name": "a", "key": A, "reports": ["*"]}),
                KeysError::NotAList,
            ),
            (
                serde_json::json!([ok, "just-a-string"]),
                entry(2, P::NotAnObject),
            ),
            (
                serde_json::json!([{"key": A, "reports": ["*"]}]),
                entry(1, P::Missing("name")),
            ),
            (
                serde_json::json!([{"name": "a", "reports": ["*"]}]),
                entry(1, P::Missing("key")),
            ),
            (
                serde_json::json!([ok, {"name": "a", "key": A}]),
                entry(2, P::Missing("reports")),
            ),
            (
                serde_json::json!([{"name": 7, "key": A, "reports": ["*"]}]),
                entry(
                    1,
                    P::WrongType {
                        field: "name",
                        expected: "a string",
                    },
                ),
            ),
            (
                serde_json::json!([{"name": "a", "key": 12345, "reports": ["*"]}]),
                entry(
                    1,
                    P::WrongType {
                        field: "key",
                        expected: "a string",
                    },
                ),
            ),
            (
                serde_json::json!([{"name": "a", "key": A, "reports": "daily-sales"}]),
                entry(
                    1,
                    P::WrongType {
                        field: "reports",
                        expected: "a list of report names, or [\"*\"]",
                    },
                ),
            ),
            (
                serde_json::json!([{"name": "a", "key": A, "reports": ["*"], "deliveries": "yes"}]),
                entry(
                    1,
                    P::WrongType {
                        field: "deliveries",
                        expected: "true or false",
                    },
                ),
            ),
            (
                serde_json::json!([{"name": "a", "key": A, "reports": ["*"], "recipient_keys": 1}]),
                entry(
                    1,
                    P::WrongType {
                        field: "recipient_keys",
                        expected: "true or false",
                    },
                ),
            ),
            (
                serde_json::json!([{"name": "a", "key": A, "reports": ["*"], "delivery": true}]),
                entry(1, P::UnknownField(Some("delivery".into()))),
            ),
            // A key used as a field name is never shown.
            (
                serde_json::json!([{"name": "a", "key": A, "reports": ["*"], B: true}]),
                entry(1, P::UnknownField(None)),
            ),
            (
                serde_json::json!([{"name": "partner a", "key": A, "reports": ["*"]}]),
                entry(1, P::BadName),
            ),
            (
                serde_json::json!([{"name": "", "key": A, "reports": ["*"]}]),
                entry(1, P::BadName),
            ),
            (
                serde_json::json!([{"name": "x".repeat(65), "key": A, "reports": ["*"]}]),
                entry(1, P::BadName),
            ),
            (
                serde_json::json!([ok, {"name": "a", "key": "short-secret-value", "reports": ["*"]}]),
                entry(2, P::KeyTooShort),
            ),
            (
                serde_json::json!([{"name": "a", "key": EXAMPLE_PLACEHOLDER, "reports": ["*"]}]),
                entry(1, P::KeyPlaceholder),
            ),
            (
                serde_json::json!([{"name": "a", "key": A, "reports": []}]),
                entry(1, P::NoReports),
            ),
            (
                serde_json::json!([{"name": "a", "key": A, "reports": ["daily-sales", "Daily Sales"]}]),
                entry(1, P::BadReportName { index: 1 }),
            ),
            (
                serde_json::json!([{"name": "a", "key": A, "reports": [3]}]),
                entry(1, P::BadReportName { index: 0 }),
            ),
            (
                serde_json::json!([{"name": "a", "key": A, "reports": ["*", "daily-sales"]}]),
                entry(1, P::WildcardNotAlone),
            ),
            // Keys pasted into the wrong field are caught before anything prints them.
            (
                serde_json::json!([{"name": "a", "key": A, "reports": ["*"]}, {"name": A, "key": B, "reports": ["*"]}]),
                entry(2, P::KeyInField("name")),
            ),
            (
                serde_json::json!([{"name": "a", "key": A, "reports": ["*"]}, {"name": "b", "key": B, "reports": [A]}]),
                entry(2, P::KeyInField("reports")),
            ),
        ];
        for (doc, expected) in cases {
            assert_eq!(refused(doc.clone()), expected, "{doc}");
        }
        // Messages name the entry and the field.
        let e = refused(
            serde_json::json!([ok, {"name": "a", "key": A, "reports": ["*"], "deliveries": "yes"}]),
        );
        assert_eq!(
            e.to_string(),
            "API_KEYS: entry 2: `deliveries` must be true or false"
        );
    }

    #[test]
    fn broken_json_gives_only_a_position() {
        for text in [
            format!("[{{\"name\": \"a\", \"key\": \"{A}\" \"reports\": [\"*\"]}}]"),
            format!("[{{\"name\": \"a\", \"key\": \"{A}"),
            format!("{{\"key\": {A}}}"),
            format!("[\"{A}\",]"),
        ] {
            let e = ApiKeys::parse(&s(&text)).unwrap_err();
            assert!(matches!(e, KeysError::NotJson { line: 1, .. }), "{e:?}");
            assert!(!e.to_string().contains(A), "{e}");
            assert!(!e.to_string().contains(&A[..8]), "{e}");
        }
        // With a byte order mark and whitespace in front, it is still JSON.
        let bom =
            format!("\u{feff}\n[{{\"name\": \"a\", \"key\": \"{A}\", \"reports\": [\"*\"]}}]\n");
        let keys = ApiKeys::parse(&s(&bom)).unwrap();
        assert_eq!(keys.form(), KeysForm::Json);
        assert_eq!(keys.authenticate(&s(A)).unwrap().name(), "a");
        // A leading `{` is JSON too, never read as comma-separated keys.
        let obj = format!("{{\"name\": \"a\", \"key\": \"{A}\", \"reports\": [\"*\"]}}");
        assert_eq!(ApiKeys::parse(&s(&obj)).unwrap_err(), KeysError::NotAList);
    }

    /// Every prefix of a valid document, and the document with each byte replaced: never a
    /// panic, and no error text quotes a key (or 8 characters of one).
    #[test]
    fn damaged_documents_never_panic_or_echo_a_key() {
        let doc = serde_json::json!([
            {"name": "partner-a", "key": A, "reports": ["daily-sales"], "deliveries": false},
            {"name": "ops", "key": B, "reports": ["*"], "recipient_keys": true},
        ])
        .to_string();
        let check = |text: &str| {
            if let Err(e) = ApiKeys::parse(&s(text)) {
                let msg = e.to_string();
                for k in [A, B] {
                    for w in k.as_bytes().windows(8) {
                        let w = std::str::from_utf8(w).unwrap();
                        // Short shared fragments of field names are not key material.
                        if !["partner-", "artner-a", "rtner-a-"].contains(&w) {
                            assert!(!msg.contains(w), "`{w}` in `{msg}`");
                        }
                    }
                }
            }
        };
        for end in 0..=doc.len() {
            check(&doc[..end]);
        }
        for (i, replacement) in
            (0..doc.len()).flat_map(|i| [(i, "\""), (i, ","), (i, "]"), (i, "x")])
        {
            let mut damaged = doc.clone();
            damaged.replace_range(i..=i, replacement);
            check(&damaged);
        }
    }

    #[test]
    fn unknown_report_names_are_listed_not_refused() {
        let keys = ApiKeys::parse(&json(serde_json::json!([
            {"name": "partner-a", "key": A, "reports": ["daily-sales", "no-such-report"]},
            {"name": "ops", "key": B, "reports": ["*"]},
        ])))
        .unwrap();
        let set = ReportSet { reports: vec![] };
        assert_eq!(
            keys.unknown_reports(&set),
            [
                ("partner-a".to_string(), "daily-sales".to_string()),
                ("partner-a".to_string(), "no-such-report".to_string()),
            ]
        );
    }

    #[test]
    fn the_cache_parses_each_value_once() {
        let cache = KeyCache::default();
        let v1 = s(A);
        let (k, fresh) = cache.get(&v1);
        assert!(fresh && k.is_ok());
        let (k2, fresh) = cache.get(&v1);
        assert!(!fresh);
        assert!(Arc::ptr_eq(&k, &k2));
        let (k3, fresh) = cache.get(&s(&format!("{A},{B}")));
        assert!(fresh);
        assert_eq!(k3.as_ref().as_ref().unwrap().len(), 2);
        let (bad, fresh) = cache.get(&s("short"));
        assert!(fresh && bad.is_err());
        assert!(!format!("{cache:?}").contains(A));
    }
}
