//! `handler check`: validates everything a deployment needs, one line per check, OK or FAIL
//! with a hint. Exit status 1 on any FAIL, so it can gate CI and deployments. It sends no mail
//! and changes no data (report SQL is only prepared, read-only).

use std::process::ExitCode;

use crate::App;
use crate::delivery::LedgerBackend;
use crate::report::{ReportSet, Schedule};
use crate::secrets::SecretSetting;

/// Arguments of `handler check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip the checks that need the network (Key Vault, database, SMTP).
    #[arg(long)]
    pub offline: bool,
}

struct Checklist {
    failed: usize,
}

impl Checklist {
    fn ok(&mut self, what: &str, detail: impl std::fmt::Display) {
        println!("OK    {what}: {detail}");
    }
    fn fail(&mut self, what: &str, detail: impl std::fmt::Display, hint: &str) {
        self.failed += 1;
        println!("FAIL  {what}: {detail}");
        if !hint.is_empty() {
            println!("      hint: {hint}");
        }
    }
    /// A FAIL whose line is the whole message (`reports.toml:22: reports[0].time_zone: ...`).
    fn fail_line(&mut self, line: impl std::fmt::Display) {
        self.failed += 1;
        println!("FAIL  {line}");
    }
    fn hint(&self, hint: &str) {
        println!("      hint: {hint}");
    }
    /// Worth a look, but not a failure (exit status unchanged).
    fn warn(&mut self, what: &str, detail: impl std::fmt::Display) {
        println!("WARN  {what}: {detail}");
    }
    fn skip(&mut self, what: &str, why: &str) {
        println!("SKIP  {what}: {why}");
    }
}

/// Is this check run for the Functions host (`handler serve`)? Without the settings the host
/// always injects, the folder is a developer's, where `handler dev` supplies what a deployment
/// must configure.
fn under_host(app: &App) -> bool {
    app.config.host.under_host
}

/// Runs the command.
pub fn run(args: Args) -> ExitCode {
    let mut out = Checklist { failed: 0 };
    let config = match super::cli_config() {
        Ok(c) => {
            out.ok("settings", "read and well formed");
            c
        }
        Err(e) => {
            out.fail("settings", e, "see the settings table in README.md");
            return ExitCode::from(1);
        }
    };
    let app_root = config.app.app_root.clone();
    let reports_file = config.app.reports_file.clone();
    if !app_root.join("host.json").is_file() {
        out.fail(
            "app root",
            format!(
                "{} has no host.json, so it is not a Functions app root",
                app_root.display()
            ),
            "the app root is the folder with host.json (the repository root, or the unzipped package): run the command there, or set FUNCTIONS_APP_ROOT_PATH to it",
        );
        println!("\n1 check(s) failed");
        return ExitCode::from(1);
    }
    check_host_files(&app_root, &mut out);
    match ReportSet::load(&reports_file) {
        Ok(set) => out.ok(
            "reports",
            format!(
                "{} report(s) in {}",
                set.reports.len(),
                reports_file.display()
            ),
        ),
        Err(e) => {
            let root = format!("{}/", app_root.display());
            for p in &e.problems {
                let line = p.to_string();
                out.fail_line(line.strip_prefix(&root).unwrap_or(&line));
            }
            out.hint("each line names the file, the line and the field; `handler check` again after fixing them");
        }
    }
    let api_keys_problem = config.api_keys_problem();
    let app = match App::new(config) {
        Ok(a) => {
            out.ok("mail settings", a.delivery.mailer.describe());
            a
        }
        Err(e) => {
            out.fail("settings", e, "see the settings table in README.md");
            return ExitCode::from(1);
        }
    };
    if args.offline {
        out.skip("Key Vault, database, SMTP, ledger", "--offline");
    } else {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => return super::fail(format!("cannot start the async runtime: {e}")),
        };
        runtime.block_on(online_checks(&app, api_keys_problem, &mut out));
    }
    if out.failed == 0 {
        println!("\nall checks passed");
        ExitCode::SUCCESS
    } else {
        println!("\n{} check(s) failed", out.failed);
        ExitCode::from(1)
    }
}

