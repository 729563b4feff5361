//! Shared set-up for the integration tests: one Azurite per test binary (a real process,
//! started on free ports in memory and stopped when the binary exits), the handler's
//! environment, recording events whose URLs point at an ACS emulator, the archive reader and
//! the polling loop. Payloads from `tests/data/` are embedded where they are used, with
//! `include_str!`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use archiver_testkit::acs::AcsEmulator;
use archiver_testkit::archive::ArchiveReader;
use archiver_testkit::azurite::Azurite;
use archiver_testkit::host::HandlerProcess;
use serde_json::Value;

/// The handler binary built for this test run.
pub const HANDLER: &str = env!("CARGO_BIN_EXE_handler");

/// The operator CLI built for this test run.
pub const ARCHIVER: &str = env!("CARGO_BIN_EXE_archiver");

/// The testkit's `fake-worker` binary (a custom handler whose behaviour each queue message
/// chooses), built on first use: cargo gives a package's tests only that package's binaries.
/// It is built with the selection `scripts/test-binaries` and the bench's quick test build
/// (every package, with dev-dependencies' features), so that it is a no-op after them: the
/// testkit alone resolves other features and compiles the dependency tree a second time.
pub fn fake_worker() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out_dir = Path::new(HANDLER)
            .parent()
            .expect("binaries have a directory");
        let mut build =
            archiver_testkit::workspace::build_command(Path::new(env!("CARGO_MANIFEST_DIR")));
        if out_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(
            status.success(),
            "building the testkit's fake-worker failed"
        );
        out_dir.join("fake-worker")
    })
}

/// An ACS connection string that is never contacted (queue-mode webhook tests).
pub const UNUSED_ACS: &str =
    "endpoint=https://contoso.communication.azure.com/;accesskey=c2VjcmV0LWFjcy1rZXk=";

/// The Azurite shared by this test binary: the one place a test gets Azurite from. The
/// testkit's watchdog stops it when the binary exits.
pub fn azurite() -> &'static Azurite {
    static AZURITE: OnceLock<Azurite> = OnceLock::new();
    AZURITE.get_or_init(|| {
        let azurite = Azurite::start().unwrap_or_else(|e| panic!("{e}"));
        eprintln!("Azurite started in {:?}", azurite.startup_time());
        azurite
    })
}

/// A name no other test in this binary uses (containers and queues are shared by Azurite).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The settings a handler needs to run against Azurite and (optionally) an ACS emulator, with
/// its own container and queue.
pub fn handler_env(acs: Option<&AcsEmulator>) -> Vec<(String, String)> {
    let mut env = vec![
        ("RUST_LOG".to_string(), "info".to_string()),
        (
            "RECORDINGS_STORAGE".to_string(),
            azurite().connection_string(),
        ),
        ("RECORDINGS_CONTAINER".to_string(), unique("rec")),
        ("TRANSFER_QUEUE".to_string(), unique("q")),
    ];
    match acs {
        Some(emu) => {
            env.push(("ACS_CONNECTION_STRING".into(), emu.connection_string()));
            env.push(("ACS_EXTRA_ALLOWED_HOSTS".into(), emu.extra_allowed_hosts()));
        }
        None => env.push(("ACS_CONNECTION_STRING".into(), UNUSED_ACS.into())),
    }
    env
}

/// A connection string for Azurite's account with the given Blob and Queue endpoints (a fault
/// proxy in front of Azurite, or a port where nothing listens).
pub fn storage_at(blob_endpoint: &str, queue_endpoint: &str) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint={blob_endpoint};QueueEndpoint={queue_endpoint};",
        archiver_testkit::azurite::ACCOUNT_KEY
    )
}

/// A storage connection string whose services are down: nothing listens on its port.
pub fn storage_down() -> String {
    let dead = format!(
        "http://127.0.0.1:{}/devstoreaccount1",
        archiver_testkit::host::free_port()
    );
    storage_at(&dead, &dead)
}

/// Replaces or adds `name` in `env`.
pub fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(k, _)| k != name);
    env.push((name.to_string(), value.to_string()));
}

