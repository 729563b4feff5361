//! [`StorageError`]: one failed Storage REST call, Blob or Queue alike, with what support needs
//! to trace it (the resource, HTTP status, the service's error code and request id), and the
//! parsing of the service's error answers (pure).

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::auth::AuthError;
use super::xml;
use crate::disposition::Disposition;
use crate::retry::is_retryable_status;

/// `x-ms-error-code`: the service's error code (also the `<Code>` of the body, when there is one).
pub(crate) const MS_ERROR_CODE: &str = "x-ms-error-code";
/// `x-ms-request-id`: the service's id for the request, for a support case.
pub(crate) const MS_REQUEST_ID: &str = "x-ms-request-id";

/// A Storage call that failed. `operation` names the REST operation ("Put Block"), `resource`
/// the blob, container or queue it was about. URLs in it never carry a SAS signature.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The service answered with an error status.
    #[error("{operation} `{resource}`: HTTP {status} {} (request id {}){} after {attempts} attempt(s)",
        opt(.error_code), opt(.request_id), .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Service {
        /// What was tried.
        operation: &'static str,
        /// The blob, container or queue.
        resource: String,
        /// HTTP status.
        status: u16,
        /// `x-ms-error-code` (or the `<Code>` of the error body).
        error_code: Option<String>,
        /// `x-ms-request-id`.
        request_id: Option<String>,
        /// First line of the service's message.
        message: Option<String>,
        /// Attempts made.
        attempts: u32,
    },
    /// No HTTP answer: connection refused or reset, TLS failure, body cut short.
    #[error("{operation} `{resource}` at {url}: {source} after {attempts} attempt(s)")]
    Transport {
        /// What was tried.
        operation: &'static str,
        /// The blob, container or queue.
        resource: String,
        /// The request URL, with any `sig` redacted.
        url: String,
        /// The client error (its own copy of the URL removed).
        #[source]
        source: reqwest::Error,
        /// Attempts made.
        attempts: u32,
    },
    /// The last attempt got no complete answer within the attempt timeout.
    #[error("{operation} `{resource}`: no answer within {timeout:?} after {attempts} attempt(s)")]
    Timeout {
        /// What was tried.
        operation: &'static str,
        /// The blob, container or queue.
        resource: String,
        /// The per-attempt limit.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// No authorization could be had (e.g. the token endpoint failed).
    #[error("{operation} `{resource}`: cannot authorize: {source}")]
    Auth {
        /// What was tried.
        operation: &'static str,
        /// The blob, container or queue.
        resource: String,
        /// Why.
        #[source]
        source: AuthError,
    },
    /// The request was refused before sending: bad name, metadata or size.
    #[error("{operation} `{resource}`: {reason}")]
    Invalid {
        /// What was tried.
        operation: &'static str,
        /// The blob, container or queue.
        resource: String,
        /// What is wrong.
        reason: String,
    },
    /// The service's answer could not be understood.
    #[error("{operation} `{resource}`: unexpected answer (HTTP {status}, request id {}): {reason}", opt(.request_id))]
    UnexpectedResponse {
        /// What was tried.
        operation: &'static str,
        /// The blob, container or queue.
        resource: String,
        /// HTTP status.
        status: u16,
        /// `x-ms-request-id`.
        request_id: Option<String>,
        /// What was wrong with it.
        reason: String,
    },
}

fn opt(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

impl StorageError {
    /// What the caller must answer.
    ///
    /// Transient failures are retried later. So are refusals that come from *our* storage
    /// setup rather than from the recording: 401/403 (a key rotated, a SAS expired, a role
    /// assignment still propagating), a missing container or queue, and a credential that
    /// cannot be had. Nothing about the chunk is wrong then, and retrying keeps it alive
    /// (Event Grid redelivers for 24 h; the queue keeps it, then poisons it) until the setup is
    /// fixed. Any other 4xx and an invalid request cannot succeed as sent.
    pub fn disposition(&self) -> Disposition {
        match self {
            StorageError::Service { status, .. } if is_retryable_status(*status) => {
                Disposition::Retry
            }
            StorageError::Service {
                status: 401 | 403, ..
            } => Disposition::Retry,
            StorageError::Service {
                error_code: Some(code),
                ..
            } if code == "ContainerNotFound" || code == "QueueNotFound" => Disposition::Retry,
            StorageError::Service { .. } | StorageError::Invalid { .. } => Disposition::Drop,
            StorageError::Auth { .. }
            | StorageError::Transport { .. }
            | StorageError::Timeout { .. }
            | StorageError::UnexpectedResponse { .. } => Disposition::Retry,
        }
    }

    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            StorageError::Service { status, .. }
            | StorageError::UnexpectedResponse { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The service's `x-ms-request-id`, when it answered.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            StorageError::Service { request_id, .. }
            | StorageError::UnexpectedResponse { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// The service's error code (`x-ms-error-code`), when it sent one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            StorageError::Service { error_code, .. } => error_code.as_deref(),
            _ => None,
        }
    }
}

/// What the service said about a failed request: status, error code, request id, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceAnswer {
    pub(crate) status: StatusCode,
    pub(crate) error_code: Option<String>,
    pub(crate) request_id: Option<String>,
    pub(crate) message: Option<String>,
}

