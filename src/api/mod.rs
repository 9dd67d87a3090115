//! The public report API behind `HttpTrigger`.
//!
//! Both host modes end here: payload mode (`POST /HttpTrigger` with the envelope) and forwarding
//! mode (the raw `GET /api/reports/...`) are each turned into one [`ApiRequest`], answered by
//! [`handle`], and the [`ApiResponse`] is turned back into `Outputs.res` or a plain HTTP
//! response. One code path means both modes give the same status, headers and body.

pub mod auth;
pub mod cache;
pub mod deliveries;
pub mod health;
pub mod params;
pub mod problem;
pub mod scope;
pub mod state;
pub mod stream;

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};
use chrono::Utc;
use serde::Serialize;

use crate::data::DataError;
use crate::render;
use crate::report::EngineError;
use crate::report::{Report, ReportSet, Window};
use crate::secrets::{SecretErrorKind, SecretSetting};
use cache::{Rendered, ReportData};
pub use problem::Problem;
pub use scope::KeyGrant;
pub use state::ApiState;

/// A client request, independent of how the host delivered it.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// The client's method.
    pub method: Method,
    /// The public path, including the route prefix (`/api/reports/daily-sales`).
    pub path: String,
    /// Query parameters in order; a key repeated by the client arrives comma-joined.
    pub query: Vec<(String, String)>,
    /// Request headers (names are case-insensitive).
    pub headers: HeaderMap,
    /// The `{name}` route value when the host supplied it (payload mode `Params`).
    pub route_name: Option<String>,
}

impl ApiRequest {
    /// The first query value for `key`.
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A response, independent of how the host will deliver it. Bodies are bytes: text (JSON,
/// CSV, HTML), which payload mode carries exactly, or a workbook or image, which only a
/// plain HTTP response (forwarding and proxying modes, `handler dev`) can carry. A large CSV
/// or JSON export comes as `stream` instead (then `body` is empty): a plain HTTP response
/// sends it chunk by chunk, payload mode collects it into the envelope.
#[derive(Debug)]
pub struct ApiResponse {
    /// The status the client sees.
    pub status: StatusCode,
    /// Header names in lower case, values as strings (the host accepts nothing else).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The body, when it is produced while it is sent (a streamed export).
    pub stream: Option<stream::BodyStream>,
}

impl ApiResponse {
    /// A response with a content type.
    pub fn new(status: StatusCode, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
            stream: None,
        }
    }

    /// A JSON response.
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        match serde_json::to_string(value) {
            Ok(body) => Self::new(status, "application/json; charset=utf-8", body),
            Err(e) => {
                tracing::error!(error.message = %e, "could not serialise a response");
                Problem::internal().into_response()
            }
        }
    }

    /// The value of a header, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Which resource a path names.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    List,
    Report(String),
    /// The delivery history: of every report the key sees, or of one.
    Deliveries(Option<String>),
}

fn route(api: &ApiState, req: &ApiRequest) -> Option<Route> {
    if req.path.trim_end_matches('/') == api.deliveries_path {
        return Some(Route::Deliveries(None));
    }
    let rest = req.path.strip_prefix(api.reports_path.as_str())?;
    if let Some(name) = rest
        .trim_end_matches('/')
        .strip_suffix("/deliveries")
        .and_then(|r| r.strip_prefix('/'))
        .filter(|n| !n.is_empty() && !n.contains('/'))
    {
        return Some(Route::Deliveries(Some(
            req.route_name.clone().unwrap_or_else(|| name.to_string()),
        )));
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return match &req.route_name {
            Some(n) if !n.is_empty() => Some(Route::Report(n.clone())),
            _ => Some(Route::List),
        };
    }
    let name = rest.strip_prefix('/')?;
    if name.contains('/') {
        return None;
    }
    Some(Route::Report(
        req.route_name.clone().unwrap_or_else(|| name.to_string()),
    ))
}

/// Answers one API request.
pub async fn handle(api: &ApiState, req: ApiRequest) -> ApiResponse {
    handle_keyed(api, req).await.0
}

