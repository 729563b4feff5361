//! The few XML documents of the Queue REST API: message lists, error bodies and the Put
//! Message body. Pure; a tag scanner is enough for these flat, service-generated documents.

use std::time::SystemTime;

/// One message as the service lists it (Get, Peek or Put Message). Absent fields are empty
/// (`pop_receipt`, `text`), 0 (`dequeue_count`) or `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// `MessageId`.
    pub id: String,
    /// `PopReceipt`: needed to delete or update a message got with Get Messages.
    pub pop_receipt: String,
    /// `DequeueCount`: how many times the message has been handed out, this time included.
    pub dequeue_count: u32,
    /// `InsertionTime`.
    pub insertion_time: Option<SystemTime>,
    /// `ExpirationTime`.
    pub expiration_time: Option<SystemTime>,
    /// `TimeNextVisible`.
    pub next_visible: Option<SystemTime>,
    /// `MessageText` as stored (still base64 when the sender encoded it), XML-unescaped.
    pub text: String,
}

/// Every `<QueueMessage>` of a `<QueueMessagesList>`.
pub fn parse_messages(xml: &str) -> Vec<QueueMessage> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some((inner, after)) = element(rest, "QueueMessage") {
        let time = |tag| element_text(inner, tag).and_then(|t| httpdate::parse_http_date(&t).ok());
        out.push(QueueMessage {
            id: element_text(inner, "MessageId").unwrap_or_default(),
            pop_receipt: element_text(inner, "PopReceipt").unwrap_or_default(),
            dequeue_count: element_text(inner, "DequeueCount")
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
            insertion_time: time("InsertionTime"),
            expiration_time: time("ExpirationTime"),
            next_visible: time("TimeNextVisible"),
            text: element_text(inner, "MessageText").unwrap_or_default(),
        });
        rest = after;
    }
    out
}

/// `(Code, Message)` of a service error body, when present.
pub fn parse_error(xml: &str) -> (Option<String>, Option<String>) {
    (element_text(xml, "Code"), element_text(xml, "Message"))
}

/// The Put Message body for `text` (already encoded as the receiver expects).
pub fn put_message_body(text: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessage><MessageText>{}</MessageText></QueueMessage>",
        escape(text)
    )
}

/// The content of the first `<tag>...</tag>` (or `<tag/>`: empty) and what follows it.
fn element<'a>(xml: &'a str, tag: &str) -> Option<(&'a str, &'a str)> {
    let open = format!("<{tag}");
    let mut from = 0;
    loop {
        let start = from + xml[from..].find(&open)?;
        let after_name = start + open.len();
        let rest = &xml[after_name..];
        // `<QueueMessagesList>` also starts with `<QueueMessage`: require the name to end.
        match rest.chars().next() {
            Some('>') => {
                let body = &rest[1..];
                let close = format!("</{tag}>");
                let end = body.find(&close)?;
                return Some((&body[..end], &body[end + close.len()..]));
            }
            Some('/') if rest[1..].starts_with('>') => return Some(("", &rest[2..])),
            Some(c) if c.is_whitespace() => {
                let gt = rest.find('>')?;
                if rest[..gt].ends_with('/') {
                    return Some(("", &rest[gt + 1..]));
                }
                let body = &rest[gt + 1..];
                let close = format!("</{tag}>");
                let end = body.find(&close)?;
                return Some((&body[..end], &body[end + close.len()..]));
            }
            _ => from = after_name,
        }
    }
}

fn element_text(xml: &str, tag: &str) -> Option<String> {
    element(xml, tag).map(|(inner, _)| unescape(inner))
}

/// XML-escapes text content.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
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

/// Resolves the five predefined entities and numeric character references.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let Some(semi) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_messages_list_is_parsed() {
        let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList><QueueMessage>\
            <MessageId>5974b586-0df3-4e2d-ad0c-18e3892bfca2</MessageId>\
            <InsertionTime>Fri, 09 Oct 2009 21:04:30 GMT</InsertionTime>\
            <ExpirationTime>Fri, 16 Oct 2009 21:04:30 GMT</ExpirationTime>\
            <PopReceipt>YzQ4Yzg1MDIGM0MDFiZDAwYzEw</PopReceipt>\
            <TimeNextVisible>Fri, 09 Oct 2009 23:29:20 GMT</TimeNextVisible>\
            <DequeueCount>2</DequeueCount>\
            <MessageText>{&quot;a&quot;:&#60;1&gt;}</MessageText></QueueMessage>\
            <QueueMessage><MessageId>two</MessageId><MessageText/></QueueMessage></QueueMessagesList>";
        let list = parse_messages(xml);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].id, "5974b586-0df3-4e2d-ad0c-18e3892bfca2");
        assert_eq!(list[0].pop_receipt, "YzQ4Yzg1MDIGM0MDFiZDAwYzEw");
        assert_eq!(list[0].dequeue_count, 2);
        assert_eq!(list[0].text, "{\"a\":<1>}");
        assert_eq!(
            list[0].insertion_time,
            Some(httpdate::parse_http_date("Fri, 09 Oct 2009 21:04:30 GMT").unwrap())
        );
        assert_eq!(list[1].id, "two");
        assert_eq!(list[1].text, "");
        assert!(parse_messages("<QueueMessagesList />").is_empty());
        assert!(parse_messages("<QueueMessagesList></QueueMessagesList>").is_empty());
    }

    #[test]
    fn error_body_gives_code_and_message() {
        let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>QueueNotFound</Code>\
                   <Message>The specified queue does not exist.\nRequestId:1</Message></Error>";
        let (code, message) = parse_error(xml);
        assert_eq!(code.as_deref(), Some("QueueNotFound"));
        assert!(message.unwrap().starts_with("The specified queue"));
    }

    #[test]
    fn message_text_round_trips_through_escaping() {
        let text = r#"{"k":"<a & 'b'>"}"#;
        let body = put_message_body(text);
        assert!(!body.contains(r#""k""#));
        assert_eq!(element_text(&body, "MessageText").unwrap(), text);
    }
}
