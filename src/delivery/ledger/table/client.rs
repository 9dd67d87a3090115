//! A small client for the Azure Table service REST API, only what the ledger needs: create a
//! table, insert an entity, read one, replace one guarded by its ETag (`If-Match`), and query
//! a partition with continuation. OData JSON (`nometadata`), `x-ms-version` pinned, Shared Key
//! signing for connection strings and bearer tokens for identities.
//!
//! Why our own: the official Azure SDK for Rust has no Table storage crate on the `azure_core`
//! 1.x line (the one our Key Vault client uses); the old `azure_data_tables` sits on the
//! retired 0.x core and would bring a second, incompatible SDK stack into the build.
//!
//! Failures are bounded: every request has a connect and a total timeout; throttling and
//! server-busy answers (429, 500, 502, 503, 504) and a dropped connection are retried a few
//! times with backoff; anything else is returned at once as a [`TableError`] that never
//! carries the key or a token.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::{Map, Value};

/// The REST API version every request is made with.
pub const API_VERSION: &str = "2019-02-02";
/// The token scope for Azure Storage.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// TCP connect timeout: an unreachable account fails a tick fast, and the host retries it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most one request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries after a throttling or busy answer (so at most this + 1 requests).
const MAX_RETRIES: u32 = 3;
/// The first backoff; doubled after each retry, and never more than [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The role an identity needs on the storage account to use the ledger table.
pub const REQUIRED_ROLE: &str = "Storage Table Data Contributor";

/// How requests are authorized.
pub enum Auth {
    /// Shared Key signing with the account key.
    SharedKey {
        /// The account name, part of the canonicalized resource.
        account: String,
        /// The decoded key.
        key: SecretSlice<u8>,
    },
    /// A bearer token for [`STORAGE_SCOPE`].
    Token(Arc<dyn TokenCredential>),
}

/// Why a request failed. Displays the status and the service's error code with a hint, never a
/// key, token or connection string.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// No answer: refused, reset, timed out.
    #[error("the storage account's Table service is unreachable or timed out ({0})")]
    Unreachable(String),
    /// No token could be had for the identity.
    #[error("no token for the storage account could be had from the identity ({0})")]
    Credential(String),
    /// The service answered with an error status.
    #[error("{}", describe_status(*status, code, *identity))]
    Status {
        /// The HTTP status.
        status: u16,
        /// The service's error code (`EntityAlreadyExists`, `AuthorizationPermissionMismatch`, …).
        code: String,
        /// Whether the request was authorized with an identity (for the 403 hint).
        identity: bool,
    },
    /// The answer was not the JSON the API documents.
    #[error("the Table service sent an unexpected answer: {0}")]
    Protocol(String),
}

impl TableError {
    /// The service's error code, if it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Status { code, .. } => Some(code),
            _ => None,
        }
    }
    /// The HTTP status, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn describe_status(status: u16, code: &str, identity: bool) -> String {
    let code = if code.is_empty() {
        "no error code"
    } else {
        code
    };
    match status {
        403 if identity => format!(
            "the storage account refused the app's identity (403 {code}): grant it the \"{REQUIRED_ROLE}\" role on the storage account"
        ),
        403 => format!(
            "the storage account refused the request (403 {code}): check the AccountKey in AzureWebJobsStorage, and the account's network rules"
        ),
        _ => format!("the Table service answered {status} ({code})"),
    }
}

/// What a conditional replace did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// The entity was replaced.
    Done,
    /// The ETag no longer matched: someone else changed the entity first.
    Lost,
    /// The entity no longer exists.
    Missing,
}

/// One table in one account.
pub struct TableClient {
    http: reqwest::Client,
    endpoint: Url,
    table: String,
    auth: Auth,
}

impl TableClient {
    /// A client for `table` at `endpoint`; no network.
    pub fn new(endpoint: Url, table: String, auth: Auth) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client for Table storage: {e}"))?;
        Ok(Self {
            http,
            endpoint,
            table,
            auth,
        })
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// `endpoint` + `/` + `path` (the endpoint may carry a path, as Azurite's does), with an
    /// already percent-encoded `query`.
    fn url(&self, path: &str, query: &str) -> Result<Url, TableError> {
        let base = self.endpoint.as_str().trim_end_matches('/');
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        Url::parse(&format!("{base}/{path}{q}"))
            .map_err(|_| TableError::Protocol("could not build a request URL".into()))
    }

    /// The address of one entity.
    fn entity_url(&self, pk: &str, rk: &str) -> Result<Url, TableError> {
        self.url(
            &format!(
                "{}(PartitionKey='{}',RowKey='{}')",
                self.table,
                encode(&quote(pk)),
                encode(&quote(rk))
            ),
            "",
        )
    }