/// Answers one API request, and says which key's name it was answered for (`None` before a
/// key matched), for the request's telemetry (`api.key_name` on the request metric). The name
/// is also recorded on the current span's `api.key_name` field when the span declares one.
pub async fn handle_keyed(api: &ApiState, req: ApiRequest) -> (ApiResponse, Option<Arc<KeyGrant>>) {
    let Some(route) = route(api, &req) else {
        let resp = Problem::not_found(format!(
            "no resource at this path; the API lives under {}",
            api.reports_path
        ))
        .into_response();
        return (resp, None);
    };
    if req.method != Method::GET && req.method != Method::HEAD {
        return (
            Problem::method_not_allowed(req.method.as_str()).into_response(),
            None,
        );
    }
    let grant = match authenticate(api, &req).await {
        Ok(g) => g,
        Err(p) => return (p.into_response(), None),
    };
    let resp = answer(api, &req, route, &grant).await;
    (resp, Some(grant))
}

/// Answers an authenticated request within the key's grant.
async fn answer(api: &ApiState, req: &ApiRequest, route: Route, grant: &KeyGrant) -> ApiResponse {
    let reports = match api.engine.reports() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error.message = %e, "the reports file is invalid");
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "reports-unavailable",
                "Reports unavailable",
                "the reports file is invalid; the handler's log and `handler check` say what is wrong",
            )
            .retry_after(60)
            .into_response();
        }
    };
    match route {
        Route::List => match params::list_format(req) {
            Ok(()) => {
                // Only the reports the key may see; a full-access key gets the list rendered once.
                let list = if grant.sees_all_reports() {
                    api.report_list()
                } else {
                    list_body(grant.visible(&reports.reports))
                };
                let resp = ApiResponse::new(
                    StatusCode::OK,
                    "application/json; charset=utf-8",
                    list.body.to_vec(),
                );
                with_etag(req, resp, &list.etag, "no-cache")
            }
            Err(p) => p.into_response(),
        },
        // Boxed: these futures are large (the report run, the ledger query), and a future is
        // moved by value while it is set up; a cached answer would otherwise spend most of its
        // instructions copying them (callgrind, BENCHMARKS.md 2026-12-05).
        Route::Report(name) => Box::pin(report(api, req, &reports, &name, grant)).await,
        Route::Deliveries(one) => Box::pin(delivery_history(api, req, &reports, one, grant)).await,
    }
}

impl ApiState {
    /// The function folder that serves `path` (`HttpTrigger`, `Deliveries`,
    /// `ReportDeliveries`), for the invocation's span and request metric.
    pub fn function_for(&self, path: &str) -> &'static str {
        let path = path.trim_end_matches('/');
        if path == self.deliveries_path {
            crate::functions::DELIVERIES_FUNCTION
        } else if path.starts_with(self.reports_path.as_str()) && path.ends_with("/deliveries") {
            crate::functions::REPORT_DELIVERIES_FUNCTION
        } else {
            crate::functions::HTTP_FUNCTION
        }
    }
}

/// 404 for a report that does not exist, or that the key may not see: one body for both.
fn unknown_report(name: &str) -> ApiResponse {
    Problem::new(
        StatusCode::NOT_FOUND,
        "unknown-report",
        "Unknown report",
        format!("there is no report named `{}`", sanitize(name)),
    )
    .into_response()
}

/// `GET /api/deliveries` (needs a key with `"deliveries": true`, lists only the key's
/// reports) and `GET /api/reports/{name}/deliveries` (the same permission; a report the key
/// may not see is an unknown report).
async fn delivery_history(
    api: &ApiState,
    req: &ApiRequest,
    reports: &ReportSet,
    one: Option<String>,
    grant: &KeyGrant,
) -> ApiResponse {
    if let Some(name) = &one
        && reports
            .get(name)
            .is_none_or(|r| !grant.can_see_report(&r.name))
    {
        return unknown_report(name);
    }
    if !grant.can_list_deliveries() {
        tracing::info!(api.key_name = %grant.name(), "the key may not read the delivery history");
        return Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "this API key may not read the delivery history (\"deliveries\": true in API_KEYS)",
        )
        .into_response();
    }
    let Some(delivery) = &api.delivery else {
        return Problem::not_found("this handler keeps no delivery history").into_response();
    };
    let visible: Option<Vec<String>> = (!grant.sees_all_reports()).then(|| {
        grant
            .visible(&reports.reports)
            .map(|r| r.name.clone())
            .collect()
    });
    let scope = match &one {
        Some(name) => deliveries::Scope::One(name),
        None => deliveries::Scope::Reports(visible.as_deref()),
    };
    deliveries::history(delivery, req, reports, scope).await
}

