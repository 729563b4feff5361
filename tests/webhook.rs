//! The webhook's rules, in-process: the handler's warp filter ([`functions::routes`]) is sent
//! requests as the Functions host forwards them (`warp::test`), over an app whose chunk
//! archiver is scripted, or over the app `wiring` builds from settings when the rule is about
//! queue mode itself.
//!
//! Only what needs the process stays a process test (the last section): start-up refusals,
//! SIGTERM, the logs never holding a secret, and one delivery through the real `handler`
//! binary into Azurite's queue.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archiver_testkit::host::HandlerProcess;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use recording_archiver::app::{App, ArchiveError, ArchiveOutcome, ChunkArchiver};
use recording_archiver::config::{Lookup, Settings, DEFAULT_MAX_BODY_BYTES};
use recording_archiver::disposition::Disposition;
use recording_archiver::host::functions;
use recording_archiver::queue::QueueError;
use recording_archiver::recording::ChunkJob;
use recording_archiver::storage::StorageError;
use recording_archiver::wiring;
use serde_json::{json, Value};
use warp::test::RequestBuilder;

const VALIDATION: &str = include_str!("data/eventgrid_validation.json");
const DELETION: &str = include_str!("data/eventgrid_subscription_deletion.json");
const OTHER_EVENT: &str = include_str!("data/other_event_type.json");
const PREVIEW: &str = include_str!("data/recording_preview.json");
const PUBLIC_PREVIEW: &str = include_str!("data/recording_public_preview.json");
const GA: &str = include_str!("data/recording_ga.json");
const GA_THREE_CHUNKS: &str = include_str!("data/recording_ga_three_chunks.json");
const GA_CLOUDEVENT: &str = include_str!("data/recording_ga_cloudevent.json");
const MISSING_DOCUMENT_ID: &str = include_str!("data/recording_missing_document_id.json");

/// The validation code in [`VALIDATION`].
const VALIDATION_CODE: &str = "512d38b6-c7b8-40c8-89fe-f46f9e9622b6";

/// The handler's default `HTTP_BODY_TIMEOUT_SECS`.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Stands in for the queue or the transfer: takes every chunk (answering `outcome`) except
/// those it was told to fail, and keeps every job it was handed, so a test can say what reached
/// the archiver.
struct Scripted {
    outcome: ArchiveOutcome,
    /// Document ids that fail, and how.
    failures: Vec<(&'static str, Disposition)>,
    handed: Mutex<Vec<ChunkJob>>,
}

impl Scripted {
    /// A queue that takes every chunk.
    fn queue() -> Arc<Scripted> {
        Scripted::queue_failing(Vec::new())
    }

