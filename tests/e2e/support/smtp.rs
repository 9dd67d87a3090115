//! An in-process SMTP relay for tests: mailin-embedded with STARTTLS (the fixture CA + leaf in
//! `tests/fixtures/tls/`), mandatory AUTH PLAIN/LOGIN, and knobs to refuse recipients or
//! commands, so mail tests talk real SMTP over loopback without installing anything.
//!
//! Tests wait for what they expect with [`SmtpServer::expect_exactly`] (the emails arrived,
//! then no further one during a quiet period) instead of sleeping.
//!
//! mailin-embedded caveats (docs/test-infra.md §1.4): the server cannot be stopped (its thread is
//! left running; each test starts its own on a fresh port); a process-level rustls crypto
//! provider must be installed before `with_ssl`; and refusing from `data_end` with anything but
//! 421 leaves the session stuck, so rejections are offered only at RCPT, DATA or as 421 after
//! DATA.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mailin_embedded::response::{AUTH_OK, INVALID_CREDENTIALS, OK};
use mailin_embedded::{AuthMechanism, Handler, Response, Server, SslConfig};

use super::wait;

/// The user and password the test relay accepts.
pub const USERNAME: &str = "reporter";
/// The password the test relay accepts (test-only, not a real secret).
pub const PASSWORD: &str = "s3cret-for-tests";

/// The fixture directory (CA, leaf certificate and key).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls")
}

/// The CA bundle that clients must trust (`SSL_CERT_FILE`).
pub fn ca_path() -> PathBuf {
    fixtures_dir().join("ca.pem")
}

/// One message the relay accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients that were accepted (`RCPT TO`), lower-cased.
    pub to: Vec<String>,
    /// The raw message as transmitted after `DATA`.
    pub data: Vec<u8>,
    /// Who authenticated on this session, if anyone.
    pub user: Option<String>,
}

/// What the relay should refuse. Addresses are matched lower-cased, without angle brackets.
#[derive(Debug, Default)]
pub struct Knobs {
    /// Refuse these recipients every time with (code, text), e.g. (550, "5.1.1 no such user").
    pub reject_rcpt: HashMap<String, (u16, String)>,
    /// Refuse these recipients with 451 this many more times, then accept.
    pub tempfail_rcpt: HashMap<String, u32>,
    /// Answer `DATA` with 451 this many more times.
    pub tempfail_data: u32,
    /// After receiving a message, answer 421 (and drop it) this many more times.
    pub drop_after_data: u32,
    /// The password AUTH accepts instead of [`PASSWORD`] (a rotation at the relay).
    pub password: Option<String>,
}

/// Everything the relay saw, shared between the server threads and the test.
#[derive(Debug, Default)]
pub struct Shared {
    /// The refusal knobs; the test may change them at any time.
    pub knobs: Knobs,
    /// Accepted messages, in order.
    pub received: Vec<Received>,
    /// Every `RCPT TO` seen (lower-cased), accepted or not.
    pub rcpt_log: Vec<String>,
    /// Sessions that completed AUTH successfully, and failed AUTH attempts.
    pub auth_ok: u32,
    /// Failed AUTH attempts.
    pub auth_failed: u32,
}

#[derive(Clone)]
struct RelayHandler {
    shared: Arc<Mutex<Shared>>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
    user: Option<String>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panicking test thread must not hide what the relay saw.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn normalise(addr: &str) -> String {
    addr.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_ascii_lowercase()
}

impl Handler for RelayHandler {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.from = normalise(from);
        self.to.clear();
        self.data.clear();
        OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let to = normalise(to);
        let mut s = lock(&self.shared);
        s.rcpt_log.push(to.clone());
        if let Some((code, text)) = s.knobs.reject_rcpt.get(&to) {
            return Response::custom(*code, text.clone());
        }
        if let Some(n) = s.knobs.tempfail_rcpt.get_mut(&to)
            && *n > 0
        {
            *n -= 1;
            return Response::custom(451, "4.7.1 Greylisted, try again later".into());
        }
        self.to.push(to);
        OK
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        let mut s = lock(&self.shared);
        if s.knobs.tempfail_data > 0 {
            s.knobs.tempfail_data -= 1;
            return Response::custom(451, "4.3.0 Try again later".into());
        }
        self.data.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut s = lock(&self.shared);
        if s.knobs.drop_after_data > 0 {
            s.knobs.drop_after_data -= 1;
            return Response::custom(421, "4.3.2 Closing connection".into());
        }
        s.received.push(Received {
            from: self.from.clone(),
            to: self.to.clone(),
            data: std::mem::take(&mut self.data),
            user: self.user.clone(),
        });
        OK
    }

