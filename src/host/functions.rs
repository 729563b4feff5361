//! The Azure Functions custom handler: the HTTP server the Functions host starts and talks to.
//!
//! The host polls `GET /` until any answer arrives (readiness), then forwards each
//! `RecordingWebhook` request as-is to `/api/RecordingWebhook` (`enableForwardingHttpRequest`,
//! host.json) with the original query string, which holds the function key: it is never
//! logged. Function routes are matched without regard to case, as the host routes them.

use std::future::Future;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, Method, StatusCode};
use tokio::net::TcpListener;
use tracing::Instrument;
use warp::filters::path::FullPath;
use warp::Filter;

use crate::app::{App, WebhookRequest, WebhookResponse};
use crate::eventgrid::DeliveryError;
use crate::host::invocation::{Invocation, InvocationResponse};
use crate::redact;

/// The route the host forwards `RecordingWebhook` requests to (`routePrefix` "api").
pub const WEBHOOK_PATH: &str = "/api/recordingwebhook";
/// The route the host invokes `RecordingTransfer` (queue trigger) on, with the envelope.
pub const TRANSFER_PATH: &str = "/recordingtransfer";

/// Largest invocation envelope read: a queue message is at most 64 KiB, base64 and JSON
/// encoding at most double that, plus the metadata.
const MAX_INVOCATION_BYTES: usize = 512 * 1024;

/// How long in-flight requests may run on after SIGTERM or Ctrl-C before the process exits
/// anyway. Only for runs outside the Functions host, which kills its worker outright.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The warp filter serving every route of the handler.
pub fn routes(
    app: App,
) -> impl Filter<Extract = (http::Response<String>,), Error = warp::Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(warp::any().map(move || app.clone()))
        .then(dispatch)
}

/// Serves on `listener` until `shutdown` completes, then lets in-flight requests finish for
/// at most `grace`.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = warp::serve(routes(app))
        .incoming(listener)
        .graceful(async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        })
        .run();
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => return,
        _ = stopping_rx => tracing::info!("shutting down: finishing in-flight requests"),
    }
    if tokio::time::timeout(grace, server).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight requests did not finish in time; exiting anyway"
        );
    }
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
    handle(method, path, headers, body, app)
        .instrument(span)
        .await
}

async fn handle<S, B>(
    method: Method,
    path: FullPath,
    headers: HeaderMap,
    body: S,
    app: App,
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
            match read_body(&headers, body, limit).await {
                Ok(body) => {
                    app.handle_webhook(WebhookRequest {
                        method,
                        headers,
                        body,
                    })
                    .await
                }
                Err(e) => WebhookResponse::from_delivery_error(&e),
            }
        }
        TRANSFER_PATH if method == Method::POST => {
            let (status, reply) = match read_body(&headers, body, MAX_INVOCATION_BYTES).await {
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
pub const TRANSFER_BINDING: &str = "job";

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

/// Reads the body, refusing it as soon as it is known to exceed `limit` (from Content-Length,
/// or while streaming a chunked body), so an oversized body never sits in memory.
async fn read_body<S, B>(headers: &HeaderMap, body: S, limit: usize) -> Result<Bytes, DeliveryError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = declared.filter(|n| *n > limit) {
        return Err(DeliveryError::TooLarge { size, limit });
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0));
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk
            .map_err(|e| DeliveryError::MalformedJson(format!("body could not be read: {e}")))?;
        if buf.len() + chunk.remaining() > limit {
            return Err(DeliveryError::TooLarge {
                size: buf.len() + chunk.remaining(),
                limit,
            });
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
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
