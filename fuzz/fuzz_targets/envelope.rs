//! The payload-mode invocation envelope (functions-protocol.md §2–§3): whatever the host (or
//! anyone who can reach the port) POSTs must give a value or an `EnvelopeError`, never a panic,
//! and the HTTP routes' one-pass reader must agree with the tree reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use report_handler::functions::envelope::{
    Envelope, HttpRequestData, TimerInfo, decode_double_encoded, parse_host_datetime,
};
use report_handler::functions::{HTTP_BINDING, TIMER_BINDING, parse_query};

fuzz_target!(|data: &[u8]| {
    // The raw bytes as a host date too: the date parser sees strings straight from Metadata.
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_host_datetime(s);
    }
    // The HTTP routes read `Data.req` in one pass (functions/http_envelope.rs); it must give
    // what the tree reader gives: the same request, or an error with the same message.
    let shown = |r: &Result<HttpRequestData, _>| match r {
        Ok(d) => format!("{d:?}"),
        Err(e) => format!("error: {e}"),
    };
    let one_pass = HttpRequestData::parse_envelope(data, HTTP_BINDING);
    let tree =
        Envelope::parse(data).and_then(|env| HttpRequestData::from_envelope(&env, HTTP_BINDING));
    assert_eq!(shown(&one_pass), shown(&tree));
    let Ok(env) = Envelope::parse(data) else {
        return;
    };
    let _ = env.sys();
    let _ = env.retry_context();
    for key in ["sys", "Query", "Headers", "name", "RetryContext"] {
        if let Some(v) = env.metadata_value(key) {
            let _ = decode_double_encoded(v);
        }
    }
    if let Ok(timer) = TimerInfo::from_envelope(&env, TIMER_BINDING) {
        let _ = timer.is_past_due;
    }
    if let Ok(req) = HttpRequestData::from_envelope(&env, HTTP_BINDING) {
        let path = req.path();
        assert!(
            path.starts_with('/') || !req.url.contains("://"),
            "{path:?}"
        );
        assert!(!path.contains('?') && !path.contains('#'), "{path:?}");
        let _ = req.header("accept");
        // Forwarding mode parses the URL's own query string the same way.
        if let Some((_, q)) = req.url.split_once('?') {
            let _ = parse_query(q);
        }
    }
});
