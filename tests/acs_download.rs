//! ACS recording downloads against the emulator, over real HTTP on loopback: signatures for
//! both URL schemes, every injected fault, the SSRF guard, and byte-exact resumes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use archiver_testkit::acs::{
    AcsEmulator, AcsEmulatorConfig, Fault, RecordingFormat, Server, Verdict,
};
use futures_util::StreamExt;
use recording_archiver::acs::{
    self, chunk_urls, AcsClient, AcsError, AcsOptions, Download, Refusal,
};
use recording_archiver::clock::FixedClock;
use recording_archiver::config::acs::{AcsAuth, AcsSettings};
use recording_archiver::config::{AllowedHost, Lookup, Secret, Settings};
use recording_archiver::disposition::Disposition;
use recording_archiver::identity::{ManagedIdentityTokens, ACS_RESOURCE};
use recording_archiver::recording::ChunkSource;
use recording_archiver::retry::{FixedJitter, RetryPolicy};
use sha2::{Digest, Sha256};
use url::Url;

const MIB: u64 = 1024 * 1024;
const METADATA_FIXTURE: &str = include_str!("data/acs_metadata.json");
const HTML_400_FIXTURE: &str = include_str!("data/acs_error_400.html");

fn lookup(pairs: Vec<(&'static str, String)>) -> impl Lookup {
    let map: HashMap<&str, String> = pairs.into_iter().collect();
    move |name: &str| map.get(name).cloned()
}

/// Fast retries, so fault tests take milliseconds rather than seconds.
fn fast_options() -> AcsOptions {
    AcsOptions {
        retry: RetryPolicy {
            max_attempts: 6,
            deadline: Duration::from_secs(30),
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        },
        response_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(5),
        max_resumes: 32,
    }
}

/// Settings read the way the app reads them: the emulator's connection string, and both of its
/// servers in `ACS_EXTRA_ALLOWED_HOSTS`.
fn settings(
    connection_string: String,
    extra_hosts: Option<String>,
) -> (AcsSettings, Vec<AllowedHost>) {
    let mut pairs = vec![("ACS_CONNECTION_STRING", connection_string)];
    if let Some(extra) = extra_hosts {
        pairs.push(("ACS_EXTRA_ALLOWED_HOSTS", extra));
    }
    let s = Settings::load(&lookup(pairs)).expect("settings load");
    (s.acs.expect("ACS settings"), s.extra_allowed_hosts)
}

fn client_for(emu: &AcsEmulator) -> AcsClient {
    let (acs, extra) = settings(emu.connection_string(), Some(emu.extra_allowed_hosts()));
    AcsClient::new(acs::http_client().unwrap(), acs, extra, &lookup(Vec::new()))
        .with_options(fast_options())
        .with_jitter(Arc::new(FixedJitter(0.5)))
}

async fn emulator() -> AcsEmulator {
    AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap()
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

/// What draining a download produced.
struct Drained {
    len: u64,
    sha256: [u8; 32],
    largest_item: usize,
    error: Option<AcsError>,
}

async fn drain(mut download: Download) -> Drained {
    let mut hasher = Sha256::new();
    let mut drained = Drained {
        len: 0,
        sha256: [0; 32],
        largest_item: 0,
        error: None,
    };
    while let Some(item) = download.stream.next().await {
        match item {
            Ok(bytes) => {
                drained.len += bytes.len() as u64;
                drained.largest_item = drained.largest_item.max(bytes.len());
                hasher.update(&bytes);
            }
            Err(e) => {
                drained.error = Some(e);
                break;
            }
        }
    }
    drained.sha256 = hasher.finalize().into();
    drained
}

fn ranges(emu: &AcsEmulator) -> Vec<Option<String>> {
    emu.requests()
        .iter()
        .map(|r| r.range().map(str::to_string))
        .collect()
}

fn statuses(emu: &AcsEmulator) -> Vec<u16> {
    emu.requests().iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn ga_download_is_signed_for_the_acs_host_through_x_ms_host() {
    let emu = emulator().await;
    emu.add_recording("ga-doc", 5 * MIB + 123, 11, RecordingFormat::Mp4);
    let client = client_for(&emu);

    let download = client
        .download(&url(&emu.content_url("ga-doc")), 0)
        .await
        .unwrap();
    assert_eq!(download.total_len, 5 * MIB + 123);
    assert_eq!(download.content_type.as_deref(), Some("video/mp4"));
    let got = drain(download).await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.sha256, emu.expected_sha256("ga-doc").unwrap());

    let log = emu.requests();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!(r.server, Server::Storage);
    assert_eq!(r.verdict, Verdict::Accepted);
    assert_eq!(r.header("host"), Some(emu.storage_authority().as_str()));
    assert_eq!(r.header("x-ms-host"), Some(emu.acs_authority().as_str()));
    assert_eq!(r.header("x-ms-date"), r.header("date"));
    assert_eq!(
        r.header("x-ms-content-sha256"),
        Some(acs::sign::EMPTY_BODY_SHA256)
    );
    assert_eq!(r.header("authorization"), Some("HMAC-SHA256 ***"));
    assert_eq!(r.range(), None);
}

#[tokio::test]
async fn preview_download_is_signed_for_the_endpoint_itself() {
    let emu = emulator().await;
    emu.add_recording("preview-doc", 2 * MIB + 5, 12, RecordingFormat::Mp3);
    let client = client_for(&emu);

    let urls = chunk_urls(client.endpoint(), "preview-doc", &ChunkSource::Preview);
    assert_eq!(urls.media.as_str(), emu.preview_url("preview-doc"));
    let download = client.download(&urls.media, 0).await.unwrap();
    assert_eq!(download.content_type.as_deref(), Some("audio/mpeg"));
    let got = drain(download).await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.sha256, emu.expected_sha256("preview-doc").unwrap());

    let log = emu.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].server, Server::Acs);
    assert_eq!(log[0].verdict, Verdict::Accepted);
    assert_eq!(log[0].header("x-ms-host"), None);
    assert!(
        log[0].target.ends_with("?api-version=2021-04-15-preview1"),
        "{}",
        log[0].target
    );
}

