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
//! Exports run on the SDK's own batch threads, never on the request path; each invocation ends
//! with [`flush`], bounded by [`FLUSH_BOUND`], since an instance may be frozen right after it
//! replies. A dead collector therefore delays a reply by at most that bound, and the bounded
//! queues drop (and the SDK reports the drop once) rather than grow.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
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
/// Spans (and log records) queued for export at most; more are dropped, never buffered.
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
        Ok(Self {
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

/// The installed providers, flushed at the end of every invocation.
struct Pipeline {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    logger: SdkLoggerProvider,
    metrics: Metrics,
    inflight: Mutex<Option<Shared<BoxFuture<'static, ()>>>>,
}

/// The handler's metrics; present only while an exporter is installed.
pub struct Metrics {
    /// `report_handler.deliveries`: by report, destination kind and outcome.
    pub deliveries: Counter<u64>,
    /// `report_handler.report.duration` (s): one report run, by report.
    pub report_duration: Histogram<f64>,
    /// `report_handler.api.requests`: by route (function) and status.
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
    }
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

/// A batch span processor with the bounded queue.
fn span_processor<E: opentelemetry_sdk::trace::SpanExporter + 'static>(
    exporter: E,
) -> opentelemetry_sdk::trace::BatchSpanProcessor {
    opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUE)
                .build(),
        )
        .build()
}

fn build(
    settings: &TelemetrySettings,
    app_insights: Option<&SecretString>,
) -> Result<Pipeline, TelemetryError> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    use opentelemetry_sdk::logs::BatchLogProcessor;
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
        tracer = tracer.with_span_processor(span_processor(spans));
        meter = meter.with_reader(PeriodicReader::builder(metrics).build());
        logger = logger.with_log_processor(
            BatchLogProcessor::builder(logs)
                .with_batch_config(
                    opentelemetry_sdk::logs::BatchConfigBuilder::default()
                        .with_max_queue_size(MAX_QUEUE)
                        .build(),
                )
                .build(),
        );
    }
    if let Some(cs) = app_insights {
        let client = reqwest::blocking::Client::builder()
            .timeout(settings.export_timeout)
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
        tracer = tracer.with_span_processor(span_processor(exporter.clone()));
        meter = meter.with_reader(PeriodicReader::builder(exporter.clone()).build());
        logger = logger.with_log_processor(BatchLogProcessor::builder(exporter).build());
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
        inflight: Mutex::new(None),
    })
}

/// Exports what the invocation produced before it replies, waiting at most [`FLUSH_BOUND`].
/// Concurrent invocations share one flush in flight, so a stuck collector ties up one blocking
/// thread, not one per request. Does nothing when no exporter is installed.
pub async fn flush() {
    let Some(p) = PIPELINE.get() else {
        return;
    };
    let shared = {
        let Ok(mut slot) = p.inflight.lock() else {
            return;
        };
        match slot.as_ref() {
            Some(f) if f.peek().is_none() => f.clone(),
            _ => {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let spawned = std::thread::Builder::new()
                    .name("telemetry-flush".into())
                    .spawn(move || {
                        if let Some(p) = PIPELINE.get() {
                            let _ = p.tracer.force_flush();
                            let _ = p.logger.force_flush();
                            let _ = p.meter.force_flush();
                        }
                        let _ = tx.send(());
                    });
                if spawned.is_err() {
                    return;
                }
                let f = async move {
                    let _ = rx.await;
                }
                .boxed()
                .shared();
                *slot = Some(f.clone());
                f
            }
        }
    };
    let _ = tokio::time::timeout(FLUSH_BOUND, shared).await;
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
    }
}
