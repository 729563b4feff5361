//! The `handler` binary the Functions host starts (host.json `defaultExecutablePath`).
//! Reads settings once, builds the app, serves until SIGTERM or Ctrl-C.

use clap::Parser;
use recording_archiver::config::{env_lookup, Settings};
use recording_archiver::host::{logging, server};
use recording_archiver::wiring;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

/// Azure Functions custom handler that archives ACS call recordings into Blob Storage.
///
/// All settings come from the environment (see local.settings.json.example).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Port to listen on, instead of FUNCTIONS_CUSTOMHANDLER_PORT (for running by hand).
    #[arg(long)]
    port: Option<u16>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::load(&env_lookup) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    logging::init(settings.log_format);
    let port = match args.port.map(Ok).unwrap_or_else(|| settings.require_port()) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    runtime.block_on(run(settings, port))
}

async fn run(settings: Settings, port: u16) -> ExitCode {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot listen on {addr}: {e}")),
    };
    tracing::info!(%addr, mode = ?settings.archive_mode, container = %settings.container, "handler listening");
    let clients = match wiring::check_functions_host(&settings)
        .and_then(|()| wiring::build_clients(&settings, &env_lookup))
    {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    tokio::spawn(probe_storage(settings.clone(), clients.clone()));
    let app = match wiring::app_from_clients(&settings, clients) {
        Ok(app) => app,
        Err(e) => return fail(&e),
    };
    server::serve(
        listener,
        app,
        &settings.server,
        shutdown_signal(),
        server::SHUTDOWN_GRACE,
    )
    .await;
    tracing::info!("handler stopped");
    ExitCode::SUCCESS
}

/// Probes storage once, beside serving: a role assignment may still be propagating, and a
/// worker that exits is only restarted by the host while Event Grid backs off, so a setup error
/// is logged at error severity, naming the setting or role, and the handler keeps answering
/// (503 for what needs the missing piece, until it is fixed).
async fn probe_storage(settings: Settings, clients: wiring::Clients) {
    let Some(probe) = wiring::probe(&settings, &clients) else {
        return;
    };
    for finding in probe.run().await {
        if finding.is_ready() {
            tracing::info!("storage check: {finding}");
        } else {
            tracing::error!("storage setup error: {finding}");
        }
    }
}

/// One plain line on stderr (the host records it as an Error), and exit status 2.
fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("handler: {e}");
    ExitCode::from(2)
}

/// Completes on SIGTERM (a process manager, or someone running the handler by hand) or Ctrl-C.
/// The Functions host never sends it: it stops a worker with SIGKILL, so correctness after a
/// stop rests on resuming, not on this drain.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
