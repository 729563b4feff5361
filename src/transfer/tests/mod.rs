//! The pipeline on in-memory fakes: byte-exact copies, resume, duplicates, conflicts, and
//! `DELETE_AFTER_ARCHIVE`.

mod fakes;
mod finish;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use super::blocks::BlockTag;
use super::hash::hex;
use super::origin::META_SIZE;
use super::{TransferError, TransferReport};
use crate::config::BlobNameTemplate;
use crate::disposition::Disposition;
use crate::recording::{ChunkJob, ChunkSource, MediaFormat};
use fakes::*;
const MEDIA: &str = "2026/11/24/call-1/000-doc-1.mp4";

#[tokio::test]
async fn a_chunk_lands_byte_exact_with_its_record() {
    let data = content(10 * BLOCK + 100);
    let store = Arc::new(FakeStore::default());
    let report = transfer(FakeReader::new(data.clone()), store.clone(), true)
        .archive(&job(Some("Mp4")))
        .await
        .unwrap();
    let sha = hex(&Sha256::digest(&data));
    assert_eq!(
        report,
        TransferReport::Archived {
            blob: MEDIA.into(),
            bytes: data.len() as u64,
            resumed_from: 0,
            sha256: Some(sha.clone())
        }
    );
    let (stored, content_type, meta) = store.committed(MEDIA).unwrap();
    assert_eq!(stored, data);
    assert_eq!(content_type, "video/mp4");
    assert!(meta.contains(&(META_SIZE.to_string(), data.len().to_string())));
    let (record, record_type, _) = store.committed(&format!("{MEDIA}.json")).unwrap();
    assert_eq!(record_type, "application/json");
    let record: Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["archive"]["sha256"], sha);
    assert_eq!(record["archive"]["sizeBytes"], data.len() as u64);
    assert_eq!(record["acsMetadata"]["chunkDocumentId"], "doc-1");
    assert_eq!(store.stages.load(Ordering::SeqCst), 11);
    assert!(
        store.max_inflight.load(Ordering::SeqCst) <= 3,
        "never more than parallel_blocks in flight"
    );
}

#[tokio::test]
async fn a_redelivery_finds_the_archive_and_copies_nothing() {
    let data = content(3 * BLOCK);
    let store = Arc::new(FakeStore::default());
    let reader = FakeReader::new(data);
    let t = transfer(reader.clone(), store.clone(), true);
    t.archive(&job(Some("Mp4"))).await.unwrap();
    let stages = store.stages.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(
            t.archive(&job(Some("Mp4"))).await.unwrap(),
            TransferReport::AlreadyArchived { blob: MEDIA.into() }
        );
    }
    assert_eq!(store.stages.load(Ordering::SeqCst), stages);
    assert_eq!(
        reader.opens.lock().unwrap().len(),
        1,
        "the media is not downloaded again"
    );
}

/// The ranges `reader` was asked for, sorted, in blocks.
fn opened_blocks(reader: &FakeReader) -> Vec<(u64, u64)> {
    let b = BLOCK as u64;
    let mut opens: Vec<_> = reader
        .opens
        .lock()
        .unwrap()
        .iter()
        .map(|(start, end)| (start / b, end.div_ceil(b)))
        .collect();
    opens.sort();
    opens
}

/// Stages `blocks` of `data` under `job`'s block ids, as a crashed attempt leaves them
/// (`short` ones cut to half a block).
fn stage_earlier(
    store: &FakeStore,
    reader: &FakeReader,
    job: &ChunkJob,
    data: &Bytes,
    blocks: &[u64],
    short: &[u64],
) {
    let source = reader
        .urls
        .check_chunk(&job.document_id, &job.source)
        .unwrap()
        .source;
    let tag = BlockTag::of(&source);
    let mut blobs = store.blobs.lock().unwrap();
    let blob = blobs.entry(MEDIA.into()).or_default();
    for &i in blocks.iter().chain(short) {
        let start = i as usize * BLOCK;
        let mut end = (start + BLOCK).min(data.len());
        if short.contains(&i) {
            end = start + BLOCK / 2;
        }
        blob.staged.insert(tag.id(i as u32), data.slice(start..end));
    }
}

