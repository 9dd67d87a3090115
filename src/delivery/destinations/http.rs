//! Posting one payload to a destination's URL: bounded in time, `Retry-After` honoured within a
//! small budget, and every answer sorted into delivered, transient or permanent, with error
//! text that never contains the URL.
//!
//! The rules (issue 16): a 2xx is success whatever the body says; 429 and 503 wait for
//! `Retry-After` when it fits in [`RETRY_AFTER_BUDGET`] (else the ledger row stays retryable
//! for a later tick); connection errors, timeouts, 408 and other 5xx are transient; any other
//! 4xx (and a 3xx: redirects are not followed, a signed body must not go elsewhere) is
//! permanent, with the status and a short excerpt of the answer.

use std::time::Duration;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

/// The most one request may take, connecting to reading the answer's end: a hung receiver
/// holds a tick this long at most, then the row stays retryable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connect (and TLS) timeout, within [`REQUEST_TIMEOUT`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most one delivery sleeps for `Retry-After` answers in one invocation: the tick has
/// other reports to deliver and a `functionTimeout`; a longer wait is left to a later tick.
pub const RETRY_AFTER_BUDGET: Duration = Duration::from_secs(5);
/// Attempts per delivery in one invocation (the first and the `Retry-After` ones).
pub const MAX_ATTEMPTS: u32 = 3;
/// How much of a refusal's answer is kept for the ledger (characters).
const EXCERPT_CHARS: usize = 200;
/// How much of the answer is read at most to make the excerpt (bytes).
const EXCERPT_READ: usize = 4096;

/// How a post ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// A 2xx: delivered.
    Delivered {
        /// The status the receiver answered.
        status: u16,
    },
    /// Worth another try on a later tick; the text names the status or the network problem.
    Transient {
        /// What happened (never the URL).
        error: String,
        /// The last status, when the receiver answered at all.
        status: Option<u16>,
    },
    /// Trying again cannot help (a 4xx other than 408/429).
    Permanent {
        /// The status and an excerpt of the answer (never the URL).
        error: String,
        /// The receiver's status.
        status: u16,
    },
}

