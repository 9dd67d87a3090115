//! # report-handler
//!
//! An Azure Functions custom handler: the Functions host starts this binary, pings `GET /`
//! until it answers, and then POSTs invocations to it (`functions-protocol.md`).
//!
//! Two functions share one report engine, one secret layer and one data source:
//! - **NightlyReport** (timer): each tick, every report whose schedule is due in its own time
//!   zone is run and emailed exactly once.
//! - **HttpTrigger** (HTTP): the same report data as JSON, CSV or HTML for API clients.
//!
//! The [`App`] holds the shared state and [`router`] builds the HTTP surface; `main.rs` only
//! parses the command line, so tests run exactly the code production runs.

pub mod api;
pub mod cli;
pub mod config;
pub mod data;
pub mod delivery;
pub mod functions;
pub mod render;
pub mod report;
pub mod secrets;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;

use config::Config;

/// How long in-flight requests may take to finish after SIGTERM/SIGINT.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The state shared by every request. Building it does no network work, so the handler answers
/// the host's readiness ping before any database, vault or SMTP connection is made.
#[derive(Debug)]
pub struct App {
    /// The validated configuration.
    pub config: Config,
}

impl App {
    /// Builds the shared state from a validated configuration.
    pub fn new(config: Config) -> Arc<Self> {
        Arc::new(Self { config })
    }

    /// Handles one NightlyReport tick at the host's time `tick`.
    pub async fn tick(&self, tick: DateTime<Utc>) -> anyhow::Result<()> {
        tracing::warn!(
            tick = %tick.to_rfc3339(),
            "report delivery is not part of this build yet; the tick was received and nothing was sent"
        );
        Ok(())
    }
}

/// The router the host (or `handler dev`) talks to.
pub fn router(app: Arc<App>) -> axum::Router {
    functions::router(app)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// for at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(app)).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => return res.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        _ = rx => {}
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
        Ok(res) => res.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        Err(_) => {
            tracing::warn!("in-flight requests did not finish within the shutdown grace period");
            server.abort();
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
