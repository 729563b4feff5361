//! The one-command local demo (`scripts/demo`): a recording goes from ACS to Blob Storage
//! through the real handler, with nothing from Azure.
//!
//! [`run`] starts Azurite, the ACS emulator (holding one recording of several chunks) and the
//! Functions host emulator on the repo's own host.json and function folders, with the app
//! settings a user would put in local.settings.json (`ARCHIVE_MODE=queue`). It then acts as
//! Event Grid: the subscription validation handshake, then one GA
//! `RecordingFileStatusUpdated` event, both through the host's front end. It waits (bounded)
//! for `RecordingTransfer` to archive every chunk, checks each media blob's SHA-256 against
//! the source and reads each archive record, prints what it found, and stops everything it
//! started, on failure and cancellation too.
//!
//! The checks themselves are pure ([`assess`]); the I/O around them is in [`ArchiveReader`].

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::acs::{AcsEmulator, AcsEmulatorConfig, RecordingFormat, Verdict};
use crate::azurite::Azurite;
use crate::host::{FunctionsHost, HostOptions, InvocationRecord, InvocationStatus};

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

/// A chunk as the emulated ACS holds it: what the archive must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceChunk {
    /// Its position in the recording.
    pub index: usize,
    /// ACS `documentId`.
    pub document_id: String,
    /// Length in bytes.
    pub size: u64,
    /// The media `Content-Type`.
    pub content_type: String,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
}

/// A blob in the container, as List Blobs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBlob {
    /// Blob name.
    pub name: String,
    /// `Content-Length`.
    pub size: u64,
    /// `Content-Type`.
    pub content_type: String,
}

/// What was read from a blob.
#[derive(Debug, Clone, PartialEq)]
pub enum BlobContent {
    /// A `.json` archive record, parsed (`Value::Null` when it is not JSON).
    Record(Value),
    /// Anything else: the SHA-256 of its bytes.
    Media([u8; 32]),
}

/// What the demo concluded about one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobVerdict {
    /// The media blob of chunk `index`; whether it is a byte-exact copy of the source.
    Media {
        /// The chunk.
        index: usize,
        /// SHA-256 and size equal the source's.
        matches: bool,
    },
    /// The archive record of chunk `index`; whether it names the right blob, size and hash.
    Record {
        /// The chunk.
        index: usize,
        /// `mediaBlob`, `sizeBytes` and `sha256` agree with the blob and the source.
        consistent: bool,
    },
    /// A blob that belongs to no chunk of the demo recording.
    Unexpected,
}

/// One line of the result table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    /// The blob as listed.
    pub blob: ListedBlob,
    /// The verdict.
    pub verdict: BlobVerdict,
}

/// What a successful (or mismatched) demo found.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Every blob in the container, in listing order.
    pub rows: Vec<BlobRow>,
    /// The source chunks.
    pub chunks: Vec<SourceChunk>,
    /// Every invocation the emulated host made (HTTP forwards and queue triggers).
    pub invocations: Vec<InvocationRecord>,
    /// Requests the ACS emulator served, and how many it refused for a bad signature.
    pub acs_requests: (usize, usize),
    /// The handler's peak resident memory (Linux `VmHWM`), when it could be read: it stays far
    /// below the largest chunk because chunks are streamed in bounded blocks.
    pub handler_peak_rss: Option<u64>,
    /// From the event being accepted to the last chunk archived.
    pub archive_time: Duration,
    /// From start to the report, services start-up included.
    pub wall_time: Duration,
}

