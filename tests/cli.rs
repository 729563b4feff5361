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
        squeeze(&shown).contains(
            "RECORDINGS_STORAGE connection string: account devstoreaccount1, account key ***"
        ),
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

/// `text` with every run of spaces made one: the table's column width is not the point.
fn squeeze(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
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
        squeeze(&stdout).contains("TRANSFER_BLOCK_BYTES 4 MiB"),
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

/// The archive client the settings in `env` give, for changing blobs behind the CLI's back.
fn archive_client(env: &[(String, String)]) -> recording_archiver::blob::BlobClient {
    let env = env.to_vec();
    let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let settings = recording_archiver::config::Settings::load(&lookup).unwrap();
    recording_archiver::wiring::archive_client(&settings, &lookup).unwrap()
}

/// Archives `docs` (added to `emu` only when listed in `present`) as one GA recording of
/// `call` with `archiver replay`; returns the replay's output.
async fn archive_with_replay(
    emu: &AcsEmulator,
    env: &[(String, String)],
    call: &str,
    docs: &[&str],
    sizes: &[u64],
) -> std::process::Output {
    for (doc, size) in docs.iter().zip(sizes) {
        emu.add_recording(doc, *size, 7, RecordingFormat::Mp4);
    }
    let event = ga_event(emu, &format!("evt-{call}"), call, docs, "Mp4");
    let (env, text) = (env.to_vec(), event.to_string());
    tokio::task::spawn_blocking(move || run_archiver(&env, &["replay", "-"], Some(&text)))
        .await
        .unwrap()
}

/// Runs `archiver verify` with `args`, off the runtime that serves the emulator.
async fn verify(env: &[(String, String)], args: &[&str]) -> (Option<i32>, String) {
    let env = env.to_vec();
    let mut all = vec!["verify".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        run_archiver(&env, &args, None)
    })
    .await
    .unwrap();
    (out.status.code(), output_text(&out))
}

#[tokio::test]
async fn verify_proves_an_archive_and_names_a_tampered_chunk() {
    let emu = AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap();
    let env = handler_env(Some(&emu));
    let call = unique("call-verify");
    let docs = ["0-wus-ver-aaaa", "0-wus-ver-bbbb", "0-wus-ver-cccc"];
    // The first chunk takes two 8 MiB ranges to read.
    let sizes = [9 * 1024 * 1024 + 5, 300_000, 1];
    let out = archive_with_replay(&emu, &env, &call, &docs, &sizes).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let prefix = format!("2026/11/24/{call}/");

    let (code, shown) = verify(&env, &["--prefix", &prefix]).await;
    assert_eq!(code, Some(0), "{shown}");
    for (i, doc) in docs.iter().enumerate() {
        let sha = emu.expected_sha256(doc).unwrap();
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            shown.contains(&format!("ok         {prefix}{i:03}-{doc}.mp4  "))
                && shown.contains(&hex),
            "{doc}: {shown}"
        );
    }
    assert!(shown.contains("3 verified (9.3 MiB), 0 failed"), "{shown}");
    assert!(!shown.contains('\x1b'), "no colour in a pipe: {shown}");
    // The same chunks, found by the call id in their index tags.
    let (code, by_call) = verify(&env, &["--call", &call]).await;
    assert_eq!(code, Some(0), "{by_call}");
    assert!(
        by_call.contains("3 verified (9.3 MiB), 0 failed"),
        "{by_call}"
    );
    let (code, nothing) = verify(&env, &["--call", "no-such-call"]).await;
    assert_eq!(code, Some(1), "{nothing}");
    assert!(
        nothing.contains("Nothing archived for call no-such-call."),
        "{nothing}"
    );

    // Same size, same metadata, one byte different: only the hash can tell.
    let client = archive_client(&env);
    let tampered = format!("{prefix}001-{}.mp4", docs[1]);
    let props = client.get_properties(&tampered).await.unwrap().unwrap();
    let mut data = read_blob(setting(&env, "RECORDINGS_CONTAINER"), &tampered)
        .await
        .to_vec();
    data[1000] ^= 0xff;
    client
        .put_blob_small(
            &tampered,
            data.into(),
            &recording_archiver::blob::BlobCommitOptions {
                content_type: props.content_type.clone(),
                metadata: props.metadata.clone(),
                if_none_match_star: false,
                headers: Vec::new(),
            },
        )
        .await
        .unwrap();
    let (code, shown) = verify(&env, &["--prefix", &prefix]).await;
    assert_eq!(code, Some(1), "{shown}");
    let line = shown
        .lines()
        .find(|l| l.starts_with("MISMATCH"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        line.starts_with(&format!("MISMATCH   {tampered}: SHA-256 "))
            && line.contains("the record says"),
        "{line}"
    );
    assert!(shown.contains("2 verified"), "{shown}");
}

#[tokio::test]
async fn verify_names_a_chunk_that_was_never_archived() {
    let emu = AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap();
    let env = handler_env(Some(&emu));
    let call = unique("call-gap");
    let docs = ["0-wus-gap-aaaa", "0-wus-gap-bbbb", "0-wus-gap-cccc"];
    // ACS holds only the first two chunks: the third is never archived.
    let out = archive_with_replay(&emu, &env, &call, &docs, &[300_000, 200_000]).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let prefix = format!("2026/11/24/{call}/");
    let (code, shown) = verify(&env, &["--prefix", &prefix]).await;
    assert_eq!(code, Some(1), "{shown}");
    assert!(
        shown.contains(&format!(
            "MISSING    chunk 2 of 3 (event evt-{call}): no archive record for `{prefix}`"
        )),
        "{shown}"
    );
    assert!(shown.contains("2 verified"), "{shown}");
}

#[tokio::test]
async fn verify_that_cannot_read_the_archive_exits_2() {
    let (code, shown) = verify(&[], &["--prefix", "2026/"]).await;
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("RECORDINGS_STORAGE"), "{shown}");

    let mut env = handler_env(None);
    set(&mut env, "RUST_LOG", "");
    set(&mut env, "RECORDINGS_STORAGE", &storage_down());
    let (code, shown) = verify(&env, &["--prefix", "2026/"]).await;
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("archiver: cannot read container `rec-")
            && shown.contains(": connection refused at 127.0.0.1:")
            && shown.contains("(retried 2 times over")
            && shown.contains("fix: nothing listens at 127.0.0.1:"),
        "{shown}"
    );

    // A container that is not there: the setting to fix.
    let mut env = handler_env(None);
    set(&mut env, "RECORDINGS_CONTAINER", &unique("nowhere"));
    let (code, shown) = verify(&env, &["--prefix", "2026/"]).await;
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("HTTP 404 ContainerNotFound")
            && shown.contains("fix: container `nowhere-")
            && shown.contains("check RECORDINGS_CONTAINER"),
        "{shown}"
    );
    assert!(!shown.contains("WARN"), "retries are summarised: {shown}");
}
