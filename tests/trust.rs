//! The trust boundaries of what is signed, sent and deleted, through the real `handler`: signed
//! requests reach only recording objects, a chunk counts as archived only from its own source,
//! a delete is logged as done only when ACS said so, and duplicates absorbed after the delete
//! on several instances sharing one queue.

mod support;

use std::path::Path;
use std::time::Duration;

use archiver_testkit::acs::{AcsEmulator, AcsEmulatorConfig, Fault, RecordingFormat};
use archiver_testkit::host::{FunctionsHost, HandlerProcess, HostOptions};
use archiver_testkit::queue::QueueClient;
use serde_json::{json, Value};
use support::*;

const KIB: u64 = 1024;

async fn emulator() -> AcsEmulator {
    AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap()
}

/// A handler that archives inline and deletes from ACS after the archive, and its settings.
async fn inline_deleting_handler(emu: &AcsEmulator) -> (HandlerProcess, Vec<(String, String)>) {
    let mut env = handler_env(Some(emu));
    set(&mut env, "ARCHIVE_MODE", "inline");
    set(&mut env, "DELETE_AFTER_ARCHIVE", "true");
    (start_handler(&env).await, env)
}

async fn post(h: &HandlerProcess, events: Value) -> (u16, Value) {
    post_delivery(h, events.to_string()).await
}

/// The handler's output once it holds `needle` (its lines arrive through a pipe, a little
/// after the answer).
async fn output_with(h: &HandlerProcess, needle: &str) -> String {
    wait_until(Duration::from_secs(10), needle, || {
        h.output().contains(needle)
    })
    .await;
    h.output()
}

/// The first chunk of `event`, to rewrite.
fn chunk0(event: &mut Value) -> &mut Value {
    &mut event["data"]["recordingStorageInfo"]["recordingChunks"][0]
}

/// Log lines at ERROR level, in the text or the JSON format.
fn error_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(r#""level":"ERROR""#))
        .collect()
}

/// Defect 2: the allowlist checked hosts only, and the ACS endpoint is an allowed host, so an
/// event could have a signed DELETE sent to the Identity API. Now a chunk whose media is not a
/// recording object is refused, and a delete location that is not the archived object is
/// never requested (the chunk is still archived: a bad delete location costs only the delete).
#[tokio::test]
async fn signed_requests_go_only_to_recording_objects() {
    let emu = emulator().await;
    // One document per event: a delivery archives a document once.
    let docs = ["0-wus-t2-a", "0-wus-t2-b", "0-wus-t2-c"];
    let victim = "0-wus-t2-victim";
    for doc in docs.iter().chain([&victim]) {
        emu.add_recording(doc, 10 * KIB, 1, RecordingFormat::Mp4);
    }
    let (h, _) = inline_deleting_handler(&emu).await;
    let acs = emu.acs_endpoint();
    let identity = format!("{acs}identities/8:acs:victim?api-version=2023-10-01");

    // The reported attack: other APIs on the ACS endpoint.
    let mut attack = ga_event(&emu, "evt-t2-a", "call-t2", &docs[..1], "Mp4");
    let c = chunk0(&mut attack);
    c["contentLocation"] = json!(format!("{acs}phoneNumbers?api-version=2022-12-01"));
    c["metadataLocation"] = json!(null);
    c["deleteLocation"] = json!(identity);
    // A real recording, with the Identity API as its delete location.
    let mut real_then_identity = ga_event(&emu, "evt-t2-b", "call-t2b", &docs[1..2], "Mp4");
    chunk0(&mut real_then_identity)["deleteLocation"] = json!(identity);
    // A real recording whose delete location frees another recording object.
    let mut frees_another = ga_event(&emu, "evt-t2-c", "call-t2c", &docs[2..], "Mp4");
    chunk0(&mut frees_another)["deleteLocation"] = json!(emu.delete_url(victim));

    let (status, body) = post(&h, json!([attack])).await;
    assert_eq!(status, 400, "nothing here may ever be requested: {body}");
    let reason = body["rejected"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("contentLocation") && reason.contains("not a recording object"),
        "{reason}"
    );
    assert!(emu.requests().is_empty(), "{:#?}", emu.requests());

    let (status, body) = post(&h, json!([real_then_identity, frees_another])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks"]["archived"], 2, "{body}");
    let requests = emu.requests();
    assert!(
        requests.iter().all(|r| r.method == "GET"
            && matches!(r.document_id.as_deref(), Some(d) if docs[1..].contains(&d))),
        "only the two recordings were fetched, nothing was deleted: {requests:#?}"
    );
    assert!(!emu.is_deleted(victim));
    let output = output_with(&h, "deleteLocation names").await;
    let refusals: Vec<&str> = error_lines(&output)
        .into_iter()
        .filter(|l| l.contains("deleteLocation refused"))
        .collect();
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("not a recording object"))
            && refusals.iter().any(|l| l.contains(victim)),
        "each refusal is logged with its reason:\n{output}"
    );
    assert!(output.contains("phoneNumbers"), "{output}");
}

