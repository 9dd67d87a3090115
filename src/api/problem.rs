//! RFC 9457 problem details: the only error body the public API ever returns.
//!
//! Client faults carry a detail the client can act on; server faults carry a fixed, opaque
//! detail while the cause is logged once by the caller. Nothing internal reaches a client.

use axum::http::StatusCode;
use serde::Serialize;

use super::ApiResponse;

/// A problem response body.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI reference naming the problem type; `about:blank` is not used so clients can branch.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, stable summary of the problem type.
    pub title: String,
    /// The HTTP status, repeated for clients that lose it.
    pub status: u16,
    /// What went wrong for this request, safe to show to the caller.
    pub detail: String,
    #[serde(skip)]
    retry_after: Option<u64>,
    #[serde(skip)]
    extra_headers: Vec<(&'static str, String)>,
}

impl Problem {
    /// A problem of `status` with a slug type (e.g. `unknown-report`) and a detail.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://report-handler.dev/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
            extra_headers: Vec::new(),
        }
    }

    /// Adds `Retry-After` (seconds) for 503s the client may retry.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Adds a response header (e.g. `Allow` on a 405).
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra_headers.push((name, value.into()));
        self
    }

    /// 400 for a query parameter the API cannot use; `detail` starts with the parameter's
    /// name (`date: expected a date as YYYY-MM-DD`) so the client knows what to fix.
    pub fn bad_parameter(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-parameter",
            "Bad request parameter",
            detail,
        )
    }

    /// 404 for a path outside the API.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 405 with the allowed methods.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("{method} is not supported here; use GET"),
        )
        .header("allow", "GET")
    }

    /// 500 for a bug: opaque on purpose; the caller logs the cause.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request could not be completed; the cause has been logged",
        )
    }

    /// Turns the problem into a response.
    pub fn into_response(self) -> ApiResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(&self).unwrap_or_else(|_| "{}".into());
        let mut resp = ApiResponse::new(status, "application/problem+json; charset=utf-8", body);
        if let Some(s) = self.retry_after {
            resp.headers.push(("retry-after".into(), s.to_string()));
        }
        for (k, v) in self.extra_headers {
            resp.headers.push((k.to_string(), v));
        }
        resp
    }
}
