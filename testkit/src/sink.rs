//! [`DiscardSink`]: a Blob endpoint for benchmarks that accepts the block calls an upload makes
//! and throws the bytes away, keeping only block ids and sizes. It checks no signatures; it
//! stands in for a Blob service with infinite bandwidth so a benchmark measures the uploader.
//!
//! Handled: Create Container, Put Block (body streamed and counted, never buffered), Put Block
//! List (`Latest`/`Committed`/`Uncommitted`, `If-None-Match: *`), Get Block List, Get Blob
//! Properties, Put Blob. Anything else gets 400. Commits keep the blob's content type and
//! `x-ms-meta-*` values, and Get Blob Properties returns them, so an uploader that checks what
//! it committed (the archiver checks the size and reads its own metadata) works against it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

use crate::proxy::{lock, request_parts, LocalServer, RequestKind};

#[derive(Default)]
struct BlobState {
    staged: HashMap<String, u64>,
    committed: Option<Vec<(String, u64)>>,
    /// `x-ms-blob-content-type` and `x-ms-meta-*` of the last commit, as response headers.
    properties: Vec<(String, String)>,
    /// The bytes of a small Put Blob (an archive record, a manifest), which the archiver reads
    /// back; media is counted and dropped.
    content: Option<Bytes>,
}

/// Put Blob bodies up to this size are kept and served back by Get Blob.
const KEPT_BLOB_BYTES: u64 = 4 << 20;

/// The headers a commit sets that Get Blob Properties returns: the content type (as
/// `Content-Type`) and the metadata (names lower-cased, as the service stores them).
fn committed_properties(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let value = value.to_str().ok()?.to_string();
            let name = name.as_str();
            if name == "x-ms-blob-content-type" {
                Some(("content-type".to_string(), value))
            } else if name.starts_with("x-ms-meta-") {
                Some((name.to_string(), value))
            } else {
                None
            }
        })
        .collect()
}

#[derive(Default)]
struct SinkState {
    containers: Mutex<HashSet<String>>,
    blobs: Mutex<HashMap<String, BlobState>>,
    counts: Mutex<HashMap<RequestKind, usize>>,
    block_bytes: AtomicU64,
    requests: AtomicUsize,
}

/// A running sink; stops when dropped.
pub struct DiscardSink {
    server: LocalServer,
    state: Arc<SinkState>,
}

impl std::fmt::Debug for DiscardSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscardSink")
            .field("addr", &self.server.addr)
            .finish()
    }
}

impl DiscardSink {
    /// Starts the sink on a free loopback port, on the current Tokio runtime.
    pub async fn start() -> std::io::Result<DiscardSink> {
        let state = Arc::new(SinkState::default());
        let with_state = {
            let state = state.clone();
            warp::any().map(move || state.clone())
        };
        let route = request_parts()
            .and(warp::body::stream())
            .and(with_state)
            .then(handle)
            .boxed();
        Ok(DiscardSink {
            server: LocalServer::start(route).await?,
            state,
        })
    }

    /// A path-style Blob endpoint for the sink, with Azurite's account name.
    pub fn endpoint(&self) -> String {
        format!("http://{}/{}", self.server.addr, crate::azurite::ACCOUNT)
    }

    /// Bytes received in Put Block and Put Blob bodies.
    pub fn bytes_received(&self) -> u64 {
        self.state.block_bytes.load(Ordering::Relaxed)
    }

    /// Requests of `kind` received.
    pub fn count(&self, kind: RequestKind) -> usize {
        lock(&self.state.counts).get(&kind).copied().unwrap_or(0)
    }

    /// The committed length of the blob at `path` (`/account/container/blob`), if committed.
    pub fn committed_length(&self, path: &str) -> Option<u64> {
        lock(&self.state.blobs)
            .get(path)
            .and_then(|b| b.committed.as_ref())
            .map(|blocks| blocks.iter().map(|(_, s)| s).sum())
    }
}

