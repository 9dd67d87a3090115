//! Logging and telemetry in one place.
//!
//! Logging: an `EnvFilter` (`RUST_LOG`, default `info`), text or JSON lines on **stdout** (the
//! host records stderr lines as errors), and the capture layer that feeds each invocation's
//! `Logs` array.
//!
//! Telemetry (OpenTelemetry traces, metrics and logs), chosen by the settings operators know:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (with the other standard `OTEL_*` settings) exports OTLP over
//! HTTP/protobuf; `APPLICATIONINSIGHTS_CONNECTION_STRING` (a secret setting) exports to
//! Application Insights through its ingestion API. With neither, no exporter, layer or
//! instrument is installed: the `tracing` spans cost what they cost before.
//!
//! Why the Application Insights exporter and not OTLP for Azure Monitor: Azure Monitor's OTLP
//! ingestion needs an Entra token and a data collection rule, not the connection string users
//! already have (and that the Functions host itself uses), while the exporter takes exactly
//! that string, is small (no second HTTP stack: it sends through the same reqwest) and maps
//! spans to requests and dependencies as the portal expects. An OpenTelemetry Collector with
//! the Azure Monitor exporter stays possible through the OTLP path.
//!
//! Exports run on the SDK's own batch threads, never on the request path. An instance may be
//! frozen once the host has every reply it waits for, so telemetry must leave before the *last*
//! outstanding reply, not before each one: every invocation holds an [`Invocation`] from its
//! start to its reply, and [`Invocation::end`] either hands its telemetry over (to an invocation
//! still working, which ends later and takes the same decision, or to one waiting to start the
//! next flush) or, when there is none, waits for a flush that covers everything ended so far.
//! Flushes are single flight: one at a time, shared by every invocation waiting for it, and only
//! the signals that have something new are flushed (in parallel). A reply waits at most [`FLUSH_BOUND`]; a dead collector therefore delays it by
//! at most that, and the bounded span queue drops (reporting the episode and its dropped count
//! once each, see [`SpanGate`]) rather than grow.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use secrecy::{ExposeSecret, SecretString};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::Registry;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, reload};

use crate::config::{ConfigError, LogFormat, Settings};
use crate::functions::logs::CaptureLayer;
use crate::secrets::{SecretSetting, Secrets};

/// The longest an invocation waits for its telemetry to be exported before it replies.
pub const FLUSH_BOUND: Duration = Duration::from_secs(1);
/// Spans (and log records) queued for export at most, unless `OTEL_BSP_MAX_QUEUE_SIZE`
/// (`OTEL_BLRP_MAX_QUEUE_SIZE` for logs) says otherwise; more are dropped, never buffered.
pub const MAX_QUEUE: usize = 2048;
/// How long one export may take (`OTEL_EXPORTER_OTLP_TIMEOUT` overrides it).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

static RELOAD: OnceLock<reload::Handle<Option<BoxedLayer>, Registry>> = OnceLock::new();
static PIPELINE: OnceLock<Pipeline> = OnceLock::new();

