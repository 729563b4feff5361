//! `Microsoft.Communication.RecordingFileStatusUpdated`: its data, turned into one job per chunk.
//!
//! Three shapes of the same event exist (see `docs/protocols.md` §1.1): the 2021 preview with
//! only `documentId`, the public preview that added `contentLocation`/`metadataLocation`, and GA
//! with `deleteLocation` and the content/channel/format types. All three become the same
//! [`ChunkJob`]; only [`ChunkSource`] differs. Pure: no I/O.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use url::Url;

use crate::config::naming::{BlobNameTemplate, Part, Placeholder};
use crate::json;

/// The event type this app archives.
pub(crate) const RECORDING_EVENT_TYPE: &str = "Microsoft.Communication.RecordingFileStatusUpdated";

/// Most chunks one event may list; an event listing more is rejected like any malformed event.
/// ACS cuts a chunk at 4 h or 1.5 GB, so 1,000 chunks is more than five months of one call or
/// 1.5 TB; the cap bounds what one event can cost to read, hold and enqueue.
pub const MAX_CHUNKS_PER_EVENT: usize = 1000;

/// Longest location URL accepted. ACS locations are about 120 bytes; servers, proxies and
/// HTTP clients refuse URIs of a few KiB, so a longer one can never be fetched and is refused
/// at once instead of being retried.
pub(crate) const MAX_URL_BYTES: usize = 2048;

/// Longest id or event string kept (event id, call ids, times, type names). ACS ids are under
/// 100 bytes; longer ones are refused rather than copied into every job and blob record.
pub(crate) const MAX_ID_BYTES: usize = 512;

/// Where a chunk's media and metadata are fetched from.
// One per chunk, and at most a delivery's concurrency of them live at once: the size gap to
// `Preview` costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ChunkSource {
    /// 2021 preview events carry only the document id; the URLs are built from the ACS endpoint
    /// (`{endpoint}/recording/download/{documentId}` and `.../metadata`).
    Preview,
    /// The event names the URLs. `delete` exists on GA events only.
    #[serde(rename_all = "camelCase")]
    Located {
        /// `contentLocation`: the media.
        content: Url,
        /// `metadataLocation`: the chunk's metadata document (absent on odd events).
        metadata: Option<Url>,
        /// `deleteLocation`: DELETE it to free the recording early (GA only).
        delete: Option<Url>,
    },
}

/// Ids of the call, as far as the event's `subject` reveals them. Microsoft's two GA samples
/// disagree on the subject: `/recording/call/{callId}/serverCallId/{serverCallId}/recordingId/{recordingId}`
/// (Event Grid docs) and `/recording/call/{callId}/recordingId/{recordingId}` (REST spec
/// example), so every part is optional and nothing but naming depends on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallIds {
    /// `/recording/call/{callId}/...`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// `.../serverCallId/{serverCallId}`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_call_id: Option<String>,
    /// `.../recordingId/{recordingId}`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
}

/// Longest id kept from a subject: ids travel in every queue message (64 KiB at most), so a
/// hostile subject must not make a job unsendable.
const MAX_SUBJECT_ID: usize = 256;

impl CallIds {
    /// Reads the ids out of a subject in either published shape. A value runs up to the next
    /// key, so a server call id holding `/` (base64) stays whole. Unknown shapes, and values
    /// longer than [`MAX_SUBJECT_ID`], give empty ids, never an error.
    pub(crate) fn from_subject(subject: Option<&str>) -> CallIds {
        let mut ids = CallIds::default();
        let Some(subject) = subject else { return ids };
        let key_of = |part: &str| {
            ["call", "serverCallId", "recordingId"]
                .iter()
                .position(|k| part.eq_ignore_ascii_case(k))
        };
        // Read in one pass over the subject, holding only the key being read and where its
        // value starts: a subject of a million `/` costs nothing more than a short one.
        let mut open: Option<(usize, usize)> = None;
        let mut start: usize = 0;
        for part in subject.split('/') {
            if let Some(key) = key_of(part) {
                if let Some((key, from)) = open.take() {
                    ids.fill(key, &subject[from..start.saturating_sub(1).max(from)]);
                }
                open = Some((key, (start + part.len() + 1).min(subject.len())));
            }
            start += part.len() + 1;
        }
        if let Some((key, from)) = open {
            ids.fill(key, &subject[from..]);
        }
        ids
    }

