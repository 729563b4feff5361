//! The resumable download stream, and the `Content-Range` arithmetic it trusts (pure).
//!
//! A recording chunk is up to 1.5 GB and ACS keeps it 24 h, so a download must survive cut
//! connections without starting over, and without ever splicing bytes that do not belong
//! together. After a cut the next request asks `Range: bytes=<next>-`; its answer is used only
//! if it is a 206 whose `Content-Range` starts exactly at `<next>` with the same total length,
//! or a 200 of the same total length whose first `<next>` bytes are then skipped (a server that
//! ignores `Range`). Anything else ends the download: the object changed or the server is
//! confused, and neither gets better by guessing (object_store's `retry_stream` does the same).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use reqwest::Method;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use url::Url;

use super::{error_chain, header_text, sign, AcsError, Inner, TransportKind};
use crate::retry::Backoff;

/// Chunks buffered between the network and the consumer. With hyper's reads of at most a few
/// hundred KiB, this keeps a download's memory small whatever the object's size.
const CHANNEL_DEPTH: usize = 2;

/// The bytes a download asks for: from `start` up to `end` (exclusive), or to the object's
/// end when `end` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// The first byte.
    pub start: u64,
    /// The byte after the last one, if not the object's end.
    pub end: Option<u64>,
}

impl ByteRange {
    /// From `start` to the object's end.
    pub fn from_offset(start: u64) -> ByteRange {
        ByteRange { start, end: None }
    }

    /// The `Range` header value, if the range is not the whole object (`end` is inclusive
    /// there).
    pub(crate) fn header(&self) -> Option<String> {
        match self.end {
            Some(end) => Some(format!(
                "bytes={}-{}",
                self.start,
                end.max(self.start + 1) - 1
            )),
            None if self.start > 0 => Some(format!("bytes={}-", self.start)),
            None => None,
        }
    }
}

/// A download in progress. `stream` yields the object's bytes from `offset` to the end of the
/// range asked for, in order, each exactly once; an `Err` item is the last item.
pub struct Download {
    /// The whole object's length (not just what remains after `offset`).
    pub total_len: u64,
    /// Where the stream starts.
    pub offset: u64,
    /// The first response's `Content-Type`.
    pub content_type: Option<String>,
    /// The bytes.
    pub stream: BoxStream<'static, Result<Bytes, AcsError>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("total_len", &self.total_len)
            .field("offset", &self.offset)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// A parsed `Content-Range` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentRange {
    /// `bytes first-last/total` (`total` is `None` for `*`).
    Bytes {
        first: u64,
        last: u64,
        total: Option<u64>,
    },
    /// `bytes */total`, sent with 416.
    Unsatisfied { total: u64 },
}

/// Parses `bytes <first>-<last>/<total|*>` or `bytes */<total>`; `None` when malformed.
pub(crate) fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let (range, total) = rest.trim_start().split_once('/')?;
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let total = match total.trim() {
        "*" => None,
        t => Some(number(t)?),
    };
    if range.trim() == "*" {
        return Some(ContentRange::Unsatisfied { total: total? });
    }
    let (first, last) = range.split_once('-')?;
    let (first, last) = (number(first)?, number(last)?);
    if last < first || total.is_some_and(|t| last >= t) {
        return None;
    }
    Some(ContentRange::Bytes { first, last, total })
}

/// Which bytes of the object a response body holds: `start..end` of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: u64,
    pub end: u64,
    pub total: u64,
}

/// Why a response cannot continue the download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SpanError {
    /// A success status with no bytes: transient, per the ACS reports.
    Empty,
    /// The response does not continue what was received: permanent.
    Mismatch(String),
}

