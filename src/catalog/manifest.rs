//! `manifest-<first documentId>.json`: one document per recording, written once beside its
//! chunks when the last of them is archived, and the "archived" notification that announces it.
//!
//! Which finisher writes it: every chunk job carries the recording's sibling list (see
//! [`crate::recording::ChunkJob::siblings`]). Each job, once its own chunk is archived, checks
//! the container for every sibling's media (committed whole) and record; when all are there it
//! builds the manifest from the records and writes it create-only (`If-None-Match: *`). The
//! write that succeeds is the first; every later or concurrent one hears "already exists" and
//! does nothing. Without a complete sibling list (an unreadable chunk in the event, or a list
//! too long for a queue message) no manifest is written: nothing could prove it complete.
//!
//! Pure: the model, its name and the notification message; [`crate::transfer`] does the I/O.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::BlobNameTemplate;
use crate::recording::{CallIds, ChunkJob, MediaFormat};

/// The manifest format's version, for readers.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest record read back for a manifest: records hold the ACS metadata document (a few KiB).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Most pause/resume intervals and participants a manifest lists (each): the ACS metadata is
/// input from the network, and the manifest must stay a small document.
pub const MAX_LISTED: usize = 1000;

/// The manifest's blob name: beside the first chunk's media, named after that chunk's document
/// id (unique per recording; a call may hold several recordings, so `manifest.json` alone
/// would collide). `None` when the job has no complete sibling list.
pub fn manifest_name(job: &ChunkJob, template: &BlobNameTemplate) -> Option<String> {
    let first = job.siblings.iter().min_by_key(|s| s.index)?;
    // The directory part of a name never holds `{ext}` in practice; any format gives it.
    let media = job
        .for_sibling(first)
        .blob_names(template, MediaFormat::UNKNOWN)
        .media;
    let dir = media.rsplit_once('/').map(|(d, _)| d);
    let file = format!("manifest-{}.json", first.document_id);
    Some(match dir {
        Some(dir) => format!("{dir}/{file}"),
        None => file,
    })
}

/// The blob marking that a manifest's notification was sent (see [`crate::transfer`]):
/// `manifest-<id>.notified.json`, a small JSON document like every other `.json` beside the
/// media, so that tools reading records skip it as "not a record".
pub fn notified_marker(manifest: &str) -> String {
    let stem = manifest.strip_suffix(".json").unwrap_or(manifest);
    format!("{stem}.notified.json")
}

/// Whether `job` knows every chunk of its recording, so a manifest can prove completeness.
pub fn has_complete_siblings(job: &ChunkJob) -> bool {
    let n = job.chunk_count as usize;
    if job.siblings.len() != n {
        return false;
    }
    let mut seen: Vec<u32> = job.siblings.iter().map(|s| s.index).collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len() == n
}

/// What a manifest says about one chunk, from its media blob and its archive record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestChunk {
    /// Chunk index.
    pub index: u32,
    /// Its `documentId`.
    pub document_id: String,
    /// The media blob.
    pub media_blob: String,
    /// The record blob.
    pub record_blob: String,
    /// Committed size.
    pub size_bytes: u64,
    /// Hex SHA-256, when it was computed.
    pub sha256: Option<String>,
    /// `chunkDuration` from the ACS metadata, in ms.
    pub duration_ms: Option<f64>,
    /// The chunk's `endReason`.
    pub end_reason: Option<String>,
    /// When the record says the chunk was archived.
    pub archived_at: Option<String>,
    #[serde(skip)]
    pause_resume: Vec<Value>,
    #[serde(skip)]
    participants: Vec<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RecordFile {
    acs_metadata: Option<Value>,
    archive: ArchivePart,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ArchivePart {
    end_reason: Option<String>,
    finished_at: Option<String>,
}

impl ManifestChunk {
    /// Reads a chunk's record (`<media>.json`); size and SHA-256 come from the media blob,
    /// which is what the archive holds. The record is our own document, but its ACS part came
    /// from the network: lists are capped and values kept only with the expected types.
    pub fn from_record(
        index: u32,
        document_id: &str,
        media_blob: &str,
        record_blob: &str,
        size_bytes: u64,
        sha256: Option<String>,
        record: &[u8],
    ) -> Result<ManifestChunk, String> {
        let file: RecordFile = serde_json::from_slice(record)
            .map_err(|e| format!("record {record_blob} is not an archive record: {e}"))?;
        let acs = file.acs_metadata.unwrap_or(Value::Null);
        let list = |key: &str| -> Vec<Value> {
            acs.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().take(MAX_LISTED).cloned().collect())
                .unwrap_or_default()
        };
        Ok(ManifestChunk {
            index,
            document_id: document_id.to_string(),
            media_blob: media_blob.to_string(),
            record_blob: record_blob.to_string(),
            size_bytes,
            sha256,
            duration_ms: acs.get("chunkDuration").and_then(Value::as_f64),
            end_reason: file.archive.end_reason,
            archived_at: file.archive.finished_at,
            pause_resume: list("pauseResumeIntervals"),
            participants: list("participants"),
        })
    }
}

