//! What the handler sends back to the host in payload mode.
//!
//! A handled outcome is always HTTP 200 with `Content-Type: application/json` and a JSON object
//! (an empty body would hang the invocation until `functionTimeout`). A failure the host must
//! count — and retry — is a non-2xx status; its body is never read by the host, so whatever
//! matters is logged to stdout first.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

/// The body of a successful payload-mode reply.
#[derive(Debug, Default, Serialize)]
pub struct InvocationReply {
    /// Output bindings by their exact function.json names (`res` for HttpTrigger).
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    /// Log lines the host files under this invocation (Information level).
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    /// Always `null`: neither function has a `$return` binding, and a value here would be
    /// merged into outputs or base64-decoded by the host.
    #[serde(rename = "ReturnValue")]
    pub return_value: Option<Value>,
}

/// The `res` HTTP output: `statusCode` (never `status`), string header values, string body.
#[derive(Debug, Clone, Serialize)]
pub struct HttpOutput {
    /// The status the client sees.
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    /// Header values are strings; an array would be written as multi-line JSON by the host.
    pub headers: Map<String, Value>,
    /// Sent as a string so the host writes the exact bytes.
    pub body: String,
}

impl InvocationReply {
    /// A reply carrying an HTTP response in `Outputs.<binding>`.
    pub fn with_http(binding: &str, output: HttpOutput, logs: Vec<String>) -> Self {
        let mut outputs = Map::new();
        outputs.insert(
            binding.to_string(),
            serde_json::to_value(output).unwrap_or(Value::Null),
        );
        Self {
            outputs,
            logs,
            return_value: None,
        }
    }

    /// A reply with no outputs (the timer).
    pub fn with_logs(logs: Vec<String>) -> Self {
        Self {
            outputs: Map::new(),
            logs,
            return_value: None,
        }
    }
}

impl IntoResponse for InvocationReply {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self)
    }
}

/// Writes a payload-mode reply carrying an HTTP response in `Outputs.<binding>`, in one pass:
/// `{"Outputs":{"<binding>":{"statusCode":…,"headers":{…},"body":"…"}},"Logs":[…],
/// "ReturnValue":null}` with the body escaped straight into its JSON string. No
/// `serde_json::Value` tree is built and the body is not copied first, so the reply costs one
/// buffer of about the body's size (plus escapes). Headers named more than once are joined
/// with `", "` (the host takes string values only) and written in name order.
///
/// `body` must be UTF-8 text (the caller checks): the host writes the string as it is.
pub fn write_http_reply(
    binding: &str,
    status: u16,
    headers: &[(String, String)],
    body: &str,
    logs: &[String],
) -> Vec<u8> {
    use std::io::Write as _;
    let mut names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Vec::with_capacity(body.len() + body.len() / 8 + 512);
    // Writing to a Vec cannot fail; serialising strings cannot fail.
    out.extend_from_slice(b"{\"Outputs\":{");
    let _ = serde_json::to_writer(&mut out, binding);
    let _ = write!(out, ":{{\"statusCode\":{status},\"headers\":{{");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, name);
        out.push(b':');
        let values: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        let _ = serde_json::to_writer(&mut out, &values.join(", "));
    }
    out.extend_from_slice(b"},\"body\":");
    write_json_string(&mut out, body);
    out.extend_from_slice(b"}},\"Logs\":");
    let _ = serde_json::to_writer(&mut out, logs);
    out.extend_from_slice(b",\"ReturnValue\":null}");
    out
}

