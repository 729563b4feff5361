//! The local demo as a program (`scripts/demo` builds and runs it):
//!
//! ```text
//! demo [--handler PATH] [--archiver PATH] [--app-root DIR] [--sizes 120M,30M,5M]
//!      [--timeout SECS] [--withhold-chunk N] [--verbose]
//! ```
//!
//! Archives one emulated ACS recording through the real handler into Azurite and checks it;
//! see `archiver_testkit::demo`. Exit status 0 when every chunk is archived byte-exact, 1 when
//! anything is missing or different (the reason is printed), 2 for bad arguments, 130 on
//! Ctrl-C. Everything it starts is stopped before it exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use archiver_testkit::demo::{self, DemoError, DemoOptions};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: demo [--handler PATH] [--archiver PATH] [--app-root DIR] \
[--sizes 120M,30M,5M] [--timeout SECS] [--withhold-chunk N] [--verbose]";

/// The options, with defaults that work from a `cargo build` in this repository: the app root
/// is the repository, the handler the one built next to this program.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<DemoOptions, String> {
    let app_root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let beside = |name: &str| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
            .unwrap_or_else(|| PathBuf::from(name))
    };
    let mut options = DemoOptions::new(app_root, beside("handler"));
    options.archiver = Some(beside("archiver"));
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--handler" => options.handler = PathBuf::from(value()?),
            "--archiver" => options.archiver = Some(PathBuf::from(value()?)),
            "--app-root" => options.app_root = PathBuf::from(value()?),
            "--sizes" => options.chunk_sizes = demo::parse_sizes(&value()?)?,
            "--timeout" => {
                let v = value()?;
                let secs: u64 = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("--timeout: not a number of seconds: {v}"))?;
                options.timeout = Duration::from_secs(secs);
            }
            "--withhold-chunk" => {
                let v = value()?;
                options.withhold_chunk = Some(
                    v.parse()
                        .map_err(|_| format!("--withhold-chunk: not a chunk index: {v}"))?,
                );
            }
            "--verbose" => options.echo_host_log = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("demo: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Listen before anything starts, so Ctrl-C at any point still stops what was started.
    let listen = |kind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
    let (mut interrupt, mut terminate) = match (
        listen(SignalKind::interrupt()),
        listen(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    println!("recording-archiver local demo");
    println!(
        "Everything runs on this machine: Azurite for Blob and Queue storage, an emulated ACS \
         recording store,\nand an emulated Azure Functions host running the real handler. No \
         Azure account is used.\n"
    );
    match demo::run(options, cancel).await {
        Ok(report) => {
            println!(
                "\nDEMO PASSED: {} of {} chunks archived byte-exact, with their archive records.",
                report.matching_media(),
                report.chunks.len()
            );
            ExitCode::SUCCESS
        }
        Err(DemoError::Interrupted) => {
            eprintln!("\ndemo: interrupted");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("\nDEMO FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<DemoOptions, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_are_the_full_demo_and_flags_override_them() {
        let d = args(&[]).unwrap();
        assert_eq!(d.chunk_sizes, demo::DEFAULT_CHUNK_SIZES.to_vec());
        assert_eq!(d.timeout, demo::DEFAULT_TIMEOUT);
        assert!(d.app_root.join("host.json").is_file(), "{:?}", d.app_root);
        let o = args(&[
            "--sizes",
            "1M,2K",
            "--timeout",
            "9",
            "--withhold-chunk",
            "1",
            "--handler",
            "/h",
            "--verbose",
        ])
        .unwrap();
        assert_eq!(o.chunk_sizes, vec![1 << 20, 2048]);
        assert_eq!(o.timeout, Duration::from_secs(9));
        assert_eq!(o.withhold_chunk, Some(1));
        assert_eq!(o.handler, PathBuf::from("/h"));
        assert!(o.echo_host_log);
        for bad in [
            &["--sizes"][..],
            &["--timeout", "0"],
            &["--bogus"],
            &["--withhold-chunk", "x"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }
}
