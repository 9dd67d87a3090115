//! In-process fakes that speak the real wire protocols over loopback, for tests of the secret
//! layer and for end-to-end tests that need Key Vault references resolved:
//!
//! - [`FakeVault`]: Azure Key Vault get-secret over HTTPS (its own throwaway CA and a leaf for
//!   `myvault.vault.azure.net`, `localhost` and `127.0.0.1`), the 401 challenge then bearer
//!   tokens, the get-secret JSON with versions, `SecretNotFound`, `Forbidden`, 429 `Throttled`
//!   with `Retry-After`, a dead mode (connections dropped), a slow mode (never answers) and
//!   call counters (docs/keyvault.md §7).
//! - [`FakeMsi`]: the App Service managed-identity endpoint (plain HTTP, `X-IDENTITY-HEADER`,
//!   `api-version=2019-08-01`, `expires_on` as a string).
//! - [`StaticCredential`]: a `TokenCredential` handing out the token the fake vault accepts.
//!
//! Self-contained (no other support module), so `examples/bench.rs` includes it too.
//! Point the program at the fake with `SSL_CERT_FILE = fake.ca_pem_path()` and a reference
//! from [`FakeVault::reference`] (loopback host: the challenge-resource check is relaxed), or
//! use [`FakeVault::VAULT_HOST`] with a resolve override to keep the check on.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;

/// The bearer token the fake vault accepts and the fake MSI endpoint issues.
pub const TOKEN: &str = "fake-kv-access-token-0f1e2d";

/// How the fake vault behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers like Key Vault.
    Normal,
    /// Accepts TCP connections and drops them at once (a vault that is down).
    Dead,
    /// Accepts connections and requests but never answers (a hung vault).
    Slow,
    /// Every authorized request gets 403 `Forbidden` (the identity lacks access).
    Forbidden,
    /// Every authorized request gets 429 `Throttled` with `Retry-After: 1`.
    Throttled,
}

#[derive(Default)]
struct VaultState {
    /// name → versions in creation order (version id, value).
    secrets: HashMap<String, Vec<(String, String)>>,
    mode: Option<Mode>,
    delay: Duration,
    version_counter: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fake Azure Key Vault on `127.0.0.1:<random port>` over TLS.
pub struct FakeVault {
    addr: SocketAddr,
    state: Arc<Mutex<VaultState>>,
    calls: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    ca_file: tempfile::NamedTempFile,
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Pki {
    ca_pem: String,
    leaf_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn make_pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "report-handler fake vault test CA",
    );
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let mut leaf_params = rcgen::CertificateParams::new(vec![
        FakeVault::VAULT_HOST.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ])
    .expect("leaf params");
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, FakeVault::VAULT_HOST);
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf cert");
    Pki {
        ca_pem: ca.pem(),
        leaf_der: leaf.der().to_vec(),
        key_der: leaf_key.serialize_der(),
    }
}

fn tls_acceptor(pki: &Pki) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(pki.leaf_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der.clone())),
        )
        .expect("server cert");
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn error_body(code: &str, message: &str) -> serde_json::Value {
    json!({"error": {"code": code, "message": message}})
}

impl FakeVault {
    /// The production-shaped vault host the certificate also covers (map it to
    /// [`FakeVault::addr`] with a resolve override).
    pub const VAULT_HOST: &'static str = "myvault.vault.azure.net";

