//! [`Payload`]: a request body made of the `Bytes` it arrived in, sent part after part with
//! its exact `Content-Length`, never joined into one buffer.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

/// A body of one or more `Bytes` parts. A block of a download is the network's reads as they
/// came, so staging it copies nothing; cloning it (a retry, the hasher) only counts references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    parts: Vec<Bytes>,
    len: usize,
}

impl Payload {
    /// An empty payload with room for `parts` parts.
    pub fn with_capacity(parts: usize) -> Payload {
        Payload {
            parts: Vec::with_capacity(parts),
            len: 0,
        }
    }

    /// Appends `part` (an empty one is left out).
    pub fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.len += part.len();
            self.parts.push(part);
        }
    }

    /// Bytes in all parts.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The body reqwest sends. One part stays a plain (reusable) body; several go through
    /// [`Parts`], whose exact size hint keeps the request length-delimited: Put Block refuses
    /// `Transfer-Encoding: chunked`.
    pub(crate) fn into_body(mut self) -> reqwest::Body {
        match self.parts.len() {
            0 => reqwest::Body::from(Bytes::new()),
            1 => reqwest::Body::from(self.parts.remove(0)),
            _ => reqwest::Body::wrap(Parts {
                remaining: self.len as u64,
                parts: self.parts.into_iter(),
            }),
        }
    }
}

impl From<Bytes> for Payload {
    fn from(part: Bytes) -> Payload {
        let mut payload = Payload::with_capacity(1);
        payload.push(part);
        payload
    }
}

impl From<Vec<Bytes>> for Payload {
    fn from(parts: Vec<Bytes>) -> Payload {
        let mut payload = Payload::with_capacity(parts.len());
        parts.into_iter().for_each(|p| payload.push(p));
        payload
    }
}

/// A payload being sent: one data frame per part.
struct Parts {
    parts: std::vec::IntoIter<Bytes>,
    remaining: u64,
}

impl hyper::body::Body for Parts {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let part = self.parts.next();
        if let Some(part) = &part {
            self.remaining -= part.len() as u64;
        }
        Poll::Ready(part.map(|p| Ok(Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    #[test]
    fn parts_are_kept_apart_and_empty_ones_left_out() {
        let p = Payload::from(vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ]);
        assert_eq!(p.len(), 5);
        assert_eq!(p.parts().len(), 2);
        assert!(Payload::from(Bytes::new()).is_empty());
    }

    #[test]
    fn a_body_of_several_parts_has_an_exact_size_all_along() {
        let p = Payload::from(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cde")]);
        let body = p.into_body();
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(body.as_bytes().is_none(), "sent part by part, not joined");
    }
}
