//! What one webhook delivery does, and what it answers. Both entry points (the Functions custom
//! handler and the Lambda front end) turn their requests into a `WebhookRequest` and send back
//! the `WebhookResponse` unchanged, so the status rules live only here:
//!
//! * 200 once every event is handled: validation answered, recording chunks handed to the
//!   [`ChunkArchiver`], other events acknowledged and logged.
//! * 503 when any chunk could not be handed over for a reason that may pass: Event Grid
//!   redelivers the whole batch, which is harmless because archiving is idempotent.
//! * 4xx only when nothing in the delivery can ever be processed (Event Grid drops 4xx for
//!   good): 400 malformed, 405 method, 413 too large, 415 media type.
//!
//! A bad event in a batch never costs the good ones: it is logged (clipped, URL queries
//! redacted, see [`crate::redact`]) with its id and reason, and the rest are handled.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{HeaderMap, Method};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::acs::{ChunkRefusal, UrlPolicy};
use crate::disposition::Disposition;
use crate::eventgrid::{self, DeliveryError, EventKind, MAX_EVENTS_PER_DELIVERY};
use crate::json;
use crate::queue::{QueueClient, QueueError};
use crate::recording::{self, ChunkJob, EventContext, Siblings};
use crate::redact;
use crate::transfer::{Transfer, TransferError, TransferReport};
use futures_util::future::BoxFuture;

/// What became of one chunk job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveOutcome {
    /// Copied into storage now.
    Archived {
        /// Media bytes written.
        bytes: u64,
    },
    /// Already in storage from an earlier delivery: nothing was copied.
    AlreadyArchived,
    /// Handed to the transfer queue.
    Enqueued,
}

/// Why a chunk job failed. It keeps the failing module's error as its source, so what the caller
/// must do ([`ArchiveError::disposition`]) and the service's request id come from there, and
/// its text is fit for logs (no secrets).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The transfer pipeline failed (download, storage, or its checks).
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// The chunk's URLs fail the checks the transfer would apply: nothing was enqueued.
    #[error("chunk {index} ({document_id}): {reason}")]
    Refused {
        /// Chunk index.
        index: u32,
        /// Chunk document id.
        document_id: String,
        /// Which URL, and why.
        reason: Box<ChunkRefusal>,
    },
    /// The job was not enqueued: the queue failed (after retries), or the job can never fit
    /// in a message.
    #[error("chunk {index} ({document_id}): not enqueued: {source}")]
    Enqueue {
        /// Chunk index.
        index: u32,
        /// Chunk document id.
        document_id: String,
        /// What the queue said.
        #[source]
        source: QueueError,
    },
    /// The job could not be written as JSON.
    #[error("chunk {index} ({document_id}): cannot write the job: {source}")]
    Encode {
        /// Chunk index.
        index: u32,
        /// Chunk document id.
        document_id: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

impl ArchiveError {
    /// What the caller must do, as the failing module classified it.
    pub fn disposition(&self) -> Disposition {
        match self {
            ArchiveError::Transfer(e) => e.disposition(),
            ArchiveError::Enqueue { source, .. } => source.disposition(),
            ArchiveError::Refused { .. } | ArchiveError::Encode { .. } => Disposition::Drop,
        }
    }

    /// The HTTP status of the service that failed, when one answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ArchiveError::Transfer(e) => e.status(),
            ArchiveError::Enqueue { source, .. } => source.status(),
            ArchiveError::Refused { .. } | ArchiveError::Encode { .. } => None,
        }
    }

    /// The failing service's request id (`x-ms-request-id`), for a support case.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ArchiveError::Transfer(e) => e.request_id(),
            ArchiveError::Enqueue { source, .. } => source.request_id(),
            ArchiveError::Refused { .. } | ArchiveError::Encode { .. } => None,
        }
    }
}

/// The seam between receiving recording events and archiving them: one call per chunk.
///
/// Implementations must be idempotent, because Event Grid delivers at least once and a batch
/// answered 503 comes back whole.
pub trait ChunkArchiver: Send + Sync {
    /// Archives (or enqueues) one chunk.
    fn archive(&self, job: ChunkJob) -> BoxFuture<'_, Result<ArchiveOutcome, ArchiveError>>;
}

