//! ACS recording downloads: HMAC-signed (or bearer) requests, an SSRF allowlist, and a
//! resumable byte stream.
//!
//! | file | job |
//! |---|---|
//! | [`sign`] | the HMAC-SHA256 string-to-sign and headers (pure) |
//! | [`allowlist`] | which URLs may receive a signed request: allowed hosts, recording-object paths, the object each names (pure) |
//! | `download.rs` | `Content-Range` arithmetic (pure) and the resuming stream |
//! | `redact.rs` | error-body snippets without credentials (pure) |
//! | this file | [`AcsClient`]: one signed request, retries, metadata, delete; [`AcsError`] |
//!
//! Nothing here knows about Event Grid or the Functions host: callers pass URLs (see
//! [`chunk_urls`]) and map an [`AcsError`] to a [`Disposition`] with [`AcsError::disposition`].

pub mod allowlist;
mod download;
mod redact;
pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::clock::{Clock, SystemClock};
use crate::config::acs::AcsAuth;
use crate::config::{AcsSettings, AllowedHost, Lookup, Secret};
use crate::disposition::Disposition;
use crate::identity::{IdentityError, ManagedIdentityTokens, TokenSource, ACS_RESOURCE};
use crate::recording::ChunkSource;
use crate::retry::{
    is_retryable_status, parse_retry_after, Backoff, Jitter, RandomJitter, RetryPolicy,
};

pub use allowlist::{Access, CheckedChunk, ChunkRefusal, RecordingObject, Refusal, UrlPolicy};
pub use download::{ByteRange, Download};

/// `api-version` of the 2021 preview `recording/download` URLs.
pub const PREVIEW_API_VERSION: &str = "2021-04-15-preview1";
/// Largest metadata document accepted. Real ones are a few KiB (`docs/protocols.md` §1.4).
pub const METADATA_MAX_BYTES: usize = 1024 * 1024;
/// How much of an error body is read to quote it; the rest is discarded unread.
const ERROR_BODY_READ_BYTES: usize = 4096;

/// The URLs of one recording chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkUrls {
    /// The media.
    pub media: Url,
    /// The metadata document, when the event named one (always, for preview events).
    pub metadata: Option<Url>,
    /// DELETE it to free the recording before ACS's 24 h retention ends (GA events only).
    pub delete: Option<Url>,
}

/// Where a chunk is fetched from. Preview events carry only `documentId`, so the URLs are built
/// on the ACS endpoint (`/recording/download/{id}` and `.../metadata`, with the preview
/// `api-version`); later events name their URLs, which are used exactly as given.
pub fn chunk_urls(endpoint: &Url, document_id: &str, source: &ChunkSource) -> ChunkUrls {
    match source {
        ChunkSource::Preview => {
            let build = |metadata: bool| {
                let mut url = endpoint.clone();
                url.set_query(None);
                url.set_fragment(None);
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments
                        .clear()
                        .extend(["recording", "download", document_id]);
                    if metadata {
                        segments.push("metadata");
                    }
                }
                url.query_pairs_mut()
                    .append_pair("api-version", PREVIEW_API_VERSION);
                url
            };
            ChunkUrls {
                media: build(false),
                metadata: Some(build(true)),
                delete: None,
            }
        }
        ChunkSource::Located {
            content,
            metadata,
            delete,
        } => ChunkUrls {
            media: content.clone(),
            metadata: metadata.clone(),
            delete: delete.clone(),
        },
    }
}

/// How a DELETE ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// ACS answered 2xx: this request deleted it.
    Now,
    /// ACS answered 404: it was gone already (deleted by another delivery, or expired).
    AlreadyGone,
}

/// Why a transport-level attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection could be made.
    Connect,
    /// No response headers within the response timeout.
    ResponseTimeout,
    /// The body stalled for longer than the read timeout.
    ReadTimeout,
    /// Anything else on the wire.
    Other,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "connection failure",
            TransportKind::ResponseTimeout => "no response in time",
            TransportKind::ReadTimeout => "the body stalled",
            TransportKind::Other => "transport error",
        })
    }
}

