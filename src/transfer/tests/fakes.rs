//! In-memory fakes of the two remote sides, and the jobs the tests archive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use url::Url;

use super::super::{
    BlockStore, ChunkReader, Committed, SourceStream, StoredBlob, Transfer, TransferError,
};
use crate::acs::{AcsError, ByteRange, Deleted, TransportKind, UrlPolicy};
use crate::blob::BlockId;
use crate::catalog::tags::BlobTags;
use crate::clock::SystemClock;
use crate::config::{BlobNameTemplate, TransferSettings};
use crate::recording::{CallIds, ChunkJob, ChunkSource};
use crate::storage::{Payload, StorageError};
use futures_util::future::BoxFuture;

/// 1 MiB: ranges are 4 MiB, so a few MiB of content make several ranges.
pub(super) const BLOCK: usize = 1024 * 1024;

/// `len` bytes of a pattern that repeats every 251 bytes, so no block equals another.
pub(super) fn content(len: usize) -> Bytes {
    let period: Vec<u8> = (0..251).map(|i| (i * 31 % 251) as u8).collect();
    let mut data = Vec::with_capacity(len + period.len());
    while data.len() < len {
        data.extend_from_slice(&period);
    }
    data.truncate(len);
    data.into()
}

pub(super) fn job(format: Option<&str>) -> ChunkJob {
    ChunkJob {
        event_id: "evt".into(),
        call: CallIds {
            call_id: Some("call-1".into()),
            ..Default::default()
        },
        document_id: "doc-1".into(),
        index: 0,
        chunk_count: 1,
        end_reason: None,
        recording_start_time: Some("2026-11-24T09:00:00Z".into()),
        recording_duration_ms: None,
        session_end_reason: None,
        content_type: None,
        channel_type: None,
        format_type: format.map(Into::into),
        source: ChunkSource::Preview,
        siblings: Default::default(),
    }
}

/// A GA chunk job for `doc-1` whose URLs name `object` on the storage host.
pub(super) fn ga_job(object: &str) -> ChunkJob {
    let url = |kind: &str| {
        Url::parse(&format!(
            "https://x.asm.skype.com/v1/objects/{object}/content/{kind}"
        ))
        .unwrap()
    };
    ChunkJob {
        source: ChunkSource::Located {
            content: url("video"),
            metadata: Some(url("acsmetadata")),
            delete: Some(url("deletedata")),
        },
        ..job(Some("Mp4"))
    }
}

/// A source that serves `data`, optionally failing once it has sent `fail_after` bytes.
/// Once `gone`, it answers 404 like ACS after a delete.
pub(super) struct FakeReader {
    pub(super) urls: UrlPolicy,
    pub(super) data: Bytes,
    pub(super) fail_after: Arc<Mutex<Option<u64>>>,
    /// The ranges opened, as `(start, end)`.
    pub(super) opens: Mutex<Vec<(u64, u64)>>,
    pub(super) metadata_reads: AtomicUsize,
    pub(super) content_type: Option<&'static str>,
    pub(super) deleted: Mutex<Vec<String>>,
    pub(super) gone: std::sync::atomic::AtomicBool,
}

impl FakeReader {
    pub(super) fn new(data: Bytes) -> Arc<Self> {
        Arc::new(FakeReader {
            urls: UrlPolicy::new(
                Url::parse("https://contoso.communication.azure.com/").unwrap(),
                Vec::new(),
            ),
            data,
            fail_after: Arc::default(),
            opens: Mutex::default(),
            metadata_reads: AtomicUsize::new(0),
            content_type: None,
            deleted: Mutex::default(),
            gone: Default::default(),
        })
    }

    /// How often ACS was asked for media or metadata.
    pub(super) fn acs_reads(&self) -> usize {
        self.opens.lock().unwrap().len() + self.metadata_reads.load(Ordering::SeqCst)
    }

