//! The Blob service's own XML: the Put Block List body and the Get Block List answer, read
//! with the Storage scanner ([`crate::storage::xml`]).

use crate::storage::xml::{events, Event, XmlError};

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

/// Reads a List Blobs or Find Blobs by Tags answer (one shape):
/// `<EnumerationResults><Blobs><Blob><Name>..</Name>...</Blob></Blobs><NextMarker>..</NextMarker>`,
/// giving the blob names and the marker of the next page (`None` on the last page).
pub(crate) fn parse_blob_names(xml: &str) -> Result<(Vec<String>, Option<String>), XmlError> {
    let events = events(xml)?;
    if events.first() != Some(&Event::Start("EnumerationResults")) {
        return Err(XmlError("not an enumeration result"));
    }
    let (mut names, mut marker) = (Vec::new(), None);
    let mut path: Vec<&str> = Vec::new();
    for event in events {
        match event {
            Event::Start(tag) => path.push(tag),
            Event::End(_) => {
                path.pop();
            }
            Event::Text(text) => match path.as_slice() {
                ["EnumerationResults", "Blobs", "Blob", "Name"] => names.push(text.into_owned()),
                ["EnumerationResults", "NextMarker"] if !text.trim().is_empty() => {
                    marker = Some(text.trim().to_string())
                }
                _ => {}
            },
        }
    }
    Ok((names, marker))
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
    fn tagged_blobs_and_the_next_marker_are_read() {
        let xml = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults \
            ServiceEndpoint=\"http://127.0.0.1:10000/devstoreaccount1\" ContainerName=\"rec\">\
            <Where>\"callId\" = &apos;c-1&apos;</Where><Blobs><Blob><Name>a/000 x&amp;y.mp4</Name>\
            <ContainerName>rec</ContainerName><Tags><TagSet><Tag><Key>callId</Key><Value>c-1</Value>\
            </Tag></TagSet></Tags></Blob><Blob><Name>a/000.mp4.json</Name></Blob></Blobs>\
            <NextMarker>2!72!MDAw</NextMarker></EnumerationResults>";
        let (names, marker) = parse_blob_names(xml).unwrap();
        assert_eq!(names, ["a/000 x&y.mp4", "a/000.mp4.json"]);
        assert_eq!(marker.as_deref(), Some("2!72!MDAw"));
        let last = "<EnumerationResults><Blobs/><NextMarker/></EnumerationResults>";
        assert_eq!(parse_blob_names(last).unwrap(), (vec![], None));
        assert!(parse_blob_names("<BlockList/>").is_err());
    }

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
    fn commit_body_lists_latest_ids_in_order() {
        assert_eq!(
            block_list_body(["MDAw", "MDAx"]),
            r#"<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>MDAw</Latest><Latest>MDAx</Latest></BlockList>"#
        );
    }
}
