//! Misbehaviours the emulator can be told to show, one per request.

use std::time::Duration;

/// One injected misbehaviour, used up by one authenticated request for its recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status, extra headers and body instead of the content.
    Status {
        /// HTTP status.
        status: u16,
        /// Extra headers, e.g. `Retry-After`.
        headers: Vec<(String, String)>,
        /// The body.
        body: String,
        /// Its `Content-Type`.
        content_type: String,
    },
    /// Declare the full `Content-Length`, send this many body bytes, then close the connection.
    CutAfter(u64),
    /// 200 with an empty body, as ACS does after being idle.
    EmptyOk,
    /// Send the body `chunk` bytes at a time, `interval` apart.
    Trickle {
        /// Bytes per write.
        chunk: usize,
        /// Pause between writes.
        interval: Duration,
    },
    /// Ignore `Range` and send the whole object with 200.
    IgnoreRange,
    /// Answer 206 for bytes from this offset, whatever was asked.
    RangeFrom(u64),
}

impl Fault {
    /// `503 Service Unavailable` with `Retry-After: <seconds>`.
    pub fn unavailable(retry_after_secs: u64) -> Fault {
        Fault::Status {
            status: 503,
            headers: vec![("Retry-After".into(), retry_after_secs.to_string())],
            body: r#"{"error":{"code":"ServiceUnavailable","message":"The service is temporarily unavailable."}}"#.into(),
            content_type: "application/json".into(),
        }
    }

    /// `429 Too Many Requests` with `Retry-After: <seconds>`.
    pub fn throttled(retry_after_secs: u64) -> Fault {
        Fault::Status {
            status: 429,
            headers: vec![("Retry-After".into(), retry_after_secs.to_string())],
            body: r#"{"error":{"code":"TooManyRequests","message":"Too many requests."}}"#.into(),
            content_type: "application/json".into(),
        }
    }

    /// A JSON error with this status.
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            headers: Vec::new(),
            body: format!(
                r#"{{"error":{{"code":"Status{status}","message":"Injected by the emulator."}}}}"#
            ),
            content_type: "application/json".into(),
        }
    }

    /// `400 Bad Request` with an HTML page.
    pub fn html_bad_request(page: &str) -> Fault {
        Fault::Status {
            status: 400,
            headers: Vec::new(),
            body: page.to_string(),
            content_type: "text/html; charset=utf-8".into(),
        }
    }
}