    /// Starts the fake on a fresh loopback port. Needs a tokio runtime.
    pub async fn start() -> FakeVault {
        let pki = make_pki();
        let acceptor = tls_acceptor(&pki);
        let mut ca_file = tempfile::NamedTempFile::new().expect("temp CA file");
        std::io::Write::write_all(&mut ca_file, pki.ca_pem.as_bytes()).expect("write CA");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake vault");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(VaultState::default()));
        let calls = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (st, c, r) = (state.clone(), calls.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                if lock(&st).mode == Some(Mode::Dead) {
                    drop(tcp);
                    continue;
                }
                let (acceptor, st, c, r) = (acceptor.clone(), st.clone(), c.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let (st, c, r) = (st.clone(), c.clone(), r.clone());
                        async move {
                            // A dead vault also kills pooled keep-alive connections: an error
                            // from the service makes hyper close the connection unanswered.
                            if lock(&st).mode == Some(Mode::Dead) {
                                return Err(std::io::Error::other("fake vault is dead"));
                            }
                            Ok(handle_vault(req, st, c, r).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        FakeVault {
            addr,
            state,
            calls,
            requests,
            ca_file,
            ca_pem: pki.ca_pem,
            task,
        }
    }

    /// The socket address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT/`.
    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.addr.port())
    }

    /// The CA certificate (PEM) that signed the fake's certificate; use for `SSL_CERT_FILE`.
    pub fn ca_pem_path(&self) -> &Path {
        self.ca_file.path()
    }

    /// The CA certificate as PEM text.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// `@Microsoft.KeyVault(SecretUri=https://127.0.0.1:PORT/secrets/<name>[/<version>])`.
    pub fn reference(&self, name: &str, version: Option<&str>) -> String {
        let v = version.map(|v| format!("/{v}")).unwrap_or_default();
        format!(
            "@Microsoft.KeyVault(SecretUri={}secrets/{name}{v})",
            self.base_url()
        )
    }

    /// Creates a new version of `name` holding `value` (a rotation if it existed); returns the
    /// version id.
    pub fn set_secret(&self, name: &str, value: &str) -> String {
        let mut st = lock(&self.state);
        st.version_counter += 1;
        let version = format!("{:032x}", 0xabc0_0000_u64 + st.version_counter);
        st.secrets
            .entry(name.to_string())
            .or_default()
            .push((version.clone(), value.to_string()));
        version
    }

    /// Deletes a secret with all its versions.
    pub fn delete_secret(&self, name: &str) {
        lock(&self.state).secrets.remove(name);
    }

    /// Switches the behaviour (see [`Mode`]).
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.state).mode = Some(mode);
    }

    /// Delays every answer by `d` (to make concurrent callers overlap).
    pub fn set_delay(&self, d: Duration) {
        lock(&self.state).delay = d;
    }