impl ServiceAnswer {
    /// Reads an answer's headers and body: the code from `x-ms-error-code`, else from the
    /// `<Code>` of the XML body (HEAD answers have only the header); the message's first line
    /// from the body.
    pub(crate) fn parse(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ServiceAnswer {
        let parsed = std::str::from_utf8(body).ok().and_then(xml::parse_error);
        let (body_code, message) = parsed.unwrap_or_default();
        ServiceAnswer {
            status,
            error_code: header(headers, MS_ERROR_CODE).or(body_code),
            request_id: header(headers, MS_REQUEST_ID),
            message,
        }
    }

    /// The error this answer makes of `operation` on `resource`.
    pub(crate) fn into_error(
        self,
        operation: &'static str,
        resource: &str,
        attempts: u32,
    ) -> StorageError {
        StorageError::Service {
            operation,
            resource: resource.to_string(),
            status: self.status.as_u16(),
            error_code: self.error_code,
            request_id: self.request_id,
            message: self.message,
            attempts,
        }
    }
}

/// A header's value as text, when it is text.
pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn answer(status: u16, code: Option<&str>, body: &str) -> ServiceAnswer {
        let mut headers = HeaderMap::new();
        if let Some(code) = code {
            headers.insert(MS_ERROR_CODE, HeaderValue::from_str(code).unwrap());
        }
        headers.insert(MS_REQUEST_ID, HeaderValue::from_static("req-1"));
        ServiceAnswer::parse(
            StatusCode::from_u16(status).unwrap(),
            &headers,
            body.as_bytes(),
        )
    }

    fn error(status: u16, code: Option<&str>) -> StorageError {
        answer(status, code, "").into_error("Put Block", "b", 1)
    }

    #[test]
    fn the_code_comes_from_the_header_else_from_the_body() {
        let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>QueueNotFound</Code>\
            <Message>The specified queue does not exist.\nRequestId:8a1f</Message></Error>";
        let from_body = answer(404, None, body);
        assert_eq!(from_body.error_code.as_deref(), Some("QueueNotFound"));
        assert_eq!(
            from_body.message.as_deref(),
            Some("The specified queue does not exist.")
        );
        assert_eq!(from_body.request_id.as_deref(), Some("req-1"));
        let from_header = answer(404, Some("BlobNotFound"), body);
        assert_eq!(from_header.error_code.as_deref(), Some("BlobNotFound"));
        let bare = answer(503, None, "Service Unavailable");
        assert_eq!((bare.error_code, bare.message), (None, None));
    }

    #[test]
    fn errors_keep_request_ids_and_map_to_dispositions() {
        let e = answer(503, Some("ServerBusy"), "").into_error("Put Block", "b", 3);
        assert_eq!(e.disposition(), Disposition::Retry);
        assert_eq!(e.request_id(), Some("req-1"));
        assert_eq!(e.error_code(), Some("ServerBusy"));
        assert_eq!(e.status(), Some(503));
        let shown = e.to_string();
        assert!(
            shown.contains("Put Block `b`: HTTP 503 ServerBusy (request id req-1) after 3"),
            "{shown}"
        );
        for status in [400, 404, 409] {
            assert_eq!(
                error(status, None).disposition(),
                Disposition::Drop,
                "{status}"
            );
        }
        // Refusals caused by our own storage setup wait for it to be fixed.
        for status in [401, 403] {
            assert_eq!(
                error(status, None).disposition(),
                Disposition::Retry,
                "{status}"
            );
        }
        for code in ["ContainerNotFound", "QueueNotFound"] {
            assert_eq!(
                error(404, Some(code)).disposition(),
                Disposition::Retry,
                "{code}"
            );
        }
        let e = StorageError::Timeout {
            operation: "Put Block",
            resource: "b".into(),
            timeout: Duration::from_secs(1),
            attempts: 2,
        };
        assert_eq!(e.disposition(), Disposition::Retry);
        assert_eq!(e.request_id(), None);
    }
}