#[tokio::test]
async fn metadata_is_fetched_through_both_url_schemes() {
    let emu = emulator().await;
    emu.add_recording("meta-doc", 1000, 13, RecordingFormat::Mp4);
    emu.set_metadata("meta-doc", METADATA_FIXTURE);
    let client = client_for(&emu);

    let ga = client
        .fetch_metadata(&url(&emu.metadata_url("meta-doc")))
        .await
        .unwrap();
    let preview_url = chunk_urls(client.endpoint(), "meta-doc", &ChunkSource::Preview)
        .metadata
        .unwrap();
    let preview = client.fetch_metadata(&preview_url).await.unwrap();
    assert_eq!(ga, METADATA_FIXTURE.as_bytes());
    assert_eq!(preview, METADATA_FIXTURE.as_bytes());
    let doc: serde_json::Value = serde_json::from_slice(&ga).unwrap();
    assert_eq!(
        doc["chunkDocumentId"],
        "0-eus-d12-801b3f3fc462fe8a01e6810cbff729b8"
    );

    let servers: Vec<_> = emu
        .requests()
        .iter()
        .map(|r| (r.server, r.verdict.clone()))
        .collect();
    assert_eq!(
        servers,
        [
            (Server::Storage, Verdict::Accepted),
            (Server::Acs, Verdict::Accepted)
        ]
    );
}

#[tokio::test]
async fn oversized_metadata_is_refused_for_good() {
    let emu = emulator().await;
    emu.add_recording("big-meta", 10, 1, RecordingFormat::Mp4);
    emu.set_metadata("big-meta", &"x".repeat(acs::METADATA_MAX_BYTES + 1));
    let err = client_for(&emu)
        .fetch_metadata(&url(&emu.metadata_url("big-meta")))
        .await
        .unwrap_err();
    assert!(matches!(err, AcsError::TooLarge { .. }), "{err}");
    assert_eq!(err.disposition(), Disposition::Drop);
}

