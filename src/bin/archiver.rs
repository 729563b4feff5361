//! `archiver`: the operator's tool, over the same core as the `handler`.
//!
//! * `archiver check`: loads the settings, shows them with secrets hidden, checks that the
//!   Functions host can bind the queue trigger to them, and that the recordings container, the
//!   transfer queue and its poison queue exist or can be created (naming the role or setting to
//!   fix when not).
//! * `archiver replay FILE...`: archives the recordings named in event or job files now:
//!   dead-lettered Event Grid deliveries, poison-queue messages (JSON or base64), queue jobs.
//!
//! Settings come from the environment, or from a `local.settings.json` with `--settings`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use recording_archiver::app::{parse_transfer_item, parse_transfer_message, App, Submitted};
use recording_archiver::config::{env_lookup, Settings};
use recording_archiver::queue::MAX_MESSAGE_BYTES;
use recording_archiver::wiring;
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Operator tool for recording-archiver.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Read settings from this local.settings.json ("Values") instead of the environment.
    #[arg(long, global = true)]
    settings: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the settings (secrets hidden) and check that storage answers.
    Check,
    /// Archive the recordings in event or job files now ('-' reads standard input).
    Replay {
        /// Files holding an event, an array of events (a dead-letter blob), or a queue message.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let values = match &cli.settings {
        Some(path) => match local_settings(path) {
            Ok(v) => v,
            Err(e) => return fail(&e),
        },
        None => HashMap::new(),
    };
    let lookup = move |name: &str| values.get(name).cloned().or_else(|| env_lookup(name));
    let settings = match Settings::load(&lookup) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    runtime.block_on(async {
        match cli.command {
            Command::Check => check(&settings, &lookup).await,
            Command::Replay { files } => replay(&settings, &lookup, &files).await,
        }
    })
}

async fn check(settings: &Settings, lookup: &impl recording_archiver::config::Lookup) -> ExitCode {
    let clients = match wiring::build_clients(settings, lookup) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    println!("archive mode      {:?}", settings.archive_mode);
    println!("ACS endpoint      {}", clients.acs.endpoint());
    println!("container         {}", settings.container);
    println!("transfer queue    {}", settings.transfer_queue);
    println!("blob names        {:?}", settings.blob_name_template);
    println!("transfer          {:?}", settings.transfer);
    let mut ok = true;
    // The Functions host binds RecordingTransfer's trigger to the same connection.
    match wiring::check_functions_host(settings) {
        Ok(()) => println!("queue trigger     can bind to these storage settings"),
        Err(e) => {
            ok = false;
            println!("queue trigger     FAILED: {e}");
        }
    }
    if let Some(probe) = wiring::probe(settings, &clients) {
        for finding in probe.run().await {
            ok &= finding.is_ready();
            println!("storage           {finding}");
        }
    }
    // ACS has no harmless request to test a key with; the first download shows it.
    println!("ACS check         not probed (no read-only call exists); downloads will show it");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn replay(
    settings: &Settings,
    lookup: &impl recording_archiver::config::Lookup,
    files: &[PathBuf],
) -> ExitCode {
    let app = match wiring::build_app(settings, lookup) {
        Ok(app) => app,
        Err(e) => return fail(&e),
    };
    let mut failed = 0;
    for file in files {
        failed += replay_file(&app, file).await;
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
async fn replay_file(app: &App, file: &Path) -> usize {
    let input: Box<dyn Read + Send> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        match std::fs::File::open(file) {
            Ok(f) => Box::new(f),
            Err(e) => {
                println!("{}: cannot read: {e}", file.display());
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
                let done = app.archive_jobs(jobs).await;
                total.archived += done.archived;
                total.already_archived += done.already_archived;
                total.retry += done.retry;
                total.dropped += done.dropped;
                for f in done.failures {
                    println!(
                        "  chunk {} ({}): {} [{}]",
                        f.index, f.document_id, f.error.message, f.error.disposition
                    );
                }
            }
            Err(reason) => {
                failed += 1;
                println!(
                    "{}: item {position} cannot be archived: {reason}",
                    file.display()
                );
            }
        }
        position += 1;
    }
    if let Ok(Err(e)) = reader.join() {
        failed += 1;
        println!("{}: cannot be read: {e}", file.display());
    }
    println!(
        "{}: {} archived, {} already archived, {} failed",
        file.display(),
        total.archived,
        total.already_archived,
        total.retry + total.dropped
    );
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

/// The "Values" of a local.settings.json.
fn local_settings(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let values = json
        .get("Values")
        .and_then(|v| v.as_object())
        .ok_or_else(|| format!("{}: no \"Values\" object", path.display()))?;
    Ok(values
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect())
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("archiver: {e}");
    ExitCode::from(2)
}