    /// Sets the id `key` names to `value`, unless it is already set, empty or too long.
    fn fill(&mut self, key: usize, value: &str) {
        let value = value.trim_matches('/');
        let slot = match key {
            0 => &mut self.call_id,
            1 => &mut self.server_call_id,
            _ => &mut self.recording_id,
        };
        if slot.is_none() && !value.is_empty() && value.len() <= MAX_SUBJECT_ID {
            *slot = Some(value.to_string());
        }
    }

    fn all(&self) -> impl Iterator<Item = &str> {
        [&self.call_id, &self.server_call_id, &self.recording_id]
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}

/// Everything needed to archive one recording chunk. Small and serialisable: in queue mode it
/// is the queue message. What all chunks of an event share (ids, times, types, the sibling
/// list) is reference-counted, so an event's jobs together cost about what the event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkJob {
    /// The Event Grid / CloudEvents `id` of the event this job came from.
    pub event_id: Arc<str>,
    /// Ids from the event subject.
    #[serde(default)]
    pub call: CallIds,
    /// The chunk's `documentId`: unique per chunk, and the stable key for deduplication.
    pub document_id: String,
    /// The chunk's `index` within the recording.
    pub index: u32,
    /// How many chunks the event listed (the recording is complete when all are archived).
    pub chunk_count: u32,
    /// Why the chunk ended (`SessionEnded`, `ChunkMaximumSizeExceeded`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// `recordingStartTime` (RFC 3339), or the event time when that is missing or malformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_start_time: Option<Arc<str>>,
    /// `recordingDurationMs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_duration_ms: Option<u64>,
    /// `sessionEndReason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_end_reason: Option<Arc<str>>,
    /// `recordingContentType`: `AudioVideo` or `Audio` (GA only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<Arc<str>>,
    /// `recordingChannelType`: `Mixed` or `Unmixed` (GA only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_type: Option<Arc<str>>,
    /// `recordingFormatType`: `Mp4`, `Mp3` or `Wav` (GA only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_type: Option<Arc<str>>,
    /// Where to fetch the chunk.
    pub source: ChunkSource,
    /// Every chunk of the recording (this one included), so whichever chunk finishes last can
    /// tell that the whole recording is archived: it writes the manifest and, when every
    /// chunk has a `deleteLocation`, deletes the recording (`DELETE_AFTER_ARCHIVE`). Shared by
    /// all jobs of the event. Empty when the set is unknown: a chunk of the event was
    /// unreadable, or (queue mode) the list does not fit in a queue message.
    #[serde(default, skip_serializing_if = "<[SiblingChunk]>::is_empty")]
    pub siblings: Siblings,
}

/// The chunks of one recording, shared by the jobs of all of them: reading an event of n
/// chunks costs O(n), not the O(n²) of a list per job. Reads as a slice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Siblings(Arc<[SiblingChunk]>);

impl std::ops::Deref for Siblings {
    type Target = [SiblingChunk];

    fn deref(&self) -> &[SiblingChunk] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Siblings {
    type Item = &'a SiblingChunk;
    type IntoIter = std::slice::Iter<'a, SiblingChunk>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<Vec<SiblingChunk>> for Siblings {
    fn from(list: Vec<SiblingChunk>) -> Self {
        Siblings(list.into())
    }
}

/// One chunk of a recording, as its siblings know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiblingChunk {
    /// Its `documentId`.
    pub document_id: String,
    /// Its `index`.
    pub index: u32,
    /// Its `deleteLocation` (GA events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<Url>,
}

impl ChunkJob {
    /// The job a sibling chunk would have: the same recording, its own id, index and source.
    pub(crate) fn for_sibling(&self, sibling: &SiblingChunk) -> ChunkJob {
        ChunkJob {
            document_id: sibling.document_id.clone(),
            index: sibling.index,
            ..self.clone()
        }
    }

