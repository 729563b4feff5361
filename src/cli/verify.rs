//! `archiver verify`: proves that archived chunks are what was archived. The chunks are those
//! of the recordings a [`Selector`] finds by their index tags, or every chunk under a blob-name
//! prefix (List Blobs, for archives written before tags, or a whole day). Each chunk's media is
//! read back range by range (memory: one range), its SHA-256 recomputed and compared with the
//! archive record (`<media>.json`) and with the blob's own metadata (`sha256`,
//! `archivedbytes`); a recording whose records say it has more chunks than were found has a
//! missing chunk.
//!
//! Exit codes: 0 every chunk verified; 1 a chunk differs, is missing, or has no SHA-256 to
//! prove it by; 2 the archive could not be read (settings, access, network).

use std::collections::BTreeMap;
use std::fmt;
use std::process::ExitCode;
use std::time::Instant;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::progress::Progress;
use super::settings::bytes;
use super::term::{Paint, RetryTally};
use crate::blob::{BlobClient, BlobProperties};
use crate::catalog::{self, CatalogError, Selector};
use crate::config::{Lookup, Settings};
use crate::preflight::{read_problem, Status};
use crate::storage::StorageError;
use crate::wiring;

/// Bytes read per Get Blob: the memory verify needs per chunk, and the unit of a retry.
const RANGE_BYTES: u64 = 8 * 1024 * 1024;
/// Largest archive record read: the record and the ACS metadata document are a few KiB.
const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;
/// The record's suffix after the media blob's name.
const RECORD_SUFFIX: &str = ".json";
/// The blob metadata the transfer writes (`src/transfer`).
const META_SHA256: &str = "sha256";
const META_SIZE: &str = "archivedbytes";

/// What the archive record says about its chunk (the `archive` object of `<media>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Recorded {
    source_event_id: String,
    chunk_index: u32,
    chunk_count: u32,
    media_blob: String,
    size_bytes: u64,
    sha256: Option<String>,
    sha256_note: Option<String>,
}

#[derive(Deserialize)]
struct RecordDocument {
    archive: Recorded,
}

/// How one chunk came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its bytes hash to what was recorded.
    Verified { bytes: u64, sha256: String },
    /// It differs from its record or metadata: each difference.
    Mismatch(Vec<String>),
    /// It (or its record) is not there.
    Missing(String),
    /// Nothing to prove it by: no SHA-256 was recorded.
    Unproven(String),
    /// It could not be read.
    Unreadable(String),
}

impl Verdict {
    fn label(&self) -> &'static str {
        match self {
            Verdict::Verified { .. } => "ok",
            Verdict::Mismatch(_) => "MISMATCH",
            Verdict::Missing(_) => "MISSING",
            Verdict::Unproven(_) => "UNPROVEN",
            Verdict::Unreadable(_) => "UNREADABLE",
        }
    }
}

/// Compares what was read (`read_bytes`, `sha256` in lower-case hex) with the record and with
/// the blob's properties and metadata.
pub(crate) fn judge(
    media: &str,
    recorded: &Recorded,
    stored: &BlobProperties,
    read_bytes: u64,
    sha256: &str,
) -> Verdict {
    let meta = |name: &str| {
        stored
            .metadata
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut differences = Vec::new();
    if recorded.media_blob != media {
        differences.push(format!("the record names `{}`", recorded.media_blob));
    }
    if read_bytes != recorded.size_bytes {
        differences.push(format!(
            "{read_bytes} bytes, the record says {}",
            recorded.size_bytes
        ));
    }
    match meta(META_SIZE).map(str::parse::<u64>) {
        Some(Ok(n)) if n == read_bytes => {}
        Some(_) => differences.push(format!(
            "{read_bytes} bytes, the blob metadata says {}",
            meta(META_SIZE).unwrap_or_default()
        )),
        None => differences.push("no size in the blob metadata".into()),
    }
    match meta(META_SHA256) {
        Some(h) if h.eq_ignore_ascii_case(sha256) => {}
        Some(h) => differences.push(format!("SHA-256 {sha256}, the blob metadata says {h}")),
        None if recorded.sha256.is_some() => {
            differences.push("no SHA-256 in the blob metadata".into())
        }
        None => {}
    }
    match &recorded.sha256 {
        Some(h) if h.eq_ignore_ascii_case(sha256) => {}
        Some(h) => differences.push(format!("SHA-256 {sha256}, the record says {h}")),
        None if differences.is_empty() => {
            return Verdict::Unproven(format!(
                "no SHA-256 was recorded ({})",
                recorded.sha256_note.as_deref().unwrap_or("not computed")
            ))
        }
        None => {}
    }
    if differences.is_empty() {
        Verdict::Verified {
            bytes: read_bytes,
            sha256: sha256.to_string(),
        }
    } else {
        Verdict::Mismatch(differences)
    }
}

/// Which chunks to verify.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The recordings a selector finds by their blob index tags.
    Tags(Selector),
    /// Everything under a blob-name prefix, by listing.
    Prefix(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tags(Selector::Call(id)) => write!(f, "call {id}"),
            Target::Tags(Selector::ServerCall(id)) => write!(f, "server call {id}"),
            Target::Tags(Selector::Recording(id)) => write!(f, "recording {id}"),
            Target::Tags(Selector::Started { since, until }) => match until {
                Some(until) => write!(f, "recordings started from {since} until {until}"),
                None => write!(f, "recordings started from {since}"),
            },
            Target::Prefix(p) => write!(f, "`{p}`"),
        }
    }
}

