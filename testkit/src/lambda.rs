//! The AWS Lambda Runtime API, as a function process sees it: [`LambdaRuntime`] serves the
//! public protocol (`AWS_LAMBDA_RUNTIME_API=host:port`) and [`LambdaFunction`] starts a
//! function binary against it with the variables Lambda sets.
//!
//! Handled, as AWS documents them (Lambda developer guide, "Using the Lambda runtime API for
//! custom runtimes"):
//! * `GET /2018-06-01/runtime/invocation/next`: blocks until an event is invoked, then answers
//!   200 with the event as body and `Lambda-Runtime-Aws-Request-Id`,
//!   `Lambda-Runtime-Deadline-Ms`, `Lambda-Runtime-Invoked-Function-Arn`,
//!   `Lambda-Runtime-Trace-Id`.
//! * `POST /2018-06-01/runtime/invocation/{id}/response` and `.../{id}/error`: 202, and the
//!   invocation completes with that body; an id that is not outstanding gets 400.
//! * `POST /2018-06-01/runtime/init/error`: 202; recorded for [`LambdaRuntime::init_errors`].
//!
//! Anything else gets 404.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

use crate::proxy::{lock, request_parts, LocalServer};

/// The ARN reported to the function.
pub const FUNCTION_ARN: &str = "arn:aws:lambda:eu-west-1:123456789012:function:recording-webhook";

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function posted a response (its JSON).
    Response(Value),
    /// The function posted an error: `Lambda-Runtime-Function-Error-Type` and the body.
    Error {
        /// The error type header, when sent.
        error_type: Option<String>,
        /// The error document.
        body: Value,
    },
}

struct Pending {
    id: String,
    payload: String,
    deadline: Duration,
}

struct State {
    queue: mpsc::UnboundedSender<Pending>,
    next: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>,
    outstanding: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_errors: Mutex<Vec<Value>>,
}

/// A running Runtime API; stops when dropped.
pub struct LambdaRuntime {
    server: LocalServer,
    state: Arc<State>,
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

impl LambdaRuntime {
    /// Starts the Runtime API on a free loopback port, on the current Tokio runtime.
    pub async fn start() -> std::io::Result<LambdaRuntime> {
        let (queue, next) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            queue,
            next: tokio::sync::Mutex::new(next),
            outstanding: Mutex::new(HashMap::new()),
            init_errors: Mutex::new(Vec::new()),
        });
        let with_state = {
            let state = state.clone();
            warp::any().map(move || state.clone())
        };
        let route = request_parts()
            .and(warp::body::bytes())
            .and(with_state)
            .then(
                |method: Method,
                 path: warp::path::FullPath,
                 _query: String,
                 headers: HeaderMap,
                 body: Bytes,
                 state: Arc<State>| async move {
                    serve(&state, &method, path.as_str(), &headers, &body).await
                },
            )
            .boxed();
        Ok(LambdaRuntime {
            server: LocalServer::start(route).await?,
            state,
        })
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.server.addr.to_string()
    }

    /// Invokes the function with `payload` (an event JSON) and waits at most `limit` for its
    /// answer.
    pub async fn invoke(&self, payload: &str, limit: Duration) -> Result<Outcome, String> {
        let id = format!(
            "8476a536-e9f4-11e8-9739-{:012x}",
            REQUEST_IDS.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        lock(&self.state.outstanding).insert(id.clone(), tx);
        let deadline = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            + limit;
        self.state
            .queue
            .send(Pending {
                id: id.clone(),
                payload: payload.to_string(),
                deadline,
            })
            .map_err(|_| "the runtime API is stopped".to_string())?;
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => {
                lock(&self.state.outstanding).remove(&id);
                Err(format!("invocation {id} got no answer within {limit:?}"))
            }
        }
    }

    /// Every body posted to `/runtime/init/error`.
    pub fn init_errors(&self) -> Vec<Value> {
        lock(&self.state.init_errors).clone()
    }
}

async fn serve(
    state: &State,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<Bytes> {
    let json = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let rest = path.strip_prefix("/2018-06-01/runtime/").unwrap_or("");
    match (method, rest.split('/').collect::<Vec<_>>().as_slice()) {
        (&Method::GET, ["invocation", "next"]) => {
            let Some(next) = state.next.lock().await.recv().await else {
                return answer(StatusCode::INTERNAL_SERVER_ERROR, "stopped");
            };
            Response::builder()
                .status(200)
                .header("Lambda-Runtime-Aws-Request-Id", &next.id)
                .header(
                    "Lambda-Runtime-Deadline-Ms",
                    next.deadline.as_millis().to_string(),
                )
                .header("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN)
                .header(
                    "Lambda-Runtime-Trace-Id",
                    "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
                )
                .header("Content-Type", "application/json")
                .body(Bytes::from(next.payload))
                .unwrap_or_default()
        }
        (&Method::POST, ["invocation", id, kind @ ("response" | "error")]) => {
            let Some(waiter) = lock(&state.outstanding).remove(*id) else {
                return answer(StatusCode::BAD_REQUEST, "InvalidRequestID");
            };
            let outcome = if *kind == "response" {
                Outcome::Response(json())
            } else {
                Outcome::Error {
                    error_type: headers
                        .get("lambda-runtime-function-error-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                    body: json(),
                }
            };
            let _ = waiter.send(outcome);
            answer(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
        }
        (&Method::POST, ["init", "error"]) => {
            lock(&state.init_errors).push(json());
            answer(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
        }
        _ => answer(StatusCode::NOT_FOUND, "not a Runtime API route"),
    }
}

fn answer(status: StatusCode, text: &'static str) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from_static(text.as_bytes()));
    *r.status_mut() = status;
    r
}

/// A function process started the way Lambda starts a custom runtime (`bootstrap`), pointed
/// at a [`LambdaRuntime`]. Killed when dropped.
pub struct LambdaFunction {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl LambdaFunction {
    /// Starts `binary` with Lambda's reserved variables plus `env`.
    pub fn start(
        binary: &Path,
        runtime: &LambdaRuntime,
        env: &[(&str, &str)],
    ) -> Result<LambdaFunction, String> {
        let mut cmd = Command::new(binary);
        cmd.env("AWS_LAMBDA_RUNTIME_API", runtime.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", "recording-webhook")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/recording-webhook")
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/11/29/[$LATEST]0123456789abcdef",
            )
            .env("AWS_REGION", "eu-west-1")
            .env("_HANDLER", "bootstrap")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let echo = std::env::var_os("TESTKIT_ECHO").is_some();
        let (output, _) = crate::host::capture_output(&mut child, None, echo.then_some("lambda"));
        Ok(LambdaFunction { child, output })
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        lock(&self.output).clone()
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        crate::host::wait_exit(&mut self.child, limit).await
    }
}

impl Drop for LambdaFunction {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
