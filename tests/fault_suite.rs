//! The randomized fault suite: dozens of recordings archived in queue mode by two handler
//! instances (two emulated Functions hosts, one queue), with `DELETE_AFTER_ARCHIVE` on, while
//! Event Grid delivers every event up to three times and concurrently, ACS answers 503/429 with
//! `Retry-After`, cuts bodies and sends empty ones, Blob Storage answers 5xx (and loses the
//! answer to writes it made), and one handler is killed with SIGKILL in mid-transfer. A few
//! jobs get faults that can never pass: an object ACS does not have (404), one it refuses
//! (401), and a URL the handler must refuse.
//!
//! Whatever the interleaving, it must end with every other chunk committed exactly once and
//! byte-exact, a recording deleted from ACS only after all its chunks were committed and their
//! records (with the ACS metadata) written, and nothing in the poison queue but the permanent
//! jobs, each with its reason.
//!
//! Faults are drawn from `FAULT_SUITE_SEED` (printed first; a fixed default otherwise), so
//! `FAULT_SUITE_SEED=<n> cargo test --test fault_suite -- --nocapture` injects the same faults
//! again. Which instance takes which message is up to the scheduler, as in production.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use archiver_testkit::acs::{self, AcsEmulator, AcsEmulatorConfig, LoggedRequest, RecordingFormat};
use archiver_testkit::host::{FunctionsHost, HostOptions, InvocationRecord};
use archiver_testkit::proxy::{self, FaultProxy, ProxiedRequest, RequestKind};
use archiver_testkit::queue::{MessageEncoding, QueueClient};
use serde_json::{json, Value};
use support::*;

const SEED_VARIABLE: &str = "FAULT_SUITE_SEED";
const DEFAULT_SEED: u64 = 20_261_129;
/// Recordings with only transient faults (besides the slow one and the permanent ones).
const GOOD_RECORDINGS: usize = 24;
const BLOCK: u64 = 64 * 1024;
/// Every wait ends within this, so a hang fails with the hosts' logs instead of stalling CI.
const BUDGET: Duration = Duration::from_secs(150);
/// A host that may not be reached: link-local, the cloud metadata address.
const REFUSED_HOST: &str = "169.254.169.254";

/// A fault that no retry can get past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Permanent {
    /// ACS does not have the object (deleted elsewhere, or past its 24 h retention).
    NotFound,
    /// ACS refuses every request for the object.
    Unauthorized,
    /// The event's URLs name a host the handler must never contact.
    Refused,
}

impl Permanent {
    /// Text the poison reason (or the handler's error log) must contain.
    fn marker(self) -> &'static str {
        match self {
            Permanent::NotFound => "404",
            Permanent::Unauthorized => "401",
            Permanent::Refused => "refused",
        }
    }
}

#[derive(Debug)]
struct Chunk {
    doc: String,
    size: u64,
    permanent: Option<Permanent>,
}

#[derive(Debug)]
struct Recording {
    call: String,
    chunks: Vec<Chunk>,
    /// How many times Event Grid delivers its event (the refused one is written to the queue).
    deliveries: usize,
}

impl Recording {
    fn docs(&self) -> Vec<&str> {
        self.chunks.iter().map(|c| c.doc.as_str()).collect()
    }

    fn event(&self, emu: &AcsEmulator) -> Value {
        let mut event = ga_event(
            emu,
            &format!("evt-{}", self.call),
            &self.call,
            &self.docs(),
            "Mp4",
        );
        if self.refused() {
            let chunks = event["data"]["recordingStorageInfo"]["recordingChunks"]
                .as_array_mut()
                .unwrap();
            for chunk in chunks {
                for key in ["contentLocation", "metadataLocation", "deleteLocation"] {
                    let url = chunk[key].as_str().unwrap();
                    let path = &url[url.find("/v1/").unwrap()..];
                    chunk[key] = json!(format!("http://{REFUSED_HOST}{path}"));
                }
            }
        }
        event
    }

    /// Its event names URLs the handler must refuse: it can only reach the queue directly.
    fn refused(&self) -> bool {
        self.chunks
            .iter()
            .any(|c| c.permanent == Some(Permanent::Refused))
    }

    fn permanent(&self) -> bool {
        self.chunks.iter().any(|c| c.permanent.is_some())
    }