/// A failed ACS request. Every variant names the host (never the full URL) and, where a
/// response was seen, its status and service ids; `attempts` counts requests made.
#[derive(Debug, thiserror::Error)]
pub enum AcsError {
    /// The SSRF guard refused the URL; nothing was sent.
    #[error("refused to send a request to {host}: {reason}")]
    Refused {
        /// The refused URL's host.
        host: String,
        /// Why.
        reason: Refusal,
    },
    /// The service redirected; redirects would bypass the SSRF guard, so they are not followed.
    #[error("{host} redirected the request to {to_host}; redirects are not followed")]
    Redirected {
        /// The host asked.
        host: String,
        /// Where it pointed.
        to_host: String,
    },
    /// The service answered with an error status.
    #[error("{}", describe_status(self))]
    Status {
        /// The host that answered.
        host: String,
        /// HTTP status.
        status: u16,
        /// `x-ms-request-id`, for a support case.
        request_id: Option<String>,
        /// `MS-CV` (correlation vector), for a support case.
        ms_cv: Option<String>,
        /// The start of the error body, on one line, credentials removed.
        body: String,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
        /// Requests made.
        attempts: u32,
    },
    /// The connection failed or stalled.
    #[error("{kind} talking to {host} after {attempts} attempt(s): {detail}")]
    Transport {
        /// The host.
        host: String,
        /// What failed.
        kind: TransportKind,
        /// The underlying error, without URL.
        detail: String,
        /// Requests made.
        attempts: u32,
    },
    /// The body ended before its declared length.
    #[error("the body from {host} was cut off at byte {received} of {expected} after {attempts} attempt(s): {detail}")]
    Truncated {
        /// The host.
        host: String,
        /// Bytes of the object received in all (absolute offset of the next byte).
        received: u64,
        /// The object's length.
        expected: u64,
        /// The underlying error, if any.
        detail: String,
        /// Requests made.
        attempts: u32,
    },
    /// A success status with no bytes. ACS does this after being idle; a later try works.
    #[error("{host} answered {status} with an empty body after {attempts} attempt(s) (ACS does this when idle; a later retry usually works)")]
    EmptyBody {
        /// The host.
        host: String,
        /// The (success) status.
        status: u16,
        /// `x-ms-request-id`, if sent.
        request_id: Option<String>,
        /// Requests made.
        attempts: u32,
    },
    /// A response whose range or length does not continue what was already received.
    #[error("{host} answered a read from byte {expected_start} with {detail}; the bytes cannot be spliced")]
    BadContentRange {
        /// The host.
        host: String,
        /// The offset asked for.
        expected_start: u64,
        /// What was wrong.
        detail: String,
        /// `x-ms-request-id`, if sent.
        request_id: Option<String>,
        /// Requests made.
        attempts: u32,
    },
    /// The metadata document is larger than [`METADATA_MAX_BYTES`].
    #[error("the metadata document from {host} is larger than {limit} bytes")]
    TooLarge {
        /// The host.
        host: String,
        /// The limit.
        limit: usize,
    },
    /// No bearer token could be had (managed-identity authentication).
    #[error("no bearer token for ACS: {0}")]
    Token(#[source] IdentityError),
}

fn describe_status(e: &AcsError) -> String {
    let AcsError::Status {
        host,
        status,
        request_id,
        ms_cv,
        body,
        attempts,
        ..
    } = e
    else {
        return String::new();
    };
    let reason = StatusCode::from_u16(*status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let hint = match *status {
        401 => ": the credential was refused; check the access key in ACS_CONNECTION_STRING (or the managed identity's access) and that this machine's clock is right (signatures older than 15 minutes are refused)",
        403 => ": the credential may not read this recording",
        404 => ": the recording is gone (deleted, or past ACS's 24 h retention)",
        300..=399 => ": redirects are not followed",
        _ => "",
    };
    let mut text = format!("{host} answered {status} {reason} after {attempts} attempt(s){hint}");
    if let Some(id) = request_id {
        text.push_str(&format!("; x-ms-request-id {id}"));
    }
    if let Some(cv) = ms_cv {
        text.push_str(&format!("; MS-CV {cv}"));
    }
    if !body.is_empty() {
        text.push_str(&format!("; body: {body}"));
    }
    text
}

impl AcsError {
    /// What the caller should do with the chunk.
    ///
    /// - `Retry`: 408/429/5xx, connection failures, stalls, cut and empty bodies, once this
    ///   client's own retries are spent: all pass with time, and ACS keeps recordings 24 h.
    /// - `Drop`: 400/401/403/404, redirects, refused URLs, a `Content-Range` that does not
    ///   continue the bytes already received, oversized metadata. None of these changes by
    ///   asking again.
    ///
    /// 404 is a judgement call. The transient failures reported for ACS downloads are an empty
    /// 200 after the resource was idle (azure-sdk-for-python#33415) and 503s
    /// (azure-sdk-for-net#34148), and both are retried. No report shows a 404 for a recording
    /// that was merely not ready: the event is sent once the file is written. A 404 therefore
    /// means deleted (typically by an earlier delivery of the same event that archived and
    /// deleted it; the caller checks the archive first) or expired past the 24 h retention,
    /// and redelivering for a day would only repeat it. It is reported loudly with its request
    /// id instead.
    pub fn disposition(&self) -> Disposition {
        if self.is_transient() {
            Disposition::Retry
        } else {
            Disposition::Drop
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            AcsError::Status { status, .. } => is_retryable_status(*status),
            AcsError::Transport { .. }
            | AcsError::Truncated { .. }
            | AcsError::EmptyBody { .. } => true,
            AcsError::Token(e) => e.disposition() == Disposition::Retry,
            AcsError::Refused { .. }
            | AcsError::Redirected { .. }
            | AcsError::BadContentRange { .. }
            | AcsError::TooLarge { .. } => false,
        }
    }

    /// The HTTP status, when the service answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            AcsError::Status { status, .. } | AcsError::EmptyBody { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The service's `x-ms-request-id`, when one was sent.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            AcsError::Status { request_id, .. }
            | AcsError::EmptyBody { request_id, .. }
            | AcsError::BadContentRange { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// Requests made before giving up (0 when none was sent).
    pub fn attempts(&self) -> u32 {
        match self {
            AcsError::Status { attempts, .. }
            | AcsError::Transport { attempts, .. }
            | AcsError::Truncated { attempts, .. }
            | AcsError::EmptyBody { attempts, .. }
            | AcsError::BadContentRange { attempts, .. } => *attempts,
            AcsError::Redirected { .. } => 1,
            AcsError::Refused { .. } | AcsError::TooLarge { .. } | AcsError::Token(_) => 0,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            AcsError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn with_attempts(mut self, n: u32) -> Self {
        match &mut self {
            AcsError::Status { attempts, .. }
            | AcsError::Transport { attempts, .. }
            | AcsError::Truncated { attempts, .. }
            | AcsError::EmptyBody { attempts, .. }
            | AcsError::BadContentRange { attempts, .. } => *attempts = n,
            _ => {}
        }
        self
    }
}

/// Timeouts and retry bounds of an [`AcsClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcsOptions {
    /// Attempts, delays and deadline for one request that makes no progress. A download that
    /// received bytes before it was cut starts a fresh budget for the next stretch, so a long
    /// chunk is not failed by cuts spread over its whole length.
    pub retry: RetryPolicy,
    /// Longest wait for response headers.
    pub response_timeout: Duration,
    /// Longest silence while reading a body before the connection counts as stalled.
    pub read_timeout: Duration,
    /// Most resumes after progress within one download, so a server that cuts every response
    /// after a few bytes cannot keep us busy forever.
    pub max_resumes: u32,
}

impl Default for AcsOptions {
    fn default() -> Self {
        AcsOptions {
            retry: RetryPolicy::default(),
            response_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            max_resumes: 32,
        }
    }
}

/// A `reqwest` client suited to [`AcsClient`]: no redirects (a redirect would take a signed
/// request past the SSRF guard) and a connect timeout.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
}

/// Talks to ACS recording storage for one ACS resource.
#[derive(Clone)]
pub struct AcsClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcsClient")
            .field("endpoint", &self.inner.urls.endpoint().as_str())
            .field("extra_hosts", &self.inner.urls.extra_hosts())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub(crate) struct Inner {
    http: reqwest::Client,
    urls: UrlPolicy,
    credential: Credential,
    options: AcsOptions,
    jitter: Arc<dyn Jitter>,
    clock: Arc<dyn Clock>,
}

#[derive(Clone)]
enum Credential {
    Key(Secret<Vec<u8>>),
    Token(Arc<dyn TokenSource>),
    /// Managed identity was asked for, but the platform settings are missing.
    Unavailable(String),
}

impl AcsClient {
    /// A client for the resource in `settings`. `extra_hosts` is `ACS_EXTRA_ALLOWED_HOSTS`.
    ///
    /// With managed identity, tokens come from `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` as
    /// `platform` reads them (the process environment in production, the `--settings` file
    /// for the CLI); when those are missing every request fails with a permanent
    /// [`AcsError::Token`] naming them ([`AcsClient::with_token_source`] replaces the source).
    /// Pass a client from [`http_client`], or any client that does not follow redirects.
    pub fn new(
        http: reqwest::Client,
        settings: AcsSettings,
        extra_hosts: Vec<AllowedHost>,
        platform: &impl Lookup,
    ) -> Self {
        let credential = match settings.auth {
            AcsAuth::AccessKey(key) => Credential::Key(key),
            AcsAuth::ManagedIdentity { client_id } => {
                match ManagedIdentityTokens::from_lookup(
                    platform,
                    http.clone(),
                    ACS_RESOURCE,
                    client_id,
                ) {
                    Ok(tokens) => Credential::Token(Arc::new(tokens)),
                    Err(e) => Credential::Unavailable(e.to_string()),
                }
            }
        };
        AcsClient {
            inner: Arc::new(Inner {
                http,
                urls: UrlPolicy::new(settings.endpoint, extra_hosts),
                credential,
                options: AcsOptions::default(),
                jitter: Arc::new(RandomJitter),
                clock: Arc::new(SystemClock),
            }),
        }
    }

    /// Uses these timeouts and retry bounds.
    pub fn with_options(mut self, options: AcsOptions) -> Self {
        Arc::make_mut(&mut self.inner).options = options;
        self
    }

    /// Uses this retry policy (shorthand for the `retry` field of [`AcsOptions`]).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        Arc::make_mut(&mut self.inner).options.retry = policy;
        self
    }

    /// Uses this RNG for backoff jitter.
    pub fn with_jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        Arc::make_mut(&mut self.inner).jitter = jitter;
        self
    }

    /// Dates signatures with this clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        Arc::make_mut(&mut self.inner).clock = clock;
        self
    }

