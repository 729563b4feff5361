//! Just enough HTTP/1.1 for the emulator: read a request head (and a small body), write a
//! response head. Written by hand rather than on hyper so that faults are exact: a response can
//! declare its full `Content-Length`, deliver precisely N bytes, and close the connection.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (requests to recording storage have none).
const MAX_BODY: usize = 1024 * 1024;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method, as sent.
    pub method: String,
    /// Path and query, as on the request line.
    pub target: String,
    /// Headers with lower-case names, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The query, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Whether the client asked to close after this exchange.
    pub fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
    }
}

/// A connection's read side with its leftover bytes.
pub struct Connection {
    /// The socket.
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    /// Wraps an accepted socket.
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            buffer: Vec::new(),
        }
    }

    /// The next request; `None` when the client closed the connection between requests.
    pub async fn read_request(&mut self) -> io::Result<Option<Request>> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(&self.buffer) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let request = Request {
                        method: parsed.method.unwrap_or_default().to_string(),
                        target: parsed.path.unwrap_or_default().to_string(),
                        headers: parsed
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_ascii_lowercase(),
                                    String::from_utf8_lossy(h.value).trim().to_string(),
                                )
                            })
                            .collect(),
                        body: Vec::new(),
                    };
                    self.buffer.drain(..head_len);
                    return self.read_body(request).await.map(Some);
                }
                Ok(httparse::Status::Partial) if self.buffer.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "request head too large",
                    ))
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    async fn read_body(&mut self, mut request: Request) -> io::Result<Request> {
        if request.header("transfer-encoding").is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunked request bodies are not supported",
            ));
        }
        let len: usize = match request.header("content-length") {
            None => 0,
            Some(v) => v
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?,
        };
        if len > MAX_BODY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request body too large",
            ));
        }
        while self.buffer.len() < len {
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        request.body = self.buffer.drain(..len).collect();
        Ok(request)
    }

    /// Writes a status line and headers (`Content-Length` among them, set by the caller).
    pub async fn write_head(
        &mut self,
        status: u16,
        headers: &[(String, String)],
    ) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes()).await
    }

    /// Writes body bytes.
    pub async fn write_body(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }
}

/// Whether the connection can carry another request.
pub enum Keep {
    /// Yes: the answer was delivered whole.
    Open,
    /// No: the answer was cut short or the client asked to close.
    Close,
}

/// Writes a whole answer with this body; `close` says so in a `Connection: close` header.
pub async fn respond(
    conn: &mut Connection,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &[(String, String)],
    close: bool,
) -> io::Result<Keep> {
    let mut headers: Vec<(String, String)> = extra.to_vec();
    headers.push(("Content-Type".into(), content_type.into()));
    headers.push(("Content-Length".into(), body.len().to_string()));
    if close {
        headers.push(("Connection".into(), "close".into()));
    }
    conn.write_head(status, &headers).await?;
    conn.write_body(body).await?;
    Ok(if close { Keep::Close } else { Keep::Open })
}

/// The reason phrase for the statuses the emulator sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
