//! The archive as a catalog: every archived blob carries blob index tags ([`tags`]), so
//! recordings are found by call, server call, recording or start date with Find Blobs by Tags
//! instead of listing the container; a recording whose chunks are all archived gets a
//! [`manifest`]; and the headers every archived blob is written with live in [`mod@write`].
//!
//! [`find`] is the selection `archiver find` and `archiver verify` share: in goes a
//! [`Selector`] (a call, server call, recording or start-date range); out come the recordings
//! it matches, each with its chunks' blob names, sizes and SHA-256, and whether it is complete
//! (its manifest exists, or every chunk's record does).
//!
//! | file | job |
//! |---|---|
//! | [`tags`] | tag derivation and validation, `x-ms-tags`, `where` expressions (pure) |
//! | [`manifest`] | the manifest model, its name, the notification message (pure) |
//! | [`mod@write`] | tier, encryption scope, WORM and tag headers for a commit (pure) |

pub mod manifest;
pub mod tags;
pub mod write;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::blob::BlobClient;
use crate::recording::CallIds;
use crate::storage::StorageError;
use tags::{BadTagValue, BlobKind, Condition, TagQuery};

/// Which recordings to select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `--call ID`: the call id of the event subject.
    Call(String),
    /// `--server-call ID`.
    ServerCall(String),
    /// `--recording ID`.
    Recording(String),
    /// `--since DATE [--until DATE]`: recordings that started in `[since, until)`, as
    /// `recordingStart` tag values (UTC, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ`).
    Started {
        /// Inclusive lower bound.
        since: String,
        /// Exclusive upper bound.
        until: Option<String>,
    },
}

/// A selector that cannot be asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// An id no tag can hold, so no blob can carry it.
    #[error(transparent)]
    BadValue(#[from] BadTagValue),
    /// A date that is neither `YYYY-MM-DD` nor RFC 3339.
    #[error("`{0}` is not a date (YYYY-MM-DD) or a time (RFC 3339)")]
    BadDate(String),
}

impl Selector {
    /// `--since`/`--until` from the command line: a date means its whole day (`--until
    /// 2026-11-24` includes that day), a time (RFC 3339, any offset) that instant, in UTC.
    pub fn started(since: &str, until: Option<&str>) -> Result<Selector, SelectorError> {
        Ok(Selector::Started {
            since: bound(since, false)?,
            until: until.map(|u| bound(u, true)).transpose()?,
        })
    }

    /// The `where` expression that finds this selection's blobs of `kind`.
    pub fn query(&self, kind: BlobKind) -> Result<TagQuery, SelectorError> {
        let mut conditions = match self {
            Selector::Call(id) => vec![Condition::equals(tags::CALL_ID, id)?],
            Selector::ServerCall(id) => vec![Condition::equals(tags::SERVER_CALL_ID, id)?],
            Selector::Recording(id) => vec![Condition::equals(tags::RECORDING_ID, id)?],
            Selector::Started { since, until } => {
                let mut c = vec![Condition::at_least(tags::RECORDING_START, since)?];
                if let Some(until) = until {
                    c.push(Condition::below(tags::RECORDING_START, until)?);
                }
                c
            }
        };
        conditions.push(Condition::equals(tags::KIND, kind.as_str())?);
        Ok(TagQuery(conditions))
    }
}

/// A `recordingStart` bound: a date's first second, or (for an inclusive `until` date) the
/// next day's; a time as its tag value.
fn bound(text: &str, next_day: bool) -> Result<String, SelectorError> {
    let bad = || SelectorError::BadDate(text.chars().take(80).collect());
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(text, &date_format) {
        let date = if next_day {
            date.next_day().ok_or_else(bad)?
        } else {
            date
        };
        return date.format(&date_format).map_err(|_| bad());
    }
    tags::start_tag(text).ok_or_else(bad)
}