    /// Authenticates with bearer tokens from `tokens` instead of the configured credential.
    pub fn with_token_source(mut self, tokens: Arc<dyn TokenSource>) -> Self {
        Arc::make_mut(&mut self.inner).credential = Credential::Token(tokens);
        self
    }

    /// The ACS resource endpoint.
    pub fn endpoint(&self) -> &Url {
        self.inner.urls.endpoint()
    }

    /// Where this client sends requests: the checks every URL passes first.
    pub fn urls(&self) -> &UrlPolicy {
        &self.inner.urls
    }

    /// Streams the object at `url` from byte `offset` (0 = whole). Returns once the first
    /// response is in (after retrying transient failures); the stream resumes by itself after
    /// cuts and stalls with `Range: bytes=<next>-`, and ends with an error item when it cannot.
    /// In-flight data is bounded by a few network reads, whatever the object's size.
    pub async fn download(&self, url: &Url, offset: u64) -> Result<Download, AcsError> {
        self.download_range(url, ByteRange::from_offset(offset))
            .await
    }

    /// Streams `range` of the object at `url`, like [`AcsClient::download`]: a cut resumes
    /// within the range (`Range: bytes=<next>-<last>`), and the stream ends at the range's end.
    pub async fn download_range(&self, url: &Url, range: ByteRange) -> Result<Download, AcsError> {
        self.inner.check(url, Access::Get)?;
        download::start(self.inner.clone(), url.clone(), range).await
    }

