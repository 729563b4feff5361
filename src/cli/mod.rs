//! The operator's tool, `archiver`, over the same core as the `handler`; `src/bin/archiver.rs`
//! only calls [`main`]. It is written for a person at a terminal first: settings as a table with
//! secrets hidden, a cause and a fix for every failed check, retries summarised in one line,
//! colour and progress bars only on a terminal, plain lines in files and pipes.
//!
//! * `archiver check`: shows the settings, checks that the Functions host can bind the queue
//!   trigger to them, and that the recordings container, the transfer queue and its poison
//!   queue exist or can be created (naming the role or setting to fix when not).
//! * `archiver find --call ID | --server-call ID | --recording ID | --since DATE [--until DATE]`:
//!   the archived recordings a selection matches, with their chunks and completeness.
//! * `archiver replay FILE...`: archives the recordings named in event or job files now.
//! * `archiver verify --call ID | --server-call ID | --recording ID | --since DATE [--until
//!   DATE] | --prefix P`: reads every archived chunk back and proves it against its record and
//!   metadata (SHA-256 and size).
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
//! | `find` | `archiver find` |
//! | `replay` | `archiver replay` |
//! | `verify` | `archiver verify` |

mod check;
mod find;
mod progress;
mod replay;
mod settings;
mod term;
mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::catalog::{Selector, SelectorError};
use crate::config::{env_lookup, Settings};
use crate::retry::RetryPolicy;

/// Retries for a first call that shows whether storage can be reached at all: someone is
/// waiting at a prompt, and a service that does not answer three attempts in five seconds is
/// worth reporting rather than waiting out. Later reads keep the clients' patient policy.
pub(crate) const PROMPT_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    deadline: Duration::from_secs(5),
    base_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(2),
};

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
    /// List archived recordings by call, server call, recording or start date, from their
    /// blob index tags.
    Find {
        #[command(flatten)]
        select: Select,
    },
    /// Archive the recordings in event or job files now ('-' reads standard input).
    Replay {
        /// Files holding an event, an array of events (a dead-letter blob), or a queue message.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Read archived chunks back and check each one's SHA-256 and size against its archive
    /// record and blob metadata. Exit 0: all verified; 1: a chunk differs or is missing;
    /// 2: the archive could not be read.
    Verify {
        #[command(flatten)]
        select: Select,
        /// Or: every chunk whose blob name starts with this prefix (e.g. `2026/11/29/`), found
        /// by listing rather than by tags.
        #[arg(long, group = "selector")]
        prefix: Option<String>,
    },
}

/// Which recordings a command is about, found by their blob index tags.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Select {
    #[command(flatten)]
    by: SelectBy,
    /// With --since: recordings that started before the end of this date, or before this time.
    #[arg(long, requires = "since")]
    until: Option<String>,
}

/// The one thing recordings are selected by.
#[derive(clap::Args, Debug, Clone)]
#[group(id = "selector", required = true, multiple = false)]
struct SelectBy {
    /// The recordings of this call (the call id of the event subject).
    #[arg(long)]
    call: Option<String>,
    /// The recordings of this server call id.
    #[arg(long)]
    server_call: Option<String>,
    /// This recording.
    #[arg(long)]
    recording: Option<String>,
    /// Recordings that started on or after this date (YYYY-MM-DD, UTC) or time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
}

impl Select {
    /// The selector given, if any (`None` when another member of the group was).
    pub(crate) fn selector(&self) -> Option<Result<Selector, SelectorError>> {
        let by = &self.by;
        let id = |f: fn(String) -> Selector, v: &Option<String>| v.clone().map(|v| Ok(f(v)));
        id(Selector::Call, &by.call)
            .or_else(|| id(Selector::ServerCall, &by.server_call))
            .or_else(|| id(Selector::Recording, &by.recording))
            .or_else(|| {
                by.since
                    .as_deref()
                    .map(|since| Selector::started(since, self.until.as_deref()))
            })
    }
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
            Command::Find { select } => match select.selector() {
                Some(Ok(selector)) => find::run(&settings, &lookup, &selector).await,
                Some(Err(e)) => fail(&e),
                None => unreachable!("clap requires one selector"),
            },
            Command::Replay { files } => replay::run(&settings, &lookup, &files, &retries).await,
            Command::Verify { select, prefix } => {
                let target = match (prefix, select.selector()) {
                    (Some(prefix), _) => verify::Target::Prefix(prefix),
                    (None, Some(Ok(selector))) => verify::Target::Tags(selector),
                    (None, Some(Err(e))) => return fail(&e),
                    (None, None) => unreachable!("clap requires one selector"),
                };
                verify::run(&settings, &lookup, &target, &retries).await
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn select(args: &[&str]) -> Result<(Select, Option<String>), clap::Error> {
        let cli = Cli::try_parse_from(["archiver", "verify"].iter().chain(args))?;
        match cli.command {
            Command::Verify { select, prefix } => Ok((select, prefix)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verify_takes_exactly_one_selector() {
        let (s, prefix) = select(&["--call", "c-1"]).unwrap();
        assert_eq!(s.selector().unwrap().unwrap(), Selector::Call("c-1".into()));
        assert_eq!(prefix, None);
        let (s, _) = select(&["--since", "2026-11-24", "--until", "2026-11-24"]).unwrap();
        assert_eq!(
            s.selector().unwrap().unwrap(),
            Selector::started("2026-11-24", Some("2026-11-24")).unwrap()
        );
        let (s, prefix) = select(&["--prefix", "2026/11/"]).unwrap();
        assert!(s.selector().is_none());
        assert_eq!(prefix.as_deref(), Some("2026/11/"));
        assert!(select(&[]).is_err());
        assert!(select(&["--call", "c-1", "--prefix", "p"]).is_err());
        assert!(select(&["--call", "c-1", "--recording", "r"]).is_err());
        assert!(select(&["--until", "2026-11-24"]).is_err());
    }
}
