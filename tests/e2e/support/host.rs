//! A Functions host emulator for end-to-end tests, written from `docs/functions-protocol.md`
//! (§10 is its checklist). It does for our app what the real host does:
//!
//! - reads `host.json` and every `*/function.json` of an app root;
//! - starts the handler with CWD = app root and the environment the host injects
//!   (`FUNCTIONS_CUSTOMHANDLER_PORT`, `FUNCTIONS_CUSTOMHANDLER_WORKER_ID`, the legacy
//!   `FUNCTIONS_HTTPWORKER_*` names, `FUNCTIONS_APP_ROOT_PATH`) on top of the app settings;
//! - polls `GET /` every 25 ms for up to 30 s;
//! - sends invocations as the host does: `POST /<FunctionName>`, chunked JSON bodies, the
//!   `X-Azure-Functions-*` headers, double-encoded `Metadata`, Newtonsoft date formats;
//! - validates replies like the host (2xx, JSON content type, non-empty, `Outputs.res.statusCode`,
//!   string header values) and turns them into what a client of `func start` would see;
//! - or, in forwarding mode, re-sends the client's request to the public path;
//! - or, in proxying mode (`enableProxyingHttpRequest`, which wins over forwarding), passes the
//!   client's request through as YARP's default transformer does (original path and query,
//!   headers minus hop-by-hop ones, `Host` replaced by the handler's address, `X-Forwarded-*`
//!   added, the invocation headers overwritten) and streams the response back
//!   (docs/functions-protocol.md §4.4).
//!
//! The envelopes themselves are built by [`super::envelope`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::envelope::{self, PUBLIC_HOST, Retry};
pub use super::envelope::{ClientRequest, TimerVariant};
use super::wait;

/// The host version the emulator claims to be (a real 4.x file version).
pub const HOST_VERSION: &str = "4.1037.0.23568";
/// Readiness polling, as in `WorkerConstants` / `HttpWorkerOptions`.
pub const READY_POLL: Duration = Duration::from_millis(25);
/// The host's default initialization budget.
pub const READY_BUDGET: Duration = Duration::from_secs(30);

/// One function folder as the host sees it.
#[derive(Debug, Clone)]
pub struct FunctionDef {
    pub name: String,
    pub json: Value,
}

impl FunctionDef {
    fn trigger(&self) -> Option<&Value> {
        self.json["bindings"].as_array()?.iter().find(|b| {
            b["direction"].as_str() == Some("in")
                && b["type"]
                    .as_str()
                    .is_some_and(|t| t.to_ascii_lowercase().ends_with("trigger"))
        })
    }
    pub fn trigger_type(&self) -> String {
        self.trigger()
            .and_then(|t| t["type"].as_str())
            .unwrap_or("")
            .to_string()
    }
    pub fn trigger_name(&self) -> String {
        self.trigger()
            .and_then(|t| t["name"].as_str())
            .unwrap_or("")
            .to_string()
    }
    pub fn route(&self) -> Option<String> {
        self.trigger()?["route"].as_str().map(str::to_string)
    }
    pub fn methods(&self) -> Vec<String> {
        self.trigger()
            .and_then(|t| t["methods"].as_array())
            .map(|m| {
                m.iter()
                    .filter_map(|v| v.as_str().map(str::to_ascii_uppercase))
                    .collect()
            })
            .unwrap_or_default()
    }
    pub fn has_retry(&self) -> Option<i64> {
        self.json["retry"]["maxRetryCount"].as_i64()
    }
}

/// What the emulator needs to start a handler.
pub struct HostOptions {
    /// The Functions app root (host.json, function folders, reports.toml).
    pub app_root: PathBuf,
    /// The executable the host resolved from `defaultExecutablePath`.
    pub exe: PathBuf,
    /// App settings (`local.settings.json` `Values` / app settings in Azure).
    pub settings: Vec<(String, String)>,
}

impl HostOptions {
    /// Our `handler` binary in an app root.
    pub fn new(app_root: &Path) -> Self {
        Self {
            app_root: app_root.to_path_buf(),
            exe: PathBuf::from(env!("CARGO_BIN_EXE_handler")),
            settings: Vec::new(),
        }
    }
    pub fn setting(mut self, k: &str, v: impl Into<String>) -> Self {
        self.settings.push((k.to_string(), v.into()));
        self
    }
}

