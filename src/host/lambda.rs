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
    let mut builder = Response::builder().status(answer.status);
    if answer.body.is_some() {
        builder = builder.header(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        );
    }
    for (name, value) in &answer.headers {
        builder = builder.header(*name, value);
    }
    let text = answer.body_text();
    builder
        .body(if text.is_empty() {
            Body::Empty
        } else {
            Body::Text(text)
        })
        .unwrap_or_else(|_| {
            let mut r = Response::new(Body::Empty);
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
}