/// The key's grant; 401 for a missing or wrong key, 503 when no key can be had (fail closed).
async fn authenticate(api: &ApiState, req: &ApiRequest) -> Result<Arc<KeyGrant>, Problem> {
    let valid = match api.secrets.get(SecretSetting::ApiKeys).await {
        Ok(v) => v,
        Err(e) if e.kind() == SecretErrorKind::NotConfigured => {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-configured",
                "Endpoint not configured",
                "no API keys are configured (API_KEYS), so every request is refused",
            )
            .retry_after(300));
        }
        Err(e) => {
            tracing::warn!(error.message = %e, "API keys unavailable; refusing the request");
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "vault-unavailable",
                "Key Vault unavailable",
                "the API keys cannot be read from Key Vault right now; try again shortly",
            )
            .retry_after(e.retry_after_secs().unwrap_or(10)));
        }
    };
    let (keys, fresh) = api.keys.get(&valid);
    let keys = match keys.as_ref() {
        Ok(keys) => {
            if fresh {
                auth::log_new_keys(keys, api.engine.reports().ok().as_deref());
            }
            keys
        }
        Err(e) => {
            // Weak or malformed keys are treated as no keys: fail closed, and say why once per
            // value.
            if fresh {
                tracing::error!(error.message = %e, "API_KEYS is refused; every API request answers 503");
            }
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-configured",
                "Endpoint not configured",
                "the configured API keys (API_KEYS) are refused as too weak or malformed, so every request is refused",
            )
            .retry_after(300));
        }
    };
    match auth::presented_key(&req.headers).and_then(|k| keys.authenticate(&k)) {
        Some(grant) => {
            tracing::Span::current().record("api.key_name", grant.name());
            tracing::debug!(api.key_name = %grant.name(), "API request authenticated");
            Ok(grant)
        }
        None => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "present a valid API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`",
        )
        .header("www-authenticate", "Bearer")),
    }
}

