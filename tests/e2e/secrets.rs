//! The secret layer against fakes that speak the real wire protocols over loopback TLS
//! (tests/support/vault.rs): Key Vault references in both syntaxes, the credential choice,
//! clear errors, single flight, caching, stale-on-error, rotation and redaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use report_handler::config::Settings;
use report_handler::secrets::{
    SecretErrorKind, SecretSetting, Secrets, SecretsOptions, SecretsSettings,
};
use secrecy::ExposeSecret;

use crate::support::vault::{self, FakeMsi, FakeVault, Mode, StaticCredential};
use crate::support::wait::{self, QUIET};

use SecretSetting::*;

fn settings(vault: &FakeVault, pairs: &[(&str, String)]) -> Settings {
    let mut s = Settings::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())));
    s.set(
        "SSL_CERT_FILE",
        vault.ca_pem_path().to_string_lossy().to_string(),
    );
    s
}

fn with_static(s: &Settings) -> (Secrets, Arc<StaticCredential>) {
    let cred = Arc::new(StaticCredential);
    let typed = SecretsSettings::from_settings(s).expect("settings");
    let secrets = Secrets::from_settings_with_credential(&typed, cred.clone()).expect("secrets");
    (secrets, cred)
}

#[tokio::test]
async fn both_syntaxes_and_a_pinned_version_resolve_through_managed_identity() {
    let kv = FakeVault::start().await;
    let msi = FakeMsi::start().await;
    let v1 = kv.set_secret("db-url", "postgres://db-v1-value");
    kv.set_secret("db-url", "postgres://db-v2-value");
    kv.set_secret("smtp-password", "smtp-value-1");
    kv.set_secret("api-keys", "key-one-aaaa,key-two-bbbb");
    let s = settings(
        &kv,
        &[
            ("DATABASE_URL", kv.reference("db-url", None)),
            ("STATE_DATABASE_URL", kv.reference("db-url", Some(&v1))),
            (
                "SMTP_PASSWORD",
                "@Microsoft.KeyVault(VaultName=myvault;SecretName=smtp-password)".into(),
            ),
            (
                "API_KEYS",
                format!(
                    "@Microsoft.KeyVault(SecretUri=https://localhost:{}/secrets/api-keys/)",
                    kv.addr().port()
                ),
            ),
            ("IDENTITY_ENDPOINT", msi.endpoint()),
            ("IDENTITY_HEADER", msi.header().to_string()),
        ],
    );
    // VaultName= means https://myvault.vault.azure.net/: map that host to the fake, so the
    // SDK's challenge-resource check stays ON for it (it is not a loopback host).
    let secrets = Secrets::with_options(
        &SecretsSettings::from_settings(&s).expect("settings"),
        SecretsOptions {
            resolve: vec![(FakeVault::VAULT_HOST.to_string(), kv.addr())],
            ..Default::default()
        },
    )
    .expect("secrets");
    assert_eq!(
        secrets.credential_description(),
        "managed identity (App Service)"
    );
    assert_eq!(
        kv.requests(),
        0,
        "building the secret layer must not touch the network"
    );
    // Every setting this test configures (AzureWebJobsStorage is the ledger's, covered there;
    // APPLICATIONINSIGHTS_CONNECTION_STRING is telemetry's).
    for s in SecretSetting::ALL.into_iter().filter(|s| {
        *s != SecretSetting::AzureWebJobsStorage && *s != SecretSetting::ApplicationInsights
    }) {
        assert!(secrets.is_vault_reference(s), "{s}");
    }
    let db = secrets.get(DatabaseUrl).await.expect("latest");
    assert_eq!(db.expose_secret(), "postgres://db-v2-value");
    let state = secrets.get(StateDatabaseUrl).await.expect("pinned");
    assert_eq!(state.expose_secret(), "postgres://db-v1-value");
    let smtp = secrets.get(SmtpPassword).await.expect("vault name syntax");
    assert_eq!(smtp.expose_secret(), "smtp-value-1");
    let keys = secrets.get(ApiKeys).await.expect("keys");
    assert_eq!(keys.expose_secret(), "key-one-aaaa,key-two-bbbb");
    assert_eq!(kv.calls(), 4);
    assert_eq!(secrets.vault_calls(), 4);
    // One token for all three clients (the credential caches it), with no user-assigned id.
    assert!(msi.calls() >= 1 && msi.calls() <= 3, "{}", msi.calls());
    assert!(msi.client_ids().iter().all(Option::is_none));
}

