//! The Functions host emulator (`archiver_testkit::host::FunctionsHost`) against a real
//! Azurite, with a fake worker whose behaviour each queue message chooses (succeed, fail,
//! crash, hang), so retries, poison moves, crash restarts, timeouts and the envelope's
//! encoding are checked without depending on the handler's own transfer code. One test runs
//! the repo's app with the real `handler`.
//!
//! The fake worker is the testkit's `fake-worker` binary (its module docs list the actions a
//! message can choose), a real child process that can crash and be restarted.
//!
//! Needs Node.js 18+ and `npm ci` in the repo root (Azurite).

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use archiver_testkit::host::{
    free_port, FunctionsHost, HandlerProcess, HostOptions, InvocationRecord, InvocationStatus,
    LineObserver, LogLevel, WorkerCommand,
};
use archiver_testkit::queue::{MessageEncoding, QueueClient, StorageAccount};
use serde_json::{json, Value};
use support::{azurite, fake_worker};
use tempfile::TempDir;

const HANDLER: &str = env!("CARGO_BIN_EXE_handler");
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Helpers.

/// A queue name of its own for each test.
fn unique_queue(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "fh-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An app root with `host_json` and one folder per function.
fn app(mut host_json: Value, functions: &[(&str, Value)]) -> TempDir {
    host_json["version"] = json!("2.0");
    host_json["customHandler"]["description"] = json!({"defaultExecutablePath": "not-used"});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("host.json"), host_json.to_string()).unwrap();
    for (name, function_json) in functions {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(
            dir.path().join(name).join("function.json"),
            function_json.to_string(),
        )
        .unwrap();
    }
    dir
}

fn queue_function() -> Value {
    json!({"bindings": [{"type": "queueTrigger", "direction": "in", "name": "job",
        "queueName": "%JOBS_QUEUE%", "connection": "JOBS_STORAGE"}]})
}

fn queue_host_json(queues: Value) -> Value {
    let mut queues = queues;
    queues["maxPollingInterval"] = json!("00:00:00.200");
    json!({"extensions": {"queues": queues}})
}

fn fake_worker_options(settings: &[(&str, &str)]) -> HostOptions {
    let app_settings = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    HostOptions {
        handler: Some(fake_worker().to_path_buf()),
        app_settings,
        ..HostOptions::default()
    }
}

/// A host on the fake worker with one queue-triggered function `Jobs` on a fresh queue.
async fn queue_host(
    queues: Value,
    tweak: impl FnOnce(&mut HostOptions),
) -> (FunctionsHost, QueueClient, String, TempDir) {
    let azurite = azurite();
    let queue = unique_queue("q");
    let dir = app(queue_host_json(queues), &[("Jobs", queue_function())]);
    let mut options = fake_worker_options(&[
        ("JOBS_QUEUE", &queue),
        ("JOBS_STORAGE", &azurite.connection_string()),
    ]);
    tweak(&mut options);
    let host = FunctionsHost::start_with(dir.path(), options)
        .await
        .unwrap();
    (host, client(), queue, dir)
}

fn client() -> QueueClient {
    QueueClient::new(StorageAccount::azurite(&azurite().queue_endpoint()).unwrap())
}

async fn put(client: &QueueClient, queue: &str, text: &str) -> String {
    client
        .put_message(queue, &MessageEncoding::Base64.encode(text))
        .await
        .unwrap()
        .id
}

/// The invocations for message `id`, in order.
fn attempts(host: &FunctionsHost, id: &str) -> Vec<InvocationRecord> {
    host.invocations()
        .into_iter()
        .filter(|r| r.message_id.as_deref() == Some(id))
        .collect()
}

/// The value of `name=...` in an invocation's worker logs.
fn worker_log<'a>(record: &'a InvocationRecord, name: &str) -> &'a str {
    record
        .logs
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {:?}", record.logs))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

// ---------------------------------------------------------------------------------------
// Start-up.

