//! What hostile input costs: the worst shapes of delivery that fit in `WEBHOOK_MAX_BODY_BYTES`
//! (many chunks, many events, many tiny values, long strings), sent to the real `handler`
//! process, and the same shapes replayed from a file by `archiver replay`. Each must be
//! answered correctly with the child's peak resident set under [`LIMIT`]. The peak is the
//! child's own (`VmHWM`, or `wait4`'s `ru_maxrss` for a process that has exited). And a chunk
//! far larger than that limit, archived through cuts and a 503, by a handler that stays under it.

mod support;

use archiver_testkit::acs::{AcsEmulator, AcsEmulatorConfig, Fault, RecordingFormat};
use archiver_testkit::azurite::ACCOUNT;
use archiver_testkit::procstat;
use archiver_testkit::sink::DiscardSink;
use recording_archiver::config::DEFAULT_MAX_BODY_BYTES;
use recording_archiver::recording::MAX_CHUNKS_PER_EVENT;
use serde_json::{json, Value};
use support::{
    ga_chunk, ga_event, handler_env, peek_queue, post_delivery, set, setting, start_handler,
    storage_at, ARCHIVER,
};

/// The most a handler or replay may take, whatever it is sent.
const LIMIT: u64 = 64 * 1024 * 1024;

const MIB: f64 = 1024.0 * 1024.0;

/// A GA chunk as ACS writes it: about 400 bytes.
fn chunk(i: usize, host: &str) -> Value {
    let doc = format!("0-wus-d10-{i:032x}");
    ga_chunk(host, &doc, i, "video", "ChunkMaximumSizeExceeded")
}

fn recording_event(id: &str, subject: &str, chunks: Vec<Value>) -> Value {
    json!({
        "id": id,
        "subject": subject,
        "eventType": "Microsoft.Communication.RecordingFileStatusUpdated",
        "eventTime": "2026-11-24T13:00:05Z",
        "dataVersion": "1.0",
        "data": {
            "recordingStorageInfo": {"recordingChunks": chunks},
            "recordingStartTime": "2026-11-24T09:00:00Z",
            "recordingContentType": "AudioVideo",
            "recordingChannelType": "Mixed",
            "recordingFormatType": "Mp4",
        },
    })
}

/// A JSON array of at most `max` items from `item(i)`, as long as it stays within `budget`
/// bytes.
fn fill(budget: usize, max: usize, mut item: impl FnMut(usize) -> String) -> String {
    let mut body = String::from("[");
    for i in 0..max {
        let next = item(i);
        if body.len() + next.len() + 2 > budget {
            break;
        }
        if i > 0 {
            body.push(',');
        }
        body.push_str(&next);
    }
    body.push(']');
    body
}

/// A recording event of `n` chunks at `host`, as text.
fn event_of(n: usize, host: &str) -> String {
    let chunks = (0..n).map(|i| chunk(i, host)).collect();
    recording_event("evt-mem", "/recording/call/c-mem", chunks).to_string()
}

/// Starts a handler in queue mode, posts `body`, and returns the answer and the handler's
/// peak resident set.
async fn deliver(body: String) -> (u16, Value, u64, Vec<(String, String)>) {
    assert!(body.len() <= DEFAULT_MAX_BODY_BYTES, "{} bytes", body.len());
    let env = handler_env(None);
    let h = start_handler(&env).await;
    let (status, answer) = post_delivery(&h, body).await;
    let peak = procstat::peak_rss(h.pid()).unwrap();
    (status, answer, peak, env)
}

fn report(shape: &str, body_bytes: usize, peak: u64) {
    println!(
        "{shape}: body {:.2} MiB, handler peak RSS {:.1} MiB",
        body_bytes as f64 / MIB,
        peak as f64 / MIB
    );
    assert!(
        peak < LIMIT,
        "{shape}: peak RSS {:.1} MiB is over {:.0} MiB",
        peak as f64 / MIB,
        LIMIT as f64 / MIB
    );
}

#[tokio::test]
async fn a_recording_of_the_most_chunks_allowed_is_enqueued_in_bounded_memory() {
    let body = format!(
        "[{}]",
        event_of(MAX_CHUNKS_PER_EVENT, "us-storage.asm.skype.com")
    );
    let size = body.len();
    let (status, answer, peak, env) = deliver(body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["chunks"]["enqueued"], MAX_CHUNKS_PER_EVENT,
        "{answer}"
    );
    report("1 event of 1000 chunks", size, peak);
    let messages = peek_queue(setting(&env, "TRANSFER_QUEUE")).await;
    let largest = messages.iter().map(String::len).max().unwrap();
    println!("  largest job message: {largest} bytes of JSON");
    assert!(largest < recording_archiver::queue::MAX_MESSAGE_BYTES * 3 / 4);
}