/// A recording's manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub manifest_version: u32,
    /// The recording event's id.
    pub event_id: String,
    /// Call, server call and recording ids.
    pub call: CallIds,
    /// `recordingStartTime`.
    pub recording_start_time: Option<String>,
    /// `recordingDurationMs` from the event.
    pub recording_duration_ms: Option<u64>,
    /// Sum of the chunks' `chunkDuration` (`None` if any chunk lacks it).
    pub chunk_duration_sum_ms: Option<f64>,
    /// `chunkDurationSumMs - recordingDurationMs`, when both are known.
    pub duration_difference_ms: Option<f64>,
    /// `sessionEndReason`.
    pub session_end_reason: Option<String>,
    /// How many chunks.
    pub chunk_count: u32,
    /// Sum of chunk sizes.
    pub total_bytes: u64,
    /// Every chunk, in index order.
    pub chunks: Vec<ManifestChunk>,
    /// Pause/resume intervals of all chunks, as ACS reports them (at most [`MAX_LISTED`]).
    pub pause_resume_intervals: Vec<Value>,
    /// Participants of all chunks, each once (by `participantId`; at most [`MAX_LISTED`]).
    pub participants: Vec<Value>,
    /// The archiver that wrote it.
    pub archiver: String,
    /// When it was written (RFC 3339).
    pub written_at: String,
}

impl Manifest {
    /// Builds the manifest of `job`'s recording from its chunks (any order).
    pub fn build(job: &ChunkJob, mut chunks: Vec<ManifestChunk>, written_at: String) -> Manifest {
        chunks.sort_by_key(|c| c.index);
        let sum = chunks.iter().map(|c| c.duration_ms).sum::<Option<f64>>();
        let mut intervals = Vec::new();
        let mut participants: Vec<Value> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for c in &chunks {
            for i in &c.pause_resume {
                if intervals.len() < MAX_LISTED {
                    intervals.push(i.clone());
                }
            }
            for p in &c.participants {
                let key = p
                    .get("participantId")
                    .map(Value::to_string)
                    .unwrap_or_else(|| p.to_string());
                if participants.len() < MAX_LISTED && seen.insert(key) {
                    participants.push(p.clone());
                }
            }
        }
        Manifest {
            manifest_version: MANIFEST_VERSION,
            event_id: job.event_id.to_string(),
            call: job.call.clone(),
            recording_start_time: job.recording_start_time.as_deref().map(str::to_string),
            recording_duration_ms: job.recording_duration_ms,
            chunk_duration_sum_ms: sum,
            duration_difference_ms: sum
                .zip(job.recording_duration_ms)
                .map(|(s, r)| s - r as f64),
            session_end_reason: job.session_end_reason.as_deref().map(str::to_string),
            chunk_count: job.chunk_count,
            total_bytes: chunks.iter().map(|c| c.size_bytes).sum(),
            chunks,
            pause_resume_intervals: intervals,
            participants,
            archiver: concat!("recording-archiver/", env!("CARGO_PKG_VERSION")).to_string(),
            written_at,
        }
    }
}

/// The message put on `ARCHIVED_NOTIFY_QUEUE` for the manifest `document` (as written, or as
/// read back): where it is and what it holds, enough for a consumer to start without reading
/// it. `notificationId` is the manifest's location, the same in every copy, so a consumer can
/// drop a repeat (see the README on the crash window).
pub fn notification(document: &Value, container: &str, blob: &str, url: &str) -> Value {
    let field = |name: &str| document.get(name).cloned().unwrap_or(Value::Null);
    let media: Vec<Value> = document
        .get("chunks")
        .and_then(Value::as_array)
        .map(|chunks| {
            chunks
                .iter()
                .map(|c| c.get("mediaBlob").cloned().unwrap_or(Value::Null))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "type": "RecordingArchived",
        "notificationId": format!("{container}/{blob}"),
        "manifest": {"container": container, "blob": blob, "url": url},
        "eventId": field("eventId"),
        "call": field("call"),
        "recordingStartTime": field("recordingStartTime"),
        "recordingDurationMs": field("recordingDurationMs"),
        "chunkDurationSumMs": field("chunkDurationSumMs"),
        "chunkCount": field("chunkCount"),
        "totalBytes": field("totalBytes"),
        "media": media,
        "writtenAt": field("writtenAt"),
    })
}