#[tokio::test]
async fn user_assigned_identity_sends_client_id() {
    let kv = FakeVault::start().await;
    let msi = FakeMsi::start().await;
    kv.set_secret("smtp-password", "ua-smtp-value");
    let s = settings(
        &kv,
        &[
            ("SMTP_PASSWORD", kv.reference("smtp-password", None)),
            ("IDENTITY_ENDPOINT", msi.endpoint()),
            ("IDENTITY_HEADER", msi.header().to_string()),
            (
                "AZURE_CLIENT_ID",
                "11111111-2222-3333-4444-555555555555".into(),
            ),
        ],
    );
    let secrets = SecretsSettings::from_settings(&s)
        .and_then(|t| Secrets::new(&t))
        .expect("secrets");
    assert!(secrets.credential_description().contains("user-assigned"));
    let v = secrets.get(SmtpPassword).await.expect("value");
    assert_eq!(v.expose_secret(), "ua-smtp-value");
    assert_eq!(
        msi.client_ids(),
        vec![Some("11111111-2222-3333-4444-555555555555".to_string())]
    );
}

#[tokio::test]
async fn wrong_identity_header_is_a_credential_error() {
    let kv = FakeVault::start().await;
    let msi = FakeMsi::start().await;
    kv.set_secret("smtp-password", "never-seen-value");
    let s = settings(
        &kv,
        &[
            ("SMTP_PASSWORD", kv.reference("smtp-password", None)),
            ("IDENTITY_ENDPOINT", msi.endpoint()),
            ("IDENTITY_HEADER", "wrong-header".into()),
        ],
    );
    let secrets = SecretsSettings::from_settings(&s)
        .and_then(|t| Secrets::new(&t))
        .expect("secrets");
    let e = secrets.get(SmtpPassword).await.unwrap_err();
    assert_eq!(e.kind(), SecretErrorKind::Credential);
    assert!(e.to_string().contains("SMTP_PASSWORD"), "{e}");
    assert!(e.retry_after_secs().is_some());
    assert_eq!(kv.calls(), 0);
}

#[test]
fn credential_selection_from_settings() {
    let reference = "@Microsoft.KeyVault(VaultName=myvault;SecretName=x)";
    let desc = |pairs: &[(&str, &str)]| {
        let mut all = vec![("DATABASE_URL", reference)];
        all.extend_from_slice(pairs);
        SecretsSettings::from_settings(&Settings::from_pairs(all.iter().copied()))
            .and_then(|t| Secrets::new(&t))
            .map(|s| s.credential_description())
    };
    assert_eq!(
        desc(&[]).unwrap(),
        "developer tools (Azure CLI / azd login)"
    );
    assert_eq!(
        desc(&[
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
            ("IDENTITY_HEADER", "h")
        ])
        .unwrap(),
        "managed identity (App Service)"
    );
    assert_eq!(
        desc(&[
            ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ])
        .unwrap(),
        "client secret (service principal)"
    );
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "federated-token").unwrap();
    let token_path = token_file.path().to_string_lossy().to_string();
    assert_eq!(
        desc(&[
            ("AZURE_FEDERATED_TOKEN_FILE", &token_path),
            ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ("AZURE_CLIENT_ID", "c"),
        ])
        .unwrap(),
        "workload identity (AZURE_FEDERATED_TOKEN_FILE)"
    );
    let e = desc(&[
        ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/token"),
        ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
        ("AZURE_CLIENT_ID", "c"),
    ])
    .unwrap_err();
    assert_eq!(e.setting, "AZURE_FEDERATED_TOKEN_FILE");
    assert_eq!(
        desc(&[("AZURE_CREDENTIAL", "managed_identity"),]).unwrap(),
        "managed identity (IMDS, explicitly requested)"
    );
    assert_eq!(
        desc(&[
            ("AZURE_CREDENTIAL", "developer_tools"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
            ("IDENTITY_HEADER", "h")
        ])
        .unwrap(),
        "developer tools (Azure CLI / azd login)"
    );
    let e = desc(&[("AZURE_CREDENTIAL", "magic")]).unwrap_err();
    assert_eq!(e.setting, "AZURE_CREDENTIAL");
    // No reference, no credential at all.
    let plain =
        SecretsSettings::from_settings(&Settings::from_pairs([("DATABASE_URL", "sqlite://x")]))
            .and_then(|t| Secrets::new(&t))
            .unwrap();
    assert_eq!(
        plain.credential_description(),
        "none (no Key Vault references)"
    );
}