#[tokio::test]
async fn an_event_over_the_chunk_cap_is_rejected_in_bounded_memory() {
    // As many real-sized chunks as fit: about 5,000.
    let host = "us-storage.asm.skype.com";
    let per_chunk = chunk(99_999, host).to_string().len() + 1;
    let n = (DEFAULT_MAX_BODY_BYTES - 1024) / per_chunk;
    let body = format!("[{}]", event_of(n, host));
    let size = body.len();
    let (status, answer, peak, _) = deliver(body).await;
    assert_eq!(status, 400, "nothing else in the delivery: {answer}");
    assert!(
        answer["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("more than 1000 chunks"),
        "{answer}"
    );
    report(&format!("1 event of {n} chunks"), size, peak);
}

#[tokio::test]
async fn events_of_refused_chunks_are_counted_in_bounded_memory() {
    // Events of 1,000 chunks that each lack their documentId: about 170,000 refusals.
    let bad: Vec<Value> = (0..MAX_CHUNKS_PER_EVENT)
        .map(|i| json!({"index": i}))
        .collect();
    let event = recording_event("evt-bad", "/recording/call/c-bad", bad).to_string();
    let body = fill(DEFAULT_MAX_BODY_BYTES, usize::MAX, |_| event.clone());
    let size = body.len();
    let events = size / event.len();
    let (status, answer, peak, _) = deliver(body).await;
    assert_eq!(status, 400, "{}", &answer.to_string()[..500]);
    let listed = answer["rejected"].as_array().unwrap().len();
    assert_eq!(listed, recording_archiver::app::MAX_LISTED);
    assert_eq!(
        answer["rejectedNotListed"].as_u64().unwrap() as usize + listed,
        events * MAX_CHUNKS_PER_EVENT
    );
    report(
        &format!("{events} events of 1000 refused chunks"),
        size,
        peak,
    );
}

#[tokio::test]
async fn tiny_values_cost_no_more_than_their_text() {
    // One event whose data is 2 MiB of one-field objects: a JSON tree of it took ~170 MB.
    let tiny = fill(DEFAULT_MAX_BODY_BYTES - 200, usize::MAX, |_| {
        r#"{"a":1}"#.to_string()
    });
    let body = format!(r#"[{{"id":"evt-tiny","eventType":"Contoso.Other","data":{tiny}}}]"#);
    let size = body.len();
    let (status, answer, peak, _) = deliver(body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"], 1);
    report("1 event of 2 MiB of tiny objects", size, peak);

    // And 2 MiB of one-digit items, far more than Event Grid's 5,000 events.
    let body = fill(DEFAULT_MAX_BODY_BYTES, usize::MAX, |_| "1".to_string());
    let size = body.len();
    let (status, answer, peak, _) = deliver(body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("more than 5000"),
        "{answer}"
    );
    report("1 million array items", size, peak);
}

#[tokio::test]
async fn five_thousand_events_and_long_strings_are_answered_in_bounded_memory() {
    let pad = "x".repeat(DEFAULT_MAX_BODY_BYTES / 5000 - 100);
    let body = fill(DEFAULT_MAX_BODY_BYTES, 5000, |i| {
        json!({"id": format!("e{i}"), "eventType": "Contoso.Other", "subject": pad, "data": {}})
            .to_string()
    });
    let size = body.len();
    let (status, answer, peak, _) = deliver(body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["events"].as_u64().unwrap() > 4900, "{answer}");
    report(&format!("{} events", answer["events"]), size, peak);

    // A subject of half a million parts and a contentLocation of almost 1 MB.
    let long = "a".repeat(DEFAULT_MAX_BODY_BYTES / 2 - 4096);
    let subject = format!("/recording/call/{}", "a/".repeat(long.len() / 2));
    let mut located = chunk(1, "us-storage.asm.skype.com");
    located["contentLocation"] = json!(format!("https://us-storage.asm.skype.com/{long}"));
    let body = json!([
        recording_event(
            "evt-subject",
            &subject,
            vec![chunk(0, "us-storage.asm.skype.com")]
        ),
        recording_event("evt-url", "/recording/call/c-url", vec![located]),
    ])
    .to_string();
    let size = body.len();
    let (status, answer, peak, _) = deliver(body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["chunks"]["enqueued"], 1, "{answer}");
    let reason = answer["rejected"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("contentLocation: is") && reason.contains("bytes long"),
        "{answer}"
    );
    report("2 events with 1 MB strings", size, peak);
}

/// `archiver replay` of a dead-letter file of four times the webhook's limit: events of 1,000
/// real-sized chunks, and one over the cap (the old replay of 3,000 chunks in 367 KB peaked
/// at 1.36 GB). The file is read event by event, so its size does not matter. The chunks name a host outside the allowlist, so each
/// is refused before any request is sent. The peak is read while the archiver waits on a
/// second file, a FIFO: after the whole dead-letter file, and before it exits (a child's
/// `ru_maxrss` would include the test process's own, inherited at exec).
#[test]
fn replay_streams_a_dead_letter_file_in_bounded_memory() {
    use std::io::{BufRead, BufReader, Read, Write};
    let host = "recordings.example.org";
    let full = event_of(MAX_CHUNKS_PER_EVENT, host);
    let over = event_of(3000, host);
    let body = fill(4 * DEFAULT_MAX_BODY_BYTES, usize::MAX, |i| {
        if i == 0 {
            over.clone()
        } else {
            full.clone()
        }
    });
    let events = (body.len() - over.len()) / full.len();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dead-letter.json");
    std::fs::write(&file, &body).unwrap();
    let fifo = dir.path().join("last.json");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut cmd = std::process::Command::new(ARCHIVER);
    cmd.arg("replay")
        .arg(&file)
        .arg(&fifo)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (k, v) in handler_env(None) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let summary = format!("{}: ", file.display());
    let mut shown = String::new();
    loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "{shown}");
        shown.push_str(&line);
        if line.starts_with(&summary) && line.contains(" archived, ") {
            break;
        }
    }
    let peak = procstat::peak_rss(child.id()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"[]")
        .unwrap();
    stdout.read_to_string(&mut shown).unwrap();
    let status = child.wait().unwrap();
    let chunks = events * MAX_CHUNKS_PER_EVENT;
    assert!(!status.success(), "{shown}");
    assert!(
        shown.contains("item 0 cannot be archived") && shown.contains("more than 1000 chunks"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("0 archived, 0 already archived, {chunks} failed")),
        "{}",
        &shown[shown.len().saturating_sub(2000)..]
    );
    println!(
        "replay of {} events ({chunks} chunks, and 3000 over the cap): file {:.2} MiB, archiver peak RSS {:.1} MiB",
        events + 1,
        body.len() as f64 / MIB,
        peak as f64 / MIB
    );
    assert!(peak < LIMIT, "replay peak RSS {:.1} MiB", peak as f64 / MIB);
}

/// A 300 MiB chunk whose download is cut three times and refused once with a 503 and
/// `Retry-After` is archived whole, each resume from the next byte, by a handler whose peak
/// stays under [`LIMIT`]: it streams in 1 MiB blocks, two in flight, and a buffered chunk
/// would add 300 MiB. One range (`TRANSFER_PARALLEL_RANGES=1`): one stream, so each cut
/// lands at a known byte. The blocks go to the discarding sink, so no Blob service holds them
/// (`tests/acs_download.rs` checks the same download byte for byte).
#[tokio::test]
async fn a_300_mib_chunk_cut_three_times_is_archived_in_bounded_memory() {
    const CHUNK: u64 = 300 * 1024 * 1024;
    const ONE_MIB: u64 = 1024 * 1024;
    let emu = AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap();
    let doc = "0-wus-d11-big";
    emu.add_recording(doc, CHUNK, 17, RecordingFormat::Mp4);
    let (cut1, cut2, cut3) = (3 * ONE_MIB, 2 * ONE_MIB + 7, ONE_MIB + 13);
    emu.push_media_faults(
        doc,
        vec![
            Fault::CutAfter(cut1),
            Fault::unavailable(1),
            Fault::CutAfter(cut2),
            Fault::CutAfter(cut3),
        ],
    );
    let sink = DiscardSink::start().await.unwrap();
    let mut env = handler_env(Some(&emu));
    // RecordingTransfer never touches the Queue service.
    let storage = storage_at(&sink.endpoint(), &sink.endpoint());
    set(&mut env, "RECORDINGS_STORAGE", &storage);
    set(&mut env, "TRANSFER_BLOCK_BYTES", "1048576");
    set(&mut env, "TRANSFER_PARALLEL_BLOCKS", "2");
    set(&mut env, "TRANSFER_PARALLEL_RANGES", "1");
    let h = start_handler(&env).await;
    let message = ga_event(&emu, "evt-big", "call-big", &[doc], "Mp4").to_string();
    let envelope = json!({"Data": {"job": serde_json::to_string(&message).unwrap()}, "Metadata": {"DequeueCount": 1, "Id": "m-big"}});
    let answer = h
        .client()
        .post(h.url("/RecordingTransfer"))
        .json(&envelope)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let body = answer.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let peak = procstat::peak_rss(h.pid()).unwrap();

    let media: Vec<(u16, Option<String>)> = emu
        .requests()
        .iter()
        .filter(|r| r.target.contains("/content/video"))
        .map(|r| (r.status, r.range().map(str::to_string)))
        .collect();
    // One range reads the chunk as one stream: each cut resumes it from the next byte, the
    // 503 is retried after its Retry-After.
    let from = |a: u64| Some(format!("bytes={a}-"));
    assert_eq!(
        media,
        [
            (200, None),
            (503, from(cut1)),
            (206, from(cut1)),
            (206, from(cut1 + cut2)),
            (206, from(cut1 + cut2 + cut3)),
        ],
        "{media:?}"
    );
    let blob = format!(
        "/{ACCOUNT}/{}/2026/11/24/call-big/000-{doc}.mp4",
        setting(&env, "RECORDINGS_CONTAINER")
    );
    assert_eq!(sink.committed_length(&blob), Some(CHUNK), "{blob}");
    report("1 chunk of 300 MiB, cut three times", CHUNK as usize, peak);
}
