//! The few XML documents the Blob service exchanges with us: the Put Block List body, the Get
//! Block List answer and the `<Error>` body.
//!
//! A small hand parser rather than `quick-xml`: the service's answers are flat, fixed shapes with
//! no attributes or namespaces we need, so a tag scanner of a hundred lines (with unit tests)
//! costs less than a dependency and its build time. It rejects mismatched tags rather than
//! guessing.

use std::borrow::Cow;

/// One piece of an XML document.
#[derive(Debug, PartialEq, Eq)]
enum Event<'a> {
    Start(&'a str),
    End(&'a str),
    Text(Cow<'a, str>),
}

/// Why a document could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed XML: {0}")]
pub(crate) struct XmlError(&'static str);

/// Splits `xml` into start tags, end tags and non-blank text, checking that tags nest. A
/// self-closing tag gives a start and an end; declarations, comments and DOCTYPEs are skipped.
fn events(xml: &str) -> Result<Vec<Event<'_>>, XmlError> {
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

/// Blocks in a Get Block List answer: `(committed, uncommitted)`, each `(base64 name, size)` in
/// the order the service lists them.
pub(crate) type BlockLists = (Vec<(String, u64)>, Vec<(String, u64)>);

/// Reads `<BlockList><CommittedBlocks><Block><Name>..</Name><Size>..</Size></Block>...`.
pub(crate) fn parse_block_list(xml: &str) -> Result<BlockLists, XmlError> {
    let (mut committed, mut uncommitted) = (Vec::new(), Vec::new());
    let mut path: Vec<&str> = Vec::new();
    let (mut name, mut size) = (None, None);
    let events = events(xml)?;
    if events.first() != Some(&Event::Start("BlockList")) {
        return Err(XmlError("not a block list"));
    }
    for event in events {
        match event {
            Event::Start(tag) => {
                if tag == "Block" {
                    (name, size) = (None, None);
                }
                path.push(tag);
            }
            Event::End(tag) => {
                path.pop();
                if tag != "Block" {
                    continue;
                }
                let block = (
                    name.take().ok_or(XmlError("block without Name"))?,
                    size.take().ok_or(XmlError("block without Size"))?,
                );
                match path.last() {
                    Some(&"CommittedBlocks") => committed.push(block),
                    Some(&"UncommittedBlocks") => uncommitted.push(block),
                    _ => return Err(XmlError("block outside a block list")),
                }
            }
            Event::Text(text) => match path.as_slice() {
                [.., "Block", "Name"] => name = Some(text.trim().to_string()),
                [.., "Block", "Size"] => {
                    size = Some(
                        text.trim()
                            .parse()
                            .map_err(|_| XmlError("bad block size"))?,
                    )
                }
                _ => {}
            },
        }
    }
    Ok((committed, uncommitted))
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

/// The Put Block List body committing `ids` in order; `Latest` takes each block's newest
/// upload, committed or not. Base64 ids need no escaping.
pub(crate) fn block_list_body<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut body = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
    for id in ids {
        body.push_str("<Latest>");
        body.push_str(id);
        body.push_str("</Latest>");
    }
    body.push_str("</BlockList>");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_list_with_both_sections_in_order() {
        let xml = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<BlockList>\
            <CommittedBlocks><Block><Name>MDAwMDAw</Name><Size>4</Size></Block></CommittedBlocks>\
            <UncommittedBlocks>\n  <Block><Name>MDAwMDAx</Name><Size>1048576</Size></Block>\
            <Block><Size>3</Size><Name>MDAwMDAy</Name></Block></UncommittedBlocks></BlockList>";
        let (committed, uncommitted) = parse_block_list(xml).unwrap();
        assert_eq!(committed, vec![("MDAwMDAw".into(), 4)]);
        assert_eq!(
            uncommitted,
            vec![("MDAwMDAx".into(), 1_048_576), ("MDAwMDAy".into(), 3)]
        );
    }

    #[test]
    fn empty_sections_may_be_self_closing() {
        let xml = r#"<?xml version="1.0"?><BlockList><CommittedBlocks /><UncommittedBlocks/></BlockList>"#;
        assert_eq!(parse_block_list(xml).unwrap(), (vec![], vec![]));
    }

    #[test]
    fn malformed_block_lists_are_errors() {
        for xml in [
            "<BlockList><CommittedBlocks><Block><Name>a</Name></Block></CommittedBlocks></BlockList>",
            "<BlockList><CommittedBlocks><Block><Name>a</Name><Size>x</Size></Block></CommittedBlocks></BlockList>",
            "<BlockList><CommittedBlocks></BlockList>",
            "<BlockList>",
            "<html>hello</html>",
        ] {
            assert!(parse_block_list(xml).is_err(), "{xml}");
        }
    }

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
    }

    #[test]
    fn entities_and_cdata_are_decoded() {
        assert_eq!(unescape("a&lt;b&#x41;&#66;").unwrap(), "a<bAB");
        assert!(unescape("a&bogus;").is_err());
        let ev = events("<a><![CDATA[<x>]]></a>").unwrap();
        assert_eq!(ev[1], Event::Text(Cow::Borrowed("<x>")));
    }

    #[test]
    fn commit_body_lists_latest_ids_in_order() {
        assert_eq!(
            block_list_body(["MDAw", "MDAx"]),
            r#"<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>MDAw</Latest><Latest>MDAx</Latest></BlockList>"#
        );
    }
}
