//! The host protocol: the routes the Functions host calls and the translation between its
//! envelopes and our request/response types.
//!
//! - `GET /`: the readiness ping; answered at once, before any database, vault or SMTP work.
//! - `POST /HttpTrigger`, `POST /Deliveries`, `POST /ReportDeliveries`, `POST /Health`,
//!   `POST /NightlyReport`: payload mode (the function name is the folder).
//! - `/{routePrefix}/reports[/{name}[/deliveries]]`, `/{routePrefix}/deliveries`,
//!   `/{routePrefix}/health`: forwarding mode, the client's raw request.
//!
//! Anything else gets a JSON 4xx that says what was wrong; nothing here panics on input.

pub mod envelope;
pub mod http_envelope;
pub mod logs;
pub mod reply;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use tracing::Instrument;

use crate::api::health::Health;
use crate::api::{self, ApiRequest, ApiResponse, ApiState, KeyGrant};
use crate::delivery::Delivery;
use envelope::{Envelope, EnvelopeError, HttpRequestData, TimerInfo};
use reply::{HostError, InvocationReply};

/// The folder name of the HTTP function, which is also its payload-mode path.
pub const HTTP_FUNCTION: &str = "HttpTrigger";
/// The folder name of the delivery history function (`GET /api/deliveries`).
pub const DELIVERIES_FUNCTION: &str = "Deliveries";
/// The folder name of one report's delivery history (`GET /api/reports/{name}/deliveries`).
pub const REPORT_DELIVERIES_FUNCTION: &str = "ReportDeliveries";
/// The folder name of the health check function (anonymous: `GET /api/health`).
pub const HEALTH_FUNCTION: &str = "Health";
/// The folder name of the timer function.
pub const TIMER_FUNCTION: &str = "NightlyReport";
/// The `httpTrigger` binding name in `HttpTrigger/function.json`.
pub const HTTP_BINDING: &str = "req";
/// The `http` output binding name.
pub const HTTP_OUTPUT: &str = "res";
/// The `timerTrigger` binding name in `NightlyReport/function.json`.
pub const TIMER_BINDING: &str = "timer";
/// Largest total size of request headers (names and values); more is answered 431. The
/// Functions host itself refuses more than 32 KB, so nothing legitimate comes near this.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Largest request body accepted on any route; envelopes of GET requests are a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How much of an oversized body is read and discarded before answering 413.
pub const MAX_DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// What the host's routes need: the API for HTTP invocations, delivery for the timer. Each
/// handler takes only its part (axum's `FromRef`).
#[derive(Clone, Debug)]
pub struct HostState {
    /// The report API.
    pub api: ApiState,
    /// The delivery part, for NightlyReport ticks.
    pub delivery: Arc<Delivery>,
    /// The health checks, for the `Health` function.
    pub health: Arc<Health>,
    /// The public path of the health check (`/api/health`), for forwarding mode.
    pub health_path: String,
}

impl FromRef<HostState> for ApiState {
    fn from_ref(s: &HostState) -> Self {
        s.api.clone()
    }
}

impl FromRef<HostState> for Arc<Health> {
    fn from_ref(s: &HostState) -> Self {
        s.health.clone()
    }
}

impl FromRef<HostState> for Arc<Delivery> {
    fn from_ref(s: &HostState) -> Self {
        s.delivery.clone()
    }
}

/// Builds the router the host talks to. Tests and production use this same function.
pub fn router(state: HostState) -> Router {
    let base = state.api.reports_path.clone();
    let health = state.health_path.clone();
    let deliveries = state.api.deliveries_path.clone();
    Router::new()
        .route("/", any(ready))
        .route(&format!("/{HTTP_FUNCTION}"), post(http_invocation))
        .route(&format!("/{DELIVERIES_FUNCTION}"), post(http_invocation))
        .route(
            &format!("/{REPORT_DELIVERIES_FUNCTION}"),
            post(http_invocation),
        )
        .route(&deliveries, any(forwarded))
        .route(&format!("{base}/{{name}}/deliveries"), any(forwarded))
        .route(&format!("/{HEALTH_FUNCTION}"), post(health_invocation))
        .route(&health, any(health_forwarded))
        .route(&format!("/{TIMER_FUNCTION}"), post(timer_invocation))
        .route(&base, any(forwarded))
        .route(&format!("{base}/"), any(forwarded))
        .route(&format!("{base}/{{name}}"), any(forwarded))
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn(cap_headers))
        .with_state(state)
}

/// Answers 431 when the request's headers exceed [`MAX_HEADER_BYTES`].
async fn cap_headers(req: Request, next: axum::middleware::Next) -> Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        return HostError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request headers exceed {} KiB", MAX_HEADER_BYTES / 1024),
        )
        .into_response();
    }
    next.run(req).await
}

