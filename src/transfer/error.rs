//! [`TransferError`]: why a chunk was not archived, and what the caller must do about it.

use crate::acs::ChunkRefusal;
use crate::disposition::Disposition;

/// Why a chunk was not archived. Each variant knows what the caller must do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransferError {
    /// Reading from ACS failed (after the client's own retries).
    #[error("chunk {index} ({document_id}): download: {message}")]
    Download {
        /// Chunk index.
        index: u32,
        /// Chunk document id.
        document_id: String,
        /// What the ACS client reported (no secrets).
        message: String,
        /// What the ACS client classified it as.
        disposition: Disposition,
        /// The HTTP status ACS answered with, if it answered.
        status: Option<u16>,
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
    #[error("blob {blob}: {message}")]
    Storage {
        /// Blob name.
        blob: String,
        /// What the Blob client reported, with the service's request id.
        message: String,
        /// What the Blob client classified it as.
        disposition: Disposition,
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
            TransferError::Download { disposition, .. }
            | TransferError::Storage { disposition, .. } => *disposition,
            // A short body that slipped past the download's own checks: try again.
            TransferError::SizeMismatch { .. } => Disposition::Retry,
            TransferError::Refused { .. }
            | TransferError::Conflict { .. }
            | TransferError::TooManyBlocks { .. } => Disposition::Drop,
        }
    }

    /// ACS answered 404: the recording is gone (deleted, or past its retention).
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(
            self,
            TransferError::Download {
                status: Some(404),
                ..
            }
        )
    }
}