#[tokio::test]
async fn missing_secret_and_forbidden_vault_name_the_setting() {
    let kv = FakeVault::start().await;
    kv.set_secret("present", "present-value-123");
    let s = settings(
        &kv,
        &[
            ("DATABASE_URL", kv.reference("no-such-secret", None)),
            ("SMTP_PASSWORD", kv.reference("present", None)),
        ],
    );
    let (secrets, _) = with_static(&s);
    let e = secrets.get(DatabaseUrl).await.unwrap_err();
    assert_eq!(e.kind(), SecretErrorKind::NotFound);
    assert_eq!(e.setting(), Some(DatabaseUrl));
    let msg = e.to_string();
    assert!(msg.contains("DATABASE_URL"), "{msg}");
    assert!(msg.contains("no-such-secret"), "{msg}");
    assert!(msg.contains("SecretNotFound"), "{msg}");
    assert!(e.retry_after_secs().is_some());

    kv.set_mode(Mode::Forbidden);
    let e = secrets.get(SmtpPassword).await.unwrap_err();
    assert_eq!(e.kind(), SecretErrorKind::Forbidden);
    let msg = e.to_string();
    assert!(
        msg.contains("SMTP_PASSWORD") && msg.contains("present"),
        "{msg}"
    );
    assert!(msg.contains("Forbidden"), "{msg}");
    assert!(!msg.contains("present-value-123"));
}

