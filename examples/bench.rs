//! Benchmark programs behind `scripts/bench.sh` (issue #8). Each subcommand measures one thing
//! and prints a human line plus one `RESULT key=value ...` line the script parses
//! (`bench --help` and `bench <subcommand> --help` list the options).
//!
//! - `readiness --exe PATH [--runs 30]`: process start to the first `200` on `GET /`.
//! - `envelope --path P [--name N] [--query k=v] --key K --out FILE.lua [--check URL]`: writes
//!   a `wrk` script that POSTs one payload-mode `HttpTrigger` envelope (built by the host
//!   emulator's own envelope code, `tests/e2e/support/envelope.rs`), and checks once that the
//!   inner response is a 200.
//! - `report-setup --url URL --rows N [--drop]`: a `bench_rows_N` table of N typed rows
//!   (SQLite file or PostgreSQL database), built inside the database; `--drop` removes it
//!   from a PostgreSQL server afterwards.
//! - `report --url URL --rows N --format csv|json|html`: one report section over that table
//!   through `DataSource` and the renderers: elapsed, rows/s, peak RSS (`VmHWM`).
//! - `present --url URL --rows N --mode chart-xlsx|xlsx-stream|xlsx-memory`: the presentation
//!   outputs over that table: `chart-xlsx` runs the section into memory and draws its chart and
//!   its workbook (labels, formats, totals); `xlsx-stream` feeds rows from the database cursor
//!   straight into the workbook builder (what `report run --out FILE.xlsx` does);
//!   `xlsx-memory` builds the workbook from the whole table in memory (what the API and the
//!   email do). Elapsed and peak RSS (`VmHWM`).
//! - `load --url URL --key K [--requests 10000] [--concurrency 16]`: a fixed number of GETs
//!   (for "RSS after 10k requests"; `wrk` is duration-based).
//! - `vault --exe PATH [--requests 10000] [--concurrency 16] [--warmup 100]`: the release
//!   handler with `API_KEYS` as a Key Vault reference against the fake vault and managed
//!   identity; vault calls per N authenticated requests after warm-up.
//!
//! Everything is on 127.0.0.1, every wait is bounded, and every child is killed on exit.

// Shared with the test suite, which uses all of them; here only a part of each is used.
#[allow(dead_code)]
#[path = "../tests/e2e/support/envelope.rs"]
mod envelope;
#[allow(dead_code)]
#[path = "../tests/e2e/support/vault.rs"]
mod vault;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{NaiveDate, TimeZone, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use report_handler::data::{Column, DataError, DataSource, QueryParams, Value};
use report_handler::render::{self, CsvRowWriter, RenderContext, SectionResult};
use secrecy::SecretString;
use serde_json::{Map, json};

use envelope::ClientRequest;

/// Longest wait for a handler to answer `GET /`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Benchmark programs behind scripts/bench.sh; each prints a `RESULT key=value ...` line.
#[derive(Parser)]
#[command(name = "bench")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Process start to the first 200 on `GET /`, over several starts.
    Readiness(ReadinessArgs),
    /// Writes a wrk script that POSTs one payload-mode HttpTrigger envelope.
    Envelope(EnvelopeArgs),
    /// Creates a `bench_rows_N` table of N typed rows (or drops it with `--drop`).
    ReportSetup(ReportSetupArgs),
    /// One report section over that table through DataSource and the renderers.
    Report(ReportArgs),
    /// Chart and workbook of one section over that table (time, peak RSS).
    Present(PresentArgs),
    /// A fixed number of authenticated GETs.
    Load(LoadArgs),
    /// Key Vault calls per N authenticated requests of a handler whose API_KEYS is a reference.
    Vault(VaultArgs),
}

impl Cmd {
    fn name(&self) -> &'static str {
        match self {
            Cmd::Readiness(_) => "readiness",
            Cmd::Envelope(_) => "envelope",
            Cmd::ReportSetup(_) => "report-setup",
            Cmd::Report(_) => "report",
            Cmd::Present(_) => "present",
            Cmd::Load(_) => "load",
            Cmd::Vault(_) => "vault",
        }
    }
}

#[derive(Args)]
struct ReadinessArgs {
    /// The handler binary.
    #[arg(long)]
    exe: PathBuf,
    /// How many starts.
    #[arg(long, default_value_t = 30)]
    runs: usize,
}

