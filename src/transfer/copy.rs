//! Copying one chunk: find what an earlier attempt staged, stream the rest into blocks,
//! commit create-only, check the size, write the record.

use std::collections::HashMap;

use serde_json::Value;

use super::blocks::{BlockTag, MAX_BLOCKS};
use super::hash::hex;
use super::origin::{media_metadata, ArchiveSource};
use super::plan::{first_range, BlockRange, Layout, Plan};
use super::pump::{Copying, Opened};
use super::record::{ArchiveRecord, Provenance, Started};
use super::{Committed, Transfer, TransferError, TransferReport};
use crate::acs::{ByteRange, CheckedChunk};
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
        let block = self.settings.block_bytes as u64;
        let range_blocks = self.settings.request_blocks();
        let read_kept = self.settings.sha256;
        // Without a format from the event or the metadata, the response's Content-Type names
        // it; the read made to learn it is used if the plan starts with it.
        let mut opened = None;
        if format == MediaFormat::UNKNOWN {
            let asked = BlockRange {
                first: 0,
                end: range_blocks,
            };
            let stream =
                Opened::open(&*self.reader, job, media_url, asked, bytes_of(asked, block)).await?;
            format = MediaFormat::infer(FormatHints {
                http_content_type: stream.stream.content_type.as_deref(),
                ..FormatHints::default()
            });
            opened = Some(stream);
        }
        let names = job.blob_names(&self.template, format);
        let blocks_of = BlockTag::of(&chunk.source);

        // Blocks staged by earlier attempts, wherever they sit (the service lists them in no
        // order we rely on); only ours, by id.
        let staged: HashMap<BlockId, u64> = self
            .store
            .uncommitted_blocks(&names.media)
            .await?
            .into_iter()
            .collect();
        let staged_size = |i: u64| -> Option<u64> {
            u32::try_from(i)
                .ok()
                .and_then(|i| staged.get(&blocks_of.id(i)).copied())
        };
        // The first read also tells the chunk's length.
        let opened = match opened {
            Some(opened) => opened,
            None => {
                let asked = first_range(staged_size, block, read_kept, range_blocks);
                Opened::open(&*self.reader, job, media_url, asked, bytes_of(asked, block)).await?
            }
        };
        let layout = Layout {
            total: opened.stream.total_len,
            block,
        };
        let total = layout.total;
        let blocks = layout.blocks();
        if blocks > MAX_BLOCKS {
            return Err(TransferError::TooManyBlocks {
                index: job.index,
                bytes: total,
                block_bytes: self.settings.block_bytes,
                blocks,
            });
        }
        let plan = Plan::new(layout, staged_size, read_kept, range_blocks);
        let kept = plan.kept_bytes(layout);
        let resumed_from = plan.first_staged_byte(layout);
        if kept > 0 {
            tracing::info!(blob = %names.media, kept_bytes = kept, ranges = plan.ranges.len(), "resuming a partial transfer");
        }
        let sha256 = self
            .pump(
                Copying {
                    job,
                    media: media_url,
                    blob: &names.media,
                    blocks_of,
                    layout,
                    plan,
                },
                opened,
            )
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
            stored.archives(&expected, &names.media)?;
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
                resumed_from,
                reused_bytes: kept,
                sha256: sha_hex.clone(),
            },
            started,
        };
        self.put_record(&names, record).await?;
        if committed == Committed::AlreadyExists {
            tracing::info!(blob = %names.media, "a concurrent delivery committed this chunk first");
            return Ok(TransferReport::AlreadyArchived { blob: names.media });
        }
        tracing::info!(blob = %names.media, bytes = total, resumed_from, kept_bytes = kept, elapsed_ms = started.elapsed_ms(), "chunk archived");
        Ok(TransferReport::Archived {
            blob: names.media,
            bytes: total,
            resumed_from,
            sha256: sha_hex,
        })
    }
}

/// The bytes of `range` before the chunk's length is known (a server ends a range at the
/// object's end); an unbounded range (one stream) is open-ended.
fn bytes_of(range: BlockRange, block: u64) -> ByteRange {
    ByteRange {
        start: range.first * block,
        end: range.end.checked_mul(block),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unbounded_first_read_is_open_ended() {
        let one_stream = BlockRange {
            first: 3,
            end: u64::MAX,
        };
        assert_eq!(
            bytes_of(one_stream, 10),
            ByteRange {
                start: 30,
                end: None
            }
        );
        let ranged = BlockRange { first: 3, end: 5 };
        assert_eq!(bytes_of(ranged, 10).end, Some(50));
    }
}
