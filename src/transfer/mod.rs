//! One chunk from ACS into Blob Storage: parallel ranged downloads -> fixed-size blocks -> a
//! bounded number of Put Blocks in flight -> one create-only commit. Exactly once per chunk,
//! resumable after a crash, in memory bounded by
//! [`TransferSettings::max_blocks_in_memory`] blocks per chunk.
//!
//! The recipe (`docs/protocols.md` §5.7):
//! 0. Check the chunk's URLs ([`UrlPolicy::check_chunk`](crate::acs::UrlPolicy::check_chunk)):
//!    the recording object they name is the chunk's *source*, recorded on the blob and
//!    compared on every later delivery.
//! 1. Name the blobs deterministically from the chunk ([`ChunkJob::blob_names`]); block ids
//!    are deterministic too (the block's index, tagged with the source), so every attempt at a
//!    chunk writes the same names and never reuses blocks staged from another source.
//! 2. Look in the container first, before asking ACS anything: if the media blob is committed
//!    whole from the same source, stop: already archived (a chunk ACS deleted after an earlier
//!    delivery archived it is still a success). Committed from another source: a conflict,
//!    permanent, and nothing is deleted.
//! 3. Otherwise read the uncommitted blocks and keep every one whose id and size match,
//!    wherever it sits; plan ranged reads of the missing runs (`plan.rs`).
//! 4. Read the ranges `parallel_ranges` at a time and stage their blocks (`pump.rs`), then
//!    commit with `If-None-Match: *` and the source in the blob's
//!    metadata. A concurrent duplicate that commits first makes ours answer "already exists",
//!    which is success once its source, size and SHA-256 (when both are known) match.
//! 5. Check the committed size against what ACS reported, then write `<media>.json`: the ACS
//!    metadata document and our archive record.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`Transfer`]: the recipe's steps 0-2 and the record a crash lost |
//! | `error.rs` | [`TransferError`] and its [`Disposition`](crate::disposition::Disposition) |
//! | `seams.rs` | the two remote sides as traits (`ChunkReader`, `BlockStore`), so the algorithm is tested on in-memory fakes |
//! | `adapters.rs` | those traits on the real clients ([`AcsChunkReader`], [`BlobBlockStore`]) |
//! | `copy.rs` | steps 3-5: resume point, commit, size check, record |
//! | `plan.rs` | which blocks are kept, which ranges to read (pure) |
//! | `pump.rs` | ranges read in parallel (each next one asked for ahead), cut into blocks without copying, staged a bounded number at a time |
//! | `blocks.rs` | block ids and the block-count limit |
//! | `hash.rs` | the chunk's SHA-256 in block order on its own thread, blocks' `Content-MD5` |
//! | `origin.rs` | what a media blob records about its source, and the check against a job |
//! | `record.rs` | the archive record `<media>.json` and its `Provenance` |
//! | `finish.rs` | the recording's manifest once all of it is archived, and its one notification |
//! | `release.rs` | `DELETE_AFTER_ARCHIVE`: freeing a recording in ACS once all of it is archived |

mod adapters;
mod blocks;
mod copy;
mod error;
mod finish;
mod hash;
mod origin;
mod plan;
mod pump;
mod record;
mod release;
mod seams;
#[cfg(test)]
mod tests;

pub use adapters::{AcsChunkReader, BlobBlockStore};
pub use error::TransferError;
pub use finish::{Notifier, QueueNotifier};
pub(crate) use seams::{BlockStore, ChunkReader, Committed, SourceStream, StoredBlob};

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::acs::CheckedChunk;
use crate::catalog::tags::{BlobKind, BlobTags};
use crate::clock::Clock;
use crate::config::{BlobNameTemplate, TransferSettings};
use crate::recording::{BlobNames, ChunkJob, FormatHints, MediaFormat};
use origin::ArchiveSource;
use record::{ArchiveRecord, Provenance, Started};

/// What a finished transfer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferReport {
    /// Copied now.
    Archived {
        /// Media blob name.
        blob: String,
        /// Chunk size.
        bytes: u64,
        /// The first byte this attempt staged (the blocks before it were staged already).
        resumed_from: u64,
        /// Hex SHA-256 of the chunk, when computed.
        sha256: Option<String>,
    },
    /// Found complete from an earlier delivery.
    AlreadyArchived {
        /// Media blob name.
        blob: String,
    },
}

/// Archives chunks: the pipeline with its settings.
pub struct Transfer {
    reader: Arc<dyn ChunkReader>,
    store: Arc<dyn BlockStore>,
    settings: TransferSettings,
    template: BlobNameTemplate,
    clock: Arc<dyn Clock>,
    /// Told once per recording when its manifest is first written (`ARCHIVED_NOTIFY_QUEUE`).
    notifier: Option<Arc<dyn Notifier>>,
}