/// Defect 5's URLs, in queue mode: refused before anything is enqueued, with the reasons;
/// 400 only when nothing in the delivery is usable.
#[tokio::test]
async fn the_queue_mode_webhook_refuses_what_the_transfer_would_refuse() {
    let emu = emulator().await;
    let env = handler_env(Some(&emu));
    let queue = setting(&env, "TRANSFER_QUEUE");
    let h = start_handler(&env).await;
    let bad = [
        "http://169.254.169.254/metadata/identity/oauth2/token",
        "file:///etc/passwd",
        "http://127.0.0.1:8080/v1/objects/x/content/video",
    ];
    let events: Vec<Value> = bad
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let mut e = ga_event(
                &emu,
                &format!("evt-t5-{i}"),
                "call-t5",
                &[format!("0-wus-t5-{i}").as_str()],
                "Mp4",
            );
            chunk0(&mut e)["contentLocation"] = json!(url);
            e
        })
        .collect();
    let (status, body) = post(&h, json!(events)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["rejected"].as_array().unwrap().len(), 3, "{body}");

    let good = ga_event(&emu, "evt-t5-ok", "call-t5", &["0-wus-t5-ok"], "Mp4");
    let mut all = events.clone();
    all.push(good);
    let (status, body) = post(&h, json!(all)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks"]["enqueued"], 1, "{body}");
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 3, "{body}");
    assert!(rejected
        .iter()
        .all(|r| r["reason"].as_str().unwrap().contains("contentLocation")));
    let queues = QueueClient::from_connection_string(&azurite().connection_string()).unwrap();
    assert_eq!(queues.approximate_count(queue).await.unwrap(), 1);
    assert!(emu.requests().is_empty());
}

/// Defect 3: "already archived" was decided by blob name alone, so an event naming the same
/// chunk but another object got that object deleted without copying it.
#[tokio::test]
async fn a_chunk_counts_as_archived_only_from_its_own_source() {
    let emu = emulator().await;
    let (real, victim) = ("0-wus-t3-real", "0-wus-t3-victim");
    emu.add_recording(real, 40 * KIB, 3, RecordingFormat::Mp4);
    emu.add_recording(victim, 50 * KIB, 4, RecordingFormat::Mp4);
    let (h, env) = inline_deleting_handler(&emu).await;

    let (status, body) = post(
        &h,
        json!([ga_event(&emu, "evt-t3", "call-t3", &[real], "Mp4")]),
    )
    .await;
    assert_eq!(
        (status, &body["chunks"]["archived"]),
        (200, &json!(1)),
        "{body}"
    );
    assert!(emu.is_deleted(real));

    // Same documentId, call and date (so the same blob name), another object's URLs.
    let mut forged = ga_event(&emu, "evt-t3-forged", "call-t3", &[victim], "Mp4");
    chunk0(&mut forged)["documentId"] = json!(real);
    emu.clear_requests();
    let (status, body) = post(&h, json!([forged])).await;
    assert_eq!(status, 400, "a conflict is permanent: {body}");
    let reason = body["rejected"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("archive conflict") && reason.contains(real) && reason.contains(victim),
        "both sources are named: {reason}"
    );
    assert!(!emu.is_deleted(victim), "nothing is deleted");
    assert!(
        emu.requests().is_empty(),
        "the victim is neither fetched nor deleted: {:#?}",
        emu.requests()
    );
    let output = output_with(&h, "archive conflict").await;
    assert!(
        error_lines(&output)
            .iter()
            .any(|l| l.contains("archive conflict") && l.contains(victim)),
        "logged at error:\n{output}"
    );
    let media = format!("2026/11/24/call-t3/000-{real}.mp4");
    assert_eq!(
        sha256(&read_blob(setting(&env, "RECORDINGS_CONTAINER"), &media).await),
        emu.expected_sha256(real).unwrap(),
        "the archive is untouched"
    );
}