async fn ready() -> Response {
    reply::json_response(StatusCode::OK, &serde_json::json!({"status": "ready"}))
}

async fn unknown_path(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (method, uri) = (parts.method, parts.uri);
    // Drain (bounded) so the connection stays usable; see `read_envelope`.
    let _ = read_body(body).await;
    HostError::new(
        StatusCode::NOT_FOUND,
        "unknown_function",
        format!(
            "no function is served at {} {}; the host posts to /{HTTP_FUNCTION} or /{TIMER_FUNCTION}",
            method,
            api::sanitize(uri.path())
        ),
    )
    .into_response()
}

async fn wrong_method(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let _ = read_body(body).await;
    HostError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not accepted at {}; the host POSTs invocations",
            parts.method,
            api::sanitize(parts.uri.path())
        ),
    )
    .into_response()
}

/// The invocation id the host put on the request, or a fresh one for hand-made calls.
fn invocation_id(headers: &HeaderMap) -> String {
    headers
        .get("x-azure-functions-invocationid")
        .and_then(|v| v.to_str().ok())
        .map(api::sanitize)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Reads a payload-mode body and parses the whole envelope (the timer reads `Metadata`).
async fn read_envelope(req: Request, invocation: &str) -> Result<Envelope, HostError> {
    let body = read_json_body(req, invocation).await?;
    Envelope::parse(&body).map_err(|e| malformed(e, invocation))
}

/// Reads a payload-mode body of an HTTP function and its `Data.req` in one pass: the HTTP
/// path reads nothing else, so no tree of the whole envelope is built (`http_envelope`).
async fn read_http_request(req: Request, invocation: &str) -> Result<HttpRequestData, HostError> {
    let body = read_json_body(req, invocation).await?;
    HttpRequestData::parse_envelope(&body, HTTP_BINDING).map_err(|e| malformed(e, invocation))
}

/// Reads a payload-mode body: JSON content type, bounded size, any transfer encoding.
async fn read_json_body(req: Request, invocation: &str) -> Result<Vec<u8>, HostError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    // Read the body before any verdict: answering early would leave unread bytes on a pooled
    // keep-alive connection, and the host's next request on it would fail.
    let body = read_body(req.into_body()).await.map_err(|too_large| {
        let message = if too_large {
            format!("the invocation body is larger than {MAX_BODY_BYTES} bytes")
        } else {
            "the invocation body was cut off".to_string()
        };
        HostError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
            .for_invocation(invocation)
    })?;
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media != "application/json" && media != "text/json" {
        return Err(HostError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "an invocation must be sent as application/json",
        )
        .for_invocation(invocation));
    }
    Ok(body)
}

/// Reads a body of at most [`MAX_BODY_BYTES`]. Past the limit the rest is drained (up to
/// [`MAX_DRAIN_BYTES`]) so the client reads our 413 instead of a reset connection.
/// `Err(true)` = too large, `Err(false)` = the body broke off.
async fn read_body(mut body: Body) -> Result<Vec<u8>, bool> {
    use http_body_util::BodyExt as _;
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| false)?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total > MAX_DRAIN_BYTES {
                return Err(true);
            }
            if total <= MAX_BODY_BYTES {
                buf.extend_from_slice(&data);
            }
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(true);
    }
    Ok(buf)
}

fn malformed(e: EnvelopeError, invocation: &str) -> HostError {
    HostError::new(StatusCode::BAD_REQUEST, "malformed_envelope", e.to_string())
        .for_invocation(invocation)
}

/// The invocation's span: the root of everything the invocation does, with the `faas.*`
/// attributes, continuing the caller's trace when its request carried `traceparent`.
fn invocation_span<'a>(
    function: &'static str,
    trigger: &'static str,
    id: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> tracing::Span {
    let parent = crate::telemetry::remote_parent(headers);
    let span = tracing::info_span!(
        logs::INVOCATION_SPAN,
        invocation_id = %id,
        function = function,
        otel.name = function,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        faas.name = function,
        faas.trigger = trigger,
        faas.invocation_id = %id,
        http.response.status_code = tracing::field::Empty,
        api.key_name = tracing::field::Empty,
    );
    drop(parent);
    span
}

/// Records an HTTP invocation's status on its span (5xx is an error, with the same opaque
/// text the client sees in the problem's title), and counts it, by the API key's name when a
/// key matched (`api.key_name`: the name, never the key).
fn record_status(
    span: &tracing::Span,
    function: &'static str,
    status: StatusCode,
    key_name: Option<&str>,
) {
    span.record("http.response.status_code", status.as_u16());
    crate::telemetry::api_request(function, status.as_u16(), key_name);
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record(
            "otel.status_description",
            status.canonical_reason().unwrap_or("error"),
        );
    }
}

