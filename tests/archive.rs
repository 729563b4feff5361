//! Recordings archived for real: ACS emulator (checking signatures) -> handler -> Azurite.
//! Covers the inline webhook, the `RecordingTransfer` invocation, duplicates, a crash in the
//! middle of a transfer, and a Blob service that answers 503.

mod support;

use std::time::Duration;

use archiver_testkit::acs::{AcsEmulator, AcsEmulatorConfig, RecordingFormat, Verdict};
use archiver_testkit::host::HandlerProcess;
use archiver_testkit::proxy::{Fault, FaultProxy, RequestKind};
use serde_json::{json, Value};
use support::*;

const MIB: u64 = 1024 * 1024;

async fn emulator() -> AcsEmulator {
    AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap()
}

async fn post_event(h: &HandlerProcess, event: &Value) -> (u16, Value) {
    post_delivery(h, json!([event]).to_string()).await
}

/// `RecordingTransfer` invoked as the host does, with the message JSON-encoded twice.
async fn invoke_transfer(
    h: &HandlerProcess,
    message: &str,
) -> Result<(u16, Value), reqwest::Error> {
    let envelope = json!({"Data": {"job": serde_json::to_string(message).unwrap()}, "Metadata": {"DequeueCount": 1, "Id": "m-1"}});
    let r = h
        .client()
        .post(h.url("/RecordingTransfer"))
        .json(&envelope)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await?))
}

#[tokio::test]
async fn a_three_chunk_recording_lands_byte_exact_with_names_types_and_records() {
    let emu = emulator().await;
    let docs = ["0-wus-d1-aaaa", "0-wus-d1-bbbb", "0-wus-d1-cccc"];
    for (doc, size) in docs.iter().zip([3 * MIB + 17, 2 * MIB, MIB / 2]) {
        emu.add_recording(doc, size, size, RecordingFormat::Mp4);
    }
    let mut env = handler_env(Some(&emu));
    set(&mut env, "ARCHIVE_MODE", "inline");
    set(&mut env, "TRANSFER_BLOCK_BYTES", "1048576");
    set(&mut env, "TRANSFER_CONTENT_MD5", "true");
    let h = start_handler(&env).await;
    let (status, body) = post_event(&h, &ga_event(&emu, "evt-3", "call-3", &docs, "Mp4")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks"]["archived"], 3, "{body}");
    assert_archived(&emu, setting(&env, "RECORDINGS_CONTAINER"), "call-3", &docs).await;
    let requests = emu.requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.verdict == Verdict::Accepted),
        "every request carried a valid signature"
    );
}