/// The HTTP client every destination shares (connection reuse across targets and ticks):
/// no proxy, no redirects, explicit timeouts. Built once; `Err` only if the TLS backend cannot
/// be set up.
pub fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<Result<reqwest::Client, String>> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .user_agent(concat!("report-handler/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|_| "the HTTP client for destinations could not be built".to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Posts `body` (JSON) with `headers` to `url`, retrying within the invocation only for
/// 429/503 with a `Retry-After` that fits the budget. `scrub` removes the URL, its parts and a
/// signing secret from every error text, since a receiver's error page may echo them.
pub async fn post_json(
    url: &reqwest::Url,
    body: &[u8],
    headers: &[(&'static str, String)],
    scrub: &Scrubber,
) -> Posted {
    let client = match client() {
        Ok(c) => c,
        Err(error) => {
            return Posted::Transient {
                error,
                status: None,
            };
        }
    };
    let mut slept = Duration::ZERO;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Posted::Transient {
                    error: scrub.apply(&describe_error(&e)),
                    status: None,
                };
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Posted::Delivered {
                status: status.as_u16(),
            };
        }
        let code = status.as_u16();
        if code == 429 || code == 503 {
            let wait = retry_after(resp.headers());
            match wait {
                Some(w) if attempt < MAX_ATTEMPTS && slept + w <= RETRY_AFTER_BUDGET => {
                    tracing::info!(
                        http.response.status_code = code,
                        retry_after_ms = w.as_millis() as u64,
                        attempt,
                        "destination asked to retry later; waiting within the invocation's budget"
                    );
                    drop(resp);
                    tokio::time::sleep(w).await;
                    slept += w;
                    continue;
                }
                _ => {
                    let hint = match wait {
                        Some(w) => format!(" (Retry-After {} s)", w.as_secs()),
                        None => String::new(),
                    };
                    return Posted::Transient {
                        error: format!("HTTP {code}{hint}: the receiver asked to retry later"),
                        status: Some(code),
                    };
                }
            }
        }
        let excerpt = scrub.apply(&excerpt(resp).await);
        let error = if excerpt.is_empty() {
            format!("HTTP {code}")
        } else {
            format!("HTTP {code}: {excerpt}")
        };
        return if status.is_server_error() || code == 408 {
            Posted::Transient {
                error,
                status: Some(code),
            }
        } else if status.is_redirection() {
            Posted::Permanent {
                error: format!("{error} (redirects are not followed)"),
                status: code,
            }
        } else {
            Posted::Permanent {
                error,
                status: code,
            }
        };
    }
}

/// `Retry-After` as a delay: delta-seconds or an HTTP date (a past date is no wait).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let raw = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    Some(
        (at.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The start of the answer, printable, for the ledger: at most [`EXCERPT_CHARS`] characters
/// (control characters as spaces), read within the request's timeout.
async fn excerpt(mut resp: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < EXCERPT_READ {
        match resp.chunk().await {
            Ok(Some(c)) => bytes.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(EXCERPT_CHARS)
        .collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A network error in words, without the URL reqwest puts in its messages.
fn describe_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        format!(
            "timed out (no complete answer within {} s)",
            REQUEST_TIMEOUT.as_secs()
        )
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let t = s.to_string();
        if !t.is_empty() && !causes.contains(&t) {
            causes.push(t);
        }
        source = s.source();
    }
    if causes.is_empty() {
        what
    } else {
        format!("{what}: {}", causes.join(": "))
    }
}

/// Removes secret text (the URL and its parts, signing secrets) from error messages before
/// they reach the ledger, a log or the tick's answer.
#[derive(Default)]
pub struct Scrubber {
    needles: Vec<SecretString>,
}

impl Scrubber {
    /// A scrubber for `url`: the whole URL, its path-and-query and its host (a receiver's
    /// error page may echo any of them).
    pub fn for_url(url: &reqwest::Url) -> Self {
        let mut s = Self::default();
        s.add(url.as_str());
        s.add(url.as_str().trim_end_matches('/'));
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        if path.len() > 1 {
            s.add(&path);
            s.add(url.path());
        }
        if let Some(q) = url.query() {
            s.add(q);
        }
        if let Some(h) = url.host_str() {
            s.add(h);
        }
        s
    }

    /// Also scrub `text` (ignored when shorter than 4 characters: it would mangle words).
    pub fn add(&mut self, text: &str) {
        if text.chars().count() >= 4 {
            self.needles.push(SecretString::from(text.to_string()));
            // Longest first, so a URL is replaced whole before its host.
            self.needles
                .sort_by_key(|n| std::cmp::Reverse(n.expose_secret().len()));
        }
    }

    /// `text` with every secret replaced by `[redacted]`.
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for n in &self.needles {
            let n = n.expose_secret();
            if out.contains(n) {
                out = out.replace(n, "[redacted]");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "1".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn the_scrubber_removes_the_url_and_its_parts() {
        let url: reqwest::Url = "https://hooks.example.test/services/T0/B0/s3cretpath?sig=abcdef"
            .parse()
            .unwrap();
        let mut s = Scrubber::for_url(&url);
        s.add("signing-key-1");
        let text = "bad request for https://hooks.example.test/services/T0/B0/s3cretpath?sig=abcdef; \
                    path /services/T0/B0/s3cretpath?sig=abcdef, sig=abcdef, host hooks.example.test, key signing-key-1";
        let out = s.apply(text);
        assert!(!out.contains("s3cretpath"), "{out}");
        assert!(!out.contains("abcdef"), "{out}");
        assert!(!out.contains("hooks.example.test"), "{out}");
        assert!(!out.contains("signing-key-1"), "{out}");
        assert!(out.starts_with("bad request for [redacted]"), "{out}");
    }
}
