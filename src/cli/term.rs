//! Where the tool's output goes and how it looks: colour only on a terminal, log lines without
//! one WARN per retry.
//!
//! Colour follows no-color.org: none when the stream is not a terminal (a file, a pipe, CI's
//! log) or when `NO_COLOR` is set to anything non-empty. Retries are counted by [`RetryTally`]
//! and shown as one summary line; with `RUST_LOG` set the operator asked for every line, and
//! gets them.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::preflight::{retried, Cause};

/// Whether a stream gets colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Paint {
    colour: bool,
}

impl Paint {
    /// Colour when the stream is a terminal and `NO_COLOR` is unset or empty.
    pub(crate) fn decide(is_terminal: bool, no_color: Option<&OsStr>) -> Paint {
        Paint {
            colour: is_terminal && no_color.is_none_or(OsStr::is_empty),
        }
    }

    /// For standard output.
    pub(crate) fn stdout() -> Paint {
        Paint::decide(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        )
    }

    /// For standard error (log lines, progress bars).
    pub(crate) fn stderr() -> Paint {
        Paint::decide(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        )
    }

    /// Whether colour is on.
    pub(crate) fn colour(self) -> bool {
        self.colour
    }

    fn sgr(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Green: a check passed.
    pub(crate) fn good(self, text: &str) -> String {
        self.sgr("32", text)
    }

    /// Bold red: a check failed.
    pub(crate) fn bad(self, text: &str) -> String {
        self.sgr("1;31", text)
    }

    /// Dim: details and notes.
    pub(crate) fn dim(self, text: &str) -> String {
        self.sgr("2", text)
    }
}

/// Counts the clients' retry log lines instead of printing each one. A retry line is an event
/// with the fields `attempt` and `delay_ms` (the Storage clients' "transient failure;
/// retrying"); its `error` field gives the cause of the last one.
#[derive(Debug, Clone, Default)]
pub(crate) struct RetryTally(Arc<Mutex<Tally>>);

#[derive(Debug, Default)]
struct Tally {
    retries: u32,
    first: Option<Instant>,
    /// When the last retry's pause ends.
    until: Option<Instant>,
    /// The last error, or its cause when it came with its source chain.
    last_error: Option<String>,
}

impl RetryTally {
    /// "retried 4 times over 6.0 s: connection refused", for the retries since the last call;
    /// `None` when there were none.
    pub(crate) fn take(&self) -> Option<String> {
        let tally = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        let first = tally.first?;
        let over = tally
            .until
            .unwrap_or(first)
            .saturating_duration_since(first);
        let last = tally.last_error.unwrap_or_default();
        Some(summary(tally.retries, over, &last))
    }

    fn record(&self, delay: Duration, error: Option<String>) {
        let mut tally = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        tally.retries += 1;
        tally.first.get_or_insert(now);
        tally.until = Some(now + delay);
        if error.is_some() {
            tally.last_error = error;
        }
    }
}

/// One line for `retries` retries over `over`, ending with the cause read off `last_error`
/// (or the error itself, clipped, when it names no known cause).
pub(crate) fn summary(retries: u32, over: Duration, last_error: &str) -> String {
    let clause = retried(retries + 1, over);
    let clause = clause.trim().trim_start_matches('(').trim_end_matches(')');
    let cause = match Cause::from_message(last_error) {
        Some(Cause::Tls(_)) => "TLS failed".to_string(),
        Some(cause) => cause.to_string(),
        None => crate::redact::reason(last_error).into_owned(),
    };
    if cause.is_empty() {
        clause.to_string()
    } else {
        format!("{clause}: {cause}")
    }
}

/// Whether an event is a client's retry line.
fn is_retry(meta: &Metadata<'_>) -> bool {
    meta.is_event()
        && meta.fields().field("attempt").is_some()
        && meta.fields().field("delay_ms").is_some()
}

impl<S: Subscriber> Layer<S> for RetryTally {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !is_retry(event.metadata()) {
            return;
        }
        let mut fields = RetryFields::default();
        event.record(&mut fields);
        self.record(Duration::from_millis(fields.delay_ms), fields.error);
    }
}

#[derive(Default)]
struct RetryFields {
    delay_ms: u64,
    error: Option<String>,
}

impl Visit for RetryFields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "delay_ms" {
            self.delay_ms = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "error" {
            self.error = Some(value.to_string());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if field.name() == "error" {
            // With its source chain, the cause can be named: "connection refused".
            self.error = Some(match Cause::of(value) {
                Cause::Other(_) => value.to_string(),
                cause => cause.to_string(),
            });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "error" {
            // `%error` arrives here, formatted with Display.
            self.error = Some(format!("{value:?}"));
        }
    }
}

/// Sets up log lines on standard error (WARN and above unless `RUST_LOG` says otherwise,
/// coloured only on a terminal) and returns the tally that replaces the retry lines.
pub(crate) fn init_logging() -> RetryTally {
    let tally = RetryTally::default();
    let asked = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    let filter = asked
        .then(|| EnvFilter::try_from_default_env().ok())
        .flatten()
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(Paint::stderr().colour())
        .with_filter(filter)
        .with_filter(tracing_subscriber::filter::filter_fn(move |meta| {
            asked || !is_retry(meta)
        }));
    tracing_subscriber::registry()
        .with(tally.clone())
        .with(fmt)
        .init();
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(Paint::decide(true, None).colour());
        assert!(Paint::decide(true, Some(OsStr::new(""))).colour());
        assert!(!Paint::decide(true, Some(OsStr::new("1"))).colour());
        assert!(!Paint::decide(false, None).colour());
        let plain = Paint::decide(false, None);
        assert_eq!(plain.bad("FAILED"), "FAILED");
        assert_eq!(
            Paint::decide(true, None).bad("FAILED"),
            "\x1b[1;31mFAILED\x1b[0m"
        );
    }

    #[test]
    fn retries_become_one_line_with_their_cause() {
        let tally = RetryTally::default();
        assert_eq!(tally.take(), None);
        let with = tracing_subscriber::registry().with(tally.clone());
        tracing::subscriber::with_default(with, || {
            for attempt in 1..=4u32 {
                tracing::warn!(
                    attempt,
                    delay_ms = 1500u64,
                    error = %"Create Container `r`: error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)",
                    "transient Storage failure; retrying"
                );
            }
            // An error value brings its source chain, whatever its own message says.
            let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "os said no");
            tracing::warn!(
                attempt = 5u32,
                delay_ms = 1500u64,
                error = &refused as &(dyn std::error::Error + 'static),
                "transient Storage failure; retrying"
            );
            // Not a retry line: no `delay_ms`.
            tracing::warn!(attempt = 2, "something else");
        });
        // The lines came at once here, so the span is the last pause.
        assert_eq!(
            tally.take().unwrap(),
            "retried 5 times over 1.5 s: connection refused"
        );
        assert_eq!(tally.take(), None, "taking resets the count");
        assert_eq!(
            summary(1, Duration::from_millis(200), "HTTP 503 ServerBusy"),
            "retried once over 0.2 s: HTTP 503 ServerBusy"
        );
    }
}
