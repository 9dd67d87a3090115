//! Streamed exports: CSV, JSON and XLSX of a report too large to keep in memory go from the
//! database cursor to the client in chunks (the workbook, a zip whose directory comes last, is
//! built in constant memory from the cursor and then sent in chunks).
//!
//! A spawned task runs the section queries through [`ReportEngine::stream_section`] with a
//! [`RowConsumer`] that encodes each borrowed row into a byte buffer and, every
//! [`CHUNK_BYTES`], sends the buffer over a bounded channel whose receiver is the response
//! body. The channel holds [`CHUNKS_IN_FLIGHT`] chunks, so a slow client slows the query and
//! memory stays flat however many rows there are; a client that goes away closes the channel,
//! which stops the query. The task ends with the query: it is bounded by the query timeout and
//! by the client reading, never detached work.
//!
//! The body is the same bytes the in-memory renderers write (the same writers produce both),
//! except `generated_at`, which is when the streamed run started.

use std::sync::Arc;

use axum::body::Bytes;
use chrono::Utc;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::params::Format;
use crate::data::{Column, DataError, RowConsumer, SinkFlush, Value};
use crate::render::json::JsonDocWriter;
use crate::report::{ReportEngine, ReportSet, Window};

/// Bytes buffered before they are sent on as one chunk of the body.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks the channel holds before the query waits for the client.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// A response body produced while it is sent: chunks from the export task. An `Err` chunk
/// means the export failed after the status line went out; the response is then cut off, so
/// the client sees an incomplete body rather than a wrong one.
#[derive(Debug)]
pub struct BodyStream(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl BodyStream {
    /// The next chunk, or `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        self.0.recv().await
    }

    /// The whole body, for payload mode (the envelope carries it as one string).
    pub async fn collect(mut self) -> Result<Vec<u8>, std::io::Error> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// The chunks as a `Stream`, for a plain HTTP response body.
    pub fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures_util::stream::unfold(self, |mut s| async move {
            s.next().await.map(|chunk| (chunk, s))
        })
    }
}

/// Starts streaming `format` (CSV of one section, the JSON document or the workbook) of report
/// `name` for `window`. The caller has checked the report and section exist.
pub fn spawn_export(
    engine: Arc<ReportEngine>,
    reports: Arc<ReportSet>,
    name: String,
    window: Window,
    format: Format,
) -> BodyStream {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let span = tracing::info_span!("report.export", report.name = %name, render.format = ?format);
    tokio::spawn(
        async move {
            let mut sink = ChunkSink {
                buf: Vec::with_capacity(CHUNK_BYTES + 4096),
                tx,
                mode: Mode::Csv { header: false },
                json: JsonDocWriter::default(),
                title: String::new(),
            };
            match export(&engine, &reports, &name, &window, format, &mut sink).await {
                Ok(rows) => {
                    let rest = std::mem::take(&mut sink.buf);
                    if !rest.is_empty() {
                        let _ = sink.tx.send(Ok(Bytes::from(rest))).await;
                    }
                    tracing::info!(report = %name, rows, "report exported (streamed)");
                }
                Err(ExportError::ClientGone) => {
                    tracing::info!(report = %name, "the client went away during a streamed export");
                }
                Err(ExportError::Engine(e)) => {
                    tracing::error!(report = %name, error.message = %e, "a streamed export failed; the response is cut off");
                    let _ = sink
                        .tx
                        .send(Err(std::io::Error::other("the export failed")))
                        .await;
                }
            }
        }
        .instrument(span),
    );
    BodyStream(rx)
}

enum ExportError {
    ClientGone,
    Engine(crate::report::EngineError),
}

impl From<crate::report::EngineError> for ExportError {
    fn from(e: crate::report::EngineError) -> Self {
        match e {
            crate::report::EngineError::Data(DataError::Query(m)) if m == CLIENT_GONE => {
                ExportError::ClientGone
            }
            other => ExportError::Engine(other),
        }
    }
}

