//! The demo's verdict: every blob of the container checked against the source chunks, and the
//! table and totals printed at the end.

use std::fmt;
use std::time::{Duration, Instant};

use super::services::Services;
use super::{human_size, say, sizes::group_digits, DemoError, DemoOptions, CONTAINER, FORMAT, MIB};
use crate::acs::{AcsEmulator, Verdict};
use crate::archive::{ArchiveReader, BlobContent, ListedBlob};
use crate::host::InvocationRecord;

/// A chunk as the emulated ACS holds it: what the archive must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceChunk {
    /// Its position in the recording.
    pub index: usize,
    /// ACS `documentId`.
    pub document_id: String,
    /// Length in bytes.
    pub size: u64,
    /// The media `Content-Type`.
    pub content_type: String,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
}

/// What the demo concluded about one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobVerdict {
    /// The media blob of chunk `index`; whether it is a byte-exact copy of the source.
    Media {
        /// The chunk.
        index: usize,
        /// SHA-256 and size equal the source's.
        matches: bool,
    },
    /// The archive record of chunk `index`; whether it names the right blob, size and hash.
    Record {
        /// The chunk.
        index: usize,
        /// `mediaBlob`, `sizeBytes` and `sha256` agree with the blob and the source.
        consistent: bool,
    },
    /// The recording's manifest (`manifest-<first documentId>.json`), written once every
    /// chunk is archived.
    Manifest,
    /// The marker that the manifest's notification was sent (`manifest-<...>.notified.json`).
    NotifiedMarker,
    /// A blob that belongs to no chunk of the demo recording.
    Unexpected,
}

/// One line of the result table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    /// The blob as listed.
    pub blob: ListedBlob,
    /// The verdict.
    pub verdict: BlobVerdict,
}

/// What a successful (or mismatched) demo found.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Every blob in the container, in listing order.
    pub rows: Vec<BlobRow>,
    /// The source chunks.
    pub chunks: Vec<SourceChunk>,
    /// Every invocation the emulated host made (HTTP forwards and queue triggers).
    pub invocations: Vec<InvocationRecord>,
    /// Requests the ACS emulator served, and how many it refused for a bad signature.
    pub acs_requests: (usize, usize),
    /// The handler's peak resident memory (Linux `VmHWM`), when it could be read: it stays far
    /// below the largest chunk because chunks are streamed in bounded blocks.
    pub handler_peak_rss: Option<u64>,
    /// From the event being accepted to the last chunk archived.
    pub archive_time: Duration,
    /// From start to the report, services start-up included.
    pub wall_time: Duration,
}

impl DemoReport {
    /// Media blobs that are byte-exact copies of their chunk.
    pub fn matching_media(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| matches!(r.verdict, BlobVerdict::Media { matches: true, .. }))
            .count()
    }

    /// Queue-triggered invocations that were not the first try of their message.
    pub fn retries(&self) -> usize {
        self.invocations
            .iter()
            .filter(|i| i.dequeue_count.is_some_and(|n| n > 1))
            .count()
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_width = self
            .rows
            .iter()
            .map(|r| r.blob.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(4);
        writeln!(
            f,
            "  {:<name_width$}  {:>13}  {:<16}  SHA-256 vs source",
            "blob", "size", "content type"
        )?;
        writeln!(f, "  {}", "-".repeat(name_width + 53))?;
        for row in &self.rows {
            let check = match &row.verdict {
                BlobVerdict::Media { matches: true, .. } => "✓ match".to_string(),
                BlobVerdict::Media { matches: false, .. } => "✗ DIFFERS".to_string(),
                BlobVerdict::Record {
                    index,
                    consistent: true,
                } => format!("(record of chunk {index}: ✓)"),
                BlobVerdict::Record { index, .. } => format!("(record of chunk {index}: ✗)"),
                BlobVerdict::Manifest => "(the recording's manifest)".to_string(),
                BlobVerdict::NotifiedMarker => "(manifest notification sent)".to_string(),
                BlobVerdict::Unexpected => "(not from this recording)".to_string(),
            };
            writeln!(
                f,
                "  {:<name_width$}  {:>13}  {:<16}  {check}",
                row.blob.name,
                group_digits(row.blob.size),
                row.blob.content_type
            )?;
        }
        let mut by_function: Vec<(&str, usize, usize)> = Vec::new();
        for inv in &self.invocations {
            let failed = usize::from(!inv.succeeded());
            match by_function.iter_mut().find(|(f, ..)| *f == inv.function) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 += failed;
                }
                None => by_function.push((&inv.function, 1, failed)),
            }
        }
        let calls: Vec<String> = by_function
            .iter()
            .map(|(function, n, failed)| format!("{function} x{n} ({failed} failed)"))
            .collect();
        writeln!(
            f,
            "\n  Host invocations: {}; retries: {}",
            calls.join(", "),
            self.retries()
        )?;
        writeln!(
            f,
            "  ACS emulator: {} signed requests served, {} refused",
            self.acs_requests.0, self.acs_requests.1
        )?;
        if let Some(rss) = self.handler_peak_rss {
            let largest = self.chunks.iter().map(|c| c.size).max().unwrap_or(0);
            writeln!(
                f,
                "  Handler peak memory: {} (largest chunk {}): chunks are streamed, never held whole",
                human_size(rss),
                human_size(largest)
            )?;
        }
        let bytes: u64 = self.chunks.iter().map(|c| c.size).sum();
        write!(
            f,
            "  Archived {} in {:.1} s ({:.0} MiB/s); wall time {:.1} s",
            human_size(bytes),
            self.archive_time.as_secs_f64(),
            bytes as f64 / MIB as f64 / self.archive_time.as_secs_f64().max(0.001),
            self.wall_time.as_secs_f64()
        )
    }
}

