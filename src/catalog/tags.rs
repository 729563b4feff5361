//! Blob index tags: what every archived blob carries so that it can be found by call, server
//! call, recording or date with Find Blobs by Tags, without listing the container.
//!
//! Values come from event data, which is hostile input, so every value passes the service's
//! own rules (docs: "Set Blob Tags", request body): at most 10 tags per blob; keys of 1 to 128
//! and values of 0 to 256 characters; only `a-z A-Z 0-9`, space and `+ - . / : = _`. A value
//! that breaks them is left out (logged at debug level), never an error: losing a tag costs a
//! search hit, refusing the commit would lose the chunk. The same rules make a validated value
//! safe inside a `where` expression, which quotes values with `'`, a character no tag may hold.
//! Pure: no I/O.

use std::fmt;

use url::form_urlencoded;

use crate::recording::{ChunkJob, MediaFormat};

/// Most tags one blob may carry.
pub const MAX_TAGS: usize = 10;
/// Longest tag key.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest tag value.
pub const MAX_VALUE_CHARS: usize = 256;

/// `callId`: the call id from the event subject.
pub const CALL_ID: &str = "callId";
/// `serverCallId`: the server call id (base64: `+ / =` are allowed tag characters).
pub const SERVER_CALL_ID: &str = "serverCallId";
/// `recordingId`, when the subject names one.
pub const RECORDING_ID: &str = "recordingId";
/// `eventId`: the recording event's id, shared by all chunks of one recording.
pub const EVENT_ID: &str = "eventId";
/// `chunk`: the chunk index, in decimal.
pub const CHUNK: &str = "chunk";
/// `chunks`: how many chunks the recording has.
pub const CHUNKS: &str = "chunks";
/// `recordingStart`: the recording start, UTC, `YYYY-MM-DDTHH:MM:SSZ`, so that string order is
/// time order and `--since`/`--until` are range conditions on one tag.
pub const RECORDING_START: &str = "recordingStart";
/// `format`: `mp4`, `mp3`, `wav` or `bin`.
pub const FORMAT: &str = "format";
/// `kind`: what the blob is ([`BlobKind`]).
pub const KIND: &str = "kind";

/// What an archived blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// A chunk's media.
    Media,
    /// A chunk's archive record (`<media>.json`).
    Record,
    /// A recording's manifest.
    Manifest,
}

impl BlobKind {
    /// The `kind` tag's value.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobKind::Media => "media",
            BlobKind::Record => "record",
            BlobKind::Manifest => "manifest",
        }
    }
}

/// Whether `s` holds only characters a tag key or value may hold.
pub fn is_tag_text(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" +-./:=_".contains(&b))
}

/// A valid set of blob index tags, in insertion order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobTags(Vec<(&'static str, String)>);

