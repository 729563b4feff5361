//! An ACS recording-storage emulator that checks signatures like the service and injects faults.
//!
//! [`AcsEmulator::start`] binds two listeners on `127.0.0.1:0`:
//! - the **ACS resource** ([`AcsEmulator::acs_endpoint`]), serving the 2021 preview URLs
//!   `/recording/download/{id}?api-version=2021-04-15-preview1` and `.../{id}/metadata`;
//! - the **storage host** ([`AcsEmulator::storage_authority`]), serving the GA URLs
//!   `/v1/objects/{id}/content/{video|audio|acsmetadata|deletedata}`, and `DELETE
//!   /v1/objects/{id}` (the delete form of the Event Grid docs' sample).
//!
//! Every request must be signed for the ACS resource: on the storage host that means
//! `x-ms-host` naming the resource, exactly the detail clients get wrong. A bad signature,
//! a date more than 15 minutes off, a wrong content hash or host gets a 401, as from the
//! service. Recordings are generated on the fly ([`Content`]), so a 1 GiB+ chunk costs no
//! memory; `Range` gets 206. Faults ([`Fault`]) are queued per recording and consumed one per
//! authenticated request (or per media download, [`AcsEmulator::push_media_faults`]). Every
//! request is logged with the time it was answered ([`AcsEmulator::requests`]).
//!
//! The verification in `auth.rs` is independent of the archiver's signer on purpose.

mod auth;
mod content;
mod http;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use auth::MAX_SKEW;
pub use content::Content;

use http::{Connection, Request};

/// `api-version` of the preview download URLs.
pub const PREVIEW_API_VERSION: &str = "2021-04-15-preview1";
/// The key used when the config does not name one. Not a secret: it only opens the emulator.
pub const DEFAULT_ACCESS_KEY: &[u8] = b"acs-emulator-access-key-not-secret";
/// A 400 page like the HTML ones reported in azure-sdk-for-js#33764.
pub const DEFAULT_HTML_400: &str = "<!DOCTYPE html>\n<html><head><title>Bad Request</title></head>\n<body><h1>Bad Request</h1><p>The request could not be processed.</p></body></html>\n";
/// Body bytes written per socket write.
const WRITE_CHUNK: usize = 256 * 1024;

/// How the emulator authenticates callers.
#[derive(Debug, Clone)]
pub struct AcsEmulatorConfig {
    /// The resource's access key (raw bytes; clients get it base64-encoded).
    pub access_key: Vec<u8>,
    /// A bearer token accepted in place of an HMAC signature (managed-identity callers).
    pub bearer_token: Option<String>,
    /// Largest accepted difference between a request's date and the emulator's clock.
    pub max_skew: Duration,
}

impl Default for AcsEmulatorConfig {
    fn default() -> Self {
        AcsEmulatorConfig {
            access_key: DEFAULT_ACCESS_KEY.to_vec(),
            bearer_token: None,
            max_skew: MAX_SKEW,
        }
    }
}

/// A recording's media format, which decides its content URL and `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingFormat {
    /// Audio and video: `content/video`, `video/mp4`.
    Mp4,
    /// Audio: `content/audio`, `audio/mpeg`.
    Mp3,
    /// Audio: `content/audio`, `audio/wav`.
    Wav,
}

impl RecordingFormat {
    /// The last path segment of the GA content URL.
    pub fn media_kind(self) -> &'static str {
        match self {
            RecordingFormat::Mp4 => "video",
            RecordingFormat::Mp3 | RecordingFormat::Wav => "audio",
        }
    }

    /// The media's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            RecordingFormat::Mp4 => "video/mp4",
            RecordingFormat::Mp3 => "audio/mpeg",
            RecordingFormat::Wav => "audio/wav",
        }
    }
}

impl std::str::FromStr for RecordingFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "mp4" => Ok(RecordingFormat::Mp4),
            "mp3" => Ok(RecordingFormat::Mp3),
            "wav" => Ok(RecordingFormat::Wav),
            other => Err(format!("unknown format `{other}` (mp4, mp3, wav)")),
        }
    }
}

