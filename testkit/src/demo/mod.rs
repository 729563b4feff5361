//! The one-command local demo (`scripts/demo`): a recording goes from ACS to Blob Storage
//! through the real handler, with nothing from Azure.
//!
//! [`run`] starts Azurite, the ACS emulator (holding one recording of several chunks) and the
//! Functions host emulator on the repo's own host.json and function folders, with the app
//! settings a user would put in local.settings.json (`ARCHIVE_MODE=queue`). It then acts as
//! Event Grid: the subscription validation handshake, then one GA
//! `RecordingFileStatusUpdated` event, both through the host's front end. It waits (bounded)
//! for `RecordingTransfer` to archive every chunk, checks each media blob's SHA-256 against
//! the source and reads each archive record, prints what it found, runs the operator's tools
//! on it (`archiver find --call`, `archiver verify --call`) and prints the recording's manifest,
//! and stops everything it started, on failure and cancellation too.
//!
//! The checks themselves are pure ([`assess`]); the blobs are read with
//! [`crate::archive::ArchiveReader`].
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the options, the run from start to stop, Event Grid's two requests |
//! | `services.rs` | starting and stopping Azurite, the ACS emulator and the Functions host |
//! | `event_grid.rs` | the requests Event Grid sends |
//! | `wait.rs` | waiting for the transfers, and saying why one failed |
//! | `report.rs` | checking the archive against the source, and the report printed |
//! | `tools.rs` | `archiver find` and `archiver verify` on the archive, the manifest summarised |
//! | `sizes.rs` | sizes as the user writes them and as the demo prints them |

mod event_grid;
mod report;
mod services;
mod sizes;
mod tools;
mod wait;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::acs::RecordingFormat;

pub use report::{assess, BlobRow, BlobVerdict, DemoReport, SourceChunk};
pub use sizes::{human_size, parse_sizes};
pub use wait::failure_summary;

use event_grid::{post_event, validation_event};
use services::Services;

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// The demo recording: three chunks, the first over 100 MiB, so the transfer clearly streams
/// (the handler never holds a chunk in memory) and takes long enough to see the queue at work.
pub const DEFAULT_CHUNK_SIZES: [u64; 3] = [120 * MIB, 30 * MIB, 5 * MIB];
/// How long the demo waits for every chunk to be archived before it gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// `RECORDINGS_CONTAINER`, as in local.settings.json.example.
pub const CONTAINER: &str = "recordings";
/// `TRANSFER_QUEUE`, as in local.settings.json.example.
pub const TRANSFER_QUEUE: &str = "recording-transfers";
/// `ARCHIVED_NOTIFY_QUEUE`: where the one "recording archived" message goes.
pub const NOTIFY_QUEUE: &str = "recordings-archived";
/// The function key sent in `?code=`, as Event Grid does (the emulated host does not check it).
const FUNCTION_KEY: &str = "local-demo-key";
/// The recording format: `video/mp4`, the GA `content/video` URL.
const FORMAT: RecordingFormat = RecordingFormat::Mp4;
/// Every host pause is shortened so the demo takes seconds: the queue listener polls at least
/// every 250 ms, and a failed transfer comes back after 2 s instead of host.json's 30 s.
const POLLING_INTERVAL: Duration = Duration::from_millis(250);
const RETRY_DELAY: Duration = Duration::from_secs(2);
/// How often a waiting demo says it is still waiting.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// What the demo runs and how long it waits.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The Functions app: the directory holding host.json and the function folders.
    pub app_root: PathBuf,
    /// The built `handler` binary.
    pub handler: PathBuf,
    /// One recording chunk per entry, in bytes.
    pub chunk_sizes: Vec<u64>,
    /// Longest wait for the archive.
    pub timeout: Duration,
    /// Leave this chunk out of the emulated ACS storage, so its download gets 404 and the demo
    /// must fail: shows (and tests) what a failure looks like.
    pub withhold_chunk: Option<usize>,
    /// Print the host log (the handler's output included) to stderr as it happens.
    pub echo_host_log: bool,
    /// The built `archiver` binary, run on the archive at the end; `None` skips that step.
    pub archiver: Option<PathBuf>,
}

impl DemoOptions {
    /// The full demo: [`DEFAULT_CHUNK_SIZES`], [`DEFAULT_TIMEOUT`].
    pub fn new(app_root: PathBuf, handler: PathBuf) -> Self {
        DemoOptions {
            app_root,
            handler,
            chunk_sizes: DEFAULT_CHUNK_SIZES.to_vec(),
            timeout: DEFAULT_TIMEOUT,
            withhold_chunk: None,
            echo_host_log: false,
            archiver: None,
        }
    }
}

/// Why the demo failed. Every variant says what the user can look at next.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// A service could not be started.
    #[error("could not start {service}: {reason}")]
    Start {
        /// Azurite, the ACS emulator or the Functions host.
        service: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The webhook answered something Event Grid would not accept.
    #[error("{step}: {reason}")]
    Webhook {
        /// The handshake or the delivery.
        step: &'static str,
        /// The status and body, or the transport error.
        reason: String,
    },
    /// Not every chunk was archived in time, or one ended in the poison queue.
    #[error("the recording was not archived: {0}")]
    NotArchived(String),
    /// The container does not hold a byte-exact copy of every chunk.
    #[error("the archive does not match the source:\n  - {}", problems.join("\n  - "))]
    Mismatch {
        /// What was found (it has already been printed).
        report: Box<DemoReport>,
        /// Each difference, one per line.
        problems: Vec<String>,
    },
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
}

