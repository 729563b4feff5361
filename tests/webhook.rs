//! The `handler` binary driven exactly as the Azure Functions host drives it: started with the
//! host's environment, probed with `GET /`, sent forwarded `RecordingWebhook` requests with the
//! host's headers and the function key in `?code=`.

mod support;

use std::path::Path;
use std::time::Duration;

use archiver_testkit::host::HandlerProcess;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{fixture, handler_env, handler_with, start_handler, HANDLER};

const ACCOUNT_KEY: &str = archiver_testkit::azurite::ACCOUNT_KEY;

/// The handler in its default queue mode, enqueueing into Azurite.
async fn handler() -> HandlerProcess {
    handler_with(&[]).await
}

async fn post(
    h: &HandlerProcess,
    content_type: &str,
    aeg: &str,
    body: String,
) -> (StatusCode, Value) {
    let r = h
        .forward(Method::POST, "RecordingWebhook")
        .header("Content-Type", content_type)
        .header("aeg-event-type", aeg)
        .header("aeg-delivery-count", "0")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, body)
}

#[tokio::test]
async fn readiness_probe_answers_get_root() {
    let h = handler().await;
    let r = h.client().get(h.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn subscription_validation_echoes_the_code() {
    let h = handler().await;
    let (status, body) = post(
        &h,
        "application/json",
        "SubscriptionValidation",
        fixture("eventgrid_validation.json"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    );
}

#[tokio::test]
async fn cloudevents_options_handshake_grants_the_origin() {
    let h = handler().await;
    let r = h
        .forward(Method::OPTIONS, "RecordingWebhook")
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .header("WebHook-Request-Rate", "120")
        .send()
        .await
        .unwrap();
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

    let r = h
        .forward(Method::OPTIONS, "RecordingWebhook")
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("WebHook-Allowed-Rate").unwrap(), "*");
}

#[tokio::test]
async fn every_recording_event_shape_is_accepted() {
    let h = handler().await;
    for (name, content_type, chunks) in [
        ("recording_preview.json", "application/json", 1),
        ("recording_public_preview.json", "application/json", 1),
        ("recording_ga.json", "application/json; charset=utf-8", 1),
        ("recording_ga_three_chunks.json", "application/json", 3),
        (
            "recording_ga_cloudevent.json",
            "application/cloudevents+json; charset=utf-8",
            1,
        ),
    ] {
        let (status, body) = post(&h, content_type, "Notification", fixture(name)).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["chunks"]["enqueued"], chunks, "{name}: {body}");
        assert_eq!(body["rejected"], json!([]), "{name}");
    }
    wait_for_log(&h, "0-wus-d10-33333333333333333333333333333333").await;
}

#[tokio::test]
async fn cloudevents_batch_is_accepted() {
    let h = handler().await;
    let one: Value = serde_json::from_str(&fixture("recording_ga_cloudevent.json")).unwrap();
    let mut two = one.clone();
    two["id"] = json!("second-event");
    two["data"]["recordingStorageInfo"]["recordingChunks"][0]["documentId"] =
        json!("0-eus-d12-another");
    let (status, body) = post(
        &h,
        "application/cloudevents-batch+json",
        "Notification",
        json!([one, two]).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks"]["enqueued"], 2);
}

#[tokio::test]
async fn deletion_and_other_event_types_are_acknowledged() {
    let h = handler().await;
    for name in [
        "eventgrid_subscription_deletion.json",
        "other_event_type.json",
    ] {
        let (status, body) = post(&h, "application/json", "Notification", fixture(name)).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["rejected"], json!([]));
    }
}

#[tokio::test]
async fn malformed_json_is_400_with_a_reason() {
    let h = handler().await;
    let (status, body) = post(
        &h,
        "application/json",
        "Notification",
        "[{\"id\": \"x\",".into(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
}

#[tokio::test]
async fn recording_event_missing_a_field_is_400_naming_it() {
    let h = handler().await;
    let (status, body) = post(
        &h,
        "application/json",
        "Notification",
        fixture("recording_missing_document_id.json"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let reason = body["rejected"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("data.recordingStorageInfo.recordingChunks[0].documentId"),
        "{body}"
    );
    wait_for_log(&h, "event rejected").await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let h = handler().await;
    let r = h
        .forward(Method::POST, "RecordingWebhook")
        .header("Content-Type", "text/plain")
        .body(fixture("recording_ga.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("text/plain"));
}

#[tokio::test]
async fn oversized_body_is_413_whether_announced_or_chunked() {
    let h = handler().await;
    let big = format!("[{}]", " ".repeat(3 * 1024 * 1024));
    let r = h
        .forward(Method::POST, "RecordingWebhook")
        .header("Content-Type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Without Content-Length (chunked), the limit is enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = h
        .forward(Method::POST, "RecordingWebhook")
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    // The handler may answer before the client finished sending, and then close the
    // connection; either way nothing but a 413 is acceptable.
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
}

#[tokio::test]
async fn other_methods_are_405() {
    let h = handler().await;
    for m in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
        let r = h
            .forward(m.clone(), "RecordingWebhook")
            .send()
            .await
            .unwrap();
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
    let h = handler().await;
    let good: Value =
        serde_json::from_str::<Vec<Value>>(&fixture("recording_ga_three_chunks.json"))
            .unwrap()
            .remove(0);
    let bad: Value =
        serde_json::from_str::<Vec<Value>>(&fixture("recording_missing_document_id.json"))
            .unwrap()
            .remove(0);
    let not_an_event = json!(42);
    let no_id =
        json!({"eventType": "Microsoft.Communication.RecordingFileStatusUpdated", "data": {}});
    let (status, body) = post(
        &h,
        "application/json",
        "Notification",
        json!([bad, good, not_an_event, no_id]).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks"]["enqueued"], 3);
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
    wait_for_log(&h, "unknown/content/audio").await;
}

#[tokio::test]
async fn a_batch_of_5000_events_is_handled() {
    let h = handler_with(&[("RUST_LOG", "warn"), ("WEBHOOK_MAX_BODY_BYTES", "16777216")]).await;
    let template: Value = serde_json::from_str::<Vec<Value>>(&fixture("recording_ga.json"))
        .unwrap()
        .remove(0);
    let batch: Vec<Value> = (0..5000)
        .map(|i| {
            let mut e = template.clone();
            e["id"] = json!(format!("event-{i}"));
            e["data"]["recordingStorageInfo"]["recordingChunks"][0]["documentId"] =
                json!(format!("0-eus-d12-{i:08}"));
            e
        })
        .collect();
    let (status, body) = post(
        &h,
        "application/json",
        "Notification",
        Value::Array(batch).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["events"], 5000);
    assert_eq!(body["chunks"]["enqueued"], 5000);
}

#[tokio::test]
async fn routes_match_without_regard_to_case_and_unknown_paths_are_404() {
    let h = handler().await;
    let r = h
        .client()
        .post(h.url("/api/recordingwebhook?code=x"))
        .header("Content-Type", "application/json")
        .body(fixture("eventgrid_validation.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = h.client().post(h.url("/api/Nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    // Azurite's account key, the ACS key, the function key in ?code= and the token in the
    // validation URL are all secrets.
    let h = handler_with(&[("RUST_LOG", "trace")]).await;
    post(
        &h,
        "application/json",
        "SubscriptionValidation",
        fixture("eventgrid_validation.json"),
    )
    .await;
    post(
        &h,
        "application/json",
        "Notification",
        fixture("recording_ga.json"),
    )
    .await;
    post(
        &h,
        "application/json",
        "SubscriptionValidation",
        fixture("eventgrid_validation.json"),
    )
    .await;
    post(&h, "application/json", "Notification", "[1".into()).await;
    // Both requests were answered and logged; only then is the log complete enough to check.
    wait_for_log(&h, "delivery refused").await;
    let logs = h.output();
    for secret in [
        ACCOUNT_KEY,
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

#[tokio::test]
async fn start_up_refuses_missing_or_malformed_settings_naming_them() {
    let bin = Path::new(HANDLER);
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
    let mut h = handler_with(&[("RUST_LOG", "debug")]).await;
    let body = fixture("eventgrid_validation.json");
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", h.port()))
        .await
        .unwrap();
    let head = format!(
        "POST /api/RecordingWebhook?code=k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(first).await.unwrap();
    conn.flush().await.unwrap();
    // Once the handler is reading this body, the host recycles the worker...
    wait_for_log(&h, "reading the delivery body").await;
    h.terminate();
    wait_for_log(&h, "shutting down").await;
    // ...and the rest of the body still arrives and is answered.
    conn.write_all(rest).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("512d38b6-c7b8-40c8-89fe-f46f9e9622b6"));
    let status = h
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("handler did not exit after SIGTERM");
    assert!(status.success(), "{status}");
}

async fn wait_for_log(h: &HandlerProcess, needle: &str) {
    for _ in 0..500 {
        if h.output().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the handler never logged `{needle}`:\n{}", h.output());
}

#[tokio::test]
async fn enqueue_failure_answers_503_so_event_grid_retries() {
    // A queue service that is down: nothing listens on its port.
    let conn = support::storage_down();
    let h = handler_with(&[("RECORDINGS_STORAGE", &conn)]).await;
    let (status, body) = post(
        &h,
        "application/json",
        "Notification",
        fixture("recording_ga_three_chunks.json"),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["chunks"].as_array().unwrap().len(), 3, "{body}");
    // The handshake does not need the queue and still works.
    let (status, _) = post(
        &h,
        "application/json",
        "SubscriptionValidation",
        fixture("eventgrid_validation.json"),
    )
    .await;
    assert_eq!(status, 200);
}

/// What can never be fetched or enqueued is refused at once with its reason (400 when nothing
/// else came), never enqueued to fail in the transfer, never answered 5xx: a contentLocation
/// too long to be a URI, and an event listing more chunks than a recording can have.
#[tokio::test]
async fn events_that_can_never_be_archived_are_refused_with_400_not_5xx() {
    let env = handler_env(None);
    let h = start_handler(&env).await;
    let mut event: Value =
        serde_json::from_str::<Vec<Value>>(&fixture("recording_ga_three_chunks.json")).unwrap()[0]
            .clone();
    let chunks = event["data"]["recordingStorageInfo"]["recordingChunks"].clone();
    let mut long_url = event.clone();
    long_url["data"]["recordingStorageInfo"]["recordingChunks"] = json!([{
        "documentId": "0-wus-d10-long",
        "index": 0,
        "contentLocation": format!("https://us-storage.asm.skype.com/v1/objects/0-wus-d10-long/content/video?{}", "a".repeat(3000)),
    }]);
    let (status, body) = post(
        &h,
        "application/json",
        "Notification",
        json!([long_url]).to_string(),
    )
    .await;
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
    let (status, body) = post(
        &h,
        "application/json",
        "Notification",
        json!([event]).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let reason = body["rejected"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("more than 1000 chunks"), "{body}");
    assert!(
        support::peek_queue(support::setting(&env, "TRANSFER_QUEUE"))
            .await
            .is_empty(),
        "nothing was enqueued"
    );
}
