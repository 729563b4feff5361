//! What a media blob records about where its bytes came from (its `x-ms-meta-*` values), and
//! the check that a blob found under a chunk's name is an archive of that chunk's source.

use super::{StoredBlob, TransferError};
use crate::acs::RecordingObject;
use crate::recording::ChunkJob;

/// Metadata keys on the media blob (lower-case alphanumeric: see the SharedKey sort note in
/// `docs/protocols.md` §5.3).
pub(super) const META_SIZE: &str = "archivedbytes";
const META_SHA256: &str = "sha256";
const META_DOCUMENT: &str = "documentid";
const META_EVENT: &str = "sourceeventid";
const META_INDEX: &str = "chunkindex";
/// The recording object the bytes came from, as [`RecordingObject`] prints it.
const META_SOURCE: &str = "sourceobject";

impl StoredBlob {
    /// Whether an archive of ours committed it whole: it carries the size it was archived
    /// with, and has that size.
    pub(super) fn is_complete(&self) -> bool {
        self.meta(META_SIZE).and_then(|v| v.parse::<u64>().ok()) == Some(self.content_length)
    }

    /// The SHA-256 the archive recorded, if it computed one.
    pub(super) fn recorded_sha256(&self) -> Option<&str> {
        self.meta(META_SHA256)
    }

    /// The document id the archive recorded.
    pub(super) fn archived_document(&self) -> Option<&str> {
        self.meta(META_DOCUMENT)
    }

    fn meta(&self, name: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// [`verify`](Self::verify) as the pipeline's error: another archive under `blob`'s name
    /// is a conflict.
    pub(super) fn archives(
        &self,
        expected: &ArchiveSource,
        blob: &str,
    ) -> Result<(), TransferError> {
        self.verify(expected)
            .map_err(|recorded| TransferError::Conflict {
                blob: blob.to_string(),
                recorded,
                expected: expected.to_string(),
            })
    }

    /// Whether this blob is a complete archive of `expected`: committed whole, from the same
    /// recording object and document id, and with the same size and SHA-256 where the caller
    /// knows them. `Err` describes what the blob records instead.
    pub(super) fn verify(&self, expected: &ArchiveSource) -> Result<(), String> {
        let recorded_sha = self.meta(META_SHA256);
        let matches = self.is_complete()
            && self.meta(META_SOURCE) == Some(expected.object.as_str())
            && self.meta(META_DOCUMENT) == Some(expected.document_id.as_str())
            && expected.size.is_none_or(|n| n == self.content_length)
            && match (&expected.sha256, recorded_sha) {
                (Some(ours), Some(theirs)) => ours == theirs,
                _ => true,
            };
        if matches {
            return Ok(());
        }
        if !self.is_complete() {
            return Err(format!(
                "{} bytes without a complete archive record",
                self.content_length
            ));
        }
        let or_none = |v: Option<&str>| v.map(|v| v.chars().take(300).collect::<String>());
        Err(ArchiveSource {
            object: or_none(self.meta(META_SOURCE)).unwrap_or_else(|| "no recorded object".into()),
            document_id: or_none(self.meta(META_DOCUMENT)).unwrap_or_else(|| "-".into()),
            size: Some(self.content_length),
            sha256: or_none(recorded_sha),
        }
        .to_string())
    }
}

/// Where a chunk's bytes come from, as an archive records it and a job expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ArchiveSource {
    /// The recording object (`RecordingObject`'s text).
    pub(super) object: String,
    pub(super) document_id: String,
    pub(super) size: Option<u64>,
    pub(super) sha256: Option<String>,
}

impl ArchiveSource {
    pub(super) fn of(job: &ChunkJob, source: &RecordingObject) -> ArchiveSource {
        ArchiveSource {
            object: source.to_string(),
            document_id: job.document_id.clone(),
            size: None,
            sha256: None,
        }
    }
}

impl std::fmt::Display for ArchiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "object {}, documentId {}", self.object, self.document_id)?;
        if let Some(n) = self.size {
            write!(f, ", {n} bytes")?;
        }
        if let Some(h) = &self.sha256 {
            write!(f, ", sha256 {h}")?;
        }
        Ok(())
    }
}

/// The metadata a media blob is committed with: its size (which marks it complete), its
/// source, and its SHA-256 when known.
pub(super) fn media_metadata(
    job: &ChunkJob,
    source: &RecordingObject,
    total: u64,
    sha256: Option<&str>,
) -> Vec<(String, String)> {
    let mut metadata = vec![
        (META_SIZE.to_string(), total.to_string()),
        (META_DOCUMENT.to_string(), job.document_id.clone()),
        (META_INDEX.to_string(), job.index.to_string()),
        (META_EVENT.to_string(), ascii_meta(&job.event_id)),
        (META_SOURCE.to_string(), source.to_string()),
    ];
    if let Some(h) = sha256 {
        metadata.push((META_SHA256.to_string(), h.to_string()));
    }
    metadata
}

/// Metadata values must be ASCII; event ids are GUIDs, but nothing guarantees it.
fn ascii_meta(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
