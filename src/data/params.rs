//! The report SQL tokenizer: finds `:start`, `:end`, `:date` (and, in a per-recipient report's
//! sections, `:recipient_key`) and rewrites them for the engine.
//!
//! Report queries are written once for both engines with named placeholders, but sqlx-sqlite
//! rejects `:name` and PostgreSQL's simple protocol has no parameters at all. So we scan the
//! SQL ourselves, skipping string literals, quoted identifiers, comments, dollar quotes and `::`
//! casts, and replace each placeholder with engine-specific text that refers to a *bound*
//! value: values are never spliced into SQL. Unknown placeholders and a second statement are
//! rejected here with a clear message, before anything reaches the database.

use super::{DataError, RecipientKey};

/// The placeholders a report query may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `:start`, the inclusive start of the window.
    Start,
    /// `:end`, the exclusive end of the window.
    End,
    /// `:date`, the day reported on.
    Date,
    /// `:recipient_key`, the key of the recipient a per-recipient report is run for (NULL
    /// when the run is for no recipient: a preview, the API).
    RecipientKey,
}

impl Param {
    fn from_name(name: &str) -> Option<Param> {
        match name.to_ascii_lowercase().as_str() {
            "start" => Some(Param::Start),
            "end" => Some(Param::End),
            "date" => Some(Param::Date),
            "recipient_key" => Some(Param::RecipientKey),
            _ => None,
        }
    }
}

/// Which engine the SQL is rewritten for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `?N` positional parameters, numbered in order of first use.
    Sqlite,
    /// `current_setting('report.*')` casts, set from bound values in the same transaction.
    Postgres,
}

/// A rewritten query: the SQL to run and, for SQLite, which value goes to `?1`, `?2`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The SQL with placeholders replaced and any trailing `;` removed.
    pub sql: String,
    /// For SQLite: the parameter bound to `?1`, `?2`, ... in order. For PostgreSQL: those used.
    pub binds: Vec<Param>,
}

/// Rewrites `sql` for `dialect`; see the module docs. `:recipient_key` is NULL here: see
/// [`rewrite_keyed`].
pub fn rewrite(sql: &str, dialect: Dialect) -> Result<Rewritten, DataError> {
    rewrite_keyed(sql, dialect, None)
}

/// [`rewrite`] for a run with a recipient's key: on PostgreSQL `:recipient_key` reads the bound
/// `report.recipient_key` setting cast to the key's type (`bigint` for an integer key, so it
/// compares with integer columns), or is an untyped NULL without a key.
pub fn rewrite_keyed(
    sql: &str,
    dialect: Dialect,
    key: Option<&RecipientKey>,
) -> Result<Rewritten, DataError> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 64);
    let mut binds: Vec<Param> = Vec::new();
    let mut i = 0;
    let mut copied = 0; // bytes of `sql` already copied to `out`
    let mut end_of_statement: Option<usize> = None;
    let mut saw_token = false;

    while i < b.len() {
        let c = b[i];
        // After a `;` only whitespace and comments may follow.
        if let Some(_semi) = end_of_statement
            && !c.is_ascii_whitespace()
            && !(c == b'-' && b.get(i + 1) == Some(&b'-'))
            && !(c == b'/' && b.get(i + 1) == Some(&b'*'))
        {
            return Err(DataError::Query(
                "a report query must be a single statement; remove everything after the first `;`"
                    .into(),
            ));
        }
        match c {
            b'\'' => {
                let escapes =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident_byte(b[i - 2]));
                i = skip_quoted(b, i, b'\'', escapes)?;
                saw_token = true;
            }
            b'"' | b'`' => {
                i = skip_quoted(b, i, c, false)?;
                saw_token = true;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i)?;
            }
            b'$' if dialect == Dialect::Postgres => {
                // Dollar quote `$tag$ ... $tag$` (`$1` is a positional parameter, not a quote).
                if let Some(tag_end) = dollar_tag(b, i) {
                    let tag = &b[i..=tag_end];
                    let body = tag_end + 1;
                    match find(b, body, tag) {
                        Some(close) => i = close + tag.len(),
                        None => {
                            return Err(DataError::Query(
                                "unterminated dollar-quoted string in the query".into(),
                            ));
                        }
                    }
                } else {
                    i += 1;
                }
                saw_token = true;
            }
            b'?' | b'@' | b'$' if dialect == Dialect::Sqlite => {
                return Err(DataError::BadPlaceholder(format!(
                    "`{}` placeholders are not supported; use :start, :end, :date or :recipient_key",
                    c as char
                )));
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                i += 2;
                saw_token = true;
            }
            b':' if b
                .get(i + 1)
                .is_some_and(|&n| n.is_ascii_alphabetic() || n == b'_')
                && !(i > 0 && b[i - 1] == b':') =>
            {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && is_ident_byte(b[j]) {
                    j += 1;
                }
                let name = &sql[start..j];
                let param = Param::from_name(name).ok_or_else(|| {
                    DataError::BadPlaceholder(format!(
                        "unknown placeholder :{name}; only :start, :end, :date and :recipient_key exist"
                    ))
                })?;
                out.push_str(&sql[copied..i]);
                match dialect {
                    Dialect::Sqlite => {
                        let n = match binds.iter().position(|p| *p == param) {
                            Some(n) => n + 1,
                            None => {
                                binds.push(param);
                                binds.len()
                            }
                        };
                        out.push('?');
                        out.push_str(&n.to_string());
                    }
                    Dialect::Postgres => {
                        if !binds.contains(&param) {
                            binds.push(param);
                        }
                        out.push_str(match param {
                            Param::Start => "(current_setting('report.start')::timestamptz)",
                            Param::End => "(current_setting('report.end')::timestamptz)",
                            Param::Date => "(current_setting('report.date')::date)",
                            Param::RecipientKey => match key {
                                Some(RecipientKey::Int(_)) => {
                                    "(current_setting('report.recipient_key')::bigint)"
                                }
                                Some(RecipientKey::Text(_)) => {
                                    "(current_setting('report.recipient_key'))"
                                }
                                None => "(NULL)",
                            },
                        });
                    }
                }
                copied = j;
                i = j;
                saw_token = true;
            }
            b';' => {
                if end_of_statement.is_none() {
                    end_of_statement = Some(i);
                }
                i += 1;
            }
            _ => {
                if !c.is_ascii_whitespace() {
                    saw_token = true;
                }
                i += 1;
            }
        }
    }
    let stop = end_of_statement.unwrap_or(b.len());
    if stop > copied {
        out.push_str(&sql[copied..stop]);
    }
    if !saw_token {
        return Err(DataError::Query("the query is empty".into()));
    }
    Ok(Rewritten { sql: out, binds })
}