impl DemoReport {
    /// Media blobs that are byte-exact copies of their chunk.
    pub fn matching_media(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| matches!(r.verdict, BlobVerdict::Media { matches: true, .. }))
            .count()
    }

    /// Queue-triggered invocations that were not the first try of their message.
    pub fn retries(&self) -> usize {
        self.invocations
            .iter()
            .filter(|i| i.dequeue_count.is_some_and(|n| n > 1))
            .count()
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_width = self
            .rows
            .iter()
            .map(|r| r.blob.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(4);
        writeln!(
            f,
            "  {:<name_width$}  {:>13}  {:<16}  SHA-256 vs source",
            "blob", "size", "content type"
        )?;
        writeln!(f, "  {}", "-".repeat(name_width + 53))?;
        for row in &self.rows {
            let check = match &row.verdict {
                BlobVerdict::Media { matches: true, .. } => "✓ match".to_string(),
                BlobVerdict::Media { matches: false, .. } => "✗ DIFFERS".to_string(),
                BlobVerdict::Record {
                    index,
                    consistent: true,
                } => format!("(record of chunk {index}: ✓)"),
                BlobVerdict::Record { index, .. } => format!("(record of chunk {index}: ✗)"),
                BlobVerdict::Unexpected => "(not from this recording)".to_string(),
            };
            writeln!(
                f,
                "  {:<name_width$}  {:>13}  {:<16}  {check}",
                row.blob.name,
                group_digits(row.blob.size),
                row.blob.content_type
            )?;
        }
        let mut by_function: Vec<(&str, usize, usize)> = Vec::new();
        for inv in &self.invocations {
            let failed = usize::from(!inv.succeeded());
            match by_function.iter_mut().find(|(f, ..)| *f == inv.function) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 += failed;
                }
                None => by_function.push((&inv.function, 1, failed)),
            }
        }
        let calls: Vec<String> = by_function
            .iter()
            .map(|(function, n, failed)| format!("{function} x{n} ({failed} failed)"))
            .collect();
        writeln!(
            f,
            "\n  Host invocations: {}; retries: {}",
            calls.join(", "),
            self.retries()
        )?;
        writeln!(
            f,
            "  ACS emulator: {} signed requests served, {} refused",
            self.acs_requests.0, self.acs_requests.1
        )?;
        if let Some(rss) = self.handler_peak_rss {
            let largest = self.chunks.iter().map(|c| c.size).max().unwrap_or(0);
            writeln!(
                f,
                "  Handler peak memory: {} (largest chunk {}): chunks are streamed, never held whole",
                human_size(rss),
                human_size(largest)
            )?;
        }
        let bytes: u64 = self.chunks.iter().map(|c| c.size).sum();
        write!(
            f,
            "  Archived {} in {:.1} s ({:.0} MiB/s); wall time {:.1} s",
            human_size(bytes),
            self.archive_time.as_secs_f64(),
            bytes as f64 / MIB as f64 / self.archive_time.as_secs_f64().max(0.001),
            self.wall_time.as_secs_f64()
        )
    }
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

/// What the demo started, so that it can stop exactly that, whatever happened.
#[derive(Default)]
struct Services {
    azurite: Option<Azurite>,
    acs: Option<(AcsEmulator, Vec<String>)>,
    host: Option<FunctionsHost>,
}

impl Services {
    async fn start(&mut self, options: &DemoOptions) -> Result<(), DemoError> {
        let started = Instant::now();
        // Azurite::start blocks while Node starts (1-3 s).
        let azurite = tokio::task::spawn_blocking(Azurite::start)
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|reason| DemoError::Start {
                service: "Azurite",
                reason,
            })?;
        say(
            1,
            &format!(
                "Azurite (Blob and Queue storage, in memory) is up in {:.1} s: blobs at {}",
                started.elapsed().as_secs_f64(),
                azurite.blob_endpoint()
            ),
        );
        let storage = azurite.connection_string();
        self.azurite = Some(azurite);

        let acs = AcsEmulator::start(AcsEmulatorConfig::default())
            .await
            .map_err(|e| DemoError::Start {
                service: "the ACS emulator",
                reason: e.to_string(),
            })?;
        let stamp = unique_stamp();
        let documents: Vec<String> = (0..options.chunk_sizes.len())
            .map(|i| format!("0-demo-d{i}-{stamp}"))
            .collect();
        for (i, (doc, size)) in documents.iter().zip(&options.chunk_sizes).enumerate() {
            if options.withhold_chunk != Some(i) {
                acs.add_recording(doc, *size, i as u64 + 1, FORMAT);
            }
        }
        let sizes: Vec<String> = options.chunk_sizes.iter().map(|s| human_size(*s)).collect();
        say(
            2,
            &format!(
                "The emulated ACS recording store holds one {} recording in {} chunks ({}), \
                 at {}; it checks every request's HMAC signature like ACS",
                FORMAT.content_type(),
                documents.len(),
                sizes.join(", "),
                acs.storage_authority()
            ),
        );
        if let Some(i) = options.withhold_chunk {
            println!("      (chunk {i} is withheld on purpose: its download will get 404)");
        }
        let app_settings = local_settings(&storage, &acs);
        self.acs = Some((acs, documents));