/// The body of `GET /api/reports`: built once for full-access keys, since the reports file is
/// read once; per request for the reports a scoped key sees.
pub fn list_body<'a>(reports: impl IntoIterator<Item = &'a Report>) -> Rendered {
    let items: Vec<serde_json::Value> = reports
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "title": r.title,
                "description": r.description,
                "schedule": r.schedule.expression(),
                "time_zone": r.time_zone.name(),
                "window": r.window.to_string(),
                "sections": r.sections.iter().map(|s| s.title.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Rendered::new(serde_json::json!({ "reports": items }).to_string())
}

async fn report(
    api: &ApiState,
    req: &ApiRequest,
    reports: &Arc<ReportSet>,
    name: &str,
    grant: &KeyGrant,
) -> ApiResponse {
    let format = match params::format(req) {
        Ok(f) => f,
        Err(p) => return p.into_response(),
    };
    let query = match params::window_query(req) {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    // A report outside the key's scope is answered exactly as an unknown one: same status,
    // same body, at the same point, so nothing tells the two apart.
    let visible = reports.get(name).filter(|r| {
        let allowed = grant.can_see_report(&r.name);
        if !allowed {
            tracing::info!(api.key_name = %grant.name(), report = %r.name, "the key may not see this report; answered as an unknown report");
        }
        allowed
    });
    let Some(report) = visible else {
        return unknown_report(name);
    };
    let recipient = match recipient_key(req, report, grant) {
        Ok(k) => k,
        Err(p) => return p.into_response(),
    };
    let now = Utc::now();
    let window = match resolve_window(report, query, now, api.max_range_days) {
        Ok(w) => w,
        Err(p) => return p.into_response(),
    };
    if let params::Format::Csv { section } | params::Format::Png { section } = format
        && section > report.sections.len()
    {
        return Problem::bad_parameter(format!(
            "section: the report has {} section(s)",
            report.sections.len()
        ))
        .into_response();
    }
    if let params::Format::Png { section } = format
        && report.sections[section - 1].display.chart.is_none()
    {
        return Problem::not_found(format!(
            "section {section} of `{}` has no chart",
            report.name
        ))
        .into_response();
    }
    let ended = window.has_ended(now);
    let cache = if ended {
        "private, max-age=3600"
    } else {
        "no-store"
    };
    // CSV, JSON and XLSX: a result of up to MAX_KEPT_ROWS rows is run into memory (shared by
    // concurrent requests, kept for an ended window, answered with a strong ETag of its body);
    // a larger one is streamed from the database (`stream.rs`) with a weak ETag that names the
    // report definition and the window. HTML and charts need the whole table.
    // One recipient's rows are small and never streamed (the stream runs without a key).
    let streamable = recipient.is_none()
        && matches!(
            format,
            params::Format::Json | params::Format::Csv { .. } | params::Format::Xlsx
        );
    let key = (
        report.name.clone(),
        window.start,
        window.end,
        streamable,
        recipient.as_ref().map(ToString::to_string),
    );
    // The weak tag is a hash of the report's SQL: computed only where it is used (a revalidation
    // or a streamed answer), never on the cached path.
    let weak = || export_etag(report, &window, format, api.engine.max_rows());
    if streamable && ended {
        if req.headers.contains_key("if-none-match") {
            let tag = weak();
            if if_none_match(req, &tag) {
                return not_modified(tag, cache);
            }
        }
        if api.flights.is_large(&key) {
            return streamed(api, reports, report, &window, format, ended, weak(), cache);
        }
    }
    // The run is boxed: its future is large, and a cached answer must not pay for moving it.
    let data = match api
        .flights
        .get_or_run(key.clone(), ended, || {
            Box::pin(async {
                let sections = if streamable {
                    api.engine
                        .run_report_within(report, &window, cache::MAX_KEPT_ROWS)
                        .await?
                } else {
                    Some(
                        api.engine
                            .run_report_keyed(report, &window, recipient.as_ref())
                            .await?,
                    )
                };
                match sections {
                    Some(s) => Ok(ReportData::new(s, Utc::now())),
                    None => Err(RunError::TooLarge),
                }
            })
        })
        .await
    {
        Ok(d) => d,
        Err(RunError::TooLarge) => {
            if ended {
                api.flights.mark_large(key);
            }
            return streamed(api, reports, report, &window, format, ended, weak(), cache);
        }
        Err(RunError::Engine(e)) => return engine_problem(&e).into_response(),
    };
    if let params::Format::Png { section } = format
        && data.sections[section - 1].table.rows.is_empty()
    {
        return Problem::not_found(format!(
            "section {section} has no rows in this window, so it has no chart"
        ))
        .into_response();
    }
    // Only when the body is rendered (not on every cached answer).
    let render = || -> Result<Vec<u8>, String> {
        let _span = tracing::info_span!("report.render", render.format = ?format).entered();
        let attachments = crate::delivery::email::attachment_names(report, &window, &data.sections);
        match format {
            params::Format::Json => {
                let ctx = report.render_context(&window, data.generated_at, &attachments, &[]);
                Ok(render::render_json(&ctx, &data.sections).into_bytes())
            }
            params::Format::Html => {
                let charts = render::chart::data_uri_charts(&data.sections, report.locale);
                let ctx = report.render_context(&window, data.generated_at, &attachments, &charts);
                Ok(render::render_html(&ctx, &data.sections).into_bytes())
            }
            params::Format::Csv { section } => {
                Ok(render::render_csv(&data.sections[section - 1].table).into_bytes())
            }
            params::Format::Xlsx => {
                let ctx = report.render_context(&window, data.generated_at, &[], &[]);
                render::render_xlsx(&ctx, &data.sections)
            }
            params::Format::Png { section } => {
                render::chart::render_section_png(&data.sections[section - 1], report.locale)
                    .map(|c| c.png)
                    .ok_or_else(|| "the chart could not be drawn".to_string())
            }
        }
    };
    let key = format!("{format:?}");
    let cached = if ended {
        data.rendered.lock().ok().and_then(|m| m.get(&key).cloned())
    } else {
        None
    };
    let rendered = match cached {
        Some(r) => r,
        None => match render() {
            Ok(body) => {
                let r = Rendered::new(body);
                if ended && let Ok(mut m) = data.rendered.lock() {
                    m.insert(key, r.clone());
                }
                r
            }
            Err(e) => {
                tracing::error!(report = %report.name, error.message = %e, "rendering failed");
                return Problem::internal().into_response();
            }
        },
    };
    let mut resp = ApiResponse::new(StatusCode::OK, content_type(format), rendered.body.to_vec());
    if let Some(name) = attachment_file_name(report, &window, format) {
        resp.headers.push((
            "content-disposition".into(),
            format!("attachment; filename=\"{name}\""),
        ));
    }
    with_etag(req, resp, &rendered.etag, cache)
}

/// `?recipient_key=K`: one recipient's rows of a per-recipient report (`recipients_query`),
/// the sections run with `:recipient_key` bound to K, as that recipient's email has them. Only
/// for keys with `"recipient_keys": true` (403 otherwise: the key would see other recipients'
/// rows); 400 for a report without `recipients_query`. A key that looks like an integer is
/// bound as one (so `team_id = :recipient_key` works on PostgreSQL too), else as text.
fn recipient_key(
    req: &ApiRequest,
    report: &Report,
    grant: &KeyGrant,
) -> Result<Option<crate::data::RecipientKey>, Problem> {
    let Some(v) = req.query_value("recipient_key") else {
        return Ok(None);
    };
    if !grant.can_use_recipient_key() {
        tracing::info!(api.key_name = %grant.name(), report = %report.name, "the key may not ask for a recipient's rows");
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            "this API key may not ask for a recipient's rows (\"recipient_keys\": true in API_KEYS)",
        ));
    }
    if report.recipients_query.is_none() {
        return Err(Problem::bad_parameter(format!(
            "recipient_key: `{}` is not a per-recipient report (it has no recipients_query)",
            report.name
        )));
    }
    let v = v.trim();
    if v.is_empty() || v.chars().count() > 256 || v.chars().any(char::is_control) {
        return Err(Problem::bad_parameter(
            "recipient_key: expected a recipient's key: text or an integer, 1 to 256 characters"
                .to_string(),
        ));
    }
    Ok(Some(match v.parse::<i64>() {
        Ok(n) => crate::data::RecipientKey::Int(n),
        Err(_) => crate::data::RecipientKey::Text(v.to_string()),
    }))
}

