//! After a chunk is archived: the recording's manifest, once every chunk is, and its one
//! `ARCHIVED_NOTIFY_QUEUE` message (see [`crate::catalog::manifest`] for the model).
//!
//! Who writes: each job, after writing its own record, looks for every sibling's media
//! (committed whole, from that sibling's document) and record. Records are written before the
//! look, so the last chunk to finish sees all of them, whatever the order. It writes the
//! manifest create-only: of several finishers (the last two chunks at once, duplicates of the
//! last chunk) exactly one write succeeds, and only that one sends the notification.
//!
//! The crash window: the winner sends, then writes `manifest-<id>.notified.json` create-only. Anyone
//! who finds the manifest without that marker waits a moment for the winner's marker; when the
//! manifest is older than [`NOTIFY_GRACE`] the winner must have stopped between its write and
//! its marker (its own job is then redelivered after the queue's lease, or Event Grid's
//! retry), and the finder sends the message itself. So: exactly one message under duplicate
//! and concurrent deliveries; after a crash in that window, one or (when the message went out
//! but the marker did not) two copies with the same `notificationId`.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::record::rfc3339;
use super::{Committed, StoredBlob, Transfer, TransferError};
use crate::blob::BlobClient;
use crate::catalog::manifest::{self, Manifest, ManifestChunk, MAX_RECORD_BYTES};
use crate::catalog::tags::{BlobKind, BlobTags};
use crate::queue::QueueClient;
use crate::recording::{BlobNames, ChunkJob};
use futures_util::future::BoxFuture;

/// How old a manifest without its notification marker must be before another finisher sends
/// the notification: far longer than a Put Message's retries (10 s) and a marker write.
pub const NOTIFY_GRACE: Duration = Duration::from_secs(120);
/// How long a finisher that lost the manifest race waits for the winner's marker before it
/// asks to be tried again.
const MARKER_WAIT: Duration = Duration::from_secs(10);
const MARKER_POLL: Duration = Duration::from_millis(200);
/// Largest manifest read back (1,000 chunks with their ACS lists stay well below).
const MAX_MANIFEST_BYTES: usize = 8 * 1024 * 1024;

/// Where "recording archived" messages go.
pub trait Notifier: Send + Sync {
    /// Sends one message announcing `manifest` (its blob name and its document).
    fn notify<'a>(
        &'a self,
        blob: &'a str,
        manifest: &'a Value,
    ) -> BoxFuture<'a, Result<(), TransferError>>;
}

/// [`Notifier`] on a Storage queue (`ARCHIVED_NOTIFY_QUEUE`).
#[derive(Debug, Clone)]
pub struct QueueNotifier {
    queue: QueueClient,
    blobs: BlobClient,
}

impl QueueNotifier {
    /// Messages on `queue`, naming manifests in `blobs`' container.
    pub fn new(queue: QueueClient, blobs: BlobClient) -> Self {
        QueueNotifier { queue, blobs }
    }
}

impl Notifier for QueueNotifier {
    fn notify<'a>(
        &'a self,
        blob: &'a str,
        manifest: &'a Value,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async move {
            let url = self
                .blobs
                .blob_url(blob)
                .map(|u| u.to_string())
                .unwrap_or_default();
            let message = manifest::notification(manifest, self.blobs.container(), blob, &url);
            self.queue
                .put_message(&message.to_string())
                .await
                .map(drop)
                .map_err(|e| TransferError::Notify {
                    manifest: blob.to_string(),
                    source: Box::new(e),
                })
        })
    }
}

