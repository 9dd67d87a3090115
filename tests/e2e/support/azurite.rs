//! Azurite, the storage emulator (npm, pinned in scripts/test.sh), for the Table storage
//! ledger. scripts/test.sh starts one shared in-memory Table service and sets
//! `TEST_AZURITE_TABLE_PORT`; every test uses its own table in it ([`unique_table`]). A test
//! that stops and restarts the emulator starts its own ([`Azurite::start`], from
//! `TEST_AZURITE_BIN`), persisting to a temp folder so a restart keeps the data, as a real
//! storage account does.
//!
//! Without those variables the Table storage half of a test prints a skip line and returns.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::wait;

/// Azurite's well-known development account and its public key (in tests/secret-values.txt,
/// so the secret sweep proves the handler never prints it).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The shared emulator's Table port, or `None` (after printing why) when scripts/test.sh did
/// not start one.
pub fn shared_port(test: &str) -> Option<u16> {
    match std::env::var("TEST_AZURITE_TABLE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        Some(p) => Some(p),
        None => {
            eprintln!(
                "skipped (Table storage) {test}: TEST_AZURITE_TABLE_PORT is not set; scripts/test.sh sets it"
            );
            None
        }
    }
}

/// The explicit connection string of the development account on `port`.
pub fn connection_string(port: u16) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};TableEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )
}

/// A table name of its own for `test`: letters and digits, at most 63 characters.
pub fn unique_table(test: &str) -> String {
    let slug: String = test
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(30)
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "t{slug}{}{}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        &random[..8]
    )
}

/// An emulator of the test's own, on a free port, persisting to a temp folder.
pub struct Azurite {
    pub port: u16,
    bin: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Azurite {
    /// Starts one, or returns `None` (after printing why) without `TEST_AZURITE_BIN`.
    pub async fn start(test: &str) -> Option<Azurite> {
        let Ok(bin) = std::env::var("TEST_AZURITE_BIN") else {
            eprintln!(
                "skipped (Table storage) {test}: TEST_AZURITE_BIN is not set; scripts/test.sh sets it"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut a = Azurite {
            port,
            bin,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        a.resume().await;
        Some(a)
    }

    /// Starts the process (again) on the same port and folder, and waits for its port.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(&self.bin)
            .args(["--tableHost", "127.0.0.1", "--tablePort"])
            .arg(self.port.to_string())
            .args(["--disableTelemetry", "--skipApiVersionCheck", "--silent"])
            .arg("--location")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Azurite");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait::until(Duration::from_secs(30), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok())
            .await,
            "Azurite did not listen on {port}"
        );
    }

    /// Stops the process (SIGKILL) and waits until the port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let port = self.port;
        assert!(
            wait::until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_err())
            .await
        );
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