const CLIENT_GONE: &str = "the client closed the connection";

/// Runs the export into `sink`; returns the rows written.
async fn export(
    engine: &ReportEngine,
    reports: &ReportSet,
    name: &str,
    window: &Window,
    format: Format,
    sink: &mut ChunkSink,
) -> Result<usize, ExportError> {
    let Some(report) = reports.get(name) else {
        return Ok(0);
    };
    match format {
        Format::Xlsx => {
            // A workbook is a zip whose directory comes last: it is built (rows streamed into
            // constant-memory sheets) and then sent in chunks. The client going away stops it.
            let tx = sink.tx.clone();
            let book = crate::report::workbook::stream_workbook(engine, report, window, || {
                if tx.is_closed() {
                    Err(DataError::Query(CLIENT_GONE.into()))
                } else {
                    Ok(())
                }
            })
            .await?;
            let bytes = Bytes::from(book.bytes);
            for at in (0..bytes.len()).step_by(CHUNK_BYTES) {
                let chunk = bytes.slice(at..bytes.len().min(at + CHUNK_BYTES));
                sink.tx
                    .send(Ok(chunk))
                    .await
                    .map_err(|_| ExportError::ClientGone)?;
            }
            Ok(book.rows)
        }
        Format::Csv { section } => {
            let Some(sec) = report.sections.get(section.wrapping_sub(1)) else {
                return Ok(0);
            };
            sink.mode = Mode::Csv { header: false };
            let s = engine.stream_section(sec, window, sink).await?;
            if matches!(sink.mode, Mode::Csv { header: false }) {
                crate::render::csv::write_header(&mut sink.buf, &s.columns);
            }
            Ok(s.rows)
        }
        _ => {
            let ctx = report.render_context(window, Utc::now(), &[], &[]);
            sink.json = JsonDocWriter::start(&mut sink.buf, &ctx);
            let mut rows = 0;
            for sec in &report.sections {
                sink.mode = Mode::Json {
                    started: false,
                    display: sec.display.clone(),
                };
                sink.title.clone_from(&sec.title);
                let s = engine.stream_section(sec, window, sink).await?;
                if let Mode::Json {
                    started: false,
                    display,
                } = &sink.mode
                {
                    sink.json
                        .section_start(&mut sink.buf, &sink.title, &s.columns, display);
                }
                sink.json.section_end(&mut sink.buf, s.truncated);
                rows += s.rows;
                if sink.buf.len() >= CHUNK_BYTES
                    && let Some(f) = sink.flush()
                {
                    f.await.map_err(crate::report::EngineError::from)?;
                }
            }
            std::mem::take(&mut sink.json).finish(&mut sink.buf);
            Ok(rows)
        }
    }
}

enum Mode {
    Csv {
        header: bool,
    },
    Json {
        started: bool,
        display: crate::render::SectionDisplay,
    },
}

/// Encodes rows into `buf` and hands full chunks to the body channel.
struct ChunkSink {
    buf: Vec<u8>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    mode: Mode,
    json: JsonDocWriter,
    title: String,
}

impl RowConsumer for ChunkSink {
    fn row(&mut self, columns: &[Column], row: &mut Vec<Value>) -> Result<(), DataError> {
        match &mut self.mode {
            Mode::Csv { header } => {
                if !*header {
                    crate::render::csv::write_header(&mut self.buf, columns);
                    *header = true;
                }
                crate::render::csv::write_row(&mut self.buf, row);
            }
            Mode::Json { started, display } => {
                if !*started {
                    self.json
                        .section_start(&mut self.buf, &self.title, columns, display);
                    *started = true;
                }
                self.json.row(&mut self.buf, row);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Option<SinkFlush<'_>> {
        if self.buf.len() < CHUNK_BYTES {
            return None;
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 4096));
        let tx = &self.tx;
        Some(Box::pin(async move {
            tx.send(Ok(Bytes::from(chunk)))
                .await
                .map_err(|_| DataError::Query(CLIENT_GONE.into()))
        }))
    }
}