/// The first keyword of the statement (upper-cased), skipping comments and parentheses.
/// `check_query` uses it to refuse obvious writes before asking the engine.
pub fn first_keyword(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_whitespace() || c == b'(' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i).ok()?,
            c if c.is_ascii_alphabetic() => {
                let s = i;
                while i < b.len() && is_ident_byte(b[i]) {
                    i += 1;
                }
                return Some(sql[s..i].to_ascii_uppercase());
            }
            _ => return None,
        }
    }
    None
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Skips a quoted literal or identifier starting at `i` (the opening quote); a doubled quote is
/// an escaped quote, and with `backslash` (PostgreSQL `E'...'`) `\x` escapes one byte.
fn skip_quoted(b: &[u8], mut i: usize, q: u8, backslash: bool) -> Result<usize, DataError> {
    i += 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return Ok(i + 1);
        }
        i += 1;
    }
    Err(DataError::Query(format!(
        "unterminated {} in the query",
        if q == b'\'' {
            "string literal"
        } else {
            "quoted identifier"
        }
    )))
}

/// Skips a (possibly nested, as in PostgreSQL) block comment starting at `i`.
fn skip_block_comment(b: &[u8], mut i: usize) -> Result<usize, DataError> {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Ok(i);
            }
        } else {
            i += 1;
        }
    }
    Err(DataError::Query(
        "unterminated /* comment in the query".into(),
    ))
}

/// If a dollar-quote tag starts at `i`, the index of its closing `$`.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && is_ident_byte(b[i - 1]) {
        return None; // `$` inside an identifier such as `a$b`
    }
    let mut j = i + 1;
    if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(sql: &str) -> Result<Rewritten, DataError> {
        rewrite(sql, Dialect::Sqlite)
    }

    #[test]
    fn rewrites_placeholders_in_order_of_first_use() {
        let r = sqlite("select * from t where a >= :end and b < :start and c = :end").unwrap();
        assert_eq!(r.sql, "select * from t where a >= ?1 and b < ?2 and c = ?1");
        assert_eq!(r.binds, vec![Param::End, Param::Start]);
    }

    #[test]
    fn ignores_literals_comments_and_casts() {
        let sql = "select ':start', \":end\", x::text, '--:date' -- :nope\n /* :nope /* nested */ */ from t where d = :date";
        let r = rewrite(sql, Dialect::Postgres).unwrap();
        assert!(
            r.sql
                .ends_with("d = (current_setting('report.date')::date)"),
            "{}",
            r.sql
        );
        assert!(
            r.sql.contains("':start'") && r.sql.contains("\":end\"") && r.sql.contains("x::text")
        );
        assert_eq!(r.binds, vec![Param::Date]);
        let r = rewrite("select $$ :x $$, $t$ ; $t$, E'\\' :y'", Dialect::Postgres).unwrap();
        assert!(r.binds.is_empty());
    }

    #[test]
    fn rejects_unknown_placeholders_and_second_statements() {
        assert!(
            matches!(sqlite("select :begin"), Err(DataError::BadPlaceholder(m)) if m.contains(":begin"))
        );
        assert!(matches!(
            sqlite("select ?"),
            Err(DataError::BadPlaceholder(_))
        ));
        assert!(
            matches!(sqlite("select 1; drop table t"), Err(DataError::Query(m)) if m.contains("single statement"))
        );
        assert!(matches!(sqlite("select 'a"), Err(DataError::Query(_))));
        assert!(matches!(sqlite("  -- nothing\n"), Err(DataError::Query(_))));
        let r = sqlite("select 1; -- done\n").unwrap();
        assert_eq!(r.sql, "select 1");
    }

    #[test]
    fn the_recipient_key_is_typed_by_its_value() {
        let q = "select * from t where team = :recipient_key and d < :end";
        let r = sqlite(q).unwrap();
        assert_eq!(r.binds, vec![Param::RecipientKey, Param::End]);
        let pg = |k: Option<&RecipientKey>| rewrite_keyed(q, Dialect::Postgres, k).unwrap().sql;
        assert!(pg(Some(&RecipientKey::Int(3))).contains("('report.recipient_key')::bigint)"));
        assert!(
            pg(Some(&RecipientKey::Text("x".into())))
                .contains("(current_setting('report.recipient_key'))")
        );
        assert!(pg(None).contains("team = (NULL)"));
    }

    #[test]
    fn first_keyword_skips_comments() {
        assert_eq!(
            first_keyword("-- x\n /* y */ (select 1)").as_deref(),
            Some("SELECT")
        );
        assert_eq!(first_keyword("insert into t").as_deref(), Some("INSERT"));
    }
}
