//! The archive as a catalog, against a real Azurite (the repo's pinned 3.35.0, started once for
//! this test binary on free ports, in memory): blob index tags set at commit and found with
//! Find Blobs by Tags, the access tier, what Azurite does with WORM headers, `catalog::find`.

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use recording_archiver::blob::{BlobClient, BlobCommitOptions, BlockId, CommitOutcome};
use recording_archiver::catalog::tags::{BlobKind, BlobTags};
use recording_archiver::catalog::write::archive_headers;
use recording_archiver::catalog::{self, Selector};
use recording_archiver::config::archive::{AccessTier, Immutability, ImmutabilityMode};
use recording_archiver::config::{storage, ArchiveSettings, Secret};
use recording_archiver::recording::{CallIds, ChunkJob, ChunkSource, MediaFormat};
use recording_archiver::storage::StorageAuth;
use serde_json::json;
use support::*;
use url::Url;

fn blob_client(container: &str) -> BlobClient {
    use base64::Engine as _;
    BlobClient::new(
        http().clone(),
        Url::parse(&azurite().blob_endpoint()).unwrap(),
        container,
        StorageAuth::SharedKey {
            account: storage::DEV_ACCOUNT.into(),
            key: Secret::new(
                base64::engine::general_purpose::STANDARD
                    .decode(storage::DEV_ACCOUNT_KEY)
                    .unwrap(),
            ),
        },
    )
}

/// A chunk job of call `call` (server call id in base64, with `+ / =`).
fn job(call: &str, event: &str, index: u32, count: u32, start: &str) -> ChunkJob {
    ChunkJob {
        event_id: event.into(),
        call: CallIds {
            call_id: Some(call.into()),
            server_call_id: Some(format!("aHR0c/{call}+1=")),
            recording_id: Some(format!("rec-{call}")),
        },
        document_id: format!("doc-{index}"),
        index,
        chunk_count: count,
        end_reason: None,
        recording_start_time: Some(start.into()),
        recording_duration_ms: None,
        session_end_reason: None,
        content_type: None,
        channel_type: None,
        format_type: Some("Mp4".into()),
        source: ChunkSource::Preview,
        siblings: Default::default(),
    }
}