/// `env` as the `&[(&str, &str)]` the launchers take.
pub fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `archiver` run as an operator would, with only `env` and `PATH` set: `stdin` is written to
/// its input, which is then closed, and its output collected.
pub fn run_archiver(
    env: &[(String, String)],
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(ARCHIVER)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// A process's standard output then its standard error, as text.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The handler binary started with `env`, once it answers.
pub async fn start_handler(env: &[(String, String)]) -> HandlerProcess {
    HandlerProcess::start(Path::new(HANDLER), &pairs(env))
        .await
        .unwrap()
}

/// The handler in its default queue mode against Azurite, with `extra` settings on top.
pub async fn handler_with(extra: &[(&str, &str)]) -> HandlerProcess {
    let mut env = handler_env(None);
    for (k, v) in extra {
        set(&mut env, k, v);
    }
    start_handler(&env).await
}

/// A GA `RecordingFileStatusUpdated` event (Event Grid schema) whose chunks are the given
/// emulator recordings, in order, for a recording started 2026-11-24T09:00:00Z (so blob names
/// fall under `2026/11/24/`).
pub fn ga_event(
    emu: &AcsEmulator,
    event_id: &str,
    call_id: &str,
    documents: &[&str],
    format: &str,
) -> Value {
    let started = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_510_800);
    emu.ga_event(
        event_id,
        call_id,
        documents,
        format.parse().unwrap(),
        started,
    )
}

/// One chunk of a GA recording event as ACS lists it, its locations under the recording object
/// `https://{host}/v1/objects/{document_id}` (`media` is `video` or `audio`).
pub fn ga_chunk(
    host: &str,
    document_id: &str,
    index: usize,
    media: &str,
    end_reason: &str,
) -> Value {
    let object = format!("https://{host}/v1/objects/{document_id}");
    serde_json::json!({
        "documentId": document_id,
        "index": index,
        "endReason": end_reason,
        "contentLocation": format!("{object}/content/{media}"),
        "metadataLocation": format!("{object}/content/acsmetadata"),
        "deleteLocation": format!("{object}/content/deletedata"),
    })
}

/// Posts `events` to the webhook behind a Functions host as Event Grid delivers them (function
/// key in `code`); returns the status and the JSON answer (`null` if it is not JSON).
pub async fn deliver(host: &archiver_testkit::host::FunctionsHost, events: Value) -> (u16, Value) {
    let r = http()
        .post(host.url("/api/RecordingWebhook?code=function-key"))
        .header("Content-Type", "application/json")
        .header("aeg-event-type", "Notification")
        .body(events.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Posts the delivery `body` to the handler's webhook as the Functions host forwards an Event
/// Grid notification; returns the status and the JSON answer (panics if it is not JSON).
pub async fn post_delivery(h: &HandlerProcess, body: String) -> (u16, Value) {
    post_as(h, "Notification", body).await
}

/// Posts `body` to the handler process as the Functions host forwards a delivery whose
/// `aeg-event-type` is `aeg`; the answer must be JSON.
pub async fn post_as(h: &HandlerProcess, aeg: &str, body: impl Into<String>) -> (u16, Value) {
    let r = h
        .forward(reqwest::Method::POST, "RecordingWebhook")
        .header("Content-Type", "application/json")
        .header("aeg-event-type", aeg)
        .body(body.into())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let answer =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, answer)
}

pub use archiver_testkit::archive::ListedBlob;

/// One HTTP client for the whole test binary: building one loads the TLS roots, which costs
/// more than the requests the tests make with it. It keeps no idle connections: each
/// `#[tokio::test]` has its own runtime, and a pooled connection dies with the runtime that
/// opened it, failing the next test that picks it up.
pub fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client")
    })
}

/// The one archive reader, on `container` of this binary's Azurite.
fn archive(container: &str) -> ArchiveReader {
    ArchiveReader::new(http().clone(), azurite(), container)
}

/// Every committed blob in `container`; none when it does not exist.
pub async fn list_blobs(container: &str) -> Vec<ListedBlob> {
    match archive(container).list().await {
        Ok(blobs) => blobs,
        Err(e) if e.status == Some(404) => Vec::new(),
        Err(e) => panic!("{e}"),
    }
}

