//! Step 7: what an operator does with the fresh archive, run as they would run it, with a
//! local.settings.json for this machine: `archiver find --call` lists the recording from its
//! blob index tags, `archiver verify --call` reads every chunk back and proves its SHA-256, the
//! recording's manifest is summarised, and the one notification on `ARCHIVED_NOTIFY_QUEUE`
//! shown.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use super::services::{local_settings, Services};
use super::{human_size, say, DemoError, CONTAINER, NOTIFY_QUEUE};
use crate::archive::{ArchiveReader, BlobContent};
use crate::queue::{MessageEncoding, QueueClient};

/// Runs the tools on the recording of `call_id`; fails when `verify` does not prove it.
pub(super) async fn show(
    services: &Services,
    archiver: &Path,
    call_id: &str,
    http: reqwest::Client,
) -> Result<(), DemoError> {
    let (Some((acs, _)), Some(azurite)) = (&services.acs, &services.azurite) else {
        unreachable!("the tools run after every service started");
    };
    let dir = tempfile::tempdir().map_err(|e| DemoError::Options(e.to_string()))?;
    let settings = dir.path().join("local.settings.json");
    let values: serde_json::Map<String, Value> = local_settings(&azurite.connection_string(), acs)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let file = serde_json::json!({ "IsEncrypted": false, "Values": values });
    std::fs::write(&settings, file.to_string()).map_err(|e| DemoError::Options(e.to_string()))?;
    say(
        7,
        "The operator's tools on the archive, with a local.settings.json for this machine:",
    );

    let find = run(archiver, &settings, &["find", "--call", call_id]).await?;
    if find.status.code() == Some(2) && text(&find).contains("unrecognized subcommand") {
        println!("      (this build has no `archiver find`)");
    } else if !find.status.success() {
        return Err(tool_failed("archiver find", &find));
    }
    let verify = run(archiver, &settings, &["verify", "--call", call_id]).await?;
    if !verify.status.success() {
        return Err(tool_failed("archiver verify", &verify));
    }
    let reader = ArchiveReader::new(http, azurite, CONTAINER);
    let written = manifest(&reader, call_id).await?;
    notifications(&azurite.connection_string(), written).await
}

/// Prints what waits on `ARCHIVED_NOTIFY_QUEUE` for downstream work: exactly one message once
/// the manifest is written (none before), however often the chunks were delivered.
async fn notifications(storage: &str, manifest_written: bool) -> Result<(), DemoError> {
    let queue = QueueClient::from_connection_string(storage)
        .map_err(|e| DemoError::NotArchived(e.to_string()))?;
    let messages = match queue.peek_messages(NOTIFY_QUEUE, 32).await {
        Ok(m) => m,
        Err(e) if e.status() == Some(404) => Vec::new(),
        Err(e) => return Err(DemoError::NotArchived(e.to_string())),
    };
    let expected = usize::from(manifest_written);
    println!(
        "\n      {} message(s) on queue `{NOTIFY_QUEUE}` (ARCHIVED_NOTIFY_QUEUE) for downstream work",
        messages.len()
    );
    for m in &messages {
        let text = MessageEncoding::Base64
            .decode(&m.text)
            .unwrap_or_else(|_| m.text.clone());
        let shown: String = text.chars().take(300).collect();
        println!("        {shown}");
    }
    if messages.len() != expected {
        return Err(DemoError::NotArchived(format!(
            "{} notification(s) on `{NOTIFY_QUEUE}`, expected {expected}",
            messages.len()
        )));
    }
    Ok(())
}

