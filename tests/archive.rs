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

/// The indexes of the blocks staged (uncommitted) under `blob`, whole (`block` bytes), read
/// from Azurite directly.
async fn staged_blocks(container: &str, blob: &str, block: u64) -> Vec<u64> {
    use base64::Engine as _;
    let connection = storage_at(&azurite().blob_endpoint(), &azurite().queue_endpoint());
    let lookup = |name: &str| (name == "RECORDINGS_STORAGE").then(|| connection.clone());
    let settings = recording_archiver::config::storage::load(&lookup)
        .unwrap()
        .unwrap();
    let client = recording_archiver::blob::BlobClient::from_settings(
        &settings,
        container,
        http().clone(),
        None,
    )
    .unwrap();
    let list = client.get_block_list(blob).await.unwrap();
    let mut indexes: Vec<u64> = list
        .uncommitted
        .iter()
        .filter(|(_, size)| *size == block)
        .map(|(id, _)| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(id.as_str())
                .unwrap();
            // 5 bytes of the source's tag, then the index in 5 digits.
            std::str::from_utf8(&raw[5..]).unwrap().parse().unwrap()
        })
        .collect();
    indexes.sort();
    indexes
}

/// A transfer killed while its ranges are read in parallel leaves blocks staged out of order
/// (the first range trickles, the others finish); the next attempt keeps every one of them
/// and downloads exactly the missing ranges, no byte more (hashing off: with it on, the kept
/// ranges are read again for the hash only).
#[tokio::test]
async fn a_transfer_killed_midway_resumes_in_any_order_reading_only_the_missing_ranges() {
    let emu = emulator().await;
    let doc = "0-wus-d4-kill";
    let total = 16 * MIB;
    let (proxy, mut env) = slow_transfer_setup(&emu, doc, total).await;
    set(&mut env, "TRANSFER_SHA256", "false");
    set(&mut env, "TRANSFER_PARALLEL_RANGES", "4");
    // The first range (blocks 0-3) crawls; the other three finish.
    emu.push_media_faults(
        doc,
        vec![archiver_testkit::acs::Fault::Trickle {
            chunk: 64 * 1024,
            interval: Duration::from_millis(20),
        }],
    );
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
    // A Put Block the proxy received before the kill still reaches Azurite afterwards: the
    // staged list is read once every one of them has been answered, or a late one would be
    // staged after it was read and the resume would rightly skip its range.
    wait_until(
        Duration::from_secs(60),
        "the proxy to answer every Put Block it received",
        || {
            let answered = proxy
                .requests()
                .iter()
                .filter(|r| r.kind == RequestKind::PutBlock)
                .count();
            answered == proxy.count(RequestKind::PutBlock)
        },
    )
    .await;
    assert_eq!(
        proxy.count(RequestKind::PutBlockList),
        0,
        "nothing was committed"
    );
    let container = setting(&env, "RECORDINGS_CONTAINER");
    let name = format!("2026/11/24/call-kill/000-{doc}.mp4");
    let staged = staged_blocks(container, &name, MIB).await;
    let missing: Vec<u64> = (0..total / MIB).filter(|i| !staged.contains(i)).collect();
    assert!(
        !missing.is_empty(),
        "killed before the end (staged {staged:?})"
    );
    assert!(
        missing.iter().any(|m| staged.iter().any(|s| s > m)),
        "blocks were staged out of order: staged {staged:?}, missing {missing:?}"
    );
    // The missing runs, in ranges of at most 4 blocks (4 MiB), as `Range` headers.
    let mut expected: Vec<String> = Vec::new();
    let mut run: Vec<u64> = Vec::new();
    for i in missing.iter().copied().chain([u64::MAX]) {
        if run.last().is_some_and(|l| *l + 1 != i) || run.len() == 4 {
            let (a, b) = (run[0] * MIB, (run.last().unwrap() + 1) * MIB - 1);
            expected.push(format!("bytes={a}-{b}"));
            run.clear();
        }
        run.push(i);
    }

    emu.clear_requests();
    let put_blocks_before = proxy.count(RequestKind::PutBlock);
    let second = start_handler(&env).await;
    let (status, body) = invoke_transfer(&second, &message).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let mut ranges: Vec<String> = emu
        .requests()
        .iter()
        .filter(|r| r.document_id.as_deref() == Some(doc) && r.target.contains("/content/"))
        .filter_map(|r| r.range().map(str::to_string))
        .collect();
    ranges.sort_by_key(|r| {
        r.trim_start_matches("bytes=")
            .split('-')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
    });
    assert_eq!(
        ranges, expected,
        "exactly the missing ranges were downloaded (staged {staged:?})"
    );
    assert_eq!(
        (proxy.count(RequestKind::PutBlock) - put_blocks_before) as u64,
        missing.len() as u64,
        "only the missing blocks were uploaded"
    );
    let record: Value =
        serde_json::from_slice(&read_blob(container, &format!("{name}.json")).await).unwrap();
    assert_eq!(
        record["archive"]["reusedStagedBytes"],
        staged.len() as u64 * MIB,
        "{record}"
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

#[tokio::test]
async fn a_credential_that_may_not_set_index_tags_still_archives_untagged() {
    let emu = emulator().await;
    let doc = "0-wus-d5-notags";
    emu.add_recording(doc, 2 * MIB, 5, RecordingFormat::Mp4);
    let proxy = FaultProxy::start(&azurite().blob_endpoint()).await.unwrap();
    // What a SAS without the `t` permission answers to a write carrying `x-ms-tags`.
    proxy.inject(Fault::status(RequestKind::PutBlockList, 1, 403));
    let mut env = handler_env(Some(&emu));
    let storage = storage_at(&proxy.endpoint(), &azurite().queue_endpoint());
    set(&mut env, "RECORDINGS_STORAGE", &storage);
    set(&mut env, "ARCHIVE_MODE", "inline");
    let h = start_handler(&env).await;
    let (status, body) = post_event(
        &h,
        &ga_event(&emu, "evt-notags", "call-notags", &[doc], "Mp4"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.failed(RequestKind::PutBlockList), 1);
    assert_eq!(
        proxy.count(RequestKind::PutBlockList),
        2,
        "the refused commit is sent again once, without tags"
    );
    assert_archived(
        &emu,
        setting(&env, "RECORDINGS_CONTAINER"),
        "call-notags",
        &[doc],
    )
    .await;
    wait_for_log(&h, "may not set blob index tags").await;
}