    /// Checks what the webhook checks while reading an event, for a job that arrives already
    /// built (a queue message, a replayed file): a job that fails can never be archived, and
    /// is refused before anything is downloaded.
    pub fn check(&self) -> Result<(), FieldError> {
        check_id("eventId", &self.event_id)?;
        check_document_id("documentId", &self.document_id)?;
        for id in self.call.all() {
            check_id("call", id)?;
        }
        for (name, value) in [
            ("recordingStartTime", &self.recording_start_time),
            ("sessionEndReason", &self.session_end_reason),
            ("contentType", &self.content_type),
            ("channelType", &self.channel_type),
            ("formatType", &self.format_type),
        ] {
            if let Some(value) = value {
                check_id(name, value)?;
            }
        }
        if let Some(reason) = &self.end_reason {
            check_id("endReason", reason)?;
        }
        if self.chunk_count == 0 || self.chunk_count as usize > MAX_CHUNKS_PER_EVENT {
            return Err(FieldError::new(
                "chunkCount",
                format!("must be between 1 and {MAX_CHUNKS_PER_EVENT}"),
            ));
        }
        if let ChunkSource::Located {
            content,
            metadata,
            delete,
        } = &self.source
        {
            for (name, url) in [
                ("source.content", Some(content)),
                ("source.metadata", metadata.as_ref()),
                ("source.delete", delete.as_ref()),
            ] {
                if let Some(url) = url {
                    check_url_length(name, url.as_str())?;
                }
            }
        }
        if self.siblings.len() > self.chunk_count as usize {
            return Err(FieldError::new(
                "siblings",
                "lists more chunks than chunkCount",
            ));
        }
        for (i, sibling) in self.siblings.iter().enumerate() {
            check_document_id(&format!("siblings[{i}].documentId"), &sibling.document_id)?;
            if let Some(url) = &sibling.delete {
                check_url_length(&format!("siblings[{i}].delete"), url.as_str())?;
            }
        }
        Ok(())
    }
}

fn check_id(field: &str, value: &str) -> Result<(), FieldError> {
    if value.len() > MAX_ID_BYTES {
        return Err(FieldError::new(
            field,
            format!(
                "is {} bytes long; at most {MAX_ID_BYTES} are accepted",
                value.len()
            ),
        ));
    }
    Ok(())
}

fn check_document_id(field: &str, id: &str) -> Result<(), FieldError> {
    if id.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if !is_safe_document_id(id) {
        return Err(FieldError::new(
            field,
            "may hold only letters, digits, '-', '_' and '.' (at most 256, not starting with '.')",
        ));
    }
    Ok(())
}

fn check_url_length(field: &str, url: &str) -> Result<(), FieldError> {
    if url.len() > MAX_URL_BYTES {
        return Err(FieldError::new(
            field,
            format!(
                "is {} bytes long; a location over {MAX_URL_BYTES} bytes can never be fetched",
                url.len()
            ),
        ));
    }
    Ok(())
}

/// A field of a recording event that is missing or unusable. `field` is a JSON path such as
/// `data.recordingStorageInfo.recordingChunks[1].documentId`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// Path of the offending field.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The chunks of one recording event: the usable ones as jobs, the others with their reasons.
#[derive(Debug, Default)]
pub struct ParsedRecording {
    /// One job per usable chunk, in index order.
    pub jobs: Vec<ChunkJob>,
    /// Chunks that can never be archived as sent.
    pub rejected: Vec<FieldError>,
}

/// The envelope facts a recording event's data is read with.
#[derive(Debug, Clone, Copy)]
pub struct EventContext<'a> {
    /// Event id (`id`).
    pub id: &'a str,
    /// `subject`, if any.
    pub subject: Option<&'a str>,
    /// `eventTime` / `time`, if any.
    pub time: Option<&'a str>,
}

/// The fields of a recording event's `data` this app reads; others are skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataFields<'a> {
    #[serde(borrow, default)]
    recording_storage_info: Option<&'a RawValue>,
    #[serde(borrow, default)]
    recording_start_time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    recording_duration_ms: Option<&'a RawValue>,
    #[serde(borrow, default)]
    session_end_reason: Option<&'a RawValue>,
    #[serde(borrow, default)]
    recording_content_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    recording_channel_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    recording_format_type: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StorageInfo<'a> {
    #[serde(borrow, default)]
    recording_chunks: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChunkFields<'a> {
    #[serde(borrow, default)]
    document_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    index: Option<&'a RawValue>,
    #[serde(borrow, default)]
    end_reason: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content_location: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata_location: Option<&'a RawValue>,
    #[serde(borrow, default)]
    delete_location: Option<&'a RawValue>,
}

