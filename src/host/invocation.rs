//! The custom-handler invocation protocol, for functions the host does not forward as raw
//! HTTP (here: the `RecordingTransfer` queue trigger). Pure.
//!
//! The host POSTs `{"Data": {<binding>: value}, "Metadata": {...}}` to `/<FunctionName>` and
//! expects `{"Outputs": {}, "Logs": [], "ReturnValue": ...}` back; any non-2xx answer fails
//! the invocation, which is what drives the queue's retries and its poison queue.
//!
//! The host serialises a string trigger value (a queue message) with `JsonConvert` when it
//! cannot make an object of it, so the message text can arrive JSON-encoded twice. Both forms
//! are accepted (`trigger_text`).

use serde::Serialize;
use serde_json::{Map, Value};

/// Why an invocation envelope is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not a JSON object.
    #[error("invocation body is not a JSON object: {0}")]
    NotJson(String),
    /// `Data.<binding>` is missing.
    #[error("invocation has no Data.{0}")]
    MissingBinding(String),
}

/// A parsed invocation request.
#[derive(Debug, Clone)]
pub struct Invocation {
    data: Map<String, Value>,
    metadata: Map<String, Value>,
}

impl Invocation {
    /// Parses the host's request body.
    pub fn parse(body: &[u8]) -> Result<Invocation, EnvelopeError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        let Value::Object(mut obj) = value else {
            return Err(EnvelopeError::NotJson("expected an object".into()));
        };
        let mut take = |name: &str| match obj.remove(name) {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Ok(Invocation {
            data: take("Data"),
            metadata: take("Metadata"),
        })
    }

    /// The text of the trigger value bound as `binding` (see the module docs for the double
    /// encoding). An object value is returned as its JSON text.
    pub(crate) fn trigger_text(&self, binding: &str) -> Result<String, EnvelopeError> {
        let value = self
            .data
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(binding))
            .map(|(_, v)| v)
            .ok_or_else(|| EnvelopeError::MissingBinding(binding.to_string()))?;
        Ok(trigger_text(value))
    }

    /// `Metadata.DequeueCount`: how many times the queue message has been handed out.
    pub fn dequeue_count(&self) -> Option<u64> {
        self.meta("DequeueCount").and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim_matches('"').parse().ok()))
        })
    }

    /// `Metadata.Id`: the queue message id.
    pub fn message_id(&self) -> Option<String> {
        self.meta("Id")
            .and_then(|v| v.as_str())
            .map(|s| s.trim_matches('"').to_string())
    }

    fn meta(&self, name: &str) -> Option<&Value> {
        self.metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// The text of a trigger value: a plain string, a string holding a JSON string (doubly
/// encoded), or an object (returned as its JSON text).
pub(crate) fn trigger_text(value: &Value) -> String {
    match value {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::String(inner)) => inner,
            _ => s.clone(),
        },
        other => other.to_string(),
    }
}

/// The answer to an invocation.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct InvocationResponse {
    /// Output bindings (none here).
    pub(crate) outputs: Map<String, Value>,
    /// Lines the host copies into its own log for this invocation, on a 2xx answer only: the
    /// host calls `EnsureSuccessStatusCode()` before it reads the body
    /// (`DefaultHttpWorkerService.ProcessDefaultInvocationRequest`), so whatever a failure
    /// answer says must also be logged on stderr, which is where the host sees it.
    pub logs: Vec<String>,
    /// The `$return` binding's value (unused: `null`).
    pub(crate) return_value: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_text_is_read_in_every_encoding_the_host_uses() {
        let job = r#"{"eventId":"e"}"#;
        let single = json!({"Data": {"job": job}, "Metadata": {}});
        let double = json!({"Data": {"job": serde_json::to_string(job).unwrap()}, "Metadata": {}});
        let object = json!({"Data": {"job": {"eventId": "e"}}, "Metadata": {}});
        for envelope in [single, double, object] {
            let inv = Invocation::parse(envelope.to_string().as_bytes()).unwrap();
            assert_eq!(inv.trigger_text("job").unwrap(), job, "{envelope}");
        }
    }

    #[test]
    fn queue_metadata_is_read_as_numbers_or_strings() {
        let inv = Invocation::parse(
            br#"{"Data":{"job":"x"},"Metadata":{"DequeueCount":"3","Id":"\"m-1\""}}"#,
        )
        .unwrap();
        assert_eq!(inv.dequeue_count(), Some(3));
        assert_eq!(inv.message_id().as_deref(), Some("m-1"));
        let inv =
            Invocation::parse(br#"{"Data":{"job":"x"},"Metadata":{"dequeueCount":2}}"#).unwrap();
        assert_eq!(inv.dequeue_count(), Some(2));
    }

    #[test]
    fn missing_binding_and_bad_json_are_errors() {
        let inv = Invocation::parse(br#"{"Data":{},"Metadata":{}}"#).unwrap();
        assert_eq!(
            inv.trigger_text("job"),
            Err(EnvelopeError::MissingBinding("job".into()))
        );
        assert!(Invocation::parse(b"[1]").is_err());
        assert!(Invocation::parse(b"{").is_err());
    }

    #[test]
    fn response_uses_the_host_field_names() {
        let r = InvocationResponse {
            logs: vec!["archived".into()],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(r).unwrap(),
            json!({"Outputs": {}, "Logs": ["archived"], "ReturnValue": null})
        );
    }
}
