//! One request's way through the emulator: its route, its authentication, the answers every
//! route shares (401, 400, 404, 405), the fault it uses up, then the route's own function.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use super::http::{respond, Connection, Keep, Request};
use super::{
    auth, lock, routes, Fault, LoggedRequest, Server, State, Verdict, PREVIEW_API_VERSION,
};

/// What a path asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// A media download: the preview URL's `{id}`, or the GA URL's `{id}/{video|audio}`.
    Media(String),
    Metadata(String),
    Delete(String),
    NotFound,
    MethodNotAllowed,
}

pub(super) fn route(server: Server, request: &Request) -> Route {
    let segments: Vec<&str> = request
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let get = request.method == "GET";
    match (server, segments.as_slice()) {
        (Server::Acs, ["recording", "download", id]) if get => Route::Media(id.to_string()),
        (Server::Acs, ["recording", "download", id, "metadata"]) if get => {
            Route::Metadata(id.to_string())
        }
        (Server::Storage, ["v1", "objects", id, "content", "acsmetadata"]) if get => {
            Route::Metadata(id.to_string())
        }
        // Both published deleteLocation forms: `.../{id}/content/deletedata` (REST spec
        // example) and `.../{id}` (Event Grid docs sample).
        (
            Server::Storage,
            ["v1", "objects", id, "content", "deletedata"] | ["v1", "objects", id],
        ) if request.method == "DELETE" => Route::Delete(id.to_string()),
        (Server::Storage, ["v1", "objects", id, "content", kind])
            if get && matches!(*kind, "video" | "audio") =>
        {
            Route::Media(format!("{id}/{kind}"))
        }
        (Server::Acs, ["recording", "download", ..]) | (Server::Storage, ["v1", "objects", ..]) => {
            Route::MethodNotAllowed
        }
        _ => Route::NotFound,
    }
}

impl Route {
    /// The recording the route names, and the media kind a GA media URL asks for.
    fn document(&self) -> (Option<String>, Option<String>) {
        match self {
            Route::Media(key) => match key.split_once('/') {
                Some((id, kind)) => (Some(id.to_string()), Some(kind.to_string())),
                None => (Some(key.clone()), None),
            },
            Route::Metadata(id) | Route::Delete(id) => (Some(id.clone()), None),
            _ => (None, None),
        }
    }
}

/// A service-shaped JSON error body.
pub(super) fn json_error(code: &str, message: &str) -> Vec<u8> {
    serde_json::json!({"error": {"code": code, "message": message}})
        .to_string()
        .into_bytes()
}

/// One request being answered: the ids every answer carries, and its log entry, written when
/// the answer's status is decided.
pub(super) struct Exchange<'a> {
    pub(super) state: &'a State,
    /// `x-ms-request-id` and `MS-CV`.
    pub(super) ids: Vec<(String, String)>,
    entry: LoggedRequest,
}

