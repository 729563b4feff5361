//! `archiver replay FILE...`: archives the recordings named in event or job files now:
//! dead-lettered Event Grid deliveries, poison-queue messages (JSON or base64), queue jobs.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::progress::Progress;
use super::term::RetryTally;
use crate::app::{parse_transfer_item, parse_transfer_message, App, Submitted};
use crate::config::{Lookup, Settings};
use crate::queue::MAX_MESSAGE_BYTES;
use crate::wiring;

/// Replays `files` in order: 0 when every item is archived (now or before), 1 when one is not,
/// 2 when the settings cannot be used.
pub(crate) async fn run(
    settings: &Settings,
    lookup: &impl Lookup,
    files: &[PathBuf],
    retries: &RetryTally,
) -> ExitCode {
    let app = match wiring::build_app(settings, lookup) {
        Ok(app) => app,
        Err(e) => return super::fail(&e),
    };
    let progress = Progress::count("chunks");
    let mut failed = 0;
    for file in files {
        failed += replay_file(&app, file, &progress).await;
    }
    progress.finish();
    if let Some(line) = retries.take() {
        println!("storage and ACS calls {line}");
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Archives what one file names, item by item as it is read: a dead-letter blob may hold
/// thousands of events, and only one of them (and its chunks in flight) is held at once.
/// Returns how many items or chunks failed.
async fn replay_file(app: &App, file: &Path, progress: &Progress) -> usize {
    let input: Box<dyn Read + Send> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        match std::fs::File::open(file) {
            Ok(f) => Box::new(f),
            Err(e) => {
                progress.line(&format!("{}: cannot read: {e}", file.display()));
                return 1;
            }
        }
    };
    let (items, mut received) = tokio::sync::mpsc::channel(1);
    let reader = std::thread::spawn(move || read_items(BufReader::new(input), &items));
    let mut total = Submitted::default();
    let mut failed = 0;
    let mut position = 0;
    while let Some(item) = received.recv().await {
        let jobs = match item {
            Item::Raw(raw) => parse_transfer_item(&raw),
            Item::Text(text) => parse_transfer_message(&text),
        };
        match jobs {
            Ok(jobs) => {
                let chunks = jobs.len() as u64;
                let done = app.archive_jobs(jobs).await;
                progress.advance(chunks);
                total.archived += done.archived;
                total.already_archived += done.already_archived;
                total.retry += done.retry;
                total.dropped += done.dropped;
                for f in done.failures {
                    progress.line(&format!(
                        "  chunk {} ({}): {} [{}]",
                        f.index,
                        f.document_id,
                        f.error,
                        f.error.disposition()
                    ));
                }
                progress.note(format!(
                    "{}: {} archived, {} already archived, {} failed",
                    file.display(),
                    total.archived,
                    total.already_archived,
                    total.retry + total.dropped
                ));
            }
            Err(reason) => {
                failed += 1;
                progress.line(&format!(
                    "{}: item {position} cannot be archived: {reason}",
                    file.display()
                ));
            }
        }
        position += 1;
    }
    if let Ok(Err(e)) = reader.join() {
        failed += 1;
        progress.line(&format!("{}: cannot be read: {e}", file.display()));
    }
    progress.line(&format!(
        "{}: {} archived, {} already archived, {} failed",
        file.display(),
        total.archived,
        total.already_archived,
        total.retry + total.dropped
    ));
    failed + total.retry + total.dropped
}

/// One item of a replayed file.
enum Item {
    /// An event or job (an element of the file's array, or its one object).
    Raw(Box<RawValue>),
    /// Anything else, read whole: a base64 poison-queue message (at most 64 KiB).
    Text(String),
}

/// Reads `input` (a JSON array, object, or base64 text) and sends its items one at a time.
fn read_items(
    mut input: impl BufRead,
    items: &tokio::sync::mpsc::Sender<Item>,
) -> Result<(), String> {
    let first = loop {
        let buf = input.fill_buf().map_err(|e| e.to_string())?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let first = buf[i];
                input.consume(i);
                break Some(first);
            }
            None if buf.is_empty() => break None,
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    };
    let json = |input| serde_json::Deserializer::from_reader(input);
    match first {
        None => Err("the file is empty".into()),
        Some(b'[') => json(input)
            .deserialize_seq(Forward(items))
            .map_err(|e| e.to_string()),
        Some(b'{') => {
            let mut de = json(input);
            let raw = Box::<RawValue>::deserialize(&mut de).map_err(|e| e.to_string())?;
            de.end().map_err(|e| e.to_string())?;
            let _ = items.blocking_send(Item::Raw(raw));
            Ok(())
        }
        Some(_) => {
            // Base64 text is a queue message, so at most 64 KiB: nothing longer is read.
            let limit = MAX_MESSAGE_BYTES as u64 + 2;
            let mut text = String::new();
            input
                .take(limit + 1)
                .read_to_string(&mut text)
                .map_err(|e| e.to_string())?;
            if text.len() as u64 > limit {
                return Err("neither JSON nor a queue message (over 64 KiB of text)".into());
            }
            let _ = items.blocking_send(Item::Text(text));
            Ok(())
        }
    }
}

/// Sends each element of a JSON array on as it is read.
struct Forward<'a>(&'a tokio::sync::mpsc::Sender<Item>);

impl<'de> Visitor<'de> for Forward<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of events or jobs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            if self.0.blocking_send(Item::Raw(raw)).is_err() {
                break;
            }
        }
        Ok(())
    }
}