#[tokio::test]
async fn a_resume_keeps_staged_blocks_wherever_they_sit_and_reads_only_the_gaps() {
    let data = content(12 * BLOCK + 7);
    let store = Arc::new(FakeStore::default());
    let reader = FakeReader::new(data.clone());
    let j = job(Some("Mp4"));
    // A crash left blocks 1, 2, 5, 6, 7 and the short last block 12 staged whole, and block
    // 9 cut short.
    stage_earlier(&store, &reader, &j, &data, &[1, 2, 5, 6, 7, 12], &[9]);
    let report = transfer(reader.clone(), store.clone(), false)
        .archive(&j)
        .await
        .unwrap();
    assert_eq!(
        opened_blocks(&reader),
        vec![(0, 1), (3, 5), (8, 12)],
        "only the missing blocks were read, in ranges of at most 4 blocks"
    );
    assert_eq!(
        reader
            .opens
            .lock()
            .unwrap()
            .iter()
            .map(|(s, e)| e - s)
            .sum::<u64>(),
        7 * BLOCK as u64,
        "exactly the bytes of the seven missing blocks"
    );
    assert_eq!(
        store.stages.load(Ordering::SeqCst),
        7,
        "blocks 0, 3, 4, 8-11"
    );
    assert_eq!(store.committed(MEDIA).unwrap().0, data);
    let TransferReport::Archived { resumed_from, .. } = report else {
        panic!("{report:?}")
    };
    assert_eq!(resumed_from, 0, "block 0 was missing");
    let record: Value =
        serde_json::from_slice(&store.committed(&format!("{MEDIA}.json")).unwrap().0).unwrap();
    assert_eq!(record["archive"]["reusedStagedBytes"], 5 * BLOCK as u64 + 7);
    assert_eq!(record["archive"]["sha256"], Value::Null);
}

#[tokio::test]
async fn a_resumed_chunk_reads_its_staged_blocks_again_for_the_hash_only() {
    let data = content(12 * BLOCK + 7);
    let store = Arc::new(FakeStore::default());
    let reader = FakeReader::new(data.clone());
    let j = job(Some("Mp4"));
    stage_earlier(&store, &reader, &j, &data, &[0, 1, 2, 5, 6, 7, 12], &[9]);
    let report = transfer(reader.clone(), store.clone(), true)
        .archive(&j)
        .await
        .unwrap();
    assert_eq!(
        opened_blocks(&reader),
        vec![(0, 4), (4, 8), (8, 12), (12, 13)],
        "every block is read, in order of ranges"
    );
    assert_eq!(store.stages.load(Ordering::SeqCst), 6, "blocks 3, 4, 8-11");
    let sha = hex(&Sha256::digest(&data));
    let TransferReport::Archived {
        resumed_from,
        sha256,
        ..
    } = report
    else {
        panic!("{report:?}")
    };
    assert_eq!(
        sha256,
        Some(sha.clone()),
        "a resumed chunk has its SHA-256 too"
    );
    assert_eq!(resumed_from, 3 * BLOCK as u64);
    assert_eq!(store.committed(MEDIA).unwrap().0, data);
    let record: Value =
        serde_json::from_slice(&store.committed(&format!("{MEDIA}.json")).unwrap().0).unwrap();
    assert_eq!(record["archive"]["sha256"], sha);
}

#[tokio::test]
async fn an_interrupted_transfer_resumes_with_only_the_blocks_it_lacks() {
    let data = content(20 * BLOCK + 7);
    let store = Arc::new(FakeStore::default());
    let reader = FakeReader::new(data.clone());
    *reader.fail_after.lock().unwrap() = Some((9 * BLOCK + BLOCK / 2) as u64);
    let t = transfer(reader.clone(), store.clone(), false);
    let err = t.archive(&job(Some("Mp4"))).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Retry);
    let staged_before = store.stages.load(Ordering::SeqCst);
    let staged: Vec<u64> = {
        let blobs = store.blobs.lock().unwrap();
        let tag = {
            let j = job(Some("Mp4"));
            BlockTag::of(
                &reader
                    .urls
                    .check_chunk(&j.document_id, &j.source)
                    .unwrap()
                    .source,
            )
        };
        (0..21)
            .filter(|i| blobs[MEDIA].staged.contains_key(&tag.id(*i as u32)))
            .collect()
    };
    assert!(!staged.is_empty() && staged.len() < 21, "{staged:?}");
    assert!(!staged.contains(&9), "the cut block was not staged");

    reader.opens.lock().unwrap().clear();
    t.archive(&job(Some("Mp4"))).await.unwrap();
    let read: Vec<u64> = opened_blocks(&reader)
        .into_iter()
        .flat_map(|(first, end)| first..end)
        .collect();
    let missing: Vec<u64> = (0..21).filter(|i| !staged.contains(i)).collect();
    assert_eq!(
        read, missing,
        "the second attempt read exactly the blocks not staged"
    );
    assert_eq!(
        store.stages.load(Ordering::SeqCst) - staged_before,
        missing.len(),
        "and staged only those"
    );
    assert_eq!(store.committed(MEDIA).unwrap().0, data);
}

