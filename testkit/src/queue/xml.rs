//! The few XML documents of the Queue REST API: message lists, error bodies and the Put
//! Message body. Pure.

use std::time::SystemTime;

use serde::Deserialize;

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

/// `<QueueMessagesList>` of Get, Peek and Put Message.
#[derive(Deserialize)]
struct QueueMessagesList {
    #[serde(rename = "QueueMessage", default)]
    messages: Vec<ListedMessage>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ListedMessage {
    message_id: String,
    pop_receipt: String,
    dequeue_count: Option<String>,
    insertion_time: Option<String>,
    expiration_time: Option<String>,
    time_next_visible: Option<String>,
    message_text: String,
}

/// A service error body.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// Every `<QueueMessage>` of a `<QueueMessagesList>` (none when the body is not one).
pub fn parse_messages(xml: &str) -> Vec<QueueMessage> {
    let Ok(list) = quick_xml::de::from_str::<QueueMessagesList>(without_bom(xml)) else {
        return Vec::new();
    };
    let time = |t: Option<String>| t.and_then(|t| httpdate::parse_http_date(t.trim()).ok());
    list.messages
        .into_iter()
        .map(|m| QueueMessage {
            id: m.message_id,
            pop_receipt: m.pop_receipt,
            dequeue_count: m
                .dequeue_count
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
            insertion_time: time(m.insertion_time),
            expiration_time: time(m.expiration_time),
            next_visible: time(m.time_next_visible),
            text: m.message_text,
        })
        .collect()
}

/// `(Code, Message)` of a service error body, when present.
pub fn parse_error(xml: &str) -> (Option<String>, Option<String>) {
    match quick_xml::de::from_str::<ErrorBody>(without_bom(xml)) {
        Ok(body) => (body.code, body.message),
        Err(_) => (None, None),
    }
}

/// The Put Message body for `text` (already encoded as the receiver expects).
pub fn put_message_body(text: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessage><MessageText>{}</MessageText></QueueMessage>",
        quick_xml::escape::escape(text)
    )
}

/// The service starts some bodies with a byte order mark.
fn without_bom(xml: &str) -> &str {
    xml.trim_start_matches('\u{feff}')
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
        for text in [r#"{"k":"<a & 'b'>"}"#, " spaced  text\n"] {
            let body = put_message_body(text);
            assert!(!body.contains(r#""k""#));
            let listed = format!(
                "<QueueMessagesList>{}</QueueMessagesList>",
                body.trim_start_matches(r#"<?xml version="1.0" encoding="utf-8"?>"#)
            );
            assert_eq!(parse_messages(&listed)[0].text, text);
        }
    }
}