    /// Fetches a small document (the chunk's metadata JSON), at most [`METADATA_MAX_BYTES`].
    pub async fn fetch_metadata(&self, url: &Url) -> Result<Bytes, AcsError> {
        let host = &self.inner.check(url, Access::Get)?;
        let inner = &*self.inner;
        inner
            .with_retries(move || async move {
                let response = inner.send(Method::GET, url, None).await?;
                inner.read_small_body(host, response).await
            })
            .await
    }

    /// Deletes the recording at a GA `deleteLocation`. A 404 is [`Deleted::AlreadyGone`]: an
    /// earlier or concurrent delivery of the same event may have deleted it already.
    pub async fn delete(&self, url: &Url) -> Result<Deleted, AcsError> {
        self.inner.check(url, Access::Delete)?;
        let inner = &*self.inner;
        inner
            .with_retries(move || async move {
                match inner.send(Method::DELETE, url, None).await {
                    Ok(_) => Ok(Deleted::Now),
                    Err(AcsError::Status { status: 404, .. }) => Ok(Deleted::AlreadyGone),
                    Err(e) => Err(e),
                }
            })
            .await
    }
}

impl Inner {
    /// The SSRF guard; the URL's host for error messages when it passes.
    fn check(&self, url: &Url, access: Access) -> Result<String, AcsError> {
        let host = sign::authority(url);
        self.urls
            .check(url, access)
            .map_err(|reason| AcsError::Refused {
                host: host.clone(),
                reason,
            })?;
        Ok(host)
    }

