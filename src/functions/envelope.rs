//! The payload-mode invocation envelope the Functions host POSTs to `/<FunctionName>`.
//!
//! The host serialises with Newtonsoft,
//! so keys are PascalCase, strings in `Metadata` are JSON-encoded twice, dates come in several
//! shapes, and unknown keys appear without notice. The types are deliberately lenient on input
//! and strict on meaning: a value that cannot mean what the protocol says is an
//! [`EnvelopeError`], never a panic.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::http_envelope::ReqValue;

/// Why an envelope could not be understood; the message is safe to return to the host.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not JSON, or not a JSON object with `Data`/`Metadata`.
    #[error("the invocation body is not a valid envelope: {0}")]
    NotAnEnvelope(String),
    /// A binding the function needs is absent from `Data`.
    #[error("the envelope has no `Data.{0}` binding")]
    MissingBinding(&'static str),
    /// A binding is present but its shape is wrong.
    #[error("`Data.{binding}` is malformed: {reason}")]
    MalformedBinding {
        /// The binding name from function.json.
        binding: &'static str,
        /// What was wrong, without echoing user data.
        reason: String,
    },
}

/// The two top-level members of every payload-mode invocation.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Envelope {
    /// Trigger and input bindings keyed by their function.json names.
    #[serde(default, rename = "Data", deserialize_with = "object_or_null")]
    pub data: Map<String, Value>,
    /// Binding data: `sys`, `RetryContext`, and trigger-specific keys (double-encoded).
    #[serde(default, rename = "Metadata", deserialize_with = "object_or_null")]
    pub metadata: Map<String, Value>,
}

fn object_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    object_or_null_value(Option::<Value>::deserialize(d)?.unwrap_or(Value::Null))
        .map_err(serde::de::Error::custom)
}

/// `Data`/`Metadata` as the host may send them: an object, an object serialised into a string,
/// or null (no members).
fn object_or_null_value(v: Value) -> Result<Map<String, Value>, &'static str> {
    Ok(match v {
        Value::Object(m) => m,
        Value::String(s) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => m,
            _ => return Err("expected a JSON object"),
        },
        Value::Null => Map::new(),
        _ => return Err("expected a JSON object"),
    })
}

impl Envelope {
    /// Parses a request body. Accepts `Data`/`Metadata` in either case; rejects anything that is
    /// not a JSON object with a clear message.
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| EnvelopeError::NotAnEnvelope(format!("invalid JSON ({e})")))?;
        let Value::Object(obj) = value else {
            return Err(EnvelopeError::NotAnEnvelope(
                "expected a JSON object".into(),
            ));
        };
        if !obj
            .keys()
            .any(|k| k.eq_ignore_ascii_case("data") || k.eq_ignore_ascii_case("metadata"))
        {
            return Err(EnvelopeError::NotAnEnvelope(
                "expected the members `Data` and `Metadata`".into(),
            ));
        }
        // The members in any case (the last one of a name wins), moved out of the parsed tree
        // rather than deserialised from it a second time: this runs on every HTTP invocation.
        let mut env = Envelope::default();
        for (k, v) in obj {
            let member = if k.eq_ignore_ascii_case("data") {
                &mut env.data
            } else if k.eq_ignore_ascii_case("metadata") {
                &mut env.metadata
            } else {
                continue;
            };
            *member =
                object_or_null_value(v).map_err(|e| EnvelopeError::NotAnEnvelope(e.to_string()))?;
        }
        Ok(env)
    }

    /// Finds a `Data` binding by name, case-insensitively (function.json names are ours, but a
    /// hand-written envelope may differ in case).
    pub fn binding(&self, name: &str) -> Option<&Value> {
        self.data.get(name).or_else(|| {
            self.data
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    }

    /// `Metadata.sys`, if present and well formed.
    pub fn sys(&self) -> Option<SysMetadata> {
        let v = lookup_ci(&self.metadata, "sys")?;
        serde_json::from_value(decode_nested(v.clone())).ok()
    }

    /// `Metadata.RetryContext`, present only when the function has a retry policy.
    pub fn retry_context(&self) -> Option<RetryContext> {
        let v = lookup_ci(&self.metadata, "RetryContext")?;
        serde_json::from_value(decode_nested(v.clone())).ok()
    }

    /// A `Metadata` value with the host's double encoding removed (`"\"Azure\""` → `"Azure"`).
    pub fn metadata_value(&self, key: &str) -> Option<Value> {
        lookup_ci(&self.metadata, key).map(|v| decode_double_encoded(v.clone()))
    }
}

fn lookup_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// An object that arrived as a JSON string is parsed; anything else is returned unchanged.
fn decode_nested(v: Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        other => other,
    }
}

