//! The archive record, `<media>.json`: the ACS metadata document beside what we know about the
//! copy (source, size, SHA-256, timing), so the archive explains itself without this program.

use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use super::StoredBlob;
use crate::acs::RecordingObject;
use crate::clock::Clock;
use crate::config::TransferSettings;
use crate::recording::{BlobNames, ChunkJob, MediaFormat};

/// How the media blob a record describes came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Provenance {
    /// This attempt copied it: `reused_bytes` of it in blocks earlier attempts staged,
    /// wherever they sit, all blocks before `resumed_from` among them; with the chunk's
    /// SHA-256 when it was computed (a resumed chunk's too: its staged blocks are read again
    /// for the hash).
    Copied {
        resumed_from: u64,
        reused_bytes: u64,
        sha256: Option<String>,
    },
    /// An earlier attempt committed it and a crash lost its record: what the blob's metadata
    /// says is all there is.
    Found,
}

/// When an attempt started: the wall-clock time for the record, the monotonic one for its
/// duration.
#[derive(Debug, Clone, Copy)]
pub(super) struct Started {
    at: SystemTime,
    instant: Instant,
}

impl Started {
    pub(super) fn now(clock: &dyn Clock) -> Started {
        Started {
            at: clock.now(),
            instant: Instant::now(),
        }
    }

    pub(super) fn elapsed_ms(&self) -> u64 {
        self.instant.elapsed().as_millis() as u64
    }
}

/// Everything one archive record says.
pub(super) struct ArchiveRecord<'a> {
    pub(super) job: &'a ChunkJob,
    pub(super) names: &'a BlobNames,
    pub(super) format: MediaFormat,
    pub(super) stored: &'a StoredBlob,
    pub(super) source: &'a RecordingObject,
    pub(super) acs_metadata: Option<Value>,
    pub(super) provenance: Provenance,
    pub(super) started: Started,
}

impl ArchiveRecord<'_> {
    /// The record as JSON, finished at `finished_at`.
    pub(super) fn into_json(self, settings: &TransferSettings, finished_at: SystemTime) -> Value {
        let ArchiveRecord {
            job,
            names,
            format,
            stored,
            source,
            acs_metadata,
            provenance,
            started,
        } = self;
        let (resumed_from, reused_bytes, sha256) = match provenance {
            Provenance::Copied {
                resumed_from,
                reused_bytes,
                sha256,
            } => (Some(resumed_from), Some(reused_bytes), sha256),
            Provenance::Found => (None, None, stored.recorded_sha256().map(str::to_string)),
        };
        let sha_note = sha256
            .is_none()
            .then_some("not computed (TRANSFER_SHA256=false)");
        json!({
            "acsMetadata": acs_metadata,
            "archive": {
                "archiver": concat!("recording-archiver/", env!("CARGO_PKG_VERSION")),
                "sourceEventId": job.event_id,
                "documentId": job.document_id,
                "source": {"host": source.host, "objectId": source.id},
                "chunkIndex": job.index,
                "chunkCount": job.chunk_count,
                "endReason": job.end_reason,
                "call": job.call,
                "recordingStartTime": job.recording_start_time,
                "mediaBlob": names.media,
                "contentType": format.content_type,
                "sizeBytes": stored.content_length,
                "sha256": sha256,
                "sha256Note": sha_note,
                "resumedFromByte": resumed_from,
                "reusedStagedBytes": reused_bytes,
                "parallelRanges": settings.parallel_ranges,
                "blockBytes": settings.block_bytes,
                "contentMd5PerBlock": settings.content_md5,
                "startedAt": rfc3339(started.at),
                "finishedAt": rfc3339(finished_at),
                "durationMs": started.elapsed_ms(),
            }
        })
    }
}

pub(super) fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
