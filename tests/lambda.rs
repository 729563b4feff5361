//! The Lambda front end, called in-process with real function URL payloads (the supported way
//! to test `lambda_http` handlers).
#![cfg(feature = "lambda")]

use std::sync::Arc;

use lambda_http::Body;
use recording_archiver::app::{App, ArchiveError, ArchiveOutcome, ChunkArchiver};
use recording_archiver::host::lambda;
use recording_archiver::identity::BoxFuture;
use recording_archiver::recording::ChunkJob;
use serde_json::Value;

/// Stands in for the queue: takes every chunk. (The archive itself is tested elsewhere; here
/// only the Lambda translation is under test.)
struct TakeEverything;

impl ChunkArchiver for TakeEverything {
    fn archive(&self, _job: ChunkJob) -> BoxFuture<'_, Result<ArchiveOutcome, ArchiveError>> {
        Box::pin(async { Ok(ArchiveOutcome::Enqueued) })
    }
}

fn app() -> App {
    let archiver = Arc::new(TakeEverything);
    App::new(archiver.clone(), archiver, 2 * 1024 * 1024)
}

async fn call(fixture: &str) -> (u16, http::HeaderMap, Option<Value>) {
    let request = lambda_http::request::from_str(fixture).unwrap();
    let response = lambda::handle(&app(), request).await;
    let (parts, body) = response.into_parts();
    let body = match body {
        Body::Text(t) => Some(serde_json::from_str(&t).unwrap()),
        _ => None,
    };
    (parts.status.as_u16(), parts.headers, body)
}

#[tokio::test]
async fn validation_handshake_over_a_function_url() {
    let (status, _, body) = call(include_str!("data/lambda_url_validation.json")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body.unwrap()["validationResponse"],
        "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    );
}

#[tokio::test]
async fn recording_event_over_a_function_url() {
    let (status, _, body) = call(include_str!("data/lambda_url_recording_ga.json")).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap()["chunks"]["enqueued"], 1);
}

#[tokio::test]
async fn cloudevents_handshake_over_a_function_url() {
    let (status, headers, _) = call(include_str!("data/lambda_url_options.json")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["WebHook-Allowed-Origin"], "eventgrid.azure.net");
}
