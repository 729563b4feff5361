//! The AWS Lambda front end (`lambda_http`): a function URL or API Gateway route that Event
//! Grid delivers to. It translates the request into a `WebhookRequest` and answers with the
//! same [`App`] the Functions handler uses, so every rule about status codes is shared.
//!
//! Unlike the Functions host, nothing in front of a function URL checks a key, so this front
//! end does it itself, the way Functions does: a key from `WEBHOOK_KEYS` in `?code=` or in the
//! `x-functions-key` header, for every method, compared in constant time; 401 otherwise. Event
//! Grid drops a delivery answered 401, so a wrong key in a subscription fails loudly instead of
//! being retried for a day.
//!
//! Lambda has no queue trigger for Azure Storage queues, so run it with `ARCHIVE_MODE=inline`
//! (small recordings; API Gateway cuts requests at 29 s) or let it enqueue for a Functions app
//! that runs `RecordingTransfer`.

use bytes::Bytes;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::app::{App, WebhookRequest, WebhookResponse};
use crate::config::WebhookAuth;
use crate::redact;

/// The paths the webhook answers at, compared without case or a trailing `/`: the root (a
/// function URL) and the Functions route, so one subscription URL shape serves both front ends.
const WEBHOOK_PATHS: [&str; 2] = ["", "/api/recordingwebhook"];

/// Handles one Lambda HTTP event.
pub async fn handle(app: &App, auth: &WebhookAuth, request: Request) -> Response<Body> {
    // The path as the client sent it: API Gateway REST puts the stage in the URI, not here.
    let path = request.raw_http_path().to_string();
    let answer = if !WEBHOOK_PATHS
        .contains(&path.trim_end_matches('/').to_ascii_lowercase().as_str())
    {
        tracing::info!(path = %redact::id(&path), "no function is served at this path");
        WebhookResponse {
            status: 404,
            headers: Vec::new(),
            body: Some(json!({ "error": "no function is served at this path" })),
        }
    } else if !authorized(auth, &request) {
        tracing::warn!(method = %request.method(), "request without a valid key refused");
        WebhookResponse {
            status: 401,
            headers: Vec::new(),
            body: Some(
                json!({ "error": "a valid key is required, in ?code= or the x-functions-key header" }),
            ),
        }
    } else {
        let (parts, body) = request.into_parts();
        let body = match body {
            Body::Empty => Bytes::new(),
            Body::Text(t) => Bytes::from(t),
            Body::Binary(b) => Bytes::from(b),
            _ => Bytes::new(),
        };
        app.handle_webhook(WebhookRequest {
            method: parts.method,
            headers: parts.headers,
            body,
        })
        .await
    };
    answer.into_http().map(|text| {
        if text.is_empty() {
            Body::Empty
        } else {
            Body::Text(text)
        }
    })
}

/// Whether the request presents one of the keys, in the `x-functions-key` header or `?code=`.
/// Every presented value is compared with every key in constant time, so the answer's timing
/// says nothing about how much of a guess was right.
fn authorized(auth: &WebhookAuth, request: &Request) -> bool {
    let keys = match auth {
        WebhookAuth::Anonymous => return true,
        WebhookAuth::Keys(keys) => keys,
    };
    let query = request.query_string_parameters();
    let presented = request
        .headers()
        .get_all("x-functions-key")
        .iter()
        .map(|v| v.as_bytes())
        .chain(
            query
                .all("code")
                .unwrap_or_default()
                .into_iter()
                .map(str::as_bytes),
        );
    let mut found = subtle::Choice::from(0);
    for candidate in presented {
        for key in keys {
            found |= key.expose().as_bytes().ct_eq(candidate);
        }
    }
    found.into()
}
