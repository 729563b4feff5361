//! The HTTP front end, like `func start` on port 7071: passes requests for HTTP-only
//! functions raw to the worker at the same path and query, with the host's invocation
//! headers, and returns the worker's answer as it is. How the request is rebuilt depends on
//! [`HttpMode`] (`DefaultHttpWorkerService.ProxyInvocationRequest` /
//! `ProcessHttpInAndOutInvocationRequest`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

use super::config::{format_timespan, HttpMode};
use super::ids::new_guid;
use super::invoke::error_chain;
use super::journal::{InvocationRecord, InvocationStatus, Journal};
use super::process::HOST_VERSION;
use super::worker::Worker;

/// The Functions front end's request body limit (Kestrel's `MaxRequestBodySize` in the host).
pub const MAX_REQUEST_BODY: usize = 100 * 1024 * 1024;

/// Hop-by-hop and framing headers, which are not copied from one connection to another.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Headers .NET keeps on a request's content, not on the request: a forwarded request
/// (`HttpMode::Forward`) loses them, since `ToHttpRequestMessage` copies headers onto the
/// request and re-adds only `Content-Length` and `Content-Type`, with the body.
const CONTENT_HEADERS: [&str; 11] = [
    "allow",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "expires",
    "last-modified",
];

/// One HTTP-only function.
#[derive(Debug, Clone)]
pub(crate) struct HttpRoute {
    /// The function name.
    pub function: String,
    /// `/<routePrefix>/<route>` (matched without regard to case).
    pub path: String,
    /// Allowed methods; `None`: any.
    pub methods: Option<Vec<String>>,
}

/// What the front end shares with the rest of the host.
pub(crate) struct FrontEnd {
    pub routes: Vec<HttpRoute>,
    pub worker: Arc<Worker>,
    pub journal: Arc<Journal>,
    pub function_timeout: Option<Duration>,
    pub http: reqwest::Client,
    pub mode: HttpMode,
}

/// Serves `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    front: Arc<FrontEnd>,
    mut shutdown: watch::Receiver<bool>,
) {
    let routes = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(warp::any().map(move || Arc::clone(&front)))
        .then(
            |method: Method,
             path: warp::path::FullPath,
             query: String,
             headers: HeaderMap,
             body,
             front: Arc<FrontEnd>| async move {
                let body = match read_body(body).await {
                    Ok(b) => b,
                    Err(status) => return text(status, "request body too large or unreadable"),
                };
                front
                    .handle(method, path.as_str(), &query, headers, body)
                    .await
            },
        );
    warp::serve(routes)
        .incoming(listener)
        .graceful(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .run()
        .await;
}

async fn read_body<S, B>(body: S) -> Result<Bytes, StatusCode>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let mut buf = BytesMut::new();
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
        if buf.len() + chunk.remaining() > MAX_REQUEST_BODY {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        while bytes::Buf::has_remaining(&chunk) {
            let part = bytes::Buf::chunk(&chunk);
            let n = part.len();
            buf.extend_from_slice(part);
            bytes::Buf::advance(&mut chunk, n);
        }
    }
    Ok(buf.freeze())
}

fn text(status: StatusCode, body: &str) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Bytes::from(body.to_string()))
        .unwrap_or_default()
}