    fn media_blob(&self, index: usize) -> String {
        format!(
            "2026/11/24/{}/{index:03}-{}.mp4",
            self.call, self.chunks[index].doc
        )
    }
}

/// Everything the seed decides.
struct Plan {
    recordings: Vec<Recording>,
    /// The chunk whose download trickles, so the kill lands in mid-transfer.
    slow_doc: String,
    /// Per chunk: faults any request may use up, and faults only media downloads use up.
    acs_faults: Vec<(String, Vec<acs::Fault>, Vec<acs::Fault>)>,
    /// Per handler instance: faults its Blob proxy injects.
    blob_faults: [Vec<proxy::Fault>; 2],
}

impl Plan {
    /// The chunks given permanent faults, and which.
    fn permanent(&self) -> BTreeMap<&str, Permanent> {
        self.recordings
            .iter()
            .flat_map(|r| &r.chunks)
            .filter_map(|c| c.permanent.map(|p| (c.doc.as_str(), p)))
            .collect()
    }

    fn media_blob_of(&self, doc: &str) -> String {
        self.recordings
            .iter()
            .find_map(|r| {
                let i = r.chunks.iter().position(|c| c.doc == doc)?;
                Some(r.media_blob(i))
            })
            .unwrap()
    }
}

fn chunk_size(rng: &mut fastrand::Rng) -> u64 {
    match rng.u8(0..4) {
        0 => rng.u64(1..200),
        1 => BLOCK * rng.u64(1..4),
        2 => rng.u64(BLOCK..5 * BLOCK),
        _ => rng.u64(200..BLOCK),
    }
}

fn transient_acs_faults(rng: &mut fastrand::Rng, size: u64) -> (Vec<acs::Fault>, Vec<acs::Fault>) {
    // At most three in a row for one call: the clients make six attempts.
    let any = (0..rng.usize(0..3))
        .map(|_| match rng.bool() {
            true => acs::Fault::unavailable(1),
            false => acs::Fault::throttled(1),
        })
        .collect();
    // Cuts and empty bodies only on media: an empty 200 to a DELETE would read as deleted.
    let media = (0..rng.usize(0..2))
        .map(|_| match rng.bool() {
            true => acs::Fault::CutAfter(rng.u64(0..size)),
            false => acs::Fault::EmptyOk,
        })
        .collect();
    (any, media)
}

fn blob_faults(rng: &mut fastrand::Rng) -> Vec<proxy::Fault> {
    let mut faults = Vec::new();
    for (kind, count) in [
        (RequestKind::PutBlock, 4),
        (RequestKind::PutBlockList, 2),
        (RequestKind::GetProperties, 2),
        (RequestKind::GetBlockList, 1),
        (RequestKind::PutBlob, 1),
    ] {
        for _ in 0..count {
            let status = [500, 503][rng.usize(0..2)];
            let mut fault = proxy::Fault::status(kind, 1, status).after(rng.usize(0..12));
            if status == 503 && rng.bool() {
                fault = fault.with_retry_after(1);
            }
            // A write that happened but whose answer was lost: the retry finds it done.
            if matches!(kind, RequestKind::PutBlockList | RequestKind::PutBlob) && rng.bool() {
                fault = fault.after_forwarding();
            }
            faults.push(fault);
        }
    }
    faults
}

