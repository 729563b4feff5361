//! The `handler` binary under load and under clients that misbehave on purpose: its logs stay
//! attributable and bounded, and its connections stay within their limits.

mod support;

use std::time::{Duration, Instant};

use archiver_testkit::host::HandlerProcess;
use serde_json::{json, Value};
use support::{ga_chunk, handler_with, wait_for_log};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// No log line may be longer than this, whatever the request held.
const MAX_LINE_BYTES: usize = 4096;

/// The invocation id the host would send for request `n` (recognisable in any log format).
fn invocation(n: usize) -> String {
    format!("f0f0f0f0-0000-4000-8000-{n:012}")
}

/// Every request number named in `line` by an invocation id.
fn invocations_in(line: &str) -> Vec<usize> {
    numbers_after(line, "f0f0f0f0-0000-4000-8000-")
}

/// Every request number named in `line` by an event id (`evt-<n>-...`).
fn events_in(line: &str) -> Vec<usize> {
    numbers_after(line, "evt-")
}

fn numbers_after(line: &str, prefix: &str) -> Vec<usize> {
    line.match_indices(prefix)
        .filter_map(|(i, _)| {
            let digits: String = line[i + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// One delivery for request `n`: a recording with three chunks, a validation event that is
/// rejected (no code) while its URL holds a token, and a 100 KB event with a 20 KB id that is
/// rejected.
fn delivery(n: usize) -> String {
    let chunks: Vec<Value> = (0..3)
        .map(|k| {
            let doc = format!("0-eus-d{n}-{k}");
            ga_chunk("storage.asm.skype.com", &doc, k, "audio", "SessionEnded")
        })
        .collect();
    json!([
        {
            "id": format!("evt-{n}-rec"),
            "subject": format!("/recording/call/call-{n}/recordingId/rec-{n}"),
            "eventType": "Microsoft.Communication.RecordingFileStatusUpdated",
            "eventTime": "2026-11-24T09:00:00Z",
            "dataVersion": "1.0",
            "data": {
                "recordingStorageInfo": { "recordingChunks": chunks },
                "recordingStartTime": "2026-11-24T09:00:00Z",
                "recordingDurationMs": 1000,
                "recordingContentType": "Audio",
                "recordingChannelType": "Mixed",
                "recordingFormatType": "Mp3",
            },
        },
        {
            "id": format!("evt-{n}-val"),
            "subject": "",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2026-11-24T09:00:00Z",
            "dataVersion": "2",
            "data": {
                "validationUrl": format!("https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/recordings/validate?id={n}&token=vt-secret-{n}-1f2e3d"),
            },
        },
        {
            "id": format!("evt-{n}-big-{}", "z".repeat(20_000)),
            "subject": "s".repeat(20_000),
            "eventType": "Microsoft.Communication.RecordingFileStatusUpdated",
            "eventTime": "2026-11-24T09:00:00Z",
            "dataVersion": "1.0",
            "data": { "junk": "y".repeat(100_000) },
        },
    ])
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_concurrent_requests_every_log_line_carries_only_its_own_request() {
    const REQUESTS: usize = 48;
    let h = handler_with(&[("RUST_LOG", "debug")]).await;
    let sends = (0..REQUESTS).map(|n| {
        h.client()
            .post(h.url("/api/RecordingWebhook?code=functionkey-secret-value"))
            .header("X-Azure-Functions-InvocationId", invocation(n))
            .header("Content-Type", "application/json")
            .header("aeg-event-type", "Notification")
            .body(delivery(n))
            .send()
    });
    for (n, r) in futures_util::future::join_all(sends)
        .await
        .into_iter()
        .enumerate()
    {
        let r = r.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "request {n}: {body}");
        assert_eq!(body["chunks"]["enqueued"], 3, "request {n}: {body}");
        assert_eq!(body["rejected"].as_array().map(Vec::len), Some(2), "{body}");
    }
    // Every request was answered; its last line ("answered") is written before the answer.
    let logs = h.output();
    let lines: Vec<&str> = logs.lines().collect();
    let mut rejected = vec![0; REQUESTS];
    let mut enqueued = vec![0; REQUESTS];
    for line in &lines {
        assert!(
            line.len() <= MAX_LINE_BYTES,
            "a line of {} bytes: {}…",
            line.len(),
            &line[..200]
        );
        let mut owners = invocations_in(line);
        owners.sort_unstable();
        owners.dedup();
        assert!(
            owners.len() <= 1,
            "a line carries several requests' invocation ids: {line}"
        );
        for event in events_in(line) {
            assert_eq!(
                owners.first(),
                Some(&event),
                "request {event}'s event is logged under another request's id: {line}"
            );
        }
        if let Some(&n) = owners.first() {
            rejected[n] += usize::from(line.contains("event rejected"));
            enqueued[n] += usize::from(line.contains("chunk enqueued"));
        }
    }
    assert_eq!(rejected, vec![2; REQUESTS], "rejections logged per request");
    assert_eq!(enqueued, vec![3; REQUESTS], "chunks logged per request");
    assert!(
        !logs.contains("vt-secret"),
        "the validation token reached the log"
    );
    assert!(
        !logs.contains("functionkey-secret-value"),
        "the function key reached the log"
    );
    let longest = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    eprintln!(
        "{} log lines for {REQUESTS} concurrent requests, longest {longest} bytes",
        lines.len()
    );
}

/// Margin on top of a configured timeout before a test calls a connection "still open":
/// generous, because the machine may be busy; it only bounds how long a failure takes.
const MARGIN: Duration = Duration::from_secs(4);

async fn connect(h: &HandlerProcess) -> TcpStream {
    TcpStream::connect(("127.0.0.1", h.port())).await.unwrap()
}

/// Reads until the server closes the connection; panics if it is still open after `limit`.
/// Returns what was received and how long it took.
async fn read_until_closed(
    conn: &mut TcpStream,
    limit: Duration,
    what: &str,
) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), conn.read(&mut buf)).await {
            Err(_) => panic!(
                "{what}: still open after {limit:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

/// Writes `first`, then one byte of `drip` every 200 ms until the server stops reading.
fn trickle(mut conn: tokio::net::tcp::OwnedWriteHalf, first: String, drip: u8) {
    tokio::spawn(async move {
        if conn.write_all(first.as_bytes()).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if conn.write_all(&[drip]).await.is_err() {
                return;
            }
        }
    });
}

#[tokio::test]
async fn slow_headers_silent_and_idle_connections_are_closed_after_the_header_timeout() {
    let h = handler_with(&[("HTTP_HEADER_TIMEOUT_SECS", "1")]).await;
    let bound = Duration::from_secs(1) + MARGIN;
    // Slowloris: a request head that never ends.
    let (mut slow_read, slow_write) = connect(&h).await.into_split();
    trickle(
        slow_write,
        "POST /api/RecordingWebhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ".into(),
        b'a',
    );
    // A connection that never sends a byte.
    let mut silent = connect(&h).await;
    // A keep-alive connection that goes idle after one request.
    let mut idle = connect(&h).await;
    idle.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut slow = [0u8; 1];
    let (slow_result, (_, silent_after), (idle_answer, idle_after)) = tokio::join!(
        tokio::time::timeout(bound, slow_read.read(&mut slow)),
        read_until_closed(&mut silent, bound, "a silent connection"),
        read_until_closed(&mut idle, bound, "an idle keep-alive connection"),
    );
    assert!(
        matches!(slow_result, Ok(Ok(0)) | Ok(Err(_))),
        "a never-ending request head is still open after {bound:?}"
    );
    assert!(idle_answer.starts_with("HTTP/1.1 200"), "{idle_answer}");
    eprintln!("closed after: silent {silent_after:?}, idle {idle_after:?} (header timeout 1 s)");
}

#[tokio::test]
async fn a_body_that_trickles_is_answered_408_after_the_body_timeout() {
    let h = handler_with(&[("HTTP_BODY_TIMEOUT_SECS", "1")]).await;
    let (mut read, write) = connect(&h).await.into_split();
    trickle(
        write,
        "POST /api/RecordingWebhook?code=k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[".into(),
        b' ',
    );
    let started = Instant::now();
    let mut answer = Vec::new();
    let limit = Duration::from_secs(1) + MARGIN;
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at((started + limit).into(), read.read(&mut buf)).await {
            Err(_) => panic!("a trickling body is still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    eprintln!(
        "trickling body answered 408 and closed after {:?}",
        started.elapsed()
    );
}

/// Sends `head` and then the whole of `body` before reading anything, as many clients do.
async fn send_whole_then_read(h: &HandlerProcess, head: &str, body: &[u8]) -> String {
    let mut conn = connect(h).await;
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body)
        .await
        .expect("the handler stopped reading before the body was sent");
    let (answer, _) = read_until_closed(&mut conn, Duration::from_secs(30), "a 413").await;
    answer
}

#[tokio::test]
async fn an_oversized_body_sent_whole_before_reading_still_gets_its_413() {
    let h = handler_with(&[]).await;
    let body = vec![b' '; 5 * 1024 * 1024];
    let answer = send_whole_then_read(
        &h,
        &format!("POST /api/RecordingWebhook?code=k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()),
        &body,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // The same without Content-Length: the limit is found while reading.
    let mut chunked = Vec::new();
    for piece in body.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = send_whole_then_read(
        &h,
        "POST /api/RecordingWebhook?code=k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        &chunked,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let h = handler_with(&[("HTTP_MAX_CONNECTIONS", "3")]).await;
    // Three clients hold a connection each with a half-sent body. (The readiness probe's
    // keep-alive connection may hold a slot too; either way the limit is reached.)
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = connect(&h).await;
        conn.write_all(b"POST /api/RecordingWebhook?code=k HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n[")
            .await
            .unwrap();
        held.push(conn);
    }
    wait_for_log(&h, "connection limit reached").await;
    let mut waiting = connect(&h).await;
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut byte))
            .await
            .is_err(),
        "a connection past the limit was served"
    );
    drop(held);
    let (answer, _) = read_until_closed(&mut waiting, MARGIN, "the waiting connection").await;
    assert!(
        format!("{}{answer}", byte[0] as char).contains("HTTP/1.1 200"),
        "{answer}"
    );
}
