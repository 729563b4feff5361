//! The host's side of the custom-handler invocation protocol for a queue trigger
//! (`docs/protocols.md` §4.3): the envelope, built like the host serialises it, and the call
//! to the worker with the host's headers. The envelope is pure.
//!
//! The host passes every value through `GetHttpScriptInvocationContextValue`: objects stay
//! objects, everything else becomes `JsonConvert.SerializeObject(value)`. So the message text
//! (a string) arrives JSON-encoded twice, `DequeueCount` arrives as the string `"1"`, and `Id`
//! and `PopReceipt` as strings that still carry their JSON quotes (`"\"...\""`). Date values
//! are re-parsed `DateTimeOffset`s, serialised as ISO 8601 without fractions.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::process::HOST_VERSION;
use crate::queue::QueueMessage;

/// What the host adds to `Metadata.sys` and when.
#[derive(Debug, Clone)]
pub struct SysMetadata {
    /// `UtcNow`: the invocation time.
    pub utc_now: SystemTime,
    /// `RandGuid`: a fresh GUID per invocation.
    pub rand_guid: String,
}

/// The body the host POSTs to `/<function>` for a queue message whose decoded text is `text`.
pub fn queue_envelope(
    function: &str,
    binding: &str,
    text: &str,
    message: &QueueMessage,
    sys: &SysMetadata,
) -> Value {
    let serialized = |v: &str| Value::String(Value::String(v.to_string()).to_string());
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        "DequeueCount".into(),
        Value::String(message.dequeue_count.to_string()),
    );
    for (key, time) in [
        ("ExpirationTime", message.expiration_time),
        ("InsertionTime", message.insertion_time),
        ("NextVisibleTime", message.next_visible),
    ] {
        if let Some(t) = time {
            metadata.insert(key.into(), Value::String(iso_seconds(t)));
        }
    }
    metadata.insert("Id".into(), serialized(&message.id));
    metadata.insert("PopReceipt".into(), serialized(&message.pop_receipt));
    metadata.insert(
        "sys".into(),
        json!({
            "MethodName": function,
            "UtcNow": iso_fraction(sys.utc_now),
            "RandGuid": sys.rand_guid,
        }),
    );
    json!({
        "Data": { binding: serialized(text) },
        "Metadata": metadata,
    })
}

/// `2025-11-24T22:56:00+00:00`: a `DateTimeOffset` after the host's `Parse(ToString())`.
fn iso_seconds(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]+00:00"
        ))
        .unwrap_or_default()
}

/// `2025-11-24T22:56:00.1234567Z`: a UTC `DateTime` as Json.NET writes it.
fn iso_fraction(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
        ))
        .unwrap_or_default()
}

/// A successful answer: the worker's `Logs`.
pub type InvocationLogs = Vec<String>;

/// Why an invocation failed, and the worker's status when it answered.
#[derive(Debug, Clone)]
pub struct InvocationFailure {
    /// The worker's HTTP status, when it answered.
    pub status: Option<u16>,
    /// What happened.
    pub reason: String,
}