#[derive(Args)]
struct EnvelopeArgs {
    /// The public path, e.g. /api/reports/daily-sales.
    #[arg(long)]
    path: String,
    /// The `{name}` route value.
    #[arg(long)]
    name: Option<String>,
    /// The query string without `?`, e.g. date=2026-01-02.
    #[arg(long)]
    query: Option<String>,
    /// The API key sent as X-API-Key.
    #[arg(long)]
    key: String,
    /// Where the wrk Lua script goes.
    #[arg(long)]
    out: PathBuf,
    /// A handler's `/HttpTrigger` URL to check the envelope against once.
    #[arg(long)]
    check: Option<String>,
}

#[derive(Args)]
struct ReportSetupArgs {
    /// sqlite:FILE or postgres://...
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 10_000)]
    rows: usize,
    /// Drop the table from a PostgreSQL server instead.
    #[arg(long)]
    drop: bool,
}

#[derive(Args)]
struct ReportArgs {
    /// sqlite:FILE or postgres://...
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 10_000)]
    rows: usize,
    #[arg(long)]
    format: Format,
    /// Every row, without the report window's `WHERE created_at >= :start AND created_at <
    /// :end`: the query `scripts/bench.sh` gives the API and `sqlite3`/`psql` (section 6).
    /// Without it the window stays in, as in every run recorded before (comparable counts).
    #[arg(long)]
    all_rows: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Csv,
    Json,
    Html,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Html => "html",
        })
    }
}

#[derive(Args)]
struct PresentArgs {
    /// sqlite:FILE or postgres://...
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 10_000)]
    rows: usize,
    #[arg(long)]
    mode: PresentMode,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PresentMode {
    /// The chart PNG and the workbook from the section in memory.
    ChartXlsx,
    /// The workbook fed row by row from the query.
    XlsxStream,
    /// The workbook from the whole table in memory.
    XlsxMemory,
}

impl std::fmt::Display for PresentMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PresentMode::ChartXlsx => "chart-xlsx",
            PresentMode::XlsxStream => "xlsx-stream",
            PresentMode::XlsxMemory => "xlsx-memory",
        })
    }
}

