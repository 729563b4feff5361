//! What one webhook delivery does, and what it answers. Both entry points (the Functions custom
//! handler and the Lambda front end) turn their requests into a [`WebhookRequest`] and send back
//! the [`WebhookResponse`] unchanged, so the status rules live only here:
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
use serde_json::{json, Value};
use tracing::Instrument;

use crate::disposition::Disposition;
use crate::eventgrid::{self, DeliveryError, EventKind};
use crate::identity::BoxFuture;
use crate::queue::QueueClient;
use crate::recording::{self, ChunkJob, EventContext};
use crate::redact;
use crate::transfer::{Transfer, TransferReport};

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

/// Why a chunk job failed, already classified by the module that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ArchiveError {
    /// What the caller must do.
    pub disposition: Disposition,
    /// A description fit for logs (no secrets).
    pub message: String,
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
                Err(e) => Err(ArchiveError {
                    disposition: e.disposition(),
                    message: e.to_string(),
                }),
            }
        })
    }
}

/// Queue mode: the webhook enqueues each chunk as a job for `RecordingTransfer`. Every
/// failure asks for redelivery (503): nothing is acknowledged that was not enqueued.
impl ChunkArchiver for QueueClient {
    fn archive(&self, job: ChunkJob) -> BoxFuture<'_, Result<ArchiveOutcome, ArchiveError>> {
        Box::pin(async move {
            let text = serde_json::to_string(&job).map_err(|e| ArchiveError {
                disposition: Disposition::Retry,
                message: e.to_string(),
            })?;
            match self.put_message(&text).await {
                Ok(id) => {
                    tracing::info!(message_id = %id, queue = self.queue(), "chunk enqueued");
                    Ok(ArchiveOutcome::Enqueued)
                }
                Err(e) => Err(ArchiveError {
                    disposition: Disposition::Retry,
                    message: e.to_string(),
                }),
            }
        })
    }
}

/// A webhook request as either front end received it.
#[derive(Debug)]
pub struct WebhookRequest {
    /// HTTP method.
    pub method: Method,
    /// Request headers.
    pub headers: HeaderMap,
    /// The whole body (the front end has already enforced the size limit while reading).
    pub body: Bytes,
}

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookResponse {
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
    pub fn from_delivery_error(e: &DeliveryError) -> Self {
        WebhookResponse::json(e.status(), json!({ "error": e.to_string() }))
    }

    /// 405, naming the allowed methods.
    pub fn method_not_allowed(method: &Method) -> Self {
        let mut r = WebhookResponse::json(
            405,
            json!({ "error": format!("method {method} is not allowed: Event Grid delivers with POST and checks CloudEvents endpoints with OPTIONS") }),
        );
        r.headers.push(("Allow", "POST, OPTIONS".into()));
        r
    }

    /// Serialises the body, if any.
    pub fn body_text(&self) -> String {
        self.body.as_ref().map(Value::to_string).unwrap_or_default()
    }

    /// The HTTP response both front ends send: status, extra headers, and the JSON body with
    /// its content type.
    pub fn into_http(self) -> http::Response<String> {
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
pub const DEFAULT_SUBMIT_CONCURRENCY: usize = 16;

/// The application: settings-derived limits plus the two archivers.
#[derive(Clone)]
pub struct App {
    /// What the webhook does with each chunk: enqueue it (queue mode) or transfer it (inline).
    intake: Arc<dyn ChunkArchiver>,
    /// What `RecordingTransfer` does with each queued chunk: transfer it.
    transfer: Arc<dyn ChunkArchiver>,
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
            max_body_bytes,
            submit_concurrency: DEFAULT_SUBMIT_CONCURRENCY,
        }
    }

    /// The largest body the webhook reads.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Handles one request to the webhook.
    pub async fn handle_webhook(&self, req: WebhookRequest) -> WebhookResponse {
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
        for item in delivery.events() {
            match item {
                Ok(event) => triage.add(event),
                Err(rejected) => {
                    triage.reject(Some(rejected.position), None, rejected.reason, rejected.raw)
                }
            }
        }
        let jobs = std::mem::take(&mut triage.jobs);
        let (outcomes, failures) =
            submit(self.intake.as_ref(), jobs, self.submit_concurrency).await;
        triage.answer(delivery.len(), outcomes, failures)
    }

    /// Archives every chunk a transfer message names (see [`parse_transfer_message`]); an
    /// error when the message can never be processed.
    pub async fn archive_message(
        &self,
        text: &str,
    ) -> Result<(Vec<ArchiveOutcome>, Vec<(ChunkJob, ArchiveError)>), String> {
        let jobs = parse_transfer_message(text)?;
        Ok(submit(self.transfer.as_ref(), jobs, self.submit_concurrency).await)
    }

    /// Handles one transfer queue message (`message_id` and `dequeue_count` are for the log).
    /// The answer is a success only when every chunk is archived: on any failure the queue
    /// must keep the message, retry it, and finally move it to the poison queue. That holds
    /// for permanent errors too, which are logged loudly on every try: a message is never
    /// dropped unless its chunks are archived.
    pub async fn handle_transfer_message(
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
            archived: false,
            logs: Vec::new(),
        };
        let (outcomes, failures) = match self.archive_message(text).await {
            Ok(results) => results,
            Err(reason) => {
                tracing::error!(reason = %redact::reason(&reason), "transfer message can never be processed; it will end in the poison queue");
                answer.logs.push(format!("permanent: {reason}"));
                return answer;
            }
        };
        answer
            .logs
            .extend(outcomes.iter().map(|o| format!("{o:?}")));
        for (_, e) in &failures {
            let kind = if e.disposition == Disposition::Drop {
                "permanent"
            } else {
                "transient"
            };
            // The message already names the chunk (or its blob, which holds the document id).
            answer.logs.push(format!("{kind}: {}", e.message));
        }
        answer.archived = failures.is_empty();
        if answer.archived {
            tracing::info!(chunks = outcomes.len(), "transfer message done");
        } else {
            tracing::warn!(
                failed = failures.len(),
                "transfer message failed; it will be tried again"
            );
        }
        answer
    }
}

