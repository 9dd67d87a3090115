//! The developer commands as a new user runs them: `dev` on the embedded default, `check`,
//! `schedule`, `report run`, `deliveries`, and `--help` everywhere.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::host::AppDir;
use crate::support::outbox;

/// A key `check` accepts (at least 32 characters).
const CHECK_KEY: &str = "check-test-key-padded-to-32-chars";

fn handler(app: &AppDir) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_handler"));
    c.current_dir(app.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

fn run(app: &AppDir, args: &[&str]) -> (i32, String, String) {
    let out = handler(app).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_command_has_help_with_an_example() {
    let app = AppDir::from_repo();
    let (code, top, _) = run(&app, &["--help"]);
    assert_eq!(code, 0);
    assert!(
        top.contains("Examples:"),
        "the top level has examples too:\n{top}"
    );
    for cmd in ["serve", "dev", "check", "schedule", "report", "deliveries"] {
        assert!(top.contains(cmd), "{cmd} missing from --help");
        let (code, help, _) = run(&app, &[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd}");
        assert!(
            help.contains("Example"),
            "{cmd} --help has no example:\n{help}"
        );
    }
    let (_, help, _) = run(&app, &["report", "run", "--help"]);
    assert!(help.contains("Example"), "{help}");
    // Each example on its own line.
    let examples = help
        .lines()
        .filter(|l| l.trim_start().starts_with("handler report run"))
        .count();
    assert!(examples >= 3, "{help}");
}

#[test]
fn errors_are_one_sentence_and_a_hint_never_a_backtrace() {
    let app = AppDir::from_repo();
    let (code, _, err) = run(&app, &["report", "run", "no-such-report"]);
    assert_ne!(code, 0);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("stack backtrace"),
        "{err}"
    );
    app.write("reports.toml", "[[reports]]\nname = \"Bad Name\"\n");
    let (code, _, err) = run(&app, &["schedule"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("reports.toml:2"),
        "the error names the file and line: {err}"
    );
}

#[test]
fn schedule_prints_local_and_utc_times() {
    let app = AppDir::from_repo();
    let (code, out, err) = run(
        &app,
        &["schedule", "--from", "2026-03-27T12:00:00Z", "--count", "3"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("daily-sales"));
    assert!(
        out.contains("2026-03-28 06:00:00 CET   2026-03-28T05:00:00Z"),
        "{out}"
    );
    assert!(
        out.contains("2026-03-29 06:00:00 CEST   2026-03-29T04:00:00Z"),
        "{out}"
    );
}

#[test]
fn report_run_writes_html_and_sends_through_the_ledger() {
    let app = AppDir::from_repo();
    let (code, out, err) = run(
        &app,
        &["report", "run", "daily-sales", "--out", "preview.html"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let html = std::fs::read_to_string(app.path().join("preview.html")).unwrap();
    assert!(html.contains("<table") && html.contains("Daily sales"));
    let (code, text, _) = run(
        &app,
        &["report", "run", "daily-sales", "--date", "2026-11-01"],
    );
    assert_eq!(code, 0);
    assert!(
        text.starts_with("Subject: Daily sales: 2026-11-01"),
        "{text}"
    );
    let (code, out, err) = run(
        &app,
        &[
            "report",
            "run",
            "daily-sales",
            "--date",
            "2026-11-01",
            "--send",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sent"), "{out}");
    // A second --send of the same occurrence is refused by the ledger: exactly once, and the
    // command says so with a non-zero exit.
    let (code, _, out) = run(
        &app,
        &[
            "report",
            "run",
            "daily-sales",
            "--date",
            "2026-11-01",
            "--send",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("already sent"), "{out}");
    let emls = std::fs::read_dir(app.path().join("outbox"))
        .unwrap()
        .count();
    assert_eq!(emls, 1);
    let (code, out, _) = run(&app, &["deliveries", "--report", "daily-sales"]);
    assert_eq!(code, 0);
    assert!(out.contains("daily-sales") && out.contains("sent"), "{out}");
}

#[test]
fn check_passes_on_the_embedded_default_and_fails_on_mistakes() {
    let app = AppDir::from_repo();
    // The package layout: host.json starts ./handler.
    std::fs::copy(env!("CARGO_BIN_EXE_handler"), app.path().join("handler")).unwrap();
    let host_json = std::fs::read_to_string(app.path().join("host.json")).unwrap();
    app.write(
        "host.json",
        &host_json.replace("target/release/handler", "handler"),
    );
    let (code, out, err) = handler(&app)
        .env("API_KEYS", CHECK_KEY)
        .arg("check")
        .output()
        .map(|o| {
            (
                o.status.code().unwrap(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "OK    host.json",
        "OK    reports",
        "OK    SQL daily-sales#1",
        "OK    mail",
        "OK    ledger",
    ] {
        assert!(out.contains(line), "missing `{line}`:\n{out}");
    }
    assert!(!out.contains("FAIL"));
    // In a developer's folder (no host settings) `handler dev` makes the key: not a FAIL.
    let (code, out, _) = run(&app, &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("OK    secret API_KEYS: not set: `handler dev` makes an API key"),
        "{out}"
    );
    // For the host (`serve`), no keys means the API refuses everything: a FAIL with a hint.
    let (code, out, _) = handler(&app)
        .env("FUNCTIONS_WORKER_RUNTIME", "custom")
        .arg("check")
        .output()
        .map(|o| {
            (
                o.status.code().unwrap(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                (),
            )
        })
        .unwrap();
    assert_eq!(code, 1);
    assert!(out.contains("FAIL  secret API_KEYS: not set"), "{out}");
    assert!(out.contains("openssl rand -base64 32"), "{out}");
    // Short keys and the example's placeholder are refused, naming the setting, never the key.
    for (weak, why) in [
        ("short-key-0a1b2c", "shorter than 32 characters"),
        ("replace-with-a-long-random-key", "placeholder"),
    ] {
        let o = handler(&app)
            .env("API_KEYS", format!("{CHECK_KEY},{weak}"))
            .arg("check")
            .output()
            .unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(
            out.contains("FAIL  secret API_KEYS: API_KEYS: key 2"),
            "{out}"
        );
        assert!(out.contains(why), "{out}");
        assert!(!out.contains(weak) && !err.contains(weak), "{out}{err}");
    }
    // A report whose SQL is broken, and a bad SMTP setting.
    let reports = std::fs::read_to_string(app.path().join("reports.toml")).unwrap();
    app.write(
        "reports.toml",
        &reports.replace("FROM customers c", "FROM no_such_table c"),
    );
    let (code, out, _) = handler(&app)
        .env("API_KEYS", CHECK_KEY)
        .arg("check")
        .output()
        .map(|o| {
            (
                o.status.code().unwrap(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                (),
            )
        })
        .unwrap();
    assert_eq!(code, 1);
    assert!(out.contains("FAIL  SQL daily-sales#4"), "{out}");
    let (code, _, err) = handler(&app)
        .env("SMTP_HOST", "smtp.example.com")
        .env("SMTP_TLS", "none")
        .arg("check")
        .output()
        .map(|o| {
            (
                o.status.code().unwrap(),
                (),
                String::from_utf8_lossy(&o.stdout).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("SMTP_TLS"), "{err}");
}

#[test]
fn dev_delivers_an_email_at_once_and_serves_the_api() {
    let app = AppDir::from_repo();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = handler(&app)
        .args(["dev", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let emls = outbox::wait_for_eml(&app.path().join("outbox"), 1, Duration::from_secs(30));
    let eml = emls.first().expect("no email in outbox/ within 30 s");
    let raw = std::fs::read_to_string(eml).unwrap();
    assert!(raw.contains("Subject: Daily sales:"), "{raw}");
    // The API with the printed key.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key = stdout
        .split_whitespace()
        .find(|w| w.starts_with("dev-"))
        .expect("the banner prints the dev key")
        .to_string();
    assert!(
        stdout.contains("curl -H 'Authorization: Bearer"),
        "{stdout}"
    );
    // Start again (the key is new each run) and call the API.
    let mut child = handler(&app)
        .args(["dev", "--port", &port.to_string(), "--no-initial-delivery"])
        .env("API_KEYS", &key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = rt.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client
                .get(format!("http://127.0.0.1:{port}/api/reports/daily-sales"))
                .bearer_auth(&key)
                .send()
                .await
            {
                return r.status().as_u16();
            }
            assert!(Instant::now() < deadline, "dev never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200);
}