#[tokio::test]
async fn delete_frees_the_recording_and_repeating_it_is_harmless() {
    let emu = emulator().await;
    emu.add_recording("del-doc", 1000, 14, RecordingFormat::Wav);
    let client = client_for(&emu);
    let delete = url(&emu.delete_url("del-doc"));

    client.delete(&delete).await.unwrap();
    assert!(emu.is_deleted("del-doc"));
    // A redelivered event deletes again: 404 counts as done.
    client.delete(&delete).await.unwrap();
    let log = emu.requests();
    assert_eq!(log.len(), 2);
    assert!(log
        .iter()
        .all(|r| r.method == "DELETE" && r.verdict == Verdict::Accepted));
    assert_eq!(
        log[0].header("x-ms-host"),
        Some(emu.acs_authority().as_str())
    );
    assert_eq!(statuses(&emu), [200, 404]);

    let err = client
        .download(&url(&emu.content_url("del-doc")), 0)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.attempts(), 1);
    assert_eq!(err.disposition(), Disposition::Drop);
}

#[tokio::test]
async fn a_503_with_retry_after_is_waited_out_then_the_download_succeeds() {
    let emu = emulator().await;
    emu.add_recording("busy", MIB, 15, RecordingFormat::Mp4);
    emu.push_faults("busy", vec![Fault::unavailable(1), Fault::unavailable(1)]);
    let client = client_for(&emu);

    let started = Instant::now();
    let got = drain(
        client
            .download(&url(&emu.content_url("busy")), 0)
            .await
            .unwrap(),
    )
    .await;
    let waited = started.elapsed();
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.sha256, emu.expected_sha256("busy").unwrap());
    assert_eq!(statuses(&emu), [503, 503, 200]);
    // Our own delays are at most 100 ms; only Retry-After explains two seconds.
    assert!(waited >= Duration::from_secs(2), "waited {waited:?}");
    // Every attempt is signed afresh and accepted.
    assert!(emu
        .requests()
        .iter()
        .all(|r| r.verdict == Verdict::Accepted));
}

#[tokio::test]
async fn a_cut_body_resumes_from_the_next_byte() {
    let emu = emulator().await;
    emu.add_recording("cut", 3 * MIB, 16, RecordingFormat::Mp4);
    emu.push_faults("cut", vec![Fault::CutAfter(1_000_000)]);
    let client = client_for(&emu);

    let got = drain(
        client
            .download(&url(&emu.content_url("cut")), 0)
            .await
            .unwrap(),
    )
    .await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.len, 3 * MIB);
    assert_eq!(got.sha256, emu.expected_sha256("cut").unwrap());
    assert_eq!(ranges(&emu), [None, Some("bytes=1000000-".to_string())]);
    assert_eq!(statuses(&emu), [200, 206]);
}

/// SHA-256 of bytes `start..end` of the emulator's recording `doc`.
fn sha256_of_range(emu: &AcsEmulator, doc: &str, start: u64, end: u64) -> [u8; 32] {
    let content = emu.content(doc).unwrap();
    let mut buf = vec![0u8; (end - start) as usize];
    assert_eq!(content.read_at(start, &mut buf), buf.len());
    Sha256::digest(&buf).into()
}

/// A ranged read cut in the middle resumes within its range, from the next byte, and ends at
/// the range's end; a server that ignores `Range` is read only up to it.
#[tokio::test]
async fn a_cut_range_resumes_within_the_range_and_stops_at_its_end() {
    let emu = emulator().await;
    emu.add_recording("ranged", 3 * MIB, 18, RecordingFormat::Mp4);
    emu.push_faults("ranged", vec![Fault::CutAfter(300_000)]);
    let client = client_for(&emu);
    let range = acs::ByteRange {
        start: MIB,
        end: Some(2 * MIB),
    };
    let media = url(&emu.content_url("ranged"));

    let got = drain(client.download_range(&media, range).await.unwrap()).await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.len, MIB);
    assert_eq!(got.sha256, sha256_of_range(&emu, "ranged", MIB, 2 * MIB));
    assert_eq!(
        ranges(&emu),
        [
            Some(format!("bytes={}-{}", MIB, 2 * MIB - 1)),
            Some(format!("bytes={}-{}", MIB + 300_000, 2 * MIB - 1))
        ]
    );
    assert_eq!(statuses(&emu), [206, 206]);

    emu.clear_requests();
    emu.push_faults("ranged", vec![Fault::IgnoreRange]);
    let got = drain(client.download_range(&media, range).await.unwrap()).await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(
        got.len, MIB,
        "the 200's body past the range is not delivered"
    );
    assert_eq!(got.sha256, sha256_of_range(&emu, "ranged", MIB, 2 * MIB));
    assert_eq!(statuses(&emu), [200]);
}