#[tokio::test]
async fn one_range_reads_the_chunk_as_one_stream() {
    let data = content(9 * BLOCK + 1);
    let store = Arc::new(FakeStore::default());
    let reader = FakeReader::new(data.clone());
    let mut t = transfer(reader.clone(), store.clone(), true);
    t.settings.parallel_ranges = 1;
    let report = t.archive(&job(Some("Mp4"))).await.unwrap();
    assert_eq!(*reader.opens.lock().unwrap(), vec![(0, data.len() as u64)]);
    assert!(matches!(
        report,
        TransferReport::Archived {
            sha256: Some(_),
            ..
        }
    ));
    assert_eq!(store.committed(MEDIA).unwrap().0, data);
}

#[tokio::test]
async fn concurrent_duplicates_end_with_one_blob_and_no_error() {
    let data = content(6 * BLOCK + 1);
    let store = Arc::new(FakeStore::default());
    let t = transfer(FakeReader::new(data.clone()), store.clone(), false);
    let j = job(Some("Mp4"));
    let results = futures_util::future::join_all((0..5).map(|_| t.archive(&j))).await;
    let archived = results
        .iter()
        .filter(|r| matches!(r, Ok(TransferReport::Archived { .. })))
        .count();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(archived, 1, "{results:?}");
    assert_eq!(store.committed(MEDIA).unwrap().0, data);
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_still_gets_its_record() {
    let data = content(2 * BLOCK + 5);
    let store = Arc::new(FakeStore::default());
    store.lose_commit_answers.store(true, Ordering::SeqCst);
    transfer(FakeReader::new(data.clone()), store.clone(), true)
        .archive(&job(Some("Mp4")))
        .await
        .unwrap();
    assert_eq!(store.committed(MEDIA).unwrap().0, data);
    let (record, _, _) = store
        .committed(&format!("{MEDIA}.json"))
        .expect("the record is written although the commit answered 'already exists'");
    let record: Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["archive"]["sizeBytes"], data.len() as u64);
}

#[tokio::test]
async fn a_foreign_blob_under_our_name_is_never_overwritten() {
    let store = Arc::new(FakeStore::default());
    store
        .blobs
        .lock()
        .unwrap()
        .entry(MEDIA.into())
        .or_default()
        .committed = Some((Bytes::from_static(b"not ours"), "text/plain".into(), vec![]));
    let err = transfer(FakeReader::new(content(BLOCK)), store, true)
        .archive(&job(Some("Mp4")))
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Conflict { .. }), "{err}");
    assert_eq!(err.disposition(), Disposition::Drop);
}

#[tokio::test]
async fn format_comes_from_metadata_then_content_type() {
    let store = Arc::new(FakeStore::default());
    transfer(FakeReader::new(content(100)), store.clone(), true)
        .archive(&job(None))
        .await
        .unwrap();
    assert_eq!(
        store
            .committed("2026/11/24/call-1/000-doc-1.mp3")
            .unwrap()
            .1,
        "audio/mpeg"
    );
}

/// The jobs of a recording of `n` GA chunks `doc-0`, `doc-1`, ..., each object named like
/// its document, every job listing every chunk.
fn recording_jobs(n: u32) -> Vec<ChunkJob> {
    use crate::recording::SiblingChunk;
    let jobs: Vec<ChunkJob> = (0..n)
        .map(|i| ChunkJob {
            document_id: format!("doc-{i}"),
            index: i,
            ..ga_job(&format!("doc-{i}"))
        })
        .collect();
    let siblings: Vec<SiblingChunk> = jobs
        .iter()
        .map(|j| SiblingChunk {
            document_id: j.document_id.clone(),
            index: j.index,
            delete: match &j.source {
                ChunkSource::Located { delete, .. } => delete.clone(),
                ChunkSource::Preview => None,
            },
        })
        .collect();
    jobs.into_iter()
        .map(|j| ChunkJob {
            siblings: siblings.clone().into(),
            ..j
        })
        .collect()
}

