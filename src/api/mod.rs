//! The public report API behind `HttpTrigger`.
//!
//! Both host modes end here: payload mode (`POST /HttpTrigger` with the envelope) and forwarding
//! mode (the raw `GET /api/reports/...`) are each turned into one [`ApiRequest`], answered by
//! [`handle`], and the [`ApiResponse`] is turned back into `Outputs.res` or a plain HTTP
//! response. One code path means both modes give the same status, headers and body.

pub mod problem;

use axum::http::{HeaderMap, Method, StatusCode};
use serde::Serialize;

use crate::App;
pub use problem::Problem;

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

/// A response, independent of how the host will deliver it. Bodies are text (JSON, CSV, HTML),
/// which is what payload mode can carry exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// The status the client sees.
    pub status: StatusCode,
    /// Header names in lower case, values as strings (the host accepts nothing else).
    pub headers: Vec<(String, String)>,
    /// The body text.
    pub body: String,
}

impl ApiResponse {
    /// A response with a content type.
    pub fn new(status: StatusCode, content_type: &str, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// A JSON response.
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        match serde_json::to_string(value) {
            Ok(body) => Self::new(status, "application/json", body),
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
}

fn route(app: &App, req: &ApiRequest) -> Option<Route> {
    let base = app.config.reports_path();
    let rest = req.path.strip_prefix(&base)?;
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
pub async fn handle(app: &App, req: ApiRequest) -> ApiResponse {
    let Some(route) = route(app, &req) else {
        return Problem::not_found(format!(
            "no resource at this path; the API lives under {}",
            app.config.reports_path()
        ))
        .into_response();
    };
    if req.method != Method::GET {
        return Problem::method_not_allowed(req.method.as_str()).into_response();
    }
    match route {
        Route::List => list_reports(app),
        Route::Report(name) => Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-report",
            "Unknown report",
            format!("there is no report named `{}`", sanitize(&name)),
        )
        .into_response(),
    }
}

/// The reports a client may read, as declared in the reports file.
fn list_reports(app: &App) -> ApiResponse {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        reports: Vec<Entry>,
    }
    #[derive(serde::Deserialize, Serialize)]
    struct Entry {
        name: String,
        #[serde(default)]
        title: String,
    }
    let text = match std::fs::read_to_string(&app.config.reports_file) {
        Ok(t) => t,
        Err(_) => {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "reports-unavailable",
                "Reports unavailable",
                "the reports file cannot be read; see the handler's log",
            )
            .retry_after(30)
            .into_response();
        }
    };
    match toml::from_str::<File>(&text) {
        Ok(f) => ApiResponse::json(StatusCode::OK, &serde_json::json!({ "reports": f.reports })),
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "reports-unavailable",
            "Reports unavailable",
            "the reports file is invalid; run `handler check` for details",
        )
        .retry_after(30)
        .into_response(),
    }
}

/// Keeps echoed client input short and printable.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}