fn plan(seed: u64) -> Plan {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut recordings = Vec::new();
    let mut acs_faults = Vec::new();
    let doc = |r: usize, c: usize| format!("0-fs-r{r:02}c{c}");
    for r in 0..GOOD_RECORDINGS {
        let chunks: Vec<Chunk> = (0..rng.usize(1..4))
            .map(|c| Chunk {
                doc: doc(r, c),
                size: chunk_size(&mut rng),
                permanent: None,
            })
            .collect();
        for c in &chunks {
            let (any, media) = transient_acs_faults(&mut rng, c.size);
            acs_faults.push((c.doc.clone(), any, media));
        }
        recordings.push(Recording {
            call: format!("call-fs{r:02}"),
            chunks,
            deliveries: rng.usize(1..4),
        });
    }
    // The slow one: 1 MiB trickled, delivered once, so its only transfer is the one killed.
    let slow = GOOD_RECORDINGS;
    let slow_doc = doc(slow, 0);
    acs_faults.push((
        slow_doc.clone(),
        Vec::new(),
        // Three, so a retry after another fault is slow too.
        vec![
            acs::Fault::Trickle {
                chunk: 32 * 1024,
                interval: Duration::from_millis(30),
            };
            3
        ],
    ));
    recordings.push(Recording {
        call: format!("call-fs{slow:02}"),
        chunks: vec![Chunk {
            doc: slow_doc.clone(),
            size: 16 * BLOCK,
            permanent: None,
        }],
        deliveries: 1,
    });
    // The permanent ones, each beside good chunks of the same recording.
    for (i, permanent) in [
        Permanent::NotFound,
        Permanent::Unauthorized,
        Permanent::Refused,
    ]
    .into_iter()
    .enumerate()
    {
        let r = slow + 1 + i;
        let count = if permanent == Permanent::Refused {
            1
        } else {
            rng.usize(2..4)
        };
        let bad = rng.usize(0..count);
        let chunks: Vec<Chunk> = (0..count)
            .map(|c| Chunk {
                doc: doc(r, c),
                size: chunk_size(&mut rng),
                permanent: (c == bad).then_some(permanent),
            })
            .collect();
        if permanent == Permanent::Unauthorized {
            // More refusals than any number of tries could use up.
            acs_faults.push((
                chunks[bad].doc.clone(),
                vec![acs::Fault::status(401); 50],
                Vec::new(),
            ));
        }
        recordings.push(Recording {
            call: format!("call-fs{r:02}"),
            chunks,
            deliveries: rng.usize(1..3),
        });
    }
    Plan {
        recordings,
        slow_doc,
        acs_faults,
        blob_faults: [blob_faults(&mut rng), blob_faults(&mut rng)],
    }
}

/// One emulated Functions host (one handler instance) of the app in this repository.
async fn start_host(settings: Vec<(String, String)>) -> FunctionsHost {
    let mut app_settings = settings;
    app_settings.push(("FUNCTIONS_WORKER_RUNTIME".into(), "Custom".into()));
    app_settings.push(("AzureWebJobsStorage".into(), azurite().connection_string()));
    let options = HostOptions {
        handler: Some(HANDLER.into()),
        app_settings,
        max_polling_interval: Some(Duration::from_millis(200)),
        visibility_timeout: Some(Duration::from_millis(500)),
        ..HostOptions::default()
    };
    FunctionsHost::start_with(Path::new(env!("CARGO_MANIFEST_DIR")), options)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Delivers `events` as Event Grid does: again after a 5xx, until it is accepted. Returns how
/// many chunks the webhook enqueued.
async fn deliver_until_accepted(host: &FunctionsHost, events: Value) -> u64 {
    for _ in 0..20 {
        match deliver(host, events.clone()).await {
            (200, body) => return body["chunks"]["enqueued"].as_u64().unwrap(),
            (500..=599, _) => tokio::time::sleep(Duration::from_millis(200)).await,
            (status, body) => panic!("delivery answered {status}: {body}"),
        }
    }
    panic!("the webhook kept answering 5xx")
}

/// Sends every delivery of the plan at once (each after a short seeded delay, so copies of one
/// event overlap), batches of one to three events, each batch to either instance. Returns the
/// number of job messages enqueued.
async fn deliver_all(plan: &Plan, emu: &AcsEmulator, hosts: &[FunctionsHost], seed: u64) -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xde11_7e55);
    let mut copies: Vec<Value> = plan
        .recordings
        .iter()
        .filter(|r| !r.refused())
        .flat_map(|r| std::iter::repeat_n(r.event(emu), r.deliveries))
        .collect();
    rng.shuffle(&mut copies);
    let mut sends = Vec::new();
    while !copies.is_empty() {
        let n = rng.usize(1..4).min(copies.len());
        let batch: Vec<Value> = copies.drain(..n).collect();
        let host = &hosts[rng.usize(0..hosts.len())];
        let delay = Duration::from_millis(rng.u64(0..600));
        sends.push(async move {
            tokio::time::sleep(delay).await;
            deliver_until_accepted(host, Value::Array(batch)).await
        });
    }
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .sum()
}