/// Several hundred MiB, byte-exact through three cuts and a 503 with `Retry-After`, in pieces
/// of at most 1 MiB. The handler's memory through the same faults is measured in
/// `tests/memory.rs`, in a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_mib_survive_three_cuts_and_a_503_in_bounded_pieces() {
    const SIZE: u64 = 300 * MIB;
    let emu = emulator().await;
    emu.add_recording("big", SIZE, 17, RecordingFormat::Mp4);
    let (cut1, cut2, cut3) = (70 * MIB, 60 * MIB + 7, 50 * MIB + 13);
    emu.push_faults(
        "big",
        vec![
            Fault::CutAfter(cut1),
            Fault::unavailable(1),
            Fault::CutAfter(cut2),
            Fault::CutAfter(cut3),
        ],
    );
    let client = client_for(&emu);
    let expected = tokio::task::spawn_blocking({
        let content = emu.content("big").unwrap();
        move || content.sha256()
    });

    let mut download = client
        .download(&url(&emu.content_url("big")), 0)
        .await
        .unwrap();
    assert_eq!(download.total_len, SIZE);
    let mut hasher = Sha256::new();
    let (mut len, mut largest, mut items) = (0u64, 0usize, 0u64);
    while let Some(item) = download.stream.next().await {
        let bytes = item.unwrap_or_else(|e| panic!("download failed at byte {len}: {e}"));
        len += bytes.len() as u64;
        largest = largest.max(bytes.len());
        hasher.update(&bytes);
        items += 1;
    }
    let sha: [u8; 32] = hasher.finalize().into();

    assert_eq!(len, SIZE);
    assert_eq!(sha, expected.await.unwrap(), "bytes differ from the source");
    assert_eq!(
        ranges(&emu),
        [
            None,
            Some(format!("bytes={cut1}-")),
            Some(format!("bytes={cut1}-")),
            Some(format!("bytes={}-", cut1 + cut2)),
            Some(format!("bytes={}-", cut1 + cut2 + cut3)),
        ]
    );
    assert_eq!(statuses(&emu), [200, 503, 206, 206, 206]);
    // No item is large: the stream never hands out a buffered chunk.
    assert!(largest <= MIB as usize, "largest item {largest} bytes");
    eprintln!("300 MiB download: {items} items, largest {largest} B");
}

#[tokio::test]
async fn an_empty_200_is_retried() {
    let emu = emulator().await;
    emu.add_recording("idle", 100_000, 18, RecordingFormat::Mp4);
    emu.push_faults("idle", vec![Fault::EmptyOk]);
    let got = drain(
        client_for(&emu)
            .download(&url(&emu.content_url("idle")), 0)
            .await
            .unwrap(),
    )
    .await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.sha256, emu.expected_sha256("idle").unwrap());
    assert_eq!(statuses(&emu), [200, 200]);
}

#[tokio::test]
async fn transient_failures_are_bounded_and_end_in_retry() {
    let emu = emulator().await;
    emu.add_recording("down", 1000, 19, RecordingFormat::Mp4);
    emu.push_faults("down", vec![Fault::status(500); 10]);
    emu.push_faults("empty", vec![Fault::EmptyOk; 10]);
    emu.add_recording("empty", 1000, 19, RecordingFormat::Mp4);
    let client = client_for(&emu).with_retry_policy(RetryPolicy {
        max_attempts: 4,
        deadline: Duration::from_secs(30),
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    });

    let err = client
        .download(&url(&emu.content_url("down")), 0)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(err.attempts(), 4);
    assert_eq!(err.disposition(), Disposition::Retry);
    assert!(err.request_id().is_some(), "{err}");

    let err = client
        .download(&url(&emu.content_url("empty")), 0)
        .await
        .unwrap_err();
    assert!(matches!(err, AcsError::EmptyBody { .. }), "{err}");
    assert_eq!(err.attempts(), 4);
    assert_eq!(err.disposition(), Disposition::Retry);
    assert_eq!(emu.requests().len(), 8);
}

