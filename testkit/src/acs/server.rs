//! Accepting connections and reading requests off them until the client or the answer ends
//! the connection.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::dispatch::handle;
use super::http::{respond, Connection, Keep};
use super::{Server, State, WRITE_CHUNK};

/// Serves `listener` until `stop` changes; then drops every open connection.
pub(super) async fn accept_loop(
    listener: TcpListener,
    server: Server,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_connection(state.clone(), server, stream));
                }
            }
            Some(_) = connections.join_next() => {}
            _ = stop.changed() => break,
        }
    }
    connections.abort_all();
}

async fn serve_connection(state: Arc<State>, server: Server, stream: TcpStream) {
    let mut conn = Connection::new(stream);
    let mut buf = vec![0u8; WRITE_CHUNK];
    loop {
        let request = match conn.read_request().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let body = format!("{{\"error\":{{\"code\":\"BadRequest\",\"message\":\"{e}\"}}}}");
                let _ = respond(
                    &mut conn,
                    400,
                    "application/json",
                    body.as_bytes(),
                    &[],
                    true,
                )
                .await;
                return;
            }
        };
        match handle(&state, server, &request, &mut conn, &mut buf).await {
            Ok(Keep::Open) if !request.wants_close() => {}
            _ => return,
        }
    }
}
