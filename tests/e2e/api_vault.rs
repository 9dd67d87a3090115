//! The API key and the database URL held in Key Vault, end to end: the `handler` binary behind
//! the host emulator resolves `@Microsoft.KeyVault(...)` references itself with the App Service
//! managed identity (fake MSI endpoint) against a fake Key Vault over loopback TLS. Covers key
//! rotation, a vault that is down, and a sweep of everything the handler printed or answered.

use std::time::{Duration, Instant};

use crate::support::host::{AppDir, ClientRequest, ClientResponse, Host, HostOptions};
use crate::support::vault::{self, FakeMsi, FakeVault, Mode};

const OLD_KEY: &str = "old-key-5f2c9a7e1b-padded-to-32-chars";
const NEW_KEY: &str = "new-key-8d41b0c3aa-padded-to-32-chars";
const NEWER_KEY: &str = "newer-key-77e0c1d2f4-padded-to-32-chars";

struct Setup {
    _app: AppDir,
    host: Host,
    vault: FakeVault,
    _msi: FakeMsi,
    responses: Vec<ClientResponse>,
}

async fn setup(ttl: &str, vault_mode: Mode) -> Setup {
    let vault = FakeVault::start().await;
    let msi = FakeMsi::start().await;
    vault.set_secret("api-keys", &format!("{OLD_KEY},{NEW_KEY}"));
    let app = AppDir::from_repo();
    // The report database URL also comes from the vault: the sample database's path.
    let db = app.path().join("data/sample-from-vault.sqlite");
    vault.set_secret("reports-db", &format!("sqlite:{}", db.display()));
    vault.set_mode(vault_mode);
    let opts = HostOptions::new(app.path())
        .setting("API_KEYS", vault.reference("api-keys", None))
        .setting("SECRET_CACHE_TTL", ttl)
        .setting("SSL_CERT_FILE", vault.ca_pem_path().display().to_string())
        .setting("IDENTITY_ENDPOINT", msi.endpoint())
        .setting("IDENTITY_HEADER", msi.header());
    let host = Host::start(opts).await;
    Setup {
        _app: app,
        host,
        vault,
        _msi: msi,
        responses: Vec::new(),
    }
}

impl Setup {
    async fn get(&mut self, key: &str) -> ClientResponse {
        let r = self
            .host
            .http_payload(ClientRequest::get("/api/reports").header("X-API-Key", key))
            .await;
        self.responses.push(r.clone());
        r
    }

    /// Nothing the handler printed or answered contains a secret value.
    fn sweep(&self) {
        let mut haystack = self.host.output();
        for r in &self.responses {
            haystack.push_str(&r.body);
            for (_, v) in &r.headers {
                haystack.push_str(v);
            }
        }
        for secret in [
            OLD_KEY,
            NEW_KEY,
            NEWER_KEY,
            vault::TOKEN,
            "sample-from-vault",
        ] {
            assert!(!haystack.contains(secret), "a secret leaked: {secret}");
        }
    }
}

#[tokio::test]
async fn keys_from_the_vault_with_rotation() {
    let mut s = setup("2s", Mode::Normal).await;
    // Both keys of the overlap window work; one vault fetch serves many requests.
    assert_eq!(s.get(OLD_KEY).await.status, 200);
    assert_eq!(s.get(NEW_KEY).await.status, 200);
    for _ in 0..20 {
        assert_eq!(s.get(NEW_KEY).await.status, 200);
    }
    assert_eq!(s.vault.calls(), 1, "the cache serves warm requests");
    let wrong = s.get("not-a-key").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.header("www-authenticate"), Some("Bearer"));
    // Rotation in the vault: the old key stops working once the cache refreshes (TTL 2 s).
    s.vault
        .set_secret("api-keys", &format!("{NEW_KEY},{NEWER_KEY}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = s.get(OLD_KEY).await;
        if r.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the rotation was not picked up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(s.get(NEWER_KEY).await.status, 200);
    assert_eq!(s.get(NEW_KEY).await.status, 200);
    s.sweep();
}

#[tokio::test]
async fn a_cold_dead_vault_gives_503_and_no_data() {
    let mut s = setup("1h", Mode::Dead).await;
    let started = Instant::now();
    let r = s.get(OLD_KEY).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "within the vault budget"
    );
    assert!(r.header("retry-after").is_some());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/problem+json")
    );
    assert!(
        !r.body.contains("daily-sales"),
        "no data without a key check"
    );
    // The vault comes back: requests succeed again.
    s.vault.set_mode(Mode::Normal);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get(OLD_KEY).await.status != 200 {
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    s.sweep();
}