#[tokio::test]
async fn an_html_400_is_reported_once_with_ids_and_a_redacted_snippet() {
    let emu = emulator().await;
    emu.add_recording("bad", 1000, 20, RecordingFormat::Mp4);
    emu.push_faults("bad", vec![Fault::html_bad_request(HTML_400_FIXTURE)]);
    let err = client_for(&emu)
        .download(&url(&emu.content_url("bad")), 0)
        .await
        .unwrap_err();

    assert_eq!(emu.requests().len(), 1, "a 400 is not retried");
    let AcsError::Status {
        status,
        request_id,
        ms_cv,
        body,
        attempts,
        host,
        ..
    } = &err
    else {
        panic!("expected a status error, got {err}");
    };
    assert_eq!((*status, *attempts), (400, 1));
    assert_eq!(host, &emu.storage_authority());
    assert!(
        request_id
            .as_deref()
            .is_some_and(|id| id.starts_with("00000000-")),
        "{err}"
    );
    assert!(
        ms_cv.as_deref().is_some_and(|cv| cv.starts_with("EmuCV")),
        "{err}"
    );
    assert!(body.contains("400 - Bad Request"), "{body}");
    assert!(
        !body.contains("ZmFrZS1zaWduYXR1cmU"),
        "signature echoed by the page leaked: {body}"
    );
    assert_eq!(err.disposition(), Disposition::Drop);
    let text = err.to_string();
    assert!(
        text.contains("400 Bad Request") && text.contains("x-ms-request-id"),
        "{text}"
    );
}

#[tokio::test]
async fn a_slow_trickle_is_cut_by_the_read_timeout_and_resumed() {
    let emu = emulator().await;
    emu.add_recording("slow", MIB, 21, RecordingFormat::Mp4);
    emu.push_faults(
        "slow",
        vec![Fault::Trickle {
            chunk: 65_536,
            interval: Duration::from_secs(2),
        }],
    );
    let client = client_for(&emu).with_options(AcsOptions {
        read_timeout: Duration::from_millis(300),
        ..fast_options()
    });

    let got = drain(
        client
            .download(&url(&emu.content_url("slow")), 0)
            .await
            .unwrap(),
    )
    .await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.sha256, emu.expected_sha256("slow").unwrap());
    assert_eq!(ranges(&emu), [None, Some("bytes=65536-".to_string())]);
}

#[tokio::test]
async fn a_trickle_within_the_read_timeout_completes_in_one_request() {
    let emu = emulator().await;
    emu.add_recording("steady", MIB, 22, RecordingFormat::Mp4);
    emu.push_faults(
        "steady",
        vec![Fault::Trickle {
            chunk: 256 * 1024,
            interval: Duration::from_millis(30),
        }],
    );
    let got = drain(
        client_for(&emu)
            .download(&url(&emu.content_url("steady")), 0)
            .await
            .unwrap(),
    )
    .await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.sha256, emu.expected_sha256("steady").unwrap());
    assert_eq!(emu.requests().len(), 1);
}

#[tokio::test]
async fn a_server_that_ignores_range_is_not_appended_twice() {
    let emu = emulator().await;
    emu.add_recording("norange", 2 * MIB, 23, RecordingFormat::Mp4);
    emu.push_faults(
        "norange",
        vec![Fault::CutAfter(400_000), Fault::IgnoreRange],
    );
    let got = drain(
        client_for(&emu)
            .download(&url(&emu.content_url("norange")), 0)
            .await
            .unwrap(),
    )
    .await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.len, 2 * MIB);
    assert_eq!(got.sha256, emu.expected_sha256("norange").unwrap());
    assert_eq!(ranges(&emu), [None, Some("bytes=400000-".to_string())]);
    assert_eq!(statuses(&emu), [200, 200]);
}

