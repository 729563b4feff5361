//! [`FaultProxy`]: an HTTP proxy in front of a storage endpoint (usually Azurite) that counts
//! requests by Storage operation and answers the next N matching ones with an injected status,
//! as the real service does when it is busy (503 `ServerBusy`) or throttling (429), or after
//! letting the request through, as when the answer to a write is lost. A fault can
//! let a number of matching requests through first, so a test can script "the 7th Put Block
//! fails" from a seed. Every request is logged with its answer and the time of it
//! ([`FaultProxy::requests`]), so tests can order storage writes against other services' logs.
//!
//! Requests are forwarded as they are (path, query, headers, body), so SharedKey and SAS
//! signatures made for the proxy's address still verify at the target: neither signs the host.
//! Bodies are buffered, which is fine for test-sized blocks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use warp::filters::path::FullPath;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

/// The Storage operation a request is, from its method, path and query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `PUT ?restype=container`.
    CreateContainer,
    /// `PUT ?comp=block`.
    PutBlock,
    /// `PUT ?comp=blocklist`.
    PutBlockList,
    /// `GET ?comp=blocklist`.
    GetBlockList,
    /// `HEAD` on a blob.
    GetProperties,
    /// `GET` on a blob (download).
    GetBlob,
    /// `PUT` on a blob without `comp`.
    PutBlob,
    /// `POST .../messages` (Queue Put Message).
    PutMessage,
    /// Anything else.
    Other,
}

impl RequestKind {
    /// Classifies a request by method and raw query string.
    pub fn classify(method: &Method, path: &str, query: &str) -> RequestKind {
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let comp = param("comp");
        let restype = param("restype");
        match (method.as_str(), comp.as_deref(), restype.as_deref()) {
            ("PUT", None, Some("container")) => RequestKind::CreateContainer,
            ("PUT", Some("block"), _) => RequestKind::PutBlock,
            ("PUT", Some("blocklist"), _) => RequestKind::PutBlockList,
            ("GET", Some("blocklist"), _) => RequestKind::GetBlockList,
            ("HEAD", None, None) => RequestKind::GetProperties,
            ("GET", None, None) => RequestKind::GetBlob,
            ("PUT", None, None) => RequestKind::PutBlob,
            ("POST", None, None) if path.trim_end_matches('/').ends_with("/messages") => {
                RequestKind::PutMessage
            }
            _ => RequestKind::Other,
        }
    }
}

/// An injected failure: after `after` requests of `kind` went through, the next `times` get
/// `status` without reaching the target.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Which requests.
    pub kind: RequestKind,
    /// How many of them pass untouched before the fault applies.
    pub after: usize,
    /// How many of them.
    pub times: usize,
    /// The status to answer (with an Azure-style XML error body and `x-ms-error-code`).
    pub status: u16,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u32>,
    /// Wait this long before answering (to exercise client timeouts).
    pub delay: Option<Duration>,
    /// Forward the request first, so it takes effect, and answer `status` instead of the
    /// target's answer: a write whose answer was lost on the way back.
    pub forward: bool,
}

impl Fault {
    /// The next `times` requests of `kind` get `status`.
    pub fn status(kind: RequestKind, times: usize, status: u16) -> Fault {
        Fault {
            kind,
            after: 0,
            times,
            status,
            retry_after: None,
            delay: None,
            forward: false,
        }
    }

    /// Adds `Retry-After: secs`.
    pub fn with_retry_after(mut self, secs: u32) -> Fault {
        self.retry_after = Some(secs);
        self
    }

    /// Waits `delay` before answering.
    pub fn with_delay(mut self, delay: Duration) -> Fault {
        self.delay = Some(delay);
        self
    }

    /// Lets the request reach the target before answering `status`.
    pub fn after_forwarding(mut self) -> Fault {
        self.forward = true;
        self
    }

    /// Lets `n` matching requests through before the fault applies.
    pub fn after(mut self, n: usize) -> Fault {
        self.after = n;
        self
    }
}