/// The result of one transfer queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferAnswer {
    /// Every chunk is archived: the message may be deleted.
    pub archived: bool,
    /// One line per chunk (or the reason the message is unusable), for the host's log.
    pub logs: Vec<String>,
}

/// Hands every job to `archiver`, `concurrency` at a time, and sorts the results.
async fn submit(
    archiver: &dyn ChunkArchiver,
    jobs: Vec<ChunkJob>,
    concurrency: usize,
) -> (Vec<ArchiveOutcome>, Vec<(ChunkJob, ArchiveError)>) {
    let results: Vec<_> = stream::iter(jobs)
        .map(|job| async move {
            let span = tracing::info_span!(
                "chunk",
                event_id = %redact::id(&job.event_id),
                document_id = %redact::id(&job.document_id),
                chunk = job.index,
            );
            let result = archiver.archive(job.clone()).instrument(span).await;
            (job, result)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for (job, result) in results {
        match result {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                let (event_id, document_id) =
                    (redact::id(&job.event_id), redact::id(&job.document_id));
                let error = redact::reason(&e.message);
                if e.disposition == Disposition::Drop {
                    tracing::error!(%event_id, %document_id, chunk = job.index, %error, "recording chunk can never be archived as sent");
                } else {
                    tracing::warn!(%event_id, %document_id, chunk = job.index, %error, "recording chunk not archived yet; asking to be tried again");
                }
                failures.push((job, e));
            }
        }
    }
    (outcomes, failures)
}

/// Reads a transfer queue message: the [`ChunkJob`] JSON the webhook enqueues, or a raw Event
/// Grid / CloudEvents event (or an array of them), for subscriptions that deliver straight to
/// the queue with `messageEncoding: none`. Events of other types give no jobs. An error says
/// why the message can never be processed.
pub fn parse_transfer_message(text: &str) -> Result<Vec<ChunkJob>, String> {
    let value: Value = match serde_json::from_str(text.trim()) {
        Ok(v) => v,
        // Base64 text, as the host keeps it in the poison queue (replayed by hand).
        Err(e) => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or_else(|| format!("message is not JSON: {e}"))?,
    };
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut jobs = Vec::new();
    for item in &items {
        if item.get("documentId").is_some() && item.get("source").is_some() {
            let job: ChunkJob = serde_json::from_value(item.clone())
                .map_err(|e| format!("malformed transfer job: {e}"))?;
            jobs.push(job);
            continue;
        }
        let event = eventgrid::Event::read(item)
            .map_err(|e| format!("message is neither a transfer job nor an event: {e}"))?;
        match event.kind() {
            EventKind::Recording => {
                let ctx = EventContext {
                    id: event.id,
                    subject: event.subject,
                    time: event.time,
                };
                let parsed =
                    recording::parse_recording_data(ctx, event.data).map_err(|e| e.to_string())?;
                if parsed.jobs.is_empty() {
                    let reasons: Vec<_> = parsed.rejected.iter().map(ToString::to_string).collect();
                    return Err(reasons.join("; "));
                }
                for e in &parsed.rejected {
                    tracing::error!(event_id = %redact::id(event.id), reason = %redact::reason(&e.to_string()), "chunk rejected: it can never be archived as sent");
                }
                jobs.extend(parsed.jobs);
            }
            EventKind::Invalid(reason) => return Err(reason.to_string()),
            _ => tracing::info!(
                event_id = %redact::id(event.id),
                event_type = %redact::id(event.event_type),
                "queued event of another type ignored"
            ),
        }
    }
    Ok(jobs)
}

/// The sorting of one delivery's events.
#[derive(Default)]
struct Triage {
    validation: Option<String>,
    /// Events other than recordings and handshakes that were acknowledged.
    acknowledged: usize,
    jobs: Vec<ChunkJob>,
    seen_chunks: HashSet<String>,
    rejected: Vec<Value>,
}

impl Triage {
    fn add(&mut self, event: eventgrid::Event<'_>) {
        match event.kind() {
            EventKind::Validation { code, url } => {
                tracing::info!(
                    event_id = %redact::id(event.id),
                    // The URL's `token` would let anyone validate the subscription: host only.
                    validation_host = url
                        .and_then(|u| url::Url::parse(u).ok())
                        .and_then(|u| u.host_str().map(str::to_string))
                        .as_deref()
                        .unwrap_or("-"),
                    "answering the subscription validation handshake"
                );
                self.validation.get_or_insert_with(|| code.to_string());
            }
            EventKind::SubscriptionDeletion => {
                tracing::info!(event_id = %redact::id(event.id), "subscription deletion acknowledged");
                self.acknowledged += 1;
            }
            EventKind::Other => {
                tracing::info!(
                    event_id = %redact::id(event.id),
                    event_type = %redact::id(event.event_type),
                    "event of another type acknowledged and ignored"
                );
                self.acknowledged += 1;
            }
            EventKind::Invalid(reason) => self.reject_event(&event, reason.to_string()),
            EventKind::Recording => {
                let ctx = EventContext {
                    id: event.id,
                    subject: event.subject,
                    time: event.time,
                };
                match recording::parse_recording_data(ctx, event.data) {
                    Err(e) => self.reject_event(&event, e.to_string()),
                    Ok(parsed) => {
                        for e in parsed.rejected {
                            self.reject_event(&event, e.to_string());
                        }
                        for job in parsed.jobs {
                            // The same chunk twice in one batch (a duplicate delivery folded
                            // into the batch) is archived once.
                            if self.seen_chunks.insert(job.document_id.clone()) {
                                self.jobs.push(job);
                            } else {
                                tracing::info!(event_id = %redact::id(&job.event_id), document_id = %redact::id(&job.document_id), "duplicate chunk in this delivery skipped");
                            }
                        }
                    }
                }
            }
        }
    }

    fn reject_event(&mut self, event: &eventgrid::Event<'_>, reason: String) {
        let raw = json!({"id": event.id, "eventType": event.event_type, "subject": event.subject, "data": event.data});
        self.reject(None, Some(event.id), reason, &raw);
    }

    /// Logs a rejected event with its id and reason, and enough of the event (clipped, URL
    /// queries redacted) to recognise it in the sender's copy.
    fn reject(&mut self, position: Option<usize>, id: Option<&str>, reason: String, raw: &Value) {
        tracing::error!(event_id = %redact::id(id.unwrap_or("-")), reason = %redact::reason(&reason), event = %redact::event(raw), "event rejected: it can never be processed as sent");
        let mut entry = json!({ "reason": reason });
        if let Some(position) = position {
            entry["position"] = json!(position);
        }
        if let Some(id) = id {
            entry["id"] = json!(id);
        }
        self.rejected.push(entry);
    }

    fn answer(
        self,
        events: usize,
        outcomes: Vec<ArchiveOutcome>,
        failures: Vec<(ChunkJob, ArchiveError)>,
    ) -> WebhookResponse {
        let retry: Vec<_> = failures
            .iter()
            .filter(|(_, e)| e.disposition == Disposition::Retry)
            .collect();
        if !retry.is_empty() {
            return WebhookResponse::json(
                503,
                json!({
                    "error": format!("{} recording chunk(s) could not be handed over yet; deliver again", retry.len()),
                    "chunks": retry.iter().map(|(j, e)| json!({"documentId": j.document_id, "index": j.index, "reason": e.message})).collect::<Vec<_>>(),
                }),
            );
        }
        let dropped: Vec<Value> = failures
            .iter()
            .map(|(j, e)| json!({"id": j.event_id, "documentId": j.document_id, "index": j.index, "reason": e.message}))
            .collect();
        // Something was processed if a handshake was answered, a non-recording event was
        // acknowledged, or any chunk was handed over. Otherwise every event was rejected or
        // dropped, and only then is the delivery itself refused.
        let processed = self.validation.is_some() || self.acknowledged > 0 || !outcomes.is_empty();
        let mut rejected = self.rejected;
        rejected.extend(dropped);
        if !processed {
            return WebhookResponse::json(
                400,
                json!({
                    "error": "no event in this delivery can be processed",
                    "rejected": rejected,
                }),
            );
        }
        let count = |f: fn(&ArchiveOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
        let mut body = json!({
            "events": events,
            "chunks": {
                "archived": count(|o| matches!(o, ArchiveOutcome::Archived { .. })),
                "alreadyArchived": count(|o| matches!(o, ArchiveOutcome::AlreadyArchived)),
                "enqueued": count(|o| matches!(o, ArchiveOutcome::Enqueued)),
            },
            "rejected": rejected,
        });
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
}
