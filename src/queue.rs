//! Queue REST for queue mode: the webhook hands each chunk to `RecordingTransfer` through a
//! Storage queue (Put Message). It shares the Blob client's plumbing (auth, `x-ms-version`,
//! retries, error parsing), since the two services speak the same protocol.

use base64::Engine as _;
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use url::Url;

use crate::blob::client::Operation;
use crate::blob::{BlobClient, BlobError, StorageAuth};
use crate::config::MessageEncoding;
use crate::disposition::Disposition;

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
        source: BlobError,
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
    /// What the caller must do. The webhook answers every enqueue failure with 503 whatever
    /// this says (nothing is acknowledged that was not enqueued); this is for logs.
    pub fn disposition(&self) -> Disposition {
        match self {
            QueueError::Storage { source, .. } => source.disposition(),
            QueueError::TooLarge { .. } => Disposition::Drop,
        }
    }
}

/// Put Message on one queue.
#[derive(Debug, Clone)]
pub struct QueueClient {
    queue: String,
    encoding: MessageEncoding,
    /// The Storage plumbing, pointed at the queue endpoint with the queue as its "container".
    storage: BlobClient,
    /// What built `storage`, for the poison queue's client.
    parts: (reqwest::Client, Url, StorageAuth),
}

impl QueueClient {
    /// A client for `queue` at the Queue service `endpoint` (host-style
    /// `https://acct.queue.core.windows.net` or path-style `http://127.0.0.1:10001/devstoreaccount1`).
    pub fn new(
        http: reqwest::Client,
        endpoint: Url,
        queue: impl Into<String>,
        auth: StorageAuth,
    ) -> Self {
        let queue = queue.into();
        QueueClient {
            storage: BlobClient::new(http.clone(), endpoint.clone(), queue.clone(), auth.clone()),
            queue,
            encoding: MessageEncoding::Base64,
            parts: (http, endpoint, auth),
        }
    }

    /// A client for this queue's poison queue, `<queue>-poison`: where the Functions host
    /// moves a message after `maxDequeueCount` failures, and where a message that can never
    /// succeed is moved at once.
    pub fn poison_queue(&self) -> QueueClient {
        let (http, endpoint, auth) = self.parts.clone();
        QueueClient::new(http, endpoint, format!("{}-poison", self.queue), auth)
            .with_encoding(self.encoding)
    }

    /// Uses another retry policy (tests shorten it).
    pub fn with_retry_policy(mut self, retry: crate::retry::RetryPolicy) -> Self {
        self.storage = self.storage.with_retry_policy(retry);
        self
    }