/// Step 6: reads every blob of the container and checks it against the source; prints the
/// report, and fails when the archive does not match.
pub(super) async fn check(
    services: &Services,
    options: &DemoOptions,
    http: reqwest::Client,
    archive_time: Duration,
    began: Instant,
) -> Result<DemoReport, DemoError> {
    let (Some(host), Some((acs, documents)), Some(azurite)) =
        (&services.host, &services.acs, &services.azurite)
    else {
        unreachable!("the archive is checked after every service started");
    };
    say(
        6,
        &format!(
            "Checking container `{CONTAINER}` against the source (download and SHA-256 every blob)"
        ),
    );
    let chunks = source_chunks(acs, documents, &options.chunk_sizes).await?;
    let reader = ArchiveReader::new(http, azurite, CONTAINER);
    let listed = reader
        .list()
        .await
        .map_err(|e| DemoError::NotArchived(e.to_string()))?;
    let mut contents = Vec::with_capacity(listed.len());
    for blob in &listed {
        contents.push(
            reader
                .read(&blob.name)
                .await
                .map_err(|e| DemoError::NotArchived(e.to_string()))?,
        );
    }
    let (rows, problems) = assess(&chunks, &listed, &contents);
    let requests = acs.requests();
    let refused = requests
        .iter()
        .filter(|r| r.verdict != Verdict::Accepted)
        .count();
    let report = DemoReport {
        rows,
        chunks,
        invocations: host.invocations(),
        acs_requests: (requests.len(), refused),
        handler_peak_rss: host
            .handler()
            .and_then(|w| crate::procstat::peak_rss(w.pid).ok()),
        archive_time,
        wall_time: began.elapsed(),
    };
    println!("\n{report}");
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(DemoError::Mismatch {
            report: Box::new(report),
            problems,
        })
    }
}

/// The source chunks, hashed off the async threads (about 1 s per GiB in release).
async fn source_chunks(
    acs: &AcsEmulator,
    documents: &[String],
    sizes: &[u64],
) -> Result<Vec<SourceChunk>, DemoError> {
    let mut chunks = Vec::with_capacity(documents.len());
    for (index, (doc, size)) in documents.iter().zip(sizes).enumerate() {
        // A withheld chunk has no source: nothing can match it.
        let sha256 = match acs.content(doc) {
            Some(content) => tokio::task::spawn_blocking(move || content.sha256())
                .await
                .map_err(|e| DemoError::NotArchived(e.to_string()))?,
            None => [0; 32],
        };
        chunks.push(SourceChunk {
            index,
            document_id: doc.clone(),
            size: *size,
            content_type: FORMAT.content_type().to_string(),
            sha256,
        });
    }
    Ok(chunks)
}