/// One request as the proxy answered it.
#[derive(Debug, Clone)]
pub struct ProxiedRequest {
    /// The operation.
    pub kind: RequestKind,
    /// The path (account, container, blob or queue), without the query.
    pub path: String,
    /// The status sent back.
    pub status: u16,
    /// What the target answered, when the request reached it (502 when it could not be
    /// reached); with a fault [`Fault::after_forwarding`] this differs from `status`.
    pub target_status: Option<u16>,
    /// Whether the status was injected.
    pub injected: bool,
    /// When the answer was ready to send.
    pub at: Instant,
}

#[derive(Default)]
struct Counters {
    seen: HashMap<RequestKind, usize>,
    failed: HashMap<RequestKind, usize>,
}

struct State {
    target_origin: String,
    client: reqwest::Client,
    faults: Mutex<Vec<Fault>>,
    counters: Mutex<Counters>,
    log: Mutex<Vec<ProxiedRequest>>,
    /// Requests received and not yet answered, by request number: kind, path, arrival.
    unanswered: Mutex<HashMap<usize, (RequestKind, String, Instant)>>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    server: LocalServer,
    target_path: String,
    state: Arc<State>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.server.addr)
            .field("target", &self.state.target_origin)
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `target_endpoint` (e.g. Azurite's
    /// `http://127.0.0.1:41234/devstoreaccount1`). Must be called inside a Tokio runtime; the
    /// proxy lives on it.
    pub async fn start(target_endpoint: &str) -> std::io::Result<FaultProxy> {
        let (origin, path) = split_origin(target_endpoint).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "target is not an http URL",
            )
        })?;
        let state = Arc::new(State {
            target_origin: origin.to_string(),
            client: reqwest::Client::new(),
            faults: Mutex::new(Vec::new()),
            counters: Mutex::new(Counters::default()),
            log: Mutex::new(Vec::new()),
            unanswered: Mutex::new(HashMap::new()),
        });
        let with_state = {
            let state = state.clone();
            warp::any().map(move || state.clone())
        };
        let route = request_parts()
            .and(warp::body::bytes())
            .and(with_state)
            .then(handle)
            .boxed();
        Ok(FaultProxy {
            server: LocalServer::start(route).await?,
            target_path: path.to_string(),
            state,
        })
    }

    /// The target endpoint as seen through the proxy, e.g.
    /// `http://127.0.0.1:50123/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://{}{}", self.server.addr, self.target_path)
    }

    /// The proxy's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Queues a fault; faults for the same kind apply in the order given (a fault still
    /// letting requests through holds back the ones queued after it).
    pub fn inject(&self, fault: Fault) {
        lock(&self.state.faults).push(fault);
    }

    /// Requests of `kind` received so far, failed ones included.
    pub fn count(&self, kind: RequestKind) -> usize {
        lock(&self.state.counters)
            .seen
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// Every request so far, in the order they were answered.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        lock(&self.state.log).clone()
    }

    /// Requests received whose answer is not ready yet (the target is slow to answer, or an
    /// injected delay runs), oldest first: what a report of a stuck test shows.
    pub fn unanswered(&self) -> Vec<String> {
        let mut waiting: Vec<_> = lock(&self.state.unanswered).values().cloned().collect();
        waiting.sort_by_key(|(_, _, at)| *at);
        waiting
            .into_iter()
            .map(|(kind, path, at)| {
                format!("{kind:?} {path} for {:.1} s", at.elapsed().as_secs_f64())
            })
            .collect()
    }

    /// Requests of `kind` answered with an injected fault so far.
    pub fn failed(&self, kind: RequestKind) -> usize {
        lock(&self.state.counters)
            .failed
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }
}

