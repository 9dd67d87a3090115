//! A webhook receiver on loopback for the destination tests: it records every request (path,
//! headers, body) and answers from a script (one reply per request, then the default reply),
//! so a test can make it answer 429 with `Retry-After`, 400, 503 or hang.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// The secret part of every receiver URL the tests hand the handler (in tests/secret-values.txt:
/// the sweep checks it never appears in any output).
pub const URL_SECRET: &str = "hook-path-7f3a9c2e41";

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, with a short body.
    Status(u16),
    /// This status with `Retry-After: <secs>`.
    RetryAfter(u16, u64),
    /// This status with this body (e.g. an error page echoing the URL).
    Body(u16, String),
    /// No answer for this long (longer than the handler's request timeout), then 200.
    Hang(Duration),
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request path (with the secret part).
    pub path: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The status answered (`None` while hanging).
    pub answered: Option<u16>,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    received: Vec<Received>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on 127.0.0.1 that answers `script` in order, then `default`.
    pub async fn start(script: Vec<Reply>, default: Reply) -> Receiver {
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            default: Some(default),
            received: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let st = state.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let st = st.clone();
            async move { answer(st, uri, headers, body).await }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state, task }
    }

    /// The URL the handler posts to: `http://127.0.0.1:PORT/<name>/<secret part>`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}/{URL_SECRET}", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The requests answered with a 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }

    /// Replaces the default reply (after the script).
    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = Some(reply);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(st: Arc<Mutex<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let (reply, index) = {
        let mut s = st.lock().unwrap();
        let reply = s
            .script
            .pop_front()
            .or_else(|| s.default.clone())
            .unwrap_or(Reply::Status(200));
        s.received.push(Received {
            path: uri.path().to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        v.to_str().unwrap_or("").to_string(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            answered: None,
        });
        (reply, s.received.len() - 1)
    };
    let status = |n: u16| StatusCode::from_u16(n).unwrap();
    let (code, response) = match reply {
        Reply::Status(n) => (n, (status(n), "ok-or-not").into_response()),
        Reply::RetryAfter(n, secs) => (
            n,
            (status(n), [("retry-after", secs.to_string())], "slow down").into_response(),
        ),
        Reply::Body(n, b) => (n, (status(n), b).into_response()),
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            (200, (StatusCode::OK, "late").into_response())
        }
    };
    st.lock().unwrap().received[index].answered = Some(code);
    response
}