async fn handle<S, B>(
    method: Method,
    path: warp::filters::path::FullPath,
    query: String,
    headers: HeaderMap,
    body: S,
    state: Arc<SinkState>,
) -> Response<Bytes>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let kind = RequestKind::classify(&method, path.as_str(), &query);
    *lock(&state.counts).entry(kind).or_default() += 1;
    let request_no = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let keep_body = matches!(kind, RequestKind::PutBlockList | RequestKind::PutBlob);
    let mut body = std::pin::pin!(body);
    let (mut len, mut kept) = (0u64, Vec::new());
    while let Some(chunk) = body.next().await {
        let Ok(mut chunk) = chunk else {
            return reply(
                StatusCode::BAD_REQUEST,
                request_no,
                Some("IncompleteBody"),
                Bytes::new(),
            );
        };
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            len += piece.len() as u64;
            if keep_body && len <= KEPT_BLOB_BYTES {
                kept.extend_from_slice(piece);
            }
            let n = piece.len();
            chunk.advance(n);
        }
    }
    let path = path.as_str().to_string();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
    };
    let create_only = headers.get("if-none-match").is_some_and(|v| v == "*");
    let mut blobs = lock(&state.blobs);
    match kind {
        RequestKind::CreateContainer => {
            if lock(&state.containers).insert(path) {
                reply(StatusCode::CREATED, request_no, None, Bytes::new())
            } else {
                reply(
                    StatusCode::CONFLICT,
                    request_no,
                    Some("ContainerAlreadyExists"),
                    Bytes::new(),
                )
            }
        }
        RequestKind::PutBlock => {
            let Some(id) = param("blockid") else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    request_no,
                    Some("InvalidQueryParameterValue"),
                    Bytes::new(),
                );
            };
            state.block_bytes.fetch_add(len, Ordering::Relaxed);
            blobs.entry(path).or_default().staged.insert(id, len);
            reply(StatusCode::CREATED, request_no, None, Bytes::new())
        }
        RequestKind::PutBlob => {
            state.block_bytes.fetch_add(len, Ordering::Relaxed);
            let blob = blobs.entry(path).or_default();
            if create_only && blob.committed.is_some() {
                return reply(
                    StatusCode::CONFLICT,
                    request_no,
                    Some("BlobAlreadyExists"),
                    Bytes::new(),
                );
            }
            blob.staged.clear();
            blob.committed = Some(vec![(String::new(), len)]);
            blob.properties = committed_properties(&headers);
            blob.content = (len <= KEPT_BLOB_BYTES).then(|| Bytes::from(kept));
            reply(StatusCode::CREATED, request_no, None, Bytes::new())
        }
        RequestKind::PutBlockList => {
            let blob = blobs.entry(path).or_default();
            if create_only && blob.committed.is_some() {
                return reply(
                    StatusCode::CONFLICT,
                    request_no,
                    Some("BlobAlreadyExists"),
                    Bytes::new(),
                );
            }
            let text = String::from_utf8_lossy(&kept);
            let Ok(entries) = block_list_entries(&text) else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    request_no,
                    Some("InvalidXmlDocument"),
                    Bytes::new(),
                );
            };
            let mut committed = Vec::new();
            for (tag, id) in entries {
                let from_committed = || {
                    blob.committed
                        .as_ref()
                        .and_then(|c| c.iter().find(|(i, _)| *i == id).map(|(_, s)| *s))
                };
                let size = match tag {
                    "Uncommitted" => blob.staged.get(&id).copied(),
                    "Committed" => from_committed(),
                    _ => blob.staged.get(&id).copied().or_else(from_committed),
                };
                match size {
                    Some(size) => committed.push((id, size)),
                    None => {
                        return reply(
                            StatusCode::BAD_REQUEST,
                            request_no,
                            Some("InvalidBlockList"),
                            Bytes::new(),
                        )
                    }
                }
            }
            blob.staged.clear();
            blob.committed = Some(committed);
            blob.properties = committed_properties(&headers);
            blob.content = None;
            reply(StatusCode::CREATED, request_no, None, Bytes::new())
        }
        RequestKind::GetBlockList => {
            let Some(blob) = blobs.get(&path) else {
                return reply(
                    StatusCode::NOT_FOUND,
                    request_no,
                    Some("BlobNotFound"),
                    Bytes::new(),
                );
            };
            let list = |blocks: &mut dyn Iterator<Item = (&String, &u64)>| -> String {
                blocks
                    .map(|(id, size)| {
                        format!("<Block><Name>{id}</Name><Size>{size}</Size></Block>")
                    })
                    .collect()
            };
            let committed = blob.committed.clone().unwrap_or_default();
            let length: u64 = committed.iter().map(|(_, s)| s).sum();
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><CommittedBlocks>{}</CommittedBlocks><UncommittedBlocks>{}</UncommittedBlocks></BlockList>",
                list(&mut committed.iter().map(|(i, s)| (i, s))),
                list(&mut blob.staged.iter()),
            );
            let mut response = reply(StatusCode::OK, request_no, None, Bytes::from(xml));
            if let Ok(v) = length.to_string().parse() {
                response.headers_mut().insert("x-ms-blob-content-length", v);
            }
            response
        }
        RequestKind::GetProperties => match blobs
            .get(&path)
            .and_then(|b| Some((b.committed.as_ref()?, &b.properties)))
        {
            Some((blocks, properties)) => {
                let length: u64 = blocks.iter().map(|(_, s)| s).sum();
                let mut response = reply(StatusCode::OK, request_no, None, Bytes::new());
                let headers = response.headers_mut();
                if let Ok(v) = length.to_string().parse() {
                    headers.insert("content-length", v);
                }
                for (name, value) in properties {
                    if let (Ok(name), Ok(value)) = (
                        warp::http::HeaderName::from_bytes(name.as_bytes()),
                        warp::http::HeaderValue::from_str(value),
                    ) {
                        headers.insert(name, value);
                    }
                }
                response
            }
            None => reply(
                StatusCode::NOT_FOUND,
                request_no,
                Some("BlobNotFound"),
                Bytes::new(),
            ),
        },
        // Small blobs are served whole (the archiver's reads of them are bounded well above
        // their size); a missing blob is 404 as from the service; discarded media cannot be.
        RequestKind::GetBlob => match blobs.get(&path) {
            Some(BlobState {
                committed: Some(_),
                content: Some(content),
                ..
            }) => reply(StatusCode::OK, request_no, None, content.clone()),
            Some(BlobState {
                committed: Some(_), ..
            }) => reply(
                StatusCode::BAD_REQUEST,
                request_no,
                Some("UnsupportedByDiscardSink"),
                Bytes::new(),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                request_no,
                Some("BlobNotFound"),
                Bytes::new(),
            ),
        },
        _ => reply(
            StatusCode::BAD_REQUEST,
            request_no,
            Some("UnsupportedByDiscardSink"),
            Bytes::new(),
        ),
    }
}

