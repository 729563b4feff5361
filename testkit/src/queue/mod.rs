//! A small Azure Storage Queue REST client with its own SharedKey signer, for the Functions
//! host emulator's queue listeners and for tests that put or inspect messages. Speaks to
//! Azurite (path-style URLs) or a real account.
//!
//! | file | job |
//! |---|---|
//! | `account.rs` | connection strings (`UseDevelopmentStorage=true` and the explicit form) |
//! | `sign.rs` | SharedKey string-to-sign and `Authorization` (pure) |
//! | `xml.rs` | message lists, error bodies, the Put Message body (pure) |
//! | here | the operations: create queue, put, get, peek, update visibility, delete, count |

mod account;
mod sign;
mod xml;

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use reqwest::{Method, StatusCode, Url};

pub use account::{
    ConnectionStringError, StorageAccount, AZURITE_ACCOUNT, AZURITE_KEY, AZURITE_QUEUE_ENDPOINT,
};
pub use sign::{authorization, string_to_sign};
pub use xml::QueueMessage;

/// The REST API version sent with every request: accepted by Azurite 3.35 and the service.
pub const API_VERSION: &str = "2021-08-06";
/// Retries after the first attempt (Azure.Core `RetryOptions.MaxRetries`).
const MAX_RETRIES: u32 = 3;
/// The first back-off, doubled after each retry (Azure.Core `RetryOptions.Delay`).
const RETRY_DELAY: Duration = Duration::from_millis(800);

/// How message text is encoded on the wire (host.json `extensions.queues.messageEncoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageEncoding {
    /// Base64 of the UTF-8 text: the host's default.
    #[default]
    Base64,
    /// The text itself (XML-escaped in the request body).
    None,
}

impl MessageEncoding {
    /// The wire form of `text`.
    pub fn encode(self, text: &str) -> String {
        match self {
            MessageEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(text),
            MessageEncoding::None => text.to_string(),
        }
    }

    /// The text of a wire form. Base64 is decoded like .NET's `Convert.FromBase64String`
    /// (whitespace ignored, padding required); invalid UTF-8 is replaced, as `BinaryData`
    /// does.
    pub fn decode(self, wire: &str) -> Result<String, String> {
        match self {
            MessageEncoding::None => Ok(wire.to_string()),
            MessageEncoding::Base64 => {
                let compact: String = wire.chars().filter(|c| !c.is_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    .map_err(|e| format!("message text is not valid base64 ({e})"))
            }
        }
    }
}

impl std::str::FromStr for MessageEncoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "base64" => Ok(MessageEncoding::Base64),
            "none" => Ok(MessageEncoding::None),
            other => Err(format!("expected `base64` or `none`, got `{other}`")),
        }
    }
}

/// A failed queue operation, with the queue, the HTTP status, the service's error code and
/// request id when the service answered.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The service answered with an error status.
    #[error("{op} on queue `{queue}`: HTTP {status} {code} (request id {request_id}): {message}")]
    Service {
        /// The operation, e.g. "Get Messages".
        op: &'static str,
        /// The queue name.
        queue: String,
        /// HTTP status.
        status: u16,
        /// `x-ms-error-code` or the body's `<Code>`.
        code: String,
        /// `x-ms-request-id`.
        request_id: String,
        /// The body's `<Message>`.
        message: String,
    },
    /// No answer (connection refused, reset, timeout).
    #[error("{op} on queue `{queue}`: {source}")]
    Transport {
        /// The operation.
        op: &'static str,
        /// The queue name.
        queue: String,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// A success status with a body or headers this client cannot read.
    #[error("{op} on queue `{queue}`: unexpected answer: {detail}")]
    Unexpected {
        /// The operation.
        op: &'static str,
        /// The queue name.
        queue: String,
        /// What was wrong.
        detail: String,
    },
}

