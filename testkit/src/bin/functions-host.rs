//! The Functions host emulator as a program, for the local demo when Azure Functions Core
//! Tools are not installed:
//!
//! ```text
//! functions-host --app-root DIR --handler PATH [--settings FILE] [--port N]
//! ```
//!
//! Reads the app under `--app-root` like `func start` (host.json, `*/function.json`, the
//! "Values" of `--settings`, by default `<app-root>/local.settings.json` when it exists), starts
//! the handler, prints one JSON line `{"baseUrl": "http://127.0.0.1:PORT"}` on stdout once
//! everything is ready, logs like the host on stderr, and serves until SIGTERM or Ctrl-C, then
//! stops the handler. What it reproduces of the host: `archiver_testkit::host` module docs.

use std::path::PathBuf;
use std::process::ExitCode;

use archiver_testkit::host::{load_local_settings, FunctionsHost, HostOptions};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str =
    "usage: functions-host --app-root DIR --handler PATH [--settings local.settings.json] [--port N]";

#[derive(Debug)]
struct Args {
    app_root: PathBuf,
    handler: PathBuf,
    settings: Option<PathBuf>,
    port: Option<u16>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut app_root, mut handler, mut settings, mut port) = (None, None, None, None);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--app-root" => app_root = Some(PathBuf::from(value()?)),
            "--handler" => handler = Some(PathBuf::from(value()?)),
            "--settings" => settings = Some(PathBuf::from(value()?)),
            "--port" => {
                let v = value()?;
                port = Some(
                    v.parse()
                        .map_err(|_| format!("--port: not a port number: {v}"))?,
                );
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        app_root: app_root.ok_or("--app-root is required")?,
        handler: handler.ok_or("--handler is required")?,
        settings,
        port,
    })
}

async fn run(args: Args) -> Result<(), String> {
    let settings_file = args.settings.or_else(|| {
        let default = args.app_root.join("local.settings.json");
        default.is_file().then_some(default)
    });
    let app_settings = match &settings_file {
        Some(path) => load_local_settings(path)?,
        None => Vec::new(),
    };
    let options = HostOptions {
        handler: Some(args.handler),
        app_settings,
        port: args.port,
        echo: true,
        ..HostOptions::default()
    };
    // Listen before starting, so a signal during start-up still stops the handler.
    let listen = |kind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
    let (mut terminate, mut interrupt) = (
        listen(SignalKind::terminate())?,
        listen(SignalKind::interrupt())?,
    );
    let host = FunctionsHost::start_with(&args.app_root, options).await?;
    println!("{}", serde_json::json!({ "baseUrl": host.base_url() }));
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    host.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("functions-host: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("functions-host: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments_are_parsed_and_required_ones_enforced() {
        let a = args(&["--app-root", ".", "--handler", "h", "--port", "7071"]).unwrap();
        assert_eq!(
            (a.app_root, a.handler, a.settings, a.port),
            (PathBuf::from("."), PathBuf::from("h"), None, Some(7071))
        );
        assert!(args(&["--handler", "h"])
            .unwrap_err()
            .contains("--app-root"));
        assert!(args(&["--app-root", ".", "--handler"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(args(&["--app-root", ".", "--handler", "h", "--port", "x"]).is_err());
        assert!(args(&["--bogus"]).is_err());
    }
}