#[tokio::test]
async fn throttling_is_unavailable_with_retry_after() {
    let kv = FakeVault::start().await;
    kv.set_secret("x", "throttled-value");
    kv.set_mode(Mode::Throttled);
    let s = settings(&kv, &[("API_KEYS", kv.reference("x", None))]);
    let (secrets, _) = with_static(&s);
    let started = Instant::now();
    let e = secrets.get(ApiKeys).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.kind(), SecretErrorKind::Unavailable);
    assert!(e.to_string().contains("Throttled"), "{e}");
    assert!(e.retry_after_secs().unwrap_or(0) >= 1);
    let calls = kv.calls();
    // Within the back-off the vault is left alone.
    let e2 = secrets.get(ApiKeys).await.unwrap_err();
    assert_eq!(e2.kind(), SecretErrorKind::Unavailable);
    assert_eq!(kv.calls(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_share_one_vault_call_then_the_cache_serves() {
    let kv = FakeVault::start().await;
    kv.set_secret("api-keys", "k-concurrent-1");
    kv.set_delay(Duration::from_millis(300));
    let s = settings(&kv, &[("API_KEYS", kv.reference("api-keys", None))]);
    let (secrets, _) = with_static(&s);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let secrets = secrets.clone();
        tasks.push(tokio::spawn(async move { secrets.get(ApiKeys).await }));
    }
    for t in tasks {
        let v = t.await.expect("join").expect("value");
        assert_eq!(v.expose_secret(), "k-concurrent-1");
    }
    assert_eq!(kv.calls(), 1);
    assert_eq!(secrets.vault_calls(), 1);
    let requests = kv.requests();
    for _ in 0..1000 {
        let v = secrets.get(ApiKeys).await.expect("cached");
        assert_eq!(v.expose_secret(), "k-concurrent-1");
    }
    assert_eq!(kv.calls(), 1);
    assert_eq!(kv.requests(), requests);
    assert_eq!(secrets.vault_calls(), 1);
}

#[tokio::test]
async fn dead_vault_after_warm_up_serves_the_cached_value() {
    let kv = FakeVault::start().await;
    kv.set_secret("db", "warm-db-value");
    let s = settings(
        &kv,
        &[
            ("DATABASE_URL", kv.reference("db", None)),
            ("SECRET_CACHE_TTL", "1s".into()),
        ],
    );
    let (secrets, _) = with_static(&s);
    assert_eq!(
        secrets.get(DatabaseUrl).await.unwrap().expose_secret(),
        "warm-db-value"
    );
    kv.set_mode(Mode::Dead);
    // Part of the scenario: the 1 s TTL runs out, so the next get must go to the dead vault.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let v = secrets.get(DatabaseUrl).await.expect("stale value");
    assert_eq!(v.expose_secret(), "warm-db-value");
    assert!(started.elapsed() < Duration::from_secs(6));
    let calls = secrets.vault_calls();
    assert_eq!(calls, 2);
    assert_eq!(kv.calls(), 1, "the dead vault answered nothing");
    // Further requests inside the back-off neither wait nor call.
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(
            secrets.get(DatabaseUrl).await.unwrap().expose_secret(),
            "warm-db-value"
        );
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(secrets.vault_calls(), calls);
    // A rejection reported while backing off waits for the back-off: no call per request.
    secrets.report_rejected(DatabaseUrl);
    for _ in 0..10 {
        assert_eq!(
            secrets.get(DatabaseUrl).await.unwrap().expose_secret(),
            "warm-db-value"
        );
    }
    assert_eq!(secrets.vault_calls(), calls);
}

#[tokio::test]
async fn stale_values_are_bounded_then_fail_closed() {
    let kv = FakeVault::start().await;
    kv.set_secret("db", "short-lived-value");
    let s = settings(
        &kv,
        &[
            ("DATABASE_URL", kv.reference("db", None)),
            ("SECRET_CACHE_TTL", "500ms".into()),
        ],
    );
    let secrets = Secrets::with_options(
        &SecretsSettings::from_settings(&s).unwrap(),
        SecretsOptions {
            credential: Some(Arc::new(StaticCredential)),
            max_staleness: Some(Duration::from_millis(1500)),
            error_backoff: Some(Duration::from_millis(100)),
            ..Default::default()
        },
    )
    .unwrap();
    secrets.get(DatabaseUrl).await.unwrap();
    kv.set_mode(Mode::Dead);
    // Part of the scenario: past the 500 ms TTL, inside the 1.5 s staleness bound.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        secrets
            .get(DatabaseUrl)
            .await
            .expect("within staleness")
            .expose_secret(),
        "short-lived-value"
    );
    // A failing fetch takes ~1-2 s (two retries with back-off); the window is judged at the
    // time the request arrived. Part of the scenario: past the staleness bound.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let e = secrets.get(DatabaseUrl).await.unwrap_err();
    assert_eq!(e.kind(), SecretErrorKind::Unavailable);
}

#[tokio::test]
async fn cold_dead_or_hung_vault_is_unavailable_within_the_budget() {
    for mode in [Mode::Dead, Mode::Slow] {
        let kv = FakeVault::start().await;
        kv.set_secret("smtp", "cold-value");
        kv.set_mode(mode);
        let s = settings(&kv, &[("SMTP_PASSWORD", kv.reference("smtp", None))]);
        let (secrets, _) = with_static(&s);
        let started = Instant::now();
        let e = secrets.get(SmtpPassword).await.unwrap_err();
        let took = started.elapsed();
        assert!(
            took <= report_handler::secrets::VAULT_BUDGET + Duration::from_millis(500),
            "{mode:?}: {took:?}"
        );
        assert_eq!(e.kind(), SecretErrorKind::Unavailable, "{mode:?}");
        assert!(e.retry_after_secs().is_some());
        assert!(e.to_string().contains("SMTP_PASSWORD"), "{e}");
    }
}

