//! Property tests of the parsers that read network input: Event Grid deliveries
//! (`eventgrid::parse_delivery` and the recording data in `recording.rs`) and transfer queue
//! messages (`app::parse_transfer_message`). Whatever they are given they never panic, and
//! the memory they hold at their peak stays within a fixed multiple of the input's size. The
//! peak is counted by this binary's allocator, per thread, around each call.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use base64::Engine as _;
use proptest::prelude::*;
use recording_archiver::app::parse_transfer_message;
use recording_archiver::eventgrid::{parse_delivery, EventKind};
use recording_archiver::recording::{parse_recording_data, EventContext};
use serde_json::{json, Map, Value};

/// Counts the bytes the current thread holds, and the most it held since the last reset.
struct Counting;

thread_local! {
    static HELD: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = HELD.try_with(|held| {
            let now = held.get() + layout.size();
            held.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = HELD.try_with(|held| held.set(held.get().saturating_sub(layout.size())));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most `f` held at once beyond what the thread held before it, in bytes.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = HELD.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let out = f();
    (out, PEAK.with(Cell::get) - before)
}

/// What reading `n` bytes of input may cost at most: a constant for the fixed structures,
/// plus a multiple of the size. A `serde_json::Value` tree of tiny objects costs ~80 times
/// its text; the parsers must stay well below that.
fn budget(n: usize) -> usize {
    64 * 1024 + 24 * n
}

/// Every delivery event read, classified, and its recording data turned into jobs, as the
/// webhook does.
fn read_delivery(body: &[u8]) -> usize {
    let Ok(delivery) = parse_delivery(body) else {
        return 0;
    };
    let mut jobs = 0;
    for event in delivery.events().flatten() {
        if event.kind() == EventKind::Recording {
            let ctx = EventContext {
                id: &event.id,
                subject: event.subject.as_deref(),
                time: event.time.as_deref(),
            };
            if let Ok(parsed) = parse_recording_data(ctx, event.data) {
                jobs += parsed.jobs.len();
            }
        }
    }
    jobs
}

const KEYS: &[&str] = &[
    "id",
    "eventType",
    "type",
    "specversion",
    "subject",
    "eventTime",
    "time",
    "data",
    "data_base64",
    "validationCode",
    "validationUrl",
    "recordingStorageInfo",
    "recordingChunks",
    "documentId",
    "index",
    "endReason",
    "contentLocation",
    "metadataLocation",
    "deleteLocation",
    "recordingStartTime",
    "source",
    "kind",
    "content",
    "siblings",
    "chunkCount",
    "eventId",
    "a",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u32..4).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z0-9./:_-]{0,12}".prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
        Just(json!(
            "https://us-storage.asm.skype.com/v1/objects/0-wus-d1-ab/content/video"
        )),
        Just(json!("Microsoft.Communication.RecordingFileStatusUpdated")),
        Just(json!("Microsoft.EventGrid.SubscriptionValidationEvent")),
        Just(json!("1.0")),
        Just(json!("2026-11-24T09:00:00Z")),
        Just(json!("preview")),
        Just(json!("located")),
    ]
}

/// JSON trees whose keys are mostly the ones the parsers look for.
fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// A recording event whose chunks are plausible or not, field by field.
fn recording_event() -> impl Strategy<Value = Value> {
    let chunk = (
        prop_oneof![
            "[a-z0-9-]{1,20}".prop_map(Value::from),
            Just(json!("")),
            Just(json!("doc\r\n")),
            leaf()
        ],
        prop_oneof![(0u32..50).prop_map(Value::from), leaf()],
        prop_oneof![
            "[a-z0-9]{1,8}".prop_map(|d| json!(format!(
                "https://us-storage.asm.skype.com/v1/objects/{d}/content/video"
            ))),
            leaf()
        ],
        prop::option::of(tree()),
    )
        .prop_map(|(doc, index, content, junk)| {
            let mut c = json!({"documentId": doc, "index": index, "contentLocation": content});
            if let Some(junk) = junk {
                c["junk"] = junk;
            }
            c
        });
    (
        prop::collection::vec(chunk, 0..40),
        prop::option::of(tree()),
    )
        .prop_map(|(chunks, extra)| {
            let mut event = json!({
                "id": "evt",
                "subject": "/recording/call/c-1/serverCallId/s-1",
                "eventType": "Microsoft.Communication.RecordingFileStatusUpdated",
                "eventTime": "2026-11-24T09:00:00Z",
                "data": {"recordingStorageInfo": {"recordingChunks": chunks}},
            });
            if let Some(extra) = extra {
                event["data"]["extra"] = extra;
            }
            event
        })
}

