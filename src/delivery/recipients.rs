//! The recipients of a per-recipient report (`recipients_query`): read from the query's rows at
//! delivery time, each named by its own ledger [`Target`], and shown masked in logs.
//!
//! # How a recipient is named in the ledger
//!
//! A recipient's row is `email:<address>` when its key is the address (no `key` column), else
//! `email:<address> key=<key>`: a person who leads two teams appears twice with two keys, and
//! gets two emails, each with one team's rows. A row whose `email` is not an address is still
//! recorded (failed for good, with the reason) under `email:invalid-<hash>`, a stable name
//! that carries no unvalidated text into the ledger key.
//!
//! # Logs
//!
//! Addresses are personal data: the ledger (and `handler deliveries`) names them, the logs do
//! not. Log lines and the tick's failure text name a recipient target by [`masked`] text.

use std::str::FromStr as _;

use lettre::Address;
use lettre::message::Mailbox;
use sha2::{Digest, Sha256};

use super::ledger::Target;
use crate::data::{RecipientKey, Table, Value};

/// The target kind of a recipient's row.
pub const KIND: &str = "email";

/// The longest key kept as written in a target name; a longer one (or one with control
/// characters) is named by its hash.
const MAX_KEY_IN_TARGET: usize = 128;

/// One row of a `recipients_query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The recipient's ledger row.
    pub target: Target,
    /// The mailbox (display name and address), or why the row's `email` is not an address.
    pub mailbox: Result<Mailbox, String>,
    /// Bound to `:recipient_key` in the sections.
    pub key: RecipientKey,
}

impl Recipient {
    /// What `{recipient}` in the subject becomes: the name, else the address.
    pub fn shown(&self) -> String {
        match &self.mailbox {
            Ok(m) => m.name.clone().unwrap_or_else(|| m.email.to_string()),
            Err(_) => String::new(),
        }
    }

    /// Whether this recipient's address is `address` (case-insensitive, as mail systems
    /// compare domains and practically every mailbox).
    pub fn has_address(&self, address: &Address) -> bool {
        let wanted: &str = address.as_ref();
        self.mailbox.as_ref().is_ok_and(|m| {
            let mine: &str = m.email.as_ref();
            mine.eq_ignore_ascii_case(wanted)
        })
    }
}