#[tokio::test]
async fn a_resume_answered_from_the_wrong_offset_is_refused() {
    let emu = emulator().await;
    emu.add_recording("shifted", 2 * MIB, 24, RecordingFormat::Mp4);
    emu.push_faults(
        "shifted",
        vec![Fault::CutAfter(400_000), Fault::RangeFrom(0)],
    );
    let got = drain(
        client_for(&emu)
            .download(&url(&emu.content_url("shifted")), 0)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        got.len, 400_000,
        "only the bytes before the cut were delivered"
    );
    let err = got.error.expect("the splice must be refused");
    assert!(
        matches!(
            err,
            AcsError::BadContentRange {
                expected_start: 400_000,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.disposition(), Disposition::Drop);
    assert_eq!(emu.requests().len(), 2, "a bad range is not retried");
}

#[tokio::test]
async fn a_download_can_start_at_an_offset() {
    let emu = emulator().await;
    emu.add_recording("tail", 3 * MIB, 25, RecordingFormat::Mp4);
    let download = client_for(&emu)
        .download(&url(&emu.content_url("tail")), 1_234_567)
        .await
        .unwrap();
    assert_eq!((download.total_len, download.offset), (3 * MIB, 1_234_567));
    let got = drain(download).await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(
        got.sha256,
        emu.content("tail").unwrap().sha256_from(1_234_567)
    );
    assert_eq!(ranges(&emu), [Some("bytes=1234567-".to_string())]);
}

#[tokio::test]
async fn the_ssrf_guard_refuses_bad_urls_without_sending_anything() {
    let emu = emulator().await;
    emu.add_recording("doc", 1000, 26, RecordingFormat::Mp4);
    let listed = client_for(&emu);
    let (acs, _) = settings(emu.connection_string(), None);
    let unlisted = AcsClient::new(
        acs::http_client().unwrap(),
        acs,
        Vec::new(),
        &lookup(Vec::new()),
    )
    .with_options(fast_options());
    let storage_port = emu
        .storage_authority()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let path = "/v1/objects/doc/content/video";

    let cases: Vec<(&AcsClient, String, Refusal)> = vec![
        // The emulator itself, but not listed: plain http is refused, and so is an IP over https.
        (
            &unlisted,
            emu.content_url("doc"),
            Refusal::Scheme("http".into()),
        ),
        (
            &unlisted,
            format!("https://{}{path}", emu.storage_authority()),
            Refusal::IpLiteral,
        ),
        (
            &unlisted,
            emu.preview_url("doc"),
            Refusal::Scheme("http".into()),
        ),
        // Listed, but with credentials in the URL, or under another name.
        (
            &listed,
            format!("http://user:pw@{}{path}", emu.storage_authority()),
            Refusal::UserInfo,
        ),
        (
            &listed,
            format!("http://localhost:{storage_port}{path}"),
            Refusal::Scheme("http".into()),
        ),
        // Foreign hosts.
        (
            &listed,
            "https://storage.asm.skype.com.evil.example/v1/objects/doc/content/video".into(),
            Refusal::NotAllowed,
        ),
        (
            &listed,
            "https://evilasm.skype.com/v1/objects/doc/content/video".into(),
            Refusal::NotAllowed,
        ),
        (
            &listed,
            "http://169.254.169.254/metadata/identity/oauth2/token".into(),
            Refusal::Scheme("http".into()),
        ),
        (
            &listed,
            "https://10.0.0.1/v1/objects/doc/content/video".into(),
            Refusal::IpLiteral,
        ),
        (
            &listed,
            "https://storage.asm.skype.com:8443/v1/objects/doc/content/video".into(),
            Refusal::Port(8443),
        ),
        (&listed, "file:///etc/passwd".into(), Refusal::NoHost),
    ];
    for (client, raw, refusal) in cases {
        let target = url(&raw);
        let host = target.host_str().unwrap_or_default().to_string();
        let errors = [
            client.download(&target, 0).await.unwrap_err(),
            client.fetch_metadata(&target).await.unwrap_err(),
            client.delete(&target).await.unwrap_err(),
        ];
        for err in errors {
            match &err {
                AcsError::Refused { reason, .. } => assert_eq!(reason, &refusal, "{raw}"),
                other => panic!("{raw}: expected a refusal, got {other}"),
            }
            assert!(err.to_string().contains(&host), "{raw}: {err}");
            assert_eq!(err.disposition(), Disposition::Drop);
            assert_eq!(err.attempts(), 0);
        }
    }
    assert!(
        emu.requests().is_empty(),
        "refused URLs reached the emulator: {:?}",
        emu.requests()
    );
}

#[tokio::test]
async fn an_expired_date_is_a_clear_permanent_error() {
    let emu = emulator().await;
    emu.add_recording("doc", 1000, 27, RecordingFormat::Mp4);
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let client = client_for(&emu).with_clock(Arc::new(FixedClock(an_hour_ago)));

    let err = client
        .download(&url(&emu.content_url("doc")), 0)
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.attempts()), (Some(401), 1));
    assert_eq!(err.disposition(), Disposition::Drop);
    assert!(err.to_string().contains("clock"), "{err}");
    let log = emu.requests();
    assert_eq!(log.len(), 1, "a 401 is not retried");
    assert!(
        matches!(&log[0].verdict, Verdict::Rejected(why) if why.contains("away from the server's clock")),
        "{:?}",
        log[0].verdict
    );
}

