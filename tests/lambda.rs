//! The Lambda front end: its key check and routes called in-process with real function URL and
//! API Gateway payloads (the supported way to test `lambda_http` handlers), and the `lambda`
//! binary itself run against the testkit's Lambda Runtime API.
#![cfg(feature = "lambda")]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use archiver_testkit::lambda::{LambdaFunction, LambdaRuntime, Outcome};
use futures_util::future::BoxFuture;
use lambda_http::Body;
use recording_archiver::app::{App, ArchiveError, ArchiveOutcome, ChunkArchiver};
use recording_archiver::config::{Secret, WebhookAuth};
use recording_archiver::host::lambda;
use recording_archiver::recording::ChunkJob;
use serde_json::{json, Value};
use support::{handler_env, pairs, set};

const LAMBDA: &str = env!("CARGO_BIN_EXE_lambda");

/// The key the API Gateway fixtures carry.
const KEY: &str = "test-webhook-key-0123456789";
/// The second key, as during a rotation.
const NEXT_KEY: &str = "next-webhook-key-9876543210";

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

fn keys() -> WebhookAuth {
    WebhookAuth::Keys(vec![
        Secret::new(KEY.to_string()),
        Secret::new(NEXT_KEY.to_string()),
    ])
}

/// A fixture with `edit` applied.
fn edited(fixture: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut payload: Value = serde_json::from_str(fixture).unwrap();
    edit(&mut payload);
    payload.to_string()
}

/// A function URL payload (format 2.0) with `?code=<key>`, as a function URL sends it.
fn with_code(fixture: &str, key: &str) -> String {
    edited(fixture, |p| {
        p["rawQueryString"] = json!(format!("code={key}"));
        p["queryStringParameters"] = json!({ "code": key });
    })
}

/// A function URL payload (format 2.0) with the key in `x-functions-key`.
fn with_header(fixture: &str, key: &str) -> String {
    edited(fixture, |p| p["headers"]["x-functions-key"] = json!(key))
}

/// A function URL payload (format 2.0) sent to `path`.
fn at_path(fixture: &str, path: &str) -> String {
    edited(fixture, |p| {
        p["rawPath"] = json!(path);
        p["requestContext"]["http"]["path"] = json!(path);
    })
}

async fn call(payload: &str) -> (u16, http::HeaderMap, Option<Value>) {
    let request = lambda_http::request::from_str(payload).unwrap();
    let response = lambda::handle(&app(), &keys(), request).await;
    let (parts, body) = response.into_parts();
    let body = match body {
        Body::Text(t) => Some(serde_json::from_str(&t).unwrap()),
        _ => None,
    };
    (parts.status.as_u16(), parts.headers, body)
}

const URL_VALIDATION: &str = include_str!("data/lambda_url_validation.json");
const URL_RECORDING: &str = include_str!("data/lambda_url_recording_ga.json");
const URL_OPTIONS: &str = include_str!("data/lambda_url_options.json");
const REST_RECORDING: &str = include_str!("data/lambda_apigw_rest_recording_ga.json");
const HTTP_VALIDATION: &str = include_str!("data/lambda_apigw_http_validation.json");

