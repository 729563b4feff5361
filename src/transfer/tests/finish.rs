//! The manifest and its one notification, on the fakes: any finishing order, redeliveries,
//! concurrent duplicates, and a writer that stopped between the manifest and its marker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::Value;

use super::super::{Notifier, Transfer, TransferError};
use super::fakes::*;
use super::recording_jobs;
use crate::catalog::tags::{BlobKind, BlobTags};
use crate::recording::ChunkJob;
use futures_util::future::BoxFuture;

const MANIFEST: &str = "2026/11/24/call-1/manifest-doc-0.json";

/// Counts notifications and keeps their manifests.
#[derive(Default)]
struct CountingNotifier {
    sent: AtomicUsize,
    manifests: Mutex<Vec<(String, Value)>>,
}

impl Notifier for CountingNotifier {
    fn notify<'a>(
        &'a self,
        blob: &'a str,
        manifest: &'a Value,
    ) -> BoxFuture<'a, Result<(), TransferError>> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.manifests
            .lock()
            .unwrap()
            .push((blob.to_string(), manifest.clone()));
        Box::pin(async { Ok(()) })
    }
}

fn setup(
    n: u32,
) -> (
    Transfer,
    Arc<FakeStore>,
    Arc<CountingNotifier>,
    Vec<ChunkJob>,
) {
    let store = Arc::new(FakeStore::default());
    let notifier = Arc::new(CountingNotifier::default());
    let t = transfer(FakeReader::new(content(BLOCK + 7)), store.clone(), true)
        .with_notifier(notifier.clone());
    let jobs = recording_jobs(n)
        .into_iter()
        .map(|j| ChunkJob {
            chunk_count: n,
            ..j
        })
        .collect();
    (t, store, notifier, jobs)
}

fn manifest(store: &FakeStore) -> Option<Value> {
    store
        .committed(MANIFEST)
        .map(|(body, _, _)| serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn the_last_chunk_to_finish_writes_the_manifest_whatever_the_order() {
    let (t, store, notifier, jobs) = setup(3);
    for i in [2, 0] {
        t.archive(&jobs[i]).await.unwrap();
        assert!(manifest(&store).is_none(), "chunk 1 is not archived yet");
    }
    t.archive(&jobs[1]).await.unwrap();
    let m = manifest(&store).expect("written by the last finisher");
    assert_eq!(m["chunkCount"], 3);
    let chunks = m["chunks"].as_array().unwrap();
    let indexes: Vec<_> = chunks
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2]);
    assert_eq!(chunks[1]["mediaBlob"], "2026/11/24/call-1/001-doc-1.mp4");
    assert_eq!(chunks[1]["sizeBytes"], (BLOCK + 7) as u64);
    assert_eq!(chunks[1]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(m["totalBytes"], 3 * (BLOCK + 7) as u64);
    assert_eq!(notifier.sent.load(Ordering::SeqCst), 1);
    assert_eq!(notifier.manifests.lock().unwrap()[0].0, MANIFEST);
    assert!(store
        .committed("2026/11/24/call-1/manifest-doc-0.notified.json")
        .is_some());
    let tags = store.blobs.lock().unwrap()[MANIFEST].tags.clone();
    assert_eq!(tags.get("kind"), Some(BlobKind::Manifest.as_str()));
    assert_eq!(tags.get("callId"), Some("call-1"));

    // Redeliveries find it and change nothing.
    let written = store.committed(MANIFEST).unwrap().0;
    for job in &jobs {
        t.archive(job).await.unwrap();
    }
    assert_eq!(store.committed(MANIFEST).unwrap().0, written);
    assert_eq!(notifier.sent.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn five_concurrent_duplicates_of_every_chunk_give_one_manifest_and_one_notification() {
    let (t, store, notifier, jobs) = setup(2);
    let deliveries = (0..5).flat_map(|_| jobs.iter()).map(|j| t.archive(j));
    let results = futures_util::future::join_all(deliveries).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(manifest(&store).is_some());
    assert_eq!(notifier.sent.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn media_and_records_carry_their_tags() {
    let (t, store, _, jobs) = setup(1);
    t.archive(&jobs[0]).await.unwrap();
    let blobs = store.blobs.lock().unwrap();
    let media: &BlobTags = &blobs["2026/11/24/call-1/000-doc-0.mp4"].tags;
    assert_eq!(media.get("kind"), Some("media"));
    assert_eq!(media.get("chunk"), Some("0"));
    assert_eq!(media.get("format"), Some("mp4"));
    assert_eq!(media.get("recordingStart"), Some("2026-11-24T09:00:00Z"));
    let record = &blobs["2026/11/24/call-1/000-doc-0.mp4.json"].tags;
    assert_eq!(record.get("kind"), Some("record"));
}

#[tokio::test]
async fn no_sibling_list_no_manifest() {
    let (t, store, notifier, _) = setup(1);
    t.archive(&job(Some("Mp4"))).await.unwrap();
    assert!(store
        .blobs
        .lock()
        .unwrap()
        .keys()
        .all(|k| !k.contains("manifest")));
    assert_eq!(notifier.sent.load(Ordering::SeqCst), 0);
}

/// A manifest whose writer stopped before its marker: young, a finder asks to be tried again;
/// past the grace period, a finder sends the notification itself.
#[tokio::test(start_paused = true)]
async fn a_notification_lost_to_a_crash_is_sent_by_a_later_delivery() {
    let (t, store, notifier, jobs) = setup(1);
    let written_by_crashed_writer = |at: &str| {
        Bytes::from(
            serde_json::json!({"eventId": "evt", "chunks": [], "writtenAt": at}).to_string(),
        )
    };
    let now = super::super::record::rfc3339(std::time::SystemTime::now());
    store
        .blobs
        .lock()
        .unwrap()
        .entry(MANIFEST.into())
        .or_default()
        .committed = Some((
        written_by_crashed_writer(&now),
        "application/json".into(),
        vec![],
    ));
    let err = t.archive(&jobs[0]).await.unwrap_err();
    assert_eq!(err.disposition(), crate::disposition::Disposition::Retry);
    assert_eq!(
        notifier.sent.load(Ordering::SeqCst),
        0,
        "the writer may still send it"
    );

    store
        .blobs
        .lock()
        .unwrap()
        .get_mut(MANIFEST)
        .unwrap()
        .committed = Some((
        written_by_crashed_writer("2026-01-01T00:00:00Z"),
        "application/json".into(),
        vec![],
    ));
    t.archive(&jobs[0]).await.unwrap();
    assert_eq!(notifier.sent.load(Ordering::SeqCst), 1);
    t.archive(&jobs[0]).await.unwrap();
    assert_eq!(
        notifier.sent.load(Ordering::SeqCst),
        1,
        "its marker is written"
    );
}