fn delete_url(object: &str) -> String {
    format!("https://x.asm.skype.com/v1/objects/{object}/content/deletedata")
}

#[tokio::test]
async fn a_recording_is_deleted_from_acs_only_when_every_chunk_is_archived() {
    let store = Arc::new(FakeStore::default());
    let reader = FakeReader::new(content(BLOCK + 3));
    let t = transfer(reader.clone(), store.clone(), false);
    let jobs = recording_jobs(2);

    t.archive(&jobs[0]).await.unwrap();
    assert!(
        reader.deleted.lock().unwrap().is_empty(),
        "chunk 1 is not archived yet"
    );
    // Chunk 1's media commits, then its record write fails (the job will be tried again),
    // and a duplicate delivery of chunk 0 finds both media blobs committed.
    store.failing_small_writes.store(1, Ordering::SeqCst);
    t.archive(&jobs[1]).await.unwrap_err();
    t.archive(&jobs[0]).await.unwrap();
    assert!(
        reader.deleted.lock().unwrap().is_empty(),
        "chunk 1's record, with its ACS metadata, is not written yet"
    );
    t.archive(&jobs[1]).await.unwrap();
    let record = format!(
        "{}.json",
        jobs[1]
            .blob_names(&BlobNameTemplate::default(), MediaFormat::MP4)
            .media
    );
    let record: Value = serde_json::from_slice(&store.committed(&record).unwrap().0).unwrap();
    assert_eq!(
        record["acsMetadata"]["chunkDocumentId"], "doc-1",
        "{record}"
    );
    assert_eq!(
        *reader.deleted.lock().unwrap(),
        vec![delete_url("doc-0"), delete_url("doc-1")]
    );

    let mut without_set = ga_job("doc-9");
    without_set.document_id = "doc-9".into();
    t.archive(&without_set).await.unwrap();
    assert_eq!(
        reader.deleted.lock().unwrap().len(),
        2,
        "no sibling list, no delete"
    );
}

#[tokio::test]
async fn a_delete_names_only_objects_whose_bytes_are_in_the_container() {
    let store = Arc::new(FakeStore::default());
    let reader = FakeReader::new(content(100));
    let t = transfer(reader.clone(), store.clone(), false);
    let mut jobs = recording_jobs(2);
    // Chunk 1's delete location, as chunk 0's job knows it, names another object than
    // the one chunk 1 was archived from.
    let foreign = Url::parse(&delete_url("someone-else")).unwrap();
    let mut known: Vec<_> = jobs[0].siblings.to_vec();
    known[1].delete = Some(foreign);
    jobs[0].siblings = known.into();
    t.archive(&jobs[0]).await.unwrap();
    t.archive(&jobs[1]).await.unwrap();
    t.archive(&jobs[0]).await.unwrap();
    assert_eq!(
        *reader.deleted.lock().unwrap(),
        vec![delete_url("doc-0"), delete_url("doc-1")],
        "only chunk 1's job, which names the verified objects, deleted"
    );
}

#[tokio::test]
async fn a_redelivery_after_acs_deleted_the_chunk_succeeds_without_asking_acs() {
    let store = Arc::new(FakeStore::default());
    let reader = FakeReader::new(content(2 * BLOCK));
    let t = transfer(reader.clone(), store.clone(), false);
    let jobs = recording_jobs(1);
    t.archive(&jobs[0]).await.unwrap();
    reader.gone.store(true, Ordering::SeqCst);
    let reads = reader.acs_reads();
    for _ in 0..3 {
        assert_eq!(
            t.archive(&jobs[0]).await.unwrap(),
            TransferReport::AlreadyArchived {
                blob: "2026/11/24/call-1/000-doc-0.mp4".into()
            }
        );
    }
    assert_eq!(reader.acs_reads(), reads, "no GET to ACS");
}