/// Runs `archiver --settings FILE ARGS`, printing the command and its output indented.
async fn run(archiver: &Path, settings: &Path, args: &[&str]) -> Result<Output, DemoError> {
    println!("\n      $ archiver {}", args.join(" "));
    let out = tokio::process::Command::new(archiver)
        .arg("--settings")
        .arg(settings)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .map_err(|e| DemoError::Start {
            service: "archiver",
            reason: format!("{}: {e}", archiver.display()),
        })?;
    for line in text(&out).lines() {
        println!("      {line}");
    }
    Ok(out)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tool_failed(command: &str, out: &Output) -> DemoError {
    DemoError::NotArchived(format!(
        "`{command}` exited with {}: {}",
        out.status,
        text(out).trim()
    ))
}

/// Prints the recording's manifest (`manifest-<first document>.json` beside the chunks), and
/// says whether there is one; fails when there is more than one.
async fn manifest(reader: &ArchiveReader, call_id: &str) -> Result<bool, DemoError> {
    let listed = reader
        .list()
        .await
        .map_err(|e| DemoError::NotArchived(e.to_string()))?;
    let manifests: Vec<_> = listed
        .iter()
        .filter(|b| {
            b.name.contains(&format!("/{call_id}/"))
                && b.name.rsplit('/').next().is_some_and(|f| {
                    f.starts_with("manifest-")
                        && f.ends_with(".json")
                        && !f.ends_with(".notified.json")
                })
        })
        .collect();
    let blob = match manifests.as_slice() {
        [] => {
            println!("\n      (no manifest: this build does not write one)");
            return Ok(false);
        }
        [one] => one,
        more => {
            return Err(DemoError::NotArchived(format!(
                "{} manifests for one recording",
                more.len()
            )))
        }
    };
    let BlobContent::Record(m) = reader
        .read(&blob.name)
        .await
        .map_err(|e| DemoError::NotArchived(e.to_string()))?
    else {
        unreachable!("a .json blob is read as a document");
    };
    println!(
        "\n      The recording's manifest, {} ({}):",
        blob.name,
        human_size(blob.size)
    );
    for line in manifest_summary(&m) {
        println!("        {line}");
    }
    Ok(true)
}

/// The manifest in a few lines: ids, chunks and bytes, durations against the event's.
fn manifest_summary(m: &Value) -> Vec<String> {
    let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| "-".into());
    let ms = |v: &Value| {
        v.as_f64()
            .map(|n| format!("{:.1} s", n / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    let mut lines = vec![
        format!(
            "call {}, recording {}, started {}",
            s(&m["call"]["callId"]),
            s(&m["call"]["recordingId"]),
            s(&m["recordingStartTime"])
        ),
        format!(
            "{} chunks, {} in all; chunk durations add up to {} of the event's {}",
            m["chunkCount"],
            m["totalBytes"]
                .as_u64()
                .map_or_else(|| "-".into(), human_size),
            ms(&m["chunkDurationSumMs"]),
            ms(&m["recordingDurationMs"])
        ),
    ];
    for c in m["chunks"].as_array().into_iter().flatten() {
        let sha = s(&c["sha256"]);
        lines.push(format!(
            "chunk {}: {} {} sha256 {}…",
            c["index"],
            s(&c["mediaBlob"]),
            c["sizeBytes"]
                .as_u64()
                .map_or_else(|| "-".into(), human_size),
            sha.get(..16).unwrap_or(&sha)
        ));
    }
    lines.push(format!("written {}", s(&m["writtenAt"])));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_as_a_few_lines() {
        let m = serde_json::json!({
            "call": {"callId": "c-1", "recordingId": "r-1"},
            "recordingStartTime": "2026-11-24T10:00:00Z",
            "recordingDurationMs": 60000,
            "chunkDurationSumMs": 59800.0,
            "chunkCount": 2,
            "totalBytes": 3145728,
            "chunks": [
                {"index": 0, "mediaBlob": "a/0.mp4", "sizeBytes": 2097152, "sha256": "0123456789abcdef0123"},
                {"index": 1, "mediaBlob": "a/1.mp4", "sizeBytes": 1048576, "sha256": null}
            ],
            "writtenAt": "2026-11-24T10:05:00Z"
        });
        assert_eq!(
            manifest_summary(&m),
            [
                "call c-1, recording r-1, started 2026-11-24T10:00:00Z",
                "2 chunks, 3 MiB in all; chunk durations add up to 59.8 s of the event's 60.0 s",
                "chunk 0: a/0.mp4 2 MiB sha256 0123456789abcdef…",
                "chunk 1: a/1.mp4 1 MiB sha256 -…",
                "written 2026-11-24T10:05:00Z",
            ]
        );
    }
}