/// One archived chunk, as its record tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedChunk {
    /// Chunk index.
    pub index: u32,
    /// Its `documentId`.
    pub document_id: String,
    /// The media blob.
    pub media_blob: String,
    /// The record blob (`<media>.json`).
    pub record_blob: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Hex SHA-256, when it was computed.
    pub sha256: Option<String>,
    /// When it was archived (RFC 3339).
    pub archived_at: Option<String>,
}

/// One recording and what the archive holds of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedRecording {
    /// The recording event's id: what ties its chunks together.
    pub event_id: String,
    /// Call, server call and recording ids.
    pub call: CallIds,
    /// `recordingStartTime`.
    pub recording_start_time: Option<String>,
    /// How many chunks the recording has, as its records say.
    pub chunk_count: Option<u32>,
    /// The chunks found, in index order.
    pub chunks: Vec<ArchivedChunk>,
    /// The manifest blob, once written.
    pub manifest: Option<String>,
}

impl ArchivedRecording {
    /// Complete: the manifest exists, or a record exists for every chunk index.
    pub fn is_complete(&self) -> bool {
        self.manifest.is_some()
            || self
                .chunk_count
                .is_some_and(|n| (0..n).all(|i| self.chunks.iter().any(|c| c.index == i)))
    }

    /// Sum of chunk sizes.
    pub fn total_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.size_bytes).sum()
    }
}

/// Why a selection could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The selector cannot be asked for.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// A Blob call failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The part of an archive record a catalog reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordHead {
    archive: RecordArchive,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordArchive {
    source_event_id: String,
    document_id: String,
    chunk_index: u32,
    #[serde(default)]
    chunk_count: Option<u32>,
    media_blob: String,
    size_bytes: u64,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    finished_at: Option<String>,
    #[serde(default)]
    call: CallIds,
    #[serde(default)]
    recording_start_time: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestHead {
    event_id: String,
}

/// Groups records (`(record blob, its JSON)`) and manifests (`(blob, its JSON)`) into
/// recordings, ordered by start time then event id. Unreadable documents are skipped with a
/// warning: a catalog lists what it can prove.
fn group(records: &[(String, Vec<u8>)], manifests: &[(String, Vec<u8>)]) -> Vec<ArchivedRecording> {
    let mut by_event: BTreeMap<String, ArchivedRecording> = BTreeMap::new();
    for (blob, body) in records {
        let head: RecordHead = match serde_json::from_slice(body) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(blob = %blob, error = %e, "not an archive record; skipped");
                continue;
            }
        };
        let a = head.archive;
        let entry = by_event
            .entry(a.source_event_id.clone())
            .or_insert_with(|| ArchivedRecording {
                event_id: a.source_event_id.clone(),
                call: a.call.clone(),
                recording_start_time: a.recording_start_time.clone(),
                chunk_count: a.chunk_count,
                chunks: Vec::new(),
                manifest: None,
            });
        entry.chunk_count = entry.chunk_count.max(a.chunk_count);
        entry.chunks.push(ArchivedChunk {
            index: a.chunk_index,
            document_id: a.document_id,
            media_blob: a.media_blob,
            record_blob: blob.clone(),
            size_bytes: a.size_bytes,
            sha256: a.sha256,
            archived_at: a.finished_at,
        });
    }
    for (blob, body) in manifests {
        match serde_json::from_slice::<ManifestHead>(body) {
            Ok(head) => {
                if let Some(r) = by_event.get_mut(&head.event_id) {
                    r.manifest = Some(blob.clone());
                }
            }
            Err(e) => tracing::warn!(blob = %blob, error = %e, "not a manifest; skipped"),
        }
    }
    let mut out: Vec<_> = by_event.into_values().collect();
    for r in &mut out {
        r.chunks
            .sort_by(|a, b| (a.index, &a.document_id).cmp(&(b.index, &b.document_id)));
    }
    out.sort_by(|a, b| {
        (&a.recording_start_time, &a.event_id).cmp(&(&b.recording_start_time, &b.event_id))
    });
    out
}