/// What the kill hit.
struct Kill {
    host: usize,
    blocks_staged: usize,
    committed_before: bool,
}

/// Waits until one instance has staged blocks of `doc` and SIGKILLs its handler.
async fn kill_mid_transfer(hosts: &[FunctionsHost], proxies: &[FaultProxy], doc: &str) -> Kill {
    let staged = |p: &FaultProxy| {
        p.requests()
            .iter()
            .filter(|r| r.kind == RequestKind::PutBlock && r.target_status == Some(201))
            .filter(|r| r.path.contains(doc))
            .count()
    };
    let mut target = None;
    wait_until(BUDGET, "blocks of the slow chunk to be staged", || {
        target = proxies.iter().position(|p| staged(p) >= 3);
        target.is_some()
    })
    .await;
    let host = target.unwrap();
    let committed_before = proxies
        .iter()
        .flat_map(|p| p.requests())
        .any(|r| is_commit(&r) && r.path.contains(doc));
    hosts[host].kill_handler().expect("the worker was running");
    Kill {
        host,
        blocks_staged: staged(&proxies[host]),
        committed_before,
    }
}

/// A Put Block List that reached Azurite and created the blob.
fn is_commit(r: &ProxiedRequest) -> bool {
    r.kind == RequestKind::PutBlockList && r.target_status == Some(201)
}

/// The queue message's chunk: a job's `documentId`, or the chunks of a raw event.
fn message_docs(text: &str) -> Vec<String> {
    let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    if let Some(doc) = value["documentId"].as_str() {
        return vec![doc.to_string()];
    }
    value["data"]["recordingStorageInfo"]["recordingChunks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["documentId"].as_str().map(str::to_string))
        .collect()
}

/// The first `max` bytes of `text` (on a character boundary).
fn excerpt(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Takes every message out of `queue` (they stay invisible for the rest of the test).
async fn drain(client: &QueueClient, queue: &str) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        let batch = client
            .get_messages(queue, 32, Duration::from_secs(600))
            .await
            .unwrap();
        if batch.is_empty() {
            return texts;
        }
        texts.extend(
            batch
                .into_iter()
                .map(|m| MessageEncoding::Base64.decode(&m.text).unwrap()),
        );
    }
}

/// Everything the run left behind, read once after the queues drained.
struct Observed {
    acs_log: Vec<LoggedRequest>,
    blob_log: Vec<ProxiedRequest>,
    invocations: Vec<InvocationRecord>,
    worker_output: String,
    /// Reasons given anywhere: the host's poison moves (after its retries), the answers' logs
    /// (a handler that moved the message itself), the handler's error log.
    reasons: Vec<String>,
    /// Committed blobs by name.
    blobs: HashMap<String, u64>,
    /// Archive records by media blob name.
    records: HashMap<String, Value>,
    /// The poison queue's messages, decoded.
    poisoned: Vec<String>,
    /// Job messages put on the queue (by the webhook, and directly).
    messages: u64,
}

impl Observed {
    async fn collect(
        emu: &AcsEmulator,
        proxies: &[FaultProxy],
        hosts: &[FunctionsHost],
        container: &str,
        messages: u64,
    ) -> Observed {
        let invocations: Vec<InvocationRecord> = hosts
            .iter()
            .flat_map(|h| h.invocations())
            .filter(|i| i.function == "RecordingTransfer")
            .collect();
        let worker_output: String = hosts.iter().map(|h| h.worker_output()).collect();
        let reasons = hosts
            .iter()
            .flat_map(|h| h.poison_moves())
            .map(|m| m.reason)
            .chain(invocations.iter().flat_map(|i| i.logs.clone()))
            .chain(
                worker_output
                    .lines()
                    .filter(|l| l.contains("ERROR"))
                    .map(str::to_string),
            )
            .collect();
        let blobs: HashMap<String, u64> = list_blobs(container)
            .await
            .into_iter()
            .map(|b| (b.name, b.size))
            .collect();
        let mut records = HashMap::new();
        for name in blobs.keys() {
            if let Some(media) = name.strip_suffix(".json") {
                let record = serde_json::from_slice(&read_blob(container, name).await).unwrap();
                records.insert(media.to_string(), record);
            }
        }
        let binding = hosts[0]
            .queues()
            .iter()
            .find(|q| q.function == "RecordingTransfer")
            .unwrap();
        Observed {
            acs_log: emu.requests(),
            blob_log: proxies.iter().flat_map(|p| p.requests()).collect(),
            invocations,
            worker_output,
            reasons,
            blobs,
            records,
            poisoned: drain(&binding.client, &binding.poison_queue).await,
            messages,
        }
    }

