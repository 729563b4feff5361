//! The operator CLI: `archiver check` and `archiver replay`, run as a user would.

mod support;

use std::process::{Command, Output};

use archiver_testkit::acs::{AcsEmulator, AcsEmulatorConfig, RecordingFormat};
use support::*;

const CLI: &str = env!("CARGO_BIN_EXE_archiver");

fn run(env: &[(String, String)], args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(CLI);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn check_shows_the_settings_without_secrets_and_probes_storage() {
    let env = handler_env(None);
    let out = run(&env, &["check"], None);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
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

    let out = run(&[], &["check"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("ACS_CONNECTION_STRING"),
        "{}",
        text(&out)
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
    let out = run(&env, &["check"], None);
    let shown = text(&out);
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
    let out = tokio::task::spawn_blocking(move || run(&env2, &["replay", &path], None))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("2 archived, 0 already archived, 0 failed"),
        "{}",
        text(&out)
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
    let out = tokio::task::spawn_blocking(move || run(&env2, &["replay", "-"], Some(&event_text)))
        .await
        .unwrap();
    assert!(
        text(&out).contains("0 archived, 2 already archived, 0 failed"),
        "{}",
        text(&out)
    );
}