impl<'a> Exchange<'a> {
    /// Numbers the request and checks its authentication.
    fn open(
        state: &'a State,
        server: Server,
        request: &Request,
        document_id: Option<String>,
    ) -> Self {
        let n = state.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let ids = vec![
            (
                "x-ms-request-id".to_string(),
                format!("00000000-0000-4000-8000-{n:012x}"),
            ),
            ("MS-CV".to_string(), format!("EmuCV{n}.0")),
        ];
        let this_host = match server {
            Server::Acs => &state.acs_authority,
            Server::Storage => &state.storage_authority,
        };
        let verdict = auth::verify(
            &auth::Presented {
                method: &request.method,
                target: &request.target,
                headers: &request.headers,
                body: &request.body,
            },
            &auth::Authority {
                acs_host: &state.acs_authority,
                this_host,
                key: &state.config.access_key,
                bearer: state.config.bearer_token.as_deref(),
                max_skew: state.config.max_skew,
                now: SystemTime::now(),
            },
        );
        let entry = LoggedRequest {
            server,
            method: request.method.clone(),
            target: request.target.clone(),
            headers: request
                .headers
                .iter()
                .map(|(k, v)| {
                    let v = if k == "authorization" {
                        format!("{} ***", v.split(' ').next().unwrap_or_default())
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect(),
            document_id,
            verdict: match verdict {
                Ok(()) => Verdict::Accepted,
                Err(reason) => Verdict::Rejected(reason),
            },
            status: 0,
            at: Instant::now(),
            fault: None,
        };
        Exchange { state, ids, entry }
    }

    /// Logs the answer's status, at the moment it is decided.
    pub(super) fn log(&mut self, status: u16) {
        self.entry.status = status;
        self.entry.at = Instant::now();
        lock(&self.state.log).push(self.entry.clone());
    }

    /// Logs and sends a whole answer: the ids, then `headers`.
    pub(super) async fn answer(
        &mut self,
        conn: &mut Connection,
        status: u16,
        content_type: &str,
        body: &[u8],
        headers: &[(String, String)],
    ) -> io::Result<Keep> {
        self.log(status);
        let mut all = self.ids.clone();
        all.extend_from_slice(headers);
        respond(conn, status, content_type, body, &all, false).await
    }

    /// Logs and sends a JSON error.
    async fn error(
        &mut self,
        conn: &mut Connection,
        status: u16,
        code: &str,
        message: &str,
    ) -> io::Result<Keep> {
        let body = json_error(code, message);
        self.answer(conn, status, "application/json", &body, &[])
            .await
    }
}

/// Answers one request.
pub(super) async fn handle(
    state: &State,
    server: Server,
    request: &Request,
    conn: &mut Connection,
    buf: &mut [u8],
) -> io::Result<Keep> {
    let route = route(server, request);
    let (document_id, media_kind) = route.document();
    let mut exchange = Exchange::open(state, server, request, document_id.clone());

    if let Verdict::Rejected(reason) = &exchange.entry.verdict {
        let message = format!("Denied: {reason}");
        return exchange.error(conn, 401, "Unauthorized", &message).await;
    }
    if document_id.is_some() && server == Server::Acs && !query_has_api_version(request.query()) {
        let message = format!("api-version={PREVIEW_API_VERSION} is required");
        return exchange.error(conn, 400, "BadRequest", &message).await;
    }

    // Snapshot what the route needs, so no lock is held while writing.
    let found = document_id.as_deref().and_then(|id| {
        lock(&state.recordings)
            .get(id)
            .filter(|r| !r.deleted)
            .map(|r| (r.content.clone(), r.format, r.metadata.clone()))
    });
    let (content, format, metadata) = match (&route, found) {
        (Route::NotFound, _) => {
            return exchange
                .error(conn, 404, "NotFound", "No such resource.")
                .await
        }
        (Route::MethodNotAllowed, _) => {
            return exchange
                .error(conn, 405, "MethodNotAllowed", "Method not allowed.")
                .await
        }
        (_, None) => {
            return exchange
                .error(conn, 404, "NotFound", "Recording not found.")
                .await
        }
        (_, Some(found)) => found,
    };
    if media_kind
        .as_deref()
        .is_some_and(|k| k != format.media_kind())
    {
        return exchange
            .error(conn, 404, "NotFound", "No such content for this recording.")
            .await;
    }

    let fault = draw_fault(state, &route, document_id.as_deref());
    exchange.entry.fault.clone_from(&fault);
    match &fault {
        Some(Fault::Status {
            status,
            headers,
            body,
            content_type,
        }) => {
            return exchange
                .answer(conn, *status, content_type, body.as_bytes(), headers)
                .await;
        }
        Some(Fault::EmptyOk) => {
            return exchange
                .answer(conn, 200, format.content_type(), b"", &[])
                .await;
        }
        _ => {}
    }

    match route {
        Route::Delete(id) => routes::delete(conn, exchange, &id).await,
        Route::Metadata(_) => {
            routes::metadata(conn, exchange, metadata.into_bytes(), fault.as_ref(), buf).await
        }
        Route::Media(_) => {
            let range = request.header("range");
            routes::media(conn, exchange, &content, format, range, fault.as_ref(), buf).await
        }
        Route::NotFound | Route::MethodNotAllowed => Ok(Keep::Close),
    }
}

/// The next fault queued for the route's recording; a media download uses up the media-only
/// ones first.
fn draw_fault(state: &State, route: &Route, document_id: Option<&str>) -> Option<Fault> {
    let next_fault = |faults: &Mutex<HashMap<String, VecDeque<Fault>>>| {
        document_id.and_then(|id| lock(faults).get_mut(id).and_then(VecDeque::pop_front))
    };
    match route {
        Route::Media(_) => next_fault(&state.media_faults),
        _ => None,
    }
    .or_else(|| next_fault(&state.faults))
}

fn query_has_api_version(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|p| p == format!("api-version={PREVIEW_API_VERSION}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    #[test]
    fn both_url_schemes_route() {
        assert_eq!(
            route(
                Server::Acs,
                &request("GET", "/recording/download/d1?api-version=x")
            ),
            Route::Media("d1".into())
        );
        assert_eq!(
            route(
                Server::Acs,
                &request("GET", "/recording/download/d1/metadata")
            ),
            Route::Metadata("d1".into())
        );
        assert_eq!(
            route(
                Server::Storage,
                &request("GET", "/v1/objects/d1/content/video")
            ),
            Route::Media("d1/video".into())
        );
        assert_eq!(
            route(
                Server::Storage,
                &request("DELETE", "/v1/objects/d1/content/deletedata")
            ),
            Route::Delete("d1".into())
        );
        assert_eq!(
            route(Server::Storage, &request("DELETE", "/v1/objects/d1")),
            Route::Delete("d1".into())
        );
        assert_eq!(
            route(Server::Storage, &request("GET", "/recording/download/d1")),
            Route::NotFound
        );
        assert_eq!(
            route(
                Server::Storage,
                &request("PUT", "/v1/objects/d1/content/video")
            ),
            Route::MethodNotAllowed
        );
    }
}
