//! Logs: readable text on a terminal, and on anything else (a pod's log
//! stream) one JSON object per line in Google Cloud Logging's structured
//! format: `severity`, `message`, `time`, `logging.googleapis.com/sourceLocation`,
//! the line's fields and those of the spans it is in (an event's span gives
//! every line about it the event's identifiers), and
//! `logging.googleapis.com/trace` when a `trace` field is given. `CHATWORKER_LOG_FORMAT=json|text` overrides the choice;
//! `RUST_LOG` filters (default `info`). Logs go to stderr, so that commands
//! that print results (`chatworker send`) keep stdout clean.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// Which format logs are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Human-readable lines.
    Text,
    /// Cloud Logging's structured JSON.
    Json,
}

impl Format {
    /// `CHATWORKER_LOG_FORMAT` if set, else text on a terminal and JSON
    /// elsewhere.
    pub(crate) fn detect() -> Self {
        match std::env::var("CHATWORKER_LOG_FORMAT").as_deref() {
            Ok("json") => Self::Json,
            Ok("text") => Self::Text,
            _ if std::io::IsTerminal::is_terminal(&std::io::stderr()) => Self::Text,
            _ => Self::Json,
        }
    }
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`);
/// does nothing when a subscriber is already set.
pub(crate) fn init(format: Format) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = match format {
        Format::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(terminal),
            )
            .try_init(),
        Format::Json => registry
            .with(SpanFields)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .fmt_fields(NoFields)
                    .event_format(CloudLogging),
            )
            .try_init(),
    };
}

/// Keeps each span's fields as JSON, for [`CloudLogging`] to write with
/// every line inside the span.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SpanFields;

/// A span's fields, in its extensions: names as the span's metadata has
/// them (no copy), values as JSON.
struct Recorded(Vec<(&'static str, Value)>);

/// Writes a span's fields into a `Recorded` list.
struct SpanVisitor<'a>(&'a mut Vec<(&'static str, Value)>);

impl SpanVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        match self.0.iter_mut().find(|(name, _)| *name == field.name()) {
            Some((_, old)) => *old = value,
            None => self.0.push((field.name(), value)),
        }
    }
}

impl Visit for SpanVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// Formats no fields: in the JSON format, [`CloudLogging`] writes span
/// fields from [`SpanFields`]' record, so the fmt layer's own copy of each
/// span's fields, made for every span, would be wasted work.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NoFields;

impl<'writer> FormatFields<'writer> for NoFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: Writer<'writer>,
        _fields: R,
    ) -> fmt::Result {
        Ok(())
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanFields {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Vec::with_capacity(attrs.metadata().fields().len());
        attrs.record(&mut SpanVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Recorded(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(recorded) = span.extensions_mut().get_mut::<Recorded>()
        {
            values.record(&mut SpanVisitor(&mut recorded.0));
        }
    }
}

/// Google Cloud Logging's structured format.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CloudLogging;

/// Cloud Logging's severity for a level.
fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The spans' fields, innermost last so that it wins.
        let mut spans = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(recorded) = span.extensions().get::<Recorded>() {
                    for (name, value) in &recorded.0 {
                        spans.insert((*name).to_owned(), value.clone());
                    }
                }
            }
        }
        let span = ctx.lookup_current().map(|s| s.name());
        writeln!(writer, "{}", entry(event, span, spans))
    }
}

/// One log entry as JSON: the line's own fields win over its spans'.
fn entry(event: &Event<'_>, span: Option<&str>, spans: Map<String, Value>) -> Value {
    let meta = event.metadata();
    let mut fields = Fields(Map::new());
    event.record(&mut fields);
    let mut fields = fields.0;
    for (key, value) in spans {
        fields.entry(key).or_insert(value);
    }
    let mut entry = Map::new();
    entry.insert("severity".into(), severity(meta.level()).into());
    entry.insert(
        "message".into(),
        fields.remove("message").unwrap_or_else(|| "".into()),
    );
    entry.insert(
        "time".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into(),
    );
    entry.insert("target".into(), meta.target().into());
    let mut location = Map::new();
    if let Some(file) = meta.file() {
        location.insert("file".into(), file.into());
    }
    if let Some(line) = meta.line() {
        location.insert("line".into(), line.to_string().into());
    }
    location.insert(
        "function".into(),
        meta.module_path().unwrap_or_default().into(),
    );
    entry.insert(
        "logging.googleapis.com/sourceLocation".into(),
        Value::Object(location),
    );
    if let Some(trace) = fields.get("trace").cloned() {
        entry.insert("logging.googleapis.com/trace".into(), trace);
    }
    if let Some(span) = span {
        entry.insert("span".into(), span.into());
    }
    for (key, value) in fields {
        entry.entry(key).or_insert(value);
    }
    Value::Object(entry)
}

/// An event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn entries_are_cloud_logging_json() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(SpanFields).with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .fmt_fields(NoFields)
                .event_format(CloudLogging),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("event", message_id = "42", kind = "MESSAGE");
            let _entered = span.enter();
            tracing::warn!(
                attempt = 3_u64,
                trace = "projects/p/traces/t",
                kind = "overridden",
                "reply rejected"
            );
            drop(_entered);
            tracing::info!(space = %"spaces/A", "worker started");
        });
        let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["severity"], "WARNING");
        assert_eq!(lines[0]["message"], "reply rejected");
        assert_eq!(lines[0]["message_id"], "42", "the span's fields come along");
        assert_eq!(lines[0]["kind"], "overridden", "the line's own fields win");
        assert_eq!(lines[0]["span"], "event");
        assert_eq!(lines[0]["attempt"], 3);
        assert_eq!(
            lines[0]["logging.googleapis.com/trace"],
            "projects/p/traces/t"
        );
        assert!(lines[0]["logging.googleapis.com/sourceLocation"]["line"].is_string());
        assert_eq!(lines[1]["severity"], "INFO");
        assert_eq!(lines[1]["space"], "spaces/A");
        assert!(lines[1].get("message_id").is_none(), "outside the span");
        assert!(lines[1]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