#[tokio::test]
async fn rotation_is_picked_up_after_the_ttl() {
    let kv = FakeVault::start().await;
    kv.set_secret("smtp", "rot-old-value");
    let s = settings(
        &kv,
        &[
            ("SMTP_PASSWORD", kv.reference("smtp", None)),
            ("SECRET_CACHE_TTL", "1s".into()),
        ],
    );
    let (secrets, _) = with_static(&s);
    assert_eq!(
        secrets.get(SmtpPassword).await.unwrap().expose_secret(),
        "rot-old-value"
    );
    kv.set_secret("smtp", "rot-new-value");
    assert_eq!(
        secrets.get(SmtpPassword).await.unwrap().expose_secret(),
        "rot-old-value"
    );
    // Part of the scenario: the 1 s TTL runs out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        secrets.get(SmtpPassword).await.unwrap().expose_secret(),
        "rot-new-value"
    );
}

#[tokio::test]
async fn background_refresh_in_the_last_tenth_of_the_ttl() {
    let kv = FakeVault::start().await;
    kv.set_secret("k", "bg-old-value");
    let s = settings(
        &kv,
        &[
            ("API_KEYS", kv.reference("k", None)),
            ("SECRET_CACHE_TTL", "2s".into()),
        ],
    );
    let (secrets, _) = with_static(&s);
    secrets.get(ApiKeys).await.unwrap();
    kv.set_secret("k", "bg-new-value");
    // Part of the scenario: into the last tenth of the 2 s TTL (1.8 s to 2 s).
    tokio::time::sleep(Duration::from_millis(1850)).await;
    // Served from the cache at once; one refresh starts in the background.
    let v = secrets.get(ApiKeys).await.unwrap();
    assert_eq!(v.expose_secret(), "bg-old-value");
    // The refresh happens (bounded wait), and only one.
    wait::until(Duration::from_secs(3), || secrets.vault_calls() >= 2).await;
    wait::holds_for(QUIET, || secrets.vault_calls() <= 2).await;
    assert_eq!(secrets.vault_calls(), 2);
    assert_eq!(
        secrets.get(ApiKeys).await.unwrap().expose_secret(),
        "bg-new-value"
    );
    assert_eq!(secrets.vault_calls(), 2);
}

#[tokio::test]
async fn rotation_is_picked_up_at_once_after_a_reported_rejection_rate_limited() {
    let kv = FakeVault::start().await;
    kv.set_secret("smtp", "rej-v1-value");
    let s = settings(&kv, &[("SMTP_PASSWORD", kv.reference("smtp", None))]);
    let (secrets, _) = with_static(&s);
    assert_eq!(
        secrets.get(SmtpPassword).await.unwrap().expose_secret(),
        "rej-v1-value"
    );
    kv.set_secret("smtp", "rej-v2-value");
    assert_eq!(
        secrets.get(SmtpPassword).await.unwrap().expose_secret(),
        "rej-v1-value"
    );
    secrets.report_rejected(SmtpPassword);
    assert_eq!(
        secrets.get(SmtpPassword).await.unwrap().expose_secret(),
        "rej-v2-value"
    );
    assert_eq!(secrets.vault_calls(), 2);
    // A second rejection within 30 s does not refetch; neither does refresh().
    kv.set_secret("smtp", "rej-v3-value");
    secrets.report_rejected(SmtpPassword);
    assert_eq!(
        secrets.get(SmtpPassword).await.unwrap().expose_secret(),
        "rej-v2-value"
    );
    assert_eq!(
        secrets.refresh(SmtpPassword).await.unwrap().expose_secret(),
        "rej-v2-value"
    );
    assert_eq!(secrets.vault_calls(), 2);
}

