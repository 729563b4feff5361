//! The handler's HTTP server: one hyper HTTP/1 connection per client with a header timeout, at
//! most `ServerLimits::max_connections` at once, and a graceful shutdown.
//!
//! warp's own server sets no timer, so under it a client that sends half a request head, or
//! keeps an idle connection, holds it for ever. Here hyper's `header_read_timeout` closes a
//! connection whose next request head is not complete in time (it runs from the moment the
//! connection is ready for a request, so it covers idle keep-alive too); the body timeout is the
//! route's job ([`super::functions`]); and connections past the limit wait in the listen
//! backlog until one closes, so the memory of half-sent bodies is bounded by the limit times
//! the body size limit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::config::ServerLimits;
use crate::host::functions;

/// How long in-flight requests may run on after SIGTERM or Ctrl-C before the process exits
/// anyway. Only for runs outside the Functions host, which kills its worker outright.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves the handler's routes on `listener` within `limits` until `shutdown` completes,
/// then stops accepting and lets in-flight requests finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    app: App,
    limits: &ServerLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let service = warp::service(functions::routes(app, limits.body_timeout));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection limit reached; new connections wait until one closes"
                );
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: give connections time to close.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "in-flight requests did not finish in time; exiting anyway"
        );
    }
}
