//! The API key check. Keys come from `API_KEYS` (comma-separated, normally a Key Vault
//! reference), so a rotation can keep the old and the new key valid for a while.
//!
//! Comparison is constant time: both the presented key and each valid key are hashed with
//! SHA-256 (so lengths do not leak) and the digests compared with `subtle`; every valid key is
//! compared, with no early exit. The presented key is never logged.

use axum::http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

/// Is `presented` one of the comma-separated keys in `valid`? Empty entries never match.
pub fn key_matches(presented: &SecretString, valid: &SecretString) -> bool {
    let p = Sha256::digest(presented.expose_secret().as_bytes());
    let mut any = subtle::Choice::from(0u8);
    for key in valid.expose_secret().split(',') {
        let key = key.trim();
        if key.is_empty() {
            continue;
        }
        let k = Sha256::digest(key.as_bytes());
        any |= p[..].ct_eq(&k[..]);
    }
    any.into()
}

/// The shortest API key accepted: 32 characters, what `openssl rand -base64 32` gives and more.
/// Shorter keys can be guessed or brute-forced over the API; they are configuration errors.
pub const MIN_KEY_LEN: usize = 32;

/// The placeholder of `local.settings.json.example`. Copying the example without replacing it
/// must not leave a key that anyone who read the repository knows.
pub const EXAMPLE_PLACEHOLDER: &str = "replace-with-a-long-random-key";

/// Why an `API_KEYS` value is refused. The text names the setting and the entry's position,
/// never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// No non-empty entry at all.
    #[error("API_KEYS holds no key")]
    Empty,
    /// An entry is shorter than [`MIN_KEY_LEN`].
    #[error(
        "API_KEYS: key {position} is shorter than {MIN_KEY_LEN} characters (make one with `openssl rand -base64 32`)"
    )]
    TooShort {
        /// 1-based position among the comma-separated keys.
        position: usize,
    },
    /// An entry is the example file's placeholder.
    #[error(
        "API_KEYS: key {position} is the placeholder of local.settings.json.example; replace it with a key of your own (`openssl rand -base64 32`)"
    )]
    Placeholder {
        /// 1-based position among the comma-separated keys.
        position: usize,
    },
}

/// Checks every comma-separated key of an `API_KEYS` value: at least [`MIN_KEY_LEN`]
/// characters and not the example placeholder. Run at start-up on plain values, by
/// `handler check`, and on every resolution of a Key Vault reference, so a weak key is never
/// honoured, wherever it came from.
pub fn validate_keys(valid: &SecretString) -> Result<(), KeysError> {
    let mut any = false;
    for (i, key) in valid
        .expose_secret()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .enumerate()
    {
        any = true;
        if key == EXAMPLE_PLACEHOLDER {
            return Err(KeysError::Placeholder { position: i + 1 });
        }
        if key.chars().count() < MIN_KEY_LEN {
            return Err(KeysError::TooShort { position: i + 1 });
        }
    }
    if any { Ok(()) } else { Err(KeysError::Empty) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_string())
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
    fn rotation_overlap_and_no_empty_match() {
        let valid = s("old-key, new-key,");
        assert!(key_matches(&s("old-key"), &valid));
        assert!(key_matches(&s("new-key"), &valid));
        assert!(!key_matches(&s("new-ke"), &valid));
        assert!(!key_matches(&s(""), &valid));
        assert!(!key_matches(&s("old-key, new-key"), &valid));
        assert!(!key_matches(&s("x"), &s(" , ")));
    }
}