impl BlobTags {
    /// Adds `key=value` if the value passes the service's rules and the set has room; otherwise
    /// leaves it out and says so in a debug line (the value itself is not logged: it is
    /// hostile input and may be long).
    pub fn push(&mut self, key: &'static str, value: impl Into<String>) {
        let value = value.into();
        debug_assert!(!key.is_empty() && key.len() <= MAX_KEY_CHARS && is_tag_text(key));
        let fits = value.chars().count() <= MAX_VALUE_CHARS && is_tag_text(&value);
        if !fits {
            tracing::debug!(
                tag = key,
                chars = value.chars().count(),
                "blob index tag left out: its value breaks the tag rules"
            );
            return;
        }
        if self.0.len() >= MAX_TAGS || self.get(key).is_some() {
            tracing::warn!(tag = key, "blob index tag left out: no room");
            return;
        }
        self.0.push((key, value));
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether no tag is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tags as `(key, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// The `x-ms-tags` header value: the tags as a URL-encoded query string. `None` for no
    /// tags, where the header must be left out.
    pub fn header_value(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            out.append_pair(k, v);
        }
        // form encoding writes a space as `+`; the service reads `%20` (and `+` as plus).
        Some(out.finish().replace('+', "%20"))
    }

    /// The tags of a chunk's blobs: the chunk's ids, index and count, start and format, and
    /// `kind`. Every value comes from the job, so every attempt and redelivery of a chunk
    /// writes the same tags.
    pub fn for_chunk(job: &ChunkJob, format: MediaFormat, kind: BlobKind) -> BlobTags {
        let mut tags = BlobTags::for_recording(job, kind);
        tags.push(CHUNK, job.index.to_string());
        tags.push(FORMAT, format.ext);
        tags
    }

    /// The tags every blob of a recording shares (the manifest carries only these).
    pub fn for_recording(job: &ChunkJob, kind: BlobKind) -> BlobTags {
        let mut tags = BlobTags::default();
        tags.push(KIND, kind.as_str());
        for (key, value) in [
            (CALL_ID, &job.call.call_id),
            (SERVER_CALL_ID, &job.call.server_call_id),
            (RECORDING_ID, &job.call.recording_id),
        ] {
            if let Some(value) = value {
                tags.push(key, value.as_str());
            }
        }
        tags.push(EVENT_ID, &*job.event_id);
        tags.push(CHUNKS, job.chunk_count.to_string());
        if let Some(start) = job.recording_start_time.as_deref().and_then(start_tag) {
            tags.push(RECORDING_START, start);
        }
        tags
    }
}

/// The `recordingStart` value of an RFC 3339 time: UTC, whole seconds.
pub fn start_tag(rfc3339: &str) -> Option<String> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?
        .to_offset(time::UtcOffset::UTC);
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// A value a search asks for that no tag can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{value}` cannot be a blob index tag value (at most 256 of a-z A-Z 0-9 space + - . / : = _)"
)]
pub struct BadTagValue {
    /// The value, clipped.
    pub value: String,
}

/// One condition of a `where` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    key: &'static str,
    op: &'static str,
    value: String,
}

impl Condition {
    fn new(key: &'static str, op: &'static str, value: &str) -> Result<Condition, BadTagValue> {
        if value.chars().count() > MAX_VALUE_CHARS || !is_tag_text(value) {
            return Err(BadTagValue {
                value: value.chars().take(80).collect(),
            });
        }
        Ok(Condition {
            key,
            op,
            value: value.to_string(),
        })
    }

    /// `"key" = 'value'`.
    pub fn equals(key: &'static str, value: &str) -> Result<Condition, BadTagValue> {
        Condition::new(key, "=", value)
    }

    /// `"key" >= 'value'`.
    pub fn at_least(key: &'static str, value: &str) -> Result<Condition, BadTagValue> {
        Condition::new(key, ">=", value)
    }

    /// `"key" < 'value'`.
    pub fn below(key: &'static str, value: &str) -> Result<Condition, BadTagValue> {
        Condition::new(key, "<", value)
    }
}

/// A Find Blobs by Tags `where` expression: conditions joined with `AND`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagQuery(pub Vec<Condition>);

