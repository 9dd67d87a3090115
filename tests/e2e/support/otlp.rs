//! A real OTLP/HTTP receiver on loopback: `POST /v1/traces`, `/v1/metrics` and `/v1/logs` with
//! `application/x-protobuf` bodies, decoded with the protocol's own message types, kept for
//! assertions. What arrived is also written (Debug format) into `REPORT_HANDLER_SWEEP_DIR` when
//! it is set, so the suite's secret sweep covers everything the handler exported, not only the
//! values a test thought of checking.
//!
//! [`silent`] is the other kind of collector: it accepts connections and never answers.
//! [`Receiver::held`] is in between: it reads each export and answers none until
//! [`Receiver::release`], then answers every held one and all later ones.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message as _;

use super::wait;

/// Largest export body accepted (the handler's batches are far smaller).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Everything the receiver got.
#[derive(Debug, Default)]
pub struct Received {
    pub traces: Vec<ExportTraceServiceRequest>,
    pub metrics: Vec<ExportMetricsServiceRequest>,
    pub logs: Vec<ExportLogsServiceRequest>,
    /// Requests that were not a decodable export: path and why (answered 400 or 404).
    pub rejected: Vec<(String, String)>,
    /// The header names of each export (values are not kept: they may carry an API key).
    #[allow(dead_code)]
    pub header_names: Vec<Vec<String>>,
    /// Whether each export carried the header [`Receiver::expect_header`] names with exactly
    /// the expected value (compared here so the value never has to leave the receiver).
    pub header_matched: Vec<bool>,
}

/// A span, flattened for assertions (ids in lowercase hex, attributes as text).
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// The OTLP `SpanKind` (2 = server).
    pub kind: i32,
    pub attrs: BTreeMap<String, String>,
}

/// A log record, flattened.
#[derive(Debug, Clone)]
pub struct Log {
    pub severity_number: i32,
    pub severity_text: String,
    pub body: String,
    pub trace_id: String,
    pub span_id: String,
    pub attrs: BTreeMap<String, String>,
}

/// One data point of a metric: its attributes and value (a histogram's count).
#[derive(Debug, Clone)]
pub struct Point {
    pub attrs: BTreeMap<String, String>,
    pub value: f64,
}

/// The receiver; stops (and writes its dump) when dropped.
pub struct Receiver {
    pub port: u16,
    state: Arc<Mutex<Received>>,
    release: tokio::sync::watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Expected = Arc<Option<(String, String)>>;

impl Receiver {
    /// Starts the receiver on its own thread and runtime (so it answers whatever the test's
    /// runtime is doing).
    pub fn start() -> Receiver {
        Self::start_inner(None, true)
    }

    /// A receiver that holds every export unanswered until [`Receiver::release`].
    pub fn held() -> Receiver {
        Self::start_inner(None, false)
    }

    /// Answers the held exports and every later one.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }

    /// A receiver that also checks each export for the header `name` with exactly `value`
    /// (recorded in [`Received::header_matched`]; the value itself is never kept).
    pub fn expecting_header(name: &str, value: &str) -> Receiver {
        Self::start_inner(Some((name.to_ascii_lowercase(), value.to_string())), true)
    }

    fn start_inner(expect: Option<(String, String)>, released: bool) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("local address").port();
        let state = Arc::new(Mutex::new(Received::default()));
        let expected: Expected = Arc::new(expect);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let (release, gate) = tokio::sync::watch::channel(released);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let st = st.clone();
                        let expected = expected.clone();
                        let gate = gate.clone();
                        tokio::spawn(async move {
                            let svc = service_fn(move |req| {
                                let st = st.clone();
                                let expected = expected.clone();
                                let mut gate = gate.clone();
                                async move {
                                    Ok::<_, std::convert::Infallible>(
                                        handle(req, &st, &expected, &mut gate).await,
                                    )
                                }
                            });
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        Receiver {
            port,
            state,
            release,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at this receiver.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn state(&self) -> MutexGuard<'_, Received> {
        self.state.lock().unwrap()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        let st = self.state();
        let mut out = Vec::new();
        for req in &st.traces {
            for rs in &req.resource_spans {
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push(Span {
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent_span_id: hex(&s.parent_span_id),
                            name: s.name.clone(),
                            kind: s.kind,
                            attrs: attrs(&s.attributes),
                        });
                    }
                }
            }
        }
        out
    }

    /// The resource attributes of every span export.
    pub fn span_resources(&self) -> Vec<BTreeMap<String, String>> {
        let st = self.state();
        st.traces
            .iter()
            .flat_map(|r| &r.resource_spans)
            .filter_map(|rs| rs.resource.as_ref().map(|r| attrs(&r.attributes)))
            .collect()
    }

    /// Every log record received so far.
    pub fn logs(&self) -> Vec<Log> {
        let st = self.state();
        let mut out = Vec::new();
        for req in &st.logs {
            for rl in &req.resource_logs {
                for sl in &rl.scope_logs {
                    for l in &sl.log_records {
                        out.push(Log {
                            severity_number: l.severity_number,
                            severity_text: l.severity_text.clone(),
                            body: l.body.as_ref().map(text).unwrap_or_default(),
                            trace_id: hex(&l.trace_id),
                            span_id: hex(&l.span_id),
                            attrs: attrs(&l.attributes),
                        });
                    }
                }
            }
        }
        out
    }