impl QueueError {
    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            QueueError::Service { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The service's error code, when it answered, e.g. `QueueNotFound`, `MessageNotFound`,
    /// `PopReceiptMismatch`.
    pub fn code(&self) -> Option<&str> {
        match self {
            QueueError::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether another attempt may succeed: no answer at all, or a status the Azure SDK's
    /// retry policy retries (408, 429, 500, 502, 503, 504).
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Transport { .. } => true,
            QueueError::Service { status, .. } => {
                matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
            }
            QueueError::Unexpected { .. } => false,
        }
    }

    /// The message, its pop receipt or the queue is gone: nothing left to complete (the host
    /// ignores these when it deletes or releases a message).
    pub fn is_gone(&self) -> bool {
        matches!(self.status(), Some(404))
            || matches!(
                self.code(),
                Some("PopReceiptMismatch" | "QueueBeingDeleted" | "QueueDisabled")
            )
    }
}

/// What Update Message returns: the new pop receipt and when the message reappears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateReceipt {
    /// `x-ms-popreceipt`: replaces the message's previous pop receipt.
    pub pop_receipt: String,
    /// `x-ms-time-next-visible`.
    pub next_visible: Option<SystemTime>,
}

/// A Queue service client for one account. Cheap to clone.
#[derive(Clone, Debug)]
pub struct QueueClient {
    account: StorageAccount,
    http: reqwest::Client,
}

