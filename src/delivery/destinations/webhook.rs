//! The generic webhook: the report API's JSON for the window (`render_json`, the same document
//! `GET /api/reports/{name}` answers), with a delivery id and, when the destination has a
//! `signing_secret_setting`, an HMAC-SHA256 signature.
//!
//! How a receiver verifies a request (README "Verifying webhook signatures"):
//! 1. read `X-Report-Timestamp` (Unix seconds) and refuse it when it is far from now (e.g. more
//!    than 5 minutes), so a captured request cannot be replayed later;
//! 2. compute `HMAC-SHA256(secret, "<timestamp>.<raw body bytes>")` as lowercase hex;
//! 3. compare it in constant time with `X-Report-Signature` after its `sha256=` prefix;
//! 4. drop a request whose `X-Report-Delivery-Id` it has already processed (a retry after a
//!    lost answer carries the same id).

use secrecy::{ExposeSecret, SecretString};

/// Deterministic per (report, occurrence, destination): receivers drop duplicates by it.
pub const DELIVERY_ID_HEADER: &str = "X-Report-Delivery-Id";
/// Unix seconds when the request was signed; part of the signed text.
pub const TIMESTAMP_HEADER: &str = "X-Report-Timestamp";
/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "X-Report-Signature";

/// The `X-Report-Signature` value for `body` signed at `timestamp` with `key`:
/// `sha256=` + lowercase hex HMAC-SHA256 over `<timestamp>.<body>`.
pub fn signature(key: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(body.len() + 24);
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    // HMAC-SHA256 (RFC 2104) over the crate's sha2, tested against RFC 4231 where it lives.
    let mac = crate::delivery::ledger::table::client::hmac_sha256(
        key.expose_secret().as_bytes(),
        &signed,
    );
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: python3 -c "import hmac,hashlib; print(hmac.new(
        //   b'whsec-test-key', b'1764651600.{\"report\":\"daily\"}', hashlib.sha256).hexdigest())"
        let key = SecretString::from("whsec-test-key");
        assert_eq!(
            signature(&key, 1_764_651_600, br#"{"report":"daily"}"#),
            "sha256=b542696221c3255d5ac492ef123f7fb44df0c622553c395dffb56b5568189bcc"
        );
        assert_ne!(
            signature(&key, 1_764_651_601, br#"{"report":"daily"}"#),
            signature(&key, 1_764_651_600, br#"{"report":"daily"}"#)
        );
    }
}
