//! The pipeline's two sides on the real clients: [`AcsChunkReader`] over [`AcsClient`],
//! [`BlobBlockStore`] over [`BlobClient`]. Each wraps its client's error in [`TransferError`]
//! as its source, so the client's own classification, status and request id stay with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use url::Url;

use super::{BlockStore, ChunkReader, Committed, SourceStream, StoredBlob, TransferError};
use crate::acs::{AcsClient, AcsError, ByteRange, Deleted, UrlPolicy};
use crate::blob::{BlobClient, BlobCommitOptions, BlockId, CommitOutcome};
use crate::catalog::tags::BlobTags;
use crate::catalog::write::{archive_headers, TAGS};
use crate::clock::{Clock, SystemClock};
use crate::config::ArchiveSettings;
use crate::recording::ChunkJob;
use crate::storage::{Payload, StorageError};
use futures_util::future::BoxFuture;

/// Reads chunks from ACS.
#[derive(Debug, Clone)]
pub struct AcsChunkReader {
    client: AcsClient,
}

impl AcsChunkReader {
    /// Wraps a client.
    pub fn new(client: AcsClient) -> Self {
        AcsChunkReader { client }
    }
}

fn download_error(job: &ChunkJob, source: AcsError) -> TransferError {
    TransferError::Download {
        index: job.index,
        document_id: job.document_id.clone(),
        source: Box::new(source),
    }
}

impl ChunkReader for AcsChunkReader {
    fn urls(&self) -> &UrlPolicy {
        self.client.urls()
    }

    fn open<'a>(
        &'a self,
        job: &'a ChunkJob,
        media: &'a Url,
        range: ByteRange,
    ) -> BoxFuture<'a, Result<SourceStream, TransferError>> {
        Box::pin(async move {
            let d = self
                .client
                .download_range(media, range)
                .await
                .map_err(|e| download_error(job, e))?;
            let (index, document_id) = (job.index, job.document_id.clone());
            let body = d
                .stream
                .map(move |part| {
                    part.map_err(|source| TransferError::Download {
                        index,
                        document_id: document_id.clone(),
                        source: Box::new(source),
                    })
                })
                .boxed();
            Ok(SourceStream {
                total_len: d.total_len,
                offset: d.offset,
                content_type: d.content_type,
                body,
            })
        })
    }

    fn metadata<'a>(
        &'a self,
        job: &'a ChunkJob,
        url: &'a Url,
    ) -> BoxFuture<'a, Result<Bytes, TransferError>> {
        Box::pin(async move {
            self.client
                .fetch_metadata(url)
                .await
                .map_err(|e| download_error(job, e))
        })
    }

    fn delete<'a>(
        &'a self,
        job: &'a ChunkJob,
        url: &'a Url,
    ) -> BoxFuture<'a, Result<Deleted, TransferError>> {
        Box::pin(async move {
            self.client
                .delete(url)
                .await
                .map_err(|e| download_error(job, e))
        })
    }
}

/// Writes blocks to one Blob container, every blob with its index tags and the tier,
/// encryption scope and WORM settings ([`ArchiveSettings`]).
#[derive(Debug, Clone)]
pub struct BlobBlockStore {
    client: BlobClient,
    archive: ArchiveSettings,
    clock: Arc<dyn Clock>,
    /// Set once the container was seen to support version-level immutability (WORM writes).
    worm_ready: Arc<tokio::sync::OnceCell<()>>,
    /// Set once a write carrying index tags was refused with 403: from then on blobs are
    /// written without tags (see [`BlobBlockStore::write`]).
    tags_refused: Arc<AtomicBool>,
}

impl BlobBlockStore {
    /// Wraps a client; blobs keep the account's and container's defaults.
    pub fn new(client: BlobClient) -> Self {
        BlobBlockStore {
            client,
            archive: ArchiveSettings::default(),
            clock: Arc::new(SystemClock),
            worm_ready: Arc::default(),
            tags_refused: Arc::default(),
        }
    }

    /// Writes every blob as `archive` says; `clock` dates immutability policies.
    pub fn with_archive_settings(
        mut self,
        archive: ArchiveSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        self.archive = archive;
        self.clock = clock;
        self
    }

    /// With WORM settings, that the container can hold WORM blobs: without version-level
    /// immutability the service would refuse every write, and a refusal that looks permanent
    /// must not cost a chunk. So it is checked (once it passes, never again) and a container
    /// that cannot is a failure to retry, with the fix in its message.
    async fn check_worm(&self, blob: &str) -> Result<(), TransferError> {
        if !self.archive.needs_worm() {
            return Ok(());
        }
        self.worm_ready
            .get_or_try_init(|| async {
                let props = self
                    .in_container(blob, || self.client.container_properties())
                    .await?;
                if props.version_level_worm {
                    return Ok(());
                }
                Err(TransferError::WormUnsupported {
                    container: self.client.container().to_string(),
                })
            })
            .await
            .map(drop)
    }

    /// The create-only write options of one blob.
    fn options(
        &self,
        content_type: &str,
        metadata: Vec<(String, String)>,
        tags: &BlobTags,
    ) -> BlobCommitOptions {
        BlobCommitOptions {
            content_type: Some(content_type.to_string()),
            metadata,
            if_none_match_star: true,
            headers: archive_headers(&self.archive, tags, self.clock.now()),
        }
    }