/// A running handler behind the emulated host.
pub struct Host {
    pub port: u16,
    pub worker_id: String,
    pub ready_after: Duration,
    pub route_prefix: String,
    pub forwarding: bool,
    /// `customHandler.enableProxyingHttpRequest`: HTTP-in/out functions are proxied (it is
    /// checked before `enableForwardingHttpRequest` in `DefaultHttpWorkerService.InvokeAsync`).
    pub proxying: bool,
    pub functions: BTreeMap<String, FunctionDef>,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

/// The handler's reply to a payload-mode invocation, validated like the host does.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub invocation_id: String,
    /// The handler's HTTP status.
    pub status: u16,
    pub content_type: String,
    pub raw_body: String,
    /// `Some(reason)` when the host would record the invocation as failed.
    pub failure: Option<String>,
    /// `Logs` (empty when the reply was not 2xx: the host never reads that body).
    pub logs: Vec<String>,
    /// `Outputs` (case-sensitive keys).
    pub outputs: Map<String, Value>,
}

impl Invocation {
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }
}

/// What a client of `func start` would receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ClientResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Matches a function.json route template (`reports/{name?}`) against a path relative to the
/// route prefix; returns the route values (absent optional values as null).
pub fn match_route(template: &str, path: &str) -> Option<Map<String, Value>> {
    let tsegs: Vec<&str> = template.trim_matches('/').split('/').collect();
    let psegs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let mut params = Map::new();
    let mut i = 0;
    for t in &tsegs {
        if let Some(inner) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            let optional = inner.ends_with('?');
            let name = inner
                .trim_end_matches('?')
                .split(':')
                .next()
                .unwrap()
                .to_string();
            match psegs.get(i) {
                Some(v) => {
                    let decoded = percent_decode(v);
                    params.insert(name, Value::String(decoded));
                    i += 1;
                }
                None if optional => {
                    params.insert(name, Value::Null);
                }
                None => return None,
            }
        } else {
            if psegs.get(i).map(|s| s.eq_ignore_ascii_case(t)) != Some(true) {
                return None;
            }
            i += 1;
        }
    }
    (i == psegs.len()).then_some(params)
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl Host {
    /// Reads the app, starts the handler, waits for readiness. Panics (test failure) if the
    /// handler is not ready within the host's 30 s budget.
    pub async fn start(opts: HostOptions) -> Host {
        Self::try_start(opts)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`start`], but returns the failure (e.g. the process exited) instead of panicking.
    pub async fn try_start(opts: HostOptions) -> Result<Host, String> {
        let host_json: Value = serde_json::from_str(
            &std::fs::read_to_string(opts.app_root.join("host.json"))
                .map_err(|e| format!("host.json: {e}"))?,
        )
        .map_err(|e| format!("host.json: {e}"))?;
        if host_json["customHandler"]["description"].is_null() {
            return Err("Missing worker Description.".into());
        }
        let route_prefix = host_json
            .pointer("/extensions/http/routePrefix")
            .and_then(Value::as_str)
            .unwrap_or("api")
            .trim_matches('/')
            .to_string();
        let forwarding = host_json["customHandler"]["enableForwardingHttpRequest"]
            .as_bool()
            .unwrap_or(false);
        let proxying = host_json["customHandler"]["enableProxyingHttpRequest"]
            .as_bool()
            .unwrap_or(false);
        let mut functions = BTreeMap::new();
        for entry in std::fs::read_dir(&opts.app_root).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            let fj = entry.path().join("function.json");
            if fj.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let json: Value = serde_json::from_str(&std::fs::read_to_string(&fj).unwrap())
                    .map_err(|e| format!("{}: {e}", fj.display()))?;
                functions.insert(name.clone(), FunctionDef { name, json });
            }
        }
        // GetUnusedTcpPort: bind 127.0.0.1:0, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())?;
        let worker_id = uuid::Uuid::new_v4().to_string();
        let mut cmd = Command::new(&opts.exe);
        let args: Vec<String> = host_json["customHandler"]["description"]["arguments"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.replace("%FUNCTIONS_CUSTOMHANDLER_PORT%", &port.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        cmd.args(args)
            .current_dir(&opts.app_root)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(opts.settings.iter().map(|(k, v)| (k, v)))
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_HTTPWORKER_PORT", port.to_string())
            .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", &worker_id)
            .env("FUNCTIONS_HTTPWORKER_ID", &worker_id)
            .env("FUNCTIONS_APP_ROOT_PATH", &opts.app_root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "Failed to start Worker Channel. Process fileName: {}: {e}",
                opts.exe.display()
            )
        })?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        spawn_reader(child.stdout.take().unwrap(), stdout.clone());
        let mut stderr_read = spawn_reader(child.stderr.take().unwrap(), stderr.clone());
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        // Readiness: any HTTP answer to GET / within the budget (the budget counts sleeps).
        let mut slept = Duration::ZERO;
        let ready_after = loop {
            let ping = client
                .get(format!("http://127.0.0.1:{port}/"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if ping.is_ok() {
                break started.elapsed();
            }
            if let Ok(Some(status)) = child.try_wait() {
                // The process is gone: its stderr reader ends at EOF once it has the last lines.
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut stderr_read).await;
                let err = stderr.lock().unwrap().clone();
                return Err(format!(
                    "handler exited with {status} before it was ready; stderr: {err:?}"
                ));
            }
            if slept >= READY_BUDGET {
                return Err("Initializing HttpWorker timed out.".into());
            }
            tokio::time::sleep(READY_POLL).await;
            slept += READY_POLL;
        };
        Ok(Host {
            port,
            worker_id,
            ready_after,
            route_prefix,
            forwarding,
            proxying,
            functions,
            child,
            stdout,
            stderr,
            client,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Lines the handler wrote to stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Lines the handler wrote to stderr so far (the host logs them as errors).
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Everything the handler printed, for secret sweeps.
    pub fn output(&self) -> String {
        let mut all = self.stdout();
        all.extend(self.stderr());
        all.join("\n")
    }

    /// Waits until a stdout line contains `needle` (bounded).
    pub async fn wait_for_stdout(&self, needle: &str, within: Duration) -> bool {
        wait::until(within, || self.stdout().iter().any(|l| l.contains(needle))).await
    }

    /// Is the handler process still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id (for signals).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the process to exit (bounded); returns its exit code (None = killed by signal).
    pub async fn wait_exit(&mut self, within: Duration) -> Option<Option<i32>> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => Some(status.code()),
            _ => None,
        }
    }

    /// Kills the handler the way the host does on shutdown (SIGKILL).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    fn headers(&self, invocation_id: &str) -> Vec<(String, String)> {
        vec![
            (
                "User-Agent".into(),
                format!("Azure-Functions-Host/{HOST_VERSION}"),
            ),
            ("X-Azure-Functions-HostVersion".into(), HOST_VERSION.into()),
            (
                "X-Azure-Functions-InvocationId".into(),
                invocation_id.into(),
            ),
        ]
    }

    /// POSTs a raw body to a handler path with the host's headers (for malformed-input tests).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        chunked: bool,
    ) -> (u16, String, String) {
        let id = uuid::Uuid::new_v4().to_string();
        let mut req = self.client.post(format!("{}{}", self.base_url(), path));
        for (k, v) in self.headers(&id) {
            req = req.header(k, v);
        }
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        req = if chunked {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                body.chunks(7).map(|c| Ok(c.to_vec())).collect();
            req.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
        } else {
            req.body(body)
        };
        let resp = req.send().await.expect("handler unreachable");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, ct, resp.text().await.unwrap_or_default())
    }

    /// Sends a payload-mode invocation exactly as the host does and validates the reply.
    pub async fn invoke(&self, function: &str, payload: &Value) -> Invocation {
        let id = uuid::Uuid::new_v4().to_string();
        let bytes = serde_json::to_vec(payload).unwrap();
        // ObjectContent has no length: the body goes out chunked.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(4096).map(|c| Ok(c.to_vec())).collect();
        let mut req = self
            .client
            .post(format!("{}/{}", self.base_url(), function))
            .header("Content-Type", "application/json; charset=utf-8")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )));
        for (k, v) in self.headers(&id) {
            req = req.header(k, v);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Invocation {
                    invocation_id: id,
                    status: 0,
                    content_type: String::new(),
                    raw_body: String::new(),
                    failure: Some(format!("connection failed: {e}")),
                    logs: vec![],
                    outputs: Map::new(),
                };
            }
        };
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let raw_body = resp.text().await.unwrap_or_default();
        let mut inv = Invocation {
            invocation_id: id,
            status,
            content_type: content_type.clone(),
            raw_body: raw_body.clone(),
            failure: None,
            logs: vec![],
            outputs: Map::new(),
        };
        // 1. EnsureSuccessStatusCode: the body is not read on failure.
        if !(200..300).contains(&status) {
            inv.failure = Some(format!(
                "Response status code does not indicate success: {status}"
            ));
            return inv;
        }
        // 2./3. Only application/json and text/json select the JSON formatter.
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media != "application/json" && media != "text/json" {
            inv.failure = Some(format!(
                "Invalid HttpResponseMessage: content type `{content_type}`"
            ));
            return inv;
        }
        // 4. Empty or null body: the invocation would hang until functionTimeout.
        let parsed: Value = match serde_json::from_str(&raw_body) {
            Ok(v) => v,
            Err(_) if raw_body.trim().is_empty() => {
                inv.failure = Some("empty body: the invocation hangs until functionTimeout".into());
                return inv;
            }
            Err(e) => {
                inv.failure = Some(format!("Invalid HttpResponseMessage: {e}"));
                return inv;
            }
        };
        let Value::Object(obj) = parsed else {
            inv.failure = Some("null or non-object body: the invocation hangs".into());
            return inv;
        };
        // 5. Top-level keys are case-insensitive.
        for (k, v) in obj {
            if k.eq_ignore_ascii_case("logs") {
                match v {
                    Value::Array(items) => {
                        for item in items {
                            match item {
                                Value::String(s) => inv.logs.push(s),
                                other => {
                                    inv.failure =
                                        Some(format!("Logs must be strings, got {other}"));
                                    return inv;
                                }
                            }
                        }
                    }
                    Value::Null => {}
                    other => {
                        inv.failure = Some(format!("Logs must be an array, got {other}"));
                        return inv;
                    }
                }
            } else if k.eq_ignore_ascii_case("outputs") {
                match v {
                    Value::Object(o) => inv.outputs = o,
                    Value::Null => {}
                    other => {
                        inv.failure = Some(format!("Outputs must be an object, got {other}"));
                        return inv;
                    }
                }
            }
        }
        inv
    }

    /// The timer payload of a variant for one of the app's functions (its binding name and
    /// retry policy from function.json).
    pub fn timer_payload(
        &self,
        function: &str,
        variant: TimerVariant,
        utc_now: DateTime<Utc>,
        retry_count: Option<u32>,
    ) -> Value {
        let def = &self.functions[function];
        let retry = def.has_retry().map(|max| Retry {
            count: retry_count.unwrap_or(0),
            max,
        });
        envelope::timer_payload(function, &def.trigger_name(), variant, utc_now, retry)
    }

    /// A timer invocation of `NightlyReport`-like function at the host time `utc_now`.
    pub async fn timer(
        &self,
        function: &str,
        variant: TimerVariant,
        utc_now: DateTime<Utc>,
    ) -> Invocation {
        let payload = self.timer_payload(function, variant, utc_now, None);
        self.invoke(function, &payload).await
    }

    /// The admin endpoint `POST /admin/functions/{name}`: 404 for an unknown function, else
    /// 202 and the function runs "in the background" (here: awaited and returned).
    pub async fn admin_run(
        &self,
        function: &str,
        utc_now: DateTime<Utc>,
    ) -> (u16, Option<Invocation>) {
        if !self.functions.contains_key(function) {
            return (404, None);
        }
        (
            202,
            Some(self.timer(function, TimerVariant::Manual, utc_now).await),
        )
    }

    /// Finds the HTTP function whose route matches a public path.
    fn http_function_for(&self, path: &str) -> Option<(&FunctionDef, Map<String, Value>)> {
        let prefix = if self.route_prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", self.route_prefix)
        };
        let rel = path.strip_prefix(&prefix)?;
        self.functions.values().find_map(|f| {
            if !f.trigger_type().eq_ignore_ascii_case("httpTrigger") {
                return None;
            }
            let route = f.route().unwrap_or_else(|| f.name.clone());
            match_route(&route, rel).map(|p| (f, p))
        })
    }

    /// A client request in the mode `host.json` configures.
    pub async fn http(&self, req: ClientRequest) -> ClientResponse {
        if self.proxying {
            self.http_proxied(req).await
        } else if self.forwarding {
            self.http_forwarded(req).await
        } else {
            self.http_payload(req).await
        }
    }

    /// Payload mode: the request becomes `Data.req` of `POST /<FunctionName>`.
    pub async fn http_payload(&self, req: ClientRequest) -> ClientResponse {
        let Some((def, params)) = self.http_function_for(req.path()) else {
            return ClientResponse {
                status: 404,
                headers: vec![],
                body: String::new(),
            };
        };
        let methods = def.methods();
        if !methods.is_empty() && !methods.contains(&req.method.to_ascii_uppercase()) {
            return ClientResponse {
                status: 404,
                headers: vec![],
                body: String::new(),
            };
        }
        let payload = envelope::http_payload_json(&def.name, &def.trigger_name(), &params, &req);
        let inv = self.invoke(&def.name.clone(), &payload).await;
        if let Some(f) = &inv.failure {
            // ExceptionMiddleware: a bare 500 for the client.
            eprintln!("emulator: invocation {} failed: {f}", inv.invocation_id);
            return ClientResponse {
                status: 500,
                headers: vec![],
                body: String::new(),
            };
        }
        http_output_to_response(&inv.outputs, "res")
            .unwrap_or_else(|e| panic!("the host would reject this reply: {e}\n{}", inv.raw_body))
    }

    /// Forwarding mode: the client's request re-sent to the full public path (§4.2).
    pub async fn http_forwarded(&self, req: ClientRequest) -> ClientResponse {
        let Some((def, _)) = self.http_function_for(req.path()) else {
            return ClientResponse {
                status: 404,
                headers: vec![],
                body: String::new(),
            };
        };
        let methods = def.methods();
        if !methods.is_empty() && !methods.contains(&req.method.to_ascii_uppercase()) {
            return ClientResponse {
                status: 404,
                headers: vec![],
                body: String::new(),
            };
        }
        self.forward_raw(&req).await
    }

    /// Sends a request to the handler in the forwarded form without route checks (also what
    /// `handler dev` clients do).
    pub async fn forward_raw(&self, req: &ClientRequest) -> ClientResponse {
        let (mut resp, bytes) = self.forward_bytes(req).await;
        resp.body = String::from_utf8_lossy(&bytes).into_owned();
        resp
    }

    /// As [`Host::forward_raw`], with the body as bytes (workbooks and images): the returned
    /// response's `body` is empty.
    pub async fn forward_bytes(&self, req: &ClientRequest) -> (ClientResponse, Vec<u8>) {
        // Query rebuilt from the dictionary form: repeated keys collapse, comma-joined.
        let mut merged: Vec<(String, String)> = Vec::new();
        for (k, v) in req.query_pairs() {
            if let Some((_, e)) = merged.iter_mut().find(|(mk, _)| *mk == k) {
                e.push(',');
                e.push_str(&v);
            } else {
                merged.push((k, v));
            }
        }
        let mut url = format!("{}{}", self.base_url(), req.path());
        if !merged.is_empty() {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(merged.iter())
                .finish();
            url.push('?');
            url.push_str(&q);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
        let mut r = self.client.request(method, url).header("Host", PUBLIC_HOST);
        for (k, v) in &req.headers {
            if k.eq_ignore_ascii_case("user-agent") {
                r = r.header(k, format!("{v} Azure-Functions-Host/{HOST_VERSION}"));
            } else if !k.eq_ignore_ascii_case("content-type")
                && !k.eq_ignore_ascii_case("content-length")
            {
                r = r.header(k, v);
            }
        }
        r = r
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("X-Azure-Functions-InvocationId", id);
        if let Some(b) = &req.body
            && !b.is_empty()
        {
            if let Some((_, ct)) = req
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                r = r.header("Content-Type", ct);
            }
            r = r.body(b.clone());
        }
        let resp = r.send().await.expect("handler unreachable");
        client_response(resp).await
    }
}

