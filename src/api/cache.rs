//! Single flight and a small cache for report data.
//!
//! Identical concurrent requests (same report, same window) share one run of the SQL. Data of a
//! window that has ended does not change, so it is kept for [`ENDED_TTL`] (bounded to
//! [`MAX_ENTRIES`]); with it the body, and so the ETag, stay stable and `If-None-Match` works.
//! Data of a window still open is shared only by requests that overlap in time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;

use crate::render::SectionResult;

/// How long data of an ended window is served from memory.
pub const ENDED_TTL: Duration = Duration::from_secs(600);
/// At most this many windows are kept.
pub const MAX_ENTRIES: usize = 256;
/// Results with more rows than this (all sections together) are never kept in memory: the API
/// streams CSV and JSON of such windows from the database to the client, and renders the other
/// formats without caching them. About 20,000 rows is a few MB of cells.
pub const MAX_KEPT_ROWS: usize = 20_000;

/// Report data as run once.
#[derive(Debug)]
pub struct ReportData {
    /// The sections' tables.
    pub sections: Vec<SectionResult>,
    /// When the SQL ran.
    pub generated_at: DateTime<Utc>,
    /// Rendered bodies with their ETags, by representation, for data that is kept (an ended
    /// window): a cached request then costs no rendering and no hashing.
    pub rendered: Mutex<HashMap<String, Rendered>>,
}

impl ReportData {
    /// Data just run.
    pub fn new(sections: Vec<SectionResult>, generated_at: DateTime<Utc>) -> Self {
        Self {
            sections,
            generated_at,
            rendered: Mutex::new(HashMap::new()),
        }
    }

    /// Rows of all sections together.
    pub fn rows(&self) -> usize {
        self.sections.iter().map(|s| s.table.rows.len()).sum()
    }
}

/// A rendered representation and its strong ETag.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The body (text, or a workbook or image).
    pub body: Arc<[u8]>,
    /// The quoted ETag of the body.
    pub etag: Arc<str>,
}

impl Rendered {
    /// Renders once and computes the ETag.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        let body: Vec<u8> = body.into();
        let etag = etag_of(&body);
        Self {
            body: body.into(),
            etag: etag.into(),
        }
    }
}

/// A strong ETag: the first 128 bits of the body's SHA-256, quoted.
pub fn etag_of(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// A report run: the report, the window's start and end, and whether the run stops at
/// [`MAX_KEPT_ROWS`] (the CSV and JSON exports) or runs every row (the other formats).
/// (report, window start, window end, streamable, recipient key): a recipient's rows are
/// their own entry.
pub type Key = (String, DateTime<Utc>, DateTime<Utc>, bool, Option<String>);

struct Entry {
    cell: Arc<OnceCell<Arc<ReportData>>>,
    created: Instant,
}

/// The in-flight and recently completed report runs.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<Key, Entry>>,
    /// Ended windows known to be over [`MAX_KEPT_ROWS`]: their exports stream at once, without
    /// trying the in-memory run first.
    large: Mutex<HashMap<Key, Instant>>,
    runs: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").finish_non_exhaustive()
    }
}

impl Flights {
    /// How many times the SQL actually ran (for tests and benchmarks).
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that an ended window's export is larger than [`MAX_KEPT_ROWS`] (kept for
    /// [`ENDED_TTL`], at most [`MAX_ENTRIES`] windows).
    pub fn mark_large(&self, key: Key) {
        let mut large = self.large.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        large.retain(|_, at| now.duration_since(*at) < ENDED_TTL);
        if large.len() >= MAX_ENTRIES {
            large.clear();
        }
        large.insert(key, now);
    }

    /// True when [`Flights::mark_large`] recorded `key` within [`ENDED_TTL`].
    pub fn is_large(&self, key: &Key) -> bool {
        let large = self.large.lock().unwrap_or_else(|p| p.into_inner());
        large.get(key).is_some_and(|at| at.elapsed() < ENDED_TTL)
    }

    /// Returns the data for `key`, running `run` at most once for concurrent callers. `keep`
    /// says whether the result may be reused later (the window has ended); a result of more
    /// than [`MAX_KEPT_ROWS`] rows is never kept.
    pub async fn get_or_run<E, F, Fut>(
        &self,
        key: Key,
        keep: bool,
        run: F,
    ) -> Result<Arc<ReportData>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<ReportData, E>>,
    {
        let cell = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            map.retain(|_, e| {
                now.duration_since(e.created) < ENDED_TTL || Arc::strong_count(&e.cell) > 1
            });
            if map.len() >= MAX_ENTRIES
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, e)| e.created)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
            map.entry(key.clone())
                .or_insert_with(|| Entry {
                    cell: Arc::new(OnceCell::new()),
                    created: now,
                })
                .cell
                .clone()
        };
        let result = cell
            .get_or_try_init(|| async {
                self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                run().await.map(Arc::new)
            })
            .await
            .cloned();
        let small = result
            .as_ref()
            .is_ok_and(|d: &Arc<ReportData>| d.rows() <= MAX_KEPT_ROWS);
        if !keep || !small {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&key).is_some_and(|e| Arc::ptr_eq(&e.cell, &cell)) {
                map.remove(&key);
            }
        }
        result
    }
}
