//! Per-invocation log capture: `tracing` events inside an invocation's span are returned in the
//! reply's `Logs` array, so they reach the invocation log in Application Insights, while the
//! normal stdout layer still prints them in real time (the host copies each `Logs` entry into
//! the invocation log; stdout is what it shows live).
//!
//! The invocation span is named [`INVOCATION_SPAN`] and carries an `invocation_id` field; the
//! [`CaptureLayer`] appends every event in such a span (or its children) to a buffer that the
//! handler opened with [`begin`] and drains with [`finish`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber, span};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The span name that marks an invocation.
pub const INVOCATION_SPAN: &str = "invocation";
/// At most this many lines are kept per invocation, so a runaway loop cannot grow memory.
pub const MAX_LINES: usize = 1_000;

fn buffers() -> &'static Mutex<HashMap<String, Vec<String>>> {
    static B: OnceLock<Mutex<HashMap<String, Vec<String>>>> = OnceLock::new();
    B.get_or_init(Default::default)
}

/// Opens a capture buffer for an invocation id.
pub fn begin(invocation_id: &str) {
    if let Ok(mut b) = buffers().lock() {
        b.insert(invocation_id.to_string(), Vec::new());
    }
}

/// Closes the buffer and returns its lines (empty if capture is not installed).
pub fn finish(invocation_id: &str) -> Vec<String> {
    buffers()
        .lock()
        .ok()
        .and_then(|mut b| b.remove(invocation_id))
        .unwrap_or_default()
}

struct InvocationId(String);

#[derive(Default)]
struct IdVisitor(Option<String>);

impl Visit for IdVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "invocation_id" {
            self.0 = Some(value.to_string());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "invocation_id" {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

/// The `tracing` layer that feeds the `Logs` array.
pub struct CaptureLayer;

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != INVOCATION_SPAN {
            return;
        }
        let mut v = IdVisitor::default();
        attrs.record(&mut v);
        if let (Some(inv), Some(span)) = (v.0, ctx.span(id)) {
            span.extensions_mut().insert(InvocationId(inv));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(inv) = scope
            .into_iter()
            .find_map(|s| s.extensions().get::<InvocationId>().map(|i| i.0.clone()))
        else {
            return;
        };
        let mut v = LineVisitor::default();
        event.record(&mut v);
        let line = format!("{} {}{}", event.metadata().level(), v.message, v.fields);
        if let Ok(mut b) = buffers().lock()
            && let Some(lines) = b.get_mut(&inv)
            && lines.len() < MAX_LINES
        {
            lines.push(line);
        }
    }
}