#[tokio::test]
async fn unresolved_queue_name_or_missing_connection_fails_start_up_like_indexing() {
    let dir = app(queue_host_json(json!({})), &[("Jobs", queue_function())]);
    let e = FunctionsHost::start_with(
        dir.path(),
        fake_worker_options(&[("JOBS_STORAGE", "UseDevelopmentStorage=true")]),
    )
    .await
    .err()
    .expect("an unresolved %JOBS_QUEUE% must fail");
    assert!(e.contains("'%JOBS_QUEUE%' does not resolve"), "{e}");
    assert!(e.contains("Functions.Jobs"), "{e}");

    let e = FunctionsHost::start_with(dir.path(), fake_worker_options(&[("JOBS_QUEUE", "jobs")]))
        .await
        .err()
        .expect("a missing connection setting must fail");
    assert!(e.contains("'JOBS_STORAGE' does not exist"), "{e}");
}

// ---------------------------------------------------------------------------------------
// HTTP forwarding and the worker supervisor.

/// The host hands the worker a port it does not hold (`FUNCTIONS_CUSTOMHANDLER_PORT`), so
/// another process can take it first; the launch then starts the worker again on a fresh port.
#[tokio::test]
async fn a_worker_whose_port_was_taken_is_started_again_on_a_fresh_one() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let command = WorkerCommand {
        program: fake_worker().to_path_buf(),
        args: Vec::new(),
        working_dir: None,
        app_root: std::env::temp_dir(),
        env: Vec::new(),
        env_remove: Vec::new(),
    };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let observer: LineObserver = {
        let lines = lines.clone();
        Arc::new(move |_, line: &str| lines.lock().unwrap().push(line.to_string()))
    };
    let mut ports = [taken_port, free_port()].into_iter();
    let worker =
        HandlerProcess::launch_with_ports(&command, Some(observer), || ports.next().unwrap())
            .await
            .unwrap();
    assert_ne!(worker.port(), taken_port);
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("cannot listen on 127.0.0.1:{taken_port}"))),
        "{lines:?}"
    );
    let ready = worker.client().get(worker.url("/")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    drop(taken);
}

