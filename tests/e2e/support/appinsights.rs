//! A fake Application Insights ingestion endpoint on loopback: the track API the
//! `opentelemetry-application-insights` exporter posts to (`POST {IngestionEndpoint}/v2/track`, a
//! gzip-compressed JSON array of envelopes), answered like Breeze (200 with the items counted).
//!
//! The exporter rewrites every `http://` ingestion endpoint to `https://` (its connection string
//! parser does so), so the fake speaks TLS with a throwaway CA of its own: point `SSL_CERT_FILE`
//! at [`Ingestion::ca_bundle`], which can also carry other fakes' CAs (the SMTP relay's).
//!
//! Each envelope's `iKey` is compared with the instrumentation key given at start and then
//! replaced with `<ikey>`, so what is kept, and written into `REPORT_HANDLER_SWEEP_DIR` for the
//! suite's secret sweep, never holds the key, which the sweep can then look for everywhere else.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::wait;

/// Largest (decompressed) track body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Everything the fake got.
#[derive(Debug, Default)]
pub struct Tracked {
    /// The envelopes, `iKey` redacted.
    pub envelopes: Vec<Value>,
    /// Whether each envelope's `iKey` was the expected instrumentation key.
    pub ikey_matched: Vec<bool>,
    /// Requests that were not a decodable track call: path and why.
    pub rejected: Vec<(String, String)>,
}

/// One telemetry item, flattened for assertions.
#[derive(Debug, Clone)]
pub struct Item {
    /// The envelope name without its prefix: `Request`, `RemoteDependency`, `Message`, `Metric`…
    pub kind: String,
    /// `baseData.name` (requests and dependencies), `baseData.message` (messages) or the first
    /// metric's name.
    pub name: String,
    /// `baseData.id` (the span id of requests and dependencies).
    pub id: String,
    /// `ai.operation.id`: the trace id.
    pub operation_id: String,
    /// `ai.operation.parentId`: the parent span id, when there is one.
    pub parent_id: String,
    /// `baseData.properties`, as text.
    pub properties: serde_json::Map<String, Value>,
}