impl fmt::Display for TagQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" AND ")?;
            }
            // Keys are ours; values passed `is_tag_text`, which excludes both quote marks.
            write!(f, "\"{}\" {} '{}'", c.key, c.op, c.value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{CallIds, ChunkSource};

    fn job() -> ChunkJob {
        ChunkJob {
            event_id: "evt-1".into(),
            call: CallIds {
                call_id: Some("c-1".into()),
                server_call_id: Some("aHR0c/Hs+1=".into()),
                recording_id: None,
            },
            document_id: "doc-3".into(),
            index: 3,
            chunk_count: 5,
            end_reason: None,
            recording_start_time: Some("2026-11-24T23:59:59.9+02:00".into()),
            recording_duration_ms: None,
            session_end_reason: None,
            content_type: None,
            channel_type: None,
            format_type: None,
            source: ChunkSource::Preview,
            siblings: Default::default(),
        }
    }

    #[test]
    fn a_chunk_is_tagged_with_its_ids_index_start_and_format() {
        let tags = BlobTags::for_chunk(&job(), MediaFormat::MP4, BlobKind::Media);
        let all: Vec<_> = tags.iter().collect();
        assert_eq!(
            all,
            [
                (KIND, "media"),
                (CALL_ID, "c-1"),
                (SERVER_CALL_ID, "aHR0c/Hs+1="),
                (EVENT_ID, "evt-1"),
                (CHUNKS, "5"),
                (RECORDING_START, "2026-11-24T21:59:59Z"),
                (CHUNK, "3"),
                (FORMAT, "mp4"),
            ]
        );
        assert!(all.len() <= MAX_TAGS);
        assert_eq!(
            tags.header_value().unwrap(),
            "kind=media&callId=c-1&serverCallId=aHR0c%2FHs%2B1%3D&eventId=evt-1&chunks=5\
             &recordingStart=2026-11-24T21%3A59%3A59Z&chunk=3&format=mp4"
        );
    }

    #[test]
    fn hostile_values_are_left_out_and_the_rest_kept() {
        let mut j = job();
        j.call.call_id = Some("c-1' OR 'a'='a".into());
        j.call.recording_id = Some("r".repeat(257));
        j.event_id = "évènement\n".into();
        j.recording_start_time = Some("yesterday".into());
        let tags = BlobTags::for_chunk(&j, MediaFormat::WAV, BlobKind::Record);
        assert_eq!(tags.get(CALL_ID), None, "a quote never reaches a tag");
        assert_eq!(tags.get(RECORDING_ID), None, "over 256 characters");
        assert_eq!(tags.get(EVENT_ID), None);
        assert_eq!(tags.get(RECORDING_START), None);
        assert_eq!(tags.get(SERVER_CALL_ID), Some("aHR0c/Hs+1="));
        assert_eq!(tags.get(KIND), Some("record"));
        assert_eq!(tags.get(FORMAT), Some("wav"));
        // Exactly 256 characters still fits.
        j.call.recording_id = Some("r".repeat(256));
        let tags = BlobTags::for_chunk(&j, MediaFormat::WAV, BlobKind::Record);
        assert_eq!(tags.get(RECORDING_ID).map(str::len), Some(256));
    }

    #[test]
    fn a_set_never_exceeds_ten_tags() {
        let mut tags = BlobTags::default();
        let keys = [
            "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10",
        ];
        for k in keys {
            tags.push(k, "v");
        }
        assert_eq!(tags.iter().count(), MAX_TAGS);
        assert_eq!(tags.get("k10"), None);
        assert_eq!(BlobTags::default().header_value(), None);
    }

    #[test]
    fn spaces_are_sent_as_percent_20() {
        let mut tags = BlobTags::default();
        tags.push("k", "a b+c");
        assert_eq!(tags.header_value().unwrap(), "k=a%20b%2Bc");
    }

    #[test]
    fn queries_quote_keys_and_values_and_refuse_what_could_escape() {
        let q = TagQuery(vec![
            Condition::equals(CALL_ID, "c-1").unwrap(),
            Condition::equals(KIND, "record").unwrap(),
            Condition::at_least(RECORDING_START, "2026-11-24").unwrap(),
            Condition::below(RECORDING_START, "2026-11-25").unwrap(),
        ]);
        assert_eq!(
            q.to_string(),
            "\"callId\" = 'c-1' AND \"kind\" = 'record' AND \"recordingStart\" >= '2026-11-24' \
             AND \"recordingStart\" < '2026-11-25'"
        );
        for bad in ["x' OR 'a'='a", "a\"b", "new\nline", &"x".repeat(257)] {
            assert!(Condition::equals(CALL_ID, bad).is_err(), "{bad:?}");
        }
    }
}
