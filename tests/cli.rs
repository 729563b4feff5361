//! The operator CLI: `archiver check` and `archiver replay`, run as a user would.

mod support;

use archiver_testkit::acs::{AcsEmulator, AcsEmulatorConfig, RecordingFormat};
use support::*;

#[tokio::test]
async fn check_shows_the_settings_without_secrets_and_probes_storage() {
    let env = handler_env(None);
    let out = run_archiver(&env, &["check"], None);
    assert!(out.status.success(), "{}", output_text(&out));
    let shown = output_text(&out);
    let queue = &env.iter().find(|(k, _)| k == "TRANSFER_QUEUE").unwrap().1;
    assert!(shown.contains("queue trigger     can bind"), "{shown}");
    assert!(shown.contains("storage           container `"), "{shown}");
    assert!(
        shown.contains(&format!("storage           queue `{queue}`: ok")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "storage           poison queue `{queue}-poison`: ok"
        )),
        "{shown}"
    );
    assert!(
        !shown.contains(archiver_testkit::azurite::ACCOUNT_KEY),
        "{shown}"
    );

    let out = run_archiver(&[], &["check"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        output_text(&out).contains("ACS_CONNECTION_STRING"),
        "{}",
        output_text(&out)
    );
}

#[tokio::test]
async fn check_fails_naming_the_setting_when_storage_refuses_the_key() {
    let mut env = handler_env(None);
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    set(
        &mut env,
        "RECORDINGS_STORAGE",
        &format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={wrong_key};\
             BlobEndpoint={};QueueEndpoint={};",
            azurite().blob_endpoint(),
            azurite().queue_endpoint()
        ),
    );
    let out = run_archiver(&env, &["check"], None);
    let shown = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    for subject in ["container `", "queue `", "poison queue `"] {
        assert!(
            shown.lines().any(|l| l.contains(subject)
                && l.contains("FAILED")
                && l.contains("key in RECORDINGS_STORAGE")),
            "{subject}: {shown}"
        );
    }
    assert!(!shown.contains(wrong_key), "{shown}");
}

#[tokio::test]
async fn replay_archives_a_dead_lettered_delivery_once() {
    let emu = AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap();
    let docs = ["0-wus-cli-aaaa", "0-wus-cli-bbbb"];
    for doc in docs {
        emu.add_recording(doc, 300_000, 1, RecordingFormat::Mp4);
    }
    let env = handler_env(Some(&emu));
    // A dead-letter blob holds the delivery's events with Event Grid's own fields added.
    let mut event = ga_event(&emu, "evt-cli", "call-cli", &docs, "Mp4");
    event["deadLetterReason"] = serde_json::json!("MaxDeliveryAttemptsExceeded");
    event["deliveryAttempts"] = serde_json::json!(30);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deadletter.json");
    std::fs::write(&file, serde_json::json!([event]).to_string()).unwrap();

    // The blocking CLI runs off the runtime that serves the emulator.
    let (env2, path) = (env.clone(), file.to_str().unwrap().to_string());
    let out = tokio::task::spawn_blocking(move || run_archiver(&env2, &["replay", &path], None))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("2 archived, 0 already archived, 0 failed"),
        "{}",
        output_text(&out)
    );
    assert_archived(
        &emu,
        &env.iter()
            .find(|(k, _)| k == "RECORDINGS_CONTAINER")
            .unwrap()
            .1,
        "call-cli",
        &docs,
    )
    .await;

    let (env2, event_text) = (env.clone(), event.to_string());
    let out = tokio::task::spawn_blocking(move || {
        run_archiver(&env2, &["replay", "-"], Some(&event_text))
    })
    .await
    .unwrap();
    assert!(
        output_text(&out).contains("0 archived, 2 already archived, 0 failed"),
        "{}",
        output_text(&out)
    );
}