/// Hop-by-hop headers, which a proxy never passes on (RFC 9110 §7.6.1; YARP drops them).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Host {
    /// Proxying mode (`enableProxyingHttpRequest`): the client's request as YARP forwards it,
    /// after the host's route check (§4.4). The response is read to the end here; see
    /// [`Host::proxy_stream`] for the chunks as they arrive.
    pub async fn http_proxied(&self, req: ClientRequest) -> ClientResponse {
        let Some((def, _)) = self.http_function_for(req.path()) else {
            return ClientResponse {
                status: 404,
                headers: vec![],
                body: String::new(),
            };
        };
        let methods = def.methods();
        if !methods.is_empty() && !methods.contains(&req.method.to_ascii_uppercase()) {
            return ClientResponse {
                status: 404,
                headers: vec![],
                body: String::new(),
            };
        }
        let resp = self.proxy_stream(&req).await;
        let (mut out, bytes) = client_response(resp).await;
        out.body = String::from_utf8_lossy(&bytes).into_owned();
        out
    }

    /// Sends `req` to the handler as the host's proxy does and returns the handler's response
    /// unread, so a test can watch the body arrive in chunks. What YARP's default transformer
    /// does: the path and query exactly as the client sent them (no rebuilding, repeated keys
    /// stay repeated); every header but the hop-by-hop ones; `Host` is the destination's
    /// (`127.0.0.1:<port>`), the client's goes to `X-Forwarded-Host`, with `X-Forwarded-For`
    /// and `X-Forwarded-Proto`; then the host overwrites `X-Azure-Functions-HostVersion` and
    /// `X-Azure-Functions-InvocationId` and sets `x-ms-invocation-id`; the body as sent.
    pub async fn proxy_stream(&self, req: &ClientRequest) -> reqwest::Response {
        let url = format!("{}{}", self.base_url(), req.path_and_query);
        let id = uuid::Uuid::new_v4().to_string();
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
        let mut r = self.client.request(method, url);
        for (k, v) in &req.headers {
            let lower = k.to_ascii_lowercase();
            if HOP_BY_HOP.contains(&lower.as_str())
                || lower == "host"
                || lower == "x-azure-functions-hostversion"
                || lower == "x-azure-functions-invocationid"
                || lower == "x-ms-invocation-id"
            {
                continue;
            }
            r = r.header(k, v);
        }
        r = r
            .header("X-Forwarded-For", "127.0.0.1")
            .header("X-Forwarded-Proto", "http")
            .header("X-Forwarded-Host", PUBLIC_HOST)
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("X-Azure-Functions-InvocationId", &id)
            .header("x-ms-invocation-id", &id);
        if let Some(b) = &req.body {
            r = r.body(b.clone());
        }
        r.send().await.expect("handler unreachable")
    }
}

