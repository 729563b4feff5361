//! The XML the Storage services speak, read and written by hand: a tag scanner for their flat
//! answers, the `<Error>` body every service shares, and escaping for the text we send.
//!
//! A small scanner rather than `quick-xml`: the answers are flat, fixed shapes with no
//! attributes or namespaces we need, so a hundred tested lines cost less than a dependency and
//! its build time. It rejects mismatched tags rather than guessing. The Blob and Queue shapes
//! (block lists, message ids) are read over [`events`] in their own modules.

use std::borrow::Cow;

/// One piece of an XML document.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    Start(&'a str),
    End(&'a str),
    Text(Cow<'a, str>),
}

/// Why a document could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed XML: {0}")]
pub(crate) struct XmlError(pub(crate) &'static str);

/// Splits `xml` into start tags, end tags and non-blank text, checking that tags nest. A
/// self-closing tag gives a start and an end; declarations, comments and DOCTYPEs are skipped.
pub(crate) fn events(xml: &str) -> Result<Vec<Event<'_>>, XmlError> {
    let mut rest = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let mut out = Vec::new();
    let mut open: Vec<&str> = Vec::new();
    while !rest.is_empty() {
        let lt = rest.find('<').unwrap_or(rest.len());
        let text = &rest[..lt];
        if !text.trim().is_empty() {
            out.push(Event::Text(unescape(text)?));
        }
        rest = &rest[lt..];
        if rest.is_empty() {
            break;
        }
        let (skip_to, terminator) = if rest.starts_with("<?") {
            (None, "?>")
        } else if rest.starts_with("<!--") {
            (None, "-->")
        } else if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
            let end = cdata.find("]]>").ok_or(XmlError("unterminated CDATA"))?;
            out.push(Event::Text(Cow::Borrowed(&cdata[..end])));
            rest = &cdata[end + 3..];
            continue;
        } else if rest.starts_with("<!") {
            (None, ">")
        } else {
            (Some(()), ">")
        };
        let end = rest.find(terminator).ok_or(XmlError("unterminated tag"))?;
        let tag = &rest[1..end];
        rest = &rest[end + terminator.len()..];
        if skip_to.is_none() {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim();
            if open.pop() != Some(name) {
                return Err(XmlError("mismatched end tag"));
            }
            out.push(Event::End(name));
        } else {
            let self_closing = tag.ends_with('/');
            let tag = tag.strip_suffix('/').unwrap_or(tag);
            let name = tag.split_whitespace().next().ok_or(XmlError("empty tag"))?;
            out.push(Event::Start(name));
            if self_closing {
                out.push(Event::End(name));
            } else {
                open.push(name);
            }
        }
    }
    if open.is_empty() {
        Ok(out)
    } else {
        Err(XmlError("unclosed element"))
    }
}

fn unescape(text: &str) -> Result<Cow<'_, str>, XmlError> {
    if !text.contains('&') {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..]
            .find(';')
            .ok_or(XmlError("unterminated entity"))?
            + amp;
        let entity = &rest[amp + 1..semi];
        let ch = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else {
                    entity.strip_prefix('#').and_then(|d| d.parse().ok())
                };
                code.and_then(char::from_u32)
                    .ok_or(XmlError("unknown entity"))?
            }
        };
        out.push(ch);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// `<Error><Code>..</Code><Message>..</Message></Error>`: the code and the first line of the
/// message (later lines repeat the request id and time). `None` when the body is not that.
pub(crate) fn parse_error(xml: &str) -> Option<(Option<String>, Option<String>)> {
    let events = events(xml).ok()?;
    if events.first() != Some(&Event::Start("Error")) {
        return None;
    }
    let (mut code, mut message) = (None, None);
    let mut current = "";
    for event in events {
        match event {
            Event::Start(tag) => current = tag,
            Event::End(_) => current = "",
            Event::Text(text) if current == "Code" => code = Some(text.trim().to_string()),
            Event::Text(text) if current == "Message" => {
                message = text.lines().next().map(|l| l.trim().to_string())
            }
            Event::Text(_) => {}
        }
    }
    Some((code, message))
}

/// The text of the first `<name>` element, unescaped: for answers that carry one value
/// (Put Message's `<MessageId>`). `None` when the document is malformed or has no such element.
pub(crate) fn element_text(xml: &str, name: &str) -> Option<String> {
    let events = events(xml).ok()?;
    let mut inside = false;
    for event in events {
        match event {
            Event::Start(tag) => inside = tag == name,
            Event::Text(text) if inside => return Some(text.trim().to_string()),
            Event::End(tag) if tag == name => return Some(String::new()),
            _ => inside = false,
        }
    }
    None
}

/// Escapes the five XML special characters, for text we put inside an element.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.bytes().map(escape_extra).sum::<usize>());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// How many bytes [`escape`] adds for `b`, so a size can be known before escaping.
pub(crate) fn escape_extra(b: u8) -> usize {
    match b {
        b'&' => 4,
        b'<' | b'>' => 3,
        b'"' | b'\'' => 5,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_gives_code_and_first_message_line() {
        let xml = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobAlreadyExists</Code>\
            <Message>The specified blob already exists &amp; stays.\nRequestId:8a1f\nTime:2022-04-13T18:09:12Z</Message></Error>";
        assert_eq!(
            parse_error(xml),
            Some((
                Some("BlobAlreadyExists".into()),
                Some("The specified blob already exists & stays.".into())
            ))
        );
        assert_eq!(parse_error("Service Unavailable"), None);
        assert_eq!(parse_error(""), None);
        assert_eq!(parse_error("<BlockList></BlockList>"), None);
    }

    #[test]
    fn entities_and_cdata_are_decoded() {
        assert_eq!(unescape("a&lt;b&#x41;&#66;").unwrap(), "a<bAB");
        assert!(unescape("a&bogus;").is_err());
        let ev = events("<a><![CDATA[<x>]]></a>").unwrap();
        assert_eq!(ev[1], Event::Text(Cow::Borrowed("<x>")));
        assert!(events("<a><b></a></b>").is_err());
    }

    #[test]
    fn element_text_reads_the_first_match_unescaped() {
        let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList><QueueMessage>\
            <MessageId>a1&amp;b2</MessageId><InsertionTime>x</InsertionTime></QueueMessage></QueueMessagesList>";
        assert_eq!(element_text(body, "MessageId").as_deref(), Some("a1&b2"));
        assert_eq!(
            element_text("<a><MessageId/></a>", "MessageId").as_deref(),
            Some("")
        );
        assert_eq!(element_text("<nope/>", "MessageId"), None);
        assert_eq!(element_text("<MessageId>unclosed", "MessageId"), None);
    }

    #[test]
    fn escaping_covers_the_five_specials_and_its_size_is_known_ahead() {
        let text = r#"{"a":"<b>&'"}"#;
        let escaped = escape(text);
        assert_eq!(escaped, "{&quot;a&quot;:&quot;&lt;b&gt;&amp;&apos;&quot;}");
        assert_eq!(
            escaped.len(),
            text.len() + text.bytes().map(escape_extra).sum::<usize>()
        );
        assert_eq!(
            element_text(&format!("<t>{escaped}</t>"), "t").as_deref(),
            Some(text)
        );
    }
}