impl FrontEnd {
    async fn handle(
        &self,
        method: Method,
        path: &str,
        query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response<Bytes> {
        let trimmed = path.trim_end_matches('/');
        if trimmed.is_empty() {
            return text(
                StatusCode::OK,
                "Functions host emulator: your app is up and running",
            );
        }
        let Some(route) = self
            .routes
            .iter()
            .find(|r| r.path.eq_ignore_ascii_case(trimmed))
        else {
            return text(StatusCode::NOT_FOUND, "no function is served at this path");
        };
        if route
            .methods
            .as_ref()
            .is_some_and(|m| !m.iter().any(|m| m == method.as_str()))
        {
            // The host's route constraint does not match: no function answers.
            return text(
                StatusCode::NOT_FOUND,
                "no function accepts this method at this path",
            );
        }
        let invocation_id = new_guid();
        let function = &route.function;
        self.journal.log(format!(
            "Executing 'Functions.{function}' (Reason='This function was programmatically called via the host APIs.', Id={invocation_id})"
        ));
        let (started, started_at) = (Instant::now(), SystemTime::now());
        let (response, generation, status) = match self.worker.ready().await {
            Err(e) => (None, 0, InvocationStatus::Failed(e)),
            Ok(worker) => {
                let target = match query.is_empty() {
                    true => format!("http://127.0.0.1:{}{path}", worker.port),
                    false => format!("http://127.0.0.1:{}{path}?{query}", worker.port),
                };
                let mut request = self.http.request(method, target);
                for (name, value) in &headers {
                    let name = name.as_str();
                    let dropped = HOP_BY_HOP.contains(&name)
                        || name == "user-agent"
                        || name.starts_with("x-azure-functions-")
                        || (self.mode == HttpMode::Forward && CONTENT_HEADERS.contains(&name));
                    if !dropped {
                        request = request.header(name, value);
                    }
                }
                let original_agent = headers.get("user-agent").and_then(|v| v.to_str().ok());
                let agent = match (self.mode, original_agent) {
                    // YARP passes the caller's User-Agent on untouched.
                    (HttpMode::Proxy, agent) => agent.map(str::to_string),
                    // `UserAgent.ParseAdd` appends the host's product token.
                    (HttpMode::Forward, Some(agent)) => {
                        Some(format!("{agent} Azure-Functions-Host/{HOST_VERSION}"))
                    }
                    (HttpMode::Forward, None) => {
                        Some(format!("Azure-Functions-Host/{HOST_VERSION}"))
                    }
                };
                if let Some(agent) = agent {
                    request = request.header("User-Agent", agent);
                }
                let declared = headers
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let request = match self.mode {
                    HttpMode::Proxy => request.body(body),
                    HttpMode::Forward if declared.is_some_and(|n| n > 0) => {
                        match headers.get("content-type") {
                            Some(t) => request.header("Content-Type", t),
                            None => request,
                        }
                        .body(body)
                    }
                    // No Content-Length (a chunked request) or 0: the worker gets no body.
                    HttpMode::Forward => request,
                };
                let request = request
                    .header("X-Azure-Functions-InvocationId", &invocation_id)
                    .header("X-Azure-Functions-HostVersion", HOST_VERSION);
                let sent = async {
                    let r = request.send().await?;
                    let status = r.status();
                    let headers = r.headers().clone();
                    let body = r.bytes().await?;
                    Ok::<_, reqwest::Error>((status, headers, body))
                };
                let outcome = match self.function_timeout {
                    Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| limit),
                    None => Ok(sent.await),
                };
                match outcome {
                    Ok(Ok(answer)) => {
                        (Some(answer), worker.generation, InvocationStatus::Succeeded)
                    }
                    Ok(Err(e)) => (
                        None,
                        worker.generation,
                        InvocationStatus::Failed(format!(
                            "no answer from the worker: {}",
                            error_chain(&e)
                        )),
                    ),
                    Err(limit) => {
                        self.journal.log(format!(
                            "A function timeout has occurred. Restarting worker process executing invocationId '{invocation_id}'."
                        ));
                        self.worker.kill(
                            Some(worker.generation),
                            &format!("function timeout of invocation {invocation_id}"),
                        );
                        (
                            None,
                            worker.generation,
                            InvocationStatus::Failed(format!("Timeout value of {} was exceeded by function: Functions.{function}", format_timespan(limit))),
                        )
                    }
                }
            }
        };
        let duration = started.elapsed();
        let outcome = match &status {
            InvocationStatus::Succeeded => "Succeeded",
            InvocationStatus::Failed(_) => "Failed",
        };
        self.journal.log(format!(
            "Executed 'Functions.{function}' ({outcome}, Id={invocation_id}, Duration={}ms)",
            duration.as_millis()
        ));
        if let InvocationStatus::Failed(reason) = &status {
            self.journal
                .log(format!("Result: Failure Exception: {reason}"));
        }
        self.journal.invocation(InvocationRecord {
            function: function.clone(),
            invocation_id,
            message_id: None,
            dequeue_count: None,
            http_status: response.as_ref().map(|(s, _, _)| s.as_u16()),
            status,
            started: started_at,
            duration,
            worker_generation: generation,
            logs: Vec::new(),
        });
        let Some((status, headers, body)) = response else {
            // The host answers a failed invocation with a bare 500.
            return text(StatusCode::INTERNAL_SERVER_ERROR, "");
        };
        let mut builder = Response::builder().status(status.as_u16());
        for (name, value) in &headers {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                builder = builder.header(name.as_str(), value.as_bytes());
            }
        }
        builder.body(body).unwrap_or_default()
    }
}