    /// The data points of the metric `name` across every export (cumulative metrics repeat).
    pub fn points(&self, name: &str) -> Vec<Point> {
        let st = self.state();
        let mut out = Vec::new();
        for req in &st.metrics {
            for rm in &req.resource_metrics {
                for sm in &rm.scope_metrics {
                    for m in sm.metrics.iter().filter(|m| m.name == name) {
                        match &m.data {
                            Some(metric::Data::Sum(s)) => {
                                out.extend(s.data_points.iter().map(|p| Point {
                                    attrs: attrs(&p.attributes),
                                    value: number(&p.value),
                                }))
                            }
                            Some(metric::Data::Gauge(g)) => {
                                out.extend(g.data_points.iter().map(|p| Point {
                                    attrs: attrs(&p.attributes),
                                    value: number(&p.value),
                                }))
                            }
                            Some(metric::Data::Histogram(h)) => {
                                out.extend(h.data_points.iter().map(|p| Point {
                                    attrs: attrs(&p.attributes),
                                    value: p.count as f64,
                                }))
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        out
    }

    /// Everything received, in Debug format (what the sweep file holds).
    pub fn dump(&self) -> String {
        format!("{:#?}", *self.state())
    }

    /// Polls until `cond` holds on what arrived, at most `within`.
    pub async fn wait(&self, within: Duration, mut cond: impl FnMut(&Receiver) -> bool) -> bool {
        wait::until(within, || cond(self)).await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(dir) = std::env::var("REPORT_HANDLER_SWEEP_DIR") {
            let path = std::path::Path::new(&dir).join(format!(
                "otlp-{}-{}.txt",
                self.port,
                uuid::Uuid::new_v4()
            ));
            let _ = std::fs::write(path, self.dump());
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    st: &Mutex<Received>,
    expected: &Expected,
    gate: &mut tokio::sync::watch::Receiver<bool>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let matched = expected.as_ref().as_ref().map(|(name, value)| {
        req.headers()
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            == Some(value.as_str())
    });
    let names: Vec<String> = req
        .headers()
        .keys()
        .map(|k| k.as_str().to_string())
        .collect();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return reject(st, &path, format!("body: {e}"), 400),
    };
    // Held until released (the receiver stops, dropping this, when the test ends).
    let _ = gate.wait_for(|released| *released).await;
    if content_type != "application/x-protobuf" {
        return reject(st, &path, format!("content type {content_type:?}"), 400);
    }
    let mut st_guard = st.lock().unwrap();
    let decoded = match path.as_str() {
        "/v1/traces" => ExportTraceServiceRequest::decode(body.as_ref())
            .map(|r| st_guard.traces.push(r))
            .map_err(|e| e.to_string()),
        "/v1/metrics" => ExportMetricsServiceRequest::decode(body.as_ref())
            .map(|r| st_guard.metrics.push(r))
            .map_err(|e| e.to_string()),
        "/v1/logs" => ExportLogsServiceRequest::decode(body.as_ref())
            .map(|r| st_guard.logs.push(r))
            .map_err(|e| e.to_string()),
        _ => {
            drop(st_guard);
            return reject(st, &path, "unknown path".into(), 404);
        }
    };
    match decoded {
        Ok(()) => {
            st_guard.header_names.push(names);
            if let Some(m) = matched {
                st_guard.header_matched.push(m);
            }
            drop(st_guard);
            // An empty Export*ServiceResponse: full success.
            Response::builder()
                .status(200)
                .header("content-type", "application/x-protobuf")
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
        Err(e) => {
            drop(st_guard);
            reject(st, &path, format!("decode: {e}"), 400)
        }
    }
}

fn reject(st: &Mutex<Received>, path: &str, why: String, status: u16) -> Response<Full<Bytes>> {
    st.lock().unwrap().rejected.push((path.to_string(), why));
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn number(v: &Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    }
}

/// A collector that accepts connections and never answers (nor closes them) until dropped.
pub struct Silent {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub accepted: Arc<Mutex<u32>>,
}

/// Starts a [`Silent`] collector.
pub fn silent() -> Silent {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.set_nonblocking(true).expect("non-blocking");
    let port = listener.local_addr().expect("local address").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let accepted = Arc::new(Mutex::new(0u32));
    let count = accepted.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("silent runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            // Held open (and read, so the client's writes never block) until stopped.
            let mut held = tokio::task::JoinSet::new();
            let accept = async {
                loop {
                    if let Ok((mut stream, _)) = listener.accept().await {
                        *count.lock().unwrap() += 1;
                        held.spawn(async move {
                            use tokio::io::AsyncReadExt as _;
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = stream.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                            }
                        });
                    }
                }
            };
            tokio::select! {
                _ = accept => {}
                _ = stopped => {}
            }
        });
    });
    Silent {
        port,
        stop: Some(stop),
        thread: Some(thread),
        accepted,
    }
}

impl Silent {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