#[tokio::test]
async fn a_wrong_key_is_a_clear_permanent_error() {
    let emu = emulator().await;
    emu.add_recording("doc", 1000, 28, RecordingFormat::Mp4);
    let wrong = format!(
        "endpoint={};accesskey=d3Jvbmcta2V5LWJ5dGVz",
        emu.acs_endpoint()
    );
    let (acs, extra) = settings(wrong, Some(emu.extra_allowed_hosts()));
    let client = AcsClient::new(acs::http_client().unwrap(), acs, extra, &lookup(Vec::new()))
        .with_options(fast_options());

    for target in [emu.content_url("doc"), emu.preview_url("doc")] {
        let err = client.download(&url(&target), 0).await.unwrap_err();
        assert_eq!((err.status(), err.attempts()), (Some(401), 1), "{err}");
        assert_eq!(err.disposition(), Disposition::Drop);
        assert!(err.to_string().contains("access key"), "{err}");
        assert!(!err.to_string().contains("d3Jvbmcta2V5LWJ5dGVz"), "{err}");
    }
    let log = emu.requests();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(
        |r| matches!(&r.verdict, Verdict::Rejected(why) if why.contains("signature does not match"))
    ));
}

/// The mistakes users make by hand, checked against the emulator with the signer's pieces.
#[tokio::test]
async fn requests_signed_for_the_wrong_host_or_body_are_refused_by_the_emulator() {
    let emu = emulator().await;
    emu.add_recording("doc", 1000, 29, RecordingFormat::Mp4);
    let key = recording_archiver::config::acs::parse_connection_string(&emu.connection_string())
        .unwrap()
        .1;
    let content = url(&emu.content_url("doc"));
    let http = reqwest::Client::new();
    let send = |host: String, x_ms_host: Option<String>, signed_body: &'static [u8]| {
        let target = acs::sign::SigningTarget {
            host,
            path_and_query: content.path().to_string(),
            x_ms_host,
        };
        let signed =
            acs::sign::sign_request("GET", &target, key.expose(), SystemTime::now(), signed_body);
        let mut request = http
            .get(content.clone())
            .header("x-ms-date", &signed.date)
            .header("x-ms-content-sha256", &signed.content_sha256)
            .header("authorization", signed.authorization.expose().as_str());
        if let Some(h) = &signed.x_ms_host {
            request = request.header("x-ms-host", h);
        }
        request.send()
    };

    // Signed for the storage host it is sent to, as a generic HMAC client would: the classic 401.
    assert_eq!(
        send(emu.storage_authority(), None, b"")
            .await
            .unwrap()
            .status(),
        401
    );
    // Signed for a body that was not sent.
    assert_eq!(
        send(emu.acs_authority(), Some(emu.acs_authority()), b"{}")
            .await
            .unwrap()
            .status(),
        401
    );
    // x-ms-host naming another resource.
    assert_eq!(
        send("other.example".into(), Some("other.example".into()), b"")
            .await
            .unwrap()
            .status(),
        401
    );
    // Done right.
    assert_eq!(
        send(emu.acs_authority(), Some(emu.acs_authority()), b"")
            .await
            .unwrap()
            .status(),
        200
    );
    // No signature at all.
    assert_eq!(
        http.get(content.clone()).send().await.unwrap().status(),
        401
    );

    let verdicts: Vec<_> = emu.requests().into_iter().map(|r| r.verdict).collect();
    let why = |v: &Verdict| match v {
        Verdict::Rejected(w) => w.clone(),
        Verdict::Accepted => "accepted".into(),
    };
    assert!(
        why(&verdicts[0]).contains("no x-ms-host"),
        "{:?}",
        verdicts[0]
    );
    assert!(
        why(&verdicts[1]).contains("does not match the body"),
        "{:?}",
        verdicts[1]
    );
    assert!(
        why(&verdicts[2]).contains("is not the ACS resource"),
        "{:?}",
        verdicts[2]
    );
    assert_eq!(verdicts[3], Verdict::Accepted);
    assert!(
        why(&verdicts[4]).contains("no Authorization"),
        "{:?}",
        verdicts[4]
    );
}

