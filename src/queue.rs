//! Queue REST for queue mode: the webhook hands each chunk to `RecordingTransfer` through a
//! Storage queue (Put Message). A thin operation set over the Storage
//! transport ([`crate::storage`]: auth, `x-ms-version`, retries, error parsing), which the Blob
//! client shares.

use base64::Engine as _;
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use url::Url;

use crate::config::MessageEncoding;
use crate::disposition::Disposition;
use crate::retry::RetryPolicy;
use crate::storage::transport::Request;
use crate::storage::{xml, StorageAuth, StorageError, Transport};

/// Largest message the service takes: 64 KiB of message text, as encoded.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Why a message was not enqueued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The Storage call failed (after retries); carries status, error code and request id.
    #[error("queue {queue}: {source}")]
    Storage {
        /// Queue name.
        queue: String,
        /// What the service or network said.
        #[source]
        source: Box<StorageError>,
    },
    /// The message is too large for a queue.
    #[error("queue {queue}: message of {size} bytes (encoded) is over the 64 KiB limit")]
    TooLarge {
        /// Queue name.
        queue: String,
        /// Encoded size.
        size: usize,
    },
}

impl QueueError {
    /// What the caller must do: the Storage failure's own disposition (transient failures and
    /// our own setup, such as a refused credential, are retried), or drop for a message that
    /// can never fit.
    pub fn disposition(&self) -> Disposition {
        match self {
            QueueError::Storage { source, .. } => source.disposition(),
            QueueError::TooLarge { .. } => Disposition::Drop,
        }
    }

    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            QueueError::Storage { source, .. } => source.status(),
            QueueError::TooLarge { .. } => None,
        }
    }

    /// The service's `x-ms-request-id`, when it answered.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            QueueError::Storage { source, .. } => source.request_id(),
            QueueError::TooLarge { .. } => None,
        }
    }
}

/// Queue operations on one queue: Put Message, Create Queue, and the start-up probe.
#[derive(Debug, Clone)]
pub struct QueueClient {
    transport: Transport,
    queue: String,
    encoding: MessageEncoding,
}

impl QueueClient {
    /// A client for `queue` at the Queue service `endpoint` (host-style
    /// `https://acct.queue.core.windows.net` or path-style `http://127.0.0.1:10001/devstoreaccount1`).
    pub(crate) fn new(
        http: reqwest::Client,
        endpoint: Url,
        queue: impl Into<String>,
        auth: StorageAuth,
    ) -> Self {
        QueueClient {
            transport: Transport::new(http, endpoint, auth),
            queue: queue.into(),
            encoding: MessageEncoding::Base64,
        }
    }

    /// A client for this queue's poison queue, `<queue>-poison`: where the Functions host
    /// moves a message after `maxDequeueCount` failures, and where a message that can never
    /// succeed is moved at once. It shares this client's transport and retry policy.
    pub(crate) fn poison_queue(&self) -> QueueClient {
        QueueClient {
            queue: format!("{}-poison", self.queue),
            ..self.clone()
        }
    }