impl Transfer {
    /// Builds the pipeline.
    pub(crate) fn new(
        reader: Arc<dyn ChunkReader>,
        store: Arc<dyn BlockStore>,
        settings: TransferSettings,
        template: BlobNameTemplate,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Transfer {
            reader,
            store,
            settings,
            template,
            clock,
            notifier: None,
        }
    }

    /// Sends one "recording archived" message per recording to `notifier`.
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Archives one chunk (media and record); once all its recording's chunks are archived,
    /// writes the recording's manifest (and sends its notification) and, with
    /// `DELETE_AFTER_ARCHIVE`, frees the recording in ACS. Idempotent, also after the delete:
    /// the container is consulted before ACS, and a 404 from ACS for a chunk archived from the
    /// same source meanwhile is success.
    pub async fn archive(&self, job: &ChunkJob) -> Result<TransferReport, TransferError> {
        let chunk = self
            .reader
            .urls()
            .check_chunk(&job.document_id, &job.source)
            .map_err(|reason| TransferError::Refused {
                index: job.index,
                document_id: job.document_id.clone(),
                reason: Box::new(reason),
            })?;
        if let (true, Some(delete)) = (self.settings.delete_after_archive, &chunk.urls.delete) {
            if let Err(reason) = self.reader.urls().check_delete(delete, &chunk.source) {
                tracing::error!(document_id = %job.document_id, chunk = job.index, %reason, "deleteLocation refused: the recording is archived but will not be deleted from ACS");
            }
        }
        let report = match self.find_archived(job, &chunk).await? {
            Some(report) => report,
            None => match self.copy(job, &chunk).await {
                // ACS no longer has it: a concurrent delivery may have archived and freed it
                // since we looked.
                Err(e) if e.is_not_found() => self.find_archived(job, &chunk).await?.ok_or(e)?,
                other => other?,
            },
        };
        self.finish_recording(job).await?;
        if self.settings.delete_after_archive {
            self.release_recording(job).await?;
        }
        Ok(report)
    }

    /// The chunk's archive, if its media blob is committed: verified to come from this job's
    /// source (a [`TransferError::Conflict`] if not), its record written if a crash lost it.
    /// Asks ACS nothing unless the record must be rewritten.
    async fn find_archived(
        &self,
        job: &ChunkJob,
        chunk: &CheckedChunk,
    ) -> Result<Option<TransferReport>, TransferError> {
        let started = Started::now(&*self.clock);
        let expected = ArchiveSource::of(job, &chunk.source);
        for format in name_formats(job) {
            let names = job.blob_names(&self.template, format);
            let Some(existing) = self.store.properties(&names.media).await? else {
                continue;
            };
            existing.archives(&expected, &names.media)?;
            if self.store.properties(&names.record).await?.is_none() {
                // The media is in; the record was lost to a crash right after the commit.
                let acs_metadata = match self.acs_metadata(job, chunk).await {
                    Err(e) if e.is_not_found() => None,
                    other => other?,
                };
                let record = ArchiveRecord {
                    job,
                    names: &names,
                    format,
                    stored: &existing,
                    source: &chunk.source,
                    acs_metadata,
                    provenance: Provenance::Found,
                    started,
                };
                self.put_record(&names, record).await?;
            }
            tracing::info!(blob = %names.media, source = %chunk.source, "chunk already archived from this source");
            return Ok(Some(TransferReport::AlreadyArchived { blob: names.media }));
        }
        Ok(None)
    }

    /// The chunk's ACS metadata document, parsed (kept as text if it is not JSON).
    async fn acs_metadata(
        &self,
        job: &ChunkJob,
        chunk: &CheckedChunk,
    ) -> Result<Option<Value>, TransferError> {
        let Some(url) = &chunk.urls.metadata else {
            return Ok(None);
        };
        let b = self.reader.metadata(job, url).await?;
        Ok(Some(serde_json::from_slice(&b).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&b).into_owned())
        })))
    }

    /// Writes the record, create-only: a concurrent winner's record stays as it is.
    async fn put_record(
        &self,
        names: &BlobNames,
        record: ArchiveRecord<'_>,
    ) -> Result<(), TransferError> {
        let tags = BlobTags::for_chunk(record.job, record.format, BlobKind::Record);
        let record = record.into_json(&self.settings, self.clock.now());
        let body = Bytes::from(serde_json::to_vec_pretty(&record).unwrap_or_default());
        self.store
            .put_small(&names.record, body, "application/json", tags)
            .await
            .map(|_| ())
    }
}

/// The formats `job`'s media blob may be named with: the event's, or, without one (the
/// extension then came from ACS), each in turn.
fn name_formats(job: &ChunkJob) -> Vec<MediaFormat> {
    let event_format = FormatHints {
        event_format: job.format_type.as_deref(),
        ..FormatHints::default()
    };
    match MediaFormat::infer(event_format) {
        MediaFormat::UNKNOWN => vec![
            MediaFormat::MP4,
            MediaFormat::MP3,
            MediaFormat::WAV,
            MediaFormat::UNKNOWN,
        ],
        known => vec![known],
    }
}