    /// Writes message text this way (host.json `messageEncoding` must agree).
    pub fn with_encoding(mut self, encoding: MessageEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Whether the queue exists and its messages can be read, by Peek Messages, which changes
    /// nothing: `Ok(false)` on 404 `QueueNotFound`. Needs what the queue trigger needs to read
    /// (Storage Queue Data Reader, or a key or SAS with read permission).
    pub async fn exists(&self) -> Result<bool, QueueError> {
        let reply = self
            .storage
            .send_raw(
                Operation::PeekMessages,
                Some("messages"),
                Method::GET,
                "peekonly=true&numofmessages=1",
                None,
                &[StatusCode::NOT_FOUND],
            )
            .await
            .map_err(|source| self.error(source))?;
        match (reply.status, reply.error_code.as_deref()) {
            (StatusCode::NOT_FOUND, Some("QueueNotFound")) => Ok(false),
            (StatusCode::NOT_FOUND, code) => Err(self.error(BlobError::UnexpectedResponse {
                operation: Operation::PeekMessages,
                blob: self.queue.clone(),
                status: 404,
                request_id: None,
                reason: format!("error code {}", code.unwrap_or("-")),
            })),
            _ => Ok(true),
        }
    }

    /// Creates the queue; an existing queue is fine.
    pub async fn create_queue(&self) -> Result<(), QueueError> {
        self.storage
            .send_raw(
                Operation::CreateQueue,
                None,
                Method::PUT,
                "",
                None,
                &[StatusCode::CONFLICT],
            )
            .await
            .map(|_| ())
            .map_err(|source| self.error(source))
    }

    /// The size of `text` on the wire, as encoded.
    pub fn encoded_len(&self, text: &str) -> usize {
        match self.encoding {
            MessageEncoding::Base64 => text.len().div_ceil(3) * 4,
            MessageEncoding::None => text.len() + text.bytes().map(xml_escape_extra).sum::<usize>(),
        }
    }

    /// Whether `text` fits in one message, as encoded.
    pub fn fits(&self, text: &str) -> bool {
        self.encoded_len(text) <= MAX_MESSAGE_BYTES
    }

    /// Enqueues `text`, encoded as the Functions queue trigger will read it (base64 by
    /// default, or XML-escaped text with `messageEncoding: none`). Creates the queue on first
    /// use. Returns the message id.
    pub async fn put_message(&self, text: &str) -> Result<String, QueueError> {
        if !self.fits(text) {
            return Err(QueueError::TooLarge {
                queue: self.queue.clone(),
                size: self.encoded_len(text),
            });
        }
        let wire = match self.encoding {
            MessageEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(text),
            MessageEncoding::None => xml_escape(text),
        };
        if wire.len() > MAX_MESSAGE_BYTES {
            return Err(QueueError::TooLarge {
                queue: self.queue.clone(),
                size: wire.len(),
            });
        }
        let body = Bytes::from(format!(
            "<QueueMessage><MessageText>{wire}</MessageText></QueueMessage>"
        ));
        let send = || {
            self.storage.send_raw(
                Operation::PutMessage,
                Some("messages"),
                Method::POST,
                "",
                Some(body.clone()),
                &[StatusCode::NOT_FOUND],
            )
        };
        let mut reply = send().await.map_err(|source| self.error(source))?;
        if reply.status == StatusCode::NOT_FOUND
            && reply.error_code.as_deref() == Some("QueueNotFound")
        {
            tracing::info!(queue = %self.queue, "creating the transfer queue");
            self.create_queue().await?;
            reply = send().await.map_err(|source| self.error(source))?;
        }
        if !reply.status.is_success() {
            let code = reply.error_code.unwrap_or_else(|| "-".into());
            return Err(self.error(BlobError::UnexpectedResponse {
                operation: Operation::PutMessage,
                blob: self.queue.clone(),
                status: reply.status.as_u16(),
                request_id: None,
                reason: format!("error code {code}"),
            }));
        }
        Ok(message_id(&reply.body).unwrap_or_default())
    }

    fn error(&self, source: BlobError) -> QueueError {
        QueueError::Storage {
            queue: self.queue.clone(),
            source,
        }
    }
}

/// How many bytes [`xml_escape`] adds for `b`.
fn xml_escape_extra(b: u8) -> usize {
    match b {
        b'&' => 4,
        b'<' | b'>' => 3,
        b'"' | b'\'' => 5,
        _ => 0,
    }
}

/// Escapes the five XML special characters.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `<MessageId>` from a Put Message answer.
fn message_id(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<MessageId>")? + "<MessageId>".len();
    let end = text[start..].find("</MessageId>")? + start;
    Some(text[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_read_from_the_answer() {
        let body = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList><QueueMessage><MessageId>a1b2</MessageId><InsertionTime>x</InsertionTime></QueueMessage></QueueMessagesList>";
        assert_eq!(message_id(body).as_deref(), Some("a1b2"));
        assert_eq!(message_id(b"<nope/>"), None);
    }

    #[test]
    fn plain_text_messages_are_xml_escaped() {
        let text = r#"{"a":"<b>&'"}"#;
        assert_eq!(
            xml_escape(text),
            "{&quot;a&quot;:&quot;&lt;b&gt;&amp;&apos;&quot;}"
        );
        let http = reqwest::Client::new();
        let endpoint = Url::parse("http://127.0.0.1:1/devstoreaccount1").unwrap();
        let auth = StorageAuth::Sas(crate::config::Secret::new(String::new()));
        let q = QueueClient::new(http, endpoint, "q", auth);
        assert_eq!(
            q.encoded_len(text),
            base64::engine::general_purpose::STANDARD.encode(text).len()
        );
        let q = q.with_encoding(MessageEncoding::None);
        assert_eq!(q.encoded_len(text), xml_escape(text).len());
        assert!(q.fits(&"a".repeat(MAX_MESSAGE_BYTES)));
        assert!(!q.fits(&"&".repeat(MAX_MESSAGE_BYTES / 4)));
    }
}