/// Undoes the host's `JsonConvert.SerializeObject` of scalar values: a string that is itself a
/// JSON document is decoded, and a decoded string that is again a JSON string literal is decoded
/// once more (the host double-encodes scalar metadata this way).
pub fn decode_double_encoded(v: Value) -> Value {
    match v {
        Value::String(s) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::String(inner)) => match serde_json::from_str::<Value>(&inner) {
                Ok(Value::String(innermost)) if inner.trim_start().starts_with('"') => {
                    Value::String(innermost)
                }
                _ => Value::String(inner),
            },
            Ok(other) => other,
            Err(_) => Value::String(s),
        },
        other => other,
    }
}

/// `Metadata.sys`: the function name, the host's clock and a random GUID.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SysMetadata {
    /// The function (folder) name.
    #[serde(default)]
    pub method_name: Option<String>,
    /// The host's clock when it built the payload; the tick time of a timer invocation.
    #[serde(default, deserialize_with = "host_datetime")]
    pub utc_now: Option<DateTime<Utc>>,
    /// A fresh GUID per invocation.
    #[serde(default)]
    pub rand_guid: Option<String>,
}

/// `Metadata.RetryContext`: which attempt of a retry policy this is.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RetryContext {
    /// 0 on the first attempt.
    #[serde(default)]
    pub retry_count: u32,
    /// The policy's maximum; -1 means forever.
    #[serde(default)]
    pub max_retry_count: i64,
}

/// `Data.timer`: what the timer extension serialises from `TimerInfo`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TimerInfo {
    /// `{"AdjustForDST": true}` for cron schedules; kept only for completeness.
    #[serde(default)]
    pub schedule: Option<Value>,
    /// `null` when the schedule monitor is off.
    #[serde(default)]
    pub schedule_status: Option<ScheduleStatus>,
    /// True only for the single start-up catch-up run after missed occurrences.
    #[serde(default, rename = "IsPastDue")]
    pub is_past_due: bool,
}

/// The schedule monitor's record as it was before this run. `None` dates mean "never" (year 1).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleStatus {
    /// The previous run, or `None` on the first run ever.
    #[serde(default, deserialize_with = "host_datetime")]
    pub last: Option<DateTime<Utc>>,
    /// The occurrence being executed now (the missed one in a catch-up).
    #[serde(default, deserialize_with = "host_datetime")]
    pub next: Option<DateTime<Utc>>,
    /// When the record was last written.
    #[serde(default, deserialize_with = "host_datetime")]
    pub last_updated: Option<DateTime<Utc>>,
}

impl TimerInfo {
    /// Reads the timer binding `name` from an envelope.
    pub fn from_envelope(env: &Envelope, name: &'static str) -> Result<Self, EnvelopeError> {
        let v = env
            .binding(name)
            .ok_or(EnvelopeError::MissingBinding(name))?;
        serde_json::from_value(decode_nested(v.clone())).map_err(|e| {
            EnvelopeError::MalformedBinding {
                binding: name,
                reason: e.to_string(),
            }
        })
    }
}

fn host_datetime<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_host_datetime(&s).map_err(serde::de::Error::custom),
    }
}

