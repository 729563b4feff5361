//! The operator's tool, `archiver`, over the same core as the `handler`; `src/bin/archiver.rs`
//! only calls [`main`]. It is written for a person at a terminal first: settings as a table with
//! secrets hidden, a cause and a fix for every failed check, retries summarised in one line,
//! colour and progress bars only on a terminal, plain lines in files and pipes.
//!
//! * `archiver check`: shows the settings, checks that the Functions host can bind the queue
//!   trigger to them, and that the recordings container, the transfer queue and its poison
//!   queue exist or can be created (naming the role or setting to fix when not).
//! * `archiver replay FILE...`: archives the recordings named in event or job files now.
//!
//! Settings come from the environment, or from a `local.settings.json` with `--settings`.
//! Exit codes: 0 done, 1 a check or an item failed, 2 the command could not run (settings).
//!
//! | file | job |
//! |---|---|
//! | `term` | colour only on a terminal, log lines, the retry tally |
//! | `settings` | the settings as a table |
//! | `progress` | a bar on a terminal, plain lines otherwise |
//! | `check` | `archiver check` |
//! | `replay` | `archiver replay` |

mod check;
mod progress;
mod replay;
mod settings;
mod term;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{env_lookup, Settings};

/// Operator tool for recording-archiver.
#[derive(Parser, Debug)]
#[command(name = "archiver", version)]
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

/// Runs the tool on the process's arguments and environment.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let retries = term::init_logging();
    let (values, source) = match &cli.settings {
        Some(path) => match local_settings(path) {
            Ok(v) => (v, format!("{}, then the environment", path.display())),
            Err(e) => return fail(&e),
        },
        None => (HashMap::new(), "the environment".to_string()),
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
            Command::Check => check::run(&settings, &lookup, &source).await,
            Command::Replay { files } => replay::run(&settings, &lookup, &files, &retries).await,
        }
    })
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

/// Reports why the command could not run, and exits 2.
fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("archiver: {e}");
    ExitCode::from(2)
}