/// One injected misbehaviour, used up by one authenticated request for its recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status, extra headers and body instead of the content.
    Status {
        /// HTTP status.
        status: u16,
        /// Extra headers, e.g. `Retry-After`.
        headers: Vec<(String, String)>,
        /// The body.
        body: String,
        /// Its `Content-Type`.
        content_type: String,
    },
    /// Declare the full `Content-Length`, send this many body bytes, then close the connection.
    CutAfter(u64),
    /// 200 with an empty body, as ACS does after being idle.
    EmptyOk,
    /// Send the body `chunk` bytes at a time, `interval` apart.
    Trickle {
        /// Bytes per write.
        chunk: usize,
        /// Pause between writes.
        interval: Duration,
    },
    /// Ignore `Range` and send the whole object with 200.
    IgnoreRange,
    /// Answer 206 for bytes from this offset, whatever was asked.
    RangeFrom(u64),
}

impl Fault {
    /// `503 Service Unavailable` with `Retry-After: <seconds>`.
    pub fn unavailable(retry_after_secs: u64) -> Fault {
        Fault::Status {
            status: 503,
            headers: vec![("Retry-After".into(), retry_after_secs.to_string())],
            body: r#"{"error":{"code":"ServiceUnavailable","message":"The service is temporarily unavailable."}}"#.into(),
            content_type: "application/json".into(),
        }
    }

    /// `429 Too Many Requests` with `Retry-After: <seconds>`.
    pub fn throttled(retry_after_secs: u64) -> Fault {
        Fault::Status {
            status: 429,
            headers: vec![("Retry-After".into(), retry_after_secs.to_string())],
            body: r#"{"error":{"code":"TooManyRequests","message":"Too many requests."}}"#.into(),
            content_type: "application/json".into(),
        }
    }

    /// A JSON error with this status.
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            headers: Vec::new(),
            body: format!(
                r#"{{"error":{{"code":"Status{status}","message":"Injected by the emulator."}}}}"#
            ),
            content_type: "application/json".into(),
        }
    }

    /// `400 Bad Request` with an HTML page.
    pub fn html_bad_request(page: &str) -> Fault {
        Fault::Status {
            status: 400,
            headers: Vec::new(),
            body: page.to_string(),
            content_type: "text/html; charset=utf-8".into(),
        }
    }
}

/// Which of the emulator's two servers received a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The ACS resource endpoint (preview URLs).
    Acs,
    /// The recording storage host (GA URLs).
    Storage,
}

/// The authentication check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signature (or token), date, hash and host verified.
    Accepted,
    /// Refused with 401, for this reason.
    Rejected(String),
}

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// Which server.
    pub server: Server,
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Headers (lower-case names); the `Authorization` value is cut to its scheme.
    pub headers: Vec<(String, String)>,
    /// The recording it concerned, when the path names one.
    pub document_id: Option<String>,
    /// The authentication check.
    pub verdict: Verdict,
    /// The status answered.
    pub status: u16,
    /// When the answer's status was decided (for ordering against other services' logs).
    pub at: Instant,
    /// The injected fault this request used up, if any.
    pub fault: Option<Fault>,
}