/// Parses a date the way the host writes them: 0–7 fraction digits, `Z`, `±HH:MM` or no offset
/// (read as UTC). Year 1 is .NET's `default(DateTime)` and means "never", so it yields `None`.
pub fn parse_host_datetime(s: &str) -> Result<Option<DateTime<Utc>>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t.starts_with("0001-01-01") || t.starts_with("0000-") {
        return Ok(None);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        let utc = dt.with_timezone(&Utc);
        return Ok(if utc.year() <= 1 { None } else { Some(utc) });
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(if naive.year() <= 1 {
                None
            } else {
                Some(naive.and_utc())
            });
        }
    }
    Err(format!(
        "`{}` is not a date the host writes",
        truncate(t, 40)
    ))
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `Data.req` of an HTTP trigger in payload mode.
#[derive(Debug, Clone, Default)]
pub struct HttpRequestData {
    /// `http(s)://{Host}{Path}{QueryString}` as the client sent it.
    pub url: String,
    /// The client's method, e.g. `GET`.
    pub method: String,
    /// Query parameters; repeated keys arrive comma-joined.
    pub query: BTreeMap<String, String>,
    /// Header values; names kept as sent, so look them up case-insensitively.
    pub headers: Vec<(String, String)>,
    /// Route values; optional parameters that did not match are absent.
    pub params: BTreeMap<String, String>,
    /// The body as bytes: text as UTF-8, octet-stream/multipart decoded from base64.
    pub body: Option<Vec<u8>>,
}

impl HttpRequestData {
    /// Reads the HTTP trigger binding `name` from an envelope. The HTTP routes read the body
    /// with [`HttpRequestData::parse_envelope`] instead (one pass, no tree); both share the
    /// checks of `http_envelope`, so they agree.
    pub fn from_envelope(env: &Envelope, name: &'static str) -> Result<Self, EnvelopeError> {
        let v = env
            .binding(name)
            .ok_or(EnvelopeError::MissingBinding(name))?;
        // Reading a `Value` with these lenient types cannot fail; say so if it ever did.
        ReqValue::deserialize(v)
            .unwrap_or(ReqValue::Other)
            .into_request(name)
    }

    /// The path of `Url` (`/api/reports/x`), or `/` when the URL has none.
    pub fn path(&self) -> String {
        let rest = match self.url.find("://") {
            Some(i) => &self.url[i + 3..],
            None => self.url.as_str(),
        };
        let path_and_query = match rest.find('/') {
            Some(i) if self.url.contains("://") => &rest[i..],
            _ if self.url.contains("://") => "/",
            _ => rest,
        };
        let path = path_and_query.split(['?', '#']).next().unwrap_or("/");
        if path.is_empty() {
            "/".into()
        } else {
            path.into()
        }
    }

