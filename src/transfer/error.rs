//! [`TransferError`]: why a chunk was not archived, and what the caller must do about it.

use crate::acs::{AcsError, ChunkRefusal};
use crate::disposition::Disposition;
use crate::queue::QueueError;
use crate::storage::StorageError;

/// Why a chunk was not archived. Each variant knows what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading from ACS failed (after the client's own retries).
    #[error("chunk {index} ({document_id}): download: {source}")]
    Download {
        /// Chunk index.
        index: u32,
        /// Chunk document id.
        document_id: String,
        /// What the ACS client reported (no secrets), with its status and request id.
        #[source]
        source: Box<AcsError>,
    },
    /// The chunk's URLs can never be requested; nothing was sent.
    #[error("chunk {index} ({document_id}): {reason}")]
    Refused {
        /// Chunk index.
        index: u32,
        /// Chunk document id.
        document_id: String,
        /// Which URL, and why.
        reason: Box<ChunkRefusal>,
    },
    /// A Blob Storage call failed (after the client's own retries).
    #[error("blob {blob}: {source}")]
    Storage {
        /// Blob name.
        blob: String,
        /// What the Blob client reported, with the status, error code and request id.
        #[source]
        source: Box<StorageError>,
    },
    /// The recording's manifest exists, but its writer has not confirmed its notification yet
    /// (it may still be sending it): try again later.
    #[error("manifest {manifest}: its writer has not confirmed the notification yet")]
    NotificationPending {
        /// The manifest blob.
        manifest: String,
    },
    /// The "recording archived" message could not be put on `ARCHIVED_NOTIFY_QUEUE`.
    #[error("manifest {manifest}: notification: {source}")]
    Notify {
        /// The manifest blob.
        manifest: String,
        /// What the Queue client reported.
        #[source]
        source: Box<QueueError>,
    },
    /// WORM settings, and a container that cannot hold WORM blobs: every write would be
    /// refused, so the chunk waits (retried) until the container or the settings are fixed.
    #[error("container `{container}` does not support version-level immutability, which TRANSFER_IMMUTABILITY_DAYS and TRANSFER_LEGAL_HOLD need; enable it on the container or account, or unset them")]
    WormUnsupported {
        /// The container.
        container: String,
    },
    /// A block upload task died (a panic): nothing says the chunk is at fault, so try again.
    #[error("blob {blob}: the block upload task failed: {source}")]
    Task {
        /// Blob name.
        blob: String,
        /// How it ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The pipeline stopped short of the whole chunk: a block never reached the hash, or the
    /// staging stopped under a reader. Transient; the next attempt keeps what was staged.
    #[error("blob {blob}: {reason}")]
    Incomplete {
        /// Blob name.
        blob: String,
        /// What stopped short.
        reason: &'static str,
    },
    /// The bytes read do not add up to what ACS announced.
    #[error("chunk {index} ({document_id}): expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Chunk index.
        index: u32,
        /// Chunk document id.
        document_id: String,
        /// Bytes ACS announced.
        expected: u64,
        /// Bytes received or committed.
        actual: u64,
    },
    /// A blob with our name exists but was not archived from this chunk's source: the event
    /// names the same chunk as an earlier one but another recording object (or the blob is
    /// foreign). Nothing is overwritten and nothing is deleted from ACS.
    #[error("archive conflict: blob {blob} holds {recorded}, but this job's source is {expected}; nothing overwritten, nothing deleted from ACS")]
    Conflict {
        /// Blob name.
        blob: String,
        /// What the blob records about its source.
        recorded: String,
        /// This job's source.
        expected: String,
    },
    /// The chunk has more blocks than Blob Storage allows (50,000).
    #[error("chunk {index}: {bytes} bytes need {blocks} blocks of {block_bytes} bytes, over the 50,000-block limit; raise TRANSFER_BLOCK_BYTES")]
    TooManyBlocks {
        /// Chunk index.
        index: u32,
        /// Chunk size.
        bytes: u64,
        /// Block size in use.
        block_bytes: usize,
        /// Blocks needed.
        blocks: u64,
    },
}

impl TransferError {
    /// What the caller must do.
    pub fn disposition(&self) -> Disposition {
        match self {
            TransferError::Download { source, .. } => source.disposition(),
            TransferError::Storage { source, .. } => source.disposition(),
            TransferError::Notify { source, .. } => source.disposition(),
            TransferError::NotificationPending { .. } | TransferError::WormUnsupported { .. } => {
                Disposition::Retry
            }
            // A short body that slipped past the download's own checks: try again.
            TransferError::SizeMismatch { .. }
            | TransferError::Task { .. }
            | TransferError::Incomplete { .. } => Disposition::Retry,
            TransferError::Refused { .. }
            | TransferError::Conflict { .. }
            | TransferError::TooManyBlocks { .. } => Disposition::Drop,
        }
    }

    /// The HTTP status of the service that failed, when one answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            TransferError::Download { source, .. } => source.status(),
            TransferError::Storage { source, .. } => source.status(),
            _ => None,
        }
    }

    /// The failing service's request id (`x-ms-request-id`), for a support case.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            TransferError::Download { source, .. } => source.request_id(),
            TransferError::Storage { source, .. } => source.request_id(),
            _ => None,
        }
    }

    /// ACS answered 404: the recording is gone (deleted, or past its retention).
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, TransferError::Download { source, .. } if source.status() == Some(404))
    }
}