/// The chunks found, grouped by recording, and what cannot be a whole chunk.
#[derive(Debug, Default)]
struct Found {
    /// Per recording (its event id): its chunk count and its chunks' records by index.
    recordings: BTreeMap<String, (u32, BTreeMap<u32, Recorded>)>,
    /// Chunks found only as media, or only as a record: (blob, why).
    strays: Vec<(String, Verdict)>,
}

/// Lists `prefix`, reads every record, and pairs records with media.
async fn find_by_prefix(blob: &BlobClient, prefix: &str) -> Result<Found, StorageError> {
    let names = blob.list_blob_names(prefix).await?;
    let listed: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut found = Found::default();
    let mut recorded_media = std::collections::BTreeSet::new();
    for name in names.iter().filter(|n| n.ends_with(RECORD_SUFFIX)) {
        let Some(record) = read_record(blob, name).await? else {
            // Not an archive record (a manifest, or another document).
            continue;
        };
        recorded_media.insert(record.media_blob.clone());
        if !listed.contains(record.media_blob.as_str()) {
            found.strays.push((
                record.media_blob.clone(),
                Verdict::Missing(format!("its record `{name}` is there, the media is not")),
            ));
            continue;
        }
        let (count, chunks) = found
            .recordings
            .entry(record.source_event_id.clone())
            .or_default();
        *count = (*count).max(record.chunk_count);
        chunks.insert(record.chunk_index, record);
    }
    for name in &names {
        let record = format!("{name}{RECORD_SUFFIX}");
        if !name.ends_with(RECORD_SUFFIX) && !recorded_media.contains(name) {
            found.strays.push((
                name.clone(),
                Verdict::Missing(format!("no archive record (`{record}`)")),
            ));
        }
    }
    Ok(found)
}

/// The recordings `selector` finds by their tags, as [`Found`].
async fn find_by_tags(blob: &BlobClient, selector: &Selector) -> Result<Found, CatalogError> {
    let mut found = Found::default();
    for recording in catalog::find(blob, selector).await? {
        let count = recording.chunk_count.unwrap_or(0);
        let chunks = recording
            .chunks
            .into_iter()
            .map(|c| {
                let recorded = Recorded {
                    source_event_id: recording.event_id.clone(),
                    chunk_index: c.index,
                    chunk_count: count,
                    media_blob: c.media_blob,
                    size_bytes: c.size_bytes,
                    sha256: c.sha256,
                    sha256_note: None,
                };
                (c.index, recorded)
            })
            .collect();
        found
            .recordings
            .insert(recording.event_id.clone(), (count, chunks));
    }
    Ok(found)
}

