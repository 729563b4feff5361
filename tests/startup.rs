//! The handler's start-up as the Functions host sees it, with the real binary against Azurite:
//! settings the queue trigger cannot bind are refused, and the one-off storage probe creates
//! what is missing or says, at error severity, which setting is wrong, while the handler keeps
//! answering.

mod support;

use std::path::Path;
use std::time::Duration;

use archiver_testkit::host::HandlerProcess;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_sas_url_the_queue_trigger_cannot_bind_is_refused_in_every_mode() {
    let mut env = handler_env(None);
    let sas_url = format!(
        "{}/{}?{}",
        azurite().blob_endpoint(),
        setting(&env, "RECORDINGS_CONTAINER"),
        azurite().container_sas(
            setting(&env, "RECORDINGS_CONTAINER"),
            "rcw",
            Duration::from_secs(600)
        )
    );
    set(&mut env, "RECORDINGS_STORAGE", &sas_url);
    set(&mut env, "ARCHIVE_MODE", "inline");
    set(&mut env, "FUNCTIONS_CUSTOMHANDLER_PORT", "7071");
    let (status, out) = HandlerProcess::run_to_exit(Path::new(HANDLER), &pairs(&env), &[]);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("RECORDINGS_STORAGE") && out.contains("queue trigger"),
        "{out}"
    );
    assert!(
        out.contains("RECORDINGS_STORAGE__blobServiceUri") && out.contains("AccountKey"),
        "names the supported forms: {out}"
    );
    assert!(!out.contains("sig="), "the SAS is not echoed: {out}");
}

#[tokio::test]
async fn start_up_creates_a_missing_container_queue_and_poison_queue() {
    let env = handler_env(None);
    let h = start_handler(&env).await;
    let queue = setting(&env, "TRANSFER_QUEUE");
    let expected = [
        format!(
            "container `{}`: ok (created)",
            setting(&env, "RECORDINGS_CONTAINER")
        ),
        format!("queue `{queue}`: ok (created)"),
        format!("poison queue `{queue}-poison`: ok (created)"),
    ];
    wait_until(WAIT, "the storage probe's three findings", || {
        let out = h.output();
        expected.iter().all(|line| out.contains(line))
    })
    .await;
    assert!(!h.output().contains("ERROR"), "{}", h.output());
}

#[tokio::test]
async fn a_refused_key_is_logged_at_error_naming_the_setting_and_the_handler_keeps_serving() {
    let mut env = handler_env(None);
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let storage = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={wrong_key};\
         BlobEndpoint={};QueueEndpoint={};",
        azurite().blob_endpoint(),
        azurite().queue_endpoint()
    );
    set(&mut env, "RECORDINGS_STORAGE", &storage);
    let mut h = start_handler(&env).await;
    let subjects = ["container `", "queue `", "poison queue `"];
    wait_until(WAIT, "an error line for each probed resource", || {
        let out = h.output();
        subjects.iter().all(|s| {
            out.lines()
                .any(|l| l.contains("ERROR") && l.contains("storage setup error") && l.contains(s))
        })
    })
    .await;
    let out = h.output();
    assert!(
        out.contains("HTTP 403") && out.contains("key in RECORDINGS_STORAGE"),
        "{out}"
    );
    assert!(!out.contains(wrong_key), "{out}");
    assert_eq!(h.try_exit_status(), None, "still running:\n{out}");
    let ready = h.client().get(h.url("/")).send().await.unwrap();
    assert!(ready.status().is_success(), "{}", ready.status());
}