    /// Uses another retry policy (tests shorten it).
    pub(crate) fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.transport = self.transport.with_retry_policy(retry);
        self
    }

    /// Writes message text this way (host.json `messageEncoding` must agree).
    pub(crate) fn with_encoding(mut self, encoding: MessageEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The queue's name.
    pub(crate) fn queue(&self) -> &str {
        &self.queue
    }

    /// Whether the queue exists and its messages can be read, by Peek Messages, which changes
    /// nothing: `Ok(false)` on 404 `QueueNotFound`. Needs what the queue trigger needs to read
    /// (Storage Queue Data Reader, or a key or SAS with read permission).
    pub(crate) async fn exists(&self) -> Result<bool, QueueError> {
        let request = self
            .request(
                "Peek Messages",
                Method::GET,
                "messages",
                "peekonly=true&numofmessages=1",
            )
            .map_err(|source| self.error(source))?
            .expect(&[StatusCode::NOT_FOUND]);
        let response = self.send(&request).await?;
        match (response.status, response.error_code().as_deref()) {
            (StatusCode::NOT_FOUND, Some("QueueNotFound")) => Ok(false),
            (StatusCode::NOT_FOUND, _) => Err(self.error(request.service_error(&response))),
            _ => Ok(true),
        }
    }

    /// Creates the queue; an existing queue is fine.
    pub(crate) async fn create_queue(&self) -> Result<(), QueueError> {
        let request = self
            .request("Create Queue", Method::PUT, "", "")
            .map_err(|source| self.error(source))?
            .expect(&[StatusCode::CONFLICT]);
        self.send(&request).await.map(drop)
    }

    /// The size of `text` on the wire, as encoded.
    pub(crate) fn encoded_len(&self, text: &str) -> usize {
        match self.encoding {
            MessageEncoding::Base64 => text.len().div_ceil(3) * 4,
            MessageEncoding::None => {
                text.len() + text.bytes().map(xml::escape_extra).sum::<usize>()
            }
        }
    }

    /// Whether `text` fits in one message, as encoded.
    pub(crate) fn fits(&self, text: &str) -> bool {
        self.encoded_len(text) <= MAX_MESSAGE_BYTES
    }

    /// Enqueues `text`, encoded as the Functions queue trigger will read it (base64 by
    /// default, or XML-escaped text with `messageEncoding: none`). Creates the queue on first
    /// use. Returns the message id.
    pub(crate) async fn put_message(&self, text: &str) -> Result<String, QueueError> {
        if !self.fits(text) {
            return Err(QueueError::TooLarge {
                queue: self.queue.clone(),
                size: self.encoded_len(text),
            });
        }
        let wire = match self.encoding {
            MessageEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(text),
            MessageEncoding::None => xml::escape(text),
        };
        let body = Bytes::from(format!(
            "<QueueMessage><MessageText>{wire}</MessageText></QueueMessage>"
        ));
        let request = self
            .request("Put Message", Method::POST, "messages", "")
            .map_err(|source| self.error(source))?
            .body(body)
            .expect(&[StatusCode::NOT_FOUND]);
        let mut response = self.send(&request).await?;
        if response.status == StatusCode::NOT_FOUND
            && response.error_code().as_deref() == Some("QueueNotFound")
        {
            tracing::info!(queue = %self.queue, "creating the transfer queue");
            self.create_queue().await?;
            response = self.send(&request).await?;
        }
        if !response.status.is_success() {
            return Err(self.error(request.service_error(&response)));
        }
        let text = String::from_utf8_lossy(&response.body);
        Ok(xml::element_text(&text, "MessageId").unwrap_or_default())
    }

    /// A request for `operation` on `queue[/path]`.
    fn request(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &str,
    ) -> Result<Request, StorageError> {
        let path = match path {
            "" => self.queue.clone(),
            path => format!("{}/{path}", self.queue),
        };
        self.transport
            .request(operation, &self.queue, method, &path, query)
    }

    async fn send(
        &self,
        request: &Request,
    ) -> Result<crate::storage::transport::Response, QueueError> {
        self.transport
            .send(request)
            .await
            .map_err(|source| self.error(source))
    }

    fn error(&self, source: StorageError) -> QueueError {
        QueueError::Storage {
            queue: self.queue.clone(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_sizes_follow_the_encoding() {
        let text = r#"{"a":"<b>&'"}"#;
        let http = reqwest::Client::new();
        let endpoint = Url::parse("http://127.0.0.1:1/devstoreaccount1").unwrap();
        let auth = StorageAuth::Sas(crate::config::Secret::new(String::new()));
        let q = QueueClient::new(http, endpoint, "q", auth);
        assert_eq!(
            q.encoded_len(text),
            base64::engine::general_purpose::STANDARD.encode(text).len()
        );
        let q = q.with_encoding(MessageEncoding::None);
        assert_eq!(q.encoded_len(text), xml::escape(text).len());
        assert!(q.fits(&"a".repeat(MAX_MESSAGE_BYTES)));
        assert!(!q.fits(&"&".repeat(MAX_MESSAGE_BYTES / 4)));
    }

    #[test]
    fn requests_address_the_queue_and_the_poison_queue() {
        let endpoint = Url::parse("http://127.0.0.1:10001/devstoreaccount1").unwrap();
        let auth = StorageAuth::Sas(crate::config::Secret::new("sig=hidden".into()));
        let q = QueueClient::new(reqwest::Client::new(), endpoint, "transfers", auth);
        let put = q
            .request("Put Message", Method::POST, "messages", "")
            .unwrap();
        assert_eq!(
            put.url.as_str(),
            "http://127.0.0.1:10001/devstoreaccount1/transfers/messages"
        );
        let poison = q.poison_queue();
        assert_eq!(poison.queue(), "transfers-poison");
        let create = poison.request("Create Queue", Method::PUT, "", "").unwrap();
        assert_eq!(
            create.url.as_str(),
            "http://127.0.0.1:10001/devstoreaccount1/transfers-poison"
        );
        assert_eq!(create.resource, "transfers-poison");
    }
}