const CHUNKS: &str = "data.recordingStorageInfo.recordingChunks";

/// Turns a recording event's `data` (`None` when the event has none) into chunk jobs.
///
/// An error for the whole event when `data` lacks the chunk list, lists more than
/// [`MAX_CHUNKS_PER_EVENT`], or carries an id too long to keep; otherwise each chunk stands
/// alone, so one malformed chunk never costs the others. The cost is linear in the size of
/// `data`: fields are read from borrowed slices, and what chunks share is shared.
pub fn parse_recording_data(
    ctx: EventContext<'_>,
    data: Option<&RawValue>,
) -> Result<ParsedRecording, FieldError> {
    let data = data.ok_or_else(|| FieldError::new("data", "must be an object"))?;
    let fields: DataFields<'_> = json::object(data).map_err(|e| FieldError::new("data", e))?;
    let info = fields
        .recording_storage_info
        .ok_or_else(|| FieldError::new("data.recordingStorageInfo", "is required"))?;
    let info: StorageInfo<'_> =
        json::object(info).map_err(|e| FieldError::new("data.recordingStorageInfo", e))?;
    let chunks = info
        .recording_chunks
        .ok_or_else(|| FieldError::new(CHUNKS, "is required"))?;
    let chunks = json::array(chunks, MAX_CHUNKS_PER_EVENT).map_err(|e| match e {
        json::ArrayError::NotArray(_) => FieldError::new(CHUNKS, "must be an array"),
        json::ArrayError::TooLong { max } => FieldError::new(
            CHUNKS,
            format!("lists more than {max} chunks, more than a recording can have"),
        ),
    })?;
    if chunks.is_empty() {
        return Err(FieldError::new(CHUNKS, "is empty"));
    }
    check_id("id", ctx.id)?;
    let call = CallIds::from_subject(ctx.subject);
    for id in call.all() {
        check_id("subject", id)?;
    }
    let shared = |raw: Option<&RawValue>, field: &str| -> Result<Option<Arc<str>>, FieldError> {
        let value = json::text(raw).map(|t| Arc::<str>::from(&*t));
        if let Some(v) = &value {
            check_id(&format!("data.{field}"), v)?;
        }
        Ok(value)
    };
    let recording_start_time = shared(fields.recording_start_time, "recordingStartTime")?
        .filter(|t| is_rfc3339(t))
        .or_else(|| {
            ctx.time
                .filter(|t| t.len() <= MAX_ID_BYTES && is_rfc3339(t))
                .map(Arc::from)
        });
    let template = ChunkJob {
        event_id: Arc::from(ctx.id),
        call,
        document_id: String::new(),
        index: 0,
        chunk_count: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
        end_reason: None,
        recording_start_time,
        recording_duration_ms: json::unsigned(fields.recording_duration_ms),
        session_end_reason: shared(fields.session_end_reason, "sessionEndReason")?,
        content_type: shared(fields.recording_content_type, "recordingContentType")?,
        channel_type: shared(fields.recording_channel_type, "recordingChannelType")?,
        format_type: shared(fields.recording_format_type, "recordingFormatType")?,
        source: ChunkSource::Preview,
        siblings: Siblings::default(),
    };
    let mut parsed = ParsedRecording::default();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let path = format!("{CHUNKS}[{i}]");
        match parse_chunk(&path, chunk, &template) {
            Ok(job) => parsed.jobs.push(job),
            Err(e) => parsed.rejected.push(e),
        }
    }
    parsed.jobs.sort_by_key(|j| j.index);
    // Only a complete set: the manifest and `DELETE_AFTER_ARCHIVE` both act on "every chunk
    // is archived", which an event with an unreadable chunk can never prove.
    if parsed.rejected.is_empty() {
        let siblings: Siblings = parsed
            .jobs
            .iter()
            .map(|j| SiblingChunk {
                document_id: j.document_id.clone(),
                index: j.index,
                delete: match &j.source {
                    ChunkSource::Located { delete, .. } => delete.clone(),
                    ChunkSource::Preview => None,
                },
            })
            .collect::<Vec<_>>()
            .into();
        for job in &mut parsed.jobs {
            job.siblings = siblings.clone();
        }
    }
    Ok(parsed)
}

