//! Queue mode as it runs under Azure Functions, through the repo's Functions host emulator:
//! the host starts the real `handler` with the app's host.json and function.json files,
//! forwards Event Grid's requests to `RecordingWebhook`, and runs the `RecordingTransfer`
//! queue trigger from Azurite with the host's retry and poison rules.

mod support;

use std::path::Path;
use std::time::Duration;

use archiver_testkit::acs::{AcsEmulator, AcsEmulatorConfig, RecordingFormat};
use archiver_testkit::host::{FunctionsHost, HostOptions, LogLevel};
use archiver_testkit::proxy::RequestKind;
use serde_json::{json, Value};
use support::*;

const MIB: u64 = 1024 * 1024;

/// The app as `func start` would run it, with short retry intervals so tests are quick.
async fn host(env: Vec<(String, String)>) -> FunctionsHost {
    host_at(Path::new(env!("CARGO_MANIFEST_DIR")), env).await
}

/// The app at `root` (host.json and the function folders), with these settings.
async fn host_at(root: &Path, env: Vec<(String, String)>) -> FunctionsHost {
    let mut settings = env;
    settings.push(("FUNCTIONS_WORKER_RUNTIME".into(), "Custom".into()));
    settings.push(("AzureWebJobsStorage".into(), azurite().connection_string()));
    let options = HostOptions {
        handler: Some(HANDLER.into()),
        app_settings: settings,
        max_polling_interval: Some(Duration::from_millis(200)),
        visibility_timeout: Some(Duration::from_millis(500)),
        ..HostOptions::default()
    };
    FunctionsHost::start_with(root, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn container(env: &[(String, String)]) -> String {
    env.iter()
        .find(|(k, _)| k == "RECORDINGS_CONTAINER")
        .unwrap()
        .1
        .clone()
}

#[tokio::test]
async fn webhook_enqueues_transfer_archives_and_the_recording_is_freed_in_acs() {
    let emu = AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap();
    let docs = ["0-wus-q1-aaaa", "0-wus-q1-bbbb", "0-wus-q1-cccc"];
    for (doc, size) in docs.iter().zip([3 * MIB, MIB + 1, 1000]) {
        emu.add_recording(doc, size, size, RecordingFormat::Mp4);
    }
    let mut env = handler_env(Some(&emu));
    set(&mut env, "DELETE_AFTER_ARCHIVE", "true");
    let host = host(env.clone()).await;
    let (status, body) = deliver(
        &host,
        json!([ga_event(&emu, "evt-q1", "call-q1", &docs, "Mp4")]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["chunks"]["enqueued"], 3,
        "the webhook only enqueues: {body}"
    );
    host.wait_until_idle(Duration::from_secs(60)).await.unwrap();
    assert_archived(&emu, &container(&env), "call-q1", &docs).await;
    let transfers: Vec<_> = host
        .invocations()
        .into_iter()
        .filter(|i| i.function == "RecordingTransfer")
        .collect();
    assert_eq!(transfers.len(), 3, "one invocation per chunk, none retried");
    for doc in docs {
        assert!(
            emu.is_deleted(doc),
            "{doc} was freed in ACS once every chunk was archived"
        );
    }
    host.stop().await;
}

#[tokio::test]
async fn a_handler_killed_mid_transfer_is_restarted_and_the_message_resumes() {
    let emu = AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap();
    let doc = "0-wus-q2-kill";
    let total = 16 * MIB;
    let (proxy, env) = slow_transfer_setup(&emu, doc, total).await;
    let host = host(env.clone()).await;
    let (status, _) = deliver(
        &host,
        json!([ga_event(&emu, "evt-q2", "call-q2", &[doc], "Mp4")]),
    )
    .await;
    assert_eq!(status, 200);
    wait_until(Duration::from_secs(60), "five staged blocks", || {
        proxy.count(RequestKind::PutBlock) >= 5
    })
    .await;
    let first_worker = host.handler().unwrap().pid;
    host.kill_handler();
    let staged = proxy.count(RequestKind::PutBlock) as u64;
    host.wait_until_idle(Duration::from_secs(90)).await.unwrap();
    assert_ne!(
        host.handler().unwrap().pid,
        first_worker,
        "the host started a new worker"
    );
    let transfers: Vec<_> = host
        .invocations()
        .into_iter()
        .filter(|i| i.function == "RecordingTransfer")
        .collect();
    assert_eq!(
        transfers.last().unwrap().dequeue_count,
        Some(2),
        "the message came back once: {transfers:#?}"
    );

    let name = format!("2026/11/24/call-q2/000-{doc}.mp4");
    let container = container(&env);
    let record: Value =
        serde_json::from_slice(&read_blob(&container, &format!("{name}.json")).await).unwrap();
    // Ranges run in parallel, so the blocks staged before the kill need not be the leading
    // ones: what counts is how many were kept, wherever they sit.
    let reused = record["archive"]["reusedStagedBytes"].as_u64().unwrap();
    assert!(
        reused >= 3 * MIB,
        "kept the blocks staged before the kill: {record}"
    );
    // The Put Blocks in flight at the kill (TRANSFER_PARALLEL_BLOCKS: 2) whose bodies were
    // already sent reach the proxy's count only once it has read them, which can be after
    // `staged`; it forwards them all the same, so they are kept, not sent again.
    let late = 2;
    assert!(
        (proxy.count(RequestKind::PutBlock) as u64) <= staged + late + (total - reused) / MIB,
        "staged blocks were not sent again"
    );
    assert_eq!(
        sha256(&read_blob(&container, &name).await),
        emu.expected_sha256(doc).unwrap()
    );
    host.stop().await;
}

#[tokio::test]
async fn a_job_that_can_never_succeed_goes_to_the_poison_queue_at_once_with_its_reason_logged() {
    let emu = AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap();
    // ACS answers 404 for a recording it does not have (deleted, or past retention).
    let env = handler_env(Some(&emu));
    let poison = format!("{}-poison", setting(&env, "TRANSFER_QUEUE"));
    let host = host(env).await;
    let (status, _) = deliver(
        &host,
        json!([ga_event(
            &emu,
            "evt-q3",
            "call-q3",
            &["0-wus-q3-gone"],
            "Mp4"
        )]),
    )
    .await;
    assert_eq!(status, 200, "the webhook cannot know yet; it enqueues");
    host.wait_for("the handler's poison move", Duration::from_secs(60), |h| {
        h.worker_output().contains("moved to the poison queue")
    })
    .await
    .unwrap();
    let moved = peek_queue(&poison).await;
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(moved[0].contains("0-wus-q3-gone"), "{moved:?}");
    assert!(
        host.poison_moves().is_empty(),
        "not tried maxDequeueCount times first: {:#?}",
        host.poison_moves()
    );
    let output = host.worker_output();
    // The reason reaches the host on stderr, recorded as a Warning or an Error (the host
    // would never read it from a failed answer's Logs).
    let lines = host.worker_lines();
    assert!(
        lines.iter().any(|l| l.level >= LogLevel::Warning
            && l.text.contains("404")
            && l.text.contains("0-wus-q3-gone")),
        "the reason is in the handler's log at warning or error severity:\n{lines:#?}"
    );
    assert_eq!(
        output
            .matches("recording chunk can never be archived as sent")
            .count(),
        1,
        "tried once:\n{output}"
    );
    host.stop().await;
}

#[tokio::test]
async fn a_batch_with_duplicate_events_gives_one_blob_per_chunk() {
    let emu = AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap();
    let docs = ["0-wus-q4-aaaa", "0-wus-q4-bbbb"];
    for doc in docs {
        emu.add_recording(doc, MIB / 2, 4, RecordingFormat::Mp4);
    }
    let env = handler_env(Some(&emu));
    let host = host(env.clone()).await;
    let event = ga_event(&emu, "evt-q4", "call-q4", &docs, "Mp4");
    let mut redelivered = event.clone();
    redelivered["id"] = json!("evt-q4-again");
    let only_second = ga_event(&emu, "evt-q4-b", "call-q4", &docs[1..], "Mp4");
    let batch = json!([
        event.clone(),
        event.clone(),
        redelivered,
        only_second,
        event
    ]);
    let (status, body) = deliver(&host, batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], 5);
    assert_eq!(
        body["chunks"]["enqueued"], 2,
        "each chunk is handed over once per delivery: {body}"
    );
    // Event Grid redelivers the same batch (at least once).
    deliver(
        &host,
        json!([ga_event(&emu, "evt-q4", "call-q4", &docs, "Mp4")]),
    )
    .await;
    host.wait_until_idle(Duration::from_secs(60)).await.unwrap();
    assert_archived(&emu, &container(&env), "call-q4", &docs).await;
    host.stop().await;
}

/// A copy of the app whose host.json reads queue messages as plain text.
fn app_with_plain_messages() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut host_json: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("host.json")).unwrap()).unwrap();
    host_json["extensions"]["queues"]["messageEncoding"] = json!("none");
    std::fs::write(dir.path().join("host.json"), host_json.to_string()).unwrap();
    for function in ["RecordingWebhook", "RecordingTransfer"] {
        std::fs::create_dir(dir.path().join(function)).unwrap();
        std::fs::copy(
            root.join(function).join("function.json"),
            dir.path().join(function).join("function.json"),
        )
        .unwrap();
    }
    dir
}