/// What a manifest written earlier says about when it was written, to tell a notification
/// still being sent from one lost to a crash.
pub fn written_at(manifest: &[u8]) -> Option<time::OffsetDateTime> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        written_at: String,
    }
    let head: Head = serde_json::from_slice(manifest).ok()?;
    time::OffsetDateTime::parse(
        &head.written_at,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{ChunkSource, SiblingChunk};

    fn job(n: u32) -> ChunkJob {
        ChunkJob {
            event_id: "evt-1".into(),
            call: CallIds {
                call_id: Some("c-1".into()),
                ..Default::default()
            },
            document_id: "doc-1".into(),
            index: 1,
            chunk_count: n,
            end_reason: None,
            recording_start_time: Some("2026-11-24T09:00:00Z".into()),
            recording_duration_ms: Some(13_000),
            session_end_reason: Some("CallEnded".into()),
            content_type: None,
            channel_type: None,
            format_type: Some("Mp4".into()),
            source: ChunkSource::Preview,
            siblings: (0..n)
                .rev()
                .map(|i| SiblingChunk {
                    document_id: format!("doc-{i}"),
                    index: i,
                    delete: None,
                })
                .collect::<Vec<_>>()
                .into(),
        }
    }

    fn record(duration: f64, participant: &str, end: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "acsMetadata": {
                "chunkDuration": duration,
                "pauseResumeIntervals": [{"startTime": "2026-11-24T09:00:01Z", "duration": 500}],
                "participants": [{"participantId": participant, "channel": 0}, {"participantId": "8:acs:shared"}],
            },
            "archive": {"endReason": end, "finishedAt": "2026-11-24T09:10:00Z"}
        }))
        .unwrap()
    }

    fn chunk(i: u32, duration: f64) -> ManifestChunk {
        ManifestChunk::from_record(
            i,
            &format!("doc-{i}"),
            &format!("m/{i}.mp4"),
            &format!("m/{i}.mp4.json"),
            100 + i as u64,
            Some(format!("sha{i}")),
            &record(duration, &format!("8:acs:p{i}"), "ChunkMaximumTimeExceeded"),
        )
        .unwrap()
    }

    #[test]
    fn the_manifest_sits_beside_the_first_chunk_named_after_it() {
        let t = BlobNameTemplate::default();
        assert_eq!(
            manifest_name(&job(3), &t).unwrap(),
            "2026/11/24/c-1/manifest-doc-0.json"
        );
        let flat = BlobNameTemplate::parse("{documentId}.{ext}").unwrap();
        assert_eq!(
            manifest_name(&job(3), &flat).unwrap(),
            "manifest-doc-0.json"
        );
        let mut lone = job(3);
        lone.siblings = Default::default();
        assert_eq!(manifest_name(&lone, &t), None);
    }

    #[test]
    fn only_a_complete_sibling_list_can_prove_a_recording_whole() {
        assert!(has_complete_siblings(&job(3)));
        let mut short = job(3);
        short.chunk_count = 4;
        assert!(!has_complete_siblings(&short));
        let mut twice = job(2);
        twice.siblings = vec![
            SiblingChunk {
                document_id: "a".into(),
                index: 0,
                delete: None,
            },
            SiblingChunk {
                document_id: "b".into(),
                index: 0,
                delete: None,
            },
        ]
        .into();
        assert!(!has_complete_siblings(&twice));
    }

    #[test]
    fn the_manifest_sums_durations_and_merges_acs_metadata_in_index_order() {
        let m = Manifest::build(
            &job(2),
            vec![chunk(1, 6000.5), chunk(0, 7000.0)],
            "2026-11-24T09:11:00Z".into(),
        );
        let idx: Vec<_> = m.chunks.iter().map(|c| c.index).collect();
        assert_eq!(idx, [0, 1]);
        assert_eq!(m.total_bytes, 201);
        assert_eq!(m.chunk_duration_sum_ms, Some(13000.5));
        assert_eq!(m.duration_difference_ms, Some(0.5));
        assert_eq!(m.pause_resume_intervals.len(), 2);
        let ids: Vec<_> = m
            .participants
            .iter()
            .map(|p| p["participantId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["8:acs:p0", "8:acs:shared", "8:acs:p1"]);
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["chunks"][1]["endReason"], "ChunkMaximumTimeExceeded");
        assert_eq!(v["chunks"][0]["sha256"], "sha0");
        assert_eq!(v["call"]["callId"], "c-1");
        assert_eq!(
            written_at(&serde_json::to_vec(&v).unwrap()),
            Some(time::macros::datetime!(2026-11-24 09:11:00 UTC))
        );
    }

    #[test]
    fn a_missing_duration_gives_no_sum_and_a_foreign_record_is_refused() {
        let mut c = chunk(0, 1.0);
        c.duration_ms = None;
        let m = Manifest::build(&job(2), vec![c, chunk(1, 2.0)], "t".into());
        assert_eq!(m.chunk_duration_sum_ms, None);
        assert_eq!(m.duration_difference_ms, None);
        assert!(ManifestChunk::from_record(0, "d", "m", "r", 1, None, b"[1,2]").is_err());
    }

    #[test]
    fn the_notification_names_the_manifest_and_summarises_it() {
        let m = Manifest::build(
            &job(2),
            vec![chunk(0, 1.0), chunk(1, 2.0)],
            "2026-11-24T09:11:00Z".into(),
        );
        let n = notification(
            &serde_json::to_value(&m).unwrap(),
            "recordings",
            "a/manifest-doc-0.json",
            "http://x/recordings/a/manifest-doc-0.json",
        );
        assert_eq!(n["type"], "RecordingArchived");
        assert_eq!(n["notificationId"], "recordings/a/manifest-doc-0.json");
        assert_eq!(n["manifest"]["blob"], "a/manifest-doc-0.json");
        assert_eq!(n["chunkCount"], 2);
        assert_eq!(n["totalBytes"], 201);
        assert_eq!(n["media"][1], "m/1.mp4");
    }
}
