//! The benchmark baseline: the smallest useful hyper 1 server, answering every request with a
//! fixed `200` and a short JSON body, on `127.0.0.1:<port>`.
//!
//! Why it exists: invocation overhead only means something next to what the same machine, the
//! same load generator and the same HTTP stack do with no application at all. `scripts/bench.sh`
//! runs `wrk` against this and against `handler` in the same run and reports the ratio.
//!
//! Usage: `cargo run --release --example bench_baseline -- <port>`

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const BODY: &[u8] = br#"{"status":"ok"}"#;

fn main() -> std::process::ExitCode {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(p)) => p,
        _ => {
            eprintln!("usage: bench_baseline <port>");
            return std::process::ExitCode::from(2);
        }
    };
    // The same runtime flavour as `handler serve`: multi-threaded, one worker per core.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        println!("bench_baseline listening on 127.0.0.1:{port}");
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            // No TCP_NODELAY: `axum::serve` (the handler) does not set it either.
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(BODY)))
                                .unwrap_or_default(),
                        )
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}