/// Microsoft's two GA samples name the delete URL differently: `.../v1/objects/{id}` (Event
/// Grid docs) and `.../v1/objects/{id}/content/deletedata` (REST spec example). A recording
/// whose chunks use either form is freed; the subject's recordingId names the blobs and is
/// kept in the archive record.
#[tokio::test]
async fn both_published_delete_url_forms_free_the_recording_named_by_recording_id() {
    let emu = emulator().await;
    let docs = ["0-wus-d9-aaaa", "0-wus-d9-bbbb"];
    for doc in docs {
        emu.add_recording(doc, MIB / 2, 9, RecordingFormat::Mp4);
    }
    let mut env = handler_env(Some(&emu));
    set(&mut env, "ARCHIVE_MODE", "inline");
    set(&mut env, "DELETE_AFTER_ARCHIVE", "true");
    set(
        &mut env,
        "BLOB_NAME_TEMPLATE",
        "{recordingId}/{index}-{documentId}.{ext}",
    );
    let h = start_handler(&env).await;
    let mut event = ga_event(&emu, "evt-forms", "call-forms", &docs, "Mp4");
    let bare = emu
        .delete_url(docs[0])
        .trim_end_matches("/content/deletedata")
        .to_string();
    event["data"]["recordingStorageInfo"]["recordingChunks"][0]["deleteLocation"] = json!(bare);
    assert!(event["subject"]
        .as_str()
        .unwrap()
        .ends_with("/recordingId/recording-call-forms"));
    let (status, body) = post_event(&h, &event).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks"]["archived"], 2, "{body}");
    for doc in docs {
        assert!(emu.is_deleted(doc), "{doc} was not freed in ACS");
    }
    let record: Value = serde_json::from_slice(
        &read_blob(
            setting(&env, "RECORDINGS_CONTAINER"),
            &format!("recording-call-forms/000-{}.mp4.json", docs[0]),
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        record["archive"]["call"],
        json!({"callId": "call-forms", "serverCallId": "server-call-forms", "recordingId": "recording-call-forms"})
    );
}

#[tokio::test]
async fn duplicate_deliveries_leave_one_blob_per_chunk() {
    let emu = emulator().await;
    let docs = ["0-wus-d2-aaaa", "0-wus-d2-bbbb"];
    for doc in docs {
        emu.add_recording(doc, MIB + 5, 7, RecordingFormat::Mp4);
    }
    let mut env = handler_env(Some(&emu));
    set(&mut env, "ARCHIVE_MODE", "inline");
    let h = start_handler(&env).await;
    let event = ga_event(&emu, "evt-dup", "call-dup", &docs, "Mp4");
    for i in 0..20 {
        let (status, body) = post_event(&h, &event).await;
        assert_eq!(status, 200, "delivery {i}: {body}");
        let expect = if i == 0 {
            ("archived", 2)
        } else {
            ("alreadyArchived", 2)
        };
        assert_eq!(body["chunks"][expect.0], expect.1, "delivery {i}: {body}");
    }
    let concurrent = futures_util::future::join_all((0..5).map(|_| post_event(&h, &event))).await;
    for (status, body) in concurrent {
        assert_eq!(status, 200, "{body}");
    }
    assert_archived(
        &emu,
        setting(&env, "RECORDINGS_CONTAINER"),
        "call-dup",
        &docs,
    )
    .await;
}

#[tokio::test]
async fn concurrent_first_deliveries_race_to_one_blob_without_error() {
    let emu = emulator().await;
    let docs = ["0-wus-d3-aaaa"];
    emu.add_recording(docs[0], 4 * MIB, 11, RecordingFormat::Mp4);
    let mut env = handler_env(Some(&emu));
    set(&mut env, "ARCHIVE_MODE", "inline");
    set(&mut env, "TRANSFER_BLOCK_BYTES", "262144");
    let h = start_handler(&env).await;
    let event = ga_event(&emu, "evt-race", "call-race", &docs, "Mp4");
    let answers = futures_util::future::join_all((0..5).map(|_| post_event(&h, &event))).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    assert_archived(
        &emu,
        setting(&env, "RECORDINGS_CONTAINER"),
        "call-race",
        &docs,
    )
    .await;
}

#[tokio::test]
async fn a_transfer_killed_midway_resumes_without_resending_staged_blocks() {
    let emu = emulator().await;
    let doc = "0-wus-d4-kill";
    let total = 16 * MIB;
    let (proxy, env) = slow_transfer_setup(&emu, doc, total).await;
    let message = ga_event(&emu, "evt-kill", "call-kill", &[doc], "Mp4").to_string();

    let mut first = start_handler(&env).await;
    let call = {
        let (client, url) = (first.client().clone(), first.url("/RecordingTransfer"));
        let envelope = json!({"Data": {"job": serde_json::to_string(&message).unwrap()}, "Metadata": {"DequeueCount": 1}});
        tokio::spawn(async move { client.post(url).json(&envelope).send().await })
    };
    wait_until(Duration::from_secs(60), "five staged blocks", || {
        proxy.count(RequestKind::PutBlock) >= 5
    })
    .await;
    first.kill();
    assert!(
        call.await.unwrap().is_err(),
        "the crashed invocation gets no answer"
    );
    let staged = proxy.count(RequestKind::PutBlock) as u64;
    assert!(
        staged < total / MIB,
        "killed before the end ({staged} blocks)"
    );
    assert_eq!(
        proxy.count(RequestKind::PutBlockList),
        0,
        "nothing was committed"
    );

    let second = start_handler(&env).await;
    let (status, body) = invoke_transfer(&second, &message).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let container = setting(&env, "RECORDINGS_CONTAINER");
    let name = format!("2026/11/24/call-kill/000-{doc}.mp4");
    let record: Value =
        serde_json::from_slice(&read_blob(container, &format!("{name}.json")).await).unwrap();
    let resumed = record["archive"]["resumedFromByte"].as_u64().unwrap();
    assert!(
        resumed >= 3 * MIB,
        "resumed after the staged blocks, not from 0: {record}"
    );
    let resent = proxy.count(RequestKind::PutBlock) as u64 - staged;
    assert_eq!(
        resent,
        (total - resumed) / MIB,
        "only the blocks after the resume point were uploaded again"
    );
    let ranges: Vec<_> = emu
        .requests()
        .iter()
        .filter_map(|r| r.range().map(str::to_string))
        .collect();
    assert!(
        ranges.contains(&format!("bytes={resumed}-")),
        "the download resumed with Range: {ranges:?}"
    );
    assert_eq!(
        sha256(&read_blob(container, &name).await),
        emu.expected_sha256(doc).unwrap()
    );
}

#[tokio::test]
async fn a_blob_service_503_is_retried_and_the_archive_completes() {
    let emu = emulator().await;
    let doc = "0-wus-d5-busy";
    emu.add_recording(doc, 2 * MIB, 5, RecordingFormat::Mp4);
    let proxy = FaultProxy::start(&azurite().blob_endpoint()).await.unwrap();
    proxy.inject(Fault::status(RequestKind::PutBlock, 2, 503).with_retry_after(0));
    proxy.inject(Fault::status(RequestKind::PutBlockList, 1, 503));
    let mut env = handler_env(Some(&emu));
    let storage = storage_at(&proxy.endpoint(), &azurite().queue_endpoint());
    set(&mut env, "RECORDINGS_STORAGE", &storage);
    set(&mut env, "ARCHIVE_MODE", "inline");
    let h = start_handler(&env).await;
    let (status, body) =
        post_event(&h, &ga_event(&emu, "evt-503", "call-503", &[doc], "Mp4")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.failed(RequestKind::PutBlock), 2);
    assert_eq!(proxy.failed(RequestKind::PutBlockList), 1);
    assert_archived(
        &emu,
        setting(&env, "RECORDINGS_CONTAINER"),
        "call-503",
        &[doc],
    )
    .await;
}

#[tokio::test]
async fn a_refused_url_is_permanent_and_nothing_is_sent() {
    let emu = emulator().await;
    let mut env = handler_env(Some(&emu));
    set(&mut env, "ARCHIVE_MODE", "inline");
    let h = start_handler(&env).await;
    let mut event = ga_event(&emu, "evt-ssrf", "call-ssrf", &["0-wus-d6-evil"], "Mp4");
    let chunk = &mut event["data"]["recordingStorageInfo"]["recordingChunks"][0];
    chunk["contentLocation"] = json!("https://169.254.169.254/metadata/identity/oauth2/token");
    chunk["metadataLocation"] = json!("https://attacker.example/v1/objects/x/content/acsmetadata");
    let (status, body) = post_event(&h, &event).await;
    assert_eq!(
        status, 400,
        "nothing in this delivery can ever be archived: {body}"
    );
    let reason = body["rejected"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("contentLocation") && reason.contains("169.254.169.254"),
        "{body}"
    );
    assert!(emu.requests().is_empty());
}

#[tokio::test]
async fn a_transfer_message_that_can_never_work_goes_to_the_poison_queue_at_once() {
    let emu = emulator().await;
    let env = handler_env(Some(&emu));
    let h = start_handler(&env).await;
    let message = include_str!("data/recording_missing_document_id.json");
    let (status, body) = invoke_transfer(&h, message).await.unwrap();
    assert_eq!(
        status, 200,
        "retrying can never help: the message is moved, not failed five times: {body}"
    );
    let logs = body["Logs"].to_string();
    assert!(
        logs.contains("permanent:") && logs.contains("documentId"),
        "{body}"
    );
    let poison = format!("{}-poison", setting(&env, "TRANSFER_QUEUE"));
    assert_eq!(peek_queue(&poison).await, vec![message]);
    assert!(h.output().contains("moved to the poison queue"));
}

/// Queue-path jobs are checked as the webhook checks events, before anything is downloaded:
/// an empty documentId (every such job would share one blob name), a CR/LF one (it failed
/// only at commit, after the whole download), and a contentLocation too long to be fetched
/// (it was retried as transient) are refused for good, each with its reason.
#[tokio::test]
async fn queued_jobs_are_checked_like_webhook_events_before_any_download() {
    let emu = emulator().await;
    emu.add_recording("doc-ok", 1024, 1, RecordingFormat::Mp4);
    let env = handler_env(Some(&emu));
    let h = start_handler(&env).await;
    let event = ga_event(&emu, "evt-q", "call-q", &["doc-ok"], "mp4");
    let jobs = serde_json::to_value(
        recording_archiver::app::parse_transfer_message(&json!([event]).to_string()).unwrap(),
    )
    .unwrap();
    let good = jobs[0].clone();
    let long_url = format!(
        "{}?pad={}",
        good["source"]["content"].as_str().unwrap(),
        "a".repeat(3000)
    );
    let cases = [
        ("documentId", json!(""), "documentId: is required"),
        ("documentId", json!("doc\r\nx"), "documentId: may hold only"),
        (
            "documentId",
            json!(
                "doc
x"
            ),
            "documentId: may hold only",
        ),
    ];
    let poison = format!("{}-poison", setting(&env, "TRANSFER_QUEUE"));
    let mut expected_poison = Vec::new();
    for (field, value, reason) in cases {
        let mut job = good.clone();
        job[field] = value;
        let text = job.to_string();
        let (status, body) = invoke_transfer(&h, &text).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            body["Logs"].to_string().contains(reason),
            "{reason}: {body}"
        );
        expected_poison.push(text);
    }
    let mut job = good.clone();
    job["source"]["content"] = json!(long_url);
    let text = job.to_string();
    let (status, body) = invoke_transfer(&h, &text).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body["Logs"].to_string().contains("source.content: is 3"),
        "{body}"
    );
    expected_poison.push(text);
    assert!(
        emu.requests().is_empty(),
        "nothing is fetched for a refused job: {:?}",
        emu.requests()
    );
    assert_eq!(peek_queue(&poison).await, expected_poison);
}