/// Compares the container with the source: one row per listed blob (`contents[i]` was read
/// from `listed[i]`) and one line per problem. Every chunk needs an archive record naming its
/// media blob, a media blob with the source's size, SHA-256 and content type, and a record
/// whose `sizeBytes` and `sha256` (when present) agree.
pub fn assess(
    chunks: &[SourceChunk],
    listed: &[ListedBlob],
    contents: &[BlobContent],
) -> (Vec<BlobRow>, Vec<String>) {
    let mut verdicts: Vec<BlobVerdict> = vec![BlobVerdict::Unexpected; listed.len()];
    let mut problems = Vec::new();
    let blobs: Vec<(&ListedBlob, &BlobContent)> = listed.iter().zip(contents).collect();
    for chunk in chunks {
        let what = format!("chunk {} ({})", chunk.index, chunk.document_id);
        let record = blobs.iter().position(|(_, c)| {
            matches!(c, BlobContent::Record(r) if r["archive"]["documentId"] == chunk.document_id.as_str())
        });
        let Some(record) = record else {
            problems.push(format!("{what}: no archive record names it"));
            continue;
        };
        let BlobContent::Record(r) = blobs[record].1 else {
            unreachable!("found as a record")
        };
        let archive = &r["archive"];
        let media_name = archive["mediaBlob"].as_str().unwrap_or_default();
        let media = blobs
            .iter()
            .position(|(b, c)| b.name == media_name && matches!(c, BlobContent::Media(_)));
        let mut record_ok = true;
        match media {
            None => {
                problems.push(format!(
                    "{what}: its record names media blob `{media_name}`, which is not in the container"
                ));
                record_ok = false;
            }
            Some(m) => {
                let (blob, BlobContent::Media(sha)) = blobs[m] else {
                    unreachable!("found as media")
                };
                let mut matches = true;
                if *sha != chunk.sha256 {
                    problems.push(format!(
                        "{what}: `{}` has SHA-256 {}, the source {}",
                        blob.name,
                        hex(sha),
                        hex(&chunk.sha256)
                    ));
                    matches = false;
                }
                if blob.size != chunk.size {
                    problems.push(format!(
                        "{what}: `{}` holds {} bytes, the source {}",
                        blob.name, blob.size, chunk.size
                    ));
                    matches = false;
                }
                if blob.content_type != chunk.content_type {
                    problems.push(format!(
                        "{what}: `{}` has Content-Type `{}`, expected `{}`",
                        blob.name, blob.content_type, chunk.content_type
                    ));
                }
                verdicts[m] = BlobVerdict::Media {
                    index: chunk.index,
                    matches,
                };
                if archive["sizeBytes"] != blob.size {
                    problems.push(format!(
                        "{what}: record says sizeBytes {}, the blob holds {}",
                        archive["sizeBytes"], blob.size
                    ));
                    record_ok = false;
                }
            }
        }
        if let Some(recorded) = archive["sha256"].as_str() {
            if !recorded.eq_ignore_ascii_case(&hex(&chunk.sha256)) {
                problems.push(format!(
                    "{what}: record says sha256 {recorded}, the source has {}",
                    hex(&chunk.sha256)
                ));
                record_ok = false;
            }
        }
        verdicts[record] = BlobVerdict::Record {
            index: chunk.index,
            consistent: record_ok,
        };
    }
    for (verdict, blob) in verdicts.iter_mut().zip(listed) {
        let file = blob.name.rsplit('/').next().unwrap_or_default();
        if *verdict == BlobVerdict::Unexpected && file.starts_with("manifest-") {
            if file.ends_with(".notified.json") {
                *verdict = BlobVerdict::NotifiedMarker;
            } else if file.ends_with(".json") {
                *verdict = BlobVerdict::Manifest;
            }
        }
    }
    let rows = listed
        .iter()
        .cloned()
        .zip(verdicts)
        .map(|(blob, verdict)| BlobRow { blob, verdict })
        .collect();
    (rows, problems)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(index: usize, seed: u8, size: u64) -> SourceChunk {
        SourceChunk {
            index,
            document_id: format!("doc-{index}"),
            size,
            content_type: "video/mp4".into(),
            sha256: [seed; 32],
        }
    }

    fn media(name: &str, size: u64) -> ListedBlob {
        ListedBlob {
            name: name.into(),
            size,
            content_type: "video/mp4".into(),
        }
    }

    fn record_of(c: &SourceChunk, media: &str) -> (ListedBlob, BlobContent) {
        let value = json!({"archive": {"documentId": c.document_id, "mediaBlob": media, "sizeBytes": c.size, "sha256": hex(&c.sha256)}});
        (
            ListedBlob {
                name: format!("{media}.json"),
                size: 300,
                content_type: "application/json".into(),
            },
            BlobContent::Record(value),
        )
    }

    fn archive_of(chunks: &[SourceChunk]) -> (Vec<ListedBlob>, Vec<BlobContent>) {
        let mut listed = Vec::new();
        let mut contents = Vec::new();
        for c in chunks {
            let name = format!("x/{:03}-{}.mp4", c.index, c.document_id);
            listed.push(media(&name, c.size));
            contents.push(BlobContent::Media(c.sha256));
            let (b, r) = record_of(c, &name);
            listed.push(b);
            contents.push(r);
        }
        (listed, contents)
    }

    #[test]
    fn a_complete_byte_exact_archive_has_no_problems() {
        let chunks = [chunk(0, 1, 10), chunk(1, 2, 20)];
        let (listed, contents) = archive_of(&chunks);
        let (rows, problems) = assess(&chunks, &listed, &contents);
        assert!(problems.is_empty(), "{problems:?}");
        let verdicts: Vec<_> = rows.iter().map(|r| r.verdict.clone()).collect();
        assert_eq!(
            verdicts,
            vec![
                BlobVerdict::Media {
                    index: 0,
                    matches: true
                },
                BlobVerdict::Record {
                    index: 0,
                    consistent: true
                },
                BlobVerdict::Media {
                    index: 1,
                    matches: true
                },
                BlobVerdict::Record {
                    index: 1,
                    consistent: true
                },
            ]
        );
    }

    #[test]
    fn the_manifest_and_its_notification_marker_are_named() {
        let chunks = [chunk(0, 1, 10)];
        let (mut listed, mut contents) = archive_of(&chunks);
        for name in [
            "call/manifest-doc-0.json",
            "call/manifest-doc-0.notified.json",
            "call/other.bin",
        ] {
            listed.push(media(name, 1));
            contents.push(BlobContent::Media([0; 32]));
        }
        let (rows, problems) = assess(&chunks, &listed, &contents);
        assert!(problems.is_empty(), "{problems:?}");
        let verdicts: Vec<_> = rows[2..].iter().map(|r| r.verdict.clone()).collect();
        assert_eq!(
            verdicts,
            [
                BlobVerdict::Manifest,
                BlobVerdict::NotifiedMarker,
                BlobVerdict::Unexpected
            ]
        );
    }

    #[test]
    fn a_missing_chunk_a_wrong_hash_and_a_wrong_size_are_each_named() {
        let chunks = [chunk(0, 1, 10), chunk(1, 2, 20), chunk(2, 3, 30)];
        let (mut listed, mut contents) = archive_of(&chunks[..2]);
        contents[0] = BlobContent::Media([9; 32]);
        listed[2].size = 19;
        let (rows, problems) = assess(&chunks, &listed, &contents);
        let text = problems.join("\n");
        assert!(
            text.contains("chunk 0 (doc-0)") && text.contains("SHA-256"),
            "{text}"
        );
        assert!(
            text.contains("chunk 1 (doc-1)") && text.contains("19 bytes"),
            "{text}"
        );
        assert!(
            text.contains("chunk 2 (doc-2): no archive record"),
            "{text}"
        );
        assert_eq!(
            rows[0].verdict,
            BlobVerdict::Media {
                index: 0,
                matches: false
            }
        );
        assert_eq!(
            rows[3].verdict,
            BlobVerdict::Record {
                index: 1,
                consistent: false
            }
        );
    }

    #[test]
    fn a_record_without_its_media_blob_is_a_problem() {
        let chunks = [chunk(0, 1, 10)];
        let (listed, contents) = archive_of(&chunks);
        let (rows, problems) = assess(&chunks, &listed[1..], &contents[1..]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("not in the container"), "{problems:?}");
        assert_eq!(
            rows[0].verdict,
            BlobVerdict::Record {
                index: 0,
                consistent: false
            }
        );
    }
}