async fn online_checks(
    app: &App,
    api_keys_problem: Option<crate::api::auth::KeysError>,
    out: &mut Checklist,
) {
    let cred = app.secrets.credential_description();
    for s in [
        SecretSetting::DatabaseUrl,
        SecretSetting::StateDatabaseUrl,
        SecretSetting::SmtpPassword,
        SecretSetting::ApiKeys,
        SecretSetting::AzureWebJobsStorage,
        SecretSetting::ApplicationInsights,
    ] {
        let what = format!("secret {}", s.name());
        if !app.secrets.is_configured(s) {
            match s {
                // Where `handler dev` runs (no host around), the key is made per run.
                SecretSetting::ApiKeys if !under_host(app) => out.ok(
                    &what,
                    "not set: `handler dev` makes an API key for each run and prints it; `handler serve` (under the Functions host) needs API_KEYS",
                ),
                SecretSetting::ApiKeys => out.fail(
                    &what,
                    "not set: the API refuses every request",
                    "set API_KEYS to comma-separated keys of at least 32 characters (`openssl rand -base64 32`); a plain value is fine locally, a Key Vault reference in Azure",
                ),
                SecretSetting::DatabaseUrl => {
                    out.ok(&what, "not set: the embedded sample database is used")
                }
                SecretSetting::StateDatabaseUrl => out.ok(
                    &what,
                    "not set: the ledger is in the app's storage account (AzureWebJobsStorage) or, without one, a SQLite file under data/",
                ),
                SecretSetting::SmtpPassword => out.ok(&what, "not set: no SMTP authentication"),
                SecretSetting::ApplicationInsights => out.ok(
                    &what,
                    "not set: no Application Insights exporter (OTEL_EXPORTER_OTLP_ENDPOINT still exports OTLP)",
                ),
                SecretSetting::AzureWebJobsStorage => out.ok(
                    &what,
                    "not set (the Functions host needs it for its timer; identity-based AzureWebJobsStorage__* settings count too)",
                ),
            }
            continue;
        }
        if s == SecretSetting::ApiKeys
            && let Some(e) = &api_keys_problem
        {
            out.fail(&what, e, KEYS_HINT);
            continue;
        }
        if s == SecretSetting::ApiKeys {
            check_api_keys(app, &cred, out).await;
            continue;
        }
        if !app.secrets.is_vault_reference(s) {
            out.ok(
                &what,
                "a plain value (fine locally; use a Key Vault reference in Azure)",
            );
            continue;
        }
        match app.secrets.get(s).await {
            Ok(_) => out.ok(&what, format!("resolved from Key Vault with {cred}")),
            Err(e) => out.fail(
                &what,
                e,
                "check the reference, the identity's \"Key Vault Secrets User\" role, and the vault's network rules",
            ),
        }
    }
    match app.engine.reports() {
        Ok(set) => match app.engine.data_source().await {
            Ok(ds) => {
                for r in &set.reports {
                    if let Some(q) = &r.recipients_query {
                        check_recipients_query(out, &ds, &r.name, q).await;
                    }
                    for (i, s) in r.sections.iter().enumerate() {
                        let what = format!("SQL {}#{} ({})", r.name, i + 1, s.title);
                        match ds.check_query(&s.query).await {
                            Ok(()) => match declared_columns(&ds, &s.query).await {
                                Some(columns) => {
                                    let problems = s.display.problems_with(&columns);
                                    if problems.is_empty() {
                                        out.ok(
                                            &what,
                                            format!("prepared read-only on {}", ds.kind()),
                                        );
                                    } else {
                                        let file = app.config.reports_file.display().to_string();
                                        for (at, message) in problems {
                                            out.fail(
                                                &what,
                                                format!(
                                                    "{file}:{}: {}: {message}",
                                                    at.line, at.field
                                                ),
                                                "",
                                            );
                                        }
                                    }
                                }
                                None => {
                                    out.ok(&what, format!("prepared read-only on {}", ds.kind()))
                                }
                            },
                            Err(e) => out.fail(
                                &what,
                                e,
                                "run the query by hand with :start/:end/:date bound",
                            ),
                        }
                    }
                }
            }
            Err(e) => out.fail(
                "database",
                e,
                "check DATABASE_URL and that the server is reachable",
            ),
        },
        Err(_) => out.skip("report SQL", "the reports file is invalid"),
    }
    check_destinations_and_conditions(app, out).await;
    let password = if app.secrets.is_configured(SecretSetting::SmtpPassword) {
        app.secrets.get(SecretSetting::SmtpPassword).await.ok()
    } else {
        None
    };
    match app.delivery.mailer.verify(password.as_ref()).await {
        Ok(()) => out.ok(
            "mail",
            format!("{} reachable, no mail sent", app.delivery.mailer.describe()),
        ),
        Err(e) => out.fail(
            "mail",
            e,
            "check SMTP_HOST, SMTP_PORT, SMTP_TLS, SMTP_USERNAME and SMTP_PASSWORD",
        ),
    }
    let ledger_where = app.delivery.ledger_description();
    match app.delivery.ledger().await {
        Ok(l) => out.ok(
            "ledger",
            format!("{ledger_where}: the {} ledger is connected and ready", l.backend()),
        ),
        Err(e) => out.fail(
            "ledger",
            format!("{ledger_where}: {e:#}"),
            match app.delivery.ledger_backend() {
                LedgerBackend::StateDatabase => {
                    "check STATE_DATABASE_URL and that the database is reachable"
                }
                LedgerBackend::TableStorage => {
                    "check AzureWebJobsStorage (or AzureWebJobsStorage__accountName / __tableServiceUri), that the storage account is reachable, and that an identity has the \"Storage Table Data Contributor\" role on it"
                }
                LedgerBackend::LocalFile => {
                    "the app root must be writable for the SQLite file; in Azure set AzureWebJobsStorage (the app's storage account, Table storage) or STATE_DATABASE_URL (PostgreSQL) for the ledger"
                }
            },
        ),
    }
}

