//! `archiver find --call ID | --server-call ID | --recording ID | --since DATE [--until DATE]`:
//! the archived recordings a selection matches, from their blob index tags (Find Blobs by
//! Tags, see [`crate::catalog`]), each with its chunks, sizes, archive times and whether it is
//! complete.

use std::process::ExitCode;

use crate::catalog::{self, ArchivedRecording, Selector};
use crate::config::{Lookup, Settings};
use crate::wiring;

/// Prints the recordings `selector` matches: 0 when at least one is found, 1 when none is, 2
/// when the settings cannot be used or storage cannot be read.
pub(crate) async fn run(
    settings: &Settings,
    lookup: &impl Lookup,
    selector: &Selector,
) -> ExitCode {
    let client = match wiring::archive_client(settings, lookup) {
        Ok(c) => c,
        Err(e) => return super::fail(&e),
    };
    let found = match catalog::find(&client, selector).await {
        Ok(found) => found,
        Err(e) => return super::fail(&e),
    };
    if found.is_empty() {
        println!("no archived recording matches");
        return ExitCode::FAILURE;
    }
    for recording in &found {
        print!("{}", describe(recording));
    }
    ExitCode::SUCCESS
}

/// One recording as printed: a heading line, then a line per chunk.
fn describe(r: &ArchivedRecording) -> String {
    let ids = [
        ("call", &r.call.call_id),
        ("server call", &r.call.server_call_id),
        ("recording", &r.call.recording_id),
    ]
    .iter()
    .filter_map(|(what, id)| id.as_deref().map(|id| format!("{what} {id}")))
    .collect::<Vec<_>>()
    .join(", ");
    let state = if r.is_complete() {
        "complete"
    } else {
        "INCOMPLETE"
    };
    let count = r
        .chunk_count
        .map(|n| n.to_string())
        .unwrap_or_else(|| "?".into());
    let mut out = format!(
        "recording (event {}) {ids}, started {}: {state}, {} of {count} chunk(s), {} bytes\n",
        r.event_id,
        r.recording_start_time.as_deref().unwrap_or("-"),
        r.chunks.len(),
        r.total_bytes(),
    );
    if let Some(m) = &r.manifest {
        out.push_str(&format!("  manifest  {m}\n"));
    }
    for c in &r.chunks {
        out.push_str(&format!(
            "  chunk {:>3}  {:>12} bytes  archived {}  {}\n",
            c.index,
            c.size_bytes,
            c.archived_at.as_deref().unwrap_or("-"),
            c.media_blob
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ArchivedChunk;
    use crate::recording::CallIds;

    #[test]
    fn a_recording_prints_its_ids_state_and_chunks() {
        let r = ArchivedRecording {
            event_id: "evt-1".into(),
            call: CallIds {
                call_id: Some("c-1".into()),
                ..Default::default()
            },
            recording_start_time: Some("2026-11-24T09:00:00Z".into()),
            chunk_count: Some(2),
            chunks: vec![ArchivedChunk {
                index: 0,
                document_id: "d0".into(),
                media_blob: "a/000-d0.mp4".into(),
                record_blob: "a/000-d0.mp4.json".into(),
                size_bytes: 42,
                sha256: None,
                archived_at: Some("2026-11-24T10:00:00Z".into()),
            }],
            manifest: None,
        };
        assert_eq!(
            describe(&r),
            "recording (event evt-1) call c-1, started 2026-11-24T09:00:00Z: INCOMPLETE, 1 of 2 chunk(s), 42 bytes\n\
             \x20 chunk   0            42 bytes  archived 2026-11-24T10:00:00Z  a/000-d0.mp4\n"
        );
    }
}