    /// Reads a whole body of at most [`METADATA_MAX_BYTES`]; empty counts as a failure.
    async fn read_small_body(
        &self,
        host: &str,
        response: reqwest::Response,
    ) -> Result<Bytes, AcsError> {
        let too_large = || AcsError::TooLarge {
            host: host.to_string(),
            limit: METADATA_MAX_BYTES,
        };
        let status = response.status().as_u16();
        let request_id = header_text(response.headers(), "x-ms-request-id");
        let expected = response.content_length();
        if expected.is_some_and(|n| n > METADATA_MAX_BYTES as u64) {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        let mut stream = response.bytes_stream();
        loop {
            let chunk = match tokio::time::timeout(self.options.read_timeout, stream.next()).await {
                Err(_) => {
                    let detail = "no bytes within the read timeout".to_string();
                    return Err(self.transport(host, TransportKind::ReadTimeout, detail));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(AcsError::Truncated {
                        host: host.to_string(),
                        received: body.len() as u64,
                        expected: expected.unwrap_or_default(),
                        detail: error_chain(&e.without_url()),
                        attempts: 0,
                    })
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            if body.len() + chunk.len() > METADATA_MAX_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if body.is_empty() {
            return Err(AcsError::EmptyBody {
                host: host.to_string(),
                status,
                request_id,
                attempts: 0,
            });
        }
        Ok(body.freeze())
    }

    fn transport(&self, host: &str, kind: TransportKind, detail: String) -> AcsError {
        AcsError::Transport {
            host: host.to_string(),
            kind,
            detail,
            attempts: 0,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retry budget is spent. The
    /// returned error carries the number of attempts made.
    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, AcsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AcsError>>,
    {
        let mut backoff = Backoff::new(self.options.retry, &*self.jitter);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() => {
                    if !backoff.wait(e.retry_after()).await {
                        return Err(e.with_attempts(attempts));
                    }
                    tracing::debug!(error = %e, attempt = attempts, "ACS request failed; retrying");
                }
                Err(e) => return Err(e.with_attempts(attempts)),
            }
        }
    }

    /// Sends one freshly signed request. Returns the response for 2xx (and for 416 when a
    /// range was asked, so the caller can read its `Content-Range`); anything else becomes an
    /// [`AcsError`] with `attempts` left at 0 for the caller to fill in.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &Url,
        range: Option<ByteRange>,
    ) -> Result<reqwest::Response, AcsError> {
        let host = sign::authority(url);
        let target = sign::signing_target(url, self.urls.endpoint());
        let mut request = self.http.request(method.clone(), url.clone());
        match &self.credential {
            Credential::Key(key) => {
                let signed = sign::sign_request(
                    method.as_str(),
                    &target,
                    key.expose(),
                    self.clock.now(),
                    b"",
                );
                request = request
                    .header("x-ms-date", &signed.date)
                    .header("Date", &signed.date)
                    .header("x-ms-content-sha256", &signed.content_sha256)
                    .header(
                        reqwest::header::AUTHORIZATION,
                        sensitive(signed.authorization.expose())?,
                    );
            }
            Credential::Token(tokens) => {
                let token = tokens.token().await.map_err(AcsError::Token)?;
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    sensitive(&format!("Bearer {}", token.expose()))?,
                );
            }
            Credential::Unavailable(reason) => {
                return Err(AcsError::Token(IdentityError::new(
                    ACS_RESOURCE,
                    reason.clone(),
                    Disposition::Drop,
                )))
            }
        }
        if let Some(x_ms_host) = &target.x_ms_host {
            request = request.header("x-ms-host", x_ms_host);
        }
        if let Some(range) = range.and_then(|r| r.header()) {
            request = request.header(reqwest::header::RANGE, range);
        }
        let response =
            match tokio::time::timeout(self.options.response_timeout, request.send()).await {
                Err(_) => {
                    return Err(self.transport(
                        &host,
                        TransportKind::ResponseTimeout,
                        format!(
                            "no response headers within {:?}",
                            self.options.response_timeout
                        ),
                    ))
                }
                Ok(Err(e)) => {
                    let kind = if e.is_connect() {
                        TransportKind::Connect
                    } else if e.is_timeout() {
                        TransportKind::ResponseTimeout
                    } else {
                        TransportKind::Other
                    };
                    return Err(self.transport(&host, kind, error_chain(&e.without_url())));
                }
                Ok(Ok(r)) => r,
            };
        if sign::authority(response.url()) != host {
            return Err(AcsError::Redirected {
                host,
                to_host: sign::authority(response.url()),
            });
        }
        let status = response.status();
        if status.is_success() || (status == StatusCode::RANGE_NOT_SATISFIABLE && range.is_some()) {
            return Ok(response);
        }
        Err(self.status_error(host, response).await)
    }

    async fn status_error(&self, host: String, response: reqwest::Response) -> AcsError {
        let status = response.status().as_u16();
        let headers = response.headers();
        let request_id = header_text(headers, "x-ms-request-id");
        let ms_cv = header_text(headers, "ms-cv");
        let retry_after = header_text(headers, "retry-after")
            .and_then(|v| parse_retry_after(&v, self.clock.now()));
        // Quote the start of the body; never wait long for it, never read much of it.
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        let read = async {
            while let Some(Ok(chunk)) = stream.next().await {
                body.extend_from_slice(
                    &chunk[..chunk.len().min(ERROR_BODY_READ_BYTES - body.len())],
                );
                if body.len() >= ERROR_BODY_READ_BYTES {
                    break;
                }
            }
        };
        let _ =
            tokio::time::timeout(self.options.read_timeout.min(Duration::from_secs(5)), read).await;
        let key_b64;
        let mut secrets: Vec<&str> = Vec::new();
        if let Credential::Key(key) = &self.credential {
            use base64::Engine as _;
            key_b64 = base64::engine::general_purpose::STANDARD.encode(key.expose());
            secrets.push(&key_b64);
        }
        AcsError::Status {
            host,
            status,
            request_id,
            ms_cv,
            body: redact::snippet(&body, &secrets),
            retry_after,
            attempts: 0,
        }
    }
}

/// A header value marked sensitive, so `reqwest`/`http` never print it in `Debug` output.
fn sensitive(value: &str) -> Result<HeaderValue, AcsError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        AcsError::Token(IdentityError::new(
            ACS_RESOURCE,
            "the credential holds characters not allowed in a header",
            Disposition::Drop,
        ))
    })?;
    v.set_sensitive(true);
    Ok(v)
}