    /// When `blob` was first created at the target (commit or Put Blob answered 201).
    fn created(&self, kind: RequestKind, blob: &str) -> Option<Instant> {
        self.blob_log
            .iter()
            .find(|q| q.kind == kind && q.target_status == Some(201) && is_path_of(q, blob))
            .map(|q| q.at)
    }

    /// The Blob requests for `blob`, for failure messages.
    fn history(&self, blob: &str) -> Vec<String> {
        self.blob_log
            .iter()
            .filter(|q| is_path_of(q, blob))
            .map(|q| format!("{:?} {} (target {:?})", q.kind, q.status, q.target_status))
            .collect()
    }

    /// A reason naming `doc`, one that also says `why` if there is one.
    fn reason_for(&self, doc: &str, why: &str) -> Option<&str> {
        let naming = |r: &&String| r.contains(doc);
        self.reasons
            .iter()
            .filter(naming)
            .find(|r| r.contains(why))
            .or_else(|| self.reasons.iter().find(naming))
            .map(String::as_str)
    }
}

fn is_path_of(q: &ProxiedRequest, blob: &str) -> bool {
    q.path
        .strip_suffix(blob)
        .is_some_and(|container| container.ends_with('/'))
}

/// Every chunk without a permanent fault: its media blob committed exactly once, byte-exact,
/// with its record; no blob for the others, and no other blob at all. Returns when each chunk
/// was fully archived (media committed and record written).
async fn check_archive(
    plan: &Plan,
    seen: &Observed,
    emu: &AcsEmulator,
    container: &str,
) -> HashMap<String, Instant> {
    let mut expected = HashSet::new();
    let mut archived_at = HashMap::new();
    for r in &plan.recordings {
        for (i, c) in r.chunks.iter().enumerate() {
            let media = r.media_blob(i);
            let commits = seen
                .blob_log
                .iter()
                .filter(|q| is_commit(q) && is_path_of(q, &media))
                .count();
            if c.permanent.is_some() {
                assert!(
                    commits == 0 && !seen.blobs.contains_key(&media),
                    "{media} has a permanent fault but was committed"
                );
                continue;
            }
            assert_eq!(commits, 1, "{media} committed {commits} times");
            assert!(seen.blobs.contains_key(&media), "{media} lost");
            assert_eq!(
                sha256(&read_blob(container, &media).await),
                emu.expected_sha256(&c.doc).unwrap(),
                "{media} differs from the source"
            );
            let record = seen.records.get(&media).unwrap_or_else(|| {
                panic!(
                    "{media} has no record; the media's Blob requests: {:#?}\nthe record's: {:#?}",
                    seen.history(&media),
                    seen.history(&format!("{media}.json"))
                )
            });
            assert_eq!(record["archive"]["documentId"], c.doc, "{record}");
            assert_eq!(record["archive"]["sizeBytes"], c.size, "{record}");
            assert_eq!(
                record["acsMetadata"]["chunkDocumentId"], c.doc,
                "{media}.json: {record}"
            );
            let committed = seen.created(RequestKind::PutBlockList, &media).unwrap();
            let recorded = seen
                .created(RequestKind::PutBlob, &format!("{media}.json"))
                .unwrap_or_else(|| {
                    panic!(
                        "{media}.json was not written through a proxy: {:#?}",
                        seen.history(&format!("{media}.json"))
                    )
                });
            archived_at.insert(c.doc.clone(), committed.max(recorded));
            expected.insert(format!("{media}.json"));
            expected.insert(media);
        }
        // A recording archived whole gets one manifest beside its first chunk.
        if !r.permanent() {
            let first = r.media_blob(0);
            let folder = first.rsplit_once('/').map_or("", |(f, _)| f);
            let manifest = format!("{folder}/manifest-{}.json", r.chunks[0].doc);
            let writes = seen
                .blob_log
                .iter()
                .filter(|q| {
                    q.kind == RequestKind::PutBlob
                        && q.target_status == Some(201)
                        && is_path_of(q, &manifest)
                })
                .count();
            assert_eq!(writes, 1, "{manifest} written {writes} times");
            expected.insert(manifest);
        }
    }
    let unexpected: Vec<_> = seen
        .blobs
        .keys()
        .filter(|n| !expected.contains(*n))
        .collect();
    assert!(
        unexpected.is_empty(),
        "blobs nobody asked for: {unexpected:#?}"
    );
    archived_at
}

