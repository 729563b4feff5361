//! Log lines the Functions host records at the right severity.
//!
//! The host reads a custom handler's output line by line and has no other channel for its
//! severity: every stdout line is recorded at Information, every stderr line at Error, or at
//! Warning when the line contains "warn" in any case (azure-functions-host
//! `WorkerProcess.OnOutputDataReceived` / `ParseErrorMessageAndLog`, with
//! `HttpWorkerDescription.UseStdErrorStreamForErrorsOnly = true` for custom handlers). So
//! ERROR and WARN events go to stderr, where the level text `WARN` carries the "warn", and
//! everything else goes to stdout.
//!
//! `LOG_FORMAT=json` writes one JSON object per line, with the event's fields and those of
//! every span it runs in as top-level keys (`invocation`, `event_id`, `document_id`, ...), so
//! Application Insights queries can read them with `parse_json(message)`.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the process-wide subscriber: level filter from `RUST_LOG` (default `info`),
/// WARN and ERROR on stderr, the rest on stdout, in `format`.
pub fn init(format: LogFormat) {
    let writer = std::io::stderr
        .with_max_level(Level::WARN)
        .or_else(std::io::stdout);
    let ansi = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Only fails when a subscriber is already set, which would then keep logging.
    let _ = tracing::subscriber::set_global_default(subscriber(format, filter, writer, ansi));
}

/// The subscriber [`init`] installs, writing through `writer` (which picks the stream per
/// event level).
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).with_target(false).finish()),
        LogFormat::Json => Box::new(
            builder
                .with_ansi(false)
                .fmt_fields(JsonFields::new())
                .event_format(FlatJson)
                .finish(),
        ),
    }
}

/// One JSON object per event: `timestamp`, `level`, `message`, then the fields of every
/// enclosing span (outermost first) and of the event, all at the top level. A field named
/// like an inner one replaces the outer; the three fixed keys always win.
struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str(fields.as_str()) {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut FieldsVisitor(&mut line));
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        line.insert("timestamp".into(), Value::String(now));
        line.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().into()),
        );
        line.entry("message")
            .or_insert(Value::String(String::new()));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Records an event's fields as JSON values (numbers and booleans stay typed).
struct FieldsVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for FieldsVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A stream captured in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    /// Logs one line per level inside a request span; returns (stdout, stderr).
    fn log_each_level(format: LogFormat) -> (Vec<String>, Vec<String>) {
        let (out, err) = (Captured::default(), Captured::default());
        let (o, e) = (out.clone(), err.clone());
        let writer = (move || e.clone())
            .with_max_level(Level::WARN)
            .or_else(move || o.clone());
        let subscriber = subscriber(format, EnvFilter::new("info"), writer, false);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", invocation = "inv-1", path = "/api/x");
            let _entered = span.enter();
            let chunk = tracing::info_span!("chunk", document_id = "doc-7", index = 2u32);
            let _chunk = chunk.enter();
            tracing::error!(status = 503u16, "storage refused");
            tracing::warn!(attempt = 2, "retrying");
            tracing::info!(ok = true, "answered");
            tracing::debug!("not shown at the default level");
        });
        (out.lines(), err.lines())
    }

    #[test]
    fn warnings_and_errors_go_to_stderr_the_rest_to_stdout() {
        let (out, err) = log_each_level(LogFormat::Text);
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(err[0].contains("ERROR") && err[0].contains("storage refused"));
        assert!(
            err[1].contains("WARN") && err[1].contains("retrying"),
            "the host records a stderr line as a Warning only if it says warn: {err:?}"
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("INFO") && out[0].contains("answered"));
        assert!(out[0].contains("invocation=\"inv-1\""), "{out:?}");
    }

    #[test]
    fn json_lines_carry_span_and_event_fields_as_top_level_keys() {
        let (out, err) = log_each_level(LogFormat::Json);
        let parse = |l: &String| serde_json::from_str::<Value>(l).unwrap();
        let error = parse(&err[0]);
        assert_eq!(error["level"], "ERROR");
        assert_eq!(error["message"], "storage refused");
        assert_eq!(error["status"], 503);
        assert_eq!(error["invocation"], "inv-1");
        assert_eq!(error["path"], "/api/x");
        assert_eq!(error["document_id"], "doc-7");
        assert_eq!(error["index"], 2);
        assert!(error["timestamp"].as_str().unwrap().ends_with('Z'));
        let warning = parse(&err[1]);
        assert_eq!(warning["level"], "WARN");
        assert_eq!(warning["attempt"], 2);
        let info = parse(&out[0]);
        assert_eq!(
            (info["level"].as_str(), info["ok"].as_bool()),
            (Some("INFO"), Some(true))
        );
        assert_eq!(out.len() + err.len(), 3);
    }
}