    /// Creates the table; an existing table is fine.
    pub async fn create_table(&self) -> Result<(), TableError> {
        let body = serde_json::json!({ "TableName": self.table });
        let url = self.url("Tables", "")?;
        let (status, _, body) = self.send(Method::POST, url, Some(&body), None).await?;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT if error_code(&body) == "TableAlreadyExists" => Ok(()),
            s => Err(self.status_error(s, &body)),
        }
    }

    /// Inserts an entity; `Ok(false)` when one with the same keys exists already.
    pub async fn insert(&self, entity: &Map<String, Value>) -> Result<bool, TableError> {
        let url = self.url(&self.table, "")?;
        let body = Value::Object(entity.clone());
        let (status, _, body) = self
            .send_creating_table(Method::POST, url, Some(&body), None)
            .await?;
        match status {
            s if s.is_success() => Ok(true),
            StatusCode::CONFLICT if error_code(&body) == "EntityAlreadyExists" => Ok(false),
            s => Err(self.status_error(s, &body)),
        }
    }

    /// One entity and its ETag, or `None`.
    pub async fn get(
        &self,
        pk: &str,
        rk: &str,
    ) -> Result<Option<(Map<String, Value>, String)>, TableError> {
        let url = self.entity_url(pk, rk)?;
        let (status, etag, body) = self
            .send_creating_table(Method::GET, url, None, None)
            .await?;
        match status {
            StatusCode::OK => {
                let etag = etag.ok_or_else(|| TableError::Protocol("no ETag".into()))?;
                match serde_json::from_slice(&body) {
                    Ok(Value::Object(m)) => Ok(Some((m, etag))),
                    _ => Err(TableError::Protocol(
                        "an entity that is not a JSON object".into(),
                    )),
                }
            }
            StatusCode::NOT_FOUND if error_code(&body) != "TableNotFound" => Ok(None),
            s => Err(self.status_error(s, &body)),
        }
    }

    /// Replaces an entity only if it still has `etag` (`If-Match`).
    pub async fn replace(
        &self,
        entity: &Map<String, Value>,
        etag: &str,
    ) -> Result<Replaced, TableError> {
        let key = |k: &str| {
            entity
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let url = self.entity_url(&key("PartitionKey"), &key("RowKey"))?;
        let body = Value::Object(entity.clone());
        let (status, _, body) = self
            .send_creating_table(Method::PUT, url, Some(&body), Some(etag))
            .await?;
        match status {
            s if s.is_success() => Ok(Replaced::Done),
            StatusCode::PRECONDITION_FAILED => Ok(Replaced::Lost),
            StatusCode::NOT_FOUND if error_code(&body) != "TableNotFound" => Ok(Replaced::Missing),
            s => Err(self.status_error(s, &body)),
        }
    }

    /// Every entity matching an OData `filter`, in key order, following continuations; at
    /// most `top` when given (then only the first page is asked for).
    pub async fn query(
        &self,
        filter: &str,
        top: Option<u32>,
    ) -> Result<Vec<Map<String, Value>>, TableError> {
        /// A bound on pages (of up to 1,000 entities each) so a runaway loop cannot hang a tick.
        const MAX_PAGES: usize = 1_000;
        let mut out = Vec::new();
        let mut next: Option<(String, Option<String>)> = None;
        for _ in 0..MAX_PAGES {
            let mut q = format!("$filter={}", encode(filter));
            if let Some(t) = top {
                q.push_str(&format!("&$top={t}"));
            }
            if let Some((pk, rk)) = &next {
                q.push_str(&format!("&NextPartitionKey={}", encode(pk)));
                if let Some(rk) = rk {
                    q.push_str(&format!("&NextRowKey={}", encode(rk)));
                }
            }
            let url = self.url(&format!("{}()", self.table), &q)?;
            let resp = self.send_full(Method::GET, url, None, None, true).await?;
            if resp.status != StatusCode::OK {
                return Err(self.status_error(resp.status, &resp.body));
            }
            let page: Value = serde_json::from_slice(&resp.body)
                .map_err(|_| TableError::Protocol("a query answer that is not JSON".into()))?;
            let Some(items) = page.get("value").and_then(Value::as_array) else {
                return Err(TableError::Protocol("a query answer without value".into()));
            };
            out.extend(items.iter().filter_map(|v| v.as_object().cloned()));
            if top.is_some_and(|t| out.len() >= t as usize) {
                break;
            }
            match resp.next_partition {
                Some(pk) => next = Some((pk, resp.next_row)),
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    fn status_error(&self, status: StatusCode, body: &[u8]) -> TableError {
        TableError::Status {
            status: status.as_u16(),
            code: error_code(body),
            identity: matches!(self.auth, Auth::Token(_)),
        }
    }

    /// [`Self::send`], creating the table and trying once more when the service says the table
    /// does not exist (it was deleted, or an in-memory Azurite restarted).
    async fn send_creating_table(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<(StatusCode, Option<String>, Vec<u8>), TableError> {
        let first = self
            .send(method.clone(), url.clone(), body, if_match)
            .await?;
        if first.0 == StatusCode::NOT_FOUND && error_code(&first.2) == "TableNotFound" {
            tracing::warn!(table = %self.table, "the ledger table is missing; creating it");
            self.create_table().await?;
            return self.send(method, url, body, if_match).await;
        }
        Ok(first)
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<(StatusCode, Option<String>, Vec<u8>), TableError> {
        let r = self.send_full(method, url, body, if_match, false).await?;
        Ok((r.status, r.etag, r.body))
    }

    /// One request with bounded retries of throttling and busy answers and of dropped
    /// connections. Each attempt is signed anew (the signature covers the date).
    async fn send_full(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        if_match: Option<&str>,
        query: bool,
    ) -> Result<Response, TableError> {
        let body = body.map(|b| b.to_string().into_bytes());
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self
                .attempt(
                    method.clone(),
                    url.clone(),
                    body.as_deref(),
                    if_match,
                    query,
                )
                .await;
            let retry_after = match &outcome {
                Ok(r) if is_retryable(r.status) => r.retry_after,
                Ok(_) => return outcome,
                // A refused connection will not be accepted 200 ms later; a reset or stalled
                // one (a pooled connection the server closed) may well be.
                Err(TableError::Unreachable(e)) if attempt == 1 && !e.contains("refused") => None,
                Err(_) => return outcome,
            };
            if attempt > MAX_RETRIES {
                return outcome;
            }
            let wait = retry_after.unwrap_or(backoff).min(MAX_BACKOFF);
            tracing::debug!(
                attempt,
                wait_ms = wait.as_millis() as u64,
                "Table storage busy or throttling; retrying"
            );
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn attempt(
        &self,
        method: Method,
        url: Url,
        body: Option<&[u8]>,
        if_match: Option<&str>,
        query: bool,
    ) -> Result<Response, TableError> {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let content_type = if body.is_some() {
            "application/json"
        } else {
            ""
        };
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header("x-ms-date", &date)
            .header("x-ms-version", API_VERSION)
            .header("Accept", "application/json;odata=nometadata")
            .header("DataServiceVersion", "3.0;NetFx")
            .header("MaxDataServiceVersion", "3.0;NetFx");
        if let Some(b) = body {
            req = req
                .header("Content-Type", content_type)
                .header("Prefer", "return-no-content")
                .body(b.to_vec());
        }
        if let Some(etag) = if_match {
            req = req.header("If-Match", etag);
        }
        let authorization = match &self.auth {
            Auth::SharedKey { account, key } => {
                let resource = format!("/{account}{}", url.path());
                let to_sign = format!("{method}\n\n{content_type}\n{date}\n{resource}");
                let mac = hmac_sha256(key.expose_secret(), to_sign.as_bytes());
                use base64::Engine as _;
                format!(
                    "SharedKey {account}:{}",
                    base64::engine::general_purpose::STANDARD.encode(mac)
                )
            }
            Auth::Token(credential) => {
                let token = credential
                    .get_token(&[STORAGE_SCOPE], None)
                    .await
                    .map_err(|e| TableError::Credential(format!("{:?}", e.kind())))?;
                format!("Bearer {}", token.token.secret())
            }
        };
        req = req.header("Authorization", authorization);
        let resp = req
            .send()
            .await
            .map_err(|e| TableError::Unreachable(transport_cause(&e)))?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header("etag");
        let retry_after = header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let (next_partition, next_row) = if query {
            (
                header("x-ms-continuation-nextpartitionkey"),
                header("x-ms-continuation-nextrowkey"),
            )
        } else {
            (None, None)
        };
        let body = resp
            .bytes()
            .await
            .map_err(|e| TableError::Unreachable(transport_cause(&e)))?
            .to_vec();
        Ok(Response {
            status,
            etag,
            retry_after,
            next_partition,
            next_row,
            body,
        })
    }
}

struct Response {
    status: StatusCode,
    etag: Option<String>,
    retry_after: Option<Duration>,
    next_partition: Option<String>,
    next_row: Option<String>,
    body: Vec<u8>,
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// A transport error's kind and cause chain, without the URL (which carries no secret, but
/// keeps the message short).
fn transport_cause(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}

/// The service's error code: the `odata.error.code` of the body (the API's JSON error form).
fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("odata.error")
                .and_then(|e| e.get("code"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// An OData string literal's content: single quotes doubled.
pub fn quote(s: &str) -> String {
    s.replace('\'', "''")
}

/// Percent-encodes everything but the unreserved characters, so keys and filters survive any
/// path or query parser the same way (a space is `%20`, never `+`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// HMAC-SHA256 (RFC 2104) over the `sha2` the crate already has, for Shared Key signatures.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn keys_and_filters_are_encoded_for_any_parser() {
        assert_eq!(
            encode("2026-11-25T06:00:00.000000Z"),
            "2026-11-25T06%3A00%3A00.000000Z"
        );
        assert_eq!(encode("a eq 'b'"), "a%20eq%20%27b%27");
        assert_eq!(quote("o'neil"), "o''neil");
    }

    #[test]
    fn a_403_names_the_role_for_identities() {
        let e = TableError::Status {
            status: 403,
            code: "AuthorizationPermissionMismatch".into(),
            identity: true,
        };
        assert!(
            e.to_string().contains("Storage Table Data Contributor"),
            "{e}"
        );
    }
}