#[derive(Args)]
struct LoadArgs {
    #[arg(long)]
    url: String,
    /// The API key sent as X-API-Key.
    #[arg(long)]
    key: String,
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

#[derive(Args)]
struct VaultArgs {
    /// The handler binary.
    #[arg(long)]
    exe: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Requests before the count starts (they fill the cache).
    #[arg(long, default_value_t = 100)]
    warmup: usize,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let name = cli.cmd.name();
    let result = match cli.cmd {
        Cmd::Readiness(a) => readiness(&a),
        Cmd::Envelope(a) => runtime().and_then(|rt| rt.block_on(envelope(&a))),
        Cmd::ReportSetup(a) => runtime().and_then(|rt| rt.block_on(report_setup(&a))),
        Cmd::Report(a) => runtime().and_then(|rt| rt.block_on(report(&a))),
        Cmd::Present(a) => runtime().and_then(|rt| rt.block_on(present(&a))),
        Cmd::Load(a) => runtime().and_then(|rt| rt.block_on(load(&a))),
        Cmd::Vault(a) => runtime().and_then(|rt| rt.block_on(vault_calls(&a))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench {name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

// ---------------------------------------------------------------------------------------------
// Handler processes

/// A Functions app directory like the one the host runs in: host.json, reports.toml and the
/// function folders copied from this repository.
fn app_dir() -> Result<tempfile::TempDir> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().context("temp app dir")?;
    for f in ["host.json", "reports.toml"] {
        std::fs::copy(repo.join(f), dir.path().join(f)).with_context(|| format!("copy {f}"))?;
    }
    for func in ["HttpTrigger", "NightlyReport"] {
        std::fs::create_dir_all(dir.path().join(func))?;
        std::fs::copy(
            repo.join(func).join("function.json"),
            dir.path().join(func).join("function.json"),
        )
        .with_context(|| format!("copy {func}/function.json"))?;
    }
    Ok(dir)
}

/// `--exe` as an absolute path: the handler runs with the app directory as its working directory.
fn exe_path(exe: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(exe).with_context(|| format!("--exe {}", exe.display()))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The handler as the host starts it: a clean environment, the port and the app root.
fn handler_command(exe: &Path, app_root: &Path, port: u16, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.current_dir(app_root)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_APP_ROOT_PATH", app_root)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Kills the child when dropped, so an error path never leaves a handler running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One blocking `GET /` with a short timeout; true on a 200.
fn ping(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    buf.starts_with(b"HTTP/1.1 200")
}

fn wait_ready(port: u16, child: &mut Child) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if ping(port) {
            return Ok(started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the handler exited before it was ready: {status}");
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("the handler did not answer GET / within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------------
// readiness

fn readiness(args: &ReadinessArgs) -> Result<()> {
    let runs = args.runs.max(1);
    let exe = exe_path(&args.exe)?;
    let app = app_dir()?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let port = free_port()?;
        let started = Instant::now();
        let mut child = Killed(
            handler_command(&exe, app.path(), port, &[])
                .spawn()
                .with_context(|| format!("start {}", exe.display()))?,
        );
        // The clock starts before spawn: fork/exec is part of what the host waits for.
        wait_ready(port, &mut child.0)?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(child);
    }
    ms.sort_by(f64::total_cmp);
    let (median, p95) = (percentile(&ms, 50.0), percentile(&ms, 95.0));
    println!(
        "readiness over {runs} starts: median {median:.2} ms, p95 {p95:.2} ms, min {:.2} ms, max {:.2} ms",
        ms[0],
        ms[ms.len() - 1]
    );
    println!(
        "RESULT runs={runs} median_ms={median:.2} p95_ms={p95:.2} min_ms={:.2} max_ms={:.2}",
        ms[0],
        ms[ms.len() - 1]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// envelope

/// A payload-mode `HttpTrigger` envelope as the host builds it (docs/functions-protocol.md §4.1),
/// by the host emulator's envelope code: `Data.req` with array-valued headers, `Metadata` with
/// double-encoded route and query values.
fn http_envelope(path: &str, name: Option<&str>, query: Option<&str>, key: &str) -> String {
    let path_and_query = match query {
        None | Some("") => path.to_string(),
        Some(q) => format!("{path}?{q}"),
    };
    let req = ClientRequest {
        method: "GET".into(),
        path_and_query,
        headers: vec![
            ("X-API-Key".into(), key.into()),
            ("Accept".into(), "*/*".into()),
        ],
        body: None,
    };
    // The route `reports/{name?}`: an absent name is null.
    let mut params = Map::new();
    params.insert(
        "name".into(),
        name.map_or(serde_json::Value::Null, |n| json!(n)),
    );
    envelope::http_payload_json("HttpTrigger", "req", &params, &req).to_string()
}

async fn envelope(args: &EnvelopeArgs) -> Result<()> {
    let body = http_envelope(
        &args.path,
        args.name.as_deref(),
        args.query.as_deref(),
        &args.key,
    );
    if body.contains("]==]") {
        bail!("the envelope cannot be quoted as a Lua long string");
    }
    let lua = format!(
        "-- Generated by `bench envelope`: one payload-mode HttpTrigger invocation, fixed per run.\n\
         wrk.method = \"POST\"\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.body = [==[{body}]==]\n"
    );
    let out = &args.out;
    std::fs::write(out, lua).with_context(|| format!("write {}", out.display()))?;
    if let Some(url) = &args.check {
        let client = client()?;
        let resp = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.context("the reply is not JSON")?;
        let inner = &v["Outputs"]["res"]["statusCode"];
        let ok = inner.as_u64() == Some(200) || inner.as_str() == Some("200");
        if !status.is_success() || !ok {
            bail!("the envelope was not answered with 200: outer {status}, inner {inner}");
        }
    }
    println!("RESULT bytes={}", body.len());
    Ok(())
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")
}

// ---------------------------------------------------------------------------------------------
// report throughput

fn table_name(rows: usize) -> String {
    format!("bench_rows_{rows}")
}

async fn report_setup(args: &ReportSetupArgs) -> Result<()> {
    use sqlx::{Connection, Executor};
    let url = args.url.as_str();
    let rows = args.rows;
    let table = table_name(rows);
    let started = Instant::now();
    if args.drop && !url.starts_with("sqlite:") {
        let mut c = sqlx::PgConnection::connect(url).await?;
        c.execute(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .await?;
        let _ = c.close().await;
        println!("RESULT dropped={table}");
        return Ok(());
    }
    if let Some(path) = url.strip_prefix("sqlite:") {
        let o = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)
            .with_context(|| format!("SQLite URL for {path}"))?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Off)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Off);
        let mut c = sqlx::SqliteConnection::connect_with(&o).await?;
        c.execute(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (id INTEGER, sku TEXT, quantity INTEGER, amount REAL, created_at DATETIME);
             WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {rows})
             INSERT INTO {table}
             SELECT x, 'SKU-' || (x % 1000), x % 7 + 1, (x % 100000) / 100.0,
                    datetime(1767225600 + x, 'unixepoch')
             FROM g;"
        )))
        .await
        .context("create the SQLite table")?;
        let _ = c.close().await;
    } else {
        let mut c = sqlx::PgConnection::connect(url)
            .await
            .context("connect to PostgreSQL")?;
        c.execute(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} AS
             SELECT g::bigint AS id, 'SKU-' || (g % 1000) AS sku, (g % 7 + 1)::int AS quantity,
                    ((g % 100000) / 100.0)::numeric(12,2) AS amount,
                    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' AS created_at
             FROM generate_series(1, {rows}) g;
             ANALYZE {table};"
        )))
        .await
        .context("create the PostgreSQL table")?;
        let _ = c.close().await;
    }
    println!(
        "RESULT table={table} rows={rows} setup_s={:.2}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Peak resident set size of this process so far, in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    status_kib("/proc/self/status", "VmHWM:")
}

fn status_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Counts the bytes written (the renderer's output is measured, not the disk).
struct Counter<'a>(&'a mut u64);

impl Write for Counter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        *self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn report(args: &ReportArgs) -> Result<()> {
    let url = args.url.as_str();
    let rows = args.rows;
    let format = args.format;
    let engine = if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    let window = if args.all_rows {
        ""
    } else {
        " WHERE created_at >= :start AND created_at < :end"
    };
    let sql = format!(
        "SELECT id, sku, quantity, amount, created_at FROM {}{window}",
        table_name(rows)
    );
    let params = QueryParams {
        start: Utc
            .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default(),
        end: Utc
            .with_ymd_and_hms(2100, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default(),
        date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
    };
    let ds = DataSource::from_url(
        &SecretString::from(url.to_string()),
        Duration::from_secs(300),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let rss_before = peak_rss_kib();
    let started = Instant::now();
    let (got, bytes) = match format {
        Format::Csv => {
            // The streaming path: rows go from the database cursor to CSV one at a time.
            let mut bytes = 0u64;
            let mut out = CsvRowWriter::new(Counter(&mut bytes));
            let mut header_done = false;
            let io_err = |e: std::io::Error| DataError::Query(format!("write: {e}"));
            let mut sink = |cols: &[Column], row: &mut Vec<Value>| -> Result<(), DataError> {
                if !header_done {
                    out.header(cols).map_err(io_err)?;
                    header_done = true;
                }
                out.row(row).map_err(io_err)
            };
            let s = ds
                .stream_query(&sql, &params, rows, &mut sink)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            out.finish()?;
            (s.rows, bytes)
        }
        Format::Json => {
            // The streaming path the API takes for a large window: cursor → JsonDocWriter.
            let ctx = RenderContext {
                report_name: "bench",
                title: "Benchmark rows",
                description: None,
                time_zone: chrono_tz::Europe::Berlin,
                start: params.start,
                end: params.end,
                date: params.date,
                generated_at: Utc::now(),
                max_rows_in_body: 50,
                locale: Default::default(),
                single_day: false,
                attachments: &[],
                charts: &[],
            };
            let display = render::SectionDisplay::default();
            let mut buf: Vec<u8> = Vec::with_capacity(80 * 1024);
            let mut doc = render::json::JsonDocWriter::start(&mut buf, &ctx);
            let mut started = false;
            let mut total = 0u64;
            let mut sink = |cols: &[Column], row: &mut Vec<Value>| -> Result<(), DataError> {
                if !started {
                    doc.section_start(&mut buf, "Rows", cols, &display);
                    started = true;
                }
                doc.row(&mut buf, row);
                if buf.len() >= 64 * 1024 {
                    // Where the API would send the chunk on; here it is only counted.
                    total += buf.len() as u64;
                    buf.clear();
                }
                Ok(())
            };
            let s = ds
                .stream_query(&sql, &params, rows, &mut sink)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            if !started {
                doc.section_start(&mut buf, "Rows", &s.columns, &display);
            }
            doc.section_end(&mut buf, s.truncated);
            doc.finish(&mut buf);
            total += buf.len() as u64;
            (s.rows, total)
        }
        Format::Html => {
            let table = ds
                .run_query(&sql, &params, rows)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            let n = table.rows.len();
            let sections = vec![SectionResult {
                title: "Rows".into(),
                table,
                display: Default::default(),
            }];
            let ctx = RenderContext {
                report_name: "bench",
                title: "Benchmark rows",
                description: None,
                time_zone: chrono_tz::Europe::Berlin,
                start: params.start,
                end: params.end,
                date: params.date,
                generated_at: Utc::now(),
                max_rows_in_body: 50,
                locale: Default::default(),
                single_day: false,
                attachments: &[],
                charts: &[],
            };
            let body = render::render_html(&ctx, &sections);
            (n, body.len() as u64)
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    if got != rows {
        bail!("expected {rows} rows, got {got}");
    }
    let peak = peak_rss_kib();
    let rps = rows as f64 / elapsed;
    println!(
        "{engine} {rows} rows -> {format}: {elapsed:.3} s, {rps:.0} rows/s, {:.1} MB out, peak RSS {:.1} MB (before the query {:.1} MB)",
        bytes as f64 / 1e6,
        peak as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    println!(
        "RESULT engine={engine} rows={rows} format={format} seconds={elapsed:.3} rows_per_s={rps:.0} out_bytes={bytes} peak_rss_kib={peak} rss_before_kib={rss_before}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// present: chart and workbook

/// What the sample's sections configure, on the benchmark table: labels, a money column,
/// totals of two columns and a line chart of quantity over time.
fn bench_display() -> render::SectionDisplay {
    use render::chart::{ChartKind, ChartSpec, ColumnRef};
    use render::format::{ColumnFormat, ColumnSettings, Located};
    let col = |name: &str, label: &str, format: Option<ColumnFormat>| {
        let mut c = ColumnSettings::plain(name);
        c.label = Some(label.into());
        c.format = format;
        c
    };
    let mut amount = col("amount", "Amount", Some(ColumnFormat::Currency));
    amount.currency = "EUR".parse().ok();
    let at = Located::default();
    let r = |name: &str| ColumnRef {
        name: name.into(),
        at: at.clone(),
    };
    render::SectionDisplay {
        columns: vec![
            col("id", "Order", Some(ColumnFormat::Integer)),
            col("sku", "SKU", None),
            col("quantity", "Units", Some(ColumnFormat::Integer)),
            amount,
            col("created_at", "Placed", Some(ColumnFormat::DateTime)),
        ],
        totals: vec![r("quantity"), r("amount")],
        chart: Some(ChartSpec {
            kind: ChartKind::Line,
            x: r("created_at"),
            y: vec![r("quantity")],
            title: Some("Units over time".into()),
            at,
        }),
    }
}

async fn present(args: &PresentArgs) -> Result<()> {
    use render::xlsx::XlsxBuilder;
    let url = args.url.as_str();
    let rows = args.rows;
    let engine = if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    let sql = format!(
        "SELECT id, sku, quantity, amount, created_at FROM {} WHERE created_at >= :start AND created_at < :end",
        table_name(rows)
    );
    let params = QueryParams {
        start: Utc
            .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default(),
        end: Utc
            .with_ymd_and_hms(2100, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default(),
        date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
    };
    let ds = DataSource::from_url(
        &SecretString::from(url.to_string()),
        Duration::from_secs(300),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let display = bench_display();
    let locale = report_handler::render::format::Locale::EnUs;
    let tz = chrono_tz::Europe::Berlin;
    let rss_before = peak_rss_kib();
    let started = Instant::now();
    let mut png_bytes = 0usize;
    let (got, xlsx_bytes) = match args.mode {
        PresentMode::XlsxStream => {
            let mut book = XlsxBuilder::new(locale, tz);
            let mut failed: Option<String> = None;
            let mut started_sheet = false;
            let mut sink = |cols: &[Column], row: &mut Vec<Value>| -> Result<(), DataError> {
                if !started_sheet {
                    book.start_sheet("Rows", cols, &display)
                        .map_err(DataError::Query)?;
                    started_sheet = true;
                }
                book.row(row).map_err(|e| {
                    failed = Some(e.clone());
                    DataError::Query(e)
                })
            };
            let s = ds
                .stream_query(&sql, &params, rows, &mut sink)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            if let Some(e) = failed {
                bail!("{e}");
            }
            let bytes = book.finish().map_err(|e| anyhow!(e))?;
            (s.rows, bytes.len())
        }
        PresentMode::ChartXlsx | PresentMode::XlsxMemory => {
            let table = ds
                .run_query(&sql, &params, rows)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            let n = table.rows.len();
            let sections = vec![SectionResult {
                title: "Rows".into(),
                table,
                display: display.clone(),
            }];
            if args.mode == PresentMode::ChartXlsx {
                let chart = render::chart::render_section_png(&sections[0], locale)
                    .ok_or_else(|| anyhow!("no chart drawn"))?;
                png_bytes = chart.png.len();
            }
            let ctx = RenderContext {
                report_name: "bench",
                title: "Benchmark rows",
                description: None,
                time_zone: tz,
                start: params.start,
                end: params.end,
                date: params.date,
                generated_at: Utc::now(),
                max_rows_in_body: 50,
                locale,
                single_day: false,
                attachments: &[],
                charts: &[],
            };
            let bytes = render::render_xlsx(&ctx, &sections).map_err(|e| anyhow!(e))?;
            (n, bytes.len())
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    if got != rows {
        bail!("expected {rows} rows, got {got}");
    }
    let peak = peak_rss_kib();
    let mode = args.mode;
    println!(
        "{engine} {rows} rows -> {mode}: {elapsed:.3} s, workbook {:.1} MB, chart {:.0} KB, peak RSS {:.1} MB (before the query {:.1} MB)",
        xlsx_bytes as f64 / 1e6,
        png_bytes as f64 / 1e3,
        peak as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    println!(
        "RESULT engine={engine} rows={rows} mode={mode} seconds={elapsed:.3} xlsx_bytes={xlsx_bytes} png_bytes={png_bytes} peak_rss_kib={peak} rss_before_kib={rss_before}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// load: a fixed number of requests

/// Sends `total` GETs over `concurrency` workers; returns (elapsed, non-200 count).
async fn fixed_load(
    url: &str,
    key: &str,
    total: usize,
    concurrency: usize,
) -> Result<(Duration, usize)> {
    let client = client()?;
    let next = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next, bad) = (client.clone(), next.clone(), bad.clone());
        let (url, key) = (url.to_string(), key.to_string());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let ok = match client.get(&url).header("X-API-Key", &key).send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("load worker")?;
    }
    Ok((started.elapsed(), bad.load(Ordering::Relaxed)))
}

async fn load(args: &LoadArgs) -> Result<()> {
    let total = args.requests;
    let (elapsed, bad) = fixed_load(&args.url, &args.key, total, args.concurrency).await?;
    println!(
        "RESULT requests={total} non_200={bad} seconds={:.3}",
        elapsed.as_secs_f64()
    );
    if bad > 0 {
        bail!("{bad} of {total} requests were not answered with 200");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// vault: Key Vault calls per N authenticated requests

async fn vault_calls(args: &VaultArgs) -> Result<()> {
    const KEY: &str = "bench-key-3e8d1f0a9c-padded-to-32-chars";
    let exe = exe_path(&args.exe)?;
    let (total, conc, warmup) = (args.requests, args.concurrency, args.warmup);
    let kv = vault::FakeVault::start().await;
    let msi = vault::FakeMsi::start().await;
    kv.set_secret("api-keys", KEY);
    let app = app_dir()?;
    let port = free_port()?;
    let env = [
        ("API_KEYS", kv.reference("api-keys", None)),
        ("SSL_CERT_FILE", kv.ca_pem_path().display().to_string()),
        ("IDENTITY_ENDPOINT", msi.endpoint()),
        ("IDENTITY_HEADER", msi.header().to_string()),
    ];
    let mut child = Killed(
        handler_command(&exe, app.path(), port, &env)
            .spawn()
            .with_context(|| format!("start {}", exe.display()))?,
    );
    // The fakes run on this runtime; wait for readiness off it.
    let ready = {
        let c = &mut child.0;
        tokio::task::block_in_place(|| wait_ready(port, c))
    };
    ready?;
    let url = format!("http://127.0.0.1:{port}/api/reports");
    let (_, bad) = fixed_load(&url, KEY, warmup, 4).await?;
    if bad > 0 {
        bail!("{bad} warm-up requests failed");
    }
    let (calls0, msi0, http0) = (kv.calls(), msi.calls(), kv.requests());
    let (elapsed, bad) = fixed_load(&url, KEY, total, conc).await?;
    let (calls, tokens, http) = (
        kv.calls() - calls0,
        msi.calls() - msi0,
        kv.requests() - http0,
    );
    println!(
        "{total} authenticated requests after {warmup} warm-up ({} vault calls during warm-up): {calls} vault calls, {tokens} token requests, {http} vault HTTP requests, {:.0} req/s, {bad} non-200",
        calls0,
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "RESULT requests={total} vault_calls={calls} token_requests={tokens} vault_http={http} warmup_vault_calls={calls0} non_200={bad}"
    );
    if bad > 0 {
        bail!("{bad} of {total} requests were not answered with 200");
    }
    Ok(())
}