#[tokio::test]
async fn validation_handshake_over_a_function_url() {
    let (status, _, body) = call(&with_code(URL_VALIDATION, KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body.unwrap()["validationResponse"],
        "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    );
}

#[tokio::test]
async fn recording_event_over_a_function_url() {
    let (status, _, body) = call(&with_header(URL_RECORDING, KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap()["chunks"]["enqueued"], 1);
}

#[tokio::test]
async fn cloudevents_handshake_over_a_function_url() {
    let (status, headers, _) = call(&with_code(URL_OPTIONS, KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["WebHook-Allowed-Origin"], "eventgrid.azure.net");
}

#[tokio::test]
async fn api_gateway_rest_and_http_payloads_are_served_on_the_functions_path() {
    // REST (format 1.0) with a `prod` stage: the stage is not part of the route.
    let (status, _, body) = call(REST_RECORDING).await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(body.unwrap()["chunks"]["enqueued"], 1);
    let (status, _, body) = call(HTTP_VALIDATION).await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(
        body.unwrap()["validationResponse"],
        "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    );
}

#[tokio::test]
async fn without_a_valid_key_post_and_options_alike_are_401() {
    for fixture in [URL_VALIDATION, URL_RECORDING, URL_OPTIONS] {
        for payload in [
            fixture.to_string(),
            with_code(fixture, "wrong-webhook-key-000000000"),
            with_header(fixture, "wrong-webhook-key-000000000"),
            with_code(fixture, &KEY[..KEY.len() - 1]),
            with_code(fixture, ""),
        ] {
            let (status, headers, body) = call(&payload).await;
            assert_eq!(status, 401, "{payload}");
            assert!(headers.get("WebHook-Allowed-Origin").is_none());
            assert!(
                body.unwrap()["error"].as_str().unwrap().contains("key"),
                "the answer says a key is needed"
            );
        }
    }
    let rest_without_key = edited(REST_RECORDING, |p| {
        p["queryStringParameters"] = Value::Null;
        p["multiValueQueryStringParameters"] = Value::Null;
    });
    assert_eq!(call(&rest_without_key).await.0, 401);
}

#[tokio::test]
async fn either_key_of_a_rotation_is_accepted_in_the_query_or_the_header() {
    for key in [KEY, NEXT_KEY] {
        assert_eq!(call(&with_code(URL_VALIDATION, key)).await.0, 200);
        assert_eq!(call(&with_header(URL_VALIDATION, key)).await.0, 200);
    }
}

#[tokio::test]
async fn the_webhook_answers_at_the_root_and_the_functions_path_only() {
    for path in ["/", "/api/RecordingWebhook", "/API/recordingwebhook/"] {
        let (status, _, body) = call(&with_code(&at_path(URL_VALIDATION, path), KEY)).await;
        assert_eq!(status, 200, "{path}: {body:?}");
    }
    for path in [
        "/other",
        "/api",
        "/api/RecordingWebhook/x",
        "/api/RecordingTransfer",
    ] {
        let (status, _, _) = call(&with_code(&at_path(URL_VALIDATION, path), KEY)).await;
        assert_eq!(status, 404, "{path}");
        // Unknown paths say nothing about keys either.
        assert_eq!(call(&at_path(URL_VALIDATION, path)).await.0, 404, "{path}");
    }
}

/// The status and parsed body of a `lambda_http` response document.
fn http_answer(outcome: Outcome) -> (u64, Value) {
    let Outcome::Response(doc) = outcome else {
        panic!("the function failed: {outcome:?}");
    };
    let body = doc["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (doc["statusCode"].as_u64().unwrap(), body)
}

const INVOKE_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_lambda_binary_refuses_to_start_without_keys_and_says_why() {
    let runtime = LambdaRuntime::start().await.unwrap();
    let mut f =
        LambdaFunction::start(Path::new(LAMBDA), &runtime, &[("RUST_LOG", "info")]).unwrap();
    let status = f
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the function kept running without WEBHOOK_KEYS");
    assert!(!status.success());
    assert!(f.output().contains("WEBHOOK_KEYS"), "{}", f.output());
    let reported = runtime.init_errors();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(
        reported[0]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("WEBHOOK_ALLOW_ANONYMOUS"),
        "{reported:?}"
    );
}

#[tokio::test]
async fn the_lambda_binary_runs_anonymously_only_when_told_to() {
    let runtime = LambdaRuntime::start().await.unwrap();
    let mut env = handler_env(None);
    set(&mut env, "RECORDINGS_STORAGE", &support::storage_down());
    set(&mut env, "WEBHOOK_ALLOW_ANONYMOUS", "true");
    let f = LambdaFunction::start(Path::new(LAMBDA), &runtime, &pairs(&env)).unwrap();
    let (status, body) = http_answer(runtime.invoke(URL_VALIDATION, INVOKE_LIMIT).await.unwrap());
    assert_eq!(status, 200, "{body}\n{}", f.output());
    assert!(
        f.output().contains("WEBHOOK_ALLOW_ANONYMOUS"),
        "{}",
        f.output()
    );
}

#[tokio::test]
async fn the_lambda_binary_requires_a_key_for_every_payload_shape() {
    let runtime = LambdaRuntime::start().await.unwrap();
    let mut env = handler_env(None);
    set(&mut env, "WEBHOOK_KEYS", &format!("{KEY},{NEXT_KEY}"));
    let f = LambdaFunction::start(Path::new(LAMBDA), &runtime, &pairs(&env)).unwrap();
    let invoke = |payload: String| {
        let runtime = &runtime;
        async move { http_answer(runtime.invoke(&payload, INVOKE_LIMIT).await.unwrap()) }
    };
    // Function URL (payload 2.0).
    let (status, body) = invoke(with_code(URL_VALIDATION, NEXT_KEY)).await;
    assert_eq!(status, 200, "{body}\n{}", f.output());
    assert_eq!(
        body["validationResponse"],
        "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    );
    assert_eq!(invoke(URL_VALIDATION.to_string()).await.0, 401);
    assert_eq!(invoke(URL_OPTIONS.to_string()).await.0, 401);
    assert_eq!(invoke(with_code(URL_OPTIONS, KEY)).await.0, 200);
    // API Gateway REST (payload 1.0): enqueued into Azurite for real.
    let (status, body) = invoke(REST_RECORDING.to_string()).await;
    assert_eq!(status, 200, "{body}\n{}", f.output());
    assert_eq!(body["chunks"]["enqueued"], 1);
    // API Gateway HTTP API (payload 2.0), key in the header; elsewhere on it, 404.
    assert_eq!(invoke(HTTP_VALIDATION.to_string()).await.0, 200);
    let elsewhere = edited(HTTP_VALIDATION, |p| p["rawPath"] = json!("/admin"));
    assert_eq!(invoke(elsewhere).await.0, 404);
    let logs = f.output();
    assert!(logs.contains("without a valid key"), "{logs}");
    for key in [KEY, NEXT_KEY] {
        assert!(!logs.contains(key), "a key reached the log:\n{logs}");
    }
}