fn options(headers: Vec<(&'static str, String)>) -> BlobCommitOptions {
    BlobCommitOptions {
        content_type: Some("application/json".into()),
        metadata: Vec::new(),
        if_none_match_star: true,
        headers,
    }
}

/// A response header of `blob`, read through a read SAS as any client would.
async fn blob_header(container: &str, blob: &str, name: &str) -> Option<String> {
    let sas = azurite().container_sas(container, "r", Duration::from_secs(600));
    let url = format!("{}/{container}/{blob}?{sas}", azurite().blob_endpoint());
    let r = http().head(&url).send().await.unwrap();
    assert!(r.status().is_success(), "HEAD {blob}: {}", r.status());
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn tags_set_at_commit_find_the_blob_by_call_server_call_recording_and_date() {
    let container = unique("tags");
    let client = blob_client(&container);
    client.create_container().await.unwrap();
    let settings = ArchiveSettings {
        access_tier: Some(AccessTier::Cool),
        ..Default::default()
    };
    let j = job("c-1", "evt-1", 0, 1, "2026-11-24T09:00:00Z");
    let media = "2026/11/24/c-1/000-doc-0.mp4";
    let tags = BlobTags::for_chunk(&j, MediaFormat::MP4, BlobKind::Media);
    let id = BlockId::from_index(0);
    client
        .put_block(media, &id, Bytes::from_static(b"media"), None)
        .await
        .unwrap();
    let headers = archive_headers(&settings, &tags, SystemTime::now());
    let outcome = client
        .put_block_list(media, &[id], &options(headers))
        .await
        .unwrap();
    assert!(matches!(outcome, CommitOutcome::Committed { .. }));
    let record_tags = BlobTags::for_chunk(&j, MediaFormat::MP4, BlobKind::Record);
    client
        .put_blob_small(
            &format!("{media}.json"),
            Bytes::from_static(b"{}"),
            &options(archive_headers(&settings, &record_tags, SystemTime::now())),
        )
        .await
        .unwrap();
    // Another call, a day later, to be left out.
    let other = job("c-2", "evt-2", 0, 1, "2026-11-25T09:00:00Z");
    client
        .put_blob_small(
            "2026/11/25/c-2/000-doc-0.mp4",
            Bytes::from_static(b"x"),
            &options(archive_headers(
                &settings,
                &BlobTags::for_chunk(&other, MediaFormat::MP4, BlobKind::Media),
                SystemTime::now(),
            )),
        )
        .await
        .unwrap();

    for selector in [
        Selector::Call("c-1".into()),
        Selector::ServerCall("aHR0c/c-1+1=".into()),
        Selector::Recording("rec-c-1".into()),
        Selector::started("2026-11-24", Some("2026-11-24")).unwrap(),
        Selector::started("2026-11-24T08:59:59Z", Some("2026-11-24T09:00:01Z")).unwrap(),
    ] {
        let query = selector.query(BlobKind::Media).unwrap().to_string();
        let found = client.find_blobs_by_tags(&query).await.unwrap();
        assert_eq!(found, [media], "{selector:?}: {query}");
        let query = selector.query(BlobKind::Record).unwrap().to_string();
        let found = client.find_blobs_by_tags(&query).await.unwrap();
        assert_eq!(found, [format!("{media}.json")], "{selector:?}: {query}");
    }
    let since = Selector::started("2026-11-24", None).unwrap();
    let query = since.query(BlobKind::Media).unwrap().to_string();
    assert_eq!(client.find_blobs_by_tags(&query).await.unwrap().len(), 2);
    assert_eq!(
        blob_header(&container, media, "x-ms-access-tier")
            .await
            .as_deref(),
        Some("Cool"),
        "the tier set at commit"
    );
}

#[tokio::test]
async fn a_hostile_tag_value_is_left_out_and_the_blob_still_commits() {
    let container = unique("hostile");
    let client = blob_client(&container);
    client.create_container().await.unwrap();
    let mut j = job("c-3", "evt-3", 0, 1, "2026-11-24T09:00:00Z");
    j.call.call_id = Some("c-3' OR 'a'='a".into());
    j.call.recording_id = Some("é".repeat(10));
    let tags = BlobTags::for_chunk(&j, MediaFormat::MP4, BlobKind::Media);
    let outcome = client
        .put_blob_small(
            "a.mp4",
            Bytes::from_static(b"x"),
            &options(archive_headers(
                &ArchiveSettings::default(),
                &tags,
                SystemTime::now(),
            )),
        )
        .await
        .unwrap();
    assert!(matches!(outcome, CommitOutcome::Committed { .. }));
    let query = Selector::ServerCall("aHR0c/c-3+1=".into())
        .query(BlobKind::Media)
        .unwrap()
        .to_string();
    assert_eq!(client.find_blobs_by_tags(&query).await.unwrap(), ["a.mp4"]);
}

/// Azurite 3.35 reports no version-level immutability on any container and ignores the
/// immutability and legal-hold headers on a write (its Set Blob Immutability Policy and Set
/// Blob Legal Hold answer 501): the start-up check is what stops WORM settings there.
#[tokio::test]
async fn azurite_containers_cannot_hold_worm_blobs_and_say_so() {
    let container = unique("worm");
    let client = blob_client(&container);
    client.create_container().await.unwrap();
    let props = client.container_properties().await.unwrap();
    assert!(!props.version_level_worm);
    let settings = ArchiveSettings {
        immutability: Some(Immutability {
            days: 1,
            mode: ImmutabilityMode::Unlocked,
        }),
        legal_hold: true,
        ..Default::default()
    };
    let headers = archive_headers(&settings, &BlobTags::default(), SystemTime::now());
    client
        .put_blob_small("w.json", Bytes::from_static(b"{}"), &options(headers))
        .await
        .expect("Azurite ignores the WORM headers");
    assert_eq!(
        blob_header(&container, "w.json", "x-ms-legal-hold").await,
        None,
        "and keeps no legal hold"
    );
}

#[tokio::test]
async fn find_lists_recordings_with_chunks_and_completeness() {
    let container = unique("find");
    let client = blob_client(&container);
    client.create_container().await.unwrap();
    let start = "2026-11-24T09:00:00Z";
    // evt-a: both chunks' records; evt-b: one of two, then its manifest.
    for (event, index) in [("evt-a", 0), ("evt-a", 1), ("evt-b", 0)] {
        let j = job("c-9", event, index, 2, start);
        let media = format!("2026/11/24/c-9/{event}-{index:03}.mp4");
        let record = json!({"archive": {
            "sourceEventId": event, "documentId": j.document_id, "chunkIndex": index,
            "chunkCount": 2, "mediaBlob": media, "sizeBytes": 100 + index,
            "sha256": "00ff", "finishedAt": "2026-11-24T10:00:00Z",
            "call": j.call, "recordingStartTime": start}});
        client
            .put_blob_small(
                &format!("{media}.json"),
                Bytes::from(record.to_string()),
                &options(archive_headers(
                    &ArchiveSettings::default(),
                    &BlobTags::for_chunk(&j, MediaFormat::MP4, BlobKind::Record),
                    SystemTime::now(),
                )),
            )
            .await
            .unwrap();
    }
    let found = catalog::find(&client, &Selector::Call("c-9".into()))
        .await
        .unwrap();
    let summary: Vec<_> = found
        .iter()
        .map(|r| (r.event_id.as_str(), r.chunks.len(), r.is_complete()))
        .collect();
    assert_eq!(summary, [("evt-a", 2, true), ("evt-b", 1, false)]);
    assert_eq!(found[0].total_bytes(), 201);
    assert_eq!(
        found[0].chunks[1].media_blob,
        "2026/11/24/c-9/evt-a-001.mp4"
    );

    let b = job("c-9", "evt-b", 0, 2, start);
    client
        .put_blob_small(
            "2026/11/24/c-9/manifest-doc-0.json",
            Bytes::from(json!({"eventId": "evt-b"}).to_string()),
            &options(archive_headers(
                &ArchiveSettings::default(),
                &BlobTags::for_recording(&b, BlobKind::Manifest),
                SystemTime::now(),
            )),
        )
        .await
        .unwrap();
    let found = catalog::find(&client, &Selector::Recording("rec-c-9".into()))
        .await
        .unwrap();
    assert!(found[1].is_complete(), "a manifest makes it complete");
    assert_eq!(
        found[1].manifest.as_deref(),
        Some("2026/11/24/c-9/manifest-doc-0.json")
    );
    assert!(catalog::find(&client, &Selector::Call("nobody".into()))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn small_reads_are_bounded_and_missing_blobs_are_none() {
    let container = unique("read");
    let client = blob_client(&container);
    client.create_container().await.unwrap();
    client
        .put_blob_small(
            "r.json",
            Bytes::from_static(b"0123456789"),
            &options(vec![]),
        )
        .await
        .unwrap();
    client
        .put_blob_small("empty", Bytes::new(), &options(vec![]))
        .await
        .unwrap();
    assert_eq!(
        client.get_blob_small("r.json", 10).await.unwrap().unwrap(),
        "0123456789"
    );
    assert!(client.get_blob_small("r.json", 9).await.is_err());
    assert_eq!(
        client.get_blob_small("empty", 10).await.unwrap().unwrap(),
        ""
    );
    assert_eq!(client.get_blob_small("none.json", 10).await.unwrap(), None);
}

/// The whole path in-process: settings -> clients -> the start-up probe (which creates the
/// notify queue) -> five concurrent deliveries of the same two-chunk recording through the
/// real transfer (ACS emulator -> Azurite). One manifest, one notification, tags and tier on
/// every blob, and `find` lists the recording as complete; a sixth delivery changes nothing.
#[tokio::test]
async fn five_concurrent_duplicate_deliveries_archive_once_with_one_manifest_and_one_notification()
{
    use archiver_testkit::acs::{AcsEmulator, AcsEmulatorConfig, RecordingFormat};
    use recording_archiver::config::Settings;
    use recording_archiver::wiring;
    use std::collections::HashMap;

    let emu = AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap();
    let docs = ["0-wus-d7-aaaa", "0-wus-d7-bbbb"];
    for (i, doc) in docs.iter().enumerate() {
        emu.add_recording(doc, 300_000 + i as u64, 3, RecordingFormat::Mp4);
    }
    let container = unique("e2e");
    let notify = unique("archived");
    let env: HashMap<String, String> = [
        ("RECORDINGS_STORAGE", azurite().connection_string()),
        ("RECORDINGS_CONTAINER", container.clone()),
        ("TRANSFER_QUEUE", unique("q")),
        ("ACS_CONNECTION_STRING", emu.connection_string()),
        ("ACS_EXTRA_ALLOWED_HOSTS", emu.extra_allowed_hosts()),
        ("ARCHIVED_NOTIFY_QUEUE", notify.clone()),
        ("TRANSFER_ACCESS_TIER", "Cool".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let lookup = move |name: &str| env.get(name).cloned();
    let settings = Settings::load(&lookup).unwrap();
    let clients = wiring::build_clients(&settings, &lookup).unwrap();
    let findings = wiring::probe(&settings, &clients).unwrap().run().await;
    let shown: Vec<_> = findings.iter().map(ToString::to_string).collect();
    assert!(findings.iter().all(|f| f.is_ready()), "{shown:?}");
    assert!(
        shown.iter().any(|f| f.contains(&notify)),
        "the probe checks the notify queue: {shown:?}"
    );
    let app = wiring::app_from_clients(&settings, clients).unwrap();

    let event = ga_event(&emu, "evt-e2e", "call-e2e", &docs, "Mp4").to_string();
    let deliveries = (0..5).map(|_| app.archive_message(&event));
    for done in futures_util::future::join_all(deliveries).await {
        let done = done.unwrap();
        assert_eq!(done.retry + done.dropped, 0, "{:?}", done.failures);
    }
    let again = app.archive_message(&event).await.unwrap();
    assert_eq!(again.already_archived, 2);

    let names: Vec<String> = list_blobs(&container)
        .await
        .into_iter()
        .map(|b| b.name)
        .collect();
    let manifests: Vec<_> = names
        .iter()
        .filter(|n| n.contains("/manifest-") && !n.ends_with(".notified.json"))
        .collect();
    assert_eq!(
        manifests,
        ["2026/11/24/call-e2e/manifest-0-wus-d7-aaaa.json"],
        "{names:?}"
    );
    let messages = peek_queue(&notify).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message: serde_json::Value = serde_json::from_str(&messages[0]).unwrap();
    assert_eq!(message["type"], "RecordingArchived");
    assert_eq!(message["manifest"]["blob"], manifests[0].as_str());
    assert_eq!(message["chunkCount"], 2);
    assert_eq!(message["totalBytes"], 600_001);
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_blob(&container, manifests[0]).await).unwrap();
    assert_eq!(manifest["chunks"][1]["documentId"], docs[1]);
    assert!(
        manifest["chunks"][0]["durationMs"].is_number(),
        "{manifest}"
    );
    assert!(manifest["participants"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));

    let client = blob_client(&container);
    let found = catalog::find(&client, &Selector::Call("call-e2e".into()))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0].is_complete());
    assert_eq!(found[0].manifest.as_deref(), Some(manifests[0].as_str()));
    assert_eq!(found[0].chunks.len(), 2);
    for chunk in &found[0].chunks {
        assert_eq!(
            blob_header(&container, &chunk.media_blob, "x-ms-access-tier")
                .await
                .as_deref(),
            Some("Cool")
        );
    }

    // The operator's view: `archiver find` with only the storage settings.
    let env = [
        (
            "RECORDINGS_STORAGE".to_string(),
            azurite().connection_string(),
        ),
        ("RECORDINGS_CONTAINER".to_string(), container.clone()),
    ];
    let out = run_archiver(&env, &["find", "--call", "call-e2e"], None);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("complete, 2 of 2 chunk(s), 600001 bytes"),
        "{text}"
    );
    assert!(text.contains(manifests[0].as_str()), "{text}");
    let out = run_archiver(&env, &["find", "--since", "2030-01-01"], None);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let out = run_archiver(&env, &["find", "--call", "x' OR 'a'='a"], None);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
}