fn header_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
}

/// Payload mode of `HttpTrigger`.
async fn http_invocation(State(api): State<ApiState>, req: Request) -> Response {
    let id = invocation_id(req.headers());
    let data = match read_http_request(req, &id).await {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let api_req = match api_request_from_payload(data) {
        Ok(r) => r,
        Err(msg) => {
            return HostError::new(StatusCode::BAD_REQUEST, "malformed_envelope", msg)
                .for_invocation(&id)
                .into_response();
        }
    };
    logs::begin(&id);
    let telemetry = crate::telemetry::invocation();
    let function = api.function_for(&api_req.path);
    let span = invocation_span(function, "http", &id, header_pairs(&api_req.headers));
    // Payload mode carries the whole body in the reply: a streamed export is collected here.
    let (resp, grant) = async {
        let (resp, grant) = api::handle_keyed(&api, api_req).await;
        (collect_stream(resp).await, grant)
    }
    .instrument(span.clone())
    .await;
    record_status(
        &span,
        function,
        resp.status,
        grant.as_deref().map(KeyGrant::name),
    );
    drop(span);
    let lines = logs::finish(&id);
    telemetry.end().await;
    http_reply(resp, lines)
}

/// Payload mode of `Health`: the checks, as `Outputs.res`.
async fn health_invocation(State(health): State<Arc<Health>>, req: Request) -> Response {
    let id = invocation_id(req.headers());
    let data = match read_http_request(req, &id).await {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let Ok(method) = Method::from_bytes(data.method.as_bytes()) else {
        return HostError::new(
            StatusCode::BAD_REQUEST,
            "malformed_envelope",
            "`Data.req.Method` is not an HTTP method",
        )
        .for_invocation(&id)
        .into_response();
    };
    logs::begin(&id);
    let telemetry = crate::telemetry::invocation();
    let span = invocation_span(
        HEALTH_FUNCTION,
        "http",
        &id,
        data.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let resp = health.handle(&method).instrument(span.clone()).await;
    record_status(&span, HEALTH_FUNCTION, resp.status, None);
    drop(span);
    let lines = logs::finish(&id);
    telemetry.end().await;
    http_reply(resp, lines)
}

/// Forwarding mode of `Health`.
async fn health_forwarded(State(health): State<Arc<Health>>, req: Request) -> Response {
    let id = invocation_id(req.headers());
    let (parts, body) = req.into_parts();
    let _ = read_body(body).await;
    let telemetry = crate::telemetry::invocation();
    let span = invocation_span(HEALTH_FUNCTION, "http", &id, header_pairs(&parts.headers));
    let resp = health.handle(&parts.method).instrument(span.clone()).await;
    record_status(&span, HEALTH_FUNCTION, resp.status, None);
    drop(span);
    telemetry.end().await;
    into_http_response(resp)
}

/// A streamed body collected for payload mode, which carries the body inside the envelope: an
/// export that fails here has not sent anything yet, so the client gets a proper 500.
async fn collect_stream(mut resp: ApiResponse) -> ApiResponse {
    let Some(stream) = resp.stream.take() else {
        return resp;
    };
    if resp
        .header("content-type")
        .is_some_and(|t| !t.starts_with("text/") && !t.starts_with("application/json"))
    {
        // A large workbook: payload mode could not carry it anyway. Dropping the stream stops
        // its export before the rows are read, instead of building it only to refuse it.
        drop(stream);
        return binary_needs_forwarding();
    }
    match stream.collect().await {
        Ok(body) => {
            resp.body = body;
            resp
        }
        Err(_) => api::Problem::internal().into_response(),
    }
}

/// An API response as the payload-mode reply: `Outputs.res` plus the captured `Logs`, written
/// in one pass (`reply::write_http_reply`).
fn http_reply(resp: ApiResponse, lines: Vec<String>) -> Response {
    match std::str::from_utf8(&resp.body) {
        Ok(text) => reply::reply_response(reply::write_http_reply(
            HTTP_OUTPUT,
            resp.status.as_u16(),
            &resp.headers,
            text,
            &lines,
        )),
        Err(_) => {
            let p = binary_needs_forwarding();
            reply::reply_response(reply::write_http_reply(
                HTTP_OUTPUT,
                p.status.as_u16(),
                &p.headers,
                std::str::from_utf8(&p.body).unwrap_or_default(),
                &lines,
            ))
        }
    }
}

/// Payload mode carries only text bodies (the host writes `body` as a string), so a workbook or
/// image cannot reach the client this way: a 406 that says how, instead of a corrupted body.
fn binary_needs_forwarding() -> ApiResponse {
    api::Problem::new(
        axum::http::StatusCode::NOT_ACCEPTABLE,
        "binary-needs-forwarding",
        "Not available in payload mode",
        "XLSX and PNG are binary; the Functions host's payload mode carries only text. \
         Set customHandler.enableProxyingHttpRequest (or enableForwardingHttpRequest) \
         to true in host.json, or use format=json, csv or html",
    )
    .into_response()
}

/// The API request of a payload-mode invocation, moving the parsed strings rather than
/// copying them.
fn api_request_from_payload(mut data: HttpRequestData) -> Result<ApiRequest, String> {
    let method = Method::from_bytes(data.method.as_bytes())
        .map_err(|_| "`Data.req.Method` is not an HTTP method".to_string())?;
    let mut headers = HeaderMap::with_capacity(data.headers.len());
    for (k, v) in &data.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.append(name, value);
        }
    }
    Ok(ApiRequest {
        method,
        path: data.path(),
        route_name: data.params.remove("name"),
        query: data.query.into_iter().collect(),
        headers,
    })
}

/// Forwarding mode: the client's request as the host re-sent it.
async fn forwarded(State(api): State<ApiState>, req: Request) -> Response {
    let id = invocation_id(req.headers());
    let (parts, body) = req.into_parts();
    // The API takes no request bodies; drain (bounded) so the connection stays usable.
    let _ = read_body(body).await;
    let api_req = ApiRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parse_query(parts.uri.query().unwrap_or("")),
        headers: parts.headers,
        route_name: None,
    };
    let telemetry = crate::telemetry::invocation();
    let function = api.function_for(&api_req.path);
    let span = invocation_span(function, "http", &id, header_pairs(&api_req.headers));
    let (resp, grant) = api::handle_keyed(&api, api_req)
        .instrument(span.clone())
        .await;
    record_status(
        &span,
        function,
        resp.status,
        grant.as_deref().map(KeyGrant::name),
    );
    drop(span);
    telemetry.end().await;
    into_http_response(resp)
}