/// Writes `s` as a JSON string, byte for byte as `serde_json` writes it (`\"`, `\\`, the short
/// escapes of `\b \f \n \r \t`, `\u00xx` for the other control characters, everything else as
/// it is). The body of every payload-mode reply goes through here, and a JSON report escapes a
/// quote every few bytes: runs are found eight bytes at a time and copied whole, instead of
/// `serde_json`'s byte-by-byte loop with two writer calls per escape.
fn write_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    /// Whether any byte of `w` is a control character, `"` or `\\` (exact for "any").
    fn word_needs_escape(w: u64) -> bool {
        let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
        w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')))
    }
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + bytes.len() / 8 + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        while let Some(word) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
            if word_needs_escape(word) {
                break;
            }
            i += 8;
        }
        let end = (i + 8).min(bytes.len());
        while i < end {
            let b = bytes[i];
            if b < 0x20 || b == b'"' || b == b'\\' {
                out.extend_from_slice(&bytes[start..i]);
                match b {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    0x08 => out.extend_from_slice(b"\\b"),
                    0x0c => out.extend_from_slice(b"\\f"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    _ => out.extend_from_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0xf)],
                    ]),
                }
                start = i + 1;
            }
            i += 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The HTTP response of a reply written by [`write_http_reply`].
pub fn reply_response(bytes: Vec<u8>) -> Response {
    let mut resp = (StatusCode::OK, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON error for the host itself (malformed envelope, unknown function, failed invocation).
/// 4xx for requests we could not understand, 500 for a failure the host should count and retry.
#[derive(Debug, Serialize)]
pub struct HostError {
    /// Machine-readable kind, e.g. `malformed_envelope`.
    pub error: &'static str,
    /// One sentence a person can act on; never contains a secret.
    pub message: String,
    /// Echoed for correlation with the host's logs.
    #[serde(rename = "invocationId", skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    #[serde(skip)]
    status: StatusCode,
}

impl HostError {
    /// Builds an error reply with the given status.
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
            invocation_id: None,
            status,
        }
    }

    /// Attaches the invocation id from the request headers.
    pub fn for_invocation(mut self, id: &str) -> Self {
        self.invocation_id = Some(id.to_string());
        self
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for HostError {
    fn into_response(self) -> Response {
        json_response(self.status, &self)
    }
}

/// Serialises `body` as an `application/json` response; never empty.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_pass_reply_matches_the_serde_reply() {
        let headers = vec![
            ("etag".to_string(), "\"abc\"".to_string()),
            (
                "content-type".to_string(),
                "text/csv; charset=utf-8".to_string(),
            ),
            ("vary".to_string(), "a".to_string()),
            ("vary".to_string(), "b".to_string()),
        ];
        let body = "a,b\r\n\"x\",\u{2028}é\u{1}\r\n";
        let logs = vec!["one".to_string(), "two \"q\"".to_string()];
        let one_pass = write_http_reply("res", 200, &headers, body, &logs);
        let mut map = Map::new();
        map.insert(
            "content-type".into(),
            Value::String("text/csv; charset=utf-8".into()),
        );
        map.insert("etag".into(), Value::String("\"abc\"".into()));
        map.insert("vary".into(), Value::String("a, b".into()));
        let reference = InvocationReply::with_http(
            "res",
            HttpOutput {
                status_code: 200,
                headers: map,
                body: body.into(),
            },
            logs,
        );
        // The same document (the serde reply orders `res`'s keys by name).
        let parsed: Value = serde_json::from_slice(&one_pass).unwrap();
        assert_eq!(parsed, serde_json::to_value(&reference).unwrap());
        assert!(one_pass.starts_with(b"{\"Outputs\":{\"res\":{\"statusCode\":200,"));
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| format!("{c}"))
            .collect();
        let all: String = (0u32..0x300).filter_map(char::from_u32).collect();
        cases.push(all.clone());
        for cut in 0..40 {
            cases.push(all.chars().skip(cut).take(3 * cut + 1).collect());
        }
        cases.extend(
            [
                "",
                "plain ascii text that is longer than eight bytes",
                "{\"a\":\"b\",\"rows\":[[1,\"x\"],[2,\"y\\\\z\"]]}",
                "é\u{2028}\u{1f600}\"\u{7f}\u{1}\u{1f}",
                "\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"",
                "abcdefg\"abcdefgh\\abcdefghi\nabcdefg\r",
            ]
            .map(String::from),
        );
        for s in cases {
            let mut out = Vec::new();
            write_json_string(&mut out, &s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&s).unwrap(),
                "{s:?}"
            );
        }
    }
}