#[tokio::test]
async fn managed_identity_sends_a_bearer_token_with_x_ms_host() {
    use warp::Filter;
    let emu = AcsEmulator::start(AcsEmulatorConfig {
        bearer_token: Some("mi-token-123".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    emu.add_recording("mi-doc", 300_000, 30, RecordingFormat::Mp4);

    // A managed-identity endpoint as App Service runs it.
    let token_route = warp::path!("msi" / "token")
        .and(warp::header::exact("x-identity-header", "platform-secret"))
        .and(warp::query::<HashMap<String, String>>())
        .map(|q: HashMap<String, String>| {
            assert_eq!(q.get("resource").map(String::as_str), Some(ACS_RESOURCE));
            let expires = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 3600;
            warp::reply::json(&serde_json::json!({"access_token": "mi-token-123", "expires_on": expires.to_string(), "token_type": "Bearer"}))
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let identity = url(&format!(
        "http://{}/msi/token",
        listener.local_addr().unwrap()
    ));
    tokio::spawn(warp::serve(token_route).incoming(listener).run());

    let http = acs::http_client().unwrap();
    let tokens = ManagedIdentityTokens::new(
        http.clone(),
        identity,
        Secret::new("platform-secret".into()),
        ACS_RESOURCE,
        None,
    );
    let settings = AcsSettings {
        endpoint: url(&emu.acs_endpoint()),
        auth: AcsAuth::ManagedIdentity { client_id: None },
    };
    let extra = vec![AllowedHost {
        host: "127.0.0.1".into(),
        port: None,
    }];
    let client = AcsClient::new(http, settings, extra, &lookup(Vec::new()))
        .with_token_source(Arc::new(tokens))
        .with_options(fast_options());

    let got = drain(
        client
            .download(&url(&emu.content_url("mi-doc")), 0)
            .await
            .unwrap(),
    )
    .await;
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.sha256, emu.expected_sha256("mi-doc").unwrap());
    let log = emu.requests();
    assert_eq!(log[0].verdict, Verdict::Accepted);
    assert_eq!(log[0].header("authorization"), Some("Bearer ***"));
    assert_eq!(
        log[0].header("x-ms-host"),
        Some(emu.acs_authority().as_str())
    );
}

#[tokio::test]
async fn refused_and_silent_connections_are_transient() {
    let emu = emulator().await;
    let (acs, _) = settings(emu.connection_string(), None);
    let extra = vec![AllowedHost {
        host: "127.0.0.1".into(),
        port: None,
    }];
    let client = AcsClient::new(acs::http_client().unwrap(), acs, extra, &lookup(Vec::new()))
        .with_options(AcsOptions {
            retry: RetryPolicy {
                max_attempts: 2,
                deadline: Duration::from_secs(10),
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(10),
            },
            response_timeout: Duration::from_millis(200),
            ..fast_options()
        });

    // Nothing listens on a port that was just released.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let err = client
        .download(
            &url(&format!("http://{closed}/v1/objects/d/content/video")),
            0,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AcsError::Transport {
                kind: acs::TransportKind::Connect,
                attempts: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.disposition(), Disposition::Retry);

    // A server that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let err = client
        .download(
            &url(&format!("http://{silent_addr}/v1/objects/d/content/video")),
            0,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AcsError::Transport {
                kind: acs::TransportKind::ResponseTimeout,
                attempts: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.disposition(), Disposition::Retry);
}