/// POSTs `envelope` to `http://127.0.0.1:<port>/<function>` with the host's headers, as
/// `DefaultHttpWorkerService.ProcessDefaultInvocationRequest` does. A non-2xx answer fails at
/// once and its body, `Logs` included, is never read (`EnsureSuccessStatusCode()` comes
/// first). A 2xx answer with a JSON object succeeds (its `Logs` are returned); an empty or
/// `null` body never completes (the caller's function timeout ends it); anything else fails.
pub async fn invoke(
    http: &reqwest::Client,
    port: u16,
    function: &str,
    invocation_id: &str,
    envelope: &Value,
) -> Result<(u16, InvocationLogs), InvocationFailure> {
    let response = http
        .post(format!("http://127.0.0.1:{port}/{function}"))
        .header("Content-Type", "application/json; charset=utf-8")
        .header("X-Azure-Functions-InvocationId", invocation_id)
        .header("X-Azure-Functions-HostVersion", HOST_VERSION)
        .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
        .body(envelope.to_string())
        .send()
        .await
        .map_err(|e| InvocationFailure {
            status: None,
            reason: format!("no answer from the worker: {}", error_chain(&e)),
        })?;
    let status = response.status();
    let body = response.text().await.map_err(|e| InvocationFailure {
        status: Some(status.as_u16()),
        reason: format!("the worker's answer broke off: {}", error_chain(&e)),
    })?;
    if !status.is_success() {
        return Err(InvocationFailure {
            status: Some(status.as_u16()),
            reason: format!(
                "Response status code does not indicate success: {} ({}). Body: {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                excerpt(&body)
            ),
        });
    }
    match serde_json::from_str::<Value>(&body) {
        // `ReadAsAsync<HttpScriptInvocationResult>` gives null for an empty body (or `null`),
        // and the host completes the invocation only for a non-null result: it hangs until
        // the function timeout fails it.
        _ if body.trim().is_empty() => std::future::pending().await,
        Ok(Value::Null) => std::future::pending().await,
        Ok(Value::Object(o)) => Ok((status.as_u16(), logs_of(&o))),
        _ => Err(InvocationFailure {
            status: Some(status.as_u16()),
            reason: format!(
                "Invalid HttpResponseMessage (not a JSON object): {}",
                excerpt(&body)
            ),
        }),
    }
}

fn logs_of(answer: &serde_json::Map<String, Value>) -> Vec<String> {
    answer
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Logs"))
        .and_then(|(_, v)| v.as_array())
        .map(|logs| {
            logs.iter()
                .map(|l| {
                    l.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| l.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn excerpt(body: &str) -> String {
    const MAX: usize = 500;
    if body.len() <= MAX {
        return body.to_string();
    }
    let mut end = MAX;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &body[..end])
}

/// The error and its sources, e.g. "error sending request: connection refused".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn message() -> QueueMessage {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_024_960); // 2025-11-24T22:56:00Z
        QueueMessage {
            id: "5974b586-0df3-4e2d-ad0c-18e3892bfca2".into(),
            pop_receipt: "AgAAAAMAAAAAAAAA".into(),
            dequeue_count: 2,
            insertion_time: Some(at),
            expiration_time: Some(at + Duration::from_secs(7 * 86_400)),
            next_visible: Some(at + Duration::from_secs(600)),
            text: String::new(),
        }
    }

    #[test]
    fn message_text_is_json_encoded_twice_like_the_host_does() {
        let job = r#"{"eventId":"e1","chunk":0}"#;
        let sys = SysMetadata {
            utc_now: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_024_961_250),
            rand_guid: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
        };
        let envelope = queue_envelope("RecordingTransfer", "job", job, &message(), &sys);
        let data = envelope["Data"]["job"].as_str().unwrap();
        assert_eq!(data, r#""{\"eventId\":\"e1\",\"chunk\":0}""#);
        let once: String = serde_json::from_str(data).unwrap();
        assert_eq!(once, job);
        assert_eq!(
            envelope["Metadata"],
            json!({
                "DequeueCount": "2",
                "Id": "\"5974b586-0df3-4e2d-ad0c-18e3892bfca2\"",
                "PopReceipt": "\"AgAAAAMAAAAAAAAA\"",
                "InsertionTime": "2025-11-24T22:56:00+00:00",
                "ExpirationTime": "2025-12-01T22:56:00+00:00",
                "NextVisibleTime": "2025-11-24T23:06:00+00:00",
                "sys": {
                    "MethodName": "RecordingTransfer",
                    "UtcNow": "2025-11-24T22:56:01.2500000Z",
                    "RandGuid": "0f8fad5b-d9cb-469f-a165-70867728950e"
                }
            })
        );
    }

    #[test]
    fn plain_text_messages_are_quoted_once_more() {
        let sys = SysMetadata {
            utc_now: SystemTime::UNIX_EPOCH,
            rand_guid: "g".into(),
        };
        let envelope = queue_envelope("F", "msg", "say \"hi\"", &message(), &sys);
        assert_eq!(envelope["Data"]["msg"], json!(r#""say \"hi\"""#));
    }
}