impl LoggedRequest {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Range` header.
    pub fn range(&self) -> Option<&str> {
        self.header("range")
    }
}

struct Recording {
    content: Content,
    format: RecordingFormat,
    metadata: String,
    deleted: bool,
}

struct State {
    config: AcsEmulatorConfig,
    acs_authority: String,
    storage_authority: String,
    recordings: Mutex<HashMap<String, Recording>>,
    faults: Mutex<HashMap<String, VecDeque<Fault>>>,
    media_faults: Mutex<HashMap<String, VecDeque<Fault>>>,
    log: Mutex<Vec<LoggedRequest>>,
    counter: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running emulator. Dropping it stops the servers too.
pub struct AcsEmulator {
    state: Arc<State>,
    acs_addr: SocketAddr,
    storage_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl AcsEmulator {
    /// Binds both servers on `127.0.0.1:0`; they accept connections as soon as this returns.
    pub async fn start(config: AcsEmulatorConfig) -> std::io::Result<AcsEmulator> {
        let acs = TcpListener::bind("127.0.0.1:0").await?;
        let storage = TcpListener::bind("127.0.0.1:0").await?;
        let (acs_addr, storage_addr) = (acs.local_addr()?, storage.local_addr()?);
        let state = Arc::new(State {
            config,
            acs_authority: acs_addr.to_string(),
            storage_authority: storage_addr.to_string(),
            recordings: Mutex::default(),
            faults: Mutex::default(),
            media_faults: Mutex::default(),
            log: Mutex::default(),
            counter: AtomicU64::new(0),
        });
        let (shutdown, stop) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(accept_loop(acs, Server::Acs, state.clone(), stop.clone())),
            tokio::spawn(accept_loop(storage, Server::Storage, state.clone(), stop)),
        ];
        Ok(AcsEmulator {
            state,
            acs_addr,
            storage_addr,
            shutdown,
            tasks,
        })
    }

    /// The ACS resource endpoint, `http://127.0.0.1:<port>/`.
    pub fn acs_endpoint(&self) -> String {
        format!("http://{}/", self.acs_addr)
    }

    /// `127.0.0.1:<port>` of the ACS resource: the host every request must be signed for.
    pub fn acs_authority(&self) -> String {
        self.acs_addr.to_string()
    }

    /// `127.0.0.1:<port>` of the storage host.
    pub fn storage_authority(&self) -> String {
        self.storage_addr.to_string()
    }

