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