    fn not_found(&self) -> Option<TransferError> {
        self.gone
            .load(Ordering::SeqCst)
            .then(|| TransferError::Download {
                index: 0,
                document_id: "doc-1".into(),
                source: Box::new(AcsError::Status {
                    host: "acs.test".into(),
                    status: 404,
                    request_id: None,
                    ms_cv: None,
                    body: String::new(),
                    retry_after: None,
                    attempts: 1,
                }),
            })
    }
}

impl ChunkReader for FakeReader {
    fn delete<'a>(
        &'a self,
        _job: &'a ChunkJob,
        url: &'a Url,
    ) -> BoxFuture<'a, Result<Deleted, TransferError>> {
        self.deleted.lock().unwrap().push(url.to_string());
        Box::pin(async { Ok(Deleted::Now) })
    }

    fn urls(&self) -> &UrlPolicy {
        &self.urls
    }
    fn open<'a>(
        &'a self,
        _job: &'a ChunkJob,
        _media: &'a Url,
        range: ByteRange,
    ) -> BoxFuture<'a, Result<SourceStream, TransferError>> {
        let len = self.data.len() as u64;
        let (start, end) = (range.start, range.end.unwrap_or(len).min(len));
        self.opens.lock().unwrap().push((start, end));
        if let Some(e) = self.not_found() {
            return Box::pin(async { Err(e) });
        }
        let fail_after = self.fail_after.clone();
        let rest = self.data.slice(start.min(end) as usize..end as usize);
        let parts: Vec<Bytes> = rest.chunks(10_000).map(Bytes::copy_from_slice).collect();
        let mut sent = start;
        let body = futures_util::stream::iter(parts.into_iter().map(move |p| {
            sent += p.len() as u64;
            let mut fail = fail_after.lock().unwrap();
            match *fail {
                Some(limit) if sent > limit => {
                    *fail = None;
                    Err(TransferError::Download {
                        index: 0,
                        document_id: "doc-1".into(),
                        source: Box::new(AcsError::Transport {
                            host: "acs.test".into(),
                            kind: TransportKind::Other,
                            detail: "connection reset".into(),
                            attempts: 1,
                        }),
                    })
                }
                _ => Ok(p),
            }
        }));
        let content_type = self.content_type.map(str::to_string);
        Box::pin(async move {
            Ok(SourceStream {
                total_len: len,
                offset: start,
                content_type,
                body: body.boxed(),
            })
        })
    }
    fn metadata<'a>(
        &'a self,
        _job: &'a ChunkJob,
        _url: &'a Url,
    ) -> BoxFuture<'a, Result<Bytes, TransferError>> {
        self.metadata_reads.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.not_found() {
            return Box::pin(async { Err(e) });
        }
        Box::pin(async {
            Ok(Bytes::from_static(
                br#"{"chunkDocumentId":"doc-1","recordingInfo":{"format":"mp3"}}"#,
            ))
        })
    }
}

/// A committed blob: content, content type, metadata.
pub(super) type Stored = (Bytes, String, Vec<(String, String)>);

#[derive(Default)]
pub(super) struct Blob {
    pub(super) staged: HashMap<BlockId, Bytes>,
    pub(super) committed: Option<Stored>,
    pub(super) tags: BlobTags,
}

#[derive(Default)]
pub(super) struct FakeStore {
    pub(super) blobs: Mutex<HashMap<String, Blob>>,
    /// Commits take effect but answer "already exists", as a retry hears when the answer
    /// to the first try was lost.
    pub(super) lose_commit_answers: AtomicBool,
    /// This many next small writes (records) fail, as a busy service may answer.
    pub(super) failing_small_writes: AtomicUsize,
    /// This many next property look-ups see no blob (as if it were committed just after).
    pub(super) blind_lookups: AtomicUsize,
    pub(super) stages: AtomicUsize,
    pub(super) inflight: AtomicUsize,
    pub(super) max_inflight: AtomicUsize,
}

impl FakeStore {
    pub(super) fn committed(&self, name: &str) -> Option<Stored> {
        self.blobs
            .lock()
            .unwrap()
            .get(name)
            .and_then(|b| b.committed.clone())
    }
}