    /// The access key, base64-encoded as in a connection string.
    pub fn access_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.state.config.access_key)
    }

    /// `endpoint=...;accesskey=...` for this emulator.
    pub fn connection_string(&self) -> String {
        format!(
            "endpoint={};accesskey={}",
            self.acs_endpoint(),
            self.access_key_base64()
        )
    }

    /// A value for `ACS_EXTRA_ALLOWED_HOSTS` that admits both servers.
    pub fn extra_allowed_hosts(&self) -> String {
        format!("{},{}", self.acs_addr, self.storage_addr)
    }

    /// Adds (or replaces) a recording of `size` bytes generated from `seed`.
    pub fn add_recording(&self, document_id: &str, size: u64, seed: u64, format: RecordingFormat) {
        let metadata = default_metadata(document_id, format);
        lock(&self.state.recordings).insert(
            document_id.to_string(),
            Recording {
                content: Content::new(size, seed),
                format,
                metadata,
                deleted: false,
            },
        );
    }

    /// Replaces a recording's metadata document.
    pub fn set_metadata(&self, document_id: &str, json: &str) {
        if let Some(r) = lock(&self.state.recordings).get_mut(document_id) {
            r.metadata = json.to_string();
        }
    }

    /// A recording's metadata document.
    pub fn metadata(&self, document_id: &str) -> Option<String> {
        lock(&self.state.recordings)
            .get(document_id)
            .map(|r| r.metadata.clone())
    }

    /// A recording's content generator, to hash or compare against.
    pub fn content(&self, document_id: &str) -> Option<Content> {
        lock(&self.state.recordings)
            .get(document_id)
            .map(|r| r.content.clone())
    }

    /// SHA-256 of a recording's content (computed on the fly: about a second per GiB in release).
    pub fn expected_sha256(&self, document_id: &str) -> Option<[u8; 32]> {
        self.content(document_id).map(|c| c.sha256())
    }

    /// The preview media URL on the ACS resource.
    pub fn preview_url(&self, document_id: &str) -> String {
        format!(
            "http://{}/recording/download/{document_id}?api-version={PREVIEW_API_VERSION}",
            self.acs_addr
        )
    }

    /// The preview metadata URL on the ACS resource.
    pub fn preview_metadata_url(&self, document_id: &str) -> String {
        format!(
            "http://{}/recording/download/{document_id}/metadata?api-version={PREVIEW_API_VERSION}",
            self.acs_addr
        )
    }

    /// The GA `contentLocation` on the storage host (`video` or `audio` by format).
    pub fn content_url(&self, document_id: &str) -> String {
        let kind = lock(&self.state.recordings)
            .get(document_id)
            .map_or("video", |r| r.format.media_kind());
        self.object_url(document_id, kind)
    }

    /// The GA `metadataLocation`.
    pub fn metadata_url(&self, document_id: &str) -> String {
        self.object_url(document_id, "acsmetadata")
    }

    /// The GA `deleteLocation`.
    pub fn delete_url(&self, document_id: &str) -> String {
        self.object_url(document_id, "deletedata")
    }

    fn object_url(&self, document_id: &str, kind: &str) -> String {
        format!(
            "http://{}/v1/objects/{document_id}/content/{kind}",
            self.storage_addr
        )
    }

    /// A GA `RecordingFileStatusUpdated` event (Event Grid schema) whose chunks are the given
    /// recordings of this emulator, in order, as ACS would publish it for a recording that
    /// started at `started`.
    pub fn ga_event(
        &self,
        event_id: &str,
        call_id: &str,
        documents: &[&str],
        format: RecordingFormat,
        started: SystemTime,
    ) -> serde_json::Value {
        let chunks: Vec<ChunkLocation> = documents
            .iter()
            .map(|doc| ChunkLocation {
                document_id: doc.to_string(),
                content: self.content_url(doc),
                metadata: self.metadata_url(doc),
                delete: self.delete_url(doc),
            })
            .collect();
        ga_event(event_id, call_id, &chunks, format, started)
    }

    /// Queues faults for a recording; each authenticated request for it uses up the next one.
    pub fn push_faults(&self, document_id: &str, faults: Vec<Fault>) {
        lock(&self.state.faults)
            .entry(document_id.to_string())
            .or_default()
            .extend(faults);
    }

    /// Queues faults that only media downloads of a recording use up, ahead of those from
    /// [`AcsEmulator::push_faults`]: a cut or a trickle lands on the media whatever the client
    /// asks for first (metadata, delete).
    pub fn push_media_faults(&self, document_id: &str, faults: Vec<Fault>) {
        lock(&self.state.media_faults)
            .entry(document_id.to_string())
            .or_default()
            .extend(faults);
    }

    /// Faults not yet used up, media-only ones included.
    pub fn pending_faults(&self, document_id: &str) -> usize {
        [&self.state.faults, &self.state.media_faults]
            .iter()
            .map(|faults| lock(faults).get(document_id).map_or(0, VecDeque::len))
            .sum()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.state.log).clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.state.log).clear();
    }

    /// Whether the recording was deleted through its `deleteLocation`.
    pub fn is_deleted(&self, document_id: &str) -> bool {
        lock(&self.state.recordings)
            .get(document_id)
            .is_some_and(|r| r.deleted)
    }

    /// Stops both servers and drops their connections.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for AcsEmulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn default_metadata(document_id: &str, format: RecordingFormat) -> String {
    let (content_type, channel_type) = match format {
        RecordingFormat::Mp4 => ("mixed", "audioVideo"),
        _ => ("mixed", "audio"),
    };
    serde_json::json!({
        "resourceId": "00000000-0000-0000-0000-000000000000",
        "callId": format!("call-{document_id}"),
        "chunkDocumentId": document_id,
        "chunkIndex": 0,
        "chunkStartTime": "2021-07-27T15:20:23.6089755Z",
        "chunkDuration": 6620,
        "pauseResumeIntervals": [],
        "recordingInfo": {
            "contentType": content_type,
            "channelType": channel_type,
            "format": format!("{format:?}").to_ascii_lowercase(),
            "audioConfiguration": {"sampleRate": 16000, "bitRate": 128000, "channels": 1},
            "videoConfiguration": {"longerSideLength": 1920, "shorterSideLength": 1080, "framerate": 8, "bitRate": 1000000}
        },
        "participants": [{"participantId": "8:acs:emulator-participant", "channel": 0}]
    })
    .to_string()
}