fn delivery() -> impl Strategy<Value = Value> {
    prop_oneof![
        tree(),
        prop::collection::vec(prop_oneof![recording_event(), tree()], 0..6).prop_map(Value::Array),
        recording_event(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn deliveries_never_panic_and_cost_a_bounded_multiple_of_their_size(value in delivery()) {
        let body = value.to_string();
        let (_, peak) = peak_of(|| read_delivery(body.as_bytes()));
        prop_assert!(peak <= budget(body.len()), "{peak} bytes held for {} bytes: {body}", body.len());
    }

    #[test]
    fn arbitrary_bytes_are_refused_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (_, peak) = peak_of(|| read_delivery(&bytes));
        prop_assert!(peak <= budget(bytes.len()));
        let text = String::from_utf8_lossy(&bytes);
        let (_, peak) = peak_of(|| parse_transfer_message(&text).map(|j| j.len()));
        prop_assert!(peak <= budget(text.len()));
    }

    #[test]
    fn transfer_messages_never_panic_and_cost_a_bounded_multiple_of_their_size(
        value in prop_oneof![delivery(), tree()],
        base64 in any::<bool>(),
    ) {
        let mut text = value.to_string();
        if base64 {
            text = base64::engine::general_purpose::STANDARD.encode(text);
        }
        let (_, peak) = peak_of(|| parse_transfer_message(&text).map(|j| j.len()));
        prop_assert!(peak <= budget(text.len()), "{peak} bytes held for {} bytes: {text}", text.len());
    }

    /// What the webhook accepts, the queue path accepts unchanged: a job's message reads back
    /// as the same job, and passes the same checks.
    #[test]
    fn every_accepted_job_reads_back_from_its_queue_message(event in recording_event()) {
        let Ok(jobs) = parse_transfer_message(&event.to_string()) else {
            return Ok(());
        };
        for job in jobs {
            prop_assert!(job.check().is_ok(), "{job:?}");
            let message = serde_json::to_string(&job).unwrap();
            prop_assert_eq!(parse_transfer_message(&message).unwrap(), vec![job]);
        }
    }

    /// A job message that was tampered with is refused whole, never half read.
    #[test]
    fn tampered_jobs_are_refused_or_read_intact(
        event in recording_event(),
        key in prop::sample::select(KEYS),
        value in tree(),
    ) {
        let Ok(jobs) = parse_transfer_message(&event.to_string()) else {
            return Ok(());
        };
        for job in jobs {
            let mut message = serde_json::to_value(&job).unwrap();
            message[key] = value.clone();
            if let Ok(read) = parse_transfer_message(&message.to_string()) {
                for job in read {
                    prop_assert!(job.check().is_ok(), "{job:?}");
                }
            }
        }
    }
}

#[test]
fn a_json_tree_would_break_the_budget_that_the_parsers_keep() {
    // The measure itself: reading tiny objects into a tree costs far over the budget, so the
    // properties above would catch a parser that built one.
    let body = format!("[{}{{}}]", r#"{"a":{"a":1}},"#.repeat(10_000));
    let (_, tree) = peak_of(|| serde_json::from_str::<Value>(&body).unwrap());
    assert!(tree > budget(body.len()), "{tree} for {}", body.len());
    let (_, parsed) = peak_of(|| read_delivery(body.as_bytes()));
    assert!(parsed <= budget(body.len()), "{parsed} for {}", body.len());
}