impl BlockStore for FakeStore {
    fn properties<'a>(
        &'a self,
        blob: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredBlob>, TransferError>> {
        let blind = self
            .blind_lookups
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let r = self
            .committed(blob)
            .filter(|_| !blind)
            .map(|(data, _, metadata)| StoredBlob {
                content_length: data.len() as u64,
                metadata,
            });
        Box::pin(async move { Ok(r) })
    }
    fn uncommitted_blocks<'a>(
        &'a self,
        blob: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(BlockId, u64)>, TransferError>> {
        let mut v: Vec<(BlockId, u64)> = self
            .blobs
            .lock()
            .unwrap()
            .get(blob)
            .map(|b| {
                b.staged
                    .iter()
                    .map(|(k, d)| (k.clone(), d.len() as u64))
                    .collect()
            })
            .unwrap_or_default();
        // Listed in an order unlike upload order, as a real service may.
        v.sort();
        v.reverse();
        Box::pin(async move { Ok(v) })
    }
    fn stage_block<'a>(
        &'a self,
        blob: &'a str,
        id: BlockId,
        data: Payload,
        _md5: Option<[u8; 16]>,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        Box::pin(async move {
            let now = self.inflight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_inflight.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            self.stages.fetch_add(1, Ordering::SeqCst);
            self.blobs
                .lock()
                .unwrap()
                .entry(blob.to_string())
                .or_default()
                .staged
                .insert(id, Bytes::from(data.parts().concat()));
            self.inflight.fetch_sub(1, Ordering::SeqCst);
            Ok(())
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
        let mut blobs = self.blobs.lock().unwrap();
        let b = blobs.entry(blob.to_string()).or_default();
        let r = if b.committed.is_some() {
            Ok(Committed::AlreadyExists)
        } else {
            let mut data = Vec::new();
            for id in &ids {
                data.extend_from_slice(
                    b.staged
                        .get(id)
                        .expect("committing a block that was never staged"),
                );
            }
            b.committed = Some((data.into(), content_type.to_string(), metadata));
            b.tags = tags;
            b.staged.clear();
            Ok(match self.lose_commit_answers.load(Ordering::SeqCst) {
                true => Committed::AlreadyExists,
                false => Committed::Created,
            })
        };
        Box::pin(async move { r })
    }
    fn put_small<'a>(
        &'a self,
        blob: &'a str,
        body: Bytes,
        content_type: &'a str,
        tags: BlobTags,
    ) -> BoxFuture<'a, Result<Committed, TransferError>> {
        let failing =
            self.failing_small_writes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            let e = TransferError::Storage {
                blob: blob.to_string(),
                source: Box::new(StorageError::Service {
                    operation: "Put Blob",
                    resource: blob.to_string(),
                    status: 503,
                    error_code: Some("ServerBusy".into()),
                    request_id: None,
                    message: None,
                    attempts: 1,
                }),
            };
            return Box::pin(async move { Err(e) });
        }
        let mut blobs = self.blobs.lock().unwrap();
        let b = blobs.entry(blob.to_string()).or_default();
        let r = if b.committed.is_some() {
            Committed::AlreadyExists
        } else {
            b.committed = Some((body, content_type.to_string(), vec![]));
            b.tags = tags;
            Committed::Created
        };
        Box::pin(async move { Ok(r) })
    }
    fn read_small<'a>(
        &'a self,
        blob: &'a str,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Option<Bytes>, TransferError>> {
        let body = self.committed(blob).map(|(data, _, _)| data);
        assert!(body.as_ref().is_none_or(|b| b.len() <= max_bytes));
        Box::pin(async move { Ok(body) })
    }
}

pub(super) fn transfer(reader: Arc<FakeReader>, store: Arc<FakeStore>, sha256: bool) -> Transfer {
    let settings = TransferSettings {
        block_bytes: BLOCK,
        parallel_blocks: 3,
        parallel_ranges: 2,
        content_md5: true,
        sha256,
        delete_after_archive: true,
    };
    Transfer::new(
        reader,
        store,
        settings,
        BlobNameTemplate::default(),
        Arc::new(SystemClock),
    )
}
