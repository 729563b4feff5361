//! What the emulator stores per recording: generated content, a format, a metadata document.

use super::Content;

/// A recording's media format, which decides its content URL and `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingFormat {
    /// Audio and video: `content/video`, `video/mp4`.
    Mp4,
    /// Audio: `content/audio`, `audio/mpeg`.
    Mp3,
    /// Audio: `content/audio`, `audio/wav`.
    Wav,
}

impl RecordingFormat {
    /// The last path segment of the GA content URL.
    pub fn media_kind(self) -> &'static str {
        match self {
            RecordingFormat::Mp4 => "video",
            RecordingFormat::Mp3 | RecordingFormat::Wav => "audio",
        }
    }

    /// The media's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            RecordingFormat::Mp4 => "video/mp4",
            RecordingFormat::Mp3 => "audio/mpeg",
            RecordingFormat::Wav => "audio/wav",
        }
    }
}

impl std::str::FromStr for RecordingFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "mp4" => Ok(RecordingFormat::Mp4),
            "mp3" => Ok(RecordingFormat::Mp3),
            "wav" => Ok(RecordingFormat::Wav),
            other => Err(format!("unknown format `{other}` (mp4, mp3, wav)")),
        }
    }
}

/// One recording as stored.
pub(super) struct Recording {
    pub(super) content: Content,
    pub(super) format: RecordingFormat,
    pub(super) metadata: String,
    /// Set by a delete; the recording then answers 404 like a deleted one.
    pub(super) deleted: bool,
}

/// A metadata document shaped like the service's sample for this format.
pub(super) fn default_metadata(document_id: &str, format: RecordingFormat) -> String {
    let (content_type, channel_type) = match format {
        RecordingFormat::Mp4 => ("mixed", "audioVideo"),
        _ => ("mixed", "audio"),
    };
    serde_json::json!({
        "resourceId": "00000000-0000-0000-0000-000000000000",
        "callId": format!("call-{document_id}"),
        "chunkDocumentId": document_id,
        "chunkIndex": 0,
        "chunkStartTime": "2021-07-27T15:20:23.6089755Z",
        "chunkDuration": 6620,
        "pauseResumeIntervals": [],
        "recordingInfo": {
            "contentType": content_type,
            "channelType": channel_type,
            "format": format!("{format:?}").to_ascii_lowercase(),
            "audioConfiguration": {"sampleRate": 16000, "bitRate": 128000, "channels": 1},
            "videoConfiguration": {"longerSideLength": 1920, "shorterSideLength": 1080, "framerate": 8, "bitRate": 1000000}
        },
        "participants": [{"participantId": "8:acs:emulator-participant", "channel": 0}]
    })
    .to_string()
}
