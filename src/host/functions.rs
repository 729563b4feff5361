//! The Azure Functions custom handler: the HTTP server the Functions host starts and talks to.
//!
//! The host polls `GET /` until any answer arrives (readiness, 30 s at most), then passes each
//! `RecordingWebhook` request on as-is to `/api/RecordingWebhook` (`enableProxyingHttpRequest`,
//! or the legacy `enableForwardingHttpRequest` on older hosts, which drops a body sent without
//! `Content-Length`) with the original query string, which holds the function key: it is never
//! logged. Function routes are matched without regard to case, as the host routes them. The
//! host stops this process with SIGKILL, so nothing here relies on a graceful shutdown.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, Method, StatusCode};
use tracing::Instrument;
use warp::filters::path::FullPath;
use warp::Filter;

use crate::app::{App, WebhookRequest, WebhookResponse};
use crate::eventgrid::DeliveryError;
use crate::host::invocation::{Invocation, InvocationResponse};
use crate::redact;

/// The route the host forwards `RecordingWebhook` requests to (`routePrefix` "api").
pub(crate) const WEBHOOK_PATH: &str = "/api/recordingwebhook";
/// The route the host invokes `RecordingTransfer` (queue trigger) on, with the envelope.
pub(crate) const TRANSFER_PATH: &str = "/recordingtransfer";

/// Largest invocation envelope read: a queue message is at most 64 KiB, base64 and JSON
/// encoding at most double that, plus the metadata.
const MAX_INVOCATION_BYTES: usize = 512 * 1024;

/// Largest over-limit body read and thrown away so that its 413 reaches a client that sends
/// the whole body before it reads (most clients without `Expect: 100-continue`): closing the
/// connection while such a client is still writing resets it, the answer is lost, and a
/// forwarding host turns that into a retried 5xx instead of a dropped 413. Draining costs
/// time, bounded by the body timeout, not memory. Past this the 413 is sent and the
/// connection closed at once.
pub(crate) const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// The warp filter serving every route of the handler; a request body must arrive within
/// `body_timeout`.
pub fn routes(
    app: App,
    body_timeout: Duration,
) -> impl Filter<Extract = (http::Response<String>,), Error = warp::Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(warp::any().map(move || app.clone()))
        .and(warp::any().map(move || body_timeout))
        .then(dispatch)
}

/// Runs one request inside its own span. The span is attached to the future (never entered
/// across an `.await`), so every line logged while this request is polled carries its
/// invocation id, and only its own, however many requests run at once.
async fn dispatch<S, B>(
    method: Method,
    path: FullPath,
    headers: HeaderMap,
    body: S,
    app: App,
    body_timeout: Duration,
) -> http::Response<String>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let invocation = headers
        .get("x-azure-functions-invocationid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let span = tracing::info_span!(
        "request",
        %method,
        path = %redact::id(path.as_str()),
        invocation = %redact::id(invocation),
    );
    handle(method, path, headers, body, app, body_timeout)
        .instrument(span)
        .await
}

async fn handle<S, B>(
    method: Method,
    path: FullPath,
    headers: HeaderMap,
    body: S,
    app: App,
    body_timeout: Duration,
) -> http::Response<String>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let lower = path.as_str().trim_end_matches('/').to_ascii_lowercase();
    let response = match lower.as_str() {
        "" if method == Method::GET || method == Method::HEAD => {
            return plain(StatusCode::OK, "ready")
        }
        "" => WebhookResponse::method_not_allowed(&method),
        WEBHOOK_PATH => {
            tracing::debug!("reading the delivery body");
            let limit = app.max_body_bytes();
            match read_body(&headers, body, limit, body_timeout).await {
                Ok(body) => {
                    app.handle_webhook(WebhookRequest {
                        method,
                        headers,
                        body,
                    })
                    .await
                }
                Err(e) => e.answer(),
            }
        }
        TRANSFER_PATH if method == Method::POST => {
            let read = read_body(&headers, body, MAX_INVOCATION_BYTES, body_timeout).await;
            let (status, reply) = match read {
                Ok(body) => invoke_transfer(&app, &body).await,
                Err(e) => {
                    tracing::error!(error = %e, "RecordingTransfer invocation body refused");
                    (
                        e.status(),
                        InvocationResponse {
                            logs: vec![e.to_string()],
                            ..Default::default()
                        },
                    )
                }
            };
            tracing::info!(status, "invocation answered");
            return WebhookResponse {
                status,
                headers: Vec::new(),
                body: serde_json::to_value(&reply).ok(),
            }
            .into_http();
        }
        _ => {
            return plain(StatusCode::NOT_FOUND, "no function is served at this path");
        }
    };
    tracing::info!(status = response.status, "answered");
    response.into_http()
}

/// The binding name of the `RecordingTransfer` queue trigger (RecordingTransfer/function.json).
pub(crate) const TRANSFER_BINDING: &str = "job";