fn parse_chunk(path: &str, chunk: &RawValue, template: &ChunkJob) -> Result<ChunkJob, FieldError> {
    let fields: ChunkFields<'_> = json::object(chunk).map_err(|e| FieldError::new(path, e))?;
    let document_id = json::text(fields.document_id)
        .ok_or_else(|| FieldError::new(format!("{path}.documentId"), "is required"))?;
    check_document_id(&format!("{path}.documentId"), &document_id)?;
    let index = fields
        .index
        .ok_or_else(|| FieldError::new(format!("{path}.index"), "is required"))?;
    let index = json::unsigned(Some(index))
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| {
            FieldError::new(format!("{path}.index"), "must be a non-negative integer")
        })?;
    let url = |name: &str, raw: Option<&RawValue>| -> Result<Option<Url>, FieldError> {
        let text = json::string(raw)
            .map_err(|()| FieldError::new(format!("{path}.{name}"), "must be a string"))?;
        match text.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(s) => {
                check_url_length(&format!("{path}.{name}"), s)?;
                Url::parse(s).map(Some).map_err(|e| {
                    FieldError::new(format!("{path}.{name}"), format!("is not a URL ({e})"))
                })
            }
        }
    };
    let content = url("contentLocation", fields.content_location)?;
    let metadata = url("metadataLocation", fields.metadata_location)?;
    let delete = url("deleteLocation", fields.delete_location)?;
    let source = match (content, metadata) {
        (Some(content), metadata) => ChunkSource::Located {
            content,
            metadata,
            delete,
        },
        (None, None) => ChunkSource::Preview,
        (None, Some(_)) => {
            return Err(FieldError::new(
                format!("{path}.contentLocation"),
                "is required when metadataLocation is given",
            ))
        }
    };
    let end_reason = json::text(fields.end_reason).map(Cow::into_owned);
    if let Some(reason) = &end_reason {
        check_id(&format!("{path}.endReason"), reason)?;
    }
    Ok(ChunkJob {
        document_id: document_id.into_owned(),
        index,
        end_reason,
        source,
        ..template.clone()
    })
}

/// Document ids end up in URLs and blob names; ACS ids are like `0-eus-d12-801b3f...`.
pub(crate) fn is_safe_document_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !id.starts_with('.')
}

fn is_rfc3339(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

/// A recording file format: the blob's extension and content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaFormat {
    /// File extension, without the dot.
    pub ext: &'static str,
    /// MIME type stored as the blob's content type.
    pub content_type: &'static str,
}

impl MediaFormat {
    /// MPEG-4 audio and video.
    pub const MP4: MediaFormat = MediaFormat {
        ext: "mp4",
        content_type: "video/mp4",
    };
    /// MP3 audio.
    pub(crate) const MP3: MediaFormat = MediaFormat {
        ext: "mp3",
        content_type: "audio/mpeg",
    };
    /// WAV audio.
    pub(crate) const WAV: MediaFormat = MediaFormat {
        ext: "wav",
        content_type: "audio/wav",
    };
    /// Anything we cannot tell.
    pub(crate) const UNKNOWN: MediaFormat = MediaFormat {
        ext: "bin",
        content_type: "application/octet-stream",
    };

    /// The format from the first source that names one: the event's `recordingFormatType`
    /// (GA), the metadata document's `recordingInfo.format`, the download's `Content-Type`;
    /// `AudioVideo` content is always MP4. Unknown gives `.bin`.
    pub fn infer(hints: FormatHints<'_>) -> MediaFormat {
        let FormatHints {
            event_format,
            metadata_format,
            event_content,
            http_content_type,
        } = hints;
        let by_name = |name: &str| match name.trim().to_ascii_lowercase().as_str() {
            "mp4" => Some(MediaFormat::MP4),
            "mp3" => Some(MediaFormat::MP3),
            "wav" => Some(MediaFormat::WAV),
            _ => None,
        };
        let by_mime = |mime: &str| match mime
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "video/mp4" | "audio/mp4" => Some(MediaFormat::MP4),
            "audio/mpeg" | "audio/mp3" => Some(MediaFormat::MP3),
            "audio/wav" | "audio/x-wav" | "audio/wave" => Some(MediaFormat::WAV),
            _ => None,
        };
        event_format
            .and_then(by_name)
            .or_else(|| metadata_format.and_then(by_name))
            .or_else(|| {
                event_content
                    .filter(|c| c.eq_ignore_ascii_case("AudioVideo"))
                    .map(|_| MediaFormat::MP4)
            })
            .or_else(|| http_content_type.and_then(by_mime))
            .unwrap_or(MediaFormat::UNKNOWN)
    }
}

