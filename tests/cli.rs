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
    assert!(
        shown.contains("  ok      queue trigger can bind to these storage settings"),
        "{shown}"
    );
    assert!(shown.contains("  ok      container `"), "{shown}");
    assert!(
        shown.contains(&format!("  ok      queue `{queue}` ")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("  ok      poison queue `{queue}-poison` ")),
        "{shown}"
    );
    assert!(shown.contains("All 4 checks passed."), "{shown}");
    assert!(
        shown.contains("RECORDINGS_STORAGE         connection string: account devstoreaccount1, account key ***"),
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
    let lines: Vec<&str> = shown.lines().collect();
    for subject in ["container `", "queue `", "poison queue `"] {
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("  FAILED  {subject}")))
            .unwrap_or_else(|| panic!("{subject}: {shown}"));
        assert!(lines[at].contains("HTTP 403"), "{shown}");
        let fix = lines[at + 1];
        assert!(
            fix.contains("key in RECORDINGS_STORAGE") || fix.contains("fix: as above"),
            "{subject}: {shown}"
        );
    }
    assert!(shown.contains("key in RECORDINGS_STORAGE"), "{shown}");
    assert!(!shown.contains(wrong_key), "{shown}");
}

/// What a new user meets first: a local.settings.json whose storage emulator is not running.
/// The answer is a table, the cause and the setting to fix, one line per check, and in a
/// redirected output neither colour codes nor a log line per retry.
#[tokio::test]
async fn check_without_storage_names_the_cause_and_the_fix_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.settings.json");
    let port = archiver_testkit::host::free_port();
    let dead = format!("http://127.0.0.1:{port}/devstoreaccount1");
    let values = serde_json::json!({
        "IsEncrypted": false,
        "Values": {
            "ACS_CONNECTION_STRING": UNUSED_ACS,
            "RECORDINGS_STORAGE": storage_at(&dead, &dead),
        }
    });
    std::fs::write(&file, values.to_string()).unwrap();
    let path = file.to_str().unwrap();
    let started = std::time::Instant::now();
    let out = run_archiver(&[], &["check", "--settings", path], None);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("Settings ({path}, then the environment)")),
        "{stdout}"
    );
    assert!(
        stdout.contains("TRANSFER_BLOCK_BYTES       4 MiB"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "  FAILED  container `recordings`: connection refused at 127.0.0.1:{port} (retried 2 times over"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "          fix: nothing listens at 127.0.0.1:{port}: start the storage emulator"
        )) && stdout.contains("endpoint in RECORDINGS_STORAGE"),
        "{stdout}"
    );
    assert!(stdout.contains("3 of 4 checks failed."), "{stdout}");
    for unwanted in ["\x1b[", "TransferSettings", "error sending request", "WARN"] {
        assert!(!stdout.contains(unwanted), "{unwanted:?} in {stdout}");
        assert!(!stderr.contains(unwanted), "{unwanted:?} in {stderr}");
    }
    assert!(
        !stdout.contains(archiver_testkit::azurite::ACCOUNT_KEY),
        "{stdout}"
    );
    // Three checks of at most three attempts each: an answer in seconds, not minutes.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

/// A typo in the account's host name is a name that does not resolve, not "error sending
/// request".
#[tokio::test]
async fn check_names_an_unresolvable_storage_host() {
    let mut env = handler_env(None);
    let bad = "http://nosuchaccount.storage.invalid/devstoreaccount1";
    set(&mut env, "RECORDINGS_STORAGE", &storage_at(bad, bad));
    set(&mut env, "RUST_LOG", "");
    let out = run_archiver(&env, &["check"], None);
    let shown = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("host name not resolved at nosuchaccount.storage.invalid:80"),
        "{shown}"
    );
    assert!(
        shown
            .contains("does not resolve: check the account name or endpoint in RECORDINGS_STORAGE"),
        "{shown}"
    );
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