/// Checks a response to a read from byte `next` (with `Range: bytes=<next>-` when `next > 0`)
/// against what is known of the object, and says which bytes its body holds.
pub(crate) fn response_span(
    status: u16,
    content_range: Option<&str>,
    content_length: Option<u64>,
    next: u64,
    known_total: Option<u64>,
) -> Result<Span, SpanError> {
    let mismatch = |s: String| Err(SpanError::Mismatch(s));
    let same_total = |total: u64| known_total.is_none_or(|k| k == total);
    match status {
        206 => match content_range.map(parse_content_range) {
            Some(Some(ContentRange::Bytes {
                first,
                last,
                total: Some(total),
            })) => {
                if first != next {
                    return mismatch(format!("206 Content-Range starting at byte {first}"));
                }
                if !same_total(total) {
                    return mismatch(format!(
                        "206 for an object of {total} bytes, not {}",
                        known_total.unwrap_or_default()
                    ));
                }
                if content_length.is_some_and(|n| n != last - first + 1) {
                    return mismatch(format!(
                        "206 for bytes {first}-{last} with a Content-Length of {}",
                        content_length.unwrap_or_default()
                    ));
                }
                Ok(Span {
                    start: first,
                    end: last + 1,
                    total,
                })
            }
            Some(Some(_)) => mismatch("206 without a known total length".into()),
            Some(None) => mismatch("206 with a malformed Content-Range".into()),
            None => mismatch("206 without Content-Range".into()),
        },
        416 => match content_range.and_then(parse_content_range) {
            Some(ContentRange::Unsatisfied { total }) if total == next && same_total(total) => {
                Ok(Span {
                    start: next,
                    end: next,
                    total,
                })
            }
            _ => mismatch("416 Range Not Satisfiable".into()),
        },
        204 => Err(SpanError::Empty),
        _ => match content_length {
            Some(0) => Err(SpanError::Empty),
            None => mismatch(format!(
                "{status} without Content-Length, so a cut could not be detected"
            )),
            Some(len) if !same_total(len) => mismatch(format!(
                "{status} for an object of {len} bytes, not {}",
                known_total.unwrap_or_default()
            )),
            Some(len) if next > len => {
                mismatch(format!("{status} for an object of only {len} bytes"))
            }
            Some(len) => Ok(Span {
                start: 0,
                end: len,
                total: len,
            }),
        },
    }
}

/// The first response's facts, handed to [`start`].
struct Head {
    total: u64,
    content_type: Option<String>,
}

/// Where results go: the head once, then data.
struct Sink {
    head: Option<oneshot::Sender<Result<Head, AcsError>>>,
    data: mpsc::Sender<Result<Bytes, AcsError>>,
}

impl Sink {
    async fn fail(mut self, error: AcsError) {
        match self.head.take() {
            Some(head) => drop(head.send(Err(error))),
            None => drop(self.data.send(Err(error)).await),
        }
    }

    /// Resolves when nobody is listening any more.
    async fn closed(&mut self) {
        match &mut self.head {
            Some(head) => head.closed().await,
            None => self.data.closed().await,
        }
    }
}

/// Starts the download task and waits for its first response.
pub(crate) async fn start(
    inner: Arc<Inner>,
    url: Url,
    range: ByteRange,
) -> Result<Download, AcsError> {
    let offset = range.start;
    let host = sign::authority(&url);
    let (head_tx, head_rx) = oneshot::channel();
    let (data_tx, data_rx) = mpsc::channel(CHANNEL_DEPTH);
    // The task logs resumptions under the span of the chunk that started it.
    tokio::spawn(
        run(
            inner,
            url,
            range,
            Sink {
                head: Some(head_tx),
                data: data_tx,
            },
        )
        .in_current_span(),
    );
    let head = head_rx.await.map_err(|_| AcsError::Transport {
        host,
        kind: TransportKind::Other,
        detail: "the download task ended without an answer".into(),
        attempts: 0,
    })??;
    let stream = futures_util::stream::unfold(data_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed();
    Ok(Download {
        total_len: head.total,
        offset,
        content_type: head.content_type,
        stream,
    })
}

/// What one request achieved.
enum Outcome {
    /// Every byte was delivered.
    Finished,
    /// The consumer went away.
    ConsumerGone,
    /// The server answered a shorter range than asked, completely: ask for the rest.
    Partial,
    /// The request failed, possibly after delivering some bytes.
    Failed { error: AcsError, progressed: bool },
}

/// Bytes delivered so far.
struct Progress {
    next: u64,
    /// The end of the range asked for, if not the object's end.
    end: Option<u64>,
    total: Option<u64>,
}

impl Progress {
    /// Where delivery stops, once the object's length is known.
    fn stop(&self, total: u64) -> u64 {
        self.end.map_or(total, |end| end.min(total))
    }
}

async fn run(inner: Arc<Inner>, url: Url, range: ByteRange, mut sink: Sink) {
    let host = sign::authority(&url);
    let jitter = inner.jitter.clone();
    let policy = inner.options.retry;
    let mut backoff = Backoff::new(policy, &*jitter);
    let mut progress = Progress {
        next: range.start,
        end: range.end,
        total: None,
    };
    let mut attempts = 0u32;
    let mut resumes = 0u32;
    loop {
        attempts += 1;
        let (error, progressed) = match attempt(&inner, &url, &host, &mut progress, &mut sink).await
        {
            Outcome::Finished | Outcome::ConsumerGone => return,
            Outcome::Partial => {
                backoff = Backoff::new(policy, &*jitter);
                continue;
            }
            Outcome::Failed { error, progressed } => (error, progressed),
        };
        if !error.is_transient() {
            return sink.fail(error.with_attempts(attempts)).await;
        }
        if progressed {
            resumes += 1;
            if resumes > inner.options.max_resumes {
                return sink.fail(error.with_attempts(attempts)).await;
            }
            // Progress earns a fresh budget: the deadline bounds time without progress.
            backoff = Backoff::new(policy, &*jitter);
        }
        let Some(delay) = backoff.next_delay(error.retry_after()) else {
            return sink.fail(error.with_attempts(attempts)).await;
        };
        tracing::debug!(%host, error = %error, attempt = attempts, next = progress.next, ?delay, "ACS download interrupted; resuming");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = sink.closed() => return,
        }
    }
}