/// The telemetry settings, parsed once with the rest of the configuration. The OTLP headers
/// often carry an API key, so they are kept as a secret and never printed.
#[derive(Clone)]
pub struct TelemetrySettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL; `/v1/traces` etc. are appended), or the
    /// per-signal `OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT` (used as given).
    pub otlp: Option<OtlpEndpoints>,
    /// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,…` sent with every export.
    pub otlp_headers: Option<SecretString>,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds, or `10s`), default [`EXPORT_TIMEOUT`].
    pub export_timeout: Duration,
    /// `OTEL_SERVICE_NAME`, default `report-handler`.
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`: `key=value,…` added to every span, metric and log.
    pub resource_attributes: Vec<(String, String)>,
    /// `WEBSITE_INSTANCE_ID`: the host's instance id (`faas.instance`), when present.
    pub instance_id: Option<String>,
    /// `WEBSITE_SITE_NAME`: the function app's name (`faas.name` of the resource), when present.
    pub site_name: Option<String>,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting for export at most (default [`MAX_QUEUE`]).
    pub span_queue: usize,
    /// `OTEL_BLRP_MAX_QUEUE_SIZE`: log records waiting for export at most (default
    /// [`MAX_QUEUE`]).
    pub log_queue: usize,
    /// `SSL_CERT_FILE`: CA certificates the Application Insights client trusts in addition to
    /// the system roots (the meaning it has for the Key Vault client).
    pub ca_bundle: Option<PathBuf>,
}

impl std::fmt::Debug for TelemetrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetrySettings")
            .field("otlp", &self.otlp)
            .field("otlp_headers", &self.otlp_headers.as_ref().map(|_| "<set>"))
            .field("export_timeout", &self.export_timeout)
            .field("service_name", &self.service_name)
            .finish_non_exhaustive()
    }
}

/// Where each OTLP signal goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoints {
    /// The traces URL.
    pub traces: String,
    /// The metrics URL.
    pub metrics: String,
    /// The logs URL.
    pub logs: String,
}

impl TelemetrySettings {
    /// Reads the `OTEL_*` settings; refuses a protocol other than `http/protobuf` (the build
    /// carries no gRPC stack) so a mistake fails at start, not silently.
    pub fn from_settings(s: &Settings) -> Result<Self, ConfigError> {
        let get = |name: &str| s.get(name).map(str::trim).filter(|v| !v.is_empty());
        for name in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
        ] {
            if let Some(p) = get(name)
                && p != "http/protobuf"
            {
                return Err(ConfigError::new(
                    name,
                    "must be http/protobuf (the handler exports OTLP over HTTP with protobuf only)",
                ));
            }
        }
        let base = get("OTEL_EXPORTER_OTLP_ENDPOINT").map(|b| b.trim_end_matches('/').to_string());
        let signal = |var: &str, path: &str| -> Option<String> {
            get(var)
                .map(str::to_string)
                .or_else(|| base.as_ref().map(|b| format!("{b}{path}")))
        };
        let traces = signal("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/v1/traces");
        let metrics = signal("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "/v1/metrics");
        let logs = signal("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "/v1/logs");
        let otlp = match (traces, metrics, logs) {
            (None, None, None) => None,
            (t, m, l) => {
                let any = t.clone().or(m.clone()).or(l.clone()).unwrap_or_default();
                Some(OtlpEndpoints {
                    traces: t.unwrap_or_else(|| any.clone()),
                    metrics: m.unwrap_or_else(|| any.clone()),
                    logs: l.unwrap_or(any),
                })
            }
        };
        if let Some(e) = &otlp {
            for url in [&e.traces, &e.metrics, &e.logs] {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::new(
                        "OTEL_EXPORTER_OTLP_ENDPOINT",
                        "must be an http:// or https:// URL",
                    ));
                }
            }
        }
        let export_timeout = match get("OTEL_EXPORTER_OTLP_TIMEOUT") {
            None => EXPORT_TIMEOUT,
            Some(v) => match v.parse::<u64>() {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => crate::config::parse_duration(v).ok_or_else(|| {
                    ConfigError::new(
                        "OTEL_EXPORTER_OTLP_TIMEOUT",
                        "must be milliseconds (10000) or a duration (10s)",
                    )
                })?,
            },
        };
        let queue = |name: &str| -> Result<usize, ConfigError> {
            match get(name) {
                None => Ok(MAX_QUEUE),
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ConfigError::new(name, "must be a positive whole number")),
            }
        };
        Ok(Self {
            span_queue: queue("OTEL_BSP_MAX_QUEUE_SIZE")?,
            log_queue: queue("OTEL_BLRP_MAX_QUEUE_SIZE")?,
            ca_bundle: get("SSL_CERT_FILE").map(PathBuf::from),
            otlp,
            otlp_headers: s.secret("OTEL_EXPORTER_OTLP_HEADERS"),
            export_timeout,
            service_name: get("OTEL_SERVICE_NAME")
                .unwrap_or("report-handler")
                .to_string(),
            resource_attributes: get("OTEL_RESOURCE_ATTRIBUTES")
                .map(parse_pairs)
                .unwrap_or_default(),
            instance_id: get("WEBSITE_INSTANCE_ID").map(str::to_string),
            site_name: get("WEBSITE_SITE_NAME").map(str::to_string),
        })
    }
}

/// `k=v,k2=v2` with percent-encoded values (the `OTEL_*` list format); malformed entries are
/// skipped.
fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let k = k.trim();
            if k.is_empty() {
                return None;
            }
            let v: String = form_urlencoded::parse(format!("v={}", v.trim()).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            Some((k.to_string(), v))
        })
        .collect()
}

/// The installed providers, flushed before the last outstanding reply (see [`Invocation`]).
struct Pipeline {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    logger: SdkLoggerProvider,
    metrics: Metrics,
    flushes: Mutex<Flushes>,
}

/// What has been produced since the last flight started, per signal: a flight flushes only the
/// signals that have something new. Each flag is set *after* the data is queued or recorded,
/// and cleared just before a flight flushes it, so nothing recorded can miss every flight.
static DIRTY_SPANS: AtomicBool = AtomicBool::new(false);
static DIRTY_LOGS: AtomicBool = AtomicBool::new(false);
static DIRTY_METRICS: AtomicBool = AtomicBool::new(false);

/// The handler's metrics; present only while an exporter is installed.
pub struct Metrics {
    /// `report_handler.deliveries`: by report, destination kind and outcome.
    pub deliveries: Counter<u64>,
    /// `report_handler.report.duration` (s): one report run, by report.
    pub report_duration: Histogram<f64>,
    /// `report_handler.api.requests`: by route (function), status and key name (see
    /// [`api_request`]).
    pub api_requests: Counter<u64>,
    /// `report_handler.secret.cache`: hits, misses and refresh failures, by setting.
    pub secret_cache: Counter<u64>,
    /// `report_handler.ledger.claim_conflicts`: claims another instance already held.
    pub claim_conflicts: Counter<u64>,
}

/// The metrics, when an exporter is installed (callers skip recording otherwise).
pub fn metrics() -> Option<&'static Metrics> {
    PIPELINE.get().map(|p| &p.metrics)
}

/// Records a value with attributes, when metrics are on: one line at each call site.
pub fn count(select: impl FnOnce(&Metrics) -> &Counter<u64>, attrs: &[(&'static str, String)]) {
    if let Some(m) = metrics() {
        let kv: Vec<KeyValue> = attrs
            .iter()
            .map(|(k, v)| KeyValue::new(*k, v.clone()))
            .collect();
        select(m).add(1, &kv);
        DIRTY_METRICS.store(true, Ordering::Release);
    }
}

/// Counts one API request in `report_handler.api.requests`: by `route` (the function), `status`
/// and `api.key_name`, the name of the key that authenticated the request. `None` leaves the
/// attribute out (not authenticated, or the caller does not know); a key without a name is
/// passed as `Some("default")`, so the label stays low-cardinality and never holds a key.
pub fn api_request(route: &str, status: u16, key_name: Option<&str>) {
    let mut attrs = vec![("route", route.to_string()), ("status", status.to_string())];
    if let Some(name) = key_name {
        attrs.push(("api.key_name", name.to_string()));
    }
    count(|m| &m.api_requests, &attrs);
}

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (otel, handle) = reload::Layer::new(None::<BoxedLayer>);
    let registry = tracing_subscriber::registry()
        .with(otel)
        .with(filter)
        .with(CaptureLayer);
    let installed = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_target(false)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
    };
    if installed.is_ok() {
        let _ = RELOAD.set(handle);
    }
}

/// Why no exporter could be installed (logged once at start; serving goes on without one).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TelemetryError(String);

/// [`install`] with its outcome logged (without any value): serving goes on either way. When
/// the Application Insights connection string is a Key Vault reference, installing needs a
/// vault call, so it runs in the background: the host's readiness ping never waits on the
/// network. Otherwise (no network involved) it is installed before the first request.
pub async fn start(settings: TelemetrySettings, secrets: Secrets) {
    if secrets.is_vault_reference(SecretSetting::ApplicationInsights) {
        tokio::spawn(async move { start_now(&settings, &secrets).await });
    } else {
        start_now(&settings, &secrets).await;
    }
}

async fn start_now(settings: &TelemetrySettings, secrets: &Secrets) {
    match install(settings, secrets).await {
        Ok(true) => tracing::info!(
            otlp = settings.otlp.is_some(),
            application_insights = secrets.is_configured(SecretSetting::ApplicationInsights),
            "telemetry export on"
        ),
        Ok(false) => {}
        Err(e) => tracing::error!(error.message = %e, "telemetry export is off"),
    }
}

/// Builds the exporters the settings ask for and switches the `tracing` layers on. Does
/// nothing when neither OTLP nor Application Insights is configured. The connection string
/// comes through the secret layer (a Key Vault reference works); it is never logged.
pub async fn install(
    settings: &TelemetrySettings,
    secrets: &Secrets,
) -> Result<bool, TelemetryError> {
    let app_insights = if secrets.is_configured(SecretSetting::ApplicationInsights) {
        Some(
            secrets
                .get(SecretSetting::ApplicationInsights)
                .await
                .map_err(|e| TelemetryError(e.to_string()))?,
        )
    } else {
        None
    };
    if settings.otlp.is_none() && app_insights.is_none() {
        return Ok(false);
    }
    let Some(handle) = RELOAD.get() else {
        return Ok(false);
    };
    let settings = settings.clone();
    // The blocking HTTP client owns a runtime of its own: build (and later drop) it off ours.
    let pipeline = tokio::task::spawn_blocking(move || build(&settings, app_insights.as_ref()))
        .await
        .map_err(|e| TelemetryError(format!("the telemetry pipeline could not be built: {e}")))??;
    let layer: BoxedLayer = Box::new(
        tracing_opentelemetry::layer()
            .with_tracer(pipeline.tracer.tracer("report-handler"))
            .and_then(NoSelfLogs(
                opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(
                    &pipeline.logger,
                ),
            )),
    );
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    if PIPELINE.set(pipeline).is_err() {
        return Ok(false);
    }
    handle
        .reload(Some(layer))
        .map_err(|e| TelemetryError(format!("the telemetry layer could not be installed: {e}")))?;
    Ok(true)
}

fn resource(settings: &TelemetrySettings) -> Resource {
    let mut attrs = vec![
        KeyValue::new("cloud.provider", "azure"),
        KeyValue::new("cloud.platform", "azure_functions"),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ];
    if let Some(i) = &settings.instance_id {
        attrs.push(KeyValue::new("faas.instance", i.clone()));
        attrs.push(KeyValue::new("service.instance.id", i.clone()));
    }
    if let Some(n) = &settings.site_name {
        attrs.push(KeyValue::new("cloud.resource_id", n.clone()));
    }
    for (k, v) in &settings.resource_attributes {
        attrs.push(KeyValue::new(k.clone(), v.clone()));
    }
    Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attributes(attrs)
        .build()
}

/// A batch span processor behind a [`SpanGate`] of `capacity` spans.
fn span_processor<E: opentelemetry_sdk::trace::SpanExporter + 'static>(
    exporter: E,
    capacity: usize,
) -> GatedSpans {
    let gate = Arc::new(SpanGate::new(capacity));
    let inner = opentelemetry_sdk::trace::BatchSpanProcessor::builder(CountedExporter {
        inner: exporter,
        gate: gate.clone(),
    })
    .with_batch_config(
        opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_max_queue_size(capacity)
            .build(),
    )
    .build();
    GatedSpans { inner, gate }
}

/// The bound on spans waiting for export, kept in front of the SDK's queue so the handler knows
/// how many it dropped: the SDK only warns at the first drop and gives the count at shutdown,
/// which a Functions instance (stopped with SIGKILL) never reaches.
///
/// A span takes a slot when it ends and gives it back when the export of its batch is over
/// (exported or failed), so [`SpanGate::queued`] is never below the SDK's queue length, the
/// SDK's own queue never overflows, and the spans held in memory (queued or being exported) are
/// at most the capacity. A drop is reported with one warning ("the queue is full"), and the
/// first span that finds room again reports how many were dropped, once. A collector that never
/// answers therefore gives one warning however many spans are dropped; a queue that keeps
/// filling and draining (a slow collector) gives each line at most once per [`REPORT_EVERY`],
/// its count adding up everything dropped since the last one.
#[derive(Debug)]
pub struct SpanGate {
    capacity: usize,
    queued: AtomicUsize,
    /// Dropped and not yet reported.
    dropped: AtomicU64,
    started: std::time::Instant,
    /// When each line was last written (milliseconds after `started`, plus one; 0: never).
    full_reported: AtomicU64,
    room_reported: AtomicU64,
}

/// The least time between two reports of the same kind by a [`SpanGate`].
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

impl SpanGate {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            queued: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            started: std::time::Instant::now(),
            full_reported: AtomicU64::new(0),
            room_reported: AtomicU64::new(0),
        }
    }

    /// Whether a line last written at `slot` may be written again now (and if so, claims it).
    fn may_report(&self, slot: &AtomicU64) -> bool {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = slot.load(Ordering::Acquire);
        let every = u64::try_from(REPORT_EVERY.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every {
            return false;
        }
        slot.compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Takes a slot for one span; `false` (and the span counted as dropped) when the queue is
    /// full.
    fn admit(&self) -> bool {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::AcqRel);
            if self.may_report(&self.full_reported) {
                tracing::warn!(
                    telemetry.queue_capacity = self.capacity,
                    "telemetry: the span export queue is full; spans are dropped until the \
                     exporter catches up"
                );
            }
            return false;
        }
        if self.dropped.load(Ordering::Acquire) > 0 && self.may_report(&self.room_reported) {
            let dropped = self.dropped.swap(0, Ordering::AcqRel);
            tracing::warn!(
                telemetry.dropped_spans = dropped,
                telemetry.queue_capacity = self.capacity,
                "telemetry: the span export queue has room again; {dropped} spans were dropped since the last report"
            );
        }
        true
    }

    /// Spans held for export (queued, or in the batch being exported).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// The SDK's batch processor behind a [`SpanGate`].
#[derive(Debug)]
struct GatedSpans {
    inner: opentelemetry_sdk::trace::BatchSpanProcessor,
    gate: Arc<SpanGate>,
}

impl opentelemetry_sdk::trace::SpanProcessor for GatedSpans {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        if self.gate.admit() {
            self.inner.on_end(span);
            DIRTY_SPANS.store(true, Ordering::Release);
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, giving the gate its slots back when each batch's export is over.
#[derive(Debug)]
struct CountedExporter<E> {
    inner: E,
    gate: Arc<SpanGate>,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for CountedExporter<E>
{
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        let slots = Slots {
            gate: self.gate.clone(),
            n: batch.len(),
        };
        let export = self.inner.export(batch);
        async move {
            let result = export.await;
            drop(slots);
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A batch's slots in the [`SpanGate`], given back when dropped (the export is over, or was
/// abandoned).
struct Slots {
    gate: Arc<SpanGate>,
    n: usize,
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.gate.queued.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// A batch log processor with the bounded queue.
fn log_processor<E: opentelemetry_sdk::logs::LogExporter + 'static>(
    exporter: E,
    capacity: usize,
) -> opentelemetry_sdk::logs::BatchLogProcessor {
    opentelemetry_sdk::logs::BatchLogProcessor::builder(exporter)
        .with_batch_config(
            opentelemetry_sdk::logs::BatchConfigBuilder::default()
                .with_max_queue_size(capacity)
                .build(),
        )
        .build()
}

fn build(
    settings: &TelemetrySettings,
    app_insights: Option<&SecretString>,
) -> Result<Pipeline, TelemetryError> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    use opentelemetry_sdk::metrics::PeriodicReader;

    let fail = |what: &str, e: &dyn std::fmt::Display| TelemetryError(format!("{what}: {e}"));
    let resource = resource(settings);
    let mut tracer = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut meter = SdkMeterProvider::builder().with_resource(resource.clone());
    let mut logger = SdkLoggerProvider::builder().with_resource(resource);
    if let Some(ep) = &settings.otlp {
        let headers: HashMap<String, String> = settings
            .otlp_headers
            .as_ref()
            .map(|h| parse_pairs(h.expose_secret()).into_iter().collect())
            .unwrap_or_default();
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(ep.traces.clone())
            .with_timeout(settings.export_timeout)
            .with_headers(headers.clone())
            .build()
            .map_err(|e| fail("the OTLP span exporter", &e))?;
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_endpoint(ep.metrics.clone())
            .with_timeout(settings.export_timeout)
            .with_headers(headers.clone())
            .build()
            .map_err(|e| fail("the OTLP metric exporter", &e))?;
        let logs = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_endpoint(ep.logs.clone())
            .with_timeout(settings.export_timeout)
            .with_headers(headers)
            .build()
            .map_err(|e| fail("the OTLP log exporter", &e))?;
        tracer = tracer.with_span_processor(span_processor(spans, settings.span_queue));
        meter = meter.with_reader(PeriodicReader::builder(metrics).build());
        logger = logger.with_log_processor(log_processor(logs, settings.log_queue));
    }
    if let Some(cs) = app_insights {
        let mut client = reqwest::blocking::Client::builder().timeout(settings.export_timeout);
        if let Some(path) = &settings.ca_bundle {
            let certs = std::fs::read(path)
                .ok()
                .and_then(|pem| reqwest::Certificate::from_pem_bundle(&pem).ok())
                .ok_or_else(|| {
                    TelemetryError("SSL_CERT_FILE is not a readable PEM bundle".into())
                })?;
            client = client.tls_certs_merge(certs);
        }
        let client = client
            .build()
            .map_err(|e| fail("the Application Insights HTTP client", &e))?;
        // The error names the problem with the string's format, never the string.
        let exporter = opentelemetry_application_insights::Exporter::new_from_connection_string(
            cs.expose_secret(),
            client,
        )
        .map_err(|_| {
            TelemetryError(
                "APPLICATIONINSIGHTS_CONNECTION_STRING is not a valid connection string".into(),
            )
        })?;
        tracer = tracer.with_span_processor(span_processor(exporter.clone(), settings.span_queue));
        meter = meter.with_reader(PeriodicReader::builder(exporter.clone()).build());
        logger = logger.with_log_processor(log_processor(exporter, settings.log_queue));
    }
    let meter = meter.build();
    let m = opentelemetry::metrics::MeterProvider::meter(&meter, "report-handler");
    let metrics = Metrics {
        deliveries: m.u64_counter("report_handler.deliveries").build(),
        report_duration: m
            .f64_histogram("report_handler.report.duration")
            .with_unit("s")
            .build(),
        api_requests: m.u64_counter("report_handler.api.requests").build(),
        secret_cache: m.u64_counter("report_handler.secret.cache").build(),
        claim_conflicts: m
            .u64_counter("report_handler.ledger.claim_conflicts")
            .build(),
    };
    Ok(Pipeline {
        tracer: tracer.build(),
        meter,
        logger: logger.build(),
        metrics,
        flushes: Mutex::new(Flushes::default()),
    })
}

/// The single-flight flush bookkeeping behind [`Invocation`].
#[derive(Default)]
struct Flushes {
    /// Invocations between their start and their [`Invocation::end`] (or drop).
    working: usize,
    /// Invocations ended so far: everything they produced is queued or recorded.
    ended: u64,
    /// `ended` as it was when the last landed flight started: all of that has been exported.
    covered: u64,
    /// The flight under way and the `ended` it covers; it lands when every signal it flushes
    /// has been exported (or failed).
    flight: Option<(u64, Shared<BoxFuture<'static, ()>>)>,
    /// Invocations waiting for the flight under way to land so that they can start (or join)
    /// the next one: that next flight starts after it lands, so it also covers whatever ends
    /// in the meantime.
    next_waiters: usize,
    /// Someone gave up waiting (its bound passed, or its reply was abandoned) with telemetry
    /// not yet covered while a flight was under way: that flight starts another when it lands.
    again: bool,
}

impl Flushes {
    /// Makes sure a flight will cover everything ended so far, without waiting for it: starts
    /// one, or has the one under way start another when it lands.
    fn follow_up(&mut self) {
        if self.covered < self.ended {
            if self.flight.is_some() {
                self.again = true;
            } else {
                drop(start_flight(self));
            }
        }
    }
}

fn flushes(p: &Pipeline) -> MutexGuard<'_, Flushes> {
    // The bookkeeping stays consistent at every unlock, so a poisoned lock is still usable.
    p.flushes.lock().unwrap_or_else(|e| e.into_inner())
}

/// One invocation's part in getting telemetry out before the instance can be frozen. Taken with
/// [`invocation`] when the invocation starts (before its span), given back with
/// [`Invocation::end`] right before the reply.
///
/// Why not a flush at the end of each invocation: the host freezes an instance only once it has
/// every reply it waits for, so what matters is that everything is exported before the *last*
/// outstanding reply. An invocation that ends while another will certainly reply later and make
/// sure of it hands its telemetry over and replies at once: one still working (it ends later and
/// faces the same choice), or one waiting for the flight under way to land so that it can start
/// the next (which starts after this hand-over, so covers it). Otherwise it waits for a flight
/// covering everything ended so far: it joins the flight under way when that started late
/// enough, else it waits to start (or join) the next one. Every wait ends within
/// [`FLUSH_BOUND`]; whoever gives up early, or is abandoned, with telemetry handed to it still
/// uncovered makes sure a flight follows, without waiting. Without an exporter this is a no-op.
#[must_use = "end it right before the reply"]
pub struct Invocation {
    counted: bool,
}

/// Starts an invocation's part in the flush (see [`Invocation`]).
pub fn invocation() -> Invocation {
    let counted = match PIPELINE.get() {
        Some(p) => {
            flushes(p).working += 1;
            true
        }
        None => false,
    };
    Invocation { counted }
}

/// A waiter counted in [`Flushes::next_waiters`], uncounted when dropped; `follow_up` unless it
/// woke in time to start or join the next flight itself.
struct NextWaiter {
    p: &'static Pipeline,
    follow_up: bool,
}

impl Drop for NextWaiter {
    fn drop(&mut self) {
        let mut st = flushes(self.p);
        st.next_waiters = st.next_waiters.saturating_sub(1);
        if self.follow_up {
            st.follow_up();
        }
    }
}

impl Invocation {
    /// Hands the invocation's telemetry over, or waits (at most [`FLUSH_BOUND`]) until a
    /// flight has exported everything ended so far. Never fails.
    pub async fn end(mut self) {
        if !std::mem::take(&mut self.counted) {
            return;
        }
        let Some(p) = PIPELINE.get() else {
            return;
        };
        // The report engine records its histogram inside the invocation, without `count`.
        DIRTY_METRICS.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + FLUSH_BOUND;
        let target = {
            let mut st = flushes(p);
            st.working = st.working.saturating_sub(1);
            st.ended += 1;
            if st.working > 0 || st.next_waiters > 0 {
                return;
            }
            st.ended
        };
        loop {
            let (landed, waiter) = {
                let mut st = flushes(p);
                if st.covered >= target {
                    return;
                }
                match &st.flight {
                    // A flight that landed without clearing itself (its thread panicked) is
                    // replaced rather than waited on again.
                    Some((covers, f)) if f.peek().is_none() => {
                        let late = *covers < target;
                        let f = f.clone();
                        let waiter = late.then(|| {
                            st.next_waiters += 1;
                            NextWaiter { p, follow_up: true }
                        });
                        (f, waiter)
                    }
                    _ => (start_flight(&mut st), None),
                }
            };
            let in_time = tokio::time::timeout_at(deadline, landed).await.is_ok();
            if let Some(mut w) = waiter {
                w.follow_up = !in_time;
            }
            if !in_time {
                return;
            }
        }
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let Some(p) = PIPELINE.get() else {
            return;
        };
        DIRTY_METRICS.store(true, Ordering::Release);
        let mut st = flushes(p);
        st.working = st.working.saturating_sub(1);
        st.ended += 1;
        if st.working == 0 && st.next_waiters == 0 {
            st.follow_up();
        }
    }
}

/// Starts a flight covering everything ended so far, on a thread of its own (the SDK's flushes
/// block), and returns the future that completes when it lands. A flight whose thread cannot be
/// started lands at once, counted as done, so no caller waits on it.
fn start_flight(st: &mut Flushes) -> Shared<BoxFuture<'static, ()>> {
    let covers = st.ended;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let landed = async move {
        let _ = rx.await;
    }
    .boxed()
    .shared();
    let spawned = std::thread::Builder::new()
        .name("telemetry-flush".into())
        .spawn(move || {
            if let Some(p) = PIPELINE.get() {
                flush_signals(p);
                let mut st = flushes(p);
                st.covered = st.covered.max(covers);
                st.flight = None;
                if std::mem::take(&mut st.again) {
                    st.follow_up();
                }
            }
            let _ = tx.send(());
        });
    match spawned {
        Ok(_) => st.flight = Some((covers, landed.clone())),
        Err(_) => st.covered = st.covered.max(covers),
    }
    landed
}

/// Flushes the signals that have something new, in parallel (each flush is an export round
/// trip of its own).
fn flush_signals(p: &Pipeline) {
    let spans = DIRTY_SPANS.swap(false, Ordering::AcqRel);
    let logs = DIRTY_LOGS.swap(false, Ordering::AcqRel);
    let metrics = DIRTY_METRICS.swap(false, Ordering::AcqRel);
    std::thread::scope(|scope| {
        let side = |run: bool, f: &'static (dyn Fn(&Pipeline) + Sync)| {
            if run
                && std::thread::Builder::new()
                    .name("telemetry-flush".into())
                    .spawn_scoped(scope, || f(p))
                    .is_err()
            {
                f(p);
            }
        };
        side(logs, &|p| {
            let _ = p.logger.force_flush();
        });
        side(metrics, &|p| {
            let _ = p.meter.force_flush();
        });
        if spans {
            let _ = p.tracer.force_flush();
        }
    });
}

/// The caller's trace (`traceparent`/`tracestate` in `headers`) made the current OpenTelemetry
/// context; a span created while the returned guard lives has the caller's span as its parent.
/// `None` (and nothing attached) without an exporter or without the headers.
///
/// Why not `OpenTelemetrySpanExt::set_parent` after creating the span: it reaches the
/// OpenTelemetry layer by downcasting through the subscriber, and the `reload` layer the exporter
/// is installed through does not forward downcasts, so the call silently did nothing. A new
/// root span takes its parent from the current context instead, which needs no downcast.
pub fn remote_parent<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<opentelemetry::ContextGuard> {
    use opentelemetry::trace::TraceContextExt as _;
    PIPELINE.get()?;
    let map: HashMap<String, String> = headers
        .into_iter()
        .filter(|(k, _)| {
            k.eq_ignore_ascii_case("traceparent") || k.eq_ignore_ascii_case("tracestate")
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    if map.is_empty() {
        return None;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&map));
    // A malformed traceparent extracts to no span: start a new trace rather than attach it.
    if !cx.span().span_context().is_valid() {
        return None;
    }
    Some(cx.attach())
}

/// The log bridge without the exporters' own events (which would feed back into the export).
struct NoSelfLogs<L>(L);

impl<S, L> Layer<S> for NoSelfLogs<L>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let target = event.metadata().target();
        if ["opentelemetry", "hyper", "reqwest", "h2", "rustls"]
            .iter()
            .any(|t| target.starts_with(t))
        {
            return;
        }
        self.0.on_event(event, ctx);
        DIRTY_LOGS.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_sizes_come_from_the_standard_settings() {
        let s = Settings::from_pairs([
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
            ("SSL_CERT_FILE", "/etc/ca.pem"),
        ]);
        let t = TelemetrySettings::from_settings(&s).unwrap();
        assert_eq!(t.span_queue, 16);
        assert_eq!(t.log_queue, MAX_QUEUE);
        assert_eq!(t.ca_bundle, Some(PathBuf::from("/etc/ca.pem")));
        for bad in ["0", "-1", "many"] {
            let s = Settings::from_pairs([("OTEL_BLRP_MAX_QUEUE_SIZE", bad)]);
            let err = TelemetrySettings::from_settings(&s)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("OTEL_BLRP_MAX_QUEUE_SIZE"), "{err}");
            assert!(!err.contains(bad), "the value is not repeated: {err}");
        }
    }

    #[test]
    fn the_gate_admits_up_to_its_capacity_and_counts_each_episode() {
        let gate = Arc::new(SpanGate::new(3));
        assert!((0..3).all(|_| gate.admit()));
        assert_eq!(gate.queued(), 3);
        // Full: dropped and counted, nothing held beyond the capacity.
        assert!((0..5).all(|_| !gate.admit()));
        assert_eq!(gate.queued(), 3);
        assert_eq!(gate.dropped.load(Ordering::Acquire), 5);
        // A batch of two is exported: room again, and the episode's count is reset.
        drop(Slots {
            gate: gate.clone(),
            n: 2,
        });
        assert!(gate.admit());
        assert_eq!(gate.dropped.load(Ordering::Acquire), 0);
        assert_eq!(gate.queued(), 2);
        // Filling and draining again within REPORT_EVERY: counted, reported with the next line.
        assert!(gate.admit());
        assert!(!gate.admit());
        drop(Slots {
            gate: gate.clone(),
            n: 3,
        });
        assert!(gate.admit());
        assert_eq!(gate.dropped.load(Ordering::Acquire), 1);
        assert_eq!(gate.queued(), 1);
    }
}