    fn queue_failing(failures: Vec<(&'static str, Disposition)>) -> Arc<Scripted> {
        Scripted::answering(ArchiveOutcome::Enqueued, failures)
    }

    /// A transfer that archives every chunk but `failures`.
    fn transfer_failing(failures: Vec<(&'static str, Disposition)>) -> Arc<Scripted> {
        Scripted::answering(ArchiveOutcome::Archived { bytes: 1 }, failures)
    }

    fn answering(
        outcome: ArchiveOutcome,
        failures: Vec<(&'static str, Disposition)>,
    ) -> Arc<Scripted> {
        Arc::new(Scripted {
            outcome,
            failures,
            handed: Mutex::default(),
        })
    }

    /// The document ids of the jobs handed over, in the order they came.
    fn documents(&self) -> Vec<String> {
        let handed = self.handed.lock().unwrap();
        handed.iter().map(|j| j.document_id.clone()).collect()
    }
}

impl ChunkArchiver for Scripted {
    fn archive(&self, job: ChunkJob) -> BoxFuture<'_, Result<ArchiveOutcome, ArchiveError>> {
        let failure = self
            .failures
            .iter()
            .find(|(document, _)| *document == job.document_id)
            .map(|(_, disposition)| *disposition);
        let result = match failure {
            None => Ok(self.outcome.clone()),
            Some(disposition) => Err(scripted_failure(&job, disposition)),
        };
        self.handed.lock().unwrap().push(job);
        Box::pin(async move { result })
    }
}

/// A failure of `job` that the app classifies as `disposition`: the queue's answer 503 (may
/// pass) or a job too large for any message (never fits).
fn scripted_failure(job: &ChunkJob, disposition: Disposition) -> ArchiveError {
    let queue = "scripted".to_string();
    let source = match disposition {
        Disposition::Retry => QueueError::Storage {
            queue,
            source: Box::new(StorageError::Service {
                operation: "Put Message",
                resource: "scripted".into(),
                status: 503,
                error_code: Some("ServerBusy".into()),
                request_id: None,
                message: None,
                attempts: 1,
            }),
        },
        Disposition::Drop => QueueError::TooLarge {
            queue,
            size: 70_000,
        },
    };
    let error = ArchiveError::Enqueue {
        index: job.index,
        document_id: job.document_id.clone(),
        source,
    };
    assert_eq!(error.disposition(), disposition);
    error
}

/// The app over `archiver`, with the handler's default body limit.
fn app_over(archiver: Arc<Scripted>) -> App {
    app_limited(archiver, DEFAULT_MAX_BODY_BYTES)
}

fn app_limited(archiver: Arc<Scripted>, max_body_bytes: usize) -> App {
    App::new(archiver.clone(), archiver, max_body_bytes)
}

/// The handler's settings, in the default queue mode, with a storage account that is down
/// (nothing listens on its port), and the lookup they were read from.
fn settings_with_storage_down() -> (Settings, impl Lookup) {
    let env = [
        ("RECORDINGS_STORAGE".to_string(), support::storage_down()),
        (
            "ACS_CONNECTION_STRING".to_string(),
            support::UNUSED_ACS.to_string(),
        ),
    ];
    let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    (Settings::load(&lookup).unwrap(), lookup)
}

/// The app as the handler builds it from those settings: its queue is down.
fn queue_mode_app_with_the_queue_down() -> App {
    let (settings, lookup) = settings_with_storage_down();
    wiring::build_app(&settings, &lookup).unwrap()
}

/// A request as the Functions host forwards `RecordingWebhook` (the function key in `code`).
fn forwarded(method: &str) -> RequestBuilder {
    warp::test::request()
        .method(method)
        .path("/api/RecordingWebhook?code=function-key")
}

/// `request` answered by the handler's routes over `app`.
async fn send(app: &App, request: RequestBuilder) -> http::Response<Bytes> {
    request
        .reply(&functions::routes(app.clone(), BODY_TIMEOUT))
        .await
}

/// Posts a delivery as Event Grid sends it; the status and the JSON answer.
async fn post(app: &App, content_type: &str, aeg: &str, body: impl AsRef<[u8]>) -> (u16, Value) {
    let r = send(
        app,
        forwarded("POST")
            .header("Content-Type", content_type)
            .header("aeg-event-type", aeg)
            .header("aeg-delivery-count", "0")
            .body(body),
    )
    .await;
    let status = r.status().as_u16();
    let body = serde_json::from_slice(r.body())
        .unwrap_or_else(|_| panic!("not JSON ({status}): {}", String::from_utf8_lossy(r.body())));
    (status, body)
}

async fn notify(app: &App, body: impl AsRef<[u8]>) -> (u16, Value) {
    post(app, "application/json", "Notification", body).await
}

/// The first event of a fixture (an Event Grid array).
fn first_event(fixture: &str) -> Value {
    serde_json::from_str::<Vec<Value>>(fixture)
        .unwrap()
        .remove(0)
}

/// What is logged on this thread while the guard lives (the tests run on a current-thread
/// runtime and `warp::test` polls the routes in place, so this is everything they log).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn readiness_probe_answers_get_root() {
    let app = app_over(Scripted::queue());
    for method in ["GET", "HEAD"] {
        let r = send(&app, warp::test::request().method(method).path("/")).await;
        assert_eq!(r.status(), 200, "{method}");
    }
}

#[tokio::test]
async fn subscription_validation_echoes_the_code() {
    let archiver = Scripted::queue();
    let app = app_over(archiver.clone());
    let (status, body) = post(
        &app,
        "application/json",
        "SubscriptionValidation",
        VALIDATION,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"validationResponse": VALIDATION_CODE}));
    assert!(archiver.documents().is_empty());
}