/// The fake; stops (and writes its dump) when dropped.
pub struct Ingestion {
    pub port: u16,
    state: Arc<Mutex<Tracked>>,
    ca_file: tempfile::NamedTempFile,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ingestion {
    /// Starts the fake on its own thread and runtime, expecting `ikey` in every envelope.
    /// `extra_ca` (a PEM bundle) is appended to [`Ingestion::ca_bundle`].
    pub fn start(ikey: &str, extra_ca: Option<&Path>) -> Ingestion {
        let (acceptor, ca_pem) = tls();
        let mut bundle = ca_pem;
        if let Some(p) = extra_ca {
            bundle.push('\n');
            bundle.push_str(&std::fs::read_to_string(p).expect("read the extra CA bundle"));
        }
        let mut ca_file = tempfile::NamedTempFile::new().expect("temp CA file");
        std::io::Write::write_all(&mut ca_file, bundle.as_bytes()).expect("write CA");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("local address").port();
        let state = Arc::new(Mutex::new(Tracked::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let ikey = Arc::new(ikey.to_string());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("ingestion runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let (acceptor, st, ikey) = (acceptor.clone(), st.clone(), ikey.clone());
                        tokio::spawn(async move {
                            let Ok(Ok(tls)) =
                                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                                    .await
                            else {
                                return;
                            };
                            let svc = hyper::service::service_fn(move |req| {
                                let (st, ikey) = (st.clone(), ikey.clone());
                                async move {
                                    Ok::<_, std::convert::Infallible>(handle(req, &st, &ikey).await)
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), svc)
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
        Ingestion {
            port,
            state,
            ca_file,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The connection string pointing the exporter at this fake.
    pub fn connection_string(&self, ikey: &str) -> String {
        format!(
            "InstrumentationKey={ikey};IngestionEndpoint=https://127.0.0.1:{}/",
            self.port
        )
    }

    /// The PEM bundle to trust (`SSL_CERT_FILE`): this fake's CA and the extra one.
    pub fn ca_bundle(&self) -> &Path {
        self.ca_file.path()
    }

    pub fn state(&self) -> MutexGuard<'_, Tracked> {
        self.state.lock().unwrap()
    }

    /// Every item received so far.
    pub fn items(&self) -> Vec<Item> {
        self.state().envelopes.iter().map(item).collect()
    }

    /// Everything received, as the sweep file holds it.
    pub fn dump(&self) -> String {
        format!("{:#?}", *self.state())
    }

    /// Polls until `cond` holds on what arrived, at most `within`.
    pub async fn wait(&self, within: Duration, mut cond: impl FnMut(&Ingestion) -> bool) -> bool {
        wait::until(within, || cond(self)).await
    }
}

impl Drop for Ingestion {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(dir) = std::env::var("REPORT_HANDLER_SWEEP_DIR") {
            let path = Path::new(&dir).join(format!(
                "appinsights-{}-{}.txt",
                self.port,
                uuid::Uuid::new_v4()
            ));
            let _ = std::fs::write(path, self.dump());
        }
    }
}

fn item(e: &Value) -> Item {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let base = &e["data"]["baseData"];
    let name = match base.get("name") {
        Some(n) => s(n),
        None => match base.get("message") {
            Some(m) => s(m),
            None => s(&base["metrics"][0]["name"]),
        },
    };
    Item {
        kind: s(&e["name"])
            .trim_start_matches("Microsoft.ApplicationInsights.")
            .to_string(),
        name,
        id: s(&base["id"]),
        operation_id: s(&e["tags"]["ai.operation.id"]),
        parent_id: s(&e["tags"]["ai.operation.parentId"]),
        properties: base["properties"].as_object().cloned().unwrap_or_default(),
    }
}

async fn handle(req: Request<Incoming>, st: &Mutex<Tracked>, ikey: &str) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let gzip = req
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        == Some("gzip");
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return reject(st, &path, format!("body: {e}")),
    };
    if path != "/v2/track" && path != "/v2.1/track" {
        return reject(st, &path, "unknown path".into());
    }
    let json = if gzip {
        let mut out = Vec::new();
        let mut dec = flate2::read::GzDecoder::new(body.as_ref());
        if let Err(e) = std::io::Read::read_to_end(
            &mut std::io::Read::take(&mut dec, MAX_BODY as u64),
            &mut out,
        ) {
            return reject(st, &path, format!("gzip: {e}"));
        }
        out
    } else {
        body.to_vec()
    };
    let envelopes: Vec<Value> = match serde_json::from_slice(&json) {
        Ok(Value::Array(items)) => items,
        Ok(_) => return reject(st, &path, "not a JSON array".into()),
        Err(e) => return reject(st, &path, format!("json: {e}")),
    };
    let n = envelopes.len();
    {
        let mut st = st.lock().unwrap();
        for mut e in envelopes {
            let matched = e.get("iKey").and_then(Value::as_str) == Some(ikey);
            if let Some(obj) = e.as_object_mut() {
                obj.insert("iKey".into(), Value::String("<ikey>".into()));
            }
            st.ikey_matched.push(matched);
            st.envelopes.push(e);
        }
    }
    let body = json!({"itemsReceived": n, "itemsAccepted": n, "errors": []});
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn reject(st: &Mutex<Tracked>, path: &str, why: String) -> Response<Full<Bytes>> {
    st.lock().unwrap().rejected.push((path.to_string(), why));
    // 400 is not retried by the exporter: a broken request shows up once in `rejected`.
    Response::builder()
        .status(400)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A throwaway CA and a leaf for `127.0.0.1` and `localhost`: the acceptor and the CA's PEM.
fn tls() -> (tokio_rustls::TlsAcceptor, String) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "report-handler fake ingestion test CA",
    );
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("leaf params");
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf cert");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("server cert");
    (tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), ca.pem())
}