impl QueueClient {
    /// A client for `account`.
    pub fn new(account: StorageAccount) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a default reqwest client builds");
        QueueClient { account, http }
    }

    /// A client for the account a connection string names.
    pub fn from_connection_string(text: &str) -> Result<Self, ConnectionStringError> {
        StorageAccount::from_connection_string(text).map(Self::new)
    }

    /// The account.
    pub fn account(&self) -> &StorageAccount {
        &self.account
    }

    /// Create Queue. `Ok(true)` when created, `Ok(false)` when it already existed.
    pub async fn create_queue(&self, queue: &str) -> Result<bool, QueueError> {
        let op = "Create Queue";
        let url = self.url(queue, "", &[]);
        let status = self.send(op, queue, Method::PUT, url, None).await?.status();
        Ok(status == StatusCode::CREATED)
    }

    /// Put Message: `wire_text` is stored as given (encode it first with [`MessageEncoding`]).
    pub async fn put_message(
        &self,
        queue: &str,
        wire_text: &str,
    ) -> Result<QueueMessage, QueueError> {
        let op = "Put Message";
        let url = self.url(queue, "/messages", &[]);
        let body = xml::put_message_body(wire_text);
        let text = self.send(op, queue, Method::POST, url, Some(body)).await?;
        let text = read_text(op, queue, text).await?;
        xml::parse_messages(&text)
            .pop()
            .ok_or_else(|| QueueError::Unexpected {
                op,
                queue: queue.to_string(),
                detail: format!("no QueueMessage in {text}"),
            })
    }

    /// Get Messages: up to `count` (1-32) visible messages, each made invisible for
    /// `visibility` (the peek-lock) and its dequeue count incremented.
    pub async fn get_messages(
        &self,
        queue: &str,
        count: u32,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>, QueueError> {
        let op = "Get Messages";
        let url = self.url(
            queue,
            "/messages",
            &[
                ("numofmessages", count.clamp(1, 32).to_string()),
                ("visibilitytimeout", visibility.as_secs().max(1).to_string()),
            ],
        );
        let response = self.send(op, queue, Method::GET, url, None).await?;
        Ok(xml::parse_messages(&read_text(op, queue, response).await?))
    }

    /// Peek Messages: up to `count` visible messages, leaving them untouched.
    pub async fn peek_messages(
        &self,
        queue: &str,
        count: u32,
    ) -> Result<Vec<QueueMessage>, QueueError> {
        let op = "Peek Messages";
        let url = self.url(
            queue,
            "/messages",
            &[
                ("peekonly", "true".to_string()),
                ("numofmessages", count.clamp(1, 32).to_string()),
            ],
        );
        let response = self.send(op, queue, Method::GET, url, None).await?;
        Ok(xml::parse_messages(&read_text(op, queue, response).await?))
    }

    /// Update Message (visibility only): the message stays invisible for `visibility` from
    /// now; 0 makes it visible at once. Returns the new pop receipt.
    pub async fn update_visibility(
        &self,
        queue: &str,
        message_id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> Result<UpdateReceipt, QueueError> {
        let op = "Update Message";
        let url = self.url(
            queue,
            &format!("/messages/{message_id}"),
            &[
                ("popreceipt", pop_receipt.to_string()),
                ("visibilitytimeout", visibility.as_secs().to_string()),
            ],
        );
        let response = self.send(op, queue, Method::PUT, url, None).await?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let pop_receipt = header("x-ms-popreceipt").ok_or_else(|| QueueError::Unexpected {
            op,
            queue: queue.to_string(),
            detail: "no x-ms-popreceipt header".into(),
        })?;
        Ok(UpdateReceipt {
            pop_receipt,
            next_visible: header("x-ms-time-next-visible")
                .and_then(|t| httpdate::parse_http_date(&t).ok()),
        })
    }

    /// Delete Message.
    pub async fn delete_message(
        &self,
        queue: &str,
        message_id: &str,
        pop_receipt: &str,
    ) -> Result<(), QueueError> {
        let op = "Delete Message";
        let url = self.url(
            queue,
            &format!("/messages/{message_id}"),
            &[("popreceipt", pop_receipt.to_string())],
        );
        self.send(op, queue, Method::DELETE, url, None).await?;
        Ok(())
    }

    /// The approximate number of messages in the queue, visible or not (Get Queue Metadata).
    pub async fn approximate_count(&self, queue: &str) -> Result<u64, QueueError> {
        let op = "Get Queue Metadata";
        let url = self.url(queue, "", &[("comp", "metadata".to_string())]);
        let response = self.send(op, queue, Method::GET, url, None).await?;
        response
            .headers()
            .get("x-ms-approximate-messages-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| QueueError::Unexpected {
                op,
                queue: queue.to_string(),
                detail: "no x-ms-approximate-messages-count header".into(),
            })
    }

    fn url(&self, queue: &str, suffix: &str, query: &[(&str, String)]) -> Url {
        let base = self.account.queue_endpoint().as_str().trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}/{queue}{suffix}"))
            .expect("queue endpoint and queue name make a URL");
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// Sends one operation, signed anew for each attempt, and retried as the host's queue
    /// client retries it. The Functions host reaches its queues through the Azure SDK, whose
    /// pipeline retries a request that got no answer (connection refused or reset, a pooled
    /// connection the server closed as it was reused, a timeout) or a 408, 429, 500, 502, 503
    /// or 504, 3 times with exponential back-off from 0.8 s (Azure.Core's defaults, stated in
    /// azure-sdk-for-net `sdk/core/Azure.Core/samples/Configuration.md`). A Delete Message or release sent once and lost would leave the message
    /// locked for the 10-minute peek-lock, where the real host would have retried it.
    async fn send(
        &self,
        op: &'static str,
        queue: &str,
        method: Method,
        url: Url,
        body: Option<String>,
    ) -> Result<reqwest::Response, QueueError> {
        let body = body.unwrap_or_default();
        let mut delay = RETRY_DELAY;
        for _ in 0..MAX_RETRIES {
            match answer(op, queue, self.signed(&method, &url, &body)).await {
                Err(e) if e.is_transient() => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                result => return result,
            }
        }
        answer(op, queue, self.signed(&method, &url, &body)).await
    }

    /// The request, signed now (SharedKey covers `x-ms-date`).
    fn signed(&self, method: &Method, url: &Url, body: &str) -> reqwest::RequestBuilder {
        let mut headers = vec![
            (
                "x-ms-date".to_string(),
                httpdate::fmt_http_date(SystemTime::now()),
            ),
            ("x-ms-version".to_string(), API_VERSION.to_string()),
            ("content-length".to_string(), body.len().to_string()),
        ];
        if !body.is_empty() {
            headers.push((
                "content-type".to_string(),
                "application/xml; charset=utf-8".to_string(),
            ));
        }
        let sts = string_to_sign(self.account.name(), method.as_str(), url, &headers);
        let auth = authorization(self.account.name(), self.account.key(), &sts);
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header("Authorization", auth);
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        request.body(body.to_string())
    }
}