async fn accept_loop(
    listener: TcpListener,
    server: Server,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_connection(state.clone(), server, stream));
                }
            }
            Some(_) = connections.join_next() => {}
            _ = stop.changed() => break,
        }
    }
    connections.abort_all();
}

async fn serve_connection(state: Arc<State>, server: Server, stream: TcpStream) {
    let mut conn = Connection::new(stream);
    let mut buf = vec![0u8; WRITE_CHUNK];
    loop {
        let request = match conn.read_request().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let body = format!("{{\"error\":{{\"code\":\"BadRequest\",\"message\":\"{e}\"}}}}");
                let _ = respond(
                    &mut conn,
                    400,
                    "application/json",
                    body.as_bytes(),
                    &[],
                    true,
                )
                .await;
                return;
            }
        };
        match handle(&state, server, &request, &mut conn, &mut buf).await {
            Ok(Keep::Open) if !request.wants_close() => {}
            _ => return,
        }
    }
}

/// Whether the connection can carry another request.
enum Keep {
    Open,
    Close,
}

/// What a path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Media(String),
    Metadata(String),
    Delete(String),
    NotFound,
    MethodNotAllowed,
}

fn route(server: Server, request: &Request) -> Route {
    let segments: Vec<&str> = request
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let get = request.method == "GET";
    match (server, segments.as_slice()) {
        (Server::Acs, ["recording", "download", id]) if get => Route::Media(id.to_string()),
        (Server::Acs, ["recording", "download", id, "metadata"]) if get => {
            Route::Metadata(id.to_string())
        }
        (Server::Storage, ["v1", "objects", id, "content", "acsmetadata"]) if get => {
            Route::Metadata(id.to_string())
        }
        // Both published deleteLocation forms: `.../{id}/content/deletedata` (REST spec
        // example) and `.../{id}` (Event Grid docs sample).
        (
            Server::Storage,
            ["v1", "objects", id, "content", "deletedata"] | ["v1", "objects", id],
        ) if request.method == "DELETE" => Route::Delete(id.to_string()),
        (Server::Storage, ["v1", "objects", id, "content", kind])
            if get && matches!(*kind, "video" | "audio") =>
        {
            Route::Media(format!("{id}/{kind}"))
        }
        (Server::Acs, ["recording", "download", ..]) | (Server::Storage, ["v1", "objects", ..]) => {
            Route::MethodNotAllowed
        }
        _ => Route::NotFound,
    }
}

fn json_error(code: &str, message: &str) -> Vec<u8> {
    serde_json::json!({"error": {"code": code, "message": message}})
        .to_string()
        .into_bytes()
}

