//! The JSON the Functions host sends a custom handler in payload mode, written from
//! `docs/functions-protocol.md`: an HTTP request as `Data.<binding>` plus `Metadata` (§3),
//! and the timer invocations of every variant (§2.3, §6.3, §7.1–§7.3, §8), with Newtonsoft's
//! date format and double-encoded binding data.
//!
//! Self-contained on purpose: it needs only serde_json, chrono, base64, uuid and
//! form_urlencoded (all dependencies of the crate), nothing else of the support module, so
//! `examples/bench.rs` builds its wrk envelope with the same code through
//! `#[path = "../tests/e2e/support/envelope.rs"] mod envelope;`.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// The public host name a `func start` client talks to.
pub const PUBLIC_HOST: &str = "localhost:7071";

/// A client request to the public endpoint (`http://localhost:7071/...`).
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub method: String,
    /// Path and query, e.g. `/api/reports?date=2026-01-02`.
    pub path_and_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl ClientRequest {
    /// A GET as curl sends it (`Accept: */*`, a curl `User-Agent`).
    pub fn get(path_and_query: &str) -> Self {
        Self {
            method: "GET".into(),
            path_and_query: path_and_query.into(),
            headers: vec![
                ("Accept".into(), "*/*".into()),
                ("User-Agent".into(), "curl/8.5.0".into()),
            ],
            body: None,
        }
    }
    pub fn method(mut self, m: &str) -> Self {
        self.method = m.into();
        self
    }
    /// Sets a header, replacing any header of that name (case-insensitive).
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.retain(|(hk, _)| !hk.eq_ignore_ascii_case(k));
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn body(mut self, content_type: &str, body: &[u8]) -> Self {
        self = self.header("Content-Type", content_type);
        self.body = Some(body.to_vec());
        self
    }
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or("/")
    }
    /// The query as decoded pairs, in order, repeats kept.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let q = self
            .path_and_query
            .split_once('?')
            .map(|x| x.1)
            .unwrap_or("");
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// The timer payload variants of the protocol document (§2.3, §6.3, §7.1–§7.3).
#[derive(Debug, Clone, Copy)]
pub enum TimerVariant {
    /// A normal scheduled run: `Next` is the occurrence being run.
    Scheduled,
    /// The start-up catch-up run after missed occurrences: `IsPastDue` true, `Next` in the past.
    PastDue { missed: DateTime<Utc> },
    /// The very first run: `Last`/`LastUpdated` are year 1.
    FirstRun,
    /// `useMonitor` off: `ScheduleStatus` is null.
    MonitorOff,
    /// A manual run through the admin endpoint: `Next` is the upcoming occurrence.
    Manual,
}

/// The host's `RetryContext` for a function.json with a retry policy.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub count: u32,
    pub max: i64,
}

/// Formats a date like Newtonsoft with round-trip kind: up to 7 fraction digits, trailing
/// zeros trimmed, `+00:00` offset (or `Z` for `UtcNow`).
pub fn newtonsoft_date(t: DateTime<Utc>, zulu: bool) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let ticks = t.timestamp_subsec_nanos() / 100;
    let frac = if ticks == 0 {
        String::new()
    } else {
        let s = format!("{ticks:07}");
        format!(".{}", s.trim_end_matches('0'))
    };
    format!("{base}{frac}{}", if zulu { "Z" } else { "+00:00" })
}

