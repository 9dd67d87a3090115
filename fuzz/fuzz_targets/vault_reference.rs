//! Key Vault references in app settings (`@Microsoft.KeyVault(...)`): any setting value must
//! parse to a reference, "not a reference", or a `ConfigError` that never echoes the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use report_handler::secrets::reference::{is_loopback_host, looks_like_reference, parse};

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
            // A half-typed reference may hold a pasted secret: the message must not echo what
            // follows `@Microsoft.KeyVault(`.
            let msg = e.to_string();
            let rest = raw.trim().get(20..).unwrap_or("").trim_end_matches(')').trim();
            if rest.len() >= 12 {
                assert!(!msg.contains(rest), "the error echoes the value: {msg}");
            }
        }
    }
});
