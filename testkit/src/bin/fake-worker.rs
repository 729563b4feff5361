//! A stand-in for a custom handler, for the Functions host emulator's own tests
//! (`tests/functions_host.rs`): a real process that the host starts, probes, invokes, kills
//! and restarts, and whose behaviour each queue message chooses:
//!
//! | message `action` | answer |
//! |---|---|
//! | `ok` (or anything else) | 200 |
//! | `fail` | 500 |
//! | `fail_until` with `n` | 500 while `DequeueCount <= n`, then 200 |
//! | `crash_first` | the process exits (status 3) on the first try |
//! | `sleep_first` / `sleep` with `ms` | waits that long (first try only / every try), then 200 |
//! | `empty_reply` | 200 with no body |
//!
//! Each answer's `Logs` carry the envelope, the headers and the most invocations that ran at
//! once. `GET /` answers the host's readiness probe; `/api/...` (a forwarded HTTP request)
//! is echoed back with 202. It listens on `FUNCTIONS_CUSTOMHANDLER_PORT`, as a custom handler
//! must; when the port is taken it says so and exits with status 2, like the handler.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use warp::Filter;

#[tokio::main]
async fn main() -> ExitCode {
    let port: u16 = match std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        Some(port) => port,
        None => {
            eprintln!("fake-worker: FUNCTIONS_CUSTOMHANDLER_PORT must name a port");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("fake-worker: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::from(2);
        }
    };
    let routes = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .then(fake_worker_route);
    warp::serve(routes).incoming(listener).run().await;
    ExitCode::SUCCESS
}

static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MAX_RUNNING: AtomicUsize = AtomicUsize::new(0);

async fn fake_worker_route(
    method: warp::http::Method,
    path: warp::path::FullPath,
    query: String,
    headers: warp::http::HeaderMap,
    body: bytes::Bytes,
) -> warp::http::Response<String> {
    let reply = |status: u16, body: Value| {
        warp::http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("x-fake-worker", std::process::id().to_string())
            .body(body.to_string())
            .unwrap()
    };
    let header_map: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
        .collect();
    let path = path.as_str().to_string();
    if path == "/" {
        return reply(200, json!("ready"));
    }
    if path.starts_with("/api/") {
        // A forwarded HTTP-only function: echo what arrived, with a status the test can spot.
        return reply(
            202,
            json!({
                "method": method.as_str(), "path": path, "query": query, "headers": header_map,
                "body": String::from_utf8_lossy(&body),
            }),
        );
    }
    // A queue invocation: the message text chooses the behaviour.
    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let data = envelope["Data"]["job"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let text: String = serde_json::from_str(&data).unwrap_or_else(|_| data.clone());
    let dequeue: u64 = envelope["Metadata"]["DequeueCount"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let command: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if command["action"] == "empty_reply" {
        // 200 with no body: the host reads a null result and never completes the invocation.
        return warp::http::Response::builder()
            .status(200)
            .body(String::new())
            .unwrap();
    }
    let running = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MAX_RUNNING.fetch_max(running, Ordering::SeqCst);
    let status = match command["action"].as_str().unwrap_or("ok") {
        "fail" => 500,
        "fail_until" if dequeue <= command["n"].as_u64().unwrap_or(0) => 500,
        "crash_first" if dequeue == 1 => std::process::exit(3),
        "sleep_first" if dequeue == 1 => {
            tokio::time::sleep(Duration::from_millis(command["ms"].as_u64().unwrap_or(0))).await;
            200
        }
        "sleep" => {
            tokio::time::sleep(Duration::from_millis(command["ms"].as_u64().unwrap_or(0))).await;
            200
        }
        _ => 200,
    };
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    reply(
        status,
        json!({
            "Outputs": {},
            "Logs": [
                format!("envelope={envelope}"),
                format!("headers={}", Value::Object(header_map)),
                format!("max_running={}", MAX_RUNNING.load(Ordering::SeqCst)),
            ],
            "ReturnValue": null
        }),
    )
}