/// `API_KEYS` (set, and not refused as a plain value): where the value comes from, the key
/// names and what each may see (never a key), and a warning for each scoped report that the
/// reports file does not define: such a key sees nothing of it, which is allowed (the API
/// still starts) but probably a typo or a removed report.
async fn check_api_keys(app: &App, cred: &str, out: &mut Checklist) {
    let what = "secret API_KEYS";
    let source = if app.secrets.is_vault_reference(SecretSetting::ApiKeys) {
        format!("resolved from Key Vault with {cred}")
    } else {
        "a plain value (fine locally; use a Key Vault reference in Azure)".to_string()
    };
    let value = match app.secrets.get(SecretSetting::ApiKeys).await {
        Ok(v) => v,
        Err(e) => {
            out.fail(
                what,
                e,
                "check the reference, the identity's \"Key Vault Secrets User\" role, and the vault's network rules",
            );
            return;
        }
    };
    let keys = match crate::api::auth::ApiKeys::parse(&value) {
        Ok(k) => k,
        Err(e) if app.secrets.is_vault_reference(SecretSetting::ApiKeys) => {
            out.fail(what, format!("resolved from Key Vault, but {e}"), KEYS_HINT);
            return;
        }
        Err(e) => {
            out.fail(what, e, KEYS_HINT);
            return;
        }
    };
    out.ok(what, format!("{source}; {}", keys.describe()));
    if let Ok(set) = app.engine.reports() {
        for (name, report) in keys.unknown_reports(&set) {
            out.warn(
                what,
                format!(
                    "key `{name}` is scoped to report `{report}`, which the reports file does not define (the key sees nothing of it)"
                ),
            );
        }
    }
}