/// A warp server on a free loopback port, on the current Tokio runtime; stops when dropped.
pub(crate) struct LocalServer {
    pub(crate) addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LocalServer {
    pub(crate) async fn start(
        route: BoxedFilter<(Response<Bytes>,)>,
    ) -> std::io::Result<LocalServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            warp::serve(route)
                .incoming(listener)
                .graceful(async {
                    let _ = rx.await;
                })
                .run(),
        );
        Ok(LocalServer {
            addr,
            shutdown: Some(tx),
        })
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Method, full path, raw query (empty when absent) and headers of any request.
pub(crate) fn request_parts(
) -> impl Filter<Extract = (Method, FullPath, String, HeaderMap), Error = std::convert::Infallible> + Clone
{
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `http://host:port/path` → (`http://host:port`, `/path` without a trailing `/`).
fn split_origin(endpoint: &str) -> Option<(&str, &str)> {
    let after_scheme = endpoint.strip_prefix("http://")?;
    let slash = after_scheme
        .find('/')
        .map_or(endpoint.len(), |i| i + "http://".len());
    Some((&endpoint[..slash], endpoint[slash..].trim_end_matches('/')))
}

/// Serves one request on a task of its own: a client that hangs up (a killed process) drops
/// this future, but the request may already have reached the target, and the log must still
/// show it.
async fn handle(
    method: Method,
    path: FullPath,
    query: String,
    headers: HeaderMap,
    body: Bytes,
    state: Arc<State>,
) -> Response<Bytes> {
    tokio::spawn(serve(method, path, query, headers, body, state))
        .await
        .unwrap_or_else(|e| {
            let mut r = Response::new(Bytes::from(format!("FaultProxy failed: {e}")));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
}

async fn serve(
    method: Method,
    path: FullPath,
    query: String,
    headers: HeaderMap,
    body: Bytes,
    state: Arc<State>,
) -> Response<Bytes> {
    let kind = RequestKind::classify(&method, path.as_str(), &query);
    let fault = take_fault(&mut lock(&state.faults), kind);
    let injected = fault.is_some();
    let request_no = {
        let mut counters = lock(&state.counters);
        *counters.seen.entry(kind).or_default() += 1;
        if fault.is_some() {
            *counters.failed.entry(kind).or_default() += 1;
        }
        counters.seen.values().sum::<usize>()
    };
    lock(&state.unanswered).insert(
        request_no,
        (kind, path.as_str().to_string(), Instant::now()),
    );
    let (response, target_status) = match fault {
        Some(fault) => {
            let mut target_status = None;
            if fault.forward {
                let lost = answer(&state, method.clone(), &path, &query, &headers, body).await;
                target_status = Some(lost.status().as_u16());
            }
            if let Some(delay) = fault.delay {
                tokio::time::sleep(delay).await;
            }
            let injected = fault_response(&fault, request_no, method == Method::HEAD);
            (injected, target_status)
        }
        None => {
            let forwarded = answer(&state, method, &path, &query, &headers, body).await;
            let status = forwarded.status().as_u16();
            (forwarded, Some(status))
        }
    };
    lock(&state.log).push(ProxiedRequest {
        kind,
        path: path.as_str().to_string(),
        status: response.status().as_u16(),
        target_status,
        injected,
        at: Instant::now(),
    });
    lock(&state.unanswered).remove(&request_no);
    response
}

/// The fault that applies to the next request of `kind`, if any, counting it off.
fn take_fault(faults: &mut [Fault], kind: RequestKind) -> Option<Fault> {
    let f = faults.iter_mut().find(|f| f.kind == kind && f.times > 0)?;
    if f.after > 0 {
        f.after -= 1;
        return None;
    }
    f.times -= 1;
    Some(f.clone())
}

/// The target's answer, or 502 when it cannot be reached.
async fn answer(
    state: &State,
    method: Method,
    path: &FullPath,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response<Bytes> {
    match forward(state, method, path.as_str(), query, headers, body).await {
        Ok(response) => response,
        Err(e) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Bytes::from(format!(
                "FaultProxy could not reach the target: {e}"
            )))
            .unwrap_or_default(),
    }
}

async fn forward(
    state: &State,
    method: Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Bytes>, reqwest::Error> {
    let mut url = format!("{}{}", state.target_origin, path);
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    let is_head = method == Method::HEAD;
    let mut request = state.client.request(method, url).body(body);
    for (name, value) in headers {
        if !is_hop_by_hop(name.as_str()) && name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let upstream = request.send().await?;
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        // hyper recomputes Content-Length from the body, except for HEAD where the body is
        // absent and the upstream length must survive.
        if !is_hop_by_hop(name.as_str()) && (is_head || name != "content-length") {
            response = response.header(name, value);
        }
    }
    let body = upstream.bytes().await?;
    Ok(response.body(body).unwrap_or_default())
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
    )
}

fn fault_response(fault: &Fault, request_no: usize, is_head: bool) -> Response<Bytes> {
    let code = match fault.status {
        500 => "InternalError",
        503 | 429 => "ServerBusy",
        408 | 504 => "OperationTimedOut",
        400 => "InvalidInput",
        403 => "AuthorizationFailure",
        404 => "ResourceNotFound",
        _ => "InjectedFault",
    };
    let body = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code>\
         <Message>Injected by FaultProxy.\nRequestId:fault-proxy-{request_no}</Message></Error>"
    );
    let mut response = Response::builder()
        .status(fault.status)
        .header("x-ms-error-code", code)
        .header("x-ms-request-id", format!("fault-proxy-{request_no}"))
        .header("content-type", "application/xml");
    if let Some(secs) = fault.retry_after {
        response = response.header("retry-after", secs.to_string());
    }
    let body = if is_head {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    response.body(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_method_and_query() {
        let c = |m: Method, p: &str, q: &str| RequestKind::classify(&m, p, q);
        assert_eq!(
            c(Method::PUT, "/a/c", "restype=container"),
            RequestKind::CreateContainer
        );
        assert_eq!(
            c(Method::PUT, "/a/c/b", "comp=block&blockid=MDAw"),
            RequestKind::PutBlock
        );
        assert_eq!(
            c(Method::PUT, "/a/c/b", "comp=blocklist&sv=1&sig=x"),
            RequestKind::PutBlockList
        );
        assert_eq!(
            c(Method::GET, "/a/c/b", "comp=blocklist&blocklisttype=all"),
            RequestKind::GetBlockList
        );
        assert_eq!(c(Method::HEAD, "/a/c/b", ""), RequestKind::GetProperties);
        assert_eq!(c(Method::PUT, "/a/c/b", "sv=1&sig=x"), RequestKind::PutBlob);
        assert_eq!(
            c(Method::POST, "/a/q/messages", "messagettl=-1"),
            RequestKind::PutMessage
        );
        assert_eq!(c(Method::DELETE, "/a/c/b", ""), RequestKind::Other);
    }

    #[test]
    fn a_fault_lets_its_quota_through_then_applies_in_order() {
        let mut faults = vec![
            Fault::status(RequestKind::PutBlock, 1, 503).after(2),
            Fault::status(RequestKind::PutBlock, 1, 500),
        ];
        let mut next = || take_fault(&mut faults, RequestKind::PutBlock).map(|f| f.status);
        assert_eq!(
            [next(), next(), next(), next(), next()],
            [None, None, Some(503), Some(500), None]
        );
        assert!(take_fault(&mut faults, RequestKind::PutBlockList).is_none());
    }

    #[test]
    fn origins_split_from_paths() {
        assert_eq!(
            split_origin("http://127.0.0.1:10000/devstoreaccount1/"),
            Some(("http://127.0.0.1:10000", "/devstoreaccount1"))
        );
        assert_eq!(
            split_origin("http://127.0.0.1:10000"),
            Some(("http://127.0.0.1:10000", ""))
        );
        assert_eq!(split_origin("https://x"), None);
    }

    #[tokio::test]
    async fn a_request_waiting_for_its_answer_is_listed_until_it_is_answered() {
        // No target: an injected status is answered without forwarding.
        let proxy = FaultProxy::start("http://127.0.0.1:9/devstoreaccount1")
            .await
            .unwrap();
        proxy.inject(
            Fault::status(RequestKind::GetProperties, 1, 503)
                .with_delay(Duration::from_millis(500)),
        );
        let url = format!("{}/c/b", proxy.endpoint());
        let head = tokio::spawn(async move { reqwest::Client::new().head(url).send().await });
        let deadline = Instant::now() + Duration::from_secs(5);
        while proxy.unanswered().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let waiting = proxy.unanswered();
        assert_eq!(waiting.len(), 1, "{waiting:?}");
        assert!(
            waiting[0].starts_with("GetProperties /devstoreaccount1/c/b for "),
            "{waiting:?}"
        );
        assert_eq!(head.await.unwrap().unwrap().status(), 503);
        assert!(proxy.unanswered().is_empty());
    }
}