#[tokio::test]
async fn a_404_after_a_concurrent_archive_is_success_and_without_one_it_is_permanent() {
    let store = Arc::new(FakeStore::default());
    let reader = FakeReader::new(content(BLOCK));
    let t = transfer(reader.clone(), store.clone(), false);
    let job = ga_job("doc-1");
    t.archive(&job).await.unwrap();
    // Another instance archives and deletes between our look at the container and our
    // request to ACS: the first look misses, ACS answers 404, the second look finds it.
    store.blind_lookups.store(1, Ordering::SeqCst);
    reader.gone.store(true, Ordering::SeqCst);
    assert!(matches!(
        t.archive(&job).await.unwrap(),
        TransferReport::AlreadyArchived { .. }
    ));
    // Never archived and gone from ACS: a permanent failure.
    let mut never = ga_job("doc-2");
    never.document_id = "doc-2".into();
    let err = t.archive(&never).await;
    let err = match err {
        Err(e) => e,
        Ok(r) => panic!("{r:?}"),
    };
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.disposition(), Disposition::Drop);
}

#[tokio::test]
async fn the_same_chunk_from_another_object_is_a_conflict_and_nothing_is_deleted() {
    let store = Arc::new(FakeStore::default());
    let reader = FakeReader::new(content(BLOCK + 1));
    let t = transfer(reader.clone(), store.clone(), false);
    t.archive(&ga_job("doc-1")).await.unwrap();
    let deletes = reader.deleted.lock().unwrap().len();
    let reads = reader.acs_reads();
    // Same documentId, call and date, so the same blob name, but another object.
    let mut other = ga_job("victim-object");
    other.siblings = vec![crate::recording::SiblingChunk {
        document_id: other.document_id.clone(),
        index: 0,
        delete: Some(Url::parse(&delete_url("victim-object")).unwrap()),
    }]
    .into();
    let err = t.archive(&other).await.unwrap_err();
    let TransferError::Conflict {
        recorded, expected, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert!(recorded.contains("x.asm.skype.com/doc-1"), "{recorded}");
    assert!(
        expected.contains("x.asm.skype.com/victim-object"),
        "{expected}"
    );
    assert_eq!(err.disposition(), Disposition::Drop);
    assert_eq!(reader.deleted.lock().unwrap().len(), deletes, "no DELETE");
    assert_eq!(reader.acs_reads(), reads, "its media is never fetched");
}

#[tokio::test]
async fn blocks_staged_from_another_source_are_not_reused() {
    let data = content(6 * BLOCK);
    let store = Arc::new(FakeStore::default());
    let reader = FakeReader::new(data.clone());
    // Cut a little after block 3 ends (the fake sends 10,000-byte parts).
    *reader.fail_after.lock().unwrap() = Some((4 * BLOCK + 20_000) as u64);
    let mut t = transfer(reader.clone(), store.clone(), true);
    t.settings.parallel_ranges = 1;
    t.archive(&ga_job("first-object")).await.unwrap_err();
    assert_eq!(
        store.stages.load(Ordering::SeqCst),
        4,
        "the blocks whole before the cut were staged"
    );
    let report = t.archive(&ga_job("second-object")).await.unwrap();
    let TransferReport::Archived {
        resumed_from,
        sha256,
        ..
    } = report
    else {
        panic!("{report:?}")
    };
    assert_eq!(resumed_from, 0, "another source starts over");
    assert_eq!(sha256, Some(hex(&Sha256::digest(&data))));
}

#[test]
fn chunk_urls_that_are_not_recordings_are_refused_before_any_request() {
    let reader = FakeReader::new(content(10));
    let store = Arc::new(FakeStore::default());
    let t = transfer(reader.clone(), store, false);
    let mut job = ga_job("doc-1");
    job.source = ChunkSource::Located {
        content: Url::parse("https://contoso.communication.azure.com/phoneNumbers?api-version=2022-12-01").unwrap(),
        metadata: None,
        delete: Some(Url::parse("https://contoso.communication.azure.com/identities/8:acs:victim?api-version=2023-10-01").unwrap()),
    };
    let err = futures_util::FutureExt::now_or_never(t.archive(&job))
        .expect("refused without any I/O")
        .unwrap_err();
    assert!(matches!(err, TransferError::Refused { .. }), "{err}");
    assert_eq!(err.disposition(), Disposition::Drop);
    assert_eq!(reader.acs_reads(), 0);
    assert!(reader.deleted.lock().unwrap().is_empty());
}