/// Why a report run produced no data to answer from.
enum RunError {
    /// The database or a secret failed.
    Engine(EngineError),
    /// More rows than the API keeps in memory: the export is streamed instead.
    TooLarge,
}

impl From<EngineError> for RunError {
    fn from(e: EngineError) -> Self {
        RunError::Engine(e)
    }
}

/// The file name a download is saved under (`Content-Disposition`), as the email attaches it:
/// CSV and XLSX only. The caller has checked that a CSV's section exists.
fn attachment_file_name(
    report: &Report,
    window: &Window,
    format: params::Format,
) -> Option<String> {
    match format {
        params::Format::Csv { section } => Some(render::csv_file_name(
            &report.name,
            window.date,
            section,
            &report.sections[section - 1].title,
        )),
        params::Format::Xlsx => Some(render::xlsx_file_name(&report.name, window.date)),
        _ => None,
    }
}

/// The media type of a format.
fn content_type(format: params::Format) -> &'static str {
    match format {
        params::Format::Json => "application/json; charset=utf-8",
        params::Format::Html => "text/html; charset=utf-8",
        params::Format::Csv { .. } => "text/csv; charset=utf-8",
        params::Format::Xlsx => render::xlsx::XLSX_CONTENT_TYPE,
        params::Format::Png { .. } => "image/png",
    }
}

/// A streamed CSV, JSON or XLSX export: the same status, media type, file name and caching
/// headers as a rendered one; the ETag is weak (the body is not known before it is sent) and
/// only for an ended window, whose rows do not change.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per path; all are request facts"
)]
fn streamed(
    api: &ApiState,
    reports: &Arc<ReportSet>,
    report: &Report,
    window: &Window,
    format: params::Format,
    ended: bool,
    weak_etag: String,
    cache: &str,
) -> ApiResponse {
    let body = stream::spawn_export(
        api.engine.clone(),
        reports.clone(),
        report.name.clone(),
        window.clone(),
        format,
    );
    let mut resp = ApiResponse::new(StatusCode::OK, content_type(format), Vec::new());
    resp.stream = Some(body);
    if let Some(name) = attachment_file_name(report, window, format) {
        resp.headers.push((
            "content-disposition".into(),
            format!("attachment; filename=\"{name}\""),
        ));
    }
    if ended {
        resp.headers.push(("etag".into(), weak_etag));
    }
    resp.headers.push(("cache-control".into(), cache.into()));
    resp
}

/// The weak ETag of a streamed export: a hash of what decides its bytes (the report's queries
/// and section titles, the window, the format and `MAX_ROWS`). Rows of an ended window do not
/// change (the assumption the run cache makes too), so the same tag means the same rows;
/// `generated_at` differs from run to run, hence weak.
fn export_etag(
    report: &Report,
    window: &Window,
    format: params::Format,
    max_rows: usize,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"export\0");
    h.update(report.name.as_bytes());
    for s in &report.sections {
        h.update(b"\0");
        h.update(s.title.as_bytes());
        h.update(b"\0");
        h.update(s.query.as_bytes());
    }
    h.update(
        format!(
            "\0{}\0{}\0{format:?}\0{max_rows}",
            window.start.to_rfc3339(),
            window.end.to_rfc3339()
        )
        .as_bytes(),
    );
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