/// What may name a chunk's format, each from a different place and known at a different time;
/// [`MediaFormat::infer`] takes the first that names one, in the order of the fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct FormatHints<'a> {
    /// The GA event's `recordingFormatType` (`Mp4`, `Mp3`, `Wav`).
    pub event_format: Option<&'a str>,
    /// The ACS metadata document's `recordingInfo.format`.
    pub metadata_format: Option<&'a str>,
    /// The event's `recordingContentType` (`AudioVideo` is always MP4).
    pub event_content: Option<&'a str>,
    /// The download response's `Content-Type`.
    pub http_content_type: Option<&'a str>,
}

/// The blobs one chunk is archived as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobNames {
    /// The media.
    pub media: String,
    /// `<media>.json`: the ACS metadata document and our archive record.
    pub record: String,
}

impl ChunkJob {
    /// Names the chunk's blobs from `template`. Deterministic: the same chunk always gets the
    /// same names, which is what makes redeliveries find their earlier work.
    pub fn blob_names(&self, template: &BlobNameTemplate, format: MediaFormat) -> BlobNames {
        let start = self
            .recording_start_time
            .as_deref()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| t.to_offset(time::UtcOffset::UTC));
        let date = |f: fn(&time::OffsetDateTime) -> String| {
            start
                .as_ref()
                .map(f)
                .unwrap_or_else(|| "undated".to_string())
        };
        let mut media = String::new();
        for part in template.parts() {
            match part {
                Part::Literal(l) => media.push_str(l),
                Part::Value(p) => media.push_str(&match p {
                    Placeholder::Year => date(|t| format!("{:04}", t.year())),
                    Placeholder::Month => date(|t| format!("{:02}", u8::from(t.month()))),
                    Placeholder::Day => date(|t| format!("{:02}", t.day())),
                    Placeholder::Time => {
                        date(|t| format!("{:02}{:02}{:02}", t.hour(), t.minute(), t.second()))
                    }
                    Placeholder::CallId => segment(
                        self.call
                            .call_id
                            .as_deref()
                            .or(self.call.server_call_id.as_deref())
                            .or(self.call.recording_id.as_deref()),
                        "unknown-call",
                    ),
                    Placeholder::ServerCallId => {
                        segment(self.call.server_call_id.as_deref(), "unknown-server-call")
                    }
                    Placeholder::RecordingId => {
                        segment(self.call.recording_id.as_deref(), "unknown-recording")
                    }
                    Placeholder::DocumentId => segment(Some(&self.document_id), "unknown-document"),
                    Placeholder::Index => format!("{:03}", self.index),
                    Placeholder::Ext => format.ext.to_string(),
                }),
            }
        }
        BlobNames {
            record: format!("{media}.json"),
            media,
        }
    }
}

