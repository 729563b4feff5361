//! `archiver-bench`: runs the benchmark and prints its table (see the crate docs and
//! `scripts/bench`). Progress goes to stderr, the table to stdout. Exits 1 when a row could
//! not run or its result did not check out; missed targets are reported, not fatal.

use std::process::ExitCode;
use std::time::Duration;

use archiver_bench::plan::Options;
use archiver_bench::run;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    let limit = Duration::from_secs(options.max_minutes.max(1) * 60);
    let mut log = |line: &str| eprintln!("{line}");
    // Ending the select drops the run future, and with it every child process and Azurite.
    let outcome = tokio::select! {
        r = tokio::time::timeout(limit, run::run(&options, &mut log)) => {
            r.unwrap_or_else(|_| Err(format!("gave up after {} minutes (--max-minutes)", options.max_minutes)))
        }
        signal = interrupted() => Err(format!("interrupted by {signal}")),
    };
    match outcome {
        Ok(run::Outcome {
            header,
            table,
            legend,
            all_ok,
        }) => {
            for line in &header {
                println!("{line}");
            }
            println!("\n{table}");
            println!("{legend}");
            if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("archiver-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Completes on Ctrl-C or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "Ctrl-C";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}