/// One `RecordingTransfer` invocation: the envelope in, the envelope out. A failed transfer
/// answers 500, which fails the invocation: the host makes the message visible again after
/// `visibilityTimeout` and, after `maxDequeueCount` tries, moves it to `<queue>-poison`.
async fn invoke_transfer(app: &App, body: &[u8]) -> (u16, InvocationResponse) {
    let invocation = match Invocation::parse(body) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "RecordingTransfer invocation is malformed");
            return (
                400,
                InvocationResponse {
                    logs: vec![e.to_string()],
                    ..Default::default()
                },
            );
        }
    };
    let text = match invocation.trigger_text(TRANSFER_BINDING) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "RecordingTransfer invocation has no message");
            return (
                400,
                InvocationResponse {
                    logs: vec![e.to_string()],
                    ..Default::default()
                },
            );
        }
    };
    let message_id = invocation.message_id().unwrap_or_else(|| "-".into());
    let answer = app
        .handle_transfer_message(&text, &message_id, invocation.dequeue_count().unwrap_or(1))
        .await;
    let status = if answer.finished { 200 } else { 500 };
    (
        status,
        InvocationResponse {
            logs: answer.logs,
            ..Default::default()
        },
    )
}

/// Why a request body was not taken.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    /// Too large, or cut off.
    #[error(transparent)]
    Refused(#[from] DeliveryError),
    /// Not complete within the body timeout: the client is stalling.
    #[error("the body did not arrive within {0:?}")]
    TimedOut(Duration),
}

impl BodyError {
    fn status(&self) -> u16 {
        match self {
            BodyError::Refused(e) => e.status(),
            BodyError::TimedOut(_) => 408,
        }
    }

    /// The answer. After 408 the connection is closed: what is left of the body never came.
    fn answer(&self) -> WebhookResponse {
        match self {
            BodyError::Refused(e) => WebhookResponse::from_delivery_error(e),
            BodyError::TimedOut(_) => WebhookResponse {
                status: 408,
                headers: vec![("Connection", "close".into())],
                body: Some(serde_json::json!({ "error": self.to_string() })),
            },
        }
    }
}

/// Reads the body within `timeout`, refusing it as soon as it is known to exceed `limit`
/// (from Content-Length, or while streaming a chunked body), so an oversized body never sits
/// in memory. An oversized body is then read and thrown away, up to [`MAX_DRAIN_BYTES`],
/// unless the client waits for `100 Continue` before sending it (it is never sent).
async fn read_body<S, B>(
    headers: &HeaderMap,
    body: S,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let waits_for_continue = headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut body = std::pin::pin!(body);
    if let Some(size) = declared.filter(|n| *n > limit) {
        if !waits_for_continue && size <= MAX_DRAIN_BYTES {
            drain(body, deadline, 0).await;
        }
        return Err(DeliveryError::TooLarge { size, limit }.into());
    }
    // Sized once from Content-Length (at most `limit`): growing by doubling would hold up to
    // twice the body while it is copied. Pages are only resident once bytes arrive.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
    loop {
        let chunk = match tokio::time::timeout_at(deadline, body.next()).await {
            Err(_) => return Err(BodyError::TimedOut(timeout)),
            Ok(None) => break,
            Ok(Some(chunk)) => chunk.map_err(|e| {
                DeliveryError::MalformedJson(format!("body could not be read: {e}"))
            })?,
        };
        let size = buf.len() + chunk.remaining();
        if size > limit {
            drop(buf);
            drain(body, deadline, size).await;
            return Err(DeliveryError::TooLarge { size, limit }.into());
        }
        let mut chunk = chunk;
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

/// Reads and discards the rest of a body until it ends, `deadline` passes, or `read` (bytes
/// already seen) reaches [`MAX_DRAIN_BYTES`].
async fn drain<S, B>(
    mut body: std::pin::Pin<&mut S>,
    deadline: tokio::time::Instant,
    mut read: usize,
) where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    while read <= MAX_DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => read += chunk.remaining(),
            _ => return,
        }
    }
}

fn plain(status: StatusCode, text: &str) -> http::Response<String> {
    let mut r = http::Response::new(text.to_string());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body as hyper streams it: `chunks` pieces of `size` bytes, or one that never ends.
    fn body_of(
        chunks: usize,
        size: usize,
    ) -> impl Stream<Item = Result<Bytes, warp::Error>> + Send {
        futures_util::stream::iter((0..chunks).map(move |_| Ok(Bytes::from(vec![b' '; size]))))
    }

    #[tokio::test]
    async fn a_chunked_body_over_the_limit_is_refused_while_it_is_read() {
        // No Content-Length: the limit can only be enforced on what has arrived.
        let err = read_body(
            &HeaderMap::new(),
            body_of(48, 64 * 1024),
            2 * 1024 * 1024,
            Duration::from_secs(30),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), 413, "{err}");
        assert!(
            matches!(err, BodyError::Refused(DeliveryError::TooLarge { size, .. }) if size <= 2 * 1024 * 1024 + 64 * 1024),
            "refused at the first chunk past the limit: {err}"
        );
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let body = read_body(
            &HeaderMap::new(),
            body_of(4, 1000),
            4000,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(body.len(), 4000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_408_and_closes_the_connection() {
        let stalled = body_of(1, 10).chain(futures_util::stream::pending());
        let err = read_body(&HeaderMap::new(), stalled, 4000, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 408);
        let answer = err.answer();
        assert!(
            answer
                .headers
                .contains(&("Connection", "close".to_string())),
            "{answer:?}"
        );
    }
}