/// The client's view of a handler response passed through (forwarding or proxying): status,
/// end-to-end headers (sorted; the framing headers a proxy rewrites left out), body bytes.
async fn client_response(resp: reqwest::Response) -> (ClientResponse, Vec<u8>) {
    let status = resp.status().as_u16();
    let mut headers = resp
        .headers()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "content-length" | "date" | "transfer-encoding" | "connection"
            )
        })
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect::<Vec<_>>();
    headers.sort();
    let bytes = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    (
        ClientResponse {
            status,
            headers,
            body: String::new(),
        },
        bytes,
    )
}

/// Turns `Outputs.<binding>` into the client's response (§5.2), or says why the host would fail.
pub fn http_output_to_response(
    outputs: &Map<String, Value>,
    binding: &str,
) -> Result<ClientResponse, String> {
    let Some(res) = outputs.get(binding) else {
        // No `res`: 200 with `{}`.
        return Ok(ClientResponse {
            status: 200,
            headers: vec![],
            body: "{}".into(),
        });
    };
    let res = match res {
        Value::String(s) => serde_json::from_str::<Value>(s)
            .map_err(|_| "Output is not in expected format".to_string())?,
        other => other.clone(),
    };
    let Value::Object(obj) = res else {
        return Err("Output is not in expected format".into());
    };
    let find = |name: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let status = match find("statusCode") {
        None | Some(Value::Null) => 200,
        Some(Value::Number(n)) => n.as_u64().ok_or("statusCode is not a status")? as u16,
        Some(Value::String(s)) => s.parse().map_err(|_| "statusCode is not numeric")?,
        Some(other) => return Err(format!("statusCode has the wrong type: {other}")),
    };
    let mut headers = Vec::new();
    let mut content_type = None;
    if let Some(Value::Object(h)) = find("headers") {
        for (k, v) in h {
            let Value::String(s) = v else {
                return Err(format!("header `{k}` is not a string: {v}"));
            };
            if k.eq_ignore_ascii_case("content-type") {
                content_type = Some(s);
            } else {
                headers.push((k.to_ascii_lowercase(), s));
            }
        }
    }
    let body = match find("body") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(Value::Bool(b)) => {
            if b {
                "True".into()
            } else {
                "False".into()
            }
        }
        Some(other) => serde_json::to_string_pretty(&other).unwrap(),
    };
    // With no body no output formatter runs, so no Content-Type is added [inferred].
    let ct = match content_type {
        None if body.is_empty() => None,
        None => Some("text/plain; charset=utf-8".to_string()),
        Some(c) if c.to_ascii_lowercase().contains("charset") => Some(c),
        Some(c) => Some(format!("{c}; charset=utf-8")),
    };
    if let Some(ct) = ct {
        headers.push(("content-type".into(), ct));
    }
    headers.sort();
    Ok(ClientResponse {
        status,
        headers,
        body,
    })
}