/// A recording is deleted from ACS only after every chunk of it was committed and its record
/// (with the ACS metadata, which cannot be fetched after the delete) written; every recording
/// whose chunks all were is deleted; no other is.
fn check_deletes(
    plan: &Plan,
    seen: &Observed,
    archived_at: &HashMap<String, Instant>,
    emu: &AcsEmulator,
) {
    for r in &plan.recordings {
        for c in &r.chunks {
            let deletes: Vec<&LoggedRequest> = seen
                .acs_log
                .iter()
                .filter(|q| q.method == "DELETE" && q.status == 200 && q.fault.is_none())
                .filter(|q| q.document_id.as_deref() == Some(c.doc.as_str()))
                .collect();
            if r.permanent() {
                assert!(
                    deletes.is_empty(),
                    "{} deleted although {} is not archived",
                    c.doc,
                    r.call
                );
                continue;
            }
            assert!(
                emu.is_deleted(&c.doc),
                "{} was archived but never deleted from ACS",
                c.doc
            );
            for delete in deletes {
                for sibling in &r.chunks {
                    assert!(
                        archived_at[&sibling.doc] < delete.at,
                        "{} deleted before {} was archived (media committed, record written)",
                        c.doc,
                        sibling.doc
                    );
                }
            }
        }
    }
}

/// The poison queue holds the jobs given permanent faults, each with its reason, and nothing
/// else; no error is logged about a chunk that was archived.
fn check_poison(plan: &Plan, seen: &Observed) {
    let permanent = plan.permanent();
    let mut poisoned_docs = HashSet::new();
    let mut wrongly_poisoned = Vec::new();
    for text in &seen.poisoned {
        let docs = message_docs(text);
        if docs.len() != 1 || !permanent.contains_key(docs[0].as_str()) {
            let reason = docs
                .iter()
                .find_map(|d| seen.reason_for(d, ""))
                .unwrap_or("(no reason found)");
            wrongly_poisoned.push(format!("{docs:?}: {}", excerpt(reason, 400)));
        }
        poisoned_docs.extend(docs);
    }
    assert!(
        wrongly_poisoned.is_empty(),
        "{} of {} poison messages are jobs that could succeed:\n{}",
        wrongly_poisoned.len(),
        seen.poisoned.len(),
        wrongly_poisoned[..wrongly_poisoned.len().min(8)].join("\n")
    );
    for (doc, why) in &permanent {
        assert!(
            poisoned_docs.contains(*doc),
            "{doc} ({why:?}) is not in the poison queue"
        );
        let reason = seen
            .reason_for(doc, why.marker())
            .unwrap_or_else(|| panic!("no reason given for {doc} ({why:?})"));
        assert!(
            reason.contains(why.marker()),
            "{doc} ({why:?}): the reason does not say why: {reason}"
        );
    }
    let good: Vec<&str> = plan
        .recordings
        .iter()
        .flat_map(|r| &r.chunks)
        .filter(|c| c.permanent.is_none())
        .map(|c| c.doc.as_str())
        .collect();
    let errors_about_good: Vec<&str> = seen
        .worker_output
        .lines()
        .filter(|l| l.contains("ERROR") && good.iter().any(|d| l.contains(d)))
        .collect();
    assert!(
        errors_about_good.is_empty(),
        "errors logged for chunks that were archived: {errors_about_good:#?}"
    );
}

#[derive(Default)]
struct Totals {
    faults: BTreeMap<String, usize>,
    queue_redeliveries: usize,
    in_process_retries: usize,
    resumed_from_staged: usize,
    resumed_mid_body: usize,
    duplicates_absorbed: u64,
    commits_found_done: usize,
    poison: usize,
}