/// The `archive` object of a record blob; `None` when the blob is not an archive record.
async fn read_record(blob: &BlobClient, name: &str) -> Result<Option<Recorded>, StorageError> {
    let body = match blob.get_blob_small(name, MAX_RECORD_BYTES).await {
        Ok(Some(body)) => body,
        Ok(None) => return Ok(None),
        // Too large to be a record.
        Err(StorageError::Invalid { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(serde_json::from_slice::<RecordDocument>(&body)
        .ok()
        .map(|d| d.archive))
}

/// Reads `media` range by range, hashing as it goes; `progress` counts the bytes.
async fn hash_blob(
    blob: &BlobClient,
    media: &str,
    stored: &BlobProperties,
    progress: &Progress,
) -> Result<(u64, String), StorageError> {
    let etag = stored.etag.as_deref().unwrap_or("*");
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < stored.content_length {
        let len = RANGE_BYTES.min(stored.content_length - offset);
        let data = blob.get_range(media, offset, len, etag).await?;
        hasher.update(&data);
        offset += len;
        progress.advance(len);
    }
    Ok((offset, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts of verdicts, for the summary and the exit code.
#[derive(Debug, Default)]
struct Tally {
    verified: usize,
    bytes: u64,
    failed: usize,
    unreadable: usize,
}

impl Tally {
    fn add(&mut self, verdict: &Verdict) {
        match verdict {
            Verdict::Verified { bytes, .. } => {
                self.verified += 1;
                self.bytes += bytes;
            }
            Verdict::Unreadable(_) => self.unreadable += 1,
            _ => self.failed += 1,
        }
    }

    fn exit_code(&self) -> ExitCode {
        match (self.failed, self.unreadable) {
            (0, 0) => ExitCode::SUCCESS,
            (0, _) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

/// One result line: the verdict, the blob, and what was found.
fn line(paint: Paint, blob: &str, verdict: &Verdict) -> String {
    let label = format!("{:<10}", verdict.label());
    let label = match verdict {
        Verdict::Verified { .. } => paint.good(&label),
        _ => paint.bad(&label),
    };
    match verdict {
        Verdict::Verified { bytes: n, sha256 } => {
            format!("{label} {blob}  {}  sha256 {sha256}", bytes(*n))
        }
        Verdict::Mismatch(d) => format!("{label} {blob}: {}", d.join("; ")),
        Verdict::Missing(why) | Verdict::Unproven(why) | Verdict::Unreadable(why) => {
            format!("{label} {blob}: {why}")
        }
    }
}

/// Verifies every chunk of `target`.
pub(crate) async fn run(
    settings: &Settings,
    lookup: &impl Lookup,
    target: &Target,
    retries: &RetryTally,
) -> ExitCode {
    let paint = Paint::stdout();
    let blob = match wiring::archive_client(settings, lookup) {
        Ok(b) => b,
        Err(e) => return super::fail(&e),
    };
    let started = Instant::now();
    // The listing shows at once whether the archive can be read at all.
    let lister = blob.clone().with_retry_policy(super::PROMPT_RETRY);
    let found = match target {
        Target::Prefix(prefix) => find_by_prefix(&lister, prefix)
            .await
            .map_err(CatalogError::Storage),
        Target::Tags(selector) => find_by_tags(&lister, selector).await,
    };
    let found = match found {
        Ok(f) => f,
        Err(CatalogError::Storage(e)) => return cannot_read(&e, started, settings, retries),
        Err(e @ CatalogError::Selector(_)) => return super::fail(&e),
    };
    let mut tally = Tally::default();
    let mut results: Vec<(String, Verdict)> = Vec::new();
    // Properties first: the bar needs the total, and a missing media blob needs no read.
    let mut todo = Vec::new();
    for (event, (count, chunks)) in &found.recordings {
        for index in (0..*count).filter(|i| !chunks.contains_key(i)) {
            results.push((
                format!("chunk {index} of {count} (event {event})"),
                Verdict::Missing(format!("no archive record for {target}")),
            ));
        }
        for recorded in chunks.values() {
            match blob.get_properties(&recorded.media_blob).await {
                Ok(Some(stored)) => todo.push((recorded, stored)),
                Ok(None) => results.push((
                    recorded.media_blob.clone(),
                    Verdict::Missing("the media blob is gone".into()),
                )),
                Err(e) => return cannot_read(&e, started, settings, retries),
            }
        }
    }
    results.extend(found.strays);
    if todo.is_empty() && results.is_empty() {
        println!("Nothing archived for {target}.");
        return ExitCode::FAILURE;
    }
    let progress = Progress::bytes(todo.iter().map(|(_, s)| s.content_length).sum());
    for (blob_name, verdict) in &results {
        tally.add(verdict);
        progress.line(&line(paint, blob_name, verdict));
    }
    for (recorded, stored) in todo {
        let media = &recorded.media_blob;
        progress.note(media.clone());
        let verdict = match hash_blob(&blob, media, &stored, &progress).await {
            Ok((n, sha)) => judge(media, recorded, &stored, n, &sha),
            Err(e) if e.status() == Some(412) => {
                Verdict::Mismatch(vec!["the blob changed while it was read".into()])
            }
            Err(e) => Verdict::Unreadable(e.to_string()),
        };
        tally.add(&verdict);
        progress.line(&line(paint, media, &verdict));
    }
    progress.finish();
    if let Some(summary) = retries.take() {
        println!("storage calls {summary}");
    }
    println!(
        "\n{} verified ({}), {} failed, {} unreadable, in {:.1} s.",
        tally.verified,
        bytes(tally.bytes),
        tally.failed,
        tally.unreadable,
        started.elapsed().as_secs_f64()
    );
    tally.exit_code()
}

/// The archive could not be read at all: the cause and the fix, and exit 2.
fn cannot_read(
    e: &StorageError,
    started: Instant,
    settings: &Settings,
    retries: &RetryTally,
) -> ExitCode {
    // Told by the retry line instead, with the cause and the fix.
    let _ = retries.take();
    let Some(storage) = &settings.storage else {
        return super::fail(e);
    };
    let status = read_problem(
        e,
        started.elapsed(),
        &storage.credential,
        storage.source,
        &settings.container,
    );
    match status {
        Status::Problem { error, fix } => eprintln!(
            "archiver: cannot read container `{}`: {error}\n  fix: {fix}",
            settings.container
        ),
        Status::Ready(_) => eprintln!("archiver: cannot read the archive: {e}"),
    }
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn recorded(sha: Option<&str>) -> Recorded {
        Recorded {
            source_event_id: "e".into(),
            chunk_index: 0,
            chunk_count: 1,
            media_blob: "c/0-doc.mp4".into(),
            size_bytes: 4,
            sha256: sha.map(str::to_string),
            sha256_note: None,
        }
    }

    fn stored(meta: &[(&str, &str)]) -> BlobProperties {
        BlobProperties {
            content_length: 4,
            content_type: None,
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            etag: Some("\"0x1\"".into()),
        }
    }

    #[test]
    fn a_chunk_verifies_when_record_metadata_and_bytes_agree() {
        let good = stored(&[("archivedbytes", "4"), ("sha256", SHA)]);
        assert_eq!(
            judge("c/0-doc.mp4", &recorded(Some(SHA)), &good, 4, SHA),
            Verdict::Verified {
                bytes: 4,
                sha256: SHA.into()
            }
        );
    }

    #[test]
    fn every_difference_is_named() {
        let other = "0".repeat(64);
        let good = stored(&[("archivedbytes", "4"), ("sha256", SHA)]);
        let Verdict::Mismatch(d) = judge("c/0-doc.mp4", &recorded(Some(SHA)), &good, 4, &other)
        else {
            panic!("tampered bytes must not verify");
        };
        assert_eq!(
            d,
            [
                format!("SHA-256 {other}, the blob metadata says {SHA}"),
                format!("SHA-256 {other}, the record says {SHA}"),
            ]
        );
        let Verdict::Mismatch(d) = judge("c/0-doc.mp4", &recorded(Some(SHA)), &good, 5, SHA) else {
            panic!("a size change must not verify");
        };
        assert!(d[0].contains("5 bytes, the record says 4"), "{d:?}");
        let bare = stored(&[]);
        let Verdict::Mismatch(d) = judge("c/0-doc.mp4", &recorded(Some(SHA)), &bare, 4, SHA) else {
            panic!("metadata stripped by an overwrite must show");
        };
        assert_eq!(
            d,
            [
                "no size in the blob metadata",
                "no SHA-256 in the blob metadata"
            ]
        );
    }

    #[test]
    fn a_chunk_without_a_recorded_hash_is_not_called_verified() {
        let mut r = recorded(None);
        r.sha256_note = Some("not computed: the transfer resumed at byte 4194304".into());
        let verdict = judge(
            "c/0-doc.mp4",
            &r,
            &stored(&[("archivedbytes", "4")]),
            4,
            SHA,
        );
        assert_eq!(
            verdict,
            Verdict::Unproven(
                "no SHA-256 was recorded (not computed: the transfer resumed at byte 4194304)"
                    .into()
            )
        );
    }

    #[test]
    fn exit_codes_put_a_proven_fault_before_an_unreadable_chunk() {
        let mut t = Tally::default();
        assert_eq!(t.exit_code(), ExitCode::SUCCESS);
        t.add(&Verdict::Unreadable("HTTP 403".into()));
        assert_eq!(t.exit_code(), ExitCode::from(2));
        t.add(&Verdict::Missing("gone".into()));
        assert_eq!(t.exit_code(), ExitCode::FAILURE);
    }

    #[test]
    fn result_lines_are_plain_without_a_terminal() {
        let plain = Paint::decide(false, None);
        assert_eq!(
            line(
                plain,
                "c/0-doc.mp4",
                &Verdict::Verified {
                    bytes: 4 * 1024 * 1024,
                    sha256: SHA.into()
                }
            ),
            format!("ok         c/0-doc.mp4  4 MiB  sha256 {SHA}")
        );
        assert_eq!(
            line(
                plain,
                "c/1-doc.mp4",
                &Verdict::Missing("the media blob is gone".into())
            ),
            "MISSING    c/1-doc.mp4: the media blob is gone"
        );
    }
}
