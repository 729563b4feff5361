//! `DELETE_AFTER_ARCHIVE`: free a recording in ACS once every one of its chunks is archived.
//!
//! Chunks of one recording are transferred independently (one queue message each), so each
//! finished chunk checks whether all its siblings' media blobs are committed whole and their
//! records written; the last one
//! to finish sends the signed DELETE for every chunk. Two chunks finishing at once may both
//! delete: a DELETE of something already deleted is success. Never before, and never on a
//! partial archive: a recording whose event held an unreadable chunk has no sibling list and
//! is left to ACS's own 24 h retention.

use super::{Transfer, TransferError};
use crate::disposition::Disposition;
use crate::recording::{ChunkJob, MediaFormat};

impl Transfer {
    /// Deletes the recording from ACS if all its chunks are archived. A transient failure is an
    /// error (the job is tried again, finds the chunk archived, and retries the delete); a
    /// permanent one is logged and left to ACS's retention.
    pub(super) async fn release_recording(&self, job: &ChunkJob) -> Result<(), TransferError> {
        let deletes: Option<Vec<_>> = job.siblings.iter().map(|s| s.delete.as_ref()).collect();
        let Some(deletes) = deletes.filter(|d| !d.is_empty()) else {
            tracing::debug!(document_id = %job.document_id, "no complete set of delete locations; recording left to ACS retention");
            return Ok(());
        };
        // Siblings are named like this chunk; GA events (the only ones with delete
        // locations) name their format.
        let format = MediaFormat::infer(
            job.format_type.as_deref(),
            None,
            job.content_type.as_deref(),
            None,
        );
        if format == MediaFormat::UNKNOWN {
            tracing::warn!(document_id = %job.document_id, "recording format unknown; not deleting from ACS");
            return Ok(());
        }
        for sibling in &job.siblings {
            let names = job.for_sibling(sibling).blob_names(&self.template, format);
            match self.store.properties(&names.media).await? {
                Some(blob) if blob.is_complete() => {}
                _ => {
                    tracing::debug!(waiting_for = %names.media, "recording not fully archived yet; not deleting");
                    return Ok(());
                }
            }
            // The record holds the ACS metadata document, which cannot be fetched after the
            // delete: a chunk whose record is not written yet is not archived yet.
            if self.store.properties(&names.record).await?.is_none() {
                tracing::debug!(waiting_for = %names.record, "recording not fully archived yet; not deleting");
                return Ok(());
            }
        }
        for (sibling, url) in job.siblings.iter().zip(deletes) {
            match self.reader.delete(&job.for_sibling(sibling), url).await {
                Ok(()) => {}
                Err(e) if e.disposition() == Disposition::Retry => return Err(e),
                Err(e) => {
                    tracing::error!(document_id = %sibling.document_id, error = %e, "could not delete the recording chunk from ACS; it expires after 24 h")
                }
            }
        }
        tracing::info!(
            chunks = job.siblings.len(),
            "every chunk archived and verified: recording deleted from ACS"
        );
        Ok(())
    }
}