/// The recipients in a `recipients_query` result, in query order, each target once (a repeated
/// row is dropped: it would name the same email). Fails only when the result has no `email`
/// column; a bad row becomes a recipient whose `mailbox` is the reason.
pub fn from_table(table: &Table) -> Result<Vec<Recipient>, String> {
    let col = |name: &str| {
        table
            .columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    };
    let Some(email) = col("email") else {
        return Err(format!(
            "recipients_query returned no `email` column (it returned: {})",
            table
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let (name, key) = (col("name"), col("key"));
    let mut out: Vec<Recipient> = Vec::new();
    for (i, row) in table.rows.iter().enumerate() {
        let cell = |c: Option<usize>| c.and_then(|c| row.get(c)).unwrap_or(&Value::Null);
        let r = recipient(i + 1, cell(Some(email)), cell(name), cell(key));
        if !out.iter().any(|o| o.target == r.target) {
            out.push(r);
        }
    }
    Ok(out)
}

fn recipient(row: usize, email: &Value, name: &Value, key: &Value) -> Recipient {
    let raw = email.to_plain();
    let address = match email {
        Value::Text(t) => Address::from_str(t.trim())
            .map_err(|e| format!("row {row}: `{}` is not an email address ({e})", clip(t))),
        Value::Null => Err(format!("row {row}: the email is NULL")),
        other => Err(format!(
            "row {row}: the email must be text, not `{}`",
            clip(&other.to_plain())
        )),
    };
    let key = match (key, &address) {
        (Value::Int(n), _) => Ok(RecipientKey::Int(*n)),
        (Value::Text(t), _) => Ok(RecipientKey::Text(t.clone())),
        (Value::Uuid(u), _) => Ok(RecipientKey::Text(u.to_string())),
        (Value::Null, Ok(a)) => Ok(RecipientKey::Text(a.to_string())),
        (Value::Null, Err(_)) => Ok(RecipientKey::Text(raw.clone())),
        (other, _) => Err(format!(
            "row {row}: the key must be text or an integer, not `{}`",
            clip(&other.to_plain())
        )),
    };
    let name = match name {
        Value::Null => None,
        v => Some(v.to_plain()).filter(|n| !n.trim().is_empty()),
    };
    match (address, key) {
        (Ok(address), Ok(key)) => {
            let text = if key == RecipientKey::Text(address.to_string()) {
                address.to_string()
            } else {
                format!("{address} key={}", key_in_target(&key))
            };
            let target = Target::new(KIND, &text).unwrap_or_else(|_| invalid_target(&raw, &key));
            Recipient {
                target,
                mailbox: Ok(Mailbox::new(name, address)),
                key,
            }
        }
        (address, key) => {
            let why = match (address, &key) {
                (Err(why), _) => why,
                (Ok(_), Err(why)) => why.clone(),
                (Ok(_), Ok(_)) => String::new(),
            };
            let key = key.unwrap_or(RecipientKey::Text(raw.clone()));
            Recipient {
                target: invalid_target(&raw, &key),
                mailbox: Err(why),
                key,
            }
        }
    }
}

/// A key as it appears in a target name: as written when short and printable, else by hash.
fn key_in_target(key: &RecipientKey) -> String {
    let text = key.to_string();
    if text.len() <= MAX_KEY_IN_TARGET && !text.chars().any(char::is_control) {
        text
    } else {
        format!("sha256:{}", short_hash(&[text.as_bytes()]))
    }
}

/// The target of a row whose address is invalid: stable across ticks (a hash of what the row
/// said), so it is recorded once and never retried.
fn invalid_target(raw: &str, key: &RecipientKey) -> Target {
    let name = format!(
        "invalid-{}",
        short_hash(&[raw.as_bytes(), key.to_string().as_bytes()])
    );
    Target::new(KIND, &name).unwrap_or_default()
}

fn short_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// At most 80 characters of a value quoted in an error, control characters replaced.
fn clip(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(80)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// `a***@example.com`: an address with its local part masked, for log lines.
pub fn mask_address(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// How a target is named in logs and the tick's failure text: a recipient's address masked
/// (the key, which names a team or region rather than a person, is kept), anything else as
/// it is.
pub fn masked(target: &Target) -> String {
    let text = target.as_str();
    match text.strip_prefix("email:") {
        Some(rest) if rest.contains('@') => {
            let (address, key) = rest.split_once(' ').unwrap_or((rest, ""));
            let key = if key.is_empty() {
                String::new()
            } else {
                format!(" {key}")
            };
            format!("email:{}{key}", mask_address(address))
        }
        _ => text.to_string(),
    }
}

/// Replaces every address-like word in `text` by its masked form: for error texts that quote
/// an SMTP reply (`RCPT TO ann@example.com: 550 …`) before they reach a log line.
pub fn mask_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') && word.len() > 2 {
            let trimmed = word.trim_matches(|c: char| "<>()[],;:'\"".contains(c));
            out.push_str(&word.replace(trimmed, &mask_address(trimmed)));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Column, ColumnType};

    fn table(cols: &[&str], rows: Vec<Vec<Value>>) -> Table {
        Table {
            columns: cols
                .iter()
                .map(|c| Column {
                    name: (*c).to_string(),
                    kind: ColumnType::Unknown,
                })
                .collect(),
            rows,
            truncated: false,
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn rows_become_recipients_with_targets_keys_and_names() {
        let t = table(
            &["EMAIL", "name", "key"],
            vec![
                vec![text("ann@example.com"), text("Ann"), Value::Int(3)],
                vec![text(" bob@example.com "), Value::Null, Value::Null],
                vec![text("ann@example.com"), text("Ann"), Value::Int(4)],
                vec![text("ann@example.com"), text("Ann"), Value::Int(3)],
                vec![text("not an address"), text("X"), text("DE")],
                vec![Value::Null, Value::Null, Value::Null],
                vec![text("eve@example.com"), Value::Null, Value::Float(1.5)],
            ],
        );
        let r = from_table(&t).unwrap();
        let targets: Vec<&str> = r.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets.len(), 6, "the repeated row is dropped: {targets:?}");
        assert_eq!(targets[0], "email:ann@example.com key=3");
        assert_eq!(targets[1], "email:bob@example.com");
        assert_eq!(targets[2], "email:ann@example.com key=4");
        assert!(targets[3].starts_with("email:invalid-"), "{targets:?}");
        assert!(targets[4].starts_with("email:invalid-") && targets[4] != targets[3]);
        assert!(targets[5].starts_with("email:invalid-"));
        assert_eq!(r[0].key, RecipientKey::Int(3));
        assert_eq!(r[1].key, RecipientKey::Text("bob@example.com".into()));
        assert_eq!(
            (r[0].shown(), r[1].shown()),
            ("Ann".into(), "bob@example.com".into())
        );
        assert!(
            r[3].mailbox
                .as_ref()
                .unwrap_err()
                .contains("row 5: `not an address` is not an email address")
        );
        assert!(r[4].mailbox.as_ref().unwrap_err().contains("NULL"));
        assert!(
            r[5].mailbox
                .as_ref()
                .unwrap_err()
                .contains("the key must be text or an integer")
        );
        assert!(r[1].has_address(&"BOB@example.com".parse().unwrap()));
        // The same rows give the same targets on every tick.
        assert_eq!(from_table(&t).unwrap(), r);
        // No email column: the query is wrong, not a recipient.
        let e = from_table(&table(&["address"], vec![])).unwrap_err();
        assert!(
            e.contains("no `email` column") && e.contains("address"),
            "{e}"
        );
        assert!(from_table(&table(&["email"], vec![])).unwrap().is_empty());
    }

    #[test]
    fn addresses_are_masked_for_logs() {
        assert_eq!(mask_address("ann@example.com"), "a***@example.com");
        let t = Target::new(KIND, "ann@example.com key=3").unwrap();
        assert_eq!(masked(&t), "email:a***@example.com key=3");
        assert_eq!(masked(&Target::new("teams", "X").unwrap()), "teams:X");
        assert_eq!(
            mask_addresses(
                "RCPT TO <ann@example.com>: permanent error (550): 5.1.1 ann@example.com unknown"
            ),
            "RCPT TO <a***@example.com>: permanent error (550): 5.1.1 a***@example.com unknown"
        );
    }
}
