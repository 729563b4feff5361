//! The `handler` binary under load and under clients that misbehave on purpose: its logs stay
//! attributable and bounded, and its connections stay within their limits.

mod support;

use std::path::Path;

use archiver_testkit::host::HandlerProcess;
use serde_json::{json, Value};
use support::{handler_env, pairs, set, HANDLER};

async fn handler_with(extra: &[(&str, &str)]) -> HandlerProcess {
    let mut env = handler_env(None);
    for (k, v) in extra {
        set(&mut env, k, v);
    }
    HandlerProcess::start(Path::new(HANDLER), &pairs(&env))
        .await
        .unwrap()
}

/// No log line may be longer than this, whatever the request held.
const MAX_LINE_BYTES: usize = 4096;

/// The invocation id the host would send for request `n` (recognisable in any log format).
fn invocation(n: usize) -> String {
    format!("f0f0f0f0-0000-4000-8000-{n:012}")
}

/// Every request number named in `line` by an invocation id.
fn invocations_in(line: &str) -> Vec<usize> {
    numbers_after(line, "f0f0f0f0-0000-4000-8000-")
}

/// Every request number named in `line` by an event id (`evt-<n>-...`).
fn events_in(line: &str) -> Vec<usize> {
    numbers_after(line, "evt-")
}

fn numbers_after(line: &str, prefix: &str) -> Vec<usize> {
    line.match_indices(prefix)
        .filter_map(|(i, _)| {
            let digits: String = line[i + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// One delivery for request `n`: a recording with three chunks, a validation event that is
/// rejected (no code) while its URL holds a token, and a 100 KB event with a 20 KB id that is
/// rejected.
fn delivery(n: usize) -> String {
    let chunks: Vec<Value> = (0..3)
        .map(|k| {
            let doc = format!("0-eus-d{n}-{k}");
            let object = format!("https://storage.asm.skype.com/v1/objects/{doc}");
            json!({
                "documentId": doc,
                "index": k,
                "endReason": "SessionEnded",
                "contentLocation": format!("{object}/content/audio"),
                "metadataLocation": format!("{object}/content/acsmetadata"),
                "deleteLocation": format!("{object}/content/deletedata"),
            })
        })
        .collect();
    json!([
        {
            "id": format!("evt-{n}-rec"),
            "subject": format!("/recording/call/call-{n}/recordingId/rec-{n}"),
            "eventType": "Microsoft.Communication.RecordingFileStatusUpdated",
            "eventTime": "2026-11-24T09:00:00Z",
            "dataVersion": "1.0",
            "data": {
                "recordingStorageInfo": { "recordingChunks": chunks },
                "recordingStartTime": "2026-11-24T09:00:00Z",
                "recordingDurationMs": 1000,
                "recordingContentType": "Audio",
                "recordingChannelType": "Mixed",
                "recordingFormatType": "Mp3",
            },
        },
        {
            "id": format!("evt-{n}-val"),
            "subject": "",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2026-11-24T09:00:00Z",
            "dataVersion": "2",
            "data": {
                "validationUrl": format!("https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/recordings/validate?id={n}&token=vt-secret-{n}-1f2e3d"),
            },
        },
        {
            "id": format!("evt-{n}-big-{}", "z".repeat(20_000)),
            "subject": "s".repeat(20_000),
            "eventType": "Microsoft.Communication.RecordingFileStatusUpdated",
            "eventTime": "2026-11-24T09:00:00Z",
            "dataVersion": "1.0",
            "data": { "junk": "y".repeat(100_000) },
        },
    ])
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_concurrent_requests_every_log_line_carries_only_its_own_request() {
    const REQUESTS: usize = 48;
    let h = handler_with(&[("RUST_LOG", "debug")]).await;
    let sends = (0..REQUESTS).map(|n| {
        h.client()
            .post(h.url("/api/RecordingWebhook?code=functionkey-secret-value"))
            .header("X-Azure-Functions-InvocationId", invocation(n))
            .header("Content-Type", "application/json")
            .header("aeg-event-type", "Notification")
            .body(delivery(n))
            .send()
    });
    for (n, r) in futures_util::future::join_all(sends)
        .await
        .into_iter()
        .enumerate()
    {
        let r = r.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "request {n}: {body}");
        assert_eq!(body["chunks"]["enqueued"], 3, "request {n}: {body}");
        assert_eq!(body["rejected"].as_array().map(Vec::len), Some(2), "{body}");
    }
    // Every request was answered; its last line ("answered") is written before the answer.
    let logs = h.output();
    let lines: Vec<&str> = logs.lines().collect();
    let mut rejected = vec![0; REQUESTS];
    let mut enqueued = vec![0; REQUESTS];
    for line in &lines {
        assert!(
            line.len() <= MAX_LINE_BYTES,
            "a line of {} bytes: {}…",
            line.len(),
            &line[..200]
        );
        let mut owners = invocations_in(line);
        owners.sort_unstable();
        owners.dedup();
        assert!(
            owners.len() <= 1,
            "a line carries several requests' invocation ids: {line}"
        );
        for event in events_in(line) {
            assert_eq!(
                owners.first(),
                Some(&event),
                "request {event}'s event is logged under another request's id: {line}"
            );
        }
        if let Some(&n) = owners.first() {
            rejected[n] += usize::from(line.contains("event rejected"));
            enqueued[n] += usize::from(line.contains("chunk enqueued"));
        }
    }
    assert_eq!(rejected, vec![2; REQUESTS], "rejections logged per request");
    assert_eq!(enqueued, vec![3; REQUESTS], "chunks logged per request");
    assert!(
        !logs.contains("vt-secret"),
        "the validation token reached the log"
    );
    assert!(
        !logs.contains("functionkey-secret-value"),
        "the function key reached the log"
    );
    let longest = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    eprintln!(
        "{} log lines for {REQUESTS} concurrent requests, longest {longest} bytes",
        lines.len()
    );
}