#[tokio::test]
async fn http_only_functions_are_forwarded_raw_with_query_and_host_headers() {
    let hook = json!({"bindings": [
        {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "function", "methods": ["post", "options"]},
        {"type": "http", "direction": "out", "name": "res"}]});
    let routed = json!({"bindings": [
        {"type": "httpTrigger", "direction": "in", "name": "req", "route": "custom/path"},
        {"type": "http", "direction": "out", "name": "res"}]});
    let dir = app(
        json!({"customHandler": {"enableForwardingHttpRequest": true}}),
        &[("Hook", hook), ("Routed", routed)],
    );
    let host = FunctionsHost::start_with(dir.path(), fake_worker_options(&[]))
        .await
        .unwrap();
    let http = reqwest::Client::new();

    let r = http
        .post(host.url("/api/HOOK?code=key-1&x=a%20b"))
        .header("X-Custom", "kept")
        .body("raw <body>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "the worker's status comes back as is");
    assert!(r.headers().contains_key("x-fake-worker"));
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(
        echo["path"], "/api/HOOK",
        "same path as the original request"
    );
    assert_eq!(
        echo["query"], "code=key-1&x=a%20b",
        "query passed on untouched"
    );
    assert_eq!(echo["body"], "raw <body>");
    let headers = &echo["headers"];
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(
        headers["x-azure-functions-hostversion"],
        archiver_testkit::host::HOST_VERSION
    );
    assert!(headers["user-agent"]
        .as_str()
        .unwrap()
        .contains("Azure-Functions-Host/"));
    let invocation_id = headers["x-azure-functions-invocationid"].as_str().unwrap();

    let r = http.get(host.url("/api/Routed-Not")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(host.url("/api/hook")).send().await.unwrap();
    assert_eq!(r.status(), 404, "GET is not in the function's methods");
    let r = http.put(host.url("/api/custom/path")).send().await.unwrap();
    assert_eq!(
        r.status(),
        202,
        "a route replaces the function name; no methods: any"
    );

    let records = host.invocations();
    let first = records
        .iter()
        .find(|r| r.invocation_id == invocation_id)
        .unwrap();
    assert_eq!(first.function, "Hook");
    assert_eq!(first.http_status, Some(202));
    assert!(first.succeeded());
    host.stop().await;
}

/// A body sent without Content-Length (chunked), as the worker receives it through a host
/// with `custom_handler` flags set as given.
async fn chunked_body_through(custom_handler: Value) -> Vec<Value> {
    let hook = json!({"bindings": [
        {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["post"]},
        {"type": "http", "direction": "out", "name": "res"}]});
    let dir = app(json!({"customHandler": custom_handler}), &[("Hook", hook)]);
    let host = FunctionsHost::start_with(dir.path(), fake_worker_options(&[]))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let mut echoes = Vec::new();
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("[{\"id\":"), Ok("\"e\"}]")];
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let sized = reqwest::Body::from("[{\"id\":\"e\"}]");
    for body in [chunked, sized] {
        let r = http
            .post(host.url("/api/Hook"))
            .header("Content-Type", "application/json")
            .header("User-Agent", "aeg/1.0")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        echoes.push(r.json::<Value>().await.unwrap());
    }
    host.stop().await;
    echoes
}

#[tokio::test]
async fn forwarding_copies_a_body_only_with_content_length_while_proxying_passes_it_all() {
    let sent = "[{\"id\":\"e\"}]";
    let forwarded = chunked_body_through(json!({"enableForwardingHttpRequest": true})).await;
    assert_eq!(
        forwarded[0]["body"], "",
        "a chunked body is dropped: {forwarded:?}"
    );
    assert!(
        forwarded[0]["headers"].get("content-type").is_none(),
        "and so is its Content-Type: {forwarded:?}"
    );
    assert_eq!(forwarded[1]["body"], sent);
    assert_eq!(forwarded[1]["headers"]["content-type"], "application/json");
    assert_eq!(
        forwarded[1]["headers"]["user-agent"],
        format!(
            "aeg/1.0 Azure-Functions-Host/{}",
            archiver_testkit::host::HOST_VERSION
        )
    );

    // Proxying wins when both flags are set, and streams whatever the framing.
    let proxied = chunked_body_through(
        json!({"enableForwardingHttpRequest": true, "enableProxyingHttpRequest": true}),
    )
    .await;
    for echo in &proxied {
        assert_eq!(echo["body"], sent, "{proxied:?}");
        assert_eq!(echo["headers"]["user-agent"], "aeg/1.0");
        assert_eq!(
            echo["headers"]["x-azure-functions-hostversion"],
            archiver_testkit::host::HOST_VERSION
        );
        assert!(echo["headers"]["x-azure-functions-invocationid"].is_string());
    }
}

#[tokio::test]
async fn stopping_the_host_kills_the_worker_without_sigterm() {
    let hook = json!({"bindings": [
        {"type": "httpTrigger", "direction": "in", "name": "req"},
        {"type": "http", "direction": "out", "name": "res"}]});
    let dir = app(
        json!({"customHandler": {"enableProxyingHttpRequest": true}}),
        &[("Hook", hook)],
    );
    let host = FunctionsHost::start_with(dir.path(), fake_worker_options(&[]))
        .await
        .unwrap();
    let started = Instant::now();
    let log = host.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no grace period"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("Worker process killed") && l.contains("SIGKILL")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn killed_worker_is_restarted_on_a_new_port_and_requests_reach_it() {
    let hook = json!({"bindings": [
        {"type": "httpTrigger", "direction": "in", "name": "req"},
        {"type": "http", "direction": "out", "name": "res"}]});
    let dir = app(
        json!({"customHandler": {"enableForwardingHttpRequest": true}}),
        &[("Hook", hook)],
    );
    let host = FunctionsHost::start_with(dir.path(), fake_worker_options(&[]))
        .await
        .unwrap();
    let first = host.handler().unwrap();
    assert_eq!(first.generation, 1);
    assert_eq!(host.kill_handler(), Some(first.pid));
    host.wait_for("the worker to be restarted", WAIT, |h| {
        h.handler().is_some_and(|w| w.generation == 2)
    })
    .await
    .unwrap();
    let second = host.handler().unwrap();
    assert_ne!(second.pid, first.pid);
    let r = reqwest::get(host.url("/api/Hook")).await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.headers()["x-fake-worker"],
        second.pid.to_string().as_str()
    );
    assert!(host.log().iter().any(|l| l.contains("was killed")));
    host.stop().await;
}

