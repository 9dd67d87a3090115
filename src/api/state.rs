//! The API's part of the app: what answering a request needs (the report engine, the secret
//! layer for the API keys, the run cache, the report list built once, the limits). Cheap to
//! clone; axum hands it to each request.

use std::sync::Arc;

use super::auth::KeyCache;
use super::cache::{Flights, Rendered};
use crate::delivery::Delivery;
use crate::report::ReportEngine;
use crate::secrets::Secrets;

/// The API's state.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// Runs the reports.
    pub engine: Arc<ReportEngine>,
    /// Holds `API_KEYS`.
    pub secrets: Secrets,
    /// The parsed `API_KEYS` value (names, scopes, digests), re-parsed only when the value
    /// changes (a rotation).
    pub keys: Arc<KeyCache>,
    /// Single flight and cache of report runs.
    pub flights: Arc<Flights>,
    /// `MAX_RANGE_DAYS`: the longest explicit window the API accepts.
    pub max_range_days: u32,
    /// The public path of the reports collection (`/api/reports`, from the route prefix).
    pub reports_path: String,
    /// The public path of the delivery history (`/api/deliveries`).
    pub deliveries_path: String,
    /// The delivery part, whose ledger the history API reads (`None`: no history, 404).
    pub delivery: Option<Arc<Delivery>>,
    report_list: Rendered,
}

impl ApiState {
    /// Builds the state; the report list body (and its ETag) is rendered here, once, since the
    /// reports file is read once.
    pub fn new(
        engine: Arc<ReportEngine>,
        secrets: Secrets,
        max_range_days: u32,
        reports_path: String,
        delivery: Option<Arc<Delivery>>,
    ) -> Self {
        // `/api/reports` → `/api/deliveries`: the same route prefix.
        let deliveries_path = match reports_path.strip_suffix("/reports") {
            Some(prefix) => format!("{prefix}/deliveries"),
            None => "/deliveries".to_string(),
        };
        let report_list = match engine.reports() {
            Ok(r) => super::list_body(&r.reports),
            // The API answers 503 before it would show the list.
            Err(_) => Rendered::new("{\"reports\":[]}"),
        };
        Self {
            engine,
            secrets,
            keys: Arc::default(),
            flights: Arc::default(),
            max_range_days,
            reports_path,
            deliveries_path,
            delivery,
            report_list,
        }
    }

    /// The body and ETag of `GET /api/reports` for a key that sees every report.
    pub fn report_list(&self) -> Rendered {
        self.report_list.clone()
    }
}