/// The transfer pipeline archives chunks for real.
impl ChunkArchiver for Transfer {
    fn archive(&self, job: ChunkJob) -> BoxFuture<'_, Result<ArchiveOutcome, ArchiveError>> {
        Box::pin(async move {
            match Transfer::archive(self, &job).await {
                Ok(TransferReport::Archived { bytes, .. }) => {
                    Ok(ArchiveOutcome::Archived { bytes })
                }
                Ok(TransferReport::AlreadyArchived { .. }) => Ok(ArchiveOutcome::AlreadyArchived),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// Queue mode: the webhook enqueues each chunk as a job for `RecordingTransfer`, after the
/// URL checks the transfer will apply again: a chunk they refuse is dropped here (reported
/// under `rejected`, and a delivery of nothing else is answered 400) instead of failing five
/// times into the poison queue. A queue failure is answered as the queue client classifies it:
/// transient failures and our own storage setup (a refused credential, a missing queue) ask
/// for redelivery (503), and nothing is acknowledged that was not enqueued.
pub(crate) struct QueueIntake {
    queue: QueueClient,
    urls: UrlPolicy,
}

impl QueueIntake {
    /// Enqueues on `queue` what passes `urls`.
    pub fn new(queue: QueueClient, urls: UrlPolicy) -> Self {
        QueueIntake { queue, urls }
    }
}

impl ChunkArchiver for QueueIntake {
    fn archive(&self, job: ChunkJob) -> BoxFuture<'_, Result<ArchiveOutcome, ArchiveError>> {
        Box::pin(async move {
            if let Err(reason) = self.urls.check_chunk(&job.document_id, &job.source) {
                return Err(ArchiveError::Refused {
                    index: job.index,
                    document_id: job.document_id,
                    reason: Box::new(reason),
                });
            }
            let text = queue_message(&self.queue, &job)?;
            match self.queue.put_message(&text).await {
                Ok(id) => {
                    tracing::info!(message_id = %id, queue = self.queue.queue(), "chunk enqueued");
                    Ok(ArchiveOutcome::Enqueued)
                }
                Err(source) => Err(ArchiveError::Enqueue {
                    index: job.index,
                    document_id: job.document_id,
                    source,
                }),
            }
        })
    }
}

/// The queue message for `job`, under the queue's 64 KiB limit. The sibling list (needed by
/// the manifest and `DELETE_AFTER_ARCHIVE`) travels in every job of a recording, so a
/// recording of many chunks would make each message, and all of them together, grow with the
/// chunk count: when the list does not fit, the job is sent without it, and the recording is
/// archived without a manifest and left to ACS's own 24 h retention (logged). A job too large
/// even then (strings near the event's limits) can never be enqueued: it is refused as
/// permanent.
fn queue_message(queue: &QueueClient, job: &ChunkJob) -> Result<String, ArchiveError> {
    let encode = |job: &ChunkJob| {
        serde_json::to_string(job).map_err(|source| ArchiveError::Encode {
            index: job.index,
            document_id: job.document_id.clone(),
            source,
        })
    };
    let text = encode(job)?;
    if queue.fits(&text) {
        return Ok(text);
    }
    let bare = ChunkJob {
        siblings: Siblings::default(),
        ..job.clone()
    };
    let text = encode(&bare)?;
    if !job.siblings.is_empty() && queue.fits(&text) {
        tracing::warn!(chunks = job.siblings.len(), "the recording's chunk list does not fit in a queue message: it will be archived, but without a manifest and not deleted from ACS (left to its 24 h retention)");
        return Ok(text);
    }
    Err(ArchiveError::Enqueue {
        index: job.index,
        document_id: job.document_id.clone(),
        source: QueueError::TooLarge {
            queue: queue.queue().to_string(),
            size: queue.encoded_len(&text),
        },
    })
}

/// A webhook request as either front end received it.
#[derive(Debug)]
pub(crate) struct WebhookRequest {
    /// HTTP method.
    pub method: Method,
    /// Request headers.
    pub headers: HeaderMap,
    /// The whole body (the front end has already enforced the size limit while reading).
    pub body: Bytes,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WebhookResponse {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// JSON body, if any.
    pub body: Option<Value>,
}

impl WebhookResponse {
    fn json(status: u16, body: Value) -> Self {
        WebhookResponse {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    /// The answer to a whole-delivery error.
    pub(crate) fn from_delivery_error(e: &DeliveryError) -> Self {
        WebhookResponse::json(e.status(), json!({ "error": e.to_string() }))
    }

    /// 405, naming the allowed methods.
    pub(crate) fn method_not_allowed(method: &Method) -> Self {
        let mut r = WebhookResponse::json(
            405,
            json!({ "error": format!("method {method} is not allowed: Event Grid delivers with POST and checks CloudEvents endpoints with OPTIONS") }),
        );
        r.headers.push(("Allow", "POST, OPTIONS".into()));
        r
    }

    /// Serialises the body, if any.
    pub(crate) fn body_text(&self) -> String {
        self.body.as_ref().map(Value::to_string).unwrap_or_default()
    }

    /// The HTTP response both front ends send: status, extra headers, and the JSON body with
    /// its content type.
    pub(crate) fn into_http(self) -> http::Response<String> {
        let mut builder = http::Response::builder().status(self.status);
        if self.body.is_some() {
            builder = builder.header(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            );
        }
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        builder.body(self.body_text()).unwrap_or_else(|_| {
            let mut r = http::Response::new(String::new());
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}

/// Chunks handed to the archiver at once, per delivery. A batch may hold up to 5000 events;
/// this bounds the connections and memory one delivery can take.
pub(crate) const DEFAULT_SUBMIT_CONCURRENCY: usize = 16;

/// Most rejected events and failed chunks listed in an answer or a report; the others are
/// counted (and each is logged), so an answer stays small whatever the delivery held.
pub const MAX_LISTED: usize = 100;

/// The application: settings-derived limits plus the two archivers.
#[derive(Clone)]
pub struct App {
    /// What the webhook does with each chunk: enqueue it (queue mode) or transfer it (inline).
    intake: Arc<dyn ChunkArchiver>,
    /// What `RecordingTransfer` does with each queued chunk: transfer it.
    transfer: Arc<dyn ChunkArchiver>,
    /// Where a transfer message that can never succeed is moved at once.
    poison: Option<QueueClient>,
    max_body_bytes: usize,
    submit_concurrency: usize,
}

impl App {
    /// Builds the app: `intake` takes the webhook's chunks, `transfer` the queued ones.
    pub fn new(
        intake: Arc<dyn ChunkArchiver>,
        transfer: Arc<dyn ChunkArchiver>,
        max_body_bytes: usize,
    ) -> Self {
        App {
            intake,
            transfer,
            poison: None,
            max_body_bytes,
            submit_concurrency: DEFAULT_SUBMIT_CONCURRENCY,
        }
    }

    /// Moves transfer messages that can never succeed to `poison` at once, instead of
    /// failing them until the host gives up after `maxDequeueCount` tries.
    pub fn with_poison_queue(mut self, poison: QueueClient) -> Self {
        self.poison = Some(poison);
        self
    }

    /// The largest body the webhook reads.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Handles one request to the webhook.
    pub(crate) async fn handle_webhook(&self, req: WebhookRequest) -> WebhookResponse {
        match req.method {
            Method::OPTIONS => handshake(&req.headers),
            Method::POST => self.handle_delivery(&req.headers, &req.body).await,
            ref other => WebhookResponse::method_not_allowed(other),
        }
    }

    async fn handle_delivery(&self, headers: &HeaderMap, body: &[u8]) -> WebhookResponse {
        if body.len() > self.max_body_bytes {
            return WebhookResponse::from_delivery_error(&DeliveryError::TooLarge {
                size: body.len(),
                limit: self.max_body_bytes,
            });
        }
        let parsed = eventgrid::media_type(header(headers, "content-type"))
            .and_then(|_| eventgrid::parse_delivery(body));
        let delivery = match parsed {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %redact::reason(&e.to_string()), "delivery refused");
                return WebhookResponse::from_delivery_error(&e);
            }
        };
        let mut triage = Triage::default();
        // Events are read as the archiver takes their chunks, so only one event's jobs and
        // the chunks in flight are held at once.
        let jobs = Box::new(delivery.events().flat_map(|item| match item {
            Ok(event) => triage.add(event),
            Err(rejected) => {
                triage.reject(
                    Some(rejected.position),
                    None,
                    rejected.reason,
                    Some(rejected.raw),
                );
                Vec::new()
            }
        }));
        let submitted = submit(self.intake.as_ref(), jobs, self.submit_concurrency).await;
        triage.answer(delivery.len(), submitted)
    }

    /// Archives every chunk a transfer message names (see [`parse_transfer_message`]); an
    /// error when the message can never be processed.
    pub async fn archive_message(&self, text: &str) -> Result<Submitted, String> {
        let jobs = parse_transfer_message(text)?;
        Ok(self.archive_jobs(jobs).await)
    }

    /// Archives `jobs` with the transfer pipeline.
    pub(crate) async fn archive_jobs(&self, jobs: Vec<ChunkJob>) -> Submitted {
        submit(
            self.transfer.as_ref(),
            Box::new(jobs.into_iter()),
            self.submit_concurrency,
        )
        .await
    }

    /// Handles one transfer queue message (`message_id` and `dequeue_count` are for the log).
    /// The message may be deleted only when every chunk is archived, or when it can never
    /// succeed (unreadable, refused by the checks, or every failed chunk failed for good) and
    /// has been moved to the poison queue with its reason logged. On any failure that may
    /// pass, the queue keeps the message and retries it.
    pub(crate) async fn handle_transfer_message(
        &self,
        text: &str,
        message_id: &str,
        dequeue_count: u64,
    ) -> TransferAnswer {
        let span =
            tracing::info_span!("message", message_id = %redact::id(message_id), dequeue_count);
        self.transfer_message(text).instrument(span).await
    }

    async fn transfer_message(&self, text: &str) -> TransferAnswer {
        let mut answer = TransferAnswer {
            finished: false,
            logs: Vec::new(),
        };
        let done = match self.archive_message(text).await {
            Ok(done) => done,
            Err(reason) => {
                answer.logs.push(format!("permanent: {reason}"));
                self.refuse_for_good(text, &reason, &mut answer).await;
                return answer;
            }
        };
        answer.logs.push(format!(
            "archived {}, already archived {}, failed {} (permanent {})",
            done.archived,
            done.already_archived,
            done.retry + done.dropped,
            done.dropped
        ));
        for f in &done.failures {
            let kind = if f.error.disposition() == Disposition::Drop {
                "permanent"
            } else {
                "transient"
            };
            // The message already names the chunk (or its blob, which holds the document id).
            answer.logs.push(format!("{kind}: {}", f.error));
        }
        if done.retry == 0 && done.dropped == 0 {
            answer.finished = true;
            tracing::info!(
                chunks = done.archived + done.already_archived,
                "transfer message done"
            );
        } else if done.retry == 0 {
            let reason = format!("{} chunk(s) can never be archived as sent", done.dropped);
            self.refuse_for_good(text, &reason, &mut answer).await;
        } else {
            tracing::warn!(
                failed = done.retry + done.dropped,
                "transfer message failed; it will be tried again"
            );
        }
        answer
    }

    /// A message that can never succeed goes to the poison queue now, not after the host's
    /// retries. Without a poison queue (or if moving it fails) the invocation fails, and the
    /// host moves it after `maxDequeueCount` tries.
    async fn refuse_for_good(&self, text: &str, reason: &str, answer: &mut TransferAnswer) {
        let reason = redact::reason(reason);
        let Some(poison) = &self.poison else {
            tracing::error!(%reason, "transfer message can never be processed; it will end in the poison queue");
            return;
        };
        match poison.put_message(text).await {
            Ok(_) => {
                tracing::error!(%reason, poison_queue = poison.queue(), "transfer message can never be processed; moved to the poison queue");
                answer.logs.push(format!("moved to {}", poison.queue()));
                answer.finished = true;
            }
            Err(e) => {
                tracing::error!(%reason, error = %redact::reason(&e.to_string()), "transfer message can never be processed, and could not be moved to the poison queue; it will end there after the host's retries");
            }
        }
    }
}

/// The result of one transfer queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TransferAnswer {
    /// The message may be deleted: every chunk is archived, or the message can never succeed
    /// and was moved to the poison queue.
    pub finished: bool,
    /// A summary, one line per failed chunk (or the reason the message is unusable), for the
    /// host's log.
    pub logs: Vec<String>,
}

/// What became of a batch of chunk jobs: counts, and the first [`MAX_LISTED`] failures.
#[derive(Debug, Default)]
pub struct Submitted {
    /// Chunks copied into storage now.
    pub archived: usize,
    /// Chunks found already archived.
    pub already_archived: usize,
    /// Chunks handed to the transfer queue.
    pub enqueued: usize,
    /// Chunks that failed for a reason that may pass.
    pub retry: usize,
    /// Chunks that can never be archived as sent.
    pub dropped: usize,
    /// The first [`MAX_LISTED`] failures.
    pub failures: Vec<ChunkFailure>,
}

impl Submitted {
    /// Whether any chunk was handed over (archived, found archived, or enqueued).
    pub(crate) fn handed_over(&self) -> usize {
        self.archived + self.already_archived + self.enqueued
    }
}

/// One chunk that was not archived.
#[derive(Debug)]
pub struct ChunkFailure {
    /// The event it came from.
    pub event_id: Arc<str>,
    /// Its `documentId`.
    pub document_id: String,
    /// Its index.
    pub index: u32,
    /// What went wrong.
    pub error: ArchiveError,
}

/// Hands every job to `archiver`, `concurrency` at a time, taking the next job only when one
/// finishes, and counts the results.
async fn submit(
    archiver: &dyn ChunkArchiver,
    jobs: Box<dyn Iterator<Item = ChunkJob> + Send + '_>,
    concurrency: usize,
) -> Submitted {
    let mut results = stream::iter(jobs)
        .map(|job| async move {
            let chunk = (
                Arc::clone(&job.event_id),
                job.document_id.clone(),
                job.index,
            );
            let span = tracing::info_span!(
                "chunk",
                event_id = %redact::id(&job.event_id),
                document_id = %redact::id(&job.document_id),
                chunk = job.index,
            );
            (chunk, archiver.archive(job).instrument(span).await)
        })
        .buffer_unordered(concurrency);
    let mut done = Submitted::default();
    while let Some(((event_id, document_id, index), result)) = results.next().await {
        let error = match result {
            Ok(ArchiveOutcome::Archived { .. }) => {
                done.archived += 1;
                continue;
            }
            Ok(ArchiveOutcome::AlreadyArchived) => {
                done.already_archived += 1;
                continue;
            }
            Ok(ArchiveOutcome::Enqueued) => {
                done.enqueued += 1;
                continue;
            }
            Err(e) => e,
        };
        let text = error.to_string();
        let (shown_event, shown_document, shown_error) = (
            redact::id(&event_id),
            redact::id(&document_id),
            redact::reason(&text),
        );
        let (status, request_id) = (error.status(), error.request_id());
        if error.disposition() == Disposition::Drop {
            done.dropped += 1;
            tracing::error!(event_id = %shown_event, document_id = %shown_document, chunk = index, status, request_id, error = %shown_error, "recording chunk can never be archived as sent");
        } else {
            done.retry += 1;
            tracing::warn!(event_id = %shown_event, document_id = %shown_document, chunk = index, status, request_id, error = %shown_error, "recording chunk not archived yet; asking to be tried again");
        }
        if done.failures.len() < MAX_LISTED {
            done.failures.push(ChunkFailure {
                event_id,
                document_id,
                index,
                error,
            });
        }
    }
    done
}

/// Reads a transfer queue message: the [`ChunkJob`] JSON the webhook enqueues, or a raw Event
/// Grid / CloudEvents event (or an array of them), for subscriptions that deliver straight to
/// the queue with `messageEncoding: none`. Events of other types give no jobs. Jobs are
/// checked as the webhook checks events ([`ChunkJob::check`]), before anything is fetched.
/// An error says why the message can never be processed.
pub fn parse_transfer_message(text: &str) -> Result<Vec<ChunkJob>, String> {
    let text = text.trim();
    let decoded: String;
    let raw: &RawValue = match serde_json::from_str(text) {
        Ok(v) => v,
        // Base64 text, as the host keeps it in the poison queue (replayed by hand).
        Err(e) => {
            decoded = base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .ok_or_else(|| format!("message is not JSON: {e}"))?;
            serde_json::from_str(&decoded).map_err(|_| format!("message is not JSON: {e}"))?
        }
    };
    let items = match json::array(raw, MAX_EVENTS_PER_DELIVERY) {
        Ok(items) => items,
        Err(json::ArrayError::TooLong { max }) => {
            return Err(format!("message holds more than {max} items"))
        }
        Err(json::ArrayError::NotArray(_)) => vec![raw],
    };
    let mut jobs = Vec::new();
    for item in items {
        jobs.extend(parse_transfer_item(item)?);
    }
    Ok(jobs)
}

/// The two fields that tell a [`ChunkJob`] from an event.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobProbe<'a> {
    #[serde(borrow, default)]
    document_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    source: Option<&'a RawValue>,
}

/// One item of a transfer message or replayed file: a job, or an event (see
/// [`parse_transfer_message`]).
pub(crate) fn parse_transfer_item(item: &RawValue) -> Result<Vec<ChunkJob>, String> {
    let probe = json::object::<JobProbe<'_>>(item).ok();
    if probe.is_some_and(|p| p.document_id.is_some() && p.source.is_some()) {
        let job: ChunkJob =
            serde_json::from_str(item.get()).map_err(|e| format!("malformed transfer job: {e}"))?;
        job.check()
            .map_err(|e| format!("transfer job refused: {e}"))?;
        return Ok(vec![job]);
    }
    let event = eventgrid::Event::read(item)
        .map_err(|e| format!("message is neither a transfer job nor an event: {e}"))?;
    match event.kind() {
        EventKind::Recording => {
            let ctx = EventContext {
                id: &event.id,
                subject: event.subject.as_deref(),
                time: event.time.as_deref(),
            };
            let parsed =
                recording::parse_recording_data(ctx, event.data).map_err(|e| e.to_string())?;
            if parsed.jobs.is_empty() {
                let reasons: Vec<_> = parsed.rejected.iter().map(ToString::to_string).collect();
                return Err(reasons.join("; "));
            }
            for e in &parsed.rejected {
                tracing::error!(event_id = %redact::id(&event.id), reason = %redact::reason(&e.to_string()), "chunk rejected: it can never be archived as sent");
            }
            Ok(parsed.jobs)
        }
        EventKind::Invalid(reason) => Err(reason.to_string()),
        _ => {
            tracing::info!(
                event_id = %redact::id(&event.id),
                event_type = %redact::id(&event.event_type),
                "queued event of another type ignored"
            );
            Ok(Vec::new())
        }
    }
}

/// The sorting of one delivery's events.
#[derive(Default)]
struct Triage {
    validation: Option<String>,
    /// Events other than recordings and handshakes that were acknowledged.
    acknowledged: usize,
    seen_chunks: HashSet<String>,
    /// The first [`MAX_LISTED`] rejections.
    rejected: Vec<Value>,
    /// All rejections.
    rejected_count: usize,
}

impl Triage {
    /// Sorts one event; the chunk jobs of a recording event are returned to be archived.
    fn add(&mut self, event: eventgrid::Event<'_>) -> Vec<ChunkJob> {
        match event.kind() {
            EventKind::Validation { code, url } => {
                tracing::info!(
                    event_id = %redact::id(&event.id),
                    // The URL's `token` would let anyone validate the subscription: host only.
                    validation_host = url
                        .and_then(|u| url::Url::parse(&u).ok())
                        .and_then(|u| u.host_str().map(str::to_string))
                        .as_deref()
                        .unwrap_or("-"),
                    "answering the subscription validation handshake"
                );
                self.validation.get_or_insert_with(|| code.into_owned());
            }
            EventKind::SubscriptionDeletion => {
                tracing::info!(event_id = %redact::id(&event.id), "subscription deletion acknowledged");
                self.acknowledged += 1;
            }
            EventKind::Other => {
                tracing::info!(
                    event_id = %redact::id(&event.id),
                    event_type = %redact::id(&event.event_type),
                    "event of another type acknowledged and ignored"
                );
                self.acknowledged += 1;
            }
            EventKind::Invalid(reason) => self.reject_event(&event, reason.to_string(), true),
            EventKind::Recording => {
                let ctx = EventContext {
                    id: &event.id,
                    subject: event.subject.as_deref(),
                    time: event.time.as_deref(),
                };
                match recording::parse_recording_data(ctx, event.data) {
                    Err(e) => self.reject_event(&event, e.to_string(), true),
                    Ok(parsed) => {
                        // The event is logged once, however many of its chunks are refused.
                        for (i, e) in parsed.rejected.into_iter().enumerate() {
                            self.reject_event(&event, e.to_string(), i == 0);
                        }
                        let mut jobs = parsed.jobs;
                        // The same chunk twice in one batch (a duplicate delivery folded
                        // into the batch) is archived once.
                        jobs.retain(|job| {
                            let new = self.seen_chunks.insert(job.document_id.clone());
                            if !new {
                                tracing::info!(event_id = %redact::id(&job.event_id), document_id = %redact::id(&job.document_id), "duplicate chunk in this delivery skipped");
                            }
                            new
                        });
                        return jobs;
                    }
                }
            }
        }
        Vec::new()
    }

    fn reject_event(&mut self, event: &eventgrid::Event<'_>, reason: String, log_event: bool) {
        let raw = log_event.then_some(event.raw);
        self.reject(None, Some(&event.id), reason, raw);
    }

    /// Logs a rejected event with its id and reason, and enough of the event (clipped, URL
    /// queries redacted) to recognise it in the sender's copy.
    fn reject(
        &mut self,
        position: Option<usize>,
        id: Option<&str>,
        reason: String,
        raw: Option<&RawValue>,
    ) {
        let (event_id, shown_reason) = (redact::id(id.unwrap_or("-")), redact::reason(&reason));
        match raw {
            Some(raw) => {
                tracing::error!(%event_id, reason = %shown_reason, event = %redact::raw_event(raw), "event rejected: it can never be processed as sent")
            }
            None => {
                tracing::error!(%event_id, reason = %shown_reason, "event rejected: it can never be processed as sent")
            }
        }
        self.rejected_count += 1;
        if self.rejected.len() >= MAX_LISTED {
            return;
        }
        let mut entry = json!({ "reason": reason });
        if let Some(position) = position {
            entry["position"] = json!(position);
        }
        if let Some(id) = id {
            entry["id"] = json!(id);
        }
        self.rejected.push(entry);
    }

    fn answer(self, events: usize, done: Submitted) -> WebhookResponse {
        if done.retry > 0 {
            let retry: Vec<_> = done
                .failures
                .iter()
                .filter(|f| f.error.disposition() == Disposition::Retry)
                .map(|f| json!({"documentId": f.document_id, "index": f.index, "reason": f.error.to_string()}))
                .collect();
            return WebhookResponse::json(
                503,
                json!({
                    "error": format!("{} recording chunk(s) could not be handed over yet; deliver again", done.retry),
                    "chunks": retry,
                }),
            );
        }
        let mut rejected = self.rejected;
        rejected.extend(
            done.failures
                .iter()
                .take(MAX_LISTED.saturating_sub(rejected.len()))
                .map(|f| json!({"id": f.event_id, "documentId": f.document_id, "index": f.index, "reason": f.error.to_string()})),
        );
        let unlisted = self.rejected_count + done.dropped - rejected.len();
        // Something was processed if a handshake was answered, a non-recording event was
        // acknowledged, or any chunk was handed over. Otherwise every event was rejected or
        // dropped, and only then is the delivery itself refused.
        let processed =
            self.validation.is_some() || self.acknowledged > 0 || done.handed_over() > 0;
        let mut body = if !processed {
            json!({
                "error": "no event in this delivery can be processed",
                "rejected": rejected,
            })
        } else {
            json!({
                "events": events,
                "chunks": {
                    "archived": done.archived,
                    "alreadyArchived": done.already_archived,
                    "enqueued": done.enqueued,
                },
                "rejected": rejected,
            })
        };
        if unlisted > 0 {
            body["rejectedNotListed"] = json!(unlisted);
        }
        if !processed {
            return WebhookResponse::json(400, body);
        }
        if let Some(code) = self.validation {
            body = json!({ "validationResponse": code });
        }
        WebhookResponse::json(200, body)
    }
}

/// The CloudEvents abuse-protection handshake.
fn handshake(headers: &HeaderMap) -> WebhookResponse {
    let origin = header(headers, "webhook-request-origin");
    let mut response = WebhookResponse {
        status: 200,
        headers: vec![("Allow", "POST, OPTIONS".into())],
        body: None,
    };
    match eventgrid::abuse_protection_grant(origin, header(headers, "webhook-request-rate")) {
        Some(grant) => {
            tracing::info!(
                origin = %redact::id(origin.unwrap_or("-")),
                callback = header(headers, "webhook-request-callback").is_some(),
                "granting the CloudEvents abuse-protection handshake"
            );
            response.headers.extend(grant);
        }
        None => tracing::info!("OPTIONS without WebHook-Request-Origin: nothing to grant"),
    }
    response
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_messages_are_jobs_or_raw_events_of_either_schema() {
        let eg = include_str!("../tests/data/recording_ga_three_chunks.json");
        let jobs = parse_transfer_message(eg).unwrap();
        assert_eq!(jobs.len(), 3);
        let one = serde_json::to_string(&jobs[1]).unwrap();
        assert_eq!(parse_transfer_message(&one).unwrap(), vec![jobs[1].clone()]);
        let ce = include_str!("../tests/data/recording_ga_cloudevent.json");
        assert_eq!(parse_transfer_message(ce).unwrap().len(), 1);
        let poisoned = base64::engine::general_purpose::STANDARD.encode(ce);
        assert_eq!(
            parse_transfer_message(&poisoned).unwrap().len(),
            1,
            "base64, as in the poison queue"
        );
        let other = include_str!("../tests/data/other_event_type.json");
        assert_eq!(parse_transfer_message(other).unwrap(), vec![]);
    }

    fn recording_of(chunks: usize) -> Vec<ChunkJob> {
        let chunks: Vec<Value> = (0..chunks)
            .map(|i| {
                let base =
                    format!("https://us-storage.asm.skype.com/v1/objects/0-wus-d10-{i:032x}");
                json!({"documentId": format!("0-wus-d10-{i:032x}"), "index": i,
                    "contentLocation": format!("{base}/content/video"),
                    "deleteLocation": format!("{base}/content/deletedata")})
            })
            .collect();
        let event = json!({"id": "e", "eventType": recording::RECORDING_EVENT_TYPE,
            "data": {"recordingStorageInfo": {"recordingChunks": chunks}, "recordingFormatType": "Mp4"}});
        parse_transfer_message(&event.to_string()).unwrap()
    }

    #[test]
    fn job_messages_keep_the_sibling_list_only_while_it_fits_in_a_queue_message() {
        let queue = QueueClient::new(
            reqwest::Client::new(),
            url::Url::parse("http://127.0.0.1:1/devstoreaccount1").unwrap(),
            "q",
            crate::storage::StorageAuth::Sas(crate::config::Secret::new(String::new())),
        );
        let small = recording_of(3);
        let text = queue_message(&queue, &small[1]).unwrap();
        let read = parse_transfer_message(&text).unwrap();
        assert_eq!(
            read[0].siblings.len(),
            3,
            "a recording of 3 chunks can be deleted"
        );

        let large = recording_of(recording::MAX_CHUNKS_PER_EVENT);
        let full = serde_json::to_string(&large[0]).unwrap();
        assert!(!queue.fits(&full), "{} bytes", full.len());
        let text = queue_message(&queue, &large[0]).unwrap();
        assert!(queue.fits(&text));
        let read = parse_transfer_message(&text).unwrap();
        assert!(
            read[0].siblings.is_empty(),
            "archived, left to ACS retention"
        );
        assert_eq!(read[0].document_id, large[0].document_id);
    }

    #[test]
    fn unusable_transfer_messages_say_why() {
        assert!(parse_transfer_message("not json")
            .unwrap_err()
            .contains("not JSON"));
        assert!(
            parse_transfer_message(r#"{"documentId": "d", "source": 1}"#)
                .unwrap_err()
                .contains("malformed transfer job")
        );
        assert!(parse_transfer_message(r#"{"hello": 1}"#)
            .unwrap_err()
            .contains("id: is required"));
        let bad = include_str!("../tests/data/recording_missing_document_id.json");
        assert!(parse_transfer_message(bad)
            .unwrap_err()
            .contains("documentId"));
    }
    fn service_error(status: u16, request_id: &str) -> crate::storage::StorageError {
        crate::storage::StorageError::Service {
            operation: "Put Block",
            resource: "call/chunk0.mp4".into(),
            status,
            error_code: Some("ServerBusy".into()),
            request_id: Some(request_id.into()),
            message: None,
            attempts: 3,
        }
    }

    /// The status, request id and disposition a caller reads come from the storage error at
    /// the bottom of the chain, which stays reachable through `source()`.
    #[test]
    fn archive_errors_keep_their_cause_and_derive_from_it() {
        let transfer = TransferError::Storage {
            blob: "call/chunk0.mp4".into(),
            source: Box::new(service_error(503, "req-503")),
        };
        let e = ArchiveError::from(transfer);
        assert_eq!(e.disposition(), Disposition::Retry);
        assert_eq!(e.status(), Some(503));
        assert_eq!(e.request_id(), Some("req-503"));
        let mut chain = Vec::new();
        let mut next: Option<&dyn std::error::Error> = Some(&e);
        while let Some(error) = next {
            chain.push(error.to_string());
            next = error.source();
        }
        assert!(chain.len() >= 2, "{chain:?}");
        assert!(
            chain.last().unwrap().starts_with(
                "Put Block `call/chunk0.mp4`: HTTP 503 ServerBusy (request id req-503)"
            ),
            "{chain:?}"
        );

        let enqueue = ArchiveError::Enqueue {
            index: 0,
            document_id: "d".into(),
            source: QueueError::Storage {
                queue: "q".into(),
                source: Box::new(service_error(403, "req-403")),
            },
        };
        assert_eq!(enqueue.disposition(), Disposition::Retry, "our own setup");
        assert_eq!(enqueue.request_id(), Some("req-403"));
        let bad_request = ArchiveError::Enqueue {
            index: 0,
            document_id: "d".into(),
            source: QueueError::Storage {
                queue: "q".into(),
                source: Box::new(service_error(400, "req-400")),
            },
        };
        assert_eq!(bad_request.disposition(), Disposition::Drop);
    }

    #[test]
    fn a_job_too_large_for_any_message_is_dropped() {
        let queue = QueueClient::new(
            reqwest::Client::new(),
            url::Url::parse("http://127.0.0.1:1/devstoreaccount1").unwrap(),
            "q",
            crate::storage::StorageAuth::Sas(crate::config::Secret::new(String::new())),
        );
        let mut job = recording_of(1).remove(0);
        job.document_id = "d".repeat(crate::queue::MAX_MESSAGE_BYTES);
        let e = queue_message(&queue, &job).unwrap_err();
        assert!(
            matches!(
                e,
                ArchiveError::Enqueue {
                    source: QueueError::TooLarge { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.disposition(), Disposition::Drop);
    }

    /// A chunk that failed as the queue's answer `status` classifies it.
    fn failed(document_id: &str, status: u16) -> ChunkFailure {
        ChunkFailure {
            event_id: Arc::from("e"),
            document_id: document_id.into(),
            index: 0,
            error: ArchiveError::Enqueue {
                index: 0,
                document_id: document_id.into(),
                source: QueueError::Storage {
                    queue: "q".into(),
                    source: Box::new(service_error(status, "req")),
                },
            },
        }
    }

    #[test]
    fn triage_answers_503_listing_only_the_chunks_to_retry() {
        let done = Submitted {
            enqueued: 1,
            retry: 1,
            dropped: 1,
            failures: vec![failed("a", 400), failed("b", 503)],
            ..Submitted::default()
        };
        let answer = Triage::default().answer(1, done);
        assert_eq!(answer.status, 503);
        let body = answer.body.unwrap();
        let chunks = body["chunks"].as_array().unwrap();
        assert_eq!(chunks.len(), 1, "{body}");
        assert_eq!(chunks[0]["documentId"], "b", "{body}");
    }

    #[test]
    fn triage_refuses_a_delivery_only_when_nothing_in_it_was_processed() {
        let dropped = || Submitted {
            dropped: 1,
            failures: vec![failed("a", 400)],
            ..Submitted::default()
        };
        let answer = Triage::default().answer(1, dropped());
        assert_eq!(answer.status, 400);
        assert_eq!(answer.body.unwrap()["rejected"][0]["documentId"], "a");

        let acknowledged = Triage {
            acknowledged: 1,
            ..Triage::default()
        };
        let answer = acknowledged.answer(2, dropped());
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.body.unwrap()["rejected"][0]["documentId"], "a");

        let validated = Triage {
            validation: Some("code".into()),
            ..Triage::default()
        };
        let answer = validated.answer(2, dropped());
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, Some(json!({"validationResponse": "code"})));
    }
}
