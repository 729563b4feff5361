//! One function per route. Each runs once the dispatch has authenticated the request, found
//! the recording and drawn the fault it uses up.

use std::io;

use super::dispatch::{json_error, Exchange};
use super::http::{Connection, Keep};
use super::{lock, Content, Fault, RecordingFormat, WRITE_CHUNK};

/// `DELETE` of a recording (either published `deleteLocation` form): marks it deleted.
pub(super) async fn delete(
    conn: &mut Connection,
    mut exchange: Exchange<'_>,
    document_id: &str,
) -> io::Result<Keep> {
    if let Some(r) = lock(&exchange.state.recordings).get_mut(document_id) {
        r.deleted = true;
    }
    exchange
        .answer(conn, 200, "application/json", b"", &[])
        .await
}

/// `GET` of a recording's metadata document.
pub(super) async fn metadata(
    conn: &mut Connection,
    mut exchange: Exchange<'_>,
    body: Vec<u8>,
    fault: Option<&Fault>,
    buf: &mut [u8],
) -> io::Result<Keep> {
    exchange.log(200);
    let mut headers = exchange.ids.clone();
    headers.push(("Content-Type".into(), "application/json".into()));
    headers.push(("Content-Length".into(), body.len().to_string()));
    conn.write_head(200, &headers).await?;
    write_body(
        conn,
        &Source::Static(&body),
        0,
        body.len() as u64,
        fault,
        buf,
    )
    .await
}

/// `GET` of a recording's media: 200, or 206 for a `Range`, unless a fault says otherwise.
pub(super) async fn media(
    conn: &mut Connection,
    mut exchange: Exchange<'_>,
    content: &Content,
    format: RecordingFormat,
    range: Option<&str>,
    fault: Option<&Fault>,
    buf: &mut [u8],
) -> io::Result<Keep> {
    let size = content.size();
    let asked = range.and_then(parse_range);
    let (status, start, end) = match (fault, asked) {
        (Some(Fault::IgnoreRange), _) | (_, None) => (200, 0, size),
        (Some(Fault::RangeFrom(from)), _) => (206, (*from).min(size.saturating_sub(1)), size),
        (_, Some((first, _))) if first >= size => {
            let unsatisfiable = [("Content-Range".to_string(), format!("bytes */{size}"))];
            let body = json_error("RangeNotSatisfiable", "Range not satisfiable.");
            return exchange
                .answer(conn, 416, "application/json", &body, &unsatisfiable)
                .await;
        }
        (_, Some((first, last))) => (206, first, last.map_or(size, |l| (l + 1).min(size))),
    };
    exchange.log(status);
    let mut headers = exchange.ids.clone();
    headers.push(("Content-Type".into(), format.content_type().into()));
    headers.push(("Accept-Ranges".into(), "bytes".into()));
    headers.push(("Content-Length".into(), (end - start).to_string()));
    if status == 206 {
        headers.push((
            "Content-Range".into(),
            format!("bytes {start}-{}/{size}", end - 1),
        ));
    }
    conn.write_head(status, &headers).await?;
    write_body(conn, &Source::Content(content), start, end, fault, buf).await
}

/// `bytes=<first>-[<last>]`; anything else (suffix or multiple ranges) is ignored, as a server
/// may do, and gets the whole object.
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last = match last.trim() {
        "" => None,
        l => Some(l.parse::<u64>().ok().filter(|l| *l >= first)?),
    };
    Some((first, last))
}

enum Source<'a> {
    Static(&'a [u8]),
    Content(&'a Content),
}

/// Writes `[start, end)` of `source`, shaped by a cut or trickle fault.
async fn write_body(
    conn: &mut Connection,
    source: &Source<'_>,
    start: u64,
    end: u64,
    fault: Option<&Fault>,
    buf: &mut [u8],
) -> std::io::Result<Keep> {
    let (limit, piece, pause) = match fault {
        Some(Fault::CutAfter(n)) => (start.saturating_add(*n).min(end), WRITE_CHUNK, None),
        Some(Fault::Trickle { chunk, interval }) => {
            (end, (*chunk).clamp(1, WRITE_CHUNK), Some(*interval))
        }
        _ => (end, WRITE_CHUNK, None),
    };
    let mut pos = start;
    while pos < limit {
        let want = ((limit - pos) as usize).min(piece);
        let n = match source {
            Source::Static(bytes) => {
                let from = pos as usize;
                buf[..want].copy_from_slice(&bytes[from..from + want]);
                want
            }
            Source::Content(content) => content.read_at(pos, &mut buf[..want]),
        };
        if n == 0 {
            break;
        }
        conn.write_body(&buf[..n]).await?;
        pos += n as u64;
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    if pos < end {
        // The declared length was not delivered: end the connection so the client sees the cut.
        use tokio::io::AsyncWriteExt;
        let _ = conn.stream.shutdown().await;
        return Ok(Keep::Close);
    }
    Ok(Keep::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_a_simple_server() {
        assert_eq!(parse_range("bytes=10-"), Some((10, None)));
        assert_eq!(parse_range("bytes=10-19"), Some((10, Some(19))));
        assert_eq!(parse_range("bytes=-5"), None);
        assert_eq!(parse_range("bytes=1-2,4-5"), None);
        assert_eq!(parse_range("bytes=9-1"), None);
    }
}