async fn handle(
    state: &State,
    server: Server,
    request: &Request,
    conn: &mut Connection,
    buf: &mut [u8],
) -> std::io::Result<Keep> {
    let n = state.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let ids = [
        (
            "x-ms-request-id".to_string(),
            format!("00000000-0000-4000-8000-{n:012x}"),
        ),
        ("MS-CV".to_string(), format!("EmuCV{n}.0")),
    ];
    let route = route(server, request);
    let (document_id, media_kind) = match &route {
        Route::Media(key) => match key.split_once('/') {
            Some((id, kind)) => (Some(id.to_string()), Some(kind.to_string())),
            None => (Some(key.clone()), None),
        },
        Route::Metadata(id) | Route::Delete(id) => (Some(id.clone()), None),
        _ => (None, None),
    };
    let this_host = match server {
        Server::Acs => &state.acs_authority,
        Server::Storage => &state.storage_authority,
    };
    let verdict = auth::verify(
        &auth::Presented {
            method: &request.method,
            target: &request.target,
            headers: &request.headers,
            body: &request.body,
        },
        &auth::Authority {
            acs_host: &state.acs_authority,
            this_host,
            key: &state.config.access_key,
            bearer: state.config.bearer_token.as_deref(),
            max_skew: state.config.max_skew,
            now: SystemTime::now(),
        },
    );
    let mut entry = LoggedRequest {
        server,
        method: request.method.clone(),
        target: request.target.clone(),
        headers: request
            .headers
            .iter()
            .map(|(k, v)| {
                let v = if k == "authorization" {
                    format!("{} ***", v.split(' ').next().unwrap_or_default())
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect(),
        document_id: document_id.clone(),
        verdict: match &verdict {
            Ok(()) => Verdict::Accepted,
            Err(reason) => Verdict::Rejected(reason.clone()),
        },
        status: 0,
        at: Instant::now(),
        fault: None,
    };
    // Set once a fault is drawn, so every answer after that point logs it.
    let used_fault: Mutex<Option<Fault>> = Mutex::new(None);
    let mut log = |status: u16| {
        entry.status = status;
        entry.at = Instant::now();
        entry.fault.clone_from(&lock(&used_fault));
        lock(&state.log).push(entry.clone());
    };

    if let Err(reason) = verdict {
        log(401);
        let body = json_error("Unauthorized", &format!("Denied: {reason}"));
        return respond(conn, 401, "application/json", &body, &ids, false).await;
    }
    if document_id.is_some() && server == Server::Acs && !query_has_api_version(request.query()) {
        log(400);
        let body = json_error(
            "BadRequest",
            &format!("api-version={PREVIEW_API_VERSION} is required"),
        );
        return respond(conn, 400, "application/json", &body, &ids, false).await;
    }

    // Snapshot what the route needs, so no lock is held while writing.
    let found = document_id.as_deref().and_then(|id| {
        lock(&state.recordings)
            .get(id)
            .filter(|r| !r.deleted)
            .map(|r| (r.content.clone(), r.format, r.metadata.clone()))
    });
    let (content, format, metadata) = match (&route, found) {
        (Route::NotFound, _) => {
            log(404);
            return respond(
                conn,
                404,
                "application/json",
                &json_error("NotFound", "No such resource."),
                &ids,
                false,
            )
            .await;
        }
        (Route::MethodNotAllowed, _) => {
            log(405);
            return respond(
                conn,
                405,
                "application/json",
                &json_error("MethodNotAllowed", "Method not allowed."),
                &ids,
                false,
            )
            .await;
        }
        (_, None) => {
            log(404);
            return respond(
                conn,
                404,
                "application/json",
                &json_error("NotFound", "Recording not found."),
                &ids,
                false,
            )
            .await;
        }
        (_, Some(found)) => found,
    };
    if media_kind
        .as_deref()
        .is_some_and(|k| k != format.media_kind())
    {
        log(404);
        return respond(
            conn,
            404,
            "application/json",
            &json_error("NotFound", "No such content for this recording."),
            &ids,
            false,
        )
        .await;
    }

    let next_fault = |faults: &Mutex<HashMap<String, VecDeque<Fault>>>| {
        document_id
            .as_deref()
            .and_then(|id| lock(faults).get_mut(id).and_then(VecDeque::pop_front))
    };
    let fault = match route {
        Route::Media(_) => next_fault(&state.media_faults),
        _ => None,
    }
    .or_else(|| next_fault(&state.faults));
    *lock(&used_fault) = fault.clone();
    match fault {
        Some(Fault::Status {
            status,
            headers,
            body,
            content_type,
        }) => {
            log(status);
            let mut all: Vec<(String, String)> = ids.to_vec();
            all.extend(headers);
            return respond(conn, status, &content_type, body.as_bytes(), &all, false).await;
        }
        Some(Fault::EmptyOk) => {
            log(200);
            return respond(conn, 200, format.content_type(), b"", &ids, false).await;
        }
        _ => {}
    }

    match route {
        Route::Delete(id) => {
            if let Some(r) = lock(&state.recordings).get_mut(&id) {
                r.deleted = true;
            }
            log(200);
            respond(conn, 200, "application/json", b"", &ids, false).await
        }
        Route::Metadata(_) => {
            log(200);
            let body = metadata.into_bytes();
            let mut headers: Vec<(String, String)> = ids.to_vec();
            headers.push(("Content-Type".into(), "application/json".into()));
            headers.push(("Content-Length".into(), body.len().to_string()));
            conn.write_head(200, &headers).await?;
            write_body(
                conn,
                &Source::Static(&body),
                0,
                body.len() as u64,
                fault.as_ref(),
                buf,
            )
            .await
        }
        Route::Media(_) => {
            let size = content.size();
            let asked = request.header("range").and_then(parse_range);
            let (status, start, end) = match (&fault, asked) {
                (Some(Fault::IgnoreRange), _) | (_, None) => (200, 0, size),
                (Some(Fault::RangeFrom(from)), _) => {
                    (206, (*from).min(size.saturating_sub(1)), size)
                }
                (_, Some((first, _))) if first >= size => {
                    log(416);
                    let mut headers: Vec<(String, String)> = ids.to_vec();
                    headers.push(("Content-Range".into(), format!("bytes */{size}")));
                    return respond(
                        conn,
                        416,
                        "application/json",
                        &json_error("RangeNotSatisfiable", "Range not satisfiable."),
                        &headers,
                        false,
                    )
                    .await;
                }
                (_, Some((first, last))) => (206, first, last.map_or(size, |l| (l + 1).min(size))),
            };
            log(status);
            let mut headers: Vec<(String, String)> = ids.to_vec();
            headers.push(("Content-Type".into(), format.content_type().into()));
            headers.push(("Accept-Ranges".into(), "bytes".into()));
            headers.push(("Content-Length".into(), (end - start).to_string()));
            if status == 206 {
                headers.push((
                    "Content-Range".into(),
                    format!("bytes {start}-{}/{size}", end - 1),
                ));
            }
            conn.write_head(status, &headers).await?;
            write_body(
                conn,
                &Source::Content(&content),
                start,
                end,
                fault.as_ref(),
                buf,
            )
            .await
        }
        Route::NotFound | Route::MethodNotAllowed => Ok(Keep::Close),
    }
}

fn query_has_api_version(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|p| p == format!("api-version={PREVIEW_API_VERSION}"))
    })
}