pub(crate) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().chars().take(200).collect())
        .filter(|v: &String| !v.is_empty())
}

/// An error and its sources on one line (reqwest's top-level message alone says little).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_events_get_urls_on_the_endpoint() {
        let endpoint = Url::parse("https://contoso.communication.azure.com/").unwrap();
        let urls = chunk_urls(
            &endpoint,
            "0-eus-d12-801b3f3fc462fe8a01e6810cbff729b8",
            &ChunkSource::Preview,
        );
        assert_eq!(
            urls.media.as_str(),
            "https://contoso.communication.azure.com/recording/download/0-eus-d12-801b3f3fc462fe8a01e6810cbff729b8?api-version=2021-04-15-preview1"
        );
        assert_eq!(
            urls.metadata.unwrap().as_str(),
            "https://contoso.communication.azure.com/recording/download/0-eus-d12-801b3f3fc462fe8a01e6810cbff729b8/metadata?api-version=2021-04-15-preview1"
        );
        assert_eq!(urls.delete, None);
    }

    #[test]
    fn located_events_keep_their_urls() {
        let endpoint = Url::parse("https://contoso.communication.azure.com/").unwrap();
        let u = |s: &str| {
            Url::parse(&format!(
                "https://storage.asm.skype.com/v1/objects/d/content/{s}"
            ))
            .unwrap()
        };
        let source = ChunkSource::Located {
            content: u("video"),
            metadata: Some(u("acsmetadata")),
            delete: Some(u("deletedata")),
        };
        let urls = chunk_urls(&endpoint, "d", &source);
        assert_eq!(
            urls,
            ChunkUrls {
                media: u("video"),
                metadata: Some(u("acsmetadata")),
                delete: Some(u("deletedata"))
            }
        );
        let source = ChunkSource::Located {
            content: u("audio"),
            metadata: None,
            delete: None,
        };
        assert_eq!(chunk_urls(&endpoint, "d", &source).metadata, None);
    }

    #[test]
    fn dispositions_follow_what_retrying_can_change() {
        let status = |status: u16| AcsError::Status {
            host: "h".into(),
            status,
            request_id: Some("rid".into()),
            ms_cv: None,
            body: String::new(),
            retry_after: None,
            attempts: 1,
        };
        for s in [408, 429, 500, 503] {
            assert_eq!(status(s).disposition(), Disposition::Retry, "{s}");
        }
        for s in [301, 400, 401, 403, 404, 416] {
            assert_eq!(status(s).disposition(), Disposition::Drop, "{s}");
        }
        let cut = AcsError::Truncated {
            host: "h".into(),
            received: 1,
            expected: 2,
            detail: String::new(),
            attempts: 6,
        };
        assert_eq!(cut.disposition(), Disposition::Retry);
        let refused = AcsError::Refused {
            host: "evil.example".into(),
            reason: Refusal::NotAllowed,
        };
        assert_eq!(refused.disposition(), Disposition::Drop);
        assert!(refused.to_string().contains("evil.example"));
        let bad = AcsError::BadContentRange {
            host: "h".into(),
            expected_start: 5,
            detail: "x".into(),
            request_id: None,
            attempts: 2,
        };
        assert_eq!(bad.disposition(), Disposition::Drop);
        let text = status(401).to_string();
        assert!(
            text.contains("401 Unauthorized") && text.contains("clock") && text.contains("rid"),
            "{text}"
        );
    }
    /// Managed identity is configured through the settings `Lookup` handed in, never the
    /// process environment, so `archiver --settings FILE` can carry it.
    #[test]
    fn managed_identity_comes_from_the_lookup_it_is_given() {
        let settings = || AcsSettings {
            endpoint: Url::parse("https://contoso.communication.azure.com/").unwrap(),
            auth: AcsAuth::ManagedIdentity { client_id: None },
        };
        let platform = |name: &str| match name {
            "IDENTITY_ENDPOINT" => Some("http://127.0.0.1:1/msi/token".to_string()),
            "IDENTITY_HEADER" => Some("platform-secret".to_string()),
            _ => None,
        };
        let client = AcsClient::new(reqwest::Client::new(), settings(), Vec::new(), &platform);
        assert!(matches!(client.inner.credential, Credential::Token(_)));

        let nothing = |_: &str| None;
        let client = AcsClient::new(reqwest::Client::new(), settings(), Vec::new(), &nothing);
        let Credential::Unavailable(reason) = &client.inner.credential else {
            panic!("a client without identity settings must not find a token source");
        };
        assert!(reason.contains("IDENTITY_ENDPOINT"), "{reason}");
    }
}
