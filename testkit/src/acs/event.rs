//! The Event Grid event ACS publishes for a finished recording, pointing at the emulator.

use std::time::{Duration, SystemTime};

use super::RecordingFormat;

/// Where one chunk of a recording is served: what a GA event names for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLocation {
    /// `documentId`.
    pub document_id: String,
    /// `contentLocation`.
    pub content: String,
    /// `metadataLocation`.
    pub metadata: String,
    /// `deleteLocation`.
    pub delete: String,
}

/// A GA `RecordingFileStatusUpdated` event (Event Grid schema) for these chunks, in order, as
/// ACS publishes it for a recording that started at `started`.
pub fn ga_event(
    event_id: &str,
    call_id: &str,
    chunks: &[ChunkLocation],
    format: RecordingFormat,
    started: SystemTime,
) -> serde_json::Value {
    let listed: Vec<serde_json::Value> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({
                "documentId": c.document_id,
                "index": i,
                "endReason": if i + 1 == chunks.len() { "SessionEnded" } else { "ChunkMaximumSizeExceeded" },
                "contentLocation": c.content,
                "metadataLocation": c.metadata,
                "deleteLocation": c.delete,
            })
        })
        .collect();
    let rfc3339 = |t: SystemTime| {
        time::OffsetDateTime::from(t)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    serde_json::json!({
        "id": event_id,
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/emulated/providers/microsoft.communication/communicationservices/emulated",
        // The Event Grid docs' GA sample shape (communication-services-voice-video-events.md).
        "subject": format!("/recording/call/{call_id}/serverCallId/server-{call_id}/recordingId/recording-{call_id}"),
        "data": {
            "recordingStorageInfo": {"recordingChunks": listed},
            "recordingStartTime": rfc3339(started),
            "recordingDurationMs": 60000,
            "sessionEndReason": "CallEnded",
            "recordingContentType": if format == RecordingFormat::Mp4 { "AudioVideo" } else { "Audio" },
            "recordingChannelType": "Mixed",
            "recordingFormatType": format!("{format:?}"),
        },
        "eventType": "Microsoft.Communication.RecordingFileStatusUpdated",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "eventTime": rfc3339(started + Duration::from_secs(60)),
    })
}