#[tokio::test]
async fn cloudevents_options_handshake_grants_the_origin() {
    let app = app_over(Scripted::queue());
    let r = send(
        &app,
        forwarded("OPTIONS")
            .header("WebHook-Request-Origin", "eventgrid.azure.net")
            .header("WebHook-Request-Rate", "120"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        header("WebHook-Allowed-Origin").as_deref(),
        Some("eventgrid.azure.net")
    );
    assert_eq!(header("WebHook-Allowed-Rate").as_deref(), Some("120"));
    assert!(header("Allow").unwrap().contains("POST"));

    let r = send(
        &app,
        forwarded("OPTIONS").header("WebHook-Request-Origin", "eventgrid.azure.net"),
    )
    .await;
    assert_eq!(r.headers().get("WebHook-Allowed-Rate").unwrap(), "*");
}

#[tokio::test]
async fn every_recording_event_shape_is_accepted() {
    for (name, fixture, content_type, chunks) in [
        ("preview", PREVIEW, "application/json", 1),
        ("public preview", PUBLIC_PREVIEW, "application/json", 1),
        ("GA", GA, "application/json; charset=utf-8", 1),
        ("GA, three chunks", GA_THREE_CHUNKS, "application/json", 3),
        (
            "GA CloudEvent",
            GA_CLOUDEVENT,
            "application/cloudevents+json; charset=utf-8",
            1,
        ),
    ] {
        let archiver = Scripted::queue();
        let app = app_over(archiver.clone());
        let (status, body) = post(&app, content_type, "Notification", fixture).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["chunks"]["enqueued"], chunks, "{name}: {body}");
        assert_eq!(body["rejected"], json!([]), "{name}");
        assert_eq!(archiver.documents().len(), chunks, "{name}");
    }
}

#[tokio::test]
async fn cloudevents_batch_is_accepted() {
    let archiver = Scripted::queue();
    let app = app_over(archiver.clone());
    let one: Value = serde_json::from_str(GA_CLOUDEVENT).unwrap();
    let mut two = one.clone();
    two["id"] = json!("second-event");
    two["data"]["recordingStorageInfo"]["recordingChunks"][0]["documentId"] =
        json!("0-eus-d12-another");
    let (status, body) = post(
        &app,
        "application/cloudevents-batch+json",
        "Notification",
        json!([one, two]).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks"]["enqueued"], 2);
    assert!(archiver
        .documents()
        .contains(&"0-eus-d12-another".to_string()));
}

#[tokio::test]
async fn deletion_and_other_event_types_are_acknowledged() {
    let archiver = Scripted::queue();
    let app = app_over(archiver.clone());
    for (name, fixture) in [("deletion", DELETION), ("other type", OTHER_EVENT)] {
        let (status, body) = notify(&app, fixture).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["rejected"], json!([]));
    }
    assert!(archiver.documents().is_empty());
}

#[tokio::test]
async fn malformed_json_is_400_with_a_reason() {
    let app = app_over(Scripted::queue());
    let (status, body) = notify(&app, "[{\"id\": \"x\",").await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
}

#[tokio::test]
async fn recording_event_missing_a_field_is_400_naming_it() {
    let (logs, _guard) = Logs::capture();
    let app = app_over(Scripted::queue());
    let (status, body) = notify(&app, MISSING_DOCUMENT_ID).await;
    assert_eq!(status, 400, "{body}");
    let reason = body["rejected"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("data.recordingStorageInfo.recordingChunks[0].documentId"),
        "{body}"
    );
    assert!(logs.text().contains("event rejected"), "{}", logs.text());
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = app_over(Scripted::queue());
    let r = send(
        &app,
        forwarded("POST")
            .header("Content-Type", "text/plain")
            .body(GA),
    )
    .await;
    assert_eq!(r.status(), 415);
    let body: Value = serde_json::from_slice(r.body()).unwrap();
    assert!(body["error"].as_str().unwrap().contains("text/plain"));
}

/// The announced case; a chunked body is refused while it is read (see `read_body`'s tests in
/// `src/host/functions.rs`).
#[tokio::test]
async fn oversized_body_is_413_whether_announced_or_chunked() {
    let archiver = Scripted::queue();
    let app = app_over(archiver.clone());
    let big = format!("[{}]", " ".repeat(3 * 1024 * 1024));
    let r = send(
        &app,
        forwarded("POST")
            .header("Content-Type", "application/json")
            .body(big),
    )
    .await;
    assert_eq!(r.status(), 413);
    assert!(archiver.documents().is_empty());
}