    /// The first value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `Data.req.Body` as bytes: absent or null is no body; a string is the body as text, or
/// base64 when the request's `Content-Type` is octet-stream or multipart (the host encodes
/// those); any other JSON value (a host that parsed a JSON body) is written back as JSON.
pub(super) fn request_body(
    body: Option<Value>,
    headers: &[(String, String)],
) -> Result<Option<Vec<u8>>, &'static str> {
    Ok(match body {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let binary = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.to_ascii_lowercase())
                .is_some_and(|ct| {
                    ct.starts_with("application/octet-stream") || ct.contains("multipart/")
                });
            if binary {
                Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(s.as_bytes())
                        .map_err(|_| "`Body` of a binary request must be base64")?,
                )
            } else {
                Some(s.into_bytes())
            }
        }
        Some(other) => Some(other.to_string().into_bytes()),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// The tree reader as it was before `http_envelope`: the reference both readers are held to.
    pub(crate) fn reference_from_envelope(
        env: &Envelope,
        name: &'static str,
    ) -> Result<HttpRequestData, EnvelopeError> {
        let v = env
            .binding(name)
            .ok_or(EnvelopeError::MissingBinding(name))?;
        let bad = |reason: &str| EnvelopeError::MalformedBinding {
            binding: name,
            reason: reason.to_string(),
        };
        // Borrowed when the host sent an object (the usual case); parsed when it came as a string.
        let parsed;
        let obj: &Map<String, Value> = match v {
            Value::Object(o) => o,
            Value::String(_) => {
                parsed = decode_nested(v.clone());
                match &parsed {
                    Value::Object(o) => o,
                    _ => return Err(bad("expected an object")),
                }
            }
            _ => return Err(bad("expected an object")),
        };
        let get = |k: &str| lookup_ci(obj, k);
        let url = match get("Url") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            _ => return Err(bad("`Url` must be a string")),
        };
        let method = match get("Method") {
            Some(Value::String(s)) if !s.is_empty() => s.to_ascii_uppercase(),
            None | Some(Value::Null) => "GET".to_string(),
            _ => return Err(bad("`Method` must be a string")),
        };
        let mut query = BTreeMap::new();
        match get("Query").map(|v| decode_nested(v.clone())) {
            Some(Value::Object(q)) => {
                for (k, v) in q {
                    query.insert(
                        k,
                        scalar_to_string(&v)
                            .ok_or_else(|| bad("`Query` values must be strings"))?,
                    );
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => return Err(bad("`Query` must be an object")),
        }
        let mut headers = Vec::new();
        match get("Headers") {
            Some(Value::Object(h)) => {
                for (k, v) in h {
                    match v {
                        Value::Array(items) => {
                            for item in items {
                                headers.push((
                                    k.clone(),
                                    scalar_to_string(item)
                                        .ok_or_else(|| bad("`Headers` values must be strings"))?,
                                ));
                            }
                        }
                        other => headers.push((
                            k.clone(),
                            scalar_to_string(other)
                                .ok_or_else(|| bad("`Headers` values must be strings"))?,
                        )),
                    }
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => return Err(bad("`Headers` must be an object")),
        }
        let mut params = BTreeMap::new();
        match get("Params") {
            Some(Value::Object(p)) => {
                for (k, v) in p {
                    if !v.is_null() {
                        params.insert(
                            k.clone(),
                            scalar_to_string(v)
                                .ok_or_else(|| bad("`Params` values must be strings"))?,
                        );
                    }
                }
            }
            None | Some(Value::Null) => {}
            Some(_) => return Err(bad("`Params` must be an object")),
        }
        let content_type = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.to_ascii_lowercase())
            .unwrap_or_default();
        let body = match get("Body") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                if content_type.starts_with("application/octet-stream")
                    || content_type.contains("multipart/")
                {
                    Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(s.as_bytes())
                            .map_err(|_| bad("`Body` of a binary request must be base64"))?,
                    )
                } else {
                    Some(s.clone().into_bytes())
                }
            }
            // Defensive: a host that parsed a JSON body hands us the value; re-serialise it.
            Some(other) => Some(other.to_string().into_bytes()),
        };
        Ok(HttpRequestData {
            url,
            method,
            query,
            headers,
            params,
            body,
        })
    }

    fn scalar_to_string(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn dates_in_every_host_shape() {
        let cases = [
            ("2024-10-24T21:35:00+00:00", "2024-10-24T21:35:00Z"),
            (
                "2024-10-24T21:30:00.0071423+00:00",
                "2024-10-24T21:30:00.007142300Z",
            ),
            (
                "2024-10-24T21:35:00.0153341Z",
                "2024-10-24T21:35:00.015334100Z",
            ),
            ("2020-12-18T02:01:35", "2020-12-18T02:01:35Z"),
            ("2024-10-24T23:35:00.1+02:00", "2024-10-24T21:35:00.100Z"),
        ];
        for (input, want) in cases {
            let got = parse_host_datetime(input).unwrap().unwrap();
            assert_eq!(got, want.parse::<DateTime<Utc>>().unwrap(), "{input}");
        }
        assert_eq!(
            parse_host_datetime("0001-01-01T00:00:00+00:00").unwrap(),
            None
        );
        assert_eq!(parse_host_datetime("0001-01-01T00:00:00").unwrap(), None);
        assert!(parse_host_datetime("yesterday").is_err());
    }

    #[test]
    fn double_encoded_metadata() {
        assert_eq!(decode_double_encoded(json!("\"Azure\"")), json!("Azure"));
        assert_eq!(decode_double_encoded(json!("3")), json!(3));
        assert_eq!(decode_double_encoded(json!("\"3\"")), json!("3"));
        assert_eq!(decode_double_encoded(json!("plain")), json!("plain"));
        assert_eq!(decode_double_encoded(json!({"a": 1})), json!({"a": 1}));
    }

    #[test]
    fn timer_variants() {
        let first = json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true},
            "ScheduleStatus": {"Last": "0001-01-01T00:00:00+00:00", "Next": "2024-10-24T21:35:00+00:00",
            "LastUpdated": "0001-01-01T00:00:00"}, "IsPastDue": false}},
            "Metadata": {"sys": {"MethodName": "NightlyReport", "UtcNow": "2024-10-24T21:35:00.0153341Z", "RandGuid": "x"}}});
        let env = Envelope::parse(first.to_string().as_bytes()).unwrap();
        let t = TimerInfo::from_envelope(&env, "timer").unwrap();
        let st = t.schedule_status.unwrap();
        assert_eq!(st.last, None);
        assert!(st.next.is_some());
        assert!(env.sys().unwrap().utc_now.is_some());

        let off = json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": false}},
            "Metadata": {"sys": {"MethodName": "NightlyReport", "UtcNow": "2024-10-24T21:35:10.0011234Z"},
            "RetryContext": {"RetryCount": 2, "MaxRetryCount": 3, "Exception": null, "Instance": null, "State": {}}}});
        let env = Envelope::parse(off.to_string().as_bytes()).unwrap();
        assert!(
            TimerInfo::from_envelope(&env, "timer")
                .unwrap()
                .schedule_status
                .is_none()
        );
        assert_eq!(env.retry_context().unwrap().retry_count, 2);
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        for body in [&b"not json"[..], b"[]", b"{}", b"{\"Data\": 3}", b"\"x\""] {
            assert!(
                Envelope::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let env =
            Envelope::parse(br#"{"Data": {"timer": {"IsPastDue": "maybe"}}, "Metadata": {}}"#)
                .unwrap();
        assert!(TimerInfo::from_envelope(&env, "timer").is_err());
        let env = Envelope::parse(br#"{"Data": {}, "Metadata": {}}"#).unwrap();
        assert!(matches!(
            HttpRequestData::from_envelope(&env, "req"),
            Err(EnvelopeError::MissingBinding("req"))
        ));
    }

    #[test]
    fn http_request_binding() {
        let v = json!({"Data": {"req": {"Url": "http://localhost:7071/api/reports/daily?date=2024-01-02&tag=a&tag=b",
            "Method": "GET", "Query": {"date": "2024-01-02", "tag": "a,b"},
            "Headers": {"Accept": ["*/*"], "X-API-Key": ["k"]}, "Params": {"name": "daily", "x": null},
            "Identities": []}}, "Metadata": {"name": "\"daily\""}});
        let env = Envelope::parse(v.to_string().as_bytes()).unwrap();
        let req = HttpRequestData::from_envelope(&env, "req").unwrap();
        assert_eq!(req.path(), "/api/reports/daily");
        assert_eq!(req.query["tag"], "a,b");
        assert_eq!(req.header("x-api-key"), Some("k"));
        assert_eq!(req.params.get("name").map(String::as_str), Some("daily"));
        assert!(!req.params.contains_key("x"));
        assert_eq!(env.metadata_value("name"), Some(json!("daily")));

        let bin = json!({"Data": {"req": {"Url": "http://h/api/x", "Method": "POST", "Query": "{}",
            "Headers": {"Content-Type": ["application/octet-stream"]}, "Body": "AAECA/8="}}, "Metadata": {}});
        let env = Envelope::parse(bin.to_string().as_bytes()).unwrap();
        let req = HttpRequestData::from_envelope(&env, "req").unwrap();
        assert_eq!(req.body.unwrap(), vec![0, 1, 2, 3, 255]);
    }
}