/// Parses a query string; repeated keys are comma-joined, as the host does.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if let Some((_, existing)) = out.iter_mut().find(|(ek, _)| *ek == k) {
            existing.push(',');
            existing.push_str(&v);
        } else {
            out.push((k.into_owned(), v.into_owned()));
        }
    }
    out
}

/// Turns an API response into a plain HTTP response (forwarding mode, `handler dev`).
pub fn into_http_response(resp: ApiResponse) -> Response {
    let mut builder = Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            builder = builder.header(name, value);
        }
    }
    let body = match resp.stream {
        // Chunk by chunk as the export produces them (hyper sends them chunked).
        Some(stream) => Body::from_stream(stream.into_stream()),
        None => Body::from(resp.body),
    };
    builder
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Payload mode of `NightlyReport`: the tick.
async fn timer_invocation(State(delivery): State<Arc<Delivery>>, req: Request) -> Response {
    let id = invocation_id(req.headers());
    let env = match read_envelope(req, &id).await {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let timer = match TimerInfo::from_envelope(&env, TIMER_BINDING) {
        Ok(t) => t,
        Err(e) => return malformed(e, &id).into_response(),
    };
    let sys = env.sys();
    let tick = sys
        .as_ref()
        .and_then(|s| s.utc_now)
        .unwrap_or_else(chrono::Utc::now);
    let retry = env.retry_context().map(|r| r.retry_count).unwrap_or(0);
    logs::begin(&id);
    // Ticks start a new trace: the host's timer has no caller to continue.
    let telemetry = crate::telemetry::invocation();
    let span = invocation_span(TIMER_FUNCTION, "timer", &id, std::iter::empty());
    let outcome = async {
        tracing::info!(
            tick = %tick.to_rfc3339(),
            past_due = timer.is_past_due,
            retry_count = retry,
            "NightlyReport tick"
        );
        crate::delivery::tick::run_tick(&delivery, tick)
            .await
            .map(|_| ())
    }
    .instrument(span.clone())
    .await;
    if let Err(e) = &outcome {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", format!("{e:#}"));
    }
    drop(span);
    let lines = logs::finish(&id);
    telemetry.end().await;
    match outcome {
        Ok(()) => InvocationReply::with_logs(lines).into_response(),
        Err(e) => {
            // The host drops the body of a non-2xx reply: the log line above already went to
            // stdout, and this one says why the invocation failed.
            tracing::error!(invocation_id = %id, error.message = %format!("{e:#}"), "NightlyReport failed");
            HostError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "invocation_failed",
                format!("{e:#}"),
            )
            .for_invocation(&id)
            .into_response()
        }
    }
}
