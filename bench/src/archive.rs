//! One archive row: a fresh `handler` process archives one chunk from the ACS emulator into a
//! Blob endpoint, invoked as the Functions host invokes `RecordingTransfer`; its CPU time and
//! peak RSS are read from `/proc` around the transfer, and the committed blob is checked.

use std::path::Path;
use std::time::{Duration, Instant};

use recording_archiver::app::parse_transfer_message;
use recording_archiver::blob::BlobClient;
use recording_archiver::config::{storage, BlobNameTemplate};
use recording_archiver::recording::{FormatHints, MediaFormat};
use serde_json::{json, Value};

use crate::children::{Emulator, Handler};
use crate::plan::{Hashing, Plan};
use crate::report::{Measurement, Sample};
use archiver_testkit::acs::{ga_event, ChunkLocation, RecordingFormat};

/// How long a handler may take to answer its readiness probe.
const HANDLER_START_LIMIT: Duration = Duration::from_secs(30);
/// The slowest transfer rate tolerated before a row is abandoned.
const SLOWEST_BYTES_PER_SEC: u64 = 5_000_000;

/// How long a row moving `bytes` may take before it is abandoned.
pub fn row_limit(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / SLOWEST_BYTES_PER_SEC)
}

/// The connection string of a Blob endpoint (Azurite's account and key) plus a Queue endpoint.
pub fn connection_string(blob_endpoint: &str, queue_endpoint: &str) -> String {
    use archiver_testkit::azurite::{ACCOUNT, ACCOUNT_KEY};
    format!(
        "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};\
         BlobEndpoint={blob_endpoint};QueueEndpoint={queue_endpoint};"
    )
}

/// A Blob client on `container` from a connection string, parsed as the handler parses it.
pub fn blob_client(
    connection_string: &str,
    container: &str,
    http: reqwest::Client,
) -> Result<BlobClient, String> {
    let lookup = |name: &str| (name == "RECORDINGS_STORAGE").then(|| connection_string.to_string());
    let settings = storage::load(&lookup)
        .map_err(|e| e.to_string())?
        .ok_or("no storage settings")?;
    BlobClient::from_settings(&settings, container, http, None).map_err(|e| e.to_string())
}

/// A GA `RecordingFileStatusUpdated` event (Event Grid schema) for one Mp4 chunk served by
/// the emulator, as ACS publishes it.
pub fn recording_event(
    event_id: &str,
    document_id: &str,
    (content, metadata, delete): (&str, &str, &str),
) -> Value {
    let chunk = ChunkLocation {
        document_id: document_id.to_string(),
        content: content.to_string(),
        metadata: metadata.to_string(),
        delete: delete.to_string(),
    };
    let started = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_510_800);
    ga_event(
        event_id,
        &format!("call-{event_id}"),
        &[chunk],
        RecordingFormat::Mp4,
        started,
    )
}

/// The `RecordingTransfer` invocation the host sends for a queue message `text`: the trigger
/// value is the message JSON-encoded as a string.
pub fn invocation(text: &str) -> Value {
    json!({"Data": {"job": Value::String(text.to_string()).to_string()}, "Metadata": {"DequeueCount": 1}})
}

/// How the handler of one row reaches one recording in the ACS emulator.
pub struct AcsAccess {
    /// The recording.
    pub document_id: String,
    /// `ACS_CONNECTION_STRING`.
    pub connection_string: String,
    /// `ACS_EXTRA_ALLOWED_HOSTS`.
    pub extra_allowed_hosts: String,
    /// The chunk's content, metadata and delete URLs, as the event carries them.
    pub urls: (String, String, String),
}

impl AcsAccess {
    /// Straight to the emulator's storage host, or through a proxy at `via` (`host:port`)
    /// when given.
    pub fn new(
        emulator: &Emulator,
        document_id: &str,
        via: Option<&str>,
    ) -> Result<AcsAccess, String> {
        let (content, metadata, delete) = emulator
            .urls_of(document_id)
            .ok_or_else(|| format!("the emulator does not serve {document_id}"))?;
        let at = |url: &str| match via {
            Some(proxy) => url.replacen(&emulator.storage_authority, proxy, 1),
            None => url.to_string(),
        };
        Ok(AcsAccess {
            document_id: document_id.to_string(),
            connection_string: emulator.connection_string.clone(),
            extra_allowed_hosts: match via {
                Some(proxy) => proxy.to_string(),
                None => emulator.extra_allowed_hosts.clone(),
            },
            urls: (at(content), at(metadata), at(delete)),
        })
    }
}

/// Where a row writes and what it expects there.
pub struct ArchiveTarget<'a> {
    /// The handler's `RECORDINGS_STORAGE`.
    pub connection_string: &'a str,
    /// A container no other row uses.
    pub container: &'a str,
    /// The size of each recording.
    pub size: u64,
    /// Its SHA-256, when the row computes one.
    pub sha256: Option<[u8; 32]>,
    /// Handler settings of the row itself (before the command line's).
    pub env: &'a [(String, String)],
}