/// `bytes=<first>-[<last>]`; anything else (suffix or multiple ranges) is ignored, as a server
/// may do, and gets the whole object.
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last = match last.trim() {
        "" => None,
        l => Some(l.parse::<u64>().ok().filter(|l| *l >= first)?),
    };
    Some((first, last))
}

enum Source<'a> {
    Static(&'a [u8]),
    Content(&'a Content),
}

/// Writes `[start, end)` of `source`, shaped by a cut or trickle fault.
async fn write_body(
    conn: &mut Connection,
    source: &Source<'_>,
    start: u64,
    end: u64,
    fault: Option<&Fault>,
    buf: &mut [u8],
) -> std::io::Result<Keep> {
    let (limit, piece, pause) = match fault {
        Some(Fault::CutAfter(n)) => (start.saturating_add(*n).min(end), WRITE_CHUNK, None),
        Some(Fault::Trickle { chunk, interval }) => {
            (end, (*chunk).clamp(1, WRITE_CHUNK), Some(*interval))
        }
        _ => (end, WRITE_CHUNK, None),
    };
    let mut pos = start;
    while pos < limit {
        let want = ((limit - pos) as usize).min(piece);
        let n = match source {
            Source::Static(bytes) => {
                let from = pos as usize;
                buf[..want].copy_from_slice(&bytes[from..from + want]);
                want
            }
            Source::Content(content) => content.read_at(pos, &mut buf[..want]),
        };
        if n == 0 {
            break;
        }
        conn.write_body(&buf[..n]).await?;
        pos += n as u64;
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    if pos < end {
        // The declared length was not delivered: end the connection so the client sees the cut.
        use tokio::io::AsyncWriteExt;
        let _ = conn.stream.shutdown().await;
        return Ok(Keep::Close);
    }
    Ok(Keep::Open)
}

async fn respond(
    conn: &mut Connection,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &[(String, String)],
    close: bool,
) -> std::io::Result<Keep> {
    let mut headers: Vec<(String, String)> = extra.to_vec();
    headers.push(("Content-Type".into(), content_type.into()));
    headers.push(("Content-Length".into(), body.len().to_string()));
    if close {
        headers.push(("Connection".into(), "close".into()));
    }
    conn.write_head(status, &headers).await?;
    conn.write_body(body).await?;
    Ok(if close { Keep::Close } else { Keep::Open })
}

/// Where one chunk of a recording is served: what a GA event names for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLocation {
    /// `documentId`.
    pub document_id: String,
    /// `contentLocation`.
    pub content: String,
    /// `metadataLocation`.
    pub metadata: String,
    /// `deleteLocation`.
    pub delete: String,
}

/// A GA `RecordingFileStatusUpdated` event (Event Grid schema) for these chunks, in order, as
/// ACS publishes it for a recording that started at `started`.
pub fn ga_event(
    event_id: &str,
    call_id: &str,
    chunks: &[ChunkLocation],
    format: RecordingFormat,
    started: SystemTime,
) -> serde_json::Value {
    let listed: Vec<serde_json::Value> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({
                "documentId": c.document_id,
                "index": i,
                "endReason": if i + 1 == chunks.len() { "SessionEnded" } else { "ChunkMaximumSizeExceeded" },
                "contentLocation": c.content,
                "metadataLocation": c.metadata,
                "deleteLocation": c.delete,
            })
        })
        .collect();
    let rfc3339 = |t: SystemTime| {
        time::OffsetDateTime::from(t)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    serde_json::json!({
        "id": event_id,
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/emulated/providers/microsoft.communication/communicationservices/emulated",
        // The Event Grid docs' GA sample shape (communication-services-voice-video-events.md).
        "subject": format!("/recording/call/{call_id}/serverCallId/server-{call_id}/recordingId/recording-{call_id}"),
        "data": {
            "recordingStorageInfo": {"recordingChunks": listed},
            "recordingStartTime": rfc3339(started),
            "recordingDurationMs": 60000,
            "sessionEndReason": "CallEnded",
            "recordingContentType": if format == RecordingFormat::Mp4 { "AudioVideo" } else { "Audio" },
            "recordingChannelType": "Mixed",
            "recordingFormatType": format!("{format:?}"),
        },
        "eventType": "Microsoft.Communication.RecordingFileStatusUpdated",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "eventTime": rfc3339(started + Duration::from_secs(60)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_a_simple_server() {
        assert_eq!(parse_range("bytes=10-"), Some((10, None)));
        assert_eq!(parse_range("bytes=10-19"), Some((10, Some(19))));
        assert_eq!(parse_range("bytes=-5"), None);
        assert_eq!(parse_range("bytes=1-2,4-5"), None);
        assert_eq!(parse_range("bytes=9-1"), None);
    }

    fn request(method: &str, target: &str) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    #[test]
    fn both_url_schemes_route() {
        assert_eq!(
            route(
                Server::Acs,
                &request("GET", "/recording/download/d1?api-version=x")
            ),
            Route::Media("d1".into())
        );
        assert_eq!(
            route(
                Server::Acs,
                &request("GET", "/recording/download/d1/metadata")
            ),
            Route::Metadata("d1".into())
        );
        assert_eq!(
            route(
                Server::Storage,
                &request("GET", "/v1/objects/d1/content/video")
            ),
            Route::Media("d1/video".into())
        );
        assert_eq!(
            route(
                Server::Storage,
                &request("DELETE", "/v1/objects/d1/content/deletedata")
            ),
            Route::Delete("d1".into())
        );
        assert_eq!(
            route(Server::Storage, &request("DELETE", "/v1/objects/d1")),
            Route::Delete("d1".into())
        );
        assert_eq!(
            route(Server::Storage, &request("GET", "/recording/download/d1")),
            Route::NotFound
        );
        assert_eq!(
            route(
                Server::Storage,
                &request("PUT", "/v1/objects/d1/content/video")
            ),
            Route::MethodNotAllowed
        );
    }
}