async fn attempt(
    inner: &Inner,
    url: &Url,
    host: &str,
    progress: &mut Progress,
    sink: &mut Sink,
) -> Outcome {
    let failed = |error: AcsError, progressed: bool| Outcome::Failed { error, progressed };
    let response = tokio::select! {
        r = inner.send(Method::GET, url, Some(ByteRange { start: progress.next, end: progress.end })) => r,
        _ = sink.closed() => return Outcome::ConsumerGone,
    };
    let response = match response {
        Ok(r) => r,
        Err(e) => return failed(e, false),
    };
    let status = response.status().as_u16();
    let headers = response.headers();
    let request_id = header_text(headers, "x-ms-request-id");
    let content_range = header_text(headers, "content-range");
    let span = match response_span(
        status,
        content_range.as_deref(),
        response.content_length(),
        progress.next,
        progress.total,
    ) {
        Ok(span) => span,
        Err(SpanError::Empty) => {
            let error = AcsError::EmptyBody {
                host: host.to_string(),
                status,
                request_id,
                attempts: 0,
            };
            return failed(error, false);
        }
        Err(SpanError::Mismatch(detail)) => {
            let error = AcsError::BadContentRange {
                host: host.to_string(),
                expected_start: progress.next,
                detail,
                request_id,
                attempts: 0,
            };
            return failed(error, false);
        }
    };
    progress.total = Some(span.total);
    if let Some(head) = sink.head.take() {
        let content_type = header_text(headers, "content-type");
        if head
            .send(Ok(Head {
                total: span.total,
                content_type,
            }))
            .is_err()
        {
            return Outcome::ConsumerGone;
        }
    }
    let stop = progress.stop(span.total);
    if progress.next >= stop {
        return Outcome::Finished;
    }

    // A 200 to a ranged request starts at 0: skip what was already delivered.
    let mut skip = progress.next - span.start;
    let mut position = span.start;
    let mut progressed = false;
    let read_timeout = inner.options.read_timeout;
    let mut body = response.bytes_stream();
    loop {
        let item = tokio::select! {
            item = tokio::time::timeout(read_timeout, body.next()) => item,
            _ = sink.data.closed() => return Outcome::ConsumerGone,
        };
        let mut chunk = match item {
            Err(_) => {
                let error = AcsError::Transport {
                    host: host.to_string(),
                    kind: TransportKind::ReadTimeout,
                    detail: format!("no bytes for {read_timeout:?} at byte {}", progress.next),
                    attempts: 0,
                };
                return failed(error, progressed);
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let error = AcsError::Truncated {
                    host: host.to_string(),
                    received: progress.next,
                    expected: span.total,
                    detail: error_chain(&e.without_url()),
                    attempts: 0,
                };
                return failed(error, progressed);
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        position += chunk.len() as u64;
        if position > span.end {
            let error = AcsError::BadContentRange {
                host: host.to_string(),
                expected_start: progress.next,
                detail: format!("more than the {} bytes it declared", span.end - span.start),
                request_id: None,
                attempts: 0,
            };
            return failed(error, progressed);
        }
        if skip > 0 {
            let n = skip.min(chunk.len() as u64);
            chunk = chunk.slice(n as usize..);
            skip -= n;
            if chunk.is_empty() {
                continue;
            }
        }
        // A server that ignores `Range`, or answers more than asked, is read only up to the
        // range's end; the rest of its body is dropped with the connection.
        let room = stop - progress.next;
        if chunk.len() as u64 > room {
            chunk.truncate(room as usize);
        }
        let len = chunk.len() as u64;
        if sink.data.send(Ok(chunk)).await.is_err() {
            return Outcome::ConsumerGone;
        }
        progress.next += len;
        progressed = true;
        if progress.next == stop {
            return Outcome::Finished;
        }
    }
    if progress.next == stop {
        Outcome::Finished
    } else if progress.next == span.end {
        Outcome::Partial
    } else {
        let error = AcsError::Truncated {
            host: host.to_string(),
            received: progress.next,
            expected: span.total,
            detail: "the body ended early".into(),
            attempts: 0,
        };
        failed(error, progressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_ask_for_what_is_left_of_them() {
        assert_eq!(ByteRange::from_offset(0).header(), None);
        assert_eq!(
            ByteRange::from_offset(10).header().as_deref(),
            Some("bytes=10-")
        );
        let range = ByteRange {
            start: 4096,
            end: Some(8192),
        };
        assert_eq!(range.header().as_deref(), Some("bytes=4096-8191"));
        let progress = Progress {
            next: 5000,
            end: range.end,
            total: None,
        };
        assert_eq!(progress.stop(6000), 6000, "the object ends first");
        assert_eq!(progress.stop(10_000), 8192);
    }

    #[test]
    fn content_range_forms_parse() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some(ContentRange::Bytes {
                first: 100,
                last: 199,
                total: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("bytes 0-0/*"),
            Some(ContentRange::Bytes {
                first: 0,
                last: 0,
                total: None
            })
        );
        assert_eq!(
            parse_content_range("bytes */1000"),
            Some(ContentRange::Unsatisfied { total: 1000 })
        );
        for bad in [
            "",
            "bytes",
            "bytes 1-2",
            "bytes=1-2/3",
            "items 1-2/3",
            "bytes 2-1/3",
            "bytes 1-3/3",
            "bytes -1-2/3",
            "bytes 1-2/x",
            "bytes */*",
            "bytes 18446744073709551616-1/2",
            "bytes1-2/3",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_206_must_continue_at_the_next_byte_with_the_same_total() {
        let ok = response_span(206, Some("bytes 500-999/1000"), Some(500), 500, Some(1000));
        assert_eq!(
            ok,
            Ok(Span {
                start: 500,
                end: 1000,
                total: 1000
            })
        );
        // The first answer fixes the total.
        assert_eq!(
            response_span(206, Some("bytes 0-999/1000"), None, 0, None),
            Ok(Span {
                start: 0,
                end: 1000,
                total: 1000
            })
        );
        // A shorter range than asked is fine: the rest is asked for next.
        assert_eq!(
            response_span(206, Some("bytes 500-599/1000"), Some(100), 500, Some(1000)),
            Ok(Span {
                start: 500,
                end: 600,
                total: 1000
            })
        );
        for (cr, len) in [
            (Some("bytes 0-999/1000"), None),    // from the start again
            (Some("bytes 499-999/1000"), None),  // one byte early
            (Some("bytes 500-1499/1500"), None), // the object changed length
            (Some("bytes 500-999/*"), None),     // unknown total
            (Some("bytes 500-999/1000"), Some(10)),
            (Some("garbage"), None),
            (None, None),
        ] {
            assert!(
                matches!(
                    response_span(206, cr, len, 500, Some(1000)),
                    Err(SpanError::Mismatch(_))
                ),
                "{cr:?} {len:?}"
            );
        }
    }

    #[test]
    fn a_200_counts_from_zero_and_must_have_the_same_length() {
        assert_eq!(
            response_span(200, None, Some(1000), 500, Some(1000)),
            Ok(Span {
                start: 0,
                end: 1000,
                total: 1000
            })
        );
        assert!(matches!(
            response_span(200, None, Some(999), 500, Some(1000)),
            Err(SpanError::Mismatch(_))
        ));
        assert!(matches!(
            response_span(200, None, None, 0, None),
            Err(SpanError::Mismatch(_))
        ));
        assert!(matches!(
            response_span(200, None, Some(10), 20, None),
            Err(SpanError::Mismatch(_))
        ));
        assert_eq!(
            response_span(200, None, Some(0), 0, None),
            Err(SpanError::Empty)
        );
        assert_eq!(
            response_span(204, None, None, 0, None),
            Err(SpanError::Empty)
        );
    }

    #[test]
    fn a_416_at_the_end_means_nothing_left() {
        assert_eq!(
            response_span(416, Some("bytes */1000"), None, 1000, None),
            Ok(Span {
                start: 1000,
                end: 1000,
                total: 1000
            })
        );
        assert!(matches!(
            response_span(416, Some("bytes */1000"), None, 2000, None),
            Err(SpanError::Mismatch(_))
        ));
        assert!(matches!(
            response_span(416, None, None, 1000, None),
            Err(SpanError::Mismatch(_))
        ));
    }
}