/// Each report's alert condition (prepared read-only) and destinations (issue 16): the setting
/// resolves, the URL is well formed (https, or http to loopback), a signing secret resolves.
/// No request is sent, and lines name settings, never URLs.
async fn check_destinations_and_conditions(app: &App, out: &mut Checklist) {
    let Ok(set) = app.engine.reports() else {
        return;
    };
    let ds = app.engine.data_source().await.ok();
    for r in &set.reports {
        if let (Some(sql), Some(ds)) = (&r.condition, &ds) {
            let what = format!("condition {}", r.name);
            match ds.check_query(sql).await {
                Ok(()) => out.ok(&what, format!("prepared read-only on {}", ds.kind())),
                Err(e) => out.fail(
                    &what,
                    e,
                    "the condition returns one row with one boolean (or 0/1) column; run it by hand with :start/:end/:date bound",
                ),
            }
        }
        for d in &r.destinations {
            let what = format!("destination {} {}", r.name, d.label());
            match crate::delivery::destinations::check(&app.secrets, d).await {
                Ok(detail) => out.ok(&what, format!("{detail}; nothing sent")),
                Err(e) => out.fail(
                    &what,
                    e,
                    "set the app setting to the channel's webhook URL (https), or to a Key Vault reference to it",
                ),
            }
        }
    }
}

/// Where the `API_KEYS` forms are described.
const KEYS_HINT: &str = "see API_KEYS in README.md (Configuration): comma-separated keys, or a JSON list of {\"name\", \"key\", \"reports\"} entries";