impl Transfer {
    /// Writes the recording's manifest if every chunk is archived and it is not written yet,
    /// and sends its notification once. A transient failure is an error: the job is tried
    /// again, finds its chunk archived, and finishes here.
    pub(super) async fn finish_recording(&self, job: &ChunkJob) -> Result<(), TransferError> {
        if !manifest::has_complete_siblings(job) {
            tracing::debug!(document_id = %job.document_id, "no complete chunk list: no manifest for this recording");
            return Ok(());
        }
        let Some(name) = manifest::manifest_name(job, &self.template) else {
            return Ok(());
        };
        if let Some(existing) = self.store.read_small(&name, MAX_MANIFEST_BYTES).await? {
            return self.notify_once(&name, &existing, false).await;
        }
        // Highest index first: chunks tend to finish in order, so an early finisher stops at
        // its first look instead of walking the whole list.
        let mut siblings: Vec<_> = job.siblings.iter().collect();
        siblings.sort_by_key(|s| std::cmp::Reverse(s.index));
        let mut found = Vec::with_capacity(siblings.len());
        for sibling in siblings {
            let sibling_job = job.for_sibling(sibling);
            let archived = match self.archived_sibling(&sibling_job).await? {
                Some((names, media)) if self.store.properties(&names.record).await?.is_some() => {
                    (names, media)
                }
                _ => {
                    tracing::debug!(waiting_for = %sibling.document_id, chunk = sibling.index, "recording not fully archived yet: no manifest");
                    return Ok(());
                }
            };
            found.push((sibling, archived));
        }
        let mut chunks = Vec::with_capacity(found.len());
        for (sibling, (names, media)) in found {
            let Some(record) = self
                .store
                .read_small(&names.record, MAX_RECORD_BYTES)
                .await?
            else {
                return Ok(());
            };
            let chunk = ManifestChunk::from_record(
                sibling.index,
                &sibling.document_id,
                &names.media,
                &names.record,
                media.content_length,
                media.recorded_sha256().map(str::to_string),
                &record,
            );
            match chunk {
                Ok(chunk) => chunks.push(chunk),
                Err(reason) => {
                    tracing::error!(%reason, "a chunk record cannot be read: no manifest for this recording");
                    return Ok(());
                }
            }
        }
        let manifest = Manifest::build(job, chunks, rfc3339(self.clock.now()));
        let document = serde_json::to_value(&manifest).unwrap_or_default();
        let body = Bytes::from(serde_json::to_vec_pretty(&document).unwrap_or_default());
        let tags = BlobTags::for_recording(job, BlobKind::Manifest);
        match self
            .store
            .put_small(&name, body.clone(), "application/json", tags)
            .await?
        {
            Committed::Created => {
                tracing::info!(manifest = %name, chunks = manifest.chunk_count, bytes = manifest.total_bytes, "recording complete: manifest written");
                self.notify_once(&name, &body, true).await
            }
            Committed::AlreadyExists => {
                let existing = self
                    .store
                    .read_small(&name, MAX_MANIFEST_BYTES)
                    .await?
                    .unwrap_or(body);
                self.notify_once(&name, &existing, false).await
            }
        }
    }

    /// A sibling's media blob and names, when it is committed whole from that sibling's
    /// document. Without a format in the event, each known extension is tried.
    async fn archived_sibling(
        &self,
        sibling: &ChunkJob,
    ) -> Result<Option<(BlobNames, StoredBlob)>, TransferError> {
        for format in super::name_formats(sibling) {
            let names = sibling.blob_names(&self.template, format);
            if let Some(media) = self.store.properties(&names.media).await? {
                let ours = media.is_complete()
                    && media.archived_document() == Some(sibling.document_id.as_str());
                return Ok(ours.then_some((names, media)));
            }
        }
        Ok(None)
    }

    /// Sends the notification for manifest `name` unless its marker says it was sent. `won`:
    /// this call wrote the manifest; otherwise the writer is given time to send it.
    async fn notify_once(
        &self,
        name: &str,
        manifest: &[u8],
        won: bool,
    ) -> Result<(), TransferError> {
        let Some(notifier) = &self.notifier else {
            return Ok(());
        };
        let marker = manifest::notified_marker(name);
        if !won {
            if self.marker_appears(&marker).await? {
                return Ok(());
            }
            let written = manifest::written_at(manifest);
            let age = written.map(|t| {
                let now = time::OffsetDateTime::from(self.clock.now());
                (now - t).unsigned_abs()
            });
            if age.is_none_or(|age| age < NOTIFY_GRACE) {
                return Err(TransferError::NotificationPending {
                    manifest: name.to_string(),
                });
            }
            tracing::warn!(manifest = %name, "manifest without a notification marker: its writer stopped before confirming; sending the notification (a consumer may see this notificationId twice)");
        }
        let document: Value = serde_json::from_slice(manifest).unwrap_or_default();
        notifier.notify(name, &document).await?;
        let note = serde_json::json!({"manifest": name, "notifiedAt": rfc3339(self.clock.now())});
        self.store
            .put_small(
                &marker,
                Bytes::from(note.to_string()),
                "application/json",
                BlobTags::default(),
            )
            .await?;
        tracing::info!(manifest = %name, "recording archived: notification sent");
        Ok(())
    }

    /// Whether `marker` exists now or appears within [`MARKER_WAIT`].
    async fn marker_appears(&self, marker: &str) -> Result<bool, TransferError> {
        let deadline = tokio::time::Instant::now() + MARKER_WAIT;
        loop {
            if self.store.properties(marker).await?.is_some() {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(MARKER_POLL).await;
        }
    }
}