fn anonymous_identity() -> Value {
    json!({"AuthenticationType": null, "IsAuthenticated": false, "Actor": null,
        "BootstrapContext": null, "Claims": [], "Label": null, "Name": null,
        "NameClaimType": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "RoleClaimType": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"})
}

fn sys(method: &str, now: DateTime<Utc>) -> Value {
    json!({"MethodName": method, "UtcNow": newtonsoft_date(now, true),
        "RandGuid": uuid::Uuid::new_v4().to_string()})
}

/// Double-encodes a string the way `JsonConvert.SerializeObject` + the envelope do.
fn double_encoded(s: &str) -> Value {
    Value::String(serde_json::to_string(s).unwrap())
}

/// The `Data`/`Metadata` JSON the host sends to `POST /<function>` for an HTTP request (§3):
/// `binding` is the trigger's name in function.json (`req`), `params` the route values
/// (absent optional values as null).
pub fn http_payload_json(
    function: &str,
    binding: &str,
    params: &Map<String, Value>,
    req: &ClientRequest,
) -> Value {
    let now = Utc::now();
    let pairs = req.query_pairs();
    let mut query_joined: Map<String, Value> = Map::new();
    let mut query_last: Map<String, Value> = Map::new();
    for (k, v) in &pairs {
        match query_joined.get_mut(k) {
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(v);
            }
            _ => {
                query_joined.insert(k.clone(), Value::String(v.clone()));
            }
        }
        query_last.insert(k.clone(), Value::String(v.clone()));
    }
    let mut headers_arr: Map<String, Value> = Map::new();
    let mut headers_flat: Map<String, Value> = Map::new();
    let mut all_headers = req.headers.clone();
    all_headers.push(("Host".into(), PUBLIC_HOST.into()));
    if let Some(b) = &req.body
        && !b.is_empty()
    {
        all_headers.push(("Content-Length".into(), b.len().to_string()));
    }
    for (k, v) in &all_headers {
        let e = headers_arr
            .entry(k.clone())
            .or_insert_with(|| Value::Array(vec![]));
        e.as_array_mut().unwrap().push(Value::String(v.clone()));
        match headers_flat.get_mut(k) {
            Some(Value::String(s)) => {
                s.push(',');
                s.push_str(v);
            }
            _ => {
                headers_flat.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    let mut req_obj = Map::new();
    req_obj.insert(
        "Url".into(),
        Value::String(format!("http://{PUBLIC_HOST}{}", req.path_and_query)),
    );
    req_obj.insert("Method".into(), Value::String(req.method.clone()));
    req_obj.insert("Query".into(), Value::Object(query_joined));
    req_obj.insert("Headers".into(), Value::Object(headers_arr));
    req_obj.insert("Params".into(), Value::Object(params.clone()));
    req_obj.insert("Identities".into(), json!([anonymous_identity()]));
    let content_type = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_default();
    let mut metadata = Map::new();
    if let Some(b) = &req.body
        && !b.is_empty()
    {
        let body = if content_type.starts_with("application/octet-stream")
            || content_type.contains("multipart/")
        {
            base64::engine::general_purpose::STANDARD.encode(b)
        } else {
            String::from_utf8_lossy(b).into_owned()
        };
        if content_type.starts_with("application/json")
            && let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(b)
        {
            for (k, v) in o {
                match v {
                    Value::Array(_) => {}
                    Value::Object(_) => {
                        metadata.insert(k, v);
                    }
                    Value::String(s) => {
                        metadata.insert(k, double_encoded(&s));
                    }
                    other => {
                        metadata.insert(k, double_encoded(&other.to_string()));
                    }
                }
            }
        }
        req_obj.insert("Body".into(), Value::String(body));
    }
    for (k, v) in &query_last {
        if k != "code" {
            metadata.insert(k.clone(), double_encoded(v.as_str().unwrap()));
        }
    }
    for (k, v) in params {
        if let Value::String(s) = v {
            metadata.insert(k.clone(), double_encoded(s));
        }
    }
    metadata.insert("Query".into(), Value::Object(query_last));
    metadata.insert("Headers".into(), Value::Object(headers_flat));
    metadata.insert("sys".into(), sys(function, now));
    let mut data = Map::new();
    data.insert(binding.to_string(), Value::Object(req_obj));
    json!({"Data": data, "Metadata": metadata})
}

/// The timer invocation of a variant at the host time `utc_now`: `binding` is the trigger's
/// name in function.json, `retry` the `RetryContext` when the function has a retry policy.
pub fn timer_payload(
    function: &str,
    binding: &str,
    variant: TimerVariant,
    utc_now: DateTime<Utc>,
    retry: Option<Retry>,
) -> Value {
    let five = chrono::Duration::minutes(5);
    let status = match variant {
        TimerVariant::Scheduled | TimerVariant::Manual => {
            let next = if matches!(variant, TimerVariant::Manual) {
                utc_now + five
            } else {
                utc_now
            };
            json!({"Last": newtonsoft_date(next - five + chrono::Duration::microseconds(7142), false),
                "Next": newtonsoft_date(next, false),
                "LastUpdated": newtonsoft_date(next - five + chrono::Duration::microseconds(7142), false)})
        }
        TimerVariant::PastDue { missed } => json!({
            "Last": newtonsoft_date(missed - five, false),
            "Next": newtonsoft_date(missed, false),
            "LastUpdated": newtonsoft_date(missed - five, false)}),
        TimerVariant::FirstRun => json!({
            "Last": "0001-01-01T00:00:00+00:00",
            "Next": newtonsoft_date(utc_now, false),
            "LastUpdated": "0001-01-01T00:00:00+00:00"}),
        TimerVariant::MonitorOff => Value::Null,
    };
    let mut data = Map::new();
    data.insert(
        binding.to_string(),
        json!({"Schedule": {"AdjustForDST": true}, "ScheduleStatus": status,
            "IsPastDue": matches!(variant, TimerVariant::PastDue { .. })}),
    );
    let mut metadata = Map::new();
    if matches!(variant, TimerVariant::Manual) {
        // The admin endpoint's input lands in binding data, double-encoded (§8).
        metadata.insert(binding.to_string(), double_encoded(""));
    }
    metadata.insert("sys".into(), sys(function, utc_now));
    if let Some(r) = retry {
        metadata.insert(
            "RetryContext".into(),
            json!({"RetryCount": r.count, "MaxRetryCount": r.max,
                "Exception": null, "Instance": null, "State": {}}),
        );
    }
    json!({"Data": data, "Metadata": metadata})
}