// ---------------------------------------------------------------------------------------
// Queue triggers.

#[tokio::test]
async fn queue_message_arrives_double_encoded_with_host_metadata_then_is_deleted() {
    let (host, client, queue, _dir) = queue_host(json!({}), |_| {}).await;
    let text = r#"{"action":"ok","note":"<a & b>"}"#;
    let id = put(&client, &queue, text).await;
    host.wait_for("one invocation", WAIT, |h| h.invocations().len() == 1)
        .await
        .unwrap();
    host.wait_until_idle(WAIT).await.unwrap();

    let record = &host.invocations()[0];
    assert!(record.succeeded(), "{record:?}");
    assert_eq!(record.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(record.dequeue_count, Some(1));
    let envelope: Value = serde_json::from_str(worker_log(record, "envelope")).unwrap();
    let data = envelope["Data"]["job"]
        .as_str()
        .expect("Data.job is a string");
    assert_eq!(
        serde_json::from_str::<String>(data).unwrap(),
        text,
        "JSON-encoded twice"
    );
    let meta = &envelope["Metadata"];
    assert_eq!(meta["DequeueCount"], "1");
    assert_eq!(meta["Id"], format!("\"{id}\""));
    assert!(meta["PopReceipt"].as_str().unwrap().starts_with('"'));
    assert!(meta["InsertionTime"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(meta["sys"]["MethodName"], "Jobs");
    let headers: Value = serde_json::from_str(worker_log(record, "headers")).unwrap();
    assert_eq!(
        headers["x-azure-functions-invocationid"],
        record.invocation_id.as_str()
    );
    assert!(headers["user-agent"]
        .as_str()
        .unwrap()
        .starts_with("Azure-Functions-Host/"));

    assert!(client
        .peek_messages(&format!("{queue}-poison"), 32)
        .await
        .unwrap()
        .is_empty());
    assert!(host
        .log()
        .iter()
        .any(|l| l.contains("Executed 'Functions.Jobs' (Succeeded")));
    host.stop().await;
}

#[tokio::test]
async fn failing_message_is_retried_up_to_max_dequeue_count_then_moved_to_poison() {
    let (host, client, queue, _dir) = queue_host(
        json!({"maxDequeueCount": 3, "visibilityTimeout": "00:00:00"}),
        |_| {},
    )
    .await;
    let text = r#"{"action":"fail"}"#;
    let id = put(&client, &queue, text).await;
    host.wait_for("the poison move", WAIT, |h| h.poison_moves().len() == 1)
        .await
        .unwrap();
    host.wait_until_idle(WAIT).await.unwrap();

    let attempts = attempts(&host, &id);
    let counts: Vec<_> = attempts.iter().map(|r| r.dequeue_count.unwrap()).collect();
    assert_eq!(counts, [1, 2, 3]);
    for a in &attempts {
        assert_eq!(a.http_status, Some(500));
        assert!(
            matches!(&a.status, InvocationStatus::Failed(r) if r.contains("500")),
            "{a:?}"
        );
        assert!(
            a.logs.is_empty(),
            "the host never reads a failed answer's Logs: {a:?}"
        );
    }
    let poison = &host.poison_moves()[0];
    assert_eq!(
        (poison.message_id.as_str(), poison.dequeue_count),
        (id.as_str(), 3)
    );
    assert!(poison.reason.contains("500"), "{poison:?}");
    let moved = client
        .peek_messages(&format!("{queue}-poison"), 32)
        .await
        .unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(
        moved[0].text,
        MessageEncoding::Base64.encode(text),
        "same wire text, still base64"
    );
    assert!(host.log().iter().any(|l| l.contains(&format!(
        "Message has reached MaxDequeueCount of 3. Moving message to queue '{queue}-poison'"
    ))));
    host.stop().await;
}

#[tokio::test]
async fn failed_message_comes_back_after_visibility_timeout_and_succeeds() {
    let (host, client, queue, _dir) = queue_host(
        json!({"maxDequeueCount": 5, "visibilityTimeout": "00:00:01"}),
        |_| {},
    )
    .await;
    let id = put(&client, &queue, r#"{"action":"fail_until","n":1}"#).await;
    host.wait_until_idle(WAIT).await.unwrap();
    let attempts = attempts(&host, &id);
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(!attempts[0].succeeded() && attempts[1].succeeded());
    let first_end = attempts[0].started + attempts[0].duration;
    let gap = attempts[1]
        .started
        .duration_since(first_end)
        .unwrap_or_default();
    assert!(
        gap >= Duration::from_millis(900),
        "retried after {gap:?}, before visibilityTimeout"
    );
    assert!(host.poison_moves().is_empty());
    host.stop().await;
}

#[tokio::test]
async fn worker_crash_fails_the_invocation_and_the_retry_reaches_the_restarted_worker() {
    let (host, client, queue, _dir) = queue_host(
        json!({"maxDequeueCount": 3, "visibilityTimeout": "00:00:00"}),
        |_| {},
    )
    .await;
    let id = put(&client, &queue, r#"{"action":"crash_first"}"#).await;
    host.wait_until_idle(WAIT).await.unwrap();
    let attempts = attempts(&host, &id);
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(
        matches!(&attempts[0].status, InvocationStatus::Failed(r) if r.contains("no answer from the worker")),
        "{:?}",
        attempts[0]
    );
    assert_eq!(attempts[0].worker_generation, 1);
    assert!(attempts[1].succeeded());
    assert_eq!(attempts[1].worker_generation, 2);
    assert!(host.log().iter().any(|l| l.contains("exited unexpectedly")));
    host.stop().await;
}

#[tokio::test]
async fn function_timeout_fails_the_invocation_and_recycles_the_worker() {
    let (host, client, queue, _dir) = queue_host(json!({"visibilityTimeout": "00:00:00"}), |o| {
        o.function_timeout = Some(Duration::from_secs(1));
    })
    .await;
    let id = put(&client, &queue, r#"{"action":"sleep_first","ms":30000}"#).await;
    host.wait_until_idle(WAIT).await.unwrap();
    let attempts = attempts(&host, &id);
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(
        matches!(&attempts[0].status, InvocationStatus::Failed(r) if r.contains("Timeout value of 00:00:01 was exceeded")),
        "{:?}",
        attempts[0]
    );
    assert!(attempts[0].duration < Duration::from_secs(5));
    assert!(attempts[1].succeeded());
    assert_eq!(
        attempts[1].worker_generation, 2,
        "the timed-out worker was recycled"
    );
    host.stop().await;
}

#[tokio::test]
async fn a_2xx_answer_with_an_empty_body_hangs_until_the_function_timeout() {
    let (host, client, queue, _dir) = queue_host(
        json!({"visibilityTimeout": "00:00:00", "maxDequeueCount": 1}),
        |o| {
            o.function_timeout = Some(Duration::from_secs(1));
        },
    )
    .await;
    let id = put(&client, &queue, r#"{"action":"empty_reply"}"#).await;
    host.wait_for("the poison move", WAIT, |h| !h.poison_moves().is_empty())
        .await
        .unwrap();
    let attempts = attempts(&host, &id);
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert!(
        matches!(&attempts[0].status, InvocationStatus::Failed(r) if r.contains("Timeout value of 00:00:01 was exceeded")),
        "a 200 with no body is not a success: {:?}",
        attempts[0]
    );
    assert!(attempts[0].duration >= Duration::from_secs(1));
    host.wait_for("the recycled worker", WAIT, |h| {
        h.handler().is_some_and(|w| w.generation == 2)
    })
    .await
    .unwrap();
    host.stop().await;
}

#[tokio::test]
async fn peek_lock_is_renewed_while_a_long_invocation_runs() {
    let (host, client, queue, _dir) = queue_host(json!({}), |o| {
        o.peek_lock = Duration::from_secs(2);
    })
    .await;
    let id = put(&client, &queue, r#"{"action":"sleep","ms":3500}"#).await;
    host.wait_until_idle(WAIT).await.unwrap();
    let attempts = attempts(&host, &id);
    assert_eq!(
        attempts.len(),
        1,
        "the message must not be handed out again: {attempts:?}"
    );
    assert!(attempts[0].succeeded());
    assert!(
        !host.log().iter().any(|l| l.contains("Unable to delete")),
        "{:#?}",
        host.log()
    );
    host.stop().await;
}

#[tokio::test]
async fn message_dequeued_too_often_goes_to_poison_without_an_invocation() {
    let queue = unique_queue("over");
    let client = client();
    client.create_queue(&queue).await.unwrap();
    let id = put(&client, &queue, r#"{"action":"ok"}"#).await;
    // A host that died mid-invocation three times: dequeued, never completed.
    for _ in 0..3 {
        let got = client
            .get_messages(&queue, 1, Duration::from_secs(30))
            .await
            .unwrap();
        client
            .update_visibility(&queue, &got[0].id, &got[0].pop_receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    let dir = app(
        queue_host_json(json!({"maxDequeueCount": 3})),
        &[("Jobs", queue_function())],
    );
    let options = fake_worker_options(&[
        ("JOBS_QUEUE", &queue),
        ("JOBS_STORAGE", &azurite().connection_string()),
    ]);
    let host = FunctionsHost::start_with(dir.path(), options)
        .await
        .unwrap();
    host.wait_for("the poison move", WAIT, |h| !h.poison_moves().is_empty())
        .await
        .unwrap();
    host.wait_until_idle(WAIT).await.unwrap();
    let poison = &host.poison_moves()[0];
    assert_eq!(
        (poison.message_id.as_str(), poison.dequeue_count),
        (id.as_str(), 4)
    );
    assert!(
        poison.reason.contains("exceeds maxDequeueCount 3"),
        "{poison:?}"
    );
    assert!(host.invocations().is_empty());
    host.stop().await;
}

#[tokio::test]
async fn undecodable_base64_message_goes_straight_to_poison_unchanged() {
    let (host, client, queue, _dir) = queue_host(json!({}), |_| {}).await;
    let raw = r#"{"not":"base64"}"#;
    let id = client.put_message(&queue, raw).await.unwrap().id;
    host.wait_for("the poison move", WAIT, |h| !h.poison_moves().is_empty())
        .await
        .unwrap();
    host.wait_until_idle(WAIT).await.unwrap();
    let poison = &host.poison_moves()[0];
    assert_eq!(
        (poison.message_id.as_str(), poison.dequeue_count),
        (id.as_str(), 1)
    );
    assert!(poison.reason.contains("base64"), "{poison:?}");
    assert!(host.invocations().is_empty());
    let moved = client
        .peek_messages(&format!("{queue}-poison"), 32)
        .await
        .unwrap();
    assert_eq!(moved[0].text, raw);
    host.stop().await;
}

#[tokio::test]
async fn message_encoding_none_delivers_the_raw_text() {
    let (host, client, queue, _dir) = queue_host(json!({"messageEncoding": "none"}), |_| {}).await;
    let raw = r#"{"action":"ok","k":"v"}"#;
    client.put_message(&queue, raw).await.unwrap();
    host.wait_until_idle(WAIT).await.unwrap();
    let record = &host.invocations()[0];
    assert!(record.succeeded());
    let envelope: Value = serde_json::from_str(worker_log(record, "envelope")).unwrap();
    let data = envelope["Data"]["job"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<String>(data).unwrap(), raw);
    host.stop().await;
}

#[tokio::test]
async fn in_flight_invocations_are_bounded_by_batch_size_plus_new_batch_threshold() {
    let (host, client, queue, _dir) =
        queue_host(json!({"batchSize": 2, "newBatchThreshold": 1}), |_| {}).await;
    for _ in 0..7 {
        put(&client, &queue, r#"{"action":"sleep","ms":400}"#).await;
    }
    host.wait_for("seven invocations", WAIT, |h| h.invocations().len() == 7)
        .await
        .unwrap();
    host.wait_until_idle(WAIT).await.unwrap();
    let max: usize = host
        .invocations()
        .iter()
        .map(|r| worker_log(r, "max_running").parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert!(
        (2..=3).contains(&max),
        "at most batchSize + newBatchThreshold = 3 at once, saw {max}"
    );
    host.stop().await;
}

// ---------------------------------------------------------------------------------------
// The repo's app with the real handler.

/// The repo's app on the real handler, with `extra` settings added.
async fn repo_app(extra: &[(&str, &str)]) -> FunctionsHost {
    repo_app_at(&repo_root(), extra).await
}

/// A copy of the repo's app whose host.json `edit` changes.
fn repo_app_copy(edit: impl FnOnce(&mut Value)) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut host_json: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("host.json")).unwrap())
            .unwrap();
    edit(&mut host_json);
    std::fs::write(dir.path().join("host.json"), host_json.to_string()).unwrap();
    for function in ["RecordingWebhook", "RecordingTransfer"] {
        std::fs::create_dir(dir.path().join(function)).unwrap();
        std::fs::copy(
            repo_root().join(function).join("function.json"),
            dir.path().join(function).join("function.json"),
        )
        .unwrap();
    }
    dir
}

/// The app at `root` on the real handler, with `extra` settings added.
async fn repo_app_at(root: &Path, extra: &[(&str, &str)]) -> FunctionsHost {
    let azurite = azurite();
    let mut settings = vec![
        ("TRANSFER_QUEUE".to_string(), unique_queue("transfers")),
        (
            "RECORDINGS_STORAGE".to_string(),
            azurite.connection_string(),
        ),
        (
            "AzureWebJobsStorage".to_string(),
            azurite.connection_string(),
        ),
        (
            "ACS_CONNECTION_STRING".to_string(),
            "endpoint=https://emulated.communication.azure.com/;accesskey=ZW11bGF0ZWQta2V5"
                .to_string(),
        ),
        ("RUST_LOG".to_string(), "info".to_string()),
    ];
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    FunctionsHost::start(root, Path::new(HANDLER), &settings)
        .await
        .unwrap()
}

/// POSTs `body` to the repo app's webhook as Event Grid does; returns the status.
async fn deliver(host: &FunctionsHost, body: &str) -> u16 {
    reqwest::Client::new()
        .post(host.url("/api/RecordingWebhook?code=functionkey"))
        .header("Content-Type", "application/json")
        .header("aeg-event-type", "Notification")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A refused delivery (a warning), an event that can never be processed (an error) and the
/// answers (information), as the host records the handler's lines.
async fn log_one_of_each_severity(host: &FunctionsHost) -> Vec<(LogLevel, String)> {
    assert_eq!(deliver(host, "[1").await, 400);
    deliver(
        host,
        include_str!("data/recording_missing_document_id.json"),
    )
    .await;
    host.wait_for("the handler's log lines", WAIT, |h| {
        let lines = h.worker_lines();
        ["delivery refused", "event rejected", "answered"]
            .iter()
            .all(|needle| lines.iter().any(|l| l.text.contains(needle)))
    })
    .await
    .unwrap();
    host.worker_lines()
        .into_iter()
        .map(|l| (l.level, l.text))
        .collect()
}

fn level_of(lines: &[(LogLevel, String)], needle: &str) -> LogLevel {
    lines
        .iter()
        .find(|(_, text)| text.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle}: {lines:#?}"))
        .0
}

#[tokio::test]
async fn the_host_records_the_handlers_warnings_and_errors_at_their_severity() {
    let host = repo_app(&[]).await;
    let lines = log_one_of_each_severity(&host).await;
    assert_eq!(level_of(&lines, "delivery refused"), LogLevel::Warning);
    assert_eq!(level_of(&lines, "event rejected"), LogLevel::Error);
    assert_eq!(level_of(&lines, "answered"), LogLevel::Information);
    for (level, text) in &lines {
        let is_warning_or_error = text.contains(" WARN ") || text.contains(" ERROR ");
        assert_eq!(
            is_warning_or_error,
            *level != LogLevel::Information,
            "{level:?}: {text}"
        );
    }
    host.stop().await;
}

#[tokio::test]
async fn json_log_lines_carry_span_fields_as_keys_and_keep_their_severity() {
    let host = repo_app(&[("LOG_FORMAT", "json")]).await;
    let lines = log_one_of_each_severity(&host).await;
    assert_eq!(level_of(&lines, "delivery refused"), LogLevel::Warning);
    assert_eq!(level_of(&lines, "event rejected"), LogLevel::Error);
    for (_, text) in &lines {
        let line: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {text}"));
        assert!(
            line["level"].is_string() && line["message"].is_string(),
            "{line}"
        );
    }
    let answered: Value = serde_json::from_str(
        &lines
            .iter()
            .find(|(_, t)| t.contains("\"answered\""))
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(answered["path"], "/api/RecordingWebhook", "{answered}");
    assert!(
        answered["invocation"].as_str().unwrap().len() >= 32,
        "{answered}"
    );
    assert!(answered["status"].is_u64(), "{answered}");
    host.stop().await;
}

/// Under the legacy forwarding a chunked delivery reaches the handler empty: it is refused
/// with the reason (send Content-Length), never read as "no events".
#[tokio::test]
async fn under_legacy_forwarding_a_chunked_delivery_is_refused_naming_content_length() {
    let app = repo_app_copy(|host_json| {
        host_json["customHandler"]
            .as_object_mut()
            .unwrap()
            .remove("enableProxyingHttpRequest");
    });
    let host = repo_app_at(app.path(), &[]).await;
    let body = include_str!("data/recording_ga.json").to_string();
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(body)];
    let r = reqwest::Client::new()
        .post(host.url("/api/RecordingWebhook?code=functionkey"))
        .header("Content-Type", "application/json")
        .header("aeg-event-type", "Notification")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let answer = r.text().await.unwrap();
    assert!(answer.contains("Content-Length"), "{answer}");
    host.stop().await;
}

#[tokio::test]
async fn repo_app_runs_the_real_handler_behind_the_emulated_front_end() {
    let started = Instant::now();
    let host = repo_app(&[]).await;
    assert!(
        host.queues()[0].queue.starts_with("fh-transfers-"),
        "%TRANSFER_QUEUE% resolved"
    );
    let validation = include_str!("data/eventgrid_validation.json");
    let r = reqwest::Client::new()
        .post(host.url("/api/RecordingWebhook?code=functionkey"))
        .header("Content-Type", "application/json")
        .header("aeg-event-type", "SubscriptionValidation")
        .body(validation)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["validationResponse"],
        "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    );
    assert!(started.elapsed() < WAIT);
    host.stop().await;
}