/// The recordings `selector` matches in `client`'s container, each with its chunks: two Find
/// Blobs by Tags queries (records, manifests), then one small read per record and manifest.
pub async fn find(
    client: &BlobClient,
    selector: &Selector,
) -> Result<Vec<ArchivedRecording>, CatalogError> {
    let read = |kind| async move {
        let query = selector.query(kind)?.to_string();
        let mut docs = Vec::new();
        for blob in client.find_blobs_by_tags(&query).await? {
            if let Some(body) = client
                .get_blob_small(&blob, manifest::MAX_RECORD_BYTES)
                .await?
            {
                docs.push((blob, body.to_vec()));
            }
        }
        Ok::<_, CatalogError>(docs)
    };
    let records = read(BlobKind::Record).await?;
    let manifests = read(BlobKind::Manifest).await?;
    Ok(group(&records, &manifests))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_become_tag_queries_for_one_kind() {
        assert_eq!(
            Selector::Call("c-1".into())
                .query(BlobKind::Record)
                .unwrap()
                .to_string(),
            "\"callId\" = 'c-1' AND \"kind\" = 'record'"
        );
        assert_eq!(
            Selector::started("2026-11-24", Some("2026-11-30"))
                .unwrap()
                .query(BlobKind::Manifest)
                .unwrap()
                .to_string(),
            "\"recordingStart\" >= '2026-11-24' AND \"recordingStart\" < '2026-12-01' AND \"kind\" = 'manifest'"
        );
        assert_eq!(
            Selector::started("2026-11-24T10:00:00+01:00", None).unwrap(),
            Selector::Started {
                since: "2026-11-24T09:00:00Z".into(),
                until: None
            }
        );
        assert!(matches!(
            Selector::started("last tuesday", None),
            Err(SelectorError::BadDate(_))
        ));
        assert!(matches!(
            Selector::Recording("r' OR 'x'='x".into()).query(BlobKind::Record),
            Err(SelectorError::BadValue(_))
        ));
    }

    fn record(event: &str, index: u32, count: u32) -> (String, Vec<u8>) {
        let blob = format!("d/{index:03}-doc-{index}.mp4.json");
        let body = json!({"acsMetadata": null, "archive": {
            "sourceEventId": event, "documentId": format!("doc-{index}"), "chunkIndex": index,
            "chunkCount": count, "mediaBlob": format!("d/{index:03}-doc-{index}.mp4"),
            "sizeBytes": 10 + index, "sha256": "ab", "finishedAt": "2026-11-24T10:00:00Z",
            "call": {"callId": "c-1"}, "recordingStartTime": "2026-11-24T09:00:00Z"}});
        (blob, serde_json::to_vec(&body).unwrap())
    }

    #[test]
    fn records_group_into_recordings_complete_when_every_chunk_or_the_manifest_is_there() {
        let records = vec![
            record("e-2", 1, 2),
            record("e-1", 0, 2),
            record("e-2", 0, 2),
            ("junk.json".into(), b"{}".to_vec()),
        ];
        let found = group(&records, &[]);
        assert_eq!(found.len(), 2);
        let e2 = found.iter().find(|r| r.event_id == "e-2").unwrap();
        assert!(e2.is_complete());
        assert_eq!(e2.total_bytes(), 21);
        assert_eq!(e2.chunks[0].index, 0);
        assert_eq!(e2.chunks[0].media_blob, "d/000-doc-0.mp4");
        assert_eq!(e2.call.call_id.as_deref(), Some("c-1"));
        let e1 = found.iter().find(|r| r.event_id == "e-1").unwrap();
        assert!(!e1.is_complete(), "chunk 1 of e-1 is missing");

        let manifest = (
            "d/manifest-doc-0.json".to_string(),
            serde_json::to_vec(&json!({"eventId": "e-1"})).unwrap(),
        );
        let found = group(&records, &[manifest]);
        let e1 = found.iter().find(|r| r.event_id == "e-1").unwrap();
        assert_eq!(e1.manifest.as_deref(), Some("d/manifest-doc-0.json"));
        assert!(e1.is_complete());
    }
}