/// Archives the recordings of `chunks` (one chunk each, all at once, as the host runs several
/// queue messages at once) with a fresh handler and measures it. `Err` means the row could not
/// run at all; a transfer that ran but did not check out is a measurement with a failed check.
pub async fn run(
    handler_bin: &Path,
    emulator: &Emulator,
    chunks: &[AcsAccess],
    plan: &Plan,
    hashing: Hashing,
    target: &ArchiveTarget<'_>,
    http: &reqwest::Client,
) -> Result<Measurement, String> {
    let acs = chunks.first().ok_or("no recording to archive")?;
    let mut env: Vec<(String, String)> = vec![
        ("RUST_LOG".into(), "warn".into()),
        ("RECORDINGS_STORAGE".into(), target.connection_string.into()),
        ("RECORDINGS_CONTAINER".into(), target.container.into()),
        ("TRANSFER_QUEUE".into(), format!("{}-q", target.container)),
        (
            "ACS_CONNECTION_STRING".into(),
            acs.connection_string.clone(),
        ),
        (
            "ACS_EXTRA_ALLOWED_HOSTS".into(),
            acs.extra_allowed_hosts.clone(),
        ),
        ("TRANSFER_CONTENT_MD5".into(), hashing.md5.to_string()),
        ("TRANSFER_SHA256".into(), hashing.sha256.to_string()),
    ];
    env.extend(target.env.iter().cloned());
    env.extend(plan.overrides.iter().cloned());
    let handler = Handler::start(handler_bin, &env, http, HANDLER_START_LIMIT).await?;

    let messages: Vec<String> = chunks
        .iter()
        .map(|acs| {
            let (content, metadata, delete) = &acs.urls;
            recording_event(
                &acs.document_id,
                &acs.document_id,
                (content, metadata, delete),
            )
            .to_string()
        })
        .collect();
    let limit = row_limit(target.size * chunks.len() as u64);
    let (pid, emulator_pid) = (handler.pid(), emulator.pid());
    let before = Sample::take(pid, emulator_pid)?;
    let started = Instant::now();
    let answers = futures_util::future::join_all(messages.iter().map(|message| async {
        let answer = http
            .post(handler.url("/RecordingTransfer"))
            .json(&invocation(message))
            .timeout(limit)
            .send()
            .await?;
        let status = answer.status().as_u16();
        answer.text().await.map(|body| (status, body))
    }))
    .await;
    let elapsed = started.elapsed();
    let after = Sample::take(pid, emulator_pid)?;

    let mut check = Ok(());
    for (message, answer) in messages.iter().zip(answers) {
        let checked = match answer {
            Err(e) => Err(format!(
                "RecordingTransfer: {e}\nhandler output:\n{}",
                handler.output()
            )),
            // The answer's Logs summarise the message: one chunk, freshly archived.
            Ok((200, body)) if body.contains("archived 1, already archived 0, failed 0") => {
                verify(message, target, http.clone()).await
            }
            Ok((status, body)) => Err(format!(
                "RecordingTransfer answered {status}: {body}\nhandler output:\n{}",
                handler.output()
            )),
        };
        check = check.and(checked);
    }
    // The handler is still running: its peak RSS is read from it.
    before.until(&after, pid, elapsed, check)
}

/// The committed media blob has the chunk's size and, when computed, its SHA-256.
async fn verify(
    message: &str,
    target: &ArchiveTarget<'_>,
    http: reqwest::Client,
) -> Result<(), String> {
    let job = parse_transfer_message(message)?
        .pop()
        .ok_or("the event has no chunk")?;
    let format = MediaFormat::infer(FormatHints {
        event_format: job.format_type.as_deref(),
        ..FormatHints::default()
    });
    let names = job.blob_names(&BlobNameTemplate::default(), format);
    let client = blob_client(target.connection_string, target.container, http)?;
    let props = client
        .get_properties(&names.media)
        .await
        .map_err(|e| format!("checking {}: {e}", names.media))?
        .ok_or_else(|| format!("{} was not committed", names.media))?;
    if props.content_length != target.size {
        return Err(format!(
            "{} holds {} bytes, not {}",
            names.media, props.content_length, target.size
        ));
    }
    if let Some(expected) = target.sha256 {
        let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        let stored = props
            .metadata
            .iter()
            .find(|(k, _)| k == "sha256")
            .map(|(_, v)| v.as_str());
        if stored != Some(hex.as_str()) {
            return Err(format!(
                "{}: SHA-256 {stored:?} in its metadata, expected {hex}",
                names.media
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_becomes_one_located_mp4_job() {
        let event = recording_event(
            "bench-1",
            "doc-1",
            (
                "http://127.0.0.1:9/v1/objects/doc-1/content/video",
                "http://127.0.0.1:9/v1/objects/doc-1/content/acsmetadata",
                "http://127.0.0.1:9/v1/objects/doc-1/content/deletedata",
            ),
        );
        let jobs = parse_transfer_message(&event.to_string()).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].document_id, "doc-1");
        let format = MediaFormat::infer(FormatHints {
            event_format: jobs[0].format_type.as_deref(),
            ..FormatHints::default()
        });
        assert!(jobs[0]
            .blob_names(&BlobNameTemplate::default(), format)
            .media
            .ends_with(".mp4"));
    }

    #[test]
    fn the_invocation_carries_the_message_as_a_json_string() {
        let envelope = invocation(r#"{"id":"e"}"#);
        assert_eq!(envelope["Data"]["job"], r#""{\"id\":\"e\"}""#);
        assert_eq!(envelope["Metadata"]["DequeueCount"], 1);
    }
}