    /// Runs a commit (`write`) with `options`, and once more without index tags when the
    /// service refuses it with 403 while it carried tags. Tags are a search aid: a SAS without
    /// the `t` (tags) permission, or a custom role without `blobs/tags/write`, refuses any write
    /// that sets them, and retrying that write as it is would leave the chunk in ACS until its
    /// 24 h retention deletes it. So the chunk is written untagged (`archiver find` will not
    /// see it; `--prefix` and the manifest still do), and the refusal is logged once at error
    /// with the permission to grant.
    async fn write<F>(
        &self,
        blob: &str,
        mut options: BlobCommitOptions,
        write: impl Fn(BlobCommitOptions) -> F,
    ) -> Result<CommitOutcome, TransferError>
    where
        F: std::future::Future<Output = Result<CommitOutcome, StorageError>>,
    {
        let tagged = |o: &BlobCommitOptions| o.headers.iter().any(|(name, _)| *name == TAGS);
        if self.tags_refused.load(Ordering::Relaxed) {
            options.headers.retain(|(name, _)| *name != TAGS);
        }
        match self.in_container(blob, || write(options.clone())).await {
            Err(TransferError::Storage { source, .. })
                if source.status() == Some(403) && tagged(&options) =>
            {
                options.headers.retain(|(name, _)| *name != TAGS);
                let untagged = self.in_container(blob, || write(options.clone())).await?;
                // Only a write that works without tags shows the tags were what was refused
                // (a bad credential is refused either way, and stays an error).
                if !self.tags_refused.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        blob,
                        status = 403,
                        code = source.error_code().unwrap_or(""),
                        request_id = source.request_id().unwrap_or(""),
                        "the storage credential may not set blob index tags: blobs are written \
                         without them from now on, so `archiver find` will not list them; grant \
                         the SAS the `t` permission or the identity `blobs/tags/write`"
                    );
                }
                Ok(untagged)
            }
            other => other,
        }
    }

    /// Runs `call`; when the container does not exist yet, creates it and runs `call` again.
    /// Creating it lazily keeps start-up free of storage calls, so a storage outage delays
    /// archives instead of stopping the handler.
    async fn in_container<'a, T, F>(
        &'a self,
        blob: &str,
        call: impl Fn() -> F,
    ) -> Result<T, TransferError>
    where
        F: std::future::Future<Output = Result<T, StorageError>> + 'a,
    {
        match call().await {
            Err(e) if e.error_code() == Some("ContainerNotFound") => {
                tracing::info!(
                    container = self.client.container(),
                    "creating the recordings container"
                );
                self.client
                    .create_container()
                    .await
                    .map_err(|e| storage_error(blob, e))?;
                call().await.map_err(|e| storage_error(blob, e))
            }
            other => other.map_err(|e| storage_error(blob, e)),
        }
    }
}

fn storage_error(blob: &str, source: StorageError) -> TransferError {
    TransferError::Storage {
        blob: blob.to_string(),
        source: Box::new(source),
    }
}

fn committed(outcome: CommitOutcome) -> Committed {
    match outcome {
        CommitOutcome::Committed { .. } => Committed::Created,
        CommitOutcome::AlreadyExists => Committed::AlreadyExists,
    }
}

impl BlockStore for BlobBlockStore {
    fn properties<'a>(
        &'a self,
        blob: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredBlob>, TransferError>> {
        Box::pin(async move {
            let props = self
                .in_container(blob, || self.client.get_properties(blob))
                .await?;
            Ok(props.map(|p| StoredBlob {
                content_length: p.content_length,
                metadata: p.metadata,
            }))
        })
    }

    fn uncommitted_blocks<'a>(
        &'a self,
        blob: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(BlockId, u64)>, TransferError>> {
        Box::pin(async move {
            let list = self
                .in_container(blob, || self.client.get_block_list(blob))
                .await?;
            Ok(list.uncommitted)
        })
    }

    fn stage_block<'a>(
        &'a self,
        blob: &'a str,
        id: BlockId,
        data: Payload,
        md5: Option<[u8; 16]>,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async move {
            self.in_container(blob, || self.client.put_block(blob, &id, data.clone(), md5))
                .await
        })
    }

    fn commit<'a>(
        &'a self,
        blob: &'a str,
        ids: Vec<BlockId>,
        content_type: &'a str,
        metadata: Vec<(String, String)>,
        tags: BlobTags,
    ) -> BoxFuture<'a, Result<Committed, TransferError>> {
        Box::pin(async move {
            self.check_worm(blob).await?;
            let options = self.options(content_type, metadata, &tags);
            let ids = &ids;
            self.write(blob, options, |options| async move {
                self.client.put_block_list(blob, ids, &options).await
            })
            .await
            .map(committed)
        })
    }

    fn put_small<'a>(
        &'a self,
        blob: &'a str,
        body: Bytes,
        content_type: &'a str,
        tags: BlobTags,
    ) -> BoxFuture<'a, Result<Committed, TransferError>> {
        Box::pin(async move {
            self.check_worm(blob).await?;
            let options = self.options(content_type, Vec::new(), &tags);
            self.write(blob, options, |options| {
                let body = body.clone();
                async move { self.client.put_blob_small(blob, body, &options).await }
            })
            .await
            .map(committed)
        })
    }

    fn read_small<'a>(
        &'a self,
        blob: &'a str,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Option<Bytes>, TransferError>> {
        Box::pin(async move {
            self.in_container(blob, || self.client.get_blob_small(blob, max_bytes))
                .await
        })
    }
}
