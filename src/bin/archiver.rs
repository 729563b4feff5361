//! `archiver`: the operator's tool, over the same core as the `handler`.
//!
//! * `archiver check`: loads the settings, shows them with secrets hidden, and checks that the
//!   recordings container and the transfer queue answer.
//! * `archiver replay FILE...`: archives the recordings named in event or job files now:
//!   dead-lettered Event Grid deliveries, poison-queue messages (JSON or base64), queue jobs.
//!
//! Settings come from the environment, or from a `local.settings.json` with `--settings`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use recording_archiver::app::ArchiveOutcome;
use recording_archiver::config::{env_lookup, Settings};
use recording_archiver::wiring;

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
    match clients.blob.create_container().await {
        Ok(outcome) => println!("container check   ok ({outcome:?})"),
        Err(e) => {
            ok = false;
            println!("container check   FAILED: {e}");
        }
    }
    match &clients.queue {
        Some(queue) => match queue.create_queue().await {
            Ok(()) => println!("queue check       ok"),
            Err(e) => {
                ok = false;
                println!("queue check       FAILED: {e}");
            }
        },
        None => println!("queue check       no queue endpoint in the storage settings"),
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
        let text = match read(file) {
            Ok(t) => t,
            Err(e) => {
                failed += 1;
                println!("{}: cannot read: {e}", file.display());
                continue;
            }
        };
        match app.archive_message(&text).await {
            Err(reason) => {
                failed += 1;
                println!("{}: cannot be archived: {reason}", file.display());
            }
            Ok((outcomes, failures)) => {
                let count =
                    |f: fn(&ArchiveOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
                println!(
                    "{}: {} archived, {} already archived, {} failed",
                    file.display(),
                    count(|o| matches!(o, ArchiveOutcome::Archived { .. })),
                    count(|o| matches!(o, ArchiveOutcome::AlreadyArchived)),
                    failures.len()
                );
                for (job, e) in &failures {
                    println!(
                        "  chunk {} ({}): {} [{}]",
                        job.index, job.document_id, e.message, e.disposition
                    );
                }
                failed += failures.len();
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn read(file: &Path) -> std::io::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
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