/// Sends one attempt; any non-2xx answer becomes [`QueueError::Service`].
async fn answer(
    op: &'static str,
    queue: &str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, QueueError> {
    let response = request
        .send()
        .await
        .map_err(|source| QueueError::Transport {
            op,
            queue: queue.to_string(),
            source,
        })?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (request_id, header_code) = (header("x-ms-request-id"), header("x-ms-error-code"));
    let text = response.text().await.unwrap_or_default();
    let (code, message) = xml::parse_error(&text);
    Err(QueueError::Service {
        op,
        queue: queue.to_string(),
        status,
        code: code.unwrap_or(header_code),
        request_id,
        message: message.unwrap_or(text),
    })
}

async fn read_text(
    op: &'static str,
    queue: &str,
    response: reqwest::Response,
) -> Result<String, QueueError> {
    response
        .text()
        .await
        .map_err(|source| QueueError::Transport {
            op,
            queue: queue.to_string(),
            source,
        })
}

/// Whether `name` is a valid queue name: 3-63 lower-case letters, digits and single hyphens,
/// starting and ending with a letter or digit.
pub fn is_valid_queue_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that hangs up on the first connection without answering, then answers
    /// `status` on each later one. Returns its endpoint and a count of connections.
    async fn hang_up_once(
        status: &'static str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/devstoreaccount1", listener.local_addr().unwrap());
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                if count.fetch_add(1, Ordering::SeqCst) == 0 {
                    let mut head = [0u8; 4096];
                    let _ = socket.read(&mut head).await;
                    continue; // dropped: the request gets no answer
                }
                let mut head = [0u8; 4096];
                let _ = socket.read(&mut head).await;
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (endpoint, connections)
    }

    #[tokio::test]
    async fn a_request_that_got_no_answer_is_sent_again_as_the_sdk_does() {
        let (endpoint, connections) = hang_up_once("201 Created").await;
        let client = QueueClient::new(StorageAccount::azurite(&endpoint).unwrap());
        assert!(client.create_queue("jobs").await.unwrap(), "created");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried() {
        let (endpoint, connections) = hang_up_once("403 Forbidden").await;
        let client = QueueClient::new(StorageAccount::azurite(&endpoint).unwrap());
        let error = client.create_queue("jobs").await.unwrap_err();
        assert_eq!(error.status(), Some(403));
        assert!(!error.is_transient());
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn base64_encoding_round_trips_and_rejects_raw_text() {
        let text = r#"{"eventId":"e1"}"#;
        let wire = MessageEncoding::Base64.encode(text);
        assert_eq!(wire, "eyJldmVudElkIjoiZTEifQ==");
        assert_eq!(MessageEncoding::Base64.decode(&wire).unwrap(), text);
        assert!(MessageEncoding::Base64.decode(text).is_err());
        assert_eq!(MessageEncoding::None.decode(text).unwrap(), text);
        assert_eq!("None".parse::<MessageEncoding>(), Ok(MessageEncoding::None));
        assert!("utf8".parse::<MessageEncoding>().is_err());
    }

    #[test]
    fn queue_names_follow_the_service_rules() {
        assert!(is_valid_queue_name("recording-transfers"));
        assert!(is_valid_queue_name("recording-transfers-poison"));
        for bad in ["ab", "Upper", "-lead", "trail-", "dou--ble", "under_score"] {
            assert!(!is_valid_queue_name(bad), "{bad}");
        }
    }
}