#[tokio::test]
async fn event_grid_can_write_straight_to_the_queue_with_plain_messages() {
    use archiver_testkit::queue::{MessageEncoding, QueueClient};
    let emu = AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap();
    let docs = ["0-wus-q5-direct", "0-wus-q5-webhook"];
    for doc in docs {
        emu.add_recording(doc, MIB / 4, 8, RecordingFormat::Mp4);
    }
    let mut env = handler_env(Some(&emu));
    set(&mut env, "TRANSFER_MESSAGE_ENCODING", "none");
    let queue = env
        .iter()
        .find(|(k, _)| k == "TRANSFER_QUEUE")
        .unwrap()
        .1
        .clone();
    let app = app_with_plain_messages();
    let host = host_at(app.path(), env.clone()).await;

    // An Event Grid subscription with a Storage Queue destination writes each event, in the
    // Event Grid schema, as plain text: no webhook involved.
    let direct = ga_event(&emu, "evt-q5-direct", "call-q5", &docs[..1], "Mp4");
    let queues = QueueClient::from_connection_string(&azurite().connection_string()).unwrap();
    queues
        .put_message(&queue, &MessageEncoding::None.encode(&direct.to_string()))
        .await
        .unwrap();
    // The webhook writes plain text too, as TRANSFER_MESSAGE_ENCODING says.
    let (status, body) = deliver(
        &host,
        json!([ga_event(&emu, "evt-q5-hook", "call-q5b", &docs[1..], "Mp4")]),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    host.wait_until_idle(Duration::from_secs(60)).await.unwrap();
    assert!(host.poison_moves().is_empty(), "{:#?}", host.poison_moves());
    assert_archived(&emu, &container(&env), "call-q5", &docs[..1]).await;
    let blobs = list_blobs(&container(&env)).await;
    assert!(
        blobs
            .iter()
            .any(|b| b.name == format!("2026/11/24/call-q5b/000-{}.mp4", docs[1])),
        "{blobs:#?}"
    );
    host.stop().await;
}

#[tokio::test]
async fn when_the_queue_service_is_down_the_webhook_answers_503_through_the_host() {
    let storage = storage_down();
    let mut env = handler_env(None);
    set(&mut env, "RECORDINGS_STORAGE", &storage);
    env.push(("FUNCTIONS_WORKER_RUNTIME".into(), "Custom".into()));
    env.push(("AzureWebJobsStorage".into(), azurite().connection_string()));
    let options = HostOptions {
        handler: Some(HANDLER.into()),
        app_settings: env,
        // The trigger's own queue is down too; the host keeps polling it and logging.
        create_queues: false,
        ..HostOptions::default()
    };
    let host = FunctionsHost::start_with(Path::new(env!("CARGO_MANIFEST_DIR")), options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = deliver(
        &host,
        serde_json::from_str(include_str!("data/recording_ga_three_chunks.json")).unwrap(),
    )
    .await;
    assert_eq!(
        status, 503,
        "nothing is acknowledged that was not enqueued: {body}"
    );
    host.stop().await;
}