impl Totals {
    fn of(plan: &Plan, seen: &Observed) -> Totals {
        let mut totals = Totals::default();
        let mut count = |kind: String| *totals.faults.entry(kind).or_default() += 1;
        let permanent = plan.permanent();
        let mut in_process_retries = 0;
        for q in &seen.acs_log {
            if let Some(fault) = &q.fault {
                count(acs_fault_name(fault));
                let doc = q.document_id.as_deref().unwrap_or_default();
                if !matches!(fault, acs::Fault::Trickle { .. }) && !permanent.contains_key(doc) {
                    in_process_retries += 1;
                }
            }
        }
        for q in seen.blob_log.iter().filter(|q| q.injected) {
            let lost = match q.target_status {
                Some(_) => " after the write",
                None => "",
            };
            count(format!("Blob {} {:?}{lost}", q.status, q.kind));
            in_process_retries += 1;
        }
        count("handler SIGKILL in mid-transfer".into());
        for why in permanent.values() {
            count(format!("permanent {why:?}"));
        }
        let archived = plan
            .recordings
            .iter()
            .flat_map(|r| &r.chunks)
            .filter(|c| c.permanent.is_none())
            .count() as u64;
        Totals {
            in_process_retries,
            queue_redeliveries: seen
                .invocations
                .iter()
                .filter(|i| i.dequeue_count > Some(1))
                .count(),
            resumed_from_staged: seen
                .records
                .values()
                .filter(|r| r["archive"]["reusedStagedBytes"].as_u64() > Some(0))
                .count(),
            resumed_mid_body: seen
                .acs_log
                .iter()
                .filter(|q| q.method == "GET")
                .filter(|q| q.range().is_some_and(|r| !r.starts_with("bytes=0-")))
                .count(),
            duplicates_absorbed: seen
                .messages
                .saturating_sub(seen.poisoned.len() as u64)
                .saturating_sub(archived),
            commits_found_done: seen
                .blob_log
                .iter()
                .filter(|q| q.kind == RequestKind::PutBlockList && q.target_status == Some(409))
                .count(),
            poison: seen.poisoned.len(),
            ..totals
        }
    }

    fn print(&self, seed: u64, elapsed: Duration) {
        println!(
            "fault suite totals (seed {seed}, queues drained after {:.1} s):",
            elapsed.as_secs_f64()
        );
        for (kind, n) in &self.faults {
            println!("  fault {kind:<40} {n}");
        }
        println!(
            "  retries: {} queue redeliveries, {} in-process (requests repeated after a transient answer)",
            self.queue_redeliveries, self.in_process_retries
        );
        println!(
            "  resumes: {} from staged blocks, {} mid-body (ranged re-reads)",
            self.resumed_from_staged, self.resumed_mid_body
        );
        println!(
            "  duplicates absorbed: {} job messages ({} commits found the blob already there)",
            self.duplicates_absorbed, self.commits_found_done
        );
        println!("  poison messages: {}", self.poison);
    }
}

