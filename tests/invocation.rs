//! `RecordingTransfer` invoked the way the Functions host invokes a queue-triggered custom
//! handler function: `POST /RecordingTransfer` with `{"Data": {"job": ...}, "Metadata": ...}`.

use std::path::Path;

use archiver_testkit::host::HandlerProcess;
use serde_json::{json, Value};

const HANDLER: &str = env!("CARGO_BIN_EXE_handler");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

async fn invoke(h: &HandlerProcess, message_text: &str) -> (u16, Value) {
    // The host JSON-encodes a string trigger value once more (see azure-protocols.md §4.3).
    let envelope = json!({
        "Data": {"job": serde_json::to_string(message_text).unwrap()},
        "Metadata": {"DequeueCount": "1", "Id": "\"m-1\"", "sys": {"MethodName": "RecordingTransfer"}},
    });
    let r = h
        .client()
        .post(h.url("/RecordingTransfer"))
        .header(
            "X-Azure-Functions-InvocationId",
            "00000000-0000-4000-8000-000000000001",
        )
        .json(&envelope)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_raw_event_grid_event_is_a_valid_transfer_message() {
    let h = HandlerProcess::start(Path::new(HANDLER), &[])
        .await
        .unwrap();
    let (status, body) = invoke(&h, &fixture("recording_ga_three_chunks.json")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Logs"].as_array().unwrap().len(), 3);
    assert!(body.get("Outputs").is_some() && body.get("ReturnValue").is_some());
}

#[tokio::test]
async fn an_unusable_message_fails_the_invocation_and_says_why() {
    let h = HandlerProcess::start(Path::new(HANDLER), &[])
        .await
        .unwrap();
    let (status, body) = invoke(&h, &fixture("recording_missing_document_id.json")).await;
    assert_eq!(
        status, 500,
        "the host must retry and finally poison it, never delete it"
    );
    assert!(
        body["Logs"][0].as_str().unwrap().starts_with("permanent:"),
        "{body}"
    );
    // The reason is logged (the log reader may trail the answer by a moment).
    let mut logged = false;
    for _ in 0..500 {
        logged = h.output().contains("poison queue");
        if logged {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(logged, "{}", h.output());
    let r = h
        .client()
        .post(h.url("/RecordingTransfer"))
        .body("not an envelope")
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_success());
}