impl Drop for Host {
    /// With `REPORT_HANDLER_SWEEP_DIR` set (scripts/test.sh sets it), everything the handler
    /// printed is kept there, so the secret sweep can scan the whole suite's output.
    fn drop(&mut self) {
        if let Ok(dir) = std::env::var("REPORT_HANDLER_SWEEP_DIR") {
            let path = std::path::Path::new(&dir).join(format!("handler-{}.log", self.worker_id));
            let _ = std::fs::write(path, self.output());
        }
    }
}

fn spawn_reader<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    r: R,
    sink: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    })
}

/// A throwaway Functions app root: the repository's host.json, function folders and sample
/// reports.toml copied into a temp dir, so tests can change them freely.
pub struct AppDir {
    pub dir: tempfile::TempDir,
}

impl AppDir {
    pub fn from_repo() -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        for f in ["host.json", "reports.toml"] {
            std::fs::copy(repo.join(f), dir.path().join(f)).unwrap();
        }
        for func in [
            "HttpTrigger",
            "Deliveries",
            "ReportDeliveries",
            "Health",
            "NightlyReport",
        ] {
            std::fs::create_dir_all(dir.path().join(func)).unwrap();
            std::fs::copy(
                repo.join(func).join("function.json"),
                dir.path().join(func).join("function.json"),
            )
            .unwrap();
        }
        Self { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn write(&self, rel: &str, contents: &str) {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, contents).unwrap();
    }
    /// Turns `customHandler.enableProxyingHttpRequest` on or off in host.json.
    pub fn set_proxying(&self, on: bool) {
        let p = self.dir.path().join("host.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v["customHandler"]["enableProxyingHttpRequest"] = Value::Bool(on);
        std::fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
    /// Rewrites host.json with a JSON patch applied to `customHandler`.
    pub fn set_forwarding(&self, on: bool) {
        let p = self.dir.path().join("host.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v["customHandler"]["enableForwardingHttpRequest"] = Value::Bool(on);
        std::fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
}