#[tokio::test]
async fn other_methods_are_405() {
    let app = app_over(Scripted::queue());
    for m in ["GET", "PUT", "DELETE", "PATCH"] {
        let r = send(&app, forwarded(m)).await;
        assert_eq!(r.status(), 405, "{m}");
        assert!(r
            .headers()
            .get("Allow")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("POST"));
    }
}

#[tokio::test]
async fn a_bad_event_does_not_cost_the_good_ones() {
    let (logs, _guard) = Logs::capture();
    let archiver = Scripted::queue();
    let app = app_over(archiver.clone());
    let good = first_event(GA_THREE_CHUNKS);
    let bad = first_event(MISSING_DOCUMENT_ID);
    let not_an_event = json!(42);
    let no_id =
        json!({"eventType": "Microsoft.Communication.RecordingFileStatusUpdated", "data": {}});
    let (status, body) = notify(&app, json!([bad, good, not_an_event, no_id]).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks"]["enqueued"], 3);
    assert_eq!(archiver.documents().len(), 3);
    let reasons: Vec<&str> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 3, "{body}");
    assert!(reasons[0].contains("documentId"));
    assert!(reasons.iter().any(|r| r.contains("must be an object")));
    assert!(reasons.iter().any(|r| r.starts_with("id:")));
    // The rejected event is logged in full.
    assert!(
        logs.text().contains("unknown/content/audio"),
        "{}",
        logs.text()
    );
}

/// A chunk that fails for good is listed with the rejected events and costs the others
/// nothing; one that may pass fails the whole delivery with 503, listing only what to retry.
#[tokio::test]
async fn a_chunk_that_fails_for_good_is_listed_and_one_that_may_pass_asks_for_redelivery() {
    let [first, second, third] = [
        "0-wus-d10-11111111111111111111111111111111",
        "0-wus-d10-22222222222222222222222222222222",
        "0-wus-d10-33333333333333333333333333333333",
    ];
    let app = app_over(Scripted::queue_failing(vec![(first, Disposition::Drop)]));
    let (status, body) = notify(&app, GA_THREE_CHUNKS).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks"]["enqueued"], 2, "{body}");
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{body}");
    assert_eq!(rejected[0]["documentId"], first, "{body}");

    let app = app_over(Scripted::queue_failing(vec![
        (first, Disposition::Drop),
        (third, Disposition::Retry),
    ]));
    let (status, body) = notify(&app, GA_THREE_CHUNKS).await;
    assert_eq!(status, 503, "{body}");
    let retry = body["chunks"].as_array().unwrap();
    assert_eq!(retry.len(), 1, "{body}");
    assert_eq!(retry[0]["documentId"], third, "{body}");

    let app = app_over(Scripted::queue_failing(vec![
        (first, Disposition::Drop),
        (second, Disposition::Drop),
        (third, Disposition::Drop),
    ]));
    let (status, body) = notify(&app, GA_THREE_CHUNKS).await;
    assert_eq!(
        status, 400,
        "nothing in the delivery can ever be archived: {body}"
    );
    assert_eq!(body["rejected"].as_array().unwrap().len(), 3, "{body}");
}