#[tokio::test]
async fn refresh_fetches_now_once() {
    let kv = FakeVault::start().await;
    kv.set_secret("db", "ref-v1-value");
    let s = settings(&kv, &[("DATABASE_URL", kv.reference("db", None))]);
    let (secrets, _) = with_static(&s);
    secrets.get(DatabaseUrl).await.unwrap();
    kv.set_secret("db", "ref-v2-value");
    assert_eq!(
        secrets.refresh(DatabaseUrl).await.unwrap().expose_secret(),
        "ref-v2-value"
    );
    assert_eq!(secrets.vault_calls(), 2);
}

/// Captures everything logged (TRACE, all targets) by this thread's subscriber.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_secret_value_in_any_output_or_error() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let values = [
        "SWEEP-db-Val-1a2b3c",
        "SWEEP-db-Val-rotated-4d5e",
        "SWEEP-smtp-Pw-6f7a8b",
        "SWEEP-key-one-9c0d",
        "SWEEP-key-two-1e2f",
        "SWEEP-plain-state-3a4b",
    ];
    let mut texts: Vec<String> = Vec::new();
    rt.block_on(async {
        let kv = FakeVault::start().await;
        let msi = FakeMsi::start().await;
        kv.set_secret("db", values[0]);
        kv.set_secret("smtp", values[2]);
        kv.set_secret("keys", &format!("{},{}", values[3], values[4]));
        let s = settings(
            &kv,
            &[
                ("DATABASE_URL", kv.reference("db", None)),
                ("STATE_DATABASE_URL", values[5].to_string()),
                ("SMTP_PASSWORD", kv.reference("smtp", None)),
                ("API_KEYS", kv.reference("keys", None)),
                ("IDENTITY_ENDPOINT", msi.endpoint()),
                ("IDENTITY_HEADER", msi.header().to_string()),
                ("SECRET_CACHE_TTL", "1s".into()),
            ],
        );
        let secrets = SecretsSettings::from_settings(&s)
            .and_then(|t| Secrets::new(&t))
            .unwrap();
        texts.push(format!("{secrets:?}"));
        texts.push(format!("{s:?}"));
        for setting in SecretSetting::ALL.into_iter().filter(|s| {
            *s != SecretSetting::AzureWebJobsStorage && *s != SecretSetting::ApplicationInsights
        }) {
            let v = secrets.get(setting).await.unwrap();
            texts.push(format!("{v:?}"));
        }
        kv.set_secret("db", values[1]);
        secrets.report_rejected(DatabaseUrl);
        texts.push(format!("{:?}", secrets.get(DatabaseUrl).await.unwrap()));
        // Errors of every kind.
        kv.set_mode(Mode::Forbidden);
        // Part of the scenario: the 1 s TTL runs out, so every get meets the 403.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for setting in SecretSetting::ALL {
            match secrets.get(setting).await {
                Ok(v) => texts.push(format!("{v:?}")),
                Err(e) => {
                    texts.push(e.to_string());
                    texts.push(format!("{e:?}"));
                }
            }
        }
        kv.delete_secret("smtp");
        kv.set_mode(Mode::Normal);
        let (fresh, _) = with_static(&s);
        let e = fresh.get(SmtpPassword).await.unwrap_err();
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
        kv.set_mode(Mode::Dead);
        let (cold, _) = with_static(&s);
        let e = cold.get(ApiKeys).await.unwrap_err();
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
    });
    let log = String::from_utf8_lossy(&capture.0.lock().unwrap()).to_string();
    assert!(
        log.contains("Key Vault"),
        "the sweep must have captured the layer's logs"
    );
    assert!(
        log.contains("managed identity (App Service)"),
        "start-up log names the credential"
    );
    for v in values {
        assert!(!log.contains(v), "log contains a secret value");
        for t in &texts {
            assert!(!t.contains(v), "output contains a secret value: {t}");
        }
    }
    assert!(!log.contains(vault::TOKEN), "log contains the access token");
}
