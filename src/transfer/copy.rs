//! Copying one chunk: find what an earlier attempt staged, stream the rest into blocks,
//! commit create-only, check the size, write the record.

use std::collections::HashMap;

use serde_json::Value;

use super::blocks::{BlockTag, MAX_BLOCKS};
use super::hash::hex;
use super::origin::{media_metadata, ArchiveSource};
use super::record::{ArchiveRecord, Provenance, Started};
use super::{Committed, Transfer, TransferError, TransferReport};
use crate::acs::CheckedChunk;
use crate::blob::BlockId;
use crate::catalog::tags::{BlobKind, BlobTags};
use crate::recording::{ChunkJob, FormatHints, MediaFormat};

impl Transfer {
    /// Copies one chunk's media and writes its record.
    pub(super) async fn copy(
        &self,
        job: &ChunkJob,
        chunk: &CheckedChunk,
    ) -> Result<TransferReport, TransferError> {
        let started = Started::now(&*self.clock);
        let media_url = &chunk.urls.media;
        let acs_metadata = self.acs_metadata(job, chunk).await?;
        let metadata_format = acs_metadata
            .as_ref()
            .and_then(|m| m.pointer("/recordingInfo/format"))
            .and_then(Value::as_str);
        let mut format = MediaFormat::infer(FormatHints {
            event_format: job.format_type.as_deref(),
            metadata_format,
            event_content: job.content_type.as_deref(),
            ..FormatHints::default()
        });
        // Without a format from the event or the metadata, the response's Content-Type names
        // it; the stream opened to learn it is used if the transfer starts at byte 0.
        let mut opened = None;
        if format == MediaFormat::UNKNOWN {
            let stream = self.reader.open(job, media_url, 0).await?;
            format = MediaFormat::infer(FormatHints {
                http_content_type: stream.content_type.as_deref(),
                ..FormatHints::default()
            });
            opened = Some(stream);
        }
        let names = job.blob_names(&self.template, format);
        let blocks_of = BlockTag::of(&chunk.source);

        let block = self.settings.block_bytes as u64;
        let staged = self.store.uncommitted_blocks(&names.media).await?;
        // The leading run of blocks 0, 1, 2, ... that are staged whole can be kept (the service
        // lists staged blocks in no order we rely on). The last of them is read and sent again:
        // when every block was staged, resuming after it would ask ACS for an empty range,
        // which is answered 416.
        let staged: HashMap<BlockId, u64> = staged.into_iter().collect();
        let reusable = (0u32..)
            .take_while(|i| staged.get(&blocks_of.id(*i)) == Some(&block))
            .count()
            .saturating_sub(1) as u64;
        let mut offset = reusable * block;
        let mut stream = match opened {
            Some(s) if offset == 0 => s,
            _ => self.reader.open(job, media_url, offset).await?,
        };
        if offset > stream.total_len {
            // Staged blocks from a source of another size: start over.
            offset = 0;
            stream = self.reader.open(job, media_url, 0).await?;
        }
        let total = stream.total_len;
        let blocks = total.div_ceil(block);
        if blocks > MAX_BLOCKS {
            return Err(TransferError::TooManyBlocks {
                index: job.index,
                bytes: total,
                block_bytes: self.settings.block_bytes,
                blocks,
            });
        }
        if offset > 0 {
            tracing::info!(blob = %names.media, resume_at = offset, reused_blocks = reusable, "resuming a partial transfer");
        }
        let sha256 = self
            .pump(job, &names.media, stream, blocks_of, offset / block)
            .await?;

        let sha_hex = sha256.map(|d| hex(&d));
        let metadata = media_metadata(job, &chunk.source, total, sha_hex.as_deref());
        let ids = (0..blocks as u32).map(|i| blocks_of.id(i)).collect();
        let committed = self
            .store
            .commit(
                &names.media,
                ids,
                format.content_type,
                metadata,
                BlobTags::for_chunk(job, format, BlobKind::Media),
            )
            .await?;
        let stored = self
            .store
            .properties(&names.media)
            .await?
            .unwrap_or_default();
        if stored.content_length != total {
            return Err(TransferError::SizeMismatch {
                index: job.index,
                document_id: job.document_id.clone(),
                expected: total,
                actual: stored.content_length,
            });
        }
        if committed == Committed::AlreadyExists {
            let expected = ArchiveSource {
                size: Some(total),
                sha256: sha_hex.clone(),
                ..ArchiveSource::of(job, &chunk.source)
            };
            stored
                .verify(&expected)
                .map_err(|recorded| TransferError::Conflict {
                    blob: names.media.clone(),
                    recorded,
                    expected: expected.to_string(),
                })?;
        }
        // The record is written whoever committed: "already exists" is also what a retried
        // commit hears when the answer to its own commit was lost, and then nobody else would
        // write it. It is create-only, so a concurrent winner's record stays as it is.
        let record = ArchiveRecord {
            job,
            names: &names,
            format,
            stored: &stored,
            source: &chunk.source,
            acs_metadata,
            provenance: Provenance::Copied {
                resumed_from: offset,
                sha256: sha_hex.clone(),
            },
            started,
        };
        self.put_record(&names, record).await?;
        if committed == Committed::AlreadyExists {
            tracing::info!(blob = %names.media, "a concurrent delivery committed this chunk first");
            return Ok(TransferReport::AlreadyArchived { blob: names.media });
        }
        tracing::info!(blob = %names.media, bytes = total, resumed_from = offset, elapsed_ms = started.elapsed_ms(), "chunk archived");
        Ok(TransferReport::Archived {
            blob: names.media,
            bytes: total,
            resumed_from: offset,
            sha256: sha_hex,
        })
    }
}
