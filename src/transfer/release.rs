//! `DELETE_AFTER_ARCHIVE`: free a recording in ACS once every one of its chunks is archived.
//!
//! Chunks of one recording are transferred independently (one queue message each), so each
//! finished chunk checks whether all its siblings' media blobs are committed whole *from the
//! objects their delete locations name*, with their records; the last one to finish sends the signed DELETE for
//! every chunk. Two chunks finishing at once may both delete: ACS answers the later one 404,
//! which counts as already deleted. Never before, never for an object whose bytes are not the
//! ones in the container, and never on a partial archive: a recording whose event held an
//! unreadable chunk has no sibling list and is left to ACS's own 24 h retention.
//!
//! The log says "deleted" only for a DELETE answered 2xx; refusals and failures are logged as
//! delete failures.

use super::origin::ArchiveSource;
use super::{Transfer, TransferError};
use crate::acs::{Access, Deleted};
use crate::disposition::Disposition;
use crate::recording::{ChunkJob, FormatHints, MediaFormat};

impl Transfer {
    /// Deletes the recording from ACS if all its chunks are archived and verified. A transient
    /// failure is an error (the job is tried again, finds the chunk archived, and retries the
    /// delete); a permanent one is logged and left to ACS's retention.
    pub(super) async fn release_recording(&self, job: &ChunkJob) -> Result<(), TransferError> {
        let deletes: Option<Vec<_>> = job.siblings.iter().map(|s| s.delete.as_ref()).collect();
        let Some(deletes) = deletes.filter(|d| !d.is_empty()) else {
            tracing::debug!(document_id = %job.document_id, "no complete set of delete locations; recording left to ACS retention");
            return Ok(());
        };
        // Siblings are named like this chunk; GA events (the only ones with delete
        // locations) name their format.
        let format = MediaFormat::infer(FormatHints {
            event_format: job.format_type.as_deref(),
            event_content: job.content_type.as_deref(),
            ..FormatHints::default()
        });
        if format == MediaFormat::UNKNOWN {
            tracing::warn!(document_id = %job.document_id, "recording format unknown; not deleting from ACS");
            return Ok(());
        }
        for (sibling, url) in job.siblings.iter().zip(&deletes) {
            let sibling_job = job.for_sibling(sibling);
            let object = match self.reader.urls().check(url, Access::Delete) {
                Ok(object) => object,
                Err(reason) => {
                    tracing::error!(document_id = %sibling.document_id, %reason, "ACS delete refused: a deleteLocation of this recording may not be requested; nothing deleted, the recording expires after 24 h");
                    return Ok(());
                }
            };
            let names = sibling_job.blob_names(&self.template, format);
            // Archived means media and record: a chunk whose record a crash lost still needs
            // its ACS metadata document to write it.
            let blob = match self.store.properties(&names.media).await? {
                Some(blob)
                    if blob.is_complete()
                        && self.store.properties(&names.record).await?.is_some() =>
                {
                    blob
                }
                _ => {
                    tracing::debug!(waiting_for = %names.media, "recording not fully archived yet; not deleting");
                    return Ok(());
                }
            };
            let expected = ArchiveSource::of(&sibling_job, &object);
            if let Err(recorded) = blob.verify(&expected) {
                tracing::error!(blob = %names.media, %recorded, expected = %expected, "ACS delete refused: the archived bytes are not from the object the deleteLocation names; nothing deleted");
                return Ok(());
            }
        }
        let (mut deleted, mut gone, mut failed) = (0, 0, 0);
        for (sibling, url) in job.siblings.iter().zip(deletes) {
            match self.reader.delete(&job.for_sibling(sibling), url).await {
                Ok(Deleted::Now) => {
                    deleted += 1;
                    tracing::info!(document_id = %sibling.document_id, chunk = sibling.index, "recording chunk deleted from ACS");
                }
                Ok(Deleted::AlreadyGone) => {
                    gone += 1;
                    tracing::debug!(document_id = %sibling.document_id, chunk = sibling.index, "recording chunk already gone from ACS (404)");
                }
                Err(e) if e.disposition() == Disposition::Retry => {
                    tracing::warn!(document_id = %sibling.document_id, chunk = sibling.index, error = %e, "ACS delete failed; the job will be tried again");
                    return Err(e);
                }
                Err(e) => {
                    failed += 1;
                    tracing::error!(document_id = %sibling.document_id, chunk = sibling.index, error = %e, "ACS delete failed; the chunk expires after 24 h");
                }
            }
        }
        if failed > 0 {
            tracing::error!(
                chunks = job.siblings.len(),
                deleted,
                already_gone = gone,
                failed,
                "every chunk archived and verified, but ACS delete failed for some"
            );
        } else if deleted > 0 {
            tracing::info!(
                chunks = job.siblings.len(),
                deleted,
                already_gone = gone,
                "every chunk archived and verified: recording deleted from ACS"
            );
        } else {
            tracing::info!(
                chunks = job.siblings.len(),
                "every chunk archived and verified; the recording was already gone from ACS"
            );
        }
        Ok(())
    }
}