/// Runs the whole demo; stops every service it started before returning, also when `cancel`
/// completes first (then the answer is [`DemoError::Interrupted`]). Progress goes to stdout.
pub async fn run(
    options: DemoOptions,
    cancel: impl Future<Output = ()>,
) -> Result<DemoReport, DemoError> {
    let began = Instant::now();
    validate(&options)?;
    let mut services = Services::default();
    let outcome = {
        let work = async {
            services.start(&options).await?;
            exercise(&services, &options, began).await
        };
        tokio::select! {
            outcome = work => outcome,
            () = cancel => Err(DemoError::Interrupted),
        }
    };
    println!("\nStopping the Functions host (and the handler), the ACS emulator and Azurite...");
    match services.stop().await {
        Ok(()) => println!("Everything the demo started has stopped."),
        Err(e) => println!("Warning: not everything stopped: {e}"),
    }
    outcome
}

fn validate(options: &DemoOptions) -> Result<(), DemoError> {
    if options.chunk_sizes.is_empty() {
        return Err(DemoError::Options(
            "at least one chunk size is needed".into(),
        ));
    }
    if let Some(i) = options
        .withhold_chunk
        .filter(|i| *i >= options.chunk_sizes.len())
    {
        return Err(DemoError::Options(format!(
            "chunk {i} cannot be withheld: the recording has {} chunks",
            options.chunk_sizes.len()
        )));
    }
    if !options.handler.is_file() {
        return Err(DemoError::Options(format!(
            "no handler binary at {} (build it with `cargo build --bin handler`)",
            options.handler.display()
        )));
    }
    if !options.app_root.join("host.json").is_file() {
        return Err(DemoError::Options(format!(
            "{} holds no host.json: point the app root at the repository",
            options.app_root.display()
        )));
    }
    Ok(())
}

/// Everything after start-up: Event Grid's two requests, the wait, the checks.
async fn exercise(
    services: &Services,
    options: &DemoOptions,
    began: Instant,
) -> Result<DemoReport, DemoError> {
    let (Some(host), Some((acs, documents))) = (&services.host, &services.acs) else {
        unreachable!("exercise runs after every service started");
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| DemoError::Options(e.to_string()))?;
    let webhook = host.url(&format!("/api/RecordingWebhook?code={FUNCTION_KEY}"));

    let code = format!("demo-{}", unique_stamp());
    let (status, body) = post_event(
        &http,
        &webhook,
        "SubscriptionValidation",
        &validation_event(&code),
    )
    .await
    .map_err(|reason| DemoError::Webhook {
        step: "validation handshake",
        reason,
    })?;
    if status != 200 || body["validationResponse"] != code.as_str() {
        return Err(DemoError::Webhook {
            step: "validation handshake",
            reason: format!(
                "expected 200 {{\"validationResponse\": \"{code}\"}}, got {status} {body}"
            ),
        });
    }
    say(
        4,
        &format!(
            "Event Grid's subscription handshake: SubscriptionValidationEvent -> 200, \
             validationResponse `{code}` ✓"
        ),
    );

    let call_id = format!("demo-call-{}", unique_stamp());
    let doc_refs: Vec<&str> = documents.iter().map(String::as_str).collect();
    let started = SystemTime::now() - Duration::from_secs(60);
    let event = acs.ga_event(
        &format!("evt-{call_id}"),
        &call_id,
        &doc_refs,
        FORMAT,
        started,
    );
    let accepted = Instant::now();
    let (status, body) = post_event(&http, &webhook, "Notification", &json!([event]))
        .await
        .map_err(|reason| DemoError::Webhook {
            step: "recording event delivery",
            reason,
        })?;
    if status != 200 || body["chunks"]["enqueued"] != documents.len() {
        return Err(DemoError::Webhook {
            step: "recording event delivery",
            reason: format!(
                "expected 200 with {} chunks enqueued, got {status} {body}",
                documents.len()
            ),
        });
    }
    say(
        5,
        &format!(
            "Event Grid delivers RecordingFileStatusUpdated (call {call_id}) -> 200; the webhook \
             answered at once and queued {} transfer jobs. Waiting for RecordingTransfer \
             (at most {} s)...",
            documents.len(),
            options.timeout.as_secs()
        ),
    );
    wait::wait_for_archive(host, documents.len(), accepted + options.timeout).await?;
    let archive_time = accepted.elapsed();

    let report = report::check(services, options, http.clone(), archive_time, began).await?;
    if let Some(archiver) = &options.archiver {
        tools::show(services, archiver, &call_id, http).await?;
    }
    Ok(report)
}

/// `[n/7] text`, the demo's headline lines.
fn say(step: u8, text: &str) {
    println!("[{step}/7] {text}");
}

/// Distinguishes this run's ids (documents, call, validation code) from any other's.
fn unique_stamp() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:08x}", nanos as u32 ^ std::process::id().rotate_left(16))
}
