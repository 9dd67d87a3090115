//! Key Vault references in app settings (`@Microsoft.KeyVault(...)`): any setting value must
//! parse to a reference, "not a reference", or a `ConfigError` that never echoes the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use report_handler::secrets::reference::{is_loopback_host, looks_like_reference, parse};

/// The parser's source: its error texts are the allowed messages.
const SOURCE: &str = include_str!("../../src/secrets/reference.rs");

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let looks = looks_like_reference(raw);
    match parse("SMTP_PASSWORD", raw) {
        Ok(None) => assert!(!looks),
        Ok(Some(r)) => {
            assert!(looks);
            assert!(r.vault_url.starts_with("https://") && r.vault_url.ends_with('/'));
            assert!(!r.name.is_empty());
            let _ = is_loopback_host(&r.host);
        }
        Err(e) => {
            assert!(looks);
            // A half-typed reference may hold a pasted secret: the message must not echo it.
            // Every problem text is a literal in reference.rs, so a message that is not one
            // must have been built from the value.
            assert_eq!(e.setting, "SMTP_PASSWORD");
            let problem = e
                .problem
                .strip_prefix("is a malformed Key Vault reference: ")
                .unwrap_or(&e.problem);
            assert!(
                SOURCE.contains(&format!("\"{problem}\"")),
                "a problem text that is not a literal: {problem}"
            );
        }
    }
});