/// Defect 6 (the delete log): a refused or failed DELETE was still logged as "recording
/// deleted from ACS".
#[tokio::test]
async fn only_a_delete_that_acs_accepted_is_logged_as_deleted() {
    let emu = emulator().await;
    let (refused, accepted) = ("0-wus-t6-refused", "0-wus-t6-accepted");
    emu.add_recording(refused, 8 * KIB, 5, RecordingFormat::Mp4);
    emu.add_recording(accepted, 8 * KIB, 6, RecordingFormat::Mp4);
    // Metadata and media as usual; the DELETE answered 403.
    emu.push_faults(
        refused,
        vec![Fault::IgnoreRange, Fault::IgnoreRange, Fault::status(403)],
    );
    let (h, _) = inline_deleting_handler(&emu).await;

    let (status, body) = post(
        &h,
        json!([ga_event(&emu, "evt-t6-a", "call-t6a", &[refused], "Mp4")]),
    )
    .await;
    assert_eq!(
        status, 200,
        "the chunk is archived; the delete is ACS's retention's: {body}"
    );
    assert!(!emu.is_deleted(refused));
    let output = output_with(&h, "ACS delete failed for some").await;
    assert!(output.contains("403"), "{output}");
    assert!(
        !output.contains("recording deleted from ACS"),
        "a 403 is not a delete:\n{output}"
    );

    let (status, _) = post(
        &h,
        json!([ga_event(&emu, "evt-t6-b", "call-t6b", &[accepted], "Mp4")]),
    )
    .await;
    assert_eq!(status, 200);
    assert!(emu.is_deleted(accepted));
    output_with(&h, "recording deleted from ACS").await;
}

/// Defect 9, for the operator: `archiver replay` of a delivery whose recording was archived
/// and freed in ACS succeeds without asking ACS anything.
#[tokio::test]
async fn replay_after_the_delete_succeeds_without_acs() {
    let emu = emulator().await;
    let docs = ["0-wus-t9-replay-a", "0-wus-t9-replay-b"];
    for doc in docs {
        emu.add_recording(doc, 20 * KIB, 7, RecordingFormat::Mp4);
    }
    let mut env = handler_env(Some(&emu));
    set(&mut env, "DELETE_AFTER_ARCHIVE", "true");
    let delivery = json!([ga_event(
        &emu,
        "evt-t9-replay",
        "call-t9-replay",
        &docs,
        "Mp4"
    )]);
    let replay = |env: Vec<(String, String)>, text: String| {
        tokio::task::spawn_blocking(move || {
            let out = run_archiver(&env, &["replay", "-"], Some(&text));
            (out.status, output_text(&out))
        })
    };
    let (status, out) = replay(env.clone(), delivery.to_string()).await.unwrap();
    assert!(
        status.success() && out.contains("2 archived, 0 already archived, 0 failed"),
        "{out}"
    );
    assert!(docs.iter().all(|d| emu.is_deleted(d)), "{out}");

    emu.clear_requests();
    let (status, out) = replay(env.clone(), delivery.to_string()).await.unwrap();
    assert!(
        status.success() && out.contains("0 archived, 2 already archived, 0 failed"),
        "{out}"
    );
    assert!(
        emu.requests().iter().all(|r| r.method == "DELETE"),
        "no GET to ACS: {:#?}",
        emu.requests()
    );
    assert_archived(
        &emu,
        setting(&env, "RECORDINGS_CONTAINER"),
        "call-t9-replay",
        &docs,
    )
    .await;
}