    /// Authorized get-secret requests received (whatever the answer): "vault calls".
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// All HTTP requests received, including unauthenticated challenge round trips.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn handle_vault(
    req: Request<Incoming>,
    st: Arc<Mutex<VaultState>>,
    calls: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
) -> Response<Full<Bytes>> {
    requests.fetch_add(1, Ordering::SeqCst);
    let (mode, delay) = {
        let s = lock(&st);
        (s.mode.unwrap_or(Mode::Normal), s.delay)
    };
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    if mode == Mode::Slow {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let query = parts.uri.query().unwrap_or("");
    let has_api_version =
        form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "api-version" && !v.is_empty());
    if !has_api_version {
        return json_response(
            StatusCode::BAD_REQUEST,
            error_body(
                "MissingApiVersionParameter",
                "The api-version query parameter is required.",
            ),
        );
    }
    let authorized = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {TOKEN}").as_str());
    if !authorized {
        let mut r = json_response(
            StatusCode::UNAUTHORIZED,
            error_body(
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
            ),
        );
        r.headers_mut().insert(
            "www-authenticate",
            hyper::header::HeaderValue::from_static(
                "Bearer authorization=\"https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000\", resource=\"https://vault.azure.net\"",
            ),
        );
        return r;
    }
    calls.fetch_add(1, Ordering::SeqCst);
    match mode {
        Mode::Forbidden => {
            return json_response(
                StatusCode::FORBIDDEN,
                json!({"error": {"code": "Forbidden", "message": "The user, group or application does not have secrets get permission on key vault.", "innererror": {"code": "AccessDenied"}}}),
            );
        }
        Mode::Throttled => {
            let mut r = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                error_body(
                    "Throttled",
                    "Request was not processed because too many requests were received.",
                ),
            );
            r.headers_mut()
                .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
            return r;
        }
        _ => {}
    }
    let host = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .rsplit_once(':')
        .map(|(h, _)| h.to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let segs: Vec<&str> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (name, version) = match segs.as_slice() {
        ["secrets", name] => (*name, None),
        ["secrets", name, version] => (*name, Some(*version)),
        _ => {
            return json_response(
                StatusCode::NOT_FOUND,
                error_body("NotFound", "The requested path was not found."),
            );
        }
    };
    let s = lock(&st);
    let found = s.secrets.get(name).and_then(|versions| match version {
        None => versions.last(),
        Some(v) => versions.iter().find(|(id, _)| id == v),
    });
    match found {
        None => json_response(
            StatusCode::NOT_FOUND,
            error_body(
                "SecretNotFound",
                &format!(
                    "A secret with (name/id) {name}{} was not found in this key vault.",
                    version.map(|v| format!("/{v}")).unwrap_or_default()
                ),
            ),
        ),
        Some((id, value)) => json_response(
            StatusCode::OK,
            json!({
                "value": value,
                "id": format!("https://{host}/secrets/{name}/{id}"),
                "attributes": {"enabled": true, "created": 1_700_000_000, "updated": 1_700_000_000,
                               "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
                "tags": {}
            }),
        ),
    }
}

/// A fake App Service managed-identity endpoint (plain HTTP on loopback).
pub struct FakeMsi {
    addr: SocketAddr,
    header: String,
    calls: Arc<AtomicU64>,
    client_ids: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMsi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeMsi {
    /// Starts the fake; it requires `X-IDENTITY-HEADER` to equal [`FakeMsi::header`].
    pub async fn start() -> FakeMsi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake msi");
        let addr = listener.local_addr().expect("addr");
        let header = format!("test-identity-header-{}", addr.port());
        let calls = Arc::new(AtomicU64::new(0));
        let client_ids = Arc::new(Mutex::new(Vec::new()));
        let (h, c, ids) = (header.clone(), calls.clone(), client_ids.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (h, c, ids) = (h.clone(), c.clone(), ids.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (h, c, ids) = (h.clone(), c.clone(), ids.clone());
                        async move { Ok::<_, Infallible>(handle_msi(req, &h, &c, &ids)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        FakeMsi {
            addr,
            header,
            calls,
            client_ids,
            task,
        }
    }

    /// The value for `IDENTITY_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/msi/token", self.addr.port())
    }

    /// The value for `IDENTITY_HEADER`.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// Token requests answered with a token.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The `client_id` parameter of each successful token request.
    pub fn client_ids(&self) -> Vec<Option<String>> {
        lock(&self.client_ids).clone()
    }
}

fn handle_msi(
    req: Request<Incoming>,
    header: &str,
    calls: &AtomicU64,
    ids: &Mutex<Vec<Option<String>>>,
) -> Response<Full<Bytes>> {
    let ok_header = req
        .headers()
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        == Some(header);
    if !ok_header {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"}),
        );
    }
    let q: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if q.get("api-version").map(String::as_str) != Some("2019-08-01") || !q.contains_key("resource")
    {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"statusCode": 400, "message": "api-version 2019-08-01 and resource are required"}),
        );
    }
    calls.fetch_add(1, Ordering::SeqCst);
    lock(ids).push(q.get("client_id").cloned());
    let expires_on = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 3600)
        .unwrap_or(0);
    json_response(
        StatusCode::OK,
        json!({
            "access_token": TOKEN,
            "expires_on": expires_on.to_string(),
            "resource": q["resource"],
            "token_type": "Bearer",
            "client_id": q.get("client_id").cloned().unwrap_or_else(|| "5e29463d-71da-4fe0-8e69-999b57db23b0".into()),
        }),
    )
}

/// A credential that always hands out [`TOKEN`] (for tests that are not about credentials).
#[derive(Debug)]
pub struct StaticCredential;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for StaticCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            TOKEN,
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}