    fn auth_plain(&mut self, _authz: &str, authn: &str, password: &str) -> Response {
        self.check(authn, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.check(username, password)
    }
}

impl RelayHandler {
    fn check(&mut self, user: &str, password: &str) -> Response {
        let mut s = lock(&self.shared);
        let expected = s
            .knobs
            .password
            .clone()
            .unwrap_or_else(|| PASSWORD.to_string());
        if user == USERNAME && password == expected {
            s.auth_ok += 1;
            self.user = Some(user.to_string());
            AUTH_OK
        } else {
            s.auth_failed += 1;
            INVALID_CREDENTIALS
        }
    }
}

/// A running test relay on 127.0.0.1.
pub struct SmtpServer {
    /// The port it listens on.
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
}

impl SmtpServer {
    /// Starts a relay with STARTTLS (fixture certificate) and mandatory AUTH PLAIN/LOGIN.
    pub fn start() -> SmtpServer {
        Self::start_with(true)
    }

    /// Starts a plaintext relay without AUTH (for `SMTP_TLS=none`, or behind
    /// [`implicit_tls_proxy`]).
    pub fn start_plain() -> SmtpServer {
        Self::start_with(false)
    }

    fn start_with(secure: bool) -> SmtpServer {
        // mailin's rustls needs a process-level provider; harmless if one is already set.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let handler = RelayHandler {
            shared: shared.clone(),
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
            user: None,
        };
        let dir = fixtures_dir();
        let mut server = Server::new(handler);
        server
            .with_name("localhost")
            .with_num_threads(4)
            .with_tcp_listener(listener);
        if secure {
            server
                .with_ssl(SslConfig::SelfSigned {
                    cert_path: dir.join("server.pem").display().to_string(),
                    key_path: dir.join("server.key").display().to_string(),
                })
                .expect("load the fixture certificate");
            server
                .with_auth(AuthMechanism::Plain)
                .with_auth(AuthMechanism::Login);
        }
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        SmtpServer { port, shared }
    }

    /// Locks the shared state to read what was received or to change the knobs.
    pub fn state(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    /// The accepted messages so far.
    pub fn received(&self) -> Vec<Received> {
        self.state().received.clone()
    }

    fn count(&self) -> usize {
        self.state().received.len()
    }

    /// Waits (bounded by `within`) until at least `n` messages were accepted; returns what was
    /// accepted by then.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        wait::until(within, || self.count() >= n).await;
        self.received()
    }

    /// Waits (bounded by `within`) until `n` messages were accepted, then watches for `quiet`
    /// that no further one arrives (returning early when one does); returns all accepted.
    pub async fn settle(&self, n: usize, within: Duration, quiet: Duration) -> Vec<Received> {
        if wait::until(within, || self.count() >= n).await {
            wait::holds_for(quiet, || self.count() <= n).await;
        }
        self.received()
    }

    /// [`SmtpServer::settle`], asserting that exactly `n` messages were accepted.
    pub async fn expect_exactly(
        &self,
        n: usize,
        within: Duration,
        quiet: Duration,
    ) -> Vec<Received> {
        let got = self.settle(n, within, quiet).await;
        assert_eq!(
            got.len(),
            n,
            "expected exactly {n} email(s) within {within:?} and no further one during {quiet:?}"
        );
        got
    }

    /// Settings pairs pointing the app at this relay (STARTTLS, AUTH, the fixture CA).
    /// SMTP_PASSWORD is included for completeness; the mailer takes it at send time.
    pub fn settings(&self) -> Vec<(String, String)> {
        [
            ("SMTP_HOST", "localhost".to_string()),
            ("SMTP_PORT", self.port.to_string()),
            ("SMTP_TLS", "starttls".to_string()),
            ("SMTP_USERNAME", USERNAME.to_string()),
            ("SMTP_PASSWORD", PASSWORD.to_string()),
            ("SSL_CERT_FILE", ca_path().display().to_string()),
            ("MAIL_FROM", "Reports <reports@example.com>".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// A server that accepts TCP connections and never says a word: the case lettre's own
/// timeout does not cover. Connections are held open for `hold`, then dropped.
pub fn silent_server(hold: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(hold));
                let mut buf = [0u8; 1024];
                let deadline = Instant::now() + hold;
                while Instant::now() < deadline {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
        }
    });
    port
}

/// A loopback port with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// Implicit TLS (SMTPS) in front of a plaintext relay: mailin-embedded speaks only STARTTLS,
/// so this terminates TLS with the fixture certificate on its own port and forwards the bytes
/// to `target_port`. Runs on the caller's tokio runtime.
pub async fn implicit_tls_proxy(target_port: u16) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = fixtures_dir();
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("fixture certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("fixture certificate");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("fixture key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut upstream) =
                    tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                else {
                    return;
                };
                let _ = tokio::time::timeout(
                    Duration::from_secs(30),
                    tokio::io::copy_bidirectional(&mut tls, &mut upstream),
                )
                .await;
            });
        }
    });
    port
}