/// Defect 9: with delete-after-archive on, duplicates fetched ACS metadata before looking at
/// the container, got 404 once the first copy had deleted the recording, and poisoned
/// themselves. Three instances share one queue; twelve recordings of three chunks are each
/// delivered three times, to different instances: twice at once, then once more after the
/// recordings were freed in ACS.
#[tokio::test]
async fn duplicates_on_several_instances_are_absorbed_after_the_delete() {
    const INSTANCES: usize = 3;
    const RECORDINGS: usize = 12;
    const DELIVERIES: usize = 3;
    let emu = emulator().await;
    let recordings: Vec<(String, Vec<String>)> = (0..RECORDINGS)
        .map(|r| {
            let docs = (0..3)
                .map(|c| {
                    let doc = format!("0-wus-t9-r{r:02}c{c}");
                    emu.add_recording(
                        &doc,
                        48 * KIB + (r * 3 + c) as u64 * 997,
                        (r * 3 + c) as u64,
                        RecordingFormat::Mp4,
                    );
                    doc
                })
                .collect();
            (format!("call-t9-{r:02}"), docs)
        })
        .collect();
    let mut env = handler_env(Some(&emu));
    set(&mut env, "DELETE_AFTER_ARCHIVE", "true");
    env.push(("FUNCTIONS_WORKER_RUNTIME".into(), "Custom".into()));
    env.push(("AzureWebJobsStorage".into(), azurite().connection_string()));
    let mut hosts = Vec::new();
    for _ in 0..INSTANCES {
        let options = HostOptions {
            handler: Some(HANDLER.into()),
            app_settings: env.clone(),
            max_polling_interval: Some(Duration::from_millis(200)),
            visibility_timeout: Some(Duration::from_millis(500)),
            ..HostOptions::default()
        };
        hosts.push(
            FunctionsHost::start_with(Path::new(env!("CARGO_MANIFEST_DIR")), options)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    // Two deliveries of every event at once (duplicates racing each other), then, once all
    // is archived and freed in ACS, the third (duplicates after the delete).
    let client = reqwest::Client::new();
    for rounds in [0..DELIVERIES - 1, DELIVERIES - 1..DELIVERIES] {
        let mut deliveries = Vec::new();
        for round in rounds {
            for (r, (call, docs)) in recordings.iter().enumerate() {
                let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
                let event = ga_event(&emu, &format!("evt-t9-{r}"), call, &docs, "Mp4");
                let host = &hosts[(r + round) % INSTANCES];
                deliveries.push(
                    client
                        .post(host.url("/api/RecordingWebhook?code=function-key"))
                        .header("Content-Type", "application/json")
                        .header("aeg-event-type", "Notification")
                        .body(json!([event]).to_string())
                        .send(),
                );
            }
        }
        for answer in futures_util::future::join_all(deliveries).await {
            assert_eq!(answer.unwrap().status(), 200);
        }
        // The queue count includes messages being processed, so one host seeing it empty
        // with nothing running means every instance is done.
        for host in &hosts {
            host.wait_until_idle(Duration::from_secs(120))
                .await
                .unwrap();
        }
    }

    let transfers: Vec<_> = hosts
        .iter()
        .flat_map(|h| h.invocations())
        .filter(|i| i.function == "RecordingTransfer")
        .collect();
    let failed = transfers.iter().filter(|i| !i.succeeded()).count();
    // Moved by the host after its retries, or by the handler at once for a permanent failure.
    let poison_queue = format!("{}-poison", setting(&env, "TRANSFER_QUEUE"));
    let queues = QueueClient::from_connection_string(&azurite().connection_string()).unwrap();
    let poison = hosts.iter().map(|h| h.poison_moves().len()).sum::<usize>()
        + queues.approximate_count(&poison_queue).await.unwrap() as usize;
    let deletes = emu
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count();
    let error_count: usize = hosts
        .iter()
        .map(|h| error_lines(&h.worker_output()).len())
        .sum();
    println!(
        "{INSTANCES} instances, {} job messages: {} RecordingTransfer invocations, {failed} failed, {poison} poisoned, {error_count} error lines, {deletes} DELETEs sent",
        RECORDINGS * 3 * DELIVERIES,
        transfers.len()
    );
    assert_eq!(
        transfers.len(),
        RECORDINGS * 3 * DELIVERIES,
        "one invocation per job message, none retried"
    );
    assert_eq!((failed, poison), (0, 0));
    for host in &hosts {
        let output = host.worker_output();
        let errors = error_lines(&output);
        assert!(errors.is_empty(), "no error log: {errors:#?}");
    }
    let container = setting(&env, "RECORDINGS_CONTAINER");
    for (call, docs) in &recordings {
        let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
        assert_archived(&emu, container, call, &docs).await;
        for doc in docs {
            assert!(emu.is_deleted(doc), "{doc} freed in ACS");
        }
    }
    for host in hosts {
        host.stop().await;
    }
}
