//! The AWS Lambda front end (`lambda_http`): a function URL or API Gateway route that Event
//! Grid delivers to. It translates the request into a [`WebhookRequest`] and answers with the
//! same [`App`] the Functions handler uses, so every rule about status codes is shared.
//!
//! Lambda has no queue trigger for Azure Storage queues, so run it with `ARCHIVE_MODE=inline`
//! (small recordings; API Gateway cuts requests at 29 s) or let it enqueue for a Functions app
//! that runs `RecordingTransfer`.

use bytes::Bytes;
use lambda_http::{Body, Request, Response};

use crate::app::{App, WebhookRequest};

/// Handles one Lambda HTTP event.
pub async fn handle(app: &App, request: Request) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = match body {
        Body::Empty => Bytes::new(),
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    let answer = app
        .handle_webhook(WebhookRequest {
            method: parts.method,
            headers: parts.headers,
            body,
        })
        .await;
    answer.into_http().map(|text| {
        if text.is_empty() {
            Body::Empty
        } else {
            Body::Text(text)
        }
    })
}