        let started = Instant::now();
        let host = FunctionsHost::start_with(
            &options.app_root,
            HostOptions {
                handler: Some(options.handler.clone()),
                app_settings,
                max_polling_interval: Some(POLLING_INTERVAL),
                visibility_timeout: Some(RETRY_DELAY),
                echo: options.echo_host_log || HostOptions::default().echo,
                ..HostOptions::default()
            },
        )
        .await
        .map_err(|reason| DemoError::Start {
            service: "the Functions host with the handler",
            reason,
        })?;
        let pid = host
            .handler()
            .map_or_else(|| "?".to_string(), |w| w.pid.to_string());
        say(
            3,
            &format!(
                "The Functions host runs the handler (pid {pid}, ready in {:.1} s) with the repo's \
                 host.json: RecordingWebhook at {}/api/RecordingWebhook, RecordingTransfer on \
                 queue `{TRANSFER_QUEUE}`",
                started.elapsed().as_secs_f64(),
                host.base_url()
            ),
        );
        self.host = Some(host);
        Ok(())
    }

    /// Stops the host (SIGTERM to the handler, as the host does), the emulator and Azurite,
    /// and waits until Azurite's ports are closed: dropping it sends SIGKILL to Node, which
    /// takes a moment to release an in-memory store of a few hundred MiB.
    async fn stop(self) -> Result<(), String> {
        if let Some(host) = self.host {
            host.stop().await;
        }
        if let Some((acs, _)) = self.acs {
            acs.stop().await;
        }
        let Some(azurite) = self.azurite else {
            return Ok(());
        };
        let ports = [azurite.blob_port(), azurite.queue_port()];
        drop(azurite);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in ports {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                if Instant::now() >= deadline {
                    return Err(format!("Azurite still listens on port {port}"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

/// The "Values" a user would put in local.settings.json for this machine.
fn local_settings(storage: &str, acs: &AcsEmulator) -> Vec<(String, String)> {
    [
        ("FUNCTIONS_WORKER_RUNTIME", "Custom".to_string()),
        ("AzureWebJobsStorage", storage.to_string()),
        ("ACS_CONNECTION_STRING", acs.connection_string()),
        ("ACS_EXTRA_ALLOWED_HOSTS", acs.extra_allowed_hosts()),
        ("RECORDINGS_STORAGE", storage.to_string()),
        ("RECORDINGS_CONTAINER", CONTAINER.to_string()),
        ("ARCHIVE_MODE", "queue".to_string()),
        ("TRANSFER_QUEUE", TRANSFER_QUEUE.to_string()),
        ("RUST_LOG", "info".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Everything after start-up: Event Grid's two requests, the wait, the checks.
async fn exercise(
    services: &Services,
    options: &DemoOptions,
    began: Instant,
) -> Result<DemoReport, DemoError> {
    let (Some(host), Some((acs, documents)), Some(azurite)) =
        (&services.host, &services.acs, &services.azurite)
    else {
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
    wait_for_archive(host, documents.len(), accepted + options.timeout).await?;
    let archive_time = accepted.elapsed();

    say(
        6,
        &format!(
            "Checking container `{CONTAINER}` against the source (download and SHA-256 every blob)"
        ),
    );
    let chunks = source_chunks(acs, documents, &options.chunk_sizes).await?;
    let reader = ArchiveReader::new(http, azurite);
    let listed = reader.list().await.map_err(DemoError::NotArchived)?;
    let mut contents = Vec::with_capacity(listed.len());
    for blob in &listed {
        contents.push(
            reader
                .read(&blob.name)
                .await
                .map_err(DemoError::NotArchived)?,
        );
    }
    let (rows, problems) = assess(&chunks, &listed, &contents);
    let requests = acs.requests();
    let refused = requests
        .iter()
        .filter(|r| r.verdict != Verdict::Accepted)
        .count();
    let report = DemoReport {
        rows,
        chunks,
        invocations: host.invocations(),
        acs_requests: (requests.len(), refused),
        handler_peak_rss: host
            .handler()
            .and_then(|w| crate::procstat::peak_rss(w.pid).ok()),
        archive_time,
        wall_time: began.elapsed(),
    };
    println!("\n{report}");
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(DemoError::Mismatch {
            report: Box::new(report),
            problems,
        })
    }
}

/// Waits until `chunks` queue invocations succeeded and the queues are drained, printing each
/// invocation as it ends. A poison message or the deadline fails; then the end of the host log
/// is printed too.
async fn wait_for_archive(
    host: &FunctionsHost,
    chunks: usize,
    deadline: Instant,
) -> Result<(), DemoError> {
    let queue_functions: Vec<String> = host.queues().iter().map(|q| q.function.clone()).collect();
    let is_transfer = |i: &InvocationRecord| queue_functions.contains(&i.function);
    let mut shown = host.invocations().len();
    let waiting = Instant::now();
    loop {
        let invocations = host.invocations();
        for inv in invocations.iter().skip(shown).filter(|i| is_transfer(i)) {
            let outcome = match &inv.status {
                InvocationStatus::Succeeded => "succeeded".to_string(),
                InvocationStatus::Failed(why) => format!("FAILED: {}", failure_summary(why, 160)),
            };
            println!(
                "      {} try {} of message {}: {outcome} ({:.1} s)",
                inv.function,
                inv.dequeue_count.unwrap_or(1),
                inv.message_id.as_deref().unwrap_or("-"),
                inv.duration.as_secs_f64()
            );
        }
        shown = invocations.len();
        // A job that can never succeed is moved by the handler itself, at once.
        let moved = invocations.iter().filter(|i| is_transfer(i)).find_map(|i| {
            let queue = i.logs.iter().find_map(|l| l.strip_prefix("moved to "))?;
            let why = i.logs.iter().find(|l| l.starts_with("permanent:"));
            Some((queue, why.map_or("", String::as_str)))
        });
        if let Some((queue, why)) = moved {
            print_log_tail(host);
            return Err(DemoError::NotArchived(format!(
                "the handler moved a transfer job that can never succeed to `{queue}`: {}",
                failure_summary(why, 400)
            )));
        }
        if let Some(p) = host.poison_moves().first() {
            print_log_tail(host);
            return Err(DemoError::NotArchived(format!(
                "after {} tries the host moved a transfer job to `{}`: {}",
                p.dequeue_count,
                p.poison_queue,
                failure_summary(&p.reason, 400)
            )));
        }
        let done = invocations
            .iter()
            .filter(|i| is_transfer(i) && i.succeeded())
            .count();
        if done >= chunks {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            print_log_tail(host);
            return Err(DemoError::NotArchived(format!(
                "only {done} of {chunks} chunks were archived within {:.0} s",
                waiting.elapsed().as_secs_f64()
            )));
        }
        let changed = host
            .wait_for("an invocation to end", left.min(HEARTBEAT), |h| {
                h.invocations().len() > shown || !h.poison_moves().is_empty()
            })
            .await;
        if changed.is_err() && Instant::now() < deadline {
            println!(
                "      ... {done} of {chunks} archived, still transferring ({:.0} s)",
                waiting.elapsed().as_secs_f64()
            );
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if host.wait_until_idle(left).await.is_err() {
        print_log_tail(host);
        return Err(DemoError::NotArchived(
            "every chunk was archived, but the transfer queue did not drain in time".into(),
        ));
    }
    Ok(())
}

/// The handler's own words from a failed invocation: the `Logs` of its answer when the host
/// quoted them (`... Body: {"Logs": [...]}`), else the host's reason; at most `max` characters.
pub fn failure_summary(reason: &str, max: usize) -> String {
    let logs = reason.split_once("Body: ").and_then(|(head, body)| {
        let answer: Value = serde_json::from_str(body).ok()?;
        let logs: Vec<&str> = answer["Logs"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let status = head
            .split_once("success: ")
            .map_or("", |(_, s)| s.trim_end_matches(['.', ' ']));
        Some(format!("{status} {}", logs.join("; ")).trim().to_string())
    });
    let text = logs.unwrap_or_else(|| reason.to_string());
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The end of the host log (the handler's output included), for a failure.
fn print_log_tail(host: &FunctionsHost) {
    const LINES: usize = 12;
    const WIDTH: usize = 300;
    let log = host.log();
    println!("\n--- the last {LINES} lines of the host log (all of it: --verbose) ---");
    for line in &log[log.len().saturating_sub(LINES)..] {
        match line.char_indices().nth(WIDTH) {
            Some((cut, _)) => println!("{}...", &line[..cut]),
            None => println!("{line}"),
        }
    }
    println!("---");
}

/// The source chunks, hashed off the async threads (about 1 s per GiB in release).
async fn source_chunks(
    acs: &AcsEmulator,
    documents: &[String],
    sizes: &[u64],
) -> Result<Vec<SourceChunk>, DemoError> {
    let mut chunks = Vec::with_capacity(documents.len());
    for (index, (doc, size)) in documents.iter().zip(sizes).enumerate() {
        // A withheld chunk has no source: nothing can match it.
        let sha256 = match acs.content(doc) {
            Some(content) => tokio::task::spawn_blocking(move || content.sha256())
                .await
                .map_err(|e| DemoError::NotArchived(e.to_string()))?,
            None => [0; 32],
        };
        chunks.push(SourceChunk {
            index,
            document_id: doc.clone(),
            size: *size,
            content_type: FORMAT.content_type().to_string(),
            sha256,
        });
    }
    Ok(chunks)
}

/// Compares the container with the source: one row per listed blob (`contents[i]` was read
/// from `listed[i]`) and one line per problem. Every chunk needs an archive record naming its
/// media blob, a media blob with the source's size, SHA-256 and content type, and a record
/// whose `sizeBytes` and `sha256` (when present) agree.
pub fn assess(
    chunks: &[SourceChunk],
    listed: &[ListedBlob],
    contents: &[BlobContent],
) -> (Vec<BlobRow>, Vec<String>) {
    let mut verdicts: Vec<BlobVerdict> = vec![BlobVerdict::Unexpected; listed.len()];
    let mut problems = Vec::new();
    let blobs: Vec<(&ListedBlob, &BlobContent)> = listed.iter().zip(contents).collect();
    for chunk in chunks {
        let what = format!("chunk {} ({})", chunk.index, chunk.document_id);
        let record = blobs.iter().position(|(_, c)| {
            matches!(c, BlobContent::Record(r) if r["archive"]["documentId"] == chunk.document_id.as_str())
        });
        let Some(record) = record else {
            problems.push(format!("{what}: no archive record names it"));
            continue;
        };
        let BlobContent::Record(r) = blobs[record].1 else {
            unreachable!("found as a record")
        };
        let archive = &r["archive"];
        let media_name = archive["mediaBlob"].as_str().unwrap_or_default();
        let media = blobs
            .iter()
            .position(|(b, c)| b.name == media_name && matches!(c, BlobContent::Media(_)));
        let mut record_ok = true;
        match media {
            None => {
                problems.push(format!(
                    "{what}: its record names media blob `{media_name}`, which is not in the container"
                ));
                record_ok = false;
            }
            Some(m) => {
                let (blob, BlobContent::Media(sha)) = blobs[m] else {
                    unreachable!("found as media")
                };
                let mut matches = true;
                if *sha != chunk.sha256 {
                    problems.push(format!(
                        "{what}: `{}` has SHA-256 {}, the source {}",
                        blob.name,
                        hex(sha),
                        hex(&chunk.sha256)
                    ));
                    matches = false;
                }
                if blob.size != chunk.size {
                    problems.push(format!(
                        "{what}: `{}` holds {} bytes, the source {}",
                        blob.name, blob.size, chunk.size
                    ));
                    matches = false;
                }
                if blob.content_type != chunk.content_type {
                    problems.push(format!(
                        "{what}: `{}` has Content-Type `{}`, expected `{}`",
                        blob.name, blob.content_type, chunk.content_type
                    ));
                }
                verdicts[m] = BlobVerdict::Media {
                    index: chunk.index,
                    matches,
                };
                if archive["sizeBytes"] != blob.size {
                    problems.push(format!(
                        "{what}: record says sizeBytes {}, the blob holds {}",
                        archive["sizeBytes"], blob.size
                    ));
                    record_ok = false;
                }
            }
        }
        if let Some(recorded) = archive["sha256"].as_str() {
            if !recorded.eq_ignore_ascii_case(&hex(&chunk.sha256)) {
                problems.push(format!(
                    "{what}: record says sha256 {recorded}, the source has {}",
                    hex(&chunk.sha256)
                ));
                record_ok = false;
            }
        }
        verdicts[record] = BlobVerdict::Record {
            index: chunk.index,
            consistent: record_ok,
        };
    }
    let rows = listed
        .iter()
        .cloned()
        .zip(verdicts)
        .map(|(blob, verdict)| BlobRow { blob, verdict })
        .collect();
    (rows, problems)
}

/// Reads the demo container through a read/list SAS, as any client without the account key
/// would.
pub struct ArchiveReader {
    http: reqwest::Client,
    container_url: String,
    sas: String,
}

impl ArchiveReader {
    /// A reader for [`CONTAINER`] on `azurite`, with a SAS valid for an hour.
    pub fn new(http: reqwest::Client, azurite: &Azurite) -> Self {
        ArchiveReader {
            http,
            container_url: format!("{}/{CONTAINER}", azurite.blob_endpoint()),
            sas: azurite.container_sas(CONTAINER, "rl", Duration::from_secs(3600)),
        }
    }

    /// Every committed blob (List Blobs; one page holds 5000, far more than the demo writes).
    pub async fn list(&self) -> Result<Vec<ListedBlob>, String> {
        let url = format!(
            "{}?restype=container&comp=list&{}",
            self.container_url, self.sas
        );
        let what = format!("List Blobs on `{CONTAINER}`");
        let r = self.get(&url, &what).await?;
        let text = r.text().await.map_err(|e| format!("{what}: {e}"))?;
        Ok(parse_blob_list(&text))
    }

    /// A `.json` blob parsed, or any other blob's SHA-256, streamed.
    pub async fn read(&self, name: &str) -> Result<BlobContent, String> {
        let url = format!("{}/{name}?{}", self.container_url, self.sas);
        let r = self.get(&url, &format!("GET {name}")).await?;
        if name.ends_with(".json") {
            let bytes = r.bytes().await.map_err(|e| format!("GET {name}: {e}"))?;
            return Ok(BlobContent::Record(
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ));
        }
        let mut hasher = Sha256::new();
        let mut body = r.bytes_stream();
        while let Some(piece) = body.next().await {
            hasher.update(piece.map_err(|e| format!("GET {name}: {e}"))?);
        }
        Ok(BlobContent::Media(hasher.finalize().into()))
    }

    /// A successful answer to a GET, or an error naming `what` with the status and body.
    async fn get(&self, url: &str, what: &str) -> Result<reqwest::Response, String> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        Err(format!(
            "{what}: {status}: {}",
            r.text().await.unwrap_or_default()
        ))
    }
}

/// The blobs of a List Blobs answer (a flat, service-generated document: a tag scan will do).
pub fn parse_blob_list(xml: &str) -> Vec<ListedBlob> {
    let tag = |s: &str, name: &str| -> String {
        let open = format!("<{name}>");
        let Some(start) = s.find(&open).map(|i| i + open.len()) else {
            return String::new();
        };
        let end = s[start..]
            .find(&format!("</{name}>"))
            .map_or(start, |i| i + start);
        s[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    };
    xml.split("<Blob>")
        .skip(1)
        .map(|b| ListedBlob {
            name: tag(b, "Name"),
            size: tag(b, "Content-Length").parse().unwrap_or(0),
            content_type: tag(b, "Content-Type"),
        })
        .collect()
}

/// The event Event Grid sends when a subscription is created.
fn validation_event(code: &str) -> Value {
    json!([{
        "id": format!("validation-{code}"),
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local-demo/providers/Microsoft.Communication/CommunicationServices/emulated",
        "subject": "",
        "data": {
            "validationCode": code,
            "validationUrl": format!("https://rp-local.eventgrid.azure.net/eventsubscriptions/recording-archiver/validate?id={code}"),
        },
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": rfc3339(SystemTime::now()),
        "metadataVersion": "1",
        "dataVersion": "2",
    }])
}

/// POSTs `body` to the webhook as Event Grid does; the status and the JSON answer.
async fn post_event(
    http: &reqwest::Client,
    url: &str,
    event_type: &str,
    body: &Value,
) -> Result<(u16, Value), String> {
    let r = http
        .post(url)
        .header("Content-Type", "application/json")
        .header("aeg-event-type", event_type)
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// `[n/6] text`, the demo's headline lines.
fn say(step: u8, text: &str) {
    println!("[{step}/6] {text}");
}

/// Distinguishes this run's ids (documents, call, validation code) from any other's.
fn unique_stamp() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:08x}", nanos as u32 ^ std::process::id().rotate_left(16))
}

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
        ))
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `125829120` -> `125,829,120`.
fn group_digits(n: u64) -> String {
    let digits: Vec<u8> = n.to_string().into_bytes();
    let head = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let (first, rest) = digits.split_at(head.min(digits.len()));
    let mut groups = vec![String::from_utf8_lossy(first).into_owned()];
    groups.extend(
        rest.chunks(3)
            .map(|g| String::from_utf8_lossy(g).into_owned()),
    );
    groups.join(",")
}

/// `125829120` -> `120 MiB`, `1536` -> `1.5 KiB`, `17` -> `17 B`.
pub fn human_size(bytes: u64) -> String {
    for (unit, scale) in [("GiB", MIB * 1024), ("MiB", MIB), ("KiB", 1024)] {
        if bytes >= scale {
            let v = bytes as f64 / scale as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

/// Parses `120M,30M,5M` (suffixes `K`, `M`, `G` in binary units, optional `iB`/`B`).
pub fn parse_sizes(text: &str) -> Result<Vec<u64>, String> {
    text.split(',')
        .map(|item| {
            let item = item.trim();
            let upper = item.to_ascii_uppercase();
            let digits = upper.trim_end_matches('B').trim_end_matches('I');
            let (number, scale) = match digits.chars().last() {
                Some('K') => (&digits[..digits.len() - 1], 1024),
                Some('M') => (&digits[..digits.len() - 1], MIB),
                Some('G') => (&digits[..digits.len() - 1], MIB * 1024),
                _ => (digits, 1),
            };
            number
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(scale))
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("`{item}` is not a size like 120M, 512K or 4096"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(index: usize, seed: u8, size: u64) -> SourceChunk {
        SourceChunk {
            index,
            document_id: format!("doc-{index}"),
            size,
            content_type: "video/mp4".into(),
            sha256: [seed; 32],
        }
    }

    fn media(name: &str, size: u64) -> ListedBlob {
        ListedBlob {
            name: name.into(),
            size,
            content_type: "video/mp4".into(),
        }
    }

    fn record_of(c: &SourceChunk, media: &str) -> (ListedBlob, BlobContent) {
        let value = json!({"archive": {"documentId": c.document_id, "mediaBlob": media, "sizeBytes": c.size, "sha256": hex(&c.sha256)}});
        (
            ListedBlob {
                name: format!("{media}.json"),
                size: 300,
                content_type: "application/json".into(),
            },
            BlobContent::Record(value),
        )
    }

    fn archive_of(chunks: &[SourceChunk]) -> (Vec<ListedBlob>, Vec<BlobContent>) {
        let mut listed = Vec::new();
        let mut contents = Vec::new();
        for c in chunks {
            let name = format!("x/{:03}-{}.mp4", c.index, c.document_id);
            listed.push(media(&name, c.size));
            contents.push(BlobContent::Media(c.sha256));
            let (b, r) = record_of(c, &name);
            listed.push(b);
            contents.push(r);
        }
        (listed, contents)
    }

    #[test]
    fn a_complete_byte_exact_archive_has_no_problems() {
        let chunks = [chunk(0, 1, 10), chunk(1, 2, 20)];
        let (listed, contents) = archive_of(&chunks);
        let (rows, problems) = assess(&chunks, &listed, &contents);
        assert!(problems.is_empty(), "{problems:?}");
        let verdicts: Vec<_> = rows.iter().map(|r| r.verdict.clone()).collect();
        assert_eq!(
            verdicts,
            vec![
                BlobVerdict::Media {
                    index: 0,
                    matches: true
                },
                BlobVerdict::Record {
                    index: 0,
                    consistent: true
                },
                BlobVerdict::Media {
                    index: 1,
                    matches: true
                },
                BlobVerdict::Record {
                    index: 1,
                    consistent: true
                },
            ]
        );
    }

    #[test]
    fn a_missing_chunk_a_wrong_hash_and_a_wrong_size_are_each_named() {
        let chunks = [chunk(0, 1, 10), chunk(1, 2, 20), chunk(2, 3, 30)];
        let (mut listed, mut contents) = archive_of(&chunks[..2]);
        contents[0] = BlobContent::Media([9; 32]);
        listed[2].size = 19;
        let (rows, problems) = assess(&chunks, &listed, &contents);
        let text = problems.join("\n");
        assert!(
            text.contains("chunk 0 (doc-0)") && text.contains("SHA-256"),
            "{text}"
        );
        assert!(
            text.contains("chunk 1 (doc-1)") && text.contains("19 bytes"),
            "{text}"
        );
        assert!(
            text.contains("chunk 2 (doc-2): no archive record"),
            "{text}"
        );
        assert_eq!(
            rows[0].verdict,
            BlobVerdict::Media {
                index: 0,
                matches: false
            }
        );
        assert_eq!(
            rows[3].verdict,
            BlobVerdict::Record {
                index: 1,
                consistent: false
            }
        );
    }

    #[test]
    fn a_record_without_its_media_blob_is_a_problem() {
        let chunks = [chunk(0, 1, 10)];
        let (listed, contents) = archive_of(&chunks);
        let (rows, problems) = assess(&chunks, &listed[1..], &contents[1..]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("not in the container"), "{problems:?}");
        assert_eq!(
            rows[0].verdict,
            BlobVerdict::Record {
                index: 0,
                consistent: false
            }
        );
    }

    #[test]
    fn blob_list_xml_gives_names_sizes_and_types() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:1/devstoreaccount1" ContainerName="recordings"><Prefix/><Marker/><MaxResults>5000</MaxResults><Blobs><Blob><Name>2026/a&amp;b.mp4</Name><Properties><Creation-Time>x</Creation-Time><Content-Length>125829120</Content-Length><Content-Type>video/mp4</Content-Type></Properties></Blob><Blob><Name>2026/a&amp;b.mp4.json</Name><Properties><Content-Length>812</Content-Length><Content-Type>application/json</Content-Type></Properties></Blob></Blobs><NextMarker/></EnumerationResults>"#;
        assert_eq!(
            parse_blob_list(xml),
            vec![
                media("2026/a&b.mp4", 125829120),
                ListedBlob {
                    name: "2026/a&b.mp4.json".into(),
                    size: 812,
                    content_type: "application/json".into()
                }
            ]
        );
    }

    #[test]
    fn a_failed_invocation_is_summed_up_in_the_handler_words() {
        let reason = r#"Response status code does not indicate success: 500 (Internal Server Error). Body: {"Logs":["permanent: chunk 1 (d1): download: 404 Not Found"],"Outputs":{},"ReturnValue":null}"#;
        assert_eq!(
            failure_summary(reason, 400),
            "500 (Internal Server Error) permanent: chunk 1 (d1): download: 404 Not Found"
        );
        assert_eq!(
            failure_summary("no answer from the worker: connection refused", 400),
            "no answer from the worker: connection refused"
        );
        let long = "x".repeat(1000);
        assert_eq!(failure_summary(&long, 400).len(), 403);
    }

    #[test]
    fn sizes_parse_with_binary_suffixes_and_print_back() {
        assert_eq!(
            parse_sizes("120M, 512K,4096,1GiB,2mb").unwrap(),
            vec![120 * MIB, 512 * 1024, 4096, 1024 * MIB, 2 * MIB]
        );
        for bad in ["", "12X", "-1", "0", "M"] {
            assert!(parse_sizes(bad).is_err(), "{bad}");
        }
        assert_eq!(human_size(120 * MIB), "120 MiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(17), "17 B");
        assert_eq!(group_digits(125829120), "125,829,120");
        assert_eq!(group_digits(999), "999");
    }
}