/// A blob's bytes.
pub async fn read_blob(container: &str, name: &str) -> bytes::Bytes {
    archive(container)
        .bytes(name)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Polls `check` every 20 ms until it holds or `limit` has passed; whether it held. The one
/// polling loop of the tests (a Functions host waits on its own journal instead:
/// `FunctionsHost::wait_for`).
pub async fn poll_until(limit: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !check() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    true
}

/// Waits until `check` holds, at most `limit`; panics with `what` after.
pub async fn wait_until(limit: std::time::Duration, what: &str, check: impl FnMut() -> bool) {
    assert!(
        poll_until(limit, check).await,
        "timed out waiting for {what}"
    );
}

/// Waits (at most 10 s) until the handler has written `needle`.
pub async fn wait_for_log(h: &HandlerProcess, needle: &str) {
    let logged = poll_until(std::time::Duration::from_secs(10), || {
        h.output().contains(needle)
    })
    .await;
    assert!(
        logged,
        "the handler never logged `{needle}`:\n{}",
        h.output()
    );
}

/// Checks every chunk's media blob against the emulator's source and its record blob.
pub async fn assert_archived(emu: &AcsEmulator, container: &str, call: &str, documents: &[&str]) {
    let folder = format!("2026/11/24/{call}/");
    let (manifests, blobs): (Vec<ListedBlob>, Vec<ListedBlob>) = list_blobs(container)
        .await
        .into_iter()
        .filter(|b| b.name.starts_with(&folder))
        .partition(|b| b.name.starts_with(&format!("{folder}manifest-")));
    assert!(
        manifests
            .iter()
            .filter(|m| !m.name.ends_with(".notified.json"))
            .count()
            <= 1,
        "at most one manifest: {manifests:#?}"
    );
    assert_eq!(
        blobs.len(),
        documents.len() * 2,
        "one media and one record blob per chunk in {folder}: {blobs:#?}"
    );
    for (i, doc) in documents.iter().enumerate() {
        let name = format!("2026/11/24/{call}/{i:03}-{doc}.mp4");
        let media = blobs
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("{name} missing: {blobs:#?}"));
        assert_eq!(media.content_type, "video/mp4");
        assert_eq!(
            sha256(&read_blob(container, &name).await),
            emu.expected_sha256(doc).unwrap(),
            "{name} differs from the source"
        );
        let record: Value =
            serde_json::from_slice(&read_blob(container, &format!("{name}.json")).await).unwrap();
        assert_eq!(record["archive"]["sizeBytes"], media.size);
        assert_eq!(record["archive"]["documentId"], *doc);
        assert_eq!(record["acsMetadata"]["chunkDocumentId"], *doc, "{record}");
    }
}

/// Set-up for a crash in mid-transfer: a 16 MiB recording whose first download trickles (so a
/// kill lands in the middle of it), storage behind a fault proxy that counts Put Blocks, and
/// 1 MiB blocks, two in flight. Returns the proxy and the handler's settings.
pub async fn slow_transfer_setup(
    emu: &AcsEmulator,
    doc: &str,
    total: u64,
) -> (archiver_testkit::proxy::FaultProxy, Vec<(String, String)>) {
    use archiver_testkit::acs::{Fault, RecordingFormat};
    emu.add_recording(doc, total, 3, RecordingFormat::Mp4);
    emu.push_faults(
        doc,
        vec![Fault::Trickle {
            chunk: 128 * 1024,
            interval: std::time::Duration::from_millis(15),
        }],
    );
    let proxy = archiver_testkit::proxy::FaultProxy::start(&azurite().blob_endpoint())
        .await
        .unwrap();
    let mut env = handler_env(Some(emu));
    set(
        &mut env,
        "RECORDINGS_STORAGE",
        &storage_at(&proxy.endpoint(), &azurite().queue_endpoint()),
    );
    set(&mut env, "TRANSFER_BLOCK_BYTES", "1048576");
    set(&mut env, "TRANSFER_PARALLEL_BLOCKS", "2");
    (proxy, env)
}

/// The texts of the messages in `queue` (base64-decoded, as the handler writes them), at most
/// 32 of them, left in place.
pub async fn peek_queue(queue: &str) -> Vec<String> {
    use base64::Engine as _;
    let client = archiver_testkit::queue::QueueClient::new(
        archiver_testkit::queue::StorageAccount::azurite(&azurite().queue_endpoint()).unwrap(),
    );
    match client.peek_messages(queue, 32).await {
        Ok(messages) => messages
            .into_iter()
            .map(|m| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(m.text.trim())
                    .unwrap();
                String::from_utf8(raw).unwrap()
            })
            .collect(),
        Err(e) if e.status() == Some(404) => Vec::new(),
        Err(e) => panic!("peek {queue}: {e}"),
    }
}

/// The setting `name` in `env`.
pub fn setting<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    &env.iter().find(|(k, _)| k == name).unwrap().1
}