/// True when `If-None-Match` names `etag` (weak comparison, or `*`).
fn if_none_match(req: &ApiRequest, etag: &str) -> bool {
    let bare = etag.strip_prefix("W/").unwrap_or(etag);
    req.headers
        .get_all("if-none-match")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t == etag || t == bare || t.strip_prefix("W/") == Some(bare)
        })
}

fn not_modified(etag: String, cache_control: &str) -> ApiResponse {
    ApiResponse {
        status: StatusCode::NOT_MODIFIED,
        headers: vec![
            ("etag".into(), etag),
            ("cache-control".into(), cache_control.into()),
        ],
        body: Vec::new(),
        stream: None,
    }
}

/// Maps a report-engine failure to a problem: unavailable dependencies are 503 with
/// `Retry-After`; anything else is a 500 whose cause is logged once, never returned.
fn engine_problem(e: &EngineError) -> Problem {
    match e {
        EngineError::Secret(err) => {
            tracing::warn!(error.message = %err, "a secret for the report is unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "vault-unavailable",
                "Key Vault unavailable",
                "the database connection string cannot be read from Key Vault right now",
            )
            .retry_after(err.retry_after_secs().unwrap_or(10))
        }
        EngineError::Data(err)
            if err.is_unavailable()
                || err.is_auth_failure()
                || matches!(err, DataError::Timeout(_)) =>
        {
            tracing::warn!(error.message = %err, "the database is unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "Database unavailable",
                "the report database is unavailable or too slow right now; try again shortly",
            )
            .retry_after(30)
        }
        other => {
            tracing::error!(error.message = %other, "report failed");
            Problem::internal()
        }
    }
}

/// Adds a strong ETag (computed by the caller, once per body) and `Cache-Control`, and
/// answers `If-None-Match` with 304.
fn with_etag(
    req: &ApiRequest,
    mut resp: ApiResponse,
    etag: &str,
    cache_control: &str,
) -> ApiResponse {
    let etag = etag.to_string();
    let matches = req
        .headers
        .get_all("if-none-match")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t == etag || t.strip_prefix("W/") == Some(etag.as_str())
        });
    if matches {
        return ApiResponse {
            status: StatusCode::NOT_MODIFIED,
            headers: vec![
                ("etag".into(), etag),
                ("cache-control".into(), cache_control.into()),
            ],
            body: Vec::new(),
            stream: None,
        };
    }
    resp.headers.push(("etag".into(), etag));
    resp.headers
        .push(("cache-control".into(), cache_control.into()));
    resp
}

/// Turns the client's window query into a window of the report, or a 400.
fn resolve_window(
    report: &Report,
    query: params::WindowQuery,
    now: chrono::DateTime<Utc>,
    max_range_days: u32,
) -> Result<Window, Problem> {
    let bad = Problem::bad_parameter;
    let timing = report.timing();
    match query {
        params::WindowQuery::Latest => Window::latest_completed(&timing, now)
            .ok_or_else(|| bad("the report's schedule has no completed window yet".to_string())),
        params::WindowQuery::Date(d) => Window::for_local_date(&timing, d).ok_or_else(|| {
            bad(format!(
                "date: the report's schedule has no occurrence on {d}"
            ))
        }),
        params::WindowQuery::Range { from, to } => {
            let tz = report.time_zone;
            let local_midnight = |d: chrono::NaiveDate| {
                d.and_hms_opt(0, 0, 0)
                    .and_then(|t| crate::report::schedule::local_to_utc(tz, t))
            };
            let start = match from {
                params::Bound::Instant(t) => Some(t),
                params::Bound::Date(d) => local_midnight(d),
            };
            let end = match to {
                params::Bound::Instant(t) => Some(t),
                params::Bound::Date(d) => d.succ_opt().and_then(local_midnight),
            };
            let (Some(start), Some(end)) = (start, end) else {
                return Err(bad("from/to: the dates are out of range".to_string()));
            };
            if start >= end {
                return Err(bad("from: must be before `to`".to_string()));
            }
            if end - start
                > chrono::Duration::days(i64::from(max_range_days)) + chrono::Duration::hours(1)
            {
                return Err(bad(format!(
                    "to: the range is longer than {max_range_days} days (MAX_RANGE_DAYS)"
                )));
            }
            Ok(Window::explicit(&timing, start, end))
        }
    }
}

/// Keeps echoed client input short and printable.
pub fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}