/// A Put Block List body: `<Latest>`, `<Committed>` and `<Uncommitted>` ids in order.
#[derive(serde::Deserialize)]
struct BlockList {
    #[serde(rename = "$value", default)]
    entries: Vec<BlockListEntry>,
}

#[derive(serde::Deserialize)]
enum BlockListEntry {
    Latest(String),
    Committed(String),
    Uncommitted(String),
}

/// The ids of a Put Block List body with the list each names, in order.
fn block_list_entries(xml: &str) -> Result<Vec<(&'static str, String)>, quick_xml::DeError> {
    let list: BlockList = quick_xml::de::from_str(xml)?;
    Ok(list
        .entries
        .into_iter()
        .map(|entry| match entry {
            BlockListEntry::Latest(id) => ("Latest", id.trim().to_string()),
            BlockListEntry::Committed(id) => ("Committed", id.trim().to_string()),
            BlockListEntry::Uncommitted(id) => ("Uncommitted", id.trim().to_string()),
        })
        .collect())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reply(
    status: StatusCode,
    request_no: usize,
    code: Option<&str>,
    body: Bytes,
) -> Response<Bytes> {
    let mut builder = Response::builder()
        .status(status)
        .header("x-ms-request-id", format!("discard-sink-{request_no}"))
        .header("x-ms-version", "2021-08-06");
    if let Some(code) = code {
        builder = builder.header("x-ms-error-code", code);
    }
    if status == StatusCode::CREATED {
        builder = builder.header("etag", format!("\"0x{request_no:X}\""));
    }
    builder.body(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_list_entries_keep_order_and_kind() {
        let xml = "<?xml version=\"1.0\"?><BlockList><Latest>MDAw</Latest><Uncommitted>MDAx</Uncommitted></BlockList>";
        assert_eq!(
            block_list_entries(xml).unwrap(),
            vec![
                ("Latest", "MDAw".to_string()),
                ("Uncommitted", "MDAx".to_string())
            ]
        );
        assert_eq!(percent_decode("MDAw%3D%3D"), "MDAw==");
    }

    #[tokio::test]
    async fn sink_counts_bytes_and_commits_block_sizes() {
        let sink = DiscardSink::start().await.unwrap();
        let http = reqwest::Client::new();
        let blob = format!("{}/c/b", sink.endpoint());
        for (id, size) in [("MDAw", 5usize), ("MDAx", 7)] {
            let r = http
                .put(format!("{blob}?comp=block&blockid={id}"))
                .body(vec![b'x'; size])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        for (list, status) in [
            ("<Latest>MDAw</Latest><Latest>MDAx</Latest>", 201),
            ("<Latest>MDAw</Latest>", 409),
        ] {
            let r = http
                .put(format!("{blob}?comp=blocklist"))
                .header("if-none-match", "*")
                .header("x-ms-blob-content-type", "video/mp4")
                .header("x-ms-meta-archivedbytes", "12")
                .body(format!("<BlockList>{list}</BlockList>"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), status, "create-only commit of {list}");
        }
        assert_eq!(sink.bytes_received(), 12);
        assert_eq!(sink.count(RequestKind::PutBlock), 2);
        assert_eq!(sink.committed_length("/devstoreaccount1/c/b"), Some(12));
        let r = http
            .get(format!("{blob}?comp=blocklist&blocklisttype=all"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-ms-blob-content-length"], "12");
        let r = http.head(&blob).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], "12");
        assert_eq!(r.headers()["content-type"], "video/mp4");
        assert_eq!(
            r.headers()["x-ms-meta-archivedbytes"],
            "12",
            "Get Blob Properties returns the committed metadata"
        );
    }
}
