//! The `.eml` files the mailer writes without `SMTP_HOST` (`MAIL_OUTBOX_DIR`), and a bounded
//! wait for them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::wait;

/// The `.eml` files in `dir`, sorted (none while the directory does not exist yet).
pub fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Waits (bounded, blocking) until `dir` holds at least `n` `.eml` files; returns them.
pub fn wait_for_eml(dir: &Path, n: usize, within: Duration) -> Vec<PathBuf> {
    wait::until_blocking(within, || eml_files(dir).len() >= n);
    eml_files(dir)
}