fn acs_fault_name(fault: &acs::Fault) -> String {
    match fault {
        acs::Fault::Status {
            status, headers, ..
        } => {
            let retry_after = headers.iter().any(|(k, _)| k == "Retry-After");
            format!(
                "ACS {status}{}",
                if retry_after { " + Retry-After" } else { "" }
            )
        }
        acs::Fault::CutAfter(_) => "ACS body cut".into(),
        acs::Fault::EmptyOk => "ACS empty 200".into(),
        acs::Fault::Trickle { .. } => "ACS trickled body".into(),
        other => format!("ACS {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archives_every_chunk_exactly_once_through_random_faults() {
    let seed = std::env::var(SEED_VARIABLE)
        .ok()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("{SEED_VARIABLE}={s} is not a number"))
        })
        .unwrap_or(DEFAULT_SEED);
    println!("fault suite seed: {seed} (replay with {SEED_VARIABLE}={seed})");
    let started = Instant::now();
    let plan = plan(seed);

    let emu = AcsEmulator::start(AcsEmulatorConfig::default())
        .await
        .unwrap();
    let mut content_rng = fastrand::Rng::with_seed(seed ^ 0xc0_47e7);
    for r in &plan.recordings {
        for c in r
            .chunks
            .iter()
            .filter(|c| c.permanent != Some(Permanent::NotFound))
        {
            emu.add_recording(&c.doc, c.size, content_rng.u64(..), RecordingFormat::Mp4);
        }
    }
    for (doc, any, media) in &plan.acs_faults {
        emu.push_faults(doc, any.clone());
        emu.push_media_faults(doc, media.clone());
    }

    let mut settings = handler_env(Some(&emu));
    set(&mut settings, "DELETE_AFTER_ARCHIVE", "true");
    set(&mut settings, "TRANSFER_BLOCK_BYTES", &BLOCK.to_string());
    set(&mut settings, "TRANSFER_PARALLEL_BLOCKS", "2");
    let container = settings
        .iter()
        .find(|(k, _)| k == "RECORDINGS_CONTAINER")
        .unwrap()
        .1
        .clone();
    let queue = settings
        .iter()
        .find(|(k, _)| k == "TRANSFER_QUEUE")
        .unwrap()
        .1
        .clone();
    let mut proxies = Vec::new();
    let mut hosts = Vec::new();
    for faults in &plan.blob_faults {
        let proxy = FaultProxy::start(&azurite().blob_endpoint()).await.unwrap();
        for f in faults {
            proxy.inject(f.clone());
        }
        let mut instance = settings.clone();
        set(
            &mut instance,
            "RECORDINGS_STORAGE",
            &storage_at(&proxy.endpoint(), &azurite().queue_endpoint()),
        );
        hosts.push(start_host(instance).await);
        proxies.push(proxy);
    }

    // Event Grid, and a subscription that writes straight to the queue (the only way a refused
    // URL reaches the queue path once the webhook refuses it).
    let queues = QueueClient::from_connection_string(&azurite().connection_string()).unwrap();
    let mut direct = 0;
    for r in plan.recordings.iter().filter(|r| r.refused()) {
        for _ in 0..r.deliveries {
            let text = r.event(&emu).to_string();
            queues
                .put_message(&queue, &MessageEncoding::Base64.encode(&text))
                .await
                .unwrap();
            direct += 1;
        }
    }
    let (enqueued, kill) = tokio::join!(
        deliver_all(&plan, &emu, &hosts, seed),
        kill_mid_transfer(&hosts, &proxies, &plan.slow_doc),
    );
    assert!(
        !kill.committed_before,
        "the kill came after the slow chunk was committed: not in mid-transfer"
    );
    for host in &hosts {
        let left = BUDGET.saturating_sub(started.elapsed());
        if let Err(e) = host.wait_until_idle(left).await {
            // The queue is shared: what holds it up may be on the other instance, or a storage
            // request that gets no answer. The last lines are what a truncated CI log shows.
            let mut report = String::new();
            for (i, (host, proxy)) in hosts.iter().zip(&proxies).enumerate() {
                let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("fault-suite-{seed}-instance-{i}.log"));
                let saved = match std::fs::write(&log, host.log().join("\n")) {
                    Ok(()) => format!("whole host log in {}", log.display()),
                    Err(e) => format!("the host log could not be saved: {e}"),
                };
                report.push_str(&format!(
                    "=== instance {i} ({saved}): {}=== its Blob proxy's unanswered requests: {:?}\n",
                    host.running_report().await,
                    proxy.unanswered()
                ));
            }
            panic!("{e}\n{report}");
        }
    }
    let elapsed = started.elapsed();

    let seen = Observed::collect(&emu, &proxies, &hosts, &container, enqueued + direct).await;
    Totals::of(&plan, &seen).print(seed, elapsed);
    let slow = plan.media_blob_of(&plan.slow_doc);
    println!(
        "  (the kill hit instance {} after {} staged blocks of the slow chunk; its transfer resumed at byte {})",
        kill.host,
        kill.blocks_staged,
        seen.records.get(&slow).map_or(Value::Null, |r| r["archive"]["reusedStagedBytes"].clone()),
    );

    let archived_at = check_archive(&plan, &seen, &emu, &container).await;
    check_deletes(&plan, &seen, &archived_at, &emu);
    check_poison(&plan, &seen);
    assert!(
        hosts[kill.host]
            .handler()
            .is_some_and(|w| w.generation >= 2),
        "the host restarted the killed worker"
    );
    for host in hosts {
        host.stop().await;
    }
}
