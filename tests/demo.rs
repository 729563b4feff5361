//! The local demo (`scripts/demo`), end to end with small chunks: what a first-timer runs must
//! keep working, and must fail loudly when a chunk is not archived.

use std::future::pending;
use std::path::PathBuf;
use std::time::Duration;

use archiver_testkit::demo::{self, BlobVerdict, DemoError, DemoOptions, MIB};

fn options(chunk_sizes: Vec<u64>) -> DemoOptions {
    DemoOptions {
        chunk_sizes,
        timeout: Duration::from_secs(60),
        archiver: Some(PathBuf::from(env!("CARGO_BIN_EXE_archiver"))),
        ..DemoOptions::new(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            PathBuf::from(env!("CARGO_BIN_EXE_handler")),
        )
    }
}

#[tokio::test]
async fn the_demo_archives_every_chunk_byte_exact_through_the_queue() {
    let report = demo::run(options(vec![3 * MIB + 17, MIB, 64 * 1024]), pending())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.matching_media(), 3, "{report}");
    assert_eq!(
        report
            .rows
            .iter()
            .filter(|r| matches!(
                r.verdict,
                BlobVerdict::Media { .. } | BlobVerdict::Record { .. }
            ))
            .count(),
        6,
        "a media blob and a record per chunk: {report}"
    );
    assert_eq!(
        report
            .rows
            .iter()
            .filter(|r| r.verdict == BlobVerdict::Manifest)
            .count(),
        1,
        "one manifest for the recording: {report}"
    );
    assert!(
        !report
            .rows
            .iter()
            .any(|r| r.verdict == BlobVerdict::Unexpected),
        "{report}"
    );
    for index in 0..3 {
        assert!(
            report.rows.iter().any(|r| r.verdict
                == BlobVerdict::Record {
                    index,
                    consistent: true
                }),
            "record of chunk {index}: {report}"
        );
    }
    let transfers: Vec<_> = report
        .invocations
        .iter()
        .filter(|i| i.function == "RecordingTransfer")
        .collect();
    assert_eq!(
        transfers.len(),
        3,
        "one queue invocation per chunk: {report}"
    );
    assert!(transfers.iter().all(|i| i.succeeded()), "{report}");
    assert_eq!(
        report
            .invocations
            .iter()
            .filter(|i| i.function == "RecordingWebhook")
            .count(),
        2,
        "the handshake and the event went through the host's front end"
    );
    assert_eq!(
        report.acs_requests.1, 0,
        "every ACS request was signed correctly"
    );
    let table = report.to_string();
    assert!(
        table.contains("video/mp4") && table.contains("✓ match"),
        "{table}"
    );
}

#[tokio::test]
async fn a_chunk_that_cannot_be_archived_fails_the_demo_with_the_reason() {
    let mut o = options(vec![MIB, 64 * 1024]);
    o.withhold_chunk = Some(1);
    let err = demo::run(o, pending()).await.unwrap_err();
    let DemoError::NotArchived(reason) = &err else {
        panic!("expected NotArchived, got {err}");
    };
    assert!(
        reason.contains("recording-transfers-poison") && reason.contains("404"),
        "the poison move and its cause are named: {reason}"
    );
}

#[tokio::test]
async fn a_wrong_handler_path_is_refused_before_anything_starts() {
    let mut o = options(vec![MIB]);
    o.handler = PathBuf::from("/nonexistent/handler");
    let err = demo::run(o, pending()).await.unwrap_err();
    assert!(
        matches!(&err, DemoError::Options(m) if m.contains("/nonexistent/handler")),
        "{err}"
    );
}