#[tokio::test]
async fn a_warm_cache_keeps_serving_while_the_vault_is_down() {
    let mut s = setup("2s", Mode::Normal).await;
    assert_eq!(s.get(OLD_KEY).await.status, 200);
    s.vault.set_mode(Mode::Dead);
    // Past the TTL the refresh fails; the last good value keeps serving (bounded staleness).
    // Part of the scenario: the 2 s TTL must run out while the vault is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for _ in 0..5 {
        assert_eq!(s.get(OLD_KEY).await.status, 200);
    }
    assert_eq!(s.get("not-a-key").await.status, 401);
    s.sweep();
}

#[tokio::test]
async fn the_database_url_from_the_vault_serves_reports() {
    let vault = FakeVault::start().await;
    let msi = FakeMsi::start().await;
    let app = AppDir::from_repo();
    let db = app.path().join("data/sample.sqlite");
    // Create the sample database first through a run without DATABASE_URL, then point the
    // vault's secret at it.
    vault.set_secret("api-keys", OLD_KEY);
    vault.set_secret("reports-db", &format!("sqlite:{}", db.display()));
    let opts = HostOptions::new(app.path())
        .setting("API_KEYS", vault.reference("api-keys", None))
        .setting("SSL_CERT_FILE", vault.ca_pem_path().display().to_string())
        .setting("IDENTITY_ENDPOINT", msi.endpoint())
        .setting("IDENTITY_HEADER", msi.header());
    {
        let host = Host::start(HostOptions::new(app.path()).setting("API_KEYS", OLD_KEY)).await;
        let r = host
            .http_payload(
                ClientRequest::get("/api/reports/daily-sales").header("X-API-Key", OLD_KEY),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let opts = opts.setting("DATABASE_URL", vault.reference("reports-db", None));
    let host = Host::start(opts).await;
    let r = host
        .http_payload(ClientRequest::get("/api/reports/daily-sales").header("X-API-Key", OLD_KEY))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.json()["sections"][0]["rows"]
            .as_array()
            .is_some_and(|rows| !rows.is_empty())
    );
    assert!(vault.calls() >= 2, "both secrets came from the vault");
    assert!(!host.output().contains(OLD_KEY));
}

/// Cold paths fail fast with 503 whatever is wrong with the vault or the identity endpoint.
#[tokio::test]
async fn vault_faults_on_a_cold_cache_fail_fast_with_503() {
    for fault in [
        "hang",
        "throttled",
        "forbidden",
        "identity-down",
        "certificate-mismatch",
    ] {
        let vault = FakeVault::start().await;
        let msi = FakeMsi::start().await;
        vault.set_secret("api-keys", OLD_KEY);
        let app = AppDir::from_repo();
        let mut endpoint = msi.endpoint();
        let mut ca = vault.ca_pem_path().display().to_string();
        match fault {
            "hang" => vault.set_mode(Mode::Slow),
            "throttled" => vault.set_mode(Mode::Throttled),
            "forbidden" => vault.set_mode(Mode::Forbidden),
            "identity-down" => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                endpoint = format!("http://127.0.0.1:{port}/msi/token");
            }
            _ => {
                let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
                app.write("other-ca.pem", &other.cert.pem());
                ca = app.path().join("other-ca.pem").display().to_string();
            }
        }
        let host = Host::start(
            HostOptions::new(app.path())
                .setting("API_KEYS", vault.reference("api-keys", None))
                .setting("SSL_CERT_FILE", ca)
                .setting("IDENTITY_ENDPOINT", endpoint)
                .setting("IDENTITY_HEADER", msi.header()),
        )
        .await;
        let started = Instant::now();
        let r = host
            .http_payload(ClientRequest::get("/api/reports").header("X-API-Key", OLD_KEY))
            .await;
        assert_eq!(r.status, 503, "{fault}: {}", r.body);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{fault}: took {:?}",
            started.elapsed()
        );
        assert!(r.header("retry-after").is_some(), "{fault}");
        assert!(
            !r.body.contains(OLD_KEY) && !host.output().contains(OLD_KEY),
            "{fault}"
        );
        // The readiness ping and the timer path are not held up by the vault.
        let (status, _, _) = host.post_raw("/", None, vec![], false).await;
        assert_eq!(status, 200, "{fault}");
    }
}
