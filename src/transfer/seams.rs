//! The pipeline's two remote sides as traits, so the algorithm runs on in-memory fakes in
//! tests: [`ChunkReader`] (ACS) and [`BlockStore`] (Blob Storage). `adapters.rs` implements
//! them on the real clients.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use url::Url;

use super::TransferError;
use crate::acs::{ByteRange, Deleted, UrlPolicy};
use crate::blob::BlockId;
use crate::catalog::tags::BlobTags;
use crate::recording::ChunkJob;
use crate::storage::Payload;
use futures_util::future::BoxFuture;

/// The media stream from ACS, from some offset.
pub(crate) struct SourceStream {
    /// Length of the whole chunk, as ACS reports it.
    pub total_len: u64,
    /// The byte the stream starts at.
    pub offset: u64,
    /// `Content-Type` of the response, if any.
    pub content_type: Option<String>,
    /// The bytes.
    pub body: BoxStream<'static, Result<Bytes, TransferError>>,
}

/// Where a chunk's bytes come from.
pub(crate) trait ChunkReader: Send + Sync {
    /// The checks every URL passes before it is requested.
    fn urls(&self) -> &UrlPolicy;
    /// Opens `range` of the media.
    fn open<'a>(
        &'a self,
        job: &'a ChunkJob,
        media: &'a Url,
        range: ByteRange,
    ) -> BoxFuture<'a, Result<SourceStream, TransferError>>;
    /// Fetches the (small) metadata document.
    fn metadata<'a>(
        &'a self,
        job: &'a ChunkJob,
        url: &'a Url,
    ) -> BoxFuture<'a, Result<Bytes, TransferError>>;
    /// Deletes the recording chunk at `url` (its `deleteLocation`); already gone is success.
    fn delete<'a>(
        &'a self,
        job: &'a ChunkJob,
        url: &'a Url,
    ) -> BoxFuture<'a, Result<Deleted, TransferError>>;
}

/// A committed blob, as far as the pipeline cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StoredBlob {
    /// Its length.
    pub content_length: u64,
    /// Its `x-ms-meta-*` values (lower-case names).
    pub metadata: Vec<(String, String)>,
}

/// How a create-only write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    /// We created the blob.
    Created,
    /// It already existed (an earlier or concurrent attempt won).
    AlreadyExists,
}

/// Where blocks go.
pub(crate) trait BlockStore: Send + Sync {
    /// The committed blob's properties, or `None` if there is no committed blob.
    fn properties<'a>(
        &'a self,
        blob: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredBlob>, TransferError>>;
    /// Uncommitted blocks of `blob` as `(id, size)`.
    fn uncommitted_blocks<'a>(
        &'a self,
        blob: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(BlockId, u64)>, TransferError>>;
    /// Stages one block, its parts sent as they are.
    fn stage_block<'a>(
        &'a self,
        blob: &'a str,
        id: BlockId,
        data: Payload,
        md5: Option<[u8; 16]>,
    ) -> BoxFuture<'a, Result<(), TransferError>>;
    /// Commits `ids` in order, create-only, with the blob's content type, metadata and index
    /// tags.
    fn commit<'a>(
        &'a self,
        blob: &'a str,
        ids: Vec<BlockId>,
        content_type: &'a str,
        metadata: Vec<(String, String)>,
        tags: BlobTags,
    ) -> BoxFuture<'a, Result<Committed, TransferError>>;
    /// Writes a small blob in one request, create-only, with its index tags.
    fn put_small<'a>(
        &'a self,
        blob: &'a str,
        body: Bytes,
        content_type: &'a str,
        tags: BlobTags,
    ) -> BoxFuture<'a, Result<Committed, TransferError>>;
    /// Reads a small blob (a record, a manifest) of at most `max_bytes`; `None` if there is
    /// none.
    fn read_small<'a>(
        &'a self,
        blob: &'a str,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Option<Bytes>, TransferError>>;
}