/// host.json and the function.json files must match what the binary serves.
fn check_host_files(root: &std::path::Path, out: &mut Checklist) {
    let read = |rel: &str| -> Result<serde_json::Value, String> {
        let text = std::fs::read_to_string(root.join(rel))
            .map_err(|e| format!("cannot read {rel}: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("{rel} is not JSON: {e}"))
    };
    match read("host.json") {
        Ok(h) => {
            let exe = h["customHandler"]["description"]["defaultExecutablePath"]
                .as_str()
                .unwrap_or("");
            let forwarding = h["customHandler"]["enableForwardingHttpRequest"]
                .as_bool()
                .unwrap_or(false);
            // Proxying wins over forwarding in the host (`DefaultHttpWorkerService.InvokeAsync`).
            let proxying = h["customHandler"]["enableProxyingHttpRequest"]
                .as_bool()
                .unwrap_or(false);
            let prefix = h
                .pointer("/extensions/http/routePrefix")
                .and_then(|v| v.as_str())
                .unwrap_or("api")
                .to_string();
            if exe.is_empty() {
                out.fail(
                    "host.json",
                    "customHandler.description.defaultExecutablePath is missing",
                    "set it to target/release/handler (local) or handler (package)",
                );
            } else if !root.join(exe).is_file() {
                out.fail(
                    "host.json",
                    format!("the executable `{exe}` does not exist in the app root"),
                    "run `cargo build --release` (or scripts/package.sh for a deployment)",
                );
            } else if proxying {
                out.ok(
                    "host.json",
                    format!(
                        "starts {exe}, proxying mode (responses stream; no per-invocation Logs), route prefix `{prefix}`"
                    ),
                );
            } else if forwarding {
                out.fail(
                    "host.json",
                    "enableForwardingHttpRequest is true",
                    "set it to false (payload mode carries per-invocation Logs), or use \
                     enableProxyingHttpRequest, which streams large exports",
                );
            } else {
                out.ok(
                    "host.json",
                    format!("starts {exe}, payload mode, route prefix `{prefix}`"),
                );
            }
        }
        Err(e) => out.fail(
            "host.json",
            e,
            "the Functions app root must contain host.json",
        ),
    }
    match read("HttpTrigger/function.json") {
        Ok(f) => {
            let b = f["bindings"].as_array().cloned().unwrap_or_default();
            let trig = b.iter().find(|x| x["type"] == "httpTrigger");
            let res = b
                .iter()
                .find(|x| x["type"] == "http" && x["direction"] == "out");
            match (trig, res) {
                (Some(t), Some(r)) if t["name"] == "req" && r["name"] == "res" && t["route"] == "reports/{name?}" => {
                    out.ok("HttpTrigger/function.json", "httpTrigger `req` on reports/{name?}, http output `res`")
                }
                _ => out.fail("HttpTrigger/function.json", "expected an httpTrigger named `req` with route reports/{name?} and an http output named `res`", "restore the file from the repository"),
            }
        }
        Err(e) => out.fail("HttpTrigger/function.json", e, ""),
    }
    for (folder, route) in [
        ("Deliveries", "deliveries"),
        ("ReportDeliveries", "reports/{name}/deliveries"),
        ("Health", "health"),
    ] {
        let file = format!("{folder}/function.json");
        match read(&file) {
            Ok(f) => {
                let b = f["bindings"].as_array().cloned().unwrap_or_default();
                let trig = b.iter().find(|x| x["type"] == "httpTrigger");
                let res = b
                    .iter()
                    .find(|x| x["type"] == "http" && x["direction"] == "out");
                match (trig, res) {
                    (Some(t), Some(r))
                        if t["name"] == "req" && r["name"] == "res" && t["route"] == route =>
                    {
                        out.ok(
                            &file,
                            format!("httpTrigger `req` on {route}, http output `res`"),
                        )
                    }
                    _ => out.fail(
                        &file,
                        format!("expected an httpTrigger named `req` with route {route} and an http output named `res`"),
                        "restore the file from the repository",
                    ),
                }
            }
            Err(e) => out.fail(&file, e, "restore the file from the repository"),
        }
    }
    match read("NightlyReport/function.json") {
        Ok(f) => {
            let t = f["bindings"]
                .as_array()
                .and_then(|b| b.iter().find(|x| x["type"] == "timerTrigger").cloned());
            match t {
                Some(t) if t["name"] == "timer" => {
                    match t["schedule"].as_str().map(Schedule::parse) {
                        Some(Ok(s)) if t["runOnStartup"].as_bool() != Some(true) => out.ok(
                            "NightlyReport/function.json",
                            format!(
                                "timer `timer` ticks on \"{}\" (UTC){}",
                                s.expression(),
                                if f["retry"].is_object() {
                                    ", with a retry policy"
                                } else {
                                    ""
                                }
                            ),
                        ),
                        Some(Ok(_)) => out.fail(
                            "NightlyReport/function.json",
                            "runOnStartup is true",
                            "set it to false; the tick catches up by itself",
                        ),
                        Some(Err(e)) => out.fail(
                            "NightlyReport/function.json",
                            format!("schedule: {e}"),
                            "use a 6-field NCRONTAB such as \"0 */5 * * * *\"",
                        ),
                        None => out.fail(
                            "NightlyReport/function.json",
                            "the timer has no schedule",
                            "",
                        ),
                    }
                }
                _ => out.fail(
                    "NightlyReport/function.json",
                    "expected a timerTrigger named `timer`",
                    "restore the file from the repository",
                ),
            }
        }
        Err(e) => out.fail("NightlyReport/function.json", e, ""),
    }
}

/// A per-recipient report's `recipients_query`: prepared read-only like the sections, and it
/// must return an `email` column.
async fn check_recipients_query(
    out: &mut Checklist,
    ds: &crate::data::DataSource,
    report: &str,
    sql: &str,
) {
    let what = format!("SQL {report} (recipients_query)");
    match ds.check_query(sql).await {
        Ok(()) => match declared_columns(ds, sql).await {
            Some(cols) if !cols.iter().any(|c| c.name.eq_ignore_ascii_case("email")) => out.fail(
                &what,
                "the query returns no `email` column",
                "return one row per recipient: email, and optionally name and key",
            ),
            _ => out.ok(&what, format!("prepared read-only on {}", ds.kind())),
        },
        Err(e) => out.fail(
            &what,
            e,
            "run the query by hand with :start/:end/:date bound",
        ),
    }
}

/// The columns a report query returns, with their declared types, from a run over an empty
/// window (so no rows are read); `None` when the engine cannot tell.
async fn declared_columns(
    ds: &crate::data::DataSource,
    sql: &str,
) -> Option<Vec<crate::data::Column>> {
    let epoch = chrono::DateTime::UNIX_EPOCH;
    let params = crate::data::QueryParams {
        start: epoch,
        end: epoch,
        date: epoch.date_naive(),
    };
    let mut ignore = |_: &[crate::data::Column], _: &mut Vec<crate::data::Value>| Ok(());
    ds.stream_query(sql, &params, 0, &mut ignore)
        .await
        .ok()
        .map(|s| s.columns)
}
