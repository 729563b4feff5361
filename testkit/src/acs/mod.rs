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
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the emulator's handle: start, stop, recordings, faults, the request log |
//! | `server.rs` | accepting connections and reading requests off them |
//! | `dispatch.rs` | which route a request asks for, its authentication, logging and faults |
//! | `routes.rs` | one function per route: media GET, metadata GET, delete |
//! | `http.rs`, `auth.rs`, `content.rs` | HTTP/1.1 framing, signature checks, generated content |
//! | `fault.rs`, `recording.rs`, `event.rs` | faults, stored recordings, the GA event pointing here |

mod auth;
mod content;
mod dispatch;
mod event;
mod fault;
mod http;
mod recording;
mod routes;
mod server;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use auth::MAX_SKEW;
pub use content::Content;
pub use event::{ga_event, ChunkLocation};
pub use fault::Fault;
pub use recording::RecordingFormat;

use recording::{default_metadata, Recording};

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
    /// The resource's host name as its clients know it (`<name>.communication.azure.com`),
    /// for clients that reach the emulator through a proxy forwarding with the emulator's own
    /// `Host` (the benchmark's shaper): requests are then signed for this name, as for the
    /// service. `None`: the ACS listener's own address.
    pub resource_host: Option<String>,
}

impl Default for AcsEmulatorConfig {
    fn default() -> Self {
        AcsEmulatorConfig {
            access_key: DEFAULT_ACCESS_KEY.to_vec(),
            bearer_token: None,
            max_skew: MAX_SKEW,
            resource_host: None,
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
            acs_authority: config
                .resource_host
                .clone()
                .unwrap_or_else(|| acs_addr.to_string()),
            config,
            storage_authority: storage_addr.to_string(),
            recordings: Mutex::default(),
            faults: Mutex::default(),
            media_faults: Mutex::default(),
            log: Mutex::default(),
            counter: AtomicU64::new(0),
        });
        let (shutdown, stop) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(server::accept_loop(
                acs,
                Server::Acs,
                state.clone(),
                stop.clone(),
            )),
            tokio::spawn(server::accept_loop(
                storage,
                Server::Storage,
                state.clone(),
                stop,
            )),
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

    /// The host every request must be signed for: `127.0.0.1:<port>` of the ACS resource, or
    /// the configured [`AcsEmulatorConfig::resource_host`].
    pub fn acs_authority(&self) -> String {
        self.state.acs_authority.clone()
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
        let endpoint = match &self.state.config.resource_host {
            Some(host) => format!("https://{host}/"),
            None => self.acs_endpoint(),
        };
        format!("endpoint={endpoint};accesskey={}", self.access_key_base64())
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