#[tokio::test]
async fn a_batch_of_5000_events_is_handled() {
    let archiver = Scripted::queue();
    let app = app_limited(archiver.clone(), 16 * 1024 * 1024);
    let template = first_event(GA);
    let batch: Vec<Value> = (0..5000)
        .map(|i| {
            let mut e = template.clone();
            e["id"] = json!(format!("event-{i}"));
            e["data"]["recordingStorageInfo"]["recordingChunks"][0]["documentId"] =
                json!(format!("0-eus-d12-{i:08}"));
            e
        })
        .collect();
    let (status, body) = notify(&app, Value::Array(batch).to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(body["events"], 5000);
    assert_eq!(body["chunks"]["enqueued"], 5000);
    assert_eq!(archiver.documents().len(), 5000);
}

#[tokio::test]
async fn routes_match_without_regard_to_case_and_unknown_paths_are_404() {
    let app = app_over(Scripted::queue());
    let r = send(
        &app,
        warp::test::request()
            .method("POST")
            .path("/api/recordingwebhook?code=x")
            .header("Content-Type", "application/json")
            .body(VALIDATION),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = send(&app, warp::test::request().method("POST").path("/api/Nope")).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn enqueue_failure_answers_503_so_event_grid_retries() {
    let app = queue_mode_app_with_the_queue_down();
    let (status, body) = notify(&app, GA_THREE_CHUNKS).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["chunks"].as_array().unwrap().len(), 3, "{body}");
    // The handshake does not need the queue and still works.
    let (status, _) = post(
        &app,
        "application/json",
        "SubscriptionValidation",
        VALIDATION,
    )
    .await;
    assert_eq!(status, 200);
}

/// Queue mode checks each chunk's URLs as the transfer will, before enqueueing: a chunk they
/// refuse is listed as rejected, never sent to the queue (which is down here, so trying would
/// have answered 503), and a delivery of nothing else is answered 400.
#[tokio::test]
async fn queue_mode_refuses_a_chunk_the_transfer_would_refuse_without_touching_the_queue() {
    let app = queue_mode_app_with_the_queue_down();
    let mut event = first_event(GA);
    event["data"]["recordingStorageInfo"]["recordingChunks"][0]["contentLocation"] =
        json!("http://169.254.169.254/metadata/identity/oauth2/token");
    let (status, body) = notify(&app, json!([event]).to_string()).await;
    assert_eq!(status, 400, "{body}");
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{body}");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("contentLocation"),
        "{body}"
    );
}

/// What can never be fetched or enqueued is refused at once with its reason (400 when nothing
/// else came), never handed over to fail in the transfer, never answered 5xx: a
/// contentLocation too long to be a URI, and an event listing more chunks than a recording can
/// have.
#[tokio::test]
async fn events_that_can_never_be_archived_are_refused_with_400_not_5xx() {
    let archiver = Scripted::queue();
    let app = app_over(archiver.clone());
    let mut event = first_event(GA_THREE_CHUNKS);
    let chunks = event["data"]["recordingStorageInfo"]["recordingChunks"].clone();
    let mut long_url = event.clone();
    long_url["data"]["recordingStorageInfo"]["recordingChunks"] = json!([{
        "documentId": "0-wus-d10-long",
        "index": 0,
        "contentLocation": format!("https://us-storage.asm.skype.com/v1/objects/0-wus-d10-long/content/video?{}", "a".repeat(3000)),
    }]);
    let (status, body) = notify(&app, json!([long_url]).to_string()).await;
    assert_eq!(status, 400, "{body}");
    let reason = body["rejected"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("contentLocation") && reason.contains("can never be fetched"),
        "{body}"
    );

    let many: Vec<Value> = (0..1001)
        .map(|i| {
            let mut c = chunks[0].clone();
            c["documentId"] = json!(format!("0-wus-d10-{i:04}"));
            c["index"] = json!(i);
            c
        })
        .collect();
    event["data"]["recordingStorageInfo"]["recordingChunks"] = json!(many);
    let (status, body) = notify(&app, json!([event]).to_string()).await;
    assert_eq!(status, 400, "{body}");
    let reason = body["rejected"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("more than 1000 chunks"), "{body}");
    assert!(
        archiver.documents().is_empty(),
        "nothing was handed to the queue"
    );
}

/// More rejections than an answer lists are counted, so an answer stays small whatever the
/// delivery held.
#[tokio::test]
async fn rejections_past_the_listed_ones_are_counted() {
    let archiver = Scripted::queue();
    let app = app_over(archiver.clone());
    let mut events: Vec<Value> = (0..150)
        .map(|i| json!({ "eventType": format!("e{i}") }))
        .collect();
    events.push(first_event(GA));
    let (status, body) = notify(&app, json!(events).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks"]["enqueued"], 1, "{body}");
    assert_eq!(body["rejected"].as_array().unwrap().len(), 100, "{body}");
    assert_eq!(body["rejectedNotListed"], 50, "{body}");
}

// ---------------------------------------------------------------------------------------------
// `RecordingTransfer`: the queue trigger's invocations, and when a message may be deleted.

/// The host's invocation of `RecordingTransfer` for the queue message `text`; the status and
/// the answer's `Logs`.
async fn invoke(app: &App, text: &str) -> (u16, Vec<String>) {
    let envelope = json!({
        "Data": { "job": text },
        "Metadata": { "Id": "message-1", "DequeueCount": 1 },
    });
    invoke_raw(app, envelope.to_string()).await
}

async fn invoke_raw(app: &App, body: String) -> (u16, Vec<String>) {
    let r = send(
        app,
        warp::test::request()
            .method("POST")
            .path("/RecordingTransfer")
            .header("Content-Type", "application/json")
            .body(body),
    )
    .await;
    let answer: Value = serde_json::from_slice(r.body()).unwrap();
    let logs = answer["Logs"]
        .as_array()
        .unwrap_or_else(|| panic!("no Logs: {answer}"))
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    (r.status().as_u16(), logs)
}

/// 200 lets the host delete the message: only when every chunk is archived.
#[tokio::test]
async fn a_transfer_message_is_done_when_every_chunk_is_archived() {
    let transfer = Scripted::transfer_failing(Vec::new());
    let app = App::new(Scripted::queue(), transfer.clone(), DEFAULT_MAX_BODY_BYTES);
    let (status, logs) = invoke(&app, GA_THREE_CHUNKS).await;
    assert_eq!(status, 200, "{logs:?}");
    assert_eq!(transfer.documents().len(), 3);
    assert!(logs[0].starts_with("archived 3,"), "{logs:?}");
}

/// A chunk that may pass fails the invocation (500): the host shows the message again after
/// its visibility timeout, and the chunks already archived are found archived then.
#[tokio::test]
async fn a_transfer_that_may_pass_fails_the_invocation_to_be_retried() {
    let transfer = Scripted::transfer_failing(vec![(
        "0-wus-d10-22222222222222222222222222222222",
        Disposition::Retry,
    )]);
    let app = App::new(Scripted::queue(), transfer, DEFAULT_MAX_BODY_BYTES);
    let (status, logs) = invoke(&app, GA_THREE_CHUNKS).await;
    assert_eq!(status, 500, "{logs:?}");
    assert!(
        logs.iter()
            .any(|l| l.starts_with("transient:") && l.contains("0-wus-d10-2222")),
        "{logs:?}"
    );
}

/// A message that can never succeed (unreadable, or every failed chunk failed for good) is
/// not retried by the app: with no poison queue, or one it cannot reach, the invocation fails
/// and the host moves the message after `maxDequeueCount` tries; it is never answered 200
/// (deleted) without having been moved.
#[tokio::test]
async fn a_message_that_can_never_succeed_is_deleted_only_once_moved_to_the_poison_queue() {
    let dropped = || {
        Scripted::transfer_failing(vec![(
            "0-wus-d10-11111111111111111111111111111111",
            Disposition::Drop,
        )])
    };
    let app = App::new(Scripted::queue(), dropped(), DEFAULT_MAX_BODY_BYTES);
    let (status, logs) = invoke(&app, GA_THREE_CHUNKS).await;
    assert_eq!(status, 500, "{logs:?}");
    assert!(logs.iter().any(|l| l.starts_with("permanent:")), "{logs:?}");
    let (status, logs) = invoke(&app, "not a job").await;
    assert_eq!(status, 500, "{logs:?}");
    assert!(
        logs[0].starts_with("permanent: message is not JSON"),
        "{logs:?}"
    );

    let (settings, lookup) = settings_with_storage_down();
    // Any queue of the account that is down will do as the unreachable poison queue.
    let poison = wiring::build_clients(&settings, &lookup)
        .unwrap()
        .queue
        .unwrap();
    let app =
        App::new(Scripted::queue(), dropped(), DEFAULT_MAX_BODY_BYTES).with_poison_queue(poison);
    let (status, logs) = invoke(&app, GA_THREE_CHUNKS).await;
    assert_eq!(status, 500, "the poison queue is down: {logs:?}");
    assert!(!logs.iter().any(|l| l.starts_with("moved to")), "{logs:?}");
}

#[tokio::test]
async fn an_invocation_without_a_readable_message_is_400() {
    let transfer = Scripted::transfer_failing(Vec::new());
    let app = App::new(Scripted::queue(), transfer.clone(), DEFAULT_MAX_BODY_BYTES);
    let (status, logs) = invoke_raw(&app, "[1".into()).await;
    assert_eq!(status, 400, "{logs:?}");
    let (status, logs) = invoke_raw(&app, json!({"Data": {"other": "x"}}).to_string()).await;
    assert_eq!(status, 400, "{logs:?}");
    assert!(logs[0].contains("Data.job"), "{logs:?}");
    assert!(transfer.documents().is_empty());
}

// ---------------------------------------------------------------------------------------------
// The process itself.

/// The real binary in its default queue mode, end to end: the delivery's chunks are jobs in
/// Azurite's queue, and the log names each chunk.
#[tokio::test]
async fn a_delivery_reaches_the_azurite_queue_through_the_handler_process() {
    let env = support::handler_env(None);
    let h = support::start_handler(&env).await;
    let (status, body) = support::post_as(&h, "Notification", GA_THREE_CHUNKS).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks"]["enqueued"], 3, "{body}");
    let queued = support::peek_queue(support::setting(&env, "TRANSFER_QUEUE")).await;
    assert_eq!(queued.len(), 3, "{queued:?}");
    for document in ["11111111", "22222222", "33333333"] {
        let id = format!("0-wus-d10-{}", document.repeat(4));
        assert!(queued.iter().any(|m| m.contains(&id)), "{id}: {queued:?}");
    }
    support::wait_for_log(&h, "0-wus-d10-33333333333333333333333333333333").await;
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    // Azurite's account key, the ACS key, the function key in ?code= and the token in the
    // validation URL are all secrets.
    let h = handler_with_log("trace").await;
    support::post_as(&h, "SubscriptionValidation", VALIDATION).await;
    support::post_as(&h, "Notification", GA).await;
    support::post_as(&h, "SubscriptionValidation", VALIDATION).await;
    support::post_as(&h, "Notification", "[1").await;
    // Both requests were answered and logged; only then is the log complete enough to check.
    support::wait_for_log(&h, "delivery refused").await;
    let logs = h.output();
    for secret in [
        archiver_testkit::azurite::ACCOUNT_KEY,
        "c2VjcmV0LWFjcy1rZXk=",
        "functionkey-secret-value",
        "vt-secret-1f2e3d",
    ] {
        assert!(
            !logs.contains(secret),
            "secret {secret} leaked into the logs:\n{logs}"
        );
    }
    assert!(
        logs.contains("answered"),
        "the requests were logged:\n{logs}"
    );
}

async fn handler_with_log(level: &str) -> HandlerProcess {
    support::handler_with(&[("RUST_LOG", level)]).await
}

#[tokio::test]
async fn start_up_refuses_missing_or_malformed_settings_naming_them() {
    let bin = Path::new(support::HANDLER);
    let (status, out) = HandlerProcess::run_to_exit(bin, &[], &[]);
    assert!(!status.success());
    assert!(out.contains("FUNCTIONS_CUSTOMHANDLER_PORT"), "{out}");
    let (status, out) =
        HandlerProcess::run_to_exit(bin, &[("FUNCTIONS_CUSTOMHANDLER_PORT", "seventy")], &[]);
    assert!(!status.success());
    assert!(
        out.contains("FUNCTIONS_CUSTOMHANDLER_PORT") && out.contains("seventy"),
        "{out}"
    );
    let (status, out) = HandlerProcess::run_to_exit(
        bin,
        &[
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "7071"),
            ("ARCHIVE_MODE", "later"),
        ],
        &[],
    );
    assert!(!status.success());
    assert!(out.contains("ARCHIVE_MODE"), "{out}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut h = handler_with_log("debug").await;
    let (first, rest) = VALIDATION.as_bytes().split_at(VALIDATION.len() / 2);
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", h.port()))
        .await
        .unwrap();
    let head = format!(
        "POST /api/RecordingWebhook?code=k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        VALIDATION.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(first).await.unwrap();
    conn.flush().await.unwrap();
    // Once the handler is reading this body, the host recycles the worker...
    support::wait_for_log(&h, "reading the delivery body").await;
    h.terminate();
    support::wait_for_log(&h, "shutting down").await;
    // ...and the rest of the body still arrives and is answered.
    conn.write_all(rest).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(VALIDATION_CODE));
    let status = h
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("handler did not exit after SIGTERM");
    assert!(status.success(), "{status}");
}
