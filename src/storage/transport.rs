//! [`Transport`]: sends one Storage REST request to one account's service endpoint with
//! `x-ms-version`, authorization re-done on every attempt, a per-attempt timeout, and bounded
//! retries of transient failures (5xx, 408, 429, timeouts, connection errors) that honour
//! `Retry-After`. The Blob and Queue clients describe their operations as [`Request`]s and
//! read the [`Response`]; nothing here knows which service it talks to.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
use reqwest::{Method, StatusCode};
use url::Url;

use super::auth::{redact_url, StorageAuth, MS_VERSION};
use super::error::{header, ServiceAnswer, StorageError, MS_REQUEST_ID};
use super::payload::Payload;
use crate::clock::{Clock, SystemClock};
use crate::retry::{
    is_retryable_status, parse_retry_after, Backoff, Jitter, RandomJitter, RetryPolicy,
};

/// The REST version we speak. `2021-08-06`: from 2019-12-12 on blocks may be 4000 MiB and a
/// blob 50,000 of them; bearer tokens need 2017-11-09 or later; an empty signed
/// `Content-Length` for bodiless requests needs 2015-02-21 or later; the SAS string formats we
/// generate in tests are those of 2020-12-06 and later. Azurite 3.35.0 accepts it without
/// `--skipApiVersionCheck`.
pub(crate) const DEFAULT_API_VERSION: &str = "2021-08-06";
/// Default limit on one attempt (request, answer and body). A Put Block of the largest block we
/// expect (tens of MiB) fits well inside it on any sane link.
pub(crate) const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Characters kept as they are in a resource path: unreserved ones and `/` (virtual
/// directories), as the official SDKs do; everything else is percent-encoded, so the path we
/// sign is the path we send.
const PATH_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Sends Storage requests to one service endpoint (host-style
/// `https://acct.blob.core.windows.net` or path-style `http://127.0.0.1:10000/devstoreaccount1`).
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct Transport {
    http: reqwest::Client,
    endpoint: Url,
    auth: StorageAuth,
    clock: Arc<dyn Clock>,
    jitter: Arc<dyn Jitter>,
    retry: RetryPolicy,
    attempt_timeout: Duration,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("endpoint", &redact_url(&self.endpoint))
            .field("auth", &self.auth)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// One operation's request, rebuilt into an HTTP request for every attempt: method, URL,
/// headers, body, and the error statuses the operation reads itself.
#[derive(Debug)]
pub(crate) struct Request {
    /// The REST operation, for messages ("Put Block").
    pub(crate) operation: &'static str,
    /// The blob, container or queue it is about, for messages.
    pub(crate) resource: String,
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Payload>,
    /// Error statuses that come back as a [`Response`] instead of an error.
    pub(crate) expected: &'static [StatusCode],
}

impl Request {
    /// Adds a header.
    pub(crate) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Adds headers.
    pub(crate) fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers.extend(headers);
        self
    }

    /// Sets the body (sent with its `Content-Length`, never chunked; every attempt sends the
    /// same parts again).
    pub(crate) fn body(mut self, body: impl Into<Payload>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Lets these error statuses come back as responses, for the operation to read.
    pub(crate) fn expect(mut self, statuses: &'static [StatusCode]) -> Self {
        self.expected = statuses;
        self
    }

    /// The request refused before sending.
    pub(crate) fn invalid(&self, reason: String) -> StorageError {
        StorageError::Invalid {
            operation: self.operation,
            resource: self.resource.clone(),
            reason,
        }
    }

    /// `response` as this request's service error.
    pub(crate) fn service_error(&self, response: &Response) -> StorageError {
        response
            .answer()
            .into_error(self.operation, &self.resource, response.attempts)
    }

    /// `response` could not be understood.
    pub(crate) fn unexpected(&self, response: &Response, reason: String) -> StorageError {
        StorageError::UnexpectedResponse {
            operation: self.operation,
            resource: self.resource.clone(),
            status: response.status.as_u16(),
            request_id: response.header(MS_REQUEST_ID),
            reason,
        }
    }
}

/// One answer, read in full (every answer the archiver expects is small).
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Attempts it took.
    pub(crate) attempts: u32,
}

impl Response {
    /// A header's value, when it is text.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name)
    }

    /// The service's error code, for an expected error status.
    pub(crate) fn error_code(&self) -> Option<String> {
        self.answer().error_code
    }

    fn answer(&self) -> ServiceAnswer {
        ServiceAnswer::parse(self.status, &self.headers, &self.body)
    }
}

impl Transport {
    /// A transport to `endpoint`, authorized by `auth`, with the default retry policy.
    pub(crate) fn new(http: reqwest::Client, endpoint: Url, auth: StorageAuth) -> Self {
        Transport {
            http,
            endpoint,
            auth,
            clock: Arc::new(SystemClock),
            jitter: Arc::new(RandomJitter),
            retry: RetryPolicy::default(),
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
        }
    }

    /// Replaces the retry policy (attempts, deadline, delays).
    pub(crate) fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Replaces the jitter source (tests use [`crate::retry::FixedJitter`]).
    pub(crate) fn with_jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.jitter = jitter;
        self
    }

    /// Replaces the clock that dates (and so signs) requests.
    pub(crate) fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the per-attempt timeout.
    pub(crate) fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// A request for `operation` on `endpoint/path[?query]`; `path` is percent-encoded here
    /// (keeping `/`), `query` must already be.
    pub(crate) fn request(
        &self,
        operation: &'static str,
        resource: &str,
        method: Method,
        path: &str,
        query: &str,
    ) -> Result<Request, StorageError> {
        let url = self
            .url(path, query)
            .map_err(|reason| StorageError::Invalid {
                operation,
                resource: resource.to_string(),
                reason,
            })?;
        Ok(Request {
            operation,
            resource: resource.to_string(),
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            expected: &[],
        })
    }

    /// `endpoint/path[?query]`, the path percent-encoded as it will be signed.
    pub(crate) fn url(&self, path: &str, query: &str) -> Result<Url, String> {
        let mut url = format!("{}/", self.endpoint.as_str().trim_end_matches('/'));
        url.extend(utf8_percent_encode(path, PATH_KEEP));
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        Url::parse(&url).map_err(|e| format!("cannot form a URL: {e}"))
    }

    /// Sends `request`, retrying transient failures within the retry policy. Successes and the
    /// statuses in `request.expected` come back as responses; everything else is an error.
    pub(crate) async fn send(&self, request: &Request) -> Result<Response, StorageError> {
        let mut backoff = Backoff::new(self.retry, &*self.jitter);
        loop {
            let mut attempt_request =
                reqwest::Request::new(request.method.clone(), request.url.clone());
            *attempt_request.headers_mut() = request.headers.clone();
            attempt_request
                .headers_mut()
                .insert(MS_VERSION, HeaderValue::from_static(DEFAULT_API_VERSION));
            if let Some(body) = &request.body {
                attempt_request
                    .headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                *attempt_request.body_mut() = Some(body.clone().into_body());
            }
            self.auth
                .authorize(&mut attempt_request, self.clock.now())
                .await
                .map_err(|source| StorageError::Auth {
                    operation: request.operation,
                    resource: request.resource.clone(),
                    source,
                })?;

            let attempts = backoff.attempts();
            let attempt = async {
                let response = self.http.execute(attempt_request).await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>(Response {
                    status,
                    headers,
                    body,
                    attempts,
                })
            };
            let (error, retry_after) =
                match tokio::time::timeout(self.attempt_timeout, attempt).await {
                    Ok(Ok(response))
                        if response.status.is_success()
                            || request.expected.contains(&response.status) =>
                    {
                        return Ok(response)
                    }
                    Ok(Ok(response)) => {
                        let error = request.service_error(&response);
                        if !is_retryable_status(response.status.as_u16()) {
                            return Err(error);
                        }
                        let retry_after = response
                            .header("retry-after")
                            .and_then(|v| parse_retry_after(&v, self.clock.now()));
                        (error, retry_after)
                    }
                    Ok(Err(source)) if source.is_builder() => {
                        return Err(request.invalid(source.without_url().to_string()))
                    }
                    Ok(Err(source)) => (
                        StorageError::Transport {
                            operation: request.operation,
                            resource: request.resource.clone(),
                            url: redact_url(&request.url),
                            source: source.without_url(),
                            attempts,
                        },
                        None,
                    ),
                    Err(_elapsed) => (
                        StorageError::Timeout {
                            operation: request.operation,
                            resource: request.resource.clone(),
                            timeout: self.attempt_timeout,
                            attempts,
                        },
                        None,
                    ),
                };
            match backoff.next_delay(retry_after) {
                Some(delay) => {
                    tracing::warn!(
                        operation = request.operation,
                        resource = %request.resource,
                        attempt = attempts,
                        delay_ms = delay.as_millis() as u64,
                        status = error.status(),
                        error_code = error.error_code(),
                        request_id = error.request_id(),
                        error = &error as &(dyn std::error::Error + 'static),
                        "transient Storage failure; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                None => return Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::config::Secret;
    use crate::disposition::Disposition;
    use crate::retry::FixedJitter;
    use warp::Filter;

    /// What the scripted server saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        query: String,
        version: Option<String>,
        date: Option<String>,
        content_length: Option<String>,
        transfer_encoding: Option<String>,
        body: Bytes,
    }

    /// A scripted answer: status, headers, body.
    type Answer = (u16, Vec<(&'static str, &'static str)>, &'static str);

    /// A server on 127.0.0.1:0 answering each request with the next scripted answer (then 500)
    /// and recording what it saw.
    async fn server(answers: Vec<Answer>) -> (Url, Arc<Mutex<Vec<Seen>>>) {
        let script: Arc<Mutex<VecDeque<Answer>>> = Arc::new(Mutex::new(answers.into()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let route = warp::any()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(
                move |path: warp::path::FullPath, query: String, h: HeaderMap, body: Bytes| {
                    let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(String::from);
                    s.lock().unwrap().push(Seen {
                        path: path.as_str().to_string(),
                        query,
                        version: text("x-ms-version"),
                        date: text("x-ms-date"),
                        content_length: text("content-length"),
                        transfer_encoding: text("transfer-encoding"),
                        body,
                    });
                    let (status, headers, body) =
                        script
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or((500, vec![], ""));
                    let mut reply = warp::http::Response::builder().status(status);
                    for (name, value) in headers {
                        reply = reply.header(name, value);
                    }
                    reply.body(body).unwrap()
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        let endpoint = Url::parse(&format!("http://{addr}/devstoreaccount1")).unwrap();
        (endpoint, seen)
    }

    fn transport(endpoint: Url) -> Transport {
        Transport::new(
            reqwest::Client::new(),
            endpoint,
            StorageAuth::Sas(Secret::new("sv=2021-08-06&sig=hidden".into())),
        )
        .with_jitter(Arc::new(FixedJitter(0.0)))
        .with_retry_policy(RetryPolicy {
            max_attempts: 3,
            deadline: Duration::from_secs(10),
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        })
    }

    #[test]
    fn urls_encode_paths_and_keep_path_style_accounts() {
        let t = transport(Url::parse("http://127.0.0.1:10000/devstoreaccount1").unwrap());
        assert_eq!(
            t.url("recordings/call 1/chunk#0.mp3", "").unwrap().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/recordings/call%201/chunk%230.mp3"
        );
        assert_eq!(
            t.url("recordings", "restype=container").unwrap().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/recordings?restype=container"
        );
        let host_style = transport(Url::parse("https://acct.blob.core.windows.net/").unwrap());
        assert_eq!(
            host_style.url("recordings/a/b.json", "").unwrap().as_str(),
            "https://acct.blob.core.windows.net/recordings/a/b.json"
        );
        assert!(!format!("{t:?}").contains("hidden"));
    }

    #[tokio::test]
    async fn transient_answers_are_retried_and_each_attempt_is_signed_again() {
        let (endpoint, seen) = server(vec![
            (503, vec![("x-ms-error-code", "ServerBusy")], ""),
            (500, vec![], ""),
            (201, vec![("x-ms-request-id", "ok-3")], ""),
        ])
        .await;
        let t = transport(endpoint);
        let request = t
            .request("Put Block", "b", Method::PUT, "c/b", "comp=block")
            .unwrap()
            .body(Bytes::from_static(b"hello"));
        let response = t.send(&request).await.unwrap();
        assert_eq!(response.status, StatusCode::CREATED);
        assert_eq!(response.attempts, 3);
        assert_eq!(response.header(MS_REQUEST_ID).as_deref(), Some("ok-3"));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        for s in seen.iter() {
            assert_eq!(s.path, "/devstoreaccount1/c/b");
            assert_eq!(s.query, "comp=block&sv=2021-08-06&sig=hidden");
            assert_eq!(s.version.as_deref(), Some(DEFAULT_API_VERSION));
            assert!(s.date.is_some());
            assert_eq!(s.content_length.as_deref(), Some("5"));
            assert_eq!(s.body, Bytes::from_static(b"hello"));
        }
    }

    #[tokio::test]
    async fn a_body_of_several_parts_goes_length_delimited_and_whole_on_every_attempt() {
        let (endpoint, seen) = server(vec![(503, vec![], ""), (201, vec![], "")]).await;
        let t = transport(endpoint);
        let parts = ["hel", "lo ", "world"].map(|p| Bytes::from_static(p.as_bytes()));
        let request = t
            .request("Put Block", "b", Method::PUT, "c/b", "comp=block")
            .unwrap()
            .body(Payload::from(Vec::from(parts)));
        assert_eq!(t.send(&request).await.unwrap().attempts, 2);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for s in seen.iter() {
            // Put Block refuses `Transfer-Encoding: chunked`.
            assert_eq!(s.transfer_encoding, None);
            assert_eq!(s.content_length.as_deref(), Some("11"));
            assert_eq!(s.body, Bytes::from_static(b"hello world"));
        }
    }

    #[tokio::test]
    async fn client_errors_are_not_retried_and_keep_code_message_and_request_id() {
        let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>InvalidBlockList</Code>\
            <Message>The specified block list is invalid.\nRequestId:r-400</Message></Error>";
        let (endpoint, seen) = server(vec![(400, vec![("x-ms-request-id", "r-400")], body)]).await;
        let t = transport(endpoint);
        let request = t
            .request("Put Block List", "b", Method::PUT, "c/b", "comp=blocklist")
            .unwrap();
        let err = t.send(&request).await.unwrap_err();
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(err.status(), Some(400));
        assert_eq!(err.error_code(), Some("InvalidBlockList"));
        assert_eq!(err.request_id(), Some("r-400"));
        assert_eq!(err.disposition(), Disposition::Drop);
        assert_eq!(
            err.to_string(),
            "Put Block List `b`: HTTP 400 InvalidBlockList (request id r-400): \
             The specified block list is invalid. after 1 attempt(s)"
        );
    }

    #[tokio::test]
    async fn expected_statuses_come_back_as_responses_and_spent_retries_as_errors() {
        let (endpoint, _) = server(vec![
            (404, vec![("x-ms-error-code", "QueueNotFound")], ""),
            (503, vec![], ""),
            (503, vec![], ""),
            (503, vec![("x-ms-request-id", "last")], ""),
        ])
        .await;
        let t = transport(endpoint);
        let request = t
            .request("Put Message", "q", Method::POST, "q/messages", "")
            .unwrap()
            .expect(&[StatusCode::NOT_FOUND]);
        let response = t.send(&request).await.unwrap();
        assert_eq!(response.status, StatusCode::NOT_FOUND);
        assert_eq!(response.error_code().as_deref(), Some("QueueNotFound"));
        let err = t.send(&request).await.unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::Service {
                    status: 503,
                    attempts: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.request_id(), Some("last"));
        assert_eq!(err.disposition(), Disposition::Retry);
    }

    #[tokio::test]
    async fn connection_failures_keep_their_source_and_never_show_the_sas() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let t = transport(Url::parse(&format!("http://{addr}/devstoreaccount1")).unwrap());
        let request = t
            .request("Get Blob Properties", "b", Method::HEAD, "c/b", "")
            .unwrap();
        let err = t.send(&request).await.unwrap_err();
        assert!(
            matches!(err, StorageError::Transport { attempts: 3, .. }),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(err.disposition(), Disposition::Retry);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hidden"), "{shown}");
    }
}
