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

/// The 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in the file"))
        + 1
}

/// Replaces the first occurrence of `from` (which must be there).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` not in the file");
    text.replacen(from, to, 1)
}

fn check_output(app: &AppDir) -> (i32, String) {
    let o = handler(app)
        .env("API_KEYS", CHECK_KEY)
        .arg("check")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// `handler check` compares the presentation settings with the columns the query returns and
/// names file:line:field for each mistake: an unknown column in `columns`, `totals` or
/// `chart`, and a total over a text column (only the prepared query knows its type).
#[test]
fn check_names_file_line_and_field_of_column_mistakes() {
    let app = AppDir::from_repo();
    let sample = std::fs::read_to_string(app.path().join("reports.toml")).unwrap();
    let unknown = replace_once(
        &sample,
        "totals = [\"units\", \"revenue_cents\"]",
        "totals = [\"units\", \"revenue\"]",
    );
    let unknown = replace_once(&unknown, "y = [\"orders\"]", "y = [\"order_count\"]");
    let unknown = replace_once(
        &unknown,
        "[reports.sections.columns.sku]",
        "[reports.sections.columns.code]",
    );
    app.write("reports.toml", &unknown);
    let (code, out) = check_output(&app);
    assert_eq!(code, 1, "{out}");
    for (needle, field, column) in [
        (
            "totals = [\"units\", \"revenue\"]",
            "reports[0].sections[1].totals[1]",
            "revenue",
        ),
        (
            "y = [\"order_count\"]",
            "reports[0].sections[2].chart.y[0]",
            "order_count",
        ),
        (
            "[reports.sections.columns.code]",
            "reports[0].sections[1].columns.code",
            "code",
        ),
    ] {
        let line = line_of(&unknown, needle);
        let expected = format!("reports.toml:{line}: {field}: unknown column `{column}`");
        assert!(out.contains(&expected), "missing `{expected}`:\n{out}");
    }
    assert!(out.contains("FAIL  reports"), "{out}");

    // A total over a text column: the prepared query says `status` is text.
    let text_total = replace_once(
        &sample,
        "totals = [\"orders\", \"revenue_cents\"]",
        "totals = [\"orders\", \"status\"]",
    );
    app.write("reports.toml", &text_total);
    let (code, out) = check_output(&app);
    assert_eq!(code, 1, "{out}");
    let line = line_of(&text_total, "totals = [\"orders\", \"status\"]");
    let expected =
        format!("reports.toml:{line}: reports[0].sections[0].totals[1]: `status` is a text column");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL  SQL daily-sales#1") && l.contains(&expected)),
        "missing `{expected}`:\n{out}"
    );
    assert!(out.contains("OK    SQL daily-sales#2"), "{out}");
}

/// The bad values the presentation contract refuses (unknown locale, format, currency, chart
/// type) are errors at start-up: `check` names file, line and field, and says what is valid.
#[test]
fn check_names_the_line_of_each_bad_presentation_value() {
    let app = AppDir::from_repo();
    let sample = std::fs::read_to_string(app.path().join("reports.toml")).unwrap();
    for (from, to, field, valid) in [
        (
            "locale = \"en-US\"",
            "locale = \"xx-XX\"",
            "reports[0].locale",
            "en-GB",
        ),
        (
            "format = \"integer\"   #",
            "format = \"integr\"   #",
            "reports[0].sections[0].columns.orders.format",
            "currency",
        ),
        (
            "currency = \"EUR\"     #",
            "currency = \"EUX\"     #",
            "reports[0].sections[0].columns.revenue_cents.currency",
            "EUR",
        ),
        (
            "type = \"bar\"",
            "type = \"pie\"",
            "reports[0].sections[0].chart.type",
            "hbar",
        ),
        (
            "attachments = [\"csv\", \"xlsx\"]",
            "attachments = [\"csv\", \"pdf\"]",
            "reports[0].attachments[1]",
            "xlsx",
        ),
    ] {
        let bad = replace_once(&sample, from, to);
        app.write("reports.toml", &bad);
        let (code, out, err) = run(&app, &["check", "--offline"]);
        assert_eq!(code, 1, "{to}: {out}{err}");
        let line = line_of(&bad, to);
        let fail = out
            .lines()
            .find(|l| l.starts_with("FAIL  reports.toml:"))
            .unwrap_or_else(|| panic!("{to}: no FAIL line naming the file:\n{out}"));
        assert!(
            fail.starts_with(&format!("FAIL  reports.toml:{line}: {field}: ")),
            "{to}: {fail}"
        );
        assert!(fail.contains(valid), "{to}: says what is valid: {fail}");
    }
}

/// `report run --out` writes the workbook, and a section's chart with `--section N`.
#[test]
fn report_run_writes_the_workbook_and_a_sections_chart() {
    use calamine::{Data, Reader, Xlsx, open_workbook_from_rs};
    let app = AppDir::from_repo();
    let day = (chrono::Utc::now().with_timezone(&chrono_tz::Europe::Berlin)
        - chrono::Duration::days(1))
    .date_naive()
    .to_string();
    let (code, out, err) = run(
        &app,
        &[
            "report",
            "run",
            "daily-sales",
            "--date",
            &day,
            "--out",
            "r.xlsx",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("wrote r.xlsx"), "{out}");
    let bytes = std::fs::read(app.path().join("r.xlsx")).unwrap();
    let mut wb: Xlsx<_> = open_workbook_from_rs(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(wb.sheet_names().len(), 4);
    let hours = wb.worksheet_range("Orders by hour").unwrap();
    assert_eq!(
        hours.get_value((0, 0)),
        Some(&Data::String("Hour (UTC)".into()))
    );
    assert_eq!(hours.get_value((1, 0)), Some(&Data::String("00:00".into())));
    assert_eq!(hours.height(), 25, "a header and 24 hours");

    for section in ["1", "3"] {
        let (code, out, err) = run(
            &app,
            &[
                "report",
                "run",
                "daily-sales",
                "--date",
                &day,
                "--out",
                "c.png",
                "--section",
                section,
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
        let png = std::fs::read(app.path().join("c.png")).unwrap();
        let reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .expect("a PNG");
        assert_eq!((reader.info().width, reader.info().height), (1280, 720));
    }
    // Mistakes are one error line and a non-zero exit, never a panic.
    for (args, says) in [
        (vec!["--out", "c.png"], "--section"),
        (vec!["--out", "c.png", "--section", "2"], "no chart"),
        (vec!["--out", "c.png", "--section", "9"], "4 section(s)"),
    ] {
        let mut all = vec!["report", "run", "daily-sales", "--date", &day];
        all.extend(args.iter().copied());
        let (code, _, err) = run(&app, &all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(says),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}