/// A value made safe for one blob-name segment: anything but letters, digits and `-_.=`
/// becomes `_` (server call ids are base64 and may hold `/` and `+`).
fn segment(value: Option<&str>, fallback: &str) -> String {
    let v = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(fallback);
    let cleaned: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if cleaned.trim_matches('.').is_empty() {
        fallback.to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn raw(data: &Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(data).unwrap()
    }

    fn ctx() -> EventContext<'static> {
        EventContext {
            id: "evt-1",
            subject: Some("/recording/call/c-1/serverCallId/s-1"),
            time: Some("2021-07-27T15:20:34.2199328Z"),
        }
    }

    #[test]
    fn subject_ids_are_read_from_both_published_shapes() {
        // REST spec example.
        let ids = CallIds::from_subject(Some("/recording/call/c-1/recordingId/r-9"));
        assert_eq!(ids.call_id.as_deref(), Some("c-1"));
        assert_eq!(ids.recording_id.as_deref(), Some("r-9"));
        assert_eq!(ids.server_call_id, None);
        // Event Grid docs sample; a base64 server call id may hold '/'.
        let ids = CallIds::from_subject(Some(
            "/recording/call/c-1/serverCallId/aHR0c/Hs+1=/recordingId/r-9",
        ));
        assert_eq!(ids.call_id.as_deref(), Some("c-1"));
        assert_eq!(ids.server_call_id.as_deref(), Some("aHR0c/Hs+1="));
        assert_eq!(ids.recording_id.as_deref(), Some("r-9"));
    }

    #[test]
    fn unknown_or_oversized_subjects_give_no_ids() {
        assert_eq!(CallIds::from_subject(Some("whatever")), CallIds::default());
        assert_eq!(CallIds::from_subject(None), CallIds::default());
        assert_eq!(
            CallIds::from_subject(Some("/recording/call//recordingId/")),
            CallIds::default()
        );
        let long = format!("/recording/call/c-1/recordingId/{}", "r".repeat(10_000));
        let ids = CallIds::from_subject(Some(&long));
        assert_eq!(ids.call_id.as_deref(), Some("c-1"));
        assert_eq!(ids.recording_id, None);
    }

    #[test]
    fn a_bad_chunk_does_not_cost_the_good_ones() {
        let data = json!({"recordingStorageInfo": {"recordingChunks": [
            {"documentId": "doc-b", "index": 1},
            {"index": 2},
            {"documentId": "doc-a", "index": 0, "contentLocation": "not a url"},
            {"documentId": "doc-c", "index": 3, "contentLocation": "https://x.asm.skype.com/v1/objects/doc-c/content/audio"}
        ]}, "recordingStartTime": "garbage"});
        let parsed = parse_recording_data(ctx(), Some(&raw(&data))).unwrap();
        let ids: Vec<_> = parsed.jobs.iter().map(|j| j.document_id.as_str()).collect();
        assert_eq!(ids, ["doc-b", "doc-c"]);
        assert_eq!(parsed.jobs[0].chunk_count, 4);
        assert_eq!(parsed.jobs[0].source, ChunkSource::Preview);
        // A malformed start time falls back to the event time.
        assert_eq!(
            parsed.jobs[0].recording_start_time.as_deref(),
            Some("2021-07-27T15:20:34.2199328Z")
        );
        let fields: Vec<_> = parsed.rejected.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "data.recordingStorageInfo.recordingChunks[1].documentId",
                "data.recordingStorageInfo.recordingChunks[2].contentLocation"
            ]
        );
    }

    #[test]
    fn missing_chunk_list_rejects_the_event_naming_the_field() {
        for (data, field) in [
            (json!({}), "data.recordingStorageInfo"),
            (
                json!({"recordingStorageInfo": {}}),
                "data.recordingStorageInfo.recordingChunks",
            ),
            (
                json!({"recordingStorageInfo": {"recordingChunks": []}}),
                "data.recordingStorageInfo.recordingChunks",
            ),
            (json!("text"), "data"),
        ] {
            assert_eq!(
                parse_recording_data(ctx(), Some(&raw(&data)))
                    .unwrap_err()
                    .field,
                field
            );
        }
    }

    #[test]
    fn document_ids_that_could_escape_a_path_are_refused() {
        let data = json!({"recordingStorageInfo": {"recordingChunks": [
            {"documentId": "../../etc", "index": 0}]}});
        let parsed = parse_recording_data(ctx(), Some(&raw(&data))).unwrap();
        assert!(parsed.jobs.is_empty());
        assert!(parsed.rejected[0].field.ends_with("documentId"));
    }

    #[test]
    fn every_job_knows_its_whole_recording_unless_a_chunk_was_unreadable() {
        let data = json!({"recordingStorageInfo": {"recordingChunks": [
            {"documentId": "d1", "index": 1, "contentLocation": "https://a.asm.skype.com/c1", "deleteLocation": "https://a.asm.skype.com/x1"},
            {"documentId": "d0", "index": 0, "contentLocation": "https://a.asm.skype.com/c0", "deleteLocation": "https://a.asm.skype.com/x0"}]}});
        let jobs = parse_recording_data(ctx(), Some(&raw(&data))).unwrap().jobs;
        let ids: Vec<_> = jobs[1]
            .siblings
            .iter()
            .map(|s| (s.document_id.as_str(), s.index))
            .collect();
        assert_eq!(ids, [("d0", 0), ("d1", 1)]);
        assert!(jobs[0].siblings[1]
            .delete
            .as_ref()
            .unwrap()
            .as_str()
            .ends_with("/x1"));
        let sibling = jobs[0].for_sibling(&jobs[0].siblings[1]);
        assert_eq!((sibling.document_id.as_str(), sibling.index), ("d1", 1));

        let data = json!({"recordingStorageInfo": {"recordingChunks": [
            {"documentId": "d0", "index": 0}, {"index": 1}]}});
        let parsed = parse_recording_data(ctx(), Some(&raw(&data))).unwrap();
        assert!(
            parsed.jobs[0].siblings.is_empty(),
            "an incomplete set never allows a delete"
        );
    }

    #[test]
    fn jobs_round_trip_through_json() {
        let data = json!({"recordingStorageInfo": {"recordingChunks": [
            {"documentId": "d", "index": 0, "contentLocation": "https://a.asm.skype.com/c", "metadataLocation": "https://a.asm.skype.com/m"}]}});
        let job = parse_recording_data(ctx(), Some(&raw(&data)))
            .unwrap()
            .jobs
            .remove(0);
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(serde_json::from_str::<ChunkJob>(&text).unwrap(), job);
    }

    fn job(subject: &str, start: Option<&str>) -> ChunkJob {
        let data = json!({"recordingStorageInfo": {"recordingChunks": [{"documentId": "0-wus-d10-abc", "index": 7}]}, "recordingStartTime": start});
        let ctx = EventContext {
            id: "e",
            subject: Some(subject),
            time: None,
        };
        parse_recording_data(ctx, Some(&raw(&data)))
            .unwrap()
            .jobs
            .remove(0)
    }

    #[test]
    fn default_names_are_dated_per_call_and_ordered() {
        let j = job(
            "/recording/call/c-1/serverCallId/s+1=",
            Some("2026-11-24T23:59:59.9+02:00"),
        );
        let names = j.blob_names(&BlobNameTemplate::default(), MediaFormat::MP4);
        assert_eq!(names.media, "2026/11/24/c-1/007-0-wus-d10-abc.mp4");
        assert_eq!(names.record, "2026/11/24/c-1/007-0-wus-d10-abc.mp4.json");
        let t = BlobNameTemplate::parse("{serverCallId}/{time}/{documentId}.{ext}").unwrap();
        assert_eq!(
            j.blob_names(&t, MediaFormat::UNKNOWN).media,
            "s_1=/215959/0-wus-d10-abc.bin"
        );
    }

    #[test]
    fn missing_ids_and_dates_fall_back_to_named_placeholders() {
        let j = job("nothing useful", None);
        let t = BlobNameTemplate::parse("{year}/{callId}/{recordingId}/{documentId}").unwrap();
        assert_eq!(
            j.blob_names(&t, MediaFormat::WAV).media,
            "undated/unknown-call/unknown-recording/0-wus-d10-abc"
        );
    }

    #[test]
    fn format_is_inferred_from_the_first_source_that_names_one() {
        let hints = |event_format, metadata_format, event_content, http_content_type| {
            MediaFormat::infer(FormatHints {
                event_format,
                metadata_format,
                event_content,
                http_content_type,
            })
        };
        assert_eq!(
            hints(Some("Mp3"), Some("wav"), None, None),
            MediaFormat::MP3
        );
        assert_eq!(
            hints(None, Some("wav"), None, Some("video/mp4")),
            MediaFormat::WAV
        );
        assert_eq!(
            hints(None, None, Some("AudioVideo"), None),
            MediaFormat::MP4
        );
        assert_eq!(
            hints(None, None, Some("Audio"), Some("audio/mpeg")),
            MediaFormat::MP3
        );
        assert_eq!(
            hints(Some("Ogg"), None, None, Some("application/json")),
            MediaFormat::UNKNOWN
        );
    }
}
